r"""Spherical harmonics on S^{d-1} in any dimension d >= 2.

Conventions (DESIGN.md, REFERENCES.md):

* P_{k,d} is the Legendre (normalised Gegenbauer) polynomial of degree k in dimension d, with
  P_{k,d}(1) = 1. P_0 = 1, P_1 = t and

      P_{k+1}(t) = [(2k + d - 2) t P_k(t) - k P_{k-1}(t)] / (k + d - 2).

  For d = 2 it is the Chebyshev polynomial cos(k arccos t); for d = 3 the Legendre polynomial.
* N(d, k) = (2k + d - 2)/k * C(k + d - 3, k - 1) for k >= 1 and N(d, 0) = 1 is the dimension of
  the degree-k harmonics.
* Harmonics are orthonormal in L2(tau_d), tau_d the uniform probability measure, so that the
  addition theorem reads sum_j Y_kj(x) Y_kj(y) = N(d, k) P_{k,d}(<x, y>).
* Funk-Hecke: int g(<x, y>) Y_k(y) dtau_d(y) = mu_k Y_k(x), with
  mu_k = int_{-1}^{1} g(t) P_{k,d}(t) w_d(t) dt, and g(<x, y>) = sum_k mu_k N(d, k) P_{k,d}(<x, y>).

References
----------
1. K. Atkinson and W. Han, "Spherical Harmonics and Approximations on the Unit Sphere", 2012,
   Sec. 2.1 (recurrence (2.89), addition theorem 2.9, Funk-Hecke 2.22).
2. F. Dai and Y. Xu, "Approximation Theory and Harmonic Analysis on Spheres and Balls", 2013.
"""

from __future__ import annotations

from math import comb

import numpy as np
from scipy import special

from ._validation import check_array, check_dimension, check_integer
from .backend import get_xp

__all__ = [
    "legendre",
    "legendre_all",
    "num_harmonics",
    "project_zonal",
]


def _check_t(t):
    t = check_array(t, "t")
    xp = get_xp(t)
    if t.size and float(xp.abs(t).max()) > 1 + 1e-12:
        raise ValueError(f"t must lie in [-1, 1], got a value of modulus {float(xp.abs(t).max()):.6g}")
    return t


def legendre_all(kmax, d, t):
    """P_{k,d}(t) for every k = 0, ..., kmax by the three-term recurrence.

    Parameters
    ----------
    kmax : int
        Highest degree, kmax >= 0.
    d : int
        Ambient dimension, d >= 2.
    t : array_like of any shape, values in [-1, 1]
        numpy or cupy; the dtype is kept (integers become float64).

    Returns
    -------
    P : array of shape (kmax + 1, *t.shape)
        P[k] = P_{k,d}(t).

    Notes
    -----
    The normalised polynomials satisfy |P_{k,d}(t)| <= 1 on [-1, 1], so the forward recurrence
    neither overflows nor loses accuracy where scipy's unnormalised Gegenbauer polynomials
    C_k^{(d-2)/2} (which grow like k^{d-3}) overflow, near d = 1000 and k = 350.

    Examples
    --------
    >>> legendre_all(2, 3, np.array([0.5]))[:, 0].tolist()   # Legendre: 1, t, (3t^2 - 1)/2
    [1.0, 0.5, -0.125]
    """
    kmax = check_integer(kmax, "kmax", minimum=0)
    d = check_dimension(d)
    t = _check_t(t)
    xp = get_xp(t)
    P = xp.empty((kmax + 1, *t.shape), dtype=t.dtype)
    P[0] = 1
    if kmax >= 1:
        P[1] = t
    for k in range(1, kmax):
        # P_{k+1} = [(2k + d - 2) t P_k - k P_{k-1}] / (k + d - 2), written with two scalar factors.
        a = (2 * k + d - 2) / (k + d - 2)
        b = k / (k + d - 2)
        xp.multiply(P[k], t, out=P[k + 1])
        P[k + 1] *= a
        P[k + 1] -= b * P[k - 1]
    return P


def legendre(k, d, t):
    """P_{k,d}(t), the degree-k Legendre polynomial of dimension d with P_{k,d}(1) = 1.

    Same arguments as :func:`legendre_all`; returns an array of t's shape. Memory is O(t.size),
    whatever k.

    Examples
    --------
    >>> float(legendre(3, 2, np.array(0.3)))   # Chebyshev: cos(3 arccos 0.3)
    -0.792
    """
    k = check_integer(k, "k", minimum=0)
    d = check_dimension(d)
    t = _check_t(t)
    xp = get_xp(t)
    if k == 0:
        return xp.ones_like(t)
    prev, cur = xp.ones_like(t), t.copy()
    for j in range(1, k):
        prev, cur = cur, ((2 * j + d - 2) / (j + d - 2)) * t * cur - (j / (j + d - 2)) * prev
    return cur


def num_harmonics(d, k) -> int:
    """N(d, k), the dimension of the degree-k spherical harmonics on S^{d-1} (an exact Python int).

    N(d, 0) = 1 and N(d, k) = (2k + d - 2)/k * C(k + d - 3, k - 1) for k >= 1; for d = 2 it is 2
    (cos k theta, sin k theta) and for d = 3 it is 2k + 1.

    Examples
    --------
    >>> [num_harmonics(3, k) for k in range(4)]
    [1, 3, 5, 7]
    """
    d = check_dimension(d)
    k = check_integer(k, "k", minimum=0)
    if k == 0:
        return 1
    return (2 * k + d - 2) * comb(k + d - 3, k - 1) // k


def _jacobi_rule(q, a, b):
    """Gauss-Jacobi nodes and weights for (1 - u)^a (1 + u)^b on [-1, 1]."""
    if a == 0 and b == 0:
        return special.roots_legendre(q)
    return special.roots_jacobi(q, a, b)


def project_zonal(g, d, kmax, *, breakpoints=(), q=None):
    """Funk-Hecke coefficients mu_k = int_{-1}^{1} g(t) P_{k,d}(t) w_d(t) dt, k = 0, ..., kmax.

    Then g(<x, y>) = sum_k mu_k N(d, k) P_{k,d}(<x, y>) in L2(tau_d), and the integral operator
    with kernel g(<x, y>) acts on degree-k harmonics as multiplication by mu_k.

    Parameters
    ----------
    g : callable
        Vectorised function of t in [-1, 1] (numpy in, numpy out).
    d : int
        Ambient dimension, d >= 2.
    kmax : int
        Highest degree, kmax >= 0.
    breakpoints : sequence of floats in (-1, 1)
        Points where g is not smooth (0 for relu, step, abs). The integral is split there and each
        piece gets its own Gauss-Jacobi rule carrying the endpoint singularity (1 -+ t)^{(d-3)/2},
        so that quadrature converges spectrally for piecewise-analytic g.
    q : int, optional
        Nodes per piece; default max(64, 2 kmax + 32), exact for P_k times a polynomial of degree
        < 2q - kmax on each piece.

    Returns
    -------
    mu : numpy array of shape (kmax + 1,)

    Examples
    --------
    >>> mu = project_zonal(lambda t: t**2, 3, 2)      # t^2 = 1/3 P_0 + 2/3 P_2 in d = 3
    >>> np.round(mu * [1, 3, 5], 12).tolist()           # mu_k N(3, k): the Legendre coefficients
    [0.333333333333, 0.0, 0.666666666667]
    """
    if not callable(g):
        raise TypeError(f"g must be a callable of t, got {type(g).__name__}")
    d = check_dimension(d)
    kmax = check_integer(kmax, "kmax", minimum=0)
    q = max(64, 2 * kmax + 32) if q is None else check_integer(q, "q", minimum=1)
    cuts = sorted(float(c) for c in breakpoints)
    if any(not -1 < c < 1 for c in cuts):
        raise ValueError(f"breakpoints must lie in (-1, 1), got {cuts}")
    edges = [-1.0, *cuts, 1.0]
    a = 0.5 * (d - 3)
    log_c = (special.gammaln(0.5 * d) - 0.5 * np.log(np.pi) - special.gammaln(0.5 * (d - 1)))
    nodes, weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        half = 0.5 * (hi - lo)
        # Singular weight (1 - t)^a at hi = 1 and/or (1 + t)^a at lo = -1 goes into the rule;
        # the rest of (1 - t^2)^a is smooth on [lo, hi] and multiplies the integrand.
        a_right = a if hi == 1.0 else 0.0
        a_left = a if lo == -1.0 else 0.0
        u, w = _jacobi_rule(q, a_right, a_left)
        t = lo + half * (u + 1)
        # (1 - t) = half (1 - u) on a right-end piece, (1 + t) = half (1 + u) on a left-end piece.
        log_w = np.log(w) + np.log(half) + log_c
        log_w += a_right * np.log(half) if a_right else a * np.log1p(-t)
        log_w += a_left * np.log(half) if a_left else a * np.log1p(t)
        nodes.append(t)
        weights.append(np.exp(log_w))
    t = np.concatenate(nodes)
    w = np.concatenate(weights)
    values = np.asarray(g(t), dtype=np.float64)
    if values.shape != t.shape:
        raise ValueError(f"g must map an array of shape {t.shape} to the same shape, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("g returned NaN or infinite values on [-1, 1]")
    return legendre_all(kmax, d, t) @ (w * values)
