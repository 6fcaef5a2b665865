"""The engine is headless: importing every engine module never imports Textual."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import engine


def test_engine_never_imports_textual() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine."))
    assert "engine.builder.build" in modules and "engine.cli.main" in modules
    code = (
        "import importlib, sys\n"
        f"mods = {[m for m in modules if m != 'engine.__main__']!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "import engine.cli.main\n"
        "engine.cli.main.build_parser()\n"
        "bad = sorted(k for k in sys.modules if k == 'textual' or k.startswith('textual.'))\n"
        "print(len(mods), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("[]")
