"""The repository watcher: a model exported (or re-exported) after start is reported once; a loader
failure is logged, not fatal, and not retried until the files change again."""

from __future__ import annotations

import os

from mmsearch.modelrepo.repo_watch import RepositoryWatcher
from mmsearch.runtime.net import wait_until


def model(repo, name: str, version: int = 1, content: bytes = b"onnx") -> None:
    (repo / name / str(version)).mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(f'name: "{name}"')
    (repo / name / str(version) / "model.onnx").write_bytes(content)


def test_new_changed_and_new_version_models_are_reported(tmp_path):
    model(tmp_path, "old")
    seen: list[list[str]] = []
    w = RepositoryWatcher(tmp_path, seen.append, 0)
    assert w.check() == []  # what was there at start is the baseline
    model(tmp_path, "new")
    (tmp_path / ".staging").mkdir()  # hidden folders (export's staging) are never models
    assert w.check() == ["new"] and w.check() == []
    model(tmp_path, "old", version=2)
    assert w.check() == ["old"]
    path = tmp_path / "old" / "1" / "model.onnx"
    path.write_bytes(b"re-exported weights")
    os.utime(path, ns=(1, 1))
    assert w.check() == ["old"] and seen == [["new"], ["old"], ["old"]]


def test_a_failing_loader_does_not_stop_the_thread(tmp_path):
    calls: list[list[str]] = []

    def flaky(names: list[str]) -> None:
        calls.append(names)
        if len(calls) == 1:
            raise RuntimeError("triton said no")

    w = RepositoryWatcher(tmp_path, flaky, 0.05).start()
    try:
        model(tmp_path, "broken")
        assert wait_until(lambda: len(calls) == 1, 5)
        model(tmp_path, "fine")
        assert wait_until(lambda: len(calls) == 2, 5) and calls[1] == ["fine"]  # broken is not retried unchanged
    finally:
        w.stop()
    assert w._thread is None
