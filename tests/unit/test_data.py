"""Training pairs and evaluation sets from JSONL: good files load, bad ones are named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.data import Pair, load_evalset, load_pairs, write_jsonl


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def test_pairs_load_with_optional_fields_and_blank_lines(tmp_path: Path):
    p = _write(tmp_path / "pairs.jsonl", [
        {"query": "red shoes", "positive": "crimson sneakers", "group": "d1", "negative": "blue hat"},
        "",
        "   ",
        {"query": "cat photo", "positive": "imgs/cat.png"},
    ])
    assert load_pairs(p) == [Pair("red shoes", "crimson sneakers", "d1", "blue hat"), Pair("cat photo", "imgs/cat.png", "", None)]


def test_write_jsonl_then_load_pairs_round_trips_unicode(tmp_path: Path):
    # raw U+2028 / U+0085 are legal inside JSON strings and write_jsonl emits them unescaped (ensure_ascii=False);
    # only "\n" ends a JSON Lines record
    rows = [{"query": "a\u2028b", "positive": "c\u0085d"}, {"query": "日本", "positive": "e\u2029f\x0cg"}]
    p = tmp_path / "sub" / "pairs.jsonl"
    write_jsonl(p, rows)
    assert [(x.query, x.positive) for x in load_pairs(p)] == [(r["query"], r["positive"]) for r in rows]


def test_crlf_files_load(tmp_path: Path):
    p = tmp_path / "pairs.jsonl"
    p.write_bytes(b'{"query": "a", "positive": "b"}\r\n{"query": "c", "positive": "d"}\r\n')
    assert [(x.query, x.positive) for x in load_pairs(p)] == [("a", "b"), ("c", "d")]


def test_malformed_line_is_named_by_its_file_line(tmp_path: Path):
    p = _write(tmp_path / "pairs.jsonl", [{"query": "a", "positive": "b"}, "", '{"query": "c", "positive": '])
    with pytest.raises(BadInput, match=rf"{p}:3: malformed JSON"):
        load_pairs(p)


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "7", "null"])
def test_non_object_line_is_named(tmp_path: Path, line):
    p = _write(tmp_path / "pairs.jsonl", [{"query": "a", "positive": "b"}, line])
    with pytest.raises(BadInput, match=rf"{p}:2: expected a JSON object"):
        load_pairs(p)


@pytest.mark.parametrize(
    "row",
    [{"positive": "b"}, {"query": "a"}, {"query": "", "positive": "b"}, {"query": "a", "positive": "  "},
     {"query": 5, "positive": "b"}, {"query": "a", "positive": ["b"]}, {"query": None, "positive": "b"}],
)
def test_pair_without_a_usable_query_or_positive_is_named(tmp_path: Path, row):
    p = _write(tmp_path / "pairs.jsonl", [{"query": "a", "positive": "b"}, row, {"query": "c", "positive": "d"}])
    with pytest.raises(BadInput, match=r"pair 2: query and positive must be non-empty strings"):
        load_pairs(p)


def test_null_group_is_no_group(tmp_path: Path):
    # a null group must not become the group "None" (which would put every such pair in one split)
    p = _write(tmp_path / "pairs.jsonl", [{"query": "a", "positive": "b", "group": None},
                                          {"query": "c", "positive": "d", "group": 17}])
    assert [x.group for x in load_pairs(p)] == ["", "17"]


def test_negative_must_be_a_string_when_given(tmp_path: Path):
    ok = _write(tmp_path / "ok.jsonl", [{"query": "a", "positive": "b", "negative": ""},
                                        {"query": "c", "positive": "d", "negative": None}])
    assert [x.negative for x in load_pairs(ok)] == [None, None]  # empty means none
    bad = _write(tmp_path / "bad.jsonl", [{"query": "a", "positive": "b"}, {"query": "c", "positive": "d", "negative": 3}])
    with pytest.raises(BadInput, match="pair 2: negative must be a string"):
        load_pairs(bad)


@pytest.mark.parametrize("lines, found", [([], 0), ([{"query": "a", "positive": "b"}], 1), (["", ""], 0)])
def test_fewer_than_two_pairs_is_an_error(tmp_path: Path, lines, found):
    p = _write(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(BadInput, match=f"need at least 2 pairs, found {found}"):
        load_pairs(p)


def test_unreadable_pairs_files_are_bad_input(tmp_path: Path):
    with pytest.raises(BadInput, match="cannot read"):
        load_pairs(tmp_path / "missing.jsonl")
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"query": "caf\u00e9", "positive": "b"}\n'.encode("latin-1") * 2)
    with pytest.raises(BadInput, match="cannot read"):
        load_pairs(p)


def test_evalset_maps_qrels_to_positions_and_grades(tmp_path: Path):
    q = _write(tmp_path / "q.jsonl", [{"id": "q1", "text": "red"}, {"id": "q2", "text": "blue"}])
    c = _write(tmp_path / "c.jsonl", [{"id": "d1", "text": "a"}, {"id": "d2", "text": "b"}, {"id": "d3", "text": "c"}])
    r = _write(tmp_path / "r.jsonl", [{"query_id": "q1", "doc_id": "d3", "grade": 2}, {"query_id": "q1", "doc_id": "d1"},
                                      {"query_id": "q2", "doc_id": "d2", "grade": 1}])
    es = load_evalset(q, c, r)
    assert es.queries == ["red", "blue"] and es.corpus == ["a", "b", "c"]
    assert es.gains == [{2: 2.0, 0: 1.0}, {1: 1.0}]  # grade defaults to 1


def test_evalset_image_side_is_detected(tmp_path: Path):
    q = _write(tmp_path / "q.jsonl", [{"id": "q1", "text": "a cat"}])
    c = _write(tmp_path / "c.jsonl", [{"id": "d1", "image": "cat.png"}, {"id": "d2", "image": "dog.png"}])
    r = _write(tmp_path / "r.jsonl", [{"query_id": "q1", "doc_id": "d1"}])
    es = load_evalset(q, c, r)
    assert es.corpus == ["cat.png", "dog.png"]
    assert (es.query_modality, es.corpus_modality) == ("text", "image")


@pytest.mark.parametrize(
    "queries, corpus, qrels, fragment",
    [
        ([{"id": "q1"}], [{"id": "d1", "text": "a"}], [], "q.jsonl:1: needs id and text or image"),
        ([{"text": "x"}], [{"id": "d1", "text": "a"}], [], "needs id"),
        ([{"id": "q1", "text": "x"}], [{"id": "d1", "text": "a"}, {"id": "d2", "image": "b.png"}], [], "mixes text and image"),
        ([{"id": "q1", "text": "x"}, {"id": "q1", "text": "y"}], [{"id": "d1", "text": "a"}], [], "q.jsonl: duplicate ids"),
        ([{"id": "q1", "text": "x"}], [{"id": "d1", "text": "a"}], [{"query_id": "q1", "doc_id": "d9"}],
         "r.jsonl:1: unknown query_id 'q1' or doc_id 'd9'"),
        ([{"id": "q1", "text": "x"}], [{"id": "d1", "text": "a"}], [{"query_id": "q7", "doc_id": "d1"}], "unknown query_id 'q7'"),
    ],
)
def test_evalset_errors_name_the_file_and_problem(tmp_path: Path, queries, corpus, qrels, fragment):
    q, c, r = (_write(tmp_path / n, rows) for n, rows in (("q.jsonl", queries), ("c.jsonl", corpus), ("r.jsonl", qrels)))
    with pytest.raises(BadInput) as e:
        load_evalset(q, c, r)
    assert fragment in e.value.message
