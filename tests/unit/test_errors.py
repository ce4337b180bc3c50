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
