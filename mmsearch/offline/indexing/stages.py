"""Three overlapping stages for bulk work whose middle stage is the encoder: read in a thread, encode in the
calling thread (ONNX Runtime releases the GIL while it computes), write in a thread. Run one after another,
the stages of a reindex add up (read a page, encode it, write it: 103 docs/s on the demo); overlapped, the
slowest one sets the pace. Queues are bounded, so memory stays bounded whatever the input size.

build-index's own pipeline (indexing/build.py) predates this and keeps its reader's resume and reject
handling; new bulk paths use this one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

A = TypeVar("A")
B = TypeVar("B")
_END = object()


class _Stage(Generic[A]):
    def __init__(self, depth: int):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def put(self, item: object) -> bool:
        """False once the run is stopping (the item is dropped)."""
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> object:
        while True:
            try:
                return self.q.get(timeout=0.2)
            except queue.Empty:
                if self.stop.is_set():
                    return _END


def pipelined(source: Iterable[A], work: Callable[[A], B], sink: Callable[[B], None], depth: int = 2) -> None:
    """``sink(work(item))`` for each item of ``source``, in order, the three overlapped. The first error, in any
    stage, stops the others and is raised here; what the sink had done before stays done."""
    read, write = _Stage[A](depth), _Stage[B](depth)
    state: list[BaseException] = []

    def fail(e: BaseException) -> None:
        if not state:
            state.append(e)
        read.stop.set()
        write.stop.set()

    def reader() -> None:
        try:
            for item in source:
                if not read.put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - raised in the calling thread
            fail(e)
        finally:
            read.put(_END)

    def writer() -> None:
        try:
            while (item := write.get()) is not _END and not state:
                sink(item)  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - raised in the calling thread
            fail(e)

    threads = [threading.Thread(target=reader, name="read", daemon=True), threading.Thread(target=writer, name="write", daemon=True)]
    for t in threads:
        t.start()
    try:
        while not state and (item := read.get()) is not _END:
            if not write.put(work(item)):  # type: ignore[arg-type]
                break
        write.put(_END)  # the writer drains what is queued, then ends
        threads[1].join()
    except BaseException as e:
        fail(e)
        raise
    finally:
        read.stop.set()
        write.stop.set()
        for t in threads:
            t.join(timeout=30)
    if state:
        raise state[0]
