"""WordNet noun glosses (Debian wordnet-base): ~82k (lemmas, definition) pairs of real English.

A labelled retrieval set comes for free: the query is a noun's lemma(s), the relevant document its
gloss. Used by the export benchmark (int8 quality cost) and the fine-tuning experiments.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from mmsearch.errors import BadInput
from mmsearch.offline.datasets.debian import fetch_deb

DATA_NOUN = "usr/share/wordnet/data.noun"
INDEX_NOUN = "usr/share/wordnet/index.noun"


LEXNAMES = dict(enumerate(["", "", "", "Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication",
                           "event", "feeling", "food", "group", "location", "motive", "object", "person", "phenomenon",
                           "plant", "possession", "process", "quantity", "relation", "shape", "state", "substance", "time"]))


@dataclass(frozen=True)
class Synset:
    offset: str
    words: tuple[str, ...]
    gloss: str  # the definition, without example sentences
    examples: tuple[str, ...] = ()
    lexfile: int = 0  # WordNet's lexicographer file: the noun's broad category (LEXNAMES)

    @property
    def category(self) -> str:
        """'artifact', 'person', 'plant', ...: a field to filter on."""
        return LEXNAMES.get(self.lexfile, "other")

    @property
    def query(self) -> str:
        return self.words[0]

    @property
    def title(self) -> str:
        """The demo's document title: the first lemmas (its texts index embeds "<title>: <gloss>")."""
        return ", ".join(self.words[:3])


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
            examples = tuple(e.strip() for e in re.findall(r'"([^"]{8,})"', gloss))
            out.append(Synset(fields[0], words, definition, examples, int(fields[1])))
    return out


def noun_synsets(cache_dir: Path) -> list[Synset]:
    return parse_data_noun(fetch_deb("wordnet-base", cache_dir) / DATA_NOUN)


def noun_senses(cache_dir: Path) -> dict[str, list[str]]:
    """lemma (lower case, '_' for spaces) -> its synset offsets, most frequent sense first (index.noun)."""
    out: dict[str, list[str]] = {}
    with open(fetch_deb("wordnet-base", cache_dir) / INDEX_NOUN, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):
                continue
            parts = line.split()
            n = int(parts[2])
            out[parts[0]] = parts[-n:]
    return out


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


def split_of(key: str, val: float = 0.1, test: float = 0.1) -> str:
    """Deterministic split by group key (a synset never lands on two sides)."""
    import hashlib

    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32
    return "test" if h < test else "val" if h < test + val else "train"


def retrieval_sets(cache_dir: Path, n_train: int | None = None, n_eval: int = 1000, seed: int = 0,
                   lemmas: int = 2, examples: int = 1):
    """Training pairs (query -> gloss, grouped by synset) and val/test EvalSets, split by synset.

    Training queries are up to ``lemmas`` of a synset's lemmas and ``examples`` of its example
    sentences; the relevant document is its gloss. Evaluation queries are each synset's first lemma.
    """
    from mmsearch.offline.data import EvalSet, Pair

    syn = [s for s in noun_synsets(cache_dir) if len(s.gloss) > 10]
    rng = random.Random(seed)
    rng.shuffle(syn)
    parts: dict[str, list[Synset]] = {"train": [], "val": [], "test": []}
    for s in syn:
        parts[split_of(s.offset)].append(s)
    pairs = []
    for s in parts["train"]:
        for q in list(dict.fromkeys(s.words))[:lemmas] + list(s.examples[:examples]):
            pairs.append(Pair(query=q, positive=s.gloss, group=s.offset))
    rng.shuffle(pairs)
    if n_train is not None:
        pairs = pairs[:n_train]

    def evalset(items: list[Synset]) -> "EvalSet":
        items = items[:n_eval]
        return EvalSet(queries=[s.words[0] for s in items], corpus=[s.gloss for s in items],
                       gains=[{i: 1.0} for i in range(len(items))], query_modality="text", corpus_modality="text")

    return pairs, evalset(parts["val"]), evalset(parts["test"])
