"""The web page's own logic with a fake retrieval client (no servers): force parsing, paging, images, clicks."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from mmsearch.config import load_config
from mmsearch.errors import BadInput, Internal, Unauthenticated, Unavailable
from mmsearch.web_ui.app import MAX_PAGES, PAGE_SIZE, _parse_force, create_app


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", {}),
        ("model:base", {"model": "base"}),
        ("model:base,rerank:wide", {"model": "base", "rerank": "wide"}),
        (" model:base , rerank:wide ", {"model": "base", "rerank": "wide"}),
        ("model:base,,", {"model": "base"}),
        ("model:a,model:b", {"model": "b"}),  # the last one wins
        ("m-1.x_y:arm.2-b_c", {"m-1.x_y": "arm.2-b_c"}),
    ],
)
def test_parse_force_accepts_layer_arm_lists(raw, expected):
    assert _parse_force(raw) == expected


@pytest.mark.parametrize("raw", ["model", "model:", ":base", "model:base:extra", "model=base", "mo del:base",
                                 "model:ba se", "model:base;rerank:wide", "<b>:x", "a" * 65 + ":b", "a:" + "b" * 65])
def test_parse_force_refuses_anything_else_naming_the_part(raw):
    with pytest.raises(BadInput) as e:
        _parse_force(f"ok:fine,{raw}")
    assert e.value.message.startswith("force: ") and "is not layer:arm" in e.value.message
    assert "ok:fine" not in e.value.message  # the offending part is named, not the good one


class FakeRetrieval:
    def __init__(self, n_results: int = 3, error: Exception | None = None):
        self.calls: list[dict] = []
        self.clicks: list[tuple[str, str, str]] = []
        self.n_results, self.error = n_results, error

    def search(self, scene, text=None, image=None, *, user_id=None, top_k=None, offset=0, fields=None, filter=None, force=None):
        self.calls.append(dict(scene=scene, user_id=user_id, top_k=top_k, offset=offset, text=text, image=image, force=force))
        if self.error:
            raise self.error
        results = [{"id": f"doc-{i}", "score": 1 - i / 100, "score_type": "cosine", "sources": ["vector"],
                    "doc": {"text": f"body of doc {i}"}} for i in range(offset, min(self.n_results, offset + top_k))]
        return {"request_id": "req-1", "results": results, "experiment": {"model": "base"}, "offset": offset,
                "has_more": self.n_results > offset + top_k, "timings_ms": {"total": 1.0}, "config_version": "v"}

    def click(self, request_id, doc_id, user_id):
        self.clicks.append((request_id, doc_id, user_id))

    def healthy(self):
        return True

    def ready(self):
        return self.error is None


@pytest.fixture()
def site(tmp_path: Path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "cat.png").write_bytes(b"\x89PNG cat")
    (root / "notes.txt").write_bytes(b"not an image")
    (tmp_path / "secret.png").write_bytes(b"\x89PNG outside the root")
    fake = FakeRetrieval()
    app = create_app(load_config(environ={}, overrides={"image_root": str(root)}), client=fake)
    app.testing = True
    return app.test_client(), fake


def test_force_field_reaches_the_retrieval_client(site):
    web, fake = site
    r = web.get("/?scene=text2text&q=shoes&force=model:base,+rerank:wide")
    assert r.status_code == 200
    assert fake.calls[-1]["force"] == {"model": "base", "rerank": "wide"} and fake.calls[-1]["text"] == "shoes"
    assert "body of doc 2" in r.data.decode()


def test_bad_force_is_a_400_and_no_search_is_made(site):
    web, fake = site
    r = web.get("/?scene=text2text&q=shoes&force=model")
    assert r.status_code == 400 and "is not layer:arm" in r.data.decode()
    assert fake.calls == []


def test_pages_ask_the_api_for_their_page(site):
    web, fake = site
    fake.n_results = PAGE_SIZE * 2 + 1
    r = web.get("/?scene=text2text&q=x&page=2")
    assert (fake.calls[-1]["top_k"], fake.calls[-1]["offset"]) == (PAGE_SIZE, PAGE_SIZE)
    html = r.data.decode()
    assert f"body of doc {PAGE_SIZE}<" in html and f"body of doc {PAGE_SIZE - 1}<" not in html
    assert 'id="next"' in html and 'id="prev"' in html
    fake.n_results = PAGE_SIZE * 2  # the API says no more after page 2: no next link
    assert 'id="next"' not in web.get("/?scene=text2text&q=x&page=2").data.decode()


@pytest.mark.parametrize("page", ["0", str(MAX_PAGES + 1), "-1", "two", "1.5"])
def test_bad_page_is_a_400(site, page):
    web, fake = site
    r = web.get(f"/?scene=text2text&q=x&page={page}")
    assert r.status_code == 400 and "page: must be" in r.data.decode() and fake.calls == []


def _ref(html: str) -> str:
    m = re.search(r'<code id="error-ref">([0-9a-f]{16})</code>', html)
    assert m is not None, "no request id on the error page"
    return m.group(1)


@pytest.mark.parametrize("error, status, plain", [
    (Unavailable("milvus at /var/lib/mmsearch/milvus.sock", "connection refused"), 503, "Search is unavailable right now"),
    (Internal("triton at 10.0.0.7:8001: model tiny: onnxruntime bad allocation"), 500, "Something went wrong on our side"),
    (Unauthenticated("this API requires a key: send 'Authorization: Bearer <key>'"), 401, "Something went wrong on our side"),
])
def test_errors_on_our_side_show_a_plain_message_and_a_request_id_the_log_explains(site, caplog, error, status, plain):
    web, fake = site
    fake.error = error
    with caplog.at_level(logging.WARNING, logger="mmsearch.web"):
        r = web.get("/?scene=text2text&q=x")
    html = r.data.decode()
    assert r.status_code == status and plain in html
    for internal in ("milvus", "/var/lib", "triton", "10.0.0.7", "onnxruntime", "Authorization", "Bearer"):
        assert internal not in html, internal
    rid = _ref(html)
    assert r.headers["X-Request-Id"] == rid
    logged = [rec.getMessage() for rec in caplog.records if rid in rec.getMessage()]
    assert logged and error.message in logged[0]  # the operator finds the detail under the id the user reports


def test_a_users_own_mistake_is_shown_as_it_is(site):
    web, fake = site
    fake.error = BadInput("force: layer rerank has no arm 'mystery'")
    r = web.get("/?scene=text2text&q=x")
    assert r.status_code == 400 and "force: layer rerank has no arm &#39;mystery&#39;" in r.data.decode()
    assert 'id="error-ref"' not in r.data.decode()


def test_an_unexpected_exception_is_a_500_with_a_request_id(site, caplog):
    web, fake = site
    fake.error = KeyError("/srv/secret/path")
    with caplog.at_level(logging.ERROR, logger="mmsearch.web"):
        r = web.get("/?scene=text2text&q=x")
    html = r.data.decode()
    assert r.status_code == 500 and "/srv/secret/path" not in html and "Traceback" not in html
    rid = _ref(html)
    assert any(rid in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_images_are_served_only_from_the_root(site):
    web, _ = site
    r = web.get("/images/cat.png")
    assert r.status_code == 200 and r.data == b"\x89PNG cat" and r.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/images/../secret.png", "/images/%2e%2e/secret.png", "/images/..%2fsecret.png",
                 "/images/notes.txt", "/images/missing.png"):
        r = web.get(path)
        assert r.status_code == 404, path
        assert b"outside the root" not in r.data


def test_clicks_are_recorded_and_redirect_only_locally(site):
    web, fake = site
    web.get("/")  # gets the user cookie
    r = web.get("/click?request_id=req-1&doc_id=doc-2&next=/%3Fq%3Dx%23r-3")
    assert r.status_code == 303 and r.headers["Location"] == "/?q=x#r-3"
    for nxt in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        r = web.get(f"/click?request_id=req-1&doc_id=doc-3&next={nxt}")
        assert r.status_code == 303 and r.headers["Location"] == "/", nxt
    assert web.post("/click", data={"request_id": "req-1", "doc_id": "doc-4"}).status_code == 204
    assert [c[1] for c in fake.clicks] == ["doc-2", "doc-3", "doc-3", "doc-3", "doc-4"]
    assert len({c[2] for c in fake.clicks}) == 1  # the same sticky user on every click


@pytest.mark.parametrize("like", ["cat.png\x00.txt", "\x00", "a\x00/../cat.png"])
def test_a_nul_byte_in_an_image_path_is_not_found_not_a_crash(site, like):
    web, fake = site
    for r in (web.get("/", query_string={"like": like}), web.get("/images/" + like.replace("\x00", "%00"))):
        assert r.status_code == 404
    assert fake.calls == []  # nothing was searched with it


def test_metrics_count_pages_with_the_standard_content_type(site):
    web, _ = site
    web.get("/?scene=text2text&q=shoes")
    r = web.get("/metrics")
    text = r.data.decode()
    assert r.status_code == 200 and r.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert 'mmsearch_web_requests_total{endpoint="index",status="200"} 1.0' in text and "process_resident_memory_bytes" in text


def test_readiness_follows_the_search_api_and_liveness_does_not(site):
    web, fake = site
    assert web.get("/readyz").status_code == 200
    fake.error = Unavailable("retrieval service at x", "down")
    assert web.get("/readyz").status_code == 503 and web.get("/healthz").status_code == 200


def test_svg_images_are_served_as_png_never_as_svg(site, tmp_path):
    web, _ = site
    root = tmp_path / "images"
    (root / "star.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
                                   '<rect width="20" height="10" fill="red"/><script>alert(1)</script></svg>')
    r = web.get("/images/star.svg")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png" and r.data.startswith(b"\x89PNG")
    assert b"script" not in r.data and r.headers["X-Content-Type-Options"] == "nosniff"
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(r.data)).size == (256, 128)  # fitted into the tile box
    # "more like this": an SVG that needs nothing beside it goes as it is, so the query path renders it at its
    # model's short edge as the build did; one that references a bitmap in its folder is rendered here, with it
    web.get("/", query_string={"like": "star.svg"})
    assert site[1].calls[-1]["image"] == (root / "star.svg").read_bytes() and site[1].calls[-1]["scene"] == "image2image"
    Image.new("RGB", (4, 4), "blue").save(root / "dot.png")
    (root / "framed.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
                                     '<image href="dot.png" width="20" height="10"/></svg>')
    web.get("/", query_string={"like": "framed.svg"})
    assert site[1].calls[-1]["image"].startswith(b"\x89PNG")
    (root / "bomb.svg").write_bytes(b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "x"><!ENTITY b "&a;&a;">]>'
                                    b'<svg xmlns="http://www.w3.org/2000/svg">&b;</svg>')
    r = web.get("/images/bomb.svg")
    assert r.status_code == 400 and b"entity" in r.data
