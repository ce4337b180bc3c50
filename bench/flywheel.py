"""The flywheel on the demo's data, through the served API: simulated users -> a better model -> A/B.

    .venv/bin/python bench/flywheel.py [--url http://127.0.0.1:8080] [--queries 3000]
    .venv/bin/python bench/flywheel.py --scene text2image [--users 1000]

Needs a running demo (`make demo`). Simulated users (offline/flywheel/simulate.py: a cascade click
model with position bias and noise) search the text2text scene of all 82,115 WordNet glosses with the
names of monosemous nouns ("golden retriever" -> its gloss; the truth is that synset) and click;
then `run_flywheel` turns their log into pairs, fine-tunes MiniLM, gates it against the served int8
MiniLM on held-out queries, publishes it, rebuilds the index with it and gives it an arm (layer
``flywheel``, --traffic % of users). The bench then
- evaluates both arms on the held-out queries through the API (forced arms, left out of A/B stats),
- lets a fresh set of simulated users search, and reads ab-report's verdict for the new arm.
With ``--scene text2image`` the users search the stamps' captions ("A zebra."; the truth is every
stamp carrying that caption) in the text->image scene, pinned for the run to the fine-tuned dual
(layer ``model``) and image-only recall (layer ``recall``), so the A/B compares the served dual with
the flywheel's dual alone; the round fine-tunes the dual's heads and rebuilds ``images_ft``.
Writes bench/results/flywheel[_text2image].json and prints one line. The experiments file is restored
at the end (the new model and index stay; `mmsearch index drop` removes the index).
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

from mmsearch.client.search_client import SearchClient
from mmsearch.config import load_config
from mmsearch.experiments.spec import parse_experiments
from mmsearch.offline.datasets import stamps
from mmsearch.offline.datasets.wordnet import noun_synsets
from mmsearch.offline.eval_served import Judged, evaluate_served, load_judged
from mmsearch.offline.flywheel.loop import FlywheelOptions, GateRefused, run_flywheel
from mmsearch.offline.flywheel.pairs import PairOptions, heldout, normalise
from mmsearch.offline.flywheel.simulate import ClickModel, simulate
from mmsearch.offline.indexing.stores import open_stores
from mmsearch.retrieval_service.ab_report import render, report
from mmsearch.runtime.endpoints import running_config


def monosemous_queries(cache: Path, n: int, seed: int) -> list[Judged]:
    """Names of nouns with one sense only, so the truth of a query is one synset."""
    synsets = noun_synsets(cache)
    senses = Counter(w.lower() for s in synsets for w in s.words)
    pool = [s for s in synsets if senses[s.words[0].lower()] == 1 and len(s.gloss) > 10]
    rng = random.Random(seed)
    return [Judged(s.words[0].replace("_", " "), {s.offset: 1.0}, ("lemma",)) for s in rng.sample(pool, min(n, len(pool)))]


def caption_queries(cache: Path, n: int, seed: int) -> list[Judged]:
    """Each distinct stamp caption, relevant: every stamp that carries it."""
    by_caption: dict[str, dict[str, float]] = {}
    for st in stamps.stamps(cache):
        by_caption.setdefault(st.caption, {})[st.id] = 1.0
    rng = random.Random(seed)
    keys = sorted(by_caption)
    return [Judged(c, by_caption[c], ("caption",)) for c in rng.sample(keys, min(n, len(keys)))]


# text2image: the scene's layers pinned for the run (the experiments file is restored at the end)
PIN_TEXT2IMAGE = [("{name: base, traffic: 50,", "{name: base, traffic: 0,"),
                  ("{name: finetuned, traffic: 50,", "{name: finetuned, traffic: 100,"),
                  ("{name: image, traffic: 50}", "{name: image, traffic: 100}"),
                  ("- name: fused\n            traffic: 50", "- name: fused\n            traffic: 0")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="")
    ap.add_argument("--scene", default="text2text", choices=("text2text", "text2image"))
    ap.add_argument("--queries", type=int, default=3000, help="distinct queries the simulated users draw from")
    ap.add_argument("--judged", type=Path, help="the users' queries from this judged JSONL instead (e.g. the stamps' "
                    "everyday dev descriptions)")
    ap.add_argument("--test-judged", type=Path, help="a judged JSONL never searched by the users, also scored on both arms")
    ap.add_argument("--users", type=int, default=1800, help="simulated users before the flywheel (5 searches each)")
    ap.add_argument("--ab-users", type=int, default=3000, help="fresh simulated users for the A/B phase (3 searches each)")
    ap.add_argument("--traffic", type=float, default=50.0, help="%% of users the new arm gets")
    ap.add_argument("--epochs", type=int, default=0, help="default: the flywheel's (text 3, dual 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    images = args.scene == "text2image"
    args.out = args.out or ROOT / "bench" / "results" / ("flywheel_text2image.json" if images else "flywheel.json")

    cfg = running_config(load_config())  # (a stack started with ports 0 recorded the ones it got)
    cfg = cfg.model_copy(update={"flywheel": cfg.flywheel.model_copy(update={"traffic": args.traffic})})
    url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    client = SearchClient(url, timeout_s=30)
    if not client.ready():
        sys.exit(f"no ready search API at {url}: start the demo first (make demo)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    cache = cfg.data_dir / "data"
    queries = (load_judged(args.judged) if args.judged else caption_queries(cache, args.queries, args.seed) if images
               else monosemous_queries(cache, args.queries, args.seed))
    clicks = ClickModel(patience=0.8, p_relevant=0.9, p_noise=0.02)
    exp_file = Path(cfg.experiments_file)
    original = exp_file.read_text()
    scene, index, model = ("text2image", "images_ft", "dual_ft_text") if images else ("text2text", "texts", "minilm")
    t0 = time.perf_counter()
    started = time.time()  # the round learns from this run's users only, not from earlier runs' clicks
    try:
        if images:
            pinned = original
            for old, new in PIN_TEXT2IMAGE:
                if old not in pinned:
                    sys.exit(f"{exp_file} has no {old!r}: pin the text2image layers by hand")
                pinned = pinned.replace(old, new)
            exp_file.write_text(pinned)
            time.sleep(3)  # the watched file is reloaded within a second or two
        # one user at a time: `mmsearch up` admits a search per core and queues as many; the clicks' timing stays one user's
        before = simulate(client, scene, queries, args.users, 5, clicks, seed=args.seed, top_k=10, user_prefix=f"fw-{stamp}",
                          workers=1)
        if before.get("errors", 0) > 0.01 * args.users * 5:
            sys.exit(f"{before['errors']} of {args.users * 5} simulated searches failed: {before}")
        t_sim = time.perf_counter() - t0
        run_dir = cfg.data_dir / "bench-cache" / "flywheel" / stamp
        try:
            state = run_flywheel(FlywheelOptions(run_dir, index, model, scene=scene,
                                                 name=f"{model.removesuffix('_text')}_fw{stamp[-6:]}", epochs=args.epochs,
                                                 api=url, since=started), cfg)
        except GateRefused as e:  # a refusal is a result too: the served model stays, no arm was added
            steps = json.loads((run_dir / "state.json").read_text())["steps"]
            args.out.write_text(json.dumps({"queries": len(queries), "simulated_before": before, "steps": steps,
                                            "refused": e.message}, indent=2, default=str) + "\n")
            print(f"flywheel ({scene}): {steps['pairs']['train_pairs']} pairs from {args.users * 5} simulated searches; "
                  f"finetune validation {steps['finetune']['validation']}; {e.message} -> {args.out.relative_to(ROOT)}")
            return
        t_loop = time.perf_counter() - t0 - t_sim
        steps, new = state["steps"], state["steps"]["arm"]["arm"]
        # held-out truth: every pool query on the held-out side of the split, clicked or not. The click-derived
        # held-out set only holds queries the served arm already answered (its relevant result was shown
        # and clicked), so on it the incumbent looks perfect; the truth set has no such bias.
        clicked_held = load_judged(run_dir / "pairs" / "heldout.jsonl")
        held = [j for j in queries if heldout(normalise(j.query), PairOptions())]
        arms = ("image", "fused") if images else ("dense", "hybrid")
        forces = [{"recall": r, "flywheel": a} for r in arms for a in ("control", new)]
        served = evaluate_served(client, scene, held, forces, progress=False)
        served_clicked = evaluate_served(client, scene, clicked_held, forces[:2], progress=False)
        unseen = evaluate_served(client, scene, load_judged(args.test_judged), forces, progress=False) if args.test_judged else []
        ab_start = time.time()
        after = simulate(client, scene, queries, args.ab_users, 3, clicks, seed=args.seed + 1, top_k=10,
                         user_prefix=f"ab-{stamp}", workers=1)
        with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (_, ds):
            rows = [r for r in report(ds, scene, parse_experiments(exp_file.read_text(), str(exp_file)), control="control",
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
        "served_test_judged": {f"{f['recall']}/{f['flywheel']}": r["metrics"] for f, r in zip(forces, unseen)},
        "ab": rows, "seconds": {"simulate": round(t_sim, 1), "loop": round(t_loop, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    m = [r["metrics"] for r in served]
    print(f"flywheel ({scene}): {steps['pairs']['train_pairs']} pairs from {sum(v for k, v in before.items() if k.startswith('searches'))} "
          f"simulated searches; gate {steps['gate']['metric']} {steps['gate']['incumbent']:.3f} -> {steps['gate']['candidate']:.3f}; "
          f"served held-out truth ({len(held)} queries) nDCG@10 {arms[0]} {m[0]['ndcg@10']:.3f} -> {m[1]['ndcg@10']:.3f}, "
          f"{arms[1]} {m[2]['ndcg@10']:.3f} -> {m[3]['ndcg@10']:.3f}, R@10 {arms[0]} {m[0]['recall@10']:.3f} -> "
          f"{m[1]['recall@10']:.3f} (clicked held-out, biased to the incumbent: "
          f"{served_clicked[0]['metrics']['ndcg@10']:.3f} -> {served_clicked[1]['metrics']['ndcg@10']:.3f}); "
          + (f"never-searched test set ({args.test_judged.name}) R@10 {arms[0]} {unseen[0]['metrics']['recall@10']:.3f} -> "
             f"{unseen[1]['metrics']['recall@10']:.3f}, {arms[1]} {unseen[2]['metrics']['recall@10']:.3f} -> "
             f"{unseen[3]['metrics']['recall@10']:.3f}; " if unseen else "") + f"A/B CTR {row['ctr']:.3f} vs control "
          f"{row['ctr'] - vs['diff']:.3f}, diff {vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}] p={vs['p_value']:.4f} "
          f"({row['users']} users); loop {t_loop:.0f} s -> {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
