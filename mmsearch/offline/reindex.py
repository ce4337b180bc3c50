"""`mmsearch reindex`: a managed model change of a live index (issue 33), while it serves and takes writes.

    mmsearch reindex --index texts --model minilm_v2
    mmsearch reindex --index texts --model minilm_v2 --judged judged.jsonl --metric ndcg@10
    mmsearch index rollback texts          # undoes it (writes made since are carried back)

A new build ``<index>__<build>`` is made from the documents the index holds (the live build's ids in Milvus,
their documents in MongoDB ``<index>``; not the original file), encoded by the new model, while the old build
serves. Writes made meanwhile go to the old build and to the operation journal (clients/journal.py); they are
replayed onto the new build (encoded by its model), first without pausing anyone, then once more under the
index's write lease — a short write pause — with a count check, the build record, the alias and the lexical
pointer switched together. Given a judged query set, the new build must not be worse than the serving one
(the flywheel's gate, measured on both builds as indexed) or it is dropped and nothing switches.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mmsearch.api.documents import BLOB_FIELD, META_KEY, titled_text
from mmsearch.cli import run_cli
from mmsearch.clients.blobs import BlobStore, blob_refs
from mmsearch.clients.documents import BUILDS, DocumentStore
from mmsearch.clients.journal import LEASE_TTL_S, IndexLease, Journal, apply_entry, recover
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import IndexSpec, VectorStore, check_index_name, collection_name
from mmsearch.config import flag_overrides, lexical_root, load_config
from mmsearch.encoders.encoder import Encoder, open_encoder
from mmsearch.errors import BadInput, Internal, MMSearchError, NotFound
from mmsearch.modelrepo.manifest import model_ref, read_manifest
from mmsearch.offline.eval_served import Judged, load_judged
from mmsearch.offline.flywheel.gate import GateResult
from mmsearch.offline.indexing.build import IMAGE_BATCH, LEXICAL_COMMIT_S, TEXT_BATCH, _new_build_id, _now, _retain, switch_lexical
from mmsearch.offline.indexing.reader import read_image_bytes
from mmsearch.offline.indexing.stages import pipelined
from mmsearch.offline.indexing.stores import open_stores
from mmsearch.ranking_metrics import ranked_metrics

log = logging.getLogger("mmsearch.index")
CATCH_UP_ROUNDS = 5  # unpaused catch-up rounds before the paused one
FINAL_LEASE_WAIT_S = LEASE_TTL_S + 30  # a writer mid-batch finishes first


class GateRefused(BadInput):
    """The new model is worse than the serving one on the judged set: nothing switched."""


@dataclass
class ReindexOptions:
    index: str
    model: str
    repo: Path = Path("model_repository")
    data_dir: Path = Path(".mmsearch")
    milvus_uri: str = ""
    mongo_uri: str = ""
    database: str = "mmsearch"
    lexical_root: Path | None = None
    serving_url: str | None = None
    threads: int = 0
    batch_size: int | None = None  # documents encoded together; None: as build-index (1,024 texts, 32 images)
    judged: Path | None = None
    metric: str = "ndcg@10"
    tolerance: float = 0.0  # the new build may be this much (relative) below the serving one and still pass
    keep: int = 2
    image_root: Path | None = None  # image indexes: where the documents' paths point (default: the build's recorded root)
    progress: bool = True
    on_catch_up: Callable[[int], None] | None = None  # (tests) called after each unpaused catch-up round with its last seq


@dataclass
class ReindexSummary:
    index: str
    build: str
    from_build: str
    model: str
    from_model: str
    indexed: int = 0
    replayed: int = 0  # journal entries applied after the bulk read
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    paused_ms: float = 0.0  # writes waited this long for the switch
    gate: GateResult | None = None
    live: bool = False

    def line(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        return (f"index {self.index}: build {self.build} ({self.model}) from {self.from_build} ({self.from_model}): "
                f"indexed {self.indexed}, {self.replayed} journaled write(s) replayed, writes paused {self.paused_ms:.0f} ms, "
                f"{self.seconds:.1f} s" + (f"; skipped {skipped}" if skipped else "")
                + (f"; {self.gate.line()}" if self.gate else "") + ("; now live" if self.live else ""))


def query_models(repo: Path, model: str, modality: str) -> dict[str, str]:
    """The models that encode queries against a build of ``model``: itself, and a dual image tower's text partner."""
    if modality == "text":
        return {"text": model}
    out = {"image": model}
    partner = read_manifest(repo / model).partner
    if partner and (repo / partner).is_dir():
        out["text"] = partner
    return out


DocEncoder = Callable[[list[dict[str, Any]]], tuple[list[int], np.ndarray]]


def doc_encoder(enc: Encoder, modality: str, image_root: Path | None, skipped: dict[str, int],
                embed_title: str | None = None, blobs: BlobStore | None = None) -> DocEncoder:
    """(positions kept, their vectors) for stored documents: the text, or the image read again from its path
    or, sent inline, from the blob store (clients/blobs.py)."""

    def encode(docs: list[dict[str, Any]]) -> tuple[list[int], np.ndarray]:
        keep: list[int] = []
        payloads: list[Any] = []  # texts, or preprocessed pixel arrays
        refs = blob_refs(docs) if modality == "image" and blobs is not None else []
        stored = blobs.get_many(refs) if refs and blobs is not None else {}
        for i, d in enumerate(docs):
            ref = d.get(BLOB_FIELD)
            if modality == "image" and isinstance(ref, str) and not isinstance(d.get("image"), str):
                try:
                    if ref not in stored:
                        raise NotFound(f"stored image {ref} is missing")
                    payloads.append(enc.preprocess_image(stored[ref], f"document {d.get('_id')} image {ref}"))
                    keep.append(i)
                except MMSearchError as e:
                    log.warning("document %s: %s", d.get("_id"), e.message)
                    skipped["image unreadable"] = skipped.get("image unreadable", 0) + 1
                continue
            if modality == "text":
                if isinstance(d.get("text"), str) and d["text"].strip():
                    keep.append(i)
                    payloads.append(titled_text(d, d["text"], embed_title))
                else:
                    skipped["no text"] = skipped.get("no text", 0) + 1
                continue
            if not isinstance(d.get("image"), str) or image_root is None:
                skipped["no image"] = skipped.get("no image", 0) + 1
                continue
            try:
                payloads.append(enc.preprocess_image(read_image_bytes(d["image"], image_root, enc.render_edge), f"document {d.get('_id')} image"))
                keep.append(i)
            except MMSearchError as e:
                log.warning("document %s: %s", d.get("_id"), e.message)
                skipped["image unreadable"] = skipped.get("image unreadable", 0) + 1
        vecs = enc.encode(payloads) if payloads else np.zeros((0, enc.dim), np.float32)
        return keep, vecs

    return encode


def replay(vs: VectorStore, lex: LexicalStore, journal: Journal, ds: DocumentStore, record: dict[str, Any], after: int,
           upto: int | None, encode: DocEncoder | None) -> tuple[int, int]:
    """Apply journal entries ``after < seq <= upto`` onto the build of ``record`` (not the live one: MongoDB's
    documents are left alone, they are current). A put is encoded by the build's model unless the entry was
    written to a build of that same model (its vectors are used then). (last seq applied, entries applied)."""
    models: dict[str, str | None] = {}
    last, n = after, 0
    for e in journal.entries(record["index"], after, upto):
        if e.build not in models:
            src = ds.get_one(BUILDS, collection_name(record["index"], e.build)) or {}
            models[e.build] = (src.get("model_ref") or {}).get("manifest_sha256") or None
        same = models[e.build] is not None and models[e.build] == (record.get("model_ref") or {}).get("manifest_sha256")
        if e.op == "put" and not same:
            if encode is None:
                raise Internal(f"journal entry {e.seq} of {record['index']} needs encoding by {record['model']}")
            keep, vecs = encode(e.docs)
            e.docs = [e.docs[i] for i in keep]
            e.vectors = vecs
        apply_entry(vs, None, lex, record, e)
        last, n = e.seq, n + 1
    return last, n


def _gate(vs: VectorStore, repo: Path, judged: Sequence[Judged], old: dict[str, Any], new: dict[str, Any], metric: str,
          tolerance: float, modality: str) -> GateResult:
    """Each build searched as indexed, its queries encoded by its own query model: ``metric`` over the judged set."""
    scores: list[dict[str, float]] = []
    k = max(10, int(metric.split("@")[1]) if "@" in metric else 10)
    for rec in (old, new):
        qm = (rec.get("query_models") or {}).get("text") or (rec["model"] if modality == "text" else None)
        if qm is None:
            raise BadInput(f"build {rec['build']}: no text query model recorded for its image tower {rec['model']}: cannot gate")
        enc = open_encoder(repo / qm)
        vecs = enc.encode([j.query for j in judged])
        runs = [[i for i, _ in hits] for hits in vs.search(rec["_id"], vecs, k)]
        scores.append(ranked_metrics(runs, [j.relevant for j in judged], (1, k)))
    if metric not in scores[0]:
        raise BadInput(f"--metric {metric!r} unknown (choose from {', '.join(sorted(scores[0]))})")
    inc, cand = scores[0][metric], scores[1][metric]
    return GateResult(cand >= inc * (1 - tolerance), metric, cand, inc, -tolerance if tolerance else 0.0, len(judged),
                      vs.count(new["_id"]), scores[1], scores[0])


def reindex(o: ReindexOptions) -> ReindexSummary:
    check_index_name(o.index)
    if o.batch_size is not None and o.batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {o.batch_size}")
    model_dir = o.repo / o.model
    if not model_dir.is_dir():
        raise NotFound(f"model {o.model!r} not found in {o.repo}")
    judged = load_judged(o.judged) if o.judged else None
    t0 = time.perf_counter()
    lex = LexicalStore(o.lexical_root or o.data_dir / "lexical")
    with open_stores(o.milvus_uri, o.mongo_uri, o.data_dir, o.database) as (vs, ds):
        live = vs.live_build(o.index)
        if live is None:
            raise NotFound(f"index {o.index!r} not found (create it with mmsearch build-index)")
        old = ds.get_one(BUILDS, collection_name(o.index, live))
        if old is None:
            raise Internal(f"index {o.index}: the live build {live} has no build record in MongoDB {BUILDS}")
        enc = open_encoder(model_dir, o.serving_url, o.threads)
        modality = str(old.get("modality") or "text")
        if enc.modality != modality:
            raise BadInput(f"index {o.index} embeds {modality} documents; model {o.model} encodes {enc.modality}")
        journal = Journal(ds)
        with IndexLease(ds, o.index, "reindex").held(FINAL_LEASE_WAIT_S, "reindex"):  # a consistent starting point
            recover(vs, ds, lex, journal, o.index)
            start = journal.last_seq(o.index)
        build = _new_build_id()
        spec = IndexSpec(**old["index_spec"]) if old.get("index_spec") else IndexSpec()
        fields, lexical = dict(old.get("fields") or {}), list(old.get("lexical") or [])
        image_root = o.image_root or (Path(old["image_root"]) if old.get("image_root") else None)
        rec: dict[str, Any] = {
            "_id": collection_name(o.index, build), "index": o.index, "build": build, "model": o.model, "model_ref": model_ref(model_dir),
            "query_models": query_models(o.repo, o.model, modality), "dim": enc.dim, "modality": modality,
            "source": {"kind": "reindex", "from_build": live, "from_model": old.get("model"), "journal_seq": start},
            "status": "building", "started": _now(), "index_spec": spec.to_json(), "fields": fields, "lexical": lexical,
            "embed_title": old.get("embed_title"),
            "counts": {"read": 0, "indexed": 0, "skipped": {}}, "stored_docs": int(old.get("stored_docs") or 0), "journal_seq": start}
        if image_root is not None:
            rec["image_root"] = str(image_root)
        summary = ReindexSummary(o.index, build, live, o.model, str(old.get("model")))
        vs.create(rec["_id"], enc.dim, spec, fields, stored_docs=rec["stored_docs"])
        ds.save_build(rec)
        encode = doc_encoder(enc, modality, image_root, summary.skipped, old.get("embed_title"), BlobStore(ds))
        try:
            _bulk(o, vs, ds, lex, old, rec, encode, summary)
            vs.seal(rec["_id"], rec["counts"]["indexed"])
            done = start
            for _ in range(CATCH_UP_ROUNDS):  # writes made meanwhile, without pausing anyone
                last = journal.last_seq(o.index)
                if last == done:
                    break
                done, n = replay(vs, lex, journal, ds, rec, done, last, encode)
                summary.replayed += n
                if o.on_catch_up is not None:
                    o.on_catch_up(done)
            if judged is not None:
                summary.gate = _gate(vs, o.repo, judged, old, rec, o.metric, o.tolerance, modality)
                log.info("%s", summary.gate.line())
                if not summary.gate.passed:
                    raise GateRefused(f"reindex of {o.index} with {o.model} refused: {summary.gate.line()}; the serving build "
                                      f"{live} stays live")
            lease = IndexLease(ds, o.index, "reindex")
            with lease.held(FINAL_LEASE_WAIT_S, "reindex"):  # the write pause: the last writes, the checks, the switch
                t_pause = time.perf_counter()
                recover(vs, ds, lex, journal, o.index)
                if vs.live_build(o.index) != live:
                    raise BadInput(f"index {o.index}'s live build changed from {live} to {vs.live_build(o.index)} during the reindex")
                last = journal.last_seq(o.index)
                done, n = replay(vs, lex, journal, ds, rec, done, last, encode)
                summary.replayed += n
                have, want = vs.count(rec["_id"]), vs.count(old["_id"])
                skipped = sum(summary.skipped.values())
                if have + skipped < want:  # (skipped documents are counted once each)
                    raise Internal(f"reindex check failed: {rec['_id']} holds {have} documents, the live build {want} ({skipped} skipped)")
                rec["counts"]["indexed"] = have
                rec.update(status="complete", finished=_now(), journal_seq=last)
                ds.save_build(rec)
                old["superseded_seq"] = last
                ds.save_build(old)
                vs.switch_alias(o.index, build)
                switch_lexical(lex, o.index, rec["_id"])
            summary.paused_ms = (time.perf_counter() - t_pause) * 1000
        except BaseException as e:
            rec.update(status="refused" if isinstance(e, GateRefused) else "failed", finished=_now(), error=str(e)[:500])
            try:
                if vs.live_build(o.index) != build:
                    ds.save_build(rec)
                    vs.drop(o.index, build)
                    lex.drop(rec["_id"])
            except MMSearchError as cleanup:
                log.warning("could not drop the unfinished build %s: %s", build, cleanup)
            raise
        summary.indexed, summary.live = rec["counts"]["indexed"], True
        dropped = _retain(vs, ds, lex, o.index, o.keep)
        if dropped:
            log.info("dropped old builds of %s: %s", o.index, ", ".join(dropped))
        summary.seconds = time.perf_counter() - t0
        return summary


def _bulk(o: ReindexOptions, vs: VectorStore, ds: DocumentStore, lex: LexicalStore, old: dict[str, Any], rec: dict[str, Any],
          encode: DocEncoder, summary: ReindexSummary) -> None:
    """Every document the live build holds (its ids from Milvus, their documents from MongoDB), encoded by the new model."""
    fields, stored = rec["fields"], rec["stored_docs"]
    writer = lex.writer(rec["_id"], rec["lexical"]) if rec["lexical"] else None
    total = vs.count(old["_id"])
    bar = tqdm(total=total, unit="doc", desc=f"reindex {o.index}", disable=not o.progress, dynamic_ncols=True)
    committed = time.monotonic()
    batch = o.batch_size or (IMAGE_BATCH if rec.get("modality") == "image" else TEXT_BATCH)

    def chunks() -> Iterator[list[dict[str, Any]]]:  # (the read stage)
        for held in held_pages(vs, ds, o.index, old["_id"], max(batch, 256)):
            yield from (held[a:a + batch] for a in range(0, len(held), batch))

    def write(item: tuple[list[dict[str, Any]], list[int], np.ndarray]) -> None:
        nonlocal committed
        chunk, keep, vecs = item
        docs = [chunk[i] for i in keep]
        if docs:
            shown = [{k: v for k, v in d.items() if k != META_KEY} for d in docs]
            meta = [{k: d[k] for k in fields} for d in docs] if fields else None
            if writer is not None:
                # before the vectors, committed every LEXICAL_COMMIT_S as build-index does (a commit per batch
                # is a new segment and an fsync: half a writer's time there); the build serves nothing before
                # the switch, and close() commits the rest before it
                writer.upsert(shown)
                if time.monotonic() - committed >= LEXICAL_COMMIT_S:
                    writer.commit()
                    committed = time.monotonic()
            # (fresh: each id once, from one sorted cursor; writes made meanwhile are replayed after this, as upserts)
            vs.upsert(rec["_id"], [str(d["_id"]) for d in docs], vecs, meta, shown if stored else None, stored, fresh=True)
        rec["counts"]["read"] += len(chunk)
        rec["counts"]["indexed"] += len(docs)
        rec["updated"] = _now()
        ds.save_build(rec)
        bar.update(len(chunk))

    def encode_chunk(chunk: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int], np.ndarray]:
        return (chunk, *encode(chunk))

    try:
        pipelined(chunks(), encode_chunk, write)  # read, encode and write overlapped (one after another: 103 docs/s)
    except BaseException:
        if writer is not None:
            writer.abandon()
            writer = None
        raise
    finally:
        if writer is not None:
            writer.close()
        bar.close()


def held_pages(vs: VectorStore, ds: DocumentStore, index: str, collection: str, size: int) -> Iterator[list[dict[str, Any]]]:
    """The stored documents build ``collection`` of ``index`` holds, page by page: every document of the index's
    store whose id the build has (others are of an older build, or were deleted meanwhile)."""
    for page in ds.pages(index, size):
        live_ids = {str(r["id"]) for r in vs.rows(collection, [str(d["_id"]) for d in page])}
        yield [d for d in page if str(d["_id"]) in live_ids]


def write_held_documents(vs: VectorStore, ds: DocumentStore, index: str, out: Path) -> int:
    """The documents the live build of ``index`` holds, as build-index JSONL (its id and every stored field), written
    to a temporary name and renamed: a build from what the index holds now (writes through the documents API
    included), not from the file it was first built from. How many were written."""
    live = vs.live_build(index)
    if live is None:
        raise NotFound(f"index {index!r} not found (create it with mmsearch build-index)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for page in held_pages(vs, ds, index, collection_name(index, live), 1000):
            for d in page:
                row = {"id": str(d["_id"]), **{k: v for k, v in d.items() if k not in ("_id", "id", META_KEY)}}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    tmp.replace(out)
    return n


# ------------------------------------------------------------------------------------------------- rollback
def roll_back(vs: VectorStore, ds: DocumentStore, lex: LexicalStore, repo: Path, index: str, target: str,
              serving_url: str | None = None) -> tuple[str | None, int]:
    """Make ``target`` live again with every write made since it stopped serving (from the journal, encoded by its
    model where the writes' builds used another), the last of them under the write lease. (was live, replayed)."""
    journal = Journal(ds)
    rec = ds.get_one(BUILDS, collection_name(index, target))
    if rec is None:
        raise NotFound(f"index {index} has no build record for {target}")
    after = int(rec.get("superseded_seq", rec.get("journal_seq", 0)) or 0)
    encoders: list[DocEncoder] = []
    skipped: dict[str, int] = {}

    def encode(docs: list[dict[str, Any]]) -> tuple[list[int], np.ndarray]:
        if not encoders:
            model_dir = repo / str(rec["model"])
            if not model_dir.is_dir():
                raise NotFound(f"model {rec['model']!r} (build {target}'s) not found in {repo}: writes made since cannot be encoded")
            root = Path(rec["image_root"]) if rec.get("image_root") else None
            encoders.append(doc_encoder(open_encoder(model_dir, serving_url), str(rec.get("modality") or "text"), root, skipped,
                                        blobs=BlobStore(ds)))
        return encoders[0](docs)

    replayed = 0
    last = journal.last_seq(index)
    if last > after:
        after, replayed = replay(vs, lex, journal, ds, rec, after, last, encode)
    with IndexLease(ds, index, "rollback").held(FINAL_LEASE_WAIT_S, "rollback"):
        recover(vs, ds, lex, journal, index)
        live = vs.live_build(index)
        last = journal.last_seq(index)
        after, n = replay(vs, lex, journal, ds, rec, after, last, encode)
        replayed += n
        if live is not None and live != target:
            cur = ds.get_one(BUILDS, collection_name(index, live))
            if cur is not None:
                cur["superseded_seq"] = last
                ds.save_build(cur)
        rec["journal_seq"] = last
        rec.pop("superseded_seq", None)
        ds.save_build(rec)
        vs.switch_alias(index, target)
        switch_lexical(lex, index, collection_name(index, target))
    if skipped:
        log.warning("rollback of %s: documents not carried back: %s", index, skipped)
    return live, replayed


# ------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch reindex", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--index", required=True)
    p.add_argument("--model", required=True, help="the new model (name in the model repository)")
    p.add_argument("--judged", type=Path, help="judged queries (JSON Lines {query, relevant}): the new build must not be worse")
    p.add_argument("--metric", default="ndcg@10", help="the gate's metric (default ndcg@10)")
    p.add_argument("--tolerance", type=float, default=0.0, help="relative drop the gate still accepts (default 0: not worse)")
    p.add_argument("--keep", type=int, default=2, help="old complete builds kept for rollback besides the live one (default 2)")
    p.add_argument("--batch-size", type=int, default=None, help="documents encoded together (default: as build-index, 1024 texts, 32 images)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    p.add_argument("--serving-url", help="encode through Triton at host:port (gRPC) instead of in-process")
    p.add_argument("--image-root", type=Path, help="image indexes: folder of the documents' image paths (default: the build's)")
    p.add_argument("--repo", type=Path)
    p.add_argument("--milvus-uri")
    p.add_argument("--mongo-uri")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--config")
    return p


def run(argv: Sequence[str] | None = None) -> ReindexSummary:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, overrides=flag_overrides({"model_repository": args.repo, "milvus.uri": args.milvus_uri,
                                                             "mongo.uri": args.mongo_uri}))
    return reindex(ReindexOptions(
        index=args.index, model=args.model, repo=Path(cfg.model_repository), data_dir=Path(cfg.data_dir), milvus_uri=cfg.milvus.uri,
        mongo_uri=cfg.mongo.uri, database=cfg.mongo.database, lexical_root=lexical_root(cfg), serving_url=args.serving_url,
        threads=args.threads, batch_size=args.batch_size, judged=args.judged, metric=args.metric, tolerance=args.tolerance,
        keep=args.keep, image_root=args.image_root, progress=not args.no_progress))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: print(run(argv).line()))


if __name__ == "__main__":
    sys.exit(main())

