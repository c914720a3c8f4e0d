"""A seeded store with fixed names, paths and times, so screens render the same every run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdsw_tui.app import WorkbenchApp
from cdsw_tui.config import load_settings
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Deployment, Model, Project, Replica

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def seed(wb: Workbench, project_root: Path) -> None:
    with wb.store.session() as s:
        demo = Project(
            name="demo",
            path="/home/ds/demo",
            runtime="local",
            engine="cdsw-tui/engine:latest",
            created_at=T0,
        )
        other = Project(
            name="churn",
            path="/home/ds/churn",
            runtime="docker",
            engine="cdsw-tui/engine:latest",
            created_at=T0,
        )
        s.add_all([demo, other])
        s.flush()
        add = Model(
            project_id=demo.id,
            name="add",
            slug="add",
            description="adds two numbers",
            file="add_numbers.py",
            function="add",
            example_input='{"a": 3, "b": 5}',
            example_output="8",
            access_key="k" * 32,
            created_at=T0,
            updated_at=T0,
        )
        iris = Model(
            project_id=demo.id,
            name="iris",
            slug="iris",
            file="iris_model.py",
            function="predict",
            example_input='{"petal_length": 4.7, "petal_width": 1.4}',
            access_key="i" * 32,
            created_at=T0,
            updated_at=T0,
        )
        s.add_all([add, iris])
        s.flush()
        b1 = Build(
            model_id=add.id,
            number=1,
            status="built",
            snapshot="a" * 40,
            tree="b" * 40,
            file="add_numbers.py",
            function="add",
            kernel="python3",
            runtime="local",
            created_at=T0,
            started_at=T0,
            finished_at=T0.replace(second=9),
            comment="first",
        )
        b2 = Build(
            model_id=iris.id,
            number=1,
            status="failed",
            reason="cdsw-build.sh exited with status 1",
            snapshot="c" * 40,
            tree="d" * 40,
            file="iris_model.py",
            function="predict",
            kernel="python3",
            runtime="local",
            created_at=T0,
            started_at=T0,
            finished_at=T0.replace(second=4),
        )
        s.add_all([b1, b2])
        s.flush()
        d = Deployment(
            model_id=add.id,
            build_id=b1.id,
            status="deployed",
            replicas=2,
            created_at=T0,
            deployed_at=T0.replace(minute=31),
            env=json.dumps({}),
        )
        s.add(d)
        s.flush()
        s.add_all(
            [
                Replica(
                    deployment_id=d.id,
                    name=f"add-{add.id}-{d.id}-abcde",
                    status="running",
                    received=12,
                    processed=12,
                    success=11,
                    failure=1,
                    restarts=0,
                    started_at=None,
                ),
                Replica(
                    deployment_id=d.id,
                    name=f"add-{add.id}-{d.id}-fghij",
                    status="running",
                    received=9,
                    processed=9,
                    success=9,
                    restarts=1,
                    started_at=None,
                ),
            ]
        )
        s.commit()


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    home = tmp_path / "home"
    monkeypatch.setenv("CDSW_TUI_HOME", str(home))
    monkeypatch.delenv("CDSW_TUI_GATEWAY_PORT", raising=False)
    wb = Workbench(load_settings(home))
    wb.settings.gateway_port = 8787
    seed(wb, tmp_path)
    yield wb
    wb.close()


@pytest.fixture
def app(seeded: Workbench) -> WorkbenchApp:
    app = WorkbenchApp(seeded, start_controller=False)
    app.animation_level = "none"  # the tab underline slides; snapshots must not catch it mid-way
    return app
