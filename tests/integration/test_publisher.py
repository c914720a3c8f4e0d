"""The router answers from memory; the publisher keeps it current from the store: a
commit by another process (a regenerated key, a revoked API key, a new model) reaches
the table without a call asking for it, and no call reads the store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from cdsw_tui.controller.publisher import Publisher
from cdsw_tui.services import api_keys, models, projects
from cdsw_tui.services.models import ModelSpec
from cdsw_tui.serving.router import Router


async def until(check, seconds: float = 3.0) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "the router's table did not change"
        await asyncio.sleep(0.005)


def test_the_router_holds_no_store_connection():
    router = Router()
    assert not any(isinstance(v, sqlite3.Connection) for v in vars(router).values())


async def test_commits_elsewhere_reach_the_router_without_a_call(wb, tmp_path: Path):
    root = tmp_path / "code"
    root.mkdir()
    (root / "m.py").write_text("def f(x):\n    return x\n")
    projects.create(wb, "p", path=root)
    first = models.create(wb, "p", ModelSpec(name="a", file="m.py", function="f"))
    router = Router()
    publisher = Publisher(router, wb.settings.db_path)
    publisher.load()
    publisher.start(asyncio.get_running_loop())
    try:
        assert router.route(first.access_key).name == "a"
        # another connection commits (as a face's process does): a new model
        second = await asyncio.to_thread(
            models.create, wb, "p", ModelSpec(name="b", file="m.py", function="f")
        )
        await until(lambda: router.route(second.access_key) is not None)
        assert router.named("p", "b").function == "f"  # what its OpenAPI document says
        # a regenerated key: the old one stops working, the new one works
        renewed = await asyncio.to_thread(models.regenerate_key, wb, first)
        await until(lambda: router.route(first.access_key) is None)
        assert router.route(renewed.access_key).name == "a"
        # an API key made, then revoked
        key = await asyncio.to_thread(api_keys.create, wb, "ci")
        await until(lambda: router.api_key_valid(key))
        await asyncio.to_thread(api_keys.delete, wb, "ci")
        await until(lambda: not router.api_key_valid(key))
    finally:
        await asyncio.to_thread(publisher.close)
