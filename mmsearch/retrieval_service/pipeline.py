"""The search pipeline: split -> qp -> embed -> recall -> rerank -> summary, with per-stage timings.

Every dependency call goes through ``_stage``: it checks the request deadline first, times the
stage into the response and the metrics, and on Unavailable resets that dependency's connection so
the next request reconnects (recovery without a restart).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from mmsearch.config import Config
from mmsearch.errors import BadInput, DeadlineExceeded, MMSearchError, NotFound, Unavailable
from mmsearch.retrieval_service.config_source import ExperimentStore
from mmsearch.retrieval_service.deps import Deps, Lazy
from mmsearch.experiments import Params, assign
from mmsearch.retrieval_service.metrics import Metrics
from mmsearch.retrieval_service.querylog import QueryLog
from mmsearch.retrieval_service.request import SearchRequest

DEFAULT_TOP_K = 20
DEFAULT_RECALL = 100
DEFAULT_RERANK_N = 50


class SearchService:
    def __init__(self, config: Config, experiments: ExperimentStore, deps: Deps | None = None):
        self.config = config
        self.experiments = experiments
        self.deps = deps or Deps(config)
        self.metrics = Metrics()
        self.querylog = QueryLog(self.deps.documents, self.metrics) if config.retrieval.query_log else None

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _stage(self, name: str, dep: Lazy | None, timings: dict[str, float], deadline: float, labels: tuple[str, str]) -> Iterator[Any]:
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"request deadline ({self.config.retrieval.request_timeout_s:.1f} s) passed before {name}")
        t0 = time.perf_counter()
        try:
            yield dep.get() if dep is not None else None
        except Unavailable:
            if dep is not None:
                dep.reset()
            raise
        finally:
            dt = time.perf_counter() - t0
            timings[name] = timings.get(name, 0.0) + dt * 1000
            self.metrics.stage.labels(labels[0], labels[1], name).observe(dt)

    def ready(self) -> dict[str, bool]:
        out = {"experiments": self.experiments.ready()}
        out.update({d.name: d.healthy() for d in self.deps.all})
        return out

    # ------------------------------------------------------------------ search
    def search(self, req: SearchRequest) -> dict[str, Any]:
        t_start = time.perf_counter()
        deadline = time.monotonic() + self.config.retrieval.request_timeout_s
        timings: dict[str, float] = {}
        live = self.experiments.live
        scene = live.experiments.scenes.get(req.scene)
        if scene is None:
            raise BadInput(f"scene: {req.scene!r} is not configured (configured: {', '.join(live.experiments.scenes)})")
        user_id = req.user_id or uuid.uuid4().hex
        t0 = time.perf_counter()
        arms, params, buckets = assign(scene, user_id, req.force)
        timings["split"] = (time.perf_counter() - t0) * 1000
        arm_label = ",".join(f"{k}={v}" for k, v in arms.items()) or "default"
        labels = (req.scene, arm_label)
        try:
            results = self._run(req, params, timings, deadline, labels)
        except MMSearchError as e:
            self.metrics.requests.labels(req.scene, arm_label, type(e).__name__).inc()
            self.metrics.errors.labels(type(e).__name__, getattr(e, "dependency", "")).inc()
            raise
        timings["total"] = (time.perf_counter() - t_start) * 1000
        self.metrics.requests.labels(req.scene, arm_label, "ok").inc()
        request_id = uuid.uuid4().hex
        if self.querylog is not None:
            query = {"text": req.text} if req.text is not None else {"image_sha256": hashlib.sha256(req.image).hexdigest()}
            self.querylog.record({"_id": request_id, "ts": time.time(), "scene": req.scene, "user_id": user_id,
                                  "buckets": buckets, "arms": arms, "query": query, "config_version": live.version,
                                  "results": [r["id"] for r in results], "clicks": []})
        return {"request_id": request_id, "user_id": user_id, "results": results, "experiment": arms,
                "timings_ms": {k: round(v, 3) for k, v in timings.items()}, "config_version": live.version}

    def _run(self, req: SearchRequest, p: Params, timings: dict[str, float], deadline: float, labels) -> list[dict]:
        model, index = p.embed_model, p.index
        if not model or not index:
            raise BadInput(f"scene {req.scene}: the experiments config gives no embed_model/index for this request")
        top_k = req.top_k or p.top_k or DEFAULT_TOP_K
        recall_k = max(p.recall_top_k or DEFAULT_RECALL, top_k)
        with self._stage("qp", self.deps.preprocess, timings, deadline, labels) as pre:
            try:
                if req.image is not None:
                    tensors = {"pixel_values": pre.process_images(model, [req.image])}
                else:
                    tensors = pre.tokenize(model, [req.text], bucket=True).tensors
            except BadInput as e:  # the service names images[0] / texts[0]; the caller sent query.*
                raise BadInput(f"{'query.image_b64' if req.image is not None else 'query.text'}: {e.message}") from e
        with self._stage("embed", self.deps.inference, timings, deadline, labels) as inf:
            vec = inf.infer(model, tensors, "embedding")
        with self._stage("recall", self.deps.vectors, timings, deadline, labels) as vs:
            try:
                hits = vs.search(index, vec, recall_k, p.filter or "")[0]
            except MMSearchError as e:
                if "not exist" in e.message or "not found" in e.message.lower():
                    raise NotFound(f"index {index!r} not found in milvus") from e
                raise
        docs: dict[str, dict] = {}
        if p.rerank == "cross_encoder" and req.text is not None and hits:
            hits, docs = self._rerank(req.text, hits, p, index, timings, deadline, labels)
        else:
            timings["rerank"] = 0.0
        hits = hits[:top_k]
        with self._stage("summary", self.deps.documents, timings, deadline, labels) as ds:
            missing = [h for h, _ in hits if h not in docs]
            if missing:
                docs.update({i: d for i, d in zip(missing, ds.get_many(index, missing)) if d is not None})
        return [{"id": i, "score": float(s), "doc": _public(docs.get(i))} for i, s in hits]

    def _rerank(self, query: str, hits, p: Params, index: str, timings, deadline, labels):
        model = p.rerank_model
        if not model:
            raise BadInput("experiments config: rerank cross_encoder needs rerank_model")
        cand = hits[: p.rerank_top_n or DEFAULT_RERANK_N]
        with self._stage("summary", self.deps.documents, timings, deadline, labels) as ds:
            docs = {i: d for (i, _), d in zip(cand, ds.get_many(index, [i for i, _ in cand])) if d is not None}
        texts = [(i, str(docs[i].get("text", ""))) for i, _ in cand if i in docs and str(docs[i].get("text", "")).strip()]
        if not texts:
            timings["rerank"] = 0.0
            return hits, docs
        with self._stage("rerank", self.deps.preprocess, timings, deadline, labels) as pre:
            batch = pre.tokenize(model, [query] * len(texts), [t for _, t in texts])
        with self._stage("rerank", self.deps.inference, timings, deadline, labels) as inf:
            scores = inf.infer(model, batch.tensors, "score")[:, 0]
        order = np.argsort(-scores, kind="stable")
        reranked = [(texts[j][0], float(scores[j])) for j in order]
        rest = [h for h in hits if h[0] not in {i for i, _ in reranked}]
        return reranked + rest, docs

    def click(self, request_id: str, doc_id: str, user_id: str | None = None) -> None:
        if not isinstance(request_id, str) or not request_id or len(request_id) > 64:
            raise BadInput("request_id: required (the request_id of a search response)")
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > 512:
            raise BadInput("doc_id: required")
        if self.querylog is None:
            raise Unavailable("query log", "disabled in config (retrieval.query_log)")
        self.querylog.click(request_id, doc_id, user_id)

    def close(self) -> None:
        if self.querylog is not None:
            self.querylog.stop()
        self.deps.close()


def _public(doc: dict | None) -> dict | None:
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if k != "_id"}
