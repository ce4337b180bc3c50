"""numpy arrays <-> the wire Tensor message (dtype + shape + raw little-endian bytes)."""

from __future__ import annotations

import math

import numpy as np

from mmsearch.errors import BadInput
from mmsearch.protos import tensor_pb2

ALLOWED_DTYPES = ("int64", "int32", "float32", "float16", "bool")


def to_proto(name: str, arr: np.ndarray) -> tensor_pb2.Tensor:
    a = np.asarray(arr)  # not ascontiguousarray: it turns a 0-d array into shape (1,); tobytes() is C order anyway
    if a.dtype.name not in ALLOWED_DTYPES:
        raise BadInput(f"tensor {name!r}: unsupported dtype {a.dtype}")
    return tensor_pb2.Tensor(name=name, dtype=a.dtype.name, shape=list(a.shape), data=a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def from_proto(t: tensor_pb2.Tensor) -> np.ndarray:
    if t.dtype not in ALLOWED_DTYPES:
        raise BadInput(f"tensor {t.name!r}: unsupported dtype {t.dtype!r}")
    dtype = np.dtype(t.dtype).newbyteorder("<")
    shape = tuple(int(s) for s in t.shape)
    if any(s < 0 for s in shape):
        raise BadInput(f"tensor {t.name!r}: negative dimension in shape {shape}")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a hostile shape cannot overflow to a matching size
    if expected != len(t.data):
        raise BadInput(f"tensor {t.name!r}: shape {shape} x {t.dtype} needs {expected} bytes, got {len(t.data)}")
    try:
        return np.frombuffer(t.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except ValueError as e:  # e.g. an empty tensor whose other dimensions are absurdly large
        raise BadInput(f"tensor {t.name!r}: unusable shape {shape}: {e}") from e
