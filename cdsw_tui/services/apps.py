"""Applications (CML's Applications): a project script that serves on 127.0.0.1 at its
own port (``CDSW_APP_PORT``), kept running by the controller. The faces write what is
wanted (``desired``, ``restart_requested``); the controller starts each start of it as
a run (``JobRun.app_id``), starts it again with back-off when it ends, and records its
status."""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from cdsw_tui.errors import CdswError, Conflict, NotFound, ValidationError
from cdsw_tui.services import projects
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import RUN_FINAL, Application, JobRun, Project, pk, utcnow

SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
PORTS = range(8100, 8900)  # where applications' ports are taken from (127.0.0.1)
ACTIVE = ("queued", "running")


@dataclass
class AppSpec:
    name: str
    script: str
    subdomain: str = ""  # "": made from the name
    description: str = ""
    cpu: float = 1.0
    memory: int = 2048
    env: dict[str, str] = field(default_factory=dict)


def subdomain(value: str, name: str) -> str:
    value = value.strip().lower() or v.slug(name)
    if not SUBDOMAIN_RE.fullmatch(value):
        raise ValidationError(
            f"subdomain {value!r} may use lower-case letters, digits and '-' (up to 63, "
            "not starting or ending with '-')",
            field="subdomain",
        )
    return value


def _taken_ports(wb: Workbench) -> set[int]:
    with wb.store.session() as s:
        return set(s.exec(select(Application.port)))


def _free_port(wb: Workbench) -> int:
    """A port of PORTS that no application has and nothing on 127.0.0.1 listens on."""
    taken = _taken_ports(wb) | {wb.settings.gateway_port}  # the gateway's, listening or not
    for port in PORTS:
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise CdswError(f"no free port for an application in {PORTS.start}-{PORTS.stop - 1}")


def create(wb: Workbench, project_name: str, spec: AppSpec) -> Application:
    project = projects.get(wb, project_name)
    name = v.name(spec.name)
    rel = v.script(Path(project.path), spec.script)
    env = {v.env_key(k): str(val) for k, val in spec.env.items()}
    for _attempt in range(5):
        app = Application(
            project_id=pk(project),
            name=name,
            subdomain=subdomain(spec.subdomain, name),
            description=spec.description,
            script=rel,
            environment=json.dumps(env),
            cpu=v.cpu(spec.cpu),
            memory=v.memory(spec.memory),
            port=_free_port(wb),
        )
        try:
            with wb.store.session() as s:
                s.add(app)
                s.commit()
                s.refresh(app)
            return app
        except IntegrityError:
            _refuse_taken(wb, project, app)
    raise CdswError("could not give the application a port (too many at once); try again")


def _refuse_taken(wb: Workbench, project: Project, app: Application) -> None:
    with wb.store.session() as s:
        same = s.exec(
            select(Application).where(
                Application.project_id == project.id, Application.name == app.name
            )
        ).first()
        sub = s.exec(select(Application).where(Application.subdomain == app.subdomain)).first()
    if same is not None:
        raise Conflict(
            f"project {project.name} already has an application named {app.name!r}", field="name"
        )
    if sub is not None:
        raise Conflict(
            f"subdomain {app.subdomain!r} is taken by another application (--subdomain)",
            field="subdomain",
        )
    # else: another application took the port meanwhile; the next one


def resolve(wb: Workbench, ref: str) -> Application:
    """``PROJECT/NAME`` (the display name, or the subdomain), or a bare subdomain."""
    project_name, sep, name = ref.partition("/")
    with wb.store.session() as s:
        if not sep:
            row = s.exec(select(Application).where(Application.subdomain == ref)).first()
            if row is None:
                raise NotFound(f"no application with subdomain {ref!r} (see 'cdsw-tui app list')")
            return row
    project = projects.get(wb, project_name)
    return get(wb, project, name)


def get(wb: Workbench, project: Project, name: str) -> Application:
    with wb.store.session() as s:
        rows = list(s.exec(select(Application).where(Application.project_id == project.id)))
    for row in rows:
        if name == row.subdomain:
            return row
    picked = v.pick_by_name(rows, name, "application", f"in project {project.name}")
    if isinstance(picked, Application):
        return picked
    raise NotFound(
        f"no application named {name!r} in project {project.name} (see 'cdsw-tui app list')"
    )


def get_by_id(wb: Workbench, app_id: int) -> Application | None:
    with wb.store.session() as s:
        return s.get(Application, app_id)


def refresh(wb: Workbench, app: Application) -> Application:
    row = get_by_id(wb, pk(app))
    if row is None:
        raise NotFound(f"application {app.name} was deleted")
    return row


def list_apps(wb: Workbench, project_name: str | None = None) -> list[Application]:
    with wb.store.session() as s:
        query = select(Application).order_by(col(Application.project_id), col(Application.name))
        if project_name is not None:
            query = query.where(Application.project_id == projects.get(wb, project_name).id)
        return list(s.exec(query))


def url(wb: Workbench, app: Application) -> str:
    return f"http://127.0.0.1:{app.port}/"


def start(wb: Workbench, app: Application) -> Application:
    """Wanted running again (after ``stop``); the controller starts it."""
    wb.store.update(Application, pk(app), desired="running", restart_requested=False)
    return refresh(wb, app)


def stop(wb: Workbench, app: Application) -> Application:
    wb.store.update(Application, pk(app), desired="stopped", restart_requested=False)
    with wb.store.session() as s:
        for run in s.exec(
            select(JobRun).where(JobRun.app_id == app.id, col(JobRun.status).in_(ACTIVE))
        ):
            run.cancel_requested = True
            s.add(run)
        s.commit()
    return refresh(wb, app)


def restart(wb: Workbench, app: Application) -> Application:
    """Stopped and started again at once (no back-off); started if it was stopped."""
    wb.store.update(Application, pk(app), desired="running", restart_requested=True)
    return refresh(wb, app)


def delete(wb: Workbench, app: Application) -> None:
    """Stopped, then gone with its runs and their logs (the controller stops a start in
    progress: its row is gone)."""
    stop(wb, app)
    with wb.store.session() as s:
        run_ids = [pk(r) for r in s.exec(select(JobRun).where(JobRun.app_id == app.id))]
        row = s.get(Application, app.id)
        if row is not None:
            s.delete(row)
        s.commit()
    for run_id in run_ids:
        wb.run_log_path(run_id).unlink(missing_ok=True)


def current_run(wb: Workbench, app: Application) -> JobRun | None:
    """The newest start of the application (running or ended)."""
    with wb.store.session() as s:
        return s.exec(
            select(JobRun).where(JobRun.app_id == app.id).order_by(col(JobRun.number).desc())
        ).first()


STEADY = ("running", "stopped", "failed")


def wait(wb: Workbench, app: Application, until: tuple[str, ...], timeout: float) -> Application:
    """The application once its status is one of ``until`` (or ``failed``); one line
    when it is not by ``timeout``, or when no controller runs to get it there."""
    from cdsw_tui.services.lock import state

    deadline = time.monotonic() + timeout
    gone_since: float | None = None
    while True:
        row = refresh(wb, app)
        if row.status in until or (row.status == "failed" and "failed" not in until):
            return row
        now = time.monotonic()
        if not state(wb.home).running:
            gone_since = gone_since or now
            if now - gone_since > 3:
                raise CdswError(
                    f"application {row.name} is {row.status}, but no controller runs it "
                    "(see logs/controller.log)"
                )
        else:
            gone_since = None
        if now > deadline:
            raise CdswError(
                f"application {row.name} is still {row.status} after {timeout:g} s"
                + (f": {row.reason}" if row.reason else "")
                + " (see 'cdsw-tui app logs')"
            )
        time.sleep(0.2)


def summary(wb: Workbench, app: Application) -> dict[str, Any]:
    """One application as listings show it (``--json`` names: name, project, status, url)."""
    from cdsw_tui.services import runs

    project = projects.get_by_id(wb, app.project_id)
    return {
        "name": app.name,
        "project": project.name,
        "subdomain": app.subdomain,
        "script": app.script,
        "status": app.status,
        "desired": app.desired,
        "url": url(wb, app),
        "port": app.port,
        "reason": app.reason,
        "restarts": app.restarts,
        "cpu": app.cpu,
        "memory": app.memory,
        "environment": json.loads(app.environment or "{}"),
        "created_at": runs.iso(app.created_at),
        "started_at": runs.iso(app.started_at),
    }


def started(wb: Workbench, app_id: int) -> JobRun:
    """A new start of the application: a run row already ``running`` (the controller
    calls this; the run queue never sees it)."""
    with wb.store.session() as s:
        row = s.get(Application, app_id)
        if row is None:
            raise NotFound("the application was deleted")
        top = s.exec(
            select(JobRun.number).where(JobRun.app_id == app_id).order_by(col(JobRun.number).desc())
        ).first()
        run = JobRun(
            project_id=row.project_id,
            app_id=app_id,
            number=(top or 0) + 1,
            script=row.script,
            trigger="application",
            cpu=row.cpu,
            memory=row.memory,
            status="running",
            started_at=utcnow(),
        )
        s.add(run)
        s.commit()
        s.refresh(run)
        return run


def ended(run: JobRun) -> bool:
    return run.status in RUN_FINAL
