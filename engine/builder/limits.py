"""The bounds of `skydeck-engine build`'s numbers, enforced by ``options.check_batch``.

Here, in a module that imports nothing, because ``build --help`` shows them: ``options``
itself imports ``dataclasses`` (and with it ``inspect``), about 6 ms of a 35 ms ``--help``.
"""

from __future__ import annotations

MAX_BATCH = 1 << 20  # events per batch: each worker holds two batch buffers per source
