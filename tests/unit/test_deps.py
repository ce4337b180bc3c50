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
    lazy.retry_s = 60.0  # (the interval is passed by hand below, not slept through)
    with pytest.raises(Unavailable, match="connection refused"):
        lazy.get()
    t0 = time.monotonic()
    for _ in range(5):
        with pytest.raises(Unavailable, match="connection refused.*the next in under 60 s") as e:
            lazy.get()
        assert e.value.dependency == "mongodb at test"  # named as the connect named it
    assert len(calls) == 1 and time.monotonic() - t0 < 0.15  # no second connect, no connect's wait
    assert not lazy.healthy() and len(calls) == 1
    up["ok"] = True
    when, err = lazy._failed
    lazy._failed = (when - 61.0, err)  # the interval has passed
    assert lazy.get() == "client" and len(calls) == 2  # tried again, and recovered
    assert lazy._failed is None


def test_callers_waiting_for_a_connect_that_fails_get_its_failure_without_connecting_again():
    calls, started = [], threading.Event()

    def connect() -> str:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        raise Unavailable("milvus at test", "connection refused")

    lazy = Lazy("milvus", connect)
    lazy.retry_s = 60.0
    errors: list[str] = []

    def call() -> None:
        try:
            lazy.get()
        except Unavailable as e:
            errors.append(e.message)

    first = threading.Thread(target=call)
    first.start()
    assert started.wait(5)
    waiters = [threading.Thread(target=call) for _ in range(3)]
    for t in [*waiters]:
        t.start()
    for t in [first, *waiters]:
        t.join(5)
    assert len(calls) == 1 and len(errors) == 4 and all("connection refused" in m for m in errors)


def test_a_caller_out_of_time_neither_connects_nor_marks_the_dependency_down():
    calls = []
    lazy = Lazy("mongodb", lambda: calls.append(1) or "client")
    with within(time.monotonic() - 1.0), pytest.raises(Unavailable, match="time has run out"):
        lazy.get()
    assert not calls and lazy._failed is None
    assert lazy.get() == "client"  # the next caller, with time, connects at once


def test_a_failure_on_an_old_client_does_not_drop_the_connection_made_since():
    clients = iter(["old", "new"])
    lazy = Lazy("triton", lambda: next(clients))
    old = lazy.get()
    lazy.reset(old)
    assert lazy.get() == "new"
    lazy.reset(old)  # a late failure of a request that still held the old client
    assert lazy.get() == "new"
    lazy.reset()  # no client named: forgotten (the query log's and readiness's own resets)
    with pytest.raises(StopIteration):
        lazy.get()


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


def test_a_mongodb_connect_that_fails_leaves_no_client_polling_the_dead_server():
    """Each failed connect of an outage made a MongoClient whose monitor threads went on polling."""
    from mmsearch.clients.documents import DocumentStore
    from mmsearch.runtime.net import free_port

    port = free_port("127.0.0.1")  # nothing listens on it
    before = set(threading.enumerate())
    held = []  # the errors, as Lazy keeps its last (their tracebacks hold the half-made store and its client)
    for _ in range(3):
        with pytest.raises(Unavailable, match=f"mongodb at .*:{port}.* unavailable") as e:
            DocumentStore(f"mongodb://127.0.0.1:{port}/?directConnection=true", timeout_s=0.3)
        held.append(e)
    deadline = time.monotonic() + 5
    while [t for t in threading.enumerate() if t not in before and t.name.startswith("pymongo")] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t not in before and t.name.startswith("pymongo")]
