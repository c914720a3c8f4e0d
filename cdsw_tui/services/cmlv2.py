"""The CML API v2 subset that ``cmlapi`` calls (and the AMPs with it): projects, models,
builds, deployments and runtimes, with CML's field names.

Field names and paths follow Cloudera's reference, "CML API v2"
(https://docs.cloudera.com/machine-learning/cloud/api/topics/ml-api-v2.html, and the
Swagger reference each workspace serves at /api/v2/swagger.html). Ids are strings, as
there; lists come whole (``next_page_token`` is empty), filtered by ``search_filter``
(a JSON object: every field given must match, text by substring) and ordered by
``sort`` (a field, ``-`` first for descending). Names are kept as given: spaces and
capitals included. Every operation takes the caller's scope (``*`` or one project's)
and sees only what it may."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from cdsw_tui.errors import CdswError, Conflict, NotFound
from cdsw_tui.services import (
    api_keys,
    builds,
    deployments,
    metrics,
    projects,
)
from cdsw_tui.services import env as env_service
from cdsw_tui.services import validation as v
from cdsw_tui.services.access_keys import new_access_key
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Deployment, Model, Project, pk

BUILD_STATUS = {"queued": "pending", "building": "building", "built": "built",
                "failed": "build failed", "cancelled": "stopped", "timedout": "timedout"}  # fmt: skip


class Forbidden(CdswError):
    """The key is good but not for this project."""


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def user() -> dict[str, str]:
    import getpass

    name = getpass.getuser()
    return {"username": name, "name": name, "email": ""}


# -- scope ------------------------------------------------------------------------------


def _int(value: str, kind: str) -> int:
    if not str(value).isdigit():
        raise NotFound(f"no {kind} with id {value!r}")
    return int(value)


def scope_of(wb: Workbench, bearer: str) -> str:
    """What an ``Authorization: Bearer`` key may reach: ``*`` (an API key made with
    ``apikey create``, or the home's token) or one project (``CDSW_APIV2_KEY``)."""
    try:
        scope = metrics.token_scope(wb, bearer)
    except metrics.Unauthorized:
        scope = ""
    if scope == metrics.HOME_SCOPE or scope.startswith(metrics.PROJECT_SCOPE):
        return scope
    if bearer and api_keys.valid(wb, bearer):
        return metrics.HOME_SCOPE
    raise metrics.Unauthorized(
        "no valid API key (Authorization: Bearer <CDSW_APIV2_KEY or a key from "
        "'cdsw-tui apikey create'>)"
    )


def project_of(wb: Workbench, scope: str, project_id: str) -> Project:
    ident = _int(project_id, "project")
    if scope != metrics.HOME_SCOPE and scope != metrics.project_scope(ident):
        raise Forbidden(f"this API key is not for project {project_id}")
    return projects.get_by_id(wb, ident)


def find_row(wb: Workbench, table: type, ident: str, kind: str, **owner: int) -> Any:
    with wb.store.session() as s:
        row = s.get(table, _int(ident, kind))
    if row is None or any(getattr(row, k) != val for k, val in owner.items()):
        raise NotFound(f"no {kind} with id {ident!r}")
    return row


def model_of(wb: Workbench, project: Project, model_id: str) -> Model:
    return find_row(wb, Model, model_id, "model", project_id=pk(project))


def build_of(wb: Workbench, model: Model, build_id: str) -> Build:
    return find_row(wb, Build, build_id, "model build", model_id=pk(model))


def deployment_of(wb: Workbench, build: Build, deployment_id: str) -> Deployment:
    return find_row(wb, Deployment, deployment_id, "model deployment", build_id=pk(build))


# -- listing ----------------------------------------------------------------------------


def listing(key: str, items: list[dict], query: dict[str, str]) -> dict[str, Any]:
    """``items`` filtered by ``search_filter`` and ordered by ``sort``, as CML lists."""
    wanted = query.get("search_filter") or ""
    if wanted:
        try:
            criteria = json.loads(wanted)
        except ValueError:
            raise CdswError(f"search_filter must be a JSON object, not {wanted!r}") from None
        if not isinstance(criteria, dict):
            raise CdswError("search_filter must be a JSON object")
        items = [i for i in items if all(_matches(i.get(k), want) for k, want in criteria.items())]
    order = query.get("sort") or ""
    if order:
        field = order.lstrip("-+")
        items = sorted(items, key=lambda i: str(i.get(field, "")), reverse=order.startswith("-"))
    return {key: items, "next_page_token": ""}


def _matches(have: Any, want: Any) -> bool:
    if isinstance(have, str) and isinstance(want, str):
        return want.lower() in have.lower()
    return bool(have == want)


# -- projects ---------------------------------------------------------------------------


def project_dict(wb: Workbench, p: Project) -> dict[str, Any]:
    return {
        "id": str(p.id),
        "name": p.name,
        "description": "",
        "owner": user(),
        "creator": user(),
        "created_at": iso(p.created_at),
        "updated_at": iso(p.created_at),
        "default_engine_type": "ml_runtime",
        "environment": json.dumps(env_service.list_vars(wb, "project", pk(p))),
        "visibility": "private",
        "runtime": p.runtime,  # ours: local, docker or swarm
    }


def list_projects(wb: Workbench, scope: str, query: dict[str, str]) -> dict[str, Any]:
    rows = [
        p
        for p in projects.list_all(wb)
        if scope == metrics.HOME_SCOPE or scope == metrics.project_scope(pk(p))
    ]
    return listing("projects", [project_dict(wb, p) for p in rows], query)


def update_project(wb: Workbench, project: Project, body: dict[str, Any]) -> dict[str, Any]:
    """CML's ``environment`` is the project's whole set of variables, as JSON text."""
    if "environment" in body and body["environment"] not in (None, ""):
        values = body["environment"]
        if isinstance(values, str):
            try:
                values = json.loads(values)
            except ValueError:
                raise CdswError("environment must be a JSON object of variables") from None
        if not isinstance(values, dict):
            raise CdswError("environment must be a JSON object of variables")
        env_service.replace_vars(wb, "project", pk(project), {k: str(x) for k, x in values.items()})
    return project_dict(wb, project)


# -- models, builds, deployments ----------------------------------------------------------


def model_dict(wb: Workbench, m: Model) -> dict[str, Any]:
    return {
        "id": str(m.id),
        "project_id": str(m.project_id),
        "name": m.name,
        "description": m.description,
        "crn": metrics.crn("model", m.id),
        "access_key": m.access_key,
        "auth_enabled": m.auth_enabled,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "creator": user(),
        "default_resources": {
            "cpu_millicores": int(m.cpu * 1000),
            "memory_mb": m.memory,
            "nvidia_gpus": m.gpu,
        },
        "default_replication_policy": {"type": "fixed", "num_replicas": m.replicas},
        "run_as": 0,
        "labels": [],
        "visibility": "private",
    }


def list_models(wb: Workbench, project: Project, query: dict[str, str]) -> dict[str, Any]:
    with wb.store.session() as s:
        rows = list(
            s.exec(select(Model).where(Model.project_id == project.id).order_by(col(Model.id)))
        )
    return listing("models", [model_dict(wb, m) for m in rows], query)


def create_model(wb: Workbench, project: Project, body: dict[str, Any]) -> dict[str, Any]:
    """A model without code yet (its first build names the file and function)."""
    name = v.name(str(body.get("name") or ""))
    model = Model(
        project_id=pk(project),
        name=name,
        slug=v.slug(name),
        description=str(body.get("description") or ""),
        file="",
        function="",
        access_key=new_access_key(),
        auth_enabled=not bool(body.get("disable_authentication", True)),
    )
    try:
        with wb.store.session() as s:
            s.add(model)
            s.commit()
            s.refresh(model)
    except IntegrityError:
        raise Conflict(f"a model named {name!r} already exists in project {project.name}") from None
    return model_dict(wb, model)


def build_dict(b: Build) -> dict[str, Any]:
    return {
        "id": str(b.id),
        "model_id": str(b.model_id),
        "crn": metrics.crn("build", b.id),
        "build_number": b.number,
        "comment": b.comment,
        "file_path": b.file,
        "function_name": b.function,
        "kernel": b.kernel,
        "engine_image": b.engine,
        "runtime_identifier": b.engine or b.runtime,
        "status": BUILD_STATUS.get(b.status, b.status),
        "created_at": iso(b.created_at),
        "updated_at": iso(b.finished_at or b.started_at or b.created_at),
        "built_at": iso(b.finished_at) if b.status == "built" else "",
        "creator": user(),
    }


def list_builds(wb: Workbench, model: Model, query: dict[str, str]) -> dict[str, Any]:
    rows = sorted(builds.list_builds(wb, model), key=lambda b: b.number)  # oldest first
    return listing("model_builds", [build_dict(b) for b in rows], query)


def create_build(wb: Workbench, model: Model, body: dict[str, Any]) -> dict[str, Any]:
    """The model's code is what the build says (``file_path``, ``function_name``,
    ``kernel``); the build is queued as ``cdsw-tui build`` queues one."""
    project = projects.get_by_id(wb, model.project_id)
    kernel = v.kernel(str(body.get("kernel") or model.kernel or "python3"))
    path = v.model_file(Path(project.path), str(body.get("file_path") or model.file))
    function = v.function(path, kernel, str(body.get("function_name") or model.function))
    rel = path.relative_to(Path(project.path).resolve()).as_posix()
    wb.store.update(Model, pk(model), file=rel, function=function, kernel=kernel)
    model = find_row(wb, Model, str(model.id), "model")
    build = builds.request(wb, model, comment=str(body.get("comment") or ""))
    return build_dict(build)


def deployment_dict(wb: Workbench, d: Deployment) -> dict[str, Any]:
    return {
        "id": str(d.id),
        "model_id": str(d.model_id),
        "build_id": str(d.build_id),
        "crn": metrics.crn("deployment", d.id),
        "status": d.status,
        "cpu": d.cpu,
        "memory": round(d.memory / 1024, 3),  # GiB, as CML gives it
        "nvidia_gpus": d.gpu,
        "replicas": d.replicas,
        "environment": json.dumps(env_service.shown(env_service.unpack(wb, d.env))),
        "created_at": iso(d.created_at),
        "updated_at": iso(d.stopped_at or d.deployed_at or d.created_at),
        "stopped_at": iso(d.stopped_at),
        "deployer": user(),
    }


def list_deployments(wb: Workbench, build: Build, query: dict[str, str]) -> dict[str, Any]:
    with wb.store.session() as s:
        rows = list(
            s.exec(
                select(Deployment)
                .where(Deployment.build_id == build.id)
                .order_by(col(Deployment.id))
            )
        )
    return listing("model_deployments", [deployment_dict(wb, d) for d in rows], query)


def create_deployment(
    wb: Workbench, model: Model, build: Build, body: dict[str, Any]
) -> dict[str, Any]:
    if build.status != "built":
        raise CdswError(
            f"build {build.id} is {BUILD_STATUS.get(build.status, build.status)}; "
            "deploy it once it is built"
        )
    memory = body.get("memory")
    environment = body.get("environment") or {}
    if isinstance(environment, str):
        environment = json.loads(environment or "{}")
    deployment = deployments.create(
        wb,
        model,
        build_id=pk(build),
        replicas=body.get("replicas"),
        cpu=body.get("cpu"),
        memory=None if memory in (None, "") else int(float(memory) * 1024),  # GiB
        gpu=body.get("nvidia_gpus"),
        env={str(k): str(x) for k, x in dict(environment).items()},
    )
    return deployment_dict(wb, deployment)


def stop_deployment(wb: Workbench, model: Model, d: Deployment) -> dict[str, Any]:
    if d.status in ("pending", "deploying", "deployed"):
        deployments.stop(wb, model)
    return {}


def restart_deployment(wb: Workbench, model: Model, d: Deployment) -> dict[str, Any]:
    if d.status not in ("deploying", "deployed"):
        raise CdswError(f"deployment {d.id} is {d.status}; only a running one restarts")
    deployments.restart(wb, model)
    return {}


# -- runtimes ---------------------------------------------------------------------------


def list_runtimes(wb: Workbench, query: dict[str, str]) -> dict[str, Any]:
    """What a project can run on here: this machine's Python, and the engine images."""
    import sys

    from cdsw_tui.services import engines

    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = [_runtime(f"local:python{version}", f"Python {version}", "local")]
    try:
        for engine in engines.list_engines():
            python = str(engine.get("python") or "")
            kernel = f"Python {'.'.join(python.split('.')[:2])}" if python else "Python 3"
            for tag in engine.get("tags") or []:
                found.append(_runtime(tag, kernel, "docker"))
                if engine.get("r"):
                    found.append(_runtime(tag, "R", "docker"))
    except CdswError:
        pass  # no Docker engine here: the local runtime alone
    return listing("runtimes", found, query)


def _runtime(image: str, kernel: str, where: str) -> dict[str, Any]:
    return {
        "image_identifier": image,
        "kernel": kernel,
        "edition": "Standard",
        "editor": "Workbench",
        "full_version": "2026.12.1",
        "short_version": "2026.12",
        "description": f"{kernel} on the {where} runtime",
        "register_user_id": 0,
        "status": "ENABLED",
    }
