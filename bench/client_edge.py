"""What the API client adds to a served search: mmsearch's SearchClient against the standard library's
http.client (what SearchClient used before mmsearch/client/http11.py) and a raw socket (one send, the body cut
by Content-Length: the floor of any Python client).

    .venv/bin/python bench/client_edge.py [--queries 1000]

Against the running demo (`make demo`), text2text with the dense arm forced, concurrency 1: each query is
sent by the three clients in turn, the order rotating, over one kept connection each. The edge of a search
is its round trip less the service's own total (timings_ms.total). Writes a JSON result and prints one line.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import running_stack_config, text_bodies
from mmsearch.client.search_client import SearchClient

SCENE, FORCE = "text2text", {"recall": "dense"}


def body_of(q: str) -> bytes:
    return json.dumps({"scene": SCENE, "query": {"text": q}, "force": FORCE, "user_id": "client-edge-bench"}).encode()


def stdlib_client(port: int) -> Callable[[str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(q: str) -> dict:
        conn.request("POST", "/v1/search", body=body_of(q), headers={"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())

    return send


def raw_client(port: int) -> Callable[[str], dict]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(q: str) -> dict:
        body = body_of(q)
        sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        n = next(int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if k.lower() == b"content-length")
        while len(rest) < n:
            rest += sock.recv(65536)
        return json.loads(rest)

    return send


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "client_edge.json")
    args = ap.parse_args(argv)
    cfg = running_stack_config()
    port = cfg.retrieval.http_port
    queries = [b["query"]["text"] for b in text_bodies(Path(cfg.data_dir), args.queries + 30, sample=True)["text2text"]]
    api = SearchClient(f"http://127.0.0.1:{port}", 30)
    clients = {"search_client": lambda q: api.search(SCENE, q, force=FORCE, user_id="client-edge-bench"),
               "stdlib_http_client": stdlib_client(port), "raw_socket": raw_client(port)}
    for q in queries[:30]:  # warm-up
        for send in clients.values():
            send(q)
    e2e: dict[str, list[float]] = {k: [] for k in clients}
    edge: dict[str, list[float]] = {k: [] for k in clients}
    orders = list(itertools.permutations(clients))
    for i, q in enumerate(queries[30:]):
        for name in orders[i % len(orders)]:
            t0 = time.perf_counter()
            out = clients[name](q)
            dt = time.perf_counter() - t0
            e2e[name].append(dt)
            edge[name].append(dt - out["timings_ms"]["total"] / 1000)
    api.close()
    res = {"queries": len(queries) - 30, "arm": "recall=dense", "concurrency": 1,
           "p50_ms": {k: float(np.median(v)) * 1000 for k, v in e2e.items()},
           "edge_p50_ms": {k: float(np.median(v)) * 1000 for k, v in edge.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    parts = " | ".join(f"{k} p50 {res['p50_ms'][k]:.2f} ms, edge {res['edge_p50_ms'][k]:.2f}" for k in clients)
    over = res["edge_p50_ms"]["search_client"] - res["edge_p50_ms"]["raw_socket"]
    print(f"client_edge: text2text dense c=1, {res['queries']} queries, clients interleaved: {parts} "
          f"-> SearchClient over the raw socket {over:+.2f} ms -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
