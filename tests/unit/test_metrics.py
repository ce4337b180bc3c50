import numpy as np
import pytest

from mmsearch.ranking_metrics import mrr_at_k, neighbour_overlap, rankings, recall_at_k


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

    from mmsearch.ranking_metrics import map_at_k, ndcg_at_k, precision_at_k, retrieval_metrics

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
    m = retrieval_metrics(np.array([[0.1, 0.5, 0.9, 0.0]]), gains, ks=(1, 3), relevance_level=2)
    assert m["recall@1"] == 1.0 and m["mrr@3"] == 1.0 and m["precision@3"] == 1 / 3  # binary at level 2: grade-2 doc only
    m = retrieval_metrics(np.array([[0.1, 0.5, 0.9, 0.0]]), gains, ks=(1, 3))
    assert m["recall@1"] == 0.5 and m["precision@3"] == 2 / 3  # level 1: both graded docs count


def test_rankings_break_ties_by_index_and_clip_k():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]])
    assert rankings(scores, 3).tolist() == [[1, 3, 0]]  # equal scores: lower index first
    assert rankings(scores, 50).tolist() == [[1, 3, 0, 2, 4]]  # k larger than the corpus: everything, once


def test_unjudged_queries_are_skipped_and_judged_ones_without_relevant_documents_score_zero():
    from mmsearch.ranking_metrics import map_at_k, ndcg_at_k, precision_at_k, retrieval_metrics

    ranked = np.array([[0, 1], [1, 0]])
    rel = [{0}, set()]  # the second query has nothing relevant (at this level): trec_eval scores it 0
    assert recall_at_k(ranked, rel, 1) == 0.5 and mrr_at_k(ranked, rel, 2) == 0.5
    assert precision_at_k(ranked, rel, 1) == 0.5 and map_at_k(ranked, rel, 2) == 0.5
    assert ndcg_at_k(ranked, [{0: 1.0}, {}], 2) == 1.0
    for fn in (recall_at_k, mrr_at_k, precision_at_k, map_at_k):
        assert fn(ranked, [], 2) == 0.0  # no queries: 0, not nan
    # no judgement at all (not in the qrels): left out of every mean
    m = retrieval_metrics(np.array([[0.9, 0.1], [0.1, 0.9]]), [{0: 1.0}, {}], ks=(1,))
    assert m["recall@1"] == 1.0 and m["ndcg@1"] == 1.0


def test_ndcg_is_one_for_the_ideal_order_and_zero_for_no_hits():
    from mmsearch.ranking_metrics import ndcg_at_k

    gains = [{2: 3.0, 0: 2.0, 1: 1.0}]
    assert abs(ndcg_at_k(np.array([[2, 0, 1, 3]]), gains, 4) - 1.0) < 1e-12
    assert ndcg_at_k(np.array([[2, 1, 0, 3]]), gains, 4) < 1.0  # swapping grades 2 and 1 costs something
    assert ndcg_at_k(np.array([[3, 4]]), gains, 2) == 0.0
    assert ndcg_at_k(np.array([[0]]), [{0: 0.0}], 1) == 0.0  # only zero grades: idcg 0, no division by zero


def test_map_divides_by_all_relevant_documents_as_trec_eval_does():
    from mmsearch.ranking_metrics import map_at_k

    # 3 relevant, k=2, both top-2 relevant: trec_eval's map_cut_2 is (1 + 1) / 3
    assert map_at_k(np.array([[0, 1, 2]]), [{0, 1, 2}], 2) == pytest.approx(2 / 3)


def test_binary_relevance_is_grade_at_least_the_relevance_level_and_keys_per_k():
    from mmsearch.ranking_metrics import retrieval_metrics

    m = retrieval_metrics(np.array([[0.9, 0.8, 0.7]]), [{0: 2.0, 1: 2.0, 2: 1.0}], ks=(1, 2))
    assert set(m) == {f"{name}@{k}" for name in ("recall", "precision", "mrr", "map", "ndcg") for k in (1, 2)}
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)  # grade 1 counts (trec_eval -l 1)
    top = retrieval_metrics(np.array([[0.9, 0.8, 0.7]]), [{0: 2.0, 1: 2.0, 2: 1.0}], ks=(1, 2), relevance_level=2)
    assert top["recall@1"] == 0.5 and top["recall@2"] == 1.0 and top["precision@2"] == 1.0


@pytest.mark.parametrize("level", [1, 2])
def test_metrics_match_trec_eval_on_random_runs(level):
    """pytrec-eval (trec_eval's own code) on random graded runs: every metric equal to 1e-9."""
    import pytrec_eval

    from mmsearch.ranking_metrics import retrieval_metrics

    rng = np.random.default_rng(level)
    n_q, n_d, k = 40, 60, 10
    scores = rng.random((n_q, n_d))  # continuous: no ties, whose order trec_eval breaks by doc name
    gains = []
    for _ in range(n_q):
        docs = rng.choice(n_d, size=int(rng.integers(1, 15)), replace=False)
        g = {int(d): float(rng.integers(1, 3)) for d in docs}
        g[int(docs[0])] = 2.0 if rng.random() < 0.8 else 1.0  # some queries have nothing at level 2: they score 0
        gains.append(g)
    ours = retrieval_metrics(scores, gains, ks=(k,), relevance_level=level)
    qrels = {f"q{i}": {f"d{d}": int(v) for d, v in g.items()} for i, g in enumerate(gains)}
    # the run holds only the top k, so trec_eval's recip_rank is MRR@k
    top = np.argsort(-scores, axis=1)[:, :k]
    run = {f"q{i}": {f"d{d}": float(scores[i, d]) for d in top[i]} for i in range(n_q)}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"recall", "P", "recip_rank", "map_cut", "ndcg_cut"}, relevance_level=level)
    res = ev.evaluate(run)

    def mean(m: str) -> float:
        return float(np.mean([res[q][m] for q in qrels]))

    assert ours[f"recall@{k}"] == pytest.approx(mean(f"recall_{k}"), abs=1e-9)
    assert ours[f"precision@{k}"] == pytest.approx(mean(f"P_{k}"), abs=1e-9)
    assert ours[f"mrr@{k}"] == pytest.approx(mean("recip_rank"), abs=1e-9)
    assert ours[f"map@{k}"] == pytest.approx(mean(f"map_cut_{k}"), abs=1e-9)
    assert ours[f"ndcg@{k}"] == pytest.approx(mean(f"ndcg_cut_{k}"), abs=1e-9)
