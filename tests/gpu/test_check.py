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
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.gpu.check",
            "--bundle",
            tmp_path / "none",
            "--out",
            out,
            "--work",
            tmp_path / "work",
            "--libcuda",
            tmp_path / "libcuda.so.1",
        ],
        cwd=check.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"gpu-check: no CUDA GPU: {tmp_path / 'libcuda.so.1'} does not load (no NVIDIA driver "
        f"here); report in {out}"
    ]
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
    assert got == [
        ("a", "failed", "ZeroDivisionError: division by zero"),
        ("b", "timeout", "still running after 42 s"),
        ("c", "ok", ""),
        ("d", "skipped", "PyCUDA is not built"),
    ]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [s["status"] for s in saved["steps"]] == ["failed", "timeout", "ok", "skipped"]
    rep.budget_s = 0  # out of time: later steps are skipped, not started
    assert rep.step("e", lambda st: pytest.fail("ran"), 10).status == "skipped"


def test_compare_events_photon_by_photon(tmp_path):
    def event(name, seed):
        propagate(
            Request(
                check.SCENE,
                tmp_path / name,
                photons=3000,
                seed=seed,
                workers=1,
                mode="development",
                hitmask=check.HITMASK,
            )
        )
        return tmp_path / name

    a, b, c = event("a", 7), event("b", 7), event("c", 8)
    same = check.compare_events(a, b)
    assert same["agree"] and same["seqhis_agreement"] == 1.0 and same["hits_only_a"] == 0
    assert 0 < same["hits_a"] == same["hits_b"] < 3000  # BR: some photons, not all
    other = check.compare_events(a, c)
    assert not other["agree"] and other["hits_only_a"] > 0
    rep = check.Report(tmp_path / "r")
    rep.steps.append(check.Step("parity-cupy", "ok", 1.0, "", same))
    assert "| cupy | torch | 3,000 | 100.0000 % |" in check.render_markdown(rep.to_dict())


def test_the_check_runs_every_step_and_reports_what_failed(tmp_path, monkeypatch, capsys):
    """main() end to end with the GPU faked away: the driver probe answers, the PyCUDA build
    fails, and the numpy backend stands in for a GPU one, so every step after the probe runs
    and the report says which failed and which were skipped, and why."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "MANIFEST.json").write_text(json.dumps({"files": {}}))
    monkeypatch.setattr(check, "detect_gpu", lambda lib: {"name": "stand-in", "cc": "9.0"})

    def failing_build(bundle, manifest, work, libdir):
        log = work / "pycuda-build.log"
        log.write_text("error: no CUDA headers\n")
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]), work, log

    monkeypatch.setattr(check, "start_pycuda_build", failing_build)
    out = tmp_path / "out"
    rc = check.main(
        [
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--work",
            str(tmp_path / "w"),
            "--backends",
            "numpy,cuda",
            "--sizes",
            "2e3,4e3",
            "--parity-photons",
            "2e3",
            "--dev-photons",
            "1e3",
            "--step-photons",
            "3e3",
            "--step-sizes",
            "5e3",
            "--gdml-photons",
            "3e3",
            "--gdml-sizes",
            "6e3",
            "--budget",
            "300",
        ]
    )
    assert rc == 1
    steps = {s["name"]: s for s in json.loads((out / "report.json").read_text())["steps"]}
    assert steps["gpu"]["status"] == "ok" and steps["versions"]["status"] == "ok"
    assert steps["tests-numpy"]["status"] == "failed"  # no gpu test is a numpy one
    assert steps["parity-numpy"]["status"] == "ok" and steps["parity-numpy"]["data"]["agree"]
    for kind in ("cerenkov", "scintillation"):  # the genstep kinds' events agree too
        c = steps["parity-numpy"]["data"][kind]
        assert c["agree"] and c["photons"] == 3000 and c["hits_a"] == c["hits_b"] > 0
    g = steps["parity-numpy"]["data"]["gdml"]  # the JUNO-like GDML detector too
    assert g["agree"] and g["photons"] == 3000 and g["hits_a"] == g["hits_b"] > 0
    rows = steps["rate-numpy"]["data"]["rows"]
    assert [(r["kind"], r["mode"], r["photons"]) for r in rows] == [
        ("torch", "development", 1000),
        ("torch", "production", 2000),
        ("cerenkov", "production", 5000),
        ("scintillation", "production", 5000),
        ("gdml", "production", 6000),
        ("torch", "production", 4000),
    ]
    assert all(r["process_pps"] > 0 and r["ht_bytes"] > 128 for r in rows)
    assert steps["pycuda-build"]["status"] == "failed"
    assert "exited 3" in steps["pycuda-build"]["detail"]
    assert steps["pycuda-build"]["data"]["log_tail"] == ["error: no CUDA headers"]
    assert all(
        steps[s]["detail"] == "PyCUDA is not built"
        for s in ("tests-cuda", "parity-cuda", "rate-cuda")
    )
    md = (out / "report.md").read_text()
    assert "| numpy | torch | development | 1.00e+03 |" in md and "| numpy | cerenkov |" in md
    assert (out / "pycuda-build.log").is_file()
    assert md in capsys.readouterr().out
