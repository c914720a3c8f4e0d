"""The local runtime: each replica is a process of the build's virtual environment.

A replica listens on a Unix socket in ``<home>/run/local`` (0700, the controller's
own), so only the controller's user reaches it. Its stdout and stderr go to a spool
file there, which the controller reads from an offset and files in the replica's log.
A record file, written by this runtime (never by the replica), names the process for
adoption and garbage collection; the handle is ``<pid>:<start time>:<name>``.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
from pathlib import Path

from cdsw_tui.engine import process
from cdsw_tui.engine.backends.local import homedir
from cdsw_tui.engine.builder import r_library
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
from cdsw_tui.resources import RUNNER

STOP_GRACE = 2.0


def caveat() -> str:
    """Replicas that cannot have their project at /home/cdsw say so at deploy."""
    why = homedir.unavailable()
    return f"replicas run in their build folder, not at /home/cdsw ({why})" if why else ""


SPOOL_LIMIT = 4 * 1024 * 1024  # a replica's spool is emptied once this much was filed


class LocalRuntime(RuntimeBase):
    name = "local"

    def __init__(self, home: Path) -> None:
        self.dir = home / "run" / "local"
        self._procs: dict[int, subprocess.Popen] = {}

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
        process.private_dir(self.dir)
        sock, out, record = self._paths(spec.name)
        for path in (sock, out):
            path.unlink(missing_ok=True)
        python = str(Path(spec.env_path) / "bin" / "python") if spec.env_path else "python3"
        # the project at /home/cdsw, its working directory and HOME, as in CDSW; else
        # the build folder, with a warning in the replica's log
        why_not = homedir.unavailable()
        folder = spec.artifact if why_not else homedir.HOME
        env = {
            "PATH": f"{Path(spec.env_path) / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": folder,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **(
                {"R_LIBS_USER": str(r_library(Path(spec.env_path).parent))} if spec.env_path else {}
            ),
            **spec.environment,
        }
        key, _, value = self._marker(spec.name).decode().partition("=")
        env[key] = value
        cmd = [
            python,
            "-s",
            str(RUNNER),
            *runner_arguments(spec, folder, str(sock)),
            "--memory-mb",  # enforced by a resource limit in the runner
            str(spec.memory),
        ]
        if not why_not:
            cmd = homedir.wrap(spec.artifact, cmd)  # execs: the pid is the runner's
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            if why_not:
                os.write(fd, f"{stamp()} stderr [cdsw-tui] {homedir.warning(folder)}\n".encode())
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
        tmp.write_text(json.dumps({"name": spec.name, "handle": handle}))
        os.replace(tmp, record)
        return Placed(address=f"unix:{sock}", handle=handle)

    def inspect(self, handle: str) -> Exit | None:
        pid, start, name = self._parse(handle)
        proc = self._procs.get(pid)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return None
            return self._verdict(code)
        return None if self._ours(pid, start, name) else Exit("the process is gone")

    @staticmethod
    def _verdict(code: int) -> Exit:
        if code == -signal.SIGKILL:
            return Exit("killed (SIGKILL; out of memory or killed by hand)", code)
        if code < 0:
            return Exit(f"killed by signal {signal.Signals(-code).name}", code)
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

    def adopt(self, name: str, handle: str) -> Placed | None:
        try:
            pid, start, handle_name = self._parse(handle)
        except ValueError:
            return None
        sock, _out, _record = self._paths(name)
        if handle_name != name or not self._ours(pid, start, name) or not sock.exists():
            return None
        return Placed(address=f"unix:{sock}", handle=handle)

    def list(self) -> list[Found]:
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
    return LocalRuntime(home)
