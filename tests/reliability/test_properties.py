"""Property-based tests (hypothesis) of the gateway's request handling and of every
validator the CLI and the forms use: whatever comes in, the answer is one of SPEC's."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdsw_tui.errors import ValidationError
from cdsw_tui.services import validation as v
from tests.helpers import JSON
from tests.reliability.conftest import Cluster

SPEC_ANSWERS = {
    200: {None},
    400: {"request.invalid"},
    401: {"auth.invalid_key"},
    413: {"request.too_large"},
    500: {"model.error", "model.invalid_response"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def check(response: httpx.Response) -> None:
    assert response.status_code in SPEC_ANSWERS, response.text
    body = response.json()
    code = None if body.get("success") else body["error"]["code"]
    assert code in SPEC_ANSWERS[response.status_code], body
    assert "ReplicaID" in body


@pytest.fixture(scope="module")
def client(cluster: Cluster):
    with httpx.Client(base_url=cluster.url, timeout=20, headers=JSON) as c:
        yield c


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=2000))
def test_any_bytes(cluster, client, raw: bytes):
    check(client.post("/model", content=raw))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=json_values, use_key=st.booleans())
def test_any_json_request(cluster, client, request, use_key: bool):
    key = cluster.model.access_key if use_key else "nope"
    check(client.post("/model", content=json.dumps({"accessKey": key, "request": request})))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    depth=st.integers(min_value=1, max_value=5000),
    big=st.integers(min_value=10**30, max_value=10**4000),
)
def test_deep_nesting_and_huge_numbers(cluster, client, depth: int, big: int):
    nested = "[" * depth + "]" * depth
    check(
        client.post(
            "/model", content=f'{{"accessKey": "{cluster.model.access_key}", "request": {nested}}}'
        )
    )
    check(
        client.post(
            "/model",
            content=f'{{"accessKey": "{cluster.model.access_key}", "request": {{"a": {big}}}}}',
        )
    )


def test_nul_bytes_and_invalid_utf8(cluster, client):
    key = cluster.model.access_key
    check(
        client.post(
            "/model", content=b'{"accessKey": "' + key.encode() + b'", "request": "a\x00b"}'
        )
    )
    check(client.post("/model", content=b'{"accessKey": "\xff\xfe", "request": {}}'))
    check(
        client.post(
            "/model", content=b'{"accessKey": "' + key.encode() + b'", "request": "\\u0000"}'
        )
    )


def test_chunked_body_without_length(cluster, client):
    key = cluster.model.access_key.encode()

    def parts():
        yield b'{"accessKey": "' + key + b'", '
        yield b'"request": {"a": 2, "b": 3}}'

    response = client.post("/model", content=parts())
    check(response)
    assert response.json()["response"] == {"sum": 5}


VALIDATORS = [
    v.name,
    v.kernel,
    v.runtime,
    v.replicas,
    v.cpu,
    v.memory,
    v.gpu,
    v.env_key,
    lambda x: v.json_text(x, "example_input"),
    lambda x: v.env_pairs([x]),
]


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=200), which=st.integers(min_value=0, max_value=len(VALIDATORS) - 1))
def test_validators_accept_or_name_the_problem(value: str, which: int):
    try:
        VALIDATORS[which](value)
    except ValidationError as exc:
        assert exc.message and "\n" not in exc.message.strip()
