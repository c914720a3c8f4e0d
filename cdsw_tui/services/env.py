"""Environment variables at four levels: global < project < model < deployment."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlmodel import select

from cdsw_tui.config import DOMAIN
from cdsw_tui.services import sealing
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Deployment, EnvVar, Model, Project, pk

SECRET_RE = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
SECRET_MASK = "••••••"


def looks_secret(key: str) -> bool:
    return bool(SECRET_RE.search(key))


def stored(wb: Workbench, key: str, value: str) -> str:
    """How a value is kept in the store: sealed if its name looks secret."""
    return sealing.seal(wb.home, value) if looks_secret(key) else value


def pack(wb: Workbench, values: dict[str, str]) -> str:
    """A deployment's (or a deploy request's) variables as stored: JSON, secrets sealed."""
    return json.dumps({k: stored(wb, k, val) for k, val in values.items()})


def unpack(wb: Workbench, text: str | None) -> dict[str, str]:
    return {k: sealing.unseal(wb.home, val) for k, val in json.loads(text or "{}").items()}


def shown(values: dict[str, str]) -> dict[str, str]:
    """Variables as listings show them: secret ones masked."""
    return {k: SECRET_MASK if looks_secret(k) else val for k, val in values.items()}


def scope_of(project: Project | None = None, model: Model | None = None) -> tuple[str, int]:
    if model is not None:
        return "model", pk(model)
    if project is not None:
        return "project", pk(project)
    return "global", 0


def list_vars(wb: Workbench, scope: str, scope_id: int = 0) -> dict[str, str]:
    with wb.store.session() as s:
        rows = s.exec(
            select(EnvVar)
            .where(EnvVar.scope == scope, EnvVar.scope_id == scope_id)
            .order_by(EnvVar.key)
        )
        return {row.key: sealing.unseal(wb.home, row.value) for row in rows}


def set_vars(wb: Workbench, scope: str, scope_id: int, values: dict[str, str]) -> None:
    values = {v.env_key(k): val for k, val in values.items()}
    with wb.store.session() as s:
        for key, value in values.items():
            row = s.exec(
                select(EnvVar).where(
                    EnvVar.scope == scope, EnvVar.scope_id == scope_id, EnvVar.key == key
                )
            ).first()
            if row is None:
                row = EnvVar(scope=scope, scope_id=scope_id, key=key)
            row.value = stored(wb, key, value)
            s.add(row)
        s.commit()


def unset_vars(wb: Workbench, scope: str, scope_id: int, keys: list[str]) -> list[str]:
    """Returns the keys that were not set."""
    missing = []
    with wb.store.session() as s:
        for key in keys:
            row = s.exec(
                select(EnvVar).where(
                    EnvVar.scope == scope, EnvVar.scope_id == scope_id, EnvVar.key == key
                )
            ).first()
            if row is None:
                missing.append(key)
            else:
                s.delete(row)
        s.commit()
    return missing


def keep_masked(values: dict[str, str], old: dict[str, str]) -> dict[str, str]:
    """A masked value left as it was in a form keeps the stored one."""
    return {k: (old[k] if val == SECRET_MASK and k in old else val) for k, val in values.items()}


def replace_vars(wb: Workbench, scope: str, scope_id: int, values: dict[str, str]) -> None:
    """Make one level's variables exactly ``values`` as edited in a form (masked values
    kept), in one transaction: a failure leaves the old set whole."""
    values = {v.env_key(k): val for k, val in values.items()}
    with wb.store.session() as s:
        rows = {
            row.key: row
            for row in s.exec(
                select(EnvVar).where(EnvVar.scope == scope, EnvVar.scope_id == scope_id)
            )
        }
        values = keep_masked(
            values, {k: sealing.unseal(wb.home, row.value) for k, row in rows.items()}
        )
        for key, row in rows.items():
            if key not in values:
                s.delete(row)
        for key, value in values.items():
            row = rows.get(key) or EnvVar(scope=scope, scope_id=scope_id, key=key)
            row.value = stored(wb, key, value)
            s.add(row)
        s.commit()


def resolve(
    wb: Workbench,
    model: Model,
    deployment: Deployment | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The variables a build or replica of ``model`` sees, later levels winning."""
    result = list_vars(wb, "global")
    result.update(list_vars(wb, "project", model.project_id))
    result.update(list_vars(wb, "model", pk(model)))
    if deployment is not None:
        result.update(unpack(wb, deployment.env))
    if extra:
        result.update(extra)
    return result


def workbench_variables(
    wb: Workbench,
    project: Project,
    model: Model | None,
    *,
    engine_id: str,
    build_id: int | None,
    deployment_id: int | None = None,
    cpu: float | None = None,
    memory: int | None = None,
) -> dict[str, str]:
    """What CDSW 1.4 sets in every engine (its "Engine Environment Variables" page), as
    far as it means something here, plus the metrics service's address, this model's
    metrics token and CRNs (the cdsw/cml module reads them). Never stored: made afresh
    for each replica, build and run (a run has no model: no token, no CRNs)."""
    import getpass

    from cdsw_tui.services import metrics

    user = getpass.getuser()
    url = wb.settings.gateway_url
    values = {
        "CDSW_PROJECT": project.name,
        "CDSW_PROJECT_ID": str(project.id),
        "CDSW_CREATOR": user,
        "PROJECT_OWNER": user,
        "CDSW_ENGINE_ID": engine_id,
        "CDSW_MASTER_ID": "",
        "CDSW_MASTER_IP": "",
        "CDSW_PUBLIC_PORT": "8080",
        "CDSW_DOMAIN": f"{DOMAIN}:{wb.settings.gateway_port}",
        "CDSW_API_URL": f"{url}/api/v1",
        "CDSW_PROJECT_URL": f"{url}/api/v1/projects/{user}/{project.name}",
        # cmlapi.default_client() reads these: a key for this project's API v2 resources
        "CDSW_APIV2_KEY": (project_key := metrics.token(wb, metrics.project_scope(pk(project)))),
        "CDSW_API_KEY": project_key,
    }
    if model is not None:
        values.update(
            {
                "CDSW_METRICS_TOKEN": metrics.token(wb, pk(model)),
                "CDSW_MODEL_CRN": metrics.crn("model", model.id) or "",
                "CDSW_MODEL_BUILD_CRN": metrics.crn("build", build_id) or "",
                "CDSW_MODEL_DEPLOYMENT_CRN": metrics.crn("deployment", deployment_id) or "",
            }
        )
    if wb.settings.tls_trust:  # cdsw.call_model and the metrics API verify the gateway with it
        try:
            values["CDSW_TUI_GATEWAY_CA_PEM"] = Path(wb.settings.tls_trust).read_text()
        except OSError:
            pass  # the gateway refuses to start without its certificate anyway
    if cpu is not None:
        values["CDSW_CPU_MILLICORES"] = str(int(cpu * 1000))
    if memory is not None:
        values["CDSW_MEMORY_MB"] = str(memory)
    return values
