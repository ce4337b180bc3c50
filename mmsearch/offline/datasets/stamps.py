"""Tux Paint stamps (Debian tuxpaint-stamps-default, GPL-2): ~1,000 clip-art images with captions.

Fetched at run time into the data cache, never committed. Each PNG or SVG stamp with a ``<name>.txt``
beside it becomes {"id", "image" (relative to the stamps root), "text" (the English caption), "category"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmsearch.offline.datasets.debian import fetch_deb

STAMPS_DIR = "usr/share/tuxpaint/stamps"


@dataclass(frozen=True)
class Stamp:
    id: str
    image: str  # relative to root()
    caption: str
    category: str


def root(cache_dir: Path) -> Path:
    return fetch_deb("tuxpaint-stamps-default", cache_dir) / STAMPS_DIR


def _caption(txt: Path) -> str:
    for raw in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line and "=" not in line:  # later lines are translations: "xx.utf8=..."
            return line
    return ""


def stamps(cache_dir: Path) -> list[Stamp]:
    base = root(cache_dir)
    out = []
    for img in sorted([*base.rglob("*.png"), *base.rglob("*.svg")]):
        if img.name.endswith(("_mirror.png", "_flip.png")) or "thumb" in img.name:
            continue
        txt = img.with_suffix(".txt")
        caption = _caption(txt) if txt.is_file() else ""
        if not caption:
            continue
        rel = img.relative_to(base)
        stem = str(rel.with_suffix("")).replace("/", "_")
        # a few stamps ship as both PNG and SVG (the same drawing, one caption): the SVG gets its own id
        out.append(Stamp(stem + ("_svg" if img.suffix == ".svg" else ""), str(rel), caption, rel.parts[0]))
    return out


def retrieval_sets(cache_dir: Path, n_train: int | None = None, seed: int = 0):
    """Caption <-> image pairs split by caption text, so no held-out caption (and no image carrying
    it) is ever trained on; val/test text->image sets search ALL stamps (chance ~1/1,000 per query),
    one query per distinct caption, with the stamps carrying that caption graded 2 (relevant: the
    binary metrics count grade 2, trec_eval -l 2) and same-category stamps 1 (nDCG credit only);
    and an image->image test set whose relevant documents are the other stamps of the query's category."""
    import random

    from mmsearch.offline.data import EvalSet, Pair
    from mmsearch.offline.datasets.wordnet import split_of

    items = stamps(cache_dir)
    base = root(cache_dir)
    paths = [str(base / s.image) for s in items]
    idx = {s.id: i for i, s in enumerate(items)}
    parts: dict[str, list[Stamp]] = {"train": [], "val": [], "test": []}
    for s in items:
        parts[split_of(s.caption.lower(), 0.1, 0.2)].append(s)
    pairs = [Pair(query=s.caption, positive=str(base / s.image), group=s.caption.lower()) for s in parts["train"]]
    random.Random(seed).shuffle(pairs)
    if n_train is not None:
        pairs = pairs[:n_train]

    def text2image(part: list[Stamp]) -> "EvalSet":
        captions = list(dict.fromkeys(s.caption for s in part))
        by_caption = {c: next(s for s in part if s.caption == c) for c in captions}
        gains = []
        for c in captions:
            g = {i: 1.0 for i, o in enumerate(items) if o.category == by_caption[c].category}
            g.update({i: 2.0 for i, o in enumerate(items) if o.caption.lower() == c.lower()})
            gains.append(g)
        return EvalSet(captions, paths, gains, "text", "image", relevance_level=2.0)

    test = parts["test"]
    image2image = EvalSet([str(base / s.image) for s in test], paths,
                          [{i: 1.0 for i, o in enumerate(items) if o.category == s.category and o.id != s.id} for s in test],
                          "image", "image", exclude_self=[idx[s.id] for s in test])
    return pairs, text2image(parts["val"]), text2image(test), image2image
