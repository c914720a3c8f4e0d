"""Log files: each line stamped with the time it was written, each file bounded in size.

A log over its limit is rotated: it becomes ``<name>.1`` (replacing an older one) and a
new file starts with a line that says so. Readers read ``.1`` first when they want all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_MAX_BYTES = 20 * 1024 * 1024


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def rotate(path: Path) -> None:
    """``path`` becomes ``path.1``: the file's older half of the log."""
    try:
        os.replace(path, rotated(path))
    except FileNotFoundError:
        pass


def open_log(path: Path) -> int:
    """A descriptor to append to ``path``: made 0600, never through a link."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(
        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )


class BuildLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd = open_log(path)
        self._size = os.fstat(self._fd).st_size
        self._lock = threading.Lock()
        self.tail: list[str] = []
        self.dropped = 0  # lines that could not be written, and why
        self.error: OSError | None = None

    def line(self, text: str) -> None:
        text = text.rstrip("\r\n")
        data = f"{stamp()} {text}\n".encode("utf-8", "replace")
        with self._lock:
            try:
                if self._size + len(data) > self.max_bytes:
                    fd, self._fd = self._fd, -1  # never a number another file may reuse
                    os.close(fd)
                    rotate(self.path)
                    self._fd = open_log(self.path)
                    note = f"{stamp()} [cdsw-tui] the log passed {self.max_bytes // 1024 // 1024} MB; its earlier part is in {rotated(self.path).name}\n"
                    os.write(self._fd, note.encode())
                    self._size = len(note)
                os.write(self._fd, data)
                self._size += len(data)
            except OSError as exc:  # a full disk: the build goes on to fail by itself
                self.dropped += 1
                self.error = exc
            self.tail = [*self.tail[-19:], text]

    def close(self) -> None:
        with self._lock:
            try:
                if self._fd >= 0:
                    os.close(self._fd)
                self._fd = -1
            except OSError:  # its last write failed (EIO, a full NFS disk): nothing to keep
                pass


BLOCK = 64 * 1024


def tail_offset(path: Path, n: int) -> tuple[int, int]:
    """Where the last ``n`` lines of ``path`` begin, and the file's size, reading
    backwards from the end: the cost follows ``n``, not the file."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if n <= 0:
            return size, size
        data = b""
        pos = size
        while pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
            body = data[:-1] if data.endswith(b"\n") else data  # the last line's own end
            if body.count(b"\n") >= n:
                end = len(body)
                for _ in range(n):
                    end = body.rindex(b"\n", 0, end)
                return pos + end + 1, size
    return 0, size


def last_lines(path: Path, n: int) -> tuple[list[str], int]:
    """The last ``n`` lines and the file's size (the cost follows ``n``, not the file)."""
    offset, size = tail_offset(path, n)
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size - offset)
    return data.decode("utf-8", "replace").splitlines(), size


def all_lines(path: Path) -> Iterator[str]:
    """Every line of a log, its rotated part first, read a block at a time."""
    for part in (rotated(path), path):
        try:
            fh = open(part, "rb")
        except FileNotFoundError:
            continue
        with fh:
            pending = b""
            while block := fh.read(BLOCK):
                *lines, pending = (pending + block).split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")
