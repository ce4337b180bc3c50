"""bench/click_ab.py's experiments split: the live text2text recall layer becomes a fresh 50/50 experiment of the two
arms asked for, and nothing else in the file changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.click_ab import LAYER, split_experiments
from mmsearch.experiments.spec import parse_experiments

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "experiments.yaml"


def test_the_split_is_fifty_fifty_under_a_fresh_salt_and_leaves_the_rest():
    text = split_experiments(DEMO.read_text(), "learned", "dense", "salt-x")
    parse_experiments(text)  # what the service will load
    new, old = yaml.safe_load(text), yaml.safe_load(DEMO.read_text())
    layer = next(lay for lay in new["scenes"]["text2text"]["layers"] if lay["name"] == LAYER)
    assert layer["salt"] == "salt-x"
    assert {a["name"]: a["traffic"] for a in layer["arms"]} == {a["name"]: 50 if a["name"] in ("learned", "dense") else 0
                                                               for a in layer["arms"]}
    assert new["scenes"]["text2image"] == old["scenes"]["text2image"]


def test_an_arm_the_layer_lacks_is_refused_by_name():
    with pytest.raises(SystemExit, match="'nope' is not in the text2text recall layer"):
        split_experiments(DEMO.read_text(), "nope", "dense", "s")
