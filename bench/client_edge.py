"""What the API client adds to a served search: mmsearch's SearchClient (on mmsearch/client/http11.py) against
the same client on urllib3 (a connection pool, urllib3.util.Retry honouring Retry-After, the environment's
proxies: the candidate of issue 31 item 6), the standard library's http.client (what SearchClient used before
http11.py) and a raw socket (one send, the body cut by Content-Length: the floor of any Python client).

    .venv/bin/python bench/client_edge.py [--queries 1000]            # against the running demo (`make demo`)
    .venv/bin/python bench/client_edge.py --local [--queries 2000]    # no demo: a fixed-answer app on the real edge

Demo mode: text2text with the dense arm forced, concurrency 1, against the running stack's retrieval service.
Local mode: this process starts the project's HTTP serving edge (runtime.wsgi.WsgiServer: waitress, threads as
the retrieval service sizes them) on 127.0.0.1 and a free port, with a WSGI app that answers every POST
/v1/search with a fixed, realistic search body (20 hits with WordNet-gloss-sized documents) and the app's own
measured time as timings_ms.total (microseconds): no search runs, so the figure is the client's edge (plus
waitress's, the same for every client). The server shares this process (and its GIL) with the clients.

Each query is sent by every client in turn, the order rotating through all permutations, over one kept
connection each. The edge of a search is its round trip less the service's own total (timings_ms.total).
Writes a JSON result (command, commit, machine, date, data) and prints one line.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import random
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
import urllib3

from bench.common import read_http_response, running_stack_config, text_bodies
from bench.results_io import write_result
from mmsearch.client.search_client import SearchClient
from mmsearch.errors import Unavailable

SCENE, FORCE = "text2text", {"recall": "dense"}
CLIENTS = ("search_client", "urllib3_client", "stdlib_http_client", "raw_socket")
THRESHOLD_MS = 0.15  # issue 31 item 6: urllib3 replaces http11 if its edge is within this of http11's


class Urllib3SearchClient(SearchClient):
    """The candidate: SearchClient's API, request bodies and error mapping, with the HTTP on urllib3 in place
    of http11.py: a pool of kept connections (one per thread in use), urllib3.util.Retry (a connection that
    failed before the request went out is retried; a search or an embedding is sent again once after a
    connection cut before its answer, and after a 429 or 503, sleeping what Retry-After asks, at most the
    timeout; a click never twice), and the proxy the environment names (HTTP(S)_PROXY, NO_PROXY)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0, api_key: str | None = None, retries: int = 2):
        super().__init__(base_url, timeout_s, api_key)
        timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._retry = urllib3.Retry(total=retries, connect=retries, read=1, status=retries, other=0, redirect=0,
                                    allowed_methods=frozenset({"GET", "POST"}), status_forcelist=(429, 503),
                                    backoff_factor=0.05, raise_on_status=False, respect_retry_after_header=True,
                                    retry_after_max=max(1, int(timeout_s)))
        self._retry_once = urllib3.Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, raise_on_status=False)
        proxy = urllib.request.getproxies().get(self._scheme)
        pool_args: dict[str, Any] = {"num_pools": 1, "maxsize": 32, "block": False, "timeout": timeout, "retries": self._retry}
        if proxy and not urllib.request.proxy_bypass(self._host):  # through the proxy: the manager, with absolute URLs
            self._manager: urllib3.PoolManager = urllib3.ProxyManager(proxy, **pool_args)
            self._target, self._urlopen = self.base_url, self._manager.urlopen
        else:  # straight to the API's one pool
            self._manager = urllib3.PoolManager(**pool_args)
            self._target, self._urlopen = self._prefix, self._manager.connection_from_url(self.base_url).urlopen

    def close(self) -> None:
        self._manager.clear()

    def _exchange(self, method: str, path: str, data: bytes | None, retry: bool = True) -> tuple[int, str, dict[str, str], bytes]:
        try:
            r = self._urlopen(method, self._target + path, body=data, headers=self._headers, redirect=False,
                              retries=self._retry if retry else self._retry_once, preload_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise Unavailable(self.dependency, str(e) or type(e).__name__) from e
        return r.status, r.reason or "", {k.lower(): v for k, v in r.headers.items()}, r.data


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
        return json.loads(read_http_response(sock)[1])

    return send


GLOSSES = [  # WordNet noun glosses, the demo's documents
    ("dog, domestic dog, Canis familiaris", "a member of the genus Canis (probably descended from the common wolf) that has been "
     "domesticated by man since prehistoric times; occurs in many breeds"),
    ("shoe", "footwear shaped to fit the foot (below the ankle) with a flexible upper of leather or plastic and a sole and heel of "
     "heavier material"),
    ("river", "a large natural stream of water (larger than a creek)"),
    ("lamp", "a piece of furniture holding one or more electric light bulbs"),
    ("violin, fiddle", "bowed stringed instrument that is the highest member of the violin family; this instrument has four "
     "strings and a hollow body and an unfretted fingerboard and is played with a bow"),
]
WORDS = ["red", "running", "shoes", "dog", "river", "lamp", "violin", "bright", "small", "old", "wooden", "garden", "house",
         "music", "water", "light", "bird", "tree", "stone", "city", "blue", "winter", "bread", "cup", "chair", "window", "road"]


def fixed_search_app() -> Callable[[dict[str, Any], Any], list[bytes]]:
    """POST /v1/search answered with a fixed 20-hit search body, written as the service writes one (json_bytes),
    with the app's own time as timings_ms.total; anything else 404."""
    from mmsearch.retrieval_service.response import json_bytes

    hits = [{"id": str(1000000 + 7919 * i), "score": round(0.83 - 0.01 * i, 6), "score_type": "cosine", "sources": ["dense"],
             "doc": {"title": GLOSSES[i % len(GLOSSES)][0], "text": GLOSSES[i % len(GLOSSES)][1]}} for i in range(20)]
    served = [0]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        t0 = time.perf_counter()
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != "/v1/search":
            start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", "2")])
            return [b"{}"]
        req = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        served[0] += 1
        out = {"request_id": f"{served[0]:032x}", "user_id": req.get("user_id", ""), "results": hits, "offset": 0,
               "has_more": True, "experiment": {"recall": "dense"}, "config_version": "fixed",
               "timings_ms": {"qp": 0.0, "embed": 0.0, "recall": 0.0, "summary": 0.0, "total": 0.0}}
        out["timings_ms"]["total"] = (time.perf_counter() - t0) * 1000
        body = json_bytes(out)
        start_response("200 OK", [("Content-Type", "application/json"), ("X-Request-Id", out["request_id"]),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


def machine() -> dict[str, Any]:
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), None) \
        if Path("/proc/meminfo").exists() else None
    return {"cpu_cores": os.cpu_count(), "memory_mib": mem, "platform": platform.platform(), "python": platform.python_version(),
            "urllib3": urllib3.__version__, "loadavg_at_start": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--local", action="store_true", help="no demo: a fixed-answer WSGI app on the real edge (waitress) in this process")
    ap.add_argument("--queries", type=int, default=None, help="1000 against the demo, 2000 local")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "client_edge.json")
    args = ap.parse_args(argv)
    n = args.queries or (2000 if args.local else 1000)
    info = machine()
    server = None
    if args.local:
        from mmsearch.config import load_config
        from mmsearch.runtime.wsgi import WsgiServer

        r = load_config().retrieval  # threads as the retrieval service sizes its HTTP server
        server = WsgiServer(fixed_search_app(), "127.0.0.1", 0, max(r.workers, r.max_inflight + r.max_queue + 32), "client-edge-bench")
        port = server.port
        rnd = random.Random(0)
        queries = [" ".join(rnd.sample(WORDS, rnd.randint(1, 3))) for _ in range(n + 30)]
    else:
        cfg = running_stack_config()
        port = cfg.retrieval.http_port
        queries = [b["query"]["text"] for b in text_bodies(Path(cfg.data_dir), n + 30, sample=True)["text2text"]]
    api = SearchClient(f"http://127.0.0.1:{port}", 30)
    candidate = Urllib3SearchClient(f"http://127.0.0.1:{port}", 30)
    if candidate._target:  # (an absolute URL: through a proxy)
        raise SystemExit("the environment's HTTP proxy takes 127.0.0.1: run with NO_PROXY=127.0.0.1 for a like-for-like edge")
    clients = {"search_client": lambda q: api.search(SCENE, q, force=FORCE, user_id="client-edge-bench"),
               "urllib3_client": lambda q: candidate.search(SCENE, q, force=FORCE, user_id="client-edge-bench"),
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
    candidate.close()
    if server is not None:
        server.stop()
    ms = {k: np.asarray(v) * 1000 for k, v in edge.items()}
    res = {"mode": "local" if args.local else "demo",
           "server": ("fixed-answer WSGI app (20 hits, gloss-sized docs, timings_ms.total = the app's own time) on "
                      "mmsearch.runtime.wsgi.WsgiServer (waitress) in this process: the client's edge alone (plus waitress's)")
           if args.local else "the running demo's retrieval service (text2text, recall=dense)",
           "queries": len(queries) - 30, "arm": "none: a fixed answer" if args.local else "recall=dense", "concurrency": 1,
           "order": "all permutations, rotating per query",
           "p50_ms": {k: float(np.median(v)) * 1000 for k, v in e2e.items()},
           "edge_p50_ms": {k: float(np.median(v)) for k, v in ms.items()},
           "edge_p90_ms": {k: float(np.percentile(v, 90)) for k, v in ms.items()},
           "edge_p99_ms": {k: float(np.percentile(v, 99)) for k, v in ms.items()},
           "urllib3_minus_http11_paired_p50_ms": float(np.median(ms["urllib3_client"] - ms["search_client"]))}
    over = res["edge_p50_ms"]["urllib3_client"] - res["edge_p50_ms"]["search_client"]
    res["decision"] = {"rule": f"urllib3 replaces http11 if its edge p50 <= http11's + {THRESHOLD_MS} ms",
                       "urllib3_over_http11_ms": over, "urllib3_within": bool(over <= THRESHOLD_MS)}
    info["loadavg_at_end"] = list(os.getloadavg())
    res["loadavg"] = {"start": info["loadavg_at_start"], "end": info["loadavg_at_end"]}
    parts = " | ".join(f"{k} p50 {res['p50_ms'][k]:.2f} ms, edge {res['edge_p50_ms'][k]:.2f}" for k in clients)
    where = "local fixed-answer app on waitress (the client's edge alone)" if args.local else "text2text dense"
    summary = (f"client_edge: {where}, c=1, {res['queries']} queries, clients interleaved: {parts} -> urllib3 over http11 "
               f"{over:+.2f} ms (paired {res['urllib3_minus_http11_paired_p50_ms']:+.2f}; rule <= +{THRESHOLD_MS:.2f}: "
               f"{'within' if res['decision']['urllib3_within'] else 'over'}), SearchClient over the raw socket "
               f"{res['edge_p50_ms']['search_client'] - res['edge_p50_ms']['raw_socket']:+.2f} ms")
    data = {"description": res["server"] if args.local else "WordNet gloss queries against the running demo (text2text, dense)",
            "synthetic": bool(args.local), "queries": res["queries"]}
    write_result("client_edge" if args.local else "client_edge_demo", "API client edge", summary, data, res,
                 argv=["bench/client_edge.py", *(sys.argv[1:] if argv is None else argv)], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
