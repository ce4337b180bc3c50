"""`mmsearch snapshot create|restore`: an index's live build copied to a folder, consistent while writes go on, and
restored into a stack (a fresh one, or another).

    mmsearch snapshot create --index texts --out backups/texts-1
    mmsearch snapshot restore backups/texts-1 --milvus-uri http://other:19530 --mongo-uri mongodb://other:27017

The folder (format 1): ``snapshot.json`` (written last: a folder without it is no snapshot) with the build record
(model name, version, manifest sha256, fields, lexical fields, index spec), the journal span and counts;
``vectors.npy`` (float32, one row per document) and ``rows.parquet`` (id, stored fields, stored document JSON, in the
same order) read back from Milvus with a query iterator; ``documents.bson`` (MongoDB's documents, content hashes
included, mongodump's layout); ``lexical/`` (the tantivy build, copied after its last commit while writes are paused);
``journal.bson`` (the journal entries written while the snapshot was read); ``blobs.bson`` (the images sent inline that
the documents and entries name, clients/blobs.py).

Consistency: the terms are copied, and journal position S0 taken, under the index's write lease (a pause of the
copy's length); vectors and documents are then read while writes go on, and position S1 is taken under the lease
again. Restore loads everything and replays the entries S0 < seq <= S1 (with their vectors) onto it: the result is
the index as it was at S1, each document whole.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.api.documents import BLOB_FIELD
from mmsearch.api.filters import DOC_FIELD
from mmsearch.cli import run_cli
from mmsearch.clients.blobs import BlobStore
from mmsearch.clients.documents import BUILDS, DocumentStore
from mmsearch.clients.journal import LEASE_TTL_S, IndexLease, Journal, apply_entry, recover
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import IndexSpec, VectorStore, check_index_name, collection_name
from mmsearch.config import flag_overrides, lexical_root, load_config
from mmsearch.errors import BadInput, Internal, NotFound
from mmsearch.modelrepo.manifest import model_ref
from mmsearch.offline.indexing.build import switch_lexical
from mmsearch.offline.indexing.stores import open_stores

log = logging.getLogger("mmsearch.index")
FORMAT = 1
META = "snapshot.json"


def _write_bson(path: Path, rows: Any) -> int:
    import bson

    n = 0
    with open(path, "wb") as f:
        for r in rows:
            f.write(bson.encode(r))
            n += 1
    return n


def _read_bson(path: Path) -> list[dict[str, Any]]:
    import bson

    return bson.decode_all(path.read_bytes()) if path.is_file() else []


def create(vs: VectorStore, ds: DocumentStore, lex: LexicalStore, index: str, out: Path,
           between: Callable[[], None] | None = None) -> dict[str, Any]:
    """Snapshot the live build of ``index`` into ``out`` (which must not hold one). ``between``: (tests) called while
    the snapshot reads the stores, writes going on. Its snapshot.json."""
    import bson
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_index_name(index)
    if (out / META).exists():
        raise BadInput(f"{out} already holds a snapshot")
    out.mkdir(parents=True, exist_ok=True)
    journal = Journal(ds)
    live = vs.live_build(index)
    if live is None:
        raise NotFound(f"index {index!r} not found")
    coll = collection_name(index, live)
    rec = ds.get_one(BUILDS, coll)
    if rec is None:
        raise Internal(f"index {index}: the live build {live} has no build record in MongoDB {BUILDS}")
    with IndexLease(ds, index, "snapshot").held(LEASE_TTL_S + 30, "snapshot"):  # writes paused: the terms as of S0
        t0 = time.perf_counter()
        recover(vs, ds, lex, journal, index)
        if vs.live_build(index) != live:
            raise BadInput(f"index {index}'s live build changed while the snapshot started: run it again")
        s0 = journal.last_seq(index)
        if rec.get("lexical") and lex.has_build(coll):
            shutil.rmtree(out / "lexical", ignore_errors=True)
            shutil.copytree(lex.root / coll, out / "lexical", ignore=shutil.ignore_patterns("*.lock"))
    paused_ms = (time.perf_counter() - t0) * 1000
    fields = list((rec.get("fields") or {}).keys())
    stored = int(rec.get("stored_docs") or 0)
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    cols: dict[str, list[Any]] = {f: [] for f in fields}
    docs_col: list[str] = []
    n_docs = 0
    refs: set[str] = set()  # the inline images the documents and journal entries hold (clients/blobs.py)
    with open(out / "documents.bson", "wb") as docs_out:
        for page in ds.pages(index):  # the stored documents, and the rows of those the live build holds
            rows = {str(r["id"]): r for r in vs.rows(coll, [str(d["_id"]) for d in page],
                                                     ["id", "embedding", *fields, *([DOC_FIELD] if stored else [])])}
            for d in page:
                r = rows.get(str(d["_id"]))
                if r is None:
                    continue  # (a document of an older build, or one deleted meanwhile: the journal says)
                ids.append(str(r["id"]))
                vectors.append(np.asarray(r["embedding"], np.float32))
                for f in fields:
                    cols[f].append(r.get(f))
                if stored:
                    docs_col.append(str(r.get(DOC_FIELD) or ""))
                docs_out.write(bson.encode(d))
                n_docs += 1
                if isinstance(d.get(BLOB_FIELD), str):
                    refs.add(d[BLOB_FIELD])
    if between is not None:
        between()
    dim = int(rec.get("dim") or vs.dim(coll))
    matrix = np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
    np.save(out / "vectors.npy", matrix)
    table = {"id": ids, **cols, **({DOC_FIELD: docs_col} if stored else {})}
    pq.write_table(pa.table(table), out / "rows.parquet")
    with IndexLease(ds, index, "snapshot").held(LEASE_TTL_S + 30, "snapshot"):
        if vs.live_build(index) != live:
            raise BadInput(f"index {index}'s live build changed during the snapshot: run it again")
        s1 = journal.last_seq(index)
    raw = journal.raw(index, s0, s1)
    entries = _write_bson(out / "journal.bson", raw)
    refs.update(ref for r in raw for ref in r.get("blobs") or [])
    blobs = BlobStore(ds)
    ordered = sorted(refs)
    n_blobs = _write_bson(out / "blobs.bson", (row for a in range(0, len(ordered), 100) for row in blobs.rows(ordered[a:a + 100])))
    meta = {"format": FORMAT, "index": index, "build": live, "record": dict(rec),
            "journal": {"from": s0, "to": s1, "rows": entries}, "counts": {"vectors": len(ids), "documents": n_docs, "images": n_blobs},
            "dim": dim, "lexical": (out / "lexical").is_dir(), "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "paused_ms": round(paused_ms, 1)}
    (out / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta


def restore(vs: VectorStore, ds: DocumentStore, lex: LexicalStore, src: Path, repo: Path | None = None) -> list[str]:
    """Load a snapshot folder into these stores (the index must not exist there) and make it live. Report lines."""
    import pyarrow.parquet as pq

    if not (src / META).is_file():
        raise NotFound(f"{src} holds no snapshot ({META} missing: not one, or one not finished)")
    meta = json.loads((src / META).read_text())
    if meta.get("format") != FORMAT:
        raise BadInput(f"{src}: snapshot format {meta.get('format')} (this version reads {FORMAT})")
    index, build, rec = meta["index"], meta["build"], dict(meta["record"])
    coll = collection_name(index, build)
    if vs.live_build(index) is not None or vs.builds(index):
        raise BadInput(f"index {index} already exists in {vs.dependency}: drop it first (mmsearch index drop {index} --all)")
    fields = dict(rec.get("fields") or {})
    stored = int(rec.get("stored_docs") or 0)
    spec = IndexSpec(**rec["index_spec"]) if rec.get("index_spec") else IndexSpec()
    vs.create(coll, int(meta["dim"]), spec, fields, stored_docs=stored)
    matrix = np.load(src / "vectors.npy")
    table = pq.read_table(src / "rows.parquet").to_pydict()
    ids = table["id"]
    for a in range(0, len(ids), 1000):
        b = min(a + 1000, len(ids))
        meta_rows = [{f: table[f][i] for f in fields} for i in range(a, b)] if fields else None
        docs = [json.loads(table[DOC_FIELD][i]) if table[DOC_FIELD][i] else {} for i in range(a, b)] if stored else None
        vs.upsert(coll, ids[a:b], matrix[a:b], meta_rows, docs, stored)
    BlobStore(ds).load_rows(_read_bson(src / "blobs.bson"))  # (before the documents that name them)
    documents = _read_bson(src / "documents.bson")
    for a in range(0, len(documents), 1000):
        ds.upsert_many(index, documents[a:a + 1000], durable=True)
    if meta.get("lexical"):
        shutil.rmtree(lex.root / coll, ignore_errors=True)
        lex.root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src / "lexical", lex.root / coll)
    j = meta["journal"]
    rec.update(status="complete", restored={"from": str(src), "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
               journal_seq=j["to"])
    rec.pop("superseded_seq", None)
    ds.save_build(rec)
    journal = Journal(ds)
    rows = _read_bson(src / "journal.bson")
    if j["to"] and not any(r.get("kind") == "header" and r.get("seq") == j["to"] for r in rows):
        # the journal's numbering goes on from S1 here (builds record positions in it): a marker entry holds the place
        rows.append({"_id": f"{index}/{j['to']:012d}", "index": index, "seq": j["to"], "kind": "header", "op": "mark", "build": build,
                     "parts": 0, "count": 0, "op_id": None, "state": "applied", "at": dt.datetime.now(dt.UTC)})
    journal.load_raw(rows)
    replayed = 0
    for e in journal.entries(index, j["from"], j["to"]):
        apply_entry(vs, ds, lex, rec, e)  # (the build's own vectors: the entries were written to it)
        journal.mark(index, e.seq)
        replayed += 1
    count = vs.count(coll)
    vs.seal(coll, count)
    vs.switch_alias(index, build)
    switch_lexical(lex, index, coll)
    out = [f"restored index {index} build {build}: {count} documents ({len(ids)} read, {replayed} journaled write(s) replayed), "
           f"model {rec.get('model')} {(rec.get('model_ref') or {}).get('version', '')}".rstrip()]
    want = (rec.get("model_ref") or {}).get("manifest_sha256")
    if repo is not None:
        have = model_ref(repo / rec["model"])["manifest_sha256"] if (repo / str(rec.get("model"))).is_dir() else None
        if have is None:
            out.append(f"warning: model {rec.get('model')} is not in {repo}: searches and writes of {index} need it")
        elif want and have != want:
            out.append(f"warning: model {rec.get('model')} in {repo} is another version than the one that made these vectors")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch snapshot", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--milvus-uri")
    p.add_argument("--mongo-uri")
    p.add_argument("--config")
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("create", help="copy an index's live build to a folder")
    c.add_argument("--index", required=True)
    c.add_argument("--out", required=True, type=Path)
    r = sub.add_parser("restore", help="load a snapshot folder into the configured (or given) stores")
    r.add_argument("dir", type=Path)
    r.add_argument("--milvus-uri", dest="r_milvus_uri", metavar="URI", help="the target Milvus (default: config milvus.uri)")
    r.add_argument("--mongo-uri", dest="r_mongo_uri", metavar="URI", help="the target MongoDB (default: config mongo.uri)")
    return p


def run(argv: Sequence[str] | None = None) -> list[str]:
    args = build_parser().parse_args(argv)
    milvus = getattr(args, "r_milvus_uri", None) or args.milvus_uri
    mongo = getattr(args, "r_mongo_uri", None) or args.mongo_uri
    cfg = load_config(args.config, overrides=flag_overrides({"milvus.uri": milvus, "mongo.uri": mongo}))
    lex = LexicalStore(lexical_root(cfg))
    with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (vs, ds):
        if args.action == "create":
            m = create(vs, ds, lex, args.index, args.out)
            return [f"snapshot of index {m['index']} build {m['build']} in {args.out}: {m['counts']['vectors']} vectors, "
                    f"{m['counts']['documents']} documents, journal {m['journal']['from']}..{m['journal']['to']}, "
                    f"writes paused {m['paused_ms']:.0f} ms"]
        return restore(vs, ds, lex, args.dir, Path(cfg.model_repository))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: print("\n".join(run(argv))))


if __name__ == "__main__":
    sys.exit(main())
