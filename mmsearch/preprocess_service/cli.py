"""`mmsearch serve-preprocess`: the preprocess gRPC service in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from mmsearch.cli import run_cli, stop_event
from mmsearch.config import load_config
from mmsearch.preprocess_service.server import create_server


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch serve-preprocess", description=__doc__)
    p.add_argument("--repo", type=Path, help="model repository (default: config model_repository)")
    p.add_argument("--address", help="host:port (default: config preprocess.host:port, 127.0.0.1:60051)")
    p.add_argument("--config", help="YAML config file")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config)
        stop = stop_event()
        server = create_server(cfg, args.address, args.repo)
        names = ", ".join(server.servicer.registry.entries()) or "none"
        print(f"preprocess ready on {args.address or cfg.preprocess.host}:{server.port} (models: {names})", flush=True)
        stop.wait()
        server.stop()
        print("preprocess stopped", flush=True)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
