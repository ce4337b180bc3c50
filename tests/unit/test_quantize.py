"""The int8 modes of export --quantize: what a wrong mode or method gets, before any work is done."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmsearch.errors import BadInput
from mmsearch.offline.export import ExportOptions, export_model
from mmsearch.offline.quantize import BLOCK, MODES, mode_of, quantize_onnx


def test_every_mode_round_trips_through_its_manifest_method():
    assert {mode_of(method) for method, _ in MODES.values()} == set(MODES)
    assert MODES["int8"][0] == "dynamic-int8" and MODES["int8-block"][0] == "block-int8"


def test_an_unknown_method_is_refused_by_name():
    with pytest.raises(BadInput, match=r"'int4-gptq'.*dynamic-int8, block-int8"):
        mode_of("int4-gptq")


def test_an_unknown_mode_is_refused_before_anything_is_written(tmp_path: Path):
    src, dst = tmp_path / "model.onnx", tmp_path / "out.onnx"
    src.write_bytes(b"not read")
    with pytest.raises(BadInput, match=r"--quantize 'int4'.*int8, int8-block"):
        quantize_onnx(src, dst, "int4")
    assert not dst.exists()
    with pytest.raises(BadInput, match=r"--quantize 'int4'.*int8, int8-block"):
        export_model(tmp_path / "no-model", tmp_path / "repo", "m", options=ExportOptions(quantize="int4"))
    assert not (tmp_path / "repo").exists()


def _one_matmul(path: Path, w: np.ndarray) -> None:
    """A graph of one MatMul with a constant weight: what a transformer's projections are."""
    k, n = w.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "one",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_blocks_keep_activations_with_outlier_channels_that_one_scale_per_tensor_loses(tmp_path: Path):
    """What mpnet's FFN output projections see (a few channels ~100x the rest): dynamic int8 scales the
    whole activation tensor by its largest value and the other channels round away; with blocks of 128 only the
    block that holds the outliers does (here the first of three). Figures on this graph: mean cosine to
    fp32 0.84 dynamic, 0.98 blocks; on mpnet, whose outliers are rarer, 0.88 and 0.999."""
    import onnxruntime as ort

    src = tmp_path / "fp32.onnx"
    w = np.random.default_rng(0).normal(0, 0.05, (384, 256)).astype(np.float32)  # three blocks of 128
    x = np.random.default_rng(1).normal(0, 1, (64, 384)).astype(np.float32)
    x[:, [5, 77]] *= 100.0  # outlier channels, which (as in trained models) meet small weights
    w[[5, 77]] *= 0.01
    _one_matmul(src, w)
    ref = x @ w
    got = {}
    for mode in MODES:
        dst = tmp_path / f"{mode}.onnx"
        quantize_onnx(src, dst, mode)
        got[mode] = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    block = onnx.load(str(tmp_path / "int8-block.onnx")).graph.node
    assert [(n.op_type, {a.name: a.i for a in n.attribute if a.name in ("bits", "block_size", "accuracy_level")}) for n in block] \
        == [("MatMulNBits", {"bits": 8, "block_size": BLOCK, "accuracy_level": 4})]
    dynamic, blocks = _cosines(got["int8"], ref).mean(), _cosines(got["int8-block"], ref).mean()
    assert blocks > 0.97 and dynamic < 0.9, (dynamic, blocks)


def test_a_missing_quantizer_module_names_what_to_install(tmp_path: Path, monkeypatch):
    src = tmp_path / "fp32.onnx"
    _one_matmul(src, np.ones((4, 2), np.float32))
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", None)  # import fails
    with pytest.raises(BadInput, match=r"--quantize int8-block needs onnxruntime>=1.22 and onnx-ir"):
        quantize_onnx(src, tmp_path / "out.onnx", "int8-block")
    assert not (tmp_path / "out.onnx").exists()
