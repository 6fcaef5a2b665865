"""The seed's own files, as they are: ``file1.h5`` .. ``file10.h5`` with per-file
dataset names (``timestamp<N>``, ``bigdata<N>``), small data at the root beside the payload,
int32 timestamps counting from 0. The build is checked against an independent NumPy
computation of the red events and their payloads, and under ``mpiexec -n 3`` against one rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.builder.h5source import describe, expand_path
from engine.builder.match import MISSING
from engine.builder.verify import compare_datasets, verify_built
from engine.core.errors import BadInput
from tests.builder.trilogy_files import write_trilogy
from tests.conftest import run_engine, run_mpi
from tests.props import total

FILES = [f"file{k}.h5" for k in range(1, 11)]
SEED_ARGS = [
    "--timestamp-path",
    "timestamp{n}",
    "--data-path",
    "bigdata{n}",
    "--smalldata-path",
    "/",
    "--select",
    'smalldata == "red"',
]


@pytest.fixture(scope="module", params=[100, 1000], ids=["tiny", "large"])
def trilogy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's tiny run (100 events, its 5%/20% walk) and a larger one (0.5%/1% walk)."""
    d = tmp_path_factory.mktemp("trilogy")
    write_trilogy(d, dat_size=request.param, seed=request.param)
    return d


def expected(d: Path) -> dict[str, np.ndarray]:
    """Which events are red and what each file holds for them, computed from the files alone."""
    with h5py.File(d / "file1.h5", "r") as f:
        red = np.flatnonzero(f["smalldata"][()] == b"red")
        wanted = f["timestamp1"][()][red].astype(np.int64)
    out = {"timestamp": wanted}
    for k in range(1, 11):
        with h5py.File(d / f"file{k}.h5", "r") as f:
            ts, data = f[f"timestamp{k}"][()].astype(np.int64), f[f"bigdata{k}"][()]
        where = {int(t): i for i, t in enumerate(ts)}
        rows = np.array([where.get(int(t), MISSING) for t in wanted], dtype=np.int64)
        payload = np.zeros((len(wanted), data.shape[1]), dtype=data.dtype)
        payload[rows != MISSING] = data[rows[rows != MISSING]]
        out[f"file{k}/row"], out[f"file{k}/data"] = rows, payload
    return out


def test_builds_the_seed_files_unchanged(trilogy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    res = run_engine("build", *FILES, *SEED_ARGS, "-o", out, "--json", cwd=trilogy)
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    want = expected(trilogy)
    assert rep["events"] == len(want["timestamp"]) > 0
    assert rep["sources"][0] == "file1"
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["timestamp"][()], want["timestamp"])
        for k in range(1, 11):
            g = f[f"sources/file{k}"]
            assert (
                g.attrs["data_path"] == f"bigdata{k}"
                and g.attrs["timestamp_path"] == f"timestamp{k}"
            )
            assert np.array_equal(g["row"][()], want[f"file{k}/row"])
            assert np.array_equal(g["data"][()], want[f"file{k}/data"])
        # the secondaries lack some red events, as the seed's thinning walk makes them
        assert any(np.any(f[f"sources/file{k}/row"][()] == MISSING) for k in range(2, 11))
    assert verify_built(out).ok


def test_a_directory_of_them_picks_file1_as_principal(trilogy: Path, tmp_path: Path) -> None:
    """Sorted by name, file10.h5 comes before file2.h5; file1 still leads (it has the field)."""
    ref, out = tmp_path / "ref.h5", tmp_path / "out.h5"
    run_engine("build", *FILES, *SEED_ARGS, "-o", ref, cwd=trilogy, check=True)
    run_engine("build", trilogy, *SEED_ARGS, "-o", out, check=True)
    with h5py.File(out, "r") as f:
        assert f.attrs["principal"] == "file1"
    assert compare_datasets(ref, out) == []


@pytest.mark.mpi
def test_three_ranks_identical_to_one(trilogy: Path, tmp_path: Path) -> None:
    one, three = tmp_path / "one.h5", tmp_path / "three.h5"
    run_engine("build", *FILES, *SEED_ARGS, "-o", one, cwd=trilogy, check=True)
    res = run_mpi(3, "build", *FILES, *SEED_ARGS, "--batch", "3", "-o", three, cwd=trilogy)
    assert res.returncode == 0, res.stderr
    assert compare_datasets(one, three) == []
    assert verify_built(three).ok


def test_small_data_at_the_root_reads_only_the_fields_named(trilogy: Path, tmp_path: Path) -> None:
    """No placeholders: file1.h5 alone, its root as the small-data group. bigdata1 and
    timestamp1 sit there too; only ``smalldata`` is read (bigdata1 is no 1-D field)."""
    out = tmp_path / "out.h5"
    res = run_engine(
        "build",
        trilogy / "file1.h5",
        "--timestamp-path",
        "/timestamp1",
        "--data-path",
        "/bigdata1",
        "--smalldata-path",
        "/",
        "--select",
        'smalldata != "blue" and timestamp1 >= 10',
        "-o",
        out,
    )
    assert res.returncode == 0, res.stderr
    with h5py.File(trilogy / "file1.h5", "r") as f:
        keep = (f["smalldata"][()] != b"blue") & (f["timestamp1"][()] >= 10)
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["sources/file1/row"][()], np.flatnonzero(keep))
    res = run_engine(
        "build",
        trilogy / "file1.h5",
        "--timestamp-path",
        "/timestamp1",
        "--data-path",
        "/bigdata1",
        "--smalldata-path",
        "/",
        "--select",
        "bigdata1 > 0",
        "-o",
        out,
    )
    assert res.returncode == 2  # named, it is read and refused: one line naming the file
    assert "bigdata1 has shape" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_verify_names_a_source_that_lost_its_dataset(trilogy: Path, tmp_path: Path) -> None:
    for name in FILES[:2]:
        (tmp_path / name).write_bytes((trilogy / name).read_bytes())
    out = tmp_path / "out.h5"
    run_engine("build", *FILES[:2], *SEED_ARGS, "-o", out, cwd=tmp_path, check=True)
    with h5py.File(tmp_path / "file2.h5", "a") as f:
        f.move("bigdata2", "moved")
    res = run_engine("verify", out)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "file2.h5" in lines[0] and "no dataset bigdata2" in lines[0]


def test_int32_timestamps_from_zero_are_accepted(trilogy: Path) -> None:
    info, ts = describe(trilogy / "file1.h5", "timestamp{n}", "bigdata{n}", "/")
    assert ts[0] == 0 and ts.dtype == np.uint64 and info.n == len(ts)
    assert (info.timestamp_path, info.data_path) == ("timestamp1", "bigdata1")
    assert info.smalldata == ["bigdata1", "smalldata", "timestamp1"]  # listed, none read


def test_a_stem_without_a_number_is_one_line(trilogy: Path, tmp_path: Path) -> None:
    odd = tmp_path / "principal.h5"
    odd.write_bytes((trilogy / "file1.h5").read_bytes())
    res = run_engine("build", odd, trilogy / "file2.h5", *SEED_ARGS, "-o", tmp_path / "out.h5")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(odd) in lines[0] and "{n}" in lines[0], res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["principal.h5"]


@pytest.mark.parametrize(
    "template", ["bigdata{N}", "bigdata{n", "big}data", "bigdata{}", "{n.real}"]
)
def test_an_unknown_placeholder_is_one_line(trilogy: Path, tmp_path: Path, template: str) -> None:
    res = run_engine(
        "build",
        *FILES,
        "--timestamp-path",
        "timestamp{n}",
        "--data-path",
        template,
        "--smalldata-path",
        "/",
        "-o",
        tmp_path / "out.h5",
        cwd=trilogy,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--data-path" in lines[0] and "placeholder" in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []


def test_stem_placeholder_and_literal_braces(tmp_path: Path) -> None:
    assert expand_path("/{stem}/ts{n}", Path("/x/run_0007.h5")) == "/run_0007/ts0007"
    assert expand_path("a{{n}}b", Path("f1.h5")) == "a{n}b"
    with pytest.raises(BadInput, match="does not end in a number"):
        expand_path("ts{n}", Path("run7b.h5"))


@given(template=st.text(max_size=40), stem=st.text(max_size=20))
def test_expand_path_is_total(template: str, stem: str) -> None:
    """Any template and any file name: a dataset path or BadInput, never another exception."""
    name = stem.replace("/", "_") + ".h5"
    got = total(expand_path, template, Path(name), "--data-path")
    if isinstance(got, str):
        assert "{" not in template.replace("{{", "").replace("{n}", "").replace("{stem}", "")
        if "{" not in template and "}" not in template:
            assert got == template


@given(template=st.text(max_size=30))
def test_describe_with_any_template_is_total(trilogy: Path, template: str) -> None:
    """Whatever a template names in a real file (a group, nothing, the root): BadInput or a value."""
    total(describe, trilogy / "file1.h5", template, "bigdata{n}", "/")
