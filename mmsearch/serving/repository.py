"""The shadow repository Triton actually loads: one python-backend model per exported ONNX model.

The bundled tritonserver has no onnxruntime backend, so each exported model is mirrored as the
same config.pbtxt with ``backend: "python"`` and a ``1/model.py`` (serving/triton_model.py) that
runs the exported ``model.onnx`` with ONNX Runtime. Inputs, outputs, max_batch_size, dynamic
batching and instance groups are copied untouched, so behaviour matches a full Triton with the
onnxruntime backend serving the original folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from mmsearch.errors import BadInput, NotFound
from mmsearch.modelrepo.manifest import CONFIG_FILE, MODEL_FILE, model_versions
from mmsearch.modelrepo.runtime_needs import ModelRefused, check_model_dir
from mmsearch.modelrepo.triton_config import read_model_config, write_model_config

RUNNER = Path(__file__).with_name("triton_model.py")


def discover(repo: Path) -> list[str]:
    """Models of an export repository: folders with a config.pbtxt and at least one versioned model.onnx."""
    if not repo.is_dir():
        raise NotFound(f"model repository not found: {repo}")
    return sorted(p.name for p in repo.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / CONFIG_FILE).is_file() and model_versions(p))


def shadow_config(cfg: mc.ModelConfig, onnx_path: Path, cpu_threads: int, use_cuda: bool) -> mc.ModelConfig:
    out = mc.ModelConfig()
    out.CopyFrom(cfg)
    out.backend = "python"
    out.ClearField("platform")
    out.parameters["onnx_path"].string_value = str(onnx_path)
    out.parameters["cpu_threads"].string_value = str(cpu_threads)
    out.parameters["execution_provider"].string_value = "cuda" if use_cuda else "cpu"
    if use_cuda:
        for g in out.instance_group:
            g.kind = mc.ModelInstanceGroup.KIND_GPU
    return out


def sync_model(repo: Path, shadow: Path, name: str, cpu_threads: int = 1, use_cuda: bool = False) -> Path:
    """(Re)write the shadow entry of one model: every version of the export becomes a version here.
    ModelRefused (before anything is written: a served older export keeps serving) when its manifest needs
    a newer ONNX Runtime than the one the python backend runs (this interpreter's)."""
    src = repo / name
    if not (src / CONFIG_FILE).is_file():
        raise NotFound(f"model {name!r} not found in {repo}")
    check_model_dir(src)
    versions = model_versions(src)
    if not versions:
        raise BadInput(f"model {name!r} in {repo} has no <version>/{MODEL_FILE}")
    cfg = read_model_config(src / CONFIG_FILE)
    if cfg.name and cfg.name != name:
        raise BadInput(f"{src / CONFIG_FILE} names model {cfg.name!r}, but its folder is {name!r}")
    if cfg.backend not in ("onnxruntime", "") and cfg.platform != "onnxruntime_onnx":
        raise BadInput(f"model {name!r}: backend {cfg.backend!r} is not onnxruntime")
    cfg.name = name
    stage = shadow / f".{name}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    onnx_by_version = {v: (src / str(v) / MODEL_FILE).resolve() for v in versions}
    # One config for all versions: the python backend reads onnx_path per version from a sidecar.
    write_model_config(stage / CONFIG_FILE, shadow_config(cfg, onnx_by_version[versions[-1]], cpu_threads, use_cuda))
    for v, onnx_path in onnx_by_version.items():
        (stage / str(v)).mkdir()
        shutil.copy(RUNNER, stage / str(v) / "model.py")
        (stage / str(v) / "onnx_path").write_text(str(onnx_path), encoding="utf-8")
    dest = shadow / name
    if dest.exists():
        shutil.rmtree(dest)
    stage.rename(dest)
    return dest


def sync_all(repo: Path, shadow: Path, cpu_threads: int = 1, use_cuda: bool = False) -> tuple[list[str], dict[str, str]]:
    """The shadow of every model of the repository: (the names written, {name: why} of the models refused).
    A refused model is left out, so Triton starts and serves the others."""
    shadow.mkdir(parents=True, exist_ok=True)
    names = discover(repo)
    for stale in {p.name for p in shadow.iterdir() if p.is_dir() and not p.name.startswith(".")} - set(names):
        shutil.rmtree(shadow / stale)
    synced, refused = [], {}
    for name in names:
        try:
            sync_model(repo, shadow, name, cpu_threads, use_cuda)
            synced.append(name)
        except ModelRefused as e:
            refused[name] = e.message
    return synced, refused
