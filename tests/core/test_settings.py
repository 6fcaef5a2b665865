"""Typed settings (engine.core.settings) and `skydeck-engine config`: the dataclass defaults
are the packaged skydeck.toml's values, overrides are checked as the file is, and the
command prints every key of the effective settings, human and JSON."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.errors import BadInput
from engine.core.settings import Settings, parse_settings, set_keys
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
    cfg.write_text(
        cfg.read_text()
        .replace('events          = "events"', 'events = "/elsewhere/ev"')
        .replace("max_jobs = 2 ", "max_jobs = 7 ")
    )
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
    assert res.stderr.strip() == (
        f"skydeck-engine: {cfg}: watch.quiet_s must be a number, got 'soon'"
    )


def test_with_overrides_rewrites_only_those_keys_and_keeps_the_comments(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    cfg = ws.root / "skydeck.toml"
    cfg.chmod(0o600)
    before = cfg.read_text().splitlines()
    ws2 = ws.with_overrides("pipeline", launcher="slurm", max_jobs=7)
    assert ws2.settings == Settings().replace("pipeline", launcher="slurm", max_jobs=7)
    after = cfg.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("#")[0].split() for _, b in changed] == [
        ["max_jobs", "=", "7"],
        ["launcher", "=", '"slurm"'],
    ]
    # the inline comment that documents the key stays
    assert all(a.partition("#")[2] == b.partition("#")[2] for a, b in changed)
    assert cfg.stat().st_mode & 0o777 == 0o600  # a private config stays private
    with pytest.raises(BadInput, match="unknown key pipeline.nope"):
        ws.with_overrides("pipeline", nope=1)
    with pytest.raises(BadInput, match="max_jobs"):
        ws.with_overrides("pipeline", max_jobs=0)
    assert Workspace.open(ws.root).settings == ws2.settings  # refused overrides wrote nothing


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(partition=_TEXT, account=_TEXT, time_limit=_TEXT)
def test_any_text_value_round_trips_through_the_file(
    partition: str, account: str, time_limit: str
) -> None:
    """A value set by set_keys is read back by the TOML parser as the same value, whatever
    its characters (quotes, #, newlines, backslashes), and the rest of the file is intact."""
    text = DEFAULT_CONFIG.read_text()
    out = set_keys(
        text, "slurm", {"partition": partition, "account": account, "time_limit": time_limit}
    )
    doc = tomllib.loads(out)
    assert doc["slurm"]["partition"] == partition and doc["slurm"]["account"] == account
    assert doc["slurm"]["time_limit"] == time_limit
    packaged = tomllib.loads(text)
    assert {k: v for k, v in doc.items() if k != "slurm"} == {
        k: v for k, v in packaged.items() if k != "slurm"
    }


def test_set_keys_adds_a_missing_key_and_a_missing_section() -> None:
    doc = tomllib.loads(set_keys("[watch]\nquiet_s = 1.0\n", "watch", {"polling": True}))
    assert doc == {"watch": {"quiet_s": 1.0, "polling": True}}
    doc = tomllib.loads(set_keys("[watch]\nquiet_s = 1.0", "disk", {"reserve_bytes": 5}))
    assert doc == {"watch": {"quiet_s": 1.0}, "disk": {"reserve_bytes": 5}}


def test_the_batch_bound_is_the_builders() -> None:
    """core cannot import the builder, so [build] batch's bound is written twice: the same."""
    from engine.builder.limits import MAX_BATCH
    from engine.core import settings as core_settings

    assert core_settings.MAX_BATCH == MAX_BATCH
