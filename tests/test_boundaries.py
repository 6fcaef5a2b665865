"""Import contracts of the layout, checked on the source with ``ast``.

- Only ``engine/store`` speaks to a database: it alone imports a driver (and within it only
  the backend modules ``engine/store/sqlite.py`` and ``engine/store/postgres.py``), and no
  string outside it reads like SQL.
- ``engine/core`` lies below everything: it imports no other ``engine`` package, so locks,
  the launchers and the store can all use it without cycles.
- The engine is headless: nothing in ``engine`` imports ``console`` (the console imports
  only ``engine.api``: tests/console/test_console_boundary.py).
- One MPI decision: only ``engine/core/mpi.py`` reads an MPI launcher's environment.
- No import circle; launchers only through their registry; ``engine.api.listings`` only
  reads; the daemon below the api, its roles never importing its loop; no engine class
  over 400 lines.
- The code cites the notes in ``docs/``, never a file outside the repository, and no issue
  tracker.
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
DRIVERS = {
    "sqlite3",
    "_sqlite3",
    "apsw",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "pg8000",
    "sqlalchemy",
    "MySQLdb",
    "pymysql",
}
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|"
    r"DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|ALTER\s+TABLE|PRAGMA\s+\w+)\b",
    re.IGNORECASE | re.DOTALL,
)


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
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


def _parsed() -> list[tuple[str, ast.AST]]:
    return [(rel, ast.parse(path.read_text(encoding="utf-8"), rel)) for rel, path in _sources()]


def test_the_walk_sees_the_tree() -> None:
    rels = {rel for rel, _ in _parsed()}
    assert {
        "engine/store/sqlite.py",
        "engine/core/owner.py",
        "console/app.py",
        "engine/pipeline/locks.py",
    } <= rels


def test_only_the_store_backend_imports_a_database_driver() -> None:
    users = {
        rel
        for rel, tree in _parsed()
        for mod in _imports(rel, tree)
        if mod.split(".")[0] in DRIVERS
    }
    assert users == {"engine/store/sqlite.py", "engine/store/postgres.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (prose may name a PRAGMA; code may not run one)."""
    out = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        ):
            out.add(id(node.body[0].value))
    return out


def test_no_sql_text_outside_the_store() -> None:
    found = []
    for rel, tree in _parsed():
        if rel.startswith("engine/store/"):
            continue
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and SQL.search(node.value)
            ):
                found.append(f"{rel}:{node.lineno}: {node.value[:60]!r}")
    assert found == []


def test_core_imports_no_other_engine_package() -> None:
    bad = [
        f"{rel}: {mod}"
        for rel, tree in _parsed()
        if rel.startswith("engine/core/")
        for mod in _imports(rel, tree)
        if mod.startswith("engine.") and not mod.startswith("engine.core")
    ]
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
    assert {
        "engine/pipeline/locks.py",
        "engine/pipeline/launchers/local.py",
        "engine/intake/fcopy.py",
        "engine/store/connection.py",
    } <= users


def test_every_name_engine_api_exports_resolves() -> None:
    """engine.api imports its names lazily (PEP 562): each one must exist where it points, or
    a front end fails only when it first touches the name."""
    code = (
        "import engine.api as a\n"
        "missing = [n for n in a.__all__ if not hasattr(a, n)]\n"
        "print(missing)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_the_engine_never_imports_the_console() -> None:
    bad = [
        f"{rel}: {mod}"
        for rel, tree in _parsed()
        if rel.startswith("engine/")
        for mod in _imports(rel, tree)
        if mod == "console" or mod.startswith("console.")
    ]
    assert bad == []


LAUNCHER_VARS = re.compile(
    r"\b(PMI_\w+|PMIX_\w+|OMPI_COMM_WORLD_\w+|MV2_\w+|MPI_LOCAL\w+|"
    r"SLURM_(PROCID|NTASKS|LOCALID|STEP_ID|NPROCS)\b)"
)


def test_only_core_mpi_reads_the_launchers_environment() -> None:
    """Build and propagate once disagreed on whether they ran under mpiexec; one module decides."""
    bad = [
        f"{rel}: {m.group(0)}"
        for rel, path in _sources()
        if rel != "engine/core/mpi.py"
        for m in LAUNCHER_VARS.finditer(path.read_text(encoding="utf-8"))
    ]
    assert bad == []


# a tracker's numbers ("issue" and a number) point outside the repository; another
# project's tracker, named with it, is a citation (h5py's, Textual's)
TRACKER = re.compile(r"\b[Ii]ssues? #?\d+")
ANOTHER_PROJECT = re.compile(
    r"\b(h5py|k9s|textual|Textual|numpy|NumPy|psycopg|Slurm|Geant4)"
    r" (issue|PR)s? #?\d+"
)


def _cited_files() -> list[tuple[str, Path]]:
    """The code, the assets, the notes, the README, the tests and the benchmarks."""
    tree = [
        p
        for top in ("assets", "docs", "tests", "benchmarks", "contrib")
        for p in sorted((ROOT / top).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and "__snapshots__" not in p.parts
    ]
    return [
        *_sources(),
        *(
            (p.relative_to(ROOT).as_posix(), p)
            for p in [*tree, ROOT / "README.md", ROOT / "Makefile"]
        ),
    ]


def test_no_pointer_to_an_issue_tracker() -> None:
    """The repository holds no tracker: an issue number says nothing to a reader. Say what
    it meant (docs/history.md keeps the milestones)."""
    bad = []
    for rel, path in _cited_files():
        for n, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        ):
            if TRACKER.search(ANOTHER_PROJECT.sub("", line)):
                bad.append(f"{rel}:{n}: {line.strip()[:80]}")
    assert bad == []


def test_citations_stay_inside_the_repository() -> None:
    outside = re.compile(r"DESIGN\.md|reference/\w+\.md|\.\./shared/")
    files = [
        *_sources(),
        *(
            (p.relative_to(ROOT).as_posix(), p)
            for p in sorted((ROOT / "assets").rglob("*"))
            if p.is_file()
        ),
    ]
    bad = [
        f"{rel}: {m.group(0)}"
        for rel, path in files
        for m in outside.finditer(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert bad == []


def _engine_graph() -> dict[str, set[str]]:
    """module -> the engine and console modules it imports: ``from pkg import name`` is an
    arrow to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``)."""
    parsed = _parsed()
    modules = {_module(rel) for rel, _ in parsed}
    graph: dict[str, set[str]] = {}
    for rel, tree in parsed:
        me = _module(rel)
        package = me if rel.endswith("__init__.py") else me.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                subs = {f"{mod}.{a.name}" for a in node.names} & modules
                out |= subs
                if len(subs) < len(node.names):  # some names are the package's own
                    out.add(mod)
        graph[me] = {m for m in out if m in modules and m != me}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on.add(m)
        for n in graph.get(m, ()):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = []
            while True:
                n = stack.pop()
                on.discard(n)
                comp.append(n)
                if n == m:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return out


def test_no_import_circle() -> None:
    """No two engine or console modules import each other, directly or around a loop (a
    lazy import inside a function counts: the loop is still there for a reader)."""
    assert _circles(_engine_graph()) == []


def test_the_circle_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAUNCHERS = "engine.pipeline.launchers"
ONE_LAUNCHER = {p.stem for p in (ROOT / "engine/pipeline/launchers").glob("*.py")} - {
    "__init__",
    "base",
}


def test_launchers_only_through_the_registry() -> None:
    """Outside ``engine/pipeline/launchers/`` a launcher is reached through the registry
    (``engine.pipeline.launchers``: make_launcher, the shared types), never by importing one
    launcher's module, and no code names a batch system: a new launcher is one file there.
    ("local" stays a word of the task file and the default config: the launcher that runs
    on this host.)"""
    bad = []
    for rel, tree in _parsed():
        if rel.startswith("engine/pipeline/launchers/"):
            continue
        bad += [
            f"{rel}: {m}"
            for m in _imports(rel, tree)
            if m.startswith(LAUNCHERS + ".") and m.split(".")[3] in ONE_LAUNCHER
        ]
        docs = _docstrings(tree)
        bad += [
            f"{rel}:{n.lineno}: {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and n.value in ("slurm", "sbatch", ".sbatch")
            and id(n) not in docs
        ]
    assert bad == []


WRITERS = {
    "tx",
    "unlock",
    "acquire",
    "release",
    "take_over",
    "process_all",
    "process",
    "reject",
    "set_halt",
    "clear_halt",
    "create_instance",
    "update_instance",
    "claim_stream",
    "release_stream",
    "unlink",
    "rename",
    "replace",
    "rmdir",
    "write_text",
    "write_bytes",
    "mkdir",
    "apply",
    "prune",
}


def test_listings_only_read() -> None:
    """``engine/api/listings.py`` is what the CLI listings print and the console shows; what
    changes something lives in ``engine/api/actions.py``."""
    tree = ast.parse((ROOT / "engine/api/listings.py").read_text(encoding="utf-8"))
    calls = sorted(
        {
            n.func.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in WRITERS
        }
    )
    names = sorted(
        {
            a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)
            for a in n.names
            if a.name in WRITERS
        }
    )
    assert (calls, names) == ([], [])


def test_the_daemon_is_a_front_end_below_the_api() -> None:
    """The daemon never imports the front ends' face (``engine.api``), the CLI or the
    console: what both need (heartbeats, thresholds, the logs layout) lives below them."""
    bad = [
        f"{rel}: {m}"
        for rel, tree in _parsed()
        if rel.startswith("engine/daemon/")
        for m in _imports(rel, tree)
        if m.split(".")[:2] in (["engine", "api"], ["engine", "cli"])
        or m == "console"
        or m.startswith("console.")
    ]
    assert bad == []


def test_the_daemons_roles_never_import_its_loop() -> None:
    """Intake, streams, the exporter, events and containment take what they need; the loop
    (engine/daemon/loop.py) imports them, never the other way."""
    bad = [
        f"{rel}: {m}"
        for rel, tree in _parsed()
        if rel.startswith("engine/daemon/")
        and rel not in ("engine/daemon/loop.py", "engine/daemon/__init__.py")
        for m in _imports(rel, tree)
        if m == "engine.daemon.loop" or m == "engine.daemon"
    ]
    assert bad == []


MAX_CLASS_LINES = 400


def test_no_engine_class_over_400_lines() -> None:
    """A class that long does several jobs (the daemon once did seven): split it into
    roles or records of their own."""
    big = [
        f"{rel}: {node.name} ({(node.end_lineno or node.lineno) - node.lineno + 1} lines)"
        for rel, tree in _parsed()
        if rel.startswith("engine/")
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert big == []
