"""Deployments: faces ask for one (pending) or for a stop or restart; the controller acts."""

from __future__ import annotations

import json
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.errors import CdswError, Conflict, NotFound
from cdsw_tui.services import builds, models, runtimes
from cdsw_tui.services import env as env_service
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import DEPLOYMENT_ACTIVE, Build, Deployment, Model, Project, Replica, pk
from cdsw_tui.waiting import poll_until

FINAL = ("deployed", "failed", "stopped")


def replica_name(model: Model, deployment_id: int) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{model.slug}-{model.id}-{deployment_id}-{suffix}"


def create(
    wb: Workbench,
    model: Model,
    *,
    build_number: int | None = None,
    build_id: int | None = None,
    replicas: int | str | None = None,
    cpu: float | str | None = None,
    memory: int | str | None = None,
    gpu: int | str | None = None,
    env: dict[str, str] | None = None,
) -> Deployment:
    """A pending deployment of a built build (default: the newest built one)."""
    with wb.store.session() as s:
        query = select(Build).where(Build.model_id == model.id)
        if build_id is not None:
            query = query.where(Build.id == build_id)
        elif build_number is not None:
            query = query.where(Build.number == build_number)
        else:
            query = query.where(Build.status == "built").order_by(col(Build.number).desc())
        build = s.exec(query).first()
    if build is None:
        if build_number is not None:
            raise NotFound(f"model {model.name} has no build {build_number}")
        raise CdswError(
            f"model {model.name} has no built build to deploy; run 'cdsw-tui build' first"
        )
    if build.status != "built":
        raise CdswError(
            f"build {build.number} is {build.status}; only a built build can be deployed"
        )
    deployment = Deployment(
        model_id=pk(model),
        build_id=pk(build),
        replicas=v.replicas(model.replicas if replicas is None else replicas),
        cpu=v.cpu(model.cpu if cpu is None else cpu),
        memory=v.memory(model.memory if memory is None else memory),
        gpu=v.gpu(model.gpu if gpu is None else gpu),
        env=env_service.pack(wb, {v.env_key(k): val for k, val in (env or {}).items()}),
    )
    with wb.store.session() as s:
        s.add(deployment)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            busy = s.exec(
                select(Deployment).where(
                    Deployment.model_id == model.id,
                    col(Deployment.status).in_(("pending", "deploying")),
                )
            ).first()
            which = f" (deployment {busy.id})" if busy else ""
            raise Conflict(
                f"a deployment of {model.name} is already in progress{which}; wait for it or stop it"
            ) from None
        s.refresh(deployment)
    return deployment


@dataclass
class Requested:
    """What a deploy request made: a deployment now, or a build that deploys once built."""

    build: Build | None = None
    deployment: Deployment | None = None


def request(
    wb: Workbench,
    model: Model,
    *,
    new_build: bool = False,
    build_number: int | None = None,
    comment: str = "",
    replicas: int | str | None = None,
    cpu: float | str | None = None,
    memory: int | str | None = None,
    gpu: int | str | None = None,
    env: dict[str, str] | None = None,
) -> Requested:
    """The one way faces ask for a deployment (the CLI's deploy and model create, the
    Deploy Model, Deploy New Build and re-deploy forms): of a built build now, or of a
    new build once it is built. Every field is checked before anything is written."""
    with wb.store.session() as s:
        project = s.get(Project, model.project_id)
    if project is not None:
        runtimes.preflight(project.runtime)
    checked_replicas = v.replicas(model.replicas if replicas is None else replicas)
    checked_cpu = v.cpu(model.cpu if cpu is None else cpu)
    checked_memory = v.memory(model.memory if memory is None else memory)
    checked_gpu = v.gpu(model.gpu if gpu is None else gpu)
    checked_env = {v.env_key(k): val for k, val in (env or {}).items()}
    if new_build:
        kept = {
            "replicas": checked_replicas,
            "cpu": checked_cpu,
            "memory": checked_memory,
            "gpu": checked_gpu,
            "env": env_service.pack(wb, checked_env),  # sealed at rest
        }
        return Requested(build=builds.request(wb, model, comment=comment, deploy=kept))
    return Requested(
        deployment=create(
            wb,
            model,
            build_number=build_number,
            replicas=checked_replicas,
            cpu=checked_cpu,
            memory=checked_memory,
            gpu=checked_gpu,
            env=checked_env,
        )
    )


def get(wb: Workbench, deployment_id: int) -> Deployment:
    with wb.store.session() as s:
        row = s.get(Deployment, deployment_id)
    if row is None:
        raise NotFound(f"no deployment {deployment_id}")
    return row


def list_deployments(wb: Workbench, model: Model | None = None) -> list[Deployment]:
    with wb.store.session() as s:
        query = select(Deployment).order_by(col(Deployment.id).desc())
        if model is not None:
            query = query.where(Deployment.model_id == model.id)
        return list(s.exec(query))


def replicas_of(wb: Workbench, deployment: Deployment, *, current: bool = True) -> list[Replica]:
    with wb.store.session() as s:
        query = (
            select(Replica).where(Replica.deployment_id == deployment.id).order_by(col(Replica.id))
        )
        if current:
            query = query.where(Replica.status != "stopped")
        return list(s.exec(query))


def _flag(wb: Workbench, model: Model, **flags: bool) -> Deployment:
    deployment = models.active_deployment(wb, model)
    if deployment is None:
        raise CdswError(f"model {model.name} has no active deployment")
    with wb.store.session() as s:
        row = s.get(Deployment, deployment.id)
        assert row is not None
        for key, value in flags.items():
            setattr(row, key, value)
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def stop(wb: Workbench, model: Model) -> list[Deployment]:
    """Stops every active deployment of the model (a rollout in progress too)."""
    stopped = []
    with wb.store.session() as s:
        rows = s.exec(
            select(Deployment).where(
                Deployment.model_id == model.id, col(Deployment.status).in_(DEPLOYMENT_ACTIVE)
            )
        )
        for row in rows:
            row.stop_requested = True
            s.add(row)
            stopped.append(row)
        s.commit()
    if not stopped:
        raise CdswError(f"model {model.name} has no active deployment")
    return stopped


def restart(wb: Workbench, model: Model) -> Deployment:
    deployment = models.active_deployment(wb, model)
    if deployment is None or deployment.status != "deployed":
        raise CdswError(f"model {model.name} has no deployed deployment to restart")
    return _flag(wb, model, restart_requested=True)


def scale(wb: Workbench, model: Model, replicas: int | str) -> Deployment:
    n = v.replicas(replicas)
    deployment = models.active_deployment(wb, model)
    if deployment is None or deployment.status != "deployed":
        raise CdswError(f"model {model.name} has no deployed deployment to scale")
    with wb.store.session() as s:
        row = s.get(Deployment, deployment.id)
        assert row is not None
        row.replicas = n
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def wait_scaled(wb: Workbench, deployment: Deployment, poll: float = 0.1) -> Deployment:
    """Block until the deployment runs exactly its replica count with none starting or
    stopping, or it is no longer deployed (the caller reads why)."""
    while True:
        deployment = get(wb, pk(deployment))
        if deployment.status != "deployed":
            return deployment
        rows = replicas_of(wb, deployment)
        running = sum(1 for r in rows if r.status == "running")
        if running == deployment.replicas and running == len(rows):
            return deployment
        time.sleep(poll)


def wait(
    wb: Workbench,
    deployment: Deployment,
    *,
    until: tuple[str, ...] = FINAL,
    timeout: float | None = None,
    poll: float = 0.1,
) -> Deployment:
    """The deployment once its status is one of ``until``, or as it is at ``timeout``."""
    ident = pk(deployment)
    return poll_until(
        lambda: get(wb, ident), timeout, done=lambda d: d.status in until, interval=poll
    )


def wait_requested(wb: Workbench, build: Build, timeout: float = 15.0) -> Deployment:
    """The deployment a built build asked for: the controller makes it just after it
    records the build built, so it may take a moment; its refusal is on the build."""
    deadline = time.monotonic() + timeout
    while True:
        deployment = for_build(wb, build)
        if deployment is not None:
            return deployment
        build = builds.refresh(wb, build)
        if build.reason or time.monotonic() > deadline:
            raise CdswError(build.reason or f"build {build.number} was not deployed")
        time.sleep(0.05)


def for_build(wb: Workbench, build: Build) -> Deployment | None:
    with wb.store.session() as s:
        return s.exec(
            select(Deployment)
            .where(Deployment.build_id == build.id)
            .order_by(col(Deployment.id).desc())
        ).first()


def summary(wb: Workbench, d: Deployment) -> dict[str, Any]:
    """One deployment as the CLI shows it (readmodels.deployments lists many at once)."""
    model = models.get_by_id(wb, d.model_id)
    project = models.project_of(wb, model)
    with wb.store.session() as s:
        build = s.get(Build, d.build_id)
    return described(wb, d, f"{project.name}/{model.name}", build)


def described(wb: Workbench, d: Deployment, ref: str, build: Build | None) -> dict[str, Any]:
    """The fields of ``summary`` from what the caller read already (no query)."""
    return {
        "id": d.id,
        "model": ref,
        "build": build.number if build else None,
        "status": d.status,
        "reason": d.reason,
        "replicas": d.replicas,
        "cpu": d.cpu,
        "memory": d.memory,
        "gpu": d.gpu,
        "env": env_service.shown(env_service.unpack(wb, d.env)),  # the deployment's own level
        "advisory": runtimes.advisory(build.runtime) if build else [],
        "created_at": builds.iso(d.created_at),
        "deployed_at": builds.iso(d.deployed_at),
        "stopped_at": builds.iso(d.stopped_at),
    }


def caveat(wb: Workbench, d: Deployment) -> str:
    """What the deployment's replicas lack compared with CDSW on its runtime, one line ("" when
    nothing). Asked at deploy only: the runtime may have to try something to know."""
    with wb.store.session() as s:
        build = s.get(Build, d.build_id)
    return runtime_caveat(wb, build.runtime) if build else ""


def runtime_caveat(wb: Workbench, runtime: str) -> str:
    """What replicas of ``runtime`` lack here compared with CDSW, or, when nothing, that a
    host account holds the uid model code runs as (REPLICA_UID); "" when all is well."""
    return runtimes.caveat(runtime) or replica_identity(wb.settings.replica_uid).warning


def deploy_built(wb: Workbench, build: Build) -> None:
    """A build asked for by 'Deploy Model' becomes a pending deployment once built; a
    refusal is recorded on the build (the controller calls this and goes on)."""
    if build.status != "built" or not build.deploy_request:
        return
    request = json.loads(build.deploy_request)
    if isinstance(request.get("env"), str):
        request["env"] = env_service.unpack(wb, request["env"])
    model = models.get_by_id(wb, build.model_id)
    try:
        create(wb, model, build_id=pk(build), **request)
    except CdswError as exc:
        wb.store.update(Build, pk(build), reason=f"built, but not deployed: {exc.message}")


def stop_all(wb: Workbench, models: list[Model], timeout: float = 120.0) -> None:
    """Stop every active deployment of these models and wait until they are stopped
    (the controller does it: one is started if none runs)."""
    from cdsw_tui.services import artifacts, background

    running = artifacts.active_of(wb, models)
    if not running:
        return
    by_id = {m.id: m for m in models}
    for model_id in {d.model_id for d in running}:
        stop(wb, by_id[model_id])
    background.ensure(wb)
    if not poll_until(lambda: not artifacts.active_of(wb, models), timeout, interval=0.1):
        raise CdswError(f"the deployments did not stop within {timeout:g} s; nothing was deleted")


def delete_model(wb: Workbench, model: Model) -> list[str]:
    """Delete as the user asks it, in one step: stop what runs, wait, then remove."""
    stop_all(wb, [model])
    return models.delete(wb, model)


def delete_project(wb: Workbench, name: str, remove_copy: bool = False) -> list[str]:
    """Every running deployment of the project stopped first, or nothing is deleted;
    ``remove_copy``: the folder its template was copied into goes too."""
    from cdsw_tui.services import projects

    stop_all(wb, projects.models_of(wb, name))
    copy = projects.template_copy(wb, name) if remove_copy else None
    notes = projects.delete(wb, name)
    if copy is not None:
        projects.remove_copy(copy)
        notes.append(f"{copy} removed (the copy of its template)")
    return notes
