"""bench/concurrency.py's CPU per answer by server: each stack process is named by what it runs, not by a word
that its arguments happen to contain."""

from __future__ import annotations

import pytest

from bench.common import cpu_per_answer, server_role


@pytest.mark.parametrize("cmd, role", [
    ("/v/bin/python -m mmsearch serve-retrieval --http 127.0.0.1:1 --ports-file /data/milvus/retrieval.json", "retrieval"),
    ("/v/bin/python -m mmsearch serve-web --ports-file /srv/milvus-demo/web.json", "web"),
    ("/v/bin/python -m mmsearch serve-models --log-file .mmsearch/logs/tritonserver.log", "triton"),
    ("/v/bin/python -m mmsearch.runtime.secantusd --host 127.0.0.1 --port 1", "mongodb"),
    ("/v/share/mmsearch/milvus-6c4249373eba/milvus run standalone", "milvus"),
    ("/v/pytriton/tritonserver/bin/tritonserver --model-repository /tmp/r", "triton"),
    ("/v/bin/python -m mmsearch serve-gate --listen 127.0.0.1:8080", "gate"),
    ("/v/bin/python -m mmsearch search milvus", "other"),
    ("/v/bin/python -m", "other"),
    ("", "other"),
])
def test_server_role(cmd, role):
    assert server_role(cmd.split()) == role


def test_cpu_per_answer_is_the_difference_per_answer():
    out = cpu_per_answer({"retrieval": 1.0, "milvus": 2.0}, {"retrieval": 2.0, "milvus": 2.5, "client": 0.1}, 100, 2.0)
    assert out["ms"] == {"retrieval": 10.0, "milvus": 5.0, "client": 1.0}
    assert out["cores_busy"] == pytest.approx(0.8)
