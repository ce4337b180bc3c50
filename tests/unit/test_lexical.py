"""BM25 recall over tantivy: builds, the live pointer, and queries that must never break the parser."""

from __future__ import annotations

import pytest

from mmsearch.clients.lexical import LexicalStore, check_lexical_fields, query_terms
from mmsearch.errors import BadInput, NotFound

DOCS = [
    {"id": "tiger", "title": "tiger", "text": "large Asian feline (Panthera tigris) with a tawny coat and black stripes"},
    {"id": "zebra", "title": "zebra", "text": "African wild horse with black and white stripes"},
    {"id": "piano", "title": "piano", "text": "a keyboard instrument with strings struck by hammers"},
    {"id": "sku", "title": "part", "text": "replacement valve XK-4411b for model 7"},
]


def build(store: LexicalStore, name: str = "things__b1", docs=DOCS, fields=("title", "text")) -> None:
    w = store.writer(name, list(fields))
    w.upsert(docs)
    w.close()


@pytest.fixture
def store(tmp_path):
    s = LexicalStore(tmp_path)
    build(s)
    s.switch_live("things", "things__b1")
    return s


def test_rare_words_and_codes_are_found_first(store):
    assert store.search("things", "Panthera tigris", 3)[0][0] == "tiger"
    assert store.search("things", "xk 4411b", 3)[0][0] == "sku"
    assert store.search("things", "striped", 3)[0][0] in {"tiger", "zebra"}  # stemmed: striped ~ stripes


def test_scores_are_bm25_descending(store):
    hits = store.search("things", "black stripes", 10)
    assert {h[0] for h in hits} == {"tiger", "zebra"}
    assert hits[0][1] >= hits[1][1] > 0


@pytest.mark.parametrize("text", ['title:tiger', '"unclosed', 'a AND OR NOT (', 'text:[a TO z]', '*', '\x00\ud800?',
                                  'x' * 100_000, ') ) ) ('])
def test_hostile_query_text_never_reaches_the_query_parser(store, text):
    hits = store.search("things", text, 5)  # no exception: syntax is stripped to words
    assert isinstance(hits, list)


def test_field_syntax_cannot_reach_another_field(store):
    # "title:part" must not search the title field for "part" only: both words are plain terms
    hits = store.search("things", "title:part", 5, fields=["text"])
    assert hits == []  # neither "title" nor "part" occurs in any text field


def test_query_terms_are_capped_and_lowercased():
    assert query_terms("Hello, WORLD! OR") == ["hello", "world"]  # "or" is a stopword
    assert query_terms("a thing that makes honey") == ["thing", "makes", "honey"]
    assert len(query_terms("w " * 1000)) == 64


def test_empty_query_finds_nothing(store):
    assert store.search("things", "  ?! ", 5) == []


def test_upsert_replaces_by_id(tmp_path):
    s = LexicalStore(tmp_path)
    w = s.writer("t__b1", ["text"])
    w.upsert([{"id": "1", "text": "old words"}])
    w.commit()
    w.upsert([{"id": "1", "text": "new words"}])  # a resumed build writes a document again
    w.close()
    s.switch_live("t", "t__b1")
    assert s.search("t", "old", 5) == []
    assert [h[0] for h in s.search("t", "words", 5)] == ["1"]


def test_the_live_pointer_switches_and_rolls_back(store, tmp_path):
    build(store, "things__b2", [{"id": "new", "title": "tiger", "text": "a new tiger"}])
    assert store.search("things", "tiger", 5)[0][0] == "tiger"
    store.switch_live("things", "things__b2")
    assert [h[0] for h in store.search("things", "tiger", 5)] == ["new"]
    store.switch_live("things", "things__b1")
    assert store.search("things", "tiger", 5)[0][0] == "tiger"
    store.drop("things__b2")
    with pytest.raises(NotFound, match="things__b2"):
        store.switch_live("things", "things__b2")


def test_an_index_without_a_lexical_build_is_not_found_by_name(store):
    with pytest.raises(NotFound, match="'other'.*--lexical"):
        store.search("other", "tiger", 5)
    store.clear_live("things")
    with pytest.raises(NotFound, match="'things'"):
        store.search("things", "tiger", 5)


def test_unknown_fields_are_named(store):
    with pytest.raises(BadInput, match=r"\['caption'\].*'title', 'text'"):
        store.search("things", "tiger", 5, fields=["caption"])
    assert store.fields("things") == ["title", "text"]
    assert [h[0] for h in store.search("things", "tiger", 5, fields=["title"])] == ["tiger"]


def test_a_build_reopened_with_other_fields_is_refused(store):
    with pytest.raises(BadInput, match="holds fields"):
        store.writer("things__b1", ["text"])


@pytest.mark.parametrize("fields, match", [(["id"], "not 'id'"), (["a b"], "invalid"), (["x", "x"], "twice"), ([""], "invalid")])
def test_bad_field_names(fields, match):
    with pytest.raises(BadInput, match=match):
        check_lexical_fields(fields)


def test_documents_without_the_field_or_with_empty_text_are_kept_out_of_matching(tmp_path):
    s = LexicalStore(tmp_path)
    build(s, "t__b1", [{"id": "1", "text": ""}, {"id": "2"}, {"id": "3", "text": "words"}], fields=("text",))
    s.switch_live("t", "t__b1")
    assert [h[0] for h in s.search("t", "words", 5)] == ["3"]


def test_an_abandoned_writer_drops_uncommitted_terms_and_releases_the_lock(tmp_path):
    s = LexicalStore(tmp_path)
    w = s.writer("t__b1", ["text"])
    w.upsert([{"id": "1", "text": "committed"}])
    w.commit()
    w.upsert([{"id": "2", "text": "uncommitted"}])
    w.abandon()  # a failed build
    again = s.writer("t__b1", ["text"])  # would fail with a lock error if the first writer still held it
    again.close()
    s.switch_live("t", "t__b1")
    assert [h[0] for h in s.search("t", "committed", 5)] == ["1"] and s.search("t", "uncommitted", 5) == []
