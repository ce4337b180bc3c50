"""`mmsearch serve-models`: Triton over the model repository, in the foreground until SIGINT/SIGTERM.

SIGHUP re-reads the repository: new models and new versions are loaded (and changed ones
reloaded) while the models already served keep serving.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from mmsearch.cli import add_ports_file, run_cli
from mmsearch.config import flag_overrides, load_config
from mmsearch.errors import BadInput, MMSearchError
from mmsearch.runtime.net import write_ports
from mmsearch.runtime.supervisor import stop_event
from mmsearch.serving.repository import discover
from mmsearch.serving.triton import TritonOptions, start_triton

log = logging.getLogger("mmsearch.serving")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch serve-models", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, help="model repository (default: config model_repository)")
    p.add_argument("--host", help="bind address (default: config serving.host, 127.0.0.1)")
    p.add_argument("--http-port", type=int)
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--cpu-threads", type=int, help="ONNX Runtime threads per model instance")
    p.add_argument("--cuda", action="store_true", help="run models on the GPU (CUDA execution provider); an error if there is none")
    p.add_argument("--log-file", type=Path, help="tritonserver log (default: <data_dir>/logs/triton.log)")
    p.add_argument("--config", help="YAML config file")
    add_ports_file(p)
    return p


def options_from(argv: Sequence[str] | None) -> tuple[TritonOptions, Path | None]:
    """The Triton options and the --ports-file (where the ports bound are reported)."""
    args = build_parser().parse_args(argv)
    for name in ("http_port", "grpc_port", "metrics_port"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 65535:
            raise BadInput(f"--{name.replace('_', '-')} must be 0..65535, got {value}")
    if args.cpu_threads is not None and args.cpu_threads < 0:
        raise BadInput(f"--cpu-threads must be >= 0, got {args.cpu_threads}")
    cfg = load_config(args.config, overrides=flag_overrides({
        "model_repository": args.repo, "serving.host": args.host or None, "serving.http_port": args.http_port,
        "serving.grpc_port": args.grpc_port, "serving.metrics_port": args.metrics_port,
        "serving.cpu_threads": args.cpu_threads,
    }))
    s = cfg.serving
    return TritonOptions(
        repo=cfg.model_repository, host=s.host, http_port=s.http_port, grpc_port=s.grpc_port,
        metrics_port=s.metrics_port, cpu_threads=s.cpu_threads, use_cuda=args.cuda,
        log_file=args.log_file or cfg.data_dir / "logs" / "triton.log", poll_s=cfg.repository_poll_s,
    ), args.ports_file


def serve(opts: TritonOptions, ports_file: Path | None = None) -> None:
    reload = threading.Event()
    stop = stop_event(reload)  # SIGHUP: load new and changed models
    server = start_triton(opts)  # ports of 0 become free ones (retried on a clash); reported below
    if ports_file is not None:
        write_ports(ports_file, {"http": opts.http_port, "grpc": opts.grpc_port, "metrics": opts.metrics_port})
    print(f"triton ready: http {server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}  "
          f"log {server.log_file}", flush=True)
    for why in server.refused.values():
        print(f"refused: {why}", flush=True)
    try:
        while not stop.is_set():
            stop.wait(0.5)
            server.child.check()  # ProcessDied when tritonserver exited
            if reload.is_set():
                reload.clear()
                try:
                    server.load_all(discover(Path(opts.repo)))
                except MMSearchError as e:
                    log.error("reload failed: %s", e.message)
    finally:
        server.stop()
        print("triton stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: serve(*options_from(argv)))


if __name__ == "__main__":
    sys.exit(main())
