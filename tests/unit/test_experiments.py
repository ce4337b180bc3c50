import itertools

import pytest

from mmsearch.errors import BadInput
from mmsearch.experiments import assign, parse_experiments

CONFIG = """
scenes:
  text2image:
    layers:
      - name: model
        salt: model-2026-11
        arms:
          - {name: base, traffic: 30, embed_model: dual_text_base, index: images}
          - {name: finetuned, traffic: 70, embed_model: dual_text_ft, index: images_ft}
      - name: rerank
        salt: rerank-2026-11
        arms:
          - {name: none, traffic: 50}
          - {name: wide, traffic: 50, recall_top_k: 300}
    defaults: {recall_top_k: 100, top_k: 20, rerank: none}
"""


def test_split_proportions_and_layer_independence():
    scene = parse_experiments(CONFIG).scenes["text2image"]
    n = 10_000
    counts = {}
    for i in range(n):
        arms, params, _ = assign(scene, f"user-{i}")
        counts[(arms["model"], arms["rerank"])] = counts.get((arms["model"], arms["rerank"]), 0) + 1
    model = {m: sum(v for (a, _), v in counts.items() if a == m) / n for m in ("base", "finetuned")}
    rerank = {r: sum(v for (_, b), v in counts.items() if b == r) / n for r in ("none", "wide")}
    assert abs(model["base"] - 0.30) <= 0.02 and abs(model["finetuned"] - 0.70) <= 0.02
    assert abs(rerank["none"] - 0.50) <= 0.02
    for m, r in itertools.product(model, rerank):  # independent layers: joint = product of marginals
        assert abs(counts[(m, r)] / n - model[m] * rerank[r]) <= 0.02


def test_assignment_is_deterministic_and_params_merge():
    scene = parse_experiments(CONFIG).scenes["text2image"]
    a1, p1, b1 = assign(scene, "alice")
    a2, p2, b2 = assign(scene, "alice")
    assert (a1, p1, b1) == (a2, p2, b2)
    arms, params, _ = assign(scene, "alice", {"model": "finetuned", "rerank": "wide"})
    assert params.embed_model == "dual_text_ft" and params.index == "images_ft"
    assert params.recall_top_k == 300 and params.top_k == 20


@pytest.mark.parametrize("force, fragment", [({"model": "nope"}, "has no arm 'nope'"), ({"colour": "x"}, "unknown layer 'colour'")])
def test_bad_force_named(force, fragment):
    scene = parse_experiments(CONFIG).scenes["text2image"]
    with pytest.raises(BadInput, match=fragment):
        assign(scene, "u", force)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (CONFIG.replace("traffic: 70", "traffic: 60"), "sums to 90"),
        (CONFIG.replace("text2image", "text2video"), "unknown scenes"),
        (CONFIG.replace("name: finetuned", "name: base"), "duplicate arm names"),
        (CONFIG.replace("salt: model-2026-11", "salt: ''"), "salt"),
        ("scenes: [1, 2", "not valid YAML"),
        ("- a\n", "expected a mapping"),
        (CONFIG.replace("top_k: 20", "top_k: 0"), "top_k"),
        (CONFIG.replace("recall_top_k: 300", "recal_top_k: 300"), "recal_top_k"),
        ("scenes:\n  text2text:\n    defaults: {top_k: 5}\n", "needs embed_model and index"),
    ],
)
def test_invalid_configs_rejected_with_reason(text, fragment):
    with pytest.raises(BadInput, match=fragment):
        parse_experiments(text)
