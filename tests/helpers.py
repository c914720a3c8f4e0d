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
