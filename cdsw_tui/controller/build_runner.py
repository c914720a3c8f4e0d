"""Runs one queued build to its final status, recording every step in the store."""

from __future__ import annotations

import errno
import logging
import threading
import time

from sqlmodel import col, select

from cdsw_tui import disk
from cdsw_tui.engine import backends
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.builder import Builder, BuildFailed, BuildJob, BuildResult, build_marker
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.process import kill_tree
from cdsw_tui.errors import CdswError
from cdsw_tui.services import artifacts, deployments
from cdsw_tui.services import env as env_service
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Model, Project, pk, utcnow

log = logging.getLogger("cdsw_tui.controller")


def claim_next(wb: Workbench, skip: set[int]) -> Build | None:
    """Move the oldest queued build to ``building``; None if there is none."""
    with wb.store.session() as s:
        query = select(Build).where(Build.status == "queued").order_by(col(Build.id))
        for build in s.exec(query):
            if build.id in skip:
                continue
            if build.cancel_requested:
                build.status = "cancelled"
                build.finished_at = utcnow()
                s.add(build)
                s.commit()
                continue
            build.status = "building"
            build.started_at = utcnow()
            s.add(build)
            s.commit()
            s.refresh(build)
            return build
    return None


def _update(wb: Workbench, build_id: int, **values: object) -> None:
    wb.store.update(Build, build_id, **values)


def _builder_for(wb: Workbench, runtime: str) -> Builder:
    try:
        return backends.get(runtime).builder(wb.snapshots)
    except CdswError as exc:
        raise BuildFailed(exc.message) from None


def _disk_full(wb: Workbench, blog: BuildLog, exc: BaseException | None) -> str:
    """One line if the build failed for a full disk (a write error, or a step that said
    so), naming the disk and what is free on it; "" otherwise."""
    error = disk.failure(exc) if exc is not None else None
    if error is None and blog.error is not None:
        error = disk.failure(blog.error)
    if error is None and any(sign in line for line in blog.tail for sign in disk.SIGNS):
        error = OSError(errno.ENOSPC, "No space left on device")
    return disk.reason(error, wb.home) if error is not None else ""


def _finish(
    wb: Workbench, shutdown: threading.Event | None, build_id: int, **values: object
) -> None:
    """The build's final status, written even if the store's disk is full for a while:
    tried again each second until it is written or the controller stops (the next one
    then fails the build as interrupted). Never left ``building`` by a failed write."""
    said = False
    while True:
        try:
            _update(wb, build_id, **values)
            return
        except CdswError as exc:
            if shutdown is not None and shutdown.is_set():
                raise
            if not said:
                log.warning("cannot record the end of build %s (%s); trying again", build_id, exc)
                said = True
            time.sleep(1.0)


def run(wb: Workbench, build: Build, shutdown: threading.Event | None = None) -> Build | None:
    """``shutdown`` set means the controller is stopping: the build ends as interrupted.
    The build as it ended (None: its model was deleted meanwhile)."""
    build_id = pk(build)
    path = wb.build_log_path(build.model_id, build.number)
    blog = BuildLog(path, int(wb.settings.log_max_mb * 1024 * 1024))
    last_check = [0.0, False]

    def cancelled() -> bool:
        if shutdown is not None and shutdown.is_set():
            return True
        now = time.monotonic()
        if now - last_check[0] > 0.3:
            last_check[0] = now
            with wb.store.session() as s:
                row = s.get(Build, build_id)
                last_check[1] = row is None or row.cancel_requested
        return bool(last_check[1])

    def on_pid(pid: int | None) -> None:
        _update(wb, build_id, pid=pid)

    status, reason, result = "failed", "", BuildResult(artifact="")
    try:
        if problem := disk.too_little(wb.home, wb.settings.min_free_mb):
            raise BuildFailed(problem)
        with wb.store.session() as s:
            model = s.get(Model, build.model_id)
            project = s.get(Project, model.project_id) if model else None
        if model is None or project is None:
            raise BuildFailed("the model was deleted")
        job = BuildJob(
            build_id=build_id,
            number=build.number,
            model_id=build.model_id,
            project_name=project.name,
            model_name=model.name,
            snapshot=build.snapshot,
            tree=build.tree,
            file=build.file,
            function=build.function,
            kernel=build.kernel,
            engine=build.engine,
            build_dir=wb.build_dir(build.model_id, build.number),
            home=wb.home,
            envs_dir=wb.envs_dir(),
            variables=(variables := env_service.resolve(wb, model)),
            secret_names=frozenset(k for k in variables if env_service.looks_secret(k)),
            timeout=wb.settings.build_timeout,
            ca_bundle=wb.settings.ca_bundle,
            warnings=[w for w in build.warnings.split("\n") if w],
            clean=build.clean,
            python=project.python,
            project_id=pk(project),
            uid=replica_identity(wb.settings.replica_uid).uid,
            workbench=env_service.workbench_variables(
                wb, project, model, engine_id=f"build-{build_id}", build_id=build_id
            ),
        )
        result = _builder_for(wb, build.runtime).build(job, blog, cancelled, on_pid)
        status = "built"
    except BuildFailed as exc:
        status, reason = exc.status, exc.reason
        if shutdown is not None and shutdown.is_set():
            status, reason = "failed", "interrupted"
        elif status == "failed" and (full := _disk_full(wb, blog, None)):
            reason = f"{full}: {reason}"
        blog.line(f"build {build.number} {status}: {reason}")
    except Exception as exc:  # a bug or an OS error: the build fails, the controller lives
        if full := _disk_full(wb, blog, exc):
            status, reason = "failed", full  # one line, not a copy's list of every file
        else:
            log.exception("build %s crashed", build_id)
            status, reason = "failed", f"internal error: {type(exc).__name__}: {exc}"[:500]
        blog.line(f"build {build.number} failed: {reason}")
    finally:
        blog.close()
    _finish(
        wb,
        shutdown,
        build_id,
        status=status,
        reason=reason,
        artifact=result.artifact,
        env_path=result.env_path,
        image_id=result.image_id,
        dep_key=result.dep_key,
        dep_reused=result.dep_reused,
        finished_at=utcnow(),
        pid=None,
    )
    with wb.store.session() as s:
        final = s.get(Build, build_id)
    if final is not None:
        deployments.deploy_built(wb, final)
        if status == "built" and project is not None:
            try:
                artifacts.prune_steps(wb, pk(project))
            except OSError as exc:  # kept for the next build to try again
                log.warning("could not prune the step results of build %s: %s", build_id, exc)
    return final


def reconcile(wb: Workbench) -> list[int]:
    """Builds left ``building`` by a dead controller fail as interrupted; their processes die."""
    failed = []
    with wb.store.session() as s:
        for build in s.exec(select(Build).where(Build.status == "building")):
            # every process of the build (its daemons too), found by its environment
            kill_tree(0, build_marker(wb.home, pk(build)).encode(), grace=0)
            build.status = "failed"
            build.reason = "interrupted"
            build.finished_at = utcnow()
            build.pid = None
            s.add(build)
            failed.append(pk(build))
            try:
                blog = BuildLog(wb.build_log_path(build.model_id, build.number))
                blog.line(f"build {build.number} failed: interrupted (the controller stopped)")
                blog.close()
            except OSError:
                pass
        s.commit()
    return failed
