"""Export of every model family: ONNX Runtime against the PyTorch source, manifests, Triton configs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.modelrepo.manifest import read_manifest
from mmsearch.modelrepo.triton_config import read_model_config
from mmsearch.modelrepo.validate import validate_model_dir

# Not the export's own parity set: an independent, varied set of 60 sentences.
SENTENCES = [
    "What is the capital of Australia?", "Canberra is the capital city of Australia.",
    "best budget laptop for students 2026", "How to bake sourdough bread at home",
    "The patient presented with acute chest pain radiating to the left arm.",
    "Je voudrais réserver une table pour deux personnes.", "Wie spät ist es?", "北京烤鸭很好吃",
    "¡Hola! ¿Cómo estás?", "Ελληνικά κείμενα", "עברית", "हिन्दी पाठ", "🍕🍔🍟", "👩‍👩‍👧‍👦 family emoji sequence",
    "a", "I", "ok", "42", "3.1415926535", "user@example.com", "https://example.com/path?q=1&x=2",
    "<html><body>markup</body></html>", "{\"json\": [1, 2, 3]}", "SELECT * FROM t;", "tab\tseparated\tvalues",
    "new\nline\nseparated", "ALL CAPS TITLE", "mIxEd CaSe", "repeated repeated repeated repeated",
    "The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs.",
    "An apple a day keeps the doctor away.", "Machine learning models need good data.",
    "The stock market fell sharply on Monday.", "Photosynthesis converts light into chemical energy.",
    "She sells seashells by the seashore.", "Water boils at 100 degrees Celsius at sea level.",
    "A red bicycle leaning against a brick wall", "two dogs playing in the snow", "sunset over the ocean",
    "How do vaccines train the immune system?", "Recipe: mix flour, water and salt; knead for ten minutes.",
    "Terms and conditions apply.", "Error 404: page not found", "lorem ipsum dolor sit amet",
] + [
    f"Long document sentence number {i} about search relevance and ranking quality. " * (10 * i) for i in range(1, 9)
] + ["x" * 3000, "ü" * 1500, " ".join(["token"] * 1000), "🙂 " * 400, "a b c " * 500, "end."]


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_minilm_matches_sentence_transformers(minilm_export: Path):
    from sentence_transformers import SentenceTransformer
    from tiny_models import minilm_dir

    assert len(SENTENCES) >= 50 and max(map(len, SENTENCES)) > 5000
    ref = SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    got = LocalModel(minilm_export).encode_texts(SENTENCES, batch_size=8)
    assert got.shape == (len(SENTENCES), 384)
    cos = cos_rows(got, ref)
    assert cos.min() >= 0.9999, f"worst sentence: {SENTENCES[int(cos.argmin())][:60]!r} cos={cos.min()}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # L2 inside the graph

    m = validate_model_dir(minilm_export)
    assert m.kind == "text_encoder" and m.embedding_dim == 384 and m.preprocessing.max_length == 256
    assert m.parity.min_cosine >= 0.9999 and m.parity.n_inputs >= 50
    assert m.parity.provider == "CPUExecutionProvider" and m.serving == {"instance_kind": "KIND_CPU"}  # where figures and serving come from
    assert {"torch", "transformers", "onnxruntime", "onnx"} <= set(m.versions)
    cfg = read_model_config(minilm_export / "config.pbtxt")
    assert cfg.backend == "onnxruntime" and [i.name for i in cfg.input] == ["input_ids", "attention_mask"]
    assert list(cfg.output[0].dims) == [384]
    assert (minilm_export / "preprocess" / "tokenizer.json").is_file()


def test_onnx_axes_are_dynamic(minilm_export: Path):
    graph = onnx.load(str(minilm_export / "1" / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    m = LocalModel(minilm_export)
    assert m.encode_texts(["one"] * 3, batch_size=3).shape == (3, 384)  # batch of 3, 3 tokens: not the traced shape


def _images() -> list[bytes]:
    out = []
    for i, (size, mode) in enumerate([((50, 70), "RGB"), ((300, 120), "RGBA"), ((64, 64), "L"), ((90, 90), "P")]):
        arr = (np.random.default_rng(i).random((size[1], size[0], 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def test_tiny_clip_both_towers(clip_export: dict[str, Path], tiny_clip: Path):
    from transformers import AutoTokenizer, CLIPModel

    from mmsearch.offline.models.clip import pil_image_processor_class

    text_dir, image_dir = clip_export["clip_text"], clip_export["clip_image"]
    tm, im = validate_model_dir(text_dir), validate_model_dir(image_dir)
    assert (tm.partner, im.partner) == ("clip_image", "clip_text")
    assert tm.embedding_dim == im.embedding_dim == 16 and tm.preprocessing.max_length == 77

    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_clip))
    texts = SENTENCES[:20] + [SENTENCES[-3]]  # the last one is cut at 77 tokens
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        ref = model.get_text_features(**enc).pooler_output.numpy()
        pixels = pil_image_processor_class().from_pretrained(str(tiny_clip))(
            images=[Image.open(io.BytesIO(b)).convert("RGB") for b in _images()], return_tensors="pt")["pixel_values"]
        ref_img = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    assert cos_rows(LocalModel(text_dir).encode_texts(texts), ref).min() >= 0.9999
    assert cos_rows(LocalModel(image_dir).encode_images(_images()), ref_img).min() >= 0.9999
    assert read_model_config(image_dir / "config.pbtxt").input[0].dims == [3, 32, 32]


def test_tiny_dual_encoder_roundtrip_and_parity(dual_export: dict[str, Path], tiny_dual: Path):
    from mmsearch.modelrepo.preprocessing import ImagePreprocessor
    from mmsearch.offline.models.dual import DualEncoder

    model = DualEncoder.load(tiny_dual)
    assert model.dim == 24 and not any(p.requires_grad for p in model.image.parameters())  # LiT: image tower locked
    im = validate_model_dir(dual_export["dual_image"])
    assert im.partner == "dual_text" and im.preprocessing.crop_size == (224, 224)
    with torch.no_grad():
        ref = model.encode_image(torch.from_numpy(ImagePreprocessor(im.preprocessing)(_images()))).numpy()
        enc = model.text.tokenizer(SENTENCES[:10], padding=True, truncation=True, max_length=64, return_tensors="pt")
        ref_t = model.encode_text(enc["input_ids"], enc["attention_mask"]).numpy()
    assert cos_rows(LocalModel(dual_export["dual_image"]).encode_images(_images()), ref).min() >= 0.9999
    assert cos_rows(LocalModel(dual_export["dual_text"]).encode_texts(SENTENCES[:10]), ref_t).min() >= 0.9999
    assert json.loads((dual_export["dual_image"] / "preprocess" / "preprocessor_config.json").read_text())["crop_size"]


def test_tiny_cross_encoder_scores(cross_export: Path, tiny_cross: Path):
    from sentence_transformers import CrossEncoder

    m = validate_model_dir(cross_export)
    assert m.kind == "cross_encoder" and m.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in m.outputs] == ["score"] and m.outputs[0].shape == [-1, 1]
    queries, docs = SENTENCES[:12], SENTENCES[12:24]
    ref = CrossEncoder(str(tiny_cross), device="cpu").predict(list(zip(queries, docs)))
    got = LocalModel(cross_export).score_pairs(queries, docs)
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("mode,method,ops", [
    ("int8", "dynamic-int8", {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}),
    ("int8-block", "block-int8", {"MatMulNBits"}),
])
def test_int8_quantisation_recorded(tmp_path: Path, tiny_text: Path, mode: str, method: str, ops: set[str]):
    from mmsearch.offline.export import ExportOptions, export_model
    from mmsearch.offline.quantize import mode_of

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"query": q, "positive": d}) for q, d in zip(SENTENCES[:10], SENTENCES[10:20])))
    (r,) = export_model(tiny_text, tmp_path / "repo", "tiny_int8", options=ExportOptions(quantize=mode, eval_pairs=pairs))
    q = read_manifest(r.path).quantization
    assert q is not None and q.method == method and mode_of(q.method) == mode
    assert q.fp32_parity.min_cosine >= 0.9999
    assert 0 < q.int8_vs_fp32["mean_cosine"] <= 1.0 + 1e-6 and 0 <= q.int8_vs_fp32["neighbour_overlap@10"] <= 1
    assert q.speed["int8_texts_per_s_b1"] > 0 and q.speed["int8_speedup_b32"] > 0
    assert q.labelled_eval["n"] == 10 and set(q.labelled_eval["fp32"]) == set(q.labelled_eval["int8"])
    graph = onnx.load(str(r.path / "1" / "model.onnx")).graph
    assert {n.op_type for n in graph.node} & ops
    if mode == "int8-block":  # every projection quantized, faithfully
        weights = {i.name for i in graph.initializer}
        assert not [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & weights]
        assert q.int8_vs_fp32["mean_cosine"] >= 0.999
    assert not list(r.path.glob("*.tmp"))
