"""The controller, as the faces see it: is it running, and start it if not."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from cdsw_tui.errors import CdswError
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.lock import ControllerState, state


def status(wb: Workbench) -> ControllerState:
    return state(wb.home)


def ensure(wb: Workbench, timeout: float = 15.0) -> tuple[ControllerState, bool]:
    """Returns the controller's state and whether this call started it.

    The controller runs in the home, with ``-P``: a checkout of cdsw_tui in the
    caller's working directory must not shadow the installed package."""
    current = state(wb.home)
    if current.running:
        return current, False
    log_dir = wb.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # its log rotates (the controller writes it); what it prints before logging, a crash
    # say, goes to controller.out
    with open(log_dir / "controller.out", "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "cdsw_tui",
                "serve",
                "--log-file",
                str(log_dir / "controller.log"),
            ],
            cwd=wb.home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=dict(os.environ, CDSW_TUI_HOME=str(wb.home)),
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
                f"the controller could not start (exit status {code}); see {log_dir / 'controller.out'}"
            )
        time.sleep(0.05)
    raise CdswError(
        f"the controller did not start within {timeout:g} s; see {log_dir / 'controller.log'}"
    )
