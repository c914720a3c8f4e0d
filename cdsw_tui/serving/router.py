"""Which model an access key names, and which pool serves that model now.

Keys are looked up by their SHA-256, so the lookup takes the same time whatever the
key's prefix; the table reloads as soon as another connection commits to the store
(``PRAGMA data_version``), so a regenerated key stops working at once.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cdsw_tui.serving.pool import Pool


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Route:
    model_id: int
    name: str
    project: str
    auth_enabled: bool


class Router:
    def __init__(self, db_path: Path) -> None:
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._version: int | None = None
        self.routes: dict[bytes, Route] = {}
        self.by_name: dict[tuple[str, str], Route] = {}
        self.api_keys: set[bytes] = set()
        self.pools: dict[int, Pool] = {}

    def refresh(self, force: bool = False) -> None:
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError:
            return  # locked for a moment: keep the table we have
        if version == self._version and not force:
            return
        try:
            rows = self._db.execute(
                "SELECT m.id, m.name, p.name, m.access_key, m.auth_enabled "
                "FROM model m JOIN project p ON p.id = m.project_id"
            ).fetchall()
            api = self._db.execute("SELECT key_hash FROM apikey").fetchall()
        except sqlite3.OperationalError:
            return
        self.routes = {key_hash(r[3]): Route(r[0], r[1], r[2], bool(r[4])) for r in rows}
        self.by_name = {(r.project, r.name): r for r in self.routes.values()}
        self.api_keys = {bytes.fromhex(r[0]) for r in api}
        self._version = version

    def route(self, access_key: str) -> Route | None:
        self.refresh()
        return self.routes.get(key_hash(access_key))

    def named(self, project: str, name: str) -> Route | None:
        self.refresh()
        return self.by_name.get((project, name))

    def describe(self, model_id: int) -> dict[str, str]:
        """What the model's OpenAPI document is made from (never its key)."""
        row = self._db.execute(
            "SELECT description, function, kernel, example_input, example_output "
            "FROM model WHERE id = ?",
            (model_id,),
        ).fetchone()
        fields = ("description", "function", "kernel", "example_input", "example_output")
        return dict(zip(fields, row, strict=True)) if row else {}

    def deployed(self, deployment_id: int) -> tuple[int, int] | None:
        """(build number, replicas wanted) of a deployment."""
        row = self._db.execute(
            "SELECT b.number, d.replicas FROM deployment d JOIN build b ON b.id = d.build_id "
            "WHERE d.id = ?",
            (deployment_id,),
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def api_key_valid(self, key: str) -> bool:
        return key_hash(key) in self.api_keys

    def close(self) -> None:
        self._db.close()
