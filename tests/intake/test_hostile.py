"""Hostile and broken deliveries: each is rejected with its reason
and kept, or stays pending, and never shadows, escapes or fills anything.

Every test here failed before its fix: names were stripped, duplicates skipped silently,
links followed, the disk reserve ignored at extraction, RetDef times unchecked, partial
extractions never swept and a stalled tar writer rejected after ``quiet_s``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from engine.api import downlink_rows
from engine.core.diskspace import free_bytes
from engine.intake import deliveries, inbox, manifest
from engine.store import StateDB
from tests.pipeline.conftest import cli_proc, make_delivery, set_config

DLID = "261202013"


def _old(*paths: Path, age: float = 100.0) -> None:
    t = time.time() - age
    for p in paths:
        os.utime(p, (t, t), follow_symlinks=False)


def _process(ws, quiet_s=0.0, timeout=3600.0):
    with StateDB(ws.state) as db:
        return deliveries.process_all(ws, db, quiet_s=quiet_s, incomplete_timeout_s=timeout)


def _only(outcomes, status: str):
    got = [o for o in outcomes if o.status == status]
    assert len(got) == 1, outcomes
    return got[0]


def _relist(d: Path) -> None:
    """Rewrite a level-0 delivery's manifest over every regular file in it (a writer that
    lists what it put there), keeping whatever else is in the directory."""
    names = [
        str(p.relative_to(d))
        for p in d.rglob("*")
        if p.name != manifest.MANIFEST_NAME
        and p.is_file()
        and not p.is_symlink()
        and not any(q.is_symlink() for q in p.relative_to(d).parents if str(q) != ".")
    ]
    manifest.write(d, names)


# ------------------------------------------------------------------ 5. exact names, duplicates


@pytest.mark.parametrize("bad", [f"{DLID} ", f" {DLID}", f"{DLID}\n", "２６１２０２０１３"])
def test_level0_name_is_validated_exactly(ws, bad):
    """A directory "261202013 " is not downlink 261202013: the genuine one is registered."""
    make_delivery(ws, DLID, seed=1)
    os.rename(ws.incoming_level0 / DLID, ws.incoming_level0 / bad)
    _old(ws.incoming_level0 / bad / manifest.MANIFEST_NAME)  # it arrived first
    make_delivery(ws, DLID, seed=2)
    out = _process(ws)
    assert _only(out, "accepted").dlid == DLID
    rej = _only(out, "rejected")
    assert rej.reason.startswith("invalid downlink id") and rej.name == f"level0:{bad}"
    with StateDB(ws.state) as db:
        assert db.downlink(DLID).level0 == str(ws.incoming_level0 / DLID)


def test_fcopy_stem_is_validated_exactly(ws):
    make_delivery(ws, DLID, as_="fcopy")
    for ext in ("tar", "md5"):
        os.rename(ws.incoming_fcopy / f"{DLID}.{ext}", ws.incoming_fcopy / f"{DLID} .{ext}")
    manifest.write(ws.incoming_fcopy, [f"{DLID} .tar"], ws.incoming_fcopy / f"{DLID} .md5")
    rej = _only(_process(ws), "rejected")
    assert rej.reason.startswith("invalid downlink id") and rej.dlid is None
    with StateDB(ws.state) as db:
        assert db.downlinks() == []


def test_second_delivery_of_a_registered_id_is_kept_and_listed(ws):
    """level0 261202013 registered; an fcopy 261202013 then arrives: the daemon rejects it
    with the reason (kept in rejected/), `downlinks` and the console's rows show it."""
    make_delivery(ws, DLID)
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    make_delivery(ws, DLID, as_="fcopy", seed=5)
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr  # a rejection
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    rej = [e for e in events if e["event"] == "rejected"]
    assert len(rej) == 1 and rej[0]["delivery"] == f"fcopy:{DLID}", events
    why = f"downlink {DLID} is already registered (from level0:{DLID} at "
    assert rej[0]["reason"].startswith(why) and "kept for the operator" in rej[0]["reason"]
    assert (ws.rejected / f"{DLID}.tar").is_file() and (ws.rejected / f"{DLID}.md5").is_file()
    reason = json.loads((ws.rejected / f"{DLID}.tar.reason").read_text())
    assert reason["reason"].startswith(why)

    r = cli_proc(ws, "downlinks")
    assert r.returncode == 0 and f"REJECTED fcopy:{DLID}: {why}" in r.stdout, r.stdout
    r = cli_proc(ws, "downlinks", "--json")
    data = json.loads(r.stdout)
    assert [d["dlid"] for d in data["downlinks"]] == [DLID]
    assert [(x["name"], x["reason"][: len(why)]) for x in data["rejected"]] == [
        (f"fcopy:{DLID}", why)
    ]
    with StateDB(ws.state) as db:
        rows = downlink_rows(ws, db)
    assert rows[DLID].state != "rejected"  # the registered downlink keeps its row
    assert rows[f"fcopy:{DLID}"].state == "rejected" and rows[f"fcopy:{DLID}"].note.startswith(why)


@pytest.mark.parametrize("first", ["level0", "fcopy"])
def test_level0_directory_sent_again_under_a_registered_id_is_judged(ws, first):
    """A registered id's level-0 directory replaced by a new one (the operator removed it,
    the sender delivered again) was silently skipped as the accepted delivery: the new data
    sat in incoming for ever. It is a second delivery: rejected with its reason and kept."""
    make_delivery(ws, DLID, as_=first)
    assert _only(_process(ws), "accepted").dlid == DLID
    assert _process(ws) == []  # the registered directory itself
    shutil.rmtree(ws.incoming_level0 / DLID)
    make_delivery(ws, DLID, seed=9)
    rej = _only(_process(ws), "rejected")
    assert rej.name == f"level0:{DLID}" and rej.reason.startswith(
        f"downlink {DLID} is already registered (from {first}:{DLID} at "
    )
    assert (ws.rejected / DLID / manifest.MANIFEST_NAME).is_file()  # kept for the operator
    with StateDB(ws.state) as db:
        assert db.downlink(DLID).chunks == 2  # the registered one unchanged


def test_delivery_name_not_utf8_is_rejected_and_listed(ws):
    """A directory whose name is not valid UTF-8 raised UnicodeEncodeError writing the state
    db: never rejected, never listed, `watch --once` exit 0. Now it is rejected like any bad
    name, its bytes shown escaped."""
    bad = os.fsdecode(b"26120\xff013")
    make_delivery(ws, DLID)
    os.rename(ws.incoming_level0 / DLID, ws.incoming_level0 / bad)
    rej = _only(_process(ws), "rejected")
    assert rej.name == "level0:26120\\xff013" and rej.reason.startswith("invalid downlink id")
    assert os.path.isdir(ws.rejected / bad)
    with StateDB(ws.state) as db:
        [row] = db.deliveries("REJECTED")
        assert "\\xff" in row.path and row.reason.startswith("invalid downlink id")


def test_delivery_taken_away_whole_while_checked_is_not_rejected(ws):
    """A level-0 directory moved away during its check was rejected as "incomplete for
    1796150503 s" (the epoch: its manifest's time read as 0) with nothing moved. A delivery
    that is gone is nothing to judge; it is judged when it comes back."""
    d = make_delivery(ws, DLID)
    away = ws.root / "away"
    with StateDB(ws.state) as db:
        [cand] = inbox.scan(ws)
        os.rename(d, away)
        out = deliveries._settle(ws, db, cand, DLID, inbox.Pending("x vanished"), 3600.0)
        assert (out.status, out.reason) == ("skipped", "gone")
        assert db.deliveries("REJECTED") == []
    os.rename(away, d)
    assert _only(_process(ws), "accepted").dlid == DLID


def test_extracted_level0_dir_of_an_fcopy_package_is_the_same_delivery(ws):
    """The inotify hint for the directory an fcopy package was extracted into (seen by
    another thread or daemon) is the registered delivery itself: skipped, never moved."""
    make_delivery(ws, DLID, as_="fcopy")
    assert _only(_process(ws), "accepted").kind == "fcopy"
    cand = inbox.candidate_for(ws, ws.incoming_level0 / DLID / manifest.MANIFEST_NAME)
    with StateDB(ws.state) as db:
        out = deliveries.process(ws, db, cand, quiet_s=0.0)
        assert (out.status, out.reason) == ("skipped", "registered")
        assert db.deliveries("REJECTED") == [] and db.delivery(cand.name) is None
    assert (ws.incoming_level0 / DLID / manifest.MANIFEST_NAME).is_file()


def test_fcopy_sent_again_under_the_same_name_is_judged(ws):
    """An accepted fcopy package stays in incoming/fcopy; the same name sent again later (a
    new tar and .md5) is a second delivery of a registered id, not the accepted one."""
    make_delivery(ws, DLID, as_="fcopy")
    assert _only(_process(ws), "accepted").dlid == DLID
    assert _process(ws) == []  # the accepted package itself: nothing to do
    for ext in ("tar", "md5"):
        (ws.incoming_fcopy / f"{DLID}.{ext}").unlink()
    make_delivery(ws, DLID, as_="fcopy", seed=9)
    later = time.time() + 5  # unmistakably after the acceptance
    os.utime(ws.incoming_fcopy / f"{DLID}.md5", (later, later))
    rej = _only(_process(ws), "rejected")
    assert rej.reason.startswith(f"downlink {DLID} is already registered (from fcopy:{DLID} at ")
    assert (ws.rejected / f"{DLID}.tar").is_file()
    assert (ws.incoming_level0 / DLID / manifest.MANIFEST_NAME).is_file()  # the registered one


def test_accepted_fcopy_manifest_touched_later_is_not_sent_again(ws):
    """A chmod (or a backup tool's xattrs) moves the accepted manifest's ctime after the
    acceptance; that is the same delivery, never a duplicate of itself moved to rejected/
    (judged by the manifest's content time against the file system's own record of it, not
    the daemon's clock)."""
    make_delivery(ws, DLID, as_="fcopy")
    assert _only(_process(ws), "accepted").dlid == DLID
    time.sleep(0.05)
    os.chmod(ws.incoming_fcopy / f"{DLID}.md5", 0o600)
    assert _process(ws) == []
    assert (ws.incoming_fcopy / f"{DLID}.tar").is_file()
    assert not list(ws.rejected.glob("*.reason"))


def test_rejection_reason_starts_with_the_problem(ws):
    """The reason line (state db, console note) starts with the problem, not a full path."""
    make_delivery(ws, "251125001")
    os.rename(ws.incoming_level0 / "251125001", ws.incoming_level0 / "251399001")
    rej = _only(_process(ws), "rejected")
    assert rej.reason.startswith("invalid downlink id '251399001'"), rej.reason
    with StateDB(ws.state) as db:
        assert db.deliveries("REJECTED")[0].reason.startswith("invalid downlink id")
        note = downlink_rows(ws, db)["level0:251399001"].note
        assert note.startswith("invalid downlink id")
        assert note.endswith(f"({ws.incoming_level0 / '251399001'})"), note  # then the file


# ------------------------------------------------------------------ 6. links and special files


def _link_listed_file(ws, d: Path, outside: Path) -> None:
    outside.mkdir()
    os.rename(d / "cspad.h5", outside / "cspad.h5")
    os.symlink(outside / "cspad.h5", d / "cspad.h5")  # the manifest's md5 still matches


def _link_unlisted(ws, d: Path, outside: Path) -> None:
    os.symlink("/etc/passwd", d / "evil.h5")


def _link_subdir(ws, d: Path, outside: Path) -> None:
    outside.mkdir()
    (outside / "extra.h5").write_bytes(b"not ours")
    os.symlink(outside, d / "sub")
    names = [
        p.name
        for p in d.iterdir()
        if p.is_file() and p.name != manifest.MANIFEST_NAME and not p.is_symlink()
    ]
    manifest.write(d, [*names, "sub/extra.h5"])


def _fifo(ws, d: Path, outside: Path) -> None:
    os.mkfifo(d / "pipe.h5")


@pytest.mark.parametrize(
    "make,what",
    [
        (_link_listed_file, "symbolic link"),
        (_link_unlisted, "symbolic link"),
        (_link_subdir, "symbolic link"),
        (_fifo, "FIFO"),
    ],
)
def test_links_and_special_files_inside_level0_rejected(ws, tmp_path, make, what):
    d = make_delivery(ws, "251125020")
    make(ws, d, tmp_path / "elsewhere")
    rej = _only(_process(ws), "rejected")
    assert what in rej.reason, rej.reason
    assert "regular file" in rej.reason
    with StateDB(ws.state) as db:
        assert db.downlinks() == []
    assert (ws.rejected / "251125020").is_dir()
    if (tmp_path / "elsewhere").exists():  # the link's target is never moved or touched
        assert any((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("via", ["scan", "inotify"])
def test_linked_delivery_directory_rejected(ws, tmp_path, via):
    """A level-0 'directory' that is a link to a delivery elsewhere: rejected by the
    periodic scan and by the inotify path alike; the link moves, its target stays."""
    real = make_delivery(ws, "251125021", as_="dir", target=tmp_path / "real")
    os.symlink(real, ws.incoming_level0 / "251125021")
    with StateDB(ws.state) as db:
        if via == "scan":
            out = deliveries.process_all(ws, db, quiet_s=0.0)
        else:
            cand = inbox.candidate_for(ws, ws.incoming_level0 / "251125021" / "MANIFEST.md5")
            assert cand is not None
            out = [deliveries.process(ws, db, cand, quiet_s=0.0)]
        assert db.downlinks() == []
    rej = _only(out, "rejected")
    assert "symbolic link, not a directory" in rej.reason, rej.reason
    assert (ws.rejected / "251125021").is_symlink() and (real / "MANIFEST.md5").is_file()


def test_fcopy_manifest_that_is_a_link_rejected(ws, tmp_path):
    tar = make_delivery(ws, "251125022", as_="fcopy")
    md5 = ws.incoming_fcopy / "251125022.md5"
    os.rename(md5, tmp_path / "real.md5")
    os.symlink(tmp_path / "real.md5", md5)
    rej = _only(_process(ws), "rejected")
    assert "symbolic link" in rej.reason, rej.reason
    assert (tmp_path / "real.md5").is_file() and (ws.rejected / tar.name).is_file()


# ------------------------------------------------------------------ 7. fcopy extraction bounds


def _package(ws, dlid: str, extra: dict[str, bytes], listed: bool = True, gz: bool = False) -> Path:
    """A real mock delivery repackaged as an fcopy tar (optionally gzip) with extra members."""
    src = make_delivery(ws, dlid, as_="dir", target=ws.root / f"src-{dlid}")
    for name, data in extra.items():
        (src / name).write_bytes(data)
    names = [p.name for p in src.iterdir() if p.name != manifest.MANIFEST_NAME]
    manifest.write(src, [n for n in names if listed or n not in extra])
    tar = ws.incoming_fcopy / f"{dlid}.tar"
    with tarfile.open(tar, "w:gz" if gz else "w") as tf:
        for n in sorted(names) + [manifest.MANIFEST_NAME]:
            tf.add(src / n, arcname=n)
    manifest.write(ws.incoming_fcopy, [tar.name], ws.incoming_fcopy / f"{dlid}.md5")
    return tar


def test_fcopy_bomb_checked_against_the_reserve(ws):
    """A small gzip tar that expands beyond free space minus the reserve is rejected before
    anything is written, saying how many bytes it would need."""
    big = 64 << 20
    tar = _package(ws, "251125023", {"zeros.h5": bytes(big)}, gz=True)
    assert tar.stat().st_size < big // 50
    ws = set_config(ws, f"[disk]\nreserve_bytes = {free_bytes(ws.root) - (16 << 20)}\n")
    rej = _only(_process(ws), "rejected")
    assert rej.reason.startswith("extracting the package would need ") and " bytes" in rej.reason
    need = int(rej.reason.split("would need ")[1].split()[0])
    assert need >= big
    assert not [p for p in ws.incoming_level0.iterdir()]  # nothing extracted, no partial dir
    assert (ws.rejected / "251125023.tar").is_file()


def test_fcopy_member_with_negative_size_rejected(ws):
    """A base-256 size field can declare -1 bytes, which would shrink the space check."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("cspad.h5"), io.BytesIO(b""))
    head = bytearray(buf.getvalue())
    head[124:136] = b"\xff" * 12  # size = -1 (base-256)
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head[:512])  # header checksum
    tar = ws.incoming_fcopy / "251125036.tar"
    tar.write_bytes(bytes(head))
    manifest.write(ws.incoming_fcopy, [tar.name], ws.incoming_fcopy / "251125036.md5")
    rej = _only(_process(ws), "rejected")
    assert "declares a negative size" in rej.reason, rej.reason


def test_fcopy_member_not_in_inner_manifest_rejected(ws):
    _package(ws, "251125024", {"stowaway.h5": b"not listed"}, listed=False)
    rej = _only(_process(ws), "rejected")
    assert "'stowaway.h5' is not listed" in rej.reason, rej.reason
    assert not (ws.incoming_level0 / "251125024").exists()


def test_fcopy_with_dot_slash_members_accepted(ws):
    """`tar -C dir -cf x.tar .` writes ./name members: the same names, accepted."""
    src = make_delivery(ws, "251125025", as_="dir", target=ws.root / "src")
    tar = ws.incoming_fcopy / "251125025.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(src, arcname=".")
    manifest.write(ws.incoming_fcopy, [tar.name], ws.incoming_fcopy / "251125025.md5")
    assert _only(_process(ws), "accepted").dlid == "251125025"


# ------------------------------------------------------------------ 8. RetDef values


@pytest.mark.parametrize(
    "attr,value",
    [
        ("tbeg", "inf"),
        ("tend", "1e30"),
        ("tbeg", "-1e12"),
        ("tend", "nan"),
        ("start", "1e30"),
        ("tbeg", " 5.0"),
        ("tend", "4294967296.0"),
    ],
)
def test_retdef_times_outside_met_range_rejected(ws, attr, value):
    d = make_delivery(ws, "251125026")
    rd = d / "RetDef-251125026-00001.xml"
    text = rd.read_text()
    start = text.index(f' {attr}="') + len(f' {attr}="')
    rd.write_text(text[:start] + value + text[text.index('"', start) :])
    _relist(d)
    rej = _only(_process(ws), "rejected")
    assert rej.reason.startswith("malformed RetDef") and "MET time" in rej.reason, rej.reason


def test_unlisted_retdef_rejected(ws):
    """The stream reads every RetDef-<DLID>-*.xml in the directory: one the manifest does
    not list (so never validated) cannot slip past intake."""
    d = make_delivery(ws, "251125035")
    rd = (d / "RetDef-251125035-00001.xml").read_text()
    (d / "RetDef-251125035-00009.xml").write_text(rd.replace('tend="', 'tend="inf" x="'))
    rej = _only(_process(ws), "rejected")
    assert rej.reason.startswith("not listed in MANIFEST.md5"), rej.reason


# ------------------------------------------------------------------ 11. sweeps, stalled writers


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_partial_extraction_of_a_dead_daemon_swept_at_start(ws, state_backend):
    """Swept: what a dead process of this host left. Another host's: kept on SQLite (no one
    here can judge it); on PostgreSQL the server judges it, and a host none of whose
    processes holds a session there is gone (tests/postgres/test_ownership.py has the
    live other host whose temporaries stay)."""
    dead = ws.incoming_level0 / f".251125027.extract-{_dead_pid()}"  # the old name form
    dead_host = ws.incoming_level0 / f".251125028.extract-{os.uname().nodename}-{_dead_pid()}"
    alive = ws.incoming_level0 / f".251125029.extract-{os.getpid()}"  # this test: alive
    other_host = ws.incoming_level0 / f".251125030.extract-elsewhere.example-{_dead_pid()}"
    for p in (dead, dead_host, alive, other_host):
        p.mkdir(parents=True)
        (p / "cspad.h5").write_bytes(b"partial")
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    gone = {dead, dead_host} | ({other_host} if state_backend == "postgresql" else set())
    assert not any(p.exists() for p in gone)
    assert alive.exists() and other_host.exists() == (other_host not in gone)
    swept = {
        json.loads(line)["path"]
        for line in r.stdout.splitlines()
        if line.startswith("{") and json.loads(line)["event"] == "swept"
    }
    assert swept == {str(p) for p in gone}


def test_stalled_tar_writer_stays_pending(ws):
    """The .md5 arrived first; the tar writer stalled half-way 10 s ago (> quiet_s): the
    package is still arriving, pending until the incomplete timeout, then accepted."""
    tar = make_delivery(ws, "251125031", as_="fcopy")
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    _old(tar, ws.incoming_fcopy / "251125031.md5", age=10)
    out = _process(ws, quiet_s=2.0, timeout=600.0)
    assert _only(out, "pending").reason.endswith(
        "is still arriving (it ends before its end-of-archive marker)"
    )
    assert not ws.rejected.exists() or not any(ws.rejected.iterdir())
    with open(tar, "ab") as fh:
        fh.write(data[len(data) // 2 :])
    assert _only(_process(ws, quiet_s=0.0, timeout=600.0), "accepted").dlid == "251125031"


def test_stalled_tar_writer_rejected_after_incomplete_timeout(ws):
    tar = make_delivery(ws, "251125032", as_="fcopy")
    tar.write_bytes(tar.read_bytes()[:5000])
    _old(tar, ws.incoming_fcopy / "251125032.md5", age=100)
    rej = _only(_process(ws, quiet_s=2.0, timeout=50.0), "rejected")
    assert rej.reason.startswith("checksum mismatch") or rej.reason.startswith("incomplete")


def test_settled_corrupt_tar_still_rejected_quickly(ws):
    """A complete tar (end marker present) whose bytes differ is a settled mismatch."""
    tar = make_delivery(ws, "251125033", as_="fcopy")
    with open(tar, "r+b") as fh:
        fh.seek(600)
        fh.write(b"CORRUPT")
    _old(tar, ws.incoming_fcopy / "251125033.md5", age=10)
    assert _only(_process(ws, quiet_s=2.0), "rejected").reason.startswith("checksum mismatch")


def test_gzip_tar_is_fine(ws):
    _package(ws, "251125034", {}, gz=True)
    assert _only(_process(ws), "accepted").dlid == "251125034"
