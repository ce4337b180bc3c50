"""The query log's writer: entries gathered for flush_s and written together, nothing lost at stop."""

from __future__ import annotations

import threading
import time

import pytest

from mmsearch.retrieval_service.deps import Lazy
from mmsearch.retrieval_service.prometheus_metrics import Metrics
from mmsearch.retrieval_service.querylog import COLLECTION, QueryLog


class Store:
    def __init__(self) -> None:
        self.writes: list[tuple[float, list[dict]]] = []
        self.calls: list[str] = []
        self.cutoffs: list = []
        self.lock = threading.Lock()

    def ensure_collection(self, collection: str) -> None:
        assert collection == COLLECTION
        self.calls.append("create")

    def expire_after(self, collection: str, field: str, seconds: int) -> None:
        self.calls.append(f"ttl {field} {seconds}")

    def delete_before(self, collection: str, field: str, cutoff) -> int:
        self.calls.append(f"sweep {field}")
        self.cutoffs.append(cutoff)
        return 0

    def insert_many(self, collection: str, docs: list[dict]) -> None:
        assert collection == COLLECTION
        self.calls.append("insert")
        with self.lock:
            self.writes.append((time.monotonic(), list(docs)))


def test_entries_within_the_flush_interval_are_one_write():
    store = Store()
    log = QueryLog(Lazy("mongodb", lambda: store), Metrics(), flush_s=0.3)
    try:
        t0 = time.monotonic()
        for i in range(5):
            log.record({"_id": f"r{i}"})
            time.sleep(0.02)
        deadline = time.monotonic() + 3
        while not store.writes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(store.writes) == 1 and [d["_id"] for d in store.writes[0][1]] == [f"r{i}" for i in range(5)]
        assert store.writes[0][0] - t0 >= 0.25  # it waited for the interval before writing
        assert all("at" in d for d in store.writes[0][1])  # the TTL index's clock
    finally:
        log.stop()


def test_stop_writes_what_is_waiting_at_once():
    store = Store()
    log = QueryLog(Lazy("mongodb", lambda: store), Metrics(), flush_s=5.0)
    log.record({"_id": "a"})
    log.record({"_id": "b"})
    t0 = time.monotonic()
    log.stop()
    assert time.monotonic() - t0 < 2.0  # not the 5 s interval
    assert [d["_id"] for _, docs in store.writes for d in docs] == ["a", "b"]


class PushStore(Store):
    def push(self, collection: str, doc_id: str, field: str, value: dict) -> bool:
        with self.lock:
            for _, docs in self.writes:
                for d in docs:
                    if d["_id"] == doc_id:
                        d.setdefault(field, []).append(value)
                        return True
        return False


def test_a_click_on_an_entry_still_gathered_has_it_written_at_once():
    store = PushStore()
    log = QueryLog(Lazy("mongodb", lambda: store), Metrics(), flush_s=5.0)
    try:
        log.record({"_id": "r1"})
        time.sleep(0.05)  # the writer holds it, waiting out its 5 s
        t0 = time.monotonic()
        log.click("r1", "d7", "u1")
        assert time.monotonic() - t0 < 1.0  # not the 5 s interval
        assert store.writes[0][1][0]["clicks"][0]["doc_id"] == "d7"
    finally:
        log.stop()


def test_a_full_batch_is_written_without_waiting_out_the_interval_and_a_click_behind_it_still_lands():
    store = PushStore()
    log = QueryLog(Lazy("mongodb", lambda: store), Metrics(), flush_s=10.0)
    try:
        t0 = time.monotonic()
        for i in range(700):
            log.record({"_id": f"r{i}"})
        log.click("r699", "d1", None)  # its entry is behind a full batch of 500: each try asks for a write now
        assert time.monotonic() - t0 < 5.0  # not the 10 s interval, and within the click's 2.75 s of retries
        assert len(store.writes[0][1]) == 500
        assert sum(len(docs) for _, docs in store.writes) == 700
    finally:
        log.stop()


class SlowStore(PushStore):
    """A MongoDB that takes its time to create the collection."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def ensure_collection(self, collection: str) -> None:
        assert self.release.wait(5)
        super().ensure_collection(collection)

    def push(self, collection: str, doc_id: str, field: str, value: dict) -> bool:
        assert "create" in self.calls, "a click updated the collection before it was created"
        return super().push(collection, doc_id, field, value)


def test_the_collection_and_its_ttl_exist_before_any_write_and_a_click_waits_for_them():
    # secantusdb deadlocked when a click's update of the missing collection met the TTL index build creating it
    store = SlowStore()
    log = QueryLog(Lazy("mongodb", lambda: store), Metrics(), ttl_days=1, flush_s=0.0)
    try:
        log.record({"_id": "r1"})
        clicked = threading.Thread(target=log.click, args=("r1", "d1", None))
        clicked.start()
        time.sleep(0.2)
        assert clicked.is_alive() and store.calls == []  # the click waits: nothing is there yet
        store.release.set()
        clicked.join(5)
        assert not clicked.is_alive()
        assert store.calls[:2] == ["create", "ttl at 86400"] and "insert" in store.calls
        assert store.writes[0][1][0]["clicks"][0]["doc_id"] == "d1"
    finally:
        log.stop()


def test_a_click_while_mongodb_cannot_create_the_collection_is_unavailable():
    from mmsearch.errors import Unavailable

    class Down(Store):
        def ensure_collection(self, collection: str) -> None:
            raise Unavailable("mongodb", "connection refused")

    log = QueryLog(Lazy("mongodb", lambda: Down()), Metrics(), flush_s=0.0, ready_wait_s=0.3)
    try:
        with pytest.raises(Unavailable, match="query log is not ready") as e:
            log.click("r1", "d1", None)
        assert e.value.dependency == "mongodb"
    finally:
        log.stop()


def test_expired_entries_are_swept_soon_after_start_and_every_sweep_s():
    import datetime as dt

    store = Store()
    log = QueryLog(Lazy("mongodb", lambda: store), Metrics(), ttl_days=2, flush_s=0.0, sweep_s=0.3)
    try:
        deadline = time.monotonic() + 5
        while len(store.cutoffs) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(store.cutoffs) >= 3 and store.calls[:2] == ["create", "ttl at 172800"]
        expected = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        assert abs((store.cutoffs[-1] - expected).total_seconds()) < 5
    finally:
        log.stop()


def test_no_ttl_no_sweep():
    store = Store()
    log = QueryLog(Lazy("mongodb", lambda: store), Metrics(), ttl_days=0, flush_s=0.0, sweep_s=0.1)
    try:
        log.record({"_id": "r1"})
        time.sleep(0.5)
        assert store.cutoffs == [] and store.calls == ["create", "insert"]
    finally:
        log.stop()
