"""`mmsearch up` sizes admission control to the one host the whole stack shares, unless configured."""

from __future__ import annotations

import os

from mmsearch.config import load_config
from mmsearch.launcher.up import one_host_inflight, one_host_queue, sized_for_one_host


def test_admission_is_sized_to_the_host_s_cores_unless_configured(tmp_path):
    cfg = sized_for_one_host(load_config(environ={}))
    assert cfg.retrieval.max_inflight == one_host_inflight() == max(1, len(os.sched_getaffinity(0)))  # a search per core
    assert cfg.retrieval.max_queue == one_host_queue(one_host_inflight()) == one_host_inflight()  # a queue, not refusals
    mine = sized_for_one_host(load_config(environ={"MMSEARCH_RETRIEVAL_MAX_INFLIGHT": "16", "MMSEARCH_RETRIEVAL_MAX_QUEUE": "4"}))
    assert (mine.retrieval.max_inflight, mine.retrieval.max_queue) == (16, 4)  # what a user configured is kept
    (tmp_path / "c.yaml").write_text("retrieval:\n  max_queue: 3\n")
    part = sized_for_one_host(load_config(str(tmp_path / "c.yaml"), environ={}))
    assert part.retrieval.max_queue == 3 and part.retrieval.max_inflight == one_host_inflight()
    (tmp_path / "d.yaml").write_text("retrieval:\n  max_inflight: 5\n")
    queue = sized_for_one_host(load_config(str(tmp_path / "d.yaml"), environ={}))
    assert (queue.retrieval.max_inflight, queue.retrieval.max_queue) == (5, 5)  # the queue follows the slots set
