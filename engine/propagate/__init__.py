"""Optical-photon propagation: scenes, Philox RNG, NumPy and GPU backends,
production/development event directories and hit summaries.

The package is headless: nothing here imports Textual, and PyCUDA and CuPy are imported only
inside ``cuda_backend`` and ``cupy_backend`` so a machine without a GPU never pays for (or
trips over) them; NVRTC is loaded only when a kernel is compiled (``kernel``).
"""
