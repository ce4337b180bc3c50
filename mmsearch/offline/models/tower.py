"""What export needs to know about one tower of a loaded model, whatever its family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.modelrepo.manifest import ImagePreprocessing, Kind, TextPreprocessing

Role = Literal["text", "image", "cross"]
ROLE_KIND: dict[str, Kind] = {"text": "text_encoder", "image": "image_encoder", "cross": "cross_encoder"}


@dataclass
class Tower:
    role: Role
    #: forward(*tensors in input_names order) -> float32 [N, dim] (L2-normalised) or [N, 1] scores
    module: torch.nn.Module
    input_names: Sequence[str]
    dim: int
    preprocessing: TextPreprocessing | ImagePreprocessing
    #: writes tokenizer files or preprocessor_config.json into the given preprocess/ folder
    write_preprocess: Callable[[Path], object]  # writes tokenizer / processor files into the folder
    #: the source library's own inference on raw inputs (texts, images or (query, doc) pairs):
    #: export compares ONNX Runtime against it
    reference: Callable[[Sequence[Any]], np.ndarray]
    reference_name: str
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> Kind:
        """The manifest's ``kind`` for this tower (text_encoder, image_encoder, cross_encoder)."""
        return ROLE_KIND[self.role]

    @property
    def normalized(self) -> bool:
        return self.role != "cross"


@dataclass
class LoadedModel:
    family: str  # sentence-transformers | clip | dual | cross-encoder (see models.FAMILIES)
    path: Path
    towers: dict[str, Tower]


def features(out: Any) -> torch.Tensor:
    """Transformers 5 returns model outputs where 4.x returned tensors: take the pooled projection."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def l2(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2, dim=-1)


class FnModule(torch.nn.Module):
    """Wrap a forward function over a parent module so torch.onnx.export sees a plain Module."""

    def __init__(self, parent: torch.nn.Module, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.parent = parent
        self._fn = fn

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._fn(*inputs)
