"""indexing.stages.pipelined: read, encode and write overlapped, in order, bounded, and the first error raised."""

from __future__ import annotations

import threading
import time

import pytest

from mmsearch.offline.indexing.stages import pipelined


def test_every_item_is_written_in_order():
    out: list[int] = []
    pipelined(iter(range(100)), lambda x: x * 2, out.append)
    assert out == [x * 2 for x in range(100)]


def test_the_stages_overlap():
    """The sink of item 0 waits until work has started on item 1: run one after another, that never happens."""
    started = {i: threading.Event() for i in range(3)}
    out: list[int] = []

    def work(x: int) -> int:
        started[x].set()
        return x

    def sink(x: int) -> None:
        if x + 1 in started:
            assert started[x + 1].wait(5), f"item {x + 1} was not being encoded while {x} was written"
        out.append(x)

    pipelined(iter(range(3)), work, sink)
    assert out == [0, 1, 2]


def test_the_reader_stays_a_bounded_distance_ahead():
    read: list[int] = []
    ahead: list[int] = []

    def source():
        for i in range(50):
            read.append(i)
            yield i

    def sink(x: int) -> None:
        time.sleep(0.002)
        ahead.append(len(read) - x)

    pipelined(source(), lambda x: x, sink, depth=2)
    assert max(ahead) <= 8  # two queues of 2, one item in each stage's hands, and the one being put


@pytest.mark.parametrize("where", ["source", "work", "sink"])
def test_the_first_error_in_any_stage_is_raised_and_stops_the_rest(where):
    written: list[int] = []
    pulled: list[int] = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            if where == "source" and i == 5:
                raise ValueError("bad page 5")
            yield i

    def work(x: int) -> int:
        if where == "work" and x == 5:
            raise ValueError("bad page 5")
        return x

    def sink(x: int) -> None:
        if where == "sink" and x == 5:
            raise ValueError("bad page 5")
        written.append(x)

    with pytest.raises(ValueError, match="bad page 5"):
        pipelined(source(), work, sink)
    assert written == list(range(len(written))) and len(written) <= 5  # in order, and nothing from the failure on
    if where == "sink":
        assert written == list(range(5))
    assert len(pulled) < 50  # the reader stopped too
    assert not [t for t in threading.enumerate() if t.name in ("read", "write")]
