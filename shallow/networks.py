r"""Two-layer (one-hidden-layer) networks: parametrisations, values and gradients.

A network with m neurons on inputs x in R^d is

    f(x) = gamma * sum_{j=1}^{m} a_j sigma(<w_j, x>),

with outer weights a of shape (m,), inner weights W of shape (m, d) (row j is w_j) and an output
scale gamma. The parametrisations the studies sweep differ only in gamma:

* mean-field: gamma = 1/m (Chizat & Bach 2018; Mei, Montanari & Nguyen 2018), the default;
* NTK: gamma = 1/sqrt(m) (Jacot, Gabriel & Hongler 2018);
* alpha-scaled: gamma = alpha/m, the mean-field network multiplied by the lazy-training scale
  alpha of Chizat, Oyallon & Bach (2019): alpha -> infinity is the lazy regime, alpha = 1 the
  mean-field one, and alpha = sqrt(m) gives back the NTK scale.

With ``bias=True`` every input is augmented as (x, 1), so that W has d + 1 columns and the last
column holds the biases: sigma(<w_j, (x, 1)>) = sigma(<w_j[:d], x> + w_j[d]). For a positively
homogeneous sigma of degree alpha, this is |(x, 1)|^alpha times a network without bias evaluated
at the point ``sphere.lift(x)`` = (x, 1)/|(x, 1)| of S^d: the normalised variant of Bach (2017),
Sec. 2, is obtained by feeding ``lift(X)`` to a network with ``bias=False`` and d + 1 inputs.

The particles are the pairs theta_j = (a_j, w_j) in R^{1 + D} (D = d, or d + 1 with a bias); for
a positively homogeneous sigma the network is also the signed measure
mu = gamma sum_j a_j |w_j|^alpha delta_{w_j/|w_j|} on the sphere (:meth:`TwoLayer.to_measure`,
:mod:`shallow.measures`).

References
----------
1. F. Bach, "Breaking the curse of dimensionality with convex neural networks", JMLR 18, 2017,
   arXiv:1412.8690, Sec. 2 (networks as measures, the bias trick).
2. L. Chizat and F. Bach, "On the global convergence of gradient descent for over-parameterized
   models using optimal transport", NeurIPS 2018, arXiv:1805.09545, Sec. 2 (mean-field scale 1/m).
3. L. Chizat, E. Oyallon and F. Bach, "On lazy training in differentiable programming",
   NeurIPS 2019, arXiv:1812.07956 (the output scale alpha).
"""

from __future__ import annotations

import numbers

import numpy as np

from ._validation import check_array, check_integer, check_points, check_random_state
from .backend import device_of, get_xp, to_device

__all__ = [
    "TwoLayer",
    "BLOCK_BYTES",
]

#: Default size in bytes of one (chunk, m) block of pre-activations: the samples are processed in
#: chunks of ``max(1, BLOCK_BYTES // (m * itemsize))`` rows.
BLOCK_BYTES = 64 * 2**20

_SCALES = ("mean-field", "ntk")
_WEIGHTS = ("gaussian", "sphere")
_A_INITS = ("gaussian", "sign", "balanced", "zero")


def _resolve_activation(activation):
    """An activation object (``__call__``, ``derivative``, ``name``, ``homogeneity``) from a name or object."""
    if isinstance(activation, str):
        from .activations import get_activation

        return get_activation(activation)
    if callable(activation) and callable(getattr(activation, "derivative", None)):
        return activation
    raise ValueError("activation must be a name such as 'relu' or an object with __call__(z) and "
                     f"derivative(z) (see shallow.activations.get_activation), got {activation!r}")


def _is_relu(sigma) -> bool:
    """True for the library's own relu, which gets an in-place fast path (same numbers)."""
    from .activations import Activation

    return isinstance(sigma, Activation) and sigma.name == "relu"


def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not np.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a positive finite number (the output scale), got {gamma!r}")
    return float(gamma)


def _chunk_rows(chunk_size, m: int, itemsize: int) -> int:
    """Rows per chunk: ``chunk_size`` if given, else so that a (chunk, m) block is ~BLOCK_BYTES."""
    if chunk_size is None:
        return max(1, BLOCK_BYTES // max(1, m * itemsize))
    return check_integer(chunk_size, "chunk_size", minimum=1)


class TwoLayer:
    r"""A two-layer network f(x) = gamma * sum_j a_j sigma(<w_j, x>).

    Parameters
    ----------
    a : array of shape (m,)
        Outer weights, m >= 1.
    W : array of shape (m, D)
        Inner weights, one row w_j per neuron; D = d, or d + 1 with ``bias=True`` (the last column
        is then the bias).
    activation : str or activation object, default "relu"
        A name understood by :func:`shallow.activations.get_activation`, or an object with
        ``__call__(z)``, ``derivative(z)``, ``name`` and ``homogeneity``.
    gamma : float, optional
        Output scale; default 1/m (mean-field).
    bias : bool, default False
        Augment every input x in R^d as (x, 1).

    Attributes
    ----------
    a, W : arrays
        The parameters, stored as given (no copy; :meth:`copy` makes one). A flow may update them
        in place. Both have the network's dtype (float32 or float64) and live on one device.
    activation : activation object
    gamma : float
    bias : bool

    Notes
    -----
    All computations run in the dtype of the parameters (a and W are promoted to a common floating
    type; inputs X and residuals r are cast to it) and on their device (numpy or cupy).

    The value and the gradients are computed in chunks of samples: with Z = X W^T the (n, m) matrix
    of pre-activations, only a (chunk, m) block of Z exists at a time, so the memory is
    O((n + m) D + chunk m) and never O(n m D).

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Sec. 2.
    2. L. Chizat and F. Bach, arXiv:1805.09545, Sec. 2.

    Examples
    --------
    >>> import numpy as np
    >>> net = TwoLayer(np.array([1.0, -1.0]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> net(np.array([[2.0, 1.0], [-1.0, 3.0]]))       # (relu(x1) - relu(x2)) / 2
    array([ 0.5, -1.5])
    >>> net
    TwoLayer(m=2, d=2, activation='relu', gamma=0.5, bias=False, dtype=float64, device='cpu')
    """

    def __init__(self, a, W, activation="relu", gamma=None, bias=False):
        a = check_array(a, "a")
        W = check_array(W, "W")
        xp = get_xp(a, W)
        if a.ndim != 1:
            raise ValueError(f"a must be a 1-dimensional array of shape (m,), got shape {tuple(a.shape)}")
        if W.ndim != 2:
            raise ValueError(f"W must be a 2-dimensional array of shape (m, d), got shape {tuple(W.shape)}")
        if a.shape[0] == 0:
            raise ValueError("m must be >= 1: a network needs at least one neuron, got a of shape (0,)")
        if W.shape[0] != a.shape[0]:
            raise ValueError(f"a has shape {tuple(a.shape)} but W has shape {tuple(W.shape)}: "
                             "a needs one entry per row of W (one per neuron)")
        bias = bool(bias)
        if W.shape[1] < 1 + bias:
            raise ValueError(f"W has shape {tuple(W.shape)}: it needs at least {1 + bias} column(s)"
                             + (" (d inputs plus the bias column)" if bias else ""))
        dtype = xp.result_type(a.dtype, W.dtype)
        self.a = a.astype(dtype, copy=False)  # (m,)
        self.W = W.astype(dtype, copy=False)  # (m, D)
        self.activation = _resolve_activation(activation)
        self.gamma = 1.0 / a.shape[0] if gamma is None else _check_gamma(gamma)
        self.bias = bias

    # ------------------------------------------------------------------ construction
    @classmethod
    def init(cls, m, d, scale="mean-field", rng=None, activation="relu", weights="gaussian",
             a_init="gaussian", bias=False, dtype=np.float64, device="cpu"):
        r"""A randomly initialised network in one of the standard parametrisations.

        Parameters
        ----------
        m : int
            Number of neurons, m >= 1.
        d : int
            Input dimension, d >= 1 (W gets d + 1 columns with ``bias=True``).
        scale : {"mean-field", "ntk"} or float, default "mean-field"
            Output scale gamma: "mean-field" -> 1/m, "ntk" -> 1/sqrt(m), a float alpha > 0 ->
            alpha/m (the mean-field network times the lazy-training scale alpha).
        rng : None, int or numpy.random.Generator
            Source of randomness. The draw happens on the host (W first, then a), then the arrays
            move to ``device``: a seed gives the same numbers on numpy and cupy.
        activation : str or activation object, default "relu"
        weights : {"gaussian", "sphere"}, default "gaussian"
            Rows w_j ~ N(0, I_D), or uniform on the unit sphere S^{D-1} (D = d + bias >= 2).
        a_init : {"gaussian", "sign", "balanced", "zero"}, default "gaussian"
            a_j ~ N(0, 1); a_j = +-1 with probability 1/2 each; a_j = s_j |w_j| with a random sign
            s_j (|a_j| = |w_j|, the balanced initialisation that the gradient flow of a 2-homogeneous
            relu network preserves, Chizat & Bach 2018, Sec. 2.2); or a = 0.
        bias : bool, default False
        dtype : numpy dtype, default float64
            float64 or float32.
        device : {"cpu", "gpu"}, default "cpu"

        Returns
        -------
        TwoLayer

        Notes
        -----
        For x fixed, a_j ~ N(0, 1) and w_j ~ N(0, I_d) independent, relu gives
        E[f(x)^2] = gamma^2 m E[a^2] E[relu(<w, x>)^2] = gamma^2 m |x|^2 / 2: of order 1 at the NTK
        scale, 1/m at the mean-field scale (the network starts near 0 and the flow is not lazy).

        Examples
        --------
        >>> net = TwoLayer.init(100, 3, scale="ntk", rng=0)
        >>> net.m, net.d, net.gamma
        (100, 3, 0.1)
        >>> TwoLayer.init(100, 3, scale=10.0, rng=0).gamma    # alpha / m
        0.1
        """
        m = check_integer(m, "m", minimum=1)
        d = check_integer(d, "d", minimum=1)
        if isinstance(scale, str):
            if scale not in _SCALES:
                raise ValueError(f"scale must be one of {_SCALES} or a positive float alpha, got {scale!r}")
            gamma = 1.0 / m if scale == "mean-field" else 1.0 / np.sqrt(m)
        elif isinstance(scale, numbers.Real) and not isinstance(scale, bool) and np.isfinite(scale) and scale > 0:
            gamma = float(scale) / m
        else:
            raise ValueError(f"scale must be one of {_SCALES} or a positive float alpha, got {scale!r}")
        if weights not in _WEIGHTS:
            raise ValueError(f"weights must be one of {_WEIGHTS}, got {weights!r}")
        if a_init not in _A_INITS:
            raise ValueError(f"a_init must be one of {_A_INITS}, got {a_init!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        activation = _resolve_activation(activation)
        rng = check_random_state(rng)
        D = d + bool(bias)
        W = rng.standard_normal((m, D))  # (m, D)
        if weights == "sphere":
            if D < 2:
                raise ValueError("weights='sphere' needs D = d + bias >= 2 coordinates (S^{D-1}), got d=1 "
                                 "without bias")
            norms = np.linalg.norm(W, axis=1, keepdims=True)
            W = W / np.where(norms > 0, norms, 1.0)
        if a_init == "gaussian":
            a = rng.standard_normal(m)  # (m,)
        elif a_init == "sign":
            a = rng.choice(np.array([-1.0, 1.0]), size=m)
        elif a_init == "balanced":
            a = rng.choice(np.array([-1.0, 1.0]), size=m) * np.linalg.norm(W, axis=1)
        else:
            a = np.zeros(m)
        a = to_device(a.astype(dtype), device)
        W = to_device(W.astype(dtype), device)
        return cls(a, W, activation=activation, gamma=gamma, bias=bias)

    # ------------------------------------------------------------------ descriptors
    @property
    def m(self) -> int:
        """Number of neurons."""
        return int(self.a.shape[0])

    @property
    def d(self) -> int:
        """Input dimension (W has d + 1 columns when ``bias`` is True)."""
        return int(self.W.shape[1]) - int(self.bias)

    @property
    def parameters(self):
        """The pair (a, W), of shapes (m,) and (m, D) (the arrays themselves, not copies)."""
        return self.a, self.W

    @property
    def dtype(self):
        return self.W.dtype

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return device_of(self.W)

    @property
    def xp(self):
        """The array module of the parameters (numpy or cupy)."""
        return get_xp(self.a, self.W)

    def particles(self):
        """The particles theta_j = (a_j, w_j) as the rows of an array of shape (m, 1 + D).

        Their empirical measure (1/m) sum_j delta_{theta_j} is the lifted measure whose
        Wasserstein gradient flow is the mean-field training dynamics (Chizat & Bach 2018).
        """
        xp = self.xp
        return xp.concatenate([self.a[:, None], self.W], axis=1)

    def copy(self) -> TwoLayer:
        """A network with copies of a and W (the activation object is shared)."""
        return type(self)(self.a.copy(), self.W.copy(), activation=self.activation, gamma=self.gamma,
                          bias=self.bias)

    def to_device(self, device: str) -> TwoLayer:
        """The same network with its parameters on ``device`` ("cpu" or "gpu")."""
        return type(self)(to_device(self.a, device), to_device(self.W, device), activation=self.activation,
                          gamma=self.gamma, bias=self.bias)

    def to_measure(self):
        """The signed measure on the sphere that represents f (homogeneous sigma only).

        See :func:`shallow.measures.network_to_measure`.
        """
        from .measures import network_to_measure

        return network_to_measure(self)

    def __repr__(self) -> str:
        name = getattr(self.activation, "name", type(self.activation).__name__)
        return (f"TwoLayer(m={self.m}, d={self.d}, activation={name!r}, gamma={self.gamma:.6g}, "
                f"bias={self.bias}, dtype={np.dtype(self.dtype).name}, device={self.device!r})")

    # ------------------------------------------------------------------ evaluation
    def _check_X(self, X, name="X"):
        X = check_points(X, name)
        get_xp(X, self.W)  # refuses a numpy/cupy mix, naming both
        if X.shape[1] != self.d:
            extra = f" (W has shape {tuple(self.W.shape)}, the last column being the bias)" if self.bias else \
                f" (W has shape {tuple(self.W.shape)})"
            raise ValueError(f"X has shape {tuple(X.shape)} but the network takes d={self.d} coordinates{extra}")
        return X.astype(self.dtype, copy=False)

    def _check_r(self, r, n):
        r = check_array(r, "r", ndim=1)
        get_xp(r, self.W)
        if r.shape[0] != n:
            raise ValueError(f"r has shape {tuple(r.shape)} but X has n={n} samples: one residual per sample")
        return r.astype(self.dtype, copy=False)

    def _preactivations(self, Xc):
        """Z = [Xc, 1] W^T of shape (chunk, m), as one GEMM (plus the bias row)."""
        if self.bias:
            d = self.d
            Z = Xc @ self.W[:, :d].T  # (chunk, m)
            Z += self.W[:, d]
            return Z
        return Xc @ self.W.T  # (chunk, m)

    def __call__(self, X, chunk_size=None):
        """f(x_i) for every row of X.

        Parameters
        ----------
        X : array of shape (n, d)
        chunk_size : int, optional
            Samples per chunk; by default a (chunk, m) block takes about ``BLOCK_BYTES`` (64 MiB).

        Returns
        -------
        array of shape (n,)
        """
        X = self._check_X(X)
        xp = self.xp
        n = X.shape[0]
        out = xp.empty(n, dtype=self.dtype)  # (n,)
        step = _chunk_rows(chunk_size, self.m, np.dtype(self.dtype).itemsize)
        sigma = self.activation
        relu = _is_relu(sigma)
        for start in range(0, n, step):
            sl = slice(start, min(start + step, n))
            Z = self._preactivations(X[sl])  # (chunk, m)
            S = xp.maximum(Z, 0, out=Z) if relu else sigma(Z)  # (chunk, m)
            out[sl] = S @ self.a
        out *= self.gamma
        return out

    def gradients(self, X, r, chunk_size=None):
        r"""Gradients of L = (1/n) sum_i r_i f(x_i) with respect to a and W, r held fixed.

        With r_i = f(x_i) - y_i this is the gradient of the square loss (1/2n) sum_i (f(x_i) - y_i)^2.

        Parameters
        ----------
        X : array of shape (n, d)
            n >= 1 samples.
        r : array of shape (n,)
            Residuals (any weights per sample).
        chunk_size : int, optional
            Samples per chunk; by default a (chunk, m) block takes about ``BLOCK_BYTES`` (64 MiB).

        Returns
        -------
        grad_a : array of shape (m,)
        grad_W : array of shape (m, D)

        Notes
        -----
        With Z = X W^T (n, m) (X augmented by a column of ones when ``bias``),

            dL/da = (gamma/n) sigma(Z)^T r,
            dL/dW = (gamma/n) diag(a) (sigma'(Z) * r[:, None])^T X,

        each a GEMM (or GEMV) accumulated over chunks of samples: no (n, m, d) array is formed, and
        at most two float (chunk, m) blocks exist at once (Z and sigma(Z), then sigma'(Z) * r; for
        the library's relu, one float block updated in place and one boolean block).

        Examples
        --------
        >>> import numpy as np
        >>> net = TwoLayer(np.array([2.0]), np.array([[1.0, -1.0]]), gamma=1.0)
        >>> ga, gW = net.gradients(np.array([[3.0, 1.0]]), np.array([1.0]))
        >>> ga, gW                # dL/da = relu(<w, x>) = relu(2), dL/dw = a relu'(2) x = 2 x
        (array([2.]), array([[6., 2.]]))
        """
        _, grad_a, grad_W = self._sweep(X, r, want_value=False, chunk_size=chunk_size)
        return grad_a, grad_W

    def value_and_gradients(self, X, r, chunk_size=None):
        r"""f(X) and the gradients of (1/n) sum_i r_i f(x_i) in one pass (Z computed once per chunk).

        Parameters
        ----------
        X : array of shape (n, d)
            n >= 1 samples.
        r : array of shape (n,), or callable
            The residuals, or a function ``r(f_chunk, rows)`` returning the residuals of the samples
            ``X[rows]`` (``rows`` a slice) from their values ``f_chunk`` of shape (chunk,); for the
            square loss ``lambda f, rows: f - y[rows]``. A callable lets the residual depend on f
            without a second pass over the data.
        chunk_size : int, optional
            Samples per chunk; by default a (chunk, m) block takes about ``BLOCK_BYTES`` (64 MiB).

        Returns
        -------
        f : array of shape (n,)
        grad_a : array of shape (m,)
        grad_W : array of shape (m, D)

        Examples
        --------
        >>> import numpy as np
        >>> net = TwoLayer(np.array([2.0]), np.array([[1.0, -1.0]]), gamma=1.0)
        >>> X, y = np.array([[3.0, 1.0]]), np.array([1.0])
        >>> f, ga, gW = net.value_and_gradients(X, lambda f, rows: f - y[rows])
        >>> f, ga                 # f = 4, residual 3, d/da = 3 relu(2)
        (array([4.]), array([6.]))
        """
        return self._sweep(X, r, want_value=True, chunk_size=chunk_size)

    def _sweep(self, X, r, want_value, chunk_size):
        X = self._check_X(X)
        n = X.shape[0]
        if n == 0:
            raise ValueError("X must hold at least one sample (n >= 1) to average over, got shape "
                             f"{tuple(X.shape)}")
        residual_fn = r if callable(r) else None
        if residual_fn is None:
            r = self._check_r(r, n)
        xp = self.xp
        dtype = self.dtype
        m, d = self.m, self.d
        sigma = self.activation
        relu = _is_relu(sigma)
        step = _chunk_rows(chunk_size, m, np.dtype(dtype).itemsize)
        f = xp.empty(n, dtype=dtype) if (want_value or residual_fn is not None) else None  # (n,)
        grad_a = xp.zeros(m, dtype=dtype)  # (m,)
        grad_Win = xp.zeros((m, d), dtype=dtype)  # (m, d)
        grad_b = xp.zeros(m, dtype=dtype) if self.bias else None  # (m,)
        for start in range(0, n, step):
            sl = slice(start, min(start + step, n))
            Xc = X[sl]  # (chunk, d)
            Z = self._preactivations(Xc)  # (chunk, m)
            if relu:
                # relu in place: S = max(Z, 0) overwrites Z, and relu'(Z) = 1{S > 0} (0 at 0).
                S = xp.maximum(Z, 0, out=Z)
            else:
                S = sigma(Z)  # (chunk, m)
            if f is not None:
                fc = S @ self.a
                fc *= self.gamma
                f[sl] = fc
            if residual_fn is not None:
                rc = check_array(residual_fn(f[sl], sl), "r(f_chunk, rows)", ndim=1)
                if rc.shape[0] != sl.stop - sl.start:
                    raise ValueError(f"the residual function returned shape {tuple(rc.shape)} for a chunk of "
                                     f"{sl.stop - sl.start} samples")
                rc = rc.astype(dtype, copy=False)
            else:
                rc = r[sl]
            grad_a += S.T @ rc
            if relu:
                # sigma'(Z) * r written over S (no longer needed): one bool block, no new float block.
                Dz = xp.multiply(S > 0, rc[:, None], out=S)
            else:
                del S
                Dz = sigma.derivative(Z)  # (chunk, m)
                if Dz.dtype != dtype:
                    Dz = Dz.astype(dtype)
                Dz *= rc[:, None]
            del Z
            grad_Win += Dz.T @ Xc
            if grad_b is not None:
                grad_b += Dz.sum(axis=0)
            del Dz
        scale = self.gamma / n
        grad_a *= scale
        if grad_b is not None:
            grad_W = xp.concatenate([grad_Win, grad_b[:, None]], axis=1)  # (m, d + 1)
        else:
            grad_W = grad_Win
        grad_W *= (scale * self.a)[:, None]
        return f, grad_a, grad_W
