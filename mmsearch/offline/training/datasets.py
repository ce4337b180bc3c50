"""The named data sets a fine-tune or grid can train on: train pairs and validation/test EvalSets."""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import BadInput
from mmsearch.offline.data import EvalSet, Pair, load_pairs
from mmsearch.offline.training.common import split_pairs

DATASETS = ("wordnet", "stamps")  # and pairs:<file.jsonl>, a team's own pairs


def dataset_sets(name: str, cache: Path, n_train: int | None,
                 seed: int = 0) -> tuple[list[Pair], EvalSet, EvalSet, dict[str, EvalSet]]:
    """(train pairs, val EvalSet, test EvalSet, extra test sets) for a named real data set."""
    if name == "wordnet":
        from mmsearch.offline.datasets import wordnet

        train, val, test = wordnet.retrieval_sets(cache, n_train, seed=seed)
        return train, val, test, {}
    if name == "stamps":
        from mmsearch.offline.datasets import stamps

        train, val, test, i2i = stamps.retrieval_sets(cache, n_train, seed=seed)
        return train, val, test, {"image2image": i2i}
    if name.startswith("pairs:"):  # a team's own pairs: test and validation split off by group
        pairs = load_pairs(Path(name.split(":", 1)[1]))
        rest, test, _ = split_pairs(pairs, 0.15, seed=seed)
        train, val, _ = split_pairs(rest, 0.15, seed=seed + 1)
        return train[:n_train] if n_train else train, val, test, {}
    raise BadInput(f"unknown --dataset {name!r} (wordnet, stamps, pairs:<file.jsonl>)")
