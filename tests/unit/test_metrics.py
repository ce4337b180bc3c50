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
