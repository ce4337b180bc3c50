"""The query log in MongoDB: one entry per request (arms, buckets, query, result ids), clicks appended.

Written from a background thread through a bounded queue, so logging never adds latency to a
search; when MongoDB is down entries are dropped and counted (mmsearch_querylog_dropped_total)
rather than piling up in memory. Entries carry ``at`` (a date); a TTL index on it lets MongoDB delete
them after ``retrieval.query_log_ttl_days`` (0: kept forever), and the writer deletes them itself every
``retrieval.query_log_sweep_s`` (the embedded secantusdb runs without its TTL sweeper), so the log cannot
grow without bound.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import random
import threading
import time
from typing import Any

from mmsearch.clients.documents import QUERY_LOG
from mmsearch.errors import MMSearchError, NotFound, Unavailable
from mmsearch.retrieval_service.deps import Lazy

log = logging.getLogger("mmsearch.querylog")
COLLECTION = QUERY_LOG
_WAKE: dict[str, Any] = {}  # sentinel put on stop
MAX_BATCH = 500  # entries per write


class QueryLog:
    def __init__(self, documents: Lazy, metrics, maxsize: int = 10_000, ttl_days: float = 0.0, flush_s: float = 0.0,
                 ready_wait_s: float = 5.0, sweep_s: float = 600.0):
        self.documents = documents
        self.flush_s = flush_s
        self.metrics = metrics
        self.ttl_s = int(ttl_days * 86400)
        self.ready_wait_s = ready_wait_s
        self._ready = threading.Event()  # the collection (and its TTL index) exists: clicks may update it
        self._next_try = 0.0
        self.sweep_s = sweep_s
        # the first sweep a random part of sweep_s after start: replicas started together do not all
        # delete at once, and a start does not begin with a long delete of an old backlog
        self._next_sweep = time.monotonic() + random.uniform(0.5, 1.0) * sweep_s
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._flush_now = threading.Event()
        self._thread = threading.Thread(target=self._run, name="querylog", daemon=True)
        self._thread.start()

    def record(self, entry: dict[str, Any]) -> None:
        entry.setdefault("at", dt.datetime.now(dt.UTC))  # the TTL index's clock (ts stays the epoch seconds)
        try:
            self.q.put_nowait(entry)
        except queue.Full:
            self.metrics.querylog_dropped.inc()
        if self.q.qsize() >= MAX_BATCH - 1:  # a batch is ready (the writer holds one more): write it now, not at the interval's end
            self._flush_now.set()

    def _run(self) -> None:
        while not self._stop.is_set() or not self.q.empty():
            if not self._ready.is_set() and time.monotonic() >= self._next_try:
                try:
                    self._prepare()  # at start, before any search of this service can be clicked
                except MMSearchError as e:
                    if not self._next_try:  # once, not every second of an outage
                        log.warning("query log: collection not ready (%s); retrying each second", e.message)
                    self.documents.reset()
                    self._next_try = time.monotonic() + 1.0
            if self.ttl_s > 0 and self._ready.is_set() and time.monotonic() >= self._next_sweep:
                self._sweep()
            try:
                first = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first] if first is not _WAKE else []
            # gather what comes within flush_s: one write per interval instead of one per search (each write
            # holds up the document fetches of searches running beside it; measured in the issue 17 note).
            # The writer sleeps on an event, not on the queue, so the searches of the interval wake nothing:
            # waking it per entry cost each search a thread switch in the middle of its answer
            now = first is _WAKE or self._stop.is_set()
            if not now and self.flush_s > 0 and self.q.qsize() < MAX_BATCH - 1:  # (a backlog is written at once)
                self._flush_now.wait(self.flush_s)  # set by a click waiting for its entry, or by stop
            self._flush_now.clear()  # (a click after this finds its entry in what is drained next)
            while len(batch) < MAX_BATCH:
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    break
                if item is not _WAKE:
                    batch.append(item)
            if not batch:
                continue
            try:
                if not self._ready.is_set():  # MongoDB is down (retried at the loop's top, once a second)
                    raise Unavailable(self.documents.name, "the query log's collection is not created yet")
                self.documents.get().insert_many(COLLECTION, batch)
            except MMSearchError as e:
                self.metrics.querylog_dropped.inc(len(batch))
                log.warning("query log: %d entries dropped (%s)", len(batch), e.message)
                self.documents.reset()

    def _prepare(self) -> None:
        """Create the collection and its TTL index before anything writes to it. secantusdb deadlocked
        when a click's update of a missing collection met the TTL index build creating it (one core
        spinning, every later MongoDB call timing out)."""
        store = self.documents.get()
        store.ensure_collection(COLLECTION)
        if self.ttl_s > 0:
            store.expire_after(COLLECTION, "at", self.ttl_s)
        self._ready.set()

    def _sweep(self) -> None:
        """Delete entries older than the TTL. MongoDB's TTL index does it too; the embedded secantusdb
        runs with its sweeper off (it held the store's global lock for seconds), so this is its expiry."""
        self._next_sweep = time.monotonic() + self.sweep_s
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.ttl_s)
        try:
            gone = self.documents.get().delete_before(COLLECTION, "at", cutoff)
        except MMSearchError as e:
            log.warning("query log: expired entries not deleted (%s)", e.message)
            return
        if gone:
            log.info("query log: %d entries older than %s deleted", gone, cutoff.isoformat(timespec="seconds"))

    def click(self, request_id: str, doc_id: str, user_id: str | None) -> None:
        if not self._ready.wait(self.ready_wait_s):
            raise Unavailable(self.documents.name, "the query log is not ready (its collection could not be created)")
        store = self.documents.get()
        entry = {"doc_id": doc_id, "ts": time.time(), **({"user_id": user_id} if user_id else {})}
        for attempt in range(10):  # the search's own entry may still be with the writer
            if store.push(COLLECTION, request_id, "clicks", entry):
                self.metrics.clicks.inc()
                return
            self._flush_now.set()  # don't wait out flush_s: write the gathered entries now (each try: its entry may
            # be behind a full batch)
            time.sleep(0.05 * (attempt + 1))
        raise NotFound(f"request_id: unknown request {request_id!r}")

    def stop(self) -> None:
        self._stop.set()
        self._flush_now.set()
        try:
            self.q.put_nowait(_WAKE)  # wake the writer now rather than at its next poll
        except queue.Full:
            pass
        self._thread.join(timeout=10)
