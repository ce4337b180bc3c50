"""mmsearch docs: add, change, delete and read documents of a live index through the documents API.

  mmsearch docs put --index texts --file docs.jsonl            # upsert, in batches, with progress (rate, ETA)
  mmsearch docs delete --index texts --ids a,b,c
  mmsearch docs delete --index texts --filter '{"lang": "fr"}'
  mmsearch docs get --index texts a
  mmsearch docs indexes [INDEX]

`put` sends batches of --batch-size documents, each with an op_id derived from its content, so running
the same file again after an interruption applies no batch twice. A batch the service refuses names
its bad documents: they go to the rejects file (--rejects; default <file>.<index>.rejects.jsonl, one
{"line", "id", "field", "reason"} per reason) and the rest of the batch is sent again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from mmsearch.cli import run_cli
from mmsearch.client.search_client import SearchClient
from mmsearch.config import load_config
from mmsearch.errors import BadInput, NotFound
from mmsearch.runtime.endpoints import running_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch docs", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--url", help="the search API (default: http://<retrieval.host>:<retrieval.http_port> from config)")
    p.add_argument("--api-key", help="a write key (retrieval.write_api_keys) when the API requires keys (default: config web.api_key)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    sub = p.add_subparsers(dest="action", required=True)
    put = sub.add_parser("put", help="upsert the documents of a JSON Lines file (build-index's shape)")
    put.add_argument("--index", required=True)
    put.add_argument("--file", type=Path, required=True)
    put.add_argument("--batch-size", type=int, default=256)
    put.add_argument("--rejects", type=Path, help="where refused documents go (default <file>.<index>.rejects.jsonl)")
    put.add_argument("--no-progress", action="store_true")
    dl = sub.add_parser("delete", help="delete documents by ids or by a filter over the stored fields")
    dl.add_argument("--index", required=True)
    g = dl.add_mutually_exclusive_group(required=True)
    g.add_argument("--ids", help="comma-separated ids")
    g.add_argument("--ids-file", type=Path, help="one id per line")
    g.add_argument("--filter", help='a JSON filter (the search filter language), e.g. \'{"lang": "fr"}\'')
    dl.add_argument("--op-id", help="idempotency key (a retry with the same one is applied once)")
    gt = sub.add_parser("get", help="print a stored document")
    gt.add_argument("--index", required=True)
    gt.add_argument("id")
    ix = sub.add_parser("indexes", help="the indexes: model, dims, count, fields, builds")
    ix.add_argument("index", nargs="?")
    return p


def client(args: argparse.Namespace) -> SearchClient:
    cfg = running_config(load_config(args.config))
    url = args.url or f"http://{cfg.retrieval.host}:{cfg.retrieval.http_port}"
    return SearchClient(url, timeout_s=args.timeout, api_key=args.api_key or cfg.web.api_key or None)


def _lines(path: Path, rejects: TextIO) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line; a line that is not JSON goes to the rejects at once."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
                _write_reject(rejects, n, None, None, f"malformed JSON: {e}")


def _write_reject(fh: TextIO, line: int, doc_id: Any, field: str | None, reason: str) -> None:
    fh.write(json.dumps({"line": line, "id": doc_id if isinstance(doc_id, str) else None, "field": field, "reason": reason},
                        ensure_ascii=False) + "\n")


def _op_id(index: str, docs: list[Any]) -> str:
    """The same batch (same index, same documents) always gets the same op_id: a re-run applies it once."""
    digest = hashlib.sha256(json.dumps([index, docs], sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return "put-" + digest.hexdigest()[:40]


class Totals:
    def __init__(self) -> None:
        self.written = self.encoded = self.unchanged = self.rejected = self.replayed = 0


def _send(c: SearchClient, index: str, batch: list[tuple[int, Any]], rejects: TextIO, totals: Totals) -> None:
    """One batch; documents the service names as bad go to the rejects and the rest is sent again."""
    while batch:
        docs = [d for _, d in batch]
        try:
            out = c.put_documents(index, docs, op_id=_op_id(index, docs))
        except BadInput as e:
            named = getattr(e, "rejects", None)
            if not named:
                raise  # a refusal of the whole request (unknown index, batch over the limit): nothing per document to skip
            bad = {r["position"] for r in named}
            for r in named:
                _write_reject(rejects, batch[r["position"]][0], r.get("id"), r.get("field"), r["reason"])
            rejects.flush()
            totals.rejected += len(bad)
            batch = [x for i, x in enumerate(batch) if i not in bad]
            continue
        if out.get("replayed"):  # applied by an earlier run: its first answer, nothing written now
            totals.replayed += out["written"]
        else:
            totals.written += out["written"]
            totals.encoded += out["encoded"]
            totals.unchanged += out["unchanged"]
        return


def put(args: argparse.Namespace) -> list[str]:
    from tqdm import tqdm

    if not args.file.is_file():
        raise NotFound(f"--file: no such file {args.file}")
    if args.batch_size < 1:
        raise BadInput("--batch-size must be >= 1")
    c = client(args)
    rejects_path = args.rejects or args.file.with_name(f"{args.file.stem}.{args.index}.rejects.jsonl")
    with open(args.file, "rb") as f:
        total = sum(1 for raw in f if raw.strip())
    totals = Totals()
    t0 = time.perf_counter()
    with open(rejects_path, "w", encoding="utf-8") as rejects, \
            tqdm(total=total, unit="doc", desc=f"put {args.index}", disable=args.no_progress, file=sys.stderr,
                 dynamic_ncols=True, smoothing=0.1) as bar:  # rate and ETA
        batch: list[tuple[int, Any]] = []
        for n, obj in _lines(args.file, rejects):
            batch.append((n, obj))
            if len(batch) >= args.batch_size:
                _send(c, args.index, batch, rejects, totals)
                bar.update(len(batch))
                bar.set_postfix(rejected=totals.rejected, refresh=False)
                batch = []
        if batch:
            _send(c, args.index, batch, rejects, totals)
            bar.update(len(batch))
    seconds = time.perf_counter() - t0
    skipped = total - totals.written - totals.replayed - totals.rejected  # (lines that were not JSON)
    bad = totals.rejected + skipped
    if not bad:
        rejects_path.unlink(missing_ok=True)
    rate = totals.written / seconds if seconds else 0.0
    return [f"index {args.index}: written {totals.written} (encoded {totals.encoded}, unchanged {totals.unchanged}"
            + f"), already applied {totals.replayed}, rejected {bad} in {seconds:.1f} s ({rate:.0f} docs/s)" + (f"; rejects in {rejects_path}" if bad else "")]


def delete(args: argparse.Namespace) -> list[str]:
    c = client(args)
    if args.filter:
        try:
            flt = json.loads(args.filter)
        except json.JSONDecodeError as e:
            raise BadInput(f"--filter: not valid JSON ({e})") from e
        out = c.delete_documents(args.index, filter=flt, op_id=args.op_id)
    else:
        if args.ids_file is not None:
            if not args.ids_file.is_file():
                raise NotFound(f"--ids-file: no such file {args.ids_file}")
            ids = [x.strip() for x in args.ids_file.read_text(encoding="utf-8").splitlines() if x.strip()]
        else:
            ids = [x.strip() for x in args.ids.split(",") if x.strip()]
        out = c.delete_documents(args.index, ids=ids, op_id=args.op_id)
    return [f"index {args.index}: deleted {out['deleted']}, not found {out['not_found']}" + (" (already applied)" if out["replayed"] else "")]


def run(argv: Sequence[str] | None = None) -> list[str]:
    args = build_parser().parse_args(argv)
    if args.action == "put":
        return put(args)
    if args.action == "delete":
        return delete(args)
    c = client(args)
    if args.action == "get":
        return [json.dumps(c.get_document(args.index, args.id), ensure_ascii=False, indent=2)]
    infos = [c.get_index(args.index)] if args.index else c.list_indexes()
    return [f"{i['index']}\tlive {i['live_build'] or '-'}\tmodel {i['model'] or '?'} {i['model_version'] or ''}\tdim {i['dim']}"
            f"\tcount {i['count']}\tfields {','.join(f'{k}:{v}' for k, v in i['fields'].items()) or '-'}"
            f"\tlexical {','.join(i['lexical']) or '-'}\tbuilds {len(i['builds'])}" for i in infos] or ["no indexes"]


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: print("\n".join(run(argv))))


if __name__ == "__main__":
    sys.exit(main())
