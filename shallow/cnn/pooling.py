r"""Pooling of channels-last batches: max, average, and global average.

Each window of a pooling layer is read as KH KW strided views ("taps") of the padded input, one
per position (i, j) in the window, as in :mod:`shallow.cnn.conv`:

    y[n, p, q, c] = op_{i < KH, j < KW} xpad[n, s p + i, s q + j, c].

The output has H_o = floor((H + 2 ph - KH) / s) + 1 rows (W_o alike); the stride defaults to the
kernel size (non-overlapping windows). This is PyTorch's default ``ceil_mode=False``; ``ceil_mode``
and a pooling dilation are not offered. Average pooling counts the padded zeros in its divisor, as
PyTorch's default ``count_include_pad=True``.

Ties in max pooling
-------------------
Where several entries of a window share the maximum, the first in the window's row-major order
(smallest i, then smallest j) is the argmax: it alone receives the gradient in ``backward`` and
carries the tangent in ``jvp`` (PyTorch picks the same entry). The entries are those of x: the
padding (-inf) is never the argmax, even in a window whose entries are all -inf. The max is not
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

from .._validation import check_integer
from ..backend import get_xp
from .conv import _output_size, _pair
from .layers import Layer, _missing_cache, check_batch

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"]


class _Pool2d(Layer):
    """Shared geometry of the window poolings."""

    _pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {self.kernel_size} and {self.stride}")
        for k, p in zip(self.kernel_size, self.padding):
            check_integer(p, "padding", minimum=0, maximum=k // 2)

    def _geometry(self, x, name="x"):
        check_batch(x, name)
        N, H, W, C = x.shape
        (KH, KW), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        Ho = _output_size(H, KH, sh, (ph, ph), 1)
        Wo = _output_size(W, KW, sw, (pw, pw), 1)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{name} of size {H}x{W} is smaller than the pooling window {self.kernel_size}")
        return Ho, Wo

    @staticmethod
    def _real(x):
        """Integer and boolean images as float64 (the -inf padding and the mean need floats), as the
        convolution and the global pooling give them; other dtypes are left to check_batch."""
        kind = getattr(getattr(x, "dtype", None), "kind", None)
        return x.astype(get_xp(x).float64) if kind in ("i", "u", "b") else x

    def _padded(self, x, value=None):
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return x
        xp = get_xp(x)
        N, H, W, C = x.shape
        value = self._pad_value if value is None else value
        xpad = xp.full((N, H + 2 * ph, W + 2 * pw, C), value, dtype=x.dtype)
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
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max pooling: y = max of each KH x KW window (padding with -inf).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel size.

    Notes
    -----
    With a* the first argmax of the window (module notes on ties), backward sends dy to x at a*
    (summed over the windows that chose it) and forward mode gives ty = tx at a*.
    """

    _pad_value = -np.inf

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        x = self._real(x)
        xp = get_xp(x)
        xpad = self._padded(x)
        y = None
        for _, v in self._taps(xpad, Ho, Wo):
            if y is None:
                y = xp.array(v)
            else:
                xp.maximum(y, v, out=y)
        self._cache = (x.shape, self._argmax(xpad, y, Ho, Wo), Ho, Wo)
        return y

    def _argmax(self, xpad, y, Ho, Wo):
        """The tap of each window's first maximum, shape (N, Ho, Wo, C); T (no tap) where the
        window holds no maximum (a NaN). Formed in the forward pass while the input is in cache:
        the backward pass reads this array (one byte per output for T < 256) instead of the input."""
        xp = get_xp(y)
        T = self.kernel_size[0] * self.kernel_size[1]
        first = xp.zeros(y.shape, dtype=xp.uint8 if T < 256 else xp.int32)
        rest = None  # windows whose maximum is not among the taps seen so far
        for t, v in self._taps(xpad, Ho, Wo):
            equal = v == y
            self._off_input(equal, t, xpad.shape)
            rest = ~equal if rest is None else xp.greater(rest, equal, out=rest)  # rest and not equal
            first += rest  # first = the number of taps before the first maximum
        return first

    def _off_input(self, equal, t, padded):
        """Set ``equal`` (N, Ho, Wo, C) to False in the windows where tap t reads the padding.

        A padded -inf is no entry of x: a window of x's entries all -inf ties with it, and its
        gradient went to the padding (lost) instead of to the first entry of x. The output rows
        p whose tap row s p + i is in the input, ph <= s p + i < ph + H, are those of
        ceil((ph - i) / s) <= p < ceil((ph + H - i) / s) (columns alike): a few border rows and
        columns are written, and nothing without padding.
        """
        (sh, sw), (ph, pw) = self.stride, self.padding
        if ph == 0 and pw == 0:
            return
        i, j = divmod(t, self.kernel_size[1])
        H, W = padded[1] - 2 * ph, padded[2] - 2 * pw
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
        ph, pw = self.padding
        padded = (shape[0], shape[1] + 2 * ph, shape[2] + 2 * pw, shape[3])
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
        tviews = dict(self._taps(self._padded(tx, 0.0), Ho, Wo))  # tangents pad with 0
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

    Notes
    -----
    Linear in x: backward adds dy / (KH KW) to every entry of each window, forward mode is the
    same average of tx.
    """

    def _average(self, x):
        Ho, Wo = self._geometry(x)
        x = self._real(x)
        xp = get_xp(x)
        y = None
        for _, v in self._taps(self._padded(x), Ho, Wo):
            y = xp.array(v) if y is None else y.__iadd__(v)
        y *= 1.0 / (self.kernel_size[0] * self.kernel_size[1])
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
        ph, pw = self.padding
        xp = get_xp(dy)
        dxpad = xp.zeros((shape[0], shape[1] + 2 * ph, shape[2] + 2 * pw, shape[3]), dtype=dy.dtype)
        g = dy * (1.0 / (self.kernel_size[0] * self.kernel_size[1]))
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
