"""The Docker runtime's builder: an image per build, from the project's engine image.

Two templates in assets/docker: a dependency image, in which ``cdsw-build.sh`` runs with
the whole project at /home/cdsw (so ``-e .`` and scripts that read the project work),
tagged by our own key of the dependency files; and the build's image, that dependency
image plus the project as it is now. A code-only change reuses the dependency image
and only copies the project. Docker's output goes into the build log as it arrives.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cdsw_tui.engine.backends.docker.images import suite
from cdsw_tui.engine.backends.docker.runtime import home_id
from cdsw_tui.engine.builder import (
    BUILD_SCRIPT,
    BuildFailed,
    BuildJob,
    BuildResult,
    dependency_files,
    log_header,
)
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.snapshot import SnapshotRepo
from cdsw_tui.errors import CdswError
from cdsw_tui.resources import PYLIB, RUNNER, RUNNER_R, assets_dir


def image_tag(home: Path, model_id: int, model: str, number: int) -> str:
    """Named by the model's id and the home: no two models, and no two homes, share one.
    Replicas start from the image id recorded on the build, never from this tag."""
    import re

    name = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "model"
    return f"cdsw-tui/{home_id(home)}-m{model_id}-{name}:{number}"


def template(name: str = "Dockerfile.template") -> str:
    return (assets_dir() / "docker" / name).read_text()


def _labels(labels: dict[str, str]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())


def _exists(client, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def dependency_key(engine_id: str, job: BuildJob, deps: dict[str, str]) -> str:
    """What decides the dependency image: the engine, the dependency files, the build
    variables (secret ones by name only), the CA bundle, and what cdsw-tui puts in it."""
    h = hashlib.sha256()
    h.update(engine_id.encode())
    h.update(json.dumps(sorted(deps.items())).encode())
    h.update(
        json.dumps(
            sorted((k, "" if k in job.secret_names else v) for k, v in job.variables.items())
        ).encode()
    )
    bundle = Path(job.ca_bundle) if job.ca_bundle else None
    h.update(bundle.read_bytes() if bundle and bundle.is_file() else b"")
    h.update(template("Dockerfile.deps.template").encode())
    for path in sorted(PYLIB.rglob("*.py")):
        h.update(path.relative_to(PYLIB).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:20]


def forget_model(home: Path, model_id: int) -> list[str]:
    """Remove the images of a deleted model's builds; a note for each that stays."""
    from docker.errors import DockerException

    from cdsw_tui.engine.backends.docker.images import docker_client

    try:
        client = docker_client(timeout=30)
        images = client.images.list(
            filters={"label": [f"cdsw.home={home}", f"cdsw.model_id={model_id}"]}
        )
    except (CdswError, DockerException) as exc:
        return [f"the model's images stay: {getattr(exc, 'message', exc)}"]
    notes = []
    for image in images:
        try:
            client.images.remove(image.id, force=True)
        except DockerException as exc:
            notes.append(f"image {image.short_id} stays: {exc}")
    # dependency images no build of this home stands on any more
    try:
        ours = client.images.list(filters={"label": [f"cdsw.home={home}", "cdsw.deps"]})
    except DockerException as exc:
        return [*notes, f"dependency images stay: {exc}"]
    used = {i.labels["cdsw.deps"] for i in ours if "cdsw.model_id" in i.labels}
    for image in ours:
        if "cdsw.model_id" not in image.labels and image.labels["cdsw.deps"] not in used:
            try:
                client.images.remove(image.id, force=True)
            except DockerException as exc:
                notes.append(f"dependency image {image.short_id} stays: {exc}")
    return notes


class DockerBuilder:
    def __init__(self, snapshots: SnapshotRepo, *, force_clean: bool = False) -> None:
        self.snapshots = snapshots
        self.force_clean = force_clean

    def build(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
    ) -> BuildResult:
        from cdsw_tui.engine.backends.docker.images import docker_client, require_engine

        deadline = time.monotonic() + job.timeout
        log_header(job, log, "docker", f", engine {job.engine}")
        try:
            client = docker_client()
            engine = require_engine(client, job.engine)
        except CdswError as exc:
            raise BuildFailed(exc.message) from None
        files = self.snapshots.files(job.snapshot)
        self._require_r(engine.labels or {}, job, files, log)
        tag = image_tag(job.home, job.model_id, job.model_name, job.number)
        deps = dependency_files(files)
        build_args = {k: v for k, v in job.variables.items() if k not in job.secret_names}
        if job.secret_names:
            log.line(
                f"secret variables {', '.join(sorted(job.secret_names))} are not passed to "
                "the image build (an image's history keeps build arguments); replicas get "
                "them when they start"
            )
        key = dependency_key(engine.id, job, deps)
        deps_tag = f"cdsw-tui/{home_id(job.home)}-deps:{key}"
        fresh = self.force_clean or job.clean
        with tempfile.TemporaryDirectory(prefix="cdsw-build-") as tmp:
            context = Path(tmp)
            (context / "src").mkdir()
            self.snapshots.export(job.snapshot, context / "src")
            reused = not fresh and _exists(client, deps_tag)
            if reused:
                log.line(
                    f"reusing dependency image {key}: {BUILD_SCRIPT}, requirements and "
                    "package files, build variables and engine are unchanged"
                )
            else:
                self._deps_context(context, job, files)
                (context / "Dockerfile.deps").write_text(
                    template("Dockerfile.deps.template")
                    .replace("{{ENGINE}}", job.engine)
                    .replace("{{BUILD_ARGS}}", "\n".join(f"ARG {k}" for k in sorted(build_args)))
                    .replace(
                        "{{LABELS}}",
                        _labels({"cdsw.engine": "0", "cdsw.home": str(job.home), "cdsw.deps": key}),
                    )
                )
                log.line(
                    f"docker build -t {deps_tag}: {BUILD_SCRIPT} with the whole project "
                    f"(dependency files: {', '.join(sorted(deps)) or 'none'})"
                )
                self._stream(
                    client,
                    context,
                    "Dockerfile.deps",
                    deps_tag,
                    job,
                    log,
                    cancelled,
                    deadline,
                    build_args,
                    nocache=fresh,
                )
            shutil.copy2(RUNNER, context / "replica.py")
            shutil.copy2(RUNNER_R, context / "replica.R")
            for name in ("replica.py", "replica.R"):
                (context / name).chmod(0o644)  # root's in the image, read by the cdsw user
            labels = {
                "cdsw.engine": "0",  # built from an engine, not one
                "cdsw.home": str(job.home),
                "cdsw.project": job.project_name,
                "cdsw.model": job.model_name,
                "cdsw.model_id": str(job.model_id),
                "cdsw.build": str(job.number),
                "cdsw.snapshot": job.snapshot,
                "cdsw.deps": key,
            }
            (context / "Dockerfile").write_text(
                template("Dockerfile.template")
                .replace("{{DEPS}}", deps_tag)
                .replace("{{LABELS}}", _labels(labels))
            )
            log.line(f"docker build -t {tag} ({len(files)} files)")
            image_id = self._stream(
                client, context, "Dockerfile", tag, job, log, cancelled, deadline, {}
            )
        log.line(
            f"image {image_id[:19]} tagged {tag}; dependency image {'reused' if reused else 'built'}"
        )
        log.line(f"build {job.number} built")
        return BuildResult(artifact=tag, image_id=image_id, dep_key=key, dep_reused=reused)

    def _deps_context(self, context: Path, job: BuildJob, files: dict[str, str]) -> None:
        """What the dependency image's build needs beside the project: the CA bundle,
        cdsw/cml, and the list of the project's files (removed after cdsw-build.sh)."""
        bundle = Path(job.ca_bundle) if job.ca_bundle else None
        if bundle and bundle.is_file():
            shutil.copy2(bundle, context / "ca-bundle.pem")
        else:
            (context / "ca-bundle.pem").write_text("")
        (context / "ca-bundle.pem").chmod(0o644)
        shutil.copytree(PYLIB, context / "pylib", ignore=shutil.ignore_patterns("__pycache__"))
        for path in [context / "pylib", *(context / "pylib").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (context / "snapshot-files").write_bytes(b"".join(f"{p}\0".encode() for p in files))

    def _require_r(
        self, labels: dict[str, str], job: BuildJob, files: dict[str, str], log: BuildLog
    ) -> None:
        """An R model, or a cdsw-build.sh that runs R, on an engine (``labels``: its image's)
        made without R fails now, naming the command that makes one with R (CDSW's engines
        had both)."""
        if labels.get("cdsw.r") == "1" or labels.get("cdsw.engine") != "1":
            return  # an engine of ours with R, or someone else's image: let it try
        script = ""
        if BUILD_SCRIPT in files:
            script = self.snapshots.read(job.snapshot, BUILD_SCRIPT).decode("utf-8", "replace")
        if job.kernel == "r":
            who = f"the R model {job.model_name}"
        elif re.search(r"(^|[\s;&|(])(Rscript|R)\s", script, re.MULTILINE):
            who = f"{BUILD_SCRIPT}, which runs R,"
        else:
            return
        suite_name = labels.get("cdsw.suite", "")
        hint = f" --suite {suite_name}" if suite_name and suite_name != suite() else ""
        why = (
            f"{who} needs R, and engine {job.engine} has none: make one with "
            f"'cdsw-tui engine build --r{hint}' and set it as the project's engine"
        )
        log.line(why)
        raise BuildFailed(why)

    def _stream(
        self,
        client,
        context: Path,
        dockerfile: str,
        tag: str,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        deadline: float,
        build_args: dict[str, str],
        *,
        nocache: bool = False,
    ) -> str:
        """Docker's output into the log as it comes; a cancel or the time limit acts on
        time, not on output: a silent step (``sleep infinity``) is stopped too, by
        closing the build's connection, which makes dockerd cancel the build."""
        image_id = ""
        responses: list = []
        api = client.api
        original_helper = api._stream_helper

        def keep_response(response, decode=False):
            responses.append(response)  # the HTTP response: closing it stops the build
            return original_helper(response, decode=decode)

        api._stream_helper = keep_response
        try:
            stream = api.build(
                path=str(context),
                dockerfile=dockerfile,
                tag=tag,
                rm=True,
                forcerm=True,
                decode=True,
                nocache=nocache,
                buildargs=build_args,
                pull=False,
            )
        finally:
            api._stream_helper = original_helper
        chunks: queue.Queue = queue.Queue()

        def pump() -> None:
            try:
                for chunk in stream:
                    chunks.put(chunk)
            except Exception as exc:  # the connection was closed under it
                chunks.put(exc)
            finally:
                chunks.put(None)

        threading.Thread(target=pump, daemon=True, name=f"build-{job.build_id}").start()
        try:
            while True:
                if cancelled():
                    raise BuildFailed("cancelled by the user", status="cancelled")
                if time.monotonic() > deadline:
                    raise BuildFailed("the build ran past its time limit", status="timedout")
                try:
                    chunk = chunks.get(timeout=0.2)
                except queue.Empty:
                    continue
                if chunk is None:
                    break
                if isinstance(chunk, Exception):
                    raise BuildFailed(f"the Docker engine stopped answering: {chunk}")
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        if line.strip():
                            log.line(line)
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    log.line(detail)
                    code = chunk.get("errorDetail", {}).get("code")
                    if "cdsw-build.sh" in detail or code:
                        raise BuildFailed(
                            f"cdsw-build.sh exited with status {code}" if code else detail.strip()
                        )
                    raise BuildFailed(detail.strip().splitlines()[-1])
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        finally:
            for response in responses:
                _sever(response)
        if not image_id:
            image_id = client.images.get(tag).id
        return image_id


def _sever(response) -> None:
    """End a build's HTTP connection under the thread reading it: closing the response
    would wait for that reader's lock; shutting the socket down wakes it, and dockerd
    cancels a build whose client went (its step's container goes with it)."""
    raw = getattr(response, "raw", None)
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already: the build ended by itself


def make_builder(snapshots: SnapshotRepo) -> DockerBuilder:
    return DockerBuilder(snapshots)
