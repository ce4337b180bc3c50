"""`mmsearch serve-gate`: the admission gate (HTTP 127.0.0.1:8080) in front of the search API's HTTP, until SIGINT/SIGTERM.

    mmsearch serve-gate --upstream http://127.0.0.1:8081 [--listen 127.0.0.1:8080]

It admits as many searches as the service behind it takes (retrieval.max_inflight + max_queue, from the
same config) and refuses the rest itself; `mmsearch up` starts one in front of its search API.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmsearch.cli import add_ports_file, run_cli, serve_until_stopped
from mmsearch.config import load_config
from mmsearch.retrieval_service.gate.server import create_server


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch serve-gate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--upstream", required=True, help="the search API's HTTP behind the gate, http://host:port")
    p.add_argument("--listen", help="host:port (default: config retrieval.host:http_port)")
    p.add_argument("--config", help="YAML config file")
    add_ports_file(p)
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config)
        listen = args.listen or f"{cfg.retrieval.host}:{cfg.retrieval.http_port}"
        serve_until_stopped("gate", lambda: create_server(cfg, listen, args.upstream),
                            lambda s: f"gate ready: http {listen.rpartition(':')[0]}:{s.port} -> {args.upstream} "
                                      f"(admits {s.gate.admission.capacity} searches at once)",
                            lambda s: s.stop(), cfg, lambda s: {"http": s.port}, args.ports_file)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
