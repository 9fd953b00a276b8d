r"""Invertible networks: the i-RevNet of Jacobsen, Smeulders and Oyallon, with exact inverses.

An i-RevNet maps an image x to a representation Phi(x) through a cascade of maps that are each
invertible with an explicit inverse, so that no information about x is lost before the final
projection onto the classes; the classifier is global average pooling and a linear layer on
Phi(x) (ref. 1, Sec. 3).

Layers (all channels-last, NHWC; each has ``forward``, ``backward``, ``jvp`` and ``inverse``)
------------------------------------------------------------------------------------------------
:class:`SpaceToDepth` (the invertible downsampling S of ref. 1)
    Each b x b block of pixels becomes b^2 channels,

        (S x)[n, i, j, (p b + q) C + c] = x[n, b i + p, b j + q, c],    0 <= p, q < b,

    a permutation of the entries: S^T = S^{-1}, so backward is the inverse applied to dy.
:class:`InjectivePad` (the injective channel padding of ref. 1, Sec. 3.1)
    Zero channels appended to each half of the channels, x = (x_1, x_2) -> (x_1, 0, x_2, 0): an
    isometric embedding P (P^T P = I) whose left inverse, the projection P^T = P^+ (the
    Moore-Penrose pseudo-inverse), is exact on its range and the least-squares inverse off it.
    Padding each half (rather than the end) keeps input information in both halves, so that the
    first coupling block already mixes them.
:class:`RevBlock` (the additive coupling of RevNets, ref. 2, in the form of ref. 1, Eq. 1)
    With the channels split into halves x = (x_1, x_2) (first C/2 and last C/2 channels),

        y = (y_1, y_2) = (S x_2, S x_1 + F(x_2)),
        inverse:  x_2 = S^{-1} y_1,   x_1 = S^{-1} (y_2 - F(x_2)),

    S the identity (stride 1, C channels out) or the 2 x 2 space-to-depth (stride 2, 4C channels
    out at half the resolution, F then has stride 2 and 2C outputs). F is any Layer, by default a
    small bottleneck conv3x3 - BN - relu - conv3x3 - BN (:func:`bottleneck`); it never needs
    inverting. Derivatives:

        backward:  dx_1 = S^T dy_2,   dx_2 = S^T dy_1 + J_F^T dy_2,   dtheta = (dF/dtheta)^T dy_2,
        jvp:       ty_1 = S tx_2,     ty_2 = S tx_1 + J_F tx_2 + (dF/dtheta) ttheta.

:class:`InvertibleSequential`
    A composition of invertible layers, with ``inverse``, ``features(x, k)`` (the output of the
    first k layers) and ``reconstruct(z, k)`` (their inverse).
:class:`IRevNet`
    An invertible body and a (non-invertible) classification head; :func:`irevnet_small` builds one
    for small images (digits, MNIST).

Memory
------
By default backward uses the caches of the forward pass (F keeps its activations), as every other
layer of :mod:`shallow.cnn` does: the memory of a training step grows with the depth. With
``InvertibleSequential(..., recompute=True)`` (``irevnet_small(..., recompute=True)``) the body keeps
no caches: its forward pass (or jvp) drops each layer's caches as soon as the layer has run and
keeps only its output, and its backward pass walks back through the layers, recovering each layer's
input from its output with the inverse and recomputing the layer's caches on the way (ref. 2,
Sec. 3, Algorithm 1). For a RevBlock one evaluation of F does both, since the inverse
evaluates F(x_2) on the exact x_2 = S^{-1} y_1: a training step then costs one more evaluation of
every F and holds the caches of one layer at a time, whatever the depth. The gradients are those of
the cached backward pass up to rounding (the recovered x_1 = S^{-1}(y_2 - F(x_2)) carries the
rounding of the sum y_2 = S x_1 + F(x_2)). The recomputation replays the forward pass exactly as it
ran: batch-norm running statistics are updated once per step, by the forward pass; each layer
recomputes in the train or eval mode it ran in; dropout draws the same masks again (the generators'
states are saved before each layer and restored, and left after the step as the forward pass left
them).

Batch normalisation in F
------------------------
F is evaluated, never inverted, so batch normalisation inside F is allowed. In eval mode F is a
fixed map and ``inverse`` is exact for any y. In train mode F normalises with the statistics of
its batch: ``inverse`` recomputes F(x_2) on the batch x_2 = S^{-1} y_1, which is the forward
pass's batch when the same batch is inverted, so inverse(forward(x)) = x holds there too (up to
rounding); on another batch the statistics differ and it does not. ``inverse`` leaves the layers'
state as it found it: batch-norm running statistics are not updated, and the caches of the last
forward pass are kept, so a backward pass may follow. F must be deterministic (no dropout in
train mode): the inverse recomputes it, and refuses an F with random generators in train mode.
(A recomputing backward, ``InvertibleSequential(recompute=True)``, replays the generators' states
and so takes dropout in F.)

References
----------
1. J.-H. Jacobsen, A. Smeulders and E. Oyallon, "i-RevNet: deep invertible networks", ICLR 2018,
   arXiv:1802.07088, Sec. 3.1 (Eq. 1, the block and its inverse; invertible downsampling;
   injective padding), Sec. 4 (reconstruction from the representation; progressive contraction
   and linear separation).
2. A. N. Gomez, M. Ren, R. Urtasun and R. B. Grosse, "The reversible residual network:
   backpropagation without storing activations", NeurIPS 2017, arXiv:1707.04585, Sec. 3
   (additive coupling, recomputing activations in the backward pass).
3. W. Shi et al., "Real-time single image and video super-resolution using an efficient sub-pixel
   convolutional neural network", CVPR 2016, arXiv:1609.05158 (the pixel shuffle, whose inverse is
   the space-to-depth map S).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_array, check_bool, check_integer, check_random_state
from ..backend import get_xp
from .conv import Conv2d
from .layers import (
    Activation,
    Layer,
    Linear,
    Sequential,
    _add,
    _cast,
    _input_grad_dtype,
    _missing_cache,
    _rng_states,
    _set_rng_states,
    _sub,
    check_batch,
    check_dtype,
    check_layer,
)
from .models import _check_shape, _check_shape3, _check_tangent_names, check_images
from .norm import BatchNorm2d
from .pooling import GlobalAvgPool2d

__all__ = [
    "InvertibleLayer",
    "SpaceToDepth",
    "InjectivePad",
    "RevBlock",
    "bottleneck",
    "InvertibleSequential",
    "IRevNet",
    "irevnet_small",
]


class InvertibleLayer(Layer):
    """A layer with an explicit inverse: ``inverse(forward(x)) = x``.

    Subclasses implement :meth:`inverse` and :meth:`output_shape`.
    """

    def inverse(self, y):
        """x with forward(x) = y."""
        raise NotImplementedError

    def output_shape(self, shape):
        """The (H, W, C) of the output for inputs of shape (H, W, C) (ValueError if not accepted)."""
        raise NotImplementedError

    def _recover(self, y):
        """The input x = inverse(y), with the caches of forward(x) in place for a backward pass; the
        buffers (batch-norm running statistics) are left as they were, and forward(x) draws the
        random numbers that the generators' current states give (the inverse's draws are undone)."""
        states = _rng_states(self)
        x = self.inverse(y)
        _set_rng_states(states)
        with _PreservedState(self, caches=False):
            self.forward(x)
        return x


# ----------------------------------------------------------------------------- space-to-depth
def _space_to_depth(x, b):
    N, H, W, C = x.shape
    y = x.reshape(N, H // b, b, W // b, b, C).transpose(0, 1, 3, 2, 4, 5)
    return get_xp(x).ascontiguousarray(y).reshape(N, H // b, W // b, b * b * C)


def _depth_to_space(y, b):
    N, Hb, Wb, D = y.shape
    C = D // (b * b)
    x = y.reshape(N, Hb, Wb, b, b, C).transpose(0, 1, 3, 2, 4, 5)
    return get_xp(y).ascontiguousarray(x).reshape(N, Hb * b, Wb * b, C)


class SpaceToDepth(InvertibleLayer):
    r"""Invertible downsampling: b x b blocks of pixels become b^2 channels, (N, H, W, C) -> (N, H/b, W/b, b^2 C).

    Parameters
    ----------
    block : int
        b >= 1 (2 in ref. 1).

    Notes
    -----
    (S x)[n, i, j, (p b + q) C + c] = x[n, b i + p, b j + q, c] for 0 <= p, q < b: a permutation
    of the entries, hence linear and orthogonal, S^T = S^{-1}. backward dx = S^{-1} dy; forward
    mode ty = S tx. Ref. 1 of the module, Sec. 3.1.

    Examples
    --------
    >>> import numpy as np
    >>> s = SpaceToDepth(2)
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> s(x)[0, 0, 0]
    array([0., 1., 4., 5.])
    >>> bool((s.inverse(s(x)) == x).all())
    True
    """

    def __init__(self, block=2):
        super().__init__()
        self.block = check_integer(block, "block", minimum=1)

    def output_shape(self, shape):
        return self._output_shape(_check_shape3(shape))

    def _output_shape(self, shape):
        H, W, C = shape
        b = self.block
        if H % b or W % b:
            raise ValueError(f"SpaceToDepth({b}) needs a height and width divisible by {b}, got images of shape "
                             f"{tuple(shape)}")
        return (H // b, W // b, b * b * C)

    def _check_in(self, x, name):
        check_batch(x, name)
        self._output_shape(x.shape[1:])

    def _check_out(self, y, name):
        check_batch(y, name)
        if y.shape[3] % (self.block**2):
            raise ValueError(f"{name} has {y.shape[3]} channels, which SpaceToDepth({self.block}).inverse cannot "
                             f"split into {self.block}x{self.block} blocks (a multiple of {self.block ** 2} "
                             f"was expected)")

    def forward(self, x):
        self._check_in(x, "x")
        self._cache = True
        return _space_to_depth(x, self.block)

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        if not need_input_grad:
            return None
        return _depth_to_space(dy, self.block)

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        return y, (None if tx is None else _space_to_depth(tx, self.block))

    def inverse(self, y):
        self._check_out(y, "y")
        return _depth_to_space(y, self.block)

    def extra_repr(self):
        return f"{self.block}"


# ----------------------------------------------------------------------------- injective padding
class InjectivePad(InvertibleLayer):
    r"""Zero channels appended to each half: (x_1, x_2) -> (x_1, 0, x_2, 0), C_in -> C_out channels.

    Parameters
    ----------
    in_channels, out_channels : int
        Even, with out_channels >= in_channels; each half grows from C_in / 2 to C_out / 2.

    Notes
    -----
    The map P is an isometric embedding (P^T P = I): backward dx = P^T dy (drop the padded
    channels), forward mode ty = P tx. ``inverse`` is P^T, the Moore-Penrose pseudo-inverse P^+:
    exact on the range of P, the orthogonal projection onto it (then the dropping) elsewhere.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.in_channels = check_integer(in_channels, "in_channels", minimum=2)
        self.out_channels = check_integer(out_channels, "out_channels", minimum=2)
        if self.in_channels % 2 or self.out_channels % 2:
            raise ValueError(f"in_channels and out_channels must be even (the channels are split into two "
                             f"halves), got {self.in_channels} and {self.out_channels}")
        if self.out_channels < self.in_channels:
            raise ValueError(f"out_channels must be >= in_channels for an injective padding, got "
                             f"{self.out_channels} < {self.in_channels}")

    def output_shape(self, shape):
        H, W, C = _check_shape3(shape)
        if C != self.in_channels:
            raise ValueError(f"InjectivePad expects {self.in_channels} channels, got images of shape {tuple(shape)}")
        return (H, W, self.out_channels)

    def _check(self, x, name, channels):
        check_batch(x, name)
        if x.shape[3] != channels:
            raise ValueError(f"{name} has {x.shape[3]} channels (shape {tuple(x.shape)}, channels last) but "
                             f"InjectivePad({self.in_channels}, {self.out_channels}) expects {channels}")

    def _pad(self, x):
        xp = get_xp(x)
        h, g = self.in_channels // 2, self.out_channels // 2
        y = xp.zeros(x.shape[:3] + (self.out_channels,), dtype=x.dtype)
        y[..., :h] = x[..., :h]
        y[..., g:g + h] = x[..., h:]
        return y

    def _drop(self, y):
        xp = get_xp(y)
        h, g = self.in_channels // 2, self.out_channels // 2
        return xp.concatenate([y[..., :h], y[..., g:g + h]], axis=-1)

    def forward(self, x):
        self._check(x, "x", self.in_channels)
        self._cache = True
        return self._pad(x)

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        return self._drop(dy) if need_input_grad else None

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        return y, (None if tx is None else self._pad(tx))

    def inverse(self, y):
        self._check(y, "y", self.out_channels)
        return self._drop(y)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}"


# ----------------------------------------------------------------------------- the coupling block
def bottleneck(in_channels, out_channels, *, stride=1, hidden=None, batch_norm=True, activation="relu", rng=None,
               dtype=np.float64, method="auto") -> Sequential:
    """The residual function F of a :class:`RevBlock`: conv3x3 (stride s) - BN - sigma - conv3x3 - BN.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of x_2 (C / 2) and of F(x_2) (C / 2 at stride 1, 2C at stride 2).
    stride : {1, 2}
        Stride of the first convolution (padding 1: H -> H / stride for even H).
    hidden : int, optional
        Channels between the convolutions (default ``out_channels``).
    batch_norm : bool
        Batch normalisation after each convolution (then without bias).
    activation : str or Activation
    rng : None, int or Generator
    dtype : float32 or float64
    method : str
        Convolution method of the stride-1 convolution (:class:`~shallow.cnn.conv.Conv2d`).

    Returns
    -------
    Sequential
    """
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")
    batch_norm = check_bool(batch_norm, "batch_norm")
    hidden = out_channels if hidden is None else check_integer(hidden, "hidden", minimum=1)
    rng = check_random_state(rng)
    layers = [Conv2d(in_channels, hidden, 3, stride=stride, padding=1, bias=not batch_norm, rng=rng, dtype=dtype,
                     method=method if stride == 1 else "auto")]
    if batch_norm:
        layers.append(BatchNorm2d(hidden, dtype=dtype))
    layers.append(Activation(activation))
    layers.append(Conv2d(hidden, out_channels, 3, padding=1, bias=not batch_norm, rng=rng, dtype=dtype,
                         method=method))
    if batch_norm:
        layers.append(BatchNorm2d(out_channels, dtype=dtype))
    return Sequential(*layers)


class _PreservedState:
    """Context: restores the buffers (batch-norm running statistics) and, unless ``caches=False``, the
    caches of a layer tree on exit."""

    def __init__(self, layer, caches=True):
        self.layer, self.keep_caches = layer, caches

    def __enter__(self):
        self.buffers = {k: v.copy() for k, v in self.layer.named_buffers().items()}
        self.caches = ([(lay, lay._cache, lay._out_shape) for _, lay in self.layer.named_layers()]
                       if self.keep_caches else [])
        return self

    def __exit__(self, *exc):
        for k, v in self.layer.named_buffers().items():
            v[...] = self.buffers[k]
        for lay, cache, out_shape in self.caches:
            lay._cache, lay._out_shape = cache, out_shape
        return False


def _drop_caches(layer):
    """Release what the forward passes of a layer tree keep for backward."""
    for _, lay in layer.named_layers():
        lay._cache = None


def _modes(layer):
    """[(layer, training)] for every layer of a tree."""
    return [(lay, lay.training) for _, lay in layer.named_layers()]


def _set_modes(modes):
    for lay, training in modes:
        lay.training = training


class RevBlock(InvertibleLayer):
    r"""Additive coupling (x_1, x_2) -> (S x_2, S x_1 + F(x_2)), with its exact inverse.

    Parameters
    ----------
    channels : int
        C, even: the input has halves x_1, x_2 of C / 2 channels each.
    F : Layer, optional
        The residual function, mapping (N, H, W, C/2) to (N, H, W, C/2) at stride 1 and to
        (N, H/2, W/2, 2C) at stride 2. Default: :func:`bottleneck` with the arguments below.
    stride : {1, 2}
        1: S is the identity, C channels out. 2: S is the 2x2 :class:`SpaceToDepth`, 4C channels
        out at half the resolution.
    hidden, batch_norm, activation, rng, dtype, method
        Passed to :func:`bottleneck` when F is not given.

    Notes
    -----
    Module notes for the inverse, the derivatives and batch normalisation in F. Ref. 1 of the
    module, Eq. 1 (its x-tilde_j, x_j are our x_1, x_2).

    Examples
    --------
    >>> import numpy as np
    >>> block = RevBlock(4, stride=2, rng=0).eval()
    >>> x = np.random.default_rng(1).standard_normal((3, 4, 4, 4))
    >>> block(x).shape
    (3, 2, 2, 16)
    >>> bool(np.abs(block.inverse(block(x)) - x).max() < 1e-12)
    True
    """

    def __init__(self, channels, F=None, *, stride=1, hidden=None, batch_norm=True, activation="relu", rng=None,
                 dtype=np.float64, method="auto"):
        super().__init__()
        self.channels = check_integer(channels, "channels", minimum=2)
        if self.channels % 2:
            raise ValueError(f"channels must be even (the input is split into two halves), got {self.channels}")
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.stride = int(stride)
        half = self.channels // 2
        out = half if self.stride == 1 else 2 * self.channels
        if F is None:
            F = bottleneck(half, out, stride=self.stride, hidden=hidden, batch_norm=batch_norm, activation=activation,
                           rng=rng, dtype=check_dtype(dtype), method=method)
        self.F = check_layer(F, "F")
        self._S = SpaceToDepth(2) if self.stride == 2 else None

    def children(self):
        return [("F", self.F)]

    @property
    def out_channels(self) -> int:
        """Channels of the output: C at stride 1, 4C at stride 2 (at half the height and width)."""
        return self.channels if self.stride == 1 else 4 * self.channels

    def output_shape(self, shape):
        H, W, C = _check_shape3(shape)
        if C != self.channels:
            raise ValueError(f"RevBlock expects {self.channels} channels, got images of shape {tuple(shape)}")
        if self.stride == 2 and (H % 2 or W % 2):
            raise ValueError(f"a stride-2 RevBlock needs an even height and width, got images of shape {tuple(shape)}")
        return (H // self.stride, W // self.stride, self.out_channels)

    def _S_(self, x):
        return x if self._S is None else _space_to_depth(x, 2)

    def _Sinv(self, y):
        return y if self._S is None else _depth_to_space(y, 2)

    def _check(self, x, name, channels):
        check_batch(x, name)
        if x.shape[3] != channels:
            raise ValueError(f"{name} has {x.shape[3]} channels (shape {tuple(x.shape)}, channels last) but this "
                             f"RevBlock(channels={self.channels}, stride={self.stride}) expects {channels}")
        if self.stride == 2 and name == "x" and (x.shape[1] % 2 or x.shape[2] % 2):
            raise ValueError(f"a stride-2 RevBlock needs an even height and width, got x of shape {tuple(x.shape)}")

    def _f(self, x2, Sx1):
        f = self.F.forward(x2)
        if f.shape != Sx1.shape:
            raise ValueError(f"F maps x_2 of shape {tuple(x2.shape)} to {tuple(f.shape)}, but the coupling adds it "
                             f"to S x_1 of shape {tuple(Sx1.shape)}")
        return f

    def forward(self, x):
        self._check(x, "x", self.channels)
        xp = get_xp(x)
        h = self.channels // 2
        x1, x2 = x[..., :h], x[..., h:]
        Sx1 = self._S_(x1)
        f = self._f(x2, Sx1)
        self._cache = True
        return xp.concatenate([self._S_(x2), Sx1 + f], axis=-1)

    def _split_out(self, y):
        c = y.shape[3] // 2
        return y[..., :c], y[..., c:]

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        dy1, dy2 = self._split_out(dy)
        dy2 = get_xp(dy).ascontiguousarray(dy2)
        dF = self.F.backward(dy2, need_input_grad)
        if not need_input_grad:
            return None
        dx1 = self._Sinv(dy2)
        dx2 = self._Sinv(dy1) + dF
        return get_xp(dy).concatenate([dx1, dx2], axis=-1)

    def jvp(self, x, tx=None, tparams=None):
        self._check(x, "x", self.channels)
        xp = get_xp(x)
        h = self.channels // 2
        x1, x2 = x[..., :h], x[..., h:]
        tx2 = None if tx is None else tx[..., h:]
        f, tf = self.F.jvp(x2, tx2, _sub(tparams, "F."))
        Sx1 = self._S_(x1)
        if f.shape != Sx1.shape:
            raise ValueError(f"F maps x_2 of shape {tuple(x2.shape)} to {tuple(f.shape)}, but the coupling adds it "
                             f"to S x_1 of shape {tuple(Sx1.shape)}")
        self._cache = True
        y = xp.concatenate([self._S_(x2), Sx1 + f], axis=-1)
        if tx is None and tf is None:
            return y, None
        if tx is None:
            ty1 = xp.zeros(Sx1.shape, dtype=y.dtype)
            ty2 = tf
        else:
            ty1 = self._S_(tx2)
            ty2 = _add(self._S_(tx[..., :h]), tf)
        return y, xp.concatenate([ty1, ty2], axis=-1)

    def inverse(self, y):
        self._check(y, "y", self.out_channels)
        if self.F.training and self.F.named_rngs():  # new dropout masks would give another F(x_2)
            raise ValueError(f"F draws random numbers in train mode ({', '.join(sorted(self.F.named_rngs()))}: "
                             "dropout), so its inverse cannot recompute the forward pass's F(x_2): call eval() first")
        xp = get_xp(y)
        y1, y2 = self._split_out(y)
        x2 = self._Sinv(y1)
        with _PreservedState(self.F):
            f = self.F.forward(x2)
        if f.shape != y2.shape:
            raise ValueError(f"y of shape {tuple(y.shape)} is not an output of this block: F(x_2) has shape "
                             f"{tuple(f.shape)} but y_2 has {tuple(y2.shape)}")
        x1 = self._Sinv(y2 - f)
        return xp.concatenate([x1, x2], axis=-1)

    def _recover(self, y):
        # the inverse's F(x_2) is the forward pass's (x_2 = S^{-1} y_1 is exact): keep its caches
        y1, y2 = self._split_out(y)
        x2 = self._Sinv(y1)
        with _PreservedState(self.F, caches=False):
            f = self.F.forward(x2)
        self._cache = True
        return get_xp(y).concatenate([self._Sinv(y2 - f), x2], axis=-1)

    def extra_repr(self):
        return f"{self.channels}, stride={self.stride}"


# ----------------------------------------------------------------------------- compositions
class InvertibleSequential(Sequential):
    """A composition of invertible layers Phi = f_L o ... o f_1, with its inverse and its intermediate features.

    Parameters
    ----------
    *layers : InvertibleLayer
    recompute : bool, default False
        Keep no caches between the forward and the backward pass: backward recovers each layer's
        input with its inverse and recomputes the layer's caches (module notes, Memory). The
        attribute ``recompute`` may be changed between steps.

    Notes
    -----
    Phi^{-1} = f_1^{-1} o ... o f_L^{-1}. ``features(x, k)`` is Phi_k(x) = f_k o ... o f_1 (x)
    (k = 0: x itself) and ``reconstruct(z, k)`` is Phi_k^{-1}(z) = f_1^{-1} o ... o f_k^{-1} (z):
    reconstruct(features(x, k), k) = x for every k.
    """

    def __init__(self, *layers, recompute=False):
        for i, layer in enumerate(layers):
            if not isinstance(layer, InvertibleLayer):
                raise TypeError(f"layers[{i}] must be an InvertibleLayer (with an inverse), got {type(layer).__name__}")
        super().__init__(*layers)
        self.recompute = check_bool(recompute, "recompute")

    def forward(self, x):
        if not self.recompute:
            return super().forward(x)
        before = []
        for layer in self.layers:
            before.append(_rng_states(layer))
            x = layer.forward(x)
            _drop_caches(layer)
        self._keep_for_backward(x, before)
        return x

    def jvp(self, x, tx=None, tparams=None):
        if not self.recompute:
            return super().jvp(x, tx, tparams)
        before = []
        for i, layer in enumerate(self.layers):
            before.append(_rng_states(layer))
            x, tx = layer.jvp(x, tx, _sub(tparams, f"{i}."))
            _drop_caches(layer)
        self._keep_for_backward(x, before)
        return x, tx

    def _keep_for_backward(self, y, before):
        """What backward needs to replay the pass: its output, each layer's generator states before
        the layer ran, the states after the pass, and the train/eval mode of every layer."""
        self._cache = (y, before, _rng_states(self), _modes(self))

    def backward(self, dy, need_input_grad=True):
        if not self.recompute:
            return super().backward(dy, need_input_grad)
        if not isinstance(self._cache, tuple):
            raise RuntimeError("InvertibleSequential(recompute=True).backward needs the output of a forward (or jvp) "
                               "pass with recompute=True since the last backward: each such pass serves one backward")
        (y, before, after, modes), self._cache = self._cache, None
        now = _modes(self)
        _set_modes(modes)  # recompute each layer as it ran
        try:
            for i in range(len(self.layers) - 1, -1, -1):
                layer = self.layers[i]
                _set_rng_states(before[i])  # the same dropout masks
                y = layer._recover(y)  # now the layer's input, with its caches
                dy = layer.backward(dy, need_input_grad=need_input_grad or i > 0)
                _drop_caches(layer)
        finally:
            _set_rng_states(after)
            _set_modes(now)
        return dy if need_input_grad else None

    def extra_repr(self):
        return super().extra_repr() + ("  recompute=True\n" if self.recompute else "")

    def _check_k(self, k):
        return check_integer(k, "k", minimum=0, maximum=len(self.layers))

    def output_shape(self, shape, k=None):
        """The (H, W, C) after the first k layers (all by default) for inputs of shape (H, W, C)."""
        k = len(self.layers) if k is None else self._check_k(k)
        shape = tuple(shape)
        for layer in self.layers[:k]:
            shape = layer.output_shape(shape)
        return shape

    def features(self, x, k=None):
        """Phi_k(x): the output of the first k layers (all by default), in the current mode."""
        k = len(self.layers) if k is None else self._check_k(k)
        for layer in self.layers[:k]:
            x = layer.forward(x)
        return x

    def reconstruct(self, z, k=None):
        """Phi_k^{-1}(z): the input whose features after the first k layers are z."""
        k = len(self.layers) if k is None else self._check_k(k)
        for layer in self.layers[k - 1::-1] if k else []:
            z = layer.inverse(z)
        return z

    def inverse(self, y):
        """Phi^{-1}(y) = f_1^{-1} o ... o f_L^{-1} (y), the input whose output through all layers is y."""
        return self.reconstruct(y, len(self.layers))


class IRevNet(Layer):
    r"""An invertible network Phi followed by a classification head: f(x) = head(Phi(x)).

    Parameters
    ----------
    body : InvertibleSequential
        Phi, the invertible part.
    head : Layer
        The projection onto the classes (not invertible), e.g. BN - relu - global average pooling -
        linear as in ref. 1 of the module.
    in_shape : (H, W) or (H, W, C), optional
        The image shape; when given, :meth:`forward`, :meth:`jvp`, :meth:`features` and
        :meth:`reconstruct` check their inputs against it, and :func:`~shallow.cnn.fit` reads it.
    n_classes : int, optional
    check_inputs : bool
        Check the finiteness of every batch in :meth:`forward` and :meth:`jvp`, as
        :class:`~shallow.cnn.models.Model` does (``fit`` checks its data set once and skips it); the
        shape and channels are checked whatever it says.

    Notes
    -----
    backward and jvp chain the body's and the head's (jvp refuses tangents under names that are not
    parameters of the network, as a Model's does). ``inverse(z)`` = Phi^{-1}(z) for a
    representation z = Phi(x); ``features(x, k)`` and ``reconstruct(z, k)`` stop after the first k
    invertible layers (:class:`InvertibleSequential`). Call ``eval()`` first for reconstructions of
    arbitrary batches (module notes on batch normalisation). A body built with ``recompute=True``
    trains without storing its activations (module notes on memory). Lipschitz constants of the
    network and of the inverse Phi^{-1}:
    :func:`lipschitz_upper_bound(net) <shallow.cnn.robustness.lipschitz_upper_bound>` and
    ``lipschitz_upper_bound(net, inverse=True)`` (certified with ``method="fft"``).
    """

    def __init__(self, body, head, *, in_shape=None, n_classes=None, check_inputs=True):
        super().__init__()
        if not isinstance(body, InvertibleSequential):
            raise TypeError(f"body must be an InvertibleSequential, got {type(body).__name__}")
        check_layer(head, "head")
        self.body, self.head = body, head
        self.in_shape = None if in_shape is None else _check_shape(in_shape)
        self.n_classes = None if n_classes is None else check_integer(n_classes, "n_classes", minimum=1)
        self.check_inputs = check_bool(check_inputs, "check_inputs")

    def children(self):
        return [("body", self.body), ("head", self.head)]

    @property
    def depth(self) -> int:
        """L, the number of invertible layers: features(x, k) takes k in {0, ..., L}."""
        return len(self.body)

    def forward(self, x):
        self._cache = _input_grad_dtype(x, self.dtype)  # backward gives dx back in x's float dtype
        x = self._input(x, "x")
        return self.head.forward(self.body.forward(x))

    def backward(self, dy, need_input_grad=True):
        dx = self.body.backward(self.head.backward(dy, True), need_input_grad)
        return dx if dx is None or self._cache is None else _cast(dx, self._cache)

    def jvp(self, x, tx=None, tparams=None):
        _check_tangent_names(self, tparams)
        self._cache = _input_grad_dtype(x, self.dtype)
        x = self._input(x, "x")
        z, tz = self.body.jvp(x, tx, _sub(tparams, "body."))
        return self.head.jvp(z, tz, _sub(tparams, "head."))

    def feature_shape(self, k=None):
        """The (H, W, C) of features(x, k) (needs ``in_shape``)."""
        if self.in_shape is None:
            raise ValueError("feature_shape needs the network's in_shape: build it with in_shape=(H, W, C)")
        return self.body.output_shape(self.in_shape, k)

    def _input(self, x, name):
        return check_images(x, name, self.in_shape, dtype=self.dtype, finite=self.check_inputs)

    def features(self, x, k=None):
        """Phi_k(x), the representation after the first k invertible layers (all by default).

        Parameters
        ----------
        x : array of shape (N, H, W, C)
        k : int in {0, ..., depth}, optional

        Returns
        -------
        array of shape (N,) + feature_shape(k)
        """
        return self.body.features(self._input(x, "x"), k)

    def reconstruct(self, z, k=None):
        """Phi_k^{-1}(z): the image whose representation after the first k layers is z.

        Parameters
        ----------
        z : array of shape (N,) + feature_shape(k)
        k : int in {0, ..., depth}, optional (all layers by default)

        Returns
        -------
        array of shape (N, H, W, C)
        """
        z = check_array(z, "z")  # real and finite
        k = self.depth if k is None else check_integer(k, "k", minimum=0, maximum=self.depth)
        if self.in_shape is not None:
            want = self.feature_shape(k)
            if z.ndim != 4 or tuple(z.shape[1:]) != want:
                raise ValueError(f"z must have shape (N,) + {want} (the features after {k} invertible layers), got "
                                 f"shape {tuple(z.shape)}")
        else:
            check_batch(z, "z")
        return self.body.reconstruct(z, k)

    def inverse(self, z):
        """Phi^{-1}(z) for the output z of the whole invertible part."""
        return self.reconstruct(z, self.depth)

    def extra_repr(self):
        return f"in_shape={self.in_shape}, n_classes={self.n_classes}, depth={self.depth}"


def _n_rev_stages(H, W):
    """Resolutions after the first space-to-depth: one stage each, halving while even and >= 4 (8x8: 2, 28x28: 2)."""
    h, w, stages = H // 2, W // 2, 1
    while stages < 3 and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 4:
        h, w, stages = h // 2, w // 2, stages + 1
    return stages


def irevnet_small(in_shape=(8, 8, 1), n_classes=10, *, width=16, blocks=2, stages=None, hidden=None,
                  batch_norm=True, activation="relu", rng=None, dtype=np.float64, method="auto",
                  recompute=False) -> IRevNet:
    """A small i-RevNet: space-to-depth, injective padding, stages of RevBlocks; BN - relu - GAP - linear.

    Parameters
    ----------
    in_shape : (H, W) or (H, W, C)
        Even H and W ((8, 8, 1) for digits, (28, 28, 1) for MNIST).
    n_classes : int
        K.
    width : int
        Channels of the first stage (even, >= 4 C): the 4 C channels of the space-to-depth are
        padded to ``width`` (each half padded, :class:`InjectivePad`). Each later stage has 4x
        the channels at half the resolution.
    blocks : int
        RevBlocks per stage (a later stage's first block has stride 2).
    stages : int, optional
        By default one per resolution after the space-to-depth, halving while both sides are even
        and at least 4, at most 3 stages (8x8: 4x4 then 2x2; 28x28: 14x14 then 7x7; 32x32: 16x16,
        8x8 then 4x4; 64x64 stops at 8x8).
    hidden : int, optional
        Hidden channels of every F (default: F's output channels).
    batch_norm : bool
        Batch normalisation inside F and in the head.
    activation : str or Activation
    rng : None, int or Generator
    dtype : float32 or float64
    method : str
        Convolution method of the stride-1 convolutions.
    recompute : bool
        Train without keeping the body's activations: backward recovers them with the inverse
        (:class:`InvertibleSequential`, module notes on memory).

    Returns
    -------
    IRevNet mapping (N, H, W, C) to (N, K)

    Notes
    -----
    Body: SpaceToDepth(2), InjectivePad(4C, width) (omitted when width = 4C), then per stage s
    ``blocks`` RevBlocks, the first of stage s >= 1 with stride 2. The representation Phi(x) has
    as many entries as (H/2^S) (W/2^S) 4^(S-1) width >= H W C: nothing is lost (ref. 1 of the
    module). Head: BatchNorm2d - relu - GlobalAvgPool2d - Linear (LeCun init), as in ref. 1.

    Examples
    --------
    >>> import numpy as np
    >>> net = irevnet_small((8, 8, 1), 10, width=8, blocks=1, rng=0).eval()
    >>> x = np.random.default_rng(1).standard_normal((2, 8, 8, 1))
    >>> net(x).shape, net.feature_shape()
    ((2, 10), (2, 2, 32))
    >>> bool(np.abs(net.inverse(net.features(x)) - x).max() < 1e-12)
    True
    """
    H, W, C = _check_shape(in_shape)
    if H % 2 or W % 2:
        raise ValueError(f"in_shape must have an even height and width (the first layer is a 2x2 space-to-depth), "
                         f"got {in_shape}")
    n_classes = check_integer(n_classes, "n_classes", minimum=1)
    width = check_integer(width, "width", minimum=2)
    if width % 2 or width < 4 * C:
        raise ValueError(f"width must be even and >= 4 C = {4 * C} (the channels after the space-to-depth), "
                         f"got {width}")
    blocks = check_integer(blocks, "blocks", minimum=1)
    if stages is None:
        stages = _n_rev_stages(H, W)
    else:
        stages = check_integer(stages, "stages", minimum=1)
        h, w = H // 2, W // 2
        for _ in range(stages - 1):
            if h % 2 or w % 2:
                raise ValueError(f"in_shape {in_shape} cannot be halved evenly {stages - 1} times after the first "
                                 "space-to-depth: use fewer stages")
            h, w = h // 2, w // 2
    dtype = check_dtype(dtype)
    rng = check_random_state(rng)
    layers = [SpaceToDepth(2)]
    if width > 4 * C:
        layers.append(InjectivePad(4 * C, width))
    c = width
    for s in range(stages):
        for b in range(blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            block = RevBlock(c, stride=stride, hidden=hidden, batch_norm=batch_norm, activation=activation, rng=rng,
                             dtype=dtype, method=method)
            layers.append(block)
            c = block.out_channels
    head = []
    if batch_norm:
        head.append(BatchNorm2d(c, dtype=dtype))
    head += [Activation(activation), GlobalAvgPool2d(), Linear(c, n_classes, init="lecun", rng=rng, dtype=dtype)]
    return IRevNet(InvertibleSequential(*layers, recompute=recompute), Sequential(*head), in_shape=(H, W, C),
                   n_classes=n_classes)

