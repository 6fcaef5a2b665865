"""Loading Geant4 offline, and keeping its output off stdout (docs/geant4.md, "Offline").

Why: ``import geant4_pybind`` looks for Geant4's twelve data sets and, when they are
missing, asks on stdin or (under ``CI=true``) downloads them; neither works offline. Optical
physics needs none of them: ``GEANT4_DATA_DIR`` set to any folder skips the search, an empty
``ENSDFSTATE.dat`` lets the nuclide table initialise, and empty folders named as the data
sets let the EM constructors resolve their paths. Standard EM physics does need G4EMLOW
(bremsstrahlung, photoelectric effect and Rayleigh tables): without it ``physics`` removes
those three processes (``FULL_EM`` False). A site with the data sets (``GEANT4_DATA_DIR``
holding G4EMLOW, or ``G4LEDATA``) gets the full physics.

Geant4 writes its banner and tables to the C++ ``std::cout``; ``quiet`` sends file
descriptor 1 to a log file while Geant4 runs so a command's own output stays clean.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from engine.core.errors import BadInput

# the data sets geant4-pybind 0.1.3 (Geant4 11.4) looks for, by folder name
DATASETS = (
    "G4NDL4.7.1",
    "G4EMLOW8.8",
    "PhotonEvaporation6.1.2",
    "RadioactiveDecay6.1.2",
    "G4PARTICLEXS4.2",
    "G4PII1.3",
    "RealSurface2.2",
    "G4SAIDDATA2.0",
    "G4ABLA3.3",
    "G4INCL1.3",
    "G4ENSDFSTATE3.0",
    "G4CHANNELING2.0",
)
INSTALL_HINT = "pip install 'skydeck[geant4]' (geant4-pybind)"
_STATE: dict[str, object] = {}


def has_geant4() -> tuple[bool, str]:
    """(True, version) when geant4_pybind can be imported here, else (False, why)."""
    import importlib.util

    if importlib.util.find_spec("geant4_pybind") is None:
        return False, f"geant4-pybind is not installed ({INSTALL_HINT})"
    return True, "geant4-pybind"


def full_em() -> bool:
    """True when the EM data set G4EMLOW is there (a site's own Geant4 data)."""
    le = os.environ.get("G4LEDATA")
    if le and Path(le).is_dir() and any(Path(le).iterdir()):
        return True
    base = os.environ.get("GEANT4_DATA_DIR")
    if base and base != _STATE.get("stub"):
        return any(p.is_dir() and any(p.iterdir()) for p in Path(base).glob("G4EMLOW*"))
    return False


def _stub_datasets() -> str:
    """A folder of empty data-set folders and an empty ENSDFSTATE.dat (removed at exit)."""
    d = Path(tempfile.mkdtemp(prefix="skydeck-g4data-"))
    for name in DATASETS:
        (d / name).mkdir()
    (d / "G4ENSDFSTATE3.0" / "ENSDFSTATE.dat").write_text("")
    atexit.register(shutil.rmtree, d, True)
    return str(d)


def load() -> ModuleType:
    """geant4_pybind, imported offline-safe; BadInput (exit 2) when it is not installed."""
    if "module" in _STATE:
        return _STATE["module"]  # type: ignore[return-value]
    ok, why = has_geant4()
    if not ok:
        raise BadInput(why)
    if not full_em():
        stub = _stub_datasets()
        _STATE["stub"] = stub
        os.environ["GEANT4_DATA_DIR"] = stub
        os.environ["G4ENSDFSTATEDATA"] = str(Path(stub) / "G4ENSDFSTATE3.0")
    import geant4_pybind

    _STATE["module"] = geant4_pybind
    _STATE["full_em"] = full_em()
    return geant4_pybind


def version(g4: ModuleType) -> str:
    """``geant4-11-04-patch-01 [MT]`` from G4Version's ``$Name: ... $``."""
    text = str(getattr(g4, "G4Version", ""))
    return text.replace("$Name:", "").replace("$", "").strip() or "unknown"


@contextlib.contextmanager
def quiet(log: Path | None) -> Iterator[None]:
    """Send file descriptor 1 (Geant4's std::cout) to ``log`` (or /dev/null) meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    target = os.open(
        str(log) if log is not None else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )
    try:
        os.dup2(target, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(target)
