"""`mmsearch promote`: the A/B evidence rules (interval above zero, the layer's own control, an
unbroken split, --force) on a hand-made query log, and the edit of the watched experiments file."""

from __future__ import annotations

import pytest

from mmsearch.config import load_config
from mmsearch.errors import BadInput
from mmsearch.experiments.edit import add_arm
from mmsearch.experiments.spec import parse_experiments
from mmsearch.retrieval_service.promote import promote

BASE = """scenes:
  text2text:
    defaults: {embed_model: minilm, index: texts}
"""


class Log:
    """A query log of ``n`` users per arm, each searching 4 times; ``ctr`` of them click every time."""

    def __init__(self, ctrs: dict[str, float], n: int = 300):
        self.entries = []
        for arm, ctr in ctrs.items():
            for u in range(n):
                clicked = u < ctr * n
                self.entries += [{"scene": "text2text", "arms": {"flywheel": arm}, "user_id": f"{arm}-{u}", "ts": 100.0 + u,
                                  "clicks": [{"doc_id": "d"}] if clicked else [], "forced": False} for _ in range(4)]

    def find(self, collection, match, fields=None):
        arm = match.get("arms.flywheel")
        return [e for e in self.entries if arm is None or e["arms"].get("flywheel") == arm]


def _setup(tmp_path, traffic: float = 50):
    path = tmp_path / "experiments.yaml"
    path.write_text(add_arm(BASE, "text2text", "flywheel", "minilm_fw1", {"embed_model": "minilm_fw1", "index": "texts_fw1"},
                            traffic)[0])
    return load_config(environ={}, overrides={"experiments_file": str(path), "data_dir": str(tmp_path)}), path


def test_a_clear_winner_is_promoted_into_the_file(tmp_path):
    cfg, path = _setup(tmp_path)
    done = promote(cfg, Log({"control": 0.3, "minilm_fw1": 0.6}), "text2text", "minilm_fw1", say=lambda _: None)  # type: ignore[arg-type]
    assert done["defaults"] == {"embed_model": "minilm_fw1", "index": "texts_fw1"} and not done["forced"]
    assert done["since"] == 100.0  # the arm's first logged search
    scene = parse_experiments(path.read_text(), "t").scenes["text2text"]
    assert scene.defaults.embed_model == "minilm_fw1" and not scene.layers


@pytest.mark.parametrize("ctrs, traffic, match", [
    ({"control": 0.5, "minilm_fw1": 0.5}, 50, r"diff \+0\.000"),  # no better: the interval holds zero
    ({"control": 0.6, "minilm_fw1": 0.3}, 50, r"diff -0\.300"),
    ({"minilm_fw1": 0.6, "old_fw0": 0.1}, 50, "no control traffic"),  # never against another arm standing in
    ({"control": 0.3, "minilm_fw1": 0.6}, 10, "sample ratio mismatch"),  # 10 % configured, half the users seen
])
def test_without_evidence_nothing_changes_unless_forced(tmp_path, ctrs, traffic, match):
    cfg, path = _setup(tmp_path, traffic)
    before = path.read_text()
    with pytest.raises(BadInput, match=match):
        promote(cfg, Log(ctrs), "text2text", "minilm_fw1", say=lambda _: None)  # type: ignore[arg-type]
    assert path.read_text() == before
    said: list[str] = []
    assert promote(cfg, Log(ctrs), "text2text", "minilm_fw1", force=True, say=said.append)["forced"]  # type: ignore[arg-type]
    assert "without evidence (--force)" in said[0] and "flywheel" not in path.read_text()


def test_an_arm_that_is_not_there_is_named(tmp_path):
    cfg, _ = _setup(tmp_path)
    with pytest.raises(Exception, match="no arm 'minilm_fw9'"):
        promote(cfg, Log({}), "text2text", "minilm_fw9", say=lambda _: None)  # type: ignore[arg-type]
