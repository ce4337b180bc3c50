"""Triton ``config.pbtxt`` written and read through Triton's own ModelConfig protobuf.

Going through ``model_config_pb2`` (shipped by tritonclient) rather than string templates means
what we write is exactly what a full Triton server with the onnxruntime backend will parse.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import Manifest, TensorSpec

_TRITON_DTYPES = {
    "int64": mc.TYPE_INT64,
    "int32": mc.TYPE_INT32,
    "float32": mc.TYPE_FP32,
    "float16": mc.TYPE_FP16,
}


def _tensor_dims(spec: TensorSpec) -> list[int]:
    # With max_batch_size > 0, Triton's dims leave out the batch axis.
    return list(spec.shape[1:])


def build_model_config(
    manifest: Manifest,
    preferred_batch_sizes: list[int],
    max_queue_delay_us: int,
    instance_count: int = 1,
    instance_kind: str = "cpu",
) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=manifest.name, backend="onnxruntime", max_batch_size=manifest.max_batch_size)
    for spec in manifest.inputs:
        cfg.input.add(name=spec.name, data_type=_TRITON_DTYPES[spec.dtype], dims=_tensor_dims(spec))
    for spec in manifest.outputs:
        cfg.output.add(name=spec.name, data_type=_TRITON_DTYPES[spec.dtype], dims=_tensor_dims(spec))
    preferred = sorted({b for b in preferred_batch_sizes if 0 < b <= manifest.max_batch_size})
    cfg.dynamic_batching.preferred_batch_size.extend(preferred)
    cfg.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    if instance_kind not in ("cpu", "gpu"):
        raise BadInput(f"instance kind must be cpu or gpu, got {instance_kind!r}")
    kind = mc.ModelInstanceGroup.KIND_GPU if instance_kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(kind=kind, count=instance_count)
    return cfg


def write_model_config(path: str | Path, cfg: mc.ModelConfig) -> None:
    Path(path).write_text(text_format.MessageToString(cfg), encoding="utf-8")


def read_model_config(path: str | Path) -> mc.ModelConfig:
    try:
        return text_format.Parse(Path(path).read_text(encoding="utf-8"), mc.ModelConfig())
    except text_format.ParseError as e:
        raise BadInput(f"{path} is not a valid Triton ModelConfig: {e}") from e
