"""End-to-end search latency/QPS through the whole stack, each stage's share, and the overhead ratio.

    .venv/bin/python bench/search.py [--texts 20000] [--seconds 8] [--out bench/results/search.json]

One run: builds a text index of WordNet glosses (MiniLM; `--texts 82115` is all of them) and an
image index of Tux Paint stamps (dual encoder), starts the stack as separate processes (secantusdb,
Milvus standalone, Triton, preprocess, retrieval) on free ports, and drives POST /v1/search
closed-loop at concurrency 1, 8 and 32 for text2text and text2image. The ratio compares end-to-end
p50 with the irreducible work of the same query in one process: ONNX Runtime encode + the same
top-100 search sent straight to the same Milvus server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.common import closed_loop, encode_and_search_ms, export_bench_models
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.config import load_config
from mmsearch.launcher.stack import Stack, with_free_ports
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.offline.datasets import stamps as S
from mmsearch.offline.datasets.wordnet import noun_synsets
from mmsearch.offline.indexing.build import BuildOptions, build_index

EXPERIMENTS = """
scenes:
  text2text:
    defaults: {embed_model: minilm, index: texts, recall_top_k: 100, top_k: 20}
  text2image:
    defaults: {embed_model: dual_text, index: images, recall_top_k: 100, top_k: 20}
  image2image:
    defaults: {embed_model: dual_image, index: images, top_k: 20}
"""


FILTER_CATEGORY = "plant"  # 9.8% of WordNet's 82,115 noun glosses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search.json")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    syn = noun_synsets(args.cache)[: args.texts]
    stamps, stamp_root = S.stamps(args.cache), S.root(args.cache)
    result: dict = {"texts": len(syn), "images": len(stamps), "seconds_per_level": args.seconds, "scenes": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = export_bench_models(tmp)
        (tmp / "experiments.yaml").write_text(EXPERIMENTS)
        with open(tmp / "texts.jsonl", "w") as f:
            for s in syn:
                f.write(json.dumps({"id": s.offset, "text": s.gloss, "words": list(s.words), "category": s.category}) + "\n")
        with open(tmp / "images.jsonl", "w") as f:
            for s in stamps:
                f.write(json.dumps({"id": s.id, "image": s.image, "text": s.caption}) + "\n")
        cfg = with_free_ports(load_config(environ={}, overrides={
            "data_dir": str(tmp / "data"), "model_repository": str(repo), "experiments_file": str(tmp / "experiments.yaml"),
            "retrieval": {"query_log": True}}))
        with Stack(cfg) as stack:
            stack.start(("mongo", "milvus"))
            common = dict(repo=repo, data_dir=tmp / "data", milvus_uri=stack.config.milvus.uri,
                          mongo_uri=stack.config.mongo.uri, progress=False)
            t = build_index(BuildOptions(index="texts", docs=tmp / "texts.jsonl", model="minilm", fields={"category": "str"}, **common))
            build_index(BuildOptions(index="images", docs=tmp / "images.jsonl", model="dual_image", image_root=stamp_root,
                                     batch_size=32, **common))
            # irreducible work, in one process: encode + the same search on the same Milvus server, no services between
            direct = VectorStore(stack.config.milvus.uri)
            coll = collection_name("texts", t.build)
            all_syn = noun_synsets(args.cache)
            held_out = all_syn[args.texts : args.texts + 200] or all_syn[:200]  # every gloss indexed: reuse the first words
            queries = [s.words[0] for s in held_out]
            enc = LocalModel(repo / "minilm", threads=1)
            result["irreducible_p50_ms"] = encode_and_search_ms(enc, direct, coll, queries)
            direct.close()

            stack.start(("triton", "preprocess", "retrieval"))
            url = f"http://127.0.0.1:{stack.config.retrieval.http_port}"
            scenes = {"text2text": [{"scene": "text2text", "query": {"text": q}, "user_id": f"u{i}"} for i, q in enumerate(queries)],
                      "text2image": [{"scene": "text2image", "query": {"text": s.caption}, "user_id": f"u{i}"} for i, s in enumerate(stamps[:200])]}
            for scene, bodies in scenes.items():
                closed_loop(url, bodies, 2, 2.0)  # warm-up
                result["scenes"][scene] = {str(c): closed_loop(url, bodies, c, args.seconds) for c in levels}
            # a metadata filter keeping ~10% of the glosses (WordNet category "plant"), inside the vector search
            share = sum(s.category == FILTER_CATEGORY for s in syn) / max(1, len(syn))
            filtered = [{**b, "filter": {"category": FILTER_CATEGORY}} for b in scenes["text2text"]]
            plain = closed_loop(url, scenes["text2text"], 1, args.seconds)  # measured next to it, in the same minute
            result["filter"] = {"category": FILTER_CATEGORY, "share": share, "unfiltered": plain,
                                "filtered": closed_loop(url, filtered, 1, args.seconds)}
            result["filter"]["ratio_p50"] = result["filter"]["filtered"]["p50_ms"] / plain["p50_ms"]
    t2t = result["scenes"]["text2text"][str(levels[0])]
    result["ratio_p50_to_irreducible"] = t2t["p50_ms"] / result["irreducible_p50_ms"]["total"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    def row(scene: str) -> str:
        return " ".join(f"c{c}={v['qps']:.0f}qps/p50 {v['p50_ms']:.1f}/p99 {v['p99_ms']:.1f}ms"
                        + (f"/429s {v['refused_429']} in p99 {v['refused_p99_ms']:.1f}ms" if v["refused_429"] else "")
                        for c, v in result["scenes"][scene].items())

    shares = " ".join(f"{k} {v:.0%}" for k, v in t2t["stage_share"].items())
    errs = sum(sum(v["errors"].values()) for s in result["scenes"].values() for v in s.values())
    print(f"search: text2text on {len(syn)} docs [{row('text2text')}] | text2image on {len(stamps)} images [{row('text2image')}] | "
          f"c1 stage shares: {shares} | irreducible p50 {result['irreducible_p50_ms']['total']:.1f} ms (encode "
          f"{result['irreducible_p50_ms']['encode']:.1f} + search {result['irreducible_p50_ms']['search']:.1f}) -> ratio "
          f"{result['ratio_p50_to_irreducible']:.2f} | filter category={FILTER_CATEGORY} ({result['filter']['share']:.1%} kept) "
          f"c1 p50 {result['filter']['filtered']['p50_ms']:.1f} vs {result['filter']['unfiltered']['p50_ms']:.1f} ms unfiltered -> "
          f"{result['filter']['ratio_p50']:.2f}x | errors {errs} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
