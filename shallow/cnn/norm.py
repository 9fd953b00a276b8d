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

from .._validation import check_integer
from ..backend import get_xp
from . import _fused
from ._reduce import dot_rows, sum_rows
from .layers import Layer, _get, _missing_cache, check_dtype

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
        Weight of the new batch statistics in the running estimates.
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
        if not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        dtype = check_dtype(dtype)
        C = self.num_features
        if affine:
            self.params["gamma"] = np.ones(C, dtype=dtype)
            self.params["beta"] = np.zeros(C, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(C, dtype=dtype)
        self.buffers["running_var"] = np.ones(C, dtype=dtype)

    def _check(self, x, name="x"):
        if x.ndim < 2 or x.shape[-1] != self.num_features:
            raise ValueError(f"{name} must have {self.num_features} channels on its last axis, got shape "
                             f"{tuple(x.shape)}")

    def forward(self, x):
        self._check(x)
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
            xc = x - mu  # contiguous, kept for the backward pass
            m = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            s2 = dot_rows(xc, xc)
            if gamma is not None and beta is not None and _fused.enabled(x):
                inv_s, a, y = xp.empty_like(mu), xp.empty_like(mu), xp.empty_like(xc)
                _fused.call("bn_stats", s2, mu, gamma, 1.0 / M, self.eps, m, M / (M - 1), inv_s, a, rm, rv)
                _fused.call("bn_apply", xc, a, beta, y)
                self._cache = (xc, inv_s, True)
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
        y = xc * a
        if beta is not None:
            y += beta
        self._cache = (xc, inv_s, self.training)
        return y

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        xc, inv_s, training = self._cache
        if dy.shape != xc.shape:
            raise ValueError(f"dy must have the shape of the layer's output, {tuple(xc.shape)}, got {tuple(dy.shape)}")
        M = xc.size // self.num_features
        sum_dy = sum_rows(dy)  # dy may be a strided view: no copy of it
        sum_dy_xc = dot_rows(dy, xc)
        if training and need_input_grad and "gamma" in self.params and _fused.enabled(dy):
            xp = get_xp(dy)
            dgamma, dbeta, a, k1, k2 = (xp.empty_like(inv_s) for _ in range(5))
            _fused.call("bn_grad_stats", sum_dy, sum_dy_xc, inv_s, self.params["gamma"], 1.0 / M,
                        dgamma, dbeta, a, k1, k2)
            self._store_grad("gamma", dgamma)
            self._store_grad("beta", dbeta)
            dx = xp.empty(xc.shape, dtype=xc.dtype)
            _fused.call("bn_grad_apply", dy, xc, a, k1, k2, dx)
            return dx
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
            return dy * a
        # dx = a (dy - mean(dy) - xhat mean(dy xhat)) with xhat = xc inv_s
        dx = xc * (-a * inv_s * sum_dy_xhat / M)
        dx += dy * a
        dx -= a * sum_dy / M
        return dx

    def jvp(self, x, tx=None, tparams=None):
        y = self.forward(x)
        xc, inv_s, training = self._cache
        xhat = xc * inv_s
        xp = get_xp(y)
        gamma = self.params.get("gamma")
        ty = None
        if tx is not None:
            self._check(tx, "tx")
            if tx.shape != x.shape:
                raise ValueError(f"tx must have the shape of x, {tuple(x.shape)}, got {tuple(tx.shape)}")
            if training:
                M = tx.size // self.num_features
                # tv / (2 s^2) = mean(xhat tx) / s, so txhat = (tx - mean(tx) - xhat mean(xhat tx)) / s
                txhat = tx - sum_rows(tx) / M
                txhat -= xhat * (dot_rows(xhat, tx) / M)
                txhat *= inv_s
            else:
                txhat = tx * inv_s
            ty = txhat * gamma if gamma is not None else txhat
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
