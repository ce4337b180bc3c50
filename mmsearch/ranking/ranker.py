"""A learned ranker over the recalled candidates: the ``learned`` fusion of an arm (issue 34).

Fixed weights, even query-dependent ones, carry one trade-off for a whole class of queries: on the
judged sets a setting that lifts lemma and rare-word queries costs description queries a point of
MRR. A ranker sees each candidate on its own: where each source ranked and scored it, whether the
query *is* one of its titles, how much of the query its title covers, how long it is. It is a linear
model (pairwise logistic regression, trained by ``mmsearch train-ranker``,
mmsearch/offline/ranker_training.py) over features computed here, once, for both training and
serving, so what was trained is what is served. Linear, because at this size of judged data (a few
thousand queries) it measured as well as boosted trees (bench/ranking.py) and scores a query's 200
candidates in well under a millisecond with numpy alone.

A ranker file (JSON, in the config's rankers_dir, named by the arm's ``ranker``) records its sources
(name and kind: the arm's sources must match), feature names, standardisation, weights, what it was
trained on and its development figures; nothing downstream guesses.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmsearch.clients.lexical import query_terms
from mmsearch.errors import BadInput, ConfigError
from mmsearch.ranking.fusion import DEFAULT_RRF_K, TITLE_MAX_TERMS, TITLE_NAME_SEP, Fused, fuse

FORMAT = "mmsearch-linear-ranker/1"
KINDS = ("dense", "bm25")
# which queries a ranker orders: "all", or "named" (those that name a title or hold a rare term: where the sources
# disagree most and the words know something the vectors do not); any other query is fused by RRF with the sources'
# weights. On the judged sets a ranker over every query lifted caption and example queries but cost everyday
# descriptions 1-5 points of Recall@10 against dense alone, with boosted trees too (bench/ranker_models.py).
SCOPES = ("all", "named")
# within "named": a rare term routes a query to the ranker only when the query has at most this many terms. On the
# development split a ranker over every short rare-term query (up to TITLE_MAX_TERMS) cost definition queries 0.3 points
# of Recall@10 and MRR@10 against dense alone ("one plies specifically pl", "salt chromic acid": the rare word is
# incidental to a description); with 1 (the query is the rare word) no class lost to dense or BM25, for 0.005 of
# nDCG@10 over all (dev: 4 terms 0.5763, 3 0.5756, 2 0.5730, 1 0.5709, each retrained and replayed over the dev
# split's recalled lists; held-out through the API: bench/results/ranking.json). A query naming a
# title is in scope whatever its length. Ranker files written before this field route as 4 did.
RARE_TERMS = 1
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# each source's first hits whose documents (titles, lengths) are read. The dense hits' documents come with the vectors;
# BM25 hits missing from them are read in one query. On the development split (5-fold CV, nDCG@10): 10 -> 0.571,
# 30 -> 0.573, 100 -> 0.575 (more lemma and caption queries find the document whose title they are)
DOC_WINDOW = 100


class DocLookup(Protocol):
    """The documents known for a query's candidates (a dict, or the pipeline's HitDocs)."""

    def get(self, doc_id: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Query:
    """What the ranker knows of a query: its terms and whether it is rare (fusion.rare_query)."""

    terms: tuple[str, ...]
    rare: bool = False

    @classmethod
    def of(cls, text: str, rare: bool = False) -> "Query":
        return cls(tuple(query_terms(text)), rare)

    @property
    def short(self) -> bool:
        return 0 < len(self.terms) <= TITLE_MAX_TERMS


QUERY_FEATURES = ("short", "rare", "titled", "log_terms", "agree")  # then each source's "<name>.top"
PER_SOURCE = ("rr2", "rr60", "norm", "gap", "in")
INTERACT = 3  # the first three per-source features are also taken times each query feature
DOC_FEATURES = ("title_eq", "title_cover", "title_cover*long", "log_len", "doc_known")


def query_feature_names(sources: Sequence[tuple[str, str]]) -> list[str]:
    return [*QUERY_FEATURES, *(f"{name}.top" for name, _ in sources)]


def feature_names(sources: Sequence[tuple[str, str]]) -> list[str]:
    """Per source: reciprocal ranks (sharp and flat), normalised score, score against the list's first, presence;
    the first three again times each query feature (short, rare, log of its term count, how much the sources'
    first ten agree, each source's confidence: dense, the first cosine; BM25, the first score per query term), so
    a rank can mean more for one kind of query than another. Then the candidate's document: title equal to the
    query, title coverage (and for long queries), log length, whether the document was read."""
    qf = query_feature_names(sources)
    out = []
    for name, _ in sources:
        base = [f"{name}.{f}" for f in PER_SOURCE]
        out += base + [f"{f}*{q}" for q in qf for f in base[:INTERACT]]
    return out + list(DOC_FEATURES)


def query_features(lists: Mapping[str, Sequence[tuple[str, float]]], sources: Sequence[tuple[str, str]],
                   query: Query, titled: bool) -> np.ndarray:
    """What the query and its lists say about which source to trust (query_feature_names' order)."""
    tops = [{i for i, _ in (lists.get(name) or [])[:10]} for name, _ in sources]
    pairs = [(a, b) for n, a in enumerate(tops) for b in tops[n + 1:]]
    agree = sum(len(a & b) for a, b in pairs) / (10 * len(pairs)) if pairs else 0.0
    conf = []
    for name, kind in sources:
        hits = lists.get(name) or []
        top = hits[0][1] if hits else 0.0
        conf.append(top if kind == "dense" else math.log1p(max(top, 0.0) / max(len(query.terms), 1)))
    return np.array([float(query.short), float(query.rare), float(titled), math.log1p(len(query.terms)), agree, *conf])


def _title_names(title: object) -> tuple[tuple[str, ...], ...]:
    return _split_title(title) if isinstance(title, str) else ()


@functools.lru_cache(maxsize=65536)
def _split_title(title: str) -> tuple[tuple[str, ...], ...]:
    """Cached by the title itself (an updated document brings a new string): a search reads up to 200 candidates'
    titles, most of them read by earlier searches too, and splitting them was a fifth of the ranker's time."""
    return tuple(tuple(query_terms(n)) for n in TITLE_NAME_SEP.split(title))


def doc_features(ids: Sequence[str], query: Query, docs: DocLookup, title_field: str | None,
                 length_field: str | None, window: set[str]) -> np.ndarray:
    """DOC_FEATURES per candidate of ``window``; any other, or one whose document is not in ``docs``, gets zeros
    (the serving path knows more documents than the window's, dense hits bring theirs: they are not read, so a
    feature means what it meant in training)."""
    dx = np.zeros((len(ids), len(DOC_FEATURES)), dtype=np.float64)
    terms = list(query.terms)
    want, as_name = set(terms), tuple(terms)
    for j, doc_id in enumerate(ids):
        doc = docs.get(doc_id) if doc_id in window else None
        if doc is None:
            continue
        dx[j, 4] = 1.0
        names = _title_names(doc.get(title_field)) if title_field else ()
        if terms and names:
            dx[j, 0] = float(any(n == as_name for n in names))
            cover = len(want & {t for n in names for t in n}) / len(want)
            dx[j, 1] = cover
            dx[j, 2] = cover * (not query.short)
        text = doc.get(length_field) if length_field else None
        if isinstance(text, str):
            dx[j, 3] = math.log1p(len(text.split()))
    return dx


def window_ids(lists: Mapping[str, Sequence[tuple[str, float]]], sources: Sequence[tuple[str, str]], doc_window: int) -> list[str]:
    """The candidates whose documents the features read: each source's first ``doc_window``."""
    return list(dict.fromkeys(i for name, _ in sources for i, _ in (lists.get(name) or [])[:doc_window]))


def candidate_features(lists: Mapping[str, Sequence[tuple[str, float]]], sources: Sequence[tuple[str, str]],
                       query: Query, docs: DocLookup, title_field: str | None,
                       length_field: str | None, doc_window: int = DOC_WINDOW) -> tuple[list[str], np.ndarray]:
    """Every candidate of every source (first-met order) and its feature row (feature_names' order). ``docs``:
    the documents known for candidates; only those of window_ids are read (the rest get doc_known 0 and no title
    or length features)."""
    ids = list(dict.fromkeys(i for name, _ in sources for i, _ in lists.get(name, ())))
    at = {d: j for j, d in enumerate(ids)}
    dx = doc_features(ids, query, docs, title_field, length_field, set(window_ids(lists, sources, doc_window)))
    q = query_features(lists, sources, query, bool(dx[:, 0].any()))
    per = len(PER_SOURCE) + INTERACT * len(q)
    x = np.zeros((len(ids), per * len(sources) + len(DOC_FEATURES)), dtype=np.float64)
    x[:, per * len(sources):] = dx
    for s, (name, kind) in enumerate(sources):
        hits = lists.get(name) or []
        c = s * per
        if not hits:
            continue
        scores = [sc for _, sc in hits]
        top, lo = scores[0], min(scores)
        span = top - lo if top > lo else 1.0
        x[:, c + 3] = (lo - top) if kind == "dense" else (lo / top if top > 0 else 0.0)  # absent: as the list's last
        seen: set[str] = set()
        for rank, (doc_id, sc) in enumerate(hits, 1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            r = x[at[doc_id]]
            r[c] = 3.0 / (2 + rank)
            r[c + 1] = 61.0 / (60 + rank)
            r[c + 2] = (sc - lo) / span if top > lo else 1.0
            r[c + 3] = (sc - top) if kind == "dense" else (sc / top if top > 0 else 0.0)
            r[c + 4] = 1.0
        base = x[:, c : c + INTERACT]
        x[:, c + len(PER_SOURCE) : c + per] = (base[:, None, :] * q[None, :, None]).reshape(len(ids), -1)
    return ids, x


@dataclass
class LinearRanker:
    sources: tuple[tuple[str, str], ...]  # (name, kind) as the arm's sources
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    title_field: str | None = None
    length_field: str | None = None
    doc_window: int = DOC_WINDOW
    scope: str = "named"
    rare_terms: int = RARE_TERMS  # scope named: the longest query a rare term alone routes to the ranker
    meta: dict[str, Any] = field(default_factory=dict)  # trained on, l2, development figures, versions

    @property
    def features(self) -> list[str]:
        return feature_names(self.sources)

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights

    def in_scope(self, query: Query, x: np.ndarray) -> bool:
        """Whether this ranker orders the query (its scope), from its candidates' features."""
        if self.scope == "all" or (query.rare and len(query.terms) <= self.rare_terms):
            return True
        return bool(x[:, -len(DOC_FEATURES)].any())  # title_eq

    def order(self, lists: Mapping[str, Sequence[tuple[str, float]]], query: Query, docs: DocLookup,
              features: tuple[list[str], np.ndarray] | None = None) -> list[Fused] | None:
        """rank() for a query in scope, else None (the caller fuses it by its weights). ``features``: features_of's
        answer for these lists, query and documents, where the caller has it already."""
        ids, x = features or self.features_of(lists, query, docs)
        return self._ranked(lists, ids, x) if ids and self.in_scope(query, x) else None

    def rank(self, lists: Mapping[str, Sequence[tuple[str, float]]], query: Query, docs: DocLookup) -> list[Fused]:
        """Every candidate, best first, scored by the model (ties keep first-met order), whatever the scope."""
        ids, x = self.features_of(lists, query, docs)
        return self._ranked(lists, ids, x)

    def _ranked(self, lists: Mapping[str, Sequence[tuple[str, float]]], ids: list[str], x: np.ndarray) -> list[Fused]:
        if not ids:
            return []
        s = self.score(x)
        found: dict[str, list[str]] = {}
        for name, _ in self.sources:
            for doc_id, _ in lists.get(name) or ():
                if name not in found.setdefault(doc_id, []):
                    found[doc_id].append(name)
        order = np.argsort(-s, kind="stable")
        return [Fused(ids[j], float(s[j]), tuple(found[ids[j]])) for j in order]

    def window_ids(self, lists: Mapping[str, Sequence[tuple[str, float]]]) -> list[str]:
        return window_ids(lists, self.sources, self.doc_window)

    def features_of(self, lists: Mapping[str, Sequence[tuple[str, float]]], query: Query, docs: DocLookup) -> tuple[list[str], np.ndarray]:
        """candidate_features with this ranker's sources, fields and window."""
        return candidate_features(lists, self.sources, query, docs, self.title_field, self.length_field, self.doc_window)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "sources": [{"name": n, "kind": k} for n, k in self.sources],
                "features": self.features, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "title_field": self.title_field, "length_field": self.length_field,
                "doc_window": self.doc_window, "scope": self.scope, "rare_terms": self.rare_terms, "meta": self.meta}

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def learned_fusion(ranker: LinearRanker, lists: Mapping[str, Sequence[tuple[str, float]]], query: Query, docs: DocLookup,
                   weights: Mapping[str, float], rrf_k: int = DEFAULT_RRF_K,
                   features: tuple[list[str], np.ndarray] | None = None) -> list[Fused]:
    """An arm's ``learned`` fusion: the ranker's order for a query in its scope, else RRF with the sources' weights."""
    ranked = ranker.order(lists, query, docs, features)
    return ranked if ranked is not None else fuse(lists, "rrf", weights, rrf_k)


def ranker_path(rankers_dir: Path, name: str) -> Path:
    """Where ranker ``name`` lives; a name that could leave the folder is refused."""
    if not NAME.fullmatch(name):
        raise BadInput(f"ranker name {name!r}: use letters, digits, '_', '.', '-' (at most 64, not starting with a dot)")
    return Path(rankers_dir) / f"{name}.json"


def load_ranker(path: Path) -> LinearRanker:
    """A ranker file, checked: a wrong or hand-edited one fails here, naming the file and what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"ranker {path}: no such file (train one with `mmsearch train-ranker`)") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"ranker {path}: not a JSON ranker file ({e})") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"ranker {path}: format is {raw.get('format') if isinstance(raw, dict) else raw!r}, "
                          f"expected {FORMAT!r}")
    try:
        sources = tuple((str(s["name"]), str(s["kind"])) for s in raw["sources"])
        bad = [k for _, k in sources if k not in KINDS]
        if not sources or bad:
            raise ValueError(f"sources must be a non-empty list of dense/bm25 sources (got kinds {bad})")
        names = feature_names(sources)
        if raw["features"] != names:
            raise ValueError(f"features {raw['features']} are not the ones this version computes ({names})")
        vecs = [np.asarray(raw[k], dtype=np.float64) for k in ("mean", "scale", "weights")]
        for k, v in zip(("mean", "scale", "weights"), vecs):
            if v.shape != (len(names),) or not np.all(np.isfinite(v)):
                raise ValueError(f"{k} must be {len(names)} finite numbers")
        if np.any(vecs[1] <= 0):
            raise ValueError("scale must be positive")
        window = int(raw.get("doc_window", DOC_WINDOW))
        if not 0 <= window <= 1000:
            raise ValueError(f"doc_window {window} is outside 0..1000")
        scope = raw.get("scope", "all")
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
        rare_terms = raw.get("rare_terms", TITLE_MAX_TERMS)
        if isinstance(rare_terms, bool) or not isinstance(rare_terms, int) or not 0 <= rare_terms <= TITLE_MAX_TERMS:
            raise ValueError(f"rare_terms {rare_terms!r} is not a whole number in 0..{TITLE_MAX_TERMS}")
        title, length = raw.get("title_field"), raw.get("length_field")
        if not all(f is None or isinstance(f, str) for f in (title, length)):
            raise ValueError("title_field and length_field must be field names or null")
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"ranker {path}: {e if not isinstance(e, KeyError) else f'missing {e}'}") from e
    mean, scale, weights = vecs
    return LinearRanker(sources, mean, scale, weights, title_field=title, length_field=length, doc_window=window,
                        scope=scope, rare_terms=rare_terms, meta=raw.get("meta") or {})
