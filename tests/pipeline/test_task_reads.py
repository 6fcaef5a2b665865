"""A task file's ``reads`` field (what a process reads from upstream, for rollback checks):
any value gives a task or one-line BadInput, never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import BadInput
from engine.pipeline.task import TASKS_DIR, parse_task
from tests.props import total

NAMES = st.sampled_from(["a", "b", "c", "", "a b", "makeEvt"])
VALUES = st.one_of(
    st.lists(NAMES, max_size=4),
    st.lists(st.integers(), max_size=3),
    NAMES,
    st.integers(),
    st.booleans(),
    st.dictionaries(NAMES, st.integers()),
)


def task_text(reads: object) -> str:
    value = (
        json.dumps(reads)
        if not isinstance(reads, dict)
        else "{" + ", ".join(f"{json.dumps(k)} = {v}" for k, v in reads.items()) + "}"
    )
    return (
        '[task]\nname = "t"\n[[process]]\nname = "a"\ncommand = ["true"]\n'
        f'[[process]]\nname = "b"\nafter = ["a"]\ncommand = ["true"]\nreads = {value}\n'
    )


@given(VALUES)
def test_reads_is_a_list_of_earlier_processes_or_bad_input(reads: object) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.toml"
        path.write_text(task_text(reads))
        out = total(parse_task, path)
    if isinstance(out, BadInput):
        assert "reads" in str(out)
    else:
        assert out.process("b").reads == tuple(reads)  # type: ignore[arg-type]
        assert set(out.process("b").reads) <= {"a"}


def test_halfpipe_merges_read_make_evt() -> None:
    task = parse_task(TASKS_DIR / "halfpipe.toml")
    assert task.process("mergeEvt").reads == ("makeEvt",)
    assert task.process("mergeIndices").reads == ("makeEvt",)
    assert task.process("cleanup").reads == ()
