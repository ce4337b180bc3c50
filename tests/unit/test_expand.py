"""Document expansion with WordNet glosses, over a tiny WordNet laid out like the Debian package."""

from __future__ import annotations

import pytest

from mmsearch.offline.datasets.expand import Glosser, head_words

# data.noun lines: offset lexfile(hex-free int) n word-count words... | gloss; lexfile 05 animal, 06 artifact
DATA = """  licence header line
00000001 05 n 01 zebra 0 000 | any of several fleet black-and-white striped African equines
00000002 06 n 01 mouse 0 000 | a hand-operated electronic device that controls the coordinates of a cursor
00000003 05 n 01 mouse 0 000 | any of numerous small rodents typically resembling diminutive rats
00000004 06 n 02 fire_truck 0 fire_engine 0 000 | any of various large trucks that carry firemen
00000005 06 n 01 truck 0 000 | an automotive vehicle suitable for hauling
"""
INDEX = """  licence header line
zebra n 1 0 1 0 00000001
mouse n 2 0 2 0 00000002 00000003
fire_truck n 1 0 1 0 00000004
truck n 1 0 1 0 00000005
"""


@pytest.fixture
def glosser(tmp_path):
    root = tmp_path / "wordnet-base"
    (root / "usr/share/wordnet").mkdir(parents=True)
    (root / "usr/share/wordnet/data.noun").write_text(DATA)
    (root / "usr/share/wordnet/index.noun").write_text(INDEX)
    (root / ".complete").write_text("")
    return Glosser(tmp_path)


def test_the_head_noun_is_found_and_glossed(glosser):
    assert glosser.gloss("A zebra.", "animals").startswith("any of several fleet")
    assert glosser.gloss("Two zebras (a herd).", "animals").startswith("any of several fleet")  # plural, parenthesis


def test_the_longest_phrase_wins_over_its_last_word(glosser):
    assert glosser.gloss("A big red fire truck.", "vehicles").startswith("any of various large trucks")


def test_the_sense_follows_the_stamp_folder(glosser):
    assert "rodents" in glosser.gloss("A mouse.", "animals")
    assert "cursor" in glosser.gloss("A mouse.", "household")
    assert "cursor" in glosser.gloss("A mouse.", "seasonal")  # no preference: the most frequent sense


def test_unknown_words_give_no_gloss(glosser):
    assert glosser.gloss("Xyzzy!", "symbols") is None and glosser.gloss("", "") is None
    assert head_words("A pair of binoculars — for birds.") == ["binoculars"]
