"""Ray Data or Spark for distributed index builds: a local two-worker run of each, against one process.

    python bench/distributed_engines.py --repo REPO --model minilm --docs glosses.jsonl [--n 5000]

Each engine encodes the same texts with two workers (one CPU each, one Encoder per worker, created once),
and one process encodes them with two ONNX Runtime threads. Printed: the engine's start-up (local cluster
or Spark session up), the time from start to the last vector, the throughput after start-up (the workers'
model loads included), and the single process's throughput. The figures are in docs/architecture.md
("Distributed builds"). Needs the `distributed` extra (ray) and, for the Spark half, pyspark and a JVM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BATCH = 256


def single(model_dir: Path, texts: list[str]) -> float:
    from mmsearch.encoders.encoder import open_encoder

    enc = open_encoder(model_dir, None, 2)
    enc.encode(texts[:BATCH])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        enc.encode(texts[i : i + BATCH])
    return len(texts) / (time.perf_counter() - t0)


def ray_run(model_dir: Path, texts: list[str]) -> tuple[float, float]:
    """(seconds to bring the local cluster up, seconds from then to the last vector)"""
    import ray

    class Enc:
        def __init__(self) -> None:
            from mmsearch.encoders.encoder import open_encoder

            self.enc = open_encoder(model_dir, None, 1)

        def __call__(self, batch):
            return {"n": [len(self.enc.encode(list(batch["text"])))]}

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    up = time.perf_counter()
    ds = ray.data.from_items([{"text": t} for t in texts], override_num_blocks=len(texts) // BATCH)
    out = ds.map_batches(Enc, batch_size=BATCH, concurrency=2, num_cpus=1)
    n = sum(row["n"] for row in out.iter_rows())
    t1 = time.perf_counter()
    ray.shutdown()
    assert n == len(texts)
    return up - t0, t1 - t0


def _spark_encode(model_dir: str, part):
    import sys
    import types

    from mmsearch.encoders.encoder import open_encoder

    # a function pickled by value gets fresh globals per task: the cache lives in a module of the worker process
    cache = sys.modules.setdefault("_mmsearch_bench_cache", types.ModuleType("_mmsearch_bench_cache"))
    if not hasattr(cache, "encoder"):
        cache.encoder = open_encoder(model_dir, None, 1)
    batch = list(part)
    if batch:
        yield len(cache.encoder.encode(batch))


def spark_run(model_dir: Path, texts: list[str]) -> tuple[float, float]:
    from pyspark.sql import SparkSession

    t0 = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.python.worker.reuse", "true").getOrCreate())
    sc = spark.sparkContext
    up = time.perf_counter()
    d = str(model_dir)
    n = sum(sc.parallelize(texts, max(1, len(texts) // BATCH)).mapPartitions(lambda p: _spark_encode(d, p)).collect())
    t1 = time.perf_counter()
    spark.stop()
    assert n == len(texts)
    return up - t0, t1 - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--model", default="minilm")
    p.add_argument("--docs", type=Path, required=True)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--engines", default="single,ray,spark")
    a = p.parse_args()
    texts = [json.loads(x)["text"] for x in a.docs.read_text().splitlines()[: a.n]]
    model_dir = a.repo / a.model
    for e in a.engines.split(","):
        if e == "single":
            print(json.dumps({"engine": "single process, 2 threads", "docs": len(texts), "docs_per_s": round(single(model_dir, texts))}), flush=True)
        else:
            up, total = (ray_run if e == "ray" else spark_run)(model_dir, texts)
            print(json.dumps({"engine": e, "docs": len(texts), "up_s": round(up, 1), "total_s": round(total, 1),
                              "docs_per_s_after_up": round(len(texts) / (total - up))}), flush=True)


if __name__ == "__main__":
    main()
