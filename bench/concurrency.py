"""Throughput, latency and refusals as clients are added: closed-loop searches at c = 1, 2, 4, 8, 16, 32.

    .venv/bin/python bench/concurrency.py [--scenes text2text,text2image] [--levels 1,2,4,8,16,32] [--seconds 10]
    .venv/bin/python bench/concurrency.py --small-stack [--texts 5000] [--images 200]

Against the running stack (`make demo`, demo queries) by default; with --small-stack it first starts
one of its own on free ports, every server a separate process on this host as `mmsearch up` runs them
(secantusdb, Milvus, Triton, preprocess, retrieval) and with `mmsearch up`'s one-host admission
sizing, over the packaged MiniLM and an untrained dual encoder, synthetic texts and generated images:
a cheaper stand-in for the demo, not the demo. Each client honours the Retry-After of a 429
(search_client.overload_delay: never sooner, longer after each refusal in a row, with jitter).

The targets (scale issue, item 4): at c=8 throughput >= 0.9x the best at any concurrency, with p99
<= 3x c=1's; at c=32, refusals only beyond the queue (none at c <= max_inflight + max_queue), each in
<= 10 ms, and 0 other errors. The clients are threads of this one process: a refusal's latency includes
their wait for its interpreter lock. So beside the busiest level a probe, one client in a process of
its own, sends a search every 20 ms and reports its refusals' latency too. At each level it reads where the CPU
went (/proc: every server of the stack by role, and this client), per answer, and how many cores were busy:
throughput is capped where the cores are full, and the level that leaves them idle refuses work it has room for.
Writes a JSON result (command, commit, machine, date, admission
settings, every level) and a plot beside it, and prints one line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.admission import admission_limits
from bench.common import closed_loop, cpu_per_answer, probe_refusals, stack_cpu_s
from bench.results_io import commit, machine, write_result

LEVELS = "1,2,4,8,16,32"
WORDS = ["red", "blue", "green", "small", "large", "old", "new", "quick", "quiet", "bright", "dark", "soft", "warm", "cold",
         "river", "mountain", "city", "forest", "garden", "kitchen", "window", "bridge", "market", "school", "library",
         "station", "harbor", "island", "desert", "valley", "cloud", "storm", "stone", "glass", "paper", "metal", "wood",
         "song", "story", "letter", "picture", "machine", "engine", "tree", "flower", "bird", "horse", "fish"]


def demo_bodies(cfg) -> dict[str, list[dict]]:
    from bench.common import text_bodies

    return text_bodies(Path(cfg.data_dir), 300)


def small_stack(es: ExitStack, texts: int, images: int) -> tuple[str, dict[str, list[dict]], str]:
    """Start the stand-in stack (stopped when ``es`` closes): its search API's URL, query bodies, and what it is."""
    import numpy as np
    from PIL import Image

    from bench.common import export_bench_models
    from mmsearch.config import load_config
    from mmsearch.launcher.stack import Stack, with_free_ports
    from mmsearch.launcher.up import sized_for_one_host
    from mmsearch.offline.indexing.build import BuildOptions, build_index

    tmp = Path(es.enter_context(tempfile.TemporaryDirectory()))
    repo = export_bench_models(tmp)
    (tmp / "experiments.yaml").write_text(
        "scenes:\n"
        "  text2text:\n    defaults: {embed_model: minilm, index: texts, recall_top_k: 100, top_k: 20}\n"
        "  text2image:\n    defaults: {embed_model: dual_text, index: images, recall_top_k: 100, top_k: 20}\n")
    rng = random.Random(0)
    rows = [" ".join(rng.choices(WORDS, k=rng.randint(6, 14))) for _ in range(texts)]
    with open(tmp / "texts.jsonl", "w") as f:
        for i, t in enumerate(rows):
            f.write(json.dumps({"id": f"t{i}", "text": t}) + "\n")
    (tmp / "images").mkdir()
    g = np.random.default_rng(0)
    captions = []
    with open(tmp / "images.jsonl", "w") as f:
        for i in range(images):
            Image.fromarray((g.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp / "images" / f"{i}.png")
            captions.append(" ".join(rng.choices(WORDS, k=4)))
            f.write(json.dumps({"id": f"img{i}", "image": f"{i}.png", "text": captions[-1]}) + "\n")
    cfg = sized_for_one_host(with_free_ports(load_config(overrides={
        "data_dir": str(tmp / "data"), "model_repository": str(repo), "experiments_file": str(tmp / "experiments.yaml")})))
    stack = es.enter_context(Stack(cfg))
    stack.start(("mongo", "milvus"))
    common = dict(repo=repo, data_dir=tmp / "data", milvus_uri=stack.config.milvus.uri, mongo_uri=stack.config.mongo.uri, progress=False)
    build_index(BuildOptions(index="texts", docs=tmp / "texts.jsonl", model="minilm", **common))
    build_index(BuildOptions(index="images", docs=tmp / "images.jsonl", model="dual_image", image_root=tmp / "images",
                             batch_size=32, **common))
    stack.start(("triton", "preprocess", "retrieval"))
    queries = [" ".join(rng.choices(WORDS, k=rng.randint(1, 3))) for _ in range(300)]
    bodies = {"text2text": [{"scene": "text2text", "query": {"text": q}, "user_id": f"u{i}"} for i, q in enumerate(queries)],
              "text2image": [{"scene": "text2image", "query": {"text": c}, "user_id": f"u{i}"} for i, c in enumerate(captions[:300])]}
    what = (f"small stack started by the bench (separate processes on this host, mmsearch up's one-host admission sizing): "
            f"packaged MiniLM over {texts} synthetic texts, untrained dual encoder over {images} generated images")
    return f"http://127.0.0.1:{stack.config.retrieval.http_port}", bodies, what


def cpu_line(cpu: dict) -> str:
    """CPU ms per answer, in all and by the two largest roles, and the cores busy."""
    ms = cpu["ms"]
    top = ", ".join(f"{k} {v:.1f}" for k, v in list(ms.items())[:2])
    return f"CPU {sum(ms.values()):.1f} ms/answer ({top}), {cpu['cores_busy']:.2f} cores busy"


def verdict(levels: dict[str, dict], limits: dict[str, float]) -> dict:
    """The issue's lines for one scene's curve."""
    best = max(v["qps"] for v in levels.values())
    c1, c8, c32 = levels.get("1"), levels.get("8"), levels.get("32")
    room = int(limits.get("max_inflight", 0) + limits.get("max_queue", 0))
    out: dict = {"best_qps": best, "admit_capacity": room}
    if c1 and c8:
        out["c8_qps_ratio"] = c8["qps"] / best
        out["c8_p99_ratio"] = c8["p99_ms"] / c1["p99_ms"]
        out["c8_met"] = out["c8_qps_ratio"] >= 0.9 and out["c8_p99_ratio"] <= 3.0
    if c32:
        out["c32_refused_max_ms"] = c32["refused_max_ms"]
        out["c32_other_errors"] = sum(c32["errors"].values())
        out["refused_within_capacity"] = sum(v["refused_429"] for c, v in levels.items() if int(c) <= room)
        out["c32_met"] = ((c32["refused_max_ms"] or 0.0) <= 10.0 and out["c32_other_errors"] == 0
                          and out["refused_within_capacity"] == 0)
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    for scene, levels in result["scenes"].items():
        cs = [int(k) for k in levels]
        a.plot(cs, [v["qps"] for v in levels.values()], "o-", label=scene)
        b.plot(cs, [v["p50_ms"] for v in levels.values()], "o--", label=f"{scene} p50")
        b.plot(cs, [v["p99_ms"] for v in levels.values()], "o-", label=f"{scene} p99")
        c.plot(cs, [v["refused_429"] / v["wall_s"] for v in levels.values()], "o-", label=scene)
    for ax, title, unit in ((a, "throughput (answers)", "qps"), (b, "latency of answers", "ms"), (c, "429 refusals", "per second")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lim = result["admission"]
    fig.suptitle(f"max_inflight {lim.get('max_inflight', 0):.0f}, max_queue {lim.get('max_queue', 0):.0f} | "
                 f"{machine()['cores']} cores | {commit()} | {result['stack'][:90]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", default="text2text,text2image")
    ap.add_argument("--levels", default=LEVELS)
    ap.add_argument("--seconds", type=float, default=10.0, help="per level")
    ap.add_argument("--url", help="the search API (default: the running stack's, from config)")
    ap.add_argument("--small-stack", action="store_true", help="start a small stack of its own instead (see above)")
    ap.add_argument("--texts", type=int, default=5000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "concurrency.json")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.levels.split(",")]
    scenes = args.scenes.split(",")
    if not all(1 <= c <= 256 for c in levels) or not 1 <= args.seconds <= 600:
        raise SystemExit("--levels within 1..256 and --seconds 1..600")
    with ExitStack() as es:
        if args.small_stack:
            url, pool, what = small_stack(es, args.texts, args.images)
            servers = os.getpid()  # (its servers are this process's children)
        else:
            from bench.common import running_stack_config
            from mmsearch.runtime.endpoints import stack_pid

            cfg = running_stack_config()
            url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
            pool, what = demo_bodies(cfg), f"the running stack at {url} (demo queries)"
            servers = stack_pid(cfg)
            if servers is None:
                raise SystemExit("the stack stopped: start it again with `make demo`")
        result: dict = {"stack": what, "url": url, "loadavg_start": list(os.getloadavg()), "seconds_per_level": args.seconds,
                        "client": "closed loop, SearchClient, Retry-After honoured", "scenes": {}}
        for scene in scenes:
            closed_loop(url, pool[scene], 2, 3.0, None)  # warm-up
            result["scenes"][scene] = {}
            for c in levels:
                probing = c == max(levels) and c > 1
                if probing:  # beside the busiest level, one client of its own: the server's refusals, not the generator's
                    ctx = multiprocessing.get_context("spawn")
                    got, go = ctx.Queue(), ctx.Event()
                    port = int(url.rstrip("/").rpartition(":")[2])
                    prober = ctx.Process(target=probe_refusals, args=(port, args.seconds, 0.02, got, go), daemon=True)
                    prober.start()
                    if got.get(timeout=60) != "ready":
                        raise SystemExit("the refusal probe did not start")
                    go.set()
                cpu0 = stack_cpu_s(servers)
                r = closed_loop(url, pool[scene], c, args.seconds, None)
                r["cpu"] = cpu_per_answer(cpu0, stack_cpu_s(servers), r["requests"], r["wall_s"])
                if probing:
                    seen = got.get(timeout=args.seconds + 60)
                    prober.join(30)
                    r["probe"] = {str(k): {"n": len(v), "p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
                                           "max_ms": max(v)} for k, v in seen.items()}
                result["scenes"][scene][str(c)] = r
                print(f"  {scene} c={c}: {r['qps']:.1f} qps, p50 {r['p50_ms'] or 0:.1f} / p99 {r['p99_ms'] or 0:.1f} ms, "
                      f"429s {r['refused_429']} (max {r['refused_max_ms'] or 0:.1f} ms), errors {r['errors'] or 0}; "
                      f"{cpu_line(r['cpu'])}", flush=True)
        result["admission"] = admission_limits(url)  # the served process's own settings and its service-time estimate
    result["verdict"] = {s: verdict(v, result["admission"]) for s, v in result["scenes"].items()}
    result["loadavg_end"] = list(os.getloadavg())
    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(result, png)

    def row(scene: str) -> str:
        v, d = result["scenes"][scene], result["verdict"][scene]
        curve = " ".join(f"c{c}={x['qps']:.0f}qps/p50 {x['p50_ms'] or 0:.1f}/p99 {x['p99_ms'] or 0:.1f}ms"
                         + (f"/429s {x['refused_429']} max {x['refused_max_ms']:.1f}ms" if x["refused_429"] else "") for c, x in v.items())
        lines = []
        if "c8_met" in d:
            lines.append(f"c8 {d['c8_qps_ratio']:.2f}x best qps, p99 {d['c8_p99_ratio']:.2f}x c1 -> {'MET' if d['c8_met'] else 'not met'}")
        if "c32_met" in d:
            lines.append(f"c32 refusals max {d['c32_refused_max_ms'] or 0:.1f} ms, other errors {d['c32_other_errors']}, "
                         f"429s within capacity {d['refused_within_capacity']} -> {'MET' if d['c32_met'] else 'not met'}")
        top = v[str(max(int(c) for c in v))]
        at = "8" if "8" in v else str(max(int(c) for c in v))
        lines.append(f"c{at} {cpu_line(v[at]['cpu'])}")
        if "429" in top.get("probe", {}):
            p = top["probe"]["429"]
            lines.append(f"probe beside it (one client, own process): {p['n']} refusals p50 {p['p50_ms']:.1f} / p99 "
                         f"{p['p99_ms']:.1f} / max {p['max_ms']:.1f} ms")
        return f"{scene} [{curve}] {'; '.join(lines)}"

    lim = result["admission"]
    summary = (f"concurrency: {' | '.join(row(s) for s in scenes)} | max_inflight {lim.get('max_inflight', 0):.0f} "
               f"max_queue {lim.get('max_queue', 0):.0f} service {lim.get('service_seconds', 0) * 1000:.1f} ms | "
               f"load {result['loadavg_start'][0]:.1f} -> {result['loadavg_end'][0]:.1f}")
    data = {"description": what, "synthetic": bool(args.small_stack)}
    write_result("concurrency" if not args.small_stack else "concurrency_small_stack", "Throughput against concurrency", summary,
                 data, result, argv=["bench/concurrency.py", *(sys.argv[1:] if argv is None else argv)], plot=png, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
