"""The same add(a, b) behind cdsw-tui's gateway and behind the serving tools its users
compare it with, measured by one client, interleaved, at c=1 and c=8.

    python bench/peers.py [--seconds 2] [--rounds 3] [--only raw,cdsw-tui,bentoml,...]

Each peer is installed into its own virtual environment under a cache folder
(``$CDSW_TUI_BENCH_CACHE``, default ``~/.cache/cdsw-tui-bench/peers``) the first time;
a peer that cannot be installed or started is skipped with a line that says why. The
baseline ("raw") is the replica runner alone on a loopback port, speaking plain HTTP:
one hop, standard library only. Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from _common import Figures, Scratch, free_port, https_scratch, load, raw_replica, tcp
from _common import wait_answer as common_wait_answer
from gateway import add_served

CACHE = Path(
    os.environ.get("CDSW_TUI_BENCH_CACHE", Path.home() / ".cache" / "cdsw-tui-bench" / "peers")
)
ADD_PY = "def add(args):\n    return args['a'] + args['b']\n"

BENTO_SERVICE = """\
import bentoml


@bentoml.service
class Adder:
    @bentoml.api
    def add(self, a: int, b: int) -> int:
        return a + b
"""

MLFLOW_SAVE = """\
import sys

import mlflow.pyfunc


class Add(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return (model_input["a"] + model_input["b"]).tolist()


mlflow.pyfunc.save_model(sys.argv[1], python_model=Add())
"""

RAY_APP = """\
import sys
import time

import ray
from ray import serve


@serve.deployment(max_ongoing_requests=1)
class Add:
    async def __call__(self, request):
        body = await request.json()
        return body["a"] + body["b"]


ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(Add.bind(), route_prefix="/")
while True:
    time.sleep(1)
"""

PEERS: dict[str, list[str]] = {
    "bentoml": ["bentoml>=1.4,<1.5"],
    "mlflow": ["mlflow-skinny>=3,<4", "uvicorn", "fastapi", "pandas"],
    "ray": ["ray[serve]>=2.40"],
}


@dataclass
class Target:
    name: str
    address: str
    path: str
    body: bytes
    rounds: dict[int, list[Figures]] = field(default_factory=dict)


class Skipped(Exception):
    pass


def venv(name: str) -> Path:
    """The peer's virtual environment, made and filled once."""
    folder = CACHE / name
    marker = folder / ".installed"
    if marker.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"  installing {name} into {folder} (once) ...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(folder)],
        [str(folder / "bin" / "pip"), "install", "-q", *PEERS[name]],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise Skipped(f"could not install {name}: {last}")
    marker.write_text(" ".join(PEERS[name]))
    return folder


def wait_answer(
    address: str, path: str, body: bytes, proc: subprocess.Popen, timeout: float
) -> None:
    try:
        common_wait_answer(address, "POST", path, body, proc, timeout)
    except RuntimeError as exc:
        raise Skipped(str(exc)) from None


def start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def peer_env(folder: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PATH=f"{folder / 'bin'}:{os.environ.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
        BENTOML_DO_NOT_TRACK="true",
        MLFLOW_TRACKING_URI="file:///dev/null",
        PYTHONDONTWRITEBYTECODE="1",
    )


def start_bentoml(work: Path, stops: list[Callable[[], None]]) -> Target:
    folder = venv("bentoml")
    (work / "bento_service.py").write_text(BENTO_SERVICE)
    port = free_port()
    proc = start(
        [str(folder / "bin" / "bentoml"), "serve", "bento_service:Adder",
         "--host", "127.0.0.1", "--port", str(port)],
        peer_env(folder), work, work / "bentoml.log",
    )  # fmt: skip
    stops.append(lambda: stop(proc))
    body = json.dumps({"a": 3, "b": 5}).encode()
    wait_answer(tcp(port), "/add", body, proc, 180)
    return Target("BentoML", tcp(port), "/add", body)


def start_mlflow(work: Path, stops: list[Callable[[], None]]) -> Target:
    folder = venv("mlflow")
    model = work / "mlflow-model"
    (work / "save_model.py").write_text(MLFLOW_SAVE)
    env = peer_env(folder)
    saved = subprocess.run(
        [str(folder / "bin" / "python"), "save_model.py", str(model)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if saved.returncode:
        raise Skipped(
            f"could not save the model: {(saved.stderr.strip().splitlines() or [''])[-1]}"
        )
    port = free_port()
    proc = start(
        [str(folder / "bin" / "mlflow"), "models", "serve", "-m", str(model),
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        env, work, work / "mlflow.log",
    )  # fmt: skip
    stops.append(lambda: stop(proc))
    body = json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[3, 5]]}}).encode()
    wait_answer(tcp(port), "/invocations", body, proc, 180)
    return Target("MLflow models serve", tcp(port), "/invocations", body)


def start_ray(work: Path, stops: list[Callable[[], None]]) -> Target:
    folder = venv("ray")
    (work / "ray_app.py").write_text(RAY_APP)
    port = free_port()
    env = peer_env(folder)
    proc = start(
        [str(folder / "bin" / "python"), "ray_app.py", str(port)], env, work, work / "ray.log"
    )

    def stop_ray() -> None:
        stop(proc)
        subprocess.run(
            [str(folder / "bin" / "ray"), "stop", "--force"],
            env=env,
            capture_output=True,
            timeout=120,
        )

    stops.append(stop_ray)
    body = json.dumps({"a": 3, "b": 5}).encode()
    wait_answer(tcp(port), "/", body, proc, 300)
    return Target("Ray Serve (max_ongoing_requests 1)", tcp(port), "/", body)


def stop(proc: subprocess.Popen) -> None:
    """End a peer and everything it started (it leads a session of its own)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="raw,cdsw-tui,bentoml,mlflow,ray")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    stops: list[Callable[[], None]] = []
    targets: list[Target] = []
    s = Scratch()
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=s.root))
    try:
        (work / "model.py").write_text(ADD_PY)
        body = json.dumps({"a": 3, "b": 5}).encode()
        address, proc = raw_replica(str(work), "model.py", "add")
        stops.append(lambda: (proc.kill(), proc.wait()))
        targets.append(Target("raw stdlib replica (one hop)", address, "/call", body))
        if "cdsw-tui" in wanted:
            _, _, call = add_served(s, ADD_PY)
            targets.append(Target("cdsw-tui gateway + replica", tcp(s.port), "/model", call))
            # the same behind a gateway serving HTTPS (self-signed; handshake once per client)
            secure, https = https_scratch()
            stops.append(secure.close)
            _, _, call = add_served(secure, ADD_PY)
            targets.append(Target("cdsw-tui gateway + replica, HTTPS", https, "/model", call))
        for name, starter in (
            ("bentoml", start_bentoml),
            ("mlflow", start_mlflow),
            ("ray", start_ray),
        ):
            if name not in wanted:
                continue
            try:
                targets.append(starter(work, stops))
            except (Skipped, OSError, subprocess.SubprocessError) as exc:
                print(f"  skipped {name}: {exc}", flush=True)
        for c in (1, 8):
            for _ in range(args.rounds):
                for t in targets:  # interleaved: drift of the machine hits every target alike
                    t.rounds.setdefault(c, []).append(
                        asyncio.run(load(t.address, t.path, t.body, c, args.seconds))
                    )
        report(targets, args)
    finally:
        for fn in reversed(stops):
            try:
                fn()
            except Exception as exc:
                print(f"  could not stop a peer: {exc}")
        s.close()


def ratio(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def report(targets: list[Target], args: argparse.Namespace) -> None:
    def mean_rps(t: Target, c: int) -> float:
        return sum(f.rps for f in t.rounds[c]) / len(t.rounds[c])

    def pooled(t: Target, c: int) -> Figures:
        runs = t.rounds[c]
        latencies = [x for f in runs for x in f.latencies]
        return Figures(
            sum(f.requests for f in runs),
            sum(f.seconds for f in runs),
            latencies,
            sum(f.errors for f in runs),
        )

    raw = targets[0]
    print(
        f"\nadd(a, b), one lean keep-alive client, {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s; {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}\n"
    )
    print(
        "| target | c=1 req/s | p50 ms | p99 ms | ratio to raw | c=8 req/s | p50 ms | p99 ms | ratio to raw | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        cells = [t.name]
        errors = 0
        for c in (1, 8):
            f = pooled(t, c)
            errors += f.errors
            cells += [
                f"{mean_rps(t, c):,.0f}",
                f"{f.p(0.5):.2f}",
                f"{f.p(0.99):.2f}",
                ratio(mean_rps(t, c) / mean_rps(raw, c)),
            ]
        cells.append(str(errors))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
