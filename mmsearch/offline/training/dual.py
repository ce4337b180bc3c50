"""The dual trainer (LiT): the composed dual encoder's image tower stays locked and its features are
computed once per image; text features are cached too unless --unfreeze-text, so an epoch costs two
matrix products through the projection heads."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmsearch.modelrepo.preprocessing import ImagePreprocessor
from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.models import resolve_source
from mmsearch.offline.training.common import FinetuneConfig, FinetuneResult, Trainer, log, similarities
from mmsearch.offline.training.contrastive import contrastive_epoch
from mmsearch.offline.training.feature_cache import FeatureCache


def finetune_dual(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    """LiT: the image tower stays locked; its features are computed once per image."""
    from mmsearch.offline.models.dual import DUAL_MARKER, DualEncoder

    src = resolve_source(cfg.base)
    resumed = (src / DUAL_MARKER).is_file()  # a trained dual encoder goes on; otherwise new heads
    model = DualEncoder.load(src) if resumed else DualEncoder.create(src, dim=cfg.dim or 256, label_prior=cfg.label_prior)
    model.to(cfg.device)
    pre = ImagePreprocessor(model.image_spec)
    paths = list(dict.fromkeys([p.positive for p in train] + list(val.corpus)))

    @torch.no_grad()
    def compute(ps: list[str]) -> torch.Tensor:
        out = []
        with tqdm(total=len(ps), desc="image features", unit="img", disable=not cfg.progress, leave=False) as bar:
            for k in range(0, len(ps), 32):
                chunk = ps[k : k + 32]
                out.append(model.image_features(torch.from_numpy(pre([Path(p) for p in chunk])).to(cfg.device)))
                bar.update(len(chunk))
        return torch.cat(out)

    cache = FeatureCache(cfg.feature_cache, model.image, model.image_spec.model_dump(mode="json"))
    feats = {p: f.to(cfg.device) for p, f in cache.features(paths, compute).items()}
    if cfg.feature_cache is not None:
        log.info("image features: %d from the cache, %d computed (%s)", cache.hits, cache.computed, cache.file)

    def text_raw(texts: list[str]) -> torch.Tensor:
        return model.text_features(texts, cfg.max_length)

    text_cache: dict[str, torch.Tensor] = {}
    if not cfg.unfreeze_text:
        model.text.requires_grad_(False)
        texts = list(dict.fromkeys([p.query for p in train] + list(val.queries)))
        with torch.no_grad():
            for k in range(0, len(texts), 128):
                text_cache.update(zip(texts[k : k + 128], text_raw(texts[k : k + 128])))

    # the entries each training image may not read (index lists; [B, N] masks are built per batch).
    # A resumed dual keeps its memory; the model's own rule (itself, and entries with its caption) applies.
    banned = _build_memory(model, train, feats, text_cache or None, text_raw) if not resumed and cfg.caption_memory else {}

    def text_fn(texts: list[str]) -> torch.Tensor:
        base = torch.stack([text_cache[t] for t in texts]) if text_cache else text_raw(texts)
        return model.text_proj(base)

    def image_fn(ps: list[str]) -> torch.Tensor:  # serving's function: the whole memory
        return model.project_image(torch.stack([feats[p] for p in ps]))

    def train_image_fn(ps: list[str]) -> torch.Tensor:  # training: an image never reads its own caption
        f = torch.stack([feats[p] for p in ps])
        if not model.memory_size:
            return model.project_image(f)
        mask = model.memory_self_mask(f)
        for row, p in enumerate(ps):
            mask[row, banned.get(p, [])] = True
        return model.project_image(f, mask)

    @torch.no_grad()
    def evaluate() -> np.ndarray:
        q = F.normalize(model.text_proj(torch.stack([text_cache[t] for t in val.queries]) if text_cache
                                        else text_raw(list(val.queries))), dim=-1).cpu().numpy()
        d = F.normalize(image_fn(list(val.corpus)), dim=-1).cpu().numpy()
        return similarities(val, q, d)

    heads = ([model.text_proj.weight, model.image_proj.weight, model.logit_scale] + ([model.label_gate] if model.label_prior else [])
             + ([model.memory_gate] if model.memory_size else []))
    groups = [{"params": heads, "lr": cfg.lr}]
    if cfg.unfreeze_text:  # the pretrained tower moves far slower than the fresh heads
        groups.append({"params": [p for p in model.text.parameters() if p.requires_grad], "lr": cfg.text_lr or cfg.lr / 100})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    rng = random.Random(cfg.seed)
    return Trainer(cfg, val, evaluate, lambda: model.save(cfg.out), base_kind="model" if resumed else "untrained heads").run(
        lambda e: contrastive_epoch(cfg, train, rng, text_fn, train_image_fn, model.logit_scale, opt, e), len(train))


@torch.no_grad()
def _build_memory(model, train: list[Pair], feats: dict[str, torch.Tensor], text_cache: dict[str, torch.Tensor] | None,
                  text_raw) -> dict[str, list[int]]:
    """Fills the caption memory from the training pairs and returns, per training image, the entries it
    must not read in training: those sharing a text group with it, as no served image's own caption is
    ever in the memory. One entry per image: the mean embedding of one text per group, the first seen
    (a group is one thing said of the image; augmentations such as expand.with_glosses append their
    variants after the original). Chosen on an inner split of the training captions (tau 0.05 and the
    first text per group, docs/architecture.md). More than MEMORY_MAX images: no memory (logged)."""
    from mmsearch.offline.models.dual import MEMORY_MAX

    texts: dict[str, list[str]] = {}
    groups: dict[str, set[str]] = {}
    for pair in train:
        group = pair.group or pair.query.lower()
        seen = groups.setdefault(pair.positive, set())
        if group not in seen:
            seen.add(group)
            texts.setdefault(pair.positive, []).append(pair.query)
    paths = list(texts)
    if len(paths) > MEMORY_MAX:
        log.warning("caption memory left out: %d training images exceed %d (its size and per-image cost grow with it)",
                    len(paths), MEMORY_MAX)
        return {}

    def embed(ts: list[str]) -> torch.Tensor:
        return torch.stack([text_cache[t] for t in ts]) if text_cache else text_raw(ts)

    model.set_memory(torch.stack([feats[p] for p in paths]), torch.stack([embed(texts[p]).mean(0) for p in paths]))
    owner: dict[str, list[int]] = {}
    for j, p in enumerate(paths):
        for g in groups[p]:
            owner.setdefault(g, []).append(j)
    return {p: sorted({j for g in groups[p] for j in owner[g]}) for p in paths}
