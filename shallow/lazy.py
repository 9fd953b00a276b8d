r"""Lazy training: the linearisation of a two-layer network at its initialisation, its tangent kernel,
kernel gradient flow in closed form, and diagnostics of how lazy a training run was.

A two-layer network f(x; theta) = gamma sum_{j<=m} a_j sigma(<w_j, x>), theta = (a, W), has the
tangent (linearised) model at theta_0

    f_lin(x; theta) = f(x; theta_0) + <grad_theta f(x; theta_0), theta - theta_0>
                    = gamma sum_j [ a_j sigma(<w0_j, x>) + a0_j sigma'(<w0_j, x>) <w_j - w0_j, x> ]

(the second line uses f(x; theta_0) = gamma sum_j a0_j sigma(<w0_j, x>)), a model linear in theta
whose gradient flow on the square loss is a kernel gradient flow with the empirical neural tangent
kernel K_0(x, y) = <grad_theta f(x; theta_0), grad_theta f(y; theta_0)>. Training is *lazy* when the
network follows its linearisation all along the flow.

When is training lazy? (Chizat, Oyallon and Bach 2019, Sec. 2)
-----------------------------------------------------------------
Write a model as alpha h(w) with a scale alpha > 0 and a target y*. The paper's criterion is

    kappa_h(w_0) = alpha^{-1} |alpha h(w_0) - y*| Lip(Dh) / |Dh(w_0)|^2,

the relative change of the differential Dh over the distance |Dh(w_0)|^{-1} |alpha h(w_0) - y*| / alpha
that the parameters must travel to fit y* to first order; kappa -> 0 makes the training lazy (the
parameters move by O(1/alpha) and alpha h follows its tangent model's flow). For the two-layer network,

    f(x; theta) = gamma m h(theta)(x),  h(theta) = (1/m) sum_j phi(theta_j, .),  phi(theta_j, x) = a_j sigma(<w_j, x>),

so alpha = gamma m, with theta_j = (a_j, w_j) i.i.d. of order 1 and norms in L2 of the inputs' law:

* |Dh(theta_0)|^2 is the largest eigenvalue of the tangent kernel of h,
  (1/m^2) sum_j <grad phi(theta_j, x), grad phi(theta_j, y)> ~ (1/m) E_theta[<grad phi(theta, x), grad phi(theta, y)>],
  so |Dh(theta_0)|^2 ~ 1/m;
* D^2 h is block diagonal, one block (1/m) D^2 phi(theta_j, .) per neuron, so
  Lip(Dh) = sup |D^2 h| ~ (1/m) sup_j |D^2 phi(theta_j, .)| ~ 1/m (for relu, D^2 phi is a measure on
  the hyperplane <w_j, x> = 0, and the bound holds for its action in L2: a neuron's pattern flips on a
  set of inputs of measure proportional to the move of w_j);
* with the centred initialisation (:func:`centered`) h(theta_0) = 0, so |alpha h(theta_0) - y*| = |y*| = O(1).

Hence

    kappa ~ (1/alpha) |y*| (1/m) / (1/m) = |y*| / (gamma m).

Training is lazy as m -> infinity whenever gamma(m) m -> infinity: for gamma = m^{-1/2} (NTK)
kappa ~ m^{-1/2}; for gamma = alpha/m, kappa ~ 1/alpha; for gamma = m^{-beta}, kappa ~ m^{beta - 1};
only the mean-field scale gamma = 1/m (beta = 1) keeps kappa of order 1. (The seed lecture's slide
writes "gamma(n) = o(1/sqrt(n)) => laziness"; the condition is gamma(m) m -> infinity, Reference 1,
Sec. 2: gamma = m^{-3/4} is lazy, gamma = 1/m, also o(1/sqrt(m)), is not.) The same count gives the
relative weight change: fitting needs gamma m Dh(theta_0) dtheta ~ y*, so |dtheta| ~ |y*| / (gamma m |Dh|)
~ |y*| / (gamma sqrt(m)), while |theta_0| ~ sqrt(m (1 + D)): |theta_T - theta_0| / |theta_0| ~ 1/(gamma m) ~ kappa.
The criterion measures the length of the path, not its speed: with :func:`shallow.flows.gradient_flow`'s
time scale s the function moves at rate df/dt = -(s/n) K_0 (f - y) with K_0 ~ gamma^2 m Theta
(Theta the infinite-width NTK of :func:`shallow.kernels.ntk`), so a fixed function-space time needs
a flow time proportional to 1/(s gamma^2 m) (for gamma = alpha/m and s = m: 1/alpha^2).

Conventions
-----------
Parameters theta = (a, W) with a of shape (m,) and W of shape (m, D) (D = d, or d + 1 with a bias:
inputs x are then augmented to (x, 1), written x~). Norms of parameters are Euclidean over all of
(a, W); norms of kernel matrices are Frobenius norms.

References
----------
1. L. Chizat, E. Oyallon and F. Bach, "On lazy training in differentiable programming", NeurIPS 2019,
   arXiv:1812.07956, Sec. 2 (the scaled model alpha h, the criterion kappa, centred initialisation).
2. A. Jacot, F. Gabriel and C. Hongler, "Neural tangent kernel", NeurIPS 2018, arXiv:1806.07572,
   Theorems 1-2 (the tangent kernel and its infinite-width limit).
3. A. Ali, J. Z. Kolter and R. J. Tibshirani, "A continuous-time view of early stopping for least
   squares regression", AISTATS 2019, arXiv:1810.10082, Sec. 3 (kernel gradient flow against ridge).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from ._validation import (
    check_array,
    check_bool,
    check_integer,
    check_nonnegative,
    check_samples,
    check_positive,
    check_symmetric,
)
from .backend import device_of, get_xp, linalg_errors, scipy_for, sum_of_squares_parts, to_numpy
from .networks import BLOCK_BYTES, MIN_ROWS, TwoLayer, _block_bytes, _check_gamma

__all__ = [
    "linearize",
    "Linearized",
    "LinearizedRisk",
    "empirical_ntk",
    "kernel_flow",
    "kernel_regression",
    "KernelPrediction",
    "centered",
    "centered_init",
    "scaled",
    "relative_weight_change",
    "relative_kernel_change",
    "activation_flips",
    "LazyDiagnostics",
]

_TRAIN = ("both", "outer", "inner")
#: Default memory in bytes for the cached tangent features sigma(Z_0), sigma'(Z_0) of a training set.
CACHE_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------- helpers

def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number (the lazy-training output scale), got {alpha!r}")
    return float(alpha)


def _check_train(train) -> str:
    if train not in _TRAIN:
        raise ValueError(f"train must be one of {_TRAIN} (which layer's gradient enters the kernel), got {train!r}")
    return train


def _check_two_layer(net) -> TwoLayer:
    """net, refused unless a TwoLayer: a Linearized model is named, with its two networks."""
    if isinstance(net, Linearized):
        raise TypeError("net is a linearised model: pass net.network() (its current parameters) or net.base "
                        "(its anchor theta_0)")
    if not isinstance(net, TwoLayer):
        raise TypeError(f"net must be a shallow.networks.TwoLayer, got {type(net).__name__}")
    return net


def _as_network(net, name="net") -> TwoLayer:
    """The nonlinear network behind ``net`` (a TwoLayer, or the anchor of a Linearized model)."""
    if isinstance(net, Linearized):
        return net.base
    if isinstance(net, TwoLayer):
        return net
    raise TypeError(f"{name} must be a shallow.networks.TwoLayer or a shallow.lazy.Linearized model, "
                    f"got {type(net).__name__}")


def _augment(net: TwoLayer, X, name="X"):
    """X~ = X, or [X, 1] with a bias column: the inputs that multiply the rows of W. Shape (n, D)."""
    X = net._check_X(X, name)
    if net.bias:
        xp = get_xp(X)
        X = xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)
    return X


def _chunk_rows(chunk_size, m: int, itemsize: int) -> int:
    """Rows per block: ``chunk_size`` if given, else so that a (rows, m) block takes ~BLOCK_BYTES,
    but at least MIN_ROWS (fewer rows make the GEMMs inefficient)."""
    if chunk_size is None:
        return max(MIN_ROWS, BLOCK_BYTES // max(1, m * itemsize))
    return check_integer(chunk_size, "chunk_size", minimum=1)


def _features(sigma, Z):
    """sigma(Z) and sigma'(Z) in the dtype of Z (the derivative may come back as bool or another dtype)."""
    S = sigma(Z)
    P = sigma.derivative(Z)
    if S.dtype != Z.dtype:
        S = S.astype(Z.dtype)
    if P.dtype != Z.dtype:
        P = P.astype(Z.dtype)
    return S, P


def _norm(*arrays) -> float:
    """The Euclidean norm of all the entries, scaled by a power of 2 (exact) near the largest |entry|
    (:func:`shallow.backend.sum_of_squares_parts`): the plain sum of squares underflows below 1e-154
    (1e-19 in float32) and overflows beyond 1e154."""
    S, e = sum_of_squares_parts(arrays)
    return math.ldexp(math.sqrt(S), e)


# ----------------------------------------------------------------------------- the tangent model

class _TangentActivation:
    """The ``activation`` of a :class:`Linearized` model: a guard that refuses to be evaluated.

    :class:`shallow.flows.EmpiricalRisk` evaluates sigma(<w_j, x>) at the moving parameters, which
    for a linearised model would silently train the nonlinear network; this object makes that an
    error. The base activation is ``base`` (also ``Linearized.sigma``).
    """

    homogeneity = None
    breakpoints = ()

    def __init__(self, base):
        self.base = base
        self.name = f"tangent of {getattr(base, 'name', type(base).__name__)}"

    def _refuse(self, *args, **kwargs):
        raise TypeError("a linearised model (shallow.lazy.Linearized) is trained with "
                        "shallow.lazy.LinearizedRisk(X, y): EmpiricalRisk and PopulationRisk evaluate the "
                        "nonlinear network, not the tangent model")

    __call__ = _refuse
    derivative = _refuse

    def __repr__(self):
        return f"<{self.name}>"


class Linearized:
    r"""The tangent model f_lin(x; theta) = f(x; theta_0) + <grad_theta f(x; theta_0), theta - theta_0>.

    Build with :func:`linearize`. It carries the same attributes as a :class:`~shallow.networks.TwoLayer`
    that :func:`shallow.flows.gradient_flow` reads (``a``, ``W``, ``gamma``, ``bias``, ``activation``,
    ``copy()``), so that ``gradient_flow(linearize(net), LinearizedRisk(X, y), ...)`` trains it with
    the same integrators, time scale, checkpoints and callbacks as the network itself.

    Parameters
    ----------
    base : TwoLayer
        The network at theta_0 = (a0, W0) (kept as given: :func:`linearize` passes a copy).
    a : array of shape (m,), optional
        Current outer weights (default a copy of a0).
    W : array of shape (m, D), optional
        Current inner weights (default a copy of W0).

    Attributes
    ----------
    base : TwoLayer
        The anchor network; ``a0``, ``W0`` are its parameters (never modified).
    a, W : arrays
        The current parameters theta.
    gamma, bias : as the base network's.
    sigma : activation object
        The base network's activation.
    activation : object
        A guard whose evaluation raises (see :class:`LinearizedRisk`): a flow must not evaluate the
        nonlinear network at the linear model's parameters by mistake.

    Notes
    -----
    With Z0 = X~ W0^T (n, m), S0 = sigma(Z0), P0 = sigma'(Z0) and U = X~ (W - W0)^T,

        f_lin(X; a, W) = gamma [ S0 a + (P0 * U) a0 ],

    computed in chunks of samples (no (n, m, D) array). Its gradients are those of the network at
    theta_0, for any theta: grad_a = gamma S0^T r, grad_W = gamma diag(a0) (P0 * r[:, None])^T X~
    (for the weights r of a linear functional sum_i r_i f_lin(x_i)).
    """

    def __init__(self, base: TwoLayer, a=None, W=None):
        if not isinstance(base, TwoLayer):
            raise TypeError(f"base must be a shallow.networks.TwoLayer, got {type(base).__name__}")
        self.base = base
        xp = base.xp
        if a is not None:
            a = check_array(a, "a", ndim=1)
            get_xp(base.a, a)
        if W is not None:
            W = check_array(W, "W", ndim=2)
            get_xp(base.W, W)
        self.a = base.a.copy() if a is None else xp.asarray(a, dtype=base.dtype)  # (m,)
        self.W = base.W.copy() if W is None else xp.asarray(W, dtype=base.dtype)  # (m, D)
        if self.a.shape != base.a.shape or self.W.shape != base.W.shape:
            raise ValueError(f"a and W must have the anchor's shapes {tuple(base.a.shape)} and {tuple(base.W.shape)}, "
                             f"got {tuple(self.a.shape)} and {tuple(self.W.shape)}")
        self.gamma = base.gamma
        self.bias = base.bias
        self.sigma = base.activation
        self.activation = _TangentActivation(base.activation)

    # descriptors, as TwoLayer's
    a0 = property(lambda self: self.base.a, doc="Outer weights at the anchor theta_0, shape (m,).")
    W0 = property(lambda self: self.base.W, doc="Inner weights at the anchor theta_0, shape (m, D).")
    m = property(lambda self: self.base.m, doc="Number of neurons.")
    d = property(lambda self: self.base.d, doc="Input dimension.")
    dtype = property(lambda self: self.base.dtype, doc="The dtype of the parameters (that of the anchor's W).")
    device = property(lambda self: device_of(self.W), doc='``"cpu"`` or ``"gpu"``: where the parameters live.')
    xp = property(lambda self: get_xp(self.a, self.W), doc="The array module of the parameters (numpy or cupy).")

    @property
    def parameters(self):
        """The pair (a, W), of shapes (m,) and (m, D)."""
        return self.a, self.W

    def copy(self) -> Linearized:
        """A tangent model at the same anchor (shared, never modified) with copies of a and W."""
        return type(self)(self.base, self.a.copy(), self.W.copy())

    def network(self) -> TwoLayer:
        """The nonlinear network f(.; theta) at the current parameters (copies of a and W)."""
        return TwoLayer(self.a.copy(), self.W.copy(), activation=self.sigma, gamma=self.gamma, bias=self.bias)

    def __repr__(self) -> str:
        return (f"Linearized(m={self.m}, d={self.d}, activation={getattr(self.sigma, 'name', self.sigma)!r}, "
                f"gamma={self.gamma:.6g}, bias={self.bias}, dtype={np.dtype(self.dtype).name}, device={self.device!r})")

    def __call__(self, X, chunk_size=None):
        """f_lin(x_i; theta) for every row of X.

        Parameters
        ----------
        X : array of shape (n, d)
        chunk_size : int, optional
            Samples per block; by default the two (chunk, m) blocks sigma(X~ W0^T) and sigma'(X~ W0^T)
            take about ``networks.BLOCK_BYTES`` together, with at least ``networks.MIN_ROWS`` rows.

        Returns
        -------
        array of shape (n,)
        """
        return self._value(_augment(self.base, X), self.a, self.W, chunk_size)

    def _value(self, Xt, a, W, chunk_size=None):
        xp = get_xp(Xt, a, W)
        base = self.base
        n = Xt.shape[0]
        out = xp.empty(n, dtype=base.dtype)  # (n,)
        dW = W - base.W  # (m, D)
        step = _chunk_rows(chunk_size, base.m, 2 * np.dtype(base.dtype).itemsize)
        for start in range(0, n, step):
            Xc = Xt[start:start + step]  # (chunk, D)
            Z = Xc @ base.W.T  # (chunk, m)
            S, P = _features(self.sigma, Z)  # (chunk, m) each
            if all(F is not Z and getattr(F, "base", None) is not Z for F in (S, P)):
                P *= xp.matmul(Xc, dW.T, out=Z)  # Z's block reused: three (chunk, m) blocks, not four
            else:  # an activation that returned Z itself (or a view of it)
                P *= Xc @ dW.T
            out[start:start + step] = S @ a + P @ base.a
            del Z, S, P  # before the next chunk's blocks are made
        out *= self.gamma
        return out


def linearize(net) -> Linearized:
    r"""The tangent model of ``net`` at its current parameters theta_0 (a copy is kept as the anchor).

    Parameters
    ----------
    net : TwoLayer
        The network at theta_0 (left unchanged).

    Returns
    -------
    Linearized
        A model with f_lin(x; theta_0) = f(x; theta_0) and grad f_lin = grad f(.; theta_0) everywhere;
        train it with ``gradient_flow(lin, LinearizedRisk(X, y), ...)``.

    Notes
    -----
    f_lin(x; theta) = f(x; theta_0) + <grad_theta f(x; theta_0), theta - theta_0>: f - f_lin = O(|theta - theta_0|^2)
    for a smooth sigma (and for relu away from the kinks).

    References
    ----------
    1. L. Chizat, E. Oyallon and F. Bach, arXiv:1812.07956, Sec. 2 (the tangent model).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.networks import TwoLayer
    >>> net = TwoLayer.init(50, 3, scale="ntk", rng=0)
    >>> lin = linearize(net)
    >>> X = np.eye(3)
    >>> bool(np.allclose(lin(X), net(X)))       # equal at theta_0
    True
    """
    if isinstance(net, Linearized):
        raise TypeError("net is already a linearised model; linearize the TwoLayer network (net.base)")
    if not isinstance(net, TwoLayer):
        raise TypeError(f"net must be a shallow.networks.TwoLayer, got {type(net).__name__}")
    return Linearized(net.copy())


class LinearizedRisk:
    r"""Empirical square risk R = 1/(2n) sum_i (f_lin(x_i; theta) - y_i)^2 of a tangent model.

    The loss of :func:`shallow.flows.gradient_flow` for a :class:`Linearized` model (the protocol:
    ``value_and_grad(net, a, W, need_grad=True) -> (risk, grad_a, grad_W)``).

    Parameters
    ----------
    X : array of shape (n, d)
    y : array of shape (n,)
    chunk_bytes : int, optional
        Memory of one (chunk, m) block when the features are not cached. Default (None)
        :func:`shallow.networks.default_block_bytes`, as for :class:`shallow.flows.EmpiricalRisk`:
        16 MiB on the host, up to 1 GiB on a GPU.
    cache_bytes : int
        The features S0 = sigma(X~ W0^T) and P0 = sigma'(X~ W0^T), two (n, m) arrays, are computed once
        and kept when they take at most this many bytes (default 256 MiB); otherwise they are
        recomputed in chunks at every call.

    Notes
    -----
    With r = f_lin(X; theta) - y and U = X~ (W - W0)^T,

        f_lin = gamma [S0 a + (P0 * U) a0],   grad_a R = (gamma/n) S0^T r,
        grad_W R = (gamma/n) diag(a0) (P0 * r[:, None])^T X~.

    The gradients do not depend on theta except through r: the flow is linear, and on the
    training points it is the kernel gradient flow of :func:`kernel_flow` with K = K_0.

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.networks import TwoLayer
    >>> from shallow.flows import gradient_flow
    >>> net = TwoLayer.init(40, 3, scale="ntk", rng=0)
    >>> X = np.random.default_rng(1).standard_normal((10, 3)); y = X[:, 0]
    >>> traj = gradient_flow(linearize(net), LinearizedRisk(X, y), steps=20, step_size=0.01)
    >>> bool(traj.risks[-1] < traj.risks[0])
    True
    """

    def __init__(self, X, y, *, chunk_bytes: int | None = None, cache_bytes: int = CACHE_BYTES):
        X, y = check_samples(X, y)
        self.X, self.y = X, y
        self.chunk_bytes = _block_bytes(chunk_bytes, get_xp(X), "chunk_bytes")
        self.cache_bytes = check_integer(cache_bytes, "cache_bytes", minimum=0)
        self._cache = None  # (base, Xt, S0, P0) for the last anchor seen

    @property
    def n(self) -> int:
        """Number of training samples (rows of X)."""
        return self.X.shape[0]

    def __call__(self, lin) -> float:
        """The risk of the tangent model ``lin`` at its current parameters."""
        return self.value_and_grad(lin, need_grad=False)[0]

    def _prepared(self, lin):
        base = lin.base
        cache = self._cache
        if cache is not None and cache[0] is base:
            return cache
        Xt = _augment(base, self.X)  # (n, D)
        S0 = P0 = None
        if 2 * Xt.shape[0] * base.m * np.dtype(base.dtype).itemsize <= self.cache_bytes:
            S0, P0 = _features(lin.sigma, Xt @ base.W.T)  # (n, m) each
        self._cache = (base, Xt, S0, P0)
        return self._cache

    def value_and_grad(self, lin, a=None, W=None, need_grad=True):
        """Risk and its gradients (grad_a of shape (m,), grad_W of shape (m, D)) at theta = (a, W).

        ``a`` and ``W`` default to the tangent model's current parameters; ``lin`` supplies the anchor
        theta_0, gamma and sigma. With ``need_grad=False`` only the risk is computed, and both gradients
        are None.
        """
        if not isinstance(lin, Linearized):
            raise TypeError("LinearizedRisk trains a tangent model: pass shallow.lazy.linearize(net), "
                            f"got {type(lin).__name__}")
        a = lin.a if a is None else check_array(a, "a", finite=False)
        W = lin.W if W is None else check_array(W, "W", finite=False)
        if a.shape != lin.a0.shape or W.shape != lin.W0.shape:  # O(1): this runs at every step of a flow
            raise ValueError(f"a and W must have the anchor's shapes {tuple(lin.a0.shape)} and {tuple(lin.W0.shape)}, "
                             f"got {tuple(a.shape)} and {tuple(W.shape)}")
        base, Xt, S0, P0 = self._prepared(lin)
        xp = get_xp(Xt, a, W)
        y = self.y.astype(base.dtype, copy=False)
        n, m = Xt.shape[0], base.m
        gamma, a0, W0 = lin.gamma, base.a, base.W
        dW = W - W0  # (m, D)
        itemsize = np.dtype(base.dtype).itemsize
        rows = n if S0 is not None else max(1, min(n, self.chunk_bytes // max(1, 3 * m * itemsize)))
        risk = 0.0
        grad_a = xp.zeros_like(a) if need_grad else None
        grad_W = xp.zeros_like(W) if need_grad else None
        for start in range(0, n, rows):
            sl = slice(start, start + rows)
            Xc = Xt[sl]  # (chunk, D)
            if S0 is not None:
                S, P = S0, P0
            else:
                S, P = _features(lin.sigma, Xc @ W0.T)  # (chunk, m)
            r = gamma * (S @ a + (P * (Xc @ dW.T)) @ a0) - y[sl]  # (chunk,) residuals
            risk += float(r @ r)
            if need_grad:
                r *= gamma / n
                grad_a += r @ S
                grad_W += P.T @ (r[:, None] * Xc)
        if need_grad:
            grad_W *= a0[:, None]
        return 0.5 * risk / n, grad_a, grad_W


# ----------------------------------------------------------------------------- tangent kernel

def empirical_ntk(net, X, Y=None, *, train: str = "both", chunk_size=None):
    r"""The empirical neural tangent kernel K(x, y) = <grad_theta f(x; theta), grad_theta f(y; theta)>.

    Parameters
    ----------
    net : TwoLayer or Linearized
        The network (for a tangent model, its constant kernel: the network's at the anchor).
    X : array of shape (n, d)
    Y : array of shape (n', d), optional
        Default X (the Gram matrix, then exactly symmetric).
    train : {"both", "outer", "inner"}
        Which layer's parameters enter theta, as in :func:`shallow.flows.gradient_flow`.
    chunk_size : int, optional
        Rows of X (and of Y) per block; by default a (chunk, m) block takes about
        ``networks.BLOCK_BYTES``, with at least ``networks.MIN_ROWS`` rows.

    Returns
    -------
    K : array of shape (n, n')

    Notes
    -----
    grad_{a_j} f(x) = gamma sigma(<w_j, x~>) and grad_{w_j} f(x) = gamma a_j sigma'(<w_j, x~>) x~, with
    x~ = x, or (x, 1) with a bias. Hence

        K(x, y) = gamma^2 sum_j [sigma(<w_j, x~>) sigma(<w_j, y~>) + a_j^2 sigma'(<w_j, x~>) sigma'(<w_j, y~>) <x~, y~>]
                = gamma^2 [ S_X S_Y^T + (X~ Y~^T) * (P_X diag(a^2) P_Y^T) ]

    with S = sigma(X~ W^T) and P = sigma'(X~ W^T): two GEMMs over (chunk, m) blocks, memory
    O(n n' + chunk m) and never an (n, m, D) array of per-sample gradients. For i.i.d. a_j ~ N(0, 1)
    and w_j ~ N(0, I_d) (no bias), E[K] = gamma^2 m Theta with Theta = :func:`shallow.kernels.ntk`,
    and K / (gamma^2 m) - Theta is an average of m i.i.d. centred terms: O(m^{-1/2}). With a bias,
    Theta is that of the augmented inputs, ``ntk(X~, Y~, sigma)``; for rows w_j uniform on S^{D-1}
    (``TwoLayer.init(..., weights="sphere")``), ``weights="sphere"`` there. For one trained layer,
    Theta is :func:`shallow.kernels.random_feature_kernel` (``train="outer"``) or ntk minus it
    (``"inner"``, <x, y> E[sigma'(<w, x>) sigma'(<w, y>)]).

    References
    ----------
    1. A. Jacot, F. Gabriel and C. Hongler, arXiv:1806.07572, Theorem 1.

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.networks import TwoLayer
    >>> net = TwoLayer(np.array([2.0]), np.array([[1.0, 0.0]]), gamma=1.0)
    >>> empirical_ntk(net, np.array([[3.0, 4.0]]))     # relu(3)^2 + 2^2 * 1 * |x|^2 = 9 + 100
    array([[109.]])
    """
    train = _check_train(train)
    net = _as_network(net)
    Xt = _augment(net, X)  # (n, D)
    Yt = Xt if Y is None else _augment(net, Y, "Y")  # (n', D)
    xp = get_xp(Xt, Yt, net.W)
    m = net.m
    step = _chunk_rows(chunk_size, m, 2 * np.dtype(net.dtype).itemsize)
    a2 = net.a * net.a  # (m,)
    same = Y is None
    K = xp.empty((Xt.shape[0], Yt.shape[0]), dtype=net.dtype)  # (n, n')
    for js in range(0, Yt.shape[0], step):
        Yc = Yt[js:js + step]  # (chunk', D)
        SY, PY = _features(net.activation, Yc @ net.W.T)  # (chunk', m)
        PY *= a2
        # K(X, X): the blocks on and above the diagonal only, mirrored (no (n, n) temporaries)
        for i0 in range(0, js + 1 if same else Xt.shape[0], step):
            Xc = Xt[i0:i0 + step]  # (chunk, D)
            SX, PX = _features(net.activation, Xc @ net.W.T)  # (chunk, m)
            block = K[i0:i0 + step, js:js + step]  # a view
            if train == "inner":
                block[...] = (PX @ PY.T) * (Xc @ Yc.T)
            else:
                block[...] = SX @ SY.T
                if train == "both":
                    block += (PX @ PY.T) * (Xc @ Yc.T)
            if same and i0 == js:
                block[...] = 0.5 * (block + block.T)
            elif same:
                K[js:js + step, i0:i0 + step] = block.T
            del SX, PX  # before the next chunk's blocks are made
        del SY, PY
    K *= net.gamma ** 2
    return K


# ----------------------------------------------------------------------------- kernel flow and ridge

class KernelPrediction(NamedTuple):
    """Predictions of a kernel method on the training points and, when asked, on test points.

    Attributes
    ----------
    train : array of shape (n,), (T, n) for T times, (n, k) for k targets, or (T, n, k)
    test : array of shape (n_test,), (T, n_test), (n_test, k) or (T, n_test, k); None without ``K_test``
    """

    train: object
    test: object


def _check_kernel_inputs(K, y, f0, K_test, f0_test):
    """The checked arrays (xp, K, y, f0, K_test, f0_test) of a kernel problem, K symmetric."""
    K = check_array(K, "K", ndim=2)
    y = check_array(y, "y", ndim=(1, 2))  # one target, or k columns of them
    n = y.shape[0]
    if K.shape != (n, n):
        raise ValueError(f"K must be the (n, n) Gram matrix of the n={n} training points (y has shape "
                         f"{tuple(y.shape)}), got shape {tuple(K.shape)}")
    if n == 0:
        raise ValueError("y must hold at least one training target, got n=0")
    xp = get_xp(K, y)
    f0 = xp.zeros_like(y) if f0 is None else check_array(f0, "f0", ndim=y.ndim)
    if f0.shape != y.shape:
        raise ValueError(f"f0 has shape {tuple(f0.shape)} but y has shape {tuple(y.shape)}")
    if K_test is not None:
        K_test = check_array(K_test, "K_test", ndim=2)
        if K_test.shape[1] != n:
            raise ValueError(f"K_test must have shape (n_test, n) with n={n} training points, "
                             f"got {tuple(K_test.shape)}")
        test_shape = (K_test.shape[0],) + tuple(y.shape[1:])
        f0_test = xp.zeros(test_shape, dtype=K_test.dtype) if f0_test is None \
            else check_array(f0_test, "f0_test", ndim=y.ndim)
        if tuple(f0_test.shape) != test_shape:
            raise ValueError(f"f0_test has shape {tuple(f0_test.shape)} but the test predictions have shape "
                             f"{test_shape} (one row per row of K_test, one column per column of y)")
    elif f0_test is not None:
        raise ValueError("f0_test was given without K_test")
    get_xp(K, y, f0, K_test, f0_test)
    check_symmetric(K, "K", "the Gram matrix of the training points")
    return xp, K, y, f0, K_test, f0_test


def _psd_tolerance(K):
    """Relative tolerance of the semidefiniteness check: max(sqrt(eps), n eps) (n eps for a large float32 K).

    A Gram matrix is positive semidefinite: rounding leaves eigenvalues of order n eps max |lam| at worst
    below 0, an indefinite K (a negated or shifted kernel) far more; its flow grows like e^{|lam| t}
    instead of converging.
    """
    eps = float(np.finfo(K.dtype).eps)
    return max(math.sqrt(eps), K.shape[0] * eps)


def _eigen_problem(xp, K, y, f0):
    """(lam, U, coef): K = U diag(lam) U^T (symmetrised), checked semidefinite, with the eigenvalues that
    rounding left below 0 counted as 0; coef = U^T (y - f0).

    Kept below 0, such an eigenvalue made the filters grow: kernel_flow's (1 - e^{-c lam}) / lam like
    e^{c |lam|} (a long flow on a rank-deficient float32 K blew up), and kernel_regression's lam / (lam +
    n ridge) multiplied its direction of y by lam / (n ridge) for a ridge below K's rounding (80 times at
    n = 300 in float32).
    """
    lam, U = xp.linalg.eigh(0.5 * (K + K.T))
    scale = float(xp.abs(lam).max())
    if float(lam[0]) < -_psd_tolerance(K) * scale:
        raise ValueError(f"K must be positive semidefinite (the Gram matrix of the training points): its smallest "
                         f"eigenvalue is {float(lam[0]):.3g} for a largest |eigenvalue| of {scale:.3g}")
    coef = U.T @ (y - f0)  # (n,) or (n, k): the residual's coordinates in the eigenbasis
    return xp.maximum(lam, 0), U, coef


def _cholesky(xp, A):
    """The lower Cholesky factor of the symmetric A (overwritten on the host), or None where it fails."""
    if xp is np:
        from scipy import linalg
        try:
            return linalg.cholesky(A, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError:
            return None
    try:
        with linalg_errors(xp):  # else cupy returns what potrf left of a failed factorisation
            return xp.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None


def _cholesky_solve(xp, L, B):
    """(L L^T)^{-1} B for a lower-triangular L."""
    if xp is np:
        from scipy import linalg
        return linalg.cho_solve((L, True), B, check_finite=False)
    solve_triangular = scipy_for(xp, "linalg").solve_triangular
    return solve_triangular(L, solve_triangular(L, B, lower=True), lower=True, trans="T")


#: kernel_regression solves by Cholesky only where the shift n ridge is this many times the rounding level
#: n eps |K|_F of K's eigenvalues: the eigenvalues rounding may have left below 0 then change the fit by at
#: most 1e-6 of y's part along them (the eigenbasis counts them as 0), and K + shift I has a condition
#: number below 1e6 / (n eps), as accurate by Cholesky as by the eigenbasis.
_CHOLESKY_MARGIN = 1e6


def _ridge_by_cholesky(xp, K, y, shift, f0, K_test, f0_test):
    """f0 + K (K + shift I)^{-1} (y - f0) by two Cholesky factorisations, or None to take the eigenbasis.

    Only for shift >= _CHOLESKY_MARGIN delta, delta = n eps |K|_F, the rounding level of K's eigenvalues:
    smaller ridges, and float32 matrices below n ~ 10^4 (delta is then already 1e-5 |K|_F), take the
    eigenbasis. The first factorisation, of K + delta I, certifies lam_min(K) > -delta (K semidefinite up
    to rounding); the second solves the system. Each costs n^3 / 3, against about 9 n^3 for an
    eigendecomposition (the factorisations 7 times faster at n = 2000). Where either fails (K indefinite beyond
    rounding, which the eigenbasis accepts within its tolerance or refuses), None.
    """
    n = K.shape[0]
    Ks = 0.5 * (K + K.T)
    top = float(xp.abs(Ks).max())  # |K|_F as top |K / top|_F: in range for float32 entries of 1e-26 or 1e18
    delta = n * float(np.finfo(K.dtype).eps) * (top * float(xp.linalg.norm(Ks / top)) if top > 0 else 0.0)
    if not shift >= _CHOLESKY_MARGIN * delta:
        return None
    eye = xp.eye(n, dtype=K.dtype)
    if _cholesky(xp, Ks + delta * eye) is None:
        return None
    L = _cholesky(xp, Ks + shift * eye)
    if L is None:
        return None
    alpha = _cholesky_solve(xp, L, y - f0)  # (n,) or (n, k)
    return KernelPrediction(f0 + K @ alpha, None if K_test is None else f0_test + K_test @ alpha)


def _apply_filter(xp, lam, U, coef, g, f0, K_test, f0_test):
    """f = f0 + K U g(lam) U^T (y - f0) on the training points (and K_test ... on test points).

    ``g`` has shape (n,) or (T, n); targets of shape (n,) or (n, k). The training prediction uses
    lam * g directly.
    """
    if coef.ndim == 2:  # k targets at once: g (n,) or (T, n) scales the rows of coef (n, k)
        train = f0 + U @ ((lam * g)[..., None] * coef)  # (n, k) or (T, n, k)
        test = None if K_test is None else f0_test + (K_test @ U) @ (g[..., None] * coef)
        return KernelPrediction(train, test)
    train = f0 + (lam * g * coef) @ U.T
    test = None
    if K_test is not None:
        test = f0_test + (g * coef) @ (K_test @ U).T
    return KernelPrediction(train, test)


def kernel_flow(K, y, t, *, f0=None, K_test=None, f0_test=None, time_scale: float = 1.0) -> KernelPrediction:
    r"""Kernel gradient flow of the square loss, in closed form: the lazy (linearised) training dynamics.

    Parameters
    ----------
    K : array of shape (n, n)
        Kernel (Gram) matrix of the training points, symmetric positive semidefinite.
    y : array of shape (n,) or (n, k)
        Targets; k columns (one-hot classes, the outputs of a network with k outputs trained with
        the same kernel on each) flow at once, with one eigendecomposition of K.
    t : float or array of shape (T,)
        Flow times, >= 0.
    f0 : array of shape (n,) or (n, k), optional
        Predictions at t = 0 on the training points (default 0, as for a centred network).
    K_test : array of shape (n_test, n), optional
        Kernel between test and training points.
    f0_test : array of shape (n_test,) or (n_test, k), optional
        Predictions at t = 0 on the test points (default 0).
    time_scale : float, optional
        Default 1. The factor s of :func:`shallow.flows.gradient_flow` (``time_scale``; its default
        there is m): pass the same s to predict a flow run with it.

    Returns
    -------
    KernelPrediction
        ``train`` of shape (n,), (T, n) for T times, (n, k) for k targets or (T, n, k); ``test``
        likewise with n_test rows, or None.

    Notes
    -----
    gradient_flow moves the parameters by d theta/dt = -s grad R with R = 1/(2n) |f - y|^2; for the
    tangent model, df/dt = J d theta/dt = -(s/n) K (f - y) with K = J J^T. Hence, with
    K = U diag(lam) U^T and c = s t / n,

        f(t) - y = -exp(-c K) (y - f0)                          (the residual decays as e^{-s t K / n}),
        f_test(t) = f0_test + K_test U diag((1 - e^{-c lam}) / lam) U^T (y - f0),

    the second from theta(t) - theta_0 = -(s/n) J^T int_0^t (f - y), with the filter equal to c where
    lam = 0 (a direction that K_test does not see). As t -> infinity this is the minimum-norm kernel
    interpolant, :func:`kernel_regression` with ridge 0. The eigendecomposition costs O(n^3) once,
    then O(n (n + n_test)) per time.

    The eigenvalues that rounding leaves below 0 count as 0 (the residual never grows). Those it
    leaves just above 0 (of order n eps lam_max, where K has rank below n) are kept: once
    c n eps lam_max is of order 1 (c ~ 10^5 / lam_max for a float32 K of 100 points) the flow fits
    y along those rounding directions too, and the test predictions move along them, which
    :func:`kernel_regression` with ridge 0 cuts at n eps lam_max. Long flows need float64.

    References
    ----------
    1. A. Jacot, F. Gabriel and C. Hongler, arXiv:1806.07572, Sec. 5 (least-squares kernel flow).
    2. L. Chizat, E. Oyallon and F. Bach, arXiv:1812.07956, Sec. 2 (the lazy limit of the flow).

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 0.0], [0.0, 1.0]]); y = np.array([1.0, 1.0])
    >>> kernel_flow(K, y, 1.0).train        # 1 - exp(-t lam / n) for K diagonal, n = 2
    array([0.63212056, 0.39346934])
    """
    s = check_positive(time_scale, "time_scale")
    xp, K, y, f0, K_test, f0_test = _check_kernel_inputs(K, y, f0, K_test, f0_test)
    lam, U, coef = _eigen_problem(xp, K, y, f0)
    t_host = to_numpy(check_array(t, "t", ndim=(0, 1))).astype(np.float64)
    if np.any(t_host < 0):
        raise ValueError(f"t must be a time >= 0 or a 1-dimensional array of them, got {t!r}")
    n = y.shape[0]
    c = xp.asarray(s * t_host / n, dtype=lam.dtype)[..., None]  # () or (T, 1)
    nonzero = lam != 0
    safe = xp.where(nonzero, lam, 1)
    g = xp.where(nonzero, -xp.expm1(-c * lam) / safe, c)  # (1 - e^{-c lam}) / lam, c at lam = 0
    return _apply_filter(xp, lam, U, coef, g, f0, K_test, f0_test)


def kernel_regression(K, y, ridge: float = 0.0, *, f0=None, K_test=None, f0_test=None, rcond=None) -> KernelPrediction:
    r"""Kernel ridge regression (ridge > 0) or the minimum-norm kernel interpolant (ridge = 0).

    Parameters
    ----------
    K : array of shape (n, n)
    y : array of shape (n,) or (n, k)
        Targets; k columns (one-hot classes, say) are fitted at once, with one eigendecomposition of K.
    ridge : float
        lambda >= 0 in the objective below.
    f0, K_test, f0_test
        As in :func:`kernel_flow` (f0: the fixed initial function, default 0), with y's trailing shape.
    rcond : float, optional
        With ridge = 0, eigenvalues at or below rcond * max(lam) count as 0 (pseudo-inverse); default n eps.

    Returns
    -------
    KernelPrediction

    Notes
    -----
    The minimiser over h in the RKHS of 1/(2n) sum_i (f0(x_i) + h(x_i) - y_i)^2 + (lambda/2) |h|_H^2 is

        f = f0 + K_. (K + n lambda I)^{-1} (y - f0),

    the spectral filter 1/(lam + n lambda) in place of kernel_flow's (1 - e^{-s t lam/n}) / lam:
    stopping the flow at time t acts like a ridge lambda ~ 1/(s t) (Ali, Kolter and Tibshirani 2019),
    and lambda -> 0 is the limit t -> infinity, the interpolant of minimum RKHS norm.

    With n ridge at least 10^6 times the rounding level n eps |K|_F of K's eigenvalues, the system
    is solved by Cholesky factorisations (n^3/3 each, against about 9 n^3 for an
    eigendecomposition: the whole fit 2.2 times faster at n = 2000 on two cores,
    ``benchmarks/kernel_methods.py``), one of which checks that K is semidefinite up to that
    rounding; otherwise (ridge = 0, a smaller ridge, float32 matrices of fewer than about 10^4
    rows, or a K that fails that check) by the eigendecomposition, where the eigenvalues rounding
    leaves below 0 count as 0. K must be positive semidefinite up to max(sqrt(eps), n eps) times
    its largest eigenvalue (ValueError otherwise).

    References
    ----------
    1. A. Ali, J. Z. Kolter and R. J. Tibshirani, arXiv:1810.10082, Sec. 3.

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 0.0], [0.0, 1.0]]); y = np.array([1.0, 1.0])
    >>> kernel_regression(K, y, ridge=0.5).train      # lam / (lam + n ridge)
    array([0.66666667, 0.5       ])
    """
    ridge = check_nonnegative(ridge, "ridge")
    if rcond is not None:
        rcond = check_nonnegative(rcond, "rcond")
    xp, K, y, f0, K_test, f0_test = _check_kernel_inputs(K, y, f0, K_test, f0_test)
    n = y.shape[0]
    if ridge > 0:
        pred = _ridge_by_cholesky(xp, K, y, n * ridge, f0, K_test, f0_test)
        if pred is not None:
            return pred
    lam, U, coef = _eigen_problem(xp, K, y, f0)
    if ridge > 0:  # lam >= 0 (_eigen_problem): the fit's filter lam / (lam + n ridge) stays in [0, 1)
        g = 1.0 / (lam + n * ridge)
    else:
        eps = float(np.finfo(np.dtype(lam.dtype)).eps)
        cut = (n * eps if rcond is None else rcond) * float(xp.abs(lam).max())
        keep = lam > cut
        g = xp.where(keep, 1.0 / xp.where(keep, lam, 1), 0)
    return _apply_filter(xp, lam, U, coef, g, f0, K_test, f0_test)


# ----------------------------------------------------------------------------- initialisation and scale

def centered(net, gamma=None) -> TwoLayer:
    r"""The centred version of ``net``: each neuron duplicated with the opposite outer weight, so f = 0.

    Parameters
    ----------
    net : TwoLayer
        m neurons (a, W).
    gamma : float, optional
        Output scale of the result; default ``net.gamma`` (then the tangent kernel at the start is
        twice net's, each neuron counting twice).

    Returns
    -------
    TwoLayer
        2m neurons: a' = (a, -a), W' = (W, W); f(x; theta'_0) = 0 for every x (up to the rounding of
        the sum, of order eps gamma sum_j |a_j sigma(<w_j, x>)|).

    Notes
    -----
    The centred initialisation of Chizat, Oyallon and Bach (2019, Sec. 2 and their experiments):
    f(x; theta_0) = 0 makes |alpha h(w_0) - y*| = |y*| independent of the scale alpha, so that a large
    alpha does not blow up the initial output, while the tangent kernel keeps its random-feature law.
    The two copies move apart once trained (their gradients in w differ by the sign of a).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.networks import TwoLayer
    >>> net = centered(TwoLayer.init(5, 3, rng=0))
    >>> net.m, bool(np.abs(net(np.eye(3))).max() < 1e-15)       # 0 up to rounding
    (10, True)
    """
    net = _check_two_layer(net)
    xp = net.xp
    a = xp.concatenate([net.a, -net.a])  # (2m,)
    W = xp.concatenate([net.W, net.W], axis=0)  # (2m, D)
    g = net.gamma if gamma is None else _check_gamma(gamma)
    return TwoLayer(a, W, activation=net.activation, gamma=g, bias=net.bias)


def centered_init(m, d, scale="mean-field", rng=None, **kwargs) -> TwoLayer:
    r"""A random centred network of width m: m/2 neurons drawn by TwoLayer.init, each duplicated with -a.

    Parameters
    ----------
    m : int
        Total number of neurons, even, >= 2.
    d : int
    scale : {"mean-field", "ntk"} or float
        Output scale for width m: 1/m, 1/sqrt(m), or alpha/m for a float alpha > 0.
    rng, **kwargs
        Passed to :meth:`shallow.networks.TwoLayer.init` (activation, weights, a_init, bias, dtype, device).

    Returns
    -------
    TwoLayer
        f(x; theta_0) = 0 for every x.

    Examples
    --------
    >>> net = centered_init(100, 5, scale=10.0, rng=0)
    >>> net.m, net.gamma                     # alpha / m
    (100, 0.1)
    """
    m = check_integer(m, "m", minimum=2)
    if m % 2:
        raise ValueError(f"m must be even for a centred network (m/2 pairs of neurons with opposite outer "
                         f"weights), got m={m}")
    if isinstance(scale, str):
        if scale not in ("mean-field", "ntk"):
            raise ValueError(f"scale must be 'mean-field', 'ntk' or a positive float alpha, got {scale!r}")
        gamma = 1.0 / m if scale == "mean-field" else 1.0 / math.sqrt(m)
    else:
        gamma = _check_alpha(scale) / m
    half = TwoLayer.init(m // 2, d, scale="mean-field", rng=rng, **kwargs)
    return centered(half, gamma=gamma)


def scaled(net, alpha) -> TwoLayer:
    r"""The network alpha f: a copy of ``net`` with gamma multiplied by alpha > 0.

    Parameters
    ----------
    net : TwoLayer
    alpha : float
        The lazy-training output scale of Chizat, Oyallon and Bach (2019), > 0.

    Returns
    -------
    TwoLayer

    Notes
    -----
    Scaling the output by alpha scales the tangent kernel by alpha^2 and the laziness criterion kappa
    by 1/alpha (this module's docstring).

    In float32 a centred network (:func:`centered`) scaled by alpha is about alpha eps32 off once its
    parameters have moved by O(1/alpha): f is then a sum of terms alpha times larger than itself, and
    the move is known to eps32 |theta| only (measured with m = 1000, d = 5, theta moved by N(0, 1)/alpha:
    relative errors of f 1.7e-5 at alpha = 100, 1.4e-3 at 10^4, 1.1e-2 at 10^5, against float64 on the
    same parameters). Lazy runs at large alpha need float64.

    Examples
    --------
    >>> from shallow.networks import TwoLayer
    >>> scaled(TwoLayer.init(10, 2, rng=0), 5.0).gamma
    0.5
    >>> scaled(TwoLayer.init(10, 2, rng=0), 0.0)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be a positive finite number (the lazy-training output scale), got 0.0
    """
    alpha = _check_alpha(alpha)
    net = _check_two_layer(net)
    out = net.copy()
    out.gamma = _check_gamma(net.gamma * alpha)
    return out


# ----------------------------------------------------------------------------- diagnostics

def _check_parameters_of(net0, a, W, whose: str):
    """(a, W) as arrays, refused unless they have the shapes of ``net0``'s parameters (``whose`` names it)."""
    a, W = check_array(a, "a", ndim=1), check_array(W, "W", ndim=2)
    if a.shape != net0.a.shape or W.shape != net0.W.shape:
        raise ValueError(f"a and W have shapes {tuple(a.shape)} and {tuple(W.shape)} but {whose} has "
                         f"{tuple(net0.a.shape)} and {tuple(net0.W.shape)}")
    return a, W


def relative_weight_change(net0, a, W) -> float:
    r"""|theta - theta_0| / |theta_0| with theta = (a, W) and theta_0 the parameters of ``net0``.

    Parameters
    ----------
    net0 : TwoLayer or Linearized
        The network at theta_0 (for a tangent model, its anchor).
    a : array of shape (m,)
    W : array of shape (m, D)

    Returns
    -------
    float
        Euclidean norms over all the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.networks import TwoLayer
    >>> net = TwoLayer(np.array([3.0]), np.array([[4.0]]))
    >>> relative_weight_change(net, np.array([3.0]), np.array([[4.5]]))    # 0.5 / 5
    0.1
    """
    net0 = _as_network(net0, "net0")
    a, W = _check_parameters_of(net0, a, W, "net0")
    get_xp(net0.a, a, W)  # one backend for all three (a mix is refused here)
    norm0 = _norm(net0.a, net0.W)
    if norm0 == 0:
        raise ValueError("theta_0 = 0: the relative weight change |theta - theta_0| / |theta_0| is undefined")
    return _norm(a - net0.a, W - net0.W) / norm0


def relative_kernel_change(K0, K) -> float:
    r"""|K - K_0|_F / |K_0|_F for two kernel matrices of the same shape.

    Parameters
    ----------
    K0 : array_like of shape (n, n')
        The reference kernel matrix, finite and not all zero; numpy or cupy.
    K : array_like of K0's shape
        The other, finite, on the same backend as K0.

    Returns
    -------
    float
        Norms taken without overflow or underflow of the squares (scaled by a power of 2).

    Raises
    ------
    ValueError
        For arrays that are not 2-D, not finite, of different shapes, or K0 = 0.
    TypeError
        For a numpy array with a cupy one.

    Examples
    --------
    >>> import numpy as np
    >>> relative_kernel_change(np.array([[4.0]]), np.array([[5.0]]))
    0.25
    """
    K0 = check_array(K0, "K0", ndim=2)
    K = check_array(K, "K", ndim=2)
    if K0.shape != K.shape:
        raise ValueError(f"K0 has shape {tuple(K0.shape)} but K has shape {tuple(K.shape)}")
    get_xp(K0, K)  # one backend for both (a mix is refused here)
    norm0 = _norm(K0)
    if norm0 == 0:
        raise ValueError("K0 = 0: the relative kernel change is undefined")
    return _norm(K - K0) / norm0


def activation_flips(net0, W, X, *, chunk_size=None) -> float:
    r"""Fraction of the pairs (sample i, neuron j) whose activation pattern 1{<w_j, x~_i> > 0} changed.

    Parameters
    ----------
    net0 : TwoLayer or Linearized
        The network at theta_0 (its W0 and bias are read).
    W : array of shape (m, D)
        Current inner weights.
    X : array of shape (n, d)
    chunk_size : int, optional

    Returns
    -------
    float in [0, 1]
        (1/(n m)) #{(i, j) : 1{<w_j, x~_i> > 0} != 1{<w0_j, x~_i> > 0}}: for relu, the fraction of the
        network's linear pieces that changed; 0 for every lazy flow in the limit (Chizat et al. 2019).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.networks import TwoLayer
    >>> net = TwoLayer(np.array([1.0, 1.0]), np.array([[1.0], [1.0]]))
    >>> activation_flips(net, np.array([[1.0], [-1.0]]), np.array([[2.0]]))    # neuron 2 flipped
    0.5
    """
    net0 = _as_network(net0, "net0")
    Xt = _augment(net0, X)
    W = check_array(W, "W", ndim=2)
    if W.shape != net0.W.shape:
        raise ValueError(f"W has shape {tuple(W.shape)} but net0.W has shape {tuple(net0.W.shape)}")
    xp = get_xp(Xt, W, net0.W)
    n, m = Xt.shape[0], net0.m
    if n == 0:
        raise ValueError("X must hold at least one sample, got n=0")
    W = W.astype(net0.dtype, copy=False)
    step = _chunk_rows(chunk_size, m, 2 * np.dtype(net0.dtype).itemsize)
    flips = 0
    for start in range(0, n, step):
        Xc = Xt[start:start + step]
        flips += int(xp.count_nonzero((Xc @ net0.W.T > 0) != (Xc @ W.T > 0)))
    return flips / (n * m)


class LazyDiagnostics:
    r"""A :func:`shallow.flows.gradient_flow` callback recording how lazy the flow is.

    ``diag = LazyDiagnostics(net, X); gradient_flow(net, loss, ..., callback=diag)``; then
    ``diag.result()`` returns the records as arrays. gradient_flow calls its callback at every
    record, the last one included; ``diag.finish(traj)`` adds a trajectory's final state when it is
    missing (a flow stopped by another callback, or run without this one).

    Parameters
    ----------
    net : TwoLayer or Linearized
        The network at the start of the flow, theta_0 (a copy is kept; for a tangent model, the
        diagnostics compare the nonlinear network at its parameters with it).
    X : array of shape (n, d)
        Points where functions and kernels are compared (a subset of the training set is typical;
        the NTK change costs O(n^2 m) per record).
    y : array of shape (n,), optional
        When X and y are the training set of an EmpiricalRisk flow, also record the distance to the
        closed-form kernel flow with the initial tangent kernel (:func:`kernel_flow`).
    time_scale : float, optional
        The flow's time scale (default m, as gradient_flow's), for the kernel-flow reference.
    ntk : bool
        Record the relative NTK change (the most expensive diagnostic).
    train : {"both", "outer", "inner"}
        The layers the flow trains (gradient_flow's ``train``, which a callback cannot read): the
        tangent kernel K_0 of ``ntk_change`` and of the kernel-flow reference is
        ``empirical_ntk(net, X, train=train)``. With the default "both" for a flow that trains one layer,
        ``kernel_gap`` would compare it with the flow of another kernel (for ``train="outer"``, where the
        network is linear in a and follows its kernel flow exactly, an O(1) gap). A record where a layer
        that ``train`` leaves fixed has moved (W for "outer", a for "inner") raises ValueError.

    Attributes
    ----------
    records : dict of lists
        ``step``, ``t``, ``risk``, ``weight_change`` (|theta_t - theta_0| / |theta_0|),
        ``ntk_change`` (|K_t - K_0|_F / |K_0|_F on X), ``linearization_gap`` (RMS over X of
        f(x; theta_t) - f_lin(x; theta_t), the Taylor remainder along the path), ``flips``
        (:func:`activation_flips`), and with ``y``: ``kernel_gap`` (RMS over X of f(x; theta_t) minus the
        kernel-flow prediction at time t, which includes the integrator's discretisation error).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.networks import TwoLayer
    >>> from shallow.flows import EmpiricalRisk, gradient_flow
    >>> X = np.random.default_rng(0).standard_normal((20, 3)); y = np.sin(X[:, 0])
    >>> net = centered_init(200, 3, scale="ntk", rng=1)
    >>> diag = LazyDiagnostics(net, X, y=y)
    >>> traj = gradient_flow(net, EmpiricalRisk(X, y), steps=50, step_size=1e-3, record_every=10, callback=diag)
    >>> out = diag.finish(traj).result()
    >>> out["step"].tolist(), bool(out["weight_change"][-1] < 0.1)
    ([0, 10, 20, 30, 40, 50], True)
    """

    KEYS = ("step", "t", "risk", "weight_change", "ntk_change", "linearization_gap", "flips")

    def __init__(self, net, X, *, y=None, time_scale=None, ntk: bool = True, train: str = "both"):
        # theta_0: the network's parameters, or a tangent model's current ones (where its flow starts)
        self.net0 = net.network() if isinstance(net, Linearized) else _as_network(net).copy()
        self.lin = Linearized(self.net0)
        self.X = self.net0._check_X(X)
        if self.X.shape[0] == 0:
            raise ValueError("X must hold at least one point, got n=0")
        self.ntk = check_bool(ntk, "ntk")
        self.train = _check_train(train)
        if time_scale is not None:
            time_scale = check_positive(time_scale, "time_scale")
        self.K0 = empirical_ntk(self.net0, self.X, train=self.train) if self.ntk else None
        self._flow = None
        keys = list(self.KEYS)
        if y is not None:
            y = check_array(y, "y", ndim=1)
            if y.shape[0] != self.X.shape[0]:
                raise ValueError(f"y has {y.shape[0]} entries but X has n={self.X.shape[0]} rows")
            s = float(self.net0.m if time_scale is None else time_scale)
            K0 = self.K0 if self.K0 is not None else empirical_ntk(self.net0, self.X, train=self.train)
            f0 = self.net0(self.X)
            self._flow = (K0, y.astype(self.net0.dtype, copy=False), f0, s)
            keys.append("kernel_gap")
        self.records = {key: [] for key in keys}

    def __call__(self, step, t, risk, a, W):
        """Record the diagnostics at (a, W); returns False (never stops the flow).

        The signature of a :func:`shallow.flows.gradient_flow` callback: ``step`` (steps taken), ``t``
        (flow time), ``risk`` (the loss at (a, W)), and the parameters ``a`` (m,) and ``W`` (m, D) of the
        network. A call at the step recorded last is skipped.
        """
        if self.records["step"] and self.records["step"][-1] == int(step):
            return False
        net0 = self.net0
        a, W = _check_parameters_of(net0, a, W, "the network at the start of the flow")
        frozen = {"outer": ("W", W, net0.W), "inner": ("a", a, net0.a)}.get(self.train)
        if frozen is not None and not bool(net0.xp.array_equal(frozen[1], frozen[2])):
            raise ValueError(f"train={self.train!r} but the flow moved {frozen[0]} (at step {int(step)}): pass "
                             "LazyDiagnostics the train= of gradient_flow, whose layers its kernels differentiate")
        net = TwoLayer(a, W, activation=net0.activation, gamma=net0.gamma, bias=net0.bias)
        xp = net.xp
        f = net(self.X)
        f_lin = self.lin._value(_augment(net0, self.X), a, W)
        rec = self.records
        rec["step"].append(int(step))
        rec["t"].append(float(t))
        rec["risk"].append(float(risk))
        rec["weight_change"].append(relative_weight_change(net0, a, W))
        rec["ntk_change"].append(relative_kernel_change(self.K0, empirical_ntk(net, self.X, train=self.train))
                                 if self.ntk else math.nan)
        rec["linearization_gap"].append(math.sqrt(float(xp.mean((f - f_lin) ** 2))))
        rec["flips"].append(activation_flips(net0, W, self.X))
        if self._flow is not None:
            K0, y, f0, s = self._flow
            pred = kernel_flow(K0, y, float(t), f0=f0, time_scale=s).train
            rec["kernel_gap"].append(math.sqrt(float(xp.mean((f - pred) ** 2))))
        return False

    def finish(self, traj) -> LazyDiagnostics:
        """Record the final state of a :class:`shallow.flows.Trajectory` (if not recorded yet)."""
        if not all(hasattr(traj, name) for name in ("a", "W", "step", "t", "risks")):
            raise TypeError(f"traj must be a shallow.flows.Trajectory (with a, W, step, t and risks), "
                            f"got {type(traj).__name__}")
        xp = self.net0.xp
        a = xp.asarray(traj.a, dtype=self.net0.dtype)
        W = xp.asarray(traj.W, dtype=self.net0.dtype)
        risk = float(traj.risks[-1]) if len(traj.risks) else math.nan
        self(traj.step, traj.t, risk, a, W)
        return self

    def result(self) -> dict:
        """The records as a dict of numpy arrays of shape (records,)."""
        return {key: np.asarray(values, dtype=np.int64 if key == "step" else np.float64)
                for key, values in self.records.items()}
