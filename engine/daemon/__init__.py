"""The watch daemon (``skydeck-engine watch``): a front end like ``engine/cli``, run
unattended.

Its rooms: ``loop`` (the Daemon: the order of things, the ticks, outages, shutdown;
``run_daemon``), ``intake`` (the inboxes, the verify pool), ``streams`` (claims, runners,
job exits, presence), ``exporter`` (heartbeat, metrics), ``events`` (every line, the run's
result) and ``containment`` (one unit's failure stays that unit's). The roles never import
the loop; the loop imports them.
"""

from __future__ import annotations

from engine.daemon.events import WatchResult
from engine.daemon.intake import choose_polling, fstype
from engine.daemon.loop import Daemon, run_daemon

__all__ = ["Daemon", "WatchResult", "choose_polling", "fstype", "run_daemon"]
