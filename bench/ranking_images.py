"""Text->image ranking per query class (issue 34), through the search API: every arm of the demo's two text2image
layers (model: base / finetuned dual encoder; recall: image vectors alone / fused with the captions' vectors and
words), on the held-out split of the judged stamps set (captions, everyday descriptions, categories).

    .venv/bin/python bench/ranking_images.py [--url URL]

Needs a stack serving the demo (`make demo`). The queries of mmsearch/offline/datasets/judged_sets/text2image_heldout.jsonl
go to each combination of arms in turn, interleaved, at concurrency 1 (forced: left out of A/B reports). Writes
bench/results/ranking_images.json and prints Recall@10 / MRR@10 per class and arm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results_io import write_result
from mmsearch.client.search_client import SearchClient
from mmsearch.config import load_config
from mmsearch.offline.datasets.judged import SETS_DIR
from mmsearch.offline.eval_served import evaluate_served, load_judged
from mmsearch.runtime.endpoints import running_config

MODELS = ("base", "finetuned")
RECALLS = ("image", "fused")
METRICS = ("recall@10", "mrr@10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="the search API (default: the running stack's)")
    args = ap.parse_args()
    cfg = running_config(load_config())
    url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    held = load_judged(SETS_DIR / "text2image_heldout.jsonl")
    forces = [{"model": m, "recall": r} for m in MODELS for r in RECALLS]
    results = evaluate_served(SearchClient(url, timeout_s=30), "text2image", held, forces)
    table = {f"{r['force']['model']}/{r['force']['recall']}": {"all": r["metrics"], **{t: v["metrics"] for t, v in r["by_tag"].items()},
                                                               "p50_ms": r["latency_ms"]["p50"]} for r in results}
    classes = sorted(c for c in table[f"{MODELS[0]}/image"] if c not in ("all", "p50_ms"))
    for arm, t in table.items():
        print(f"{arm:>18} p50 {t['p50_ms']:.1f} ms | " + " | ".join(
            f"{c} {t[c]['recall@10']:.3f}/{t[c]['mrr@10']:.3f}" for c in [*classes, "all"]))
    # the fused arm against its picture vectors alone, per model and class (its caption sources are not arms of their own)
    fused_wins = {m: all(table[f"{m}/fused"][c][k] >= table[f"{m}/image"][c][k] for c in classes for k in METRICS) for m in MODELS}
    summary = "ranking_images: text2image held-out ({} queries; {}) Recall@10 ".format(
        len(held), ", ".join(f"{c} {sum(j.tags[0] == c for j in held)}" for c in classes)) + "; ".join(
        f"{arm} " + " ".join(f"{c} {t[c]['recall@10']:.3f}" for c in classes) for arm, t in table.items()) + \
        "; fused >= image on every class: " + ", ".join(f"{m} {fused_wins[m]}" for m in MODELS)
    write_result("ranking_images", "Text->image ranking per query class (served arms, held-out stamps)", summary,
                 {"description": "1,032 Tux Paint stamps; judged set mmsearch/offline/datasets/judged_sets/text2image_heldout.jsonl "
                                 "(caption: a stamp's held-out caption; everyday: a description in other words)",
                  "synthetic": False, "url": url},
                 {"heldout": table, "fused_never_loses_to_image": fused_wins})


if __name__ == "__main__":
    main()
