"""What `skydeck-engine propagate` and `kernel build` may be asked: choices and bounds.

Here, in a module that imports nothing, because the commands' ``--help`` shows them and
must not import NumPy and the propagation machinery for it; the modules that enforce them
(``event``, ``scene``, ``backends``, ``kernel``) import them from here.
"""

from __future__ import annotations

MODES = ("production", "development")
BACKENDS = ("auto", "numpy", "cuda", "cupy")
MAX_PHOTONS = 1 << 50  # photons per event: 2**19 int32 gensteps (50 MB) at most; indices are 64-bit
DEFAULT_CHUNK = 1 << 16
MAX_CHUNK = 1 << 22  # photons per NumPy chunk: its working arrays are held in memory at once

# `kernel build`
DEFAULT_ARCHS = ("sm_80", "sm_90")  # A100 and H100/H200 class
COMPILERS = ("auto", "nvrtc", "nvcc")
