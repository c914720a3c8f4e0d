"""Model code as an attacker writes it (issue 24): it makes up an error code on every
call, and prints what would take over the operator's terminal. A real controller and
real replicas; the model's tricks are plain Python any model may run."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import JSON, Served, Wire, post_bytes

MODELS_PY = """\
import itertools
import sys


def add(args):
    return args["a"] + args["b"]


def inventive(args):
    # the runner is in this process: from now on each call answers a code of its own
    replica = sys.modules["cdsw_tui.serving.runner.replica"]
    count = itertools.count()

    def call(self, raw):
        code = f"made.up.{next(count)}"
        return 500, code, replica.error_body(self.name, code, "a code of its own"), False

    replica.Replica.call = call
    return "inventive from now on"


def printer(args):
    print("title \\x1b]0;pwned\\x07 clip \\x1b]52;c;ZXZpbA==\\x07 clear \\x1b[2J end", flush=True)
    print("on stderr \\x1b[2J\\x9b1m", file=sys.stderr, flush=True)
    replica = sys.modules["cdsw_tui.serving.runner.replica"]
    code = "evil\\x1b]0;t\\x07"
    replica.Replica.call = lambda self, raw: (
        500, code, replica.error_body(self.name, code, "x"), False
    )
    return "printed"


def odd(args):
    replica = sys.modules["cdsw_tui.serving.runner.replica"]
    replica.Replica.call = lambda self, raw: (101, "", b"{}", False)
    return "odd from now on"
"""
NAMES = ("add", "inventive", "odd", "printer")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    s = Served(tmp_path_factory.mktemp("hostile"), {"models.py": MODELS_PY})
    s.cli("project", "create", "srv", "--path", str(s.project))
    for name in NAMES:
        s.cli("model", "create", f"srv/{name}", "--file", "models.py", "--function", name)
    s.wait_deployed(list(NAMES))
    s.keys = {name: s.key(name) for name in NAMES}
    yield s
    s.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def pipelined(w: Wire, data: bytes, calls: int, batch: int = 100) -> dict[int, int]:
    statuses: dict[int, int] = {}
    for _ in range(calls // batch):
        w.send(data * batch)
        for _ in range(batch):
            status = w.answer()[0]
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def test_made_up_error_codes_do_not_grow_the_metrics(hostile: Served):
    """100,000 calls, each answered with a code never seen before: /metrics stays small
    and counts them as model.error, the controller's memory stays flat, the request log
    keeps each call's own code. Before: a label per code, 34 MB of /metrics after 60k."""
    body = json.dumps({"accessKey": hostile.keys["inventive"], "request": {}}).encode()
    first = httpx.post(hostile.url + "/model", content=body, timeout=10, headers=JSON)
    assert first.json()["response"] == "inventive from now on"
    pid = json.loads(hostile.cli("status", "--json").stdout)["controller"]["pid"]
    data = post_bytes(body)
    w = Wire(hostile.port, timeout=30)
    try:
        assert pipelined(w, data, 10_000) == {500: 10_000}
        time.sleep(1.1)  # past the cache of /metrics
        httpx.get(hostile.url + "/metrics", timeout=30)
        warm = rss_mb(pid)
        assert pipelined(w, data, 90_000) == {500: 90_000}
    finally:
        w.close()
    time.sleep(1.1)
    text = httpx.get(hostile.url + "/metrics", timeout=30).text
    grown = rss_mb(pid) - warm
    print(f"\n100,000 made-up codes: /metrics {len(text)} bytes, controller +{grown:.1f} MB")
    assert "made.up" not in text and len(text) < 64 * 1024
    count = [
        line
        for line in text.splitlines()
        if line.startswith('cdsw_requests_total{code="model.error"')
        and 'model="srv/inventive"' in line
    ]
    assert len(count) == 1 and float(count[0].rsplit(" ", 1)[1]) == 100_000, count
    assert grown < 10, f"the controller grew {grown:.1f} MB"
    recent = json.loads(hostile.cli("requests", "srv/inventive", "--json").stdout)
    assert recent[-1]["code"].startswith("made.up.")


def test_metrics_are_rendered_at_most_once_a_second(hostile: Served):
    """Two scrapes within the cache's second are the same bytes, although a call came
    between them; a scrape after it counts the call."""
    body = json.dumps({"accessKey": hostile.keys["add"], "request": {"a": 1, "b": 2}}).encode()
    time.sleep(1.1)
    one = httpx.get(hostile.url + "/metrics", timeout=30).text
    assert (
        httpx.post(hostile.url + "/model", content=body, timeout=10, headers=JSON).status_code
        == 200
    )
    two = httpx.get(hostile.url + "/metrics", timeout=30).text
    assert one == two
    time.sleep(1.1)
    three = httpx.get(hostile.url + "/metrics", timeout=30).text
    assert three != two


def test_a_status_http_cannot_carry_is_a_502(hostile: Served):
    """A replica's answer with status 101 (model code can make its own) is 502
    model.invalid_response, never an HTTP 101 that would switch the caller's protocol."""
    body = json.dumps({"accessKey": hostile.keys["odd"], "request": {}}).encode()
    w = Wire(hostile.port)
    try:
        w.send(post_bytes(body))
        assert w.answer()[0] == 200
        w.send(post_bytes(body))
        status, _headers, reply = w.answer()
        assert (status, json.loads(reply)["error"]["code"]) == (502, "model.invalid_response")
    finally:
        w.close()


def in_a_terminal(s: Served, *args: str) -> bytes:
    """What ``cdsw-tui ARGS`` writes when its output is a terminal (a pseudo-terminal)."""
    master, slave = pty.openpty()
    out = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                return
            if not chunk:
                return
            out.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    proc = subprocess.run(
        [sys.executable, "-m", "cdsw_tui", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=s.env,
        timeout=60,
    )
    os.close(slave)
    reader.join(10)
    os.close(master)
    assert proc.returncode in (0, 1), bytes(out)
    return bytes(out)


def test_what_a_model_prints_cannot_drive_the_operators_terminal(hostile: Served):
    """OSC 0 (window title), OSC 52 (clipboard), CSI 2J (clear) and C1 CSI from model code
    reach a terminal written out through logs, requests and call; --raw, or a pipe, gets
    the bytes as they are."""
    body = json.dumps({"accessKey": hostile.keys["printer"], "request": {}}).encode()
    for _ in range(2):  # printed; then a code of its own with escapes in it
        httpx.post(hostile.url + "/model", content=body, timeout=10, headers=JSON)
    deadline = time.monotonic() + 20
    while b"[2J end" not in (piped := hostile.cli("logs", "srv/printer").stdout.encode()):
        assert time.monotonic() < deadline, piped
        time.sleep(0.2)
    assert b"\x1b]0;pwned\x07" in piped  # a pipe: as written
    shown = in_a_terminal(hostile, "logs", "srv/printer")
    assert b"\x1b" not in shown and b"\x07" not in shown and "\x9b".encode() not in shown
    assert rb"title \x1b]0;pwned\x07 clip \x1b]52;c;ZXZpbA==\x07 clear \x1b[2J end" in shown
    assert rb"on stderr \x1b[2J\x9b1m" in shown
    assert b"\x1b]0;pwned\x07" in in_a_terminal(hostile, "logs", "srv/printer", "--raw")
    recent = in_a_terminal(hostile, "requests", "srv/printer")
    assert b"\x1b" not in recent and rb"evil\x1b]0;t\x07" in recent, recent
    called = in_a_terminal(hostile, "call", "srv/printer", "{}")
    assert b"\x1b" not in called and b"evil" in called, called
