"""The gate's count of the searches it has sent on and not yet seen answered, and its refusals.

The retrieval service admits ``max_inflight`` searches and queues ``max_queue`` behind them
(retrieval_service/admission.py); everything beyond is refused there. The gate, in its own process in
front of the service's HTTP API, refuses that beyond itself: once ``capacity`` (= max_inflight +
max_queue) searches are with the service, the next is answered 429 at the gate and never forwarded.
The service still refuses what only it can judge (a deadline its queue cannot meet, gRPC callers the
gate does not see).

Retry-After is the recent latency of a forwarded search (an EWMA): with the gate full, that is about
how long the service's queue takes to drain, the same thing the service's own refusals estimate.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from mmsearch.errors import Overloaded

EWMA_ALPHA = 0.1
MIN_RETRY_AFTER_S = 0.01
GATED = frozenset({("POST", "/v1/search"), ("POST", "/v1/embed")})  # what holds one of the service's admission slots


class GateAdmission:
    """Counts are kept by one event loop thread: no lock."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity >= 1")
        self.capacity = capacity
        self.inflight = 0
        self.latency_s = 0.0  # EWMA of a forwarded search's round trip through the service (0: none yet)
        self.registry = CollectorRegistry(auto_describe=True)  # its own: appended to the service's /metrics
        self.requests = Counter("mmsearch_gate_requests", "Requests at the admission gate, by what it did with them",
                                ["outcome"], registry=self.registry)
        gauge = Gauge("mmsearch_gate", "The admission gate's limit and load", ["what"], registry=self.registry)
        gauge.labels("capacity").set(capacity)
        gauge.labels("inflight").set_function(lambda: self.inflight)
        gauge.labels("latency_seconds").set_function(lambda: self.latency_s)

    def retry_after_s(self) -> float:
        return max(MIN_RETRY_AFTER_S, self.latency_s)

    def enter(self) -> Overloaded | None:
        """Take a place for a search about to be forwarded; the refusal when every place is taken."""
        if self.inflight >= self.capacity:
            self.requests.labels("refused").inc()
            e = Overloaded(f"busy: {self.inflight} searches in flight or queued at the search service; retry shortly",
                           retry_after_s=self.retry_after_s())
            return e
        self.inflight += 1
        self.requests.labels("forwarded").inc()
        return None

    def leave(self, seconds: float | None) -> None:
        """A forwarded search has its answer (``seconds`` its round trip), or failed (None: not timed)."""
        self.inflight -= 1
        if seconds is not None:
            self.latency_s = seconds if self.latency_s <= 0 else self.latency_s + EWMA_ALPHA * (seconds - self.latency_s)
