"""What a deleted model leaves behind: build folders, logs, and its runtime's artifacts
(a Docker image per build). Removed with the model, never before."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlmodel import col, select

from cdsw_tui.engine import backends
from cdsw_tui.engine.stepcache import StepCache
from cdsw_tui.errors import Conflict
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import DEPLOYMENT_ACTIVE, Build, Deployment, Model


def active_of(wb: Workbench, models: list[Model]) -> list[Deployment]:
    """The active deployments of these models (what deleting them has to stop)."""
    ids = [m.id for m in models]
    with wb.store.session() as s:
        return list(
            s.exec(
                select(Deployment).where(
                    col(Deployment.model_id).in_(ids), col(Deployment.status).in_(DEPLOYMENT_ACTIVE)
                )
            )
        )


def stops_words(wb: Workbench, models: list[Model]) -> str:
    """What a delete will stop, in words for its confirmation ("" if nothing runs)."""
    names = {m.id: m.name for m in models}
    running = [
        f"deployment {d.id} of {names[d.model_id]} ({d.replicas} replica{'s' if d.replicas != 1 else ''})"
        for d in active_of(wb, models)
    ]
    return "; it stops " + ", ".join(running) if running else ""


def refuse_if_deployed(wb: Workbench, models: list[Model]) -> None:
    """One clear refusal before anything is deleted, naming every deployed model."""
    ids = [m.id for m in models]
    with wb.store.session() as s:
        busy = set(
            s.exec(
                select(Deployment.model_id).where(
                    col(Deployment.model_id).in_(ids), col(Deployment.status).in_(DEPLOYMENT_ACTIVE)
                )
            )
        )
    names = [m.name for m in models if m.id in busy]
    if names:
        which = "model " + names[0] if len(names) == 1 else "models " + ", ".join(names)
        raise Conflict(
            f"{which} {'has' if len(names) == 1 else 'have'} an active deployment; stop it first"
        )


def runtimes_of(wb: Workbench, model_id: int) -> set[str]:
    with wb.store.session() as s:
        return set(s.exec(select(Build.runtime).where(Build.model_id == model_id).distinct()))


def forget(wb: Workbench, model_id: int, runtimes: set[str]) -> list[str]:
    """Remove a deleted model's files and its runtimes' artifacts; notes on what stayed."""
    notes: list[str] = []
    for folder in (
        wb.builds_dir() / f"m{model_id}",
        wb.home / "logs" / "builds" / f"m{model_id}",
        wb.home / "logs" / "replicas" / f"m{model_id}",
    ):
        if folder.exists():
            _make_writable(folder)
            shutil.rmtree(folder, ignore_errors=True)
    for name in sorted(runtimes):
        try:
            notes.extend(backends.get(name).forget_model(wb.home, model_id))
        except Exception as exc:  # the model is gone; say what stayed
            notes.append(f"{name} artifacts stay: {getattr(exc, 'message', exc)}")
    if runtimes & {"docker", "swarm"}:
        notes.extend(forget_unused_steps(wb))
    return notes


def _make_writable(folder: Path) -> None:
    """Builds are read-only; folders of ours only, links are not followed. A root
    controller removes them as they are: a jailed build holds what model code wrote,
    which is never chmodded."""
    if os.geteuid() == 0:
        return
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            try:
                path.chmod(path.stat().st_mode | 0o700)
            except OSError:
                pass


SPARE_STEPS = 2  # results of build steps no build stands on, kept per project for reuse


def steps_of(wb: Workbench, project_id: int) -> StepCache:
    return StepCache(wb.envs_dir() / f"p{project_id}")


def prune_steps(wb: Workbench, project_id: int) -> list[str]:
    """Remove the project's step results (environments, dependency images' records)
    that no build of it stands on, but for the newest ``SPARE_STEPS``; their entries."""
    with wb.store.session() as s:
        used = set(
            s.exec(
                select(Build.dep_key)
                .join(Model, col(Model.id) == Build.model_id)
                .where(Model.project_id == project_id)
            )
        )
    cache = steps_of(wb, project_id)
    steps = cache.steps()
    spare = [step for step in steps if step.entry not in used]
    dropped = []
    for step in spare[SPARE_STEPS:]:
        cache.drop(step.entry)
        dropped.append(step.entry)
    if any("image" in step.extra for step in spare[SPARE_STEPS:]):
        forget_unused_steps(wb)
    return dropped


def forget_unused_steps(wb: Workbench) -> list[str]:
    """Remove the backends' step artifacts (dependency images) that neither a build nor a
    step result of any project of the home keeps; notes on what stayed."""
    kept = {
        step.extra["image"].rsplit(":", 1)[-1]
        for folder in wb.envs_dir().glob("p*")
        for step in StepCache(folder).steps()
        if "image" in step.extra
    }
    notes: list[str] = []
    for backend in backends.all_backends():
        try:
            notes.extend(backend.forget_steps(wb.home, kept))
        except Exception as exc:  # an engine away: what stays is said, nothing fails
            notes.append(f"{backend.name} step images stay: {getattr(exc, 'message', exc)}")
    return notes


def forget_project(wb: Workbench, project_id: int) -> list[str]:
    """A deleted project's step results (its models' artifacts went with them), and the
    dependency images only they kept; notes on what stayed."""
    cache = steps_of(wb, project_id)
    images = any("image" in step.extra for step in cache.steps())
    if cache.folder.exists():
        _make_writable(cache.folder)
        shutil.rmtree(cache.folder, ignore_errors=True)
    return forget_unused_steps(wb) if images else []
