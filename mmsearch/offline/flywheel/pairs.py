"""The query log -> training pairs: the flywheel's labels come from users' clicks.

Assumptions (position bias), stated because the pairs are only as good as they are:
- **A click is a vote of relevance** for that query, counted once per user (a user clicking the same
  result for the same query ten times is one vote). A pair needs ``min_users`` distinct users **and**
  a click rate clearly above ``min_click_rate`` among the users who were shown that result for that
  query: the lower end of its 95% Wilson interval must reach it. A count alone lets stray clicks
  through once a query is popular, and a plain rate lets 2 clicks out of 10 through (measured on the
  demo's simulated log: a quarter of the pairs were noise after four rounds of traffic).
- **Skip-above**: users read a result page top-down, so the results ranked *above* a clicked one were
  seen and passed over; they become hard negatives. Results below the last click may never have been
  read and are not used. A result some users clicked is never a negative for that query.
- **Forced requests** (the debug override of the arm) are left out: they come from tools, not users.
- **Bots**: a user with more than ``max_user_rate`` searches in any 60-second window is dropped whole.
- Only text queries on the first page (offset 0) count; positions beyond it are a different reader.
The held-out part is split **by query** (a hash of the normalised text), so no evaluation query is
ever trained on; it is written as a judged set (`mmsearch eval --api --judged`, the gate).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.clients.documents import QUERY_LOG, DocumentStore
from mmsearch.errors import BadInput
from mmsearch.offline.data import Pair
from mmsearch.offline.datasets.judged import judged_jsonl
from mmsearch.offline.eval_served import Judged


@dataclass
class PairOptions:
    scene: str = "text2text"
    min_users: int = 2  # distinct users who clicked a (query, document) before it is a pair
    min_click_rate: float = 0.1  # of the distinct users shown that document for that query
    max_user_rate: int = 60  # searches in any 60 s above which a user is taken for a bot
    heldout_fraction: float = 0.2  # of the queries (not the pairs)
    max_negatives: int = 3  # skipped-above results kept per pair
    salt: str = "flywheel"  # of the query split; change it to draw another split
    include_forced: bool = False
    since: float = 0.0  # Unix time: only searches from then on (0: the whole log)

    def check(self) -> None:
        if self.min_users < 1 or self.max_user_rate < 1 or self.max_negatives < 0:
            raise BadInput("--min-users and --max-user-rate must be >= 1, --max-negatives >= 0")
        if not 0 <= self.min_click_rate <= 1:
            raise BadInput(f"--min-click-rate must be between 0 and 1, got {self.min_click_rate}")
        if not 0 < self.heldout_fraction < 1:
            raise BadInput(f"--heldout must be between 0 and 1, got {self.heldout_fraction}")


@dataclass
class LogPairs:
    """Click-derived judgements, by normalised query: doc id -> distinct users who clicked / skipped it."""

    clicks: dict[str, dict[str, set[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    skips: dict[str, dict[str, set[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # what was read and what was left out
    seen: dict[str, dict[str, set[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))  # impressions

    @property
    def shown(self) -> set[str]:
        """Every result users were shown: the evaluation corpus."""
        return {d for docs in self.seen.values() for d in docs}


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def bots(entries: Sequence[dict[str, Any]], max_rate: int) -> set[str]:
    """Users with more than ``max_rate`` searches inside some 60-second window."""
    times: dict[str, list[float]] = defaultdict(list)
    for e in entries:
        times[str(e.get("user_id"))].append(float(e.get("ts") or 0.0))
    out = set()
    for user, ts in times.items():
        ts.sort()
        lo = 0
        for hi in range(len(ts)):
            while ts[hi] - ts[lo] > 60.0:
                lo += 1
            if hi - lo + 1 > max_rate:
                out.add(user)
                break
    return out


def collect(entries: Iterable[dict[str, Any]], opts: PairOptions) -> LogPairs:
    """Clicks and skip-above judgements from log entries (see the module docstring for the rules)."""
    out = LogPairs()
    kept = []
    for e in entries:
        out.counts["entries"] += 1
        if e.get("scene") != opts.scene:
            out.counts["other scene"] += 1
        elif e.get("forced") and not opts.include_forced:
            out.counts["forced"] += 1
        elif not isinstance((e.get("query") or {}).get("text"), str) or not e["query"]["text"].strip():
            out.counts["not a text query"] += 1
        elif e.get("offset"):
            out.counts["not the first page"] += 1
        else:
            kept.append(e)
    dropped = bots(kept, opts.max_user_rate)
    for e in kept:
        user = str(e.get("user_id"))
        if user in dropped:
            out.counts["bot"] += 1
            continue
        results = [r for r in e.get("results") or [] if isinstance(r, str)]
        q = normalise(e["query"]["text"])
        for d in results:
            out.seen[q][d].add(user)
        clicked = {str(c.get("doc_id")) for c in e.get("clicks") or [] if isinstance(c, dict)}
        clicked &= set(results)  # a click on something not shown is not a judgement of this page
        if not clicked:
            out.counts["no click"] += 1
            continue
        out.counts["clicked"] += 1
        last = max(results.index(d) for d in clicked)
        for d in clicked:
            out.clicks[q][d].add(user)
        for d in results[:last]:
            if d not in clicked:
                out.skips[q][d].add(user)
    out.counts["bot users"] = len(dropped)
    return out


def wilson_lower(k: int, n: int, z: float = 1.96) -> float:
    """The lower end of the Wilson score interval of k successes in n trials (0 when n is 0)."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def heldout(query: str, opts: PairOptions) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{opts.salt}:{query}".encode()).digest()[:8], "big")
    return h / 2**64 < opts.heldout_fraction


@dataclass
class PairSet:
    train: list[Pair]
    heldout: list[Judged]
    counts: dict[str, int]
    corpus: dict[str, str] = field(default_factory=dict)  # id -> text of every shown result (the gate's corpus)
    train_judged: list[Judged] = field(default_factory=list)  # the train queries' clicked ids (`mmsearch train-ranker --judged`)


def make_pairs(log: LogPairs, texts: dict[str, str], opts: PairOptions) -> PairSet:
    """Pairs (query, clicked document's text, group = the query) with skipped-above hard negatives,
    and the held-out queries as a judged set of document ids."""
    train: list[Pair] = []
    held: list[Judged] = []
    train_judged: list[Judged] = []
    counts = dict(log.counts)
    for q in sorted(log.clicks):
        positives = set()
        for d, users in log.clicks[q].items():
            rate = wilson_lower(len(users), max(len(users), len(log.seen[q][d])))
            if len(users) < opts.min_users:
                counts["pairs under min users"] = counts.get("pairs under min users", 0) + 1
            elif rate < opts.min_click_rate:
                counts["pairs under min click rate"] = counts.get("pairs under min click rate", 0) + 1
            elif d in texts:
                positives.add(d)
        if not positives:
            continue
        if heldout(q, opts):
            held.append(Judged(q, dict.fromkeys(sorted(positives), 1.0), ("clicks",)))
            continue
        skipped = sorted(((len(u), d) for d, u in log.skips.get(q, {}).items() if d not in log.clicks[q] and d in texts),
                         reverse=True)
        negatives = [d for _, d in skipped[: opts.max_negatives]]
        train_judged.append(Judged(q, dict.fromkeys(sorted(positives), 1.0), ("clicks",)))
        for i, d in enumerate(sorted(positives)):
            neg = texts[negatives[i % len(negatives)]] if negatives else None
            train.append(Pair(q, texts[d], group=q, negative=neg))
    counts.update(train_pairs=len(train), heldout_queries=len(held))
    return PairSet(train, held, counts, {d: texts[d] for d in sorted(log.shown) if d in texts}, train_judged)


def pairs_from_log(store: DocumentStore, index: str, opts: PairOptions, text_field: str = "text",
                   image_root: Path | None = None) -> PairSet:
    """Read the scene's log, judge, and look the clicked and skipped documents' texts up in ``index``.

    With ``image_root`` the index holds images (text->image scenes): a document is its ``image`` file
    under that folder, named by its absolute path; one whose file is gone (or a URL) is left out."""
    opts.check()
    match: dict[str, Any] = {"scene": opts.scene, **({"ts": {"$gte": opts.since}} if opts.since else {})}
    entries = store.find(QUERY_LOG, match,
                         ["scene", "user_id", "ts", "query", "results", "clicks", "forced", "offset"])
    log = collect(entries, opts)
    ids = sorted(log.shown)
    texts: dict[str, str] = {}
    root = image_root.resolve() if image_root is not None else None
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        for doc_id, doc in zip(chunk, store.get_many(index, chunk)):
            value = (doc or {}).get("image" if root else text_field)
            if not isinstance(value, str) or not value.strip():
                continue
            if root is None:
                texts[doc_id] = value
            elif "://" not in value and (path := (root / value).resolve()).is_relative_to(root) and path.is_file():
                texts[doc_id] = str(path)
    ps = make_pairs(log, texts, opts)
    if len(texts) < len(ids):  # a wrong image folder or field shows here, not only as "too few pairs"
        what = f"shown documents without an image file under {root}" if root else f"shown documents without a {text_field!r} text"
        ps.counts[what] = len(ids) - len(texts)
    return ps


def write_pairs(ps: PairSet, out: Path) -> dict[str, Path]:
    """``train.jsonl`` (finetune --pairs), ``train_judged.jsonl`` (the same queries' clicked ids: train-ranker
    --judged), ``heldout.jsonl`` (a judged set) and ``counts.json``, written to temporary names and renamed, so a
    rerun never sees half a file."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("train.jsonl", "train_judged.jsonl", "heldout.jsonl", "corpus.jsonl", "counts.json")}
    texts = {
        "train.jsonl": "".join(json.dumps({"query": p.query, "positive": p.positive, "group": p.group,
                                           **({"negative": p.negative} if p.negative else {})}) + "\n" for p in ps.train),
        "train_judged.jsonl": judged_jsonl(ps.train_judged),
        "heldout.jsonl": judged_jsonl(ps.heldout),
        "corpus.jsonl": "".join(json.dumps({"id": d, "text": t}) + "\n" for d, t in ps.corpus.items()),
        "counts.json": json.dumps(ps.counts, indent=2, sort_keys=True) + "\n",
    }
    for name, text in texts.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.rename(paths[name])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from mmsearch.cli import parse_since, run_cli
    from mmsearch.config import load_config
    from mmsearch.offline.indexing.stores import open_stores

    p = argparse.ArgumentParser(prog="mmsearch pairs", description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="the index whose documents were served (their texts are looked up there)")
    p.add_argument("--out", type=Path, required=True, help="folder for train.jsonl, heldout.jsonl, corpus.jsonl, counts.json")
    p.add_argument("--scene", default="text2text")
    p.add_argument("--min-users", type=int, help="distinct users per pair (default: config flywheel.min_users)")
    p.add_argument("--max-user-rate", type=int, help="searches per minute above which a user is a bot (config flywheel.max_user_rate)")
    p.add_argument("--min-click-rate", type=float, help="clickers / users shown, per query and document (config flywheel.min_click_rate)")
    p.add_argument("--heldout", type=float, default=0.2, help="fraction of queries held out")
    p.add_argument("--include-forced", action="store_true", help="also use requests with a forced arm")
    p.add_argument("--since", help="only searches from this UTC time on (ISO 8601, e.g. 2026-11-26T01:00)")
    p.add_argument("--image-root", type=Path,
                   help="the index holds images under this folder (text->image scenes): pairs name image files")
    p.add_argument("--config")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config)
        opts = PairOptions(args.scene, args.min_users or cfg.flywheel.min_users,
                           cfg.flywheel.min_click_rate if args.min_click_rate is None else args.min_click_rate,
                           args.max_user_rate or cfg.flywheel.max_user_rate, args.heldout, include_forced=args.include_forced,
                           since=parse_since(args.since) or 0.0)
        with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (_, ds):
            ps = pairs_from_log(ds, args.index, opts, image_root=args.image_root)
        write_pairs(ps, args.out)
        print(f"{len(ps.train)} training pairs, {len(ps.heldout)} held-out queries, {len(ps.corpus)} shown documents "
              f"-> {args.out} ({', '.join(f'{k} {v}' for k, v in sorted(ps.counts.items()))})")

    return run_cli(_go)
