"""A workspace shared through its group: the umask every engine process uses there, and
the one line a permission problem becomes.

Why a module of its own: the README's model is a setgid, group-writable workspace
(``install -d -m 2770``) that a daemon user and operators in its group share. The group
follows from the setgid directories; write access for the group follows only from the
creator's umask, and an operator's login umask (often 022) would make what they create
first (a log, a lock, the state database itself) unwritable by the daemon. So every engine
process that opens such a workspace clears the group bits from its umask
(``share_with_group``), whoever runs it, and the state database is created with the mode
that umask gives (SQLite would create it 0644 before the umask). A permission refused is
``NoPermission`` (exit 77), one line naming the file and the user, never a traceback.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from engine.core.errors import NoPermission


def share_with_group(root: Path) -> bool:
    """When ``root`` is a setgid directory its group may write, clear the group bits from
    this process's umask (what it creates there stays the group's to write); True then."""
    try:
        st = root.stat()
    except OSError:
        return False
    if not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISGID and st.st_mode & stat.S_IWGRP):
        return False
    old = os.umask(0)
    os.umask(old & ~0o070)
    return True


def who() -> str:
    """This process's user and groups, as a refusal names them."""
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    names = []
    for gid in sorted(set(os.getgroups()) | {os.getegid()}):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return f"user {user} (groups: {', '.join(names)})"


def _group_of(path: Path) -> str:
    for p in (path, *path.parents):
        try:
            gid = p.stat().st_gid
        except OSError:
            continue
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)
    return "?"


def no_permission(path: str | os.PathLike[str] | None, what: str = "") -> NoPermission:
    """The one-line refusal of ``path`` for this user."""
    p = Path(path) if path is not None else Path(".")
    return NoPermission(
        f"permission denied{' ' + what if what else ''} for {who()}; the workspace is shared "
        f"through group {_group_of(p)}: ask to be added to it",
        path,
    )
