"""The API client's HTTP/1.1 connection against a raw socket server that answers with canned bytes: each
way a body can be delimited, interim answers, connections the server ends, and answers that are not HTTP."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from mmsearch.client.http11 import ClosedBeforeAnswer, Connection, ProtocolError
from mmsearch.client.search_client import SearchClient
from mmsearch.errors import BadInput, Unavailable


class Canned:
    """Accepts connections on 127.0.0.1; for each request read, sends the next canned answer (None: close
    the connection without answering; a tuple (answer, how): "close" after it, "drip" it a few bytes at a time, "stray"
    bytes a moment after it). Records each request."""

    def __init__(self, answers: list[bytes | tuple[bytes, str] | None]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    req = self._request(conn)
                    if req is None:
                        break
                    self.requests.append(req)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    how = answer[1] if isinstance(answer, tuple) else ""
                    answer = answer[0] if isinstance(answer, tuple) else answer
                    if how == "drip":  # a few bytes at a time: lines and bodies split across receives
                        for i in range(0, len(answer), 7):
                            conn.sendall(answer[i:i + 7])
                            time.sleep(0.0005)
                    else:
                        conn.sendall(answer)
                    if how.startswith("stray"):  # bytes nobody asked for, a moment after the answer
                        time.sleep(0.05)
                        conn.sendall(b"stray")
                    if how == "close" or b"Connection: close" in answer or b"HTTP/1.0" in answer.split(b"\r\n", 1)[0]:
                        break

    @staticmethod
    def _request(conn: socket.socket) -> bytes | None:
        try:
            return Canned._read_request(conn)
        except OSError:  # reset: the client closed with bytes of ours unread
            return None

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = conn.recv(65536)
            if not got:
                return None
            buf += got
        head, _, body = buf.partition(b"\r\n\r\n")
        length = next((int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if k.lower() == b"content-length"), 0)
        while len(body) < length:
            got = conn.recv(65536)
            if not got:
                return None
            body += got
        return buf

    def close(self) -> None:
        self.answers.clear()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def canned():
    servers: list[Canned] = []

    def make(*answers: bytes | tuple[bytes, str] | None) -> Canned:
        servers.append(Canned(list(answers)))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_a_request_goes_out_whole_and_its_answer_is_read_by_length(canned):
    s = canned(ok(b'{"a": 1}', b"X-Twice: 1\r\nX-Twice: 2\r\nX-Folded: one\r\n  two\r\n"))
    c = Connection("http", "127.0.0.1", s.port, 5)
    r = c.exchange("POST", "/v1/search", {"Content-Type": "application/json"}, b'{"q": 1}')
    assert (r.status, r.reason, r.body, r.will_close) == (200, "OK", b'{"a": 1}', False)
    assert r.headers["x-twice"] == "1, 2" and r.headers["x-folded"] == "one two"
    req = s.requests[0]
    assert req.startswith(b"POST /v1/search HTTP/1.1\r\n") and f"Host: 127.0.0.1:{s.port}\r\n".encode() in req
    assert b"Content-Length: 8\r\n" in req and req.endswith(b'\r\n\r\n{"q": 1}')
    c.close()


def test_chunked_and_close_delimited_bodies_and_interim_answers(canned):
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n")
    s = canned(chunked, b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    c = Connection("http", "127.0.0.1", s.port, 5)
    assert c.exchange("GET", "/", {}).body == b"Wikipedia in \r\n\r\nchunks."
    assert c.exchange("GET", "/", {}).body == b""  # no body after a 204, and the connection stays
    last = c.exchange("GET", "/", {})
    assert last.body == b"until the end" and last.will_close and not c.is_open
    assert s.connections == 1


@pytest.mark.parametrize("answer, match", [
    (b"SPDY/3 200 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not a header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "Content-Length"),
    ("HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"), "Content-Length"),  # a digit to str.isdigit
    ("HTTP/1.1 2\u00b20 OK\r\n\r\n".encode("latin-1"), "status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nabcde", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\nabc", "3 of 281474976710655 body bytes"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort", "5 of 10 body bytes"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n-5\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0x10\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", "over 100 headers"),
    (b"HTTP/1.1 200 OK\r\nX-Huge: " + b"x" * 70_000 + b"\r\n\r\n", "a line of over"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"x" * (65536 - 4) + b"\r\n\r\n", "a line of over"),  # 65,537 bytes with its CRLF
    (b"HTTP/1.1 100 Continue\r\n\r\n", "after an interim answer"),
])
def test_an_answer_that_is_not_http_is_a_protocol_error_and_the_connection_is_dropped(canned, answer, match):
    s = canned(answer)
    c = Connection("http", "127.0.0.1", s.port, 5)
    with pytest.raises(ProtocolError, match=match):
        c.exchange("GET", "/", {})
    assert not c.is_open and not c.used


def test_a_server_that_closes_without_answering(canned):
    s = canned(None)
    c = Connection("http", "127.0.0.1", s.port, 5)
    with pytest.raises(ClosedBeforeAnswer):
        c.exchange("POST", "/v1/click", {}, b"{}")


def test_the_client_names_the_api_for_a_garbled_answer_and_reconnects_after(canned):
    s = canned(b"garbage\r\n\r\n", ok(b'{"ok": true}'))
    c = SearchClient(f"http://127.0.0.1:{s.port}", 5)
    with pytest.raises(Unavailable, match=f"retrieval service at http://127.0.0.1:{s.port}.*status line"):
        c.search_body({"scene": "s"})
    assert c.search_body({"scene": "s"}) == {"ok": True} and s.connections == 2
    c.close()


def test_ipv6_hosts_are_bracketed_and_default_ports_left_out():
    assert Connection("http", "::1", 8080, 1).host_header == "[::1]:8080"
    assert Connection("https", "example.org", None, 1).host_header == "example.org"
    assert Connection("https", "example.org", None, 1).port == 443


def test_bytes_beyond_an_answer_end_the_connection_and_never_answer_the_next_request(canned):
    s = canned(ok(b"{}") + b"STALE!!", ok(b'"fresh"'), ok(b"{}") + b"\r\n", ok(b'"fresh"'))
    c = SearchClient(f"http://127.0.0.1:{s.port}", 5)
    for _ in range(2):
        assert c.search_body({"scene": "s"}) == {}
        assert c.search_body({"scene": "s"}) == "fresh"
    assert s.connections == 3  # each answer with bytes beyond it closed its connection (and "fresh" kept its)
    c.close()


def test_transfer_encoding_wins_over_content_length(canned):
    s = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
               (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabcdef", "close"),
               b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
               b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", ok(b"body"))
    c = Connection("http", "127.0.0.1", s.port, 5)
    r = c.exchange("GET", "/", {})
    assert r.body == b"abc" and r.will_close  # both framings: chunked wins, and the connection is not kept
    r = c.exchange("GET", "/", {})  # a coding this reader does not decode: the body runs to the close, as it came
    assert r.body == b"abcdef" and r.will_close
    assert c.exchange("GET", "/", {}).body == b"abc"  # the same length twice is one length
    assert c.exchange("GET", "/", {}).body == b""  # 304: no body whatever the headers say
    assert c.exchange("HEAD", "/", {}).body == b""
    c.close()


def test_the_client_refuses_what_would_write_headers_of_its_own():
    for key in ("k\r\nX-Evil: 1", "k\n", "with space", "ключ"):
        with pytest.raises(BadInput, match="api_key"):
            SearchClient("http://127.0.0.1:1", api_key=key)
    for url in ("http://127.0.0.1:1/a b", "http://127.0.0.1:port", "http://127.0.0.1:8080\n", "http://h/a\r\nX-Evil:1",
                "http://127.0.0.1:0", "http://[::1", "http://h/ü", ""):
        with pytest.raises(BadInput, match="not an http"):
            SearchClient(url)
    for url, host, port, prefix in (("http://localhost:8080", "localhost", 8080, ""), ("https://search.example.com/api/", "search.example.com", None, "/api"),
                                    ("http://[::1]:8080", "::1", 8080, ""), ("http://h/a%20b", "h", None, "/a%20b"),
                                    ("http://münchen.example", "xn--mnchen-3ya.example", None, "")):
        c = SearchClient(url)
        assert (c._host, c._port, c._prefix) == (host, port, prefix), url  # (an IDN host is sent as IDNA)


def test_the_longest_line_allowed_and_answers_split_across_receives(canned):
    longest = b"X: " + b"x" * (65536 - 5) + b"\r\n"  # 65,536 bytes with its CRLF
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    s = canned(b"HTTP/1.1 200 OK\r\n" + longest + b"Content-Length: 2\r\n\r\nok", ok(b"x" * 200_000), (ok(b"y" * 2000), "drip"),
               (chunked, "drip"))
    c = Connection("http", "127.0.0.1", s.port, 5)
    assert c.exchange("GET", "/", {}).body == b"ok"
    assert c.exchange("GET", "/", {}).body == b"x" * 200_000  # more than one receive holds
    assert c.exchange("GET", "/", {}).body == b"y" * 2000
    assert c.exchange("GET", "/", {}).body == b"hello world" and s.connections == 1
    c.close()


def test_bytes_that_arrive_after_an_answer_are_seen_before_the_next_request(canned):
    s = canned((ok(b"{}"), "stray"), ok(b'"fresh"'))
    c = SearchClient(f"http://127.0.0.1:{s.port}", 5)
    assert c.search_body({"scene": "s"}) == {}
    time.sleep(0.2)
    assert c.click("r", "d") is None  # on a new connection: a click is sent once, and never read as "stray"
    assert s.connections == 2 and len(s.requests) == 2
    c.close()


@pytest.fixture
def proxy_env(monkeypatch):
    """Set proxy variables for the test alone (urllib prefers the lower-case ones; every spelling is cleared first)."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)

    def set_(**values: str) -> None:
        for k, v in values.items():
            monkeypatch.setenv(k, v)

    return set_


def test_plain_http_goes_through_the_environments_proxy_with_its_credentials(canned, proxy_env):
    proxy = canned(ok(b'{"n": 1}'), ok(b'{"n": 2}'))
    proxy_env(http_proxy=f"http://us%40er:p%3Ass@127.0.0.1:{proxy.port}")
    c = SearchClient("http://search.example:8081/api", 5)
    assert "p:ss" not in repr(c._proxy)
    assert c.search_body({"scene": "s"}) == {"n": 1} and c.search_body({"scene": "s"}) == {"n": 2}
    req = proxy.requests[0]
    assert req.startswith(b"POST http://search.example:8081/api/v1/search HTTP/1.1\r\n") and b"Host: search.example:8081\r\n" in req
    assert b"Proxy-Authorization: Basic dXNAZXI6cDpzcw==\r\n" in req  # base64 of "us@er:p:ss"
    assert proxy.connections == 1  # the connection to the proxy is kept like any other
    c.close()


def test_no_proxy_sends_straight_to_the_api(canned, proxy_env):
    proxy, api = canned(ok(b'"via proxy"')), canned(ok(b'"direct"'))
    proxy_env(HTTP_PROXY=f"http://127.0.0.1:{proxy.port}", NO_PROXY="localhost,127.0.0.1")
    c = SearchClient(f"http://127.0.0.1:{api.port}", 5)
    assert c.search_body({"scene": "s"}) == "direct" and not proxy.requests
    assert api.requests[0].startswith(b"POST /v1/search HTTP/1.1\r\n")
    c.close()


def test_https_is_tunnelled_with_connect_and_a_refusal_names_the_proxy(canned, proxy_env):
    proxy = canned(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    proxy_env(HTTPS_PROXY=f"127.0.0.1:{proxy.port}")  # no scheme: an http proxy, as curl reads it
    c = SearchClient("https://search.example/api", 5)
    with pytest.raises(Unavailable, match=f"retrieval service at https://search.example/api.*proxy 127.0.0.1:{proxy.port} "
                                          "answered CONNECT with 407"):
        c.search_body({"scene": "s"})
    assert proxy.requests == [b"CONNECT search.example:443 HTTP/1.1\r\nHost: search.example:443\r\n\r\n"]


def test_after_the_tunnel_opens_tls_runs_through_it(canned, proxy_env):
    proxy = canned((b"HTTP/1.1 200 Connection established\r\n\r\n", "close"))  # then gone: the TLS handshake fails
    proxy_env(https_proxy=f"http://u:pw@127.0.0.1:{proxy.port}")
    c = SearchClient("https://[::1]:8443", 5)
    with pytest.raises(Unavailable, match="retrieval service at https://"):
        c.search_body({"scene": "s"})
    assert proxy.requests == [b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\nProxy-Authorization: Basic dTpwdw==\r\n\r\n"]


@pytest.mark.parametrize("value", ["socks5://u:secret@127.0.0.1:1080", "https://u:secret@proxy:3128", "http://u:secret@proxy:port",
                                   "http://u:secret@proxy:3128/path", "http://u:secret@proxy:3128\n"])
def test_a_proxy_setting_that_is_not_an_http_proxy_is_named_without_its_value(proxy_env, value):
    proxy_env(HTTP_PROXY=value)
    with pytest.raises(BadInput, match="http_proxy: not an http://") as info:
        SearchClient("http://search.example:8081")
    assert "secret" not in str(info.value)
