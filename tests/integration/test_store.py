import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from cdsw_tui.errors import CdswError
from cdsw_tui.store import SCHEMA_VERSION, Build, Deployment, Model, Project, Store


def test_pragmas_and_schema_version(tmp_path: Path):
    store = Store(tmp_path / "cdsw.db")
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert raw.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    store.close()
    con = sqlite3.connect(tmp_path / "cdsw.db")
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )


def test_migrates_an_older_file_forward_and_refuses_a_newer(tmp_path: Path):
    path = tmp_path / "cdsw.db"
    sqlite3.connect(path).execute("CREATE TABLE unrelated(x)").connection.commit()
    Store(path).close()
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "project",
        "model",
        "build",
        "deployment",
        "replica",
        "envvar",
        "meta",
        "unrelated",
    } <= tables
    con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    con.commit()
    with pytest.raises(CdswError, match="newer than this cdsw-tui"):
        Store(path)


def test_foreign_keys_cascade_and_unique_numbers(tmp_path: Path):
    store = Store(tmp_path / "cdsw.db")
    with store.session() as s:
        p = Project(name="p", path=str(tmp_path))
        s.add(p)
        s.flush()
        m = Model(
            project_id=p.id, name="m", slug="m", file="f.py", function="f", access_key="k" * 32
        )
        s.add(m)
        s.flush()
        b = Build(
            model_id=m.id, number=1, file="f.py", function="f", kernel="python3", runtime="local"
        )
        s.add(b)
        s.flush()
        s.add(Deployment(model_id=m.id, build_id=b.id))
        s.commit()
    with store.session() as s:
        s.add(
            Build(
                model_id=m.id,
                number=1,
                file="f.py",
                function="f",
                kernel="python3",
                runtime="local",
            )
        )
        with pytest.raises(IntegrityError):
            s.commit()
    with store.session() as s:
        s.delete(s.get(Model, m.id))
        s.commit()
        assert not s.exec(select(Build)).all() and not s.exec(select(Deployment)).all()


def test_a_version_1_store_keeps_its_replicas_by_handle(tmp_path: Path):
    """Replicas of a store from before the runtime contract had a pid, a port and a
    container id; they come out with one opaque handle each, other columns gone."""
    path = tmp_path / "cdsw.db"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE replica (
            id INTEGER PRIMARY KEY, deployment_id INTEGER, name VARCHAR UNIQUE,
            status VARCHAR, reason VARCHAR, pid INTEGER, port INTEGER,
            container_id VARCHAR, restarts INTEGER, received INTEGER, processed INTEGER,
            success INTEGER, failure INTEGER, busy_waits INTEGER, started_at DATETIME,
            updated_at DATETIME);
        INSERT INTO replica (id, deployment_id, name, status, reason, pid, port, container_id,
            restarts, received, processed, success, failure, busy_waits, updated_at)
        VALUES (1, 1, 'a-1-1-xxxxx', 'running', '', 4242, 40000, '', 0, 0, 0, 0, 0, 0, '2026-01-01'),
               (2, 2, 'b-2-2-yyyyy', 'running', '', NULL, 40001, 'c0ffee', 0, 0, 0, 0, 0, 0, '2026-01-01');
        """
    )
    con.commit()
    con.close()
    Store(path).close()
    con = sqlite3.connect(path)
    columns = {r[1] for r in con.execute("PRAGMA table_info(replica)")}
    assert {"handle", "output_offset"} <= columns
    assert not columns & {"pid", "port", "container_id"}
    handles = dict(con.execute("SELECT name, handle FROM replica"))
    assert handles == {"a-1-1-xxxxx": "4242:0:a-1-1-xxxxx", "b-2-2-yyyyy": "c0ffee"}
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )


def test_a_version_2_store_gains_project_placement(tmp_path: Path):
    """Projects made before the swarm runtime keep their rows, with no constraints and the
    controller's Python."""
    path = tmp_path / "cdsw.db"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
        INSERT INTO meta VALUES ('schema_version', '2');
        CREATE TABLE project (id INTEGER PRIMARY KEY, name VARCHAR UNIQUE, path VARCHAR,
            runtime VARCHAR, engine VARCHAR, created_at DATETIME);
        INSERT INTO project VALUES (1, 'old', '/srv/old', 'docker', 'e:1', '2026-01-01');
        """
    )
    con.commit()
    con.close()
    Store(path).close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT name, runtime, placement, python FROM project").fetchall() == [
        ("old", "docker", "", "")
    ]


def test_a_constraint_that_says_no_is_not_called_damage(tmp_path: Path):
    """A duplicate name raised out of a session stays an IntegrityError for its caller to
    word ("already has a job named ..."), never "the store is damaged"."""
    store = Store(tmp_path / "cdsw.db")
    with store.session() as s:
        s.add(Project(name="p", path=str(tmp_path)))
        s.commit()
    with pytest.raises(IntegrityError):
        with store.session() as s:
            s.add(Project(name="p", path=str(tmp_path)))
            s.commit()
    with store.session() as s:  # and the store is as good as it was
        assert [p.name for p in s.exec(select(Project))] == ["p"]
