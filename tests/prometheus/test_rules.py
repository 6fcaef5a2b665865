"""contrib/prometheus/skydeck-rules.yml: valid for promtool, its alerts fire as its unit tests
say, and every metric it names is one the exporter really exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.core.workspace import init_workspace
from engine.daemon.exporter import Exporter

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "contrib" / "prometheus" / "skydeck-rules.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool not installed (Debian package prometheus; `make sysdeps` installs it)",
)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    r = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 8 rules found" in r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests() -> None:
    r = subprocess.run(
        [str(PROMTOOL), "test", "rules", "skydeck-rules.test.yml"],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_metric_in_the_rules_is_exported(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    ex = Exporter(ws, beat=True)
    try:
        ex.tick(force=True)
        text = ex.snapshot().decode()
    finally:
        ex.close()
    exported = set(re.findall(r"^# TYPE (\w+) (\w+)", text, re.M))
    names = {n for n, _ in exported} | {n + "_total" for n, t in exported if t == "counter"}
    used = set(re.findall(r"\b(skydeck_\w+)", RULES.read_text()))
    assert used and used <= names, used - names
