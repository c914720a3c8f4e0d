"""The swarm runtime: deploy to first answer with 2 replicas, and gateway throughput to
swarm tasks against gateway throughput to local containers (the docker runtime) of the
same function, in the same run, rounds alternating.

Needs an engine that is a swarm manager and a registry (``REGISTRY``, or this scratch
home's own on a free port, started here):

    python bench/swarm.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from _common import Scratch, build, first_answer, free_port, load, median, stopped, tcp

from cdsw_tui.services import engines, models, projects

CODE = "def add(args):\n    return args['a'] + args['b']\n"
SMALL = {"cpu": 0.25, "memory": 256}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # bench/docker.py would shadow the Docker SDK, which this process imports (the swarm check)
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    registry = os.environ.get("CDSW_TUI_REGISTRY", "")
    s = Scratch(**({"registry": registry} if registry else {}))
    try:
        if not registry:
            address, _ = engines.start_registry(s.home, free_port())
            s.cleanups.append(lambda: engines.stop_registry(s.home))
            print(f"registry of this run at {address}")
        root = s.root / "project"
        root.mkdir()
        (root / "model.py").write_text(CODE)
        projects.create(s.wb, "sw", path=root, runtime="swarm")
        projects.create(s.wb, "dk", path=root, runtime="docker")
        s.start_controller()
        spec = models.ModelSpec(name="add", file="model.py", function="add")
        swarm_model = models.create(s.wb, "sw", spec)
        docker_model = models.create(s.wb, "dk", spec)
        build(s, swarm_model)
        build(s, docker_model)
        firsts = []
        for _ in range(args.rounds):
            firsts.append(first_answer(s, swarm_model, 2, **SMALL))
            stopped(s, swarm_model)
        print("swarm runtime (one-node swarm, image pushed to and pulled from the registry)")
        print(
            f"  deploy to first answer, 2 replicas  median {median(firsts):5.2f} s "
            f"(runs: {', '.join(f'{x:.2f}' for x in firsts)}; target <= 10 s)"
        )
        first_answer(s, swarm_model, 1, **SMALL)
        first_answer(s, docker_model, 1, **SMALL)
        for c in (1, 8):
            bodies = {
                name: json.dumps({"accessKey": m.access_key, "request": {"a": 1, "b": 2}}).encode()
                for name, m in (("swarm", swarm_model), ("docker", docker_model))
            }
            runs: dict[str, list] = {"swarm": [], "docker": []}
            for _ in range(args.rounds):
                for name, body in bodies.items():
                    figures = asyncio.run(load(tcp(s.port), "/model", body, c, args.seconds))
                    runs[name].append(figures)
            best = {name: max(f, key=lambda x: x.rps) for name, f in runs.items()}
            print(best["swarm"].line(f"gateway -> swarm task, c={c}"))
            print(best["docker"].line(f"gateway -> local container, c={c}"))
            ratio = median(
                [sw.rps / dk.rps for sw, dk in zip(runs["swarm"], runs["docker"], strict=True)]
            )
            print(f"  {'swarm / container throughput':<34} {ratio:8.1%}  (target >= 90%)")
    finally:
        s.close()


if __name__ == "__main__":
    main()
