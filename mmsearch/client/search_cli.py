"""mmsearch search: query the running stack's search API from the shell (through mmsearch.client.search_client).

  mmsearch search "red running shoes"
  mmsearch search "red running shoes" --filter '{"category": "shoes", "price": {"lt": 50}}' --top-k 5
  mmsearch search --scene image2image --image photo.jpg --fields id,caption --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsearch.cli import run_cli
from mmsearch.client.search_client import SearchClient
from mmsearch.config import load_config
from mmsearch.errors import BadInput, NotFound
from mmsearch.experiments.spec import SCENES
from mmsearch.runtime.endpoints import running_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch search", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("text", nargs="?", help="the query text (text2text, text2image)")
    p.add_argument("--scene", default="text2text", choices=SCENES)
    p.add_argument("--image", type=Path, help="a query image file (image2image)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--offset", type=int, default=0, help="hits to skip (the next page: offset + top-k)")
    p.add_argument("--fields", help="comma-separated document fields to return")
    p.add_argument("--filter", help='a JSON filter over stored fields, e.g. \'{"category": "shoes"}\'')
    p.add_argument("--url", help="the search API (default: http://<retrieval.host>:<retrieval.http_port> from config)")
    p.add_argument("--api-key", help="the API key, when the API requires one (default: config web.api_key)")
    p.add_argument("--json", action="store_true", help="print the whole response body")
    p.add_argument("--config", help="YAML config file")
    return p


def search(args: argparse.Namespace) -> dict[str, Any]:
    cfg = running_config(load_config(args.config))  # (a stack started with ports 0 recorded the ones it got)
    url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    flt = None
    if args.filter:
        try:
            flt = json.loads(args.filter)
        except json.JSONDecodeError as e:
            raise BadInput(f"--filter: not valid JSON ({e})") from e
    image = None
    if args.image is not None:
        if not args.image.is_file():
            raise NotFound(f"--image: no such file {args.image}")
        image = args.image.read_bytes()
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    client = SearchClient(url, timeout_s=cfg.retrieval.request_timeout_s + 5, api_key=args.api_key or cfg.web.api_key or None)
    return client.search(args.scene, text=args.text, image=image, top_k=args.top_k, offset=args.offset,
                         fields=fields, filter=flt)


def render(out: dict[str, Any]) -> str:
    lines = []
    for rank, hit in enumerate(out["results"], start=out.get("offset", 0) + 1):
        doc = hit.get("doc") or {}
        shown = str(doc.get("text") or doc.get("caption") or doc.get("image") or "")[:80]
        lines.append(f"{rank:>4}  {hit['id']}  {hit['score']:.4f} {hit.get('score_type', '')}  {shown}")
    n = len(out["results"])
    more = f", more with --offset {out.get('offset', 0) + n}" if out.get("has_more") else ""
    lines.append(f"({n} hit{'' if n == 1 else 's'}{more})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> None:
        out = search(args)
        print(json.dumps(out, ensure_ascii=False, indent=2) if args.json else render(out))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
