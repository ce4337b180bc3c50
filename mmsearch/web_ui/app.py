"""create_app(config): the search page at 127.0.0.1:8090.

Server-rendered (plain search, paging, uploads and clicks work without JavaScript; the small
script only adds drag-and-drop and click beacons). Everything from documents is escaped by Jinja;
images are served only from the configured image root. Errors the user can fix (bad input, an
unknown page) are shown as they are; anything on our side shows a plain message and the request's
id (also the X-Request-Id header), and the detail (dependency names, addresses, paths) goes to the
log under that id, for operators only.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, abort, g, make_response, redirect, render_template, request, send_file, url_for
from prometheus_client import Counter, Histogram
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.security import safe_join

from mmsearch.api.documents import IMMUTABLE_IMAGE_HEADERS, is_blob_ref
from mmsearch.client.search_client import SearchClient
from mmsearch.config import Config
from mmsearch.errors import BadInput, MMSearchError, NotFound, Overloaded, Unavailable, http_status, retry_after_headers
from mmsearch.experiments.spec import SCENES as EXPERIMENT_SCENES
from mmsearch.modelrepo.svg import check_svg, rasterise
from mmsearch.runtime.observability import exposition, new_registry

log = logging.getLogger("mmsearch.web")
SCENE_LABELS = {"text2text": "Text → text", "text2image": "Text → image", "image2image": "Image → image"}
SCENES = {s: SCENE_LABELS[s] for s in EXPERIMENT_SCENES}  # the scenes are the experiments schema's; labels are the page's
COOKIE = "mmsearch_uid"
PAGE_SIZE = 12
MAX_PAGES = 20
MAX_UPLOAD = 8 * 1024 * 1024
UPLOAD_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/svg+xml"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".svg"}
TILE_BOX = 256  # SVG images are served rasterised at this size: an SVG opened from our origin could run script
UID_RE = re.compile(r"^[a-f0-9]{32}$")
FORCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.-]{1,64}$")
UNAVAILABLE_MSG = "Search is unavailable right now — a part of the service is down. Please try again shortly."
OUR_SIDE_MSG = "Something went wrong on our side. Please try again."


def request_id() -> str:
    """This page request's id: shown to the user with an error, logged with its detail."""
    if "request_id" not in g:
        g.request_id = secrets.token_hex(8)
    return str(g.request_id)


def _users_fault(e: MMSearchError) -> bool:
    """Errors whose message is about the user's own request (and says nothing of our internals)."""
    return isinstance(e, (BadInput, NotFound))


def _parse_force(raw: str) -> dict[str, str]:
    """`layer:arm,layer:arm` from the debug field."""
    out = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        if not FORCE_RE.match(part):
            raise BadInput(f"force: {part!r} is not layer:arm")
        layer, arm = part.split(":", 1)
        out[layer] = arm
    return out


def create_app(config: Config, client: SearchClient | None = None) -> Flask:
    app = Flask("mmsearch.web", template_folder=str(Path(__file__).with_name("templates")),
                static_folder=str(Path(__file__).with_name("static")))
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD + 64 * 1024
    retrieval = client or SearchClient(config.web.retrieval_url, timeout_s=config.retrieval.request_timeout_s + 2,
                                       api_key=config.web.api_key or None)
    image_root = Path(config.image_root).resolve()

    def user_id() -> tuple[str, bool]:
        uid = request.cookies.get(COOKIE, "")
        return (uid, False) if UID_RE.match(uid) else (secrets.token_hex(16), True)

    def render(status: int = 200, **ctx):
        uid, new = ctx.pop("_uid")
        ctx.setdefault("scene", "text2text")
        resp = make_response(render_template("search.html", scenes=SCENES, page_size=PAGE_SIZE, **ctx), status)
        if new:
            resp.set_cookie(COOKIE, uid, max_age=365 * 24 * 3600, httponly=True, samesite="Lax")
        return resp

    def run_search(scene: str, page: int, force_raw: str, text: str | None = None, image: bytes | None = None, **extra):
        uid = user_id()
        ctx = dict(_uid=uid, scene=scene, q=text or "", page=page, force=force_raw, **extra)
        try:
            force = _parse_force(force_raw)
            out = retrieval.search(scene, text=text, image=image, user_id=uid[0], top_k=PAGE_SIZE, offset=PAGE_SIZE * (page - 1),
                                   force=force or None)
        except Unavailable as e:
            log.warning("search failed [request %s]: %s", request_id(), e.message)
            return render(503, error=UNAVAILABLE_MSG, error_ref=request_id(), **{k: v for k, v in ctx.items() if k != "_uid"},
                          _uid=uid)
        except Overloaded as e:
            resp = render(429, error="Search is busy right now. Please try again in a moment.",
                          **{k: v for k, v in ctx.items() if k != "_uid"}, _uid=uid)
            resp.headers.update(retry_after_headers(e))  # the API's own estimate, passed on
            return resp
        except MMSearchError as e:
            if _users_fault(e):
                return render(http_status(e), error=e.message, **{k: v for k, v in ctx.items() if k != "_uid"}, _uid=uid)
            log.error("search failed [request %s]: %s: %s", request_id(), type(e).__name__, e.message)
            return render(http_status(e), error=OUR_SIDE_MSG, error_ref=request_id(),
                          **{k: v for k, v in ctx.items() if k != "_uid"}, _uid=uid)
        results = out["results"]
        more = bool(out.get("has_more")) and page < MAX_PAGES
        return render(results=results, response=out, more=more, **{k: v for k, v in ctx.items() if k != "_uid"}, _uid=uid)

    def _page() -> int:
        raw = request.values.get("page", "1")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGES:
            raise BadInput(f"page: must be 1..{MAX_PAGES}")
        return int(raw)

    @app.errorhandler(BadInput)
    def _bad(e: BadInput):
        return render(400, error=e.message, _uid=user_id())

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e):
        return render(413, error=f"That file is too large: the limit is {MAX_UPLOAD // (1024 * 1024)} MB.", scene="image2image",
                      _uid=user_id())

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        return render(e.code or 500, error=e.description or e.name, _uid=user_id())

    @app.errorhandler(Exception)
    def _internal(e: Exception):
        log.exception("internal error [request %s]", request_id())
        return render(500, error=OUR_SIDE_MSG, error_ref=request_id(), _uid=user_id())

    @app.get("/")
    def index():
        scene = request.args.get("scene", "text2text")
        if scene not in SCENES:
            raise BadInput(f"scene: unknown {scene!r}")
        q = request.args.get("q", "").strip()
        force = request.args.get("force", "")
        like = request.args.get("like", "")
        if like:  # "more like this": an image already in the image root
            return run_search("image2image", _page(), force, image=_query_image(like), like=like)
        if not q:
            return render(scene=scene, force=force, _uid=user_id())
        if scene == "image2image":
            raise BadInput("image → image searches start from an uploaded image or “more like this”")
        if len(q) > 1000:
            raise BadInput("q: at most 1000 characters")
        return run_search(scene, _page(), force, text=q)

    @app.post("/upload")
    def upload():
        f = request.files.get("image")
        if f is None or not f.filename:
            raise BadInput("choose an image file to search with")
        if f.mimetype not in UPLOAD_TYPES and Path(f.filename).suffix.lower() not in IMAGE_SUFFIXES:
            raise BadInput(f"{f.filename}: not a supported image type (JPEG, PNG, WebP, GIF or SVG)")
        data = f.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise RequestEntityTooLarge()
        if not data:
            raise BadInput(f"{f.filename}: empty file")
        return run_search("image2image", 1, request.form.get("force", ""), image=data, uploaded=f.filename)

    def _image_path(rel: str) -> Path:
        joined = safe_join(str(image_root), rel)
        if joined is None or "\x00" in rel:  # a NUL byte is no file name (resolve() would raise)
            abort(404)
        path = Path(joined).resolve()
        if not path.is_relative_to(image_root) or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            abort(404)
        return path

    def _query_image(rel: str) -> bytes:
        """"More like this": an SVG that references nothing beside it is sent as it is, so the query path
        renders it at its model's short edge, as the index build did (modelrepo/svg.py); one that references
        bitmaps in its folder is rendered here, where they can be read (in the full box: the query path
        resamples it). An image a document was sent with inline (its ``image_blob``) comes from the
        retrieval service (an SVG as PNG in the full box: the API never serves SVG)."""
        if is_blob_ref(rel):
            return _blob(rel)[0]
        path = _image_path(rel)
        if path.suffix.lower() == ".svg":
            data = path.read_bytes()
            try:
                check_svg(data, path.name)  # (without its folder: a plain file name it references is refused)
                return data
            except BadInput:
                return rasterise(data, path.name, resources_dir=path.parent)
        return path.read_bytes()

    @functools.lru_cache(maxsize=256)
    def _svg_png(path: Path, mtime_ns: int) -> bytes:
        return rasterise(path.read_bytes(), path.name, TILE_BOX, resources_dir=path.parent)

    @app.get("/images/<path:rel>")
    def image(rel: str):
        path = _image_path(rel)
        if path.suffix.lower() == ".svg":
            resp = make_response(_svg_png(path, path.stat().st_mtime_ns))
            resp.headers.update({"Content-Type": "image/png", "Cache-Control": "public, max-age=86400"})
        else:
            resp = send_file(path, max_age=86400, conditional=True)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    def _blob(ref: str) -> tuple[bytes, str]:
        if not is_blob_ref(ref):
            abort(404)
        try:
            return retrieval.image(ref)
        except MMSearchError as e:  # gone (404), or the API unavailable (503): said as the page says any error
            abort(http_status(e), e.message)

    @app.get("/blobs/<ref>")
    def blob(ref: str):
        """An image kept from a document sent inline, shown beside its hits (an SVG arrives rendered to PNG)."""
        data, mime = _blob(ref)
        resp = make_response(data)
        resp.headers.update({"Content-Type": mime, **IMMUTABLE_IMAGE_HEADERS})
        return resp

    @app.route("/click", methods=["GET", "POST"])
    def click():
        rid, doc = request.values.get("request_id", ""), request.values.get("doc_id", "")
        nxt = request.values.get("next", "")
        try:
            retrieval.click(rid, doc, user_id()[0])
        except MMSearchError as e:
            log.info("click not recorded: %s", e.message)
        if request.method == "POST":
            return ("", 204)
        if not nxt.startswith("/") or nxt.startswith("//"):  # only local redirects
            nxt = url_for("index")
        return redirect(nxt, code=303)

    @app.get("/healthz")
    def healthz():
        """Liveness: the page process answers (whatever the API's state)."""
        return {"status": "ok", "retrieval": retrieval.healthy()}

    @app.get("/readyz")
    def readyz():
        """Readiness follows the search API's: a page that cannot search should not get traffic."""
        ok = retrieval.ready()
        return {"ready": ok, "retrieval": ok}, 200 if ok else 503

    prom = new_registry()
    page_requests = Counter("mmsearch_web_requests_total", "Page requests by endpoint and status", ["endpoint", "status"], registry=prom)
    page_seconds = Histogram("mmsearch_web_request_seconds", "Page latency by endpoint", ["endpoint"], registry=prom)

    @app.before_request
    def _start_clock():
        g.t0 = time.perf_counter()

    @app.after_request
    def _count(resp):
        endpoint = request.endpoint or "unmatched"
        page_requests.labels(endpoint, str(resp.status_code)).inc()
        if "t0" in g:
            page_seconds.labels(endpoint).observe(time.perf_counter() - g.t0)
        return resp

    @app.get("/metrics")
    def metrics():
        body, content_type = exposition(prom)
        return make_response(body, 200, {"Content-Type": content_type})

    @app.after_request
    def _headers(resp):
        resp.headers["X-Request-Id"] = request_id()
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        return resp

    app.jinja_env.globals["qs"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v not in (None, "")})
    return app
