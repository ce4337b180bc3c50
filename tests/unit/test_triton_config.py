from pathlib import Path

import pytest
from test_manifest import text_manifest
from tritonclient.grpc import model_config_pb2 as mc

from mmsearch.errors import BadInput
from mmsearch.modelrepo.triton_config import build_model_config, read_model_config, write_model_config


def test_written_config_parses_as_triton_model_config(tmp_path: Path):
    cfg = build_model_config(text_manifest(max_batch_size=16), [4, 8, 32], 250, instance_count=2)
    write_model_config(tmp_path / "config.pbtxt", cfg)
    back = read_model_config(tmp_path / "config.pbtxt")
    assert back.backend == "onnxruntime" and back.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in back.input] == [
        ("input_ids", mc.TYPE_INT64, [-1]), ("attention_mask", mc.TYPE_INT64, [-1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in back.output] == [("embedding", mc.TYPE_FP32, [8])]
    assert list(back.dynamic_batching.preferred_batch_size) == [4, 8]  # 32 > max_batch_size is dropped
    assert back.dynamic_batching.max_queue_delay_microseconds == 250
    assert back.instance_group[0].count == 2 and back.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_garbage_config_is_bad_input(tmp_path: Path):
    (tmp_path / "config.pbtxt").write_text("name: 'x'\nbogus_field: 3\n")
    with pytest.raises(BadInput, match="not a valid Triton ModelConfig"):
        read_model_config(tmp_path / "config.pbtxt")


def test_gpu_instances_for_the_production_repository():
    cfg = build_model_config(text_manifest(max_batch_size=16), [8], 100, instance_count=1, instance_kind="gpu")
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    with pytest.raises(BadInput, match="instance kind"):
        build_model_config(text_manifest(max_batch_size=16), [8], 100, instance_kind="tpu")


def test_export_config_names_the_instance_kind():
    from mmsearch.config import load_config

    assert load_config(environ={}).export.instance_kind == "cpu"
    assert load_config(environ={"MMSEARCH_EXPORT_INSTANCE_KIND": "gpu"}).export.instance_kind == "gpu"


def test_cuda_asked_for_but_absent_is_a_clear_error():
    import onnxruntime as ort

    from mmsearch.errors import Unavailable
    from mmsearch.serving.triton import TritonOptions, check_cuda, start_triton

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a CUDA provider")
    with pytest.raises(Unavailable, match="no CUDAExecutionProvider"):
        check_cuda()
    with pytest.raises(Unavailable, match="--cuda"):  # before anything starts, whatever the repository holds
        start_triton(TritonOptions(repo=Path("/nonexistent"), use_cuda=True))
