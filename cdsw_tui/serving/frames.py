"""The wire protocol between the gateway, the controller and the replica runner: one place
for both sides. Standard library only, Python 3.9: the runner imports it in any engine.

Frames: a request is ``REQUEST_HEAD`` (kind, payload length) then the payload, the
caller's raw body; an answer is ``ANSWER_HEAD`` (HTTP status, flags, error code length,
body length), the error code (ASCII, empty on success) and the body. The gateway thus
needs neither an HTTP parser nor a JSON parse to learn how a call ended, and the
replica needs no header parsing at all. A connection that sends anything else is
dropped.

On a TCP port other hosts can reach, the replica first sends ``NONCE_SIZE`` random bytes
and drops the connection unless the next ``PROOF_SIZE`` bytes are
``channel_proof(key, nonce)``: only a holder of the replica's key (the gateway) can call
it, and a proof seen on the wire cannot be replayed.

A replica's output is lines of ``<UTC time> <stream> <text>`` (``stamp()``, ``STAMP_LENGTH``
characters); streams other than stdout and stderr carry the runner's own records
(``STREAM_METRIC``, ``STREAM_EVENT``), which the controller files elsewhere. Its exit
statuses say why it ended.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time

# frames
REQUEST_HEAD = struct.Struct(">cI")  # kind, payload length
ANSWER_HEAD = struct.Struct(">HBBI")  # status, flags, error code length, body length
KIND_CALL = b"C"
KIND_HEALTH = b"H"
FLAG_CLOSE = 1  # the replica ends after this answer (it ran out of memory)
MAX_FRAME = 1 << 31  # a payload length past this is not a frame of ours

# the challenge of a TCP caller
NONCE_SIZE = 16
PROOF_SIZE = 32
CHALLENGE_TIMEOUT = 2.0  # seconds a TCP caller has to prove it holds the key

# exit statuses
EXIT_IMPORT_FAILED = 3
EXIT_OUT_OF_MEMORY = 4

# output streams, and the events of the event stream
STREAM_METRIC = "metric"  # a cdsw.track_metric record (JSON)
STREAM_EVENT = "event"  # the runner's own verdict (JSON), e.g. why the model did not load
EVENT_LOAD_FAILED = "load_failed"
EVENT_OUT_OF_MEMORY = "out_of_memory"
STAMP_LENGTH = len("2024-01-01T00:00:00.000Z")


def channel_proof(key: bytes, nonce: bytes) -> bytes:
    """What a caller sends back for ``nonce``: HMAC-SHA256 under the replica's key."""
    return hmac.new(key, b"cdsw-channel " + nonce, hashlib.sha256).digest()


def stamp() -> str:
    """The time at the head of every output line, UTC to the millisecond."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
