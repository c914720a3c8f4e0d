"""Keeps applications running: each start is a run (``job_runner.run`` in a thread of
its own, outside the run workers' bound); one that ends while wanted running starts again
after a back-off that doubles (1 s up to 60 s, from 1 s again once a start has lasted a
minute), as a Kubernetes pod's CrashLoopBackOff does. A controller's restart finds each
application wanted running and starts it again at the same port."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from cdsw_tui.controller import job_runner
from cdsw_tui.services import apps
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Application, JobRun, pk

log = logging.getLogger("cdsw_tui.controller")
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STEADY_AFTER = 60.0  # a start that lasted this long resets the back-off
MAX_APPS = 64


@dataclass
class Start:
    run_id: int
    future: Future
    began: float


PROBE = b"HEAD / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"


def answers(port: int, timeout: float = 0.3) -> bool:
    """Something answers HTTP on 127.0.0.1:``port`` (any reply at all: an accepted
    connection is not enough, as Docker's proxy accepts before the app listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(PROBE)
            return bool(sock.recv(16))
    except OSError:
        return False


class AppSupervisor:
    def __init__(
        self, wb: Workbench, runners: job_runner.RunnerSet, shutdown: threading.Event
    ) -> None:
        self.wb = wb
        self.runners = runners
        self.shutdown = shutdown
        self.pool = ThreadPoolExecutor(max_workers=MAX_APPS, thread_name_prefix="app")
        self.active: dict[int, Start] = {}
        self.delay: dict[int, float] = {}
        self.not_before: dict[int, float] = {}

    def tick(self) -> None:
        """One pass over every application (in a thread: it reads the store and probes)."""
        rows = apps.list_apps(self.wb)
        for app in rows:
            try:
                self._step(app)
            except Exception:  # one application's trouble never stops the others
                log.exception("application %s: a pass failed", app.name)
        gone = set(self.active) - {pk(a) for a in rows}
        for app_id in gone:  # deleted: its start is cancelled by its row going
            start = self.active[app_id]
            if start.future.done():
                del self.active[app_id]

    def _update(self, app: Application, **values: object) -> None:
        if any(getattr(app, k) != val for k, val in values.items()):
            self.wb.store.update(Application, pk(app), **values)

    def _step(self, app: Application) -> None:
        app_id, now = pk(app), time.monotonic()
        start = self.active.get(app_id)
        if start is not None and start.future.done():
            del self.active[app_id]
            self._ended(app, start, now)
            return
        if start is not None:
            if app.desired == "stopped" or app.restart_requested:
                self._cancel(start.run_id)
                self._update(app, status="stopping")
            elif app.status != "running" and answers(app.port):
                self._update(app, status="running", reason="")
                log.info("application %s answers on port %s", app.name, app.port)
            return
        if app.desired == "stopped":
            self._update(app, status="stopped")
            return
        if app.restart_requested or now >= self.not_before.get(app_id, 0.0):
            self._start(app, now)

    def _start(self, app: Application, now: float) -> None:
        app_id = pk(app)
        run = apps.started(self.wb, app_id)
        self.wb.store.update(
            Application,
            app_id,
            status="starting",
            restart_requested=False,
            started_at=run.started_at,
        )
        future = self.pool.submit(job_runner.run, self.wb, run, self.runners, self.shutdown)
        self.active[app_id] = Start(pk(run), future, now)
        log.info("application %s: start %s on port %s", app.name, run.number, app.port)

    def _ended(self, app: Application, start: Start, now: float) -> None:
        app_id = pk(app)
        with self.wb.store.session() as s:
            run = s.get(JobRun, start.run_id)
        why = (run.reason if run is not None else "") or "its script ended"
        if self.shutdown.is_set():
            self._update(
                app, status="stopped", reason="the controller stopped; it starts again with it"
            )
        elif app.desired == "stopped":
            self._update(app, status="stopped", reason="")
        elif app.restart_requested:
            self.not_before.pop(app_id, None)
            self.delay.pop(app_id, None)
        else:
            lasted = now - start.began
            delay = BACKOFF_FIRST if lasted >= STEADY_AFTER else self.delay.get(app_id, 0.0)
            delay = min(BACKOFF_MAX, delay * 2 if delay else BACKOFF_FIRST)
            self.delay[app_id] = delay
            self.not_before[app_id] = now + delay
            self._update(
                app,
                status="restarting",
                reason=f"{why}; starting again in {delay:g} s",
                restarts=app.restarts + 1,
            )
            log.warning("application %s ended (%s); again in %g s", app.name, why, delay)

    def _cancel(self, run_id: int) -> None:
        with self.wb.store.session() as s:
            run = s.get(JobRun, run_id)
            if run is not None and not run.cancel_requested:
                run.cancel_requested = True
                s.add(run)
                s.commit()

    def close(self) -> None:
        """At the controller's end (``shutdown`` is set: each start stops)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for app in apps.list_apps(self.wb):
            if pk(app) in self.active:
                self._update(
                    app, status="stopped", reason="the controller stopped; it starts again with it"
                )
