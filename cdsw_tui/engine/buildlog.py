"""A build log: one file, each line stamped with the time it was written."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class BuildLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self.tail: list[str] = []

    def line(self, text: str) -> None:
        text = text.rstrip("\r\n")
        with self._lock:
            self._fh.write(f"{stamp()} {text}\n")
            self.tail = [*self.tail[-19:], text]

    def close(self) -> None:
        with self._lock:
            self._fh.close()
