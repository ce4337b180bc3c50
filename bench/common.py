"""Helpers shared by the benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def run_workers(worker: Callable[[int], None], n: int, extra: list[Callable[[], None]] = ()) -> float:
    """Run worker(0..n-1) (plus any extra callables) in threads until all return; the wall time in seconds."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)] + [threading.Thread(target=f) for f in extra]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0
