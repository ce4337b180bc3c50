"""Training pairs and evaluation sets: the in-memory forms, and their JSONL files.

Files (what a team brings):
- pairs:   {"query": "...", "positive": "<text or image path>", "group": "<optional>", "negative": "<optional>"}
- queries: {"id": "...", "text": "..."} or {"id": "...", "image": "<path>"}
- corpus:  same shape as queries
- qrels:   {"query_id": "...", "doc_id": "...", "grade": 1}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmsearch.errors import BadInput

Modality = Literal["text", "image"]  # what a query or document is


@dataclass
class Pair:
    query: str
    positive: str
    group: str = ""
    negative: str | None = None


@dataclass
class EvalSet:
    queries: list[str]  # texts, or image paths
    corpus: list[str]
    gains: list[dict[int, float]]  # per query: corpus index -> grade
    query_modality: Modality = "text"
    corpus_modality: Modality = "text"
    exclude_self: list[int] | None = field(default=None)  # image->image: the query's own index, masked out
    relevance_level: float = 1.0  # grades >= this count as relevant for the binary metrics (trec_eval -l)


def _jsonl(path: Path) -> list[dict]:
    out = []
    try:
        # split on "\n" only: str.splitlines() also splits on U+2028, U+0085 ..., legal raw inside JSON strings
        lines = [line.removesuffix("\r") for line in Path(path).read_text(encoding="utf-8").split("\n")]
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {e}") from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{n}: malformed JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise BadInput(f"{path}:{n}: expected a JSON object")
        out.append(row)
    return out


def load_pairs(path: Path) -> list[Pair]:
    pairs = []
    for n, row in enumerate(_jsonl(path), start=1):
        q, p = row.get("query"), row.get("positive")
        if not isinstance(q, str) or not q.strip() or not isinstance(p, str) or not p.strip():
            raise BadInput(f"{path}: pair {n}: query and positive must be non-empty strings")
        group, negative = row.get("group"), row.get("negative")
        if negative is not None and not isinstance(negative, str):
            raise BadInput(f"{path}: pair {n}: negative must be a string, got {type(negative).__name__}")
        pairs.append(Pair(q, p, "" if group is None else str(group), negative or None))
    if len(pairs) < 2:
        raise BadInput(f"{path}: need at least 2 pairs, found {len(pairs)}")
    return pairs


def load_evalset(queries: Path, corpus: Path, qrels: Path) -> EvalSet:
    def side(path: Path) -> tuple[list[str], list[str], Modality]:
        rows = _jsonl(path)
        ids, values, modalities = [], [], set()
        for n, r in enumerate(rows, start=1):
            if "id" not in r or ("text" not in r and "image" not in r):
                raise BadInput(f"{path}:{n}: needs id and text or image")
            ids.append(str(r["id"]))
            modality = "text" if "text" in r else "image"
            modalities.add(modality)
            values.append(str(r[modality]))
        if len(modalities) != 1:
            raise BadInput(f"{path}: mixes text and image rows")
        if len(set(ids)) != len(ids):
            raise BadInput(f"{path}: duplicate ids")
        modality = modalities.pop()
        return ids, values, "image" if modality == "image" else "text"

    qids, qvals, qmodality = side(queries)
    dids, dvals, dmodality = side(corpus)
    qpos, dpos = {q: i for i, q in enumerate(qids)}, {d: i for i, d in enumerate(dids)}
    gains: list[dict[int, float]] = [{} for _ in qids]
    for n, r in enumerate(_jsonl(qrels), start=1):
        q, d = str(r.get("query_id")), str(r.get("doc_id"))
        if q not in qpos or d not in dpos:
            raise BadInput(f"{qrels}:{n}: unknown query_id {q!r} or doc_id {d!r}")
        gains[qpos[q]][dpos[d]] = float(r.get("grade", 1))
    return EvalSet(qvals, dvals, gains, qmodality, dmodality)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
