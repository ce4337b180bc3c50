"""Vectors in Milvus (Milvus Lite file, Milvus Lite server, or a Milvus cluster: same client).

A collection per index build, ``<index>__<build>`` (``id`` VARCHAR primary key, ``embedding``
FLOAT_VECTOR, COSINE), and an alias ``<index>`` on the live build so a re-index switches
atomically and can be rolled back. Every pymilvus error is wrapped where it meets us:
unreachable -> ``Unavailable("milvus at <uri>")``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from mmsearch.api.documents import ID_MAX
from mmsearch.api.filters import DOC_FIELD, MAX_STR, quote
from mmsearch.errors import BadInput, DeadlineExceeded, Internal, MMSearchError, NotFound, Overloaded, Unavailable, from_grpc_status
from mmsearch.runtime.deadline import call_timeout

T = TypeVar("T")

BUILD_SEP = "__"
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")


def check_index_name(name: str) -> str:
    if not NAME_RE.match(name or "") or BUILD_SEP in name:
        raise BadInput(f"index name {name!r} is invalid: letters, digits and single '_' (no '__'), starting with a letter")
    return name


def collection_name(index: str, build: str) -> str:
    return f"{index}{BUILD_SEP}{build}"


class _DropUnimplemented(logging.Filter):
    """Embedded Milvus Lite runs an in-process gRPC server that logs a traceback whenever pymilvus
    probes an RPC it does not implement (AllocTimestamp); the call itself succeeds. Drop only that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage()


logging.getLogger("grpc._server").addFilter(_DropUnimplemented())


# Milvus status codes (milvus-proto common.proto ErrorCode / merr): what each means for us.
_MILVUS_NOT_FOUND = {100, 700}  # CollectionNotFound (collections and aliases alike), IndexNotFound
_MILVUS_UNAVAILABLE = {2}  # pymilvus: "Fail connecting to server"
_MILVUS_LOADING = {101}  # CollectionNotLoaded: released, or reloading after a restart
_MILVUS_OVERLOADED = {8}  # RateLimit


def _translate(e: Exception, dependency: str, what: str) -> MMSearchError:
    """pymilvus and gRPC errors onto our hierarchy, by exception type and status code only."""
    import grpc
    from pymilvus.exceptions import ConnectError, ConnectionNotExistException, MilvusException, MilvusUnavailableException, ParamError

    if isinstance(e, (ConnectError, ConnectionNotExistException, MilvusUnavailableException, ConnectionError)):
        return Unavailable(dependency, str(e))
    if isinstance(e, grpc.RpcError):
        return from_grpc_status(e.code() if hasattr(e, "code") else None, f"{what} failed: {e}", dependency)
    if isinstance(e, ParamError):
        return BadInput(f"{dependency}: {what}: {getattr(e, 'message', e)}")
    if isinstance(e, MilvusException):
        code, msg = getattr(e, "code", None), getattr(e, "message", str(e))
        if code in _MILVUS_NOT_FOUND:
            return NotFound(f"{dependency}: {msg}")
        if code in _MILVUS_UNAVAILABLE:
            return Unavailable(dependency, msg)
        if code in _MILVUS_LOADING:
            return IndexLoading(dependency, msg)
        if code in _MILVUS_OVERLOADED:
            return Overloaded(f"{dependency}: {msg}")
        return Internal(f"{dependency}: {what} failed: {msg}")
    return Internal(f"{dependency}: {what} failed: {e}")


IndexType = Literal["HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "FLAT", "AUTOINDEX"]
IVF_TYPES = ("IVF_FLAT", "IVF_SQ8", "IVF_PQ")


@dataclass(frozen=True)
class IndexSpec:
    """How a build's vectors are indexed and searched (config ``milvus.*``, recorded on each build;
    ``search_ef`` may be overridden per experiment arm).

    The compressed types keep a code per vector instead of its floats: IVF_SQ8 one byte per dimension
    (4x smaller), IVF_PQ ``ivf_pq_m`` codes of ``ivf_pq_nbits`` bits (``dim`` must be a multiple of
    ``ivf_pq_m``; 384-d with m 48: 48 bytes, 32x smaller). Both search ``nprobe`` of ``ivf_nlist``
    lists, as IVF_FLAT does. Milvus 2.3.5: nlist 1..65536, nbits 1..16."""

    index_type: IndexType = "HNSW"
    metric: Literal["COSINE", "IP"] = "COSINE"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    ivf_nlist: int = 1024
    # HNSW: candidates kept while searching (>= top_k); IVF: nprobe. 512 was measured on the demo (docs/architecture.md,
    # "Index and search"): the dense arm's recall@10 against exact 0.972 -> 0.994, but the default arm's 100-deep recall
    # searches four times the graph (p50 +4-5 ms) for no held-out gain (nDCG@10 0.611 both): an arm may set its own
    search_ef: int = 128
    stored_doc_max_bytes: int = 4096  # documents up to this size are kept beside the vectors (0: none; see DOC_FIELD)
    ivf_pq_m: int = 48  # IVF_PQ: sub-vectors (codes) per vector; must divide the dimension
    ivf_pq_nbits: int = 8  # IVF_PQ: bits per code (2^nbits centroids per sub-space)

    def __post_init__(self) -> None:
        if self.index_type not in ("HNSW", *IVF_TYPES, "FLAT", "AUTOINDEX"):
            raise BadInput(f"index type {self.index_type!r} is not one of HNSW, {', '.join(IVF_TYPES)}, FLAT, AUTOINDEX")
        if self.index_type in IVF_TYPES and not 1 <= self.ivf_nlist <= 65536:
            raise BadInput(f"{self.index_type}: ivf_nlist {self.ivf_nlist} is outside 1..65536")
        if self.index_type == "IVF_PQ" and not (1 <= self.ivf_pq_nbits <= 16 and self.ivf_pq_m >= 1):
            raise BadInput(f"IVF_PQ: ivf_pq_m must be >= 1 and ivf_pq_nbits within 1..16 (got m {self.ivf_pq_m}, "
                           f"nbits {self.ivf_pq_nbits})")
        if self.index_type == "HNSW" and not (2 <= self.hnsw_m <= 2048 and self.hnsw_ef_construction >= 1):
            raise BadInput(f"HNSW: hnsw_m {self.hnsw_m} outside 2..2048 or hnsw_ef_construction {self.hnsw_ef_construction} < 1")
        if self.search_ef < 1:
            raise BadInput(f"search_ef {self.search_ef} must be >= 1")

    def check_dim(self, dim: int) -> None:
        """The spec can index ``dim``-d vectors (IVF_PQ: its m divides the dimension), else BadInput."""
        if self.index_type == "IVF_PQ" and dim % self.ivf_pq_m:
            raise BadInput(f"IVF_PQ: ivf_pq_m {self.ivf_pq_m} does not divide the model's dimension {dim} "
                           f"(divisors up to 96: {', '.join(str(d) for d in range(1, min(dim, 96) + 1) if dim % d == 0)})")

    def index_params(self) -> dict[str, int]:
        if self.index_type == "HNSW":
            return {"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}
        if self.index_type in ("IVF_FLAT", "IVF_SQ8"):
            return {"nlist": self.ivf_nlist}
        if self.index_type == "IVF_PQ":
            return {"nlist": self.ivf_nlist, "m": self.ivf_pq_m, "nbits": self.ivf_pq_nbits}
        return {}

    def search_params(self, top_k: int, ef: int | None = None, breadth: int = 0) -> dict[str, int]:
        ef = ef or self.search_ef
        if self.index_type == "HNSW":
            return {"ef": max(ef, top_k, breadth)}  # Milvus refuses ef < limit
        if self.index_type in IVF_TYPES:
            return {"nprobe": min(ef, self.ivf_nlist)}
        return {}

    def code_bytes(self, dim: int) -> float:
        """Theoretical bytes the index keeps per vector: its code plus graph links (HNSW: about 2M links of
        4 bytes on the base layer), not counting the lists' centroids or the id."""
        if self.index_type == "HNSW":
            return 4.0 * dim + 8.0 * self.hnsw_m
        if self.index_type == "IVF_SQ8":
            return float(dim)
        if self.index_type == "IVF_PQ":
            return self.ivf_pq_m * self.ivf_pq_nbits / 8.0
        return 4.0 * dim  # FLAT, IVF_FLAT (and AUTOINDEX, unknown: as raw floats)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def index_spec(milvus: Any) -> IndexSpec:
    """The IndexSpec a ``config.milvus`` section asks for."""
    return IndexSpec(index_type=milvus.index_type, metric="COSINE", hnsw_m=milvus.hnsw_m, hnsw_ef_construction=milvus.hnsw_ef_construction,
                     ivf_nlist=milvus.ivf_nlist, search_ef=milvus.search_ef, stored_doc_max_bytes=milvus.stored_doc_max_bytes,
                     ivf_pq_m=milvus.ivf_pq_m, ivf_pq_nbits=milvus.ivf_pq_nbits)


class IndexLoading(Unavailable):
    """The index exists but Milvus is still loading it into memory (503; retry shortly)."""


BRUTE_FORCE_OK_ROWS = 10_000  # below this, seal() does not wait for the indexed segments to replace growing ones
MILVUS_MIN_INDEXED_SEGMENT_ROWS = 1024  # Milvus 2.3 indexNode.minSegmentNumRowsToEnableIndex: smaller ones stay brute force


def _parse_version(text: object) -> tuple[int, int, int] | None:
    """'v2.3.5', '2.6.15', 'v2.6.15-gpu' -> (2, 6, 15); anything else (Milvus Lite's own strings) -> None."""
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", str(text or "").strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


class MilvusFeatures:
    """Where the Milvus servers this client meets differ, in one place (docs/architecture.md, "Milvus 2.3 and 2.6").

    Detected once per store from ``get_server_version()``. Everything else the client calls (collections,
    aliases, upsert/query/search, ``describe_index``'s indexed_rows and pending_index_rows, ``get_load_state``,
    ``load_collection``, ``flush``, merr status codes) is the same on 2.3.5 and 2.6. The difference is what
    a query node does with rows not yet covered by a built index:
    - 2.3 (the embedded server, its interim index off): they are searched brute force until the index
      checker hands the indexed sealed segments over, 10-20 s after the build; ``seal()`` waits for that
      through the loaded segments' index ids (``list_loaded_segments``, a 2.3 segment detail);
    - 2.5+ (2.6 in production): ``queryNode.segcore.interimIndex.enableIndex`` is on by default (2.6's
      configuration reference), so growing and unindexed sealed segments are searched through a temporary
      index: a Bounded count that sees every row is enough, and segment internals are never read.
    An unknown version (Milvus Lite, a server that does not answer) takes the 2.5+ path, which needs
    nothing beyond the calls both versions share."""

    INTERIM_INDEX_SINCE = (2, 5, 0)

    def __init__(self, version: tuple[int, int, int] | None, text: str = ""):
        self.version = version
        self.text = text

    @classmethod
    def detect(cls, client: Any) -> "MilvusFeatures":
        try:
            text = str(client.get_server_version())
        except Exception:  # noqa: BLE001 - a server or Milvus Lite without GetVersion: unknown, the shared path
            return cls(None)
        return cls(_parse_version(text), text)

    @property
    def waits_for_segment_handoff(self) -> bool:
        """Whether seal() must watch loaded segments' index ids (2.3 and 2.4 without the interim index)."""
        return self.version is not None and self.version < self.INTERIM_INDEX_SINCE

    def index_serving(self, store: "VectorStore", collection: str, expected: int) -> bool:
        """Whether searches of ``collection`` run through an index (built or interim) for all ``expected`` rows."""
        if not self.waits_for_segment_handoff:
            return True
        segments = store._call("list loaded segments", store.client.list_loaded_segments, collection)
        rows = sum(int(s.num_rows) for s in segments if s.index_id or int(s.num_rows) < MILVUS_MIN_INDEXED_SEGMENT_ROWS)
        return rows >= expected
STRONG = {"consistency_level": "Strong"}  # bookkeeping reads must see every write; searches stay Bounded
FIELDS_TTL_S = 5.0
# Each hit's document, stored beside its vector (JSON) by builds that record stored_docs (its byte limit,
# IndexSpec.stored_doc_max_bytes): a search returns the page's documents itself, so the read path needs no
# MongoDB round trip. A document over the limit is stored empty and read from MongoDB, as are all documents
# of a search deeper than DOCS_MAX_HITS (its answer would carry them all).
DOCS_MAX_HITS = 1024
_MILVUS_TYPES = {"str": "VARCHAR", "int": "INT64", "float": "DOUBLE", "bool": "BOOL"}  # metadata field types


class RawDocSink(Protocol):
    """Where a search puts the documents stored beside its hits (the retrieval service's per-request
    ``HitDocs``): each as its stored JSON text, by id."""

    def put_raw(self, doc_id: str, raw: str) -> None: ...


class VectorStore:
    def __init__(self, uri: str, timeout_s: float = 30.0, spec: IndexSpec | None = None):
        """``uri``: a local ``.db`` file path (embedded Milvus Lite) or ``http://host:port``."""
        from pymilvus import MilvusClient

        self.uri = uri
        self.timeout_s = timeout_s
        self.spec = spec or IndexSpec()
        self.dependency = f"milvus at {uri}"
        self._loaded: set[str] = set()
        self._fields: dict[str, tuple[float, dict[str, str], bool]] = {}  # name -> (when, fields, stores docs)
        self._features: MilvusFeatures | None = None
        if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
            try:  # a local file is Milvus Lite, in-process: the `embedded` extra
                import milvus_lite  # noqa: F401
            except ImportError as e:
                from mmsearch.runtime.embedded import missing_extra

                raise missing_extra(self.dependency, "milvus-lite") from e
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MilvusClient(uri=uri, timeout=timeout_s)
            self.client.list_collections()
        except Exception as e:  # pymilvus raises MilvusException and grpc/OS errors alike
            raise Unavailable(self.dependency, str(e).splitlines()[0] if str(e) else type(e).__name__) from e

    @property
    def features(self) -> MilvusFeatures:
        """What this server's version does differently (asked once, on first need)."""
        if self._features is None:
            self._features = MilvusFeatures.detect(self.client)
        return self._features

    def _target(self, name: str) -> str:
        """The collection an index name (alias) points at; a collection name stands for itself."""
        aliases = self._call("list aliases", self.client.list_aliases).get("aliases", [])
        return str(self._call("describe alias", self.client.describe_alias, name)["collection_name"]) if name in aliases else name

    def _ensure_loaded(self, name: str, wait: bool = True) -> None:
        """Milvus serves only loaded collections, and a reopened store starts with all released (or
        reloading what was loaded, after a restart). ``wait=False`` (the search path) does not block a
        request on a load that may take many seconds: it starts the load and answers Unavailable."""
        if name in self._loaded:
            return
        target = self._target(name)
        state = str(self._call("load state", self.client.get_load_state, target).get("state", ""))
        if "Loaded" not in state:
            if not wait:
                if "Loading" not in state:
                    self._call("load", self.client.load_collection, target, _async=True)
                raise IndexLoading(self.dependency, f"index {name!r} is loading into memory; retry shortly")
            self._call("load", self.client.load_collection, target)
        self._loaded.add(name)

    def serving(self, name: str) -> bool:
        """Whether searches of ``name`` can be answered now (loaded); starts a load when none runs.
        Readiness asks this, so a stack is not called up while its indexes are still loading."""
        self._loaded.discard(name)  # ask Milvus, not the cache: a restarted server reloads in the background
        try:
            self._ensure_loaded(name, wait=False)
            return True
        except IndexLoading:
            return False  # (a server that does not answer raises: readiness says so, not "loading")

    def _serving_quietly(self, name: str) -> bool:
        try:
            return self.serving(name)
        except MMSearchError:
            return True  # cannot tell: let the original error stand

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except MMSearchError:
            raise
        except Exception as e:
            err = _translate(e, self.dependency, what)
            timeout = kwargs.get("timeout")
            # pymilvus reports its own timeout as a generic error ("Retry timeout"): a call that failed once its
            # time was spent (the request's deadline, as a rule) is a deadline, not a server fault (504, not 500)
            if type(err) is Internal and timeout is not None and time.monotonic() - t0 >= timeout:
                err = DeadlineExceeded(f"{self.dependency}: {what}: no answer within {timeout:.3f} s")
            raise err from e

    def collections(self) -> list[str]:
        return self._call("list collections", self.client.list_collections)

    def builds(self, index: str) -> list[str]:
        """Build names of an index, oldest first (build names sort by time)."""
        prefix = index + BUILD_SEP
        return sorted(c[len(prefix):] for c in self.collections() if c.startswith(prefix))

    def live_build(self, index: str) -> str | None:
        if index not in self._call("list aliases", self.client.list_aliases).get("aliases", []):
            return None  # not built yet
        target = self._call("describe alias", self.client.describe_alias, index)["collection_name"]
        return target.split(BUILD_SEP, 1)[1] if BUILD_SEP in target else None

    def fields(self, index: str) -> dict[str, str]:
        """The metadata fields an index (alias) or collection stores, name -> type; cached for a few
        seconds per name, since every filtered search needs them and an alias may move."""
        return self._describe(index)[1]

    def stores_docs(self, index: str) -> bool:
        """Whether the index's build keeps each document beside its vector (DOC_FIELD)."""
        return self._describe(index)[2]

    def _stores_docs_now(self, index: str) -> bool:
        """stores_docs asked afresh; True (keep the original error) when Milvus cannot tell."""
        self._fields.pop(index, None)
        try:
            return self.stores_docs(index)
        except MMSearchError:
            return True

    def _describe(self, index: str) -> tuple[float, dict[str, str], bool]:
        hit = self._fields.get(index)
        if hit is not None and time.monotonic() - hit[0] < FIELDS_TTL_S:
            return hit
        desc = self._call("describe", self.client.describe_collection, index, timeout=call_timeout(self.timeout_s))
        back = {v: k for k, v in _MILVUS_TYPES.items()}
        out = {}
        for f in desc["fields"]:
            name = getattr(f.get("type"), "name", str(f.get("type")))
            if f["name"] not in ("id", "embedding", DOC_FIELD) and name in back:
                out[f["name"]] = back[name]
        got = (time.monotonic(), out, any(f["name"] == DOC_FIELD for f in desc["fields"]))
        self._fields[index] = got
        return got

    def dim(self, collection: str) -> int:
        desc = self._call("describe", self.client.describe_collection, collection)
        for f in desc["fields"]:
            if f["name"] == "embedding":
                return int(f["params"]["dim"])
        raise Internal(f"{self.dependency}: collection {collection} has no embedding field")

    def create(self, collection: str, dim: int, spec: IndexSpec | None = None, fields: dict[str, str] | None = None,
               stored_docs: int = 0) -> None:
        """A collection for one build; ``fields`` (name -> str|int|float|bool) are stored beside the
        vectors so that searches can filter on them inside Milvus; ``stored_docs``: each whole document
        too (DOC_FIELD), up to that many bytes, so that searches return them."""
        from pymilvus import DataType, MilvusClient

        if self._call("has_collection", self.client.has_collection, collection):
            existing = self.dim(collection)
            if existing != dim:
                raise BadInput(f"collection {collection} holds {existing}-d vectors; this model gives {dim}-d")
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        for name, ftype in (fields or {}).items():
            kind = getattr(DataType, _MILVUS_TYPES[ftype])
            schema.add_field(name, kind, **({"max_length": MAX_STR * 4} if ftype == "str" else {}))  # (bytes: UTF-8)
        if stored_docs:
            schema.add_field(DOC_FIELD, DataType.VARCHAR, max_length=stored_docs)
        spec = spec or self.spec
        spec.check_dim(dim)
        params = self.client.prepare_index_params()
        params.add_index("embedding", index_type=spec.index_type, metric_type=spec.metric, params=spec.index_params())
        # Created unloaded: MilvusClient loads a collection created with its index, and a build written into a
        # loaded collection grows in the query node (its CPU) and is then handed over segment by segment when
        # indexed (10.6 s of a 30k build's 25 s seal). Loaded at the first read or at seal: from the index.
        self._call("create collection", self.client.create_collection, collection, schema=schema,
                   consistency_level="Bounded")
        self._call("create index", self.client.create_index, collection, params)

    def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray, meta: Sequence[dict[str, Any]] | None = None,
               docs: Sequence[dict[str, Any]] | None = None, doc_max_bytes: int = 0, fresh: bool = False) -> None:
        """Upsert (not insert): Milvus does not enforce unique keys, and a write may repeat an id.
        ``meta``: each row's stored fields (the collection's ``fields``), already type-checked; ``docs``:
        each row's document, for a collection created with ``stored_docs=doc_max_bytes``. ``fresh``: the
        caller knows none of ``ids`` is in the collection (a build's pipeline: ids unique in its file, and
        on resume only those Milvus does not hold), so a plain insert spares Milvus an upsert's delete half
        (a delete record per row, checked against every segment: 20% of its CPU in a build)."""
        rows = [{"id": i, "embedding": v} for i, v in zip(ids, np.asarray(vectors, dtype=np.float32))]
        if meta is not None:
            for row, m in zip(rows, meta):
                row.update(m)
        if docs is not None:
            for row, d in zip(rows, docs):
                row[DOC_FIELD] = encode_doc(d, doc_max_bytes)
        if fresh:
            self._call("insert", self.client.insert, collection, rows)
        else:
            self._call("upsert", self.client.upsert, collection, rows)

    def existing(self, collection: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        quoted = ",".join(quote(i) for i in ids)
        self._ensure_loaded(collection)
        rows = self._call("query", self.client.query, collection, filter=f"id in [{quoted}]", output_fields=["id"], **STRONG)
        return {r["id"] for r in rows}

    def matching(self, name: str, ids: Sequence[str], expr: str, consistency: str | None = None) -> set[str]:
        """Which of ``ids`` pass a filter expression (recall paths without metadata, like BM25, filter here)."""
        if not ids:
            return set()
        quoted = ",".join(quote(i) for i in ids)
        flt = f"(id in [{quoted}])" + (f" and ({expr})" if expr else "")
        self._ensure_loaded(name, wait=False)
        rows = self._call("query", self.client.query, name, filter=flt, output_fields=["id"], limit=len(ids),
                          **({"consistency_level": consistency} if consistency else {}))
        return {r["id"] for r in rows}

    # ---------------------------------------------------------------- single-document writes (the documents API)
    def vectors(self, collection: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ``ids`` the collection holds (Strong: every acknowledged write seen)."""
        if not ids:
            return {}
        self._ensure_loaded(collection)
        rows = self._call("query", self.client.query, collection, filter=f"id in [{','.join(quote(i) for i in ids)}]",
                          output_fields=["id", "embedding"], limit=len(ids), **STRONG)
        return {r["id"]: np.asarray(r["embedding"], np.float32) for r in rows}

    def ids_where(self, collection: str, expr: str, limit: int) -> list[str]:
        """Ids of rows matching a filter expression, at most ``limit`` (Strong)."""
        self._ensure_loaded(collection)
        rows = self._call("query", self.client.query, collection, filter=expr, output_fields=["id"], limit=limit, **STRONG)
        return [r["id"] for r in rows]

    def rows(self, collection: str, ids: Sequence[str], fields: Sequence[str] = ("id",)) -> list[dict[str, Any]]:
        """``fields`` of the rows of those ``ids`` the collection holds (Strong: every acknowledged write). A reindex and
        a snapshot read a build so, ids from MongoDB in pages: Milvus 2.3's query iterator reads at a client-side
        timestamp and missed a write acknowledged just before it (the snapshot test found it)."""
        if not ids:
            return []
        self._ensure_loaded(collection)
        rows = self._call("query", self.client.query, collection, filter=f"id in [{','.join(quote(i) for i in ids)}]",
                          output_fields=list(fields), limit=len(ids), **STRONG)
        return [dict(r) for r in rows]

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Delete rows by id (acknowledged once in Milvus's write-ahead log, as upserts are)."""
        if ids:
            self._call("delete", self.client.delete, collection, filter=f"id in [{','.join(quote(i) for i in ids)}]")

    def vector(self, collection: str, doc_id: str) -> np.ndarray | None:
        self._ensure_loaded(collection)
        rows = self._call("query", self.client.query, collection, filter=f"id == {quote(doc_id)}", output_fields=["embedding"],
                          **STRONG)
        return np.asarray(rows[0]["embedding"], np.float32) if rows else None

    def any_id(self, collection: str) -> str | None:
        self._ensure_loaded(collection)
        rows = self._call("query", self.client.query, collection, filter='id != ""', output_fields=["id"], limit=1, **STRONG)
        return rows[0]["id"] if rows else None

    def count(self, collection: str, consistency: str = "Strong") -> int:
        """Live rows (a count(*) query: collection statistics also count rows an upsert replaced)."""
        self._ensure_loaded(collection)
        rows = self._call("count", self.client.query, collection, filter="", output_fields=["count(*)"],
                          consistency_level=consistency)
        return int(rows[0]["count(*)"]) if rows else 0

    def seal(self, collection: str, expected: int, timeout_s: float = 600.0) -> None:
        """Make a finished build fully searchable before it goes live: flush, wait until the index
        covers every row (unindexed segments are searched brute force, slowly), and until a Bounded
        search sees all ``expected`` rows (what a query will meet after the alias switch)."""
        self._call("flush", self.client.flush, collection)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self._call("describe index", self.client.describe_index, collection, "embedding")
            pending = int(info.get("pending_index_rows", 0) or 0)
            if int(info.get("indexed_rows", 0) or 0) >= expected and not pending:
                break
            time.sleep(0.2)
        else:
            raise DeadlineExceeded(f"{self.dependency}: index of {collection} not built within {timeout_s:.0f} s")
        self._ensure_loaded(collection)  # (if it was loaded while growing, Milvus hands the indexed segments over itself)
        # Then a Bounded count must see every row (what a query meets after the alias switch), and, where the
        # server searches unindexed rows brute force (MilvusFeatures: 2.3), the index must cover them as
        # loaded. Small collections skip that second wait: brute force over them costs about a millisecond; so
        # does a FLAT index, which is brute force by definition (its loaded segments carry no index id on 2.3).
        wait_index = expected >= BRUTE_FORCE_OK_ROWS and info.get("index_type") != "FLAT"
        while self.count(collection, "Bounded") < expected or (
                wait_index and not self.features.index_serving(self, collection, expected)):
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"{self.dependency}: {collection} not fully searchable within {timeout_s:.0f} s")
            time.sleep(0.2)

    def search(self, name: str, vectors: np.ndarray, top_k: int, filter: str = "",
               ef: int | None = None, docs: RawDocSink | None = None, breadth: int = 0,
               consistency: str | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (id, score) per query vector from an index (alias) or collection; NotFound names a missing one.
        ``ef``: HNSW search breadth for this call (the recall/latency knob an experiment arm may set).
        ``breadth``: search as broadly as for this many hits (HNSW ef at least this), so the first
        ``top_k`` are the ones a search for ``breadth`` would return first.
        ``docs``: filled with the hits' documents where the build stores them.
        ``consistency``: a Milvus consistency level for this search ("Strong": every acknowledged write is seen);
        None: the collection's (Bounded)."""
        try:
            self._ensure_loaded(name, wait=False)  # IndexLoading (503) while Milvus loads it
        except NotFound as e:
            raise NotFound(f"index {name!r} not found in {self.dependency}") from e
        with_docs = docs is not None and top_k <= DOCS_MAX_HITS and self.stores_docs(name)
        try:
            res = self._call("search", self.client.search, name, data=[np.asarray(v, np.float32) for v in vectors],
                             limit=top_k, filter=filter, output_fields=["id", DOC_FIELD] if with_docs else ["id"],
                             timeout=call_timeout(self.timeout_s),
                             search_params={"metric_type": self.spec.metric, "params": self.spec.search_params(top_k, ef, breadth)},
                             **({"consistency_level": consistency} if consistency else {}))
        except NotFound as e:
            raise NotFound(f"index {name!r} not found in {self.dependency}") from e
        except (Internal, IndexLoading) as e:
            if with_docs and isinstance(e, Internal) and not self._stores_docs_now(name):
                # the alias moved, within the fields cache's seconds, to a build that keeps no documents: once more
                # without asking for them (stores_docs is False now, so this does not recurse again)
                return self.search(name, vectors, top_k, filter, ef, docs, breadth, consistency)
            # Released behind our back (a restart, a rollback elsewhere): Milvus 2.3 says so with code
            # 101 or a generic code and a message only, so ask for the load state instead of reading
            # text. (A server that does not answer raises Unavailable: no probing then.)
            self._loaded.discard(name)
            if not self._serving_quietly(name):
                raise IndexLoading(self.dependency, f"index {name!r} is loading into memory; retry shortly") from e
            raise
        if with_docs and docs is not None:
            for hits in res:
                for h in hits:
                    raw = h.get("entity", {}).get(DOC_FIELD)
                    if raw:
                        docs.put_raw(h["id"], raw)
        # equal scores (duplicate documents) in id order: Milvus orders ties differently for different limits,
        # and a page must be the same hits, in the same order, as that stretch of a longer search
        return [sorted(((h["id"], float(h["distance"])) for h in hits), key=lambda h: (-h[1], h[0])) for hits in res]

    def stored_docs(self, name: str, ids: Sequence[str], docs: RawDocSink, consistency: str | None = None) -> None:
        """The documents kept beside the vectors (DOC_FIELD) of those ``ids`` the index holds, into ``docs``: hits a
        search found elsewhere (BM25) get their documents from here, not from MongoDB. Documents stored empty
        (over the size limit) and ids not found are left for the caller."""
        if not ids or not self.stores_docs(name):
            return
        self._ensure_loaded(name, wait=False)
        rows = self._call("query", self.client.query, name, filter=f"id in [{','.join(quote(i) for i in ids)}]",
                          output_fields=["id", DOC_FIELD], limit=len(ids), timeout=call_timeout(self.timeout_s),
                          **({"consistency_level": consistency} if consistency else {}))
        for r in rows:
            if r.get(DOC_FIELD):
                docs.put_raw(r["id"], r[DOC_FIELD])

    def switch_alias(self, index: str, build: str) -> None:
        target = collection_name(index, build)
        self._ensure_loaded(target)  # (a rollback target may have been released: searches must not meet it unloaded)
        self._loaded.discard(index)
        if self.live_build(index) is None:
            self._call("create alias", self.client.create_alias, target, index)
        else:
            self._call("alter alias", self.client.alter_alias, target, index)

    def drop(self, index: str, build: str) -> None:
        if self.live_build(index) == build:
            raise BadInput(f"build {build} is live for index {index}: roll back or rebuild before dropping it")
        self._call("drop", self.client.drop_collection, collection_name(index, build))

    def drop_index(self, index: str) -> None:
        if self.live_build(index) is not None:
            self._call("drop alias", self.client.drop_alias, index)
        for b in self.builds(index):
            self._call("drop", self.client.drop_collection, collection_name(index, b))

    def ping(self, timeout_s: float = 1.0) -> bool:
        """A short probe for readiness: the server answers a metadata call within ``timeout_s``
        (a cached client would otherwise look healthy long after the server went away)."""
        try:
            self.client.list_collections(timeout=timeout_s)
            return True
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def encode_doc(doc: dict[str, Any], max_bytes: int) -> str:
    """A document as DOC_FIELD holds it: compact JSON, or "" when over ``max_bytes`` (read from MongoDB then)."""
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)
    return raw if len(raw.encode("utf-8")) <= max_bytes else ""


def require_build(store: VectorStore, index: str, build: str) -> None:
    if build not in store.builds(index):
        raise NotFound(f"index {index} has no build {build} (builds: {', '.join(store.builds(index)) or 'none'})")
