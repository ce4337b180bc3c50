"""The admission gate in front of a real waitress server: what passes through unchanged, what it refuses
itself (and that a refused search never reaches the service), and every bad input it must survive."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mmsearch.config import Config
from mmsearch.errors import BadInput, Unavailable
from mmsearch.retrieval_service.gate.server import GateServer, create_server
from mmsearch.runtime.wsgi import WsgiServer

pytestmark = pytest.mark.integration
KEY = "k" * 20


class Backend:
    """A WSGI app that records what reached it; a search holds until released (``{"hold": true}``)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.release = threading.Event()
        self.holding = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n else b""
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        self.seen.append((method, path, body, headers))
        if path == "/v1/search" and body and json.loads(body).get("hold"):
            with self.lock:
                self.holding += 1
            self.release.wait(10)
        if path == "/slow":
            time.sleep(1.0)
        out = json.dumps({"method": method, "path": path, "query": environ.get("QUERY_STRING"), "body": len(body)}).encode()
        if path == "/missing":
            start_response("404 Not Found", [("Content-Type", "application/json"), ("X-Thing", "kept")])
            return [out]
        if path == "/chunked":  # no Content-Length: waitress sends it chunked
            start_response("200 OK", [("Content-Type", "application/json")])
            return iter([out[:7], out[7:]])
        if path == "/big":
            big = b"x" * 1_000_000
            start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(big)))])
            return [big]
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
            return [b"mmsearch_requests_total 3.0\n"]
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
        return [out]

    def searches(self) -> int:
        return sum(1 for m, p, *_ in self.seen if p == "/v1/search")


def config(**retrieval) -> Config:
    base = Config()
    return base.model_copy(update={"retrieval": base.retrieval.model_copy(update={"max_inflight": 1, "max_queue": 1, **retrieval})})


@contextmanager
def gated(cfg: Config | None = None, upstream: str | None = None, host: str = "127.0.0.1") -> Iterator[tuple[GateServer, Backend]]:
    """``host``: how the gate names the backend (``upstream`` replaces the whole address)."""
    backend = Backend()
    server = WsgiServer(backend, "127.0.0.1", 0, 16, "test backend")
    gate = create_server(cfg or config(), "127.0.0.1:0", upstream or f"http://{host}:{server.port}")
    try:
        yield gate, backend
    finally:
        backend.release.set()
        gate.stop()
        server.stop()


def request(gate: GateServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def hold_searches(gate: GateServer, backend: Backend, n: int, headers: dict | None = None) -> list[threading.Thread]:
    threads = [threading.Thread(target=request, args=(gate, "POST", "/v1/search", b'{"hold": true}', headers)) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (gate.gate.admission.inflight < n or backend.holding < 1):
        time.sleep(0.01)
    assert gate.gate.admission.inflight == n
    return threads


def raw(gate: GateServer, data: bytes, wait_s: float = 0.5) -> bytes:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=5) as s:
        s.sendall(data)
        s.settimeout(0.1)
        out = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:  # until the gate closes, or wait_s passes (a kept connection)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            out += chunk
        return out


def test_requests_and_answers_pass_through_unchanged():
    with gated() as (gate, backend):
        conn = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)  # one kept connection for all of them
        status, headers, body = request(gate, "GET", "/x?a=1&b=two", conn=conn)
        assert status == 200 and json.loads(body) == {"method": "GET", "path": "/x", "query": "a=1&b=two", "body": 0}
        status, headers, body = request(gate, "POST", "/v1/search", b'{"query": {"text": "x"}}',
                                        {"Content-Type": "application/json", "X-Custom": "yes"}, conn=conn)
        assert status == 200 and json.loads(body)["body"] == 24
        _, _, sent, seen_headers = backend.seen[-1]
        assert sent == b'{"query": {"text": "x"}}' and seen_headers["HTTP_X_CUSTOM"] == "yes"
        status, headers, body = request(gate, "GET", "/missing", conn=conn)  # the service's status, headers and body
        assert status == 404 and headers["X-Thing"] == "kept" and json.loads(body)["path"] == "/missing"
        status, headers, body = request(gate, "GET", "/chunked", conn=conn)  # re-framed with a length
        assert status == 200 and json.loads(body)["path"] == "/chunked" and headers["Content-Length"] == str(len(body))
        status, headers, body = request(gate, "HEAD", "/x", conn=conn)  # the GET's length, no body
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        status, _, body = request(gate, "GET", "/x", conn=conn)  # the connection is still in step after HEAD
        assert status == 200 and json.loads(body)["path"] == "/x"
        conn.putrequest("POST", "/v1/embed")  # a body sent in chunks reaches the service whole
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["body"] == 5 and backend.seen[-1][2] == b"abcde"
        conn.close()


def test_an_upstream_named_by_host_name_is_resolved():
    """Compose's gate forwards to http://retrieval:8081: a name, resolved when the gate connects."""
    with gated(host="localhost") as (gate, backend):
        status, _, body = request(gate, "POST", "/v1/search", b'{"query": {"text": "x"}}')
        assert status == 200 and json.loads(body)["path"] == "/v1/search" and backend.searches() == 1


def test_pipelined_requests_are_answered_in_order():
    with gated() as (gate, _):
        out = raw(gate, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                        b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait_s=3)
        paths = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["path"] for part in out.split(b"HTTP/1.1 2")[1:]]
        assert paths == ["/a", "/v1/search", "/c"]
        assert out.endswith(b"}") and b"Connection: close" in out.split(b"HTTP/1.1 200")[-1]


def test_searches_beyond_the_services_capacity_are_refused_at_the_gate():
    with gated() as (gate, backend):  # capacity: max_inflight 1 + max_queue 1
        held = hold_searches(gate, backend, 2)
        before = backend.searches()
        t0 = time.perf_counter()
        status, headers, body = request(gate, "POST", "/v1/search", b'{"query": {"text": "x"}}')
        assert status == 429 and json.loads(body)["error"] == "Overloaded", body
        assert int(headers["Retry-After"]) >= 1 and int(headers["Retry-After-Ms"]) >= 10
        assert (time.perf_counter() - t0) < 1.0
        assert request(gate, "POST", "/v1/embed", b"{}")[0] == 429  # embeddings hold the same slots
        assert backend.searches() == before  # never forwarded
        assert request(gate, "GET", "/healthz")[0] == 200  # only searches are counted: the rest passes
        assert request(gate, "GET", "/v1/search")[0] == 200  # (a GET is the service's 405 to give, not counted)
        status, _, metrics = request(gate, "GET", "/metrics")
        text = metrics.decode()
        assert status == 200 and "mmsearch_requests_total 3.0" in text  # the service's own, then the gate's
        assert 'mmsearch_gate_requests_total{outcome="refused"} 2.0' in text and 'mmsearch_gate{what="capacity"} 2.0' in text
        backend.release.set()
        for t in held:
            t.join(10)
        assert gate.gate.admission.inflight == 0  # every place given back
        assert request(gate, "POST", "/v1/search", b"{}")[0] == 200  # room again: forwarded
        assert gate.gate.admission.latency_s > 0  # answered searches time Retry-After


def test_with_keys_on_a_request_without_a_valid_key_gets_401_before_any_429():
    with gated(config(api_keys=[KEY])) as (gate, backend):
        held = hold_searches(gate, backend, 2, {"X-API-Key": KEY})
        status, headers, body = request(gate, "POST", "/v1/search", b"{}")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and json.loads(body)["error"] == "Unauthenticated"
        assert request(gate, "POST", "/v1/search", b"{}", {"Authorization": "Bearer " + "x" * 20})[0] == 401
        assert request(gate, "POST", "/v1/search", b"{}", {"Authorization": "Bearer " + KEY})[0] == 429
        backend.release.set()
        for t in held:
            t.join(10)


def test_a_body_over_the_limit_gets_the_services_answer_and_is_not_forwarded():
    with gated(config(max_body_mb=0.001)) as (gate, backend):  # 1,048 bytes
        big = b"x" * 2000
        status, _, body = request(gate, "POST", "/v1/search", big)
        assert status == 400 and "limit" in json.loads(body)["message"]
        status, _, body = request(gate, "PUT", "/v1/indexes/texts/documents", big)
        assert status == 413 and json.loads(body)["error"] == "TooLarge"
        assert all(len(b) < 2000 for _, _, b, _ in backend.seen)
        assert gate.gate.admission.inflight == 0
        assert request(gate, "POST", "/v1/search", b"{}")[0] == 200


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", b"431"),
    (b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    (b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200_000, b"431"),  # one header line that never ends
])
def test_malformed_requests_get_a_clear_error_and_the_gate_serves_on(data, status):
    with gated() as (gate, _):
        out = raw(gate, data)
        assert out.startswith(b"HTTP/1.1 " + status), out[:200]
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["message"]
        assert request(gate, "GET", "/x")[0] == 200


def test_a_service_that_is_down_or_slow_is_a_clear_error_and_gives_its_place_back():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with gated(upstream=f"http://127.0.0.1:{dead}") as (gate, _):
        status, _, body = request(gate, "POST", "/v1/search", b"{}")
        assert status == 503 and json.loads(body)["dependency"] == "retrieval"
        assert gate.gate.admission.inflight == 0
        conn = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)  # a HEAD's error has no body: in step
        status, headers, body = request(gate, "HEAD", "/healthz", conn=conn)
        assert status == 503 and body == b"" and int(headers["Content-Length"]) > 0
        status, _, body = request(gate, "GET", "/healthz", conn=conn)
        assert status == 503 and json.loads(body)["error"] == "Unavailable"
        conn.close()
    cfg = config()
    cfg = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"upstream_timeout_s": 0.2})})
    with gated(cfg) as (gate, _):
        status, _, body = request(gate, "GET", "/slow")
        assert status == 504 and json.loads(body)["error"] == "DeadlineExceeded"
        assert request(gate, "GET", "/x")[0] == 200


def test_a_kept_connection_the_service_closed_is_retried_on_a_new_one():
    """A service that closes each connection after one answer without saying so (as one does when its
    idle limit passes): the gate's second request meets a closed connection and goes again on a new one."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served = []

    def serve():
        while len(served) < 2:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                served.append(data.split(b" ")[1])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with gated(upstream=f"http://127.0.0.1:{port}") as (gate, _):
            assert request(gate, "GET", "/one") == (200, {"Content-Length": "2"}, b"ok")
            time.sleep(0.2)  # the service has closed the kept connection by now
            assert request(gate, "GET", "/two")[0] == 200
        t.join(5)
        assert served == [b"/one", b"/two"]
    finally:
        listener.close()


def test_bad_addresses_are_named():
    with pytest.raises(BadInput, match="listen"):
        create_server(config(), "nonsense", "http://127.0.0.1:1")
    with pytest.raises(BadInput, match="upstream"):
        create_server(config(), "127.0.0.1:0", "https://127.0.0.1:1/api")
    with socket.create_server(("127.0.0.1", 0)) as taken, pytest.raises(Unavailable, match="cannot bind"):
        create_server(config(), f"127.0.0.1:{taken.getsockname()[1]}", "http://127.0.0.1:1")
    assert [t.name for t in threading.enumerate() if t.name == "gate"] == []


def test_what_follows_a_forwarded_request_on_its_connection_waits_for_its_answer():
    """A pipelined request that cannot be read is answered 400 only after the forwarded one's answer."""
    with gated() as (gate, _):
        out = raw(gate, b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GARBAGE\r\n\r\n", wait_s=3)
        first, second = out.split(b"HTTP/1.1 ")[1:3]
        assert first.startswith(b"200") and b'"/v1/search"' in first
        assert second.startswith(b"400") and b"Connection: close" in second


def test_an_upgrade_is_ignored_and_the_request_answered_over_http11():
    """Java's HttpClient offers h2c on the first plain-http request; a server may ignore it (RFC 9110 7.8)."""
    with gated() as (gate, backend):
        out = raw(gate, b"POST /v1/search HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 9\r\n\r\n{\"q\": 12}"
                        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait_s=3)
        answers = out.split(b"HTTP/1.1 ")[1:]
        assert [a[:3] for a in answers] == [b"200", b"200"], out
        assert b'"/after"' in answers[1]
        search = next(b for m, p, b, h in backend.seen if p == "/v1/search")
        assert search == b'{"q": 12}' and all("HTTP_UPGRADE" not in h for *_, h in backend.seen)
        status, _, body = request(gate, "GET", "/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
        assert status == 200 and json.loads(body)["path"] == "/ws"


def test_every_spelling_of_the_search_path_is_counted():
    with gated() as (gate, backend):
        held = hold_searches(gate, backend, 2)
        for target in ("/v1/%73earch", "http://api.example/v1/search", "/v1/search?x=1"):
            assert raw(gate, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % target.encode()).startswith(
                b"HTTP/1.1 429"), (target, gate.gate.admission.inflight)
        backend.release.set()
        for t in held:
            t.join(10)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent():
    with gated(config(max_body_mb=0.001)) as (gate, backend):
        t0 = time.monotonic()
        out = raw(gate, b"PUT /v1/indexes/t/documents HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n"
                        b"Expect: 100-continue\r\n\r\n", wait_s=2)
        assert out.startswith(b"HTTP/1.1 413") and b"100 Continue" not in out and b"Connection: close" in out
        assert time.monotonic() - t0 < 2.5 and backend.seen == []


def test_connections_beyond_the_limit_are_answered_503_and_closed():
    cfg = config()
    cfg = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"max_connections": 2})})
    with gated(cfg) as (gate, _):
        kept = [socket.create_connection(("127.0.0.1", gate.port)) for _ in range(2)]
        try:
            time.sleep(0.2)
            out = raw(gate, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 503") and b"connections" in out
        finally:
            for k in kept:
                k.close()
        time.sleep(0.2)
        assert request(gate, "GET", "/x")[0] == 200


def test_http10_keep_alive_and_trailers():
    with gated() as (gate, backend):
        out = raw(gate, b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in out
        out = raw(gate, b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"2\r\n{}\r\n0\r\nX-Trailer: t\r\nAuthorization: Bearer zzz\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200")
        _, _, body, headers = backend.seen[-1]
        assert body == b"{}" and "HTTP_X_TRAILER" not in headers and "HTTP_AUTHORIZATION" not in headers


def test_a_client_that_does_not_read_its_answers_stops_the_gate_reading_its_requests():
    """Pipelined requests for big answers, none read for a while: the gate holds back (no unbounded buffer),
    then every answer arrives, in order."""
    with gated() as (gate, backend), socket.create_connection(("127.0.0.1", gate.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        time.sleep(1.5)
        conn = next(iter(gate.gate.connections))
        assert conn.write_paused and sum(1 for _, p, *_ in backend.seen if p == "/big") < 20
        got = b""
        while got.count(b"HTTP/1.1 200") < 20 or len(got) < 20 * 1_000_000:
            chunk = s.recv(1 << 20)
            assert chunk, "closed early"
            got += chunk
        assert got.count(b"HTTP/1.1 200") == 20


def _drain_cfg(drain_s: float) -> Config:
    cfg = config()
    return cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"drain_s": drain_s})})


def test_at_stop_a_request_with_the_service_is_answered_and_nothing_new_is_taken():
    """A rolling restart: the request in flight gets its answer (its connection's last), an idle kept
    connection is closed at once, and a new connection is refused."""
    with gated(_drain_cfg(10.0)) as (gate, backend):
        idle = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
        assert request(gate, "GET", "/x", conn=idle)[0] == 200
        got: list = []
        slow = threading.Thread(target=lambda: got.append(request(gate, "GET", "/slow")))
        slow.start()
        deadline = time.monotonic() + 5
        while not any(p == "/slow" for _, p, *_ in backend.seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        stopper = threading.Thread(target=gate.stop)
        stopper.start()
        time.sleep(0.2)  # (the backend holds /slow for 1 s)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", gate.port), timeout=2).close()
        assert idle.sock is not None and idle.sock.recv(1) == b""  # the idle connection: closed by the gate
        slow.join(5)
        stopper.join(15)
        status, headers, body = got[0]
        assert status == 200 and json.loads(body)["path"] == "/slow" and headers.get("Connection") == "close"
        assert 0.5 < time.monotonic() - t0 < 5  # it waited for the answer, not for the whole drain time
        idle.close()


def test_a_request_slower_than_the_drain_time_is_cut_off_at_stop():
    with gated(_drain_cfg(0.2)) as (gate, backend):
        errors: list = []

        def slow() -> None:
            try:
                request(gate, "GET", "/slow")
            except (OSError, http.client.HTTPException) as e:
                errors.append(e)

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 5
        while not any(p == "/slow" for _, p, *_ in backend.seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        gate.stop()
        assert time.monotonic() - t0 < 0.9  # the drain time, not the backend's 1 s
        t.join(5)
        assert len(errors) == 1  # the client saw its connection end without an answer
