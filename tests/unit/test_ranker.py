"""The learned ranker: its features, training (pairwise logistic regression), its file, and the arm's scope."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from mmsearch.errors import BadInput, ConfigError
from mmsearch.experiments.spec import Params
from mmsearch.offline.ranker_training import Example, evaluate, fit, train
from mmsearch.ranking.fusion import fuse
from mmsearch.ranking.ranker import Query, candidate_features, feature_names, learned_fusion, load_ranker, ranker_path

SOURCES = (("vec", "dense"), ("words", "bm25"))


def test_features_of_a_candidate_are_where_each_source_put_it_and_what_its_document_says():
    lists = {"vec": [("a", 0.9), ("b", 0.5)], "words": [("b", 8.0), ("c", 2.0)]}
    docs = {"b": {"title": "red fox, Vulpes", "text": "a small wild dog"}}
    ids, x = candidate_features(lists, SOURCES, Query.of("red fox"), docs, "title", "text")
    f = dict(zip(feature_names(SOURCES), x[ids.index("b")]))
    assert ids == ["a", "b", "c"]
    assert (f["vec.rr2"], f["vec.rr60"], f["vec.norm"], f["vec.gap"], f["vec.in"]) == pytest.approx((3 / 4, 61 / 62, 0.0, -0.4, 1.0))
    assert (f["words.rr2"], f["words.norm"], f["words.gap"]) == pytest.approx((1.0, 1.0, 1.0))
    assert f["title_eq"] == 1.0 and f["title_cover"] == 1.0 and f["doc_known"] == 1.0
    assert f["log_len"] == pytest.approx(np.log1p(4))
    assert f["words.rr2*short"] == 1.0  # a two-word query is short
    assert f["words.rr2*titled"] == 1.0  # one candidate's title is the query
    c = dict(zip(feature_names(SOURCES), x[ids.index("c")]))
    assert c["vec.in"] == 0.0 and c["vec.gap"] == pytest.approx(0.5 - 0.9)  # absent: as the list's last
    assert c["doc_known"] == 0.0 and c["title_eq"] == 0.0


def _examples(n: int, seed: int = 0) -> list[Example]:
    """Queries of two kinds: a named one whose document BM25 ranks first while the vectors put it 3rd, and a
    described one whose document the vectors rank first while BM25 puts it 4th."""
    rnd = random.Random(seed)
    out = []
    for q in range(n):
        docs = [f"q{q}d{i}" for i in range(8)]
        named = q % 2 == 0
        target = docs[rnd.randrange(8)]
        others = [d for d in docs if d != target]
        rnd.shuffle(others)
        vec = others[:2] + [target] + others[2:] if named else [target] + others
        rnd.shuffle(others)
        words = [target] + others[:5] if named else others[:3] + [target] + others[3:5]
        lists = {"vec": [(d, 0.9 - 0.05 * i) for i, d in enumerate(vec)], "words": [(d, 10.0 - i) for i, d in enumerate(words)]}
        titles = {target: {"title": f"thing{q}", "text": "x"}} if named else {}
        out.append(Example(Query.of(f"thing{q}" if named else f"a long description of thing number {q}"), lists, titles,
                           {target: 1.0}, "named" if named else "described"))
    return out


def test_a_fitted_ranker_beats_each_source_where_the_other_is_right():
    train_set, test_set = _examples(200), _examples(100, seed=1)
    r = fit(train_set, SOURCES, "title", "text", l2=1.0, scope="all")
    m = evaluate(r, test_set, {"vec": 1.0, "words": 1.0})
    assert m["named"]["mrr@10"] == pytest.approx(1.0) and m["described"]["mrr@10"] == pytest.approx(1.0)
    firsts = [fuse(e.lists, "rrf")[0].id for e in test_set]
    assert sum(f in e.relevant for f, e in zip(firsts, test_set)) < 90  # equal-weight RRF gets many wrong


def test_scope_named_leaves_queries_that_name_nothing_to_rrf_and_trains_only_on_the_rest():
    r = fit(_examples(200), SOURCES, "title", "text", scope="named")
    assert r.meta["queries_used"] == 100  # the named half
    named, described = _examples(10, seed=3)[:2]
    assert r.order(described.lists, described.query, described.docs) is None
    weights = {"vec": 1.0, "words": 0.01}
    assert learned_fusion(r, described.lists, described.query, described.docs, weights) == fuse(described.lists, "rrf", weights)
    ranked = r.order(named.lists, named.query, named.docs)
    assert ranked is not None and ranked[0].id in named.relevant


def test_a_rare_term_routes_only_a_query_of_at_most_rare_terms_terms_to_the_ranker(tmp_path):
    """A rare word alone names something; in a description it is incidental: there the vectors keep the order."""
    r = fit(_examples(40), SOURCES, "title", "text", scope="named", rare_terms=1)
    lists = {"vec": [("a", 0.9), ("b", 0.8)], "words": [("b", 9.0), ("a", 1.0)]}
    x = r.features_of(lists, Query.of("woodlouse", rare=True), {})[1]
    assert r.in_scope(Query.of("woodlouse", rare=True), x)
    assert not r.in_scope(Query.of("salt of chromic acid", rare=True), x)  # 3 terms, no title named
    assert not r.in_scope(Query.of("woodlouse", rare=False), x)
    r.rare_terms = 3
    assert r.in_scope(Query.of("salt of chromic acid", rare=True), x)
    back = load_ranker(r.save(tmp_path / "r.json"))
    assert back.rare_terms == 3
    raw = r.to_json()
    del raw["rare_terms"]  # a file written before the field routes as it was trained: up to TITLE_MAX_TERMS
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert load_ranker(tmp_path / "old.json").rare_terms == 4
    p = Params.model_validate({"title_field": "title", "sources": [{"name": "vec", "kind": "dense"}, {"name": "words", "kind": "bm25"}]})
    with pytest.raises(BadInput, match="rare terms 9"):
        train(_examples(60), p, rare_terms=9)


def test_train_chooses_l2_by_cross_validation_and_records_its_figures():
    p = Params.model_validate({"title_field": "title", "sources": [{"name": "vec", "kind": "dense"}, {"name": "words", "kind": "bm25"}]})
    r = train(_examples(60), p, scope="all", grid=(0.1, 10.0))
    assert set(r.meta["cv_ndcg10"]) == {"0.1", "10.0"} and r.meta["l2"] in (0.1, 10.0)
    assert r.meta["train"]["all"]["mrr@10"] > 0.9
    with pytest.raises(BadInput, match="at least 20"):
        train(_examples(5), p)
    with pytest.raises(BadInput, match="too few to train on"):
        fit([Example(Query.of("x"), {"vec": [("a", 1.0)]}, {}, {"zzz": 1.0})] * 3, SOURCES, scope="all")


def test_a_saved_ranker_loads_and_scores_the_same(tmp_path):
    r = fit(_examples(40), SOURCES, "title", "text", scope="all")
    back = load_ranker(r.save(tmp_path / "r.json"))
    e = _examples(4, seed=9)[0]
    assert [(f.id, f.score) for f in back.rank(e.lists, e.query, e.docs)] == [(f.id, f.score) for f in r.rank(e.lists, e.query, e.docs)]
    assert back.scope == "all" and back.title_field == "title" and back.sources == SOURCES


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="other/1"), "format"),
    (lambda d: d.update(weights=d["weights"][:-1]), "weights must be"),
    (lambda d: d.update(mean=[float("nan")] * len(d["mean"])), "mean must be"),
    (lambda d: d.update(scale=[0.0] * len(d["scale"])), "scale must be positive"),
    (lambda d: d.update(scope="some"), "scope"),
    (lambda d: d.update(rare_terms=-1), "rare_terms -1"),
    (lambda d: d.update(rare_terms="2"), "rare_terms '2'"),
    (lambda d: d.update(sources=[{"name": "v", "kind": "sparse"}]), "sources"),
    (lambda d: d.pop("weights"), "missing 'weights'"),
    (lambda d: d.update(features=["x"]), "features"),
])
def test_a_broken_ranker_file_is_refused_naming_the_file_and_the_field(tmp_path, edit, match):
    r = fit(_examples(40), SOURCES, scope="all")
    raw = r.to_json()
    edit(raw)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=match) as e:
        load_ranker(path)
    assert str(path) in str(e.value)


def test_a_ranker_file_that_is_not_json_or_absent_is_a_config_error(tmp_path):
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON ranker file"):
        load_ranker(tmp_path / "r.json")
    with pytest.raises(ConfigError, match="no such file"):
        load_ranker(tmp_path / "missing.json")


@pytest.mark.parametrize("name", ["../etc/passwd", ".hidden", "a/b", "", "x" * 65])
def test_a_ranker_name_cannot_leave_its_folder(tmp_path, name):
    with pytest.raises(BadInput, match="ranker name"):
        ranker_path(tmp_path, name)


def test_only_the_documents_of_each_source_s_first_hits_are_read_as_in_training():
    """Serving knows the documents of every dense hit (they come with the vectors); training reads each source's
    first doc_window. A document beyond the window must not count, or a feature would mean something else."""
    lists = {"vec": [(f"d{i}", 1.0 - i / 100) for i in range(15)], "words": [("d14", 3.0)]}
    docs = {f"d{i}": {"title": "red fox", "text": "x"} for i in range(15)}
    ids, x = candidate_features(lists, SOURCES, Query.of("red fox"), docs, "title", "text", doc_window=10)
    known = dict(zip(ids, x[:, feature_names(SOURCES).index("doc_known")]))
    assert [d for d, k in known.items() if k] == [*(f"d{i}" for i in range(10)), "d14"]  # d14: BM25's first
