"""Ten minutes of mixed traffic while things go wrong (issue 24): 1 to 50 callers against
a model of 2 to 4 local replicas, while replicas are killed (SIGKILL), the controller is
killed (SIGKILL; its keeper starts it again), the model is redeployed and scaled, and a
build fills the home's small disk (a tmpfs, where this runs as root). Everything is on
127.0.0.1 and stops by itself.

    python bench/soak.py [--minutes 10]

It prints a table: calls, failures by code, and for each kind of fault how often it came,
the time to recover (median and worst) and the calls that failed meanwhile."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

CODE = """\
import os

VERSION = int(os.environ.get("CDSW_BUILD_NUMBER", "0"))


def add(args):
    return {"sum": args["a"] + args["b"], "build": VERSION}
"""
FILL = """\
if [ -f fill-the-disk ]; then
python3 - <<'PY' || { rm -f big; exit 1; }
with open("big", "wb") as fh:
    while True:
        fh.write(b"x" * (1 << 20))
        fh.flush()
PY
fi
"""
LEVELS = (1, 5, 20, 50)  # callers, changed every 30 s


class Soak:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.mounted = False
        if os.geteuid() == 0:
            mount = ["mount", "-t", "tmpfs", "-o", "size=600m,mode=0700", "tmpfs", str(self.home)]
            self.mounted = subprocess.run(mount, capture_output=True).returncode == 0
        self.port = port = port_below_ephemeral()
        (self.home / "config.toml").write_text(
            f"gateway_port = {port}\npoll_interval = 0.05\nbusy_timeout = 10\nmin_free_mb = 5\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_TUI_")}
        self.env["CDSW_TUI_HOME"] = str(self.home)
        self.project = root / "project"
        self.project.mkdir()
        (self.project / "m.py").write_text(CODE)
        (self.project / "cdsw-build.sh").write_text(FILL)
        subprocess.run(["git", "init", "-q", str(self.project)], check=True)
        self.url = f"http://127.0.0.1:{port}/model"
        self.level = 1
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.successes: list[float] = []  # monotonic times of answered calls
        self.failures: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.build = 1  # the build deployed

    def cli(self, *args: str, check: bool = True, env: dict | None = None) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "cdsw_tui", *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=600,
        )
        if check and out.returncode:
            raise SystemExit(f"cdsw-tui {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    # -- traffic ----------------------------------------------------------------------

    def caller(self, index: int, key: str) -> None:
        body = {"accessKey": key, "request": {"a": index, "b": 1}}
        with httpx.Client(timeout=30, trust_env=False) as client:
            while not self.stop.is_set():
                if index >= self.level:
                    time.sleep(0.05)
                    continue
                try:
                    r = client.post(self.url, json=body)
                    code = "ok" if r.status_code == 200 else r.json()["error"]["code"]
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    code = f"connection ({type(exc).__name__})"
                    time.sleep(0.05)
                now = time.monotonic()
                with self.lock:
                    self.outcomes[code] += 1
                    if code == "ok":
                        self.successes.append(now)
                    else:
                        self.failures.append((now, code))

    def failed_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t, _ in self.failures if start <= t <= end)

    # -- faults -----------------------------------------------------------------------

    def ready(self) -> int:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/health/p/m", timeout=2, trust_env=False)
            return int(r.json()["replicas"]["ready"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return 0

    def wanted(self) -> int:
        return json.loads(self.cli("deployments", "p/m", "--json"))[0]["replicas"]

    def until(self, predicate, limit: float = 120) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > limit:
                return float("inf")
            time.sleep(0.05)
        return time.monotonic() - start

    def record(self, kind: str, began: float, recovered: float) -> None:
        self.events.append(
            {
                "kind": kind,
                "recover": recovered,
                "failed": self.failed_between(began, began + max(recovered, 0) + 0.5),
            }
        )

    def kill_replica(self) -> None:
        wanted = self.wanted()
        pids = [
            int(h.split(":")[0]) for h in replica_handles(self.home) if h.split(":")[0].isdigit()
        ]
        if not pids:
            return
        began = time.monotonic()
        try:
            os.killpg(random.choice(pids), signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)
        self.record("replica killed", began, self.until(lambda: self.ready() >= wanted))

    def kill_controller(self) -> None:
        pid = json.loads(self.cli("status", "--json"))["controller"]["pid"]
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def answered() -> bool:
            with self.lock:
                return bool(self.successes) and self.successes[-1] > began + 0.05

        self.record("controller killed", began, self.until(answered))

    def redeploy(self) -> None:
        self.build = 3 - self.build  # between builds 1 and 2
        began = time.monotonic()
        self.cli("deploy", "p/m", "--build", str(self.build), "--wait", check=False)
        self.record("redeploy", began, time.monotonic() - began)

    def scale(self) -> None:
        began = time.monotonic()
        self.cli("scale", "p/m", str(random.choice((2, 3, 4))), "--wait", check=False)
        self.record("scale", began, time.monotonic() - began)

    def fill_disk(self) -> None:
        """A build whose step writes until the disk is full (the project says so with a
        file its cdsw-build.sh looks for), then gives the space back and fails."""
        flag = self.project / "fill-the-disk"
        flag.write_text("")
        began = time.monotonic()
        try:
            out = subprocess.run(
                [sys.executable, "-m", "cdsw_tui", "build", "p/m", "--wait"],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=600,
            )
        finally:
            flag.unlink()
        took = time.monotonic() - began
        said = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "built"
        self.events.append(
            {
                "kind": "a build fills the disk",
                "recover": took,
                "failed": self.failed_between(began, began + took),
                "said": said,
            }
        )

    # -- the run ------------------------------------------------------------------------

    def run(self, minutes: float) -> None:
        self.cli("project", "create", "p", "--path", str(self.project))
        self.cli(
            "model",
            "create",
            "p/m",
            "--file",
            "m.py",
            "--function",
            "add",
            "--replicas",
            "2",
            "--wait",
        )
        self.cli("build", "p/m", "--wait")  # build 2, for redeploys between builds
        self.cli("deploy", "p/m", "--build", "1", "--wait")
        key = json.loads(self.cli("model", "show", "p/m", "--show-key", "--json"))["access_key"]
        callers = [threading.Thread(target=self.caller, args=(i, key)) for i in range(max(LEVELS))]
        for t in callers:
            t.start()
        end = time.monotonic() + minutes * 60
        plan = [  # (every seconds, what)
            (20, self.kill_replica),
            (90, self.kill_controller),
            (120, self.redeploy),
            (75, self.scale),
        ]
        due = {i: time.monotonic() + every / 2 for i, (every, _) in enumerate(plan)}
        filled = False
        level_at = time.monotonic()
        started = time.monotonic()
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                if now - level_at > 30:
                    self.level, level_at = random.choice(LEVELS), now
                if not filled and now - started > minutes * 30 and self.mounted:
                    self.fill_disk()
                    filled = True
                for i, (every, act) in enumerate(plan):
                    if time.monotonic() >= due[i] and time.monotonic() < end:
                        act()
                        due[i] = time.monotonic() + every
                time.sleep(0.2)
        finally:
            self.stop.set()
            for t in callers:
                t.join()

    def report(self, minutes: float) -> str:
        total = sum(self.outcomes.values())
        lines = [
            f"soak: {minutes:g} min, 1 to {max(LEVELS)} callers, local runtime, "
            f"home on a {'600 MB tmpfs' if self.mounted else 'plain folder (not root: no disk fill)'}",
            "",
            "| calls | answered | failed | failures by code |",
            "| --- | --- | --- | --- |",
            f"| {total:,} | {self.outcomes['ok']:,} | {total - self.outcomes['ok']:,} | "
            + (
                ", ".join(f"{c} {n:,}" for c, n in self.outcomes.most_common() if c != "ok")
                or "none"
            )
            + " |",
            "",
            "| fault | times | recovered in (median / worst) | calls failed meanwhile |",
            "| --- | --- | --- | --- |",
        ]
        kinds: dict[str, list[dict]] = {}
        for e in self.events:
            kinds.setdefault(e["kind"].split(" (")[0], []).append(e)
        for kind, events in kinds.items():
            times = [e["recover"] for e in events]
            lines.append(
                f"| {kind} | {len(events)} | {statistics.median(times):.2f} s / {max(times):.2f} s "
                f"| {sum(e['failed'] for e in events)} |"
            )
        restarts = restarts_of(self)
        lines += ["", f"replica restarts recorded: {restarts}"]
        for e in self.events:
            if "said" in e:
                lines.append(f"the disk-filling build said: {e['said']}")
        return "\n".join(lines)

    def close(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "cdsw_tui", "stop", "p/m", "--wait"],
            capture_output=True, env=self.env, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "cdsw_tui", "controller", "stop"],
            capture_output=True, env=self.env, timeout=120,
        )  # fmt: skip
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.home)], capture_output=True)


def replica_handles(home: Path) -> list[str]:
    handles = []
    for record in (home / "run" / "local").glob("*.json"):
        try:
            handles.append(json.loads(record.read_text())["handle"])
        except (OSError, ValueError, KeyError):
            continue
    return handles


def restarts_of(s: Soak) -> int:
    import sqlite3

    con = sqlite3.connect(s.home / "cdsw.db")
    try:
        return int(con.execute("SELECT coalesce(sum(restarts), 0) FROM replica").fetchone()[0])
    finally:
        con.close()


def port_below_ephemeral() -> int:
    """A free port under the kernel's ephemeral range: a controller started again after
    its kill must find its port free, and an outgoing connection could take one above."""
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        soak = Soak(Path(tmp))
        try:
            soak.run(args.minutes)
            print(soak.report(args.minutes))
        finally:
            soak.close()


if __name__ == "__main__":
    main()
