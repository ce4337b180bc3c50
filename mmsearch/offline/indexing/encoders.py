"""Encoders for build_index: in-process ONNX Runtime (default) or the Triton server (--serving-url).

Both read the model's manifest and use the shared preprocessing, so vectors are the same whichever
runs them (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsearch.errors import BadInput
from mmsearch.modelrepo.local_model import LocalModel


class Encoder:
    """Text encoders take strings; image encoders take preprocessed pixel arrays [3, H, W]."""

    def __init__(self, model_dir: Path, serving_url: str | None = None, threads: int = 0, timeout_s: float = 60.0):
        self.local = LocalModel(model_dir, threads=threads)
        self.manifest = self.local.manifest
        if self.manifest.kind == "cross_encoder":
            raise BadInput(f"model {self.manifest.name} is a cross-encoder: index with a text or image encoder")
        self.dim = int(self.manifest.embedding_dim or 0)
        self.modality = "image" if self.manifest.kind == "image_encoder" else "text"
        self.remote = None
        if serving_url:
            from mmsearch.clients.inference import InferenceClient

            self.remote = InferenceClient(serving_url, "grpc", timeout_s=timeout_s)
            if not self.remote.model_ready(self.manifest.name):
                from mmsearch.errors import Unavailable

                raise Unavailable(f"triton at {serving_url}", f"model {self.manifest.name} is not ready there")

    def preprocess_image(self, data: bytes, name: str) -> np.ndarray:
        return self.local.image.one(data, name)

    def encode(self, payloads: Sequence) -> np.ndarray:
        if self.modality == "text":
            if self.remote is None:
                return self.local.encode_texts(list(payloads), batch_size=len(payloads))
            return self.remote.infer(self.manifest.name, self.local.text(list(payloads)).tensors, "embedding")
        pixels = np.stack(payloads)
        if self.remote is None:
            return self.local.run({"pixel_values": pixels})
        return self.remote.infer(self.manifest.name, {"pixel_values": pixels}, "embedding")
