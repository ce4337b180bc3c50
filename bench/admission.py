"""Admission control under overload, through the running stack's search API (`make demo`).

    .venv/bin/python bench/admission.py [--scene text2text] [--seconds 10] [--levels 1,2,3,4,6] [--factor 4]

Drives POST /v1/search closed-loop at each level to find the saturating concurrency (the smallest
whose throughput is within 5% of the best measured), then at `--factor` times it. The target
(issue 17): there, admitted requests' p99 stays within 2x their p99 at concurrency 1, the rest are
refused with 429 within 10 ms, and nothing else fails. A refused worker backs off 50 ms (shorter
than the server's Retry-After of 1 s: a harsh client). Queries are the demo's WordNet lemmas and
stamp captions. Writes a JSON result and prints one line. The admission settings reported are the
server's own, read from its /metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import closed_loop
from bench.load import bodies
from mmsearch.config import load_config
from mmsearch.runtime.endpoints import running_config


def admission_limits(url: str) -> dict[str, float]:
    """The served process's admission settings, from its /metrics (not this process's config)."""
    import re
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r'^mmsearch_admission\{what="(\w+)"\} (\S+)$', text, re.M)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default="text2text", choices=("text2text", "text2image"))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--levels", default="1,2,3,4,6")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--url", help="the search API (default: the running stack's, from config)")
    ap.add_argument("--backoff-ms", type=float, default=50.0, help="a refused worker's pause before its next request")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "admission.json")
    args = ap.parse_args(argv)
    cfg = running_config(load_config())
    url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    backoff = args.backoff_ms / 1000
    from mmsearch.offline.datasets.stamps import root as stamps_root

    data = Path(cfg.data_dir)
    body = bodies(data, stamps_root(data / "data"))[args.scene]
    closed_loop(url, body, 2, 3.0)  # warm-up
    levels = {}
    for c in (int(x) for x in args.levels.split(",")):
        levels[c] = closed_loop(url, body, c, args.seconds, backoff)
        print(f"  c={c}: {levels[c]['qps']:.0f} qps, p99 {levels[c]['p99_ms']:.1f} ms, 429s {levels[c]['refused_429']}", flush=True)
    best = max(v["qps"] for v in levels.values())
    saturating = min(c for c, v in levels.items() if v["qps"] >= 0.95 * best)
    over = saturating * args.factor
    base = closed_loop(url, body, 1, args.seconds, backoff)  # c=1 again, next to the overload run
    loaded = closed_loop(url, body, over, args.seconds * 2, backoff)
    limits = admission_limits(url)
    ratio = loaded["p99_ms"] / base["p99_ms"]
    errors = sum(loaded["errors"].values())
    met = ratio <= 2.0 and (loaded["refused_p99_ms"] or 0.0) <= 10.0 and errors == 0
    result = {"scene": args.scene, "url": url, "levels": {str(c): v for c, v in levels.items()}, "saturating": saturating,
              "overload_concurrency": over, "backoff_ms": args.backoff_ms, "c1": base, "overload": loaded, "admitted_p99_ratio": ratio, "target_met": met,
              "admission": limits}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    refused = f"{loaded['refused_429']} x 429 in p99 {loaded['refused_p99_ms']:.1f} ms" if loaded["refused_429"] else "no 429"
    print(f"admission: {args.scene}, saturating c={saturating} ({best:.0f} qps); c=1 p99 {base['p99_ms']:.1f} ms; "
          f"c={over}: {loaded['qps']:.0f} qps admitted, p99 {loaded['p99_ms']:.1f} ms = {ratio:.2f}x c=1 (target <= 2), "
          f"{refused} (target <= 10 ms), other errors {errors} | max_inflight {limits['max_inflight']:.0f} "
          f"max_queue {limits['max_queue']:.0f} service {limits.get('service_seconds', 0) * 1000:.1f} ms -> "
          f"{'MET' if met else 'not met'} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
