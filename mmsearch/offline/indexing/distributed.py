"""`build-index --engine ray`: the index build with its encoding spread over Ray Data workers.

Same build, same record, other hands (docs/architecture.md, "Distributed builds"):

- the driver (this process) runs the reader's rules (``build.validate_lines``: parse, ids, duplicates, stored
  and lexical fields) over the lines after the checkpoint, and cuts them into blocks of ``BLOCK_BATCHES``
  batches of accepted documents: a block is a byte range of the documents file, its line numbers, and which
  of its lines to encode. Rejects stay with the driver;
- ``workers`` Ray Data actors (``BlockEncoder``), each holding one Encoder created once (ONNX Runtime on the
  worker's GPU when Ray gave it one, else its CPUs; or Triton with ``--serving-url``) and its own store
  clients, read their block from the file, encode it, and upsert it into Milvus and MongoDB, in parallel;
- the driver takes the blocks back in file order, writes their BM25 terms (one tantivy writer) and rejects,
  and moves the build record's checkpoint (``build.Checkpoints``: terms committed, lines done), so
  ``--resume`` restarts after the last block that every store holds; a resumed block's ids already in Milvus
  are not encoded again.

The documents file (and, for images, the image root) must be readable at the same path on every worker.
Ray is imported here only: the ``distributed`` extra (``pip install 'mmsearch[distributed]'``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mmsearch.api.documents import titled_text
from mmsearch.clients.documents import BuildWriter, DocumentStore
from mmsearch.clients.lexical import ID_FIELD, LexicalWriter
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.errors import BadInput, Internal, MMSearchError
from mmsearch.offline.indexing.build import IMAGE_BATCH, TEXT_BATCH, BuildOptions, Checkpoints, fail_on_rejects, validate_lines
from mmsearch.offline.indexing.reader import Doc, ReaderState, Reject, count_lines, parse_line, read_image_bytes, read_lines_at

log = logging.getLogger("mmsearch.index")
EXTRA = "distributed"
BLOCK_BATCHES = 4  # batches of accepted documents per block (1024 texts, 128 images): the unit of work and of --resume


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise BadInput(f"--engine ray needs Ray Data, which is not installed: pip install 'mmsearch[{EXTRA}]' "
                       f"(the {EXTRA!r} extra; versions in constraints.txt)") from e
    return ray


@dataclass
class Block:
    no: int
    start: int  # byte offsets of its lines in the documents file
    end: int
    first_line: int
    last_line: int
    lines: int
    accepted: list[int] = field(default_factory=list)  # line numbers of the documents to encode
    rejects: list[Reject] = field(default_factory=list)  # the reader's (kept by the driver, written when the block is done)

    def task(self) -> str:
        return json.dumps({"no": self.no, "start": self.start, "end": self.end, "first_line": self.first_line,
                           "accepted": self.accepted})


def plan_blocks(opts: BuildOptions, field_name: str, start_line: int, block_docs: int) -> Iterator[Block]:
    """The lines after ``start_line`` as blocks of up to ``block_docs`` accepted documents, by the reader's rules."""
    b: Block | None = None
    no = 0
    for n, start, end, p in validate_lines(opts, field_name, start_line):
        if b is None:
            b = Block(no, start, end, n, n, 0)
            no += 1
        b.end, b.last_line, b.lines = end, n, b.lines + 1
        if isinstance(p, Doc):
            b.accepted.append(n)
        elif isinstance(p, Reject):
            b.rejects.append(p)
        if len(b.accepted) >= block_docs:
            fail_on_rejects(opts, b.rejects)
            yield b
            b = None
    if b is not None:
        fail_on_rejects(opts, b.rejects)
        yield b


def worker_providers(gpu_ids: list[Any]) -> list[str] | None:
    """ONNX Runtime's providers for a worker: CUDA first when Ray gave it a GPU and this onnxruntime has CUDA."""
    if not gpu_ids:
        return None
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        log.warning("a GPU was given to this worker but onnxruntime has no CUDAExecutionProvider: encoding on the CPU")
        return None
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class BlockEncoder:
    """One Ray Data worker: an Encoder and store clients, created once; encodes and writes blocks."""

    def __init__(self, cfg: dict[str, Any]):
        from mmsearch.encoders.encoder import open_encoder

        gpu_ids: list[Any] = []
        if cfg["gpus"]:
            import ray

            gpu_ids = list(ray.get_gpu_ids())
        self.cfg = cfg
        self.docs = Path(cfg["docs"])
        self.enc = open_encoder(cfg["model_dir"], cfg["serving_url"], cfg["threads"],
                                providers=None if cfg["serving_url"] else worker_providers(gpu_ids))
        self.field = "image" if self.enc.modality == "image" else "text"
        self.vs = VectorStore(cfg["milvus_uri"])
        self.ds = DocumentStore(cfg["mongo_uri"], cfg["database"])
        self.documents = BuildWriter(self.ds, cfg["index"])  # as the single-process writer's

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"result": np.array([self.block(json.loads(str(t))) for t in batch["task"]], dtype=object)}

    def block(self, task: dict[str, Any]) -> str:
        cfg = self.cfg
        accepted = set(task["accepted"])
        state = ReaderState()
        docs: list[Doc] = []
        for n, raw in read_lines_at(self.docs, task["start"], task["end"], task["first_line"]):
            if n in accepted:
                p = parse_line(n, raw, self.field, state)
                if not isinstance(p, Doc):
                    raise Internal(f"{self.docs}:{n} reads differently on this worker: is the file the same everywhere?")
                docs.append(p)
        if len(docs) != len(accepted):
            raise Internal(f"{self.docs}: block {task['no']} has {len(docs)} of its {len(accepted)} documents on this worker")
        already: list[Doc] = []
        if cfg["resume"] and docs:  # written before an interruption, after the checkpoint: not encoded again
            done = self.vs.existing(cfg["collection"], [d.id for d in docs])
            already = [d for d in docs if d.id in done]
            docs = [d for d in docs if d.id not in done]
        rejects: list[Reject] = []
        if self.field == "image":
            loaded: list[Doc] = []
            for d in docs:
                try:
                    data = read_image_bytes(d.source, Path(cfg["image_root"]), self.enc.render_edge)
                    d.payload = self.enc.preprocess_image(data, f"line {d.line} image {d.source}")
                    loaded.append(d)
                except MMSearchError as e:
                    rejects.append(Reject(d.line, e.message))
            docs = loaded
        else:
            for d in docs:
                d.payload = titled_text(d.doc, d.source, cfg.get("embed_title"))
        if rejects and cfg["on_error"] == "fail":
            r = min(rejects, key=lambda r: r.line)
            return json.dumps({"no": task["no"], "fail": f"{self.docs}:{r.line}: {r.reason} (--on-error fail)"})
        if docs:
            step = cfg["batch_size"]
            vectors = np.concatenate([self.enc.encode([d.payload for d in docs[i : i + step]]) for i in range(0, len(docs), step)])
            if vectors.shape != (len(docs), self.enc.dim):
                raise Internal(f"encoder returned {vectors.shape}, expected ({len(docs)}, {self.enc.dim})")
            self.documents.write([d.doc for d in docs])
            fields = cfg["fields"]
            meta = [{k: d.doc[k] for k in fields} for d in docs] if fields else None
            keep = cfg["keep_docs"]
            self.vs.upsert(cfg["collection"], [d.id for d in docs], vectors, meta, [d.doc for d in docs] if keep else None, keep)
        lexical = [{ID_FIELD: d.id, **{f: d.doc[f] for f in cfg["lexical"] if f in d.doc}} for d in docs + already] if cfg["lexical"] else []
        return json.dumps({"no": task["no"], "indexed": len(docs) + len(already), "lexical": lexical,
                           "rejects": [[r.line, r.reason, r.raw] for r in rejects]})


def _worker_error(e: BaseException) -> BaseException:
    """A worker's failure as the driver raises it: the MMSearchError it raised (Ray wraps it), else Internal."""
    seen: BaseException | None = e
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, MMSearchError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return Internal(f"distributed build: a worker failed: {e}")


def run_distributed(opts: BuildOptions, model_dir: Path, record: dict[str, Any], vs: VectorStore, ds: DocumentStore,
                    lexical: LexicalWriter | None) -> None:
    """Encode and write the lines after ``record['lines_done']`` with ``opts.workers`` Ray Data workers; the
    checkpoint moves as blocks complete in file order. The caller opened the record and finishes the build."""
    ray = import_ray()
    image = record.get("modality") == "image"
    batch_size = opts.batch_size or (IMAGE_BATCH if image else TEXT_BATCH)
    start_line = int(record["lines_done"])
    blocks = list(plan_blocks(opts, "image" if image else "text", start_line, batch_size * BLOCK_BATCHES))
    threads = max(1, opts.threads)  # ONNX Runtime threads per worker, and the CPUs Ray reserves for it
    owns = not ray.is_initialized()
    if owns:
        local = opts.ray_address is None
        ray.init(address=opts.ray_address, num_cpus=opts.workers * threads if local else None, num_gpus=None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0)) if not opts.serving_url else 0.0
        per_worker_gpu = min(1.0, gpus / opts.workers) if gpus else 0.0
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # blocks come back in file order: the checkpoint follows them
        ctx.enable_progress_bars = False
        cfg = {"docs": str(opts.docs.resolve()), "model_dir": str(model_dir.resolve()), "serving_url": opts.serving_url,
               "embed_title": opts.embed_title,
               "threads": threads, "gpus": per_worker_gpu > 0, "milvus_uri": vs.uri, "mongo_uri": ds.uri,
               "database": opts.database, "index": opts.index, "collection": collection_name(opts.index, record["build"]),
               "fields": dict(opts.fields), "lexical": list(opts.lexical), "keep_docs": int(record.get("stored_docs") or 0),
               "image_root": str(opts.image_root.resolve()), "on_error": opts.on_error, "batch_size": batch_size,
               "resume": opts.resume}
        log.info("distributed build %s: %d blocks after line %d on %d workers (%s GPU each)", record["build"], len(blocks),
                 start_line, opts.workers, per_worker_gpu or "no")
        by_no = {b.no: b for b in blocks}
        bar = tqdm(total=count_lines(opts.docs), initial=start_line, unit="doc", desc=f"build {opts.index} (ray)",
                   disable=not opts.progress, dynamic_ncols=True, smoothing=0.1)
        assert opts.rejects is not None
        opts.rejects.parent.mkdir(parents=True, exist_ok=True)
        with open(opts.rejects, "a", encoding="utf-8") as rejects_fh, bar:
            progress = Checkpoints(opts, record, ds, lexical, rejects_fh)
            if blocks:
                out = ray.data.from_items([{"task": b.task()} for b in blocks], override_num_blocks=len(blocks)).map_batches(
                    BlockEncoder, fn_constructor_kwargs={"cfg": cfg}, batch_size=1, batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=opts.workers), num_cpus=threads, num_gpus=per_worker_gpu or None)
                try:
                    for row in out.iter_rows():
                        res = json.loads(str(row["result"]))
                        if "fail" in res:
                            raise BadInput(res["fail"])
                        b = by_no.pop(res["no"])
                        if lexical is not None and res["lexical"]:
                            lexical.upsert(res["lexical"])
                        rejects = sorted(b.rejects + [Reject(line, reason, raw) for line, reason, raw in res["rejects"]],
                                         key=lambda r: r.line)
                        progress.add(res["indexed"], rejects, b.last_line)
                        bar.update(b.lines)
                except MMSearchError:
                    raise
                except Exception as e:
                    raise _worker_error(e) from e
                if by_no:
                    raise Internal(f"distributed build: {len(by_no)} blocks never came back")
            progress.checkpoint()
    finally:
        if owns:
            ray.shutdown()
