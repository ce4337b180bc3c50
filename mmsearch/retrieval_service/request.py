"""The search request, validated once at the edge (HTTP JSON or gRPC) into one typed object."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from mmsearch.errors import BadInput
from mmsearch.experiments import SCENES
from mmsearch.protos import search_pb2

MAX_TOP_K = 1000
MAX_TEXT_CHARS = 4096
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


@dataclass
class SearchRequest:
    scene: str
    text: str | None = None
    image: bytes | None = None
    user_id: str | None = None
    top_k: int | None = None
    force: dict[str, str] = field(default_factory=dict)


def _check(scene: Any, text: Any, image: bytes | None, user_id: Any, top_k: Any, force: Any) -> SearchRequest:
    if not isinstance(scene, str) or scene not in SCENES:
        raise BadInput(f"scene: must be one of {', '.join(SCENES)}, got {scene!r}")
    if text is not None and image is not None:
        raise BadInput("query: give text or an image, not both")
    if text is None and image is None:
        raise BadInput("query: missing (give query.text or query.image_b64)")
    if scene == "image2image" and image is None:
        raise BadInput("query: scene image2image needs query.image_b64")
    if scene != "image2image" and text is None:
        raise BadInput(f"query: scene {scene} needs query.text")
    if text is not None:
        if not isinstance(text, str):
            raise BadInput(f"query.text: must be a string, got {type(text).__name__}")
        if not text.strip():
            raise BadInput("query.text: empty")
        if len(text) > MAX_TEXT_CHARS:
            raise BadInput(f"query.text: {len(text)} characters, over the limit of {MAX_TEXT_CHARS}")
    if user_id is not None and user_id != "":
        if not isinstance(user_id, str) or not USER_ID_RE.match(user_id):
            raise BadInput("user_id: 1-128 characters of letters, digits and _ . : @ -")
    else:
        user_id = None
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise BadInput(f"top_k: must be an integer, got {type(top_k).__name__}")
        if not 1 <= top_k <= MAX_TOP_K:
            raise BadInput(f"top_k: must be 1..{MAX_TOP_K}, got {top_k}")
    if force is None:
        force = {}
    if not isinstance(force, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in force.items()):
        raise BadInput('force: must be an object of {"layer": "arm"} strings')
    return SearchRequest(scene, text, image, user_id, top_k, dict(force))


def from_json(body: Any) -> SearchRequest:
    if not isinstance(body, dict):
        raise BadInput("body: expected a JSON object")
    unknown = set(body) - {"scene", "query", "user_id", "top_k", "force"}
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: unknown field")
    query = body.get("query")
    if query is None:
        raise BadInput("query: missing (give query.text or query.image_b64)")
    if not isinstance(query, dict):
        raise BadInput("query: expected an object with text or image_b64")
    unknown = set(query) - {"text", "image_b64"}
    if unknown:
        raise BadInput(f"query.{sorted(unknown)[0]}: unknown field")
    image = None
    if "image_b64" in query and query["image_b64"] is not None:
        raw = query["image_b64"]
        if not isinstance(raw, str):
            raise BadInput("query.image_b64: must be a base64 string")
        if raw.startswith("data:") and "," in raw:
            raw = raw.split(",", 1)[1]
        try:
            image = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadInput(f"query.image_b64: not valid base64 ({e})") from e
        if not image:
            raise BadInput("query.image_b64: empty")
    return _check(body.get("scene"), query.get("text"), image, body.get("user_id"), body.get("top_k"), body.get("force"))


def from_proto(req: search_pb2.SearchRequest) -> SearchRequest:
    which = req.query.WhichOneof("q") if req.HasField("query") else None
    text = req.query.text if which == "text" else None
    image = bytes(req.query.image) if which == "image" else None
    if which == "image" and not image:
        raise BadInput("query.image: empty")
    return _check(req.scene, text, image, req.user_id or None, req.top_k or None, dict(req.force))
