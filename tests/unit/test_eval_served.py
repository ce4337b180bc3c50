"""Judged query sets and served evaluation's bookkeeping (the served path itself runs in integration)."""

from __future__ import annotations

import json

import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.eval_served import evaluate_served, load_judged, parse_force
from mmsearch.ranking_metrics import ranked_metrics


def test_load_judged_accepts_lists_and_grades(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(json.dumps({"query": "a", "relevant": ["d1", "d2"], "tags": ["x"]}) + "\n\n"
                 + json.dumps({"query": "b", "relevant": {"d3": 2}}) + "\n")
    j = load_judged(p)
    assert j[0].relevant == {"d1": 1.0, "d2": 1.0} and j[0].tags == ("x",) and j[1].relevant == {"d3": 2.0}


@pytest.mark.parametrize("line, match", [
    ("{bad", ":1: malformed JSON"),
    ('{"query": "", "relevant": ["d"]}', "non-empty string 'query'"),
    ('{"query": "q", "relevant": []}', "'relevant'"),
    ('{"query": "q", "relevant": {"d": "high"}}', "'relevant'"),
    ('{"query": "q", "relevant": {"d": true}}', "'relevant'"),
    ('{"query": "q", "relevant": ["d"], "tags": "rare"}', "'tags'"),
    ('[1]', "non-empty string 'query'"),
])
def test_load_judged_names_the_bad_line(tmp_path, line, match):
    p = tmp_path / "q.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(BadInput, match=match):
        load_judged(p)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(BadInput, match="no queries"):
        load_judged(tmp_path / "e.jsonl")
    with pytest.raises(BadInput, match="cannot read"):
        load_judged(tmp_path / "missing.jsonl")


def test_parse_force():
    assert parse_force("recall=hybrid, model=base") == {"recall": "hybrid", "model": "base"}
    assert parse_force("") == {}
    with pytest.raises(BadInput, match="layer=arm"):
        parse_force("recall:hybrid")


def test_ranked_metrics_on_id_lists():
    m = ranked_metrics([["a", "b"], ["x"]], [{"b": 1.0, "c": 1.0}, {"y": 1.0}], ks=(1, 2))
    assert m["recall@2"] == pytest.approx(0.25) and m["mrr@2"] == pytest.approx(0.25) and m["precision@1"] == 0.0


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict | None]] = []

    def search(self, scene, text=None, top_k=None, force=None, fields=None, user_id=None):
        self.calls.append((text, force))
        assert user_id  # a fixed user: unforced layers stay on one arm
        good = (force or {}).get("recall") == "good"
        return {"results": [{"id": text if good else "other"}], "experiment": force or {"recall": "assigned"}}


def test_arms_are_interleaved_and_scored_separately(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text("".join(json.dumps({"query": q, "relevant": [q], "tags": ["t"] if q == "a" else []}) + "\n" for q in "abc"))
    c = FakeClient()
    good, bad = evaluate_served(c, "text2text", load_judged(p), [{"recall": "good"}, {"recall": "bad"}], ks=(1,), progress=False)
    assert [x[0] for x in c.calls] == ["a", "a", "b", "b", "c", "c"]  # query by query, each arm in turn
    assert good["metrics"]["recall@1"] == 1.0 and bad["metrics"]["recall@1"] == 0.0
    assert good["by_tag"]["t"]["queries"] == 1 and good["arms"] == {"recall": "good"}
    assert set(good["latency_ms"]) == {"p50", "p90", "p99"}
