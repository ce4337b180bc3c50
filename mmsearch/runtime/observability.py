"""Logs and metrics every service shares: the configured log level, optional JSON log lines that
carry the id of the request being served, and Prometheus registries with process and GC collectors
served with the standard exposition content type."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from http.server import ThreadingHTTPServer
from typing import IO, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector, generate_latest

from mmsearch.errors import Unavailable

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_HANDLER_NAME = "mmsearch-observability"


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers parse without a grok pattern."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage(), "request_id": getattr(record, "request_id", "-")}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "INFO", json_lines: bool = False, stream: IO[str] | None = None) -> logging.Handler:
    """Apply config ``log_level`` / ``log_json`` to mmsearch's loggers (once per process: a second call replaces the first)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_RequestId())
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(name)s %(levelname)s [%(request_id)s] %(message)s"))
    # our handler replaces the plain one run_cli installs, so a line is written once
    for h in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(h)
    root.addHandler(handler)
    logging.getLogger("mmsearch").setLevel(level)
    return handler


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Log lines written while serving this request carry its id."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def new_registry() -> CollectorRegistry:
    """A registry with the process (CPU, memory, open files), platform and GC collectors beside the service's own metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class RpcMetrics:
    """Calls and latency per gRPC method and status code (grpc_edge records them)."""

    def __init__(self, registry: CollectorRegistry, service: str):
        self.calls = Counter("mmsearch_rpc_requests_total", "gRPC calls by method and status", ["service", "method", "code"],
                             registry=registry)
        self.latency = Histogram("mmsearch_rpc_seconds", "gRPC call latency", ["service", "method"], registry=registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.service = service

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(self.service, method, code).inc()
        self.latency.labels(self.service, method).observe(seconds)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and content type of a /metrics answer."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsServer:
    """/metrics over HTTP for a service that has no HTTP server of its own (the gRPC preprocess service)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int):
        from prometheus_client.exposition import MetricsHandler

        handler = MetricsHandler.factory(registry)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise Unavailable("metrics endpoint", f"cannot bind {host}:{port}: {e}") from e
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
