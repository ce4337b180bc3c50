"""One error hierarchy for the whole project.

Code raises these; only the edges (gRPC servicers, HTTP handlers, CLIs) translate them into a
status, through the single tables below. Third-party errors are wrapped where the client meets
them (``raise Unavailable(...) from e``) so callers never catch library-specific exceptions.
"""

from __future__ import annotations

import grpc


class MMSearchError(Exception):
    """Base of every error mmsearch raises on purpose."""

    #: CLI exit code for this family of errors.
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(MMSearchError):
    """The caller sent something wrong: the message names the field/item and the reason."""

    exit_code = 2


class ConfigError(BadInput):
    """A configuration value (file, environment, flag) is invalid."""


class NotFound(MMSearchError):
    """A named thing (model, index, document) does not exist."""

    exit_code = 2


class AlreadyExists(BadInput):
    """Refusing to overwrite something that exists (pass --force to replace it)."""


class Unavailable(MMSearchError):
    """A dependency is down or unreachable; ``dependency`` names it."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(f"{dependency} unavailable: {message}")
        self.dependency = dependency


class DeadlineExceeded(MMSearchError):
    """A stage or request ran past its deadline."""


class Overloaded(MMSearchError):
    """Too much work queued; retry later."""


class Internal(MMSearchError):
    """A bug or broken invariant on our side."""


class ParityError(Internal):
    """An exported model does not reproduce its PyTorch source closely enough."""


# The one mapping to wire statuses. Order matters: first isinstance match wins (subclasses first).
_STATUS_TABLE: tuple[tuple[type[MMSearchError], grpc.StatusCode, int], ...] = (
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
    (BadInput, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (Internal, grpc.StatusCode.INTERNAL, 500),
)


def _lookup(err: BaseException) -> tuple[grpc.StatusCode, int]:
    for cls, code, http in _STATUS_TABLE:
        if isinstance(err, cls):
            return code, http
    return grpc.StatusCode.INTERNAL, 500


def grpc_status(err: BaseException) -> grpc.StatusCode:
    """gRPC status for an error; anything that is not an MMSearchError is INTERNAL."""
    return _lookup(err)[0]


def http_status(err: BaseException) -> int:
    """HTTP status for an error; anything that is not an MMSearchError is 500."""
    return _lookup(err)[1]


def error_body(err: BaseException) -> dict[str, str]:
    """The JSON body every HTTP edge returns for an error (never a stack trace)."""
    if isinstance(err, MMSearchError):
        body = {"error": type(err).__name__, "message": err.message}
        if isinstance(err, Unavailable):
            body["dependency"] = err.dependency
        return body
    return {"error": "Internal", "message": "internal error"}
