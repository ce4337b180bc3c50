"""Evaluate a served configuration end to end: queries through the search API, as users meet it.

A judged query set is JSON Lines, one query per line:

    {"query": "a striped wild horse", "relevant": {"animals_zebra": 1}, "tags": ["everyday"]}

``relevant`` maps document ids to grades (a list of ids means grade 1 each). Each query is sent to
``POST /v1/search`` with the arm forced (``--force layer=arm``: forced requests are flagged in the
query log and left out of A/B reports), and the returned ids are scored with mmsearch.ranking_metrics
(trec_eval conventions). Metrics are reported overall and per tag, with client-side latency, so a
fusion setting is judged on quality and speed in one run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mmsearch.client.search_client import SearchClient
from mmsearch.errors import BadInput
from mmsearch.ranking_metrics import ranked_metrics

MAX_QUERIES = 100_000


@dataclass(frozen=True)
class Judged:
    query: str
    relevant: dict[str, float]
    tags: tuple[str, ...] = ()


def load_judged(path: Path) -> list[Judged]:
    """The judged query set; every problem names its line."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {e}") from e
    out: list[Judged] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{where}: malformed JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip():
            raise BadInput(f"{where}: needs a non-empty string 'query'")
        rel = row.get("relevant")
        if isinstance(rel, list) and all(isinstance(x, str) for x in rel):
            rel = dict.fromkeys(rel, 1.0)
        if not isinstance(rel, dict) or not rel or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for k, v in rel.items()):
            raise BadInput(f"{where}: 'relevant' must be a non-empty list of ids or a mapping id -> grade >= 0")
        tags = row.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadInput(f"{where}: 'tags' must be a list of strings")
        out.append(Judged(row["query"], {k: float(v) for k, v in rel.items()}, tuple(tags)))
        if len(out) > MAX_QUERIES:
            raise BadInput(f"{path}: more than {MAX_QUERIES:,} queries")
    if not out:
        raise BadInput(f"{path}: no queries")
    return out


def evaluate_served(client: SearchClient, scene: str, judged: Sequence[Judged], forces: Sequence[dict[str, str]] = ({},),
                    ks: Sequence[int] = (1, 10), relevance_level: float = 1.0, progress: bool = True) -> list[dict[str, Any]]:
    """Per arm (one ``force`` each): metrics overall and per tag, the arms that served, and client-side
    latency percentiles (ms). Arms are interleaved query by query, so their latencies meet the same
    machine load and compare as a ratio."""
    top_k = max(ks)
    runs: list[list[list[str]]] = [[] for _ in forces]
    lat: list[list[float]] = [[] for _ in forces]
    arms: list[dict[str, str]] = [{} for _ in forces]
    for j in tqdm(judged, desc=f"eval {scene}", unit="q", disable=not progress, dynamic_ncols=True):
        for a, force in enumerate(forces):
            t0 = time.perf_counter()
            # one user id per arm: layers left unforced assign that user one arm for every query (a fresh
            # id per request would mix their arms query by query)
            out = client.search(scene, text=j.query, top_k=top_k, force=dict(force) or None, fields=[], user_id=f"eval{a}")
            lat[a].append((time.perf_counter() - t0) * 1000)
            runs[a].append([r["id"] for r in out["results"]])
            served = out.get("experiment", {})
            if arms[a] and served != arms[a]:  # the config changed mid-run: the figures would mix arms
                raise BadInput(f"the arms serving {dict(force) or 'the evaluation'} changed during the run ({arms[a]} -> {served})")
            arms[a] = served
    tags = sorted({t for j in judged for t in j.tags})
    rel = [j.relevant for j in judged]
    results = []
    for a, force in enumerate(forces):
        results.append({
            "scene": scene, "force": dict(force), "arms": arms[a], "queries": len(judged),
            "metrics": ranked_metrics(runs[a], rel, ks, relevance_level),
            "latency_ms": {p: float(np.percentile(lat[a], q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
            "by_tag": {t: {"queries": sum(t in j.tags for j in judged),
                           "metrics": ranked_metrics([r for r, j in zip(runs[a], judged) if t in j.tags],
                                                     [j.relevant for j in judged if t in j.tags], ks, relevance_level)}
                       for t in tags},
        })
    return results


def parse_force(spec: str) -> dict[str, str]:
    """``layer=arm[,layer=arm]`` -> {layer: arm}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        layer, sep, arm = part.partition("=")
        if not sep or not layer or not arm:
            raise BadInput(f"--force: {part!r} is not layer=arm")
        out[layer] = arm
    return out
