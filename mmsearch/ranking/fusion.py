"""Fusing ranked lists from several recall sources (dense per field, BM25) into one.

Reciprocal-rank fusion (Cormack et al. 2009) needs no score calibration: each source adds
``weight / (k + rank)``. Weighted score fusion min-max normalises each source's scores over its own
list (cosine and BM25 live on different scales) and adds ``weight * normalised``. A hit keeps the
names of every source that found it, so the response and the debug panel can show why it is there.

Query-dependent weights (issue 34): one setting of weights helps one kind of query and hurts
another. A query that *names a title* (a lemma, a product's name: at most TITLE_MAX_TERMS words,
equal, stopwords aside, to one of the comma-separated names in the title field of one of the first
TITLE_CHECK_TOP hits of any source) is fused with each source's ``weight_title``; any other query
(a description, a sentence) with its ``weight``. Lexical recall finds a named thing by its title's
words; dense recall finds a described one by meaning. A short query (at most TITLE_MAX_TERMS words) with
a *rare* term (one in at most the arm's ``rare_df`` documents) is fused with ``weight_rare``: those few
documents are where it points.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mmsearch.clients.lexical import query_terms

Fusion = Literal["rrf", "weighted"]
DEFAULT_RRF_K = 60
TITLE_MAX_TERMS = 4  # a longer query describes; it names no title
TITLE_CHECK_TOP = 3  # the hits of each source whose titles a query is compared with
RARE_DF = 3  # a query term in at most this many documents is rare (an arm's rare_df overrides it)
TITLE_NAME_SEP = re.compile(r"[,;|]")


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


def title_terms(query: str) -> list[str] | None:
    """The query's terms when it is short enough to name a title, else None (no title check needed)."""
    terms = query_terms(query)
    return terms if 0 < len(terms) <= TITLE_MAX_TERMS else None


def names_title(terms: Sequence[str], titles: Iterable[object]) -> bool:
    """Whether the query terms (title_terms) equal one name of one of the titles (comma-separated names)."""
    want = list(terms)
    return any(query_terms(name) == want for t in titles if isinstance(t, str) for name in TITLE_NAME_SEP.split(t))


def rare_query(text: str, rarest_df: Callable[[str], int | None], rare_df: int = RARE_DF) -> bool:
    """Whether ``text`` is short enough to name something (title_terms) and has a term in at most ``rare_df``
    documents (``rarest_df``: the lexical build's count, LexicalStore.rarest_df; asked only of a short query).
    In a longer description a rare word is incidental: on the development split 37% of the definition queries
    hold one, and BM25 ranks them worse than dense does."""
    if title_terms(text) is None:
        return False
    df = rarest_df(text)
    return df is not None and df <= rare_df


def source_weights(sources: Sequence[tuple[str, float, float | None, float | None]], titled: bool,
                   rare: bool = False) -> dict[str, float]:
    """name -> weight for this query: (name, weight, weight_title, weight_rare) each; weight_rare where the query
    has a rare term, else weight_title where it names a title, else weight (a source without the one that applies
    keeps its weight)."""
    out = {}
    for n, w, wt, wr in sources:
        out[n] = wr if rare and wr is not None else wt if titled and wt is not None else w
    return out
