"""What the gateway answers from, pushed to its router: the routes (which model each
access key names, API keys, what OpenAPI documents say) read from the store whenever
another process committed to it, and each deployment's pool as it takes over or stops.
The gateway's event loop never queries the store (Ray Serve's proxy router has its
routes pushed to it the same way).

A commit elsewhere (a regenerated key, a new model, an API key revoked) is seen through
the store's write-ahead log: watchfiles wakes a thread within milliseconds, which asks
``PRAGMA data_version`` and, if it moved, reads the table again and hands it to the
event loop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from cdsw_tui.serving.router import Route, Router, key_hash

if TYPE_CHECKING:
    from cdsw_tui.controller.deployment import DeploymentState

log = logging.getLogger("cdsw_tui.controller")
STEP_MS = 1  # a change is handed on this soon after the log stops growing
IDLE_MS = 500  # data_version is asked at least this often, in case a change was missed

Table = tuple[dict[bytes, Route], frozenset[bytes]]


class Publisher:
    def __init__(self, router: Router, db_path: Path) -> None:
        self.router = router
        self.db_path = db_path
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._version: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- pools --------------------------------------------------------------------------

    def publish(self, st: DeploymentState) -> None:
        """The router sends the model's calls to this deployment's pool from now on."""
        previous = self.router.pools.get(st.model_id)
        self.router.pools[st.model_id] = st.pool
        if previous is not None and previous is not st.pool:
            previous.close()  # its waiting callers move on to this pool

    def unpublish(self, st: DeploymentState) -> None:
        if self.router.pools.get(st.model_id) is st.pool:
            del self.router.pools[st.model_id]
            st.pool.close()

    # -- routes -------------------------------------------------------------------------

    def read(self, force: bool = False) -> Table | None:
        """The routes as the store has them, or None if nothing changed (in a thread)."""
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version and not force:
                return None
            rows = self._db.execute(
                "SELECT m.id, m.name, p.name, m.access_key, m.auth_enabled, m.description, "
                "m.function, m.kernel, m.example_input, m.example_output "
                "FROM model m JOIN project p ON p.id = m.project_id"
            ).fetchall()
            api = self._db.execute("SELECT key_hash FROM apikey").fetchall()
        except sqlite3.OperationalError as exc:  # locked for a moment: the next wake reads
            log.debug("routes not read now: %s", exc)
            return None
        self._version = version
        routes = {
            key_hash(r[3]): Route(r[0], r[1], r[2], bool(r[4]), r[5], r[6], r[7], r[8], r[9])
            for r in rows
        }
        return routes, frozenset(bytes.fromhex(r[0]) for r in api)

    def load(self) -> None:
        """The routes now (at start, before the gateway listens)."""
        table = self.read(force=True)
        if table is not None:
            self.router.set_routes(*table)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow the store from a thread; new tables are set on ``loop``."""
        self._thread = threading.Thread(
            target=self._follow, args=(loop,), name="cdsw-routes", daemon=True
        )
        self._thread.start()

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        folder = self.db_path.parent
        names = {self.db_path.name, f"{self.db_path.name}-wal"}

        def ours(_change: watchfiles.Change, path: str) -> bool:
            return Path(path).name in names

        while not self._stop.is_set():
            try:
                for _changes in watchfiles.watch(
                    folder,
                    watch_filter=ours,
                    recursive=False,
                    debounce=50,
                    step=STEP_MS,
                    stop_event=self._stop,
                    rust_timeout=IDLE_MS,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                ):
                    self._push(loop)
            except Exception as exc:  # inotify unavailable: ask on a timer instead
                log.debug("watching the store failed (%s); polling it", exc)
                while not self._stop.wait(0.05):
                    self._push(loop)

    def _push(self, loop: asyncio.AbstractEventLoop) -> None:
        table = self.read()
        if table is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.router.set_routes, *table)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._db.close()
