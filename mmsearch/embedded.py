"""Embedded defaults: local server processes started when no URI is configured.

- secantusdb: a MongoDB wire-protocol server on WiredTiger (`secantusd-py`), on 127.0.0.1.
- Milvus Lite as its own server (`milvus-lite server`), for several processes sharing one store;
  a single process can instead open a Milvus Lite file directly (``VectorStore("<dir>/x.db")``).

Each is a ``ChildProcess`` (mmsearch.supervisor): own process group, ``stop()`` leaves nothing behind.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mmsearch.errors import Unavailable
from mmsearch.net import free_port
from mmsearch.supervisor import ChildProcess


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise Unavailable(name, f"{name} is not installed in this environment")
    return found


def embedded_milvus_uri(data_dir: Path) -> str:
    """The Milvus Lite file a single process opens when no Milvus URI is configured."""
    return str((Path(data_dir) / "milvus" / "mmsearch.db").resolve())


class SecantusServer(ChildProcess):
    def __init__(self, storage: Path, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None):
        self.host, self.port = host, port or free_port(host)
        storage.mkdir(parents=True, exist_ok=True)
        cmd = [_bin("secantusd-py"), "--host", host, "--port", str(self.port), "--storage-path", str(storage),
               "--log-level", "WARNING"]
        super().__init__("secantusdb", cmd, log_file or storage.parent / "secantusdb.log", self._ping)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def _ping(self) -> bool:
        import pymongo
        from pymongo.errors import PyMongoError

        try:
            c: pymongo.MongoClient[dict] = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=300)
            with c:
                c.admin.command("ping")
            return True
        except PyMongoError:
            return False


class MilvusLiteServer(ChildProcess):
    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None):
        self.host, self.port = host, port or free_port(host)
        data_dir.mkdir(parents=True, exist_ok=True)
        # Always pass --host: its default is 0.0.0.0 (DESIGN.md).
        cmd = [_bin("milvus-lite"), "server", "--host", host, "--port", str(self.port), "--data-dir", str(data_dir)]
        super().__init__("milvus-lite", cmd, log_file or data_dir.parent / "milvus-lite.log", self._listening,
                         startup_timeout_s=60)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=0.3):
                return True
        except OSError:
            return False
