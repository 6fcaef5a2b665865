"""Retention: `skydeck-engine prune`, the daemon's schedule and what they must never
touch, on real workspaces after real runs of the halfpipe task.

Ages are forced the two ways the policy reads them: a plan made "later" (``now=``) and
ages of a fraction of a second in skydeck.toml for the command line and the daemon; mtimes
set with ``os.utime`` show that a file changed after it was freed counts from that change.
The tests that exercise the store's retention queries run on SQLite and on PostgreSQL
(``state_backend``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import api
from engine.core.errors import BadInput
from engine.core.ids import run_hex
from engine.core.owner import Owner
from engine.core.settings import DAY_S, parse_settings
from engine.core.workspace import Workspace
from engine.pipeline import locks
from engine.pipeline.retention import AREAS, apply, parse_reason, plan, protected
from engine.store import StateDB

from .conftest import (
    FAST,
    REPO,
    cli,
    log_events,
    make_delivery,
    quick,
    set_config,
    start_daemon,
    stop_daemon,
    stream_status,
    wait_for,
)

TINY = 1e-5  # days: 0.86 s
ALL_TINY = "".join(f"{a}_days = {TINY}\n" for a in AREAS)


def _later(days: float = 400.0) -> float:
    return time.time() + days * DAY_S


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (links not followed) -> (inode, size)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st_ = os.lstat(p)
            out[p] = (st_.st_ino, st_.st_size if not os.path.isdir(p) else 0)
    return out


def _run(ws: Workspace, dlid: str, as_: str = "fcopy", **kw: int) -> None:
    make_delivery(ws, dlid, as_=as_, **(FAST | kw))
    rc, _, err = cli(ws, "run", dlid)
    assert rc == 0, err


def _strays(ws: Workspace, dlid: str) -> list[Path]:
    """Files an operator (or another tool) put in the engine's areas: never pruned."""
    strays = [
        ws.logs / "stray.txt",
        ws.logs / dlid / "operator-notes.txt",
        ws.logs / dlid / "makeEvt-00009-e1.log",  # log-shaped, never recorded
        ws.logs / "console" / "my-notes.log",
        ws.stage / "stray.txt",
        ws.stage / dlid / "README",
        ws.downlinks / dlid / "notes.txt",
        ws.downlinks / dlid / f"{dlid}-00042.h5",  # chunk-shaped, not recorded
        ws.incoming_fcopy / "other.tar",
        ws.rejected / "keep-me.txt",
        ws.logs / "heartbeat" / "otherhost-1.json",
        ws.logs / "daemon.log",
    ]
    for p in strays:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("mine\n")
        old = time.time() - 1000 * DAY_S
        os.utime(p, (old, old))
    return strays


def _paths(doc: dict) -> list[tuple[str, str | None, int]]:
    return [(c["area"], c["path"], c.get("rows", 0)) for c in doc["candidates"]]


def test_prune_after_a_real_run_removes_exactly_what_the_dry_run_listed(ws, capsys, state_backend):
    """A downlink delivered as an fcopy package and run to its end; operators' files beside
    everything. `prune --dry-run` changes nothing; `prune` then removes exactly the set the
    dry run listed (logs, the package, events rows), and the console's numbers are what it
    freed. Staged files, strays, heartbeats and the daemon's log stay; the downlink still
    lists as staged."""
    dlid = "251125001"
    _run(ws, dlid, runs=2, chunks=2)
    strays = _strays(ws, dlid)
    staged = {p: p.read_bytes() for p in ws.stage.rglob("*") if p.is_file()}
    assert any(p.suffix == ".h5" for p in staged)
    ws = set_config(ws, f"[retention]\n{ALL_TINY}")
    time.sleep(1.0)
    capsys.readouterr()  # the run's event lines

    before = _tree(ws.root)
    rc, out, _ = cli(ws, "prune", "--dry-run", "--json", capsys=capsys)
    assert rc == 0
    dry = json.loads(out)
    assert dry["dry_run"] is True and _tree(ws.root) == before  # nothing removed
    listed = _paths(dry)
    areas = {a for a, _, _ in listed}
    # cleanup ran: no orphans; the raw delivery (the directory the package was extracted
    # into) goes too, as level0_days is set here
    assert areas == {"logs", "fcopy", "events", "level0"}
    assert ("level0", str(ws.incoming_level0 / dlid), 0) in listed
    assert ("fcopy", str(ws.incoming_fcopy / f"{dlid}.tar"), 0) in listed and (
        "fcopy",
        str(ws.incoming_fcopy / f"{dlid}.md5"),
        0,
    ) in listed
    preview = api.prune_preview(ws)  # what the console shows

    rc, out, _ = cli(ws, "prune", "--json", capsys=capsys)
    assert rc == 0
    done = json.loads(out)
    assert done["dry_run"] is False and _paths(done) == listed and not done["errors"]
    assert done["areas"] == dry["areas"] == {a: t.to_json() for a, t in preview.totals().items()}
    assert done["bytes"] == dry["bytes"] == preview.bytes > 0
    for _, path, _ in listed:
        assert path is None or not os.path.lexists(path)
    for p in strays:
        assert p.read_text() == "mine\n", p
    assert {p: p.read_bytes() for p in ws.stage.rglob("*") if p.is_file()} == {
        p: b for p, b in staged.items()
    } | {ws.stage / "stray.txt": b"mine\n", ws.stage / dlid / "README": b"mine\n"}
    assert (ws.logs / dlid).is_dir()  # a stray keeps the log directory
    rc, out, _ = cli(ws, "downlinks", "--json", capsys=capsys)
    assert [d["stream"] for d in json.loads(out)["downlinks"]] == ["SUCCESS"]

    rc, out, _ = cli(ws, "prune", capsys=capsys)  # the human form, with nothing left
    assert rc == 0 and "nothing to prune" in out and out.splitlines()[-1].startswith("total")


def test_nothing_of_a_stream_in_progress_is_touched(ws, tmp_path):
    """A real `skydeck-engine run` holds downlink B RUNNING (mergeEvt held by haltStage,
    its chunks built and logged) while a prune runs with every age long past: everything
    of B stays, the finished downlink A's go; B then finishes as if nothing happened."""
    a, b = "251125001", "251125002"
    _run(ws, a)
    make_delivery(ws, b, as_="fcopy", **FAST)
    api.set_halt(ws, "haltStage", b)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "run.log", "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "-w", str(ws.root), "run", b],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:

        def held() -> bool:
            views = api.stream_views(ws, b)
            return bool(views) and any(
                p.process == "mergeEvt" and p.status == "WAITING" for p in views[0].instances
            )

        wait_for(held, 60, what="B's mergeEvt held by haltStage")
        assert stream_status(ws)[b] == "RUNNING" and proc.poll() is None
        mine = {p: s for p, s in _tree(ws.root).items() if f"/{b}" in p and "/stage/" not in p}
        assert any(p.endswith(".log") for p in mine) and any(p.endswith(".h5") for p in mine)
        p = plan(ws, now=_later())
        assert p.candidates and all(
            c.dlid != b and (c.path is None or f"/{b}" not in c.path) for c in p.candidates
        )
        assert {c.dlid for c in p.candidates if c.path} == {a}
        res = apply(ws, p)
        assert res.removed and not res.failed
        assert {q: s for q, s in _tree(ws.root).items() if q in mine} == mine
        api.clear_halt(ws, "haltStage", b)
        assert proc.wait(120) == 0, (tmp_path / "run.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stream_status(ws)[b] == "SUCCESS"


def test_apply_rechecks_each_stream_and_each_file(ws, state_backend):
    """Between plan and apply the world moves: a downlink rolled back (its stream is no
    longer finished) keeps everything; a file replaced since the plan is kept; a file
    already gone is no error."""
    a, b = "251125001", "251125002"
    _run(ws, a)
    _run(ws, b)
    p = plan(ws, now=_later())
    logs_a = [c for c in p.candidates if c.dlid == a and c.area == "logs" and not c.is_dir]
    gone, replaced = logs_a[0].path, logs_a[1].path
    assert gone and replaced
    os.unlink(gone)
    os.rename(replaced, replaced + ".old")
    Path(replaced).write_text("a new log under the old name\n")
    rc, _, _ = cli(ws, "rollback", b, "cleanup")
    assert rc == 0
    res = apply(ws, p)
    assert [c.path for c in res.gone] == [gone]
    assert any(c.path == replaced and why == "changed since the plan" for c, why in res.kept)
    assert Path(replaced).read_text() == "a new log under the old name\n"
    held_b = [c for c, why in res.kept if c.dlid == b]
    assert held_b and all(
        why == f"the streams of {b} changed since the plan" for c, why in res.kept if c.dlid == b
    )
    assert all(c.path is None or os.path.lexists(c.path) for c in held_b)


def test_a_file_that_cannot_be_removed_is_reported_and_skipped(ws):
    dlid = "251125001"
    _run(ws, dlid)
    victim = next(
        c.path for c in plan(ws, now=_later()).candidates if c.area == "logs" and not c.is_dir
    )
    assert victim is not None
    undo = _make_unremovable(Path(victim))  # chattr moves its ctime: then planned
    try:
        p = plan(ws, now=_later())
        assert victim in {c.path for c in p.candidates}
        res = apply(ws, p)
    finally:
        undo()
    ((c, err),) = res.failed
    assert c.path == victim and err and Path(victim).exists()
    assert res.removed and all(not os.path.lexists(r.path) for r in res.removed if r.path)
    assert any(why.startswith("not empty") for _, why in res.kept)  # its directory stays


def _make_unremovable(p: Path):  # type: ignore[no-untyped-def]
    """Make unlinking ``p`` fail with EPERM/EACCES; returns the undo."""
    if os.geteuid() != 0:
        mode = p.parent.stat().st_mode
        p.parent.chmod(0o555)
        return lambda: p.parent.chmod(mode)
    res = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {res.stderr.strip()}")
    return lambda: subprocess.run(["chattr", "-i", str(p)], check=True)


def test_orphan_chunks_are_runcleanup(ws, state_backend):
    """haltCleanup kept a finished downlink's chunk outputs (cleanup skipped them): while
    the flag stands they stay; a run lock held on one of their runs keeps the chunks holding
    that run; then every recorded chunk output goes, its files-table row with it, and the
    staged files stay."""
    dlid = "251125001"
    api.set_halt(ws, "haltCleanup", dlid)
    _run(ws, dlid, runs=2, chunks=2, events=120)
    ws = set_config(ws, "[retention]\nlogs_days = 0\nevents_days = 0\nfcopy_days = 0\n")
    chunks = sorted((ws.downlinks / dlid).glob(f"{dlid}-[0-9]*.h5"))
    assert len(chunks) == 2
    staged = {p: p.read_bytes() for p in ws.stage.rglob("*.h5")}

    p = plan(ws, now=_later())
    assert not p.candidates and any("haltCleanup" in n for n in p.notes)
    api.clear_halt(ws, "haltCleanup", dlid)

    index = json.loads((ws.downlinks / dlid / "mergeIndices.json").read_text())
    run = index["runs"][0]
    holding = {
        str(ws.downlinks / dlid / f"{dlid}-{k}.h5")
        for k, runs in index["chunks"].items()
        if run in runs
    }
    lock = ws.lock / run_hex(run)
    locks.acquire(lock, "another", "mergeEvt", Owner.me())
    try:
        p = plan(ws, now=_later())
    finally:
        locks.release(lock, Owner.me())
    planned = {c.path for c in p.candidates if c.area == "orphan_chunks"}
    assert holding and not holding & planned
    assert planned == {str(c) for c in chunks} - holding

    p = plan(ws, now=_later())
    assert {c.path for c in p.candidates if not c.is_dir} == {str(c) for c in chunks}
    cleanup = ws.lock / "cleanup"  # a cleanup job of this very process (a daemon's)
    locks.acquire(cleanup, "251125077", "cleanup", Owner.me())
    try:
        res = apply(ws, p)
        assert not res.removed and all("cleanup lock" in why for _, why in res.kept)
        assert cleanup.exists()  # not released under that job
    finally:
        locks.release(cleanup, Owner.me())
    res = apply(ws, p)
    assert not res.failed and not res.kept
    assert not any(c.exists() for c in chunks)
    with StateDB(ws.state) as db:
        assert all(db.file(c) is None for c in chunks)
    assert {q: q.read_bytes() for q in ws.stage.rglob("*.h5")} == staged
    assert (ws.downlinks / dlid / "mergeIndices.json").exists()  # only chunk outputs go


def test_rejected_deliveries_go_whole_and_only_when_configured(ws):
    """A rejected delivery (a directory whose name is no downlink id) is kept by default
    (rejected_days = 0); with an age, everything its reason file says was moved goes, the
    reason file last, all or nothing: one file changed since keeps all of it."""
    d = make_delivery(ws, "251125009", **FAST)
    os.rename(d, d.with_name("bad-name"))
    (out,) = api.scan_incoming(ws)
    assert out.status == "rejected"
    moved = ws.rejected / "bad-name"
    reason = ws.rejected / "bad-name.reason"
    assert moved.is_dir() and reason.is_file()
    (ws.rejected / "keep-me.txt").write_text("mine\n")
    assert not [c for c in plan(ws, now=_later()).candidates if c.area == "rejected"]

    ws = set_config(ws, "[retention]\nrejected_days = 1\n")
    inner = next(moved.iterdir())
    future = time.time() + 10 * DAY_S
    os.utime(inner, (future, future))  # changed after the rejection
    assert not [c for c in plan(ws, now=_later(2)).candidates if c.area == "rejected"]
    os.utime(inner, (time.time(), time.time()))

    p = plan(ws, now=_later(2))
    rej = [c for c in p.candidates if c.area == "rejected"]
    assert rej[-1].path == str(reason) and rej[-2].path == str(moved) and rej[-2].is_dir
    assert {c.path for c in rej[:-2]} == {str(q) for q in moved.rglob("*")}
    res = apply(ws, p)
    assert not res.failed and not res.kept
    assert not moved.exists() and not reason.exists()
    assert (ws.rejected / "keep-me.txt").read_text() == "mine\n"


def test_events_older_than_the_cutoff_go_in_one_transaction(ws, state_backend):
    with StateDB(ws.state) as db:
        for _ in range(3):
            db.log_event("old")
        time.sleep(0.05)
        mid = time.time()
        time.sleep(0.05)
        db.log_event("new")
    ws = set_config(ws, "[retention]\nevents_days = 1\n")
    p = plan(ws, now=mid + DAY_S)
    (ev,) = [c for c in p.candidates if c.area == "events"]
    assert ev.rows == 3 and ev.path is None
    with StateDB(ws.state) as db:
        db.log_event("after the plan")
        res = apply(ws, p, db)
        kinds = [r["kind"] for r in db.q("SELECT kind FROM events ORDER BY id")]
        prune = json.loads(db.q("SELECT detail FROM events WHERE kind = 'prune'")[0]["detail"])
    assert res.totals()["events"].rows == 3
    assert kinds == ["new", "after the plan", "prune"] and prune["events_deleted"] == 3
    with StateDB(ws.state) as db:  # an idle prune writes nothing at all
        other = StateDB(ws.state)
        try:
            version = other.data_version()
            idle = apply(ws, plan(ws, db), db)
            assert not idle.removed and other.data_version() == version
        finally:
            other.close()


def test_never_a_staged_file_a_heartbeat_the_daemon_log_or_the_database(ws):
    """The guard holds even against the state database: instance logs recorded at a staged
    file, a heartbeat and the live daemon log are never candidates."""
    dlid = "251125001"
    _run(ws, dlid)
    staged = next(ws.stage.rglob("*.h5"))
    beat = ws.logs / "heartbeat" / "host-1.json"
    beat.parent.mkdir(parents=True, exist_ok=True)
    beat.write_text("{}")
    daemon_log = ws.logs / "daemon.log"
    daemon_log.write_text("{}\n")
    with StateDB(ws.state) as db:
        pis = db.instances(db.latest_stream(dlid).id)
        for pi, target in zip(pis, (staged, beat, daemon_log), strict=False):
            db.update_instance(pi.id, log_path=str(target))
    for target in (
        staged,
        beat,
        daemon_log,
        ws.state_db,
        Path(f"{ws.state_db}-wal"),
        ws.root / "skydeck.toml",
        ws.lock / "cleanup",
    ):
        assert protected(ws, target) is not None, target
    assert protected(ws, ws.logs / dlid / "cleanup-e1.log") is None
    p = plan(ws, now=_later())
    assert {str(staged), str(beat), str(daemon_log)}.isdisjoint({c.path for c in p.candidates})
    apply(ws, p)
    assert staged.exists() and beat.exists() and daemon_log.exists()


def test_the_daemon_prunes_on_its_schedule(ws, tmp_path):
    """`watch` with `[retention] interval_s`: a finished stream's logs and package go while
    the daemon runs, one `prune` event line says what went; its heartbeat and log stay."""
    ws = quick(ws, extra=f"\n[retention]\ninterval_s = 0.5\n{ALL_TINY}")
    log = tmp_path / "daemon.out"
    d = start_daemon(ws, log)
    try:
        make_delivery(ws, "251125001", as_="fcopy", **FAST)
        wait_for(lambda: stream_status(ws).get("251125001") == "SUCCESS", 90, what="stream")

        def pruned_logs() -> bool:
            return any(
                e["event"] == "prune" and e["areas"].get("logs", {}).get("files")
                for e in log_events(log)
            )

        wait_for(pruned_logs, 30, what="a prune event that removed logs")
        assert not (ws.incoming_fcopy / "251125001.tar").exists()
        assert d.poll() is None
        assert list((ws.logs / "heartbeat").glob("*.json"))
        assert (ws.logs / "daemon.log").stat().st_size > 0
    finally:
        assert stop_daemon(d) == 0
    prunes = [e for e in log_events(log) if e["event"] == "prune"]
    assert all(e["failed"] == 0 and "bytes" in e for e in prunes)
    assert not [e for e in log_events(log) if e["event"] == "error"]


def test_retention_settings_are_checked():
    r = parse_settings({"retention": {"logs_days": 2, "interval_s": 0}}).retention
    assert r.logs_days == 2.0 and r.interval_s == 0.0 and r.rejected_days == 0.0
    with pytest.raises(BadInput, match=r"retention.logs_days = -1 is outside"):
        parse_settings({"retention": {"logs_days": -1}})
    with pytest.raises(BadInput, match="did you mean logs_days"):
        parse_settings({"retention": {"log_days": 1}})


ROOT = "/ws/incoming/rejected"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=30),
            lambda kids: (
                st.lists(kids, max_size=4)
                | st.dictionaries(st.sampled_from(["moved", "delivery", "x"]), kids, max_size=3)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "delivery": st.text(max_size=20),
                "moved": st.lists(
                    st.text(max_size=40).map(lambda t: t if t.startswith("/") else f"{ROOT}/{t}"),
                    max_size=4,
                ),
            }
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_reason_file_gives_paths_inside_rejected_or_none(data: bytes) -> None:
    """A reason file is read from a directory operators write to: any bytes give either the
    moved paths, each directly in rejected/ and none a reason file, or None; never an
    exception."""
    out = parse_reason(data, ROOT)
    if out is None:
        return
    paths, dlid = out
    assert all(os.path.dirname(p) == ROOT and not p.endswith(".reason") for p in paths)
    assert dlid is None or (len(dlid) == 9 and dlid.isdigit())


def test_a_failing_prune_is_one_error_line_and_the_daemon_goes_on(ws, tmp_path):
    """The prune reads the task file (which process makes chunk outputs): one that turns bad
    under a running daemon makes each prune fail, as one `error` line naming the prune, and
    the daemon keeps serving; once the file is good again the prune recovers."""
    task = tmp_path / "task.toml"
    task.write_text((Path(REPO) / "assets" / "tasks" / "halfpipe.toml").read_text())
    ws = quick(ws, extra=f'\n[pipeline]\ntask = "{task}"\n[retention]\ninterval_s = 0.3\n')
    log = tmp_path / "daemon.out"
    good = task.read_text()
    d = start_daemon(ws, log)
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30, what="start")
        task.write_text("[task]\nname = 3\n")
        wait_for(
            lambda: any(e["event"] == "error" and e["during"] == "prune" for e in log_events(log)),
            30,
            what="the prune's error line",
        )
        make_delivery(ws, "251125003", **FAST)  # the daemon still serves
        wait_for(lambda: stream_status(ws).get("251125003") == "SUCCESS", 90, what="stream")
        task.write_text(good)
        wait_for(
            lambda: any(
                e["event"] == "recovered" and e["during"] == "prune" for e in log_events(log)
            ),
            30,
            what="recovered",
        )
        assert d.poll() is None
    finally:
        assert stop_daemon(d) == 0
    errors = [e for e in log_events(log) if e["event"] == "error"]
    assert len(errors) == 1 and "task.toml" in errors[0]["error"]


def test_raw_level0_goes_only_when_configured_whole_and_as_registered(ws):
    """level0_days is off by default. Set, a SUCCESS downlink's raw delivery goes file by
    file as its manifest lists them, the manifest last, then the directory; a delivery with
    one file's bytes changed since registration (same size, same times: only its MD5 tells)
    is kept whole, every file of it; one whose stream did not succeed is kept."""
    good, changed, waiting = "251125001", "251125002", "251125003"
    for dlid in (good, changed):
        _run(ws, dlid, as_="level0")
    make_delivery(ws, waiting, **FAST)  # never run: no SUCCESS stream
    assert all(c.area != "level0" for c in plan(ws, now=_later()).candidates)  # the default
    ws = set_config(ws, "[retention]\nlevel0_days = 1\n")
    victim = next(p for p in sorted((ws.incoming_level0 / changed).iterdir()) if p.suffix == ".h5")
    st_ = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    before = sorted(p.name for p in (ws.incoming_level0 / changed).iterdir())
    p = plan(ws, now=_later())
    level0 = [c for c in p.candidates if c.area == "level0"]
    assert {c.dlid for c in level0} == {good, changed}  # planning reads no content
    mine = [c.path for c in level0 if c.dlid == good]
    assert mine[-2].endswith("MANIFEST.md5") and mine[-1] == str(ws.incoming_level0 / good)
    res = apply(ws, p)
    assert not res.failed, res.failed
    assert not (ws.incoming_level0 / good).exists()
    assert sorted(p.name for p in (ws.incoming_level0 / changed).iterdir()) == before
    kept = [why for c, why in res.kept if c.dlid == changed]
    assert kept and all("kept whole" in w or "still there" in w for w in kept), kept
    assert (ws.incoming_level0 / waiting).is_dir()
    assert list(ws.stage.rglob("*.h5"))  # staged output untouched
    rc, out, _ = cli(ws, "downlinks", "--json")
    assert rc == 0
