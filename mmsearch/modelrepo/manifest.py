"""The model artifact contract: ``<repo>/<model>/mmsearch.json``.

Export writes it; serving, the preprocess service, build_index and evaluation read it, so nothing
downstream guesses tensor names, dims or preprocessing. ``modelrepo.validate.validate_model_dir``
checks a manifest against the files beside it (ONNX graph, config.pbtxt, preprocess/ folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmsearch.errors import BadInput, NotFound

MANIFEST_NAME = "mmsearch.json"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
PREPROCESS_DIR = "preprocess"
SCHEMA_VERSION = 1

Kind = Literal["text_encoder", "image_encoder", "cross_encoder"]
DType = Literal["int64", "int32", "float32", "float16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Strict):
    name: str = Field(min_length=1)
    dtype: DType
    shape: list[int]  # full shape, batch axis included; -1 marks a dynamic axis


class TextPreprocessing(_Strict):
    type: Literal["text"] = "text"
    tokenizer_dir: str = PREPROCESS_DIR  # relative to the model folder
    max_length: int = Field(gt=0)
    pair: bool = False  # cross-encoders tokenize (query, document) pairs


class ImagePreprocessing(_Strict):
    """Resize shortest edge -> centre crop -> rescale -> normalise, in RGB (PIL resampling)."""

    type: Literal["image"] = "image"
    config_file: str = f"{PREPROCESS_DIR}/preprocessor_config.json"
    resize_shortest_edge: int = Field(gt=0)
    crop_size: tuple[int, int]  # (height, width): the model's input size
    resample: Literal["bicubic", "bilinear", "nearest", "lanczos"] = "bicubic"
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # transparent pixels: "drop" the alpha channel (Hugging Face's convert_rgb, CLIP parity) or
    # composite on "white" (clip art and product shots, whose transparent pixels are often black)
    alpha: Literal["drop", "white"] = "drop"


Preprocessing = Annotated[TextPreprocessing | ImagePreprocessing, Field(discriminator="type")]


class Parity(_Strict):
    """ONNX Runtime vs the PyTorch source on real inputs (recorded by export)."""

    reference: str  # what the ONNX output was compared against
    n_inputs: int
    min_cosine: float | None = None  # embeddings: row-wise cosine; None for cross-encoder scores
    mean_cosine: float | None = None
    max_abs_diff: float
    threshold: float  # min cosine for embeddings, max absolute difference for scores
    inputs: list[str] = Field(default_factory=list)  # short description of the input set
    provider: str = "CPUExecutionProvider"  # the ONNX Runtime execution provider the ONNX side ran on


class Quantization(_Strict):
    method: Literal["dynamic-int8", "block-int8"]  # export --quantize int8 / int8-block (offline/quantize.py)
    weights: str = "QInt8 per-channel"
    fp32_parity: Parity
    int8_vs_fp32: dict[str, float]  # min/mean cosine, neighbour overlap@k ...
    speed: dict[str, float]  # texts/s fp32 vs int8, ratio
    labelled_eval: dict[str, Any] | None = None


class RuntimeNeeds(_Strict):
    """What the graph asks of the ONNX Runtime that serves it (export writes it from the final graph,
    quantized or not; modelrepo/runtime_needs.py). A manifest written before this field has none: unknown,
    served as before."""

    opsets: dict[str, int]  # opset imported per domain ("" is the standard ai.onnx domain)
    ops: list[str]  # every op type of the graph: "Op" for ai.onnx, "domain.Op" for the others (com.microsoft.MatMulNBits)
    min_onnxruntime: str | None = None  # the oldest ONNX Runtime that runs every op; None when an op is not in the table
    because: list[str] = Field(default_factory=list)  # which ops or opsets set that minimum (or left it unknown)


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Kind
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    embedding_dim: int | None = Field(default=None, gt=0)
    normalized: bool = False
    preprocessing: Preprocessing
    max_batch_size: int = Field(gt=0)
    partner: str | None = None  # the other tower of a two-tower model (shared embedding space)
    source: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    parity: Parity | None = None
    quantization: Quantization | None = None
    runtime: RuntimeNeeds | None = None  # the ops and the minimum ONNX Runtime (None: an older manifest, unknown)
    serving: dict[str, str] = Field(default_factory=dict)  # instance_kind (KIND_CPU|KIND_GPU) config.pbtxt asks Triton for
    evaluation: dict[str, Any] | None = None
    created_at: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate input names {names}")
        if self.kind in ("text_encoder", "cross_encoder"):
            if not isinstance(self.preprocessing, TextPreprocessing):
                raise ValueError(f"{self.kind} needs text preprocessing")
            if "input_ids" not in names or "attention_mask" not in names:
                raise ValueError(f"{self.kind} must take input_ids and attention_mask, has {names}")
        if self.kind == "image_encoder":
            if not isinstance(self.preprocessing, ImagePreprocessing):
                raise ValueError("image_encoder needs image preprocessing")
            if names != ["pixel_values"]:
                raise ValueError(f"image_encoder must take exactly pixel_values, has {names}")
        if self.kind in ("text_encoder", "image_encoder"):
            if [t.name for t in self.outputs] != ["embedding"]:
                raise ValueError("encoders must return exactly one output named embedding")
            if self.embedding_dim is None or self.outputs[0].shape[-1] != self.embedding_dim:
                raise ValueError("embedding output's last axis must equal embedding_dim")
        if self.kind == "cross_encoder" and [t.name for t in self.outputs] != ["score"]:
            raise ValueError("cross_encoder must return exactly one output named score")
        return self

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]


def model_versions(model_dir: Path) -> list[int]:
    """The numbered versions of an exported model that hold a model file, oldest first."""
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit() and (p / MODEL_FILE).is_file())


def latest_model_file(model_dir: Path) -> Path:
    """The model file Triton serves by default (its version policy: the latest version)."""
    versions = model_versions(model_dir)
    if not versions:
        raise NotFound(f"model {Path(model_dir).name!r} in {Path(model_dir).parent} has no <version>/{MODEL_FILE}")
    return Path(model_dir) / str(versions[-1]) / MODEL_FILE


def manifest_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / MANIFEST_NAME


def write_manifest(model_dir: str | Path, manifest: Manifest) -> Path:
    """Write atomically (temp file + rename) so a reader never sees half a manifest."""
    path = manifest_path(model_dir)
    text = manifest.model_dump_json(indent=2, exclude_none=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mmsearch.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(model_dir: str | Path) -> Manifest:
    path = manifest_path(model_dir)
    if not path.is_file():
        raise NotFound(f"no {MANIFEST_NAME} in {model_dir}: not an mmsearch model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not valid JSON: {e}") from e
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or '<root>'}: {x['msg']}" for x in e.errors())
        raise BadInput(f"{path} is not a valid manifest: {problems}") from e


def model_ref(model_dir: str | Path) -> dict[str, str]:
    """What a build records about the model that made its vectors: its name, its version (``sha256:`` and
    the first 16 hex digits of its manifest's sha256, what ``GET /v1/indexes`` shows) and the full hash."""
    path = manifest_path(model_dir)
    if not path.is_file():
        raise NotFound(f"no {MANIFEST_NAME} in {model_dir}: not an mmsearch model folder")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"name": Path(model_dir).name, "version": f"sha256:{digest[:16]}", "manifest_sha256": digest}
