"""What a finished job left behind: its reason (a failed job's log: the line an operator
would look for) and its report (a successful job's $PIPELINE_SUMMARY: stream variables and
output files).

Why a module of its own: a failure's reason must travel with its status (the instance's
note, ``streams``, ``downlinks``, the console, alerts), whichever launcher ran the job, and
every launcher writes the job's output to the instance's log. So the runner reads the
reason here, from the log, after the launcher reported the exit; no launcher needs to know.
The report is read here for the same reason: the runner hands over what the job left.

What is read is bounded (the last ``TAIL_BYTES`` of the log: a job that wrote gigabytes
costs the same) and what is returned is one line of at most ``MAX_CHARS`` characters with
control characters escaped (a job's output is data: it must not move an operator's cursor
or forge a second line in a listing).

Which line, in this order of preference:

1. a Python traceback's final line (``ValueError: ...``), the exception that ended it;
2. the last line that says error (``error``, ``Error``, ``ERROR``, ``fatal``, ``FATAL``);
3. the last line in the Unix form ``program: message`` (``skydeck-engine: epix.h5:
   truncated HDF5 file``, what the engine's own commands print before exit 1 or 2);
4. else the last line of the job's own output.

Lines the launchers write themselves (``# ...`` headers: the command, the Slurm job id) are
never a reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.intake import manifest
from engine.pipeline.instance import InstanceView, Running, inside
from engine.store import ProcessInstance, StateDB

TAIL_BYTES = 64 * 1024
MAX_CHARS = 300
_ERROR = re.compile(r"error|Error|ERROR|fatal|Fatal|FATAL")
_PROGRAM_SAYS = re.compile(r"^[\w./+-]+: \S")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape(text: str) -> str:
    """``text`` with control characters written as ``\\xNN`` (one printable line)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _tail(log: Path) -> list[str]:
    """The last ``TAIL_BYTES`` of the log as lines (the first, maybe cut, dropped)."""
    try:
        with open(log, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - TAIL_BYTES)
            fh.seek(start)
            data = fh.read(TAIL_BYTES)
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
    if start > 0:
        lines = lines[1:]
    return lines


def _traceback_end(lines: list[str]) -> str | None:
    """The final line of the last Python traceback in ``lines``."""
    last = None
    inside = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            inside = True
            continue
        if inside and line and not line[0].isspace():
            last, inside = line, False
    return last


def error_line(log: Path) -> str | None:
    """The line of the job's log that says why it failed (the module docstring), escaped and
    bounded; None when the log is missing or holds nothing of the job's own."""
    lines = [ln.rstrip() for ln in _tail(log)]
    own = [ln for ln in lines if ln.strip() and not ln.startswith("# ")]
    if not own:
        return None
    found = _traceback_end(own)
    if found is None:
        found = next((ln for ln in reversed(own) if _ERROR.search(ln)), None)
    if found is None:
        found = next((ln for ln in reversed(own) if _PROGRAM_SAYS.match(ln)), None)
    if found is None:
        found = own[-1]
    found = escape(found.strip())
    return found if len(found) <= MAX_CHARS else found[: MAX_CHARS - 3] + "..."


def collect(
    db: StateDB, stream_id: int, view: InstanceView, pi: ProcessInstance, r: Running
) -> None:
    """Read the job's $PIPELINE_SUMMARY (variables, outputs) and record its files; an output
    outside the workspace's output areas is ValueError (a bad report: the job FAILED), never
    recorded (what is recorded, rollback and retention may remove)."""
    pdef, dlid = r.pdef, view.dlid
    outputs: list[Path] = [view.output(o, r.values) for o in pdef.outputs]
    sets: dict[str, list[str]] = {}
    if r.summary.exists():
        for line in r.summary.read_text(encoding="utf-8").splitlines():
            if not line.startswith("Pipeline.") or ":" not in line:
                continue
            name, _, value = line[len("Pipeline.") :].partition(":")
            name, value = name.strip(), value.strip()
            if name == "output":
                outputs.append(inside(Path(value), view.output_areas, "Pipeline.output"))
            else:
                sets[name] = value.split()
    if sets:
        db.set_stream_vars(stream_id, **sets)
    for out in outputs:
        if out.is_dir():
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    db.record_file(f, pdef.name, pi.id, dlid, manifest.md5_file(f))
        elif out.is_file():
            db.record_file(out, pdef.name, pi.id, dlid, manifest.md5_file(out))
