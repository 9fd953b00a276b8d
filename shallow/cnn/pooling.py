r"""Pooling of channels-last batches: max, average, and global average.

Each window of a pooling layer is read as KH KW strided views ("taps") of the padded input, one
per position (i, j) in the window, as in :mod:`shallow.cnn.conv`:

    y[n, p, q, c] = op_{i < KH, j < KW} xpad[n, s p + i, s q + j, c].

The output has H_o = floor((H + 2 ph - KH) / s) + 1 rows (W_o alike); the stride defaults to the
kernel size (non-overlapping windows). This is PyTorch's default ``ceil_mode=False``. With
``ceil_mode=True`` the size is rounded up, as PyTorch's:

    H_o = ceil((H + 2 ph - KH) / s) + 1,   less one when (H_o - 1) s >= H + ph,

so that the last window starts inside the input or its top (left) padding; it may end past the
bottom (right) padding, whose missing rows (columns) are no entries of the window. A pooling
dilation is not offered. Average pooling counts the padded zeros in its divisor, as PyTorch's
default ``count_include_pad=True``: the divisor of a window is its number of entries in the
padded input, KH KW unless a ``ceil_mode`` window ends past it (PyTorch's rule).

Ties in max pooling
-------------------
Where several entries of a window share the maximum, the first in the window's row-major order
(smallest i, then smallest j) is the argmax: it alone receives the gradient in ``backward`` and
carries the tangent in ``jvp`` (PyTorch picks the same entry). The entries are those of x: the
padding (-inf), and the part of a ``ceil_mode`` window past the padded input, are never the argmax,
even in a window whose entries are all -inf (every window holds an entry of x). The max is not
differentiable there; this choice is the derivative along every direction that keeps the chosen
entry the largest, and backward and jvp are exact adjoints of each other, ties or not.

References
----------
1. V. Dumoulin and F. Visin, "A guide to convolution arithmetic for deep learning",
   arXiv:1603.07285, Sec. 3 (pooling arithmetic).
2. M. Lin, Q. Chen and S. Yan, "Network in network", arXiv:1312.4400, Sec. 3.2 (global average pooling).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_bool, check_integer
from ..backend import get_xp
from .conv import _output_size, _pair
from .layers import Layer, _missing_cache, check_batch

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"]


def _ceil_output_size(size, kernel, stride, padding) -> int:
    """PyTorch's output size with ``ceil_mode=True``: ceil((size + 2 p - kernel) / stride) + 1, less one
    when the last window would start past the input and its first padding ((out - 1) stride >= size + p)."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    return out - 1 if (out - 1) * stride >= size + padding else out


class _Pool2d(Layer):
    """Shared geometry of the window poolings."""

    _pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {self.kernel_size} and {self.stride}")
        for k, p in zip(self.kernel_size, self.padding):
            check_integer(p, "padding", minimum=0, maximum=k // 2)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode")

    def _geometry(self, x, name="x"):
        check_batch(x, name)
        N, H, W, C = x.shape
        (KH, KW), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if self.ceil_mode:
            Ho, Wo = _ceil_output_size(H, KH, sh, ph), _ceil_output_size(W, KW, sw, pw)
        else:
            Ho = _output_size(H, KH, sh, (ph, ph), 1)
            Wo = _output_size(W, KW, sw, (pw, pw), 1)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{name} of size {H}x{W} is smaller than the pooling window {self.kernel_size}")
        return Ho, Wo

    def _padded_shape(self, shape, Ho, Wo):
        """The shape of the padded input that the windows read: (N, H + 2 ph, W + 2 pw, C), with more rows
        (columns) at the bottom (right) for the ``ceil_mode`` windows that end past the padding."""
        (KH, KW), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        N, H, W, C = shape
        return (N, max(H + 2 * ph, sh * (Ho - 1) + KH), max(W + 2 * pw, sw * (Wo - 1) + KW), C)

    @staticmethod
    def _real(x):
        """Integer and boolean images as float64 (the -inf padding and the mean need floats), as the
        convolution and the global pooling give them; other dtypes are left to check_batch."""
        kind = getattr(getattr(x, "dtype", None), "kind", None)
        return x.astype(get_xp(x).float64) if kind in ("i", "u", "b") else x

    def _padded(self, x, Ho, Wo, value=None):
        padded = self._padded_shape(x.shape, Ho, Wo)
        if padded == x.shape:
            return x
        ph, pw = self.padding
        xp = get_xp(x)
        N, H, W, C = x.shape
        value = self._pad_value if value is None else value
        xpad = xp.full(padded, value, dtype=x.dtype)
        xpad[:, ph:ph + H, pw:pw + W] = x
        return xpad

    def _taps(self, xpad, Ho, Wo):
        """The views (t, view of shape (N, Ho, Wo, C)) of the window positions, in row-major order."""
        (KH, KW), (sh, sw) = self.kernel_size, self.stride
        for i in range(KH):
            for j in range(KW):
                yield i * KW + j, xpad[:, i: i + sh * (Ho - 1) + 1: sh, j: j + sw * (Wo - 1) + 1: sw]

    def _unpad(self, dxpad, shape):
        ph, pw = self.padding
        return dxpad[:, ph:ph + shape[1], pw:pw + shape[2]]

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return text + (", ceil_mode=True" if self.ceil_mode else "")


class MaxPool2d(_Pool2d):
    """Max pooling: y = max of each KH x KW window (padding with -inf).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel size.
    ceil_mode : bool
        Round the output size up, as PyTorch's ``ceil_mode=True`` (module notes); default False.

    Notes
    -----
    With a* the first argmax of the window (module notes on ties), backward sends dy to x at a*
    (summed over the windows that chose it) and forward mode gives ty = tx at a*.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5.0).reshape(1, 1, 5, 1)
    >>> MaxPool2d((1, 2)).forward(x)[0, 0, :, 0], MaxPool2d((1, 2), ceil_mode=True).forward(x)[0, 0, :, 0]
    (array([1., 3.]), array([1., 3., 4.]))
    """

    _pad_value = -np.inf

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        x = self._real(x)
        xp = get_xp(x)
        xpad = self._padded(x, Ho, Wo)
        y = None
        for _, v in self._taps(xpad, Ho, Wo):
            if y is None:
                y = xp.array(v)
            else:
                xp.maximum(y, v, out=y)
        self._cache = (x.shape, self._argmax(xpad, y, x.shape, Ho, Wo), Ho, Wo)
        return y

    def _argmax(self, xpad, y, shape, Ho, Wo):
        """The tap of each window's first maximum, shape (N, Ho, Wo, C); T (no tap) where the
        window holds no maximum (a NaN). Formed in the forward pass while the input is in cache:
        the backward pass reads this array (one byte per output for T < 256) instead of the input."""
        xp = get_xp(y)
        T = self.kernel_size[0] * self.kernel_size[1]
        first = xp.zeros(y.shape, dtype=xp.uint8 if T < 256 else xp.int32)
        rest = None  # windows whose maximum is not among the taps seen so far
        for t, v in self._taps(xpad, Ho, Wo):
            equal = v == y
            self._off_input(equal, t, shape, xpad.shape)
            rest = ~equal if rest is None else xp.greater(rest, equal, out=rest)  # rest and not equal
            first += rest  # first = the number of taps before the first maximum
        return first

    def _off_input(self, equal, t, shape, padded):
        """Set ``equal`` (N, Ho, Wo, C) to False in the windows where tap t reads the padding.

        A padded -inf is no entry of x (of shape ``shape``; ``padded`` that of the padded input): a
        window of x's entries all -inf ties with it, and its gradient went to the padding (lost)
        instead of to the first entry of x. The output rows p whose tap row s p + i is in the input,
        ph <= s p + i < ph + H, are those of ceil((ph - i) / s) <= p < ceil((ph + H - i) / s)
        (columns alike): a few border rows and columns are written, and nothing without padding.
        """
        if tuple(padded) == tuple(shape):
            return
        (sh, sw), (ph, pw) = self.stride, self.padding
        i, j = divmod(t, self.kernel_size[1])
        H, W = shape[1], shape[2]
        equal[:, :max(-((i - ph) // sh), 0)] = False
        equal[:, max(-((i - ph - H) // sh), 0):] = False
        equal[:, :, :max(-((j - pw) // sw), 0)] = False
        equal[:, :, max(-((j - pw - W) // sw), 0):] = False

    def _first_maxima(self, first):
        """(tap, mask) pairs: the mask marks the windows whose first maximum is at that tap."""
        T = self.kernel_size[0] * self.kernel_size[1]
        for t in range(T):
            yield t, first == t

    def _tiles(self, padded):
        """Whether the windows tile the padded input, of shape ``padded``, exactly (no overlap, nothing left over)."""
        (KH, KW), (sh, sw) = self.kernel_size, self.stride
        return (KH, KW) == (sh, sw) and padded[1] % KH == 0 and padded[2] % KW == 0

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        if not need_input_grad:
            return None
        shape, first, Ho, Wo = self._cache
        xp = get_xp(dy)
        padded = self._padded_shape(shape, Ho, Wo)
        tiles = self._tiles(padded)
        dxpad = (xp.empty if tiles else xp.zeros)(padded, dtype=dy.dtype)
        dxviews = dict(self._taps(dxpad, Ho, Wo))
        for t, hit in self._first_maxima(first):
            if tiles:
                xp.multiply(dy, hit, out=dxviews[t])
            else:
                dxviews[t] += dy * hit
        return self._unpad(dxpad, shape)

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        if tx is None:
            return y, None
        _, first, Ho, Wo = self._cache
        xp = get_xp(tx)
        ty = xp.zeros(y.shape, dtype=tx.dtype)
        tviews = dict(self._taps(self._padded(tx, Ho, Wo, 0.0), Ho, Wo))  # tangents pad with 0
        for t, hit in self._first_maxima(first):
            ty += tviews[t] * hit
        return y, ty


class AvgPool2d(_Pool2d):
    """Average pooling: y = mean of each KH x KW window (zero padding counted in the mean).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel size; padded zeros count in the divisor KH KW.
    ceil_mode : bool
        Round the output size up, as PyTorch's ``ceil_mode=True`` (module notes); default False.
        A window that ends past the padded input divides by its entries in it (PyTorch's divisor
        with ``count_include_pad=True``), fewer than KH KW.

    Notes
    -----
    Linear in x: y[p, q] = (1 / D_pq) sum of the window's entries, with D_pq = KH KW, or with
    ``ceil_mode`` D_pq = (min(s_h p + KH, H + 2 ph) - s_h p) (min(s_w q + KW, W + 2 pw) - s_w q). Backward adds
    dy / D_pq to every entry of each window, forward mode is the same average of tx.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5.0).reshape(1, 1, 5, 1)
    >>> AvgPool2d((1, 2)).forward(x)[0, 0, :, 0], AvgPool2d((1, 2), ceil_mode=True).forward(x)[0, 0, :, 0]
    (array([0.5, 2.5]), array([0.5, 2.5, 4. ]))
    """

    def _reciprocal(self, shape, Ho, Wo, like):
        """1 / D_pq: the float 1 / (KH KW) when every window lies in the padded input (always without
        ``ceil_mode``), else an array of shape (Ho, Wo, 1) in the dtype and on the device of ``like``."""
        (KH, KW), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        Hp, Wp = shape[1] + 2 * ph, shape[2] + 2 * pw
        if sh * (Ho - 1) + KH <= Hp and sw * (Wo - 1) + KW <= Wp:
            return 1.0 / (KH * KW)
        p, q = sh * np.arange(Ho), sw * np.arange(Wo)
        D = np.outer(np.minimum(p + KH, Hp) - p, np.minimum(q + KW, Wp) - q)  # (Ho, Wo), each >= 1
        return get_xp(like).asarray((1.0 / D)[:, :, None], dtype=like.dtype)

    def _smallest_divisor(self, shape) -> int:
        """min_pq D_pq, the fewest entries that a window averages, on images of shape (H, W, C): KH KW
        without ``ceil_mode`` (or when the windows fit the padded input). The l2 operator norm is at
        most sqrt(ceil(KH / s_h) ceil(KW / s_w) / min D_pq) (Schur's test: an output's weights sum to
        at most 1, an input's to at most the number of windows holding it over min D_pq)."""
        H, W = shape[0], shape[1]
        (KH, KW), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        Ho, Wo = self._geometry(np.zeros((1, H, W, 1)), "shape")
        return (min(KH, H + 2 * ph - sh * (Ho - 1))) * (min(KW, W + 2 * pw - sw * (Wo - 1)))

    def _average(self, x):
        Ho, Wo = self._geometry(x)
        x = self._real(x)
        xp = get_xp(x)
        y = None
        for _, v in self._taps(self._padded(x, Ho, Wo), Ho, Wo):
            y = xp.array(v) if y is None else y.__iadd__(v)
        y *= self._reciprocal(x.shape, Ho, Wo, y)
        return y, Ho, Wo

    def forward(self, x):
        y, Ho, Wo = self._average(x)
        self._cache = (x.shape, Ho, Wo)
        return y

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        if not need_input_grad:
            return None
        shape, Ho, Wo = self._cache
        xp = get_xp(dy)
        dxpad = xp.zeros(self._padded_shape(shape, Ho, Wo), dtype=dy.dtype)
        g = dy * self._reciprocal(shape, Ho, Wo, dy)
        for _, v in self._taps(dxpad, Ho, Wo):
            v += g
        return self._unpad(dxpad, shape)

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        return y, (None if tx is None else self._average(tx)[0])


class GlobalAvgPool2d(Layer):
    """Global average pooling (N, H, W, C) -> (N, C): y[n, c] = (1 / HW) sum_{p, q} x[n, p, q, c].

    Notes
    -----
    backward dx[n, p, q, c] = dy[n, c] / (HW); forward mode ty = the mean of tx.
    """

    def forward(self, x):
        check_batch(x)
        self._cache = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        if not need_input_grad:
            return None
        N, H, W, C = self._cache
        xp = get_xp(dy)
        return xp.broadcast_to((dy * (1.0 / (H * W)))[:, None, None, :], self._cache).copy()

    def jvp(self, x, tx=None, tparams=None):
        return self.forward(x), (None if tx is None else tx.mean(axis=(1, 2)))
