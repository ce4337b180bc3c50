"""Query/document preprocessing, written once.

The offline tools (export parity, build_index, evaluation) and the online preprocess service all
call these functions, so offline and online tensors are identical by construction. The image
pipeline reproduces Hugging Face's CLIPImageProcessor step by step (PIL resize of the shortest
edge, centre crop, rescale, normalise).
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import ImagePreprocessing, Manifest, TextPreprocessing
from mmsearch.modelrepo.svg import MAX_SVG_BYTES, is_svg, rasterise

#: Largest image (in pixels) we agree to decode: bigger is treated as a decompression bomb.
MAX_IMAGE_PIXELS = 64_000_000

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

ImageInput = bytes | str | Path | Image.Image


@dataclass
class TextBatch:
    tensors: dict[str, np.ndarray]  # int64 [N, L] per model input name
    truncated: np.ndarray  # bool [N]: the item was cut at max_length


class Tokenizer(Protocol):
    """Tokenize a model's texts (or query/document pairs): the preprocess service's client, or the
    same code in-process (preprocess_registry.LocalTokenizer)."""

    def tokenize(self, model: str, texts: Sequence[str], documents: Sequence[str] = (), bucket: bool = False) -> TextBatch: ...


def _check_texts(texts: Sequence[object], what: str = "text") -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise BadInput(f"{what}s must be a list of strings, got a single {type(texts).__name__}")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadInput(f"{what} #{i}: expected a string, got {type(t).__name__}")
        if not t.strip():
            raise BadInput(f"{what} #{i}: empty")
        out.append(t)
    if not out:
        raise BadInput(f"empty batch: no {what}s given")
    return out


# a model input -> the field of a tokenizers Encoding that fills it (TextPreprocessor.by_length)
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class TextPreprocessor:
    """The model's own tokenizer from its preprocess/ folder, truncating at the manifest's max_length."""

    def __init__(self, tokenizer_dir: str | Path, max_length: int, input_names: Sequence[str], pair: bool = False):
        from transformers import AutoTokenizer  # heavy: imported when a text model is actually loaded

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        except (OSError, ValueError) as e:
            raise BadInput(f"cannot load tokenizer from {tokenizer_dir}: {e}") from e
        self.max_length = max_length
        self.input_names = list(input_names)
        self.pair = pair
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        # Fast tokenizers are not safe to call from several threads at once ("Already borrowed").
        self._lock = threading.Lock()
        self._whole = self._whole_batch_tokenizer()
        # by_length's padding per input, and the inputs a tokenizers Encoding cannot fill (named when it is asked)
        self._pad = {"input_ids": self.pad_id, "attention_mask": 0,
                     "token_type_ids": int(getattr(self.tokenizer, "pad_token_type_id", 0) or 0)}
        self._unfillable = [name for name in self.input_names if name not in _ENCODING_FIELDS]

    def _whole_batch_tokenizer(self):
        """The fast tokenizer's Rust core, copied and set once to truncate as ``__call__`` does and not to pad, for
        ``by_length``; None where that copy could tokenize differently from ``__call__`` (``by_length`` then chunks
        by characters through ``__call__``): a slow tokenizer, one without a pad token or padding on the left, a class
        that overrides how texts are encoded, or a core that cannot be copied (a custom Python pre-tokenizer)."""
        try:
            from transformers.tokenization_utils_tokenizers import TokenizersBackend
        except ImportError:  # another transformers layout: keep the per-chunk path
            return None
        tok = self.tokenizer
        if (not isinstance(tok, TokenizersBackend) or tok.pad_token_id is None or getattr(tok, "padding_side", "right") != "right"
                or any(getattr(type(tok), m) is not getattr(TokenizersBackend, m) for m in ("__call__", "_encode_plus"))):
            return None
        try:
            core = copy.deepcopy(tok.backend_tokenizer)  # its own settings: __call__ changes the shared one's on every call
        except Exception:  # noqa: BLE001 - the core raises its own bare Exception when a part written in Python does not pickle
            return None
        core.no_padding()
        core.enable_truncation(self.max_length, direction=getattr(tok, "truncation_side", "right"))
        core.encode_special_tokens = bool(getattr(tok, "split_special_tokens", False))  # (not carried by the copy)
        return core

    @classmethod
    def for_model(cls, model_dir: str | Path, manifest: Manifest) -> "TextPreprocessor":
        pre = manifest.preprocessing
        assert isinstance(pre, TextPreprocessing)
        return cls(Path(model_dir) / pre.tokenizer_dir, pre.max_length, manifest.input_names, pre.pair)

    def _tensors(self, enc) -> dict[str, np.ndarray]:
        out = {}
        for name in self.input_names:
            if name == "token_type_ids" and name not in enc:
                out[name] = np.zeros_like(np.asarray(enc["input_ids"]), dtype=np.int64)
            else:
                out[name] = np.asarray(enc[name], dtype=np.int64)
        return out

    def _bucketed(self, batch: TextBatch, buckets: Sequence[int] | None) -> TextBatch:
        """Pad the sequence axis up to the next bucket: equal shapes let Triton batch concurrent queries."""
        if not buckets:
            return batch
        length = batch.tensors["input_ids"].shape[1]
        target = min((b for b in buckets if b >= length), default=length)
        target = max(length, min(target, self.max_length))
        if target == length:
            return batch
        pad = ((0, 0), (0, target - length))
        tensors = {k: np.pad(v, pad, constant_values=self.pad_id if k == "input_ids" else 0) for k, v in batch.tensors.items()}
        return TextBatch(tensors, batch.truncated)

    def __call__(self, texts: Sequence[str], buckets: Sequence[int] | None = None) -> TextBatch:
        texts = _check_texts(texts)
        with self._lock:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
            truncated = self._truncated(enc, texts)
        return self._bucketed(TextBatch(self._tensors(enc), truncated), buckets)

    def by_length(self, texts: Sequence[str], size: int) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        """Texts cut into chunks of ``size`` by token count, longest first, each chunk padded only to its own
        longest text: the order (row ``k`` of the chunks stacked is ``texts[order[k]]``) and the chunks' tensors,
        as ``__call__`` would give each chunk. Why whole: one call of the Rust tokenizer per batch (it runs in
        parallel, off the GIL) instead of one per chunk, and sorting by tokens instead of characters pads less:
        a build's encoder went from 1,068-1,117 to 1,486 texts/s on the demo's glosses (docs/architecture.md)."""
        texts = _check_texts(texts)
        size = max(1, int(size))
        if self._whole is None:
            order = np.argsort([-len(t) for t in texts], kind="stable")
            ordered = [texts[i] for i in order]
            return order, [self(ordered[i : i + size]).tensors for i in range(0, len(ordered), size)]
        if self._unfillable:
            raise BadInput(f"model inputs {self._unfillable}: the tokenizer gives only {', '.join(_ENCODING_FIELDS)}")
        encs = self._whole.encode_batch(texts)  # (the copy is never changed: no lock, unlike __call__)
        lens = np.fromiter((len(e.ids) for e in encs), np.int64, len(encs))
        order = np.argsort(-lens, kind="stable")
        chunks = []
        for i in range(0, len(order), size):
            rows = order[i : i + size]
            n = lens[rows]
            filled = np.arange(int(n[0]))[None, :] < n[:, None]  # each row's tokens are a prefix (right padding)
            tensors = {}
            for name in self.input_names:
                t = np.full(filled.shape, self._pad[name], np.int64)
                t[filled] = np.concatenate([getattr(encs[j], _ENCODING_FIELDS[name]) for j in rows])
                tensors[name] = t
            chunks.append(tensors)
        return order, chunks

    def pairs(self, queries: Sequence[str], documents: Sequence[str], buckets: Sequence[int] | None = None) -> TextBatch:
        queries = _check_texts(queries, "query")
        documents = _check_texts(documents, "document")
        if len(queries) != len(documents):
            raise BadInput(f"{len(queries)} queries but {len(documents)} documents: pairs must match")
        with self._lock:
            enc = self.tokenizer(queries, documents, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="np")
            truncated = self._truncated(enc, queries, documents)
        return self._bucketed(TextBatch(self._tensors(enc), truncated), buckets)

    def _truncated(self, enc, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        """Fast tokenizers keep what truncation cut in `overflowing`; slow ones need a second, untruncated pass."""
        if getattr(enc, "encodings", None):
            return np.array([len(e.overflowing) > 0 for e in enc.encodings], dtype=bool)
        args = (texts, pairs) if pairs is not None else (texts,)
        full = self.tokenizer(*args, truncation=False, verbose=False)["input_ids"]
        return np.array([len(ids) > self.max_length for ids in full], dtype=bool)


def _read_capped(path: Path, name: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_SVG_BYTES + 1)
    if len(data) > MAX_SVG_BYTES:
        raise BadInput(f"{name}: SVG is over the {MAX_SVG_BYTES:,}-byte limit")
    return data


def load_image(data: ImageInput, name: str = "image", alpha: str = "drop", short_edge: int | None = None) -> Image.Image:
    """Decode to RGB: EXIF orientation applied, first frame of animations, alpha/palette/grey converted; an
    SVG rendered with ``short_edge`` (the model's resize, modelrepo/svg.py), else in the full box."""
    try:
        if isinstance(data, Image.Image):
            img = data
        elif isinstance(data, (bytes, bytearray, memoryview)):
            if not data:
                raise BadInput(f"{name}: empty image data")
            raw = bytes(data)
            img = Image.open(io.BytesIO(rasterise(raw, name, short_edge=short_edge) if is_svg(raw) else raw))
        elif isinstance(data, (str, Path)):
            path = Path(data)
            if path.suffix.lower() == ".svg":  # a local file: bitmaps beside it may be referenced
                img = Image.open(io.BytesIO(rasterise(_read_capped(path, name), name, resources_dir=path.parent, short_edge=short_edge)))
            else:
                img = Image.open(path)
        else:
            raise BadInput(f"{name}: expected image bytes, a path or a PIL image, got {type(data).__name__}")
        w, h = img.size
        if w <= 0 or h <= 0:
            raise BadInput(f"{name}: image has no pixels ({w}x{h})")
        if w * h > MAX_IMAGE_PIXELS:
            raise BadInput(f"{name}: image is {w}x{h}, over the {MAX_IMAGE_PIXELS:,}-pixel limit")
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        if alpha == "white" and (img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(canvas, rgba)
        if img.mode != "RGB":
            # Same as Hugging Face's convert_rgb: alpha is dropped, palette and grey expanded.
            img = img.convert("RGB")
        return img
    except BadInput:
        raise
    except FileNotFoundError as e:
        raise BadInput(f"{name}: file not found: {data!s}") from e
    except Image.DecompressionBombError as e:
        raise BadInput(f"{name}: image is over the {MAX_IMAGE_PIXELS:,}-pixel limit (decompression bomb guard: {e})") from e
    except Image.UnidentifiedImageError as e:
        raise BadInput(f"{name}: not a readable image ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{name}: corrupt or truncated image ({e})") from e


class ImagePreprocessor:
    """Resize shortest edge -> centre crop -> rescale -> normalise, as CLIPImageProcessor does."""

    def __init__(self, spec: ImagePreprocessing):
        self.spec = spec
        self._mean = np.asarray(spec.mean, dtype=np.float64).reshape(3, 1, 1)
        self._std = np.asarray(spec.std, dtype=np.float64).reshape(3, 1, 1)

    @classmethod
    def for_model(cls, manifest: Manifest) -> "ImagePreprocessor":
        assert isinstance(manifest.preprocessing, ImagePreprocessing)
        return cls(manifest.preprocessing)

    def _resize(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        size = self.spec.resize_shortest_edge
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        return img.resize((new_w, new_h), resample=_RESAMPLE[self.spec.resample], reducing_gap=None)

    def _crop(self, arr: np.ndarray) -> np.ndarray:
        ch, cw = self.spec.crop_size
        h, w = arr.shape[:2]
        if h < ch or w < cw:  # pad symmetrically with zeros, as HF's center_crop does
            ph, pw = max(ch, h), max(cw, w)
            padded = np.zeros((ph, pw, arr.shape[2]), dtype=arr.dtype)
            top, left = (ph - h) // 2, (pw - w) // 2
            padded[top : top + h, left : left + w] = arr
            arr, h, w = padded, ph, pw
        top, left = (h - ch) // 2, (w - cw) // 2
        return arr[top : top + ch, left : left + cw]

    def one(self, data: ImageInput, name: str = "image") -> np.ndarray:
        img = self._resize(load_image(data, name, self.spec.alpha, self.spec.resize_shortest_edge))
        arr = self._crop(np.asarray(img, dtype=np.uint8))
        chw = arr.transpose(2, 0, 1).astype(np.float64) * self.spec.rescale_factor
        return ((chw - self._mean) / self._std).astype(np.float32)

    def __call__(self, images: Sequence[ImageInput]) -> np.ndarray:
        if isinstance(images, (bytes, str, Path, Image.Image)):
            images = [images]
        if len(images) == 0:
            raise BadInput("empty batch: no images given")
        return np.stack([self.one(im, f"image #{i}") for i, im in enumerate(images)])


def encode_by_length(texts: Sequence[str], batch_size: int, run: Callable[[dict[str, np.ndarray]], np.ndarray],
                     text: TextPreprocessor, mapper: Callable[..., Iterable[np.ndarray]] = map) -> np.ndarray:
    """``run`` over chunks of texts of similar length (``TextPreprocessor.by_length``, as sentence-transformers
    sorts), so little compute goes to padding; the rows come back in the caller's order. Every text encoder runs
    through this, in-process or served. ``mapper`` (an executor's ``map``) runs the chunks side by side."""
    order, chunks = text.by_length(texts, batch_size)  # (an empty batch is refused there)
    out = np.concatenate(list(mapper(run, chunks)))
    result = np.empty_like(out)
    result[order] = out
    return result
