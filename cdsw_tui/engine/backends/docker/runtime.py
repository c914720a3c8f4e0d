"""The Docker runtime: each replica is a container of the build's image.

A container runs as REPLICA_UID (a uid no host account has, so no user here can read
its environment or reach its socket through /proc) with every capability dropped,
``no-new-privileges`` and a pids limit, and publishes no port: its runner listens on a
Unix socket in a folder of its own, mounted at /run/cdsw, which the controller dials
without following links (the container can write there, and nothing else of the
host). Logs leave through ``docker logs``; a thread per replica follows them, and the
controller reads from an offset (the nanosecond time of the last line it took).
Labels let a restarted controller adopt its containers and remove those no deployment
wants. A thread follows Docker's events, so noticing a dead container costs no API call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdsw_tui.config import DOMAIN, GATEWAY_SOCKET, MODEL_SERVICE
from cdsw_tui.engine import process
from cdsw_tui.engine.runs import GATEWAY_MOUNT
from cdsw_tui.engine.runtime import (
    Exit,
    Found,
    Output,
    Placed,
    ReplicaSpec,
    RuntimeBase,
    RuntimeUnavailable,
    runner_arguments,
)
from cdsw_tui.resources import RUNNER_LAUNCHER

log = logging.getLogger("cdsw_tui.controller")
SOCKET_DIR = "/run/cdsw"
TMP_MB = 256  # a replica's /tmp (tmpfs: counted in its memory limit too)
SOCKET_DIR_MB = 1  # the host folder of its socket, a tmpfs of this size where we are root
UID = 1000
PIDS_LIMIT = 1024
STOP_GRACE = 2
RUNNER = RUNNER_LAUNCHER  # in every image of ours, old or new
PYTHON = "/home/cdsw/.venv/bin/python"


def gateway_access(home: str) -> tuple[dict[str, dict], dict[str, str], dict[str, str]]:
    """What lets a container reach the gateway with no network: its socket folder
    (read-only), where the forwarder finds it, and the gateway's names as 127.0.0.1,
    where the forwarder listens (pylib/cdsw_forward). (volumes, environment, hosts)"""
    folder = str(Path(home, GATEWAY_SOCKET).parent)
    socket = f"{GATEWAY_MOUNT}/{Path(GATEWAY_SOCKET).name}"
    return (
        {folder: {"bind": GATEWAY_MOUNT, "mode": "ro"}},
        {"CDSW_TUI_GATEWAY_SOCKET": socket},
        {MODEL_SERVICE: "127.0.0.1", DOMAIN: "127.0.0.1"},
    )


def home_id(home: Path) -> str:
    """A short name of the home, so that two homes never share a tag or a container."""
    return hashlib.sha256(str(home).encode()).hexdigest()[:10]


def parse_stamp(text: bytes) -> int:
    """Docker's RFC 3339 time with nanoseconds, as nanoseconds since the epoch."""
    whole, _, rest = text.partition(b".")
    fraction = rest.rstrip(b"Z")[:9].ljust(9, b"0")
    seconds = datetime.strptime(whole.decode(), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return int(seconds.timestamp()) * 1_000_000_000 + int(fraction or b"0")


class Follower:
    """A followed, time-stamped log stream (``docker logs`` of a container, or of a
    service), read into a buffer by a thread of its own."""

    def __init__(self, stream: Any, name: str) -> None:
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.done = False
        self.stream = stream
        threading.Thread(target=self._pump, daemon=True, name=f"logs-{name}").start()

    def _pump(self) -> None:
        try:
            for chunk in self.stream:
                with self.lock:
                    self.buf += chunk
        except Exception:  # the container went, or dockerd did
            pass
        finally:
            self.done = True

    def close(self) -> None:
        try:
            self.stream.close()
        except Exception:  # already closed
            pass

    def take(self, offset: int, limit: int) -> Output:
        """Whole lines after ``offset`` (the nanosecond time of the last one taken)."""
        with self.lock:
            cut = self.buf.rfind(b"\n", 0, limit) + 1
            if not cut and self.done:
                cut = len(self.buf)
            chunk = bytes(self.buf[:cut])
            del self.buf[:cut]
        lines = []
        for line in chunk.splitlines(keepends=True):
            stamp, _, text = line.partition(b" ")
            try:
                ns = parse_stamp(stamp)
            except ValueError:
                lines.append(line)
                continue
            if ns <= offset:
                continue  # taken before: the follower restarted from that time
            offset = ns
            lines.append(text)
        return Output(b"".join(lines), offset)


class Followers:
    """The log followers of a runtime's replicas, one per handle, opened on first read
    and opened again (from the last line taken) once one ended with nothing left."""

    def __init__(self) -> None:
        self._by_handle: dict[str, Follower] = {}

    def read(
        self,
        handle: str,
        offset: int,
        limit: int,
        open_stream: Callable[[float | None], object],
        reopen: Callable[[], bool] = lambda: True,
    ) -> Output:
        """What the replica wrote after ``offset``; ``open_stream(since)`` follows its log,
        ``reopen()`` says whether an ended follower's replica may still write."""
        follower = self._by_handle.get(handle)
        if follower is None or (follower.done and not follower.buf and reopen()):
            try:
                stream = open_stream(offset / 1e9 if offset else None)
            except Exception:  # gone, or the engine is away: nothing to read now
                return Output(b"", offset)
            follower = self._by_handle[handle] = Follower(stream, handle[:12])
        return follower.take(offset, limit)

    def drop(self, handle: str) -> None:
        follower = self._by_handle.pop(handle, None)
        if follower is not None:
            follower.close()


def _small_disk(folder: Path, uid: int) -> None:
    """A tmpfs of SOCKET_DIR_MB over ``folder``, owned by the replica's uid (root only;
    without it the folder stays a plain one, as before)."""
    options = f"size={SOCKET_DIR_MB}m,mode=0700,uid={uid},gid={uid},nosuid,nodev,noexec"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode:
        log.warning("the socket folder %s stays unbounded: %s", folder, done.stderr.strip()[:200])


def _drop_folder(folder: Path) -> None:
    """Remove a socket folder, unmounting its tmpfs first (nothing in it is followed)."""
    if os.path.ismount(folder):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
    shutil.rmtree(folder, ignore_errors=True)


class DockerRuntime(RuntimeBase):
    name = "docker"

    def __init__(self, home: Path) -> None:
        from cdsw_tui.engine.backends.docker.images import docker_client

        self.client = docker_client(timeout=30)
        self.home = str(home)
        self.sockets = home / "run" / "docker"
        self.dead: dict[str, Exit] = {}
        self.names: dict[str, str] = {}
        self.followers = Followers()
        self._lock = threading.Lock()
        events = self._events()  # subscribed before any start: no death goes unheard
        threading.Thread(
            target=self._follow_events, args=(events,), daemon=True, name="docker-events"
        ).start()

    # -- deaths, from Docker's event stream ---------------------------------------------

    def _events(self) -> Any:
        return self.client.events(
            decode=True,
            filters={
                "type": "container",
                "event": ["die", "oom"],
                "label": [f"cdsw.home={self.home}"],
            },
        )

    def _follow_events(self, events: Any) -> None:
        while True:
            try:
                for event in events:
                    cid = event.get("id", "")
                    if event.get("status") == "oom" or event.get("Action") == "oom":
                        with self._lock:
                            self.dead[cid] = Exit("out of memory: killed by the kernel", oom=True)
                        continue
                    code = event.get("Actor", {}).get("Attributes", {}).get("exitCode", "")
                    verdict = self._verdict(cid, code)
                    with self._lock:
                        self.dead.setdefault(cid, verdict)
            except Exception:  # dockerd restarted: follow again
                pass
            time.sleep(1)
            try:
                events = self._events()
                self._resync()  # deaths missed while dockerd was away
            except Exception:  # still away: try again
                continue

    def _resync(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"cdsw.home={self.home}"}
        ):
            if container.status != "running":
                code = container.attrs["State"].get("ExitCode", "")
                with self._lock:
                    self.dead.setdefault(container.id, self._verdict(container.id, str(code)))

    def _verdict(self, cid: str, code: str) -> Exit:
        try:
            state = self.client.api.inspect_container(cid)["State"]
        except Exception:  # gone already
            state = {}
        if state.get("OOMKilled"):
            return Exit("out of memory: killed by the kernel", oom=True)
        try:
            status: int | None = int(code)
        except (TypeError, ValueError):
            status = None
        return Exit(f"the container exited with status {code or '?'}", status)

    # -- the contract ------------------------------------------------------------------

    def _socket_dir(self, name: str) -> Path:
        return self.sockets / name

    def start(self, spec: ReplicaSpec) -> Placed:
        from docker.errors import DockerException

        process.private_dir(self.sockets)
        folder = self._socket_dir(spec.name)
        _drop_folder(folder)  # unlinks what a container left, follows nothing
        os.mkdir(folder, 0o700)  # new: nothing planted here can be followed
        uid = spec.uid if spec.uid >= 0 else UID
        if os.geteuid() == 0:
            os.chown(folder, uid, uid, follow_symlinks=False)
            _small_disk(folder, uid)  # what the replica writes there cannot fill the home
        else:
            os.chmod(folder, 0o777)  # inside our 0700 folder: only the container gets in
        command = [
            PYTHON,
            RUNNER,
            *runner_arguments(spec, "/home/cdsw", f"{SOCKET_DIR}/replica.sock"),
            "--socket-mode",
            "600" if os.geteuid() == 0 else "666",  # a controller not root needs the others bit
        ]
        kwargs: dict = {}
        if spec.gpu:
            from docker.types import DeviceRequest

            kwargs["device_requests"] = [DeviceRequest(count=spec.gpu, capabilities=[["gpu"]])]
        gateway_volumes, gateway_env, gateway_hosts = gateway_access(self.home)
        try:
            self._remove_container(spec.name)  # left under this name while dockerd was away
            container = self.client.containers.run(
                spec.artifact,
                command=command,
                name=spec.name,
                detach=True,
                environment={**spec.environment, **gateway_env},
                extra_hosts=gateway_hosts,
                user=f"{uid}:{uid}",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=PIDS_LIMIT,
                # docker's own copy of the output is bounded too (the controller files it)
                log_config={"type": "json-file", "config": {"max-size": "20m", "max-file": "2"}},
                nano_cpus=int(spec.cpu * 1e9),
                mem_limit=f"{spec.memory}m",
                memswap_limit=f"{spec.memory}m",
                volumes={str(folder): {"bind": SOCKET_DIR, "mode": "rw"}, **gateway_volumes},
                # no route anywhere (the gateway speaks to it over its socket) unless the
                # project lets its replicas out; /tmp is memory of its own, bounded
                network_mode=None if spec.egress else "none",
                tmpfs={"/tmp": f"size={TMP_MB}m,mode=1777"},
                labels={
                    "cdsw.home": self.home,
                    "cdsw.replica": spec.name,
                    "cdsw.deployment": str(spec.deployment_id),
                    "cdsw.model_id": str(spec.model_id),
                },
                **kwargs,
            )
        except DockerException as exc:
            _drop_folder(folder)
            raise RuntimeUnavailable(f"docker could not start the container: {exc}") from None
        self.names[container.id] = spec.name
        return Placed(address=f"unix:{folder}/replica.sock", handle=container.id)

    def inspect(self, handle: str) -> Exit | None:
        with self._lock:
            return self.dead.get(handle)

    def stop(self, handle: str) -> None:
        from docker.errors import DockerException, NotFound

        try:
            self.client.api.stop(handle, timeout=STOP_GRACE)  # the container's whole cgroup
        except NotFound:
            pass
        except DockerException as exc:
            raise RuntimeUnavailable(f"docker could not stop the container: {exc}") from None

    def remove(self, handle: str) -> None:
        from docker.errors import DockerException, NotFound

        self.followers.drop(handle)
        name = self.names.pop(handle, None) or self._label(handle, "cdsw.replica")
        try:
            self.client.api.remove_container(handle, force=True)
        except NotFound:
            pass
        except DockerException as exc:
            raise RuntimeUnavailable(f"docker could not remove the container: {exc}") from None
        if name:
            _drop_folder(self._socket_dir(name))
        with self._lock:
            self.dead.pop(handle, None)

    def _label(self, handle: str, key: str) -> str:
        try:
            return self.client.api.inspect_container(handle)["Config"]["Labels"].get(key, "")
        except Exception:  # gone
            return ""

    def _remove_container(self, name: str) -> None:
        from docker.errors import NotFound

        try:
            self.client.api.remove_container(name, force=True)
        except NotFound:
            pass

    def adopt(self, name: str, handle: str) -> Placed | None:
        try:
            info = self.client.api.inspect_container(handle)
        except Exception:  # not ours, or dockerd is away
            return None
        labels = info.get("Config", {}).get("Labels", {})
        if (
            not info.get("State", {}).get("Running", False)
            or labels.get("cdsw.replica") != name
            or labels.get("cdsw.home") != self.home
        ):
            return None
        self.names[handle] = name
        return Placed(address=f"unix:{self._socket_dir(name)}/replica.sock", handle=handle)

    def list_replicas(self) -> list[Found]:
        return [
            Found(c.labels.get("cdsw.replica", ""), c.id, c.status == "running")
            for c in self.client.containers.list(
                all=True, filters={"label": f"cdsw.home={self.home}"}
            )
        ]

    def read_output(self, handle: str, offset: int, limit: int = 1 << 20) -> Output:
        return self.followers.read(
            handle,
            offset,
            limit,
            lambda since: self.client.api.logs(
                handle,
                stdout=True,
                stderr=True,
                stream=True,
                follow=True,
                timestamps=True,
                since=since,
            ),
            reopen=lambda: self.inspect(handle) is None,  # it runs: its stream broke
        )


def make_runtime(home: Path) -> DockerRuntime:
    return DockerRuntime(home)
