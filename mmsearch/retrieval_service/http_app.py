"""HTTP front end (Flask): POST /v1/search, /v1/click, /v1/embed; GET /v1/config, /openapi.json, /healthz, /readyz, /metrics."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mmsearch.api_models import ClickBody, EmbedBody, openapi, parse
from mmsearch.errors import BadInput, MMSearchError, Overloaded, Unauthenticated, error_body, http_status
from mmsearch.retrieval_service.auth import key_from
from mmsearch.retrieval_service.pipeline import SearchService
from mmsearch.retrieval_service.request import decode_image, from_json

log = logging.getLogger("mmsearch.retrieval")


def create_app(service: SearchService) -> Flask:
    app = Flask("mmsearch.retrieval")
    max_bytes = int(service.config.retrieval.max_body_mb * 1024 * 1024)
    app.config["MAX_CONTENT_LENGTH"] = max_bytes

    def _json_body() -> object:
        if request.content_length is not None and request.content_length > max_bytes:
            raise BadInput(f"body: {request.content_length:,} bytes, over the {max_bytes:,}-byte limit")
        raw = request.get_data(cache=False)
        if not raw:
            raise BadInput("body: empty (expected JSON)")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadInput(f"body: not valid JSON ({e})") from e
        except RecursionError as e:
            raise BadInput("body: JSON nested too deeply") from e

    def _shed(inner):
        """Refuse a search at the door while admission control is full: no body parsed, no routing,
        so the 429 is fast and costs the admitted searches next to nothing. A request without a
        valid key still gets its 401 from the app."""
        def front(environ, start_response):
            if environ.get("PATH_INFO") == "/v1/search" and environ.get("REQUEST_METHOD") == "POST":
                headers = {k[5:].replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
                try:
                    service.auth.check(key_from(headers))
                except Unauthenticated:
                    return inner(environ, start_response)
                e = service.shed()
                if e is not None:
                    body = json.dumps(error_body(e)).encode()
                    start_response("429 Too Many Requests", [("Content-Type", "application/json"),
                                                             ("Content-Length", str(len(body))), ("Retry-After", "1")])
                    return [body]
            return inner(environ, start_response)
        return front

    app.wsgi_app = _shed(app.wsgi_app)  # type: ignore[method-assign]

    @app.before_request
    def _authenticate():
        if request.path.startswith("/v1/"):  # the API (and /v1/config); probes, /metrics and /openapi.json stay open
            service.auth.check(key_from(dict(request.headers)))

    @app.errorhandler(MMSearchError)
    def _ours(e: MMSearchError):
        resp = jsonify(error_body(e))
        if isinstance(e, Overloaded):
            resp.headers["Retry-After"] = "1"
        if isinstance(e, Unauthenticated):
            resp.headers["WWW-Authenticate"] = 'Bearer realm="mmsearch"'
        return resp, http_status(e)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e):
        return jsonify(error_body(BadInput(f"body: over the {max_bytes:,}-byte limit"))), 400

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        return jsonify({"error": e.name, "message": e.description}), e.code

    @app.errorhandler(Exception)
    def _internal(e: Exception):
        log.exception("internal error")
        return jsonify(error_body(e)), 500

    @app.post("/v1/search")
    def search():
        out = service.search(from_json(_json_body()))
        resp = jsonify(out.to_json())
        resp.headers["X-Request-Id"] = out.request_id  # the id on the service's log lines for this request
        return resp

    @app.post("/v1/click")
    def click():
        body = parse(ClickBody, _json_body())
        service.click(body.request_id, body.doc_id, body.user_id)
        return jsonify({"ok": True})

    @app.post("/v1/embed")
    def embed():
        body = parse(EmbedBody, _json_body())
        if (body.text is None) == (body.image_b64 is None):
            raise BadInput("text: give text or image_b64 (one of them)")
        image = decode_image(body.image_b64, "image_b64") if body.image_b64 is not None else None
        vec = service.embed(body.model, text=body.text, image=image)
        return jsonify({"model": body.model, "dim": int(vec.shape[0]), "embedding": [float(x) for x in vec]})

    @app.get("/v1/models")
    def models():
        return jsonify({"models": service.models()})

    @app.get("/openapi.json")
    def openapi_json():
        return jsonify(openapi())

    @app.get("/v1/config")
    def config():
        store = service.experiments
        live = store.current
        return jsonify({
            "version": live.version if live else None, "source": live.source if live else None,
            "loaded_at": live.loaded_at if live else None, "last_error": store.last_error, "rejected": store.rejected,
            "experiments": live.experiments.model_dump(exclude_none=True) if live else None,
        })

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        parts = service.ready()
        return jsonify({"ready": all(parts.values()), "dependencies": parts}), 200 if all(parts.values()) else 503

    @app.get("/metrics")
    def metrics():
        body, content_type = service.metrics.render()
        return Response(body, content_type=content_type)

    return app
