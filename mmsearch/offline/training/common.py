"""What every trainer shares: the run's config and result, seeding, batching, the validation split,
scoring, the progress bar, and the epoch loop with early stopping that writes the fine-tuning record."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mmsearch.errors import BadInput
from mmsearch.offline.data import EvalSet, Modality, Pair
from mmsearch.ranking_metrics import retrieval_metrics

log = logging.getLogger("mmsearch.finetune")
RECORD = "mmsearch_finetune.json"  # written beside the best model; read by `mmsearch export --gate`
TRAINERS = ("text", "dual", "clip", "cross")


@dataclass
class FinetuneConfig:
    trainer: str  # one of TRAINERS
    base: str
    out: Path
    epochs: int = 1
    lr: float = 2e-5
    batch_size: int = 32
    dim: int | None = None
    hard_negatives: bool = False
    max_length: int = 64
    seed: int = 0
    patience: int = 2
    metric: str = "mrr@10"
    unfreeze_text: bool = False
    text_lr: float | None = None  # dual with --unfreeze-text: the text tower's rate (default lr / 100)
    label_prior: bool = True  # dual, new heads: the image side also embeds its ImageNet classes' names (models/imagenet_labels.py)
    caption_memory: bool = True  # dual, new heads: the image side also reads the texts of the training images it resembles
    progress: bool = True
    threads: int = 0
    mine_negatives: bool = False  # text: a hard negative per pair mined with the base model (training/mining.py)
    mini_batch: int = 0  # text: > 0 = cached-gradient MNRL (CachedMNRL) in chunks of this size; batch_size can then be large
    device: str = "cpu"  # torch device of every trainer ("cuda", "cuda:1", ...)
    scale: float = 20.0  # text: MNRL's inverse temperature
    symmetric: bool = False  # text: also rank each document's query among the batch's queries (doc_to_query)
    hardness: float = 0.0  # text: > 0 = weight harder in-batch negatives up by this (Lan et al. 2025); 0 = off


@dataclass
class FinetuneResult:
    out: Path
    metric: str
    base_metric: float
    best_metric: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    train_pairs: int = 0
    base_kind: str = "model"  # what base_metric measured: "model" (the base as it is) or "untrained heads"

    @property
    def gain(self) -> float:
        return (self.best_metric - self.base_metric) / self.base_metric if self.base_metric else float("inf")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def unique_batches(pairs: Sequence[Pair], batch_size: int, rng: random.Random, with_negatives: bool = False) -> list[list[Pair]]:
    """Shuffled batches in which no text appears twice (in-batch negatives must be negatives): queries
    and positives, and with ``with_negatives`` the hard negatives too (another pair's positive must
    not come back as a negative)."""
    pending = list(pairs)
    rng.shuffle(pending)
    batches: list[list[Pair]] = []
    while pending:
        batch: list[Pair] = []
        seen: set[str] = set()
        rest: list[Pair] = []
        for p in pending:
            texts = (p.query, p.positive, p.negative) if with_negatives and p.negative else (p.query, p.positive)
            if len(batch) < batch_size and not seen.intersection(texts):
                batch.append(p)
                seen.update(texts)
            else:
                rest.append(p)
        if len(batch) < 2:
            break
        batches.append(batch)
        pending = rest
    return batches


def split_pairs(pairs: Sequence[Pair], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[Pair], EvalSet, Modality]:
    """Split user pairs by group (or by positive) so no document is on both sides; val becomes an EvalSet.

    Returns (train, val, the modality of the positives: "text" or "image")."""
    from mmsearch.offline.datasets.wordnet import split_of

    train: list[Pair] = []
    val: list[Pair] = []
    for p in pairs:
        (val if split_of(f"{seed}:{p.group or p.positive}", val_fraction, 0.0) == "val" else train).append(p)
    if len(val) < 2 or len(train) < 2:
        raise BadInput(f"{len(pairs)} pairs are too few to split into train and validation (need groups on both sides)")
    corpus = list(dict.fromkeys(p.positive for p in val))
    pos = {d: i for i, d in enumerate(corpus)}
    modality: Modality = "image" if Path(val[0].positive).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif") else "text"
    es = EvalSet([p.query for p in val], corpus, [{pos[p.positive]: 1.0} for p in val], "text", modality)
    return train, es, modality


def score(es: EvalSet, q: np.ndarray, d: np.ndarray) -> dict[str, float]:
    """Retrieval metrics @1 and @10 of normalised query embeddings against corpus embeddings."""
    s = q @ d.T
    if es.exclude_self:
        s[np.arange(len(q)), es.exclude_self] = -np.inf
    return retrieval_metrics(s, es.gains, (1, 10), es.relevance_level)


def progress_bar(cfg: FinetuneConfig, total: int, epoch: int) -> tqdm:
    return tqdm(total=total, desc=f"epoch {epoch}", unit="pair", disable=not cfg.progress, dynamic_ncols=True, leave=False)


def write_record(cfg: FinetuneConfig, res: FinetuneResult) -> None:
    """``mmsearch_finetune.json``: the config, the base and best validation figures and the history."""
    rec = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
           "base": str(cfg.base), "metric": res.metric, "base_metric": res.base_metric,
           "best_metric": res.best_metric, "best_epoch": res.best_epoch, "history": res.history,
           "seconds": res.seconds, "train_pairs": res.train_pairs, "base_kind": res.base_kind}
    (cfg.out / RECORD).write_text(json.dumps(rec, indent=2) + "\n")


class Trainer:
    """Epoch loop with validation before training, early stopping and best-only saving.

    The base figure is the model before training, unless ``base`` gives the base model's own figures
    (text with --dim: measured before the projection was added, never with a random projection);
    ``base_kind`` says whether it measures a real model or untrained heads (dual, cross), which
    `export --gate` will not take as proof."""

    def __init__(self, cfg: FinetuneConfig, evaluate: Callable[[], dict[str, float]], save: Callable[[], object],
                 base: dict[str, float] | None = None, base_kind: str = "model"):
        self.cfg, self.evaluate, self.save = cfg, evaluate, save
        self.base, self.base_kind = base, base_kind

    def run(self, epoch_fn: Callable[[int], float], n_pairs: int) -> FinetuneResult:
        t0 = time.perf_counter()
        start = self.evaluate()
        if self.cfg.metric not in start:
            raise BadInput(f"--metric {self.cfg.metric!r} unknown (choose from {', '.join(sorted(start))})")
        base = self.base or start
        best, best_epoch, bad = start[self.cfg.metric], 0, 0
        history = [{"epoch": 0, **start}]
        log.info("base %s = %.4f", self.cfg.metric, best)
        self.save()  # the base model is the fallback if no epoch beats it
        for epoch in range(1, self.cfg.epochs + 1):
            loss = epoch_fn(epoch)
            m = self.evaluate()
            history.append({"epoch": epoch, "loss": loss, **m})
            log.info("epoch %d: loss %.4f, %s = %.4f", epoch, loss, self.cfg.metric, m[self.cfg.metric])
            if m[self.cfg.metric] > best:
                best, best_epoch, bad = m[self.cfg.metric], epoch, 0
                self.save()
            else:
                bad += 1
                if bad >= self.cfg.patience:
                    log.info("early stop: no gain for %d epochs", bad)
                    break
        res = FinetuneResult(self.cfg.out, self.cfg.metric, base[self.cfg.metric], best, best_epoch, history,
                             time.perf_counter() - t0, n_pairs, self.base_kind)
        write_record(self.cfg, res)
        return res
