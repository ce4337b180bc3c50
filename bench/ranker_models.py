"""Which learned ranker (issue 34): pairwise logistic regression or LightGBM lambdarank, over every query or only
those that name a title or hold a rare term, on the same features, judged per class on the held-out split.

    .venv/bin/python bench/ranker_models.py [--arm learned]        (LightGBM: .venv/bin/pip install lightgbm)

Needs a stack serving the demo's texts index (`make demo`). Every judged query of the development and held-out
splits is recalled once, offline, the way the arm's sources recall it (mmsearch.offline.ranker_training.collect);
each model is trained on the development split and its order, as the arm would serve it (queries out of scope by
RRF with the arm's weights), is scored on the held-out split against dense and BM25 alone. A model "never loses"
when on every class its Recall@10 and MRR@10 are at least the better single source's (offline lists: the served
figures are bench/ranking.py's). Writes bench/results/ranker_models.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results_io import write_result
from mmsearch.config import load_config
from mmsearch.offline.datasets.judged import SETS_DIR
from mmsearch.offline.eval_served import load_judged
from mmsearch.offline.ranker_training import Example, arm_params, collect, fit
from mmsearch.ranking.fusion import fuse
from mmsearch.ranking.ranker import LinearRanker
from mmsearch.ranking_metrics import ranked_metrics
from mmsearch.runtime.endpoints import running_config

METRICS = ("recall@10", "mrr@10")


def per_class(runs: list[list[str]], exs: list[Example]) -> dict[str, dict[str, float]]:
    tags = sorted({e.tag for e in exs})
    out = {t: ranked_metrics([r for r, e in zip(runs, exs) if e.tag == t], [e.relevant for e in exs if e.tag == t], (1, 10))
           for t in tags}
    out["all"] = ranked_metrics(runs, [e.relevant for e in exs], (1, 10))
    return out


def lightgbm_runs(dev: list[Example], held: list[Example], r: LinearRanker, weights: dict[str, float]) -> list[list[str]] | None:
    """LightGBM lambdarank on the same features and scope; None when lightgbm is not installed."""
    try:
        import lightgbm as lgb
    except ImportError:
        return None

    def rows(exs: list[Example]) -> list[tuple[Example, list[str], np.ndarray]]:
        out = []
        for e in exs:
            ids, x = r.features_of(e.lists, e.query, e.docs)
            out.append((e, ids, x))
        return out

    train = [(e, ids, x) for e, ids, x in rows(dev) if ids and r.in_scope(e.query, x)]
    model = lgb.LGBMRanker(objective="lambdarank", n_estimators=200, num_leaves=7, learning_rate=0.05,
                           min_child_samples=20, verbose=-1, random_state=0)
    model.fit(np.concatenate([x for _, _, x in train]),
              np.concatenate([[int(e.relevant.get(d, 0) > 0) for d in ids] for e, ids, _ in train]),
              group=[len(ids) for _, ids, _ in train])
    runs = []
    for e, ids, x in rows(held):
        if ids and r.in_scope(e.query, x):
            runs.append([ids[j] for j in np.argsort(-model.predict(x), kind="stable")[:10]])
        else:
            runs.append([f.id for f in fuse(e.lists, "rrf", weights)[:10]])
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", default="learned", help="the fused arm whose sources are recalled (text2text)")
    args = ap.parse_args()
    cfg = running_config(load_config())
    p = arm_params(cfg, "text2text", args.arm)
    assert p.sources
    sources = [(s.name, s.kind) for s in p.sources]
    weights = {s.name: s.weight for s in p.sources}
    t0 = time.monotonic()
    dev = collect(cfg, load_judged(SETS_DIR / "text2text_dev.jsonl"), p)
    held = collect(cfg, load_judged(SETS_DIR / "text2text_heldout.jsonl"), p)
    print(f"recalled {len(dev)} dev + {len(held)} held-out queries in {time.monotonic() - t0:.0f} s")
    table = {name: per_class([[i for i, _ in e.lists[name][:10]] for e in held], held) for name, _ in sources}
    singles = list(table)
    for scope in ("all", "named"):
        t1 = time.monotonic()
        r = fit(dev, sources, p.title_field, "text", l2=10.0, scope=scope)
        runs = [[f.id for f in (r.order(e.lists, e.query, e.docs) or fuse(e.lists, "rrf", weights))[:10]] for e in held]
        table[f"logistic_{scope}"] = {**per_class(runs, held), "train_s": round(time.monotonic() - t1, 1)}  # type: ignore[dict-item]
        t1 = time.monotonic()
        lgb_runs = lightgbm_runs(dev, held, r, weights)
        if lgb_runs is not None:
            table[f"lightgbm_{scope}"] = {**per_class(lgb_runs, held), "train_s": round(time.monotonic() - t1, 1)}  # type: ignore[dict-item]
    classes = sorted(c for c in table[singles[0]] if c != "all")
    never_loses = {m: all(t[c][k] >= max(table[s][c][k] for s in singles) for c in classes for k in METRICS)
                   for m, t in table.items() if m not in singles}
    for m, t in table.items():
        print(f"{m:>18} | " + " | ".join(f"{c} {t[c]['recall@10']:.3f}/{t[c]['mrr@10']:.3f}" for c in [*classes, "all"])
              + f" | nDCG@10 {t['all']['ndcg@10']:.3f}" + (f" never loses: {never_loses[m]}" if m in never_loses else ""))
    summary = "ranker models (held-out nDCG@10, offline lists): " + ", ".join(
        f"{m} {t['all']['ndcg@10']:.3f}{'' if m in singles else ' (never loses)' if never_loses[m] else ''}" for m, t in table.items())
    write_result("ranker_models", "Learned ranker: logistic regression vs LightGBM, every query vs named ones", summary,
                 {"description": "the demo's texts index (82,115 WordNet glosses); judged sets "
                                 "mmsearch/offline/datasets/judged_sets/text2text_{dev,heldout}.jsonl; the arm's sources recalled "
                                 "offline", "synthetic": False, "arm": args.arm,
                  "lightgbm": "lightgbm_all" in table},
                 {"heldout": table, "never_loses": never_loses})


if __name__ == "__main__":
    main()
