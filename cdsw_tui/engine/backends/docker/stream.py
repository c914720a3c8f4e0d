"""A Docker image build, its output into the build log as it arrives; a cancel or the
time limit stops it on time, not on output."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdsw_tui.engine.builder import BuildFailed, BuildJob
from cdsw_tui.engine.buildlog import BuildLog


def stream_build(
    client: Any,
    context: Path,
    dockerfile: str,
    tag: str,
    job: BuildJob,
    log: BuildLog,
    cancelled: Callable[[], bool],
    deadline: float,
    build_args: dict[str, str],
    *,
    nocache: bool = False,
) -> str:
    """Docker's output into the log as it comes; a cancel or the time limit acts on
    time, not on output: a silent step (``sleep infinity``) is stopped too, by
    closing the build's connection, which makes dockerd cancel the build."""
    image_id = ""
    responses: list = []
    api = client.api
    original_helper = api._stream_helper

    def keep_response(response: Any, decode: bool = False) -> Any:
        responses.append(response)  # the HTTP response: closing it stops the build
        return original_helper(response, decode=decode)

    api._stream_helper = keep_response
    try:
        stream = api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            nocache=nocache,
            buildargs=build_args,
            pull=False,
        )
    finally:
        api._stream_helper = original_helper
    chunks: queue.Queue = queue.Queue()

    def pump() -> None:
        try:
            for chunk in stream:
                chunks.put(chunk)
        except Exception as exc:  # the connection was closed under it
            chunks.put(exc)
        finally:
            chunks.put(None)

    threading.Thread(target=pump, daemon=True, name=f"build-{job.build_id}").start()
    try:
        while True:
            if cancelled():
                raise BuildFailed("cancelled by the user", status="cancelled")
            if time.monotonic() > deadline:
                raise BuildFailed("the build ran past its time limit", status="timedout")
            try:
                chunk = chunks.get(timeout=0.2)
            except queue.Empty:
                continue
            if chunk is None:
                break
            if isinstance(chunk, Exception):
                raise BuildFailed(f"the Docker engine stopped answering: {chunk}")
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        log.line(line)
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                log.line(detail)
                code = chunk.get("errorDetail", {}).get("code")
                if "cdsw-build.sh" in detail or code:
                    raise BuildFailed(
                        f"cdsw-build.sh exited with status {code}" if code else detail.strip()
                    )
                raise BuildFailed(detail.strip().splitlines()[-1])
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    finally:
        for response in responses:
            _sever(response)
    if not image_id:
        image_id = client.images.get(tag).id
    return image_id


def _sever(response: Any) -> None:
    """End a build's HTTP connection under the thread reading it: closing the response
    would wait for that reader's lock; shutting the socket down wakes it, and dockerd
    cancels a build whose client went (its step's container goes with it)."""
    raw = getattr(response, "raw", None)
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already: the build ended by itself
