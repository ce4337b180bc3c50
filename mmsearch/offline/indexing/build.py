"""One index build: stream documents -> encode -> Milvus + MongoDB, pipelined, resumable.

Three stages overlap: a reader thread (parse, validate, load and preprocess images with a small
thread pool), the encoder (this thread: ONNX Runtime or Triton), and a writer thread (MongoDB
upserts, BM25 terms, Milvus upserts, then a checkpoint). Queues between them are bounded, so memory
stays bounded whatever the input size (beyond the set of ids kept for duplicate detection).

The BM25 terms are committed (tantivy: a new segment, fsync) every ``LEXICAL_COMMIT_S`` rather than
per batch: a commit per batch cost the writer about half its time, and the checkpoint moves with the
commit, so everything up to it is durable in all three stores.

A build writes collection ``<index>__<build>``; the alias ``<index>`` moves to it only after the
build completed and passed its checks (row count, a sample search). The checkpoint (last line fully
written to both stores, and the counters up to it) lives in MongoDB's ``_builds`` collection, so
``--resume`` continues an interrupted build without re-encoding what was already written: lines up
to the checkpoint are skipped, and ids already in Milvus after it are not encoded again (their
terms are written again: terms after the checkpoint were not committed).

``engine="ray"`` keeps everything here (checks, record, reader rules, checkpoints, finish) and hands the
encoding and the Milvus/MongoDB writes to parallel workers: ``distributed.run_distributed``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from tqdm import tqdm

from mmsearch.api.documents import BLOB_FIELD, lexical_problem, stored_field_problem, titled_text
from mmsearch.api.filters import parse_field_spec
from mmsearch.clients.blobs import BlobStore
from mmsearch.clients.documents import BUILDS, BuildWriter, DocumentStore
from mmsearch.clients.journal import LEASE_TTL_S, IndexLease, Journal
from mmsearch.clients.lexical import LexicalStore, LexicalWriter, check_lexical_fields
from mmsearch.clients.vectors import IndexSpec, VectorStore, check_index_name, collection_name
from mmsearch.encoders.encoder import Encoder, open_encoder
from mmsearch.errors import BadInput, Internal, MMSearchError, NotFound
from mmsearch.modelrepo.manifest import model_ref
from mmsearch.offline.indexing.reader import Doc, ReaderState, Reject, count_lines, iter_lines, iter_lines_at, parse_line, read_image_bytes
from mmsearch.offline.indexing.stores import open_stores

log = logging.getLogger("mmsearch.index")
# A text batch is length-sorted before it is encoded in chunks (encoders.encoder.TEXT_CHUNK): the wider the batch,
# the closer each chunk's texts are in length and the less the encoder spends on padding. On the scale corpus's
# mixed lengths (46 tokens on average, p99 168), chunks drawn from 256 texts pad to 1.38x the real tokens, from
# 1,024 to 1.10x; a 20k build there ran 170 -> 189-208 docs/s (bench/scale.py --batch-size, docs/architecture.md).
# On the demo's even glosses it made no measured difference.
TEXT_BATCH, IMAGE_BATCH = 1024, 32
LEXICAL_COMMIT_S = 10.0  # BM25 terms committed (and the checkpoint moved) at most this often, by default
_STOP = object()


@dataclass
class BuildOptions:
    index: str
    docs: Path
    model: str
    repo: Path = Path("model_repository")
    data_dir: Path = Path(".mmsearch")
    image_root: Path = Path(".")
    serving_url: str | None = None
    milvus_uri: str = ""
    index_spec: IndexSpec = field(default_factory=IndexSpec)  # how a new build is indexed (config milvus.*)
    fields: dict[str, str] = field(default_factory=dict)  # document fields stored beside the vectors, for filters
    lexical: list[str] = field(default_factory=list)  # text fields indexed for BM25 (tantivy), versioned with the build
    lexical_root: Path | None = None  # default <data_dir>/lexical
    embed_title: str | None = None  # text builds: embed "<doc[field]>: <text>" (a document without the field: its text)
    mongo_uri: str = ""
    database: str = "mmsearch"
    on_error: Literal["skip", "fail"] = "skip"
    rejects: Path | None = None
    resume: bool = False
    keep: int = 2
    batch_size: int | None = None  # documents read, encoded and written together: 1,024 texts (encoded in length-sorted
    # chunks), 32 images (a batch of pixels is 19 MB; eight are queued)
    threads: int = 0
    progress: bool = True
    checkpoint_s: float = LEXICAL_COMMIT_S  # how often terms are committed and the checkpoint moves (what a crash can lose)
    engine: Literal["local", "ray"] = "local"  # ray: encode in parallel workers (offline/indexing/distributed.py; the `distributed` extra)
    workers: int = 2  # engine ray: encoding workers, one Encoder each
    ray_address: str | None = None  # engine ray: a running cluster ("auto", "ray://host:10001"); None: a local one for this build


@dataclass
class BuildSummary:
    index: str
    build: str
    read: int = 0
    indexed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rejects: str | None = None
    live: bool = False

    @property
    def docs_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"index {self.index} build {self.build}: read {self.read}, indexed {self.indexed}, skipped {skipped} "
                f"({reasons}) in {self.seconds:.1f} s ({self.docs_per_s:.0f} docs/s)"
                + (f"; rejects in {self.rejects}" if skipped and self.rejects else "")
                + ("; now live" if self.live else ""))


@dataclass
class _Batch:
    docs: list[Doc]
    rejects: list[Reject]
    last_line: int
    lines: int  # lines consumed (incl. blank and rejected)
    already: list[Doc] = field(default_factory=list)  # resumed: in Milvus already (after the last checkpoint): terms only
    vectors: np.ndarray | None = None


def reject_category(reason: str) -> str:
    """The reason without its specifics (line numbers, values): the key rejects are counted under."""
    return re.split(r"[:'\"(\d]", reason)[0].strip() or reason[:30]


def _source_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime}


def _new_build_id() -> str:
    """Sortable by time (milliseconds), unique (random suffix): rollback means 'the previous name'."""
    now = dt.datetime.now(dt.UTC)
    return "b" + now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}_" + secrets.token_hex(2)


def validate_lines(opts: BuildOptions, field_name: str, start_line: int,
                   stop: threading.Event | None = None) -> Iterator[tuple[int, int, int, Doc | Reject | None]]:
    """The reader's rules, the same for every engine: (line, byte offset, byte offset after it, a document,
    a reject naming the line and reason, or None for a blank line) for each line after ``start_line``.
    Lines up to ``start_line`` (committed) are parsed for their ids only, so duplicates of them are still caught."""
    state = ReaderState()
    for n, raw in iter_lines(opts.docs, 0):
        if n > start_line:
            break
        parse_line(n, raw, field_name, state)
    for n, start, end, raw in iter_lines_at(opts.docs, start_line):
        if stop is not None and stop.is_set():
            return
        p = parse_line(n, raw, field_name, state)
        if isinstance(p, Doc) and opts.fields:
            p = _check_fields(p, opts.fields)
        if isinstance(p, Doc) and opts.lexical:
            p = _check_lexical(p, opts.lexical)
        yield n, start, end, p


def fail_on_rejects(opts: BuildOptions, rejects: list[Reject]) -> None:
    """--on-error fail: the first bad line stops the build."""
    if rejects and opts.on_error == "fail":
        r = min(rejects, key=lambda r: r.line)
        raise BadInput(f"{opts.docs}:{r.line}: {r.reason} (--on-error fail)")


class Checkpoints:
    """What the writer has written since the last checkpoint, and the checkpoint itself (both engines):
    terms committed, then the line and the counts up to it recorded in the build record, so all three
    stores hold everything up to that line."""

    def __init__(self, opts: BuildOptions, record: dict[str, Any], docs: DocumentStore, lexical: LexicalWriter | None,
                 rejects_fh: IO[str]):
        self.o, self.rec, self.ds, self.lex, self.rejects_fh = opts, record, docs, lexical, rejects_fh
        self.pending: dict[str, Any] = {"read": 0, "indexed": 0, "skipped": {}, "line": None}
        self.last_commit = time.monotonic()

    def add(self, indexed: int, rejects: list[Reject], last_line: int) -> None:
        """``indexed`` documents and ``rejects`` written, every line up to ``last_line`` done."""
        for r in rejects:
            self.rejects_fh.write(r.as_json() + "\n")
        if rejects:
            self.rejects_fh.flush()
        p = self.pending
        p["read"] += indexed + len(rejects)
        p["indexed"] += indexed
        for r in rejects:
            k = reject_category(r.reason)
            p["skipped"][k] = p["skipped"].get(k, 0) + 1
        p["line"] = last_line
        if self.lex is None or time.monotonic() - self.last_commit >= self.o.checkpoint_s:
            self.checkpoint()
            self.last_commit = time.monotonic()

    def checkpoint(self) -> None:
        p = self.pending
        if p["line"] is None:
            return
        if self.lex is not None:
            self.lex.commit()
        c = self.rec["counts"]
        c["read"] += p["read"]
        c["indexed"] += p["indexed"]
        for k, n in p["skipped"].items():
            c["skipped"][k] = c["skipped"].get(k, 0) + n
        self.rec["lines_done"] = p["line"]
        self.rec["updated"] = _now()
        self.ds.save_build(self.rec)
        p.update(read=0, indexed=0, skipped={}, line=None)


class _Pipeline:
    def __init__(self, opts: BuildOptions, encoder: Encoder, vectors: VectorStore, docs: DocumentStore,
                 record: dict[str, Any], start_line: int, resume_check: bool, lexical: LexicalWriter | None = None):
        self.o, self.enc, self.vs, self.ds, self.rec, self.lex = opts, encoder, vectors, docs, record, lexical
        self.collection = collection_name(opts.index, record["build"])
        self.keep_docs = int(record.get("stored_docs") or 0)  # documents up to this size beside the vectors (older builds: none)
        self.start_line = start_line
        self.resume_check = resume_check
        self._checking = resume_check  # after a resume: until a batch none of whose ids Milvus holds
        self.q_read: queue.Queue = queue.Queue(maxsize=4)
        self.q_write: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.field = "image" if encoder.modality == "image" else "text"
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="image") if encoder.modality == "image" else None
        self.batch_size = opts.batch_size or (IMAGE_BATCH if encoder.modality == "image" else TEXT_BATCH)

    # reader ---------------------------------------------------------------
    def _load(self, d: Doc) -> Doc | Reject:
        try:
            if "image" not in d.doc and d.doc.get(BLOB_FIELD) == d.source:  # kept by the documents API (clients/blobs.py)
                data = BlobStore(self.ds).get(d.source)
            else:
                data = read_image_bytes(d.source, self.o.image_root, self.enc.render_edge)
            d.payload = self.enc.preprocess_image(data, f"line {d.line} image {d.source}")
            return d
        except MMSearchError as e:
            return Reject(d.line, e.message)

    def _emit(self, docs: list[Doc], rejects: list[Reject], last_line: int, lines: int) -> None:
        already: list[Doc] = []
        # One writer writes batches in line order, so once a batch has none of its ids in Milvus, no
        # later line was written before the interruption: stop asking.
        if docs and self._checking:
            done = self.vs.existing(self.collection, [d.id for d in docs])
            already = [d for d in docs if d.id in done]
            docs = [d for d in docs if d.id not in done]
            self._checking = bool(done)
        if self.pool is not None and docs:
            loaded = list(self.pool.map(self._load, docs))
            rejects = rejects + [x for x in loaded if isinstance(x, Reject)]
            docs = [x for x in loaded if isinstance(x, Doc)]
        elif self.pool is None:
            for d in docs:
                d.payload = titled_text(d.doc, d.source, self.o.embed_title)
        fail_on_rejects(self.o, rejects)
        self._put(self.q_read, _Batch(docs, rejects, last_line, lines, already))

    def _put(self, q: queue.Queue, item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def reader(self) -> None:
        try:
            docs: list[Doc] = []
            rejects: list[Reject] = []
            lines = 0
            last = self.start_line
            for n, _start, _end, p in validate_lines(self.o, self.field, self.start_line, self.stop):
                lines += 1
                last = n
                if isinstance(p, Doc):
                    docs.append(p)
                elif isinstance(p, Reject):
                    rejects.append(p)
                if len(docs) >= self.batch_size:
                    self._emit(docs, rejects, last, lines)
                    docs, rejects, lines = [], [], 0
            if self.stop.is_set():
                return
            if docs or rejects or lines:
                self._emit(docs, rejects, last, lines)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = self.error or e
        finally:
            self._put(self.q_read, _STOP)

    # writer ---------------------------------------------------------------
    def writer(self, bar: tqdm | None, rejects_fh: IO[str]) -> None:
        progress = Checkpoints(self.o, self.rec, self.ds, self.lex, rejects_fh)
        documents = BuildWriter(self.ds, self.o.index)
        try:
            while True:
                try:
                    item = self.q_write.get(timeout=0.2)
                except queue.Empty:
                    if self.stop.is_set():
                        return
                    continue
                if item is _STOP:
                    progress.checkpoint()
                    return
                if item.docs:
                    documents.write([d.doc for d in item.docs])
                if self.lex is not None and (item.docs or item.already):  # before the vectors: an id in Milvus has its terms
                    self.lex.upsert([d.doc for d in item.docs + item.already])
                if item.docs:
                    meta = [{k: d.doc[k] for k in self.o.fields} for d in item.docs] if self.o.fields else None
                    self.vs.upsert(self.collection, [d.id for d in item.docs], item.vectors, meta,
                                   [d.doc for d in item.docs] if self.keep_docs else None, self.keep_docs, fresh=True)
                progress.add(len(item.docs) + len(item.already), item.rejects, item.last_line)
                if bar is not None:
                    bar.update(item.lines)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = self.error or e
            self.stop.set()

    def run(self, total_lines: int) -> None:
        bar = tqdm(total=total_lines, initial=self.start_line, unit="doc", desc=f"build {self.o.index}",
                   disable=not self.o.progress, dynamic_ncols=True, smoothing=0.1)
        assert self.o.rejects is not None
        self.o.rejects.parent.mkdir(parents=True, exist_ok=True)
        with open(self.o.rejects, "a", encoding="utf-8") as rejects_fh:
            rt = threading.Thread(target=self.reader, name="reader", daemon=True)
            wt = threading.Thread(target=self.writer, args=(bar, rejects_fh), name="writer", daemon=True)
            rt.start()
            wt.start()
            try:
                while self.error is None:
                    item = self.q_read.get()
                    if item is _STOP:
                        break
                    if item.docs:
                        item.vectors = self.enc.encode([d.payload for d in item.docs])
                        if item.vectors.shape != (len(item.docs), self.enc.dim):
                            raise Internal(f"encoder returned {item.vectors.shape}, expected ({len(item.docs)}, {self.enc.dim})")
                    self._put(self.q_write, item)
                self._put(self.q_write, _STOP)  # the writer drains what is queued, then stops
                wt.join()
            except BaseException:
                self.stop.set()  # Ctrl-C or a failure: abandon queued work; the checkpoint covers what was written
                raise
            finally:
                self.stop.set()
                wt.join()
                rt.join(timeout=5)
                bar.close()
                if self.pool is not None:
                    self.pool.shutdown(wait=False, cancel_futures=True)
        if self.error is not None:
            raise self.error


def _check_fields(d: Doc, fields: dict[str, str]) -> Doc | Reject:
    """A document must carry each stored field with a value of its type (the documents API checks the same)."""
    for name, ftype in fields.items():
        bad = stored_field_problem(d.doc, name, ftype)
        if bad:
            return Reject(d.line, bad)
    return d


def _check_lexical(d: Doc, fields: list[str]) -> Doc | Reject:
    """A lexical field may be absent (an image without a caption) but, when present, must be text."""
    for name in fields:
        bad = lexical_problem(d.doc, name)
        if bad:
            return Reject(d.line, bad)
    return d


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _check_build(vs: VectorStore, collection: str, expected: int, docs: DocumentStore, index: str) -> None:
    got = vs.count(collection)
    if got != expected:
        raise Internal(f"build check failed: {collection} holds {got} vectors, expected {expected}")
    if docs.count(index) < expected:
        raise Internal(f"build check failed: MongoDB collection {index} holds fewer documents than indexed")
    probe_id = vs.any_id(collection)
    if probe_id is not None:
        # the sample search: a stored vector must find itself first
        vec = vs.vector(collection, probe_id)
        if vec is None:
            raise Internal(f"build check failed: {probe_id} not readable back from {collection}")
        # the probe must come first, or tie with the first: documents with the same text (216 stamps
        # share a caption) have the same vector, and any of them may rank first
        hits = vs.search(collection, vec[None, :], 64)[0]
        if not hits or not any(i == probe_id and score >= hits[0][1] - 1e-4 for i, score in hits):
            raise Internal(f"build check failed: searching {probe_id}'s own vector returned {hits[:1]}")


def switch_lexical(lex: LexicalStore, index: str, collection: str) -> None:
    """The lexical side follows the vectors' alias: a build without lexical fields clears it."""
    if lex.has_build(collection):
        lex.switch_live(index, collection)
    else:
        lex.clear_live(index)


def _retain(vs: VectorStore, ds: DocumentStore, lex: LexicalStore, index: str, keep: int) -> list[str]:
    """Keep the live build and the newest ``keep`` other complete builds (for rollback); drop older ones."""
    live = vs.live_build(index)
    others = [r["build"] for r in ds.builds(index) if r.get("status") == "complete" and r["build"] != live]
    old = others[: max(0, len(others) - keep)]
    for b in old:
        if b in vs.builds(index):
            vs.drop(index, b)
        lex.drop(collection_name(index, b))
    ds.delete_builds(collection_name(index, b) for b in old)
    return old


def check_options(opts: BuildOptions) -> Path:
    """The build's options checked before any store or model is touched; the model's folder."""
    check_index_name(opts.index)
    if opts.on_error not in ("skip", "fail"):
        raise BadInput(f"--on-error must be skip or fail, got {opts.on_error!r}")
    if (opts.batch_size is not None and opts.batch_size < 1) or opts.keep < 0 or not opts.checkpoint_s >= 0:
        raise BadInput("--batch-size must be >= 1, --keep >= 0 and --checkpoint-s >= 0")
    if opts.engine not in ("local", "ray"):
        raise BadInput(f"--engine must be local or ray, got {opts.engine!r}")
    if opts.workers < 1:
        raise BadInput("--workers must be >= 1")
    for name, ftype in opts.fields.items():
        parse_field_spec(f"{name}:{ftype}")
    check_lexical_fields(opts.lexical)
    if not opts.docs.is_file():
        raise NotFound(f"documents file not found: {opts.docs}")
    model_dir = opts.repo / opts.model
    if not model_dir.is_dir():
        raise NotFound(f"model {opts.model!r} not found in {opts.repo}")
    if not opts.image_root.is_dir():
        raise BadInput(f"--image-root {opts.image_root} is not a folder")
    return model_dir


def open_record(opts: BuildOptions, vs: VectorStore, ds: DocumentStore, encoder: Encoder) -> dict[str, Any]:
    """The build record: the interrupted build's (--resume, checked against these options) or a new one,
    with its collection created."""
    if opts.embed_title and encoder.modality == "image":
        raise BadInput(f"--embed-title is for text documents; model {opts.model!r} encodes images")
    live = vs.live_build(opts.index)
    if live is not None:
        live_dim = vs.dim(collection_name(opts.index, live))
        if live_dim != encoder.dim:
            raise BadInput(f"index {opts.index} holds {live_dim}-d vectors but model {opts.model} gives "
                           f"{encoder.dim}-d: use a new index name")
    fingerprint = _source_fingerprint(opts.docs)
    if opts.resume:
        pending = [r for r in ds.builds(opts.index) if r.get("status") == "building"]
        if not pending:
            raise BadInput(f"no interrupted build of index {opts.index} to resume")
        record = pending[-1]
        if record["source"] != fingerprint:
            raise BadInput(f"{opts.docs} changed since build {record['build']} started: start a new build")
        if record["model"] != opts.model:
            raise BadInput(f"build {record['build']} used model {record['model']!r}, not {opts.model!r}")
        if record.get("fields", {}) != opts.fields:
            raise BadInput(f"build {record['build']} stores fields {record.get('fields', {})}, not {opts.fields}: give the same --field flags")
        if record.get("lexical", []) != opts.lexical:
            raise BadInput(f"build {record['build']} indexes lexical fields {record.get('lexical', [])}, not {opts.lexical}: "
                           "give the same --lexical flag")
        if record.get("embed_title") != opts.embed_title:
            raise BadInput(f"build {record['build']} embedded title field {record.get('embed_title')!r}, not "
                           f"{opts.embed_title!r}: give the same --embed-title flag")
        log.info("resuming build %s after line %d", record["build"], record["lines_done"])
        return record
    build = _new_build_id()
    record = {"_id": collection_name(opts.index, build), "index": opts.index, "build": build,
              "model": opts.model, "model_ref": model_ref(opts.repo / opts.model), "dim": encoder.dim, "modality": encoder.modality, "source": fingerprint,
              "status": "building", "lines_done": 0, "started": _now(), "index_spec": opts.index_spec.to_json(),
              "fields": dict(opts.fields), "lexical": list(opts.lexical), "embed_title": opts.embed_title,
              "counts": {"read": 0, "indexed": 0, "skipped": {}},
              "stored_docs": opts.index_spec.stored_doc_max_bytes}  # documents up to this size kept beside the vectors
    if encoder.modality == "image":  # where the documents' image paths point (a flywheel round re-reads them)
        record["image_root"] = str(opts.image_root.resolve())
    vs.create(record["_id"], encoder.dim, opts.index_spec, opts.fields, stored_docs=record["stored_docs"])
    ds.save_build(record)
    return record


def build_index(opts: BuildOptions) -> BuildSummary:
    model_dir = check_options(opts)
    t0 = time.perf_counter()
    with open_stores(opts.milvus_uri, opts.mongo_uri, opts.data_dir, opts.database, opts.index_spec) as (vs, ds):
        encoder = open_encoder(model_dir, opts.serving_url, opts.threads)  # stores are checked before any model work
        record = open_record(opts, vs, ds, encoder)
        rejects = opts.rejects or opts.docs.with_name(f"{opts.docs.stem}.{opts.index}.rejects.jsonl")
        lex = LexicalStore(opts.lexical_root or opts.data_dir / "lexical")
        if opts.resume and opts.lexical and record["lines_done"] and not lex.has_build(record["_id"]):
            raise BadInput(f"build {record['build']} wrote terms to {lex.root / record['_id']}, which is gone "
                           "(lexical.root changed or the volume was lost): start a new build")
        writer = lex.writer(record["_id"], opts.lexical) if opts.lexical else None
        run_opts = dataclasses.replace(opts, rejects=rejects)
        try:
            if opts.engine == "ray":
                from mmsearch.offline.indexing.distributed import run_distributed

                del encoder  # each worker opens its own
                run_distributed(run_opts, model_dir, record, vs, ds, writer)
            else:
                pipe = _Pipeline(run_opts, encoder, vs, ds, record, record["lines_done"], resume_check=opts.resume, lexical=writer)
                pipe.run(count_lines(opts.docs))
        except BaseException as e:
            if writer is not None:
                writer.abandon()  # uncommitted terms dropped, the index lock released (a retry in-process must open it)
                writer = None
            if isinstance(e, BadInput) and opts.on_error == "fail":
                record["status"] = "failed"
                ds.save_build(record)
                vs.drop(opts.index, record["build"])
                lex.drop(record["_id"])
            raise
        finally:
            if writer is not None:
                writer.close()
        counts = record["counts"]
        vs.seal(record["_id"], counts["indexed"])  # fully indexed and searchable before it goes live
        _check_build(vs, record["_id"], counts["indexed"], ds, opts.index)
        # the switch under the index's write lease: the journal position it happens at is recorded on both builds
        # (the new one serves the writes after it; a rollback to the old one replays them onto it)
        journal = Journal(ds)
        with IndexLease(ds, opts.index, "build-index").held(LEASE_TTL_S + 30, "build"):
            seq = journal.last_seq(opts.index)
            record.update(status="complete", finished=_now(), journal_seq=seq)
            ds.save_build(record)
            live = vs.live_build(opts.index)  # what this switch supersedes, read under the lease
            previous = ds.get_one(BUILDS, collection_name(opts.index, live)) if live is not None else None
            if previous is not None:
                previous["superseded_seq"] = seq
                ds.save_build(previous)
            vs.switch_alias(opts.index, record["build"])
            switch_lexical(lex, opts.index, record["_id"])
        dropped = _retain(vs, ds, lex, opts.index, opts.keep)
        if dropped:
            log.info("dropped old builds of %s: %s", opts.index, ", ".join(dropped))
        return BuildSummary(opts.index, record["build"], counts["read"], counts["indexed"], dict(counts["skipped"]),
                            time.perf_counter() - t0, str(rejects) if counts["skipped"] else None, live=True)
