"""Matching by sorted search agrees with the trilogy's full scan; match tables round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.builder.match import MISSING, MatchTable, match_naive, match_scan, match_sorted
from engine.core.errors import BadInput


def _sources(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    principal = np.cumsum(rng.integers(1, 50, n)).astype(np.uint64) + np.uint64(10**18)
    others = [principal[rng.random(n) < rng.uniform(0.3, 0.9)] for _ in range(k)]
    return principal, others


def test_sorted_search_equals_naive_scan() -> None:
    rng = np.random.default_rng(3)
    principal, others = _sources(rng, 3000, 4)
    wanted = principal[rng.random(len(principal)) < 0.4]
    fast = np.stack([match_sorted(wanted, t) for t in others])
    slow = match_naive(wanted, others)
    np.testing.assert_array_equal(fast, slow)
    for t, rows in zip(others, fast, strict=True):
        ok = rows != MISSING
        np.testing.assert_array_equal(t[rows[ok]], wanted[ok])
        assert ok.sum() == np.isin(wanted, t).sum()


def test_sorted_search_equals_the_v0_scan() -> None:
    rng = np.random.default_rng(5)
    principal, others = _sources(rng, 300, 3)
    wanted = principal[::3]
    np.testing.assert_array_equal(
        match_scan(wanted, others), np.stack([match_sorted(wanted, t) for t in others])
    )


def test_edges() -> None:
    ts = np.array([5, 7, 9], dtype=np.uint64)
    np.testing.assert_array_equal(
        match_sorted(np.array([1, 5, 6, 9, 10], np.uint64), ts), [-1, 0, -1, 2, -1]
    )
    assert match_sorted(np.array([1, 2], np.uint64), np.array([], np.uint64)).tolist() == [-1, -1]
    assert match_sorted(np.array([], np.uint64), ts).tolist() == []


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_table_roundtrip(tmp_path: Path, suffix: str) -> None:
    t = MatchTable(
        timestamps=np.array([3, 4], np.uint64),
        run=np.array([1, 1]),
        sources=["a", "b"],
        paths=["/x/a.h5", "/x/b.h5"],
        lengths=[2, 9],
        rows=np.array([[0, 1], [4, -1]]),
    )
    p = tmp_path / f"idx{suffix}"
    t.save(p)
    u = MatchTable.load(p)
    assert u.sources == ["a", "b"] and u.paths == t.paths and u.lengths == [2, 9]
    np.testing.assert_array_equal(u.rows, t.rows)
    np.testing.assert_array_equal(u.timestamps, t.timestamps)
    u.check_inputs(["/y/b.h5", "/y/a.h5"], [9, 2], p)
    with pytest.raises(BadInput, match="expects 9 rows in source 'b'"):
        u.check_inputs(["/y/a.h5", "/y/b.h5"], [2, 8], p)


def test_pickled_npz_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.npz"
    np.savez(p, rows=np.array([{"x": 1}], dtype=object))
    with pytest.raises(BadInput, match="cannot read index"):
        MatchTable.load(p)
    with pytest.raises(BadInput, match=".npz or .h5"):
        MatchTable.load(tmp_path / "idx.pkl")
