"""The local runtime: each replica is a process of the build's virtual environment."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from cdsw_tui.engine.runtime import ReplicaExited, ReplicaSpec, Running

RUNNER = Path(__file__).resolve().parent.parent / "serving" / "replica.py"
EXIT_IMPORT_FAILED = 3


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _environ_has(pid: int, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


class LocalRuntime:
    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen] = {}

    def start(self, spec: ReplicaSpec, timeout: float) -> Running:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        port_file = spec.run_dir / f"{spec.name}.port"
        port_file.unlink(missing_ok=True)
        python = str(Path(spec.env_path) / "bin" / "python") if spec.env_path else "python3"
        env = {
            "PATH": f"{Path(spec.env_path) / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **spec.environment,
        }
        cmd = [
            python,
            "-s",
            str(RUNNER),
            "--dir",
            str(spec.artifact),
            "--file",
            spec.file,
            "--function",
            spec.function,
            "--name",
            spec.name,
            "--port-file",
            str(port_file),
            "--log",
            str(spec.log_path),
            "--metrics",
            str(spec.metrics_path),
            "--kernel",
            spec.kernel,
            "--memory-mb",
            str(spec.memory),
        ]
        with open(spec.log_path, "ab") as early:  # what happens before the runner takes over
            proc = subprocess.Popen(
                cmd,
                cwd=spec.artifact,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=early,
                stderr=early,
                start_new_session=True,
            )
        self._procs[proc.pid] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.exists():
                port = int(port_file.read_text())
                return Running(port=port, pid=proc.pid, advisory=self.advisory(spec))
            if proc.poll() is not None:
                raise ReplicaExited(
                    f"the replica exited with status {proc.returncode} before listening"
                )
            time.sleep(0.01)
        self._kill(proc.pid)
        raise ReplicaExited(f"the replica did not listen within {timeout:g} s")

    @staticmethod
    def advisory(spec: ReplicaSpec) -> list[str]:
        notes = [f"cpu {spec.cpu:g} is advisory on the local runtime"]
        if spec.gpu:
            notes.append(f"gpu {spec.gpu} is advisory on the local runtime")
        return notes

    def exited(self, running: Running) -> ReplicaExited | None:
        pid = running.pid
        if pid is None:
            return ReplicaExited("no process")
        proc = self._procs.get(pid)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return None
            self._procs.pop(pid, None)
            if code == EXIT_IMPORT_FAILED:
                return ReplicaExited("the model failed to load")
            if code == -signal.SIGKILL:
                return ReplicaExited("killed (SIGKILL; out of memory or killed by hand)")
            if code < 0:
                return ReplicaExited(f"killed by signal {signal.Signals(-code).name}")
            return ReplicaExited(f"exited with status {code}")
        return None if _pid_alive(pid) else ReplicaExited("the process is gone")

    def stop(self, running: Running) -> None:
        if running.pid is not None:
            self._kill(running.pid)

    def _kill(self, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        proc = self._procs.pop(pid, None)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not _pid_alive(pid):
                return
            time.sleep(0.02)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc is not None:
            proc.wait(timeout=5)

    def adopt(self, name: str, running: Running) -> bool:
        pid = running.pid
        return bool(pid) and _pid_alive(pid) and _environ_has(pid, f"CDSW_REPLICA_ID={name}")  # type: ignore[arg-type]

    def kill_stray(self, name: str, pid: int | None) -> bool:
        """Stop a process that says it is replica ``name`` (left by a dead controller)."""
        if pid and _pid_alive(pid) and _environ_has(pid, f"CDSW_REPLICA_ID={name}"):
            self._kill(pid)
            return True
        return False
