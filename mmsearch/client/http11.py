"""One HTTP/1.1 keep-alive connection for the API client: a request goes out in one send, and the
response is read by a small reader (status line, headers, a Content-Length, chunked or close-delimited body).

Why not http.client: it writes a request's headers and body in two sends, and parses every response's
headers with the email package. Code a client runs between two searches runs with cold caches, so every
line costs: through the served API (`bench/client_edge.py`, 1,000 WordNet searches, the clients interleaved)
the edge over the service's own time was 0.80 ms with http.client, 0.63 ms with this, 0.56 ms with a raw
socket. Nor urllib3: +0.21 ms over this (issue 31 item 6; the numbers are in search_client's docstring).

Through a proxy (``Proxy``: an http:// one, as the environment names it; SearchClient reads it): a plain
http request goes to the proxy with its absolute URL, an https connection is tunnelled with CONNECT and
TLS runs end to end; a ``Proxy-Authorization`` from the proxy URL's user and password goes with either.

What it does not do, because the search API never needs it: https:// or SOCKS proxies, content codings
(it asks for none), request bodies sent in chunks, ``Expect: 100-continue`` (an interim 1xx answer is
skipped all the same), upgrades, pipelining. An answer followed by bytes nobody asked for ends the connection.
"""

from __future__ import annotations

import functools
import select
import socket
import ssl
from dataclasses import dataclass

MAX_LINE = 65536  # bytes in a status line, header line or chunk-size line
MAX_HEADERS = 100
NO_BODY = (204, 304)
RECV = 65536


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this reader understands it."""


class ProxyRefused(ConnectionError):
    """The proxy did not open a tunnel to the API (its answer to CONNECT was not 2xx)."""


class ClosedBeforeAnswer(ConnectionError):
    """The server closed the connection before the first byte of an answer: a kept connection it had
    already closed (an idle timeout), so the request may not have been read at all."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    will_close: bool  # the server ends the connection after this answer (or it is not fit to keep)


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None  # the Proxy-Authorization header's value ("Basic ..."), if the proxy wants one

    def __repr__(self) -> str:  # (never the credentials)
        return f"Proxy({self.host}:{self.port})"


@functools.cache
def _tls() -> ssl.SSLContext:
    """One context for every connection: building one reads the system's CA certificates."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _number(text: str) -> int | None:
    """A decimal of ASCII digits (str.isdigit also takes '²')."""
    return int(text) if text.isascii() and text.isdigit() else None


class Connection:
    def __init__(self, scheme: str, host: str, port: int | None, timeout_s: float, proxy: Proxy | None = None):
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme {scheme!r}: http or https")
        self.scheme, self.host, self.timeout_s, self.proxy = scheme, host, timeout_s, proxy
        self.port = port or (443 if scheme == "https" else 80)
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port is None else f"{name}:{port}"
        # plain http through a proxy: the request names the absolute URL, and carries the proxy's credentials
        self._forward = f"http://{self.host_header}" if proxy is not None and scheme == "http" else ""
        self._proxy_auth = {"Proxy-Authorization": proxy.authorization} if self._forward and proxy and proxy.authorization else {}
        self._sock: socket.socket | None = None
        self._buf = bytearray()  # received and not yet read
        self.used = False  # an answer came back on it: the server may have closed it since

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def usable(self) -> bool:
        """Open, and not closed by the server meanwhile (a closed socket reads as ready: EOF)."""
        sock = self._sock
        if sock is None or self._buf or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        return not poll.poll(0)

    def _open(self) -> None:
        proxy = self.proxy
        sock = socket.create_connection((proxy.host, proxy.port) if proxy else (self.host, self.port), timeout=self.timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                if proxy is not None:
                    self._tunnel(sock, proxy)
                sock = _tls().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            self._buf.clear()
            raise
        self._sock = sock

    def _tunnel(self, sock: socket.socket, proxy: Proxy) -> None:
        """CONNECT through the proxy to the API's host and port; ProxyRefused unless it answers 2xx."""
        authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        head = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.authorization:
            head.append(f"Proxy-Authorization: {proxy.authorization}")
        sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n")
        self._sock = sock  # (the reader reads self._sock)
        try:
            line = self._line()
            if not line:
                raise ProxyRefused(f"proxy {proxy.host}:{proxy.port} closed the connection without answering CONNECT")
            _, status, reason = self._status_line(line)
            self._headers()
            if not 200 <= status < 300:
                raise ProxyRefused(f"proxy {proxy.host}:{proxy.port} answered CONNECT with {status} {reason}".rstrip())
            if self._buf:  # (bytes before the TLS handshake: not a tunnel)
                raise ProtocolError(f"proxy {proxy.host}:{proxy.port} sent bytes after its answer to CONNECT")
        finally:
            self._sock = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buf.clear()
        self.used = False

    def exchange(self, method: str, target: str, headers: dict[str, str], body: bytes | None = None) -> Response:
        """Send one request and read its answer. OSError (ClosedBeforeAnswer among them) or ProtocolError
        leave the connection closed. The caller checks ``target`` and ``headers`` for CR and LF."""
        if self._sock is None:
            self._open()
        assert self._sock is not None
        head = [f"{method} {self._forward}{target} HTTP/1.1", f"Host: {self.host_header}", "Accept-Encoding: identity",
                *(f"{k}: {v}" for k, v in (headers | self._proxy_auth).items())]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        try:
            self._sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + (body or b""))
            out = self._read(method)
        except BaseException:
            self.close()
            raise
        self.used = True
        if out.will_close or self._buf:  # (bytes beyond the answer: the next answer could not be told apart)
            self.close()
        return out

    # ------------------------------------------------------------------ reading
    def _fill(self) -> bool:
        assert self._sock is not None
        data = self._sock.recv(RECV)
        self._buf += data
        return bool(data)

    def _line(self) -> bytes:
        """The next line with its ending; at the end of the stream what is left (b"" if nothing)."""
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0:
            if len(self._buf) > MAX_LINE:
                raise ProtocolError(f"a line of over {MAX_LINE} bytes")
            start = len(self._buf)
            if not self._fill():
                line = bytes(self._buf)
                self._buf.clear()
                return line
        if end >= MAX_LINE:
            raise ProtocolError(f"a line of over {MAX_LINE} bytes")
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise ProtocolError(f"the connection closed after {len(self._buf)} of {n} body bytes")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _to_close(self) -> bytes:
        while self._fill():
            pass
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def _read(self, method: str) -> Response:
        interim = False
        while True:  # interim 1xx answers come before the real one
            line = self._line()
            if not line:
                if interim:  # (it had read the request: not a connection closed before it)
                    raise ProtocolError("the connection closed after an interim answer")
                raise ClosedBeforeAnswer("the server closed the connection without answering")
            version, status, reason = self._status_line(line)
            headers = self._headers()
            if not 100 <= status < 200:
                break
            interim = True
        conn = headers.get("connection", "").lower()
        will_close = "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)
        if method == "HEAD" or status in NO_BODY:
            return Response(status, reason, headers, b"", will_close)
        if "transfer-encoding" in headers:  # RFC 9112 6.3: it wins over Content-Length, which then ends the connection
            codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
            if codings[-1] == "chunked":
                return Response(status, reason, headers, self._chunked(), will_close or "content-length" in headers)
            return Response(status, reason, headers, self._to_close(), True)
        if "content-length" in headers:
            lengths = {_number(v.strip()) for v in headers["content-length"].split(",")}  # "5, 5": repeated, the same
            if len(lengths) != 1 or None in lengths:
                raise ProtocolError(f"Content-Length: {headers['content-length'][:40]!r}")
            return Response(status, reason, headers, self._exactly(lengths.pop() or 0), will_close)
        return Response(status, reason, headers, self._to_close(), True)  # delimited by the server closing

    @staticmethod
    def _status_line(line: bytes) -> tuple[str, int, str]:
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        status = _number(code) if len(code) == 3 else None
        if not version.startswith("HTTP/1.") or status is None:
            raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        return version, status, reason

    def _headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        last = ""
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return out
            if not line.endswith(b"\n"):
                raise ProtocolError("the connection closed within the headers")
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last:  # an obsolete folded continuation line
                out[last] += " " + text.strip()
                continue
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"not a header line: {line[:80]!r}")
            last = name.lower()
            out[last] = f"{out[last]}, {value.strip()}" if last in out else value.strip()
        raise ProtocolError(f"over {MAX_HEADERS} headers")

    def _chunked(self) -> bytes:
        parts = []
        while True:
            line = self._line()
            size = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not size or size.strip(b"0123456789abcdefABCDEF"):
                raise ProtocolError(f"not a chunk size: {size[:40]!r}")
            n = int(size, 16)
            if n == 0:
                break
            parts.append(self._exactly(n))
            if self._line() not in (b"\r\n", b"\n"):
                raise ProtocolError("a chunk not followed by CRLF")
        self._headers()  # trailers, if any, end with an empty line
        return b"".join(parts)
