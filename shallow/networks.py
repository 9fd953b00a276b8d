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

from ._validation import (
    cast_within_range,
    check_array,
    check_bool,
    check_float_dtype,
    check_integer,
    check_points,
    check_random_state,
)
from .activations import Activation
from .backend import cuda_runtime, device_of, get_xp, to_device

__all__ = [
    "TwoLayer",
    "BLOCK_BYTES",
    "GPU_BLOCK_BYTES",
    "default_block_bytes",
    "fused_pass",
]

#: Default size in bytes of one (rows, cols) block of pre-activations: the samples are processed in
#: chunks of ``max(MIN_ROWS, BLOCK_BYTES // (m * itemsize))`` rows (512 x 4096 in float64 measured
#: fastest on the 2-core development machine), the particles in blocks of as many columns as fit.
BLOCK_BYTES = 16 * 2**20
#: Fewer rows per block make the GEMMs inefficient: very wide networks split their particles instead.
MIN_ROWS = 256
#: Default block size on a GPU: a block of 16 MiB leaves an H200 idle between kernel launches (one
#: empirical-risk step at n = m = 16384, d = 128 in float32: 33.8 ms with 16 MiB blocks, 7.1 ms with
#: 512 MiB, PyTorch's autograd 5.8 ms; benchmarks/flow_step.py). Capped at a quarter of the free memory.
GPU_BLOCK_BYTES = 1 << 30


def default_block_bytes(xp) -> int:
    """The default memory of one pre-activation block for arrays of module ``xp`` (numpy or cupy).

    ``BLOCK_BYTES`` (16 MiB, sized for a CPU's caches) on the host; on a GPU ``GPU_BLOCK_BYTES``
    (1 GiB), or a quarter of the device's free memory if that is less.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy`` (as :func:`~shallow.backend.get_xp` returns). The free memory is read
        from :func:`~shallow.backend.cuda_runtime` (this module does not touch cupy itself); where
        no CUDA runtime answers, or its ``memGetInfo()`` fails, the host's size is kept.

    Returns
    -------
    int
        Bytes: BLOCK_BYTES on the host; on a GPU min(GPU_BLOCK_BYTES, free / 4), at least
        BLOCK_BYTES.
    """
    if xp is np:
        return BLOCK_BYTES
    cuda = cuda_runtime()  # cupy.cuda, or None without a usable device
    try:
        free = int(cuda.runtime.memGetInfo()[0])
    except Exception:  # no CUDA runtime (None), or one that fails: keep the host's size
        return BLOCK_BYTES
    return max(BLOCK_BYTES, min(GPU_BLOCK_BYTES, free // 4))


def _block_bytes(value, xp, name: str) -> int:
    """A memory setting named ``name``: :func:`default_block_bytes` of ``xp`` for None, else an
    integer >= 1 (ValueError naming it otherwise)."""
    return default_block_bytes(xp) if value is None else check_integer(value, name, minimum=1)

_SCALES = ("mean-field", "ntk")
_WEIGHTS = ("gaussian", "sphere")
_A_INITS = ("gaussian", "sign", "balanced", "zero", "joint")


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
    return isinstance(sigma, Activation) and sigma.name == "relu"


def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not np.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a positive finite number (the output scale), got {gamma!r}")
    return float(gamma)


def _block_shape(n: int, m: int, itemsize: int, chunk_size=None, block_bytes: int = BLOCK_BYTES):
    """(rows, cols) of a pre-activation block: ``chunk_size`` rows if given, else ~block_bytes worth."""
    if chunk_size is not None:
        rows = min(n, check_integer(chunk_size, "chunk_size", minimum=1))
    else:
        rows = max(1, min(n, block_bytes // max(1, m * itemsize)))
        rows = max(rows, min(n, MIN_ROWS))
    cols = max(1, min(m, block_bytes // max(1, rows * itemsize)))
    return rows, (m if chunk_size is not None else cols)


def fused_pass(X, a, W, gamma, sigma, residual=None, *, chunk_size=None, block_bytes: int | None = None):
    r"""f(X), and the gradients of (1/n) sum_i r_i f(x_i) in a and W, by blocks of pre-activations.

    The one engine behind :class:`TwoLayer`'s values and gradients and ``flows.EmpiricalRisk``.

    Parameters
    ----------
    X : array of shape (n, D)
        Inputs, already augmented by a column of ones for a network with bias.
    a : array of shape (m,)
    W : array of shape (m, D)
    gamma : float
    sigma : activation object
    residual : None, array of shape (n,), or callable
        None: values only. An array: fixed residuals r. A callable ``residual(f_chunk, rows)`` returns
        the residuals of the samples ``X[rows]`` from their values (``lambda f, rows: f - y[rows]`` for
        the square loss), so that the residual can depend on f within the same pass.
    chunk_size : int, optional
        Samples per block (default: about ``block_bytes`` per (rows, m) block, at least MIN_ROWS).
    block_bytes : int, optional
        Memory of one block (default :func:`default_block_bytes`: 16 MiB on the host, up to 1 GiB on a
        GPU); particles are split into column blocks when m is too large for it.

    Returns
    -------
    f : array of shape (n,)
    grad_a, grad_W : arrays of shapes (m,) and (m, D), or None when ``residual`` is None

    Notes
    -----
    With Z = X W^T block by block, f = gamma sigma(Z) a, and

        dL/da = (gamma/n) sigma(Z)^T r,    dL/dW = (gamma/n) diag(a) (sigma'(Z) * r[:, None])^T X,

    two GEMMs and two matrix-vector products per block; no (n, m, D) array, and one work block of
    (rows, cols) reused. For the library's relu everything happens in that block: relu in place,
    then relu'(Z) = 1{relu(Z) > 0} in place, with r moved to the thin side: 1{Z > 0}^T (r * X).
    With a single column block (cols = m) the value and the gradients come from one pass; otherwise
    each row chunk takes two (residuals first, then gradients), one more GEMM.

    Only the types, shapes and gamma are checked, in O(1): NaN or infinite entries of X, a, W or the residuals come
    out as NaN or inf in the results. :class:`TwoLayer` checks its parameters when it is built and
    its data at every call; ``flows.EmpiricalRisk`` its data once, and a flow stops on a risk that is
    not finite (``flows.FlowDivergenceError``).
    """
    # Type, shape and gamma checks only (no pass over the entries): this is the inner loop of every flow step.
    X, a, W = (check_array(v, name, finite=False) for v, name in ((X, "X"), (a, "a"), (W, "W")))
    gamma = _check_gamma(gamma)
    xp = get_xp(X, a, W)
    if X.ndim != 2 or a.ndim != 1 or W.ndim != 2 or a.shape[0] != W.shape[0] or X.shape[1] != W.shape[1]:
        raise ValueError(f"X, a and W must have shapes (n, D), (m,) and (m, D), got {tuple(X.shape)}, "
                         f"{tuple(a.shape)} and {tuple(W.shape)}")
    if not callable(sigma):
        raise ValueError(f"sigma must be an activation object (see shallow.activations.get_activation), got {sigma!r}")
    r_shape = None if residual is None or callable(residual) else tuple(getattr(residual, "shape", ()))
    if r_shape is not None and r_shape != (X.shape[0],):
        raise ValueError(f"residual has shape {r_shape} but X has n={X.shape[0]} samples: one residual per sample")
    block_bytes = _block_bytes(block_bytes, xp, "block_bytes")
    return _fused_pass(X, a, W, gamma, sigma, residual, chunk_size=chunk_size, block_bytes=block_bytes)


def _fused_pass(X, a, W, gamma, sigma, residual=None, *, chunk_size=None, block_bytes):
    """:func:`fused_pass` without its checks, for arguments that passed them: a flow step calls it on the particles
    it made from checked ones (same shapes and dtype), with the data and gamma of a checked network, and the
    block_bytes of an EmpiricalRisk (an int >= 1, as :func:`_block_bytes` resolves it)."""
    xp = get_xp(X, a, W)
    gamma = float(gamma)
    n, m = X.shape[0], W.shape[0]
    dtype = W.dtype
    relu = _is_relu(sigma)
    rows, cols = _block_shape(n, m, np.dtype(dtype).itemsize, chunk_size, block_bytes)
    need_grad = residual is not None
    f = xp.empty(n, dtype=dtype)  # (n,)
    grad_a = xp.zeros(a.shape, dtype=a.dtype) if need_grad else None  # (m,): zeros_like costs more at small m
    # dL/dW is accumulated transposed, (D, m): X^T G is a faster GEMM shape than G^T X here.
    grad_WT = xp.zeros((W.shape[1], m), dtype=dtype) if need_grad else None
    Z = xp.empty((rows, cols), dtype=dtype)  # the work block
    XR = xp.empty((rows, X.shape[1]), dtype=dtype) if (need_grad and relu) else None  # (rows, D)
    blocks = [slice(j, min(j + cols, m)) for j in range(0, m, cols)]

    def activate(Xc, b, want_derivative):
        """sigma(X_c W_b^T) (relu: in the work block) and sigma' when asked."""
        Zc = Z[: Xc.shape[0], : b.stop - b.start]
        xp.matmul(Xc, W[b].T, out=Zc)
        if relu:
            return xp.maximum(Zc, 0, out=Zc), None
        D = sigma.derivative(Zc) if want_derivative else None
        return sigma(Zc), D

    def accumulate(Xc, b, S, D, r):
        grad_a[b] += r @ S
        if relu:
            # relu'(z) = 1{z > 0} = 1{relu(z) > 0}, written over the block. numpy's comparison into a
            # float output is ~8x faster than its sign(); CuPy's sign is as fast as the comparison.
            if xp is np:
                np.greater(S, 0, out=S, casting="unsafe")
            else:
                xp.sign(S, out=S)
            grad_WT[:, b] += XR[: Xc.shape[0]].T @ S
        else:
            D *= r[:, None]
            grad_WT[:, b] += Xc.T @ D

    for start in range(0, n, rows):
        sl = slice(start, min(start + rows, n))
        Xc = X[sl]
        one_pass = len(blocks) == 1
        if one_pass:
            S = D = None  # the previous chunk's blocks go before this chunk's are made
            S, D = activate(Xc, blocks[0], need_grad)
            fc = S @ a
        else:
            fc = sum(activate(Xc, b, False)[0] @ a[b] for b in blocks)
        fc *= gamma
        f[sl] = fc
        if not need_grad:
            continue
        if callable(residual):
            r = residual(f[sl], sl)
            if tuple(getattr(r, "shape", ())) != (Xc.shape[0],):
                raise ValueError(f"the residual function returned shape {tuple(getattr(r, 'shape', ()))} for a chunk "
                                 f"of {Xc.shape[0]} samples: one residual per sample")
        else:
            r = residual[sl]
        r = r * (gamma / n)
        if relu:
            xp.multiply(Xc, r[:, None], out=XR[: Xc.shape[0]])
        if one_pass:
            accumulate(Xc, blocks[0], S, D, r)
        else:
            for b in blocks:
                accumulate(Xc, b, *activate(Xc, b, True), r)
    if not need_grad:
        return f, None, None
    grad_W = xp.ascontiguousarray(grad_WT.T)  # (m, D)
    grad_W *= a[:, None]
    return f, grad_a, grad_W


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
        Output scale; default 1/m (mean-field). A normal number of the network's dtype (from
        1.2e-38 to 3.4e38 in float32), in which it multiplies f and the gradients.
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
    type; inputs X and residuals r are cast to it, and refused with entries beyond its range) and on
    their device (numpy or cupy).

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
        bias = check_bool(bias, "bias")
        if W.shape[1] < 1 + bias:
            raise ValueError(f"W has shape {tuple(W.shape)}: it needs at least {1 + bias} column(s)"
                             + (" (d inputs plus the bias column)" if bias else ""))
        # the library computes in float32 or float64: long double parameters are refused (float16 ones arrive as
        # float32 from check_array)
        dtype = check_float_dtype(xp.result_type(a.dtype, W.dtype), "the common dtype of a and W")
        self.a = a.astype(dtype, copy=False)  # (m,)
        self.W = W.astype(dtype, copy=False)  # (m, D)
        self.activation = _resolve_activation(activation)
        self.gamma = 1.0 / a.shape[0] if gamma is None else _check_gamma(gamma)
        info = np.finfo(dtype)
        if not float(info.tiny) <= self.gamma <= float(info.max):  # gamma is applied in the network's dtype
            raise ValueError(f"gamma = {self.gamma:.3g} is outside the normal {np.dtype(dtype).name} numbers "
                             f"[{float(info.tiny):.3g}, {float(info.max):.3g}] that the network computes in: f and "
                             "the gradients would be rounded to 0 or inf; build the network in float64")
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
            alpha/m (the mean-field network times the lazy-training scale alpha). For gamma = 1 (a
            teacher f* = sum_j a_j sigma(<w_j, x>)) pass ``scale=m``, or build ``TwoLayer(a, W, gamma=1.0)``.
        rng : None, int or numpy.random.Generator
            Source of randomness. The draw happens on the host (W first, then a), then the arrays
            move to ``device``: a seed gives the same numbers on numpy and cupy.
        activation : str or activation object, default "relu"
        weights : {"gaussian", "sphere"}, default "gaussian"
            Rows w_j ~ N(0, I_D), or uniform on the unit sphere S^{D-1} (D = d + bias >= 2).
        a_init : {"gaussian", "sign", "balanced", "zero", "joint"}, default "gaussian"
            a_j ~ N(0, 1); a_j = +-1 with probability 1/2 each; a_j = s_j |w_j| with a random sign
            s_j (|a_j| = |w_j|, the balanced initialisation that the gradient flow of a 2-homogeneous
            relu network preserves, Chizat & Bach 2018, Sec. 2.2; its discretisation only approximately:
            Euler steps of size h move a_j^2 - |w_j|^2 by O(h) per unit time); a = 0; or, with
            ``weights="sphere"``, each particle theta_j = (a_j, w_j) uniform on the unit sphere S^D of
            R^{1+D} (the homogeneous setting of Chizat & Bach 2018, Sec. 4): then |w_j| < 1 and the
            draw is one (m, 1 + D) Gaussian block, normalised by rows, a its first column.
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
        if not isinstance(weights, str) or weights not in _WEIGHTS:  # an array failed in numpy's truth test
            raise ValueError(f"weights must be one of {_WEIGHTS}, got {weights!r}")
        if not isinstance(a_init, str) or a_init not in _A_INITS:
            raise ValueError(f"a_init must be one of {_A_INITS}, got {a_init!r}")
        if a_init == "joint" and weights != "sphere":
            raise ValueError(f"a_init='joint' draws (a_j, w_j) uniform on a sphere: it needs weights='sphere', got "
                             f"weights={weights!r}")
        dtype = check_float_dtype(dtype)
        bias = check_bool(bias, "bias")
        activation = _resolve_activation(activation)
        rng = check_random_state(rng)
        D = d + bool(bias)
        if a_init == "joint":
            theta = rng.standard_normal((m, 1 + D))  # (m, 1 + D): (a_j, w_j) uniform on S^D once normalised
            theta /= np.linalg.norm(theta, axis=1, keepdims=True)
            a, W = theta[:, 0], theta[:, 1:]
        else:  # W first, then a
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
        """The dtype of the parameters (that of W)."""
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
            raise ValueError(f"{name} has shape {tuple(X.shape)} but the network takes d={self.d} coordinates{extra}")
        return cast_within_range(X, self.dtype, name, "the network")

    def _check_r(self, r, n):
        r = check_array(r, "r", ndim=1)
        get_xp(r, self.W)
        if r.shape[0] != n:
            raise ValueError(f"r has shape {tuple(r.shape)} but X has n={n} samples: one residual per sample")
        return cast_within_range(r, self.dtype, "r", "the network")

    def _inputs(self, X):
        """X validated, in the network's dtype, augmented by a column of ones with a bias: (n, D)."""
        X = self._check_X(X)
        if self.bias:
            xp = self.xp
            X = xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)
        return X

    def __call__(self, X, chunk_size=None):
        """f(x_i) for every row of X.

        Parameters
        ----------
        X : array of shape (n, d)
        chunk_size : int, optional
            Samples per block; by default a (chunk, m) block takes about ``BLOCK_BYTES`` (16 MiB).

        Returns
        -------
        array of shape (n,)
        """
        return fused_pass(self._inputs(X), self.a, self.W, self.gamma, self.activation,
                          chunk_size=chunk_size)[0]

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
            Samples per block; by default a (chunk, m) block takes about ``BLOCK_BYTES`` (16 MiB).

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
        three float (chunk, m) blocks exist at once (Z, sigma(Z) and sigma'(Z), the last scaled by r
        in place), besides the activation's own temporaries; for the library's relu, one float block
        updated in place (Z, relu(Z), then relu'(Z)) and the (chunk, D) block r * X.

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
            Samples per block; by default a (chunk, m) block takes about ``BLOCK_BYTES`` (16 MiB).

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
        X = self._inputs(X)
        n = X.shape[0]
        if n == 0:
            raise ValueError("X must hold at least one sample (n >= 1) to average over, got shape "
                             f"{tuple(X.shape)}")
        if callable(r):
            residual_fn, dtype = r, self.dtype

            def residual(f_chunk, rows):
                rc = check_array(residual_fn(f_chunk, rows), "r(f_chunk, rows)", ndim=1)
                return cast_within_range(rc, dtype, "r(f_chunk, rows)", "the network")  # its length is checked by fused_pass
        else:
            residual = self._check_r(r, n)
        f, grad_a, grad_W = fused_pass(X, self.a, self.W, self.gamma, self.activation, residual,
                                       chunk_size=chunk_size)
        return (f if want_value else None), grad_a, grad_W
