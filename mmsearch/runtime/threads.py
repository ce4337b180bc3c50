"""A serving process's numpy runs its BLAS on the calling thread.

A server's numpy work is small and per request (the learned ranker's 200 candidates x 57 features times its
weights). OpenBLAS splits even that across its own threads, one per core, and on a host whose cores are busy
with the other servers the caller waits, holding the interpreter lock, until its helper is scheduled. On the
2-core demo host, loaded, that product took p50 4.0 / p99 8.1 ms with OpenBLAS's 2 threads against 0.022 /
0.056 ms on one (docs/architecture.md, "BLAS on the calling thread"; bench/blas_threads.py). A server's parallelism is its requests, not its BLAS.
"""

from __future__ import annotations

from typing import Any


def serial_blas() -> list[dict[str, Any]]:
    """Limit the BLAS libraries loaded in this process (numpy's OpenBLAS: numpy is imported first) to one
    thread; the libraries as they are now, for a log line or a test. A library loaded later keeps its own
    threads (scipy's, imported by the A/B statistics off the search path)."""
    import numpy  # noqa: F401  (its BLAS must be loaded for the limit to reach it)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]
