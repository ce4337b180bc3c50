"""Tiny fine-tunes end to end (tiny local models, synthetic data with learnable structure)."""

from __future__ import annotations

import json

import pytest
from finetune_data import shape_image_pairs, synonym_pairs

from mmsearch.cli import main as cli
from mmsearch.offline.data import write_jsonl
from mmsearch.offline.finetune import RECORD, FinetuneConfig, finetune, split_pairs, unique_batches

pytestmark = pytest.mark.integration


def test_batches_never_repeat_a_text():
    import random

    from mmsearch.offline.data import Pair

    pairs = [Pair(f"q{i % 5}", f"d{i % 7}") for i in range(35)]
    for b in unique_batches(pairs, 4, random.Random(0)):
        assert len({p.query for p in b}) == len(b) and len({p.positive for p in b}) == len(b)


def test_text_finetune_beats_untrained_and_passes_the_gate(tmp_path, tiny_text, capsys):
    train, val, modality = split_pairs(synonym_pairs(), 0.2)
    assert modality == "text" and val.corpus_modality == "text" and not {p.group for p in train} & {q.replace(" ", "-") for q in val.queries}  # split by group
    r = finetune(FinetuneConfig("text", str(tiny_text), tmp_path / "ft", epochs=4, lr=1e-3, batch_size=16, progress=False), train, val)
    assert r.best_metric > r.base_metric + 0.2, r.history
    rec = json.loads((tmp_path / "ft" / RECORD).read_text())
    assert rec["best_metric"] == r.best_metric and rec["history"][0]["epoch"] == 0
    assert cli(["export", "--model", str(tmp_path / "ft"), "--name", "ft", "--repo", str(tmp_path / "repo"), "--gate"]) == 0
    m = json.loads((tmp_path / "repo" / "ft" / "mmsearch.json").read_text())
    assert m["evaluation"]["best_metric"] == r.best_metric
    # the gate refuses a model that does not beat its base, and one without a record
    assert rec["gate"]["candidate"] > rec["gate"]["base"] and rec["gate"]["queries"] >= 1  # held out from epoch selection
    rec["gate"]["candidate"] = rec["gate"]["base"]  # no better than the base where early stopping did not look
    (tmp_path / "ft" / RECORD).write_text(json.dumps(rec))
    assert cli(["export", "--model", str(tmp_path / "ft"), "--name", "ft2", "--repo", str(tmp_path / "repo"), "--gate"]) == 2
    assert "does not beat the base" in capsys.readouterr().err
    assert cli(["export", "--model", str(tiny_text), "--name", "t", "--repo", str(tmp_path / "repo"), "--gate"]) == 2
    assert not (tmp_path / "repo" / "ft2").exists() and not (tmp_path / "repo" / "t").exists()
    # with --dim the base figure is the base model as it is, never the base with a random projection added
    r16 = finetune(FinetuneConfig("text", str(tiny_text), tmp_path / "ft16", epochs=1, lr=1e-3, batch_size=16, dim=16,
                                  progress=False), train, val)
    assert r16.base_metric == pytest.approx(r.base_metric) and r16.history[0][r.metric] != pytest.approx(r.base_metric)


def test_symmetric_hardness_weighted_loss_learns(tmp_path, tiny_text, monkeypatch):
    from sentence_transformers.sentence_transformer import losses

    made: list[dict] = []

    class Spy(losses.MultipleNegativesRankingLoss):
        def __init__(self, model, **kw):
            made.append(kw)
            super().__init__(model, **kw)

    monkeypatch.setattr(losses, "MultipleNegativesRankingLoss", Spy)
    train, val, _ = split_pairs(synonym_pairs(), 0.2)
    r = finetune(FinetuneConfig("text", str(tiny_text), tmp_path / "sym", epochs=4, lr=1e-3, batch_size=16, progress=False,
                                symmetric=True, hardness=9.0, scale=30.0), train, val)
    assert made == [{"scale": 30.0, "directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction",
                     "hardness_mode": "in_batch_negatives", "hardness_strength": 9.0}]
    assert r.best_metric > r.base_metric + 0.2, r.history


def test_dual_lit_finetune_beats_untrained(tmp_path, tiny_dual):
    train, val, modality = split_pairs(shape_image_pairs(tmp_path / "imgs"), 0.25)
    assert modality == "image"
    r = finetune(FinetuneConfig("dual", str(tiny_dual), tmp_path / "ft", epochs=30, lr=1e-2, batch_size=16,
                                progress=False, patience=6), train, val)
    assert r.best_metric > r.base_metric + 0.15, r.history
    from mmsearch.offline.models.dual import DualEncoder

    assert DualEncoder.load(tmp_path / "ft").dim == 24  # a dual encoder folder export understands


def test_a_dual_training_from_the_feature_cache_matches_one_that_computes_them(tmp_path, tiny_dual, monkeypatch):
    from mmsearch.offline.models.dual import DualEncoder

    train, val, _ = split_pairs(shape_image_pairs(tmp_path / "imgs"), 0.25)
    kw = dict(epochs=4, lr=1e-2, batch_size=16, progress=False, patience=6)
    plain = finetune(FinetuneConfig("dual", str(tiny_dual), tmp_path / "plain", **kw), train, val)
    cache = tmp_path / "features"
    finetune(FinetuneConfig("dual", str(tiny_dual), tmp_path / "fill", feature_cache=cache, **kw), train, val)
    assert len(list(cache.glob("*.npz"))) == 1

    def no_forward(self, pixels):
        raise AssertionError("the image tower ran: every feature should have come from the cache")

    monkeypatch.setattr(DualEncoder, "image_features", no_forward)
    cached = finetune(FinetuneConfig("dual", str(tiny_dual), tmp_path / "cached", feature_cache=cache, **kw), train, val)
    assert cached.history == plain.history  # every epoch's figures
    assert cached.best_metric == plain.best_metric and cached.base_metric == plain.base_metric


def test_cross_encoder_learns_and_exports(tmp_path, tiny_text):
    from finetune_data import ANIMALS, COLOURS

    from mmsearch.offline.data import Pair

    # a reranker from scratch learns slowly: an easy, lexical relevance rule keeps the test short
    pairs = [Pair(f"{c} {a}", f"the {c} {a} is here", group=f"{c}-{a}") for c in COLOURS for a in ANIMALS]
    train, val, _ = split_pairs(pairs, 0.2)
    r = finetune(FinetuneConfig("cross", str(tiny_text), tmp_path / "ce", epochs=25, lr=3e-3, batch_size=16,
                                patience=25, progress=False), train, val)
    assert r.best_metric > r.base_metric + 0.1, r.history
    assert cli(["export", "--model", str(tmp_path / "ce"), "--name", "ce", "--repo", str(tmp_path / "repo")]) == 0
    # its base figure measured an untrained head: beating that proves nothing, so the gate will not take it
    assert json.loads((tmp_path / "ce" / RECORD).read_text())["base_kind"] == "untrained heads"
    assert cli(["export", "--model", str(tmp_path / "ce"), "--name", "ce2", "--repo", str(tmp_path / "repo"), "--gate"]) == 2


def test_finetune_cli(tmp_path, tiny_text):
    write_jsonl(tmp_path / "pairs.jsonl", [{"query": p.query, "positive": p.positive, "group": p.group} for p in synonym_pairs()])
    assert cli(["finetune", "--trainer", "text", "--base", str(tiny_text), "--pairs", str(tmp_path / "pairs.jsonl"),
                "--out", str(tmp_path / "ft"), "--epochs", "2", "--lr", "1e-3", "--batch-size", "16"]) == 0
    rec = json.loads((tmp_path / "ft" / RECORD).read_text())
    assert rec["best_metric"] > rec["base_metric"] and rec["train_pairs"] > 50


@pytest.mark.parametrize("args, fragment", [
    (["--kind", "text", "--base", "nope", "--pairs", "x.jsonl", "--out", "o"], "cannot read|not found"),
    (["--kind", "text", "--base", "package:minilm", "--pairs", "empty.jsonl", "--out", "o"], "at least 2 pairs"),  # old flag name
    (["--trainer", "text", "--base", "package:minilm", "--pairs", "empty.jsonl", "--out", "o"], "at least 2 pairs"),
])
def test_bad_input(tmp_path, monkeypatch, capsys, args, fragment):
    import re

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    assert cli(["finetune", *args]) == 2
    assert re.search(fragment, capsys.readouterr().err)


def test_grid_runs_in_workers_and_reports(tmp_path, tiny_text):
    from mmsearch.offline.grid import run_grid

    pairs = synonym_pairs() * 1
    write_jsonl(tmp_path / "pairs.jsonl", [{"query": p.query, "positive": p.positive, "group": p.group} for p in pairs])
    rows = run_grid("text", [str(tiny_text)], f"pairs:{tmp_path / 'pairs.jsonl'}", [10, 30, 60, None], [None, 16], [1e-3],
                    [True], tmp_path / "grid", workers=2, epochs=2, cache=tmp_path, metric="mrr@10")
    runs = [r for r in rows if r["config"] != "base"]
    assert len(runs) == 8 and {r["dim"] for r in runs} == {None, 16}
    assert len((tmp_path / "grid" / "results.jsonl").read_text().splitlines()) == 8
    for f in ("report.md", "metric_vs_size.png", "return_per_item.png"):
        assert (tmp_path / "grid" / f).stat().st_size > 500
    assert "| tiny_text dim=16 lr=0.001 |" in (tmp_path / "grid" / "report.md").read_text()
    assert max(r["test"]["mrr@10"] for r in runs) > rows[0]["test"]["mrr@10"]
