"""The project's Jobs screen, driven by keys: jobs with their schedule, the job they
follow and their last run; the history and live log of the selected job's newest run;
r runs a job now (refused while one runs), x stops the run in progress."""

from __future__ import annotations

from datetime import timedelta

import pytest
from textual.widgets import DataTable, Label
from textual.widgets._footer import FooterKey

from cdsw_tui.screens.jobs import JobsScreen
from cdsw_tui.services import background, jobs, projects, runs
from cdsw_tui.store import Job, JobRun
from cdsw_tui.widgets.log_view import LogView
from tests.helpers import from_project, wait_for
from tests.tui.conftest import T0


def seed_jobs(wb) -> None:
    demo = projects.get(wb, "demo")
    with wb.store.session() as s:
        train = Job(project_id=demo.id, name="train", script="train.py", created_at=T0)
        s.add(train)
        s.flush()
        s.add(
            Job(
                project_id=demo.id,
                name="nightly",
                script="score.py",
                schedule="0 3 * * *",
                after_job_id=None,
                created_at=T0,
            )
        )
        s.add(
            Job(
                project_id=demo.id,
                name="report",
                script="report.R",
                after_job_id=train.id,
                created_at=T0,
            )
        )
        s.add(
            JobRun(
                project_id=demo.id, job_id=train.id, number=1, script="train.py",
                status="failed", exit_code=2, reason="the script exited with status 2",
                created_at=T0, started_at=T0, finished_at=T0 + timedelta(seconds=3),
            )
        )  # fmt: skip
        running = JobRun(
            project_id=demo.id, job_id=train.id, number=2, script="train.py",
            status="running", created_at=T0, started_at=T0 + timedelta(minutes=5),
        )  # fmt: skip
        s.add(running)
        s.commit()
        s.refresh(running)
    path = wb.run_log_path(running.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "2026-11-20T09:35:00.000Z [cdsw-tui] job train, run 2 of demo on the local runtime "
        "(manual): python train.py\n2026-11-20T09:35:01.000Z epoch 1 loss 0.42\n"
    )


def footer_keys(app) -> set[str]:
    return {k.action for k in app.screen.query(FooterKey) if k.display}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_jobs_screen_shows_history_and_log_and_runs_and_stops(app, size, monkeypatch):
    seed_jobs(app.wb)
    started = []
    monkeypatch.setattr(background, "ensure", lambda wb: started.append(wb) or (None, False))
    async with app.run_test(size=size) as pilot:
        await from_project(pilot, app, "demo", "j", JobsScreen)
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        assert [table.get_row_at(i)[0] for i in range(3)] == ["nightly", "report", "train"]
        assert table.get_row_at(0)[2] == "0 3 * * *" and table.get_row_at(1)[3] == "train"
        await pilot.press("down", "down")  # train: its run 2 is running
        history = screen.query_one("#job-history", Label)
        await wait_for(pilot, lambda: "run 2 running" in str(history.render()))
        assert "run 1 failed, exit 2 (manual)" in str(history.render())
        log = screen.query_one("#run-log", LogView)
        await wait_for(pilot, lambda: any("epoch 1 loss 0.42" in line for line in log.buffer))
        await wait_for(pilot, lambda: "cancel" in footer_keys(app))
        assert "run" not in footer_keys(app)  # one run of a job at a time
        await pilot.press("r")  # refused: nothing queued
        await pilot.press("x")
        train = jobs.resolve(app.wb, "demo/train")
        await wait_for(pilot, lambda: runs.get(app.wb, train, 2).cancel_requested)
        await pilot.press("up", "up")  # nightly: never run
        await wait_for(pilot, lambda: "no runs yet" in str(history.render()))
        await wait_for(pilot, lambda: "run" in footer_keys(app))
        await pilot.press("r")
        nightly = jobs.resolve(app.wb, "demo/nightly")
        await wait_for(pilot, lambda: runs.active_run(app.wb, nightly) is not None)
        assert runs.get(app.wb, nightly, 1).status == "queued" and started
        assert len(runs.list_runs(app.wb, train)) == 2
        await pilot.press("escape")
        assert not isinstance(app.screen, JobsScreen)


def test_jobs_screen(snap_compare, app):
    from tests.tui.test_snapshots import SIZE, settle

    seed_jobs(app.wb)

    async def run_before(pilot) -> None:
        app.open_project("demo")
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        await pilot.press("down", "down")
        for _ in range(100):
            if len(pilot.app.screen.query_one("#run-log").buffer) == 2:
                break
            await pilot.pause(0.05)
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
