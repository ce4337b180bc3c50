"""The documents API's batch validation (all-or-nothing, every bad document named) and its write scope."""

from __future__ import annotations

import base64

import pytest
from test_pipeline import Harness

from mmsearch.api.documents import (
    META_KEY,
    DocumentsRejected,
    DocumentsTooLarge,
    IndexSchema,
    WriteResult,
    check_ids,
    content_hash,
    public,
    validate_documents,
)
from mmsearch.errors import BadInput, PermissionDenied, TooLarge, Unauthenticated, from_grpc_status, from_http_status, http_status
from mmsearch.retrieval_service.auth import ApiKeys
from mmsearch.retrieval_service.http_app import create_app

TEXT = IndexSchema("docs", "b1", "tiny", "text", 8, {"subject": "int", "price": "float", "lang": "str"}, ["title", "text"])
IMAGE = IndexSchema("pics", "b1", "clip_image", "image", 8, {}, ["caption"], image_root="/data/images")


def good(i: int, **kw) -> dict:
    return {"id": f"d{i}", "text": f"text {i}", "subject": i, "price": 1.5, "lang": "en", **kw}


def check(docs, schema=TEXT, max_docs=100, max_bytes=10_000, max_image=1000):
    return validate_documents(docs, schema, max_docs, max_bytes, max_image)


def rejects_of(docs, schema=TEXT, **kw) -> list[tuple[int, str | None, str | None]]:
    with pytest.raises(DocumentsRejected) as e:
        check(docs, schema, **kw)
    return [(r["position"], r["id"], r["field"]) for r in e.value.rejects]


def test_valid_documents_keep_order_and_fields_and_get_their_content_hash():
    out = check([good(1), good(2, extra={"a": [1]}, price=3)])
    assert [d.id for d in out] == ["d1", "d2"] and [d.position for d in out] == [0, 1]
    assert out[1].doc == {**good(2, extra={"a": [1]}), "price": 3.0, "_id": "d2"}  # an int where a float is stored: a float
    assert out[0].hash == content_hash("tiny", "text", "text 1") != content_hash("other", "text", "text 1")
    assert out[0].source == "text 1"


@pytest.mark.parametrize("bad, field, fragment", [
    ({"text": "no id"}, "id", "missing id"),
    ({"id": 7, "text": "x"}, "id", "id must be a string"),
    ({"id": "x" * 513, "text": "x"}, "id", "longer than 512 bytes"),
    ({"id": "a", "subject": 1, "price": 1.0, "lang": "en"}, "text", "missing text"),
    ({"id": "a", "text": "  ", "subject": 1, "price": 1.0, "lang": "en"}, "text", "missing text"),
    ({"id": "a", "text": ["x"], "subject": 1, "price": 1.0, "lang": "en"}, "text", "must be a string"),
    ({"id": "a", "text": "x", "price": 1.0, "lang": "en"}, "subject", "missing field subject"),
    ({"id": "a", "text": "x", "subject": "3", "price": 1.0, "lang": "en"}, "subject", "holds int values"),
    ({"id": "a", "text": "x", "subject": True, "price": 1.0, "lang": "en"}, "subject", "holds int values"),
    ({"id": "a", "text": "x", "subject": 1, "price": 1.0, "lang": 5}, "lang", "holds str values"),
    ({"id": "a", "text": "x", "subject": 1, "price": 1.0, "lang": "en", "title": 3}, "title", "lexical field title: must be a string"),
    ({"id": "a", "text": "x", "subject": 1, "price": 1.0, "lang": "en", "_id": "b"}, "_id", "reserved"),
    ({"id": "a", "text": "x", "subject": 1, "price": 1.0, "lang": "en", META_KEY: {}}, META_KEY, "reserved"),
    ({"id": "a", "text": "x", "subject": 1, "price": 1.0, "lang": "en", "image_b64": "aGk="}, "image_b64", "inline images apply"),
    ({"id": "a", "text": "x", "subject": 1, "price": 1.0, "lang": "en", "big": 2**70}, None, "not storable in MongoDB"),
])
def test_each_bad_document_is_named_with_its_field(bad, field, fragment):
    with pytest.raises(DocumentsRejected) as e:
        check([good(0), bad])
    (r,) = e.value.rejects
    assert (r["position"], r["field"]) == (1, field) and fragment in r["reason"], r
    assert "1 of 2 documents rejected, nothing written: documents[1]" in e.value.message
    assert isinstance(e.value, BadInput) and http_status(e.value) == 400


def test_the_whole_batch_is_checked_and_every_bad_one_listed():
    docs = [good(0), "not an object", good(2, subject="x", lang=1), good(0), good(4)]
    assert rejects_of(docs) == [(1, None, None), (2, "d2", "subject"), (2, "d2", "lang"), (3, "d0", "id")]


def test_sizes_are_413():
    with pytest.raises(TooLarge, match="over the batch limit of 3"):
        check([good(i) for i in range(4)], max_docs=3)
    with pytest.raises(DocumentsTooLarge) as e:
        check([good(0), good(1, notes="x" * 2000), {"id": "x"}], max_bytes=1500)
    assert http_status(e.value) == 413 and {r["position"] for r in e.value.rejects} == {1, 2}  # the others are listed too
    assert e.value.message.startswith("2 of 3 documents rejected")
    with pytest.raises(BadInput, match="expected a list"):
        check({"id": "a"})
    with pytest.raises(BadInput, match="empty"):
        check([])


def test_image_documents_take_a_relative_path_or_inline_base64():
    png = base64.b64encode(b"\x89PNG fake").decode()
    out = check([{"id": "a", "image": "x/1.png"}, {"id": "b", "image_b64": png, "caption": "c"}], IMAGE)
    assert out[0].source == "x/1.png" and out[0].hash == ""  # (a path's bytes are read and hashed by the service)
    assert out[1].image == b"\x89PNG fake" and out[1].source is None and "image_b64" not in out[1].doc
    assert out[1].hash == content_hash("clip_image", "image", b"\x89PNG fake")
    assert rejects_of([{"id": "a", "image": "https://x/y.png"}, {"id": "b", "image": "/etc/passwd"},
                       {"id": "c", "image": "a.png", "image_b64": png}, {"id": "d", "image_b64": "!!"},
                       {"id": "e"}], IMAGE) == [(0, "a", "image"), (1, "b", "image"), (2, "c", "image_b64"),
                                               (3, "d", "image_b64"), (4, "e", "image")]
    with pytest.raises(DocumentsTooLarge, match="image limit"):
        check([{"id": "a", "image_b64": base64.b64encode(b"x" * 2000).decode()}], IMAGE)


def test_delete_ids_and_public_documents():
    assert check_ids(["a", "b", "a"], 10) == ["a", "b"]
    with pytest.raises(BadInput, match=r"ids\[1\]: missing id"):
        check_ids(["a", ""], 10)
    with pytest.raises(TooLarge):
        check_ids(["a", "b"], 1)
    assert public({"_id": "a", "id": "a", "text": "t", META_KEY: {"hash": "h"}}) == {"id": "a", "text": "t"}


def test_permission_denied_is_403_both_ways():
    e = PermissionDenied("read only")
    assert http_status(e) == 403 and isinstance(e, Unauthenticated) and e.exit_code == 3
    assert type(from_http_status(403, "x", "api")) is PermissionDenied and type(from_http_status(401, "x", "api")) is Unauthenticated
    import grpc

    assert type(from_grpc_status(grpc.StatusCode.PERMISSION_DENIED, "x", "api")) is PermissionDenied
    assert type(from_grpc_status(grpc.StatusCode.INVALID_ARGUMENT, "x", "api")) is BadInput  # (TooLarge shares the code)
    assert type(from_http_status(413, "x", "api")) is TooLarge


READ, WRITE = "read-key-" + "r" * 20, "write-key-" + "w" * 20


@pytest.fixture
def guarded():
    h = Harness()
    h.service.auth = ApiKeys([READ], [WRITE])
    result = WriteResult(index="docs", build="b1", op="put", written=1)
    h.service.documents.put = lambda index, body: result  # type: ignore[method-assign]
    h.service.documents.delete = lambda index, body: result.model_copy(update={"op": "delete"})  # type: ignore[method-assign]
    h.service.documents.indexes = list  # type: ignore[method-assign]
    yield create_app(h.service).test_client()
    h.close()


@pytest.mark.parametrize("key, put, delete, read", [
    (None, 401, 401, 401), ("wrong-key-00000000000000", 401, 401, 401), (READ, 403, 403, 200), (WRITE, 200, 200, 200),
])
def test_writes_need_a_write_key(guarded, key, put, delete, read):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = guarded.put("/v1/indexes/docs/documents", json={"documents": [good(1)]}, headers=headers)
    assert r.status_code == put, r.get_json()
    if put == 403:
        assert r.get_json()["error"] == "PermissionDenied" and "write_api_keys" in r.get_json()["message"]
    assert guarded.delete("/v1/indexes/docs/documents", json={"ids": ["d1"]}, headers=headers).status_code == delete
    assert guarded.get("/v1/indexes", headers=headers).status_code == read
    body = {"scene": "text2text", "query": {"text": "x"}, "force": {"rerank": "none"}}
    assert guarded.post("/v1/search", json=body, headers=headers).status_code == read  # a write key reads too


def test_keys_off_leave_writes_open():
    h = Harness()
    try:
        h.service.documents.put = lambda index, body: WriteResult(index="docs", build="b1", op="put")  # type: ignore[method-assign]
        assert create_app(h.service).test_client().put("/v1/indexes/docs/documents", json={"documents": []}).status_code == 200
    finally:
        h.close()


def test_a_documents_body_over_the_limit_is_413():
    h = Harness()
    try:
        h.service.config.retrieval.max_body_mb = 0.001
        web = create_app(h.service).test_client()
        r = web.put("/v1/indexes/docs/documents", data=b"x" * 5000, content_type="application/json")
        assert r.status_code == 413 and r.get_json()["error"] == "TooLarge"
        assert web.post("/v1/search", data=b"x" * 5000, content_type="application/json").status_code == 400  # (search: as before)
    finally:
        h.close()


def test_openapi_describes_every_route_the_documents_api_included():
    from openapi_spec_validator import validate

    from mmsearch.api.models import openapi
    from mmsearch.retrieval_service.http_app import served_paths

    h = Harness()
    try:
        app = create_app(h.service)
        doc = openapi()
        validate(doc)
        routes = served_paths(app)
        assert routes == set(doc["paths"]), routes ^ set(doc["paths"])
        assert app.test_client().get("/v1/search").status_code == 405
        assert set(doc["paths"]["/v1/indexes/{index}/documents"]) == {"put", "delete"}
        assert "consistency" in doc["components"]["schemas"]["SearchBody"]["properties"]
        assert "rejects" in doc["components"]["schemas"]["ErrorBody"]["properties"]
    finally:
        h.close()


class _Ctx:
    def __init__(self, key):
        self.md = (("authorization", f"Bearer {key}"),) if key else ()
        self.code = None

    def invocation_metadata(self):
        return self.md

    def abort(self, code, details):
        self.code = code
        raise RuntimeError(details)


@pytest.mark.parametrize("key, code", [(None, "UNAUTHENTICATED"), (READ, "PERMISSION_DENIED"), (WRITE, None)])
def test_grpc_writes_need_a_write_key(key, code):
    import grpc

    from mmsearch.protos import search_pb2 as pb
    from mmsearch.retrieval_service.grpc_api import SearchServicer

    h = Harness()
    try:
        h.service.auth = ApiKeys([READ], [WRITE])
        h.service.documents.put = lambda index, body: WriteResult(index=index, build="b1", op="put",  # type: ignore[method-assign]
                                                                  written=len(body["documents"]))
        ctx = _Ctx(key)
        req = pb.PutDocumentsRequest(index="docs", documents_json=['{"id": "a", "text": "x"}'])
        try:
            out = SearchServicer(h.service).PutDocuments(req, ctx)
        except RuntimeError:
            out = None
        if code is None:
            assert out is not None and '"written": 1' in out.result_json
        else:
            assert ctx.code == getattr(grpc.StatusCode, code)
    finally:
        h.close()
