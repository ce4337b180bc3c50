"""Editing the experiments YAML: the flywheel's arm (round-trip, comments kept, validated, idempotent,
traffic taken from the control arm, check-and-set against Consul) and promoting a winning arm."""

from __future__ import annotations

import pytest
from consul_standin import ConsulStandIn

from mmsearch.errors import AlreadyExists, BadInput, NotFound
from mmsearch.experiments.edit import add_arm, add_arm_to_consul, add_arm_to_file, promote_arm
from mmsearch.experiments.spec import parse_experiments

BASE = """# the team's notes survive
scenes:
  text2text:
    layers:
      - name: recall
        salt: r-1
        arms:
          - {name: dense, traffic: 100}  # inline comment
    defaults: {embed_model: minilm, index: texts}
"""
NEW = {"embed_model": "minilm_fw1", "index": "texts_fw1"}


def layer(text: str, name: str = "flywheel") -> dict:
    exp = parse_experiments(text, "t")
    return {a.name: a for lay in exp.scenes["text2text"].layers if lay.name == name for a in lay.arms}


def test_a_new_layer_with_control_and_the_arm_keeps_comments():
    out, changed = add_arm(BASE, "text2text", "flywheel", "minilm_fw1", NEW, 10)
    assert changed and "# the team's notes survive" in out and "# inline comment" in out
    arms = layer(out)
    assert arms["control"].traffic == 90 and arms["minilm_fw1"].traffic == 10
    assert arms["minilm_fw1"].embed_model == "minilm_fw1" and arms["control"].embed_model is None
    out2, changed2 = add_arm(out, "text2text", "flywheel", "minilm_fw1", NEW, 10)
    assert not changed2 and out2 == out  # idempotent
    out3, _ = add_arm(out, "text2text", "flywheel", "minilm_fw2", {**NEW, "embed_model": "minilm_fw2"}, 30)
    assert layer(out3)["control"].traffic == 60 and layer(out3)["minilm_fw1"].traffic == 10


def test_refusals_name_the_problem():
    out, _ = add_arm(BASE, "text2text", "flywheel", "minilm_fw1", NEW, 10)
    with pytest.raises(AlreadyExists, match="other settings"):
        add_arm(out, "text2text", "flywheel", "minilm_fw1", {**NEW, "index": "other"}, 10)
    with pytest.raises(BadInput, match="less than the 95"):
        add_arm(out, "text2text", "flywheel", "x", NEW, 95)
    with pytest.raises(BadInput, match="no 'control' arm"):
        add_arm(BASE, "text2text", "recall", "x", NEW, 10)
    with pytest.raises(NotFound, match="scene 'image2image'"):
        add_arm(BASE, "image2image", "flywheel", "x", NEW, 10)
    with pytest.raises(BadInput, match="between 0 and 100"):
        add_arm(BASE, "text2text", "flywheel", "x", NEW, 0)
    with pytest.raises(BadInput):  # an arm the services would refuse is never written
        add_arm(BASE, "text2text", "flywheel", "x", {"recall_top_k": -1}, 10)
    with pytest.raises(BadInput):
        add_arm("scenes: [", "text2text", "flywheel", "x", NEW, 10)


def test_the_file_is_replaced_whole(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(BASE)
    assert add_arm_to_file(path, "text2text", "flywheel", "minilm_fw1", NEW, 10)
    assert not add_arm_to_file(path, "text2text", "flywheel", "minilm_fw1", NEW, 10)
    assert layer(path.read_text())["minilm_fw1"].traffic == 10 and [p.name for p in tmp_path.iterdir()] == ["experiments.yaml"]


def test_consul_check_and_set():
    consul = ConsulStandIn()
    try:
        with pytest.raises(NotFound, match="push one first"):
            add_arm_to_consul(consul.addr, "k", "", "text2text", "flywheel", "a", NEW, 10)
        consul.put("k", BASE)
        assert add_arm_to_consul(consul.addr, "k", "", "text2text", "flywheel", "minilm_fw1", NEW, 10)
        assert layer(consul.kv["k"][0].decode())["minilm_fw1"].traffic == 10
        assert not add_arm_to_consul(consul.addr, "k", "", "text2text", "flywheel", "minilm_fw1", NEW, 10)
    finally:
        consul.stop()


def test_promoting_an_arm_makes_its_settings_the_defaults_and_retires_its_layer():
    out, _ = add_arm(BASE, "text2text", "flywheel", "minilm_fw1", NEW, 10)
    promoted, params = promote_arm(out, "text2text", "flywheel", "minilm_fw1")
    assert params == NEW and "# the team's notes survive" in promoted and "# inline comment" in promoted
    # layout kept: the edit shows in a diff as the one defaults line
    assert promoted == BASE.replace("{embed_model: minilm, index: texts}", "{embed_model: minilm_fw1, index: texts_fw1}")
    exp = parse_experiments(promoted, "t").scenes["text2text"]
    assert [lay.name for lay in exp.layers] == ["recall"]
    assert (exp.defaults.embed_model, exp.defaults.index) == ("minilm_fw1", "texts_fw1")
    with pytest.raises(NotFound, match="no layer 'flywheel'"):
        promote_arm(promoted, "text2text", "flywheel", "minilm_fw1")
    with pytest.raises(NotFound, match="no arm 'control'"):
        promote_arm(out, "text2text", "flywheel", "control")
    with pytest.raises(NotFound, match="no arm 'nope'"):
        promote_arm(out, "text2text", "flywheel", "nope")
    # another layer whose arms set the same settings would still override the defaults for its users
    models = BASE.replace("    defaults:", "      - name: model\n        salt: m-1\n        arms:\n"
                          "          - {name: base, traffic: 100, embed_model: minilm}\n    defaults:")
    out, _ = add_arm(models, "text2text", "flywheel", "minilm_fw1", NEW, 10)
    with pytest.raises(BadInput, match="layer model of text2text sets embed_model"):
        promote_arm(out, "text2text", "flywheel", "minilm_fw1")
