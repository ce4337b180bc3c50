"""Small network helpers shared by launchers and tests."""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


_RNG = random.Random()  # its own generator: tests that seed `random` must not make ports repeat
_HANDED_OUT: set[int] = set()
_LOCK = threading.Lock()
LOWEST_PORT = 10000


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on host, for a server that binds it a moment later.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0 gives) can
    be taken by any outgoing connection in between — Milvus alone opens dozens — and then the server
    fails with "address in use". Never the same port twice in one process."""
    lo, _ = _ephemeral_range()
    with _LOCK:
        for _ in range(500 if lo - 1 > LOWEST_PORT + 1000 else 0):
            port = _RNG.randint(LOWEST_PORT, lo - 1)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room below the range: let the OS pick
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            _HANDED_OUT.add(port)
            return port


# how a server says a port it was given is taken (Python's errno 98, Go's "bind: address already in use",
# Triton's "Socket '...' already in use"): the launcher then retries with fresh ports
def port_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (SO_REUSEADDR, as servers bind: TIME_WAIT leftovers don't count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


PORT_CLASH = re.compile(r"already in use|EADDRINUSE|errno 98", re.IGNORECASE)


def accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Something listens on host:port (a TCP connection is accepted): the probe of a server whose every HTTP
    path may depend on another server (the admission gate forwards them all)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def write_ports(path: Path, ports: dict[str, int]) -> None:
    """Report the ports a server bound (asked for port 0, it got these), for the launcher that waits on it.
    Written under a temporary name and renamed, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({k: int(v) for k, v in ports.items()}))
    os.replace(tmp, path)


def read_ports(path: Path) -> dict[str, int] | None:
    """The ports a server reported with write_ports (None until it has)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(type(v) is int and 0 < v < 65536 for v in data.values()):
        return None
    return {str(k): int(v) for k, v in data.items()}


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
