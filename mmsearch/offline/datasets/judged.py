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
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mmsearch.errors import BadInput
from mmsearch.offline.eval_served import Judged

EVERYDAY = Path(__file__).with_name("stamps_everyday.jsonl")
EVERYDAY_DEV = Path(__file__).with_name("stamps_everyday_dev.jsonl")  # 247 more, other captions: for tuning
RARE_DF = 3
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
