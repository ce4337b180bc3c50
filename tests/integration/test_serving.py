"""The real tritonserver (bundled by nvidia-pytriton) over exported models."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from PIL import Image
from tritonclient.utils import InferenceServerException

from mmsearch.clients.inference import InferenceClient
from mmsearch.errors import BadInput, NotFound, Unavailable
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.runtime.net import free_port, http_ok, read_ports, wait_until
from mmsearch.serving.triton import TritonOptions, start_triton

pytestmark = pytest.mark.integration

TEXTS = ["hello world", "a much longer sentence about search engines and vectors " * 3, "🙂 ünïcödé", "x" * 2000]


def group_alive(pgid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getpgid(int(p.name)) == pgid:
                    pids.append(int(p.name))
            except ProcessLookupError:
                pass
    return pids


@pytest.fixture(scope="module")
def serving_repo(tmp_path_factory, minilm_export, clip_export, tiny_text) -> Path:
    from mmsearch.offline.export import ExportOptions, export_model

    repo = tmp_path_factory.mktemp("serving") / "repo"
    repo.mkdir()
    shutil.copytree(minilm_export, repo / "minilm")
    shutil.copytree(clip_export["clip_image"], repo / "clip_image")
    export_model(tiny_text, repo, "tiny_int8", options=ExportOptions(quantize="int8"))
    export_model(tiny_text, repo, "tiny_int8_block", options=ExportOptions(quantize="int8-block"))  # MatMulNBits
    return repo


@pytest.fixture(scope="module")
def server(serving_repo):
    s = start_triton(TritonOptions(repo=serving_repo, http_port=0, grpc_port=0, metrics_port=0))
    yield s
    pgid = s.proc.pid
    s.stop()
    assert wait_until(lambda: not group_alive(pgid), 10), f"processes left: {group_alive(pgid)}"


def images() -> list[bytes]:
    out = []
    for i, (size, mode) in enumerate([((40, 60), "RGB"), ((100, 30), "RGBA"), ((32, 32), "L")]):
        arr = (np.random.default_rng(i).random((size[1], size[0], 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_text_embeddings_equal_in_process_onnx(server, serving_repo, protocol):
    local = LocalModel(serving_repo / "minilm")
    batch = local.text(TEXTS)
    expected = local.run(batch.tensors)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    got = InferenceClient(url, protocol).infer("minilm", batch.tensors)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # one request per text, as concurrent single queries arrive
    for _i, t in enumerate(TEXTS):
        one = local.text([t]).tensors
        np.testing.assert_allclose(InferenceClient(url, protocol).infer("minilm", one)[0], local.run(one)[0], atol=1e-5)


@pytest.mark.parametrize("model", ["minilm", "tiny_int8", "tiny_int8_block"])
def test_a_query_padded_to_a_long_bucket_gets_its_unpadded_embedding(server, serving_repo, model):
    """The model cuts the all-padding tail before running ORT (triton_model.trim_padding). In fp32 that
    is the same result; dynamic int8 scales activations over the whole tensor, so without the cut the
    padding would shift the int8 embedding."""
    local = LocalModel(serving_repo / model)
    exact = local.text(["hello world search"]).tensors
    padded = {k: np.pad(v, ((0, 0), (0, 64 - v.shape[1]))) for k, v in exact.items()}
    np.testing.assert_allclose(InferenceClient(server.grpc_url).infer(model, padded), local.run(exact), atol=1e-5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_image_embeddings_equal_in_process_onnx(server, serving_repo, protocol):
    local = LocalModel(serving_repo / "clip_image")
    pixels = local.image(images())
    url = server.grpc_url if protocol == "grpc" else server.http_url
    np.testing.assert_allclose(InferenceClient(url, protocol).infer("clip_image", {"pixel_values": pixels}),
                               local.run({"pixel_values": pixels}), atol=1e-5)


def test_client_splits_into_max_batch_size_chunks(server, serving_repo):
    local = LocalModel(serving_repo / "minilm")
    texts = [f"query number {i}" for i in range(150)]  # max_batch_size is 64: three requests
    tensors = local.text(texts).tensors
    got = InferenceClient(server.grpc_url).infer("minilm", tensors)
    assert got.shape == (150, 384)
    np.testing.assert_allclose(got, local.run(tensors), atol=1e-5)


def _raw_grpc(server, model: str, arrays: dict[str, np.ndarray]):
    c = tg.InferenceServerClient(server.grpc_url)
    dtypes = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
    inputs = []
    for name, a in arrays.items():
        t = tg.InferInput(name, list(a.shape), dtypes[a.dtype])
        t.set_data_from_numpy(a)
        inputs.append(t)
    return c.infer(model, inputs)


IDS = np.array([[101, 7592, 2088, 102]] * 2, dtype=np.int64)


@pytest.mark.parametrize(
    "model, arrays, status, fragment",
    [
        ("minilm", {"input_idz": IDS, "attention_mask": IDS}, "INVALID_ARGUMENT", "input_idz"),
        ("minilm", {"input_ids": IDS.astype(np.int32), "attention_mask": IDS}, "INVALID_ARGUMENT", "data-type"),
        ("minilm", {"input_ids": IDS[:, :, None], "attention_mask": IDS[:, :, None]}, "INVALID_ARGUMENT", "shape"),
        ("minilm", {"input_ids": np.ones((65, 4), np.int64), "attention_mask": np.ones((65, 4), np.int64)},
         "INVALID_ARGUMENT", "batch-size must be <= 64"),
        ("minilm", {"input_ids": IDS[:0], "attention_mask": IDS[:0]}, "INVALID_ARGUMENT", "empty batch|byte size mismatch"),
        ("clip_image", {"pixel_values": np.full((1, 3, 32, 32), np.nan, np.float32)}, "INVALID_ARGUMENT", "NaN"),
        ("no_such_model", {"input_ids": IDS}, "NOT_FOUND", "unknown model"),
    ],
    ids=["tensor-name", "dtype", "rank", "over-max-batch", "empty-batch", "nan-pixels", "unknown-model"],
)
def test_bad_input_gets_its_status_and_server_keeps_serving(server, model, arrays, status, fragment):
    with pytest.raises(InferenceServerException) as e:
        _raw_grpc(server, model, arrays)
    assert status in str(e.value.status()), e.value
    assert re.search(fragment, e.value.message()), e.value.message()
    ok = _raw_grpc(server, "minilm", {"input_ids": IDS, "attention_mask": np.ones_like(IDS)})
    assert ok.as_numpy("embedding").shape == (2, 384)


def test_client_errors_are_ours(server):
    c = InferenceClient(server.grpc_url)
    with pytest.raises(NotFound, match="no_such_model"):
        c.infer("no_such_model", {"input_ids": IDS})
    with pytest.raises(BadInput, match="input_idz"):
        c.infer("minilm", {"input_idz": IDS, "attention_mask": IDS})
    down = InferenceClient(f"127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(Unavailable, match="triton at 127.0.0.1"):
        down.infer("minilm", {"input_ids": IDS, "attention_mask": IDS})


def test_health_and_metrics(server):
    assert http_ok(f"http://{server.http_url}/v2/health/live")
    assert http_ok(f"http://{server.http_url}/v2/models/minilm/ready")
    assert th.InferenceServerClient(server.http_url).is_model_ready("clip_image")
    import urllib.request

    body = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert "nv_inference_request_success" in body


def test_new_model_and_new_version_without_restart(server, serving_repo, tiny_text):
    from mmsearch.offline.export import export_model

    (r,) = export_model(tiny_text, serving_repo, "late_model")
    server.load("late_model")
    local = LocalModel(r.path)
    tensors = local.text(["loaded later"]).tensors
    np.testing.assert_allclose(InferenceClient(server.grpc_url).infer("late_model", tensors), local.run(tensors), atol=1e-5)
    # a new version: Triton serves the latest by default
    shutil.copytree(r.path / "1", r.path / "2")
    server.load("late_model")
    http = th.InferenceServerClient(server.http_url)
    meta = http.get_model_metadata("late_model")
    assert meta["versions"] == ["2"]  # only the latest version is served...
    assert http.is_model_ready("late_model", "2")
    assert not http.is_model_ready("late_model", "1")  # ...and version 1 was retired
    np.testing.assert_allclose(InferenceClient(server.grpc_url).infer("late_model", tensors), local.run(tensors), atol=1e-5)
    # the models already served were never interrupted
    assert InferenceClient(server.grpc_url).model_ready("minilm")


def test_cli_serves_until_sigterm_and_leaves_nothing(serving_repo, tmp_path):
    # ports 0: it picks free ones (again on a clash) and reports them in --ports-file for its launcher
    cmd = [sys.executable, "-m", "mmsearch", "serve-models", "--repo", str(serving_repo), "--http-port", "0",
           "--grpc-port", "0", "--metrics-port", "0", "--log-file", str(tmp_path / "triton.log"),
           "--ports-file", str(tmp_path / "ports.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: read_ports(tmp_path / "ports.json") or proc.poll() is not None, 120)
        assert proc.poll() is None, proc.stdout.read()
        reported = read_ports(tmp_path / "ports.json")
        assert reported is not None and set(reported) == {"http", "grpc", "metrics"}
        ports = [str(reported[k]) for k in ("http", "grpc", "metrics")]
        assert http_ok(f"http://127.0.0.1:{ports[0]}/v2/health/ready") and InferenceClient(f"127.0.0.1:{ports[1]}").server_ready()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "triton stopped" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert wait_until(lambda: not group_alive(proc.pid), 10), f"left: {group_alive(proc.pid)}"
    assert not http_ok(f"http://127.0.0.1:{ports[0]}/v2/health/live")


def test_empty_repository_is_a_clear_error(tmp_path):
    (tmp_path / "repo").mkdir()
    with pytest.raises(BadInput, match="holds no exported model"):
        start_triton(TritonOptions(repo=tmp_path / "repo", http_port=0, grpc_port=0, metrics_port=0))
    with pytest.raises(NotFound, match="not found"):
        start_triton(TritonOptions(repo=tmp_path / "missing", http_port=0, grpc_port=0, metrics_port=0))


def test_a_port_taken_before_tritonserver_binds_it_is_retried(serving_repo, monkeypatch):
    import mmsearch.serving.triton as T

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # someone else's, taken between choosing and binding
    taken, picks = holder.getsockname()[1], []
    real = T.free_port

    def pick(host: str = "127.0.0.1") -> int:
        picks.append(1)
        return taken if len(picks) == 2 else real(host)  # the first try's gRPC port

    monkeypatch.setattr(T, "free_port", pick)
    try:
        srv = start_triton(TritonOptions(repo=serving_repo, http_port=0, grpc_port=0, metrics_port=0))
        try:
            assert len(picks) == 6 and srv.opts.grpc_port != taken  # a second try, on three fresh ports
            assert InferenceClient(srv.grpc_url).model_ready("minilm")
        finally:
            srv.stop()
        # a port the user gave is not replaced: the clash is reported at the first try
        fresh: list[int] = []
        monkeypatch.setattr(T, "free_port", lambda host="127.0.0.1": fresh.append(real(host)) or fresh[-1])
        with pytest.raises(Unavailable, match="already in use"):
            start_triton(TritonOptions(repo=serving_repo, http_port=0, grpc_port=taken, metrics_port=0))
        assert len(fresh) == 2  # its two other ports, picked once: no second try
    finally:
        holder.close()
