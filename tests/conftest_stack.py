"""The whole local stack for integration tests (session scope): Triton, the preprocess service, a
Milvus Lite server, secantusdb, the Consul stand-in and the retrieval service, over tiny models."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from consul_standin import ConsulStandIn
from PIL import Image

from mmsearch.config import load_config
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.preprocess_service.server import create_server as create_preprocess
from mmsearch.retrieval_service.server import create_server as create_retrieval
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import wait_until
from mmsearch.serving.triton import TritonOptions, start_triton

EXPERIMENTS = """
scenes:
  text2text:
    layers:
      - name: rerank
        salt: rr-1
        arms:
          - {name: none, traffic: 50, rerank: none}
          - {name: ce, traffic: 50, rerank: cross_encoder, rerank_model: rerank, rerank_top_n: 20}
      - name: recall
        salt: rc-1
        arms:
          - {name: dense, traffic: 100}
          - name: hybrid
            traffic: 0
            sources: [{name: vec, kind: dense, recall_top_k: 20}, {name: words, kind: bm25, recall_top_k: 20, weight: 2}]
    defaults: {embed_model: tiny, index: texts, recall_top_k: 50, top_k: 10}
  text2image:
    layers:
      - name: model
        salt: m-1
        arms:
          - {name: base, traffic: 100, embed_model: clip_text, index: images}
          - {name: alt, traffic: 0, embed_model: clip_text, index: images}
    defaults: {recall_top_k: 20, top_k: 5}
  image2image:
    defaults: {embed_model: clip_image, index: images, top_k: 5}
"""


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="64pt" height="48pt"><rect width="64" height="48" fill="#fc0"/>'
       '<circle cx="32" cy="24" r="12" fill="#036"/></svg>')


def image_bytes(i: int) -> bytes:
    arr = (np.random.default_rng(100 + i).random((48, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, tiny_text, tiny_cross, clip_export):
    from mmsearch.offline.export import export_model

    base = tmp_path_factory.mktemp("stack")
    repo = base / "repo"
    export_model(tiny_text, repo, "tiny")
    export_model(tiny_cross, repo, "rerank")
    for name in ("clip_text", "clip_image"):
        shutil.copytree(clip_export[name], repo / name)
    docs = base / "texts.jsonl"
    rows = [{"id": f"t{i}", "text": f"text document {i} about subject {i % 9}", "n": i, "subject": i % 9,
             "lang": "en" if i % 2 else "fr"} for i in range(300)]
    rows.append({"id": "xss", "title": "<b>bold</b>", "text": "<script>alert(1)</script> hostile document", "subject": 0, "lang": 'e"n'})
    docs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    imgs = base / "images"
    imgs.mkdir()
    lines = []
    for i in range(30):
        (imgs / f"{i}.png").write_bytes(image_bytes(i))
        lines.append(json.dumps({"id": f"img{i}", "image": f"{i}.png", "caption": f"picture {i}"}))
    (imgs / "drawing.svg").write_text(SVG)  # rasterised by the build like the stamps' SVGs
    lines.append(json.dumps({"id": "svg0", "image": "drawing.svg", "caption": "a drawing"}))
    (base / "images.jsonl").write_text("\n".join(lines) + "\n")

    servers = []
    try:
        mongo = SecantusServer(base / "mongo")
        servers.append(mongo)
        milvus = MilvusServer(base / "milvus")
        servers.append(milvus)
        common = dict(repo=repo, data_dir=base / "data", milvus_uri=milvus.uri, mongo_uri=mongo.uri, progress=False)
        build_index(BuildOptions(index="texts", docs=docs, model="tiny", fields={"subject": "int", "lang": "str"},
                                 lexical=["title", "text"], **common))
        build_index(BuildOptions(index="images", docs=base / "images.jsonl", model="clip_image", image_root=imgs, **common))
        triton = start_triton(TritonOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0, poll_s=1.0))
        servers.append(triton)
        consul = ConsulStandIn()
        consul.put("mmsearch/experiments", EXPERIMENTS)
        cfg = load_config(environ={}, overrides={
            "model_repository": str(repo), "data_dir": str(base / "data"), "repository_poll_s": 1.0,
            "serving": {"grpc_port": triton.opts.grpc_port, "metrics_port": triton.opts.metrics_port},
            "milvus": {"uri": milvus.uri}, "mongo": {"uri": mongo.uri}, "consul": {"addr": consul.addr},
            # query_log_flush_s 0: each entry written at once, so a test reads the log right after its searches
            # (the 0.5 s batching has its own unit tests)
            "retrieval": {"request_timeout_s": 10, "stage_timeout_s": 5, "query_log_flush_s": 0},
        })
        pre = create_preprocess(cfg, "127.0.0.1:0")  # binds a free port itself (and one for /metrics)
        cfg = cfg.model_copy(update={"preprocess": cfg.preprocess.model_copy(
            update={"port": pre.port, "metrics_port": pre.metrics.port if pre.metrics else 0})})  # (restarts rebind these)
        retrieval = create_retrieval(cfg, "127.0.0.1:0", "127.0.0.1:0")
        assert wait_until(lambda: retrieval.service.experiments.ready(), 10)
        state = {"cfg": cfg, "retrieval": retrieval, "consul": consul, "pre": pre, "images": imgs, "mongo": mongo,
                 "milvus": milvus, "triton": triton, "url": f"http://127.0.0.1:{retrieval.http_port}", "repo": repo,
                 "base": base, "servers": servers}
        yield state
        pre, consul = state["pre"], state["consul"]
        retrieval.stop()
        pre.stop(0)
        consul.stop()
    finally:
        for s in reversed(servers):
            s.stop()


