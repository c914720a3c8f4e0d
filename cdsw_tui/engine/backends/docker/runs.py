"""Runs on Docker (and on a swarm's project, on this node's engine): the script in a
container of the project's engine image.

As a replica does, it runs as REPLICA_UID with every capability dropped,
``no-new-privileges``, a pids limit and its memory and cpu bounded; unlike a replica
it may reach the network (a run installs packages, as a build does). The project
folder itself is at /home/cdsw, read-write through an id-mapped view (``idmap``) under
a root controller, the project's environment at ENV_MOUNT, cdsw/cml/cmlapi read-only
at PYLIB_MOUNT. Its output is the container's log, filed line by line.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdsw_tui.engine import idmap
from cdsw_tui.engine.backends.docker.runtime import (
    PIDS_LIMIT,
    STOP_GRACE,
    TMP_MB,
    gateway_access,
)
from cdsw_tui.engine.builder import BuildFailed
from cdsw_tui.engine.buildlog import BuildLog
from cdsw_tui.engine.process import private_dir
from cdsw_tui.engine.runs import (
    ENV_MOUNT,
    OURS,
    PYLIB_MOUNT,
    RunJob,
    base_variables,
    by_domain,
    clean_scratch,
    env_folder,
    run_marker,
    script_command,
)
from cdsw_tui.resources import PYLIB

CA_MOUNT = "/etc/cdsw/ca-bundle.pem"
EXPOSE_PORT = 20000  # where an application's forwarder listens inside its container


def _pump(container: Any, log: BuildLog) -> None:
    """The container's output into the run's log, a line at a time."""
    rest = b""
    try:
        for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for line in lines:
                log.line(line.decode("utf-8", "replace"))
    except Exception:  # the container went, or dockerd did: what came is filed
        pass
    if rest:
        log.line(rest.decode("utf-8", "replace"))


class DockerRunner:
    def __init__(self, home: Path) -> None:
        from cdsw_tui.engine.backends.docker.images import docker_client

        self.client = docker_client(timeout=30)
        self.home = str(home)

    def run(self, job: RunJob, log: BuildLog, cancelled: Callable[[], bool]) -> int:
        from docker.errors import DockerException, ImageNotFound

        deadline = time.monotonic() + job.timeout if job.timeout else float("inf")
        private_dir(job.scratch.parent)
        private_dir(job.scratch)
        root = os.geteuid() == 0
        uid = job.uid if root and job.uid >= 0 else os.geteuid()
        source = job.project_dir
        view = job.scratch / "project"
        if root:  # a view in which the project's files are the run's uid's
            view.mkdir(mode=0o700)
            try:
                idmap.mount(job.project_dir, view, uid)
            except OSError as exc:
                view.rmdir()
                raise BuildFailed(
                    f"the project folder cannot be given to the run read-write: {exc}"
                ) from None
            source = str(view)
        env_folder(job.env_dir, uid)
        volumes = {
            source: {"bind": "/home/cdsw", "mode": "rw"},
            str(job.env_dir): {"bind": ENV_MOUNT, "mode": "rw"},
            str(PYLIB): {"bind": PYLIB_MOUNT, "mode": "ro"},
        }
        gateway_volumes, gateway_env, gateway_hosts = gateway_access(self.home)
        volumes.update(gateway_volumes)
        variables = by_domain(
            {**base_variables(job, ENV_MOUNT, PYLIB_MOUNT), **job.variables, **gateway_env}
        )
        if job.ca_bundle and Path(job.ca_bundle).is_file():
            volumes[job.ca_bundle] = {"bind": CA_MOUNT, "mode": "ro"}
            variables.update(PIP_CERT=CA_MOUNT, REQUESTS_CA_BUNDLE=CA_MOUNT)
        key, _, value = run_marker(job.home, job.run_id).partition("=")
        variables[key] = value
        # the gateway at 127.0.0.1 inside, as on the host (a forwarder to its socket)
        text = "python3 -m cdsw_forward --background\n"
        ports: dict[str, tuple[str, int]] = {}
        if job.app_port:  # the application's 127.0.0.1 port, on the host's 127.0.0.1
            inner = EXPOSE_PORT if job.app_port != EXPOSE_PORT else EXPOSE_PORT + 1
            text += f"python3 -m cdsw_forward --background --expose {inner} {job.app_port}\n"
            ports[f"{inner}/tcp"] = ("127.0.0.1", job.app_port)
        text += script_command(job, "python3", ENV_MOUNT, system_site=True, pylib=PYLIB_MOUNT)
        container = None
        try:
            try:
                container = self.client.containers.run(
                    job.engine,
                    command=["/bin/sh", "-c", text],
                    name=f"cdsw-run-{job.run_id}-{self._tag()}",
                    detach=True,
                    environment=variables,
                    user=f"{uid}:{uid}",
                    working_dir="/home/cdsw",
                    init=True,  # the script is no PID 1: its own signals reach it, zombies reaped
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    pids_limit=PIDS_LIMIT,
                    nano_cpus=int(job.cpu * 1e9),
                    mem_limit=f"{job.memory}m",
                    memswap_limit=f"{job.memory}m",
                    volumes=volumes,
                    tmpfs={"/tmp": f"size={TMP_MB}m,mode=1777"},
                    labels={"cdsw.home": self.home, "cdsw.run": str(job.run_id)},
                    extra_hosts=gateway_hosts,
                    ports=ports,
                )
            except ImageNotFound:
                raise BuildFailed(
                    f"the engine image {job.engine} is not here (see 'cdsw-tui engine list')"
                ) from None
            except DockerException as exc:
                raise BuildFailed(f"docker could not start the run: {exc}") from None
            pump = threading.Thread(target=_pump, args=(container, log), daemon=True)
            pump.start()
            while True:
                try:
                    result = container.wait(timeout=0.3)
                    break
                except Exception:  # still running (a read timeout)
                    pass
                if cancelled():
                    container.stop(timeout=STOP_GRACE)
                    pump.join(timeout=2)
                    raise BuildFailed("cancelled by the user", status="cancelled")
                if time.monotonic() > deadline:
                    container.stop(timeout=STOP_GRACE)
                    pump.join(timeout=2)
                    raise BuildFailed(
                        f"the run passed its timeout of {job.timeout:g} s", status="timedout"
                    )
            pump.join(timeout=5)
            if container.attrs.get("State", {}).get("OOMKilled"):
                log.line(f"{OURS}out of memory: the run reached its memory limit")
            return int(result.get("StatusCode", 1))
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except DockerException:
                    pass
            if root:
                idmap.unmount(view)
            clean_scratch(job.scratch)

    def _tag(self) -> str:
        from cdsw_tui.engine.backends.docker.runtime import home_id

        return home_id(Path(self.home))

    def reconcile(self, home: Path) -> list[str]:
        """Containers of runs whose controller died, and the views they left."""
        from docker.errors import DockerException

        stopped = []
        for container in self.client.containers.list(
            all=True, filters={"label": [f"cdsw.home={self.home}", "cdsw.run"]}
        ):
            try:
                container.remove(force=True)
            except DockerException:
                continue
            stopped.append(container.name)
        root = home / "run" / "runs"
        for scratch in sorted(root.iterdir()) if root.is_dir() else []:
            idmap.unmount(scratch / "project")
            clean_scratch(scratch)
        return stopped


def make_runner(home: Path) -> DockerRunner:
    return DockerRunner(home)
