"""The controller as a background process: is it running, and start it when it is not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cdsw_tui.engine import process
from cdsw_tui.engine.buildlog import last_lines
from cdsw_tui.errors import CdswError
from cdsw_tui.services import calls
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.lock import ControllerState, keeper_path, state

PID_GRACE = 2.0  # seconds a controller that holds the lock may take to write its pid


def status(wb: Workbench) -> ControllerState:
    return state(wb.home)


def ensure(wb: Workbench, timeout: float = 15.0) -> tuple[ControllerState, bool]:
    """Returns the controller's state and whether this call started it.

    The controller runs in the home, with ``-P``: a checkout of cdsw_tui in the
    caller's working directory must not shadow the installed package."""
    current = state(wb.home)
    if current.running:
        return current, False
    if _keeper(wb.home) is not None:  # its keeper is starting it again after a crash
        return _wait_for_lock(wb, timeout), False
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
                "--keep",  # under its keeper, which starts it again after a crash
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
    # started once it answers as this home's gateway: a controller that takes the lock
    # and then fails (its port is taken, say) is reported here, with its own words
    out_path = log_dir / "controller.out"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        current = state(wb.home)
        if code is not None and current.running:
            return current, False  # another caller's start won the lock
        if code == ANOTHER_KEEPER:  # a keeper runs for this home: its controller comes
            return _wait_for_lock(wb, max(0.0, deadline - time.monotonic())), False
        if code is not None:
            raise CdswError(
                f"the controller could not start ({_last_words(out_path) or f'exit status {code}'}); "
                f"see {out_path}"
            )
        if current.running and _answers(wb):
            return current, True
        time.sleep(0.05)
    current = state(wb.home)
    if current.running and current.pid:  # still adopting what runs: it answers soon
        return current, proc.poll() is None
    raise CdswError(
        f"the controller did not start within {timeout:g} s; see {log_dir / 'controller.log'}"
    )


ANOTHER_KEEPER = 3  # controller/keeper.py's exit status when the home has one already


def _wait_for_lock(wb: Workbench, timeout: float) -> ControllerState:
    deadline = time.monotonic() + timeout
    while not (current := state(wb.home)).running:
        if time.monotonic() > deadline:
            raise CdswError(
                f"the controller did not start within {timeout:g} s; "
                f"see {wb.home / 'logs' / 'controller.out'}"
            )
        time.sleep(0.05)
    return current


def _answers(wb: Workbench) -> bool:
    try:
        calls.verify_gateway(wb, timeout=0.5)
    except CdswError:
        return False
    return True


def _last_words(out: Path) -> str:
    """What the controller said last before it ended (its one-line error, say)."""
    try:
        lines, _ = last_lines(out, 1)
    except OSError:
        return ""
    return lines[-1].strip().removeprefix("error: ")[:300] if lines else ""


def stop(home: Path, timeout: float = 30.0) -> int | None:
    """Ask the controller to stop (SIGTERM: replicas keep serving, a new one adopts
    them) and wait until it has; its pid, or None if none ran."""
    import signal

    keeper = _keeper(home)  # first: it must not start the controller again
    if keeper is not None:
        try:
            os.kill(keeper, signal.SIGTERM)  # it passes the signal on to the controller
        except ProcessLookupError:
            keeper = None
    current = state(home)
    if not current.running and keeper is None:
        return None
    said = time.monotonic() + PID_GRACE  # one that took the lock a moment ago writes it next
    while current.running and current.pid is None and time.monotonic() < said:
        time.sleep(0.02)
        current = state(home)
    if current.running and current.pid is None and keeper is None:
        raise CdswError(f"a controller holds {home}'s lock but did not say its pid")
    if current.pid is not None:
        try:
            os.kill(current.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while state(home).running or (keeper is not None and process.alive(keeper)):
        if time.monotonic() > deadline:
            raise CdswError(f"the controller (pid {current.pid}) did not stop within {timeout:g} s")
        time.sleep(0.05)
    return current.pid or keeper


def _keeper(home: Path) -> int | None:
    """The pid of this home's keeper, if it runs (a pid file alone is not proof: the
    process must be a keeper, of this home)."""
    try:
        pid = int(keeper_path(home).read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"--keep" not in cmdline or f"CDSW_TUI_HOME={home}".encode() not in environ:
        return None
    return pid
