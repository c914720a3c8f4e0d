"""The replica's output: every line written on fd 1 or 2, by Python or by C code, leaves
through the runtime's capture as ``<UTC time> <stream> <text>``."""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import sys
import threading

from cdsw_tui.serving.frames import stamp

MAX_LINE = 64 * 1024  # output without a newline is cut into lines of this size
PR_SET_CHILD_SUBREAPER = 36


class Output:
    """Writes stamped lines to the runtime's capture (the original fd 1).

    A full disk must not stop the model: lines that cannot be written are counted and
    dropped (the pipes keep draining, so a print never blocks), and a note says so once
    writing works again.
    """

    def __init__(self) -> None:
        self.fd = os.dup(1)
        os.set_inheritable(self.fd, False)
        self.lock = threading.Lock()
        self.dropped = 0
        self.why = ""
        self.pumps: list[threading.Thread] = []

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def write(self, data: bytes) -> None:
        with self.lock:
            try:
                # shared: the reader that empties a spool file takes it exclusively
                fcntl.flock(self.fd, fcntl.LOCK_SH)
            except OSError:
                pass  # a pipe (docker logs): nothing to share
            try:
                if self.dropped:
                    note = f"{stamp()} stderr [cdsw-tui] {self.dropped} log lines dropped: {self.why}\n"
                    self._write_all(note.encode())
                    self.dropped = 0
                self._write_all(data)
            except OSError as exc:
                self.dropped += max(1, data.count(b"\n"))
                self.why = exc.strerror or str(exc)
            finally:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                except OSError:
                    pass

    def record(self, stream: str, payload: object) -> None:
        self.write(f"{stamp()} {stream} {json.dumps(payload, default=str)}\n".encode())

    def capture(self) -> None:
        """Send fd 1 and 2 through pipes that stamp each line with its time and stream."""

        def pump(read_fd: int, stream: str) -> None:
            pending = b""
            with os.fdopen(read_fd, "rb", buffering=0) as pipe:
                while True:
                    chunk = pipe.read(65536)
                    if not chunk:
                        break
                    pending += chunk  # at most MAX_LINE before: linear, bounded
                    *lines, pending = pending.split(b"\n")
                    while len(pending) >= MAX_LINE:
                        lines.append(pending[:MAX_LINE])
                        pending = pending[MAX_LINE:]
                    if lines:
                        head = f"{stamp()} {stream} ".encode()
                        self.write(b"".join(head + line + b"\n" for line in lines))
            if pending:
                self.write(f"{stamp()} {stream} ".encode() + pending + b"\n")

        for fd, stream in ((1, "stdout"), (2, "stderr")):
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, fd)
            os.close(write_fd)
            pumping = threading.Thread(target=pump, args=(read_fd, stream), daemon=True)
            pumping.start()
            self.pumps.append(pumping)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        atexit.register(self.finish)  # an uncaught error's traceback reaches the log too

    def finish(self) -> None:
        """Everything written so far into the log, before the process ends."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(null, fd)  # our end of the pipes closes: the pumps read to the end
        os.close(null)
        for pumping in self.pumps:
            pumping.join(timeout=1)


def become_subreaper() -> None:
    """Orphans of the model's processes (daemons, setsid children) stay below us, so a
    stop finds every one of them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
