r"""Two-dimensional convolution (cross-correlation) on channels-last batches, as GEMMs.

For an input x of shape (N, H, W, C_in) and weights W of shape (KH, KW, C_in / G, C_out) with
G groups, stride s, dilation d and zero padding (top, bottom, left, right) = (pt, pb, pl, pr),

    y[n, p, q, o] = b[o] + sum_{i < KH, j < KW, c < C_in/G} W[i, j, c, o] xpad[n, s p + d i, s q + d j, g(o) C_in/G + c],

where xpad is x padded with zeros and g(o) = o // (C_out / G) the group of output channel o. The
output has H_o = floor((H + pt + pb - d (KH - 1) - 1) / s) + 1 rows (W_o columns alike). This is
the cross-correlation of deep-learning libraries (``torch.nn.functional.conv2d``), not the flipped
convolution of signal processing.

Three formulations compute it (``method=``; ``"auto"`` picks one per layer):

``"taps"`` (stride 1; the fast path for C_in / G >= 16)
    The batch is written once into a flat zero-padded channels-last buffer B of rows
    ``base + n Hp Wp + h Wp + w`` (Hp = H + max(pt, pb), Wp = W + max(pl, pr): the bottom and right
    zero bands of one row or image serve as the top and left bands of the next). Tap (i, j) of the
    kernel is then a shift of the rows by ``s_ij = d (i Wp + j)``, and the output on the padded grid
    is a sum of KH KW GEMMs on contiguous row-slices of B,

        Y[r] = sum_{i, j} B[r + s_ij] @ W[i, j],    r < R,

    accumulated in place by BLAS (beta = 1): no im2col copy is made. Rows of the grid outside
    the H_o x W_o window are computed and discarded (a fraction 1 - H_o W_o / (Hp Wp): 21% at 8x8,
    7% at 28x28). The backward pass is the same shifts read the other way,

        dW[i, j] = sum_r B[r + s_ij]^T dY[r],     dX[q] = sum_{i, j} dY[q + base - s_ij] @ W[i, j]^T,

    with dY the output gradient on the grid (zero outside the window, with zero rows in front),
    so that dX, like Y, is a sum of shifted products written block by block.

    The rows are processed in blocks (:func:`_row_blocks`): all KH KW products of a block run
    while its rows are in cache, and each block's GEMMs are small enough (M N K <= 100^3) for
    OpenBLAS's small-matrix kernels, which skip the packing of the operands and run on the
    calling thread; layers of more than about 100 x 100 channels take longer blocks through the
    packing kernels instead. The forward output and the input gradient are returned as strided views of
    their grids (no cropping copy).
``"flat_im2col"`` (stride 1; picked for C_in / G < 16, the input layer)
    The KH KW shifted row-slices of B are copied side by side into one (R, KH KW C_in / G)
    matrix and multiplied once: a thin first layer makes one GEMM with K = 9 C_in instead of nine
    GEMMs with K = C_in.
``"im2col"`` (any stride)
    The strided windows of the padded input are gathered into an (N H_o W_o, KH KW C_in / G)
    matrix (im2col) and multiplied once; the backward pass scatters the columns back (col2im).

On the host every GEMM calls BLAS ``?gemm`` of scipy directly on transposed views (beta = 1
accumulates in place; :mod:`shallow.cnn._gemm`). Everything runs on one core: OpenBLAS runs its
small-matrix kernels on the calling thread, and scipy's BLAS wrappers hold the GIL.

On a GPU (CuPy arrays) every call is a kernel launch of some microseconds of Python and driver
time, and a reduction to a small result leaves most of the device idle, so ``"auto"`` computes
differently there: the forward pass is ``"flat_im2col"`` whatever the channel count (the
columns are one copy of an overlapping strided view of B, then one GEMM with K = KH KW C_in / G,
against KH KW accumulated GEMMs that also read and write the output KH KW times); the weight
gradient is one GEMM of the columns (cuBLAS splits a sum over 10^6 rows itself: on an H200 this
beat the row chunks of :func:`shallow.cnn._reduce.gram_rows` by 4x); the input gradient is the
tap sum above, accumulated in place by cuBLAS (no column matrix of the gradient is formed). The columns are kept
for the backward pass and take KH KW times the input's memory (about 2.3 GB for the VGG of
``benchmarks/cnn_step.py`` at batch 1024 in float32); ``method="taps"`` keeps only the input.

References
----------
1. K. Chellapilla, S. Puri and P. Simard, "High performance convolutional neural networks for
   document processing", 2006 (im2col: convolution as one matrix product).
2. A. Lavin and S. Gray, "Fast algorithms for convolutional neural networks", CVPR 2016,
   arXiv:1509.09308, Sec. 2 (the convolution as a sum over taps of matrix products).
3. V. Dumoulin and F. Visin, "A guide to convolution arithmetic for deep learning",
   arXiv:1603.07285, Sec. 2-5 (output sizes with padding, stride and dilation).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .._validation import check_array, check_bool, check_integer
from ..backend import get_xp
from . import _reduce
from ._gemm import gemm, host_gemm
from ._reduce import gram_rows, sum_rows
from .layers import (
    Layer,
    _add,
    _cast,
    _cast_in,
    _cast_tangents,
    _get,
    _missing_cache,
    check_batch,
    check_dtype,
    init_weight,
)

__all__ = ["Conv2d", "conv2d", "conv_output_size", "METHODS"]

#: The formulations of :class:`Conv2d` (see the module notes).
METHODS = ("auto", "taps", "flat_im2col", "im2col")

#: Input channels per group from which ``method="auto"`` multiplies tap by tap (``"taps"``)
#: rather than through one im2col matrix: below it the per-tap GEMMs are too thin (K < 16).
TAPS_MIN_CHANNELS = 16

#: OpenBLAS multiplies small matrices (M N K <= 100^3, no-transpose or A-transposed-B products)
#: with kernels that skip the packing of the operands (``gemm_small_kernel_permit``, AVX-512 and
#: other targets); the packing costs as much as the product for the thin GEMMs of a convolution.
SMALL_GEMM_MNK = 100**3
#: Below this many rows a block's small-matrix products are too short to run well (at 128 x 128
#: channels the blocks would have 61 rows); such wide layers multiply PACKED_BLOCK_ROWS rows at a
#: time through OpenBLAS's packing kernels instead (measured on the development machine, one thread,
#: float32, batch 128: 15% faster for 128 -> 128 channels at 7x7, 16% for 128 -> 256 at 4x4; the
#: small path stays ahead for 96 x 96 (108 rows) and 64 x 128 (122 rows)).
MIN_SMALL_BLOCK_ROWS = 100
PACKED_BLOCK_ROWS = 2048


def _row_blocks(R, c_in, c_out, host=True):
    """Ranges [r0, r1) covering [0, R), for the row-blocked products of the ``"taps"`` formulation.

    On the host, blocks of SMALL_GEMM_MNK / (c_in c_out) rows make every tap's GEMM a small-matrix
    product on data in cache: 976 rows for 32 channels in and out (1.5x faster than unblocked
    GEMMs on the development machine), 244 for 64. The small-matrix kernels run on the calling
    thread, so that these convolutions compute on one core whatever OPENBLAS_NUM_THREADS says.
    Wider layers, whose blocks would fall below MIN_SMALL_BLOCK_ROWS rows, take blocks of
    PACKED_BLOCK_ROWS rows through the packing kernels, which may use OpenBLAS's threads (the
    workers of :mod:`shallow.sweep` limit them to one). On a GPU one block covers everything.
    """
    if not host:
        return [(0, R)]
    step = SMALL_GEMM_MNK // max(1, c_in * c_out)
    if step < MIN_SMALL_BLOCK_ROWS:
        step = PACKED_BLOCK_ROWS
    return [(r0, min(R, r0 + step)) for r0 in range(0, R, step)]


def _pair(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(check_integer(v, name, minimum=0) for v in value)
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int, padding: tuple[int, int], dilation: int) -> int:
    """floor((size + p_before + p_after - dilation (kernel - 1) - 1) / stride) + 1 (may be <= 0).

    Parameters
    ----------
    size : int
        Input length along one axis (H or W).
    kernel : int
        Kernel length along that axis.
    stride : int
        Step between output positions, stride >= 1.
    padding : pair of ints
        (p_before, p_after), the zeros added before and after the input.
    dilation : int
        Spacing between kernel taps (1: contiguous).

    Returns
    -------
    int
        The output length along that axis; <= 0 when the dilated kernel is longer than the padded
        input (the caller refuses it).

    Raises
    ------
    ValueError
        For size not an integer >= 0, kernel, stride or dilation not an integer >= 1, or padding
        not a pair (tuple or list) of integers >= 0.
    """
    if not (isinstance(padding, (tuple, list)) and len(padding) == 2):
        raise ValueError(f"padding must be a pair (p_before, p_after), got {padding!r}")
    check_integer(size, "size", minimum=0)
    check_integer(kernel, "kernel", minimum=1)
    check_integer(stride, "stride", minimum=1)  # stride 0 divided by zero
    check_integer(dilation, "dilation", minimum=1)  # dilation 0 or -1 gave a size, and a wrong one
    check_integer(padding[0], "padding[0]", minimum=0)
    check_integer(padding[1], "padding[1]", minimum=0)
    return _output_size(size, kernel, stride, padding, dilation)


def _output_size(size, kernel, stride, padding, dilation) -> int:
    """:func:`conv_output_size` without its checks, for layers that checked their geometry when built
    (called on every forward pass of a pooling layer)."""
    return (size + padding[0] + padding[1] - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class _Plan:
    """How a Conv2d computes on inputs of one shape (built once per shape and cached)."""

    method: str  # "taps", "flat_im2col" or "im2col"
    N: int
    H: int
    W: int
    Ho: int
    Wo: int
    # flat buffer (taps, flat_im2col)
    Hp: int = 0
    Wp: int = 0
    base: int = 0
    R: int = 0
    length: int = 0
    shifts: tuple = ()
    lead: int = 0  # zero rows in front of the output-gradient grid, for the input-gradient pass
    D: int = 0  # rows of the input grid that hold pixels (the input-gradient pass computes these)


def _flat_grid(a, lead, Hp, Wp):
    """(lead + N Hp Wp, C) rows: ``lead`` zero rows, then each image of a (N, h, w, C) in the
    top-left corner of a zero (Hp, Wp) grid, flattened row by row (the operand of the shifted GEMMs)."""
    xp = get_xp(a)
    N, h, w, C = a.shape
    if _reduce.on_device(a):  # a memset and a copy: two launches instead of four
        flat = xp.zeros((lead + N * Hp * Wp, C), dtype=a.dtype)
        flat[lead:].reshape(N, Hp, Wp, C)[:, :h, :w] = a
        return flat
    flat = xp.empty((lead + N * Hp * Wp, C), dtype=a.dtype)
    flat[:lead] = 0
    grid = flat[lead:].reshape(N, Hp, Wp, C)
    grid[:, :h, :w] = a
    grid[:, :h, w:] = 0
    grid[:, h:] = 0
    return flat


def _shift_feasible(H, W, KH, KW, pads, dilation, stride):
    pt, pb, pl, pr = pads
    if stride != (1, 1):
        return False
    Ho = _output_size(H, KH, 1, (pt, pb), dilation[0])
    Wo = _output_size(W, KW, 1, (pl, pr), dilation[1])
    return Ho <= H + max(pt, pb) and Wo <= W + max(pl, pr)


class Conv2d(Layer):
    r"""2-D cross-correlation of channels-last batches, with stride, padding, dilation and groups.

    Parameters
    ----------
    in_channels, out_channels : int
        C_in and C_out, both multiples of ``groups``.
    kernel_size : int or (int, int)
        (KH, KW).
    stride : int or (int, int)
    padding : int, (int, int), (top, bottom, left, right), "valid" or "same"
        Zero padding. ``"same"`` (stride 1 only) pads d (K - 1) in total, the odd one at the
        bottom/right as PyTorch does.
    dilation : int or (int, int)
    groups : int
        G: input and output channels split into G groups convolved separately.
    bias : bool
    init : str or float
        See :mod:`shallow.cnn.layers` (default He, fan_in = KH KW C_in / G).
    rng : None, int or Generator
    dtype : float32 or float64
    method : {"auto", "taps", "flat_im2col", "im2col"}
        The formulation (module notes); ``"taps"`` and ``"flat_im2col"`` need stride 1.

    Attributes
    ----------
    params["W"] : array of shape (KH, KW, C_in / G, C_out)
    params["b"] : array of shape (C_out,)

    Notes
    -----
    y = conv(x, W) + b (module notes for the formula); backward dW = conv^T of x against dy,
    dx = the transposed convolution of dy by W, db = sum over (n, p, q) of dy; forward mode
    ty = conv(tx, W) + conv(x, tW) + tb (the convolution is bilinear in (x, W)).

    Examples
    --------
    >>> import numpy as np
    >>> conv = Conv2d(3, 8, 3, padding=1, rng=0)
    >>> conv(np.ones((2, 5, 5, 3))).shape
    (2, 5, 5, 8)
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, init="he", rng=None, dtype=np.float64, method="auto"):
        super().__init__()
        self.in_channels = check_integer(in_channels, "in_channels", minimum=1)
        self.out_channels = check_integer(out_channels, "out_channels", minimum=1)
        self.groups = check_integer(groups, "groups", minimum=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels={self.in_channels} and out_channels={self.out_channels} must both "
                             f"be multiples of groups={self.groups}")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        for name, v in (("kernel_size", self.kernel_size), ("stride", self.stride), ("dilation", self.dilation)):
            if min(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.padding = self._pads(padding)
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if method in ("taps", "flat_im2col") and self.stride != (1, 1):
            raise ValueError(f"method={method!r} needs stride 1, got stride={self.stride}; use 'im2col'")
        self.method = method
        dtype = check_dtype(dtype)
        KH, KW = self.kernel_size
        cg = self.in_channels // self.groups
        self.params["W"] = init_weight((KH, KW, cg, self.out_channels), KH * KW * cg, init, rng, dtype)
        if check_bool(bias, "bias"):
            self.params["b"] = np.zeros(self.out_channels, dtype=dtype)
        self._plans = {}

    def _pads(self, padding):
        KH, KW = self.kernel_size
        dh, dw = self.dilation
        if isinstance(padding, str):
            if padding == "valid":
                return (0, 0, 0, 0)
            if padding == "same":
                if self.stride != (1, 1):
                    raise ValueError(f"padding='same' needs stride 1, got stride={self.stride}")
                th, tw = dh * (KH - 1), dw * (KW - 1)
                return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
            raise ValueError(f"padding must be an int, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
        if isinstance(padding, (tuple, list)) and len(padding) == 4:
            return tuple(check_integer(p, "padding", minimum=0) for p in padding)
        ph, pw = _pair(padding, "padding")
        if ph < 0 or pw < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        return (ph, ph, pw, pw)

    # ------------------------------------------------------------------ planning
    def _plan(self, x, name="x"):
        check_batch(x, name)
        N, H, W, C = x.shape
        if C != self.in_channels:
            raise ValueError(f"{name} has {C} channels (shape {tuple(x.shape)}, channels last) but the "
                             f"convolution expects in_channels={self.in_channels}")
        device = _reduce.on_device(x)
        plan = self._plans.get((N, H, W, device))
        if plan is None:
            plan = self._plans[(N, H, W, device)] = self._make_plan(N, H, W, name, device)
        return plan

    def _make_plan(self, N, H, W, name, device=False):
        KH, KW = self.kernel_size
        (sh, sw), (dh, dw) = self.stride, self.dilation
        pt, pb, pl, pr = self.padding
        Ho = _output_size(H, KH, sh, (pt, pb), dh)
        Wo = _output_size(W, KW, sw, (pl, pr), dw)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{name} of size {H}x{W} is too small for kernel {self.kernel_size}, dilation "
                             f"{self.dilation} and padding {self.padding}: the output would be {Ho}x{Wo}")
        method = self.method
        feasible = _shift_feasible(H, W, KH, KW, self.padding, self.dilation, self.stride)
        if method == "auto":
            if not feasible or KH * KW == 1:
                method = "im2col"
            elif device or self.in_channels // self.groups < TAPS_MIN_CHANNELS:
                method = "flat_im2col"
            else:
                method = "taps"
        elif method != "im2col" and not feasible:
            method = "im2col"  # padding wider than the kernel: the flat buffer cannot hold it
        if method == "im2col":
            return _Plan("im2col", N, H, W, Ho, Wo)
        Hp, Wp = H + max(pt, pb), W + max(pl, pr)
        base = pt * Wp + pl
        R = (N - 1) * Hp * Wp + (Ho - 1) * Wp + Wo
        shifts = tuple(dh * i * Wp + dw * j for i in range(KH) for j in range(KW))
        length = base + N * Hp * Wp
        assert R + shifts[-1] <= length
        D = (N - 1) * Hp * Wp + (H - 1) * Wp + W
        lead = max(0, shifts[-1] - base)
        assert base + D <= N * Hp * Wp
        return _Plan(method, N, H, W, Ho, Wo, Hp, Wp, base, R, length, shifts, lead, D)

    # ------------------------------------------------------------------ operands
    def _groups(self):
        """(input channel slice, output channel slice) of every group."""
        G = self.groups
        cg, og = self.in_channels // G, self.out_channels // G
        if G == 1:
            return [(slice(None), slice(None))]
        return [(slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)) for g in range(G)]

    def _flat_buffer(self, x, plan):
        """B of shape (length, C): x written into the flat zero-padded grid (module notes)."""
        return _flat_grid(x, plan.base, plan.Hp, plan.Wp)

    def _windows(self, xpad, plan, i, j):
        """The strided view of tap (i, j) in the padded input: shape (N, Ho, Wo, C)."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        return xpad[:, dh * i: dh * i + sh * (plan.Ho - 1) + 1: sh, dw * j: dw * j + sw * (plan.Wo - 1) + 1: sw]

    def _prepare(self, x, plan):
        """The input operand: B (taps), or the im2col matrix of shape (rows, KH KW C)."""
        xp = get_xp(x)
        C = x.shape[3]
        KH, KW = self.kernel_size
        T = KH * KW
        if plan.method == "taps":
            return self._flat_buffer(x, plan)
        if plan.method == "flat_im2col":
            # row r of the columns is B[r + s_ij] for the KH KW taps side by side: an overlapping
            # strided view of B, of shape (R, KH, KW, C) and strides of 1, d_h Wp and d_w rows and
            # one element, copied once
            B = self._flat_buffer(x, plan)
            (dh, dw), row = self.dilation, B.strides[0]
            view = xp.lib.stride_tricks.as_strided(B, shape=(plan.R, KH, KW, C),
                                                   strides=(row, dh * plan.Wp * row, dw * row, B.strides[1]))
            return xp.ascontiguousarray(view).reshape(plan.R, T * C)
        pt, pb, pl, pr = self.padding
        if self.padding == (0, 0, 0, 0):
            xpad = x
        else:
            xpad = xp.zeros((plan.N, plan.H + pt + pb, plan.W + pl + pr, C), dtype=x.dtype)
            xpad[:, pt:pt + plan.H, pl:pl + plan.W] = x
        if T == 1 and self.stride == (1, 1):
            return xp.ascontiguousarray(xpad).reshape(-1, C)
        # the windows as one strided view (N, Ho, Wo, KH, KW, C) of the padded input, copied once
        (sh, sw), (dh, dw) = self.stride, self.dilation
        sN, sH, sW, sC = xpad.strides
        view = xp.lib.stride_tricks.as_strided(xpad, shape=(plan.N, plan.Ho, plan.Wo, KH, KW, C),
                                               strides=(sN, sh * sH, sw * sW, dh * sH, dw * sW, sC))
        return xp.ascontiguousarray(view).reshape(plan.N * plan.Ho * plan.Wo, T * C)

    def _cols_group(self, cols, ci, C):
        """The im2col columns of one group: (rows, T * C / G)."""
        if ci == slice(None):
            return cols
        T = self.kernel_size[0] * self.kernel_size[1]
        return cols.reshape(cols.shape[0], T, C)[:, :, ci].reshape(cols.shape[0], -1)

    def _weight_group(self, W, co):
        """The weights of one group as a (T * C / G, C_out / G) matrix."""
        KH, KW, cg, _ = W.shape
        return W[..., co].reshape(KH * KW * cg, -1)

    def _taps(self, W):
        """The (C / G, C_out) matrices W[i, j] in tap order (views)."""
        KH, KW = self.kernel_size
        return [W[i, j] for i in range(KH) for j in range(KW)]

    # ------------------------------------------------------------------ the shifted products
    @staticmethod
    def _row_products(out, rows, src, mats, offsets, fill):
        """out[r] = fill + sum_t src[r + offsets[t]] @ mats[t] for r < rows, by row blocks.

        Every block of ``out`` is written once: filled, then accumulated into by BLAS (beta = 1)
        while it is in cache. Any of the arrays may be a column slice (one group): the products
        then go through :func:`gemm`, which copies what BLAS cannot take as it is.
        """
        fn = host_gemm(src, out)
        if fn is not None:
            # C-contiguous copies of the (small) matrices: their transposes are F-contiguous and BLAS
            # sees a no-transpose product, for which OpenBLAS has its small-matrix kernels
            ops = [np.ascontiguousarray(m, dtype=out.dtype).T for m in mats]
        for r0, r1 in _row_blocks(rows, src.shape[1], out.shape[1], not _reduce.on_device(out)):
            out[r0:r1] = fill
            if fn is not None:
                c = out[r0:r1].T
                for t, off in enumerate(offsets):
                    fn(1.0, ops[t], src[r0 + off:r1 + off].T, beta=1.0, c=c, overwrite_c=1)
            else:
                for t, off in enumerate(offsets):
                    gemm(src[r0 + off:r1 + off], mats[t], out[r0:r1], beta=1.0)

    @staticmethod
    def _reduced_products(outs, rows, src, offsets, G):
        """outs[t] = sum_{r < rows} src[r + offsets[t]]^T G[r] (the weight gradient): by row blocks
        on the host, one GEMM per offset on a device (:func:`shallow.cnn._reduce.gram_rows`)."""
        if _reduce.on_device(G):
            for t, off in enumerate(offsets):
                gram_rows(src[off:off + rows], G[:rows], outs[t])
            return
        fn = host_gemm(src, G, *outs)
        for o in outs:
            o[...] = 0
        for r0, r1 in _row_blocks(rows, src.shape[1], G.shape[1]):
            if fn is not None:
                g = G[r0:r1].T
                for t, off in enumerate(offsets):
                    fn(1.0, g, src[r0 + off:r1 + off].T, beta=1.0, c=outs[t].T, trans_b=1, overwrite_c=1)
            else:
                for t, off in enumerate(offsets):
                    gemm(src[r0 + off:r1 + off].T, G[r0:r1], outs[t], beta=1.0)

    def _apply(self, op, W, plan, b=None):
        """conv(x, W) + b from the input operand; shape (N, Ho, Wo, C_out), possibly a strided view."""
        xp = get_xp(op, W)
        Co = W.shape[3]
        C = self.in_channels
        fill = 0 if b is None else b
        if plan.method == "taps":
            out = xp.empty((plan.N * plan.Hp * plan.Wp, Co), dtype=W.dtype)
            for ci, co in self._groups():
                self._row_products(out[:, co], plan.R, op[:, ci], [m[:, co] for m in self._taps(W)],
                                   plan.shifts, fill if b is None else b[co])
            return out.reshape(plan.N, plan.Hp, plan.Wp, Co)[:, :plan.Ho, :plan.Wo]
        rows = op.shape[0]
        if plan.method == "flat_im2col":
            out = xp.empty((plan.N * plan.Hp * plan.Wp, Co), dtype=W.dtype)
        else:
            out = xp.empty((rows, Co), dtype=W.dtype)
        for ci, co in self._groups():
            self._row_products(out[:, co], rows, self._cols_group(op, ci, C), [self._weight_group(W, co)], [0],
                               fill if b is None else b[co])
        if plan.method == "flat_im2col":
            return out.reshape(plan.N, plan.Hp, plan.Wp, Co)[:, :plan.Ho, :plan.Wo]
        return out.reshape(plan.N, plan.Ho, plan.Wo, Co)

    def _output_grid(self, dy, plan):
        """The output gradient as the GEMM operand: on the padded grid (zero outside, with
        ``plan.lead`` zero rows in front) for the flat methods, flat (N Ho Wo, C_out) for im2col."""
        xp = get_xp(dy)
        Co = dy.shape[3]
        if plan.method == "im2col":
            return xp.ascontiguousarray(dy).reshape(-1, Co)
        return _flat_grid(dy, plan.lead, plan.Hp, plan.Wp)

    # ------------------------------------------------------------------ the layer
    def forward(self, x):
        """y = conv(x, W) + b, of shape (N, Ho, Wo, C_out): a strided view of the output grid for
        the flat methods (the next layer reads it without a copy)."""
        plan = self._plan(x)
        W = self.params["W"]
        x, dx_dtype = _cast_in(x, W.dtype)  # computed in the parameters' dtype (layers' module notes)
        op = self._prepare(x, plan)
        self._cache = (op, plan, dx_dtype)
        return self._apply(op, W, plan, self.params.get("b"))

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        op, plan, dx_dtype = self._cache
        xp = get_xp(dy)
        W = self.params["W"]
        dy = _cast(dy, W.dtype)
        KH, KW, cg, Co = W.shape
        C = self.in_channels
        Gfull = self._output_grid(dy, plan)
        if "b" in self.params:
            self._store_grad("b", sum_rows(dy))
        dW = xp.empty_like(W)
        if plan.method == "taps":
            G = Gfull[plan.lead:]
            for ci, co in self._groups():
                self._reduced_products([m[:, co] for m in self._taps(dW)], plan.R, op[:, ci], plan.shifts, G[:, co])
        else:
            G = Gfull[plan.lead:] if plan.method == "flat_im2col" else Gfull
            rows = plan.R if plan.method == "flat_im2col" else G.shape[0]
            for ci, co in self._groups():
                dWg = xp.empty((KH * KW * cg, Co // self.groups), W.dtype)
                self._reduced_products([dWg], rows, self._cols_group(op, ci, C), [0], G[:, co])
                dW[..., co] = dWg.reshape(KH, KW, cg, -1)
        self._store_grad("W", dW)
        if not need_input_grad:
            return None
        return _cast(self._input_grad(Gfull, W, plan), dx_dtype)

    def _input_grad(self, Gfull, W, plan):
        """dx from the output-gradient operand (the transposed convolution); possibly a strided view."""
        xp = get_xp(Gfull, W)
        KH, KW, cg, Co = W.shape
        C = self.in_channels
        T = KH * KW
        if plan.method == "taps" or (plan.method == "flat_im2col" and _reduce.on_device(Gfull)):
            # dX[q] = sum_t G[q + base - s_t] W[t]^T for the rows q < D of the input grid: blocks
            # of dX are written once each (reading G at offsets lead + base - s_t >= 0)
            dX = xp.empty((plan.N * plan.Hp * plan.Wp, C), dtype=W.dtype)
            offsets = [plan.lead + plan.base - s for s in plan.shifts]
            for ci, co in self._groups():
                self._row_products(dX[:, ci], plan.D, Gfull[:, co], [m[:, co].T for m in self._taps(W)], offsets, 0)
            return dX.reshape(plan.N, plan.Hp, plan.Wp, C)[:, :plan.H, :plan.W]
        if plan.method == "flat_im2col":
            R = plan.R
            G = Gfull[plan.lead:]
            dB = xp.zeros((plan.length, C), dtype=W.dtype)
            for ci, co in self._groups():
                dcols = xp.empty((R, T * cg), W.dtype)
                self._row_products(dcols, R, G[:, co], [self._weight_group(W, co).T], [0], 0)
                for t, s in enumerate(plan.shifts):
                    dB[s:s + R, ci] += dcols[:, t * cg:(t + 1) * cg]
            return dB[plan.base:].reshape(plan.N, plan.Hp, plan.Wp, C)[:, :plan.H, :plan.W]
        pt, pb, pl, pr = self.padding
        dxpad = xp.zeros((plan.N, plan.H + pt + pb, plan.W + pl + pr, C), dtype=W.dtype)
        for ci, co in self._groups():
            dcols = xp.empty((Gfull.shape[0], T * cg), W.dtype)
            self._row_products(dcols, Gfull.shape[0], Gfull[:, co], [self._weight_group(W, co).T], [0], 0)
            dcols = dcols.reshape(plan.N, plan.Ho, plan.Wo, T, cg)
            for i in range(KH):
                for j in range(KW):
                    self._windows(dxpad, plan, i, j)[..., ci] += dcols[:, :, :, i * KW + j]
        return dxpad[:, pt:pt + plan.H, pl:pl + plan.W]

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        op, plan, _ = self._cache
        W = self.params["W"]
        ty = None
        if tx is not None:  # of x's shape (Layer checks it)
            ty = self._apply(self._prepare(_cast(tx, W.dtype), plan), W, plan)
        tparams = _cast_tangents(tparams, W.dtype)
        tW, tb = _get(tparams, "W"), _get(tparams, "b")
        if tW is not None:
            ty = _add(ty, self._apply(op, tW, plan))
        if tb is not None and "b" in self.params:
            ty = _add(ty, tb)
        if ty is not None:
            ty = get_xp(ty).ascontiguousarray(ty)
        return y, ty

    def extra_repr(self):
        KH, KW = self.kernel_size
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=({KH}, {KW}), stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={'b' in self.params}, method={self.method!r}")


def conv2d(x, W, b=None, *, stride=1, padding=0, dilation=1, groups=1, method="auto"):
    """Functional 2-D cross-correlation of channels-last x by W (shapes as in :class:`Conv2d`).

    Parameters
    ----------
    x : array of shape (N, H, W, C_in)
    W : array of shape (KH, KW, C_in / groups, C_out)
    b : array of shape (C_out,) or None
    stride, padding, dilation, groups, method
        As for :class:`Conv2d`.

    Returns
    -------
    y : array of shape (N, H_o, W_o, C_out), in W's dtype
    """
    xp = get_xp(x, W, b)
    W = xp.asarray(W)
    if W.ndim != 4 or W.dtype not in (np.float32, np.float64):
        raise ValueError(f"W must be a float32 or float64 kernel of shape (KH, KW, C_in / groups, C_out), got "
                         f"shape {tuple(W.shape)} and dtype {W.dtype}")
    W = check_array(W, "W")  # NaN or infinite weights
    x = check_array(x, "x")  # a list, complex or NaN images (the shape is checked by the layer)
    KH, KW, cg, Co = W.shape
    if b is not None:
        b = check_array(b, "b")
        if b.shape != (Co,):
            raise ValueError(f"b must have shape (C_out,) = ({Co},) for W of shape {tuple(W.shape)}, got shape "
                             f"{tuple(b.shape)}")
    layer = Conv2d(cg * groups, Co, (KH, KW), stride=stride, padding=padding, dilation=dilation, groups=groups,
                   bias=b is not None, init="zeros", dtype=W.dtype, method=method)
    layer.params["W"] = W
    if b is not None:
        layer.params["b"] = b
    return layer.forward(x)
