"""`mmsearch serve-web`: the search page at http://127.0.0.1:8090 until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmsearch.cli import add_ports_file, run_cli, serve_until_stopped
from mmsearch.config import flag_overrides, load_config, split_address
from mmsearch.runtime.wsgi import WsgiServer
from mmsearch.web_ui.app import create_app


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch serve-web", description=__doc__)
    p.add_argument("--address", help="host:port (default: config web.host:port, 127.0.0.1:8090)")
    p.add_argument("--config", help="YAML config file")
    add_ports_file(p)
    args = p.parse_args(argv)

    def _go() -> None:
        host, port = split_address(args.address, "--address") if args.address else (None, None)
        cfg = load_config(args.config, overrides=flag_overrides({"web.host": host, "web.port": port}))
        serve_until_stopped("web", lambda: WsgiServer(create_app(cfg), cfg.web.host, cfg.web.port, cfg.web.threads, "web"),
                            lambda s: f"search page ready: http://{cfg.web.host}:{s.port}", lambda s: s.stop(), cfg,
                            lambda s: {"http": s.port}, args.ports_file)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
