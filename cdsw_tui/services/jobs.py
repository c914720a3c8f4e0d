"""Jobs: a project script that runs on demand, on a cron schedule, or after another job
succeeded (CDSW's Jobs). The faces write a job and ask for runs (services/runs.py); the
controller runs them and fires schedules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from cdsw_tui.errors import Conflict, NotFound, ValidationError
from cdsw_tui.services import env as env_service
from cdsw_tui.services import projects
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import EnvVar, Job, JobRun, Project, pk

IPYTHON_LINE = re.compile(r"^[ \t]*[!%]", re.MULTILINE)


@dataclass
class JobSpec:
    name: str
    script: str
    args: list[str] = field(default_factory=list)
    schedule: str = ""
    after: str = ""  # the name of a job of the same project
    timeout: float = 0.0
    cpu: float = 1.0
    memory: int = 2048
    env: dict[str, str] = field(default_factory=dict)


def kind_of(source: str, rel: str) -> str:
    """How a script runs: ``r`` (Rscript), ``ipython`` (it has ``!cmd`` or ``%magic``
    lines, as a CML session allows) or ``python``. A plain Python file never has a line
    that starts with ``!`` or ``%``: that is a syntax error there."""
    kind = v.SCRIPT_KINDS.get(Path(rel).suffix, "python")
    if kind == "python" and IPYTHON_LINE.search(source):
        return "ipython"
    return kind


def schedule(value: str) -> str:
    """A cron expression (five fields, or six with seconds last, as croniter reads them)."""
    from croniter import croniter

    value = " ".join(value.split())
    if not value:
        return ""
    if len(value.split()) not in (5, 6) or not croniter.is_valid(value):
        raise ValidationError(
            f"schedule {value!r} is not a cron expression (minute hour day month weekday, "
            "e.g. '0 3 * * *')",
            field="schedule",
        )
    return value


def next_firing(expression: str, after: datetime) -> datetime | None:
    """When ``expression`` fires next after ``after`` (UTC), None without a schedule."""
    if not expression:
        return None
    from croniter import croniter

    start = after if after.tzinfo else after.replace(tzinfo=UTC)
    return croniter(expression, start).get_next(datetime).astimezone(UTC)


def resolve(wb: Workbench, ref: str) -> Job:
    """``project/job``."""
    project_name, sep, name = ref.partition("/")
    if not sep or not name:
        raise ValidationError(f"a job is PROJECT/NAME, not {ref!r}", field="job")
    project = projects.get(wb, project_name)
    return get(wb, project, name)


def get(wb: Workbench, project: Project, name: str) -> Job:
    """By its name as given, or by its slug."""
    with wb.store.session() as s:
        found = list(s.exec(select(Job).where(Job.project_id == project.id)))
    row = v.pick_by_name(found, name, "job", f"in project {project.name}")
    if not isinstance(row, Job):
        raise NotFound(f"no job named {name!r} in project {project.name} (see 'cdsw-tui jobs')")
    return row


def get_by_id(wb: Workbench, job_id: int) -> Job | None:
    with wb.store.session() as s:
        return s.get(Job, job_id)


def _after(wb: Workbench, project: Project, name: str, own: str) -> int | None:
    if not name:
        return None
    if name == own:
        raise ValidationError("a job cannot run after itself", field="after")
    return pk(get(wb, project, name.split("/", 1)[-1]))


def create(wb: Workbench, project_name: str, spec: JobSpec) -> Job:
    project = projects.get(wb, project_name)
    name = v.name(spec.name)
    rel = v.script(Path(project.path), spec.script)
    job = Job(
        project_id=pk(project),
        name=name,
        script=rel,
        args=json.dumps(list(spec.args)),
        schedule=(cron := schedule(spec.schedule)),
        after_job_id=_after(wb, project, spec.after, name),
        timeout=v.timeout(spec.timeout),
        cpu=v.cpu(spec.cpu),
        memory=v.memory(spec.memory),
        next_run_at=next_firing(cron, datetime.now(UTC)),
    )
    variables = {v.env_key(k): val for k, val in spec.env.items()}
    try:
        with wb.store.session() as s:
            s.add(job)
            s.commit()
            s.refresh(job)
    except IntegrityError:
        raise Conflict(
            f"project {project.name} already has a job named {name!r}", field="name"
        ) from None
    if variables:
        env_service.set_vars(wb, "job", pk(job), variables)
    return job


def delete(wb: Workbench, job: Job) -> None:
    """The job, its runs and their logs; a run in progress is stopped by the controller
    (its row is gone). Jobs that ran after it no longer follow anything."""
    with wb.store.session() as s:
        run_ids = [pk(r) for r in s.exec(select(JobRun).where(JobRun.job_id == job.id))]
        for var in s.exec(select(EnvVar).where(EnvVar.scope == "job", EnvVar.scope_id == job.id)):
            s.delete(var)
        for follower in s.exec(select(Job).where(Job.after_job_id == job.id)):
            follower.after_job_id = None
            s.add(follower)
        row = s.get(Job, job.id)
        if row is not None:
            s.delete(row)
        s.commit()
    for run_id in run_ids:
        wb.run_log_path(run_id).unlink(missing_ok=True)


def list_jobs(wb: Workbench, project_name: str | None = None) -> list[Job]:
    with wb.store.session() as s:
        query = select(Job).order_by(col(Job.project_id), col(Job.name))
        if project_name is not None:
            query = query.where(Job.project_id == projects.get(wb, project_name).id)
        return list(s.exec(query))


def variables(wb: Workbench, job: Job | None, project: Project) -> dict[str, str]:
    """What a run sees of the user's variables: global < project < job."""
    result = env_service.list_vars(wb, "global")
    result.update(env_service.list_vars(wb, "project", pk(project)))
    if job is not None:
        result.update(env_service.list_vars(wb, "job", pk(job)))
    return result


def summary(wb: Workbench, job: Job) -> dict[str, Any]:
    """One job as listings show it (``--json`` names: name, project, script, schedule)."""
    from cdsw_tui.services import runs

    project = projects.get_by_id(wb, job.project_id)
    after = get_by_id(wb, job.after_job_id) if job.after_job_id else None
    last = runs.latest(wb, job)
    return {
        "name": job.name,
        "slug": v.slug(job.name),
        "project": project.name,
        "script": job.script,
        "args": json.loads(job.args or "[]"),
        "schedule": job.schedule,
        "after": after.name if after is not None else "",
        "timeout": job.timeout,
        "cpu": job.cpu,
        "memory": job.memory,
        "next_run_at": runs.iso(job.next_run_at),
        "last_run": last.number if last is not None else None,
        "last_status": last.status if last is not None else "",
    }
