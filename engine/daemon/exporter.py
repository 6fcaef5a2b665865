"""The daemon's exporter: the pipeline as Prometheus sees it, and the daemon's heartbeat.

Why a module of the daemon: an operator running the daemon for years watches it from
outside (Prometheus), not from the console, and it is the daemon that writes what
Prometheus reads. This module reads the same state the console does (the state database
through ``engine.store``, the workspace's files) and turns it into ``skydeck_*`` metric
families (``SkydeckCollector``, a prometheus-client custom collector registered in a
registry of its own, so nothing touches the process-wide default registry), rendered in the
text exposition format to a node_exporter textfile written atomically and served over HTTP
by ``watch --metrics-port``. ``Exporter`` is what the daemon's loop ticks: the heartbeat
(``engine.core.heartbeat``), the textfile, the usage scan on a thread of its own. The
health verdict that reads the heartbeats is ``engine.api.health``.

The state database may be unreachable (a PostgreSQL server restarting): nothing here waits
for it. The families then lack what only the database knows and ``skydeck_state_up`` is 0.

Bytes per area come from the usage scan (``engine.pipeline.usage.usage_report``), which
walks every file of the workspace: the daemon refreshes it every ``[metrics]
usage_interval_s`` (default 5 minutes) on a thread of its own, never in its main loop; the
other families are read at every write (a few aggregate queries).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from engine import __version__
from engine.core.atomic import replace_snapshot
from engine.core.diskspace import existing_parent
from engine.core.errors import Busy, StateUnavailable
from engine.core.heartbeat import Heartbeat, heartbeat_path, read_heartbeats, write_heartbeat
from engine.core.owner import Owner
from engine.core.thresholds import BEATS_PER_HEALTH, DEFAULT_STUCK_AFTER_S
from engine.core.workspace import Workspace
from engine.pipeline.alarms import FAILED, STUCK, stream_alarms
from engine.pipeline.halts import HALT_FLAGS, is_set_globally
from engine.pipeline.usage import AREA_PATHS, launch_paused, usage_report
from engine.store import StateDB
from engine.store.outage import Outage, Patience
from engine.store.records import PI_STATUSES, STREAM_STATUSES

QUEUED_STATES = ("WAITING", "READY", "QUEUED")  # instances not yet handed to a launcher's job
DELIVERY_STATES = ("CLAIMED", "PENDING", "ACCEPTED", "REJECTED")
LATENCY_RECENT = 100  # registrations the latency summary covers
LATENCY_QUANTILES = (0.5, 0.9, 1.0)
FREE_AREAS = ("downlinks", "stage")  # the output areas the disk reserve guards


# ---------------------------------------------------------------------- facts


@dataclass
class AreaUsage:
    """The last usage scan: bytes and files per area, when it ended and how long it took."""

    bytes: dict[str, int]
    files: dict[str, int]
    scanned_at: float
    duration_s: float


@dataclass
class Facts:
    """Everything the metric families show, read at one moment."""

    t: float
    streams: dict[str, int]
    instances: dict[tuple[str, str], int]
    deliveries: dict[str, int]
    oldest_unsettled_seen: float | None
    latencies: list[float]
    free: dict[str, tuple[int, int]]  # area -> (free, total) bytes of its file system
    reserve: int
    reserve_paused: bool
    global_halts: list[str]
    heartbeats: list[Heartbeat]
    usage: AreaUsage | None = None
    state_up: bool = True  # the state database answered this read
    failed_instances: dict[str, int] = field(default_factory=dict)  # by process, ever
    failed_streams: int = 0  # stream_failed events (until retention trims them)
    alarms: dict[str, int] = field(default_factory=dict)  # open alarms by kind


def read_facts(
    ws: Workspace,
    usage: AreaUsage | None = None,
    now: float | None = None,
    outage: Outage | None = None,
) -> Facts:
    """The facts of ``ws`` now. The state database is asked once, without waiting; when it
    cannot be reached (or ``outage`` says the daemon cannot reach it) its parts are empty
    and ``state_up`` is False (and ``outage`` hears of it)."""
    now = time.time() if now is None else now
    streams: dict[str, int] = {}
    instances: dict[tuple[str, str], int] = {}
    dels: dict[str, int] = {}
    oldest: float | None = None
    lat: list[float] = []
    failed_pi: dict[str, int] = {}
    failed_st = 0
    open_alarms = dict.fromkeys((FAILED, STUCK), 0)
    up = outage is None or outage.reachable
    if up:
        try:
            with StateDB(ws.state, patience=Patience(0.0)) as db:
                streams = db.stream_status_counts()
                instances = db.instance_status_counts()
                dels = db.delivery_status_counts()
                oldest = db.oldest_unsettled_delivery()
                lat = db.recent_registration_latencies(LATENCY_RECENT)
                failed_pi, failed_st = db.failure_counts()
                max_age = BEATS_PER_HEALTH * ws.settings.metrics.interval_s
                for a in stream_alarms(
                    ws, db, max_age=max_age, stuck_after=DEFAULT_STUCK_AFTER_S, now=now
                ):
                    open_alarms[a.kind] += int(a.open)
        except StateUnavailable as err:
            up = False
            if outage is not None:
                outage.down(err.message)
    free: dict[str, tuple[int, int]] = {}
    for area in FREE_AREAS:
        with contextlib.suppress(OSError):
            du = shutil.disk_usage(existing_parent(ws.path(area)))
            free[area] = (du.free, du.total)
    paused = False
    with contextlib.suppress(OSError):
        paused = launch_paused(ws)[0]
    return Facts(
        now,
        streams,
        instances,
        dels,
        oldest,
        lat,
        free,
        ws.reserve_bytes,
        paused,
        [f for f in HALT_FLAGS if is_set_globally(ws, f)],
        read_heartbeats(ws),
        usage,
        up,
        failed_pi,
        failed_st,
        open_alarms,
    )


def scan_usage(ws: Workspace) -> AreaUsage:
    """The usage scan (slow on big trees: see the module docstring)."""
    t0 = time.monotonic()
    rep = usage_report(ws)
    return AreaUsage(
        {a: u.bytes for a, u in rep.areas.items()},
        {a: u.files for a, u in rep.areas.items()},
        time.time(),
        time.monotonic() - t0,
    )


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted, non-empty list: the value at rank ceil(q n)."""
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values) - 1e-9) - 1))
    return sorted_values[i]


def families(f: Facts) -> Iterator[Metric]:
    """The ``skydeck_*`` metric families of ``f``. Labelled gauges list every known status
    (0 included), so a series does not vanish when its count drops to zero."""
    info = InfoMetricFamily("skydeck", "skydeck release", value={"version": __version__})
    yield info

    yield GaugeMetricFamily(
        "skydeck_state_up",
        "1 when the state database answered this "
        "read (0: unreachable; the families read from it are empty)",
        value=int(f.state_up),
    )

    g = GaugeMetricFamily("skydeck_streams", "Latest streams by status", labels=["status"])
    for st in sorted(set(STREAM_STATUSES) | set(f.streams)):
        g.add_metric([st], f.streams.get(st, 0))
    yield g

    g = GaugeMetricFamily(
        "skydeck_process_instances",
        "Latest process instances of latest streams by process and status",
        labels=["process", "status"],
    )
    for proc in sorted({p for p, _ in f.instances}):
        for st in sorted(set(PI_STATUSES) | {s for p, s in f.instances if p == proc}):
            g.add_metric([proc, st], f.instances.get((proc, st), 0))
    yield g

    c = CounterMetricFamily(
        "skydeck_instances_failed",
        "Process instances that ended FAILED, every execution (a failure a retry or a "
        "rollback fixed still counts), by process",
        labels=["process"],
    )
    for proc, n in sorted(f.failed_instances.items()):
        c.add_metric([proc], n)
    yield c
    yield CounterMetricFamily(
        "skydeck_streams_failed",
        "Streams that ended FAILED (stream_failed events; [retention] events_days trims them)",
        value=f.failed_streams,
    )
    g = GaugeMetricFamily(
        "skydeck_stream_alarms",
        "Latest streams FAILED or STUCK that no operator acted on (rollback, re-run, ack)",
        labels=["kind"],
    )
    for kind, n in sorted(f.alarms.items()):
        g.add_metric([kind], n)
    yield g

    g = GaugeMetricFamily(
        "skydeck_queue_depth",
        "Process instances not yet running (WAITING, READY, QUEUED)",
        labels=["status"],
    )
    for st in QUEUED_STATES:
        g.add_metric([st], sum(n for (_, s), n in f.instances.items() if s == st))
    yield g

    g = GaugeMetricFamily("skydeck_deliveries", "Deliveries seen by status", labels=["status"])
    for st in sorted(set(DELIVERY_STATES) | set(f.deliveries)):
        g.add_metric([st], f.deliveries.get(st, 0))
    yield g

    age = 0.0 if f.oldest_unsettled_seen is None else max(0.0, f.t - f.oldest_unsettled_seen)
    yield GaugeMetricFamily(
        "skydeck_oldest_pending_delivery_age_seconds",
        "Age of the oldest delivery seen but not yet registered or rejected (0: none)",
        value=age,
    )

    s = Metric(
        "skydeck_registration_latency_seconds",
        f"Delivery complete to downlink registered, the {LATENCY_RECENT} latest registrations",
        "summary",
    )
    lat = sorted(f.latencies)
    if lat:
        for q in LATENCY_QUANTILES:
            s.add_sample(s.name, {"quantile": repr(q)}, _quantile(lat, q))
    s.add_sample(s.name + "_count", {}, len(lat))
    s.add_sample(s.name + "_sum", {}, sum(lat))
    yield s

    if f.usage is not None:
        g = GaugeMetricFamily(
            "skydeck_area_bytes", "Disk usage per workspace area (du)", labels=["area"]
        )
        h = GaugeMetricFamily("skydeck_area_files", "Files per workspace area", labels=["area"])
        for area in AREA_PATHS:
            g.add_metric([area], f.usage.bytes.get(area, 0))
            h.add_metric([area], f.usage.files.get(area, 0))
        yield g
        yield h
        yield GaugeMetricFamily(
            "skydeck_area_scan_timestamp_seconds",
            "When the usage scan behind skydeck_area_bytes ended",
            value=f.usage.scanned_at,
        )
        yield GaugeMetricFamily(
            "skydeck_area_scan_duration_seconds",
            "How long that usage scan took",
            value=f.usage.duration_s,
        )

    g = GaugeMetricFamily(
        "skydeck_disk_free_bytes",
        "Free bytes on the file system of an output area",
        labels=["area"],
    )
    t = GaugeMetricFamily(
        "skydeck_disk_total_bytes", "Size of the file system of an output area", labels=["area"]
    )
    for area, (free, total) in f.free.items():
        g.add_metric([area], free)
        t.add_metric([area], total)
    yield g
    yield t
    yield GaugeMetricFamily(
        "skydeck_disk_reserve_bytes",
        "Free space work must leave ([disk] reserve_bytes)",
        value=f.reserve,
    )
    yield GaugeMetricFamily(
        "skydeck_disk_reserve_paused",
        "1 while launching pauses: free space under the reserve",
        value=int(f.reserve_paused),
    )

    g = GaugeMetricFamily("skydeck_halt_flag", "1 while a global halt flag is set", labels=["flag"])
    for flag in HALT_FLAGS:
        g.add_metric([flag], int(flag in f.global_halts))
    yield g

    alive = [hb for hb in f.heartbeats if not hb.dead()[0]]
    yield GaugeMetricFamily(
        "skydeck_daemons",
        "Daemons with a heartbeat file whose process is not provably dead",
        value=len(alive),
    )
    if f.heartbeats:
        yield GaugeMetricFamily(
            "skydeck_daemon_heartbeat_timestamp_seconds",
            "The newest daemon heartbeat (its last loop)",
            value=f.heartbeats[0].t,
        )


class SkydeckCollector(Collector):
    """A prometheus-client collector reading a workspace at each collection. ``usage`` gives
    the latest usage scan (a callable, so a scrape sees the scan the daemon refreshed)."""

    def __init__(self, ws: Workspace, usage: Any = None, outage: Outage | None = None) -> None:
        self.ws = ws
        self.usage = usage or (lambda: None)
        self.outage = outage

    def collect(self) -> Iterable[Metric]:
        return list(families(read_facts(self.ws, self.usage(), outage=self.outage)))


def registry_for(collector: Collector) -> CollectorRegistry:
    """A registry of its own holding only ``collector`` (the process-wide default registry,
    with its process and platform collectors, is never touched)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def render(ws: Workspace, usage: AreaUsage | None = None, outage: Outage | None = None) -> bytes:
    """The text exposition of a workspace's metrics, once."""
    return generate_latest(registry_for(SkydeckCollector(ws, lambda: usage, outage)))


def textfile_path(ws: Workspace) -> Path | None:
    """``[metrics] textfile`` resolved against the workspace root; None when it is off."""
    rel = ws.settings.metrics.textfile
    if not rel:
        return None
    p = Path(rel).expanduser()
    return p if p.is_absolute() else ws.root / p


def write_textfile(
    ws: Workspace, path: Path, usage: AreaUsage | None = None, outage: Outage | None = None
) -> Path:
    """Render and replace ``path`` atomically (node_exporter reads only ``*.prom``: the
    dot-temporary beside it is never read)."""
    replace_snapshot(path, render(ws, usage, outage))
    return path


# ---------------------------------------------------------------------- the daemon's side


@dataclass
class Exporter:
    """What the daemon calls once per loop (``tick``): every ``interval_s`` it writes its
    heartbeat (unless ``beat`` is off, as for ``watch --once``) and the textfile; the usage
    scan runs on a thread of its own every ``usage_interval_s``. ``serve`` adds the HTTP
    endpoint. ``outage``: the daemon's view of the state database, which the heartbeat
    carries and which spares the textfile a read while the server is unreachable. Errors
    propagate to the caller (the daemon contains them as ``metrics``)."""

    ws: Workspace
    beat: bool = True
    outage: Outage | None = None
    owner: Owner = field(default_factory=Owner.me)
    _next: float = 0.0
    _usage: AreaUsage | None = None
    _usage_next: float = 0.0
    _scanner: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None
    _scan_error: str | None = None
    _snapshot: bytes | None = None  # the last rendering, which /metrics serves

    @property
    def interval_s(self) -> float:
        return self.ws.settings.metrics.interval_s

    def usage(self) -> AreaUsage | None:
        with self._lock:
            return self._usage

    def _scan(self) -> None:
        try:
            u = scan_usage(self.ws)
        except Exception as err:  # reported through the next tick, never kills the thread
            self._scan_error = f"usage scan: {type(err).__name__}: {err}"
            return
        with self._lock:
            self._usage = u

    def refresh_usage(self, wait: bool = False) -> None:
        """Start a usage scan unless one is running; ``wait``: run it here."""
        self._usage_next = time.monotonic() + self.ws.settings.metrics.usage_interval_s
        if wait:
            if self._scanner is not None:
                self._scanner.join()
            self._scan()
            return
        if self._scanner is None or not self._scanner.is_alive():
            self._scanner = threading.Thread(target=self._scan, name="usage-scan", daemon=True)
            self._scanner.start()

    def tick(self, force: bool = False) -> bool:
        """Beat and write when due (or ``force``); True when it did."""
        now = time.monotonic()
        if not force and now < self._next:
            return False
        self._next = now + self.interval_s
        if self.beat:
            write_heartbeat(
                self.ws,
                self.owner,
                self.interval_s,
                state=None if self.outage is None else self.outage.as_json(),
            )
        if self._server is not None or textfile_path(self.ws) is not None:
            if now >= self._usage_next:
                self.refresh_usage()
            err, self._scan_error = self._scan_error, None
            body = render(self.ws, self.usage(), self.outage)
            with self._lock:
                self._snapshot = body
            path = textfile_path(self.ws)
            if path is not None:
                replace_snapshot(path, body)
            if err:
                raise RuntimeError(err)
        return True

    def final(self) -> Path | None:
        """``watch --once``'s write at its end: the usage scanned here, then the textfile."""
        path = textfile_path(self.ws)
        if path is None:
            return None
        self.refresh_usage(wait=True)
        return write_textfile(self.ws, path, self.usage(), self.outage)

    def snapshot(self) -> bytes:
        """What ``/metrics`` serves: the last tick's rendering (rendered here only before
        the first tick), so a scrape costs no state database connection."""
        with self._lock:
            body = self._snapshot
        if body is None:
            body = render(self.ws, self.usage(), self.outage)
            with self._lock:
                self._snapshot = self._snapshot or body
        return body

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve the same families over HTTP (``/metrics``) on a thread, from the cached
        snapshot, with bounded clients (engine/daemon/metrics_http.py); returns the port
        (``port`` 0 picks a free one). Busy (exit 3) when the port cannot be bound."""
        from engine.daemon.metrics_http import serve

        try:
            server = serve(self.snapshot, port, addr)
        except OSError as err:
            raise Busy(
                f"--metrics-port {port}: cannot listen on {addr}: {err.strerror or err}"
            ) from None
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        """Stop serving and remove this daemon's heartbeat (it stopped: no longer alive)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.beat:
            with contextlib.suppress(OSError):
                heartbeat_path(self.ws, self.owner).unlink()
