r"""Matrix products through cuBLAS called directly, for steps recorded as CUDA graphs.

cuBLAS can be recorded by CUDA stream capture, but CuPy (14.2) refuses to call it while a stream
is capturing ("calling cuBLAS API during stream capture is currently unsupported"). This module
binds the two routines the layers need, ``?gemm`` and ``?gemmStridedBatched`` in float32 and
float64, with ctypes, on a handle of its own that is tied to one stream and given a workspace of
its own (so that cuBLAS allocates nothing while capturing). :class:`~shallow.cnn.graph.CapturedStep`
makes one and binds it (:func:`bound`) for the runs of its step; :func:`shallow.cnn._gemm.gemm` and
:func:`shallow.cnn._gemm.batched_matmul` then call it instead of CuPy.

Layouts
-------
cuBLAS is column-major, numpy and CuPy arrays are row-major. The row-major product C = A B is the
column-major product C^T = B^T A^T, so cuBLAS is called with (m, n, k) = (N, M, K), its first
operand standing for B^T and its second for A^T. A row-major matrix X (r x c) with element strides
(s0, s1) is, in memory read column-major:

* X^T with leading dimension s0 when s1 = 1 (rows contiguous): the operand X^T needs no transpose;
* X with leading dimension s1 when s0 = 1 (columns contiguous, a transposed view): X^T is that
  matrix transposed (``CUBLAS_OP_T``);

any other operand is copied first. The result must have contiguous rows (s1 = 1): C^T is then
stored column-major with leading dimension s0; otherwise the product goes through a temporary.
A batch of matrices (S, r, c) adds the stride between consecutive matrices.
:func:`gemm_arguments` computes all of this and is tested on the host against an emulation of
cuBLAS's column-major semantics; the calls themselves run where a GPU is (``gpu`` tests).

References
----------
NVIDIA, cuBLAS library documentation: ``cublas<t>gemm``, ``cublas<t>gemmStridedBatched``,
``cublasSetWorkspace``, and "CUDA Graphs support".
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass

import numpy as np

from ..backend import cublas_library, get_xp

OP_N, OP_T = 0, 1
#: The handle's workspace: NVIDIA's recommendation for Hopper GPUs (32 MiB), more than enough elsewhere.
WORKSPACE_BYTES = 32 * 2 ** 20


@dataclass(frozen=True)
class Operand:
    """How cuBLAS reads one operand: the array whose memory it reads (the operand itself or a
    contiguous copy), op N or T, the leading dimension and the batch stride, in elements."""

    array: object
    op: int
    ld: int
    stride: int


@dataclass(frozen=True)
class GemmArguments:
    """A row-major out <- alpha a @ b + beta out as a column-major cuBLAS call."""

    m: int
    n: int
    k: int
    first: Operand  # stands for b^T
    second: Operand  # stands for a^T
    out: object  # the array cuBLAS writes: ``out`` itself, or a contiguous temporary
    ldc: int
    stride_c: int
    batch: int


def _element_strides(x):
    itemsize = x.itemsize
    if any(s % itemsize for s in x.strides):
        return None
    return tuple(s // itemsize for s in x.strides)


def _operand(x) -> Operand:
    """x (batch, r, c) as the column-major operand that stands for x^T (copied when it must be)."""
    batch, r, c = x.shape
    strides = _element_strides(x)
    if strides is not None:
        sb, s0, s1 = strides
        stride = sb if batch > 1 else 0
        if stride >= 0 and (batch == 1 or stride > 0):
            if (s1 == 1 or c == 1) and (r == 1 or s0 >= max(c, 1)):
                return Operand(x, OP_N, s0 if r > 1 else max(c, 1), stride)
            if (s0 == 1 or r == 1) and (c == 1 or s1 >= max(r, 1)):
                return Operand(x, OP_T, s1 if c > 1 else max(r, 1), stride)
    return _operand(get_xp(x).ascontiguousarray(x))


def gemm_arguments(a, b, out) -> GemmArguments:
    """The cuBLAS call for ``out <- alpha a @ b + beta out`` (module notes).

    Parameters
    ----------
    a : array of shape (S, M, K)
    b : array of shape (S, K, N)
    out : array of shape (S, M, N)
        The result is written to ``GemmArguments.out``: ``out`` itself when its rows are
        contiguous, else a C-contiguous copy of it (the caller copies it back).
    """
    S, M, K = a.shape
    if b.shape != (S, K, b.shape[2]) or out.shape != (S, M, b.shape[2]):
        raise ValueError(f"gemm shapes do not match: a {a.shape}, b {b.shape}, out {out.shape}")
    N = b.shape[2]
    strides = _element_strides(out)
    target = out
    if strides is None or not ((strides[2] == 1 or N == 1) and (M == 1 or strides[1] >= max(N, 1))
                               and (S == 1 or strides[0] > 0)):
        target = get_xp(out).ascontiguousarray(out)
        strides = _element_strides(target)
    ldc = strides[1] if M > 1 else max(N, 1)
    return GemmArguments(m=N, n=M, k=K, first=_operand(b), second=_operand(a), out=target, ldc=ldc,
                         stride_c=strides[0] if S > 1 else 0, batch=S)


# ----------------------------------------------------------------------------- the library

_LIBRARY = None


def _library():
    """libcublas (:func:`shallow.backend.cublas_library`) with the argument types of the routines used here."""
    global _LIBRARY
    if _LIBRARY is None:
        lib = cublas_library()
        if lib is None:
            raise OSError("libcublas is not loaded in this process (no CUDA device, or CuPy without cuBLAS)")
        handle, size, i32, i64, ptr = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(handle)]
        lib.cublasDestroy_v2.argtypes = [handle]
        lib.cublasSetStream_v2.argtypes = [handle, ptr]
        lib.cublasSetWorkspace_v2.argtypes = [handle, ptr, size]
        for t in "SD":
            getattr(lib, f"cublas{t}gemm_v2").argtypes = [handle, i32, i32, i32, i32, i32, ptr, ptr, i32, ptr, i32,
                                                          ptr, ptr, i32]
            getattr(lib, f"cublas{t}gemmStridedBatched").argtypes = [handle, i32, i32, i32, i32, i32, ptr, ptr, i32,
                                                                     i64, ptr, i32, i64, ptr, ptr, i32, i64, i32]
        _LIBRARY = lib
    return _LIBRARY


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"cuBLAS {what} failed with status {status}")


class Handle:
    """A cuBLAS handle tied to one CuPy stream, with its own workspace.

    Parameters
    ----------
    stream : cupy.cuda.Stream
    xp : module
        CuPy, which allocates the workspace.
    """

    def __init__(self, stream, xp):
        self._lib = _library()
        self._stream = stream  # kept alive as long as the handle bound to it
        self._handle = ctypes.c_void_p()
        _check(self._lib.cublasCreate_v2(ctypes.byref(self._handle)), "cublasCreate")
        _check(self._lib.cublasSetStream_v2(self._handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream")
        self._workspace = xp.empty(WORKSPACE_BYTES, dtype=xp.uint8)
        _check(self._lib.cublasSetWorkspace_v2(self._handle, ctypes.c_void_p(self._workspace.data.ptr),
                                               WORKSPACE_BYTES), "cublasSetWorkspace")

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            with contextlib.suppress(Exception):
                self._lib.cublasDestroy_v2(handle)

    def matmul(self, a, b, out, alpha=1.0, beta=0.0):
        """``out <- alpha a @ b + beta out`` in place, for 2-D operands or stacks (S, ., .); returns ``out``."""
        if a.dtype != out.dtype or b.dtype != out.dtype or out.dtype not in (np.float32, np.float64):
            raise TypeError(f"cuBLAS gemm needs operands of the result's dtype, float32 or float64; got "
                            f"{a.dtype}, {b.dtype} -> {out.dtype}")
        squeeze = out.ndim == 2
        if squeeze:
            a, b, out3 = a[None], b[None], out[None]
        else:
            out3 = out
        if out3.size == 0:
            return out
        if a.shape[-1] == 0:  # an empty sum: cuBLAS is not called with k = 0
            if beta == 0:  # out is not read, as in BLAS (0 times the NaN of an empty array is NaN)
                out[...] = 0
            else:
                out *= beta
            return out
        args = gemm_arguments(a, b, out3)
        t, scalar = ("S", ctypes.c_float) if out.dtype == np.float32 else ("D", ctypes.c_double)
        al, be = scalar(alpha), scalar(beta)
        f, s = args.first, args.second
        if args.batch == 1:
            status = getattr(self._lib, f"cublas{t}gemm_v2")(
                self._handle, f.op, s.op, args.m, args.n, args.k, ctypes.byref(al), f.array.data.ptr, f.ld,
                s.array.data.ptr, s.ld, ctypes.byref(be), args.out.data.ptr, args.ldc)
        else:
            status = getattr(self._lib, f"cublas{t}gemmStridedBatched")(
                self._handle, f.op, s.op, args.m, args.n, args.k, ctypes.byref(al), f.array.data.ptr, f.ld, f.stride,
                s.array.data.ptr, s.ld, s.stride, ctypes.byref(be), args.out.data.ptr, args.ldc, args.stride_c,
                args.batch)
        _check(status, f"{t}gemm")
        if args.out is not out3:
            out3[...] = args.out
        return out


# ----------------------------------------------------------------------------- the bound handle

_BOUND = None


def bound():
    """The handle that the layers' matrix products use now (None: CuPy's own calls)."""
    return _BOUND


@contextlib.contextmanager
def binding(handle):
    """Within: the layers' matrix products on a device call ``handle`` (a :class:`Handle`)."""
    global _BOUND
    previous, _BOUND = _BOUND, handle
    try:
        yield handle
    finally:
        _BOUND = previous
