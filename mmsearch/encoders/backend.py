"""The one interface for running a repository model on ready tensors, wherever it runs.

Two implementations stand behind it:
- ``mmsearch.encoders.local.LocalBackend``: ONNX Runtime in the caller's process, on the very files
  Triton serves (the retrieval service's text queries, index builds, evaluation);
- ``mmsearch.clients.inference.InferenceClient``: the Triton server (image queries, rerank, builds given
  ``--serving-url``).
Callers (the retrieval pipeline, ``Encoder`` for builds and evaluation) hold a ``Backend`` and never ask
which one it is, so "run the model locally or through Triton" is decided once, where it is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    def infer(self, model: str, inputs: Mapping[str, np.ndarray], output: str | None = None) -> np.ndarray[Any, Any]:
        """``model``'s output (the named one, or its first) for batch-major ``inputs``; any batch size
        (chunked to the model's max_batch_size by the backend)."""
        ...

    def model_ready(self, model: str) -> bool:
        """Whether ``infer`` on ``model`` would run now."""
        ...
