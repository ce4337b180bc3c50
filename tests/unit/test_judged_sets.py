"""The per-class judged sets (issue 34): their format, classes and splits; the pieces that build them."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.datasets.gcide import noun_definition
from mmsearch.offline.datasets.judged import SETS_DIR, category_names, leaks, stamp_categories
from mmsearch.offline.eval_served import load_judged
from mmsearch.offline.indexing.build import titled_text

TEXT_CLASSES = {"lemma", "rare", "example", "definition", "caption", "everyday"}


@pytest.mark.parametrize("scene, classes", [("text2text", TEXT_CLASSES), ("text2image", {"caption", "everyday", "category"})])
def test_each_scene_has_a_dev_and_a_heldout_set_with_every_class(scene, classes):
    for split in ("dev", "heldout"):
        judged = load_judged(SETS_DIR / f"{scene}_{split}.jsonl")
        count = Counter(t for j in judged for t in j.tags)
        assert set(count) == classes
        assert all(j.relevant and len(j.tags) == 1 for j in judged)
        assert all((30 if cls == "category" else 50) <= n <= 300 for cls, n in count.items()), count  # 84 folders in halves


def test_dev_and_heldout_share_no_judged_document_in_the_wordnet_classes():
    def docs(split: str, classes: set[str]) -> set[str]:
        rows = [json.loads(x) for x in (SETS_DIR / f"text2text_{split}.jsonl").read_text().splitlines()]
        return {d for r in rows if r["tags"][0] in classes for d in r["relevant"]}

    wn = {"lemma", "rare", "example", "definition"}
    assert not docs("dev", wn) & docs("heldout", wn)  # split by synset
    assert not docs("dev", {"caption", "everyday"}) & docs("heldout", {"everyday"})


def test_a_definition_that_names_the_thing_or_copies_the_gloss_leaks():
    gloss = "any of several fleet black-and-white striped African equines"
    assert leaks("A zebra of the plains", gloss, "zebra")
    assert leaks("A striped horse; any of several fleet black-and-white striped beasts", gloss, "zebra")
    assert leaks("Wild horses of Africa", "a horse", "horse")  # the plural names it too
    assert not leaks("A wild horse of Africa with dark bands", gloss, "zebra")


def test_gcide_gives_one_sense_noun_definitions_cleaned_of_markup():
    block = ('aardvark \\aard"vark`\\ ([aum]rd"v[aum]rk`), n. [D., earth-pig.]\n   (Zool.)\n'
             '   An edentate mammal, of the genus {Orycteropus}, somewhat resembling a pig,\n'
             '   common in some parts of Southern Africa. It feeds on ants.\n   [1913 Webster]\n')
    assert noun_definition(block) == "An edentate mammal, of the genus Orycteropus, somewhat resembling a pig, common in some parts of Southern Africa."
    numbered = block.replace("   An edentate", "   1. An edentate") + "\n   2. Another sense.\n   [1913 Webster]\n"
    assert noun_definition(numbered) is None  # several senses: which one WordNet's is, is unknown
    assert noun_definition(block.replace("[1913 Webster]", "[WordNet 1.5]")) is None  # GCIDE's copy of WordNet
    assert noun_definition(block.replace(", n.", ", v. t.")) is None


def test_embed_title_puts_the_title_before_the_text():
    assert titled_text({"title": "zebra, Equus zebra"}, "a striped equine", "title") == "zebra, Equus zebra: a striped equine"
    assert titled_text({"title": ""}, "text", "title") == "text"
    assert titled_text({}, "text", "title") == "text"
    assert titled_text({"title": "t"}, "text", None) == "text"


def test_a_category_query_finds_every_stamp_in_its_folder_or_below_and_each_folder_lands_in_one_split():
    items = [SimpleNamespace(id=f"{d.replace('/', '_')}_{n}", image=f"{d}/{n}.png")
             for d, k in (("animals/birds", 3), ("animals/birds/cartoon", 2), ("animals/fish", 2), ("food", 4)) for n in range(k)]
    named = {"animals": "animals", "animals/birds": "birds", "animals/fish": "fish", "food": "food", "space": "outer space"}
    sets = stamp_categories(items, named)
    got = {j.query: set(j.relevant) for split in sets.values() for j in split}
    assert set(got) == {"animals", "birds", "food"}  # fish: 2 stamps, space: none (fewer than CATEGORY_MIN)
    assert got["birds"] == {i.id for i in items if i.image.startswith("animals/birds/")}  # cartoon/ counted in its folder
    assert len(got["animals"]) == 7 and all(j.tags == ("category",) for s in sets.values() for j in s)
    assert sum(len(s) for s in sets.values()) == len(got)  # each folder's query in one split only
    assert stamp_categories(items, named) == sets  # the split is by the folder's name: the same every time


def test_the_committed_category_names_cover_folders_with_plain_queries(tmp_path):
    names = category_names()
    assert len(names) >= 60 and all(q == q.strip().lower() and "/" not in q and "_" not in q for q in names.values())
    bad = tmp_path / "c.jsonl"
    for broken in ('{"folder": "b"}', '{"folder": "b", "query": 7}', '{"folder": "b", "query": "  "}'):
        bad.write_text('{"folder": "a", "query": "x"}\n' + broken + "\n")
        with pytest.raises(BadInput, match="c.jsonl:2"):
            category_names(bad)
