"""deadline.call_timeout: a dependency call's timeout shrinks to what is left of its request."""

from __future__ import annotations

import threading
import time

from mmsearch.runtime.deadline import MIN_CALL_S, call_timeout, within


def test_own_timeout_outside_a_request_and_the_rest_of_the_request_inside():
    assert call_timeout(5.0) == 5.0
    with within(time.monotonic() + 0.5):
        assert 0.4 < call_timeout(5.0) <= 0.5
        assert call_timeout(0.1) == 0.1  # its own when that is shorter
        with within(time.monotonic() + 0.2):
            assert call_timeout(5.0) <= 0.2
        assert call_timeout(5.0) > 0.3  # the outer request's again
    assert call_timeout(5.0) == 5.0


def test_a_passed_deadline_gives_the_minimum_never_zero_or_less():
    with within(time.monotonic() - 1.0):
        assert call_timeout(5.0) == MIN_CALL_S


def test_another_thread_does_not_see_this_request_s_deadline():
    seen = []
    with within(time.monotonic() + 0.2):
        t = threading.Thread(target=lambda: seen.append(call_timeout(5.0)))
        t.start()
        t.join()
    assert seen == [5.0]
