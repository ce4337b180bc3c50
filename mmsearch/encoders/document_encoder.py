"""Document encoders: in-process ONNX Runtime (default) or the Triton server (build-index --serving-url).

Used by build_index and by the retrieval service's documents API (issue 33), so a document written
one way or the other gets the same vector. Both read the model's manifest and use the shared
preprocessing, so vectors are the same whichever runs them (tested). ``read_local_image`` is the
build's safe reading of an image path: under the image root only, size-limited, SVGs rendered in the
sandboxed renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsearch.errors import BadInput
from mmsearch.modelrepo.local_model import LocalModel

MAX_IMAGE_BYTES = 20 * 1024 * 1024


def read_local_image(ref: str, image_root: Path, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """Bytes of an image file under ``image_root`` (a path escaping it is refused); an SVG is rendered
    here, where the folder it may reference is known and trusted."""
    root = image_root.resolve()
    path = (root / ref).resolve()
    if not path.is_relative_to(root):
        raise BadInput(f"image path {ref!r} escapes the image root {image_root}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise BadInput(f"image {ref} is {size:,} bytes, over the {max_bytes:,}-byte limit")
        data = path.read_bytes()
        if path.suffix.lower() == ".svg":
            from mmsearch.modelrepo.svg import rasterise

            return rasterise(data, f"image {ref}", resources_dir=path.parent)
        return data
    except FileNotFoundError as e:
        raise BadInput(f"image not found: {ref}") from e
    except IsADirectoryError as e:
        raise BadInput(f"image {ref} is a folder") from e
    except OSError as e:
        raise BadInput(f"cannot read image {ref}: {e.strerror}") from e


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
