"""One controller per CDSW_TUI_HOME, held by an flock that dies with its process."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass
class ControllerState:
    running: bool
    pid: int | None


def keeper_path(home: Path) -> Path:
    """Where the background controller's keeper (controller/keeper.py) writes its pid."""
    return home / "run" / "keeper.pid"


def lock_path(home: Path) -> Path:
    return home / "controller.lock"


class ControllerLock:
    def __init__(self, home: Path) -> None:
        self.path = lock_path(home)
        self._fh: TextIO | None = None

    def acquire(self) -> bool:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.flush()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def state(home: Path) -> ControllerState:
    """Running if someone holds the lock; the pid is what the holder wrote."""
    path = lock_path(home)
    if not path.exists():
        return ControllerState(False, None)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read().strip()
            return ControllerState(True, int(text) if text.isdigit() else None)
        fcntl.flock(fh, fcntl.LOCK_UN)
        return ControllerState(False, None)
