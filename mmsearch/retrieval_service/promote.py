"""`mmsearch promote`: the A/B winner becomes what the scene serves, in one safe step.

    mmsearch promote --scene text2text --arm minilm_fw1 [--layer flywheel] [--since 2026-11-26T01:00]

The last step of the flywheel. The arm's settings (its embed_model, index, ...) become the scene's
defaults and its layer is removed, so every user gets them. Only on evidence: the query log's A/B
since the arm's first search (ab-report's statistics: users not requests, forced requests left out)
must show the arm's click-through above its layer's ``control`` arm with the 95% interval excluding
zero, and the layer's split must not be broken (sample ratio mismatch); `--force` overrides that,
and says so. The edit is the same safe one the flywheel's arm step makes (round-trip YAML,
validated before it is written, atomic file write or Consul check-and-set).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmsearch.clients.documents import DocumentStore
from mmsearch.config import Config
from mmsearch.errors import BadInput
from mmsearch.experiments.edit import CONTROL, edit_consul, edit_file, promote_arm
from mmsearch.experiments.spec import parse_experiments
from mmsearch.retrieval_service.ab_report import open_query_log, report
from mmsearch.retrieval_service.querylog import COLLECTION


def current_experiments(cfg: Config) -> str:
    """The experiments YAML the services follow: Consul's when configured, else the watched file."""
    captured: list[str] = []

    def read(text: str) -> tuple[str, bool]:
        captured.append(text)
        return text, False  # read only: the same reads (and errors) as an edit, nothing written

    if cfg.consul.addr:
        edit_consul(cfg.consul.addr, cfg.consul.key, cfg.consul.token, read)
    else:
        edit_file(Path(cfg.experiments_file), read)
    return captured[0]


def arm_started(store: DocumentStore, scene: str, layer: str, arm: str) -> float | None:
    """When ``arm`` served its first logged search: the A/B's start, so earlier rounds that used the
    same layer name do not count."""
    seen = [e["ts"] for e in store.find(COLLECTION, {"scene": scene, f"arms.{layer}": arm}, ["ts"])
            if isinstance(e.get("ts"), int | float)]
    return min(seen) if seen else None


def promote(cfg: Config, store: DocumentStore, scene: str, arm: str, layer: str | None = None, since: float | None = None,
            force: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Check the A/B evidence for ``arm``, then make its settings ``scene``'s defaults; returns what was done."""
    layer = layer or cfg.flywheel.layer
    text = current_experiments(cfg)
    promote_arm(text, scene, layer, arm)  # the arm is there and can be promoted, before the log is read
    since = since if since is not None else arm_started(store, scene, layer, arm)
    rows = report(store, scene, parse_experiments(text, "the current experiments"), control=CONTROL, since=since)
    row = next((r for r in rows if r["layer"] == layer and r["arm"] == arm), None)
    vs = (row or {}).get("vs_control") or {}
    problem, figures = "", ""
    if row is None:
        problem = f"no A/B traffic for {arm} in layer {layer} of {scene}"
    elif row["control"] != CONTROL or not vs:
        problem = f"no {CONTROL} traffic in layer {layer} of {scene} to compare {arm} with"
    elif row["srm_p"] is not None and row["srm_p"] < 0.001:
        problem = f"sample ratio mismatch in layer {layer} (p={row['srm_p']:.2g}): the split is broken"
    if not problem and row is not None:
        figures = (f"{arm} CTR {row['ctr']:.3f} vs {CONTROL} {row['ctr'] - vs['diff']:.3f}, diff {vs['diff']:+.3f} "
                   f"[{vs['low']:+.3f}, {vs['high']:+.3f}] over {row['users']} users")
    evidence = problem or figures
    proven = not problem and vs["low"] > 0
    if not proven:
        if not force:
            raise BadInput(f"the A/B does not show {arm} better than {CONTROL} ({evidence}): let more users see it, "
                           "or --force to promote anyway")
        say(f"promoting without evidence (--force): {evidence}")
    result: dict[str, Any] = {}

    def edit(t: str) -> tuple[str, bool]:
        out, got = promote_arm(t, scene, layer, arm)
        result.update(got)
        return out, True

    if cfg.consul.addr:
        edit_consul(cfg.consul.addr, cfg.consul.key, cfg.consul.token, edit)
    else:
        edit_file(Path(cfg.experiments_file), edit)
    dropped = result.pop("_dropped_arms", [])
    say(f"{scene} now serves {', '.join(f'{k}={v}' for k, v in result.items())} to every user; layer {layer} removed"
        + (f" (with its other arms {', '.join(dropped)})" if dropped else "") + f" ({evidence})")
    return {"scene": scene, "arm": arm, "defaults": result, "dropped_arms": dropped, "evidence": evidence,
            "since": since, "forced": not proven}


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import parse_since, run_cli
    from mmsearch.config import flag_overrides, load_config

    p = argparse.ArgumentParser(prog="mmsearch promote", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--scene", required=True)
    p.add_argument("--arm", required=True, help="the arm to promote (a flywheel round's model name)")
    p.add_argument("--layer", help="the arm's layer (default: config flywheel.layer)")
    p.add_argument("--since", help="count A/B traffic from this UTC time on (ISO 8601; default: the arm's first logged search)")
    p.add_argument("--force", action="store_true", help="promote even if the A/B does not show the arm better")
    p.add_argument("--mongo-uri", help="the query log's MongoDB (default: config, or the embedded one)")
    p.add_argument("--config")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config, overrides=flag_overrides({"mongo.uri": args.mongo_uri}))
        with open_query_log(cfg) as store:
            promote(cfg, store, args.scene, args.arm, args.layer, parse_since(args.since), args.force)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
