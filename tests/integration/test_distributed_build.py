"""`build-index --engine ray`: a local Ray cluster of two workers builds the same index as the single-process
build (same ids, vectors within 1e-5, same BM25 hits, same rejects), and an interrupted distributed build
resumes after its last completed block. Real Milvus standalone and secantusdb servers.

`make test` installs the `distributed` extra (Ray); elsewhere without it this module is skipped, but never in CI."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pytest

from mmsearch.clients.documents import DocumentStore
from mmsearch.clients.lexical import LexicalStore
from mmsearch.clients.vectors import VectorStore, collection_name
from mmsearch.offline.indexing.build import BuildOptions, Checkpoints, build_index
from mmsearch.runtime.embedded import MilvusServer, SecantusServer

pytestmark = pytest.mark.integration

if os.environ.get("CI"):
    import ray  # CI installs the extra (Makefile): a missing Ray fails there rather than skipping
else:
    ray = pytest.importorskip("ray", reason="the `distributed` extra (ray) is not installed")

N = 300


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    with SecantusServer(root / "mongo") as mongo:
        milvus = MilvusServer(root / "milvus")
        try:
            yield milvus.uri, mongo.uri
        finally:
            milvus.stop(timeout=0)


@pytest.fixture
def cluster():
    """A local Ray cluster of two one-CPU workers, started by the test: a build finding Ray running uses it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_text, servers):
    from mmsearch.offline.export import export_model

    root = tmp_path_factory.mktemp("distbuild")
    repo = root / "repo"
    export_model(tiny_text, repo, "tiny")
    docs = root / "docs.jsonl"
    lines = [json.dumps({"id": f"doc-{i}", "text": f"document {i} on topic {i % 11} " + "word " * (i % 13), "n": i}) for i in range(N)]
    lines[5:5] = ["{not json", json.dumps({"id": "doc-1", "text": "duplicate"}), "", json.dumps({"id": "x", "text": "bad n", "n": "seven"})]
    lines[250:250] = [json.dumps({"text": "no id"})]
    docs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    milvus_uri, mongo_uri = servers

    def opts(index: str, **kw) -> BuildOptions:
        base = dict(index=index, docs=docs, model="tiny", repo=repo, data_dir=root / "data", milvus_uri=milvus_uri,
                    mongo_uri=mongo_uri, database="dist", progress=False, threads=1, batch_size=32,
                    lexical=["text"], fields={"n": "int"}, rejects=root / f"{index}.rejects.jsonl")
        base.update(kw)
        return BuildOptions(**base)

    return opts


def _index(o: BuildOptions, build: str) -> tuple[dict[str, np.ndarray], list[list[tuple[str, float]]], list[dict]]:
    vs = VectorStore(o.milvus_uri)
    coll = collection_name(o.index, build)
    ids = vs.ids_where(coll, 'id != ""', 10 * N)
    vectors = vs.vectors(coll, ids)
    lex = LexicalStore(o.data_dir / "lexical")
    hits = [lex.search(o.index, q, 10 * N) for q in ("document topic 3", "word word", "document 42", "topic 10")]  # every hit: ties order by segment
    rejects = [json.loads(x) for x in o.rejects.read_text().splitlines()]
    return vectors, hits, rejects


def _assert_same(a, b) -> None:
    va, ha, ra = a
    vb, hb, rb = b
    assert sorted(va) == sorted(vb) and len(va) == N
    worst = max(float(np.abs(va[i] - vb[i]).max()) for i in va)
    assert worst <= 1e-5, worst
    for x, y in zip(ha, hb):  # the same documents with the same BM25 scores (equal scores come in segment order)
        sx, sy = dict(x), dict(y)
        assert sorted(sx) == sorted(sy) and x
        assert all(abs(sx[i] - sy[i]) <= 1e-4 for i in sx)
    assert sorted((r["line"], r["reason"]) for r in ra) == sorted((r["line"], r["reason"]) for r in rb)


def test_two_workers_build_the_same_index_as_one_process(setup):
    """The build starts its own local cluster (two one-CPU workers), as `build-index --engine ray --workers 2` does."""
    assert not ray.is_initialized()
    single = setup("single")
    s1 = build_index(single)
    dist = setup("dist", engine="ray", workers=2)
    t0 = time.perf_counter()
    s2 = build_index(dist)
    print(f"distributed build of {N} docs on 2 workers: {time.perf_counter() - t0:.1f} s ({s1.seconds:.1f} s in one process)")
    assert (s2.read, s2.indexed, s2.skipped) == (s1.read, s1.indexed, s1.skipped)
    assert (s1.read, s1.indexed, sum(s1.skipped.values())) == (N + 4, N, 4)
    _assert_same(_index(single, s1.build), _index(dist, s2.build))
    ds = DocumentStore(dist.mongo_uri, dist.database)
    assert ds.count("dist") == ds.count("single") == N
    assert ds.get_many("dist", ["doc-7"])[0]["n"] == 7
    assert VectorStore(dist.milvus_uri).live_build("dist") == s2.build
    record = ds.builds("dist")[-1]
    assert record["status"] == "complete" and record["counts"]["indexed"] == N


def test_an_interrupted_distributed_build_resumes_after_its_last_block(setup, cluster, monkeypatch):
    single = setup("single")
    s1 = build_index(dataclasses.replace(single, rejects=single.rejects.with_name("single2.rejects.jsonl")))
    dist = setup("resumed", engine="ray", workers=2, checkpoint_s=0.0)
    real = Checkpoints.add
    blocks: list[int] = []

    def add(self, indexed, rejects, last_line):
        real(self, indexed, rejects, last_line)  # the block is written and checkpointed
        blocks.append(last_line)
        if len(blocks) == 2:
            raise KeyboardInterrupt  # Ctrl-C after two of the three blocks

    monkeypatch.setattr(Checkpoints, "add", add)
    with pytest.raises(KeyboardInterrupt):
        build_index(dist)
    ds = DocumentStore(dist.mongo_uri, dist.database)
    record = ds.builds("resumed")[-1]
    assert record["status"] == "building" and record["lines_done"] == blocks[1] < N
    monkeypatch.setattr(Checkpoints, "add", real)
    s2 = build_index(dataclasses.replace(dist, resume=True))
    assert s2.build == record["build"] and (s2.read, s2.indexed) == (N + 4, N)
    ref = _index(dataclasses.replace(single, rejects=single.rejects.with_name("single2.rejects.jsonl")), s1.build)
    _assert_same(ref, _index(dist, s2.build))
