"""The GPU check's parts that run without a GPU: it stops in one line when there is none
(after verifying and installing the bundle, the rehearsal of a device run), a failed or
timed-out step is recorded and the next one runs, and the photon-by-photon comparison
tells agreeing events from disagreeing ones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.propagate.event import Request, propagate
from tests.gpu import check


def test_without_a_gpu_the_check_stops_in_one_line(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "tests.gpu.check", "--bundle", tmp_path / "none",
                        "--out", out, "--work", tmp_path / "work",
                        "--libcuda", tmp_path / "libcuda.so.1"],
                       cwd=check.ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"gpu-check: no CUDA GPU: {tmp_path / 'libcuda.so.1'} does not load (no NVIDIA driver "
        f"here); report in {out}"]
    rep = json.loads((out / "report.json").read_text())
    steps = {s["name"]: s for s in rep["steps"]}
    assert steps["bundle"]["status"] == "failed" and "make gpu-bundle" in steps["bundle"]["detail"]
    assert steps["gpu"]["status"] == "failed" and "does not load" in steps["gpu"]["detail"]
    assert "| gpu | failed |" in (out / "report.md").read_text()


def test_a_bundle_file_that_differs_from_the_manifest_is_refused(tmp_path):
    (tmp_path / "a.whl").write_bytes(b"wheel")
    manifest = {"files": {"a.whl": {"bytes": 5, "sha256": "0" * 64}}}
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="a.whl: missing or not the file MANIFEST.json names"):
        check.verify_bundle(tmp_path)


def test_failed_and_timed_out_steps_are_recorded_and_the_next_runs(tmp_path):
    rep = check.Report(tmp_path, budget_s=100)

    def timeout(st):
        raise subprocess.TimeoutExpired(["propagate"], 42)

    rep.step("a", lambda st: 1 / 0, 10)
    rep.step("b", timeout, 10)
    rep.step("c", lambda st: st.data.update(x=1), 10)
    rep.step("d", lambda st: None, 10, skip="PyCUDA is not built")
    got = [(s.name, s.status, s.detail) for s in rep.steps]
    assert got == [("a", "failed", "ZeroDivisionError: division by zero"),
                   ("b", "timeout", "still running after 42 s"), ("c", "ok", ""),
                   ("d", "skipped", "PyCUDA is not built")]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [s["status"] for s in saved["steps"]] == ["failed", "timeout", "ok", "skipped"]
    rep.budget_s = 0  # out of time: later steps are skipped, not started
    assert rep.step("e", lambda st: pytest.fail("ran"), 10).status == "skipped"


def test_compare_events_photon_by_photon(tmp_path):
    def event(name, seed):
        propagate(Request(check.SCENE, tmp_path / name, photons=3000, seed=seed, workers=1,
                          mode="development", hitmask=check.HITMASK))
        return tmp_path / name

    a, b, c = event("a", 7), event("b", 7), event("c", 8)
    same = check.compare_events(a, b)
    assert same["agree"] and same["seqhis_agreement"] == 1.0 and same["hits_only_a"] == 0
    assert 0 < same["hits_a"] == same["hits_b"] < 3000  # BR: some photons, not all
    other = check.compare_events(a, c)
    assert not other["agree"] and other["hits_only_a"] > 0
    rep = check.Report(tmp_path / "r")
    rep.steps.append(check.Step("parity-cupy", "ok", 1.0, "", same))
    assert "| cupy | 3,000 | 100.0000 % |" in check.render_markdown(rep.to_dict())
