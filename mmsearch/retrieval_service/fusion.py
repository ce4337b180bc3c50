"""Fusing ranked lists from several recall sources (dense per field, BM25) into one.

Reciprocal-rank fusion (Cormack et al. 2009) needs no score calibration: each source adds
``weight / (k + rank)``. Weighted score fusion min-max normalises each source's scores over its own
list (cosine and BM25 live on different scales) and adds ``weight * normalised``. A hit keeps the
names of every source that found it, so the response and the debug panel can show why it is there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Fusion = Literal["rrf", "weighted"]
DEFAULT_RRF_K = 60


@dataclass(frozen=True)
class Fused:
    id: str
    score: float
    sources: tuple[str, ...]


def fuse(lists: Mapping[str, Sequence[tuple[str, float]]], method: Fusion = "rrf",
         weights: Mapping[str, float] | None = None, rrf_k: int = DEFAULT_RRF_K) -> list[Fused]:
    """One list, best first; ties keep the order in which hits were first met (source order, then rank)."""
    weights = weights or {}
    score: dict[str, float] = {}
    found: dict[str, list[str]] = {}
    for name, hits in lists.items():
        w = float(weights.get(name, 1.0))
        if method == "rrf":
            contrib = [w / (rrf_k + rank) for rank in range(1, len(hits) + 1)]
        else:
            values = [s for _, s in hits]
            lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
            contrib = [w * ((s - lo) / (hi - lo) if hi > lo else 1.0) for s in values]
        seen: set[str] = set()
        for (doc_id, _), c in zip(hits, contrib):
            if doc_id in seen:  # a source listing an id twice counts it once (its best rank)
                continue
            seen.add(doc_id)
            score[doc_id] = score.get(doc_id, 0.0) + c
            found.setdefault(doc_id, []).append(name)
    order = sorted(score, key=lambda d: -score[d])  # stable: first-met order breaks ties
    return [Fused(d, score[d], tuple(found[d])) for d in order]
