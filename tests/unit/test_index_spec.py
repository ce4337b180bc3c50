"""IndexSpec: each index type's Milvus index and search params, and the combinations it refuses."""

from __future__ import annotations

import pytest

from mmsearch.clients.vectors import IndexSpec, index_spec
from mmsearch.config import load_config
from mmsearch.errors import BadInput, ConfigError


@pytest.mark.parametrize("spec, index, search", [
    (IndexSpec(), {"M": 16, "efConstruction": 200}, {"ef": 128}),
    (IndexSpec(index_type="IVF_FLAT", ivf_nlist=256, search_ef=32), {"nlist": 256}, {"nprobe": 32}),
    (IndexSpec(index_type="IVF_SQ8", ivf_nlist=512, search_ef=16), {"nlist": 512}, {"nprobe": 16}),
    (IndexSpec(index_type="IVF_PQ", ivf_nlist=1024, ivf_pq_m=48, ivf_pq_nbits=8, search_ef=64),
     {"nlist": 1024, "m": 48, "nbits": 8}, {"nprobe": 64}),
    (IndexSpec(index_type="FLAT"), {}, {}),
])
def test_params_per_type(spec, index, search):
    assert spec.index_params() == index
    assert spec.search_params(10) == search


def test_nprobe_never_exceeds_the_lists():
    for t in ("IVF_FLAT", "IVF_SQ8", "IVF_PQ"):
        assert IndexSpec(index_type=t, ivf_nlist=64, search_ef=128).search_params(10) == {"nprobe": 64}
        assert IndexSpec(index_type=t, ivf_nlist=64).search_params(10, ef=8, breadth=100) == {"nprobe": 8}  # k does not widen it


def test_pq_m_must_divide_the_dimension():
    spec = IndexSpec(index_type="IVF_PQ", ivf_pq_m=48)
    spec.check_dim(384)  # 8 dimensions per code
    with pytest.raises(BadInput, match="does not divide"):
        IndexSpec(index_type="IVF_PQ", ivf_pq_m=40).check_dim(384)
    IndexSpec(index_type="HNSW", ivf_pq_m=40).check_dim(384)  # (m matters to IVF_PQ only)


@pytest.mark.parametrize("kwargs", [
    {"index_type": "IVF_PQ", "ivf_pq_nbits": 0}, {"index_type": "IVF_PQ", "ivf_pq_nbits": 17}, {"index_type": "IVF_PQ", "ivf_pq_m": 0},
    {"index_type": "IVF_SQ8", "ivf_nlist": 0}, {"index_type": "IVF_PQ", "ivf_nlist": 70000}, {"index_type": "HNSW", "hnsw_m": 1},
    {"index_type": "SCANN"}, {"search_ef": 0},
])
def test_bad_combinations_are_refused(kwargs):
    with pytest.raises(BadInput):
        IndexSpec(**kwargs)


def test_code_bytes_per_type():
    assert IndexSpec(index_type="IVF_SQ8").code_bytes(384) == 384
    assert IndexSpec(index_type="IVF_PQ", ivf_pq_m=48, ivf_pq_nbits=8).code_bytes(384) == 48
    assert IndexSpec(index_type="IVF_FLAT").code_bytes(384) == 1536
    assert IndexSpec(index_type="HNSW", hnsw_m=16).code_bytes(384) == 1536 + 128


def test_config_selects_and_records_the_compressed_types():
    cfg = load_config(environ={"MMSEARCH_MILVUS_INDEX_TYPE": "IVF_PQ", "MMSEARCH_MILVUS_IVF_PQ_M": "32",
                               "MMSEARCH_MILVUS_IVF_PQ_NBITS": "4", "MMSEARCH_MILVUS_IVF_NLIST": "2048"})
    spec = index_spec(cfg.milvus)
    assert (spec.index_type, spec.ivf_pq_m, spec.ivf_pq_nbits, spec.ivf_nlist) == ("IVF_PQ", 32, 4, 2048)
    assert spec.to_json()["ivf_pq_m"] == 32  # what a build records
    assert index_spec(load_config(environ={"MMSEARCH_MILVUS_INDEX_TYPE": "IVF_SQ8"}).milvus).index_type == "IVF_SQ8"
    with pytest.raises(ConfigError):
        load_config(environ={"MMSEARCH_MILVUS_INDEX_TYPE": "IVF_PQ8"})
    with pytest.raises(ConfigError):
        load_config(environ={"MMSEARCH_MILVUS_IVF_PQ_NBITS": "17"})


def test_the_index_type_is_chosen_by_config_as_the_docs_say():
    """docs/architecture.md, "Choosing the vector index type": MMSEARCH_MILVUS_INDEX_TYPE picks the build's type."""
    from mmsearch.clients.vectors import index_spec
    from mmsearch.config import load_config

    spec = index_spec(load_config(environ={"MMSEARCH_MILVUS_INDEX_TYPE": "IVF_SQ8"}).milvus)
    assert spec.index_type == "IVF_SQ8" and "nlist" in spec.index_params()
    assert index_spec(load_config(environ={}).milvus).index_type == "HNSW"
