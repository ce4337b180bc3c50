"""Poll a model repository for models exported (or re-exported) since the last look.

Triton in its explicit mode, and the preprocess service, only know the models they loaded at start;
a model written later by `mmsearch export` (the flywheel's new model, say) must be served without a
restart. Export renames a finished folder into place, so a folder whose signature changed is whole.
Both servers poll with the same watcher (config ``repository_poll_s``; 0: off, SIGHUP/Reload only).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("mmsearch.modelrepo.repo_watch")
Signature = tuple[tuple[str, int, int], ...]


def model_signature(model_dir: Path) -> Signature:
    """(relative path, mtime_ns, size) of the files that make a model: its top-level files and each
    version's files. A re-export or a new version folder changes it."""
    out: list[tuple[str, int, int]] = []
    try:
        for p in sorted(model_dir.iterdir()):
            files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file()) if p.name.isdigit() else []
            for f in files:
                st = f.stat()
                out.append((str(f.relative_to(model_dir)), st.st_mtime_ns, st.st_size))
    except OSError:  # removed while we looked: seen as changed next time
        return ()
    return tuple(out)


def repository_signatures(repo: Path) -> dict[str, Signature]:
    if not repo.is_dir():
        return {}
    return {p.name: model_signature(p) for p in sorted(repo.iterdir()) if p.is_dir() and not p.name.startswith(".")}


class RepositoryWatcher:
    """Calls ``on_change(names)`` from a background thread with the models added or changed since
    the previous look (the first look is the baseline: what the server loaded at start)."""

    def __init__(self, repo: Path, on_change: Callable[[list[str]], None], interval_s: float):
        self.repo = Path(repo)
        self.on_change = on_change
        self.interval_s = interval_s
        self._seen = repository_signatures(self.repo)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """One look; the changed names (also passed to on_change). A failure is logged once and tried
        again when the model's files change again (a broken export is fixed by exporting it anew)."""
        now = repository_signatures(self.repo)
        changed = [n for n, sig in now.items() if sig and sig != self._seen.get(n)]
        self._seen = now
        if not changed:
            return []
        try:
            self.on_change(changed)
        except Exception as e:  # noqa: BLE001 - a broken export (any error) must not stop the watcher thread
            log.error("loading %s from %s failed: %s", ", ".join(changed), self.repo, e)
            return []
        log.info("model repository %s: loaded %s", self.repo, ", ".join(changed))
        return changed

    def start(self) -> "RepositoryWatcher":
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="repo-watch", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
