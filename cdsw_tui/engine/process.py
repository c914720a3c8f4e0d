"""Running a build step as a child process: output logged line by line, cancellable, timed."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cdsw_tui.engine.builder import BuildFailed
from cdsw_tui.engine.buildlog import BuildLog


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_logged(
    cmd: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: BuildLog,
    cancelled: Callable[[], bool],
    deadline: float,
    on_pid: Callable[[int | None], None],
    prefix: str = "",
) -> int:
    """Run ``cmd`` in its own process group; returns its exit status.

    Raises BuildFailed with status ``cancelled`` or ``timedout`` after killing the group.
    """
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    on_pid(proc.pid)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            log.line(prefix + raw.decode("utf-8", "replace"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancelled():
                kill_group(proc.pid)
                proc.wait()
                raise BuildFailed("cancelled by the user", status="cancelled")
            if time.monotonic() > deadline:
                kill_group(proc.pid)
                proc.wait()
                raise BuildFailed("the build ran past its time limit", status="timedout")
        # children that kept the pipe open (daemons) must not hold the build forever
        kill_group(proc.pid)
        reader.join(timeout=2)
        return code
    finally:
        on_pid(None)
        if proc.stdout:
            proc.stdout.close()
