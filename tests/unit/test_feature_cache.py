"""The locked image tower's feature cache: a row comes from the cache only for the same tower weights,
the same preprocessing and the same image bytes; anything else is computed again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmsearch.errors import BadInput
from mmsearch.offline.training.feature_cache import FeatureCache

PRE = {"resize_shortest_edge": 8, "crop_size": 8}


class Counting:
    """A stand-in tower's forward: a row per image from its bytes, counting the images it was asked for."""

    def __init__(self, scale: float = 1.0) -> None:
        self.asked: list[str] = []
        self.scale = scale

    def __call__(self, paths: list[str]) -> torch.Tensor:
        self.asked += paths
        return torch.tensor([[len(Path(p).read_bytes()) * self.scale, float(Path(p).read_bytes()[0])] for p in paths])


def images(tmp_path: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(bytes([65 + i]) * (10 + i))
        out.append(str(p))
    return out


def tower(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def test_a_second_training_reads_every_row_from_the_cache(tmp_path: Path) -> None:
    paths, root = images(tmp_path, 4), tmp_path / "cache"
    first, second = Counting(), Counting()
    a = FeatureCache(root, tower(0), PRE).features(paths, first)
    cache = FeatureCache(root, tower(0), PRE)
    b = cache.features(paths, second)
    assert first.asked == paths and second.asked == []
    assert (cache.hits, cache.computed) == (4, 0)
    assert all(torch.equal(a[p], b[p]) for p in paths)


def test_only_new_or_edited_images_are_computed(tmp_path: Path) -> None:
    paths, root = images(tmp_path, 3), tmp_path / "cache"
    FeatureCache(root, tower(0), PRE).features(paths[:2], Counting())
    Path(paths[0]).write_bytes(b"Zedited image bytes")
    again = Counting()
    rows = FeatureCache(root, tower(0), PRE).features(paths, again)
    assert sorted(again.asked) == sorted([paths[0], paths[2]])  # paths[1] unchanged: from the cache
    assert rows[paths[0]][0].item() == len(b"Zedited image bytes")


@pytest.mark.parametrize("other", [lambda: (tower(1), PRE), lambda: (tower(0), {**PRE, "crop_size": 16})],
                         ids=["other weights", "other preprocessing"])
def test_another_tower_or_preprocessing_never_reads_these_rows(tmp_path: Path, other) -> None:
    paths, root = images(tmp_path, 2), tmp_path / "cache"
    FeatureCache(root, tower(0), PRE).features(paths, Counting())
    t, pre = other()
    again = Counting(scale=2.0)
    rows = FeatureCache(root, t, pre).features(paths, again)
    assert again.asked == paths and rows[paths[0]][0].item() == 2 * 10


def test_no_root_computes_everything_and_writes_nothing(tmp_path: Path) -> None:
    paths = images(tmp_path, 2)
    for _ in range(2):
        c = Counting()
        FeatureCache(None, tower(0), PRE).features(paths, c)
        assert c.asked == paths
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img0.png", "img1.png"]


def test_a_torn_cache_file_is_computed_again_and_rewritten(tmp_path: Path) -> None:
    paths, root = images(tmp_path, 2), tmp_path / "cache"
    cache = FeatureCache(root, tower(0), PRE)
    cache.features(paths, Counting())
    assert cache.file is not None
    cache.file.write_bytes(cache.file.read_bytes()[:40])
    again = Counting()
    FeatureCache(root, tower(0), PRE).features(paths, again)
    assert again.asked == paths
    third = Counting()
    FeatureCache(root, tower(0), PRE).features(paths, third)
    assert third.asked == []
    assert [p.name for p in root.iterdir()] == [cache.file.name]  # no temporary file left beside it


def test_no_images_asks_nothing_of_the_tower(tmp_path: Path) -> None:
    for root in (None, tmp_path / "cache"):
        c = Counting()
        assert FeatureCache(root, tower(0), PRE).features([], c) == {} and c.asked == []


def test_an_unreadable_image_is_bad_input_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="missing.png"):
        FeatureCache(tmp_path / "cache", tower(0), PRE).features([str(tmp_path / "missing.png")], Counting())


def test_a_change_in_how_svgs_are_rendered_starts_a_new_cache_file(monkeypatch):
    from mmsearch.modelrepo import svg
    from mmsearch.offline.training.feature_cache import tower_digest

    t = tower(0)
    before = tower_digest(t, PRE)
    monkeypatch.setattr(svg, "RENDER_VERSION", svg.RENDER_VERSION + 1)
    assert tower_digest(t, PRE) != before and tower_digest(tower(0), PRE) == tower_digest(t, PRE)
