"""The README's group model with real Unix users: a daemon user and an operator in the
workspace's group share a setgid 2770 workspace; everything the engine creates (state.db
and its -wal/-shm, logs, locks, staged output) follows the group and stays writable by it,
whoever creates it and whatever their umask; an operator's rollback works; a user outside
the group is refused in one line (exit 77) and changes nothing. Runs as root (useradd,
runuser); skips otherwise."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNUSER = shutil.which("runuser")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or RUNUSER is None or shutil.which("useradd") is None,
    reason="needs root, runuser and useradd (real users are created)",
)


@pytest.fixture
def users() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    names = {"group": f"skg{tag}", "daemon": f"skd{tag}", "op": f"sko{tag}", "out": f"skx{tag}"}
    subprocess.run(["groupadd", names["group"]], check=True)
    try:
        for who in ("daemon", "op", "out"):
            extra = ["-G", names["group"]] if who != "out" else []
            subprocess.run(
                ["useradd", "-M", "-N", "-s", "/bin/sh", *extra, names[who]],
                check=True,
            )
        yield names
    finally:
        for who in ("daemon", "op", "out"):
            subprocess.run(["userdel", names[who]], capture_output=True)
        subprocess.run(["groupdel", names["group"]], capture_output=True)


@pytest.fixture(scope="module")
def python() -> tuple[str, dict[str, str]]:
    """An interpreter other users can run, and its environment: this one when its path is
    open to them; else (a pyenv under /root, mode 0700) a tree of hard links to its
    installation in a world-readable directory, with this virtual environment's packages
    on PYTHONPATH."""
    site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), *site]), "PYTHONNOUSERSITE": "1"}
    probe = subprocess.run(
        [str(RUNUSER), "-u", "nobody", "--", sys.executable, "-c", "pass"], capture_output=True
    )
    if probe.returncode == 0:
        return sys.executable, env
    base = Path(sys.base_prefix)
    copy = Path(tempfile.mkdtemp(prefix="skydeck-py-"))
    copy.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(base):
        rel = Path(dirpath).relative_to(base)
        if "site-packages" in rel.parts or rel.parts[:1] not in ((), ("bin",), ("lib",)):
            dirnames[:] = []
            continue
        (copy / rel).mkdir(parents=True, exist_ok=True)
        (copy / rel).chmod(0o755)
        for n in filenames:
            src = Path(dirpath) / n
            if src.is_symlink():
                os.symlink(os.readlink(src), copy / rel / n)
            else:
                os.link(src, copy / rel / n)
    exe = copy / "bin" / Path(os.path.realpath(sys.executable)).name
    env |= {"PYTHONHOME": str(copy), "LD_LIBRARY_PATH": str(copy / "lib")}
    return str(exe), env


PY: list[tuple[str, dict[str, str]]] = []


def _as(user: str, umask: str, *args: str) -> subprocess.CompletedProcess:
    exe, extra = PY[-1]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/tmp",
        "SKYDECK_LOG_FORMAT": "json",
        **extra,
    }
    cmd = f"umask {umask}; exec \"$@\""
    argv = [str(RUNUSER), "-u", user, "--", "sh", "-c", cmd, "sh", exe, "-m", "engine", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, cwd="/")


def _tree(root: Path) -> dict[Path, os.stat_result]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[p] = p.lstat()
    return out


def test_a_group_workspace_shared_by_a_daemon_user_and_an_operator(users, python) -> None:
    PY.append(python)
    base = Path(tempfile.mkdtemp(prefix="skydeck-groups-"))
    try:
        base.chmod(0o755)
        ws = base / "ws"
        gid = grp.getgrnam(users["group"]).gr_gid
        uid = pwd.getpwnam(users["daemon"]).pw_uid
        ws.mkdir()
        os.chown(ws, uid, gid)
        ws.chmod(0o2770)
        w = ["-w", str(ws)]
        # the daemon user sets up and processes a delivery under the unit's UMask=0007
        r = _as(users["daemon"], "007", *w, "init")
        assert r.returncode == 0, r.stderr
        toml = ws / "skydeck.toml"
        toml.write_text(toml.read_text().replace("reserve_bytes = 1000000000", "reserve_bytes = 0"))
        r = _as(
            users["daemon"],
            "007",
            *w,
            "mock",
            "--downlink",
            "251125001",
            "--events",
            "50",
            "--event-bytes",
            "400",
            "--chunks",
            "1",
            "--runs",
            "1",
        )
        assert r.returncode == 0, r.stderr
        r = _as(users["daemon"], "007", *w, "watch", "--once")
        assert r.returncode == 0, r.stdout + r.stderr
        # the operator, with a login umask of 022, acts too: its files stay the group's
        r = _as(users["op"], "022", *w, "ack", "251125001", "--reason", "checked")
        assert r.returncode == 0, r.stderr
        r = _as(users["op"], "022", *w, "rollback", "251125001", "makeEvt")
        assert r.returncode == 0, r.stdout + r.stderr
        r = _as(users["op"], "022", *w, "run", "251125001")
        logs = "".join(p.read_text()[-600:] for p in ws.glob("logs/251125001/mergeEvt-*"))
        assert r.returncode == 0, r.stdout + r.stderr + logs
        r = _as(users["daemon"], "007", *w, "watch", "--once")  # the daemon goes on after it
        assert r.returncode == 0, r.stdout + r.stderr

        tree = _tree(ws)
        state = ws / "state.db"
        assert state in tree and stat.S_IMODE(tree[state].st_mode) & 0o060 == 0o060
        for p, st in tree.items():
            if stat.S_ISLNK(st.st_mode):
                continue
            assert st.st_gid == gid, f"{p} is not the workspace's group"
            if p.name == "skydeck.toml":
                continue  # written by init as a config (group may read it)
            want = 0o070 if stat.S_ISDIR(st.st_mode) else 0o060
            assert st.st_mode & want == want, f"{p} mode {stat.S_IMODE(st.st_mode):04o}"
            if stat.S_ISDIR(st.st_mode):
                assert st.st_mode & stat.S_ISGID, f"{p} lost the setgid bit"
        assert any(p.name.endswith(".h5") and "stage" in p.parts for p in tree)
        owners = {st.st_uid for st in tree.values()}
        assert pwd.getpwnam(users["op"]).pw_uid in owners  # the operator did create files

        # an outsider: one line naming the file and the user, exit 77, nothing changed
        digest = hashlib.sha256(state.read_bytes()).hexdigest()
        before = {p: (st.st_mtime_ns, st.st_size) for p, st in _tree(ws).items()}
        for args in (
            ("downlinks",),
            ("rollback", "251125001"),
            ("ack", "251125001", "--reason", "x"),
            ("health",),
            ("halt", "halted"),
        ):
            r = _as(users["out"], "022", *w, *args)
            assert r.returncode == 77, (args, r.stdout, r.stderr)
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
            assert "permission denied" in r.stderr and f"user {users['out']}" in r.stderr
            assert str(ws) in r.stderr and users["group"] in r.stderr
        assert hashlib.sha256(state.read_bytes()).hexdigest() == digest
        assert {p: (st.st_mtime_ns, st.st_size) for p, st in _tree(ws).items()} == before
    finally:
        shutil.rmtree(base, ignore_errors=True)
