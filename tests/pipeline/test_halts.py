"""Halt flags live in one module (engine.pipeline.halts): what it sets is what the runner,
the daemon's pick-up and the cleanup job see, globally and per downlink."""

from __future__ import annotations

import pytest

from engine.core.errors import BadInput
from engine.pipeline import halts
from engine.pipeline.jobs import cleanup


def test_set_read_clear_global_and_per_downlink(ws):
    dl = "251125001"
    assert halts.halts(ws, dl) == {} and halts.halt_flag(ws, dl, "haltStage") is None
    g = halts.set_halt(ws, "haltStage")
    assert g == ws.path("flags") / "haltStage" and g.is_file()
    assert halts.halt_flag(ws, dl, "haltStage") == g and halts.is_set_globally(ws, "haltStage")
    d = halts.set_halt(ws, "haltStage", dl)
    assert d == ws.downlinks / dl / "haltStage" and d.is_file()
    assert halts.halts(ws, dl) == {"haltStage": [halts.GLOBAL, dl]}
    assert halts.halts(ws, "not-a-dlid") == {"haltStage": [halts.GLOBAL]}
    assert halts.clear_halt(ws, "haltStage") and not halts.clear_halt(ws, "haltStage")
    assert halts.halt_flag(ws, dl, "haltStage") == d  # the downlink's still holds
    assert halts.halt_flag(ws, "251125002", "haltStage") is None  # and only that downlink
    assert halts.clear_halt(ws, "haltStage", dl) and halts.halts(ws, dl) == {}


def test_unknown_flags_and_bad_downlinks_are_bad_input(ws):
    with pytest.raises(BadInput, match="unknown halt flag 'haltAll' .flags: haltStage, "):
        halts.set_halt(ws, "haltAll")
    with pytest.raises(BadInput):
        halts.set_halt(ws, "haltStage", "../etc")
    with pytest.raises(BadInput):
        halts.clear_halt(ws, "halted", "25112500")
    assert not list(ws.path("flags").iterdir())


def test_cleanup_honours_the_flag_set_here(ws, capsys):
    halts.set_halt(ws, "haltCleanup", "251125001")
    assert cleanup(ws, "251125001") == []
    assert "cleanup of 251125001 skipped" in capsys.readouterr().out
