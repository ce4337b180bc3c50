"""Query log -> pairs: the judgement rules (skip-above, distinct users, bots, forced, paging) and the
split by query, on hand-written log entries."""

from __future__ import annotations

import json

import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.eval_served import load_judged
from mmsearch.offline.flywheel.pairs import PairOptions, bots, collect, heldout, make_pairs, normalise, write_pairs


def entry(user: str, query: str, results: list[str], clicks: list[str], ts: float = 0.0, **kw) -> dict:
    return {"scene": "text2text", "user_id": user, "ts": ts, "query": {"text": query}, "results": results,
            "clicks": [{"doc_id": d} for d in clicks], "forced": False, "offset": 0, **kw}


TEXTS = {d: f"text of {d}" for d in "abcdefgh"}


def test_skip_above_gives_negatives_and_a_clicked_result_is_never_one():
    log = collect([entry("u1", "Red  Cat", ["a", "b", "c", "d"], ["c"]),
                   entry("u2", "red cat", ["a", "b", "c", "d"], ["b", "c"])], PairOptions())
    assert dict(log.clicks["red cat"]) == {"c": {"u1", "u2"}, "b": {"u2"}}  # normalised query, users per document
    assert set(log.skips["red cat"]) == {"a", "b"}  # d was below the last click: never read, not a negative
    ps = make_pairs(log, TEXTS, PairOptions(min_users=2, heldout_fraction=1e-9))
    assert [(p.query, p.positive, p.negative) for p in ps.train] == [("red cat", "text of c", "text of a")]


def test_a_pair_needs_distinct_users_not_repeated_clicks():
    same_user = [entry("u1", "q", ["a", "b"], ["b"], ts=float(i)) for i in range(5)]
    ps = make_pairs(collect(same_user, PairOptions()), TEXTS, PairOptions(min_users=2, heldout_fraction=1e-9))
    assert ps.train == [] and ps.counts["pairs under min users"] == 1


def test_forced_other_scene_image_and_later_page_requests_are_left_out():
    rows = [entry("u1", "q", ["a"], ["a"], forced=True), entry("u2", "q", ["a"], ["a"], scene="text2image"),
            {**entry("u3", "q", ["a"], ["a"]), "query": {"image_sha256": "00"}}, entry("u4", "q", ["a"], ["a"], offset=10),
            entry("u5", "q", ["a"], ["zz"])]  # a click on a result not on the page judges nothing
    log = collect(rows, PairOptions())
    assert not log.clicks
    assert {k: log.counts[k] for k in ("forced", "other scene", "not a text query", "not the first page", "no click")} == dict.fromkeys(
        ("forced", "other scene", "not a text query", "not the first page", "no click"), 1)
    assert collect(rows[:1], PairOptions(include_forced=True)).clicks["q"]["a"] == {"u1"}


def test_a_user_searching_faster_than_the_bot_rate_is_dropped_whole():
    rows = [entry("bot", f"q{i}", ["a", "b"], ["b"], ts=i * 0.5) for i in range(100)]
    rows += [entry("human", f"q{i}", ["a", "b"], ["b"], ts=i * 5.0) for i in range(12)]
    assert bots(rows, 60) == {"bot"}
    log = collect(rows, PairOptions())
    assert log.counts["bot"] == 100 and all(users == {"human"} for per in log.clicks.values() for users in per.values())


def test_the_split_is_by_query_and_stable():
    opts = PairOptions(min_users=1)
    rows = [entry(f"u{i}", f"query {i % 40}", ["a", "b"], ["b" if i % 2 else "a"]) for i in range(400)]
    ps = make_pairs(collect(rows, opts), TEXTS, opts)
    held = {j.query for j in ps.heldout}
    assert held and not held & {p.query for p in ps.train}
    assert held == {q for q in (f"query {i}" for i in range(40)) if heldout(q, opts)}
    assert 0.05 < len(held) / 40 < 0.45
    assert all(p.group == p.query for p in ps.train)  # finetune's own validation split is by query too


def test_written_files_round_trip(tmp_path):
    log = collect([entry("u1", "q", ["a", "b"], ["b"]), entry("u2", "q", ["a", "b"], ["b"])], PairOptions())
    ps = make_pairs(log, TEXTS, PairOptions(heldout_fraction=1e-9))
    paths = write_pairs(ps, tmp_path / "out")
    assert json.loads(paths["train.jsonl"].read_text()) == {"query": "q", "positive": "text of b", "group": "q", "negative": "text of a"}
    assert {json.loads(x)["id"] for x in paths["corpus.jsonl"].read_text().splitlines()} == {"a", "b"}
    # the same train queries with their clicked ids, a judged set a ranker trains on (train-ranker --judged)
    assert [(j.query, j.relevant) for j in load_judged(paths["train_judged.jsonl"])] == [("q", {"b": 1.0})]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_bad_options_are_named():
    with pytest.raises(BadInput, match="heldout"):
        PairOptions(heldout_fraction=1.5).check()
    with pytest.raises(BadInput, match="min-users"):
        PairOptions(min_users=0).check()
    assert normalise("  Red\tCAT ") == "red cat"


def test_a_popular_query_does_not_turn_stray_clicks_into_pairs():
    """40 users search "q"; 36 click the answer a, 2 click b by mistake: a count of 2 users would
    make b a pair, a click rate of 2/40 does not."""
    rows = [entry(f"u{i}", "q", ["a", "b", "c"], ["a"] if i < 36 else ["b"] if i < 38 else []) for i in range(40)]
    opts = PairOptions(min_users=2, min_click_rate=0.1, heldout_fraction=1e-9)
    ps = make_pairs(collect(rows, opts), TEXTS, opts)
    assert [p.positive for p in ps.train] == ["text of a"] and ps.counts["pairs under min click rate"] == 1
    loose = PairOptions(min_users=2, min_click_rate=0.0, heldout_fraction=1e-9)
    assert len(make_pairs(collect(rows, loose), TEXTS, loose).train) == 2
    with pytest.raises(BadInput, match="min-click-rate"):
        PairOptions(min_click_rate=2).check()


def test_image_documents_are_named_by_their_files_and_none_escapes_the_root(tmp_path):
    from mmsearch.offline.flywheel.pairs import pairs_from_log

    root = tmp_path / "images"
    root.mkdir()
    (root / "a.png").write_bytes(b"png")
    (tmp_path / "outside.png").write_bytes(b"png")
    docs = {"a": {"image": "a.png"}, "b": {"image": "../outside.png"}, "c": {"image": "http://x.test/c.png"},
            "d": {"image": "missing.png"}, "e": {"caption": "no image"}}

    class Store:
        def find(self, collection, flt, fields):
            return [entry(f"u{i}", "q", list(docs), [d], scene="text2image") for i in range(3) for d in docs]

        def get_many(self, index, ids):
            return [docs.get(i) for i in ids]

    ps = pairs_from_log(Store(), "shapes", PairOptions(scene="text2image", min_users=1, min_click_rate=0.0),  # type: ignore[arg-type]
                        image_root=root)
    assert ps.corpus == {"a": str((root / "a.png").resolve())}


def test_since_reads_only_the_searches_from_then_on():
    from mmsearch.offline.flywheel.pairs import pairs_from_log

    seen = []

    class Store:
        def find(self, collection, flt, fields):
            seen.append(flt)
            return []

        def get_many(self, index, ids):
            return []

    pairs_from_log(Store(), "texts", PairOptions(since=1700000000.0))  # type: ignore[arg-type]
    pairs_from_log(Store(), "texts", PairOptions())  # type: ignore[arg-type]
    assert seen == [{"scene": "text2text", "ts": {"$gte": 1700000000.0}}, {"scene": "text2text"}]
