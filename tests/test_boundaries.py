"""Import contracts of the layout (issue 10), checked on the source with ``ast``.

- Only ``engine/store`` speaks to a database: it alone imports a driver (and within it only
  the backend modules ``engine/store/sqlite.py`` and ``engine/store/postgres.py``), and no
  string outside it reads like SQL.
- ``engine/core`` lies below everything: it imports no other ``engine`` package, so locks,
  the launcher and the store can all use it without cycles.
- The engine is headless: nothing in ``engine`` imports ``console`` (the console imports
  only ``engine.api``: tests/console/test_console_boundary.py).
- One MPI decision: only ``engine/core/mpi.py`` reads an MPI launcher's environment.
- The code cites the notes in ``docs/``, never a file outside the repository.
Walks ``engine/`` and ``console/``; a relative import is resolved against its package.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = {"sqlite3", "_sqlite3", "apsw", "psycopg", "psycopg2", "asyncpg", "pg8000",
           "sqlalchemy", "MySQLdb", "pymysql"}
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|"
                 r"DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|ALTER\s+TABLE|PRAGMA\s+\w+)\b",
                 re.IGNORECASE | re.DOTALL)


def _sources() -> Iterator[tuple[str, Path]]:
    for top in ("engine", "console"):
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path


def _module(rel: str) -> str:
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(rel: str, tree: ast.AST) -> Iterator[str]:
    """Every module a file imports, absolute (``from . import x`` resolved)."""
    package = _module(rel) if rel.endswith("__init__.py") else _module(rel).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


def _parsed() -> list[tuple[str, ast.AST]]:
    return [(rel, ast.parse(path.read_text(encoding="utf-8"), rel)) for rel, path in _sources()]


def test_the_walk_sees_the_tree() -> None:
    rels = {rel for rel, _ in _parsed()}
    assert {"engine/store/sqlite.py", "engine/core/owner.py", "console/app.py",
            "engine/pipeline/locks.py"} <= rels


def test_only_the_store_backend_imports_a_database_driver() -> None:
    users = {rel for rel, tree in _parsed()
             for mod in _imports(rel, tree) if mod.split(".")[0] in DRIVERS}
    assert users == {"engine/store/sqlite.py", "engine/store/postgres.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (prose may name a PRAGMA; code may not run one)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            out.add(id(node.body[0].value))
    return out


def test_no_sql_text_outside_the_store() -> None:
    found = []
    for rel, tree in _parsed():
        if rel.startswith("engine/store/"):
            continue
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docs and SQL.search(node.value):
                found.append(f"{rel}:{node.lineno}: {node.value[:60]!r}")
    assert found == []


def test_core_imports_no_other_engine_package() -> None:
    bad = [f"{rel}: {mod}" for rel, tree in _parsed() if rel.startswith("engine/core/")
           for mod in _imports(rel, tree)
           if mod.startswith("engine.") and not mod.startswith("engine.core")]
    assert bad == []


def test_process_identity_lives_in_core() -> None:
    """Locks, the launcher and intake ask core, not the database, whether an owner lives;
    nothing takes process identity from the store."""
    identity = ("Owner", "owner_dead", "process_start", "PID_MAX")
    users = set()
    for rel, tree in _parsed():
        mods = set(_imports(rel, tree))
        assert not {f"engine.store.{n}" for n in identity} & mods, rel
        assert not any(m.startswith("engine.store.") and m.endswith(identity) for m in mods), rel
        if {f"engine.core.owner.{n}" for n in identity} & mods:
            users.add(rel)
    assert {"engine/pipeline/locks.py", "engine/pipeline/launchers/local.py",
            "engine/intake/deliveries.py", "engine/store/db.py"} <= users


def test_every_name_engine_api_exports_resolves() -> None:
    """engine.api imports its names lazily (PEP 562): each one must exist where it points, or
    a front end fails only when it first touches the name."""
    code = ("import engine.api as a\n"
            "missing = [n for n in a.__all__ if not hasattr(a, n)]\n"
            "print(missing)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_the_engine_never_imports_the_console() -> None:
    bad = [f"{rel}: {mod}" for rel, tree in _parsed() if rel.startswith("engine/")
           for mod in _imports(rel, tree) if mod == "console" or mod.startswith("console.")]
    assert bad == []


LAUNCHER_VARS = re.compile(r"\b(PMI_\w+|PMIX_\w+|OMPI_COMM_WORLD_\w+|MV2_\w+|MPI_LOCAL\w+|"
                           r"SLURM_(PROCID|NTASKS|LOCALID|STEP_ID|NPROCS)\b)")


def test_only_core_mpi_reads_the_launchers_environment() -> None:
    """Build and propagate once disagreed on whether they ran under mpiexec; one module decides."""
    bad = [f"{rel}: {m.group(0)}" for rel, path in _sources() if rel != "engine/core/mpi.py"
           for m in LAUNCHER_VARS.finditer(path.read_text(encoding="utf-8"))]
    assert bad == []


def test_citations_stay_inside_the_repository() -> None:
    outside = re.compile(r"DESIGN\.md|reference/\w+\.md|\.\./shared/")
    files = [*_sources(), *((p.relative_to(ROOT).as_posix(), p)
                            for p in sorted((ROOT / "assets").rglob("*"))
                            if p.is_file())]
    bad = [f"{rel}: {m.group(0)}" for rel, path in files
           for m in outside.finditer(path.read_text(encoding="utf-8", errors="replace"))]
    assert bad == []
