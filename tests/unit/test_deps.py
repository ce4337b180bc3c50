"""Lazy dependencies in an outage: a failed connect is not retried by every caller in turn, and no caller waits
for another's connect past its own deadline (CI saw searches queue 11-18 s behind MongoDB connects)."""

from __future__ import annotations

import threading
import time

import pytest

from mmsearch.errors import Unavailable
from mmsearch.retrieval_service.deps import Lazy
from mmsearch.runtime.deadline import within


def test_callers_after_a_failed_connect_get_its_failure_at_once_until_the_retry_interval_passes():
    calls: list[float] = []
    up = {"ok": False}

    def connect() -> str:
        calls.append(time.monotonic())
        time.sleep(0.2)  # a connect to a dead server spends its timeout
        if not up["ok"]:
            raise Unavailable("mongodb at test", "connection refused")
        return "client"

    lazy = Lazy("mongodb", connect)
    lazy.retry_s = 0.5
    with pytest.raises(Unavailable, match="connection refused"):
        lazy.get()
    t0 = time.monotonic()
    for _ in range(5):
        with pytest.raises(Unavailable, match="connection refused.*the next in under 0.5 s") as e:
            lazy.get()
        assert e.value.dependency == "mongodb at test"  # named as the connect named it
    assert len(calls) == 1 and time.monotonic() - t0 < 0.1  # no second connect, no wait
    assert not lazy.healthy()
    up["ok"] = True
    time.sleep(0.5)
    assert lazy.get() == "client" and len(calls) == 2  # tried again once the interval passed, and recovered


def test_a_caller_waits_for_anothers_connect_only_as_long_as_its_deadline_allows():
    started, release = threading.Event(), threading.Event()

    def connect() -> str:
        started.set()
        release.wait(5)
        return "client"

    lazy = Lazy("milvus", connect)
    first = threading.Thread(target=lazy.get)
    first.start()
    try:
        assert started.wait(5)
        t0 = time.monotonic()
        with within(time.monotonic() + 0.2), pytest.raises(Unavailable, match="still connecting"):
            lazy.get()
        assert 0.15 < time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        lazy.reset()  # a failing request forgets the connection without waiting out the connect under way
        assert time.monotonic() - t0 < 0.1
    finally:
        release.set()
        first.join(5)
    assert lazy.get() == "client"


def test_errors_other_than_unavailable_are_not_remembered():
    n = {"calls": 0}

    def connect() -> str:
        n["calls"] += 1
        if n["calls"] == 1:
            raise ValueError("a bug, not an outage")
        return "client"

    lazy = Lazy("triton", connect)
    with pytest.raises(ValueError):
        lazy.get()
    assert lazy.get() == "client"
