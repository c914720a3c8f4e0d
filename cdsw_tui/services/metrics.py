"""Tracked model metrics (the cdsw/cml metrics API): stored per model, build and
deployment, read by time window, extended by delayed and aggregate metrics.

Records are shaped as CML's ``read_metrics`` returns them
(https://docs.cloudera.com/machine-learning/cloud/models/topics/ml-tracking-model-metrics-using-python.html):
``predictionUuid``, ``startTimeStampMs``, ``endTimeStampMs``, ``metrics`` and the CRNs
of the model, build and deployment. Our CRNs are ``crn:cdsw-tui:<kind>/<id>``.

Callers from model code and project scripts reach ``api`` through the gateway with a
token: one per model (given to its replicas and builds) or one for the whole home
(derived from ``run/metrics.key``, which only the home's owner can read).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from cdsw_tui.engine.process import private_key
from cdsw_tui.errors import CdswError, NotFound
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Deployment, Model, TrackedMetric

KEY_FILE = "run/metrics.key"
CRN_PREFIX = "crn:cdsw-tui:"
HOME_SCOPE = "*"
PROJECT_SCOPE = "project-"
MAX_RECORDS = 100_000  # one read answers at most this many (the newest of the window)


class Unauthorized(CdswError):
    """The token is missing, wrong, or not for this model."""


def crn(kind: str, ident: int | None) -> str | None:
    return None if ident is None else f"{CRN_PREFIX}{kind}/{ident}"


def ident(value: str | None) -> int | None:
    """The id in one of our CRNs."""
    return int(value.rsplit("/", 1)[1]) if value else None


def token(wb: Workbench, scope: int | str) -> str:
    """The metrics token of one model (its id) or of the whole home (``HOME_SCOPE``):
    ``<scope>:<HMAC of the scope under the home's metrics key>``."""
    (wb.home / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    key = private_key(wb.home / KEY_FILE, lambda: secrets.token_hex(32).encode())
    mac = hmac.new(key, f"cdsw-metrics {scope}".encode(), hashlib.sha256).hexdigest()
    return f"{scope}:{mac}"


def project_scope(project_id: int) -> str:
    """The scope of a project's runs: every model of that project."""
    return f"{PROJECT_SCOPE}{project_id}"


def _may(wb: Workbench, scope: str, model_id: int) -> bool:
    """Whether a token of ``scope`` may act on the model ``model_id``."""
    if scope in (HOME_SCOPE, str(model_id)):
        return True
    if scope.startswith(PROJECT_SCOPE):
        with wb.store.session() as s:
            model = s.get(Model, model_id)
        return model is not None and scope == project_scope(model.project_id)
    return False


def token_scope(wb: Workbench, given: str) -> str:
    """``HOME_SCOPE``, a model id or a project's scope, whichever the token was made for."""
    scope = given.partition(":")[0]
    known = scope == HOME_SCOPE or scope.isdigit()
    known = known or (scope.startswith(PROJECT_SCOPE) and scope[len(PROJECT_SCOPE) :].isdigit())
    if known and hmac.compare_digest(given.encode(), token(wb, scope).encode()):
        return scope
    raise Unauthorized("no valid metrics token (Authorization: Bearer <CDSW_METRICS_TOKEN>)")


def _id(value: Any, kind: str) -> int | None:
    if value in (None, ""):
        return None
    text = str(value)
    if text.startswith(CRN_PREFIX):
        found, _, ident = text[len(CRN_PREFIX) :].partition("/")
        if found != kind:
            raise CdswError(f"{text} is a {found} CRN, not a {kind} CRN")
        text = ident
    if not text.isdigit():
        raise CdswError(f"{value!r} is not a {kind} CRN of this workbench ({CRN_PREFIX}{kind}/N)")
    return int(text)


def _window(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CdswError(f"{name} must be a number of milliseconds since the epoch")
    return int(value)


def record_calls(wb: Workbench, model_id: int, deployment_id: int, records: list[dict]) -> None:
    """File what a replica of ``deployment_id`` tracked (the runner's ``metric`` records)."""
    if not records:
        return
    with wb.store.session() as s:
        deployment = s.get(Deployment, deployment_id)
        build_id = deployment.build_id if deployment else None
        for record in records:
            metrics = record.get("metrics")
            start = record.get("startTimeStampMs")
            if not isinstance(metrics, dict) or not isinstance(start, int):
                continue  # not a record of this runner's
            end = record.get("endTimeStampMs")
            s.add(
                TrackedMetric(
                    model_id=model_id,
                    deployment_id=deployment_id,
                    build_id=build_id,
                    uuid=record.get("predictionUuid") or None,
                    start_ms=start,
                    end_ms=end if isinstance(end, int) else start,
                    replica=str(record.get("replica", ""))[:200],
                    metrics=json.dumps(metrics, default=str),
                )
            )
        s.commit()


def read(
    wb: Workbench,
    *,
    model_id: int | None = None,
    deployment_id: int | None = None,
    build_id: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[dict]:
    """Records that started within [start_ms, end_ms], oldest first, CML-shaped."""
    query = select(TrackedMetric, Build.number).join(
        Build, col(Build.id) == col(TrackedMetric.build_id), isouter=True
    )
    for column, value in (
        (TrackedMetric.model_id, model_id),
        (TrackedMetric.deployment_id, deployment_id),
        (TrackedMetric.build_id, build_id),
    ):
        if value is not None:
            query = query.where(col(column) == value)
    if start_ms is not None:
        query = query.where(col(TrackedMetric.start_ms) >= start_ms)
    if end_ms is not None:
        query = query.where(col(TrackedMetric.start_ms) <= end_ms)
    query = query.order_by(col(TrackedMetric.start_ms).desc(), col(TrackedMetric.id).desc())
    with wb.store.session() as s:
        rows = list(s.exec(query.limit(MAX_RECORDS)))
    return [_cml(row, number) for row, number in reversed(rows)]


def _cml(row: TrackedMetric, build_number: int | None) -> dict:
    return {
        "predictionUuid": row.uuid,
        "startTimeStampMs": row.start_ms,
        "endTimeStampMs": row.end_ms,
        "metrics": json.loads(row.metrics),
        "modelCrn": crn("model", row.model_id),
        "modelBuildCrn": crn("build", row.build_id),
        "modelDeploymentCrn": crn("deployment", row.deployment_id),
        # ours, for the CLI: which build number and replica it came from
        "buildNumber": build_number,
        "replica": row.replica,
        "aggregate": row.aggregate,
    }


def api(wb: Workbench, action: str, bearer: str, payload: Any) -> dict:
    """One call of the metrics service (``read``, ``delayed``, ``aggregate``), checked
    against the caller's token; raises Unauthorized, NotFound or CdswError."""
    scope = token_scope(wb, bearer)
    if not isinstance(payload, dict):
        raise CdswError("the body must be a JSON object")
    if action == "read":
        return _api_read(wb, scope, payload)
    if action == "delayed":
        return _api_delayed(wb, scope, payload)
    if action == "aggregate":
        return _api_aggregate(wb, scope, payload)
    raise NotFound(f"no metrics action {action!r} (read, delayed, aggregate)")


def _owner(wb: Workbench, scope: str, payload: dict) -> tuple[int, int | None, int | None]:
    """The model, deployment and build the payload names, within the token's scope."""
    model_id = _id(payload.get("model_crn"), "model")
    deployment_id = _id(payload.get("model_deployment_crn"), "deployment")
    build_id = _id(payload.get("model_build_crn"), "build")
    with wb.store.session() as s:
        for kind, ident in (("deployment", deployment_id), ("build", build_id)):
            if ident is None:
                continue
            row: Deployment | Build | None = (
                s.get(Deployment, ident) if kind == "deployment" else s.get(Build, ident)
            )
            if row is None or (model_id is not None and row.model_id != model_id):
                raise NotFound(f"no {kind} {crn(kind, ident)}")
            model_id = row.model_id
        if model_id is None and scope.isdigit():
            model_id = int(scope)
        if model_id is None:
            raise CdswError("name a model_crn, model_build_crn or model_deployment_crn")
        if s.get(Model, model_id) is None:
            raise NotFound(f"no model {crn('model', model_id)}")
    if not _may(wb, scope, model_id):
        raise Unauthorized("this metrics token is for another model")
    return model_id, deployment_id, build_id


def _api_read(wb: Workbench, scope: str, payload: dict) -> dict:
    model_id, deployment_id, build_id = _owner(wb, scope, payload)
    records = read(
        wb,
        model_id=model_id,
        deployment_id=deployment_id,
        build_id=build_id,
        start_ms=_window(payload.get("start_timestamp_ms"), "start_timestamp_ms"),
        end_ms=_window(payload.get("end_timestamp_ms"), "end_timestamp_ms"),
    )
    return {
        "modelCrn": crn("model", model_id),
        "modelBuildCrn": crn("build", build_id),
        "modelDeploymentCrn": crn("deployment", deployment_id),
        "metrics": records,
    }


def _metrics_of(payload: dict) -> dict:
    metrics = payload.get("metrics")
    if not isinstance(metrics, dict):
        raise CdswError("metrics must be a JSON object")
    return metrics


def _api_delayed(wb: Workbench, scope: str, payload: dict) -> dict:
    metrics = _metrics_of(payload)
    uuid = str(payload.get("prediction_uuid") or "")
    with wb.store.session() as s:
        row = s.exec(select(TrackedMetric).where(TrackedMetric.uuid == uuid)).first()
        if row is None or not _may(wb, scope, row.model_id):
            raise NotFound(f"no tracked prediction {uuid!r}")
        row.metrics = json.dumps({**json.loads(row.metrics), **metrics}, default=str)
        s.add(row)
        s.commit()
    return {"predictionUuid": uuid}


def _api_aggregate(wb: Workbench, scope: str, payload: dict) -> dict:
    metrics = _metrics_of(payload)
    start = _window(payload.get("start_timestamp_ms"), "start_timestamp_ms")
    end = _window(payload.get("end_timestamp_ms"), "end_timestamp_ms")
    if start is None or end is None or end < start:
        raise CdswError("start_timestamp_ms and end_timestamp_ms must give a window (end ≥ start)")
    model_id, deployment_id, build_id = _owner(wb, scope, payload)
    with wb.store.session() as s:
        if deployment_id is not None and build_id is None:
            deployment = s.get(Deployment, deployment_id)
            build_id = deployment.build_id if deployment else None
        s.add(
            TrackedMetric(
                model_id=model_id,
                deployment_id=deployment_id,
                build_id=build_id,
                start_ms=start,
                end_ms=end,
                aggregate=True,
                metrics=json.dumps(metrics, default=str),
            )
        )
        s.commit()
    return {"modelDeploymentCrn": crn("deployment", deployment_id)}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
