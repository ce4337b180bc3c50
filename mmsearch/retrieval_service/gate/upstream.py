"""The gate's kept HTTP/1.1 connections to the search service, and one request's round trip on them.

A request is sent whole (head and body in one write, Content-Length framing) and its answer is read
whole (Content-Length or chunked, parsed by httptools) before it goes back to the client. A kept
connection that the service closed while it sat idle fails before any byte of an answer: a request
without side effects to repeat (``Request.resendable``) is then sent once more on a fresh connection;
any other failure is the caller's 503 (Unavailable) or 504 (DeadlineExceeded).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools

from mmsearch.errors import DeadlineExceeded, Unavailable

READ = 65536
IDLE_S = 30.0  # a kept connection unused this long is closed (the service's own idle limit is 120 s)


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


@dataclass
class _Reading:
    """httptools callbacks for one answer."""

    parser: httptools.HttpResponseParser | None = None
    head_only: bool = False
    keep_alive: bool = False
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    done: bool = False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.parser is not None:
            self.keep_alive = self.parser.should_keep_alive()  # (read here: once the message is complete it reads the next)
        if self.head_only:  # an answer to HEAD has no body whatever its Content-Length says
            self.done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()

    async def round_trip(self, data: bytes, head_only: bool) -> Response:
        """Send, read the answer. Raises ConnectionError on a connection closed before the answer is whole
        (_Closed says whether any byte of it came)."""
        reading = _Reading(head_only=head_only)
        parser = reading.parser = httptools.HttpResponseParser(reading)
        self.writer.write(data)
        got = False
        while not reading.done:
            chunk = await self.reader.read(READ)
            if not chunk:
                raise _Closed(got)
            got = True
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserError as e:
                raise ConnectionError(f"the search service's answer is not HTTP/1.1: {e}") from e
        keep = reading.keep_alive and not head_only
        return Response(parser.get_status_code(), bytes(reading.reason), reading.headers, bytes(reading.body), keep)


class _Closed(ConnectionError):
    def __init__(self, got_bytes: bool):
        super().__init__("the search service closed the connection before its answer was whole")
        self.got_bytes = got_bytes


class Upstream:
    """The service at ``host:port``; connections are opened on demand and kept for the next request."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[_Conn] = []

    @property
    def name(self) -> str:
        return f"search service http://{self.host}:{self.port}"

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout_s)
        except (TimeoutError, OSError) as e:
            raise Unavailable("retrieval", f"the gate cannot reach the {self.name}: {str(e) or type(e).__name__}") from e
        return _Conn(reader, writer)

    def _kept(self) -> _Conn | None:
        loop = asyncio.get_running_loop()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to have been closed
            if loop.time() - conn.idle_since < IDLE_S and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def send(self, data: bytes, head_only: bool = False, resendable: bool = True) -> Response:
        """One request (its bytes as they go on the wire) and its answer."""
        kept = self._kept()
        conn = kept or await self._connect()
        try:
            try:
                resp = await asyncio.wait_for(conn.round_trip(data, head_only), self.timeout_s)
            except _Closed as e:
                conn.close()
                if kept is None or e.got_bytes or not resendable:
                    raise
                conn = await self._connect()  # a kept connection the service had closed: once more, on a new one
                resp = await asyncio.wait_for(conn.round_trip(data, head_only), self.timeout_s)
        except TimeoutError as e:
            conn.close()
            raise DeadlineExceeded(f"the {self.name} did not answer within {self.timeout_s:g} s") from e
        except (ConnectionError, OSError) as e:
            conn.close()
            raise Unavailable("retrieval", f"the {self.name} failed: {e}") from e
        if resp.keep_alive:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()
        return resp

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
