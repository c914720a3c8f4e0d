"""Child processes: a build step logged line by line, and stopping a whole process tree.

Backend-neutral: the local builder and runtime use these; nothing here knows a model.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cdsw_tui.engine.builder import BuildFailed
from cdsw_tui.engine.buildlog import BuildLog


def private_dir(path: Path) -> Path:
    """A folder only we can enter, made if missing; refused if something else (a link,
    another user's folder) sits at its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"{path} is not a folder of ours")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_key(path: Path, make: Callable[[], bytes]) -> bytes:
    """The contents of a key file of ours: made once with ``make()`` (0600, created
    exclusively, so two processes agree on one), read without following a link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(make())
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read().strip()


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1]); None
    when there is no such process. Any other failure (out of files: EMFILE, ENFILE)
    raises: it says nothing about the process, so nobody may take it as gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def start_time(pid: int) -> int:
    """When the process started (clock ticks since boot): a pid plus this names one process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else 0


def has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False  # gone, or another user's: not ours


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def tree(roots: Iterable[int], marker: bytes | None = None) -> set[int]:
    """The roots, every living descendant, and every process carrying ``marker`` in its
    environment (a ``setsid`` daemon keeps its parent's environment, not its parent)."""
    children: dict[int, list[int]] = {}
    marked: set[int] = set()
    for pid in _pids():
        fields = _stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(pid)
        if marker is not None and has_marker(pid, marker):
            marked.add(pid)
    found: set[int] = set()
    todo = [p for p in roots if alive(p)] + sorted(marked)
    while todo:
        pid = todo.pop()
        if pid in found or pid == os.getpid():
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(
    root: int,
    marker: bytes | None = None,
    *,
    grace: float = 2.0,
    reap: Callable[[], object] | None = None,
) -> None:
    """SIGTERM the tree under ``root`` (and ``marker``'s processes), then SIGKILL whatever
    is left, again and again until nothing of it lives: children that ignore SIGTERM,
    ``setsid`` children and children born meanwhile included."""
    members = tree([root] if root > 0 else [], marker)
    if root > 0:
        try:
            os.killpg(root, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    _signal(members, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap:
            reap()
        members = {p for p in members if alive(p)} | tree(members, marker)
        if not members:
            return
        time.sleep(0.02)
    for _ in range(200):
        _signal(members, signal.SIGSTOP)  # frozen, they cannot fork any more
        members |= tree(members, marker)
        _signal(members, signal.SIGKILL)
        if reap:
            reap()
        time.sleep(0.01)
        members = {p for p in members if alive(p)} | tree(members, marker)
        if not members:
            return


def run_logged(
    cmd: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: BuildLog,
    cancelled: Callable[[], bool],
    deadline: float,
    on_pid: Callable[[int | None], None],
    marker: str = "",
    prefix: str = "",
) -> int:
    """Run ``cmd`` in its own process group; returns its exit status.

    Whatever it started is stopped when it ends (``marker``, an ``K=V`` of its
    environment, finds the daemons that left its process group). Raises BuildFailed with
    status ``cancelled`` or ``timedout`` after killing it all.
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
    mark = marker.encode() or None

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            log.line(prefix + raw.decode("utf-8", "replace"))

    def finish() -> None:
        kill_tree(proc.pid, mark, grace=0, reap=lambda: proc.poll())
        proc.wait()

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
                finish()
                raise BuildFailed("cancelled by the user", status="cancelled")
            if time.monotonic() > deadline:
                finish()
                raise BuildFailed("the build ran past its time limit", status="timedout")
        # children that kept running (daemons) must not outlive the build
        kill_tree(proc.pid, mark, grace=0)
        reader.join(timeout=2)
        return code
    finally:
        on_pid(None)
        if proc.stdout:
            proc.stdout.close()
