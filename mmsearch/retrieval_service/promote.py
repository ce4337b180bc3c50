"""`mmsearch promote`: the A/B winner becomes what the scene serves, in one safe step.

    mmsearch promote --scene text2text --arm minilm_fw1 [--layer flywheel] [--since 2026-11-26T01:00]

The last step of the flywheel. The arm's settings (its embed_model, index, ...) become the scene's
defaults and its layer is removed, so every user gets them. Only on evidence: the query log's A/B
(ab-report's statistics, users not requests, forced requests left out) must show the arm's
click-through above its layer's control with the 95% interval excluding zero; `--force` overrides
that, and says so. The edit is the same safe one the flywheel's arm step makes (round-trip YAML,
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
from mmsearch.errors import BadInput, NotFound
from mmsearch.experiments import parse_experiments
from mmsearch.experiments_edit import CONTROL, edit_consul, edit_file, promote_arm
from mmsearch.retrieval_service.ab_report import open_query_log, report


def current_experiments(cfg: Config) -> str:
    """The experiments YAML the services follow: Consul's when configured, else the watched file."""
    if cfg.consul.addr:
        from mmsearch.clients.consul_kv import consul_client

        _, item = consul_client(cfg.consul.addr, cfg.consul.token).kv.get(cfg.consul.key)
        if item is None or item.get("Value") is None:
            raise NotFound(f"consul at {cfg.consul.addr} has no experiments at {cfg.consul.key}")
        return item["Value"].decode("utf-8")
    return Path(cfg.experiments_file).read_text(encoding="utf-8")


def promote(cfg: Config, store: DocumentStore, scene: str, arm: str, layer: str = "flywheel", since: float | None = None,
            force: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Check the A/B evidence for ``arm``, then make its settings ``scene``'s defaults; returns what was done."""
    text = current_experiments(cfg)
    promote_arm(text, scene, layer, arm)  # the arm is there and can be promoted, before the log is read
    rows = report(store, scene, parse_experiments(text, "the current experiments"), control=CONTROL, since=since)
    row = next((r for r in rows if r["layer"] == layer and r["arm"] == arm), None)
    vs = (row or {}).get("vs_control") or {}
    evidence = (f"{arm} CTR {row['ctr']:.3f} vs {CONTROL} {row['ctr'] - vs['diff']:.3f}, diff {vs['diff']:+.3f} "
                f"[{vs['low']:+.3f}, {vs['high']:+.3f}] over {row['users']} users" if row and vs else
                f"no A/B traffic for {arm} in layer {layer} of {scene}" + (" since then" if since else ""))
    if not (vs and vs["low"] > 0):
        if not force:
            raise BadInput(f"the A/B does not show {arm} better than {CONTROL} ({evidence}): let more users see it, "
                           "or --force to promote anyway")
        say(f"promoting without evidence (--force): {evidence}")
    params: dict[str, Any] = {}

    def edit(t: str) -> tuple[str, bool]:
        out, got = promote_arm(t, scene, layer, arm)
        params.update(got)
        return out, True

    if cfg.consul.addr:
        edit_consul(cfg.consul.addr, cfg.consul.key, cfg.consul.token, edit)
    else:
        edit_file(Path(cfg.experiments_file), edit)
    say(f"{scene} now serves {', '.join(f'{k}={v}' for k, v in params.items())} to every user; layer {layer} removed ({evidence})")
    return {"scene": scene, "arm": arm, "defaults": params, "evidence": evidence, "forced": bool(force and not (vs and vs["low"] > 0))}


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import parse_since, run_cli
    from mmsearch.config import flag_overrides, load_config

    p = argparse.ArgumentParser(prog="mmsearch promote", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--scene", required=True)
    p.add_argument("--arm", required=True, help="the arm to promote (a flywheel round's model name)")
    p.add_argument("--layer", default="flywheel")
    p.add_argument("--since", help="count A/B traffic from this UTC time on (ISO 8601): the arm's start")
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
