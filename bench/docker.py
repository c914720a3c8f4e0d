"""The Docker runtime: cold and code-only image builds, deploy to first answer with 1 and
4 replicas, and gateway throughput to container replicas against local replicas.

    python bench/docker.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from _common import Scratch, build, first_answer, load, stopped, tcp

from cdsw_tui.services import models, projects

CODE = "def add(args):\n    return args['a'] + args['b']\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    s = Scratch()
    try:
        root = s.root / "project"
        root.mkdir()
        (root / "model.py").write_text(CODE)
        (root / "requirements.txt").write_text(
            f"numpy\n# {time.time_ns()}\n"
        )  # a layer nobody cached
        (root / "cdsw-build.sh").write_text("pip install --no-input -r requirements.txt\n")
        projects.create(s.wb, "dk", path=root, runtime="docker")
        projects.create(s.wb, "lo", path=root, runtime="local")
        s.start_controller()
        docker_model = models.create(
            s.wb, "dk", models.ModelSpec(name="add", file="model.py", function="add")
        )
        local_model = models.create(
            s.wb, "lo", models.ModelSpec(name="add", file="model.py", function="add")
        )
        cold, _ = build(s, docker_model)
        (root / "model.py").write_text(CODE + "# code only\n")
        rebuild, b2 = build(s, docker_model)
        print("docker runtime, cdsw-build.sh installs numpy")
        print(f"  cold image build              {cold:7.2f} s")
        print(
            f"  code-only rebuild             {rebuild:7.2f} s   {rebuild / cold:6.1%} of cold "
            f"(target < 5 s and <= 15%); dependency layer reused: {b2.dep_reused}"
        )
        one = first_answer(s, docker_model, 1)
        stopped(s, docker_model)
        four = first_answer(s, docker_model, 4)
        print(f"  deploy to first answer, 1 replica   {one:5.2f} s")
        print(f"  deploy to first answer, 4 replicas  {four:5.2f} s   (target < 5 s)")
        stopped(s, docker_model)
        first_answer(s, docker_model, 1)
        build(s, local_model)
        first_answer(s, local_model, 1)
        for c in (1, 8):
            body_d = json.dumps(
                {"accessKey": docker_model.access_key, "request": {"a": 1, "b": 2}}
            ).encode()
            body_l = json.dumps(
                {"accessKey": local_model.access_key, "request": {"a": 1, "b": 2}}
            ).encode()
            container = asyncio.run(load(tcp(s.port), "/model", body_d, c, args.seconds))
            local = asyncio.run(load(tcp(s.port), "/model", body_l, c, args.seconds))
            print(container.line(f"gateway -> container, c={c}"))
            print(local.line(f"gateway -> local process, c={c}"))
            print(f"  {'container / local throughput':<34} {container.rps / local.rps:8.1%}")
    finally:
        s.close()


if __name__ == "__main__":
    main()
