"""`make gpu-check` (bench/gpu_check.py) cannot run without a GPU: its checks run here on fake answers,
and /v1/models' provider comes from the live session as Triton's metrics report it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu_check import parity_problems, provider_problems
from mmsearch.clients.inference import InferenceClient, live_providers

METRICS = """# HELP mmsearch_model_execution_provider the ONNX Runtime execution provider a model's live session runs on
# TYPE mmsearch_model_execution_provider gauge
mmsearch_model_execution_provider{model="minilm",provider="CUDAExecutionProvider"} 1
mmsearch_model_execution_provider{model="clip_image",provider="CPUExecutionProvider"} 1
mmsearch_model_execution_provider{provider="CPUExecutionProvider",model="rerank"} 1
nv_inference_count{model="minilm",version="1"} 12
"""


def test_live_providers_are_read_from_triton_metrics():
    assert live_providers(METRICS) == {"minilm": "CUDAExecutionProvider", "clip_image": "CPUExecutionProvider",
                                       "rerank": "CPUExecutionProvider"}
    assert live_providers("") == {}


class _FakeTriton:
    def get_model_repository_index(self, *a, **kw):
        return {"models": [{"name": "minilm", "version": "1", "state": "READY"},
                           {"name": "clip_image", "version": "1", "state": "READY"}]}

    def get_model_config(self, name, *a, **kw):
        provider = "cuda" if name == "minilm" else "cpu"
        return {"config": {"parameters": {"execution_provider": {"string_value": provider}},
                           "instance_group": [{"kind": "KIND_GPU" if provider == "cuda" else "KIND_CPU"}], "max_batch_size": 8}}


def test_v1_models_reports_the_live_session_s_provider_and_falls_back_to_the_config(monkeypatch):
    client = InferenceClient("127.0.0.1:1", "grpc", metrics_url="http://127.0.0.1:1/metrics")
    client._client = _FakeTriton()
    monkeypatch.setattr(client, "_live_providers", lambda: {"minilm": "CUDAExecutionProvider"})
    rows = {r["name"]: r for r in client.models()}
    assert rows["minilm"]["provider"] == "CUDAExecutionProvider" and rows["minilm"]["provider_source"] == "session"
    assert rows["clip_image"]["provider"] == "CPUExecutionProvider" and rows["clip_image"]["provider_source"] == "config"
    monkeypatch.undo()
    client._client = _FakeTriton()  # no metrics answer (nothing listens on port 1): the config's, said so
    assert {r["provider_source"] for r in client.models()} == {"config"}


def test_gpu_check_wants_every_model_on_cuda_from_the_session():
    ok = [{"name": "minilm", "state": "READY", "provider": "CUDAExecutionProvider", "provider_source": "session"}]
    assert provider_problems(ok, ["minilm"]) == []
    cpu = [{**ok[0], "provider": "CPUExecutionProvider"}]
    assert provider_problems(cpu, ["minilm"]) == ["minilm: the live session runs on 'CPUExecutionProvider', not CUDAExecutionProvider"]
    from_config = [{**ok[0], "provider_source": "config"}]
    assert "comes from the config" in provider_problems(from_config, ["minilm"])[0]
    assert provider_problems([], ["minilm"]) == ["minilm: not served"]
    assert "not READY" in provider_problems([{**ok[0], "state": "UNAVAILABLE"}], ["minilm"])[0]


def test_gpu_check_parity_per_sentence():
    rng = np.random.default_rng(0)
    cpu = rng.normal(size=(3, 8)).astype(np.float32)
    assert parity_problems(cpu * 2 + 1e-6, cpu, 0.999) == []  # scale does not matter, direction does
    off = cpu.copy()
    off[1] = rng.normal(size=8)
    problems = parity_problems(off, cpu, 0.999, ["a", "b", "c"])
    assert len(problems) == 1 and problems[0].startswith("b: GPU/CPU cosine")
    assert parity_problems(cpu[:2], cpu, 0.999) == ["shapes differ: GPU (2, 8), CPU (3, 8)"]
