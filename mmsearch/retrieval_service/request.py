"""The search request, validated once at the edge (HTTP JSON or gRPC) into one typed object.

Both front ends go through the same pydantic model (mmsearch.api.models.SearchBody), so HTTP and
gRPC refuse the same things with the same messages; the checks across fields follow here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mmsearch.api.models import MAX_OFFSET, MAX_TEXT_CHARS, MAX_TOP_K, USER_ID_PATTERN, SearchBody, parse
from mmsearch.errors import BadInput
from mmsearch.protos import search_pb2

__all__ = ["MAX_OFFSET", "MAX_TEXT_CHARS", "MAX_TOP_K", "USER_ID_PATTERN", "SearchRequest", "decode_image", "from_json", "from_proto"]


@dataclass
class SearchRequest:
    scene: str
    text: str | None = None
    image: bytes | None = None
    user_id: str | None = None
    top_k: int | None = None
    force: dict[str, str] = field(default_factory=dict)
    offset: int = 0
    fields: list[str] | None = None
    filter: dict[str, Any] | None = None
    consistency: str | None = None  # "strong": every acknowledged write seen


def decode_image(raw: str, where: str) -> bytes:
    """Base64 (or a data: URL) -> bytes; BadInput naming ``where``."""
    if raw.startswith("data:") and "," in raw:
        raw = raw.split(",", 1)[1]
    try:
        image = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadInput(f"{where}: not valid base64 ({e})") from e
    if not image:
        raise BadInput(f"{where}: empty")
    return image


def _finish(body: SearchBody, image: bytes | None) -> SearchRequest:
    """The checks across fields, once the model has checked each field."""
    text, scene = body.query.text, body.scene
    if text is not None and image is not None:
        raise BadInput("query: give text or an image, not both")
    if text is None and image is None:
        raise BadInput("query: missing (give query.text or query.image_b64)")
    if scene == "image2image" and image is None:
        raise BadInput("query: scene image2image needs query.image_b64")
    if scene != "image2image" and text is None:
        raise BadInput(f"query: scene {scene} needs query.text")
    if text is not None and not text.strip():
        raise BadInput("query.text: empty")
    if body.user_id and not re.fullmatch(USER_ID_PATTERN, body.user_id):
        raise BadInput("user_id: 1-128 characters of letters, digits and _ . : @ -")
    if body.fields is not None:
        bad = [f for f in body.fields if not f or len(f) > 128]
        if bad:
            raise BadInput(f"fields: names are 1-128 characters, got {bad[0]!r}")
    return SearchRequest(scene, text, image, body.user_id or None, body.top_k, dict(body.force or {}),
                         body.offset, list(body.fields) if body.fields is not None else None, body.filter, body.consistency)


def from_json(body: Any) -> SearchRequest:
    if isinstance(body, dict) and isinstance(body.get("query"), dict) and body["query"].get("image_b64") is not None:
        raw = body["query"]["image_b64"]
        if not isinstance(raw, str):
            raise BadInput("query.image_b64: must be a base64 string")
        image: bytes | None = decode_image(raw, "query.image_b64")
        body = {**body, "query": {k: v for k, v in body["query"].items() if k != "image_b64"}}
    else:
        image = None
    return _finish(parse(SearchBody, body), image)


def from_proto(req: search_pb2.SearchRequest) -> SearchRequest:
    which = req.query.WhichOneof("q") if req.HasField("query") else None
    image = bytes(req.query.image) if which == "image" else None
    if which == "image" and not image:
        raise BadInput("query.image: empty")
    filt: Any = None
    if req.filter:
        try:
            filt = json.loads(req.filter)
        except json.JSONDecodeError as e:
            raise BadInput(f"filter: not valid JSON ({e})") from e
        except RecursionError as e:
            raise BadInput("filter: nested too deeply") from e
    body = {"scene": req.scene, "query": {"text": req.query.text} if which == "text" else {},
            "user_id": req.user_id or None, "top_k": req.top_k or None, "force": dict(req.force),
            "offset": req.offset, "fields": list(req.fields) or None, "filter": filt, "consistency": req.consistency or None}
    return _finish(parse(SearchBody, body), image)
