"""The one place our gRPC servicers turn errors into statuses."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import grpc

from mmsearch.errors import MMSearchError, Overloaded, grpc_status, retry_after_headers


def grpc_edge(log: logging.Logger) -> Callable:
    """Decorate a servicer method: mmsearch errors abort with their status and message; anything
    else is logged with its traceback and answered INTERNAL without details. Each call is counted
    and timed in the servicer's ``rpc_metrics`` (observability.RpcMetrics) when it has one."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self, request, context: grpc.ServicerContext):
            t0, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                return method(self, request, context)
            except MMSearchError as e:
                code = grpc_status(e)
                if isinstance(e, Overloaded):  # when to come back, as the HTTP edge's Retry-After headers say it
                    context.set_trailing_metadata(tuple((k.lower(), v) for k, v in retry_after_headers(e).items()))
                context.abort(code, e.message)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("internal error in %s", method.__name__)
                context.abort(code, "internal error")
            finally:
                metrics = getattr(self, "rpc_metrics", None)  # set on the servicer by its server factory
                if metrics is not None:
                    metrics.observe(method.__name__, code.name, time.perf_counter() - t0)

        return wrapper

    return decorate
