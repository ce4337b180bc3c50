"""A model folder checked as a whole: the manifest against model.onnx, config.pbtxt and preprocess/.

Its own module because it reads both the manifest and the Triton config, and the Triton config is
written from the manifest: kept apart, neither of those two imports the other back (no circle).
"""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import CONFIG_FILE, MODEL_FILE, Manifest, TextPreprocessing, read_manifest
from mmsearch.modelrepo.triton_config import read_model_config

_ONNX_DTYPES = {7: "int64", 6: "int32", 1: "float32", 10: "float16"}


def validate_model_dir(model_dir: str | Path) -> Manifest:
    """Check the manifest against model.onnx, config.pbtxt and preprocess/; raise BadInput naming each problem."""
    import onnx  # heavy import kept local: readers that only need the manifest don't pay for it

    model_dir = Path(model_dir)
    m = read_manifest(model_dir)
    problems: list[str] = []
    onnx_path = model_dir / "1" / MODEL_FILE
    if not onnx_path.is_file():
        problems.append(f"missing {onnx_path}")
    else:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        g_inputs = {i.name: i for i in graph.input if i.name not in inits}
        g_outputs = {o.name: o for o in graph.output}
        for spec, found in [(s, g_inputs) for s in m.inputs] + [(s, g_outputs) for s in m.outputs]:
            t = found.get(spec.name)
            if t is None:
                problems.append(f"ONNX graph has no tensor {spec.name!r} (has {sorted(found)})")
                continue
            dt = _ONNX_DTYPES.get(t.type.tensor_type.elem_type, str(t.type.tensor_type.elem_type))
            if dt != spec.dtype:
                problems.append(f"tensor {spec.name!r}: ONNX dtype {dt}, manifest {spec.dtype}")
            rank = len(t.type.tensor_type.shape.dim)
            if rank != len(spec.shape):
                problems.append(f"tensor {spec.name!r}: ONNX rank {rank}, manifest {len(spec.shape)}")
        if set(g_inputs) != set(m.input_names):
            problems.append(f"ONNX inputs {sorted(g_inputs)} != manifest inputs {sorted(m.input_names)}")
    cfg_path = model_dir / CONFIG_FILE
    if not cfg_path.is_file():
        problems.append(f"missing {cfg_path}")
    else:
        cfg = read_model_config(cfg_path)
        if cfg.name != m.name or cfg.name != model_dir.name:
            problems.append(f"config.pbtxt name {cfg.name!r}, manifest {m.name!r}, folder {model_dir.name!r} differ")
        if cfg.max_batch_size != m.max_batch_size:
            problems.append(f"max_batch_size: config.pbtxt {cfg.max_batch_size}, manifest {m.max_batch_size}")
        if [i.name for i in cfg.input] != m.input_names:
            problems.append(f"config.pbtxt inputs {[i.name for i in cfg.input]} != manifest {m.input_names}")
        if [o.name for o in cfg.output] != [o.name for o in m.outputs]:
            problems.append("config.pbtxt outputs differ from the manifest")
    pre = m.preprocessing
    pre_path = model_dir / (pre.tokenizer_dir if isinstance(pre, TextPreprocessing) else pre.config_file)
    if not pre_path.exists():
        problems.append(f"missing preprocessing files {pre_path}")
    if problems:
        raise BadInput(f"model {model_dir} is inconsistent: " + "; ".join(problems))
    return m
