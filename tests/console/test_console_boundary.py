"""The console's one face of the engine is ``engine.api``.

Why: the console must show what the CLI shows and act like the CLI acts through one API, so
the engine's inside (state database, lock files, task runner) can change without the console
changing. This walks every module of console/ and fails on any import of an ``engine.``
module outside ``engine.api`` (also under TYPE_CHECKING and inside functions).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[2] / "console"


def engine_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every engine import in a file, relative imports resolved away."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from engine import api` imports engine.api; `from engine import x` engine.x
            if node.module == "engine":
                out += [(node.lineno, f"engine.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return [(line, m) for line, m in out if m == "engine" or m.startswith("engine.")]


def outside_api(module: str) -> bool:
    return not (module == "engine.api" or module.startswith("engine.api."))


def test_console_imports_only_engine_api() -> None:
    files = sorted(CONSOLE.rglob("*.py"))
    assert CONSOLE / "app.py" in files and CONSOLE / "screens" / "main.py" in files
    bad = [
        f"{f.relative_to(CONSOLE.parent)}:{line}: {m}"
        for f in files
        for line, m in engine_imports(f)
        if outside_api(m)
    ]
    assert bad == [], "console imports the engine outside engine.api:\n" + "\n".join(bad)


def test_the_check_sees_every_form(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "import engine.store.state\nfrom engine.core import errors\n"
        "from engine import api, ops\nfrom engine.api import Monitor\n"
        "def g():\n    from engine.pipeline.locks import read\n"
        "if 0:\n    import engine\n"
    )
    found = [m for _, m in engine_imports(f) if outside_api(m)]
    assert found == [
        "engine.store.state",
        "engine.core",
        "engine.ops",
        "engine.pipeline.locks",
        "engine",
    ]


def test_console_start_imports_no_numpy() -> None:
    """The first paint stays light: importing the console (and engine.api's names that the
    widgets use) imports neither NumPy nor h5py; the hit summaries import them on first use."""
    code = (
        "import sys\nimport console.app, console.screens.main\n"
        "from engine.api import DownlinkRow, LockInfo, UsageReport, StreamView, Monitor\n"
        "print(sorted(m for m in ('numpy', 'h5py', 'mpi4py') if m in sys.modules))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CONSOLE.parent,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
