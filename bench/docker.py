"""The Docker runtime: cold and code-only image builds (the quickstart, and a project whose
only dependency file is requirements.txt), deploy to first answer with 1 and 4
replicas, and gateway throughput to container replicas against local replicas.

Baselines in the same process, by hand with the Docker SDK: the floor of a cold build
(a Dockerfile FROM the engine that makes a venv and pip-installs requirements.txt, no
cache), and the other reuse design the issue weighed (cdsw-build.sh on every build): at
least one more RUN of that pip install over the ready image per code-only rebuild.

    python bench/docker.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

from _common import Scratch, build, first_answer, load, stopped, tcp

from cdsw_tui.resources import assets_dir
from cdsw_tui.services import models, projects

CODE = "def add(args):\n    return args['a'] + args['b']\n"


def docker_sdk():
    """The Docker SDK, not this script (which is named docker.py and sits first on the path)."""
    here = Path(__file__).resolve().parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    try:
        import docker
    finally:
        sys.path[:] = saved
    return docker


def docker_by_hand(engine: str, requirements: str, ca_bundle: str) -> tuple[float, float]:
    """(a cold image with a venv and the requirements, one more RUN of that pip over it)."""
    client = docker_sdk().from_env(timeout=600)
    bundle = Path(ca_bundle).read_bytes() if ca_bundle else b""
    cert = "ENV PIP_CERT=/ca.pem\n" if bundle else ""

    def image(dockerfile: str, tag: str) -> float:
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            for name, content in (
                ("Dockerfile", dockerfile.encode()),
                ("requirements.txt", requirements.encode()),
                ("ca.pem", bundle),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        data.seek(0)
        start = time.perf_counter()
        client.images.build(fileobj=data, custom_context=True, tag=tag, nocache=True, rm=True)
        return time.perf_counter() - start

    cold = image(
        f"FROM {engine}\nCOPY ca.pem requirements.txt /\n{cert}"
        "RUN python3 -m venv /v && /v/bin/pip install -q --no-cache-dir -r /requirements.txt\n",
        "cdsw-tui-bench/by-hand:cold",
    )
    again = image(
        f"FROM cdsw-tui-bench/by-hand:cold\n{cert}RUN /v/bin/pip install -q -r /requirements.txt\n",
        "cdsw-tui-bench/by-hand:again",
    )
    for tag in ("cdsw-tui-bench/by-hand:again", "cdsw-tui-bench/by-hand:cold"):
        client.images.remove(tag, force=True)
    return cold, again


def build_times(s: Scratch, name: str) -> None:
    root = s.root / name.replace(" ", "-")
    if name == "quickstart":
        shutil.copytree(assets_dir() / "templates" / "quickstart", root)
        file, function = "add_numbers.py", "add"
    else:
        root.mkdir()
        (root / "model.py").write_text(CODE)
        (root / "cdsw-build.sh").write_text("pip install --no-input -r requirements.txt\n")
        file, function = "model.py", "add"
    requirements = f"numpy\n# {time.time_ns()}\n"  # a layer nobody cached
    (root / "requirements.txt").write_text(requirements)
    project = projects.create(s.wb, root.name, path=root, runtime="docker")
    model = models.create(
        s.wb, project.name, models.ModelSpec(name="m", file=file, function=function)
    )
    cold, _ = build(s, model)
    (root / file).write_text((root / file).read_text() + "# code only\n")
    rebuild, b2 = build(s, model)
    hand, again = docker_by_hand(project.engine, requirements, s.wb.settings.ca_bundle)
    print(f"docker runtime, {name}: cdsw-build.sh installs numpy")
    print(f"  cold image build              {cold:7.2f} s")
    print(
        f"  code-only rebuild             {rebuild:7.2f} s   {rebuild / cold:6.1%} of cold "
        f"(target <= 10%); cdsw-build.sh's result reused: {b2.dep_reused}"
    )
    print(f"  baseline by hand: venv + pip  {hand:7.2f} s   cold / that {cold / hand:5.2f}")
    print(
        f"  cdsw-build.sh on every build  {again:7.2f} s   {again / cold:6.1%} of cold "
        "(the other design's least rebuild)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    s = Scratch()
    try:
        s.start_controller()
        for name in ("quickstart", "requirements.txt only"):
            build_times(s, name)
        root = s.root / "serve"
        root.mkdir()
        (root / "model.py").write_text(CODE)
        projects.create(s.wb, "dk", path=root, runtime="docker")
        projects.create(s.wb, "lo", path=root, runtime="local")
        docker_model = models.create(
            s.wb, "dk", models.ModelSpec(name="add", file="model.py", function="add")
        )
        local_model = models.create(
            s.wb, "lo", models.ModelSpec(name="add", file="model.py", function="add")
        )
        build(s, docker_model)
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
