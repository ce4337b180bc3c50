"""The search page with Flask's test client, against the real retrieval service of the local stack."""

from __future__ import annotations

import io
import re

import pytest
from markupsafe import escape

from mmsearch.client.search_client import SearchClient
from mmsearch.clients.documents import DocumentStore
from mmsearch.errors import BadInput
from mmsearch.runtime.net import free_port, wait_until
from mmsearch.web_ui.app import COOKIE, PAGE_SIZE, create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def web(stack):
    cfg = stack["cfg"].model_copy(update={"image_root": stack["images"],
                                          "web": stack["cfg"].web.model_copy(update={"retrieval_url": stack["url"]})})
    app = create_app(cfg)
    app.testing = True
    return app.test_client()


def test_home_sets_sticky_user_cookie(web):
    r = web.get("/")
    assert r.status_code == 200 and b"Text \xe2\x86\x92 image" in r.data
    m = re.search(rf"{COOKIE}=([a-f0-9]{{32}})", r.headers.get("Set-Cookie", ""))
    assert m is not None, f"no {COOKIE} cookie in {r.headers.get('Set-Cookie')!r}"
    assert "HttpOnly" in r.headers["Set-Cookie"]
    r2 = web.get("/?scene=text2text&q=text+document+3")
    assert r2.status_code == 200 and "Set-Cookie" not in r2.headers  # the cookie sticks
    assert web.get_cookie(COOKIE).value == m.group(1)


def results_markup(html: str) -> str:
    """The results list only (not the <title> or the search box, which echo the query)."""
    m = re.search(r'<(ol|ul) class="(?:cards|grid)" id="results".*?</\1>', html, re.S)
    assert m is not None, "no results list in the page"
    return m.group(0)


def first_card(html: str) -> str:
    m = re.search(r'<li class="card" id="r-1">(.*?)</li>', results_markup(html), re.S)
    assert m is not None, "no first result card"
    return m.group(1)


def tiles(html: str) -> list[str]:
    """The images of the result tiles, in page order (not the "Images like" context above the list)."""
    return re.findall(r'<li class="tile">.*?<img src="/images/([^"]+)"', results_markup(html), re.S)


def api_images(stack, scene: str, **query) -> list[str]:
    """What the search API itself returns for the same query, first page: the images, in rank order."""
    out = SearchClient(stack["url"]).search(scene, top_k=PAGE_SIZE, **query)
    return [r["doc"]["image"] for r in out["results"]]


def test_text2text_results_debug_panel_and_escaping(web):
    r = web.get("/?scene=text2text&q=text+document+42+about+subject+6&force=rerank:none")
    html = r.data.decode()
    assert r.status_code == 200
    card = first_card(html)
    # the indexed document t42, found by the search: its id is nowhere in the query
    assert 'data-doc="t42"' in card and '<p class="text">text document 42 about subject 6</p>' in card
    assert len(re.findall(r'<li class="card"', results_markup(html))) == PAGE_SIZE  # a full first page
    assert "rerank = none" in html and "embed" in html and "ms" in html
    r = web.get("/?scene=text2text&q=%3Cscript%3Ealert(1)%3C/script%3E+hostile+document&force=rerank:none")
    html = r.data.decode()
    card = first_card(html)
    assert 'data-doc="xss"' in card
    assert "&lt;b&gt;bold&lt;/b&gt;" in card  # the document's title, which only the search result carries
    assert '<p class="text">&lt;script&gt;alert(1)&lt;/script&gt; hostile document</p>' in card
    assert "<script>alert(1)</script>" not in html and "<b>bold</b>" not in html


def test_text2image_grid_and_more_like_this(web, stack):
    r = web.get("/?scene=text2image&q=a+picture")
    html = r.data.decode()
    assert r.status_code == 200 and 'class="grid"' in html
    shown = tiles(html)
    assert shown and shown == api_images(stack, "text2image", text="a picture")  # the API's ranking, in its order
    # "more like this" on a tile that is not the first (an echo of the first tile would not do)
    pick = next(t for t in shown[1:] if t.endswith(".png"))
    assert re.search(rf'href="/\?scene=image2image&amp;like={re.escape(pick)}"', results_markup(html)), pick
    r = web.get(f"/?scene=image2image&like={pick}")
    similar = tiles(r.data.decode())
    assert r.status_code == 200 and similar[0] == pick  # the image itself is its own nearest neighbour
    assert similar == api_images(stack, "image2image", image=(stack["images"] / pick).read_bytes())


def test_upload_image(web, stack):
    data = (stack["images"] / "17.png").read_bytes()
    r = web.post("/upload", data={"image": (io.BytesIO(data), "query.png")}, content_type="multipart/form-data")
    html = r.data.decode()
    assert r.status_code == 200 and "Images like <strong>query.png</strong>" in html
    shown = tiles(html)
    assert shown[0] == "17.png"  # the same image found first
    assert shown == api_images(stack, "image2image", image=data)


@pytest.mark.parametrize(
    "payload, status, fragment",
    [
        ({"image": (io.BytesIO(b"not an image at all"), "x.png")}, 400, "query.image_b64"),
        ({"image": (io.BytesIO(b""), "empty.png")}, 400, "empty file"),
        ({"image": (io.BytesIO(b"%PDF"), "doc.pdf")}, 400, "not a supported image type"),
        ({}, 400, "choose an image file"),
        ({"image": (io.BytesIO(b"\x89PNG" + b"0" * (9 * 1024 * 1024)), "huge.png")}, 413, "too large"),
    ],
)
def test_bad_uploads(web, payload, status, fragment):
    r = web.post("/upload", data=payload, content_type="multipart/form-data")
    assert r.status_code == status and fragment in r.data.decode()
    assert "Traceback" not in r.data.decode()


@pytest.fixture()
def secret_png(stack):
    """An allowed file type just outside the image root: only the root guard stands between it and the page."""
    path = stack["images"].parent / "secret-web.png"
    data = b"\x89PNG\r\n\x1a\n" + b"OUTSIDE THE IMAGE ROOT"
    path.write_bytes(data)
    yield path, data
    path.unlink()


def test_images_served_safely_with_cache_headers(web, secret_png):
    r = web.get("/images/3.png")
    assert r.status_code == 200 and r.mimetype == "image/png" and "max-age=86400" in r.headers["Cache-Control"]
    path, data = secret_png
    for bad in ("/images/../secret-web.png", "/images/%2e%2e/secret-web.png", "/images/..%2fsecret-web.png",
                "/images/" + str(path), "/images//" + str(path).lstrip("/"), "/images/none.png"):
        r = web.get(bad, follow_redirects=True)
        assert r.status_code == 404 and data not in r.data, (bad, r.status_code)


def test_click_recorded_and_redirect_is_local(web, stack):
    html = web.get("/?scene=text2text&q=text+document+8&force=rerank:none").data.decode()
    href = re.search(r'href="(/click\?[^"]+)"', html).group(1).replace("&amp;", "&")
    r = web.get(href)
    assert r.status_code == 303 and r.headers["Location"].startswith("/?")
    rid_m = re.search(r"request_id=([a-f0-9]+)", href)
    doc_m = re.search(r"doc_id=([^&]+)", href)
    assert rid_m is not None and doc_m is not None, href
    rid, clicked = rid_m.group(1), doc_m.group(1)
    r = web.get(f"/click?request_id={rid}&doc_id=t1&next=//evil.example/x")
    assert r.status_code == 303 and r.headers["Location"] == "/"
    assert web.post("/click", data={"request_id": rid, "doc_id": "t2"}).status_code == 204
    store = DocumentStore(stack["mongo"].uri, stack["cfg"].mongo.database)

    def clicks() -> list[dict]:
        entry = store.db["_query_log"].find_one({"_id": rid})
        return (entry or {}).get("clicks", [])

    assert wait_until(lambda: len(clicks()) >= 3, 5, 0.05), clicks()
    recorded = clicks()
    assert [c["doc_id"] for c in recorded] == [clicked, "t1", "t2"]  # every click, in order, once
    assert {c.get("user_id") for c in recorded} == {web.get_cookie(COOKIE).value}  # all from this browser's user


def test_paging(web):
    p1 = web.get("/?scene=text2text&q=text+document&force=rerank:none").data.decode()
    p2 = web.get("/?scene=text2text&q=text+document&force=rerank:none&page=2").data.decode()
    assert 'id="next"' in p1 and 'id="prev"' in p2 and 'start="13"' in p2
    assert web.get("/?scene=text2text&q=x&page=0").status_code == 400
    assert web.get("/?scene=text2text&q=x&page=abc").status_code == 400


def test_error_states_are_plain_messages(web, stack):
    assert web.get("/?scene=text2video&q=x").status_code == 400
    assert "unknown" in web.get("/?scene=text2video&q=x").data.decode()
    r = web.get("/?scene=text2text&q=x&force=rerank:mystery")
    error = re.search(r'<div class="error" role="alert" id="error">(.*?)</div>', r.data.decode(), re.S)
    assert r.status_code == 400 and error is not None, r.status_code
    with pytest.raises(BadInput) as api:  # the API's own answer to the same request, shown in the error (not the echo)
        SearchClient(stack["url"]).search("text2text", text="x", force={"rerank": "mystery"})
    assert "mystery" in api.value.message and escape(api.value.message) in error.group(1)
    cfg = stack["cfg"].model_copy(update={"web": stack["cfg"].web.model_copy(update={"retrieval_url": f"http://127.0.0.1:{free_port()}"})})
    down = create_app(cfg).test_client()
    r = down.get("/?scene=text2text&q=anything")
    html = r.data.decode()
    assert r.status_code == 503 and "Search is unavailable right now" in html and "Traceback" not in html
    assert "127.0.0.1" not in html and "retrieval service" not in html  # the detail is in the log, under the request id
    assert re.search(r'<code id="error-ref">[0-9a-f]{16}</code>', html) and r.headers["X-Request-Id"] in html
    assert down.get("/healthz").json == {"status": "ok", "retrieval": False}
