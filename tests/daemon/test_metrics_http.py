"""The daemon's /metrics endpoint (engine/daemon/metrics_http.py): loopback by default, one
cached snapshot per tick (no state database connection per scrape), and 500 idle
connections neither exhaust descriptors nor lock out a scrape."""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest

from engine.daemon.exporter import Exporter
from engine.daemon.metrics_http import serve


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_500_idle_connections_and_scrapes_still_answered() -> None:
    calls = []

    def snapshot() -> bytes:
        calls.append(1)
        return b"skydeck_up 1\n"

    srv = serve(snapshot, 0, max_clients=16, client_timeout_s=30.0)
    port = srv.server_address[1]
    assert srv.server_address[0] == "127.0.0.1"
    before = _fds()
    idle = []
    try:
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metr")  # half a request line, then nothing: a slow client
            idle.append(s)
        time.sleep(0.5)
        # the server holds at most max_clients of them; the rest were closed
        assert srv.clients <= 16
        t0 = time.monotonic()
        for _ in range(5):
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            assert body == b"skydeck_up 1\n"
        assert time.monotonic() - t0 < 10
        assert len(calls) == 5
        # the server side's descriptors are bounded (ours: the 500 client sockets)
        assert _fds() - before <= 500 + 16 + 8
        r = urllib.request.Request(f"http://127.0.0.1:{port}/other")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(r, timeout=10)
        assert e.value.code == 404
    finally:
        for s in idle:
            s.close()
        srv.shutdown()
        srv.server_close()


def test_a_client_that_never_finishes_is_cut_after_its_deadline() -> None:
    srv = serve(lambda: b"x 1\n", 0, max_clients=4, client_timeout_s=0.5)
    port = srv.server_address[1]
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.0\r\n")  # headers never end
        time.sleep(0.2)
        assert srv.clients == 1
        t0 = time.monotonic()
        while srv.clients and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert srv.clients == 0 and time.monotonic() - t0 < 3
        s.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_scrapes_are_served_from_the_ticks_snapshot(ws, monkeypatch) -> None:
    from engine.daemon import exporter

    ex = Exporter(ws, beat=False)
    port = ex.serve(0)
    try:
        ex.tick(force=True)
        first = ex.snapshot()

        def no_reads(*a: object, **k: object) -> None:
            raise AssertionError("a scrape read the state")

        monkeypatch.setattr(exporter, "read_facts", no_reads)
        for _ in range(20):  # no scrape reads the state database: the same bytes
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            assert body == first
        assert b"skydeck_instances_failed" in body and b"skydeck_stream_alarms" in body
    finally:
        ex.close()


def test_watch_binds_loopback_unless_told() -> None:
    from engine.cli.main import build_parser

    args = build_parser().parse_args(["watch", "--metrics-port", "0"])
    assert args.metrics_addr == "127.0.0.1"
    args = build_parser().parse_args(["watch", "--metrics-port", "0", "--metrics-bind", "0.0.0.0"])
    assert args.metrics_addr == "0.0.0.0"
