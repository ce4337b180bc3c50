"""`mmsearch ab-report`: per scene, layer and arm — requests, users, clicks and click-through from the query log."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmsearch.cli import run_cli
from mmsearch.clients.documents import DocumentStore
from mmsearch.config import flag_overrides, load_config
from mmsearch.errors import BadInput
from mmsearch.retrieval_service.querylog import COLLECTION


def report(store: DocumentStore, scene: str | None = None) -> list[dict]:
    match = {"scene": scene} if scene else {}
    rows: dict[tuple, dict] = {}
    entries = store.find(COLLECTION, match, ["scene", "arms", "user_id", "clicks"])
    for e in entries:
        for layer, arm in (e.get("arms") or {"-": "default"}).items():
            r = rows.setdefault((e["scene"], layer, arm), {"scene": e["scene"], "layer": layer, "arm": arm,
                                                           "requests": 0, "clicked": 0, "clicks": 0, "users": set()})
            r["requests"] += 1
            r["users"].add(e.get("user_id"))
            n = len(e.get("clicks") or [])
            r["clicks"] += n
            r["clicked"] += 1 if n else 0
    out = []
    for key in sorted(rows):
        r = rows[key]
        r["users"] = len(r["users"])
        r["ctr"] = r["clicked"] / r["requests"] if r["requests"] else 0.0
        out.append(r)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch ab-report", description=__doc__)
    p.add_argument("--mongo-uri", help="default: config mongo.uri")
    p.add_argument("--scene")
    p.add_argument("--config")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config, overrides=flag_overrides({"mongo.uri": args.mongo_uri}))
        if not cfg.mongo.uri:
            raise BadInput("--mongo-uri (or MMSEARCH_MONGO_URI) is required: the query log lives in MongoDB")
        rows = report(DocumentStore(cfg.mongo.uri, cfg.mongo.database), args.scene)
        print(f"{'scene':<12} {'layer':<12} {'arm':<14} {'requests':>9} {'users':>7} {'clicked':>8} {'CTR':>7}")
        for r in rows:
            print(f"{r['scene']:<12} {r['layer']:<12} {r['arm']:<14} {r['requests']:>9} {r['users']:>7} {r['clicked']:>8} {r['ctr']:>7.1%}")
        if not rows:
            print("(no queries logged)")

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
