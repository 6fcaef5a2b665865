"""HalfPipe lock files, made safe to reclaim (DESIGN.md "Rules", reference/halfpipe.md 1.5).

Names keep HalfPipe's: ``lock/halfpipe-<DLID>`` (stream in progress), ``lock/<runhex8>``
(one merge per run across downlinks), ``lock/cleanup``. What HalfPipe lacked is an owner:
every lock here holds JSON (pid, host, process start time, stream, process, created), so a
lock whose owner is provably dead on this host (pid gone, or pid reused: start time differs)
is *stale* and can be reclaimed, while a lock from another host is never removed without an
operator's confirmed action. That is what lets a killed job never block a downlink forever.

Creation is atomic and never shows a half-written lock: the JSON is written to a unique temp
file which is then ``link()``ed to the lock name (fails if it exists; NFS-safe recipe).
Reclaiming a stale lock happens under an ``flock`` on ``lock/.reclaim`` so two reclaimers
cannot both remove-and-create (the loser re-reads and sees the winner's live lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import BadInput, Busy
from engine.ids import is_dlid
from engine.state import Owner, owner_dead

_RUNHEX = re.compile(r"^[0-9a-f]{8}$")
MALFORMED_GRACE_S = 2.0


@dataclass(frozen=True)
class LockInfo:
    """One lock file as `skydeck-engine locks` and the console show it."""

    path: str
    name: str
    kind: str            # stream | run merge | cleanup | other
    pid: int | None
    host: str | None
    start: float | None
    stream: str | None
    process: str | None
    created: float | None
    age_s: float
    stale: bool
    reason: str

    @property
    def owner(self) -> str:
        return f"{self.host}:{self.pid}" if self.pid is not None else "?"

    def to_json(self) -> dict:
        d = asdict(self)
        d["owner"] = self.owner
        return d


def lock_kind(name: str) -> str:
    if name.startswith("halfpipe-") and is_dlid(name[len("halfpipe-"):]):
        return "stream"
    if _RUNHEX.match(name):
        return "run merge"
    if name == "cleanup":
        return "cleanup"
    return "other"


def stream_lock_name(dlid: str) -> str:
    return f"halfpipe-{dlid}"


def read(path: Path) -> LockInfo:
    """Read a lock and judge it; a malformed or unreadable lock is stale only once old."""
    now = time.time()
    try:
        st = path.stat()
        age = now - st.st_mtime
    except FileNotFoundError:
        raise
    data: dict = {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        pid = int(data["pid"])
        host = str(data["host"])
        start = float(data.get("start") or 0.0)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        stale = age > MALFORMED_GRACE_S
        why = "malformed lock content (no owner JSON)"
        why += "; older than grace, reclaimable" if stale else "; may be in the middle of creation"
        return LockInfo(str(path), path.name, lock_kind(path.name), None, None, None, None, None,
                        None, age, stale, why)
    dead, why = owner_dead(pid, host, start)
    created = data.get("created")
    if isinstance(created, int | float):
        age = now - float(created)
    return LockInfo(str(path), path.name, lock_kind(path.name), pid, host, start,
                    data.get("stream"), data.get("process"), created, age, dead, why)


def list_locks(lock_dir: Path) -> list[LockInfo]:
    out = []
    try:
        entries = sorted(lock_dir.iterdir())
    except FileNotFoundError:
        return out
    for p in entries:
        if p.name.startswith(".") or not p.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            out.append(read(p))
    return out


@contextlib.contextmanager
def _reclaim_mutex(lock_dir: Path) -> Iterator[None]:
    fd = os.open(lock_dir / ".reclaim", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _content(stream: str | None, process: str | None, owner: Owner) -> bytes:
    return json.dumps({"pid": owner.pid, "host": owner.host, "start": owner.start,
                       "stream": stream, "process": process, "created": time.time()}).encode()


def _link_create(path: Path, data: bytes) -> bool:
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def acquire(path: Path, stream: str | None, process: str | None, owner: Owner | None = None,
            log: list[str] | None = None) -> LockInfo:
    """Create the lock for ``owner`` (default: this process); reclaim it if stale.

    Re-acquiring a lock this owner already holds succeeds (HalfPipe's makeEvt jobs all create
    the same stream lock). Raises Busy when a live owner (or another host) holds it.
    """
    owner = owner or Owner.me()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _content(stream, process, owner)
    if _link_create(path, data):
        return read(path)
    with _reclaim_mutex(path.parent):
        try:
            info = read(path)
        except FileNotFoundError:
            info = None
        if info is not None:
            if info.pid == owner.pid and info.host == owner.host:
                return info
            if not info.stale:
                raise Busy(f"locked by {info.owner} ({info.process or '?'} of {info.stream or '?'}):"
                           f" {info.reason}", path)
            os.unlink(path)
            if log is not None:
                log.append(f"reclaimed stale lock {path.name}: {info.reason}")
        if not _link_create(path, data):
            raise Busy("lock appeared while reclaiming", path)
    return read(path)


def take_over(path: Path, stream: str | None, process: str | None, owner: Owner | None = None) -> None:
    """Rewrite a lock we are entitled to (stream resumed by a new owner) atomically."""
    owner = owner or Owner.me()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(_content(stream, process, owner))
    os.replace(tmp, path)


def release(path: Path, owner: Owner | None = None) -> bool:
    """Remove the lock if this owner holds it; True when removed."""
    owner = owner or Owner.me()
    try:
        info = read(path)
    except FileNotFoundError:
        return False
    if info.pid != owner.pid or info.host != owner.host:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


@contextlib.contextmanager
def held(path: Path, stream: str | None, process: str | None) -> Iterator[LockInfo]:
    info = acquire(path, stream, process)
    try:
        yield info
    finally:
        release(path)


def resolve(lock_dir: Path, name: str) -> Path:
    """A lock named by file name or path; must lie in the lock directory."""
    p = Path(name)
    if not p.is_absolute():
        p = lock_dir / name
    if p.parent.resolve() != lock_dir.resolve() or p.name.startswith("."):
        raise BadInput("not a lock in the workspace lock directory", p)
    if not p.is_file():
        raise BadInput("no such lock", p)
    return p


def unlock(lock_dir: Path, name: str, force: bool = False) -> LockInfo:
    """Remove a stale lock; a live or foreign one only with ``force`` (operator confirmed)."""
    p = resolve(lock_dir, name)
    with _reclaim_mutex(lock_dir):
        info = read(p)
        if not info.stale and not force:
            raise Busy(f"not provably stale ({info.reason}); use --force after checking no "
                       "instance is still running", p)
        os.unlink(p)
    return info
