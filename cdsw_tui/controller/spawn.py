"""Starting the controller in the background for faces that need one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from cdsw_tui.controller.lock import ControllerState, state
from cdsw_tui.errors import CdswError
from cdsw_tui.services.context import Workbench


def ensure_running(wb: Workbench, timeout: float = 15.0) -> tuple[ControllerState, bool]:
    """Returns the controller's state and whether this call started it."""
    current = state(wb.home)
    if current.running:
        return current, False
    log_dir = wb.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CDSW_TUI_HOME=str(wb.home))
    with open(log_dir / "controller.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdsw_tui", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = state(wb.home)
        if current.running and current.pid:
            return current, current.pid == proc.pid
        code = proc.poll()
        if code is not None and not state(wb.home).running:
            raise CdswError(
                f"the controller could not start (exit status {code}); see {log_dir / 'controller.log'}"
            )
        time.sleep(0.05)
    raise CdswError(
        f"the controller did not start within {timeout:g} s; see {log_dir / 'controller.log'}"
    )
