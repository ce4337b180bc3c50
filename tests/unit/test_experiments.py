import itertools
from pathlib import Path

import pytest

from mmsearch.errors import BadInput
from mmsearch.experiments.spec import BUCKETS, SCENES, Layer, assign, bucket, parse_experiments

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
        arms, _params, _ = assign(scene, f"user-{i}")
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
    _arms, params, _ = assign(scene, "alice", {"model": "finetuned", "rerank": "wide"})
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


# --- buckets ----------------------------------------------------------------------------------


def test_bucket_is_deterministic_and_in_range():
    values = [bucket("salt-1", f"user-{i}") for i in range(5000)]
    assert values == [bucket("salt-1", f"user-{i}") for i in range(5000)]
    assert all(isinstance(v, int) and 0 <= v < BUCKETS for v in values)
    assert min(values) < 100 and max(values) > BUCKETS - 100  # the whole range is used
    assert len(set(values)) > 3000  # not a handful of values


def test_bucket_depends_on_salt_and_separates_salt_from_user():
    users = [f"u{i}" for i in range(200)]
    same = sum(bucket("a", u) == bucket("b", u) for u in users)
    assert same < 5  # another salt reshuffles users
    # salt + user must not be a plain concatenation: ("ab", "c") and ("a", "bc") are different requests
    assert bucket("ab", "c") != bucket("a", "bc")


def _layer(*traffic: float) -> Layer:
    return Layer(name="l", salt="s", arms=[{"name": f"a{i}", "traffic": t} for i, t in enumerate(traffic)])


def test_arm_ranges_are_consecutive_and_proportional():
    layer = _layer(25, 50, 25)
    assert layer.arm_for_bucket(0).name == "a0"
    assert layer.arm_for_bucket(2499).name == "a0"
    assert layer.arm_for_bucket(2500).name == "a1"
    assert layer.arm_for_bucket(7499).name == "a1"
    assert layer.arm_for_bucket(7500).name == "a2"
    assert layer.arm_for_bucket(BUCKETS - 1).name == "a2"


def test_zero_traffic_arm_is_never_assigned_but_can_be_forced():
    layer = _layer(0, 100, 0)
    assert {layer.arm_for_bucket(b).name for b in range(BUCKETS)} == {"a1"}
    scene = parse_experiments(
        "scenes:\n  text2text:\n    defaults: {embed_model: m, index: i}\n    layers:\n"
        "      - {name: l, salt: s, arms: [{name: dark, traffic: 0, top_k: 3}, {name: lit, traffic: 100}]}\n"
    ).scenes["text2text"]
    assert all(assign(scene, f"u{i}")[0]["l"] == "lit" for i in range(300))
    arms, params, _ = assign(scene, "u1", {"l": "dark"})
    assert arms == {"l": "dark"} and params.top_k == 3


def test_fractional_traffic_summing_to_100_covers_every_bucket():
    layer = _layer(33.33, 33.33, 33.34)
    counts = {}
    for b in range(BUCKETS):
        name = layer.arm_for_bucket(b).name
        counts[name] = counts.get(name, 0) + 1
    assert sum(counts.values()) == BUCKETS
    assert all(abs(counts[f"a{i}"] - 3333) <= 2 for i in range(3))


@pytest.mark.parametrize("split", [(10, 90), (1, 99), (50, 50), (20, 30, 50)])
def test_traffic_split_over_many_users_matches_the_config(split):
    arms = ", ".join(f"{{name: a{i}, traffic: {t}}}" for i, t in enumerate(split))
    scene = parse_experiments(
        f"scenes:\n  text2text:\n    defaults: {{embed_model: m, index: i}}\n    layers:\n"
        f"      - {{name: l, salt: split-test, arms: [{arms}]}}\n"
    ).scenes["text2text"]
    n = 20_000
    counts = {f"a{i}": 0 for i in range(len(split))}
    for i in range(n):
        counts[assign(scene, f"user-{i}")[0]["l"]] += 1
    for i, t in enumerate(split):
        assert abs(counts[f"a{i}"] / n - t / 100) < 0.015, counts


def test_assign_returns_each_layers_bucket():
    scene = parse_experiments(CONFIG).scenes["text2image"]
    _, _, buckets = assign(scene, "bob")
    assert buckets == {"model": bucket("model-2026-11", "bob"), "rerank": bucket("rerank-2026-11", "bob")}


# --- merging and forcing ----------------------------------------------------------------------


def test_later_layers_override_earlier_ones_and_unset_fields_keep_defaults():
    scene = parse_experiments(
        "scenes:\n  text2text:\n    defaults: {embed_model: m0, index: i0, top_k: 20, recall_top_k: 100}\n    layers:\n"
        "      - {name: first, salt: s1, arms: [{name: x, traffic: 100, top_k: 5, index: i1}]}\n"
        "      - {name: second, salt: s2, arms: [{name: y, traffic: 100, top_k: 7}]}\n"
    ).scenes["text2text"]
    arms, params, _ = assign(scene, "anyone")
    assert arms == {"first": "x", "second": "y"}
    assert params.top_k == 7  # the later layer wins
    assert params.index == "i1"  # set only by the first layer
    assert params.embed_model == "m0" and params.recall_top_k == 100  # defaults where no arm sets them
    assert params.rerank is None


def test_assign_does_not_mutate_the_scene_defaults():
    scene = parse_experiments(CONFIG).scenes["text2image"]
    before = scene.defaults.model_dump()
    assign(scene, "alice", {"model": "finetuned", "rerank": "wide"})
    assert scene.defaults.model_dump() == before


def test_forcing_one_layer_leaves_the_other_to_its_bucket():
    scene = parse_experiments(CONFIG).scenes["text2image"]
    for uid in ("u1", "u2", "u3", "u4"):
        free_arms, _, _ = assign(scene, uid)
        arms, _, _ = assign(scene, uid, {"model": "base"})
        assert arms["model"] == "base" and arms["rerank"] == free_arms["rerank"]


def test_force_on_a_scene_without_layers_names_none():
    scene = parse_experiments("scenes:\n  text2text:\n    defaults: {embed_model: m, index: i}\n").scenes["text2text"]
    assert assign(scene, "u")[0] == {}
    with pytest.raises(BadInput, match=r"unknown layer 'model' \(layers: none\)"):
        assign(scene, "u", {"model": "base"})


def test_bad_force_lists_the_valid_choices():
    scene = parse_experiments(CONFIG).scenes["text2image"]
    with pytest.raises(BadInput, match=r"\(arms: base, finetuned\)"):
        assign(scene, "u", {"model": "Base"})  # case matters
    with pytest.raises(BadInput, match=r"\(layers: model, rerank\)"):
        assign(scene, "u", {"rerank": "none", "colour": "x"})


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("scenes: {}\n", ["scenes"]),
        ("{}\n", ["scenes", "Field required"]),
        ("", ["expected a mapping"]),
        ("scenes:\n  text2text:\n    defaults: {embed_model: m, index: i}\nextra: 1\n", ["extra"]),
        (CONFIG.replace("traffic: 30", "traffic: 130").replace("traffic: 70", "traffic: -30"),
         ["scenes.text2image.layers.0.arms.0.traffic", "scenes.text2image.layers.0.arms.1.traffic"]),
        (CONFIG.replace("rerank: none}", "rerank: bm25}"), ["scenes.text2image.defaults.rerank"]),
        (CONFIG.replace("name: rerank", "name: model"), ["duplicate layer names"]),
        (CONFIG.replace("{name: none, traffic: 50}", "{name: '', traffic: 50}"), ["layers.1.arms.0.name"]),
        (CONFIG.replace("          - {name: wide, traffic: 50, recall_top_k: 300}\n", "")
         .replace("{name: none, traffic: 50}", "{name: none, traffic: 50.5}"), ["layer rerank", "sums to 50.5"]),
        (CONFIG.replace(", index: images}", "}"),
         ["arm model/base", "no index"]),
        ("scenes:\n  text2text:\n    layers:\n      - {name: l, salt: s, arms: []}\n    defaults: {embed_model: m, index: i}\n",
         ["layers.0.arms"]),
    ],
)
def test_validation_messages_name_the_problem(text, fragments):
    with pytest.raises(BadInput) as e:
        parse_experiments(text, "consul mmsearch/experiments")
    msg = e.value.message
    assert msg.startswith("consul mmsearch/experiments: ")  # the origin is named
    for f in fragments:
        assert f in msg, msg


def test_index_from_another_layer_satisfies_every_arm():
    # one layer picks the model, another picks the index in all its arms: every combination is complete
    text = (
        "scenes:\n  text2text:\n    layers:\n"
        "      - {name: m, salt: s1, arms: [{name: a, traffic: 50, embed_model: m1}, {name: b, traffic: 50, embed_model: m2}]}\n"
        "      - {name: i, salt: s2, arms: [{name: x, traffic: 100, index: idx}]}\n"
    )
    scene = parse_experiments(text).scenes["text2text"]
    _, params, _ = assign(scene, "u")
    assert params.index == "idx" and params.embed_model in ("m1", "m2")
    # but if one arm of the index layer leaves it unset, users in arm y would get no index
    broken = text.replace("[{name: x, traffic: 100, index: idx}]", "[{name: x, traffic: 50, index: idx}, {name: y, traffic: 50}]")
    with pytest.raises(BadInput, match="arm m/a: no index in it or the defaults"):
        parse_experiments(broken)


@pytest.mark.parametrize("scene", SCENES)
def test_every_known_scene_is_accepted(scene):
    exp = parse_experiments(f"scenes:\n  {scene}:\n    defaults: {{embed_model: m, index: i}}\n")
    assert list(exp.scenes) == [scene]


def test_unknown_scenes_are_all_listed_with_the_known_ones():
    text = ("scenes:\n  text2text:\n    defaults: {embed_model: m, index: i}\n"
            "  video2text:\n    defaults: {embed_model: m, index: i}\n  Text2Text:\n    defaults: {embed_model: m, index: i}\n")
    with pytest.raises(BadInput) as e:
        parse_experiments(text)
    assert "unknown scenes ['Text2Text', 'video2text']" in e.value.message
    assert "known: text2text, text2image, image2image" in e.value.message


def test_bytes_and_deploy_file_parse():
    exp = parse_experiments(CONFIG.encode("utf-8"))
    assert list(exp.scenes) == ["text2image"]
    deploy = Path(__file__).resolve().parents[2] / "deploy" / "experiments.yaml"
    shipped = parse_experiments(deploy.read_text(), str(deploy))  # the shipped config must stay valid
    assert set(shipped.scenes) <= set(SCENES)
