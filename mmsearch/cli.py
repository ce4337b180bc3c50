"""The `mmsearch` console script: one subcommand per tool, each a thin main(argv) elsewhere."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from mmsearch.config import Config
from mmsearch.errors import MMSearchError
from mmsearch.runtime.net import write_ports
from mmsearch.runtime.observability import configure_logging
from mmsearch.runtime.supervisor import stop_event
from mmsearch.runtime.threads import serial_blas

T = TypeVar("T")

# subcommand -> (module with main(argv), one-line help). Imported lazily: `mmsearch --help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "finetune": ("mmsearch.offline.finetune", "fine-tune text, dual (LiT), CLIP or cross-encoder models on labelled pairs"),
    "eval": ("mmsearch.offline.evaluate", "Recall/Precision/MRR/mAP/nDCG@k of a model on queries, corpus and qrels"),
    "grid": ("mmsearch.offline.grid", "grid search over models x data sizes x dims x learning rates, with a report"),
    "export": ("mmsearch.offline.export", "export model towers to the Triton model repository (ONNX + manifest)"),
    "serve-models": ("mmsearch.serving.cli", "serve the model repository with Triton (HTTP :8000, gRPC :8001, metrics :8002)"),
    "serve-preprocess": ("mmsearch.preprocess_service.cli", "serve the gRPC tokenizer / image preprocessor (127.0.0.1:60051)"),
    "build-index": ("mmsearch.offline.build_index", "encode documents into Milvus + MongoDB (versioned, resumable)"),
    "index": ("mmsearch.offline.index_admin", "list, roll back or drop index builds"),
    "reindex": ("mmsearch.offline.reindex", "re-encode a live index with another model while it serves and takes writes, then switch"),
    "snapshot": ("mmsearch.offline.snapshot", "copy an index (vectors, documents, terms, build record) to a folder, or restore one"),
    "serve-retrieval": ("mmsearch.retrieval_service.cli", "serve the search API (HTTP 127.0.0.1:8080, gRPC :50051)"),
    "serve-gate": ("mmsearch.retrieval_service.gate.cli", "serve the admission gate in front of the search API's HTTP (refusals in their own process)"),
    "search": ("mmsearch.client.search_cli", "query the running stack's search API (filters, paging, fields)"),
    "docs": ("mmsearch.client.docs_cli", "put, delete or get documents of a live index through the documents API"),
    "train-ranker": ("mmsearch.offline.ranker_training", "train the learned ranker of a fused arm on judged queries and clicks"),
    "pairs": ("mmsearch.offline.flywheel.pairs", "turn the query log's clicks into training pairs and held-out queries"),
    "flywheel": ("mmsearch.offline.flywheel.loop", "clicks -> fine-tune -> gate -> a new model on a small A/B arm, resumable"),
    "ab-report": ("mmsearch.retrieval_service.ab_report", "per-arm traffic and click-through from the query log"),
    "promote": ("mmsearch.retrieval_service.promote", "make an A/B winner the scene's defaults (only on evidence) and retire its layer"),
    "serve-web": ("mmsearch.web_ui.cli", "serve the search page (http://127.0.0.1:8090)"),
    "experiments": ("mmsearch.offline.experiments_push", "validate an experiments YAML and push it to Consul KV"),
    "up": ("mmsearch.launcher.up", "bring up the whole stack on embedded defaults"),
}


def parse_since(text: str | None) -> float | None:
    """``--since`` (ISO 8601; UTC unless it says otherwise) as a Unix time; None when not given."""
    import datetime as dt

    from mmsearch.errors import BadInput

    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise BadInput(f"--since must be an ISO 8601 time such as 2026-11-26T01:00, got {text!r}") from e
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def run_cli(fn: Callable[[], object]) -> int:
    """Run a CLI body: our errors become one line on stderr and their exit code, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("mmsearch").setLevel(logging.INFO)
    try:
        fn()
    except MMSearchError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def serve_until_stopped(name: str, start: Callable[[], T], ready_line: Callable[[T], str], stop: Callable[[T], None],
                        config: Config | None = None, ports: Callable[[T], dict[str, int]] | None = None,
                        ports_file: Path | None = None) -> None:
    """The body of every server CLI: apply the config's logging, start, print one ready line, run
    until SIGTERM/SIGINT, stop. With ``ports_file``, the ports it bound are written there (a server
    asked for port 0 binds a free one itself; the launcher reads which)."""
    if config is not None:
        configure_logging(config.log_level, config.log_json)
    serial_blas()  # before start: a server's numpy work is per request and small (runtime/threads.py)
    stopping = stop_event()  # installed before start, so an early Ctrl-C is not lost
    server = start()
    if ports_file is not None and ports is not None:
        write_ports(ports_file, ports(server))
    print(ready_line(server), flush=True)
    stopping.wait()
    stop(server)
    print(f"{name} stopped", flush=True)


def add_ports_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ports-file", type=Path, help="write the ports bound here as JSON (for a launcher; a port of 0 "
                                                 "in the config binds a free one)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: mmsearch COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[cmd][0]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
