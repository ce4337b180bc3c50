"""Retrieval metrics over a score matrix (queries x corpus) and relevance sets.

Kept dependency-free (numpy) so export, evaluation and the benchmarks compute them the same way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rankings(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k corpus indices per query, best first (ties broken by index, deterministically)."""
    k = min(k, scores.shape[1])
    idx = np.argsort(-scores, axis=1, kind="stable")
    return idx[:, :k]


def recall_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    vals = [len(set(r[:k].tolist()) & rel) / len(rel) for r, rel in zip(ranked, relevant) if rel]
    return float(np.mean(vals)) if vals else 0.0


def mrr_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    vals = []
    for r, rel in zip(ranked, relevant):
        if not rel:
            continue
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
