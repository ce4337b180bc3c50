"""Repository models run in the caller's process on ONNX Runtime: the local ``Backend``.

``LocalBackend.for_model`` runs one model folder (index builds, evaluation). ``RepositoryBackend`` is
how the retrieval service encodes text queries itself (``retrieval.encode: local``).

A text query sent to Triton pays a gRPC round trip and, on the python backend the bundled server
has, the stub's IPC: about 1 ms over the 1.3-1.6 ms ONNX Runtime needs for the query itself
(bench/overhead.py). Here the retrieval service runs the very file Triton serves (each model's latest
version, as Triton's default version policy picks) on ONNX Runtime with the same session settings,
on the query's own tokens (Triton trims the length-bucket padding before it runs, so the embeddings
are the same). /v1/embed of a text goes the same way. Triton keeps image queries, rerank and every
batch job, where its batching pays.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.errors import Internal, MMSearchError, NotFound, Unavailable
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.modelrepo.manifest import MANIFEST_NAME, latest_model_file, read_manifest
from mmsearch.modelrepo.repo_watch import RepositoryWatcher
from mmsearch.modelrepo.runtime_needs import ModelRefused, check_model_dir

log = logging.getLogger("mmsearch.retrieval")


def _load(model_dir: Path, threads: int) -> LocalModel | None:
    """The model's latest version on ONNX Runtime, or None when it is not a text encoder."""
    if read_manifest(model_dir).kind != "text_encoder":
        return None
    check_model_dir(model_dir)  # ModelRefused: its manifest needs a newer ONNX Runtime than this process runs
    onnx = latest_model_file(model_dir)
    return LocalModel(model_dir, threads=threads, onnx_file=onnx, arena=False)


def session_layout(threads: int, providers: Sequence[str] | None = None) -> tuple[int, int]:
    """(sessions, threads each) for a bulk encoder: ``threads`` > 0 asks for one session with that many; 0 gives
    the CPU's cores to up to four single-purpose sessions run side by side on different chunks. On 2 cores,
    two sessions of one thread encode the demo's glosses at 1,186-1,205 texts/s against 907-954 for one session
    of two threads (the threads of one session wait on each other at every operator of a small chunk;
    docs/architecture.md, "Builds"). An accelerator gets one session."""
    if threads > 0 or any(p != "CPUExecutionProvider" for p in providers or ["CPUExecutionProvider"]):
        return 1, threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    sessions = max(1, min(4, cores))
    return sessions, max(1, cores // sessions)


class SessionPool:
    """One model folder's graph in several ONNX Runtime sessions; ``run`` takes an idle one (waiting for one
    when all are busy), so callers on as many threads run that many chunks at once. ONNX Runtime releases
    the GIL while it computes."""

    def __init__(self, models: Sequence[LocalModel]):
        if not models:
            raise ValueError("a session pool needs a session")
        self.manifest = models[0].manifest
        self.size = len(models)
        self._idle: queue.Queue[LocalModel] = queue.Queue()
        for m in models:
            self._idle.put(m)

    def run(self, feeds: Mapping[str, np.ndarray], output: str | None = None) -> np.ndarray:
        m = self._idle.get()
        try:
            return m.run(feeds, output)
        finally:
            self._idle.put(m)


class LocalBackend:
    """Models on ONNX Runtime in this process, by name."""

    def __init__(self, models: Mapping[str, LocalModel | SessionPool] | None = None):
        self._models: dict[str, LocalModel | SessionPool] = dict(models or {})
        self.errors: dict[str, str] = {}
        self.refused: dict[str, str] = {}  # models this ONNX Runtime cannot run (their manifests say so): name -> why
        self.where = "this process"
        self.what = "model"  # what a name not found is called in the error

    @classmethod
    def for_model(cls, model_dir: str | Path, threads: int = 0, providers: Sequence[str] | None = None) -> LocalBackend:
        """One model folder, any kind (what a build or an evaluation runs); on the CPU unless ``providers`` say
        otherwise, in ``session_layout``'s sessions (``parallelism`` of them: run that many chunks at once)."""
        sessions, each = session_layout(threads, providers)
        if sessions == 1:
            m = LocalModel(model_dir, threads=each, providers=providers)
            return cls({m.manifest.name: m})
        pool = SessionPool([LocalModel(model_dir, threads=each, providers=providers) for _ in range(sessions)])
        return cls({pool.manifest.name: pool})

    @property
    def parallelism(self) -> int:
        """How many ``infer`` calls run at once to good effect (the largest session pool)."""
        return max((m.size for m in self._models.values() if isinstance(m, SessionPool)), default=1)

    def models(self) -> list[str]:
        return sorted(self._models)

    def model_ready(self, model: str) -> bool:
        return model in self._models

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], output: str | None = None) -> np.ndarray[Any, np.dtype[np.float32]]:
        m = self._models.get(model)
        if m is None:
            why = self.errors.get(model)
            if why is not None:
                raise Unavailable("encoders", f"model {model!r} failed to load: {why}")
            why = self.refused.get(model)
            if why is not None:
                raise Unavailable("encoders", why)
            raise NotFound(f"{self.what} {model!r} not found in {self.where} (known: {', '.join(self.models()) or 'none'})")
        try:
            return m.run(inputs, output)
        except MMSearchError:
            raise
        except Exception as e:
            raise Internal(f"{model}: inference failed: {e}") from e

    def close(self) -> None:
        pass


class RepositoryBackend(LocalBackend):
    """Every text encoder of the repository, loaded at start and again when its files change (the
    repository watcher, as Triton reloads; like Triton's, it loads and does not unload). A model whose
    files are broken is reported (serving() is False): one that never loaded is refused by name, one
    whose re-export broke keeps its previous session, as Triton keeps the previous version; the others serve."""

    def __init__(self, repo: Path, threads: int, poll_s: float):
        self.repo = Path(repo)
        self.threads = threads
        if not self.repo.is_dir():
            raise Unavailable("encoders", f"model repository not found: {self.repo} (retrieval.encode is local: the "
                              "retrieval service reads the model repository; set it to triton to encode there)")
        super().__init__()
        self.where, self.what = str(self.repo), "text encoder"
        # the watcher's baseline is taken before loading: a model re-exported while the sessions load is seen as changed
        self._watcher = RepositoryWatcher(self.repo, self._reload, poll_s)
        self._reload([p.name for p in self.repo.iterdir() if p.is_dir() and not p.name.startswith(".")])
        self._watcher.start()

    def _reload(self, names: list[str]) -> None:
        loaded: dict[str, LocalModel | None] = {}
        errors: dict[str, str] = {}
        refused: dict[str, str] = {}
        for name in names:
            d = self.repo / name
            if not (d / MANIFEST_NAME).is_file():
                loaded[name] = None
                continue
            try:
                loaded[name] = _load(d, self.threads)
            except ModelRefused as e:  # (a served earlier export keeps its session, as Triton keeps the previous version)
                refused[name] = e.message
                log.error("%s", e.message)
            except (MMSearchError, OSError, ValueError) as e:
                errors[name] = str(e)
                log.error("cannot load %s to encode queries locally: %s", name, e)
        # one writer (the constructor, then the watcher's thread); the table is swapped whole, so a request sees
        # a model's old session or its new one
        models = dict(self._models)
        for name, model in loaded.items():
            if model is None:
                models.pop(name, None)
            else:
                models[name] = model
        self._models = models
        self.errors = {**{n: e for n, e in self.errors.items() if n not in names}, **errors}
        self.refused = {**{n: e for n, e in self.refused.items() if n not in names}, **refused}
        log.info("query encoders ready: %s", ", ".join(sorted(self._models)) or "-")

    def serving(self) -> bool:
        """Every text encoder of the repository loaded (a broken model whose folder was since removed no longer counts).
        A model refused for its ONNX Runtime needs does not count: it would hold readiness down until re-exported,
        taking the models that do serve out of service; it is refused by name instead (infer, the log)."""
        return not any((self.repo / name).is_dir() for name in self.errors)

    def close(self) -> None:
        self._watcher.stop()
