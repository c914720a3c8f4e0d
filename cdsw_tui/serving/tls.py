"""TLS for the gateway: the server's context from TLS_CERT and TLS_KEY (TLS 1.2 and up),
and what its clients trust (TLS_CA, else the certificate itself, as for a self-signed
one). A certificate that is missing, unreadable or not its key's is one line at start."""

from __future__ import annotations

import ssl
from pathlib import Path

from cdsw_tui.errors import CdswError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str, tls: bool) -> str:
    """One line when the gateway would take keys in clear text from other machines."""
    if host in LOOPBACK or tls:
        return ""
    return (
        f"the gateway listens on {host} without TLS: access keys and API keys cross the "
        "network in clear text (set TLS_CERT and TLS_KEY, or keep it on 127.0.0.1)"
    )


def server_context(cert: str, key: str) -> ssl.SSLContext:
    if not key:
        raise CdswError("TLS_CERT is set but TLS_KEY is not: the gateway needs both")
    for name, path in (("TLS_CERT", cert), ("TLS_KEY", key)):
        if not Path(path).is_file():
            raise CdswError(f"{name} names {path}, which is not a readable file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = exc.reason or exc.strerror or str(exc)
        raise CdswError(
            f"the gateway cannot use TLS_CERT {cert} with TLS_KEY {key}: {why}"
            + (" (the key is not the certificate's)" if "MISMATCH" in str(why).upper() else "")
        ) from None
    except OSError as exc:
        raise CdswError(f"cannot read TLS_CERT {cert} or TLS_KEY {key}: {exc}") from None
    return context


def client_context(trust: str) -> ssl.SSLContext:
    """What a client of the gateway verifies it with: the CA (or self-signed certificate)
    in ``trust``, and nothing else."""
    context = ssl.create_default_context(cafile=trust)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
