"""Training the learned ranker (ranking/ranker.py) of a fused arm on judged queries.

    mmsearch train-ranker --scene text2text --arm learned --judged dev.jsonl [--judged clicks.jsonl] --name NAME

Each judged query is recalled the way the arm's sources recall it (the served model's vectors from
the index, BM25 from the live lexical build, as many hits as each source's recall_top_k), its
candidates get the serving code's features, and a pairwise logistic regression learns which of
every (relevant, other) pair should rank first; each query weighs the same, so a query class with
many candidates does not drown the others. The L2 strength is chosen by cross-validation over
queries (nDCG@10). Judged queries come from the judged sets (the development split only: the
held-out split judges the arm) and from clicks (the flywheel's ``pairs`` writes the click log's
queries as a judged set, ``train_judged.jsonl``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.config import Config, lexical_root, load_config
from mmsearch.errors import BadInput, ConfigError
from mmsearch.experiments.spec import Params, parse_experiments
from mmsearch.offline.eval_served import Judged, load_judged
from mmsearch.ranking.fusion import RARE_DF, TITLE_MAX_TERMS, rare_query
from mmsearch.ranking.ranker import DOC_WINDOW, RARE_TERMS, SCOPES, LinearRanker, Query, feature_names, learned_fusion, window_ids
from mmsearch.ranking_metrics import ranked_metrics

L2_GRID = (0.01, 0.1, 1.0, 10.0)
FOLDS = 5
MIN_QUERIES = 20


@dataclass
class Example:
    """One judged query as the arm recalled it."""

    query: Query
    lists: dict[str, list[tuple[str, float]]]
    docs: dict[str, dict[str, Any] | None]
    relevant: dict[str, float]
    tag: str = ""
    # features per (sources, fields, window): cross-validation fits and scores 20 rankers on the same candidates
    features: dict[tuple[Any, ...], tuple[list[str], np.ndarray]] = field(default_factory=dict, repr=False, compare=False)


def _rows(ex: Example, r: LinearRanker) -> tuple[list[str], np.ndarray]:
    key = (r.sources, r.title_field, r.length_field, r.doc_window)
    if key not in ex.features:
        ex.features[key] = r.features_of(ex.lists, ex.query, ex.docs)
    return ex.features[key]


def fit(examples: Sequence[Example], sources: Sequence[tuple[str, str]], title_field: str | None = None,
        length_field: str | None = None, l2: float = 1.0, scope: str = "named", doc_window: int = DOC_WINDOW,
        rare_terms: int = RARE_TERMS) -> LinearRanker:
    """Pairwise logistic regression over the queries in scope: for every query, each relevant candidate against
    each other candidate."""
    from scipy.optimize import minimize

    r = LinearRanker(tuple(sources), np.zeros(0), np.zeros(0), np.zeros(0), title_field, length_field, doc_window, scope,
                     rare_terms)
    rows = [(ex, _rows(ex, r)) for ex in examples]
    kept = [(ex, f) for ex, f in rows if f[0] and r.in_scope(ex.query, f[1])]
    examples, feats = [ex for ex, _ in kept], [f for _, f in kept]
    allx = np.concatenate([x for _, x in feats if len(x)] or [np.zeros((1, len(feature_names(sources))))])
    mean, scale = allx.mean(axis=0), allx.std(axis=0)
    scale[scale < 1e-9] = 1.0
    diffs, weights = [], []
    for ex, (ids, x) in zip(examples, feats):
        pos = [j for j, d in enumerate(ids) if ex.relevant.get(d, 0) > 0]
        neg = [j for j, d in enumerate(ids) if ex.relevant.get(d, 0) <= 0]
        if not pos or not neg:
            continue
        z = (x - mean) / scale
        d = (z[pos][:, None, :] - z[neg][None, :, :]).reshape(-1, z.shape[1])
        diffs.append(d)
        weights.append(np.full(len(d), 1.0 / len(d)))
    if len(diffs) < 2:
        raise BadInput(f"{len(diffs)} judged queries have a relevant document among their candidates: too few to train on")
    dm, wv = np.concatenate(diffs), np.concatenate(weights) / len(diffs)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        m = dm @ w
        p = np.exp(-np.logaddexp(0.0, m))  # sigmoid(-m), stable
        return float(wv @ np.logaddexp(0.0, -m) + 0.5 * l2 / len(diffs) * w @ w), -(dm.T @ (wv * p)) + l2 / len(diffs) * w

    res = minimize(loss, np.zeros(dm.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    r.mean, r.scale, r.weights = mean, scale, res.x
    r.meta = {"l2": l2, "queries_used": len(diffs), "pairs": len(dm), "converged": bool(res.success)}
    return r


def served_run(r: LinearRanker, ex: Example, weights: dict[str, float]) -> list[str]:
    """The first ten ids as the arm serves them (learned_fusion: out-of-scope queries by RRF with ``weights``)."""
    return [f.id for f in learned_fusion(r, ex.lists, ex.query, ex.docs, weights, features=_rows(ex, r))[:10]]


def evaluate(r: LinearRanker, examples: Sequence[Example], weights: dict[str, float]) -> dict[str, dict[str, float]]:
    """Recall@10, MRR@10, nDCG@10 per tag and over all, as the arm serves them."""
    runs = [served_run(r, ex, weights) for ex in examples]
    tags = sorted({ex.tag for ex in examples})
    out = {t: ranked_metrics([ru for ru, ex in zip(runs, examples) if ex.tag == t],
                             [ex.relevant for ex in examples if ex.tag == t], (1, 10)) for t in tags}
    out["all"] = ranked_metrics(runs, [ex.relevant for ex in examples], (1, 10))
    return out


def _fold(ex: Example, folds: int) -> int:
    return int(hashlib.sha256(" ".join(ex.query.terms).encode()).hexdigest()[:8], 16) % folds


def choose_l2(examples: Sequence[Example], sources: Sequence[tuple[str, str]], title_field: str | None,
              length_field: str | None, weights: dict[str, float], scope: str = "named", grid: Sequence[float] = L2_GRID,
              folds: int = FOLDS, doc_window: int = DOC_WINDOW, rare_terms: int = RARE_TERMS) -> tuple[float, dict[float, float]]:
    """The L2 strength with the best cross-validated nDCG@10 (folds by query text, so a repeated query stays in one)."""
    scores: dict[float, float] = {}
    for l2 in grid:
        runs: list[list[str]] = []
        rel: list[dict[str, float]] = []
        for k in range(folds):
            train = [e for e in examples if _fold(e, folds) != k]
            test = [e for e in examples if _fold(e, folds) == k]
            if not test or not train:
                continue
            r = fit(train, sources, title_field, length_field, l2, scope, doc_window, rare_terms)
            runs += [served_run(r, e, weights) for e in test]
            rel += [e.relevant for e in test]
        scores[l2] = ranked_metrics(runs, rel, (10,))["ndcg@10"]
    return max(scores, key=lambda v: (scores[v], -v)), scores


def arm_params(cfg: Config, scene: str, arm: str, experiments: Path | None = None) -> Params:
    """The arm's effective parameters (scene defaults under the arm's own) from the experiments file (``experiments``,
    else the config's experiments_file)."""
    path = Path(experiments or cfg.experiments_file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read the experiments file {path}: {e}") from e
    exp = parse_experiments(text, str(path))
    sc = exp.scenes.get(scene)
    if sc is None:
        raise BadInput(f"experiments: no scene {scene!r} (have {sorted(exp.scenes)})")
    p = sc.arm_params(arm)
    if p is None:
        raise BadInput(f"experiments: scene {scene} has no arm {arm!r}")
    if not p.sources:
        raise BadInput(f"experiments: arm {arm!r} of {scene} has no sources: a ranker orders fused sources' candidates")
    return p


def collect(cfg: Config, judged: Sequence[Judged], p: Params, progress: Callable[[int, int], None] | None = None,
            doc_window: int = DOC_WINDOW) -> list[Example]:
    """Each judged query recalled by the arm's sources, offline (the served model through ONNX Runtime in this
    process, the index's vectors, the live lexical build) with the documents of each source's first hits."""
    from mmsearch.clients.lexical import LexicalStore
    from mmsearch.encoders.encoder import open_encoder
    from mmsearch.offline.indexing.stores import open_stores

    assert p.sources and p.index
    lex = LexicalStore(lexical_root(cfg))
    dense = [s for s in p.sources if s.kind == "dense"]
    bm25 = [s for s in p.sources if s.kind == "bm25"]
    vecs: dict[str, np.ndarray] = {}
    for s in dense:
        model = s.embed_model or p.embed_model
        if not model:
            raise ConfigError(f"source {s.name}: no embed_model (the arm's or the scene's)")
        if model not in vecs:
            vecs[model] = open_encoder(Path(cfg.model_repository) / model).encode_texts([j.query for j in judged])
    out: list[Example] = []
    with open_stores(cfg.milvus.uri, cfg.mongo.uri, Path(cfg.data_dir), cfg.mongo.database) as (vs, store):
        for q, j in enumerate(judged):
            lists: dict[str, list[tuple[str, float]]] = {}
            for s in dense:
                lists[s.name] = vs.search(s.index or p.index, vecs[s.embed_model or p.embed_model or ""][q : q + 1],
                                          s.recall_top_k)[0]
            for s in bm25:
                lists[s.name] = lex.search(s.index or p.index, j.query, s.recall_top_k, s.fields)
            rare = bool(bm25) and rare_query(j.query, lambda t: lex.rarest_df(bm25[0].index or p.index or "", t, bm25[0].fields),
                                             p.rare_df or RARE_DF)
            window = window_ids(lists, [(s.name, s.kind) for s in p.sources], doc_window)
            docs = dict(zip(window, store.get_many(p.index, window)))
            out.append(Example(Query.of(j.query, rare), lists, docs, j.relevant, j.tags[0] if j.tags else ""))
            if progress:
                progress(q + 1, len(judged))
    return out


def train(examples: Sequence[Example], p: Params, length_field: str | None = "text", scope: str = "named",
          grid: Sequence[float] = L2_GRID, doc_window: int = DOC_WINDOW, rare_terms: int = RARE_TERMS) -> LinearRanker:
    """Choose L2 by cross-validation, fit on every example in scope, and record the figures."""
    if len(examples) < MIN_QUERIES:
        raise BadInput(f"{len(examples)} judged queries: a ranker needs at least {MIN_QUERIES}")
    if scope not in SCOPES:
        raise BadInput(f"scope {scope!r}: one of {', '.join(SCOPES)}")
    if not 0 <= rare_terms <= TITLE_MAX_TERMS:
        raise BadInput(f"rare terms {rare_terms}: between 0 and {TITLE_MAX_TERMS}")
    assert p.sources
    sources = [(s.name, s.kind) for s in p.sources]
    weights = {s.name: s.weight for s in p.sources}
    l2, cv = choose_l2(examples, sources, p.title_field, length_field, weights, scope, grid, doc_window=doc_window,
                       rare_terms=rare_terms)
    r = fit(examples, sources, p.title_field, length_field, l2, scope, doc_window, rare_terms)
    r.meta.update(cv_ndcg10={str(k): round(v, 4) for k, v in cv.items()}, train=evaluate(r, examples, weights),
                  queries=len(examples), numpy=np.__version__)
    return r


def _progress(done: int, total: int, t0: float = time.monotonic()) -> None:
    if done % 100 == 0 or done == total:
        rate = done / max(time.monotonic() - t0, 1e-9)
        print(f"\rrecalled {done}/{total} queries, {rate:.0f}/s, ETA {(total - done) / max(rate, 1e-9):.0f} s",
              end="\n" if done == total else "", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsearch train-ranker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default="text2text")
    ap.add_argument("--arm", required=True, help="the fused arm whose sources the ranker orders (from the experiments file)")
    ap.add_argument("--judged", type=Path, action="append", required=True,
                    help="judged queries (JSONL; repeat: a judged set's development split, the flywheel's train_judged.jsonl)")
    ap.add_argument("--name", required=True, help="the ranker's name: written to <rankers_dir>/NAME.json")
    ap.add_argument("--experiments", type=Path, help="the experiments YAML holding the arm (default: config experiments_file; "
                                                      "with Consul, the file you push)")
    ap.add_argument("--length-field", default="text", help="the document field whose length is a feature ('' for none)")
    ap.add_argument("--doc-window", type=int, default=DOC_WINDOW,
                    help="each source's first hits whose documents (title, length) are features (1-1000)")
    ap.add_argument("--scope", choices=SCOPES, default="named",
                    help="the queries the ranker orders (named: those naming a title or holding a rare term; the rest by RRF)")
    ap.add_argument("--rare-terms", type=int, default=RARE_TERMS,
                    help=f"scope named: a rare term routes a query of at most this many terms to the ranker (0-{TITLE_MAX_TERMS})")
    args = ap.parse_args(argv)
    from mmsearch.ranking.ranker import ranker_path
    from mmsearch.runtime.endpoints import running_config

    cfg = running_config(load_config())  # the stores of the stack `mmsearch up` runs, if one does
    path = ranker_path(cfg.rankers_dir, args.name)
    p = arm_params(cfg, args.scene, args.arm, args.experiments)
    judged = [j for f in args.judged for j in load_judged(f)]
    t0 = time.monotonic()
    if not 1 <= args.doc_window <= 1000:
        raise BadInput(f"--doc-window {args.doc_window}: between 1 and 1000")
    if not 0 <= args.rare_terms <= TITLE_MAX_TERMS:
        raise BadInput(f"--rare-terms {args.rare_terms}: between 0 and {TITLE_MAX_TERMS}")
    examples = collect(cfg, judged, p, lambda d, n: _progress(d, n, t0), args.doc_window)
    r = train(examples, p, args.length_field or None, args.scope, doc_window=args.doc_window, rare_terms=args.rare_terms)
    r.meta.update(trained_on=[str(f) for f in args.judged], scene=args.scene, arm=args.arm, index=p.index)
    r.save(path)
    cv = r.meta["cv_ndcg10"]
    print(f"ranker {args.name}: {len(examples)} queries, l2 {r.meta['l2']} (cross-validated nDCG@10 {cv}), "
          f"train nDCG@10 {r.meta['train']['all']['ndcg@10']:.3f} -> {path}")
    return 0
