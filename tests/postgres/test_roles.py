"""PostgreSQL roles a site gives skydeck: the daemon's (owns the database), an operator's
(reads and writes rows) and a viewer's (reads only), as the README's "PostgreSQL roles"
grants them, on the real server (tests/postgres/plugin.py).

What must hold: each role does what its grants allow through the real CLI; a statement the
grants refuse is one line naming the role, exit 77 (EX_NOPERM), never a driver traceback,
and leaves the database as it was; a role granted nothing is refused the same way rather
than mistaking the database for an empty one and trying to create the schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import engine_env, run_engine
from tests.postgres.plugin import admin

pytestmark = pytest.mark.usefixtures("pg_server")

DLID = "251207001"


@pytest.fixture
def roles(pg_server: dict[str, str]) -> Iterator[dict[str, str]]:
    """Three login roles and a database the daemon's role owns; their URLs by name."""
    tag = uuid.uuid4().hex[:10]
    names = {k: f"sd_{k}_{tag}" for k in ("daemon", "operator", "viewer", "nobody")}
    db = f"skydeck_roles_{tag}"
    for role in names.values():
        admin(pg_server, f"CREATE ROLE {role} LOGIN")
    admin(pg_server, f"CREATE DATABASE {db} OWNER {names['daemon']}")
    host, port = pg_server["SKYDECK_PG_HOST"], pg_server["SKYDECK_PG_PORT"]
    urls = {k: f"postgresql://{r}@/{db}?host={host}&port={port}" for k, r in names.items()}
    urls["_db"], urls["_tag"] = db, tag
    try:
        yield urls | {f"role:{k}": r for k, r in names.items()}
    finally:
        admin(pg_server, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        for role in names.values():
            admin(pg_server, f"DROP ROLE IF EXISTS {role}")


def _grant(pg_server: dict[str, str], roles: dict[str, str]) -> None:
    """The README's grants, run as the database owner would (here: the cluster's admin)."""
    op, view, owner = roles["role:operator"], roles["role:viewer"], roles["role:daemon"]
    admin(
        pg_server,
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {view};"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {op};"
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {op};"
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT ON TABLES TO {view};"
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {op};"
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {op}",
        roles["_db"],
    )


def _as(url: str, ws: Path, *args: str):
    return run_engine("-w", ws, *args, env=engine_env(SKYDECK_STATE_URL=url), timeout=120)


def _acks(url: str, ws: Path) -> int:
    import json

    out = _as(url, ws, "streams", "--json")
    assert out.returncode == 0, out.stderr
    return sum(len(v["acknowledgements"]) for v in json.loads(out.stdout))


def test_daemon_operator_and_viewer_roles(
    pg_server: dict[str, str], roles: dict[str, str], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    r = run_engine("-w", ws, "init", "--state", roles["daemon"])
    assert r.returncode == 0, r.stderr
    r = run_engine(
        "-w", ws, "mock", "--downlink", DLID, "--events", "20", "--event-bytes", "100",
        "--sources", "1", "--runs", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr

    # granted nothing yet: one line, exit 77, and no attempt to create what exists
    for who in ("operator", "viewer", "nobody"):
        r = _as(roles[who], ws, "downlinks")
        assert r.returncode == 77, (who, r.stdout, r.stderr)
        (line,) = r.stderr.strip().splitlines()
        assert roles[f"role:{who}"] in line and "may not read" in line, line
        assert "Traceback" not in r.stderr and "CREATE" not in line

    _grant(pg_server, roles)
    r = _as(roles["daemon"], ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    for who in ("operator", "viewer"):
        for cmd in (["downlinks"], ["streams"], ["locks"]):
            r = _as(roles[who], ws, *cmd)
            assert r.returncode == 0, (who, cmd, r.stderr)
        assert DLID in _as(roles[who], ws, "downlinks").stdout

    # the viewer may not write: one line naming its role, nothing recorded
    r = _as(roles["viewer"], ws, "ack", DLID, "--reason", "looked at it")
    assert r.returncode == 77, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert roles["role:viewer"] in line and "may not change" in line, line
    assert _acks(roles["daemon"], ws) == 0

    # the operator may: an acknowledgement recorded, read back by every role
    r = _as(roles["operator"], ws, "ack", DLID, "--reason", "checked by hand")
    assert r.returncode == 0, r.stderr
    assert _acks(roles["viewer"], ws) == 1

    # a role granted nothing still cannot read what the others wrote
    r = _as(roles["nobody"], ws, "streams")
    assert r.returncode == 77 and "Traceback" not in r.stderr
