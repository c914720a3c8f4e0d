"""The local runtime: each replica is a process of the build's virtual environment.

Under a root controller a replica runs jailed (``sandbox``): as the unprivileged
REPLICA_UID, its build and environment read-only at /home/cdsw, its own /tmp and
/dev/shm, its processes in one PID namespace and one cgroup (``cgroup``: ``--memory``
bounds the whole tree). It listens on a Unix socket in its /tmp, which is
``<home>/run/local/<name>.tmpdir`` on the host (inside the controller's 0700 folder, so
only the controller reaches it; dialled without following links). Unjailed, the
socket is in ``<home>/run/local`` itself. Its stdout and stderr go to a spool file
there, opened by the controller and handed over, which the controller reads from an
offset and files in the replica's log. A record file, written by this runtime (never
by the replica), names the process and its address for adoption and garbage
collection; the handle is ``<pid>:<start time>:<name>``.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from cdsw_tui.config import GATEWAY_SOCKET, load_settings
from cdsw_tui.engine import process
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.backends.local import environment as envs
from cdsw_tui.engine.backends.local import sandbox
from cdsw_tui.engine.backends.local.cgroup import Cgroups
from cdsw_tui.engine.buildlog import stamp
from cdsw_tui.engine.runtime import (
    Exit,
    Found,
    Output,
    Placed,
    ReplicaSpec,
    RuntimeBase,
    runner_arguments,
)
from cdsw_tui.engine.stepcache import RECORD
from cdsw_tui.resources import RUNNER

STOP_GRACE = 2.0


def caveat() -> str:
    """Replicas that cannot be jailed say so at deploy: they run as the controller's user."""
    why = sandbox.unavailable()
    if not why:
        return ""
    return (
        f"model code runs as you (uid {os.geteuid()}), in its build folder, not at /home/cdsw, "
        f"with limits per process ({why}); a root controller jails it"
    )


SPOOL_LIMIT = 4 * 1024 * 1024  # a replica's spool is emptied once this much was filed


def machine_memory_mb() -> int:
    """This machine's memory (MemTotal): what local replicas' --memory may add up to,
    unless LOCAL_MEMORY_MB says otherwise (0: unknown, no bound)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class LocalRuntime(RuntimeBase):
    name = "local"

    def __init__(self, home: Path, memory_mb: int = 0) -> None:
        self.home = home
        self.dir = home / "run" / "local"
        self.cgroups = Cgroups(home)
        self._procs: dict[int, subprocess.Popen] = {}
        self.memory_mb = memory_mb or machine_memory_mb()  # what replicas may reserve in all
        self._placing = threading.Lock()  # a start's look at what is reserved, and its record

    # -- paths and handles -----------------------------------------------------------

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        return self.dir / f"{name}.sock", self.dir / f"{name}.out", self.dir / f"{name}.json"

    def _marker(self, name: str) -> bytes:
        """In the environment of the replica and of whatever it starts (daemons too)."""
        return f"CDSW_TUI_REPLICA={self.dir}/{name}".encode()

    @staticmethod
    def _parse(handle: str) -> tuple[int, int, str]:
        pid, start, name = handle.split(":", 2)
        return int(pid), int(start), name

    def _ours(self, pid: int, start: int, name: str) -> bool:
        """The very process we started: same pid, same start time (or, for a handle
        without one, from before the handle had it, the replica's name in its environment)."""
        if not process.alive(pid):
            return False
        if start:
            return process.start_time(pid) == start
        return process.has_marker(pid, self._legacy_marker(name))

    @staticmethod
    def _legacy_marker(name: str) -> bytes:
        return f"CDSW_REPLICA_ID={name}".encode()

    # -- the contract ------------------------------------------------------------------

    def start(self, spec: ReplicaSpec) -> Placed:
        with self._placing:
            self._make_room(spec)
            return self._start(spec)

    def _make_room(self, spec: ReplicaSpec) -> None:
        """Each replica reserves its --memory, as a scheduler's node would have it: one that
        does not fit beside the running ones is refused (a rollout then goes one replica at
        a time). Runs, applications and builds are not counted."""
        reserved = self._reserved(but=spec.name)
        used = sum(reserved.values())
        if self.memory_mb and used + spec.memory > self.memory_mb:
            raise RuntimeError(
                f"not enough memory on this machine: the replica asks {spec.memory} MB, and "
                f"{used} of the {self.memory_mb} MB replicas may have (LOCAL_MEMORY_MB) are "
                f"reserved by {len(reserved)} running"
            )

    def _reserved(self, but: str) -> dict[str, int]:
        """The memory of each replica of this home that runs, by name (``but`` left out:
        the one being started again)."""
        found = {}
        for record in self.dir.glob("*.json") if self.dir.is_dir() else ():
            try:
                data = json.loads(record.read_text())
                pid, start, name = self._parse(data["handle"])
                memory = int(data.get("memory", 0))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if name != but and self._ours(pid, start, name):
                found[name] = memory
        return found

    def _start(self, spec: ReplicaSpec) -> Placed:
        process.private_dir(self.dir)
        sock, out, record = self._paths(spec.name)
        for path in (sock, out):
            path.unlink(missing_ok=True)
        jailed = Path(spec.env_path).name == sandbox.MOUNTED_ENV if spec.env_path else False
        why_not = sandbox.unavailable()
        if jailed and why_not:
            raise RuntimeError(
                f"this build was made for jailed replicas, which cannot run here ({why_not}); "
                "build it again"
            )
        notes: list[str] = []
        if jailed:
            cmd, env, address = self._jailed(spec)
        else:
            cmd, env, address = self._unjailed(spec, why_not, notes)
        key, _, value = self._marker(spec.name).decode().partition("=")
        env[key] = value
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            for note in notes:
                os.write(fd, f"{stamp()} stderr [cdsw-tui] {note}\n".encode())
            proc = subprocess.Popen(
                cmd,
                cwd=spec.artifact,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        self._procs[proc.pid] = proc
        handle = f"{proc.pid}:{process.start_time(proc.pid)}:{spec.name}"
        tmp = record.with_suffix(".tmp")
        record_of = {"name": spec.name, "handle": handle, "address": address, "memory": spec.memory}
        tmp.write_text(json.dumps(record_of))
        os.replace(tmp, record)
        return Placed(address=address, handle=handle)

    def _base_env(self, spec: ReplicaSpec, home: str, venv_bin: str) -> dict[str, str]:
        return {
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": home,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **({"R_LIBS_USER": envs.r_library(spec.env_path)} if spec.env_path else {}),
            **spec.environment,
        }

    def _jailed(self, spec: ReplicaSpec) -> tuple[list[str], dict[str, str], str]:
        """The replica in its jail; its socket in its own /tmp."""
        uid = spec.uid if spec.uid >= 0 else replica_identity().uid
        tmp = sandbox.private_folder(self.dir / f"{spec.name}.tmpdir", uid)
        record = Path(spec.env_path).parent / RECORD  # the builder's, never the step's
        try:
            prefix = json.loads(record.read_text())["extra"]["python_prefix"]
        except (OSError, ValueError, KeyError) as exc:
            raise RuntimeError(f"the build's environment record is missing: {exc}") from None
        # no egress: a network of its own, the gateway reached through its socket (the
        # runner forwards 127.0.0.1 at the gateway's port to it, as in a container)
        gateway = self.home / GATEWAY_SOCKET
        reach = "" if spec.egress or not gateway.parent.is_dir() else str(gateway.parent)
        jail = sandbox.Jail(
            project=spec.artifact,
            env=spec.env_path,
            tmp=str(tmp),
            uid=uid,
            shm_mb=spec.memory,
            cgroup_procs=self.cgroups.make(spec.name, spec.memory),
            expose=(prefix, *sandbox.runner_exposes()),
            hide=(str(self.home),),
            hosts=sandbox.hosts_file(self.home, uid),
            network=spec.egress,
            gateway=reach,
        )
        runner = [
            envs.venv_python(spec.env_path),
            "-s",
            str(RUNNER),
            *runner_arguments(spec, sandbox.HOME, "/tmp/replica.sock"),
            "--memory-mb",  # a clear MemoryError in one process; the cgroup bounds the tree
            str(spec.memory),
        ]
        env = self._base_env(spec, sandbox.HOME, f"{sandbox.VENV}/bin")
        env.update(USER="cdsw", TMPDIR="/tmp")
        if reach:
            env["CDSW_TUI_GATEWAY_SOCKET"] = f"{sandbox.GATEWAY_AT}/{gateway.name}"
        return sandbox.wrap(jail, runner), env, f"unix:{tmp / 'replica.sock'}"

    def _unjailed(
        self, spec: ReplicaSpec, why_not: str, notes: list[str]
    ) -> tuple[list[str], dict[str, str], str]:
        """The controller's own user, in the build folder (or, for a build made before
        jails, at /home/cdsw through a bare mount namespace)."""
        sock = self._paths(spec.name)[0]
        legacy = not why_not  # a jailing controller, a build from before jails
        folder = sandbox.HOME if legacy else spec.artifact
        python = envs.venv_python(spec.env_path) if spec.env_path else "python3"
        cmd = [
            python,
            "-s",
            str(RUNNER),
            *runner_arguments(spec, folder, str(sock)),
            "--memory-mb",  # enforced by a resource limit in the runner
            str(spec.memory),
        ]
        if legacy:
            cmd = sandbox.legacy_wrap(spec.artifact, cmd)
            notes.append(
                "this build was made before replicas were jailed: it runs as root; "
                "build it again to run it as an unprivileged uid"
            )
        else:
            notes.append(sandbox.warning(folder))
        env = self._base_env(spec, folder, str(Path(python).parent))
        return cmd, env, f"unix:{sock}"

    def inspect(self, handle: str) -> Exit | None:
        pid, start, name = self._parse(handle)
        proc = self._procs.get(pid)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return None
        elif self._ours(pid, start, name):
            return None
        else:
            code = None
        if self.cgroups.oom_killed(name):
            return Exit(
                "out of memory: its processes together went over its memory (killed by the kernel)",
                code,
                oom=True,
            )
        return self._verdict(code) if code is not None else Exit("the process is gone")

    @staticmethod
    def _verdict(code: int) -> Exit:
        if 128 < code < 128 + 65:  # a jail's first process passes on a signal death so
            code = -(code - 128)
        if code == -signal.SIGKILL:
            return Exit("killed (SIGKILL; out of memory or killed by hand)", code)
        if code < 0:
            try:
                return Exit(f"killed by signal {signal.Signals(-code).name}", code)
            except ValueError:
                return Exit(f"killed by signal {-code}", code)
        return Exit(f"exited with status {code}", code)

    def stop(self, handle: str) -> None:
        pid, start, name = self._parse(handle)
        proc = self._procs.get(pid)
        if proc is None and not self._ours(pid, start, name):
            root = -1  # the process itself is gone; its descendants may not be
        else:
            root = pid
        marker = self._marker(name) if start else self._legacy_marker(name)
        reap = (lambda: proc.poll()) if proc is not None else None
        process.kill_tree(root, marker, grace=STOP_GRACE if root > 0 else 0, reap=reap)
        if proc is not None:
            proc.wait()

    def remove(self, handle: str) -> None:
        pid, _start, name = self._parse(handle)
        self._procs.pop(pid, None)
        for path in self._paths(name):
            path.unlink(missing_ok=True)
        sandbox.remove(self.dir / f"{name}.tmpdir")  # its /tmp: nothing in it is followed
        self.cgroups.remove(name)

    def adopt(self, name: str, handle: str) -> Placed | None:
        try:
            pid, start, handle_name = self._parse(handle)
        except ValueError:
            return None
        sock, _out, record = self._paths(name)
        try:
            address = json.loads(record.read_text()).get("address") or f"unix:{sock}"
        except (OSError, ValueError):
            address = f"unix:{sock}"
        if handle_name != name or not self._ours(pid, start, name):
            return None
        if not os.path.lexists(address.removeprefix("unix:")):
            return None
        return Placed(address=address, handle=handle)

    def list_replicas(self) -> list[Found]:
        if not self.dir.is_dir():
            return []
        found = []
        for record in sorted(self.dir.glob("*.json")):
            try:
                data = json.loads(record.read_text())
                pid, start, name = self._parse(data["handle"])
            except (OSError, ValueError, KeyError):
                continue
            found.append(Found(name, data["handle"], self._ours(pid, start, name)))
        return found

    def read_output(self, handle: str, offset: int, limit: int = 1 << 20) -> Output:
        _pid, _start, name = self._parse(handle)
        try:
            fd = os.open(self._paths(name)[1], os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            return Output(b"", offset)
        try:
            data = os.pread(fd, limit, offset)
            running = self.inspect(handle) is None
            if len(data) == limit or running:
                cut = data.rfind(b"\n") + 1  # whole lines only while it may still write
                if cut or len(data) < limit:
                    data = data[:cut]
            offset += len(data)
            if running and offset >= SPOOL_LIMIT:
                # everything up to here is taken: empty the spool, with the runner's writes
                # held off (they take the lock shared), so no line is lost in between
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    rest = os.pread(fd, os.fstat(fd).st_size - offset, offset)
                    os.ftruncate(fd, 0)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                return Output(data + rest, 0)
        finally:
            os.close(fd)
        return Output(data, offset)


def make_runtime(home: Path) -> LocalRuntime:
    return LocalRuntime(home, load_settings(home).local_memory_mb)
