"""`mmsearch build-index` / `python mmsearch/offline/build_index.py`: documents into Milvus + MongoDB.

    mmsearch build-index --index texts --docs docs.jsonl --model minilm
    mmsearch build-index --index images --docs images.jsonl --model dual_image --image-root photos/
    mmsearch build-index --index texts --docs docs.jsonl --model minilm --resume     # after Ctrl-C or a crash
    mmsearch build-index --index texts --docs docs.jsonl --model minilm --engine ray --workers 8   # Ray Data workers
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python mmsearch/offline/build_index.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmsearch.api.filters import parse_field_spec
from mmsearch.cli import run_cli
from mmsearch.clients.vectors import index_spec
from mmsearch.config import Config, flag_overrides, lexical_root, load_config
from mmsearch.errors import BadInput
from mmsearch.offline.indexing.build import LEXICAL_COMMIT_S, BuildOptions, BuildSummary, build_index


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch build-index", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--index", required=True, help="index name (the Milvus alias and MongoDB collection)")
    p.add_argument("--docs", required=True, type=Path, help="JSON Lines: {\"id\", \"text\" | \"image\", ...}")
    p.add_argument("--model", required=True, help="encoder name in the model repository")
    p.add_argument("--repo", type=Path, help="model repository (default: config model_repository)")
    p.add_argument("--image-root", type=Path, help="folder image paths are relative to (default: config image_root)")
    p.add_argument("--serving-url", help="encode through Triton at host:port (gRPC) instead of in-process")
    p.add_argument("--milvus-uri", help="Milvus URI (default: config milvus.uri, else the embedded Milvus server of the data dir)")
    p.add_argument("--mongo-uri", help="MongoDB URI (default: config mongo.uri, else an embedded secantusdb)")
    p.add_argument("--field", action="append", default=[], metavar="NAME:TYPE",
                   help="a document field stored beside the vectors for search filters; TYPE: str, int, float or bool (repeatable)")
    p.add_argument("--lexical", default="", metavar="FIELD[,FIELD...]",
                   help="text fields indexed for BM25 lexical recall (tantivy), versioned with the build, e.g. title,text")
    p.add_argument("--embed-title", default=None, metavar="FIELD",
                   help="text documents: embed the field's value with the text, as \"<title>: <text>\" (recorded on the build), "
                        "so a query naming the title finds it by vectors too")
    p.add_argument("--on-error", choices=["skip", "fail"], default="skip", help="bad lines: skip (to the rejects file) or fail")
    p.add_argument("--rejects", type=Path, help="rejects file (default: <docs>.<index>.rejects.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted build of this index")
    p.add_argument("--keep", type=int, default=2, help="old complete builds kept for rollback besides the live one (default 2)")
    p.add_argument("--batch-size", type=int, default=None, help="documents per batch (default 1024 texts, 32 images)")
    p.add_argument("--threads", type=int, default=0,
                   help="ONNX Runtime threads of one encoder session (0: a session per core, up to four, each encoding its "
                        "own chunks; --engine ray: per worker, 0 = 1)")
    p.add_argument("--checkpoint-s", type=float, default=LEXICAL_COMMIT_S,
                   help="seconds between checkpoints (BM25 terms committed; what an interrupted build redoes; default 10)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: encode in parallel Ray Data workers (the `distributed` extra)")
    p.add_argument("--workers", type=int, default=2, help="--engine ray: encoding workers, one encoder each (default 2)")
    p.add_argument("--ray-address", help="--engine ray: a running Ray cluster (e.g. auto); default: a local one for this build")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--config", help="YAML config file")
    return p


def config_from(args: argparse.Namespace) -> Config:
    """The config with the flags the user gave laid over it."""
    return load_config(args.config, overrides=flag_overrides({
        "model_repository": args.repo, "image_root": args.image_root,
        "milvus.uri": args.milvus_uri, "mongo.uri": args.mongo_uri,
    }))


def stored_fields(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, ftype = parse_field_spec(spec)
        if name in out:
            raise BadInput(f"--field {name}: given twice")
        out[name] = ftype
    return out


def options_from(args: argparse.Namespace, cfg: Config) -> BuildOptions:
    return BuildOptions(
        index=args.index, docs=args.docs, model=args.model, repo=cfg.model_repository,
        data_dir=cfg.data_dir, image_root=cfg.image_root, serving_url=args.serving_url,
        milvus_uri=cfg.milvus.uri, index_spec=index_spec(cfg.milvus), mongo_uri=cfg.mongo.uri, database=cfg.mongo.database,
        on_error=args.on_error, rejects=args.rejects, resume=args.resume, keep=args.keep, batch_size=args.batch_size, checkpoint_s=args.checkpoint_s,
        threads=args.threads, progress=not args.no_progress, fields=stored_fields(args.field),
        lexical=[f.strip() for f in args.lexical.split(",") if f.strip()], lexical_root=lexical_root(cfg),
        engine=args.engine, workers=args.workers, ray_address=args.ray_address,
        embed_title=args.embed_title,
    )


def run(argv: Sequence[str] | None = None) -> BuildSummary:
    args = build_parser().parse_args(argv)
    return build_index(options_from(args, config_from(args)))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: print(run(argv).line()))


if __name__ == "__main__":
    sys.exit(main())
