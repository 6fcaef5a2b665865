"""Presence: an owner the state server can see die (PostgreSQL only).

Why: claims (streams, deliveries) and lock files name their owner by (pid, host, process
start), and on one host a dead pid is proof (engine/core/owner.py). An owner on *another*
host cannot be judged by pid, so before this a crashed host blocked its downlinks until an
operator stepped in. With a PostgreSQL state database every process that owns something
(the daemon, ``skydeck-engine run``, the runners they drive) holds, for its whole life,
session advisory locks keyed by its identity on a connection of its own. The server drops
those locks when the connection ends: at once when the process dies (its socket closes),
and for a host that vanishes without closing anything within the keepalive bound (client
side ``KEEPALIVES`` in postgres.py: idle 15 s + 3 x 5 s; server side
``tcp_keepalives_idle/interval/count`` and ``client_connection_check_interval``;
docs/design.md, "State on PostgreSQL"). Whether another host's owner lives is then one
question to the server (``judge``): is its lock held in ``pg_locks``?

Two keys are held (``engine.core.owner.presence_keys``): one 64-bit key of the whole
identity (host, pid, start), so a rebooted host whose new process got the old pid is still
told apart, and one (host hash, pid) pair. What names only host and pid (a temporary's or
an extraction's name) may be a job's, and jobs hold no presence: it is judged by its host
(gone when no process of that host holds a pair key).

The presence's connection re-makes a lost session by itself (a server restart, a
terminated session: engine/store/postgres.py) and takes the locks again on the new one
before anything else runs there; ``Presence.check`` says it happened, so the daemon can
give up what another host took over meanwhile.

Global state is one slot per process and database: ``hold`` keeps the presence (the
claim code calls it before it writes an owner, the daemon at start, so nothing is ever
owned without it) and installs its judge in core (``set_remote_judge``), which reaches the
lock files, the temporaries' and heartbeats' sweeps. The claim code itself judges through
its own connection (``judge_on``). SQLite has no server to see anything: ``hold`` returns
None there and the one-host rule stays.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any

from engine.core.owner import Owner, RemoteJudge, presence_keys, set_remote_judge
from engine.store.backend import Backend

_LOCK = "SELECT pg_advisory_lock(CAST(? AS bigint))"
_LOCK_PAIR = "SELECT pg_advisory_lock(CAST(? AS integer), CAST(? AS integer))"
# objsubid: 1 for a bigint key (classid = high half, objid = low half), 2 for an int pair
_HELD = (
    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid::bigint = ? AND objid::bigint = ? AND objsubid = ?"
)
_HOST_HELD = (
    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid::bigint = ? AND objsubid = ?"
)


def supported(backend: Backend) -> bool:
    """Whether the backend's server can see an owner die (session locks): PostgreSQL."""
    return backend.name == "postgresql"


def _halves(key: int) -> tuple[int, int]:
    u = key & 0xFFFFFFFFFFFFFFFF
    return u >> 32, u & 0xFFFFFFFF


def judge_on(conn: Any, pid: int, host: str, start: float | None) -> tuple[bool, str] | None:
    """(dead, why) of the owner (pid, host, start) as the server sees it through ``conn``;
    None when the server cannot be asked (then the owner counts as alive).

    With a start, the owner's own identity key decides. Without one (a temporary's or an
    extraction's name: host and pid only) the *host* decides: such a file may be written by
    a job, which holds no presence of its own, so it is gone only when no process of its
    host holds one (the host crashed or every skydeck process on it ended)."""
    full, host_key, _pid_key = presence_keys(pid, host, start)
    args: tuple[int, ...]
    if full is not None:
        hi, lo = _halves(full)
        sql, args = _HELD, (hi, lo, 1)
    else:
        sql, args = _HOST_HELD, (host_key & 0xFFFFFFFF, 2)
    try:  # a question, not a wait: an unreachable server cannot tell now
        row = conn.execute(sql, args, patient=False).fetchone()
    except Exception:  # the driver's error, a server that cannot be reached: cannot tell
        return None
    held = row is not None and int(row[0]) > 0
    if full is not None:
        if held:
            return False, f"{host}:{pid} holds its session on the state server (alive)"
        return True, (
            f"{host}:{pid} holds no session on the state server (the process or its host is gone)"
        )
    if held:
        return False, (
            f"host {host} has processes holding sessions on the state server; "
            f"pid {pid} there cannot be judged from here"
        )
    return True, (
        f"no process on host {host} holds a session on the state server (the host "
        "or its skydeck processes are gone)"
    )


class Presence:
    """This process's session locks on the state server, on a connection kept for its life.

    The connection re-makes a lost session by itself (engine/store/postgres.py) and takes
    the locks again on the new one before anything else runs there (an ``on_connect``
    hook), so the presence comes back with the server; ``check`` says that it was lost."""

    def __init__(self, backend: Backend, owner: Owner | None = None) -> None:
        self.backend = backend
        self.owner = owner or Owner.me()
        self._mutex = threading.Lock()
        self.conn: Any = backend.connect()  # with the backend's TCP keepalives
        try:
            self.conn.on_connect(self._take)
        except BaseException:
            self.conn.close()
            raise
        self._session = self.backend.session(self.conn)

    def _take(self, execute: Any) -> None:
        """Take the locks on a (new) session (blocks only if another session holds this
        very identity, which no live process can)."""
        full, host_key, pid_key = self.owner.keys()
        if full is not None:
            execute(_LOCK, (full,))
        execute(_LOCK_PAIR, (host_key, pid_key))

    def check(self) -> bool:
        """True when the presence stood since the last check; False when its session was
        lost and re-made meanwhile (the locks taken again), so the caller can say so:
        between the loss and now another host may have judged this process dead and taken
        over what it owned. ``StateUnavailable`` while the server cannot be reached."""
        with self._mutex:
            self.conn.execute("SELECT 1").fetchone()  # a lost session is re-made here
            session = self.backend.session(self.conn)
            same, self._session = session == self._session, session
            return same

    def judge(self, pid: int, host: str, start: float | None) -> tuple[bool, str] | None:
        """The installed judge: asked fresh each time (one small query), so a lock and the
        stream it belongs to always get the same verdict."""
        with self._mutex:
            return judge_on(self.conn, pid, host, start)

    def close(self) -> None:
        with self._mutex, contextlib.suppress(Exception):
            self.conn.close()


_held: dict[str, Presence] = {}
_held_mutex = threading.Lock()


def hold(backend: Backend) -> Presence | None:
    """The presence of this process on ``backend``'s server, taken once and kept for the
    process's life (its judge installed in core); None for SQLite."""
    if not supported(backend):
        return None
    where = str(backend.where)
    with _held_mutex:
        p = _held.get(where)
        me = (os.getpid(), socket.gethostname())
        if p is not None and (p.owner.pid, p.owner.host) == me:
            return p
        p = Presence(backend)
        _held[where] = p
        set_remote_judge(p.judge)
        return p


def release(backend: Backend) -> None:
    """Give the presence on ``backend``'s server up (the process stops owning anything);
    the judge goes with it."""
    with _held_mutex:
        p = _held.pop(str(backend.where), None)
    if p is not None:
        p.close()
        if _held:
            set_remote_judge(next(iter(_held.values())).judge)
        else:
            set_remote_judge(None)


def judge_of(backend: Backend, conn: Any) -> RemoteJudge | None:
    """A judge asking through ``conn`` (the claim code's own connection); None on SQLite."""
    if not supported(backend):
        return None

    def judge(pid: int, host: str, start: float | None) -> tuple[bool, str] | None:
        return judge_on(conn, pid, host, start)

    return judge
