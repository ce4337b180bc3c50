"""The gate's requests as it sends them on and the answers it writes back."""

from __future__ import annotations

import pytest

from mmsearch.errors import Overloaded
from mmsearch.retrieval_service.gate.messages import Request, answer, error_answer


@pytest.mark.parametrize("url, path", [
    (b"/v1/search", "/v1/search"), (b"/v1/search?x=1", "/v1/search"), (b"/v1/%73earch", "/v1/search"),
    (b"http://api.example:8080/v1/search?x", "/v1/search"), (b"http://api.example", "/"), (b"*", "*"),
])
def test_the_path_is_the_one_the_service_sees(url, path):
    assert Request(method="POST", url=url).path == path


def test_a_request_goes_on_without_its_hop_headers_and_with_its_forwarding_chain_in_order():
    req = Request(method="POST", url=b"/v1/search?x=1", body=bytearray(b"{}"), headers=[
        (b"Host", b"api"), (b"X-Forwarded-For", b"1.1.1.1"), (b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"h2c"),
        (b"Transfer-Encoding", b"chunked"), (b"X-Forwarded-For", b"2.2.2.2"), (b"Authorization", b"Bearer k")])
    wire = req.wire("9.9.9.9")
    head, body = wire.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/search?x=1 HTTP/1.1" and body == b"{}"
    assert b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 9.9.9.9" in lines and b"Content-Length: 2" in lines
    assert b"Authorization: Bearer k" in lines and b"Host: api" in lines
    assert not [x for x in lines if x.lower().startswith((b"connection", b"upgrade", b"transfer-encoding"))]
    assert b"Content-Length" not in Request(method="GET", url=b"/x").wire("c")


def test_answers_are_framed_for_their_request():
    get, head = Request(method="GET"), Request(method="HEAD")
    out = answer(200, [(b"Content-Length", b"99"), (b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")], b"hello", get)
    assert out == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
    out = answer(200, [(b"Content-Length", b"99")], b"", head)  # the service's answer to HEAD: the GET's length, no body
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
    out = error_answer(Overloaded("busy", retry_after_s=0.2), head)  # the gate's own answer to HEAD: no body either
    assert out.endswith(b"\r\n\r\n") and b"Retry-After-Ms: 200" in out and b"Content-Length: " in out
    closing = Request(method="GET", keep_alive=False)
    assert answer(204, [], b"", closing).endswith(b"Connection: close\r\n\r\n")
    assert answer(200, [], b"", Request(method="GET", version="1.0")) == \
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"  # an HTTP/1.0 client is told it stays
    assert answer(599, [], b"", None).startswith(b"HTTP/1.1 599 Unknown") and b"Connection: close" in answer(599, [], b"", None)
