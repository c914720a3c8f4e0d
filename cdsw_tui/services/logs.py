"""Replica logs: files per deployment that outlive their replicas."""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cdsw_tui.engine.buildlog import BLOCK, all_lines, last_lines, rotated
from cdsw_tui.errors import CdswError
from cdsw_tui.services import deployments, logwatch, models
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Deployment, Model, pk

STREAMS = {"stdout": "OUT", "stderr": "ERR"}  # how a line's stream is shown, here and in the TUI


def shown(line: str) -> str:
    """A merged replica log line (``replica stamp stream text``) with its stream as the
    workbench shows it (OUT, ERR)."""
    parts = line.split(" ", 3)
    if len(parts) == 4 and parts[2] in STREAMS:
        parts[2] = STREAMS[parts[2]]
        return " ".join(parts)
    return line


def replica_log(home: Path, model_id: int, deployment_id: int, name: str) -> Path:
    """A replica's log: written by the controller only, kept until the model is deleted."""
    return home / "logs" / "replicas" / f"m{model_id}" / f"d{deployment_id}" / f"{name}.log"


def requests_file(home: Path, model_id: int) -> Path:
    """The gateway's recent calls of the model, one JSON object a line (no bodies)."""
    return home / "logs" / "replicas" / f"m{model_id}" / "requests.jsonl"


def replica_log_dir(wb: Workbench, model: Model, deployment: Deployment) -> Path:
    return replica_log(wb.home, pk(model), pk(deployment), "x").parent


def log_files(wb: Workbench, model: Model, replica: str | None = None) -> list[Path]:
    """The active deployment's replica logs (or the newest deployment's)."""
    deployment = models.active_deployment(wb, model)
    if deployment is None:
        listed = deployments.list_deployments(wb, model)
        deployment = listed[0] if listed else None
    if deployment is None:
        raise CdswError(f"model {model.name} has never been deployed, so it has no replica logs")
    folder = replica_log_dir(wb, model, deployment)
    files = sorted(folder.glob("*.log")) if folder.exists() else []
    if replica:
        files = [f for f in files if f.stem == replica]
        if not files:
            raise CdswError(f"no replica named {replica!r} in deployment {deployment.id}")
    return files


def _tail(path: Path, n: int | None) -> tuple[list[str], int]:
    if n is not None:
        return last_lines(path, n)
    return list(all_lines(path)), path.stat().st_size


def read(files: list[Path], tail: int | None, follow: bool) -> Iterator[str]:
    """Lines of several replicas merged by timestamp, prefixed with the replica name;
    with ``follow``, then what they append (the one log watcher, services/logwatch)."""
    positions: dict[Path, int] = {}
    first: list[list[tuple[str, str]]] = []
    for path in files:
        lines, size = _tail(path, tail)
        positions[path] = size
        first.append([(line[:24], f"{path.stem} {line}") for line in lines])
    merged = [text for _, text in heapq.merge(*first)]
    yield from (merged[-tail:] if tail else merged)
    if follow and files:
        root = Path(os.path.commonpath([p.parent for p in files]))
        for path, line in logwatch.follow(root, lambda: files, start=positions):
            yield f"{path.stem} {line}"


def recent_calls(wb: Workbench, model: Model, tail: int) -> tuple[list[dict], int]:
    """The model's last ``tail`` calls through the gateway, oldest first, and where the
    request log ends (to follow it from there)."""
    path = requests_file(wb.home, pk(model))
    if not path.exists():
        return [], 0
    lines, size = last_lines(path, tail)
    return [r for r in (_record(line) for line in lines) if r is not None], size


def follow_calls(wb: Workbench, model: Model, offset: int) -> Iterator[dict]:
    path = requests_file(wb.home, pk(model))
    for _, line in logwatch.follow(path.parent, lambda: [path], start={path: offset}):
        record = _record(line)
        if record is not None:
            yield record


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a line cut by a crash
    return record if isinstance(record, dict) else None


def latency(records: list[dict], window: float = 60.0) -> dict[str, float | int | None]:
    """p50/p95/p99 of the calls in the last ``window`` seconds (the gateway's rule)."""
    from cdsw_tui.serving.calllog import percentiles

    since = datetime.now(UTC).timestamp() - window
    values = []
    for r in records:
        try:
            t = datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except (KeyError, TypeError, ValueError):
            continue
        if t.timestamp() >= since and isinstance(r.get("ms"), int | float):
            values.append(float(r["ms"]))
    return percentiles(values)


TRAFFIC_MOST = 200_000  # calls a chart reads at most (the newest): a busy hour stays cheap


@dataclass
class Traffic:
    """The model's calls through the gateway over a time range, in equal buckets (for the
    Monitoring charts): calls and errors (4xx and 5xx) per second, p50/p95/p99 in ms
    (None in a bucket without calls)."""

    start: float  # epoch seconds where the first bucket begins
    step: float  # seconds a bucket spans
    rate: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    p50: list[float | None] = field(default_factory=list)
    p95: list[float | None] = field(default_factory=list)
    p99: list[float | None] = field(default_factory=list)
    calls: int = 0
    cut: bool = False  # more calls than TRAFFIC_MOST: the oldest part of the range is not read


def traffic(wb: Workbench, model: Model, span: float, buckets: int, now: float) -> Traffic:
    """The last ``span`` seconds before ``now`` of the model's request log, newest read
    first and no further back than the range (the cost follows the range, not the log)."""
    from cdsw_tui.serving.calllog import percentiles

    step = span / buckets
    start = now - span
    since = _iso(start)
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    errors = [0] * buckets
    out = Traffic(start=start, step=step)
    for line in _newest_first(requests_file(wb.home, pk(model))):
        stamp = line[10:34] if line.startswith('{"time": "') else ""
        if stamp and stamp < since:
            break
        record = _record(line)
        if record is None or not isinstance(record.get("time"), str):
            continue
        if record["time"] < since:
            break
        if out.calls >= TRAFFIC_MOST:
            out.cut = True
            break
        try:
            at = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            continue
        i = int((at.timestamp() - start) / step)
        if not 0 <= i < buckets:
            continue
        out.calls += 1
        ms = record.get("ms")
        latencies[i].append(float(ms) if isinstance(ms, int | float) else 0.0)
        status = record.get("status")
        if isinstance(status, int) and status >= 400:
            errors[i] += 1
    for i in range(buckets):
        figures = percentiles(latencies[i])
        out.rate.append(len(latencies[i]) / step)
        out.errors.append(errors[i] / step)
        out.p50.append(figures["p50"])
        out.p95.append(figures["p95"])
        out.p99.append(figures["p99"])
    return out


def _iso(epoch: float) -> str:
    """As the gateway stamps a call: comparable with its stamps as text."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


def _newest_first(path: Path) -> Iterator[str]:
    """The lines of a log and then of its rotated part, last line first, a block at a time."""
    for part in (path, rotated(path)):
        try:
            fh = open(part, "rb")
        except FileNotFoundError:
            continue
        with fh:
            end = fh.seek(0, os.SEEK_END)
            pending = b""
            while end > 0:
                begin = max(0, end - BLOCK)
                fh.seek(begin)
                block = fh.read(end - begin) + pending
                end = begin
                lines = block.split(b"\n")
                pending = lines[0] if begin > 0 else b""
                for raw in reversed(lines if begin == 0 else lines[1:]):
                    if raw:
                        yield raw.decode("utf-8", "replace")
