"""The flywheel on the demo's data, through the served API: simulated users -> a better model -> A/B.

    .venv/bin/python bench/flywheel.py [--url http://127.0.0.1:8080] [--queries 3000]

Needs a running demo (`make demo`). Simulated users (offline/flywheel/simulate.py: a cascade click
model with position bias and noise) search the text2text scene of all 82,115 WordNet glosses with the
names of monosemous nouns ("golden retriever" -> its gloss; the truth is that synset) and click;
then `run_flywheel` turns their log into pairs, fine-tunes MiniLM, gates it against the served int8
MiniLM on held-out queries, publishes it, rebuilds the index with it and gives it an arm (layer
``flywheel``, --traffic % of users). The bench then
- evaluates both arms on the held-out queries through the API (forced arms, left out of A/B stats),
- lets a fresh set of simulated users search, and reads ab-report's verdict for the new arm.
Writes bench/results/flywheel.json and prints one line. The experiments file is restored at the end
(the new model and index stay; `mmsearch index drop` removes the index).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsearch.client import SearchClient
from mmsearch.config import load_config
from mmsearch.endpoints import running_config
from mmsearch.experiments import parse_experiments
from mmsearch.offline.datasets.wordnet import noun_synsets
from mmsearch.offline.eval_served import Judged, evaluate_served, load_judged
from mmsearch.offline.flywheel.loop import FlywheelOptions, run_flywheel
from mmsearch.offline.flywheel.pairs import PairOptions, heldout, normalise
from mmsearch.offline.flywheel.simulate import ClickModel, simulate
from mmsearch.offline.indexing.stores import open_stores
from mmsearch.retrieval_service.ab_report import render, report


def monosemous_queries(cache: Path, n: int, seed: int) -> list[Judged]:
    """Names of nouns with one sense only, so the truth of a query is one synset."""
    synsets = noun_synsets(cache)
    senses = Counter(w.lower() for s in synsets for w in s.words)
    pool = [s for s in synsets if senses[s.words[0].lower()] == 1 and len(s.gloss) > 10]
    rng = random.Random(seed)
    return [Judged(s.words[0].replace("_", " "), {s.offset: 1.0}, ("lemma",)) for s in rng.sample(pool, min(n, len(pool)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="")
    ap.add_argument("--queries", type=int, default=3000, help="distinct queries the simulated users draw from")
    ap.add_argument("--users", type=int, default=1800, help="simulated users before the flywheel (5 searches each)")
    ap.add_argument("--ab-users", type=int, default=3000, help="fresh simulated users for the A/B phase (3 searches each)")
    ap.add_argument("--traffic", type=float, default=50.0, help="%% of users the new arm gets")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flywheel.json")
    args = ap.parse_args()

    cfg = running_config(load_config())  # (a stack started with ports 0 recorded the ones it got)
    cfg = cfg.model_copy(update={"flywheel": cfg.flywheel.model_copy(update={"traffic": args.traffic})})
    url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    client = SearchClient(url, timeout_s=30)
    if not client.ready():
        sys.exit(f"no ready search API at {url}: start the demo first (make demo)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    queries = monosemous_queries(cfg.data_dir / "data", args.queries, args.seed)
    clicks = ClickModel(patience=0.8, p_relevant=0.9, p_noise=0.02)
    exp_file = Path(cfg.experiments_file)
    original = exp_file.read_text()
    t0 = time.perf_counter()
    try:
        before = simulate(client, "text2text", queries, args.users, 5, clicks, seed=args.seed, top_k=10, user_prefix=f"fw-{stamp}")
        t_sim = time.perf_counter() - t0
        run_dir = cfg.data_dir / "bench-cache" / "flywheel" / stamp
        state = run_flywheel(FlywheelOptions(run_dir, "texts", "minilm", name=f"minilm_fw{stamp[-6:]}", epochs=args.epochs,
                                             api=url), cfg)
        t_loop = time.perf_counter() - t0 - t_sim
        steps, new = state["steps"], state["options"]["name"]
        # held-out truth: every pool query on the held-out side of the split, clicked or not. The click-derived
        # held-out set only holds queries the served arm already answered (its relevant result was shown
        # and clicked), so on it the incumbent looks perfect; the truth set has no such bias.
        clicked_held = load_judged(run_dir / "pairs" / "heldout.jsonl")
        held = [j for j in queries if heldout(normalise(j.query), PairOptions())]
        forces = [{"recall": r, "flywheel": a} for r in ("dense", "hybrid") for a in ("control", new)]
        served = evaluate_served(client, "text2text", held, forces, progress=False)
        served_clicked = evaluate_served(client, "text2text", clicked_held, forces[:2], progress=False)
        ab_start = time.time()
        after = simulate(client, "text2text", queries, args.ab_users, 3, clicks, seed=args.seed + 1, top_k=10,
                         user_prefix=f"ab-{stamp}")
        with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (_, ds):
            rows = [r for r in report(ds, "text2text", parse_experiments(exp_file.read_text(), str(exp_file)), control="control",
                                 since=ab_start) if r["layer"] == "flywheel"]
    finally:
        exp_file.write_text(original)
    print(render(rows))
    row = next(r for r in rows if r["arm"] == new)
    vs = row["vs_control"]
    result = {
        "queries": len(queries), "simulated_before": before, "simulated_ab": after, "steps": steps,
        "served_heldout_truth": {f"{f['recall']}/{f['flywheel']}": r["metrics"] for f, r in zip(forces, served)},
        "served_heldout_clicked": {f"{f['recall']}/{f['flywheel']}": r["metrics"] for f, r in zip(forces, served_clicked)},
        "ab": rows, "seconds": {"simulate": round(t_sim, 1), "loop": round(t_loop, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    m = [r["metrics"] for r in served]
    print(f"flywheel: {steps['pairs']['train_pairs']} pairs from {sum(v for k, v in before.items() if k.startswith('searches'))} "
          f"simulated searches; gate {steps['gate']['metric']} {steps['gate']['incumbent']:.3f} -> {steps['gate']['candidate']:.3f}; "
          f"served held-out truth ({len(held)} queries) nDCG@10 dense {m[0]['ndcg@10']:.3f} -> {m[1]['ndcg@10']:.3f}, "
          f"hybrid {m[2]['ndcg@10']:.3f} -> {m[3]['ndcg@10']:.3f} (clicked held-out, biased to the incumbent: "
          f"{served_clicked[0]['metrics']['ndcg@10']:.3f} -> {served_clicked[1]['metrics']['ndcg@10']:.3f}); A/B CTR {row['ctr']:.3f} vs control "
          f"{row['ctr'] - vs['diff']:.3f}, diff {vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}] p={vs['p_value']:.4f} "
          f"({row['users']} users); loop {t_loop:.0f} s -> {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
