"""The manifest's ONNX Runtime needs (issue 35, item 2): export records the graph's ops and the minimum
ONNX Runtime; the serving tier (the Triton launcher's shadow repository, retrieval's in-process encoders)
refuses a model its ONNX Runtime cannot run, by name and with the reason, and serves the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mmsearch.errors import Unavailable
from mmsearch.modelrepo.manifest import MANIFEST_NAME, MODEL_FILE, RuntimeNeeds, TensorSpec, TextPreprocessing, read_manifest, write_manifest
from mmsearch.modelrepo.manifest import Manifest as M
from mmsearch.modelrepo.runtime_needs import ModelRefused, check_model_dir, needs_of_graph, refusal, runtime_needs
from mmsearch.modelrepo.triton_config import build_model_config, write_model_config


def _manifest(name: str = "m", runtime: RuntimeNeeds | None = None) -> M:
    return M(name=name, kind="text_encoder",
             inputs=[TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1]), TensorSpec(name="attention_mask", dtype="int64", shape=[-1, -1])],
             outputs=[TensorSpec(name="embedding", dtype="float32", shape=[-1, 8])], embedding_dim=8,
             preprocessing=TextPreprocessing(max_length=16), max_batch_size=4, runtime=runtime)


def _nbits_graph(path: Path, bits: int = 8) -> None:
    """A graph with one 8-bit MatMulNBits (what export --quantize int8-block writes) and a standard MatMul."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = helper.make_tensor("w", TensorProto.UINT8, [8, 1, 128], np.zeros(8 * 128, np.uint8).tobytes(), raw=True)
    s = helper.make_tensor("s", TensorProto.FLOAT, [8], np.ones(8, np.float32))
    m = helper.make_tensor("m", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32))
    nodes = [helper.make_node("MatMulNBits", ["x", "w", "s"], ["h"], domain="com.microsoft", K=128, N=8, bits=bits, block_size=128),
             helper.make_node("MatMul", ["h", "m"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [y], initializer=[w, s, m])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]), str(path))


def test_export_records_ops_and_minimum_from_the_graph(tmp_path):
    _nbits_graph(tmp_path / "q.onnx")
    needs = runtime_needs(tmp_path / "q.onnx")
    assert needs.ops == ["MatMul", "com.microsoft.MatMulNBits"] and needs.opsets == {"": 17, "com.microsoft": 1}
    assert needs.min_onnxruntime == "1.22" and any("MatMulNBits/bits=8" in b for b in needs.because)
    _nbits_graph(tmp_path / "q4.onnx", bits=4)  # 4-bit weights ran long before 8-bit
    assert runtime_needs(tmp_path / "q4.onnx").min_onnxruntime == "1.17"
    plain = needs_of_graph([("MatMul", "", {}), ("Gelu", "ai.onnx", {})], {"": 17})
    assert plain.min_onnxruntime == "1.12" and plain.ops == ["Gelu", "MatMul"]


def test_an_op_or_opset_not_in_the_table_leaves_the_minimum_unknown():
    needs = needs_of_graph([("MatMulNBits", "com.microsoft", {"bits": 8}), ("Mystery", "org.example", {})], {"": 17})
    assert needs.min_onnxruntime is None and any("org.example.Mystery" in b for b in needs.because)
    assert refusal(_manifest(runtime=needs), "1.0.0") is None  # unknown: nothing refused on its account
    assert needs_of_graph([], {"": 99}).min_onnxruntime is None


def test_an_older_manifest_without_runtime_reads_as_unknown(tmp_path):
    write_manifest(tmp_path, _manifest())
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert "runtime" not in data  # (exclude_none: what an older export wrote)
    m = read_manifest(tmp_path)
    assert m.runtime is None and refusal(m, "1.0.0") is None


def test_refusal_names_the_model_the_need_and_the_runtime():
    needs = needs_of_graph([("MatMulNBits", "com.microsoft", {"bits": 8})], {"": 17, "com.microsoft": 1})
    m = _manifest("mpnet_q", needs)
    why = refusal(m, "1.19.2")  # tritonserver 24.10's onnxruntime backend
    assert why is not None and "'mpnet_q'" in why and ">= 1.22" in why and "1.19.2" in why and "com.microsoft.MatMulNBits" in why
    assert refusal(m, "1.22.0") is None and refusal(m, "1.23.1") is None and refusal(m, "1.22.0+cu12") is None
    assert refusal(m, "1.9.0") is not None  # compared as numbers, not strings


def _export_like(repo: Path, name: str, min_ort: str | None) -> None:
    d = repo / name
    (d / "1").mkdir(parents=True)
    (d / "1" / MODEL_FILE).write_bytes(b"not read by the shadow sync")
    runtime = RuntimeNeeds(opsets={"": 17}, ops=["MatMul"], min_onnxruntime=min_ort, because=[f"test needs >= {min_ort}"]) if min_ort else None
    m = _manifest(name, runtime)
    write_manifest(d, m)
    write_model_config(d / "config.pbtxt", build_model_config(m, [1], 100, 1, "cpu"))


def test_the_triton_launcher_leaves_a_refused_model_out_and_syncs_the_others(tmp_path):
    from mmsearch.serving.repository import sync_all, sync_model

    repo, shadow = tmp_path / "repo", tmp_path / "shadow"
    _export_like(repo, "good", "1.12")
    _export_like(repo, "legacy", None)  # an older manifest: unknown, served
    _export_like(repo, "future", "99.0")
    synced, refused = sync_all(repo, shadow)
    assert synced == ["good", "legacy"] and set(refused) == {"future"}
    assert "'future'" in refused["future"] and ">= 99.0" in refused["future"]
    assert (shadow / "good").is_dir() and not (shadow / "future").exists()  # Triton's --load-model * never sees it
    with pytest.raises(ModelRefused, match="'future' needs ONNX Runtime >= 99.0"):
        sync_model(repo, shadow, "future")  # a reload (poll, SIGHUP) refuses it again, by name


def test_in_process_encoders_refuse_by_name_and_stay_ready(tmp_path):
    from mmsearch.encoders.local import RepositoryBackend

    repo = tmp_path / "repo"
    _export_like(repo, "future", "99.0")
    with pytest.raises(ModelRefused):
        check_model_dir(repo / "future")
    check_model_dir(repo / "future", "99.1")  # a runtime new enough: no refusal
    enc = RepositoryBackend(repo, 1, 0)
    try:
        assert set(enc.refused) == {"future"} and not enc.errors
        assert enc.serving()  # a model that can never load here does not hold readiness down
        with pytest.raises(Unavailable, match="'future' needs ONNX Runtime >= 99.0"):
            enc.infer("future", {"input_ids": np.ones((1, 2), np.int64), "attention_mask": np.ones((1, 2), np.int64)})
    finally:
        enc.close()
