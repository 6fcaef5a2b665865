"""Planning a build (rank 0 alone): from the options to the rows every output event takes.

Validate the inputs and the output path before any work, open every source and read only
its timestamps and the small-data fields a selection names, choose the principal source,
select its events (``--select``, ``--retdef``) or load a saved match table (``--index-in``),
match every other source by timestamp (``engine.builder.match``), save ``--index-out``, and
check that the output fits on its disk. The result, a ``Plan``, is what the output file is
created from (``engine.builder.output``) and what the workers copy (``engine.builder.batchio``).
Nothing here reads payload rows.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.builder.batchio import worker_memory
from engine.builder.h5source import SmallData, SourceInfo, describe, parse_path_template
from engine.builder.match import MatchTable, match_sorted
from engine.builder.options import BuildOptions
from engine.builder.select import Selection
from engine.core.atomic import refuse_alias, remove_path, sweep_stale_temps, temp_name
from engine.core.diskspace import check_space
from engine.core.errors import BadInput
from engine.core.ids import NS
from engine.core.inputs import check_regular
from engine.core.memory import check_memory


def expand_inputs(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.glob("*.h5") if not q.name.startswith("."))
            if not found:
                raise BadInput("directory holds no *.h5 source files", p)
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise BadInput("no input files given")
    return files


def check_output(out: Path) -> Path:
    """Refuse an unusable output path before any work; return the temporary name."""
    parent = out.parent
    if not parent.exists():
        raise BadInput("output directory does not exist", parent)
    if not parent.is_dir():
        raise BadInput("output parent is not a directory", parent)
    if out.is_dir():
        raise BadInput("output is a directory, expected a file name", out)
    sweep_stale_temps(out)
    tmp = temp_name(out)
    try:
        with open(tmp, "wb"):
            pass
    except OSError as err:
        raise BadInput(f"cannot write output: {err.strerror}", parent) from None
    return tmp


@dataclass
class Plan:
    sources: list[SourceInfo]  # principal first
    table: MatchTable
    selection: str
    tmp: Path
    offsets: list[int] = field(default_factory=list)  # payload byte offset per source


def plan_build(opt: BuildOptions) -> Plan:
    files = expand_inputs(opt.inputs)
    read = [*files, *(p for p in (opt.retdef, opt.index_in) if p is not None)]
    for p in read:
        check_regular(p)  # before any library opens it: a FIFO would block forever
    refuse_alias(opt.output, read)
    if opt.index_out is not None:
        refuse_alias(opt.index_out, [*read, opt.output], what="--index-out")
    tmp = check_output(opt.output)
    try:
        return _plan(opt, files, tmp)
    except BaseException:
        remove_path(tmp)
        raise


def _plan(opt: BuildOptions, files: list[Path], tmp: Path) -> Plan:
    parse_path_template(opt.timestamp_path, "--timestamp-path")  # before any file is opened
    parse_path_template(opt.data_path, "--data-path")
    text = (opt.select or "").strip()
    selection = Selection(text) if text and opt.index_in is None else None
    infos, stamps = [], []
    for f in files:
        info, ts = describe(f, opt.timestamp_path, opt.data_path, opt.smalldata_path)
        if np.dtype(info.dtype).kind not in "iufcb":
            raise BadInput(
                f"{info.data_path} has dtype {info.dtype}; fixed-size numbers expected", f
            )
        infos.append(info)
        stamps.append(ts)
    widest = max(infos, key=lambda i: i.row_bytes)
    check_memory(
        worker_memory(infos, opt.batch),
        f"--batch {opt.batch} with rows of {widest.row_bytes} bytes (a worker's buffers)",
        widest.path,
    )
    names = [i.name for i in infos]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise BadInput(f"two input files share the source name {sorted(dup)[0]!r} (file stem)")
    if opt.principal:
        if opt.principal not in names:
            raise BadInput(f"--principal {opt.principal!r} is not among the sources {names}")
        p = names.index(opt.principal)
    else:  # the first source with small data, the first with every field selected if any
        named = selection.names - {"timestamp"} if selection else set()
        with_small = [
            k for k, i in enumerate(infos) if i.smalldata and named <= set(i.smalldata)
        ] or [k for k, i in enumerate(infos) if i.smalldata]
        p = with_small[0] if with_small else 0
    order = [p] + [k for k in range(len(infos)) if k != p]
    infos = [infos[k] for k in order]
    stamps = [stamps[k] for k in order]
    principal, pts = infos[0], stamps[0]

    small = SmallData(principal, opt.smalldata_path)  # reads only the fields looked up
    if opt.index_in is not None:
        table = MatchTable.load(opt.index_in)
        table.check_inputs([i.path for i in infos], [i.n for i in infos], opt.index_in)
        table.rows = table.rows[[table.sources.index(i.name) for i in infos]]
        table.sources, table.paths = [i.name for i in infos], [i.path for i in infos]
    else:
        mask = np.ones(principal.n, dtype=bool)
        if selection is not None:
            # a field named timestamp wins; ChainMap only reads here, SmallData is a Mapping
            fields = ChainMap(small, {"timestamp": pts})  # type: ignore[arg-type]
            mask &= selection.evaluate(fields, principal.n, principal.path)
        if opt.retdef is not None:
            from engine.core.retdef import parse as parse_retdef  # only builds that use one pay

            rd = parse_retdef(opt.retdef)
            win = np.zeros(principal.n, dtype=bool)
            for s in rd.spans:
                win |= (pts >= np.uint64(round(s.tbeg * NS))) & (
                    pts < np.uint64(round(s.tend * NS))
                )
            mask &= win
        sel = np.flatnonzero(mask)
        if len(sel) == 0:
            what = f"selection {text!r}" if text else "the requested window"
            raise BadInput(f"{what} matches no events", opt.retdef or principal.path)
        wanted = pts[sel]
        rows = np.empty((len(infos), len(sel)), dtype=np.int64)
        rows[0] = sel
        for k in range(1, len(infos)):
            rows[k] = match_sorted(wanted, stamps[k])
        run = small["run"][sel].astype(np.int64) if "run" in small else None
        table = MatchTable(
            timestamps=wanted,
            run=run,
            sources=[i.name for i in infos],
            paths=[i.path for i in infos],
            lengths=[i.n for i in infos],
            rows=rows,
        )
    if opt.index_out is not None:
        table.save(opt.index_out)
    need = (
        len(table) * sum(i.row_bytes for i in infos) + len(table) * 8 * (len(infos) + 2) + (1 << 20)
    )
    check_space(opt.output, need, opt.reserve, "built events")
    return Plan(sources=infos, table=table, selection=text, tmp=tmp)
