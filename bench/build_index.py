"""build_index end to end vs the raw ONNX Runtime encode rate of the same model, in one run.

    .venv/bin/python bench/build_index.py [--texts 20000] [--images 785] [--out bench/results/build_index.json]

Texts: WordNet noun glosses (Debian wordnet-base) with all-MiniLM-L6-v2. Images: Tux Paint stamps
(Debian tuxpaint-stamps-default) with the composed dual encoder's EfficientNet-Lite0 tower. Stores
are the embedded defaults (Milvus Lite file + a secantusdb server). The raw rate is the encoder
alone on the same inputs and batch size (images: decode + preprocess + ONNX, and ONNX alone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import export_bench_models
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.offline.datasets import stamps as S
from mmsearch.offline.datasets.wordnet import noun_synsets
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.runtime.supervisor import descendants, rss_kb


class PeakRSS:
    """Peak resident memory of this process and, separately, of its children (the secantusdb server)."""

    def __init__(self):
        self.self_kb = self.children_kb = 0
        self.start_kb = rss_kb(os.getpid())
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            self.self_kb = max(self.self_kb, rss_kb(me))
            self.children_kb = max(self.children_kb, sum(rss_kb(p) for p in descendants(me)))
            self._stop.wait(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def rate(fn, items: list, batch: int) -> float:
    fn(items[:batch])
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        fn(items[i : i + batch])
    return len(items) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--images", type=int, default=785)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "build_index.json")
    args = ap.parse_args(argv)
    syn = noun_synsets(args.cache)[: args.texts]
    stamps = S.stamps(args.cache)[: args.images]
    stamp_root = S.root(args.cache)
    result: dict = {"texts": len(syn), "images": len(stamps), "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = export_bench_models(tmp)
        with open(tmp / "texts.jsonl", "w") as f:
            for s in syn:
                f.write(json.dumps({"id": s.offset, "text": s.gloss, "words": list(s.words)}) + "\n")
        with open(tmp / "images.jsonl", "w") as f:
            for s in stamps:
                f.write(json.dumps({"id": s.id, "image": s.image, "text": s.caption, "category": s.category}) + "\n")

        common = dict(repo=repo, data_dir=tmp / "data", progress=True)
        with PeakRSS() as rss:
            t = build_index(BuildOptions(index="texts", docs=tmp / "texts.jsonl", model="minilm", batch_size=args.batch_size, **common))
            i = build_index(BuildOptions(index="images", docs=tmp / "images.jsonl", model="dual_image", image_root=stamp_root,
                                         batch_size=32, **common))
        text_model = LocalModel(repo / "minilm")
        glosses = [s.gloss for s in syn]
        raw_text = rate(lambda b: text_model.encode_texts(b, batch_size=len(b)), glosses, args.batch_size)
        image_model = LocalModel(repo / "dual_image")
        blobs = [(stamp_root / s.image).read_bytes() for s in stamps]
        pixels = [image_model.image.one(b) for b in blobs]
        raw_image_onnx = rate(lambda b: image_model.run({"pixel_values": np.stack(b)}), pixels, 32)
        raw_image_full = rate(lambda b: image_model.encode_images(b, batch_size=len(b)), blobs, 32)
        del pixels

    peak_self, peak_children, start = rss.self_kb / 1024, rss.children_kb / 1024, rss.start_kb / 1024
    result.update({
        "text": {"raw_encode_docs_per_s": raw_text, "end_to_end_docs_per_s": t.docs_per_s, "ratio": t.docs_per_s / raw_text,
                 "indexed": t.indexed, "seconds": t.seconds},
        "image": {"raw_encode_onnx_only_per_s": raw_image_onnx, "raw_encode_with_preprocess_per_s": raw_image_full,
                  "end_to_end_docs_per_s": i.docs_per_s, "ratio_vs_with_preprocess": i.docs_per_s / raw_image_full,
                  "ratio_vs_onnx_only": i.docs_per_s / raw_image_onnx, "indexed": i.indexed, "seconds": i.seconds},
        "peak_rss_mb": {"build_process": peak_self, "at_build_start": start, "secantusdb_child": peak_children},
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    tx, im = result["text"], result["image"]
    print(f"build_index: texts {t.indexed} WordNet glosses end-to-end {tx['end_to_end_docs_per_s']:.0f} docs/s vs raw encode "
          f"{tx['raw_encode_docs_per_s']:.0f}/s (ratio {tx['ratio']:.2f}) | images {i.indexed} stamps {im['end_to_end_docs_per_s']:.1f}/s "
          f"vs raw decode+preprocess+encode {im['raw_encode_with_preprocess_per_s']:.1f}/s (ratio {im['ratio_vs_with_preprocess']:.2f}; "
          f"ONNX alone {im['raw_encode_onnx_only_per_s']:.1f}/s) | peak RSS during the builds {peak_self:.0f} MB "
          f"(process held {start:.0f} MB before them, after exporting the models; secantusdb {peak_children:.0f} MB) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
