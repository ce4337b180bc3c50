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
from functools import partial
from pathlib import Path

from mmsearch.config import Config, config_to_env
from mmsearch.embedded import MilvusServer, SecantusServer, embedded_dir
from mmsearch.net import free_port, grpc_serving, http_ok
from mmsearch.supervisor import ChildProcess

log = logging.getLogger("mmsearch.launcher.stack")
ORDER = ("mongo", "milvus", "triton", "preprocess", "retrieval", "web")


def with_free_ports(config: Config) -> Config:
    """Every port of the stack replaced by a free one (tests, benchmarks, a second stack beside one)."""
    return config.model_copy(update={
        "serving": config.serving.model_copy(update=dict(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())),
        "preprocess": config.preprocess.model_copy(update=dict(port=free_port(), metrics_port=free_port())),
        "retrieval": config.retrieval.model_copy(update=dict(http_port=free_port(), grpc_port=free_port())),
        "web": config.web.model_copy(update=dict(port=free_port())),
    })


class Stack:
    def __init__(self, config: Config, environ: dict[str, str] | None = None):
        self.config = config
        self.logs = Path(config.data_dir) / "logs"
        self.base_env = dict(environ or {})
        self.running: dict[str, ChildProcess] = {}

    def _env(self) -> dict[str, str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
        env.update(self.base_env)
        env.update(config_to_env(self.config))
        return env

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mmsearch", *args]

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
                    self.config = c = c.model_copy(update={"mongo": c.mongo.model_copy(update={"uri": s.uri})})
                elif name == "milvus" and not c.milvus.uri:
                    s = MilvusServer(embedded_dir("milvus", c.data_dir), log_file=self.logs / "milvus.log")
                    self.config = c = c.model_copy(update={"milvus": c.milvus.model_copy(update={"uri": s.uri})})
                elif name == "triton":
                    sv = c.serving
                    s = ChildProcess(name, self._cli("serve-models", "--log-file", str(self.logs / "tritonserver.log")),
                                     self.logs / "triton.log", partial(http_ok, f"http://{sv.host}:{sv.http_port}/v2/health/ready"),
                                     180, self._env())
                elif name == "preprocess":
                    p = c.preprocess
                    s = ChildProcess(name, self._cli("serve-preprocess"), self.logs / "preprocess.log",
                                     partial(grpc_serving, f"{p.host}:{p.port}"), 120, self._env())
                elif name == "retrieval":
                    r = c.retrieval
                    s = ChildProcess(name, self._cli("serve-retrieval"), self.logs / "retrieval.log",
                                     partial(http_ok, f"http://{r.host}:{r.http_port}/readyz"), 120, self._env())
                elif name == "web":
                    if "retrieval" in self.running:  # the page talks to the retrieval service this stack started
                        r = c.retrieval
                        self.config = c = c.model_copy(update={"web": c.web.model_copy(
                            update={"retrieval_url": f"http://{r.host}:{r.http_port}"})})
                    w = c.web
                    s = ChildProcess(name, self._cli("serve-web"), self.logs / "web.log",
                                     partial(http_ok, f"http://{w.host}:{w.port}/healthz"), 60, self._env())
                else:
                    continue
                self.running[name] = s
        except BaseException:
            self.stop()
            raise
        return self

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
