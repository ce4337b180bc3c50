"""A managed model change (issue 33): `mmsearch reindex` of a live index while the documents API writes to it,
the writes made meanwhile carried over, the gate, and `mmsearch index rollback` carrying later writes back.
Real local servers (Milvus, secantusdb, the retrieval service in this process), tiny text models."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from documents_stack import EXPERIMENTS  # one text2text scene: dense, and BM25 to force

from mmsearch.client.search_client import SearchClient
from mmsearch.clients.documents import BUILDS, DocumentStore
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.config import load_config
from mmsearch.encoders.encoder import open_encoder
from mmsearch.offline import index_admin
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.offline.reindex import GateRefused, ReindexOptions, reindex
from mmsearch.retrieval_service.server import create_server as create_retrieval
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import wait_until

pytestmark = pytest.mark.integration

FIELDS = {"subject": "int", "lang": "str"}


def doc(i: int, prefix: str = "d", **kw) -> dict:
    return {"id": f"{prefix}{i}", "title": f"title {i}", "text": f"document {prefix}{i} about w{prefix}{i} and topic {i % 20}",
            "subject": i % 20, "lang": "en", **kw}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_text):
    from tiny_models import build_tiny_text_model

    from mmsearch.offline.export import export_model

    base = tmp_path_factory.mktemp("reindex")
    repo = base / "repo"
    export_model(tiny_text, repo, "tiny")
    export_model(build_tiny_text_model(base / "tiny2_src", seed=1), repo, "tiny2")
    seed = base / "seed.jsonl"
    seed.write_text("\n".join(json.dumps(doc(i, "s")) for i in range(300)) + "\n")
    (base / "experiments.yaml").write_text(EXPERIMENTS)
    (base / "config.yaml").write_text(f"model_repository: {repo}\ndata_dir: {base / 'data'}\n")
    with SecantusServer(base / "mongo") as mongo:
        milvus = MilvusServer(base / "milvus")
        try:
            build_index(BuildOptions(index="docs", docs=seed, model="tiny", repo=repo, data_dir=base / "data", milvus_uri=milvus.uri,
                                     mongo_uri=mongo.uri, fields=FIELDS, lexical=["title", "text"], progress=False))
            cfg = load_config(environ={}, overrides={
                "model_repository": str(repo), "data_dir": str(base / "data"), "experiments_file": str(base / "experiments.yaml"),
                "milvus": {"uri": milvus.uri}, "mongo": {"uri": mongo.uri},
                "retrieval": {"request_timeout_s": 30, "stage_timeout_s": 20, "query_log": False}})
            server = create_retrieval(cfg, "127.0.0.1:0", "127.0.0.1:0")
            try:
                assert wait_until(lambda: server.service.experiments.ready(), 10)
                url = f"http://127.0.0.1:{server.http_port}"
                yield {"client": SearchClient(url, timeout_s=120), "base": base, "repo": repo, "milvus": milvus.uri, "mongo": mongo.uri}
            finally:
                server.stop()
        finally:
            milvus.stop()


def search(c: SearchClient, text: str, arm: str = "dense", top_k: int = 1000) -> list[str]:
    body = {"scene": "text2text", "query": {"text": text}, "top_k": top_k, "force": {"recall": arm}, "consistency": "strong"}
    return [h["id"] for h in c.search_body(body)["results"]]


class Writer(threading.Thread):
    """Puts (and now and then deletes) small batches as fast as the API takes them; ``expected`` is the acknowledged state."""

    def __init__(self, c: SearchClient, prefix: str, expected: set[str]):
        super().__init__(daemon=True)
        self.c, self.prefix, self.expected = c, prefix, expected
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                batch = [doc(i, self.prefix) for i in range(n, n + 20)]
                self.c.put_documents("docs", batch)
                self.expected.update(d["id"] for d in batch)
                if n % 100 == 40:  # delete one of the seed documents and one of ours
                    gone = [f"s{n // 20}", f"{self.prefix}{n - 10}"]
                    self.c.delete_documents("docs", ids=gone)
                    self.expected.difference_update(gone)
                n += 20
                self.batches += 1
                if self.batches >= 25:  # (a strong search of top 1,000 still sees every document)
                    return
                time.sleep(0.1)
        except BaseException as e:  # reported by the test
            self.error = e


def test_reindex_while_writing_then_rollback_carries_later_writes_back(stack):
    c: SearchClient = stack["client"]
    expected = {f"s{i}" for i in range(300)}
    opts = ReindexOptions(index="docs", model="tiny2", repo=stack["repo"], data_dir=stack["base"] / "data", milvus_uri=stack["milvus"],
                          mongo_uri=stack["mongo"], batch_size=32, progress=False)
    judged = stack["base"] / "judged.jsonl"  # exact texts: each model finds its own document, so the new one is not worse
    judged.write_text("\n".join(json.dumps({"query": doc(i, "s")["text"], "relevant": [f"s{i}"]}) for i in range(0, 300, 15)) + "\n")
    opts.judged = judged
    vs, ds = VectorStore(stack["milvus"]), DocumentStore(stack["mongo"])
    old_build = vs.live_build("docs")

    def write_during_catch_up(seq: int) -> None:  # one more write after each unpaused round: the last is replayed in the pause
        hook = doc(seq, "hook")
        c.put_documents("docs", [hook])
        expected.add(hook["id"])

    opts.on_catch_up = write_during_catch_up
    writer = Writer(c, "w", expected)
    writer.start()
    assert wait_until(lambda: writer.batches >= 3, 30)
    t0 = time.perf_counter()
    summary = reindex(opts)
    took = time.perf_counter() - t0
    time.sleep(0.5)  # writes keep coming after the switch (to the new build)
    writer.stop.set()
    writer.join(30)
    assert writer.error is None, writer.error
    print(f"\n{summary.line()}; {writer.batches} batches written meanwhile; reindex {took:.1f} s")
    assert summary.live and summary.replayed > 0 and summary.gate is not None and summary.gate.passed
    new_build = vs.live_build("docs")
    assert new_build == summary.build != old_build
    rec = ds.get_one(BUILDS, collection_name("docs", new_build))
    assert rec["model"] == "tiny2" and rec["model_ref"]["name"] == "tiny2" and rec["model_ref"]["version"].startswith("sha256:")
    assert len(rec["model_ref"]["manifest_sha256"]) == 64 and rec["query_models"] == {"text": "tiny2"}
    assert rec["source"] == {"kind": "reindex", "from_build": old_build, "from_model": "tiny", "journal_seq": rec["source"]["journal_seq"]}
    assert c.get_index("docs")["model"] == "tiny2"

    # every acknowledged write, none lost, none resurrected: dense (queries now encoded by tiny2), BM25, GET
    assert set(search(c, "document")) == expected
    assert set(search(c, "document", arm="words")) == expected
    assert vs.count(collection_name("docs", new_build)) == len(expected)
    last_w = max((i for i in expected if i.startswith("w")), key=lambda i: int(i[1:]))
    assert c.get_document("docs", last_w)["id"] == last_w
    tiny2 = open_encoder(stack["repo"] / "tiny2")
    text = c.get_document("docs", last_w)["text"]
    stored = vs.vector(collection_name("docs", new_build), last_w)
    assert np.allclose(stored, tiny2.encode([text])[0], atol=1e-4)  # its vector is the new model's
    assert search(c, text, top_k=1) == [last_w]

    # writes after the switch, then `mmsearch index rollback`: the old build comes back with them (encoded by tiny)
    c.put_documents("docs", [doc(i, "after") for i in range(30)])
    c.delete_documents("docs", ids=["s299"])
    expected |= {f"after{i}" for i in range(30)}
    expected.discard("s299")
    cfg = stack["base"] / "config.yaml"
    out = index_admin.run(["--config", str(cfg), "--milvus-uri", stack["milvus"], "--mongo-uri", stack["mongo"], "rollback", "docs"])
    assert out[0].startswith(f"docs -> {old_build} (was {new_build})") and "carried over" in out[0], out
    assert vs.live_build("docs") == old_build
    assert set(search(c, "document")) == expected  # (an old build: queries by the arm's embed_model, tiny)
    assert set(search(c, "document", arm="words")) == expected
    tiny = open_encoder(stack["repo"] / "tiny")
    assert np.allclose(vs.vector(collection_name("docs", old_build), "after7"), tiny.encode([doc(7, "after")["text"]])[0], atol=1e-4)
    assert search(c, doc(7, "after")["text"], top_k=1) == ["after7"]
    assert c.get_index("docs")["model"] == "tiny"
    # and forward again to the reindexed build: what was written meanwhile comes along (its vectors by tiny2)
    c.put_documents("docs", [doc(0, "back")])
    out = index_admin.run(["--config", str(cfg), "--milvus-uri", stack["milvus"], "--mongo-uri", stack["mongo"],
                           "rollback", "docs", "--to", new_build])
    assert vs.live_build("docs") == new_build
    assert set(search(c, "document")) == expected | {"back0"}


def test_the_gate_refuses_a_worse_model_and_nothing_switches(stack):
    c: SearchClient = stack["client"]
    vs, ds = VectorStore(stack["milvus"]), DocumentStore(stack["mongo"])
    live = vs.live_build("docs")
    model = ds.get_one(BUILDS, collection_name("docs", live))["model"]
    other = "tiny" if model == "tiny2" else "tiny2"
    queries = [f"topic {i} words" for i in range(20)]  # judged by what the serving build answers: a new model can only do worse
    judged = stack["base"] / "judged_served.jsonl"
    judged.write_text("\n".join(json.dumps({"query": q, "relevant": search(c, q, top_k=3)}) for q in queries) + "\n")
    opts = ReindexOptions(index="docs", model=other, repo=stack["repo"], data_dir=stack["base"] / "data", milvus_uri=stack["milvus"],
                          mongo_uri=stack["mongo"], judged=judged, progress=False)
    before = set(vs.builds("docs"))
    with pytest.raises(GateRefused, match="refused"):
        reindex(opts)
    assert vs.live_build("docs") == live and set(vs.builds("docs")) == before
    refused = [r for r in ds.builds("docs") if r.get("status") == "refused"]
    assert refused and refused[-1]["model"] == other


def test_the_documents_an_index_holds_export_as_build_index_jsonl(stack):
    """What the flywheel builds its candidate's index from: the live build's documents now, the API's writes
    included and its deletes left out, in build-index's shape (a build from it holds the same ids)."""
    from mmsearch.offline.reindex import write_held_documents

    c: SearchClient = stack["client"]
    c.put_documents("docs", [doc(1, "held", subject=3)])
    c.delete_documents("docs", ids=["s5"])
    vs, ds = VectorStore(stack["milvus"]), DocumentStore(stack["mongo"])
    out = stack["base"] / "held" / "documents.jsonl"
    n = write_held_documents(vs, ds, "docs", out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert n == len(rows) == len(by_id) == vs.count(collection_name("docs", vs.live_build("docs")))
    assert by_id["held1"] == {"id": "held1", **{k: v for k, v in doc(1, "held", subject=3).items() if k != "id"}}
    assert "s5" not in by_id and "s6" in by_id
    assert not any(k.startswith("_") for r in rows for k in r)  # no store internals (_id, the content hash)
    assert not list(out.parent.glob(".*"))  # no partial file left


def test_expired_journal_entries_and_op_ids_go_and_a_rollback_past_them_is_refused(stack):
    """The retention sweep (retrieval_service/retention.py): journal entries and op_id records past their
    retention are deleted, not the newest entry (numbering goes on from it); a rollback that needs expired
    entries is refused naming them, and nothing switches; an op_id resent after its record went is a new write."""
    import datetime as dt

    from mmsearch.clients.journal import Journal
    from mmsearch.errors import BadInput
    from mmsearch.retrieval_service.documents import OPS
    from mmsearch.retrieval_service.retention import expire

    c: SearchClient = stack["client"]
    vs, ds = VectorStore(stack["milvus"]), DocumentStore(stack["mongo"])
    journal = Journal(ds)
    model = ds.get_one(BUILDS, collection_name("docs", vs.live_build("docs")))["model"]
    reindex(ReindexOptions(index="docs", model="tiny" if model == "tiny2" else "tiny2", repo=stack["repo"], data_dir=stack["base"] / "data",
                           milvus_uri=stack["milvus"], mongo_uri=stack["mongo"], progress=False))  # a build to roll back to
    for i in range(3):  # writes after the switch: a rollback would need them
        c.put_documents("docs", [doc(i, "ret")])
    assert c.put_documents("docs", [doc(1, "ret")], op_id="ret-1")["written"] == 1
    assert c.put_documents("docs", [doc(1, "ret")], op_id="ret-1").get("replayed") is True  # a retry: answered from its record
    last = journal.last_seq("docs")
    assert last > 3 and journal.trimmed_through("docs") == 0
    live = vs.live_build("docs")

    nothing = expire(ds, journal_days=7, op_id_days=1)  # nothing is old yet
    assert nothing.journal == {} and nothing.op_ids == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    building = {"_id": "docs__in_progress", "index": "docs", "build": "in_progress", "status": "building",
                "started": dt.datetime.now(dt.UTC).isoformat(), "journal_seq": 2}
    ds.save_build(building)  # a reindex in progress replays the entries after its start: they stay
    try:
        assert expire(ds, journal_days=7, op_id_days=0, now=later).journal == {"docs": 2}
    finally:
        ds.delete_builds([building["_id"]])
    out = expire(ds, journal_days=7, op_id_days=1, now=later)
    assert out.journal == {"docs": last - 3} and out.op_ids >= 1
    assert journal.trimmed_through("docs") == last - 1 and journal.last_seq("docs") == last
    assert [e.seq for e in journal.entries("docs", last - 1)] == [last]  # the newest stays, whole
    with pytest.raises(BadInput, match=f"entries up to {last - 1} have expired"):
        list(journal.entries("docs", 0))
    assert ds.get_one(OPS, "docs/ret-1") is None
    assert expire(ds, journal_days=7, op_id_days=1, now=later).total == 0  # a second sweep finds nothing more

    cfg = stack["base"] / "config.yaml"
    with pytest.raises(BadInput, match="expired"):  # the other build would miss the writes made since it stopped serving
        index_admin.run(["--config", str(cfg), "--milvus-uri", stack["milvus"], "--mongo-uri", stack["mongo"], "rollback", "docs"])
    assert vs.live_build("docs") == live
    again = c.put_documents("docs", [doc(1, "ret")], op_id="ret-1")  # its record expired: a new write, numbered on
    assert again["written"] == 1 and not again.get("replayed") and journal.last_seq("docs") == last + 1
    assert c.get_document("docs", "ret1")["id"] == "ret1"
