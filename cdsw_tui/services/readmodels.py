"""Read models both faces show (the workbench's lists and the CLI's listings): one query per
listing, whatever the size of the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select

from cdsw_tui.services.context import Workbench
from cdsw_tui.services.models import status_rule
from cdsw_tui.store import DEPLOYMENT_ACTIVE, Build, Deployment, Model, Project, Replica, pk

RECENT_CALLS = 200  # the gateway's calls a model screen reads per refresh


@dataclass
class ProjectRow:
    id: int
    name: str
    runtime: str
    engine: str
    path: str
    models: int
    last_build: datetime | None
    placement: list[str] = field(default_factory=list)  # swarm constraints, one per line
    python: str = ""


@dataclass
class ModelRow:
    id: int
    project: str
    name: str
    status: str
    build: int | None
    deployment: int | None
    replicas: int | None
    updated: datetime | None
    file: str
    function: str
    kernel: str = "python3"
    description: str = ""
    example_input: str = ""
    example_output: str = ""
    cpu: float = 1.0
    memory: int = 2048
    gpu: int = 0
    default_replicas: int = 1  # the model's own count, for its next deployment
    newest_status: str | None = None  # the newest build's status
    serving_build: int | None = None  # the active deployment's build, else the newest built


def _dt(value: object) -> datetime | None:
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def projects(wb: Workbench, project_id: int | None = None) -> list[ProjectRow]:
    """Every project (or the one ``project_id``), with its model count and last build."""
    sql = text(
        """
        SELECT p.id, p.name, p.runtime, p.engine, p.path,
               (SELECT count(*) FROM model m WHERE m.project_id = p.id),
               (SELECT max(b.created_at) FROM build b JOIN model m ON m.id = b.model_id
                 WHERE m.project_id = p.id),
               p.placement, p.python
        FROM project p WHERE :pid IS NULL OR p.id = :pid ORDER BY p.name
        """
    )
    with wb.store.engine.connect() as conn:
        return [
            ProjectRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                _dt(r[6]),
                [c for c in (r[7] or "").splitlines() if c],
                r[8] or "",
            )
            for r in conn.execute(sql, {"pid": project_id})
        ]


def models(
    wb: Workbench, project_id: int | None = None, *, model_id: int | None = None
) -> list[ModelRow]:
    """Each model with its newest build and its newest active deployment, in one query."""
    sql = """
        SELECT m.id, p.name, m.name, m.updated_at, m.file, m.function,
               b.number, b.status, b.created_at,
               d.id, d.status, d.replicas, d.deployed_at, d.reason,
               (SELECT x.status FROM deployment x WHERE x.model_id = m.id
                ORDER BY x.id DESC LIMIT 1) AS newest,
               m.kernel, m.description, m.example_input, m.example_output,
               m.cpu, m.memory, m.gpu, m.replicas,
               COALESCE(
                 (SELECT number FROM build WHERE id = d.build_id),
                 (SELECT number FROM build WHERE model_id = m.id AND status = 'built'
                  ORDER BY number DESC LIMIT 1)) AS serving
        FROM model m
        JOIN project p ON p.id = m.project_id
        LEFT JOIN build b ON b.id = (
            SELECT id FROM build WHERE model_id = m.id ORDER BY number DESC LIMIT 1)
        LEFT JOIN deployment d ON d.id = (
            SELECT id FROM deployment WHERE model_id = m.id
              AND status IN ('pending', 'deploying', 'deployed', 'stopping')
            ORDER BY id DESC LIMIT 1)
        {where}
        ORDER BY p.name, m.name
    """
    clauses = []
    if project_id is not None:
        clauses.append("m.project_id = :pid")
    if model_id is not None:
        clauses.append("m.id = :mid")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with wb.store.engine.connect() as conn:
        rows = conn.execute(
            text(sql.format(where=where)), {"pid": project_id, "mid": model_id}
        ).all()
    result = []
    for r in rows:
        status = status_rule(r[10], r[14], r[7])
        updated = max((t for t in (_dt(r[3]), _dt(r[8]), _dt(r[12])) if t), default=None)
        result.append(
            ModelRow(
                r[0],
                r[1],
                r[2],
                status,
                r[6],
                r[9],
                r[11],
                updated,
                r[4],
                r[5],
                kernel=r[15],
                description=r[16],
                example_input=r[17],
                example_output=r[18],
                cpu=r[19],
                memory=r[20],
                gpu=r[21],
                default_replicas=r[22],
                newest_status=r[7],
                serving_build=r[23],
            )
        )
    return result


@dataclass
class ModelDetail:
    model: Model
    project: Project
    status: str
    builds: list[Build]
    deployments: list[Deployment]
    active: Deployment | None
    replicas: list[Replica]
    replaced: list[Replica]  # the shown deployment's stopped replicas: their counts are its history
    env: dict[str, str]
    build_numbers: dict[int, int]
    calls: list[dict[str, Any]]  # the gateway's recent calls of the model, oldest first
    latency: dict[str, Any]  # their p50/p95/p99 over the last minute


def model_detail(wb: Workbench, ref: str) -> ModelDetail:
    from cdsw_tui.services import builds, deployments, env, logs, models

    model = models.resolve(wb, ref)
    project = models.project_of(wb, model)
    build_list = builds.list_builds(wb, model)
    deployment_list = deployments.list_deployments(wb, model)
    active = next(
        (
            d
            for d in deployment_list
            if d.status in ("pending", "deploying", "deployed", "stopping")
        ),
        None,
    )
    shown = active or (deployment_list[0] if deployment_list else None)
    every = deployments.replicas_of(wb, shown, current=False) if shown else []
    replicas = [r for r in every if r.status != "stopped"]
    replaced = [r for r in reversed(every) if r.status == "stopped"][:20]
    calls, _ = logs.recent_calls(wb, model, RECENT_CALLS)
    return ModelDetail(
        model=model,
        project=project,
        status=models.status(wb, model),
        builds=build_list,
        deployments=deployment_list,
        active=active,
        replicas=replicas,
        replaced=replaced,
        env=env.list_vars(wb, "model", pk(model)),
        build_numbers={pk(b): b.number for b in build_list},
        calls=calls,
        latency=logs.latency(calls),
    )


def deployments(
    wb: Workbench, model_id: int | None = None, *, active: bool = False
) -> list[dict[str, Any]]:
    """Deployments as the CLI lists them (``deployments.summary``'s fields), newest first,
    with their model's name and their build in one query; ``active``: only those that run
    or are about to."""
    from cdsw_tui.services import deployments as deployment_service

    query = (
        select(Deployment, Model.name, Project.name, Build)
        .join(Model, col(Model.id) == Deployment.model_id)
        .join(Project, col(Project.id) == Model.project_id)
        .join(Build, col(Build.id) == Deployment.build_id, isouter=True)
        .order_by(col(Deployment.id).desc())
    )
    if model_id is not None:
        query = query.where(Deployment.model_id == model_id)
    if active:
        query = query.where(col(Deployment.status).in_(DEPLOYMENT_ACTIVE))
    with wb.store.session() as s:
        rows = list(s.exec(query))
    return [
        deployment_service.described(wb, d, f"{project}/{model}", build)
        for d, model, project, build in rows
    ]


def builds(wb: Workbench, model: Model) -> list[dict[str, Any]]:
    """A model's builds as the CLI lists them, newest first, in one query (and one for
    the project's name)."""
    from cdsw_tui.services import builds as build_service
    from cdsw_tui.services import models as model_service

    ref = f"{model_service.project_of(wb, model).name}/{model.name}"
    return [build_service.described(b, ref) for b in build_service.list_builds(wb, model)]
