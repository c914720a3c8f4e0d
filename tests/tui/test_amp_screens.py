"""An AMP from the workbench, driven by keys: New Project → "An AMP folder" reads its
.project-metadata.yaml into fields for its variables (a required one left empty is
marked), ctrl+s launches it and opens the launch screen, whose task list fills in as
the tasks end; a failed task shows its log, and g goes on from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from textual.widgets import DataTable, Input, Label, Select

from cdsw_tui.screens.amp_launch import AmpLaunchScreen
from cdsw_tui.screens.forms import Field
from cdsw_tui.screens.new_project import NewProjectScreen
from cdsw_tui.services import amps, background, projects
from cdsw_tui.store import AmpTask, pk
from tests.compat.test_amps import FILES
from tests.conftest import write_project
from tests.helpers import wait_for
from tests.tui.conftest import T0

SIZE = (100, 50)


def amp_folder(root: Path) -> Path:
    files = dict(FILES)
    files[".project-metadata.yaml"] = files[".project-metadata.yaml"].replace(
        "kernel: Python 3.9", "kernel: Python 3"
    )
    write_project(root, files)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


async def test_an_amp_is_launched_from_new_project_and_its_tasks_fill_in(
    app, tmp_path, monkeypatch
):
    root = amp_folder(tmp_path / "tiny")
    started = []
    monkeypatch.setattr(background, "ensure", lambda wb: started.append(wb) or (None, False))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewProjectScreen))
        form = app.screen
        form.query_one("#name", Input).value = "tiny"
        form.query_one("#source", Select).value = "amp"
        form.query_one("#path", Input).value = str(root)
        await pilot.press("ctrl+s")  # first: its variables, as fields
        await wait_for(pilot, lambda: len(form.query("#amp-vars Input")) == 4)
        assert form.query_one("#var-USE_PREBUILT_MODEL", Input).value == "yes"
        assert "Tiny Prototype" in str(form.query_one("#amp-info", Label).render())
        await pilot.press("ctrl+s")  # SECRET_TOKEN is required and empty: marked
        field = form.query_one("#field-SECRET_TOKEN", Field)
        await wait_for(pilot, lambda: field.has_class("-invalid"))
        assert "the AMP needs SECRET_TOKEN" in str(field.query_one(".field-error", Label).render())
        assert not [p for p in projects.list_all(app.wb) if p.name == "tiny"]
        form.query_one("#var-SECRET_TOKEN", Input).value = "s3"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, AmpLaunchScreen))
        assert started  # the controller, which runs the tasks
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 7)
        assert [str(table.get_row_at(i)[3]) for i in range(7)] == ["● pending"] * 7
        tiny = projects.get(app.wb, "tiny")
        first, second = amps.tasks_of(app.wb, tiny)[:2]
        app.wb.store.update(AmpTask, pk(first), status="succeeded", detail="run 1 succeeded",
                            started_at=T0, finished_at=T0)  # fmt: skip
        app.wb.store.update(AmpTask, pk(second), status="failed", detail="no such script")
        await wait_for(pilot, lambda: str(table.get_row_at(1)[3]) == "● failed", tries=200)
        assert str(table.get_row_at(0)[5]) == "run 1 succeeded"
        state = screen.query_one("#launch-state", Label)
        await wait_for(pilot, lambda: "g goes on" in str(state.render()))
        assert table.cursor_row == 1  # put on the failed task
        await pilot.press("g")
        await wait_for(pilot, lambda: amps.tasks_of(app.wb, tiny)[1].status == "pending")


def seed_launch(wb, tmp_path: Path) -> None:
    root = amp_folder(tmp_path / "tiny")
    project = amps.launch(wb, "tiny", root, {"SECRET_TOKEN": "s3"}, runtime="local")
    tasks = amps.tasks_of(wb, project)
    log = wb.run_log_path(41)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        "2026-11-20T09:35:00.000Z [cdsw-tui] job Train Model, run 1 of tiny on the local "
        "runtime (amp): python code/1_train.py\n"
        "2026-11-20T09:35:01.000Z FileNotFoundError: [Errno 2] No such file or directory: "
        "'seed.json'\n"
    )
    for task, status, detail, entity in (
        (tasks[0], "succeeded", "run 1 succeeded", "run:40"),
        (tasks[1], "succeeded", "job Train Model", "job:1"),
        (tasks[2], "failed", "run 1 failed: the script exited with status 1", "run:41"),
    ):
        wb.store.update(AmpTask, pk(task), status=status, detail=detail, entity=entity,
                        started_at=T0, finished_at=T0.replace(second=4))  # fmt: skip


def test_amp_launch_screen(snap_compare, app, tmp_path):
    from tests.tui.test_snapshots import SIZE as SNAP
    from tests.tui.test_snapshots import settle

    seed_launch(app.wb, tmp_path)

    async def run_before(pilot) -> None:
        pilot.app.push_screen(AmpLaunchScreen("tiny"))
        await settle(pilot)
        for _ in range(100):
            if len(pilot.app.screen.query_one("#task-log").buffer) == 2:
                break
            await pilot.pause(0.05)
        await settle(pilot)

    assert snap_compare(app, terminal_size=SNAP, run_before=run_before)
