import grpc
import pytest

from mmsearch import errors as E


@pytest.mark.parametrize(
    "err, code, http",
    [
        (E.BadInput("x"), grpc.StatusCode.INVALID_ARGUMENT, 400),
        (E.ConfigError("x"), grpc.StatusCode.INVALID_ARGUMENT, 400),
        (E.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS, 409),
        (E.NotFound("x"), grpc.StatusCode.NOT_FOUND, 404),
        (E.Unavailable("milvus", "refused"), grpc.StatusCode.UNAVAILABLE, 503),
        (E.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (E.Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (E.ParityError("x"), grpc.StatusCode.INTERNAL, 500),
        (ValueError("secret detail"), grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_one_mapping(err, code, http):
    assert E.grpc_status(err) == code
    assert E.http_status(err) == http


def test_unavailable_names_dependency_and_foreign_errors_leak_nothing():
    body = E.error_body(E.Unavailable("triton", "connection refused"))
    assert body["dependency"] == "triton" and "triton unavailable" in body["message"]
    assert E.error_body(ValueError("/etc/passwd")) == {"error": "Internal", "message": "internal error"}


def test_cli_exit_codes():
    assert E.BadInput("x").exit_code == 2 and E.NotFound("x").exit_code == 2
    assert E.ParityError("x").exit_code == 1


PRIMARY = [E.AlreadyExists, E.BadInput, E.NotFound, E.Unavailable, E.DeadlineExceeded, E.Overloaded, E.Internal]


def _make(cls):
    return cls("dep", "msg") if issubclass(cls, E.Unavailable) else cls("msg")


@pytest.mark.parametrize("cls", PRIMARY)
def test_grpc_round_trip_gives_the_same_class(cls):
    back = E.from_grpc_status(E.grpc_status(_make(cls)), "msg", "peer")
    assert type(back) is cls


@pytest.mark.parametrize("cls", PRIMARY)
def test_http_round_trip_gives_the_same_class(cls):
    back = E.from_http_status(E.http_status(_make(cls)), "msg", "peer")
    assert type(back) is cls


@pytest.mark.parametrize("sub, parent", [(E.ConfigError, E.BadInput), (E.ParityError, E.Internal), (E.ProcessDied, E.Unavailable)])
def test_subclasses_travel_as_their_parent(sub, parent):
    err = _make(sub)
    assert type(E.from_grpc_status(E.grpc_status(err), "m", "p")) is parent
    assert type(E.from_http_status(E.http_status(err), "m", "p")) is parent


def test_unavailable_from_a_status_names_the_dependency():
    err = E.from_grpc_status(grpc.StatusCode.UNAVAILABLE, "connection refused", "preprocess service at 127.0.0.1:1")
    assert isinstance(err, E.Unavailable) and err.dependency == "preprocess service at 127.0.0.1:1"
    assert "connection refused" in err.message


def test_bad_input_keeps_the_peers_message_as_is():
    assert E.from_http_status(400, "query.text: empty", "retrieval").message == "query.text: empty"
    assert E.from_grpc_status(grpc.StatusCode.NOT_FOUND, "model 'x'", "triton").message == "model 'x'"


@pytest.mark.parametrize("code, cls", [(grpc.StatusCode.CANCELLED, E.Unavailable), (grpc.StatusCode.OUT_OF_RANGE, E.BadInput),
                                       (grpc.StatusCode.FAILED_PRECONDITION, E.BadInput), (grpc.StatusCode.UNKNOWN, E.Internal),
                                       (grpc.StatusCode.DATA_LOSS, E.Internal), (None, E.Internal)])
def test_grpc_statuses_we_never_send(code, cls):
    assert type(E.from_grpc_status(code, "m", "peer")) is cls


@pytest.mark.parametrize("status, cls", [(422, E.BadInput), (502, E.Unavailable), (418, E.Internal),
                                         (301, E.Internal)])
def test_http_statuses_we_never_send(status, cls):
    err = E.from_http_status(status, "m", "peer")
    assert type(err) is cls
    if cls is E.Internal:
        assert str(status) in err.message  # the unexpected status is named


def test_process_died_is_unavailable_with_its_own_class():
    err = E.ProcessDied("triton", "exited with code 1")
    assert isinstance(err, E.Unavailable) and E.http_status(err) == 503 and err.exit_code == 1
    assert E.error_body(err)["error"] == "ProcessDied"
