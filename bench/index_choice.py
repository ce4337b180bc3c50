"""Which vector index a build should make: what each graph costs Milvus to build against the recall and latency
it serves, on the demo's real vectors and its held-out user queries, per query class.

    .venv/bin/python bench/index_choice.py [--texts 82115] [--specs 16:200,16:128,16:96,16:64,8:128] [--breadths 100,128,192,256]

On 2 cores the build is CPU-bound: every CPU second Milvus spends on a graph comes out of the encoder's share
(docs/architecture.md, build rate). So the choice is measured as CPU seconds, not wall time alone. Per spec
(HNSW ``M:efConstruction``; ``ivf_flat:NLIST`` for an IVF_FLAT comparison), the same vectors go into a fresh
collection of one embedded Milvus 2.3.5 (inserts of 5,000, then VectorStore.seal: flush, index, load), and the
Milvus process tree's CPU seconds and the wall time are recorded, with the CPU Milvus spends idle (measured for 10 s
before each build) subtracted as well: its ticks are not the index's cost. Collections are released, not dropped,
so no spec's build pays for an earlier one's garbage collection; each run starts a fresh Milvus on a fresh data dir. Then every held-out judged text→text query
(mmsearch/offline/datasets/judged_sets/text2text_heldout.jsonl, encoded one at a time as the service does) is
searched at each breadth (HNSW ef / IVF nprobe; Milvus's own limit is top 10): recall@10 against exact search
(numpy) over the same vectors, per query class, and the search's p50 / p99 straight to Milvus. The first spec is
built again at the end, so the run shows its own noise. Vectors: the demo's texts index ("<title>: <gloss>" of
every WordNet noun synset) through the int8 MiniLM the demo exports; cached under .mmsearch/bench-cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import proc_cpu_s
from bench.results_io import write_result
from bench.scale import exact_topk, export_encoder, pct, recall_at_k
from mmsearch.api.documents import titled_text
from mmsearch.clients.vectors import IndexSpec, VectorStore, collection_name
from mmsearch.encoders.encoder import open_encoder
from mmsearch.offline.datasets.wordnet import noun_synsets
from mmsearch.runtime.embedded import MilvusServer
from mmsearch.runtime.supervisor import descendants

HELDOUT = ROOT / "mmsearch" / "offline" / "datasets" / "judged_sets" / "text2text_heldout.jsonl"
TOP_K = 10
IDLE_S = 10.0


def log(msg: str) -> None:
    print(f"[index_choice {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_spec(text: str) -> IndexSpec:
    """``M:efConstruction`` (HNSW) or ``ivf_flat:NLIST``."""
    kind, _, value = text.partition(":")
    if kind.lower() == "ivf_flat":
        return IndexSpec(index_type="IVF_FLAT", ivf_nlist=int(value), stored_doc_max_bytes=0)
    return IndexSpec(index_type="HNSW", hnsw_m=int(kind), hnsw_ef_construction=int(value), stored_doc_max_bytes=0)


def label(spec: IndexSpec) -> str:
    if spec.index_type == "HNSW":
        return f"HNSW M{spec.hnsw_m} efC{spec.hnsw_ef_construction}"
    return f"{spec.index_type} nlist{spec.ivf_nlist}"


def tree_cpu_s(pid: int) -> float:
    return sum(proc_cpu_s(Path(f"/proc/{p}/stat")) for p in [pid, *descendants(pid)])


def vectors_and_queries(texts: int, cache: Path, work: Path) -> tuple[list[str], np.ndarray, list[dict[str, Any]], np.ndarray]:
    """The demo texts index's ids and vectors, and the held-out judged queries with theirs (cached by texts, queries and model)."""
    syn = noun_synsets(cache)[:texts]
    ids = [s.offset for s in syn]
    queries = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    model = export_encoder(work) / "minilm"
    texts_ = [titled_text({"title": s.title}, s.gloss, "title") for s in syn]
    key = hashlib.blake2b("\n".join(texts_ + [q["query"] for q in queries]).encode() + (model / "mmsearch.json").read_bytes(),
                          digest_size=8).hexdigest()  # the texts, the queries and the model's manifest
    cached = work / f"demo_{len(syn)}_{key}.npz"
    if cached.is_file():
        z = np.load(cached)  # (its key covers the texts, the queries and the model)
        return ids, z["docs"], queries, z["queries"]
    enc = open_encoder(model)
    log(f"encoding {len(texts_):,} texts ...")
    t0 = time.perf_counter()
    docs = np.concatenate([enc.encode(texts_[s : s + 1024]) for s in range(0, len(texts_), 1024)]).astype(np.float32)
    log(f"  {len(texts_) / (time.perf_counter() - t0):.0f} texts/s")
    qv = np.concatenate([enc.encode([q["query"]]) for q in queries]).astype(np.float32)  # one at a time, as served
    np.savez(cached, docs=docs, queries=qv)
    return ids, docs, queries, qv


def measure(store: VectorStore, pid: int, spec: IndexSpec, ids: list[str], docs: np.ndarray, queries: list[dict[str, Any]],
            qv: np.ndarray, ex_s: np.ndarray, breadths: list[int], run: int) -> dict[str, Any]:
    name = collection_name("choice", f"{label(spec).replace(' ', '_').lower()}_{run}")
    idle0, t_idle = tree_cpu_s(pid), time.perf_counter()
    time.sleep(IDLE_S)  # Milvus's own ticks, coordinators and background work: subtracted from the build's CPU below
    idle_rate = (tree_cpu_s(pid) - idle0) / (time.perf_counter() - t_idle)
    cpu0, t0 = tree_cpu_s(pid), time.perf_counter()
    store.create(name, docs.shape[1], spec)
    for s in range(0, len(ids), 5000):
        store.upsert(name, ids[s : s + 5000], docs[s : s + 5000], fresh=True)
    store.seal(name, len(ids), timeout_s=3600)
    wall = time.perf_counter() - t0
    cpu = tree_cpu_s(pid) - cpu0
    entry: dict[str, Any] = {"spec": spec.to_json(), "build_wall_s": wall, "milvus_cpu_s": cpu, "milvus_idle_cores": idle_rate,
                             "milvus_cpu_s_over_idle": cpu - idle_rate * wall, "by_breadth": {}}
    row_of = {i: r for r, i in enumerate(ids)}
    by_class: dict[str, list[int]] = defaultdict(list)
    for qi, q in enumerate(queries):
        for tag in q.get("tags", ["untagged"]):
            by_class[tag].append(qi)
    vs = VectorStore(store.uri, timeout_s=120, spec=spec)
    for b in breadths:
        for q in qv[:20]:  # warm
            vs.search(name, q[None, :], TOP_K, ef=b)
        lat, found = [], []
        for q in qv:
            t1 = time.perf_counter()
            found.append([h for h, _ in vs.search(name, q[None, :], TOP_K, ef=b)[0]])
            lat.append(time.perf_counter() - t1)
        entry["by_breadth"][str(b)] = {
            "recall@10": recall_at_k(found, row_of, docs, qv, ex_s),
            "recall@10_by_class": {c: recall_at_k([found[i] for i in rows], row_of, docs, qv[rows], ex_s[rows])
                                   for c, rows in sorted(by_class.items())},
            **pct(lat)}
        e = entry["by_breadth"][str(b)]
        log(f"  {label(spec)} breadth {b}: recall@10 {e['recall@10']:.4f}, p50 {e['p50_ms']:.2f} / p99 {e['p99_ms']:.2f} ms")
    vs.close()
    store.client.release_collection(name)  # (not dropped: a drop's garbage collection would run in the next spec's build)
    log(f"  {label(spec)}: build {wall:.1f} s wall, Milvus {cpu:.1f} CPU s ({entry['milvus_cpu_s_over_idle']:.1f} over its idle "
        f"{idle_rate:.2f} cores)")
    return entry


def plot(runs: list[dict[str, Any]], breadths: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(13, 4.6))
    for r in runs:
        bs = [str(b) for b in breadths]
        rec = [r["by_breadth"][b]["recall@10"] for b in bs]
        ax[0].plot([r["milvus_cpu_s_over_idle"]] * len(bs), rec, "o-", label=r["label"])
        for b, y in zip(bs, rec, strict=True):
            ax[0].annotate(b, (r["milvus_cpu_s_over_idle"], y), fontsize=6, xytext=(3, 0), textcoords="offset points")
        ax[1].plot([r["by_breadth"][b]["p50_ms"] for b in bs], rec, "o-", label=r["label"])
    ax[0].axhline(0.97, color="grey", ls=":", lw=1)
    ax[1].axhline(0.97, color="grey", ls=":", lw=1)
    ax[0].set(title="recall@10 vs what the index cost Milvus to build", xlabel="Milvus CPU s over its idle (insert + seal)",
              ylabel="recall@10 vs exact (labels: search breadth)")
    ax[1].set(title="recall@10 vs search p50 (straight to Milvus)", xlabel="p50 ms", ylabel="recall@10")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=82115)
    ap.add_argument("--specs", default="16:200,16:128,16:96,16:64,8:128")
    ap.add_argument("--breadths", default="100,128,192,256")
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / ".mmsearch" / "bench-cache" / "index_choice")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "index_choice.json")
    args = ap.parse_args(argv)
    specs = [parse_spec(s) for s in args.specs.split(",")]
    breadths = [int(b) for b in args.breadths.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    ids, docs, queries, qv = vectors_and_queries(args.texts, args.cache, args.work)
    _, ex_s = exact_topk(docs, qv, TOP_K)
    runs: list[dict[str, Any]] = []
    # a fresh server and data dir per run: a collection an earlier run left would be written into, not created
    with tempfile.TemporaryDirectory(dir=args.work) as data, MilvusServer(Path(data) / "milvus") as milvus:
        store = VectorStore(milvus.uri, timeout_s=120)
        for run, spec in enumerate([*specs, specs[0]]):  # the first again at the end: the run's own noise
            log(f"{label(spec)} ({run + 1}/{len(specs) + 1})")
            entry = measure(store, milvus.pid, spec, ids, docs, queries, qv, ex_s, breadths, run)
            runs.append({"label": label(spec) + (" (again)" if run == len(specs) else ""), **entry})
        store.close()
    png = args.out.with_suffix(".png")
    title = f"bench/index_choice.py: {len(ids):,} demo texts (MiniLM int8), {len(queries)} held-out judged queries"
    plot(runs, breadths, png, title)

    def cell(r: dict[str, Any]) -> str:
        knob = "ef" if r["spec"]["index_type"] == "HNSW" else "nprobe"
        return (f"{r['label']} {r['milvus_cpu_s_over_idle']:.0f} CPU s/{r['build_wall_s']:.0f} s: "
                + " ".join(f"{knob}{b} {r['by_breadth'][str(b)]['recall@10']:.3f}/{r['by_breadth'][str(b)]['p50_ms']:.1f}ms"
                           for b in breadths))
    summary = (f"index_choice ({len(ids):,} demo vectors, {len(queries)} held-out queries; Milvus CPU s over idle/wall, then recall@10/p50 "
               "by search breadth): " + " | ".join(cell(r) for r in runs))
    data = {"synthetic": False, "description": f"{len(ids):,} WordNet noun synsets as the demo's texts index embeds them, all-MiniLM-L6-v2 "
            f"int8; {len(queries)} held-out judged text2text queries ({HELDOUT.relative_to(ROOT)})"}
    write_result(args.out.stem, "Which vector index a build makes", summary, data, {"runs": runs, "breadths": breadths},
                 argv=["bench/index_choice.py", *(sys.argv[1:] if argv is None else argv)], plot=png, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
