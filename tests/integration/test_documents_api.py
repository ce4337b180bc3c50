"""The documents API (issue 33) against real local servers: Milvus, secantusdb and the retrieval service
(text encoded in its own process, so no Triton), over a tiny text model and an index made by build-index."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from documents_stack import EXPERIMENTS  # one text2text scene: dense, and BM25 to force

from mmsearch.client.search_client import SearchClient
from mmsearch.config import load_config
from mmsearch.errors import AlreadyExists, BadInput, NotFound, TooLarge
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.retrieval_service.server import create_server as create_retrieval
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import wait_until

pytestmark = pytest.mark.integration

FIELDS = {"subject": "int", "lang": "str", "n": "int"}


def doc(i: int, **kw) -> dict:
    return {"id": f"d{i}", "title": f"title {i}", "text": f"document {i} about w{i} and topic {i % 20}", "subject": i % 20,
            "lang": "en", "n": i, **kw}


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory, tiny_text):
    from mmsearch.offline.export import export_model

    base = tmp_path_factory.mktemp("docsapi")
    repo = base / "repo"
    export_model(tiny_text, repo, "tiny")
    seed = base / "seed.jsonl"
    seed.write_text("\n".join(json.dumps({"id": f"s{i}", "title": "seed", "text": f"seed document s{i}", "subject": 0,
                                          "lang": "en", "n": 10_000 + i}) for i in range(10)) + "\n")
    (base / "experiments.yaml").write_text(EXPERIMENTS)
    with SecantusServer(base / "mongo") as mongo:
        milvus = MilvusServer(base / "milvus")
        try:
            build_index(BuildOptions(index="docs", docs=seed, model="tiny", repo=repo, data_dir=base / "data", milvus_uri=milvus.uri,
                                     mongo_uri=mongo.uri, fields=FIELDS, lexical=["title", "text"], progress=False))
            cfg = load_config(environ={}, overrides={
                "model_repository": str(repo), "data_dir": str(base / "data"), "experiments_file": str(base / "experiments.yaml"),
                "milvus": {"uri": milvus.uri}, "mongo": {"uri": mongo.uri},
                "retrieval": {"request_timeout_s": 20, "stage_timeout_s": 10, "query_log": False, "documents_max_bytes": 65536}})
            server = create_retrieval(cfg, "127.0.0.1:0", "127.0.0.1:0")
            try:
                assert wait_until(lambda: server.service.experiments.ready(), 10)
                url = f"http://127.0.0.1:{server.http_port}"
                yield {"url": url, "server": server, "client": SearchClient(url, timeout_s=120), "base": base, "repo": repo,
                       "milvus": milvus.uri, "mongo": mongo.uri, "cfg": cfg}
            finally:
                server.stop()
        finally:
            milvus.stop()


def search(c: SearchClient, text: str, arm: str = "dense", top_k: int = 1000, **kw) -> list[dict]:
    body = {"scene": "text2text", "query": {"text": text}, "top_k": top_k, "force": {"recall": arm}, "consistency": "strong", **kw}
    return c.search_body(body)["results"]


def encoded(stack) -> int:
    return stack["server"].service.documents.encoded


def test_write_cycle_put_update_delete_then_a_strong_search_sees_exactly_that(docs_stack):
    c: SearchClient = docs_stack["client"]
    expected = {f"s{i}": None for i in range(10)}
    t0 = time.perf_counter()
    for start in range(0, 1000, 250):  # 1,000 documents, in four batches
        out = c.put_documents("docs", [doc(i) for i in range(start, start + 250)], op_id=f"load-{start}")
        assert out["written"] == 250 and out["encoded"] == 250 and out["unchanged"] == 0 and not out["replayed"], out
    put_s = time.perf_counter() - t0
    expected.update({f"d{i}": doc(i) for i in range(1000)})
    before = encoded(docs_stack)

    # update 100: 50 change metadata only (no inference), 50 change their text
    meta = [doc(i, lang="de", tag="meta") for i in range(50)]
    text = [doc(i, text=f"rewritten document {i} now about fresh{i}") for i in range(50, 100)]
    out = c.put_documents("docs", meta + text, op_id="update-1")
    assert (out["written"], out["encoded"], out["unchanged"]) == (100, 50, 50), out
    assert encoded(docs_stack) - before == 50
    only_meta = c.put_documents("docs", [doc(i, lang="fr") for i in range(50)])
    assert only_meta["encoded"] == 0 and encoded(docs_stack) - before == 50  # a metadata-only batch costs no inference
    meta = [doc(i, lang="fr") for i in range(50)]
    expected.update({d["id"]: d for d in meta + text})

    # the same op_id again is one write: answered from its record, nothing encoded
    again = c.put_documents("docs", [doc(i, lang="de", tag="meta") for i in range(50)] + text, op_id="update-1")
    assert again["replayed"] and again["encoded"] == 50 and encoded(docs_stack) - before == 50
    assert c.get_document("docs", "d0")["lang"] == "fr"  # the replay did not write the batch again over the later one
    with pytest.raises(AlreadyExists, match="op_id"):
        c.put_documents("docs", [doc(1)], op_id="update-1")

    # delete 100 by id, 50 by filter
    out = c.delete_documents("docs", ids=[f"d{i}" for i in range(100, 200)] + ["nope"], op_id="del-1")
    assert (out["deleted"], out["not_found"]) == (100, 1), out
    assert c.delete_documents("docs", ids=[f"d{i}" for i in range(100, 200)] + ["nope"], op_id="del-1")["replayed"]
    out = c.delete_documents("docs", filter={"n": {"gte": 900, "lt": 950}})
    assert out["deleted"] == 50, out
    for i in [*range(100, 200), *range(900, 950)]:
        del expected[f"d{i}"]
    assert len(expected) == 860

    # a strong search sees exactly that: vectors, stored documents, terms
    hits = search(c, "document")
    assert {h["id"] for h in hits} == set(expected), set(expected) ^ {h["id"] for h in hits}
    by_id = {h["id"]: h["doc"] for h in hits}
    assert by_id["d0"]["lang"] == "fr" and "tag" not in by_id["d7"] and by_id["d300"] == doc(300)
    assert by_id["d60"]["text"].startswith("rewritten") and "_mmsearch" not in by_id["d60"]
    assert search(c, "rewritten document 77 now about fresh77", top_k=1)[0]["id"] == "d77"  # its new vector
    assert {h["id"] for h in search(c, "document", filter={"lang": "fr"})} == {f"d{i}" for i in range(50)}
    words = search(c, "document seed", arm="words")
    assert {h["id"] for h in words} == set(expected)  # BM25: every live document, no deleted one
    assert [h["id"] for h in search(c, "fresh60", arm="words")] == ["d60"]
    assert search(c, "w60", arm="words") == []  # the old text's terms are gone
    assert search(c, "w150", arm="words") == [] and search(c, "w920", arm="words") == []  # deleted: never back from BM25
    for gone in ("d150", "d920"):
        with pytest.raises(NotFound):
            c.get_document("docs", gone)
    assert c.get_document("docs", "d60")["text"].startswith("rewritten")
    assert c.get_document("docs", "d300") == doc(300)
    info = c.get_index("docs")
    assert info["count"] == 860 and info["fields"] == FIELDS and info["lexical"] == ["title", "text"] and info["model"] == "tiny"
    assert info["model_version"].startswith("sha256:") and info["live_build"] and info["builds"][0]["live"]
    assert [i["index"] for i in c.list_indexes()] == ["docs"]
    print(f"put 1,000 documents in {put_s:.2f} s")


def test_default_consistency_sees_a_write_within_about_a_second(docs_stack):
    c: SearchClient = docs_stack["client"]
    c.put_documents("docs", [doc(5000, text="a freshly written zebra document")])
    t0 = time.monotonic()
    body = {"scene": "text2text", "query": {"text": "a freshly written zebra document"}, "top_k": 1, "force": {"recall": "dense"}}
    assert wait_until(lambda: c.search_body(body)["results"][0]["id"] == "d5000", 5, interval=0.05)
    lag = time.monotonic() - t0
    assert lag < 3
    print(f"a bounded search saw the write after {lag * 1000:.0f} ms")


def _raw(url: str, method: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_batches_are_refused_whole_naming_each_document(docs_stack):
    c: SearchClient = docs_stack["client"]
    batch = [doc(7000), {"id": "d7001", "title": "no text", "subject": 1, "lang": "en", "n": 1},
             doc(7002, subject="three"), doc(7000)]
    with pytest.raises(BadInput) as e:
        c.put_documents("docs", batch)
    rejects = e.value.rejects  # type: ignore[attr-defined]
    assert [(r["position"], r["id"], r["field"]) for r in rejects] == [(1, "d7001", "text"), (2, "d7002", "subject"), (3, "d7000", "id")]
    assert "documents[2] (id 'd7002').subject: field subject holds int values" in str(e.value)
    with pytest.raises(NotFound):  # nothing of the batch was written, its good document neither
        c.get_document("docs", "d7000")
    with pytest.raises(NotFound, match="index 'nowhere' not found"):
        c.put_documents("nowhere", [doc(1)])
    with pytest.raises(TooLarge, match="batch limit"):
        c.put_documents("docs", [doc(i) for i in range(1001)])
    with pytest.raises(TooLarge, match=r"documents\[0\] \(id 'big'\)"):
        c.put_documents("docs", [doc(1, id="big", notes="x" * 70_000)])
    with pytest.raises(BadInput, match="ids or filter"):
        c.delete_documents("docs", ids=None, filter=None)
    with pytest.raises(BadInput, match="filter.colour: unknown field"):
        c.delete_documents("docs", filter={"colour": "red"})
    code, out = _raw(docs_stack["url"] + "/v1/indexes/docs/documents", "PUT", b"{not json")
    assert code == 400 and out["error"] == "BadInput" and "not valid JSON" in out["message"]
    code, out = _raw(docs_stack["url"] + "/v1/indexes/docs/documents", "PUT", json.dumps({"documents": [doc(1)], "extra": 1}).encode())
    assert code == 400 and "extra" in out["message"]


def test_grpc_mirrors_the_documents_api(docs_stack):
    import grpc

    from mmsearch.protos import search_pb2 as pb
    from mmsearch.protos import search_pb2_grpc as pb_grpc

    stub = pb_grpc.SearchStub(grpc.insecure_channel(f"127.0.0.1:{docs_stack['server'].grpc_port}"))
    out = json.loads(stub.PutDocuments(pb.PutDocumentsRequest(index="docs", documents_json=[json.dumps(doc(8000, text="a grpc written okapi"))],
                                                              op_id="grpc-1"), timeout=30).result_json)
    assert out["written"] == 1 and out["encoded"] == 1
    assert json.loads(stub.GetDocument(pb.GetDocumentRequest(index="docs", id="d8000"), timeout=10).doc_json)["text"] == "a grpc written okapi"
    req = pb.SearchRequest(scene="text2text", query=pb.Query(text="a grpc written okapi"), top_k=1, force={"recall": "dense"},
                           consistency="strong")
    assert stub.Search(req, timeout=30).results[0].id == "d8000"
    out = json.loads(stub.DeleteDocuments(pb.DeleteDocumentsRequest(index="docs", filter=json.dumps({"n": 8000})), timeout=30).result_json)
    assert out["deleted"] == 1
    with pytest.raises(grpc.RpcError) as e:
        stub.GetDocument(pb.GetDocumentRequest(index="docs", id="d8000"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stub.PutDocuments(pb.PutDocumentsRequest(index="docs", documents_json=['{"id": "x"}']), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "documents[0] (id 'x').text: missing text" in e.value.details()
    infos = [json.loads(i) for i in stub.ListIndexes(pb.ListIndexesRequest(), timeout=10).index_json]
    assert [i["index"] for i in infos] == ["docs"] and infos[0]["dim"] > 0


def test_cli_puts_a_file_in_batches_and_writes_the_rejects(docs_stack, capsys):
    from mmsearch.client import docs_cli

    path = docs_stack["base"] / "more.jsonl"
    lines = [json.dumps(doc(i)) for i in range(9000, 9030)]
    lines[4] = "{not json"
    lines[10] = json.dumps(doc(9010, subject="ten"))
    lines[20] = json.dumps({"id": "d9020", "title": "no text", "subject": 1, "lang": "en", "n": 1})
    path.write_text("\n".join(lines) + "\n")
    common = ["--url", docs_stack["url"]]
    out = docs_cli.run([*common, "put", "--index", "docs", "--file", str(path), "--batch-size", "8", "--no-progress"])
    assert out[0].startswith("index docs: written 27 (encoded 27, unchanged 0), already applied 0, rejected 3"), out
    rejects = [json.loads(x) for x in (docs_stack["base"] / "more.docs.rejects.jsonl").read_text().splitlines()]
    assert sorted((r["line"], r["field"]) for r in rejects) == [(5, None), (11, "subject"), (21, "text")]
    again = docs_cli.run([*common, "put", "--index", "docs", "--file", str(path), "--batch-size", "8", "--no-progress"])
    assert "written 0 (encoded 0, unchanged 0), already applied 27, rejected 3" in again[0], again  # a re-run applies nothing twice
    assert json.loads(docs_cli.run([*common, "get", "--index", "docs", "d9000"])[0]) == doc(9000)
    assert docs_cli.run([*common, "delete", "--index", "docs", "--ids", "d9000,d9001,zz"]) == ["index docs: deleted 2, not found 1"]
    assert docs_cli.run([*common, "delete", "--index", "docs", "--filter", '{"n": {"gte": 9002, "lt": 9030}}'])[0].startswith(
        "index docs: deleted 25")
    assert docs_cli.run([*common, "indexes"])[0].startswith("docs\tlive b")


def test_image_documents_by_path_or_inline_through_the_builds_safe_reading(docs_stack, clip_export):
    import base64
    import shutil

    from conftest_stack import SVG, image_bytes

    base = docs_stack["base"]
    shutil.copytree(clip_export["clip_image"], docs_stack["repo"] / "clip_image")
    root = base / "images"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.png").write_bytes(image_bytes(i))
    (root / "drawing.svg").write_text(SVG)
    (base / "outside.png").write_bytes(image_bytes(9))
    seed = base / "images.jsonl"
    seed.write_text("\n".join(json.dumps({"id": f"img{i}", "image": f"{i}.png", "caption": f"picture {i}"}) for i in range(2)) + "\n")
    build_index(BuildOptions(index="pics", docs=seed, model="clip_image", repo=docs_stack["repo"], data_dir=base / "data",
                             image_root=root, milvus_uri=docs_stack["milvus"], mongo_uri=docs_stack["mongo"], lexical=["caption"],
                             progress=False))
    c: SearchClient = docs_stack["client"]
    inline = base64.b64encode(image_bytes(7)).decode()
    out = c.put_documents("pics", [{"id": "img2", "image": "2.png", "caption": "picture 2"}, {"id": "svg", "image": "drawing.svg"},
                                   {"id": "inline", "image_b64": inline, "caption": "sent inline"}])
    assert (out["written"], out["encoded"]) == (3, 3), out
    assert c.get_document("pics", "inline")["caption"] == "sent inline"
    again = c.put_documents("pics", [{"id": "img2", "image": "2.png", "caption": "new caption"},
                                     {"id": "inline", "image_b64": inline, "caption": "still inline"}])
    assert (again["encoded"], again["unchanged"]) == (0, 2)  # same image bytes: no inference
    (root / "2.png").write_bytes(image_bytes(8))  # the file under the same path changed: encoded again
    assert c.put_documents("pics", [{"id": "img2", "image": "2.png"}])["encoded"] == 1
    with pytest.raises(BadInput) as e:
        c.put_documents("pics", [{"id": "a", "image": "3.png"}, {"id": "b", "image": "../outside.png"}, {"id": "c", "image": "gone.png"},
                                 {"id": "d", "image_b64": base64.b64encode(b"not an image").decode()}])
    assert [(r["position"], r["field"]) for r in e.value.rejects] == [(1, "image"), (2, "image"), (3, "image_b64")]  # type: ignore[attr-defined]
    assert "escapes the image root" in e.value.rejects[0]["reason"]  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        c.get_document("pics", "a")  # refused with its batch
    assert c.get_index("pics")["count"] == 5 and c.get_index("pics")["modality"] == "image"

    # the inline image is kept (clients/blobs.py): GET names it, a PUT may send that back, a reindex encodes it again,
    # a snapshot carries it, and the sweep deletes one no document or journal entry holds any more
    import datetime as dt

    from mmsearch.clients.blobs import BlobStore, blob_ref
    from mmsearch.clients.documents import DocumentStore
    from mmsearch.clients.lexical import LexicalStore
    from mmsearch.clients.vectors import VectorStore, collection_name
    from mmsearch.config import lexical_root
    from mmsearch.offline import snapshot
    from mmsearch.offline.reindex import ReindexOptions, reindex
    from mmsearch.retrieval_service.retention import expire

    ref = blob_ref(image_bytes(7))
    held = c.get_document("pics", "inline")
    assert held == {"id": "inline", "caption": "still inline", "image_blob": ref}
    back = c.put_documents("pics", [{**held, "caption": "sent back"}])
    assert (back["encoded"], back["unchanged"]) == (0, 1)
    # served to show beside its hits: the API as sent (PNG), an inline SVG only ever rendered, and the page's route
    assert c.image(ref) == (image_bytes(7), "image/png")
    kept = BlobStore(DocumentStore(docs_stack["mongo"]))
    drawing = kept.put(SVG.encode())
    png, mime = c.image(drawing)
    assert mime == "image/png" and png.startswith(b"\x89PNG") and b"<svg" not in png
    kept.coll.delete_one({"_id": drawing})  # (no document holds it: the sweep counted below must not meet it)
    with pytest.raises(NotFound):
        c.image("sha256:" + "0" * 64)
    with pytest.raises(BadInput, match="sha256:<64 hex digits>"):
        c.image("../../etc/passwd")
    from mmsearch.web_ui.app import create_app

    page = create_app(docs_stack["cfg"], client=c).test_client()
    shown = page.get(f"/blobs/{ref}")
    assert (shown.status_code, shown.data, shown.mimetype) == (200, image_bytes(7), "image/png")
    assert "immutable" in shown.headers["Cache-Control"] and shown.headers["X-Content-Type-Options"] == "nosniff"
    assert page.get("/blobs/not-a-reference").status_code == 404
    assert page.get("/blobs/sha256:" + "0" * 64).status_code == 404
    assert page.get("/?" + urllib.parse.urlencode({"like": "sha256:" + "0" * 64})).status_code == 404  # "more like this"
    for bad, why in (("sha256:" + "0" * 64, "no stored image"), ("gone.png", "stored image's reference")):
        with pytest.raises(BadInput) as e:
            c.put_documents("pics", [{"id": "x", "image_blob": bad}])
        assert [(r["field"], why in r["reason"]) for r in e.value.rejects] == [("image_blob", True)]  # type: ignore[attr-defined]
    vs, ds = VectorStore(docs_stack["milvus"]), DocumentStore(docs_stack["mongo"])
    was = vs.vector(collection_name("pics", vs.live_build("pics")), "inline")
    summary = reindex(ReindexOptions(index="pics", model="clip_image", repo=docs_stack["repo"], data_dir=base / "data",
                                     milvus_uri=docs_stack["milvus"], mongo_uri=docs_stack["mongo"], progress=False))
    assert summary.live and summary.skipped == {} and summary.indexed == 5, summary.line()
    assert np.allclose(vs.vector(collection_name("pics", summary.build), "inline"), was, atol=1e-4)  # read back from the blob store
    meta = snapshot.create(vs, ds, LexicalStore(lexical_root(docs_stack["server"].service.config)), "pics", base / "snap")
    assert meta["counts"]["images"] == 1 and ref.encode() in (base / "snap" / "blobs.bson").read_bytes()

    gone_ref = blob_ref(image_bytes(5))
    c.put_documents("pics", [{"id": "tmp", "image_b64": base64.b64encode(image_bytes(5)).decode()}])
    c.delete_documents("pics", ids=["tmp"])
    blobs = BlobStore(ds)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    assert expire(ds, journal_days=0, op_id_days=0, now=later).blobs == 0  # the journal (kept) still holds it: a rollback replays it
    assert set(blobs.get_many([ref, gone_ref])) == {ref, gone_ref}
    out = expire(ds, journal_days=1, op_id_days=0, now=later)
    assert out.journal.get("pics") and out.blobs == 1 and set(blobs.get_many([ref, gone_ref])) == {ref}
