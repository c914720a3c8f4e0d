"""The project's Applications screen, driven by keys: each application with its status,
URL and restarts, the selected one's reason and live log; c copies the URL, s stops a
running one and starts a stopped one, r restarts it."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Label

from cdsw_tui.screens.apps import AppsScreen
from cdsw_tui.services import apps, background, projects
from cdsw_tui.store import Application, JobRun
from cdsw_tui.widgets.log_view import LogView
from tests.helpers import from_project, wait_for
from tests.tui.conftest import T0


def seed_apps(wb) -> None:
    demo = projects.get(wb, "demo")
    with wb.store.session() as s:
        dash = Application(
            project_id=demo.id, name="Drift Dashboard", subdomain="drift", script="apps/app.py",
            port=8123, status="running", restarts=2, created_at=T0, started_at=T0,
        )  # fmt: skip
        s.add(dash)
        s.add(
            Application(
                project_id=demo.id,
                name="Explorer",
                subdomain="explorer",
                script="explore.py",
                port=8124,
                desired="stopped",
                status="stopped",
                created_at=T0,
            )  # fmt: skip
        )
        s.flush()
        run = JobRun(
            project_id=demo.id, app_id=dash.id, number=3, script="apps/app.py",
            trigger="application", status="running", created_at=T0, started_at=T0,
        )  # fmt: skip
        s.add(run)
        s.commit()
        s.refresh(run)
    path = wb.run_log_path(run.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "2026-11-20T09:35:00.000Z [cdsw-tui] application Drift Dashboard, start 3 of demo on "
        "the local runtime (application): python apps/app.py\n"
        "2026-11-20T09:35:01.000Z * Running on http://127.0.0.1:8123\n"
    )


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_apps_screen_shows_status_url_log_and_stops_starts_restarts(app, size, monkeypatch):
    seed_apps(app.wb)
    started, copied = [], []
    monkeypatch.setattr(background, "ensure", lambda wb: started.append(wb) or (None, False))
    async with app.run_test(size=size) as pilot:
        monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
        await from_project(pilot, app, "demo", "a", AppsScreen)
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        assert [table.get_row_at(i)[0] for i in range(2)] == ["Drift Dashboard", "Explorer"]
        assert table.get_row_at(0)[2] == "http://127.0.0.1:8123/"
        log = screen.query_one("#app-log", LogView)
        await wait_for(pilot, lambda: any("Running on" in line for line in log.buffer))
        assert "subdomain drift" in str(screen.query_one("#app-reason", Label).render())
        await pilot.press("c")
        assert copied == ["http://127.0.0.1:8123/"]
        drift = apps.resolve(app.wb, "demo/Drift Dashboard")
        await pilot.press("s")  # running: stopped, its start cancelled
        await wait_for(pilot, lambda: apps.refresh(app.wb, drift).desired == "stopped")
        assert apps.current_run(app.wb, drift).cancel_requested
        await pilot.press("r")  # restarted: wanted running again, at once
        await wait_for(pilot, lambda: apps.refresh(app.wb, drift).restart_requested)
        await pilot.press("down", "s")  # Explorer was stopped: started
        explorer = apps.resolve(app.wb, "demo/explorer")
        await wait_for(pilot, lambda: apps.refresh(app.wb, explorer).desired == "running")
        assert started
        await pilot.press("escape")
        assert not isinstance(app.screen, AppsScreen)


def test_apps_screen(snap_compare, app):
    from tests.tui.test_snapshots import SIZE, settle

    seed_apps(app.wb)

    async def run_before(pilot) -> None:
        app.open_project("demo")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        for _ in range(100):
            if len(pilot.app.screen.query_one("#app-log").buffer) == 2:
                break
            await pilot.pause(0.05)
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
