"""What every trainer shares: the run's config and result, seeding, batching, the validation split,
scoring, the progress bar, and the epoch loop with early stopping that writes the fine-tuning record.

The loop splits the validation queries in two: early stopping picks the epoch on one half; the other
half (the gate split) is never looked at when choosing, so the record's gate figures (base and chosen
model on it) are an unbiased comparison for `mmsearch export --gate`. Comparing the chosen epoch with
the base on the set that chose it would favour the candidate (selection bias)."""

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
GATE_FRACTION = 0.5  # of the judged validation queries, held out from epoch selection for `export --gate`
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
    feature_cache: Path | None = None  # dual: a folder keeping the locked image tower's features between trainings


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
    gate: dict = field(default_factory=dict)  # base and chosen model on the gate split (see gate_split)

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


def similarities(es: EvalSet, q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Query x corpus scores of normalised embeddings; image->image queries never find themselves."""
    s = q @ d.T
    if es.exclude_self:
        s[np.arange(len(q)), es.exclude_self] = -np.inf
    return s


def score(es: EvalSet, q: np.ndarray, d: np.ndarray) -> dict[str, float]:
    """Retrieval metrics @1 and @10 of normalised query embeddings against corpus embeddings."""
    return retrieval_metrics(similarities(es, q, d), es.gains, (1, 10), es.relevance_level)


def gate_split(es: EvalSet, seed: int = 0, fraction: float = GATE_FRACTION) -> tuple[list[dict[int, float]], list[dict[int, float]]]:
    """(selection gains, gate gains) over the same queries: each judged query is judged in exactly one
    of them (the other has it unjudged, which the metrics leave out). Early stopping reads only the
    selection half, so the gate half measures the chosen epoch without selection bias."""
    judged = [i for i, g in enumerate(es.gains) if g]
    if len(judged) < 2:
        raise BadInput(f"validation has {len(judged)} judged queries: at least 2 are needed, one for choosing the epoch "
                       "and one for the gate")
    random.Random(f"gate:{seed}").shuffle(judged)
    n_gate = min(len(judged) - 1, max(1, round(fraction * len(judged))))
    held = set(judged[:n_gate])
    select = [{} if i in held else g for i, g in enumerate(es.gains)]
    gate = [g if i in held else {} for i, g in enumerate(es.gains)]
    return select, gate


def progress_bar(cfg: FinetuneConfig, total: int, epoch: int) -> tqdm:
    return tqdm(total=total, desc=f"epoch {epoch}", unit="pair", disable=not cfg.progress, dynamic_ncols=True, leave=False)


def write_record(cfg: FinetuneConfig, res: FinetuneResult) -> None:
    """``mmsearch_finetune.json``: the config, the base and best validation figures and the history."""
    rec = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
           "base": str(cfg.base), "metric": res.metric, "base_metric": res.base_metric,
           "best_metric": res.best_metric, "best_epoch": res.best_epoch, "history": res.history,
           "seconds": res.seconds, "train_pairs": res.train_pairs, "base_kind": res.base_kind, "gate": res.gate}
    (cfg.out / RECORD).write_text(json.dumps(rec, indent=2) + "\n")


class Trainer:
    """Epoch loop with validation before training, early stopping and best-only saving.

    ``scores`` gives the current model's query x corpus scores on ``val``; the loop reads them on the
    selection half of the queries to choose the epoch and on the gate half (gate_split) only to
    record the base's and the chosen model's figures. The base figure is the model before training,
    unless ``base_scores`` gives the base model's own scores (text with --dim: measured before the
    projection was added, never with a random projection); ``base_kind`` says whether it measures a
    real model or untrained heads (dual, cross), which `export --gate` will not take as proof."""

    def __init__(self, cfg: FinetuneConfig, val: EvalSet, scores: Callable[[], np.ndarray], save: Callable[[], object],
                 base_scores: np.ndarray | None = None, base_kind: str = "model"):
        self.cfg, self.val, self.scores, self.save = cfg, val, scores, save
        self.base_scores, self.base_kind = base_scores, base_kind
        self.select, self.gate = gate_split(val, cfg.seed)

    def _metrics(self, s: np.ndarray, gains: list[dict[int, float]]) -> dict[str, float]:
        return retrieval_metrics(s, gains, (1, 10), self.val.relevance_level)

    def run(self, epoch_fn: Callable[[int], float], n_pairs: int) -> FinetuneResult:
        t0 = time.perf_counter()
        s = self.scores()
        start = self._metrics(s, self.select)
        if self.cfg.metric not in start:
            raise BadInput(f"--metric {self.cfg.metric!r} unknown (choose from {', '.join(sorted(start))})")
        metric = self.cfg.metric
        base_s = s if self.base_scores is None else self.base_scores
        base = start if self.base_scores is None else self._metrics(base_s, self.select)
        gate_base, gate_best = self._metrics(base_s, self.gate)[metric], self._metrics(s, self.gate)[metric]
        best, best_epoch, bad = start[metric], 0, 0
        history = [{"epoch": 0, **start}]
        log.info("base %s = %.4f", metric, best)
        self.save()  # the base model is the fallback if no epoch beats it
        for epoch in range(1, self.cfg.epochs + 1):
            loss = epoch_fn(epoch)
            s = self.scores()
            m = self._metrics(s, self.select)
            history.append({"epoch": epoch, "loss": loss, **m})
            log.info("epoch %d: loss %.4f, %s = %.4f", epoch, loss, metric, m[metric])
            if m[metric] > best:
                best, best_epoch, bad = m[metric], epoch, 0
                gate_best = self._metrics(s, self.gate)[metric]  # recorded, never compared here
                self.save()
            else:
                bad += 1
                if bad >= self.cfg.patience:
                    log.info("early stop: no gain for %d epochs", bad)
                    break
        gate = {"metric": metric, "base": gate_base, "candidate": gate_best, "queries": sum(1 for g in self.gate if g),
                "split": f"{GATE_FRACTION:.0%} of the validation queries, held out from epoch selection"}
        res = FinetuneResult(self.cfg.out, metric, base[metric], best, best_epoch, history,
                             time.perf_counter() - t0, n_pairs, self.base_kind, gate)
        write_record(self.cfg, res)
        return res
