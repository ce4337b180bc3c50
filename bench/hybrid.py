"""Quality and latency of the demo's fused arms against their single-source arms, through the served API.

    .venv/bin/python bench/hybrid.py [--url http://127.0.0.1:8080] [--wordnet 500]

Needs a running demo (`make demo`). Writes the judged query sets under .mmsearch/bench-cache/judged/
(so `mmsearch eval --api URL --judged FILE` can rerun any of them), then for each set sends every
query to each arm in turn (interleaved, concurrency 1, forced arms: left out of A/B reports):
- text->image, 268 everyday descriptions of stamps (no caption word repeated): image-only vs fused
  (image + caption vectors + caption BM25), for the base and the fine-tuned dual encoder;
- text->image, held-out captions (split by caption text): image-only arms (the fine-tuned tower's
  held-out figure);
- text->text, lemmas and example sentences of held-out WordNet synsets over all 82,115 glosses:
  dense vs hybrid (dense + BM25 over title and gloss), overall and on queries with rare words.
Writes bench/results/hybrid.json and prints one line per comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsearch.client import SearchClient
from mmsearch.config import load_config
from mmsearch.offline.datasets.judged import stamp_captions, stamps_everyday, wordnet_heldout, write_judged
from mmsearch.offline.eval_served import evaluate_served

IMAGE_ARMS = [{"model": m, "recall": r} for m in ("finetuned", "base") for r in ("image", "fused")]


def main() -> None:
    cfg = load_config()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}")
    ap.add_argument("--wordnet", type=int, default=500, help="held-out synsets (a lemma and an example sentence each)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hybrid.json")
    args = ap.parse_args()
    cache = Path(cfg.data_dir) / "data"
    judged_dir = Path(cfg.data_dir) / "bench-cache" / "judged"
    sets = {"stamps_everyday": stamps_everyday(cache), "stamp_captions": stamp_captions(cache),
            "wordnet_heldout": wordnet_heldout(cache, args.wordnet)}
    for name, judged in sets.items():
        write_judged(judged_dir / f"{name}.jsonl", judged)
    client = SearchClient(args.url, timeout_s=30)
    runs = {
        "stamps_everyday": evaluate_served(client, "text2image", sets["stamps_everyday"], IMAGE_ARMS),
        "stamp_captions": evaluate_served(client, "text2image", sets["stamp_captions"],
                                          [{"model": "finetuned", "recall": "image"}, {"model": "base", "recall": "image"}]),
        "wordnet_heldout": evaluate_served(client, "text2text", sets["wordnet_heldout"], [{"recall": "dense"}, {"recall": "hybrid"}]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"url": args.url, "judged_dir": str(judged_dir), "runs": runs}, indent=2) + "\n")

    def line(r: dict) -> str:
        m = r["metrics"]
        arm = ",".join(f"{k}={v}" for k, v in r["force"].items())
        return f"{arm}: R@10 {m['recall@10']:.3f} MRR@10 {m['mrr@10']:.3f} nDCG@10 {m['ndcg@10']:.3f} p50 {r['latency_ms']['p50']:.1f} ms"

    for name, results in runs.items():
        print(f"hybrid {name} ({results[0]['queries']} queries): " + " | ".join(line(r) for r in results))
        for tag in results[0]["by_tag"]:
            if tag in ("rare", "example", "lemma"):
                print(f"  [{tag} {results[0]['by_tag'][tag]['queries']}] " + " | ".join(
                    f"{','.join(f'{k}={v}' for k, v in r['force'].items())}: R@10 {r['by_tag'][tag]['metrics']['recall@10']:.3f} "
                    f"MRR@10 {r['by_tag'][tag]['metrics']['mrr@10']:.3f}" for r in results))
    base = {r["force"].get("recall"): r["latency_ms"]["p50"] for r in runs["wordnet_heldout"]}
    print(f"hybrid latency text2text c=1: dense p50 {base['dense']:.1f} ms, hybrid p50 {base['hybrid']:.1f} ms "
          f"(+{base['hybrid'] - base['dense']:.1f} ms, ratio {base['hybrid'] / base['dense']:.2f}); results in {args.out}")


if __name__ == "__main__":
    main()
