"""What the controller writes to the store, all of it in threads: replica rows as their
operations go, deployment rows changed by a pass (written in order at its end, in one
transaction), and the replicas' call counts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlmodel import col, select

from cdsw_tui.store import DEPLOYMENT_ACTIVE, Deployment, Replica, ReplicaStatus, Store, pk, utcnow


class StoreWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._writes: list[tuple[int, dict[str, Any]]] = []
        self._later: list[Callable[[], None]] = []

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a thread: store queries never run on the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- now (a replica's operation waits for its row) ----------------------------------

    async def new_replica(self, dep_id: int, name: str) -> int:
        def add() -> int:
            with self.store.session() as s:
                row = Replica(deployment_id=dep_id, name=name, status=ReplicaStatus.STARTING)
                s.add(row)
                s.commit()
                s.refresh(row)
                return pk(row)

        result: int = await self.run(add)
        return result

    async def set_replica(self, row_id: int, **values: Any) -> None:
        await self.run(self.store.update, Replica, row_id, updated_at=utcnow(), **values)

    async def set_deployment(self, dep_id: int, **values: Any) -> None:
        await self.run(self.store.update, Deployment, dep_id, **values)

    async def clear_reason(self, dep_id: int, prefix: str) -> None:
        """The deployment's reason goes, if it is the one that starts with ``prefix``."""

        def clear() -> None:
            with self.store.session() as s:
                row = s.get(Deployment, dep_id)
                if row is not None and row.reason.startswith(prefix):
                    row.reason = ""
                    s.add(row)
                    s.commit()

        await self.run(clear)

    # -- at the end of the pass ---------------------------------------------------------

    def write(self, dep_id: int, **values: Any) -> None:
        """A change of the deployment's row, written at the end of the pass (in order)."""
        self._writes.append((dep_id, values))

    def replaced(self, model_id: int, dep_id: int, reason: str) -> None:
        """At the end of the pass, every other active deployment of the model is asked
        (in the store, so the stop survives a restart) to stop."""

        def mark() -> None:
            with self.store.session() as s:
                rows = s.exec(
                    select(Deployment).where(
                        Deployment.model_id == model_id,
                        Deployment.id != dep_id,
                        col(Deployment.status).in_(DEPLOYMENT_ACTIVE),
                    )
                )
                for row in rows:
                    row.stop_requested = True
                    row.reason = reason
                    s.add(row)
                s.commit()

        self._later.append(mark)

    async def flush(self) -> None:
        """What the pass changed, in order, in one thread call."""
        writes, self._writes = self._writes, []
        later, self._later = self._later, []
        if not writes and not later:
            return

        def flush() -> None:
            with self.store.session() as s:
                for dep_id, values in writes:
                    row = s.get(Deployment, dep_id)
                    if row is None:
                        continue
                    for key, value in values.items():
                        setattr(row, key, value)
                    s.add(row)
                s.commit()
            for call in later:
                call()

        await self.run(flush)

    # -- reads the pass needs -------------------------------------------------------------

    def active_deployments(self) -> dict[int, Deployment]:
        with self.store.session() as s:
            rows = s.exec(
                select(Deployment)
                .where(col(Deployment.status).in_(DEPLOYMENT_ACTIVE))
                .order_by(col(Deployment.id))
            )
            return {pk(r): r for r in rows}

    # -- statistics -------------------------------------------------------------------------

    async def save_stats(self, values: list[tuple[int, dict[str, Any]]]) -> None:
        """Each replica row's counts, written only where they changed."""
        if not values:
            return

        def write() -> None:
            with self.store.session() as s:
                for row_id, stats in values:
                    row = s.get(Replica, row_id)
                    if row is None:
                        continue
                    changed = False
                    for k, v in stats.items():
                        if getattr(row, k) != v:
                            setattr(row, k, v)
                            changed = True
                    if changed:
                        s.add(row)
                s.commit()

        await self.run(write)
