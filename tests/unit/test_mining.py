"""Hard-negative mining (the top hit that is not an answer, with the false-negative guard), batches
that never repeat a text across queries, positives and negatives, and device checks."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.training import FinetuneConfig, finetune
from mmsearch.offline.training.common import unique_batches
from mmsearch.offline.training.mining import mine_negatives

VEC = {  # 2-d unit vectors: angle says similarity
    "q-cat": 0.0, "cat": 0.05, "kitten": 0.06, "dog": 0.5, "car": 1.5,
    "q-dog": 0.5, "q-car": 1.5,
}


def encode(texts):
    return np.array([[np.cos(VEC[t]), np.sin(VEC[t])] for t in texts], dtype=np.float32)


def test_the_top_non_answer_becomes_the_negative_and_near_duplicates_are_skipped():
    pairs = [Pair("q-cat", "cat"), Pair("q-cat", "kitten"), Pair("q-dog", "dog"), Pair("q-car", "car"),
             Pair("q-dog", "dog", negative="car")]
    out, mined = mine_negatives(pairs, encode, margin=0.95)
    assert mined == 4 and out[4].negative == "car"  # a pair with a negative keeps it
    assert out[0].negative == "dog" and out[1].negative == "dog"  # the other answer of q-cat is never its negative
    assert out[2].negative in ("kitten", "cat") and out[3].negative == "dog"
    guarded, _ = mine_negatives([Pair("q-cat", "kitten"), Pair("q-x", "cat"), Pair("q-y", "car")],
                                lambda t: encode([x if x in VEC else "car" for x in t]), margin=0.95)
    assert guarded[0].negative == "car"  # "cat" scores as high as the answer: a likely unlabelled positive, skipped


def test_batches_never_repeat_a_text_when_negatives_count():
    rng = random.Random(0)
    pairs = [Pair(f"q{i}", f"d{i}", negative=f"d{(i + 1) % 50}") for i in range(50)]
    for b in unique_batches(pairs, 8, rng, with_negatives=True):
        texts = [t for p in b for t in (p.query, p.positive, p.negative)]
        assert len(texts) == len(set(texts))
    assert sum(map(len, unique_batches(pairs, 8, rng))) == 50  # without negatives every pair fits


@pytest.mark.parametrize("device, match", [("cuda", "no CUDA device"), ("gpu-please", "not a torch device")])
def test_a_device_that_is_not_there_is_a_clear_error(tmp_path, device, match):
    es = EvalSet(["a", "b"], ["x", "y"], [{0: 1.0}, {1: 1.0}])
    cfg = FinetuneConfig("text", "unused", tmp_path / "out", device=device)
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    with pytest.raises(BadInput, match=match):
        finetune(cfg, [Pair("a", "x"), Pair("b", "y")], es)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opts", [{"scale": 0.0}, {"scale": -5.0}, {"hardness": -1.0}, {"scale": float("nan")}])
def test_loss_settings_out_of_range_are_a_clear_error(tmp_path, opts):
    es = EvalSet(["a", "b"], ["x", "y"], [{0: 1.0}, {1: 1.0}])
    with pytest.raises(BadInput, match="--scale must be in"):
        finetune(FinetuneConfig("text", "unused", tmp_path / "out", **opts), [Pair("a", "x"), Pair("b", "y")], es)
    assert not (tmp_path / "out").exists()
