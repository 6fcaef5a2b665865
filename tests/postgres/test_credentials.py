"""A state database password never shows (docs/design.md, "Credentials"), and libpq's own ways of
giving one work.

The throwaway cluster trusts local connections, so a password in the URL is accepted and
ignored: that is what lets these tests put a password everywhere a URL goes (the
environment, skydeck.toml, ``init --state``, ``db copy --to``) and then look for it in
everything an operator or another user can see: ``config``, error lines, ``init`` output,
logs/daemon.log, ``streams --json`` and the command lines of the processes the daemon starts
(what ``ps`` shows). Whether libpq picked a password up from ``PGPASSWORD``, ``~/.pgpass``
or a service file is read back from the connection (``PQpass``), which trust does not hide.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.dburl import MASK, StateURL, parse_state_url
from engine.core.errors import BadInput
from engine.core.workspace import Workspace, init_workspace
from engine.store import StateDB
from tests.conftest import engine_env, run_engine
from tests.pipeline.conftest import FAST, cli, make_delivery, set_config

SECRET = "Hunter2-Sekr1t"  # distinctive: found only where it leaked


def with_password(url: str, password: str = SECRET) -> str:
    """``postgresql://user@/db?...`` -> ``postgresql://user:PASSWORD@/db?...``."""
    head, sep, rest = url.partition("@")
    assert sep, url
    return f"{head}:{quote(password, safe='')}@{rest}"


@pytest.fixture
def secret_url(pg_url: str) -> str:
    return with_password(pg_url)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret_url: str) -> Workspace:
    """A workspace whose state URL (with a password) comes from the environment."""
    monkeypatch.setenv("SKYDECK_STATE_URL", secret_url)
    return set_config(init_workspace(tmp_path / "ws"), "[disk]\nreserve_bytes = 0\n")


def _clean(*texts: str) -> None:
    for t in texts:
        assert SECRET not in t and quote(SECRET, safe="") not in t, t


def test_config_shows_the_url_without_its_password(ws, capsys):
    for args in (("config",), ("config", "--json")):
        rc, out, err = cli(ws, *args, capsys=capsys)
        assert rc == 0, err
        _clean(out, err)
        assert f"skydeck:{MASK}@" in out


def test_password_in_the_file_needs_mode_0600(tmp_path, secret_url, monkeypatch, capsys):
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    w = init_workspace(tmp_path / "ws")
    cfg = w.root / "skydeck.toml"
    cfg.write_text(cfg.read_text().replace('url = ""', f"url = {json.dumps(secret_url)}"))
    cfg.chmod(0o644)
    rc, out, err = cli(w, "config", capsys=capsys)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert (
        "[state] url holds a password but the file is readable by group or others "
        "(mode 0644); chmod 600 it" in err
    )
    _clean(err)
    cfg.chmod(0o640)
    assert cli(w, "config", capsys=capsys)[0] == 2
    cfg.chmod(0o600)  # the owner only: accepted, still hidden
    rc, out, err = cli(w, "config", capsys=capsys)
    assert rc == 0 and f"skydeck:{MASK}@" in out
    _clean(out, err)


def test_init_with_a_password_url(tmp_path, secret_url, monkeypatch, capsys):
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    root = tmp_path / "ws"
    rc, out, err = cli(None, "-w", str(root), "init", "--state", secret_url, capsys=capsys)
    assert rc == 0, err
    _clean(out, err)
    assert f"skydeck:{MASK}@" in out
    cfg = root / "skydeck.toml"
    assert cfg.stat().st_mode & 0o777 == 0o600  # the file that holds it: owner only
    rc, out, err = cli(
        None, "-w", str(root / "second"), "init", "--json", "--state", secret_url, capsys=capsys
    )
    assert rc == 0
    _clean(out, err)
    assert json.loads(out)["state"].startswith(f"postgresql://skydeck:{MASK}@")


@pytest.mark.parametrize("case", ["unknown database", "server down", "unknown role"])
def test_error_lines_never_carry_the_password(tmp_path, pg_url, monkeypatch, capsys, case):
    """A connection that fails (under trust a wrong password cannot fail: an unknown role
    is the refusal the server gives instead) is one line naming the URL, redacted."""
    url = {
        "unknown database": pg_url.replace("/skydeck_t_", "/nosuch_"),
        "server down": re.sub(r"port=\d+", "port=1", pg_url),  # no server there
        "unknown role": pg_url.replace("skydeck@", "nobody@"),
    }[case]
    url = with_password(url)
    # a server that is not there is a wait ([state] wait_s), then exit 75 (try again later);
    # a server that refuses the URL is bad input (exit 2)
    rc_want, says = (
        (75, "state database unreachable")
        if case == "server down"
        else (2, "cannot connect to the state database")
    )
    monkeypatch.setenv("SKYDECK_STATE_URL", url)
    w = init_workspace(tmp_path / "ws")
    cfg = w.root / "skydeck.toml"
    cfg.write_text(cfg.read_text().replace("wait_s = 30.0", "wait_s = 0.5"))
    for args in (("streams", "--json"), ("downlinks",)):
        rc, out, err = cli(w, *args, capsys=capsys)
        assert rc == rc_want and out == "" and len(err.splitlines()) == 1, err
        assert says in err and MASK in err
        _clean(err)
    monkeypatch.delenv("SKYDECK_STATE_URL")
    if case != "server down":  # (init waits the default 30 s for a server that is down)
        rc, out, err = cli(None, "-w", str(tmp_path / "new"), "init", "--state", url, capsys=capsys)
        assert rc == 2 and len(err.splitlines()) == 1
        _clean(out, err)
        assert not (tmp_path / "new" / "skydeck.toml").exists()  # nothing left behind
    rc, out, err = cli(w, "db", "copy", "--to", url, capsys=capsys)
    assert rc == 2 and len(err.splitlines()) == 1  # (no SQLite file to copy from)
    _clean(out, err)


def _cmdlines_below(root: str, stop: threading.Event, seen: dict[int, str]) -> None:
    """Every process whose command line names the workspace, sampled until ``stop``."""
    me = os.getpid()
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            text = raw.replace(b"\0", b" ").decode("utf-8", "replace")
            if root in text:
                seen[int(pid)] = text
        stop.wait(0.005)


def test_daemon_log_streams_json_and_command_lines(ws, secret_url):
    """``watch --once`` with a password URL: its log, the listings and the command lines of
    every engine process it starts (read from /proc while they run) never hold it."""
    make_delivery(ws, "251125001", **FAST)
    seen: dict[int, str] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_cmdlines_below, args=(str(ws.root), stop, seen))
    sampler.start()
    try:
        res = run_engine(
            "-w", ws.root, "watch", "--once", env=engine_env(SKYDECK_STATE_URL=secret_url)
        )
    finally:
        stop.set()
        sampler.join()
    assert res.returncode == 0, res.stderr
    _clean(res.stdout, res.stderr)
    jobs = [c for c in seen.values() if "engine.pipeline.jobs" in c or " watch " in c]
    assert any("engine.pipeline.jobs" in c for c in jobs), seen  # the sampler saw the jobs
    _clean(*seen.values())
    log = (ws.logs / "daemon.log").read_text()
    assert "stream_success" in log
    _clean(log)
    for area in (ws.logs,):  # job logs too
        for p in area.rglob("*"):
            if p.is_file():
                _clean(p.read_text(errors="replace"))
    streams = run_engine(
        "-w", ws.root, "streams", "--json", env=engine_env(SKYDECK_STATE_URL=secret_url)
    )
    assert streams.returncode == 0 and json.loads(streams.stdout)
    _clean(streams.stdout, streams.stderr)


def _password_used(url: str) -> str | None:
    """The password libpq holds for a connection to ``url`` (PQpass)."""
    with StateDB(parse_state_url(url, None)) as db:
        return db.conn.raw.info.password or None


def test_pgpassword_is_honoured(pg_url, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-the-environment")
    assert _password_used(pg_url) == "from-the-environment"


def test_pgpass_file_is_honoured(pg_url, pg_server, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    db = parse_state_url(pg_url, None).database
    pgpass = tmp_path / ".pgpass"
    pgpass.write_text(f"*:{pg_server['SKYDECK_PG_PORT']}:{db}:skydeck:from-pgpass\n")
    pgpass.chmod(0o600)
    assert _password_used(pg_url) == "from-pgpass"


def test_service_file_is_honoured(pg_url, pg_server, tmp_path, monkeypatch):
    """``service=`` with ``PGSERVICEFILE``: the URL names no host, port, user or database,
    so connecting at all proves the service file was read."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    db = parse_state_url(pg_url, None).database
    svc = tmp_path / "pg_service.conf"
    svc.write_text(
        f"[skydeck_test]\nhost={pg_server['SKYDECK_PG_HOST']}\n"
        f"port={pg_server['SKYDECK_PG_PORT']}\nuser=skydeck\ndbname={db}\n"
        "password=from-the-service-file\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(svc))
    url = "postgresql:///?service=skydeck_test"
    assert _password_used(url) == "from-the-service-file"
    with StateDB(parse_state_url(url, None)) as state:
        assert state.q("SELECT current_database()")[0][0] == db


def test_tls_options_in_the_url_reach_libpq(pg_url):
    """``sslmode`` in the URL goes to libpq as given: a value libpq does not know is its
    error, in one redacted line; ``require`` connects (libpq uses no TLS on a Unix socket,
    which is where the test cluster listens)."""
    with StateDB(parse_state_url(pg_url + "&sslmode=require", None)) as db:
        assert db.q("SELECT 1")[0][0] == 1
    with pytest.raises(BadInput) as err:
        StateDB(parse_state_url(with_password(pg_url) + "&sslmode=bogus", None))
    assert 'invalid sslmode value: "bogus"' in str(err.value) and MASK in str(err.value)
    _clean(str(err.value))


# ------------------------------------------------------------------ parse_state_url


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_state_url_is_total(text):
    try:
        url = parse_state_url(text, "$SKYDECK_STATE_URL")
    except BadInput as err:
        assert "\n" not in str(err) and str(err).startswith("$SKYDECK_STATE_URL: ")
        return
    assert isinstance(url, StateURL) and url.conninfo == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300).map(lambda s: "postgresql://" + s))
def test_parse_state_url_is_total_after_the_scheme(text):
    try:
        url = parse_state_url(text, None)
    except BadInput:
        return
    if url.password:
        assert url.scrub(url.password) == MASK


_NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
_PASSWORD = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24
).map(lambda s: "P!" + s)


@settings(max_examples=300, deadline=None)
@given(
    user=_NAME,
    password=_PASSWORD,
    db=_NAME,
    in_query=st.booleans(),
    host=st.sampled_from(["", "db.example.org", "db.example.org:6543", "[::1]:5432"]),
)
def test_redacted_never_holds_the_password(user, password, db, in_query, host):
    if in_query:
        text = (
            f"postgresql://{user}@{host}/{db}?sslmode=require&password={quote(password, safe='')}"
        )
    else:
        text = f"postgresql://{user}:{quote(password, safe='')}@{host}/{db}?sslmode=require"
    url = parse_state_url(text, None)
    assert url.password == password and url.database == db
    for form in (password, quote(password, safe="")):
        assert form not in url.redacted and form not in str(url)
        assert form not in url.scrub(f"FATAL: password authentication failed ({form}) at {text}")
    assert MASK in url.redacted and user in url.redacted
