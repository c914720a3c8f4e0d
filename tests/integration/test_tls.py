"""TLS on the gateway, over real sockets: HTTPS with the configured certificate, plain
HTTP refused on that port, a bad certificate one line at start; and the warning and the
API-key rule for a gateway other machines can reach."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cdsw_tui.config import load_settings
from cdsw_tui.services import models
from tests.conftest import Cli, write_project
from tests.helpers import one_line_error

ADD = "def add(args):\n    return args['a'] + args['b']\n"


def self_signed(folder: Path, name: str = "gw") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> tuple[Path, Path]:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("CDSW_TUI_TLS_CERT", str(cert))
    monkeypatch.setenv("CDSW_TUI_TLS_KEY", str(key))
    return cert, key


def test_the_gateway_serves_https_only_and_its_clients_trust_its_certificate(
    cli: Cli, home: Path, tmp_path: Path, tls: tuple[Path, Path]
):
    cert, _ = tls
    write_project(tmp_path / "code", {"m.py": ADD})
    cli("project", "create", "p", "--path", str(tmp_path / "code"))
    cli(
        "model", "create", "p/add", "--file", "m.py", "--function", "add",
        "--example-input", '{"a": 1, "b": 2}', "--wait",
    )  # fmt: skip
    # the CLI's own call goes over HTTPS and verifies the certificate
    assert cli("call", "p/add").json()["response"] == 3
    settings = load_settings(home)
    assert settings.gateway_url.startswith("https://127.0.0.1:")
    from cdsw_tui.services.context import Workbench

    wb = Workbench(settings)
    try:
        key = models.resolve(wb, "p/add").access_key
    finally:
        wb.close()
    body = {"accessKey": key, "request": {"a": 2, "b": 5}}
    trusted = ssl.create_default_context(cafile=str(cert))
    answer = httpx.post(f"{settings.gateway_url}/model", json=body, verify=trusted)
    assert answer.json()["response"] == 7
    # a client that does not trust the certificate is refused by its own TLS check
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{settings.gateway_url}/model", json=body)
    # plain HTTP on that port gets no answer: the handshake fails and the connection ends
    with socket.create_connection(("127.0.0.1", settings.gateway_port), timeout=5) as sock:
        sock.sendall(b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        sock.settimeout(5)
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"HTTP/1.1 200" not in reply and key.encode() not in reply
    # the samples name the certificate to verify with
    sample = cli("sample", "p/add").out
    assert "https://127.0.0.1:" in sample and f"--cacert {cert}" in sample


def test_a_certificate_that_is_not_its_keys_fails_at_start_in_one_line(
    cli: Cli, tmp_path: Path, tls: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
):
    _, other_key = self_signed(tmp_path, "other")
    monkeypatch.setenv("CDSW_TUI_TLS_KEY", str(other_key))
    result = cli("serve", check=False, timeout=30)
    line = one_line_error(result)
    assert "TLS_CERT" in line and "not the certificate's" in line
    monkeypatch.setenv("CDSW_TUI_TLS_KEY", str(tmp_path / "missing.key"))
    line = one_line_error(cli("serve", check=False, timeout=30))
    assert "TLS_KEY" in line and "not a readable file" in line


def test_serving_beyond_loopback_without_tls_warns_and_api_keys_can_be_required(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # the warning comes before anything listens: a port that is taken ends the serve at once
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--host", "0.0.0.0", "--port", str(port), check=False, timeout=30)
    assert "warning: the gateway listens on 0.0.0.0 without TLS" in result.err
    assert "clear text" in result.err
    # REQUIRE_API_KEYS: a model without auth of its own still asks for an API key
    monkeypatch.setenv("CDSW_TUI_REQUIRE_API_KEYS", "true")
    write_project(tmp_path / "code", {"m.py": ADD})
    cli("project", "create", "p", "--path", str(tmp_path / "code"))
    cli("model", "create", "p/add", "--file", "m.py", "--function", "add", "--wait")
    refused = cli("call", "p/add", '{"a": 1, "b": 1}', check=False)
    assert refused.code == 1 and "auth.api_key_required" in refused.out
    api_key = cli("apikey", "create", "ci").out.strip()
    allowed = cli("call", "p/add", '{"a": 1, "b": 1}', "--api-key", api_key)
    assert allowed.json()["response"] == 2
