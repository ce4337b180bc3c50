"""MilvusFeatures (issue 35, item 5): the one place where Milvus 2.3.5 (embedded) and 2.6 (production)
differ for this client, detected from the server's version; seal() reads no segment internals on 2.5+.
The real 2.3.5 path runs in tests/integration/test_build_index.py; no 2.6 server runs here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmsearch.clients.vectors import BRUTE_FORCE_OK_ROWS, MilvusFeatures, VectorStore, _parse_version


@pytest.mark.parametrize("text, version, waits", [
    ("v2.3.5", (2, 3, 5), True),  # the embedded server: brute force until the index checker hands segments over
    ("v2.4.9", (2, 4, 9), True),
    ("v2.5.0", (2, 5, 0), False),
    ("v2.6.15", (2, 6, 15), False),  # production (deploy/: milvusdb/milvus:v2.6.15)
    ("2.6.15-gpu", (2, 6, 15), False),
    ("lite", None, False),  # unknown: the path that needs only calls both versions share
])
def test_version_decides_the_path(text, version, waits):
    f = MilvusFeatures.detect(SimpleNamespace(get_server_version=lambda: text))
    assert f.version == version == _parse_version(text) and f.waits_for_segment_handoff is waits


def test_a_server_without_get_version_is_unknown():
    def boom():
        raise RuntimeError("unimplemented")

    assert MilvusFeatures.detect(SimpleNamespace(get_server_version=boom)).version is None


class _Fake:
    """The pymilvus calls seal() makes, as a server that has every row indexed and loaded."""

    def __init__(self, version: str, rows: int, segments_indexed: bool = True, index_type: str = "HNSW"):
        self.version, self.rows, self.segments_indexed, self.index_type = version, rows, segments_indexed, index_type
        self.calls: list[str] = []

    def get_server_version(self, **_):
        return self.version

    def flush(self, *_a, **_k):
        self.calls.append("flush")

    def describe_index(self, *_a, **_k):
        return {"indexed_rows": self.rows, "pending_index_rows": 0, "total_rows": self.rows, "state": "Finished",
                "index_type": self.index_type}

    def list_aliases(self, *_a, **_k):
        return {"aliases": []}

    def get_load_state(self, *_a, **_k):
        return {"state": "<LoadState: Loaded>"}

    def query(self, *_a, **_k):
        return [{"count(*)": self.rows}]

    def list_loaded_segments(self, *_a, **_k):
        self.calls.append("list_loaded_segments")
        return [SimpleNamespace(num_rows=self.rows, index_id=1 if self.segments_indexed else 0)]


def _store(client) -> VectorStore:
    store = object.__new__(VectorStore)
    store.client, store.uri, store.dependency, store.timeout_s = client, "http://milvus:19530", "milvus at test", 5.0
    store._loaded, store._fields, store._features = set(), {}, None
    return store


def test_seal_on_2_6_needs_no_segment_internals():
    client = _Fake("v2.6.15", BRUTE_FORCE_OK_ROWS * 2)
    _store(client).seal("c", BRUTE_FORCE_OK_ROWS * 2, timeout_s=2)
    assert "list_loaded_segments" not in client.calls and client.calls[0] == "flush"


def test_seal_on_2_3_still_waits_for_indexed_loaded_segments():
    client = _Fake("v2.3.5", BRUTE_FORCE_OK_ROWS * 2)
    _store(client).seal("c", BRUTE_FORCE_OK_ROWS * 2, timeout_s=2)
    assert "list_loaded_segments" in client.calls
    from mmsearch.errors import DeadlineExceeded

    unhanded = _Fake("v2.3.5", BRUTE_FORCE_OK_ROWS * 2, segments_indexed=False)  # growing rows still brute force
    with pytest.raises(DeadlineExceeded, match="not fully searchable"):
        _store(unhanded).seal("c", BRUTE_FORCE_OK_ROWS * 2, timeout_s=0.5)


def test_seal_of_a_flat_index_on_2_3_does_not_wait_for_segment_index_ids():
    """FLAT is brute force: Milvus 2.3 loads its sealed segments with no index id, and a seal that waited for one
    never ended (a FLAT build of 82k texts timed out after 600 s)."""
    client = _Fake("v2.3.5", BRUTE_FORCE_OK_ROWS * 2, segments_indexed=False, index_type="FLAT")
    _store(client).seal("c", BRUTE_FORCE_OK_ROWS * 2, timeout_s=0.5)
    assert client.calls[0] == "flush"
