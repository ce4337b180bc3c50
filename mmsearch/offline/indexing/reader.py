"""Documents (JSON Lines: docs/architecture.md, "Documents") -> validated items, or rejects naming the line and reason."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.api.documents import BLOB_FIELD, ID_MAX

MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_BYTES = 20 * 1024 * 1024
URL_TIMEOUT_S = 10.0


@dataclass
class Doc:
    line: int
    id: str
    doc: dict[str, Any]  # what goes to MongoDB (_id set)
    source: Any  # text (str) or image reference (str path/URL)
    payload: Any = None  # after loading: text, or preprocessed pixels


@dataclass
class Reject:
    line: int
    reason: str
    raw: str = ""

    def as_json(self) -> str:
        return json.dumps({"line": self.line, "reason": self.reason, "raw": self.raw[:2000]}, ensure_ascii=False)


@dataclass
class ReaderState:
    seen: dict[str, int] = field(default_factory=dict)  # id -> first line (duplicate detection)


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return n


def parse_line(n: int, raw: bytes, field_name: str, state: ReaderState) -> Doc | Reject | None:
    """One JSONL line; None for blank lines. Every reject names the line and the reason."""
    import bson
    from bson.errors import InvalidDocument

    if len(raw) > MAX_LINE_BYTES:
        return Reject(n, f"line is {len(raw):,} bytes, over the {MAX_LINE_BYTES:,}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reject(n, f"invalid UTF-8 at byte {e.start}", raw[:200].decode("utf-8", "replace"))
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return Reject(n, f"malformed JSON: {e.msg} at column {e.colno}", text)
    if not isinstance(obj, dict):
        return Reject(n, f"expected a JSON object, got {type(obj).__name__}", text)
    doc_id = obj.get("id")
    if doc_id is None or doc_id == "":
        return Reject(n, "missing id", text)
    if not isinstance(doc_id, str):
        return Reject(n, f"id must be a string, got {type(doc_id).__name__}", text)
    if len(doc_id.encode("utf-8")) > ID_MAX:
        return Reject(n, f"id is longer than {ID_MAX} bytes", text)
    if doc_id in state.seen:
        return Reject(n, f"duplicate id {doc_id!r} (first on line {state.seen[doc_id]})", text)
    source = obj.get(field_name)
    if field_name == "image" and source is None and isinstance(obj.get(BLOB_FIELD), str):
        source = obj[BLOB_FIELD]  # an image sent inline to the documents API, kept in the blob store (a held-documents export)
    if source is None or (isinstance(source, str) and not source.strip()):
        return Reject(n, f"no {field_name}", text)
    if not isinstance(source, str):
        return Reject(n, f"{field_name} must be a string, got {type(source).__name__}", text)
    doc = {k: v for k, v in obj.items() if k != "_id"}
    doc["_id"] = doc_id
    try:
        bson.encode(doc)
    except (InvalidDocument, OverflowError) as e:
        return Reject(n, f"not storable in MongoDB: {e}", text)
    state.seen[doc_id] = n
    return Doc(n, doc_id, doc, source)


def iter_lines(path: Path, start_line: int = 0) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw bytes) for lines after ``start_line``."""
    for n, _start, _end, raw in iter_lines_at(path, start_line):
        yield n, raw


def iter_lines_at(path: Path, start_line: int = 0) -> Iterator[tuple[int, int, int, bytes]]:
    """(line number from 1, byte offset of the line, byte offset after it, raw bytes) for lines after
    ``start_line``: a distributed build's workers read their block of lines by these offsets."""
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            end = offset + len(raw)
            if n > start_line:
                yield n, offset, end, raw.rstrip(b"\r\n")
            offset = end


def read_lines_at(path: Path, start: int, end: int, first_line: int) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of the lines between two byte offsets, the first of them numbered ``first_line``."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")  # as iterating the file in binary does: \n only (not bytes.splitlines' \r)
    if lines and lines[-1] == b"":
        lines.pop()
    for i, raw in enumerate(lines):
        yield first_line + i, raw.rstrip(b"\r\n")


def read_image_bytes(ref: str, image_root: Path, short_edge: int | None = None) -> bytes:
    """Bytes of a local image under image_root (never escaping it) or an http(s) URL (timeout, size limit);
    a local SVG rendered with the given short edge (the encoder's ``render_edge``)."""
    from mmsearch.errors import BadInput

    if ref.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(urllib.request.Request(ref, headers={"User-Agent": "mmsearch"}),
                                        timeout=URL_TIMEOUT_S) as r:
                data = r.read(MAX_IMAGE_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise BadInput(f"cannot fetch image {ref}: {getattr(e, 'reason', e)}") from e
        if len(data) > MAX_IMAGE_BYTES:
            raise BadInput(f"image {ref} is over the {MAX_IMAGE_BYTES:,}-byte limit")
        return data
    if "://" in ref:
        raise BadInput(f"image {ref!r}: only relative paths and http(s) URLs are accepted")
    from mmsearch.encoders.image_files import read_local_image

    try:
        return read_local_image(ref, image_root, MAX_IMAGE_BYTES, short_edge)
    except BadInput as e:
        raise BadInput(e.message.replace("the image root", "--image-root")) from e
