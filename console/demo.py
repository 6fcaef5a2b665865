"""`make demo` / `skydeck --demo`: a workspace with data flowing through every panel.

The feeder is the outside world plus the facility: a thread that delivers a mock downlink
into incoming/ every ``interval_s`` seconds (the real ``skydeck-engine mock``; every other
one carries gensteps, so its stream runs a propagate process), a ``skydeck-engine watch``
daemon that registers and processes them (the real pipeline), and two quick propagation
events at the start (the detecting box, seed 0, and the absorbing box, seed 1: an A/B
pair for the Hits panel that differs). Everything runs as separate processes, so the console stays responsive; ``stop``
terminates the daemon with SIGTERM, which releases its streams cleanly.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

from engine.api import ASSETS, Workspace, engine_argv, engine_env, init_workspace, resolve_root

DEMO_RESERVE = 100_000_000
SCENE = ASSETS / "scenes" / "tboolean-box-detect.toml"
SCENE_B = ASSETS / "scenes" / "tboolean-box.toml"  # the same box, its container absorbs


class Feeder:
    def __init__(self, ws: Workspace, interval_s: float = 5.0, max_downlinks: int = 40) -> None:
        self.ws, self.interval_s, self.max_downlinks = ws, interval_s, max_downlinks
        self.stopping = threading.Event()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.thread = threading.Thread(target=self._feed, name="demo-feeder", daemon=True)
        self.log = ws.console_logs / "demo-feeder.log"

    @classmethod
    def start(cls, workspace: str | None, interval_s: float = 5.0) -> Feeder:
        root = resolve_root(workspace)
        fresh = not (root / "skydeck.toml").exists()
        ws = init_workspace(root)
        if fresh:  # a demo should run on a laptop with little free disk
            ws = ws.with_overrides("disk", reserve_bytes=DEMO_RESERVE)
        f = cls(ws, interval_s)
        f.log.parent.mkdir(parents=True, exist_ok=True)
        f._spawn(["watch"], wait=False)
        f.thread.start()
        return f

    def _spawn(self, args: list[str], wait: bool = True) -> int | None:
        with open(self.log, "ab") as fh:
            proc = subprocess.Popen(
                engine_argv(self.ws, *args),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=engine_env(),
                start_new_session=True,
            )
        if not wait:
            self.procs.append(proc)
            return None
        return proc.wait()

    def next_dlid(self) -> str | None:
        day = datetime.now(UTC).strftime("%y%m%d")
        taken = (
            {p.name for p in self.ws.incoming_level0.iterdir()}
            if self.ws.incoming_level0.exists()
            else set()
        )
        taken |= (
            {p.name for p in self.ws.downlinks.iterdir()} if self.ws.downlinks.exists() else set()
        )
        for seq in range(1, 1000):
            if f"{day}{seq:03d}" not in taken:
                return f"{day}{seq:03d}"
        return None

    def _feed(self) -> None:
        n = 0
        while not self.stopping.is_set() and n < self.max_downlinks:
            dlid = self.next_dlid()
            if dlid is None:
                return
            extra = []
            if n % 2 == 1:  # every other delivery carries gensteps: its stream propagates them
                extra = ["--scene", SCENE.stem, "--gensteps-photons", "100000"]
            self._spawn(
                [
                    "mock",
                    "--downlink",
                    dlid,
                    "--events",
                    "3000",
                    "--event-bytes",
                    "2000",
                    "--sources",
                    "3",
                    "--runs",
                    "2",
                    "--chunks",
                    "3",
                    "--seed",
                    str(n),
                    *extra,
                ]
            )
            n += 1
            if n in (1, 2):  # an A/B pair of propagation events, early: two scenes that
                # differ (the container detects, or absorbs) and two seeds, so A/B shows it
                scene = SCENE if n == 1 else SCENE_B
                out = self.ws.events / scene.stem / f"demo-seed{n - 1}"
                if not (out / "meta.json").exists():
                    self._spawn(
                        [
                            "propagate",
                            str(scene),
                            "-o",
                            str(out),
                            "--photons",
                            "200000",
                            "--seed",
                            str(n - 1),
                            "--workers",
                            "1",
                        ]
                    )
            self.stopping.wait(self.interval_s)

    def stop(self) -> None:
        self.stopping.set()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.thread.join(timeout=30)


def demo_root(arg: str | None) -> Path:
    return resolve_root(arg)
