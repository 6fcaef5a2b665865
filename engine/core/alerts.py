"""Alert hooks: ``[alerts] command`` run once per alert, one JSON object on its stdin.

Why a module of its own, in core: an alert is seen by whichever process meets the event (the
daemon, ``watch --once``, ``run``, ``halt``, the console's halt action), so the hook runner
cannot live in the daemon, and it needs nothing above core. What it keeps:

- Never blocking the caller: ``send`` only queues (a bounded queue; full: the alert is
  dropped, said once); one background worker thread runs the hooks one at a time, each with
  ``[alerts] timeout_s`` (then its process group is killed). A hook that fails, hangs or
  cannot start is one ``alert_failed`` log line, never an exception in the caller.
- No shell: the command is split once with ``shlex.split`` and run as an argument vector;
  what the alert carries (names from deliveries, notes) goes only to the hook's stdin.
- Deduplicated: the same (event, dlid, process, reason) is sent once per ``dedup_s``,
  across processes and restarts: a marker file per alert key under ``<logs>/alerts/``,
  created with ``O_EXCL`` (so a daemon and a ``run`` that both see a failure send it once).
- Rate-limited: at most ``max_per_minute`` alerts a minute per process; the rest are
  dropped with one ``alert_dropped`` line per minute.

``Alerter.observe(event_dict)`` turns the engine's own event lines (``stream_failed``,
``rejected``, ``takeover``, ``held`` for a disk pause) into alerts, so a role that emits
events needs no second call. A short-lived command calls ``close()`` (bounded by the
timeout) so that its alerts are sent before it exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.core.log import emit_event, logger
from engine.core.workspace import Workspace

ALERT_EVENTS = (
    "stream_failed",
    "stream_stuck",
    "delivery_rejected",
    "disk_paused",
    "takeover",
    "halt_set",
)
QUEUE_MAX = 64  # alerts waiting for the worker; more are dropped
_STOP = object()
ENDED = "killed: its sender ended first"  # a hook still running when its process ends


class Alerter:
    """Runs ``command`` (argument vector) for each new alert on a worker thread."""

    def __init__(
        self,
        command: str,
        *,
        timeout_s: float = 10.0,
        dedup_s: float = 86400.0,
        max_per_minute: int = 20,
        marks: Path | None = None,
        workspace: str = "",
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``report``: where its own lines go (default: the ``skydeck.alerts`` logger)."""
        self.report = report
        self.argv = shlex.split(command) if command.strip() else []
        self.timeout_s, self.dedup_s = timeout_s, dedup_s
        self.max_per_minute = max_per_minute
        self.marks, self.workspace = marks, workspace
        self.host = socket.gethostname()
        self._q: queue.Queue[Any] = queue.Queue(QUEUE_MAX)
        self._seen: dict[str, float] = {}  # alert key -> when sent (this process)
        self._window: list[float] = []  # send times in the last minute
        self._dropped = 0
        self._dropped_said = 0.0
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._failed_instance: dict[str, tuple[str, str]] = {}  # dlid -> (process, why)
        self.sent: list[dict[str, Any]] = []  # what the worker ran the hook for (tests)
        self._proc: subprocess.Popen[bytes] | None = None  # the hook running now
        self._ending = False  # close() gave up waiting: a hook killed now is not its fault

    @property
    def enabled(self) -> bool:
        return bool(self.argv)

    # ------------------------------------------------------------------ sending

    def send(
        self,
        event: str,
        dlid: str | None = None,
        process: str | None = None,
        reason: str = "",
        **detail: Any,
    ) -> bool:
        """Queue one alert; True when it was queued (False: off, a duplicate, over the
        rate, or the queue full). Never blocks, never raises."""
        if not self.enabled:
            return False
        try:
            return self._send(event, dlid, process, reason, detail)
        except Exception as err:  # an alert must never cost its caller anything
            self._log("alert_failed", alert=event, dlid=dlid, error=f"{type(err).__name__}: {err}")
            return False

    def _send(
        self, event: str, dlid: str | None, process: str | None, reason: str, detail: dict
    ) -> bool:
        reason = " ".join(str(reason).split())[:500]
        key = hashlib.sha256(
            json.dumps([event, dlid, process, reason]).encode("utf-8", "replace")
        ).hexdigest()[:32]
        now = time.time()
        with self._lock:
            if self.dedup_s > 0 and now - self._seen.get(key, -1e18) < self.dedup_s:
                return False
            self._window = [t for t in self._window if now - t < 60.0]
            if len(self._window) >= self.max_per_minute:
                self._drop(now, event, dlid, "rate limit [alerts] max_per_minute")
                return False
            if not self._mark(key, now):
                self._seen[key] = now
                return False
            self._window.append(now)
            self._seen[key] = now
        doc = {
            "event": event,
            "dlid": dlid,
            "process": process,
            "reason": reason,
            "host": self.host,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "t": round(now, 3),
            "workspace": self.workspace,
            "detail": detail,
        }
        try:
            self._q.put_nowait(doc)
        except queue.Full:
            with self._lock:
                self._drop(now, event, dlid, "queue full (hooks slower than alerts)")
            return False
        self._start()
        return True

    def _mark(self, key: str, now: float) -> bool:
        """Claim the alert key across processes: True when this process sends it."""
        if self.marks is None or self.dedup_s <= 0:
            return True
        p = self.marks / key
        try:
            self.marks.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime >= self.dedup_s:
                    p.unlink()  # an old one: this alert may be sent again
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        except OSError:
            return True  # no marker possible: send (this process still deduplicates)
        os.close(fd)
        return True

    def _drop(self, now: float, event: str, dlid: str | None, why: str) -> None:
        self._dropped += 1
        if now - self._dropped_said >= 60.0:
            self._dropped_said = now
            self._log("alert_dropped", alert=event, dlid=dlid, why=why, dropped=self._dropped)

    def _start(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="alerts", daemon=True)
                self._worker.start()

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        while True:
            doc = self._q.get()
            try:
                if doc is _STOP:
                    return
                self._hook(doc)
            finally:
                self._q.task_done()

    def _hook(self, doc: dict[str, Any]) -> None:
        data = (json.dumps(doc, default=str) + "\n").encode()
        what = {"alert": doc["event"], "dlid": doc["dlid"], "command": self.argv[0]}
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its children die with it on a timeout
                close_fds=True,
            )
        except OSError as err:
            self._log("alert_failed", **what, error=f"cannot start: {err.strerror or err}")
            return
        self._proc = proc
        try:
            if self._wait(proc, data, what):
                self.sent.append(doc)
        finally:
            self._proc = None

    def _wait(self, proc: subprocess.Popen[bytes], data: bytes, what: dict[str, Any]) -> bool:
        """Feed the hook and wait for it (killed after the timeout); True when it succeeded."""
        try:
            _, err_out = proc.communicate(data, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.communicate(timeout=5)
            self._log("alert_failed", **what, error=f"timed out after {self.timeout_s:g} s")
            return False
        except OSError as err:  # its stdin closed early: it did not read the alert
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self._log("alert_failed", **what, error=f"{err.strerror or err}")
            return False
        if proc.returncode != 0 and self._ending:  # killed by close(): its sender ends
            self._log("alert_failed", **what, error=ENDED)
            return False
        if proc.returncode != 0:
            tail = (err_out or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
            self._log(
                "alert_failed",
                **what,
                error=f"exit {proc.returncode}" + (f": {tail[0][:200]}" if tail else ""),
            )
            return False
        return True

    def _log(self, _name: str, **kw: Any) -> None:
        ev = {"t": round(time.time(), 3), "event": _name, **kw}
        with contextlib.suppress(Exception):
            if self.report is not None:
                self.report(ev)
            else:
                emit_event(logger("alerts"), ev)

    def close(self, wait_s: float | None = None) -> None:
        """Let the queued alerts be sent (at most ``wait_s``, default the hook timeout plus
        a second per queued alert), then stop the worker."""
        w = self._worker
        if w is None or not w.is_alive():
            return
        budget = self.timeout_s + 1.0 if wait_s is None else wait_s
        with contextlib.suppress(queue.Full):
            self._q.put(_STOP, timeout=budget)
        w.join(budget)
        proc = self._proc
        if w.is_alive() and proc is not None:  # out of time: no hook outlives its sender
            self._ending = True
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        left = sum(1 for doc in list(self._q.queue) if doc is not _STOP)
        if w.is_alive() and left:
            self._log("alert_dropped", why="the process ends; hooks too slow", dropped=left)

    # ------------------------------------------------------------------ engine events

    def observe(self, ev: Mapping[str, Any]) -> None:
        """Turn one of the engine's event lines into an alert when it is one."""
        if not self.enabled:
            return
        name = ev.get("event")
        dlid = ev.get("dlid")
        if name == "failed" and dlid:  # an instance; the stream's verdict comes later
            # the instance's note: "exit code 2: <the job's last error line>" (its log's)
            why = ev.get("why") or ev.get("note") or ev.get("reason") or ""
            if not why and ev.get("exit_code") is not None:
                why = f"exit code {ev.get('exit_code')}"
            self._failed_instance[str(dlid)] = (str(ev.get("process")), str(why))
        elif name == "stream_failed":
            process, why = self._failed_instance.pop(str(dlid), (None, ""))
            note = str(ev.get("note") or "")
            self.send(
                "stream_failed",
                dlid,
                process,
                why or note or "failed",
                stream=ev.get("stream"),
                note=note,
            )
        elif name == "rejected":
            self.send(
                "delivery_rejected",
                dlid,
                None,
                str(ev.get("reason", "")),
                delivery=ev.get("delivery"),
                file=ev.get("file"),
                moved_to=ev.get("moved_to"),
            )
        elif name == "takeover":
            detail = {k: v for k, v in ev.items() if k not in ("t", "event", "dlid")}
            self.send(
                "takeover",
                dlid,
                ev.get("process"),
                str(ev.get("why", "")),
                **detail,
            )
        elif name == "held" and str(ev.get("why", "")).startswith("launching paused"):
            self.send("disk_paused", None, None, str(ev.get("why")))


def alerter_for(ws: Workspace) -> Alerter:
    """The alerter of a workspace's ``[alerts]`` settings (off when ``command`` is "");
    its deduplication markers live in ``<logs>/alerts/``."""
    a = ws.settings.alerts
    return Alerter(
        a.command,
        timeout_s=a.timeout_s,
        dedup_s=a.dedup_s,
        max_per_minute=a.max_per_minute,
        marks=ws.path("logs") / "alerts",
        workspace=str(ws.root),
    )
