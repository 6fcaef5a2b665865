"""`skydeck-engine run DLID`: run one downlink's stream in the foreground.

Its state database connections wait for a PostgreSQL server that is unreachable (at start
or mid-run: a restart, a failover) as long as it takes, with back-off, saying so in one
``state_unreachable`` line and one ``state_reachable`` line (``down_s``); its jobs go on
meanwhile and their exits are recorded once the server is back. SIGTERM or SIGINT stops
the wait too.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from engine.cli import SUMMARY
from engine.cli.numbers import int_in

if TYPE_CHECKING:
    from engine.pipeline.launchers import Launcher


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help=SUMMARY["run"])
    p.add_argument("dlid", help="downlink id YYMMDDnnn (registered, or waiting in incoming/)")
    p.add_argument("--task", default=None, help="task name or task file (default: config)")
    p.add_argument(
        "--jobs",
        type=int_in("--jobs", 1, 1024),
        default=None,
        help="jobs at once (default: config)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import sys
    import threading
    import time

    from engine.core.alerts import alerter_for
    from engine.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, BadInput, StateUnavailable
    from engine.core.ids import parse_dlid
    from engine.core.interrupt import EXIT_TERMINATED
    from engine.core.log import emit_event, logger
    from engine.core.workspace import Workspace
    from engine.intake import deliveries, inbox
    from engine.pipeline.launchers import make_launcher
    from engine.pipeline.runner import run_stream
    from engine.pipeline.task import load_task
    from engine.store import StateDB
    from engine.store.outage import Outage, Patience

    ws = Workspace.open(args.workspace)
    dlid = parse_dlid(args.dlid)
    task = load_task(ws, args.task)
    stop = {"flag": False, "signal": 0}
    stopped = threading.Event()  # ends a wait for the state server too

    def on_signal(signum: int, frame: object) -> None:
        stop["flag"], stop["signal"] = True, signum
        stopped.set()

    # SIGTERM and SIGINT alike: stop launching, terminate the running jobs (they remove
    # their temporaries), record them TERMINATED, exit 143 or 130
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log = logger("pipeline")
    patience = Patience.forever(Outage(lambda ev: emit_event(log, ev)), stopped)
    launcher: Launcher | None = None
    alerts = alerter_for(ws)  # [alerts] command: a stream failing here is alerted from here

    def emit(ev: dict[str, Any]) -> None:
        emit_event(log, ev)
        alerts.observe(ev)

    try:
        with StateDB(ws.state, patience=patience) as db:
            if db.downlink(dlid) is None:
                cands = [c for c in inbox.scan(ws) if c.stem == dlid]
                outcomes = [deliveries.process(ws, db, c, ws.settings.watch.quiet_s) for c in cands]
                for o in outcomes:
                    if o.status == "rejected":
                        raise BadInput(
                            f"delivery rejected: {o.reason} (kept in {o.path})", o.file or o.path
                        )
                if db.downlink(dlid) is None:
                    raise BadInput(
                        f"downlink {dlid} is not registered and no complete delivery of "
                        "it is in incoming/",
                        ws.incoming_level0,
                    )
            jobs = args.jobs or ws.settings.pipeline.max_jobs
            launcher = make_launcher(ws.settings, jobs)
            if log.isEnabledFor(logging.DEBUG):
                emit_event(
                    log,
                    {
                        "t": round(time.time(), 3),
                        "event": "config",
                        "dlid": dlid,
                        "workspace": str(ws.root),
                        "task": task.name,
                        "launcher": ws.settings.pipeline.launcher,
                        "jobs": jobs,
                    },
                    logging.DEBUG,
                )
            # each event a line on stdout: human at a terminal, else JSON (--log-format)
            runner = run_stream(
                ws,
                db,
                task,
                dlid,
                launcher,
                emit=emit,
                should_stop=lambda: bool(stop["flag"]),
            )
    except KeyboardInterrupt:
        print("skydeck-engine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StateUnavailable:
        if not stop["flag"]:
            raise
        # stopped while the state server was unreachable: the jobs are stopped; the
        # stream stays RUNNING under a dead owner, the next runner resumes it
        if launcher is not None:
            launcher.cancel_all()
        print(
            f"skydeck-engine: {'terminated' if stop['signal'] == signal.SIGTERM else 'interrupted'}"
            " while the state database was unreachable",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if stop["signal"] == signal.SIGTERM else EXIT_INTERRUPTED
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        alerts.close()  # this run's alerts are sent before it exits (bounded)
    if runner.status == "SUCCESS":
        return 0
    if runner.status == "TERMINATED":
        return EXIT_TERMINATED if stop["signal"] == signal.SIGTERM else EXIT_INTERRUPTED
    with StateDB(ws.state) as db:
        bad = [pi for pi in db.instances(runner.stream.id) if pi.status == "FAILED"]
    where = f"{bad[0].log_path or db.where}: " if bad else ""
    what = f"{bad[0].label} {bad[0].note}; " if bad else ""
    print(
        f"skydeck-engine: {where}stream {dlid} {runner.status} ({what}{runner.note})",
        file=sys.stderr,
    )
    return EXIT_FAILED
