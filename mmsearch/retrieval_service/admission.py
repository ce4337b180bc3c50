"""Admission control: a bounded number of searches in flight per process and a short queue; beyond
them a request is refused at once (429 with Retry-After), so offered load past saturation turns into
fast refusals instead of every client waiting longer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mmsearch.errors import Overloaded


def refused(message: str) -> Overloaded:
    """Admission control's 429 (the public error stays Overloaded), marked apart from a dependency's own rate limit."""
    e = Overloaded(message)
    e.admission = True  # type: ignore[attr-defined]
    return e


class Admission:
    def __init__(self, max_inflight: int, max_queue: int, queue_timeout_s: float):
        self.max_inflight, self.max_queue, self.queue_timeout_s = max_inflight, max_queue, queue_timeout_s
        self._cond = threading.Condition()
        self.inflight = 0
        self.waiting = 0
        self.rejected = 0

    def refuse_at_once(self) -> Overloaded | None:
        """The refusal a request would get now, without waiting, when every slot and queue place is
        taken (counted as rejected); None when it may try for a slot. The HTTP edge asks this before
        it parses a body, so a refusal under overload costs next to nothing."""
        with self._cond:
            if self.inflight < self.max_inflight or self.waiting < self.max_queue:
                return None
            self.rejected += 1
            return refused(f"busy: {self.inflight} searches in flight and {self.waiting} queued; retry shortly")

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``max_inflight`` slots for the body; Overloaded when the queue is full or
        no slot frees within ``queue_timeout_s``."""
        with self._cond:
            if self.inflight >= self.max_inflight:
                if self.waiting >= self.max_queue:
                    self.rejected += 1
                    raise refused(f"busy: {self.inflight} searches in flight and {self.waiting} queued; retry shortly")
                self.waiting += 1
                deadline = time.monotonic() + self.queue_timeout_s
                try:
                    while self.inflight >= self.max_inflight:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            self.rejected += 1
                            raise refused(f"busy: no search slot freed within {self.queue_timeout_s * 1000:.0f} ms; retry shortly")
                        self._cond.wait(left)
                finally:
                    self.waiting -= 1
            self.inflight += 1
        try:
            yield
        finally:
            with self._cond:
                self.inflight -= 1
                self._cond.notify()
