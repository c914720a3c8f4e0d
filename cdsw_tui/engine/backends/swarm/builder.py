"""The swarm runtime's builder: the Docker builder's image, pushed to the registry every
node pulls from. The build's artifact is the pushed digest (``registry/repo@sha256:...``),
so every task of every node runs exactly the bytes that were built, whatever a tag says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cdsw_tui.engine.backends.docker.builder import DockerBuilder, forget_steps, image_tag
from cdsw_tui.engine.backends.docker.builder import forget_model as forget_images
from cdsw_tui.engine.backends.swarm import registry
from cdsw_tui.engine.builder import BuildFailed, BuildJob, BuildResult
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.snapshot import SnapshotRepo
from cdsw_tui.errors import CdswError

__all__ = ["SwarmBuilder", "forget_model", "forget_steps", "make_builder"]


def forget_model(home: Path, model_id: int) -> list[str]:
    notes = forget_images(home, model_id)
    return notes + ["pushed images stay in the registry until its garbage collection"]


class SwarmBuilder(DockerBuilder):
    def build(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
    ) -> BuildResult:
        try:
            target = registry.resolve(job.home)  # before the work: a missing one fails at once
        except CdswError as exc:
            raise BuildFailed(exc.message) from None
        result = super().build(job, log, cancelled, on_pid)
        if cancelled():
            raise BuildFailed("cancelled by the user", status="cancelled")
        local = image_tag(job.home, job.model_id, job.model_name, job.number)
        repository, _, tag = f"{target}/{local}".rpartition(":")
        log.line(f"pushing {repository}:{tag}")
        digest = push(result.image_id, repository, tag, log)
        pinned = f"{repository}@{digest}"
        log.line(f"pushed; replicas start from {pinned}")
        return BuildResult(
            artifact=pinned, image_id="", dep_key=result.dep_key, dep_reused=result.dep_reused
        )


def push(image_id: str, repository: str, tag: str, log: BuildLog) -> str:
    """Tag ``image_id`` and push it; the digest the registry recorded."""
    from docker.errors import DockerException

    from cdsw_tui.engine.backends.docker.images import docker_client

    client = docker_client()
    digest = ""
    try:
        client.api.tag(image_id, repository, tag)
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise BuildFailed(f"the push to {repository.split('/')[0]} failed: {detail}")
            digest = chunk.get("aux", {}).get("Digest", digest)
            if chunk.get("status") in ("Pushed", "Layer already exists"):
                log.line(f"{chunk.get('id', '')}: {chunk['status']}")
    except DockerException as exc:
        raise BuildFailed(f"the push to {repository.split('/')[0]} failed: {exc}") from None
    if not digest:
        raise BuildFailed(f"the registry at {repository.split('/')[0]} returned no digest")
    return digest


def make_builder(snapshots: SnapshotRepo) -> SwarmBuilder:
    return SwarmBuilder(snapshots)
