"""The learned ranker's scoring product on busy cores: OpenBLAS's own threads against one (runtime/threads.py).

    .venv/bin/python bench/blas_threads.py [--ranker deploy/rankers/wordnet_text2text.json] [--calls 1000] [--trials 6]

A served search scores its ~200 candidates with the ranker (LinearRanker.score: 200 x 57 features, standardised,
times the weights). Each way is measured in a fresh process of its own, numpy's BLAS as it loads (one thread per
core) or limited by runtime.threads.serial_blas as every server CLI now does, first on idle cores, then beside one
busy process per core (pure-Python loops: the demo's other servers). On busy cores the stall is all or nothing per
process: OpenBLAS's helper thread either gets a core at once or waits a scheduler tick (4 ms at 250 Hz) at every
call, by where the scheduler placed it; so each way runs ``--trials`` fresh processes, alternated, and the result
counts the trials whose median call took over 1 ms. Writes a JSON result and prints one line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results_io import write_result

PROBE = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info
from mmsearch.ranking.ranker import load_ranker
from mmsearch.runtime.threads import serial_blas
path, calls, serial = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if serial:
    serial_blas()
ranker = load_ranker(__import__("pathlib").Path(path))
x = np.random.default_rng(0).random((200, len(ranker.weights)))
lat = []
for _ in range(calls):
    t = time.perf_counter(); ranker.score(x); lat.append(time.perf_counter() - t)
ms = np.asarray(lat) * 1000
threads = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"blas_threads": threads, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                  "max_ms": float(ms.max()), "features": int(x.shape[1])}))
"""


def _busy(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def measure(ranker: Path, calls: int, serial: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ranker), str(calls), "1" if serial else "0"], check=False, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"the probe failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranker", type=Path, default=ROOT / "deploy" / "rankers" / "wordnet_text2text.json")
    ap.add_argument("--calls", type=int, default=1000, help="per trial")
    ap.add_argument("--trials", type=int, default=6, help="fresh processes per way and load")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "blas_threads.json")
    args = ap.parse_args(argv)
    if not args.ranker.is_file():
        raise SystemExit(f"--ranker: no such file: {args.ranker}")
    if not 100 <= args.calls <= 1_000_000 or not 1 <= args.trials <= 100:
        raise SystemExit("--calls within 100..1000000, --trials within 1..100")
    cores = os.cpu_count() or 2
    figures: dict = {"cores": cores, "calls_per_trial": args.calls, "candidates": 200, "loads": {}}
    for load in ("idle", "busy"):
        busy: list[multiprocessing.Process] = []
        if load == "busy":
            busy = [multiprocessing.Process(target=_busy, args=(time.time() + 1800,), daemon=True) for _ in range(cores)]
            for p in busy:
                p.start()
        trials: dict[str, list[dict]] = {"default": [], "serial": []}
        try:
            for _ in range(args.trials):
                for way, seen in trials.items():  # alternated: each way sees the same machine
                    seen.append(measure(args.ranker, args.calls, way == "serial"))
        finally:
            for p in busy:
                p.terminate()
                p.join(10)
        figures["loads"][load] = {way: {"trials": t, "stalled_trials": sum(x["p50_ms"] > 1.0 for x in t),
                                        "worst_p50_ms": max(x["p50_ms"] for x in t), "worst_p99_ms": max(x["p99_ms"] for x in t),
                                        "blas_threads": t[0]["blas_threads"]} for way, t in trials.items()}
    first = figures["loads"]["idle"]["default"]["trials"][0]

    def way(load: str, w: str) -> str:
        v = figures["loads"][load][w]
        return (f"{w} (BLAS threads {v['blas_threads']}): {v['stalled_trials']}/{args.trials} trials stalled, worst p50/p99 "
                f"{v['worst_p50_ms']:.3f}/{v['worst_p99_ms']:.3f} ms")

    summary = (f"blas_threads: ranker score (200 x {first['features']}), {args.trials} trials of {args.calls} calls each | "
               + " | ".join(f"{load} cores: {way(load, 'default')}; {way(load, 'serial')}" for load in ("idle", "busy")))
    write_result("blas_threads", "The ranker's product: BLAS threads on busy cores", summary,
                 {"description": f"{args.ranker.name}'s weights, random features for 200 candidates; {cores} busy "
                                 "pure-Python processes beside it for 'busy'", "synthetic": True},
                 figures, argv=["bench/blas_threads.py", *(sys.argv[1:] if argv is None else argv)], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
