"""Shared helpers: scene files written from dicts, the CLI run in-process or as a subprocess,
the kernel source compiled for the host (one g++ build per test session)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.core.workspace import ASSETS
from engine.propagate.kernel import KERNEL_PATH

HOST = Path(__file__).parent / "host"

TBOX = ASSETS / "scenes" / "tboolean-box.toml"
TBOX_DETECT = ASSETS / "scenes" / "tboolean-box-detect.toml"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(e) for e in v) + "]"
    if isinstance(v, float) and v == float("inf"):
        return "inf"
    return repr(v)


def to_toml(doc: dict[str, Any]) -> str:
    """Tiny TOML writer for test scenes (tables, arrays of tables, scalars, lists)."""
    lines: list[str] = []
    for k, v in doc.items():
        if not isinstance(v, dict | list) or (
            isinstance(v, list) and v and not isinstance(v[0], dict)
        ):
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in doc.items():
        if isinstance(v, dict):
            if all(isinstance(e, dict) for e in v.values()) and v:
                for name, sub in v.items():
                    lines.append(f"[{k}.{name}]")
                    lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in sub.items()]
            else:
                lines.append(f"[{k}]")
                lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for e in v:
                lines.append(f"[[{k}]]")
                lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in e.items()]
    return "\n".join(lines) + "\n"


def base_scene(**over: Any) -> dict[str, Any]:
    """A small valid scene: vacuum container with a detecting wall, a disc source."""
    doc: dict[str, Any] = {
        "name": "test",
        "settings": {"max_bounce": 9, "hitmask": "SD"},
        "materials": {
            "Vacuum": {"refractive_index": 1.0},
            "Glass": {"refractive_index": 1.5},
        },
        "surfaces": {"det": {"detect": 1.0}},
        "container": {"half_size": [100.0, 100.0, 100.0], "material": "Vacuum", "surface": "det"},
        "objects": [],
        "source": {
            "type": "disc",
            "position": [0.0, 0.0, -99.0],
            "direction": [0.0, 0.0, 1.0],
            "radius": 1.0,
            "wavelength": 400.0,
            "photons": 1000,
        },
    }
    doc.update(over)
    if not doc["objects"]:
        del doc["objects"]
    return doc


@pytest.fixture
def write_scene(tmp_path: Path):
    def write(doc: dict[str, Any], name: str = "scene.toml") -> Path:
        p = tmp_path / name
        p.write_text(to_toml(doc))
        return p

    return write


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run skydeck-engine as a real subprocess (exit codes and stderr as users see them)."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def kernel_lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """The CUDA kernel source built for the host with g++ and a tiny emulation header
    (tests/propagate/host): ``run_host`` runs it thread by thread over one slice."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not on PATH")
    so = tmp_path_factory.mktemp("kernel") / "libpropagate_host.so"
    r = subprocess.run(
        [
            "g++",
            "-O2",
            "-ffp-contract=off",
            "-fPIC",
            "-shared",
            f"-I{HOST}",
            f'-DKERNEL="{KERNEL_PATH}"',
            str(HOST / "run_host.cpp"),
            "-o",
            str(so),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    return ctypes.CDLL(str(so))
