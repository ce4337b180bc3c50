"""Network helpers: free ports, health probes that never raise, polling with a deadline."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmsearch.runtime.net import free_port, http_ok, wait_until


def test_free_port_can_be_bound_right_away():
    port = free_port()
    assert isinstance(port, int) and 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # raises if the port were in use


def test_free_port_is_not_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert all(free_port() != taken for _ in range(20))


@pytest.fixture(scope="module")
def web():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            code = {"/ok": 200, "/empty": 204, "/missing": 404, "/broken": 500, "/unavailable": 503, "/moved": 302}[self.path]
            self.send_response(code)
            if code == 302:
                self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("path, ok", [("/ok", True), ("/empty", True), ("/moved", True), ("/missing", False),
                                      ("/broken", False), ("/unavailable", False)])
def test_http_ok_is_true_only_for_2xx(web, path, ok):
    assert http_ok(web + path) is ok


def test_http_ok_false_when_nothing_listens():
    assert http_ok(f"http://127.0.0.1:{free_port()}/") is False


@pytest.mark.parametrize("url", ["not a url", "", "http://", "ftp-ish:/x"])
def test_http_ok_false_for_malformed_urls(url):
    assert http_ok(url) is False


def _raw_server(reply: bytes | None):
    """A TCP server that answers every connection with ``reply`` (None: never answers)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()
    conns = []

    def loop():
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(c)
            if reply is not None:
                try:
                    c.recv(4096)
                    c.sendall(reply)
                finally:
                    c.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def close():
        stop.set()
        t.join(2)
        for c in conns:
            c.close()
        srv.close()

    return srv.getsockname()[1], close


@pytest.mark.parametrize("reply", [b"garbage that is not HTTP\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n",
                                   b"HTTP/1.1 abc\r\n\r\n", b"\x00\xff\x16\x03\x01", b""])
def test_http_ok_false_not_an_exception_for_non_http_answers(reply):
    port, close = _raw_server(reply)
    try:
        assert http_ok(f"http://127.0.0.1:{port}/health", timeout=2) is False
    finally:
        close()


def test_http_ok_times_out_on_a_silent_server():
    port, close = _raw_server(None)
    try:
        t0 = time.monotonic()
        assert http_ok(f"http://127.0.0.1:{port}/", timeout=0.2) is False
        assert time.monotonic() - t0 < 2  # the timeout applies, the probe does not hang
    finally:
        close()


def test_wait_until_returns_at_once_when_true():
    calls = []
    assert wait_until(lambda: calls.append(1) or True, timeout=5, interval=1) is True
    assert len(calls) == 1


def test_wait_until_polls_until_true():
    calls = []

    def third_time():
        calls.append(1)
        return len(calls) >= 3

    assert wait_until(third_time, timeout=5, interval=0.01) is True
    assert len(calls) == 3


def test_wait_until_gives_up_after_the_timeout():
    calls = []
    t0 = time.monotonic()
    assert wait_until(lambda: (calls.append(1), False)[1], timeout=0.15, interval=0.02) is False
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 2
    assert len(calls) >= 2  # it kept polling, and checked once more at the deadline


def test_wait_until_with_zero_timeout_checks_once():
    calls = []
    assert wait_until(lambda: calls.append(1) or True, timeout=0) is True
    assert wait_until(lambda: (calls.append(1), False)[1], timeout=0) is False
    assert len(calls) == 2


def test_wait_until_returns_the_truthiness_as_a_bool_like_value():
    assert wait_until(lambda: [1], timeout=0.1, interval=0.01)
    assert not wait_until(list, timeout=0.05, interval=0.01)


def test_free_ports_stay_below_the_ephemeral_range_and_never_repeat():
    from mmsearch.runtime.net import _ephemeral_range

    lo, _ = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)  # handed out once per process
    if lo > 11000:
        # outgoing connections take ports from the ephemeral range: a server port chosen there can be gone by bind time
        assert all(p < lo for p in ports)


def test_reported_ports_round_trip_and_garbage_is_none(tmp_path):
    from mmsearch.runtime.net import read_ports, write_ports

    f = tmp_path / "run" / "svc.ports.json"
    assert read_ports(f) is None  # not written yet: the launcher keeps waiting
    write_ports(f, {"http": 18080, "grpc": 15051})
    assert read_ports(f) == {"http": 18080, "grpc": 15051}
    assert not list(f.parent.glob(".*tmp"))  # written under a temporary name, then renamed
    for bad in ("", "{", "[1, 2]", '{"http": 0}', '{"http": 70000}', '{"http": "80"}', '{"http": true}'):
        f.write_text(bad)
        assert read_ports(f) is None, bad
