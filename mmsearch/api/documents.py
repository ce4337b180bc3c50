"""The documents API's contract (issue 33): request and answer models, and the validation of a batch.

A batch is all-or-nothing: every document is checked first, against the live build's schema (its
embedded field, stored fields, lexical fields), and one bad document refuses the whole batch with
a list naming each bad document (its position in the batch, its id, the field and the reason), so
nothing of a rejected document — nor of its batch — is written. The same per-document rules as
``build-index`` apply (the build's reader and this module share them), so a line the build
rejects is a document the API rejects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from mmsearch.api.filters import check_value
from mmsearch.api.models import DocumentReject, _Model
from mmsearch.errors import BadInput, TooLarge

ID_MAX = 512  # bytes of a document id (Milvus VARCHAR primary key)
META_KEY = "_mmsearch"  # kept beside a document in the store: {"hash": <sha256 of its embedded content>}; never returned
RESERVED_KEYS = frozenset({"_id", META_KEY})
OP_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
IMAGE_B64 = "image_b64"  # an image index's document may carry its image inline instead of a path under the image root
BLOB_FIELD = "image_blob"  # where an inline image is kept (clients/blobs.py): "sha256:<hex>"; a GET returns it, a PUT may send it back
BLOB_REF = re.compile(r"sha256:[0-9a-f]{64}")  # what a kept image's reference looks like


# how a kept image is answered, by the API and the page alike: its reference is its content's hash, so it never changes
IMMUTABLE_IMAGE_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
MAX_LISTED = 20  # bad documents named in the error message (all of them are in its ``rejects``)


def is_blob_ref(value: object) -> bool:
    return isinstance(value, str) and BLOB_REF.fullmatch(value) is not None


class PutDocumentsBody(_Model):
    """PUT /v1/indexes/{index}/documents: upsert by id, all-or-nothing."""

    documents: list[Any] = Field(description="documents in build-index's JSON Lines shape: id, text (or image / image_b64 / "
                                             "image_blob, the reference a GET returns for an image sent inline), "
                                             "stored and lexical fields of the live build, anything else")
    op_id: str | None = Field(None, pattern=OP_ID_PATTERN, description="idempotency key: the same op_id sent again is not applied again")


class DeleteDocumentsBody(_Model):
    """DELETE /v1/indexes/{index}/documents: by ids or by a filter over the stored fields (one of them)."""

    ids: list[str] | None = Field(None, description="document ids; ids not in the index are counted as not_found")
    filter: dict[str, Any] | None = Field(None, description="the search filter language (docs/architecture.md, Search API)")
    op_id: str | None = Field(None, pattern=OP_ID_PATTERN)


class WriteResult(_Model):
    index: str
    build: str = Field(description="the live build written")
    op: Literal["put", "delete"]
    op_id: str | None = None
    written: int = Field(0, description="documents upserted")
    encoded: int = Field(0, description="documents whose embedded content changed (or was new), so were encoded")
    unchanged: int = Field(0, description="documents whose embedded content was unchanged: their vectors were kept, no inference")
    deleted: int = 0
    not_found: int = Field(0, description="ids to delete that the index did not hold")
    replayed: bool = Field(False, description="this op_id was applied before: nothing was written now, the first answer is returned")
    took_ms: float = 0.0


class IndexInfo(_Model):
    index: str
    live_build: str | None
    model: str | None
    model_version: str | None = Field(None, description="the model's manifest hash where the build recorded it or the repository has it")
    dim: int | None
    modality: str | None
    count: int | None = Field(description="documents in the live build")
    fields: dict[str, str] = Field(description="stored fields (filters): name -> str|int|float|bool")
    lexical: list[str] = Field(description="text fields indexed for BM25")
    stored_docs: int = Field(0, description="documents up to this many bytes are kept beside their vectors")
    image_root: str | None = None
    builds: list[dict[str, Any]] = Field(description="every build: build, status, live, indexed, started, finished")


def titled_text(doc: dict[str, Any], text: str, title_field: str | None) -> str:
    """What a text document's vector embeds: its text, or (a build made with --embed-title) "<title>: <text>"
    when it has that field. Every writer of vectors (build-index, the distributed build, the documents API,
    reindex) embeds through this, so a document written any way gets the same vector."""
    title = doc.get(title_field) if title_field else None
    if isinstance(title, str) and title.strip():
        return f"{title.strip()}: {text}"
    return text


@dataclass(frozen=True)
class IndexSchema:
    """What a write to an index must respect: its live build's record (``_builds``)."""

    index: str
    build: str
    model: str
    modality: str  # text | image
    dim: int
    fields: dict[str, str] = field(default_factory=dict)
    lexical: list[str] = field(default_factory=list)
    stored_docs: int = 0
    image_root: str | None = None
    embed_title: str | None = None  # the build embeds "<title>: <text>" from this field (build-index --embed-title)

    @property
    def embedded(self) -> str:
        """The field a document's vector is computed from."""
        return "image" if self.modality == "image" else "text"


@dataclass
class ValidDocument:
    position: int
    id: str
    doc: dict[str, Any]  # as the store keeps it: _id set, no image_b64
    source: str | None  # the text, or the image path; None for an inline image
    image: bytes | None = None  # an inline image, decoded
    blob: str | None = None  # the stored inline image it names (image_blob sent back as a GET returned it)
    hash: str = ""  # of the embedded content (set when the content is read: a path's bytes are read later)


def make_reject(position: int, doc_id: Any, fld: str | None, reason: str) -> dict[str, Any]:
    return DocumentReject(position=position, id=doc_id if isinstance(doc_id, str) else None, field=fld, reason=reason).model_dump()


def _where(r: dict[str, Any]) -> str:
    ident = f" (id {r['id']!r})" if r.get("id") else ""
    return f"documents[{r['position']}]{ident}" + (f".{r['field']}" if r.get("field") else "") + f": {r['reason']}"


def _bad(rejects: list[dict[str, Any]]) -> int:
    return len({r["position"] for r in rejects})  # (a document may have several reasons)


class DocumentsRejected(BadInput):
    """A batch refused whole (400); ``rejects``: every bad document."""

    def __init__(self, rejects: list[dict[str, Any]], total: int) -> None:
        listed = "; ".join(_where(r) for r in rejects[:MAX_LISTED])
        more = f"; and {len(rejects) - MAX_LISTED} more" if len(rejects) > MAX_LISTED else ""
        super().__init__(f"{_bad(rejects)} of {total} documents rejected, nothing written: {listed}{more}")
        self.rejects = rejects


class DocumentsTooLarge(TooLarge):
    """A batch refused whole because a document is over the size limit (413); ``rejects`` as above."""

    def __init__(self, rejects: list[dict[str, Any]], total: int) -> None:
        listed = "; ".join(_where(r) for r in rejects[:MAX_LISTED])
        super().__init__(f"{_bad(rejects)} of {total} documents rejected, nothing written: {listed}")
        self.rejects = rejects


def id_problem(doc_id: Any) -> str | None:
    if doc_id is None or doc_id == "":
        return "missing id"
    if not isinstance(doc_id, str):
        return f"id must be a string, got {type(doc_id).__name__}"
    if len(doc_id.encode("utf-8", "surrogatepass")) > ID_MAX:
        return f"id is longer than {ID_MAX} bytes"
    return None


def stored_field_problem(doc: dict[str, Any], name: str, ftype: str) -> str | None:
    """A stored field must be present with a value of its type (a filter on it must mean what it says);
    a float field's int value is stored as a float (in ``doc``)."""
    if name not in doc or doc[name] is None:
        return f"missing field {name} (stored for filters, type {ftype})"
    try:
        doc[name] = check_value(name, ftype, doc[name], f"field {name}")
    except BadInput as e:
        return e.message
    return None


def lexical_problem(doc: dict[str, Any], name: str) -> str | None:
    """A lexical field may be absent (an image without a caption) but, when present, must be text."""
    v = doc.get(name)
    if v is not None and not isinstance(v, str):
        return f"lexical field {name}: must be a string, got {type(v).__name__}"
    return None


def content_hash(model: str, embedded: str, content: str | bytes) -> str:
    """What a document's vector depends on: the model and its embedded content (text, or image bytes)."""
    h = hashlib.sha256(f"{model}\0{embedded}\0".encode())
    h.update(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return h.hexdigest()


def _size(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "surrogatepass"))


def validate_documents(items: Any, schema: IndexSchema, max_docs: int, max_doc_bytes: int,
                       max_image_bytes: int) -> list[ValidDocument]:
    """Every document of a batch checked; the valid ones in order, or DocumentsRejected (400) /
    DocumentsTooLarge (413, when any document is over ``max_doc_bytes``) naming every bad one."""
    import bson
    from bson.errors import InvalidDocument

    if not isinstance(items, list):
        raise BadInput(f"documents: expected a list, got {type(items).__name__}")
    if not items:
        raise BadInput("documents: empty (nothing to write)")
    if len(items) > max_docs:
        raise TooLarge(f"documents: {len(items):,} documents, over the batch limit of {max_docs:,} (send smaller batches)")
    rejects: list[dict[str, Any]] = []
    too_large = False
    seen: dict[str, int] = {}
    out: list[ValidDocument] = []
    emb = schema.embedded
    for pos, obj in enumerate(items):
        if not isinstance(obj, dict):
            rejects.append(make_reject(pos, None, None, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        doc_id = obj.get("id")
        bad = id_problem(doc_id)
        if bad or not isinstance(doc_id, str):
            rejects.append(make_reject(pos, doc_id, "id", bad or "id must be a string"))
            continue
        size = _size(obj)
        if size > max_doc_bytes:
            too_large = True
            rejects.append(make_reject(pos, doc_id, None, f"{size:,} bytes, over the {max_doc_bytes:,}-byte document limit"))
            continue
        if doc_id in seen:
            rejects.append(make_reject(pos, doc_id, "id", f"duplicate id (also documents[{seen[doc_id]}])"))
            continue
        seen[doc_id] = pos
        problems: list[tuple[str | None, str]] = [(k, "reserved field name") for k in obj if k in RESERVED_KEYS]
        doc = {k: v for k, v in obj.items() if k not in RESERVED_KEYS and k != IMAGE_B64}
        source: str | None = None
        image: bytes | None = None
        blob: str | None = None
        inline = obj.get(IMAGE_B64)
        if emb == "image" and inline is not None:
            if obj.get("image") is not None:
                problems.append((IMAGE_B64, "give image (a path under the image root) or image_b64, not both"))
            elif not isinstance(inline, str):
                problems.append((IMAGE_B64, f"must be a base64 string, got {type(inline).__name__}"))
            else:
                try:
                    image = base64.b64decode(inline.split(",", 1)[1] if inline.startswith("data:") else inline, validate=True)
                except (binascii.Error, ValueError) as e:
                    problems.append((IMAGE_B64, f"not valid base64 ({e})"))
                else:
                    if not image:
                        problems.append((IMAGE_B64, "empty"))
                    elif len(image) > max_image_bytes:
                        too_large = True
                        problems.append((IMAGE_B64, f"{len(image):,} bytes, over the {max_image_bytes:,}-byte image limit"))
            doc.pop(BLOB_FIELD, None)  # (set to this image's when it is kept)
        elif inline is not None:
            problems.append((IMAGE_B64, f"index {schema.index} encodes text: inline images apply to image indexes"))
        elif emb == "image" and obj.get("image") is None and obj.get(BLOB_FIELD) is not None:
            ref = obj[BLOB_FIELD]
            if not is_blob_ref(ref):
                problems.append((BLOB_FIELD, "must be a stored image's reference (sha256:<64 hex>), as a GET of the document returns it"))
            else:
                blob = ref
        else:
            if emb == "image":
                doc.pop(BLOB_FIELD, None)  # (a path given: the stored inline image no longer applies)
            value = obj.get(emb)
            if value is None or (isinstance(value, str) and not value.strip()):
                problems.append((emb, f"missing {emb} (the embedded field of index {schema.index})"))
            elif not isinstance(value, str):
                problems.append((emb, f"must be a string, got {type(value).__name__}"))
            elif emb == "image" and ("://" in value or value.startswith(("/", "\\"))):
                problems.append((emb, "a relative path under the index's image root (URLs and absolute paths are refused; "
                                      "send image_b64 for an image from elsewhere)"))
            else:
                source = value
        for name, ftype in schema.fields.items():
            bad = stored_field_problem(doc, name, ftype)
            if bad:
                problems.append((name, bad.removeprefix(f"field {name}: ")))  # (the field is named in the reject's path)
        for name in schema.lexical:
            bad = None if any(f == name for f, _ in problems) else lexical_problem(doc, name)  # (one reason per field)
            if bad:
                problems.append((name, bad))
        doc["_id"] = doc_id
        if not problems:
            try:
                bson.encode(doc)
            except (InvalidDocument, OverflowError) as e:
                problems.append((None, f"not storable in MongoDB: {e}"))
        if problems:
            rejects.extend(make_reject(pos, doc_id, f, r) for f, r in problems)
            continue
        v = ValidDocument(pos, doc_id, doc, source, image, blob)
        if image is not None:
            v.hash = content_hash(schema.model, emb, image)
        elif emb == "text" and source is not None:  # what the vector embeds: a title change is a content change
            v.hash = content_hash(schema.model, emb, titled_text(doc, source, schema.embed_title))
        out.append(v)
    if rejects:
        raise (DocumentsTooLarge if too_large else DocumentsRejected)(rejects, len(items))
    return out


def check_ids(ids: Any, max_docs: int) -> list[str]:
    """The ids of a delete: strings, at most ``max_docs``; repeats are dropped."""
    if not isinstance(ids, list) or not ids:
        raise BadInput("ids: expected a non-empty list of document ids")
    if len(ids) > max_docs:
        raise TooLarge(f"ids: {len(ids):,} ids, over the batch limit of {max_docs:,}")
    for i, x in enumerate(ids):
        bad = id_problem(x)
        if bad:
            raise BadInput(f"ids[{i}]: {bad}")
    return list(dict.fromkeys(ids))


def public(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored document as the API returns it: without MongoDB's _id and our bookkeeping."""
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if k not in RESERVED_KEYS}
