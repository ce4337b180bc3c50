"""The public search API's request and response models: one schema for HTTP and gRPC validation,
for the Python client, and for the OpenAPI document served at GET /openapi.json.

Models are strict (no "10" for 10, no true for 1) and forbid unknown fields; every refusal is a
BadInput whose message starts with the path of the field at fault (``query.text: ...``).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmsearch.errors import BadInput

MAX_TOP_K = 1000
MAX_OFFSET = 1000
MAX_TEXT_CHARS = 4096
MAX_FIELDS = 64
USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"  # (pydantic's regex: $ is the very end; Python checks use fullmatch)
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
Scene = Literal["text2text", "text2image", "image2image"]
ScoreType = Literal["cosine", "rerank", "fused"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_M = TypeVar("_M", bound=BaseModel)


class Query(_Model):
    """Exactly one of text and image_b64 (image2image takes an image, the others text)."""

    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="the query text")
    image_b64: str | None = Field(None, description="an encoded image (PNG, JPEG, WebP, GIF, SVG), base64 or a data: URL")


class SearchBody(_Model):
    """POST /v1/search."""

    scene: Scene
    query: Query
    user_id: str | None = Field(None, description="stable id for A/B assignment; empty or absent: one is assigned")
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description="hits per page; absent: the scene's default")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="hits to skip (paging: offset += top_k while has_more)")
    fields: list[str] | None = Field(None, max_length=MAX_FIELDS, description="document fields each hit returns; absent: all")
    filter: dict[str, Any] | None = Field(None, description=(
        'metadata filter over the fields the index stores, applied inside the vector search: {"category": "shoes"}, '
        '{"price": {"gte": 10, "lt": 50}}, {"tag": {"in": ["a", "b"]}}, {"and": [...]}, {"or": [...]}, {"not": {...}}'))
    force: dict[str, str] | None = Field(None, description='debug: {"layer": "arm"} pins experiment arms')
    consistency: Literal["strong", "bounded"] | None = Field(None, description=(
        "strong: the search sees every acknowledged write of the documents API (Milvus consistency level Strong); "
        "bounded (default): a write is seen within about a second"))


class ClickBody(_Model):
    """POST /v1/click: a result the user opened, for the query log and the A/B report."""

    request_id: str = Field(min_length=1, max_length=64)
    doc_id: str = Field(min_length=1, max_length=512)
    user_id: str | None = Field(None, pattern=USER_ID_PATTERN)


class EmbedBody(_Model):
    """POST /v1/embed: the vector a model gives a text or an image, preprocessed as search does."""

    model: str = Field(pattern=MODEL_NAME_PATTERN, description="a served embedding model (GET /v1/models lists them)")
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    image_b64: str | None = None


class Hit(_Model):
    id: str
    score: float
    score_type: ScoreType = Field(description="cosine: vector similarity; rerank: cross-encoder logit; fused: a fused rank score")
    sources: list[str] = Field(description="the recall paths that found this hit")
    doc: dict[str, Any] | None = Field(description="the stored document (the selected fields); null if it is gone")


class SearchResult(_Model):
    request_id: str
    user_id: str
    results: list[Hit]
    offset: int
    has_more: bool = Field(description="whether a next page (offset + len(results)) holds more hits")
    experiment: dict[str, str] = Field(description="layer -> arm that served this request")
    timings_ms: dict[str, float]
    config_version: str


class EmbedResult(_Model):
    model: str
    dim: int
    embedding: list[float]


class DocumentReject(_Model):
    """One reason a document of a batch was refused (the documents API)."""

    position: int = Field(description="the document's position in the batch, from 0")
    id: str | None = None
    field: str | None = Field(None, description="the field at fault")
    reason: str


class ErrorBody(_Model):
    error: str = Field(description="BadInput, TooLarge, NotFound, Unavailable, DeadlineExceeded, Overloaded, AlreadyExists, "
                                   "Unauthenticated, PermissionDenied or Internal")
    message: str
    dependency: str | None = None
    rejects: list[DocumentReject] | None = Field(None, description="a refused batch of documents: every bad one")


def validation_message(e: ValidationError, root: str = "body") -> str:
    """'a.b: what is wrong (got X)' for each problem, joined: the path first, as every refusal of ours."""
    out = []
    for x in e.errors():
        loc = ".".join(str(p) for p in x["loc"]) or root
        got = "" if x["type"] == "missing" else f" (got {_short(x.get('input'))})"
        out.append(f"{loc}: {x['msg']}{got}")
    return "; ".join(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(model: type[_M], data: Any, root: str = "body") -> _M:
    """Validate ``data`` into ``model``; BadInput naming the field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise BadInput(validation_message(e, root)) from e


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the retrieval service's HTTP API, generated from the models."""
    from pydantic.json_schema import models_json_schema

    from mmsearch.api.documents import DeleteDocumentsBody, IndexInfo, PutDocumentsBody, WriteResult

    models: list[type[BaseModel]] = [SearchBody, SearchResult, ClickBody, EmbedBody, EmbedResult, ErrorBody,
                                     PutDocumentsBody, DeleteDocumentsBody, WriteResult, IndexInfo]
    modes: list[Literal["validation", "serialization"]] = ["validation" if m.__name__.endswith("Body") else "serialization" for m in models]
    _, top = models_json_schema(list(zip(models, modes)),
                                ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    errors = {str(code): {"description": why, "content": {"application/json": {"schema": ref("ErrorBody")}}}
              for code, why in [(400, "bad input: the message names the field"), (401, "an API key is required and was missing or wrong"),
                                (404, "index or model not found"),
                                (429, "overloaded"), (503, "a dependency is down"), (504, "deadline exceeded")]}

    def post(summary: str, body: str, result: str | dict[str, Any]) -> dict[str, Any]:
        schema = ref(result) if isinstance(result, str) else result
        return {"post": {"summary": summary, "operationId": summary.partition(":")[0],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": ref(body)}}},
                         "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}, **errors}}}

    def get(summary: str, content_type: str = "application/json") -> dict[str, Any]:
        return {"get": {"summary": summary, "operationId": summary.partition(":")[0],
                        "responses": {"200": {"description": "ok", "content": {content_type: {"schema": {}}}},
                                      "503": {"description": "not ready"}}}}

    def path_param(name: str, what: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "description": what, "schema": {"type": "string"}}

    index_param = path_param("index", "the index (its alias): build-index made it")
    error_content = {"application/json": {"schema": ref("ErrorBody")}}
    write_errors = {**errors, **{str(code): {"description": why, "content": error_content} for code, why in [
        (403, "the key may only read: writes need a key of retrieval.write_api_keys"),
        (409, "op_id used before for a different request"), (413, "a batch, document or body over its limit")]}}

    def write(summary: str, body: str) -> dict[str, Any]:
        return {"summary": summary, "operationId": summary.partition(":")[0], "parameters": [index_param],
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref(body)}}},
                "responses": {"200": {"description": "written: acknowledged once vectors, terms and documents are durable",
                                      "content": {"application/json": {"schema": ref("WriteResult")}}}, **write_errors}}

    def read(summary: str, schema: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {"summary": summary, "operationId": summary.partition(":")[0], "parameters": params,
                        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}, **errors}}}

    documents_paths = {
        "/v1/indexes": read("indexes: every index with its model, dims, count, fields and builds",
                            {"type": "object", "properties": {"indexes": {"type": "array", "items": ref("IndexInfo")}}}, []),
        "/v1/indexes/{index}": read("index: one index's model, dims, count, fields and builds", ref("IndexInfo"), [index_param]),
        "/v1/indexes/{index}/documents": {
            "put": write("put_documents: upsert documents by id into the live build (all-or-nothing)", "PutDocumentsBody"),
            "delete": write("delete_documents: delete documents by ids or by a filter", "DeleteDocumentsBody"),
        },
        "/v1/indexes/{index}/documents/{id}": read(
            "get_document: a document of the live build, as stored",
            {"type": "object", "properties": {"index": {"type": "string"}, "id": {"type": "string"}, "document": {"type": "object"}}},
            [index_param, path_param("id", "the document id (percent-encoded)")]),
        "/v1/images/{ref}": {"get": {
            "summary": "image: an image a document was sent with inline (its image_blob), to show beside its hits",
            "operationId": "image", "parameters": [path_param("ref", "the document's image_blob: sha256:<64 hex digits>")],
            "responses": {"200": {"description": "the image (an SVG rendered to PNG); immutable, cached for good",
                                  "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in
                                              ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")}},
                          **errors}}},
    }

    return {
        "openapi": "3.1.0",
        "info": {"title": "mmsearch retrieval API", "version": "1",
                 "description": "Multimodal search: text->text, text->image, image->image, with A/B experiments; "
                                "the documents API adds, changes and deletes documents of an index's live build."},
        "paths": {
            "/v1/search": post("search: ranked hits for a text or image query", "SearchBody", "SearchResult"),
            "/v1/click": post("click: record that a user opened a hit", "ClickBody",
                              {"type": "object", "properties": {"ok": {"type": "boolean"}}}),
            "/v1/embed": post("embed: a model's vector for a text or an image", "EmbedBody", "EmbedResult"),
            "/v1/config": get("config: the live experiments config, its version and last rejection"),
            "/v1/models": get("models: the served models, their state and execution provider (CPU or CUDA)"),
            "/healthz": get("healthz: the process answers"),
            "/readyz": get("readyz: every dependency and served index is ready"),
            "/metrics": get("metrics: Prometheus exposition", "text/plain"),
            "/openapi.json": get("openapi: this document"),
            **documents_paths,
        },
        "components": {"schemas": schemas},
    }
