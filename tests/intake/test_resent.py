"""A delivery sent again under an accepted id is judged by its content, never by its times,
by intake and by retention alike.

The defect: an fcopy package re-sent with new content but kept (older) mtimes (``cp -p``,
``rsync -a``, a sender whose clock runs behind) was neither registered nor rejected, and
``prune`` then removed it as the accepted package. The class: wherever "is this the
delivery that was accepted?" was answered by times or a stat id (the fcopy manifest's mtime
against the registration, the level-0 manifest's device:inode:size:mtime, retention's
name-and-age rule). Each test builds the case with real files, real tars and the real CLI
processes an operator runs (``watch --once``, ``prune``), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import api
from engine.core.errors import BadInput
from engine.intake import deliveries, identity, manifest
from engine.mock.delivery import deliver
from engine.pipeline.retention import apply, plan
from engine.store import StateDB
from tests.pipeline.conftest import FAST, cli_proc, make_delivery, set_config, spec
from tests.props import total

DLID = "261202013"
TINY = "[retention]\nlogs_days = 0\nevents_days = 0\nfcopy_days = 0.00001\n"


def _process(ws, quiet_s=0.0, timeout=3600.0):
    with StateDB(ws.state) as db:
        return deliveries.process_all(ws, db, quiet_s=quiet_s, incomplete_timeout_s=timeout)


def _only(outcomes, status):
    got = [o for o in outcomes if o.status == status]
    assert len(got) == 1, outcomes
    return got[0]


def _accepted(ws, as_="fcopy", **kw):
    """A delivery of DLID accepted and its stream run to its end (`skydeck-engine run`)."""
    make_delivery(ws, DLID, as_=as_, **(FAST | kw))
    r = cli_proc(ws, "run", DLID)
    assert r.returncode == 0, r.stderr


def _package(tmp: Path, seed: int) -> tuple[Path, Path]:
    """Another package of DLID (other content for another seed), made outside the inbox."""
    deliver(spec(DLID, seed=seed, **FAST), "fcopy", tmp)
    return tmp / f"{DLID}.tar", tmp / f"{DLID}.md5"


def _aged(*paths: Path, when: float) -> None:
    for p in paths:
        os.utime(p, (when, when))


def _state(ws) -> tuple[str, str | None]:
    with StateDB(ws.state) as db:
        d = db.delivery(f"fcopy:{DLID}")
        return d.status, d.package_md5


def _resend(how: str, src: list[Path], dst: Path) -> None:
    """Send files again as a sender would, keeping their (old) times."""
    if how == "cp -p":  # in place: the accepted files' inodes are overwritten
        for f in src:
            shutil.copy2(f, dst / f.name)
    elif how == "rsync -a":  # a hidden temporary renamed into place, times kept
        if shutil.which("rsync") is None:
            pytest.skip("rsync is not installed (make sysdeps)")
        subprocess.run(["rsync", "-a", *map(str, src), f"{dst}/"], check=True)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["cp -p", "rsync -a"])
def test_a_package_resent_with_old_times_is_rejected_and_never_pruned(ws, tmp_path, how):
    """The issue's case, with both tools senders use: new content under the accepted id,
    its times a month old. `prune` first (no scan has looked yet): nothing of it goes, it is
    not the accepted package. `watch --once` then rejects it with the reason, kept in
    rejected/; the registered downlink and its level-0 directory are untouched."""
    _accepted(ws)
    ws = set_config(ws, TINY)
    accepted_md5 = manifest.parse(ws.incoming_fcopy / f"{DLID}.md5")[f"{DLID}.tar"]
    level0 = {p: p.read_bytes() for p in (ws.incoming_level0 / DLID).iterdir()}
    tar, md5 = _package(tmp_path / "again", seed=9)
    _aged(tar, md5, when=time.time() - 30 * 86400)
    new = {tar.name: tar.read_bytes(), md5.name: md5.read_bytes()}
    _resend(how, [md5, tar], ws.incoming_fcopy)  # rsync's order: the .md5 sorts first
    time.sleep(1.0)

    r = cli_proc(ws, "prune", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert not [c for c in doc["candidates"] if c["area"] == "fcopy"], doc
    assert any("not the accepted one" in n for n in doc["notes"]), doc["notes"]
    assert {n: (ws.incoming_fcopy / n).read_bytes() for n in new} == new

    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    (rej,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "rejected"]
    assert rej["reason"].startswith(f"downlink {DLID} is already registered (from fcopy:{DLID} at ")
    assert (
        f"was sent again with different content (MD5 {manifest.md5_file(tmp_path / 'again' / tar.name)}"
        f", accepted {accepted_md5})" in rej["reason"]
    )
    assert {n: (ws.rejected / n).read_bytes() for n in new} == new  # kept, as sent
    assert json.loads((ws.rejected / f"{DLID}.tar.reason").read_text())["reason"] == rej["reason"]
    assert {p: p.read_bytes() for p in (ws.incoming_level0 / DLID).iterdir()} == level0
    assert _state(ws) == ("REJECTED", None)  # nothing accepted lies under the name now
    r = cli_proc(ws, "downlinks", "--json")
    assert [d["dlid"] for d in json.loads(r.stdout)["downlinks"]] == [DLID]


def test_same_size_same_mtime_rewritten_in_place_is_caught(ws, tmp_path):
    """New content written into the accepted files themselves (same inode), the same sizes,
    mtimes set back to the accepted ones to the nanosecond: everything a stat id held is
    equal, only ctime moved. Judged by content: rejected."""
    _accepted(ws)
    tar, md5 = ws.incoming_fcopy / f"{DLID}.tar", ws.incoming_fcopy / f"{DLID}.md5"
    before = {p: os.stat(p) for p in (tar, md5)}
    data = bytearray(tar.read_bytes())
    at = data.index(b"RetDef-")  # a member name in a header: other content
    data[at : at + 7] = b"RetDeF-"
    with open(tar, "r+b") as fh:
        fh.write(bytes(data))
    with open(md5, "r+b") as fh:
        fh.write(manifest.format_lines([(tar.name, manifest.md5_file(tar))]))
    for p, st_ in before.items():
        os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        now = os.stat(p)
        assert (now.st_ino, now.st_size, now.st_mtime_ns) == (
            st_.st_ino,
            st_.st_size,
            st_.st_mtime_ns,
        )
    rej = _only(_process(ws), "rejected")
    assert "was sent again with different content" in rej.reason
    assert (ws.rejected / tar.name).read_bytes() == bytes(data)


def test_only_the_tar_resent_waits_for_its_manifest_and_is_never_pruned(ws, tmp_path):
    """A new tar under the accepted manifest (the sender writes its manifest last): pending,
    not taken for the accepted package. A prune meanwhile removes neither file (the tar's
    MD5 is checked before removal; the manifest goes only after its tar). With no manifest
    after the incomplete timeout (counted from when the tar arrived, not its kept mtime),
    it is rejected and kept."""
    _accepted(ws)
    ws = set_config(ws, TINY)
    tar, _ = _package(tmp_path / "again", seed=9)
    _aged(tar, when=time.time() - 30 * 86400)
    shutil.copy2(tar, ws.incoming_fcopy / tar.name)
    pend = _only(_process(ws, timeout=600.0), "pending")
    assert pend.reason.startswith(
        f"{DLID}.tar is not the accepted package (MD5 "
    ) and pend.reason.endswith("waiting for its manifest")
    assert _state(ws)[0] == "ACCEPTED"
    time.sleep(1.0)

    p = plan(ws)
    assert {Path(c.path).name for c in p.candidates if c.area == "fcopy"} == {
        f"{DLID}.tar",
        f"{DLID}.md5",
    }  # planned by name and age ...
    res = apply(ws, p)
    kept = {Path(c.path).name: why for c, why in res.kept if c.area == "fcopy"}
    assert kept[f"{DLID}.tar"].startswith("its content is not what was recorded")
    assert kept[f"{DLID}.md5"] == f"{ws.incoming_fcopy / tar.name} is still there"
    assert (ws.incoming_fcopy / tar.name).read_bytes() == tar.read_bytes()  # ... never removed

    rej = _only(_process(ws, timeout=0.5), "rejected")
    assert "sent again with different content, incomplete for" in rej.reason
    assert (ws.rejected / tar.name).read_bytes() == tar.read_bytes()


def test_a_new_manifest_first_waits_for_its_tar(ws, tmp_path):
    """rsync sends `<DLID>.md5` before `<DLID>.tar`: for a while the new manifest sits beside
    the accepted tar. That is a re-send in progress (pending), not a settled mismatch and
    not the accepted delivery; a prune keeps both. Once the new tar is there: rejected."""
    _accepted(ws)
    ws = set_config(ws, TINY)
    tar, md5 = _package(tmp_path / "again", seed=9)
    old = time.time() - 30 * 86400
    _aged(tar, md5, when=old)
    shutil.copy2(md5, ws.incoming_fcopy / md5.name)
    pend = _only(_process(ws, quiet_s=2.0), "pending")
    assert pend.reason == (
        f"{DLID}.md5 was sent again with different content; waiting for "
        f"its {DLID}.tar (the one present is the accepted package)"
    )
    time.sleep(1.0)
    p = plan(ws)
    assert not [c for c in p.candidates if c.area == "fcopy"]
    assert any("its manifest is not the accepted one" in n for n in p.notes)
    shutil.copy2(tar, ws.incoming_fcopy / tar.name)
    assert "was sent again with different content" in _only(_process(ws), "rejected").reason


@pytest.mark.parametrize("what", ["symlink", "fifo"])
def test_a_link_or_fifo_in_place_of_the_accepted_tar_is_rejected_never_read(ws, tmp_path, what):
    """Sent again as a link to a copy of the accepted tar elsewhere (its content would
    match) or as a FIFO: never followed, never blocking a reader; rejected, kept as it is."""
    _accepted(ws)
    tar = ws.incoming_fcopy / f"{DLID}.tar"
    outside = tmp_path / "elsewhere.tar"
    shutil.copyfile(tar, outside)
    tar.unlink()
    if what == "symlink":
        os.symlink(outside, tar)
    else:
        os.mkfifo(tar)
    rej = _only(_process(ws), "rejected")
    assert "not a regular file" in rej.reason, rej.reason
    moved = ws.rejected / tar.name
    assert moved.is_symlink() if what == "symlink" else moved.is_fifo()
    assert outside.read_bytes() and _state(ws) == ("REJECTED", None)


def test_the_same_content_sent_again_is_the_accepted_delivery(ws, tmp_path):
    """The accepted package sent again byte for byte (a sender's retry, `rsync -a`: new
    files, old times): it is the accepted delivery, not a second one. `watch --once` says
    so in one `unchanged` line and rejects nothing; `prune` then removes it, identified."""
    _accepted(ws)
    time.sleep(identity.RACY_S + 0.1)
    r = cli_proc(ws, "watch", "--once")  # the keys settle and are recorded
    assert r.returncode == 0, r.stderr
    tar, md5 = _package(tmp_path / "again", seed=0)
    assert tar.read_bytes() == (ws.incoming_fcopy / tar.name).read_bytes()
    _aged(tar, md5, when=time.time() - 30 * 86400)
    _resend("rsync -a", [md5, tar], ws.incoming_fcopy)

    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events if e.get("delivery") == f"fcopy:{DLID}"] == ["unchanged"]
    assert not ws.rejected.exists() or not list(ws.rejected.iterdir())
    assert _state(ws)[0] == "ACCEPTED"

    ws = set_config(ws, TINY)
    time.sleep(1.0)
    r = cli_proc(ws, "prune", "--json")
    assert r.returncode == 0, r.stderr
    gone = {
        Path(c["path"]).name for c in json.loads(r.stdout)["candidates"] if c["area"] == "fcopy"
    }
    assert gone == {tar.name, md5.name} and not list(ws.incoming_fcopy.iterdir())


@pytest.mark.parametrize("first", ["level0", "fcopy"])
def test_level0_manifest_rewritten_keeping_its_stat_id_is_a_second_delivery(ws, first):
    """A registered level-0 directory's MANIFEST.md5 rewritten in place (same inode, same
    size) with other checksums and its mtime set back: the stat id it was registered by
    (device, inode, size, mtime) is unchanged, so it was taken for the registered one.
    Judged by its entries: a second delivery, rejected and kept."""
    _accepted(ws, as_=first)
    mpath = ws.incoming_level0 / DLID / manifest.MANIFEST_NAME
    st_ = os.stat(mpath)
    entries = manifest.parse(mpath)
    name = sorted(entries)[0]
    entries[name] = "0" * 32
    with open(mpath, "r+b") as fh:
        fh.write(manifest.format_lines(sorted(entries.items())))
    os.utime(mpath, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    assert (os.stat(mpath).st_ino, os.stat(mpath).st_size) == (st_.st_ino, st_.st_size)
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 2, r.stderr
    (rej,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "rejected"]
    assert rej["delivery"] == f"level0:{DLID}" and rej["reason"].startswith(
        f"downlink {DLID} is already registered (from {first}:{DLID} at "
    )
    assert manifest.parse(ws.rejected / DLID / manifest.MANIFEST_NAME)[name] == "0" * 32


def test_level0_directory_sent_again_with_the_same_content_is_the_registered_one(ws):
    """The registered level-0 directory removed and delivered again, identical (a new
    directory, new inodes): its stat id differs, its content does not. It is the registered
    delivery: nothing rejected, nothing moved, the stream's data in place."""
    _accepted(ws, as_="level0")
    shutil.rmtree(ws.incoming_level0 / DLID)
    make_delivery(ws, DLID, **FAST)
    assert _process(ws) == []
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    assert (ws.incoming_level0 / DLID / manifest.MANIFEST_NAME).is_file()
    assert not ws.rejected.exists() or not list(ws.rejected.iterdir())


def _forget_identities(ws) -> None:
    """The state as a skydeck before schema 4 left it: nothing recorded by content (the
    migration adds the columns empty), the level-0 manifest known by its stat id."""
    with StateDB(ws.state) as db:
        with db.tx() as c:
            c.execute(
                "UPDATE deliveries SET manifest_sha256 = NULL, manifest_key = NULL, "
                "package_md5 = NULL, package_key = NULL"
            )
        for dl in db.downlinks():
            st_ = os.lstat(Path(dl.level0) / manifest.MANIFEST_NAME)
            with db.tx() as c:
                c.execute(
                    "UPDATE downlinks SET manifest_sha256 = NULL, manifest_id = ? WHERE dlid = ?",
                    (f"{st_.st_dev}:{st_.st_ino}:{st_.st_size}:{st_.st_mtime_ns}", dl.dlid),
                )


def test_a_package_accepted_before_identities_were_recorded_is_adopted_then_pruned(ws):
    """After the upgrade nothing says what the accepted package was: retention keeps it
    (a note) until a scan has recorded it; the scan adopts it because neither file changed
    after the manifest that registered it (ctime: no sender sets it back). Then it goes."""
    _accepted(ws)
    _forget_identities(ws)
    ws = set_config(ws, TINY)
    time.sleep(1.0)
    p = plan(ws)
    assert not [c for c in p.candidates if c.area == "fcopy"]
    assert any("not recorded yet" in n for n in p.notes)
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    with StateDB(ws.state) as db:
        d, dl = db.delivery(f"fcopy:{DLID}"), db.downlink(DLID)
        assert d.package_md5 == manifest.parse(ws.incoming_fcopy / f"{DLID}.md5")[f"{DLID}.tar"]
        assert dl.manifest_sha256 == identity.entries_digest(
            manifest.parse(ws.incoming_level0 / DLID / manifest.MANIFEST_NAME)
        )
    r = cli_proc(ws, "prune", "--json")
    assert {
        Path(c["path"]).name for c in json.loads(r.stdout)["candidates"] if c["area"] == "fcopy"
    } == {f"{DLID}.tar", f"{DLID}.md5"}


def test_a_package_resent_before_the_upgrade_is_rejected_not_adopted(ws, tmp_path):
    """The defect's leftovers: a package re-sent with old times while an older skydeck
    ignored it. After the upgrade it cannot be told from the accepted one (nothing was
    recorded), but it changed after the registration: rejected with the reason, kept."""
    _accepted(ws)
    tar, md5 = _package(tmp_path / "again", seed=9)
    _aged(tar, md5, when=time.time() - 30 * 86400)
    _resend("cp -p", [md5, tar], ws.incoming_fcopy)
    _forget_identities(ws)
    rej = _only(_process(ws), "rejected")
    assert "changed after it was accepted, by a version that did not record" in rej.reason
    assert (ws.rejected / tar.name).read_bytes() == tar.read_bytes()


def test_an_orphan_chunk_is_removed_only_with_the_content_the_engine_recorded(ws):
    """A chunk output the engine recorded (path, size, MD5) whose bytes are no longer what
    it wrote (rewritten in place, same size, mtime set back) is not the engine's file any
    more: the prune keeps it; the intact one goes."""
    api.set_halt(ws, "haltCleanup", DLID)
    make_delivery(ws, DLID, **(FAST | {"chunks": 2}))
    r = cli_proc(ws, "run", DLID)
    assert r.returncode == 0, r.stderr
    api.clear_halt(ws, "haltCleanup", DLID)
    ws = set_config(
        ws,
        "[retention]\nlogs_days = 0\nevents_days = 0\nfcopy_days = 0\n"
        "orphan_chunks_days = 0.00001\n",
    )
    a, b = sorted((ws.downlinks / DLID).glob(f"{DLID}-[0-9]*.h5"))
    st_ = os.stat(a)
    with open(a, "r+b") as fh:
        fh.seek(st_.st_size // 2)
        byte = fh.read(1)
        fh.seek(st_.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(a, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    time.sleep(1.0)
    r = cli_proc(ws, "prune", "--json")
    doc = json.loads(r.stdout)
    assert [c["path"] for c in doc["candidates"]] == [str(b)]
    (k,) = doc["kept_back"]
    assert k["path"] == str(a) and k["why"].startswith("its content is not what was recorded")
    assert a.exists() and not b.exists()


# ------------------------------------------------------------------ the identity parsers

HEX = st.text("0123456789abcdefABCDEF", min_size=32, max_size=32)
NAMES = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12
)


@given(st.binary(max_size=400))
def test_reading_any_manifest_bytes_gives_entries_or_bad_input(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("m") / "x.md5"
    f.write_bytes(data)
    out = total(identity.read_manifest, f)
    if not isinstance(out, BadInput):
        assert out.digest == identity.entries_digest(manifest.parse_bytes(data, f))


@given(
    st.dictionaries(NAMES, HEX, min_size=1, max_size=5),
    st.randoms(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_the_digest_is_the_listing_not_its_spelling(entries, rnd, star, crlf, upper):
    """The same entries written another way (order, md5sum's `*`, CRLF, hex case) have one
    digest; another checksum or name has another."""
    entries = {
        n: h.lower()
        for n, h in entries.items()
        if not isinstance(total(manifest.safe_name, n, "m"), BadInput)
    }
    if not entries:
        return
    items = list(entries.items())
    rnd.shuffle(items)
    line = "{h} {m}{n}" + ("\r\n" if crlf else "\n")
    data = "".join(
        line.format(h=h.upper() if upper else h, m="*" if star else " ", n=n) for n, h in items
    ).encode()
    assert identity.entries_digest(manifest.parse_bytes(data, "m")) == identity.entries_digest(
        entries
    )
    name = items[0][0]
    other = dict(entries) | {name: ("1" if entries[name][0] != "1" else "2") + entries[name][1:]}
    assert identity.entries_digest(other) != identity.entries_digest(entries)
