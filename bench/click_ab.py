"""An A/B decided by simulated clicks through the served API: does it pick the arm the judgements prefer?

    make demo                                   # in another terminal: the stack this measures
    .venv/bin/python bench/click_ab.py [--users 600] [--searches 5] [--treatment learned] [--control dense]

A second retrieval service (the demo's stores, models and query log) serves a copy of the demo's experiments in
which the text2text layer ``recall`` becomes layer ``click_ab`` under a fresh salt, splitting users 50/50 between
``--treatment`` and ``--control``. Simulated users (mmsearch.offline.flywheel.simulate: the flywheel's cascade
click model, with position bias and noise) search the held-out judged text2text queries of every class and
click by the judgements. The verdict is `mmsearch ab-report`'s, over this run's searches only: users per arm,
CTR with its 95% interval, the difference to the control with its interval and p-value, and the sample-ratio
check. Beside it, each arm's nDCG@10 on the same queries (forced, through the same service): the A/B should pick
the arm the judgements prefer, with an interval that excludes zero.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml

from bench.common import running_stack_config
from bench.results_io import write_result
from bench.served_ab import start_b, stop
from mmsearch.client.search_client import SearchClient
from mmsearch.experiments.spec import parse_experiments
from mmsearch.offline.datasets.judged import SETS_DIR
from mmsearch.offline.eval_served import evaluate_served, load_judged
from mmsearch.offline.flywheel.simulate import ClickModel, simulate
from mmsearch.retrieval_service.ab_report import open_query_log, render, report

LAYER = "click_ab"


def split_experiments(text: str, treatment: str, control: str, salt: str) -> str:
    """The demo's experiments with text2text's recall layer renamed, salted afresh and split 50/50."""
    exp = yaml.safe_load(text)
    layers = exp["scenes"]["text2text"]["layers"]
    layer = next((lay for lay in layers if lay["name"] == "recall"), None)
    if layer is None:
        raise SystemExit("the running experiments have no text2text layer 'recall'")
    names = [a["name"] for a in layer["arms"]]
    for arm in (treatment, control):
        if arm not in names:
            raise SystemExit(f"arm {arm!r} is not in the text2text recall layer (arms: {', '.join(names)})")
    layer["name"], layer["salt"] = LAYER, salt
    for a in layer["arms"]:
        a["traffic"] = 50 if a["name"] in (treatment, control) else 0
    return yaml.safe_dump(exp, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--searches", type=int, default=5, help="searches per simulated user")
    ap.add_argument("--treatment", default="learned")
    ap.add_argument("--control", default="dense")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cfg = running_stack_config()
    held = load_judged(SETS_DIR / "text2text_heldout.jsonl")
    salt = f"click-ab-{int(time.time())}"
    text = split_experiments(Path(cfg.experiments_file).read_text(), args.treatment, args.control, salt)
    model = ClickModel()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "experiments.yaml").write_text(text)
        proc, url = start_b(cfg, {"MMSEARCH_EXPERIMENTS_FILE": str(tmp / "experiments.yaml"), "MMSEARCH_CONSUL_ADDR": ""}, tmp)
        try:
            client = SearchClient(url, timeout_s=60)
            since = time.time() - 1
            counts = simulate(client, "text2text", held, args.users, args.searches, model=model, seed=args.seed,
                              user_prefix=salt, workers=2)
            time.sleep(2 * cfg.retrieval.query_log_flush_s + 1)  # the log's last entries written
            offline = evaluate_served(client, "text2text", held, forces=[{LAYER: args.treatment}, {LAYER: args.control}], ks=(10,))
        finally:
            stop(proc)
    with open_query_log(cfg) as store:
        rows = [r for r in report(store, "text2text", parse_experiments(text), args.control, since) if r["layer"] == LAYER]
    print(render(rows))
    by_arm = {r["arm"]: r for r in rows}
    t, c = by_arm.get(args.treatment), by_arm.get(args.control)
    if t is None or c is None or t["vs_control"] is None:
        raise SystemExit(f"the log has no searches of both arms in layer {LAYER}: {sorted(by_arm)}; simulation counts {counts}")
    d = t["vs_control"]
    ndcg = {args.treatment: offline[0]["metrics"]["ndcg@10"], args.control: offline[1]["metrics"]["ndcg@10"]}
    by_class = {tag: {arm: offline[i]["by_tag"][tag]["metrics"]["ndcg@10"] for i, arm in enumerate((args.treatment, args.control))}
                for tag in offline[0]["by_tag"]}
    judged_better = max(ndcg, key=ndcg.get)
    ab_pick = args.treatment if d["low"] > 0 else args.control if d["high"] < 0 else None
    figures = {
        "arms": {a: {k: by_arm[a][k] for k in ("users", "requests", "clicked", "clicks", "ctr", "ctr_low", "ctr_high")} for a in by_arm},
        "difference": d, "srm_p": t["srm_p"], "ndcg@10_heldout": ndcg, "ndcg@10_by_class": by_class, "judged_better": judged_better, "ab_pick": ab_pick,
        "picks_the_better_arm": ab_pick == judged_better, "click_model": vars(model), "simulation": counts,
    }
    summary = (f"click A/B on the demo, text2text held-out queries ({len(held)}, 6 classes), {args.users} users x {args.searches}: "
               f"CTR {args.treatment} {t['ctr']:.3f} vs {args.control} {c['ctr']:.3f}, difference {d['diff']:+.3f} "
               f"[{d['low']:+.3f}, {d['high']:+.3f}] p={d['p_value']:.3g}; nDCG@10 {ndcg[args.treatment]:.3f} vs {ndcg[args.control]:.3f}: "
               f"the A/B {'picks ' + ab_pick if ab_pick else 'picks neither'}, the judgements prefer {judged_better}")
    write_result("click_ab", "A/B by simulated clicks: does it pick the better arm?", summary,
                 {"description": "the running demo's texts index, held-out judged text2text queries (6 classes), simulated users "
                                 "clicking by the judgements (cascade model with position bias and noise)",
                  "synthetic": False, "users": args.users, "searches_per_user": args.searches},
                 figures, argv=["bench/click_ab.py", *(argv if argv is not None else sys.argv[1:])], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
