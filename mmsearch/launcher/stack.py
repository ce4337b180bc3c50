"""The whole stack as local processes, started in dependency order, each awaited by its health check.

secantusdb -> Milvus (standalone server) -> Triton -> preprocess service -> retrieval service -> its admission
gate (-> web UI). The gate (mmsearch/retrieval_service/gate/, on unless ``gate.enabled`` is false) comes with the retrieval service:
it takes the search API's HTTP port and the service's HTTP API binds a free one behind it.
Every child gets the same configuration through MMSEARCH_* variables (config_to_env), logs to
<data_dir>/logs/<name>.log, and runs in its own process group; stop() stops them in reverse order
and leaves nothing running; restart() starts one part again after a crash (mmsearch up's Supervisor).
This is the composition root behind `mmsearch up` and the benchmarks:
it starts the services' CLIs as processes and never imports them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from mmsearch.config import Config, config_to_env
from mmsearch.errors import Unavailable
from mmsearch.runtime.embedded import MilvusServer, SecantusServer, embedded_dir
from mmsearch.runtime.endpoints import SERVICE_HOST, bound, record_stack
from mmsearch.runtime.net import accepts, free_port, grpc_serving, http_ok, port_free, read_ports, wait_until
from mmsearch.runtime.supervisor import ChildProcess

log = logging.getLogger("mmsearch.launcher.stack")
ORDER = ("mongo", "milvus", "triton", "preprocess", "retrieval", "gate", "web")


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
        self.embedded: set[str] = set()  # the stores ("mongo", "milvus") this stack runs itself
        # with a gate: the search API's public HTTP port (the gate's) and the service's own behind it (0: not bound yet)
        self.public_http_port = config.retrieval.http_port
        self.service_http_port = 0

    def _env(self) -> dict[str, str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
        env.update(self.base_env)
        # the stores this stack runs itself are found by the services through their endpoint files
        # (embedded.running_store), not a fixed URI: one started again on fresh ports is found again
        cfg = self.config
        blank = {k: getattr(cfg, k).model_copy(update={"uri": ""}) for k in sorted(self.embedded)}
        env.update(config_to_env(cfg.model_copy(update=blank) if blank else cfg))
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

    def _start_one(self, name: str) -> ChildProcess | None:
        """Start one part of the stack (None: nothing to start, e.g. a store configured elsewhere)."""
        c = self.config
        s: ChildProcess
        if name in ("mongo", "milvus") and getattr(c, name).uri and name not in self.embedded:
            return None  # a server configured by URI is not ours to run
        if name == "mongo":
            s = SecantusServer(embedded_dir("mongo", c.data_dir), log_file=self.logs / "secantusdb.log")
            self.config = c.model_copy(update={"mongo": c.mongo.model_copy(update={"uri": s.uri})})
        elif name == "milvus":
            s = MilvusServer(embedded_dir("milvus", c.data_dir), log_file=self.logs / "milvus.log")
            self.config = c.model_copy(update={"milvus": c.milvus.model_copy(update={"uri": s.uri})})
        elif name == "triton":
            s = self._service(name, "serve-models", _http_probe(c.serving.host, "/v2/health/ready"), 180,
                              "--log-file", str(self.logs / "tritonserver.log"))
        elif name == "preprocess":
            s = self._service(name, "serve-preprocess", _grpc_probe(c.preprocess.host), 120)
        elif name == "retrieval":
            gated = c.gate.enabled
            if gated and not self.service_http_port:
                # on loopback only (nothing reaches the service but through the gate), below the ephemeral
                # range (a restart needs the same port back, and any outgoing connection could take one from it)
                self.service_http_port = free_port(SERVICE_HOST)
            args = ("--http", f"{SERVICE_HOST}:{self.service_http_port}") if gated else ()
            probe_host = SERVICE_HOST if gated else c.retrieval.host
            s = self._service(name, "serve-retrieval", _http_probe(probe_host, "/readyz"), 120, *args)
            if gated:  # the public port stays the gate's
                self.service_http_port = self.ports[name]["http"]
                self.config = self.config.model_copy(update={"retrieval": self.config.retrieval.model_copy(
                    update={"http_port": self.public_http_port})})
        elif name == "gate":
            if not c.gate.enabled or "retrieval" not in self.running:
                return None
            host = c.retrieval.host
            # ready once it listens: its every HTTP path is the service's (a gate started while the service is
            # down must not count as a failed start)
            s = self._service(name, "serve-gate", lambda ports: accepts(host, ports["http"]), 60,
                              "--listen", f"{host}:{self.public_http_port}", "--upstream", f"http://{SERVICE_HOST}:{self.service_http_port}")
            self.public_http_port = self.ports[name]["http"]  # (a port of 0: the free one it bound; a restart keeps it)
        elif name == "web":
            if "retrieval" in self.running:  # the page talks to the retrieval service this stack started
                r = c.retrieval
                self.config = c.model_copy(update={"web": c.web.model_copy(
                    update={"retrieval_url": f"http://{r.host}:{r.http_port}"})})
            s = self._service(name, "serve-web", _http_probe(self.config.web.host, "/healthz"), 60)
        else:
            return None
        if name in ("mongo", "milvus"):
            self.embedded.add(name)
        return s

    def start(self, services: tuple[str, ...] = ORDER[:-1]) -> "Stack":
        try:
            if "retrieval" in services:  # the gate comes with the service it guards
                services = (*services, "gate")
            for name in ORDER:
                if name not in services:
                    continue
                log.info("starting %s", name)
                s = self._start_one(name)
                if s is not None:
                    self.running[name] = s
        except BaseException:
            self.stop()
            raise
        return self

    def _host(self, name: str) -> str:
        c = self.config
        return {"triton": c.serving.host, "preprocess": c.preprocess.host,
                "retrieval": SERVICE_HOST if c.gate.enabled else c.retrieval.host, "gate": c.retrieval.host,
                "web": c.web.host}.get(name, "127.0.0.1")

    def restart(self, name: str, free_wait_s: float = 30.0) -> ChildProcess:
        """``name`` started again after it died (the Supervisor calls this). Our servers come back on the
        ports they had (recorded in stack.json, passed to whatever depends on them): what is left of the
        dead one's group is stopped and its ports awaited free first (tritonserver, a grandchild, ends on
        its SIGTERM from PR_SET_PDEATHSIG within --exit-timeout-secs). The embedded stores come back on
        fresh ports (DESIGN: Milvus started right after a SIGKILL on the same ports hung 2 of 2 times,
        fresh ports 4 of 4); the services find them through the stores' endpoint files (see _env)."""
        old = self.running.get(name)
        if old is not None:
            old.stop(0)
        host, ports = self._host(name), [p for p in self.ports.get(name, {}).values() if p]
        if ports and not wait_until(lambda: all(port_free(host, p) for p in ports), free_wait_s, 0.1):
            raise Unavailable(name, f"its ports {ports} on {host} are still taken {free_wait_s:.0f} s after it died")
        s = self._start_one(name)
        if s is None:
            raise Unavailable(name, "not a part of this stack")
        self.running[name] = s  # (in place: the stop order stays the start order reversed)
        return s

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
