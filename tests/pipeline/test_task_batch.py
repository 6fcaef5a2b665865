"""A task file's per-process batch settings: ``wrapper`` (a container such as ``singularity
exec IMAGE``, run around the command by any launcher) and ``gpus`` (what a batch job asks
for). Bad values are exit 2 with one line naming the task file and the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import BadInput
from engine.pipeline.task import parse_task

from .conftest import cli, make_delivery, set_config

HEAD = '[task]\nname = "t"\n\n[[process]]\nname = "p"\ncommand = ["true"]\n'


def _task(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(HEAD + extra)
    return path


def test_gpus_and_wrapper_are_read(tmp_path):
    t = parse_task(_task(tmp_path, 'gpus = 2\nwrapper = ["singularity", "exec", "/img.sif"]\n'))
    p = t.process("p")
    assert p.gpus == 2 and p.wrapper == ("singularity", "exec", "/img.sif")
    d = parse_task(_task(tmp_path, "")).process("p")
    assert d.gpus == 0 and d.wrapper == ()


@pytest.mark.parametrize(
    "extra, says",
    [
        ("gpus = -1\n", "gpus must be an integer within 0..64"),
        ("gpus = true\n", "gpus must be an integer"),
        ('gpus = "1"\n', "gpus must be an integer"),
        ('wrapper = "singularity exec"\n', "wrapper must be a list of non-empty strings"),
        ('wrapper = ["singularity", ""]\n', "wrapper must be a list of non-empty strings"),
        ('wrapper = ["x{"]\n', "bad placeholder"),
    ],
)
def test_bad_values_are_one_line_naming_the_file(tmp_path, extra, says):
    with pytest.raises(BadInput) as err:
        parse_task(_task(tmp_path, extra))
    msg = str(err.value)
    assert says in msg and "t.toml" in msg and "\n" not in msg


def test_a_wrapper_runs_around_the_command_under_the_local_launcher(ws, tmp_path, capsys):
    task = tmp_path / "wrapped.toml"
    task.write_text(
        '[task]\nname = "wrapped"\n\n[[process]]\nname = "w"\n'
        'wrapper = ["env", "SKYDECK_WRAPPED=in-{dlid}"]\n'
        'command = ["{python}", "-c", "import os, sys; open(sys.argv[1], \'w\')'
        '.write(os.environ[\'SKYDECK_WRAPPED\'])", "{workspace}/w-{dlid}.txt"]\n'
    )
    w = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    make_delivery(w, "251201301", events=20, chunks=1, runs=1)
    rc, _, err = cli(w, "run", "251201301", capsys=capsys)
    assert rc == 0, err
    assert (w.root / "w-251201301.txt").read_text() == "in-251201301"
