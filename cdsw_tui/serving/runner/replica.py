"""One call of the model function and its answer, in SPEC's JSON."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

from cdsw_tui.serving.frames import EVENT_OUT_OF_MEMORY, EXIT_OUT_OF_MEMORY, STREAM_EVENT
from cdsw_tui.serving.runner.loaders import InvalidResponse, ModelFunction, RawJSON
from cdsw_tui.serving.runner.output import Output


def error_body(name: str, code: str, message: str) -> bytes:
    return json.dumps(
        {"success": False, "error": {"code": code, "message": message}, "ReplicaID": name}
    ).encode()


Answer = tuple[int, str, bytes, bool]  # status, error code ("" on success), body, close


class Replica:
    """The model function, called by one request at a time."""

    def __init__(self, name: str, output: Output | None, memory_mb: int) -> None:
        self.name = name
        self.quoted = json.dumps(name)
        self.output = output
        self.memory_mb = memory_mb
        self.fn: ModelFunction | None = None
        self.lock = threading.Lock()

    def call(self, raw: bytes) -> Answer:
        """(status, error code, body, close): close means the replica ends after this."""
        name = self.name
        if self.fn is None:
            return (
                503,
                "model.not_deployed",
                error_body(name, "model.not_deployed", "still loading"),
                False,
            )
        try:
            body = json.loads(raw)
            request = body["request"] if isinstance(body, dict) and "request" in body else body
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return self._failed(400, "request.invalid", f"the body is not JSON: {exc}")
        try:
            with self.lock:
                result = self.fn(request)
        except MemoryError:
            return self._out_of_memory()
        except InvalidResponse as exc:
            return self._failed(500, "model.invalid_response", str(exc)[:2000])
        except Exception as exc:  # the model's own failure: report it, keep serving
            traceback.print_exc()
            sys.stderr.flush()
            return self._failed(500, "model.error", f"{type(exc).__name__}: {exc}"[:2000])
        if isinstance(result, RawJSON):
            payload = f'{{"success": true, "response": {result}, "ReplicaID": {self.quoted}}}'
            return 200, "", payload.encode(), False
        try:
            payload = json.dumps(
                {"success": True, "response": result, "ReplicaID": name}, allow_nan=False
            )
        except MemoryError:
            return self._out_of_memory()
        except (TypeError, ValueError, RecursionError) as exc:
            message = f"the function returned something that is not JSON: {exc}"
            return self._failed(500, "model.invalid_response", message)
        return 200, "", payload.encode(), False

    def health(self) -> Answer:
        ready = self.fn is not None
        body = {"status": "ready" if ready else "loading", "replica": self.name}
        return (200 if ready else 503), "", json.dumps(body).encode(), False

    def _failed(self, status: int, code: str, message: str) -> Answer:
        return status, code, error_body(self.name, code, message), False

    def _out_of_memory(self) -> Answer:
        """The heap is at its limit: this process cannot be trusted to serve again."""
        limit = f" of {self.memory_mb} MB" if self.memory_mb else ""
        message = f"MemoryError: the model ran out of memory (limit{limit}); the replica restarts"
        print(f"replica {self.name}: {message}", file=sys.stderr, flush=True)
        if self.output is not None:
            self.output.record(STREAM_EVENT, {"event": EVENT_OUT_OF_MEMORY, "reason": message})
        return 500, "model.error", error_body(self.name, "model.error", message), True

    def ended(self, answer: Answer) -> None:
        """After an answer that closes: the replica exits, its output written first."""
        time.sleep(0.1)  # let the log pump write what the model printed
        os._exit(EXIT_OUT_OF_MEMORY)
