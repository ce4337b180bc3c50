"""A locked image tower's features, kept on disk between trainings.

LiT never changes the image tower, so every dual training over the same images with the same tower
computes the same features: the demo's two dual encoders (55 s of EfficientNet-Lite0 each for its
1,032 stamps on 2 cores), every point of a grid search, every flywheel round. The cache is one file
per tower, named by a digest of its weights and its preprocessing, holding one row per image keyed by
a digest of the image's bytes: a retrained or different tower, other preprocessing, or an edited image
is computed again, never served from an older file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsearch.errors import BadInput


def tower_digest(tower: torch.nn.Module, preprocessing: dict[str, Any]) -> str:
    """The cache file's name: the tower's weights, its preprocessing and how SVGs are rendered into pixels."""
    from mmsearch.modelrepo.svg import RENDER_VERSION

    h = hashlib.sha256(json.dumps({"preprocessing": preprocessing, "svg_render": RENDER_VERSION}, sort_keys=True).encode())
    for name, t in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def image_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise BadInput(f"image {path}: cannot read it ({e.strerror})") from e


class FeatureCache:
    """``features(paths, compute)``: each image's row, from the cache or from ``compute`` (a list of paths
    to an [N, D] tensor), which runs only on the images the cache lacks. ``root`` None: no cache."""

    def __init__(self, root: Path | None, tower: torch.nn.Module, preprocessing: dict[str, Any]):
        self.file = root / f"{tower_digest(tower, preprocessing)}.npz" if root is not None else None
        self.hits = self.computed = 0

    def _load(self) -> dict[str, np.ndarray]:
        if self.file is None or not self.file.is_file():
            return {}
        try:
            with np.load(self.file) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a torn or foreign file: computed again, rewritten
            logging.getLogger("mmsearch.finetune").warning("image feature cache %s unreadable (%s): computing again", self.file, e)
            return {}

    def _save(self, rows: dict[str, np.ndarray]) -> None:
        assert self.file is not None
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **rows)
        os.replace(tmp, self.file)  # whole or absent: a reader never sees half a file

    def features(self, paths: Sequence[str], compute: Callable[[list[str]], torch.Tensor]) -> dict[str, torch.Tensor]:
        if not paths:
            return {}
        if self.file is None:
            out = compute(list(paths))
            self.computed = len(paths)
            return dict(zip(paths, out))
        rows = self._load()
        keys = {p: image_digest(Path(p)) for p in paths}
        missing = [p for p in paths if keys[p] not in rows]
        if missing:
            for p, f in zip(missing, compute(missing)):
                rows[keys[p]] = f.detach().cpu().numpy()
            self._save(rows)
        self.hits, self.computed = len(paths) - len(missing), len(missing)
        return {p: torch.from_numpy(np.array(rows[keys[p]])) for p in paths}
