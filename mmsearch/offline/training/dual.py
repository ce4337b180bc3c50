"""The dual trainer (LiT): the composed dual encoder's image tower stays locked and its features are
computed once per image; text features are cached too unless --unfreeze-text, so an epoch costs two
matrix products through the projection heads."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.models import resolve_source
from mmsearch.offline.training.common import FinetuneConfig, FinetuneResult, Trainer, score
from mmsearch.offline.training.contrastive import contrastive_epoch
from mmsearch.preprocessing import ImagePreprocessor


def finetune_dual(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    """LiT: the image tower stays locked; its features are computed once per image."""
    from mmsearch.offline.models.dual import DUAL_MARKER, DualEncoder
    from mmsearch.offline.models.text import st_forward

    src = resolve_source(cfg.base)
    resumed = (src / DUAL_MARKER).is_file()  # a trained dual encoder goes on; otherwise new heads
    model = DualEncoder.load(src) if resumed else DualEncoder.create(src, dim=cfg.dim or 256, label_prior=cfg.label_prior)
    model.to(cfg.device)
    pre = ImagePreprocessor(model.image_spec)
    paths = list(dict.fromkeys([p.positive for p in train] + list(val.corpus)))
    feats: dict[str, torch.Tensor] = {}
    with torch.no_grad(), tqdm(total=len(paths), desc="image features", unit="img", disable=not cfg.progress, leave=False) as bar:
        for k in range(0, len(paths), 32):
            chunk = paths[k : k + 32]
            f = model.image_features(torch.from_numpy(pre([Path(p) for p in chunk])).to(cfg.device))
            feats.update(zip(chunk, f))
            bar.update(len(chunk))
    tok = model.text.tokenizer

    def text_raw(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return st_forward(model.text, enc["input_ids"].to(cfg.device), enc["attention_mask"].to(cfg.device))

    text_cache: dict[str, torch.Tensor] = {}
    if not cfg.unfreeze_text:
        model.text.requires_grad_(False)
        texts = list(dict.fromkeys([p.query for p in train] + list(val.queries)))
        with torch.no_grad():
            for k in range(0, len(texts), 128):
                text_cache.update(zip(texts[k : k + 128], text_raw(texts[k : k + 128])))

    def text_fn(texts: list[str]) -> torch.Tensor:
        base = torch.stack([text_cache[t] for t in texts]) if text_cache else text_raw(texts)
        return model.text_proj(base)

    def image_fn(ps: list[str]) -> torch.Tensor:
        return model.project_image(torch.stack([feats[p] for p in ps]))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        q = F.normalize(model.text_proj(torch.stack([text_cache[t] for t in val.queries]) if text_cache
                                        else text_raw(list(val.queries))), dim=-1).cpu().numpy()
        d = F.normalize(image_fn(list(val.corpus)), dim=-1).cpu().numpy()
        return score(val, q, d)

    heads = [model.text_proj.weight, model.image_proj.weight, model.logit_scale] + ([model.label_gate] if model.label_prior else [])
    groups = [{"params": heads, "lr": cfg.lr}]
    if cfg.unfreeze_text:  # the pretrained tower moves far slower than the fresh heads
        groups.append({"params": [p for p in model.text.parameters() if p.requires_grad], "lr": cfg.text_lr or cfg.lr / 100})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    rng = random.Random(cfg.seed)
    return Trainer(cfg, evaluate, lambda: model.save(cfg.out), base_kind="model" if resumed else "untrained heads").run(
        lambda e: contrastive_epoch(cfg, train, rng, text_fn, image_fn, model.logit_scale, opt, e), len(train))
