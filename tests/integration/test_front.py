"""The gateway's HTTP front over real sockets, with each parser it can run on (llhttp
through httptools, and h11): keep-alive and pipelining, bodies however they are cut, the
size limit to the byte, every error of docs/gateway.md, and the HTTP-level attacks
(smuggling, huge heads, slow heads and bodies) answered in SPEC's JSON."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import Served, Wire, post_bytes

ROOT = Path(__file__).resolve().parents[2]
MB5 = 5 * 1024 * 1024
PER_PEER = 40  # connections from one address (the tests below use a few from 127.0.0.1)

MODELS_PY = """\
import os
import time


def add(args):
    return args["a"] + args["b"]


def slow(args):
    time.sleep(args.get("s", 1))
    return "slept"


def boom(args):
    raise ValueError("bad input")


def weird(args):
    return {1, 2}


def big(args):
    return "x" * (2 * 1024 * 1024)


def die(args):
    if args.get("die"):
        os._exit(1)
    return "alive"
"""
MODELS = {"add": "add", "slow": "slow", "boom": "boom", "weird": "weird", "big": "big"}
MODELS |= {"die": "die", "locked": "add"}


@pytest.fixture(scope="module", params=["httptools", "h11"])
def front(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    s = Served(
        tmp_path_factory.mktemp(f"front-{request.param}"),
        {"models.py": MODELS_PY},
        config=f'http_parser = "{request.param}"\nheader_timeout = 1.5\n'
        f"max_response_bytes = 1048576\nmax_connections_per_peer = {PER_PEER}\n"
        'allowed_hosts = ".models.example, gateway.test"\ncors_origins = "https://ok.example"\n',
    )
    s.cli("project", "create", "srv", "--path", str(s.project))
    for name, fn in MODELS.items():
        s.cli("model", "create", f"srv/{name}", "--file", "models.py", "--function", fn)
    s.cli("model", "create", "srv/idle", "--file", "models.py", "--function", "add", "--no-deploy")
    s.cli("model", "auth", "srv/locked", "on")
    s.api_key = s.cli("apikey", "create", "ci").stdout.strip()
    s.wait_deployed(list(MODELS))
    s.keys = {name: s.key(name) for name in [*MODELS, "idle"]}
    s.seen = set()  # (status, code) of every error these tests got
    yield s
    s.close()


def body_of(front: Served, name: str = "add", request: object = None, **extra) -> bytes:
    request = {"a": 3, "b": 5} if request is None else request
    return json.dumps({"accessKey": front.keys[name], "request": request, **extra}).encode()


def wire(front: Served) -> Wire:
    return Wire(front.port)


def error(front: Served, status: int, headers: dict, body: bytes, want: tuple[int, str]) -> None:
    """An answer in SPEC's failure shape, with the status and code wanted."""
    assert (status, json.loads(body)["error"]["code"]) == want, body[:300]
    reply = json.loads(body)
    assert reply["success"] is False and reply["error"]["message"]
    assert "\n" not in reply["error"]["message"]
    assert headers["content-type"] == "application/json"
    front.seen.add(want)


def ok(status: int, body: bytes) -> object:
    assert status == 200, body[:300]
    reply = json.loads(body)
    assert reply["success"] is True
    return reply["response"]


def test_keep_alive_and_five_pipelined_requests_answered_in_order(front: Served):
    w = wire(front)
    try:
        paths = ["/model", "/api/altus-ds-1/models/call-model"] * 3
        w.send(
            b"".join(
                post_bytes(body_of(front, request={"a": i, "b": 10}), paths[i]) for i in range(5)
            )
        )
        assert [ok(*w.answer()[::2]) for _ in range(5)] == [10, 11, 12, 13, 14]
        # the connection is still open: one more, then another path in the same stream
        w.send(post_bytes(body_of(front)) + b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert ok(*w.answer()[::2]) == 8
        status, _, health = w.answer()
        assert status == 200 and json.loads(health)["status"] == "ok"
    finally:
        w.close()


def test_other_paths_share_a_connection_with_calls(front: Served):
    w = wire(front)
    try:
        w.send(
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
            + post_bytes(body_of(front))
            + b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n"
            + b"GET /model HTTP/1.1\r\nHost: localhost\r\n\r\n"
            + b"GET /health/srv/add HTTP/1.1\r\nHost: localhost\r\n\r\n"
            + post_bytes(body_of(front, request={"a": 1, "b": 1}))
        )
        status, headers, metrics = w.answer()
        assert status == 200 and b"cdsw_requests" in metrics
        assert headers["content-type"].startswith("text/plain")
        assert ok(*w.answer()[::2]) == 8
        error(front, *w.answer(), (404, "request.invalid"))
        error(front, *w.answer(), (405, "request.invalid"))
        status, _, health = w.answer()
        assert status == 200 and json.loads(health)["replicas"]["ready"] == 1
        assert ok(*w.answer()[::2]) == 2
    finally:
        w.close()


def test_a_body_cut_byte_by_byte_and_a_head_too(front: Served):
    data = post_bytes(body_of(front))
    w = wire(front)
    try:
        for i in range(len(data)):
            w.send(data[i : i + 1])
            if i % 16 == 0:
                time.sleep(0.001)
        assert ok(*w.answer()[::2]) == 8
    finally:
        w.close()


def test_chunked_bodies_in_odd_pieces(front: Served):
    body = body_of(front, request={"a": 20, "b": 22})
    pieces = [body[:1], body[1:7], body[7:40], body[40:]]
    chunked = b"".join(b"%X\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    w = wire(front)
    try:
        w.send(head + chunked[:5])
        time.sleep(0.05)
        w.send(chunked[5:])
        assert ok(*w.answer()[::2]) == 42
        w.send(head + chunked)  # and again on the same connection
        assert ok(*w.answer()[::2]) == 42
    finally:
        w.close()


def padded(front: Served, size: int) -> bytes:
    """A valid call of exactly ``size`` bytes."""
    start = body_of(front, pad="")
    return start[:-2] + b"x" * (size - len(start)) + start[-2:]


def test_the_size_limit_to_the_byte(front: Served):
    exact = padded(front, MB5)
    assert len(exact) == MB5
    w = wire(front)
    try:
        w.send(post_bytes(exact))
        assert ok(*w.answer()[::2]) == 8
    finally:
        w.close()
    over = padded(front, MB5 + 1)
    w = wire(front)
    try:  # refused on its head, before the body is sent
        w.send(post_bytes(over)[: -len(over)])
        error(front, *w.answer(), (413, "request.too_large"))
        assert w.closed()
    finally:
        w.close()
    w = wire(front)
    try:  # chunked: refused as soon as the count passes the limit
        w.send(
            b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(0, len(over), 1 << 20):
            piece = over[i : i + (1 << 20)]
            try:
                w.send(b"%X\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break
        error(front, *w.answer(), (413, "request.too_large"))
    finally:
        w.close()


def test_expect_100_continue(front: Served):
    body = body_of(front)
    w = wire(front)
    try:
        w.send(post_bytes(body, headers="Expect: 100-continue\r\n")[: -len(body)])
        status, _, _ = w.answer()
        assert status == 100
        w.send(body)
        assert ok(*w.answer()[::2]) == 8
        big = padded(front, MB5 + 1)  # over the limit: 413 instead of 100, and no body read
        w.send(post_bytes(big, headers="Expect: 100-continue\r\n")[: -len(big)])
        error(front, *w.answer(), (413, "request.too_large"))
    finally:
        w.close()


SMUGGLING = [
    # both a length and chunked: the second request would hide in the body
    b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"POST /model HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n"
    b"\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # two lengths
    b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}"
    b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # a transfer coding that is not chunked last
    b"POST /model HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"0\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # a header name with a space before its colon
    b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Length : 40\r\n\r\n{}"
    b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
]


@pytest.mark.parametrize("attempt", range(len(SMUGGLING)))
def test_smuggling_is_refused_and_nothing_behind_it_is_answered(front: Served, attempt: int):
    w = wire(front)
    try:
        w.send(SMUGGLING[attempt])
        error(front, *w.answer(), (400, "request.invalid"))
        assert w.closed(), "a request hidden behind the refused one was answered"
    finally:
        w.close()


def test_a_refusal_comes_after_the_answers_before_it(front: Served):
    w = wire(front)
    try:
        w.send(
            post_bytes(body_of(front, "slow", {"s": 0.3}))
            + post_bytes(body_of(front))
            + b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"
        )
        assert ok(*w.answer()[::2]) == "slept"
        assert ok(*w.answer()[::2]) == 8
        error(front, *w.answer(), (400, "request.invalid"))
        assert w.closed()
    finally:
        w.close()


def refused(front: Served, data: bytes, want: tuple[int, str]) -> float:
    """Send ``data`` on a new connection: the error it gets, after how many seconds."""
    start = time.monotonic()
    w = wire(front)
    try:
        w.send(data)
        error(front, *w.answer(), want)
        return time.monotonic() - start
    finally:
        w.close()


def test_heads_over_their_limits(front: Served):
    refused(
        front,
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        (414, "request.invalid"),
    )
    many = b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 150 + b"\r\n"
    refused(front, many, (431, "request.invalid"))
    big = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    refused(front, big, (431, "request.invalid"))


def test_slow_heads_and_bodies_are_timed_out(front: Served):
    waited = refused(
        front, b"POST /model HTTP/1.1\r\nHost: localhost\r\n", (408, "request.invalid")
    )
    assert 1.0 < waited < 5  # HEADER_TIMEOUT is 1.5 s here
    # 12 of 100 bytes, then nothing: the request timeout (3 s here)
    trickle = b'POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{"accessKey"'
    assert 2.5 < refused(front, trickle, (400, "request.invalid")) < 8


def test_upgrades_and_bad_bytes_are_refused(front: Served):
    for data in (
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),  # a TLS hello
    ):
        refused(front, data, (400, "request.invalid"))


def test_http_1_0_closes_unless_asked_to_keep_alive(front: Served):
    body = body_of(front)
    w = wire(front)
    try:
        w.send(post_bytes(body).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        status, headers, answer = w.answer()
        assert ok(status, answer) == 8 and headers["connection"] == "close"
        assert w.closed()
    finally:
        w.close()
    w = wire(front)
    try:
        keep = post_bytes(body, headers="Connection: keep-alive\r\n").replace(
            b"HTTP/1.1", b"HTTP/1.0", 1
        )
        w.send(keep)
        assert ok(*w.answer()[::2]) == 8
        w.send(keep)
        assert ok(*w.answer()[::2]) == 8
    finally:
        w.close()


def test_a_peer_over_its_cap_is_turned_away(front: Served):
    """Connections from 127.0.0.9 up to its cap are served; one more gets 503 in SPEC's
    JSON at once and is closed; another address is served meanwhile."""
    held = [Wire(front.port, source="127.0.0.9") for _ in range(PER_PEER)]
    try:
        held[0].send(post_bytes(body_of(front)))
        assert ok(*held[0].answer()[::2]) == 8
        over = Wire(front.port, source="127.0.0.9")
        status, headers, body = over.answer()  # before it sent anything
        error(front, status, headers, body, (503, "gateway.overloaded"))
        assert "MAX_CONNECTIONS_PER_PEER" in json.loads(body)["error"]["message"]
        assert headers["connection"] == "close" and headers["retry-after"] == "1"
        assert over.closed()
        other = wire(front)
        other.send(post_bytes(body_of(front)))
        assert ok(*other.answer()[::2]) == 8
        other.close()
    finally:
        for w in held:
            w.close()
    time.sleep(0.2)  # counted out once the front sees them close
    again = Wire(front.port, source="127.0.0.9")
    again.send(post_bytes(body_of(front)))
    assert ok(*again.answer()[::2]) == 8
    again.close()


def send(front: Served, data: bytes) -> tuple[int, dict[str, str], bytes]:
    w = wire(front)
    try:
        w.send(data)
        return w.answer()
    finally:
        w.close()


def test_calls_are_json_from_allowed_hosts_and_origins(front: Served):
    """A call needs a JSON content type (a form cannot send one); a Host the gateway does
    not go by is refused before anything echoes it; CORS headers only for CORS_ORIGINS."""
    call = body_of(front)
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        data = post_bytes(call).replace(b"application/json", media.encode())
        error(front, *send(front, data), (415, "request.invalid"))
    for media in ("application/json; charset=utf-8", "Application/JSON", "application/x+json"):
        data = post_bytes(call).replace(b"application/json", media.encode())
        assert ok(*send(front, data)[::2]) == 8
    for host in ("evil.example", "models.example.evil", "localhost.evil:8787"):
        data = post_bytes(call).replace(b"Host: localhost", b"Host: " + host.encode())
        status, headers, reply = send(front, data)
        error(front, status, headers, reply, (400, "request.invalid"))
        assert "Host" in json.loads(reply)["error"]["message"]
        spec = b"GET /models/srv/add/openapi.json HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()
        status, _, reply = send(front, spec)
        assert status == 400 and host.encode() not in reply
    for host in ("localhost", "127.0.0.1:1", "[::1]:80", "a.models.example", "gateway.test"):
        spec = b"GET /models/srv/add/openapi.json HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()
        status, _, reply = send(front, spec)
        assert status == 200 and json.loads(reply)["servers"][0]["url"].endswith(host)
    # CORS: none for an origin not listed, preflight and answer for the one listed
    other = post_bytes(call, headers="Origin: https://evil.example\r\n")
    status, headers, _ = send(front, other)
    assert status == 200 and "access-control-allow-origin" not in headers
    preflight = (
        b"OPTIONS /model HTTP/1.1\r\nHost: localhost\r\nOrigin: %s\r\n"
        b"Access-Control-Request-Method: POST\r\n\r\n"
    )
    status, headers, _ = send(front, preflight % b"https://evil.example")
    assert status == 405 and "access-control-allow-origin" not in headers
    status, headers, _ = send(front, preflight % b"https://ok.example")
    assert status == 204 and headers["access-control-allow-origin"] == "https://ok.example"
    assert "Content-Type" in headers["access-control-allow-headers"]
    listed = post_bytes(call, headers="Origin: https://ok.example\r\n")
    status, headers, _ = send(front, listed)
    assert status == 200 and headers["access-control-allow-origin"] == "https://ok.example"


def gzipped(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, 6)


def test_compressed_bodies_are_limited_once_decoded(front: Served):
    """gzip and deflate bodies are decoded by the front for every path, and refused in
    SPEC's JSON as soon as they would pass the limit decoded (a 200 MB bomb of 200 KB);
    broken ones are 400, an encoding it cannot decode 415."""
    import zlib

    call = body_of(front)
    for encoding, packed in (("gzip", gzipped(call)), ("deflate", zlib.compress(call))):
        data = post_bytes(packed, headers=f"Content-Encoding: {encoding}\r\n")
        assert ok(*send(front, data)[::2]) == 8
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = b"".join(bomb.compress(b"\0" * (1 << 20)) for _ in range(200)) + bomb.flush()
    assert len(packed) < 300_000
    data = post_bytes(packed, headers="Content-Encoding: gzip\r\n")
    status, headers, reply = send(front, data)
    error(front, status, headers, reply, (413, "request.too_large"))
    metrics = post_bytes(packed, "/api/v1/metrics/read", "Content-Encoding: gzip\r\n")
    error(front, *send(front, metrics), (413, "request.too_large"))
    # the metrics API's own 1 MB limit holds for what is decoded, too
    two_mb = gzipped(json.dumps({"x": "y" * (2 << 20)}).encode())
    data = post_bytes(two_mb, "/api/v1/metrics/read", "Content-Encoding: gzip\r\n")
    error(front, *send(front, data), (413, "request.too_large"))
    for broken in (b"not gzip at all", gzipped(call)[:-12]):
        data = post_bytes(broken, headers="Content-Encoding: gzip\r\n")
        error(front, *send(front, data), (400, "request.invalid"))
    data = post_bytes(call, headers="Content-Encoding: br\r\n")
    error(front, *send(front, data), (415, "request.invalid"))


def test_the_metrics_api_has_the_calls_limits(front: Served):
    """Without a token: a body that trickles is cut after REQUEST_TIMEOUT (3 s here), and
    100,000-deep nesting is 400, each in SPEC's JSON."""
    w = wire(front)
    try:
        w.send(
            b"POST /api/v1/metrics/read HTTP/1.1\r\nHost: localhost\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a": 1'
        )
        began = time.monotonic()
        status, headers, reply = w.answer()
        error(front, status, headers, reply, (400, "request.invalid"))
        assert time.monotonic() - began < 3 + 1.5
    finally:
        w.close()
    deep = b"[" * 100_000 + b"]" * 100_000
    error(front, *send(front, post_bytes(deep, "/api/v1/metrics/read")), (400, "request.invalid"))


def test_every_error_of_the_gateway_document(front: Served):
    """Each row of docs/gateway.md's table through the front; the rows the wire tests
    above got (413, 408, 414, 431, smuggling's 400) count as well."""

    def post(body: bytes, headers: dict | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json", **(headers or {})}
        return httpx.post(
            front.url + "/model", content=body, timeout=30, trust_env=False, headers=headers
        )

    def expect(r: httpx.Response, want: tuple[int, str]) -> None:
        error(front, r.status_code, dict(r.headers), r.content, want)

    expect(post(b"{nope"), (400, "request.invalid"))
    expect(post(b'{"accessKey": "x"}'), (400, "request.invalid"))
    expect(post(b"[1]"), (400, "request.invalid"))
    expect(post(b'{"request": {}, "a": NaN}'), (400, "request.invalid"))
    expect(
        post(json.dumps({"accessKey": "z" * 32, "request": {}}).encode()), (401, "auth.invalid_key")
    )
    expect(post(body_of(front, "locked")), (401, "auth.api_key_required"))
    auth = {"Authorization": f"Bearer {front.api_key}"}
    assert (
        ok(*(lambda r: (r.status_code, r.content))(post(body_of(front, "locked"), headers=auth)))
        == 8
    )
    expect(post(body_of(front, "idle")), (503, "model.not_deployed"))
    expect(post(body_of(front, "boom", {})), (500, "model.error"))
    expect(post(body_of(front, "weird", {})), (500, "model.invalid_response"))
    expect(post(body_of(front, "big", {})), (502, "model.invalid_response"))
    expect(post(body_of(front, "slow", {"s": 5})), (504, "model.timeout"))  # over 3 s
    expect(post(body_of(front, "die", {"die": True})), (502, "replica.failed"))
    # busy: one call holds the only replica past the 1 s busy timeout
    holder = threading.Thread(target=post, args=(body_of(front, "slow", {"s": 2}),))
    holder.start()
    time.sleep(0.3)
    expect(post(body_of(front, "slow", {"s": 0})), (429, "model.busy"))
    holder.join()
    documented = {
        (int(status), code)
        for status, code in re.findall(
            r"^\| (\d{3}) \| `([a-z_.]+)` \|", (ROOT / "docs" / "gateway.md").read_text(), re.M
        )
    }
    if len(front.seen) < len(documented):  # run alone: get the wire tests' rows too
        test_the_size_limit_to_the_byte(front)
        test_heads_over_their_limits(front)
        test_slow_heads_and_bodies_are_timed_out(front)
        test_other_paths_share_a_connection_with_calls(front)
        test_a_peer_over_its_cap_is_turned_away(front)
        test_calls_are_json_from_allowed_hosts_and_origins(front)
    assert documented - front.seen == set()


def test_no_key_reaches_a_log(front: Served):
    keys = [k.encode() for k in front.keys.values()] + [front.api_key.encode()]
    for path in front.home.rglob("*"):
        if path.is_file() and not path.name.startswith("cdsw.db"):
            data = path.read_bytes()
            assert not any(k in data for k in keys), f"{path} holds a key"
