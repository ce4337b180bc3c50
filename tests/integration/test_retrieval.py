"""The whole search chain against real local servers: Triton, the preprocess service, a Milvus Lite
server, secantusdb, and experiments from the Consul stand-in."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from conftest_stack import EXPERIMENTS

from mmsearch.preprocess_service.server import create_server as create_preprocess
from mmsearch.protos import search_pb2, search_pb2_grpc
from mmsearch.retrieval_service.server import create_server as create_retrieval
from mmsearch.runtime.net import free_port, wait_until

pytestmark = pytest.mark.integration

def post(url: str, body, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_text2text(stack):
    code, out = post(stack["url"] + "/v1/search", {"scene": "text2text", "query": {"text": "text document 42 about subject 6"},
                                                     "user_id": "u1", "force": {"rerank": "none"}})
    assert code == 200, out
    assert out["results"][0]["id"] == "t42" and out["results"][0]["doc"]["n"] == 42
    assert len(out["results"]) == 10 and out["experiment"] == {"rerank": "none", "recall": "dense"}
    assert set(out["timings_ms"]) >= {"split", "qp", "embed", "recall", "rerank", "summary", "total"}
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)


def test_text2text_rerank_with_cross_encoder(stack):
    code, out = post(stack["url"] + "/v1/search", {"scene": "text2text", "query": {"text": "text document 7"},
                                                     "force": {"rerank": "ce"}, "top_k": 5})
    assert code == 200, out
    assert out["experiment"] == {"rerank": "ce", "recall": "dense"} and out["timings_ms"]["rerank"] > 0
    scores = [r["score"] for r in out["results"]]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)  # sigmoid CE scores
    assert out["user_id"]  # anonymous requests get an id back


def test_text2image_and_image2image(stack):
    code, out = post(stack["url"] + "/v1/search", {"scene": "text2image", "query": {"text": "a picture"}, "user_id": "u2"})
    assert code == 200 and len(out["results"]) == 5 and all(r["id"].startswith("img") for r in out["results"])
    assert out["experiment"] == {"model": "base"}
    b64 = base64.b64encode((stack["images"] / "17.png").read_bytes()).decode()
    code, out = post(stack["url"] + "/v1/search", {"scene": "image2image", "query": {"image_b64": b64}})
    assert code == 200, out
    assert out["results"][0]["id"] == "img17" and out["results"][0]["doc"]["caption"] == "picture 17"
    assert out["experiment"] == {}


def test_grpc_mirrors_http(stack):
    stub = search_pb2_grpc.SearchStub(grpc.insecure_channel(f"127.0.0.1:{stack['retrieval'].grpc_port}"))
    req = search_pb2.SearchRequest(scene="text2text", query=search_pb2.Query(text="text document 12 about subject 3"),
                                   user_id="g1", top_k=3, force={"rerank": "none"})
    resp = stub.Search(req, timeout=30)
    code, out = post(stack["url"] + "/v1/search", {"scene": "text2text", "query": {"text": "text document 12 about subject 3"},
                                                     "user_id": "g1", "top_k": 3, "force": {"rerank": "none"}})
    assert code == 200, out
    assert [r.id for r in resp.results] == [r["id"] for r in out["results"]]
    assert json.loads(resp.results[0].doc_json)["n"] == 12 and dict(resp.experiment) == {"rerank": "none", "recall": "dense"}
    with pytest.raises(grpc.RpcError) as e:
        stub.Search(search_pb2.SearchRequest(scene="text2video", query=search_pb2.Query(text="x")), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "scene" in e.value.details()


def search(stack, **body) -> dict:
    body = {"scene": "text2text", "query": {"text": "text document 42 about subject 6"}, "force": {"rerank": "none"}, **body}
    code, out = post(stack["url"] + "/v1/search", body)
    assert code == 200, out
    return out


def test_filters_run_inside_the_vector_search(stack):
    out = search(stack, top_k=20, filter={"subject": 6, "lang": "en"})
    expected = {f"t{i}" for i in range(300) if i % 9 == 6 and i % 2}  # 16 documents: fewer than top_k, all found
    assert {r["id"] for r in out["results"]} == expected
    assert all(r["doc"]["subject"] == 6 and r["doc"]["lang"] == "en" for r in out["results"])
    few = search(stack, top_k=10, filter={"id": {"in": ["t6", "t15", "xss"]}})  # fewer matches than top_k
    assert sorted(r["id"] for r in few["results"]) == ["t15", "t6", "xss"] and few["has_more"] is False
    assert search(stack, filter={"subject": 99})["results"] == []  # matches nothing: empty, not an error
    quoted = search(stack, filter={"lang": 'e"n'})  # a value with a quote is a value, not syntax
    assert [r["id"] for r in quoted["results"]] == ["xss"]
    ranged = search(stack, top_k=50, filter={"or": [{"subject": {"lte": 1}}, {"not": {"lang": {"in": ["en", "fr"]}}}]})
    assert ranged["results"] and all(r["doc"]["subject"] <= 1 for r in ranged["results"])


@pytest.mark.parametrize("flt, fragment", [
    ({"colour": "red"}, "filter.colour: unknown field (this index stores: id, lang, subject)"),
    ({"subject": "six"}, "filter.subject: field subject holds int values"),
    ({"subject": {"near": 3}}, "filter.subject.near: unknown operator"),
    ("subject == 6", "filter: Input should be a valid dictionary"),
])
def test_a_bad_filter_is_400_naming_the_field(stack, flt, fragment):
    code, out = post(stack["url"] + "/v1/search", {"scene": "text2text", "query": {"text": "x"}, "filter": flt})
    assert code == 400 and fragment in out["message"], out


def test_paging_yields_each_hit_once_in_order(stack):
    whole = [r["id"] for r in search(stack, top_k=33, filter={"subject": 6})["results"]]
    paged, offset = [], 0
    while True:
        page = search(stack, top_k=5, offset=offset, filter={"subject": 6})
        assert page["offset"] == offset
        paged += [r["id"] for r in page["results"]]
        if not page["has_more"]:
            break
        offset += 5
    assert paged == whole and len(set(paged)) == 33


def test_fields_select_and_hits_say_their_score(stack):
    out = search(stack, top_k=3, fields=["n"])
    assert out["results"][0]["doc"] == {"n": 42} and all(set(r["doc"]) == {"n"} for r in out["results"])
    assert all(r["score_type"] == "cosine" and r["sources"] == ["vector"] for r in out["results"])
    ce = search(stack, top_k=3, force={"rerank": "ce"})
    assert all(r["score_type"] == "rerank" for r in ce["results"])


def test_grpc_filters_and_pages_like_http(stack):
    stub = search_pb2_grpc.SearchStub(grpc.insecure_channel(f"127.0.0.1:{stack['retrieval'].grpc_port}"))
    resp = stub.Search(search_pb2.SearchRequest(scene="text2text", query=search_pb2.Query(text="text document 42 about subject 6"),
                                                top_k=5, offset=5, fields=["subject"], filter=json.dumps({"subject": 6}),
                                                force={"rerank": "none"}), timeout=30)
    http = search(stack, top_k=5, offset=5, fields=["subject"], filter={"subject": 6})
    assert [r.id for r in resp.results] == [r["id"] for r in http["results"]] and resp.has_more and resp.offset == 5
    assert all(json.loads(r.doc_json) == {"subject": 6} and r.score_type == "cosine" for r in resp.results)
    with pytest.raises(grpc.RpcError) as e:
        stub.Search(search_pb2.SearchRequest(scene="text2text", query=search_pb2.Query(text="x"), filter='{"colour": 1}'), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "filter.colour" in e.value.details()


def test_embed_text_and_image(stack):
    from mmsearch.client.search_client import SearchClient
    from mmsearch.errors import BadInput, NotFound

    c = SearchClient(stack["url"])
    v = c.embed("tiny", text="text document 42 about subject 6")
    assert v.ndim == 1 and abs(float((v * v).sum()) - 1) < 1e-3
    hits = c.search("text2text", text="text document 42 about subject 6", top_k=1, force={"rerank": "none"})["results"]
    img = c.embed("clip_image", image=(stack["images"] / "17.png").read_bytes())
    assert img.shape[0] > 1 and hits[0]["id"] == "t42"
    with pytest.raises(NotFound):
        c.embed("no_such_model", text="x")
    with pytest.raises(BadInput, match="text: give text or image_b64"):
        c._request("/v1/embed", {"model": "tiny"})
    with pytest.raises(BadInput, match="model: String should match pattern"):
        c._request("/v1/embed", {"model": "../etc", "text": "x"})


def test_openapi_is_valid_and_describes_every_route(stack):
    from openapi_spec_validator import validate

    from mmsearch.retrieval_service.http_app import served_paths

    code, raw = get(stack["url"] + "/openapi.json")
    doc = json.loads(raw)
    assert code == 200
    validate(doc)
    routes = served_paths(stack["retrieval"].app)
    assert routes == set(doc["paths"]), routes ^ set(doc["paths"])


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"scene": "text2video", "query": {"text": "x"}}, "scene"),
        ({"scene": "text2text"}, "query: Field required"),
        ({"scene": "text2text", "query": {"text": "x", "image_b64": "aGVsbG8="}}, "not both"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": 0}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": 1001}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": "5"}, "top_k"),
        ({"scene": "image2image", "query": {"image_b64": "bm90IGFuIGltYWdl"}}, "query.image_b64"),
        ({"scene": "image2image", "query": {"image_b64": "!!!not base64"}}, "query.image_b64"),
        ({"scene": "text2text", "query": {"text": "x"}, "force": {"rerank": "mystery"}}, "force"),
        ({"scene": "text2text", "query": {"text": "x"}, "force": {"colour": "red"}}, "force"),
        ({"scene": "text2text", "query": {"text": "   "}}, "query.text"),
        ({"scene": "text2text", "query": {"text": "x"}, "user_id": "bad id with spaces"}, "user_id"),
        ([1, 2], "body"),
    ],
)
def test_bad_input_is_400_naming_the_field(stack, body, fragment):
    code, out = post(stack["url"] + "/v1/search", body)
    assert code == 400, out
    assert fragment in out["message"]


def test_huge_and_malformed_bodies(stack):
    code, out = post(stack["url"] + "/v1/search", None, raw=b"{" + b" " * (10 * 1024 * 1024) + b"}")
    assert code == 400 and "body" in out["message"]
    code, out = post(stack["url"] + "/v1/search", None, raw=b"{not json")
    assert code == 400 and "not valid JSON" in out["message"]


def test_consul_change_goes_live_and_invalid_is_rejected(stack):
    url = stack["url"]
    assert post(url + "/v1/search", {"scene": "text2image", "query": {"text": "x"}, "user_id": "u9"})[1]["experiment"] == {"model": "base"}
    v1 = json.loads(get(url + "/v1/config")[1])["version"]
    stack["consul"].put("mmsearch/experiments", EXPERIMENTS.replace("traffic: 100, embed", "traffic: 0, embed")
                        .replace("{name: alt, traffic: 0", "{name: alt, traffic: 100"))
    modify_index = stack["consul"].kv["mmsearch/experiments"][1]
    # the outcome is what matters: the new split serves requests (the wait's own timeout is the bound; no stopwatch)
    assert wait_until(lambda: post(url + "/v1/search", {"scene": "text2image", "query": {"text": "x"}, "user_id": "u9"})[1]
                      ["experiment"] == {"model": "alt"}, 10, 0.1)
    cfg = json.loads(get(url + "/v1/config")[1])
    assert cfg["version"] != v1 and cfg["version"].startswith(f"consul-{modify_index}-")  # exactly the value just put
    assert cfg["last_error"] is None
    stack["consul"].put("mmsearch/experiments", "scenes:\n  text2text:\n    layers: [{name: x, salt: s, arms: [{name: a, traffic: 60}]}]\n")
    assert wait_until(lambda: json.loads(get(url + "/v1/config")[1])["last_error"] is not None, 5, 0.1)
    cfg2 = json.loads(get(url + "/v1/config")[1])
    assert cfg2["version"] == cfg["version"] and "sums to 60" in cfg2["last_error"]
    assert post(url + "/v1/search", {"scene": "text2image", "query": {"text": "x"}, "user_id": "u9"})[1]["experiment"] == {"model": "alt"}
    stack["consul"].put("mmsearch/experiments", EXPERIMENTS)  # restore for the other tests
    assert wait_until(lambda: json.loads(get(url + "/v1/config")[1])["last_error"] is None, 5, 0.1)


def test_expired_query_log_entries_are_swept_by_the_writer_not_by_secantusdb(stack):
    """The embedded secantusdb runs without its TTL sweeper (it scanned the whole log under its global
    lock each minute: every search stalled 5 s at 340k entries); the query log deletes what expired."""
    import datetime as dt

    from mmsearch.clients.documents import DocumentStore
    from mmsearch.retrieval_service.deps import Lazy
    from mmsearch.retrieval_service.prometheus_metrics import Metrics
    from mmsearch.retrieval_service.querylog import COLLECTION, QueryLog

    assert "mmsearch.runtime.secantusd" in stack["mongo"].proc.args
    store = DocumentStore(stack["mongo"].uri, "sweep_test")
    now = dt.datetime.now(dt.UTC)
    store.ensure_collection(COLLECTION)
    store.insert_many(COLLECTION, [{"_id": "old", "at": now - dt.timedelta(days=31)}, {"_id": "new", "at": now}])
    log = QueryLog(Lazy("mongodb", lambda: DocumentStore(stack["mongo"].uri, "sweep_test")), Metrics(), ttl_days=30,
                   sweep_s=1.0)
    try:
        assert wait_until(lambda: store.find(COLLECTION, {}, ["_id"]) == [{"_id": "new"}], 10)
    finally:
        log.stop()
        store.drop(COLLECTION)
        store.close()


def test_clicks_query_log_and_ab_report(stack):
    from mmsearch.clients.documents import DocumentStore
    from mmsearch.retrieval_service.ab_report import report

    url = stack["url"]
    code, out = post(url + "/v1/search", {"scene": "text2text", "query": {"text": "text document 5"}, "user_id": "clicker",
                                          "force": {"rerank": "ce"}})
    code, ok = post(url + "/v1/click", {"request_id": out["request_id"], "doc_id": out["results"][0]["id"], "user_id": "clicker"})
    assert code == 200 and ok == {"ok": True}
    code, err = post(url + "/v1/click", {"request_id": "nope", "doc_id": "t1"})
    assert code == 404 and "request_id" in err["message"]
    store = DocumentStore(stack["mongo"].uri, stack["cfg"].mongo.database)
    entry = store.db["_query_log"].find_one({"_id": out["request_id"]})
    assert entry["arms"] == {"rerank": "ce", "recall": "dense"} and entry["query"] == {"text": "text document 5"}
    assert entry["clicks"][0]["doc_id"] == out["results"][0]["id"] and entry["results"] == [r["id"] for r in out["results"]]
    assert entry["forced"] is True
    # the log is capped in time by a TTL index on a real date (secantusdb expires like mongod, checked by hand)
    ttl = {v["key"][0][0]: v.get("expireAfterSeconds") for v in store.db["_query_log"].index_information().values()}
    assert ttl.get("at") == 30 * 86400 and entry["at"].year >= 2025
    store.ensure_collection("_query_log")  # a second creation (another replica's start) is no error
    store.expire_after("_query_log", "at", 7 * 86400)  # a changed setting changes the index in place
    ttl = {v["key"][0][0]: v.get("expireAfterSeconds") for v in store.db["_query_log"].index_information().values()}
    assert ttl["at"] == 7 * 86400
    # randomised traffic: users split by the layer's salt; each clicks its first result on every other search
    for i in range(12):
        code, res = post(url + "/v1/search", {"scene": "text2text", "query": {"text": f"text document {i}"}, "user_id": f"ab-{i}"})
        assert code == 200, res
        if i % 2:
            assert post(url + "/v1/click", {"request_id": res["request_id"], "doc_id": res["results"][0]["id"]})[0] == 200
    from conftest_stack import EXPERIMENTS as EXP

    from mmsearch.experiments.spec import parse_experiments
    from mmsearch.retrieval_service.ab_report import render

    rows = {(r["scene"], r["arm"]): r for r in report(store, "text2text", parse_experiments(EXP))}
    ce, none = rows[("text2text", "ce")], rows[("text2text", "none")]
    assert ce["forced"] >= 1  # the forced search and its click are counted apart, not in the statistics
    assert ce["users"] + none["users"] >= 12  # users, the unit of assignment
    assert 0 <= ce["ctr_low"] <= ce["ctr"] <= ce["ctr_high"] <= 1 and ce["srm_p"] is not None
    assert {r["vs_control"] is None for r in (ce, none)} == {True, False}  # one control, one compared with it
    text = render(list(rows.values()))
    assert "text2text/rerank: control" in text and "split matches the traffic shares" in text


def test_health_ready_metrics(stack):
    url = stack["url"]
    assert get(url + "/healthz")[0] == 200
    code, body = get(url + "/readyz")
    assert code == 200 and all(json.loads(body)["dependencies"].values())
    metrics = get(url + "/metrics")[1].decode()
    assert 'mmsearch_stage_seconds_count{arm="rerank=none,recall=dense",scene="text2text",stage="embed"}' in metrics
    assert "mmsearch_requests_total" in metrics


@pytest.mark.parametrize("tokenize", ["local", "service"])
def test_dependency_down_is_503_naming_it_and_recovers(stack, tokenize):
    """A second retrieval service whose preprocess service is not up yet: 503 naming it, then recovery.
    Text queries tokenized in the retrieval service (tokenize local) do not need it: they answer at once."""
    port = free_port()
    cfg = stack["cfg"].model_copy(update={
        "preprocess": stack["cfg"].preprocess.model_copy(update={"port": port, "metrics_port": 0}),
        "retrieval": stack["cfg"].retrieval.model_copy(update={"tokenize": tokenize})})
    image = {"scene": "image2image", "query": {"image_b64": base64.b64encode((stack["images"] / "5.png").read_bytes()).decode()}}
    text = {"scene": "text2text", "query": {"text": "text document 42 about subject 6"}, "force": {"rerank": "none"}}
    r = create_retrieval(cfg, "127.0.0.1:0", "127.0.0.1:0")
    url = f"http://127.0.0.1:{r.http_port}"
    try:
        assert wait_until(lambda: r.service.experiments.ready(), 10)
        t0 = time.perf_counter()
        code, out = post(url + "/v1/search", image)
        assert code == 503 and out["dependency"].startswith("preprocess service at 127.0.0.1")
        assert time.perf_counter() - t0 < cfg.retrieval.request_timeout_s + 1
        code, out = post(url + "/v1/search", text)
        if tokenize == "local":
            assert code == 200 and out["results"][0]["id"] == "t42", out
        else:
            assert code == 503 and out["dependency"].startswith("preprocess service at 127.0.0.1"), out
        code, body = get(url + "/readyz")
        assert code == 503 and json.loads(body)["dependencies"]["preprocess"] is False
        assert json.loads(body)["dependencies"].get("tokenizers") is (True if tokenize == "local" else None)
        pre = create_preprocess(cfg, f"127.0.0.1:{port}")
        try:
            assert wait_until(lambda: post(url + "/v1/search", image)[0] == 200, 10, 0.2)
            assert post(url + "/v1/search", text)[0] == 200
        finally:
            pre.stop(0)
    finally:
        r.stop()


def test_local_tokenizers_without_a_model_repository_are_503_naming_the_setting(stack, tmp_path):
    cfg = stack["cfg"].model_copy(update={"model_repository": tmp_path / "missing"})
    r = create_retrieval(cfg, "127.0.0.1:0", "127.0.0.1:0")
    url = f"http://127.0.0.1:{r.http_port}"
    try:
        assert wait_until(lambda: r.service.experiments.ready(), 10)
        code, out = post(url + "/v1/search", {"scene": "text2text", "query": {"text": "x"}})
        assert code == 503 and out["dependency"] == "tokenizers", out
        assert "model repository not found" in out["message"] and "retrieval.tokenize" in out["message"], out
    finally:
        r.stop()


def test_models_say_what_serves_them(stack):
    code, raw = get(stack["url"] + "/v1/models")
    models = {m["name"]: m for m in json.loads(raw)["models"]}
    assert code == 200 and {"tiny", "rerank", "clip_text", "clip_image"} <= set(models)
    assert models["tiny"]["state"] == "READY" and models["tiny"]["provider"] == "CPUExecutionProvider"
    assert models["tiny"]["provider_source"] == "session"  # the live session's, from Triton's metrics
    assert models["tiny"]["instance_kind"] == ["KIND_CPU"] and models["tiny"]["max_batch_size"] > 0


def test_a_hybrid_arm_fuses_bm25_with_vectors_through_the_api(stack):
    """The forced hybrid arm: BM25 over title and text (tantivy) fused with the vectors; a rare word
    that only one document holds brings it first, and the response names the sources."""
    body = {"scene": "text2text", "query": {"text": "hostile"}, "force": {"rerank": "none", "recall": "hybrid"}, "top_k": 5}
    code, out = post(stack["url"] + "/v1/search", body)
    assert code == 200, out
    top = out["results"][0]
    assert top["id"] == "xss" and "words" in top["sources"] and top["score_type"] == "fused"
    assert out["experiment"]["recall"] == "hybrid" and {"lexical", "fusion"} <= set(out["timings_ms"])
    code, dense = post(stack["url"] + "/v1/search", {**body, "force": {"rerank": "none", "recall": "dense"}})
    assert code == 200 and all(r["sources"] == ["vector"] and r["score_type"] == "cosine" for r in dense["results"])
    # the filter holds for BM25 hits too (xss is lang 'e"n')
    code, out = post(stack["url"] + "/v1/search", {**body, "filter": {"lang": "fr"}})
    assert code == 200 and "xss" not in [r["id"] for r in out["results"]]
    assert all(r["doc"]["lang"] == "fr" for r in out["results"])
    # hostile query syntax is only words to BM25
    code, out = post(stack["url"] + "/v1/search", {**body, "query": {"text": 'title:(" AND [* TO'}})
    assert code == 200, out


def test_svg_images_are_indexed_and_searchable_and_svg_bombs_are_400(stack):
    from conftest_stack import SVG

    b64 = base64.b64encode(SVG.encode()).decode()
    code, out = post(stack["url"] + "/v1/search", {"scene": "image2image", "query": {"image_b64": b64}})
    assert code == 200, out
    assert out["results"][0]["id"] == "svg0"  # the build rendered the SVG file as the query is rendered
    bomb = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b'<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>')
    code, out = post(stack["url"] + "/v1/search", {"scene": "image2image", "query": {"image_b64": base64.b64encode(bomb).decode()}})
    assert code == 400 and "query.image_b64" in out["message"] and "entity" in out["message"], out
    ext = b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>'
    code, out = post(stack["url"] + "/v1/search", {"scene": "image2image", "query": {"image_b64": base64.b64encode(ext).decode()}})
    assert code == 400 and "external references are not followed" in out["message"], out


def test_mmsearch_eval_api_scores_a_served_arm(stack, tmp_path, capsys):
    """`mmsearch eval --api`: the judged set through the running API, the arm forced, metrics written."""
    from mmsearch.offline.evaluate import main

    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps({"query": f"text document {i} about subject {i % 9}", "relevant": [f"t{i}"],
                                          "tags": ["even"] if i % 2 == 0 else []}) + "\n" for i in range(10, 16)))
    out = tmp_path / "m.json"
    assert main(["--api", stack["url"], "--scene", "text2text", "--force", "rerank=none,recall=dense",
                 "--judged", str(judged), "--k", "1,10", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["arms"] == {"rerank": "none", "recall": "dense"} and r["queries"] == 6
    assert r["metrics"]["recall@10"] == 1.0 and r["metrics"]["mrr@10"] > 0.5
    assert r["by_tag"]["even"]["queries"] == 3
    assert "recall" in capsys.readouterr().out
    assert main(["--api", stack["url"], "--judged", str(judged), "--force", "recall=nope"]) == 2  # a 400, reported


def test_text_queries_encoded_in_process_are_tritons_embeddings(stack):
    """retrieval.encode local runs the file Triton serves on the query's own tokens: the same vector as
    Triton's on the bucket-padded ones, for every text encoder of the repository and none of the others."""
    import numpy as np

    from mmsearch.clients.inference import InferenceClient
    from mmsearch.encoders.local import RepositoryBackend
    from mmsearch.errors import NotFound
    from mmsearch.modelrepo.preprocess_registry import LocalTokenizer

    cfg = stack["cfg"]
    enc = RepositoryBackend(stack["repo"], 1, 0)
    tok = LocalTokenizer(stack["repo"], cfg.preprocess, 0)
    triton = InferenceClient(f"127.0.0.1:{cfg.serving.grpc_port}", "grpc")
    try:
        assert {"clip_text", "tiny"} <= set(enc.models()) and enc.serving()
        assert not {"rerank", "clip_image"} & set(enc.models())  # not the cross-encoder, not the image tower
        for model in enc.models():
            for q in ("a", "text document 7 about subject 7", "naïve café 東京 🚀", "word " * 300):
                mine = enc.infer(model, tok.tokenize(model, [q]).tensors)
                theirs = triton.infer(model, tok.tokenize(model, [q], bucket=True).tensors, "embedding")
                assert mine.shape == theirs.shape == (1, theirs.shape[1])
                np.testing.assert_allclose(mine, theirs, atol=2e-5, err_msg=f"{model}: {q[:20]!r}")
        with pytest.raises(NotFound, match="text encoder 'rerank' not found"):
            enc.infer("rerank", tok.tokenize("tiny", ["q"]).tensors)
    finally:
        triton.close()
        tok.close()
        enc.close()


def test_a_search_encoded_in_process_answers_as_one_encoded_by_triton(stack):
    cfg = stack["cfg"]
    by_triton = create_retrieval(cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(update={"encode": "triton"})}),
                                 "127.0.0.1:0", "127.0.0.1:0")
    try:
        assert stack["retrieval"].service.deps.encoders is not None and by_triton.service.deps.encoders is None
        assert wait_until(lambda: by_triton.service.experiments.ready(), 10)
        for q in ("text document 12", "subject 4", "hostile"):
            body = {"scene": "text2text", "query": {"text": q}, "force": {"rerank": "none", "recall": "dense"}, "top_k": 8}
            a = post(stack["url"] + "/v1/search", body)
            b = post(f"http://127.0.0.1:{by_triton.http_port}/v1/search", body)
            assert a[0] == b[0] == 200, (a, b)
            assert [h["id"] for h in a[1]["results"]] == [h["id"] for h in b[1]["results"]], q
            assert [h["score"] for h in a[1]["results"]] == pytest.approx([h["score"] for h in b[1]["results"]], abs=1e-4)
    finally:
        by_triton.stop()


def test_local_query_encoders_follow_the_repository(stack, tmp_path):
    """A new version is served once the watcher sees it (the latest, as Triton picks); a broken model
    is reported (readiness) and refused by name while the others serve."""
    import shutil

    import numpy as np

    from mmsearch.encoders.local import RepositoryBackend
    from mmsearch.errors import Unavailable
    from mmsearch.modelrepo.manifest import read_manifest

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(stack["repo"] / "tiny", repo / "tiny")
    enc = RepositoryBackend(repo, 1, 0.2)
    try:
        feeds = {"input_ids": np.array([[1, 5, 7, 2]], np.int64), "attention_mask": np.ones((1, 4), np.int64)}  # in both vocabularies
        dim = enc.infer("tiny", feeds).shape[1]
        clip_dim = read_manifest(stack["repo"] / "clip_text").embedding_dim
        assert dim != clip_dim
        # version 2: another graph with the same inputs (the CLIP text tower), so the switch shows in the width
        shutil.copytree(stack["repo"] / "clip_text" / "1", repo / "tiny" / "2")
        assert wait_until(lambda: enc.infer("tiny", feeds).shape[1] == clip_dim, 10, 0.1)
        (repo / "broken").mkdir()
        (repo / "broken" / "mmsearch.json").write_text("{nope")
        assert wait_until(lambda: not enc.serving(), 10, 0.1)
        (repo / "broken" / "1").mkdir()  # (a change the watcher sees again: still broken, still reported)
        with pytest.raises(Unavailable, match="'broken' failed to load"):
            enc.infer("broken", feeds)
        assert enc.infer("tiny", feeds).shape[1] == clip_dim  # the others serve on
        shutil.rmtree(repo / "broken")  # removed: no longer holds readiness down (the watcher reports no removal)
        assert enc.serving()
    finally:
        enc.close()
