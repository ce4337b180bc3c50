"""The service's dependencies, connected lazily and reconnected after failures.

A dependency that is down at start does not stop the service from starting (readiness says so);
a request that finds one down fails fast with 503 naming it, and the next request tries again, so
the service recovers without a restart when the dependency returns.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mmsearch.clients.documents import DocumentStore
from mmsearch.clients.inference import InferenceClient
from mmsearch.clients.preprocess import PreprocessClient
from mmsearch.clients.vectors import VectorStore, index_spec
from mmsearch.config import Config
from mmsearch.encoders.backend import Backend
from mmsearch.encoders.local import RepositoryBackend
from mmsearch.errors import Unavailable
from mmsearch.modelrepo.preprocess_registry import LocalTokenizer
from mmsearch.modelrepo.preprocessing import Tokenizer
from mmsearch.runtime.deadline import time_left, within
from mmsearch.runtime.embedded import running_store

T_co = TypeVar("T_co", covariant=True)  # a Lazy of a LocalTokenizer serves where a Lazy of any Tokenizer is wanted
PROBE_TIMEOUT_S = 1.0
# after a failed connect, callers fail at once for this long instead of each trying again: in an outage every
# caller waited its turn for the connect lock and then spent its own connect timeout (CI saw searches queue
# 11-18 s behind the query log's and each other's MongoDB connects, past their 10 s deadline)
CONNECT_RETRY_S = 1.0


class Lazy(Generic[T_co]):
    def __init__(self, name: str, factory: Callable[[], T_co], close: Callable[[T_co], None] | None = None,
                 check: Callable[[T_co], bool] | None = None, in_process: bool = False, relocatable: bool = False,
                 probe_s: float | None = None):
        self.name = name
        self.probe_s = probe_s  # a readiness probe's connect ends within this, whatever the clients' own timeouts
        # found afresh at each connect (an embedded store's endpoint file): a failed probe forgets the
        # connection, so readiness alone finds a store started again elsewhere (on fresh ports)
        self.relocatable = relocatable
        self.in_process = in_process  # nothing to reconnect: a failure is the model's, and reset() keeps it
        self._factory = factory
        self._close = close
        self._check = check
        self._obj: T_co | None = None
        self._lock = threading.Lock()
        self.retry_s = CONNECT_RETRY_S
        self._failed: tuple[float, Unavailable] | None = None  # (when, what) of the last failed connect

    def get(self) -> T_co:
        """The client, connected now if need be. A caller waits for another's connect only as long as its
        request allows, and within ``CONNECT_RETRY_S`` of a failed connect it gets that failure at once."""
        obj = self._obj
        if obj is not None:
            return obj
        self._raise_if_failed_recently()
        wait = time_left()
        if wait == 0.0:  # a connect given no time fails for want of it, and says nothing about the dependency
            raise Unavailable(self.name, "not connected, and this call's time has run out")
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise Unavailable(self.name, "still connecting (another caller's connect is under way; this call's time ran out waiting)")
        try:
            if self._obj is None:
                self._raise_if_failed_recently()  # (the connect this caller waited for failed)
                try:
                    self._obj = self._factory()  # raises Unavailable naming the dependency
                except Unavailable as e:
                    if time_left() != 0.0:  # remembered only when the dependency, not this caller's deadline, ended it
                        self._failed = (time.monotonic(), e)
                    raise
                self._failed = None
            return self._obj
        finally:
            self._lock.release()

    def _raise_if_failed_recently(self) -> None:
        failed = self._failed
        if failed is not None and time.monotonic() - failed[0] < self.retry_s:
            e = failed[1]  # the same error, so callers see one outage the same way however they met it
            age = time.monotonic() - failed[0]
            raise Unavailable(e.dependency, f"{e.reason} (at the last connect, {age:.1f} s ago; the next in under {self.retry_s:g} s)")

    def healthy(self) -> bool:
        """Connect if needed and probe (for clients whose construction does not touch the network)."""
        try:
            with within(time.monotonic() + self.probe_s) if self.probe_s is not None else contextlib.nullcontext():
                obj = self.get()
            ok = self._check(obj) if self._check is not None else True
        except Exception:  # noqa: BLE001 - any failure to reach it means not ready
            return False
        if not ok and self.relocatable:
            self.reset(obj)
        return ok

    def reset(self, failed: object = None) -> None:
        """Forget the connection after a failure: the next get() reconnects. ``failed``: the client the
        failure came from; a connection made since (by another caller) is kept. The old client is not
        closed here — concurrent requests may still hold it; it is released when they drop it. An
        in-process dependency (local tokenizers and encoders) is kept: its watcher reloads what changes.
        No lock: a request failing while another connects must not wait out that connect."""
        if self.in_process or (failed is not None and self._obj is not failed):
            return
        self._obj = None

    def close(self) -> None:
        with self._lock:
            obj, self._obj = self._obj, None
        if obj is not None and self._close is not None:
            try:
                self._close(obj)
            except Exception:  # noqa: BLE001 - closing a broken connection is best effort
                pass


@dataclass
class Deps:
    """The dependencies of a search, each lazily connected (tests pass fakes through Lazy). ``tokenizers``:
    text queries tokenized in this process (config retrieval.tokenize local); None: by the preprocess service.
    ``encoders``: text queries encoded in this process (retrieval.encode local); None: by Triton."""

    inference: Lazy[InferenceClient]
    preprocess: Lazy[PreprocessClient]
    vectors: Lazy[VectorStore]
    documents: Lazy[DocumentStore]
    tokenizers: Lazy[LocalTokenizer] | None = None
    encoders: Lazy[RepositoryBackend] | None = None

    @property
    def all(self) -> list[Lazy[Any]]:
        deps: list[Lazy[Any]] = [self.inference, self.preprocess, self.vectors, self.documents]
        return deps + [d for d in (self.tokenizers, self.encoders) if d is not None]

    def backend(self, modality: str) -> Lazy[Backend]:
        """Where a query of this modality is embedded: text in this process when retrieval.encode is
        local, everything else by Triton (one ``Backend`` interface either way)."""
        if modality == "text" and self.encoders is not None:
            return self.encoders
        return self.inference

    @property
    def text(self) -> Lazy[Tokenizer]:
        """Where text queries are tokenized."""
        return self.tokenizers if self.tokenizers is not None else self.preprocess

    def close(self) -> None:
        for d in self.all:
            d.close()


def connect_deps(config: Config) -> Deps:
    """Clients of Triton, the preprocess service, Milvus and MongoDB, and the local tokenizers, as configured
    (connected on first use)."""
    s, p, r = config.serving, config.preprocess, config.retrieval
    triton_url = s.url or f"{s.host}:{s.grpc_port}"
    # the local Triton's metrics say which provider each model's live session runs on (GET /v1/models)
    metrics_url = f"http://{s.host}:{s.metrics_port}/metrics" if not s.url and s.metrics_port else None
    spec = index_spec(config.milvus)
    probe_s = min(PROBE_TIMEOUT_S, r.stage_timeout_s)

    def milvus() -> VectorStore:
        uri = config.milvus.uri or running_store("milvus", config.data_dir)
        if not uri:
            raise Unavailable("milvus", f"no milvus.uri configured (MMSEARCH_MILVUS_URI) and no embedded server runs for {config.data_dir}")
        return VectorStore(uri, timeout_s=r.stage_timeout_s, spec=spec)

    def mongo() -> DocumentStore:
        uri = config.mongo.uri or running_store("mongo", config.data_dir)
        if not uri:
            raise Unavailable("mongodb", f"no mongo.uri configured (MMSEARCH_MONGO_URI) and no embedded server runs for {config.data_dir}")
        return DocumentStore(uri, config.mongo.database, timeout_s=r.stage_timeout_s)

    return Deps(
        Lazy("triton", lambda: InferenceClient(triton_url, "grpc", timeout_s=r.stage_timeout_s, metrics_url=metrics_url),
             lambda c: c.close(), lambda c: c.server_ready()),
        Lazy("preprocess", lambda: PreprocessClient(f"{p.host}:{p.port}", timeout_s=r.stage_timeout_s),
             lambda c: c.close(), lambda c: c.serving()),
        # readiness probes are short whatever the stage timeout: /readyz must turn 503 within seconds
        # the embedded stores (no URI configured) are looked up at every connect: one started again after a
        # crash may listen elsewhere (mmsearch up restarts them on fresh ports)
        Lazy("milvus", milvus, lambda c: c.close(), lambda c: c.ping(probe_s),
             relocatable=not config.milvus.uri),
        Lazy("mongodb", mongo, lambda c: c.close(), lambda c: c.ping(probe_s),
             relocatable=not config.mongo.uri, probe_s=probe_s),
        Lazy("tokenizers", lambda: LocalTokenizer(config.model_repository, p, config.repository_poll_s),
             lambda t: t.close(), lambda t: t.serving(), in_process=True) if r.tokenize == "local" else None,
        Lazy("encoders", lambda: RepositoryBackend(config.model_repository, r.encode_threads, config.repository_poll_s),
             lambda e: e.close(), lambda e: e.serving(), in_process=True) if r.encode == "local" else None,
    )
