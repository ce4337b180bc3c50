"""Embedded defaults: local server processes started when no URI is configured.

- secantusdb: a MongoDB wire-protocol server on WiredTiger (`secantusd-py`), on 127.0.0.1.
- Milvus Lite as its own server (`milvus-lite server`), for several processes sharing one store;
  a single process can instead open a Milvus Lite file directly (``VectorStore("<dir>/x.db")``).

Each runs in its own process group and ``stop()`` leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mmsearch.errors import Unavailable
from mmsearch.net import free_port, wait_until


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the process that started it dies (even by SIGKILL), so a
    crashed launcher leaves no orphaned servers behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise Unavailable(name, f"{name} is not installed in this environment")
    return found


def embedded_milvus_uri(data_dir: Path) -> str:
    """The Milvus Lite file a single process opens when no Milvus URI is configured."""
    return str((Path(data_dir) / "milvus" / "mmsearch.db").resolve())


class LocalServer:
    name = "server"

    def __init__(self, cmd: list[str], host: str, port: int, log_file: Path, startup_timeout_s: float = 30.0,
                 env: dict[str, str] | None = None):
        self.host, self.port, self.log_file = host, port, log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env, preexec_fn=die_with_parent)
        if not wait_until(lambda: self.ready() or self.proc.poll() is not None, startup_timeout_s, 0.1) or not self.ready():
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            self.stop()
            raise Unavailable(self.name, f"did not start on {host}:{port}; log tail:\n{tail}")

    def ready(self) -> bool:
        raise NotImplementedError

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class SecantusServer(LocalServer):
    name = "secantusdb"

    def __init__(self, storage: Path, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None):
        port = port or free_port(host)
        storage.mkdir(parents=True, exist_ok=True)
        cmd = [_bin("secantusd-py"), "--host", host, "--port", str(port), "--storage-path", str(storage),
               "--log-level", "WARNING"]
        super().__init__(cmd, host, port, log_file or storage.parent / "secantusdb.log")

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def ready(self) -> bool:
        import pymongo
        from pymongo.errors import PyMongoError

        try:
            with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=300) as c:
                c.admin.command("ping")
            return True
        except PyMongoError:
            return False


class MilvusLiteServer(LocalServer):
    name = "milvus-lite"

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None):
        port = port or free_port(host)
        data_dir.mkdir(parents=True, exist_ok=True)
        # Always pass --host: its default is 0.0.0.0 (DESIGN.md).
        cmd = [_bin("milvus-lite"), "server", "--host", host, "--port", str(port), "--data-dir", str(data_dir)]
        super().__init__(cmd, host, port, log_file or data_dir.parent / "milvus-lite.log", startup_timeout_s=60)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ready(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=0.3):
                return True
        except OSError:
            return False


def descendants(pid: int) -> list[int]:
    """All live descendant pids of a process (Linux /proc), for checks that nothing is left running."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k] + descendants(k)
    return out


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
