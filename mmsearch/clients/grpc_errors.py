"""grpc.RpcError -> mmsearch errors, for every client of our own gRPC services."""

from __future__ import annotations

import grpc

from mmsearch.errors import BadInput, DeadlineExceeded, Internal, MMSearchError, NotFound, Overloaded, Unavailable


def translate(e: grpc.RpcError, dependency: str) -> MMSearchError:
    code = e.code() if hasattr(e, "code") else None
    detail = (e.details() if hasattr(e, "details") else "") or str(e)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadInput(detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(detail)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or (
            code == grpc.StatusCode.UNKNOWN and any(w in detail.lower() for w in ("socket closed", "goaway", "connection"))):
        # CANCELLED: the server went away mid-call (shutdown); UNKNOWN + a transport message: the same
        return Unavailable(dependency, detail)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{dependency}: {detail}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded(f"{dependency}: {detail}")
    return Internal(f"{dependency}: {code.name if code else 'error'}: {detail}")
