"""The documents API (issue 33): add, change and delete single documents of an index's live build.

A write goes to the live build's three parts together: the vector and stored fields (Milvus
collection ``<index>__<build>``), the terms (its tantivy build, when it has lexical fields) and the
stored document (MongoDB collection ``<index>``), in that order, and is acknowledged only once all
three are written and durable (Milvus: in its write-ahead log; tantivy: committed; MongoDB: journaled,
write concern j). The content hash of each document's embedded field is kept beside it in MongoDB,
written last: a document whose embedded content did not change keeps its stored vector, so a
metadata-only update runs no inference. Hash and vector agree because MongoDB is written last — a
write that failed half-way leaves the old hash, and its retry encodes again.

Every write is journaled first (MongoDB ``_doc_journal``, see clients/journal.py: the commit point; a write
that dies half-way is applied again, whole, at the next start or write) and made under the index's write
lease (one writer at a time across replicas; a reindex, rollback or snapshot pauses writes with it for its
final step). Writes of one index are also serialised in this process (a lock); an ``op_id`` is recorded in MongoDB's
``_doc_ops`` after the write, so the same op sent again (a retry) is answered from the record and
written once. Why here and not a service of its own: this process already holds the stores' clients,
the model repository and its encoders, the API keys, and the search path that must see the writes.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.api.documents import (
    BLOB_FIELD,
    META_KEY,
    DeleteDocumentsBody,
    DocumentsRejected,
    IndexSchema,
    PutDocumentsBody,
    ValidDocument,
    WriteResult,
    check_ids,
    content_hash,
    is_blob_ref,
    make_reject,
    public,
    titled_text,
    validate_documents,
)
from mmsearch.api.filters import compile_filter
from mmsearch.api.models import parse
from mmsearch.clients.blobs import BlobStore
from mmsearch.clients.documents import BUILDS, DocumentStore
from mmsearch.clients.journal import LEASE_TTL_S, IndexLease, Journal, recover
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import BUILD_SEP, VectorStore, check_index_name, collection_name
from mmsearch.config import Config
from mmsearch.encoders.encoder import Encoder, open_encoder
from mmsearch.encoders.image_files import read_local_image
from mmsearch.errors import AlreadyExists, BadInput, Internal, MMSearchError, NotFound, TooLarge, Unavailable
from mmsearch.modelrepo.manifest import MANIFEST_NAME
from mmsearch.modelrepo.svg import is_svg, rasterise
from mmsearch.retrieval_service.deps import Lazy
from mmsearch.retrieval_service.prometheus_metrics import Metrics

IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
               (b"GIF89a", "image/gif"), (b"RIFF", "image/webp"), (b"BM", "image/bmp"))

log = logging.getLogger("mmsearch.documents")
OPS = "_doc_ops"  # applied op_ids: {_id: "<index>/<op_id>", request hash, the answer, at}
ENCODE_BATCH = 64


def _request_hash(op: str, payload: Any) -> str:
    return hashlib.sha256(json.dumps([op, payload], sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")).hexdigest()


class DocumentsService:
    def __init__(self, config: Config, metrics: Metrics, vectors: Lazy[VectorStore], documents: Lazy[DocumentStore],
                 lexical: Lazy[LexicalStore]):
        self.config = config
        self.metrics = metrics
        self.vectors, self.documents, self.lexical = vectors, documents, lexical
        self.encoded = 0  # documents encoded since start (tests assert a metadata-only update adds none)
        self._encoders: dict[str, tuple[int, Encoder]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._ops_ready = False
        self._journal: Journal | None = None
        self._pause_s = self.config.retrieval.fault_write_pause_s
        # a kept SVG as PNG, by its reference (content-addressed: never stale); each render is a sandboxed child process
        self._svg_png = functools.lru_cache(maxsize=128)(rasterise)

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _index_lock(self, index: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(index, threading.Lock())
        with lock:
            yield

    def _encoder(self, model: str) -> Encoder:
        """The build's model from the repository, loaded once (again when its manifest changes)."""
        model_dir = Path(self.config.model_repository) / model
        try:
            stamp = (model_dir / MANIFEST_NAME).stat().st_mtime_ns
        except FileNotFoundError as e:
            raise NotFound(f"model {model!r} (the live build's) not found in {self.config.model_repository}") from e
        with self._guard:
            hit = self._encoders.get(model)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        enc = open_encoder(model_dir, threads=self.config.retrieval.encode_threads)
        with self._guard:
            self._encoders[model] = (stamp, enc)
        return enc

    def schema(self, index: str) -> IndexSchema:
        """What the live build of ``index`` records: model, fields, lexical fields, image root."""
        check_index_name(index)
        vs, ds = self.vectors.get(), self.documents.get()
        live = vs.live_build(index)
        if live is None:
            raise NotFound(f"index {index!r} not found (create it with mmsearch build-index)")
        coll = collection_name(index, live)
        rec = ds.get_one(BUILDS, coll)
        if rec is None:
            raise Internal(f"index {index}: the live build {live} has no build record in MongoDB {BUILDS}")
        return IndexSchema(index, live, str(rec["model"]), str(rec.get("modality") or "text"), int(rec.get("dim") or vs.dim(coll)),
                           dict(rec.get("fields") or {}), list(rec.get("lexical") or []), int(rec.get("stored_docs") or 0),
                           rec.get("image_root"), rec.get("embed_title"))

    def _replayed(self, ds: DocumentStore, index: str, op_id: str | None, request_hash: str) -> WriteResult | None:
        if op_id is None:
            return None
        if not self._ops_ready:
            ds.ensure_collection(OPS)  # (created before any write: a shared collection, see DocumentStore.ensure_collection)
            self._ops_ready = True
        rec = ds.get_one(OPS, f"{index}/{op_id}")
        if rec is None:
            return None
        if rec.get("hash") != request_hash:
            raise AlreadyExists(f"op_id: {op_id!r} was applied to index {index} with a different request; use a new op_id")
        return WriteResult.model_validate({**rec["result"], "replayed": True})

    def _record(self, ds: DocumentStore, index: str, op_id: str | None, request_hash: str, result: WriteResult) -> None:
        if op_id is not None:
            ds.save(OPS, {"_id": f"{index}/{op_id}", "index": index, "op_id": op_id, "hash": request_hash,
                          "result": result.model_dump(exclude={"replayed", "took_ms"}), "at": dt.datetime.now(dt.UTC)}, durable=True)

    def _write_terms(self, schema: IndexSchema, fn: Callable[[Any], None]) -> None:
        """Apply ``fn`` to a writer of the live build's term index and commit (nothing without lexical fields)."""
        if not schema.lexical:
            return
        writer = self.lexical.get().open_writer(collection_name(schema.index, schema.build))
        try:
            fn(writer)
        except BaseException:
            writer.abandon()
            raise
        writer.close()  # commits (durable) and releases the index lock

    def journal(self, ds: DocumentStore) -> Journal:
        if self._journal is None or self._journal.ds is not ds:
            self._journal = Journal(ds)
        return self._journal

    @contextmanager
    def _leased(self, ds: DocumentStore, index: str) -> Iterator[IndexLease]:
        """The index's write lease (across replicas, and paused by a reindex, rollback or snapshot finishing),
        and first any write that died half-way applied again, whole."""
        lease = IndexLease(ds, index, "documents-api")
        with lease.held():
            if self.journal(ds).pending(index):
                n = recover(self.vectors.get(), ds, self.lexical.get(), self.journal(ds), index)
                log.warning("index %s: %d write(s) interrupted half-way applied again from the journal", index, n)
            yield lease

    def recover_all(self) -> int:
        """At start: every index's writes that died half-way (a crash) applied again from the journal before any
        request is served. A store that is down: logged; the next write of that index does it."""
        try:
            ds, vs, lex = self.documents.get(), self.vectors.get(), self.lexical.get()
            done = 0
            for index in self.journal(ds).indexes_pending():
                with IndexLease(ds, index, "recovery").held(wait_s=LEASE_TTL_S + 5):
                    done += recover(vs, ds, lex, self.journal(ds), index)
            if done:
                log.warning("%d write(s) interrupted half-way applied again from the journal", done)
            return done
        except MMSearchError as e:
            log.warning("journal recovery deferred to the next write: %s", e)
            return 0

    def _fault_pause(self) -> None:
        if self._pause_s:  # tests only (retrieval.fault_write_pause_s): widen the window between stores for a SIGKILL
            time.sleep(self._pause_s)

    @contextmanager
    def reconnecting(self) -> Iterator[None]:
        """A store found down is reconnected on the next call (as the search path's stages do)."""
        try:
            yield
        except Unavailable as e:
            for dep in (self.vectors, self.documents):
                if e.dependency.startswith(dep.name):
                    dep.reset()
            raise

    # ------------------------------------------------------------------ writes
    def put(self, index: str, body: Any) -> WriteResult:
        t0 = time.perf_counter()
        req = parse(PutDocumentsBody, body)
        schema = self.schema(index)
        r = self.config.retrieval
        docs = validate_documents(req.documents, schema, r.documents_max_batch, r.documents_max_bytes, r.documents_max_image_bytes)
        vs, ds = self.vectors.get(), self.documents.get()
        coll = collection_name(index, schema.build)
        request_hash = _request_hash("put", req.documents)
        with self._index_lock(index), self._leased(ds, index) as lease:
            if vs.live_build(index) != schema.build:  # a reindex or rollback switched the build meanwhile: its schema rules
                schema = self.schema(index)
                docs = validate_documents(req.documents, schema, r.documents_max_batch, r.documents_max_bytes, r.documents_max_image_bytes)
                coll = collection_name(index, schema.build)
            replay = self._replayed(ds, index, req.op_id, request_hash)
            if replay is not None:
                return replay.model_copy(update={"took_ms": round((time.perf_counter() - t0) * 1000, 3)})
            enc = self._encoder(schema.model)
            pixels = self._load_images(schema, docs, enc, ds) if schema.modality == "image" else {}
            vectors = self._kept_vectors(schema, docs, vs, ds)
            todo = [d for d in docs if d.id not in vectors]
            for i in range(0, len(todo), ENCODE_BATCH):
                chunk = todo[i:i + ENCODE_BATCH]
                out = enc.encode([pixels[d.id] if schema.modality == "image" else titled_text(d.doc, str(d.source), schema.embed_title)
                                  for d in chunk])
                if out.shape != (len(chunk), schema.dim):
                    raise Internal(f"model {schema.model} returned {out.shape}, expected ({len(chunk)}, {schema.dim})")
                vectors.update({d.id: v for d, v in zip(chunk, out)})
                lease.renew()
            self.encoded += len(todo)
            self.metrics.documents_encoded.labels(index).inc(len(todo))
            blobs = BlobStore(ds)
            blobs.touch([d.blob for d in docs if d.blob])  # (sent back by reference: kept already, in use again)
            for d in docs:
                d.doc[META_KEY] = {"hash": d.hash}
                if d.image is not None and d.source is None and d.blob is None:  # sent inline: kept before it is journaled
                    d.doc[BLOB_FIELD] = blobs.put(d.image)
            matrix = np.stack([vectors[d.id] for d in docs])
            # journaled first (the commit point), then the three stores: a write that dies half-way is applied
            # again, whole, from its entry (see clients/journal.py), never left half-written
            seq = self.journal(ds).append(index, "put", schema.build, [d.doc for d in docs], matrix, op_id=req.op_id)
            shown = [{k: v for k, v in d.doc.items() if k != META_KEY} for d in docs]  # (what a search returns beside the vector)
            meta = [{k: d.doc[k] for k in schema.fields} for d in docs] if schema.fields else None
            vs.upsert(coll, [d.id for d in docs], matrix, meta, shown if schema.stored_docs else None, schema.stored_docs)
            self._fault_pause()
            self._write_terms(schema, lambda w: w.upsert(shown))
            self._fault_pause()
            ds.upsert_many(index, [d.doc for d in docs], durable=True)  # last: its hashes say what Milvus holds
            self.journal(ds).mark(index, seq)
            result = WriteResult(index=index, build=schema.build, op="put", op_id=req.op_id, written=len(docs), encoded=len(todo),
                                 unchanged=len(docs) - len(todo))
            self._record(ds, index, req.op_id, request_hash, result)
        self.metrics.document_writes.labels(index, "put").inc(len(docs))
        return result.model_copy(update={"took_ms": round((time.perf_counter() - t0) * 1000, 3)})

    def _load_images(self, schema: IndexSchema, docs: list[ValidDocument], enc: Encoder, ds: DocumentStore) -> dict[str, Any]:
        """Every image read (a path: under the build's image root, SVGs rendered in the sandbox; a stored inline
        image sent back by its reference: from the blob store) and preprocessed before anything is written: an
        unreadable one refuses the batch, naming it."""
        rejects = []
        pixels: dict[str, Any] = {}
        root = Path(schema.image_root) if schema.image_root else None
        stored = BlobStore(ds).get_many([d.blob for d in docs if d.blob]) if any(d.blob for d in docs) else {}
        for d in docs:
            try:
                if d.blob is not None:
                    if d.blob not in stored:
                        raise BadInput(f"no stored image {d.blob} (send the image again as image_b64)")
                    d.image = stored[d.blob]
                    d.hash = content_hash(schema.model, "image", d.image)
                elif d.image is None:
                    if root is None:
                        raise BadInput(f"index {schema.index} records no image root: send image_b64")
                    d.image = read_local_image(str(d.source), root, self.config.retrieval.documents_max_image_bytes, enc.render_edge)
                    d.hash = content_hash(schema.model, "image", d.image)
                pixels[d.id] = enc.preprocess_image(d.image, f"documents[{d.position}] image")
            except MMSearchError as e:
                rejects.append(make_reject(d.position, d.id, BLOB_FIELD if d.blob else "image" if d.source is not None else "image_b64",
                                           e.message))
        if rejects:
            raise DocumentsRejected(rejects, len(docs))
        return pixels

    def _kept_vectors(self, schema: IndexSchema, docs: list[ValidDocument], vs: VectorStore, ds: DocumentStore) -> dict[str, np.ndarray]:
        """The stored vectors of documents whose embedded content is unchanged (no inference for them)."""
        coll = collection_name(schema.index, schema.build)
        old = {o["_id"]: o for o in ds.find(schema.index, {"_id": {"$in": [d.id for d in docs]}}, [META_KEY, schema.embedded])}
        same = []
        for d in docs:
            o = old.get(d.id)
            if o is None:
                continue
            h = (o.get(META_KEY) or {}).get("hash")
            if h is None and schema.embedded == "text" and isinstance(o.get("text"), str):  # written by build-index: its text says
                h = content_hash(schema.model, "text", o["text"])
            if h == d.hash:
                same.append(d.id)
        return vs.vectors(coll, same) if same else {}  # (one Milvus no longer holds is encoded again)

    def delete(self, index: str, body: Any) -> WriteResult:
        t0 = time.perf_counter()
        req = parse(DeleteDocumentsBody, body)
        if (req.ids is None) == (req.filter is None):
            raise BadInput("body: give ids or filter (one of them)")
        schema = self.schema(index)
        vs, ds = self.vectors.get(), self.documents.get()
        coll = collection_name(index, schema.build)
        limit = self.config.retrieval.documents_max_batch
        request_hash = _request_hash("delete", {"ids": req.ids, "filter": req.filter})
        ids = check_ids(req.ids, limit) if req.ids is not None else []
        expr = compile_filter(req.filter, vs.fields(coll)) if req.filter is not None else ""
        with self._index_lock(index), self._leased(ds, index):
            if vs.live_build(index) != schema.build:  # switched meanwhile (a reindex or rollback)
                schema = self.schema(index)
                coll = collection_name(index, schema.build)
            replay = self._replayed(ds, index, req.op_id, request_hash)
            if replay is not None:
                return replay.model_copy(update={"took_ms": round((time.perf_counter() - t0) * 1000, 3)})
            if req.filter is not None:
                ids = vs.ids_where(coll, expr, limit + 1)
                if len(ids) > limit:
                    raise TooLarge(f"filter: matches more than {limit:,} documents (the batch limit): delete with narrower filters")
            found = vs.existing(coll, ids) if ids else set()
            if ids:
                seq = self.journal(ds).append(index, "delete", schema.build, ids=ids, op_id=req.op_id)
                vs.delete(coll, ids)  # first: searches stop finding them
                self._write_terms(schema, lambda w: w.delete(ids))
                ds.delete_ids(index, ids, durable=True)
                self.journal(ds).mark(index, seq)
            result = WriteResult(index=index, build=schema.build, op="delete", op_id=req.op_id, deleted=len(found),
                                 not_found=len(ids) - len(found))
            self._record(ds, index, req.op_id, request_hash, result)
        self.metrics.document_writes.labels(index, "delete").inc(len(found))
        return result.model_copy(update={"took_ms": round((time.perf_counter() - t0) * 1000, 3)})

    # ------------------------------------------------------------------ reads
    def get(self, index: str, doc_id: str) -> dict[str, Any]:
        """A document of the live build, as stored (Strong: every acknowledged write is seen)."""
        schema = self.schema(index)
        vs, ds = self.vectors.get(), self.documents.get()
        if not vs.existing(collection_name(index, schema.build), [doc_id]):
            raise NotFound(f"document {doc_id!r} not found in index {index}")
        doc = public(ds.get_one(index, doc_id))
        if doc is None:
            raise NotFound(f"document {doc_id!r} not found in index {index} (its vector is there, its document is not)")
        return doc

    def image(self, ref: str) -> tuple[bytes, str]:
        """An image kept from a document sent inline (``image_blob``), to show beside its hits: the bytes and
        their content type. An SVG is sent rendered to PNG by the sandboxed renderer, never as SVG: a page
        that showed it raw would run what the writer put in it."""
        if not is_blob_ref(ref):
            raise BadInput(f"image reference {ref[:80]!r} is not sha256:<64 hex digits>")
        found = BlobStore(self.documents.get()).get_many([ref])
        if ref not in found:
            raise NotFound(f"no stored image {ref}")
        data = found[ref]
        if is_svg(data):
            return self._svg_png(data, ref), "image/png"
        return data, next((mime for magic, mime in IMAGE_MAGIC if data.startswith(magic)), "application/octet-stream")

    def indexes(self) -> list[dict[str, Any]]:
        vs = self.vectors.get()
        names = sorted({c.split(BUILD_SEP, 1)[0] for c in vs.collections() if BUILD_SEP in c})
        return [self.index_info(n) for n in names]

    def index_info(self, index: str) -> dict[str, Any]:
        """Model (name, manifest hash), dims, count, stored and lexical fields, the live build and the others."""
        check_index_name(index)
        vs, ds = self.vectors.get(), self.documents.get()
        live = vs.live_build(index)
        builds = vs.builds(index)
        if live is None and not builds:
            raise NotFound(f"index {index!r} not found")
        records = {r["build"]: r for r in ds.builds(index)}
        rec = records.get(live or "", {})
        model = rec.get("model")
        version = (rec.get("model_ref") or {}).get("version")  # what made its vectors, as the build recorded it
        if model and version is None:
            manifest = Path(self.config.model_repository) / str(model) / MANIFEST_NAME
            if manifest.is_file():
                version = "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
        count = vs.count(collection_name(index, live)) if live else None
        return {
            "index": index, "live_build": live, "model": model, "model_version": version, "dim": rec.get("dim"),
            "modality": rec.get("modality"), "count": count, "fields": dict(rec.get("fields") or {}),
            "lexical": list(rec.get("lexical") or []), "stored_docs": int(rec.get("stored_docs") or 0),
            "image_root": rec.get("image_root"),
            "builds": [{"build": b, "live": b == live, "status": records.get(b, {}).get("status", "?"),
                        "indexed": records.get(b, {}).get("counts", {}).get("indexed"), "model": records.get(b, {}).get("model"),
                        "model_version": (records.get(b, {}).get("model_ref") or {}).get("version"),
                        "started": records.get(b, {}).get("started"), "finished": records.get(b, {}).get("finished")}
                       for b in builds],
        }
