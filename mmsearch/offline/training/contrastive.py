"""The symmetric contrastive (InfoNCE) epoch shared by the dual (LiT) and CLIP trainers."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.offline.data import Pair
from mmsearch.offline.training.common import FinetuneConfig, progress_bar, unique_batches

Embed = Callable[[list[str]], torch.Tensor]


def contrastive_epoch(cfg: FinetuneConfig, train: list[Pair], rng: random.Random, text_fn: Embed, image_fn: Embed,
                      logit_scale: torch.nn.Parameter, opt: torch.optim.Optimizer, epoch: int) -> float:
    """One epoch of text<->image cross-entropy over in-batch negatives with a learnable temperature (clamped at 100)."""
    batches = unique_batches(train, cfg.batch_size, rng)
    losses = []
    with progress_bar(cfg, sum(map(len, batches)), epoch) as bar:
        for b in batches:
            t = F.normalize(text_fn([p.query for p in b]), dim=-1)
            i = F.normalize(image_fn([p.positive for p in b]), dim=-1)
            logits = logit_scale.exp().clamp(max=100) * t @ i.T
            labels = torch.arange(len(b), device=logits.device)
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                logit_scale.clamp_(0, float(np.log(100)))
            losses.append(loss.item())
            bar.update(len(b))
    return float(np.mean(losses)) if losses else 0.0
