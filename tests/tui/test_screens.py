"""Every screen, driven by keys through Pilot, against a real SQLite store."""

from __future__ import annotations

import itertools
import tomllib

import pytest
from textual.widgets import DataTable, Input, Label, Select, TabbedContent, TextArea
from textual.worker import WorkerCancelled

from cdsw_tui.screens.confirm import ConfirmScreen
from cdsw_tui.screens.forms import Field
from cdsw_tui.screens.help import HelpScreen
from cdsw_tui.screens.model import ModelScreen
from cdsw_tui.screens.new_model import NewModelScreen
from cdsw_tui.screens.new_project import NewProjectScreen
from cdsw_tui.screens.project import ProjectScreen
from cdsw_tui.screens.projects import ProjectsScreen
from cdsw_tui.screens.settings import SettingsScreen
from cdsw_tui.services import models, projects
from tests.helpers import SIZE, from_project, open_model, wait_for


async def test_projects_screen_lists_and_opens(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ProjectsScreen)
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        assert [table.get_row_at(i)[0] for i in range(2)] == ["churn", "demo"]
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen))
        models_table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: models_table.row_count == 2)
        assert str(models_table.get_row_at(0)[1]) == "● deployed"
        assert str(models_table.get_row_at(1)[1]) == "● failed"
        await pilot.press("escape")
        assert isinstance(app.screen, ProjectsScreen)


async def test_new_project_from_template_and_a_bad_name_is_marked(app, tmp_path):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewProjectScreen))
        await pilot.press(*"bad/name", "ctrl+s")
        field = app.screen.query_one("#field-name", Field)
        await wait_for(pilot, lambda: field.has_class("-invalid"))
        assert "may use letters" in str(field.query_one(".field-error", Label).render())
        name_input = app.screen.query_one("#name", Input)
        name_input.value = ""
        await pilot.press(*"fresh")
        app.screen.query_one("#path", Input).value = str(tmp_path / "fresh")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen))
        assert (tmp_path / "fresh" / "add_numbers.py").exists()
        assert projects.get(app.wb, "fresh").runtime == "local"


async def test_new_project_python_is_checked_and_kept(app, tmp_path):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewProjectScreen))
        form = app.screen
        form.query_one("#name", Input).value = "py"
        form.query_one("#path", Input).value = str(tmp_path / "py")
        form.query_one("#python", Input).value = str(tmp_path / "no-python")
        await pilot.press("ctrl+s")
        # the check runs the interpreter in a worker: slow on a loaded machine, so the
        # test waits for the worker rather than for a number of pauses
        await app.workers.wait_for_complete()
        field = form.query_one("#field-python", Field)
        await wait_for(pilot, lambda: field.has_class("-invalid"))
        assert "no Python interpreter at" in str(field.query_one(".field-error", Label).render())
        assert isinstance(app.screen, NewProjectScreen) and not (tmp_path / "py").exists()
        form.query_one("#python", Input).value = "/usr/bin/python3"
        await pilot.press("ctrl+s")
        try:
            await app.workers.wait_for_complete()
        except WorkerCancelled:
            pass  # saved: the form closed, and workers of its own went with it
        await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen), tries=400)
        assert projects.get(app.wb, "py").python == "/usr/bin/python3"


async def test_new_model_form_marks_bad_fields_and_creates(app, tmp_path):
    root = tmp_path / "code"
    root.mkdir()
    (root / "add_numbers.py").write_text(
        "def add(args):\n    return args['a'] + args['b']\n\ndef two(a, b):\n    return a\n"
    )
    projects.create(app.wb, "code", path=root)
    async with app.run_test(size=SIZE) as pilot:
        await from_project(pilot, app, "code", "n", NewModelScreen)
        form = app.screen
        file_select = form.query_one("#file", Select)
        await wait_for(pilot, lambda: file_select.value == "add_numbers.py")
        function_select = form.query_one("#function", Select)
        await wait_for(pilot, lambda: function_select.value == "add")
        name = form.query_one("#name", Input)
        assert name.value == "add"  # named after its function until the user names it
        name.value = ""
        await pilot.press(*"adder")
        # an invalid example input is marked as you type and refuses the submit
        editor = form.query_one("#example_input")
        editor.text = '{"a": 3,'
        await pilot.pause(0.1)
        assert editor.has_class("-invalid")
        await pilot.press("ctrl+o")
        await wait_for(
            pilot, lambda: form.query_one("#field-example_input", Field).has_class("-invalid")
        )
        editor.text = '{"a": 3, "b": 5}'
        # replicas out of range: the service's error lands on the replicas field
        form.query_one("#replicas", Input).value = "10"
        await pilot.press("ctrl+o")
        replicas = form.query_one("#field-replicas", Field)
        await wait_for(pilot, lambda: replicas.has_class("-invalid"))
        assert "between 1 and 9" in str(replicas.query_one(".field-error", Label).render())
        assert models.list_models(app.wb, "code") == []
        # a function with the wrong arity is marked on the function field
        form.query_one("#replicas", Input).value = "2"
        function_select.value = "two"
        await pilot.press("ctrl+o")
        function_field = form.query_one("#field-function", Field)
        await wait_for(pilot, lambda: function_field.has_class("-invalid"))
        function_select.value = "add"
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        created = models.resolve(app.wb, "code/adder")
        assert (created.replicas, created.example_input) == (2, '{"a": 3, "b": 5}')


async def test_model_screen_tabs_and_keys(app):
    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add")
        screen = app.screen
        tabs = screen.query_one(TabbedContent)
        for key, tab in (
            ("2", "builds"),
            ("3", "deployments"),
            ("4", "monitoring"),
            ("5", "settings"),
            ("1", "overview"),
        ):
            await pilot.press(key)
            assert tabs.active == tab
            if tab == "settings":  # its variables box has the focus: digits are typed there
                await pilot.press("escape")
        # the footer offers only what works here
        assert screen.check_action("test", ()) is True
        assert screen.check_action("reveal_key", ()) is False
        assert screen.check_action("cancel_build", ()) is False  # a key of the Builds tab
        await pilot.press("5")
        key_label = screen.query_one("#access-key", Label)
        assert "k" * 32 not in str(key_label.render())
        await pilot.press("escape")  # out of the variables box, whose letters are typed
        assert app.screen is screen and screen.focused is None
        await pilot.press("v")
        assert "k" * 32 in str(key_label.render())
        await pilot.press("v")
        assert "k" * 32 not in str(key_label.render())
        # model variables: a bad line is refused, a good one saved
        area = screen.query_one("#model-env", TextArea)
        area.text = "NOT A PAIR"
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        from cdsw_tui.services import env

        assert env.list_vars(app.wb, "model", int(screen.detail.model.id)) == {}
        area.text = "THRESHOLD=0.5"
        await pilot.press("ctrl+s")
        await wait_for(
            pilot,
            lambda: (
                env.list_vars(app.wb, "model", int(screen.detail.model.id)) == {"THRESHOLD": "0.5"}
            ),
        )
        # regenerate asks first
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        assert models.resolve(app.wb, "demo/add").access_key == "k" * 32
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: models.resolve(app.wb, "demo/add").access_key != "k" * 32)


async def test_monitoring_shows_replica_statistics(app):
    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add", "monitoring")
        table = app.screen.query_one("#replicas-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        row = table.get_row_at(0)
        assert row[0].endswith("abcde") and list(row[2:6]) == ["12", "12", "11", "1"]


async def test_monitoring_shows_the_gateway_calls_and_their_latency(app):
    """What the controller files for the gateway (requests.jsonl) is what Monitoring shows."""
    import json
    from datetime import UTC, datetime

    from cdsw_tui.services import logs, models

    model = models.resolve(app.wb, "demo/add")
    path = logs.requests_file(app.wb.home, int(model.id))
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    records = [
        {"time": now, "model": "demo/add", "deployment": 1, "replica": "add-1-1-abcde",
         "status": 200 if ms < 40 else 500, "code": "ok" if ms < 40 else "model.error",
         "ms": float(ms), "bytes_in": 40, "bytes_out": 60}
        for ms in range(1, 42)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add", "monitoring")
        calls = app.screen.query_one("#requests-table", DataTable)
        await wait_for(pilot, lambda: calls.row_count == 41)
        newest = calls.get_row_at(0)
        assert str(newest[1]) == "500" and newest[2] == "model.error"
        assert newest[3] == "41.0" and newest[4] == "add-1-1-abcde"
        label = str(app.screen.query_one("#gateway-latency-label", Label).render())
        assert "p50 21.0" in label and "p95 39.0" in label and "p99 41.0" in label


async def test_stop_asks_and_marks_the_deployment(app):
    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add")
        app.screen.run_service = lambda fn, *a, **k: fn(
            *a
        )  # run inline: no controller in this test
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        from cdsw_tui.services import deployments

        assert not deployments.list_deployments(app.wb)[0].stop_requested


async def test_help_and_settings(app):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        port = app.screen.query_one("#gateway_port", Input)
        port.value = "99999"
        await pilot.press("ctrl+s")
        field = app.screen.query_one("#field-gateway_port", Field)
        await wait_for(pilot, lambda: field.has_class("-invalid"))
        port.value = "9123"
        app.screen.query_one("#env", TextArea).text = "REGION=eu\n"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ProjectsScreen))
        config = tomllib.loads((app.wb.home / "config.toml").read_text())
        assert config["gateway_port"] == 9123
        from cdsw_tui.services import env

        assert env.list_vars(app.wb, "global") == {"REGION": "eu"}


async def test_command_palette_jumps_to_a_model(app):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"Model demo/iris")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        assert app.screen.ref == "demo/iris"


async def test_delete_project_asks_first(app):
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("d")  # churn, first row
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: [p.name for p in projects.list_all(app.wb)] == ["demo"])


async def test_secret_looking_variables_are_masked_and_kept(app):
    from cdsw_tui.services import env

    model = models.resolve(app.wb, "demo/add")
    env.set_vars(app.wb, "model", int(model.id), {"API_TOKEN": "s3cr3t-value", "REGION": "eu"})
    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add", "settings")
        area = app.screen.query_one("#model-env", TextArea)
        await wait_for(pilot, lambda: "REGION=eu" in area.text)
        assert "s3cr3t-value" not in area.text and "API_TOKEN=••••••" in area.text
        area.text = area.text.replace("REGION=eu", "REGION=us")
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: env.list_vars(app.wb, "model", int(model.id)).get("REGION") == "us"
        )
        assert env.list_vars(app.wb, "model", int(model.id))["API_TOKEN"] == "s3cr3t-value"


async def test_redeploy_form_is_prefilled_and_marks_bad_replicas(app):
    from cdsw_tui.screens.deploy import DeployScreen
    from cdsw_tui.services import deployments

    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add", "deployments")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen))
        form = app.screen
        assert form.query_one("#replicas", Input).value == "2"  # the deployment's own resources
        assert form.query_one("#build", Select).value == 1
        form.query_one("#replicas", Input).value = "12"
        await pilot.press("ctrl+s")
        field = form.query_one("#field-replicas", Field)
        await wait_for(pilot, lambda: field.has_class("-invalid"))
        form.query_one("#replicas", Input).value = "3"
        form.query_one("#memory", Input).value = "512"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
    newest = deployments.list_deployments(app.wb)[0]
    assert (newest.status, newest.replicas, newest.memory) == ("pending", 3, 512)


async def test_project_settings_change_runtime_and_variables(app):
    from cdsw_tui.screens.project_settings import ProjectSettingsScreen
    from cdsw_tui.services import env

    async with app.run_test(size=SIZE) as pilot:
        await from_project(pilot, app, "demo", "e", ProjectSettingsScreen)
        form = app.screen
        await wait_for(pilot, lambda: form.query_one("#runtime", Select).value == "local")
        form.query_one("#env", TextArea).text = "no equals sign"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: form.query_one("#field-env", Field).has_class("-invalid"))
        form.query_one("#env", TextArea).text = "DATA_DIR=/data\n"
        engine = form.query_one("#engine", Input)
        engine.value = "Not An Image"  # refused, marked, nothing saved
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: form.query_one("#field-engine", Field).has_class("-invalid"))
        assert projects.get(app.wb, "demo").engine == "cdsw-tui/engine:latest"
        engine.value = "cdsw-tui/engine-r:latest"
        placement = form.query_one("#placement", TextArea)
        placement.text = "node.labels.gpu = = true"  # not a constraint: marked, nothing saved
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: form.query_one("#field-placement", Field).has_class("-invalid")
        )
        assert projects.get(app.wb, "demo").engine == "cdsw-tui/engine:latest"
        placement.text = "node.labels.gpu==true\n\nnode.role!=manager\n"
        form.query_one("#runtime", Select).value = "docker"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen))
    project = projects.get(app.wb, "demo")
    assert project.engine == "cdsw-tui/engine-r:latest"
    assert project.runtime == "docker"
    assert project.placement == "node.labels.gpu==true\nnode.role!=manager"
    assert env.list_vars(app.wb, "project", int(project.id)) == {"DATA_DIR": "/data"}


def test_r_functions_are_offered_by_the_picker(seeded, tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "model.R").write_text(
        "add <- function(args) {\n  args$a + args$b\n}\nscale = function(x) x * 2\n"
    )
    projects.create(seeded, "rproj", path=root)
    assert projects.source_files(seeded, "rproj") == ["model.R"]
    assert set(projects.functions(seeded, "rproj", "model.R")) == {"add", "scale"}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_help_is_built_from_the_bindings(app, size):
    """Every key of the model screen is in its help, with the words of its binding,
    including the keys the footer has no room for."""
    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add")
        screen = app.screen
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        listed = dict(app.screen.keys)
        for binding in type(screen).BINDINGS:
            shown = app.get_key_display(binding)
            assert shown in listed, f"{binding.key} missing from help"
            assert binding.description in listed[shown]
            if binding.tooltip:
                assert binding.tooltip in listed[shown]
        deploy = next(b for b in type(screen).BINDINGS if b.action == "deploy_new_build")
        assert "a new build of the code as it is now" in listed[app.get_key_display(deploy)]
        await pilot.press("escape")
        assert app.screen is screen


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_deploy_new_build_is_a_form_that_carries_the_deployment_over(app, size, tmp_path):
    """A stray n deploys nothing: it opens the one deploy form, set to a new build, with
    the running deployment's resources and variables; the comment has the focus."""
    from cdsw_tui.screens.deploy import NEW_BUILD, DeployScreen
    from cdsw_tui.services import builds, models
    from cdsw_tui.store import Project

    model = models.resolve(app.wb, "demo/add")
    project = tmp_path / "code"
    project.mkdir()
    (project / model.file).write_text("def add(args):\n    return args['a'] + args['b']\n")
    app.wb.store.update(Project, model.project_id, path=str(project))
    before = [b.number for b in builds.list_builds(app.wb, model)]
    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add")
        screen = app.screen
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen))
        form = app.screen
        assert form.query_one("#build", Select).value == NEW_BUILD
        assert form.focused is form.query_one("#comment", Input)
        assert form.query_one("#replicas", Input).value == "2"  # the running deployment's
        await pilot.press("escape")
        assert app.screen is screen
        assert [b.number for b in builds.list_builds(app.wb, model)] == before  # nothing built
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen))
        await pilot.press(*"new threshold")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is screen)
        await wait_for(pilot, lambda: screen.active_tab() == "builds")
    newest = builds.list_builds(app.wb, model)[0]
    assert newest.number == max(before) + 1 and newest.comment == "new threshold"
    assert '"replicas": 2' in newest.deploy_request


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_every_footer_fits_and_keeps_help(app, size):
    from textual.widgets._footer import FooterKey

    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add")
        tabs = dict(
            zip(
                "12345",
                ("overview", "builds", "deployments", "monitoring", "settings"),
                strict=True,
            )
        )

        def footer_fits(tab: str) -> bool:
            shown = [k for k in app.screen.query(FooterKey) if k.display]
            actions = {k.action for k in shown}
            settled = ("stop" in actions) == (tab != "settings")  # re-rendered for this tab
            fits = all(0 < k.region.right <= size[0] for k in shown)
            return settled and fits and "help" in actions

        for key, tab in tabs.items():
            await pilot.press(key)
            await wait_for(pilot, lambda tab=tab: footer_fits(tab))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_log_keys_act_whatever_has_focus(app, size):
    from cdsw_tui.widgets.log_view import LogView

    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add", "monitoring")
        log = app.screen.query_one("#replica-log", LogView)
        app.screen.query_one("#replicas-table", DataTable).focus()
        await pilot.pause(0.05)
        wrap, follow, stamps = log.wrap, log.follow, log.timestamps
        await pilot.press("w", "f", "t")
        assert (log.wrap, log.follow, log.timestamps) == (not wrap, not follow, not stamps)
        await pilot.press("2")  # the Builds tab: its own log answers
        await wait_for(pilot, lambda: app.screen.active_tab() == "builds")
        build_log = app.screen.query_one("#build-log", LogView)
        await pilot.press("w")
        assert build_log.wrap is True and log.wrap == (not wrap)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_tab_never_lands_on_the_tab_bar(app, size):
    from textual.widgets import Tabs

    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add", "settings")
        for _ in range(8):
            await pilot.press("tab")
            assert not isinstance(app.focused, Tabs)
        assert app.screen.active_tab() == "settings"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_new_project_enter_creates_it_with_a_real_default_name(app, size):
    from cdsw_tui.screens.new_project import NewProjectScreen

    async with app.run_test(size=size) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewProjectScreen))
        name = app.screen.query_one("#name", Input)
        await wait_for(pilot, lambda: name.value == "demo-2")  # "demo" is taken in the seed
        assert app.focused is name
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen))
    assert "demo-2" in {p.name for p in projects.list_all(app.wb)}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_new_model_takes_the_example_of_the_file_and_function(app, size, tmp_path):
    from cdsw_tui.screens.new_model import NewModelScreen

    projects.create(app.wb, "code", path=tmp_path / "code", template="quickstart")
    async with app.run_test(size=size) as pilot:
        await from_project(pilot, app, "code", "n", NewModelScreen)
        form = app.screen
        example_in = form.query_one("#example_input")
        example_out = form.query_one("#example_output")
        assert example_in.text == "{}"  # nothing chosen yet: no stranger's example
        form.query_one("#file", Select).value = "iris_model.py"
        await wait_for(pilot, lambda: "petal_length" in example_in.text)
        assert "versicolor" in example_out.text
        form.query_one("#file", Select).value = "add_numbers.py"
        await wait_for(pilot, lambda: example_in.text == '{"a": 3, "b": 5}')
        assert example_out.text == "8"
        example_in.text = '{"a": 1, "b": 1}'  # the user's own: kept from now on
        form.query_one("#file", Select).value = "iris_model.py"
        await wait_for(pilot, lambda: form.query_one("#function", Select).value == "predict")
        await pilot.pause(0.3)
        assert example_in.text == '{"a": 1, "b": 1}'


async def test_overview_shows_the_deployed_build_after_a_rollback(app):
    """A newer build exists, the deployment runs build 1: Overview names build 1 and its
    comment, not the newest's."""
    from cdsw_tui.services import models
    from cdsw_tui.store import Build

    model = models.resolve(app.wb, "demo/add")
    with app.wb.store.session() as s:
        s.add(
            Build(model_id=model.id, number=2, status="built", comment="the newer one",
                  file="add_numbers.py", function="add", kernel="python3", runtime="local")
        )  # fmt: skip
        s.commit()
    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add")
        from rich.console import Console

        console = Console(width=120, record=True)
        console.print(app.screen.query_one("#details").content)
        text = console.export_text()
        assert "1 (newest 2)" in text and "first" in text and "the newer one" not in text


async def test_deployments_table_keeps_the_selected_deployment_when_one_is_added(app):
    """The cursor stays on the deployment, not on the row number, so r re-deploys it."""
    from cdsw_tui.screens.deploy import DeployScreen
    from cdsw_tui.services import deployments, models
    from cdsw_tui.store import Deployment

    model = models.resolve(app.wb, "demo/add")
    first = deployments.list_deployments(app.wb, model)[0]
    with app.wb.store.session() as s:
        s.add(Deployment(model_id=model.id, build_id=first.build_id, status="stopped", replicas=4))
        s.commit()
    async with app.run_test(size=SIZE) as pilot:
        await open_model(pilot, app, "demo/add", "deployments")
        table = app.screen.query_one("#deployments-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        table.move_cursor(row=1)
        chosen = table.coordinate_to_cell_key((1, 0)).row_key.value
        with app.wb.store.session() as s:
            s.add(
                Deployment(model_id=model.id, build_id=first.build_id, status="stopped", replicas=7)
            )
            s.commit()
        await wait_for(pilot, lambda: table.row_count == 3)
        assert table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value == chosen
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen))
        wanted = deployments.get(app.wb, int(chosen))
        assert app.screen.query_one("#replicas", Input).value == str(wanted.replicas)


async def test_global_settings_never_write_an_environment_override(app, monkeypatch):
    """A value that came from CDSW_TUI_ENGINE_IMAGE is shown as such and is not copied
    into config.toml when something else is saved."""
    from cdsw_tui.screens.settings import SettingsScreen

    monkeypatch.setenv("CDSW_TUI_ENGINE_IMAGE", "override/engine:1")
    app.wb.settings.engine_image = "override/engine:1"  # as load_settings took it
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        form = app.screen
        assert form.query_one("#engine_image", Input).disabled
        form.query_one("#gateway_port", Input).value = "9124"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ProjectsScreen))
    config = tomllib.loads((app.wb.home / "config.toml").read_text())
    assert config == {"gateway_port": 9124}


async def test_copy_inside_tmux_fills_its_paste_buffer(app, monkeypatch, tmp_path):
    import subprocess

    socket = tmp_path / "tmux.sock"
    subprocess.run(["tmux", "-S", str(socket), "new-session", "-d", "-s", "copy"], check=True)
    try:
        pid = subprocess.run(
            ["tmux", "-S", str(socket), "display-message", "-p", "#{pid}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        monkeypatch.setenv("TMUX", f"{socket},{pid},0")
        async with app.run_test(size=SIZE) as pilot:
            await open_model(pilot, app, "demo/add")
            await pilot.press("c")

            def buffer() -> str:
                shown = subprocess.run(
                    ["tmux", "-S", str(socket), "show-buffer"], capture_output=True, text=True
                )
                return shown.stdout

            await wait_for(pilot, lambda: "curl" in buffer())
            assert "k" * 32 in buffer()  # the user asked for the sample with its key
            assert isinstance(app.screen, ModelScreen)  # no manual-copy box needed
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True)


async def test_copy_outside_tmux_shows_the_text_selected(app, monkeypatch):
    from textual.widgets import TextArea as Area

    from cdsw_tui.screens.confirm import TextScreen

    monkeypatch.delenv("TMUX", raising=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_model(pilot, app, "demo/add")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen))
        area = app.screen.query_one(Area)
        assert area.selected_text == area.text and "curl" in area.text
        await pilot.press("escape")
        assert isinstance(app.screen, ModelScreen)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_s_scales_the_running_deployment_through_a_form(app, size):
    """s opens a one-field form with the running count focused; a bad count is marked in
    the form and changes nothing; a good one scales the deployment, no new deployment."""
    from cdsw_tui.screens.deploy import ScaleScreen
    from cdsw_tui.services import deployments

    model = models.resolve(app.wb, "demo/add")
    before = deployments.list_deployments(app.wb, model)
    async with app.run_test(size=size) as pilot:
        screen = await open_model(pilot, app, "demo/add", "deployments")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ScaleScreen))
        form = app.screen
        box = form.query_one("#replicas", Input)
        assert form.focused is box and box.value == "2"
        await pilot.press("backspace", "1", "2", "enter")
        await wait_for(pilot, lambda: form.query_one("#field-replicas").has_class("-invalid"))
        assert "between 1 and 9" in str(
            form.query_one("#field-replicas .field-error", Label).render()
        )
        assert deployments.list_deployments(app.wb, model)[0].replicas == 2
        await pilot.press("backspace", "backspace", "3", "ctrl+s")
        await wait_for(pilot, lambda: app.screen is screen)
    after = deployments.list_deployments(app.wb, model)
    assert [d.id for d in after] == [d.id for d in before] and after[0].replicas == 3


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_refused_keys_say_why_and_a_wide_footer_shows_every_model_key(app, size):
    """Before: S, R or s on a stopped model and x with nothing building did nothing, and
    the footer never showed b, s or R, even at 120 columns. Now a refused key says why
    in a notification, and from 100 columns the footer shows b, s and R (narrower, the
    keys still act and Help lists them)."""
    from textual.widgets._footer import FooterKey

    from cdsw_tui.store import Deployment

    model = models.resolve(app.wb, "demo/add")
    active = models.active_deployment(app.wb, model)
    assert active is not None
    app.wb.store.update(Deployment, active.id, status="stopped")
    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add")
        screen = app.screen
        await wait_for(pilot, lambda: screen.detail is not None and screen.detail.active is None)
        said = lambda: [n.message for n in app._notifications]  # noqa: E731
        for key, action in (("S", "stop"), ("R", "restart"), ("s", "scale")):
            await pilot.press(key)
            expected = f"demo/add is not deployed: nothing to {action}"
            await wait_for(pilot, lambda expected=expected: expected in said())
        assert app.screen is screen  # no dialog was opened
        await pilot.press("2")
        await pilot.press("x")
        await wait_for(pilot, lambda: any("nothing to cancel" in m for m in said()))
        shown = {k.key for k in screen.query(FooterKey) if k.display}
        if size[0] >= 100:
            assert {"b", "x", "s", "S", "R"} <= shown, shown
        else:
            assert "x" in shown and not {"b", "s", "R"} & shown, shown
            assert all(0 < k.region.right <= size[0] for k in screen.query(FooterKey) if k.display)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_new_model_is_named_after_its_function_and_ctrl_s_needs_no_typing(
    app, tmp_path, size
):
    """Before: the name box only showed 'add' as a placeholder, and ctrl+s said 'name
    must not be empty'. Now the chosen function fills it (a name the user typed is
    kept), so the form as it opens creates the model."""
    root = tmp_path / "code"
    root.mkdir()
    (root / "m.py").write_text("def add(args):\n    return 1\n\ndef mul(args):\n    return 2\n")
    projects.create(app.wb, "code", path=root)
    async with app.run_test(size=size) as pilot:
        await from_project(pilot, app, "code", "n", NewModelScreen)
        form = app.screen
        name = form.query_one("#name", Input)
        function_select = form.query_one("#function", Select)
        await wait_for(pilot, lambda: form.query_one("#file", Select).value == "m.py")
        await wait_for(pilot, lambda: function_select.prompt == "choose a function")
        function_select.value = "add"
        await wait_for(pilot, lambda: name.value == "add")
        function_select.value = "mul"  # another function: the name follows it
        await wait_for(pilot, lambda: name.value == "mul")
        name.value = "scorer"
        function_select.value = "add"  # a name the user gave is kept
        await pilot.pause(0.1)
        assert name.value == "scorer"
        name.value = ""
        function_select.value = "mul"
        await wait_for(pilot, lambda: name.value == "mul")
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
    assert models.resolve(app.wb, "code/mul").function == "mul"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_deleting_a_template_project_offers_to_remove_its_copy(app, size):
    """Before: the copy stayed with no word, and the same project could not be made
    again. Now a second question offers to remove it; no leaves it."""
    for name in ("aaa", "abc"):
        projects.create(app.wb, name, template="quickstart")
    copies = {n: app.wb.projects_dir() / n for n in ("aaa", "abc")}
    async with app.run_test(size=size) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 4)
        for name, answer in (("aaa", "n"), ("abc", "y")):
            table.move_cursor(row=[p.name for p in app.screen.rows].index(name))
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "asked next" in str(app.screen.question)
            await pilot.press("y")
            await wait_for(
                pilot,
                lambda: (
                    isinstance(app.screen, ConfirmScreen) and "Also remove" in app.screen.question
                ),
            )
            assert str(copies[name]) in app.screen.question
            await pilot.press(answer)
            await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await wait_for(pilot, lambda: not copies["abc"].exists())
    assert copies["aaa"].is_dir()
    assert [p.name for p in projects.list_all(app.wb)] == ["churn", "demo"]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_typing_in_a_text_box_never_fires_an_action(app, size):
    """Before: on Settings the variables box had no focus and one Tab did not reach it;
    typing FOO=bar, enter, MY_TOKEN=s3cret, ctrl+s switched tabs (3), opened Re-deploy
    (r) and deployed; escape in a text box left the screen. Now the box has the focus
    there, a letter is typed (its key leaves the footer), and escape leaves the box."""
    from textual.widgets._footer import FooterKey

    from cdsw_tui.services import env

    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add")
        screen = app.screen
        await pilot.press("5")
        area = screen.query_one("#model-env", TextArea)
        await wait_for(pilot, lambda: screen.focused is area)
        await wait_for(
            pilot, lambda: "v" not in {k.key for k in screen.query(FooterKey) if k.display}
        )
        await pilot.press(*"FOO=bar", "enter", *"MY_TOKEN=s3cret", "ctrl+s")
        model_id = int(screen.detail.model.id)
        await wait_for(
            pilot,
            lambda: (
                env.list_vars(app.wb, "model", model_id) == {"FOO": "bar", "MY_TOKEN": "s3cret"}
            ),
        )
        assert app.screen is screen and screen.active_tab() == "settings"
        await pilot.press("escape")
        assert app.screen is screen and screen.focused is None
        await wait_for(pilot, lambda: "v" in {k.key for k in screen.query(FooterKey) if k.display})
        await pilot.press("1")
        screen.query_one("#overview TextArea", TextArea).focus()  # the Test Model input
        await pilot.pause()
        await pilot.press("r", "3")
        assert app.screen is screen and screen.active_tab() == "overview"
        await pilot.press("escape", "escape")
        assert app.screen is not screen


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_help_opens_in_dialogs_and_forms(app, size):
    """Before: ? and F1 did nothing in a dialog (a modal screen takes none of the app's
    keys). Now F1 (and ? where no text box takes it) lists the dialog's own keys."""
    async with app.run_test(size=size) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        confirm = app.screen
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert any("Yes" in words for _, words in app.screen.keys)
        await pilot.press("escape")
        assert app.screen is confirm
        await pilot.press("n")  # no: nothing deleted
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewProjectScreen))
        form = app.screen
        await pilot.press("f1")  # the name box has the focus: ? would be typed there
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        assert app.screen is form
    assert len(projects.list_all(app.wb)) == 2


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_a_bad_test_input_shows_its_whole_error_and_no_earlier_answer(app, size):
    """Before: the error was cut ('...enclosed in doubl') and the earlier 200 stayed
    beside it. (The end-to-end test sees the same after a real call.)"""
    from cdsw_tui.widgets.test_pane import TestPane

    async with app.run_test(size=size) as pilot:
        await open_model(pilot, app, "demo/add")
        pane = app.screen.query_one(TestPane)
        pane._show(200, {"success": True, "response": 8, "ReplicaID": "add-1-1-x"}, 1.0, "{}")
        pane.query_one("#test-json").text = "{'a': 3, 'b': 5}"
        await pilot.press("ctrl+t")
        status = pane.query_one("#test-status", Label)
        await wait_for(pilot, lambda: "✘" in str(status.render()))
        await pilot.pause()
        said = " ".join(str(status.render()).split())
        assert said.endswith(
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
        ), said
        assert status.region.height >= 1 and status.region.right <= size[0]
        assert str(pane.query_one("#test-response").render()).strip() == ""


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_forms_keep_their_buttons_and_borders_on_screen(app, size):
    """Before: New Project's buttons were below the fold even at 120x40, and Settings
    lost its right border at 80 columns. Now the fields scroll and the buttons stay."""
    from textual.widgets import Button

    async with app.run_test(size=size) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        for key, kind in (("n", NewProjectScreen), ("s", SettingsScreen)):
            await pilot.press(key)
            await wait_for(pilot, lambda kind=kind: isinstance(app.screen, kind))
            await pilot.pause(0.1)
            form = app.screen
            box = form.query_one(".dialog").region
            assert box.x >= 0 and box.right <= size[0] and box.bottom <= size[1], box
            for button in form.query(Button):
                r = button.region
                assert r.height and r.y >= box.y and r.bottom <= box.bottom, (button.id, r, box)
            await pilot.press("escape")
            await wait_for(pilot, lambda kind=kind: not isinstance(app.screen, kind))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_monitoring_figures_never_overlap(app, size):
    """Before: 'gateway ms p50 27986.4 p95 30000.8 p99 test latency ms (Test Model
    fills this)', and at 80 columns 'max 0gateway'. Now each wraps in its own column."""
    async with app.run_test(size=size) as pilot:
        screen = await open_model(pilot, app, "demo/add", "monitoring")
        tab = screen.query_one("#rates")
        gateway = screen.query_one("#gateway-latency-label", Label)
        gateway.update("gateway ms p50 27986.4 p95 30000.8 p99 30001.2")
        await pilot.pause(0.1)
        labels = [
            screen.query_one(f"#{n}-label", Label) for n in ("rate", "gateway-latency", "latency")
        ]
        regions = [label.region for label in labels]
        assert all(r.width and r.right <= tab.region.right for r in regions), regions
        assert all(a.right <= b.x for a, b in itertools.pairwise(regions)), regions


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_redeploy_of_an_older_deployment_keeps_the_running_scale(app, size):
    """Before: `r` took the replica count of the selected (stopped) deployment, while
    the docs said the running one's. Now, as a rollback: the selected deployment's
    build, cpu and variables, at the replica count the model runs at now (2)."""
    from cdsw_tui.screens.deploy import DeployScreen
    from cdsw_tui.store import Deployment

    model = models.resolve(app.wb, "demo/add")
    running = models.active_deployment(app.wb, model)
    assert running is not None
    with app.wb.store.session() as s:
        s.add(Deployment(model_id=model.id, build_id=running.build_id, status="stopped",
                         replicas=5, cpu=0.5, env="{}"))  # fmt: skip
        s.commit()
    async with app.run_test(size=size) as pilot:
        screen = await open_model(pilot, app, "demo/add", "deployments")
        await wait_for(pilot, lambda: len(screen.detail.deployments) == 2)
        table = screen.query_one("#deployments-table", DataTable)
        table.move_cursor(row=0)  # the newest: the stopped one
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen))
        form = app.screen
        assert form.query_one("#replicas", Input).value == "2"
        assert form.query_one("#cpu", Input).value == "0.5"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_b_shows_the_new_builds_log_and_a_short_screen_shows_more_of_it(app, size, tmp_path):
    """Before: after b the log pane stayed on the previous build, and at 80x24 only 2
    log lines showed under the builds table. Now the log (and the cursor) go to the new
    build once it is read, and a short screen gives the log the room."""
    from cdsw_tui.store import Project
    from cdsw_tui.widgets.log_view import LogView

    model = models.resolve(app.wb, "demo/add")
    project = tmp_path / "code"
    project.mkdir()
    (project / model.file).write_text("def add(args):\n    return args['a'] + args['b']\n")
    app.wb.store.update(Project, model.project_id, path=str(project))
    async with app.run_test(size=size) as pilot:
        screen = await open_model(pilot, app, "demo/add", "builds")
        title = screen.query_one("#build-log-title", Label)
        await wait_for(pilot, lambda: "build 1" in str(title.render()))
        await pilot.press("b")
        await wait_for(pilot, lambda: "build 2" in str(title.render()))
        table = screen.query_one("#builds-table", DataTable)
        assert table.cursor_row == 0 and screen.query_one("#build-log", LogView).region.height >= 7


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_project_screen_shows_the_build_that_runs(app, size):
    """Before: the Build column showed the newest build, though build 1 runs. Now the
    running build, and the newest beside it when it is another."""
    from cdsw_tui.store import Build

    model = models.resolve(app.wb, "demo/add")
    with app.wb.store.session() as s:
        s.add(Build(model_id=model.id, number=2, status="built", snapshot="e" * 40,
                    tree="f" * 40, file="add_numbers.py", function="add", kernel="python3",
                    runtime="local"))  # fmt: skip
        s.commit()
    async with app.run_test(size=size) as pilot:
        app.open_project("demo")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ProjectScreen) and app.screen.query(DataTable)
        )
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        row = table.get_row_at(0)
        assert (row[0], str(row[2])) == ("add", "1 (newest 2)"), row
