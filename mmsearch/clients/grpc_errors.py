"""grpc.RpcError -> mmsearch errors, for every client of our own gRPC services (by status code only)."""

from __future__ import annotations

import grpc

from mmsearch.errors import MMSearchError, from_grpc_status


def translate(e: grpc.RpcError, dependency: str) -> MMSearchError:
    code = e.code() if hasattr(e, "code") else None
    detail = (e.details() if hasattr(e, "details") else "") or str(e)
    return from_grpc_status(code, detail, dependency)
