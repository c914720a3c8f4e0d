"""The background controller's keeper: a small parent that starts the controller and
starts it again when it crashes (``kill -9``, the kernel's OOM killer, a bug), so the
gateway comes back without anyone typing a command. It runs no loop, no thread and no
model code: it is what must not crash. It imports the controller's modules once and
forks each controller from itself, so a restart costs milliseconds, not an interpreter's
start.

A controller that ends by itself is not restarted: 0 is a stop asked for (SIGTERM from
``cdsw-tui controller stop``; so is death by SIGTERM or SIGINT, which comes when the stop
is asked before its handler is set), 1 a refusal that would only repeat (another controller
holds the lock, a damaged store, a port taken). Anything else is a crash: the next start
follows at once, then later and later while crashes keep coming within a minute of start
(0.2 s doubling to 30 s, as a restart back-off)."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from cdsw_tui.services.lock import keeper_path

FIRST_DELAY = 0.2
MOST_DELAY = 30.0
STEADY = 60.0  # a controller that ran this long resets the back-off
REFUSED = 1  # cdsw-tui's exit status for a one-line error


def _say(text: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    print(f"{stamp} keeper: {text}", flush=True)


ANOTHER = 3  # the exit status when this home has a keeper already


def keep(home: Path, log_file: Path) -> int:
    """Run the controller until it stops by itself; its last exit status. One keeper per
    home: a second one (a command that found no controller while the first restarted
    it) ends at once, or two controllers would follow each other for ever."""
    import fcntl

    mine = keeper_path(home)
    mine.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    held = open(mine.with_suffix(".lock"), "a")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.close()
        return ANOTHER
    tmp = mine.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, mine)
    try:
        return _keep(log_file)
    finally:
        try:
            if mine.read_text() == str(os.getpid()):
                mine.unlink()
        except OSError:
            pass


def _keep(log_file: Path) -> int:
    stopping = False
    child = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    # the controller's modules, imported once here: a restart forks a warm copy of this
    # process (milliseconds) instead of starting an interpreter and importing (seconds)
    from cdsw_tui.controller import daemon
    from cdsw_tui.errors import CdswError
    from cdsw_tui.output import printable
    from cdsw_tui.services.context import Workbench

    try:
        import uvloop  # noqa: F401  (what daemon.serve runs the controller on)
    except ImportError:
        pass

    def controller() -> int:
        """As ``cdsw-tui serve`` runs it: 1 for a one-line refusal, 2 for a crash."""
        try:
            daemon.serve(Workbench(), log_file)
        except CdswError as exc:
            print(f"error: {printable(exc.message)}", file=sys.stderr)
            return REFUSED
        except BaseException:
            traceback.print_exc()
            return 2
        return 0

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    delay = FIRST_DELAY
    while True:
        began = time.monotonic()
        child = os.fork()
        if child == 0:  # the controller
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 2
            try:
                code = controller()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        code = _wait(child)
        if stopping or code in (0, REFUSED, -signal.SIGTERM, -signal.SIGINT):
            return code  # a stop asked for (a SIGTERM before its handler was set, too)
        if time.monotonic() - began > STEADY:
            delay = FIRST_DELAY
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        _say(f"the controller (pid {child}) {how}; starting it again in {delay:g} s")
        time.sleep(delay)
        if stopping:
            return code
        delay = min(delay * 2, MOST_DELAY)


def _wait(pid: int) -> int:
    """The child's exit status (negative: the signal that killed it)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 2
        except InterruptedError:
            continue
        if os.WIFSIGNALED(status):
            return -os.WTERMSIG(status)
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
