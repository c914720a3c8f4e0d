"""Every row of SPEC §2's error table, over real HTTP, against real replica processes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from cdsw_tui.services import deployments, metrics, models
from tests.helpers import JSON, Served

MODELS_PY = """\
import os
import time


def add(args):
    return args["a"] + args["b"]


def slow(args):
    time.sleep(args.get("s", 1))
    return os.environ["CDSW_REPLICA_ID"]


def boom(args):
    raise ValueError("bad input: " + str(args))


def weird(args):
    return {1, 2}


def die(args):
    if args.get("die"):
        os._exit(1)
    return "alive"


def env(args):
    return {k: v for k, v in os.environ.items() if k.startswith(("CDSW_", "LEVEL"))}


def hog(args):
    return len(bytearray(args["mb"] * 1024 * 1024))


import cdsw


@cdsw.model_metrics
def scored(args):
    cdsw.track_metric("input_a", args["a"])
    return args["a"] * 2
"""

MODELS = {
    "add": "add",
    "slow": "slow",
    "boom": "boom",
    "weird": "weird",
    "die": "die",
    "env": "env",
    "locked": "add",
    "scored": "scored",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    s = Served(tmp_path_factory.mktemp("gateway"), {"models.py": MODELS_PY})
    s.cli("project", "create", "srv", "--path", str(s.project))
    s.cli("env", "set", "LEVEL_GLOBAL=g", "LEVEL=global")
    s.cli("env", "set", "--project", "srv", "LEVEL=project")
    for name, fn in MODELS.items():
        s.cli(
            "model",
            "create",
            f"srv/{name}",
            "--file",
            "models.py",
            "--function",
            fn,
            "--example-input",
            '{"a": 3, "b": 5}',
            "--env",
            "LEVEL_MODEL=m",
        )
    s.cli("model", "create", "srv/idle", "--file", "models.py", "--function", "add", "--no-deploy")
    s.cli(
        "model", "create", "srv/hog", "--file", "models.py", "--function", "hog", "--memory", "256"
    )
    s.cli("model", "auth", "srv/locked", "on")
    s.api_key = s.cli("apikey", "create", "ci").stdout.strip()
    s.wait_deployed([*MODELS, "hog"])
    s.keys = {name: s.key(name) for name in [*MODELS, "idle", "hog"]}
    yield s
    s.close()


def post(
    served: Served,
    body: object,
    *,
    raw: bytes | None = None,
    headers: dict | None = None,
    path: str = "/model",
) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    headers = {**JSON, **(headers or {})}
    return httpx.post(served.url + path, content=content, headers=headers, timeout=30)


def call(served: Served, name: str, request: object, **kw) -> httpx.Response:
    return post(served, {"accessKey": served.keys[name], "request": request}, **kw)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    return body


def test_success_on_both_paths(served: Served):
    for path in ("/model", "/api/altus-ds-1/models/call-model"):
        r = call(served, "add", {"a": 3, "b": 5}, path=path)
        assert r.status_code == 200
        body = r.json()
        assert body["success"] is True and body["response"] == 8
        assert body["ReplicaID"].startswith("add-")


def test_cli_call_and_sample(served: Served):
    out = served.cli("call", "srv/add").stdout
    assert json.loads(out)["response"] == 8
    sample = served.cli("sample", "srv/add", "--lang", "shell").stdout
    result = subprocess.run(["bash", "-c", sample], capture_output=True, text=True, timeout=30)
    assert json.loads(result.stdout)["response"] == 8
    assert served.keys["add"] in sample
    python = served.cli("sample", "srv/add", "--lang", "python").stdout
    assert "requests.post" in python and served.keys["add"] in python
    assert python.startswith("# needs requests: pip install requests\n")
    compile(python, "sample.py", "exec")  # the note is a comment: the sample still runs
    r_sample = served.cli("sample", "srv/add", "--lang", "r").stdout
    assert (
        r_sample.startswith('# needs httr: install.packages("httr")\n')
        and "library(httr)" in r_sample
    )


def test_the_sample_of_a_model_with_authentication_sends_the_api_key(served: Served):
    """Before: no Authorization header, so the sample got auth.api_key_required. Now the
    samples send $CDSW_TUI_API_KEY (never a key: only hashes are kept) and say so."""
    import os

    sample = served.cli("sample", "srv/locked", "--lang", "shell").stdout
    assert "apikey create" in sample.splitlines()[0] and served.api_key not in sample
    env = {**os.environ, "CDSW_TUI_API_KEY": served.api_key}
    result = subprocess.run(
        ["bash", "-c", sample], capture_output=True, text=True, timeout=30, env=env
    )
    assert json.loads(result.stdout)["response"] == 8, result.stdout
    for lang in ("python", "r"):
        text = served.cli("sample", "srv/locked", "--lang", lang).stdout
        assert "CDSW_TUI_API_KEY" in text and "Authorization" in text, text
    compile(served.cli("sample", "srv/locked", "--lang", "python").stdout, "s.py", "exec")
    assert "Authorization" not in served.cli("sample", "srv/add").stdout


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'"text"', b'{"accessKey": "x"}', b"\xff\xfe", b""],
    ids=["not-json", "array", "string", "no-request", "bad-utf8", "empty"],
)
def test_400_request_invalid(served: Served, raw: bytes):
    assert_error(post(served, None, raw=raw), 400, "request.invalid")


def test_401_invalid_key(served: Served):
    assert_error(post(served, {"request": {}}), 401, "auth.invalid_key")
    assert_error(post(served, {"accessKey": "x" * 32, "request": {}}), 401, "auth.invalid_key")
    assert_error(post(served, {"accessKey": 12, "request": {}}), 401, "auth.invalid_key")


def test_401_api_key_required(served: Served):
    assert_error(call(served, "locked", {"a": 1, "b": 2}), 401, "auth.api_key_required")
    bad = {"Authorization": "Bearer nope"}
    assert_error(
        call(served, "locked", {"a": 1, "b": 2}, headers=bad), 401, "auth.api_key_required"
    )
    good = {"Authorization": f"Bearer {served.api_key}"}
    assert call(served, "locked", {"a": 1, "b": 2}, headers=good).json()["response"] == 3


def test_413_too_large_with_length_and_chunked(served: Served):
    limit = 5 * 1024 * 1024
    prefix = b'{"accessKey": "%s", "request": "' % served.keys["add"].encode()
    body = prefix + b"x" * (limit + 1 - len(prefix) - 2) + b'"}'
    assert len(body) == limit + 1
    assert_error(post(served, None, raw=body), 413, "request.too_large")

    def chunks():
        yield prefix
        for _ in range(6):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    r = httpx.post(served.url + "/model", content=chunks(), timeout=30, headers=JSON)
    assert_error(r, 413, "request.too_large")
    # exactly at the limit is read and answered by the model
    ok = prefix + b"x" * (limit - len(prefix) - 2) + b'"}'
    assert len(ok) == limit
    assert_error(
        post(served, None, raw=ok), 500, "model.error"
    )  # add() of a string: the model's own error


def test_429_busy_after_the_wait(served: Served):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, served, "slow", {"s": 2.5})
        time.sleep(0.3)
        start = time.monotonic()
        second = pool.submit(call, served, "slow", {"s": 0})
        busy = second.result()
        waited = time.monotonic() - start
        assert first.result().status_code == 200
    assert_error(busy, 429, "model.busy")
    assert 0.9 <= waited < 2.4


def test_503_not_deployed(served: Served):
    assert_error(call(served, "idle", {"a": 1, "b": 2}), 503, "model.not_deployed")


def test_500_model_error_keeps_the_traceback_in_the_log(served: Served):
    body = assert_error(call(served, "boom", {"x": 1}), 500, "model.error")
    assert "ValueError: bad input" in body["error"]["message"]
    assert body["ReplicaID"].startswith("boom-")
    time.sleep(0.3)
    logs = served.cli("logs", "srv/boom").stdout
    assert "Traceback" in logs and " ERR " in logs and "ValueError: bad input" in logs


def test_500_invalid_response(served: Served):
    assert_error(call(served, "weird", {}), 500, "model.invalid_response")


def test_502_replica_failed_then_restarted(served: Served):
    body = assert_error(call(served, "die", {"die": True}), 502, "replica.failed")
    assert body["ReplicaID"].startswith("die-")
    deadline = time.monotonic() + 15
    while call(served, "die", {}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    model = models.resolve(served.wb, "srv/die")
    replica = deployments.replicas_of(served.wb, models.active_deployment(served.wb, model))[0]
    assert replica.restarts >= 1 and replica.name == body["ReplicaID"]


def test_504_timeout_and_the_replica_comes_back(served: Served):
    start = time.monotonic()
    assert_error(call(served, "slow", {"s": 10}), 504, "model.timeout")
    assert time.monotonic() - start < 6
    deadline = time.monotonic() + 15
    while call(served, "slow", {"s": 0}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_replica_environment(served: Served):
    env = call(served, "env", {}).json()["response"]
    model = models.resolve(served.wb, "srv/env")
    d = models.active_deployment(served.wb, model)
    assert env["LEVEL"] == "project" and env["LEVEL_GLOBAL"] == "g" and env["LEVEL_MODEL"] == "m"
    assert env["CDSW_PROJECT"] == "srv" and env["CDSW_MODEL_NAME"] == "env"
    assert env["CDSW_MODEL_ID"] == str(model.id) and env["CDSW_DEPLOYMENT_ID"] == str(d.id)
    assert env["CDSW_BUILD_NUMBER"] == "1" and env["CDSW_REPLICA_ID"].startswith(
        f"env-{model.id}-{d.id}-"
    )
    assert env["CDSW_PROJECT_ID"]


def test_health_and_metrics(served: Served):
    health = httpx.get(served.url + "/health").json()
    assert health["status"] == "ok" and health["replicas"] >= 6
    call(served, "add", {"a": 1, "b": 1})
    text = httpx.get(served.url + "/metrics").text
    assert 'cdsw_requests_total{code="ok",deployment=' in text
    assert "cdsw_request_seconds_bucket" in text and "cdsw_replicas_ready" in text


def test_regenerated_key_stops_working_at_once(served: Served):
    old = served.keys["add"]
    served.cli("model", "regenerate-key", "srv/add", "--yes")
    new = served.key("add")
    assert_error(
        post(served, {"accessKey": old, "request": {"a": 1, "b": 1}}), 401, "auth.invalid_key"
    )
    assert post(served, {"accessKey": new, "request": {"a": 1, "b": 1}}).json()["response"] == 2
    served.keys["add"] = new


def test_keys_never_reach_the_logs(served: Served):
    secrets = [*served.keys.values(), served.api_key]
    for path in served.home.rglob("*.log"):
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{path} holds a key"


def tracked(served: Served, count: int) -> list[dict]:
    """The model's tracked records, once ``count`` have been filed."""
    deadline = time.monotonic() + 10
    while True:
        records = json.loads(served.cli("metrics", "srv/scored", "--json").stdout)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_cdsw_module_metrics(served: Served, tmp_path: Path):
    from cdsw_tui.resources import PYLIB

    body = call(served, "scored", {"a": 21}).json()
    assert body["success"] and body["response"]["prediction"] == 42
    uuid = body["response"]["uuid"]
    assert len(uuid) == 36
    [record] = tracked(served, 1)
    assert (record["uuid"], record["metrics"], record["build"]) == (uuid, {"input_a": 21}, 1)
    assert record["replica"].startswith("scored-") and record["end_ms"] >= record["start_ms"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"])  # ISO, as listings
    assert '{"input_a": 21}' in served.cli("metrics", "srv/scored").stdout  # JSON, not repr
    # a script of the home's owner reads them back, adds ground truth and an aggregate
    model = models.resolve(served.wb, "srv/scored")
    script = tmp_path / "monitor.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, time
            import cdsw
            now = int(time.time() * 1000)
            found = cdsw.read_metrics(model_crn="crn:cdsw-tui:model/{model.id}")
            call = found["metrics"][0]
            cdsw.track_delayed_metrics({{"truth": 42}}, call["predictionUuid"])
            cdsw.track_aggregate_metrics(
                {{"accuracy": 1.0}}, call["startTimeStampMs"], now,
                model_deployment_crn=call["modelDeploymentCrn"],
            )
            window = cdsw.read_metrics(
                model_deployment_crn=call["modelDeploymentCrn"],
                start_timestamp_ms=call["startTimeStampMs"], end_timestamp_ms=now,
            )
            late = cdsw.read_metrics(model_crn="{model.id}", start_timestamp_ms=now + 60000)
            print(json.dumps([window, late]))
            """
        )
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(PYLIB),
        CDSW_TUI_HOME=str(served.home),
        CDSW_TUI_GATEWAY_URL=served.url,
    )
    env.pop("CDSW_METRICS_TOKEN", None)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    window, late = json.loads(done.stdout)
    assert [r["metrics"] for r in window["metrics"]] == [
        {"input_a": 21, "truth": 42},
        {"accuracy": 1.0},
    ]
    assert window["metrics"][0]["predictionUuid"] == uuid
    assert window["metrics"][1]["predictionUuid"] is None
    assert late["metrics"] == []
    # the service wants a token of this home: none, a forged one, another model's
    url = served.url + "/api/v1/metrics/read"
    payload = {"model_crn": str(model.id)}
    assert httpx.post(url, json=payload).status_code == 401
    forged = f"{model.id}:" + "0" * 64
    answer = httpx.post(url, json=payload, headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "auth.invalid_key"
    other = metrics.token(served.wb, int(model.id) + 1000)
    answer = httpx.post(url, json=payload, headers={"Authorization": f"Bearer {other}"})
    assert answer.status_code == 401, answer.text


def test_memory_limit_is_enforced_and_the_replica_recovers(served: Served):
    assert call(served, "hog", {"mb": 20}).json()["response"] == 20 * 1024 * 1024
    model = models.resolve(served.wb, "srv/hog")
    [before] = deployments.replicas_of(served.wb, models.active_deployment(served.wb, model))
    body = assert_error(call(served, "hog", {"mb": 600}), 500, "model.error")
    assert "MemoryError" in body["error"]["message"]
    # a heap at its limit is not trusted again: the replica is replaced, and says why
    deadline = time.monotonic() + 15
    while True:
        [replica] = deployments.replicas_of(served.wb, models.active_deployment(served.wb, model))
        if replica.restarts > before.restarts and replica.status == "running":
            break
        assert time.monotonic() < deadline, replica
        time.sleep(0.1)
    assert "out of memory" in replica.reason
    assert call(served, "hog", {"mb": 20}).json()["response"] == 20 * 1024 * 1024
    assert "out of memory" in served.cli("logs", "srv/hog").stdout


def test_model_health_needs_no_key_and_shows_none(served: Served):
    r = httpx.get(served.url + "/health/srv/add")
    assert r.status_code == 200, r.text
    body = r.json()
    deployment = models.active_deployment(served.wb, models.resolve(served.wb, "srv/add"))
    assert body["status"] == "ready" and body["deployment"] == deployment.id
    assert body["build"] == 1 and body["replicas"]["ready"] >= 1
    assert set(body["latency_ms"]) == {"calls", "p50", "p95", "p99"}
    assert all(key not in r.text for key in served.keys.values())
    down = assert_error(httpx.get(served.url + "/health/srv/idle"), 503, "model.not_deployed")
    assert down["status"] == "unavailable" and down["replicas"]["ready"] == 0
    assert_error(httpx.get(served.url + "/health/srv/nothing"), 404, "request.invalid")
    assert_error(httpx.post(served.url + "/health/srv/add"), 405, "request.invalid")


def test_requests_are_logged_without_bodies(served: Served):
    marker = "zebra-7f3a"
    ok = call(served, "add", {"a": 1, "b": 2, "note": marker})
    assert ok.status_code == 200
    assert_error(call(served, "boom", {"why": marker}), 500, "model.error")
    deadline = time.monotonic() + 10
    while True:
        listed = json.loads(served.cli("requests", "srv/boom", "--json").stdout)
        if listed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    last = listed[-1]
    assert last["status"] == 500 and last["code"] == "model.error"
    assert last["replica"].startswith("boom-") and last["bytes_in"] > 0 and last["ms"] > 0
    assert set(last) == {
        "time", "model", "deployment", "replica", "status", "code", "ms", "bytes_in", "bytes_out"
    }  # fmt: skip
    while not json.loads(served.cli("requests", "srv/add", "--json").stdout):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    human = served.cli("requests", "srv/add").stdout
    assert "STATUS" in human and "last minute:" in human and "p99" in human
    files = list((served.home / "logs").rglob("requests.jsonl"))
    assert files and all(marker not in f.read_text() for f in files)
    assert all(served.keys[name] not in f.read_text() for f in files for name in served.keys)
    health = httpx.get(served.url + "/health/srv/add").json()
    assert health["latency_ms"]["calls"] >= 1 and health["latency_ms"]["p50"] > 0


def test_requests_follow_prints_new_calls(served: Served):
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdsw_tui", "requests", "srv/env", "--follow", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=served.env,
    )
    try:
        time.sleep(1.0)
        assert call(served, "env", {}).status_code == 200
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert json.loads(line)["model"] == "srv/env"
    finally:
        proc.kill()
        proc.wait()


def test_openapi_describes_the_call(served: Served):
    from openapi_spec_validator import validate

    r = httpx.get(served.url + "/models/srv/add/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    request = doc["components"]["schemas"]["Call"]["properties"]["request"]
    assert request["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer"}}
    assert set(doc["paths"]) == {"/model", "/api/altus-ds-1/models/call-model"}
    assert all(key not in r.text for key in served.keys.values())
    printed = json.loads(served.cli("openapi", "srv/add").stdout)
    assert printed["components"] == doc["components"]
    locked = httpx.get(served.url + "/models/srv/locked/openapi.json").json()
    assert locked["security"] == [{"apiKey": []}]
    assert_error(httpx.get(served.url + "/models/srv/none/openapi.json"), 404, "request.invalid")


def test_followed_calls_line_up_under_the_table(served: Served):
    """Before: a followed call was its fields two spaces apart, under no column. Now
    each field starts where its column does."""
    import re

    assert call(served, "add", {"a": 1, "b": 2}).status_code == 200
    deadline = time.monotonic() + 10
    while not json.loads(served.cli("requests", "srv/add", "--json").stdout):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    follow = subprocess.Popen(
        [sys.executable, "-m", "cdsw_tui", "requests", "srv/add", "--follow", "--tail", "1"],
        stdout=subprocess.PIPE, text=True, env=served.env,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        head, first = follow.stdout.readline(), follow.stdout.readline()
        assert head.startswith("TIME") and first[:4].isdigit(), (head, first)
        follow.stdout.readline()  # the last minute's figures
        assert call(served, "add", {"a": 2, "b": 2}).status_code == 200
        followed = follow.stdout.readline()
    finally:
        follow.kill()
        follow.wait()
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    for line in (first, followed):
        assert [m.start() for m in re.finditer(r"\S+", line)] == starts, (head, line)
