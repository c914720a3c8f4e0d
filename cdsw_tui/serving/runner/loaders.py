"""The model function: a Python file's function, or an R function behind Rscript."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from cdsw_tui.serving.frames import STREAM_METRIC
from cdsw_tui.serving.runner.output import Output

HERE = os.path.dirname(os.path.abspath(__file__))
# ``cdsw`` and ``cml`` for model code: serving/pylib, beside the runner in every runtime
PYLIB = os.path.join(os.path.dirname(HERE), "pylib")
ModelFunction = Callable[[Any], Any]


def install_cdsw_module(output: Output | None) -> None:
    """``import cdsw`` and ``import cml`` as real CDSW/CML model scripts do (pylib/, beside
    this file in every runtime): what a call tracks leaves as one ``metric`` record."""
    if PYLIB not in sys.path:
        sys.path.insert(0, PYLIB)
    import cdsw

    replica = os.environ.get("CDSW_REPLICA_ID", "")

    def sink(record: dict) -> None:
        if output is not None:
            output.record(STREAM_METRIC, dict(record, replica=replica))

    cdsw._sink = sink


def forward_to_gateway() -> None:
    """In a container given the gateway's socket: the gateway at 127.0.0.1 on its port
    (pylib/cdsw_forward), so model code's calls of cdsw, cmlapi and modelservice URLs
    reach it without a network."""
    if not os.environ.get("CDSW_TUI_GATEWAY_SOCKET"):
        return
    if PYLIB not in sys.path:
        sys.path.insert(0, PYLIB)
    try:
        import cdsw_forward
    except ImportError:  # an image made before the forwarder: no gateway inside, as then
        return
    cdsw_forward.from_environment()


def load_function(directory: str, file: str, function: str) -> ModelFunction:
    path = os.path.join(directory, file)
    # the project root and the model file's folder (first), as CDSW runs a model
    for folder in (directory, os.path.dirname(path)):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("__cdsw_model__", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__cdsw_model__"] = module
    spec.loader.exec_module(module)
    fn = getattr(module, function, None)
    if not callable(fn):
        raise AttributeError(f"{file} has no function {function!r}")
    return fn


class InvalidResponse(Exception):
    """The function's result cannot be encoded as JSON."""


class RawJSON(str):
    """A result that is JSON text already (R encoded it): written as it is."""


class RError(Exception):
    """An error raised by R code; its message is R's own."""


OK_PREFIX = b'{"ok": true, "result": '


def load_r_function(directory: str, file: str, function: str) -> ModelFunction:
    """Start Rscript with replica.R; requests go as JSON lines on its stdin, answers come
    back on a pipe of their own so the model's prints reach the log untouched."""
    import shutil
    import subprocess

    rscript = shutil.which("Rscript")
    if rscript is None:
        raise RuntimeError(
            "R is not installed here: Rscript was not found on PATH "
            "(apt-get install r-base-core r-cran-jsonlite, or use an engine made with 'engine build --r')"
        )
    script = os.path.join(HERE, "replica.R")
    answer_read, answer_write = os.pipe()
    proc = subprocess.Popen(
        [rscript, "--vanilla", script, file, function, str(answer_write)],
        cwd=directory,
        stdin=subprocess.PIPE,
        pass_fds=(answer_write,),
    )
    os.close(answer_write)
    answers = os.fdopen(answer_read, "rb")
    ready = answers.readline()
    if not ready:
        raise RuntimeError(f"R stopped while loading {file} (status {proc.wait()})")
    status = json.loads(ready)
    if not status.get("ready"):
        raise RuntimeError(f"R could not load {file}: {status.get('error')}")
    stdin = proc.stdin
    assert stdin is not None

    def call(request: object) -> object:
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
            line = answers.readline()
        except BrokenPipeError:
            line = b""
        if not line:
            print(
                "R stopped while handling a request; the replica ends", file=sys.stderr, flush=True
            )
            time.sleep(0.2)
            os._exit(1)
        if line.startswith(OK_PREFIX):
            return RawJSON(line[len(OK_PREFIX) :].rstrip().removesuffix(b"}").decode())
        reply = json.loads(line)
        if reply.get("code") == "model.invalid_response":
            raise InvalidResponse(reply.get("error", ""))
        raise RError(reply.get("error", "R raised an error"))

    return call
