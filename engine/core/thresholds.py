"""When health (engine/api/health.py) calls a daemon's heartbeat stale or a stream stuck.

Here, in a module that imports nothing, because `skydeck-engine health --help` shows the
defaults and must not import the state store for it; health, the daemon's exporter and
`db copy` (which refuses while a daemon beats) import them from here.
"""

from __future__ import annotations

BEATS_PER_HEALTH = 4  # a heartbeat older than this many intervals is stale
DEFAULT_STUCK_AFTER_S = 6 * 3600.0
