"""Matrix products with accumulation, ``out <- a @ b + beta * out``, for the layers of :mod:`shallow.cnn`.

numpy has no GEMM with beta = 1: ``out += a @ b`` writes a temporary and reads it back, which
for the thin products of a convolution (K = 16 to 128 channels) costs as much memory traffic as
the product itself. On the host this helper calls BLAS ``?gemm`` through :mod:`scipy.linalg.blas`
on the transposed (Fortran-ordered) views of C-ordered arrays, so that ``out`` is updated in place
without a temporary; on a GPU it calls cuBLAS through CuPy (:func:`shallow.backend.device_gemm`)
the same way, or through the handle of :mod:`shallow.cnn._cublas` while a step is being recorded
as a CUDA graph (CuPy refuses cuBLAS calls then). Elsewhere (operands that are not contiguous) it falls back to ``matmul`` and an
in-place add.

Every GEMM of the layers' hot paths goes through this module (:func:`gemm`, or the routine of
:func:`host_gemm` called directly in the convolution's loops), hence through one BLAS library:
numpy and scipy wheels each ship their own OpenBLAS, each with its own thread pool, and two pools
of spinning threads on the same cores slow each other down. scipy's wrappers hold the GIL while
BLAS runs.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas as _blas

from ..backend import device_gemm, get_xp
from . import _cublas

__all__ = ["gemm", "batched_matmul", "host_gemm"]

_GEMM = {np.dtype(np.float32): _blas.sgemm, np.dtype(np.float64): _blas.dgemm}


def _fortran_operand(X):
    """(M, trans) with M Fortran-contiguous and op(M) = X.T, or None when X is neither C nor F ordered."""
    flags = X.flags
    if flags.c_contiguous:
        return X.T, 0
    if flags.f_contiguous:
        return X, 1
    return None


def gemm(a, b, out, beta: float = 0.0):
    """``out <- a @ b + beta * out`` in place, and return ``out``.

    Parameters
    ----------
    a : array of shape (p, k)
    b : array of shape (k, q)
        Either may be a transposed view (``X.T``) of a contiguous array: no copy is made then.
    out : array of shape (p, q)
        Overwritten (``beta = 0``) or accumulated into (``beta = 1``); same dtype as ``a`` and ``b``.
    beta : float
        Weight of the previous content of ``out``.

    Returns
    -------
    out : the same array

    Notes
    -----
    With C-ordered ``out``, ``out.T`` is a Fortran-ordered (q, p) matrix and
    ``out.T <- b.T @ a.T + beta out.T`` is one BLAS call whose operands need no copy when ``a``
    and ``b`` are C- or F-contiguous. An empty product (k = 0) gives ``beta * out``.
    """
    if type(out) is np.ndarray and out.flags.c_contiguous and out.size and a.shape[1]:
        fn = _GEMM.get(out.dtype)
        if fn is not None and a.dtype == out.dtype and b.dtype == out.dtype:
            ops_b, ops_a = _fortran_operand(b), _fortran_operand(a)
            if ops_a is not None and ops_b is not None:
                c = out.T
                res = fn(1.0, ops_b[0], ops_a[0], beta=beta, c=c, trans_a=ops_b[1], trans_b=ops_a[1], overwrite_c=1)
                if res is not c:
                    out[...] = res.T  # f2py made a copy after all: write the result back
                return out
    xp = get_xp(a, b, out)
    handle = _cublas.bound()
    if handle is not None and xp is not np:  # a step being recorded, where CuPy's cuBLAS calls are refused
        return handle.matmul(a.astype(out.dtype, copy=False), b.astype(out.dtype, copy=False), out, beta=beta)
    if xp is not np and beta != 0 and out.flags.c_contiguous and out.size and a.shape[1]:
        fn = device_gemm()
        if fn is not None and a.dtype == out.dtype and b.dtype == out.dtype:
            # cuBLAS accumulates in place (it takes C- or F-contiguous operands as they are)
            fn("N", "N", a, b, out=out, alpha=1.0, beta=beta)
            return out
    if beta == 0:
        out[...] = xp.matmul(a, b)
    elif beta == 1:
        out += xp.matmul(a, b)
    else:
        out *= beta
        out += xp.matmul(a, b)
    return out


def batched_matmul(a, b):
    """``a @ b`` for stacks of matrices (S, p, m) and (S, m, q): CuPy's (or numpy's) matmul, or
    the cuBLAS handle bound while a step is recorded (:mod:`shallow.cnn._cublas`)."""
    xp = get_xp(a, b)
    handle = _cublas.bound()
    if handle is None or xp is np:
        return xp.matmul(a, b)
    out = xp.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=xp.result_type(a, b))
    return handle.matmul(a.astype(out.dtype, copy=False), b.astype(out.dtype, copy=False), out)


def host_gemm(*arrays):
    """The BLAS ``?gemm`` of scipy for host arrays of one float dtype, all C-contiguous; else None.

    For hot loops that call BLAS directly on transposed views (``fn(1.0, b.T, a.T, beta=1.0,
    c=out.T, overwrite_c=1)`` computes ``out += a @ b``): with F-contiguous operands of the
    routine's dtype, f2py passes them through without copying and updates ``c`` in place.
    """
    first = arrays[0]
    if type(first) is not np.ndarray:
        return None
    fn = _GEMM.get(first.dtype)
    if fn is None:
        return None
    for x in arrays:
        if type(x) is not np.ndarray or x.dtype != first.dtype or not x.flags.c_contiguous:
            return None
    return fn
