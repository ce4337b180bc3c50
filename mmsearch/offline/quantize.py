"""int8 quantisation of text towers, with its speed and retrieval-quality cost measured.

Two methods (``export --quantize``):
- ``int8``: dynamic int8 (ORT ``quantize_dynamic``), weights per channel, activations per tensor. The
  fastest for MiniLM (0.46 ms per query against 1.8 fp32, mean cosine 0.993 to fp32), but one scale for a
  whole activation tensor breaks a model whose activations have outlier channels: all-mpnet-base-v2's
  FFN output projections take it to mean cosine 0.88.
- ``int8-block``: int8 weights in blocks of 128 along the input dimension, activations quantized per
  block as the kernel runs (ORT ``MatMulNBits``, 8 bits, accuracy level 4). The blocks contain the
  outliers: mpnet keeps mean cosine 0.9994 and runs a query in 4.8 ms against 15.8 fp32.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsearch.errors import BadInput, Internal
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.modelrepo.manifest import MODEL_FILE
from mmsearch.ranking_metrics import mrr_at_k, neighbour_overlap, rankings, recall_at_k

BLOCK = 128
# --quantize mode -> (the manifest's method, how the weights are stored)
MODES: dict[str, tuple[str, str]] = {
    "int8": ("dynamic-int8", "QInt8 per-channel"),
    "int8-block": ("block-int8", f"int8 symmetric blocks of {BLOCK} (MatMulNBits, accuracy level 4)"),
}


def mode_of(method: str) -> str:
    """The --quantize mode that wrote a manifest's method (a re-export quantizes the same way)."""
    for mode, (m, _) in MODES.items():
        if m == method:
            return mode
    raise BadInput(f"unknown quantization method {method!r} (known: {', '.join(m for m, _ in MODES.values())})")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise BadInput(f"unknown --quantize {mode!r} (supported: {', '.join(MODES)})")


def quantize_onnx(src: Path, dst: Path, mode: str) -> None:
    check_mode(mode)
    try:
        (_dynamic if mode == "int8" else _blockwise)(src, dst)
    except ImportError as e:  # an older ONNX Runtime (8-bit MatMulNBits came in 1.22), or onnx-ir not installed
        need = "onnxruntime>=1.22 and onnx-ir" if mode == "int8-block" else "onnxruntime"
        raise BadInput(f"--quantize {mode} needs {need} (`make install` installs the project's pinned versions): {e}") from e
    except (ValueError, RuntimeError, AssertionError) as e:  # the quantizers' own checks, onnx's 2 GB limit
        raise Internal(f"--quantize {mode} of {src} failed: {e}") from e


def _dynamic(src: Path, dst: Path) -> None:
    """Per-channel weights: on MiniLM/WordNet mean cosine 0.993 to fp32 (per-tensor: 0.965)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def _blockwise(src: Path, dst: Path) -> None:
    """Every MatMul with a constant 2-D weight becomes MatMulNBits (Gemm and the embedding Gather stay fp32)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    opts = {"block_size": BLOCK, "is_symmetric": True, "accuracy_level": 4, "bits": 8}
    q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=DefaultWeightOnlyQuantConfig(**opts), **opts)
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)


def texts_per_second(model: LocalModel, texts: Sequence[str], batch_size: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timed passes (after one warm-up): this machine is noisy."""
    model.encode_texts(texts[:batch_size], batch_size=batch_size)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.encode_texts(texts, batch_size=batch_size)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def load_eval_pairs(path: Path) -> tuple[list[str], list[str]]:
    """JSONL of {"query": ..., "positive": ...}: each query's positive is its relevant document."""
    queries, docs = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q, d = row["query"], row["positive"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInput(f"{path}:{n}: expected {{\"query\": ..., \"positive\": ...}} ({e})") from e
        if not isinstance(q, str) or not isinstance(d, str) or not q.strip() or not d.strip():
            raise BadInput(f"{path}:{n}: query and positive must be non-empty strings")
        queries.append(q)
        docs.append(d)
    if len(queries) < 2:
        raise BadInput(f"{path}: need at least 2 labelled pairs, found {len(queries)}")
    return queries, docs


def pair_retrieval(model: LocalModel, queries: list[str], docs: list[str], k: int = 10) -> dict[str, float]:
    q, d = model.encode_texts(queries), model.encode_texts(docs)
    ranked = rankings(q @ d.T, k)
    relevant = [{i} for i in range(len(queries))]
    return {"recall@1": recall_at_k(ranked, relevant, 1), f"recall@{k}": recall_at_k(ranked, relevant, k),
            f"mrr@{k}": mrr_at_k(ranked, relevant, k)}


def measure_int8(model_dir: Path, fp32_file: Path, int8_file: Path, texts: Sequence[str],
                 eval_pairs: Path | None = None) -> dict:
    """Figures for the manifest: int8 vs fp32 agreement, speed at batch 1 and 32, optional labelled eval."""
    fp32, int8 = LocalModel(model_dir, onnx_file=fp32_file), LocalModel(model_dir, onnx_file=int8_file)
    texts = list(texts)
    a, b = fp32.encode_texts(texts), int8.encode_texts(texts)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    agreement = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                 "neighbour_overlap@10": neighbour_overlap(a, b, 10)}
    speed = {}
    for bs in (1, 32):
        f, i = texts_per_second(fp32, texts, bs), texts_per_second(int8, texts, bs)
        speed.update({f"fp32_texts_per_s_b{bs}": f, f"int8_texts_per_s_b{bs}": i, f"int8_speedup_b{bs}": i / f})
    labelled = None
    if eval_pairs is not None:
        queries, docs = load_eval_pairs(eval_pairs)
        labelled = {"pairs": str(eval_pairs), "n": len(queries),
                    "fp32": pair_retrieval(fp32, queries, docs), "int8": pair_retrieval(int8, queries, docs)}
    return {"int8_vs_fp32": agreement, "speed": speed, "labelled_eval": labelled}


def swap_in(int8_file: Path, model_dir: Path) -> None:
    shutil.move(str(int8_file), str(model_dir / "1" / MODEL_FILE))
