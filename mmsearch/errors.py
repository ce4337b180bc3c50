"""One error hierarchy for the whole project.

Code raises these; only the edges (gRPC servicers, HTTP handlers, CLIs) translate them into a
status, through the single tables below. Third-party errors are wrapped where the client meets
them (``raise Unavailable(...) from e``) so callers never catch library-specific exceptions.
"""

from __future__ import annotations

import math
from typing import Any

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


class TooLarge(BadInput):
    """A request, batch or item over its size limit (HTTP 413; gRPC INVALID_ARGUMENT, as any bad input)."""


class AlreadyExists(BadInput):
    """Refusing to overwrite something that exists (pass --force to replace it)."""


class Unavailable(MMSearchError):
    """A dependency is down or unreachable; ``dependency`` names it."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(f"{dependency} unavailable: {message}")
        self.dependency = dependency
        self.reason = message  # what went wrong, without the dependency's name


class DeadlineExceeded(MMSearchError):
    """A stage or request ran past its deadline."""


class Overloaded(MMSearchError):
    """Too much work queued; retry later: after ``retry_after_s`` seconds when the refusal said
    (admission control's estimate of its queue's drain time; a client reads it back from the
    Retry-After-Ms / Retry-After headers), else the caller's own pause."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_headers(e: Overloaded) -> dict[str, str]:
    """The HTTP headers (and gRPC trailing metadata, lower-cased) that tell a refused caller when to
    come back: ``Retry-After`` in whole seconds as RFC 9110 has it (at least 1: 0 would invite an
    immediate retry), and ``Retry-After-Ms``, the estimate itself, for clients that read it."""
    s = e.retry_after_s if e.retry_after_s is not None and e.retry_after_s > 0 else 1.0
    return {"Retry-After": str(max(1, math.ceil(s))), "Retry-After-Ms": str(max(1, math.ceil(s * 1000)))}


def retry_after_from(headers: dict[str, str]) -> float | None:
    """Seconds a refusal asked the caller to wait, from its headers or trailing metadata (names in any
    case): Retry-After-Ms when given, else Retry-After in seconds (an HTTP date is not honoured: None)."""
    low = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(low[name].strip()) / scale
        except (KeyError, ValueError):
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None


class Unauthenticated(MMSearchError):
    """No valid API key on a request to an API that requires one."""

    exit_code = 3


class PermissionDenied(Unauthenticated):
    """A valid key without the scope the call needs (a read key on a write): HTTP 403, gRPC PERMISSION_DENIED."""


class Internal(MMSearchError):
    """A bug or broken invariant on our side."""


class ParityError(Internal):
    """An exported model does not reproduce its PyTorch source closely enough."""


class ProcessDied(Unavailable):
    """A child process we started (a server of the stack) exited; ``dependency`` names it."""


# The one mapping to wire statuses, used in both directions. Order matters: to a status, the
# first isinstance match wins (subclasses first); from a status, the first row with that status wins.
_STATUS_TABLE: tuple[tuple[type[MMSearchError], grpc.StatusCode, int], ...] = (
    (TooLarge, grpc.StatusCode.INVALID_ARGUMENT, 413),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
    (BadInput, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    (Internal, grpc.StatusCode.INTERNAL, 500),
)
# Statuses a peer (or its transport) may answer that no error of ours produces: what they mean for us.
_GRPC_ALIASES: dict[grpc.StatusCode, type[MMSearchError]] = {
    grpc.StatusCode.CANCELLED: Unavailable,  # the server went away mid-call (shutdown)
    grpc.StatusCode.FAILED_PRECONDITION: BadInput,
    grpc.StatusCode.OUT_OF_RANGE: BadInput,
}
_HTTP_ALIASES: dict[int, type[MMSearchError]] = {
    422: BadInput,
    502: Unavailable,  # a proxy could not reach the service
}


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


_FROM_GRPC: dict[grpc.StatusCode, type[MMSearchError]] = {**_GRPC_ALIASES}
_FROM_HTTP: dict[int, type[MMSearchError]] = {**_HTTP_ALIASES}
for _cls, _code, _http in reversed(_STATUS_TABLE):  # reversed: the first row of a status wins
    _FROM_GRPC[_code] = _cls
    _FROM_HTTP[_http] = _cls
_FROM_GRPC[grpc.StatusCode.INVALID_ARGUMENT] = BadInput  # (TooLarge shares it: over gRPC a size refusal is bad input)


def _make(cls: type[MMSearchError], message: str, dependency: str) -> MMSearchError:
    if issubclass(cls, Unavailable):
        return cls(dependency, message)
    if issubclass(cls, (BadInput, NotFound)):
        return cls(message)  # the peer's message already names the field or thing
    return cls(f"{dependency}: {message}")


def from_grpc_status(code: grpc.StatusCode | None, message: str, dependency: str) -> MMSearchError:
    """The error a client raises for a gRPC status from ``dependency`` (the inverse of grpc_status)."""
    cls = _FROM_GRPC.get(code) if code is not None else None
    if cls is None:
        return Internal(f"{dependency}: {code.name if code is not None else 'error'}: {message}")
    return _make(cls, message, dependency)


def from_http_status(status: int, message: str, dependency: str) -> MMSearchError:
    """The error a client raises for an HTTP status from ``dependency`` (the inverse of http_status)."""
    cls = _FROM_HTTP.get(status)
    if cls is None:
        return Internal(f"{dependency} answered {status}: {message}")
    return _make(cls, message, dependency)


def error_body(err: BaseException) -> dict[str, Any]:
    """The JSON body every HTTP edge returns for an error (never a stack trace). A refused batch of
    documents adds ``rejects``: each bad document's position, id, field and reason."""
    if isinstance(err, MMSearchError):
        body: dict[str, Any] = {"error": type(err).__name__, "message": err.message}
        if isinstance(err, Unavailable):
            body["dependency"] = err.dependency
        rejects = getattr(err, "rejects", None)
        if rejects:
            body["rejects"] = rejects
        return body
    return {"error": "Internal", "message": "internal error"}
