"""Simulated users for the flywheel: search through the real API, click like people do, leave a log.

The click model (a cascade with noise): a user reads the page top-down and examines rank r (from 0)
with probability ``patience ** r``; an examined result that is truly relevant is clicked with
``p_relevant``, an irrelevant one with ``p_noise``. So a model that ranks the relevant result higher
earns more clicks, and the log carries the position bias real logs carry. Used by the flywheel's
integration test (tiny data) and by bench/flywheel.py (the demo's data).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from mmsearch.client.search_client import SearchClient
from mmsearch.errors import MMSearchError
from mmsearch.offline.eval_served import Judged


@dataclass(frozen=True)
class ClickModel:
    patience: float = 0.8  # P(examine rank r) = patience ** r
    p_relevant: float = 0.9
    p_noise: float = 0.02

    def clicks(self, results: Sequence[str], relevant: dict[str, float], rng: random.Random) -> list[str]:
        out = []
        for r, doc in enumerate(results):
            if rng.random() >= self.patience ** r:
                continue
            if rng.random() < (self.p_relevant if relevant.get(doc, 0) > 0 else self.p_noise):
                out.append(doc)
        return out


def simulate(client: SearchClient, scene: str, queries: Sequence[Judged], users: int, searches_per_user: int,
             model: ClickModel = ClickModel(), seed: int = 0, top_k: int = 10, user_prefix: str = "sim",
             workers: int = 4, progress: bool = True) -> dict[str, Any]:
    """``users`` users (ids ``<prefix>-<seed>-<n>``) each run ``searches_per_user`` searches for queries
    drawn from ``queries`` and click by the model; clicks go back through the API. Per-arm counts returned."""
    if not queries or users < 1 or searches_per_user < 1:
        raise ValueError("need queries, users >= 1 and searches_per_user >= 1")

    def one_user(n: int) -> Counter:
        rng = random.Random(f"{seed}:{n}")
        user = f"{user_prefix}-{seed}-{n}"
        c: Counter = Counter()
        for q in rng.sample(list(queries), min(searches_per_user, len(queries))):
            try:
                res = client.search(scene, q.query, user_id=user, top_k=top_k)
            except MMSearchError as e:
                c["errors"] += 1
                c[f"error {type(e).__name__}: {e.message[:80]}"] += 1
                continue
            arm = ",".join(f"{k}={v}" for k, v in sorted(res["experiment"].items())) or "-"
            c[f"searches {arm}"] += 1
            clicked = model.clicks([h["id"] for h in res["results"]], q.relevant, rng)
            for doc in clicked:
                try:
                    client.click(res["request_id"], doc, user)
                except MMSearchError:
                    c["errors"] += 1
            c[f"clicked {arm}"] += 1 if clicked else 0
        return c

    total: Counter = Counter()
    with ThreadPoolExecutor(workers) as pool, tqdm(total=users, desc=f"simulated users ({scene})", unit="user",
                                                   disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for c in pool.map(one_user, range(users)):
            total.update(c)
            bar.update(1)
    return dict(total)
