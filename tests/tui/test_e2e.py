"""The whole flow by keys alone, against a real controller, real builds and a real gateway:
create a project from the quickstart template, create the add model with Deploy Model,
wait for it to build and deploy, and test it from the Test Model pane."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Label, Select

from cdsw_tui.app import WorkbenchApp
from cdsw_tui.config import load_settings
from cdsw_tui.screens.model import ModelScreen
from cdsw_tui.screens.new_model import NewModelScreen
from cdsw_tui.screens.new_project import NewProjectScreen
from cdsw_tui.screens.project import ProjectScreen
from cdsw_tui.services.context import Workbench
from cdsw_tui.widgets.test_pane import TestPane
from tests.helpers import wait_for


async def test_create_build_deploy_and_test_by_keys(home: Path):
    wb = Workbench(load_settings(home))
    app = WorkbenchApp(wb)
    try:
        async with app.run_test(size=(120, 45)) as pilot:
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, NewProjectScreen))
            await pilot.press(*"demo", "ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen))

            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, NewModelScreen))
            form = app.screen
            file_select = form.query_one("#file", Select)
            await wait_for(pilot, lambda: len(file_select._options) > 3)  # prompt + 3 files
            await pilot.press(*"add")
            await pilot.press("tab", "tab")  # description, then the file picker
            assert app.focused is file_select
            await pilot.press(
                "enter", "down", "down", "enter"
            )  # add_numbers.R, then add_numbers.py
            await wait_for(pilot, lambda: file_select.value == "add_numbers.py")
            await wait_for(pilot, lambda: form.query_one("#function", Select).value == "add")
            await pilot.press("ctrl+s")  # Deploy Model

            await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
            screen = app.screen
            try:
                await wait_for(
                    pilot,
                    lambda: screen.detail is not None and screen.detail.status == "deployed",
                    tries=2400,  # the quickstart's cdsw-build.sh installs numpy: up to 2 min
                )
            except AssertionError:
                out = home / "logs" / "controller.out"
                said = out.read_text()[-2000:] if out.exists() else "(no controller.out)"
                raise AssertionError(f"not deployed: {screen.detail}\ncontroller: {said}") from None
            await pilot.press("1", "ctrl+t")
            status = screen.query_one("#test-status", Label)
            await wait_for(pilot, lambda: "200" in str(status.render()), tries=200)
            text = str(status.render())
            assert "✔ 200" in text and "ReplicaID add-" in text
            pane = screen.query_one(TestPane)
            assert pane.last_body["response"] == 8
            assert pane.last_body["ReplicaID"] in text
            history = screen.query_one("#history")
            assert history.row_count == 1
            # a bad input: its error whole where the answer goes, the 200 gone from beside
            # it (before: cut at the status line's end, the earlier answer left shown)
            screen.query_one("#test-json").text = "{'a': 3, 'b': 5}"
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: "✘" in str(status.render()))
            said = " ".join(str(status.render()).split())
            assert "Expecting property name enclosed in double quotes" in said, said
            assert str(screen.query_one("#test-response").render()).strip() == ""
            assert history.row_count == 1  # nothing was sent
    finally:
        wb.close()
