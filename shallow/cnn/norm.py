r"""Batch normalisation over all axes but the channel (last) axis.

For x of shape (N, H, W, C) (or (N, C)), with M = N H W entries per channel,

    mu_c = (1/M) sum x_{.c},    v_c = (1/M) sum (x_{.c} - mu_c)^2,    s_c = sqrt(v_c + eps),
    xhat = (x - mu) / s,        y = gamma xhat + beta

in train mode (batch statistics), and the same with the running estimates in place of (mu, v)
in eval mode. The running estimates follow PyTorch: r <- (1 - momentum) r + momentum stat, with
the unbiased variance v M / (M - 1).

Derivatives (train mode; mean_M is the mean over the M entries of a channel):

    backward:      dx = (gamma / s) (dy - mean_M(dy) - xhat mean_M(dy xhat)),
                   dgamma = sum dy xhat,   dbeta = sum dy;
    forward mode:  tmu = mean_M(tx),  tv = 2 mean_M((x - mu) tx),
                   txhat = (tx - tmu - xhat tv / (2 s)) / s,
                   ty = gamma txhat + tgamma xhat + tbeta.

In eval mode the map is affine in x: dx = (gamma / s) dy and ty = gamma tx / s + tgamma xhat + tbeta.

In train mode the loss of a batch is not a mean of per-image losses (every output depends on the
whole batch through mu and v), so the gradient of a mini-batch is not an unbiased estimate of the
full-batch gradient, E[g] = grad L of the seed's SGD slide: for ``vgg_small(width=4)`` on 256
digits, the mean of the gradients of the eight batches of 32 of one epoch is 7% (relative norm)
away from the gradient on all 256 at once; without batch norm it equals it to rounding (1e-15).

On a GPU with ``SHALLOW_FUSED_KERNELS=1`` (opt-in, not yet measured), the train-mode formulas
after the channel sums run as four fused kernels (:mod:`shallow.cnn._fused`) instead of about
25 array operations per layer.

References
----------
1. S. Ioffe and C. Szegedy, "Batch normalization: accelerating deep network training by reducing
   internal covariate shift", ICML 2015, arXiv:1502.03167, Algorithm 1 and Sec. 3.1 (the backward
   formulas, inference with population statistics).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_bool, check_integer, check_positive
from ..backend import get_xp
from . import _fused, _reduce
from ._reduce import dot_rows, sum_rows
from .layers import Layer, _cast, _cast_in, _cast_tangents, _get, _missing_cache, check_dtype, check_real

__all__ = ["BatchNorm2d"]


class BatchNorm2d(Layer):
    """Batch normalisation of channels-last batches (statistics over N, H, W for each channel).

    Parameters
    ----------
    num_features : int
        C, the size of the last axis.
    eps : float
        Added to the variance.
    momentum : float in [0, 1]
        Weight of the new batch statistics in the running estimates (PyTorch's convention, the
        complement of Keras's; PyTorch's ``momentum=None``, a cumulative average, is not offered).
    affine : bool
        Whether to learn gamma (init 1) and beta (init 0).
    dtype : float32 or float64

    Attributes
    ----------
    params["gamma"], params["beta"] : arrays of shape (C,)
    buffers["running_mean"], buffers["running_var"] : arrays of shape (C,), init 0 and 1

    Notes
    -----
    Module notes for the formulas. Any input of shape (..., C) is accepted, so the layer also
    normalises flat (N, C) features.
    """

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=True, dtype=np.float64):
        super().__init__()
        self.num_features = check_integer(num_features, "num_features", minimum=1)
        self.eps = check_positive(eps, "eps")  # eps = inf made every output beta
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        dtype = check_dtype(dtype)
        C = self.num_features
        if check_bool(affine, "affine"):
            self.params["gamma"] = np.ones(C, dtype=dtype)
            self.params["beta"] = np.zeros(C, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(C, dtype=dtype)
        self.buffers["running_var"] = np.ones(C, dtype=dtype)

    def _check(self, x, name="x"):
        check_real(x, name)
        if x.ndim < 2 or x.shape[-1] != self.num_features:
            raise ValueError(f"{name} must have {self.num_features} channels on its last axis, got shape "
                             f"{tuple(x.shape)}")
        if x.size == 0:  # as check_batch says for the other layers (the host passes need a row)
            raise ValueError(f"{name} holds no values (shape {tuple(x.shape)}): a batch needs N >= 1")

    def forward(self, x):
        self._check(x)
        x, dx_dtype = _cast_in(x, self.buffers["running_mean"].dtype)  # the layers' module notes
        xp = get_xp(x)
        C = self.num_features
        M = x.size // C
        gamma, beta = self.params.get("gamma"), self.params.get("beta")
        # every array keeps x's shape (x may be a strided view of a convolution's grid): the
        # channel sums of (N, H, W, C) arrays then reduce (H, W) first, N C sums at a time
        if self.training:
            if M < 2:
                raise ValueError(f"batch normalisation in train mode needs more than one value per channel, "
                                 f"got x of shape {tuple(x.shape)}")
            mu = sum_rows(x) / M
            xc, s2 = _centre(x, mu)  # xc contiguous, kept for the backward pass
            m = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            if gamma is not None and beta is not None and _fused.enabled(x):
                inv_s, a, y = xp.empty_like(mu), xp.empty_like(mu), xp.empty_like(xc)
                _fused.call("bn_stats", s2, mu, gamma, 1.0 / M, self.eps, m, M / (M - 1), inv_s, a, rm, rv)
                _fused.call("bn_apply", xc, a, beta, y)
                self._cache = (xc, inv_s, True, dx_dtype)
                return y
            var = s2 / M
            inv_s = 1.0 / xp.sqrt(var + self.eps)
            rm *= 1 - m
            rm += m * mu
            rv *= 1 - m
            rv += (m * M / (M - 1)) * var
        else:
            mu, inv_s = self.buffers["running_mean"], 1.0 / xp.sqrt(self.buffers["running_var"] + self.eps)
            xc = x - mu
        a = inv_s * gamma if gamma is not None else inv_s
        self._cache = (xc, inv_s, self.training, dx_dtype)
        return _affine(xc, a, beta)

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        xc, inv_s, training, dx_dtype = self._cache
        dy = _cast(dy, xc.dtype)
        M = xc.size // self.num_features
        sum_dy, sum_dy_xc = _sums(dy, xc)  # dy may be a strided view: no copy of it
        if training and need_input_grad and "gamma" in self.params and _fused.enabled(dy):
            xp = get_xp(dy)
            dgamma, dbeta, a, k1, k2 = (xp.empty_like(inv_s) for _ in range(5))
            _fused.call("bn_grad_stats", sum_dy, sum_dy_xc, inv_s, self.params["gamma"], 1.0 / M,
                        dgamma, dbeta, a, k1, k2)
            self._store_grad("gamma", dgamma)
            self._store_grad("beta", dbeta)
            dx = xp.empty(xc.shape, dtype=xc.dtype)
            _fused.call("bn_grad_apply", dy, xc, a, k1, k2, dx)
            return _cast(dx, dx_dtype)
        sum_dy_xhat = sum_dy_xc * inv_s
        if "gamma" in self.params:
            self._store_grad("gamma", sum_dy_xhat)
            self._store_grad("beta", sum_dy)
            a = self.params["gamma"] * inv_s
        else:
            a = inv_s
        if not need_input_grad:
            return None
        if not training:
            return _cast(_affine(dy, a), dx_dtype)
        # dx = a (dy - mean(dy) - xhat mean(dy xhat)) with xhat = xc inv_s
        return _cast(_affine(dy, a, -a * sum_dy / M, xc, -a * inv_s * sum_dy_xhat / M), dx_dtype)

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        xc, inv_s, training, _ = self._cache
        xhat = xc * inv_s
        xp = get_xp(y)
        gamma = self.params.get("gamma")
        ty = None
        if tx is not None:  # of x's shape (Layer checks it)
            tx = _cast(tx, xc.dtype)
            if training:
                M = tx.size // self.num_features
                # tv / (2 s^2) = mean(xhat tx) / s, so txhat = (tx - mean(tx) - xhat mean(xhat tx)) / s
                txhat = tx - sum_rows(tx) / M
                txhat -= xhat * (dot_rows(xhat, tx) / M)
                txhat *= inv_s
            else:
                txhat = tx * inv_s
            ty = txhat * gamma if gamma is not None else txhat
        tparams = _cast_tangents(tparams, xc.dtype)
        tgamma, tbeta = _get(tparams, "gamma"), _get(tparams, "beta")
        if tgamma is not None and gamma is not None:
            ty = xhat * tgamma if ty is None else ty + xhat * tgamma
        if tbeta is not None and gamma is not None:
            ty = xp.broadcast_to(tbeta, xhat.shape) if ty is None else ty + tbeta
        if ty is not None:
            ty = xp.ascontiguousarray(ty)
        return y, ty

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={'gamma' in self.params}"


# ---------------------------------------------------------------------------- host passes
# numpy evaluates ``x * a`` with a per-channel vector a in inner loops of C elements (a
# broadcast operand restarts every C entries), and ``a * x + b * z + c`` one operation at a time,
# each reading and writing whole arrays of the size of the batch. On the host the passes below
# run instead on the trailing (W, C) axes merged into one of length W C (with the vectors tiled
# to that length), block by block along the batch, so that the temporaries of a block stay in
# the core's cache. In the training step of ``benchmarks/cnn_step.py`` (float32, batch 128, one
# thread) the six normalisation layers took 60 ms instead of 78 (``benchmarks/cnn_layers.py``).
# On a device every operation is a kernel launch, and the plain expressions (one launch per
# operation, no blocks) are used.

#: Elements of one block of the host passes (256 KiB of float32).
BLOCK_ELEMENTS = 1 << 16


def _rows(a, C):
    """``a`` of shape (..., C) as (N, R, L) without a copy, L a multiple of C: the last two axes of
    an (N, H, W, C) array merged when they are contiguous, else (N, R, C)."""
    if a.ndim == 4 and a.strides[3] == a.itemsize and a.strides[2] == C * a.itemsize:
        return a.reshape(a.shape[0], a.shape[1], a.shape[2] * C)
    return a.reshape(a.shape[0], -1, C)


def _blocks(n, row_size):
    """Slices of [0, n) along the first axis, about BLOCK_ELEMENTS elements each."""
    step = max(1, BLOCK_ELEMENTS // max(1, row_size))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _tiled(v, L):
    """The per-channel vector v repeated to length L (a multiple of its length)."""
    return np.tile(v, L // v.shape[0])


def _fold(partial, C):
    """Per-channel totals (C,) of partial sums over the tiled axis (L,)."""
    return partial.reshape(-1, C).sum(axis=0)


def _centre(x, mu):
    """(x - mu, sum of (x - mu)^2 per channel), the centred array contiguous in x's shape."""
    if _reduce.on_device(x):
        xc = x - mu
        return xc, dot_rows(xc, xc)
    C = mu.shape[0]
    X = _rows(x, C)
    xc = np.empty(X.shape, dtype=np.result_type(x, mu))
    mu_t = _tiled(mu, X.shape[-1])
    s2 = np.zeros(X.shape[-1], dtype=xc.dtype)
    for b in _blocks(X.shape[0], X[0].size):
        np.subtract(X[b], mu_t, out=xc[b])
        s2 += np.einsum("nrl,nrl->l", xc[b], xc[b])
    return xc.reshape(x.shape), _fold(s2, C)


def _sums(dy, xc):
    """(sum of dy, sum of dy * xc) per channel, in one pass over dy."""
    if _reduce.on_device(dy) or _reduce.on_device(xc):
        return sum_rows(dy), dot_rows(dy, xc)
    C = xc.shape[-1]
    D, X = _rows(dy, C), _rows(xc, C)
    if D.shape != X.shape:  # the two arrays merge differently
        return sum_rows(dy), dot_rows(dy, xc)
    dtype = np.result_type(dy, xc)
    s, sx = np.zeros(D.shape[-1], dtype), np.zeros(D.shape[-1], dtype)
    for b in _blocks(D.shape[0], D[0].size):
        s += np.einsum("nrl->l", D[b])
        sx += np.einsum("nrl,nrl->l", D[b], X[b])
    return _fold(s, C), _fold(sx, C)


def _affine(x, a, c=None, z=None, k=None):
    """``x a + z k + c`` with per-channel vectors a, k, c (z, k and c optional), a new contiguous array."""
    if _reduce.on_device(x) or (z is not None and _reduce.on_device(z)):
        y = x * a
        if z is not None:
            y += z * k
        if c is not None:
            y += c
        return y
    C = a.shape[0]
    X, Z = _rows(x, C), (None if z is None else _rows(z, C))
    if Z is not None and Z.shape != X.shape:  # merged differently: both as (N, R, C)
        X, Z = x.reshape(x.shape[0], -1, C), z.reshape(z.shape[0], -1, C)
    L = X.shape[-1]
    out = np.empty(X.shape, dtype=np.result_type(*(v for v in (x, a, c, z, k) if v is not None)))
    a_t, k_t, c_t = (None if v is None else _tiled(v, L) for v in (a, k, c))
    blocks = _blocks(X.shape[0], X[0].size)
    tmp = None if Z is None else np.empty((blocks[0].stop,) + X.shape[1:], dtype=out.dtype)
    for b in blocks:
        o = out[b]
        np.multiply(X[b], a_t, out=o)
        if Z is not None:
            t = tmp[:b.stop - b.start]
            np.multiply(Z[b], k_t, out=t)
            o += t
        if c_t is not None:
            o += c_t
    return out.reshape(x.shape)
