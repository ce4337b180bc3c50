"""Snapshots (issue 33): `mmsearch snapshot create` of a live index while the documents API writes to it, and
`mmsearch snapshot restore` into a second, fresh pair of Milvus and MongoDB servers: the same top-10 for a set of
queries (dense and BM25), every document whole, the index as it was at one point of the journal."""

from __future__ import annotations

import json
import threading

import pytest
from documents_stack import EXPERIMENTS  # one text2text scene: dense, and BM25 to force

from mmsearch.client.search_client import SearchClient
from mmsearch.clients.documents import BUILDS, DocumentStore
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.config import load_config
from mmsearch.offline import snapshot
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.retrieval_service.server import create_server as create_retrieval
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import wait_until

pytestmark = pytest.mark.integration

FIELDS = {"subject": "int", "lang": "str"}
QUERIES = ["document about topic 3", "title 17", "topic 5 and w12", "seed rewritten", "document w40", "about 7"]


def doc(i: int, prefix: str = "s", lang: str = "en", **kw) -> dict:
    return {"id": f"{prefix}{i}", "title": f"title {i}", "text": f"document {prefix}{i} about w{i} and topic {i % 20}",
            "subject": i % 20, "lang": lang, **kw}


def server(cfg):
    s = create_retrieval(cfg, "127.0.0.1:0", "127.0.0.1:0")
    assert wait_until(lambda: s.service.experiments.ready(), 10)
    return s, SearchClient(f"http://127.0.0.1:{s.http_port}", timeout_s=120)


def config(base, repo, milvus, mongo, data):
    return load_config(environ={}, overrides={
        "model_repository": str(repo), "data_dir": str(data), "experiments_file": str(base / "experiments.yaml"),
        "milvus": {"uri": milvus}, "mongo": {"uri": mongo}, "retrieval": {"request_timeout_s": 30, "stage_timeout_s": 20, "query_log": False}})


def top10(c: SearchClient, q: str, arm: str) -> list[str]:
    body = {"scene": "text2text", "query": {"text": q}, "top_k": 10, "force": {"recall": arm}, "consistency": "strong",
            "filter": {"lang": "en"}}
    return [h["id"] for h in c.search_body(body)["results"]]


def test_snapshot_under_writes_restores_into_a_fresh_stack(tmp_path, tiny_text):
    from mmsearch.offline.export import export_model

    base = tmp_path
    repo = base / "repo"
    export_model(tiny_text, repo, "tiny")
    seed = base / "seed.jsonl"
    seed.write_text("\n".join(json.dumps(doc(i)) for i in range(400)) + "\n")
    (base / "experiments.yaml").write_text(EXPERIMENTS)
    with SecantusServer(base / "mongo_a") as mongo_a, SecantusServer(base / "mongo_b") as mongo_b:
        milvus_a = MilvusServer(base / "milvus_a")
        try:
            build_index(BuildOptions(index="docs", docs=seed, model="tiny", repo=repo, data_dir=base / "a", milvus_uri=milvus_a.uri,
                                     mongo_uri=mongo_a.uri, fields=FIELDS, lexical=["title", "text"], progress=False))
            cfg_a = config(base, repo, milvus_a.uri, mongo_a.uri, base / "a")
            srv_a, a = server(cfg_a)
            try:
                # documents changed through the API before (hashes, a delete), and writes going on during the snapshot
                a.put_documents("docs", [doc(i, text=f"seed rewritten {i}") for i in range(10)])
                a.delete_documents("docs", ids=["s399"])
                acked: list[str] = []
                stop = threading.Event()

                def write() -> None:
                    n = 0
                    while not stop.is_set():
                        batch = [doc(i, "w", lang="xx") for i in range(n, n + 10)]
                        a.put_documents("docs", batch)
                        acked.extend(d["id"] for d in batch)
                        n += 10

                t = threading.Thread(target=write, daemon=True)
                t.start()
                assert wait_until(lambda: len(acked) >= 20, 30)
                before = len(acked)
                out = base / "snap"
                vs_a, ds_a = VectorStore(milvus_a.uri), DocumentStore(mongo_a.uri)
                seen: list[int] = []
                meta = snapshot.create(vs_a, ds_a, LexicalStore(base / "a" / "lexical"), "docs", out,
                                       between=lambda: (a.put_documents("docs", [doc(0, "mid", lang="xx")]), seen.append(1)))
                stop.set()
                t.join(30)
                assert meta["journal"]["to"] > meta["journal"]["from"] and seen  # writes landed between S0 and S1
                rec = meta["record"]
                assert rec["model"] == "tiny" and len(rec["model_ref"]["manifest_sha256"]) == 64
                assert {p.name for p in out.iterdir()} >= {"snapshot.json", "vectors.npy", "rows.parquet", "documents.bson",
                                                           "journal.bson", "lexical"}
                print(f"\nsnapshot: {meta['counts']}, journal {meta['journal']}, writes paused {meta['paused_ms']} ms")

                # a fresh pair of servers; restore through the CLI
                milvus_b = MilvusServer(base / "milvus_b")
                try:
                    (base / "b.yaml").write_text(f"model_repository: {repo}\ndata_dir: {base / 'b'}\n")
                    lines = snapshot.run(["--config", str(base / "b.yaml"), "restore", str(out), "--milvus-uri", milvus_b.uri,
                                          "--mongo-uri", mongo_b.uri])
                    assert lines[0].startswith("restored index docs build") and len(lines) == 1, lines
                    vs_b, ds_b = VectorStore(milvus_b.uri), DocumentStore(mongo_b.uri)
                    live = vs_b.live_build("docs")
                    assert live == meta["build"]
                    coll_b = collection_name("docs", live)
                    ids_b = {r["id"] for page in ds_b.pages("docs") for r in vs_b.rows(coll_b, [d["_id"] for d in page])}
                    assert vs_b.count(coll_b) == len(ids_b)
                    written = [i for i in acked if i in ids_b]
                    # the writer's documents restored are a prefix of what it wrote (one point in time), at least
                    # those acknowledged before the snapshot began, and the write made between S0 and S1
                    assert written == acked[:len(written)] and len(written) >= before and "mid0" in ids_b
                    assert ids_b == {f"s{i}" for i in range(399)} | set(written) | {"mid0"}
                    assert ds_b.count("docs") == len(ids_b)
                    assert ds_b.get_one(BUILDS, collection_name("docs", live))["status"] == "complete"
                    lex_b = LexicalStore(base / "b" / "lexical")
                    for i in [*written[-3:], "mid0", "s50"]:
                        assert ds_b.get_one("docs", i) is not None and i in {h for h, _ in lex_b.search("docs", i, 5)}
                    srv_b, b = server(config(base, repo, milvus_b.uri, mongo_b.uri, base / "b"))
                    try:
                        for q in QUERIES:  # (the seed documents, which the writer does not touch)
                            assert top10(b, q, "dense") == top10(a, q, "dense"), q
                            assert top10(b, q, "words") == top10(a, q, "words"), q
                        assert b.get_document("docs", "s3")["text"] == "seed rewritten 3"
                        assert b.put_documents("docs", [doc(3, text="seed rewritten 3")])["encoded"] == 0  # the hashes came along
                        assert b.put_documents("docs", [doc(1, "after")])["written"] == 1
                    finally:
                        srv_b.stop()
                finally:
                    milvus_b.stop()
            finally:
                srv_a.stop()
        finally:
            milvus_a.stop()
