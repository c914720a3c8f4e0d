"""The controller's side of an AMP launch: each project's first unfinished task is
started (a run, a job, a model, a build, a deployment, an application), then marked once
what it started has ended (``step``, one per controller pass). services/amps.py reads
the metadata and writes the tasks."""

from __future__ import annotations

import json
import os
from typing import Any

from sqlmodel import col, select

from cdsw_tui.errors import CdswError, NotFound
from cdsw_tui.services import apps, builds, deployments, jobs, models, projects, runs
from cdsw_tui.services import env as env_service
from cdsw_tui.services import validation as v
from cdsw_tui.services.amps import DONE, tasks_of
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import (
    RUN_FINAL,
    AmpTask,
    Application,
    Build,
    Deployment,
    Job,
    JobRun,
    Project,
    pk,
    utcnow,
)

APP_TRIES = 3  # an application that ended this many times fails its task


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _cpu(value: Any) -> float:
    """A task's cpu, at most this machine's cores (an AMP asks for 4 on a laptop)."""
    return max(0.1, min(_number(value, 1.0), float(os.cpu_count() or 1)))


def _memory(value: Any, default_gb: float = 2.0) -> int:
    return int(_number(value, default_gb) * 1024)  # CML gives GiB


def _env(task: dict[str, Any]) -> dict[str, str]:
    values = task.get("environment") or task.get("environment_variables") or {}
    return {str(k): str(x) for k, x in dict(values).items()} if isinstance(values, dict) else {}


def _args(task: dict[str, Any]) -> list[str]:
    text = task.get("arguments")
    if text in (None, "None", ""):
        return []
    return str(text).split()


def _entity(wb: Workbench, project: Project, label: str, kind: str) -> int:
    """The id of what an earlier task with ``entity_label`` made (``job`` or ``model``)."""
    for task in tasks_of(wb, project):
        spec = json.loads(task.spec)
        if spec.get("entity_label") == label and task.entity.startswith(kind + ":"):
            return int(task.entity.split(":", 1)[1])
    raise CdswError(f"no earlier task made a {kind} with entity_label {label!r}")


def _build_task(wb: Workbench, project: Project, label: str) -> dict[str, Any]:
    for task in tasks_of(wb, project):
        spec = json.loads(task.spec)
        if task.type == "build_model" and spec.get("entity_label") == label:
            return dict(spec)
    raise CdswError(f"no build_model task has entity_label {label!r}: its file is unknown")


def _example(spec: dict[str, Any]) -> tuple[str, str]:
    examples = spec.get("examples") or []
    if not examples or not isinstance(examples[0], dict):
        return "", ""
    first = examples[0]
    out = json.dumps(first["response"]) if first.get("response") is not None else ""
    inp = json.dumps(first["request"]) if first.get("request") is not None else ""
    return inp, out


def _start(wb: Workbench, project: Project, task: AmpTask) -> tuple[str, str]:
    """Start the task: (entity, detail); a task with nothing to wait for has detail set."""
    spec = json.loads(task.spec)
    kind = task.type
    label = str(spec.get("entity_label") or "")
    if kind == "run_session":
        run = runs.one_off(wb, project, str(spec.get("script") or ""), _args(spec))
        wb.store.update(
            JobRun, pk(run), cpu=_cpu(spec.get("cpu")), memory=_memory(spec.get("memory"))
        )
        return f"run:{pk(run)}", ""
    if kind == "create_job":
        name = str(spec.get("name") or label)
        try:
            job = jobs.get(wb, project, name)  # made by an earlier launch
        except NotFound:
            job = jobs.create(
                wb,
                project.name,
                jobs.JobSpec(
                    name=name,
                    script=str(spec.get("script") or ""),
                    args=_args(spec),
                    schedule=str(spec.get("schedule") or ""),
                    timeout=_number(spec.get("timeout"), 0.0),
                    cpu=_cpu(spec.get("cpu")),
                    memory=_memory(spec.get("memory")),
                    env=_env(spec),
                ),
            )
        return f"job:{pk(job)}", f"job {job.name}"
    if kind == "run_job":
        job_id = _entity(wb, project, label, "job")
        changes: dict[str, Any] = {}
        if spec.get("cpu") is not None:
            changes["cpu"] = _cpu(spec["cpu"])
        if spec.get("memory") is not None:
            changes["memory"] = _memory(spec["memory"])
        if changes:
            wb.store.update(Job, job_id, **changes)
        to_run = jobs.get_by_id(wb, job_id)
        if to_run is None:
            raise CdswError(f"the job of entity_label {label!r} was deleted")
        run = runs.request(wb, to_run, trigger="amp")
        return f"run:{pk(run)}", ""
    if kind == "create_model":
        return _create_model(wb, project, spec, label)
    if kind == "build_model":
        model = models.get_by_id(wb, _entity(wb, project, label, "model"))
        build = builds.request(wb, model, comment=str(spec.get("comment") or "AMP"))
        return f"build:{pk(build)}", ""
    if kind == "deploy_model":
        model = models.get_by_id(wb, _entity(wb, project, label, "model"))
        deployment = deployments.create(
            wb,
            model,
            cpu=_cpu(spec["cpu"]) if spec.get("cpu") is not None else None,
            memory=_memory(spec["memory"]) if spec.get("memory") is not None else None,
            replicas=spec.get("replicas"),
            env=_env(spec),
        )
        return f"deployment:{pk(deployment)}", ""
    # start_application
    name = str(spec.get("name") or spec.get("subdomain") or "app")
    try:
        app = apps.get(wb, project, name)
        apps.start(wb, app)
    except NotFound:
        app = apps.create(
            wb,
            project.name,
            apps.AppSpec(
                name=name[:64],
                script=str(spec.get("script") or ""),
                subdomain=str(spec.get("subdomain") or ""),
                description=str(spec.get("short_summary") or ""),
                cpu=_cpu(spec.get("cpu")),
                memory=_memory(spec.get("memory")),
                env=_env(spec),
            ),
        )
    return f"app:{pk(app)}", ""


def _create_model(
    wb: Workbench, project: Project, spec: dict[str, Any], label: str
) -> tuple[str, str]:
    """The model, with the file and function of its build_model task; its access key
    into the project's variables when the task names one."""
    name = str(spec.get("name") or label)
    existing = [m for m in projects.models_of(wb, project.name) if m.name == name]
    if existing:
        model = existing[0]
    else:
        build = _build_task(wb, project, label)
        example_in, example_out = _example(build)
        resources = spec.get("default_resources") or {}
        policy = spec.get("default_replication_policy") or {}
        model = models.create(
            wb,
            project.name,
            models.ModelSpec(
                name=name,
                file=str(build.get("target_file_path") or ""),
                function=str(build.get("target_function_name") or ""),
                kernel="r" if str(build.get("kernel") or "").lower().startswith("r") else "python3",
                description=str(spec.get("description") or ""),
                example_input=example_in,
                example_output=example_out,
                replicas=int(_number(policy.get("num_replicas"), 1)),
                cpu=_cpu(resources.get("cpu")),
                memory=_memory(resources.get("memory")),
                env=_env(build),
            ),
        )
    detail = f"model {model.name}"
    key_var = str(spec.get("access_key_environment_variable") or "")
    if key_var:
        env_service.set_vars(wb, "project", pk(project), {v.env_key(key_var): model.access_key})
        detail += f", its key in {key_var}"
    return f"model:{pk(model)}", detail


def _check(wb: Workbench, task: AmpTask) -> tuple[str, str] | None:
    """How what the task started stands: None (still going), or (status, detail)."""
    kind, _, ident = task.entity.partition(":")
    with wb.store.session() as s:
        if kind == "run":
            run = s.get(JobRun, int(ident))
            if run is None:
                return "failed", "its run was deleted"
            if run.status not in RUN_FINAL:
                return None
            if run.status == "succeeded":
                return "succeeded", f"run {run.number} succeeded"
            if run.reason.startswith("interrupted"):  # by a controller's end: not the task's
                return "pending", f"run {run.number} was interrupted: started again"
            return "failed", f"run {run.number} {run.status}: {run.reason}"
        if kind == "build":
            build = s.get(Build, int(ident))
            if build is None:
                return "failed", "its build was deleted"
            if build.status == "built":
                return "succeeded", f"build {build.number} built"
            if build.status in ("failed", "cancelled", "timedout"):
                return "failed", f"build {build.number} {build.status}: {build.reason}"
            return None
        if kind == "deployment":
            d = s.get(Deployment, int(ident))
            if d is None:
                return "failed", "its deployment was deleted"
            if d.status == "deployed":
                return "succeeded", f"deployment {d.id} deployed"
            if d.status in ("failed", "stopped"):
                return "failed", f"deployment {d.id} {d.status}: {d.reason}"
            return None
        if kind == "app":
            app = s.get(Application, int(ident))
            if app is None:
                return "failed", "its application was deleted"
            if app.status == "running":
                return "succeeded", f"application {app.name} running at {apps.url(wb, app)}"
            if app.restarts >= APP_TRIES or app.status == "failed":
                return "failed", f"application {app.name} keeps ending: {app.reason}"
            return None
    return "succeeded", ""


def step(wb: Workbench, project: Project) -> AmpTask | None:
    """Move the project's launch on by one step: start its first unfinished task, or mark
    it once what it started has ended. The task it looked at (None: none to look at)."""
    for task in tasks_of(wb, project):
        if task.status in DONE:
            continue
        if task.status == "failed":
            return None  # stopped here until resumed
        if task.status == "pending":
            _run_start(wb, project, task)
        else:
            outcome = _check(wb, task)
            if outcome is not None:
                status, detail = outcome
                done = None if status == "pending" else utcnow()
                wb.store.update(AmpTask, pk(task), status=status, detail=detail,
                                finished_at=done)  # fmt: skip
        return task
    return None


def _run_start(wb: Workbench, project: Project, task: AmpTask) -> None:
    now = utcnow()
    try:
        entity, detail = _start(wb, project, task)
    except Exception as exc:  # a bug too fails the task, not the controller's pass
        why = exc.message if isinstance(exc, CdswError) else f"internal error: {exc!r}"[:500]
        wb.store.update(
            AmpTask, pk(task), status="failed", detail=why, started_at=now, finished_at=utcnow()
        )
        return
    if detail:  # made at once, nothing to wait for
        wb.store.update(AmpTask, pk(task), status="succeeded", entity=entity, detail=detail,
                        started_at=now, finished_at=utcnow())  # fmt: skip
    else:
        wb.store.update(AmpTask, pk(task), status="running", entity=entity, started_at=now)


def launching(wb: Workbench) -> list[Project]:
    """Projects whose launch has a task pending or running."""
    with wb.store.session() as s:
        ids = set(
            s.exec(
                select(AmpTask.project_id).where(col(AmpTask.status).in_(("pending", "running")))
            )
        )
        return [p for p in (s.get(Project, i) for i in sorted(ids)) if p is not None]
