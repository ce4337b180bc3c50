"""Hostile input, generated: the HTTP and gRPC search APIs, the preprocess service and the web page
answer 4xx / INVALID_ARGUMENT for anything malformed — never a 500, never a crash."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmsearch.protos import preprocess_pb2, preprocess_pb2_grpc, search_pb2, search_pb2_grpc

pytestmark = pytest.mark.integration
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
SCENE = st.one_of(st.sampled_from(["text2text", "text2image", "image2image"]), st.text(max_size=20))
BODY = st.fixed_dictionaries({}, optional={
    "scene": st.one_of(SCENE, JSON),
    "query": st.one_of(JSON, st.fixed_dictionaries({}, optional={"text": st.one_of(st.text(max_size=60), JSON),
                                                                 "image_b64": st.one_of(st.text(max_size=60), JSON)})),
    "user_id": st.one_of(st.text(max_size=40), JSON),
    "top_k": st.one_of(st.integers(-10**6, 10**6), JSON),
    "force": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=2), JSON),
    "extra": JSON,
})


def post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@SETTINGS
@given(body=BODY)
def test_http_search_generated_bodies(stack, body):
    code, raw = post(stack["url"] + "/v1/search", json.dumps(body).encode())
    assert code in (200, 400, 404), (code, raw[:300])
    out = json.loads(raw)
    assert ("results" in out) if code == 200 else ("message" in out and "Traceback" not in out["message"])


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_http_search_raw_bytes(stack, raw):
    code, body = post(stack["url"] + "/v1/search", raw)
    assert code in (200, 400), (code, body[:200])


@SETTINGS
@given(scene=SCENE, text=st.text(max_size=80), image=st.binary(max_size=200), use_image=st.booleans(),
       top_k=st.integers(-(2**31), 2**31 - 1), force=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
       user=st.text(max_size=40))
def test_grpc_search_generated(stack, scene, text, image, use_image, top_k, force, user):
    stub = search_pb2_grpc.SearchStub(grpc.insecure_channel(f"127.0.0.1:{stack['retrieval'].grpc_port}"))
    q = search_pb2.Query(image=image) if use_image else search_pb2.Query(text=text)
    try:
        stub.Search(search_pb2.SearchRequest(scene=scene, query=q, top_k=top_k, force=force, user_id=user), timeout=30)
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (e.code(), e.details())


@SETTINGS
@given(texts=st.lists(st.binary(max_size=60), max_size=4), images=st.lists(st.binary(max_size=200), max_size=3),
       model=st.one_of(st.sampled_from(["tiny", "clip_image", "rerank"]), st.text(max_size=10)))
def test_preprocess_generated(stack, texts, images, model):
    stub = preprocess_pb2_grpc.PreprocessStub(grpc.insecure_channel(f"127.0.0.1:{stack['pre'].port}"))
    for call in (lambda: stub.Tokenize(preprocess_pb2.TokenizeRequest(model=model, texts=texts), timeout=30),
                 lambda: stub.ProcessImages(preprocess_pb2.ImagesRequest(model=model, images=images), timeout=30)):
        try:
            call()
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (e.code(), e.details())


@pytest.fixture(scope="module")
def web(stack):
    from mmsearch.web_ui.app import create_app

    cfg = stack["cfg"].model_copy(update={"image_root": stack["images"],
                                          "web": stack["cfg"].web.model_copy(update={"retrieval_url": stack["url"]})})
    app = create_app(cfg)
    return app.test_client()


@SETTINGS
@given(params=st.dictionaries(st.sampled_from(["q", "scene", "page", "force", "like"]), st.text(max_size=40), max_size=5))
def test_web_generated_query_strings(web, params):
    r = web.get("/", query_string=params)
    assert r.status_code in (200, 400, 404), (r.status_code, params)
    assert b"Traceback" not in r.data


@pytest.fixture(scope="module")
def outside_image(stack):
    """A '3.png' just outside the web's image root, with bytes that no image inside the root has."""
    path = stack["images"].parent / "3.png"
    assert not path.exists()
    data = b"\x89PNG\r\n\x1a\n" + b"SENTINEL: outside the image root " + os.urandom(16)
    path.write_bytes(data)
    yield path, data
    path.unlink()


ESCAPES = ["../3.png", "%2e%2e/3.png", "..%2f3.png", "%2e%2e%2f3.png", "./../3.png", "sub/../../3.png", "..\\3.png",
           "..%5c3.png", "/../3.png", "images/../../3.png", "3.png/../../3.png"]


@pytest.mark.parametrize("path", ESCAPES + ["ABSOLUTE"])
def test_web_image_escape_is_404_and_never_serves_the_outside_file(web, stack, outside_image, path):
    outside_path, outside_bytes = outside_image
    if path == "ABSOLUTE":
        path = str(outside_path).lstrip("/")
        for p in (path, "/" + path):
            r = web.get("/images/" + p, follow_redirects=True)
            assert r.status_code == 404 and outside_bytes not in r.data, p
        return
    r = web.get("/images/" + path, follow_redirects=True)
    assert r.status_code == 404, (path, r.status_code)
    assert outside_bytes not in r.data and b"SENTINEL" not in r.data


@SETTINGS
@given(path=st.lists(st.sampled_from(["..", ".", "/", "%2e", "%2f", "%5c", "\\", "~", "etc", "passwd", "3.png", "sub", ":"]),
                     max_size=8).map("".join))
def test_web_image_paths_never_escape(web, stack, outside_image, path):
    _, outside_bytes = outside_image
    r = web.get("/images/" + path, follow_redirects=True)
    assert r.status_code in (200, 404, 400, 405), r.status_code
    assert outside_bytes not in r.data and b"SENTINEL" not in r.data  # the 3.png outside the root is never served
    if r.status_code == 200:
        # the only image these fragments can name inside the root is its own 3.png: exactly those bytes
        assert r.mimetype == "image/png" and r.data == (stack["images"] / "3.png").read_bytes(), path


def test_header_injection_in_redirects_and_ids(web, stack):
    r = web.get("/click?request_id=x&doc_id=y&next=/%0d%0aSet-Cookie:%20evil=1")
    assert "\r" not in r.headers.get("Location", "") and "\n" not in r.headers.get("Location", "")
    assert "evil" not in r.headers.get("Set-Cookie", "")
    code, raw = post(stack["url"] + "/v1/search", json.dumps({"scene": "text2text", "query": {"text": "x"},
                                                              "user_id": "a\r\nSet-Cookie: evil=1"}).encode())
    assert code == 400 and b"user_id" in raw
