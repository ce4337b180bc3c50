"""Small synthetic fine-tuning sets with learnable structure (token synonyms, colours of shapes),
so a tiny random model's validation metric can rise on pairs it never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmsearch.offline.data import Pair

COLOURS = {"red": "crimson", "blue": "azure", "green": "emerald", "yellow": "golden", "black": "ebony",
           "white": "ivory", "orange": "amber", "purple": "violet", "pink": "rose", "brown": "chestnut"}
ANIMALS = {"cat": "feline", "dog": "canine", "horse": "equine", "bird": "avian", "fish": "aquatic", "cow": "bovine",
           "sheep": "ovine", "goat": "caprine", "lion": "leonine", "tiger": "striped", "bear": "ursine", "wolf": "lupine"}
RGB = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (240, 220, 40), "black": (10, 10, 10),
       "white": (250, 250, 250), "orange": (250, 140, 20), "purple": (130, 40, 170)}
SHAPES = ("square", "circle", "triangle")


def synonym_pairs() -> list[Pair]:
    """'red cat' -> 'a crimson feline creature': words never overlap, the mapping is per token."""
    return [Pair(f"{c} {a}", f"a {sc} {sa} creature", group=f"{c}-{a}") for c, sc in COLOURS.items() for a, sa in ANIMALS.items()]


def shape_image_pairs(folder: Path, per_combo: int = 2) -> list[Pair]:
    """'a red circle' <-> PNGs of red circles (varied size/position/background)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for c, rgb in RGB.items():
        for s in SHAPES:
            for k in range(per_combo):
                bg = tuple(int(x) for x in rng.integers(100, 160, 3))
                img = Image.new("RGB", (96, 96), bg)
                d = ImageDraw.Draw(img)
                r = int(rng.integers(22, 40))
                cx, cy = (int(x) for x in rng.integers(r, 96 - r, 2))
                box = [cx - r, cy - r, cx + r, cy + r]
                if s == "square":
                    d.rectangle(box, fill=rgb)
                elif s == "circle":
                    d.ellipse(box, fill=rgb)
                else:
                    d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=rgb)
                path = folder / f"{c}_{s}_{k}.png"
                img.save(path)
                pairs.append(Pair(f"a {c} {s}", str(path), group=f"{c}-{s}-{k}"))
    return pairs
