"""A/B of a service setting through the served API: the running demo's retrieval service (A) beside a
second one (B) started with MMSEARCH_* overrides over the same Triton, Milvus, MongoDB and preprocess
service. The same queries go to each in turn (the order alternating), so both meet the same machine.

    .venv/bin/python bench/served_ab.py MMSEARCH_RETRIEVAL_TOKENIZE=service [--queries 1000] [--scene text2text]

Restarting the stack between settings compares two noisy minutes of this machine; this compares
two services within one run. Reports end-to-end p50/p99 and each stage's p50 for A and B, writes a
JSON result and prints one line. Needs `make demo` running; the second service is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import running_stack_config, text_bodies
from mmsearch.client.search_client import SearchClient
from mmsearch.config import config_to_env
from mmsearch.runtime.net import http_ok, wait_until


def start_b(cfg, overrides: dict[str, str], workdir: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **config_to_env(cfg), **overrides}
    ports = workdir / "ports.json"
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve-retrieval", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
                             "--ports-file", str(ports)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "b.log", "wb"))  # noqa: SIM115 - closed with the process
    if not wait_until(lambda: ports.exists() or proc.poll() is not None, 60, 0.2) or proc.poll() is not None:
        stop(proc)
        raise SystemExit(f"service B did not start: {(workdir / 'b.log').read_text()[-2000:]}")
    url = f"http://127.0.0.1:{json.loads(ports.read_text())['http']}"
    if not wait_until(lambda: http_ok(url + "/readyz", 2), 60, 0.5):
        stop(proc)
        raise SystemExit(f"service B never became ready: {(workdir / 'b.log').read_text()[-2000:]}")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summary(lat: list[float], stages: list[dict]) -> dict:
    a = np.asarray(lat) * 1000
    names = sorted({k for s in stages for k in s})
    return {"p50_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "n": len(lat),
            "stage_p50_ms": {k: float(np.median([s.get(k, 0.0) for s in stages])) for k in names}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="+", help="MMSEARCH_NAME=value for service B")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--scene", default="text2text", choices=["text2text", "text2image"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "served_ab.json")
    args = ap.parse_args(argv)
    overrides = dict(o.split("=", 1) for o in args.overrides)
    if bad := [k for k in overrides if not k.startswith("MMSEARCH_")]:
        raise SystemExit(f"overrides must be MMSEARCH_* settings, got {bad}")
    cfg = running_stack_config()
    bodies = text_bodies(Path(cfg.data_dir), args.queries, sample=True)[args.scene]
    with tempfile.TemporaryDirectory() as tmp:
        proc, url_b = start_b(cfg, overrides, Path(tmp))
        try:
            clients = {"A": SearchClient(f"http://127.0.0.1:{cfg.retrieval.http_port}", 30), "B": SearchClient(url_b, 30)}
            for body in bodies[:30]:  # warm-up: connections, caches
                for c in clients.values():
                    c.search_body(body)
            lat: dict[str, list[float]] = {"A": [], "B": []}
            stages: dict[str, list[dict]] = {"A": [], "B": []}
            for i, body in enumerate(bodies):
                for side in ("A", "B") if i % 2 else ("B", "A"):
                    t0 = time.perf_counter()
                    out = clients[side].search_body(body)
                    lat[side].append(time.perf_counter() - t0)
                    stages[side].append(out["timings_ms"])
        finally:
            stop(proc)
    res = {"scene": args.scene, "queries": len(bodies), "overrides": overrides, "A": summary(lat["A"], stages["A"]),
           "B": summary(lat["B"], stages["B"])}
    res["ratio_B_to_A_p50"] = res["B"]["p50_ms"] / res["A"]["p50_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))

    def line(s: dict) -> str:
        st = " ".join(f"{k} {v:.2f}" for k, v in s["stage_p50_ms"].items() if k not in ("split", "rerank"))
        return f"p50 {s['p50_ms']:.2f} / p99 {s['p99_ms']:.1f} ms [{st}]"

    print(f"served_ab {args.scene}, {len(bodies)} queries each, interleaved: A (the demo's service) {line(res['A'])} | "
          f"B ({' '.join(args.overrides)}) {line(res['B'])} | B/A p50 {res['ratio_B_to_A_p50']:.3f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
