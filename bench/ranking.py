"""Ranking per query class (issue 34): fusion tuned on the development sets, judged on the held-out ones.

    MMSEARCH_DATA_DIR=... .venv/bin/python bench/ranking.py [--url URL] [--titled-index texts_titled]

Needs a stack serving the demo's texts index (82,115 WordNet glosses, title + gloss, BM25 over both;
`make demo`, or any stack over the same build) and its experiments file with a text2text layer
``recall``. Two steps:

1. Tune, offline, on the development split only (mmsearch/offline/datasets/judged_sets/text2text_dev.jsonl):
   every query's dense list (the served int8 MiniLM, through ONNX Runtime in this process), BM25 list
   (the live lexical build) and, with --titled-index, the dense list of an index built with
   --embed-title, 100 each; then every fusion setting of a grid is replayed over them with the
   serving code (fusion.fuse, names_title over the documents' titles). A setting's score is its worst
   margin, over classes and over Recall@10 and MRR@10, against the better of dense and BM25 on that
   class ("never loses"; with --titled-index, the better of the three single sources), ties broken by
   mean nDCG@10. Best static weights, best query-dependent
   weights (weight_title) and best with weight_rare too (a query with a term in at most fusion.RARE_DF
   documents of the lexical build) are kept, per dense index.
2. Judge, through the search API, on the held-out split (text2text_heldout.jsonl): dense, BM25 alone,
   the old hybrid (dense + BM25, RRF, equal weights) and the tuned arms, added as traffic-0 arms to
   the watched experiments file for the run (forced requests: left out of A/B reports), interleaved
   query by query at concurrency 1, so latencies compare.

Writes bench/results/ranking.json (results_io) and prints per class Recall@10 / MRR@10 per arm.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.hybrid import temporary_arms
from bench.results_io import write_result
from mmsearch.client.search_client import SearchClient
from mmsearch.clients.lexical import LexicalStore
from mmsearch.config import lexical_root, load_config
from mmsearch.offline.datasets.judged import SETS_DIR
from mmsearch.offline.eval_served import Judged, evaluate_served, load_judged
from mmsearch.ranking.fusion import TITLE_CHECK_TOP, fuse, names_title, rare_query, source_weights, title_terms
from mmsearch.ranking_metrics import ranked_metrics
from mmsearch.runtime.endpoints import running_config

DEPTH = 100
BM25_WEIGHTS = (0.01, 0.05, 0.1, 0.3, 0.5, 1.0)
# for a query naming a title: None = the same weights; (dense, bm25) weight_title pairs; (0, 1) = BM25's order, then dense's
TITLE_WEIGHTS: tuple[tuple[float, float] | None, ...] = (None, (1.0, 0.3), (1.0, 0.5), (1.0, 1.0), (1.0, 3.0), (1.0, 10.0),
                                                        (0.0, 1.0))
# for a short query with a rare term (fusion.RARE_DF; it takes precedence over a title)
RARE_WEIGHTS: tuple[tuple[float, float] | None, ...] = (None, (1.0, 1.0), (1.0, 2.0), (1.0, 3.0), (0.3, 1.0))
METRICS = ("recall@10", "mrr@10")


def collect(cfg, judged: list[Judged], dense_indexes: list[str], model: str) -> dict[str, list[list[tuple[str, float]]]]:
    """Per source: each query's top DEPTH (id, score), as the served sources recall them."""
    from mmsearch.encoders.encoder import open_encoder
    from mmsearch.offline.indexing.stores import open_stores

    enc = open_encoder(Path(cfg.model_repository) / model)
    vecs = enc.encode_texts([j.query for j in judged])
    lex = LexicalStore(lexical_root(cfg))
    out: dict[str, list[list[tuple[str, float]]]] = {"bm25": [lex.search("texts", j.query, DEPTH) for j in judged]}
    with open_stores(cfg.milvus.uri, cfg.mongo.uri, Path(cfg.data_dir), cfg.mongo.database) as (vs, _):
        for index in dense_indexes:
            out[index] = [vs.search(index, vecs[i:i + 1], DEPTH)[0] for i in range(len(judged))]
    return out


def per_class(runs: list[list[str]], judged: list[Judged]) -> dict[str, dict[str, float]]:
    classes = sorted({j.tags[0] for j in judged})
    out = {c: ranked_metrics([r for r, j in zip(runs, judged) if j.tags[0] == c],
                             [j.relevant for j in judged if j.tags[0] == c], (1, 10)) for c in classes}
    out["all"] = ranked_metrics(runs, [j.relevant for j in judged], (1, 10))
    return out


def replay(lists: dict[str, list[list[tuple[str, float]]]], dense: str, judged: list[Judged], titled: list[bool],
           method: str, w_bm25: float, w_title: tuple[float, float] | None, rare: list[bool] | None = None,
           w_rare: tuple[float, float] | None = None) -> list[list[str]]:
    """Each query fused as the serving code weighs it (fusion.source_weights)."""
    (td, tb), (rd, rb) = w_title or (None, None), w_rare or (None, None)
    sources = [("gloss", 1.0, td, rd), ("words", w_bm25, tb, rb)]
    runs = []
    for q in range(len(judged)):
        fused = fuse({"gloss": lists[dense][q], "words": lists["bm25"][q]}, method,  # type: ignore[arg-type]
                     source_weights(sources, titled[q], bool(rare and rare[q])))
        runs.append([f.id for f in fused[:10]])
    return runs


def margin(m: dict[str, dict[str, float]], base: dict[str, dict[str, dict[str, float]]]) -> float:
    """The worst (fused - best single source) over classes and METRICS."""
    return min(m[c][k] - max(b[c][k] for b in base.values()) for c in m if c != "all" for k in METRICS)


def tune(cfg, dense_indexes: list[str], titles: dict[str, str]) -> dict[str, Any]:
    dev = load_judged(SETS_DIR / "text2text_dev.jsonl")
    lists = collect(cfg, dev, dense_indexes, "minilm")
    base = {"dense": per_class([[i for i, _ in h[:10]] for h in lists["texts"]], dev),
            "bm25": per_class([[i for i, _ in h[:10]] for h in lists["bm25"]], dev)}
    for dense in dense_indexes[1:]:
        base[f"dense_{dense}"] = per_class([[i for i, _ in h[:10]] for h in lists[dense]], dev)
    out: dict[str, Any] = {"queries": len(dev), "single": base, "settings": []}  # margins: against every single source
    lex = LexicalStore(lexical_root(cfg))
    rare = [rare_query(j.query, lambda t: lex.rarest_df("texts", t)) for j in dev]  # as the pipeline decides
    for dense in dense_indexes:
        titled = []
        for q, j in enumerate(dev):
            terms = title_terms(j.query)
            ids = list(dict.fromkeys(i for src in (dense, "bm25") for i, _ in lists[src][q][:TITLE_CHECK_TOP]))
            titled.append(terms is not None and names_title(terms, (titles.get(i) for i in ids)))
        for method, wb, wt, wr in itertools.product(("rrf", "weighted"), BM25_WEIGHTS, TITLE_WEIGHTS, RARE_WEIGHTS):
            m = per_class(replay(lists, dense, dev, titled, method, wb, wt, rare, wr), dev)
            out["settings"].append({"dense": dense, "fusion": method, "w_bm25": wb, "w_title": wt, "w_rare": wr,
                                    "margin": margin(m, base), "ndcg@10": m["all"]["ndcg@10"], "by_class": m})
        out.setdefault("rare_share", {})[dense] = {c: sum(r for r, j in zip(rare, dev) if j.tags[0] == c) /
                                                   sum(j.tags[0] == c for j in dev) for c in sorted({j.tags[0] for j in dev})}
        out.setdefault("titled_share", {})[dense] = {c: sum(t for t, j in zip(titled, dev) if j.tags[0] == c) /
                                                     sum(j.tags[0] == c for j in dev) for c in sorted({j.tags[0] for j in dev})}
    out["settings"].sort(key=lambda s: (-s["margin"], -s["ndcg@10"]))
    return out


def best(settings: list[dict], dense: str, by_title: bool, by_rare: bool = False) -> dict | None:
    return next((s for s in settings if s["dense"] == dense and (s["w_title"] is not None) == by_title
                 and (s.get("w_rare") is not None) == by_rare), None)


def arm_of(name: str, s: dict) -> dict:
    words: dict[str, Any] = {"name": "words", "kind": "bm25", "recall_top_k": DEPTH, "weight": s["w_bm25"]}
    arm: dict[str, Any] = {"name": name, "traffic": 0, "fusion": s["fusion"]}
    gloss: dict[str, Any] = {"name": "gloss", "kind": "dense", "recall_top_k": DEPTH}
    if s["w_title"] is not None:
        gloss["weight_title"], words["weight_title"] = s["w_title"]
        arm["title_field"] = "title"
    if s.get("w_rare") is not None:
        gloss["weight_rare"], words["weight_rare"] = s["w_rare"]
    if s["dense"] != "texts":  # the titled build's vectors and documents; BM25 from the texts index (same ids)
        arm["index"], words["index"] = s["dense"], "texts"
    arm["sources"] = [gloss, words]
    return arm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="the search API (default: the running stack's)")
    ap.add_argument("--titled-index", help="an index of the same documents built with --embed-title title")
    ap.add_argument("--texts", type=Path, help="the texts' JSONL (titles; default <data_dir>/demo/texts.jsonl)")
    args = ap.parse_args()
    cfg = running_config(load_config())
    url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    texts = args.texts or Path(cfg.data_dir) / "demo" / "texts.jsonl"
    titles = {r["id"]: r.get("title", "") for r in map(json.loads, texts.read_text().splitlines())}
    dense_indexes = ["texts"] + ([args.titled_index] if args.titled_index else [])
    tuned = tune(cfg, dense_indexes, titles)
    for s in tuned["settings"][:8]:
        print(f"dev {s['dense']} {s['fusion']} bm25 {s['w_bm25']} title {s['w_title']} rare {s['w_rare']}: margin {s['margin']:+.3f} "
              f"nDCG@10 {s['ndcg@10']:.3f}")
    arms = [{"name": "bm25", "traffic": 0, "sources": [{"name": "words", "kind": "bm25", "recall_top_k": DEPTH}]},
            {"name": "hybrid_rrf", "traffic": 0, "fusion": "rrf", "sources": [
                {"name": "gloss", "kind": "dense", "recall_top_k": DEPTH}, {"name": "words", "kind": "bm25", "recall_top_k": DEPTH}]}]
    chosen = {}
    for dense in dense_indexes:
        suffix = "" if dense == "texts" else "_titled"
        if dense != "texts":
            arms.append({"name": "dense_titled", "traffic": 0, "index": dense})
        # (named apart from the demo's own arms, title_aware among them, which are judged too)
        for by_title, by_rare, name in ((False, False, f"tuned{suffix}"), (True, False, f"tuned_title{suffix}"),
                                        (True, True, f"tuned_rare{suffix}")):
            s = best(tuned["settings"], dense, by_title, by_rare)
            if s is not None:
                arms.append(arm_of(name, s))
                chosen[name] = {k: s[k] for k in ("dense", "fusion", "w_bm25", "w_title", "w_rare", "margin", "ndcg@10")}
    client = SearchClient(url, timeout_s=30)
    held = load_judged(SETS_DIR / "text2text_heldout.jsonl")
    with temporary_arms(cfg, client, "text2text", "recall", arms):
        served = [a["name"] for a in yaml.safe_load(Path(cfg.experiments_file).read_text())["scenes"]["text2text"]["layers"][0]["arms"]
                  if a["name"] != "dense"]
        results = evaluate_served(client, "text2text", held, [{"recall": n} for n in ["dense", *served, *(a["name"] for a in arms)]])
    table = {r["force"]["recall"]: {"all": r["metrics"], **{t: v["metrics"] for t, v in r["by_tag"].items()},
                                    "p50_ms": r["latency_ms"]["p50"]} for r in results}
    classes = sorted(r for r in table["dense"] if r not in ("all", "p50_ms"))
    for arm, t in table.items():
        print(f"{arm:>20} p50 {t['p50_ms']:.1f} ms | " + " | ".join(
            f"{c} {t[c]['recall@10']:.3f}/{t[c]['mrr@10']:.3f}" for c in classes + ["all"]))
    singles = [a for a in ("dense", "bm25", "dense_titled") if a in table]
    wins = {arm: all(t[c][k] >= max(table[b][c][k] for b in singles) for c in classes for k in METRICS)
            for arm, t in table.items()}
    fused = [*served, *chosen]  # the experiments file's own arms (the demo's default among them) and the tuned ones
    best_arm = max((a for a in fused if wins[a]), key=lambda a: table[a]["all"]["ndcg@10"], default=None) or \
        max(fused, key=lambda a: table[a]["all"]["ndcg@10"])
    summary = (f"ranking: text2text held-out ({len(held)} queries, {len(classes)} classes), nDCG@10 dense "
               f"{table['dense']['all']['ndcg@10']:.3f}, bm25 {table['bm25']['all']['ndcg@10']:.3f}, hybrid_rrf "
               f"{table['hybrid_rrf']['all']['ndcg@10']:.3f}, {best_arm} {table[best_arm]['all']['ndcg@10']:.3f} "
               f"(never loses: {wins[best_arm]}); p50 dense {table['dense']['p50_ms']:.1f} ms, {best_arm} "
               f"{table[best_arm]['p50_ms']:.1f} ms")
    write_result("ranking", "Ranking per query class (fusion tuned on dev, judged on held-out)", summary,
                 {"description": "WordNet 3.0 noun glosses (82,115, title + gloss, the demo's texts index, BM25 over both), "
                                 "judged sets mmsearch/offline/datasets/judged_sets/text2text_{dev,heldout}.jsonl "
                                 "(lemma, rare, example, definition (GCIDE), caption, everyday); served int8 MiniLM",
                  "synthetic": False, "url": url, "titled_index": args.titled_index},
                 {"heldout": table, "never_loses": wins, "best_arm": best_arm, "chosen": chosen,
                  "dev_single": tuned["single"], "dev_titled_share": tuned["titled_share"], "dev_rare_share": tuned["rare_share"],
                  "dev_top": [{k: v for k, v in s.items() if k != "by_class"} for s in tuned["settings"][:20]],
                  "arms": arms})


if __name__ == "__main__":
    main()
