"""`make demo`, headless: deliver a mock downlink into a workspace and build its chunks.

It walks the path a delivery takes today, with the real parts: `skydeck-engine mock` writes
a level-0 delivery (MANIFEST.md5 last), the manifest is verified, each chunk's RetDef
selects its events and `skydeck-engine build` runs under `mpiexec -n 3` (plainly where no
mpiexec is found), and every built file is verified against its sources.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.builder.verify import verify_built
from engine.core.diskspace import human_bytes
from engine.core.ids import retdef_name
from engine.core.workspace import init_workspace
from engine.intake import manifest


def _next_dlid(level0: Path) -> str:
    day = datetime.now(UTC).strftime("%y%m%d")
    for seq in range(1, 1000):
        dlid = f"{day}{seq:03d}"
        if not (level0 / dlid).exists():
            return dlid
    raise SystemExit(f"{level0}: no free downlink id left for {day}")


def _engine(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.mock.demo", description=__doc__)
    ap.add_argument("--workspace", "-w", default="skydeck-workspace")
    ap.add_argument("--events", type=int, default=600)
    ap.add_argument("--event-bytes", type=int, default=250_000)
    ap.add_argument("--ranks", type=int, default=3)
    args = ap.parse_args(argv)

    ws = init_workspace(args.workspace)
    dlid = _next_dlid(ws.incoming_level0)
    print(f"workspace {ws.root}")
    subprocess.run(
        _engine(
            "-w",
            str(ws.root),
            "mock",
            "--downlink",
            dlid,
            "--events",
            str(args.events),
            "--event-bytes",
            str(args.event_bytes),
            "--chunks",
            "3",
            "--runs",
            "2",
            "--as",
            "level0",
        ),
        check=True,
    )
    delivery = ws.incoming_level0 / dlid
    entries = manifest.verify(delivery)
    print(f"delivery {dlid}: {len(entries)} files verified against {manifest.MANIFEST_NAME}")

    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec"
    )
    out_dir = ws.downlinks / dlid
    out_dir.mkdir(parents=True, exist_ok=True)
    for chunk in (1, 2, 3):
        out = out_dir / f"{dlid}-{chunk:05d}.h5"
        cmd = _engine(
            "build",
            str(delivery),
            "-o",
            str(out),
            "--retdef",
            str(delivery / retdef_name(dlid, chunk)),
            "--select",
            'color == "red"',
            "--json",
            "--no-progress",
        )
        if mpiexec and args.ranks > 1:
            cmd = [mpiexec, "-n", str(args.ranks), *cmd]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rep = json.loads(res.stdout.strip().splitlines()[-1])
        check = verify_built(out)
        status = "verified" if check.ok else "FAILED: " + "; ".join(check.problems)
        print(
            f"chunk {chunk:05d}: {rep['events']:4d} red events from {', '.join(rep['sources'])} on "
            f"{rep['ranks']} rank(s), read {human_bytes(rep['bytes_read'])} at "
            f"{rep['gb_per_s']:.2f} GB/s -> {out.relative_to(ws.root)} [{status}]"
        )
        if not check.ok:
            return 1
    print(f"done: built events of downlink {dlid} are in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
