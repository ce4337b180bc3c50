"""Small network helpers shared by launchers and tests."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on host (the OS picks it; a small race is accepted for local servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= int(r.status) < 300
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
        return False  # HTTPException: something answered, but not HTTP (BadStatusLine, IncompleteRead, ...)


def grpc_serving(target: "str | grpc.Channel", timeout_s: float = 0.5) -> bool:
    """The standard gRPC health service of a server (an address, or an open channel) says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def check(ch: grpc.Channel) -> bool:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

    if isinstance(target, str):
        with grpc.insecure_channel(target) as ch:
            return check(ch)
    return check(target)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
