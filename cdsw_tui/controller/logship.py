"""Replica output into the home's log files: the only writer of those files.

A replica's output leaves through its runtime (a spool file, ``docker logs``), in the
runner's format: ``<time> <stream> <text>``. Lines of ``stdout`` and ``stderr`` go
into ``logs/replicas/m<model>/d<deployment>/<replica>.log``; ``metric`` records (what
the model tracked, one per call) to ``on_metrics``, which stores them; the gateway's
records of calls into its ``requests.jsonl``; ``event`` records (why a replica ended) stay with the
replica's state. The folders and files are made here, by the controller, and opened
without following links; nothing a model can write is ever mounted or chmodded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from cdsw_tui.controller.state import ReplicaState
from cdsw_tui.engine.buildlog import DEFAULT_MAX_BYTES, open_log, rotate, stamp
from cdsw_tui.engine.runtime import Runtime
from cdsw_tui.output import printable
from cdsw_tui.services.logs import replica_log, requests_file
from cdsw_tui.serving.calllog import Record
from cdsw_tui.serving.frames import STAMP_LENGTH, STREAM_EVENT, STREAM_METRIC

OUTPUT_STREAMS = (b"stdout", b"stderr")


MetricsSink = Callable[[int, int, list[dict]], None]  # model id, deployment id, records


class Shipper:
    def __init__(
        self,
        home: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_metrics: MetricsSink | None = None,
    ) -> None:
        self.home = home
        self.max_bytes = max_bytes
        self.on_metrics = on_metrics
        self._lock = threading.Lock()
        self.dropped: dict[Path, tuple[int, str]] = {}

    def _append(self, path: Path, data: bytes) -> None:
        """Append whole lines, rotating whenever the file would pass its limit (a big
        batch is split at line ends); on a full disk, count the lines and say so once it
        has room."""
        with self._lock:
            try:
                lost = self.dropped.pop(path, None)
                if lost:
                    note = f"{stamp()} stderr [cdsw-tui] {lost[0]} log lines dropped: {lost[1]}\n"
                    data = note.encode() + data
                fd = open_log(path)
                try:
                    size = os.fstat(fd).st_size
                    while data:
                        room = self.max_bytes - size
                        if len(data) <= room:
                            cut = len(data)
                        else:
                            cut = data.rfind(b"\n", 0, max(room, 0)) + 1
                            if not cut and not size:
                                cut = room  # one line longer than a whole file
                        if cut:
                            view = memoryview(data)[:cut]
                            while view:
                                view = view[os.write(fd, view) :]
                            data, size = data[cut:], size + cut
                        if data:
                            os.close(fd)
                            rotate(path)
                            fd = open_log(path)
                            size = 0
                finally:
                    os.close(fd)
            except OSError as exc:
                count, _ = self.dropped.get(path, (0, ""))
                self.dropped[path] = (count + data.count(b"\n"), exc.strerror or str(exc))

    def calls(self, records: list[Record]) -> None:
        """The gateway's records of calls, into each model's request log."""
        by_model: dict[int, list[bytes]] = {}
        for record in records:
            by_model.setdefault(record.model_id, []).append(record.line())
        for model_id, lines in by_model.items():
            self._append(requests_file(self.home, model_id), b"".join(lines))

    def note(self, model_id: int, deployment_id: int, name: str, text: str) -> None:
        """The controller's own word in a replica's log, marked as such."""
        line = f"{stamp()} stderr [cdsw-tui] {text}\n".encode()
        self._append(replica_log(self.home, model_id, deployment_id, name), line)

    def ship(self, runtime: Runtime, r: ReplicaState, model_id: int, deployment_id: int) -> bool:
        """File what the replica wrote since the last time; True if there was something."""
        if not r.handle:
            return False
        with r.ship_lock:
            shipped = False
            while True:
                out = runtime.read_output(r.handle, r.output_offset)
                if not out.data:
                    r.output_offset = out.offset
                    return shipped
                self._route(r, out.data, model_id, deployment_id)
                r.output_offset = out.offset
                shipped = True

    def _route(self, r: ReplicaState, data: bytes, model_id: int, deployment_id: int) -> None:
        log: list[bytes] = []
        metrics: list[dict] = []
        for line in data.splitlines():
            if not line:
                continue
            stream = line[STAMP_LENGTH + 1 :].split(b" ", 1)[0]
            if len(line) > STAMP_LENGTH and line[STAMP_LENGTH : STAMP_LENGTH + 1] == b" ":
                rest = line[STAMP_LENGTH + 2 + len(stream) :]
                if stream in OUTPUT_STREAMS:
                    log.append(line + b"\n")
                    if stream == b"stderr" and rest.strip():
                        r.last_stderr = printable(rest.decode("utf-8", "replace").strip()[:500])
                    continue
                if stream == STREAM_METRIC.encode():
                    try:
                        record = json.loads(rest)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        metrics.append(record)
                    continue
                if stream == STREAM_EVENT.encode():
                    try:
                        r.events.append(json.loads(rest))
                    except ValueError:
                        pass
                    continue
            # what the interpreter printed before the runner took over (a crash at start)
            text = line.decode("utf-8", "replace")
            log.append(f"{stamp()} stderr {text}\n".encode())
            if text.strip():
                r.last_stderr = printable(text.strip()[:500])  # reasons quote it
        if log:
            self._append(replica_log(self.home, model_id, deployment_id, r.name), b"".join(log))
        if metrics and self.on_metrics is not None:
            self.on_metrics(model_id, deployment_id, metrics)
