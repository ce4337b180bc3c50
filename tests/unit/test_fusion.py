"""Rank fusion: RRF and weighted score fusion, checked against hand-computed values."""

from __future__ import annotations

import pytest

from mmsearch.ranking.fusion import fuse

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
BM25 = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def test_rrf_adds_reciprocal_ranks():
    out = fuse({"dense": DENSE, "bm25": BM25}, "rrf", rrf_k=60)
    scores = {f.id: f.score for f in out}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert [f.id for f in out][:2] == ["a", "c"]  # tied: first met (dense listed first) wins
    assert {f.id: f.sources for f in out} == {"a": ("dense", "bm25"), "b": ("dense",), "c": ("dense", "bm25"), "d": ("bm25",)}


def test_rrf_weights_scale_a_source():
    out = fuse({"dense": DENSE, "bm25": BM25}, "rrf", {"bm25": 3.0})
    assert out[0].id == "c"  # bm25's first hit, weighted 3x


def test_weighted_normalises_each_source_to_its_own_range():
    out = fuse({"dense": DENSE, "bm25": BM25}, "weighted", {"dense": 1.0, "bm25": 1.0})
    scores = {f.id: f.score for f in out}
    assert scores["a"] == pytest.approx(1.0 + 0.0)  # dense max, bm25 min
    assert scores["b"] == pytest.approx((0.8 - 0.1) / 0.8)
    assert scores["c"] == pytest.approx(0.0 + 1.0)
    assert scores["d"] == pytest.approx((6 - 3) / 9)


def test_a_single_hit_or_equal_scores_normalise_to_one():
    out = fuse({"x": [("a", 5.0)], "y": [("b", 2.0), ("c", 2.0)]}, "weighted")
    assert [f.score for f in out] == [1.0, 1.0, 1.0]


def test_empty_sources_and_duplicates():
    assert fuse({"x": [], "y": []}) == []
    out = fuse({"x": [("a", 1.0), ("a", 0.5)]}, "rrf", rrf_k=1)
    assert len(out) == 1 and out[0].score == pytest.approx(1 / 2)


# ---------------------------------------------------------------- query-dependent weights (issue 34)
def test_a_short_query_names_a_title_when_its_terms_equal_one_of_the_names():
    from mmsearch.ranking.fusion import names_title, title_terms

    assert title_terms("A zebra.") == ["zebra"]  # stopwords and punctuation aside
    assert title_terms("a striped wild horse that lives in africa") is None  # a description: no title check
    assert title_terms("the of") is None  # nothing left to match
    assert names_title(["zebra"], ["zebra", None])
    assert names_title(["fire", "truck"], ["fire engine, fire truck"])  # any comma-separated name
    assert names_title(["venus", "s", "flower", "basket"], ["Venus's flower basket, Euplectella aspergillum"])
    assert not names_title(["zebra"], ["zebra finch", "mountain zebra"])  # a longer name is not the query
    assert not names_title(["striped", "horse"], ["zebra"])
    assert not names_title(["zebra"], [])


def test_source_weights_switch_to_weight_title_only_where_set():
    from mmsearch.ranking.fusion import source_weights

    sources = [("dense", 1.0, None, None), ("bm25", 0.2, 3.0, None)]
    assert source_weights(sources, titled=False) == {"dense": 1.0, "bm25": 0.2}
    assert source_weights(sources, titled=True) == {"dense": 1.0, "bm25": 3.0}
    assert source_weights(sources, titled=True, rare=True) == {"dense": 1.0, "bm25": 3.0}  # no weight_rare: as before


def test_a_rare_query_takes_weight_rare_before_weight_title():
    from mmsearch.ranking.fusion import source_weights

    sources = [("dense", 1.0, 1.0, 0.5), ("bm25", 0.01, 1.0, 4.0)]
    assert source_weights(sources, titled=False, rare=True) == {"dense": 0.5, "bm25": 4.0}
    assert source_weights(sources, titled=True, rare=True) == {"dense": 0.5, "bm25": 4.0}
    assert source_weights(sources, titled=True, rare=False) == {"dense": 1.0, "bm25": 1.0}
    assert source_weights(sources, titled=False, rare=False) == {"dense": 1.0, "bm25": 0.01}


def test_a_zero_weight_leaves_a_source_s_hits_in_but_adds_nothing():
    out = fuse({"dense": DENSE, "bm25": BM25}, "rrf", {"dense": 1.0, "bm25": 0.0})
    assert [f.id for f in out][:3] == ["a", "b", "c"]  # dense order
    assert {f.id for f in out} == {"a", "b", "c", "d"}
