"""Crash safety of the documents API (issue 33): the retrieval service (a subprocess) is SIGKILLed in the middle of
1,000-document PUT batches; after a restart every acknowledged document is found and none is half-written (each is
in Milvus, tantivy and MongoDB, or in none), and resending the batch creates no duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from documents_stack import EXPERIMENTS  # one text2text scene: dense, and BM25 to force

from mmsearch.client.search_client import SearchClient
from mmsearch.clients.documents import DocumentStore
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.config import child_environ, load_config
from mmsearch.errors import MMSearchError, NotFound
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import wait_until

pytestmark = pytest.mark.integration



def doc(i: int) -> dict:
    return {"id": f"d{i}", "title": f"title {i}", "text": f"crash document {i} about zz{i}", "subject": i % 20}


def batch(k: int) -> list[dict]:
    return [doc(i) for i in range(k * 1000, (k + 1) * 1000)]


class Service:
    """`mmsearch serve-retrieval` as a child process, killed with SIGKILL (no cleanup of any kind)."""

    def __init__(self, base: Path, cfg, pause_s: float = 0.0):
        self.ports = base / f"ports-{time.monotonic_ns()}.json"
        env = child_environ(cfg, PYTHONPATH=os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[2])))
        if pause_s:
            env["MMSEARCH_RETRIEVAL_FAULT_WRITE_PAUSE_S"] = str(pause_s)
        self.log = open(base / "retrieval.log", "ab")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve-retrieval", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
                                      "--ports-file", str(self.ports)], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_until(lambda: self.ports.is_file() or self.proc.poll() is not None, 120), "no ports file"
        assert self.proc.poll() is None, (base / "retrieval.log").read_text()[-3000:]
        self.url = f"http://127.0.0.1:{json.loads(self.ports.read_text())['http']}"
        self.client = SearchClient(self.url, timeout_s=120)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory, tiny_text):
    from mmsearch.offline.export import export_model

    base = tmp_path_factory.mktemp("crash")
    repo = base / "repo"
    export_model(tiny_text, repo, "tiny")
    seed = base / "seed.jsonl"
    seed.write_text(json.dumps({"id": "seed", "title": "seed", "text": "seed crash document", "subject": 0}) + "\n")
    (base / "experiments.yaml").write_text(EXPERIMENTS)
    with SecantusServer(base / "mongo") as mongo:
        milvus = MilvusServer(base / "milvus")
        try:
            build_index(BuildOptions(index="docs", docs=seed, model="tiny", repo=repo, data_dir=base / "data", milvus_uri=milvus.uri,
                                     mongo_uri=mongo.uri, fields={"subject": "int"}, lexical=["title", "text"], progress=False))
            cfg = load_config(environ={}, overrides={
                "model_repository": str(repo), "data_dir": str(base / "data"), "experiments_file": str(base / "experiments.yaml"),
                "milvus": {"uri": milvus.uri}, "mongo": {"uri": mongo.uri},
                "retrieval": {"request_timeout_s": 60, "stage_timeout_s": 30, "query_log": False}})
            yield {"base": base, "cfg": cfg, "milvus": milvus.uri, "mongo": mongo.uri}
        finally:
            milvus.stop()


def where(stack, ids: list[str]) -> dict[str, tuple[bool, bool, bool]]:
    """Each id: (in Milvus, in tantivy, in MongoDB), read from the stores themselves (Strong)."""
    vs, ds = VectorStore(stack["milvus"]), DocumentStore(stack["mongo"])
    coll = collection_name("docs", vs.live_build("docs"))
    in_milvus = set()
    for a in range(0, len(ids), 500):
        in_milvus |= vs.existing(coll, ids[a:a + 500])
    in_mongo = {d["_id"] for d in ds.find("docs", {"_id": {"$in": ids}}, ["_id"])}
    lex = LexicalStore(Path(stack["base"]) / "data" / "lexical")
    in_terms = {i for i in ids if any(h == i for h, _ in lex.search("docs", f"zz{i[1:]}", 5))}
    return {i: (i in in_milvus, i in in_terms, i in in_mongo) for i in ids}


def test_sigkill_mid_batch_leaves_no_half_written_document_and_a_resend_no_duplicate(crash_stack):
    base, cfg = crash_stack["base"], crash_stack["cfg"]
    vs = VectorStore(crash_stack["milvus"])
    coll = collection_name("docs", vs.live_build("docs"))

    # 1. two acknowledged batches, then a third killed exactly between its Milvus write and the rest (a pause widens it)
    svc = Service(base, cfg, pause_s=3.0)
    for k in range(2):
        assert svc.client.put_documents("docs", batch(k), op_id=f"b{k}")["written"] == 1000
    acked = [d["id"] for k in range(2) for d in batch(k)]
    third = [d["id"] for d in batch(2)]
    t = threading.Thread(target=lambda: _swallow(lambda: svc.client.put_documents("docs", batch(2), op_id="b2")), daemon=True)
    t.start()
    assert wait_until(lambda: len(vs.existing(coll, third[:50])) == 50, 60, interval=0.02), "the batch never reached Milvus"
    svc.kill()
    t.join(30)
    state = where(crash_stack, third)
    assert all(m for m, _, _ in state.values()) and not any(d for _, _, d in state.values())  # half-written right now: the window is real

    # 2. restart: the journaled batch is applied again, whole, before anything is served
    t0 = time.perf_counter()
    svc = Service(base, cfg)
    restart_s = time.perf_counter() - t0
    state = where(crash_stack, acked + third)
    assert all(v == (True, True, True) for v in state.values()), [i for i, v in state.items() if v != (True, True, True)][:5]
    c = svc.client
    assert c.get_document("docs", "d2999")["text"] == doc(2999)["text"]
    body = {"scene": "text2text", "query": {"text": doc(2500)["text"]}, "top_k": 1, "force": {"recall": "dense"}, "consistency": "strong"}
    assert c.search_body(body)["results"][0]["id"] == "d2500"
    # resending the killed batch (same op_id: it was never acknowledged, so it is applied) and an acknowledged one (replayed)
    t0 = time.perf_counter()
    assert c.put_documents("docs", batch(2), op_id="b2")["written"] == 1000
    put_s = time.perf_counter() - t0
    assert c.put_documents("docs", batch(1), op_id="b1")["replayed"]
    assert vs.count(coll) == 3001 and DocumentStore(crash_stack["mongo"]).count("docs") == 3001

    # 3. a stream of batches killed at an arbitrary moment (no pause): acknowledged ones all there, each document all-or-none
    done: list[int] = []

    def stream() -> None:
        for k in range(3, 9):
            c.put_documents("docs", batch(k), op_id=f"b{k}")
            done.append(k)

    t = threading.Thread(target=lambda: _swallow(stream), daemon=True)
    t.start()
    assert wait_until(lambda: len(done) >= 1, 120)
    time.sleep(put_s * 0.6)  # somewhere inside the next batch
    svc.kill()
    t.join(30)
    svc = Service(base, cfg)
    ids = [d["id"] for k in range(3, 9) for d in batch(k)]
    state = where(crash_stack, ids)
    assert all(v in ((True, True, True), (False, False, False)) for v in state.values()), \
        [(i, v) for i, v in state.items() if v not in ((True, True, True), (False, False, False))][:5]
    assert all(state[d["id"]] == (True, True, True) for k in done for d in batch(k))
    for k in range(3, 9):  # the client resends everything: nothing twice
        svc.client.put_documents("docs", batch(k), op_id=f"b{k}")
    assert vs.count(coll) == 9001 and DocumentStore(crash_stack["mongo"]).count("docs") == 9001
    with pytest.raises(NotFound):
        svc.client.get_document("docs", "d9000")
    print(f"\n1,000-document batch {put_s:.2f} s; restart with recovery {restart_s:.1f} s; stream killed after {len(done)} batch(es)")
    svc.kill()


def _swallow(fn) -> None:
    try:
        fn()
    except (MMSearchError, OSError):
        pass  # the service was killed under it
