"""Real inputs for export's ONNX-vs-PyTorch parity check, and the comparison itself.

Texts span lengths from one word to far past any max_length (so truncation is exercised), with
unicode, emoji, digits and code; images span sizes, aspect ratios and modes (RGB, RGBA, L, P, CMYK)
in PNG and JPEG encodings, drawn here so no data is fetched.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmsearch.modelrepo.manifest import Parity

_BASE = [
    "dog",
    "a photo of a cat sleeping on a red sofa",
    "How do I reset my password if I no longer have access to my email?",
    "The mitochondria is the powerhouse of the cell.",
    "Quarterly revenue grew 12% year over year, driven by cloud subscriptions.",
    "¿Dónde está la biblioteca más cercana?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "🙂 emoji-only queries still need an embedding 🚀🔥",
    "def add(a, b):\n    return a + b",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "red running shoes size 42",
    "café naïve façade coöperate",
    "1234567890 3.14159 2.71828",
    "   leading and trailing spaces   ",
    "UPPER CASE SHOUTING QUERY",
    "a",
    "The Eiffel Tower at night, lit up in gold.",
    "Symptoms of vitamin D deficiency include fatigue and bone pain.",
]


def parity_texts() -> list[str]:
    """About 60 varied texts, including several far longer than any model's max_length."""
    texts = list(_BASE)
    texts += [f"{a} {b}" for a, b in zip(_BASE[:20], reversed(_BASE[:20]))]
    long_unit = "Retrieval systems embed queries and documents into one vector space. "
    texts += [long_unit * n for n in (5, 20, 60, 120)]
    texts += [("word " * 300).strip(), "é" * 700, "🙂" * 200, " ".join(str(i) for i in range(600))]
    texts += [t.lower() for t in _BASE[1:13]]
    return texts


def parity_pairs() -> list[tuple[str, str]]:
    texts = parity_texts()
    return [(texts[i % 20], texts[(i * 7 + 3) % len(texts)]) for i in range(40)]


def _draw(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = (np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2) * 255).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(1, max(2, w // 2))), y0 + int(rng.integers(1, max(2, h // 2)))
        d.ellipse([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return img


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def parity_images() -> list[bytes]:
    """Encoded images of several sizes and modes, as a user would upload them."""
    cases = [
        ((224, 224), "RGB", "PNG"), ((640, 480), "RGB", "JPEG"), ((480, 640), "RGB", "PNG"),
        ((37, 91), "RGB", "PNG"), ((1000, 300), "RGB", "JPEG"), ((256, 256), "RGBA", "PNG"),
        ((300, 200), "L", "PNG"), ((320, 240), "P", "PNG"), ((200, 200), "L", "JPEG"),
        ((123, 456), "CMYK", "JPEG"), ((16, 16), "RGB", "PNG"), ((800, 600), "RGBA", "PNG"),
    ]
    return [_encode(_draw(size, i).convert(mode), fmt) for i, (size, mode, fmt) in enumerate(cases)]


def parity_inputs(role: str) -> tuple[list[Any], list[str]]:
    """The inputs for a tower role and a short description of them for the manifest."""
    if role == "text":
        t = parity_texts()
        return t, [f"{len(t)} texts, {min(map(len, t))}-{max(map(len, t))} chars, unicode/emoji/code, truncation cases"]
    if role == "image":
        return parity_images(), ["12 images 16x16-1000x300; RGB, RGBA, L, P, CMYK; PNG and JPEG"]
    if role == "cross":
        return parity_pairs(), ["40 (query, document) pairs incl. truncated ones"]
    raise ValueError(role)


def compare(onnx_out: np.ndarray, ref: np.ndarray, reference: str, inputs: Sequence[str],
            cosine_threshold: float, abs_threshold: float = 1e-4, scores: bool = False) -> Parity:
    """Row-wise cosine for embeddings; for scores (one column) the absolute difference is what matters."""
    onnx_out = np.asarray(onnx_out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64).reshape(onnx_out.shape)
    max_abs = float(np.max(np.abs(onnx_out - ref))) if onnx_out.size else 0.0
    if scores:
        return Parity(reference=reference, n_inputs=len(onnx_out), min_cosine=None, mean_cosine=None,
                      max_abs_diff=max_abs, threshold=abs_threshold, inputs=list(inputs))
    num = np.sum(onnx_out * ref, axis=1)
    den = np.linalg.norm(onnx_out, axis=1) * np.linalg.norm(ref, axis=1)
    cos = num / np.maximum(den, 1e-12)
    return Parity(reference=reference, n_inputs=len(onnx_out), min_cosine=float(cos.min()),
                  mean_cosine=float(cos.mean()), max_abs_diff=max_abs, threshold=cosine_threshold, inputs=list(inputs))


def passes(p: Parity) -> bool:
    if p.min_cosine is None:
        return p.max_abs_diff <= p.threshold
    return p.min_cosine >= p.threshold
