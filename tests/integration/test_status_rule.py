"""SPEC §1's model status, the same in every listing (real SQLite store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdsw_tui.config import load_settings
from cdsw_tui.services import models, readmodels
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Deployment, Model, Project


@pytest.mark.parametrize(
    ("builds", "deployments", "expected"),
    [
        ([], [], "new"),
        (["building"], [], "building"),
        (["built"], [], "built"),
        (["built", "failed"], [], "failed"),
        (["cancelled"], [], "failed"),
        (["built"], ["failed"], "failed"),  # its only deployment failed: not "stopped"
        (["built"], ["failed", "stopped"], "stopped"),
        (["built"], ["stopped", "failed"], "failed"),
        (["built"], ["stopped", "deployed"], "deployed"),
        (["built", "building"], ["stopped"], "stopped"),
    ],
)
def test_every_listing_follows_one_rule(tmp_path: Path, builds, deployments, expected):
    home = tmp_path / "home"
    home.mkdir()
    wb = Workbench(load_settings(home))
    try:
        with wb.store.session() as s:
            p = Project(name="p", path=str(tmp_path))
            s.add(p)
            s.flush()
            m = Model(
                project_id=p.id, name="m", slug="m", file="f.py", function="f", access_key="k" * 32
            )
            s.add(m)
            s.flush()
            made = []
            for n, status in enumerate(builds, 1):
                b = Build(model_id=m.id, number=n, status=status, file="f.py", function="f",
                          kernel="python3", runtime="local")  # fmt: skip
                s.add(b)
                s.flush()
                made.append(b)
            for status in deployments:
                s.add(Deployment(model_id=m.id, build_id=made[0].id, status=status))
            s.commit()
        model = models.resolve(wb, "p/m")
        assert models.status(wb, model) == expected
        assert [row.status for row in readmodels.models(wb)] == [expected]
    finally:
        wb.close()
