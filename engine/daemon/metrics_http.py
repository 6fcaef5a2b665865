"""The daemon's ``/metrics`` endpoint: one cached snapshot, bounded clients.

Why not prometheus-client's ``start_http_server``: it renders the families on every request
(a state database connection and a few aggregate queries per scrape, so anyone who can reach
the port can make the daemon query its database as fast as they can send requests), starts
a thread per connection with no limit and no client timeout (500 idle connections are 500
threads and 500 file descriptors held for ever). Here:

- every request is answered from the snapshot the daemon's exporter rendered at its last
  tick (``[metrics] interval_s``); a request opens no database connection;
- at most ``max_clients`` connections are served at once; when all are taken, the oldest
  connection that has not finished sending its request (an idle one) is closed to make
  room, so a flood of idle connections neither exhausts descriptors nor locks out a scrape;
- a client has ``client_timeout_s`` to send its request and read the answer;
- it binds 127.0.0.1 unless told otherwise (``watch --metrics-bind``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_CLIENTS = 32
CLIENT_TIMEOUT_S = 5.0


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.0"  # one request per connection: the slot is freed after it

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.client_timeout_s)  # read and write deadline

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (TimeoutError, OSError):
            self.close_connection = True

    def parse_request(self) -> bool:
        self.server.busy(self.request)  # its request line arrived: no longer an idle one
        return super().parse_request()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics")
            return
        body = self.server.snapshot()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # a scrape is not an event


class MetricsServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a bounded number of clients and a client deadline,
    serving ``snapshot()``'s bytes."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        addr: tuple[str, int],
        snapshot: Callable[[], bytes],
        *,
        max_clients: int = MAX_CLIENTS,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
    ) -> None:
        self.snapshot = snapshot
        self.max_clients = max_clients
        self.client_timeout_s = client_timeout_s
        self._clients: dict[socket.socket, tuple[float, bool]] = {}  # -> (accepted, busy)
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def busy(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._clients:
                self._clients[sock] = (self._clients[sock][0], True)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Take a slot (closing the oldest idle client when all are taken) or refuse."""
        deadline = time.monotonic() + 1.0
        with self._free:
            while len(self._clients) >= self.max_clients:
                idle = [(t, s) for s, (t, b) in self._clients.items() if not b]
                if idle:
                    _, oldest = min(idle, key=lambda x: x[0])
                    with contextlib.suppress(OSError):
                        oldest.shutdown(socket.SHUT_RDWR)  # its thread ends, its slot frees
                    self._clients[oldest] = (self._clients[oldest][0], True)  # not twice
                left = deadline - time.monotonic()
                if left <= 0:
                    self.shutdown_request(request)  # every slot busy answering: refused
                    return
                self._free.wait(min(left, 0.05))
            self._clients[request] = (time.monotonic(), False)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: Any) -> None:
        with self._free:
            self._clients.pop(request, None)
            self._free.notify_all()


def serve(
    snapshot: Callable[[], bytes],
    port: int,
    addr: str = "127.0.0.1",
    *,
    max_clients: int = MAX_CLIENTS,
    client_timeout_s: float = CLIENT_TIMEOUT_S,
) -> MetricsServer:
    """Start serving on a thread of its own; OSError when the address cannot be bound."""
    srv = MetricsServer(
        (addr, port), snapshot, max_clients=max_clients, client_timeout_s=client_timeout_s
    )
    threading.Thread(target=srv.serve_forever, name="metrics-http", daemon=True).start()
    return srv
