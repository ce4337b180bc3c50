"""`mmsearch serve-web`: the search page at http://127.0.0.1:8090 until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Sequence

from werkzeug.serving import make_server

from mmsearch.cli import run_cli, stop_event
from mmsearch.config import load_config
from mmsearch.web_ui.app import create_app


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch serve-web", description=__doc__)
    p.add_argument("--address", help="host:port (default: config web.host:port, 127.0.0.1:8090)")
    p.add_argument("--config", help="YAML config file")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config)
        host, _, port = (args.address or f"{cfg.web.host}:{cfg.web.port}").rpartition(":")
        server = make_server(host, int(port), create_app(cfg), threaded=True)
        stop = stop_event()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"search page ready: http://{host}:{server.server_port}", flush=True)
        stop.wait()
        server.shutdown()
        print("web stopped", flush=True)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
