"""The store on a PostgreSQL server that goes away: every connection
survives a restart, a ``pg_terminate_backend`` and a server down for a while; a cut
transaction is run again; a COMMIT in doubt is recognised, never written twice.

Each test has a server of its own (``own_pg``: restarted, stopped, reconfigured), never
the shared one. The COMMIT in doubt is a real one: with ``synchronous_standby_names``
naming a standby that never comes, a COMMIT is written locally and then waits for the
standby; terminating that session then gives the client an error for a transaction that
did commit (PostgreSQL's own warning says so), which is exactly what a server crash or a
network cut during COMMIT does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from engine.core.dburl import parse_state_url
from engine.core.errors import EXIT_UNAVAILABLE, StateUnavailable
from engine.store import Downlink, StateDB
from engine.store.outage import Outage, Patience

pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow


def _url(text: str, wait_s: float = 30.0) -> Any:
    return replace(parse_state_url(text, "test"), wait_s=wait_s)


def _downlink(dlid: str, registered: float) -> Downlink:
    return Downlink(
        dlid,
        "level0",
        f"/data/{dlid}",
        2,
        False,
        None,
        registered - 1.0,
        registered,
        f"1:{dlid}:0:0",
    )


def _count(db: StateDB, sql: str, args: tuple[Any, ...] = ()) -> int:
    return int(db.q(sql, args)[0][0])


def test_every_statement_survives_terminate_and_restart(own_pg: Any) -> None:
    """Reads and writes on one StateDB go on across pg_terminate_backend of its session and
    across a fast restart of the server; the connection is the same object throughout."""
    url = own_pg.new_database()
    with StateDB(_url(url)) as db:
        conn = db.conn
        assert db.register_downlink(_downlink("251201001", time.time()))
        assert own_pg.terminate() == 1
        assert [d.dlid for d in db.downlinks()] == ["251201001"]  # a read: re-run
        assert db.register_downlink(_downlink("251201002", time.time()))  # a write
        own_pg.restart()
        st, why = db.claim_stream("251201002", "halfpipe")  # a claim, after
        assert st is not None, why
        assert db.conn is conn and db.backend.session(conn) == 2
        assert _count(db, "SELECT COUNT(*) FROM downlinks") == 2


def test_a_transaction_cut_midway_is_run_again_once(own_pg: Any) -> None:
    """A write transaction whose session is terminated while it waits for the write lock
    (held by another writer) is cut before COMMIT: run again on a new session, it makes
    exactly one process instance."""
    url = own_pg.new_database()
    import psycopg

    from engine.store.postgres import WRITE_LOCK_KEY

    with StateDB(_url(url)) as db:
        db.register_downlink(_downlink("251201001", time.time()))
        st, _ = db.claim_stream("251201001", "halfpipe")
        assert st is not None
        blocker = psycopg.connect(url, autocommit=True, application_name="blocker")
        blocker.execute("BEGIN")
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        made: list[Any] = []
        worker = threading.Thread(
            target=lambda: made.append(db.create_instance(st.id, "makeEvt", "00001", 1))
        )
        worker.start()
        _wait_for(lambda: _waiting_on_lock(own_pg), "the writer waiting for the write lock")
        assert own_pg.terminate() >= 1  # the writer, mid-transaction (and the presence)
        blocker.execute("COMMIT")
        blocker.close()
        worker.join(30)
        assert len(made) == 1 and made[0].execution == 1
        assert _count(db, "SELECT COUNT(*) FROM process_instances") == 1


def _waiting_on_lock(own_pg: Any) -> bool:
    return bool(
        own_pg.admin(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = "
            "'skydeck' AND wait_event_type = 'Lock'"
        )
    )


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _in_doubt(own_pg: Any, call: Callable[[], Any]) -> Any:
    """Run ``call`` (one StateDB write) so that its COMMIT is in doubt: the commit is made
    on the server, the client's session is terminated before it hears so. Returns what
    the call returned (after the store ran it again on a new session)."""
    own_pg.configure("synchronous_standby_names", "nobody")
    out: list[Any] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            out.append(call())
        except BaseException as err:  # reported below
            errors.append(err)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        _wait_for(
            lambda: bool(
                own_pg.admin(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'skydeck' "
                    "AND wait_event = 'SyncRep'"
                )
            ),
            "a COMMIT waiting for the standby",
        )
        assert own_pg.terminate() >= 1
    finally:
        own_pg.configure("synchronous_standby_names", None)  # the re-run commits at once
        worker.join(60)
    assert not errors, errors
    return out[0]


def test_a_commit_in_doubt_is_recognised_not_repeated(own_pg: Any) -> None:
    """Each kind of write whose COMMIT was cut after it committed: the re-run recognises
    its own earlier write. One downlink (registered: True, one 'registered' event), one
    stream claim, one process instance (execution 1), one event, one release."""
    url = own_pg.new_database()
    with StateDB(_url(url)) as db:
        dl = _downlink("251201001", time.time())
        assert _in_doubt(own_pg, lambda: db.register_downlink(dl)) is True
        assert _count(db, "SELECT COUNT(*) FROM downlinks") == 1
        assert _count(db, "SELECT COUNT(*) FROM events WHERE kind = 'registered'") == 1
        assert db.register_downlink(dl) is False  # a second registration is still refused

        st, why = _in_doubt(own_pg, lambda: db.claim_stream("251201001", "halfpipe"))
        assert st is not None, why
        assert _count(db, "SELECT COUNT(*) FROM streams") == 1

        pi = _in_doubt(own_pg, lambda: db.create_instance(st.id, "makeEvt", "00001", 1))
        assert pi.execution == 1
        assert _count(db, "SELECT COUNT(*) FROM process_instances") == 1

        _in_doubt(own_pg, lambda: db.log_event("takeover", "251201001", what="test"))
        assert _count(db, "SELECT COUNT(*) FROM events WHERE kind = 'takeover'") == 1

        _in_doubt(own_pg, lambda: db.release_stream(st.id, "SUCCESS", None))
        assert _count(db, "SELECT COUNT(*) FROM events WHERE kind = 'stream_success'") == 1
        assert db.stream(st.id).status == "SUCCESS"


def test_a_server_down_for_a_while_is_waited_for_and_reported_once(own_pg: Any) -> None:
    """With patience, a call waits for a server that is down and goes on when it is back;
    the outage is told once when the first connection finds it gone and once when it is
    back, with how long, however many connections the process holds."""
    url = own_pg.new_database()
    heard: list[dict[str, Any]] = []
    outage = Outage(heard.append)
    patience = Patience(60.0, outage=outage)
    db = StateDB(_url(url), patience=patience)
    other = StateDB(_url(url), patience=patience)
    try:
        db.register_downlink(_downlink("251201001", time.time()))
        own_pg.stop()
        restarter = threading.Timer(1.5, own_pg.start)
        restarter.start()
        t0 = time.monotonic()
        got = [d.dlid for d in db.downlinks()]  # waits, with back-off
        waited = time.monotonic() - t0
        restarter.join()
        assert got == ["251201001"] and 1.0 < waited < 30
        assert other.register_downlink(_downlink("251201002", time.time()))
        kinds = [e["event"] for e in heard]
        assert kinds == ["state_unreachable", "state_reachable"], heard
        assert heard[1]["down_s"] >= 1.0 and "error" in heard[0]
        assert outage.reachable
    finally:
        db.close()
        other.close()


def test_unreachable_past_the_wait_is_state_unavailable(own_pg: Any) -> None:
    """Past its patience a call gives up with StateUnavailable (exit 75): an open
    connection, a new one, and a write (nothing written); all work again once the server
    is back, with no new StateDB."""
    url = own_pg.new_database()
    db = StateDB(_url(url, wait_s=0.3))
    try:
        own_pg.stop()
        for call in (
            db.downlinks,
            lambda: db.register_downlink(_downlink("251201001", 1.0)),
            lambda: StateDB(_url(url, wait_s=0.3)),
        ):
            with pytest.raises(StateUnavailable) as err:
                call()
            assert err.value.exit_code == EXIT_UNAVAILABLE
            assert "\n" not in str(err.value) and "unreachable" in str(err.value)
        own_pg.start()
        assert db.downlinks() == []
        assert db.register_downlink(_downlink("251201001", 1.0))
    finally:
        db.close()


def test_the_change_probe_listens_again_and_reports_a_change(own_pg: Any) -> None:
    """The console's probe (LISTEN/NOTIFY): a lost session is re-made, LISTEN issued again,
    and one change counted (notifications were missed); a later commit elsewhere is seen."""
    url = own_pg.new_database()
    with StateDB(_url(url)) as probe, StateDB(_url(url)) as writer:
        v0 = probe.data_version()
        assert probe.data_version() == v0
        own_pg.terminate()
        v1 = probe.data_version()
        assert v1 != v0  # missed notifications: a change
        assert probe.data_version() == v1  # and then quiet again
        writer.register_downlink(_downlink("251201001", time.time()))
        v2 = probe.data_version()
        assert v2 != v1  # LISTEN works on the new session
        own_pg.restart()
        v3 = probe.data_version()
        assert v3 != v2  # a restart: a change, too
        writer.register_downlink(_downlink("251201002", time.time()))
        assert probe.data_version() != v3


def test_the_presence_is_taken_again_on_a_new_session(own_pg: Any) -> None:
    """A runner's presence (session locks) comes back with the server: check() says it
    was lost once, and another connection's judge sees the owner alive again."""
    from engine.core.owner import Owner
    from engine.store import presence

    url = own_pg.new_database()
    with StateDB(_url(url)) as db, StateDB(_url(url)) as judge_db:
        held = db.hold_presence()
        assert held is not None and held.check()
        me = Owner.me()
        assert judge_db.remote_judge is not None
        assert judge_db.remote_judge(me.pid, me.host, me.start)[0] is False
        own_pg.restart()
        assert held.check() is False  # lost, and taken again
        assert held.check() is True
        assert judge_db.remote_judge(me.pid, me.host, me.start)[0] is False
        own_pg.terminate()
        assert held.check() is False
        assert judge_db.remote_judge(me.pid, me.host, me.start)[0] is False
        presence.release(db.backend)


def test_a_server_that_ends_idle_sessions(own_pg: Any) -> None:
    """A DBA's idle_session_timeout ends every session that idles (FATAL 57P05): the
    store's reads, writes, claims, probe and presence go on as if nothing happened."""
    url = own_pg.new_database()
    own_pg.configure("idle_session_timeout", "300ms")
    try:
        with StateDB(_url(url)) as db:
            held = db.hold_presence()
            assert held is not None
            v0 = db.data_version()
            for i in range(3):
                time.sleep(0.6)  # idle: the server ends the session
                assert db.register_downlink(_downlink(f"25120100{i}", time.time()))
                assert len(db.downlinks()) == i + 1
            time.sleep(0.6)
            assert db.data_version() != v0
            assert held.check() is False  # ended too, and taken again
            assert db.backend.session(db.conn) >= 3
            from engine.store import presence

            presence.release(db.backend)
    finally:
        own_pg.configure("idle_session_timeout", None)
