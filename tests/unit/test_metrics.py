import numpy as np

from mmsearch.metrics import mrr_at_k, neighbour_overlap, rankings, recall_at_k


def test_hand_computed_recall_and_mrr():
    # query 0: relevant doc 2 ranked 2nd; query 1: relevant {0, 3} ranked 1st and 4th; query 2: relevant doc 1 absent from top-2
    scores = np.array([[0.9, 0.1, 0.5, 0.0], [0.9, 0.8, 0.7, 0.6], [0.9, 0.1, 0.8, 0.7]])
    ranked = rankings(scores, 4)
    assert ranked.tolist() == [[0, 2, 1, 3], [0, 1, 2, 3], [0, 2, 3, 1]]
    rel = [{2}, {0, 3}, {1}]
    assert recall_at_k(ranked, rel, 1) == (0 + 0.5 + 0) / 3
    assert recall_at_k(ranked, rel, 2) == (1 + 0.5 + 0) / 3
    assert mrr_at_k(ranked, rel, 2) == (0.5 + 1 + 0) / 3
    assert mrr_at_k(ranked, rel, 4) == (0.5 + 1 + 0.25) / 3


def test_neighbour_overlap_identical_and_different():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 8))
    assert neighbour_overlap(a, a, 5) == 1.0
    assert neighbour_overlap(a, rng.normal(size=(30, 8)), 5) < 0.5


def test_hand_computed_precision_map_ndcg():
    import math

    from mmsearch.metrics import map_at_k, ndcg_at_k, precision_at_k, retrieval_metrics

    ranked = np.array([[0, 2, 1, 3], [0, 1, 2, 3]])
    rel = [{2}, {0, 3}]
    assert precision_at_k(ranked, rel, 2) == (0.5 + 0.5) / 2
    # q0: hit at 2 -> AP = (1/2)/1; q1: hits at 1 and 4 -> (1/1 + 2/4)/2
    assert map_at_k(ranked, rel, 4) == (0.5 + 0.75) / 2
    # graded: q0 exact doc 2 (grade 2) at rank 2, same-category doc 1 (grade 1) at rank 3
    gains = [{2: 2.0, 1: 1.0}]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert abs(ndcg_at_k(ranked[:1], gains, 4) - dcg / idcg) < 1e-12
    m = retrieval_metrics(np.array([[0.1, 0.5, 0.9, 0.0]]), gains, ks=(1, 3))
    assert m["recall@1"] == 1.0 and m["mrr@3"] == 1.0 and m["precision@3"] == 1 / 3  # binary: grade-2 doc only
