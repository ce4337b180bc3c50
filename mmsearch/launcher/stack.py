"""The whole stack as local processes, started in dependency order, each awaited by its health check.

secantusdb -> Milvus (standalone server) -> Triton -> preprocess service -> retrieval service (-> web UI).
Every child gets the same configuration through MMSEARCH_* variables (config_to_env), logs to
<data_dir>/logs/<name>.log, and runs in its own process group; stop() stops them in reverse order
and leaves nothing running. This is the composition root behind `mmsearch up` and the benchmarks:
it starts the services' CLIs as processes and never imports them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from mmsearch.config import Config, config_to_env
from mmsearch.runtime.embedded import MilvusServer, SecantusServer, embedded_dir
from mmsearch.runtime.endpoints import bound, record_stack
from mmsearch.runtime.net import grpc_serving, http_ok, read_ports
from mmsearch.runtime.supervisor import ChildProcess

log = logging.getLogger("mmsearch.launcher.stack")
ORDER = ("mongo", "milvus", "triton", "preprocess", "retrieval", "web")


def with_free_ports(config: Config) -> Config:
    """Every port of the stack set to 0 (tests, benchmarks, a second stack beside one): each of our
    servers binds a free port itself and reports it, so no other process can take it in between."""
    return config.model_copy(update={
        "serving": config.serving.model_copy(update=dict(http_port=0, grpc_port=0, metrics_port=0)),
        "preprocess": config.preprocess.model_copy(update=dict(port=0)),  # (its /metrics then binds a free port too)
        "retrieval": config.retrieval.model_copy(update=dict(http_port=0, grpc_port=0)),
        "web": config.web.model_copy(update=dict(port=0)),
    })


def _http_probe(host: str, path: str) -> Callable[[dict[str, int]], bool]:
    return lambda ports: http_ok(f"http://{host}:{ports['http']}{path}")


def _grpc_probe(host: str) -> Callable[[dict[str, int]], bool]:
    return lambda ports: grpc_serving(f"{host}:{ports['grpc']}")


class Stack:
    def __init__(self, config: Config, environ: dict[str, str] | None = None):
        self.config = config
        self.logs = Path(config.data_dir) / "logs"
        self.base_env = dict(environ or {})
        self.running: dict[str, ChildProcess] = {}
        self.ports: dict[str, dict[str, int]] = {}  # what each of our services reported it bound

    def _env(self) -> dict[str, str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
        env.update(self.base_env)
        env.update(config_to_env(self.config))
        return env

    def _service(self, name: str, command: str, probe: Callable[[dict[str, int]], bool], timeout_s: float,
                 *args: str) -> ChildProcess:
        """One of our servers as a child process: ready once it has reported the ports it bound (a port
        of 0 in the config: a free one, taken by the server itself) and its probe answers on them."""
        ports_file = Path(self.config.data_dir) / "run" / f"{name}.ports.json"
        ports_file.unlink(missing_ok=True)  # a previous run's ports must not be probed

        def ready() -> bool:
            ports = read_ports(ports_file)
            return ports is not None and probe(ports)

        child = ChildProcess(name, [sys.executable, "-m", "mmsearch", command, *args, "--ports-file", str(ports_file)],
                             self.logs / f"{name}.log", ready, timeout_s, self._env())
        self.ports[name] = read_ports(ports_file) or {}
        self.config = bound(self.config, name, self.ports[name])
        return child

    def start(self, services: tuple[str, ...] = ORDER[:-1]) -> "Stack":
        c = self.config
        try:
            for name in ORDER:
                if name not in services:
                    continue
                log.info("starting %s", name)
                s: ChildProcess
                if name == "mongo" and not c.mongo.uri:
                    s = SecantusServer(embedded_dir("mongo", c.data_dir), log_file=self.logs / "secantusdb.log")
                    self.config = c.model_copy(update={"mongo": c.mongo.model_copy(update={"uri": s.uri})})
                elif name == "milvus" and not c.milvus.uri:
                    s = MilvusServer(embedded_dir("milvus", c.data_dir), log_file=self.logs / "milvus.log")
                    self.config = c.model_copy(update={"milvus": c.milvus.model_copy(update={"uri": s.uri})})
                elif name == "triton":
                    s = self._service(name, "serve-models", _http_probe(c.serving.host, "/v2/health/ready"), 180,
                                      "--log-file", str(self.logs / "tritonserver.log"))
                elif name == "preprocess":
                    s = self._service(name, "serve-preprocess", _grpc_probe(c.preprocess.host), 120)
                elif name == "retrieval":
                    s = self._service(name, "serve-retrieval", _http_probe(c.retrieval.host, "/readyz"), 120)
                elif name == "web":
                    if "retrieval" in self.running:  # the page talks to the retrieval service this stack started
                        r = c.retrieval
                        self.config = c.model_copy(update={"web": c.web.model_copy(
                            update={"retrieval_url": f"http://{r.host}:{r.http_port}"})})
                    s = self._service(name, "serve-web", _http_probe(c.web.host, "/healthz"), 60)
                else:
                    continue
                self.running[name] = s
                c = self.config
        except BaseException:
            self.stop()
            raise
        return self

    def record(self) -> Path:
        """<data_dir>/run/stack.json: where `mmsearch up --check` and `mmsearch search` find this stack."""
        return record_stack(self.config, self.ports)

    def health(self) -> dict[str, bool]:
        return {name: s.alive() and s.ready() for name, s in self.running.items()}

    def stop(self) -> None:
        for name in reversed(list(self.running)):
            log.info("stopping %s", name)
            self.running.pop(name).stop()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
