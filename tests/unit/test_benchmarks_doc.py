"""docs/benchmarks.md is what the tracked result files give, and a result file says where it came from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import results_io  # noqa: E402


def test_the_committed_page_matches_the_results():
    assert results_io.PAGE.read_text() == results_io.page(results_io.load_results()), \
        "run `make benchmarks-doc` and commit docs/benchmarks.md"


def test_a_result_is_written_with_its_provenance_and_shown_as_synthetic(tmp_path, capsys):
    with pytest.raises(ValueError, match="synthetic"):
        results_io.write_result("x", "X", "x: 1", {"description": "made up"}, {}, argv=["bench/x.py"], out=tmp_path / "x.json")
    results_io.write_result("vec", "Vector scale", "vec: p50 1 ms", {"description": "clustered random vectors", "synthetic": True},
                            {"p50_ms": 1.0}, argv=["bench/vec.py", "--n", "10"], out=tmp_path / "vec.json")
    assert "vec: p50 1 ms" in capsys.readouterr().out
    r = json.loads((tmp_path / "vec.json").read_text())
    assert r["command"] == ".venv/bin/python bench/vec.py --n 10" and r["machine"]["cores"] and r["commit"]
    text = results_io.page(results_io.load_results(tmp_path))
    assert "**synthetic**" in text and "(synthetic)" in text and "`bench/vec.py --n 10`" not in text
    assert ".venv/bin/python bench/vec.py --n 10" in text


def test_a_result_without_its_provenance_is_refused_by_name(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"name": "old", "summary": "fast"}))
    with pytest.raises(ValueError, match="old.json: missing title, command, commit, machine, date, data"):
        results_io.load_results(tmp_path)
