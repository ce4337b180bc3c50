"""How a bulk encoder spreads over the CPU: a session per core (up to four), or what the caller asked for."""

from __future__ import annotations

import pytest

from mmsearch.encoders import local
from mmsearch.encoders.local import SessionPool, session_layout


@pytest.mark.parametrize(("cores", "want"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (4, 1)), (8, (4, 2)), (16, (4, 4))])
def test_the_default_gives_each_core_a_session_up_to_four(monkeypatch, cores, want):
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert session_layout(0) == want


def test_threads_asked_for_or_an_accelerator_get_one_session(monkeypatch):
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert session_layout(3) == (1, 3)
    assert session_layout(0, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == (1, 0)


def test_a_pool_needs_a_session():
    with pytest.raises(ValueError, match="needs a session"):
        SessionPool([])
