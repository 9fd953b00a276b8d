r"""Layers of the CNN, each with its forward map, its backward map and its forward-mode derivative side by side.

A :class:`Layer` is a map y = f(x; theta) on a batch. It implements three methods:

* ``forward(x)`` returns y and keeps what the derivatives need (the layer's cache);
* ``backward(dy)`` returns dx = (df/dx)^T dy and stores dtheta = (df/dtheta)^T dy in
  ``layer.grads`` (overwritten, not accumulated as PyTorch's ``.grad`` is: to accumulate over
  micro-batches, sum copies of the gradients by hand), for the batch of the last ``forward``;
* ``jvp(x, tx, tparams)`` returns (y, ty) with ty = (df/dx) tx + (df/dtheta) ttheta, the
  Jacobian-vector product (forward-mode derivative), and caches like ``forward`` so that a
  ``backward`` may follow. It is what :func:`shallow.cnn.linearize` is built on.

Inference keeps no caches: within ``with no_cache(model):`` (what :func:`~shallow.cnn.train.predict`
and :func:`~shallow.cnn.train.evaluate` use) every layer releases its cache as soon as its own
``forward`` (or ``jvp``) returns, so a pass holds one layer's cache and its input and output at a
time instead of the caches of all layers, and nothing stays cached afterwards; a ``backward`` then
raises (there is no pass to differentiate). The switch applies to every layer that runs inside the
block, sub-layers that a layer keeps outside :meth:`Layer.children` included.

The base class checks the shapes of what the three receive, for every subclass (its
``__init_subclass__`` wraps them): ``backward`` refuses a dy of another shape than the last output,
``jvp`` a tx of another shape than x and a parameter tangent of another shape than its parameter.
A broadcastable one would otherwise give a silently wrong derivative in the pointwise layers.

Parameters, gradients and buffers (non-trained state such as batch-norm running statistics) are
plain arrays of the backend (numpy or cupy) in the dicts ``params``, ``grads`` and ``buffers``;
containers name them with dotted paths (``"3.W"``, ``"1.body.0.b"``). Optimisers update the
parameter arrays in place, so a layer never rebinds ``params[name]`` except in :meth:`Layer.to`
and :meth:`Layer.flatten_parameters` (which ``to`` calls): there the parameters become views into one
flat array, and the gradients views into another, so that an optimiser updates them all at once.

Conventions
-----------
* Images are channels-last, **NHWC**: a batch is an array of shape (N, H, W, C). This is the layout
  in which a 3x3 convolution is nine GEMMs on shifted views of one padded buffer
  (:mod:`shallow.cnn.conv`); PyTorch's NCHW arrays are ``x.transpose(0, 2, 3, 1)`` of ours.
* Weights are stored input-major, in each layer's ``params`` dict: ``params["W"]`` of a Linear
  layer has shape (d_in, d_out) and that of a Conv2d shape (KH, KW, C_in / groups, C_out), so
  that y = x @ W (bias ``params["b"]``; there is no ``layer.W`` attribute).
* float32 and float64 are supported. A layer built with ``dtype=`` (Linear, Conv2d, BatchNorm2d,
  the p4 convolutions; a :class:`~shallow.cnn.models.Model` takes its network's) holds its
  parameters and buffers in that dtype and computes in it: a batch of another dtype (float64
  through a float32 layer, or integer images) is cast to it on entry, so that the output y, the
  tangent ty and the parameter gradients have the parameters' dtype (whatever the dtypes of dy and
  of the tangents), and the input gradient dx goes back in the input's dtype when that is a float
  dtype, as the chain rule through the cast gives (in the parameters' for integer images). When
  the dtypes match, nothing is cast or copied. Layers without parameters (activations, pooling,
  dropout, flatten) keep their input's dtype; containers (Sequential, Residual) follow from their
  layers, so that an identity shortcut adds x in its own dtype.
* Initialisation (``init=``): ``"he"`` draws N(0, 2 / fan_in) (He et al. 2015, arXiv:1502.01852),
  ``"lecun"`` N(0, 1 / fan_in), ``"normal"`` N(0, 1) (the NTK parametrisation multiplies by
  1/sqrt(fan_in) outside), ``"zeros"``, or a float std. Draws are made on the host in float64
  with the ``rng`` given (None, int or Generator), then cast: the same seed gives the same
  network in float32 and float64 and on every device. Biases start at 0. This is not PyTorch's
  default initialisation of ``nn.Conv2d`` and ``nn.Linear`` (weights and biases uniform in
  [-1/sqrt(fan_in), 1/sqrt(fan_in)], variance 1 / (3 fan_in), a sixth of He's): pass ``init=`` to match another.

References
----------
1. K. He, X. Zhang, S. Ren and J. Sun, "Delving deep into rectifiers", ICCV 2015, arXiv:1502.01852
   (He initialisation, Eq. 10).
2. N. Srivastava et al., "Dropout: a simple way to prevent neural networks from overfitting",
   JMLR 15, 2014 (inverted dropout as used here: kept units are scaled by 1 / (1 - p)).
3. K. He, X. Zhang, S. Ren and J. Sun, "Deep residual learning for image recognition", CVPR 2016,
   arXiv:1512.03385 (residual blocks).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
import weakref
from collections.abc import Mapping

import numpy as np

from .._validation import check_bool, check_float_dtype, check_integer, check_random_state
from ..activations import as_activation
from ..backend import get_xp, to_device
from ._gemm import gemm

__all__ = [
    "Layer",
    "Sequential",
    "Linear",
    "Activation",
    "Flatten",
    "Dropout",
    "Residual",
    "Identity",
    "init_weight",
    "no_cache",
]

#: ``dtype`` as a numpy dtype, float32 or float64 (the shared check, under the name the layers use).
check_dtype = check_float_dtype

#: Parameter arrays that :meth:`Layer.to` or :meth:`Layer.flatten_parameters` replaced, by id; weak, so
#: that an array dropped everywhere else leaves (and its id, reused, names no other array here).
_REPLACED = weakref.WeakValueDictionary()


def _retire(old, new) -> None:
    """Record that the parameter array ``old`` was replaced by ``new`` (nothing when they are one)."""
    if old is not new:
        try:
            _REPLACED[id(old)] = old
        except TypeError:  # an array type without weak references: not tracked
            pass


def replaced(a) -> bool:
    """Whether ``a`` is a parameter array that :meth:`Layer.to` or :meth:`Layer.flatten_parameters` replaced:
    a model no longer reads it, and an optimiser updating it would leave the model unchanged."""
    return _REPLACED.get(id(a)) is a


def init_weight(shape, fan_in: int, init, rng, dtype) -> np.ndarray:
    """A weight array of ``shape`` drawn on the host in float64, then cast to ``dtype``.

    Parameters
    ----------
    shape : tuple of int
    fan_in : int
        Number of inputs of one output unit (d_in, or KH * KW * C_in / groups).
    init : {"he", "lecun", "normal", "zeros"} or float
        N(0, 2 / fan_in), N(0, 1 / fan_in), N(0, 1), zeros, or N(0, init^2).
    rng : None, int or numpy Generator
    dtype : float32 or float64

    Returns
    -------
    numpy array of ``shape`` and ``dtype``
    """
    dtype = check_dtype(dtype)
    if not isinstance(shape, (tuple, list)):
        raise ValueError(f"shape must be a tuple of non-negative integers, got {shape!r}")
    shape = tuple(check_integer(s, f"shape[{i}]") for i, s in enumerate(shape))
    fan_in = check_integer(fan_in, "fan_in", minimum=1)
    if isinstance(init, str):
        stds = {"he": math.sqrt(2.0 / fan_in), "lecun": math.sqrt(1.0 / fan_in), "normal": 1.0, "zeros": 0.0}
        if init not in stds:
            raise ValueError(f"init must be one of {', '.join(stds)} or a float std, got {init!r}")
        std = stds[init]
    elif isinstance(init, numbers.Real) and not isinstance(init, bool) and 0 <= init < math.inf:
        std = float(init)
    else:
        raise ValueError(f"init must be one of he, lecun, normal, zeros or a finite float std >= 0, got {init!r}")
    rng = check_random_state(rng)
    if std == 0.0:
        return np.zeros(shape, dtype=dtype)
    return (std * rng.standard_normal(shape)).astype(dtype)


def check_real(x, name: str = "x"):
    """Refuse what is not a numpy or cupy array of real numbers (float, integer or bool), naming it.

    O(1): the attributes only (a list failed with "'list' object has no attribute 'ndim'", a complex
    array inside numpy's casting rules, deep in the layer).
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None or getattr(x, "ndim", None) is None:
        raise ValueError(f"{name} must be a numpy or cupy array, got {type(x).__name__}")
    if dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers, got dtype {dtype}")


def check_batch(x, name: str = "x"):
    """Refuse an array that is not a 4-D channels-last batch (N, H, W, C) of real numbers, naming it.

    The layers' cheap shape check on their hot path (no NaN scan: :func:`shallow.cnn.models.check_images`
    validates a model's inputs once, at the model).
    """
    check_real(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch of channels-last images of shape (N, H, W, C), got "
                         f"shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {tuple(x.shape)}): a batch needs N >= 1")


def _cast_in(x, dtype):
    """(x as an array of ``dtype``, the dtype in which the input gradient goes back): the entry of a
    layer with parameters of ``dtype`` (module notes).

    No copy when x has ``dtype`` already. The gradient goes back in x's dtype when that is a float
    dtype (the chain rule through the cast), else (integer or boolean images) in ``dtype``.
    """
    if x.dtype == dtype:
        return x, dtype
    return x.astype(dtype, copy=False), _input_grad_dtype(x, dtype)


def _input_grad_dtype(x, dtype):
    """The dtype in which the gradient of an input x cast to ``dtype`` goes back: x's when it is a
    float array, else ``dtype`` (integer or boolean images, or what is not an array)."""
    x_dtype = getattr(x, "dtype", None)
    return x_dtype if getattr(x_dtype, "kind", None) == "f" else dtype


def _cast(a, dtype):
    """``a`` as an array of ``dtype``; no copy when it has that dtype already, and ``a`` itself when
    either is None (no array, or a layer without parameters, whose dtype is None)."""
    return a if a is None or dtype is None or a.dtype == dtype else a.astype(dtype, copy=False)


def _cast_tangents(tparams, dtype):
    """The parameter tangents (None or a dict) as arrays of ``dtype``, without copies where they have it."""
    if not tparams:
        return tparams
    return {name: _cast(t, dtype) for name, t in tparams.items()}


def _missing_cache(layer):
    if _NO_CACHE.get():  # the backward itself runs within the block: no forward there could have helped
        return RuntimeError(f"{type(layer).__name__}.backward was called within no_cache(...), where forward "
                            "passes keep no cache: a backward, and what calls one (train_step, fit, "
                            "input_gradient, input_jacobian, local_lipschitz, fgsm, pgd), must run outside "
                            "the with block")
    return RuntimeError(f"{type(layer).__name__}.backward was called before forward, or after a pass within "
                        "no_cache (predict, evaluate), which keeps no cache: run forward (or jvp) on the batch "
                        "first, outside no_cache")


def _check_caching(what: str) -> None:
    """Refuse a training step within :func:`no_cache` before its forward pass moves anything (the running
    statistics of batch normalisation in train mode): its backward would find no cache."""
    if _NO_CACHE.get():
        raise RuntimeError(f"{what} was called within no_cache(...), which keeps no cache for the backward "
                           "pass of a training step: train outside the with block (no_cache is for inference)")


#: True within :func:`no_cache`: layers release their caches when their forward (or jvp) returns.
_NO_CACHE = contextvars.ContextVar("shallow_cnn_no_cache", default=False)


def caching() -> bool:
    """Whether forward passes keep caches for a backward pass now (False within :func:`no_cache`).

    A layer whose cache costs work or memory beyond its output may consult it in ``forward`` and
    build none; whatever it builds is released anyway.
    """
    return not _NO_CACHE.get()


@contextlib.contextmanager
def no_cache(model):
    """Within: forward passes keep no caches for a backward pass (inference); yields ``model``.

    On entry the caches of ``model``'s tree are released; within (a context variable: this thread
    only), every layer that runs (of this model or not, sub-layers outside
    :meth:`Layer.children` included) releases its cache and
    recorded output shape when its own outermost ``forward`` or ``jvp`` call returns. A pass then
    holds the cache of one layer at a time (besides its input and output) instead of those of all
    layers, and nothing stays cached after it: a ``backward`` raises until a forward pass outside
    the block. The outputs are the same numbers as with caches.

    Parameters
    ----------
    model : Layer

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn import build_model
    >>> model = build_model("vgg", (8, 8), 10, width=4, rng=0).eval()
    >>> x = np.zeros((2, 8, 8, 1))
    >>> with no_cache(model):
    ...     y = model(x)
    >>> bool((y == model(x)).all())
    True
    """
    check_layer(model)
    for _, layer in model.named_layers():
        layer._cache = layer._out_shape = None
    token = _NO_CACHE.set(True)
    try:
        yield model
    finally:
        _NO_CACHE.reset(token)


def _releasing(method, self, args, kwargs):
    """``method(self, *args, **kwargs)`` within :func:`no_cache`: the layer's cache (and recorded
    output shape) released when its outermost call returns. Calls nested on the same layer (a
    ``jvp`` that calls its own ``forward`` and then reads the cache, a subclass's ``forward`` that
    calls its parent's) find the cache in place."""
    depth = self.__dict__.get("_depth", 0)
    self._depth = depth + 1
    try:
        return method(self, *args, **kwargs)
    finally:
        self._depth = depth
        if depth == 0:
            self._cache = self._out_shape = None


def _recording_output_shape(forward):
    """``forward`` that also records the shape of its output, against which backward checks dy
    (and, within :func:`no_cache`, releases the layer's cache)."""
    @functools.wraps(forward)
    def recorded(self, x, *args, **kwargs):
        if _NO_CACHE.get():
            return _releasing(forward, self, (x, *args), kwargs)
        y = forward(self, x, *args, **kwargs)
        self._out_shape = getattr(y, "shape", None)
        return y
    return recorded


def _checking_dy(backward):
    """``backward`` that first checks that dy has the shape of the last forward pass's output: a
    wrong shape would otherwise broadcast into a silently wrong gradient or fail deep in numpy."""
    @functools.wraps(backward)
    def checked(self, dy, *args, **kwargs):
        shape = getattr(self, "_out_shape", None)  # None before forward (or without Layer.__init__)
        if shape is not None and getattr(dy, "shape", None) != shape:
            raise ValueError(f"dy must have the shape of the layer's output, {tuple(shape)}, got {_shape_of(dy)} "
                             f"({type(self).__name__}.backward)")
        return backward(self, dy, *args, **kwargs)
    return checked


def _checking_tangents(jvp):
    """``jvp`` that first checks the tangents' shapes: tx that of x, and each tangent of one of the
    layer's own parameters that parameter's (a broadcastable tangent gave a silently wrong ty); and
    then records the shape of its output y, as ``forward`` does, since jvp caches for a backward too
    (a container's jvp, which never calls its own forward, left the shape of an earlier forward: a
    backward after a jvp on a batch of another size was refused, e.g. by ``spectral_norm``)."""
    @functools.wraps(jvp)
    def checked(self, x, *args, **kwargs):
        tx = args[0] if args else kwargs.get("tx")
        tparams = args[1] if len(args) > 1 else kwargs.get("tparams")
        shape = getattr(x, "shape", None)
        if tx is not None and shape is not None and getattr(tx, "shape", None) != shape:
            raise ValueError(f"tx must have the shape of x, {tuple(shape)}, got {_shape_of(tx)} "
                             f"({type(self).__name__}.jvp)")
        for name, t in (tparams.items() if isinstance(tparams, Mapping) else ()):
            p = self.params.get(name)
            if t is not None and p is not None and getattr(t, "shape", None) != p.shape:
                raise ValueError(f"tparams[{name!r}] has shape {_shape_of(t)} but the parameter {name!r} has shape "
                                 f"{tuple(p.shape)} ({type(self).__name__}.jvp)")
        if _NO_CACHE.get():
            return _releasing(jvp, self, (x, *args), kwargs)
        y, ty = jvp(self, x, *args, **kwargs)
        self._out_shape = getattr(y, "shape", None)
        return y, ty
    return checked


def _running_buffers(layer) -> list:
    """The buffers that a forward pass in train mode writes in place (batch-norm running
    statistics): every layer's ``buffers``, without the parameters of frozen sub-layers."""
    return [b for _, lay in layer.named_layers() for b in lay.buffers.values()]


def _rng_states(layer) -> list:
    """[(generator, its state)] for the random generators of a layer tree (dropout masks): given to
    :func:`_set_rng_states`, a later pass draws the same numbers again."""
    return [(g, g.bit_generator.state) for g in layer.named_rngs().values()]


def _set_rng_states(states):
    for g, state in states:
        g.bit_generator.state = state


def _shape_of(a):
    shape = getattr(a, "shape", None)
    return tuple(shape) if shape is not None else f"a {type(a).__name__}"


class Layer:
    """Base class: a batched differentiable map with parameters, gradients and buffers.

    Attributes
    ----------
    params : dict of str -> array
        Trained parameters (updated in place by the optimisers).
    grads : dict of str -> array
        d(loss)/d(param) for the last backward pass, same shapes as ``params``.
    buffers : dict of str -> array
        State that is not trained but saved in checkpoints (batch-norm running statistics).
    rngs : dict of str -> numpy Generator
        Random generators of the layer (dropout masks), saved in checkpoints.
    training : bool
        Train mode (batch statistics, dropout on) or eval mode; see :meth:`train` and :meth:`eval`.
    """

    def __init_subclass__(cls, **kwargs):
        # every layer's backward checks dy against the output of its forward (the outermost call
        # records last, so a subclass extending its parent's forward is checked on its own output),
        # and its jvp checks the tangents' shapes
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _recording_output_shape(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _checking_dy(cls.__dict__["backward"])
        if "jvp" in cls.__dict__:
            cls.jvp = _checking_tangents(cls.__dict__["jvp"])

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.rngs = {}
        self.training = True
        self.frozen = False
        self._cache = None
        self._out_shape = None
        self._grad_slots = {}  # views of a flat gradient array (flatten_parameters), filled by backward

    # ------------------------------------------------------------------ the three maps
    def forward(self, x):
        """y = f(x; theta) for a batch x; caches what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, dy, need_input_grad: bool = True):
        """dx = (df/dx)^T dy (None when ``need_input_grad`` is False); sets ``grads``."""
        raise NotImplementedError

    def jvp(self, x, tx=None, tparams=None):
        """(y, ty): the value and the Jacobian-vector product (df/dx) tx + (df/dtheta) ttheta.

        Parameters
        ----------
        x : array
            The input batch.
        tx : array of x's shape, or None
            Tangent of the input (None: zero).
        tparams : dict of str -> array, or None
            Tangents of the parameters, by the names of :meth:`named_parameters` relative to
            this layer; a missing name (or None) is a zero tangent.
        """
        raise NotImplementedError

    def __call__(self, x):
        """y = f(x; theta) for a batch x (calls :meth:`forward`)."""
        return self.forward(x)

    # ------------------------------------------------------------------ the tree of layers
    def children(self):
        """The sub-layers as a list of (name, layer)."""
        return []

    def _walk(self, prefix="", frozen=False):
        """(dotted prefix, layer, inside a frozen subtree) for every layer of the tree, this one first.

        The layer it is called on counts as not frozen: a frozen layer lists its own parameters.
        """
        yield prefix, self, frozen
        for name, child in self.children():
            yield from child._walk(f"{prefix}{name}.", frozen or child.frozen)

    def named_layers(self):
        """All layers of the tree (this one first) as (dotted prefix, layer) pairs."""
        for prefix, layer, _ in self._walk():
            yield prefix, layer

    def named_parameters(self) -> dict:
        """The trained parameters of the tree by dotted name (the arrays themselves, not copies).

        Sub-layers marked ``frozen`` (the reference copy of a centred model) are left out: their
        parameters are listed with the buffers.
        """
        return {prefix + key: value for prefix, layer, frozen in self._walk() if not frozen
                for key, value in layer.params.items()}

    def named_gradients(self) -> dict:
        """The gradients of :meth:`named_parameters` by dotted name (those of the last backward pass)."""
        return {prefix + key: value for prefix, layer, frozen in self._walk() if not frozen
                for key, value in layer.grads.items()}

    def named_buffers(self) -> dict:
        """All buffers of the tree, and the parameters of frozen sub-layers, by dotted name."""
        out = {}
        for prefix, layer, frozen in self._walk():
            out.update({prefix + key: value for key, value in layer.buffers.items()})
            if frozen:
                out.update({prefix + key: value for key, value in layer.params.items()})
        return out

    def named_rngs(self) -> dict:
        """All random generators of the tree by dotted name."""
        return {prefix + key: value for prefix, layer, _ in self._walk() for key, value in layer.rngs.items()}

    def num_parameters(self) -> int:
        """The number of trained scalars."""
        return int(sum(p.size for p in self.named_parameters().values()))

    @property
    def dtype(self):
        """The dtype of the parameters (None for a layer without any)."""
        for p in self.named_parameters().values():
            return p.dtype
        for b in self.named_buffers().values():
            return b.dtype
        return None

    def train(self, mode: bool = True):
        """Set train mode (True) or eval mode (False) on the whole tree; returns self."""
        mode = check_bool(mode, "mode")
        for _, layer in self.named_layers():
            layer.training = mode
        return self

    def eval(self):
        """Set eval mode on the whole tree (batch-norm running statistics, no dropout); returns self."""
        return self.train(False)

    def to(self, device: str):
        """Move parameters, gradients and buffers to ``device`` ("cpu" or "gpu"), then pack the
        parameters into one array (:meth:`flatten_parameters`); returns self.

        Optimisers hold references to the parameter arrays: build them after moving the model (unlike
        PyTorch's ``module.to``, the parameters become new arrays; a step of an optimiser built before
        raises ValueError instead of updating arrays the model no longer reads).
        """
        for _, layer in self.named_layers():
            for attribute in ("params", "grads", "buffers"):
                d = getattr(layer, attribute)
                for key in d:
                    old, d[key] = d[key], to_device(d[key], device)
                    if attribute == "params":
                        _retire(old, d[key])
            layer._grad_slots = {}
            layer._cache = layer._out_shape = None
        return self.flatten_parameters()

    def flatten_parameters(self):
        """Make the trained parameters views into one flat array, and their gradients views into
        another; returns self.

        The values do not change, only where they live. An optimiser built afterwards finds the
        parameters and the gradients contiguous and updates all of them with the few whole-array
        operations of its formula, instead of those operations for every parameter: on a GPU,
        where each operation is a kernel launch, 6 launches per SGD step instead of 120 for the
        VGG of ``benchmarks/cnn_step.py``. Nothing is done when the parameters differ in dtype or
        device, or when one array serves two parameters (tied weights must stay tied).
        Parameters of frozen sub-layers are left out, as in :meth:`named_parameters`.
        """
        entries = [(layer, key) for _, layer, frozen in self._walk() if not frozen for key in layer.params]
        arrays = [layer.params[key] for layer, key in entries]
        if not arrays or len({id(a) for a in arrays}) < len(arrays):
            return self
        xp, dtype = get_xp(arrays[0]), arrays[0].dtype
        if any(get_xp(a) is not xp or a.dtype != dtype for a in arrays):
            return self
        total = sum(a.size for a in arrays)
        flat_params = xp.empty(total, dtype=dtype)
        flat_grads = xp.zeros(total, dtype=dtype)
        offset = 0
        for (layer, key), a in zip(entries, arrays, strict=True):
            n = a.size
            view = flat_params[offset:offset + n].reshape(a.shape)
            view[...] = a
            layer.params[key] = view
            _retire(a, view)
            slot = flat_grads[offset:offset + n].reshape(a.shape)
            layer._grad_slots[key] = slot
            if key in layer.grads:
                layer._store_grad(key, layer.grads.pop(key))
            offset += n
        return self

    def zero_grad(self):
        """Set every gradient to zero (in place)."""
        for g in self.named_gradients().values():
            g[...] = 0

    def _store_grad(self, name, value):
        """grads[name] <- value, copied into the array already there (or the slot that
        :meth:`flatten_parameters` made) when it has the right shape, dtype and device."""
        g = self.grads.get(name)
        if g is None:
            g = self._grad_slots.get(name)
        if g is None or g.shape != value.shape or g.dtype != value.dtype or get_xp(g) is not get_xp(value):
            self.grads[name] = value
        else:
            if g is not value:
                g[...] = value
            self.grads[name] = g

    def _zero_grads(self):
        """Zero gradients for every parameter (layers whose outputs do not depend on them)."""
        for key, p in self.params.items():
            self._store_grad(key, get_xp(p).zeros_like(p))

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        """The arguments shown inside this layer's repr (none here)."""
        return ""


def _sub(tparams, prefix):
    """The entries of tparams under ``prefix`` (dotted), with the prefix removed."""
    if not tparams:
        return None
    n = len(prefix)
    sub = {key[n:]: value for key, value in tparams.items() if key.startswith(prefix)}
    return sub or None


def _get(tparams, name):
    return None if not tparams else tparams.get(name)


def _add(a, b):
    """a + b where None stands for zero."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class Identity(Layer):
    """y = x."""

    def forward(self, x):
        return x

    def backward(self, dy, need_input_grad=True):
        return dy if need_input_grad else None

    def jvp(self, x, tx=None, tparams=None):
        return x, tx


def check_layer(obj, name: str = "model", *, optional: bool = False):
    """``obj`` when it is a :class:`Layer` (or None with ``optional``); else a TypeError naming ``name``."""
    if isinstance(obj, Layer) or (optional and obj is None):
        return obj
    raise TypeError(f"{name} must be a Layer{' or None' if optional else ''}, got {type(obj).__name__}")


class Sequential(Layer):
    """The composition y = f_L(... f_2(f_1(x))); layer i is named ``"i"``.

    Parameters
    ----------
    *layers : Layer

    Notes
    -----
    backward applies the chain rule in reverse order, dx = J_1^T (J_2^T ( ... J_L^T dy)), and
    jvp in forward order, ty = J_L (... J_1 tx) plus each layer's parameter tangent term.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):  # Keras's Sequential([...]): say how to call it
            raise TypeError(f"layers must be given one by one, Sequential(*layers), got one {type(layers[0]).__name__}")
        for i, layer in enumerate(layers):
            check_layer(layer, f"layers[{i}]")
        self.layers = list(layers)

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy, need_input_grad=True):
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            dy = self.layers[i].backward(dy, need_input_grad=need_input_grad or i > 0)
        return dy if need_input_grad else None

    def jvp(self, x, tx=None, tparams=None):
        for i, layer in enumerate(self.layers):
            x, tx = layer.jvp(x, tx, _sub(tparams, f"{i}."))
        return x, tx

    def extra_repr(self):
        return "\n" + "".join(f"  ({i}) {layer!r}\n" for i, layer in enumerate(self.layers))


class Linear(Layer):
    """Affine map y = x W + b on flat inputs.

    Parameters
    ----------
    in_features, out_features : int
        d_in and d_out.
    bias : bool
        Whether to add b.
    init : str or float
        See the module notes (default He).
    rng : None, int or Generator
    dtype : float32 or float64

    Attributes
    ----------
    params["W"] : array of shape (d_in, d_out)
    params["b"] : array of shape (d_out,)

    Notes
    -----
    Forward y = x W + b with x of shape (N, d_in); backward dW = x^T dy, db = sum_n dy_n,
    dx = dy W^T; forward mode ty = tx W + x tW + tb.
    """

    def __init__(self, in_features, out_features, *, bias=True, init="he", rng=None, dtype=np.float64):
        super().__init__()
        self.in_features = check_integer(in_features, "in_features", minimum=1)
        self.out_features = check_integer(out_features, "out_features", minimum=1)
        dtype = check_dtype(dtype)
        self.params["W"] = init_weight((self.in_features, self.out_features), self.in_features, init, rng, dtype)
        if check_bool(bias, "bias"):
            self.params["b"] = np.zeros(self.out_features, dtype=dtype)

    def _check(self, x, name="x"):
        check_real(x, name)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{name} must have shape (N, {self.in_features}) for Linear({self.in_features}, "
                             f"{self.out_features}), got {tuple(x.shape)}")

    def _affine(self, x, W, b):
        y = get_xp(x).empty((x.shape[0], W.shape[1]), dtype=W.dtype)
        gemm(x, W, y)
        if b is not None:
            y += b
        return y

    def forward(self, x):
        self._check(x)
        W = self.params["W"]
        x, dx_dtype = _cast_in(x, W.dtype)  # computed in the parameters' dtype (module notes)
        self._cache = (x, dx_dtype)
        return self._affine(x, W, self.params.get("b"))

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        x, dx_dtype = self._cache
        xp = get_xp(dy)
        W = self.params["W"]
        dy = _cast(dy, W.dtype)
        self._store_grad("W", gemm(x.T, dy, xp.empty_like(W)))
        if "b" in self.params:
            self._store_grad("b", dy.sum(axis=0))
        if not need_input_grad:
            return None
        return _cast(gemm(dy, W.T, xp.empty_like(x)), dx_dtype)

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        x, dtype = self._cache[0], y.dtype
        ty = None
        if tx is not None:
            self._check(tx, "tx")
            ty = self._affine(_cast(tx, dtype), self.params["W"], None)
        tparams = _cast_tangents(tparams, dtype)
        tW, tb = _get(tparams, "W"), _get(tparams, "b")
        if tW is not None:
            ty = _add(ty, self._affine(x, tW, None))
        if tb is not None and "b" in self.params:
            ty = _add(ty, get_xp(y).broadcast_to(tb, y.shape))
        return y, ty

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'b' in self.params}"


class Activation(Layer):
    """The pointwise nonlinearity y = sigma(x) of :mod:`shallow.activations`.

    Parameters
    ----------
    sigma : str or shallow.activations.Activation
        ``"relu"``, ``"tanh"``, ``get_activation("relu_power", alpha=2)``, ...

    Notes
    -----
    backward dx = sigma'(x) dy, forward mode ty = sigma'(x) tx, with the conventions of
    :mod:`shallow.activations` at kinks (relu'(0) = 0). relu takes a fast path (``maximum`` and
    a mask) with the same values.
    """

    def __init__(self, sigma="relu"):
        super().__init__()
        self.sigma = as_activation(sigma, "sigma")
        self._relu = self.sigma.name == "relu"

    def forward(self, x):
        check_real(x)  # as Flatten and Dropout: a list or a complex array failed deep in numpy or passed
        if self._relu:
            y = get_xp(x).maximum(x, 0)
            # relu'(x) = 1{x > 0} = 1{y > 0}, formed while y is in cache: the backward pass then
            # reads a quarter of y's bytes (float32), and y itself is not kept alive by this layer
            self._cache = y > 0
            return y
        self._cache = x
        return self.sigma(x)

    def _derivative(self):
        if self._cache is None:
            raise _missing_cache(self)
        if self._relu:
            return self._cache
        return self.sigma.derivative(self._cache)

    def backward(self, dy, need_input_grad=True):
        if not need_input_grad:
            return None
        d = self._derivative()
        return get_xp(dy).multiply(dy, d, dtype=dy.dtype)

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        if tx is None:
            return y, None
        return y, get_xp(tx).multiply(tx, self._derivative(), dtype=tx.dtype)

    def extra_repr(self):
        return repr(self.sigma)


class Flatten(Layer):
    """(N, H, W, C) -> (N, H W C), in channels-last (C-contiguous) order."""

    def forward(self, x):
        check_real(x)
        if x.ndim < 1:
            raise ValueError("x must be a batch with its samples on the first axis, got a 0-d array")
        self._cache = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: ambiguous for an empty batch

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        return dy.reshape(self._cache) if need_input_grad else None

    def jvp(self, x, tx=None, tparams=None):
        return self.forward(x), (None if tx is None else tx.reshape(tx.shape[0], math.prod(tx.shape[1:])))


class Dropout(Layer):
    """Inverted dropout: y = m * x / (1 - p) with m_i ~ Bernoulli(1 - p) in train mode, y = x in eval mode.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of dropping a unit.
    rng : None, int or Generator
        The layer's own generator (``rngs["mask"]``), saved in checkpoints. Masks are drawn on the
        host and moved to the device, so a seed gives the same masks everywhere.

    Notes
    -----
    backward dx = m dy / (1 - p) and forward mode ty = m tx / (1 - p), with the mask of the
    last forward pass.
    """

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p < 1:
            raise ValueError(f"p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.rngs["mask"] = check_random_state(rng)

    def forward(self, x):
        check_real(x)
        if not self.training or self.p == 0:
            self._cache = None
            return x
        xp = get_xp(x)
        keep = self.rngs["mask"].random(x.shape) >= self.p
        mask = xp.asarray((keep / (1.0 - self.p)).astype(x.dtype))
        self._cache = mask
        return x * mask

    def backward(self, dy, need_input_grad=True):
        if self._out_shape is None:  # _cache is None in eval mode too: the recorded output tells them apart
            raise _missing_cache(self)
        if not need_input_grad:
            return None
        return dy if self._cache is None else dy * self._cache

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        if tx is None or self._cache is None:
            return y, tx
        return y, tx * self._cache

    def extra_repr(self):
        return f"p={self.p}"


class Residual(Layer):
    """A residual block y = body(x) + shortcut(x) (identity shortcut by default).

    Parameters
    ----------
    body : Layer
    shortcut : Layer or None
        A projection (say a strided 1x1 convolution) when the body changes the shape.

    Notes
    -----
    backward dx = J_body^T dy + J_shortcut^T dy; forward mode ty = J_body t + J_shortcut t.
    The nonlinearity after the sum of He et al. (2016) is a separate layer in a Sequential.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        check_layer(body, "body")
        check_layer(shortcut, "shortcut", optional=True)
        self.body = body
        self.shortcut = Identity() if shortcut is None else shortcut

    def children(self):
        return [("body", self.body), ("shortcut", self.shortcut)]

    def forward(self, x):
        check_real(x)
        y = self.body.forward(x)
        s = self.shortcut.forward(x)
        if y.shape != s.shape:
            raise ValueError(f"the body of the residual block maps x of shape {tuple(x.shape)} to "
                             f"{tuple(y.shape)} but the shortcut to {tuple(s.shape)}: give a shortcut "
                             "projection with the body's output shape")
        return y + s

    def backward(self, dy, need_input_grad=True):
        dx = self.body.backward(dy, need_input_grad)
        ds = self.shortcut.backward(dy, need_input_grad)
        return _add(dx, ds) if need_input_grad else None

    def jvp(self, x, tx=None, tparams=None):
        y, ty = self.body.jvp(x, tx, _sub(tparams, "body."))
        s, ts = self.shortcut.jvp(x, tx, _sub(tparams, "shortcut."))
        return y + s, _add(ty, ts)
