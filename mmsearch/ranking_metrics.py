"""Retrieval metrics over a score matrix (queries x corpus) and relevance sets.

Kept dependency-free (numpy) so export, evaluation and the benchmarks compute them the same way.
The conventions are trec_eval's (checked against pytrec-eval in tests/unit/test_metrics.py), so
figures compare with published ones: a document is relevant when its grade is >= the relevance
level (trec_eval -l, default 1); Recall@k and AP divide by all relevant documents (R), not
min(R, k); nDCG uses the grades as linear gains. MRR@k is trec_eval's recip_rank over the top k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rankings(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k corpus indices per query, best first (ties broken by index, deterministically)."""
    k = min(k, scores.shape[1])
    idx = np.argsort(-scores, axis=1, kind="stable")
    return idx[:, :k]


def recall_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    vals = [len(set(r[:k].tolist()) & rel) / len(rel) if rel else 0.0 for r, rel in zip(ranked, relevant)]
    return float(np.mean(vals)) if vals else 0.0


def mrr_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    vals = []
    for r, rel in zip(ranked, relevant):
        rr = 0.0
        for pos, doc in enumerate(r[:k].tolist(), start=1):
            if doc in rel:
                rr = 1.0 / pos
                break
        vals.append(rr)
    return float(np.mean(vals)) if vals else 0.0


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean |top-k(a) ∩ top-k(b)| / k over rows, excluding each row itself: how much a
    cheaper embedding (int8, a smaller dim) changes nearest-neighbour results."""
    n = len(a)
    k = min(k, n - 1)
    sa, sb = a @ a.T, b @ b.T
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    ra, rb = rankings(sa, k), rankings(sb, k)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ra.tolist(), rb.tolist())]))


def precision_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    vals = [len(set(r[:k].tolist()) & rel) / k for r, rel in zip(ranked, relevant)]
    return float(np.mean(vals)) if vals else 0.0


def map_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    """Mean average precision cut at k (trec_eval map_cut_k): precision at each relevant hit in the top k, over R."""
    vals = []
    for r, rel in zip(ranked, relevant):
        if not rel:
            vals.append(0.0)
            continue
        hits, total = 0, 0.0
        for pos, doc in enumerate(r[:k].tolist(), start=1):
            if doc in rel:
                hits += 1
                total += hits / pos
        vals.append(total / len(rel))
    return float(np.mean(vals)) if vals else 0.0


def ndcg_at_k(ranked: np.ndarray, gains: Sequence[dict[int, float]], k: int) -> float:
    """nDCG with graded relevance: gains[q] maps a corpus index to its grade (e.g. 2 exact, 1 same category)."""
    vals = []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for r, g in zip(ranked, gains):
        if not g:
            continue
        dcg = sum(g.get(doc, 0.0) * discounts[i] for i, doc in enumerate(r[:k].tolist()))
        ideal = sorted(g.values(), reverse=True)[:k]
        idcg = sum(v * discounts[i] for i, v in enumerate(ideal))
        vals.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(vals)) if vals else 0.0


def retrieval_metrics(scores: np.ndarray, gains: Sequence[dict[int, float]], ks: Sequence[int] = (1, 10),
                      relevance_level: float = 1.0) -> dict[str, float]:
    """All metrics at each k. Binary metrics count grade >= ``relevance_level`` as relevant (trec_eval -l);
    queries with no judgement at all are left out; a judged query with nothing relevant at the level
    scores 0, as in trec_eval."""
    kmax = max(ks)
    ranked = rankings(scores, kmax)
    return _all_at(ranked, gains, ks, relevance_level)


def _all_at(ranked: np.ndarray, gains: Sequence[dict[int, float]], ks: Sequence[int], relevance_level: float) -> dict[str, float]:
    judged = [i for i, g in enumerate(gains) if g]  # as trec_eval: queries in the qrels; those with nothing relevant score 0
    ranked, gains = ranked[judged], [gains[i] for i in judged]
    relevant = [{d for d, v in g.items() if v >= relevance_level} for g in gains]
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
        out[f"precision@{k}"] = precision_at_k(ranked, relevant, k)
        out[f"mrr@{k}"] = mrr_at_k(ranked, relevant, k)
        out[f"map@{k}"] = map_at_k(ranked, relevant, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, gains, k)
    return out


def ranked_metrics(runs: Sequence[Sequence[str]], judged: Sequence[dict[str, float]], ks: Sequence[int] = (1, 10),
                   relevance_level: float = 1.0) -> dict[str, float]:
    """The same metrics over ranked id lists (a served search's results) and id -> grade judgements."""
    ids: dict[str, int] = {}
    kmax = max(ks)
    ranked = np.full((len(runs), kmax), -1, dtype=np.int64)  # -1: no document at that rank
    for q, run in enumerate(runs):
        for pos, doc in enumerate(run[:kmax]):
            ranked[q, pos] = ids.setdefault(doc, len(ids))
    gains = [{ids.setdefault(d, len(ids)): g for d, g in j.items()} for j in judged]
    return _all_at(ranked, gains, ks, relevance_level)
