"""The project at /home/cdsw on the local runtime, as CDSW runs a model: each replica and
each ``cdsw-build.sh`` gets a private mount namespace in which its build folder is
bind-mounted at /home/cdsw, its working directory and ``HOME``.

``unshare`` (util-linux) makes the namespace and execs, so the replica keeps its pid,
its exit status and its signals (bubblewrap stays as a parent that neither forwards
SIGTERM nor reports a signal death as one). It needs root; /home/cdsw is made once on
the host, empty, as the mount point. Where this is not possible (not root, no
``unshare``, /home read-only, or ``CDSW_TUI_NO_HOME_MOUNT`` set), the caller falls back to
the build folder and says so.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading

HOME = "/home/cdsw"
# $1: mount, $2: the folder; the rest: the command. The bind is private to this
# process's namespace. Programs by absolute path: the model's PATH may lack them.
SCRIPT = '"$1" --bind -- "$2" /home/cdsw && cd /home/cdsw && shift 2 && exec "$@"'

_lock = threading.Lock()
_verdict: str | None = None  # "" when available, else why not


def unavailable() -> str:
    """Why replicas and builds cannot see their folder at /home/cdsw, in one line; empty
    when they can (checked once per process, by running the real thing)."""
    global _verdict
    with _lock:
        if _verdict is None:
            _verdict = _check()
        return _verdict


def _check() -> str:
    if os.environ.get("CDSW_TUI_NO_HOME_MOUNT"):
        return "turned off by CDSW_TUI_NO_HOME_MOUNT"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare and mount (util-linux) are not installed"
    if os.geteuid() != 0:
        return f"a private mount namespace needs root (the controller runs as uid {os.geteuid()})"
    try:
        os.makedirs(HOME, mode=0o755, exist_ok=True)
        info = os.lstat(HOME)
    except OSError as exc:
        return f"{HOME} cannot be made: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{HOME} is not a directory"
    try:
        done = subprocess.run(
            wrap("/", ["true"]), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if done.returncode != 0:
        return f"unshare failed: {(done.stderr.strip().splitlines() or ['status ' + str(done.returncode)])[-1]}"
    return ""


def wrap(folder: str, command: list[str]) -> list[str]:
    """``command`` run with ``folder`` at /home/cdsw as its working directory."""
    return [
        shutil.which("unshare") or "/usr/bin/unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        shutil.which("sh") or "/bin/sh",
        "-c",
        SCRIPT,
        "cdsw-home",
        shutil.which("mount") or "/bin/mount",
        folder,
        *command,
    ]


def warning(folder: str) -> str:
    return (
        f"the project is not at {HOME} ({unavailable()}); it runs in {folder}, "
        f"so code that opens {HOME}/... paths will not find them"
    )
