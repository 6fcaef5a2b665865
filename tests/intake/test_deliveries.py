"""Deliveries: completeness, verification, safe extraction, rejection with a reason file."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from engine.intake import deliveries, manifest
from engine.store import StateDB
from tests.pipeline.conftest import make_delivery


def _old(*paths: Path) -> None:
    t = time.time() - 100
    for p in paths:
        os.utime(p, (t, t))


def _process(ws, quiet_s=0.0, timeout=3600.0):
    with StateDB(ws.state) as db:
        return deliveries.process_all(ws, db, quiet_s=quiet_s, incomplete_timeout_s=timeout)


def _fcopy_from_tar(ws, stem: str, tar_bytes: bytes) -> Path:
    tar = ws.incoming_fcopy / f"{stem}.tar"
    tar.write_bytes(tar_bytes)
    manifest.write(ws.incoming_fcopy, [tar.name], ws.incoming_fcopy / f"{stem}.md5")
    return tar


def _assert_rejected(ws, outcomes, name_part: str, why: str) -> dict:
    rej = [o for o in outcomes if o.status == "rejected"]
    assert len(rej) == 1, outcomes
    assert why in rej[0].reason, rej[0].reason
    reason_files = list(ws.rejected.glob("*.reason"))
    assert len(reason_files) == 1
    data = json.loads(reason_files[0].read_text())
    assert why in data["reason"] and name_part in data["delivery"]
    moved = [Path(m) for m in data["moved"]]
    assert moved and all(m.exists() and m.parent == ws.rejected for m in moved)
    with StateDB(ws.state) as db:
        # the listing's line: the problem, then the file it concerns
        want = f"{rej[0].reason} ({rej[0].file})" if rej[0].file else rej[0].reason
        assert db.deliveries("REJECTED")[0].reason == want
        assert not db.downlinks()
    return data


def test_level0_accepted_once(ws):
    make_delivery(ws, "251125001")
    out = _process(ws)
    assert [(o.status, o.dlid) for o in out] == [("accepted", "251125001")]
    with StateDB(ws.state) as db:
        dl = db.downlink("251125001")
        assert dl.chunks == 2 and dl.kind == "level0" and not dl.gensteps
        assert dl.registered >= dl.delivered
    assert _process(ws) == []  # a second pass finds nothing new


def test_fcopy_verified_and_extracted(ws):
    make_delivery(ws, "251125002", as_="fcopy")
    out = _process(ws)
    assert [(o.status, o.dlid) for o in out] == [("accepted", "251125002")]
    dest = ws.incoming_level0 / "251125002"
    assert (dest / "MANIFEST.md5").is_file() and manifest.verify(dest)
    assert not [p for p in ws.incoming_level0.iterdir() if p.name.startswith(".")]
    assert _process(ws) == []  # the extracted level0 dir is the same downlink, not a new one


def test_manifest_first_then_files_is_pending(ws, tmp_path):
    src = tmp_path / "src"
    make_delivery(ws, "251125003", as_="dir", target=src)
    dest = ws.incoming_level0 / "251125003"
    dest.mkdir()
    # rsync sends MANIFEST.md5 first (it sorts first) and writes files under hidden temp names
    (dest / "MANIFEST.md5").write_bytes((src / "MANIFEST.md5").read_bytes())
    (dest / ".cspad.h5.Xy12Ab").write_bytes(b"partial")
    (dest / "cspad.h5.swp").write_bytes(b"swap")
    out = _process(ws)
    assert [o.status for o in out] == ["pending"] and "not present" in out[0].reason
    with StateDB(ws.state) as db:  # shown as pending (the console lists these)
        assert [d.name for d in db.deliveries("PENDING")] == ["level0:251125003"]
    for f in src.iterdir():
        if f.name != "MANIFEST.md5":
            (dest / f.name).write_bytes(f.read_bytes())
    assert [o.status for o in _process(ws)] == ["accepted"]


def test_growing_file_is_pending_until_quiet(ws):
    d = make_delivery(ws, "251125004")
    f = d / "cspad.h5"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])  # still being written: shorter, just modified
    out = _process(ws, quiet_s=5.0)
    assert [o.status for o in out] == ["pending"] and "still changing" in out[0].reason
    f.write_bytes(data)
    assert [o.status for o in _process(ws, quiet_s=5.0)] == ["accepted"]


def test_checksum_mismatch_rejected(ws):
    d = make_delivery(ws, "251125005")
    f = d / "cspad.h5"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    _old(f, d / "MANIFEST.md5")
    data = _assert_rejected(ws, _process(ws, quiet_s=2.0), "251125005", "checksum mismatch")
    assert data["file"].endswith("cspad.h5")
    assert (ws.rejected / "251125005" / "cspad.h5").exists() and not d.exists()


def test_invalid_downlink_id_rejected(ws):
    make_delivery(ws, "251125006")
    os.rename(ws.incoming_level0 / "251125006", ws.incoming_level0 / "251399006")
    _assert_rejected(ws, _process(ws), "251399006", "invalid downlink id")


def test_invalid_fcopy_name_rejected(ws):
    make_delivery(ws, "251125007", as_="fcopy")
    for ext in ("tar", "md5"):
        os.rename(ws.incoming_fcopy / f"251125007.{ext}", ws.incoming_fcopy / f"bogus.{ext}")
    manifest.write(ws.incoming_fcopy, ["bogus.tar"], ws.incoming_fcopy / "bogus.md5")
    _assert_rejected(ws, _process(ws), "bogus", "invalid downlink id")
    assert (ws.rejected / "bogus.tar").exists() and (ws.rejected / "bogus.md5").exists()


def test_malformed_retdef_rejected(ws):
    d = make_delivery(ws, "251125008")
    rd = d / "RetDef-251125008-00001.xml"
    rd.write_text("<retdef type='LSEP'><arch scid='77'>x</arch></retdef>")
    names = [p.name for p in d.iterdir() if p.name != "MANIFEST.md5"]
    manifest.write(d, names)
    _assert_rejected(ws, _process(ws), "251125008", "malformed RetDef")


def test_malformed_manifest_rejected(ws):
    d = make_delivery(ws, "251125009")
    (d / "MANIFEST.md5").write_text("this is not md5sum output\n")
    _assert_rejected(ws, _process(ws), "251125009", "malformed manifest")


def test_unreadable_tar_rejected(ws):
    _fcopy_from_tar(ws, "251125010", b"\x00not a tar at all" * 100)
    _assert_rejected(ws, _process(ws), "251125010", "unreadable tar")


def _tar_with(member: tarfile.TarInfo, payload: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        if member.isfile():
            member.size = len(payload)
            tf.addfile(member, io.BytesIO(payload))
        else:
            tf.addfile(member)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,kind", [("../escape.h5", "file"), ("/tmp/abs.h5", "file"), ("link.h5", "symlink")]
)
def test_tar_member_escaping_rejected(ws, name, kind):
    info = tarfile.TarInfo(name)
    if kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = "../../../../etc/passwd"
    _fcopy_from_tar(ws, "251125011", _tar_with(info))
    out = _process(ws)
    reason = [o for o in out if o.status == "rejected"][0].reason
    assert "escapes" in reason or "not a regular file" in reason
    assert not (ws.incoming_level0 / "251125011").exists()
    assert not (ws.root / "incoming" / "escape.h5").exists()
    assert (ws.rejected / "251125011.tar").exists() and (
        ws.rejected / "251125011.tar.reason"
    ).exists()


def test_fcopy_checksum_mismatch_rejected(ws):
    tar = make_delivery(ws, "251125012", as_="fcopy")
    with open(tar, "r+b") as fh:
        fh.seek(600)
        fh.write(b"CORRUPT")
    _old(tar, ws.incoming_fcopy / "251125012.md5")
    _assert_rejected(ws, _process(ws), "251125012", "checksum mismatch")


def test_manifest_never_completed_is_rejected_after_timeout(ws):
    d = ws.incoming_level0 / "251125013"
    d.mkdir()
    (d / "MANIFEST.md5").write_text("0" * 32 + "  never.h5\n")
    _old(d / "MANIFEST.md5")
    _assert_rejected(ws, _process(ws, timeout=10.0), "251125013", "incomplete")


def test_rejected_twice_keeps_both(ws):
    for _ in range(2):
        make_delivery(ws, "251399014".replace("399", "125"))
        os.rename(ws.incoming_level0 / "251125014", ws.incoming_level0 / "2511250xx")
        _process(ws)
    assert (ws.rejected / "2511250xx").is_dir() and (ws.rejected / "2511250xx.2").is_dir()
    assert len(list(ws.rejected.glob("*.reason"))) == 2


def test_manifest_being_written_is_pending_not_rejected(ws):
    d = make_delivery(ws, "251125015")
    m = d / "MANIFEST.md5"
    text = m.read_bytes()
    m.write_bytes(b"")  # a writer that created it and has not written yet
    out = _process(ws, quiet_s=5.0)
    assert [o.status for o in out] == ["pending"] and "still being written" in out[0].reason
    m.write_bytes(text)
    assert [o.status for o in _process(ws, quiet_s=5.0)] == ["accepted"]


@pytest.mark.parametrize(
    "scene,why",
    [
        ("../../../etc/passwd", "invalid scene name"),
        ("no-such-scene", "unknown scene"),
        (None, "no scene.txt"),
    ],
)
def test_bad_scene_rejected(ws, scene, why):
    d = make_delivery(ws, "251125016")
    (d / "gensteps.npy").write_bytes(b"\x93NUMPY")
    if scene is not None:
        (d / "scene.txt").write_text(scene + "\n")
    names = [p.name for p in d.iterdir() if p.name != "MANIFEST.md5"]
    manifest.write(d, names)
    _assert_rejected(ws, _process(ws), "251125016", why)
