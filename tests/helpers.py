"""Helpers that test modules share (a test module never imports another)."""

import sqlite3
from pathlib import Path


def dump(home: Path) -> list[str]:
    """Everything in the store, to prove a refused command changed nothing."""
    con = sqlite3.connect(home / "cdsw.db")
    try:
        return list(con.iterdump())
    finally:
        con.close()


def one_line_error(result) -> str:
    assert result.code != 0, result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


def replica_socket(home: Path, name: str) -> Path:
    """Where a local replica listens, from its runtime's record (in its jail's /tmp when
    jailed, else beside the record)."""
    import json

    record = json.loads((home / "run" / "local" / f"{name}.json").read_text())
    return Path(record["address"].removeprefix("unix:"))


def host_pid(pid_seen_inside: int, among: list[int]) -> int | None:
    """The host pid of a process that knows itself as ``pid_seen_inside`` (a jailed
    replica's processes see their own PID namespace's numbers)."""
    for pid in among:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == pid_seen_inside:
                return pid
    return None
