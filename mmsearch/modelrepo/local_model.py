"""A repository model run in-process with ONNX Runtime.

This is the reference the serving tier is checked against, the encoder export uses for its parity
check, and build_index's default encoder: one class, so all of them run the same graph with the
same preprocessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mmsearch.errors import BadInput, NotFound
from mmsearch.modelrepo.manifest import MODEL_FILE, Manifest, read_manifest
from mmsearch.modelrepo.preprocessing import ImageInput, ImagePreprocessor, TextPreprocessor, encode_by_length


def make_session(onnx_path: str | Path, threads: int = 0, providers: Sequence[str] | None = None, arena: bool = True):
    """An ORT session; threads=0 lets ONNX Runtime pick. CPU unless providers say otherwise. ``arena=False``
    for a long-lived server: the arena keeps the largest batch it ever saw resident (serving/triton_model.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = arena
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise BadInput(f"cannot load ONNX model {onnx_path}: {e}") from e


class LocalModel:
    def __init__(self, model_dir: str | Path, threads: int = 0, onnx_file: str | Path | None = None, arena: bool = True,
                 providers: Sequence[str] | None = None):
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise NotFound(f"model folder not found: {self.model_dir}")
        self.manifest: Manifest = read_manifest(self.model_dir)
        self.session = make_session(onnx_file or self.model_dir / "1" / MODEL_FILE, threads, providers, arena=arena)
        self._text: TextPreprocessor | None = None
        self._image: ImagePreprocessor | None = None

    @property
    def text(self) -> TextPreprocessor:
        if self.manifest.kind == "image_encoder":
            raise BadInput(f"model {self.manifest.name} is an image encoder: it takes images, not text")
        if self._text is None:
            self._text = TextPreprocessor.for_model(self.model_dir, self.manifest)
        return self._text

    @property
    def image(self) -> ImagePreprocessor:
        if self.manifest.kind != "image_encoder":
            raise BadInput(f"model {self.manifest.name} is a {self.manifest.kind}: it takes text, not images")
        if self._image is None:
            self._image = ImagePreprocessor.for_model(self.manifest)
        return self._image

    def run(self, feeds: Mapping[str, np.ndarray], output: str | None = None) -> np.ndarray:
        """Run the graph on ready tensors, in chunks of max_batch_size (the serving limit); its first
        output, or the one named."""
        n = len(next(iter(feeds.values())))
        step = self.manifest.max_batch_size
        names = [o.name for o in self.manifest.outputs]
        if output is not None and output not in names:
            raise BadInput(f"model {self.manifest.name} has no output {output!r} (has {names})")
        out_name = output or names[0]
        parts = [
            self.session.run([out_name], {k: v[i : i + step] for k, v in feeds.items()})[0] for i in range(0, n, step)
        ]
        return np.concatenate(parts) if parts else np.zeros((0,) + tuple(self.manifest.outputs[0].shape[1:]), np.float32)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if self.manifest.kind != "text_encoder":
            raise BadInput(f"model {self.manifest.name} is a {self.manifest.kind}, not a text encoder")
        return encode_by_length(texts, batch_size, self.run, self.text)

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        out = [self.run({"pixel_values": self.image(images[i : i + batch_size])}) for i in range(0, len(images), batch_size)]
        if not out:
            raise BadInput("empty batch: no images given")
        return np.concatenate(out)

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if self.manifest.kind != "cross_encoder":
            raise BadInput(f"model {self.manifest.name} is a {self.manifest.kind}, not a cross-encoder")
        out = [
            self.run(self.text.pairs(queries[i : i + batch_size], documents[i : i + batch_size]).tensors)
            for i in range(0, len(queries), batch_size)
        ]
        if not out:
            raise BadInput("empty batch: no pairs given")
        return np.concatenate(out)[:, 0]
