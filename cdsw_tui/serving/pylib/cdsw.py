"""``import cdsw``: CDSW's model metrics API, as model code and project scripts use it.

Standard library only and Python 3.9 syntax: it is imported by replicas and by the
project's own scripts on every engine. The semantics follow Cloudera's documentation:

- Tracking model metrics (CDSW 1.9): https://docs.cloudera.com/cdsw/latest/models/topics/cdsw-tracking-model-metrics.html
- Tracking metrics for deployed models (CML): https://docs.cloudera.com/machine-learning/cloud/models/topics/ml-tracking-model-metrics-using-python.html
- Tracking model metrics without deploying a model (dev mode): https://docs.cloudera.com/machine-learning/cloud/models/topics/ml-tracking-model-metrics-without-deploying-model.html

What a call to a function decorated with ``model_metrics`` tracks becomes one record
with the call's uuid (``predictionUuid``), its start and end (ms) and a ``metrics``
object; the response is ``{"uuid": ..., "prediction": <result>}``. In a replica the
record goes to the controller, which stores it per model, build and deployment. Where no
replica runs (a script, a notebook), records stay in this process's memory, as in a CDSW
session, and ``read_metrics(dev=True)`` reads them back.

``read_metrics``, ``track_delayed_metrics``, ``track_aggregate_metrics`` and
``call_model`` go to the workbench's gateway at ``CDSW_API_URL`` (replicas and builds are
given it, with a token for their own model in ``CDSW_METRICS_TOKEN``; a script of the
user's own finds the gateway from ``CDSW_TUI_GATEWAY_URL`` or ``CDSW_TUI_GATEWAY_HOST`` and
``_PORT``, else 127.0.0.1:8787, and the home's token in ``CDSW_TUI_HOME``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid as _uuid
from collections.abc import Callable
from typing import Any

__all__ = [
    "call_model",
    "track_file",
    "model_metrics",
    "read_metrics",
    "track_aggregate_metrics",
    "track_delayed_metrics",
    "track_metric",
]

_state = threading.local()
_lock = threading.Lock()
_sink = None  # the replica runner sets this: where a finished call's record goes
_dev: list = []  # records kept in memory where no replica runs (and with dev=True)
DEFAULT_GATEWAY = "http://127.0.0.1:8787"


class MetricsError(Exception):
    """The metrics service refused or could not be reached; the message says why."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _emit(record: dict[str, Any], dev: bool = False) -> None:
    if _sink is not None and not dev:
        _sink(record)
        return
    with _lock:
        _dev.append(dict(record, metrics=dict(record["metrics"])))


def track_metric(key: str, value: Any, dev: bool = False) -> None:
    """Track ``value`` under ``key`` for the call being served (inside a function
    decorated with ``model_metrics``), or as a record of its own outside one."""
    record = getattr(_state, "record", None)
    if record is not None:
        record["metrics"][str(key)] = value
        return
    now = _now_ms()
    _emit(
        {
            "predictionUuid": None,
            "startTimeStampMs": now,
            "endTimeStampMs": now,
            "metrics": {str(key): value},
        },
        dev,
    )


def model_metrics(fn: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any]]:
    """Decorate a model function: each call gets a uuid, returned with the prediction
    as ``{"uuid": ..., "prediction": ...}``, and what it tracks is stored under it."""

    def wrapper(args: Any) -> dict[str, Any]:
        record = {
            "predictionUuid": str(_uuid.uuid4()),
            "startTimeStampMs": _now_ms(),
            "endTimeStampMs": None,
            "metrics": {},
        }
        _state.record = record
        try:
            prediction = fn(args)
        finally:
            _state.record = None
            record["endTimeStampMs"] = _now_ms()
            _emit(record)
        return {"uuid": record["predictionUuid"], "prediction": prediction}

    wrapper.__name__ = getattr(fn, "__name__", "model")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]  # as functools.wraps sets it
    return wrapper


def _in_window(record: dict[str, Any], start: int | None, end: int | None) -> bool:
    stamp = record["startTimeStampMs"]
    return (start is None or stamp >= start) and (end is None or stamp <= end)


def read_metrics(
    model_crn: str | None = None,
    model_deployment_crn: str | None = None,
    start_timestamp_ms: int | None = None,
    end_timestamp_ms: int | None = None,
    dev: bool = False,
    model_build_crn: str | None = None,
) -> dict[str, Any]:
    """``{"metrics": [records]}`` of a model, build or deployment (in a replica: its own
    deployment by default), started within the window (ms since the epoch), oldest
    first. Each record has ``predictionUuid`` (null for an aggregate),
    ``startTimeStampMs``, ``endTimeStampMs``, ``metrics`` and the CRNs it belongs to."""
    if dev:
        with _lock:
            found = [dict(r) for r in _dev if _in_window(r, start_timestamp_ms, end_timestamp_ms)]
        return {"metrics": found}
    if model_crn is None and model_deployment_crn is None and model_build_crn is None:
        model_deployment_crn = os.environ.get("CDSW_MODEL_DEPLOYMENT_CRN")
    return _service(
        "read",
        {
            "model_crn": model_crn,
            "model_deployment_crn": model_deployment_crn,
            "model_build_crn": model_build_crn,
            "start_timestamp_ms": start_timestamp_ms,
            "end_timestamp_ms": end_timestamp_ms,
        },
    )


def track_delayed_metrics(metrics: dict[str, Any], prediction_uuid: str, dev: bool = False) -> None:
    """Add ``metrics`` (a dict) to the record of an earlier prediction, e.g. its ground
    truth once it is known."""
    if not isinstance(metrics, dict):
        raise TypeError("metrics must be a dict")
    if dev:
        with _lock:
            for record in _dev:
                if record["predictionUuid"] == str(prediction_uuid):
                    record["metrics"].update(metrics)
                    return None
        raise MetricsError(f"no prediction {prediction_uuid} was tracked in this session")
    _service("delayed", {"metrics": metrics, "prediction_uuid": str(prediction_uuid)})
    return None


def track_aggregate_metrics(
    metrics: dict[str, Any],
    start_timestamp_ms: int,
    end_timestamp_ms: int,
    model_deployment_crn: str | None = None,
    dev: bool = False,
) -> None:
    """Track ``metrics`` (a dict) for a time window of a deployment (in a replica: its
    own by default), e.g. the accuracy of the predictions made in it."""
    if not isinstance(metrics, dict):
        raise TypeError("metrics must be a dict")
    record = {
        "predictionUuid": None,
        "startTimeStampMs": int(start_timestamp_ms),
        "endTimeStampMs": int(end_timestamp_ms),
        "metrics": dict(metrics),
    }
    if dev:
        _emit(record, dev=True)
        return None
    if model_deployment_crn is None:
        model_deployment_crn = os.environ.get("CDSW_MODEL_DEPLOYMENT_CRN")
    _service(
        "aggregate",
        {
            "metrics": metrics,
            "start_timestamp_ms": int(start_timestamp_ms),
            "end_timestamp_ms": int(end_timestamp_ms),
            "model_deployment_crn": model_deployment_crn,
        },
    )
    return None


def track_file(filename: str) -> None:
    """CDSW's experiment output: the file stays where the script wrote it (in the
    project, where runs write); this says so in one line of the run's output."""
    import sys

    print(f"cdsw.track_file: {filename} stays in the project (no separate copy is kept)",
          file=sys.stderr)  # fmt: skip


def call_model(model_access_key: str, ipt: Any, api_key: str | None = None) -> Any:
    """Call a deployed model through the gateway; returns the gateway's JSON answer
    (``{"success": ..., "response": ..., "ReplicaID": ...}``), errors included."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = json.dumps({"accessKey": model_access_key, "request": ipt}).encode()
    return _post(f"{_gateway()}/model", body, headers, answer_errors=True)


# -- the service ---------------------------------------------------------------------


def _home() -> str:
    return os.environ.get("CDSW_TUI_HOME") or os.path.join(os.path.expanduser("~"), ".cdsw-tui")


def _api_url() -> str:
    url = os.environ.get("CDSW_API_URL")
    if url:
        return url.rstrip("/")
    gateway = os.environ.get("CDSW_TUI_GATEWAY_URL") or DEFAULT_GATEWAY
    if "CDSW_TUI_GATEWAY_URL" not in os.environ and (
        "CDSW_TUI_GATEWAY_HOST" in os.environ or "CDSW_TUI_GATEWAY_PORT" in os.environ
    ):  # the workbench's own settings, as the environment gives them
        host = os.environ.get("CDSW_TUI_GATEWAY_HOST", "127.0.0.1")
        gateway = f"http://{host}:{os.environ.get('CDSW_TUI_GATEWAY_PORT', '8787')}"
    return f"{gateway.rstrip('/')}/api/v1"


def _gateway() -> str:
    return _api_url().rsplit("/api/v1", 1)[0]


def _token() -> str:
    token = os.environ.get("CDSW_METRICS_TOKEN")
    if token:
        return token
    path = os.path.join(_home(), "run", "metrics.key")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise MetricsError(
            f"no metrics token: CDSW_METRICS_TOKEN is not set and {path} cannot be read "
            "(has a cdsw-tui controller run in this home?)"
        ) from None
    with os.fdopen(fd, "rb") as fh:
        key = fh.read().strip()
    return "*:" + hmac.new(key, b"cdsw-metrics *", hashlib.sha256).hexdigest()


def _service(action: str, payload: dict[str, Any]) -> Any:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {_token()}"}
    body = json.dumps(payload).encode()
    return _post(f"{_api_url()}/metrics/{action}", body, headers)


def _post(url: str, body: bytes, headers: dict[str, str], answer_errors: bool = False) -> Any:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    pem = os.environ.get("CDSW_TUI_GATEWAY_CA_PEM", "")
    if pem and url.startswith("https:"):  # the gateway's own certificate (or its CA)
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=pem)))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
        except ValueError:
            raise MetricsError(f"{url} answered HTTP {exc.code}") from None
        if answer_errors:
            return answer
        message = (answer.get("error") or {}).get("message") if isinstance(answer, dict) else None
        raise MetricsError(message or f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MetricsError(f"the metrics service at {url} cannot be reached: {reason}") from None
