"""The HTTP/1.1 request parser of the front: llhttp (``httptools``, uvicorn's parser)
where it installs, else h11 behind the same callbacks.

Both call the protocol's ``on_message_begin``, ``on_url``, ``on_header``,
``on_headers_complete``, ``on_body`` and ``on_message_complete``, and raise one of
``ERRORS`` for bytes that are not an HTTP/1.1 request; ``should_upgrade`` says a
request asks to switch protocols (which the front refuses).
"""

from __future__ import annotations

from typing import Protocol, cast

import h11

try:
    import httptools
except ImportError:  # pragma: no cover - where the wheel does not install
    httptools = None  # type: ignore[assignment]


class Callbacks(Protocol):
    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class Parser(Protocol):
    def feed_data(self, data: bytes) -> None: ...
    def get_method(self) -> bytes: ...
    def get_http_version(self) -> str: ...
    def should_keep_alive(self) -> bool: ...
    def should_upgrade(self) -> bool: ...


class ParseError(Exception):
    """The bytes are not a valid HTTP/1.1 request (the message never quotes them)."""


class _H11Parser:
    """h11 driven as llhttp is: one connection object per request, the bytes after a
    request's end fed to the next one."""

    def __init__(self, callbacks: Callbacks, max_head: int) -> None:
        self.callbacks = callbacks
        self.max_head = max_head
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.begun = False

    def feed_data(self, data: bytes) -> None:
        conn = self.conn
        cb = self.callbacks
        conn.receive_data(data)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ParseError(type(exc).__name__) from None
            if event is h11.NEED_DATA:
                if not self.begun and conn.trailing_data[0]:
                    self.begun = True
                    cb.on_message_begin()  # a head is under way: its timer starts
                return
            if isinstance(event, h11.Request):
                if not self.begun:
                    cb.on_message_begin()
                self.begun = True
                self.method = event.method
                self.version = event.http_version.decode("ascii")
                names = [name for name, _ in event.headers]
                tokens = b",".join(v for n, v in event.headers if n == b"connection").lower()
                self.upgrade = b"upgrade" in names or event.method == b"CONNECT"
                self.keep_alive = (
                    b"close" not in tokens if self.version == "1.1" else b"keep-alive" in tokens
                )
                cb.on_url(event.target)
                for name, value in event.headers:
                    cb.on_header(name, value)
                cb.on_headers_complete()
            elif isinstance(event, h11.Data):
                cb.on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                cb.on_message_complete()
                # the next request in a connection of its own: whether this one stays
                # open is the front's to say (h11 closes HTTP/1.0 whatever it asked)
                leftover, _ = conn.trailing_data
                self.conn = conn = h11.Connection(
                    h11.SERVER, max_incomplete_event_size=self.max_head
                )
                self.begun = False
                if leftover:
                    conn.receive_data(leftover)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return

    def get_method(self) -> bytes:
        return self.method

    def get_http_version(self) -> str:
        return self.version

    def should_keep_alive(self) -> bool:
        return self.keep_alive

    def should_upgrade(self) -> bool:
        return self.upgrade


def make(kind: str, callbacks: Callbacks, max_head: int) -> Parser:
    """A parser of ``kind`` ("auto": llhttp when installed, else h11). Its
    ``feed_data`` raises one of ``ERRORS``."""
    if kind == "h11" or httptools is None:
        return _H11Parser(callbacks, max_head)
    return cast(Parser, httptools.HttpRequestParser(callbacks))  # no wrapper on the call path


ERRORS: tuple[type[Exception], ...] = (ParseError,)
if httptools is not None:  # its upgrade stop too: the front refuses upgrades
    ERRORS += (httptools.HttpParserError, httptools.HttpParserUpgrade)
