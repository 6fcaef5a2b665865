"""Geant4 as the reference: the ``geant4`` extra (geant4-pybind) runs here, each Geant4 run
in its own process (``skydeck-engine geant4 ...``: Geant4's run manager is a singleton).

Where geant4-pybind is missing the tests skip with the reason; under CI (``CI`` set) they
fail instead, since ``make test`` installs the extra and the comparisons must run there.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.geant4.runtime import has_geant4


@pytest.fixture(scope="session", autouse=True)
def geant4_installed() -> None:
    ok, why = has_geant4()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Geant4 comparisons: {why}")
        pytest.skip(why)


def engine(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def engine_json(*args: str | Path, timeout: float = 600) -> dict[str, Any]:
    r = engine(*args, "--json", timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def z_of_chi2(chi2: float, ndf: int) -> float:
    """Wilson-Hilferty: a chi2 of ``ndf`` degrees of freedom as a standard normal z (one
    sided); z < 4 is p > 3e-5."""
    if ndf <= 0:
        return 0.0
    k = float(ndf)
    return ((chi2 / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))


def two_sample_chi2(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> tuple[float, int]:
    """Histogram two-sample chi2 scaled for unequal sizes (the `hits --vs` formula), over
    bins with at least 10 entries; (chi2, ndf)."""
    ha, _ = np.histogram(a, edges)
    hb, _ = np.histogram(b, edges)
    na, nb = ha.sum(), hb.sum()
    k = math.sqrt(nb / na)
    keep = ha + hb >= 10
    chi2 = float(np.sum((ha[keep] * k - hb[keep] / k) ** 2 / (ha[keep] + hb[keep])))
    return chi2, int(keep.sum()) - 1


def agree(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    bins: int = 30,
    lo_hi: tuple[float, float] | None = None,
) -> None:
    """The two samples' distributions agree: histogram chi2 (z < 4) and means (|pull| < 4)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    lo, hi = lo_hi or tuple(np.percentile(np.concatenate([a, b]), [0.2, 99.8]))
    chi2, ndf = two_sample_chi2(a, b, np.linspace(lo, hi, bins + 1))
    z = z_of_chi2(chi2, ndf)
    pull = (a.mean() - b.mean()) / math.sqrt(a.var() / len(a) + b.var() / len(b))
    print(
        f"AGREE {name}: Geant4 {len(a):,} mean {a.mean():.5g}, skydeck {len(b):,} mean "
        f"{b.mean():.5g}, pull {pull:+.2f}; chi2/ndf {chi2:.1f}/{ndf} (z {z:+.2f})"
    )
    assert abs(pull) < 4, f"{name}: means differ by {pull:+.2f} sigma"
    assert z < 4, f"{name}: chi2/ndf {chi2:.1f}/{ndf} (z {z:.2f})"


def counts_agree(name: str, a: int, b: int, sigma: float) -> None:
    pull = (a - b) / sigma
    print(f"AGREE {name}: Geant4 {a:,} skydeck {b:,} pull {pull:+.2f}")
    assert abs(pull) < 4, f"{name}: {a} vs {b} is {pull:+.2f} sigma"
