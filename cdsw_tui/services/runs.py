"""Runs: one execution of a job's script, or a one-off run of a project script
(``cdsw-tui run``). The faces queue them; the controller runs them on the project's
runtime and records status, exit code, duration and log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from cdsw_tui.engine.buildlog import all_lines
from cdsw_tui.errors import CdswError, Conflict, NotFound
from cdsw_tui.services import ending, logwatch, projects
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import RUN_FINAL, Job, JobRun, Project, pk


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _queue(wb: Workbench, make: Any, job: Job | None) -> JobRun:
    """Insert the run ``make(number)`` returns, numbered after the last of its job (or of
    the project's one-off runs); a job with a run queued or running refuses a second."""
    for _attempt in range(20):
        with wb.store.session() as s:
            row = make(0)
            top = s.exec(
                select(func.max(JobRun.number)).where(
                    JobRun.project_id == row.project_id,
                    col(JobRun.app_id).is_(None),
                    col(JobRun.job_id).is_(None) if job is None else JobRun.job_id == job.id,
                )
            ).one()
            run = make((top or 0) + 1)
            s.add(run)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                if job is not None and (active := active_run(wb, job)) is not None:
                    raise Conflict(
                        f"job {job.name} already has run {active.number} {active.status}; "
                        "one run of a job at a time"
                    ) from None
                continue  # another run took this number: the next one
            s.refresh(run)
            return run
    raise CdswError("could not number the run (too many at once); try again")


def request(wb: Workbench, job: Job, trigger: str = "manual") -> JobRun:
    """Queue a run of ``job`` with what the job says now."""
    return _queue(
        wb,
        lambda number: JobRun(
            project_id=job.project_id,
            job_id=pk(job),
            number=number,
            script=job.script,
            args=job.args,
            trigger=trigger,
            timeout=job.timeout,
            cpu=job.cpu,
            memory=job.memory,
        ),
        job,
    )


def one_off(
    wb: Workbench, project: Project, script: str, args: list[str], timeout: float = 0.0
) -> JobRun:
    rel = v.script(Path(project.path), script)
    return _queue(
        wb,
        lambda number: JobRun(
            project_id=pk(project),
            number=number,
            script=rel,
            args=json.dumps(list(args)),
            trigger="one-off",
            timeout=v.timeout(timeout),
        ),
        None,
    )


def active_run(wb: Workbench, job: Job) -> JobRun | None:
    with wb.store.session() as s:
        return s.exec(
            select(JobRun).where(
                JobRun.job_id == job.id, col(JobRun.status).in_(("queued", "running"))
            )
        ).first()


def latest(wb: Workbench, job: Job) -> JobRun | None:
    with wb.store.session() as s:
        return s.exec(
            select(JobRun).where(JobRun.job_id == job.id).order_by(col(JobRun.number).desc())
        ).first()


def list_runs(wb: Workbench, job: Job) -> list[JobRun]:
    with wb.store.session() as s:
        return list(
            s.exec(select(JobRun).where(JobRun.job_id == job.id).order_by(col(JobRun.number)))
        )


def get(wb: Workbench, job: Job, number: int | None = None) -> JobRun:
    """Run ``number`` of the job, or its newest."""
    run = latest(wb, job) if number is None else None
    if number is not None:
        with wb.store.session() as s:
            run = s.exec(
                select(JobRun).where(JobRun.job_id == job.id, JobRun.number == number)
            ).first()
    if run is None:
        which = f"run {number}" if number is not None else "runs"
        raise NotFound(f"job {job.name} has no {which} (see 'cdsw-tui job runs')")
    return run


def refresh(wb: Workbench, run: JobRun) -> JobRun:
    with wb.store.session() as s:
        row = s.get(JobRun, run.id)
    if row is None:
        raise NotFound(f"run {run.number} was deleted (its job was)")
    return row


def cancel(wb: Workbench, run: JobRun) -> JobRun:
    """A queued run ends at once; a running one is stopped by the controller (the whole
    of it: its processes or its container)."""
    return ending.cancel(wb, JobRun, run.id, RUN_FINAL, f"run {run.number}")


def wait(wb: Workbench, run: JobRun, timeout: float | None = None) -> JobRun:
    """The run once it ended (or as it is after ``timeout``); one line when no
    controller runs to end it."""
    final, gone = ending.wait(wb, lambda: refresh(wb, run), RUN_FINAL, timeout, 0.2)
    if gone:
        raise CdswError(
            f"run {final.number} is {final.status}, but no controller runs to finish it "
            "(see logs/controller.log)"
        )
    return final


def log_path(wb: Workbench, run: JobRun) -> Path:
    return wb.run_log_path(pk(run))


def follow_log(wb: Workbench, run: JobRun, *, follow: bool) -> Iterator[str]:
    """Lines of the run's log; with ``follow``, until the run ends."""
    path = log_path(wb, run)

    def done() -> bool:
        try:
            return refresh(wb, run).status in RUN_FINAL
        except NotFound:
            return True

    if not follow or done():
        yield from all_lines(path)
        return
    for _, line in logwatch.follow(path.parent, lambda: [path], until=done):
        yield line


def duration(run: JobRun) -> float | None:
    if run.started_at and run.finished_at:
        return round((run.finished_at - run.started_at).total_seconds(), 2)
    return None


def summary(wb: Workbench, run: JobRun) -> dict[str, Any]:
    """One run as listings show it (``--json`` names: number, status, exit_code)."""
    project = projects.get_by_id(wb, run.project_id)
    with wb.store.session() as s:
        job = s.get(Job, run.job_id) if run.job_id else None
    return {
        "number": run.number,
        "job": job.name if job is not None else "",
        "project": project.name,
        "script": run.script,
        "args": json.loads(run.args or "[]"),
        "trigger": run.trigger,
        "status": run.status,
        "reason": run.reason,
        "exit_code": run.exit_code,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration": duration(run),
    }
