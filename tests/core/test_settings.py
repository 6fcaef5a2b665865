"""Typed settings (engine.core.settings) and `skydeck-engine config`: the dataclass defaults
are the packaged skydeck.toml's values, overrides are checked as the file is, and the
command prints every key of the effective settings, human and JSON."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from engine.core.errors import BadInput
from engine.core.settings import Settings, parse_settings
from engine.core.workspace import DEFAULT_CONFIG, Workspace, init_workspace, load_toml
from tests.conftest import run_engine


def test_the_dataclass_defaults_are_the_packaged_files_values() -> None:
    """Two places hold the defaults (the file documents them, the dataclasses type them):
    they must say the same, key for key, so neither can drift."""
    packaged = load_toml(DEFAULT_CONFIG)
    assert Settings().as_dict() == packaged
    assert parse_settings(packaged, DEFAULT_CONFIG) == Settings()


def test_values_are_typed_and_partial_files_get_defaults() -> None:
    s = parse_settings({"watch": {"quiet_s": 5, "polling": "No"}, "build": {"ranks": 3}})
    assert s.watch.quiet_s == 5.0 and isinstance(s.watch.quiet_s, float)
    assert s.watch.polling is False and s.build.ranks == 3
    assert s.watch.poll_interval_s == Settings().watch.poll_interval_s
    assert parse_settings({"watch": {"polling": "AUTO"}}).watch.polling == "auto"


def test_replace_checks_an_override_as_the_file_would() -> None:
    s = Settings().replace("watch", poll_interval_s=0.5)
    assert s.watch.poll_interval_s == 0.5 and Settings().watch.poll_interval_s == 10.0
    with pytest.raises(BadInput, match=r"watch.poll_interval_s = 0 is outside 0.01..86400"):
        Settings().replace("watch", poll_interval_s=0)
    with pytest.raises(BadInput, match="unknown key watch.nope"):
        Settings().replace("watch", nope=1)


def test_a_workspace_without_a_file_has_the_defaults(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, must_exist=False)
    assert ws.settings == Settings() and ws.path("flags") == tmp_path / "config"


def test_config_prints_every_key_with_resolved_paths(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    cfg = root / "skydeck.toml"
    cfg.write_text(cfg.read_text().replace('events          = "events"', 'events = "/elsewhere/ev"')
                   .replace("max_jobs = 2 ", "max_jobs = 7 "))
    res = run_engine("-w", root, "config", check=True)
    doc = tomllib.loads(res.stdout)  # the human form is TOML
    expected = Settings().as_dict()
    assert set(doc) == set(expected)
    for section, table in expected.items():
        assert set(doc[section]) == set(table), section
    assert doc["pipeline"]["max_jobs"] == 7 and doc["watch"]["verify_threads"] == 2
    assert doc["paths"]["events"] == "/elsewhere/ev"
    assert doc["paths"]["state_db"] == str(root / "state.db")
    assert res.stdout.splitlines()[2] == "[paths]"

    js = json.loads(run_engine("-w", root, "config", "--json", check=True).stdout)
    assert js == doc


def test_config_with_a_typo_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    cfg = root / "skydeck.toml"
    cfg.write_text(cfg.read_text().replace("quiet_s = 2.0", 'quiet_s = "soon"'))
    res = run_engine("-w", root, "config")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == (f"skydeck-engine: {cfg}: watch.quiet_s must be a number, "
                                  "got 'soon'")
