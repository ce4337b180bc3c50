"""`mmsearch eval`: Recall/Precision/MRR/mAP/nDCG@k of a model on queries + corpus + relevance judgements.

    mmsearch eval --model runs/minilm_ft --queries q.jsonl --corpus c.jsonl --qrels r.jsonl [--k 1,10]
    mmsearch eval --model model_repository/dual_ft_text --corpus-model model_repository/dual_ft_image ...
    mmsearch eval --api http://127.0.0.1:8080 --scene text2image --force recall=fused --judged q.jsonl

With ``--api`` a served arm is evaluated end to end through the search API (offline/eval_served.py).

A model is a fine-tuned / source folder (any family offline/models loads; evaluated in PyTorch) or an
exported repository model (evaluated with ONNX Runtime through the encoders' local backend, as served). For
two-tower models the query and corpus towers are picked by the modalities (text or image) of the
two files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mmsearch.encoders.encoder import Encoder
from mmsearch.encoders.local import LocalBackend
from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import MANIFEST_NAME, ImagePreprocessing
from mmsearch.modelrepo.preprocessing import ImagePreprocessor, TextPreprocessor
from mmsearch.offline.data import EvalSet, load_evalset
from mmsearch.offline.models import Tower, load_model
from mmsearch.ranking_metrics import retrieval_metrics

Encode = Callable[[Sequence[str]], np.ndarray]


def tower_encoder(tower: Tower, batch_size: int = 64) -> Encode:
    """PyTorch encode of texts or image paths through a tower, with the shared preprocessing."""
    if isinstance(tower.preprocessing, ImagePreprocessing):
        pre_img = ImagePreprocessor(tower.preprocessing)

        def prep(items):
            return (torch.from_numpy(pre_img(list(items))),)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="mmsearch-tok-"))
        tower.write_preprocess(tmp)
        pre_txt = TextPreprocessor(tmp, tower.preprocessing.max_length, tower.input_names)

        def prep(items):
            t = pre_txt(list(items)).tensors
            return tuple(torch.from_numpy(t[n]) for n in tower.input_names)

    @torch.no_grad()
    def encode(items: Sequence[str]) -> np.ndarray:
        was = tower.module.training
        tower.module.eval()
        out = [tower.module(*prep(items[i : i + batch_size])).float().numpy() for i in range(0, len(items), batch_size)]
        tower.module.train(was)
        return np.concatenate(out)

    return encode


def repo_encoder(model_dir: Path) -> Encode:
    """A repository model run as the build runs it (``Encoder`` on the local backend)."""
    m = Encoder(model_dir, LocalBackend.for_model(model_dir))
    if m.modality == "image":
        return lambda items: m.encode_images([Path(p) for p in items])
    return lambda items: m.encode_texts(list(items))


def encoders(model: str | Path, corpus_model: str | Path | None, query_modality: str,
             corpus_modality: str) -> tuple[Encode, Encode]:
    def one(spec: str | Path, modality: str) -> Encode:
        p = Path(str(spec))
        if (p / MANIFEST_NAME).is_file():
            return repo_encoder(p)
        loaded = load_model(spec)
        if modality not in loaded.towers:
            raise BadInput(f"{spec} ({loaded.family}) has no {modality} tower for {modality} inputs")
        return tower_encoder(loaded.towers[modality])

    q = one(model, query_modality)
    return q, (one(corpus_model, corpus_modality) if corpus_model
               else q if query_modality == corpus_modality else one(model, corpus_modality))


def evaluate(es: EvalSet, encode_query: Encode, encode_corpus: Encode, ks: Sequence[int] = (1, 10),
             relevance_level: float | None = None) -> dict[str, float]:
    q, d = encode_query(es.queries), encode_corpus(es.corpus)
    scores = q @ d.T
    if es.exclude_self:
        scores[np.arange(len(q)), es.exclude_self] = -np.inf
    return retrieval_metrics(scores, es.gains, ks, es.relevance_level if relevance_level is None else relevance_level)


def format_table(metrics: dict[str, float]) -> str:
    ks = sorted({int(k.split("@")[1]) for k in metrics})
    names = ["recall", "precision", "mrr", "map", "ndcg"]
    lines = ["metric     " + "".join(f"{'@' + str(k):>9}" for k in ks)]
    for n in names:
        lines.append(f"{n:<11}" + "".join(f"{metrics.get(f'{n}@{k}', float('nan')):>9.4f}" for k in ks))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import run_cli

    p = argparse.ArgumentParser(prog="mmsearch eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder, package:..., or a repository model folder")
    p.add_argument("--corpus-model", help="the other tower for two-tower repository models")
    p.add_argument("--queries", type=Path)
    p.add_argument("--corpus", type=Path)
    p.add_argument("--qrels", type=Path)
    p.add_argument("--api", help="evaluate a served configuration through this search API base URL instead of a model")
    p.add_argument("--scene", default="text2text", help="--api: the scene searched")
    p.add_argument("--force", default="", help="--api: layer=arm[,layer=arm] to evaluate (default: the user's assignment)")
    p.add_argument("--judged", type=Path, help="--api: JSONL {query, relevant: {id: grade} | [ids], tags}")
    p.add_argument("--relevance-level", type=float, default=1.0, help="grades >= this are relevant (trec_eval -l)")
    p.add_argument("--api-key", help="--api: the search API key, when keys are on")
    p.add_argument("--k", default="1,10", help="comma-separated cut-offs")
    p.add_argument("--out", type=Path, help="write the metrics as JSON here")
    args = p.parse_args(argv)

    def _go() -> None:
        try:
            ks = sorted({int(k) for k in args.k.split(",")})
        except ValueError as e:
            raise BadInput(f"--k must be comma-separated integers, got {args.k!r}") from e
        if not ks or ks[0] < 1:
            raise BadInput("--k values must be >= 1")
        if args.api:
            if not args.judged:
                raise BadInput("--api needs --judged (the judged query set)")
            from mmsearch.client.search_client import SearchClient
            from mmsearch.offline.eval_served import evaluate_served, load_judged, parse_force

            r = evaluate_served(SearchClient(args.api, api_key=args.api_key), args.scene, load_judged(args.judged),
                                [parse_force(args.force)], ks, args.relevance_level)[0]
            print(f"{args.scene} arms {r['arms']}: {r['queries']} queries, p50 {r['latency_ms']['p50']:.1f} ms")
            print(format_table(r["metrics"]))
            for tag, t in r["by_tag"].items():
                print(f"\n[{tag}] {t['queries']} queries\n{format_table(t['metrics'])}")
            if args.out:
                args.out.write_text(json.dumps(r, indent=2) + "\n")
            return
        if not (args.model and args.queries and args.corpus and args.qrels):
            raise BadInput("give --model, --queries, --corpus and --qrels (or --api with --judged)")
        es = load_evalset(args.queries, args.corpus, args.qrels)
        qe, de = encoders(args.model, args.corpus_model, es.query_modality, es.corpus_modality)
        m = evaluate(es, qe, de, ks, args.relevance_level)
        print(format_table(m))
        if args.out:
            args.out.write_text(json.dumps(m, indent=2) + "\n")

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
