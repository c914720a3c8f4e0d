"""The CML API v2's jobs, job runs and applications (services/cmlv2.py has the rest:
scopes, listing, projects, models, builds, deployments, runtimes), with CML's field
names."""

from __future__ import annotations

import json
from typing import Any

from cdsw_tui.services import apps, jobs, runs
from cdsw_tui.services import env as env_service
from cdsw_tui.services.cmlv2 import find_row, iso, listing, user
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Application, Job, JobRun, Project, pk

RUN_STATUS = {"queued": "ENGINE_SCHEDULING", "running": "ENGINE_RUNNING",
              "succeeded": "ENGINE_SUCCEEDED", "failed": "ENGINE_FAILED",
              "cancelled": "ENGINE_STOPPED", "timedout": "ENGINE_TIMEDOUT"}  # fmt: skip


def job_of(wb: Workbench, project: Project, job_id: str) -> Job:
    row: Job = find_row(wb, Job, job_id, "job", project_id=pk(project))
    return row


# -- jobs and runs ----------------------------------------------------------------------


def job_dict(wb: Workbench, j: Job) -> dict[str, Any]:
    last = runs.latest(wb, j)
    return {
        "id": str(j.id),
        "project_id": str(j.project_id),
        "name": j.name,
        "script": j.script,
        "arguments": " ".join(json.loads(j.args or "[]")),
        "schedule": j.schedule,
        "parent_id": str(j.after_job_id) if j.after_job_id else "",
        "timeout": int(j.timeout),
        "cpu": j.cpu,
        "memory": round(j.memory / 1024, 3),
        "kernel": "r" if j.script.lower().endswith(".r") else "python3",
        "environment": json.dumps(env_service.shown(env_service.list_vars(wb, "job", pk(j)))),
        "created_at": iso(j.created_at),
        "updated_at": iso(j.created_at),
        "latest": run_dict(last) if last is not None else None,
        "creator": user(),
    }


def list_jobs(wb: Workbench, project: Project, query: dict[str, str]) -> dict[str, Any]:
    return listing("jobs", [job_dict(wb, j) for j in jobs.list_jobs(wb, project.name)], query)


def create_job(wb: Workbench, project: Project, body: dict[str, Any]) -> dict[str, Any]:
    environment = body.get("environment") or {}
    if isinstance(environment, str):
        environment = json.loads(environment or "{}")
    parent = str(body.get("parent_job_id") or body.get("parent_id") or "")
    after = job_of(wb, project, parent).name if parent else ""
    memory = body.get("memory")
    spec = jobs.JobSpec(
        name=str(body.get("name") or ""),
        script=str(body.get("script") or ""),
        args=str(body.get("arguments") or "").split(),
        schedule=str(body.get("schedule") or ""),
        after=after,
        timeout=float(body.get("timeout") or 0),
        cpu=float(body.get("cpu") or 1),
        memory=2048 if memory in (None, "") else int(float(memory) * 1024),
        env={str(k): str(x) for k, x in dict(environment).items()},
    )
    return job_dict(wb, jobs.create(wb, project.name, spec))


def run_dict(r: JobRun) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "job_id": str(r.job_id or ""),
        "project_id": str(r.project_id),
        "run_number": r.number,
        "status": RUN_STATUS.get(r.status, r.status),
        "arguments": " ".join(json.loads(r.args or "[]")),
        "exit_code": r.exit_code,
        "created_at": iso(r.created_at),
        "scheduling_at": iso(r.created_at),
        "starting_at": iso(r.started_at),
        "running_at": iso(r.started_at),
        "finished_at": iso(r.finished_at),
        "cpu": r.cpu,
        "memory": round(r.memory / 1024, 3),
    }


def create_job_run(wb: Workbench, job: Job) -> dict[str, Any]:
    return run_dict(runs.request(wb, job, trigger="api"))


def list_job_runs(wb: Workbench, job: Job, query: dict[str, str]) -> dict[str, Any]:
    return listing("job_runs", [run_dict(r) for r in runs.list_runs(wb, job)], query)


# -- applications ----------------------------------------------------------------------

APP_STATUS = {
    "starting": "APPLICATION_STARTING",
    "running": "APPLICATION_RUNNING",
    "restarting": "APPLICATION_STARTING",
    "stopping": "APPLICATION_STOPPING",
    "stopped": "APPLICATION_STOPPED",
    "failed": "APPLICATION_FAILED",
}


def application_of(wb: Workbench, project: Project, application_id: str) -> Application:
    row: Application = find_row(
        wb, Application, application_id, "application", project_id=pk(project)
    )
    return row


def application_dict(wb: Workbench, a: Application) -> dict[str, Any]:
    return {
        "id": str(a.id),
        "project_id": str(a.project_id),
        "name": a.name,
        "description": a.description,
        "subdomain": a.subdomain,
        "url": apps.url(wb, a),
        "script": a.script,
        "kernel": "r" if a.script.lower().endswith(".r") else "python3",
        "status": APP_STATUS.get(a.status, a.status),
        "cpu": a.cpu,
        "memory": round(a.memory / 1024, 3),
        "nvidia_gpu": 0,
        "environment": json.dumps(env_service.shown(json.loads(a.environment or "{}"))),
        "runtime_identifier": "",
        "bypass_authentication": False,
        "created_at": iso(a.created_at),
        "updated_at": iso(a.started_at or a.created_at),
        "creator": user(),
    }


def list_applications(wb: Workbench, project: Project, query: dict[str, str]) -> dict[str, Any]:
    rows = [application_dict(wb, a) for a in apps.list_apps(wb, project.name)]
    return listing("applications", rows, query)


def create_application(wb: Workbench, project: Project, body: dict[str, Any]) -> dict[str, Any]:
    """CML's ``create_application``: created and started (the caller does not wait)."""
    environment = body.get("environment") or {}
    if isinstance(environment, str):
        environment = json.loads(environment or "{}")
    memory = body.get("memory")
    spec = apps.AppSpec(
        name=str(body.get("name") or ""),
        script=str(body.get("script") or ""),
        subdomain=str(body.get("subdomain") or ""),
        description=str(body.get("description") or ""),
        cpu=float(body.get("cpu") or 1),
        memory=2048 if memory in (None, "") else int(float(memory) * 1024),
        env={str(k): str(x) for k, x in dict(environment).items()},
    )
    app = apps.create(wb, project.name, spec)  # the controller's next pass starts it
    return application_dict(wb, app)


def restart_application(wb: Workbench, app: Application) -> dict[str, Any]:
    return application_dict(wb, apps.restart(wb, app))


def stop_application(wb: Workbench, app: Application) -> dict[str, Any]:
    return application_dict(wb, apps.stop(wb, app))


def delete_application(wb: Workbench, app: Application) -> dict[str, Any]:
    apps.delete(wb, app)
    return {}
