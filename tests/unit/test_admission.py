"""Admission control: at most max_inflight searches at once, a short queue, fast refusals beyond it."""

from __future__ import annotations

import threading
import time

import pytest

from mmsearch.errors import Overloaded
from mmsearch.retrieval_service.admission import Admission
from mmsearch.runtime.net import wait_until


def hold(adm: Admission, entered: threading.Event, release: threading.Event, out: list[str]) -> None:
    try:
        with adm.slot():
            entered.set()
            release.wait(5)
            out.append("served")
    except Overloaded:
        out.append("refused")


def test_queue_full_is_refused_at_once_and_a_freed_slot_admits_the_waiter():
    adm = Admission(max_inflight=1, max_queue=1, queue_timeout_s=5)
    release, out = threading.Event(), []
    first, second = threading.Event(), threading.Event()
    t1 = threading.Thread(target=hold, args=(adm, first, release, out))
    t1.start()
    assert first.wait(5)
    t2 = threading.Thread(target=hold, args=(adm, second, release, out))
    t2.start()
    assert wait_until(lambda: adm.waiting == 1, 5, 0.005)
    t0 = time.perf_counter()
    with pytest.raises(Overloaded, match="1 searches in flight and 1 queued"), adm.slot():
        pass
    assert time.perf_counter() - t0 < 0.05  # refused without waiting
    release.set()
    t1.join(5)
    t2.join(5)
    assert out == ["served", "served"] and adm.inflight == 0 and adm.rejected == 1


def test_a_waiter_gives_up_after_the_queue_timeout():
    adm = Admission(max_inflight=1, max_queue=4, queue_timeout_s=0.05)
    release, entered, out = threading.Event(), threading.Event(), []
    t = threading.Thread(target=hold, args=(adm, entered, release, out))
    t.start()
    assert entered.wait(5)
    t0 = time.perf_counter()
    with pytest.raises(Overloaded, match="within 50 ms"), adm.slot():
        pass
    assert 0.04 < time.perf_counter() - t0 < 1.0
    release.set()
    t.join(5)
    assert adm.waiting == 0 and adm.inflight == 0


def test_an_error_inside_frees_the_slot():
    adm = Admission(max_inflight=1, max_queue=0, queue_timeout_s=0)
    with pytest.raises(ValueError), adm.slot():
        raise ValueError("boom")
    with adm.slot():
        assert adm.inflight == 1

