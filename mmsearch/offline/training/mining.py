"""Hard negatives mined with the model being fine-tuned, before training: for each pair, the highest
ranked training document that is not one of the query's positives.

In-batch negatives are mostly easy (random other documents); the documents the current model ranks
just above or below the answer are the ones it must learn to push away. A guard keeps likely
unlabelled positives out (GISTEmbed's idea): a candidate scoring above ``margin`` x the positive's
score is skipped, since a document the model finds as close as the answer is often a second answer.
The flywheel's pairs already carry negatives mined by the served index (results skipped above a
click); pairs that have one keep it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from mmsearch.offline.data import Pair

Encode = Callable[[Sequence[str]], np.ndarray]


def mine_negatives(pairs: Sequence[Pair], encode: Encode, depth: int = 20, margin: float = 0.95,
                   chunk: int = 1024, progress: bool = False) -> tuple[list[Pair], int]:
    """(pairs, how many got a mined negative); candidates are the pairs' positives (the training corpus)."""
    need = [i for i, p in enumerate(pairs) if not p.negative]
    if not need:
        return list(pairs), 0
    docs = list(dict.fromkeys(p.positive for p in pairs))
    index = {d: i for i, d in enumerate(docs)}
    answers: dict[str, set[int]] = defaultdict(set)
    for p in pairs:
        answers[p.query].add(index[p.positive])
    bar = tqdm(total=len(docs) + len(need), desc="mining negatives", unit="text", disable=not progress,
               dynamic_ncols=True, leave=False)
    d = np.concatenate([_step(bar, encode(docs[i : i + chunk])) for i in range(0, len(docs), chunk)])
    out = list(pairs)
    mined = 0
    for start in range(0, len(need), chunk):
        rows = need[start : start + chunk]
        q = _step(bar, encode([pairs[i].query for i in rows]))
        scores = q @ d.T
        k = min(depth, len(docs) - 1)
        top = np.argpartition(-scores, k, axis=1)[:, : k + 1] if k > 0 else np.zeros((len(rows), 0), int)
        for r, i in enumerate(rows):
            p = pairs[i]
            ceiling = margin * scores[r, index[p.positive]]
            for j in sorted(top[r], key=lambda j: -scores[r, j]):
                if j not in answers[p.query] and scores[r, j] < ceiling:
                    out[i] = dataclasses.replace(p, negative=docs[j])
                    mined += 1
                    break
    bar.close()
    return out, mined


def _step(bar: tqdm, x: np.ndarray) -> np.ndarray:
    bar.update(len(x))
    return x
