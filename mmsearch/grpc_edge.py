"""The one place our gRPC servicers turn errors into statuses."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import grpc

from mmsearch.errors import MMSearchError, grpc_status


def grpc_edge(log: logging.Logger) -> Callable:
    """Decorate a servicer method: mmsearch errors abort with their status and message; anything
    else is logged with its traceback and answered INTERNAL without details."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self, request, context: grpc.ServicerContext):
            try:
                return method(self, request, context)
            except MMSearchError as e:
                context.abort(grpc_status(e), e.message)
            except Exception:
                log.exception("internal error in %s", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return wrapper

    return decorate
