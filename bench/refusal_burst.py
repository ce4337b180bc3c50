"""How fast a burst of searches is refused: N clients send a search at the same instant while the
search API's admission queue is full, and each refusal's latency is taken from the moment it was sent.

    .venv/bin/python bench/refusal_burst.py [--url URL] [--clients 32] [--rounds 40] [--gap 0.25]

Against the running search API (`make demo`): the first few of each burst are admitted (the stack's
`max_inflight` + `max_queue`), the rest refused; the figure is the refusals'. A harsher load than
bench/concurrency.py's closed loops, whose clients drift apart: here every refusal of a burst waits
behind the others and behind the admitted search's start, in one process (see docs/architecture.md,
"Cheap refusals").

Each client holds one kept connection; all N send within a millisecond, then the next burst follows
`--gap` s after the last answer. Writes a JSON result (command, commit, machine, date, data) and prints
one line.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import read_http_response
from bench.results_io import write_result

BODY = json.dumps({"scene": "text2text", "query": {"text": "a small domesticated cat"}}).encode()


def _request(body: bytes = BODY) -> bytes:
    return (b"POST /v1/search HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def bursts(port: int, clients: int, rounds: int, gap_s: float) -> dict[str, Any]:
    """``rounds`` bursts of ``clients`` simultaneous searches; latencies (ms) by status."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(clients)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sel = selectors.DefaultSelector()
    by_status: dict[int, list[float]] = {}
    req = _request()
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
    return {str(k): summary(v) for k, v in sorted(by_status.items())}


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
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.clients < 1 or args.rounds < 1:
        ap.error("--clients and --rounds must be at least 1")
    if args.url:
        url = args.url
    else:
        from bench.common import running_stack_config

        cfg = running_stack_config()
        url = f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    host, _, port = url.split("//", 1)[-1].rstrip("/").rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        ap.error(f"--url: {url!r}: this bench talks to a local server (http://127.0.0.1:PORT)")
    load0 = os.getloadavg()
    res = bursts(int(port), args.clients, args.rounds, args.gap)
    refused = res.get("429")
    shown = (f"p50 {refused['p50_ms']:.1f} / p99 {refused['p99_ms']:.1f} / max {refused['max_ms']:.1f} ms"
             if refused else "none refused")
    others = {k: v["n"] for k, v in res.items() if k not in ("200", "429")}
    summary_line = (f"refusal_burst ({url}, {args.clients} at once x {args.rounds}): {refused['n'] if refused else 0} "
                    f"refusals {shown}; admitted {res.get('200', {}).get('n', 0)}, other answers {others or 0} "
                    f"| load {load0[0]:.1f}")
    data = {"description": f"bursts of {args.clients} identical text2text searches against the running stack at {url}",
            "synthetic": False}
    write_result("refusal_burst", "Refusals in a burst", summary_line, data, {"clients": args.clients, "rounds": args.rounds,
                 "gap_s": args.gap, "loadavg_start": load0, "latency_by_status": res},
                 argv=["bench/refusal_burst.py", *(sys.argv[1:] if argv is None else argv)], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
