"""A damaged store (issue 24, item 4): refused in one line by the CLI and the controller,
never re-created; backed up while serving and restored with SQLite's backup API. A real
home, a real controller and replica, real files damaged as a disk or a person would."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import stop_controller
from tests.helpers import JSON, Served

CODE = 'def add(args):\n    return args["a"] + args["b"]\n'


@pytest.fixture
def served(tmp_path: Path):
    s = Served(tmp_path, {"m.py": CODE})
    s.cli("project", "create", "srv", "--path", str(s.project))
    s.cli("model", "create", "srv/add", "--file", "m.py", "--function", "add")
    s.wait_deployed(["add"])
    s.keys = {"add": s.key("add")}
    yield s
    s.close()


def answers(s: Served) -> int:
    body = {"accessKey": s.keys["add"], "request": {"a": 2, "b": 3}}
    r = httpx.post(s.url + "/model", json=body, timeout=10, headers=JSON)
    return r.json().get("response") if r.status_code == 200 else r.status_code


def refused(s: Served, *args: str) -> str:
    """The one line a command that must not run on this store says."""
    out = s.cli(*args, check=False)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and "unexpected" not in out.stderr
    return lines[0]


def test_a_truncated_store_is_refused_then_restored_from_a_backup(served: Served, tmp_path: Path):
    s = served
    db = s.home / "cdsw.db"
    copy = tmp_path / "backups" / "cdsw-2026-12-03.db"
    copy.parent.mkdir()
    said = s.cli("store", "backup", str(copy)).stdout  # while the controller serves
    assert "backed up the store to" in said
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert sqlite3.connect(copy).execute("PRAGMA quick_check").fetchone() == ("ok",)
    assert answers(s) == 5
    stop_controller(s.home)  # the replica keeps serving, as after a crash
    with open(db, "r+b") as fh:
        fh.truncate(0)
    for side in ("cdsw.db-wal", "cdsw.db-shm"):
        (s.home / side).unlink(missing_ok=True)
    for command in (("status",), ("model", "list"), ("serve",)):
        line = refused(s, *command)
        assert "is empty, but" in line and "cdsw-tui store restore FILE" in line, line
    assert db.stat().st_size == 0  # nothing was created in its place
    s.cli("store", "restore", str(copy))
    models = json.loads(s.cli("model", "list", "--json").stdout)
    assert [m["name"] for m in models] == ["add"]
    assert list(s.home.glob("cdsw.db.replaced-*"))  # the empty one kept, not deleted
    s.cli("controller", "start")
    deadline = time.monotonic() + 30
    while answers(s) != 5:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_corrupt_page_is_refused_in_one_line(served: Served, tmp_path: Path):
    s = served
    copy = tmp_path / "good.db"
    s.cli("store", "backup", str(copy))
    line = refused(s, "store", "restore", str(copy))  # the controller runs
    assert "stop it first: cdsw-tui controller stop" in line
    s.cli("controller", "stop")
    db = s.home / "cdsw.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as fh:  # the second page and on: the schema's tables
        fh.seek(page)
        fh.write(os.urandom(page * 3))
    for command in (("status",), ("model", "list"), ("serve",)):
        line = refused(s, *command)
        assert "is damaged" in line and "cdsw-tui store restore FILE" in line, line
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    assert "is not a sound store" in refused(s, "store", "restore", str(bad))
    s.cli("store", "restore", str(copy))
    assert json.loads(s.cli("model", "list", "--json").stdout)[0]["name"] == "add"
