"""Documents in MongoDB (or the secantusdb server, which speaks the same wire protocol).

Database ``mmsearch`` (configurable), one collection per index, ``_id`` = document id, writes are
upserts so re-running a build never duplicates. Build bookkeeping lives in the ``_builds``
collection of the same database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from mmsearch.errors import Internal, MMSearchError, Unavailable
from mmsearch.runtime.deadline import call_timeout

BUILDS = "_builds"
QUERY_LOG = "_query_log"  # one entry per search, clicks appended (retrieval_service.querylog); read by ab-report and the flywheel
T = TypeVar("T")
DUPLICATE_KEY = 11000  # MongoDB's error code for an _id that exists


class DocumentStore:
    def __init__(self, uri: str, database: str = "mmsearch", timeout_s: float = 5.0):
        import pymongo
        from pymongo.errors import ConfigurationError, PyMongoError

        self.uri = uri
        self.timeout_s = timeout_s
        self.dependency = f"mongodb at {_redact(uri)}"
        try:
            self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(timeout_s * 1000),
                                              connectTimeoutMS=int(timeout_s * 1000), socketTimeoutMS=60_000)
            with pymongo.timeout(call_timeout(timeout_s)):  # a connect inside a request or a probe ends with it
                self.client.admin.command("ping")
        except (PyMongoError, ConfigurationError, ValueError) as e:
            if hasattr(self, "client"):  # its monitor threads would go on polling the dead server
                with contextlib.suppress(Exception):  # (the connect's error is the one to report)
                    self.client.close()
            raise Unavailable(self.dependency, str(e).split(",")[0]) from e
        self.db = self.client[database]

    def _call(self, what: str, fn: Callable[..., T], *args: Any, bounded: bool = False, **kwargs: Any) -> T:
        """Our errors for pymongo's. ``bounded``: the whole call (server selection, a retried read, the
        socket) ends within ``timeout_s`` — a search's read must not outlast its stage (an outage had
        pymongo select, retry and select again: 20 s); bulk writes of a build are not bounded so."""
        import pymongo
        from pymongo.errors import AutoReconnect, PyMongoError, ServerSelectionTimeoutError

        try:
            with pymongo.timeout(call_timeout(self.timeout_s)) if bounded else contextlib.nullcontext():
                return fn(*args, **kwargs)
        except (AutoReconnect, ServerSelectionTimeoutError) as e:
            raise Unavailable(self.dependency, str(e).split(",")[0]) from e
        except PyMongoError as e:
            if e.timeout:
                raise Unavailable(self.dependency, f"{what}: no answer within {self.timeout_s:.1f} s") from e
            raise Internal(f"{self.dependency}: {what} failed: {e}") from e

    def _coll(self, collection: str, durable: bool) -> Any:
        """The collection; ``durable``: writes acknowledged once in the journal (write concern j)."""
        from pymongo import WriteConcern

        coll = self.db[collection]
        return coll.with_options(write_concern=WriteConcern(w=1, j=True)) if durable else coll

    def upsert_many(self, collection: str, docs: Sequence[dict[str, Any]], durable: bool = False,
                    insert_first: bool = False) -> int:
        """Insert or replace documents by _id; how many of them already existed when ``insert_first``
        (else 0: not looked at). ``insert_first`` inserts them all and replaces only those whose id
        exists. For new documents, that is cheaper: secantusdb inserts 82k documents in 3.5 CPU s
        and upserts them in 14.5 CPU s. For existing ones, it costs about a quarter more than an upsert
        (14.5 against 11.7 CPU s), so a build passes it only while most of its documents have been new."""
        from pymongo import ReplaceOne
        from pymongo.errors import BulkWriteError

        if not docs:
            return 0
        coll = self._coll(collection, durable)
        if not insert_first:
            self._call("bulk upsert", coll.bulk_write, [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False)
            return 0

        def insert_then_replace() -> int:
            try:
                coll.insert_many(docs, ordered=False)
                return 0
            except BulkWriteError as e:  # every document was tried (unordered); errors name them by index
                errors = e.details.get("writeErrors", [])
                if any(err.get("code") != DUPLICATE_KEY for err in errors) or e.details.get("writeConcernErrors"):
                    raise
                existing = [docs[err["index"]] for err in errors]
            coll.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in existing], ordered=False)
            return len(existing)

        return self._call("bulk insert", insert_then_replace)

    def delete_ids(self, collection: str, ids: Sequence[str], durable: bool = False) -> int:
        """Delete documents by id; how many there were."""
        if not ids:
            return 0
        res = self._call("delete", self._coll(collection, durable).delete_many, {"_id": {"$in": list(ids)}})
        return int(res.deleted_count)

    def get_one(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        return self._call("find", self.db[collection].find_one, {"_id": doc_id}, bounded=True)

    def save(self, collection: str, doc: dict[str, Any], durable: bool = False) -> None:
        """Insert or replace one document by its _id."""
        self._call("save", self._coll(collection, durable).replace_one, {"_id": doc["_id"]}, doc, upsert=True)

    def get_many(self, collection: str, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Documents in the order of ``ids`` (None where missing), in one round trip."""
        # the cursor is consumed inside _call: pymongo raises its connection errors while iterating
        rows = self._call("find", lambda: list(self.db[collection].find({"_id": {"$in": list(ids)}})), bounded=True)
        found = {d["_id"]: d for d in rows}
        return [found.get(i) for i in ids]

    def insert_many(self, collection: str, docs: Sequence[dict[str, Any]]) -> None:
        """Insert new documents (unordered: one duplicate does not stop the rest)."""
        if docs:
            self._call("insert", self.db[collection].insert_many, list(docs), ordered=False)

    def push(self, collection: str, doc_id: str, field: str, value: Any) -> bool:
        """Append ``value`` to the array ``field`` of one document; False when no document has that id.
        Bounded like a read: a click is a request, and ends with it."""
        res = self._call("update", self.db[collection].update_one, {"_id": doc_id}, {"$push": {field: value}}, bounded=True)
        return bool(res.matched_count)

    def find(self, collection: str, match: dict[str, Any], fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All documents matching a MongoDB filter, with only ``fields`` (and _id) when given."""
        projection = dict.fromkeys(fields, 1) if fields is not None else None
        return self._call("find", lambda: list(self.db[collection].find(match, projection)))

    def pages(self, collection: str, size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every document, in pages of ``size`` in _id order, from one cursor fetching ``size`` at a time. (A query
        per page, ``_id > last`` sorted, cost secantusdb a sort of the whole collection each time: 2.4-2.8 s a page
        of 256 at the demo's 82k, the reindex's main cost; the cursor reads 10 pages in 2.2 s. A caller's time
        between pages must stay under the server's cursor idle timeout, 10 min by default.)"""
        cursor = self._call("find", lambda: self.db[collection].find({}, sort=[("_id", 1)], batch_size=size))
        try:
            while True:
                page = self._call("find", lambda: [d for _, d in zip(range(size), cursor)])
                if not page:
                    return
                yield page
        finally:
            cursor.close()

    def ensure_collection(self, collection: str) -> None:
        """Create ``collection`` if it is missing. A collection that concurrent writers share is created
        before any of them writes: secantusdb deadlocked (one core spinning, every later call timing out)
        when a first update of a missing collection met its creation by an index build."""
        from pymongo.errors import CollectionInvalid

        def create() -> None:
            with contextlib.suppress(CollectionInvalid):  # it exists already
                self.db.create_collection(collection, check_exists=True)

        self._call("create collection", create)

    def expire_after(self, collection: str, field: str, seconds: int) -> None:
        """A TTL index: MongoDB deletes documents once ``field`` (a date) is ``seconds`` old (checked about
        once a minute). An existing TTL on the field is changed in place (collMod)."""
        from pymongo.errors import OperationFailure

        try:
            self._call("create TTL index", self.db[collection].create_index, field, expireAfterSeconds=seconds)
        except MMSearchError as e:
            if not isinstance(e.__cause__, OperationFailure):
                raise
            self._call("change TTL", self.db.command, "collMod", collection,
                       index={"keyPattern": {field: 1}, "expireAfterSeconds": seconds})

    def delete_before(self, collection: str, field: str, cutoff: Any) -> int:
        """Delete the documents whose ``field`` is before ``cutoff``; how many went."""
        return int(self._call("delete expired", self.db[collection].delete_many, {field: {"$lt": cutoff}}).deleted_count)

    def count(self, collection: str) -> int:
        return int(self._call("count", self.db[collection].count_documents, {}))

    def drop(self, collection: str) -> None:
        self._call("drop", self.db[collection].drop)

    # build bookkeeping
    def save_build(self, record: dict[str, Any]) -> None:
        self._call("save build", self.db[BUILDS].replace_one, {"_id": record["_id"]}, record, upsert=True)

    def builds(self, index: str) -> list[dict[str, Any]]:
        return self._call("list builds", lambda: list(self.db[BUILDS].find({"index": index}, sort=[("_id", 1)])))

    def delete_builds(self, ids: Iterable[str]) -> None:
        self._call("delete builds", self.db[BUILDS].delete_many, {"_id": {"$in": list(ids)}})

    def ping(self, timeout_s: float = 1.0) -> bool:
        """A short probe for readiness: bounded by ``timeout_s`` (server selection included), not by
        the client's longer timeouts for real work."""
        import pymongo

        try:
            with pymongo.timeout(timeout_s):
                self.client.admin.command("ping")
            return True
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False

    def close(self) -> None:
        self.client.close()


class BuildWriter:
    """A build's document writes into one collection: inserted first while most of each batch has been new
    (a first build; ``DocumentStore.upsert_many(insert_first=True)``), upserted outright once half a batch
    already existed (a rebuild, where inserting first would cost about a quarter more)."""

    def __init__(self, ds: DocumentStore, collection: str):
        self.ds = ds
        self.collection = collection
        self.insert_first = True

    def write(self, docs: Sequence[dict[str, Any]]) -> None:
        existed = self.ds.upsert_many(self.collection, docs, insert_first=self.insert_first)
        self.insert_first = self.insert_first and 2 * existed < len(docs)


def _redact(uri: str) -> str:
    """Never print a password from a connection string."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
