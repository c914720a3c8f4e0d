"""Replica logs: files per deployment that outlive their replicas."""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator
from pathlib import Path

from cdsw_tui.engine.buildlog import all_lines, last_lines
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
    from datetime import UTC, datetime

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
