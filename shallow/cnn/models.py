r"""Small CNNs for 8x8 and 28x28 images, and the model wrapper of the lazy-training experiments.

:func:`vgg_small` and :func:`resnet_small` build :class:`~shallow.cnn.layers.Sequential` networks
h(x; theta) for channels-last images of shape (H, W, C). :class:`Model` wraps one into

    f(x; theta) = alpha * (h(x; theta) - h(x; theta_0))                 (centering="frozen"),
    f(x; theta) = alpha * (h(x; theta_1) - h(x; theta_2)) / sqrt(2)     (centering="antisymmetric"),
    f(x; theta) = alpha * h(x; theta)                                   (centering=None),

with the output scale alpha of Chizat, Oyallon and Bach (2019). Both centrings give f(x; theta_0)
= 0 for every x, so that the lazy limit alpha -> infinity is the kernel regression of the tangent
kernel around a zero function (their Sec. 2.1 and Appendix on the experiments):

* ``"frozen"`` subtracts a frozen copy of the network at initialisation (its parameters are not
  trained; they are saved with the buffers). One extra forward pass per step, no extra backward
  pass; the tangent kernel is that of h.
* ``"antisymmetric"`` trains two copies theta_1 = theta_2 = theta_0 at initialisation: the
  doubling trick ("duplicate the network with opposite output signs"), which keeps the tangent
  kernel equal to that of h: (1/2)(K + K) = K. Twice the parameters and the work.

Duplicating only the last layer with opposite signs would also give f(theta_0) = 0, but it zeroes
the gradient that reaches the hidden layers at initialisation (W - W = 0 back-propagates
nothing): it is not offered.

The lazy objective (1/alpha^2) L(alpha (h - h_0)) is the loss built with ``scale=1/alpha**2``
(:mod:`shallow.cnn.losses`) on a Model with output scale alpha; :func:`shallow.cnn.linearize`
gives its alpha -> infinity limit, the tangent model.

Architectures
-------------
``vgg_small`` : stages of two 3x3 convolutions (padding 1) with batch norm and the nonlinearity,
each followed by 2x2 max pooling; widths w, 2w, 4w, ...; then global average pooling and a linear
layer. 8x8 inputs get 2 stages (8 -> 4 -> 2), 28x28 inputs 3 (28 -> 14 -> 7 -> 3).

``resnet_small`` : a 3x3 stem convolution of width w, then stages of basic residual blocks
(two 3x3 convolutions with batch norm, He et al. 2016); every stage after the first halves the
resolution with a stride-2 first convolution and a strided 1x1 projection shortcut, and doubles the
width; global average pooling and a linear layer.

References
----------
1. L. Chizat, E. Oyallon and F. Bach, "On lazy training in differentiable programming",
   NeurIPS 2019, arXiv:1812.07956, Sec. 2 (scale alpha, centred models) and Sec. 3 (Fig. 3, CNNs).
2. K. Simonyan and A. Zisserman, "Very deep convolutional networks for large-scale image
   recognition", arXiv:1409.1556 (VGG stages).
3. K. He, X. Zhang, S. Ren and J. Sun, "Deep residual learning for image recognition",
   arXiv:1512.03385, Sec. 3.3 and 4.2 (basic blocks, projection shortcuts).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import warnings
from collections.abc import Mapping

import numpy as np

from .._validation import cast_within_range, check_bool, check_integer, check_positive, check_random_state
from ..backend import get_xp, sum_of_squares_parts
from .conv import Conv2d
from .layers import (Activation, Dropout, Layer, Linear, Residual, Sequential, _cast, _input_grad_dtype, _sub,
                     check_dtype, check_layer)
from .norm import BatchNorm2d
from .pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d

__all__ = ["Model", "vgg_small", "resnet_small", "build_model", "CENTERINGS", "check_images", "snapshot",
           "relative_change"]

#: The centrings of :class:`Model` (module notes).
CENTERINGS = (None, "frozen", "antisymmetric")


def check_images(x, name: str, in_shape: tuple | None = None, dtype=None, *, finite=True):
    """A finite batch of channels-last images, shape (N, H, W, C), checked against ``in_shape``.

    Parameters
    ----------
    x : array_like of shape (N, H, W, C), or (N, H, W)
        Real images, numpy or cupy. A batch of shape (N, H, W) is read as single-channel images
        when ``in_shape`` has C = 1.
    name : str
        The argument's name in error messages.
    in_shape : (H, W) or (H, W, C), optional
        The image shape x must have ((H, W) means C = 1); by default any.
    dtype : numpy float dtype (float32 or float64), optional
        Integer and boolean images are converted to ``dtype`` (float64 by default), float images to
        ``dtype`` when given (otherwise float32 and float64 are kept, float16 becomes float32, as in
        the rest of the library).
    finite : bool
        Scan for NaN and infinities (default); on a GPU the scan waits for the device, which a
        loop over batches of a data set checked once skips (the shape checks stay: no wait).

    Returns
    -------
    x : array of shape (N, H, W, C)
        Finite, of a float dtype, on x's device.

    Raises
    ------
    ValueError
        Naming ``name``: not an array of real numbers, not 4-dimensional, wrong size or number of
        channels, NaN or infinity, or values beyond the largest number of ``dtype``; also for an
        ``in_shape`` that is not (H, W) or (H, W, C) of positive integers.
    """
    if isinstance(x, (str, bytes, dict, set)):
        raise ValueError(f"{name} must be an array of images, got {type(x).__name__}")
    xp = get_xp(x)
    try:
        x = xp.asarray(x)
    except ValueError as err:  # a ragged nested sequence
        raise ValueError(f"{name} must be a rectangular array of images: {err}") from None
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if in_shape is not None:
        in_shape = _check_shape(in_shape)  # (8, 8) failed in an unpacking ('not enough values to unpack')
    grey = x.ndim == 3 and in_shape is not None and in_shape[2] == 1
    if grey:  # (N, H, W) single-channel images
        x = x[..., None]
    if x.ndim != 4:
        want = "" if in_shape is None else f" (N, {in_shape[0]}, {in_shape[1]}, {in_shape[2]})"
        raise ValueError(f"{name} must be a batch of channels-last images of shape (N, H, W, C){want}, "
                         f"got shape {tuple(x.shape)}")
    if in_shape is not None and tuple(x.shape[1:]) != tuple(in_shape):
        H, W, C = in_shape
        nchw = tuple(x.shape[1:]) == (C, H, W)
        hint = " (an NCHW array? channels go last: x.transpose(0, 2, 3, 1))" if nchw else ""
        if tuple(x.shape[1:3]) == (H, W):
            raise ValueError(f"{name} has {x.shape[3]} channels but the model expects C={C} "
                             f"(shape {tuple(x.shape)}, channels last){hint}")
        if grey:
            hint = (f" ({name} of shape {tuple(x.shape[:3])} was read as N = {x.shape[0]} single-channel images of "
                    f"shape (H, W); a single image needs a batch axis: {name}[None])")
        raise ValueError(f"{name} has images of shape {tuple(x.shape[1:])} but the model expects "
                         f"(H, W, C) = {tuple(in_shape)}{hint}")
    if dtype is not None:
        x = cast_within_range(x, dtype, name, "the model")
    elif x.dtype.kind != "f":
        x = x.astype(np.float64)
    elif x.dtype == np.float16:
        x = x.astype(np.float32)
    if finite and x.size and not _DATA_CHECKED.get() and not bool(xp.isfinite(x).all()):
        bad = int((~xp.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return x


_DATA_CHECKED = contextvars.ContextVar("shallow_cnn_data_checked", default=False)


@contextlib.contextmanager
def _data_checked():
    """Within: :func:`check_images` does not scan for NaN (what :func:`~shallow.cnn.train.fit` runs there, the
    augmentation of a batch, sees data it checked once). On a GPU each scan waits for the device: once per step."""
    token = _DATA_CHECKED.set(True)
    try:
        yield
    finally:
        _DATA_CHECKED.reset(token)


def _check_tangent_names(model, tparams):
    """Refuse parameter tangents under names that are not trained parameters of ``model``: the layers
    read a missing name as a zero tangent, so a misspelt one would silently be one."""
    if not tparams:
        return
    params = model.named_parameters()
    unknown = sorted(set(tparams) - set(params))
    if unknown:
        raise ValueError(f"tparams has names {unknown[:3]} that are not parameters of the model (its parameters: "
                         f"{sorted(params)[:3]}{', ...' if len(params) > 3 else ''})")


def _check_shape(in_shape, name="in_shape"):
    """One image's shape (H, W, C), from (H, W, C) or (H, W) (one channel); ``name`` is the argument's."""
    if not isinstance(in_shape, (tuple, list)) or len(in_shape) not in (2, 3):
        raise ValueError(f"{name} must be (H, W) or (H, W, C), got {in_shape!r}")
    shape = tuple(check_integer(v, name, minimum=1) for v in in_shape)
    return shape if len(shape) == 3 else shape + (1,)


def _channels_first_hint(in_shape) -> str:
    """A hint for an (H, W, C) shape that reads as (C, H, W): few leading channels, a larger image after."""
    if len(in_shape) == 3 and in_shape[0] <= 4 < min(in_shape[1:]) and in_shape[2] > in_shape[0]:
        C, H, W = in_shape
        return f"; shapes are channels last here: for {C}-channel {H}x{W} images pass ({H}, {W}, {C})"
    return ""


def _architecture_shape(in_shape):
    """(H, W, C) of an architecture's in_shape, with a warning where it reads as channels first."""
    H, W, C = _check_shape(in_shape)
    hint = _channels_first_hint(tuple(in_shape))
    if hint:
        warnings.warn(f"in_shape {tuple(in_shape)} builds a network for {H}x{W} images of {C} channels{hint}",
                      stacklevel=3)
    return H, W, C


def _check_shape3(shape):
    """One image's shape (H, W, C), three positive integers."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise ValueError(f"shape must be the image shape (H, W, C), got {shape!r}")
    return tuple(check_integer(v, "shape", minimum=1) for v in shape)


def _n_stages(H, W):
    """The most stages of 2x2 downsampling that leave a map of at least 2x2, between 1 and 3:
    floor(log2(min(H, W) / 2)) clipped (8 -> 2 stages, 8 -> 4 -> 2; 28 -> 3, 28 -> 14 -> 7 -> 3)."""
    return max(1, min(3, int(math.floor(math.log2(min(H, W) / 2)))))


def _block(net, c_in, c_out, batch_norm, activation, rng, dtype, method, stride=1):
    net.append(Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm, rng=rng, dtype=dtype,
                      method=method if stride == 1 else "auto"))
    if batch_norm:
        net.append(BatchNorm2d(c_out, dtype=dtype))
    net.append(Activation(activation))


def vgg_small(in_shape=(8, 8, 1), n_classes=10, *, width=32, stages=None, batch_norm=True, activation="relu",
              pool="max", dropout=0.0, rng=None, dtype=np.float64, method="auto") -> Sequential:
    """A small VGG-style CNN: stages of two 3x3 convolutions and a 2x2 pooling; GAP and a linear layer.

    Parameters
    ----------
    in_shape : (H, W) or (H, W, C)
        Input image shape, channels last ((8, 8, 1) for digits, (28, 28, 1) for MNIST).
    n_classes : int
        Number of outputs K.
    width : int
        Channels of the first stage (doubled at each stage).
    stages : int, optional
        Number of stages; by default floor(log2(min(H, W) / 2)) clipped to [1, 3], the most, up to 3,
        that leave a map of at least 2x2 (2 for 8x8: 8 -> 4 -> 2; 3 for 28x28: 28 -> 14 -> 7 -> 3).
    batch_norm : bool
        Batch normalisation after each convolution (which then has no bias).
    activation : str or Activation
    pool : {"max", "avg"}
    dropout : float
        Dropout probability before the last layer (0: none).
    rng : None, int or Generator
        He initialisation of every layer, and the dropout masks.
    dtype : float32 or float64
    method : str
        Convolution method (:class:`~shallow.cnn.conv.Conv2d`).

    Returns
    -------
    Sequential mapping (N, H, W, C) to (N, K)

    Examples
    --------
    >>> import numpy as np
    >>> net = vgg_small((8, 8, 1), 10, width=4, rng=0)
    >>> net(np.zeros((3, 8, 8, 1))).shape
    (3, 10)
    """
    H, W, C = _architecture_shape(in_shape)
    n_classes = check_integer(n_classes, "n_classes", minimum=1)
    width = check_integer(width, "width", minimum=1)
    stages = _n_stages(H, W) if stages is None else check_integer(stages, "stages", minimum=1)
    if min(H, W) < 2 ** stages:
        raise ValueError(f"in_shape {in_shape} is too small for {stages} stages of 2x2 pooling"
                         f"{_channels_first_hint(tuple(in_shape))}")
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    batch_norm = check_bool(batch_norm, "batch_norm")
    dtype = check_dtype(dtype)
    rng = check_random_state(rng)
    layers = []
    c = C
    for s in range(stages):
        w = width * 2 ** s
        _block(layers, c, w, batch_norm, activation, rng, dtype, method)
        _block(layers, w, w, batch_norm, activation, rng, dtype, method)
        layers.append(MaxPool2d(2) if pool == "max" else AvgPool2d(2))
        c = w
    layers.append(GlobalAvgPool2d())
    if dropout:
        layers.append(Dropout(dropout, rng=rng))
    layers.append(Linear(c, n_classes, init="lecun", rng=rng, dtype=dtype))
    return Sequential(*layers)


def _basic_block(c_in, c_out, stride, batch_norm, activation, rng, dtype, method):
    body = []
    _block(body, c_in, c_out, batch_norm, activation, rng, dtype, method, stride=stride)
    body.append(Conv2d(c_out, c_out, 3, padding=1, bias=not batch_norm, rng=rng, dtype=dtype, method=method))
    if batch_norm:
        body.append(BatchNorm2d(c_out, dtype=dtype))
    shortcut = None
    if stride != 1 or c_in != c_out:
        parts = [Conv2d(c_in, c_out, 1, stride=stride, bias=not batch_norm, rng=rng, dtype=dtype)]
        if batch_norm:
            parts.append(BatchNorm2d(c_out, dtype=dtype))
        shortcut = Sequential(*parts)
    return [Residual(Sequential(*body), shortcut), Activation(activation)]


def resnet_small(in_shape=(8, 8, 1), n_classes=10, *, width=16, blocks=1, stages=None, batch_norm=True,
                 activation="relu", rng=None, dtype=np.float64, method="auto") -> Sequential:
    """A small ResNet: a 3x3 stem, stages of basic residual blocks, GAP and a linear layer.

    Parameters
    ----------
    in_shape : (H, W) or (H, W, C)
    n_classes : int
    width : int
        Channels of the stem and of the first stage (doubled at each later stage).
    blocks : int
        Basic blocks per stage.
    stages : int, optional
        By default 2 for 8x8 inputs and 3 for 28x28 (each later stage halves the resolution).
    batch_norm : bool
    activation : str or Activation
    rng : None, int or Generator
    dtype : float32 or float64
    method : str
        Convolution method of the stride-1 convolutions.

    Returns
    -------
    Sequential mapping (N, H, W, C) to (N, K)
    """
    H, W, C = _architecture_shape(in_shape)
    n_classes = check_integer(n_classes, "n_classes", minimum=1)
    width = check_integer(width, "width", minimum=1)
    blocks = check_integer(blocks, "blocks", minimum=1)
    stages = _n_stages(H, W) if stages is None else check_integer(stages, "stages", minimum=1)
    batch_norm = check_bool(batch_norm, "batch_norm")
    dtype = check_dtype(dtype)
    rng = check_random_state(rng)
    layers = []
    _block(layers, C, width, batch_norm, activation, rng, dtype, method)
    c = width
    for s in range(stages):
        w = width * 2 ** s
        for b in range(blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            layers.extend(_basic_block(c, w, stride, batch_norm, activation, rng, dtype, method))
            c = w
    layers.append(GlobalAvgPool2d())
    layers.append(Linear(c, n_classes, init="lecun", rng=rng, dtype=dtype))
    return Sequential(*layers)


def _n_outputs(model, X):
    """K, the number of outputs of ``model``: its ``n_classes``, or the width of its output for the first image
    of X in eval mode (the model's mode is restored)."""
    n_outputs = getattr(model, "n_classes", None)
    if n_outputs is not None:
        return int(n_outputs)
    if not X.shape[0]:
        raise ValueError("there are no images, and the model does not say how many outputs it has (no n_classes)")
    mode = model.training
    model.eval()
    try:
        return int(model.forward(X[:1]).shape[1])
    finally:
        model.train(mode)


@contextlib.contextmanager
def _inputs_checked(model):
    """Within: ``model`` does not scan its inputs for NaN again (``fit`` checked the whole data set once);
    their shapes are still checked (a wrapper of a Model, whose own in_shape is unknown, checked none).

    Model.forward checks that a batch is finite, which on a GPU waits for the device to finish
    everything queued before (the previous step): once per step, the launches of a forward pass
    could not overlap with the device's work any more.
    """
    # a wrapper (linearize(model), a Sequential holding a Model) checks through its inner models
    layers = [layer for _, layer in model.named_layers()] if hasattr(model, "named_layers") else [model]
    checking = [layer for layer in layers if getattr(layer, "check_inputs", False)]
    for layer in checking:
        layer.check_inputs = False
    try:
        yield
    finally:
        for layer in checking:
            layer.check_inputs = True


class Model(Layer):
    r"""A network with input checks, an output scale alpha and an optional centring.

    Parameters
    ----------
    net : Layer
        h, mapping (N, H, W, C) images to (N, K) outputs.
    in_shape : (H, W) or (H, W, C)
        The image shape the model accepts (inputs are checked against it).
    n_classes : int
        K.
    alpha : float > 0
        Output scale. It multiplies h and the gradients in the network's dtype, so alpha (alpha /
        sqrt(2) with the antisymmetric centring) must be a normal number of that dtype (from 1.2e-38
        to 3.4e38 in float32).
    centering : {None, "frozen", "antisymmetric"}
        f(x; theta_0) = 0 by a frozen copy or by an antisymmetric pair (module notes).
    check_inputs : bool
        Check the finiteness of every batch in :meth:`forward` (a scan, and on a GPU a wait for the
        device; off for benchmarks and within ``fit``, which checks its data set once); the shape and
        channels are checked whatever it says (no wait).

    Attributes
    ----------
    in_shape : (H, W, C)
    n_classes : int
    alpha : float
    centering : None or str

    Notes
    -----
    With u = alpha (centering None or "frozen") or alpha / sqrt(2) ("antisymmetric"),
    backward sends u dy to h (and -u dy to the second copy), and forward mode gives
    ty = u (J_1 t_1 - J_2 t_2), with tangents named as :meth:`named_parameters` names the parameters
    (another name is refused). Inputs of another dtype are cast to the parameters' dtype, and the
    input gradient of :meth:`backward` goes back in the input's float dtype (module notes of
    :mod:`shallow.cnn.layers`).
    The frozen reference runs in the model's mode on the same batches: with batch normalisation
    its running statistics are those of the network at theta_0, so f(x; theta_0) = 0 in eval mode
    too.

    Precision at large alpha: f = alpha (h(x; theta) - h(x; theta_0)) is alpha times a difference of
    two O(|h|) numbers, and training moves theta by O(1/alpha) relative to theta_0 while theta is
    stored in the network's dtype (steps below eps |theta| are rounded away). In float32 (eps = 6e-8)
    the outputs are then about alpha eps |h| off: against float64 from the same float32
    initialisation (vgg_small, width 8, no batch normalisation, 5 epochs of SGD on 256 images),
    1.5e-3 at alpha = 100, 1.7e-2 at 10^4 and 0.27 at 10^5 (relative, largest output), and the
    weight change 9% short at 10^5. :func:`~shallow.cnn.linearize.linearize` stores theta too and
    fares the same (1.2e-2 and 0.32). Train in float64 at large alpha.

    Examples
    --------
    >>> import numpy as np
    >>> model = Model(vgg_small((8, 8), 10, width=4, rng=0), (8, 8), 10, alpha=10.0, centering="frozen")
    >>> float(np.abs(model(np.random.default_rng(1).standard_normal((5, 8, 8, 1)))).max())
    0.0
    """

    def __init__(self, net, in_shape, n_classes, *, alpha=1.0, centering=None, check_inputs=True):
        super().__init__()
        check_layer(net, "net")
        self.in_shape = _check_shape(in_shape)
        self.n_classes = check_integer(n_classes, "n_classes", minimum=1)
        self.alpha = check_positive(alpha, "alpha")
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
        self.centering = centering
        dtype = net.dtype
        if dtype is not None:  # u multiplies h and dy in the network's dtype
            info = np.finfo(dtype)
            if not float(info.tiny) <= self._u <= float(info.max):
                raise ValueError(f"alpha = {self.alpha:.3g} is outside the normal {np.dtype(dtype).name} numbers "
                                 f"[{float(info.tiny):.3g}, {float(info.max):.3g}] that the network computes in: "
                                 "f and the gradients would be rounded to 0 or inf (NaN at a centred "
                                 "initialisation); build the network in float64")
        self.check_inputs = check_bool(check_inputs, "check_inputs")
        self.net = net
        self.other = None
        if centering is not None:
            self.other = copy.deepcopy(net)
            self.other.frozen = centering == "frozen"

    def children(self):
        if self.centering is None:
            return [("net", self.net)]
        if self.centering == "frozen":
            return [("net", self.net), ("reference", self.other)]
        return [("plus", self.net), ("minus", self.other)]

    @property
    def _u(self):
        return self.alpha / math.sqrt(2.0) if self.centering == "antisymmetric" else self.alpha

    def _input(self, x, name="x"):
        """x checked and cast to the parameters' dtype; the cache keeps the dtype in which
        :meth:`backward` gives the input gradient back (x's float dtype)."""
        dtype = self.dtype
        self._cache = _input_grad_dtype(x, dtype)
        return check_images(x, name, self.in_shape, dtype=dtype, finite=self.check_inputs)

    def forward(self, x):
        x = self._input(x)
        y = self.net.forward(x)
        if y.ndim != 2 or y.shape[1] != self.n_classes:
            raise ValueError(f"the network maps images to shape {tuple(y.shape)}, not (N, {self.n_classes})")
        if self.other is not None:
            y = y - self.other.forward(x)
        if self._u != 1.0:
            y = y * self._u
        return y

    def backward(self, dy, need_input_grad=True):
        u = self._u
        dy = _cast(dy, self.dtype)  # u dy in the network's dtype, whatever dy's
        g = dy * u if u != 1.0 else dy
        dx = self.net.backward(g, need_input_grad)
        if self.centering == "antisymmetric":
            dx2 = self.other.backward(-g, need_input_grad)
            dx = dx + dx2 if need_input_grad else None
        elif self.centering == "frozen" and need_input_grad:
            dx = dx - self.other.backward(g, True)
        return dx if dx is None or self._cache is None else _cast(dx, self._cache)

    def jvp(self, x, tx=None, tparams=None):
        _check_tangent_names(self, tparams)  # a frozen reference's names too
        x = self._input(x)
        names = [name for name, _ in self.children()]
        y, ty = self.net.jvp(x, tx, _sub(tparams, f"{names[0]}."))
        if self.other is not None:
            # the frozen reference has no parameter tangent; the antisymmetric copy has its own
            t2 = _sub(tparams, "minus.") if self.centering == "antisymmetric" else None
            y2, ty2 = self.other.jvp(x, tx, t2)
            y = y - y2
            if ty2 is not None:
                ty = -ty2 if ty is None else ty - ty2
        u = self._u
        return y * u, (None if ty is None else ty * u)

    def extra_repr(self):
        return (f"in_shape={self.in_shape}, n_classes={self.n_classes}, alpha={self.alpha}, "
                f"centering={self.centering!r}, net={self.net!r}")


def build_model(arch="vgg", in_shape=(8, 8, 1), n_classes=10, *, alpha=1.0, centering=None, rng=None,
                dtype=np.float64, **kwargs) -> Model:
    """A :class:`Model` around ``vgg_small`` (``arch="vgg"``) or ``resnet_small`` (``arch="resnet"``).

    Parameters
    ----------
    arch : {"vgg", "resnet"}
        The architecture, :func:`vgg_small` (default) or :func:`resnet_small`.
    in_shape : (H, W) or (H, W, C)
        Input image shape, channels last; default (8, 8, 1) (the digits).
    n_classes : int
        Number of outputs K, default 10.
    alpha : float > 0
        Output scale of the :class:`Model`, default 1.
    centering : {None, "frozen", "antisymmetric"}
        The Model's centring, f(x; theta_0) = 0 (default None: none).
    rng : None, int or numpy.random.Generator
        Initialisation of the network (and, for vgg with ``dropout``, its dropout masks).
    dtype : float32 or float64
        The parameters' dtype, default float64.
    **kwargs
        Extra keyword arguments go to the architecture (``width``, ``batch_norm``, ``stages``, ...).

    Returns
    -------
    Model
        Mapping images of shape (N, H, W, C) to outputs of shape (N, K).

    Raises
    ------
    ValueError
        For an unknown ``arch``; the architecture and :class:`Model` refuse their bad arguments.
    TypeError
        For a keyword argument the architecture does not take.
    """
    builders = {"vgg": vgg_small, "resnet": resnet_small}
    if arch not in builders:
        raise ValueError(f"arch must be one of {', '.join(builders)}, got {arch!r}")
    net = builders[arch](in_shape, n_classes, rng=rng, dtype=dtype, **kwargs)
    return Model(net, in_shape, n_classes, alpha=alpha, centering=centering)


def snapshot(model) -> dict:
    """Copies of the trained parameters of ``model`` by name (theta_0 for :func:`relative_change`).

    Parameters
    ----------
    model : Layer
        Any :class:`~shallow.cnn.layers.Layer`; its ``named_parameters()`` are copied.

    Returns
    -------
    dict of str -> array
        ``p.copy()`` of each parameter: same shape, dtype and device, no longer tied to the model.

    Raises
    ------
    TypeError
        When ``model`` is not a Layer.
    """
    return {name: p.copy() for name, p in check_layer(model).named_parameters().items()}


def relative_change(params, reference) -> float:
    """|theta - theta_0| / |theta_0|, the Euclidean norms over all parameters together.

    Parameters
    ----------
    params, reference : dict of str -> array, or Layer
        theta and theta_0 (a model's parameters, or a :func:`snapshot`), with the same names.

    Returns
    -------
    float

    Notes
    -----
    Chizat, Oyallon and Bach (2019, Theorem 2.3 and Fig. 3) predict that training with output
    scale alpha moves the parameters by O(1/alpha) in this relative sense: the lazy regime.
    Each norm sums float64 squares of the entries scaled by the power of 2 of the largest one, so
    that the ratio is a float wherever it is representable, whatever the parameters' scale and dtype.
    """
    if isinstance(params, Layer):
        params = params.named_parameters()
    if isinstance(reference, Layer):
        reference = reference.named_parameters()
    for name, value in (("params", params), ("reference", reference)):
        if not isinstance(value, Mapping):  # a list failed with "'list' object has no attribute 'items'"
            raise TypeError(f"{name} must be a dict of name -> array or a Layer, got {type(value).__name__}")
    if set(params) != set(reference):
        raise ValueError(f"params and reference name different parameters: {sorted(set(params) ^ set(reference))[:5]}")
    for k, p in params.items():
        if tuple(p.shape) != tuple(reference[k].shape):
            raise ValueError(f"params[{k!r}] has shape {tuple(p.shape)} but reference[{k!r}] has shape "
                             f"{tuple(reference[k].shape)}: theta and theta_0 must be parameters of one architecture")
    num, e_num = sum_of_squares_parts([p.astype(np.float64) - reference[k].astype(np.float64) for k, p in params.items()])
    den, e_den = sum_of_squares_parts(list(reference.values()))
    if den == 0:
        return math.inf
    try:
        return math.ldexp(math.sqrt(num / den), e_num - e_den)
    except OverflowError:
        return math.inf
