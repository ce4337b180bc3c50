"""Bad input to `mmsearch export`: one-line errors, exit code 2, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmsearch.cli import main as cli
from mmsearch.errors import ParityError


def run(capsys, *args) -> tuple[int, str]:
    code = cli(["export", *map(str, args)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


def leftovers(repo: Path) -> list[str]:
    staged = [p.name for p in repo.parent.glob(f".{repo.name}.export-*")]
    return staged + ([p.name for p in repo.iterdir()] if repo.exists() else [])


@pytest.mark.parametrize("flag", ["--family", "--kind"])  # --kind: the old name
def test_unknown_family(capsys, tmp_path, tiny_text, flag):
    code, err = run(capsys, "--model", tiny_text, flag, "word2vec", "--repo", tmp_path / "r")
    assert code == 2 and "unknown model family 'word2vec'" in err
    assert leftovers(tmp_path / "r") == []


def test_missing_folder_and_file_instead_of_folder(capsys, tmp_path):
    code, err = run(capsys, "--model", tmp_path / "nope", "--repo", tmp_path / "r")
    assert code == 2 and "model not found" in err
    (tmp_path / "f.bin").write_bytes(b"x")
    code, err = run(capsys, "--model", tmp_path / "f.bin", "--repo", tmp_path / "r")
    assert code == 2 and "is a file" in err


def test_folder_that_is_not_a_model(capsys, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    code, err = run(capsys, "--model", tmp_path / "notes", "--repo", tmp_path / "r")
    assert code == 2 and "is not a model folder" in err


def test_missing_weights_in_a_model_folder(capsys, tmp_path, tiny_text):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_text, broken)
    (broken / "model.safetensors").unlink()
    code, err = run(capsys, "--model", broken, "--repo", tmp_path / "r")
    assert code == 2 and "cannot load sentence-transformers model" in err
    assert leftovers(tmp_path / "r") == []


def test_image_tower_of_a_text_model(capsys, tmp_path, tiny_text):
    code, err = run(capsys, "--model", tiny_text, "--towers", "image", "--repo", tmp_path / "r")
    assert code == 2 and "has no image tower" in err and "it has: text" in err


def test_existing_output_refused_unless_force(capsys, tmp_path, tiny_text):
    repo = tmp_path / "r"
    assert run(capsys, "--model", tiny_text, "--name", "t", "--repo", repo)[0] == 0
    before = (repo / "t" / "mmsearch.json").read_text()
    code, err = run(capsys, "--model", tiny_text, "--name", "t", "--repo", repo)
    assert code == 2 and "already exists" in err and "--force" in err
    assert (repo / "t" / "mmsearch.json").read_text() == before
    assert run(capsys, "--model", tiny_text, "--name", "t", "--repo", repo, "--force")[0] == 0
    assert sorted(leftovers(repo)) == ["t"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "-x", "x" * 200])
def test_hostile_names(capsys, tmp_path, tiny_text, name):
    code, err = run(capsys, "--model", tiny_text, f"--name={name}", "--repo", tmp_path / "r")
    assert code == 2 and "invalid" in err
    assert not (tmp_path / "escape").exists()


def test_parity_failure_is_loud_and_leaves_nothing(monkeypatch, tmp_path, tiny_clip):
    """A broken reference (as if the graph diverged) fails the export; the first tower is not published either."""
    from mmsearch.offline import models as M
    from mmsearch.offline.export import export_model

    real = M.load_model

    def sabotaged(*a, **kw):
        loaded = real(*a, **kw)
        tower = loaded.towers["image"]
        tower.reference = lambda raw: np.random.default_rng(0).normal(size=(len(raw), tower.dim))
        return loaded

    monkeypatch.setattr("mmsearch.offline.export.load_model", sabotaged)
    repo = tmp_path / "r"
    with pytest.raises(ParityError, match=r"clip_image: ONNX Runtime does not match .* min cosine"):
        export_model(tiny_clip, repo, "clip")
    assert leftovers(repo) == []


def test_bad_numbers_on_the_command_line(capsys, tmp_path, tiny_text):
    code, err = run(capsys, "--model", tiny_text, "--max-batch-size", "0", "--repo", tmp_path / "r")
    assert code == 2 and "--max-batch-size" in err
    code, err = run(capsys, "--model", tiny_text, "--eval-pairs", tmp_path / "none.jsonl", "--repo", tmp_path / "r")
    assert code == 2 and "--eval-pairs" in err


def test_unknown_command_and_help(capsys):
    assert cli(["frobnicate"]) == 2 and "unknown command" in capsys.readouterr().err
    assert cli(["--help"]) == 0 and "export" in capsys.readouterr().out
