"""Jobs and runs on the local runtime, through the real CLI and a real controller: the
script at /home/cdsw with the project read-write, its output and status, variables,
one run of a job at a time, cancel and timeouts that stop all of it, --after chains,
schedules, and a run interrupted by its controller's death."""

from __future__ import annotations

import os
import shutil
import signal
import time
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from cdsw_tui.controller import job_runner
from cdsw_tui.engine.backends.local import sandbox
from cdsw_tui.services import jobs, runs
from cdsw_tui.services.lock import state
from tests.conftest import stop_controller, write_project
from tests.helpers import one_line_error

TRAIN = """\
import json, os, sys
import cdsw, cml.models_v1  # importable in a run, as in a CML session
print("args", sys.argv[1:])
print("cwd", os.getcwd(), "home", os.environ["HOME"])
print("vars", os.environ.get("FOO"), os.environ.get("BAR"), os.environ["CDSW_PROJECT"])
with open("model.json", "w") as fh:
    json.dump({"weight": 2}, fh)
print("oops", file=sys.stderr)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""

SLEEPER = """\
import subprocess, sys, time
subprocess.Popen(["sleep", "300"])  # a child
subprocess.Popen(["setsid", "sleep", "301"])  # and one that left the process group
print("started", flush=True)
time.sleep(300)
"""


@pytest.fixture
def project(cli, tmp_path: Path) -> Path:
    root = write_project(
        tmp_path / "proj",
        {"train.py": TRAIN, "sleeper.py": SLEEPER, "fail.py": "raise SystemExit(2)\n"},
    )
    cli("project", "create", "p", "--path", str(root))
    return root


def marked(home: Path) -> list[int]:
    """Processes of any run of this home (their marker in the environment)."""
    found = []
    needle = f"CDSW_TUI_RUN={home}:".encode()
    for pid in (int(n) for n in os.listdir("/proc") if n.isdigit()):
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def history(wb, ref: str) -> list[dict]:
    """What ``job runs REF --json`` prints, read in this process (a poll loop of CLI
    starts would cost a second each)."""
    return [runs.summary(wb, r) for r in runs.list_runs(wb, jobs.resolve(wb, ref))]


def log_of(wb, ref: str) -> str:
    run = runs.get(wb, jobs.resolve(wb, ref))
    return "\n".join(runs.follow_log(wb, run, follow=False))


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_one_off_run_prints_its_output_writes_the_project_and_exits_with_its_status(
    cli, project, home
):
    result = cli("run", "p", "train.py", "3", "--flag", check=False, timeout=180)
    assert result.code == 3, result.err
    assert "args ['3', '--flag']" in result.out  # options after SCRIPT are the script's
    assert "[cdsw-tui]" not in result.out and "[cdsw-tui]" in result.err  # ours apart
    assert "oops" in result.out  # the script's stderr is its output too
    assert "error: run 1 failed: the script exited with status 3" in result.err
    written = project / "model.json"
    assert written.read_text() == '{"weight": 2}'
    # stored as the project owner's, whoever the run ran as
    assert written.stat().st_uid == project.stat().st_uid
    if not sandbox.unavailable():
        assert "cwd /home/cdsw home /home/cdsw" in result.out
    ok = cli("run", "p", "train.py", timeout=120)
    assert "args []" in ok.out
    assert "run 2 succeeded" in ok.err
    assert not marked(home)


def test_a_job_sees_global_project_and_job_variables_and_keeps_its_history(cli, project):
    cli("env", "set", "FOO=global", "BAR=global")
    cli("env", "set", "--project", "p", "FOO=project", "BAR=project")
    cli("job", "create", "p/train", "--script", "train.py", "--env", "FOO=job")
    cli("job", "run", "p/train", "--wait", timeout=180)
    done = cli("job", "run", "p/train", "--wait")
    assert "run 2 of p/train queued" in done.out
    listed = cli("job", "runs", "p/train", "--json").json()
    assert [(r["number"], r["status"], r["exit_code"]) for r in listed] == [
        (1, "succeeded", 0),
        (2, "succeeded", 0),
    ]
    log = cli("job", "log", "p/train", "1").out
    assert "vars job project p" in log
    assert (
        cli("jobs", "--json").json()[0] | {"name": "train", "project": "p"}
        == cli("jobs", "p", "--json").json()[0]
    )
    assert cli("jobs", "--json").json()[0]["last_status"] == "succeeded"
    failing = cli("job", "create", "p/fail", "--script", "fail.py")
    assert failing.code == 0
    bad = cli("job", "run", "p/fail", "--wait", check=False)
    assert bad.code == 1
    assert one_line_error(bad) == "error: run 1 failed: the script exited with status 2"


def test_one_run_of_a_job_at_a_time_and_cancel_stops_all_of_it(cli, project, home, wb):
    cli("job", "create", "p/sleep", "--script", "sleeper.py")
    cli("job", "run", "p/sleep")
    wait_for(lambda: "started" in log_of(wb, "p/sleep"), 120, "the run to start")
    assert len(marked(home)) >= 3  # the script, its child, its setsid child
    again = cli("job", "run", "p/sleep", check=False)
    assert again.code == 1
    assert one_line_error(again) == (
        "error: job sleep already has run 1 running; one run of a job at a time"
    )
    cli("job", "cancel", "p/sleep")
    wait_for(
        lambda: history(wb, "p/sleep")[0]["status"] == "cancelled",
        30,
        "the cancel",
    )
    assert not marked(home), "a process of the cancelled run survived"


def test_a_run_past_its_timeout_is_stopped_with_its_children(cli, project, home):
    cli("run", "p", "train.py", timeout=120)  # the project's environment, made once
    result = cli("run", "--timeout", "1", "p", "sleeper.py", check=False, timeout=120)
    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        "error: run 2 timedout: the run passed its timeout of 1 s"
    )
    assert not marked(home)


def test_jobs_after_a_job_run_when_its_run_succeeded(cli, project, wb):
    cli("job", "create", "p/a", "--script", "train.py")
    cli("job", "create", "p/b", "--script", "train.py", "--after", "a")
    cli("job", "create", "p/c", "--script", "train.py", "--after", "b")
    cli("job", "create", "p/fail", "--script", "fail.py")
    cli("job", "create", "p/never", "--script", "train.py", "--after", "fail")
    cli("job", "run", "p/a", "--wait", timeout=180)

    def chain_done():
        c = history(wb, "p/c")
        return c and c[0]["status"] == "succeeded" and c

    c_runs = wait_for(chain_done, 60, "the chain a -> b -> c")
    assert c_runs[0]["trigger"] == "after b run 1"
    assert cli("job", "runs", "p/b", "--json").json()[0]["trigger"] == "after a run 1"
    cli("job", "run", "p/fail", "--wait", check=False)
    time.sleep(1)
    assert cli("job", "runs", "p/never", "--json").json() == []  # a failure starts nothing


def test_a_job_refuses_bad_input_in_one_line(cli, project, tmp_path):
    (tmp_path / "outside.py").write_text("print(1)\n")
    cases = {
        ("--script", "nope.py"): "error: file 'nope.py' does not exist in the project",
        ("--script", "../outside.py"): "error: file '../outside.py' is outside the project",
        ("--script", "README"): "error: file 'README' does not exist in the project",
        ("--script", "train.py", "--schedule", "daily"): (
            "error: schedule 'daily' is not a cron expression (minute hour day month "
            "weekday, e.g. '0 3 * * *')"
        ),
        ("--script", "train.py", "--after", "ghost"): (
            "error: no job named 'ghost' in project p (see 'cdsw-tui jobs')"
        ),
        ("--script", "train.py", "--timeout", "-1"): (
            "error: timeout must not be negative (0: none)"
        ),
    }
    (project / "notes.txt").write_text("x")
    cases[("--script", "notes.txt")] = (
        "error: script 'notes.txt' must be a Python (.py) or R (.R) file"
    )
    for args, message in cases.items():
        result = cli("job", "create", "p/j", *args, check=False)
        assert result.code == 1 and one_line_error(result) == message, (args, result.err)
    cli("job", "create", "p/j", "--script", "train.py")
    dup = cli("job", "create", "p/j", "--script", "train.py", check=False)
    assert one_line_error(dup) == "error: project p already has a job named 'j'"
    assert cli("jobs", "--json").json()[0]["name"] == "j"  # nothing else was made


def test_a_schedule_fires_on_a_controllable_clock(cli, project, wb):
    """fire_schedules against the real store, with the clock in the test's hands."""
    cli("job", "create", "p/nightly", "--script", "train.py", "--schedule", "0 3 * * *")
    job = jobs.resolve(wb, "p/nightly")
    first = job.next_run_at.replace(tzinfo=UTC)
    assert (first.hour, first.minute) == (3, 0)
    assert job_runner.fire_schedules(wb, first - timedelta(seconds=1)) == []
    fired = job_runner.fire_schedules(wb, first)
    assert [(r.number, r.trigger, r.status) for r in fired] == [(1, "schedule", "queued")]
    job = jobs.resolve(wb, "p/nightly")
    assert job.next_run_at.replace(tzinfo=UTC) == first + timedelta(days=1)
    # the next night, with the first run still queued: skipped, and the clock moves on
    assert job_runner.fire_schedules(wb, first + timedelta(days=1)) == []
    assert len(runs.list_runs(wb, job)) == 1
    assert jobs.resolve(wb, "p/nightly").next_run_at.replace(tzinfo=UTC) == first + timedelta(
        days=2
    )


def test_the_controller_fires_a_schedule_by_itself(cli, project, wb):
    cli("job", "create", "p/often", "--script", "train.py", "--schedule", "* * * * * */2")
    cli("controller", "start")
    succeeded = lambda: [r for r in history(wb, "p/often") if r["status"] == "succeeded"]  # noqa: E731
    wait_for(lambda: len(succeeded()) >= 2, 60, "two scheduled runs")
    assert {r["trigger"] for r in succeeded()} == {"schedule"}


def test_a_run_interrupted_by_its_controller_s_death_fails_and_nothing_of_it_survives(
    cli, project, home, wb
):
    cli("job", "create", "p/sleep", "--script", "sleeper.py")
    cli("job", "run", "p/sleep")
    wait_for(lambda: "started" in log_of(wb, "p/sleep"), 120, "the run to start")
    old = state(home).pid
    stop_controller(home, signal.SIGKILL)  # its keeper starts another one
    wait_for(lambda: state(home).running and state(home).pid != old, 30, "a new controller")
    final = wait_for(
        lambda: (r := history(wb, "p/sleep")[0])["status"] != "running" and r,
        30,
        "the run to end",
    )
    assert (final["status"], final["reason"]) == (
        "failed",
        "interrupted (the controller stopped)",
    )
    wait_for(lambda: not marked(home), 10, "the run's processes to be stopped")
    assert not list((home / "run" / "runs").iterdir())  # its scratch folder went too


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed here")
def test_an_r_script_runs_through_rscript_with_library_cdsw(cli, tmp_path):
    root = write_project(
        tmp_path / "rproj",
        {
            "train.R": """\
            library(cdsw)
            args <- commandArgs(trailingOnly = TRUE)
            cat("r args", args, "\\n")
            writeLines("fitted", "fit.txt")
            track.metric("rmse", 0.25)
            answer <- call.model("not-a-key", list(a = 1))  # the gateway answers
            cat("gateway said", answer$error$code, "\\n")
            quit(status = 5)
            """
        },
    )
    cli("project", "create", "rp", "--path", str(root))
    result = cli("run", "rp", "train.R", "x", "y", check=False, timeout=120)
    assert result.code == 5, result.err
    assert "r args x y" in result.out
    assert "cdsw: metric rmse = 0.25" in result.out
    assert "gateway said auth.invalid_key" in result.out
    assert (root / "fit.txt").read_text() == "fitted\n"
