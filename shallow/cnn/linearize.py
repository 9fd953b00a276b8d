r"""The tangent (linearised) model of a CNN around its initialisation.

For a model f(x; theta) and a reference point theta_0,

    f_lin(x; theta) = f(x; theta_0) + J(x; theta_0) (theta - theta_0),    J = df/dtheta,

is the first-order Taylor expansion in the parameters: the model that gradient descent trains in
the lazy regime (alpha -> infinity, Chizat, Oyallon and Bach 2019, Sec. 2), and whose training
is kernel regression with the tangent kernel K(x, x') = J(x) J(x')^T (Jacot, Gabriel and Hongler
2018).

How it is computed
------------------
Forward-mode differentiation, layer by layer: every layer implements ``jvp(x, tx, tparams)``, the
pair (y, ty) of its value and its Jacobian-vector product (``shallow.cnn.layers``), and a
``Sequential`` chains them, so that one pass computes f(x; theta_0) and J (theta - theta_0) at
about twice the cost of a forward pass (a convolution is bilinear: ty = conv(tx, W) + conv(x, tW)).
The gradient of a loss of f_lin with respect to theta is J^T dL/df: the ordinary backward pass
of the model at theta_0, which the jvp pass has prepared (each layer caches its primal values).
No second-order derivative (and no double-backward trick) is needed.

The reference network is a frozen deep copy taken at :func:`linearize`: training the returned
model, or the original one, does not move theta_0. Batch normalisation in train mode is
linearised with its batch statistics (the statistics of the batch at theta_0, and their own
tangents); in eval mode the running statistics of the copy are used.

Hence, with batch normalisation, compare a trained network and its linearisation in train mode
(or build the model with ``batch_norm=False``, as ``studies/cnn_lazy_vs_meanfield.py`` does). In
eval mode the network uses running statistics that training has moved by O(1/alpha), which the
output scale alpha multiplies back to O(1), while the linearisation keeps theta_0's: measured on
digits (vgg, width 4), the RMS gap between the two stays at 0.12 for alpha = 10^2 ... 10^4 in eval
mode and falls like 1/alpha in train mode (0.018 at alpha = 100, 0.0039 at 1000).

The tangent kernel Theta(x, x') = J(x) J(x')^T, a K x K matrix for a model of K outputs, is
:func:`tangent_kernel`: training f_lin by gradient descent on the square loss is kernel gradient
descent with it (on the K outputs of every image at once; they are coupled, the off-diagonal
blocks being no smaller than the diagonal ones' spread).

References
----------
1. L. Chizat, E. Oyallon and F. Bach, "On lazy training in differentiable programming",
   NeurIPS 2019, arXiv:1812.07956, Sec. 2 (the linearised model, Eq. 4).
2. A. Jacot, F. Gabriel and C. Hongler, "Neural tangent kernel", NeurIPS 2018, arXiv:1806.07572.
3. J. Lee et al., "Wide neural networks of any depth evolve as linear models under gradient
   descent", NeurIPS 2019, arXiv:1902.06720, Eq. 6 (training the linearised network).
"""

from __future__ import annotations

import copy

from ..backend import get_xp
from .layers import Layer, _rng_states, _running_buffers, _set_rng_states, check_layer
from .models import _inputs_checked, _n_outputs, check_images

__all__ = ["Linearized", "linearize", "tangent_kernel"]


class Linearized(Layer):
    """f_lin(x; theta) = f(x; theta_0) + J(x; theta_0) (theta - theta_0) (module notes).

    Parameters
    ----------
    model : Layer
        The model f; its current parameters are theta_0. It is deep-copied and frozen.

    Attributes
    ----------
    base : Layer
        The frozen copy of the model at theta_0 (its parameters are buffers of this layer).
    params : dict of str -> array
        theta, with the names of ``model.named_parameters()``; initially copies of theta_0.

    Notes
    -----
    forward computes (f(x; theta_0), J (theta - theta_0)) in one jvp pass; backward is the
    model's backward at theta_0, dtheta = J^T dy, dx = (df/dx)^T dy at theta_0 (the derivative of
    f_lin in x would need second derivatives: ``jvp`` with an input tangent is refused). ``jvp``
    with parameter tangents takes two passes of the model at theta_0 with the state of one: the
    same dropout masks in both, and the running statistics moved once, as by ``forward``.
    theta - theta_0 is formed from the stored theta: in float32 its O(1/alpha) size is known to
    eps32 |theta| only, as for the model itself (:class:`~shallow.cnn.models.Model`, precision at
    large alpha).
    """

    def __init__(self, model):
        super().__init__()
        check_layer(model)
        self.base = copy.deepcopy(model)
        self.base.frozen = True
        for attribute in ("in_shape", "n_classes", "alpha", "centering"):
            if hasattr(model, attribute):
                setattr(self, attribute, getattr(model, attribute))
        self.params = {name: p.copy() for name, p in self.base.named_parameters().items()}

    def children(self):
        return [("base", self.base)]

    def delta(self) -> dict:
        """theta - theta_0 by parameter name."""
        ref = self.base.named_parameters()
        return {name: p - ref[name] for name, p in self.params.items()}

    def forward(self, x):
        y, ty = self.base.jvp(x, None, self.delta())
        return y if ty is None else y + ty

    def backward(self, dy, need_input_grad=True):
        dx = self.base.backward(dy, need_input_grad)
        for name, g in self.base.named_gradients().items():
            self._store_grad(name, g)
        return dx

    def jvp(self, x, tx=None, tparams=None):
        """(f_lin(x; theta), J tparams): f_lin is linear in theta, so its tangent is J ttheta."""
        if tx is not None:
            raise NotImplementedError("the input derivative of a linearised model needs second derivatives "
                                      "of the network: only parameter tangents are supported (tx=None)")
        if tparams:
            self._check_tangents(tparams)
        rngs = _rng_states(self.base) if tparams else []
        delta = self.delta()
        y, ty = self.base.jvp(x, None, delta)
        f = y if ty is None else y + ty
        if not tparams:
            return f, None
        # the second pass is the derivative of the first: it draws the same dropout masks (the
        # generators are rewound) and leaves the batch-norm running statistics as the first left them
        buffers = [(b, b.copy()) for b in _running_buffers(self.base)]
        _set_rng_states(rngs)
        _, tf = self.base.jvp(x, None, tparams)
        for b, saved in buffers:
            b[...] = saved
        return f, tf

    def _check_tangents(self, tparams):
        """Names of the parameter tangents (a misspelt name would count as a zero tangent; their
        shapes are checked by every layer's jvp, :class:`~shallow.cnn.layers.Layer`)."""
        unknown = sorted(set(tparams) - set(self.params))
        if unknown:
            raise ValueError(f"tparams has names {unknown[:3]} that are not parameters of the linearised model "
                             f"(its parameters: {sorted(self.params)[:3]}{', ...' if len(self.params) > 3 else ''})")

    def extra_repr(self):
        return f"base={self.base!r}"


def linearize(model) -> Linearized:
    """The tangent model of ``model`` at its current parameters theta_0 (:class:`Linearized`).

    Parameters
    ----------
    model : Layer
        Usually a :class:`~shallow.cnn.models.Model` (centred, with output scale alpha).

    Returns
    -------
    Linearized
        A layer with the same parameter names, trainable with the same optimisers and loop.

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn.models import build_model
    >>> model = build_model("vgg", (8, 8), 10, width=4, rng=0, centering="frozen")
    >>> lin = linearize(model)
    >>> x = np.random.default_rng(1).standard_normal((4, 8, 8, 1))
    >>> bool(np.allclose(lin(x), model(x)))
    True
    """
    return Linearized(model)


def _jacobian(model, X, K, P):
    """J (n, K, P): the gradients of the K outputs of each image in the P parameters, one image at a time."""
    xp = get_xp(X)
    J = xp.zeros((X.shape[0], K, P), dtype=X.dtype)
    if P == 0:
        return J
    for i in range(X.shape[0]):
        out = model.forward(X[i:i + 1])  # (1, K)
        for k in range(K):  # backward again after one forward: each layer keeps its cache
            dy = xp.zeros_like(out)
            dy[0, k] = 1
            model.backward(dy, need_input_grad=False)
            J[i, k] = xp.concatenate([g.reshape(-1) for g in model.named_gradients().values()])
    return J


def tangent_kernel(model, X, Y=None):
    r"""The tangent kernel Theta(x, y) = J(x) J(y)^T of a model at its current parameters.

    Parameters
    ----------
    model : Layer
        A model of K outputs (a :class:`~shallow.cnn.models.Model`, its :func:`linearize`, ...). It
        runs in eval mode (batch normalisation with its running statistics, no dropout): the kernel
        of the function it computes on one image at a time. Its mode and gradients are restored.
    X : array of shape (n, H, W, C)
    Y : array of shape (n', H, W, C), optional
        Default X (then Theta is computed from one Jacobian, and is symmetric).

    Returns
    -------
    Theta : array of shape (n, n', K, K)
        Theta[i, j, k, l] = <d f_k(x_i) / d theta, d f_l(y_j) / d theta>, on the model's device and in
        its dtype.

    Notes
    -----
    J(x) (K x P) holds the gradients of the outputs in all P trained parameters, one backward pass
    per output and image (n K of them, after n forward passes of one image): O(n K P) memory for the
    Jacobian, and a cost of n K backward passes of one image. For a Linearized model, J is the
    Jacobian at theta_0, constant in training.

    Gradient descent with step eta on the square loss (1/2n) sum_i |f(x_i) - y_i|^2 moves the
    outputs of the tangent model by F <- F - (eta / n) Theta (F - Y) in the flattened (n K) form
    ``Theta.transpose(0, 2, 1, 3).reshape(n * K, n * K)``: kernel regression and the kernel flow
    (:func:`shallow.lazy.kernel_regression`, :func:`shallow.lazy.kernel_flow` with
    ``time_scale=K``, whose n counts the n K flattened targets) predict its training. The average
    of the diagonal blocks, ``np.trace(Theta, axis1=2, axis2=3) / K``, is the kernel shared by the
    outputs when the off-diagonal blocks are neglected.

    References
    ----------
    1. A. Jacot, F. Gabriel and C. Hongler, arXiv:1806.07572 (the neural tangent kernel).
    2. L. Chizat, E. Oyallon and F. Bach, arXiv:1812.07956, Sec. 2 (lazy training is kernel regression).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn.models import build_model
    >>> model = build_model("vgg", (8, 8), 3, width=2, rng=0)
    >>> Theta = tangent_kernel(model, np.random.default_rng(1).standard_normal((4, 8, 8, 1)))
    >>> Theta.shape, bool(np.allclose(Theta, Theta.transpose(1, 0, 3, 2)))
    ((4, 4, 3, 3), True)
    """
    check_layer(model)
    in_shape = getattr(model, "in_shape", None)
    params = model.named_parameters()
    dtype = next(iter(params.values())).dtype if params else None
    X = check_images(X, "X", in_shape, dtype=dtype)
    same = Y is None
    if not same:
        Y = check_images(Y, "Y", in_shape or tuple(X.shape[1:]), dtype=dtype)
    P = sum(int(p.size) for p in params.values())
    mode = model.training
    saved = {name: g.copy() for name, g in model.named_gradients().items()}
    model.eval()
    try:
        with _inputs_checked(model):  # checked above, at once: not an isfinite (a device wait) per image
            K = _n_outputs(model, X if X.shape[0] or same else Y)
            JX = _jacobian(model, X, K, P)  # (n, K, P)
            JY = JX if same else _jacobian(model, Y, K, P)  # (n', K, P)
    finally:
        model.train(mode)
        for name, g in model.named_gradients().items():
            if name in saved:
                g[...] = saved[name]
    n, n2 = JX.shape[0], JY.shape[0]
    A = JX.reshape(n * K, P)
    B = A if same else JY.reshape(n2 * K, P)
    return (A @ B.T).reshape(n, K, n2, K).transpose(0, 2, 1, 3)

