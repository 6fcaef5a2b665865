"""skydeck.toml is checked where it is read: a wrong type, a value out of range, an unknown
key or section, or a file that is not TOML is exit 2 with one line naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.core.errors import BadInput
from engine.core.workspace import ASSETS, Workspace, init_workspace
from tests.conftest import run_engine


def _ws_with(tmp_path: Path, old: str, new: str) -> Path:
    ws = init_workspace(tmp_path / "ws")
    cfg = ws.root / "skydeck.toml"
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new))
    return ws.root


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        (
            "reserve_bytes = 1_000_000_000",
            'reserve_bytes = "lots"',
            "disk.reserve_bytes must be an integer",
        ),
        (
            "reserve_bytes = 1_000_000_000",
            "reserve_bytes = -1",
            "disk.reserve_bytes = -1 is outside",
        ),
        ("max_jobs = 2", "max_jobs = 2.5", "pipeline.max_jobs must be an integer"),
        ("max_jobs = 2", "max_jobs = 0", "pipeline.max_jobs = 0 is outside"),
        ("quiet_s = 2.0", "quiet_s = nan", "watch.quiet_s = nan is outside"),
        ("quiet_s = 2.0", 'quiet_s = "soon"', "watch.quiet_s must be a number"),
        ("maxEvents = 125000", "maxEvents = true", "halfpipe.maxEvents must be an integer"),
        ('polling = "auto"', 'polling = "sometimes"', "watch.polling must be auto, true or false"),
        ('data_path      = "/data"', "data_path = 7", "build.data_path must be non-empty text"),
        ('state_db        = "state.db"', "state_db = []", "paths.state_db must be non-empty text"),
        ("[stage]", "[stage]\nsurprise = 1", "unknown key stage.surprise"),
        ("[stage]", "[bogus]\n[stage]", "unknown section [bogus]"),
        ('[pipeline]', '[pipline]\nlauncher = "slurm"\n[pipeline]', "unknown section [pipline]"),
        ('[pipeline]', '[pipeline]\nlauncer = "slurm"', "unknown key pipeline.launcer"),
        ("quiet_s = 2.0", "quiet_s = -1.0", "watch.quiet_s = -1.0 is outside 0..86400"),
        ("verify_threads = 2 ", "verify_threads = 0 ", "watch.verify_threads = 0 is outside 1..64"),
        (
            'smalldata_path = "/smalldata"',
            'smalldata_path = "small"',
            "build.smalldata_path must be an HDF5 path",
        ),
        # an area stays in the workspace unless given as an absolute path
        (
            'state_db        = "state.db"',
            'state_db = "../state.db"',
            "paths.state_db = '../state.db' climbs out",
        ),
        ('lock            = "lock"', 'lock = "lock/../.."', "paths.lock = 'lock/../..' climbs out"),
        (
            'logs            = "logs"',
            'logs = "a/../../../etc"',
            "paths.logs = 'a/../../../etc' climbs out",
        ),
        # the metrics textfile is replaced wholesale: never onto the state or into an area
        (
            'textfile = "metrics/skydeck.prom"',
            'textfile = "state.db"',
            "metrics.textfile = 'state.db' is the state database",
        ),
        (
            'textfile = "metrics/skydeck.prom"',
            'textfile = "lock/halfpipe-251207001"',
            "metrics.textfile = 'lock/halfpipe-251207001' is inside [paths] lock",
        ),
        (
            'textfile = "metrics/skydeck.prom"',
            'textfile = "../../etc/cron.d/x"',
            "metrics.textfile = '../../etc/cron.d/x' climbs out",
        ),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, old: str, new: str, needle: str) -> None:
    """Found by the hostile-input review: `reserve_bytes = "lots"` ended in a ValueError traceback."""
    root = _ws_with(tmp_path, old, new)
    res = run_engine(
        "-w",
        root,
        "propagate",
        ASSETS / "scenes" / "tboolean-box.toml",
        "-o",
        tmp_path / "ev",
        "--photons",
        "10",
    )
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and str(root / "skydeck.toml") in line and needle in line, line
    with pytest.raises(BadInput):
        Workspace.open(root)


def test_the_default_config_and_documented_overrides_load(tmp_path: Path) -> None:
    root = _ws_with(tmp_path, 'polling = "auto"', "polling = true")
    cfg = root / "skydeck.toml"
    text = cfg.read_text().replace("reserve_bytes = 1_000_000_000", "reserve_bytes = 0")
    cfg.write_text(text.replace("verify_threads = 2 ", "verify_threads = 3 "))
    ws = Workspace.open(root)
    assert ws.reserve_bytes == 0 and ws.settings.disk.reserve_bytes == 0
    assert ws.settings.watch.polling is True
    assert ws.settings.watch.verify_threads == 3


def test_a_typo_is_named_with_the_close_name(tmp_path: Path) -> None:
    """`[pipline] launcher = "slurm"` was silently ignored before typed settings."""
    root = _ws_with(tmp_path, "[pipeline]", '[pipline]\nlauncher = "slurm"\n[pipeline]')
    with pytest.raises(
        BadInput,
        match=r"unknown section \[pipline\] \(known: alerts, build, disk, .*\); "
        r"did you mean \[pipeline\]\?",
    ):
        Workspace.open(root)
    root = _ws_with(tmp_path / "2", "quiet_s = 2.0", "quite_s = 2.0")
    with pytest.raises(BadInput, match=r"unknown key watch.quite_s .*; did you mean quiet_s\?"):
        Workspace.open(root)


def test_not_utf8_and_too_deep_toml_are_one_line(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    cfg = root / "skydeck.toml"
    cfg.write_bytes(b"[disk]\nreserve_bytes = 0 # \xff\xfe\n")
    with pytest.raises(BadInput, match="not UTF-8"):
        Workspace.open(root)
    cfg.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(BadInput, match="skydeck.toml"):
        Workspace.open(root)


def test_a_fifo_as_config_is_refused(tmp_path: Path) -> None:
    """A FIFO at skydeck.toml blocked every command forever."""
    root = init_workspace(tmp_path / "ws").root
    (root / "skydeck.toml").unlink()
    os.mkfifo(root / "skydeck.toml")
    res = run_engine("-w", root, "downlinks", timeout=30)
    assert (
        res.returncode == 2
        and "not a regular file" in res.stderr
        and "\n" not in res.stderr.strip()
    )
