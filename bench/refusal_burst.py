"""How fast a burst of searches is refused: N clients send a search at the same instant while the
search API's admission queue is full, and each refusal's latency is taken from the moment it was sent.

    .venv/bin/python bench/refusal_burst.py [--url URL] [--clients 32] [--rounds 40] [--gap 0.25]

Against the running search API (`make demo`): the first few of each burst are admitted (the stack's
`max_inflight` + `max_queue`), the rest refused; the figure is the refusals'. A harsher load than
bench/concurrency.py's closed loops, whose clients drift apart: every refusal of a burst is sent at
the same instant as the admitted searches start (see docs/architecture.md, "Cheap refusals").

When the running stack has an admission gate in front of its search API (`mmsearch up` starts one),
the same bursts also go to the retrieval service's own HTTP port behind it, in alternating blocks of
five, so the two are compared in one run: refusals at the gate (its own process) against refusals
inside the service (behind its searches' interpreter lock). It then also times what the gate costs an
admitted search: c=1 searches one after another, through the gate and straight to the service,
interleaved (`--hop` of each; 0 skips it).

Each client holds one kept connection; all N send within a millisecond, then the next burst follows
`--gap` s after the last answer. Writes a JSON result (command, commit, machine, date, data) and prints
one line.
"""

from __future__ import annotations

import argparse
import os
import selectors
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import kept_connection, read_http_response, search_request, timed_searches
from bench.results_io import write_result


def bursts(port: int, clients: int, rounds: int, gap_s: float) -> dict[str, list[float]]:
    """``rounds`` bursts of ``clients`` simultaneous searches; latencies (ms) by status."""
    socks = [kept_connection(port) for _ in range(clients)]
    sel = selectors.DefaultSelector()
    by_status: dict[int, list[float]] = {}
    req = search_request()
    try:
        for _ in range(rounds):
            sent = {}
            for s in socks:
                sent[s] = time.perf_counter()
                s.sendall(req)
                sel.register(s, selectors.EVENT_READ)
            left = clients
            while left:
                for key, _ in sel.select(timeout=30):
                    s = key.fileobj
                    status = read_http_response(s)[0]  # type: ignore[arg-type]
                    by_status.setdefault(status, []).append((time.perf_counter() - sent[s]) * 1000)  # type: ignore[index]
                    sel.unregister(s)
                    left -= 1
            time.sleep(gap_s)
    finally:
        for s in socks:
            s.close()
    return {str(k): v for k, v in by_status.items()}


def hop(port: int, n: int) -> list[float]:
    """``n`` searches one after another on one kept connection: each one's latency (ms)."""
    with kept_connection(port) as s:
        got = timed_searches(s, n=n)
    if set(got) != {200}:
        raise SystemExit(f"searches at c=1 were answered {sorted(got)}: is the stack busy with something else?")
    return got[200]


def merged(parts: list[dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    raw: dict[str, list[float]] = {}
    for p in parts:
        for k, v in p.items():
            raw.setdefault(k, []).extend(v)
    return {k: summary(v) for k, v in sorted(raw.items())}


def summary(ms: list[float]) -> dict[str, float]:
    import numpy as np

    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"n": len(ms), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": max(ms)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="the search API (default: the running stack's)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=40, help="bursts")
    ap.add_argument("--gap", type=float, default=0.25, help="seconds between bursts")
    ap.add_argument("--hop", type=int, default=300, help="c=1 searches through the gate and to the service each (0: none)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.clients < 1 or args.rounds < 1 or args.hop < 0:
        ap.error("--clients and --rounds must be at least 1, --hop at least 0")
    targets: dict[str, str] = {}
    if args.url:
        targets["api"] = args.url
    else:
        from bench.common import running_stack_config
        from mmsearch.runtime.endpoints import stack_ports

        cfg = running_stack_config()
        r = cfg.retrieval
        ports = stack_ports(cfg)
        if "gate" in ports:  # the public port is the gate's; the service's own is behind it
            targets = {"gate": f"http://{r.host}:{r.http_port}", "service": f"http://{r.host}:{ports['retrieval']['http']}"}
        else:
            targets["api"] = f"http://{r.host}:{r.http_port}"
    local = {}
    for name, url in targets.items():
        host, _, port = url.split("//", 1)[-1].rstrip("/").rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            ap.error(f"--url: {url!r}: this bench talks to a local server (http://127.0.0.1:PORT)")
        local[name] = int(port)
    load0 = os.getloadavg()
    raw: dict[str, list[dict[str, list[float]]]] = {name: [] for name in local}
    hops: dict[str, list[float]] = {name: [] for name in local}
    block = 5 if len(local) > 1 else args.rounds
    done = 0
    while done < args.rounds:  # alternating blocks: the machine's drift falls on both alike
        n = min(block, args.rounds - done)
        for name, port in local.items():
            raw[name].append(bursts(port, args.clients, n, args.gap))
        done += n
    if len(local) > 1 and args.hop:
        for _ in range(10):
            for name, port in local.items():
                hops[name] += hop(port, max(1, args.hop // 10))
    res = {name: merged(parts) for name, parts in raw.items()}

    def line(name: str) -> str:
        refused = res[name].get("429")
        shown = (f"p50 {refused['p50_ms']:.1f} / p99 {refused['p99_ms']:.1f} / max {refused['max_ms']:.1f} ms"
                 if refused else "none refused")
        others = {k: v["n"] for k, v in res[name].items() if k not in ("200", "429")}
        return (f"{name} {targets[name]}: {refused['n'] if refused else 0} refusals {shown}; admitted "
                f"{res[name].get('200', {}).get('n', 0)}, other answers {others or 0}")

    summary_line = f"refusal_burst ({args.clients} at once x {args.rounds}): " + "; ".join(line(n) for n in local)
    hop_ms = {name: summary(v) for name, v in hops.items() if v}
    if len(hop_ms) == 2:
        g, d = hop_ms["gate"]["p50_ms"], hop_ms["service"]["p50_ms"]
        summary_line += f" | c=1 search p50 through the gate {g:.2f} ms, to the service {d:.2f} ms (+{g - d:.2f} ms)"
    summary_line += f" | load {load0[0]:.1f}"
    data = {"description": f"bursts of {args.clients} identical text2text searches against the running stack "
                           + ", ".join(f"{k} at {v}" for k, v in targets.items()), "synthetic": False}
    write_result("refusal_burst", "Refusals in a burst", summary_line, data, {
        "clients": args.clients, "rounds": args.rounds, "gap_s": args.gap, "loadavg_start": load0,
        "latency_by_status": res, "c1_search_ms": hop_ms},
        argv=["bench/refusal_burst.py", *(sys.argv[1:] if argv is None else argv)], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
