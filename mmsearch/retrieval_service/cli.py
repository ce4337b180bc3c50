"""`mmsearch serve-retrieval`: the search API (HTTP 127.0.0.1:8080, gRPC :50051) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmsearch.cli import add_ports_file, run_cli, serve_until_stopped
from mmsearch.config import load_config
from mmsearch.retrieval_service.server import create_server


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch serve-retrieval", description=__doc__)
    p.add_argument("--http", help="host:port (default: config retrieval.host:http_port)")
    p.add_argument("--grpc", help="host:port (default: config retrieval.host:grpc_port)")
    p.add_argument("--config", help="YAML config file")
    add_ports_file(p)
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config)
        serve_until_stopped("retrieval", lambda: create_server(cfg, args.http, args.grpc),
                            lambda s: f"retrieval ready: http {cfg.retrieval.host}:{s.http_port} grpc {s.grpc_port}",
                            lambda s: s.stop(), cfg, lambda s: {"http": s.http_port, "grpc": s.grpc_port}, args.ports_file)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
