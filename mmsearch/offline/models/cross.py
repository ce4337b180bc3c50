"""sentence-transformers CrossEncoder rerankers: (query, document) -> relevance score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmsearch.modelrepo.manifest import TextPreprocessing
from mmsearch.offline.models.tower import FnModule, LoadedModel, Tower

DEFAULT_MAX_LENGTH = 512


def load_cross_encoder(path: str | Path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(
        str(path), device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"}
    ).eval()


def load(path: Path, max_length: int | None = None) -> LoadedModel:
    from transformers import AutoTokenizer

    ce = load_cross_encoder(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    max_length = int(max_length or ce.max_length or min(tokenizer.model_max_length, DEFAULT_MAX_LENGTH))
    ce.max_length = max_length
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    activation = ce.activation_fn

    def forward(*tensors: torch.Tensor) -> torch.Tensor:
        scores = ce(dict(zip(names, tensors)))["scores"]
        return activation(scores.reshape(-1, 1))

    def reference(pairs) -> np.ndarray:
        return np.asarray(ce.predict(list(pairs), batch_size=32, convert_to_numpy=True), dtype=np.float32).reshape(-1, 1)

    tower = Tower(
        role="cross",
        module=FnModule(ce, forward),
        input_names=names,
        dim=1,
        preprocessing=TextPreprocessing(max_length=max_length, pair=True),
        write_preprocess=lambda d: tokenizer.save_pretrained(str(d)),
        reference=reference,
        reference_name=f"sentence-transformers CrossEncoder.predict (activation {type(activation).__name__})",
        source={"kind": "cross-encoder", "path": str(path)},
    )
    return LoadedModel("cross-encoder", path, {"cross": tower})
