"""The text trainer: in-batch negatives (MultipleNegativesRankingLoss: cross-entropy over cosine
similarities scaled by 20), batches never holding the same text twice, optional hard negatives (the
pair's ``negative``) and an optional output dimension (a Dense layer)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.models import resolve_source
from mmsearch.offline.training.common import FinetuneConfig, FinetuneResult, Trainer, progress_bar, score, unique_batches


def finetune_text(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    from sentence_transformers import models  # type: ignore[attr-defined]  # exported lazily

    from mmsearch.offline.models.text import load_sentence_transformer, st_forward

    st = load_sentence_transformer(resolve_source(cfg.base))
    st.max_seq_length = cfg.max_length
    if cfg.dim:
        st.append(models.Dense(st.get_embedding_dimension(), cfg.dim, activation_function=torch.nn.Identity()))
    tok = st.tokenizer

    def embed(texts: Sequence[str]) -> torch.Tensor:
        enc = tok(list(texts), padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return F.normalize(st_forward(st, enc["input_ids"], enc["attention_mask"]), dim=-1)

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        st.eval()
        out = np.concatenate([embed(texts[i : i + 128]).numpy() for i in range(0, len(texts), 128)])
        st.train()
        return out

    opt = torch.optim.AdamW(st.parameters(), lr=cfg.lr)
    rng = random.Random(cfg.seed)

    def epoch_fn(epoch: int) -> float:
        st.train()
        batches = unique_batches(train, cfg.batch_size, rng)
        losses = []
        with progress_bar(cfg, sum(map(len, batches)), epoch) as bar:
            for b in batches:
                q = embed([p.query for p in b])
                docs = [p.positive for p in b] + ([p.negative for p in b if p.negative] if cfg.hard_negatives else [])
                d = embed(docs)
                loss = F.cross_entropy(20.0 * q @ d.T, torch.arange(len(b)))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                bar.update(len(b))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        return float(np.mean(losses)) if losses else 0.0

    def save() -> None:
        st.save(str(cfg.out))

    return Trainer(cfg, lambda: score(val, encode(val.queries), encode(val.corpus)), save).run(epoch_fn, len(train))
