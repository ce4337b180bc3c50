"""grpc.RpcError -> mmsearch errors, for every client of our own gRPC services (by status code only)."""

from __future__ import annotations

import grpc

from mmsearch.errors import MMSearchError, Overloaded, from_grpc_status, retry_after_from


def translate(e: grpc.RpcError, dependency: str) -> MMSearchError:
    code = e.code() if hasattr(e, "code") else None
    detail = (e.details() if hasattr(e, "details") else "") or str(e)
    out = from_grpc_status(code, detail, dependency)
    if isinstance(out, Overloaded) and hasattr(e, "trailing_metadata"):  # when the server asked to be called again
        out.retry_after_s = retry_after_from({k: v for k, v in (e.trailing_metadata() or ()) if isinstance(v, str)})
    return out
