r"""The unit sphere S^{d-1} in R^d and its uniform probability measure tau_d.

Conventions (DESIGN.md): d is the ambient dimension, so d = 2 is the circle and d = 3 the usual
sphere; tau_d is the uniform *probability* measure. Bach (2017) writes S^d in R^{d+1}: his d is
our d - 1.

The law of t = <x, e> for x ~ tau_d and a fixed unit e has the density

    w_d(t) = c_d (1 - t^2)^{(d-3)/2} on [-1, 1],   c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)),

so that integrals of zonal functions reduce to one dimension:
int g(<x, e>) dtau_d(x) = int_{-1}^{1} g(t) w_d(t) dt.
"""

from __future__ import annotations

import decimal
import math
import numbers

import numpy as np
from scipy import special

from ._validation import (check_array, check_dimension, check_float_dtype, check_integer, check_points,
                          check_random_state)
from .backend import get_xp, row_norms, to_device

__all__ = [
    "sample_sphere",
    "sphere_area",
    "inner_product_density",
    "log_inner_product_constant",
    "sample_inner_product",
    "gegenbauer_quadrature",
    "sphere_quadrature",
    "gauss_jacobi",
    "lift",
]


def sample_sphere(n, d, rng=None, dtype=np.float64, device: str = "cpu"):
    """Draw n points uniformly on S^{d-1} (normalised Gaussian vectors).

    Parameters
    ----------
    n : int
        Number of points, n >= 0.
    d : int
        Ambient dimension, d >= 2.
    rng : None, int or numpy.random.Generator
        Source of randomness; the draw happens on the host, so a seed gives the same points on
        every device.
    dtype : numpy dtype
        float64 (default) or float32.
    device : {"cpu", "gpu"}
        Where the returned array lives.

    Returns
    -------
    X : array of shape (n, d)
        Rows of unit Euclidean norm.

    Examples
    --------
    >>> X = sample_sphere(4, 3, rng=0)
    >>> X.shape, bool(np.allclose(np.linalg.norm(X, axis=1), 1))
    ((4, 3), True)
    """
    n = check_integer(n, "n", minimum=0)
    d = check_dimension(d)
    dtype = check_float_dtype(dtype)
    rng = check_random_state(rng)
    G = rng.standard_normal((n, d))  # (n, d)
    norms = np.linalg.norm(G, axis=1, keepdims=True)
    # A zero Gaussian vector has probability 0; guard anyway rather than divide by zero.
    while n and (norms == 0).any():  # pragma: no cover
        bad = (norms[:, 0] == 0)
        G[bad] = rng.standard_normal((int(bad.sum()), d))
        norms = np.linalg.norm(G, axis=1, keepdims=True)
    X = (G / norms).astype(dtype, copy=False)
    return to_device(X, device)


def sphere_area(d) -> float:
    """Surface area |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2) of the unit sphere in R^d.

    Parameters
    ----------
    d : int
        Ambient dimension, an integer >= 2.

    Returns
    -------
    float
        Correctly rounded (computed to 50 digits, then rounded once); subnormal from d = 439 on, 0.0 from
        d = 456 on (underflow).

    Raises
    ------
    ValueError
        For d not an integer >= 2.

    Notes
    -----
    With k = floor(d/2): |S^{d-1}| = 2 pi^k / (k - 1)! for even d and 2 (4 pi)^k k! / (2k)! for odd d
    (Gamma(k + 1/2) = (2k)! sqrt(pi) / (4^k k!)), evaluated in 50-digit decimal arithmetic with exact
    factorials. exp(d/2 log pi - log Gamma(d/2)) lost the rounding of its exponent, of size d log d:
    3e-14 relative at d = 100, 2e-13 at d = 400.

    Examples
    --------
    >>> sphere_area(3) == 4 * np.pi
    True
    """
    d = check_dimension(d)
    if d > 1000:  # below 1e-700: 0.0 in float64
        return 0.0
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        k = d // 2
        if d % 2 == 0:
            area = 2 * _PI_DECIMAL**k / math.factorial(k - 1)
        else:
            area = 2 * (4 * _PI_DECIMAL)**k * math.factorial(k) / math.factorial(2 * k)
    return float(area)  # float(Decimal) rounds correctly, subnormals included


#: pi to 60 digits, for :func:`sphere_area`.
_PI_DECIMAL = decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494")


def log_inner_product_constant(d) -> float:
    """log c_d with c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)), the constant of w_d.

    Parameters
    ----------
    d : int
        Ambient dimension, an integer >= 2.

    Returns
    -------
    float
        Accurate to a few eps for any d (no difference of two large log-gammas).

    Raises
    ------
    ValueError
        For d not an integer >= 2.
    """
    d = check_dimension(d)
    return float(_log_gamma_ratio(0.5 * (d - 1), 0.5) - 0.5 * np.log(np.pi))


def _log_gamma_ratio(x, t) -> float:
    """log(Gamma(x + t) / Gamma(x)) for x > 0 and x + t > 0, to a few eps whatever x.

    A difference of two log-gammas of size x log x loses x log(x) eps (1e-7 relative at x = 5e7).
    For x + min(t, 0) >= 10, Stirling's series of each log-gamma (DLMF 5.11.1), subtracted term
    by term: (x - 1/2) log1p(t/x) + t log(x + t) - t + S(x + t) - S(x), with S(z) = 1/(12 z)
    - 1/(360 z^3) + 1/(1260 z^5) - 1/(1680 z^7) + 1/(1188 z^9) - 691/(360360 z^11), truncated
    below 1e-15.
    """
    x, t = float(x), float(t)
    if x + min(t, 0.0) < 10:
        return float(special.gammaln(x + t) - special.gammaln(x))
    return (x - 0.5) * math.log1p(t / x) + t * math.log(x + t) - t + (_stirling_tail(x + t) - _stirling_tail(x))


def _stirling_tail(z):
    """S(z) = log Gamma(z) - (z - 1/2) log z + z - log(2 pi) / 2 for z >= 10, to below 1e-15 (DLMF 5.11.1)."""
    z2 = z * z
    inner = 1 / 1680 - (1 / 1188 - 691 / (360360 * z2)) / z2
    return (1 / 12 - (1 / 360 - (1 / 1260 - inner / z2) / z2) / z2) / z


def _log_jacobi_mass(a, b) -> float:
    """log mu_0, mu_0 = int_{-1}^1 (1 - u)^a (1 + u)^b du = 2^{a+b+1} B(a + 1, b + 1), to 25 eps of max(1, |log mu_0|).

    With x, y = max(a, b) + 1, min(a, b) + 1: for y < 10, (x + y - 1) log 2 + log Gamma(y) - log(Gamma(x + y) /
    Gamma(x)) (:func:`_log_gamma_ratio`); otherwise Stirling's series of the three log-gammas with their logarithms
    gathered, log(2 pi / (x + y)) / 2 + (x - 1/2) log1p(r) + (y - 1/2) log1p(-r) + S(x) + S(y) - S(x + y),
    r = (x - y) / (x + y) (mpmath: 23 eps at worst for a, b from -0.9 to 1e12). The sum of log-gammas of size
    x log x lost x log(x) eps: 1.3e-10 at a = b = 5e4, where log mu_0 = -4.8.
    """
    x, y = max(a, b) + 1.0, min(a, b) + 1.0
    if y < 10:
        return float((x + y - 1) * math.log(2.0) + special.gammaln(y) - _log_gamma_ratio(x, y))
    r = (x - y) / (x + y)
    return (0.5 * math.log(2 * math.pi / (x + y)) + (x - 0.5) * math.log1p(r) + (y - 0.5) * math.log1p(-r)
            + _stirling_tail(x) + _stirling_tail(y) - _stirling_tail(x + y))


def inner_product_density(t, d):
    """Density w_d(t) = c_d (1 - t^2)^{(d-3)/2} of <x, e> for x ~ tau_d, e a fixed unit vector.

    Zero outside [-1, 1]. For d = 2 it is the arcsine law 1 / (pi sqrt(1 - t^2)), infinite at
    t = +-1; for d = 3 it is uniform, 1/2; as d grows it concentrates like N(0, 1/d).

    Parameters
    ----------
    t : array_like
        Any shape; numpy or cupy.
    d : int
        Ambient dimension, d >= 2.

    Returns
    -------
    array of t's shape
        The density, computed through logarithms so that d = 10^4 does not overflow.
    """
    d = check_dimension(d)
    t = check_array(t, "t", finite=False)
    xp = get_xp(t)
    if bool(xp.isnan(t).any()):
        raise ValueError("t contains NaN")
    inside = xp.abs(t) < 1
    safe = xp.where(inside, t, 0.0)
    # log(1 - t^2) = log1p(-t) + log1p(t): 1 - t * t cancels near t = +-1 (1e-8 relative error at t = 1 - 1e-12).
    dens = xp.exp(log_inner_product_constant(d) + 0.5 * (d - 3) * (xp.log1p(-safe) + xp.log1p(safe)))
    edge_value = {2: np.inf, 3: 0.5}.get(d, 0.0)
    return xp.where(inside, dens, xp.where(xp.abs(t) == 1, edge_value, 0.0)).astype(t.dtype, copy=False)


def sample_inner_product(n, d, rng=None, dtype=np.float64, device: str = "cpu"):
    """Draw n samples of t = <x, e>, x ~ tau_d: t = 2 B - 1 with B ~ Beta((d-1)/2, (d-1)/2).

    Parameters
    ----------
    n : int
        Number of samples, n >= 0.
    d : int
        Ambient dimension, d >= 2.
    rng : None, int or numpy.random.Generator
        Source of randomness; the draw happens on the host, so a seed gives the same samples on
        every device.
    dtype : numpy dtype
        float64 (default) or float32.
    device : {"cpu", "gpu"}
        Where the returned array lives.

    Returns
    -------
    t : array of shape (n,)
        Values in [-1, 1], with the density w_d of :func:`inner_product_density`.

    Raises
    ------
    ValueError
        For n or d not an integer in range, or a dtype other than float32 and float64.
    """
    n = check_integer(n, "n", minimum=0)
    d = check_dimension(d)
    dtype = check_float_dtype(dtype)
    rng = check_random_state(rng)
    half = 0.5 * (d - 1)
    t = (2 * rng.beta(half, half, size=n) - 1).astype(dtype, copy=False)
    return to_device(t, device)


def gegenbauer_quadrature(q, d):
    """Gauss quadrature for the density w_d: q nodes exact for polynomials of degree <= 2q - 1.

    int_{-1}^{1} p(t) w_d(t) dt = sum_i weights_i p(nodes_i) for deg p <= 2q - 1. These are the
    Gauss-Jacobi rules with exponents a = b = (d - 3)/2 (Gauss-Chebyshev for d = 2, Gauss-Legendre
    for d = 3), with weights normalised to sum to 1 because w_d is a probability density.

    Parameters
    ----------
    q : int
        Number of nodes, q >= 1.
    d : int
        Ambient dimension, d >= 2.

    Returns
    -------
    nodes, weights : numpy arrays of shape (q,)
        Nodes increasing in (-1, 1); positive weights summing to 1.

    Examples
    --------
    >>> t, w = gegenbauer_quadrature(3, 3)   # Gauss-Legendre: E[t^2] = 1/3 for d = 3
    >>> round(float(w @ t**2), 14) == round(1 / 3, 14)
    True
    """
    q = check_integer(q, "q", minimum=1)
    d = check_dimension(d)
    a = 0.5 * (d - 3)
    nodes, log_weights = gauss_jacobi(q, a, a)
    weights = np.exp(log_weights - log_weights.max())
    return nodes, weights / weights.sum()


def sphere_quadrature(degree, d, *, max_points=10**7):
    r"""Points and weights on S^{d-1} that integrate every polynomial of degree <= ``degree`` exactly against tau_d.

    A product rule: x = (sqrt(1 - t^2) y, t) with t from :func:`gegenbauer_quadrature` (q = floor(degree/2) + 1
    nodes, exact to degree 2q - 1 >= degree) and y from the rule of the same degree on S^{d-2}, down to the
    circle, where degree + 1 equally spaced angles integrate every trigonometric polynomial of that degree.

    Parameters
    ----------
    degree : int
        The highest degree integrated exactly, >= 0.
    d : int
        Ambient dimension, d >= 2.
    max_points : int
        Refuse rules of more points than this (ValueError), default 10^7.

    Returns
    -------
    points : numpy array of shape (N, d)
        On S^{d-1} (unit rows, float64), N = (degree + 1) (floor(degree/2) + 1)^(d - 2).
    weights : numpy array of shape (N,)
        Positive, summing to 1.

    Notes
    -----
    Exactness: a monomial of degree a in t and b in the other coordinates is t^a (1 - t^2)^{b/2}
    times a monomial of degree b in y; the y rule integrates the latter exactly, to 0 for odd b,
    which leaves polynomials of degree a + b <= degree in t, integrated exactly against w_d by
    Gauss's rule. With :func:`shallow.harmonics.harmonic_energy` (``weights=``) it gives the
    energies of a polynomial f of degree p exactly up to degree ``degree - p``, at a cost linear in
    the number of points where it exceeds sum_{k <= kmax} N(d, k) (projection on the basis of
    harmonics; quadratic otherwise). That number grows like degree^(d - 1): a rule for small d and
    degree (S^2, S^3; at d = 4 and degree 70, 92000 points, kmax = 35 takes harmonic_energy 5 s, against
    9 min summed over pairs).

    Examples
    --------
    >>> X, w = sphere_quadrature(4, 3)                         # E[x_1^4] = 3 / (d (d + 2)) = 1/5 on S^2
    >>> X.shape, round(float(w @ X[:, 0] ** 4), 14) == round(1 / 5, 14)
    ((15, 3), True)
    """
    degree = check_integer(degree, "degree", minimum=0)
    d = check_dimension(d)
    max_points = check_integer(max_points, "max_points", minimum=1)
    q = degree // 2 + 1
    n_points = (degree + 1) * q ** (d - 2)
    if n_points > max_points:
        raise ValueError(f"a rule of degree {degree} on S^{d - 1} has {n_points:.3g} points, more than max_points="
                         f"{max_points}: the product rule grows like degree^(d - 1); sample the sphere instead "
                         "(sample_sphere, a Monte Carlo rule)")
    angles = 2 * np.pi * np.arange(degree + 1) / (degree + 1)
    points = np.column_stack([np.cos(angles), np.sin(angles)])  # (degree + 1, 2)
    weights = np.full(degree + 1, 1.0 / (degree + 1))
    for k in range(3, d + 1):  # from S^{k-2} to S^{k-1}
        t, wt = gegenbauer_quadrature(q, k)
        r = np.sqrt(1 - t * t)
        points = np.concatenate([np.column_stack([ri * points, np.full(len(points), ti)]) for ti, ri in zip(t, r)])
        weights = np.concatenate([wi * weights for wi in wt])
    return points, weights


def gauss_jacobi(q, a, b):
    """Gauss-Jacobi rule for the weight (1 - u)^a (1 + u)^b on [-1, 1], a, b > -1: nodes and LOG weights.

    Log weights, because the total mass 2^{a+b+1} B(a+1, b+1) under- or overflows for the large
    exponents (a ~ d/2) of high dimensions. scipy's Newton-refined rules are used where they work;
    where they break down (NaN weights: a = 498.5 at q = 1000, a ~ 5e4 at q = 100) the nodes are the
    eigenvalues of the symmetric tridiagonal Jacobi matrix of the monic Jacobi polynomials (Golub and
    Welsch, 1969) and the weights mu_0 / sum_{n<q} p_n(u_i)^2, p_n the orthonormal polynomials (the
    Christoffel function): each weight to the relative accuracy its rounded node allows (about 1e-13 at
    d = 1000, q = 1000), however small, where Golub and Welsch's mu_0 v_0^2 (v_0 the first components of
    the unit eigenvectors) knew the small ones only to eps times the largest.

    Parameters
    ----------
    q : int
        Number of nodes, q >= 1; the rule is exact for polynomials of degree <= 2q - 1 times the weight.
    a, b : float
        Exponents of (1 - u) and (1 + u), finite, a > -1, b > -1 and a + b <= 1e150.

    Returns
    -------
    nodes, log_weights : numpy arrays of shape (q,)
        Increasing nodes in (-1, 1) and the natural logarithms of their weights, float64 (finite, also
        where a weight lies below the smallest float).

    Raises
    ------
    ValueError
        For q not an integer >= 1, a or b not a finite number > -1, or a + b > 1e150 (the recurrences
        overflow float64).
    """
    q = check_integer(q, "q", minimum=1)
    for value, name in ((a, "a"), (b, "b")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= -1:
            raise ValueError(f"{name} must be a finite number > -1 (the weight (1 - u)^a (1 + u)^b is "
                             f"integrable), got {value!r}")
    if a + b > 1e150:  # the recurrences hold (2n + a + b)^2 and a^2 - b^2, which overflow float64 near 1e154
        raise ValueError(f"a + b must be at most 1e150 for a Gauss-Jacobi rule in float64, got a={a!r} and b={b!r}")
    with np.errstate(all="ignore"):
        if a == b == 0:
            nodes, weights = special.roots_legendre(q)
        elif a == b == -0.5:
            nodes, weights = special.roots_chebyt(q)
        elif sorted((a, b)) == [-0.5, 0.0]:
            # (1 - u)^(-1/2) with u = 1 - 2 v^2 is 2 sqrt(2) dv on v in [0, 1]: the positive half of
            # the 2q-point Gauss-Legendre rule, folded (the q-point Gauss rule of this weight, which is
            # unique). scipy's roots_jacobi lost digits here: 2.6e-10 at q = 2032, 3.5e-9 at q = 8032,
            # against about 1e-12, as for its other exponents.
            v, w = special.roots_legendre(2 * q)
            v, w = v[q:], w[q:]  # v > 0, increasing
            nodes, weights = (1 - 2 * v * v)[::-1], (2 * math.sqrt(2) * w)[::-1]  # increasing u
            if b == -0.5:  # (1 + u)^(-1/2): the mirror image
                nodes, weights = -nodes[::-1], weights[::-1]
        else:
            nodes, weights = special.roots_jacobi(q, a, b)
    nodes, weights = np.asarray(nodes, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if np.isfinite(nodes).all() and np.isfinite(weights).all() and (weights > 0).all():
        return nodes, np.log(weights)
    return _golub_welsch_jacobi(q, a, b)


def _golub_welsch_jacobi(q, a, b):
    """Nodes and log weights of the Gauss-Jacobi rule: nodes from the eigenvalues of its Jacobi matrix, weights
    from the Christoffel function (:func:`_log_christoffel_sum`).

    Monic Jacobi polynomials satisfy p_{n+1} = (u - alpha_n) p_n - beta_n p_{n-1} with s = a + b,
    alpha_n = (b^2 - a^2) / ((2n + s)(2n + s + 2)) and
    beta_n = 4 n (n + a)(n + b)(n + s) / ((2n + s)^2 (2n + s + 1)(2n + s - 1)).
    """
    from scipy.linalg import eigh_tridiagonal

    s_ab = a + b
    n = np.arange(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = (b * b - a * a) / ((2 * n + s_ab) * (2 * n + s_ab + 2))
    alpha[0] = (b - a) / (s_ab + 2)  # the n = 0 term, also where 2n + s = 0
    k = np.arange(1, q, dtype=np.float64)
    # (k + s) / (2k + s - 1) is 0/0 at k = 1 when s = -1 (Chebyshev): its limit there is 1.
    ratio = np.where(np.abs(2 * k + s_ab - 1) > 0, (k + s_ab) / np.where(2 * k + s_ab - 1 == 0, 1, 2 * k + s_ab - 1), 1.0)
    beta = 4 * k * (k + a) * (k + b) * ratio / ((2 * k + s_ab) ** 2 * (2 * k + s_ab + 1))
    nodes, _ = eigh_tridiagonal(alpha, np.sqrt(beta))  # with the vectors (MRRR): nodes to an ulp, 6e-15 without
    return nodes, _log_jacobi_mass(a, b) - _log_christoffel_sum(nodes, alpha, np.sqrt(beta))


def _log_christoffel_sum(u, alpha, b):
    """log sum_{n<q} p_n(u)^2 for the orthonormal polynomials p_n of the probability weight, at each node u.

    The Gauss weight of node u is mu_0 / sum_{n<q} p_n(u)^2 (the Christoffel function), with
    b_{n+1} p_{n+1} = (u - alpha_n) p_n - b_n p_{n-1}, p_0 = 1, b_n = beta_n^{1/2}. A sum of squares, it keeps the
    relative accuracy of the small weights at the outer nodes, which the first components of the unit eigenvectors
    (Golub and Welsch's mu_0 v_0^2) know only to eps absolute: 1e+263 relative at d = 1000, q = 1000 (moments of
    t^1998). The recurrence runs on mantissas: a row beyond 2^300 is scaled by 2^-300 (its sum by 2^-600) and the
    exponent carried in ``scale``.
    """
    q = u.size
    prev, cur = np.zeros(q), np.ones(q)
    total, scale = np.ones(q), np.zeros(q)  # sum p_n^2 = total 2^scale
    for n in range(q - 1):
        nxt = (u - alpha[n]) * cur
        if n:
            nxt -= b[n - 1] * prev
        nxt /= b[n]
        prev, cur = cur, nxt
        total += cur * cur
        big = np.abs(cur) > 2.0**300
        if big.any():
            cur[big] = np.ldexp(cur[big], -300)
            prev[big] = np.ldexp(prev[big], -300)
            total[big] = np.ldexp(total[big], -600)
            scale[big] += 600
    return np.log(total) + scale * np.log(2.0)


def lift(X):
    """Map x in R^d to (x, 1) / |(x, 1)| on S^d (the bias trick of Bach 2017, Sec. 2).

    For a positively homogeneous sigma, sigma(<w, (x, 1)>) = |(x, 1)| sigma(<w, lift(x)>): a network
    with biases on R^d is a network without biases on the sphere of R^{d+1}, up to the factor |(x, 1)|.

    Parameters
    ----------
    X : array of shape (n, d)

    Returns
    -------
    array of shape (n, d + 1)
        Unit rows with a positive last coordinate.
    """
    X = check_points(X, "X")
    xp = get_xp(X)
    Z = xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)  # (n, d + 1)
    # row_norms scales each row by a power of 2 first: |(x, 1)|^2 overflowed for |x| beyond sqrt(max float)
    # (1e154 in float64, 1.8e19 in float32) and such a row became 0
    return Z / row_norms(Z)[:, None]
