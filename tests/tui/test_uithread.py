"""The UI thread never queries the store: screens get their data from workers, so a slow
disk or a busy controller never freezes a key press."""

from __future__ import annotations

import threading
import traceback

from sqlalchemy import event

from cdsw_tui.screens.model import ModelScreen
from cdsw_tui.screens.project import ProjectScreen
from cdsw_tui.screens.projects import ProjectsScreen
from tests.helpers import SIZE, wait_for


async def test_the_ui_thread_never_queries_the_store(app):
    on_ui: list[str] = []

    def spy(_conn, _cursor, _statement, *_args) -> None:
        if threading.current_thread() is threading.main_thread():
            ours = [f for f in traceback.extract_stack() if "cdsw_tui" in f.filename]
            on_ui.append(" <- ".join(f"{f.name}:{f.lineno}" for f in reversed(ours)))

    async def visit(*keys: str, back: int = 1) -> None:
        """Press ``keys`` (a screen or form opens), let it load, then leave it."""
        await pilot.press(*keys)
        await pilot.pause(0.3)
        for _ in range(back):
            await pilot.press("escape")
        await pilot.pause(0.1)

    event.listen(app.wb.store.engine, "before_cursor_execute", spy)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ProjectsScreen))
            await pilot.pause(0.3)
            await visit("n")  # New Project
            await visit("s")  # global settings
            await visit("question_mark")
            await visit("d")  # delete a project asks first
            await pilot.press("down", "enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen))
            await pilot.pause(0.3)
            await visit("n")  # New Model
            await visit("e")  # Project Settings
            await visit("d")  # delete asks first
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, ModelScreen) and app.screen.detail is not None,
            )
            for tab in "23451":
                await pilot.press(tab)
                await pilot.pause(0.3)
            await visit("n")  # Deploy New Build
            await visit("s")  # Scale
            await visit("S")  # Stop asks first
            await visit("R")  # Restart asks first
            await pilot.press("3")
            await visit("r")  # Re-deploy
            await pilot.press("5")
            await visit("v", back=0)  # the key, shown
            await visit("g")  # New key asks first
            await pilot.press("g")
            await pilot.pause(0.2)
            await pilot.press("y")  # ... and, said yes, regenerates it in a worker
            await pilot.pause(0.3)
            await visit("ctrl+d")  # delete asks first
            await pilot.press("escape", "escape")
            await pilot.pause(0.3)
    finally:
        event.remove(app.wb.store.engine, "before_cursor_execute", spy)
    assert not on_ui, "\n".join(sorted(set(on_ui)))


async def test_a_worker_that_fails_says_so_in_one_line_and_files_the_traceback(app, monkeypatch):
    """Before, a worker's unexpected exception vanished (exit_on_error=False): the user
    pressed y and nothing happened. Now one handler reports every worker's failure."""
    from cdsw_tui.errors import CdswError
    from cdsw_tui.services import models

    def broken(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(models, "regenerate_key", broken)
    async with app.run_test(size=SIZE) as pilot:
        app.open_model("demo/add", "settings")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.detail is not None
        )
        await pilot.press("escape")  # out of the variables box: g is a key again
        await pilot.press("g")
        await pilot.pause(0.2)
        await pilot.press("y")
        said = lambda: [n.message for n in app._notifications]  # noqa: E731
        await wait_for(pilot, lambda: any("disk on fire" in m for m in said()))
        line = next(m for m in said() if "disk on fire" in m)
        assert line.startswith("unexpected error: RuntimeError: disk on fire")
        assert "\n" not in line and "Traceback" not in line
        filed = (app.wb.home / "logs" / "tui.log").read_text()
        assert "Traceback" in filed and "in broken" in filed
        assert (app.wb.home / "logs" / "tui.log").stat().st_mode & 0o777 == 0o600

        def refused(*_a, **_k):
            raise CdswError("model add is busy")

        monkeypatch.setattr(models, "regenerate_key", refused)
        await pilot.press("g")
        await pilot.pause(0.2)
        await pilot.press("y")
        await wait_for(pilot, lambda: "model add is busy" in said())


async def test_the_model_screen_polls_the_store_once_a_second_not_twice(app):
    """Textual calls every class's on_mount; ModelScreen also called PollingScreen's
    itself, so it ran two poll timers (two store reads a second for nothing)."""
    async with app.run_test(size=SIZE) as pilot:
        app.open_model("demo/add")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.detail is not None
        )
        timers = [t for t in app.screen._timers if t._callback == app.screen.reload]
        assert len(timers) == 1
