"""Write-to-temporary-then-rename, so a reader never sees a half-written file.

A killed writer leaves only a dot-file named ``.<name>.tmp-<pid>`` next to the target;
``sweep_stale_temps`` removes those whose pid is dead, so reruns start clean. Every
``atomic_path`` (and so every ``atomic_write_bytes``) sweeps its target's first: the next
write of a file cleans up after a writer of it that was killed.

The rename would just as atomically replace an input: ``build DIR -o DIR/epix.h5`` once
exited 0 after destroying its source. ``refuse_alias`` is the one check every command
that writes an output runs against its inputs first (same path, ``..`` spellings and
symbolic links by ``realpath``, hard links and bind mounts by ``(st_dev, st_ino)``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.core.errors import BadInput


def temp_name(target: Path, pid: int | None = None) -> Path:
    return target.with_name(f".{target.name}.tmp-{pid or os.getpid()}")


def sweep_stale_temps(target: Path) -> list[Path]:
    """Remove temporaries of ``target`` left by writers that are no longer alive."""
    removed: list[Path] = []
    prefix = f".{target.name}.tmp-"
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith(prefix):
            continue
        try:
            pid = int(p.name[len(prefix):])
        except ValueError:
            continue
        import psutil  # here, not at the top: every build imports this module (issue 13)

        if pid != os.getpid() and psutil.pid_exists(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed


def remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``target``, on error remove it.
    Temporaries of ``target`` that dead writers left (this process's own included) go
    first."""
    sweep_stale_temps(target)
    tmp = temp_name(target)
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    os.replace(tmp, target)
    fsync_dir(target.parent)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _identity(p: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def refuse_alias(output: Path, inputs: Iterable[Path], what: str = "output",
                 replaces_tree: bool = False) -> None:
    """BadInput (exit 2) when writing ``output`` would overwrite one of ``inputs``; with
    ``replaces_tree`` (a directory output renamed into place whole) also when an input
    lies inside it. Run before anything is written."""
    out_real = os.path.realpath(output)
    out_id = _identity(out_real)
    for inp in inputs:
        in_real = os.path.realpath(inp)
        in_id = _identity(in_real)
        if in_real == out_real or (out_id is not None and in_id == out_id):
            raise BadInput(f"{what} is the input {inp}; writing it would destroy that input", output)
        if not replaces_tree:
            continue
        parents = Path(in_real).parents
        if Path(out_real) in parents or (out_id is not None
                                         and any(_identity(q) == out_id for q in parents)):
            raise BadInput(f"{what} holds the input {inp}; replacing it would destroy that input",
                           output)
