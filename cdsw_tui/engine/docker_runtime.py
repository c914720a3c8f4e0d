"""The Docker runtime: each replica is a container of the build's image.

The container publishes its port on 127.0.0.1 only, runs as the unprivileged cdsw
user with every capability dropped, and carries labels that let a restarted
controller find it again. The runner inside writes its log into a host folder
mounted at /var/log/cdsw, so logs outlive containers. A thread follows Docker's
event stream, so noticing a dead container costs no API call per check.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cdsw_tui.engine.runtime import ReplicaExited, ReplicaSpec, Running

PORT = 8080
LOG_MOUNT = "/var/log/cdsw"
UID = 1000


class DockerRuntime:
    def __init__(self, home: Path) -> None:
        from cdsw_tui.engine.images import docker_client

        self.client = docker_client()
        self.home = str(home)
        self.dead: dict[str, ReplicaExited] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._follow_events, daemon=True, name="docker-events").start()

    def _follow_events(self) -> None:
        first = True
        while True:
            try:
                if not first:
                    self._resync()  # events were missed while dockerd was away
                first = False
                events = self.client.events(
                    decode=True,
                    filters={
                        "type": "container",
                        "event": ["die", "oom"],
                        "label": [f"cdsw.home={self.home}"],
                    },
                )
                for event in events:
                    cid = event.get("id", "")
                    attrs = event.get("Actor", {}).get("Attributes", {})
                    if event.get("status") == "oom" or event.get("Action") == "oom":
                        with self._lock:
                            self.dead[cid] = ReplicaExited(
                                "out of memory: killed by the kernel", oom=True
                            )
                        continue
                    code = attrs.get("exitCode", "?")
                    with self._lock:
                        if cid not in self.dead:
                            self.dead[cid] = self._verdict(cid, code)
            except Exception:  # noqa: BLE001  (dockerd restarted: follow again)
                time.sleep(1)

    def _resync(self) -> None:
        """Every container of ours that is not running is dead, whatever we heard."""
        for container in self.client.containers.list(
            all=True, filters={"label": f"cdsw.home={self.home}"}
        ):
            if container.status != "running":
                with self._lock:
                    self.dead.setdefault(
                        container.id,
                        self._verdict(container.id, container.attrs["State"].get("ExitCode", "?")),
                    )

    def _verdict(self, cid: str, code: str) -> ReplicaExited:
        try:
            state = self.client.api.inspect_container(cid)["State"]
        except Exception:  # noqa: BLE001
            state = {}
        if state.get("OOMKilled"):
            return ReplicaExited("out of memory: killed by the kernel", oom=True)
        if str(code) == "3":
            return ReplicaExited("the model failed to load")
        return ReplicaExited(f"the container exited with status {code}")

    def start(self, spec: ReplicaSpec, timeout: float) -> Running:
        model_logs = spec.log_path.parent.parent  # logs/replicas/m<model>
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        spec.log_path.touch()
        spec.metrics_path.touch()
        for path in (model_logs, spec.log_path.parent, spec.log_path, spec.metrics_path):
            os.chown(path, UID, UID) if os.geteuid() == 0 else None
            os.chmod(path, 0o777 if path.is_dir() else 0o666)
        rel_log = spec.log_path.relative_to(model_logs)
        command = [
            "/home/cdsw/.venv/bin/python",
            "/usr/local/lib/cdsw/replica.py",
            "--dir",
            "/home/cdsw",
            "--file",
            spec.file,
            "--function",
            spec.function,
            "--name",
            spec.name,
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--kernel",
            spec.kernel,
            "--log",
            f"{LOG_MOUNT}/{rel_log}",
            "--metrics",
            f"{LOG_MOUNT}/{spec.metrics_path.name}",
        ]
        kwargs: dict = {}
        if spec.gpu:
            from docker.types import DeviceRequest

            kwargs["device_requests"] = [DeviceRequest(count=spec.gpu, capabilities=[["gpu"]])]
        self._remove(spec.name)  # a container left under this name (dockerd was down at its stop)
        container = self.client.containers.run(
            spec.image,
            command=command,
            name=spec.name,
            detach=True,
            environment=spec.environment,
            ports={f"{PORT}/tcp": ("127.0.0.1", None)},
            user=f"{UID}:{UID}",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            nano_cpus=int(spec.cpu * 1e9),
            mem_limit=f"{spec.memory}m",
            memswap_limit=f"{spec.memory}m",
            volumes={str(model_logs): {"bind": LOG_MOUNT, "mode": "rw"}},
            labels={
                "cdsw.home": self.home,
                "cdsw.replica": spec.name,
                "cdsw.deployment": str(spec.deployment_id),
                "cdsw.model_id": str(spec.model_id),
            },
            **kwargs,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            ports = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                f"{PORT}/tcp"
            )
            if ports:
                return Running(port=int(ports[0]["HostPort"]), container_id=container.id)
            if container.status in ("exited", "dead"):
                raise ReplicaExited(
                    f"the container exited with status {container.attrs['State'].get('ExitCode')}"
                )
            time.sleep(0.05)
        self._remove(container.id)
        raise ReplicaExited(f"the container published no port within {timeout:g} s")

    def exited(self, running: Running) -> ReplicaExited | None:
        with self._lock:
            return self.dead.get(running.container_id)

    def stop(self, running: Running) -> None:
        self._remove(running.container_id)

    def _remove(self, cid: str) -> None:
        try:
            self.client.api.remove_container(cid, force=True)
        except Exception:  # noqa: BLE001  (already gone)
            pass

    def adopt(self, name: str, running: Running) -> bool:
        if not running.container_id:
            return False
        try:
            info = self.client.api.inspect_container(running.container_id)
        except Exception:  # noqa: BLE001
            return False
        labels = info.get("Config", {}).get("Labels", {})
        return info.get("State", {}).get("Running", False) and labels.get("cdsw.replica") == name

    def kill_stray(self, name: str, pid: int | None = None) -> bool:
        for container in self.client.containers.list(
            all=True, filters={"label": f"cdsw.replica={name}"}
        ):
            self._remove(container.id)
            return True
        return False

    def ours(self) -> list[tuple[str, str]]:
        """(container id, replica name) of every container this home started."""
        return [
            (c.id, c.labels.get("cdsw.replica", ""))
            for c in self.client.containers.list(
                all=True, filters={"label": f"cdsw.home={self.home}"}
            )
        ]
