"""Optical-photon propagation (issue 3): scenes, Philox RNG, NumPy and CUDA backends,
production/development event directories and hit summaries.

The package is headless: nothing here imports Textual, and PyCUDA is imported only inside
``cuda_backend`` so a machine without a GPU never pays for (or trips over) it.
"""
