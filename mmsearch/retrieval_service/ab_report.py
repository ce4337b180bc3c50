"""`mmsearch ab-report`: per scene, layer and arm — users, requests, click-through with a 95% interval,
the difference to the control arm with its interval and p-value, a sample-ratio-mismatch check per
layer, and the users needed to detect a 10% lift. Statistics are over users (the unit of assignment);
requests with a forced arm (the debug override) are counted but left out, since they are not randomised."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.cli import parse_since, run_cli
from mmsearch.clients.documents import DocumentStore
from mmsearch.config import Config, flag_overrides, load_config
from mmsearch.experiments.spec import Experiments, parse_experiments
from mmsearch.retrieval_service.ab_stats import (
    ArmSample,
    ctr_interval,
    difference,
    intra_user_correlation,
    sample_ratio_mismatch,
    users_needed,
)
from mmsearch.retrieval_service.querylog import COLLECTION
from mmsearch.runtime.embedded import embedded_store

LIFT = 0.10  # the relative lift the sample-size line is for


def _shares(exp: Experiments | None) -> dict[tuple[str, str], dict[str, float]]:
    if exp is None:
        return {}
    return {(scene, layer.name): {a.name: a.traffic for a in layer.arms} for scene, s in exp.scenes.items() for layer in s.layers}


def report(store: DocumentStore, scene: str | None = None, experiments: Experiments | None = None,
           control: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
    """One row per (scene, layer, arm). ``experiments`` gives the traffic shares for the SRM check;
    ``control`` names the control arm (default: the arm with the most users in its layer); ``since``
    (epoch seconds) keeps only searches from then on: an experiment's start, so that earlier rounds
    of a layer with the same name do not mix in."""
    match: dict[str, Any] = {"scene": scene} if scene else {}
    if since is not None:
        match["ts"] = {"$gte": since}
    per_user: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    forced: dict[tuple[str, str, str], int] = {}
    for e in store.find(COLLECTION, match, ["scene", "arms", "user_id", "clicks", "forced"]):
        for layer, arm in (e.get("arms") or {"-": "default"}).items():
            key = (e["scene"], layer, arm)
            if e.get("forced"):
                forced[key] = forced.get(key, 0) + 1
                continue
            u = per_user.setdefault(key, {}).setdefault(str(e.get("user_id")), [0, 0, 0])
            u[0] += 1
            n = len(e.get("clicks") or [])
            u[1] += 1 if n else 0
            u[2] += n
    shares = _shares(experiments)
    rows: list[dict[str, Any]] = []
    for key in sorted(set(per_user) | set(forced)):
        users = per_user.get(key, {})
        arr = np.asarray(list(users.values()) or np.zeros((0, 3)), dtype=float).reshape(-1, 3)
        sample = ArmSample(key[2], arr[:, 0], arr[:, 1])
        low, high = ctr_interval(sample)
        rows.append({"scene": key[0], "layer": key[1], "arm": key[2], "users": sample.users, "requests": int(arr[:, 0].sum()),
                     "clicked": int(arr[:, 1].sum()), "clicks": int(arr[:, 2].sum()), "ctr": sample.ctr, "ctr_low": low,
                     "ctr_high": high, "forced": forced.get(key, 0), "_sample": sample})
    for (sc, layer) in sorted({(r["scene"], r["layer"]) for r in rows}):
        group = [r for r in rows if (r["scene"], r["layer"]) == (sc, layer)]
        ctrl = next((r for r in group if r["arm"] == control), None) or max(group, key=lambda r: r["users"])
        rpu = ctrl["requests"] / ctrl["users"] if ctrl["users"] else 1.0
        icc = intra_user_correlation(ctrl["_sample"])  # the control arm's users: how alike one user's requests are
        need = users_needed(ctrl["ctr"], LIFT, requests_per_user=rpu, icc=icc) if ctrl["ctr"] > 0 else None
        layer_shares = shares.get((sc, layer))
        srm = None
        if layer_shares:  # over the configured arms: one that got no users at all is the plainest mismatch
            seen = {r["arm"]: r["users"] for r in group}
            srm = sample_ratio_mismatch([seen.get(a, 0) for a in layer_shares], list(layer_shares.values()))
            if set(seen) - set(layer_shares):  # users on arms the config does not have: the split is not what it says
                srm = {"p_value": 0.0, "mismatch": 1.0}
        for r in group:
            r["control"] = ctrl["arm"]
            r["vs_control"] = None if r is ctrl else difference(r["_sample"], ctrl["_sample"])
            r["users_needed_10pct"] = need
            r["intra_user_icc"] = icc
            r["srm_p"] = srm["p_value"] if srm else None
    for r in rows:
        del r["_sample"]
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    head = f"{'scene':<12} {'layer':<10} {'arm':<12} {'users':>6} {'requests':>8} {'CTR':>7} {'95% CI':>15} {'vs control':>26} {'forced':>6}"
    lines = [head]
    for r in rows:
        vs = r["vs_control"]
        vs_txt = "(control)" if vs is None else f"{vs['diff']:+.1%} [{vs['low']:+.1%},{vs['high']:+.1%}] p={vs['p_value']:.3f}"
        lines.append(f"{r['scene']:<12} {r['layer']:<10} {r['arm']:<12} {r['users']:>6} {r['requests']:>8} {r['ctr']:>7.1%} "
                     f"{'[' + format(r['ctr_low'], '.1%') + ',' + format(r['ctr_high'], '.1%') + ']':>15} {vs_txt:>26} {r['forced']:>6}")
    notes = []
    for (sc, layer) in sorted({(r["scene"], r["layer"]) for r in rows}):
        r = next(x for x in rows if (x["scene"], x["layer"]) == (sc, layer))
        srm = "no traffic shares known" if r["srm_p"] is None else (
            f"SAMPLE RATIO MISMATCH (p={r['srm_p']:.2g}): the split is broken, do not trust this layer" if r["srm_p"] < 0.001
            else f"split matches the traffic shares (p={r['srm_p']:.2g})")
        need = (f"{r['users_needed_10pct']:,} users per arm to detect a 10% lift (intra-user correlation "
                f"{r['intra_user_icc']:.2f})" if r["users_needed_10pct"] else "no clicks yet")
        notes.append(f"{sc}/{layer}: control {r['control']}; {srm}; {need}")
    return "\n".join(lines + [""] + notes) if rows else "(no queries logged)"


@contextlib.contextmanager
def open_query_log(cfg: Config) -> Iterator[DocumentStore]:
    """The query log's store: config mongo.uri, or with none the embedded server of data_dir (the
    running demo's, or one started for the command)."""
    with contextlib.ExitStack() as stack:
        uri = cfg.mongo.uri or stack.enter_context(embedded_store("mongo", cfg.data_dir))
        yield stack.enter_context(contextlib.closing(DocumentStore(uri, cfg.mongo.database)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch ab-report", description=__doc__)
    p.add_argument("--mongo-uri", help="default: config mongo.uri")
    p.add_argument("--scene")
    p.add_argument("--control", help="the control arm of each layer (default: the arm with the most users)")
    p.add_argument("--experiments", type=Path, help="experiments YAML for the traffic shares (default: config experiments_file)")
    p.add_argument("--since", help="only searches from this UTC time on (ISO 8601, e.g. 2026-11-26T01:00): the experiment's start")
    p.add_argument("--config")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config, overrides=flag_overrides({"mongo.uri": args.mongo_uri}))
        since = parse_since(args.since)
        path = args.experiments or Path(cfg.experiments_file)
        exp = parse_experiments(path.read_text(), str(path)) if path.is_file() else None
        with open_query_log(cfg) as store:
            print(render(report(store, args.scene, exp, args.control, since)))

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
