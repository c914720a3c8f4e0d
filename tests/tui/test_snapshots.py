"""Snapshots of the main screens over a seeded store (fixed names, paths and times).

Update them with ``pytest tests/tui/test_snapshots.py --snapshot-update`` after a
deliberate change of a screen, and look at the report before committing.
"""

from __future__ import annotations

from textual.widgets import Input, TextArea

SIZE = (120, 36)


async def settle(pilot) -> None:
    for _ in range(20):
        await pilot.pause(0.05)
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    for widget in pilot.app.screen.query(TextArea):
        widget.cursor_blink = False
    pilot.app.screen.set_focus(None)  # which widget holds focus depended on timing
    await pilot.pause(0.2)


def test_projects_screen(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_project_screen(snap_compare, app):
    async def run_before(pilot) -> None:
        app.open_project("demo")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_model_overview(snap_compare, app):
    async def run_before(pilot) -> None:
        app.open_model("demo/add")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(120, 44), run_before=run_before)


def test_new_project_form_with_an_error(snap_compare, app):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        name = pilot.app.screen.query_one("#name")
        for _ in range(50):  # the form suggests a free name first; replace it
            if name.value:
                break
            await pilot.pause(0.05)
        name.value = ""
        await pilot.press(*"a/b", "ctrl+s")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_model_monitoring_with_replica_logs(snap_compare, app):
    from tests.tui.test_log_view import replica_logs, write

    a, b = replica_logs(app)
    write(a, *(f"POST /predict 200 in {i % 7 + 1} ms" for i in range(40)))
    with open(b, "a") as fh:
        fh.write("2026-11-20T09:31:00.000Z stderr Traceback (most recent call last):\n")

    async def run_before(pilot) -> None:
        app.open_model("demo/add", "monitoring")
        await settle(pilot)
        for _ in range(100):  # the watcher delivers in its own time
            if len(pilot.app.screen.query_one("#replica-log").buffer) == 41:
                break
            await pilot.pause(0.05)
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
