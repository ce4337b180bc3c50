"""The search pipeline: split -> qp -> embed -> recall -> rerank -> summary, with per-stage timings.

Every dependency call goes through ``_stage``: it checks the request deadline first, times the
stage into the request context and the metrics, and on Unavailable resets that dependency's
connection so the next request reconnects (recovery without a restart). ``search`` returns a typed
``SearchResponse``; the HTTP and gRPC front ends serialise it.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from mmsearch.api.documents import RESERVED_KEYS
from mmsearch.api.filters import combine, compile_filter
from mmsearch.clients.documents import BUILDS
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import BUILD_SEP, VectorStore, collection_name
from mmsearch.config import Config, lexical_root
from mmsearch.errors import BadInput, ConfigError, DeadlineExceeded, MMSearchError, NotFound, Overloaded, Unavailable
from mmsearch.experiments.spec import Params, Source, assign
from mmsearch.ranking.fusion import DEFAULT_RRF_K, RARE_DF, TITLE_CHECK_TOP, Fusion, fuse, names_title, rare_query, source_weights, title_terms
from mmsearch.ranking.ranker import LinearRanker, Query, learned_fusion, load_ranker, ranker_path
from mmsearch.retrieval_service.admission import Admission
from mmsearch.retrieval_service.auth import ApiKeys
from mmsearch.retrieval_service.config_source import ExperimentStore
from mmsearch.retrieval_service.deps import Deps, Lazy, connect_deps
from mmsearch.retrieval_service.documents import DocumentsService
from mmsearch.retrieval_service.prometheus_metrics import Metrics
from mmsearch.retrieval_service.querylog import QueryLog
from mmsearch.retrieval_service.request import SearchRequest
from mmsearch.retrieval_service.response import Hit, HitDocs, RequestContext, SearchResponse
from mmsearch.retrieval_service.retention import RetentionSweeper
from mmsearch.runtime.deadline import within
from mmsearch.runtime.observability import request_context

DEFAULT_TOP_K = 20
READY_CACHE_S = 1.0  # /readyz probes each dependency at most once a second
DEFAULT_RECALL = 100
DEFAULT_RERANK_N = 50
LIVE_BUILD_TTL_S = 1.0  # how long a search trusts the live build it resolved (see _served_by)
BUILD_RECORD_READ_S = 0.5  # the most a search waits for a build's record (its query models) from MongoDB
BUILD_RECORD_BACKOFF_S = 5.0  # MongoDB did not answer: searches go on without asking again for this long
FILTER_OVERFETCH = 4  # BM25 hits fetched per wanted hit when a filter will drop some (tantivy holds no metadata)
log = logging.getLogger("mmsearch.retrieval")
ADVISORY = "ranker "  # readiness entries shown but not counted: a learned arm without its ranker serves by RRF
T = TypeVar("T")


class SearchService:
    def __init__(self, config: Config, experiments: ExperimentStore, deps: Deps | None = None):
        self.config = config
        self.experiments = experiments
        self.deps = deps or connect_deps(config)
        self.metrics = Metrics()
        r = config.retrieval
        self.admission = Admission(r.max_inflight, r.max_queue)
        self._ready_lock = threading.Lock()
        self.ready_cache_s = READY_CACHE_S
        self._ready_cache: tuple[float, dict[str, bool]] = (float("-inf"), {})
        for what, read in (("inflight", lambda: self.admission.inflight), ("waiting", lambda: self.admission.waiting),
                           ("max_inflight", lambda: self.admission.max_inflight), ("max_queue", lambda: self.admission.max_queue),
                           ("service_seconds", lambda: self.admission.service_s)):
            self.metrics.admission.labels(what).set_function(read)
        self.auth = ApiKeys(r.api_keys, r.write_api_keys)
        self.lexical = Lazy("lexical", lambda: LexicalStore(lexical_root(config)))
        self.documents = DocumentsService(config, self.metrics, self.deps.vectors, self.deps.documents, self.lexical)
        self._live_builds: dict[str, tuple[float, str | None, dict[str, str]]] = {}  # index -> (until, live build, query models)
        self._rankers: dict[str, tuple[int, LinearRanker]] = {}  # name -> (file mtime, ranker)
        self._warned: set[tuple[object, ...]] = set()  # (each distinct problem logged once, not per search)
        self._pool = ThreadPoolExecutor(max_workers=4 * (r.max_inflight + r.max_queue), thread_name_prefix="source")
        self.querylog = QueryLog(self.deps.documents, self.metrics, ttl_days=r.query_log_ttl_days,
                                 flush_s=r.query_log_flush_s, sweep_s=r.query_log_sweep_s) if config.retrieval.query_log else None
        self.retention = RetentionSweeper(self.deps.documents, r.documents_journal_days, r.documents_op_ids_days,
                                          r.documents_sweep_s).start()

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _stage(self, name: str, dep: Lazy[T], ctx: RequestContext, limit_s: float | None = None) -> Iterator[T]:
        """``limit_s``: a call that is worth less than the request (optional metadata) ends sooner, connect included."""
        if ctx.expired:
            raise DeadlineExceeded(f"request deadline ({ctx.timeout_s:.1f} s) passed before {name}")
        t0 = time.perf_counter()
        ends = ctx.deadline if limit_s is None else min(ctx.deadline, time.monotonic() + limit_s)
        client = None
        try:
            with within(ends):  # the dependency call ends with the request (deadline.call_timeout)
                client = dep.get()
                yield client
        except Unavailable:
            if client is not None:  # (a failed get() has no connection to forget; one made since by another caller stays)
                dep.reset(client)
            raise
        finally:
            self._timed(name, time.perf_counter() - t0, ctx)

    def _timed(self, name: str, seconds: float, ctx: RequestContext) -> None:
        """A stage's time, in the response's timings and the stage histogram."""
        ctx.add_time(name, seconds)
        self.metrics.stage.labels(ctx.scene, ctx.arm_label, name).observe(seconds)

    def ready(self) -> dict[str, bool]:
        """Readiness, probed afresh at most once per ``ready_cache_s``: probes hitting /readyz (an open
        endpoint) as fast as they like cost the dependencies one probe round per interval."""
        with self._ready_lock:
            at, parts = self._ready_cache
            if time.monotonic() - at >= self.ready_cache_s:
                parts = self._probe()
                self._ready_cache = (time.monotonic(), parts)
            return dict(parts)

    def _probe(self) -> dict[str, bool]:
        """Each dependency, and each index the live experiments search: an index still loading into
        Milvus (after a restart, or a new build) would fail every search, so it counts as not ready.
        A configured index that does not exist is left out: searches of it answer 404, not 503."""
        out = {"experiments": self.experiments.ready()}
        out.update({d.name: d.healthy() for d in self.deps.all})
        live = self.experiments.current
        for name in live.experiments.rankers() if live is not None else []:
            # shown, not counted: an arm whose ranker is missing or broken serves by RRF (_learned)
            try:
                self._ranker(name)
                out[f"ranker {name}"] = True
            except MMSearchError:
                out[f"ranker {name}"] = False
        if live is not None and out["milvus"]:
            store = self.deps.vectors.get()
            for index in live.experiments.indexes():
                try:
                    out[f"index {index}"] = store.serving(index)
                except NotFound:
                    continue
                except MMSearchError:
                    out[f"index {index}"] = False
            # an index that exists but lacks the terms a bm25 source needs fails that arm's every search;
            # a missing index is left out, as above (its searches answer 404)
            lex = self.lexical.get()
            for index, fields in live.experiments.lexical_indexes().items():
                have = lex.fields(index)
                if have and set(fields) <= set(have):
                    out[f"lexical {index}"] = True
                    continue
                try:
                    store.serving(index)
                except NotFound:
                    continue
                except MMSearchError:
                    pass
                out[f"lexical {index}"] = False
        return out

    # ------------------------------------------------------------------ search
    def deadline(self, caller_s: float | None = None) -> float:
        """A request's deadline (time.monotonic()), counted from its arrival so a wait in the admission
        queue spends it: ``retrieval.request_timeout_s``, or the caller's own time left (a gRPC
        deadline) when that is shorter."""
        own = self.config.retrieval.request_timeout_s
        return time.monotonic() + (own if caller_s is None else max(0.0, min(own, caller_s)))

    def search(self, req: SearchRequest, deadline: float | None = None) -> SearchResponse:
        """Serve one request by ``deadline`` (default: ``self.deadline()`` from now); its log lines
        carry its request id (returned in the response)."""
        request_id = uuid.uuid4().hex
        deadline = self.deadline() if deadline is None else deadline
        with request_context(request_id):
            try:
                with self.admission.slot(deadline):
                    return self._search(req, request_id, deadline)
            except Overloaded as e:
                if getattr(e, "admission", False):  # (a dependency's Overloaded was counted with its arm in _search)
                    self.metrics.requests.labels(req.scene, "-", "Overloaded").inc()
                raise

    def shed(self, deadline: float | None = None) -> Overloaded | None:
        """Admission control's refusal for a search not yet parsed (its scene unknown: counted as '-'),
        or None when it may go on to search()."""
        e = self.admission.refuse_at_once(self.deadline() if deadline is None else deadline)
        if e is not None:
            self.metrics.requests.labels("-", "-", "Overloaded").inc()
        return e

    def _search(self, req: SearchRequest, request_id: str, deadline: float) -> SearchResponse:
        t_start = time.perf_counter()
        live = self.experiments.live
        scene = live.experiments.scenes.get(req.scene)
        if scene is None:
            raise BadInput(f"scene: {req.scene!r} is not configured (configured: {', '.join(live.experiments.scenes)})")
        user_id = req.user_id or uuid.uuid4().hex
        t0 = time.perf_counter()
        arms, params, buckets = assign(scene, user_id, req.force)
        split_s = time.perf_counter() - t0
        ctx = RequestContext(req.scene, ",".join(f"{k}={v}" for k, v in arms.items()) or "default",
                             self.config.retrieval.request_timeout_s, deadline)
        ctx.add_time("split", split_s)
        try:
            hits, has_more = self._run(req, params, ctx)
        except MMSearchError as e:
            if not isinstance(e, (BadInput, NotFound)):  # the service's trouble, not the caller's: worth a line
                log.warning("search %s failed: %s: %s", req.scene, type(e).__name__, e.message)
            self.metrics.requests.labels(req.scene, ctx.arm_label, type(e).__name__).inc()
            self.metrics.errors.labels(type(e).__name__, getattr(e, "dependency", "")).inc()
            raise
        ctx.add_time("total", time.perf_counter() - t_start)
        self.metrics.requests.labels(req.scene, ctx.arm_label, "ok").inc()
        if self.querylog is not None:
            query = {"text": req.text} if req.text is not None else {"image_sha256": hashlib.sha256(req.image or b"").hexdigest()}
            self.querylog.record({"_id": request_id, "ts": time.time(), "scene": req.scene, "user_id": user_id,
                                  "buckets": buckets, "arms": arms, "query": query, "config_version": live.version,
                                  "offset": req.offset, "filter": req.filter, "forced": bool(req.force),  # forced: not randomised (ab-report)
                                  "results": [h.id for h in hits], "clicks": []})
        return SearchResponse(request_id, user_id, hits, arms, {k: round(v, 3) for k, v in ctx.timings.items()},
                              live.version, req.offset, has_more)

    def _run(self, req: SearchRequest, p: Params, ctx: RequestContext) -> tuple[list[Hit], bool]:
        """The page of hits [offset, offset + top_k) and whether more follow."""
        if not p.embed_model or not p.index:
            raise BadInput(f"scene {req.scene}: the experiments config gives no embed_model/index for this request")
        index = p.index
        top_k = req.top_k or p.top_k or DEFAULT_TOP_K
        end = req.offset + top_k
        docs = HitDocs()  # filled by recall where the index's build keeps documents beside vectors
        hits = self._recall(req, p, ctx, end + 1, docs)  # one beyond the page: has_more
        if p.rerank == "cross_encoder" and req.text is not None and hits:
            hits = self._rerank(req.text, hits, p, index, ctx, docs)
        else:
            ctx.add_time("rerank", 0.0)
        has_more = len(hits) > end
        hits = hits[req.offset:end]
        self._fill_docs(index, [h.id for h in hits], docs, ctx, _consistency(req).get("consistency"))
        return [Hit(h.id, float(h.score), h.score_type, h.sources, _public(docs.get(h.id), req.fields)) for h in hits], has_more

    def _fill_docs(self, index: str, ids: list[str], docs: HitDocs, ctx: RequestContext, consistency: str | None = None) -> None:
        """The documents recall did not bring: BM25-only hits get theirs from beside their vectors in Milvus, in
        one query, so a search needs no MongoDB while it is busy or down; what Milvus does not hold (builds
        without stored documents, documents too big to store, a write not yet visible to a Bounded read) is
        read from MongoDB in one round trip. None missing: no read."""
        missing = [i for i in ids if i not in docs]
        if not missing:
            self._timed("summary", 0.0, ctx)
            return
        with self._stage("summary", self.deps.vectors, ctx) as vs:
            vs.stored_docs(index, missing, docs, consistency)
        missing = [i for i in missing if i not in docs]
        if not missing:
            return
        with self._stage("summary", self.deps.documents, ctx) as ds:
            docs.update({i: d for i, d in zip(missing, ds.get_many(index, missing)) if d is not None})

    def _embed(self, req: SearchRequest, model: str, ctx: RequestContext, where: str = "query.") -> np.ndarray[Any, Any]:
        try:  # text: tokenized in this process (retrieval.tokenize local) or by the preprocess service, and
            # encoded in this process (retrieval.encode local) or by Triton; images: both by the services
            if req.image is not None:
                with self._stage("qp", self.deps.preprocess, ctx) as pre:
                    tensors = {"pixel_values": pre.process_images(model, [req.image])}
            else:
                with self._stage("qp", self.deps.text, ctx) as tok:  # padded to a length bucket only for Triton's batcher
                    tensors = tok.tokenize(model, [req.text or ""], bucket=self.deps.encoders is None).tensors
        except BadInput as e:  # the preprocessor names images[0] / texts[0]; the caller sent query.*
            raise BadInput(f"{where}{'image_b64' if req.image is not None else 'text'}: {e.message}") from e
        with self._stage("embed", self.deps.backend("text" if req.image is None else "image"), ctx) as backend:
            return backend.infer(model, tensors, "embedding")

    def _dense(self, req: SearchRequest, vec: np.ndarray[Any, Any], index: str, k: int, p: Params,
               ctx: RequestContext, docs: HitDocs, breadth: int = 0) -> list[tuple[str, float]]:
        """One vector search of an index (its alias) or one build of it (``<index>__<build>``, see _served_by); the
        hits' documents land in ``docs`` when it searches the arm's own index (another index's documents, a caption
        index's say, are not the ones the page shows)."""
        own = index.split(BUILD_SEP, 1)[0] == p.index
        with self._stage("recall", self.deps.vectors, ctx) as vs:
            return vs.search(index, vec, k, _filter_expr(vs, index, req, p), ef=p.search_ef,  # NotFound names the index
                             docs=docs if own else None, breadth=breadth, **_consistency(req))[0]

    def _served_by(self, req: SearchRequest, model: str, index: str, ctx: RequestContext) -> tuple[str, str]:
        """(query model, what to search) for a dense source. A build made by ``mmsearch reindex`` (a managed model
        change) records its query models: its index is then searched build by build (the collection the alias
        names, resolved at most ``LIVE_BUILD_TTL_S`` ago, afresh for a strong search) with the query encoded by
        that build's model, so a switch can never pair a query of one model with vectors of another. Other builds:
        the arm's embed_model and the alias, as before."""
        now = time.monotonic()
        hit = self._live_builds.get(index)
        if hit is None or now > hit[0] or req.consistency == "strong":
            with self._stage("recall", self.deps.vectors, ctx) as vs:
                live = vs.live_build(index)
            models: dict[str, str] = dict(hit[2]) if hit is not None and hit[1] == live else {}
            until = now + LIVE_BUILD_TTL_S
            if live is not None:
                try:  # optional metadata: a short read of its own, never the request's whole time
                    with self._stage("recall", self.deps.documents, ctx, limit_s=BUILD_RECORD_READ_S) as ds:
                        rec = ds.get_one(BUILDS, collection_name(index, live)) or {}
                    models = dict(rec.get("query_models") or {})
                except Unavailable:
                    # MongoDB down: searches go on (their documents are stored beside the vectors) with the query
                    # models last read for this build, or, never read, the arm's model and the alias as before;
                    # the next searches do not ask again until the back-off has passed
                    until = now + BUILD_RECORD_BACKOFF_S
            hit = (until, live, models)
            self._live_builds[index] = hit
        _, live, models = hit
        chosen = models.get("image" if req.image is not None else "text")
        if live is None or not chosen:
            return model, index
        return chosen, collection_name(index, live)

    def _recall(self, req: SearchRequest, p: Params, ctx: RequestContext, depth: int, docs: HitDocs) -> list[Hit]:
        """Dense recall of the arm's index, or every configured source fused (sources and fusion per arm).
        Fused sources run in parallel: first one embedding per distinct model, then every search."""
        assert p.embed_model and p.index
        if not p.sources:
            model, target = self._served_by(req, p.embed_model, p.index, ctx)
            vec = self._embed(req, model, ctx)
            k, breadth = dense_shape(p, depth)
            hits = self._dense(req, vec, target, k, p, ctx, docs, breadth=breadth)
            if breadth > k and len(hits) == k >= 2 and hits[-1][1] == hits[-2][1]:
                # equal scores across the page's end: which of them a limit of k keeps is Milvus's choice, so
                # ask as deep as every page within recall_top_k does, and equal scores come back whole, in id order
                hits = self._dense(req, vec, target, breadth, p, ctx, docs)
            return [Hit(i, s) for i, s in hits]
        model, index = p.embed_model, p.index
        dense = [s for s in p.sources if s.kind == "dense"]
        lexical = [s for s in p.sources if s.kind == "bm25" and req.text is not None]  # an image query has no words
        routes = [self._served_by(req, s.embed_model or model, s.index or index, ctx) for s in dense]
        models = list(dict.fromkeys(m for m, _ in routes))
        vectors = dict(zip(models, self._parallel([functools.partial(self._embed, req, m, ctx) for m in models], ctx)))
        searches: list[Callable[[], list[tuple[str, float]]]] = [
            functools.partial(self._dense, req, vectors[m], target, max(s.recall_top_k, depth), p, ctx, docs)
            for s, (m, target) in zip(dense, routes)]
        searches += [functools.partial(self._lexical, req, s.index or index, s.fields, max(s.recall_top_k, depth), p, ctx)
                     for s in lexical]
        lists = dict(zip([s.name for s in dense + lexical], self._parallel(searches, ctx)))
        if p.fusion == "learned":
            return self._learned(req, p, lists, lexical, docs, ctx)
        rare = self._has_rare_term(req, p, lexical, ctx)
        titled = not rare and self._names_title(req, p, lists, docs, ctx)
        return self._fuse(p, lists, p.fusion or "rrf",
                          source_weights([(s.name, s.weight, s.weight_title, s.weight_rare) for s in p.sources], titled, rare), ctx)

    def _fuse(self, p: Params, lists: dict[str, list[tuple[str, float]]], fusion: Fusion, weights: dict[str, float],
              ctx: RequestContext) -> list[Hit]:
        t0 = time.perf_counter()
        fused = fuse({s.name: lists[s.name] for s in p.sources or [] if s.name in lists}, fusion, weights, p.rrf_k or DEFAULT_RRF_K)
        ctx.add_time("fusion", time.perf_counter() - t0)
        return [Hit(f.id, f.score, "fused", f.sources) for f in fused]

    def _learned(self, req: SearchRequest, p: Params, lists: dict[str, list[tuple[str, float]]], lexical: list[Source],
                 docs: HitDocs, ctx: RequestContext) -> list[Hit]:
        """The arm's ranker orders the candidates of a query in its scope (ranker.learned_fusion); the documents of
        each source's first hits are read for its title and length features (the page reuses them)."""
        assert p.sources and p.index and p.ranker
        try:
            ranker = self._ranker(p.ranker)
            if [(s.name, s.kind) for s in p.sources] != list(ranker.sources):
                raise ConfigError(f"ranker {p.ranker} was trained on sources {list(ranker.sources)}; the arm has "
                                  f"{[(s.name, s.kind) for s in p.sources]}")
        except ConfigError as e:
            # one arm's missing or mismatched ranker degrades that arm (to RRF with its sources' weights), it does
            # not fail its searches or take the process out of rotation: /readyz and a counter name it
            self.metrics.ranker_fallbacks.labels(p.ranker).inc()
            self._warn_once(("ranker", p.ranker, e.message), "arm %s: ranker %s unusable, fused by RRF instead: %s",
                            ctx.arm_label, p.ranker, e.message)
            return self._fuse(p, lists, "rrf", {s.name: s.weight for s in p.sources}, ctx)
        rare = self._has_rare_term(req, p, lexical, ctx, always=True)
        self._fill_docs(p.index, ranker.window_ids(lists), docs, ctx, _consistency(req).get("consistency"))
        t0 = time.perf_counter()
        fused = learned_fusion(ranker, lists, Query.of(req.text or "", rare), docs, {s.name: s.weight for s in p.sources},
                               p.rrf_k or DEFAULT_RRF_K)
        ctx.add_time("fusion", time.perf_counter() - t0)
        return [Hit(f.id, f.score, "fused", f.sources) for f in fused]

    def _ranker(self, name: str) -> LinearRanker:
        """The named ranker, read once and again when its file changes (a retrained ranker goes live like an
        experiments edit)."""
        path = ranker_path(self.config.rankers_dir, name)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            mtime = -1
        cached = self._rankers.get(name)
        if cached is None or cached[0] != mtime:
            try:
                cached = self._rankers[name] = (mtime, load_ranker(path))
            except ConfigError as e:
                if cached is None:
                    raise
                # a broken retrain (or a file half-copied) does not undo a good ranker: the last one read serves on
                self._warn_once(("ranker file", name, mtime), "ranker %s: %s; serving the one read before", name, e.message)
        return cached[1]

    def _warn_once(self, key: tuple[object, ...], msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def _has_rare_term(self, req: SearchRequest, p: Params, lexical: list[Source], ctx: RequestContext,
                       always: bool = False) -> bool:
        """fusion.rare_query over the first bm25 source's lexical build, for an arm whose sources set weight_rare
        (or ``always``: a ranker's feature); a few term counts, no search."""
        if not lexical or not p.sources or not (always or any(s.weight_rare is not None for s in p.sources)):
            return False
        src = lexical[0]
        with self._stage("lexical", self.lexical, ctx) as lex:
            return rare_query(req.text or "", lambda t: lex.rarest_df(src.index or p.index or "", t, src.fields),
                              p.rare_df or RARE_DF)

    def _names_title(self, req: SearchRequest, p: Params, lists: dict[str, list[tuple[str, float]]], docs: HitDocs,
                     ctx: RequestContext) -> bool:
        """Whether the query names a title (fusion.names_title) of one of the first hits of its sources, for an
        arm with query-dependent weights; their documents come from recall or one read (the page reuses them)."""
        if not p.title_field or not p.sources or not any(s.weight_title is not None for s in p.sources):
            return False
        terms = title_terms(req.text or "")
        if terms is None:
            return False
        assert p.index
        # every source's first hits (a source over another index of the same documents, a titled build say, counts:
        # ids the arm's index lacks have no title)
        ids = list(dict.fromkeys(i for hits in lists.values() for i, _ in hits[:TITLE_CHECK_TOP]))
        self._fill_docs(p.index, ids, docs, ctx, _consistency(req).get("consistency"))
        return names_title(terms, ((docs.get(i) or {}).get(p.title_field) for i in ids))

    def _parallel(self, calls: list[Callable[[], T]], ctx: RequestContext) -> list[T]:
        """Results in order. The first failure is raised once the others have been cancelled (not
        started) or have finished, and no wait outlives the request deadline: nothing is left running
        in the pool for a request that has already answered."""
        if len(calls) <= 1:
            return [c() for c in calls]
        futures = [self._pool.submit(contextvars.copy_context().run, c) for c in calls]
        done, pending = wait(futures, timeout=max(0.0, ctx.deadline - time.monotonic()), return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed or pending:
            for f in pending:
                f.cancel()
            wait(pending, timeout=max(0.0, ctx.deadline - time.monotonic()))
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            raise DeadlineExceeded(f"request deadline ({ctx.timeout_s:.1f} s) passed during recall")
        return [f.result() for f in futures]

    def _lexical(self, req: SearchRequest, index: str, fields: list[str] | None, k: int, p: Params,
                 ctx: RequestContext) -> list[tuple[str, float]]:
        filtered = bool(p.filter or req.filter is not None)
        with self._stage("lexical", self.lexical, ctx) as lex:  # filtered: over-fetch, the filter comes after
            hits = lex.search(index, req.text or "", k * FILTER_OVERFETCH if filtered else k, fields)
        if hits and filtered:
            # BM25 holds no metadata: the filter is applied by asking Milvus which of these ids pass it
            with self._stage("recall", self.deps.vectors, ctx) as vs:
                keep = vs.matching(index, [i for i, _ in hits], _filter_expr(vs, index, req, p), **_consistency(req))
            hits = [h for h in hits if h[0] in keep][:k]
        return hits

    def _rerank(self, query: str, hits: list[Hit], p: Params, index: str, ctx: RequestContext,
                docs: HitDocs) -> list[Hit]:
        """Cross-encoder scores for the first ``rerank_top_n`` hits that have text, ahead of the rest
        (their documents: from recall, or read into ``docs``)."""
        model = p.rerank_model
        if not model:
            raise BadInput("experiments config: rerank cross_encoder needs rerank_model")
        cand = hits[: p.rerank_top_n or DEFAULT_RERANK_N]
        self._fill_docs(index, [h.id for h in cand], docs, ctx)
        texts = [(h.id, t) for h in cand if (t := _rerank_text(docs.get(h.id) or {}, p.title_field)).strip()]
        if not texts:
            ctx.add_time("rerank", 0.0)
            return hits
        with self._stage("rerank", self.deps.text, ctx) as tok:
            batch = tok.tokenize(model, [query] * len(texts), [t for _, t in texts])
        with self._stage("rerank", self.deps.inference, ctx) as inf:
            scores = inf.infer(model, batch.tensors, "score")[:, 0]
        order = np.argsort(-scores, kind="stable")
        found = {h.id: h for h in hits}
        reranked = [Hit(texts[j][0], float(scores[j]), "rerank", found[texts[j][0]].sources) for j in order]
        done = {h.id for h in reranked}
        return reranked + [h for h in hits if h.id not in done]

    def embed(self, model: str, text: str | None = None, image: bytes | None = None) -> np.ndarray[Any, np.dtype[np.float32]]:
        """A model's vector for one text or image, through the same preprocessing and encoding as a search query."""
        ctx = RequestContext("embed", "embed", self.config.retrieval.request_timeout_s, self.deadline())
        with self.admission.slot(ctx.deadline):
            vec = self._embed(SearchRequest(scene="embed", text=text, image=image), model, ctx, where="")
        out: np.ndarray[Any, np.dtype[np.float32]] = np.asarray(vec, np.float32)[0]
        return out

    def models(self) -> list[dict[str, Any]]:
        """The models Triton serves, with their state and execution provider (GET /v1/models)."""
        ctx = RequestContext("models", "models", self.config.retrieval.request_timeout_s, self.deadline())
        with self.admission.slot(ctx.deadline), self._stage("models", self.deps.inference, ctx) as inf:
            return inf.models()

    def click(self, request_id: object, doc_id: object, user_id: str | None = None) -> None:
        if not isinstance(request_id, str) or not request_id or len(request_id) > 64:
            raise BadInput("request_id: required (the request_id of a search response)")
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > 512:
            raise BadInput("doc_id: required")
        if self.querylog is None:
            raise Unavailable("query log", "disabled in config (retrieval.query_log)")
        with within(self.deadline()):  # MongoDB down: the click's connect and write end with its deadline
            self.querylog.click(request_id, doc_id, user_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.querylog is not None:
            self.querylog.stop()
        self.retention.stop()
        self.deps.close()


def dense_shape(p: Params, depth: int) -> tuple[int, int]:
    """(hits to ask for, breadth to search with) for an arm's dense-only recall of a page ``depth`` deep.
    A reranked arm needs its recall_top_k candidates. Otherwise nothing reorders the hits: the page
    (and one beyond) is asked for, searched as broadly as for recall_top_k so it is that search's first
    hits, with less to send back and parse (measured with documents beside vectors: 100 hits 2.4-2.7 ms,
    21 hits 1.9-2.1 ms)."""
    k = max(p.recall_top_k or DEFAULT_RECALL, depth)
    return (k, 0) if p.rerank == "cross_encoder" else (depth, k)


def _consistency(req: SearchRequest) -> dict[str, str]:
    """A strong search asks Milvus for consistency level Strong (it sees every acknowledged write; BM25 and
    MongoDB always do); otherwise the collection's Bounded staleness (about a second) applies."""
    return {"consistency": "Strong"} if req.consistency == "strong" else {}


def _filter_expr(vs: VectorStore, index: str, req: SearchRequest, p: Params) -> str:
    """The arm's filter and the request's, as one Milvus expression over the index's stored fields."""
    return combine(p.filter or "", compile_filter(req.filter, vs.fields(index)) if req.filter is not None else "")


def _public(doc: dict[str, Any] | None, fields: list[str] | None = None) -> dict[str, Any] | None:
    """The document as a hit returns it: without MongoDB's _id, and only the requested fields."""
    if doc is None:
        return None
    if fields is not None:
        return {k: doc[k] for k in fields if k in doc and k not in RESERVED_KEYS}
    return {k: v for k, v in doc.items() if k not in RESERVED_KEYS}


def _rerank_text(doc: dict[str, object], title_field: str | None) -> str:
    """What the cross-encoder reads of a document: its text, after its title when the arm names a title field
    ("<title>: <text>", as the demo embeds its glosses), so a query that names the thing can match it."""
    text = str(doc.get("text", "") or "")
    title = str(doc.get(title_field, "") or "") if title_field else ""
    return f"{title}: {text}" if title.strip() and text.strip() else text
