"""The request deadline, carried to every dependency call a request makes.

The retrieval pipeline sets it around each stage (``within``); the clients of Triton, the preprocess
service, Milvus and MongoDB size each call's timeout with ``call_timeout``: their own timeout, or less
when the request ends sooner, so a call for a request its caller has given up on stops with it
instead of running on to its own, longer timeout. Outside a request the clients' own timeouts apply.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("mmsearch_request_deadline", default=None)
MIN_CALL_S = 0.001  # a call is never given zero or less: it fails at once with the dependency's own deadline error


@contextmanager
def within(deadline: float) -> Iterator[None]:
    """Calls made in this block end by ``deadline`` (time.monotonic())."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds left of the current request's time (0 once it has passed); None outside a request."""
    deadline = _DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def call_timeout(own_s: float) -> float:
    """A dependency call's timeout: its own, or what is left of the request's time if that is less."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return own_s
    return max(MIN_CALL_S, min(own_s, deadline - time.monotonic()))
