"""The Docker runtime's builder: an image per build, from the project's engine image.

Two templates in assets/docker. The dependency image is the engine with the cdsw user
(REPLICA_UID, no host account), a virtual environment, and what ``cdsw-build.sh``
installed there, run with the whole project at /home/cdsw and its reads traced
(``steptrace``, inside the image build). What the script wrote into the project is
taken out of that image into the step's entry on the host (``stepcache``), and the
project's files are removed from it. The build's image is a dependency image plus the
project as it is now with those outputs laid over it. A later build of the same project
reuses a dependency image only when nothing its step read has changed, so a code-only
change only copies the project. Docker's output goes into the build log as it arrives.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdsw_tui.engine.backends.docker.images import suite
from cdsw_tui.engine.backends.docker.runtime import UID, home_id
from cdsw_tui.engine.backends.docker.stream import EngineGone, stream_build, wait_for_engine
from cdsw_tui.engine.builder import BUILD_SCRIPT, BuildFailed, BuildJob, BuildResult, log_header
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.snapshot import SnapshotRepo
from cdsw_tui.engine.stepcache import Ran, Step, StepCache, lay_over
from cdsw_tui.errors import CdswError
from cdsw_tui.resources import LAUNCHER_TEXT, PACKAGE, assets_dir, runner_files

STEPTRACE = PACKAGE / "engine" / "steptrace.py"
STEP_DIR = "/usr/local/lib/cdsw/step"  # in the dependency image: the step's record, outputs
MAX_RECORD = 64 * 1024 * 1024


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


def _exists(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def environment_key(engine_id: str, job: BuildJob, uid: int, has_script: bool) -> str:
    """Everything outside the project a Docker step runs with: the engine, the cdsw
    user's uid, the build variables (secret ones by name only: they never reach an image
    build), the CA bundle, and what cdsw-tui puts in the image (the runner included)."""
    h = hashlib.sha256()
    h.update(f"docker {engine_id} uid={uid} script={has_script}\n".encode())
    h.update(
        json.dumps(
            sorted((k, "" if k in job.secret_names else v) for k, v in job.variables.items())
        ).encode()
    )
    bundle = Path(job.ca_bundle) if job.ca_bundle else None
    h.update(bundle.read_bytes() if bundle and bundle.is_file() else b"")
    h.update(template("Dockerfile.deps.template").encode())
    h.update(STEPTRACE.read_bytes() + LAUNCHER_TEXT.encode())  # in the image too
    for path, name in runner_files():
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


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
    return notes


def forget_steps(home: Path, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Remove the dependency images that no build of the home stands on and whose step is
    not in ``keep`` (``p<project>-b<build>``, kept for reuse); a note for each that stays."""
    from docker.errors import DockerException

    from cdsw_tui.engine.backends.docker.images import docker_client

    try:
        client = docker_client(timeout=30)
        ours = client.images.list(filters={"label": [f"cdsw.home={home}", "cdsw.deps"]})
    except (CdswError, DockerException) as exc:
        return [f"dependency images stay: {getattr(exc, 'message', exc)}"]
    used = {i.labels["cdsw.deps"] for i in ours if "cdsw.model_id" in i.labels} | set(keep)
    notes = []
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
        deadline = time.monotonic() + job.timeout
        log_header(job, log, "docker", f", engine {job.engine}")
        from requests.exceptions import ConnectionError as Unreachable

        try:
            return self._attempt(job, log, cancelled, deadline)
        except (EngineGone, Unreachable) as exc:  # under a step, or between two calls
            why = exc.reason if isinstance(exc, EngineGone) else f"{type(exc).__name__}: {exc}"
            log.line(
                f"the Docker engine went away during the build ({why[:300]}): waiting for "
                "it to come back, then building again, once"
            )
        if not wait_for_engine(cancelled, deadline):
            if cancelled():
                raise BuildFailed("cancelled by the user", status="cancelled")
            raise BuildFailed(
                "the Docker engine restarted during the build and did not come back within "
                "60 s (see 'docker info')"
            )
        log.line("the Docker engine answers again: building again")
        try:
            return self._attempt(job, log, cancelled, deadline)
        except (EngineGone, Unreachable) as exc:
            why = exc.reason if isinstance(exc, EngineGone) else type(exc).__name__
            raise BuildFailed(
                f"the Docker engine restarted during the build, and again during its retry: "
                f"{why[:300]}"
            ) from None

    def _attempt(
        self, job: BuildJob, log: BuildLog, cancelled: Callable[[], bool], deadline: float
    ) -> BuildResult:
        from cdsw_tui.engine.backends.docker.images import docker_client, require_engine

        try:
            client = docker_client()
            engine = require_engine(client, job.engine)
        except CdswError as exc:
            raise BuildFailed(exc.message) from None
        entries = self.snapshots.entries(job.snapshot)
        files = {path: blob for path, (_mode, blob) in entries.items()}
        self._require_r(engine.labels or {}, job, files, log)
        uid = job.uid if job.uid >= 0 else UID
        has_script = BUILD_SCRIPT in entries
        key = environment_key(engine.id, job, uid, has_script)
        cache = StepCache(job.envs_dir / f"p{job.project_id}")
        what = BUILD_SCRIPT if has_script else "the environment (no cdsw-build.sh)"
        step, why = None, "--no-cache asks for a fresh run"
        if not (self.force_clean or job.clean):
            step, why = cache.find(key, entries)
            if step is not None and not _exists(client, step.extra.get("image", "")):
                why = f"{step.made_by}'s dependency image is gone"
                cache.drop(step.entry)
                step = None
        if job.secret_names:
            log.line(
                f"secret variables {', '.join(sorted(job.secret_names))} are not passed to "
                "the image build (an image's history keeps build arguments); replicas get "
                "them when they start"
            )
        with tempfile.TemporaryDirectory(prefix="cdsw-build-") as tmp:
            context = Path(tmp)
            (context / "src").mkdir()
            self.snapshots.export(job.snapshot, context / "src")
            if step is not None:
                log.line(
                    f"reusing {what} from {step.made_by} (dependency image "
                    f"{step.extra['image']}): {step.why_reused()}"
                )
            else:
                log.line(f"running {what}: {why}")
                step = self._run_step(client, context, job, log, cancelled, deadline, cache,
                                      key, uid, entries)  # fmt: skip
            changed = lay_over(cache.entry_dir(step.entry) / "tree", step.deleted, context / "src")
            if changed:
                log.line(f"{changed} files {BUILD_SCRIPT} wrote or deleted laid over the project")
            image_id = self._build_image(client, context, job, log, cancelled, deadline, step,
                                         uid, len(entries))  # fmt: skip
        reused = step.entry != f"b{job.build_id}"
        log.line(f"image {image_id[:19]}; dependency image {'reused' if reused else 'built'}")
        log.line(f"build {job.number} built")
        tag = image_tag(job.home, job.model_id, job.model_name, job.number)
        return BuildResult(artifact=tag, image_id=image_id, dep_key=step.entry, dep_reused=reused)

    def _build_image(
        self,
        client: Any,
        context: Path,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        deadline: float,
        step: Step,
        uid: int,
        count: int,
    ) -> str:
        labels = {
            "cdsw.engine": "0",  # built from an engine, not one
            "cdsw.home": str(job.home),
            "cdsw.project": job.project_name,
            "cdsw.project_id": str(job.project_id),
            "cdsw.model": job.model_name,
            "cdsw.model_id": str(job.model_id),
            "cdsw.build": str(job.number),
            "cdsw.snapshot": job.snapshot,
            "cdsw.deps": step.extra["image"].rsplit(":", 1)[-1],
            "cdsw.uid": str(uid),
        }
        (context / "Dockerfile").write_text(
            template("Dockerfile.template")
            .replace("{{DEPS}}", step.extra["image"])
            .replace("{{UID}}", str(uid))
            .replace("{{LABELS}}", _labels(labels))
        )
        tag = image_tag(job.home, job.model_id, job.model_name, job.number)
        log.line(f"docker build -t {tag} ({count} files)")
        return stream_build(client, context, "Dockerfile", tag, job, log, cancelled, deadline, {})

    def _run_step(
        self,
        client: Any,
        context: Path,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        deadline: float,
        cache: StepCache,
        key: str,
        uid: int,
        entries: dict[str, tuple[str, str]],
    ) -> Step:
        """The dependency image: ``cdsw-build.sh`` traced with the project at /home/cdsw;
        its record and outputs are taken out of the image into the step's entry."""
        entry = f"b{job.build_id}"
        deps_tag = f"cdsw-tui/{home_id(job.home)}-deps:p{job.project_id}-{entry}"
        build_args = {k: v for k, v in job.variables.items() if k not in job.secret_names}
        self._deps_context(context, job)
        (context / "Dockerfile.deps").write_text(
            template("Dockerfile.deps.template")
            .replace("{{ENGINE}}", job.engine)
            .replace("{{UID}}", str(uid))
            .replace("{{BUILD_ARGS}}", "\n".join(f"ARG {k}" for k in sorted(build_args)))
            .replace(
                "{{LABELS}}",
                _labels(
                    {
                        "cdsw.engine": "0",
                        "cdsw.home": str(job.home),
                        "cdsw.project_id": str(job.project_id),
                        "cdsw.deps": f"p{job.project_id}-{entry}",
                    }
                ),
            )
        )
        log.line(f"docker build -t {deps_tag}: {BUILD_SCRIPT} with the whole project, traced")
        image_id = stream_build(
            client, context, "Dockerfile.deps", deps_tag, job, log, cancelled, deadline,
            {**build_args, "CDSW_STEP": f"{home_id(job.home)}-p{job.project_id}-{entry}"},
            nocache=self.force_clean or job.clean,
        )  # fmt: skip
        with cache.making(entry) as folder:
            record = _take_step(client, deps_tag, folder)
        step = Step.ran(job, key, entries, Ran.of(record),
                        {"image": deps_tag, "image_id": image_id})  # fmt: skip
        for line in step.outcome():
            log.line(line)
        cache.save(step)
        return step

    def _deps_context(self, context: Path, job: BuildJob) -> None:
        """What the dependency image's build needs beside the project: the CA bundle,
        cdsw/cml, and the tracer."""
        bundle = Path(job.ca_bundle) if job.ca_bundle else None
        if bundle and bundle.is_file():
            shutil.copy2(bundle, context / "ca-bundle.pem")
        else:
            (context / "ca-bundle.pem").write_text("")
        lib = context / "lib"  # /usr/local/lib/cdsw in the image
        for source, name in runner_files():
            (lib / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, lib / name)
        shutil.copyfile(STEPTRACE, lib / "steptrace.py")
        (lib / "replica.py").write_text(LAUNCHER_TEXT)
        for path in [context / "ca-bundle.pem", lib, *lib.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # root's, read by the cdsw user

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


def _output_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """What a step left in its image is model code's: files, folders and links only,
    nothing outside the entry, nothing setuid, owned by the controller."""
    checked = tarfile.tar_filter(member, dest)
    if not (checked.isfile() or checked.isdir() or checked.issym()):
        return None
    return checked.replace(uid=os.getuid(), gid=os.getgid(), uname="", gname="")


def _take_step(client: Any, image: str, folder: Path) -> dict[str, Any]:
    """The step's record (its reads, writes and deletions) and its outputs (into
    ``folder/tree``), copied out of its dependency image without running it."""
    from docker.errors import DockerException

    container = client.api.create_container(image, command=["true"])
    record: dict = {}
    try:
        stream, _stat = client.api.get_archive(container["Id"], STEP_DIR)
        with tempfile.TemporaryFile() as fh:
            for chunk in stream:
                fh.write(chunk)
            fh.seek(0)
            with tarfile.open(fileobj=fh) as tar:
                keep = []
                for member in tar:
                    _top, _, rel = member.name.partition("/")
                    if rel == "step.json" and member.isfile():
                        data = tar.extractfile(member)
                        record = json.loads(data.read(MAX_RECORD)) if data else {}
                    elif rel == "tree" or rel.startswith("tree/"):
                        member.name = rel
                        keep.append(member)
                tar.extractall(folder, members=keep, filter=_output_filter)
    except (ValueError, OSError, tarfile.TarError, DockerException) as exc:
        raise BuildFailed(f"the step's record could not be read from its image: {exc}") from None
    finally:
        client.api.remove_container(container["Id"], force=True)
    if not isinstance(record, dict) or "opened" not in record:
        raise BuildFailed("the step left no record in its image (steptrace did not finish)")
    (folder / "tree").mkdir(exist_ok=True)
    return record


def make_builder(snapshots: SnapshotRepo) -> DockerBuilder:
    return DockerBuilder(snapshots)
