"""numpy <-> wire Tensor: lossless for every allowed dtype and shape; malformed messages are BadInput."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.errors import BadInput
from mmsearch.modelrepo.tensors import ALLOWED_DTYPES, from_proto, to_proto
from mmsearch.protos import tensor_pb2


def _sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(np.prod(shape, dtype=np.int64))
    if dtype == "bool":
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if dtype.startswith("int"):
        info = np.iinfo(dtype)
        vals = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        if n >= 2:
            vals[0], vals[1] = info.min, info.max  # extremes survive
        return vals.reshape(shape)
    return rng.normal(size=n).astype(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4), (1, 1, 1, 7), (0,), (3, 0), (0, 4, 2)])
def test_round_trip_every_dtype_and_shape(dtype, shape):
    a = _sample(dtype, shape)
    t = to_proto("x", a)
    assert t.name == "x" and t.dtype == dtype and tuple(t.shape) == shape
    assert len(t.data) == a.size * a.dtype.itemsize
    b = from_proto(tensor_pb2.Tensor.FromString(t.SerializeToString()))  # through the wire bytes
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
def test_zero_dimensional_scalars_keep_their_shape(dtype):
    a = np.array(1, dtype=dtype)
    t = to_proto("scalar", a)
    assert list(t.shape) == []
    b = from_proto(t)
    assert b.shape == () and b.dtype == a.dtype and b == a


def test_wire_bytes_are_little_endian_c_order():
    a = np.array([[1, 2], [3, 256]], dtype=np.int32)
    t = to_proto("x", a)
    assert t.data == b"".join(int(v).to_bytes(4, "little") for v in (1, 2, 3, 256))
    # a Fortran-ordered view and a big-endian array produce exactly the same message
    assert to_proto("x", np.asfortranarray(a)).data == t.data
    assert to_proto("x", a.astype(">i4")).data == t.data
    assert to_proto("x", a.T).data == np.ascontiguousarray(a.T).astype("<i4").tobytes()


def test_non_contiguous_slices_are_serialised_by_value():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[::2, 1::2]
    np.testing.assert_array_equal(from_proto(to_proto("x", a)), a)


def test_decoded_arrays_are_writable_native_copies():
    t = to_proto("x", np.arange(4, dtype=np.int64))
    b = from_proto(t)
    b[0] = 99  # a read-only view over the message bytes would raise here
    assert b.dtype.isnative
    assert from_proto(t)[0] == 0  # the message is untouched


@pytest.mark.parametrize("dtype", ["float64", "uint8", "int8", "complex64", "<U3", "object"])
def test_to_proto_refuses_other_dtypes_naming_the_tensor(dtype):
    a = np.zeros(2, dtype=dtype)
    with pytest.raises(BadInput, match=r"tensor 'pixels': unsupported dtype"):
        to_proto("pixels", a)


@pytest.mark.parametrize("dtype", ["float64", "", "FLOAT32", "<f4", "int"])
def test_from_proto_refuses_unknown_dtype_names(dtype):
    t = tensor_pb2.Tensor(name="ids", dtype=dtype, shape=[1], data=b"\0" * 8)
    with pytest.raises(BadInput, match=r"tensor 'ids': unsupported dtype"):
        from_proto(t)


@pytest.mark.parametrize(
    "shape, nbytes",
    [([2, 3], 2 * 3 * 4 - 1), ([2, 3], 2 * 3 * 4 + 4), ([], 0), ([0], 4), ([4], 0)],
)
def test_from_proto_size_mismatch_names_expected_and_got(shape, nbytes):
    t = tensor_pb2.Tensor(name="m", dtype="float32", shape=shape, data=b"\0" * nbytes)
    expected = int(np.prod(shape)) * 4
    with pytest.raises(BadInput, match=rf"tensor 'm': shape .* needs {expected} bytes, got {nbytes}"):
        from_proto(t)


def test_from_proto_refuses_negative_dimensions():
    # (-1, -2) multiplies to a positive element count: the negative check must not rely on the byte count
    t = tensor_pb2.Tensor(name="neg", dtype="int32", shape=[-1, -2], data=b"\0" * 8)
    with pytest.raises(BadInput, match="negative dimension"):
        from_proto(t)


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**62, 4], [2**62, 4, 0], [2**40, 2**40, 0]])
def test_from_proto_absurd_shapes_are_bad_input_not_a_crash(shape):
    # the element count overflows int64 (wrapping to 0 or a small number); a hostile message must get a clear error
    t = tensor_pb2.Tensor(name="huge", dtype="float32", shape=shape, data=b"")
    with pytest.raises(BadInput, match="tensor 'huge'"):
        from_proto(t)
