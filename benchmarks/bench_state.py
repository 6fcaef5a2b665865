"""State on PostgreSQL against SQLite, in the same run (docs/benchmarks.md,
"State on PostgreSQL").

Each measurement runs twice, once with the state in the workspace's SQLite file and once
with ``SKYDECK_STATE_URL`` naming a fresh database on the PostgreSQL server, and the table
gives the ratio PostgreSQL / SQLite:

1. orchestration overhead per process instance: bench_pipeline.run_empty_stream (a stream
   of ``true`` jobs; the reference is the same subprocesses without the engine);
2. registration latency with a running ``watch``: as bench_pipeline.bench_latency (a
   complete delivery renamed into the inbox until its row is visible to another
   connection), and the daemon's own ``registered`` time minus the rename;
3. claims per second with 8 competing processes (real processes, started together):
   ``claim_delivery`` and ``claim_stream`` on distinct rows (each process its own) and on
   the same rows (every process tries every row; each row must be won exactly once);
4. the console's refresh read with 10,000 downlinks and 100,000 process instances: 20
   instances change from another connection, then ``engine.api.DownlinkRows.read`` (what
   the console's poll worker runs; median of 10). Goal < 100 ms on both.

The PostgreSQL server: ``--url`` (a maintenance database's URL; databases are created and
dropped there), else the test cluster's (tests/postgres/cluster.sh up). Without one the
benchmark says so and exits 0 (``make bench`` runs on machines without PostgreSQL).

Run: `make bench` or `.venv/bin/python benchmarks/bench_state.py [--url URL]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_pipeline  # noqa: E402

from engine.core.workspace import Workspace, init_workspace  # noqa: E402
from engine.mock.delivery import MockSpec, deliver  # noqa: E402
from engine.store import Downlink, StateDB  # noqa: E402

N_DOWNLINKS = 10_000
PI_PER_STREAM = 10
CLAIMERS = 8
GOAL_REFRESH_S = 0.100
PG_ENV = Path(os.environ.get("SKYDECK_PG_DIR", "/tmp/skydeck-pg")) / "env"


# ---------------------------------------------------------------------- the server


def admin_url(given: str | None) -> str | None:
    if given:
        return given
    try:
        for line in PG_ENV.read_text().splitlines():
            k, _, v = line.partition("=")
            if k == "SKYDECK_TEST_STATE_URL":
                return v.strip()
    except OSError:
        pass
    return None


class Server:
    """Fresh databases on a PostgreSQL server, dropped at the end."""

    def __init__(self, admin: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.admin = admin
        self.made: list[str] = []
        with psycopg.connect(admin, connect_timeout=5) as conn:
            self.version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]

    def _run(self, sql: str) -> None:
        with self.psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def fresh(self) -> str:
        name = f"skydeck_bench_{uuid.uuid4().hex[:12]}"
        self._run(f"CREATE DATABASE {name} TEMPLATE template0")
        self.made.append(name)
        base, _, query = self.admin.partition("?")
        return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")

    def close(self) -> None:
        for name in self.made:
            self._run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def state_in(url: str | None) -> Iterator[None]:
    """``SKYDECK_STATE_URL`` set to ``url`` (None: unset, the SQLite file) for a while; the
    engine processes started meanwhile inherit it."""
    old = os.environ.pop("SKYDECK_STATE_URL", None)
    if url:
        os.environ["SKYDECK_STATE_URL"] = url
    try:
        yield
    finally:
        os.environ.pop("SKYDECK_STATE_URL", None)
        if old is not None:
            os.environ["SKYDECK_STATE_URL"] = old


def _ws(root: Path) -> Workspace:
    return init_workspace(root).with_overrides("disk", reserve_bytes=0)


# ---------------------------------------------------------------------- 2. latency


def registration(tmp: Path, n: int) -> dict[str, float]:
    """bench_pipeline.bench_latency's measurement (a complete delivery renamed into the
    inbox of a running ``watch``, until its row is visible to another connection), plus
    the daemon's own side: its ``registered`` time minus the rename (the ``registered``
    event's ``latency_s`` counts from the manifest's mtime, which here is when the delivery
    was written into staging before the run, so it is not used)."""
    task = tmp / "noop.toml"
    task.write_text('[task]\nname = "halfpipe"\n[[process]]\nname = "noop"\ncommand = ["true"]\n')
    ws = _ws(tmp / "lat").with_overrides("pipeline", task=str(task))
    staging = ws.root / "staging"
    staging.mkdir()
    dlids = [f"251127{k:03d}" for k in range(1, n + 1)]
    for dl in dlids:
        deliver(
            MockSpec(dl, sources=1, events=20, event_bytes=64, runs=1, chunks=1),
            "dir",
            staging / dl,
        )
    log_path = tmp / "lat.log"
    with open(log_path, "wb") as log:
        d = subprocess.Popen(
            [sys.executable, "-m", "engine", "-w", str(ws.root), "watch"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        renamed: dict[str, float] = {}
        visible: list[float] = []
        try:
            while b"watching" not in log_path.read_bytes():
                time.sleep(0.05)
            time.sleep(0.3)
            with StateDB(ws.state) as db:
                for dl in dlids:
                    renamed[dl] = t0 = time.time()
                    os.rename(staging / dl, ws.incoming_level0 / dl)  # complete now
                    while db.downlink(dl) is None:
                        time.sleep(0.002)
                    visible.append(time.time() - t0)
                    time.sleep(0.05)
                own = sorted(db.downlink(dl).registered - renamed[dl] for dl in dlids)
        finally:
            d.send_signal(signal.SIGTERM)
            d.wait(30)
    visible.sort()
    return {
        "visible_median_s": statistics.median(visible),
        "visible_p90_s": visible[int(0.9 * (n - 1))],
        "registered_median_s": statistics.median(own),
    }


# ---------------------------------------------------------------------- 3. claims


def _claimer(root: str, kind: str, names: list[str], start: Any, out: Any) -> None:
    ws = Workspace.open(Path(root))
    with StateDB(ws.state) as db:
        start.wait()
        t0 = time.perf_counter()
        won = []
        for name in names:
            if kind == "delivery":
                ok = db.claim_delivery(f"level0:{name}", "level0", name, f"/x/{name}")
            else:
                ok = db.claim_stream(name, "halfpipe")[0] is not None
            if ok:
                won.append(name)
        out.put((time.perf_counter() - t0, won))
        start.wait()  # stay alive (a live owner) until every claimer is done


def claims(tmp: Path, per_process: int) -> dict[str, float]:
    ws = _ws(tmp / "claims")
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, float] = {}
    for kind in ("delivery", "stream"):
        for shape in ("distinct", "same"):
            if shape == "distinct":
                lists = [
                    [f"2511{p:02d}{k:03d}" for k in range(per_process)] for p in range(CLAIMERS)
                ]
            else:
                lists = [[f"251199{k:03d}" for k in range(per_process)]] * CLAIMERS
            rows = sorted({n for names in lists for n in names})
            if kind == "stream":  # a stream is claimed for a registered downlink
                with StateDB(ws.state) as db:
                    for d in rows:
                        db.register_downlink(
                            Downlink(d, "level0", "/x", 1, False, None, time.time(), time.time())
                        )
            start = ctx.Barrier(CLAIMERS + 1)
            q = ctx.Queue()
            procs = [
                ctx.Process(target=_claimer, args=(str(ws.root), kind, names, start, q))
                for names in lists
            ]
            for p in procs:
                p.start()
            start.wait()  # all connected: go
            results = [q.get(timeout=600) for _ in procs]
            wall = max(t for t, _ in results)  # from the start to the last one done
            start.wait()
            for p in procs:
                p.join(60)
            won = [n for _, w in results for n in w]
            if sorted(won) != rows:
                raise SystemExit(
                    f"claims {kind}/{shape}: {len(won)} won for {len(rows)} rows "
                    "(each must be won exactly once)"
                )
            attempts = sum(len(names) for names in lists)
            out[f"{kind} {shape}"] = attempts / wall
            with StateDB(ws.state) as db, db.tx() as c:  # the next round starts clean
                c.execute("DELETE FROM deliveries")
                c.execute("DELETE FROM process_instances")
                c.execute("DELETE FROM events")
                c.execute("DELETE FROM streams")
                c.execute("DELETE FROM downlinks")
    return out


# ---------------------------------------------------------------------- 4. console refresh


def fill(ws: Workspace) -> None:
    """10,000 downlinks, one stream each, 10 latest process instances per stream, through
    StateDB on either backend (bench_console fills its workspace with this too). Each
    downlink gets its registration order (``seq``), as ``register_downlink`` gives it."""
    now = time.time()
    procs = [
        "launchChunks",
        "makeEvt",
        "makeEvt",
        "makeEvt",
        "makeEvt",
        "mergeIndices",
        "mergeEvt",
        "mergeEvt",
        "propagate",
        "cleanup",
    ]
    keys = ["", "00001", "00002", "00003", "00004", "", "785721600", "785721601", "", ""]
    with StateDB(ws.state) as db, db.tx() as c:
        c.executemany(
            "INSERT INTO downlinks (dlid, kind, level0, chunks, gensteps, scene, "
            "delivered, registered, seq) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"25{i // 1000 % 12 + 1:02d}{i % 28 + 1:02d}{i % 1000:03d}",
                    "level0",
                    "/x",
                    4,
                    0,
                    None,
                    now - i,
                    now - i,
                    i + 1,
                )
                for i in range(N_DOWNLINKS)
            ],
        )
        dlids = [r[0] for r in c.execute("SELECT dlid FROM downlinks ORDER BY dlid")]
        vars_ = json.dumps({"chunks": keys[1:5], "runs": keys[6:8]})
        c.executemany(
            "INSERT INTO streams (task, dlid, execution, status, vars, created) "
            "VALUES ('halfpipe', ?, 1, ?, ?, ?)",
            [(d, "SUCCESS" if i % 10 else "RUNNING", vars_, now) for i, d in enumerate(dlids)],
        )
        sids = [r[0] for r in c.execute("SELECT id FROM streams ORDER BY id")]
        c.executemany(
            "INSERT INTO process_instances (stream_id, process, key, execution, status,"
            " created, started, ended) VALUES (?,?,?,1,?,?,?,?)",
            [
                (sid, p, k, "SUCCESS", now - 60, now - 60, now - 50)
                for sid in sids
                for p, k in zip(procs, keys, strict=True)
            ],
        )


def refresh(tmp: Path) -> dict[str, float]:
    from engine import api

    ws = _ws(tmp / "console")
    t = time.perf_counter()
    fill(ws)
    fill_s = time.perf_counter() - t
    reads = []
    with StateDB(ws.state) as db:
        ids = [
            r[0]
            for r in db.q(
                "SELECT p.id FROM process_instances p JOIN streams s ON s.id = p.stream_id "
                "WHERE p.process = 'makeEvt' AND s.status = 'RUNNING' ORDER BY p.id LIMIT 400"
            )
        ]
        reader = api.DownlinkRows(ws)
        t = time.perf_counter()
        first = reader.read(db)
        first_s = time.perf_counter() - t
        assert len(first) == N_DOWNLINKS, len(first)
        with StateDB(ws.state) as writer:
            for rnd in range(10):
                with writer.tx() as c:  # a runner's writes: 20 makeEvt instances fail
                    c.executemany(
                        "UPDATE process_instances SET status='FAILED' WHERE id=?",
                        [(i,) for i in ids[rnd * 20 : (rnd + 1) * 20]],
                    )
                t = time.perf_counter()
                reader.read(db)
                reads.append(time.perf_counter() - t)
    return {"read_s": statistics.median(reads), "first_read_s": first_s, "fill_s": fill_s}


# ---------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--url",
        help="a maintenance database's URL on the PostgreSQL server "
        "(default: the test cluster's, tests/postgres/cluster.sh)",
    )
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--deliveries", type=int, default=30)
    ap.add_argument("--claims", type=int, default=50, help="rows per claiming process")
    a = ap.parse_args()
    admin = admin_url(a.url)
    try:
        server = Server(admin) if admin else None
    except Exception as err:  # no server, no psycopg: said, not failed
        print(
            f"bench_state: skipped, no PostgreSQL answers ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); tests/postgres/cluster.sh up"
        )
        return 0
    if server is None:
        print("bench_state: skipped, no PostgreSQL (--url, or tests/postgres/cluster.sh up)")
        return 0
    base = REPO / ".bench"
    base.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="state-", dir=base))
    res: dict[str, dict[str, Any]] = {}
    try:
        for backend in ("sqlite", "postgresql"):
            r: dict[str, Any] = {}
            for step in ("overhead", "latency", "claims", "refresh"):
                d = tmp / backend / step
                d.mkdir(parents=True)
                url = server.fresh() if backend == "postgresql" else None
                with state_in(url):
                    if step == "overhead":
                        r[step] = bench_pipeline.bench_overhead(d, a.instances, a.jobs)
                    elif step == "latency":
                        r[step] = registration(d, a.deliveries)
                    elif step == "claims":
                        r[step] = claims(d, a.claims)
                    else:
                        r[step] = refresh(d)
            res[backend] = r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        server.close()
    s, p = res["sqlite"], res["postgresql"]
    rows: list[tuple[str, float, float, str, str]] = [
        (
            "orchestration per instance (empty jobs)",
            s["overhead"]["per_instance_ms"],
            p["overhead"]["per_instance_ms"],
            "ms",
            f"{a.instances + 1} instances, {a.jobs} at once",
        ),
        (
            "  overhead over running `true` directly",
            s["overhead"]["overhead_ms"],
            p["overhead"]["overhead_ms"],
            "ms",
            "goal < 50 ms",
        ),
        (
            "delivery complete -> row visible (median)",
            1000 * s["latency"]["visible_median_s"],
            1000 * p["latency"]["visible_median_s"],
            "ms",
            f"n={a.deliveries}, inotify daemon",
        ),
        (
            "  p90",
            1000 * s["latency"]["visible_p90_s"],
            1000 * p["latency"]["visible_p90_s"],
            "ms",
            "",
        ),
        (
            "  the daemon's registered time - rename (median)",
            1000 * s["latency"]["registered_median_s"],
            1000 * p["latency"]["registered_median_s"],
            "ms",
            "its clock, before the commit",
        ),
    ]
    for key in ("delivery distinct", "delivery same", "stream distinct", "stream same"):
        rows.append(
            (
                f"claims/s, {CLAIMERS} processes, {key} rows",
                s["claims"][key],
                p["claims"][key],
                "/s",
                f"{CLAIMERS} x {a.claims} attempts",
            )
        )
    rows += [
        (
            f"console refresh read ({N_DOWNLINKS:,} dl, {N_DOWNLINKS * PI_PER_STREAM:,} pi)",
            1000 * s["refresh"]["read_s"],
            1000 * p["refresh"]["read_s"],
            "ms",
            "median of 10; goal < 100 ms",
        ),
        (
            "  first read of every row (startup, once)",
            1000 * s["refresh"]["first_read_s"],
            1000 * p["refresh"]["first_read_s"],
            "ms",
            "",
        ),
        ("  filling the database (setup)", s["refresh"]["fill_s"], p["refresh"]["fill_s"], "s", ""),
    ]
    print(f"PostgreSQL {server.version} against SQLite, same run, same machine")
    print(f"{'benchmark':52s} {'SQLite':>10s} {'PostgreSQL':>11s} {'PG/SQLite':>9s}  notes")
    for name, sv, pv, unit, note in rows:
        ratio = pv / sv if sv else float("inf")
        print(f"{name:52s} {sv:8.2f}{unit:>2s} {pv:9.2f}{unit:>2s} {ratio:9.2f}  {note}")
    ok = all(r["refresh"]["read_s"] < GOAL_REFRESH_S for r in (s, p)) and all(
        r["overhead"]["overhead_ms"] < 50 for r in (s, p)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
