"""One encoder interface: ``Encoder`` gives the reference's vectors on any ``Backend``, in the caller's
order, and the backends name what they cannot run."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from mmsearch.encoders.backend import Backend
from mmsearch.encoders.encoder import Encoder, open_encoder
from mmsearch.encoders.local import LocalBackend
from mmsearch.errors import BadInput, NotFound
from mmsearch.modelrepo.local_model import LocalModel

TEXTS = ["a", "a much longer text about several different things at once", "mid length text", "b c", "x " * 40]


class Recording:
    """A Backend that runs another one and keeps each call's model, output and batch size."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.calls: list[tuple[str, str | None, int]] = []

    def infer(self, model, inputs, output=None):
        self.calls.append((model, output, len(next(iter(inputs.values())))))
        return self.inner.infer(model, inputs, output)

    def model_ready(self, model):
        return self.inner.model_ready(model)


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(i).random((40, 30, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_encoder_gives_the_reference_vectors_in_the_callers_order(clip_export):
    text_dir = clip_export["clip_text"]
    ref = LocalModel(text_dir).encode_texts(TEXTS, batch_size=len(TEXTS))
    one_by_one = np.concatenate([LocalModel(text_dir).encode_texts([t]) for t in TEXTS])
    rec = Recording(LocalBackend.for_model(text_dir))
    enc = Encoder(text_dir, rec)
    got = enc.encode_texts(TEXTS, batch_size=2)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(got, one_by_one, atol=1e-5)  # each row is its own text's, whatever the batching
    assert [c[2] for c in rec.calls] == [2, 2, 1] and {c[:2] for c in rec.calls} == {("clip_text", "embedding")}
    assert enc.dim == got.shape[1] and enc.modality == "text"


def test_image_encoder_on_the_local_backend_matches_the_reference(clip_export):
    image_dir = clip_export["clip_image"]
    images = [_png(i) for i in range(3)]
    enc = open_encoder(image_dir)
    np.testing.assert_allclose(enc.encode_images(images), LocalModel(image_dir).encode_images(images), atol=1e-5)
    pixels = [enc.preprocess_image(b, f"{i}.png") for i, b in enumerate(images)]
    np.testing.assert_allclose(enc.encode(pixels), enc.encode_images(images), atol=1e-5)
    with pytest.raises(BadInput, match="takes images, not text"):
        enc.encode_texts(["x"])


def test_backends_and_encoders_name_what_they_cannot_run(clip_export, cross_export, tmp_path):
    backend = LocalBackend.for_model(clip_export["clip_text"])
    assert backend.model_ready("clip_text") and not backend.model_ready("other")
    with pytest.raises(NotFound, match="'other' not found"):
        backend.infer("other", {"input_ids": np.zeros((1, 2), np.int64)})
    tensors = Encoder(clip_export["clip_text"], backend)._text(["hi"]).tensors  # type: ignore[misc]
    with pytest.raises(BadInput, match="no output 'score'"):
        backend.infer("clip_text", tensors, "score")
    with pytest.raises(BadInput, match="cross-encoder"):
        Encoder(cross_export, backend)
    with pytest.raises(NotFound, match="no mmsearch.json"):
        Encoder(tmp_path, backend)
    with pytest.raises(BadInput, match="empty batch"):
        Encoder(clip_export["clip_text"], backend).encode([])


class _Slow:
    """A session stand-in that takes a while and counts how many run at once."""

    running = peak = 0

    def __init__(self, inner: LocalModel):
        self.inner, self.manifest = inner, inner.manifest

    def run(self, feeds, output=None):
        with _LOCK:
            _Slow.running += 1
            _Slow.peak = max(_Slow.peak, _Slow.running)
        try:
            time.sleep(0.05)
            return self.inner.run(feeds, output)
        finally:
            with _LOCK:
                _Slow.running -= 1


_LOCK = threading.Lock()


def test_a_session_pool_runs_chunks_side_by_side_and_keeps_the_callers_order(clip_export):
    from mmsearch.encoders.local import SessionPool

    text_dir, image_dir = clip_export["clip_text"], clip_export["clip_image"]
    texts = [f"text {i} " + "word " * (i % 7) for i in range(40)]
    ref = LocalModel(text_dir).encode_texts(texts)
    _Slow.running = _Slow.peak = 0
    enc = Encoder(text_dir, LocalBackend({"clip_text": SessionPool([_Slow(LocalModel(text_dir, threads=1)) for _ in range(2)])}))
    assert enc.parallelism == 2
    np.testing.assert_allclose(enc.encode_texts(texts, batch_size=4), ref, atol=1e-5)
    assert _Slow.peak == 2  # two chunks ran at once, never more than the sessions
    images = [_png(i) for i in range(5)]
    ienc = Encoder(image_dir, LocalBackend({"clip_image": SessionPool([LocalModel(image_dir, threads=1) for _ in range(2)])}))
    pixels = [ienc.preprocess_image(b, f"{i}.png") for i, b in enumerate(images)]
    want = LocalModel(image_dir).encode_images(images)
    np.testing.assert_allclose(ienc.encode(pixels), want, atol=1e-5)  # a batch of pixels split across the sessions
    np.testing.assert_allclose(ienc.encode_images(images, batch_size=3), want, atol=1e-5)
