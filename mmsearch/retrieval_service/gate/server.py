"""create_server(config, listen, upstream): the admission gate, an asyncio HTTP/1.1 proxy on a thread of its own.

Why a process in front of the search service at all: a refusal answered inside the service waits for
the interpreter lock its searches hold, and on 2 cores under a burst of 32 that wait was 17-48 ms
(docs/architecture.md, "Cheap refusals"). Here the refusal runs in a process that does nothing else,
so it waits only for a core. `mmsearch up` starts the gate on the search API's port and the service's
HTTP API behind it on a free one (launcher/stack.py); `mmsearch serve-gate` runs it alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from urllib.parse import urlsplit

from prometheus_client import generate_latest

from mmsearch.config import Config, split_address
from mmsearch.errors import BadInput, Unavailable
from mmsearch.retrieval_service.auth import ApiKeys
from mmsearch.retrieval_service.gate.admission import GateAdmission
from mmsearch.retrieval_service.gate.messages import Request, answer
from mmsearch.retrieval_service.gate.proxy import ClientConnection
from mmsearch.retrieval_service.gate.upstream import Upstream

CLIENT_IDLE_S = 120.0  # a client connection with nothing to say for this long is closed (as the service's own server does)
REQUEST_READ_S = 60.0  # a request still not read whole this long after it began is given up (a trickling client)


class Gate:
    """The state every client connection of one gate shares; used on its event loop only."""

    def __init__(self, config: Config, upstream: Upstream, loop: asyncio.AbstractEventLoop):
        r = config.retrieval
        self.loop = loop
        self.upstream = upstream
        self.admission = GateAdmission(r.max_inflight + r.max_queue)
        keys = ApiKeys(r.api_keys, r.write_api_keys)
        self.keys = keys if keys.enabled else None
        self.max_body = int(r.max_body_mb * 1024 * 1024)
        self.max_connections = config.gate.max_connections
        self.draining = False  # stopping: answers go out with Connection: close, and nothing more is read
        self.connections: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task] = set()  # requests with the service (held: the loop keeps only weak references)

    def track(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def forward(self, req: Request, client: str) -> tuple[bytes, int]:
        """The service's answer to ``req`` as it goes back to the client, and its status."""
        resp = await self.upstream.send(req.wire(client), req.head_only, req.resendable)
        self.close_if_draining(req)
        body = resp.body
        if req.method == "GET" and req.path == "/metrics" and resp.status == 200:
            body += generate_latest(self.admission.registry)  # the gate's own counts, on the one scrape target
        # (whether the service keeps its connection is that hop's business, not the client's)
        return answer(resp.status, resp.headers, body, req, resp.reason), resp.status

    def close_if_draining(self, req: Request) -> None:
        """A request answered while the gate stops is its connection's last (the client reconnects elsewhere)."""
        if self.draining:
            req.keep_alive = False

    def sweep_idle(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            idle = not conn.busy and now - conn.last_active > CLIENT_IDLE_S
            trickling = conn.reading_since is not None and now - conn.reading_since > REQUEST_READ_S
            if (idle or trickling) and conn.transport is not None:
                conn.transport.close()


def upstream_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
        raise BadInput(f"gate upstream: {url!r} is not http://host:port")
    return parts.hostname, parts.port


class GateServer:
    def __init__(self, config: Config, listen: str, upstream: str):
        self.drain_s = config.gate.drain_s
        host, port = split_address(listen, "gate listen address")
        host = host.strip("[]")  # (an IPv6 literal as asyncio binds it)
        up_host, up_port = upstream_address(upstream)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gate", daemon=True)
        self._thread.start()
        started: Future = asyncio.run_coroutine_threadsafe(self._start(config, host, port, up_host, up_port), self.loop)
        try:
            self.port: int = started.result(timeout=30)
        except TimeoutError as e:
            self._halt()
            raise Unavailable("gate", f"did not start listening on {listen} within 30 s") from e
        except OSError as e:
            self._halt()
            raise Unavailable("gate", f"cannot bind {listen}: {e.strerror or e}") from e
        except BaseException:
            self._halt()
            raise

    async def _start(self, config: Config, host: str, port: int, up_host: str, up_port: int) -> int:
        self.gate = Gate(config, Upstream(up_host, up_port, config.gate.upstream_timeout_s), self.loop)
        self._server = await self.loop.create_server(lambda: ClientConnection(self.gate), host, port, reuse_address=True,
                                                     backlog=1024)
        self._sweep()
        return int(self._server.sockets[0].getsockname()[1])

    def _sweep(self) -> None:
        self.gate.sweep_idle()
        self._sweeper = self.loop.call_later(10.0, self._sweep)

    async def _close(self, drain_s: float) -> None:
        """Stop accepting; close idle connections; give requests with the service ``drain_s`` to be answered
        (each then closes its connection); then close what is left."""
        self._sweeper.cancel()
        self._server.close()
        self.gate.draining = True
        for conn in list(self.gate.connections):
            if not conn.busy and conn.transport is not None:
                conn.transport.close()  # (a request half read is dropped: its client retries on a new connection)
        if self.gate.tasks and drain_s > 0:
            await asyncio.wait(list(self.gate.tasks), timeout=drain_s)
            await asyncio.sleep(0)  # the answers just written go out before their transports close
        for conn in list(self.gate.connections):
            if conn.transport is not None:
                conn.transport.close()
        for task in list(self.gate.tasks):
            task.cancel()
        await asyncio.gather(*self.gate.tasks, return_exceptions=True)
        self.gate.upstream.close()
        await asyncio.sleep(0)  # let the transports close

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    def stop(self) -> None:
        """Stop listening, answer the requests with the service (up to config gate.drain_s), and close every
        connection."""
        if self.loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(self.drain_s), self.loop).result(timeout=self.drain_s + 5)
        finally:
            self._halt()


def create_server(config: Config, listen: str, upstream: str) -> GateServer:
    """The gate on ``listen`` (host:port; port 0 binds a free one, see ``.port``) in front of the search
    API at ``upstream`` (http://host:port), admitting as many searches as the service takes (its
    max_inflight + max_queue)."""
    return GateServer(config, listen, upstream)
