"""The replica runner as images hold it: runner_files() alone, under a bare folder, run by
a Python without site-packages (``-I -S``), serves the model and gives it ``cdsw``."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cdsw_tui.resources import LAUNCHER_TEXT, RUNNER_ROOT, runner_files

MODEL = """\
import cdsw


def add(args):
    return {"sum": args["a"] + args["b"], "cdsw": hasattr(cdsw, "track_metric")}
"""


def test_the_runner_imports_only_the_standard_library_and_itself():
    ours = {name.removesuffix(".py").replace("/", ".") for _, name in runner_files()}
    ours |= {m.split("pylib.", 1)[1].split(".")[0] for m in ours if "pylib." in m}  # cdsw, cml
    for path, name in runner_files():
        if not name.endswith(".py") or "/pylib/" in name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or module in ours or top == "__future__", (
                    f"{name} imports {module}"
                )


def test_the_copied_runner_serves_with_no_site_packages(tmp_path: Path):
    root = tmp_path / "lib"
    for source, name in runner_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / name)
    launcher = root / "replica.py"
    launcher.write_text(LAUNCHER_TEXT.replace(RUNNER_ROOT, str(root)))
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.py").write_text(MODEL)
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(launcher), "--dir", str(project), "--file", "model.py",
         "--function", "add", "--name", "r-1", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            if port_file.exists():
                url = f"http://127.0.0.1:{port_file.read_text()}"
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, "the copied runner did not become ready"
            time.sleep(0.05)
        answer = httpx.post(f"{url}/call", content=json.dumps({"request": {"a": 2, "b": 3}}))
        assert answer.json() == {
            "success": True,
            "response": {"sum": 5, "cdsw": True},
            "ReplicaID": "r-1",
        }
    finally:
        proc.kill()
        proc.wait()
