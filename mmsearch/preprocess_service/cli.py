"""`mmsearch serve-preprocess`: the preprocess gRPC service in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmsearch.cli import add_ports_file, run_cli, serve_until_stopped
from mmsearch.config import flag_overrides, load_config, split_address
from mmsearch.preprocess_service.server import create_server


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch serve-preprocess", description=__doc__)
    p.add_argument("--repo", type=Path, help="model repository (default: config model_repository)")
    p.add_argument("--address", help="host:port (default: config preprocess.host:port, 127.0.0.1:60051)")
    p.add_argument("--config", help="YAML config file")
    add_ports_file(p)
    args = p.parse_args(argv)

    def _go() -> None:
        host, port = split_address(args.address, "--address") if args.address else (None, None)
        cfg = load_config(args.config, overrides=flag_overrides({
            "model_repository": args.repo, "preprocess.host": host, "preprocess.port": port}))
        serve_until_stopped(
            "preprocess", lambda: create_server(cfg),
            lambda s: f"preprocess ready on {cfg.preprocess.host}:{s.port} (models: {', '.join(s.servicer.registry.entries()) or 'none'})",
            lambda s: s.stop(), cfg, lambda s: {"grpc": s.port, **({"metrics": s.metrics.port} if s.metrics else {})},
            args.ports_file)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
