"""No area of retention follows a symbolic link.

The defect: ``downlinks/<DLID>`` made a link to another tree, and ``prune`` deleted the
chunk-shaped files it found there, outside the workspace. The class: any path a prune
stats, reads or unlinks resolved by the kernel at use, through a link anywhere on it:
an area's root, a downlink's or a rejection's directory, a subdirectory (``logs/console``),
or a directory swapped for a link between the plan and its apply. Each test builds the
case on a workspace after real runs and checks that the files outside survive, byte for
byte, with `skydeck-engine prune` as the operator runs it where the plan is not split.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import api
from engine.core.nofollow import Tree, on_link, parts_under
from engine.pipeline.retention import apply, plan

from .conftest import FAST, cli_proc, make_delivery, set_config

DLID = "261202013"
ALL = (
    "[retention]\nlogs_days = 0.00001\nevents_days = 0.00001\nfcopy_days = 0.00001\n"
    "orphan_chunks_days = 0.00001\nrejected_days = 0.00001\n"
)


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (links not followed) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _run_leaving_chunks(ws):
    """A finished downlink whose chunk outputs stayed (haltCleanup), delivered as fcopy:
    every area has something old enough once ``ALL`` is set."""
    api.set_halt(ws, "haltCleanup", DLID)
    make_delivery(ws, DLID, as_="fcopy", **(FAST | {"chunks": 2}))
    r = cli_proc(ws, "run", DLID)
    assert r.returncode == 0, r.stderr
    api.clear_halt(ws, "haltCleanup", DLID)
    ws = set_config(ws, ALL)
    time.sleep(1.0)
    return ws


def _away(p: Path, outside: Path) -> Path:
    """Move ``p`` outside the workspace and leave a symbolic link to it in its place."""
    outside.mkdir(parents=True, exist_ok=True)
    dst = outside / p.name
    os.rename(p, dst)
    os.symlink(dst, p)
    return dst


def _prune(ws) -> dict:
    r = cli_proc(ws, "prune", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("where", ["downlink", "logs-downlink", "logs-console"])
def test_a_linked_directory_inside_an_area_is_never_followed(ws, tmp_path, where):
    """`downlinks/<DLID>` (the issue's case), `logs/<DLID>` and `logs/console` made links
    to a copy of what they held, outside: every file there survives the prune; what lies
    in real directories still goes."""
    ws = _run_leaving_chunks(ws)
    console = ws.logs / "console"
    console.mkdir(parents=True, exist_ok=True)
    old = time.time() - 400 * 86400
    for name in ("build-20250101T000000.log", f"run-{DLID}-20250101T000000.log"):
        (console / name).write_text("an old console job log\n")
        os.utime(console / name, (old, old))
    target = {
        "downlink": ws.downlinks / DLID,
        "logs-downlink": ws.logs / DLID,
        "logs-console": console,
    }[where]
    assert _snapshot(target)
    moved = _away(target, tmp_path / "outside")
    before = _snapshot(moved)
    doc = _prune(ws)
    assert _snapshot(moved) == before
    assert all(
        not c["path"] or not c["path"].startswith(str(target) + "/") for c in doc["candidates"]
    )
    assert {c["area"] for c in doc["candidates"]} >= {"fcopy", "events"}
    assert (
        any(str(target) in n and "link" in n for n in doc["notes"]) or where == "logs-downlink"
    ), doc["notes"]  # logs/<DLID> was never listed: not a dir


@pytest.mark.parametrize("area", ["logs", "downlinks", "incoming_fcopy"])
def test_an_area_root_that_is_a_link_is_not_pruned(ws, tmp_path, area):
    """The area's directory itself replaced by a link to elsewhere: nothing of that area
    is removed, a note says why; the other areas are pruned as usual."""
    ws = _run_leaving_chunks(ws)
    root = getattr(ws, area)
    moved = _away(root, tmp_path / "outside")
    before = _snapshot(moved)
    doc = _prune(ws)
    assert _snapshot(moved) == before
    name = {"logs": "logs", "downlinks": "orphan_chunks", "incoming_fcopy": "fcopy"}[area]
    assert not [c for c in doc["candidates"] if c["area"] == name]
    assert f"kept the {name} area: {root} is a symbolic link" in " ".join(doc["notes"])
    assert [c for c in doc["candidates"] if c["area"] != name]


@pytest.mark.parametrize("what", ["downlink", "logs-downlink", "rejected-subdir"])
def test_a_directory_swapped_for_a_link_between_plan_and_apply(ws, tmp_path, what):
    """TOCTOU: the plan saw real directories; before the apply, one is moved outside the
    workspace (its files keep their inodes and times: they still look planned) and a link
    to it takes its place. The apply reaches each file from its area's root without
    following links, so it finds the link and removes nothing through it."""
    ws = _run_leaving_chunks(ws)
    d = make_delivery(ws, "261202014", **FAST)
    sub = d / "sub"
    sub.mkdir()
    (sub / "x.h5").write_bytes(b"kept\n")
    os.rename(d, d.with_name("bad-name"))  # rejected: its name is no downlink id
    assert _process_rejects(ws)
    time.sleep(1.0)
    p = plan(ws)
    target = {
        "downlink": ws.downlinks / DLID,
        "logs-downlink": ws.logs / DLID,
        "rejected-subdir": ws.rejected / "bad-name" / "sub",
    }[what]
    planned = [c for c in p.candidates if c.path and c.path.startswith(str(target) + "/")]
    assert planned
    moved = _away(target, tmp_path / "outside")
    before = _snapshot(moved)
    res = apply(ws, p)
    assert _snapshot(moved) == before
    why = {c.path: w for c, w in res.kept}
    assert all("link" in why[c.path] for c in planned), why
    assert not res.failed and res.removed


def _process_rejects(ws) -> bool:
    return any(o.status == "rejected" for o in api.scan_incoming(ws))


def test_a_link_inside_a_rejected_delivery_is_removed_as_a_link(ws, tmp_path):
    """A rejected level-0 directory holding a link to a directory outside: the prune
    removes the link itself (unlink), never what it points at."""
    d = make_delivery(ws, "261202014", **FAST)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.h5").write_bytes(b"precious\n")
    os.symlink(outside, d / "linked")
    (outside / "file.h5").write_bytes(b"also precious\n")
    os.symlink(outside / "file.h5", d / "linked-file")
    assert _process_rejects(ws)  # a link inside: rejected, kept
    ws = set_config(ws, ALL)
    time.sleep(1.0)
    before = _snapshot(outside)
    doc = _prune(ws)
    assert _snapshot(outside) == before
    removed = {c["path"] for c in doc["candidates"] if c["area"] == "rejected"}
    assert {
        str(ws.rejected / d.name / "linked"),
        str(ws.rejected / d.name / "linked-file"),
    } <= removed
    assert not (ws.rejected / d.name).exists()


def test_a_hard_link_kept_elsewhere_keeps_its_data(ws, tmp_path):
    """An operator keeps the accepted package with `ln` in an archive directory: the prune
    unlinks the inbox's name only; the archive's name and its bytes stay."""
    ws = _run_leaving_chunks(ws)
    archive = tmp_path / "archive"
    archive.mkdir()
    tar = ws.incoming_fcopy / f"{DLID}.tar"
    data = tar.read_bytes()
    os.link(tar, archive / tar.name)
    doc = _prune(ws)
    assert str(tar) in {c["path"] for c in doc["candidates"]}
    assert not tar.exists() and (archive / tar.name).read_bytes() == data


def test_the_cleanup_job_follows_no_link_either(ws, tmp_path):
    """The same trick against the stream's own cleanup job, which removes recorded chunk
    outputs: `downlinks/<DLID>` swapped for a link to where its files went; cleanup rolled
    back and run again keeps everything behind the link and says so in its log."""
    api.set_halt(ws, "haltCleanup", DLID)
    make_delivery(ws, DLID, **(FAST | {"chunks": 2}))
    r = cli_proc(ws, "run", DLID)
    assert r.returncode == 0, r.stderr
    api.clear_halt(ws, "haltCleanup", DLID)
    moved = _away(ws.downlinks / DLID, tmp_path / "outside")
    before = _snapshot(moved)
    assert any(n.endswith(".h5") for n in before)
    r = cli_proc(ws, "rollback", DLID, "cleanup")
    assert r.returncode == 0, r.stderr
    r = cli_proc(ws, "run", DLID)
    assert r.returncode == 0, r.stderr
    assert _snapshot(moved) == before
    assert "a symbolic link on its path" in (ws.logs / DLID / "cleanup-e2.log").read_text()


def test_tree_refuses_links_on_the_way(tmp_path):
    """The walk itself: a link as the root, on the way, or swapped in after a directory was
    opened (the open descriptor stays the real directory)."""
    real = tmp_path / "real"
    (real / "a" / "b").mkdir(parents=True)
    (real / "a" / "b" / "f").write_text("x")
    other = tmp_path / "other"
    shutil.copytree(real, other)
    os.symlink(other, tmp_path / "link")
    with Tree(tmp_path / "link") as t, pytest.raises(OSError) as err:
        t.dir()
    assert on_link(err.value)
    os.symlink(other / "a", real / "l")
    with Tree(real) as t:
        with pytest.raises(OSError) as err:
            t.lstat(("l", "b", "f"))
        assert on_link(err.value)
        t.dir(("a", "b"))  # held open, then swapped for a link
        os.rename(real / "a", tmp_path / "a-moved")
        os.symlink(other / "a", real / "a")
        t.unlink(("a", "b", "f"))  # the held directory: the moved one
        assert not (tmp_path / "a-moved" / "b" / "f").exists()
        assert (other / "a" / "b" / "f").read_text() == "x"


@given(st.text(max_size=30), st.text(max_size=30))
def test_parts_under_is_total_and_exact(root, path):
    """Any two strings: the components of ``path`` strictly below ``root`` (rejoined, the
    normalised path again), or None; never an exception, never a ``..`` or empty part."""
    if "\0" in root or "\0" in path:
        return
    parts = parts_under("/r" + root, "/r" + path)
    if parts is None:
        return
    assert parts and all(p not in ("", ".", "..") for p in parts)
    assert os.path.join(os.path.normpath("/r" + root), *parts) == os.path.normpath("/r" + path)
