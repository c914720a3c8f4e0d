"""Waiting for something another process does: one polling loop for the whole code."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    fetch: Callable[[], T],
    timeout: float | None = None,
    *,
    done: Callable[[T], object] = bool,
    interval: float = 0.05,
) -> T:
    """Call ``fetch`` every ``interval`` seconds until ``done`` says yes of its answer
    (by default: the answer is true), or ``timeout`` seconds have passed (None: no
    limit). The last answer either way: the caller tells a time out from it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        answer = fetch()
        if done(answer):
            return answer
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return answer
        time.sleep(interval if left is None else min(interval, left))
