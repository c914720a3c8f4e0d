"""Gateway overhead, balancing efficiency, deploy-to-first-answer and replica memory.

Everything runs in this one process except the controller (a real ``cdsw-tui serve``)
and its replicas. The baseline ("raw") is the same build's runner alone on a loopback
port, speaking plain HTTP to the same client: one hop, standard library only. Raw and
gateway runs alternate (``--rounds``) so that the machine's drift hits both alike.

The HTTPS path is measured against the HTTP one: the same model behind a second
controller whose gateway has a self-signed certificate.

    python bench/gateway.py [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from _common import (
    Figures,
    Scratch,
    https_scratch,
    load,
    median,
    raw_replica,
    rss_mb,
    tcp,
    wait_first_answer,
)

from cdsw_tui.engine.backends.local.runtime import LocalRuntime
from cdsw_tui.engine.runtime import Placed, ReplicaSpec
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
    wait_first_answer(s, model, int(d.id))
    return model, time.perf_counter() - start


def add_served(s: Scratch, code: str) -> tuple[object, float, bytes]:
    """A project holding ``code`` in its own scratch home, its controller started and
    ``add`` deployed with 1 replica: (model, seconds to its first answer, a call body)."""
    root = s.root / "project"
    root.mkdir()
    (root / "model.py").write_text(code)
    projects.create(s.wb, "bench", path=root)
    s.start_controller()
    model, first = build_and_deploy(s, "add", "add", 1)
    body = json.dumps({"accessKey": model.access_key, "request": {"a": 3, "b": 5}}).encode()
    return model, first, body


def twin_replica(s: Scratch, model) -> Placed:
    """A second replica of the same build, started by the same runtime, on its own socket:
    the gateway's channel (frames) without the gateway."""
    build = builds.get(s.wb, model)
    runtime = LocalRuntime(s.root / "twin")
    spec = ReplicaSpec(
        name="direct-baseline",
        deployment_id=0,
        model_id=int(model.id),
        artifact=build.artifact,
        env_path=build.env_path,
        file=build.file,
        function=build.function,
        kernel=build.kernel,
        environment={"CDSW_REPLICA_ID": "direct-baseline"},
    )
    placed = runtime.start(spec)
    while not asyncio.run(health(placed.address, 1)):
        time.sleep(0.02)
    s.cleanups.append(lambda: (runtime.stop(placed.handle), runtime.remove(placed.handle)))
    return placed


def raw_of(s: Scratch, model) -> str:
    """The same build's runner alone on a loopback port, plain HTTP: the single-hop floor."""
    build = builds.get(s.wb, model)
    python = f"{build.env_path}/bin/python" if build.env_path else "python3"
    address, proc = raw_replica(build.artifact, build.file, build.function, python)
    s.cleanups.append(lambda: (proc.kill(), proc.wait()))
    return address


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    s = Scratch()
    try:
        model, first, body = add_served(s, CODE)
        replica = deployments.replicas_of(s.wb, models.active_deployment(s.wb, model))[0]
        # a second process of the same build, started the same way, called on its Unix
        # socket as the gateway calls the deployed one: the channel's own cost
        twin = twin_replica(s, model)

        print(f"trivial model, 1 replica, {args.seconds:g} s per run")
        print(f"  deploy to first answer              {first:6.2f} s      (target < 2 s)")
        print(
            f"  replica resident memory             {rss_mb(int(replica.handle.split(':')[0])):6.1f} MB     (target < 30 MB)"
        )
        raw = raw_of(s, model)
        for c in (1, 8):
            pairs: list[tuple[Figures, Figures]] = []
            for _ in range(args.rounds):
                pairs.append(
                    (
                        asyncio.run(load(raw, "/call", body, c, args.seconds)),
                        asyncio.run(load(tcp(s.port), "/model", body, c, args.seconds)),
                    )
                )
            framed = asyncio.run(load(twin.address, "/call", body, c, args.seconds, shared=True))
            for direct, via in pairs:
                print(direct.line(f"raw replica (HTTP), c={c}"))
                print(via.line(f"through the gateway, c={c}"))
            print(framed.line(f"replica on its socket (frames), c={c}"))
            raw_rps = sum(d.rps for d, _ in pairs) / len(pairs)
            via_rps = sum(v.rps for _, v in pairs) / len(pairs)
            added = median([v.p(0.5) - d.p(0.5) for d, v in pairs])
            target = ">= 0.8" if c == 1 else ">= 0.85"
            print(
                f"  {'gateway / raw throughput':<34} {via_rps / raw_rps:8.2f}   (target {target})"
                f"   added p50 {added:+.3f} ms" + ("   (target <= 0.05 ms)" if c == 1 else "")
            )

        # the same model behind a second gateway that serves HTTPS, HTTP and HTTPS
        # interleaved (TLS 1.3 here; the handshake is once per connection, outside the timing)
        secure, https = https_scratch()
        s.cleanups.append(secure.close)
        _, _, body2 = add_served(secure, CODE)
        pairs = []
        for _ in range(args.rounds):
            pairs.append(
                (
                    asyncio.run(load(tcp(s.port), "/model", body, 1, args.seconds)),
                    asyncio.run(load(https, "/model", body2, 1, args.seconds)),
                )
            )
        for plain, tls in pairs:
            print(plain.line("through the gateway, HTTP, c=1"))
            print(tls.line("through the gateway, HTTPS, c=1"))
        http_rps = sum(p.rps for p, _ in pairs) / len(pairs)
        https_rps = sum(t.rps for _, t in pairs) / len(pairs)
        added = median([t.p(0.5) - p.p(0.5) for p, t in pairs])
        print(
            f"  {'HTTPS / HTTP throughput':<34} {https_rps / http_rps:8.2f}   (target >= 0.8)"
            f"   added p50 {added:+.3f} ms"
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
            fig = asyncio.run(load(tcp(s.port), "/model", nap_body, 2 * n, args.seconds))
            ideal = n * 50
            print(
                fig.line(f"{n} replicas, c={2 * n}")
                + f"   {fig.rps / ideal:6.1%} of ideal (target >= 90%)"
            )
    finally:
        s.close()


if __name__ == "__main__":
    main()
