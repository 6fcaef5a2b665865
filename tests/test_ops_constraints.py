"""Ranges for users, pins for the tests (constraints.txt).

pyproject.toml's dependencies are ranges (a user's `pip install skydeck` resolves within
them); constraints.txt pins the exact versions `make venv` installs, those the console's
snapshot was recorded with and the linters of `make test` run at. These tests keep the two
consistent: every pin lies in the ranges that name it, no range is a disguised pin, the
Makefile installs with the constraints, and this venv has what the constraints say.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _constraints() -> list[Requirement]:
    reqs = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    return reqs


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _ranges() -> dict[str, list[Requirement]]:
    project = _project()
    out: dict[str, list[Requirement]] = {}
    for text in [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]:
        req = Requirement(text)
        out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


def test_every_constraint_is_an_exact_pin_inside_the_projects_ranges() -> None:
    ranges = _ranges()
    pins = _constraints()
    assert {canonicalize_name(p.name) for p in pins} >= {"textual", "ruff", "mypy"}
    for pin in pins:
        (spec,) = pin.specifier
        assert spec.operator == "==", f"constraints.txt: {pin} is not an exact pin"
        version = spec.version
        # a pin of a dependency of a dependency (rich, syrupy) has no range of ours
        for req in ranges.get(canonicalize_name(pin.name), []):
            assert req.specifier.contains(version, prereleases=True), (
                f"constraints.txt pins {pin.name} {version} outside pyproject's {req}"
            )


def test_runtime_dependencies_are_ranges_not_pins() -> None:
    for text in _project()["dependencies"]:
        req = Requirement(text)
        ops = {s.operator for s in req.specifier}
        assert ops and not ops & {"==", "===", "~="}, f"pyproject dependency {text} is a pin"


def test_make_venv_installs_with_the_constraints() -> None:
    makefile = (REPO / "Makefile").read_text()
    install = [ln for ln in makefile.splitlines() if "pip install" in ln and "-e " in ln]
    assert install and all("-c constraints.txt" in ln for ln in install), install
    stamp_rule = next(ln for ln in makefile.splitlines() if ln.startswith("$(STAMP):"))
    assert "constraints.txt" in stamp_rule  # a moved pin reinstalls


def test_this_venv_has_the_pinned_versions() -> None:
    """What `make venv` installed; a venv made without the constraints fails here, with the
    fix, before the snapshot test fails with a rendering difference."""
    wrong = []
    for pin in _constraints():
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        try:
            have = metadata.version(pin.name)
        except metadata.PackageNotFoundError:
            continue  # not installed here (an extra this venv lacks): nothing to compare
        (spec,) = pin.specifier
        if have != spec.version:
            wrong.append(f"{pin.name} {have} (constraints.txt: {spec.version})")
    if wrong:
        pytest.fail(
            "installed without constraints.txt: "
            + ", ".join(wrong)
            + "; rerun `make venv` (pip install -c constraints.txt)"
        )
