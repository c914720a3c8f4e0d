"""Deployments with a real controller: rollouts, rollback, restart, scaling, crashes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from cdsw_tui.services import deployments, models, projects
from cdsw_tui.services.lock import state
from tests.conftest import Cli, replica_pid, stop_controller, write_project
from tests.helpers import traffic

CODE = """\
import os
import time

VERSION = {version}


def predict(args):
    time.sleep(args.get("s", 0))
    return {{"version": VERSION, "replica": os.environ["CDSW_REPLICA_ID"]}}
"""


@pytest.fixture
def project(wb, tmp_path: Path) -> Path:
    root = write_project(tmp_path / "proj", {"model.py": CODE.format(version=1)})
    projects.create(wb, "p", path=root)
    return root


def gateway(wb) -> str:
    return wb.settings.gateway_url + "/model"


def key(wb, ref: str = "p/m") -> str:
    return models.resolve(wb, ref).access_key


def call(wb, request: dict, ref: str = "p/m") -> httpx.Response:
    return httpx.post(gateway(wb), json={"accessKey": key(wb, ref), "request": request}, timeout=30)


def create(cli: Cli, *extra: str) -> None:
    cli("model", "create", "p/m", "--file", "model.py", "--function", "predict", "--wait", *extra)


def test_three_replicas_serve_three_slow_calls_at_once(cli: Cli, wb, project):
    create(cli, "--replicas", "3")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        start = time.monotonic()
        results = list(pool.map(lambda _: call(wb, {"s": 1.0}).json(), range(3)))
        elapsed = time.monotonic() - start
    assert len({r["ReplicaID"] for r in results}) == 3
    assert all(r["response"]["replica"] == r["ReplicaID"] for r in results)
    assert elapsed < 1.9  # in parallel, not one after the other


def test_rollback_without_a_failed_call(cli: Cli, wb, project):
    create(cli, "--replicas", "2")
    (project / "model.py").write_text(CODE.format(version=2))
    cli("build", "p/m", "--wait")
    with traffic(wb, "p/m") as (answers, failures):
        cli("deploy", "p/m", "--build", "2", "--wait")
        time.sleep(0.5)
        cli(
            "deploy", "p/m", "--build", "1", "--wait",
            "--env", "API_TOKEN=s3cret", "--env", "LEVEL=d",
        )  # fmt: skip
        time.sleep(0.5)
    seen = [a["response"]["version"] for a in answers]
    assert failures == []
    assert 1 in seen and 2 in seen and seen[-1] == 1
    listed = json.loads(cli("deployments", "p/m", "--json").out)
    assert [d["build"] for d in listed] == [1, 2, 1]
    assert [d["status"] for d in listed] == ["deployed", "stopped", "stopped"]
    assert listed[0]["env"] == {"API_TOKEN": "••••••", "LEVEL": "d"}  # the secret masked
    assert listed[1]["env"] == {}
    shown = json.loads(cli("model", "show", "p/m", "--json").out)
    assert (shown["build"], shown["newest_build"]) == (1, "2 (built)")  # what runs
    assert len({d["id"] for d in listed}) == 3


def test_kill_9_of_the_controller_then_answers_again_within_3_s(cli: Cli, wb, project, home: Path):
    """Its keeper starts it again: no command is typed, the gateway answers within 3 s,
    with the same deployment ids and the very same (adopted) replica processes."""
    create(cli, "--replicas", "2")
    before = {
        r.name: replica_pid(r)
        for r in deployments.replicas_of(
            wb, models.active_deployment(wb, models.resolve(wb, "p/m"))
        )
    }
    dep_ids = [d["id"] for d in json.loads(cli("deployments", "--json").out)]
    old = state(home).pid
    os.kill(old, signal.SIGKILL)
    start = time.monotonic()
    while True:
        try:
            r = call(wb, {})
            if r.status_code == 200 and state(home).pid != old:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() - start < 3, "no answer within 3 s"
        time.sleep(0.02)
    print(f"\nanswered again {time.monotonic() - start:.2f} s after kill -9")
    assert [d["id"] for d in json.loads(cli("deployments", "--json").out)] == dep_ids
    assert r.json()["ReplicaID"] in before  # adopted: the very same processes answer
    assert "killed by signal 9; starting it again" in (home / "logs" / "controller.out").read_text()


def test_two_deploys_at_once_one_wins(cli: Cli, wb, project, home: Path):

    cli("model", "create", "p/m", "--file", "model.py", "--function", "predict", "--no-deploy")
    cli("build", "p/m", "--wait")
    stop_controller(home)  # nothing moves a pending deployment on while we race
    model = models.resolve(wb, "p/m")
    barrier = threading.Barrier(2)

    def deploy(_: int) -> str:
        barrier.wait()
        try:
            return f"deployment {deployments.create(wb, model).id}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(deploy, range(2)))
    assert results[0].startswith("Conflict: a deployment of m is already in progress")
    assert results[1].startswith("deployment ")
    # and through the CLI: one clear line, nothing created
    loser = cli("deploy", "p/m", check=False, env={"CDSW_TUI_POLL_INTERVAL": "60"})
    if (
        loser.code
    ):  # the controller may already have deployed the first one; then this is a redeploy
        assert "already in progress" in loser.err and len(loser.err.strip().splitlines()) == 1


def test_import_error_fails_the_deployment_with_the_reason(cli: Cli, wb, project):
    (project / "broken.py").write_text(
        "import not_a_module_anywhere\n\ndef predict(args):\n    return 1\n"
    )
    cli("model", "create", "p/b", "--file", "broken.py", "--function", "predict", "--no-deploy")
    cli("build", "p/b", "--wait")
    result = cli("deploy", "p/b", "--wait", check=False)
    assert result.code == 1
    assert "ModuleNotFoundError: No module named 'not_a_module_anywhere'" in result.err
    d = json.loads(cli("deployments", "p/b", "--json").out)[0]
    assert d["status"] == "failed" and "not_a_module_anywhere" in d["reason"]
    assert "Traceback" in cli("logs", "p/b").out


def test_stop_drains_requests_in_flight(cli: Cli, wb, project):
    create(cli)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(call, wb, {"s": 1.5})
        time.sleep(0.3)
        cli("stop", "p/m", "--wait")
        assert slow.result().status_code == 200
    r = call(wb, {})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model.not_deployed"
    assert json.loads(cli("deployments", "p/m", "--json").out)[0]["status"] == "stopped"
    pids = [
        replica_pid(r)
        for r in deployments.replicas_of(wb, deployments.list_deployments(wb)[0], current=False)
    ]
    time.sleep(0.2)
    assert all(
        not Path(f"/proc/{pid}").exists()
        or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
        for pid in pids
    )


def test_restart_keeps_the_deployment_and_replaces_replicas(cli: Cli, wb, project):
    create(cli, "--replicas", "2")
    d = models.active_deployment(wb, models.resolve(wb, "p/m"))
    before = {r.name for r in deployments.replicas_of(wb, d)}
    restarted = cli("restart", "p/m", "--wait")  # before: no line said it was done
    assert restarted.out.splitlines()[-1] == f"deployment {d.id} restarted: 2 replicas replaced"
    after = {r.name for r in deployments.replicas_of(wb, d)}
    assert len(after) == 2 and not (after & before)
    assert models.active_deployment(wb, models.resolve(wb, "p/m")).id == d.id
    assert call(wb, {}).json()["ReplicaID"] in after


def test_scale_without_a_new_build(cli: Cli, wb, project):
    create(cli)
    d = models.active_deployment(wb, models.resolve(wb, "p/m"))
    up = cli("scale", "p/m", "3", "--wait")  # returns once exactly three run
    assert "scaling to 3 replicas" in up.out and "runs 3 replicas" in up.err
    rows = deployments.replicas_of(wb, d)
    assert len(rows) == 3 and {r.status for r in rows} == {"running"}
    down = cli("scale", "p/m", "1", "--wait")
    assert "scaling to 1 replica\n" in down.out and "runs 1 replica\n" in down.err
    rows = deployments.replicas_of(wb, d)
    assert len(rows) == 1 and rows[0].status == "running"
    assert call(wb, {}).status_code == 200
    assert len(deployments.list_deployments(wb)) == 1


def test_kill_9_during_a_deploy_leaves_no_orphan(cli: Cli, wb, project, home: Path):
    (project / "slow.py").write_text(
        "import time\ntime.sleep(2)\n\ndef predict(args):\n    return 'ready'\n"
    )
    cli("model", "create", "p/slow", "--file", "slow.py", "--function", "predict", "--no-deploy")
    cli("build", "p/slow", "--wait")
    cli("deploy", "p/slow", "--replicas", "2")
    model = models.resolve(wb, "p/slow")
    deadline = time.monotonic() + 20
    while not [
        r
        for r in deployments.replicas_of(wb, deployments.list_deployments(wb, model)[0])
        if r.handle
    ]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(state(home).pid, signal.SIGKILL)  # replicas are importing: the rollout is half done
    while state(home).running:
        time.sleep(0.02)
    first = deployments.list_deployments(wb, model)[0]
    assert first.status == "deploying"
    started = [
        replica_pid(r) for r in deployments.replicas_of(wb, first, current=False) if r.handle
    ]
    assert started
    from cdsw_tui.services import background

    background.ensure(wb)
    final = deployments.wait(wb, first, timeout=60)
    assert final.status == "deployed" and final.id == first.id
    assert call(wb, {}, "p/slow").json()["response"] == "ready"
    rows = deployments.replicas_of(wb, final, current=False)
    live = [r for r in rows if r.status == "running"]
    gone = [r for r in rows if r.status == "stopped"]
    assert len(live) == 2 and len(gone) == 2
    for pid in started:  # the half-started replicas of the dead controller were stopped
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_call_with_the_controller_down_starts_it_and_answers(cli: Cli, wb, project, home: Path):
    """The controller is gone, its replicas live on: call starts it, says so, answers."""
    from cdsw_tui.services.lock import state

    create(cli)
    stop_controller(home)
    assert not state(home).running
    result = cli("call", "p/m", "{}")
    assert "started the controller in the background" in result.err
    assert json.loads(result.out)["success"] is True
    assert state(home).running


def test_delete_stops_what_runs_then_deletes_in_one_step(cli: Cli, wb, project, home: Path):
    """Delete used to refuse a deployed model after its confirmation, and project delete
    to stop half-way; now the running deployments stop first, then everything goes."""
    from cdsw_tui.errors import NotFound

    cli("model", "create", "p/two", "--file", "model.py", "--function", "predict", "--wait")
    said = cli("model", "delete", "p/two", "--yes")
    assert "model p/two deleted" in said.out
    with pytest.raises(NotFound):
        models.resolve(wb, "p/two")
    create(cli)
    cli("model", "create", "p/idle", "--file", "model.py", "--function", "predict", "--no-deploy")
    pids = [
        replica_pid(r) for r in deployments.replicas_of(wb, deployments.list_deployments(wb)[0])
    ]
    assert pids and all(pids)
    cli("project", "delete", "p", "--yes")
    with pytest.raises(NotFound):
        models.resolve(wb, "p/m")
    assert deployments.list_deployments(wb) == []
    for pid in pids:  # its replicas were stopped, not orphaned
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )


def test_leaving_the_workbench_says_what_keeps_serving(cli: Cli, wb, project, home: Path, capsys):
    from cdsw_tui.cli import _still_serving

    _still_serving(wb)
    assert capsys.readouterr().err == ""  # nothing runs: nothing to say
    create(cli)
    _still_serving(wb)
    said = capsys.readouterr().err
    assert "1 model still serving" in said and "p/m" in said and "cdsw-tui stop p/m" in said


def test_a_redeploy_that_does_not_fit_in_memory_rolls_one_replica_at_a_time(
    cli: Cli, wb, project, monkeypatch: pytest.MonkeyPatch
):
    """LOCAL_MEMORY_MB 600: two replicas of 256 MB fit, new-before-old (1,024 MB) does
    not. Before: nothing on local refused a placement, so the redeploy ran four replicas
    at once. Now each replica reserves its --memory: one old replica makes room at a
    time, one serves throughout, and the reason says how it went; a model whose one
    replica cannot fit fails, naming the setting."""
    monkeypatch.setenv("CDSW_TUI_LOCAL_MEMORY_MB", "600")  # the controller reads it
    create(cli, "--replicas", "2", "--memory", "256")
    (project / "model.py").write_text(CODE.format(version=2))
    cli("build", "p/m", "--wait")
    with traffic(wb, "p/m") as (answers, failures):
        cli("deploy", "p/m", "--build", "2", "--wait")
        settled, deadline = len(answers), time.monotonic() + 60
        while len({a["ReplicaID"] for a in answers[settled:]}) < 2:
            assert time.monotonic() < deadline, "the second new replica never served"
            time.sleep(0.1)
    assert failures == [], failures[:3]
    versions = [a["response"]["version"] for a in answers]
    assert 1 in versions and all(v == 2 for v in versions[settled:])
    latest = json.loads(cli("deployments", "p/m", "--json").out)[0]
    assert latest["status"] == "deployed", latest
    assert "one replica at a time" in latest["reason"], latest
    assert "not enough memory on this machine" in latest["reason"], latest
    big = cli("model", "create", "p/big", "--file", "model.py", "--function", "predict",
              "--memory", "700", "--wait", check=False)  # fmt: skip
    assert big.code != 0 and "Traceback" not in big.err
    assert "asks 700 MB" in big.err and "LOCAL_MEMORY_MB" in big.err, big.err
