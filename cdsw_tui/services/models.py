"""Models: a function in a project file, with its access key, resources and examples."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from cdsw_tui.errors import Conflict, NotFound, ValidationError
from cdsw_tui.services import artifacts, env, projects, runtimes
from cdsw_tui.services import validation as v
from cdsw_tui.services.access_keys import new_access_key
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import DEPLOYMENT_ACTIVE, Build, Deployment, EnvVar, Model, Project, pk, utcnow


@dataclass
class ModelSpec:
    """What the New Model form and ``model create`` collect."""

    name: str
    file: str
    function: str
    kernel: str = "python3"
    description: str = ""
    example_input: str = ""
    example_output: str = ""
    replicas: int | str = 1
    cpu: float | str = 1.0
    memory: int | str = 2048
    gpu: int | str = 0
    env: dict[str, str] | None = None


def validate(wb: Workbench, project: Project, spec: ModelSpec) -> ModelSpec:
    """Every field checked before anything is written; the first bad one raises."""
    name = v.name(spec.name)
    with wb.store.session() as s:
        exists = s.exec(
            select(Model).where(Model.project_id == project.id, Model.name == name)
        ).first()
    if exists:
        raise Conflict(
            f"a model named {name!r} already exists in project {project.name}", field="name"
        )
    kernel = v.kernel(spec.kernel)
    if kernel == "r" and runtimes.r_from_host(project.runtime) and shutil.which("Rscript") is None:
        raise ValidationError(
            "R is not installed here: Rscript was not found on PATH (install r-base-core and "
            "r-cran-jsonlite, or use the docker runtime with an engine from 'engine build --r')",
            field="kernel",
        )
    path = v.model_file(Path(project.path), spec.file)
    if kernel == "python3" and path.suffix.lower() == ".r":
        raise ValidationError(f"{spec.file} is an R file; choose kernel r", field="kernel")
    if kernel == "r" and path.suffix.lower() != ".r":
        raise ValidationError(f"kernel r needs an .R file, not {spec.file}", field="file")
    function = v.function(path, kernel, spec.function.strip())
    rel = path.relative_to(Path(project.path).resolve()).as_posix()
    in_snapshot(wb, project, rel)
    return ModelSpec(
        name=name,
        file=rel,
        function=function,
        kernel=kernel,
        description=spec.description.strip(),
        example_input=v.json_text(spec.example_input, "example_input"),
        example_output=v.json_text(spec.example_output, "example_output"),
        replicas=v.replicas(spec.replicas),
        cpu=v.cpu(spec.cpu),
        memory=v.memory(spec.memory),
        gpu=v.gpu(spec.gpu),
        env={v.env_key(k): val for k, val in (spec.env or {}).items()},
    )


def in_snapshot(wb: Workbench, project: Project, rel: str) -> None:
    """Refuse a model file that a build would leave out (a .gitignore matches it and git
    does not track it, say): the build would answer FileNotFoundError only at deploy."""
    why = wb.snapshots.left_out(Path(project.path), rel)
    if why:
        raise ValidationError(f"{rel} will not be in the build: {why}", field="file")


def create(wb: Workbench, project_name: str, spec: ModelSpec) -> Model:
    project = projects.get(wb, project_name)
    spec = validate(wb, project, spec)
    model = Model(
        project_id=pk(project),
        name=spec.name,
        slug=v.slug(spec.name),
        description=spec.description,
        file=spec.file,
        function=spec.function,
        kernel=spec.kernel,
        example_input=spec.example_input,
        example_output=spec.example_output,
        access_key=new_access_key(),
        replicas=int(spec.replicas),
        cpu=float(spec.cpu),
        memory=int(spec.memory),
        gpu=int(spec.gpu),
    )
    with wb.store.session() as s:
        s.add(model)
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(
                f"a model named {spec.name!r} already exists in project {project.name}",
                field="name",
            ) from None
        for key, value in (spec.env or {}).items():
            s.add(
                EnvVar(scope="model", scope_id=pk(model), key=key, value=env.stored(wb, key, value))
            )
        s.commit()
        s.refresh(model)
    return model


def resolve(wb: Workbench, ref: str) -> Model:
    """``project/model`` or a model name that is unique across projects."""
    with wb.store.session() as s:
        if "/" in ref:
            project_name, model_name = ref.split("/", 1)
            found = list(s.exec(select(Model).join(Project).where(Project.name == project_name)))
            row = v.pick_by_name(found, model_name, "model", f"in project {project_name}")
            if row is None:
                projects.get(wb, project_name)
                raise NotFound(f"no model named {model_name!r} in project {project_name}")
            assert isinstance(row, Model)
            return row
        rows = list(s.exec(select(Model).where(Model.name == ref)))
        if not rows:
            rows = [m for m in s.exec(select(Model)) if v.slug(m.name) == ref]
    if not rows:
        raise NotFound(f"no model named {ref!r} (see 'cdsw-tui model list')")
    if len(rows) > 1:
        names = ", ".join(sorted(f"{project_of(wb, m).name}/{m.name}" for m in rows))
        raise NotFound(f"model name {ref!r} is in several projects; say which: {names}")
    return rows[0]


def get_by_id(wb: Workbench, model_id: int) -> Model:
    with wb.store.session() as s:
        row = s.get(Model, model_id)
    if row is None:
        raise NotFound(f"no model with id {model_id}")
    return row


def project_of(wb: Workbench, model: Model) -> Project:
    return projects.get_by_id(wb, model.project_id)


def list_models(wb: Workbench, project_name: str | None = None) -> list[Model]:
    with wb.store.session() as s:
        query = select(Model).join(Project).order_by(Project.name, Model.name)
        if project_name:
            project = projects.get(wb, project_name)
            query = query.where(Model.project_id == project.id)
        return list(s.exec(query))


def latest_build(wb: Workbench, model: Model) -> Build | None:
    with wb.store.session() as s:
        return s.exec(
            select(Build).where(Build.model_id == model.id).order_by(col(Build.number).desc())
        ).first()


def active_deployment(wb: Workbench, model: Model) -> Deployment | None:
    with wb.store.session() as s:
        return s.exec(
            select(Deployment)
            .where(Deployment.model_id == model.id, col(Deployment.status).in_(DEPLOYMENT_ACTIVE))
            .order_by(col(Deployment.id).desc())
        ).first()


def status_rule(active: str | None, newest_deployment: str | None, newest_build: str | None) -> str:
    """SPEC §1's model status: the active deployment's; else ``failed`` if the newest
    deployment failed; else ``stopped`` if it was ever deployed; else from the newest
    build (``building``, ``built``, ``failed``); else ``new``. The one rule every
    listing uses."""
    if active:
        return active
    if newest_deployment == "failed":
        return "failed"
    if newest_deployment:
        return "stopped"
    if newest_build in ("queued", "building"):
        return "building"
    if newest_build == "built":
        return "built"
    if newest_build:
        return "failed"  # failed, cancelled or timed out: nothing to serve
    return "new"


def status(wb: Workbench, model: Model) -> str:
    active = active_deployment(wb, model)
    build = latest_build(wb, model)
    with wb.store.session() as s:
        newest = s.exec(
            select(Deployment)
            .where(Deployment.model_id == model.id)
            .order_by(col(Deployment.id).desc())
        ).first()
    return status_rule(
        active.status if active else None,
        newest.status if newest else None,
        build.status if build else None,
    )


def regenerate_key(wb: Workbench, model: Model) -> Model:
    with wb.store.session() as s:
        row = s.get(Model, model.id)
        if row is None:
            raise NotFound(f"model {model.name} no longer exists")
        row.access_key = new_access_key()
        row.updated_at = utcnow()
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def delete(wb: Workbench, model: Model) -> list[str]:
    """Removes builds, artifacts and logs; refused, before anything is removed, while a
    deployment is active (``deployments.stop_all`` first). Returns notes on what could
    not be removed (an engine that is away)."""
    artifacts.refuse_if_deployed(wb, [model])
    runtimes = artifacts.runtimes_of(wb, pk(model))
    with wb.store.session() as s:
        row = s.get(Model, model.id)
        if row is None:
            return []
        for variable in s.exec(
            select(EnvVar).where(EnvVar.scope == "model", EnvVar.scope_id == model.id)
        ):
            s.delete(variable)
        s.delete(row)
        s.commit()
    notes = artifacts.forget(wb, pk(model), runtimes)
    artifacts.prune_steps(wb, model.project_id)  # what only its builds stood on
    return notes


def openapi(wb: Workbench, model: Model) -> dict:
    """The OpenAPI document the gateway serves at /models/<project>/<model>/openapi.json."""
    from cdsw_tui.serving.openapi import document

    return document(
        project=project_of(wb, model).name,
        model=model.name,
        description=model.description,
        function=model.function,
        kernel=model.kernel,
        example_input=model.example_input,
        example_output=model.example_output,
        server=wb.settings.gateway_url,
        api_key_required=model.auth_enabled,
    )
