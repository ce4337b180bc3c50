"""What a vector search asks Milvus for: breadth (HNSW ef) and the documents that come back beside hits."""

from __future__ import annotations

import json

import pytest

from mmsearch.clients.vectors import IndexSpec
from mmsearch.retrieval_service.response import HitDocs


def test_breadth_makes_a_short_search_as_broad_as_a_deep_one():
    hnsw = IndexSpec(index_type="HNSW", search_ef=64)
    assert hnsw.search_params(21) == {"ef": 64}
    assert hnsw.search_params(21, breadth=100) == {"ef": 100}  # what a search for 100 hits would use
    assert hnsw.search_params(200, breadth=100) == {"ef": 200}  # Milvus refuses ef below the limit
    assert hnsw.search_params(21, ef=300, breadth=100) == {"ef": 300}  # an arm's own ef, when broader
    ivf = IndexSpec(index_type="IVF_FLAT", search_ef=16, ivf_nlist=128)
    assert ivf.search_params(21, breadth=100) == ivf.search_params(100) == {"nprobe": 16}  # nprobe does not follow k


def test_hit_docs_parse_each_document_only_when_read():
    docs = HitDocs()
    docs.put_raw("a", json.dumps({"text": "alpha", "n": 1}))
    docs.put_raw("b", "{not json")  # never read: never parsed, no error
    docs.update({"c": {"text": "from mongodb"}})
    assert "a" in docs and "b" in docs and "c" in docs and "z" not in docs and len(docs) == 3
    assert sorted(docs) == ["a", "b", "c"]
    assert docs.get("a") == {"text": "alpha", "n": 1} and docs["a"] is docs.get("a")  # parsed once, then kept
    assert docs.get("c") == {"text": "from mongodb"} and docs.get("z") is None
    with pytest.raises(KeyError):
        docs["z"]
    with pytest.raises(json.JSONDecodeError):
        docs.get("b")
