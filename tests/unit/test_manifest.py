import json
from pathlib import Path

import pytest

from mmsearch.errors import BadInput, NotFound
from mmsearch.modelrepo.manifest import (
    ImagePreprocessing,
    Manifest,
    TensorSpec,
    TextPreprocessing,
    read_manifest,
    write_manifest,
)


def text_manifest(**kw) -> Manifest:
    base = dict(
        name="m", kind="text_encoder",
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1]),
                TensorSpec(name="attention_mask", dtype="int64", shape=[-1, -1])],
        outputs=[TensorSpec(name="embedding", dtype="float32", shape=[-1, 8])],
        embedding_dim=8, normalized=True, preprocessing=TextPreprocessing(max_length=16), max_batch_size=4,
    )
    base.update(kw)
    return Manifest(**base)


def test_roundtrip(tmp_path: Path):
    m = text_manifest(partner="m_image", versions={"torch": "2.13.0"})
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m
    assert not list(tmp_path.glob(".mmsearch.*")), "temporary file left behind"


@pytest.mark.parametrize(
    "change, fragment",
    [
        (dict(embedding_dim=9), "embedding_dim"),
        (dict(outputs=[TensorSpec(name="emb", dtype="float32", shape=[-1, 8])]), "named embedding"),
        (dict(inputs=[TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1])]), "attention_mask"),
        (dict(kind="image_encoder"), "image preprocessing"),
        (dict(name="../escape"), "name"),
        (dict(max_batch_size=0), "max_batch_size"),
    ],
)
def test_invalid_manifests_rejected(change, fragment):
    with pytest.raises(ValueError, match=fragment):
        text_manifest(**change)


def test_image_manifest_requires_pixel_values_only():
    pre = ImagePreprocessing(resize_shortest_edge=32, crop_size=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError, match="pixel_values"):
        text_manifest(kind="image_encoder", preprocessing=pre)


def test_read_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(NotFound, match="not an mmsearch model folder"):
        read_manifest(tmp_path)
    (tmp_path / "mmsearch.json").write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        read_manifest(tmp_path)
    data = json.loads(text_manifest().model_dump_json())
    data["kind"] = "video_encoder"
    (tmp_path / "mmsearch.json").write_text(json.dumps(data))
    with pytest.raises(BadInput, match="kind"):
        read_manifest(tmp_path)
