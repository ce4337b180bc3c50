"""WordNet noun glosses (Debian wordnet-base): ~82k (lemmas, definition) pairs of real English.

A labelled retrieval set comes for free: the query is a noun's lemma(s), the relevant document its
gloss. Used by the export benchmark (int8 quality cost) and the fine-tuning experiments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from mmsearch.errors import BadInput
from offline.datasets.debian import fetch_deb

DATA_NOUN = "usr/share/wordnet/data.noun"


@dataclass(frozen=True)
class Synset:
    offset: str
    words: tuple[str, ...]
    gloss: str  # the definition, without example sentences

    @property
    def query(self) -> str:
        return self.words[0]


def parse_data_noun(path: Path) -> list[Synset]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if line.startswith("  "):  # licence header
                continue
            head, sep, gloss = line.partition(" | ")
            fields = head.split()
            if not sep or len(fields) < 4:
                raise BadInput(f"{path}:{n}: not a WordNet data line")
            count = int(fields[3], 16)
            words = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(count))
            definition = gloss.split("; \"")[0].strip().rstrip(";").strip()
            out.append(Synset(fields[0], words, definition))
    return out


def noun_synsets(cache_dir: Path) -> list[Synset]:
    return parse_data_noun(fetch_deb("wordnet-base", cache_dir) / DATA_NOUN)


def labelled_pairs(cache_dir: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (lemma, gloss) pairs with unique lemmas and glosses, sampled deterministically."""
    syn = [s for s in noun_synsets(cache_dir) if len(s.gloss) > 10]
    random.Random(seed).shuffle(syn)
    seen_q, seen_d, out = set(), set(), []
    for s in syn:
        if s.query.lower() in seen_q or s.gloss in seen_d:
            continue
        seen_q.add(s.query.lower())
        seen_d.add(s.gloss)
        out.append((s.query, s.gloss))
        if len(out) == n:
            break
    return out
