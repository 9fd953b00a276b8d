r"""Reductions over the rows of tall matrices, for the backward passes of :mod:`shallow.cnn`.

A training step reduces tensors of M = N H W ~ 10^6 rows to a few dozen numbers per channel:
the bias and batch-normalisation gradients (column sums and column dot products of an (M, C)
matrix) and the convolutions' weight gradients (A^T B for A of shape (M, p), B of shape (M, q),
with p, q = 16 to 128 channels).

On the host these are one einsum or one BLAS call each. On a GPU the same reductions leave the
device nearly idle: CuPy's generic reduction kernel gives each output element one thread block
(32 blocks for 32 channels, on a device with over a hundred multiprocessors). Here, on a device,
the rows are cut into S chunks of m consecutive rows (:func:`chunks`), each chunk is reduced on
its own, all S at once (S C outputs: enough blocks for the whole device), and the S partial
results are summed (a second, small reduction):

    sum_r x[r]         = sum_{s < S} ( sum_{r in chunk s} x[r] )        + the rows left over,
    sum_r a[r]^T b[r]  = sum_{s < S} A_s^T B_s    (a batched GEMM)      + the rows left over,

with S = min(256, M // 1024) and m = M // S (fewer than S rows are left over; they go into
the first partial sum directly). This is the split-K scheme of GEMM libraries (CUTLASS's
"parallel reduction across GEMM-K"), done with the array API. An array of shape (N, H, W, C) (a
layer's output, possibly a strided view) needs no chunks: its (H, W) axes are summed first, N C
sums at once, then its N rows.

``split=None`` (the default) splits the sums and dot products on a device and not on the host,
where the single-pass einsum is faster; ``split=True`` forces the chunked route on any array (the
tests check it on numpy against the direct sums). Measured on an H200 (CuPy 14.2, CUDA 13,
2026-11-29, ``benchmarks/device_primitives.py --batch 1024``): the channel sums of a (861184, 32)
matrix take 19.0 ms by einsum and 0.13 ms split, the dot products 1.84 and 0.25 ms. The products
A^T B are another matter: cuBLAS splits a long K itself there, and one GEMM beat every chunking
(0.23 against 0.40 ms for a 3x3 tap's 32 x 32 gradient over those rows, 0.65 against at least
2.4 ms for the im2col gradient (861184, 288)^T (861184, 32)), so :func:`gram_rows` is one GEMM
by default on a device too, and chunked only when asked.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ._gemm import batched_matmul, gemm

__all__ = ["chunks", "dot_rows", "gram_rows", "sum_rows"]

#: Rows of the smallest chunk, and the largest number of chunks, of a split reduction.
MIN_CHUNK_ROWS = 1024
MAX_CHUNKS = 256


def chunks(M: int) -> tuple[int, int]:
    """(S, m): S chunks of m consecutive rows for a split reduction over M rows (S m <= M < S (m + 1))."""
    S = max(1, min(MAX_CHUNKS, M // MIN_CHUNK_ROWS))
    return S, M // S


def on_device(x) -> bool:
    """Whether ``x`` lives on a device (not a numpy array, nor a subclass such as a memmap)."""
    return not isinstance(x, np.ndarray)


def _split(x, split) -> bool:
    return on_device(x) if split is None else bool(split)


def _letters(ndim):
    return "abcdefghijklmnopqrstuvwxy"[:ndim - 1]


def _by_sample(partial, dtype):
    """The total (C,) of per-sample sums ``partial`` (N, C), added in float64 and given in ``dtype``.

    Blocked summation for the host passes: one einsum accumulating all N H W rows of a float32
    batch into C float32 numbers lost accuracy with the batch (relative error 1e-5 at N H W = 2^18,
    and 3e-3 in the batch-norm dgamma that it fed); per image, then across images in float64 (a
    few N C numbers), the error stays near float32 rounding, at the same speed.
    """
    return partial.sum(axis=0, dtype=np.float64).astype(dtype, copy=False)


def sum_rows(x, split=None):
    """The sum of ``x`` over all axes but the last: shape (C,) for ``x`` of shape (..., C).

    Parameters
    ----------
    x : array of shape (..., C)
        Any strides (a convolution's output is a strided view of its grid: no copy is made).
    split : bool or None
        Reduce in chunks (module notes); None: on a device only. Unsplit, an array of 3 or more
        axes is summed per sample (first axis) by one einsum, and the samples in float64.
    """
    xp = get_xp(x)
    if not _split(x, split) or x.ndim == 1:
        if x.ndim > 2:
            return _by_sample(xp.einsum(f"{_letters(x.ndim)}z->az", x), x.dtype)
        return xp.einsum(f"{_letters(x.ndim)}z->z", x)
    if x.ndim > 2:
        # the inner axes first: N C partial sums in parallel, then the N of them
        x = x.sum(axis=tuple(range(1, x.ndim - 1)))
    M, C = x.shape
    S, m = chunks(M)
    if S == 1:
        return x.sum(axis=0)
    partial = x[:S * m].reshape(S, m, C).sum(axis=1)
    if S * m < M:
        partial[0] += x[S * m:].sum(axis=0)
    return partial.sum(axis=0)


def dot_rows(x, y, split=None):
    """sum over all axes but the last of ``x * y`` (shape (C,)), for ``x`` and ``y`` of one shape (..., C).

    On the host one einsum pass with no temporary; split (on a device), the product is formed
    once and reduced by :func:`sum_rows`.
    """
    xp = get_xp(x, y)
    if not _split(x, split):
        letters = _letters(x.ndim)
        if x.ndim > 2:
            return _by_sample(xp.einsum(f"{letters}z,{letters}z->az", x, y), np.result_type(x, y))
        return xp.einsum(f"{letters}z,{letters}z->z", x, y)
    return sum_rows(xp.multiply(x, y), split=True)


def gram_rows(a, b, out, split=None):
    """``out <- a^T b`` (the sum over rows r of a[r]^T b[r]) in place, and return ``out``.

    Parameters
    ----------
    a : array of shape (M, p)
    b : array of shape (M, q)
        Either may be a column slice of a wider matrix.
    out : array of shape (p, q)
        Overwritten.
    split : bool or None
        True: a batched GEMM over S row chunks and a sum of the S partial products (module
        notes). None or False: one GEMM (:func:`shallow.cnn._gemm.gemm`), faster on the host and,
        as measured, on a GPU too (module notes).
    """
    M = a.shape[0]
    S, m = chunks(M)
    if not split or S == 1:
        return gemm(a.T, b, out)
    xp = get_xp(a, b, out)
    p, q = a.shape[1], b.shape[1]
    A = a[:S * m].reshape(S, m, p)
    B = b[:S * m].reshape(S, m, q)
    partial = batched_matmul(xp.swapaxes(A, 1, 2), B)  # (S, p, q)
    if S * m < M:
        gemm(a[S * m:].T, b[S * m:], partial[0], beta=1.0)
    out[...] = partial.sum(axis=0)
    return out
