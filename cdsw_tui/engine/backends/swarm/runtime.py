"""The swarm runtime: each replica is a Docker Swarm service of one task.

A replica's task runs the build's pushed digest as REPLICA_UID (no account of this host)
with every capability dropped, under the deployment's cpu and memory as limits and reservations
(GPUs as the generic resource ``gpu`` of nodes that advertise it) and the project's
placement constraints. Its runner listens on port 8080, published in host mode on a
port Swarm picks on the task's node: the gateway dials that node's address (or, for a
task on the controller's own node, its container's address, which spares a userland
proxy), and the runner answers only a caller that proves it holds the replica's key
(a Docker secret, derived from a key of this home's, so a restarted controller knows
it again).

Swarm itself keeps the task running (a node that fails, a task it reschedules): the
runtime finds the replica's task again by its service, and ``address`` tells the
controller where it answers now. A task that ends by itself (the model failed to load,
ran out of memory) is the controller's to replace, with its reason, as on the other
backends. One thread lists this home's tasks twice a second for everyone, so watching
replicas costs one API call, not one per replica. Logs come from the service logs API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdsw_tui.engine import process
from cdsw_tui.engine.backends.docker.runtime import (
    PIDS_LIMIT,
    PYTHON,
    RUNNER,
    UID,
    Followers,
    home_id,
)
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
from cdsw_tui.errors import CdswError
from cdsw_tui.waiting import poll_until

PORT = 8080
KEY_FILE = "/run/secrets/cdsw-channel-key"
STOP_GRACE = 2
PLACE_TIMEOUT = 120.0  # a new task may pull its image first
UNPLACEABLE = 10.0  # seconds "no suitable node" may last before the start fails with it
WATCH_INTERVAL = 0.5
ENDED = ("complete", "failed", "rejected")
GONE = ("shutdown", "orphaned", "remove")
LIVE = ("new", "pending", "assigned", "accepted", "ready", "preparing", "starting", "running")
NOT_A_MANAGER = (
    "the Docker engine is not a swarm manager; make this machine one with "
    "'docker swarm init --advertise-addr 127.0.0.1' (or join a swarm as a manager)"
)


def preflight() -> None:
    """One line unless the engine here can run services (faces call it before work)."""
    from cdsw_tui.engine.backends.docker.images import docker_client

    manager(docker_client(timeout=10))


def manager(client: Any) -> dict[str, Any]:
    """The engine's swarm state, if it is a manager; one line saying how otherwise."""
    swarm = client.info().get("Swarm", {})
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        raise CdswError(NOT_A_MANAGER)
    return swarm


@dataclass
class Task:
    id: str
    state: str
    desired: str
    node: str
    port: int
    error: str
    code: int | None
    container: str
    created: str


def _task(raw: dict) -> Task:
    status = raw.get("Status", {})
    ports = status.get("PortStatus", {}).get("Ports") or []
    container = status.get("ContainerStatus", {})
    return Task(
        id=raw["ID"],
        state=status.get("State", ""),
        desired=raw.get("DesiredState", ""),
        node=raw.get("NodeID", ""),
        port=next((p.get("PublishedPort", 0) for p in ports if p.get("TargetPort") == PORT), 0),
        error=status.get("Err", "") or status.get("Message", ""),
        code=container.get("ExitCode"),
        container=container.get("ContainerID", ""),
        created=raw.get("CreatedAt", ""),
    )


class SwarmRuntime(RuntimeBase):
    name = "swarm"

    def __init__(self, home: Path) -> None:
        from cdsw_tui.engine.backends.docker.images import docker_client

        self.client = docker_client(timeout=30)
        self.node_id = manager(self.client).get("NodeID", "")
        self.home = str(home)
        self.prefix = f"cdsw-{home_id(home)}-"
        self.key = self._home_key(home)
        self.placed: dict[str, str] = {}  # service id -> the task it answered on
        self.names: dict[str, str] = {}
        self.followers = Followers()
        self.nodes: dict[str, str] = {}
        self.tasks: dict[str, list[Task]] = {}  # service id -> its tasks, newest first
        self.seen = 0.0
        self._lock = threading.Lock()
        self._fresh = threading.Condition(self._lock)
        threading.Thread(target=self._watch, daemon=True, name="swarm-tasks").start()

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _home_key(home: Path) -> bytes:
        """A random key of this home's (0600, never followed), from which each replica's
        channel key is derived."""
        path = process.private_dir(home / "run" / "swarm") / "channel.key"
        return bytes.fromhex(
            process.private_key(path, lambda: secrets.token_hex(32).encode()).decode()
        )

    def channel_key(self, name: str) -> str:
        return hmac.new(self.key, name.encode(), hashlib.sha256).hexdigest()

    # -- watching tasks -----------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # dockerd away: the verdicts wait, nothing is decided
                pass
            time.sleep(WATCH_INTERVAL)

    def refresh(self) -> None:
        services = {
            s["ID"] for s in self.client.api.services(filters={"label": f"cdsw.home={self.home}"})
        }
        by_service: dict[str, list[Task]] = {sid: [] for sid in services}
        listed = self.client.api.tasks(filters={"service": sorted(services)}) if services else []
        for raw in listed:  # one call for every replica of this home, whatever their number
            sid = raw.get("ServiceID", "")
            if sid in by_service:
                by_service[sid].append(_task(raw))
        for tasks in by_service.values():
            tasks.sort(key=lambda t: t.created, reverse=True)
        with self._fresh:
            self.tasks = by_service
            self.seen = time.monotonic()
            self._fresh.notify_all()

    def _node_address(self, node: str) -> str:
        address = self.nodes.get(node)
        if address:
            return address
        info = self.client.api.inspect_node(node)
        address = info.get("Status", {}).get("Addr", "")
        if not address or address == "0.0.0.0":  # a manager may report no address of its own
            address = info.get("ManagerStatus", {}).get("Addr", "").rpartition(":")[0]
        self.nodes[node] = address or "127.0.0.1"
        return self.nodes[node]

    def _running(self, handle: str) -> Task | None:
        with self._lock:
            tasks = self.tasks.get(handle, [])
        return next((t for t in tasks if t.state == "running" and t.port), None)

    def _dial(self, name: str, task: Task) -> str:
        """A task on this engine's own node is dialled at its container's address (no
        userland proxy in between); one elsewhere at its node's published port."""
        host, port = "", PORT
        if task.node == self.node_id and task.container:
            try:
                networks = self.client.api.inspect_container(task.container)["NetworkSettings"]
                host = next(
                    (n["IPAddress"] for n in networks["Networks"].values() if n.get("IPAddress")),
                    "",
                )
            except Exception:  # gone already: the published port says the same
                host = ""
        if not host:
            host, port = self._node_address(task.node), task.port
        host = f"[{host}]" if ":" in host else host
        return f"tcp://{host}:{port}#{self.channel_key(name)}"

    # -- the contract ---------------------------------------------------------------------------

    def start(self, spec: ReplicaSpec) -> Placed:
        from docker.errors import DockerException
        from docker.types import (
            EndpointSpec,
            Resources,
            RestartPolicy,
            SecretReference,
        )

        labels = {
            "cdsw.home": self.home,
            "cdsw.replica": spec.name,
            "cdsw.deployment": str(spec.deployment_id),
            "cdsw.model_id": str(spec.model_id),
        }
        command = [
            PYTHON,
            RUNNER,
            *runner_arguments(spec, "/home/cdsw"),
            "--listen",
            str(PORT),
            "--key-file",
            KEY_FILE,
        ]
        memory = spec.memory * 1024 * 1024
        resources = Resources(
            cpu_limit=int(spec.cpu * 1e9),
            mem_limit=memory,
            cpu_reservation=int(spec.cpu * 1e9),
            mem_reservation=memory,
            generic_resources={"gpu": spec.gpu} if spec.gpu else None,
        )
        resources["Limits"]["Pids"] = PIDS_LIMIT
        uid = spec.uid if spec.uid >= 0 else UID
        try:
            self._remove_service(spec.name)  # left under this name while the engine was away
            secret = self._secret(spec.name, labels)
            service = self.client.api.create_service(
                {
                    "ContainerSpec": {
                        "Image": spec.artifact,
                        "Command": command,
                        "Env": [f"{k}={v}" for k, v in spec.environment.items()],
                        "User": f"{uid}:{uid}",
                        "Labels": labels,
                        "CapabilityDrop": ["ALL"],
                        "StopGracePeriod": STOP_GRACE * 1_000_000_000,
                        "Secrets": [
                            SecretReference(
                                secret,
                                f"{self.prefix}{spec.name}",
                                KEY_FILE.rsplit("/", 1)[1],
                                uid=str(uid),
                                gid=str(uid),
                                mode=0o400,
                            )
                        ],
                    },
                    "Resources": resources,
                    "RestartPolicy": RestartPolicy(condition="any", delay=2_000_000_000),
                    "Placement": {"Constraints": list(spec.placement)},
                    "LogDriver": {
                        "Name": "json-file",
                        "Options": {"max-size": "20m", "max-file": "2"},
                    },
                },
                name=spec.name,
                labels=labels,
                endpoint_spec=EndpointSpec(
                    ports=[{"Protocol": "tcp", "TargetPort": PORT, "PublishMode": "host"}]
                ),
            )
        except DockerException as exc:
            raise RuntimeUnavailable(f"swarm could not create the service: {exc}") from None
        handle = service["ID"]
        self.names[handle] = spec.name
        return self._place(spec.name, handle)

    def _place(self, name: str, handle: str) -> Placed:
        """Wait until the service's task runs with a port; a task that ended at once is
        returned too (``inspect`` tells why), one Swarm cannot place is an error."""
        deadline = time.monotonic() + PLACE_TIMEOUT
        unplaceable = time.monotonic()  # the last time the task was not refused a node
        while True:
            with self._fresh:
                asked = time.monotonic()
                while self.seen < asked:
                    self._fresh.wait(WATCH_INTERVAL * 4)
                    if time.monotonic() - asked > WATCH_INTERVAL * 4:
                        break
                tasks = self.tasks.get(handle, [])
            task = tasks[0] if tasks else None
            if task is not None:
                if task.state == "running" and task.port:
                    self.placed[handle] = task.id
                    return Placed(self._dial(name, task), handle)
                if task.state in ENDED or task.state in GONE:
                    self.placed[handle] = task.id
                    return Placed(f"tcp://127.0.0.1:0#{self.channel_key(name)}", handle)
                if "no suitable node" not in task.error:
                    unplaceable = time.monotonic()
            if time.monotonic() > min(deadline, unplaceable + UNPLACEABLE):
                why = task.error if task is not None else "no task was created"
                self.stop(handle)
                self.remove(handle)
                raise RuntimeUnavailable(f"swarm did not place the replica: {why}")

    def _secret(self, name: str, labels: dict[str, str]) -> str:
        self._remove_secret(name)  # one left by a start that did not finish
        made = self.client.api.create_secret(
            f"{self.prefix}{name}", self.channel_key(name).encode(), labels=labels
        )
        return made["ID"]

    def inspect(self, handle: str) -> Exit | None:
        with self._lock:
            if handle not in self.tasks:
                if self.seen and handle in self.placed:
                    return Exit("the service was removed")
                return None
            tasks = self.tasks[handle]
        placed = self.placed.get(handle)
        task = next((t for t in tasks if t.id == placed), None)
        if task is None or task.state not in ENDED:
            return None  # running, or moved by Swarm (``address`` finds it)
        return self._verdict(task)

    def _verdict(self, task: Task) -> Exit:
        if task.container:
            try:
                state = self.client.api.inspect_container(task.container)["State"]
                if state.get("OOMKilled"):
                    return Exit("out of memory: killed by the kernel", oom=True)
            except Exception:  # on another node, or removed: the task's word is enough
                pass
        if task.state == "rejected":
            return Exit(f"swarm rejected the task: {task.error}")
        return Exit(f"the task exited with status {task.code}", task.code)

    def address(self, handle: str) -> str | None:
        task = self._running(handle)
        name = self.names.get(handle)
        if task is None or name is None or task.id == self.placed.get(handle):
            return None
        self.placed[handle] = task.id
        return self._dial(name, task)

    def moving(self, handle: str) -> bool:
        with self._lock:
            tasks = self.tasks.get(handle)
        if not tasks:
            return False
        placed = next((t for t in tasks if t.id == self.placed.get(handle)), None)
        return placed is not None and placed.state in GONE and tasks[0].desired == "running"

    def stop(self, handle: str) -> None:
        from docker.errors import DockerException, NotFound

        try:
            info = self.client.api.inspect_service(handle)
            if info["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas") != 0:
                self.client.api.update_service(
                    handle,
                    version=info["Version"]["Index"],
                    mode={"Replicated": {"Replicas": 0}},
                    fetch_current_spec=True,
                )

            def ended() -> bool:  # no survivor: every task's container has ended
                tasks = self.client.api.tasks(filters={"service": handle})
                return not any(t.get("Status", {}).get("State") in LIVE for t in tasks)

            if not poll_until(ended, STOP_GRACE + 20, interval=0.1):
                raise RuntimeUnavailable("swarm did not stop the service's task in time")
        except NotFound:
            return
        except DockerException as exc:
            raise RuntimeUnavailable(f"swarm could not stop the service: {exc}") from None

    def remove(self, handle: str) -> None:
        from docker.errors import DockerException, NotFound

        self.followers.drop(handle)
        name = self.names.pop(handle, None) or self._label(handle)
        try:
            self.client.api.remove_service(handle)
        except NotFound:
            pass
        except DockerException as exc:
            raise RuntimeUnavailable(f"swarm could not remove the service: {exc}") from None
        if name:
            self._remove_secret(name)
        self.placed.pop(handle, None)
        with self._lock:
            self.tasks.pop(handle, None)

    def _label(self, handle: str) -> str:
        try:
            return self.client.api.inspect_service(handle)["Spec"]["Labels"].get("cdsw.replica", "")
        except Exception:  # gone
            return ""

    def _remove_secret(self, name: str) -> None:
        secret_name = f"{self.prefix}{name}"
        for secret in self.client.api.secrets(filters={"name": secret_name}):
            if secret["Spec"]["Name"] == secret_name:
                try:
                    self.client.api.remove_secret(secret["ID"])
                except Exception:  # a task still holds it: collect removes it later
                    pass

    def _remove_service(self, name: str) -> None:
        from docker.errors import NotFound

        try:
            info = self.client.api.inspect_service(name)
        except NotFound:
            return
        if info["Spec"].get("Labels", {}).get("cdsw.home") == self.home:
            self.client.api.remove_service(info["ID"])

    def adopt(self, name: str, handle: str) -> Placed | None:
        try:
            info = self.client.api.inspect_service(handle)
        except Exception:  # not ours, or the engine is away
            return None
        labels = info.get("Spec", {}).get("Labels", {})
        if labels.get("cdsw.replica") != name or labels.get("cdsw.home") != self.home:
            return None
        self.names[handle] = name
        task = poll_until(lambda: self._running(handle), 5, interval=0.1)
        if task is None:
            return None
        self.placed[handle] = task.id
        return Placed(self._dial(name, task), handle)

    def list_replicas(self) -> list[Found]:
        found = []
        for service in self.client.api.services(filters={"label": f"cdsw.home={self.home}"}):
            spec = service["Spec"]
            replicas = spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
            found.append(
                Found(spec.get("Labels", {}).get("cdsw.replica", ""), service["ID"], bool(replicas))
            )
        return found

    def collect(self, keep: set[str]) -> list[str]:
        removed = super().collect(keep)
        names = {f.name for f in self.list_replicas()}
        for secret in self.client.api.secrets(filters={"label": f"cdsw.home={self.home}"}):
            if secret["Spec"].get("Labels", {}).get("cdsw.replica") not in names:
                try:
                    self.client.api.remove_secret(secret["ID"])
                except Exception:  # still in use: the next collect
                    pass
        return removed

    def read_output(self, handle: str, offset: int, limit: int = 1 << 20) -> Output:
        return self.followers.read(
            handle,
            offset,
            limit,
            lambda since: self.client.api.service_logs(
                handle,
                stdout=True,
                stderr=True,
                follow=True,
                timestamps=True,
                since=since,
                is_tty=False,
            ),
        )


def make_runtime(home: Path) -> SwarmRuntime:
    return SwarmRuntime(home)
