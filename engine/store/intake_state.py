"""The intake's records in the state database: deliveries (claimed, pending, accepted,
rejected, with what was accepted by content) and downlinks (registered once).

Why a module of its own: this is the half of ``StateDB`` that intake writes
(engine/intake/deliveries.py); the claim is the exactly-once point of registration, taken
over from a provably dead owner, and every write recognises its own earlier commit after a
cut (engine/store/connection.py).
"""

from __future__ import annotations

import time
from dataclasses import fields

from engine.core.owner import Owner
from engine.store.connection import StateConnection
from engine.store.records import Delivery, Downlink, Identity, from_row

_DELIVERY = "SELECT " + ", ".join(f.name for f in fields(Delivery)) + " FROM deliveries"


class IntakeState(StateConnection):
    """Deliveries and downlinks (``StateDB`` has them)."""

    # ------------------------------------------------------------ deliveries

    def claim_delivery(
        self, name: str, kind: str, dlid: str | None, path: str, again: bool = False
    ) -> bool:
        """Claim a delivery for verification; False if it is done or a live owner holds it.

        An accepted name is claimed again only with ``again``: the caller found a new
        delivery under the same name (an fcopy package sent again), which is then judged,
        never silently ignored. A claim of a dead owner on another host (PostgreSQL) is
        taken over with a ``takeover`` event."""
        me = Owner.me()
        self.hold_presence()
        # a re-run after a cut COMMIT finds its own claim (same owner): idempotent
        return self._retrying(
            lambda _again: self._claim_delivery(me, name, kind, dlid, path, again)
        )

    def _claim_delivery(
        self, me: Owner, name: str, kind: str, dlid: str | None, path: str, again: bool
    ) -> bool:
        with self.tx() as c:
            row = c.execute("SELECT * FROM deliveries WHERE name=?", (name,)).fetchone()
            if row is not None:
                if row["status"] == "ACCEPTED" and not again:
                    return False
                # REJECTED: the bad one was moved away, so this is a new delivery of the name
                same = (row["owner_pid"], row["owner_host"]) == (me.pid, me.host)
                if row["status"] == "CLAIMED" and not same:
                    dead, why, remote = self._judge_owner(
                        row["owner_pid"], row["owner_host"], row["owner_start"]
                    )
                    if not dead:
                        return False
                    if remote:
                        self._takeover(
                            "delivery",
                            dlid,
                            f"{row['owner_host']}:{row['owner_pid']}",
                            me,
                            why,
                            delivery=name,
                        )
                seen = row["seen"] if row["status"] == "PENDING" else time.time()
                c.execute(
                    "UPDATE deliveries SET status='CLAIMED', reason=NULL, done=NULL, "
                    "owner_pid=?, owner_host=?, owner_start=?, path=?, seen=? WHERE name=?",
                    (me.pid, me.host, me.start, path, seen, name),
                )
                return True
            c.execute(
                "INSERT INTO deliveries (name, kind, dlid, status, path, owner_pid, owner_host,"
                " owner_start, seen) VALUES (?,?,?,?,?,?,?,?,?)",
                (name, kind, dlid, "CLAIMED", path, me.pid, me.host, me.start, time.time()),
            )
            return True

    def release_delivery(self, name: str, pending: str | None = None) -> None:
        """Give a claim back without a verdict. With ``pending`` (why it is not complete yet)
        the row stays as PENDING so the console can show it; else it is removed."""
        me = Owner.me()

        def body(_again: bool) -> None:  # idempotent: only our own claim is touched
            with self.tx() as c:
                if pending is None:
                    c.execute(
                        "DELETE FROM deliveries WHERE name=? AND status='CLAIMED' AND "
                        "owner_pid=? AND owner_host=?",
                        (name, me.pid, me.host),
                    )
                else:
                    c.execute(
                        "UPDATE deliveries SET status='PENDING', reason=?, owner_pid=NULL, "
                        "owner_host=NULL, owner_start=NULL WHERE name=? AND "
                        "status='CLAIMED' AND owner_pid=? AND owner_host=?",
                        (pending, name, me.pid, me.host),
                    )

        self._retrying(body)

    def finish_delivery(
        self,
        name: str,
        status: str,
        path: str,
        reason: str | None = None,
        identity: Identity | None = None,
    ) -> None:
        """The verdict on a claimed delivery; an ACCEPTED one records ``identity`` (what was
        accepted, by content), any other verdict clears it (nothing accepted lies there)."""
        ident = (
            (None, None, None, None)
            if identity is None
            else (
                identity.manifest_sha256,
                identity.manifest_key,
                identity.package_md5,
                identity.package_key,
            )
        )
        done = time.time()

        def body(_again: bool) -> None:  # idempotent: the same values again
            with self.tx() as c:
                c.execute(
                    "UPDATE deliveries SET status=?, reason=?, path=?, done=?, "
                    "owner_pid=NULL, manifest_sha256=?, manifest_key=?, package_md5=?, "
                    "package_key=? WHERE name=?",
                    (status, reason, path, done, *ident, name),
                )

        self._retrying(body)

    def set_identity(self, name: str, identity: Identity) -> None:
        """Record what an accepted delivery is, by content, and its stat keys: once the
        delivery was checked again (its keys settled or changed with the same content), or
        for a delivery accepted before identities were recorded. Only while it is ACCEPTED."""

        def body(_again: bool) -> None:  # idempotent: the same values again
            with self.tx() as c:
                c.execute(
                    "UPDATE deliveries SET manifest_sha256=?, manifest_key=?, "
                    "package_md5=?, package_key=? WHERE name=? AND status='ACCEPTED'",
                    (
                        identity.manifest_sha256,
                        identity.manifest_key,
                        identity.package_md5,
                        identity.package_key,
                        name,
                    ),
                )

        self._retrying(body)

    def delivery(self, name: str) -> Delivery | None:
        row = self.conn.execute(_DELIVERY + " WHERE name=?", (name,)).fetchone()
        return None if row is None else from_row(Delivery, row)

    def deliveries(self, status: str | None = None) -> list[Delivery]:
        rows = (
            self.q(_DELIVERY + " WHERE status=? ORDER BY seen", (status,))
            if status
            else self.q(_DELIVERY + " ORDER BY seen")
        )
        return [from_row(Delivery, r) for r in rows]

    # ------------------------------------------------------------ downlinks

    def register_downlink(self, dl: Downlink) -> bool:
        """Insert a downlink; False when it is already registered (exactly-once). A re-run
        after a cut COMMIT that had registered it recognises its own row (the same
        registration time, form, directory and manifest) and says True again."""

        def body(again: bool) -> bool:
            with self.tx() as c:
                cur = c.execute(
                    "INSERT INTO downlinks (dlid, kind, level0, chunks, gensteps, scene, "
                    "delivered, registered, manifest_id, manifest_sha256, seq) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM downlinks)) "
                    "ON CONFLICT (dlid) DO NOTHING",
                    (
                        dl.dlid,
                        dl.kind,
                        dl.level0,
                        dl.chunks,
                        int(dl.gensteps),
                        dl.scene,
                        dl.delivered,
                        dl.registered,
                        dl.manifest_id,
                        dl.manifest_sha256,
                    ),
                )
                if cur.rowcount:
                    self.log_event(
                        "registered",
                        dl.dlid,
                        form=dl.kind,
                        latency_s=round(dl.registered - dl.delivered, 4),
                    )
                    return True
                if not again:
                    return False
                have = self.downlink(dl.dlid)
                return have is not None and (
                    have.registered,
                    have.kind,
                    have.level0,
                    have.manifest_id,
                    have.manifest_sha256,
                ) == (dl.registered, dl.kind, dl.level0, dl.manifest_id, dl.manifest_sha256)

        return self._retrying(body)

    def set_level0_identity(self, dlid: str, manifest_id: str | None, manifest_sha256: str) -> None:
        """Record a registered downlink's level-0 MANIFEST.md5 by content (its entries'
        digest) and its stat key, once checked again (a key settled, a legacy row adopted)."""
        with self.tx() as c:
            c.execute(
                "UPDATE downlinks SET manifest_id=?, manifest_sha256=? WHERE dlid=?",
                (manifest_id, manifest_sha256, dlid),
            )

    def downlink(self, dlid: str) -> Downlink | None:
        row = self.conn.execute("SELECT * FROM downlinks WHERE dlid=?", (dlid,)).fetchone()
        return None if row is None else from_row(Downlink, row)

    def downlinks(self) -> list[Downlink]:
        return [from_row(Downlink, r) for r in self.q("SELECT * FROM downlinks ORDER BY dlid")]
