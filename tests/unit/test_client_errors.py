"""Each client classifies its library's errors by status code or exception type, never by message text."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from pymilvus.exceptions import ConnectError, MilvusException, ParamError
from tritonclient.utils import InferenceServerException

from mmsearch import errors as E
from mmsearch.client.search_client import SearchClient as RetrievalClient
from mmsearch.clients.grpc_errors import translate as grpc_translate
from mmsearch.clients.inference import _translate as triton_translate
from mmsearch.clients.vectors import _translate as milvus_translate


class _RpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize("code, cls", [(grpc.StatusCode.INVALID_ARGUMENT, E.BadInput), (grpc.StatusCode.NOT_FOUND, E.NotFound),
                                       (grpc.StatusCode.UNAVAILABLE, E.Unavailable), (grpc.StatusCode.CANCELLED, E.Unavailable),
                                       (grpc.StatusCode.RESOURCE_EXHAUSTED, E.Overloaded),
                                       (grpc.StatusCode.DEADLINE_EXCEEDED, E.DeadlineExceeded)])
def test_grpc_client_errors_by_code(code, cls):
    assert type(grpc_translate(_RpcError(code, "x"), "preprocess")) is cls


def test_a_grpc_refusal_s_retry_after_metadata_comes_back_on_the_error():
    class Refused(_RpcError):
        def trailing_metadata(self):
            return (("retry-after", "1"), ("retry-after-ms", "35"))

    err = grpc_translate(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"), "search")
    assert isinstance(err, E.Overloaded) and err.retry_after_s == pytest.approx(0.035)


def test_grpc_message_text_does_not_decide():
    # a message that mentions a connection is still what its status says
    err = grpc_translate(_RpcError(grpc.StatusCode.INVALID_ARGUMENT, "connection field is invalid"), "preprocess")
    assert type(err) is E.BadInput


@pytest.mark.parametrize("status, cls", [("StatusCode.UNAVAILABLE", E.Unavailable), ("StatusCode.NOT_FOUND", E.NotFound),
                                         ("StatusCode.INVALID_ARGUMENT", E.BadInput), ("StatusCode.DEADLINE_EXCEEDED", E.DeadlineExceeded),
                                         ("StatusCode.INTERNAL", E.Internal), ("400", E.BadInput), ("404", E.NotFound),
                                         ("503", E.Unavailable), ("500", E.Internal)])
def test_triton_errors_by_status(status, cls):
    err = triton_translate(InferenceServerException("whatever text", status=status), "127.0.0.1:8001", "enc")
    assert type(err) is cls


def test_triton_messages_name_the_model_and_server():
    assert "model 'enc' not found on triton at h:1" in triton_translate(
        InferenceServerException("unknown", status="StatusCode.NOT_FOUND"), "h:1", "enc").message
    assert triton_translate(InferenceServerException("bad dtype", status="400"), "h:1", "enc").message == "enc: bad dtype"
    # no status at all: raised by the client library itself, never guessed from the words
    assert type(triton_translate(InferenceServerException("invalid connection timeout"), "h:1", "enc")) is E.Internal


@pytest.mark.parametrize("exc, cls", [
    (MilvusException(code=100, message="collection 'x' does not exist"), E.NotFound),
    (MilvusException(code=100, message="alias 'x' does not exist"), E.NotFound),
    (MilvusException(code=2, message="Fail connecting to server"), E.Unavailable),
    (MilvusException(code=8, message="rate limit"), E.Overloaded),
    (MilvusException(code=1, message="unavailable connect not exist"), E.Internal),  # words do not decide
    (ConnectError(message="x"), E.Unavailable),
    (ParamError(message="bad dim"), E.BadInput),
    (_RpcError(grpc.StatusCode.UNAVAILABLE, "socket closed"), E.Unavailable),
    (ConnectionRefusedError("refused"), E.Unavailable),
    (RuntimeError("connect"), E.Internal),
])
def test_milvus_errors_by_type_and_code(exc, cls):
    assert type(milvus_translate(exc, "milvus at test", "search")) is cls


@pytest.mark.parametrize("exc, slow, cls", [
    (MilvusException(code=65535, message="[search] Retry timeout: 0.001s"), True, E.DeadlineExceeded),
    (MilvusException(code=65535, message="[search] Retry timeout: 0.001s"), False, E.Internal),  # failed in time: a fault
    (MilvusException(code=2, message="Fail connecting to server"), True, E.Unavailable),  # down stays down (503)
])
def test_a_milvus_call_that_fails_once_its_time_is_spent_is_a_deadline(exc, slow, cls):
    """pymilvus reports its own timeout as a generic error; the request's deadline must read as 504, not 500."""
    import time

    from mmsearch.clients.vectors import VectorStore

    store = VectorStore.__new__(VectorStore)  # no server: only the error mapping of _call is exercised
    store.dependency = "milvus at test"

    def call(timeout: float) -> None:
        if slow:
            time.sleep(timeout)
        raise exc

    with pytest.raises(cls):
        store._call("search", call, timeout=0.3)  # (a fast failure stays well inside it on a loaded machine)


class Answers(list):
    sent: list[float]

    def __init__(self) -> None:
        super().__init__()
        self.sent = []


@pytest.fixture
def retrieval_stub():
    """A local HTTP server answering every POST with the status and body (and any headers) queued for
    it; ``answers.sent`` holds when each request arrived (time.monotonic())."""
    answers = Answers()

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            answers.sent.append(time.monotonic())
            status, body, *extra = answers.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in (extra[0] if extra else {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield RetrievalClient(f"http://127.0.0.1:{server.server_port}", timeout_s=5), answers
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, body, cls", [
    (400, {"error": "BadInput", "message": "query.text: empty"}, E.BadInput),
    (404, {"error": "NotFound", "message": "index 'x'"}, E.NotFound),
    (409, {"error": "AlreadyExists", "message": "exists"}, E.AlreadyExists),
    (429, {"error": "Overloaded", "message": "busy"}, E.Overloaded),
    (503, {"error": "Unavailable", "message": "milvus unavailable: down", "dependency": "milvus at x"}, E.Unavailable),
    (504, {"error": "DeadlineExceeded", "message": "slow"}, E.DeadlineExceeded),
    (500, {"error": "Internal", "message": "internal error"}, E.Internal),
])
def test_retrieval_client_maps_statuses_through_the_one_table(retrieval_stub, status, body, cls):
    client, answers = retrieval_stub
    answers.append((status, body))
    with pytest.raises(E.MMSearchError) as info:
        client.click("r", "d", "u")
    assert type(info.value) is cls
    if cls is E.Unavailable:
        assert info.value.dependency == "milvus at x"  # the service's own naming of what is down


def test_retrieval_client_unreachable_is_unavailable():
    with pytest.raises(E.Unavailable, match="retrieval service at http://127.0.0.1:1"):
        RetrievalClient("http://127.0.0.1:1", timeout_s=2).click("r", "d", "u")


BUSY = {"error": "Overloaded", "message": "busy: 1 searches in flight and 2 queued; retry shortly"}
OK = {"results": [], "has_more": False}


def test_a_429_carries_the_server_s_retry_after_and_is_not_retried_unless_asked(retrieval_stub):
    client, answers = retrieval_stub
    answers.append((429, BUSY, {"Retry-After": "1", "Retry-After-Ms": "40"}))
    with pytest.raises(E.Overloaded) as info:
        client.search("text2text", text="q")
    assert info.value.retry_after_s == pytest.approx(0.04) and len(answers.sent) == 1
    answers.append((429, BUSY, {"Retry-After": "2"}))  # only the standard header: seconds
    with pytest.raises(E.Overloaded) as info:
        client.search("text2text", text="q")
    assert info.value.retry_after_s == 2.0


def test_a_client_that_retries_a_429_waits_as_long_as_retry_after_asks(retrieval_stub):
    stub, answers = retrieval_stub
    client = RetrievalClient(stub.base_url, timeout_s=5, overload_retries=2)
    answers.extend([(429, BUSY, {"Retry-After": "1", "Retry-After-Ms": "150"}),
                    (429, BUSY, {"Retry-After": "1", "Retry-After-Ms": "100"}), (200, OK)])
    assert client.search("text2text", text="q") == OK
    gaps = [b - a for a, b in zip(answers.sent, answers.sent[1:], strict=False)]
    assert len(gaps) == 2 and gaps[0] >= 0.15 and gaps[1] >= 0.2  # never sooner; the second refusal in a row waits longer
    assert gaps[0] < 0.5 and gaps[1] < 0.6  # (and not much longer: at most 1.5x the doubled pause)
    answers.extend([(429, BUSY, {"Retry-After-Ms": "10"})] * 3)
    with pytest.raises(E.Overloaded):  # out of retries: the refusal comes back to the caller
        client.search("text2text", text="q")
    assert not answers
    answers.append((429, BUSY, {"Retry-After": "30"}))  # a wait beyond the client's own timeout is not waited
    t0 = time.monotonic()
    with pytest.raises(E.Overloaded):
        client.search("text2text", text="q")
    assert time.monotonic() - t0 < 1.0
    answers.append((429, BUSY, {"Retry-After-Ms": "10"}))
    with pytest.raises(E.Overloaded):  # a click is never sent twice
        client.click("r", "d")
    assert not answers


def test_overload_delay_never_undercuts_retry_after_and_grows_with_refusals_in_a_row():
    import random

    from mmsearch.client.search_client import MAX_OVERLOAD_DELAY_S, NO_RETRY_AFTER_S, overload_delay

    rng = random.Random(0)
    e = E.Overloaded("busy", retry_after_s=0.03)
    first = [overload_delay(e, 0, rng) for _ in range(200)]
    assert min(first) >= 0.03 and max(first) <= 0.045
    assert min(overload_delay(e, 3, rng) for _ in range(200)) >= 0.24
    assert max(overload_delay(e, 30, rng) for _ in range(200)) <= MAX_OVERLOAD_DELAY_S * 1.5
    assert overload_delay(E.Overloaded("busy"), 0, rng) >= NO_RETRY_AFTER_S
    assert overload_delay(E.Overloaded("busy", retry_after_s=5.0), 0, rng) >= 5.0  # a long Retry-After is honoured as it is
