"""`mmsearch index list|rollback|drop`: the builds of an index, and moving its alias."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmsearch.cli import run_cli
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import check_index_name, collection_name
from mmsearch.config import flag_overrides, lexical_root, load_config
from mmsearch.errors import BadInput, NotFound
from mmsearch.offline.indexing.stores import open_stores
from mmsearch.offline.reindex import roll_back


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch index", description=__doc__)
    p.add_argument("--milvus-uri")
    p.add_argument("--mongo-uri")
    p.add_argument("--config")
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="builds of every index (or one), the live one marked")
    ls.add_argument("index", nargs="?")
    rb = sub.add_parser("rollback", help="point the index at the previous complete build (or --to BUILD)")
    rb.add_argument("index")
    rb.add_argument("--to", help="build to make live")
    dr = sub.add_parser("drop", help="drop one build (--build) or the whole index (--all)")
    dr.add_argument("index")
    g = dr.add_mutually_exclusive_group(required=True)
    g.add_argument("--build")
    g.add_argument("--all", action="store_true")
    return p


def run(argv: Sequence[str] | None = None) -> list[str]:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, overrides=flag_overrides({"milvus.uri": args.milvus_uri, "mongo.uri": args.mongo_uri}))
    out: list[str] = []
    lex = LexicalStore(lexical_root(cfg))
    with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (vs, ds):
        if args.action == "list":
            indexes = [args.index] if args.index else sorted({c.split("__", 1)[0] for c in vs.collections() if "__" in c})
            for index in indexes:
                live = vs.live_build(index)
                records = {r["build"]: r for r in ds.builds(index)}
                for b in vs.builds(index):
                    r = records.get(b, {})
                    c = r.get("counts", {})
                    out.append(f"{index}\t{b}\t{'LIVE' if b == live else r.get('status', '?')}\tindexed {c.get('indexed', '?')}"
                               f"\tmodel {r.get('model', '?')}\t{_spec(r.get('index_spec'))}"
                               f"\tlexical {','.join(r.get('lexical') or []) or '-'}\t{r.get('finished') or r.get('started', '')}")
            if not out:
                out.append("no indexes")
            return out
        index = check_index_name(args.index)
        live = vs.live_build(index)
        if args.action == "rollback":
            complete = [r["build"] for r in ds.builds(index) if r.get("status") == "complete" and r["build"] in vs.builds(index)]
            if args.to:
                if args.to not in complete:
                    raise NotFound(f"index {index} has no complete build {args.to} (complete: {', '.join(complete) or 'none'})")
                target = args.to
            else:
                older = [b for b in complete if live is None or b < live]
                if not older:
                    raise BadInput(f"index {index} has no complete build older than the live one ({live})")
                target = older[-1]
            was, replayed = roll_back(vs, ds, lex, Path(cfg.model_repository), index, target)
            return [f"{index} -> {target} (was {was})" + (f"; {replayed} journaled write(s) made since carried over" if replayed else "")]
        if args.all:
            vs.drop_index(index)
            lex.clear_live(index)
            for r in ds.builds(index):
                lex.drop(collection_name(index, r["build"]))
            ds.delete_builds(collection_name(index, r["build"]) for r in ds.builds(index))
            ds.drop(index)
            return [f"dropped index {index} (all builds, documents)"]
        if args.build not in vs.builds(index):
            raise NotFound(f"index {index} has no build {args.build}")
        vs.drop(index, args.build)
        lex.drop(collection_name(index, args.build))
        ds.delete_builds([collection_name(index, args.build)])
        return [f"dropped {index} build {args.build}"]


def _spec(spec: dict | None) -> str:
    """How a build is indexed, in a word or three (builds made before specs were recorded: "-")."""
    if not spec:
        return "-"
    if spec.get("index_type") == "HNSW":
        return f"HNSW M{spec.get('hnsw_m')} efc{spec.get('hnsw_ef_construction')} ef{spec.get('search_ef')}"
    if spec.get("index_type") == "IVF_PQ":
        return f"IVF_PQ nlist{spec.get('ivf_nlist')} m{spec.get('ivf_pq_m')}x{spec.get('ivf_pq_nbits')}b nprobe{spec.get('search_ef')}"
    if spec.get("index_type") in ("IVF_FLAT", "IVF_SQ8"):
        return f"{spec.get('index_type')} nlist{spec.get('ivf_nlist')} nprobe{spec.get('search_ef')}"
    return str(spec.get("index_type", "-"))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: print("\n".join(run(argv))))


if __name__ == "__main__":
    sys.exit(main())
