"""The distributed build's driver side without Ray: blocks cut by the reader's rules, lines read back by offset,
and the error naming the extra when Ray is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.indexing.build import BuildOptions
from mmsearch.offline.indexing.distributed import import_ray, plan_blocks
from mmsearch.offline.indexing.reader import iter_lines, iter_lines_at, read_lines_at


def _docs(tmp_path: Path) -> Path:
    lines = [json.dumps({"id": f"d{i}", "text": f"text {i}"}) for i in range(10)]
    lines[3:3] = ["{bad", json.dumps({"id": "d0", "text": "duplicate"}), ""]
    p = tmp_path / "docs.jsonl"
    p.write_bytes(("\r\n".join(lines) + "\n").encode())
    return p


def test_blocks_hold_the_accepted_lines_and_the_rejects_and_read_back_by_offset(tmp_path):
    p = _docs(tmp_path)
    o = BuildOptions(index="t", docs=p, model="m")
    blocks = list(plan_blocks(o, "text", 0, 4))
    assert [len(b.accepted) for b in blocks] == [4, 4, 2]
    assert [r.line for r in blocks[0].rejects] == [4, 5] and "duplicate id" in blocks[0].rejects[1].reason
    assert blocks[0].first_line == 1 and blocks[-1].last_line == 13 and sum(b.lines for b in blocks) == 13
    lines = dict(iter_lines(p))
    for b in blocks:
        assert dict(read_lines_at(p, b.start, b.end, b.first_line)) == {n: lines[n] for n in range(b.first_line, b.last_line + 1)}
    assert [b.first_line for b in plan_blocks(o, "text", 7, 4)] == [8, 12]  # after a checkpoint, duplicates of earlier lines still caught
    with pytest.raises(BadInput, match=r"docs.jsonl:4: malformed JSON"):
        list(plan_blocks(BuildOptions(index="t", docs=p, model="m", on_error="fail"), "text", 0, 4))


def test_offsets_split_on_newlines_only(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"a\rb\r\n\nc\u2028d\nlast")
    at = list(iter_lines_at(p))
    assert [(n, raw) for n, _s, _e, raw in at] == list(iter_lines(p))
    assert list(read_lines_at(p, at[0][1], at[-1][2], 1)) == list(iter_lines(p))


def test_a_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BadInput, match=r"mmsearch\[distributed\]"):
        import_ray()
