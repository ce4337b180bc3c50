"""The int8 modes of export --quantize: what a wrong mode or method gets, before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsearch.errors import BadInput
from mmsearch.offline.export import ExportOptions, export_model
from mmsearch.offline.quantize import MODES, mode_of, quantize_onnx


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
