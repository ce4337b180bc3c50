"""The text trainer: sentence-transformers' MultipleNegativesRankingLoss (cross-entropy over cosine
similarities times ``scale``, 20 by default: in-batch negatives, plus a hard negative per pair when
there are some; ``symmetric`` adds the document->query term, ``hardness`` weights hard negatives up),
or its cached-gradient variant (``mini_batch``: big effective batches at small-batch memory);
batches never hold the same text twice; hard negatives either come with the pairs (the flywheel's
skipped-above results) or are mined with the base model (``mine_negatives``, training/mining.py);
an optional output dimension (a Dense layer)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.models import resolve_source
from mmsearch.offline.training.common import FinetuneConfig, FinetuneResult, Trainer, progress_bar, similarities, unique_batches
from mmsearch.offline.training.mining import mine_negatives


def finetune_text(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    from sentence_transformers import models  # type: ignore[attr-defined]  # exported lazily
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    from mmsearch.offline.models.text import load_sentence_transformer

    st = load_sentence_transformer(resolve_source(cfg.base)).to(cfg.device)
    st.max_seq_length = cfg.max_length
    tok = st.tokenizer

    def features(texts: Sequence[str]) -> dict[str, Any]:
        enc = tok(list(texts), padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return {k: v.to(cfg.device) for k, v in enc.items()}

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        st.eval()
        out = np.concatenate([F.normalize(st(features(texts[i : i + 128]))["sentence_embedding"], dim=-1).float().cpu().numpy()
                              for i in range(0, len(texts), 128)])
        st.train()
        return out

    base = None
    if cfg.dim:  # the base's figure is the base as it is, measured before the (random) projection is added
        base = similarities(val, encode(val.queries), encode(val.corpus))
    if cfg.mine_negatives:
        train, _ = mine_negatives(train, encode, progress=cfg.progress)
    if cfg.dim:
        st.append(models.Dense(st.get_embedding_dimension(), cfg.dim, activation_function=torch.nn.Identity()).to(cfg.device))
    directions = ("query_to_doc", "doc_to_query") if cfg.symmetric else ("query_to_doc",)
    loss_opts: dict[str, Any] = {"scale": cfg.scale, "directions": directions,
                                 "partition_mode": "per_direction" if cfg.symmetric else "joint"}
    if cfg.hardness:
        loss_opts.update(hardness_mode="in_batch_negatives", hardness_strength=cfg.hardness)
    loss_fn = (CachedMultipleNegativesRankingLoss(st, mini_batch_size=cfg.mini_batch, **loss_opts) if cfg.mini_batch
               else MultipleNegativesRankingLoss(st, **loss_opts))
    use_negatives = (cfg.hard_negatives or cfg.mine_negatives) and any(p.negative for p in train)
    opt = torch.optim.AdamW(st.parameters(), lr=cfg.lr)
    rng = random.Random(cfg.seed)
    steps = max(1, cfg.epochs * -(-len(train) // cfg.batch_size))
    warmup = max(1, int(0.1 * steps))  # linear warmup, then linear decay: the usual schedule for MNRL
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1))))

    def epoch_fn(epoch: int) -> float:
        st.train()
        batches = unique_batches(train, cfg.batch_size, rng, with_negatives=use_negatives)
        losses = []
        with progress_bar(cfg, sum(map(len, batches)), epoch) as bar:
            for b in batches:
                cols = [features([p.query for p in b]), features([p.positive for p in b])]
                if use_negatives:
                    cols.append(features([p.negative or _filler(p, b, train, rng) for p in b]))
                loss = loss_fn(cols, torch.empty(0))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.update(len(b))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        return float(np.mean(losses)) if losses else 0.0

    def save() -> None:
        st.save(str(cfg.out))

    return Trainer(cfg, val, lambda: similarities(val, encode(val.queries), encode(val.corpus)), save, base_scores=base).run(
        epoch_fn, len(train))


def _filler(p: Pair, batch: list[Pair], train: list[Pair], rng: random.Random) -> str:
    """A negative for a pair that has none (the column must be full): another pair's positive from
    outside the batch, so it cannot be a positive of this batch."""
    inside = {q.positive for q in batch} | {q.negative for q in batch if q.negative}
    for _ in range(20):
        cand = rng.choice(train).positive
        if cand not in inside:
            return cand
    return p.query  # tiny sets: the query's own text is no answer to itself
