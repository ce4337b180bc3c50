"""The python-backend model file (mmsearch/serving/triton_model.py) outside Triton: its stub-only
import is stood in for, so the batching and padding logic runs here against a recording session."""

from __future__ import annotations

import importlib
import sys
import types
import typing

import numpy as np
import pytest


class _Tensor:
    def __init__(self, name, arr):
        self.name, self.arr = name, arr

    def as_numpy(self):
        return self.arr


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors, self.error = output_tensors, error


class _Error:
    INTERNAL = 1
    INVALID_ARG = 3
    UNAVAILABLE = 4

    def __init__(self, message, code=0):
        self.message, self.code = message, code


@pytest.fixture()
def tm(monkeypatch):
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _Tensor
    fake.InferenceResponse = _Response
    fake.TritonError = _Error
    fake.get_input_tensor_by_name = lambda request, name: request.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    mod = importlib.import_module("mmsearch.serving.triton_model")
    yield importlib.reload(mod)


class _Session:
    """Records what ORT would be fed; the embedding is the mask-weighted mean of the ids (pooling)."""

    def __init__(self):
        self.fed = []

    def run(self, outputs, batch):
        self.fed.append({k: v.copy() for k, v in batch.items()})
        m = batch["attention_mask"].astype(np.float32)
        return [((batch["input_ids"] * m).sum(1, keepdims=True) / m.sum(1, keepdims=True)).repeat(4, 1)]


def _model(tm, output_dims):
    model = tm.TritonPythonModel()
    model.name, model.outputs, model.max_batch = "m", ["embedding"], 8
    model.inputs = [("input_ids", np.int64), ("attention_mask", np.int64)]
    model.check_finite = False
    model.session = _Session()
    cfg = {"input": [{"name": "input_ids", "dims": ["-1"]}, {"name": "attention_mask", "dims": ["-1"]}],
           "output": [{"name": "embedding", "dims": [str(d) for d in output_dims]}]}
    model.seq_inputs = tm.sequence_inputs(cfg)
    return model


def _request(ids, width):
    arr = np.zeros((1, width), np.int64)
    arr[0, : len(ids)] = ids
    mask = (arr != 0).astype(np.int64)
    return {"input_ids": _Tensor("input_ids", arr), "attention_mask": _Tensor("attention_mask", mask)}


def test_trim_padding_cuts_only_columns_that_are_padding_in_every_row(tm):
    seq = {"input_ids", "attention_mask", "token_type_ids"}
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    batch = {"input_ids": mask * 7, "attention_mask": mask, "token_type_ids": np.zeros_like(mask), "bias": np.ones((2, 5))}
    out = tm.trim_padding(batch, seq)
    assert out["input_ids"].shape == out["attention_mask"].shape == out["token_type_ids"].shape == (2, 3)
    assert out["bias"].shape == (2, 5)  # the mask's shape, but not a token sequence: left alone
    assert (out["attention_mask"] == mask[:, :3]).all()
    full = np.ones((2, 5), np.int64)
    assert tm.trim_padding({"attention_mask": full}, seq)["attention_mask"].shape == (2, 5)
    assert tm.trim_padding({"attention_mask": np.zeros((1, 4), np.int64)}, seq)["attention_mask"].shape == (1, 1)
    no_mask = {"input_ids": np.ones((1, 16), np.int64)}
    assert tm.trim_padding(no_mask, seq) is no_mask
    cfg = {"input": [{"name": "input_ids", "dims": ["-1"]}, {"name": "pixel_values", "dims": ["3", "-1", "-1"]}],
           "output": [{"name": "embedding", "dims": ["8"]}]}
    assert tm.sequence_inputs(cfg) == {"input_ids"}


def test_a_merged_batch_runs_at_its_longest_real_length_with_the_same_result(tm):
    model = _model(tm, [4])
    responses = model.execute([_request([5, 6], 16), _request([5, 6, 7, 8, 9], 16)])
    assert [f["input_ids"].shape for f in model.session.fed] == [(2, 5)]  # one ORT call, 11 padding columns cut
    got = np.concatenate([r.output_tensors[0].arr for r in responses])
    np.testing.assert_allclose(got[:, 0], [5.5, 7.0])  # what the padded batch gives: padding is masked out


def test_a_model_with_a_sequence_axis_in_its_output_is_not_trimmed(tm):
    model = _model(tm, [-1, 4])
    model.execute([_request([5, 6], 16)])
    assert model.session.fed[0]["input_ids"].shape == (1, 16)


class _Failing(_Session):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def run(self, outputs, batch):
        raise self.exc


def _ort_error(kind: str, message: str) -> Exception:
    return type(kind, (RuntimeError,), {})(message)  # ORT raises its own classes (onnxruntime_pybind11_state)


@pytest.mark.parametrize("exc, code", [
    (_ort_error("RuntimeException", "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation"), _Error.UNAVAILABLE),
    (_ort_error("Fail", "CUDA failure 2: out of memory ; GPU=0"), _Error.UNAVAILABLE),
    (_ort_error("EPFail", "execution provider failed"), _Error.UNAVAILABLE),
    (MemoryError(), _Error.UNAVAILABLE),
    (_ort_error("Fail", "Non-zero status code returned while running Gather node"), _Error.INTERNAL),
    (RuntimeError("anything else"), _Error.INTERNAL),
    (_ort_error("InvalidArgument", "Got invalid dimensions for input: input_ids"), _Error.INVALID_ARG),
])
def test_inference_failures_on_the_server_are_not_blamed_on_the_input(tm, exc, code):
    model = _model(tm, [4])
    model.session = _Failing(exc)
    responses = model.execute([_request([5, 6], 16), _request([7], 16)])
    assert [r.error.code for r in responses] == [code, code]  # each request of the failed batch is answered
    assert all(r.error.message.startswith("m: ") for r in responses)


def test_a_malformed_request_is_still_invalid_argument(tm):
    model = _model(tm, [4])
    bad = {"input_ids": _Tensor("input_ids", np.zeros((1, 4), np.int32)), "attention_mask": _Tensor("attention_mask", np.ones((1, 4), np.int64))}
    responses = model.execute([bad, _request([5, 6], 16)])
    assert responses[0].error.code == _Error.INVALID_ARG and "dtype" in responses[0].error.message
    assert responses[1].error is None and responses[1].output_tensors  # the good request is served


# --------------------------------------------------------------------------- GPU truth: the live session's provider
def test_a_gpu_asked_for_but_absent_from_the_live_session_fails_the_model_naming_it(tm):
    # ORT falls back to CPU with a mere warning when CUDA cannot start: the live session is the truth
    with pytest.raises(RuntimeError, match=r"^minilm: the GPU was asked for .* runs on CPUExecutionProvider"):
        tm.live_provider("minilm", ["CUDAExecutionProvider"], ["CPUExecutionProvider"])
    assert tm.live_provider("minilm", ["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) \
        == "CUDAExecutionProvider"
    assert tm.live_provider("minilm", ["CPUExecutionProvider"], ["CPUExecutionProvider"]) == "CPUExecutionProvider"


class _Metric:
    def __init__(self, labels):
        self.labels, self.value = labels, None

    def set(self, value):
        self.value = value


class _Family:
    GAUGE = "gauge"
    made: typing.ClassVar[list] = []

    def __init__(self, name, description, kind):
        self.name, self.kind = name, kind
        _Family.made.append(self)

    def Metric(self, labels):
        self.metric = _Metric(labels)
        return self.metric


def test_initialize_reports_the_live_provider_as_a_triton_metric(tm, monkeypatch, tmp_path):
    import json as _json

    class FakeSession:
        def __init__(self, path, opts, providers):
            self.asked = providers

        def get_providers(self):
            return ["CPUExecutionProvider"]  # whatever was asked: CUDA is not there

    fake_ort = types.ModuleType("onnxruntime")
    fake_ort.SessionOptions = lambda: types.SimpleNamespace()
    fake_ort.InferenceSession = FakeSession
    fake_ort.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_ort)
    monkeypatch.setattr(tm.pb_utils, "MetricFamily", _Family, raising=False)
    cfg = {"name": "tiny", "input": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": ["-1"]}],
           "output": [{"name": "embedding", "dims": ["4"]}], "max_batch_size": 8,
           "parameters": {"onnx_path": {"string_value": "x.onnx"}, "execution_provider": {"string_value": "cpu"}}}
    args = {"model_config": _json.dumps(cfg), "model_repository": str(tmp_path), "model_version": "1"}
    model = tm.TritonPythonModel()
    model.initialize(args)
    assert model.provider == "CPUExecutionProvider"
    fam = _Family.made[-1]
    assert fam.name == "mmsearch_model_execution_provider" and fam.kind == "gauge"
    assert fam.metric.labels == {"model": "tiny", "provider": "CPUExecutionProvider"} and fam.metric.value == 1
    cfg["parameters"]["execution_provider"]["string_value"] = "cuda"
    with pytest.raises(RuntimeError, match="^tiny: the GPU was asked for"):
        tm.TritonPythonModel().initialize({**args, "model_config": _json.dumps(cfg)})
