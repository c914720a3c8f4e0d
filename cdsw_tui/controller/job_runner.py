"""Runs queued job runs and one-off runs to their end on the project's runtime, fires
cron schedules, and starts the jobs that follow a job whose run succeeded."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import col, select

from cdsw_tui.engine import backends
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.builder import BuildFailed
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.runs import OURS, RunJob, Runner
from cdsw_tui.errors import CdswError, Conflict
from cdsw_tui.services import env as env_service
from cdsw_tui.services import jobs, metrics, runs
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Application, Job, JobRun, Project, pk, utcnow

log = logging.getLogger("cdsw_tui.controller")
MAX_SCRIPT_BYTES = 5 * 1024 * 1024  # read to tell how it runs (python, IPython or R)


class RunnerSet:
    """The backends' runners, made on first use (Docker's reaches its engine)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.made: dict[str, Runner] = {}
        self._lock = threading.Lock()

    def get(self, runtime: str) -> Runner:
        with self._lock:
            if runtime not in self.made:
                self.made[runtime] = backends.get(runtime).runner(self.home)
            return self.made[runtime]


def claim_next(wb: Workbench, skip: set[int]) -> JobRun | None:
    """Move the oldest queued run to ``running``; None if there is none."""
    with wb.store.session() as s:
        for run in s.exec(select(JobRun).where(JobRun.status == "queued").order_by(col(JobRun.id))):
            if run.id in skip:
                continue
            if run.cancel_requested:
                run.status, run.reason, run.finished_at = "cancelled", "cancelled", utcnow()
                s.add(run)
                s.commit()
                continue
            run.status = "running"
            run.started_at = utcnow()
            s.add(run)
            s.commit()
            s.refresh(run)
            return run
    return None


def _kind(project: Project, script: str) -> str:
    path = Path(project.path) / script
    try:
        with open(path, "rb") as fh:
            source = fh.read(MAX_SCRIPT_BYTES).decode("utf-8", "replace")
    except OSError as exc:
        raise BuildFailed(f"the script {script} cannot be read: {exc.strerror or exc}") from None
    return jobs.kind_of(source, script)


def _job_for(
    wb: Workbench, run: JobRun, project: Project, job: Job | None, app: Application | None = None
) -> RunJob:
    variables = env_service.workbench_variables(
        wb, project, None, engine_id=f"run-{run.id}", build_id=None, cpu=run.cpu, memory=run.memory
    )
    # cdsw.read_metrics, track_delayed_metrics...: on the models of this project
    variables["CDSW_METRICS_TOKEN"] = metrics.token(wb, metrics.project_scope(pk(project)))
    variables.update(jobs.variables(wb, job, project))
    label = f"job {job.name}, run {run.number}" if job else f"one-off run {run.number}"
    if app is not None:  # CML's application variables: one port, on 127.0.0.1
        label = f"application {app.name}, start {run.number}"
        variables.update(json.loads(app.environment or "{}"))
        port = str(app.port)
        variables.update(CDSW_APP_PORT=port, CDSW_READONLY_PORT=port, CDSW_PUBLIC_PORT=port)
    return RunJob(
        run_id=pk(run),
        label=label,
        project_name=project.name,
        project_id=pk(project),
        project_dir=project.path,
        script=run.script,
        args=json.loads(run.args or "[]"),
        kind=_kind(project, run.script),
        env_dir=wb.project_env_dir(pk(project), project.runtime),
        scratch=wb.home / "run" / "runs" / str(run.id),
        home=wb.home,
        variables=variables,
        secret_names=frozenset(k for k in variables if env_service.looks_secret(k)),
        engine=project.engine or wb.settings.engine_image,
        python=project.python,
        cpu=run.cpu,
        memory=run.memory,
        uid=replica_identity(wb.settings.replica_uid).uid,
        timeout=run.timeout,
        ca_bundle=wb.settings.ca_bundle,
        app_port=app.port if app is not None else 0,
    )


def run(
    wb: Workbench, row: JobRun, runners: RunnerSet, shutdown: threading.Event | None = None
) -> JobRun | None:
    """The run to its end; the run as it ended (None: its job was deleted meanwhile)."""
    run_id = pk(row)
    blog = BuildLog(wb.run_log_path(run_id), int(wb.settings.log_max_mb * 1024 * 1024))
    last = [0.0, False]

    def cancelled() -> bool:
        if shutdown is not None and shutdown.is_set():
            return True
        now = time.monotonic()
        if now - last[0] > 0.3:
            last[0] = now
            with wb.store.session() as s:
                current = s.get(JobRun, run_id)
            last[1] = current is None or current.cancel_requested
        return bool(last[1])

    status, reason, code = "failed", "", None
    started = time.monotonic()
    try:
        with wb.store.session() as s:
            project = s.get(Project, row.project_id)
            job = s.get(Job, row.job_id) if row.job_id else None
            app = s.get(Application, row.app_id) if row.app_id else None
        if project is None or (row.job_id and job is None) or (row.app_id and app is None):
            raise BuildFailed("its job, application or project was deleted")
        spec = _job_for(wb, row, project, job, app)
        blog.line(
            f"{OURS}{spec.label} of {project.name} on the {project.runtime} runtime "
            f"({row.trigger}): {spec.kind} {' '.join([row.script, *spec.args])}"
        )
        try:
            runner = runners.get(project.runtime)
        except CdswError as exc:
            raise BuildFailed(exc.message) from None
        code = runner.run(spec, blog, cancelled)
        status = "succeeded" if code == 0 else "failed"
        reason = "" if code == 0 else f"the script exited with status {code}"
    except BuildFailed as exc:
        status, reason = exc.status, exc.reason
        if shutdown is not None and shutdown.is_set():
            status, reason = "failed", "interrupted (the controller stopped)"
    except Exception as exc:  # a bug or an OS error: the run fails, the controller lives
        log.exception("run %s crashed", run_id)
        status, reason = "failed", f"internal error: {type(exc).__name__}: {exc}"[:500]
    took = time.monotonic() - started
    blog.line(
        f"{OURS}run {row.number} {status} in {took:.1f} s" + (f": {reason}" if reason else "")
    )
    blog.close()
    wb.store.update(
        JobRun, run_id, status=status, reason=reason, exit_code=code, finished_at=utcnow()
    )
    with wb.store.session() as s:
        final = s.get(JobRun, run_id)
    if final is not None and status == "succeeded" and job is not None:
        start_followers(wb, job, final)
    return final


def start_followers(wb: Workbench, job: Job, finished: JobRun) -> list[JobRun]:
    """Runs of the jobs set to run after ``job`` (its run succeeded)."""
    started = []
    with wb.store.session() as s:
        followers = list(s.exec(select(Job).where(Job.after_job_id == job.id)))
    for follower in followers:
        try:
            started.append(
                runs.request(wb, follower, trigger=f"after {job.name} run {finished.number}")
            )
        except Conflict as exc:
            log.info("job %s did not start after %s: %s", follower.name, job.name, exc.message)
    return started


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def fire_schedules(wb: Workbench, now: datetime) -> list[JobRun]:
    """A run of every scheduled job whose time has come (one whose last run is still
    going is skipped, as CDSW skips it); each job's next time after ``now``."""
    fired = []
    with wb.store.session() as s:
        due = [
            j
            for j in s.exec(select(Job).where(Job.schedule != ""))
            if j.next_run_at is not None and _aware(j.next_run_at) <= now
        ]
    for job in due:
        try:
            fired.append(runs.request(wb, job, trigger="schedule"))
        except Conflict:
            log.info("job %s: its scheduled run was skipped (the last one still runs)", job.name)
        wb.store.update(Job, pk(job), next_run_at=jobs.next_firing(job.schedule, now))
    return fired


def reconcile(wb: Workbench, runners: RunnerSet) -> list[int]:
    """Runs left ``running`` by a dead controller fail as interrupted; what they left
    running (processes, containers, views of the project) is stopped."""
    with wb.store.session() as s:
        left = list(s.exec(select(JobRun).where(JobRun.status == "running")))
        runtimes = {"local"}
        for r in left:
            project = s.get(Project, r.project_id)
            if project is not None:
                runtimes.add(project.runtime)
    for name in sorted(runtimes, key=lambda n: n == "local"):  # containers before views
        try:
            runners.get(name).reconcile(wb.home)
        except Exception as exc:  # its engine is away: what it left stays until next time
            log.warning("could not stop what runs left on %s: %s", name, exc)
    for r in left:
        wb.store.update(
            JobRun,
            pk(r),
            status="failed",
            reason="interrupted (the controller stopped)",
            finished_at=utcnow(),
        )
        try:
            blog = BuildLog(wb.run_log_path(pk(r)))
            blog.line(f"{OURS}run {r.number} failed: interrupted (the controller stopped)")
            blog.close()
        except OSError:
            pass
    return [pk(r) for r in left]
