"""HalfPipe lock files, made safe to reclaim
(docs/design.md, "Locks"; docs/halfpipe.md, "Lock files").

Names keep HalfPipe's: ``lock/halfpipe-<DLID>`` (stream in progress), ``lock/<runhex8>``
(one merge per run across downlinks), ``lock/cleanup``. What HalfPipe lacked is an owner:
every lock here holds JSON (pid, host, process start time, stream, process, created), so a
lock whose owner is provably dead on this host (pid gone, or pid reused: start time differs)
is *stale* and can be reclaimed, while a lock from another host is never removed without an
operator's confirmed action. That is what lets a killed job never block a downlink forever.

Creation is atomic and never shows a half-written lock: the JSON is written to a unique temp
file (``.<name>.tmp-<host>-<pid>``: unique across the hosts sharing the lock directory)
which is then ``link()``ed to the lock name (fails if it exists; NFS-safe recipe).
``sweep_temps`` removes the temporaries a killed process left, another host's only when the
state server says that process is gone (engine/core/atomic.py, ``writer_gone``).

Across hosts: with a PostgreSQL state database a lock whose owner is on another host is
judged by the server (the owner's presence, engine/store/presence.py), so a crashed host's
locks are stale and reclaimed like a dead local owner's; with SQLite another host's lock
still waits for an operator.
Reclaiming a stale lock happens under an ``flock`` on ``lock/.reclaim`` so two reclaimers
cannot both remove-and-create (the loser re-reads and sees the winner's live lock).

A lock directory is outside input too (operators, old HalfPipe scripts, a full disk), so
reading is a boundary: whatever lies at a lock path gets a verdict, never an exception
(``parse_content`` validates the JSON with bounds; a directory, FIFO or link is listed as
"not a regular file", never opened in a way that blocks, never reclaimed automatically).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.core.atomic import temp_name, temp_writer, writer_gone
from engine.core.errors import BadInput, Busy
from engine.core.ids import is_dlid
from engine.core.inputs import mode_kind, open_regular
from engine.core.owner import PID_MAX, Owner, RemoteJudge, owner_dead

_RUNHEX = re.compile(r"^[0-9a-f]{8}$")
MALFORMED_GRACE_S = 2.0


@dataclass(frozen=True)
class LockInfo:
    """One lock file as `skydeck-engine locks` and the console show it."""

    path: str
    name: str
    kind: str  # stream | run merge | cleanup | other
    pid: int | None
    host: str | None
    start: float | None
    stream: str | None
    process: str | None
    created: float | None
    age_s: float
    stale: bool
    reason: str
    # Something at the lock path that no grace period will make reclaimable (not a regular
    # file, cannot be examined): whoever wants the lock waits until an operator acts.
    blocks: bool = False

    @property
    def owner(self) -> str:
        return f"{self.host}:{self.pid}" if self.pid is not None else "?"

    def to_json(self) -> dict:
        d = asdict(self)
        d["owner"] = self.owner
        return d


def lock_kind(name: str) -> str:
    if name.startswith("halfpipe-") and is_dlid(name[len("halfpipe-") :]):
        return "stream"
    if _RUNHEX.match(name):
        return "run merge"
    if name == "cleanup":
        return "cleanup"
    return "other"


def stream_lock_name(dlid: str) -> str:
    return f"halfpipe-{dlid}"


# Bounds on what a lock file may hold. A lock is one short JSON object; anything else is
# malformed (and, once older than the grace period, reclaimable), never an exception.
MAX_LOCK_BYTES = 64 * 1024
_TIME_MAX = 2.0**34  # seconds since 1970: beyond the year 2500, no lock was created then
_TEXT_MAX = 256


@dataclass(frozen=True)
class LockContent:
    """The owner and labels a lock file claims (validated: safe to hand to ``owner_dead``)."""

    pid: int
    host: str
    start: float
    stream: str | None
    process: str | None
    created: float | None


def _finite(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _label(v: object) -> str | None:
    return v[:_TEXT_MAX] if isinstance(v, str) and v else None


def parse_content(data: bytes) -> LockContent:
    """Parse a lock file's bytes; BadInput (one line) for anything but a valid owner JSON.

    The owner fields decide whether a lock may be reclaimed, so they are strict (pid an
    integer in 1..PID_MAX, host a non-empty string, start a finite number >= 0); the labels
    (stream, process, created) are only shown, so a bad one is dropped, not fatal.
    """
    if len(data) > MAX_LOCK_BYTES:
        raise BadInput(f"lock content is {len(data)} bytes, more than a lock holds")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError too
        raise BadInput(f"not JSON ({type(err).__name__})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"not a JSON object but {type(obj).__name__}")
    pid, host = obj.get("pid"), obj.get("host")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise BadInput("no integer pid")
    if not 1 <= pid <= PID_MAX:
        raise BadInput(f"pid {str(pid)[:24]} is out of range (1..{PID_MAX})")
    if not isinstance(host, str) or not host or len(host) > _TEXT_MAX:
        raise BadInput("no host name")
    raw_start = obj.get("start")
    start = 0.0 if raw_start is None else _finite(raw_start)
    if start is None or start < 0:
        raise BadInput("start is not a finite time >= 0")
    created = _finite(obj.get("created"))
    if created is not None and not 0 <= created < _TIME_MAX:  # shown as an age: a real time
        created = None
    return LockContent(
        pid, host, start, _label(obj.get("stream")), _label(obj.get("process")), created
    )


def _read_bytes(path: Path) -> bytes:
    """A regular file's first bytes; never follows a link, never blocks on a FIFO (BadInput
    when the path was replaced by one since its lstat)."""
    fd = open_regular(path)
    try:
        out = b""
        while len(out) <= MAX_LOCK_BYTES:
            part = os.read(fd, MAX_LOCK_BYTES + 1 - len(out))
            if not part:
                break
            out += part
        return out
    finally:
        os.close(fd)


def read(path: Path, remote: RemoteJudge | None = None) -> LockInfo:
    """Read a lock and judge it; never raises but FileNotFoundError (it is gone). ``remote``:
    the judge of another host's owner (default: the one installed in core, if any).

    Whatever lies at a lock path gets a verdict: a malformed or unreadable lock is stale only
    once older than the grace period; something that is not a regular file (a directory, a
    FIFO, a link) is no lock skydeck made, so it is never reclaimed automatically: it blocks
    whoever wants that lock, with the reason, until an operator removes it.
    """
    now = time.time()
    kind = lock_kind(path.name)
    age = 0.0

    def verdict(stale: bool, why: str, blocks: bool = False) -> LockInfo:
        return LockInfo(
            str(path), path.name, kind, None, None, None, None, None, None, age, stale, why, blocks
        )

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as err:  # e.g. a name too long, a lock directory we may not search
        return verdict(False, f"cannot stat: {err.strerror or err}", blocks=True)
    age = now - st.st_mtime
    if not stat.S_ISREG(st.st_mode):
        return verdict(
            False,
            f"not a regular file (a {mode_kind(st.st_mode)}): no skydeck lock; "
            "an operator must remove it (unlock --force)",
            blocks=True,
        )
    try:
        c = parse_content(_read_bytes(path))
    except FileNotFoundError:
        raise
    except (OSError, BadInput) as err:
        stale = age > MALFORMED_GRACE_S
        what = err.message if isinstance(err, BadInput) else (err.strerror or str(err))
        why = f"malformed lock content ({what})"
        why += "; older than grace, reclaimable" if stale else "; may be in the middle of creation"
        return verdict(stale, why)
    dead, why = owner_dead(c.pid, c.host, c.start, remote)
    if c.created is not None:
        age = now - c.created
    return LockInfo(
        str(path),
        path.name,
        kind,
        c.pid,
        c.host,
        c.start,
        c.stream,
        c.process,
        c.created,
        age,
        dead,
        why,
    )


def list_locks(lock_dir: Path, remote: RemoteJudge | None = None) -> list[LockInfo]:
    """Every entry of the lock directory with its verdict (hidden temp files aside);
    ``remote`` as for ``read``.

    A lock directory that cannot be listed (a link loop, no permission, an I/O error) is one
    blocking row naming it, never an exception: every lock in it is in doubt.
    """
    out: list[LockInfo] = []
    try:
        entries = sorted(e.name for e in os.scandir(lock_dir))
    except (FileNotFoundError, NotADirectoryError):
        return out
    except OSError as err:
        return [
            LockInfo(
                str(lock_dir),
                lock_dir.name,
                "other",
                None,
                None,
                None,
                None,
                None,
                None,
                0.0,
                False,
                f"cannot list the lock directory: {err.strerror or err}",
                True,
            )
        ]
    for name in entries:
        if name.startswith("."):
            continue
        with contextlib.suppress(FileNotFoundError):
            out.append(read(lock_dir / name, remote))
    return out


@contextlib.contextmanager
def _reclaim_mutex(lock_dir: Path) -> Iterator[None]:
    fd = os.open(lock_dir / ".reclaim", os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _content(stream: str | None, process: str | None, owner: Owner) -> bytes:
    return json.dumps(
        {
            "pid": owner.pid,
            "host": owner.host,
            "start": owner.start,
            "stream": stream,
            "process": process,
            "created": time.time(),
        }
    ).encode()


def sweep_temps(lock_dir: Path) -> list[Path]:
    """Remove lock temporaries (``.<name>.tmp-<host>-<pid>``) whose writer is gone: this
    host's by pid, another host's only by the remote judge; ``.reclaim`` and names of any
    other form are left alone."""
    removed: list[Path] = []
    try:
        names = [e.name for e in os.scandir(lock_dir) if e.name.startswith(".")]
    except OSError:
        return removed
    for name in names:
        _, sep, suffix = name.rpartition(".tmp-")
        writer = temp_writer(suffix) if sep else None
        if (
            writer is None
            or writer == (None, os.getpid())
            or writer == (socket.gethostname(), os.getpid())
            or not writer_gone(*writer)
        ):
            continue  # our own: one may be in flight on another thread
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(lock_dir / name)
            removed.append(lock_dir / name)
    return removed


def _link_create(path: Path, data: bytes) -> bool:
    tmp = temp_name(path)
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


def acquire(
    path: Path,
    stream: str | None,
    process: str | None,
    owner: Owner | None = None,
    log: list[str] | None = None,
) -> LockInfo:
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
                if info.pid is None:  # no owner to name: say what blocks it
                    raise Busy(f"blocked: {info.reason}", path)
                raise Busy(
                    f"locked by {info.owner} ({info.process or '?'} of {info.stream or '?'}):"
                    f" {info.reason}",
                    path,
                )
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:  # replaced by something we may not remove
                raise Busy(f"cannot reclaim stale lock: {err.strerror or err}", path) from None
            if log is not None and info.host not in (None, owner.host):
                log.append(
                    f"took over lock {path.name} from {info.owner} (another host): {info.reason}"
                )
            elif log is not None:
                log.append(f"reclaimed stale lock {path.name}: {info.reason}")
        if not _link_create(path, data):
            raise Busy("lock appeared while reclaiming", path)
    return read(path)


def take_over(
    path: Path, stream: str | None, process: str | None, owner: Owner | None = None
) -> None:
    """Rewrite a lock we are entitled to (stream resumed by a new owner) atomically."""
    owner = owner or Owner.me()
    tmp = temp_name(path)
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


def remove_own_or_stale(path: Path, owner: Owner) -> bool:
    """Remove the lock if this owner holds it or its owner is provably dead (what cleanup
    does to its stream's lock first); True when removed."""
    try:
        info = read(path)
    except FileNotFoundError:
        return False
    if (info.pid, info.host) != (owner.pid, owner.host) and not info.stale:
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
    if not os.path.lexists(p):
        raise BadInput("no such lock", p)
    return p


def _remove(p: Path) -> None:
    """Remove what lies at a lock path: a file, link or FIFO; an empty directory."""
    try:
        if stat.S_ISDIR(os.lstat(p).st_mode):
            os.rmdir(p)
        else:
            os.unlink(p)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise BadInput(
            f"cannot remove: {err.strerror or err}; remove it by hand after checking what it is", p
        ) from None


def unlock(
    lock_dir: Path, name: str, force: bool = False, remote: RemoteJudge | None = None
) -> LockInfo:
    """Remove a stale lock; a live or foreign one only with ``force`` (operator confirmed).
    ``remote`` as for ``read``: with it, a lock of a dead owner on another host is stale."""
    p = resolve(lock_dir, name)
    with _reclaim_mutex(lock_dir):
        info = read(p, remote)
        if not info.stale and not force:
            raise Busy(
                f"not provably stale ({info.reason}); use --force after checking no "
                "instance is still running",
                p,
            )
        _remove(p)
    return info
