"""`mmsearch train-ranker` against real stores (the session stack: Milvus, secantusdb, the BM25 build of its texts):
each judged query recalled as the arm's sources recall it, a ranker written that loads and orders them."""

from __future__ import annotations

import json

import pytest

from mmsearch.errors import BadInput
from mmsearch.offline import ranker_training
from mmsearch.ranking.ranker import load_ranker

pytestmark = pytest.mark.integration

EXPERIMENTS = """
scenes:
  text2text:
    layers:
      - name: recall
        salt: r
        arms:
          - {name: dense, traffic: 100}
          - name: learned
            traffic: 0
            fusion: rrf
            title_field: title
            sources:
              - {name: vec, kind: dense, recall_top_k: 30}
              - {name: words, kind: bm25, recall_top_k: 30, weight: 0.01}
    defaults: {embed_model: tiny, index: texts, top_k: 10}
"""


@pytest.fixture
def env(stack, tmp_path, monkeypatch):
    cfg = stack["cfg"]
    (tmp_path / "experiments.yaml").write_text(EXPERIMENTS)
    for name, value in {"MMSEARCH_MILVUS_URI": cfg.milvus.uri, "MMSEARCH_MONGO_URI": cfg.mongo.uri,
                        "MMSEARCH_MODEL_REPOSITORY": str(cfg.model_repository), "MMSEARCH_DATA_DIR": str(cfg.data_dir),
                        "MMSEARCH_RANKERS_DIR": str(tmp_path / "rankers"), "MMSEARCH_CONSUL_ADDR": ""}.items():
        monkeypatch.setenv(name, value)
    # the texts read "text document N about subject N % 9": a query of the words of one names it for BM25
    judged = [{"query": f"document {i} about subject {i % 9}", "relevant": [f"t{i}"], "tags": ["words"]} for i in range(0, 60, 2)]
    (tmp_path / "judged.jsonl").write_text("".join(json.dumps(j) + "\n" for j in judged))
    return tmp_path


def test_train_ranker_recalls_each_judged_query_and_writes_a_ranker_that_loads(env, capsys):
    rc = ranker_training.main(["--arm", "learned", "--judged", str(env / "judged.jsonl"), "--name", "t1", "--scope", "all",
                               "--experiments", str(env / "experiments.yaml")])
    assert rc == 0
    r = load_ranker(env / "rankers" / "t1.json")
    assert r.sources == (("vec", "dense"), ("words", "bm25")) and r.scope == "all" and r.title_field == "title"
    assert r.meta["queries"] == 30 and r.meta["arm"] == "learned" and r.meta["index"] == "texts"
    assert r.meta["queries_used"] > 20  # the relevant text is among most queries' candidates
    assert r.meta["train"]["words"]["recall@10"] >= 0.9  # BM25 finds a text by its number: the ranker learns to trust it
    out = capsys.readouterr()
    assert "recalled 30/30 queries" in out.err and "ETA" in out.err
    assert "ranker t1: 30 queries" in out.out


@pytest.mark.parametrize("arm, name, experiments, match", [
    ("nope", "t2", "experiments.yaml", "no arm 'nope'"),
    ("dense", "t2", "experiments.yaml", "arm 'dense' of text2text has no sources"),
    ("learned", "t2", "missing.yaml", "cannot read the experiments file"),
    ("learned", "../t2", "experiments.yaml", "ranker name"),
])
def test_train_ranker_names_a_missing_arm_or_file(env, arm, name, experiments, match):
    with pytest.raises(BadInput, match=match):
        ranker_training.main(["--arm", arm, "--judged", str(env / "judged.jsonl"), "--name", name,
                              "--experiments", str(env / experiments)])
    assert not (env / "rankers" / "t2.json").exists()
