"""`export --gate` can refuse: it compares base and chosen model on validation queries that early
stopping never saw, and the candidate must beat the base by more than the margin (the Trainer's loop
with stand-in score matrices; no model is trained)."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.data import EvalSet
from mmsearch.offline.export import DEFAULT_GATE_MARGIN, build_parser, check_gate
from mmsearch.offline.training.common import FinetuneConfig, Trainer, gate_split

N = 40


def _val() -> EvalSet:
    return EvalSet([f"q{i}" for i in range(N)], [f"d{i}" for i in range(N)], [{i: 1.0} for i in range(N)])


BASE = np.random.default_rng(0).random((N, N)).astype(np.float32)  # a mediocre base: answers anywhere in the ranking
PERFECT = BASE + 10 * np.eye(N, dtype=np.float32)  # every query's answer first


def _train(tmp_path, after: list[np.ndarray], epochs: int = 2):
    """Run the loop with the base's scores first, then ``after[e - 1]`` after epoch e."""
    cfg = FinetuneConfig("text", "base", tmp_path, epochs=epochs, progress=False, metric="ndcg@10")
    now = [BASE]

    def epoch(e: int) -> float:
        now[0] = after[min(e, len(after)) - 1]
        return 0.0

    return Trainer(cfg, _val(), lambda: now[0], lambda: None).run(epoch, 10)


def test_the_gate_split_is_disjoint_from_selection_and_covers_every_judged_query():
    select, gate = gate_split(_val(), seed=0)
    sel = {i for i, g in enumerate(select) if g}
    held = {i for i, g in enumerate(gate) if g}
    assert sel and held and not sel & held and sel | held == set(range(N))
    assert len(held) == N // 2
    with pytest.raises(BadInput, match="at least 2"):
        gate_split(EvalSet(["q"], ["d"], [{0: 1.0}]))


def test_a_copy_of_the_base_is_refused_even_at_margin_zero(tmp_path):
    r = _train(tmp_path, [BASE, BASE])  # training changed nothing
    assert r.gate["candidate"] == r.gate["base"] and r.best_metric == r.base_metric
    with pytest.raises(BadInput, match="does not beat the base"):
        check_gate(tmp_path, 0.0)
    with pytest.raises(BadInput, match="does not beat the base"):
        check_gate(tmp_path, DEFAULT_GATE_MARGIN)


def test_a_truly_better_model_passes(tmp_path):
    r = _train(tmp_path, [PERFECT, PERFECT])
    assert r.best_epoch == 1 and r.gate["candidate"] == pytest.approx(1.0) and r.gate["base"] < 0.5
    rec = check_gate(tmp_path, DEFAULT_GATE_MARGIN)
    assert rec["gate"]["candidate"] > rec["gate"]["base"] * (1 + DEFAULT_GATE_MARGIN)


def test_an_epoch_chosen_for_the_selection_half_is_judged_on_the_other(tmp_path):
    # perfect on the queries that choose the epoch, worse than the base on the held-out ones:
    # the validation figure rises (selection bias), the gate figure falls, and the gate refuses
    select, _ = gate_split(_val(), seed=0)
    overfit = -PERFECT.copy()
    for i, g in enumerate(select):
        if g:
            overfit[i] = PERFECT[i]
    r = _train(tmp_path, [overfit, overfit])
    assert r.best_epoch == 1 and r.best_metric > r.base_metric + 0.3
    assert r.gate["candidate"] < r.gate["base"]
    with pytest.raises(BadInput, match="does not beat the base"):
        check_gate(tmp_path, 0.0)


def test_a_record_without_gate_figures_or_a_bad_margin_is_refused(tmp_path):
    import json

    from mmsearch.offline.training.common import RECORD

    _train(tmp_path, [PERFECT])
    rec = json.loads((tmp_path / RECORD).read_text())
    del rec["gate"]
    (tmp_path / RECORD).write_text(json.dumps(rec))
    with pytest.raises(BadInput, match="no held-out gate figures"):
        check_gate(tmp_path, 0.0)
    with pytest.raises(BadInput, match="--gate-margin must be 0..10"):
        check_gate(tmp_path, -0.1)


def test_the_cli_default_margin_is_above_zero():
    assert build_parser().parse_args(["--model", "m", "--gate"]).gate_margin == DEFAULT_GATE_MARGIN > 0
