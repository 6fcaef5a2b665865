"""``db copy``: a workspace's SQLite state moved into an empty PostgreSQL database.

Why: a site that outgrows one host (daemon, runners and consoles on several hosts) moves
its state to a PostgreSQL server without losing its history: the downlinks, the streams
and their process instances, the files and the events stay as they were, and the next
stream continues with ids after the copied ones.

How it stays safe:

- nothing writes the SQLite file during the copy: the copy holds its write lock (``BEGIN
  IMMEDIATE``) from the first read to the end, and refuses to start while a live process
  owns a stream or a delivery claim (the CLI refuses a live daemon heartbeat too);
- the target must be empty: no table that is not skydeck's, and no rows in skydeck's (a
  schema made by ``init --state URL`` is fine); checked again under the target's write lock;
- one transaction on the target: every table (``COPY``, in foreign-key order), the identity
  sequences set past the copied ids and past every id SQLite ever handed out, then the rows
  counted per table against the source; a difference rolls everything back (exit 1).

The SQLite file is not changed by the copy (its lock is released with a rollback; only a
file at an older schema version is first brought up to date, with its backup, as opening it
for any command would) and stays where it is: the workspace uses the copy once ``[state]
url`` (or ``SKYDECK_STATE_URL``) names it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.dburl import StateURL
from engine.core.errors import BadInput, Busy, JobFailed, SkydeckError
from engine.core.owner import owner_dead
from engine.store.connection import open_backend
from engine.store.db import StateDB
from engine.store.schema import ID_TABLES, TABLES  # foreign-key order: parents first
from engine.store.sqlite import SQLite

BATCH = 2000


@dataclass
class CopyReport:
    """What was copied: rows per table (equal on both sides), and the next ids."""

    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    next_ids: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "tables": self.counts,
            "next_ids": self.next_ids,
        }


def copy_state(source: Path, target: StateURL) -> CopyReport:
    """Copy the SQLite state database ``source`` into the empty PostgreSQL database
    ``target`` (see the module docstring). BadInput (exit 2) for a missing source or a
    target that is not empty, Busy (exit 3) while a live owner holds a stream or a claim,
    JobFailed (exit 1) when the copy does not verify (the target is then unchanged)."""
    source = Path(source)
    if not source.is_file():
        raise BadInput("no SQLite state database here (nothing to copy)", source)
    _refuse_not_empty(target)
    src = StateDB(source)  # brings an older schema up to date first (with its backup)
    try:
        backend = src.backend
        assert isinstance(backend, SQLite)
        try:
            backend.begin_write(src.conn)  # nothing writes the file until we are done
        except backend.Error as err:
            raise Busy(
                f"the state database stays busy ({err}); stop the daemon and the runners first",
                source,
            ) from None
        try:
            _refuse_live_owners(src)
            counts = {
                t: int(src.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES
            }
            high = backend.id_high_water(src.conn)
            report = CopyReport(str(source), target.redacted)
            _write_target(src, target, counts, high, report)
            return report
        finally:
            src.conn.execute("ROLLBACK")  # the source is only read
    finally:
        src.close()


def _refuse_live_owners(src: StateDB) -> None:
    held = src.q(
        "SELECT 'stream' AS what, dlid AS name, owner_pid, owner_host, owner_start "
        "FROM streams WHERE owner_pid IS NOT NULL UNION ALL "
        "SELECT 'delivery' AS what, name, owner_pid, owner_host, owner_start "
        "FROM deliveries WHERE status = 'CLAIMED' AND owner_pid IS NOT NULL"
    )
    for r in held:
        dead, why = owner_dead(r["owner_pid"], r["owner_host"], r["owner_start"])
        if not dead:
            raise Busy(
                f"{r['what']} {r['name']} is held by a live process ({why}); stop "
                "the daemon and the runners before copying the state",
                src.where,
            )


def _skydeck_rows(backend: Any, conn: Any) -> dict[str, int]:
    """Rows per skydeck table in the target (meta's schema row does not count)."""
    present = backend.tables(conn)
    foreign = sorted(present - set(TABLES))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise BadInput(
            f"the target database holds tables that are not skydeck's ({shown}); "
            "copy into an empty database",
            backend.where,
        )
    out = {}
    for t in TABLES:
        if t in present:
            sql = f"SELECT COUNT(*) FROM {t}" + (" WHERE key <> 'schema'" if t == "meta" else "")
            out[t] = int(conn.execute(sql).fetchone()[0])
    return out


def _refuse_if_rows(backend: Any, conn: Any) -> None:
    rows = {t: n for t, n in _skydeck_rows(backend, conn).items() if n}
    if rows:
        shown = ", ".join(f"{n} {t}" for t, n in rows.items())
        raise BadInput(
            f"the target database is not empty ({shown}); db copy fills only an empty database",
            backend.where,
        )


def _refuse_not_empty(target: StateURL) -> None:
    backend = open_backend(target)
    conn = backend.connect()
    try:
        _refuse_if_rows(backend, conn)
    finally:
        conn.close()


def _rows(cur: Any) -> Iterator[Sequence[Any]]:
    while True:
        batch = cur.fetchmany(BATCH)
        if not batch:
            return
        yield from batch


def _write_target(
    src: StateDB, target: StateURL, counts: dict[str, int], high: dict[str, int], report: CopyReport
) -> None:
    dst = StateDB(target)  # creates the schema (or finds init --state's); refuses a newer one
    try:
        pg: Any = dst.backend
        try:
            with dst.tx() as c:
                _refuse_if_rows(pg, c)  # again, under the target's write lock
                c.execute("DELETE FROM meta")
                for t in TABLES:
                    cur = src.backend.tuple_cursor(src.conn)
                    cur.execute(f"SELECT * FROM {t}")
                    cols = [d[0] for d in cur.description]
                    if set(cols) != pg.columns(c, t):
                        raise SkydeckError(
                            f"table {t} has columns {sorted(cols)} here and "
                            f"{sorted(pg.columns(c, t))} in the target",
                            src.where,
                        )
                    pg.copy_rows(c, t, cols, _rows(cur))
                for t in ID_TABLES:
                    report.next_ids[t] = pg.set_identity(c, t, high.get(t, 0) + 1)
                for t in TABLES:
                    got = int(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                    report.counts[t] = got
                    if got != counts[t]:
                        raise JobFailed(
                            f"table {t}: {counts[t]} rows in {src.where}, {got} "
                            "copied; nothing was kept in the target",
                            target.redacted,
                        )
        except pg.Error as err:
            raise JobFailed(
                f"the copy failed, nothing was kept in the target: {target.scrub(err)}",
                target.redacted,
            ) from None
    finally:
        dst.close()
