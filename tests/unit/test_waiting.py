"""poll_until: the one waiting loop."""

from __future__ import annotations

import time

from cdsw_tui.waiting import poll_until


def test_it_returns_the_first_answer_done_says_yes_of():
    answers = iter([0, 0, 3, 4])
    assert poll_until(lambda: next(answers), 5, interval=0) == 3


def test_at_the_time_out_it_returns_the_last_answer():
    calls = []
    start = time.monotonic()
    answer = poll_until(lambda: calls.append(1) or len(calls), 0.2, done=lambda n: n > 10**6)
    took = time.monotonic() - start
    assert answer == len(calls) > 1 and took >= 0.2


def test_a_zero_time_out_asks_once():
    calls = []
    assert poll_until(lambda: calls.append(1), 0) is None and len(calls) == 1
