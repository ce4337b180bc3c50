"""The gate's HTTP/1.1 messages: a request as read from a client and as sent on to the service, and the
answers it writes back (the service's, re-framed, or its own errors, written as the service writes them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from urllib.parse import unquote_to_bytes, urlsplit

from mmsearch.errors import MMSearchError
from mmsearch.retrieval_service.response import error_response

# not passed on: they describe this hop's connection, or the gate frames the body itself
HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
                 b"content-length", b"expect", b"proxy-authorization", b"http2-settings"})
BODYLESS = ("GET", "HEAD", "DELETE", "OPTIONS")
# a request the gate may send again when a kept connection turns out closed before any answer: no side effect
# is done twice (searches and embeddings only read; PUT/DELETE of documents carry their op_id)
RESENDABLE = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
READ_ONLY_POSTS = frozenset({"/v1/search", "/v1/embed"})


@dataclass
class Request:
    method: str = ""
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    version: str = "1.1"
    head_bytes: int = 0
    headers_done: bool = False
    too_large: bool = False
    upgrade: bool = False  # asked for another protocol (ignored: answered over HTTP/1.1)
    queued: bool = False  # handed to the connection's queue of requests to answer
    keep_alive: bool = True

    @cached_property
    def path(self) -> str:
        """The path as the service's server sees it (PATH_INFO): the absolute form's authority dropped and
        percent-escapes decoded, so no spelling of a search path gets past the gate's count. (Read once
        the request line is whole.)"""
        target = self.url.split(b"?", 1)[0]
        if not target.startswith(b"/"):
            target = urlsplit(target.decode("latin-1")).path.encode("latin-1") or b"/"
        return unquote_to_bytes(target).decode("latin-1")

    @property
    def head_only(self) -> bool:
        return self.method == "HEAD"

    @property
    def resendable(self) -> bool:
        return self.method in RESENDABLE or (self.method == "POST" and self.path in READ_ONLY_POSTS)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def header_map(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers}

    def wire(self, client: str) -> bytes:
        """The request as it goes to the service: hop-by-hop headers out, a Content-Length for the body
        read, the client's address last in X-Forwarded-For."""
        lines = [b"%s %s HTTP/1.1" % (self.method.encode(), self.url)]
        forwarded: list[bytes] = []
        for k, v in self.headers:
            low = k.lower()
            if low == b"x-forwarded-for":
                forwarded.append(v)
            elif low not in HOP:
                lines.append(k + b": " + v)
        lines.append(b"X-Forwarded-For: " + b", ".join([*forwarded, client.encode()]))
        if self.body or self.method not in BODYLESS:
            lines.append(b"Content-Length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + bytes(self.body)


def answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes, req: Request | None, reason: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer to ``req`` as it goes to the client (None: a request that could not be read;
    the connection then closes). An answer to HEAD carries the Content-Length a GET would (the service's,
    or its own body's) and no body."""
    try:
        reason = reason or HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = reason or b"Unknown"
    head_only = req is not None and req.head_only
    length = next((v for k, v in headers if k.lower() == b"content-length"), None) if head_only and not body else None
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    lines += [k + b": " + v for k, v in headers if k.lower() not in HOP]
    lines.append(b"Content-Length: " + (length if length is not None else b"%d" % len(body)))
    if req is None or not req.keep_alive:
        lines.append(b"Connection: close")
    elif req.version == "1.0":
        lines.append(b"Connection: keep-alive")  # (an HTTP/1.0 client keeps the connection only when told)
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def error_answer(e: MMSearchError, req: Request | None, status: int | None = None) -> bytes:
    code, headers, body = error_response(e)
    return answer(status or code, [(k.encode(), v.encode()) for k, v in headers.items()], body, req)
