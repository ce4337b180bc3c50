"""The operation journal and the per-index write lease (issue 33: a corpus that lives), in MongoDB.

**Journal** (``_doc_journal``). Every write of the documents API is journaled before any store changes:
its parts first (the documents with their content hash and the vectors they were given, float32 bytes;
or the ids deleted), then its header ``<index>/<seq>`` (``seq`` 1, 2, ... per index), both journaled
(write concern j). A header is the commit point: an entry without one never touched a store and is
discarded. The write then goes to Milvus, tantivy and MongoDB, and the header is marked ``applied``.
A header still ``pending`` is a write that died half-way (a crash): it is applied again, whole, before
the index is written or searched again by a restarted service (``apply_entry`` is idempotent: upserts
and deletes by id). Entries stay after they are applied: a reindex replays those made while it built
(onto the new build, encoded by its model), a rollback those made since the target build stopped
serving, a snapshot those made while it was read. They expire (``Journal.expire``, run by the retrieval
service's sweep, retrieval_service/retention.py) once older than ``retrieval.documents_journal_days``:
always a prefix, never the newest entry (numbering goes on from it) nor one a build in progress will
replay. The marker ``<index>/trimmed`` records how far entries are gone, so a replay that would need one
(a rollback further back than the retention) is refused naming it, never applied with a hole.

**Lease** (``_index_locks``, one document per index). Writers of an index hold it while they write (the
documents API, a batch at a time), so entries are numbered and applied in one order across replicas; a
reindex, rollback or snapshot holds it briefly for its final step (the write pause). It expires
``LEASE_TTL_S`` after it was last renewed (a holder that died elsewhere), and a holder that died on
this host (its pid is gone) is replaced at once.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmsearch.api.documents import META_KEY
from mmsearch.clients.blobs import blob_refs
from mmsearch.clients.documents import BUILDS, DocumentStore
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.errors import BadInput, Internal, Unavailable

JOURNAL = "_doc_journal"
LOCKS = "_index_locks"
LEASE_TTL_S = 30.0
LEASE_WAIT_S = 10.0
PART_DOCS = 64
PART_BYTES = 8 * 1024 * 1024  # a part stays well under MongoDB's 16 MiB document limit


@dataclass
class Entry:
    index: str
    seq: int
    op: str  # "put" | "delete"
    build: str  # the build it was written to
    state: str  # "pending" | "applied"
    docs: list[dict[str, Any]] = field(default_factory=list)  # put: as stored in MongoDB (with META_KEY)
    vectors: np.ndarray | None = None  # put: the vectors the live build got, in the order of docs
    ids: list[str] = field(default_factory=list)  # delete


def _trimmed_id(index: str) -> str:
    return f"{index}/trimmed"


def _header_id(index: str, seq: int) -> str:
    return f"{index}/{seq:012d}"


def _parts(docs: Sequence[dict[str, Any]]) -> Iterator[tuple[int, int]]:
    """[start, end) slices of ``docs`` of at most PART_DOCS documents and about PART_BYTES."""
    import bson

    start, size = 0, 0
    for i, d in enumerate(docs):
        n = len(bson.encode(d)) + 4 * 1024
        if i > start and (i - start >= PART_DOCS or size + n > PART_BYTES):
            yield start, i
            start, size = i, 0
        size += n
    if start < len(docs):
        yield start, len(docs)


class Journal:
    def __init__(self, ds: DocumentStore):
        self.ds = ds
        self.coll = ds.db[JOURNAL]
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            self.ds.ensure_collection(JOURNAL)  # created before concurrent writers meet it (see ensure_collection)
            self._ready = True

    def last_seq(self, index: str) -> int:
        """The newest committed entry's number (0: none)."""
        self._ensure()
        rows = self.ds._call("journal last", lambda: list(self.coll.find({"index": index, "kind": "header"}, {"seq": 1},
                                                                          sort=[("seq", -1)], limit=1)))
        return int(rows[0]["seq"]) if rows else 0

    def append(self, index: str, op: str, build: str, docs: Sequence[dict[str, Any]] = (), vectors: np.ndarray | None = None,
               ids: Sequence[str] = (), op_id: str | None = None) -> int:
        """Journal one write (the caller holds the index's lease): parts, then the header. Its number."""
        from pymongo import WriteConcern

        self._ensure()
        seq = self.last_seq(index) + 1
        durable = self.coll.with_options(write_concern=WriteConcern(w=1, j=True))
        base = {"index": index, "seq": seq, "kind": "part"}
        self.ds._call("journal clear", durable.delete_many, base)  # parts of a write that died before its header
        parts: list[dict[str, Any]] = []
        if op == "put":
            assert vectors is not None and len(vectors) == len(docs)
            vecs = np.ascontiguousarray(vectors, dtype=np.float32)
            for n, (a, b) in enumerate(_parts(docs)):
                parts.append({**base, "_id": f"{_header_id(index, seq)}/{n:05d}", "part": n, "docs": list(docs[a:b]),
                              "dim": int(vecs.shape[1]), "vectors": vecs[a:b].tobytes(),
                              "blobs": blob_refs(docs[a:b])})  # (inline images a replay needs: the blob sweep keeps them)
        else:
            id_list = list(ids)
            for n, a in enumerate(range(0, len(id_list), 10_000)):
                parts.append({**base, "_id": f"{_header_id(index, seq)}/{n:05d}", "part": n, "ids": id_list[a:a + 10_000]})
        if parts:
            self.ds._call("journal parts", durable.insert_many, parts, ordered=True)
        header = {"_id": _header_id(index, seq), "index": index, "seq": seq, "kind": "header", "op": op, "build": build,
                  "parts": len(parts), "count": len(docs) if op == "put" else len(ids), "op_id": op_id, "state": "pending",
                  "at": dt.datetime.now(dt.UTC)}
        self.ds._call("journal header", durable.insert_one, header)
        return seq

    def mark(self, index: str, seq: int, state: str = "applied") -> None:
        self.ds._call("journal mark", self.coll.update_one, {"_id": _header_id(index, seq)}, {"$set": {"state": state}})

    def pending(self, index: str) -> list[int]:
        self._ensure()
        rows = self.ds._call("journal pending", lambda: list(self.coll.find({"index": index, "kind": "header", "state": "pending"},
                                                                             {"seq": 1}, sort=[("seq", 1)])))
        return [int(r["seq"]) for r in rows]

    def indexes_pending(self) -> list[str]:
        self._ensure()
        rows = self.ds._call("journal pending", lambda: list(self.coll.find({"kind": "header", "state": "pending"}, {"index": 1})))
        return sorted({str(r["index"]) for r in rows})

    def trimmed_through(self, index: str) -> int:
        """Entries ``seq <= this`` have expired (0: none)."""
        row = self.ds._call("journal read", self.coll.find_one, {"_id": _trimmed_id(index)})
        return int(row["through"]) if row else 0

    def expire(self, index: str, before: dt.datetime, keep_after: int | None = None) -> int:
        """Delete the oldest applied entries written before ``before``: a prefix of the journal, never its
        newest entry, nor any after ``keep_after`` (a build in progress replays those). The marker is
        written first, so a sweep that dies half-way leaves no entry a replay would take for whole. How
        many entries went."""
        self._ensure()
        limit = self.last_seq(index) - 1
        if keep_after is not None:
            limit = min(limit, keep_after)
        start = self.trimmed_through(index)
        if limit <= start:
            return 0
        stop = self.ds._call("journal read", lambda: list(self.coll.find(
            {"index": index, "kind": "header", "seq": {"$gt": start, "$lte": limit},
             "$or": [{"state": {"$ne": "applied"}}, {"at": {"$gte": before}}]}, {"seq": 1}, sort=[("seq", 1)], limit=1)))
        through = int(stop[0]["seq"]) - 1 if stop else limit
        if through <= start:
            return 0
        self.ds._call("journal trim", self.coll.replace_one, {"_id": _trimmed_id(index)},
                      {"_id": _trimmed_id(index), "index": index, "kind": "trimmed", "through": through,
                       "at": dt.datetime.now(dt.UTC)}, upsert=True)
        gone = self.ds._call("journal trim", self.coll.delete_many,
                             {"index": index, "kind": "header", "seq": {"$gt": start, "$lte": through}}).deleted_count
        self.ds._call("journal trim", self.coll.delete_many, {"index": index, "kind": "part", "seq": {"$lte": through}})
        return int(gone)

    def indexes(self) -> list[str]:
        """Every index with a journal."""
        self._ensure()
        return sorted(str(i) for i in self.ds._call("journal read", self.coll.distinct, "index", {"kind": "header"}))

    def entries(self, index: str, after: int, upto: int | None = None, with_vectors: bool = True) -> Iterator[Entry]:
        """Committed entries ``after < seq <= upto``, in order, with their parts. Refused when some of them
        have expired: applying the rest would leave a hole."""
        self._ensure()
        gone = self.trimmed_through(index)
        if after < gone:
            raise BadInput(f"index {index}: the journal's writes after entry {after} are needed, but entries up to {gone} "
                           f"have expired (retrieval.documents_journal_days): build a new version instead "
                           f"(mmsearch reindex --index {index})")
        match: dict[str, Any] = {"index": index, "kind": "header", "seq": {"$gt": after, **({"$lte": upto} if upto is not None else {})}}
        headers = self.ds._call("journal read", lambda: list(self.coll.find(match, sort=[("seq", 1)])))
        for h in headers:
            yield self._entry(h, with_vectors)

    def entry(self, index: str, seq: int) -> Entry:
        h = self.ds._call("journal read", self.coll.find_one, {"_id": _header_id(index, seq)})
        if h is None:
            raise Internal(f"journal of {index}: no entry {seq}")
        return self._entry(h, True)

    def _entry(self, h: dict[str, Any], with_vectors: bool) -> Entry:
        proj = None if with_vectors else {"vectors": 0}
        parts = self.ds._call("journal read", lambda: list(self.coll.find({"index": h["index"], "seq": h["seq"], "kind": "part"}, proj,
                                                                           sort=[("part", 1)])))
        if len(parts) != h["parts"]:
            raise Internal(f"journal of {h['index']}: entry {h['seq']} has {len(parts)} of its {h['parts']} parts")
        e = Entry(h["index"], int(h["seq"]), h["op"], h["build"], h["state"])
        if e.op == "put":
            e.docs = [d for p in parts for d in p["docs"]]
            if with_vectors and parts:
                e.vectors = np.concatenate([np.frombuffer(p["vectors"], np.float32).reshape(-1, p["dim"]) for p in parts])
        else:
            e.ids = [i for p in parts for i in p["ids"]]
        return e

    def raw(self, index: str, after: int, upto: int) -> list[dict[str, Any]]:
        """Headers and parts of ``after < seq <= upto`` as stored (a snapshot copies them)."""
        return self.ds._call("journal read", lambda: list(self.coll.find({"index": index, "seq": {"$gt": after, "$lte": upto}},
                                                                          sort=[("seq", 1), ("kind", 1), ("part", 1)])))

    def load_raw(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert copied entries (a snapshot restored), replacing any with the same ids."""
        from pymongo import ReplaceOne

        self._ensure()
        if rows:
            self.ds._call("journal load", self.coll.bulk_write, [ReplaceOne({"_id": r["_id"]}, r, upsert=True) for r in rows])


# ---------------------------------------------------------------------------------------------- applying entries
def apply_entry(vs: VectorStore, ds: DocumentStore | None, lex: LexicalStore, record: dict[str, Any], entry: Entry,
                encode: Callable[[list[dict[str, Any]]], np.ndarray] | None = None) -> None:
    """Apply one journaled write to the build ``record`` describes: Milvus, its terms, and (``ds`` given) the
    stored documents, in the documents API's order. ``encode``: vectors for the documents from the build's own
    model (a build of another model than the one the entry was written to); else the journaled vectors.
    ``ds`` None: MongoDB's documents are not written (they are the live build's, already current)."""
    index, coll = record["index"], record["_id"]
    lexical = list(record.get("lexical") or [])
    if entry.op == "put":
        docs = entry.docs
        if not docs:
            return
        vectors = encode(docs) if encode is not None else entry.vectors
        assert vectors is not None
        fields = dict(record.get("fields") or {})
        stored = int(record.get("stored_docs") or 0)
        shown = [{k: v for k, v in d.items() if k != META_KEY} for d in docs]  # (as the documents API stores them)
        meta = [{k: d[k] for k in fields} for d in docs] if fields else None
        vs.upsert(coll, [str(d["_id"]) for d in docs], vectors, meta, shown if stored else None, stored)
        if lexical:
            w = lex.open_writer(coll)
            try:
                w.upsert(shown)
            except BaseException:
                w.abandon()
                raise
            w.close()
        if ds is not None:
            ds.upsert_many(index, docs, durable=True)
    else:
        ids = entry.ids
        if not ids:
            return
        vs.delete(coll, ids)
        if lexical:
            w = lex.open_writer(coll)
            try:
                w.delete(ids)
            except BaseException:
                w.abandon()
                raise
            w.close()
        if ds is not None:
            ds.delete_ids(index, ids, durable=True)


def recover(vs: VectorStore, ds: DocumentStore, lex: LexicalStore, journal: Journal, index: str) -> int:
    """Apply again, whole, the writes of ``index`` that died half-way (pending entries); the caller holds
    the lease. How many there were."""
    done = 0
    for seq in journal.pending(index):
        e = journal.entry(index, seq)
        rec = ds.get_one(BUILDS, collection_name(index, e.build))
        if rec is None or e.build not in vs.builds(index):
            journal.mark(index, seq, "abandoned")  # its build was dropped meanwhile
            continue
        apply_entry(vs, ds, lex, rec, e)
        journal.mark(index, seq)
        done += 1
    return done


# ---------------------------------------------------------------------------------------------- the lease
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class IndexLease:
    """The per-index write lease (one holder at a time, across processes and hosts)."""

    def __init__(self, ds: DocumentStore, index: str, holder: str, ttl_s: float = LEASE_TTL_S):
        self.ds, self.index, self.ttl_s = ds, index, ttl_s
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{holder}:{secrets.token_hex(4)}"
        self.coll = ds.db[LOCKS]

    def _try(self) -> dict[str, Any] | None:
        """Take or renew it; None when taken, else the holder's record."""
        from pymongo.errors import DuplicateKeyError

        now = dt.datetime.now(dt.UTC)
        try:
            self.ds._call("lease", self.coll.update_one, {"_id": self.index, "$or": [{"until": {"$lt": now}}, {"owner": self.owner}]},
                          {"$set": {"owner": self.owner, "host": self.host, "pid": self.pid,
                                    "until": now + dt.timedelta(seconds=self.ttl_s)}}, upsert=True)
            return None
        except Internal as e:
            if not isinstance(e.__cause__, DuplicateKeyError):
                raise
        held = self.ds.get_one(LOCKS, self.index)
        return held or {}

    def acquire(self, wait_s: float = LEASE_WAIT_S, what: str = "write") -> None:
        deadline = time.monotonic() + wait_s
        while True:
            held = self._try()
            if held is None:
                return
            if held.get("host") == self.host and isinstance(held.get("pid"), int) and held["pid"] != self.pid and not _alive(held["pid"]):
                # its holder died on this host (SIGKILL mid-write): its entry is pending and is applied by whoever takes it now
                self.ds._call("lease break", self.coll.delete_one, {"_id": self.index, "owner": held.get("owner")})
                continue
            if time.monotonic() > deadline:
                holder = str(held.get("owner", "?")).split(":")[2:3]
                raise Unavailable(f"index {self.index} write lease", f"held by {holder[0] if holder else '?'} for more than "
                                  f"{wait_s:.0f} s (a reindex, rollback or snapshot finishing, or another writer); retry the {what}")
            time.sleep(0.05)

    def renew(self) -> None:
        if self._try() is not None:
            raise Unavailable(f"index {self.index} write lease", "lost (it expired while held): the write was not acknowledged")

    def release(self) -> None:
        self.ds._call("lease release", self.coll.delete_one, {"_id": self.index, "owner": self.owner})

    @contextmanager
    def held(self, wait_s: float = LEASE_WAIT_S, what: str = "write") -> Iterator[IndexLease]:
        self.acquire(wait_s, what)
        try:
            yield self
        finally:
            try:
                self.release()
            except Unavailable:
                pass  # it expires by itself
