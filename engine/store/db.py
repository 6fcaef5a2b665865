"""``StateDB``: one connection to the state database and the records it keeps.

The state database holds downlinks, deliveries, streams, process instances and written
files; the daemon, ``skydeck-engine run``, the CLI listings and the console share it at the
same time. Rules kept here:

- one ``StateDB`` per thread and process (opening is cheap; never share one across a fork);
- every multi-row change is one transaction taken with the write lock up front (``tx``), so
  two claims cannot interleave;
- owners (pid, host, process start time) are stored on claims, so a claim whose owner is
  provably dead on this host can be taken over after a crash (``engine.core.owner``); on
  PostgreSQL a claimer first holds its presence on the server (``presence.py``) and an
  owner on another host is judged by the server (its presence gone: dead), so a crashed
  host's claims are taken over too, each with a ``takeover`` event (old owner and new);
- opening makes the schema current (``migrations.ensure_schema``) or refuses a database
  written by a newer skydeck;
- a PostgreSQL server that goes away (a restart, ``pg_terminate_backend``) is reconnected
  to by the backend (engine/store/postgres.py, waiting as the caller's ``Patience`` says);
  a transaction it cut is run again here (``_retrying``), from its first statement, on the
  new session: nothing of a cut transaction is committed, except one cut *during* COMMIT
  (``in_doubt``), which may have been. So every write method is safe to run again after
  its own commit: it is idempotent (an UPDATE to the same values, an upsert, a claim that
  finds itself the owner) or recognises its own earlier write by a value fixed before the
  first attempt (a downlink's registration time and manifest, an instance's creation time,
  an event's time). What cannot be re-run in time raises ``StateUnavailable`` (exit 75)
  to the caller, whose unit of work is reconciling and is retried later (the daemon).

``StateDB`` is ``StateConnection`` (connection.py: opening, transactions, re-runs, events)
with ``IntakeState`` (intake_state.py: deliveries, downlinks) and ``StreamState``
(stream_state.py: streams, process instances, files). The SQL there is written once for every backend (qmark parameters, ``ON CONFLICT`` rather
than SQLite's ``INSERT OR ...``); what differs between engines is the ``Backend`` the
database is opened with (``engine/store/sqlite.py`` today). The read models the console and
the CLI need beyond single records are in ``queries.py``.
"""

from __future__ import annotations

from pathlib import Path

from engine.core.dburl import StateURL
from engine.core.errors import BadInput, SkydeckError
from engine.store.intake_state import IntakeState
from engine.store.stream_state import StreamState


class StateDB(IntakeState, StreamState):
    """A connection to the state database; create one per thread/process."""


def open_db(where: Path | StateURL) -> StateDB:
    return StateDB(where)


def init_state(where: Path | StateURL) -> None:
    """Create the state database at ``where`` (or bring an existing one up to date): what
    ``skydeck-engine init`` does after laying out the workspace's directories. BadInput
    naming the file or the URL (without password) when it cannot be created."""
    name = where.redacted if isinstance(where, StateURL) else where
    try:
        StateDB(where).close()
    except OSError as err:
        raise BadInput(
            f"cannot create the state database: {err.strerror}", err.filename or name
        ) from None
    except Exception as err:  # the driver's error: sqlite3.Error, psycopg.Error
        if isinstance(err, SkydeckError):
            raise
        text = where.scrub(err) if isinstance(where, StateURL) else str(err)
        raise BadInput(f"cannot create the state database: {text}", name) from None
