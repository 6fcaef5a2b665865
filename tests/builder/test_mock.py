"""Mock deliveries: layout, determinism, payload derived from timestamps, RetDefs."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import h5py
import numpy as np

from engine.builder.payload import rows_for
from engine.core import retdef
from engine.core.ids import NS, dlid_start_met
from engine.intake import manifest
from tests.conftest import run_engine


def test_sources_follow_the_contract(small_sources: Path) -> None:
    names = sorted(p.name for p in small_sources.iterdir())
    assert names == [
        "MANIFEST.md5",
        "RetDef-251114005-00001.xml",
        "RetDef-251114005-00002.xml",
        "RetDef-251114005-00003.xml",
        "cspad.h5",
        "epix.h5",
        "jungfrau.h5",
    ]
    manifest.verify(small_sources)
    with h5py.File(small_sources / "cspad.h5") as f:
        ts = f["timestamp"][()]
        assert len(ts) == 400 and ts.dtype == np.uint64 and np.all(np.diff(ts) > 0)
        assert int(ts[0]) // NS == dlid_start_met("251114005")
        data = f["data"]
        assert data.shape == (400, 1000) and data.dtype == np.int32 and data.chunks[0] >= 1
        np.testing.assert_array_equal(data[10:20], rows_for(ts[10:20], 1000, 0))
        colors = set(f["smalldata/color"][()].tolist())
        assert colors == {b"red", b"blue", b"green"}
        runs = np.unique(f["smalldata/run"][()])
        assert len(runs) == 2
    for k, name in enumerate(["epix", "jungfrau"], start=1):
        with h5py.File(small_sources / f"{name}.h5") as f:
            sts = f["timestamp"][()]
            assert 0 < len(sts) < 400 and np.all(np.isin(sts, ts))
            np.testing.assert_array_equal(f["data"][:5], rows_for(sts[:5], 1000, k))


def test_retdefs_tile_the_downlink(small_sources: Path) -> None:
    with h5py.File(small_sources / "cspad.h5") as f:
        ts = f["timestamp"][()]
    counted = 0
    prev_end = None
    for c in (1, 2, 3):
        rd = retdef.parse(small_sources / f"RetDef-251114005-{c:05d}.xml")
        assert rd.type == "LSEP" and rd.chunkid == c and rd.scid == 77
        b, e = rd.window_ns()
        if prev_end is not None:
            assert b == prev_end or abs(b - prev_end) < 2000
        prev_end = e
        counted += int(np.sum((ts >= b) & (ts < e)))
    assert counted == 400


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        run_engine(
            "mock",
            "--downlink",
            "250102001",
            "--events",
            "50",
            "--event-bytes",
            "400",
            "--seed",
            "3",
            "-o",
            tmp_path / name,
            check=True,
        )
        digests.append((tmp_path / name / "MANIFEST.md5").read_text())
    assert digests[0] == digests[1]
    run_engine(
        "mock",
        "--downlink",
        "250102001",
        "--events",
        "50",
        "--event-bytes",
        "400",
        "--seed",
        "4",
        "-o",
        tmp_path / "c",
        check=True,
    )
    assert (tmp_path / "c" / "MANIFEST.md5").read_text() != digests[0]


def test_deliveries_into_a_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run_engine("-w", ws, "init", check=True)
    run_engine(
        "-w",
        ws,
        "mock",
        "--downlink",
        "251114001",
        "--events",
        "20",
        "--event-bytes",
        "64",
        "--as",
        "level0",
        check=True,
    )
    d = ws / "incoming/level0/251114001"
    assert set(manifest.verify(d)) == {
        "cspad.h5",
        "epix.h5",
        "jungfrau.h5",
        "RetDef-251114001-00001.xml",
        "RetDef-251114001-00002.xml",
    }
    run_engine(
        "-w",
        ws,
        "mock",
        "--downlink",
        "251114002",
        "--events",
        "20",
        "--event-bytes",
        "64",
        "--as",
        "fcopy",
        check=True,
    )
    tar = ws / "incoming/fcopy/251114002.tar"
    md5 = (ws / "incoming/fcopy/251114002.md5").read_text().split()
    assert md5 == [hashlib.md5(tar.read_bytes()).hexdigest(), "251114002.tar"]
    with tarfile.open(tar) as tf:
        assert "MANIFEST.md5" in tf.getnames() and "cspad.h5" in tf.getnames()
    again = run_engine("-w", ws, "mock", "--downlink", "251114002", "--as", "fcopy")
    assert again.returncode == 2 and "already delivered" in again.stderr


def test_bad_arguments(tmp_path: Path) -> None:
    for bad in ("2511140051", "251340001", "25111400x", "251114000"):
        res = run_engine("mock", "--downlink", bad, "-o", tmp_path / "x")
        assert res.returncode == 2, bad
        assert res.stderr.count("\n") == 1 and "invalid downlink id" in res.stderr
    res = run_engine("mock", "--downlink", "251114001", "--events", "0", "-o", tmp_path / "x")
    assert res.returncode == 2 and "--events" in res.stderr
    res = run_engine("-w", tmp_path / "nows", "mock", "--downlink", "251114001")
    assert res.returncode == 2 and "not a skydeck workspace" in res.stderr


def test_runs_are_distinct_acquisitions_at_any_size(tmp_path: Path) -> None:
    run_engine(
        "mock",
        "--downlink",
        "251114003",
        "--events",
        "12",
        "--event-bytes",
        "16",
        "--runs",
        "3",
        "-o",
        tmp_path / "m",
        check=True,
    )
    with h5py.File(tmp_path / "m" / "cspad.h5") as f:
        ts, run = f["timestamp"][()], f["smalldata/run"][()]
    starts = np.unique(run)
    assert len(starts) == 3 and np.all(np.diff(ts.astype(np.int64)) > 0)
    for r in starts:  # a run's id is the MET second its first event falls in
        assert int(ts[run == r][0]) // NS == r
