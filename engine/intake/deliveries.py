"""Deliveries: judge, register or reject what arrives in ``incoming/``.

Two forms arrive (docs/design.md, "Glossary"): fcopy packages ``incoming/fcopy/<DLID>.tar`` whose
manifest ``<DLID>.md5`` arrives last, and level-0 directories ``incoming/level0/<DLID>/``
complete when ``MANIFEST.md5`` is present and every listed file verifies.

Why each rule:
- Files are the truth and events only hints (watchdog drops inotify overflow silently), so
  ``scan`` lists the inboxes from scratch and ``process`` is idempotent: a registered
  downlink is skipped, a claimed delivery is handled by exactly one process (state db claim).
- Writers we do not control (rsync, slow copies) leave partial files: hidden names (rsync's
  ``.name.XXXXXX``), ``*.tmp``/``*.part``, editor swap files are never candidates; a manifest
  whose files are missing, or mismatch while still being written (modified within
  ``quiet_s``), is *pending*, not bad. Only a settled mismatch is a rejection.
- A bad delivery is moved to ``incoming/rejected/`` with a ``.reason`` file, never deleted;
  its reason line starts with the problem (the file is a separate field).
- Names are validated exactly as they arrive (``"261202013 "`` is not 261202013), and a
  second delivery of an id that is already registered is rejected with that reason (kept
  for the operator), never silently skipped; only the level-0 directory an accepted fcopy
  package was extracted into is the same delivery.
- What was accepted is known by its content, never by its times (``identity``): senders
  keep times (``rsync -a``, ``cp -p``) or run clocks behind, so a re-sent package with new
  content and old mtimes looks older than the accepted one. The state records the digest of
  the manifest's entries and, for a package, the tar's MD5 that was verified, with stat keys
  (ctime included) as a cache that a change of content always moves. Under an accepted name
  the same content again is the accepted delivery (skipped; the daemon logs ``unchanged``
  when its files were rewritten); other content is rejected with the reason and kept, or
  pending while only half of it is there (a new manifest beside the accepted tar, a new
  tar under the accepted manifest) until ``incomplete_timeout_s`` after it arrived. A
  level-0 directory is the registered one when it lies where that one was and lists the
  same files and checksums.
- What lies in the inboxes (candidates, their files' times, manifests and trees that verify
  or are still arriving) is ``inbox.py``; an fcopy package's verification and safe
  extraction into a level-0 directory is ``fcopy.py``. This module judges and registers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from engine.core import retdef
from engine.core.atomic import atomic_write_bytes
from engine.core.errors import BadInput
from engine.core.ids import is_dlid, parse_dlid
from engine.core.inputs import file_kind, open_regular
from engine.core.workspace import Workspace, packaged_scene
from engine.intake import identity, manifest
from engine.intake.fcopy import extract, extracted_before, tar_arriving
from engine.intake.inbox import (
    Candidate,
    Outcome,
    Pending,
    check_tree,
    lmode,
    mismatch,
    modified,
    mtime,
    scan,
    text,
    verify_dir,
)
from engine.store import Delivery, Downlink, Identity, StateDB

_RETDEF = re.compile(r"RetDef-([0-9]{9})-([0-9]{5})\.xml")
GENSTEPS_NAME = "gensteps.npy"
SCENE_NAME = "scene.txt"


def _check_retdefs(directory: Path, dlid: str, names: list[str]) -> int:
    """Every RetDef is listed, named for this downlink and its chunk, and valid: the stream
    reads each ``RetDef-<DLID>-*.xml`` in the directory, so an unlisted one is rejected too."""
    listed = set(names)
    with os.scandir(directory) as it:
        for e in it:
            if e.name.startswith("RetDef-") and e.name not in listed:
                raise BadInput(
                    f"not listed in {manifest.MANIFEST_NAME} (every RetDef must be)", e.path
                )
    chunks = []
    for n in names:
        m = _RETDEF.fullmatch(n)
        if not n.startswith("RetDef-"):
            continue
        if not m:
            raise BadInput("RetDef file name is not RetDef-<DLID>-<CHUNK 5d>.xml", directory / n)
        if m.group(1) != dlid:
            raise BadInput(f"RetDef belongs to downlink {m.group(1)}, not {dlid}", directory / n)
        rd = retdef.parse(directory / n)
        if rd.chunkid != int(m.group(2)):
            raise BadInput(f"RetDef of chunk {m.group(2)} says chunkid {rd.chunkid}", directory / n)
        chunks.append(int(m.group(2)))
    if not chunks:
        raise BadInput("delivery carries no RetDef-<DLID>-<CHUNK>.xml", directory)
    return len(chunks)


def _check_scene(level0: Path) -> str | None:
    """The scene a delivery names (scene.txt): the plain name of a packaged scene."""
    f = level0 / SCENE_NAME
    has_gs = (level0 / GENSTEPS_NAME).is_file()
    if not f.is_file():
        if has_gs:
            raise BadInput(
                f"delivery carries {GENSTEPS_NAME} but no {SCENE_NAME} naming its scene", level0
            )
        return None
    try:
        with open(open_regular(f), "rb") as fh:
            name = fh.read(256).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"unreadable scene name: {' '.join(str(err).split())}", f) from None
    packaged_scene(name, f)
    return name


def _unique(dest: Path) -> Path:
    if not os.path.lexists(dest):
        return dest
    for k in range(2, 10_000):
        alt = dest.with_name(f"{dest.name}.{k}")
        if not os.path.lexists(alt):
            return alt
    raise BadInput("too many rejected deliveries of this name", dest)


def reject(ws: Workspace, db: StateDB | None, cand: Candidate, err: BadInput) -> Outcome:
    """Move the delivery to rejected/ with a reason file; never delete it."""
    rej = ws.rejected
    rej.mkdir(parents=True, exist_ok=True)
    moved: list[str] = []
    base = _unique(rej / (cand.stem if cand.kind == "level0" else f"{cand.stem}.tar"))
    if cand.kind == "level0":
        if os.path.lexists(cand.path):  # a link is moved as the link, never followed
            os.rename(cand.path, base)
            moved.append(str(base))
        where = base
    else:
        suffix = base.name[len(cand.stem) + len(".tar") :]  # ".2" when a name was reused
        for src in (cand.path, cand.manifest):
            if os.path.lexists(src):
                dst = rej / (src.name + suffix)
                os.rename(src, dst)
                moved.append(str(dst))
        where = base
    # one line, whatever the library said; the problem first (the file is its own field)
    reason = " ".join(err.message.split())
    atomic_write_bytes(
        where.with_name(where.name + ".reason"),
        json.dumps(
            {
                "delivery": cand.name,
                "kind": cand.kind,
                "reason": reason,
                "file": err.path,
                "moved": moved,
                "rejected_at": time.time(),
            },
            indent=1,
        ).encode()
        + b"\n",
    )
    if db is not None:  # the listing's one line: the problem, then the file it concerns
        db.finish_delivery(
            cand.name,
            "REJECTED",
            text(where),
            f"{reason} ({text(err.path)})" if err.path else reason,
        )
        db.log_event(
            "rejected", cand.stem if is_dlid(cand.stem) else None, delivery=cand.name, reason=reason
        )
    return Outcome(
        cand.name,
        cand.kind,
        cand.stem if is_dlid(cand.stem) else None,
        "rejected",
        reason,
        str(where),
        err.path,
    )


def _same_place(cand: Candidate, dl: Downlink) -> bool:
    """Whether ``cand`` is a real directory where the registered downlink's level-0
    directory lies (its name in the same directory, compared as files, so path spellings
    do not matter; the directory itself may have been replaced: content decides)."""
    if cand.kind != "level0" or lmode(cand.path) != stat.S_IFDIR:
        return False
    registered = Path(dl.level0)
    try:
        return registered.name == cand.path.name and os.path.samefile(
            registered.parent, cand.path.parent
        )
    except OSError:
        return False


def _legacy_id(mpath: Path) -> str | None:
    """What a database from before schema 4 recorded for a level-0 manifest (device, inode,
    size, mtime): only to adopt such a downlink once, never to judge a new delivery."""
    try:
        st = os.lstat(mpath)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _is_level0_of(cand: Candidate, dl: Downlink, db: StateDB | None = None) -> bool:
    """Whether ``cand`` is the registered downlink's own level-0 directory (the one a level-0
    delivery arrived as, or an accepted fcopy package was extracted into): the same
    delivery, not a second one. Judged by content: its MANIFEST.md5 lists what the
    registered one listed (``identity.entries_digest``); the stat key recorded with that
    digest answers without reading it while the file is unchanged.

    With ``db``, what was found is recorded: a key that settled or changed with the same
    content, and the digest of a downlink registered before digests were recorded (adopted
    when its manifest is still the file that registered it)."""
    if not _same_place(cand, dl):
        return False
    if identity.unchanged(cand.manifest, dl.manifest_id):
        return True
    legacy = dl.manifest_sha256 is None and _legacy_id(cand.manifest)
    try:
        mr = identity.read_manifest(cand.manifest)
    except (OSError, BadInput):
        return False
    if dl.manifest_sha256 is None:
        same = dl.manifest_id is None or legacy == dl.manifest_id
    else:
        same = mr.digest == dl.manifest_sha256
    if same and db is not None and (mr.key is not None or dl.manifest_sha256 is None):
        db.set_level0_identity(dl.dlid, mr.key, mr.digest)
    return same


def registered_level0(dl: Downlink) -> bool:
    """Whether the registered downlink's level-0 directory still holds what was registered
    (its MANIFEST.md5's entries), read only: retention keeps an fcopy package otherwise."""
    level0 = Path(dl.level0)
    cand = Candidate(
        f"level0:{text(level0.name)}",
        "level0",
        level0.name,
        level0,
        level0 / manifest.MANIFEST_NAME,
    )
    return dl.manifest_sha256 is not None and _is_level0_of(cand, dl)


def unsettled(db: StateDB, cands: Iterable[Candidate]) -> list[Candidate]:
    """The candidates that still need ``process``: all but the accepted ones and the level-0
    directories of registered downlinks whose recorded stat keys show them unchanged (a
    few lstat calls each: no reading, no writing). One whose key moved, or was not settled
    when recorded, goes to ``process``, which judges it by content; a second delivery of a
    registered id stays in (it is rejected with its reason, never silently skipped)."""
    cands = list(cands)
    if not cands:
        return []
    dls = {d.dlid: d for d in db.downlinks()}
    rows = db.deliveries()
    accepted = {d.name: d for d in rows if d.status == "ACCEPTED"}
    # a claim never settled although its downlink is registered (the state database went
    # away before the last write): looked at again, to settle it
    claimed = {d.name for d in rows if d.status == "CLAIMED"}

    def unchanged(c: Candidate) -> bool:
        known = accepted.get(c.name)
        if known is not None and c.kind == "fcopy":
            i = known.identity
            return (
                i is not None
                and identity.unchanged(c.manifest, i.manifest_key)
                and (identity.unchanged(c.path, i.package_key) or lmode(c.path) is None)
            )
        dl = dls.get(known.dlid or "") if known is not None else dls.get(c.stem)
        if dl is None:
            return known is not None  # accepted, yet no downlink: nothing to compare with
        return _same_place(c, dl) and identity.unchanged(c.manifest, dl.manifest_id)

    return [c for c in cands if c.name in claimed or not unchanged(c)]


def _registered_here(db: StateDB, cand: Candidate) -> bool:
    """Whether ``cand`` is (now) the level-0 directory of its registered downlink."""
    dl = db.downlink(cand.stem) if cand.kind == "level0" and is_dlid(cand.stem) else None
    return dl is not None and _is_level0_of(cand, dl, db)


SAME = "ACCEPTED"  # the accepted delivery, as it was
REGISTERED = "registered"  # the level-0 directory of a registered downlink
SAME_AGAIN = "the same content as accepted (its files were rewritten or touched)"


def _judge_again(
    db: StateDB,
    cand: Candidate,
    known: Delivery,
    dl: Downlink | None,
    quiet_s: float,
    incomplete_timeout_s: float,
) -> str | Pending | BadInput:
    """What lies under an accepted delivery's name now, by content: the accepted delivery
    (``SAME``, or ``SAME_AGAIN`` when it was sent again byte for byte: its stat keys moved),
    a new delivery still arriving (Pending), or one with different content, which is
    rejected with this reason and kept (BadInput). Never judged by a file's times: a sender
    that keeps them (``rsync -a``, ``cp -p``) or whose clock runs behind delivers new
    content with old ones."""
    if dl is None:
        return SAME
    if cand.kind == "level0":
        if _is_level0_of(cand, dl, db):
            return SAME
        return BadInput(
            f"{_already(dl)}; its level-0 directory was sent again with other "
            f"content ({manifest.MANIFEST_NAME} lists other files or checksums); "
            "kept for the operator",
            cand.path,
        )
    accepted = known.identity
    if accepted is None or accepted.package_md5 is None:
        return _adopt_fcopy(db, cand, known, dl)
    tar = cand.path.name
    # the manifest, by content (read only when its key moved)
    if identity.unchanged(cand.manifest, accepted.manifest_key):
        mr_key, stated, same_manifest = accepted.manifest_key, accepted.package_md5, True
    else:
        try:
            mr = identity.read_manifest(cand.manifest)
        except FileNotFoundError:
            return SAME  # gone: nothing new lies there (a new one is judged when it comes)
        except OSError as err:
            return BadInput(
                f"{_already(dl)}; sent again, and its manifest cannot be read: "
                f"{err.strerror or err}; kept for the operator",
                cand.manifest,
            )
        except BadInput as err:
            if time.time() - modified(cand.manifest) < quiet_s:
                return Pending(f"{cand.manifest.name} is still being written")
            return BadInput(
                f"{_already(dl)}; sent again: {err.message}; kept for the operator", cand.manifest
            )
        if set(mr.entries) != {tar}:
            return BadInput(
                f"{_already(dl)}; sent again with a manifest that does not list "
                f"exactly {tar}; kept for the operator",
                cand.manifest,
            )
        mr_key, stated = mr.key, mr.entries[tar]
        same_manifest = mr.digest == accepted.manifest_sha256
    # the tar, by content (hashed only when its key moved)
    since = time.time()
    moved = accepted.manifest_key is not None and mr_key != accepted.manifest_key
    tar_md5: str | None
    if identity.unchanged(cand.path, accepted.package_key):
        tar_md5, tar_key = accepted.package_md5, accepted.package_key
    else:
        try:
            tar_md5, tar_key = identity.md5_keyed(cand.path)
        except FileNotFoundError:
            tar_md5, tar_key = None, None
        except OSError as err:
            return BadInput(
                f"{_already(dl)}; sent again, and {tar} cannot be read: "
                f"{err.strerror or err}; kept for the operator",
                cand.path,
            )
        except BadInput as err:  # a link or a special file in its place
            return BadInput(
                f"{_already(dl)}; sent again: {err.message}; kept for the operator", cand.path
            )
        moved = moved or (accepted.package_key is not None and tar_md5 is not None)
    if same_manifest and tar_md5 in (accepted.package_md5, None):
        now = Identity(accepted.manifest_sha256, mr_key, accepted.package_md5, tar_key)
        if now != accepted:
            db.set_identity(cand.name, now)
        return SAME_AGAIN if moved else SAME
    if not same_manifest and tar_md5 == stated:
        return BadInput(
            f"{_already(dl)}; {tar} was sent again with different content (MD5 "
            f"{tar_md5}, accepted {accepted.package_md5}); kept for the operator",
            cand.path,
        )
    if not same_manifest and tar_md5 not in (accepted.package_md5, None):
        try:  # a new tar that matches neither: still being written, or a settled mismatch
            mismatch(
                cand.path,
                stated,
                tar_md5 or "",
                cand.manifest,
                quiet_s,
                since,
                lambda f: tar_arriving(f, incomplete_timeout_s),
            )
        except BadInput as err:
            return BadInput(
                f"{_already(dl)}; sent again with different content, {err.message}; "
                "kept for the operator",
                cand.path,
            )
        except Pending as still:
            return still
    # half a new delivery: a new manifest whose tar has not arrived (the accepted one is
    # still there), or a new tar whose manifest has not (the sender writes it last)
    if same_manifest:
        why, newest = (
            (
                f"{tar} is not the accepted package (MD5 {tar_md5}, accepted "
                f"{accepted.package_md5}); waiting for its manifest"
            ),
            cand.path,
        )
    else:
        why, newest = (
            (
                f"{cand.manifest.name} was sent again with different content; waiting "
                f"for its {tar}" + (" (the one present is the accepted package)" if tar_md5 else "")
            ),
            cand.manifest,
        )
    age = time.time() - mtime(newest)  # since it arrived here (ctime: kept times do not count)
    if age > incomplete_timeout_s:
        return BadInput(
            f"{_already(dl)}; sent again with different content, incomplete for "
            f"{age:.0f} s: {why}; kept for the operator",
            newest,
        )
    return Pending(why)


def _adopt_fcopy(db: StateDB, cand: Candidate, known: Delivery, dl: Downlink) -> str | BadInput:
    """An fcopy package accepted before what was accepted was recorded (schema < 4): its
    files are the accepted ones if neither changed after the manifest that registered it
    (``dl.delivered`` is that manifest's change time then, by the file system's clock; a
    ctime is set by the file system only, never back by a sender). Then their content is
    recorded as accepted, read from the manifest that was verified then. Otherwise nothing
    tells the accepted package from a new one: judged as a second delivery."""
    try:
        mst = os.lstat(cand.manifest)
        tst = os.lstat(cand.path) if lmode(cand.path) is not None else None
    except FileNotFoundError:
        return SAME
    if all(
        st.st_ctime <= dl.delivered and stat.S_ISREG(st.st_mode)
        for st in (mst, tst)
        if st is not None
    ):
        try:
            mr = identity.read_manifest(cand.manifest)
        except (OSError, BadInput):
            mr = None
        stated = mr.entries.get(cand.path.name) if mr is not None else None
        if mr is not None and stated is not None and len(mr.entries) == 1:
            db.set_identity(
                known.name,
                Identity(
                    mr.digest,
                    identity.stat_key(mst),
                    stated,
                    identity.stat_key(tst) if tst is not None else None,
                ),
            )
            return SAME
    return BadInput(
        f"{_already(dl)}; {cand.path.name} or its manifest changed after it was "
        "accepted, by a version that did not record what it accepted, so it cannot "
        "be told from the accepted package; kept for the operator",
        cand.path,
    )


def _already(dl: Downlink) -> str:
    return f"downlink {dl.dlid} is already registered ({_registered_as(dl)})"


def _registered_by(cand: Candidate, dl: Downlink) -> Identity | None:
    """What ``cand`` is, by content, when ``dl`` was registered from it itself (by a try
    whose claim was never settled: the state database went away before the last write),
    else None (another delivery of the id). A level-0 directory: it is the registered one.
    An fcopy package: its tar matches its manifest and the registered level-0 directory is
    its extraction, file for file."""
    if dl.kind != cand.kind:
        return None
    try:
        mr = identity.read_manifest(cand.manifest)
        if cand.kind == "level0":
            return Identity(mr.digest, mr.key) if _is_level0_of(cand, dl) else None
        stated = mr.entries.get(cand.path.name)
        if stated is None or len(mr.entries) != 1:
            return None
        md5, key = identity.md5_keyed(cand.path)
        if md5 != stated or not extracted_before(cand.path, Path(dl.level0)):
            return None
        return Identity(mr.digest, mr.key, stated, key)
    except (OSError, BadInput):
        return None


def _being_extracted(db: StateDB, dlid: str) -> bool:
    """Whether the fcopy package of ``dlid`` is claimed, not settled: a level-0 directory
    of that id is then (most likely) its extraction, registered by the package's claimer;
    looked at once the claim is settled."""
    d = db.delivery(f"fcopy:{dlid}")
    return d is not None and d.status == "CLAIMED"


def _registered_as(dl: Downlink) -> str:
    """Which delivery registered a downlink, and when, for a duplicate's reason line (names
    are exact, so the delivery of downlink X in form K was named K:X)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(dl.registered))
    return f"from {dl.kind}:{dl.dlid} at {when}"


def _check_form(cand: Candidate) -> None:
    """Deliveries are regular files in real directories (lstat: links are not followed)."""
    if cand.kind == "level0":
        check_tree(cand.path)
    for f in (cand.manifest,) if cand.kind == "level0" else (cand.manifest, cand.path):
        mode = lmode(f)
        if mode is None:
            raise Pending(f"{f.name} not present yet")
        if mode != stat.S_IFREG:
            raise BadInput(
                f"is a {file_kind(f)}, not a regular file (deliveries are "
                "regular files in real directories)",
                f,
            )


def process(
    ws: Workspace,
    db: StateDB,
    cand: Candidate,
    quiet_s: float = 2.0,
    incomplete_timeout_s: float = 3600.0,
) -> Outcome:
    """Turn one candidate into a registered downlink, a rejection, or 'pending'.

    Exactly once: the state db claim makes one process own the verification. The level-0
    directory of a registered downlink (e.g. one we extracted from an fcopy package) is
    skipped; any other delivery of a registered id is rejected as a duplicate, kept for the
    operator to decide.
    """
    known = db.delivery(cand.name)
    resent: BadInput | None = None
    if known is not None and known.status == "ACCEPTED":
        verdict = _judge_again(
            db,
            cand,
            known,
            db.downlink(known.dlid) if known.dlid else None,
            quiet_s,
            incomplete_timeout_s,
        )
        if isinstance(verdict, str):
            return Outcome(cand.name, cand.kind, known.dlid, "skipped", verdict, known.path)
        if isinstance(verdict, Pending):  # the accepted record stays until it is judged
            return Outcome(
                cand.name, cand.kind, known.dlid, "pending", str(verdict), str(cand.path)
            )
        resent = verdict
    dlid = cand.stem if is_dlid(cand.stem) else None
    if _registered_here(db, cand) and (known is None or known.status != "CLAIMED"):
        return Outcome(cand.name, cand.kind, dlid, "skipped", REGISTERED, str(cand.path))
    if cand.kind == "level0" and dlid is not None and _being_extracted(db, dlid):
        return Outcome(
            cand.name, cand.kind, dlid, "skipped", f"extracted from fcopy:{dlid}", str(cand.path)
        )
    if not db.claim_delivery(cand.name, cand.kind, dlid, text(cand.path), again=resent is not None):
        return Outcome(cand.name, cand.kind, dlid, "skipped", "claimed elsewhere", str(cand.path))
    # another process finished it (moved it away) between our scan and claim
    if not os.path.lexists(cand.path if cand.kind == "level0" else cand.manifest):
        db.release_delivery(cand.name)
        return Outcome(cand.name, cand.kind, dlid, "skipped", "gone", str(cand.path))
    try:
        try:
            dlid = parse_dlid(cand.stem)
        except BadInput as err:
            raise BadInput(err.message, cand.path) from None
        _check_form(cand)
        if resent is not None:
            raise resent
        dup = db.downlink(dlid)
        mine = _registered_by(cand, dup) if dup is not None else None
        if mine is not None and dup is not None:
            # this delivery registered it in a try whose last write did not happen (the
            # state database went away): settle its claim, nothing else
            db.finish_delivery(cand.name, "ACCEPTED", dup.level0, identity=mine)
            return Outcome(cand.name, cand.kind, dlid, "accepted", None, dup.level0)
        if dup is not None:
            raise BadInput(f"{_already(dup)}; kept for the operator", cand.path)
        if cand.kind == "fcopy":
            got = extract(ws, cand, dlid, quiet_s, incomplete_timeout_s)
            level0, accepted, entries = got.level0, got.accepted, got.entries
            level0_key = None  # written just now: settled on a later look
        else:
            level0 = cand.path
            mr = verify_dir(level0, cand.manifest, quiet_s)
            accepted, entries, level0_key = Identity(mr.digest, mr.key), mr.entries, mr.key
        chunks = _check_retdefs(level0, dlid, sorted(entries))
        scene = _check_scene(level0)
        dl = Downlink(
            dlid=dlid,
            kind=cand.kind,
            level0=str(level0),
            chunks=chunks,
            gensteps=(level0 / GENSTEPS_NAME).is_file(),
            scene=scene,
            delivered=mtime(cand.manifest),
            registered=time.time(),
            manifest_id=level0_key,
            manifest_sha256=identity.entries_digest(entries),
        )
        first = db.register_downlink(dl)
        db.finish_delivery(cand.name, "ACCEPTED", str(level0), identity=accepted)
        if not first:  # e.g. the level0 dir of an fcopy package another daemon just extracted
            return Outcome(cand.name, cand.kind, dlid, "skipped", REGISTERED, str(level0))
        return Outcome(cand.name, cand.kind, dlid, "accepted", None, str(level0))
    except FileNotFoundError as err:  # a file vanished under us: this delivery waits
        why: Pending | BadInput = Pending(
            f"{Path(err.filename or cand.path).name} vanished while being checked"
        )
        return _settle(ws, db, cand, dlid, why, incomplete_timeout_s)
    except OSError as err:  # permission or I/O error: this delivery only, with the reason
        why = BadInput(
            f"cannot read the delivery: {err.strerror or err}", err.filename or cand.path
        )
        return _settle(ws, db, cand, dlid, why, incomplete_timeout_s)
    except (Pending, BadInput) as why:
        return _settle(ws, db, cand, dlid, why, incomplete_timeout_s)
    except BaseException:
        db.release_delivery(cand.name)
        raise


def _settle(
    ws: Workspace,
    db: StateDB,
    cand: Candidate,
    dlid: str | None,
    why: Pending | BadInput,
    incomplete_timeout_s: float,
) -> Outcome:
    """The verdict on a claimed delivery that is not (yet) good: pending or rejected."""
    try:
        if _registered_here(db, cand):
            # another thread or daemon extracted an fcopy package into this very directory
            # and registered it meanwhile: the same delivery, whose data is never moved
            db.release_delivery(cand.name)
            return Outcome(cand.name, cand.kind, cand.stem, "skipped", REGISTERED, str(cand.path))
        if isinstance(why, BadInput):
            if why.path is None:
                why.path = str(cand.path)
            return reject(ws, db, cand, why)
        if not os.path.lexists(cand.path if cand.kind == "level0" else cand.manifest):
            db.release_delivery(cand.name)  # taken away whole while checked: nothing to judge
            return Outcome(cand.name, cand.kind, dlid, "skipped", "gone", str(cand.path))
        age = time.time() - modified(cand.manifest)
        if age > incomplete_timeout_s:
            return reject(
                ws, db, cand, BadInput(f"incomplete for {age:.0f} s: {why}", cand.manifest)
            )
    except OSError as err:  # it could not even be moved to rejected/: it stays, and says so
        what = why.message if isinstance(why, BadInput) else str(why)
        why = Pending(f"{what}; could not be moved to {ws.rejected}: {err.strerror or err}")
    db.release_delivery(cand.name, pending=text(str(why)))
    return Outcome(cand.name, cand.kind, dlid, "pending", str(why), str(cand.path))


def process_all(
    ws: Workspace, db: StateDB, quiet_s: float = 2.0, incomplete_timeout_s: float = 3600.0
) -> list[Outcome]:
    """One reconciliation pass over both inboxes: the outcome of each delivery it found
    something to do about (one that ``process`` found to be, by content, the accepted or
    registered delivery it already was is none)."""
    out = [process(ws, db, cand, quiet_s, incomplete_timeout_s) for cand in unsettled(db, scan(ws))]
    return [o for o in out if not (o.status == "skipped" and o.reason in (SAME, REGISTERED))]


def rejected_list(ws: Workspace) -> list[dict]:
    """Rejected deliveries from their reason files (the files are the truth)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for p in sorted(ws.rejected.glob("*.reason")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")) | {"reason_file": str(p)})
            except (OSError, ValueError):
                out.append(
                    {
                        "delivery": p.name[: -len(".reason")],
                        "reason": "unreadable reason file",
                        "reason_file": str(p),
                    }
                )
    return out
