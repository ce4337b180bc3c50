"""Texts and images to vectors with one repository model: preprocessing from its manifest, inference
on a ``Backend`` (local ONNX Runtime or Triton). Index builds and evaluation encode through this, so
their vectors are the ones the served model gives (tested against each other)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.encoders.backend import Backend
from mmsearch.encoders.local import LocalBackend
from mmsearch.errors import BadInput, NotFound, Unavailable
from mmsearch.modelrepo.manifest import MANIFEST_NAME, Manifest, read_manifest
from mmsearch.modelrepo.preprocessing import ImageInput, ImagePreprocessor, TextPreprocessor, encode_by_length

# Texts are run in length-sorted chunks of this many: a build's batch of 256 glosses run as one chunk is
# padded to its longest text, and encoded at 289-330 texts/s here; the same batch in sorted chunks of 32
# at 655-800/s (2 cores, under load; /tmp harness, figures in docs/benchmarks.md's build entry). With a
# session per core (encoders/local.session_layout) chunks of 16 beat 32: 1,186-1,205 against 1,085-1,095
# glosses/s (one session of two threads: 907-913 against 929-954, the same within noise). Since 2026-12-06 the
# chunks come from one tokenizer call over the whole batch, sorted by tokens (TextPreprocessor.by_length).
TEXT_CHUNK = 16


class Encoder:
    """One text or image encoder of the repository. ``encode`` takes strings (text) or preprocessed
    pixel arrays [3, H, W] (image); ``encode_images`` takes images as files or bytes."""

    def __init__(self, model_dir: str | Path, backend: Backend):
        self.model_dir = Path(model_dir)
        if not (self.model_dir / MANIFEST_NAME).is_file():
            raise NotFound(f"model folder not found (no {MANIFEST_NAME}): {self.model_dir}")
        self.manifest: Manifest = read_manifest(self.model_dir)
        if self.manifest.kind == "cross_encoder":
            raise BadInput(f"model {self.manifest.name} is a cross-encoder: encode with a text or image encoder")
        self.name = self.manifest.name
        self.backend = backend
        self.dim = int(self.manifest.embedding_dim or 0)
        self.modality = "image" if self.manifest.kind == "image_encoder" else "text"
        self._text = TextPreprocessor.for_model(self.model_dir, self.manifest) if self.modality == "text" else None
        self._image = ImagePreprocessor.for_model(self.manifest) if self.modality == "image" else None
        # a backend that runs several calls at once (LocalBackend's session pool) gets them: chunks side by side
        self.parallelism = int(getattr(backend, "parallelism", 1))
        self._pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix="encode") if self.parallelism > 1 else None

    def _map(self, fn: Callable[[Any], np.ndarray[Any, Any]], items: Iterable[Any]) -> Iterator[np.ndarray[Any, Any]]:
        return map(fn, items) if self._pool is None else self._pool.map(fn, items)

    def _infer_pixels(self, pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """One batch of pixels, split across the backend's parallel sessions when it has them."""
        n = len(pixels)
        step = -(-n // self.parallelism)
        if step >= n:  # (one session, or a batch too small to split)
            return self.backend.infer(self.name, {"pixel_values": pixels}, "embedding")
        return np.concatenate(list(self._map(lambda i: self.backend.infer(self.name, {"pixel_values": pixels[i : i + step]}, "embedding"),
                                             range(0, n, step))))

    @property
    def render_edge(self) -> int | None:
        """The short edge an SVG is rendered with for this model (its resize), None for a text encoder."""
        return self._image.spec.resize_shortest_edge if self._image is not None else None

    @property
    def image(self) -> ImagePreprocessor:
        if self._image is None:
            raise BadInput(f"model {self.name} is a text encoder: it takes text, not images")
        return self._image

    def preprocess_image(self, data: bytes, name: str) -> np.ndarray[Any, Any]:
        return self.image.one(data, name)

    def encode(self, payloads: Sequence[Any]) -> np.ndarray[Any, Any]:
        """Strings for a text encoder, preprocessed pixel arrays for an image encoder."""
        if not len(payloads):
            raise BadInput("empty batch: nothing to encode")
        if self.modality == "text":
            return self.encode_texts(list(payloads), batch_size=TEXT_CHUNK)
        return self._infer_pixels(np.stack(payloads))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray[Any, Any]:
        if self._text is None:
            raise BadInput(f"model {self.name} is an image encoder: it takes images, not text")
        text = self._text
        return encode_by_length(texts, batch_size, lambda tensors: self.backend.infer(self.name, tensors, "embedding"), text,
                                self._map)

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray[Any, Any]:
        if not len(images):
            raise BadInput("empty batch: no images given")
        return np.concatenate([self._infer_pixels(self.image(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def open_encoder(model_dir: str | Path, serving_url: str | None = None, threads: int = 0, timeout_s: float = 60.0,
                 providers: Sequence[str] | None = None) -> Encoder:
    """The model run in this process (ONNX Runtime, on ``providers``: the CPU by default), or by the Triton
    server at ``serving_url``."""
    model_dir = Path(model_dir)
    if not serving_url:
        return Encoder(model_dir, LocalBackend.for_model(model_dir, threads, providers))
    from mmsearch.clients.inference import InferenceClient

    name = read_manifest(model_dir).name
    remote = InferenceClient(serving_url, "grpc", timeout_s=timeout_s)
    if not remote.model_ready(name):
        raise Unavailable(f"triton at {serving_url}", f"model {name} is not ready there")
    return Encoder(model_dir, remote)
