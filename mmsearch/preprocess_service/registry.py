"""The models the service can preprocess for, discovered from the repository's manifests.

Built at start and on Reload; a model whose files are broken is reported (ListModels.errors and
the log) without taking the others down. Swapped atomically: a request sees the old or the new
set, never half of one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from mmsearch.errors import BadInput, MMSearchError, NotFound
from mmsearch.manifest import MANIFEST_NAME, ImagePreprocessing, Manifest, TextPreprocessing, read_manifest
from mmsearch.preprocessing import ImagePreprocessor, TextPreprocessor

log = logging.getLogger("mmsearch.preprocess")


@dataclass
class Entry:
    manifest: Manifest
    text: TextPreprocessor | None = None
    image: ImagePreprocessor | None = None


def load_entry(model_dir: Path) -> Entry:
    m = read_manifest(model_dir)
    if isinstance(m.preprocessing, TextPreprocessing):
        return Entry(m, text=TextPreprocessor.for_model(model_dir, m))
    assert isinstance(m.preprocessing, ImagePreprocessing)
    return Entry(m, image=ImagePreprocessor.for_model(m))


class Registry:
    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self._entries: dict[str, Entry] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def reload(self) -> "Registry":
        if not self.repo.is_dir():
            raise NotFound(f"model repository not found: {self.repo}")
        entries, errors = {}, []
        for d in sorted(p for p in self.repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (d / MANIFEST_NAME).is_file():
                continue
            try:
                entries[d.name] = load_entry(d)
            except (MMSearchError, OSError, ValueError) as e:
                errors.append(f"{d.name}: {e}")
                log.error("cannot load preprocessing for %s: %s", d.name, e)
        with self._lock:
            self._entries, self.errors = entries, errors
        log.info("preprocessing ready for %d model(s): %s", len(entries), ", ".join(entries) or "-")
        return self

    def get(self, name: str) -> Entry:
        if not name:
            raise BadInput("model: required")
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"model {name!r} not found in {self.repo} (known: {', '.join(sorted(self._entries)) or 'none'})")
        return entry

    def entries(self) -> dict[str, Entry]:
        return dict(self._entries)
