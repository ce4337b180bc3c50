"""The pipeline's typed result and per-request state; each front end serialises the response itself."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mmsearch.api.models import ScoreType
from mmsearch.errors import Overloaded, Unauthenticated, error_body, http_status, retry_after_headers


@dataclass(frozen=True)
class Hit:
    """One result: which document, the score it carries and what kind of score that is."""

    id: str
    score: float
    score_type: ScoreType = "cosine"
    sources: tuple[str, ...] = ("vector",)  # which recall paths found it
    doc: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "score_type": self.score_type, "sources": list(self.sources), "doc": self.doc}


@dataclass(frozen=True)
class SearchResponse:
    request_id: str
    user_id: str
    hits: list[Hit]
    experiment: dict[str, str]  # layer -> arm that served this request
    timings_ms: dict[str, float]
    config_version: str
    offset: int = 0
    has_more: bool = False

    def to_json(self) -> dict[str, Any]:
        """The HTTP body of POST /v1/search: api_models.SearchResult (GET /openapi.json)."""
        return {"request_id": self.request_id, "user_id": self.user_id, "results": [h.to_json() for h in self.hits],
                "offset": self.offset, "has_more": self.has_more,
                "experiment": dict(self.experiment), "timings_ms": dict(self.timings_ms),
                "config_version": self.config_version}


@dataclass
class RequestContext:
    """What travels with one request through the stages: its deadline, timings and metric labels."""

    scene: str
    arm_label: str
    timeout_s: float
    deadline: float = 0.0  # time.monotonic() after which no stage starts
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds (summed over calls)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)  # fused sources run in parallel

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.timeout_s

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def add_time(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds * 1000


def json_bytes(value: Any) -> bytes:
    """JSON as both front ends write a search's results (the HTTP body, gRPC's doc_json): UTF-8, compact.
    orjson writes a search body in a tenth of json.dumps's time (0.08 ms of a search's WSGI time, measured
    in-process); it writes NaN and infinities as null (JSON has neither) and dates as RFC 3339 text. What
    it refuses (an integer over 64 bits, a key that is not a string, a lone surrogate) the standard library
    writes, with everything else as orjson writes it, so nothing a document holds is lost or written two
    ways. A type neither knows (bytes, say) stays an error, as it was."""
    try:
        return orjson.dumps(value)
    except TypeError:  # (orjson.JSONEncodeError is one)
        return json.dumps(_as_orjson_writes(value), separators=(",", ":"), allow_nan=False).encode()


def _as_orjson_writes(v: Any) -> Any:
    """The value in the standard library's types, each part as orjson would write it."""
    if isinstance(v, dict):
        return {k: _as_orjson_writes(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_as_orjson_writes(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (str, int)):
        return v
    return orjson.loads(orjson.dumps(v))  # a date, UUID, enum, dataclass; TypeError for what orjson cannot write


class HitDocs:
    """Documents that came back beside a search's hits, by id. Each is kept as its stored JSON text and
    parsed when read: a page shows 20 of the 100 hits a recall may bring, and parsing all of them cost a
    query about 0.15 ms. Documents read from MongoDB join with update()."""

    def __init__(self) -> None:
        self._raw: dict[str, str] = {}
        self._docs: dict[str, dict[str, Any]] = {}

    def put_raw(self, doc_id: str, raw: str) -> None:
        self._raw[doc_id] = raw

    def update(self, docs: Mapping[str, dict[str, Any]]) -> None:
        self._docs.update(docs)

    def get(self, doc_id: str) -> dict[str, Any] | None:
        doc = self._docs.get(doc_id)
        if doc is None and doc_id in self._raw:
            doc = self._docs[doc_id] = json.loads(self._raw.pop(doc_id))
        return doc

    def __getitem__(self, doc_id: str) -> dict[str, Any]:
        doc = self.get(doc_id)
        if doc is None:
            raise KeyError(doc_id)
        return doc

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._docs or doc_id in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter([*self._docs, *self._raw])

    def __len__(self) -> int:
        return len(self._docs) + len(self._raw)


def error_response(e: BaseException) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and JSON body of an error: the same from the API's Flask routes, its search path
    and the admission gate in front of it."""
    headers = {"Content-Type": "application/json"}
    if isinstance(e, Overloaded):  # when to come back: admission control's estimate of its queue's drain time
        headers.update(retry_after_headers(e))
    if isinstance(e, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="mmsearch"'
    return http_status(e), headers, json_bytes(error_body(e))
