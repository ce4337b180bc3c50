"""Where a served text query's time goes beyond the work it cannot avoid, measured query by query.

    .venv/bin/python bench/overhead.py [--queries 1000]

Against the running demo (`make demo`), text2text with the dense arm forced, concurrency 1. For each
WordNet query, in alternating order: the search through the HTTP API, and its irreducible work in this
process (the served model's ONNX file on ONNX Runtime, 1 thread, unpadded + the same top-100 search sent
straight to the stack's Milvus: the hits and search breadth the service asks for, ids only). Interleaving makes the ratio of the two stable on a noisy machine,
where measuring them minutes apart does not. Then the irreducible work alone in a tight loop (warm caches: the
floor no served request, which crosses processes, can reach), and, on the same queries, each hop alone: tokenizing,
Triton's embed of the bucketed tokens (gRPC) against ONNX Runtime on them, and MongoDB's read of the page.
Writes a JSON result and prints one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import encode_and_search_once, running_stack_config, served_search_shape, text_bodies
from mmsearch.client.search_client import SearchClient
from mmsearch.clients.documents import DocumentStore
from mmsearch.clients.inference import InferenceClient
from mmsearch.clients.vectors import VectorStore, index_spec
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.modelrepo.preprocess_registry import LocalTokenizer
from mmsearch.runtime.embedded import running_store

MODEL, INDEX, SCENE, FORCE = "minilm", "texts", "text2text", {"recall": "dense"}


def p50(xs: list[float]) -> float:
    return float(np.median(xs)) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    args = ap.parse_args(argv)
    cfg = running_stack_config()
    queries = [b["query"]["text"] for b in text_bodies(Path(cfg.data_dir), args.queries, sample=True)["text2text"]]

    api = SearchClient(f"http://127.0.0.1:{cfg.retrieval.http_port}", 30)
    enc = LocalModel(Path(cfg.model_repository) / MODEL, threads=1)
    vs = VectorStore(cfg.milvus.uri or running_store("milvus", Path(cfg.data_dir)), spec=index_spec(cfg.milvus))
    tok = LocalTokenizer(Path(cfg.model_repository), cfg.preprocess, 0)
    triton = InferenceClient(f"127.0.0.1:{cfg.serving.grpc_port}", "grpc")
    docs = DocumentStore(cfg.mongo.uri or running_store("mongo", Path(cfg.data_dir)), cfg.mongo.database)
    try:
        # the irreducible search is the one the service sends for this arm: as many hits, as broad a search
        k, breadth = served_search_shape(api, SCENE, FORCE, "overhead-bench")

        def served(q: str) -> dict:
            return api.search(SCENE, q, force=FORCE, user_id="overhead-bench")

        def irreducible(q: str) -> tuple[float, float]:
            return encode_and_search_once(enc, vs, INDEX, q, k, breadth)

        for q in queries[:30]:  # warm-up: connections, caches
            served(q)
            irreducible(q)
        e2e, stages, edge, enc_s, search_s, pages = [], [], [], [], [], []
        for i, q in enumerate(queries):
            for part in ("served", "irreducible") if i % 2 else ("irreducible", "served"):
                if part == "served":
                    t0 = time.perf_counter()
                    out = served(q)
                    dt = time.perf_counter() - t0
                    e2e.append(dt)
                    stages.append(out["timings_ms"])
                    edge.append(dt - out["timings_ms"]["total"] / 1000)
                    pages.append([h["id"] for h in out["results"]])
                else:
                    a, b = irreducible(q)
                    enc_s.append(a)
                    search_s.append(b)
        # the irreducible work alone, in a tight loop over the same queries: warm caches, its floor
        alone = [sum(irreducible(q)) for q in queries]
        # each hop alone, on the same queries
        tokens = [tok.tokenize(MODEL, [q], bucket=True).tensors for q in queries]
        hop: dict[str, list[float]] = {"tokenize": [], "triton_embed": [], "ort_on_bucketed": [], "mongo_page": []}
        for q, t, page in zip(queries, tokens, pages):
            t0 = time.perf_counter()
            tok.tokenize(MODEL, [q], bucket=True)
            t1 = time.perf_counter()
            triton.infer(MODEL, t, "embedding")
            t2 = time.perf_counter()
            enc.run(t)
            t3 = time.perf_counter()
            docs.get_many(INDEX, page)
            t4 = time.perf_counter()
            for k, d in zip(hop, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                hop[k].append(d)
    finally:
        tok.close()
        triton.close()
        vs.close()
        docs.client.close()
        api.close()

    names = [k for k in ("qp", "embed", "recall", "summary", "total") if any(k in s for s in stages)]
    irr = float(np.median(np.asarray(enc_s) + np.asarray(search_s))) * 1000
    res = {
        "queries": len(queries), "arm": "recall=dense", "concurrency": 1, "search": {"top_k": k, "breadth": breadth},
        "served_p50_ms": p50(e2e), "served_p99_ms": float(np.percentile(e2e, 99)) * 1000,
        "stage_p50_ms": {k: float(np.median([s.get(k, 0.0) for s in stages])) for k in names},
        "edge_p50_ms": p50(edge),
        "irreducible_p50_ms": {"total": irr, "encode": p50(enc_s), "search": p50(search_s)},
        "hop_p50_ms": {k: p50(v) for k, v in hop.items()},
    }
    res["ratio_served_to_irreducible"] = res["served_p50_ms"] / irr
    res["irreducible_alone_p50_ms"] = p50(alone)
    res["ratio_served_to_irreducible_alone"] = res["served_p50_ms"] / res["irreducible_alone_p50_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    st = " ".join(f"{k} {v:.2f}" for k, v in res["stage_p50_ms"].items())
    hops = " ".join(f"{k} {v:.2f}" for k, v in res["hop_p50_ms"].items())
    print(f"overhead: text2text dense c=1, {len(queries)} queries interleaved: served p50 {res['served_p50_ms']:.2f} / p99 "
          f"{res['served_p99_ms']:.1f} ms [{st}; HTTP edge {res['edge_p50_ms']:.2f}] | irreducible p50 {irr:.2f} ms (encode "
          f"{res['irreducible_p50_ms']['encode']:.2f} + search {res['irreducible_p50_ms']['search']:.2f}) -> ratio "
          f"{res['ratio_served_to_irreducible']:.2f} (to the irreducible alone, in a tight loop: {res['irreducible_alone_p50_ms']:.2f} ms, "
          f"ratio {res['ratio_served_to_irreducible_alone']:.2f}) | each hop alone p50: {hops} ms -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
