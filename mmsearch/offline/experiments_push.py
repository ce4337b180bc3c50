"""`mmsearch experiments push FILE`: validate an experiments YAML and write it to Consul KV.

The retrieval services pick it up within seconds (blocking queries); an invalid file is refused
here, before any service sees it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmsearch.cli import run_cli
from mmsearch.clients.consul_kv import acl_denied, consul_client
from mmsearch.config import flag_overrides, load_config
from mmsearch.errors import BadInput, Unauthenticated, Unavailable
from mmsearch.experiments.spec import parse_experiments


def push(path: Path, addr: str, key: str, token: str = "") -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {e}") from e
    exp = parse_experiments(text, str(path))
    try:
        ok = consul_client(addr, token).kv.put(key, text)
    except Exception as e:  # requests / consul errors
        if acl_denied(e):
            raise Unauthenticated(f"consul at {addr}: permission denied writing {key} (set consul.token / MMSEARCH_CONSUL_TOKEN)") from e
        raise Unavailable(f"consul at {addr}", str(e)) from e
    if not ok:
        raise Unavailable(f"consul at {addr}", f"PUT {key} was refused")
    return len(exp.scenes)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch experiments", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    ps = sub.add_parser("push", help="validate FILE and write it to Consul KV")
    ps.add_argument("file", type=Path)
    ps.add_argument("--consul", help="host:port (default: config consul.addr)")
    ps.add_argument("--key", help="KV key (default: config consul.key)")
    p.add_argument("--config")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config, overrides=flag_overrides({"consul.addr": args.consul or None,
                                                                 "consul.key": args.key or None}))
        if not cfg.consul.addr:
            raise BadInput("--consul host:port (or MMSEARCH_CONSUL_ADDR) is required")
        n = push(args.file, cfg.consul.addr, cfg.consul.key, cfg.consul.token)
        print(f"pushed {args.file} ({n} scenes) to consul {cfg.consul.addr} key {cfg.consul.key}")

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
