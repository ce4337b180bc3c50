"""Where the live experiments config comes from: a watched YAML file, or Consul KV.

Both feed an ExperimentStore, which validates before anything goes live: an invalid config is
rejected with a logged reason and the last good one stays. Consul is followed with blocking queries
(changes arrive within the wait window, not on a poll interval) and reconnects with backoff.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mmsearch.clients.consul_kv import acl_denied, consul_client
from mmsearch.errors import MMSearchError, Unavailable
from mmsearch.experiments.spec import Experiments, parse_experiments

log = logging.getLogger("mmsearch.experiments.spec")


@dataclass(frozen=True)
class Live:
    experiments: Experiments
    version: str  # content hash (file) or "consul-<ModifyIndex>"
    source: str
    loaded_at: float


class ExperimentStore:
    def __init__(self) -> None:
        self._live: Live | None = None
        self.last_error: str | None = None
        self.rejected: int = 0
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    @property
    def live(self) -> Live:
        live = self._live
        if live is None:
            raise Unavailable("experiments config", self.last_error or "no valid config loaded yet")
        return live

    @property
    def current(self) -> Live | None:
        """The live config, or None before the first valid one (``live`` raises instead)."""
        return self._live

    def ready(self) -> bool:
        return self._live is not None

    def offer(self, text: str | bytes, version: str, source: str) -> bool:
        """Validate and swap in; on failure keep the last good config and record why."""
        try:
            exp = parse_experiments(text, source)
        except MMSearchError as e:
            self.last_error, self.rejected = e.message, self.rejected + 1
            log.error("rejected experiments config %s from %s: %s (keeping %s)", version, source, e.message,
                      self._live.version if self._live else "none")
            return False
        with self.changed:
            self._live = Live(exp, version, source, time.time())
            self.last_error = None
            self.changed.notify_all()
        log.info("experiments config %s from %s is live", version, source)
        return True


class _Watcher:
    def __init__(self, store: ExperimentStore):
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "_Watcher":
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        raise NotImplementedError


class FileWatcher(_Watcher):
    """Re-reads the YAML file when its content changes (checked every ``interval_s``)."""

    def __init__(self, store: ExperimentStore, path: Path, interval_s: float = 1.0):
        super().__init__(store)
        self.path, self.interval_s = Path(path), interval_s
        self._seen: str | None = None
        self.poll()

    def poll(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as e:
            if self._seen != "missing":
                self.store.last_error = f"cannot read {self.path}: {e.strerror}"
                log.error("experiments file %s: %s", self.path, e.strerror)
                self._seen = "missing"
            return
        digest = hashlib.sha256(data).hexdigest()[:12]
        if digest != self._seen:
            self._seen = digest
            self.store.offer(data, f"file-{digest}", str(self.path))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()


class ConsulWatcher(_Watcher):
    """Blocking queries on one KV key, reconnecting with exponential backoff (0.5 s .. 10 s)."""

    def __init__(self, store: ExperimentStore, addr: str, key: str, wait_s: int = 5, token: str = ""):
        super().__init__(store)
        self.addr, self.key, self.wait_s = addr, key, wait_s
        self.client = consul_client(addr, token)
        self.index: str | None = None
        self.digest: str | None = None
        self.connected = False

    def fetch_once(self, block: bool) -> None:
        index, item = self.client.kv.get(self.key, index=self.index if block else None,
                                         wait=f"{self.wait_s}s" if block else None)
        self.connected = True
        value = (item or {}).get("Value") or b""
        digest = hashlib.sha256(value).hexdigest() if item is not None else None
        if index == self.index and digest == self.digest:
            return  # blocking query timed out with no change
        # The value is compared too: an agent that lost its state (restart) can hand out an index we saw before.
        self.index, self.digest = index, digest
        if item is None or digest is None:
            self.store.last_error = f"consul key {self.key} does not exist"
            log.error("consul at %s: key %s does not exist", self.addr, self.key)
            return
        self.store.offer(value, f"consul-{item.get('ModifyIndex', index)}-{digest[:8]}", f"consul {self.addr}/{self.key}")

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.fetch_once(block=self.index is not None)
                backoff = 0.5
            except Exception as e:  # noqa: BLE001 - requests/consul errors alike: the agent is down or restarting
                self.connected = False
                if acl_denied(e):  # the agent answers but refuses: say so, it will not fix itself by waiting
                    self.store.last_error = f"consul at {self.addr}: permission denied reading {self.key} (consul.token / MMSEARCH_CONSUL_TOKEN)"
                    log.error("%s", self.store.last_error)
                else:
                    self.store.last_error = self.store.last_error or f"consul at {self.addr}: {e}"
                log.warning("consul at %s unreachable (%s); retrying in %.1f s", self.addr, type(e).__name__, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 10.0)
