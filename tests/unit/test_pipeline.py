"""The search pipeline with fake dependencies: no servers, so every branch is cheap to reach."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest

from mmsearch.api.models import SearchResult
from mmsearch.config import Config
from mmsearch.errors import BadInput, DeadlineExceeded, NotFound, Overloaded, Unavailable
from mmsearch.modelrepo.preprocessing import TextBatch
from mmsearch.retrieval_service.config_source import ExperimentStore
from mmsearch.retrieval_service.deps import Deps, Lazy
from mmsearch.retrieval_service.pipeline import DEFAULT_RECALL, DEFAULT_TOP_K, SearchService
from mmsearch.retrieval_service.request import SearchRequest
from mmsearch.retrieval_service.response import HitDocs

EXPERIMENTS = """
scenes:
  text2text:
    layers:
      - name: rerank
        salt: r1
        arms:
          - {name: none, traffic: 50}
          - {name: ce, traffic: 50, rerank: cross_encoder, rerank_model: ce, rerank_top_n: 3, search_ef: 300}
    defaults: {embed_model: enc, index: docs, top_k: 4, recall_top_k: 10, filter: 'id != "x"'}
  image2image:
    defaults: {embed_model: img, index: images}
"""


class FakePreprocess:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: Exception | None = None

    def tokenize(self, model: str, texts: list[str], documents: list[str] = (), bucket: bool = False) -> TextBatch:
        self.calls.append(("tokenize", model, list(texts), list(documents), bucket))
        if self.fail:
            raise self.fail
        n = len(texts)
        # the document's length becomes its "token", so the fake cross-encoder can score by it
        ids = np.array([[len(d)] for d in documents] if documents else [[1]] * n, np.int64)
        return TextBatch({"input_ids": ids, "attention_mask": np.ones_like(ids)}, np.zeros(n, bool))

    def process_images(self, model: str, images: list[bytes]) -> np.ndarray:
        self.calls.append(("images", model, len(images)))
        return np.zeros((len(images), 3, 4, 4), np.float32)


class FakeInference:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.timeouts: list[float] = []
        self.sleep_s = 0.0

    def infer(self, model: str, tensors: dict[str, np.ndarray], output: str) -> np.ndarray:
        from mmsearch.runtime.deadline import call_timeout

        self.calls.append((model, output))
        self.timeouts.append(call_timeout(30.0))  # what a real client would give this call
        time.sleep(self.sleep_s)
        n = len(next(iter(tensors.values())))
        if output == "score":
            return tensors["input_ids"].astype(np.float32)  # longer document text = higher score
        return np.ones((n, 8), np.float32)


class FakeVectors:
    def __init__(self, hits: list[tuple[str, float]]) -> None:
        self.hits = hits
        self.calls: list[tuple[str, int, str]] = []
        self.efs: list[int | None] = []
        self.breadths: list[int] = []
        self.loading: set[str] = set()
        self.stored: dict[str, dict[str, dict[str, Any]]] = {}  # index -> the documents its build keeps beside vectors
        self.doc_reads: list[tuple[str, list[str]]] = []  # stored_docs calls: the documents a search read by id

    def fields(self, index: str) -> dict[str, str]:
        return {"lang": "str", "year": "int"}

    def live_build(self, index: str) -> str | None:
        return None  # (no build records query models: the arm's embed_model and the alias, as before reindex)

    def stored_docs(self, name: str, ids: list[str], docs: HitDocs, consistency: str | None = None) -> None:
        self.doc_reads.append((name, list(ids)))
        for i in ids:
            if i in self.stored.get(name, {}):
                docs.put_raw(i, json.dumps(self.stored[name][i]))

    def serving(self, index: str) -> bool:
        if index == "missing":
            raise NotFound(f"index {index!r} not found in milvus at test")
        return index not in self.loading

    def search(self, index: str, vec: np.ndarray, top_k: int, filter: str = "", ef: int | None = None,
               docs: HitDocs | None = None, breadth: int = 0) -> list[list[tuple[str, float]]]:
        self.calls.append((index, top_k, filter))
        self.efs.append(ef)
        self.breadths.append(breadth)
        if index == "missing":
            raise NotFound(f"index {index!r} not found in milvus at test")
        hits = self.hits[:top_k]
        if docs is not None:  # as Milvus's field holds them: JSON text, parsed when read
            for i, _ in hits:
                if i in self.stored.get(index, {}):
                    docs.put_raw(i, json.dumps(self.stored[index][i]))
        return [hits]


class FakeDocuments:
    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs
        self.log: dict[str, dict[str, Any]] = {}
        self.ttl: dict[tuple[str, str], int] = {}
        self.reads: list[tuple[str, list[str]]] = []
        self.collections: set[str] = set()

    def ensure_collection(self, collection: str) -> None:
        self.collections.add(collection)

    def delete_before(self, collection: str, field: str, cutoff: Any) -> int:
        old = [k for k, d in self.log.items() if d[field] < cutoff]
        for k in old:
            del self.log[k]
        return len(old)

    def expire_after(self, collection: str, field: str, seconds: int) -> None:
        self.ttl[(collection, field)] = seconds

    def get_many(self, collection: str, ids: list[str]) -> list[dict[str, Any] | None]:
        self.reads.append((collection, list(ids)))
        return [dict(self.docs[i], _id=i) if i in self.docs else None for i in ids]

    def insert_many(self, collection: str, docs: list[dict[str, Any]]) -> None:
        self.log.update({d["_id"]: d for d in docs})

    def push(self, collection: str, doc_id: str, field: str, value: Any) -> bool:
        if doc_id not in self.log:
            return False
        self.log[doc_id].setdefault(field, []).append(value)
        return True


HITS = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6), ("e", 0.5), ("f", 0.4)]
DOCS = {"a": {"text": "x"}, "b": {"text": "xxxx"}, "c": {"text": "xx"}, "d": {"text": "d"}, "e": {"title": "no text"}}


class Harness:
    def __init__(self, timeout_s: float = 2.0, query_log: bool = True) -> None:
        self.pre, self.inf, self.vec, self.docs = FakePreprocess(), FakeInference(), FakeVectors(HITS), FakeDocuments(DOCS)
        self.factory_calls = {"preprocess": 0}

        def pre_factory() -> FakePreprocess:
            self.factory_calls["preprocess"] += 1
            return self.pre

        self.deps = Deps(Lazy("triton", lambda: self.inf), Lazy("preprocess", pre_factory),
                         Lazy("milvus", lambda: self.vec), Lazy("mongodb", lambda: self.docs))
        cfg = Config().model_copy(update={"retrieval": Config().retrieval.model_copy(
            update={"request_timeout_s": timeout_s, "query_log": query_log})})
        self.store = ExperimentStore()
        assert self.store.offer(EXPERIMENTS, "v1", "test")
        self.service = SearchService(cfg, self.store, self.deps)
        self.service.ready_cache_s = 0.0  # every ready() probes afresh (the cache has its own test)

    def search(self, **kw: Any):
        kw.setdefault("scene", "text2text")
        if kw["scene"] != "image2image":
            kw.setdefault("text", "query")
        kw.setdefault("force", {"rerank": "none"})
        return self.service.search(SearchRequest(**kw))

    def close(self) -> None:
        self.service.close()


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


def test_hits_keep_recall_order_and_carry_public_documents(h):
    out = h.search(user_id="u1")
    assert [x.id for x in out.hits] == ["a", "b", "c", "d"]  # top_k 4 from the defaults
    assert [x.score for x in out.hits] == [0.9, 0.8, 0.7, 0.6]
    assert all(x.score_type == "cosine" and x.sources == ("vector",) for x in out.hits)
    assert out.hits[0].doc == {"text": "x"}  # _id stripped
    assert out.experiment == {"rerank": "none"}
    assert out.user_id == "u1" and out.config_version == "v1"


def test_missing_documents_are_none_not_dropped(h):
    out = h.search(top_k=6)
    assert [x.id for x in out.hits] == ["a", "b", "c", "d", "e", "f"]
    assert out.hits[-1].doc is None


def test_every_stage_is_timed(h):
    out = h.search()
    assert {"split", "qp", "embed", "recall", "rerank", "summary", "total"} <= set(out.timings_ms)
    assert out.timings_ms["total"] >= out.timings_ms["embed"]


def test_request_top_k_wins_and_recall_depth_is_at_least_top_k(h):
    h.search(top_k=2)
    # nothing reranks: the page and one beyond (has_more), searched as broadly as recall_top_k, with the scene's filter
    assert (h.vec.calls[-1], h.vec.breadths[-1]) == (("docs", 3, 'id != "x"'), 10)
    h.search(top_k=50)
    assert (h.vec.calls[-1][1], h.vec.breadths[-1]) == (51, 51)
    h.search(top_k=2, force={"rerank": "ce"})  # a reranked arm recalls its candidates
    assert (h.vec.calls[-1][1], h.vec.breadths[-1]) == (10, 0)


def test_default_recall_depth_when_the_config_gives_none(h):
    out = h.search(scene="image2image", image=b"png", force={})
    assert (h.vec.calls[-1], h.vec.breadths[-1]) == (("images", DEFAULT_TOP_K + 1, ""), DEFAULT_RECALL)
    assert ("images", "img", 1) in h.pre.calls
    assert len(out.hits) == len(HITS)  # fewer than the default top_k exist


def test_rerank_puts_scored_candidates_first_and_keeps_the_rest(h):
    out = h.search(force={"rerank": "ce"}, top_k=6)
    # candidates a, b, c (rerank_top_n 3) rescored by text length: b (4) > c (2) > a (1); then d, e, f as recalled
    assert [x.id for x in out.hits] == ["b", "c", "a", "d", "e", "f"]
    assert [x.score_type for x in out.hits] == ["rerank"] * 3 + ["cosine"] * 3
    assert out.hits[0].score == 4.0 and out.hits[3].score == 0.6
    assert out.experiment == {"rerank": "ce"}
    tok = [c for c in h.pre.calls if c[0] == "tokenize" and c[3]]
    assert tok and tok[0][2] == ["query"] * 3 and tok[0][3] == ["x", "xxxx", "xx"]


def test_rerank_skips_candidates_without_text():
    h = Harness()
    h.vec.hits = [("e", 0.9), ("a", 0.5)]  # e has no text field
    try:
        out = h.search(force={"rerank": "ce"})
        assert [x.id for x in out.hits] == ["a", "e"]
        assert [x.score_type for x in out.hits] == ["rerank", "cosine"]
    finally:
        h.close()


def test_rerank_without_model_is_a_config_error(h):
    bad = EXPERIMENTS.replace(", rerank_model: ce", "")
    assert h.store.offer(bad, "v2", "test")
    with pytest.raises(BadInput, match="rerank_model"):
        h.search(force={"rerank": "ce"})


def test_deadline_stops_before_the_next_stage():
    h = Harness(timeout_s=0.05)
    h.inf.sleep_s = 0.1
    try:
        with pytest.raises(DeadlineExceeded, match="before recall"):
            h.search()
        assert h.vec.calls == []  # recall never started
    finally:
        h.close()


def test_unavailable_resets_the_dependency_so_the_next_request_reconnects(h):
    h.pre.fail = Unavailable("preprocess service at test", "down")
    with pytest.raises(Unavailable, match="preprocess"):
        h.search()
    assert h.factory_calls["preprocess"] == 1
    h.pre.fail = None
    assert h.search().hits
    assert h.factory_calls["preprocess"] == 2  # reconnected after the failure


def test_bad_query_from_the_preprocessor_names_the_request_field(h):
    h.pre.fail = BadInput("texts[0]: not valid UTF-8")
    with pytest.raises(BadInput, match=r"^query\.text: texts\[0\]"):
        h.search()


def test_missing_index_is_not_found(h):
    assert h.store.offer(EXPERIMENTS.replace("index: docs", "index: missing"), "v3", "test")
    with pytest.raises(NotFound, match="missing"):
        h.search()


def test_unconfigured_scene_is_bad_input(h):
    with pytest.raises(BadInput, match="text2image"):
        h.search(scene="text2image")


def test_errors_are_counted_by_kind_and_arm(h):
    h.pre.fail = BadInput("texts[0]: bad")
    with pytest.raises(BadInput):
        h.search()
    text = h.service.metrics.render()[0].decode()
    assert 'mmsearch_requests_total{arm="rerank=none",scene="text2text",status="BadInput"} 1.0' in text


def test_assignment_is_deterministic_per_user(h):
    first = h.search(user_id="alice", force={})
    assert all(h.search(user_id="alice", force={}).experiment == first.experiment for _ in range(5))
    arms = {h.search(user_id=f"user{i}", force={}).experiment["rerank"] for i in range(40)}
    assert arms == {"none", "ce"}  # 50/50 split: forty users reach both arms


def _wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_query_log_records_the_request_and_its_clicks(h):
    out = h.search(user_id="bob")
    assert _wait_for(lambda: out.request_id in h.docs.log)
    entry = h.docs.log[out.request_id]
    assert entry["results"] == [x.id for x in out.hits] and entry["user_id"] == "bob"
    assert entry["arms"] == {"rerank": "none"} and entry["query"] == {"text": "query"}
    h.service.click(out.request_id, "b", "bob")
    assert [c["doc_id"] for c in h.docs.log[out.request_id]["clicks"]] == ["b"]
    # capped in time: entries carry a date and the collection a TTL index (retrieval.query_log_ttl_days, 30)
    assert entry["at"].tzinfo is not None and h.docs.ttl == {("_query_log", "at"): 30 * 86400}
    assert h.docs.collections == {"_query_log"}  # created before its first entry


@pytest.mark.parametrize("rid, doc, msg", [("", "a", "request_id"), ("r" * 65, "a", "request_id"), (7, "a", "request_id"),
                                           ("r1", "", "doc_id"), ("r1", None, "doc_id")])
def test_click_validates_its_input(h, rid, doc, msg):
    with pytest.raises(BadInput, match=msg):
        h.service.click(rid, doc)


def test_click_without_query_log_is_unavailable():
    h = Harness(query_log=False)
    try:
        with pytest.raises(Unavailable, match="query log"):
            h.service.click("r1", "a")
    finally:
        h.close()


def test_response_json_is_the_documented_shape(h):
    body = h.search(user_id="u").to_json()
    assert set(body) == {"request_id", "user_id", "results", "offset", "has_more", "experiment", "timings_ms", "config_version"}
    assert set(body["results"][0]) == {"id", "score", "score_type", "sources", "doc"}
    SearchResult.model_validate(body)  # the published schema (GET /openapi.json) describes what is sent


def test_ready_reports_each_dependency_and_each_index(h):
    assert h.service.ready() == {"experiments": True, "triton": True, "preprocess": True, "milvus": True, "mongodb": True,
                                 "index docs": True, "index images": True}


def test_an_index_still_loading_is_not_ready_and_a_missing_one_is_left_to_404(h):
    h.vec.loading.add("images")
    parts = h.service.ready()
    assert parts["index images"] is False and parts["index docs"] is True
    assert h.store.offer(EXPERIMENTS.replace("index: docs", "index: missing"), "v3", "test")
    assert "index missing" not in h.service.ready()


def test_an_arm_sets_the_search_breadth(h):
    h.search(force={"rerank": "ce"})
    h.search(force={"rerank": "none"})
    assert h.vec.efs == [300, None]  # None: the index's configured default


def test_paging_with_offset_yields_each_hit_once_in_order(h):
    pages, offset = [], 0
    while True:
        r = h.search(top_k=2, offset=offset, force={"rerank": "none"})
        pages.append([x.id for x in r.hits])
        if not r.has_more:
            break
        offset += 2
    assert [i for p in pages for i in p] == [i for i, _ in HITS] and pages[0] == ["a", "b"]
    assert h.search(top_k=2, offset=len(HITS)).hits == []


def test_fields_select_what_each_hit_returns(h):
    r = h.search(top_k=5, fields=["text", "absent"])
    assert r.hits[0].doc == {"text": "x"} and r.hits[4].doc == {}  # e has no text; a missing field is left out


def test_a_request_filter_runs_inside_the_vector_search_beside_the_arm_filter(h):
    h.search(filter={"lang": "en", "year": {"gte": 2000}})
    assert h.vec.calls[-1][2] == '(id != "x") and ((lang == "en" and year >= 2000))'


def test_a_filter_on_an_unknown_field_is_bad_input_naming_it(h):
    with pytest.raises(BadInput, match=r"filter.colour: unknown field \(this index stores: id, lang, year\)"):
        h.search(filter={"colour": "red"})
    with pytest.raises(BadInput, match="filter.year: field year holds int values"):
        h.search(filter={"year": "new"})


def test_beyond_the_admission_limit_a_search_is_429_with_retry_after(h):
    from mmsearch.retrieval_service.admission import Admission
    from mmsearch.retrieval_service.http_app import create_app

    h.service.admission = Admission(max_inflight=1, max_queue=0, service_s=0.25)
    h.inf.sleep_s = 0.5
    started = threading.Event()

    def slow() -> None:
        started.set()
        h.search()

    t = threading.Thread(target=slow)
    t.start()
    assert started.wait(5)
    time.sleep(0.1)  # the first search holds the only slot
    from mmsearch.retrieval_service.auth import ApiKeys

    app = create_app(h.service).test_client()
    r = app.post("/v1/search", json={"scene": "text2text", "query": {"text": "x"}})
    # refused at the door, before the body is read: even a body that is not JSON gets the 429
    junk = app.post("/v1/search", data=b"\xff not json")
    h.service.auth = ApiKeys(["k1"])
    keyless = app.post("/v1/search", json={"scene": "text2text", "query": {"text": "x"}})
    keyed = app.post("/v1/search", json={"scene": "text2text", "query": {"text": "x"}}, headers={"X-API-Key": "k1"})
    t.join(5)
    assert r.status_code == 429 and r.get_json()["error"] == "Overloaded"
    # when to come back: the queue's drain time, (0 queued + 1) x 250 ms / 1 slot, and in whole seconds
    assert r.headers["Retry-After-Ms"] == "250" and r.headers["Retry-After"] == "1"
    assert junk.status_code == 429 and keyed.status_code == 429
    assert keyless.status_code == 401  # without a valid key: the 401, never a hint about load
    # (the scene is not parsed at the door: counted under scene "-")
    assert 'mmsearch_requests_total{arm="-",scene="-",status="Overloaded"} 3.0' in h.service.metrics.render()[0].decode()
    assert h.service.admission.rejected == 3
    text = h.service.metrics.render()[0].decode()  # the limits and the load now, for operators (and bench/admission.py)
    assert 'mmsearch_admission{what="max_inflight"} 1.0' in text and 'mmsearch_admission{what="inflight"} 0.0' in text


def test_a_search_that_waited_in_the_queue_too_long_is_429_with_its_scene(h):
    from mmsearch.retrieval_service.admission import Admission

    h.service.admission = Admission(max_inflight=1, max_queue=1)
    h.inf.sleep_s = 0.5
    t = threading.Thread(target=h.search)
    t.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    with pytest.raises(Overloaded, match="no search slot freed within the request's deadline"):
        h.service.search(SearchRequest(scene="text2text", text="q", force={"rerank": "none"}), time.monotonic() + 0.1)
    assert 0.08 < time.perf_counter() - t0 < 0.3  # it waited as long as its deadline allowed, no longer
    t.join(5)
    assert 'mmsearch_requests_total{arm="-",scene="text2text",status="Overloaded"} 1.0' in h.service.metrics.render()[0].decode()


def test_the_time_queued_counts_against_the_request_deadline(h):
    from mmsearch.retrieval_service.admission import Admission

    h.service.admission = Admission(max_inflight=1, max_queue=4)
    h.inf.sleep_s = 0.3
    t = threading.Thread(target=h.search)
    t.start()
    time.sleep(0.05)
    deadline = time.monotonic() + 1.0
    h.inf.sleep_s = 0.0
    h.service.search(SearchRequest(scene="text2text", text="q", force={"rerank": "none"}), deadline)
    t.join(5)
    # the queued search's encode call was sized by the deadline set on arrival, less the ~250 ms it queued
    assert h.inf.timeouts[-1] < 0.8


def test_a_grpc_caller_s_shorter_deadline_bounds_the_wait_and_a_refusal_carries_retry_after(h):
    import grpc

    from mmsearch.protos import search_pb2 as pb
    from mmsearch.retrieval_service.admission import Admission
    from mmsearch.retrieval_service.grpc_api import SearchServicer

    class Aborted(Exception):
        pass

    class Context:
        def __init__(self, remaining: float | None) -> None:
            self.remaining, self.trailing, self.code = remaining, (), None

        def invocation_metadata(self):
            return ()

        def time_remaining(self):
            return self.remaining

        def set_trailing_metadata(self, md):
            self.trailing = md

        def abort(self, code, details):
            self.code = code
            raise Aborted(details)

    h.service.admission = Admission(max_inflight=1, max_queue=4, service_s=0.1)
    h.inf.sleep_s = 0.3
    t = threading.Thread(target=h.search)
    t.start()
    time.sleep(0.05)
    servicer = SearchServicer(h.service)
    ctx = Context(0.15)  # the caller gives 150 ms: a slot ~100 ms away + 100 ms to serve do not fit
    t0 = time.perf_counter()
    with pytest.raises(Aborted, match="deadline"):
        servicer.Search(pb.SearchRequest(scene="text2text", query=pb.Query(text="q"), force={"rerank": "none"}), ctx)
    assert time.perf_counter() - t0 < 0.05  # refused at once
    assert ctx.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(ctx.trailing) == {"retry-after": "1", "retry-after-ms": "100"}
    t.join(5)


# ---------------------------------------------------------------- fused recall (sources per arm)
FUSED = """
scenes:
  text2text:
    layers:
      - name: recall
        salt: s1
        arms:
          - {name: dense, traffic: 50}
          - name: hybrid
            traffic: 50
            fusion: rrf
            sources:
              - {name: vec, kind: dense, recall_top_k: 5}
              - {name: words, kind: bm25, recall_top_k: 5, weight: 2}
              - {name: other_field, kind: dense, embed_model: enc2, index: captions, recall_top_k: 3}
          - name: titled
            traffic: 0
            title_field: title
            sources:
              - {name: vec, kind: dense, recall_top_k: 5}
              - {name: words, kind: bm25, recall_top_k: 5, weight: 0.01, weight_title: 5}
          - name: rare
            traffic: 0
            rare_df: 1
            sources:
              - {name: vec, kind: dense, recall_top_k: 5}
              - {name: words, kind: bm25, recall_top_k: 5, weight: 0.01, weight_rare: 50}
          - name: learned
            traffic: 0
            rare_df: 1
            fusion: learned
            ranker: by_words
            title_field: title
            sources:
              - {name: vec, kind: dense, recall_top_k: 5}
              - {name: words, kind: bm25, recall_top_k: 5, weight: 0.01}
    defaults: {embed_model: enc, index: docs, top_k: 4}
  image2image:
    defaults:
      embed_model: img
      index: images
      sources: [{name: pixels, kind: dense}, {name: words, kind: bm25}]
"""


@pytest.fixture
def hf(tmp_path):
    from mmsearch.clients.lexical import LexicalStore

    harness = Harness()
    assert harness.store.offer(FUSED, "v2", "test")
    lex = LexicalStore(tmp_path)
    w = lex.writer("docs__b1", ["text"])
    w.upsert([{"id": "f", "text": "zebra stripes"}, {"id": "e", "text": "a zebra"}, {"id": "z", "text": "nothing"}])
    w.close()
    lex.switch_live("docs", "docs__b1")
    harness.service.lexical = Lazy("lexical", lambda: lex)
    harness.tmp = tmp_path / "empty"  # type: ignore[attr-defined]
    harness.vec.matching = lambda index, ids, expr: {i for i in ids if i != "e"}  # type: ignore[attr-defined]
    yield harness
    harness.close()


def test_a_fused_arm_merges_sources_and_says_which_found_each_hit(hf):
    out = hf.search(text="zebra", force={"recall": "hybrid"}, top_k=10)
    by_id = {x.id: x for x in out.hits}
    assert all(x.score_type == "fused" for x in out.hits)
    # BM25 (weight 2) found f (stripes + zebra) first and e second: they come before dense-only hits
    assert [x.id for x in out.hits[:2]] == ["f", "e"]
    assert by_id["f"].sources == ("vec", "words", "other_field")
    assert by_id["a"].sources == ("vec", "other_field")
    assert "z" not in by_id  # no term matched
    assert ("captions", 10 + 1, "") in [(c[0], c[1], c[2]) for c in hf.vec.calls]  # depth: at least the page + 1
    assert {"lexical", "fusion", "recall", "embed"} <= set(out.timings_ms)
    # two dense sources with different models: two embeddings; same model would share one
    assert sorted(c[0] for c in hf.inf.calls if c[1] == "embedding") == ["enc", "enc2"]  # (in parallel: any order)


def test_the_dense_arm_of_the_same_layer_is_unchanged(hf):
    out = hf.search(text="zebra", force={"recall": "dense"})
    assert [x.id for x in out.hits] == ["a", "b", "c", "d"] and out.hits[0].sources == ("vector",)


def test_a_filter_applies_to_bm25_hits_through_milvus(hf):
    out = hf.search(text="zebra", force={"recall": "hybrid"}, top_k=10, filter={"lang": "en"})
    assert "e" not in {x.id for x in out.hits if x.sources == ("words",)}


def test_an_image_query_skips_bm25_sources(hf):
    out = hf.search(scene="image2image", image=b"png", force={})
    assert out.hits and all(x.sources == ("pixels",) for x in out.hits)


def test_a_bm25_source_on_an_index_without_terms_is_a_named_404(hf):
    hf.service.lexical = Lazy("lexical", lambda: __import__("mmsearch.clients.lexical", fromlist=["x"]).LexicalStore(hf.tmp))
    with pytest.raises(NotFound, match="no lexical build"):
        hf.search(text="zebra", force={"recall": "hybrid"})


def test_a_query_naming_a_title_is_fused_with_weight_title_and_a_description_with_weight(hf):
    hf.docs.docs = dict(DOCS, e={"title": "zebra, Equus zebra", "text": "striped horse"})  # a BM25 hit: title from MongoDB
    out = hf.search(text="A zebra.", force={"recall": "titled"}, top_k=4)
    assert out.hits[0].id == "e"  # names e's title: BM25 (weight_title 5) first
    assert out.hits[0].doc == {"title": "zebra, Equus zebra", "text": "striped horse"}  # read before fusion, shown on the page
    out = hf.search(text="zebra stripes", force={"recall": "titled"}, top_k=4)
    assert [x.id for x in out.hits] == ["a", "b", "c", "d"]  # names no title: dense order (BM25 weight 0.01)
    hf.docs.docs = dict(DOCS, e={"title": "mountain zebra"})
    assert hf.search(text="zebra", force={"recall": "titled"}, top_k=4).hits[0].id == "a"  # a longer name is not the query
    # a long query is never compared with titles: the only read is the page's documents, after fusion
    before = len(hf.docs.reads)
    out = hf.search(text="a striped wild horse that lives on the plains of africa", force={"recall": "titled"}, top_k=4)
    assert hf.docs.reads[before:] == [("docs", [x.id for x in out.hits])]


def test_a_query_with_a_rare_term_is_fused_with_weight_rare(hf):
    """f is the only document with "stripes" (rare_df 1): a query with that word puts BM25's hits (weight_rare 50)
    first; "zebra" is in two documents, so that query keeps weight 0.01 and the dense order."""
    assert {x.id for x in hf.search(text="zebra stripes", force={"recall": "rare"}, top_k=4).hits[:2]} == {"e", "f"}
    assert [x.id for x in hf.search(text="stripes", force={"recall": "rare"}, top_k=4).hits][:1] == ["f"]
    assert [x.id for x in hf.search(text="zebra", force={"recall": "rare"}, top_k=4).hits] == ["a", "b", "c", "d"]
    assert [x.id for x in hf.search(text="unheard", force={"recall": "rare"}, top_k=4).hits] == ["a", "b", "c", "d"]  # (df 0)


def _ranker(tmp_path, sources=(("vec", "dense"), ("words", "bm25")), feature="words.rr2", scope="named"):
    import numpy as np

    from mmsearch.ranking.ranker import LinearRanker, feature_names

    names = feature_names(sources)
    w = np.zeros(len(names))
    w[names.index(feature)] = 1.0
    return LinearRanker(tuple(sources), np.zeros(len(names)), np.ones(len(names)), w, "title", "text", scope=scope).save(
        tmp_path / "rankers" / "by_words.json")


def test_a_learned_arm_orders_queries_in_its_scope_by_its_ranker_and_others_by_rrf(hf, tmp_path):
    """The ranker here trusts BM25's first hits alone. "stripes" is rare (in 1 document, rare_df 1): in the ranker's
    scope, f (BM25's only hit) comes first, scored by the model. "zebra" (in 2) names no title and is not rare:
    RRF with the weights, the dense order."""
    hf.service.config = hf.service.config.model_copy(update={"rankers_dir": tmp_path / "rankers"})
    _ranker(tmp_path)
    out = hf.search(text="stripes", force={"recall": "learned"}, top_k=4)
    assert out.hits[0].id == "f" and out.hits[0].sources == ("words",) and out.hits[0].score == pytest.approx(0.0 + 1.0)
    assert [x.id for x in hf.search(text="zebra", force={"recall": "learned"}, top_k=4).hits] == ["a", "b", "c", "d"]
    # a query naming a title is in scope too: e's title is "zebra"
    hf.docs.docs = dict(DOCS, e={"title": "zebra", "text": "striped horse"})
    assert hf.search(text="zebra", force={"recall": "learned"}, top_k=4).hits[0].id == "f"  # BM25's first
    # a retrained ranker (scope all, trusting the vectors) goes live without a restart
    time.sleep(0.01)
    _ranker(tmp_path, feature="vec.rr2", scope="all")
    assert [x.id for x in hf.search(text="stripes", force={"recall": "learned"}, top_k=4).hits] == ["a", "b", "c", "d"]


def test_a_learned_arm_without_a_usable_ranker_falls_back_to_rrf_and_a_broken_retrain_keeps_the_last_good_one(hf, tmp_path):
    """One arm's ranker problem degrades that arm, named in /readyz and a counter; it fails no search and does not
    take the process out of rotation. "stripes" is rare: the ranker (trusting BM25) puts f first; RRF with the
    arm's weights (1 : 0.01) keeps the dense order."""
    hf.service.config = hf.service.config.model_copy(update={"rankers_dir": tmp_path / "rankers"})
    fallbacks = hf.service.metrics.ranker_fallbacks.labels("by_words")
    assert hf.service.ready()["ranker by_words"] is False  # named before a search meets it
    rrf = [x.id for x in hf.search(text="stripes", force={"recall": "learned"}, top_k=4).hits]
    assert rrf == ["a", "b", "c", "d"] and fallbacks._value.get() == 1
    path = _ranker(tmp_path)
    assert hf.service.ready()["ranker by_words"] is True
    assert hf.search(text="stripes", force={"recall": "learned"}, top_k=4).hits[0].id == "f"
    time.sleep(0.01)
    path.write_text("{not json")  # a broken retrain: the ranker read before serves on
    assert hf.search(text="stripes", force={"recall": "learned"}, top_k=4).hits[0].id == "f" and fallbacks._value.get() == 1
    time.sleep(0.01)
    _ranker(tmp_path, sources=(("vec", "dense"), ("title_words", "bm25")), feature="vec.rr2")  # trained for another arm
    assert [x.id for x in hf.search(text="stripes", force={"recall": "learned"}, top_k=4).hits] == rrf
    assert fallbacks._value.get() == 2


def test_readiness_shows_a_missing_ranker_without_failing(hf, tmp_path, monkeypatch):
    from mmsearch.retrieval_service.http_app import create_app

    hf.service.config = hf.service.config.model_copy(update={"rankers_dir": tmp_path / "rankers"})
    probed = hf.service.ready()
    assert probed["ranker by_words"] is False
    app = create_app(hf.service).test_client()
    for parts, code in (({**probed, "lexical images": True}, 200), ({**probed, "milvus": False}, 503)):
        monkeypatch.setattr(hf.service, "ready", lambda parts=parts: parts)
        answer = app.get("/readyz")
        assert answer.status_code == code and answer.get_json()["dependencies"]["ranker by_words"] is False


@pytest.mark.parametrize("bad, match", [
    ("sources: [{name: a, kind: dense}], fusion: learned", "needs sources and a ranker"),
    ("fusion: learned, ranker: r", "needs sources and a ranker"),
    ("sources: [{name: a, kind: dense}], fusion: learned, ranker: ../x", "ranker"),
    ("sources: [{name: a, kind: dense, weight_rare: 2}]", "bm25 source"),
    ("rare_df: 0", "rare_df"),
    ("sources: [{name: a, kind: dense, weight_title: 2}]", "title_field"),
    ("title_field: 'a b'", "title_field"),
    ("sources: [{name: a, kind: dense, weight_title: -1}], title_field: t", "weight_title"),
    ("sources: [{name: a, kind: sparse}]", "kind"),
    ("sources: [{name: a, kind: dense}, {name: a, kind: bm25}]", "duplicate source names"),
    ("sources: [{name: a, kind: bm25, embed_model: m}]", "no embed_model"),
    ("sources: [{name: a, kind: dense, fields: [text]}]", "fields are for bm25"),
    ("sources: [{name: a, kind: dense, weight: abc}]", "weight"),
    ("sources: [{name: 'A B', kind: dense}]", "name"),
    ("sources: []", "sources"),
    ("fusion: max", "fusion"),
])
def test_bad_source_configs_are_refused_naming_the_problem(bad, match):
    from mmsearch.experiments.spec import parse_experiments

    text = f"scenes:\n  text2text:\n    defaults: {{embed_model: e, index: i, {bad.replace(': ', ': ', 1)}}}\n"
    with pytest.raises(BadInput, match=match):
        parse_experiments(text)


def test_readiness_names_each_lexical_build_a_bm25_source_needs(hf):
    r = hf.service.ready()
    assert r["lexical docs"] is True  # text2text's hybrid arm: its build exists
    assert r["lexical images"] is False  # image2image's defaults name a bm25 source over an index without terms
    hf.vec.hits = HITS
    orig = hf.vec.serving
    hf.vec.serving = lambda index: (_ for _ in ()).throw(NotFound(f"index {index!r} not found")) if index == "images" else orig(index)
    assert "lexical images" not in hf.service.ready()  # an index that does not exist at all: left to answer 404


def test_a_failing_source_fails_the_request_and_leaves_nothing_running(hf):
    hf.vec.hits = HITS
    orig = hf.vec.search

    def search(index, vec, top_k, filter="", ef=None, docs=None, breadth=0):
        if index == "captions":
            raise Unavailable("milvus at test", "down")
        time.sleep(0.05)
        return orig(index, vec, top_k, filter, ef, docs, breadth)

    hf.vec.search = search
    with pytest.raises(Unavailable, match="down"):
        hf.search(text="zebra", force={"recall": "hybrid"})
    assert hf.service._pool._work_queue.qsize() == 0


def test_fused_recall_stops_at_the_request_deadline():
    h = Harness(timeout_s=0.2)
    try:
        assert h.store.offer(FUSED, "v2", "test")
        h.inf.sleep_s = 0.5  # each embedding outlasts the whole request
        with pytest.raises(DeadlineExceeded):
            h.search(text="zebra", force={"recall": "hybrid"})
    finally:
        h.close()


def test_readiness_probes_the_dependencies_at_most_once_per_interval(h):
    calls = []
    real = h.service.deps.documents.healthy
    h.service.deps.documents.healthy = lambda: calls.append(1) or real()  # type: ignore[method-assign]
    h.service.ready_cache_s = 0.3
    for _ in range(20):
        assert h.service.ready()["mongodb"] is True
    assert len(calls) == 1  # twenty /readyz calls, one probe
    time.sleep(0.35)
    h.service.ready()
    assert len(calls) == 2


def test_each_dependency_call_gets_what_is_left_of_the_request_not_its_own_timeout():
    h = Harness(timeout_s=0.5)
    try:
        h.search()
        assert h.inf.timeouts and all(0 < t <= 0.5 for t in h.inf.timeouts)  # 30 s of its own, 0.5 s of request
    finally:
        h.close()
    from mmsearch.runtime.deadline import call_timeout

    assert call_timeout(30.0) == 30.0  # outside a request: the client's own timeout


# ---------------------------------------------------------------- documents kept beside the vectors
def test_documents_recall_brought_are_not_read_from_mongodb(h):
    h.vec.stored["docs"] = {i: {"_id": i, "text": f"stored {i}"} for i in "abcdef"}
    out = h.search(top_k=4)
    assert [x.doc for x in out.hits] == [{"text": f"stored {i}"} for i in "abcd"]  # _id stripped, as from MongoDB
    assert h.docs.reads == [] and out.timings_ms["summary"] == 0.0


def test_only_the_documents_recall_did_not_bring_are_read(h):
    h.vec.stored["docs"] = {"a": {"text": "stored a"}, "c": {"text": "stored c"}}  # b, d: too big to store, say
    out = h.search(top_k=4)
    assert h.docs.reads == [("docs", ["b", "d"])]
    assert [x.doc for x in out.hits] == [{"text": "stored a"}, {"text": "xxxx"}, {"text": "stored c"}, {"text": "d"}]


def test_rerank_reads_its_candidates_texts_from_recall_too(h):
    h.vec.stored["docs"] = {i: dict(DOCS[i]) for i in "abcd"}
    out = h.search(force={"rerank": "ce"})
    assert [x.id for x in out.hits[:3]] == ["b", "c", "a"]  # longest text first (the fake cross-encoder)
    assert h.docs.reads == []


def test_a_fused_arm_takes_documents_only_from_its_own_index(hf):
    hf.vec.hits = HITS
    hf.vec.stored["captions"] = {i: {"text": f"caption of {i}"} for i, _ in HITS}  # another index's documents
    hf.vec.stored["docs"] = {"a": {"text": "doc a"}}
    out = hf.search(text="zebra", force={"recall": "hybrid"}, top_k=10)
    by_id = {x.id: x.doc for x in out.hits}
    assert by_id["a"] == {"text": "doc a"} and by_id["b"] == {"text": "xxxx"}  # b: read from MongoDB
    assert all(not (d or {}).get("text", "").startswith("caption") for d in by_id.values())
    assert len(hf.docs.reads) == 1 and "a" not in hf.docs.reads[0][1] and {"b", "f"} <= set(hf.docs.reads[0][1])


def test_bm25_hits_get_their_documents_from_beside_the_vectors_and_need_no_mongodb(hf):
    """A fused search whose BM25 source finds documents the dense search did not bring: their documents come
    from Milvus (stored beside the vectors, one query by id), so the search answers, documents and all, while
    MongoDB is down (the reindex at the demo's size once had busy-MongoDB timeouts fail such searches)."""
    hf.vec.hits = HITS[:3]  # dense: a, b, c; BM25 "zebra": f, e
    hf.vec.stored["docs"] = {i: {"text": f"stored {i}"} for i in "abcdefz"}

    def down(*_: Any) -> None:
        raise Unavailable("mongodb", "connection refused")

    hf.docs.get_many = down  # type: ignore[method-assign]
    out = hf.search(text="zebra", force={"recall": "hybrid"}, top_k=10)
    by_id = {x.id: x.doc for x in out.hits}
    assert {"e", "f"} <= set(by_id) and by_id["f"] == {"text": "stored f"} and by_id["e"] == {"text": "stored e"}
    assert hf.docs.reads == [] and hf.vec.doc_reads and all(set(ids) <= {"e", "f"} for _, ids in hf.vec.doc_reads)


def test_text_is_tokenized_and_encoded_where_the_config_says(tmp_path):
    from mmsearch.retrieval_service.deps import connect_deps

    cfg = Config().model_copy(update={"model_repository": tmp_path / "missing"})
    local = connect_deps(cfg)  # retrieval.tokenize and retrieval.encode: local (the defaults)
    assert local.tokenizers is not None and local.text is local.tokenizers and local.tokenizers in local.all
    assert local.encoders is not None and local.encoders in local.all and local.encoders.in_process
    with pytest.raises(Unavailable, match=r"model repository not found.*retrieval\.tokenize"):
        local.text.get()
    with pytest.raises(Unavailable, match=r"model repository not found.*retrieval\.encode"):
        local.encoders.get()
    assert not local.tokenizers.healthy() and not local.encoders.healthy()  # readiness says so
    remote = connect_deps(cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(update={"tokenize": "service", "encode": "triton"})}))
    assert remote.tokenizers is None and remote.encoders is None and remote.text is remote.preprocess and len(remote.all) == 4
    local.close()
    remote.close()


class FakeEncoders:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, np.ndarray]]] = []

    def infer(self, model: str, tensors: dict[str, np.ndarray], output: str | None = None) -> np.ndarray:
        self.calls.append((model, tensors))
        return np.full((1, 8), 0.5, np.float32)


def test_local_encoding_takes_text_queries_off_triton_and_leaves_images_and_rerank_there():
    h = Harness()
    made: list[FakeEncoders] = []
    h.service.deps.encoders = Lazy("encoders", lambda: made.append(FakeEncoders()) or made[-1], in_process=True)
    enc = h.service.deps.encoders.get()
    try:
        out = h.search(text="zebra", top_k=3)
        assert [m for m, _ in enc.calls] == ["enc"] and h.inf.calls == []  # Triton not asked
        assert h.pre.calls[-1] == ("tokenize", "enc", ["zebra"], [], False)  # the query's own tokens: no bucket padding
        assert len(out.hits) == 3 and out.timings_ms["embed"] >= 0
        h.search(scene="image2image", image=b"png", force={})
        assert h.inf.calls == [("img", "embedding")] and len(enc.calls) == 1  # images: Triton
        h.search(text="zebra", force={"rerank": "ce"})
        assert ("ce", "score") in h.inf.calls and len(enc.calls) == 2  # the cross-encoder: Triton
        # a failure of the in-process encoder is the request's, not a reason to drop the encoder
        enc.infer = lambda model, tensors, output=None: (_ for _ in ()).throw(Unavailable("encoders", "model 'enc' failed to load"))
        with pytest.raises(Unavailable, match="failed to load"):
            h.search(text="zebra")
        assert h.service.deps.encoders.get() is enc and len(made) == 1  # kept, not rebuilt
    finally:
        h.close()


def test_the_search_endpoint_answers_and_refuses_as_every_route_does(h):
    import io

    from mmsearch.retrieval_service.http_app import create_app, search_endpoint

    app = create_app(h.service).test_client()
    ok = app.post("/v1/search", json={"scene": "text2text", "query": {"text": "zebra"}, "force": {"rerank": "none"}})
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"
    assert ok.headers["X-Request-Id"] == ok.get_json()["request_id"] and ok.get_json()["results"]
    assert int(ok.headers["Content-Length"]) == len(ok.data)
    SearchResult.model_validate(ok.get_json())  # the published schema
    for body, msg in ((b"", "body: empty"), (b"{nope", "body: not valid JSON"), (b"[" * 100_000, "nested too deeply"),
                      (b'{"scene": "nowhere", "query": {"text": "x"}}', "scene")):
        r = app.post("/v1/search", data=body, content_type="application/json")
        assert r.status_code == 400 and msg in r.get_json()["message"], (body[:20], r.get_json())
    got = app.get("/v1/search")  # the one search path answers every method
    assert got.status_code == 405 and got.headers["Allow"] == "POST" and got.get_json()["error"] == "Method Not Allowed"

    # the size limit, with a Content-Length and without one (a chunked body is read only up to the limit)
    handle = search_endpoint(h.service, max_bytes=64)
    started: list[str] = []
    for environ in ({"CONTENT_LENGTH": "65", "wsgi.input": io.BytesIO(b"x" * 65)},
                    {"wsgi.input": io.BytesIO(b"x" * 10_000)}):
        out = json.loads(b"".join(handle({"REQUEST_METHOD": "POST", **environ}, lambda s, hdrs: started.append(s))))
        assert started[-1] == "400 Bad Request" and "64-byte limit" in out["message"], out

    # anything unexpected: 500 with the generic body, never the exception's text
    h.service.search = lambda req: (_ for _ in ()).throw(RuntimeError("secret internals"))  # type: ignore[method-assign]
    r = app.post("/v1/search", json={"scene": "text2text", "query": {"text": "zebra"}})
    assert r.status_code == 500 and r.get_json() == {"error": "Internal", "message": "internal error"}


def test_the_search_body_keeps_what_the_fast_writer_refuses():
    """orjson writes search bodies; a document it refuses (an integer over 64 bits, a lone surrogate) is
    written by the standard library, not lost; text outside ASCII comes back as sent, NaN as null."""
    import datetime as dt

    from mmsearch.retrieval_service.response import json_bytes

    body = {"results": [{"id": "a", "score": 0.5, "doc": {"barcode": 2**70, "name": "Zürich 東京", "bad": "\ud800"}}]}
    assert json.loads(json_bytes(body)) == body
    plain = {"results": [{"id": "a", "score": 0.1 + 0.2, "doc": {"name": "Zürich", "at": dt.datetime(2026, 1, 2, 3, 4, 5)}}]}
    out = json_bytes(plain)
    assert "Zürich".encode() in out and json.loads(out)["results"][0] == {
        "id": "a", "score": 0.1 + 0.2, "doc": {"name": "Zürich", "at": "2026-01-02T03:04:05"}}
    assert json.loads(json_bytes({"x": float("nan"), "y": float("inf")})) == {"x": None, "y": None}
    # one document orjson refuses: the page is written by the standard library, every other part as orjson writes it
    mixed = [{"doc": {"at": dt.datetime(2026, 1, 2, 3, 4, 5), "nan": float("nan")}}, {"doc": {"n": 2**64}}]
    assert json.loads(json_bytes(mixed)) == [{"doc": {"at": "2026-01-02T03:04:05", "nan": None}}, {"doc": {"n": 2**64}}]
    with pytest.raises(TypeError):  # a type neither writes stays an error (a logged 500), not its repr
        json_bytes([{"doc": {"n": 2**64, "raw": b"\x00"}}])


def test_equal_scores_across_the_pages_end_are_asked_again_recall_top_k_deep(h):
    """A limit of page+1 may cut a group of equal scores anywhere: when the page's last hit ties with the
    one beyond it, the search is asked again as deep as recall_top_k (10 here), where the group is whole."""
    h.vec.hits = [("a", 0.9), ("b", 0.8), ("c", 0.8), ("d", 0.8), ("e", 0.7)]
    out = h.search(top_k=2)
    assert [c[1] for c in h.vec.calls] == [3, 10] and [x.id for x in out.hits] == ["a", "b"] and out.has_more
    h.vec.calls.clear()
    h.vec.hits = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.7)]
    h.search(top_k=2)  # the tie is beyond the page's end: one search
    assert [c[1] for c in h.vec.calls] == [3]


def test_a_relocatable_store_is_looked_up_again_after_a_failed_probe():
    """An embedded store (found through its endpoint file) that `mmsearch up` started again on fresh ports:
    readiness alone forgets the dead connection, and the next connect finds the new address."""
    where = {"uri": "old"}

    class Client:
        def __init__(self, uri):
            self.uri = uri

        def ping(self):
            return self.uri == where["uri"]

    lazy = Lazy("milvus", lambda: Client(where["uri"]), check=lambda c: c.ping(), relocatable=True)
    fixed = Lazy("milvus", lambda: Client(where["uri"]), check=lambda c: c.ping())
    assert lazy.healthy() and fixed.healthy()
    where["uri"] = "new"
    assert not lazy.healthy() and lazy.healthy() and lazy.get().uri == "new"
    assert not fixed.healthy() and not fixed.healthy()  # a configured URI: the client's own reconnects, no lookup


@pytest.mark.parametrize("where", ["read", "connect"])
def test_a_build_record_mongodb_cannot_give_costs_a_search_a_short_wait_not_its_deadline(where):
    """MongoDB down (its client waits as long as it is allowed, then fails): a search of a reindexed build
    asks it for the build's query models within a short bound, goes on with the arm's model, and the
    searches after it do not ask again until the back-off has passed (CI once saw each such search spend
    the whole 10 s deadline in a reconnect, then fail)."""
    from mmsearch.retrieval_service.pipeline import BUILD_RECORD_READ_S
    from mmsearch.runtime.deadline import call_timeout

    harness = Harness(timeout_s=10.0, query_log=False)
    harness.vec.stored["docs"] = DOCS  # the documents come back with the vectors: the page needs no MongoDB
    asked: list[float] = []

    def wait_then_fail(*_: Any) -> None:
        asked.append(call_timeout(30.0))
        time.sleep(asked[-1])
        raise Unavailable("mongodb", "connection refused")

    harness.vec.live_build = lambda index: "b1"  # type: ignore[method-assign]
    if where == "read":
        harness.docs.get_one = wait_then_fail  # type: ignore[attr-defined]
    else:
        harness.deps.documents._factory = wait_then_fail
        harness.deps.documents.reset()
    try:
        t0 = time.monotonic()
        res = harness.search()
        took = time.monotonic() - t0
        assert [h.id for h in res.hits] and took < BUILD_RECORD_READ_S + 1.0, took
        assert asked and asked[0] <= BUILD_RECORD_READ_S + 1e-3
        assert harness.inf.calls[-1][0] == "enc" and harness.vec.calls[-1][0] == "docs"  # the arm's model, the alias
        for _ in range(3):
            harness.search()
        assert len(asked) == 1  # within the back-off: not asked again
    finally:
        harness.close()


def test_the_reranker_reads_a_document_title_before_its_text():
    """A WordNet gloss does not name its thing ("a republic in West Africa"): without the title the reranker could not
    match the query "Liberia" (served, it ranked the country's own synset 5th of 20; with it, 1st)."""
    from mmsearch.retrieval_service.pipeline import _rerank_text

    doc = {"title": "Liberia, Republic of Liberia", "text": "a republic in West Africa"}
    assert _rerank_text(doc, "title") == "Liberia, Republic of Liberia: a republic in West Africa"
    assert _rerank_text(doc, None) == "a republic in West Africa"  # an arm without a title field: the text alone
    assert _rerank_text({"text": "a republic"}, "title") == "a republic"  # no title: no dangling colon
    assert _rerank_text({"title": "Liberia"}, "title") == ""  # no text: skipped as before
