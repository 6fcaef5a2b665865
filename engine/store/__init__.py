"""The state database: the only package that speaks SQL or imports a database driver.

Layout (each module says why it exists):

- ``records``: the rows as dataclasses and the status vocabularies (no SQL);
- ``schema``: the DDL of a fresh database and ``SCHEMA_VERSION``;
- ``migrations``: the ordered steps that bring an older database to that version (one
  transaction, a backup copy first) and the refusal of a newer one;
- ``db``: ``StateDB``, a connection with its transactions and record reads and writes;
- ``queries``: the read models the console, the CLI and the daemon need;
- ``backend``: the interface a database engine implements; ``sqlite`` (the embedded
  default) and ``postgres`` (a shared server, ``[state] url``) implement it and are the only
  modules that import a driver; they share every query, the schema and the migrations;
- ``outage``: how a caller rides over a PostgreSQL server that goes away (``Patience``:
  how long a call waits; ``Outage``: one report per outage; the back-off);
- ``presence``: the session locks that let the server see an owner die; ``copy``: ``db
  copy``.

Import from here: ``from engine.store import StateDB, Downlink, ...``.
"""

from engine.store.db import StateDB, init_state, open_db
from engine.store.migrations import STEPS
from engine.store.queries import DownlinkFacts
from engine.store.records import (
    ACTIVE_PI,
    DONE_PI,
    FINAL_STREAM,
    PI_STATUSES,
    STREAM_STATUSES,
    Delivery,
    Downlink,
    FileRecord,
    Identity,
    ProcessInstance,
    Stream,
    StreamView,
)
from engine.store.schema import SCHEMA_VERSION
from engine.store.sqlite import backup_path

__all__ = [
    "ACTIVE_PI",
    "DONE_PI",
    "FINAL_STREAM",
    "PI_STATUSES",
    "SCHEMA_VERSION",
    "STEPS",
    "STREAM_STATUSES",
    "Delivery",
    "Downlink",
    "DownlinkFacts",
    "FileRecord",
    "Identity",
    "ProcessInstance",
    "StateDB",
    "Stream",
    "StreamView",
    "backup_path",
    "init_state",
    "open_db",
]
