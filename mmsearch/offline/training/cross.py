"""The cross trainer: a reranker from a text model, binary cross-entropy on positives and sampled (or
hard) negatives; validated by ranking each query's positive among 9 sampled documents."""

from __future__ import annotations

import json
import random

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.models import resolve_source
from mmsearch.offline.training.common import FinetuneConfig, FinetuneResult, Trainer, progress_bar


def finetune_cross(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    """A reranker from a text model; validated by ranking each query's positive among 9 sampled documents."""
    from sentence_transformers import CrossEncoder

    src = resolve_source(cfg.base)
    try:  # a reranker already (a sequence-classification head) goes on; a plain text model gets a new head
        trained_head = any("SequenceClassification" in a for a in json.loads((src / "config.json").read_text()).get("architectures") or [])
    except (OSError, ValueError):
        trained_head = False
    ce = CrossEncoder(str(src), num_labels=1, device=cfg.device, max_length=cfg.max_length,
                      model_kwargs={"attn_implementation": "eager"}, local_files_only=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    rng = random.Random(cfg.seed)
    docs = [p.positive for p in train]
    vrng = random.Random(cfg.seed + 1)
    cands = []
    for g in val.gains:
        pos = max(g, key=lambda j: g[j])
        negs = vrng.sample([j for j in range(len(val.corpus)) if j not in g], k=min(9, len(val.corpus) - len(g)))
        cands.append([pos] + negs)

    def logits(qs: list[str], ds: list[str]) -> torch.Tensor:
        enc = tok(qs, ds, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return ce({k: v.to(cfg.device) for k, v in enc.items()})["scores"].reshape(-1)

    @torch.no_grad()
    def evaluate() -> np.ndarray:
        ce.eval()
        scores = np.full((len(val.queries), len(val.corpus)), -np.inf, dtype=np.float32)
        for qi, c in enumerate(cands):
            scores[qi, c] = logits([val.queries[qi]] * len(c), [val.corpus[j] for j in c]).float().cpu().numpy()
        ce.train()
        return scores

    opt = torch.optim.AdamW(ce.parameters(), lr=cfg.lr)

    def epoch_fn(epoch: int) -> float:
        ce.train()
        order = list(train)
        rng.shuffle(order)
        losses = []
        with progress_bar(cfg, len(order), epoch) as bar:
            for k in range(0, len(order), cfg.batch_size // 2 or 1):
                b = order[k : k + max(1, cfg.batch_size // 2)]
                negs = [p.negative if (cfg.hard_negatives and p.negative) else _random_negative(p, docs, rng) for p in b]
                qs = [p.query for p in b] * 2
                ds = [p.positive for p in b] + negs
                y = torch.tensor([1.0] * len(b) + [0.0] * len(b), device=cfg.device)
                loss = F.binary_cross_entropy_with_logits(logits(qs, ds), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                bar.update(len(b))
        return float(np.mean(losses)) if losses else 0.0

    def save() -> None:
        ce.save(str(cfg.out))
        tok.save_pretrained(str(cfg.out))

    return Trainer(cfg, val, evaluate, save, base_kind="model" if trained_head else "untrained heads").run(epoch_fn, len(train))


def _random_negative(p: Pair, docs: list[str], rng: random.Random) -> str:
    """A sampled document that is not the pair's own positive (a positive labelled 0 would teach the opposite)."""
    for _ in range(20):
        d = rng.choice(docs)
        if d != p.positive:
            return d
    return next((d for d in docs if d != p.positive), p.query)
