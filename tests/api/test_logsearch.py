"""Search across logs (engine/api/logsearch.py, `skydeck-engine logs`): the logs a real
`watch --once` wrote when a delivery's source file was truncated (the job's own log and the
daemon's event log), searched by downlink and by time window; bad input is one line and
exit 2; any pattern and window text gives matches or BadInput (Hypothesis)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api.logsearch import parse_when, search_logs
from engine.core.errors import BadInput
from engine.core.workspace import Workspace
from tests.pipeline.conftest import FAST, cli_proc, make_delivery

DLID, OTHER = "251207002", "251207003"


def _truncate_and_reseal(delivery: Path, name: str) -> None:
    """A sender's truncated file with a manifest that matches it: accepted, then fails."""
    (delivery / name).write_bytes((delivery / name).read_bytes()[:4000])
    lines = []
    for line in (delivery / "MANIFEST.md5").read_text().splitlines():
        digest, _, fname = line.partition("  ")
        if fname == name:
            digest = hashlib.md5((delivery / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {fname}")
    (delivery / "MANIFEST.md5").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from engine.core.workspace import init_workspace
    from tests.pipeline.conftest import set_config

    ws = set_config(
        init_workspace(tmp_path_factory.mktemp("logs") / "ws"), "[disk]\nreserve_bytes = 0\n"
    )
    bad = make_delivery(ws, DLID, **FAST)
    source = next(p.name for p in sorted(bad.iterdir()) if p.suffix == ".h5")
    _truncate_and_reseal(bad, source)
    make_delivery(ws, OTHER, **FAST)
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 1, r.stderr  # one stream failed
    return ws


def test_a_stream_s_logs_and_events(searched: Workspace) -> None:
    found = search_logs(searched, "truncated HDF5", dlid=DLID)
    paths = {Path(m.path) for m in found}
    assert searched.daemon_log in paths  # the failed and stream_failed events
    jobs = [p for p in paths if p.parent.name == DLID]
    assert jobs and all(p.suffix == ".log" for p in jobs)
    for m in found:
        assert "truncated HDF5" in m.line and m.lineno >= 1
    events = [m for m in found if Path(m.path) == searched.daemon_log]
    assert all(DLID in m.line and not m.line.startswith("{") for m in events)  # human form
    assert search_logs(searched, "truncated HDF5", dlid=OTHER) == []
    assert search_logs(searched, "TRUNCATED hdf5", dlid=DLID, ignore_case=False) == []
    assert len(search_logs(searched, "truncated", dlid=DLID, limit=2)) == 2


def test_a_time_window(searched: Workspace) -> None:
    now = time.time()
    assert search_logs(searched, "stream_success", since=now - 3600)
    assert search_logs(searched, "stream_success", until=now - 3600) == []
    assert search_logs(searched, "truncated", since=now + 60) == []  # nothing written later


def test_the_command(searched: Workspace) -> None:
    r = cli_proc(searched, "logs", "truncated HDF5", DLID, "--since", "1h")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(":" in ln and "truncated HDF5" in ln for ln in lines)
    r = cli_proc(searched, "logs", "truncated", DLID, "--json")
    doc = json.loads(r.stdout)
    assert {"path", "line_number", "t", "line"} <= set(doc[0])
    r = cli_proc(searched, "logs", "no such words anywhere")
    assert r.returncode == 1 and r.stdout == ""
    for args, why in (
        (["("], "bad pattern"),
        (["x", "--since", "yesterday"], "not a time"),
        (["x", "12"], "not a downlink id"),
        (["x", "--since", "1h", "--until", "2h"], "ends before it begins"),
    ):
        r = cli_proc(searched, "logs", *args)
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_links_are_not_followed(searched: Workspace, tmp_path: Path) -> None:
    secret = tmp_path / "secret.log"
    secret.write_text("password=hunter2\n")
    link = searched.logs / DLID / "planted.log"
    link.symlink_to(secret)
    try:
        assert search_logs(searched, "hunter2") == []
    finally:
        link.unlink()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.text(max_size=30), when=st.text(max_size=30))
def test_any_pattern_and_window_give_matches_or_bad_input(
    searched: Workspace, pattern: str, when: str
) -> None:
    try:
        since = parse_when(when)
        assert isinstance(since, float)
    except BadInput:
        since = None
    try:
        found = search_logs(searched, pattern, since=since, limit=5)
    except BadInput:
        return
    assert len(found) <= 5
