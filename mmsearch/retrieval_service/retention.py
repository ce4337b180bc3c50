"""Expiry of what the documents API leaves behind (issue 33): without it a corpus that changes daily
grows its journal by every document it ever received (with its vector), forever.

- **Journal entries** (clients/journal.py) older than ``retrieval.documents_journal_days``: a reindex,
  rollback or snapshot replays entries, so this is also how far back ``mmsearch index rollback`` reaches.
  A build in progress keeps every entry it will replay, and the newest entry always stays.
- **Idempotency records** (``_doc_ops``) older than ``retrieval.documents_op_ids_days``: an op_id sent
  again within it is answered from its record; after it, it is a new write (as payment APIs keep
  idempotency keys for a day).
- **Inline images** (``_doc_blobs``, clients/blobs.py) no document and no journal entry references, a
  day after they were last written.
- **Write leases** (``_index_locks``) expired for over an hour: an expired lease is free already, so
  this only tidies those of indexes nobody writes any more.

The retrieval service sweeps every ``retrieval.documents_sweep_s`` (the first a random part of it after
start, so replicas started together do not sweep together); replicas sweeping at once is harmless:
every step deletes by a condition.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from dataclasses import dataclass, field

from mmsearch.clients.blobs import BlobStore
from mmsearch.clients.documents import DocumentStore
from mmsearch.clients.journal import JOURNAL, LOCKS, Journal
from mmsearch.errors import MMSearchError
from mmsearch.retrieval_service.deps import Lazy
from mmsearch.retrieval_service.documents import OPS

log = logging.getLogger("mmsearch.retention")
STALE_LEASE = dt.timedelta(hours=1)
UNREFERENCED_BLOB = dt.timedelta(days=1)
BUILD_IN_PROGRESS_DAYS = 30  # a "building" record older than this is a build that died: it keeps nothing


@dataclass
class Expired:
    journal: dict[str, int] = field(default_factory=dict)  # index -> entries deleted
    op_ids: int = 0
    blobs: int = 0
    leases: int = 0

    @property
    def total(self) -> int:
        return sum(self.journal.values()) + self.op_ids + self.blobs + self.leases


def _replay_floor(ds: DocumentStore, index: str, now: dt.datetime) -> int | None:
    """The journal position of the oldest build of ``index`` still in progress (it replays what follows)."""
    since = now - dt.timedelta(days=BUILD_IN_PROGRESS_DAYS)
    seqs = []
    for rec in ds.builds(index):
        started = rec.get("started")
        if isinstance(started, str):
            try:
                started = dt.datetime.fromisoformat(started)
            except ValueError:
                started = None
        if isinstance(started, dt.datetime) and started.tzinfo is None:
            started = started.replace(tzinfo=dt.UTC)
        if rec.get("status") == "building" and (started is None or started >= since):
            seqs.append(int(rec.get("journal_seq") or 0))
    return min(seqs) if seqs else None


def expire(ds: DocumentStore, journal_days: float, op_id_days: float, now: dt.datetime | None = None) -> Expired:
    """One sweep; 0 days keeps that kind forever."""
    now = now or dt.datetime.now(dt.UTC)
    out = Expired()
    if journal_days > 0:
        journal = Journal(ds)
        before = now - dt.timedelta(days=journal_days)
        for index in journal.indexes():
            gone = journal.expire(index, before, keep_after=_replay_floor(ds, index, now))
            if gone:
                out.journal[index] = gone
    if op_id_days > 0:
        out.op_ids = ds.delete_before(OPS, "at", now - dt.timedelta(days=op_id_days))
    out.blobs = BlobStore(ds).sweep(now - UNREFERENCED_BLOB, JOURNAL)  # (after the journal: what only expired entries held goes)
    out.leases = ds.delete_before(LOCKS, "until", now - STALE_LEASE)
    return out


class RetentionSweeper:
    """Runs ``expire`` every ``sweep_s`` in a daemon thread; a store that is down is tried at the next sweep."""

    def __init__(self, documents: Lazy[DocumentStore], journal_days: float, op_id_days: float, sweep_s: float):
        self.documents, self.journal_days, self.op_id_days, self.sweep_s = documents, journal_days, op_id_days, sweep_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> RetentionSweeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        wait = random.uniform(0.5, 1.0) * self.sweep_s
        while not self._stop.wait(wait):
            wait = self.sweep_s
            try:
                out = expire(self.documents.get(), self.journal_days, self.op_id_days)
            except MMSearchError as e:
                log.warning("retention sweep deferred (%s)", e.message)
                self.documents.reset()
                continue
            if out.total:
                log.info("retention: journal entries %s, op_id records %d, unreferenced images %d, stale leases %d deleted",
                         out.journal or "0", out.op_ids, out.blobs, out.leases)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
