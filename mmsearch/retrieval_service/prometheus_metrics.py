"""Prometheus metrics per scene, arm and stage (a registry per service instance, so tests can run several)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mmsearch.runtime.observability import exposition, new_registry

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        self.stage = Histogram("mmsearch_stage_seconds", "Latency of one pipeline stage", ["scene", "arm", "stage"],
                               buckets=STAGE_BUCKETS, registry=self.registry)
        self.requests = Counter("mmsearch_requests_total", "Search requests by outcome", ["scene", "arm", "status"],
                                registry=self.registry)
        self.errors = Counter("mmsearch_errors_total", "Errors by kind and dependency", ["kind", "dependency"],
                              registry=self.registry)
        self.clicks = Counter("mmsearch_clicks_total", "Clicks recorded", registry=self.registry)
        self.admission = Gauge("mmsearch_admission", "Admission control now (inflight, waiting) and its limits "
                               "(max_inflight, max_queue) and the service-time estimate it queues by (service_seconds)", ["what"], registry=self.registry)
        self.querylog_dropped = Counter("mmsearch_querylog_dropped_total", "Query-log entries dropped (queue full)",
                                        registry=self.registry)

        self.documents_encoded = Counter("mmsearch_documents_encoded_total", "Documents encoded by the documents API "
                                         "(new or changed embedded content; unchanged ones are not)", ["index"], registry=self.registry)
        self.document_writes = Counter("mmsearch_document_writes_total", "Documents written by the documents API",
                                       ["index", "op"], registry=self.registry)
        self.ranker_fallbacks = Counter("mmsearch_ranker_fallbacks_total", "Searches of a learned arm fused by RRF instead "
                                        "(its ranker missing, broken or trained on other sources)", ["ranker"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return exposition(self.registry)
