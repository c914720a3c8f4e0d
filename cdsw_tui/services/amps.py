"""AMPs (Cloudera's Applied ML Prototypes): a project folder with a
``.project-metadata.yaml`` whose tasks (runs, jobs, models, applications) are launched in
order. The faces read the file, check its variables and runtime, and write the project
and its tasks (``AmpTask``); the controller takes each project's first unfinished task,
starts it, and marks it once what it started has ended (``step``). A failed task stops
the launch; ``resume`` sets it going again from there."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from cdsw_tui.errors import CdswError, NotFound, ValidationError
from cdsw_tui.services import apps, builds, deployments, jobs, models, projects, runs
from cdsw_tui.services import env as env_service
from cdsw_tui.services import validation as v
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

METADATA = ".project-metadata.yaml"
TASK_TYPES = (
    "run_session",
    "create_job",
    "run_job",
    "create_model",
    "build_model",
    "deploy_model",
    "start_application",
)
DONE = ("succeeded",)
APP_TRIES = 3  # an application that ended this many times fails its task
KERNEL_RE = re.compile(r"python\s*(3\.\d+)", re.IGNORECASE)


@dataclass
class Variable:
    name: str
    default: str
    description: str = ""
    required: bool = False


@dataclass
class Metadata:
    name: str
    description: str
    variables: list[Variable]
    python: str  # "3.9" from runtimes' kernel ("": none named)
    kernel: str  # as written ("Python 3.9")
    tasks: list[dict[str, Any]]
    ignored: list[str] = field(default_factory=list)  # top-level fields we do not act on


def _fail(path: Path, why: str) -> CdswError:
    return CdswError(f"{path / METADATA}: {why}")


def read(folder: str | Path) -> Metadata:
    """The folder's ``.project-metadata.yaml``; one line on what is wrong with it."""
    import yaml

    root = Path(folder).expanduser()
    path = root / METADATA
    if not path.is_file() or path.is_symlink():
        raise ValidationError(f"{root} has no {METADATA}; it is not an AMP folder", field="amp")
    text = path.read_text(errors="replace")
    try:
        data = yaml.safe_load(text)
        # variables keep their text as written ("yes", "False"): YAML 1.1 would make booleans
        raw = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise _fail(root, f"not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise _fail(root, "not a mapping of fields")
    variables = []
    raw_vars = raw.get("environment_variables") or {}
    for name, spec in dict(data.get("environment_variables") or {}).items():
        spec = spec if isinstance(spec, dict) else {"default": spec}
        raw_spec: dict[str, Any] = raw_vars.get(name) or {}
        raw_spec = raw_spec if isinstance(raw_spec, dict) else {}
        default = raw_spec.get("default", "") if spec.get("default") is not None else ""
        variables.append(
            Variable(
                name=v.env_key(str(name)),
                default=str(default),
                description=" ".join(str(spec.get("description") or "").split()),
                required=spec.get("required") is True or str(spec.get("required")) == "True",
            )
        )
    kernel = ""
    for runtime in data.get("runtimes") or []:
        if isinstance(runtime, dict) and runtime.get("kernel"):
            kernel = str(runtime["kernel"])
            break
    match = KERNEL_RE.search(kernel)
    tasks = data.get("tasks") or []
    if not isinstance(tasks, list):
        raise _fail(root, "tasks is not a list")
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or task.get("type") not in TASK_TYPES:
            kind = task.get("type") if isinstance(task, dict) else task
            raise _fail(
                root, f"task {i + 1} has type {kind!r}; the types are {', '.join(TASK_TYPES)}"
            )
    known = {"name", "description", "author", "specification_version", "prototype_version",
             "date", "environment_variables", "runtimes", "tasks"}  # fmt: skip
    return Metadata(
        name=str(data.get("name") or root.name),
        description=" ".join(str(data.get("description") or "").split()),
        variables=variables,
        python=match.group(1) if match else "",
        kernel=kernel,
        tasks=tasks,
        ignored=sorted(k for k in data if k not in known),
    )


def values(meta: Metadata, given: dict[str, str]) -> dict[str, str]:
    """Each variable's value: given, else its default. A required one with neither is
    refused (before anything is made), naming it and how to give it."""
    result = {}
    for var in meta.variables:
        value = given.get(var.name, var.default)
        if var.required and value == "":
            raise ValidationError(
                f"the AMP needs {var.name} ({var.description or 'required'}): give it with "
                f"--env {var.name}=VALUE",
                field=var.name,
            )
        result[var.name] = value
    extra = {k: val for k, val in given.items() if k not in result}
    return {**result, **extra}


def find_python(version: str) -> str | None:
    """A working ``python3.X``: on PATH first, then pyenv's (whose shim on PATH runs only
    where that version is selected)."""
    name = f"python{version}"
    places = os.environ.get("PATH", "").split(os.pathsep)
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    places += [str(p / "bin") for p in sorted(pyenv.glob(f"{version}*"), reverse=True)]
    for place in places:
        candidate = Path(place) / name
        if not place or not os.access(candidate, os.X_OK):
            continue
        try:
            return v.python(str(candidate))
        except ValidationError:
            continue  # a shim that does not run, or a Python without venv
    return None


def runtime_for(
    wb: Workbench, meta: Metadata, runtime: str, python: str | None, engine: str | None
) -> dict:
    """What the project is made with for the AMP's ``runtimes`` kernel: ``python`` (a
    ``python3.X`` on PATH) on the local runtime, ``engine`` (the engine of the Debian suite
    whose Python is 3.X) on Docker; {} when the user chose, or the AMP names no Python."""
    if not meta.python:
        return {}
    from cdsw_tui.services import runtimes

    if runtimes.uses_python(runtime):
        if python:
            return {}
        found = find_python(meta.python)
        if found is None:
            raise CdswError(
                f"the AMP runs on {meta.kernel}, and no python{meta.python} is on PATH: install "
                f"it (apt-get install python{meta.python}, or pyenv install {meta.python}) or "
                "give one with --python PATH"
            )
        return {"python": found}
    if not runtimes.uses_engine(runtime) or engine:
        return {}
    from cdsw_tui.engine.backends.docker.images import SUITES, default_tag, suite

    suites = [name for name, version in SUITES.items() if version == meta.python]
    if not suites:
        raise CdswError(
            f"the AMP runs on {meta.kernel}; no engine suite has Python {meta.python} "
            f"({', '.join(f'{k}: {val}' for k, val in SUITES.items())}); choose one with --engine"
        )
    tag = default_tag(wb.settings.engine_image, with_r=False, suite_name=suites[0])
    return {"engine": _engine_here(tag, suites[0], suite())}


def _engine_here(tag: str, suite_name: str, this_suite: str) -> str:
    from cdsw_tui.engine.backends.docker.images import docker_client

    try:
        docker_client(timeout=10).images.get(tag)
    except Exception:
        flag = "" if suite_name == this_suite else f" --suite {suite_name}"
        raise CdswError(
            f"the AMP's Python needs the {suite_name} engine {tag}, which is not here: "
            f"make it with 'cdsw-tui engine build{flag}'"
        ) from None
    return str(tag)


def launch(
    wb: Workbench,
    name: str,
    folder: str | Path,
    given: dict[str, str],
    *,
    runtime: str | None = None,
    python: str | None = None,
    engine: str | None = None,
) -> Project:
    """The project of the AMP in ``folder``, its variables set and its tasks written
    (all of it checked first); the controller runs them."""
    meta = read(folder)
    variables = values(meta, {v.env_key(k): val for k, val in given.items()})
    chosen = v.runtime(runtime or wb.settings.runtime)
    picked = runtime_for(wb, meta, chosen, python, engine)
    project = projects.create(
        wb,
        name,
        path=folder,
        runtime=chosen,
        python=picked.get("python", python),
        engine=picked.get("engine", engine),
    )
    if variables:
        env_service.set_vars(wb, "project", pk(project), variables)
    named: dict[str, str] = {}  # entity_label -> the name its first task gives
    with wb.store.session() as s:
        for i, task in enumerate(meta.tasks):
            label = str(task.get("entity_label") or "")
            name = str(task.get("name") or named.get(label) or task.get("script") or label)
            named.setdefault(label, name)
            s.add(
                AmpTask(
                    project_id=pk(project),
                    position=i,
                    type=str(task["type"]),
                    name=name,
                    spec=json.dumps(task, default=str),
                )
            )
        s.commit()
    return project


def tasks_of(wb: Workbench, project: Project) -> list[AmpTask]:
    with wb.store.session() as s:
        return list(
            s.exec(
                select(AmpTask)
                .where(AmpTask.project_id == project.id)
                .order_by(col(AmpTask.position))
            )
        )


def get_project(wb: Workbench, name: str) -> Project:
    project = projects.get(wb, name)
    if not tasks_of(wb, project):
        raise NotFound(f"project {name} was not launched from an AMP (project create --amp)")
    return project


def resume(wb: Workbench, project: Project) -> AmpTask | None:
    """The first unfinished task set going again (a failed one pending); None when all
    have succeeded."""
    for task in tasks_of(wb, project):
        if task.status in DONE:
            continue
        if task.status == "failed":
            wb.store.update(
                AmpTask, pk(task), status="pending", detail="", entity="", finished_at=None
            )
        return task
    return None


def took(task: AmpTask) -> float | None:
    if task.started_at and task.finished_at:
        return round((task.finished_at - task.started_at).total_seconds(), 1)
    return None


def summary(task: AmpTask) -> dict[str, Any]:
    return {
        "task": task.position + 1,
        "type": task.type,
        "name": task.name,
        "status": task.status,
        "took": took(task),
        "detail": task.detail,
        "entity": task.entity,
    }


def state(wb: Workbench, project: Project) -> str:
    """``running``, ``failed`` (stopped at a task) or ``succeeded``."""
    for task in tasks_of(wb, project):
        if task.status == "failed":
            return "failed"
        if task.status not in DONE:
            return "running"
    return "succeeded"


def log_path(wb: Workbench, task: AmpTask) -> Path | None:
    """The log of what the task started (a run's, a build's, an application's newest
    start's); None for what has none."""
    kind, _, ident = task.entity.partition(":")
    if kind == "run":
        return wb.run_log_path(int(ident))
    if kind == "build":
        with wb.store.session() as s:
            build = s.get(Build, int(ident))
        return builds.log_path(wb, build) if build is not None else None
    if kind == "app":
        app = apps.get_by_id(wb, int(ident))
        run = apps.current_run(wb, app) if app is not None else None
        return wb.run_log_path(pk(run)) if run is not None else None
    return None


def log_tail(wb: Workbench, task: AmpTask, lines: int = 12) -> list[str]:
    from cdsw_tui.engine.buildlog import all_lines

    path = log_path(wb, task)
    return list(all_lines(path))[-lines:] if path is not None else []


# -- the controller's side --------------------------------------------------------------


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
