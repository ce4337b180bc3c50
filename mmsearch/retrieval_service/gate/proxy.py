"""One client connection at the gate: HTTP/1.1 requests parsed (httptools), refused here or forwarded.

Requests on a connection are answered in order, one at a time: the next is read only once the one
before has its answer (as the service's own server does; pipelined requests wait their turn). Each
request is read whole (up to the API's body limit) before anything is decided, and then:

- a search (``admission.GATED``) with the service full: 429 + Retry-After from here, never forwarded;
  with API keys on, a request without a valid key gets its 401 first, as from the service;
- over the body limit: the service's own answer to that (413 on the documents API, else 400);
- anything else, and a search with room: forwarded, its answer returned as the service gave it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from mmsearch.errors import BadInput, MMSearchError, TooLarge
from mmsearch.retrieval_service.auth import key_from
from mmsearch.retrieval_service.response import error_response

if TYPE_CHECKING:
    from mmsearch.retrieval_service.gate.server import Gate

log = logging.getLogger("mmsearch.retrieval_service.gate")
MAX_HEAD = 65536  # bytes of request line and headers
MAX_HEADERS = 100
# not passed on: they describe this hop's connection, or the gate frames the body itself
HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
                 b"content-length", b"expect", b"proxy-authorization"})


@dataclass
class Request:
    method: str = ""
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    head_bytes: int = 0
    too_large: bool = False
    upgrade: bool = False
    keep_alive: bool = True

    @property
    def path(self) -> str:
        return self.url.split(b"?", 1)[0].decode("latin-1")

    def header_map(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers}

    def wire(self, client: str) -> bytes:
        """The request as it goes to the service: hop-by-hop headers out, a Content-Length for the body
        read, the client's address added to X-Forwarded-For."""
        lines = [b"%s %s HTTP/1.1" % (self.method.encode(), self.url)]
        forwarded = client.encode()
        for k, v in self.headers:
            low = k.lower()
            if low == b"x-forwarded-for":
                forwarded = v + b", " + forwarded
            elif low not in HOP:
                lines.append(k + b": " + v)
        lines.append(b"X-Forwarded-For: " + forwarded)
        if self.body or self.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(b"Content-Length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + bytes(self.body)


def answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool, reason: bytes = b"",
           head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 answer as it goes to the client; an answer to HEAD keeps the service's Content-Length
    (what a GET would carry) and has no body."""
    try:
        reason = reason or HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = reason or b"Unknown"
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    lines += [k + b": " + v for k, v in headers if k.lower() not in HOP or (head_only and k.lower() == b"content-length")]
    if not head_only:
        lines.append(b"Content-Length: %d" % len(body))
    if not keep_alive:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def error_answer(e: MMSearchError, keep_alive: bool) -> bytes:
    status, headers, body = error_response(e)
    return answer(status, [(k.encode(), v.encode()) for k, v in headers.items()], body, keep_alive)


class ClientConnection(asyncio.Protocol):
    def __init__(self, gate: Gate):
        self.gate = gate
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.current = Request()
        self.ready: deque[Request] = deque()
        self.busy = False  # a request of this connection is with the service
        self.closing = False
        self.head_too_large = False
        self.client = "unknown"
        self.last_active = 0.0

    # ---------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.last_active = time.monotonic()
        self.gate.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.gate.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # the request asking for it was refused (``_refusal``): end here
            self.closing = True
            if self.transport is not None:
                self.transport.close()
        except httptools.HttpParserError as e:  # (a callback's exception arrives wrapped in one)
            if self.head_too_large:
                self._fail(BadInput(f"request line and headers over {MAX_HEAD:,} bytes or {MAX_HEADERS} headers"), 431)
            else:
                self._fail(BadInput(f"malformed HTTP request: {e}"))

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        self.current = Request()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        if len(self.current.headers) >= MAX_HEADERS:
            self._too_large()
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self.current
        req.method = self.parser.get_method().decode("latin-1")
        req.keep_alive = self.parser.should_keep_alive()  # (read here: once the message is complete it reads the next)
        req.upgrade = self.parser.should_upgrade()
        expect = next((v for k, v in req.headers if k.lower() == b"expect"), None)
        if expect is not None and expect.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body is read here, whatever the service says

    def on_body(self, body: bytes) -> None:
        req = self.current
        if req.too_large:
            return
        if len(req.body) + len(body) > self.gate.max_body:
            req.too_large = True
            req.body = bytearray()
        else:
            req.body += body

    def on_message_complete(self) -> None:
        self.ready.append(self.current)
        self.current = Request()
        self._next()

    def _count(self, n: int) -> None:
        self.current.head_bytes += n
        if self.current.head_bytes > MAX_HEAD:
            self._too_large()

    def _too_large(self) -> None:
        self.head_too_large = True
        raise _HeadTooLarge()

    # ---------------------------------------------------------------- answering
    def _fail(self, e: MMSearchError, status: int | None = None) -> None:
        """A request that cannot be read: its error, then the connection closes (the stream is out of step)."""
        if self.transport is None or self.closing:
            return
        self.ready.clear()
        if not self.busy:
            status_, headers, body = error_response(e)
            self.transport.write(answer(status or status_, [(k.encode(), v.encode()) for k, v in headers.items()], body, False))
        self.closing = True
        self.transport.close()

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if not keep_alive:
            self.closing = True
            self.ready.clear()
            self.transport.close()

    def _next(self) -> None:
        """Answer the requests read so far, in order, while none is with the service."""
        while self.ready and not self.busy and not self.closing:
            req = self.ready.popleft()
            refusal = self._refusal(req)
            if refusal is not None:
                self._write(error_answer(refusal, req.keep_alive), req.keep_alive)
                continue
            self.busy = True
            if self.transport is not None:
                self.transport.pause_reading()  # the next request waits its turn in the socket
            self.gate.track(self.gate.loop.create_task(self._forward(req)))

    def _refusal(self, req: Request) -> MMSearchError | None:
        if req.upgrade:
            req.keep_alive = False
            return BadInput("HTTP upgrades (WebSocket, h2c) are not served")
        if req.too_large:
            limit = f"body: over the {self.gate.max_body:,}-byte limit"
            return TooLarge(f"{limit} (send smaller batches)") if req.path.startswith("/v1/indexes/") else BadInput(limit)
        if (req.method, req.path) not in self.gate.gated:
            return None
        if self.gate.keys is not None:
            try:
                self.gate.keys.check(key_from(req.header_map()))
            except MMSearchError as e:
                self.gate.admission.requests.labels("unauthenticated").inc()
                return e
        return self.gate.admission.enter()

    async def _forward(self, req: Request) -> None:
        gated = (req.method, req.path) in self.gate.gated
        t0 = time.monotonic()
        status = 0
        try:
            data, status = await self.gate.forward(req, self.client)
        except MMSearchError as e:
            data = error_answer(e, req.keep_alive)
        except Exception:  # the edge: a logged 500, the connection kept in step
            log.exception("gate: forwarding %s %s failed", req.method, req.path)
            data = answer(500, [(b"Content-Type", b"application/json")], b'{"error":"Internal","message":"internal error"}',
                          req.keep_alive)
        finally:
            if gated:
                # only answered searches time the round trip: a quick error would shorten Retry-After
                self.gate.admission.leave(time.monotonic() - t0 if 200 <= status < 300 else None)
        self.busy = False
        self._write(data, req.keep_alive)
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
            self._next()


class _HeadTooLarge(Exception):
    pass
