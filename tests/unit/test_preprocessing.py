import io

import numpy as np
import pytest
from PIL import Image
from tiny_models import minilm_dir, write_clip_tokenizer

from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import ImagePreprocessing
from mmsearch.modelrepo.preprocessing import MAX_IMAGE_PIXELS, ImagePreprocessor, TextPreprocessor, encode_by_length, load_image
from mmsearch.offline.parity import parity_images

CLIP_SPEC = ImagePreprocessing(
    resize_shortest_edge=224, crop_size=(224, 224), resample="bicubic",
    mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
)


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("spec", [CLIP_SPEC, CLIP_SPEC.model_copy(update=dict(resize_shortest_edge=256, resample="bilinear"))])
def test_pixels_equal_hugging_face_clip_image_processor(spec, tmp_path):
    from mmsearch.offline.models.clip import image_spec_from_processor, pil_image_processor_class
    from mmsearch.offline.models.dual import write_image_processor_config

    hf = pil_image_processor_class()(
        size={"shortest_edge": spec.resize_shortest_edge}, crop_size={"height": 224, "width": 224},
        resample={"bicubic": 3, "bilinear": 2}[spec.resample], image_mean=list(spec.mean), image_std=list(spec.std),
    )
    ours = ImagePreprocessor(spec)
    for i, data in enumerate(parity_images()):
        ref = hf(images=[Image.open(io.BytesIO(data))], return_tensors="np")["pixel_values"][0]
        got = ours.one(data)
        assert got.shape == ref.shape == (3, 224, 224)
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=f"image #{i}")
    # export writes the spec as preprocessor_config.json: Hugging Face must read back the same spec and,
    # from that file alone, produce the same pixels as our preprocessor
    write_image_processor_config(spec, tmp_path)
    written = pil_image_processor_class().from_pretrained(str(tmp_path))
    assert image_spec_from_processor(written) == spec
    data = parity_images()[0]
    np.testing.assert_allclose(written(images=[Image.open(io.BytesIO(data))], return_tensors="np")["pixel_values"][0],
                               ours.one(data), atol=1e-5)


def test_exif_orientation_is_honoured():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    loaded = load_image(_png(img, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (20, 40)


def test_modes_become_rgb_and_animations_use_first_frame():
    for mode in ("RGBA", "L", "P", "LA", "1"):
        assert load_image(_png(Image.new(mode, (8, 8)))).mode == "RGB"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, _g, b = load_image(buf.getvalue()).getpixel((4, 4))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty image data"),
        (b"this is not an image", "not a readable image"),
        (_png(Image.new("RGB", (64, 64)))[:60], "corrupt or truncated|not a readable image"),
        (12345, "expected image bytes"),
    ],
)
def test_bad_images_named(data, fragment):
    with pytest.raises(BadInput, match=fragment):
        ImagePreprocessor(CLIP_SPEC)([data])


def test_decompression_bomb_refused_before_decoding():
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 100
    # A tiny PNG header claiming a huge canvas: refused from its size, never decoded.
    data = _png(Image.new("1", (side, side)))
    with pytest.raises(BadInput, match="pixel limit"):
        load_image(data, "upload")


def test_empty_image_batch():
    with pytest.raises(BadInput, match="empty batch"):
        ImagePreprocessor(CLIP_SPEC)([])


def test_text_truncation_flag_and_token_type_ids():
    tp = TextPreprocessor(minilm_dir(), 16, ["input_ids", "attention_mask", "token_type_ids"])
    batch = tp(["short", "word " * 40])
    assert batch.truncated.tolist() == [False, True]
    assert batch.tensors["input_ids"].shape == (2, 16) and batch.tensors["input_ids"].dtype == np.int64
    assert not batch.tensors["token_type_ids"].any()
    assert batch.tensors["attention_mask"][0].sum() == 3  # [CLS] short [SEP]


@pytest.mark.parametrize("texts, fragment", [([], "empty batch"), (["ok", ""], "text #1: empty"),
                                              (["ok", 3], "text #1: expected a string"), ("abc", "list of strings")])
def test_bad_texts_named(texts, fragment):
    tp = TextPreprocessor(minilm_dir(), 16, ["input_ids", "attention_mask"])
    with pytest.raises(BadInput, match=fragment):
        tp(texts)


BY_LENGTH_TEXTS = ["short", "word " * 40, "a b c", "ünïcode 日本語 text", "x", "tabs\tand  spaces", "word " * 9, "[SEP] as text"]


def _minilm_with(dest, **settings):
    import json
    import shutil

    shutil.copytree(minilm_dir(), dest)
    cfg = json.loads((dest / "tokenizer_config.json").read_text())
    (dest / "tokenizer_config.json").write_text(json.dumps({**cfg, **settings}))
    return dest


def _clip(dest):
    write_clip_tokenizer(dest)
    return dest


@pytest.mark.parametrize("tokenizer", ["wordpiece", "clip_bpe", "left_padding", "split_special_tokens"])
def test_by_length_chunks_are_what_call_gives_longest_first(tokenizer, tmp_path):
    """A build tokenizes a batch once and cuts it by token count; each chunk must still be exactly the tensors
    the per-chunk call gives (same ids, truncation, padding id and width), whatever the tokenizer."""
    tok_dir = {"wordpiece": minilm_dir, "clip_bpe": lambda: _clip(tmp_path / "clip"),
               "left_padding": lambda: _minilm_with(tmp_path / "left", padding_side="left"),
               "split_special_tokens": lambda: _minilm_with(tmp_path / "split", split_special_tokens=True)}[tokenizer]()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if tokenizer == "wordpiece" else [])
    tp = TextPreprocessor(tok_dir, 16, names)
    order, chunks = tp.by_length(BY_LENGTH_TEXTS, 3)
    assert sorted(order.tolist()) == list(range(len(BY_LENGTH_TEXTS)))
    assert [len(c["input_ids"]) for c in chunks] == [3, 3, 2]
    rows = 0
    for chunk in chunks:
        texts = [BY_LENGTH_TEXTS[j] for j in order[rows : rows + len(chunk["input_ids"])]]
        rows += len(texts)
        want = tp(texts).tensors
        assert chunk.keys() == want.keys()
        for name in names:
            np.testing.assert_array_equal(chunk[name], want[name], err_msg=f"{tokenizer} {name} {texts}")
    if tokenizer != "left_padding":  # by tokens, longest first: the truncated text leads
        lengths = [int(c["attention_mask"][r].sum()) for c in chunks for r in range(len(c["attention_mask"]))]
        assert lengths == sorted(lengths, reverse=True) and lengths[0] == 16 and order[0] == 1


def test_encode_by_length_returns_rows_in_the_callers_order():
    tp = TextPreprocessor(minilm_dir(), 16, ["input_ids", "attention_mask"])

    def run(tensors):  # a "vector" that names the text: its token ids summed, checked against the text's own
        return tensors["input_ids"].sum(axis=1, keepdims=True).astype(np.float32)

    got = encode_by_length(BY_LENGTH_TEXTS, 2, run, tp)
    want = np.array([[tp([t]).tensors["input_ids"].sum()] for t in BY_LENGTH_TEXTS], np.float32)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(BadInput, match="text #1: expected a string"):
        encode_by_length(["ok", 3], 2, run, tp)


def test_by_length_names_a_model_input_the_tokenizer_cannot_fill():
    tp = TextPreprocessor(minilm_dir(), 16, ["input_ids", "position_ids"])
    with pytest.raises(BadInput, match="position_ids"):
        tp.by_length(["a text"], 4)
