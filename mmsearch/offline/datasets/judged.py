"""Judged query sets for evaluating served arms (`mmsearch eval --api`, bench/hybrid.py).

- ``stamps_everyday``: the project's own everyday descriptions of stamps (stamps_everyday.jsonl,
  written once before any tuning: 268 queries that share no content word with the caption they
  describe, "a striped wild horse" for "A zebra."). Relevant: every stamp carrying that caption.
  A second set on 247 other captions (stamps_everyday_dev.jsonl) is the one settings are tuned on.
- ``stamp_captions``: the held-out captions of the caption split (offline/datasets/stamps.py), for
  image-only arms (a caption as its own query is no evidence for an arm that indexes captions).
- ``wordnet_heldout``: lemmas and example sentences of held-out synsets (the test split of
  offline/datasets/wordnet.py) against all 82,115 glosses, tagged ``lemma`` / ``example``, and
  ``rare`` when a query word occurs in at most RARE_DF documents of the corpus.
- ``class_sets`` (issue 34; committed under judged_sets/, rebuilt with
  ``python -m mmsearch.offline.datasets.judged``): one development and one held-out set per scene,
  each query tagged with its class, so a fusion setting is tuned on ``dev`` and judged per class on
  ``heldout``, which tuning never reads. text2text (relevant: a synset id, among all 82,115 glosses):
  ``lemma`` (a synset's first lemma, its words not rare), ``rare`` (a lemma with a word in at most
  RARE_DF documents), ``example`` (WordNet's example sentence, the lemma kept), ``definition`` (GCIDE's
  definition of a noun both dictionaries know in one sense, none of the lemma's words in it and no
  4-word run shared with the gloss), ``caption`` (a stamp caption -> the sense it names, as
  expand.Glosser picks it) and ``everyday`` (stamps_everyday*.jsonl -> the same senses). WordNet
  classes split by synset as wordnet.split_of does (val -> dev, test -> heldout); stamp captions by
  sense (a sense an everyday file names goes to that file's split, others in halves), so held-out
  descriptions whose sense is in dev are dropped.
  text2image (relevant: stamp ids): ``caption`` (the caption split's val/test), ``everyday`` and
  ``category`` (stamps_categories.jsonl: a plain name for each stamp folder holding at least
  CATEGORY_MIN stamps, "road signs" for town/roadsigns, written once from the folder names before any
  run; relevant: every stamp in that folder or below it, drawing styles such as cartoon/ counted in
  their folder; folders split in halves by name).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsearch.errors import BadInput
from mmsearch.offline.eval_served import Judged

EVERYDAY = Path(__file__).with_name("stamps_everyday.jsonl")
EVERYDAY_DEV = Path(__file__).with_name("stamps_everyday_dev.jsonl")  # 247 more, other captions: for tuning
CATEGORIES = Path(__file__).with_name("stamps_categories.jsonl")
SETS_DIR = Path(__file__).with_name("judged_sets")
CATEGORY_MIN = 3  # a folder of fewer stamps is not a category a user browses
RARE_DF = 3
PER_CLASS = 300  # queries per class and split
LEAK_NGRAM = 4  # a definition sharing a run of this many words with the gloss it should find is dropped
_WORD = re.compile(r"\w+")


def stamps_everyday(cache_dir: Path, dev: bool = False) -> list[Judged]:
    """The test set, or (``dev``) the development set that fusion settings are tuned on."""
    from mmsearch.offline.datasets.stamps import stamps

    path = EVERYDAY_DEV if dev else EVERYDAY
    by_caption: dict[str, list[str]] = {}
    for s in stamps(cache_dir):
        by_caption.setdefault(s.caption, []).append(s.id)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        ids = by_caption.get(row["caption"])
        if not ids:
            raise BadInput(f"{path.name}:{n}: caption {row['caption']!r} is no stamp's caption")
        out.append(Judged(row["query"], dict.fromkeys(ids, 1.0), ("everyday",)))
    return out


def stamp_captions(cache_dir: Path, part: str = "test") -> list[Judged]:
    from mmsearch.offline.datasets.stamps import retrieval_sets, stamps

    items = stamps(cache_dir)
    _, val, test, _ = retrieval_sets(cache_dir)
    es = test if part == "test" else val
    return [Judged(q, {items[i].id: 1.0 for i, g in gains.items() if g >= 2}, ("caption",))
            for q, gains in zip(es.queries, es.gains)]


def stamp_categories(items: Sequence[Any], named: dict[str, str]) -> dict[str, list[Judged]]:
    """{"dev", "heldout"} -> a ``category`` query per folder of ``named`` (folder -> query) and every stamp
    (``items``: .id, .image relative to the stamps root) in it or below it; a folder with fewer than
    CATEGORY_MIN stamps is left out."""
    from mmsearch.offline.datasets.wordnet import split_of

    under: dict[str, list[str]] = {f: [] for f in named}
    for it in items:
        parts = Path(it.image).parent.parts
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if folder in under:
                under[folder].append(it.id)
    out: dict[str, list[Judged]] = {"dev": [], "heldout": []}
    for folder in sorted(named, key=_order):
        if len(under[folder]) >= CATEGORY_MIN:
            split = "heldout" if split_of(folder, 0.5, 0.5) == "test" else "dev"
            out[split].append(Judged(named[folder], dict.fromkeys(under[folder], 1.0), ("category",)))
    return out


def category_names(path: Path = CATEGORIES) -> dict[str, str]:
    """folder -> query, from stamps_categories.jsonl."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("folder"), str) or not isinstance(row.get("query"), str) \
                or not row["query"].strip():
            raise BadInput(f"{path}:{n}: want {{\"folder\": ..., \"query\": ...}}")
        out[row["folder"]] = row["query"].strip()
    return out


def wordnet_heldout(cache_dir: Path, limit: int = 500) -> list[Judged]:
    from mmsearch.offline.datasets.wordnet import noun_synsets, split_of

    synsets = noun_synsets(cache_dir)
    df: Counter[str] = Counter()
    for s in synsets:
        df.update({w.lower() for w in _WORD.findall(" ".join(s.words[:3]) + " " + s.gloss)})
    held = [s for s in synsets if split_of(s.offset) == "test" and len(s.gloss) > 10][:limit]
    out = []
    for s in held:
        for text, tag in ((s.words[0].replace("_", " "), "lemma"), *((e, "example") for e in s.examples[:1])):
            words = {w.lower() for w in _WORD.findall(text)}
            rare = any(0 < df[w] <= RARE_DF for w in words)
            out.append(Judged(text, {s.offset: 1.0}, (tag, "rare") if rare else (tag,)))
    return out


def judged_jsonl(judged: Sequence[Judged]) -> str:
    """The judged-set file format (load_judged reads it back)."""
    return "".join(json.dumps({"query": j.query, "relevant": j.relevant, "tags": list(j.tags)}) + "\n" for j in judged)


def write_judged(path: Path, judged: Sequence[Judged]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(judged_jsonl(judged))
    return path


def _order(key: str) -> bytes:
    """A deterministic shuffle: candidates sorted by a hash of their group key."""
    return hashlib.sha256(f"judged:{key}".encode()).digest()


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def leaks(query: str, gloss: str, lemma: str, n: int = LEAK_NGRAM) -> bool:
    """A definition query that names the thing (a word of its lemma, or its plural) or copies a run of
    ``n`` words of the gloss it should find."""
    q = _words(query)
    words = _words(lemma)
    names = set(words) | {w + "s" for w in words} | {w + "es" for w in words}
    return bool(names & set(q)) or bool(_ngrams(q, n) & _ngrams(_words(gloss), n))


def class_sets(cache_dir: Path, per_class: int = PER_CLASS, parts: dict[str, str] | None = None) -> dict[str, list[Judged]]:
    """{"text2text_dev", "text2text_heldout", "text2image_dev", "text2image_heldout"} -> queries tagged by class.
    ``parts``: other WordNet splits instead ({"train": "train"}: queries of the training synsets, which neither
    judged split holds, for training a model), WordNet classes only."""
    from mmsearch.offline.datasets.expand import Glosser
    from mmsearch.offline.datasets.gcide import noun_definitions
    from mmsearch.offline.datasets.stamps import stamps
    from mmsearch.offline.datasets.wordnet import noun_senses, split_of

    glosser = Glosser(cache_dir)
    synsets = sorted((s for s in glosser.synsets.values() if len(s.gloss) > 10), key=lambda s: _order(s.offset))
    df: Counter[str] = Counter()
    for s in glosser.synsets.values():
        df.update(set(_words(" ".join(s.words[:3]) + " " + s.gloss)))
    senses = noun_senses(cache_dir)
    gcide = noun_definitions(cache_dir)
    part = parts or {"val": "dev", "test": "heldout"}
    out: dict[str, list[Judged]] = {f"{scene}_{p}": [] for scene in ("text2text", "text2image") for p in part.values()}
    count: Counter[tuple[str, str]] = Counter()

    def add(split: str, scene: str, cls: str, query: str, relevant: dict[str, float]) -> None:
        if count[(split, cls)] < per_class and query.strip():
            count[(split, cls)] += 1
            out[f"{scene}_{split}"].append(Judged(query.strip(), relevant, (cls,)))

    def is_rare(text: str) -> bool:
        return any(0 < df[w] <= RARE_DF for w in _words(text))

    for s in synsets:
        split = part.get(split_of(s.offset))
        if split is None:
            continue
        rel = {s.offset: 1.0}
        first = s.words[0].replace("_", " ")
        if not is_rare(first):
            add(split, "text2text", "lemma", first, rel)
        rare = next((w.replace("_", " ") for w in s.words if is_rare(w.replace("_", " "))), None)
        if rare:
            add(split, "text2text", "rare", rare, rel)
        if s.examples:
            add(split, "text2text", "example", s.examples[0], rel)
        for w in s.words:
            key = w.lower().replace(" ", "_")
            defs = gcide.get(w.lower().replace("_", " "), [])
            if len(senses.get(key, [])) == 1 and len(defs) == 1 and defs[0] and len(_words(defs[0])) >= 4 \
                    and not leaks(defs[0], s.gloss, " ".join(s.words)):
                add(split, "text2text", "definition", defs[0], rel)
                break
    if parts is not None:
        return {k: v for k, v in out.items() if k.startswith("text2text")}
    # stamps, as text2text: the sense a caption names (the demo indexes it as a gloss among all 82,115)
    sense_of: dict[str, str] = {}
    for st in stamps(cache_dir):
        syn = glosser.synset(st.caption, st.category)
        if syn is not None:
            sense_of.setdefault(st.caption, syn.offset)
    everyday = {split: [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
                for split, path in (("dev", EVERYDAY_DEV), ("heldout", EVERYDAY))}
    named = {split: {sense_of[r["caption"]] for r in rows if r["caption"] in sense_of} for split, rows in everyday.items()}

    def sense_split(offset: str) -> str:  # one split per sense: the everyday files' where they say, else halves
        if offset in named["dev"]:
            return "dev"
        return "heldout" if offset in named["heldout"] or split_of(offset, 0.5, 0.5) == "test" else "dev"

    for caption in sorted(sense_of, key=_order):
        add(sense_split(sense_of[caption]), "text2text", "caption", caption, {sense_of[caption]: 1.0})
    for split, rows in everyday.items():
        for row in rows:
            offset = sense_of.get(row["caption"])
            if offset is not None and sense_split(offset) == split:  # a held-out description of a dev sense: dropped
                add(split, "text2text", "everyday", row["query"], {offset: 1.0})
    # text2image: stamp ids
    for split, dev in (("dev", True), ("heldout", False)):
        for j in stamps_everyday(cache_dir, dev=dev):
            out[f"text2image_{split}"].append(j)
        for j in stamp_captions(cache_dir, "val" if dev else "test"):
            out[f"text2image_{split}"].append(j)
    for split, judged in stamp_categories(stamps(cache_dir), category_names()).items():
        out[f"text2image_{split}"] += judged
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from mmsearch.config import load_config

    p = argparse.ArgumentParser(description="Build the per-class judged sets (dev and held-out) into judged_sets/.")
    p.add_argument("--cache", type=Path, help="Debian package cache (default <data_dir>/data)")
    p.add_argument("--out", type=Path, default=SETS_DIR)
    p.add_argument("--per-class", type=int, default=PER_CLASS)
    args = p.parse_args(argv)
    cache = args.cache or Path(load_config().data_dir) / "data"
    for name, judged in class_sets(cache, args.per_class).items():
        write_judged(args.out / f"{name}.jsonl", judged)
        print(name, dict(Counter(t for j in judged for t in j.tags)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
