"""Logging and metrics shared by the services: level and JSON lines applied, request ids on lines, process/GC collectors."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from mmsearch.errors import BadInput
from mmsearch.runtime.grpc_edge import grpc_edge
from mmsearch.runtime.observability import RpcMetrics, configure_logging, exposition, new_registry, request_context


@pytest.fixture
def restore_logging():
    root, ours = logging.getLogger(), logging.getLogger("mmsearch")
    handlers, level = list(root.handlers), ours.level
    yield
    root.handlers[:] = handlers
    ours.setLevel(level)


def test_json_lines_carry_the_request_id_and_the_level_applies(restore_logging):
    buf = io.StringIO()
    configure_logging("WARNING", json_lines=True, stream=buf)
    log = logging.getLogger("mmsearch.test")
    with request_context("req-123"):
        log.warning("dependency %s down", "milvus")
        log.info("not at WARNING")
    log.warning("outside")
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [(x["message"], x["request_id"], x["level"]) for x in lines] == [
        ("dependency milvus down", "req-123", "WARNING"), ("outside", "-", "WARNING")]


def test_plain_lines_show_the_request_id(restore_logging):
    buf = io.StringIO()
    configure_logging("INFO", stream=buf)
    with request_context("abc"):
        logging.getLogger("mmsearch.x").info("hello")
    assert "[abc] hello" in buf.getvalue()


def test_registry_has_process_and_gc_collectors_and_the_standard_content_type():
    body, content_type = exposition(new_registry())
    text = body.decode()
    assert "process_resident_memory_bytes" in text and "python_gc_collections_total" in text
    assert content_type == CONTENT_TYPE_LATEST and content_type.startswith("text/plain; version=")


class _Context:
    def abort(self, code, details):
        raise RuntimeError(code, details)


class _Servicer:
    def __init__(self) -> None:
        self.rpc_metrics = RpcMetrics(new_registry(), "test")

    @grpc_edge(logging.getLogger("mmsearch.test"))
    def Ok(self, request, context):
        return "fine"

    @grpc_edge(logging.getLogger("mmsearch.test"))
    def Bad(self, request, context):
        raise BadInput("x: wrong")


def test_grpc_edge_counts_calls_by_method_and_status():
    s = _Servicer()
    assert s.Ok(None, _Context()) == "fine"
    with pytest.raises(RuntimeError):
        s.Bad(None, _Context())
    samples = {(m.labels["method"], m.labels["code"]): m.value for fam in [s.rpc_metrics.calls] for metric in fam.collect()
               for m in metric.samples if m.name.endswith("_total")}
    assert samples == {("Ok", "OK"): 1.0, ("Bad", grpc.StatusCode.INVALID_ARGUMENT.name): 1.0}


def test_wsgi_server_stop_ends_its_threads_and_connections():
    import threading
    import urllib.request

    from mmsearch.runtime.wsgi import WsgiServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    from mmsearch.runtime.net import wait_until

    before = threading.active_count()
    server = WsgiServer(app, "127.0.0.1", 0, 4, "test")
    assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5).read() == b"ok"
    server.stop()
    assert wait_until(lambda: threading.active_count() <= before, 5, 0.05), threading.enumerate()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=2)
