"""Triton python-backend model that runs one exported ONNX model with ONNX Runtime.

The launcher copies this file as ``<shadow repo>/<model>/1/model.py`` and writes a config.pbtxt
equal to the exported one except ``backend: "python"`` plus parameters naming the ONNX file, so
tensor names, dtypes, shapes, max_batch_size, dynamic batching and instance count are exactly
those a full Triton with the onnxruntime backend would use on the same repository.

Runs inside the python backend stub process: it imports only numpy, onnxruntime and
triton_python_backend_utils (no mmsearch), and turns every bad request into a TritonError
with INVALID_ARG so the server keeps serving everyone else. Failures inside ONNX Runtime are ours,
not the caller's: out of memory and device errors answer UNAVAILABLE (try again, or elsewhere),
anything else INTERNAL; only ORT's own InvalidArgument (the input does not fit the graph) stays
INVALID_ARG. Clients map these to Unavailable, Internal and BadInput (mmsearch/errors.py).
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_DTYPES = {"TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_FP32": np.float32, "TYPE_FP16": np.float16}
# ORT's exception classes (onnxruntime.capi.onnxruntime_pybind11_state) and messages that mean the
# server ran short of memory or lost its device: transient, not the request's fault.
_RESOURCE_CLASSES = {"DeviceReset", "EPFail", "MemoryError"}
_RESOURCE_WORDS = ("out of memory", "bad_alloc", "bad allocation", "failed to allocate", "cuda failure", "cudnn",
                   "cublas", "device")


def run_error_code(e):
    """The TritonError code for an exception from ``session.run``: the inputs were already checked
    (dtype, batch, finite, shapes), so what ORT raises is a server-side failure unless ORT itself
    says the argument is invalid."""
    kind, text = type(e).__name__, str(e).lower()
    if kind == "InvalidArgument":
        return pb_utils.TritonError.INVALID_ARG
    if kind in _RESOURCE_CLASSES or any(w in text for w in _RESOURCE_WORDS):
        return getattr(pb_utils.TritonError, "UNAVAILABLE", pb_utils.TritonError.INTERNAL)
    return pb_utils.TritonError.INTERNAL


PROVIDER_METRIC = "mmsearch_model_execution_provider"


def live_provider(name, asked, live):
    """The provider the live session really runs on (ORT falls back to CPU, with a mere warning, when the
    CUDA provider cannot start): a GPU asked for but absent from the session is an error naming the model,
    so the model fails to load instead of serving slowly on the CPU."""
    live = list(live)
    if "CUDAExecutionProvider" in asked and "CUDAExecutionProvider" not in live:
        raise RuntimeError(f"{name}: the GPU was asked for (execution_provider cuda), but the live ONNX Runtime "
                           f"session runs on {', '.join(live) or 'nothing'}: CUDA could not start (driver, libraries, device?)")
    return live[0] if live else "CPUExecutionProvider"


def report_provider(name, provider):
    """A gauge in Triton's /metrics, ``mmsearch_model_execution_provider{model, provider} 1``, from the live
    session: what /v1/models reports (clients/inference.py). Kept by the model (a metric lives as long as its
    object); None where the python backend has no custom metrics."""
    family = getattr(pb_utils, "MetricFamily", None)
    if family is None:
        return None
    try:
        fam = family(name=PROVIDER_METRIC, description="the ONNX Runtime execution provider a model's live session runs on",
                     kind=family.GAUGE)
        metric = fam.Metric(labels={"model": name, "provider": provider})
        metric.set(1)
        return fam, metric
    except Exception:  # noqa: BLE001 - reporting must never stop a model from serving
        return None


def _param(cfg, key, default=""):
    return cfg.get("parameters", {}).get(key, {}).get("string_value", default)


def trim_padding(batch, seq_inputs):
    """Drop the trailing columns that are padding in every row (attention_mask 0) from the
    ``seq_inputs`` (the inputs whose config dims are [-1]: token sequences).

    Requests arrive padded to a length bucket so that Triton's dynamic batcher can merge them; once
    merged, the all-padding tail is pure cost (measured on int8 MiniLM, one thread, batch 1: 1.72 ms
    at 16 tokens against 0.80 ms at the query's own 4). In fp32, masked positions change no other
    position's output and pooling ignores them: the same embedding. Dynamic int8 computes its
    activation scales over the whole tensor, padding included, so there a lone query now gets the
    embedding of its unpadded encoding (what in-process encoding gives) instead of a padding-shifted
    one. Only for models whose outputs have no sequence axis (``sequence_inputs``)."""
    mask = batch.get("attention_mask")
    if mask is None or mask.ndim != 2 or "attention_mask" not in seq_inputs:
        return batch
    used = np.flatnonzero(mask.any(axis=0))
    width = int(used[-1]) + 1 if used.size else 1
    if width >= mask.shape[1]:
        return batch
    return {k: (v[:, :width] if k in seq_inputs and v.ndim == 2 else v) for k, v in batch.items()}


def sequence_inputs(cfg):
    """The inputs trim_padding may cut: token sequences (dims [-1] beside the batch axis); none when an
    output has a sequence axis, where cutting is not exact. The config's JSON gives dims as strings."""
    if any(-1 in [int(d) for d in o.get("dims", [])] for o in cfg["output"]):
        return set()
    return {i["name"] for i in cfg["input"] if [int(d) for d in i.get("dims", [])] == [-1]}


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        self.cfg = json.loads(args["model_config"])
        self.name = self.cfg["name"]
        self.inputs = [(i["name"], _DTYPES[i["data_type"]]) for i in self.cfg["input"]]
        self.outputs = [o["name"] for o in self.cfg["output"]]
        self.max_batch = int(self.cfg.get("max_batch_size", 0))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(_param(self.cfg, "cpu_threads", "1") or 1)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # No memory arena: with it, the largest batch a model ever saw stays resident (measured: int8 MiniLM
        # 94 -> 735 MB after one 64x256 batch, 96 MB without; a dual image tower 110 -> 350 MB vs 170 MB)
        # and a soak's RSS climbs with every new batch shape; batch-1 latency was the same within noise.
        opts.enable_cpu_mem_arena = False
        providers = ["CPUExecutionProvider"]
        if _param(self.cfg, "execution_provider") == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():  # the model fails to load, visibly
                raise RuntimeError(f"{self.name}: CUDA asked for but onnxruntime has no CUDAExecutionProvider")
            providers = ["CUDAExecutionProvider"]
        # The launcher writes each version's ONNX path beside its model.py (one config, many versions).
        sidecar = os.path.join(args["model_repository"], args["model_version"], "onnx_path")
        if os.path.exists(sidecar):
            with open(sidecar, encoding="utf-8") as f:
                onnx_path = f.read().strip()
        else:
            onnx_path = _param(self.cfg, "onnx_path")
        self.session = ort.InferenceSession(onnx_path, opts, providers=providers)
        self.provider = live_provider(self.name, providers, self.session.get_providers())
        self._metric = report_provider(self.name, self.provider)
        self.check_finite = any(dt in (np.float32, np.float16) for _, dt in self.inputs)
        self.seq_inputs = sequence_inputs(self.cfg)

    def _tensors(self, request):
        feeds = {}
        for name, dtype in self.inputs:
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                raise ValueError(f"missing input {name!r}")
            arr = t.as_numpy()
            if arr.dtype != dtype:
                raise ValueError(f"input {name!r}: dtype {arr.dtype}, expected {np.dtype(dtype).name}")
            if arr.shape[0] == 0:
                raise ValueError(f"input {name!r}: empty batch")
            if self.check_finite and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise ValueError(f"input {name!r}: contains NaN or infinity")
            feeds[name] = arr
        shapes = {a.shape for a in feeds.values() if a.ndim == 2}
        if len(shapes) > 1:
            raise ValueError(f"inputs {sorted(feeds)} must share one shape, got {sorted(shapes)}")
        return feeds

    def execute(self, requests):
        # Requests are grouped by input shapes (Triton batches equal shapes; stay safe regardless),
        # each group runs as one ONNX batch, and errors stay with the request that caused them.
        responses = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, Any]]] = {}
        for i, request in enumerate(requests):
            try:
                feeds = self._tensors(request)
            except ValueError as e:
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{self.name}: {e}", pb_utils.TritonError.INVALID_ARG))
                continue
            key = tuple((k, v.shape[1:]) for k, v in sorted(feeds.items()))
            groups.setdefault(key, []).append((i, feeds))
        for members in groups.values():
            names = members[0][1].keys()
            batch = {n: np.concatenate([f[n] for _, f in members]) for n in names}
            batch = trim_padding(batch, self.seq_inputs)
            try:
                out = self.session.run(self.outputs, batch)
            except Exception as e:  # noqa: BLE001 - every request of the group gets the error, the server goes on
                code = run_error_code(e)
                for i, _ in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {e}", code))
                continue
            start = 0
            for i, f in members:
                n = next(iter(f.values())).shape[0]
                tensors = [pb_utils.Tensor(name, arr[start : start + n]) for name, arr in zip(self.outputs, out)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses

    def finalize(self):
        self.session = None
