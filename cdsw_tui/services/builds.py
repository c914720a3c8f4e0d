"""Builds: the faces ask for one (snapshot now, build later); the controller runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from cdsw_tui import disk
from cdsw_tui.engine.buildlog import all_lines
from cdsw_tui.errors import CdswError, NotFound
from cdsw_tui.services import ending, logwatch, models, projects
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import BUILD_FINAL, Build, Model, pk


def request(
    wb: Workbench,
    model: Model,
    *,
    comment: str = "",
    deploy: dict | None = None,
    clean: bool = False,
) -> Build:
    """Snapshot the project's code as it is now and queue a build of it.

    Problems with the code (missing file or function, files too large) are raised here,
    before a build number is taken.
    """
    from cdsw_tui.services import validation as v

    if problem := disk.too_little(wb.home, wb.settings.min_free_mb):
        raise CdswError(f"not building: {problem}")
    project = models.project_of(wb, model)
    root = Path(project.path)
    path = v.model_file(root, model.file)
    v.function(path, model.kernel, model.function)
    models.in_snapshot(wb, project, model.file)
    snap = wb.snapshots.take(
        pk(project),
        root,
        limit_mb=wb.settings.max_snapshot_file_mb,
        message=f"{project.name}/{model.name}: {comment or 'build'}",
    )
    for _attempt in range(20):
        with wb.store.session() as s:
            top = s.exec(select(func.max(Build.number)).where(Build.model_id == model.id)).one()
            build = Build(
                model_id=pk(model),
                number=(top or 0) + 1,
                comment=comment,
                snapshot=snap.commit,
                tree=snap.tree,
                file=model.file,
                function=model.function,
                kernel=model.kernel,
                runtime=project.runtime,
                engine=project.engine,
                warnings="\n".join(snap.warnings),
                deploy_request=json.dumps(deploy) if deploy is not None else "",
                clean=clean,
            )
            s.add(build)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                continue
            s.refresh(build)
            return build
    raise CdswError("could not number the build: too many builds requested at once")


def list_builds(wb: Workbench, model: Model) -> list[Build]:
    with wb.store.session() as s:
        return list(
            s.exec(
                select(Build).where(Build.model_id == model.id).order_by(col(Build.number).desc())
            )
        )


def get(wb: Workbench, model: Model, number: int | None = None) -> Build:
    with wb.store.session() as s:
        query = select(Build).where(Build.model_id == model.id)
        if number is None:
            query = query.order_by(col(Build.number).desc())
        else:
            query = query.where(Build.number == number)
        build = s.exec(query).first()
    if build is None:
        what = f"build {number}" if number is not None else "any build"
        raise NotFound(f"model {model.name} has no {what}")
    return build


def refresh(wb: Workbench, build: Build) -> Build:
    with wb.store.session() as s:
        row = s.get(Build, build.id)
    if row is None:
        raise NotFound(f"build {build.number} no longer exists")
    return row


def cancel(wb: Workbench, build: Build) -> Build:
    """A queued build is cancelled at once; a running one when the controller sees the flag."""
    return ending.cancel(wb, Build, build.id, BUILD_FINAL, f"build {build.number}")


def wait(wb: Workbench, build: Build, timeout: float | None = None, poll: float = 0.2) -> Build:
    """The build once it ended, or as it is when ``timeout`` seconds have passed. A wait
    ends, in one line, when no controller has run for a while: nothing would end it."""
    final, gone = ending.wait(wb, lambda: refresh(wb, build), BUILD_FINAL, timeout, poll)
    if gone:
        raise CdswError(
            f"build {final.number} is {final.status}, but no controller runs to finish it "
            "(see logs/controller.log); 'cdsw-tui controller start' fails it as interrupted"
        )
    return final


def log_path(wb: Workbench, build: Build) -> Path:
    return wb.build_log_path(build.model_id, build.number)


def follow_log(wb: Workbench, build: Build, *, follow: bool) -> Iterator[str]:
    """Lines of the build log; with ``follow``, until the build ends (the one log
    watcher, services/logwatch, waits for what it appends)."""
    path = log_path(wb, build)
    done = refresh(wb, build).status in BUILD_FINAL
    if done or not follow:  # a finished log streams, a block at a time
        yield from all_lines(path)
        return
    for _, line in logwatch.follow(
        path.parent, lambda: [path], until=lambda: refresh(wb, build).status in BUILD_FINAL
    ):
        yield line


def summary(wb: Workbench, build: Build) -> dict[str, Any]:
    """One build as the CLI shows it."""
    model = models.get_by_id(wb, build.model_id)
    project = projects.get_by_id(wb, model.project_id)
    return described(build, f"{project.name}/{model.name}")


def described(build: Build, ref: str) -> dict[str, Any]:
    """The fields of ``summary`` for a build of the model ``ref`` (no query)."""
    return {
        "number": build.number,
        "model": ref,
        "status": build.status,
        "reason": build.reason,
        "snapshot": build.snapshot,
        "tree": build.tree,
        "comment": build.comment,
        "runtime": build.runtime,
        "file": build.file,
        "function": build.function,
        "kernel": build.kernel,
        "dependencies_reused": build.dep_reused,
        "warnings": [w for w in build.warnings.split("\n") if w],
        "created_at": iso(build.created_at),
        "started_at": iso(build.started_at),
        "finished_at": iso(build.finished_at),
        "duration": duration(build),
    }


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(build: Build) -> float | None:
    """Seconds from start to finish, once the build has both (pure: no store)."""
    if build.started_at and build.finished_at:
        return round((build.finished_at - build.started_at).total_seconds(), 2)
    return None
