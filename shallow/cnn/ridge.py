r"""A linear classifier on fixed features, in closed form: ridge regression on one-hot targets.

The trained last layer of a network whose other layers are fixed: scattering features (the
fixed-filter CNN of :mod:`shallow.cnn.scattering`), a random or frozen CNN's penultimate layer,
raw pixels. For features Phi (n, p) and labels y with classes c_1 < ... < c_K,

    Z = (Phi - mean) / std                          (each column standardised on the training set)
    W = argmin_W (1/n) |Z W - (Y - b)|^2 + lambda |W|^2 = (Z^T Z / n + lambda I_p)^{-1} Z^T (Y - b) / n,

with Y the (n, K) one-hot targets and b their mean (the bias); predictions argmax_k (Z W + b)_k.
When n <= p the same W is computed from the n x n dual system
W = Z^T (Z Z^T / n + lambda I_n)^{-1} (Y - b) / n (push-through identity): the centred Z has rank at
most n - 1, so Z^T Z is singular unless n > p. Solved in float64 on the features' device. A lambda
below the float64 rounding of the Gram matrix (about 1e-16 of its largest entry) leaves the system
singular in float64 (always in the dual form, and with repeated features in the primal): W is then its
minimum-norm least-squares solution, the limit lambda -> 0, Z^+ (Y - b).

References
----------
1. T. Hastie, R. Tibshirani and J. Friedman, "The Elements of Statistical Learning", 2nd ed.,
   Springer 2009, Sec. 3.4.1 (ridge regression) and 4.2 (linear regression of an indicator matrix).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_array, check_finite_labels, check_positive
from ..backend import get_xp, to_device

__all__ = ["RidgeClassifier"]


def _solve(xp, G, B):
    """G^{-1} B for the symmetric positive semi-definite G = Gram / n + lambda I, or where G is singular in
    float64 the minimum-norm least-squares solution (the limit lambda -> 0).

    G is singular in float64 when lambda is below the rounding of the Gram matrix (about 1e-16 times its
    largest entry) and the Gram matrix is: always in the dual form (Z Z^T has the null vector 1, Z being
    centred) and with repeated or collinear features in the primal. numpy's LU then met an exact zero
    pivot at random ("LinAlgError: Singular matrix" for lambda = 1e-17 at n <= p) and cupy's returns NaN.
    B lies in the range of the Gram matrix ((Y - b) has zero mean; Z^T (Y - b) is in the range of Z^T),
    so the least-squares solution is the ridge solution's limit.
    """
    try:
        X = xp.linalg.solve(G, B)
    except np.linalg.LinAlgError:
        X = None
    if X is None or not bool(xp.isfinite(X).all()):
        X = xp.linalg.lstsq(G, B, rcond=None)[0]
    return X


class RidgeClassifier:
    r"""One-vs-all ridge regression on standardised features (module notes for the formulas).

    Parameters
    ----------
    ridge : float > 0
        lambda in (1/n) |Z W - (Y - b)|^2 + lambda |W|^2.

    Attributes
    ----------
    Set by :meth:`fit`:
    W : array of shape (p, K)
    b : array of shape (K,)
    mean, std : arrays of shape (p,)
        The training features' column means and standard deviations (a constant column has its
        value as mean and std 1: it maps to 0).
    classes_ : numpy array of shape (K,)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Phi, y = rng.standard_normal((40, 5)), np.arange(40) % 2
    >>> Phi[:, 0] += 3 * y  # the first feature carries the label
    >>> RidgeClassifier(1e-3).fit(Phi, y).score(Phi, y)
    1.0
    """

    def __init__(self, ridge=1e-3):
        self.ridge = check_positive(ridge, "ridge")
        self.W = self.b = self.mean = self.std = self.classes_ = None

    #: Rows of Phi scored at a time by :meth:`decision_function` (bounded float64 temporaries).
    BLOCK_ROWS = 2048

    @staticmethod
    def _flat(Phi, name="Phi", dtype=np.float64):
        Phi = check_array(Phi, name)  # real and finite
        if Phi.ndim < 2:
            raise ValueError(f"{name} must hold one feature vector per sample, shape (n, ...), got shape "
                             f"{tuple(Phi.shape)}")
        p = math.prod(Phi.shape[1:])  # not -1: ambiguous for no samples ("cannot reshape array of size 0")
        if p == 0:
            raise ValueError(f"{name} must hold at least one feature per sample, got shape {tuple(Phi.shape)}")
        Phi = Phi.reshape(Phi.shape[0], p)
        return Phi if dtype is None else Phi.astype(dtype)

    def fit(self, Phi, y):
        """Fit on features Phi (n, ...) (flattened per sample) with integer labels y (n,); returns self."""
        xp = get_xp(Phi)
        Phi = self._flat(Phi)
        y_host = np.asarray(to_device(y, "cpu"))
        if y_host.ndim != 1 or y_host.shape[0] != Phi.shape[0]:
            raise ValueError(f"y must hold one label per sample ({Phi.shape[0]}), got shape {y_host.shape}")
        n, p = Phi.shape
        if n < 2:
            raise ValueError(f"fit needs at least 2 samples, got n={n}")
        self.classes_ = np.unique(check_finite_labels(y_host))
        if len(self.classes_) < 2:
            raise ValueError(f"y must hold at least 2 classes to classify, got only {self.classes_.tolist()}")
        Y = xp.asarray((y_host[:, None] == self.classes_[None, :]).astype(np.float64))  # (n, K)
        # mean and std of each column scaled by the power of 2 of its largest modulus (exact, the same
        # numbers in range): the squares of std overflowed beyond 1e154 and underflowed below 1e-154,
        # and a feature's scale changed the predictions
        _, e = xp.frexp(xp.abs(Phi).max(axis=0))  # (p,)
        scaled = xp.ldexp(Phi, -e)
        mean, std = xp.ldexp(scaled.mean(axis=0), e), xp.ldexp(scaled.std(axis=0), e)
        # a constant column (max = min) gets its value as mean and std 1, so that it maps to 0: its
        # computed std is the mean's rounding error (4e-17 for 0.1), not 0, and a new sample whose
        # value differs there was sent 1e16 standard deviations away
        hi = Phi.max(axis=0)
        constant = hi == Phi.min(axis=0)
        self.mean = xp.where(constant, hi, mean)
        self.std = xp.where((std > 0) & ~constant, std, 1.0)
        Z = (Phi - self.mean) / self.std  # (n, p)
        self.b = Y.mean(axis=0)
        if n <= p:  # the dual form: an n x n system (Z^T Z, of rank <= n - 1, is singular at n = p)
            self.W = Z.T @ _solve(xp, Z @ Z.T / n + self.ridge * xp.eye(n), (Y - self.b) / n)
        else:
            self.W = _solve(xp, Z.T @ Z / n + self.ridge * xp.eye(p), Z.T @ (Y - self.b) / n)
        return self

    def _check_fitted(self):
        if self.W is None:
            raise RuntimeError(f"{type(self).__name__}.fit must be called before predict")

    def decision_function(self, Phi):
        """Scores (n, K): Z W + b."""
        self._check_fitted()
        Phi = self._flat(Phi, dtype=None)  # cast to float64 block by block: n x p float64 copies took 6x the input
        if Phi.shape[1] != self.W.shape[0]:
            raise ValueError(f"Phi has {Phi.shape[1]} features per sample but the classifier was fitted on "
                             f"{self.W.shape[0]}")
        xp = get_xp(Phi)
        scores = xp.empty((Phi.shape[0], self.W.shape[1]), dtype=np.float64)  # (n, K)
        for start in range(0, Phi.shape[0], self.BLOCK_ROWS):
            rows = slice(start, start + self.BLOCK_ROWS)
            scores[rows] = ((Phi[rows].astype(np.float64) - self.mean) / self.std) @ self.W + self.b
        return scores

    def predict(self, Phi):
        """Predicted labels (n,), on the host."""
        scores = np.asarray(to_device(self.decision_function(Phi), "cpu"))
        return self.classes_[scores.argmax(axis=1)]

    def score(self, Phi, y):
        """Accuracy on (Phi, y)."""
        pred = self.predict(Phi)
        y_host = np.asarray(to_device(y, "cpu"))
        if y_host.shape != pred.shape:
            raise ValueError(f"y must hold one label per sample, shape {pred.shape}, got shape {y_host.shape}")
        return float(np.mean(pred == y_host))
