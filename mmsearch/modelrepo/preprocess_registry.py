"""The models texts and images can be preprocessed for, discovered from the repository's manifests.

The preprocess service serves it over gRPC; the retrieval service holds one too, to tokenize text
queries in its own process (``retrieval.tokenize: local``), with the same code and the same limits.
Built at start and on reload; a model whose files are broken is reported (ListModels.errors and
the log) without taking the others down. Swapped atomically: a request sees the old or the new
set, never half of one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmsearch.config import PreprocessConfig
from mmsearch.errors import BadInput, MMSearchError, NotFound, Unavailable
from mmsearch.modelrepo.manifest import MANIFEST_NAME, ImagePreprocessing, Manifest, TextPreprocessing, read_manifest
from mmsearch.modelrepo.preprocessing import ImagePreprocessor, TextBatch, TextPreprocessor
from mmsearch.modelrepo.repo_watch import RepositoryWatcher

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


def check_batch(n: int, what: str, cfg: PreprocessConfig) -> None:
    if n == 0:
        raise BadInput(f"empty batch: no {what} given")
    if n > cfg.max_batch:
        raise BadInput(f"{n} {what} in one request, over the limit of {cfg.max_batch}")


def _texts(items: Sequence[str | bytes], field: str, cfg: PreprocessConfig) -> list[str]:
    """Texts as the tokenizer takes them (UTF-8 bytes from the wire, or str in-process), each
    refused by name when too long, undecodable or blank."""
    out = []
    for i, item in enumerate(items):
        raw = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else bytes(item)
        if len(raw) > cfg.max_text_bytes:
            raise BadInput(f"{field}[{i}]: {len(raw):,} bytes, over the {cfg.max_text_bytes:,}-byte limit")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInput(f"{field}[{i}]: invalid UTF-8 at byte {e.start}") from e
        if not text.strip():
            raise BadInput(f"{field}[{i}]: empty")
        out.append(text)
    return out


def tokenize(entry: Entry, model: str, texts: Sequence[str | bytes], documents: Sequence[str | bytes],
             bucket: bool, cfg: PreprocessConfig) -> TextBatch:
    """One Tokenize request, checked as the service checks it (batch size, text limits, pairs only
    for cross-encoders), padded to ``cfg.length_buckets`` when ``bucket``."""
    if entry.text is None:
        raise BadInput(f"model {model!r} is an {entry.manifest.kind}: send images to ProcessImages")
    check_batch(len(texts), "texts", cfg)
    decoded = _texts(texts, "texts", cfg)
    buckets = cfg.length_buckets if bucket else None
    if entry.text.pair:
        if len(documents) != len(texts):
            raise BadInput(f"model {model!r} scores pairs: {len(texts)} texts but {len(documents)} documents")
        return entry.text.pairs(decoded, _texts(documents, "documents", cfg), buckets)
    if documents:
        raise BadInput(f"model {model!r} is a {entry.manifest.kind}: documents are for cross-encoders")
    return entry.text(decoded, buckets)


class LocalTokenizer:
    """Text tokenized in this process: the preprocess service's registry, checks and buckets without
    its network hop (a gRPC round trip cost a text query 0.9-1.3 ms; tokenizing one costs 0.07 ms).
    Reloads when the repository's models change, as the service does."""

    def __init__(self, repo: Path, cfg: PreprocessConfig, poll_s: float):
        self.cfg = cfg
        try:
            self.registry = Registry(repo).reload()
        except NotFound as e:
            raise Unavailable("tokenizers", f"{e.message} (retrieval.tokenize is local: the retrieval service reads "
                              "the model repository; set it to service to tokenize in the preprocess service)") from e
        self._watcher = RepositoryWatcher(self.registry.repo, self._reload, poll_s).start()

    def _reload(self, _changed: list[str]) -> None:
        self.registry.reload()

    def tokenize(self, model: str, texts: Sequence[str], documents: Sequence[str] = (), bucket: bool = False) -> TextBatch:
        return tokenize(self.registry.get(model), model, texts, documents, bucket, self.cfg)

    def serving(self) -> bool:
        """Every model of the repository loaded (the preprocess service's health rule)."""
        return not self.registry.errors

    def close(self) -> None:
        self._watcher.stop()
