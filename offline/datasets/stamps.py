"""Tux Paint stamps (Debian tuxpaint-stamps-default, GPL-2): ~1,000 clip-art images with captions.

Fetched at run time into the data cache, never committed. Each PNG stamp with a ``<name>.txt``
beside it becomes {"id", "image" (relative to the stamps root), "text" (the English caption), "category"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from offline.datasets.debian import fetch_deb

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
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and "=" not in line:  # later lines are translations: "xx.utf8=..."
            return line
    return ""


def stamps(cache_dir: Path) -> list[Stamp]:
    base = root(cache_dir)
    out = []
    for png in sorted(base.rglob("*.png")):
        if png.name.endswith(("_mirror.png", "_flip.png")) or "thumb" in png.name:
            continue
        txt = png.with_suffix(".txt")
        caption = _caption(txt) if txt.is_file() else ""
        if not caption:
            continue
        rel = png.relative_to(base)
        out.append(Stamp(str(rel.with_suffix("")).replace("/", "_"), str(rel), caption, rel.parts[0]))
    return out
