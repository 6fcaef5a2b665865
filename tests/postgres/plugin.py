"""The real PostgreSQL server the backend-parametrized tests run against
(tests/postgres/cluster.sh), and a fresh database for each test.

- ``pg_server`` (session): the running cluster (its env file is there and the server
  answers), or one started with ``cluster.sh up`` when running as root (stopped at the end
  only if started here); elsewhere PostgreSQL tests skip with the reason. Under CI
  (``CI`` set) a server that cannot be reached is an error, not a skip: CI must run them.
- ``pg_url`` (function): a new, empty database on it (``CREATE DATABASE ... TEMPLATE
  template0``), dropped after the test (connections forced off), as a URL.
- ``state_backend`` (function, parametrized "sqlite" / "postgresql"): for "postgresql" it
  sets ``SKYDECK_STATE_URL`` to a fresh database, so every workspace the test opens (and
  every engine process it starts: they inherit the environment) keeps its state there.
  Test directories that must run on both backends make it autouse in their conftest.
- ``own_pg`` (function): a throwaway PostgreSQL server of the test's own (``OwnServer``: a
  cluster of its own in a fresh directory, on its own port), for the tests that restart,
  stop or reconfigure a server or terminate its sessions; the shared one is never touched.
- ``@pytest.mark.sqlite_only("why")``: a test about SQLite itself (its WAL files, the
  SQLite file on a full disk, ``PRAGMA integrity_check``) runs for "sqlite" only; its
  "postgresql" case is skipped with that reason, so the list stays visible in ``-ra``.

This is a pytest plugin (``pytest_plugins`` in tests/conftest.py), not a conftest, so that
the store, pipeline and console-API test directories share one definition.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import read_env_file

HERE = Path(__file__).resolve().parent
CLUSTER = HERE / "cluster.sh"
PG_DIR = Path(os.environ.get("SKYDECK_PG_DIR", "/tmp/skydeck-pg"))
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(why): a test about SQLite itself; its "
        "PostgreSQL case is skipped with the reason",
    )


def _env_file() -> dict[str, str]:
    return read_env_file(PG_DIR / "env")


def _answers(env: dict[str, str]) -> bool:
    url = env.get("SKYDECK_TEST_STATE_URL")
    if not url:
        return False
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run under CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[dict[str, str]]:
    """The env file of a running throwaway cluster (SKYDECK_TEST_STATE_URL, ...)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (the postgresql extra)")
    started = False
    env = _env_file()
    if not _answers(env):
        if os.geteuid() != 0:
            _unavailable(
                f"no PostgreSQL answers ({PG_DIR}/env) and not root to start one: "
                "run tests/postgres/cluster.sh up as root"
            )
        res = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            _unavailable(f"tests/postgres/cluster.sh up failed: {res.stderr.strip()[-400:]}")
        started = True
        env = _env_file()
        if not _answers(env):
            _unavailable("PostgreSQL started but does not answer")
    yield env
    if started:
        subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=120)


def admin(env: dict[str, str], sql: str, database: str = "postgres") -> None:
    """Run ``sql`` (one statement, or several separated by ``;``) as the cluster's admin, in
    ``database``."""
    import psycopg

    url = env["SKYDECK_TEST_STATE_URL"].replace("/postgres?", f"/{database}?")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def pg_url(pg_server: dict[str, str]) -> Iterator[str]:
    """A URL of a new, empty database, dropped after the test."""
    name = f"skydeck_t_{uuid.uuid4().hex[:16]}"
    admin(pg_server, f"CREATE DATABASE {name} TEMPLATE template0")
    host, port, user = (
        pg_server["SKYDECK_PG_HOST"],
        pg_server["SKYDECK_PG_PORT"],
        pg_server["SKYDECK_PG_USER"],
    )
    yield f"postgresql://{user}@/{name}?host={host}&port={port}"
    admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
def state_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """ "sqlite" (the default, nothing set) or "postgresql" (``SKYDECK_STATE_URL`` set to a
    fresh database for this test and the processes it starts)."""
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    if request.param == "postgresql":
        only = request.node.get_closest_marker("sqlite_only")
        if only is not None:
            why = only.args[0] if only.args else "a test about SQLite itself"
            pytest.skip(f"SQLite only: {why}")
        monkeypatch.setenv("SKYDECK_STATE_URL", request.getfixturevalue("pg_url"))
    return str(request.param)


class OwnServer:
    """A PostgreSQL cluster of one test's own (tests/postgres/cluster.sh with its own
    directory and port): restarted, stopped and reconfigured at will."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir, self.port = directory, port
        self.env = {**os.environ, "SKYDECK_PG_DIR": str(directory), "SKYDECK_PG_PORT": str(port)}

    def _cluster(self, *args: str) -> None:
        res = subprocess.run(
            [str(CLUSTER), *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if res.returncode != 0:
            raise AssertionError(f"cluster.sh {' '.join(args)}: {res.stderr.strip()[-400:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://skydeck@/{database}?host={self.dir}&port={self.port}"

    def admin(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """One statement as the superuser on the maintenance database (not a skydeck
        session: its application_name is "admin")."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, application_name="admin") as conn:
            cur = conn.execute(sql, args)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def new_database(self) -> str:
        name = f"skydeck_t_{uuid.uuid4().hex[:16]}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def start(self) -> None:
        self._cluster("up")

    def stop(self) -> None:
        """Fast shutdown (every session ends; the data stay)."""
        self._cluster("down")

    def restart(self, crash: bool = False) -> None:
        """``pg_ctl restart -m fast``, as an operator restarts a server; ``crash``: an
        immediate shutdown instead (SIGQUIT: no checkpoint, sessions cut at once; the
        start then recovers from the WAL, as after a crash or a failover)."""
        if crash:
            pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 60
            while _alive(pid):
                if time.monotonic() > deadline:
                    raise AssertionError("the server did not stop on SIGQUIT")
                time.sleep(0.05)
        else:
            self.stop()
        self.start()

    def terminate(self, application: str = "skydeck") -> int:
        """``pg_terminate_backend`` of every session named ``application``; how many."""
        rows = self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application,),
        )
        return len(rows)

    def sessions(self, application: str = "skydeck") -> int:
        return len(
            self.admin(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
            )
        )

    def configure(self, setting: str, value: str | None) -> None:
        """``ALTER SYSTEM SET setting = value`` (None: RESET) and reload."""
        if value is None:
            self.admin(f"ALTER SYSTEM RESET {setting}")
        else:
            self.admin(f"ALTER SYSTEM SET {setting} = '{value}'")
        self.admin("SELECT pg_reload_conf()")
        time.sleep(0.2)  # the postmaster signals its backends; they re-read at their next command


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    """A port no Unix socket under /tmp and no TCP listener uses (the cluster listens only
    on its socket, named after the port)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if 1024 < port < 65000:
            return port
    raise AssertionError("no free port")


@pytest.fixture
def own_pg(pg_server: dict[str, str]) -> Iterator[OwnServer]:
    """A throwaway PostgreSQL server of this test's own, stopped and removed after it.
    Needs what the shared server needs (psycopg, PostgreSQL installed) and root (the
    cluster runs as user postgres)."""
    if os.geteuid() != 0:
        _unavailable("a server of the test's own is started as root (cluster.sh)")
    # the postgres user must reach the directory: directly under the system's /tmp
    directory = Path(tempfile.mkdtemp(prefix="skydeck-pg-own-", dir="/tmp"))
    server = OwnServer(directory, _free_port())
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
