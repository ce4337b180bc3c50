"""create_server(config, address): the preprocess gRPC server with health and reflection."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mmsearch.config import Config
from mmsearch.errors import Unavailable
from mmsearch.modelrepo.preprocess_registry import Registry
from mmsearch.modelrepo.repo_watch import RepositoryWatcher
from mmsearch.preprocess_service.servicer import PreprocessServicer
from mmsearch.protos import preprocess_pb2, preprocess_pb2_grpc
from mmsearch.runtime.observability import MetricsServer, RpcMetrics, new_registry

SERVICE_NAME = preprocess_pb2.DESCRIPTOR.services_by_name["Preprocess"].full_name


class PreprocessServer:
    """A started server: ``port`` is the bound one (address ``127.0.0.1:0`` picks a free port)."""

    def __init__(self, server: grpc.Server, port: int, servicer: PreprocessServicer, health_servicer: health.HealthServicer,
                 metrics: MetricsServer | None = None, watcher: RepositoryWatcher | None = None):
        self.server = server
        self.watcher = watcher  # loads models exported after start (config repository_poll_s)
        self.port = port
        self.servicer = servicer
        self.health = health_servicer
        self.metrics = metrics  # /metrics over HTTP (config preprocess.metrics_port; None when 0)

    def stop(self, grace: float | None = 2.0) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()

    def wait(self) -> None:
        self.server.wait_for_termination()


def create_server(config: Config, address: str | None = None, repo: Path | None = None) -> PreprocessServer:
    """Load every model's preprocessing from the repository, bind, start; heavy work happens here, once."""
    cfg = config.preprocess
    registry = Registry(repo or config.model_repository).reload()
    max_bytes = cfg.max_message_mb * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="preprocess"),
        options=[("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes),
                 ("grpc.so_reuseport", 0)],
    )
    servicer = PreprocessServicer(registry, cfg)
    preprocess_pb2_grpc.add_PreprocessServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = address or f"{cfg.host}:{cfg.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise Unavailable("preprocess service", f"cannot bind {address}: {e}") from e
    if port == 0:
        raise Unavailable("preprocess service", f"cannot bind {address}")
    metrics = None
    if cfg.metrics_port:
        prom = new_registry()
        servicer.rpc_metrics = RpcMetrics(prom, "preprocess")
        # an explicit ':0' address (tests) picks a free port for /metrics as well
        metrics_port = 0 if address.endswith(":0") else cfg.metrics_port
        try:
            metrics = MetricsServer(prom, address.rsplit(":", 1)[0].strip("[]") or cfg.host, metrics_port)
        except Unavailable:
            server.stop(None)
            raise
    def set_health() -> None:
        """NOT_SERVING while a model of the repository failed to load (ListModels says which):
        a half-loaded service must not get traffic meant for the missing model."""
        status = health_pb2.HealthCheckResponse.NOT_SERVING if registry.errors else health_pb2.HealthCheckResponse.SERVING
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, status)

    servicer.on_reload = set_health
    server.start()
    set_health()

    def reload(_names: list[str]) -> None:
        registry.reload()
        set_health()

    watcher = RepositoryWatcher(registry.repo, reload, config.repository_poll_s).start()
    return PreprocessServer(server, port, servicer, health_servicer, metrics, watcher)
