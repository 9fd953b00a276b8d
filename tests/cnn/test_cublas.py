"""The column-major cuBLAS calls of shallow.cnn._cublas, checked on the host: the arguments that
gemm_arguments computes, read by an emulation of cuBLAS's semantics (column-major storage,
leading dimensions, ops N/T, batch strides) over the arrays' own memory, give a @ b."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from shallow.cnn._cublas import OP_N, gemm_arguments


def _stored(operand, rows, cols, batch):
    """The matrices (batch, rows, cols) that cuBLAS reads: column-major with the operand's leading
    dimension, from the first element of its array."""
    x = operand.array
    size = x.itemsize
    return as_strided(x, shape=(batch, rows, cols), strides=(operand.stride * size, size, operand.ld * size))


def _emulate_cublas(args, alpha, beta):
    """C <- alpha op(A) op(B) + beta C as cuBLAS computes it, C (m x n) column-major with ldc."""
    m, n, k, S = args.m, args.n, args.k, args.batch
    first, second = args.first, args.second
    A = _stored(first, m, k, S) if first.op == OP_N else _stored(first, k, m, S).transpose(0, 2, 1)
    B = _stored(second, k, n, S) if second.op == OP_N else _stored(second, n, k, S).transpose(0, 2, 1)
    size = args.out.itemsize
    C = as_strided(args.out, shape=(S, m, n), strides=(args.stride_c * size, size, args.ldc * size), writeable=True)
    C[...] = alpha * np.matmul(A, B) + beta * C.copy()


def _views(rng, shape, kind):
    """An array of ``shape`` laid out as ``kind``: C-ordered, a transposed view, a column slice of a
    wider array, a row slice, or with both strides > 1 (copied by gemm_arguments)."""
    *batch, r, c = shape
    if kind == "c":
        return rng.standard_normal(shape)
    if kind == "transposed":
        return np.swapaxes(rng.standard_normal((*batch, c, r)), -1, -2)
    if kind == "column slice":
        return rng.standard_normal((*batch, r, c + 5))[..., 2:c + 2]
    if kind == "row slice":
        return rng.standard_normal((*batch, r + 3, c))[..., 1:r + 1, :]
    return rng.standard_normal((*batch, 2 * r, 2 * c))[..., ::2, ::2]


KINDS = ["c", "transposed", "column slice", "row slice", "strided"]


@pytest.mark.parametrize("out_kind", ["c", "column slice", "transposed"])
@pytest.mark.parametrize("b_kind", KINDS)
@pytest.mark.parametrize("a_kind", KINDS)
@pytest.mark.parametrize("S, M, K, N", [(1, 7, 5, 4), (3, 6, 9, 2), (1, 1, 4, 3), (2, 5, 1, 6), (1, 4, 3, 1)])
def test_gemm_arguments_give_the_row_major_product(S, M, K, N, a_kind, b_kind, out_kind):
    rng = np.random.default_rng(S * 1000 + M * 100 + K * 10 + N)
    a, b, out = _views(rng, (S, M, K), a_kind), _views(rng, (S, K, N), b_kind), _views(rng, (S, M, N), out_kind)
    expected = 0.5 * a @ b + 2.0 * out
    args = gemm_arguments(a, b, out)
    _emulate_cublas(args, 0.5, 2.0)
    if args.out is not out:
        out[...] = args.out
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_gemm_arguments_read_views_in_place():
    """C-ordered operands, transposed views and column slices are read where they are (no copy):
    the layouts of the convolutions' products and of the weight gradients' batched products."""
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((64, 40))
    a, b = wide[:, 3:11], rng.standard_normal((8, 5))  # a column slice, as a group of channels
    out = np.zeros((64, 5))
    args = gemm_arguments(a[None], b[None], out[None])
    assert args.first.array.base is b and args.second.array.base is a.base and args.out.base is out
    chunks = wide[:60].reshape(4, 15, 40)[:, :, 3:11]  # gram_rows: (S, m, p) row chunks, transposed
    args = gemm_arguments(np.swapaxes(chunks, 1, 2), rng.standard_normal((4, 15, 6)), np.zeros((4, 8, 6)))
    assert np.shares_memory(args.second.array, wide)


def test_gemm_arguments_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="gemm shapes do not match"):
        gemm_arguments(np.zeros((1, 3, 4)), np.zeros((1, 5, 2)), np.zeros((1, 3, 2)))


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_an_empty_sum_gives_beta_times_out_and_does_not_read_out_when_beta_is_zero(beta):
    """a @ b with an inner dimension of 0 is the zero matrix, so out <- beta out; with beta = 0, out
    is not read, as in BLAS: the NaN that an uninitialised array may hold does not survive (0 NaN = NaN).
    The branch returns before any cuBLAS call, so it runs on numpy arrays with a handle that has no library."""
    from shallow.cnn._cublas import Handle
    handle = object.__new__(Handle)  # no cuBLAS handle: the empty sum never reaches the library
    out = np.array([[np.nan, 1.0, -2.0], [np.inf, 3.0, 0.5]])
    expected = np.zeros((2, 3)) if beta == 0 else beta * out
    assert handle.matmul(np.zeros((2, 0)), np.zeros((0, 3)), out, beta=beta) is out
    np.testing.assert_array_equal(out, expected)
