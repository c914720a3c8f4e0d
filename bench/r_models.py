"""An R replica against a Python replica of the same function, through the gateway,
at concurrency 1 (local runtime).

    python bench/r_models.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from _common import Scratch, load, tcp

from cdsw_tui.services import builds, deployments, models, projects

PY = "def add(args):\n    return args['a'] + args['b']\n"
R = "add <- function(args) {\n  args$a + args$b\n}\n"


def deploy(s: Scratch, name: str, file: str, kernel: str):
    model = models.create(
        s.wb, "bench", models.ModelSpec(name=name, file=file, function="add", kernel=kernel)
    )
    b = builds.request(s.wb, model)
    while builds.refresh(s.wb, b).status != "built":
        time.sleep(0.05)
    d = deployments.create(s.wb, model)
    while deployments.get(s.wb, int(d.id)).status != "deployed":
        time.sleep(0.05)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    s = Scratch()
    try:
        root = s.root / "project"
        root.mkdir()
        (root / "add.py").write_text(PY)
        (root / "add.R").write_text(R)
        projects.create(s.wb, "bench", path=root)
        s.start_controller()
        py = deploy(s, "py", "add.py", "python3")
        r = deploy(s, "r", "add.R", "r")
        figures = {}
        for label, model in (("python", py), ("r", r)):
            body = json.dumps({"accessKey": model.access_key, "request": {"a": 3, "b": 5}}).encode()
            figures[label] = asyncio.run(load(tcp(s.port), "/model", body, 1, args.seconds))
        print("the add function through the gateway, concurrency 1, local runtime")
        print(figures["python"].line("Python replica"))
        print(figures["r"].line("R replica"))
        print(
            f"  {'R / Python throughput':<34} {figures['r'].rps / figures['python'].rps:8.2f}   (target >= 0.5)"
        )
    finally:
        s.close()


if __name__ == "__main__":
    main()
