"""``cdsw-tui serve``: reconcile the store, then run what it asks for until stopped."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

from cdsw_tui.controller import app_runner, build_runner, converge, job_runner
from cdsw_tui.controller.serving import ServingManager
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.errors import CdswError
from cdsw_tui.services import amp_steps
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.lock import ControllerLock, state
from cdsw_tui.serving import limits
from cdsw_tui.store import pk

log = logging.getLogger("cdsw_tui.controller")
SCHEDULE_INTERVAL = 0.5  # how often cron schedules are looked at (seconds)


class Controller:
    def __init__(self, wb: Workbench) -> None:
        self.wb = wb
        self.lock = ControllerLock(wb.home)
        self.running_builds: set[int] = set()
        self.pool = ThreadPoolExecutor(
            max_workers=wb.settings.build_workers, thread_name_prefix="build"
        )
        self.running_runs: set[int] = set()
        self.run_pool = ThreadPoolExecutor(
            max_workers=max(1, wb.settings.run_workers), thread_name_prefix="run"
        )
        self.runners = job_runner.RunnerSet(wb.home)
        self._stop = asyncio.Event()
        self._schedules_at = 0.0
        self.shutdown = threading.Event()
        self.apps = app_runner.AppSupervisor(wb, self.runners, self.shutdown)

    async def run(self) -> None:
        if not self.lock.acquire():
            raise CdswError(
                f"a controller already runs for {self.wb.home} (pid {state(self.wb.home).pid})"
            )
        try:
            identity = replica_identity(self.wb.settings.replica_uid)  # a bad one: one line
            files = limits.raise_file_limit()  # the gateway's connections stay below it
            total, per_peer = limits.connection_caps(
                self.wb.settings.max_connections, self.wb.settings.max_connections_per_peer
            )
            log.info(
                "file limit %d: at most %d gateway connections, %d from one address",
                files,
                total,
                per_peer,
            )
            log.info("model code runs as uid %s", identity.uid)
            if identity.warning:
                log.warning("%s", identity.warning)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            interrupted = await asyncio.to_thread(build_runner.reconcile, self.wb)
            if interrupted:
                log.warning(
                    "builds %s were interrupted by a previous controller's end", interrupted
                )
            stopped = await asyncio.to_thread(job_runner.reconcile, self.wb, self.runners)
            if stopped:
                log.warning("runs %s were interrupted by a previous controller's end", stopped)
            self.serving = ServingManager(self.wb)
            try:
                await converge.start(self.serving)
                # what start-up made lives as long as the controller: out of the collector's
                # sight, a full collection no longer stalls the gateway for tens of ms
                gc.freeze()
            except OSError as exc:
                raise CdswError(
                    f"the gateway cannot listen on {self.wb.settings.gateway_url}: "
                    f"{exc.strerror or exc}"
                ) from None
            loops = [
                asyncio.create_task(self.serving.stats_loop()),
                asyncio.create_task(self.serving.ship_loop()),
            ]
            log.info("controller running, pid %s", os.getpid())
            try:
                await self._loop()
            finally:
                for task in loops:
                    task.cancel()
                await self.serving.close()
        finally:
            self.shutdown.set()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.run_pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.apps.close()
            except Exception:
                log.exception("applications did not all stop")
            self.lock.release()

    def stop(self) -> None:
        self._stop.set()

    async def _loop(self) -> None:
        poll = self.wb.settings.poll_interval
        while not self._stop.is_set():
            try:
                await self._dispatch_builds()
                await self._dispatch_runs()
                await asyncio.to_thread(self.apps.tick)
                await asyncio.to_thread(self._step_amps)
                await converge.converge(self.serving)
            except Exception:  # keep serving whatever one pass did wrong
                log.exception("controller pass failed")
            stop = asyncio.ensure_future(self._stop.wait())
            wake = asyncio.ensure_future(self.serving.wake.wait())
            await asyncio.wait([stop, wake], timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            wake.cancel()

    async def _dispatch_builds(self) -> None:
        while len(self.running_builds) < self.wb.settings.build_workers:
            build = await asyncio.to_thread(build_runner.claim_next, self.wb, self.running_builds)
            if build is None:
                return
            build_id = pk(build)
            self.running_builds.add(build_id)
            future = asyncio.get_running_loop().run_in_executor(
                self.pool, build_runner.run, self.wb, build, self.shutdown
            )
            future.add_done_callback(functools.partial(self._build_done, build_id))

    async def _dispatch_runs(self) -> None:
        now = datetime.now(UTC)
        if now.timestamp() - self._schedules_at >= SCHEDULE_INTERVAL:
            self._schedules_at = now.timestamp()
            await asyncio.to_thread(job_runner.fire_schedules, self.wb, now)
        while len(self.running_runs) < max(1, self.wb.settings.run_workers):
            row = await asyncio.to_thread(job_runner.claim_next, self.wb, self.running_runs)
            if row is None:
                return
            run_id = pk(row)
            self.running_runs.add(run_id)
            future = asyncio.get_running_loop().run_in_executor(
                self.run_pool, job_runner.run, self.wb, row, self.runners, self.shutdown
            )
            future.add_done_callback(functools.partial(self._run_done, run_id))

    def _step_amps(self) -> None:
        """Each AMP launch on by a step (a task started, or marked once it ended)."""
        for project in amp_steps.launching(self.wb):
            try:
                task = amp_steps.step(self.wb, project)
            except Exception:
                log.exception("AMP %s: a step failed", project.name)
                continue
            if task is not None and task.status == "pending":
                log.info("AMP %s: task %s (%s) started", project.name, task.position + 1, task.type)

    def _run_done(self, run_id: int, future: asyncio.Future) -> None:
        self.running_runs.discard(run_id)
        self.serving.wake.set()  # a follower's run, queued just now, starts at once
        if not future.cancelled() and future.exception() is not None:
            log.error("run %s: %s", run_id, future.exception())

    def _build_done(self, build_id: int, future: asyncio.Future) -> None:
        self.running_builds.discard(build_id)
        if not future.cancelled() and future.exception() is not None:
            log.error("build %s: %s", build_id, future.exception())


def serve(wb: Workbench, log_file: Path | None = None) -> None:
    """``log_file``: the controller's log, rotated at LOG_MAX_MB (else standard error)."""
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = RotatingFileHandler(
            log_file, maxBytes=int(wb.settings.log_max_mb * 1024 * 1024), backupCount=1
        )
    else:
        handler = logging.StreamHandler()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    # watchfiles says "N changes detected" at INFO each time the store is written
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    try:
        import uvloop  # a faster event loop for the gateway, when installed
    except ImportError:
        asyncio.run(Controller(wb).run())
    else:
        uvloop.run(Controller(wb).run())
