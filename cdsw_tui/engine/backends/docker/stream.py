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


class EngineGone(BuildFailed):
    """The Docker engine went away under the build (dockerd restarted): the build may be
    made again once it is back."""


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
        stream = _start(
            api,
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
                raise EngineGone(f"the Docker engine stopped answering: {chunk}")
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        log.line(line)
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                log.line(detail)
                code = chunk.get("errorDetail", {}).get("code")
                if code in KILLED and _going_away(client):
                    raise EngineGone(f"the build's step was killed ({code}) as the engine stopped")
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
        from docker.errors import DockerException

        try:
            image_id = client.images.get(tag).id
        except DockerException as exc:  # its stream ended, and no image: the engine went
            raise EngineGone(f"the build's stream ended without an image ({exc})") from None
    return image_id


KILLED = (137, 143)  # a step ended by SIGKILL or SIGTERM: dockerd stopping does that too


def _going_away(client: Any, within: float = 5.0) -> bool:
    """Whether the engine stops answering within a few seconds (dockerd shutting down
    kills the build's step first, then leaves), so a killed step is told from an OOM."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            client.ping()
        except Exception:
            return True
        time.sleep(0.25)
    return False


def _start(api: Any, **options: Any) -> Any:
    from docker.errors import DockerException
    from requests.exceptions import ConnectionError as Unreachable

    try:
        return api.build(**options)
    except (Unreachable, DockerException) as exc:
        if isinstance(exc, Unreachable) or "connection" in str(exc).lower():
            raise EngineGone(f"the Docker engine does not answer: {exc}") from None
        raise


def wait_for_engine(cancelled: Callable[[], bool], deadline: float, limit: float = 60.0) -> bool:
    """Whether the Docker engine answers again within ``limit`` seconds (or the build's
    cancel or time limit comes first)."""
    from cdsw_tui.engine.backends.docker.images import docker_client

    until = min(deadline, time.monotonic() + limit)
    while time.monotonic() < until and not cancelled():
        try:
            docker_client(timeout=5).ping()
            return True
        except Exception:
            time.sleep(0.5)
    return False


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
