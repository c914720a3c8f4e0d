"""Gateway overhead, balancing efficiency, deploy-to-first-answer and replica memory.

Everything runs in this one process except the controller (a real ``cdsw-tui serve``)
and its replicas. The baseline is the same replica called directly, measured here.

    python bench/gateway.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from _common import Scratch, load, rss_mb

from cdsw_tui.engine.local_runtime import LocalRuntime
from cdsw_tui.engine.runtime import ReplicaSpec, Running
from cdsw_tui.services import builds, deployments, models, projects
from cdsw_tui.serving.connection import health

CODE = """\
import time


def add(args):
    return args["a"] + args["b"]


def nap(args):
    time.sleep(0.02)
    return 1
"""


def build_and_deploy(s: Scratch, name: str, fn: str, replicas: int) -> tuple[object, float]:
    model = models.create(
        s.wb, "bench", models.ModelSpec(name=name, file="model.py", function=fn, replicas=replicas)
    )
    build = builds.request(s.wb, model)
    while builds.refresh(s.wb, build).status != "built":
        time.sleep(0.02)
    start = time.perf_counter()
    d = deployments.create(s.wb, model)
    body = json.dumps({"accessKey": model.access_key, "request": {"a": 3, "b": 5}}).encode()

    async def first_answer() -> None:
        from cdsw_tui.serving.connection import ReplicaConnection

        while True:
            conn = ReplicaConnection("127.0.0.1", s.port)
            try:
                status, _ = await conn.request("POST", "/model", body)
                if status == 200:
                    return
            finally:
                conn.close()
            await asyncio.sleep(0.005)

    asyncio.run(first_answer())
    elapsed = time.perf_counter() - start
    assert deployments.get(s.wb, int(d.id)).status == "deployed"
    return model, elapsed


def twin_replica(s: Scratch, model) -> Running:  # noqa: ANN001
    build = builds.get(s.wb, model)
    runtime = LocalRuntime()
    spec = ReplicaSpec(
        name="direct-baseline",
        deployment_id=0,
        model_id=int(model.id),
        artifact=Path(build.artifact),
        env_path=build.env_path,
        file=build.file,
        function=build.function,
        kernel=build.kernel,
        environment={"CDSW_REPLICA_ID": "direct-baseline"},
        log_path=s.root / "direct.log",
        metrics_path=s.root / "direct.jsonl",
        run_dir=s.root / "run",
    )
    running = runtime.start(spec, 30)
    while not asyncio.run(health("127.0.0.1", running.port, 1)):
        time.sleep(0.02)
    s.cleanups.append(lambda: runtime.stop(running))
    return running


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    s = Scratch()
    try:
        root = s.root / "project"
        root.mkdir()
        (root / "model.py").write_text(CODE)
        projects.create(s.wb, "bench", path=root)
        s.start_controller()
        model, first = build_and_deploy(s, "add", "add", 1)
        replica = deployments.replicas_of(s.wb, models.active_deployment(s.wb, model))[0]
        body = json.dumps({"accessKey": model.access_key, "request": {"a": 3, "b": 5}}).encode()
        # the deployed replica keeps its one connection to the gateway, so the direct
        # baseline is a second process of the same build, started the same way
        twin = twin_replica(s, model)

        print(f"trivial model, 1 replica, {args.seconds:g} s per run")
        print(f"  deploy to first answer              {first:6.2f} s      (target < 2 s)")
        print(
            f"  replica resident memory             {rss_mb(replica.pid):6.1f} MB     (target < 30 MB)"
        )
        results = {}
        for c in (1, 8):
            direct = asyncio.run(load(twin.port, "/call", body, c, args.seconds, shared=True))
            via = asyncio.run(load(s.port, "/model", body, c, args.seconds))
            results[c] = (direct, via)
            print(direct.line(f"direct to the replica, c={c}"))
            print(via.line(f"through the gateway, c={c}"))
            print(
                f"  {'gateway / direct throughput':<34} {via.rps / direct.rps:8.1%}"
                f"   added p50 {via.p(0.5) - direct.p(0.5):+.2f} ms"
                + ("   (target >= 70%, <= 0.5 ms)" if c == 1 else "")
            )

        print("model sleeping 20 ms, concurrency twice the replicas (ideal: replicas x 50 req/s)")
        nap, _ = build_and_deploy(s, "nap", "nap", 1)
        nap_body = json.dumps({"accessKey": nap.access_key, "request": {}}).encode()
        for n in (1, 2, 4, 8):
            deployments.scale(s.wb, nap, n)
            d = models.active_deployment(s.wb, nap)
            while len([r for r in deployments.replicas_of(s.wb, d) if r.status == "running"]) != n:
                time.sleep(0.05)
            time.sleep(0.3)
            fig = asyncio.run(load(s.port, "/model", nap_body, 2 * n, args.seconds))
            ideal = n * 50
            print(
                fig.line(f"{n} replicas, c={2 * n}")
                + f"   {fig.rps / ideal:6.1%} of ideal (target >= 90%)"
            )
    finally:
        s.close()


if __name__ == "__main__":
    main()
