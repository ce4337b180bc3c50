"""HTTP front end (Flask): POST /v1/search, POST /v1/click, GET /v1/config, /healthz, /readyz, /metrics."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mmsearch.errors import BadInput, MMSearchError, error_body, http_status
from mmsearch.retrieval_service.pipeline import SearchService
from mmsearch.retrieval_service.request import from_json

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

    @app.errorhandler(MMSearchError)
    def _ours(e: MMSearchError):
        return jsonify(error_body(e)), http_status(e)

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
        return jsonify(service.search(from_json(_json_body())).to_json())

    @app.post("/v1/click")
    def click():
        body = _json_body()
        if not isinstance(body, dict):
            raise BadInput("body: expected a JSON object")
        service.click(body.get("request_id"), body.get("doc_id"), body.get("user_id"))
        return jsonify({"ok": True})

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
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")

    return app
