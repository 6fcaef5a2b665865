"""skydeck's package data: the default config (skydeck.toml), task files (tasks/), scenes
(scenes/) and the CUDA kernel source (kernels/).

Why a package marker at the top of the tree: the design card puts ``assets/`` beside
``engine/`` and ``console/``, and a wheel must carry it. pyproject.toml maps this directory
to the package ``engine.assets`` (``[tool.setuptools.package-dir]``), so an installed wheel
has it at ``engine/assets/`` and an editable install finds it here; the engine reaches it
only through ``engine.core.workspace.ASSETS``. It holds no code.
"""
