"""create_server(config, http_address, grpc_address): the retrieval service with both front ends."""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mmsearch.config import Config
from mmsearch.errors import Unavailable
from mmsearch.protos import search_pb2, search_pb2_grpc
from mmsearch.retrieval_service.config_source import ConsulWatcher, ExperimentStore, FileWatcher
from mmsearch.retrieval_service.grpc_api import SearchServicer
from mmsearch.retrieval_service.http_app import create_app
from mmsearch.retrieval_service.pipeline import SearchService
from mmsearch.runtime.observability import RpcMetrics
from mmsearch.runtime.wsgi import WsgiServer

log = logging.getLogger("mmsearch.retrieval")
SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["Search"].full_name


class RetrievalServer:
    def __init__(self, service: SearchService, watcher, http_server: WsgiServer, grpc_server: grpc.Server, grpc_port: int,
                 health_servicer):
        self.service, self.watcher = service, watcher
        self._http, self._grpc, self.health = http_server, grpc_server, health_servicer
        self.app = http_server.app
        self.http_port = http_server.port
        self.grpc_port = grpc_port

    def stop(self) -> None:
        self.health.enter_graceful_shutdown()
        self._http.stop()
        self._grpc.stop(2).wait()
        self.watcher.stop()
        self.service.close()


def start_watcher(config: Config, store: ExperimentStore):
    if config.consul.addr:
        return ConsulWatcher(store, config.consul.addr, config.consul.key, token=config.consul.token).start()
    return FileWatcher(store, Path(config.experiments_file)).start()


def create_server(config: Config, http_address: str | None = None, grpc_address: str | None = None) -> RetrievalServer:
    r = config.retrieval
    store = ExperimentStore()
    watcher = start_watcher(config, store)
    service = SearchService(config, store)
    host, _, port = (http_address or f"{r.host}:{r.http_port}").rpartition(":")
    try:
        for local in (service.deps.tokenizers, service.deps.encoders):  # load at start, not on the first query
            if local is not None:
                try:
                    local.get()
                except Unavailable as e:
                    log.warning("text queries cannot be served yet: %s", e)
        service.documents.recover_all()  # writes a crash left half-done are whole again before anything is served
        # threads enough for every admitted, queued and refused request to reach admission control:
        # a request waiting for a server thread would queue where nothing bounds or refuses it
        http_server = WsgiServer(create_app(service), host, int(port), max(r.workers, r.max_inflight + r.max_queue + 32),
                                 "retrieval http")
        log.info("API keys %s", "required" if service.auth.enabled else "off (retrieval.api_keys is empty)")
    except BaseException:  # nothing started here outlives a failed start
        watcher.stop()
        service.close()
        raise
    threads = max(r.workers, r.max_inflight + r.max_queue + 32)  # (as the HTTP server: every call reaches admission)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="retrieval"),
                         maximum_concurrent_rpcs=threads,  # beyond: RESOURCE_EXHAUSTED from gRPC itself, never an unbounded queue
                         options=[("grpc.max_receive_message_length", int(r.max_body_mb * 1024 * 1024)),
                                  ("grpc.so_reuseport", 0)])
    servicer = SearchServicer(service)
    servicer.rpc_metrics = RpcMetrics(service.metrics.registry, "retrieval")  # on the HTTP app's /metrics
    search_pb2_grpc.add_SearchServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    grpc_port = server.add_insecure_port(grpc_address or f"{r.host}:{r.grpc_port}")
    if grpc_port == 0:
        http_server.stop()
        watcher.stop()
        service.close()
        raise Unavailable("retrieval grpc", f"cannot bind {grpc_address}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RetrievalServer(service, watcher, http_server, server, grpc_port, health_servicer)
