"""The halfpipe batch jobs the engine itself provides: mergeIndices, mergeEvt, cleanup.

Run as ``python -m engine.pipeline.jobs <job> -w WS DLID [...]`` by the launcher (so they are
real processes that can be killed, retried, logged), they report back the Pipeline-II way,
appending ``Pipeline.<var>: ...`` / ``Pipeline.output: <path>`` lines to $PIPELINE_SUMMARY.

- mergeIndices: which runs did this downlink touch (from the chunk outputs' ``/run``);
  writes ``downlinks/<DLID>/mergeIndices.json`` and sets the stream variable ``runs``.
- mergeEvt RUN: merges the run's events from this downlink's chunk outputs and those of
  earlier downlinks still present, skipping events any other downlink already staged,
  into ``stage/<DLID>/r<10d>/r%010d-e%020d.h5`` files of at most maxEvents events (built-
  events contract), each written under a temporary name and renamed; one chunk token per
  staged file in ``stage/chunktokens/r<10d>/``; the staged timestamps in
  ``downlinks/<DLID>/<run>/r<10d>-staged.npy`` (HalfPipe's spans file). Deterministic:
  a rerun after a kill writes the same bytes and removes leftovers of a different plan.
- cleanup: removes intermediates (chunk outputs) of finished runs of this downlink; only
  files the state database records as written by the engine, with their recorded size,
  reached from ``downlinks/`` without following a link (a linked ``downlinks/<DLID>``
  keeps what lies behind it); honours haltCleanup. Its state reads and writes wait for a
  PostgreSQL server that restarts meanwhile, as long as it takes (a line in the job's log
  each way).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
from pathlib import Path

import h5py
import numpy as np

from engine.core.atomic import atomic_path, atomic_write_bytes
from engine.core.errors import BadInput, JobFailed, SkydeckError
from engine.core.ids import is_dlid, parse_dlid, run_hex, run_name, staged_name
from engine.core.nofollow import Tree, on_link
from engine.core.workspace import Workspace
from engine.pipeline.halts import halt_flag
from engine.store import StateDB
from engine.store.outage import Outage, Patience

INDEX_NAME = "mergeIndices.json"


def _summary(line: str) -> None:
    path = os.environ.get("PIPELINE_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _say(ev: dict) -> None:
    """A state server outage as one line of the job's log."""
    print(" ".join(f"{k}={v}" for k, v in ev.items() if k != "t"), file=sys.stderr, flush=True)


def chunk_outputs(ws: Workspace, dlid: str) -> list[Path]:
    return sorted((ws.downlinks / dlid).glob(f"{dlid}-[0-9][0-9][0-9][0-9][0-9].h5"))


# ---------------------------------------------------------------- mergeIndices


def merge_indices(ws: Workspace, dlid: str) -> dict:
    runs_by_chunk: dict[str, list[int]] = {}
    counts: dict[int, int] = {}
    for out in chunk_outputs(ws, dlid):
        chunk = out.stem.rsplit("-", 1)[1]
        try:
            with h5py.File(out, "r") as f:
                if "run" not in f:
                    raise BadInput("built events carry no /run", out)
                run = f["run"][:]
        except OSError as err:
            raise BadInput(f"unreadable chunk output: {err}", out) from None
        uniq, n = np.unique(run, return_counts=True)
        runs_by_chunk[chunk] = [int(r) for r in uniq]
        for r, k in zip(uniq, n, strict=True):
            counts[int(r)] = counts.get(int(r), 0) + int(k)
    index = {
        "dlid": dlid,
        "runs": sorted(counts),
        "events": {str(k): v for k, v in sorted(counts.items())},
        "chunks": runs_by_chunk,
    }
    target = ws.downlinks / dlid / INDEX_NAME
    atomic_write_bytes(target, json.dumps(index, indent=1).encode() + b"\n")
    _summary("Pipeline.runs: " + " ".join(str(r) for r in index["runs"]))
    _summary(f"Pipeline.output: {target}")
    return index


def read_index(ws: Workspace, dlid: str) -> dict | None:
    try:
        return json.loads((ws.downlinks / dlid / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- mergeEvt


def _staged_record(ws: Workspace, dlid: str, run: int) -> Path:
    return ws.downlinks / dlid / str(run) / f"{run_name(run)}-staged.npy"


def _other_downlinks(ws: Workspace, dlid: str) -> list[str]:
    try:
        return sorted(
            e.name for e in os.scandir(ws.downlinks) if is_dlid(e.name) and e.name != dlid
        )
    except FileNotFoundError:
        return []


def _inputs(ws: Workspace, dlid: str, run: int) -> list[Path]:
    """This downlink's chunk outputs holding the run, then earlier downlinks' still present."""
    out: list[Path] = []
    for d in [dlid] + [d for d in _other_downlinks(ws, dlid) if d < dlid]:
        idx = read_index(ws, d)
        if idx is None:
            continue
        for chunk, runs in sorted(idx["chunks"].items()):
            p = ws.downlinks / d / f"{d}-{chunk}.h5"
            if run in runs and p.is_file():
                out.append(p)
    return out


def _already_staged(ws: Workspace, dlid: str, run: int) -> np.ndarray:
    parts = []
    for d in _other_downlinks(ws, dlid):
        rec = _staged_record(ws, d, run)
        if rec.is_file():
            parts.append(np.load(rec))
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)


def merge_evt(ws: Workspace, dlid: str, run: int, max_events: int) -> list[Path]:
    if max_events < 1:
        raise BadInput(f"maxEvents must be at least 1, got {max_events}")
    idx = read_index(ws, dlid) or {"chunks": {}}
    for chunk, runs in sorted(idx["chunks"].items()):
        mine = ws.downlinks / dlid / f"{dlid}-{chunk}.h5"
        if run in runs and not mine.is_file():
            raise JobFailed("chunk output is gone (cleaned up?); roll back makeEvt first", mine)
    inputs = _inputs(ws, dlid, run)
    # gather (timestamp, input index, row in input) for the run's events
    ts_all, src_all, row_all = [], [], []
    sources: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for k, p in enumerate(inputs):
        with h5py.File(p, "r") as f:
            sel = np.nonzero(f["run"][:] == run)[0]
            ts_all.append(f["timestamp"][:][sel].astype(np.uint64))
            src_all.append(np.full(len(sel), k, dtype=np.int64))
            row_all.append(sel.astype(np.int64))
            for name, g in f["sources"].items():
                if name not in sources:
                    sources[name] = (g["data"].dtype, g["data"].shape[1:])
    ts = np.concatenate(ts_all) if ts_all else np.empty(0, dtype=np.uint64)
    src = np.concatenate(src_all) if src_all else np.empty(0, dtype=np.int64)
    row = np.concatenate(row_all) if row_all else np.empty(0, dtype=np.int64)
    # one copy per event (the first input wins), in time order, minus what others staged
    ts, first = np.unique(ts, return_index=True)
    src, row = src[first], row[first]
    done = _already_staged(ws, dlid, run)
    keep = ~np.isin(ts, done)
    ts, src, row = ts[keep], src[keep], row[keep]

    rdir = ws.stage / dlid / run_name(run)
    tokens = ws.stage / "chunktokens" / run_name(run)
    rdir.mkdir(parents=True, exist_ok=True)
    tokens.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names = sorted(sources)
    for a in range(0, len(ts), max_events):
        b = min(a + max_events, len(ts))
        first_event = int(np.searchsorted(done, ts[a])) + a  # position in the run's sequence
        target = rdir / f"{staged_name(run, first_event)}.h5"
        _write_staged(target, inputs, names, sources, ts[a:b], src[a:b], row[a:b], run, dlid)
        (tokens / staged_name(run, first_event)).touch()
        written.append(target)
    # leftovers of an earlier execution with another plan (e.g. another maxEvents)
    keep_names = {p.name for p in written}
    for old in rdir.glob("r*-e*.h5"):
        if old.name not in keep_names:
            old.unlink()
            (tokens / old.stem).unlink(missing_ok=True)
    rec = _staged_record(ws, dlid, run)
    rec.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(rec) as tmp, open(tmp, "wb") as fh:
        np.save(fh, ts)
    for p in written:
        _summary(f"Pipeline.output: {p}")
        _summary(f"Pipeline.output: {tokens / p.stem}")
    _summary(f"Pipeline.output: {rec}")
    return written


def _write_staged(
    target: Path,
    inputs: list[Path],
    names: list[str],
    sources: dict[str, tuple[np.dtype, tuple[int, ...]]],
    ts: np.ndarray,
    src: np.ndarray,
    row: np.ndarray,
    run: int,
    dlid: str,
) -> None:
    n = len(ts)
    used = sorted(set(int(k) for k in src))
    src_paths: dict[str, set[str]] = {n: set() for n in names}
    top: dict[str, str] = {}
    for k in used:
        with h5py.File(inputs[k], "r") as f:
            for key in ("timestamp_path", "data_path"):
                if key in f.attrs:
                    top.setdefault(key, str(f.attrs[key]))
            for name in names:
                if name in f["sources"] and "path" in f["sources"][name].attrs:
                    src_paths[name].add(str(f["sources"][name].attrs["path"]))
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as out:
        out.attrs["kind"] = "built-events"
        for key, val in top.items():
            out.attrs[key] = val
        out.attrs["downlink"] = dlid
        out.attrs["run"] = run
        out.attrs["inputs"] = [p.name for p in (inputs[k] for k in used)]
        out.create_dataset("timestamp", data=ts.astype(np.uint64), track_times=False)
        out.create_dataset("run", data=np.full(n, run, dtype=np.int64), track_times=False)
        g = out.create_group("sources")
        for name in names:
            dtype, shape = sources[name]
            rows = np.full(n, -1, dtype=np.int64)
            data = np.zeros((n, *shape), dtype=dtype)
            for k in used:
                mine = np.nonzero(src == k)[0]
                with h5py.File(inputs[k], "r") as f:
                    if name not in f["sources"]:
                        continue
                    sg = f["sources"][name]
                    r = row[mine]
                    lo, hi = int(r.min()), int(r.max()) + 1
                    rows[mine] = sg["row"][lo:hi][r - lo]
                    data[mine] = sg["data"][lo:hi][r - lo]
            sg_out = g.create_group(name)
            if len(src_paths[name]) == 1:  # rows refer to one source file: `verify` can check
                sg_out.attrs["path"] = next(iter(src_paths[name]))
            sg_out.create_dataset("row", data=rows, track_times=False)
            sg_out.create_dataset("data", data=data, track_times=False)


# ---------------------------------------------------------------- cleanup


def cleanup(ws: Workspace, dlid: str) -> list[Path]:
    """Remove this downlink's intermediates of finished runs; never a file we did not write."""
    flag = halt_flag(ws, dlid, "haltCleanup")
    if flag is not None:
        print(f"cleanup of {dlid} skipped: {flag} exists")
        return []
    idx = read_index(ws, dlid) or {"chunks": {}}
    busy_runs: set[int] = set()
    for d in _other_downlinks(ws, dlid):  # runs of streams still in progress elsewhere
        if (ws.lock / f"halfpipe-{d}").exists():
            busy_runs.update((read_index(ws, d) or {}).get("runs", []))
    removed: list[Path] = []
    # reached from downlinks/ (the configured area, as the stream wrote through it) without
    # following a link below it (engine/core/nofollow.py): a downlinks/<DLID> or .parts/
    # swapped for a link never sends an unlink elsewhere; a job waits for a state server
    # that restarts, as long as it takes (its runner does too)
    with (
        StateDB(ws.state, patience=Patience.forever(Outage(_say))) as db,
        Tree(os.path.realpath(ws.downlinks)) as tree,
    ):
        for chunk, runs in sorted(idx["chunks"].items()):
            if any((ws.lock / run_hex(r)).exists() or r in busy_runs for r in runs):
                print(f"keeping chunk {chunk}: a run it holds is still being merged")
                continue
            name = f"{dlid}-{chunk}.h5"
            parts = (dlid, f"{name}.parts")
            try:
                inside: list[str] | None = sorted(tree.listdir(parts))
            except OSError as err:
                inside = None
                if on_link(err):
                    print(f"keeping {tree.path(parts)}: a symbolic link on its path")
            out = ws.downlinks / dlid / name  # as the runner recorded it
            for rel, p in [
                ((dlid, name), out),
                *(((*parts, n), Path(f"{out}.parts") / n) for n in inside or ()),
            ]:
                rec = db.file(p)
                if rec is None:
                    continue
                try:
                    st = tree.lstat(rel)
                except OSError as err:
                    if on_link(err):
                        print(f"keeping {p}: a symbolic link on its path")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_size != rec.size:
                    print(f"keeping {p}: size differs from what the engine wrote")
                    continue
                tree.unlink(rel)
                db.forget_file(p)
                removed.append(p)
            if inside is not None:
                with contextlib.suppress(OSError):
                    if not tree.listdir(parts):
                        tree.rmdir(parts)
    for p in removed:
        print(f"removed {p}")
    return removed


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.pipeline.jobs")
    ap.add_argument("job", choices=("mergeIndices", "mergeEvt", "cleanup"))
    ap.add_argument("-w", "--workspace", default=None)
    ap.add_argument("dlid")
    ap.add_argument("--run", type=int, default=None)
    ap.add_argument("--max-events", type=int, default=None)
    a = ap.parse_args(argv)
    try:
        ws = Workspace.open(a.workspace)
        dlid = parse_dlid(a.dlid)
        if a.job == "mergeIndices":
            idx = merge_indices(ws, dlid)
            print(f"{dlid}: runs {idx['runs']}")
        elif a.job == "mergeEvt":
            if a.run is None:
                raise BadInput("mergeEvt needs --run")
            max_events = a.max_events or int(
                os.environ.get("HALFPIPE_MAXEVENTS") or ws.settings.halfpipe.maxEvents
            )
            files = merge_evt(ws, dlid, a.run, max_events)
            print(f"{dlid} {run_name(a.run)}: staged {len(files)} file(s)")
        else:
            cleanup(ws, dlid)
    except SkydeckError as err:
        print(f"{a.job}: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"{a.job}: {JobFailed(str(err))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
