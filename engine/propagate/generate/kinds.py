"""Genstep types: Opticks' current gentype codes and the generator each one selects.

Why here: the genstep file reader (which gentypes it accepts), the generation switch and
the event metadata all name the kinds the same way, and the CUDA kernel's switch uses the
same numbers (``assets/kernels/propagate.cu``, ``generate_photon``). Codes follow
``sysrap/OpticksGenstep.h`` (docs/opticks.md, "Gensteps"): TORCH 6; CERENKOV 15 with the
older G4Cerenkov_modified 18 and G4Cerenkov_1042 1; SCINTILLATION 16 with
DsG4Scintillation_r4695 5 and G4Scintillation_1042 2.
"""

from __future__ import annotations

import numpy as np

TORCH, CERENKOV, SCINTILLATION = 6, 15, 16
GENTYPES: dict[int, str] = {
    6: "TORCH",
    15: "CERENKOV",
    18: "G4Cerenkov_modified",
    1: "G4Cerenkov_1042",
    16: "SCINTILLATION",
    5: "DsG4Scintillation_r4695",
    2: "G4Scintillation_1042",
}
# the generator (kind) each accepted gentype selects
KIND_OF: dict[int, int] = {
    6: TORCH,
    15: CERENKOV,
    18: CERENKOV,
    1: CERENKOV,
    16: SCINTILLATION,
    5: SCINTILLATION,
    2: SCINTILLATION,
}
KIND_NAMES = {TORCH: "TORCH", CERENKOV: "CERENKOV", SCINTILLATION: "SCINTILLATION"}


def kinds(gentype: np.ndarray) -> np.ndarray:
    """The kind (TORCH, CERENKOV, SCINTILLATION) of each gentype; 0 for an unknown one."""
    out = np.zeros(gentype.shape, np.int32)
    for code, kind in KIND_OF.items():
        out[gentype == code] = kind
    return out
