"""What a request must be before the gateway answers it, whatever its path: a ``Host``
this gateway serves (so a DNS-rebinding page cannot speak to it by a name of its own,
and nothing echoes a forged one), a body decoded within the size limit whatever its
``Content-Encoding``, and for calls a JSON content type (a browser form cannot post one
across origins). Cross-origin reads are allowed only from ``CORS_ORIGINS``."""

from __future__ import annotations

import ipaddress
import socket
import zlib

from cdsw_tui.config import DOMAIN, MODEL_SERVICE
from cdsw_tui.serving.tls import LOOPBACK

WILDCARDS = ("0.0.0.0", "::", "")
_DECODERS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}


class Refused(Exception):
    """The request cannot be answered as it is: SPEC's error, with this status and code."""

    def __init__(self, status: int, message: str, code: str = "request.invalid") -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _names(setting: str) -> list[str]:
    return [n.strip().lower() for n in setting.replace(" ", ",").split(",") if n.strip()]


class Admission:
    def __init__(self, listen: str, allowed_hosts: str = "", cors_origins: str = "") -> None:
        names = {listen.lower().strip("[]")}
        if listen in WILDCARDS:  # reached by whatever name this machine has
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        if listen in WILDCARDS or listen in LOOPBACK:
            names.add("localhost")
        names |= {DOMAIN, MODEL_SERVICE}  # what replicas, builds and runs call it
        self.any_host = False
        self.suffixes: list[str] = []
        for name in _names(allowed_hosts):
            if name == "*":
                self.any_host = True
            elif name.startswith("."):  # Django's way: the domain and every subdomain
                self.suffixes.append(name)
                names.add(name[1:])
            else:
                names.add(name)
        self.hosts = frozenset(names)
        self.origins = frozenset(o.rstrip("/") for o in _names(cors_origins))
        self._seen: dict[bytes, bool] = {}  # Host values already judged (few in practice)

    def host_ok(self, host: bytes) -> bool:
        """An IP address (no rebinding is done by address), or a name this gateway goes
        by: the listen address, this machine's names on a wildcard, ALLOWED_HOSTS."""
        verdict = self._seen.get(host)
        if verdict is None:
            verdict = self._judge(host.decode("latin-1").strip().lower())
            if len(self._seen) < 1024:
                self._seen[host] = verdict
        return verdict

    def _judge(self, host: str) -> bool:
        if host.startswith("["):  # [v6]:port
            name = host[1 : host.find("]")] if "]" in host else ""
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if not name:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        name = name.rstrip(".")
        return self.any_host or name in self.hosts or any(name.endswith(s) for s in self.suffixes)

    def cors(self, origin: bytes) -> bytes:
        """The CORS header lines for ``origin`` (none unless CORS_ORIGINS lists it)."""
        if not origin or not self.origins:
            return b""
        text = origin.decode("latin-1").strip().lower().rstrip("/")
        if text not in self.origins and "*" not in self.origins:
            return b""
        return b"Access-Control-Allow-Origin: " + origin.strip() + b"\r\nVary: Origin\r\n"

    def preflight(self, origin: bytes) -> bytes:
        """The head of a 204 answering a CORS preflight of a call, or b"" if not allowed."""
        allow = self.cors(origin)
        if not allow:
            return b""
        return (
            b"HTTP/1.1 204 No Content\r\n" + allow + b"Access-Control-Allow-Methods: POST\r\n"
            b"Access-Control-Allow-Headers: Content-Type, Authorization\r\n"
            b"Access-Control-Max-Age: 600\r\nContent-Length: 0\r\n"
        )


def is_json(content_type: bytes) -> bool:
    """``application/json``, with parameters or not (``; charset=utf-8``), or ``+json``."""
    if content_type == b"application/json":  # what nearly every call sends
        return True
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def decoded(body: bytes, encoding: bytes, limit: int) -> bytes:
    """The body as sent before its ``Content-Encoding``, refused as soon as it would
    pass ``limit`` once decoded (a small gzip bomb is never inflated whole)."""
    encoding = encoding.strip().lower()
    if encoding in (b"", b"identity") or not body:  # nothing was encoded
        return body
    wbits = _DECODERS.get(encoding)
    if wbits is None:
        raise Refused(415, "the body's Content-Encoding is not gzip, deflate or identity")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise Refused(400, f"the body is not valid {encoding.decode()} data") from None
    if len(out) > limit or inflater.unconsumed_tail:
        mb = limit / 1024 / 1024
        raise Refused(413, f"the body is over {mb:g} MB once decoded", "request.too_large")
    if not inflater.eof:
        raise Refused(400, f"the body is not valid {encoding.decode()} data (it stops short)")
    return out
