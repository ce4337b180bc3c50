"""Closed-loop load against a running stack (`make demo`), with server memory over time.

    .venv/bin/python bench/load.py --concurrency 4 --duration 600 [--mix text2text:0.6,text2image:0.3,image2image:0.1]

Queries come from the demo data (.mmsearch/demo: WordNet lemmas, Tux Paint captions and images).
Reports QPS, p50/p95/p99, errors by kind, and the RSS of every server process of the stack
(Triton, secantusdb, Milvus, the mmsearch services) sampled every 2 s; writes a JSON result
and prints one line. Sends traffic only to the configured 127.0.0.1 ports, bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import encode_and_search_ms, run_workers, served_search_shape, text_bodies
from mmsearch.client.search_client import SearchClient, overload_delay
from mmsearch.config import load_config
from mmsearch.errors import MMSearchError, Overloaded
from mmsearch.runtime.endpoints import running_config, stack_pid
from mmsearch.runtime.supervisor import descendants, rss_kb


def _argv(pid: int) -> list[str]:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0"))[:-1]
    except OSError:
        return []


def process_name(pid: int) -> str:
    """A readable name for one process of the stack (each Triton python-backend stub by its model)."""
    argv = _argv(pid)
    exe = Path(argv[0]).name if argv else "?"
    if exe == "triton_python_backend_stub" and len(argv) > 1:
        parts = Path(argv[1]).parts  # .../repository/<model>/<version>/model.py
        return f"stub {parts[-3]}" if len(parts) >= 3 else "stub"
    if exe == "tritonserver":
        return "tritonserver"
    if any(a.endswith("secantusd-py") or a == "mmsearch.runtime.secantusd" for a in argv[:3]):
        return "secantusdb"
    if exe == "milvus":
        return "milvus"
    if "mmsearch" in argv and argv.index("mmsearch") + 1 < len(argv):
        return argv[argv.index("mmsearch") + 1]  # serve-models, serve-preprocess, serve-retrieval, serve-web
    return f"{exe}[{pid}]"


def server_pids(cfg) -> dict[str, int]:
    """Every process of the running stack: all descendants of the `mmsearch up` that recorded itself
    over this data dir (endpoints.stack_pid), Triton's python-backend stubs included."""
    root = stack_pid(cfg)
    if root is None:
        return {}
    out = {"up": root}
    for pid in descendants(root):
        name = process_name(pid)
        out[name if name not in out else f"{name}[{pid}]"] = pid
    return out


def rss_mb(pid: int) -> float:
    return rss_kb(pid) / 1024


def bodies(data_dir: Path, image_root: Path, n: int = 300) -> dict[str, list[dict]]:
    images = [json.loads(line) for line in (data_dir / "demo" / "images.jsonl").read_text().splitlines()[:60]]
    return {**text_bodies(data_dir, n),
            "image2image": [{"scene": "image2image", "query": {"image_b64": base64.b64encode((image_root / im["image"]).read_bytes()).decode()},
                             "user_id": f"u{i}"} for i, im in enumerate(images)]}


def irreducible_ms(cfg, api: SearchClient, queries: list[str], index: str = "texts") -> dict[str, float]:
    """p50 of the work a text2text query cannot avoid, in this one process: encode (the served model's
    ONNX file, ONNX Runtime, 1 thread) + the search the dense arm sends, straight to the stack's Milvus."""
    from mmsearch.clients.vectors import VectorStore, index_spec
    from mmsearch.modelrepo.local_model import LocalModel
    from mmsearch.runtime.embedded import running_store

    uri = cfg.milvus.uri or running_store("milvus", Path(cfg.data_dir))
    if not uri:
        raise SystemExit("no running Milvus found for the irreducible measurement")
    enc = LocalModel(Path(cfg.model_repository) / "minilm", threads=1)
    vs = VectorStore(uri, spec=index_spec(cfg.milvus))
    try:
        k, breadth = served_search_shape(api, "text2text", {"recall": "dense"}, "load-bench")
        return encode_and_search_ms(enc, vs, index, queries, k, breadth)
    finally:
        vs.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds (600 for the soak)")
    ap.add_argument("--mix", default="text2text:0.6,text2image:0.3,image2image:0.1")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    ap.add_argument("--irreducible", action="store_true",
                    help="also measure in-process encode + direct Milvus search, and the ratio of the text2text dense arm's "
                         "p50 to it (bench/overhead.py interleaves the two, for a steadier ratio)")
    args = ap.parse_args(argv)
    if not 1 <= args.concurrency <= 256 or not 1 <= args.duration <= 3600:
        raise SystemExit("--concurrency 1..256 and --duration 1..3600")
    cfg = running_config(load_config())
    from mmsearch.offline.datasets.stamps import root as stamps_root

    client = SearchClient(f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}", timeout_s=30)
    pool = bodies(Path(cfg.data_dir), stamps_root(Path(cfg.data_dir) / "data"))
    mix = [(s, float(w)) for s, w in (x.split(":") for x in args.mix.split(","))]
    scenes, weights = [s for s, _ in mix], [w for _, w in mix]
    pids = server_pids(cfg)
    if "serve-retrieval" not in pids:
        raise SystemExit("no running stack found (start it with `make demo`)")
    lat: dict[str, list[float]] = {s: [] for s in scenes}
    dense: list[float] = []  # text2text searches the dense arm served: what the irreducible ratio compares with
    errors: dict[str, int] = {}
    stages: list[dict[str, float]] = []
    rss: list[dict] = []
    stop_at = time.monotonic() + args.duration
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        in_a_row = 0  # 429s in a row: each waits as Retry-After asks, longer each time (a refused client that
        while time.monotonic() < stop_at:  # comes straight back burns the CPU the admitted searches need)
            scene = rng.choices(scenes, weights)[0]
            body = rng.choice(pool[scene])
            t0 = time.perf_counter()
            try:
                out = client.search_body(body)
                dt = time.perf_counter() - t0
                with lock:
                    lat[scene].append(dt)
                    stages.append(out.get("timings_ms", {}))
                    if scene == "text2text" and out.get("experiment", {}).get("recall") == "dense":
                        dense.append(dt)
                in_a_row = 0
            except Overloaded as e:
                with lock:
                    errors["Overloaded"] = errors.get("Overloaded", 0) + 1
                time.sleep(overload_delay(e, in_a_row, rng))
                in_a_row += 1
            except MMSearchError as e:
                with lock:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

    def sampler() -> None:
        t_start = time.monotonic()
        while time.monotonic() < stop_at:
            sample = {n: round(rss_mb(p), 1) for n, p in pids.items()}
            # a process that is gone reads 0: left out (it shows in "exited"), not counted as a drop to 0 MB
            rss.append({"t": round(time.monotonic() - t_start, 1), **{n: v for n, v in sample.items() if v > 0}})
            time.sleep(2)

    wall = run_workers(worker, args.concurrency, [sampler])
    allv = np.asarray([x for v in lat.values() for x in v]) * 1000
    res = {"concurrency": args.concurrency, "duration_s": wall, "requests": int(allv.size), "qps": allv.size / wall,
           "p50_ms": float(np.percentile(allv, 50)), "p95_ms": float(np.percentile(allv, 95)), "p99_ms": float(np.percentile(allv, 99)),
           "per_scene_p99_ms": {s: float(np.percentile(np.asarray(v) * 1000, 99)) for s, v in lat.items() if v},
           "errors": errors, "rss_mb": rss,
           "stage_p50_ms": {k: float(np.median([s.get(k, 0.0) for s in stages])) for k in ("qp", "embed", "recall", "rerank", "summary", "total")}
           if stages else {}}
    if args.irreducible and dense:
        irr = irreducible_ms(cfg, client, [b["query"]["text"] for b in pool["text2text"][:200]])
        t2t_p50 = float(np.percentile(np.asarray(dense) * 1000, 50))
        res["irreducible_p50_ms"] = irr
        res["text2text_dense_p50_ms"] = t2t_p50
        res["ratio_text2text_p50_to_irreducible"] = t2t_p50 / irr["total"]
    first, last = rss[0], rss[-1]
    # flat = the mean of the last minute within 10% of the mean of the minute after the warm-up (the first minute)
    warm = [r for r in rss if r["t"] >= min(60.0, args.duration / 3)]
    window = max(1, min(30, len(warm) // 3))  # samples every 2 s: 30 = a minute
    exited = [n for n in pids if n not in rss[-1]]
    res["exited"] = exited
    change = {n: (np.mean([r[n] for r in warm[-window:] if n in r]) / max(1e-9, np.mean([r[n] for r in warm[:window] if n in r])) - 1)
              for n in pids if n not in exited}
    res["rss_change_after_warmup"] = {n: round(float(c), 4) for n, c in change.items()}
    res["rss_flat_within_10pct"] = bool(all(abs(c) <= 0.10 for c in change.values())) and not exited
    worst = max(change, key=lambda n: abs(change[n]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    mem = (f"{len(pids)} processes, {sum(first.values()) - first['t']:.0f}->{sum(last.values()) - last['t']:.0f} MB in all; "
           f"after warm-up the largest change {worst} {change[worst]:+.1%}{f', EXITED: {exited}' if exited else ''} -> flat within 10%: "
           f"{'yes' if res['rss_flat_within_10pct'] else 'NO'}")
    print(f"load: c={args.concurrency} {wall:.0f} s mix {args.mix}: {res['qps']:.1f} qps, p50 {res['p50_ms']:.1f} / p95 {res['p95_ms']:.1f} / "
          f"p99 {res['p99_ms']:.1f} ms, errors {sum(errors.values())} {errors or ''} | stage p50 "
          + " ".join(f"{k} {v:.1f}" for k, v in res["stage_p50_ms"].items()) + " ms"
          + (f" | text2text dense arm p50 {res['text2text_dense_p50_ms']:.1f} ms ({len(dense)} searches) / irreducible p50 "
             f"{res['irreducible_p50_ms']['total']:.1f} ms (encode {res['irreducible_p50_ms']['encode']:.1f} + search "
             f"{res['irreducible_p50_ms']['search']:.1f}, measured after) -> ratio {res['ratio_text2text_p50_to_irreducible']:.2f}"
             if "irreducible_p50_ms" in res else "")
          + f" | RSS {mem} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
