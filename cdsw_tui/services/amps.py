"""AMPs (Cloudera's Applied ML Prototypes): a project folder with a
``.project-metadata.yaml`` whose tasks (runs, jobs, models, applications) are launched in
order. The faces read the file, check its variables and runtime, and write the project
and its tasks (``AmpTask``); the controller runs them (services/amp_steps.py). A failed
task stops the launch; ``resume`` sets it going again from there."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from cdsw_tui.errors import CdswError, NotFound, ValidationError
from cdsw_tui.services import apps, builds, projects
from cdsw_tui.services import env as env_service
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import (
    AmpTask,
    Build,
    Project,
    pk,
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
