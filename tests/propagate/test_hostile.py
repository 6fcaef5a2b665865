"""Hostile input to `propagate`: an output holding its own scene, numbers that are
not numbers, non-finite scenes, and SIGTERM in the middle of a run with workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.propagate.conftest import TBOX, base_scene, cli


def _one_line(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("skydeck-engine: "), r.stderr
    for n in needles:
        assert n in line, (n, line)
    return line


def _reap(procs: list[psutil.Process]) -> None:
    """Kill what a failed run left behind, so a failure does not leave orphans running."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def test_output_holding_the_scene_is_refused(tmp_path: Path) -> None:
    """Found by the hostile-input review: an event directory replaced whole would take the scene inside it."""
    ev = tmp_path / "ev"
    r = cli("propagate", TBOX, "-o", ev, "--photons", "100", "--backend", "numpy", "--workers", "1")
    assert r.returncode == 0, r.stderr
    scene = ev / "scene.toml"
    scene.write_bytes(TBOX.read_bytes())
    _one_line(
        cli("propagate", scene, "-o", ev, "--photons", "100", "--backend", "numpy"),
        str(ev),
        "scene.toml",
    )
    assert scene.read_bytes() == TBOX.read_bytes()
    _one_line(
        cli(
            "propagate",
            scene,
            "-o",
            tmp_path / "ev" / ".." / "ev" / "scene.toml",
            "--photons",
            "100",
        ),
        "scene.toml",
    )
    assert scene.read_bytes() == TBOX.read_bytes()


def test_gensteps_inside_the_output_is_refused(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    r = cli("propagate", TBOX, "-o", ev, "--photons", "100", "--backend", "numpy", "--workers", "1")
    assert r.returncode == 0, r.stderr
    _one_line(
        cli("propagate", TBOX, "-o", ev, "--gensteps", ev / "gs.npy", "--backend", "numpy"),
        "gs.npy",
    )
    assert (ev / "gs.npy").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--photons", "inf"),
        ("--photons", "nan"),
        ("--photons", "1e400"),
        ("--photons", "-1"),
        ("--photons", "1.5"),
        ("--photons", "2e15"),
        ("--seed", "-1"),
        ("--seed", str(2**64)),
        ("--event", str(2**32)),
        ("--workers", "0"),
        ("--chunk", "0"),
        ("--chunk", "1e12"),
    ],
)
def test_cli_numbers_out_of_range_are_one_line(tmp_path: Path, option: str, value: str) -> None:
    """Found by the hostile-input review: `--photons inf` ended in an OverflowError traceback."""
    _one_line(cli("propagate", TBOX, "-o", tmp_path / "ev", option, value), option)
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    ("where", "mutate"),
    [
        (
            "refractive_index",
            lambda d: d["materials"]["Glass"].update(refractive_index=float("nan")),
        ),
        (
            "refractive_index",
            lambda d: d["materials"]["Glass"].update(refractive_index=float("inf")),
        ),
        ("source.radius", lambda d: d["source"].update(radius=float("nan"))),
        ("source.time", lambda d: d["source"].update(time=float("nan"))),
        ("source.photons", lambda d: d["source"].update(photons=2**62)),
        (
            "reemission_spectrum",
            lambda d: d["materials"]["Glass"].update(reemission_spectrum=float("nan")),
        ),
    ],
)
def test_non_finite_scene_numbers_are_refused(tmp_path: Path, write_scene, where, mutate) -> None:  # type: ignore[no-untyped-def]
    """Found by the hostile-input review: `refractive_index = nan` was accepted (NaN fails no comparison)."""
    doc = base_scene()
    mutate(doc)
    path = write_scene(doc)
    _one_line(
        cli("propagate", path, "-o", tmp_path / "ev", "--photons", "10", "--backend", "numpy"),
        str(path),
        where,
    )
    assert not (tmp_path / "ev").exists()


def test_sigterm_stops_workers_and_removes_the_temporary(tmp_path: Path) -> None:
    """Found by the hostile-input review: SIGTERM left the pool workers running and `.ev.tmp-<pid>` behind."""
    out = tmp_path / "ev"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "propagate",
            str(TBOX),
            "-o",
            str(out),
            "--photons",
            "1e10",
            "--workers",
            "2",
            "--backend",
            "numpy",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 120
    workers: list[psutil.Process] = []
    while time.time() < deadline and len(workers) < 2:
        workers = parent.children(recursive=True)
        time.sleep(0.05)
    assert len(workers) >= 2, "the pool never started"
    assert any(p.name.startswith(".ev.tmp-") for p in tmp_path.iterdir())
    time.sleep(0.5)
    try:
        os.kill(proc.pid, signal.SIGTERM)  # the parent only, as `kill PID` or a batch system does
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        assert err.strip() == "skydeck-engine: terminated"
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == [], f"orphaned workers: {[p.pid for p in alive]}"
        assert list(tmp_path.iterdir()) == []  # no event, no temporary directory
    finally:
        _reap([parent, *workers])


def test_sigterm_under_mpiexec_ends_every_rank_and_removes_the_temporary(tmp_path: Path) -> None:
    """The same under `mpiexec -n 3`: rank 0 waits for chunks in an MPI call, which used to
    defer the handler forever; it now polls, removes the temporary and aborts the job."""
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec"
    )
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install mpich)")
    out = tmp_path / "ev"
    proc = subprocess.Popen(
        [
            mpiexec,
            "-n",
            "3",
            sys.executable,
            "-m",
            "engine",
            "propagate",
            str(TBOX),
            "-o",
            str(out),
            "--photons",
            "1e10",
            "--backend",
            "numpy",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    launcher = psutil.Process(proc.pid)
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        p.name.startswith(".ev.tmp-") for p in tmp_path.iterdir()
    ):
        time.sleep(0.05)
    ranks = [p for p in launcher.children(recursive=True) if "engine" in " ".join(p.cmdline())]
    assert len(ranks) == 3
    time.sleep(1.0)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        assert err.splitlines() == ["skydeck-engine: terminated"], err  # no MPICH abort banner
        _, alive = psutil.wait_procs(ranks, timeout=10)
        assert alive == []
        assert list(tmp_path.iterdir()) == []
    finally:
        _reap([launcher, *ranks])


def test_gensteps_declaring_more_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    """Found by the hostile-input review for propagate: a .npy header declaring 2**40 gensteps in a 224-byte
    file made NumPy allocate 96 TiB (MemoryError traceback)."""
    import numpy as np

    bomb = tmp_path / "gensteps.npy"
    with open(bomb, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 6, 4)}
        )
        fh.write(b"\0" * 96)
    _one_line(
        cli("propagate", TBOX, "-o", tmp_path / "ev", "--gensteps", bomb),
        str(bomb),
        "declares shape",
    )
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    "meta",
    [
        "[]",
        '{"photons": "many"}',
        '{"flagmask_counts": {"zz": 1}}',
        '{"geometry": {"container_half": [1, -1, 1]}}',
    ],
)
def test_hits_on_a_foreign_meta_json_is_one_line(tmp_path: Path, meta: str) -> None:
    """`hits` read meta.json without checking it: `[]` was an AttributeError traceback."""
    ev = tmp_path / "ev"
    r = cli("propagate", TBOX, "-o", ev, "--photons", "100", "--backend", "numpy", "--workers", "1")
    assert r.returncode == 0, r.stderr
    (ev / "meta.json").write_text(meta)
    _one_line(cli("hits", ev), str(ev / "meta.json"))


@pytest.mark.parametrize("which", ["scene", "gensteps"])
def test_a_fifo_as_scene_or_gensteps_is_refused(tmp_path: Path, which: str) -> None:
    """`propagate FIFO` blocked forever reading a file no one writes."""
    fifo = tmp_path / ("scene.toml" if which == "scene" else "gensteps.npy")
    os.mkfifo(fifo)
    args = [fifo] if which == "scene" else [TBOX, "--gensteps", fifo]
    r = subprocess.run(
        [sys.executable, "-m", "engine", "propagate", *map(str, args), "-o", str(tmp_path / "ev")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    _one_line(r, str(fifo), "not a regular file")
