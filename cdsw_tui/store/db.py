"""The SQLite file: WAL, foreign keys, a busy timeout, and forward migrations on open."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

from cdsw_tui import disk
from cdsw_tui.errors import CdswError
from cdsw_tui.store import (
    health,
    tables,  # noqa: F401  (registers the tables)
)

BUSY_TIMEOUT_MS = 10_000


def _migration_1(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn)


def _columns(conn: Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(text(f"PRAGMA table_info({table})"))}


def _migration_2(conn: Connection) -> None:
    """Replicas are known by one opaque runtime handle (and an output offset), not by a
    pid, a port or a container id."""
    have = _columns(conn, "replica")
    if "handle" not in have:
        conn.execute(text("ALTER TABLE replica ADD COLUMN handle VARCHAR NOT NULL DEFAULT ''"))
        if "container_id" in have:
            conn.execute(
                text(
                    "UPDATE replica SET handle = CASE WHEN container_id != '' THEN container_id "
                    "WHEN pid IS NOT NULL THEN pid || ':0:' || name ELSE '' END"
                )
            )
    if "output_offset" not in have:
        conn.execute(
            text("ALTER TABLE replica ADD COLUMN output_offset INTEGER NOT NULL DEFAULT 0")
        )
    for old in ("pid", "port", "container_id"):
        if old in have:
            conn.execute(text(f"ALTER TABLE replica DROP COLUMN {old}"))


def _migration_3(conn: Connection) -> None:
    """Projects carry placement constraints for runtimes that schedule over nodes, and a
    Python interpreter for the local runtime."""
    have = _columns(conn, "project")
    for column in ("placement", "python"):
        if have and column not in have:
            conn.execute(
                text(f"ALTER TABLE project ADD COLUMN {column} VARCHAR NOT NULL DEFAULT ''")
            )


def _migration_4(conn: Connection) -> None:
    """Tracked model metrics live in the store, per model, build and deployment."""
    SQLModel.metadata.tables["trackedmetric"].create(conn, checkfirst=True)
    for index in SQLModel.metadata.tables["trackedmetric"].indexes:
        index.create(conn, checkfirst=True)


def _migration_5(conn: Connection) -> None:
    """Projects say whether their replicas may open connections out (egress)."""
    have = _columns(conn, "project")
    if have and "egress" not in have:
        conn.execute(text("ALTER TABLE project ADD COLUMN egress BOOLEAN NOT NULL DEFAULT 0"))


def _migration_6(conn: Connection) -> None:
    """Jobs and their runs (CDSW's Jobs, and one-off runs of a project script)."""
    for name in ("job", "jobrun"):
        table = SQLModel.metadata.tables[name]
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _migration_7(conn: Connection) -> None:
    """Applications, each start of which is a run; AMPs' tasks."""
    for name in ("application", "amptask"):
        table = SQLModel.metadata.tables[name]
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    if "app_id" not in _columns(conn, "jobrun"):
        conn.execute(
            text(
                "ALTER TABLE jobrun ADD COLUMN app_id INTEGER "
                "REFERENCES application (id) ON DELETE CASCADE"
            )
        )
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_jobrun_app_id ON jobrun (app_id)"))


def _migration_8(conn: Connection) -> None:
    """Projects remember the template they were copied from (their delete may remove it)."""
    have = _columns(conn, "project")
    if have and "template" not in have:
        conn.execute(text("ALTER TABLE project ADD COLUMN template VARCHAR NOT NULL DEFAULT ''"))


# Append-only: migration N takes a database at version N-1 to version N.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _schema_version(conn: Connection) -> int:
    has_meta = conn.execute(
        text("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'")
    ).first()
    if not has_meta:
        return 0
    row = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
    return int(row[0]) if row else 0


def migrate(engine: Engine) -> int:
    """Bring the schema forward; returns the version found before migrating."""
    with engine.begin() as conn:
        found = _schema_version(conn)
        if found > SCHEMA_VERSION:
            raise CdswError(
                f"the store is at schema version {found}, newer than this cdsw-tui "
                f"({SCHEMA_VERSION}); upgrade cdsw-tui"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(
                text("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', :v)"),
                {"v": str(version)},
            )
    return found


def _disk(path: Path) -> str:
    """``; the disk holding / (0 MB free)`` when that disk is nearly full."""
    try:
        low = disk.free_mb(path) < 1
    except OSError:
        return ""
    return f"; {disk.describe(path)}" if low else ""


class Store:
    """One SQLite file; sessions are short and opened per operation."""

    def __init__(self, path: Path, check: bool = True) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if check:  # damaged, or gone from a home with builds: refused, never re-made
                health.check(path)
            self.engine = create_engine(
                f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 10}
            )
            event.listen(self.engine, "connect", _on_connect)
            migrate(self.engine)
        except OperationalError as exc:
            raise CdswError(f"cannot open the store {path}: {exc.orig}{_disk(path)}") from None
        except DatabaseError as exc:
            raise CdswError(f"the store {path} is damaged ({exc.orig}); {health.RESTORE}") from None
        except OSError as exc:
            raise CdswError(f"cannot write to {path.parent}: {exc.strerror}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A short session; a storage failure (a full disk, a lost file) is one line."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except IntegrityError:
            raise  # a constraint said no (a duplicate name): the caller's to say, no damage
        except OperationalError as exc:
            raise CdswError(f"the store {self.path} failed: {exc.orig}{_disk(self.path)}") from None
        except DatabaseError as exc:  # a page went bad while running
            raise CdswError(
                f"the store {self.path} is damaged ({exc.orig}); {health.RESTORE}"
            ) from None

    def update(self, table: type, row_id: int, **values: object) -> bool:
        """Set columns of one row; False if the row is gone (deleted meanwhile)."""
        with self.session() as s:
            row = s.get(table, row_id)
            if row is None:
                return False
            for key, value in values.items():
                setattr(row, key, value)
            s.add(row)
            s.commit()
            return True

    def close(self) -> None:
        self.engine.dispose()
