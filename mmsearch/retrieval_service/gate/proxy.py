"""One client connection at the gate: HTTP/1.1 requests parsed (httptools), refused here or forwarded.

Requests on a connection are answered in order, one at a time: the next is read only once the one
before has its answer (as the service's own server does; pipelined requests wait their turn). Each
request is read whole (up to the API's body limit) before anything is decided, and then:

- a search (``admission.GATED``) with the service full: 429 + Retry-After from here, never forwarded;
  with API keys on, a request without a valid key gets its 401 first, as from the service;
- over the body limit: the service's own answer to that (413 on the documents API, else 400), at once
  when its Content-Length says so, and the connection closes (the body is not read);
- anything else, and a search with room: forwarded, its answer returned as the service gave it.

An ``Upgrade`` (h2c, WebSocket: Java's HttpClient offers h2c on every plain-http first request) is
ignored, as RFC 9110 lets a server do: the request is answered over HTTP/1.1. CONNECT is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from mmsearch.errors import BadInput, MMSearchError, TooLarge, Unavailable
from mmsearch.retrieval_service.auth import key_from
from mmsearch.retrieval_service.gate.admission import GATED
from mmsearch.retrieval_service.gate.messages import Request, answer, error_answer

if TYPE_CHECKING:
    from mmsearch.retrieval_service.gate.server import Gate

log = logging.getLogger("mmsearch.retrieval_service.gate")
MAX_HEAD = 65536  # bytes of request line and headers
MAX_HEADERS = 100
INTERNAL = b'{"error":"Internal","message":"internal error"}'
LINGER_S = 2.0  # how long a connection being closed by the gate still reads (and drops) what the client sends


class _HeadTooLarge(Exception):
    pass


class ClientConnection(asyncio.Protocol):
    def __init__(self, gate: Gate):
        self.gate = gate
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.current = Request()
        self.ready: deque[Request] = deque()
        self.busy = False  # a request of this connection is with the service
        self.closing = False
        self.write_paused = False
        self.pending_failure: bytes | None = None  # what to send, then close, once the request with the service is answered
        self.head_too_large = False
        self.in_head = True  # between requests or reading a head: raw bytes count against MAX_HEAD
        self.head_seen = 0
        self.upgrading: Request | None = None  # a request that asked for an upgrade, its body still to read raw
        self.upgrade_left = 0
        self.client = "unknown"
        self.last_active = 0.0
        self.reading_since: float | None = None  # when the request being read began (the sweep's read deadline)

    # ---------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.last_active = time.monotonic()
        if len(self.gate.connections) >= self.gate.max_connections:
            self._fail(Unavailable("gate", f"{len(self.gate.connections)} connections open, the most it keeps; retry shortly"))
            return
        self.gate.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.gate.connections.discard(self)

    def pause_writing(self) -> None:  # the client is not reading its answers: read no more requests until it does
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy and not self.closing and self.transport is not None:
            self.transport.resume_reading()
            self._next()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.closing or self.pending_failure is not None:
            return
        if self.in_head:  # (httptools holds a header line until it ends: a line that never does is counted here)
            self.head_seen += len(data)
            if self.head_seen > MAX_HEAD + 4096:
                self.head_too_large = True
                self._fail_head()
                return
        if self.upgrading is not None:
            data = self._upgrade_body(data)
        if data:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgraded(data[int(e.args[0]) if e.args else len(data):])
        except httptools.HttpParserError as e:  # (a callback's exception arrives wrapped in one)
            if self.head_too_large:
                self._fail_head()
            else:
                self._fail(BadInput(f"malformed HTTP request: {e}"))

    def _upgraded(self, rest: bytes) -> None:
        """The parser stopped at a request asking for another protocol, before its body: CONNECT is refused;
        any other is answered as HTTP/1.1, its body read here and the rest parsed afresh."""
        req = self.upgrading
        if req is None:
            return
        if req.method == "CONNECT":
            self.upgrading = None
            self._fail(BadInput("CONNECT is not served"))
            return
        length = req.header(b"content-length")
        if req.header(b"transfer-encoding") is not None or (length is not None and not length.strip().isdigit()):
            self.upgrading = None
            self._fail(BadInput("an upgrade request's body must have a Content-Length"))
            return
        self.upgrade_left = int(length) if length is not None else 0
        self.parser = httptools.HttpRequestParser(self)
        rest = self._upgrade_body(rest)
        if rest:
            self._feed(rest)

    def _upgrade_body(self, data: bytes) -> bytes:
        """Raw body bytes of the upgrade request being read; what follows it."""
        req = self.upgrading
        assert req is not None
        take, rest = data[:self.upgrade_left], data[self.upgrade_left:]
        self.upgrade_left -= len(take)
        self._add_body(req, take)
        if self.upgrade_left == 0:
            self.upgrading, self.in_head = None, True
            self._complete(req)
        return rest

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        self.current = Request()
        self.reading_since = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.current.headers_done:
            return  # a chunked body's trailer: not passed on, never read as a header
        self._count(len(name) + len(value))
        if len(self.current.headers) >= MAX_HEADERS:
            self._too_large()
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self.current
        req.headers_done = True
        self.in_head, self.head_seen = False, 0
        req.method = self.parser.get_method().decode("latin-1")
        req.version = self.parser.get_http_version()
        req.keep_alive = self.parser.should_keep_alive()  # (read here: once the message is complete it reads the next)
        req.upgrade = self.parser.should_upgrade()
        length = req.header(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.gate.max_body:
            req.too_large, req.keep_alive = True, False  # answered without reading the body; the connection then closes
            self._complete(req)
            return
        expect = req.header(b"expect")
        if (expect is not None and expect.lower() == b"100-continue" and req.version == "1.1" and not self.busy
                and not self.ready and not self.closing and self.transport is not None):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body is read here, whatever the service says

    def on_body(self, body: bytes) -> None:
        self._add_body(self.current, body)

    def on_message_complete(self) -> None:
        req = self.current
        self.reading_since = None
        if req.upgrade:
            self.upgrading = req  # its body, if any, follows the HttpParserUpgrade feed_data raises next
            return
        self.in_head = True
        if not req.queued:  # (one refused by its Content-Length is queued already)
            self._complete(req)

    def _add_body(self, req: Request, body: bytes) -> None:
        if req.too_large:
            return
        if len(req.body) + len(body) > self.gate.max_body:
            req.too_large = True
            req.body = bytearray()
        else:
            req.body += body

    def _count(self, n: int) -> None:
        self.current.head_bytes += n
        if self.current.head_bytes > MAX_HEAD:
            self._too_large()

    def _too_large(self) -> None:
        self.head_too_large = True
        raise _HeadTooLarge()

    # ---------------------------------------------------------------- answering
    def _complete(self, req: Request) -> None:
        req.queued = True
        self.ready.append(req)
        self._next()

    def _fail_head(self) -> None:
        self._fail(BadInput(f"request line and headers over {MAX_HEAD:,} bytes or {MAX_HEADERS} headers"), 431)

    def _fail(self, e: MMSearchError, status: int | None = None) -> None:
        """A request that cannot be read: its error, then the connection closes (the stream is out of step).
        A request already with the service is answered first."""
        if self.transport is None or self.closing:
            return
        out = error_answer(e, None, status)
        if self.busy:
            self.pending_failure = out
            self.transport.pause_reading()
            return
        self._write(out, keep_alive=False)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.last_active = time.monotonic()
        self.transport.write(data)
        if not keep_alive:
            self.closing = True
            self.ready.clear()
            self._linger()

    def _linger(self) -> None:
        """Close after the answer without losing it: closing a socket with unread bytes (the rest of a refused
        request) sends a reset that can overtake the answer, so the gate stops writing, reads and drops what
        still comes, and closes when the client does or after LINGER_S."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if not t.can_write_eof():
            t.close()
            return
        t.write_eof()
        t.resume_reading()
        self.gate.loop.call_later(LINGER_S, t.close)

    def _next(self) -> None:
        """Answer the requests read so far, in order, while none is with the service."""
        while self.ready and not self.busy and not self.closing and not self.write_paused:
            req = self.ready.popleft()
            gated = (req.method, req.path) in GATED
            refusal = self._refusal(req, gated)
            if refusal is not None:
                self._write(error_answer(refusal, req), req.keep_alive)
                continue
            self.busy = True
            if self.transport is not None:
                self.transport.pause_reading()  # the next request waits its turn in the socket
            self.gate.track(self.gate.loop.create_task(self._forward(req, gated)))

    def _refusal(self, req: Request, gated: bool) -> MMSearchError | None:
        if req.too_large:
            limit = f"body: over the {self.gate.max_body:,}-byte limit"
            return TooLarge(f"{limit} (send smaller batches)") if req.path.startswith("/v1/indexes/") else BadInput(limit)
        if not gated:
            return None
        if self.gate.keys is not None:
            try:
                self.gate.keys.check(key_from(req.header_map()))
            except MMSearchError as e:
                self.gate.admission.requests.labels("unauthenticated").inc()
                return e
        return self.gate.admission.enter()

    async def _forward(self, req: Request, gated: bool) -> None:
        t0 = time.monotonic()
        status = 0
        try:
            data, status = await self.gate.forward(req, self.client)
        except MMSearchError as e:
            self.gate.close_if_draining(req)
            data = error_answer(e, req)
        except Exception:  # the edge: a logged 500, the connection kept in step
            log.exception("gate: forwarding %s %s failed", req.method, req.path)
            self.gate.close_if_draining(req)
            data = answer(500, [(b"Content-Type", b"application/json")], INTERNAL, req)
        finally:
            if gated:
                # only answered searches time the round trip: a quick error would shorten Retry-After
                self.gate.admission.leave(time.monotonic() - t0 if 200 <= status < 300 else None)
        self.busy = False
        self._write(data, req.keep_alive)
        if self.closing or self.transport is None:
            return
        if self.pending_failure is not None:
            self._write(self.pending_failure, keep_alive=False)
        elif not self.write_paused:
            self.transport.resume_reading()
            self._next()
