"""The honest gate: the candidate against the model that serves the arm now, both exactly as served.

Both sides are exported repository models (ONNX, the same quantization) evaluated with ONNX Runtime
through LocalModel, on the same held-out queries (split off by query, never trained on) over the
same corpus. Never against untrained heads or a random projection: a model no better than what
serves today is refused, and refused models never get an arm.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsearch.errors import BadInput
from mmsearch.offline.data import EvalSet
from mmsearch.offline.eval_served import Judged
from mmsearch.offline.evaluate import evaluate, repo_encoder


@dataclass
class GateResult:
    passed: bool
    metric: str
    candidate: float
    incumbent: float
    margin: float
    queries: int
    corpus: int
    candidate_metrics: dict[str, float]
    incumbent_metrics: dict[str, float]

    @property
    def gain(self) -> float:
        return self.candidate / self.incumbent - 1 if self.incumbent else float("inf") if self.candidate else 0.0

    def line(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        return (f"gate {verdict}: held-out {self.metric} {self.candidate:.4f} vs served {self.incumbent:.4f} "
                f"({self.gain:+.1%}, margin {self.margin:.0%}) on {self.queries} queries over {self.corpus} documents")

    def to_json(self) -> dict:
        return asdict(self)


def heldout_evalset(judged: Sequence[Judged], corpus: dict[str, str]) -> EvalSet:
    """Queries with at least one relevant document in the corpus; the corpus in a fixed order."""
    ids = sorted(corpus)
    pos = {d: i for i, d in enumerate(ids)}
    kept = [j for j in judged if any(d in pos for d in j.relevant)]
    if not kept:
        raise BadInput("no held-out query has a relevant document in the evaluation corpus")
    return EvalSet([j.query for j in kept], [corpus[d] for d in ids],
                   [{pos[d]: g for d, g in j.relevant.items() if d in pos} for j in kept])


def with_distractors(es: EvalSet, corpus: dict[str, str], n: int, seed: int = 0) -> EvalSet:
    """``es`` with up to ``n`` more documents from ``corpus`` (not already in it) appended: the gains'
    indices stay valid, and ranking is measured against a realistic crowd."""
    have = set(es.corpus)
    pool = sorted(t for t in corpus.values() if t not in have)
    extra = random.Random(seed).sample(pool, min(n, len(pool)))
    return dataclasses.replace(es, corpus=list(es.corpus) + extra)


def gate(candidate: Path, incumbent: Path, es: EvalSet, metric: str, margin: float,
         candidate_docs: Path | None = None, incumbent_docs: Path | None = None) -> GateResult:
    """Pass only if the candidate beats the incumbent by more than ``margin`` (relative) on ``metric``.

    ``*_docs``: the tower that encodes the corpus when it is not the query tower (a dual's image tower)."""
    new_enc, old_enc = repo_encoder(candidate), repo_encoder(incumbent)
    m_new = evaluate(es, new_enc, repo_encoder(candidate_docs) if candidate_docs else new_enc)
    m_old = evaluate(es, old_enc, repo_encoder(incumbent_docs) if incumbent_docs else old_enc)
    if metric not in m_new:
        raise BadInput(f"gate metric {metric!r} unknown (choose from {', '.join(sorted(m_new))})")
    new, old = m_new[metric], m_old[metric]
    passed = new > old and new >= old * (1 + margin)
    return GateResult(passed, metric, new, old, margin, len(es.queries), len(es.corpus), m_new, m_old)


def load_corpus(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["id"]] = row["text"]
    return out
