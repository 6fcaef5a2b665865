"""The builder through its CLI on real files: results verified against the sources."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from engine.builder.verify import compare_datasets, verify_built
from engine.core import retdef
from tests.conftest import run_engine


def _build(tmp_path: Path, src: Path, *extra: str, name: str = "out.h5") -> tuple[Path, dict]:
    out = tmp_path / name
    res = run_engine("build", src, "-o", out, "--json", *extra, check=True)
    return out, json.loads(res.stdout)


def assert_phases(rep: dict) -> None:
    """`build --json` reports its phases: each timed, none negative, their sum
    within the wall time, the copy's rows and bytes those of the summary."""
    phases = rep["phases"]
    assert list(phases) == ["plan", "create", "copy", "finalise"]
    assert all(p["seconds"] >= 0 for p in phases.values())
    assert 0 < sum(p["seconds"] for p in phases.values()) <= rep["wall_s"]
    # the copy phase holds the timed copy (under MPI timed with MPI.Wtime, the phase with
    # time.perf_counter: allow for the two clocks)
    assert phases["copy"]["seconds"] + 1e-3 >= rep["elapsed_s"] > 0
    assert phases["copy"]["rows"] == rep["events"]
    assert phases["copy"]["bytes"] == rep["bytes_written"] > 0
    assert phases["copy"]["bytes_read"] == rep["bytes_read"]
    assert phases["plan"]["events"] == rep["events"]
    assert phases["plan"]["sources"] == len(rep["sources"])
    assert phases["plan"]["timestamps"] >= rep["events"]
    assert phases["create"]["bytes"] >= rep["events"] * 8 * (len(rep["sources"]) + 1)


def test_build_all_events(tmp_path: Path, small_sources: Path) -> None:
    out, rep = _build(tmp_path, small_sources)
    assert_phases(rep)
    assert rep["events"] == 400 and rep["sources"] == ["cspad", "epix", "jungfrau"]
    assert (
        rep["bytes_read"] >= rep["events"] * 4000 and rep["elapsed_s"] > 0 and rep["gb_per_s"] > 0
    )
    v = verify_built(out)
    assert v.ok, v.problems
    assert v.rows_checked == v.payload_scheme_checked > 400
    with h5py.File(out) as f:
        assert f["timestamp"].dtype == np.uint64 and f["run"].shape == (400,)
        assert list(f["sources"]) == ["cspad", "epix", "jungfrau"]
        assert f["sources/cspad/row"][()].tolist() == list(range(400))
        assert f.attrs["principal"] == "cspad" and f.attrs["kind"] == "built-events"
        missing = f["sources/epix/row"][()] == -1
        assert missing.any() and not missing.all()
        assert not f["sources/epix/data"][np.flatnonzero(missing)[:3]].any()
    assert not list(tmp_path.glob(".out.h5.tmp-*"))


def test_selection_builds_only_red(tmp_path: Path, small_sources: Path) -> None:
    out, rep = _build(tmp_path, small_sources, "--select", 'color == "red"')
    with h5py.File(small_sources / "cspad.h5") as f:
        colors = f["smalldata/color"][()]
        runs = f["smalldata/run"][()]
    red = np.flatnonzero(colors == b"red")
    assert rep["events"] == len(red) > 0
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["sources/cspad/row"][()], red)
        np.testing.assert_array_equal(f["run"][()], runs[red])
    assert verify_built(out).ok
    later = int(np.unique(runs)[1])
    _, rep2 = _build(
        tmp_path, small_sources, "--select", f'run >= {later} and color != "blue"', name="o2.h5"
    )
    assert rep2["events"] == int(np.sum((runs >= later) & (colors != b"blue")))


def test_retdef_window_builds_its_chunk(tmp_path: Path, small_sources: Path) -> None:
    total = 0
    for c in (1, 2, 3):
        rd = small_sources / f"RetDef-251114005-{c:05d}.xml"
        out, rep = _build(tmp_path, small_sources, "--retdef", str(rd), name=f"c{c}.h5")
        b, e = retdef.parse(rd).window_ns()
        with h5py.File(out) as f:
            ts = f["timestamp"][()]
        assert len(ts) == rep["events"] and ts.min() >= b and ts.max() < e
        total += rep["events"]
    assert total == 400


def test_index_out_and_reuse(tmp_path: Path, small_sources: Path) -> None:
    for suffix in ("npz", "h5"):
        idx = tmp_path / f"idx.{suffix}"
        a, _ = _build(
            tmp_path,
            small_sources,
            "--select",
            'color == "green"',
            "--index-out",
            str(idx),
            name=f"a-{suffix}.h5",
        )
        assert idx.exists()
        b, _ = _build(
            tmp_path, small_sources, "--index-in", str(idx), "--batch", "5", name=f"b-{suffix}.h5"
        )
        assert compare_datasets(a, b) == []


def test_batch_size_does_not_change_the_result(tmp_path: Path, small_sources: Path) -> None:
    ref, _ = _build(tmp_path, small_sources, "--batch", "64", name="ref.h5")
    for batch in ("1", "7", "1000"):
        other, rep = _build(tmp_path, small_sources, "--batch", batch, name=f"b{batch}.h5")
        assert compare_datasets(ref, other) == [], batch
        assert rep["batches"] == -(-400 // int(batch))


def test_output_replaced_atomically(tmp_path: Path, small_sources: Path) -> None:
    out, _ = _build(tmp_path, small_sources, "--select", 'color == "red"')
    first = out.stat().st_ino
    out, _ = _build(tmp_path, small_sources)
    assert out.stat().st_ino != first and verify_built(out).ok


def test_every_read_path_gives_the_same_file(tmp_path: Path, small_sources: Path) -> None:
    """Kernel copy (copy_file_range), preadv into buffers, and h5py for filtered sources."""
    import shutil

    from tests.conftest import engine_env

    ref, _ = _build(tmp_path, small_sources, "--batch", "9", name="kernel.h5")
    res = run_engine(
        "build",
        small_sources,
        "-o",
        tmp_path / "preadv.h5",
        "--batch",
        "9",
        env=engine_env(SKYDECK_KERNEL_COPY="0"),
    )
    assert res.returncode == 0, res.stderr
    assert compare_datasets(ref, tmp_path / "preadv.h5") == []
    gz = tmp_path / "gz"
    gz.mkdir()
    for p in small_sources.glob("*.h5"):
        with h5py.File(p) as f, h5py.File(gz / p.name, "w") as g:
            for key in ("timestamp", "smalldata/color", "smalldata/run"):
                if key in f:
                    g[key] = f[key][()]
            g.create_dataset(
                "data", data=f["data"][()], chunks=(16, f["data"].shape[1]), compression="gzip"
            )
    _build(tmp_path, gz, "--batch", "9", name="h5py.h5")
    assert compare_datasets(ref, tmp_path / "h5py.h5") == []
    shutil.rmtree(gz)
