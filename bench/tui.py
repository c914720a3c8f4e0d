"""The workbench under load, driven with Pilot in this process.

1. Time to the first screen (the projects table filled) and resident memory, with a
   store of 200 projects, 2,000 models and 20,000 builds; baseline: an empty store.
2. With a replica log growing by 2,000 lines a second for 10 s: key-press response
   (switching tabs) and how late the newest line reaches the log pane; baseline: the
   same key presses with a quiet log.

    python bench/tui.py [--seconds 10] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from cdsw_tui.app import WorkbenchApp
from cdsw_tui.config import load_settings
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Deployment, Model, Project, Replica

WRITER = r"""
import sys, time
path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with open(path, "a", buffering=1) as fh:
    start = time.time(); n = 0
    while time.time() - start < seconds:
        now = time.time()
        target = int((now - start) * rate)
        while n < target:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".000Z"
            fh.write(f"{stamp} stdout t={time.time():.6f} line {n} of a chatty model\n")
            n += 1
        time.sleep(0.005)
"""


def make_store(home: Path, projects: int, models_per: int, builds_per: int) -> Workbench:
    wb = Workbench(load_settings(home))
    now = datetime.now(UTC)
    with wb.store.engine.begin() as conn:
        conn.execute(
            insert(Project),
            [
                {
                    "id": p + 1,
                    "name": f"project-{p:03d}",
                    "path": f"/srv/p{p}",
                    "runtime": "local",
                    "engine": "",
                    "created_at": now,
                }
                for p in range(projects)
            ],
        )
        model_rows, build_rows = [], []
        mid = 0
        for p in range(projects):
            for m in range(models_per):
                mid += 1
                model_rows.append(
                    {
                        "id": mid,
                        "project_id": p + 1,
                        "name": f"model-{m}",
                        "slug": f"model-{m}",
                        "file": "m.py",
                        "function": "predict",
                        "kernel": "python3",
                        "access_key": f"{mid:032d}",
                        "created_at": now,
                        "updated_at": now,
                        "description": "",
                        "example_input": "",
                        "example_output": "",
                        "auth_enabled": False,
                        "replicas": 1,
                        "cpu": 1.0,
                        "memory": 2048,
                        "gpu": 0,
                    }
                )
                for b in range(builds_per):
                    build_rows.append(
                        {
                            "model_id": mid,
                            "number": b + 1,
                            "status": "built",
                            "file": "m.py",
                            "function": "predict",
                            "kernel": "python3",
                            "runtime": "local",
                            "snapshot": "a" * 40,
                            "created_at": now,
                            "reason": "",
                            "comment": "",
                            "tree": "",
                            "engine": "",
                            "artifact": "",
                            "env_path": "",
                            "dep_key": "",
                            "dep_reused": False,
                            "warnings": "",
                            "cancel_requested": False,
                            "deploy_request": "",
                        }
                    )
        if model_rows:
            conn.execute(insert(Model), model_rows)
        for i in range(0, len(build_rows), 5000):
            conn.execute(insert(Build), build_rows[i : i + 5000])
    return wb


async def first_screen(wb: Workbench, expected_rows: int) -> float:
    from textual.widgets import DataTable

    start = time.perf_counter()
    app = WorkbenchApp(wb, start_controller=False)
    async with app.run_test(size=(120, 40)) as pilot:
        while True:
            tables = app.screen.query(DataTable)
            if tables and tables.first().row_count >= expected_rows:
                break
            await pilot.pause(0.005)
        return time.perf_counter() - start


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def keys_and_lag(
    wb: Workbench, log_path: Path, seconds: float, rate: int
) -> tuple[list[float], list[float]]:
    from textual.widgets import TabbedContent

    from cdsw_tui.widgets.log_view import LogView

    app = WorkbenchApp(wb, start_controller=False)
    key_times: list[float] = []
    lags: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_model("demo/chatty", "monitoring")
        await pilot.pause(0.5)
        writer = None
        if rate:
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(log_path), str(rate), str(seconds)]
            )
        view = app.screen.query_one("#replica-log", LogView)
        tabs = app.screen.query_one(TabbedContent)
        end = time.monotonic() + seconds
        keys = [("3", "deployments"), ("4", "monitoring")]
        i = lost = 0
        while time.monotonic() < end:
            key, tab = keys[i % 2]
            i += 1
            t0 = time.perf_counter()
            app.simulate_key(key)  # no waiting for idle, unlike pilot.press
            while tabs.active != tab and time.perf_counter() - t0 < 5:
                await asyncio.sleep(0.001)
            if tabs.active != tab:
                lost += 1  # counted, not waited for forever: the benchmark stops by itself
                continue
            key_times.append(time.perf_counter() - t0)
            if tab == "monitoring":  # a hidden log view pauses: its lag counts when shown
                await pilot.pause(0.1)
            if rate and tab == "monitoring" and view.buffer:
                last = view.buffer[-1]
                if "t=" in last:
                    lags.append(time.time() - float(last.split("t=", 1)[1].split()[0]))
            await pilot.pause(0.1)
        if writer is not None:
            writer.wait()
    if lost:
        print(f"  {lost} key presses did not switch the tab within 5 s")
    return key_times, lags


def seed_chatty(wb: Workbench) -> Path:
    now = datetime.now(UTC)
    with wb.store.session() as s:
        p = Project(name="demo", path="/srv/demo")
        s.add(p)
        s.flush()
        m = Model(
            project_id=p.id,
            name="chatty",
            slug="chatty",
            file="m.py",
            function="predict",
            access_key="c" * 32,
        )
        s.add(m)
        s.flush()
        b = Build(
            model_id=m.id,
            number=1,
            status="built",
            file="m.py",
            function="predict",
            kernel="python3",
            runtime="local",
            created_at=now,
        )
        s.add(b)
        s.flush()
        d = Deployment(model_id=m.id, build_id=b.id, status="deployed", deployed_at=now)
        s.add(d)
        s.flush()
        s.add(Replica(deployment_id=d.id, name=f"chatty-{m.id}-{d.id}-aaaaa", status="running"))
        s.commit()
        path = (
            wb.home
            / "logs"
            / "replicas"
            / f"m{m.id}"
            / f"d{d.id}"
            / f"chatty-{m.id}-{d.id}-aaaaa.log"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CDSW_TUI_HOME"] = str(Path(tmp) / "empty")
        empty = make_store(Path(tmp) / "empty", 1, 0, 0)
        base = asyncio.run(first_screen(empty, 1))
        big = make_store(Path(tmp) / "big", 200, 10, 10)
        os.environ["CDSW_TUI_HOME"] = str(Path(tmp) / "big")
        t = asyncio.run(first_screen(big, 200))
        print("first screen (projects table filled)")
        print(f"  1 project                                 {base:6.2f} s")
        print(
            f"  200 projects, 2,000 models, 20,000 builds {t:6.2f} s   ratio {t / base:4.2f}   (target < 1.5 s)"
        )
        print(f"  peak resident memory of this process      {rss_mb():6.0f} MB  (target < 150 MB)")

        chatty = Workbench(load_settings(Path(tmp) / "chatty"))
        os.environ["CDSW_TUI_HOME"] = str(Path(tmp) / "chatty")
        log_path = seed_chatty(chatty)
        quiet, _ = asyncio.run(keys_and_lag(chatty, log_path, min(3.0, args.seconds), 0))
        busy, lags = asyncio.run(keys_and_lag(chatty, log_path, args.seconds, args.rate))
        print(f"log pane, replica writing {args.rate} lines/s for {args.seconds:g} s")
        print(
            f"  key press, quiet log       p50 {ms(quiet, 0.5):6.1f} ms   p99 {ms(quiet, 0.99):6.1f} ms"
        )
        print(
            f"  key press, busy log        p50 {ms(busy, 0.5):6.1f} ms   p99 {ms(busy, 0.99):6.1f} ms   "
            f"ratio {statistics.median(busy) / statistics.median(quiet):4.2f}   (target < 100 ms)"
        )
        print(
            f"  newest line's delay        p50 {ms(lags, 0.5):6.1f} ms   max {ms(lags, 1.0):6.1f} ms   "
            f"(target < 500 ms)"
        )
        print(f"  peak resident memory       {rss_mb():6.0f} MB")


if __name__ == "__main__":
    main()
