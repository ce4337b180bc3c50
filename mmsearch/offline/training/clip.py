"""The CLIP trainer: the symmetric contrastive loss through both towers of a Hugging Face CLIPModel."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.modelrepo.preprocessing import ImagePreprocessor
from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.models import resolve_source
from mmsearch.offline.training.common import FinetuneConfig, FinetuneResult, Trainer, similarities
from mmsearch.offline.training.contrastive import contrastive_epoch


def finetune_clip(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    from transformers import AutoTokenizer, CLIPModel

    from mmsearch.offline.models.clip import image_spec_from_processor, pil_image_processor_class
    from mmsearch.offline.models.tower import features

    src = resolve_source(cfg.base)
    model = CLIPModel.from_pretrained(str(src), attn_implementation="eager", local_files_only=True)
    model.to(cfg.device)  # type: ignore[arg-type]  # transformers types .to() through a wrapper that mypy misreads
    tok = AutoTokenizer.from_pretrained(str(src))
    proc = pil_image_processor_class().from_pretrained(str(src))
    pre = ImagePreprocessor(image_spec_from_processor(proc))
    max_len = min(cfg.max_length, model.config.text_config.max_position_embeddings)  # type: ignore[union-attr]

    def text_fn(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return features(model.get_text_features(input_ids=enc["input_ids"].to(cfg.device),
                                                attention_mask=enc["attention_mask"].to(cfg.device)))

    def image_fn(ps: list[str]) -> torch.Tensor:
        return features(model.get_image_features(pixel_values=torch.from_numpy(pre([Path(p) for p in ps])).to(cfg.device)))

    @torch.no_grad()
    def evaluate() -> np.ndarray:
        model.eval()
        q = F.normalize(torch.cat([text_fn(list(val.queries[i : i + 64])) for i in range(0, len(val.queries), 64)]), dim=-1)
        d = F.normalize(torch.cat([image_fn(list(val.corpus[i : i + 64])) for i in range(0, len(val.corpus), 64)]), dim=-1)
        model.train()
        return similarities(val, q.cpu().numpy(), d.cpu().numpy())

    def save() -> None:
        model.save_pretrained(str(cfg.out))
        tok.save_pretrained(str(cfg.out))
        proc.save_pretrained(str(cfg.out))

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    rng = random.Random(cfg.seed)
    model.train()
    return Trainer(cfg, val, evaluate, save).run(
        lambda e: contrastive_epoch(cfg, train, rng, text_fn, image_fn, model.logit_scale, opt, e), len(train))
