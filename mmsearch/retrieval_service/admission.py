"""Admission control: at most ``max_inflight`` searches in flight per process, and behind them a
bounded FIFO queue of ``max_queue`` waiting for a slot.

A request waits only as long as its deadline allows. On arrival, with every slot taken, its wait is
estimated from its place in the queue and the recent service time (an EWMA of how long a search
holds its slot): ``(queued ahead + 1) × service / max_inflight``. When the queue is full, or that
wait plus its own service time would run past its deadline, it is refused at once (Overloaded ->
429 / RESOURCE_EXHAUSTED), never after waiting; a queued request whose slot has not come by its
deadline less its service time gives up then. A refusal carries ``retry_after_s``, the estimated
time for the queue ahead of it to drain into slots (the Retry-After-Ms / Retry-After headers).

A freed slot is handed straight to the first waiter (FIFO: a newcomer never overtakes the queue),
and every way out of ``slot`` (an answer, an error, an exception while waiting) gives back what it
held, so no slot leaks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from mmsearch.errors import Overloaded

EWMA_ALPHA = 0.1  # the weight of each new service time in the running estimate
MIN_RETRY_AFTER_S = 0.01  # before any search has been timed, or when the estimate rounds to nothing


def refused(message: str, retry_after_s: float) -> Overloaded:
    """Admission control's 429 (the public error stays Overloaded), marked apart from a dependency's own rate limit."""
    e = Overloaded(message, retry_after_s=retry_after_s)
    e.admission = True  # type: ignore[attr-defined]
    return e


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.granted = False  # set (under the lock) when a freed slot is handed to this waiter


class Admission:
    def __init__(self, max_inflight: int, max_queue: int, service_s: float = 0.0):
        if max_inflight < 1 or max_queue < 0:
            raise ValueError("max_inflight >= 1 and max_queue >= 0")
        self.max_inflight, self.max_queue = max_inflight, max_queue
        self.service_s = service_s  # EWMA of the seconds a search holds its slot (0: none timed yet)
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self.inflight = 0
        self.rejected = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def estimated_wait_s(self, ahead: int) -> float:
        """How long a request with ``ahead`` others queued before it waits for a slot, every slot taken."""
        return (ahead + 1) * self.service_s / self.max_inflight

    def retry_after_s(self) -> float:
        """The queue's estimated drain time: what a refused caller is told to wait before trying again."""
        with self._lock:
            return max(MIN_RETRY_AFTER_S, self.estimated_wait_s(len(self._queue)))

    def _refusal(self, deadline: float | None, now: float) -> Overloaded | None:
        """Under the lock: the refusal for a request arriving now (counted), or None when it may take
        a free slot or a place in the queue."""
        if not self._queue and self.inflight < self.max_inflight:
            return None
        ahead = len(self._queue)
        wait = self.estimated_wait_s(ahead)
        if ahead >= self.max_queue:
            why = f"busy: {self.inflight} searches in flight and {ahead} queued"
        elif deadline is not None and now + wait + self.service_s > deadline:
            why = (f"busy: a slot is about {wait * 1000:.0f} ms away and a search takes about {self.service_s * 1000:.0f} ms, "
                   f"more than the {max(0.0, deadline - now) * 1000:.0f} ms left of the request's deadline")
        else:
            return None
        self.rejected += 1
        return refused(f"{why}; retry shortly", max(MIN_RETRY_AFTER_S, wait))

    def refuse_at_once(self, deadline: float | None = None) -> Overloaded | None:
        """The refusal a request would get now, without waiting: the queue is full or its deadline
        (time.monotonic()) leaves no room for the estimated wait (counted as rejected); None when it
        may go on to ``slot``. The HTTP edge asks this before it parses a body, so a refusal under
        overload costs next to nothing."""
        now = time.monotonic()
        with self._lock:
            return self._refusal(deadline, now)

    def _hand_on(self) -> None:
        """Under the lock: a slot given back goes to the first waiter, or is freed when none waits."""
        if self._queue:
            w = self._queue.popleft()
            w.granted = True
            w.event.set()
        else:
            self.inflight -= 1

    def acquire(self, deadline: float | None = None) -> None:
        """Take a slot, waiting in the queue for one only as long as ``deadline`` allows; Overloaded
        at once when the queue is full or the estimated wait does not fit, or when no slot came in time.
        The caller gives it back with ``release``."""
        now = time.monotonic()
        with self._lock:
            if not self._queue and self.inflight < self.max_inflight:
                self.inflight += 1
                return
            refusal = self._refusal(deadline, now)
            if refusal is not None:
                raise refusal
            w = _Waiter()
            self._queue.append(w)
            give_up = None if deadline is None else deadline - self.service_s  # a slot later than this is no use
        try:
            w.event.wait(None if give_up is None else max(0.0, give_up - time.monotonic()))
        except BaseException:  # interrupted while queued: leave the queue, or pass on a slot already handed over
            with self._lock:
                if w.granted:
                    self._hand_on()
                else:
                    self._queue.remove(w)
            raise
        with self._lock:
            if w.granted:
                return
            self._queue.remove(w)
            self.rejected += 1
            retry = max(MIN_RETRY_AFTER_S, self.estimated_wait_s(len(self._queue)))
        raise refused("busy: no search slot freed within the request's deadline; retry shortly", retry)

    def release(self, held_s: float | None = None) -> None:
        """Give a slot back (to the first waiter, if any); ``held_s``, how long it was held, feeds the
        service-time estimate."""
        with self._lock:
            if held_s is not None:
                self.service_s = held_s if self.service_s <= 0 else self.service_s + EWMA_ALPHA * (held_s - self.service_s)
            self._hand_on()

    @contextmanager
    def slot(self, deadline: float | None = None) -> Iterator[None]:
        """Hold one of the ``max_inflight`` slots for the body (see ``acquire``)."""
        self.acquire(deadline)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.release(time.monotonic() - t0)
