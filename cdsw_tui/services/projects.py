"""Projects: a directory of code registered in the store."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import and_, or_
from sqlmodel import col, select

from cdsw_tui.errors import Conflict, NotFound, ValidationError
from cdsw_tui.resources import assets_dir
from cdsw_tui.services import artifacts, runtimes
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import EnvVar, Model, Project, pk

TEMPLATES = ("quickstart",)


def get(wb: Workbench, name: str) -> Project:
    with wb.store.session() as s:
        project = s.exec(select(Project).where(Project.name == name)).first()
    if project is None:
        raise NotFound(f"no project named {name!r} (see 'cdsw-tui project list')")
    return project


def get_by_id(wb: Workbench, project_id: int) -> Project:
    with wb.store.session() as s:
        project = s.get(Project, project_id)
    if project is None:
        raise NotFound(f"no project with id {project_id}")
    return project


def list_all(wb: Workbench) -> list[Project]:
    with wb.store.session() as s:
        return list(s.exec(select(Project).order_by(Project.name)))


def free_name(wb: Workbench, base: str = "demo") -> str:
    """A project name not taken yet: ``demo``, else ``demo-2``, ``demo-3``..."""
    taken = {p.name for p in list_all(wb)}
    n = 1
    while (name := base if n == 1 else f"{base}-{n}") in taken:
        n += 1
    return name


def create(
    wb: Workbench,
    name: str,
    *,
    path: str | Path | None = None,
    template: str | None = None,
    runtime: str | None = None,
    engine: str | None = None,
    placement: list[str] | tuple[str, ...] = (),
    python: str | None = None,
    egress: bool = False,
) -> Project:
    name = v.name(name)
    runtime = v.runtime(runtime or wb.settings.runtime)
    engine = v.engine(engine or wb.settings.engine_image)  # before any folder is made
    constraints = v.placement(placement)
    interpreter = _python(runtime, python)
    runtimes.preflight(runtime)
    if path is None and template is None:
        raise ValidationError(
            "give a folder (--path DIR) or a template (--template quickstart)", field="path"
        )
    if template is not None and template not in TEMPLATES:
        raise ValidationError(
            f"unknown template {template!r} (templates: {', '.join(TEMPLATES)})", field="template"
        )
    with wb.store.session() as s:
        if s.exec(select(Project).where(Project.name == name)).first():
            raise Conflict(f"a project named {name!r} already exists", field="name")
    if template is not None:
        target = Path(path).expanduser() if path else wb.projects_dir() / v.slug(name)
        target = outside_home(wb, target.resolve())
        if target.exists() and any(target.iterdir()):
            raise ValidationError(
                f"{target} is not empty (a project deleted earlier may have left its copy of "
                "the template there); a template needs an empty folder: give another "
                f"folder (--path), or remove {target} first",
                field="path",
            )
        source = assets_dir() / "templates" / template
        # bytecode left by whoever ran the template's code is not part of it
        shutil.copytree(
            source,
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for script in target.rglob("*.sh"):
            script.chmod(0o755)
    else:
        assert path is not None  # one of the two, checked above
        target = Path(path).expanduser().resolve()
        if not target.is_dir():
            raise ValidationError(f"folder {path} does not exist", field="path")
        outside_home(wb, target)
    project = Project(
        name=name,
        path=str(target),
        runtime=runtime,
        engine=engine,
        placement=constraints,
        python=interpreter,
        egress=egress,
        template=template or "",
    )
    with wb.store.session() as s:
        s.add(project)
        s.commit()
        s.refresh(project)
    return project


def outside_home(wb: Workbench, folder: Path) -> Path:
    """A project folder must not hold the home (its store, keys and builds would go into
    every build), lie inside it (but for the home's own projects/, where templates go),
    or be /."""
    home = wb.home.resolve()
    if folder == home or folder in home.parents:  # / among them
        why = "it holds"
    elif home in folder.parents and wb.projects_dir().resolve() not in (folder, *folder.parents):
        why = "it lies inside"
    else:
        return folder
    raise ValidationError(
        f"{folder} cannot be a project: {why} the cdsw-tui home {home} (the store, the keys "
        "and the builds), "
        "which must never go into a build; choose the project's own folder",
        field="path",
    )


def _python(runtime: str, python: str | None) -> str:
    """The project's interpreter ("": the controller's); only the local runtime has one."""
    if not python:
        return ""
    if not runtimes.uses_python(runtime):
        raise ValidationError(
            f"--python is for the local runtime; the {runtime} runtime's Python is its "
            "engine's (cdsw-tui engine build --suite bullseye|bookworm|trixie)",
            field="python",
        )
    return v.python(python)


def update(
    wb: Workbench,
    name: str,
    *,
    runtime: str | None = None,
    engine: str | None = None,
    placement: list[str] | tuple[str, ...] | None = None,
    egress: bool | None = None,
) -> Project:
    project = get(wb, name)
    constraints = None if placement is None else v.placement(placement)
    with wb.store.session() as s:
        row = s.get(Project, project.id)
        assert row is not None
        if runtime is not None and v.runtime(runtime) != row.runtime:
            runtimes.preflight(runtime)  # only a change is checked: saving leaves it be
            row.runtime = runtime
        if engine is not None:
            row.engine = v.engine(engine)
        if constraints is not None:
            row.placement = constraints
        if egress is not None:
            row.egress = egress
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def models_of(wb: Workbench, name: str) -> list[Model]:
    project = get(wb, name)
    with wb.store.session() as s:
        return list(s.exec(select(Model).where(Model.project_id == project.id)))


def delete(wb: Workbench, name: str) -> list[str]:
    """Removes the project's models (and their builds, images and logs); the user's folder
    stays. A deployed model refuses the whole delete before anything is removed
    (``deployments.stop_all`` first)."""
    project = get(wb, name)
    model_rows = models_of(wb, name)
    artifacts.refuse_if_deployed(wb, model_rows)
    runtimes = {pk(m): artifacts.runtimes_of(wb, pk(m)) for m in model_rows}
    with wb.store.session() as s:
        for env in s.exec(
            select(EnvVar).where(
                or_(
                    and_(col(EnvVar.scope) == "project", col(EnvVar.scope_id) == project.id),
                    and_(col(EnvVar.scope) == "model", col(EnvVar.scope_id).in_(list(runtimes))),
                )
            )
        ):
            s.delete(env)
        row = s.get(Project, project.id)
        if row is not None:
            s.delete(row)  # its models, builds and deployments go with it (foreign keys)
        s.commit()
    notes: list[str] = []
    for model_id, used in runtimes.items():
        notes.extend(artifacts.forget(wb, model_id, used))
    notes.extend(artifacts.forget_project(wb, pk(project)))
    return notes


def template_copy(wb: Workbench, name: str) -> Path | None:
    """The folder the project's template was copied into, while it is there (None for a
    project of the user's own folder)."""
    project = get(wb, name)
    folder = Path(project.path)
    if not project.template or folder.is_symlink() or not folder.is_dir():
        return None
    return folder


def remove_copy(folder: Path) -> None:
    """Remove a template's copy (a deleted project's): links in it are removed, never
    followed."""
    if folder.is_symlink() or not folder.is_dir():
        return
    shutil.rmtree(folder)


SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", ".ipynb_checkpoints"}


def source_files(wb: Workbench, name: str, limit: int = 2000) -> list[str]:
    """Python and R files of a project, for the New Model form's file picker."""
    import os

    root = Path(get(wb, name).path)
    found: list[str] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for file in sorted(files):
            if file.lower().endswith((".py", ".r")):
                found.append(os.path.relpath(os.path.join(dirpath, file), root))
                if len(found) >= limit:
                    return found
    return found


def functions(wb: Workbench, name: str, file: str) -> dict[str, str | None]:
    """Top-level functions of a project file: name -> None if usable, else why not."""
    path = v.model_file(Path(get(wb, name).path), file)
    return v.functions_in(path, "r" if path.suffix.lower() == ".r" else "python3")


EXAMPLES_FILE = (
    "model-examples.json"  # a template's examples: {"file:function": {"input", "output"}}
)


def example_for(wb: Workbench, name: str, file: str, function: str) -> tuple[str, str]:
    """(example input, example output) to start a New Model with: the last model of this
    project made from the same file and function, else the project's ``model-examples.json``
    (templates carry one), else ``{}`` and nothing."""
    import json

    from cdsw_tui.errors import CdswError
    from cdsw_tui.store import Model

    project = get(wb, name)
    with wb.store.session() as s:
        last = s.exec(
            select(Model)
            .where(Model.project_id == project.id, Model.file == file, Model.function == function)
            .order_by(col(Model.id).desc())
        ).first()
    if last is not None and last.example_input:
        return last.example_input, last.example_output
    try:
        path = v.model_file(Path(project.path), EXAMPLES_FILE)  # inside the project, no link out
        given = json.loads(path.read_text(encoding="utf-8")).get(f"{file}:{function}") or {}
    except (CdswError, OSError, ValueError, AttributeError):
        given = {}
    if not isinstance(given, dict) or "input" not in given:
        return "{}", ""
    output = json.dumps(given["output"]) if "output" in given else ""
    return json.dumps(given["input"]), output
