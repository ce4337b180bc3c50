"""sentence-transformers text encoders (e.g. the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmsearch.modelrepo.manifest import TextPreprocessing
from mmsearch.offline.models.tower import FnModule, LoadedModel, Tower, l2

DEFAULT_MAX_LENGTH = 256


def load_sentence_transformer(path: str | Path):
    from sentence_transformers import SentenceTransformer

    # Eager attention traces to plain ONNX ops; SDPA masks do not export cleanly.
    return SentenceTransformer(
        str(path), device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"}
    ).eval()


def st_forward(st, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The sentence embedding of an ST pipeline (transformer, pooling, dense...), before our L2."""
    return st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]


def st_max_length(st) -> int:
    return int(st.max_seq_length or DEFAULT_MAX_LENGTH)


def text_tower(path: Path, max_length: int | None = None) -> Tower:
    st = load_sentence_transformer(path)
    max_length = max_length or st_max_length(st)
    st.max_seq_length = max_length
    dim = int(st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else st.get_sentence_embedding_dimension())

    def reference(texts) -> np.ndarray:
        return st.encode(list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    return Tower(
        role="text",
        module=FnModule(st, lambda ids, mask: l2(st_forward(st, ids, mask))),
        input_names=["input_ids", "attention_mask"],
        dim=dim,
        preprocessing=TextPreprocessing(max_length=max_length),
        write_preprocess=lambda d: st.tokenizer.save_pretrained(str(d)),
        reference=reference,
        reference_name="sentence-transformers encode(normalize_embeddings=True)",
        source={"kind": "sentence-transformers", "path": str(path)},
    )


def load(path: Path, max_length: int | None = None) -> LoadedModel:
    return LoadedModel("sentence-transformers", path, {"text": text_tower(path, max_length)})
