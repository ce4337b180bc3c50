"""Images sent inline (``image_b64`` through the documents API), kept in the document store (``_doc_blobs``).

An image index's document normally names its image by a path under the build's image root, and everything
that encodes it again (a reindex to a new model, a rollback's replay, the flywheel's rebuild) reads it from
there. An image sent inline has no path: without a copy, those would have nothing to encode, and the
document would silently drop out of the next build. So its bytes are kept here, content-addressed
(``_id`` ``sha256:<hex>``: the same image sent twice is kept once), written durably before the write that
references it is journaled, and the document records the reference in ``image_blob``.

A blob no document references (its document deleted, or given another image) is deleted by the retention
sweep (retrieval_service/retention.py) once older than a day, unless a journal entry still holds it (a
rollback would replay it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from mmsearch.api.documents import BLOB_FIELD
from mmsearch.clients.documents import BUILDS, DocumentStore
from mmsearch.errors import BadInput, MMSearchError

log = logging.getLogger("mmsearch.blobs")
BLOBS = "_doc_blobs"
PREFIX = "sha256:"


def blob_ref(data: bytes) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


def blob_refs(docs: Iterable[dict[str, Any]]) -> list[str]:
    """The blobs some documents reference, once each."""
    return sorted({d[BLOB_FIELD] for d in docs if isinstance(d.get(BLOB_FIELD), str)})


class BlobStore:
    def __init__(self, ds: DocumentStore):
        self.ds = ds
        self.coll = ds.db[BLOBS]
        self._has_index: set[tuple[str, str]] = set()

    def put(self, data: bytes) -> str:
        """Keep ``data`` (durably: journaled by MongoDB before this returns); its reference."""
        from bson import Binary
        from pymongo import UpdateOne, WriteConcern

        ref = blob_ref(data)
        durable = self.coll.with_options(write_concern=WriteConcern(w=1, j=True))
        now = dt.datetime.now(dt.UTC)
        self.ds._call("blob put", durable.bulk_write, [UpdateOne(  # (an existing one is only touched: the sweep keeps it)
            {"_id": ref}, {"$set": {"at": now}, "$setOnInsert": {"data": Binary(data), "bytes": len(data)}}, upsert=True)])
        return ref

    def touch(self, refs: Sequence[str]) -> None:
        """Mark kept images as in use now (a write naming one again): the sweep leaves them a day more."""
        from pymongo import WriteConcern

        if refs:
            durable = self.coll.with_options(write_concern=WriteConcern(w=1, j=True))
            self.ds._call("blob touch", durable.update_many, {"_id": {"$in": list(refs)}}, {"$set": {"at": dt.datetime.now(dt.UTC)}})

    def get_many(self, refs: Sequence[str]) -> dict[str, bytes]:
        rows = self.ds._call("blob get", lambda: list(self.coll.find({"_id": {"$in": list(refs)}}, {"data": 1})))
        return {str(r["_id"]): bytes(r["data"]) for r in rows}

    def get(self, ref: str) -> bytes:
        if not isinstance(ref, str) or not ref.startswith(PREFIX):
            raise BadInput(f"{BLOB_FIELD}: {ref!r} is not a stored image's reference (sha256:<hex>)")
        found = self.get_many([ref])
        if ref not in found:
            raise BadInput(f"{BLOB_FIELD}: no stored image {ref} (send the image again as image_b64)")
        return found[ref]

    def rows(self, refs: Sequence[str]) -> list[dict[str, Any]]:
        """As stored (a snapshot copies them)."""
        return self.ds._call("blob get", lambda: list(self.coll.find({"_id": {"$in": list(refs)}}))) if refs else []

    def load_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        from pymongo import ReplaceOne

        if rows:
            self.ds._call("blob load", self.coll.bulk_write, [ReplaceOne({"_id": r["_id"]}, r, upsert=True) for r in rows])

    def _indexed(self, collection: str, field: str) -> None:
        """An index on the references (every blob a day old is looked up at each sweep, referenced or not);
        where the server cannot make one, the lookups scan."""
        if (collection, field) in self._has_index:
            return
        try:
            self.ds._call("blob index", self.ds.db[collection].create_index, field, sparse=True)
        except MMSearchError as e:
            log.info("no index on %s.%s (%s): the blob sweep scans it", collection, field, e.message)
        self._has_index.add((collection, field))

    def sweep(self, before: dt.datetime, journal_collection: str) -> int:
        """Delete the blobs last written before ``before`` that no document of any index and no journal entry
        references. How many went."""
        old = [str(r["_id"]) for r in self.ds._call("blob sweep", lambda: list(self.coll.find({"at": {"$lt": before}}, {"_id": 1})))]
        if not old:
            return 0
        indexes = sorted({str(r["index"]) for r in self.ds._call("blob sweep", lambda: list(self.ds.db[BUILDS].find(
            {"modality": "image"}, {"index": 1})))})
        for coll, field in [*((c, BLOB_FIELD) for c in indexes), (journal_collection, "blobs")]:
            self._indexed(coll, field)
        used: set[str] = set()
        for i in range(0, len(old), 1000):
            chunk = old[i:i + 1000]
            for coll in [*indexes, journal_collection]:
                field = "blobs" if coll == journal_collection else BLOB_FIELD
                used.update(str(x) for r in self.ds._call("blob sweep", lambda c=coll, f=field, ch=chunk: list(
                    self.ds.db[c].find({f: {"$in": ch}}, {f: 1}))) for x in (r[field] if isinstance(r[field], list) else [r[field]]))
        gone = [ref for ref in old if ref not in used]
        if not gone:
            return 0
        return int(self.ds._call("blob sweep", self.coll.delete_many, {"_id": {"$in": gone}, "at": {"$lt": before}}).deleted_count)
