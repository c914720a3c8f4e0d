"""A reinstall of cdsw-tui under a running controller: noticed, said, and answered by a
graceful restart into the new code (replicas keep serving; the new controller adopts
them). Without it the controller would go on with modules that may no longer exist on
disk, and a lazy import, or a build's copy of the runner, would fail much later."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import subprocess
import sys
import time
from typing import NoReturn

log = logging.getLogger("cdsw_tui.controller")
DISTRIBUTION = "cdsw-tui"
EVERY = 2.0  # seconds between looks
# a new installation is taken once two looks this far apart agree (pip is done writing)
# and it imports in a fresh interpreter
PROBE = "import cdsw_tui.cli, cdsw_tui.controller.daemon"


def installation() -> tuple[str, str]:
    """(a digest of the installed distribution: its version, file list and origin;
    how to name it): ("", "") where none is installed (a checkout on the path, or pip
    in the middle of replacing it)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
        parts = [
            dist.version,
            dist.read_text("RECORD") or "",
            dist.read_text("direct_url.json") or "",
        ]
    except (importlib.metadata.PackageNotFoundError, OSError):
        return "", ""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return digest, f"{DISTRIBUTION} {dist.version}"


class InstallWatch:
    """``check()`` is True once a complete installation other than the one this process
    started from is in place."""

    def __init__(self, probe_cwd: str) -> None:
        self.started, self.name = installation()
        self.cwd = probe_cwd  # the probe runs where the controller does (-P: no checkout)
        self._candidate = ""
        self._next = time.monotonic() + EVERY
        self._refused = ""  # a candidate that did not import: said once

    def check(self) -> bool:
        now = time.monotonic()
        if now < self._next or not self.started:
            return False
        self._next = now + EVERY
        digest, name = installation()
        if not digest or digest == self.started:
            self._candidate = ""
            return False
        if digest != self._candidate:  # new, or still changing: look again
            self._candidate = digest
            return False
        if digest == self._refused:
            return False
        probe = subprocess.run(
            [sys.executable, "-P", "-c", PROBE],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode != 0:
            self._refused = digest
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            log.warning(
                "%s was installed under this controller but does not import (%s); "
                "this controller keeps running the code it started with",
                name,
                last,
            )
            return False
        log.warning(
            "%s was reinstalled under this controller (it started from %s): restarting "
            "it to run the new code; replicas keep serving and are adopted",
            name,
            self.name,
        )
        return True


def restart_program() -> NoReturn:
    """This process again, as it was started, in a fresh interpreter (the new code)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
