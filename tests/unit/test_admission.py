"""Admission control: at most max_inflight searches at once, a bounded FIFO queue that a request
joins only when its deadline allows the estimated wait, fast refusals with a Retry-After beyond it."""

from __future__ import annotations

import threading
import time

import pytest

from mmsearch.errors import Overloaded, retry_after_from, retry_after_headers
from mmsearch.retrieval_service import admission as A
from mmsearch.retrieval_service.admission import Admission
from mmsearch.runtime.net import wait_until


class Holder:
    """A thread that takes a slot (waiting in the queue if it must) and keeps it until released."""

    def __init__(self, adm: Admission, name: str, order: list[str], deadline: float | None = None) -> None:
        self.adm, self.name, self.order, self.deadline = adm, name, order, deadline
        self.entered, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.adm.slot(self.deadline):
                self.order.append(self.name)
                self.entered.set()
                self.release.wait(5)
        except BaseException as e:  # (recorded for the test to look at)
            self.error = e

    def done(self) -> None:
        self.release.set()
        self.thread.join(5)


def queued(adm: Admission, n: int) -> bool:
    return wait_until(lambda: adm.waiting == n, 5, 0.002)


def test_the_queue_is_bounded_and_beyond_it_a_request_is_refused_at_once():
    adm = Admission(max_inflight=1, max_queue=2)
    order: list[str] = []
    first = Holder(adm, "first", order)
    assert first.entered.wait(5)
    waiters = [Holder(adm, "w1", order), Holder(adm, "w2", order)]
    assert queued(adm, 2)
    t0 = time.perf_counter()
    with pytest.raises(Overloaded, match="1 searches in flight and 2 queued") as refused, adm.slot():
        pass
    assert time.perf_counter() - t0 < 0.01  # refused without waiting
    assert refused.value.retry_after_s is not None and getattr(refused.value, "admission", False)
    assert adm.refuse_at_once() is not None  # the HTTP door says the same, without a body read
    assert adm.rejected == 2 and adm.inflight == 1 and adm.waiting == 2
    for h in (first, *waiters):
        h.done()
    assert order == ["first", "w1", "w2"] and adm.inflight == 0 and adm.waiting == 0
    assert all(h.error is None for h in (first, *waiters))


def test_waiters_are_served_first_in_first_out_and_a_newcomer_never_overtakes_them():
    adm = Admission(max_inflight=1, max_queue=8)
    order: list[str] = []
    first = Holder(adm, "first", order)
    assert first.entered.wait(5)
    waiters = []
    for i in range(5):  # each joins the queue before the next arrives
        waiters.append(Holder(adm, f"w{i}", order))
        assert queued(adm, i + 1)
    first.release.set()
    assert waiters[0].entered.wait(5)
    # the slot went straight to the first waiter: a newcomer now finds none free and queues last
    assert adm.inflight == 1 and adm.waiting == 4 and adm.refuse_at_once() is None
    late = Holder(adm, "late", order)
    assert queued(adm, 5)
    for h in waiters:
        h.done()
    late.done()
    first.done()
    assert order == ["first", "w0", "w1", "w2", "w3", "w4", "late"]
    assert adm.inflight == 0 and adm.waiting == 0


def test_a_request_whose_deadline_cannot_cover_the_estimated_wait_is_refused_at_once():
    adm = Admission(max_inflight=2, max_queue=10, service_s=0.1)  # searches take ~100 ms
    order: list[str] = []
    busy = [Holder(adm, "a", order), Holder(adm, "b", order)]
    assert all(h.entered.wait(5) for h in busy)
    # queued first: a slot in ~(0 + 1) x 100 / 2 = 50 ms, then 100 ms to serve = 150 ms > 120 ms left
    t0 = time.perf_counter()
    with pytest.raises(Overloaded, match="deadline") as refused:
        adm.acquire(time.monotonic() + 0.12)
    assert time.perf_counter() - t0 < 0.01  # at once, not after waiting
    assert refused.value.retry_after_s == pytest.approx(0.05)
    assert adm.refuse_at_once(time.monotonic() + 0.12) is not None
    assert adm.refuse_at_once(time.monotonic() + 0.2) is None  # 150 ms fits in 200
    assert adm.refuse_at_once(None) is None  # no deadline: only the queue bound
    assert adm.waiting == 0 and adm.rejected == 2
    for h in busy:
        h.done()
    assert adm.inflight == 0


def test_a_queued_request_gives_up_when_its_deadline_leaves_no_time_to_serve():
    adm = Admission(max_inflight=1, max_queue=4, service_s=0.05)
    order: list[str] = []
    first = Holder(adm, "first", order)
    assert first.entered.wait(5)
    t0 = time.perf_counter()
    with pytest.raises(Overloaded, match="no search slot freed within the request's deadline"):
        adm.acquire(time.monotonic() + 0.25)  # fits the estimate (50 + 50 ms), but no slot frees at all
    waited = time.perf_counter() - t0
    assert 0.17 < waited < 0.5  # gave up at the deadline less a service time (~200 ms), not later
    assert adm.waiting == 0 and adm.inflight == 1 and adm.rejected == 1
    first.done()
    assert adm.inflight == 0


def test_retry_after_is_the_estimated_drain_time_of_the_queue():
    adm = Admission(max_inflight=2, max_queue=2, service_s=0.04)
    order: list[str] = []
    holders = [Holder(adm, f"h{i}", order) for i in range(2)]
    assert all(h.entered.wait(5) for h in holders)
    holders += [Holder(adm, "q0", order), Holder(adm, "q1", order)]
    assert queued(adm, 2)
    e = adm.refuse_at_once()
    assert e is not None and e.retry_after_s == pytest.approx((2 + 1) * 0.04 / 2)  # (queued + 1) x service / slots
    assert adm.retry_after_s() == pytest.approx(0.06)
    assert retry_after_headers(e) == {"Retry-After": "1", "Retry-After-Ms": "60"}  # whole seconds (RFC 9110), and the estimate
    assert retry_after_from({"retry-after-ms": "60", "retry-after": "1"}) == pytest.approx(0.06)
    assert retry_after_from({"Retry-After": "3"}) == 3.0 and retry_after_from({"Retry-After": "Fri, 07 Nov 2025"}) is None
    assert retry_after_headers(Overloaded("x", retry_after_s=2.5)) == {"Retry-After": "3", "Retry-After-Ms": "2500"}
    assert Admission(1, 0).refuse_at_once() is None
    for h in holders:
        h.done()
    fresh = Admission(max_inflight=1, max_queue=0)  # nothing timed yet: a small floor, never 0
    with fresh.slot():
        refusal = fresh.refuse_at_once()
    assert refusal is not None and refusal.retry_after_s == A.MIN_RETRY_AFTER_S


def test_the_service_time_estimate_follows_the_time_slots_are_held():
    adm = Admission(max_inflight=1, max_queue=0)
    adm.acquire()
    adm.release(0.02)
    assert adm.service_s == pytest.approx(0.02)  # the first sample is taken as it is
    adm.acquire()
    adm.release(0.12)
    assert adm.service_s == pytest.approx(0.02 + A.EWMA_ALPHA * 0.10)
    with adm.slot():
        time.sleep(0.03)
    assert adm.service_s > 0.02 + A.EWMA_ALPHA * 0.10 and adm.inflight == 0


def test_an_error_inside_frees_the_slot():
    adm = Admission(max_inflight=1, max_queue=0)
    with pytest.raises(ValueError), adm.slot():
        raise ValueError("boom")
    assert adm.inflight == 0
    with adm.slot():
        assert adm.inflight == 1
    assert adm.inflight == 0


class Interrupted(BaseException):
    """What a cancellation (KeyboardInterrupt, an async exception) raises inside a wait."""


def test_a_waiter_interrupted_in_the_queue_leaves_it_and_leaks_nothing(monkeypatch):
    class InterruptedWaiter(A._Waiter):
        def __init__(self) -> None:
            super().__init__()
            self.event = type("E", (), {"wait": staticmethod(lambda timeout=None: (_ for _ in ()).throw(Interrupted())),
                                        "set": lambda self: None})()

    adm = Admission(max_inflight=1, max_queue=4)
    adm.acquire()
    monkeypatch.setattr(A, "_Waiter", InterruptedWaiter)
    with pytest.raises(Interrupted):
        adm.acquire()
    assert adm.waiting == 0 and adm.inflight == 1
    adm.release()
    assert adm.inflight == 0


def test_a_waiter_interrupted_just_as_it_was_handed_a_slot_passes_the_slot_on(monkeypatch):
    """The slot was already given to the waiter when the interruption came: it goes to the next one, not lost."""
    adm = Admission(max_inflight=1, max_queue=4)
    adm.acquire()
    real = A._Waiter

    class LateInterrupt(real):  # waits for its slot for real, then is interrupted before it can use it
        def __init__(self) -> None:
            super().__init__()
            inner = self.event

            class E:
                def wait(self, timeout=None):
                    inner.wait(timeout)
                    raise Interrupted()

                def set(self):
                    inner.set()

            self.event = E()

    monkeypatch.setattr(A, "_Waiter", LateInterrupt)
    caught: list[BaseException] = []

    def doomed() -> None:
        try:
            adm.acquire()
        except Interrupted as e:
            caught.append(e)

    t = threading.Thread(target=doomed)
    t.start()
    assert queued(adm, 1)
    monkeypatch.setattr(A, "_Waiter", real)
    order: list[str] = []
    nxt = Holder(adm, "next", order)
    assert queued(adm, 2)
    adm.release()  # the slot goes to the doomed waiter, which hands it on to "next"
    t.join(5)
    assert caught and nxt.entered.wait(5) and adm.inflight == 1
    nxt.done()
    assert adm.inflight == 0 and adm.waiting == 0


def test_many_threads_never_exceed_the_limit_and_every_slot_comes_back():
    adm = Admission(max_inflight=3, max_queue=64)
    now, peak, lock = [0], [0], threading.Lock()
    outcomes: list[str] = []

    def work(i: int) -> None:
        try:
            with adm.slot(time.monotonic() + 5):
                with lock:
                    now[0] += 1
                    peak[0] = max(peak[0], now[0])
                time.sleep(0.002)
                with lock:
                    now[0] -= 1
                if i % 7 == 0:
                    raise RuntimeError("a failed search")
            outcomes.append("ok")
        except RuntimeError:
            outcomes.append("failed")
        except Overloaded:
            outcomes.append("refused")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] <= 3 and len(outcomes) == 40 and "refused" not in outcomes
    assert adm.inflight == 0 and adm.waiting == 0
