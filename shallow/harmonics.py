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
* The real orthonormal basis Y_{k, kappa} of :func:`spherical_harmonics` is the product basis in
  hyperspherical coordinates, labelled by a multi-index kappa = (k_1, ..., k_{d-1}) with
  k = k_1 >= k_2 >= ... >= k_{d-2} >= |k_{d-1}| (for d = 2: kappa = (+-k,)). Its column order is
  listed by :func:`harmonic_indices`; :func:`spherical_harmonic` evaluates one element by its
  multi-index where N(d, k) is too large to enumerate.
* :func:`harmonic_energy` gives the energy per degree ||proj_k f||^2 of sampled values of f: a
  U-statistic over pairs of iid points, or a quadrature rule summed over pairs or, with
  ``method="harmonics"``, projected on that basis (cheaper where sum_k N(d, k) << n).

References
----------
1. K. Atkinson and W. Han, "Spherical Harmonics and Approximations on the Unit Sphere", 2012,
   Sec. 2.1 (recurrence (2.89), addition theorem 2.9, Funk-Hecke 2.22).
2. F. Dai and Y. Xu, "Approximation Theory and Harmonic Analysis on Spheres and Balls", 2013,
   Sec. 1.5 (an orthonormal basis of harmonics in spherical coordinates).
3. G. Szego, "Orthogonal Polynomials", 4th ed., 1975, Sec. 4.7 (Gegenbauer polynomials: norms
   and three-term recurrence, from which the orthonormal recurrence follows).
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from fractions import Fraction
from math import comb

import numpy as np
from scipy import special

from ._validation import (check_array, check_dimension, check_integer, check_on_sphere,
                          sphere_tolerance)
from .backend import get_xp, to_numpy
from .sphere import _log_gamma_ratio, gauss_jacobi, log_inner_product_constant

__all__ = [
    "gegenbauer",
    "legendre",
    "legendre_all",
    "num_harmonics",
    "project_zonal",
    "harmonic_indices",
    "spherical_harmonics",
    "spherical_harmonic",
    "harmonic_energy",
]

# legendre_all works through t in chunks of this many entries on the host, so that the rows
# P_{k-1}, P_k and t of a chunk stay in cache while P_{k+1} is written (about 4 x 256 KiB).
_HOST_CHUNK = 32768
# Refuse to enumerate more than this many basis functions (use spherical_harmonic instead).
_MAX_COLUMNS = 10**8


def _slack(dtype, d: int) -> float:
    """How far beyond +-1 a t of this dtype is the rounding of an inner product of unit vectors of R^d:
    1e-12, or 4 sqrt(d) ulps of 1 in a coarser float (float32: 4.8e-7 at d = 1, 1.3e-5 at d = 784, where the
    diagonals of a Gram matrix of the library's unit vectors reach 1 + 7 ulps)."""
    return max(1e-12, 4 * math.sqrt(d) * float(np.finfo(dtype).eps))  # t is float: check_array promotes integers


def _check_t(t, d: int):
    """t, checked, with its values within rounding of +-1 (:func:`_slack`) clipped to +-1."""
    t = check_array(t, "t")
    xp = get_xp(t)
    m = float(xp.abs(t).max()) if t.size else 0.0
    if m > 1:
        if m <= 1 + _slack(t.dtype, d):
            return xp.clip(t, -1, 1)
        raise ValueError(f"t must lie in [-1, 1], got a value of modulus {m:.17g}, {m - 1:.3g} beyond 1 (clip "
                         "inner products of unit vectors, which rounding can push past 1, into [-1, 1])")
    return t


def _check_breakpoints(breakpoints) -> list:
    """The breakpoints as a sorted list of distinct floats, each in (-1, 1) (a repeated one would make
    an empty piece)."""
    try:
        cuts = np.asarray(breakpoints, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"breakpoints must be a sequence of numbers in (-1, 1), got {breakpoints!r}") from None
    if cuts.ndim != 1:
        raise ValueError(f"breakpoints must be a sequence of numbers in (-1, 1), got {breakpoints!r}")
    cuts = sorted({float(c) for c in cuts})
    if any(not -1 < c < 1 for c in cuts):
        raise ValueError(f"breakpoints must lie in (-1, 1), got {cuts}")
    return cuts


def _recurrence_coefficients(kmax, d):
    """(a_k, b_k), k = 1..kmax-1, with P_{k+1} = a_k t P_k - b_k P_{k-1} (index 0 unused)."""
    a = [0.0] + [(2 * k + d - 2) / (k + d - 2) for k in range(1, kmax)]
    b = [0.0] + [k / (k + d - 2) for k in range(1, kmax)]
    return a, b


def _legendre_sequence(t, kmax, d):
    """Yield P_{1,d}(t), ..., P_{kmax,d}(t) by the three-term recurrence, in three work arrays.

    Each yielded array is overwritten two steps later: use it before asking for the next degree.
    """
    if kmax == 0:
        return
    xp = get_xp(t)
    a, b = _recurrence_coefficients(kmax, d)
    prev, cur, nxt = xp.ones_like(t), t.copy(), xp.empty_like(t)
    yield cur
    for j in range(1, kmax):
        xp.multiply(cur, t, out=nxt)
        nxt *= a[j]
        prev *= b[j]
        nxt -= prev
        prev, cur, nxt = cur, nxt, prev
        yield cur


def legendre_all(kmax, d, t):
    """P_{k,d}(t) for every k = 0, ..., kmax by the three-term recurrence.

    Argument order: the degree (kmax) first, then the dimension d, then t, following the symbol
    P_{k,d} (DESIGN.md); :func:`num_harmonics` and :func:`harmonic_indices` take d first, after
    N(d, k). Keyword calls are accepted: ``legendre_all(kmax=2, d=3, t=t)``.

    Parameters
    ----------
    kmax : int
        Highest degree, kmax >= 0.
    d : int
        Ambient dimension, d >= 2.
    t : array_like of any shape, values in [-1, 1]
        numpy or cupy; the dtype is kept (integers become float64). Values up to max(1e-12, 4 sqrt(d)
        eps) beyond +-1, the rounding of inner products of unit vectors (float32: 1.3e-5 at d = 784), are
        clipped to +-1; larger ones are refused.

    Returns
    -------
    P : array of shape (kmax + 1, *t.shape)
        P[k] = P_{k,d}(t).

    Notes
    -----
    P_0 = 1, P_1 = t and P_{k+1} = [(2k + d - 2) t P_k - k P_{k-1}] / (k + d - 2).
    The normalised polynomials satisfy |P_{k,d}(t)| <= 1 on [-1, 1], so the forward recurrence
    neither overflows nor loses accuracy where scipy's unnormalised Gegenbauer polynomials
    C_k^{(d-2)/2} (which grow like k^{d-3}) overflow, near d = 1000 and k = 350. Its rounding
    error is largest near t = +-1, where the polynomials are close to +-1 and vary fastest: against
    mpmath (d = 2 and 3) at most about 3e-12 at k = 10^3 and 1e-9 at k = 10^4 (at t = 1 - 1e-12),
    against 1e-16 at t = 1/2. That is below what rounding t itself costs there: P'_{k,d}(1) =
    k (k + d - 2) / (d - 1), so one ulp of t near 1 moves P by about 1e-8 at k = 10^4 and d = 2.

    On the host the recurrence runs over chunks of t (32768 entries) so that the rows it reads
    stay in cache, and writes each output row in place: memory traffic is then that of writing
    the output once, and the time about that of allocating and copying an array of the output's
    size (``benchmarks/harmonics.py`` measures both ratios). On a device it runs over the whole
    array at once.

    Examples
    --------
    >>> legendre_all(2, 3, np.array([0.5]))[:, 0].tolist()   # Legendre: 1, t, (3t^2 - 1)/2
    [1.0, 0.5, -0.125]
    >>> legendre_all(kmax=2, d=3, t=np.array([0.5]))[:, 0].tolist()   # the same, by keyword
    [1.0, 0.5, -0.125]
    """
    kmax = check_integer(kmax, "kmax", minimum=0)
    d = check_dimension(d)
    t = _check_t(t, d)
    xp = get_xp(t)
    P = xp.empty((kmax + 1, *t.shape), dtype=t.dtype)
    Pf = P.reshape(kmax + 1, -1)  # (kmax + 1, T), a view
    tf = t.reshape(-1)  # (T,)
    T = tf.shape[0]
    a, b = _recurrence_coefficients(kmax, d)
    chunk = _HOST_CHUNK if xp is np else max(T, 1)
    buf = xp.empty(min(chunk, T), dtype=t.dtype)
    for lo in range(0, T, chunk):
        hi = min(T, lo + chunk)
        tc, tmp = tf[lo:hi], buf[:hi - lo]
        Pf[0, lo:hi] = 1
        if kmax >= 1:
            Pf[1, lo:hi] = tc
        for k in range(1, kmax):
            # P_{k+1} = a_k t P_k - b_k P_{k-1}, in place in the output row.
            out = Pf[k + 1, lo:hi]
            xp.multiply(Pf[k, lo:hi], tc, out=out)
            out *= a[k]
            xp.multiply(Pf[k - 1, lo:hi], b[k], out=tmp)
            out -= tmp
    return P


def gegenbauer(k, lam, t):
    r"""C_k^lambda(t), the Gegenbauer (ultraspherical) polynomial of degree k and parameter lambda.

    The classical normalisation (DLMF 18.3, scipy's :func:`scipy.special.eval_gegenbauer`), with
    generating function (1 - 2 t r + r^2)^{-lambda} = sum_k C_k^lambda(t) r^k, and C_k^0 = 0 for
    k >= 1. The library's Legendre polynomials are these, normalised at 1: for d >= 3,

        P_{k,d}(t) = C_k^{(d-2)/2}(t) / C_k^{(d-2)/2}(1),   C_k^lambda(1) = (2 lambda)_k / k!,

    which is what the spherical-harmonic routines use (:func:`legendre`, bounded by 1 on [-1, 1]
    where C_k^lambda grows like k^{2 lambda - 1}).

    Parameters
    ----------
    k : int
        Degree, k >= 0.
    lam : float
        lambda > -1/2 (the range of orthogonality on [-1, 1] for the weight (1 - t^2)^{lambda - 1/2}).
    t : array_like of any shape
        Real and finite, numpy or cupy; the dtype is kept (integers become float64).

    Returns
    -------
    C : array of t's shape
        C_k^lambda(t), in t's dtype and on its device (a 0-d array for a scalar t). inf, with
        numpy's overflow warning, beyond the dtype's range (C_400^500(1) = binomial(1399, 400) >
        1e308 in float64): :func:`legendre`, normalised at 1, stays bounded by 1.

    Raises
    ------
    ValueError
        For k not an integer >= 0, lam not a finite number > -1/2, or t not real and finite.

    Notes
    -----
    The three-term recurrence k C_k = 2 (k + lambda - 1) t C_{k-1} - (k + 2 lambda - 2) C_{k-2},
    from C_0 = 1 and C_1 = 2 lambda t: O(k) passes over t, memory O(t.size).

    Examples
    --------
    >>> float(gegenbauer(2, 1.0, np.array(0.5)))   # C_2^1 = U_2, Chebyshev's second kind: 4 t^2 - 1
    0.0
    >>> round(float(gegenbauer(3, 0.5, np.array(0.3))), 12)   # C_k^{1/2} = Legendre's P_k: (5 t^3 - 3 t) / 2
    -0.3825
    """
    k = check_integer(k, "k", minimum=0)
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) or lam <= -0.5:
        raise ValueError(f"lam must be a finite number > -1/2 (the Gegenbauer parameter lambda), got {lam!r}")
    lam = float(lam)
    t = check_array(t, "t")
    xp = get_xp(t)
    prev, cur = xp.ones_like(t), 2 * lam * t
    if k == 0:
        return prev
    for n in range(2, k + 1):
        prev, cur = cur, (2 * (n + lam - 1) / n) * t * cur - ((n + 2 * lam - 2) / n) * prev
    return xp.asarray(cur, dtype=t.dtype)  # a 0-d array, not a numpy scalar, for a scalar t


def legendre(k, d, t):
    """P_{k,d}(t), the degree-k Legendre polynomial of dimension d with P_{k,d}(1) = 1.

    Argument order: the degree k first, then the dimension d, then t, following the symbol
    P_{k,d} (DESIGN.md); :func:`num_harmonics` and :func:`harmonic_indices` take d first, after
    N(d, k). Keyword calls are accepted: ``legendre(k=3, d=2, t=t)``.

    Parameters
    ----------
    k : int
        Degree, k >= 0.
    d : int
        Ambient dimension, d >= 2.
    t : array_like of any shape, values in [-1, 1]
        numpy or cupy; the dtype is kept (integers become float64). Values up to max(1e-12, 4 sqrt(d)
        eps) beyond +-1, the rounding of inner products of unit vectors (float32: 1.3e-5 at d = 784), are
        clipped to +-1; larger ones are refused (as in
        :func:`legendre_all`).

    Returns
    -------
    P : array of t's shape
        P_{k,d}(t), in t's dtype and on its device (a 0-d array for a scalar t).

    Raises
    ------
    ValueError
        For k or d not an integer in range, or t not real and finite or beyond [-1, 1].

    Notes
    -----
    The recurrence of :func:`legendre_all`, keeping only the last three degrees: memory is
    O(t.size), whatever k.

    Examples
    --------
    >>> float(legendre(3, 2, np.array(0.3)))   # Chebyshev: cos(3 arccos 0.3)
    -0.792
    >>> float(legendre(k=3, d=2, t=np.array(0.3)))   # the same, by keyword
    -0.792
    """
    k = check_integer(k, "k", minimum=0)
    d = check_dimension(d)
    t = _check_t(t, d)
    xp = get_xp(t)
    if k == 0:
        return xp.ones_like(t)
    for P in _legendre_sequence(t, k, d):
        pass
    return P


def num_harmonics(d, k) -> int:
    """N(d, k), the dimension of the degree-k spherical harmonics on S^{d-1} (an exact Python int).

    N(d, 0) = 1 and N(d, k) = (2k + d - 2)/k * C(k + d - 3, k - 1) for k >= 1; for d = 2 it is 2
    (cos k theta, sin k theta) and for d = 3 it is 2k + 1.

    Argument order: the dimension d first, then the degree k, following the symbol N(d, k)
    (DESIGN.md); :func:`legendre` and :func:`legendre_all` take the degree first, after P_{k,d}.
    Keyword calls are accepted: ``num_harmonics(d=3, k=2)``.

    Parameters
    ----------
    d : int
        Ambient dimension, an integer >= 2.
    k : int
        Degree, an integer >= 0.

    Returns
    -------
    int
        N(d, k), exact (no float rounding, however large).

    Raises
    ------
    ValueError
        For d not an integer >= 2 or k not an integer >= 0 (a float 2.0 included).

    Examples
    --------
    >>> [num_harmonics(3, k) for k in range(4)]
    [1, 3, 5, 7]
    >>> num_harmonics(d=3, k=2)
    5
    """
    d = check_dimension(d)
    k = check_integer(k, "k", minimum=0)
    if k == 0:
        return 1
    return (2 * k + d - 2) * comb(k + d - 3, k - 1) // k


_JACOBI_MAX_EXPONENT = 50  # beyond, (1 + t)^a on [0, 1] defeats the split Gauss-Jacobi rules
# project_zonal warns where its rules of q and 3q/4 nodes disagree by more than this times int |g| w_d.
_ZONAL_RTOL = float(np.sqrt(np.finfo(np.float64).eps))


def _zonal_rule(d, q, cuts, widen=1):
    """(t, w, T): nodes and weights, q per piece between the cuts, with sum_i w_i f(t_i) ~ int f w_d;
    in high dimension over |t| <= T = min(1, widen 13 / sqrt(d)) (T = 1 otherwise)."""
    a = 0.5 * (d - 3)
    log_c = log_inner_product_constant(d)
    nodes, weights = [], []
    if a <= _JACOBI_MAX_EXPONENT:
        edges = [-1.0, *cuts, 1.0]
        for lo, hi in zip(edges[:-1], edges[1:]):
            half = 0.5 * (hi - lo)
            # Singular weight (1 - t)^a at hi = 1 and/or (1 + t)^a at lo = -1 goes into the rule;
            # the rest of (1 - t^2)^a is smooth on [lo, hi] and multiplies the integrand.
            a_right = a if hi == 1.0 else 0.0
            a_left = a if lo == -1.0 else 0.0
            u, log_w = gauss_jacobi(q, a_right, a_left)
            t = lo + half * (u + 1)
            # (1 - t) = half (1 - u) on a right-end piece, (1 + t) = half (1 + u) on a left-end piece.
            log_w = log_w + np.log(half) + log_c
            log_w += a_right * np.log(half) if a_right else a * np.log1p(-t)
            log_w += a_left * np.log(half) if a_left else a * np.log1p(t)
            nodes.append(t)
            weights.append(np.exp(log_w))
    else:
        # High dimension: w_d ~ exp(-a t^2) is a narrow smooth bump, (1 -+ t)^a no longer singular but a
        # factor of up to 2^a that no polynomial rule absorbs. Integrate over |t| <= T = 13 / sqrt(d),
        # outside which w_d < 1e-35 w_d(0), by Gauss-Legendre on each piece with the whole weight; a
        # window widen times as wide gets widen times the nodes.
        T = min(1.0, widen * 13.0 / np.sqrt(d))
        edges = [-T, *[c for c in cuts if -T < c < T], T]
        u, w_gl = special.roots_legendre((q + 64) * widen)
        for lo, hi in zip(edges[:-1], edges[1:]):
            half = 0.5 * (hi - lo)
            t = lo + half * (u + 1)
            nodes.append(t)
            weights.append(np.exp(np.log(w_gl * half) + log_c + a * np.log1p(-t * t)))
        return np.concatenate(nodes), np.concatenate(weights), T
    return np.concatenate(nodes), np.concatenate(weights), 1.0


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

    Raises
    ------
    TypeError
        For a g that is not callable.
    ValueError
        For d, kmax or q out of range, breakpoints outside (-1, 1), or a g that returns complex
        values, an array of another shape than its input, or NaN or infinite values.

    Warns
    -----
    RuntimeWarning
        When the rule has not converged: the same coefficients from a rule of floor(3q/4) nodes per
        piece differ by more than 1.5e-8 int |g| w_d (the square root of float64's eps). A kink or a
        jump of g left out of ``breakpoints`` does that (relu without its breakpoint: about 1e-4 off
        at the default q), and so does a g too steep for q nodes (exp(1000 (t - 1)) at q = 64). For
        piecewise-analytic g with its breakpoints the two agree to 1e-10 or better (measured for
        d = 2 to 10^8 and kmax <= 1000; relu at d = 2, kmax = 1000 is within 2e-13 of its closed
        form).

    Notes
    -----
    For d > 103, where w_d is a bump of width d^{-1/2}, the rules run over |t| <= T = 13 / sqrt(d)
    (w_d(T) < 1e-35 w_d(0)), Gauss-Legendre with q + 64 nodes per piece; T and the nodes are
    doubled until T holds every breakpoint (1{t > 1/2} in d = 1000, 1e-64, is not 0), and while
    |g| w_d at +-T exceeds eps times its largest value at the nodes, as for a g that grows like
    exp(c t) with c ~ sqrt(d) or more (a g that underflows to 0 over the whole window gives no such
    sign).

    P_k at the nodes comes from the recurrence of :func:`legendre_all` one degree at a time, so that
    memory is O(q) per piece whatever kmax, and time O(q kmax) besides computing the rules (the
    second rule, for the check, adds three quarters to both).

    Examples
    --------
    >>> mu = project_zonal(lambda t: t**2, 3, 2)      # t^2 = 1/3 P_0 + 2/3 P_2 in d = 3
    >>> (np.round(mu * [1, 3, 5], 12) + 0.0).tolist()     # mu_k N(3, k): the Legendre coefficients
    [0.333333333333, 0.0, 0.666666666667]
    """
    if not callable(g):
        raise TypeError(f"g must be a callable of t, got {type(g).__name__}")
    d = check_dimension(d)
    kmax = check_integer(kmax, "kmax", minimum=0)
    q = max(64, 2 * kmax + 32) if q is None else check_integer(q, "q", minimum=1)
    cuts = _check_breakpoints(breakpoints)
    q_check = (3 * q) // 4  # the rule that checks convergence (none for q = 1)
    widen = 1
    # In high dimension the window |t| <= widen 13 / sqrt(d) starts wide enough to hold every breakpoint c where
    # w_d(c) is a normal float64: one outside it was dropped, and a g that vanishes over the window (1{t > 0.5} in
    # d = 1000, 1e-64) came out 0 without a warning (the check at the window's ends saw g = 0 there). Beyond the
    # normal numbers, int |g| w_d past c is 0 in float64 anyway; this bounds widen by 4 (c sqrt(d) < 38).
    if 0.5 * (d - 3) > _JACOBI_MAX_EXPONENT:
        log_floor = math.log(np.finfo(np.float64).tiny) - log_inner_product_constant(d)
        reach = max((abs(c) for c in cuts if 0.5 * (d - 3) * math.log1p(-c * c) > log_floor), default=0.0)
        while widen * 13.0 / math.sqrt(d) < 1 and reach >= widen * 13.0 / math.sqrt(d):
            widen *= 2
    while True:
        t, w, T = _zonal_rule(d, q, cuts, widen)
        tc, wc, _ = _zonal_rule(d, q_check, cuts, widen) if q_check else (np.empty(0), np.empty(0), T)
        ends = [-T, T] if T < 1 else []  # g at the ends of a high-dimensional window, not in the sums
        nodes = np.concatenate([t, tc, ends])
        values = np.asarray(g(nodes))
        if values.dtype.kind not in "biuf":  # complex would lose its imaginary part in the cast
            raise ValueError(f"g must return real numbers, got dtype {values.dtype} (for a complex g, project "
                             "its real and imaginary parts separately)")
        values = values.astype(np.float64, copy=False)
        if values.shape != nodes.shape:
            raise ValueError(f"g must map an array of shape {nodes.shape} to the same shape, got {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("g returned NaN or infinite values on [-1, 1]")
        if not ends:
            break
        # g w_d (up to c_d) at the window's ends and at the nodes: a g that grows fast enough (exp(c t),
        # c ~ sqrt(d) or more) moves the mass of g w_d out of the window, which is then widened.
        density = np.abs(values) * np.exp(0.5 * (d - 3) * np.log1p(-nodes * nodes))
        if density[-2:].max() <= np.finfo(np.float64).eps * density[:t.size].max():
            nodes, values = nodes[:-2], values[:-2]
            break
        widen *= 2
    V = np.zeros((nodes.size, 2))  # (M, 2): column 0 the rule's w_i g(t_i), column 1 the check's
    V[:t.size, 0] = w * values[:t.size]
    V[t.size:, 1] = wc * values[t.size:]
    mu = np.empty((kmax + 1, 2))
    mu[0] = V.sum(axis=0)
    for k, P in enumerate(_legendre_sequence(nodes, kmax, d), start=1):  # O(q) memory, not O(q kmax)
        mu[k] = P @ V
    if q_check:
        scale = float(w @ np.abs(values[:t.size]))  # int |g| w_d, a bound on every |mu_k|
        gap = float(np.abs(mu[:, 0] - mu[:, 1]).max())
        if gap > _ZONAL_RTOL * scale:
            warnings.warn(f"project_zonal has not converged: rules of {q} and {q_check} nodes per piece give "
                          f"coefficients {gap:.2g} apart, {gap / scale:.2g} of int |g| w_d (more than "
                          f"{_ZONAL_RTOL:.2g}); list the points where g is not smooth in breakpoints "
                          f"(now {cuts}), or pass a larger q", RuntimeWarning, stacklevel=2)
    return mu[:, 0]


# ---------------------------------------------------------------------------------------------
# A real orthonormal basis of degree-k harmonics in hyperspherical coordinates
# ---------------------------------------------------------------------------------------------

def _format_count(N: int) -> str:
    """An exact count N as '1.23e+45', also beyond the floats (where f'{N:.3g}' raises OverflowError)."""
    if N < 10**300:
        return f"{N:.3g}"
    e = int(math.log10(N))  # within one of the decimal exponent
    m = N // 10 ** (e - 2)
    while m >= 1000:
        m, e = m // 10, e + 1
    while m < 100:
        e -= 1
        m = N // 10 ** (e - 2)
    return f"{m // 100}.{m % 100:02d}e+{e}"


def _block_offsets(D, bmax):
    """N(D, b - 1) for b = 0..bmax (0 for b = 0): where block b starts in a degree-a block.

    In dimension D the degree-a harmonics are the blocks b = 0..a of size N(D - 1, b), so block b
    starts at sum_{c < b} N(D - 1, c) = N(D, b - 1).
    """
    return np.array([0] + [num_harmonics(D, b - 1) for b in range(1, bmax + 1)], dtype=np.int64)


def harmonic_indices(d, k):
    """The multi-indices of the degree-k basis of :func:`spherical_harmonics`, in column order.

    Argument order: the dimension d first, then the degree k, following N(d, k) (DESIGN.md);
    :func:`legendre` and :func:`legendre_all` take the degree first, after P_{k,d}. Keyword calls
    are accepted: ``harmonic_indices(d=3, k=1)``.

    Parameters
    ----------
    d : int
        Ambient dimension, d >= 2.
    k : int
        Degree, k >= 0.

    Returns
    -------
    kappa : numpy int64 array of shape (N(d, k), d - 1)
        Row j is the multi-index (k_1, ..., k_{d-1}) of column j, with
        k = k_1 >= k_2 >= ... >= k_{d-2} >= |k_{d-1}| (for d = 2: the rows (k,) and (-k,), or (0,)).

    Notes
    -----
    Columns are in lexicographic order of (k_2, ..., k_{d-2}, |k_{d-1}|), increasing, and for
    each |k_{d-1}| = m >= 1 the cosine (k_{d-1} = m) comes before the sine (k_{d-1} = -m).
    Equivalently, the degree-k harmonics on S^{d-1} are the blocks k_2 = 0, 1, ..., k of sizes
    N(d - 1, k_2), each ordered in the same way on S^{d-2}, so that the multi-index kappa sits
    in column

        sum_{i=1}^{d-2} N(d - i + 1, |k_{i+1}| - 1) + [k_{d-1} < 0],   with N(D, -1) = 0.

    For d = 3 the order is m = 0, 1, -1, 2, -2, ..., k, -k with m = k_2.

    Raises
    ------
    ValueError
        When N(d, k) (d - 1) exceeds 10^8 entries: evaluate single elements with
        :func:`spherical_harmonic` instead.

    Examples
    --------
    >>> harmonic_indices(3, 2).tolist()
    [[2, 0], [2, 1], [2, -1], [2, 2], [2, -2]]
    >>> harmonic_indices(d=3, k=1).tolist()
    [[1, 0], [1, 1], [1, -1]]
    >>> harmonic_indices(4, 1).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, -1]]
    """
    d = check_dimension(d)
    k = check_integer(k, "k", minimum=0)
    size = num_harmonics(d, k) * (d - 1)
    if size > _MAX_COLUMNS:
        raise ValueError(f"harmonic_indices(d={d}, k={k}) would hold N(d, k) (d - 1) = {_format_count(size)} entries; "
                         "evaluate chosen elements with spherical_harmonic(X, index) instead")
    # Bottom-up over the dimension D = 2..d: table[a] lists the multi-indices of degree a on S^{D-1}.
    table = [np.array([[0]] if a == 0 else [[a], [-a]], dtype=np.int64) for a in range(k + 1)]
    for D in range(3, d + 1):
        degrees = [k] if D == d else range(k + 1)
        new = {}
        for a in degrees:
            blocks = [np.concatenate([np.full((len(table[b]), 1), a, dtype=np.int64), table[b]], axis=1)
                      for b in range(a + 1)]
            new[a] = np.concatenate(blocks, axis=0)
        table = new
    return table[k]


def _check_index(index, d):
    """The multi-index as a tuple of d - 1 Python ints, checking k_1 >= ... >= k_{d-2} >= |k_{d-1}|."""
    try:
        kappa = tuple(index)
    except TypeError:
        raise ValueError(f"index must be a sequence of d - 1 = {d - 1} integers, got {index!r}") from None
    if len(kappa) != d - 1:
        raise ValueError(f"index must have d - 1 = {d - 1} entries for X with d = {d} coordinates, "
                         f"got {len(kappa)}: {kappa!r}")
    kappa = tuple(check_integer(v, "index entries", minimum=None) for v in kappa)
    chain = [abs(kappa[0])] if d == 2 else [*kappa[:-1], abs(kappa[-1])]
    if d > 2 and kappa[0] < 0:
        raise ValueError(f"index must satisfy k_1 >= k_2 >= ... >= k_(d-2) >= |k_(d-1)|, got {kappa!r}")
    if any(hi < lo for hi, lo in zip(chain[:-1], chain[1:])):
        raise ValueError(f"index must satisfy k_1 >= k_2 >= ... >= k_(d-2) >= |k_(d-1)|, got {kappa!r}")
    return kappa


def _radii(X, xp):
    """R[:, i] = (x_i^2 + ... + x_{d-1}^2)^{1/2}, the norm of the trailing coordinates. (n, d)."""
    return xp.sqrt(xp.cumsum((X * X)[:, ::-1], axis=1)[:, ::-1])


def _level_coordinates(X, R, i, xp):
    """t_i = x_i / R_i and s_i = R_{i+1} / R_i = sqrt(1 - t_i^2), both 0 where R_i = 0.

    Where R_i = 0 every harmonic reaching level i carries a factor s_{i-1}^{k_i} = 0, so any
    finite value does; 0 keeps the recurrences finite.
    """
    Ri = R[:, i]
    pos = Ri > 0
    safe = xp.where(pos, Ri, 1)
    t = xp.where(pos, X[:, i] / safe, 0)
    s = xp.where(pos, R[:, i + 1] / safe, 0)
    return t, s


def _beta(m, alpha):
    """beta_m(alpha) = sqrt(m (m + 2 alpha - 1) / (4 (m + alpha) (m + alpha - 1))), beta_0 = 0.

    The recurrence coefficient of the orthonormal Gegenbauer polynomials p_m^{(alpha)} for the
    probability density proportional to (1 - t^2)^{alpha - 1/2}:
    t p_m = beta_{m+1} p_{m+1} + beta_m p_{m-1}. ``alpha`` may be a numpy array (alpha >= 1/2).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if m == 0:
        return np.zeros_like(alpha)
    return np.sqrt(m * (m + 2 * alpha - 1) / (4 * (m + alpha) * (m + alpha - 1)))


def _log_norm_constant(D, b):
    """log c_b^{(D)}, (c_b^{(D)})^2 = 1 / E_{t ~ w_D}[(1 - t^2)^b] = prod_{j<=b} (lam + j)/(lam + j - 1/2).

    That is Gamma(lam + b + 1) Gamma(lam + 1/2) / (Gamma(lam + b + 1/2) Gamma(lam + 1)), taken as a difference of
    two log(Gamma(x + 1/2) / Gamma(x)), each of order log x and accurate to a few eps: the sum of four log-gammas
    of size lam log(lam) lost lam log(lam) eps (c_b 6e-10 off at D = 10^6, 2e-11 at D = 10^5).
    """
    lam = 0.5 * (D - 2)
    return 0.5 * (_log_gamma_ratio(lam + b + 0.5, 0.5) - _log_gamma_ratio(lam + 0.5, 0.5))


def _gegenbauer_table(t, s, D, degrees, xp):
    """A^{(D)}_{a,b}(t, s) for a in ``degrees`` and 0 <= b <= a, as rows of a (P, n) array.

    A^{(D)}_{a,b} = c_b s^b p_{a-b}^{(b + (D-2)/2)}(t) (see :func:`spherical_harmonics`).
    Returns (F, slot) with F[slot[a, b]] = A_{a,b}; slot is a host array, -1 where not computed.
    The recurrence runs in the degree m = a - b for all b at once; each row starts from
    c_b s^b, so every intermediate is itself a normalised factor (no overflow).
    """
    degrees = np.asarray(sorted(set(int(a) for a in degrees)), dtype=np.int64)
    amax = int(degrees[-1])
    n = t.shape[0]
    # F is ordered by m = a - b, then b: the rows stored at step m of the recurrence are contiguous.
    slot = np.full((amax + 1, amax + 1), -1, dtype=np.int64)
    stored = []  # per m: (first row of F, rows b of the recurrence stored there, as a slice or an index array)
    count = 0
    for m in range(amax + 1):
        rows_b = degrees[degrees >= m] - m
        slot[rows_b + m, rows_b] = np.arange(count, count + rows_b.size)
        if rows_b.size and rows_b[-1] - rows_b[0] + 1 == rows_b.size:
            stored.append((count, slice(int(rows_b[0]), int(rows_b[-1]) + 1)))
        else:
            stored.append((count, xp.asarray(rows_b) if rows_b.size else None))
        count += rows_b.size
    F = xp.empty((count, n), dtype=t.dtype)  # (P, n)
    lam = 0.5 * (D - 2)
    bs = np.arange(amax + 1)
    alpha = lam + bs  # (amax + 1,)
    # S[b] = c_b s^b by a cumulative product of s sqrt((lam + j)/(lam + j - 1/2)), j = 1..b.
    growth = np.sqrt((lam + bs[1:]) / (lam + bs[1:] - 0.5))
    S = xp.empty((amax + 1, n), dtype=t.dtype)  # (amax + 1, n): row b holds c_b s^b
    S[0] = 1
    for b in range(1, amax + 1):
        xp.multiply(S[b - 1], s, out=S[b])
        S[b] *= growth[b - 1]
    # c_b s^b is log-concave in b, so least at b = 0 (where it is 1) or b = amax. Where it lies below
    # the normal numbers the rows it starts may still reach O(1) (near s = b / a): those points get
    # zeros here (no spurious overflow) and are recomputed below with exponents.
    low = _underflowed(S[amax], s) if amax else None
    if low is not None:
        low = xp.asarray(low)
        # Rows b >= b0 underflow at some of these points (at each point, a final run of rows).
        b0 = int(np.argmax(to_numpy((S[:, low] < np.finfo(t.dtype).tiny).any(axis=1))))
        S[b0:, low] = 0
    # Rows b = 0..amax - m - 1 go on to degree m + 1: p_{m+1} = (t p_m - beta_m p_{m-1}) / beta_{m+1}.
    beta = [xp.asarray(_beta(m, alpha[:amax - m + 1]), dtype=t.dtype)[:, None] for m in range(amax + 1)]
    inv = [xp.asarray(1 / _beta(m + 1, alpha[:amax - m]), dtype=t.dtype)[:, None] for m in range(amax)]
    # On the host the recurrence runs over chunks of points, its three (amax + 1, chunk) rows in cache.
    chunk = max(1, _HOST_CHUNK // (amax + 1)) if xp is np else max(n, 1)
    work = xp.empty((3, amax + 1, min(chunk, n)), dtype=t.dtype)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        tc = t[lo:hi]
        prev, cur, nxt = work[0, :, :hi - lo], work[1, :, :hi - lo], work[2, :, :hi - lo]
        cur[...] = S[:, lo:hi]
        for m in range(amax + 1):
            first, rows_b = stored[m]
            if rows_b is not None:
                src = cur[rows_b]
                F[first:first + src.shape[0], lo:hi] = src
            if m == amax:
                break
            rows = amax - m  # b = 0..rows - 1 still needed at degree m + 1
            xp.multiply(cur[:rows], tc, out=nxt[:rows])
            if m > 0:
                prev[:rows] *= beta[m][:rows]
                nxt[:rows] -= prev[:rows]
            nxt[:rows] *= inv[m]
            prev, cur, nxt = cur, nxt, prev
    if low is not None:  # rows b >= b0 at the points that underflowed, with exponents
        for m, Qm, E in _rescaled_factors(t[low], s[low], D, bs[b0:], amax, xp):
            sel = degrees[degrees - m >= b0]
            if sel.size:
                rows = xp.asarray(sel - m - b0)
                F[xp.asarray(slot[sel, sel - m])[:, None], low] = xp.ldexp(Qm[rows], E[rows])
    return F, slot


def _underflowed(start, s):
    """Host indices of the points where a starting value c_b s^b (``start``, of the dtype of s) lies
    below the normal numbers though s > 0, or None. Poles (s = 0) are exact zeros and excluded."""
    low = (start < np.finfo(start.dtype).tiny) & (s > 0)
    if not bool(low.any()):
        return None
    return np.flatnonzero(to_numpy(low))


def _rescaled_factors(t, s, D, bs, amax, xp):
    """Yield (m, Q, E) for m = 0, 1, ...: row r of ldexp(Q, E) is A^{(D)}_{b_r + m, b_r}(t, s), for the
    rows b_r = bs[r] (increasing host ints) with b_r + m <= amax; Q has t's dtype, E is int32.

    The starting value c_b s^b is set from its base-2 logarithm, so that it keeps every digit where
    it lies below the normal numbers (in float64 2^-b < 2.2e-308 from b = 1023), and the
    recurrence, linear in each row, runs on the mantissas: a mantissa that exceeds 2^(maxexp/2) is
    scaled down by that power of 2 together with the row's previous value, and the exponent raised.
    One step multiplies the larger of a row's two values by at most 2 / min_m beta_m <= 4 (alpha + 1)^(1/2),
    far within the headroom of 2^(maxexp/2) left.
    """
    lam = 0.5 * (D - 2)
    alpha = lam + np.asarray(bs, dtype=np.float64)  # (R,)
    half = np.finfo(t.dtype).maxexp // 2
    log2_c = np.array([_log_norm_constant(D, int(b)) for b in bs]) / math.log(2)  # (R,)
    pos = s > 0
    log2_s = xp.log2(xp.where(pos, s, 1).astype(xp.float64))  # (n,)
    L = xp.asarray(log2_c)[:, None] + xp.asarray(bs, dtype=xp.float64)[:, None] * log2_s  # (R, n): log2 c_b s^b
    E = xp.floor(L)
    Q = xp.exp2(L - E).astype(t.dtype)  # (R, n), in [1, 2)
    Q *= pos | xp.asarray(np.asarray(bs) == 0)[:, None]  # s^b = 0 at a pole, b >= 1
    E = E.astype(xp.int32)
    Qprev = None
    for m in range(amax - int(bs[0]) + 1):
        yield m, Q, E
        rows = int(np.searchsorted(bs, amax - m, side="left"))  # rows with b + m + 1 <= amax
        if rows == 0:
            return
        inv_next = xp.asarray(1 / _beta(m + 1, alpha[:rows]), dtype=t.dtype)[:, None]
        Qnext = Q[:rows] * t
        if m > 0:
            Qnext -= xp.asarray(_beta(m, alpha[:rows]), dtype=t.dtype)[:, None] * Qprev[:rows]
        Qnext *= inv_next
        Qprev, Q, E = Q[:rows], Qnext, E[:rows]
        over = xp.abs(Q) > 2.0 ** half
        if bool(over.any()):
            down = xp.where(over, -half, 0).astype(xp.int32)
            Q, Qprev, E = xp.ldexp(Q, down), xp.ldexp(Qprev, down), E - down


def _gegenbauer_factor(t, s, D, a, b, xp):
    """A^{(D)}_{a,b}(t, s) = c_b s^b p_{a-b}^{(b + (D-2)/2)}(t) for one (a, b): O(n (a - b)) work."""
    alpha = 0.5 * (D - 2) + b
    cur = s ** b
    cur *= math.exp(_log_norm_constant(D, b))
    if _underflowed(cur, s) is not None:  # c_b s^b below the normal numbers: carry exponents
        for _, Q, E in _rescaled_factors(t, s, D, np.array([b]), a, xp):
            pass
        return xp.ldexp(Q[0], E[0])
    prev = xp.zeros_like(cur)
    nxt = xp.empty_like(cur)
    for m in range(a - b):
        # p_{m+1} = (t p_m - beta_m p_{m-1}) / beta_{m+1}
        xp.multiply(cur, t, out=nxt)
        if m > 0:
            prev *= float(_beta(m, alpha))
            nxt -= prev
        nxt *= float(1 / _beta(m + 1, alpha))
        prev, cur, nxt = cur, nxt, prev
    return cur


# Host cost of one array operation, in entries written (about 2 us against 1.5 ns an entry); on a device a
# launch costs more entries.
_CALL_COST = {"host": 1500, "device": 100_000}


def _fused_levels(d, k, n, xp):
    """How :func:`spherical_harmonics` computes the degree-k basis on S^{d-1} (d >= 3) at n points: the number
    L (1 <= L <= d - 2) of top levels it runs depth first over the prefixes, on top of the table of every
    harmonic of degree <= k on S^{d-L-1}, or 0 for the prefixes level by level (:func:`_harmonics_by_prefixes`).

    The choice minimises the estimated cost in entries written, an array operation counting as
    ``_CALL_COST`` entries: depth first, one product and one operation per prefix, plus the output and
    the tables below the top L levels (sum_D N(D + 1, k), which exceeds N(d, k) by about d / k where
    d >> k); level by level, about 6 passes over the prefixes' rows and 20 operations a level.
    """
    call = _CALL_COST["host" if xp is np else "device"]
    N = num_harmonics(d, k)
    # Prefixes (k_2, ..., k_{l+1}) at depth l = 1..d-2 whose parent's degree is > 0 (a parent of degree 0
    # has a single row below it, written at once): count[a] of those of degree a > 0 go on.
    count = {k: 1}
    children = []
    for _ in range(d - 2):
        children.append(sum(c * (a + 1) for a, c in count.items()))
        nxt, run = {}, 0
        for a in range(k, 0, -1):  # count'[b] = sum_{a >= b} count[a]
            run += count.get(a, 0)
            if run:
                nxt[a] = run
        count = nxt
    by_prefixes = 6 * n * sum(children) + 20 * call * (d - 2)
    below = [0, 0, 0] + list(itertools.accumulate(num_harmonics(D + 1, k) for D in range(3, d)))  # below[D]
    best, best_cost, nodes = 0, by_prefixes, 0
    for L in range(1, d - 1):
        nodes += children[L - 1]
        if L > 1 and (L - 1) * (k + 1) * (k + 2) // 2 + k + 1 > N:  # the top levels' factors, held at once
            break
        cost = nodes * (call + n) + n * (N + below[d - L])
        if cost < best_cost:
            best, best_cost = L, cost
        if nodes * (call + n) > best_cost:
            break
    return best


def _harmonics_by_prefixes(X, R, k, N):
    """The (n, N(d, k)) array of :func:`spherical_harmonics` for d >= 3, level by level over the prefixes
    (k_1, ..., k_i) with k_i > 0: their partial products V (M, n) times the factors A^{(D)}_{a,b} of the
    next level, vectorised over the prefixes. About 6 passes over the prefixes' rows but a few array
    operations a level: the choice where d >> k (see :func:`_fused_levels`)."""
    xp = get_xp(X)
    n, d = X.shape
    out = xp.empty((N, n), dtype=X.dtype)  # (N, n): rows are the basis functions
    # Active prefixes (k_1, ..., k_i) with k_i > 0: their partial products V (M, n), last degree
    # a (M,), and the column offset off (M,) of their first descendant.
    V = xp.ones((1, n), dtype=X.dtype)
    a = np.array([k], dtype=np.int64)
    off = np.zeros(1, dtype=np.int64)
    for i in range(d - 2):
        if a.size == 0:
            break
        D = d - i  # level i works on S^{D-1}, coordinates x_i, ..., x_{d-1} (0-based)
        t, s = _level_coordinates(X, R, i, xp)
        F, slot = _gegenbauer_table(t, s, D, np.unique(a), xp)
        counts = a + 1
        parent = np.repeat(np.arange(a.size), counts)  # (C,)
        b = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)  # (C,)
        child_off = off[parent] + _block_offsets(D, int(a.max()))[b]
        vals = V[xp.asarray(parent)] * F[xp.asarray(slot[a[parent], b])]  # (C, n)
        done = b == 0  # k_{i+2} = ... = 0: the remaining factors are 1
        if done.any():
            out[xp.asarray(child_off[done])] = vals[xp.asarray(np.flatnonzero(done))]
        keep = np.flatnonzero(~done)
        V, a, off = vals[xp.asarray(keep)], b[keep], child_off[keep]
    if a.size:
        # Last level: the circle of (x_{d-2}, x_{d-1}), Phi_m = sqrt(2) cos(m phi), sqrt(2) sin(m phi).
        phi = xp.arctan2(X[:, d - 1], X[:, d - 2])  # (n,)
        degrees, pos = np.unique(a, return_inverse=True)  # a > 0: prefixes ending in 0 were written
        angle = xp.asarray(degrees, dtype=X.dtype)[:, None] * phi[None, :]  # (L, n)
        Vn = math.sqrt(2) * V
        pos = xp.asarray(pos)
        out[xp.asarray(off)] = Vn * xp.cos(angle)[pos]
        out[xp.asarray(off + 1)] = Vn * xp.sin(angle)[pos]
    return out.T


def _harmonics_up_to(X, R, k, top):
    """Every harmonic of degree a <= k on S^{top-1}, the sphere of the trailing coordinates x_{d-top}, ..., x_{d-1}
    of the rows of X (2 <= top <= d; R from :func:`_radii`), in rows: a (N(top + 1, k), n) array.

    Degree a fills the rows N(top + 1, a - 1) .. N(top + 1, a) - 1, in the order of :func:`harmonic_indices`.
    Bottom-up over D = 2, ..., top: the degree-a block b on S^{D-1} is A^{(D)}_{a,b} times the degree-b rows
    on S^{D-2}, which are contiguous, so that each entry is one product.
    """
    xp = get_xp(X)
    n, d = X.shape
    phi = xp.arctan2(X[:, d - 1], X[:, d - 2])  # (n,)
    # The circle: 1, then sqrt(2) cos(m phi), sqrt(2) sin(m phi) for m = 1..k.
    T = xp.empty((2 * k + 1, n), dtype=X.dtype)  # (N(3, k), n)
    T[0] = 1
    angle = xp.arange(1, k + 1, dtype=X.dtype)[:, None] * phi[None, :]  # (k, n)
    xp.multiply(xp.cos(angle), math.sqrt(2), out=T[1::2])
    xp.multiply(xp.sin(angle), math.sqrt(2), out=T[2::2])
    for D in range(3, top + 1):
        F, slot = _gegenbauer_table(*_level_coordinates(X, R, d - D, xp), D, range(k + 1), xp)  # A^{(D)}_{a,b}
        start = _block_offsets(D, k + 1)  # degree b of the previous T: rows start[b] .. start[b + 1] - 1
        nxt = xp.empty((num_harmonics(D + 1, k), n), dtype=X.dtype)  # (N(D + 1, k), n)
        base = _block_offsets(D + 1, k + 1)  # degree a of the new T starts at base[a]
        for a in range(k + 1):
            for b in range(a + 1):
                xp.multiply(T[start[b]:start[b + 1]], F[int(slot[a, b])],
                            out=nxt[base[a] + start[b]:base[a] + start[b + 1]])
        T = nxt
    return T


def spherical_harmonics(X, k):
    r"""A real orthonormal basis of the degree-k spherical harmonics on S^{d-1}, evaluated at X.

    Parameters
    ----------
    X : array of shape (n, d)
        Points of S^{d-1}, d >= 2 (rows of unit norm, within sqrt(eps) of the dtype); numpy or
        cupy, float64 or float32 (kept). The harmonics are evaluated at x / |x|.
    k : int
        Degree, k >= 0.

    Returns
    -------
    Y : array of shape (n, N(d, k))
        Y[i, j] = Y_{k, kappa_j}(x_i), kappa_j the j-th row of :func:`harmonic_indices`. The array
        is column-major (``Y.T`` is C-contiguous): each column is one basis function.

    Notes
    -----
    Orthonormal in L2(tau_d), tau_d the uniform probability measure:
    int Y_{k,kappa} Y_{k,kappa'} dtau_d = [kappa = kappa'], hence the addition theorem
    sum_j Y_{k,kappa_j}(x) Y_{k,kappa_j}(y) = N(d, k) P_{k,d}(<x, y>).

    Coordinates: with r_i = (x_i^2 + ... + x_d^2)^{1/2} (computed as a norm of the trailing
    coordinates, never by trigonometry, so that points near the poles are accurate),
    t_i = x_i / r_i and s_i = r_{i+1} / r_i = (1 - t_i^2)^{1/2} for i = 1..d-2, and
    phi = atan2(x_d, x_{d-1}). For kappa = (k_1, ..., k_{d-1}),
    k = k_1 >= k_2 >= ... >= k_{d-2} >= |k_{d-1}|,

        Y_{k,kappa}(x) = prod_{i=1}^{d-2} A^{(d-i+1)}_{k_i, |k_{i+1}|}(t_i, s_i) * Phi_{k_{d-1}}(phi),

        A^{(D)}_{a,b}(t, s) = c^{(D)}_b s^b p^{(b + (D-2)/2)}_{a-b}(t),

    Phi_0 = 1, Phi_m = sqrt(2) cos(m phi), Phi_{-m} = sqrt(2) sin(m phi) (m >= 1); for d = 2,
    Y_{k,(+-k)} = Phi_{+-k}(phi). Here p^{(alpha)}_m is the orthonormal Gegenbauer polynomial for
    the probability density proportional to (1 - t^2)^{alpha - 1/2}, computed by its
    normalised three-term recurrence (ref. 3)

        t p_m = beta_{m+1} p_{m+1} + beta_m p_{m-1},  beta_m^2 = m (m + 2 alpha - 1) / (4 (m + alpha)(m + alpha - 1)),

    and c^{(D)}_b = (E_{t ~ w_D}[(1 - t^2)^b])^{-1/2} = prod_{j=1}^{b} ((lam + j)/(lam + j - 1/2))^{1/2},
    lam = (D - 2)/2, so that each factor has unit norm in L2(w_D) and every intermediate
    quantity is a normalised function (no factorials, no overflow: |Y| <= N(d, k)^{1/2}). For
    x = (x_1, x') on S^{D-1} and any degree-b harmonic Y' on S^{D-2},
    A^{(D)}_{a,b}(t_1, s_1) Y'(x' / |x'|) is a degree-a harmonic on S^{D-1} (ref. 1): the basis is
    built by this branching from S^1 up to S^{d-1}.

    The first factor c_b s^b of A_{a,b} falls below the normal numbers (2.2e-308 in float64,
    1.2e-38 in float32) at large b while A_{a,b} itself is of order 1 near s = b / a: at d = 3 from
    k ~ 1900 in float64 and k ~ 240 in float32. At the points where it does, the factors are
    recomputed with a power of 2 carried beside each entry, so that they keep their digits.

    Column order: see :func:`harmonic_indices`. Each factor A^{(D)}_{a,b} is computed once per level
    and (a, b), for all b at once by the recurrence in m = a - b: O(n d k^2) work. The products: the
    degree-a harmonics on S^{D-1} are the blocks A^{(D)}_{a,b} times the degree-b harmonics on S^{D-2},
    contiguous rows, so that the table of every harmonic of degree <= k on the sphere of the trailing
    coordinates is built bottom-up, one product per entry; the top L levels then run depth first over
    the prefixes (k_2, ..., k_{L+1}), each product of their factors multiplying a block of that table
    into the output, written once. L minimises an estimate of the cost (tables below the top levels,
    about d / k times the output where d >> k, against one array operation per prefix); where d >> k
    and n is small the prefixes go level by level instead, vectorised over the prefixes. Work
    O(n N(d, k)) for the products, memory about one output beside the output.

    Raises
    ------
    ValueError
        When X is not an (n, d) array of unit rows with d >= 2, when k is not a non-negative
        integer, or when N(d, k) > 10^8 (use :func:`spherical_harmonic`).

    References
    ----------
    1. F. Dai and Y. Xu, "Approximation Theory and Harmonic Analysis on Spheres and Balls",
       2013, Sec. 1.5.
    2. K. Atkinson and W. Han, "Spherical Harmonics and Approximations on the Unit Sphere",
       2012, Thm. 2.9 (addition theorem).
    3. G. Szego, "Orthogonal Polynomials", 1975, Sec. 4.7.

    Examples
    --------
    >>> from shallow.sphere import sample_sphere
    >>> X = sample_sphere(5, 4, rng=0)
    >>> Y = spherical_harmonics(X, 2)
    >>> Y.shape
    (5, 9)
    >>> G = np.clip(X @ X.T, -1, 1)
    >>> bool(np.allclose(Y @ Y.T, num_harmonics(4, 2) * legendre(2, 4, G)))   # addition theorem
    True
    """
    if isinstance(X, numbers.Integral) and hasattr(k, "shape"):  # spherical_harmonics(2, X), legendre's order
        raise ValueError("spherical_harmonics takes the points first and the degree second: spherical_harmonics(X, k)")
    X = check_on_sphere(X, "X")
    k = check_integer(k, "k", minimum=0)
    xp = get_xp(X)
    n, d = X.shape
    N = num_harmonics(d, k)
    if N > _MAX_COLUMNS:
        raise ValueError(f"degree k={k} in d={d} has N(d, k) = {_format_count(N)} harmonics, too many to enumerate; "
                         "evaluate chosen elements with spherical_harmonic(X, index)")
    if d == 2:
        phi = xp.arctan2(X[:, 1], X[:, 0])  # (n,)
        if k == 0:
            return xp.ones((n, 1), dtype=X.dtype)
        return xp.stack([math.sqrt(2) * xp.cos(k * phi), math.sqrt(2) * xp.sin(k * phi)]).T  # (n, 2)
    R = _radii(X, xp)  # (n, d)
    L = _fused_levels(d, k, n, xp)
    if L == 0:
        return _harmonics_by_prefixes(X, R, k, N)
    T = _harmonics_up_to(X, R, k, d - L)  # (N(d - L + 1, k), n)
    # The top L levels D = d, ..., d - L + 1, depth first over the prefixes (k_2, ..., k_{L+1}) with the
    # product of their factors, the degree-k_{L+1} rows of T times that product written once into the output.
    levels = []
    for j in range(L):
        F, slot = _gegenbauer_table(*_level_coordinates(X, R, j, xp), d - j, [k] if j == 0 else range(k + 1), xp)
        levels.append((F, slot, _block_offsets(d - j, k + 1)))
    out = xp.empty((N, n), dtype=X.dtype)  # (N, n): rows are the basis functions
    stack = [(0, k, None, 0)]  # (level j, degree a there, product of the factors above, first row)
    while stack:
        j, a, V, row = stack.pop()
        F, slot, start = levels[j]
        for b in range(a + 1):
            W = F[int(slot[a, b])] if V is None else V * F[int(slot[a, b])]  # (n,)
            lo = row + int(start[b])
            if b == 0 and j < L - 1:  # k_{j+2} = ... = 0: the remaining factors are 1, a single row
                out[lo] = W
            elif j == L - 1:
                xp.multiply(T[start[b]:start[b + 1]], W, out=out[lo:lo + int(start[b + 1] - start[b])])
            else:
                stack.append((j + 1, b, W, lo))
    return out.T


def spherical_harmonic(X, index):
    r"""One element Y_{k,kappa} of the basis of :func:`spherical_harmonics`, chosen by its multi-index.

    For dimensions and degrees where N(d, k) is too large to enumerate (d = 50, k = 150 has
    N ~ 5e46), at cost O(n d k).

    Parameters
    ----------
    X : array of shape (n, d)
        Points of S^{d-1}, d >= 2; numpy or cupy, dtype kept.
    index : sequence of d - 1 ints
        kappa = (k_1, ..., k_{d-1}) with k_1 >= k_2 >= ... >= k_{d-2} >= |k_{d-1}|; the degree is
        k = |k_1| (for d = 2, index = (k,) is sqrt(2) cos(k phi) and (-k,) is sqrt(2) sin(k phi)).

    Returns
    -------
    y : array of shape (n,)
        Y_{k,kappa}(x_i); equal to the column of ``spherical_harmonics(X, k)`` whose row of
        ``harmonic_indices(d, k)`` is kappa.

    Notes
    -----
    The product formula of :func:`spherical_harmonics`, with each factor
    A^{(D)}_{a,b} = c_b s^b p^{(b + (D-2)/2)}_{a-b}(t) computed by its own recurrence
    (O(n (a - b)) work); levels after the first k_{i+1} = 0 contribute the factor 1.

    Examples
    --------
    >>> x = np.array([[0.6, 0.0, 0.8]])
    >>> y = spherical_harmonic(x, (1, 0))                  # sqrt(3) x_1
    >>> bool(abs(y[0] - np.sqrt(3) * 0.6) < 1e-15)
    True
    """
    X = check_on_sphere(X, "X")
    xp = get_xp(X)
    n, d = X.shape
    kappa = _check_index(index, d)
    y = xp.ones(n, dtype=X.dtype)
    if d > 2 and kappa[0] > 0:
        R = _radii(X, xp)
        for i in range(d - 2):
            a, b = abs(kappa[i]), abs(kappa[i + 1])
            if a == 0:
                break
            t, s = _level_coordinates(X, R, i, xp)
            y *= _gegenbauer_factor(t, s, d - i, a, b, xp)
    m = kappa[-1]
    if m != 0:
        phi = xp.arctan2(X[:, d - 1], X[:, d - 2])
        y *= math.sqrt(2) * (xp.cos(m * phi) if m > 0 else xp.sin(-m * phi))
    return y


# ---------------------------------------------------------------------------------------------
# Spectra of sampled functions
# ---------------------------------------------------------------------------------------------

def harmonic_energy(f_values, X, kmax, *, weights=None, block_size=None, method=None):
    r"""Per-degree energy E_k = ||proj_k f||^2_{L2(tau_d)}, k = 0..kmax, of f sampled at X.

    Parameters
    ----------
    f_values : array of shape (n,)
        f(x_i).
    X : array of shape (n, d)
        Points of S^{d-1}: iid from tau_d (default estimator), or the nodes of a quadrature rule
        when ``weights`` is given.
    kmax : int
        Highest degree, kmax >= 0.
    weights : array of shape (n,), optional
        Quadrature weights for tau_d, summing to 1 within sqrt(eps) of their dtype (1.5e-8 in
        float64, 3.5e-4 in float32, as for points on the sphere). Then E_k is the quadrature value
        N(d, k) sum_{i,j} w_i w_j f_i f_j P_{k,d}(<x_i, x_j>), exact when the rule integrates
        polynomials of degree deg(f) + k exactly (:func:`shallow.sphere.sphere_quadrature`).
    block_size : int, optional
        Rows of the Gram matrix <x_i, x_j> held at once (default: about 2^20 / n); memory is
        O(n * block_size) whatever kmax. With ``method="harmonics"``: points whose harmonics are held
        at once (default: about 2^22 / sum_{k <= kmax} N(d, k)), memory O(block_size sum_k N(d, k)).
    method : {None, "pairs", "harmonics"}
        How a quadrature (``weights``) is summed: "pairs", over all pairs of points by the addition
        theorem, O(n^2 (d + kmax)) work; "harmonics", by projecting on the orthonormal basis of
        :func:`spherical_harmonics`, O(n sum_{k <= kmax} N(d, k)) work plus the factors of that basis,
        far less where sum_k N(d, k) << n (product rules on S^2 and S^3 with many points). The same
        quantity up to rounding. Default: the one of lower estimated cost. Without weights only
        "pairs" (the U-statistic leaves out the diagonal).

    Returns
    -------
    E : array of shape (kmax + 1,)
        On X's device, in X's dtype. Where N(d, k) exceeds the dtype's range (float32: d = 1000
        from k = 19, d = 10^4 from k = 12), E_k is still computed: N(d, k) times the sum, exactly.

    Raises
    ------
    ValueError
        For X not an (n, d) array of unit rows, f_values (or weights) not a finite 1-D array of n
        values on X's device, kmax not an integer >= 0, weights that do not sum to 1, without
        weights, n < 2 (the U-statistic needs two distinct points), an unknown ``method``, or
        ``method="harmonics"`` without weights or with more than 10^8 harmonics of degree <= kmax.

    Notes
    -----
    By the addition theorem, proj_k f(x) = N(d, k) E_y[f(y) P_{k,d}(<x, y>)], so

        E_k = <f, proj_k f> = N(d, k) E_{x,y}[f(x) f(y) P_{k,d}(<x, y>)],   x, y iid tau_d.

    Without weights this is estimated by the U-statistic over distinct pairs,

        E_k^ = N(d, k) / (n (n - 1)) sum_{i != j} f(x_i) f(x_j) P_{k,d}(<x_i, x_j>),

    a Monte Carlo estimator, unbiased for iid x_i ~ tau_d (it can be negative). By Hoeffding's
    decomposition its variance is

        Var E_k^ = 4 (n - 2) / (n (n - 1)) zeta_1 + 2 / (n (n - 1)) zeta_2,

    zeta_1 = Var_x[f(x) proj_k f(x)] and zeta_2 = Var[h(x, y)] <= N(d, k) ||f||_inf^4 for
    h(x, y) = N(d, k) f(x) f(y) P_{k,d}(<x, y>); so the error is about 2 (zeta_1 / n)^{1/2} on
    degrees where f has energy and (2 N(d, k))^{1/2} ||f||_inf^2 / n elsewhere: high degrees
    (N(d, k) comparable to n^2) cannot be resolved from n samples. Including the diagonal
    (a V-statistic) would add the bias N(d, k) E[f^2] / n. The Gram matrix is computed in blocks
    of rows, and P_{k,d} by the recurrence of :func:`legendre_all` on each block, at
    O(n^2 (d + kmax)) work. The diagonal enters those sums at t = 0 and is subtracted as
    sum_i f(x_i)^2 P_{k,d}(0): at high degree the terms kept are of order N(d, k)^{-1/2} and so is
    P_{k,d}(0), where P_{k,d}(1) = 1 would leave only rounding error of the diagonal's size.
    The sums run on 2^-e f, max |2^-e f| in [1/2, 1), and E_k is scaled back by 4^e: E_k is
    computed wherever it is a normal number of the dtype, whatever the size of f and n.

    With weights, the addition theorem makes the quadrature value a sum of squares,

        E_k = sum_j (sum_i w_i f(x_i) Y_{k,j}(x_i))^2,

    Y_{k,j} the orthonormal basis of :func:`spherical_harmonics` (L2(tau_d)), which
    ``method="harmonics"`` computes over blocks of points.

    Examples
    --------
    >>> from shallow.sphere import sample_sphere
    >>> X = sample_sphere(2000, 3, rng=0)
    >>> E = harmonic_energy(X[:, 0], X, 2)   # f = x_1, a degree-1 harmonic of norm^2 1/3
    >>> round(float(E[1]), 1), bool(abs(E[0]) < 0.01 and abs(E[2]) < 0.01)
    (0.3, True)
    >>> from shallow.sphere import sphere_quadrature
    >>> Xq, w = sphere_quadrature(3, 3)                  # exact for f P_2: degree 3
    >>> [round(float(harmonic_energy(Xq[:, 0], Xq, 2, weights=w, method=m)[1]), 12) for m in ("pairs", "harmonics")]
    [0.333333333333, 0.333333333333]
    """
    X = check_on_sphere(X, "X")
    xp = get_xp(X)
    n, d = X.shape
    f = check_array(f_values, "f_values", ndim=1)
    if get_xp(f) is not xp:
        raise ValueError("f_values and X must live on the same device (both numpy or both cupy)")
    if f.shape[0] != n:
        raise ValueError(f"f_values has {f.shape[0]} values but X has n={n} points")
    kmax = check_integer(kmax, "kmax", minimum=0)
    # f and the energies, quadratic in f, set a power of 2 apart: f = 2^e f' with max |f'| in [1/2, 1),
    # so that the sums (up to n^2 max f'^2) neither overflow nor underflow where E_k = 4^e E'_k need not.
    e = math.frexp(float(xp.abs(f).max()))[1] if f.size else 0
    f = xp.ldexp(f, -e).astype(X.dtype, copy=False)
    if weights is not None:
        w = check_array(weights, "weights", ndim=1)
        if get_xp(w) is not xp:
            raise ValueError("weights and X must live on the same device (both numpy or both cupy)")
        if w.shape[0] != n:
            raise ValueError(f"weights has {w.shape[0]} values but X has n={n} points")
        if abs(float(w.sum()) - 1) > sphere_tolerance(w.dtype):  # one ulp of 1 in float32 is 6e-8
            raise ValueError(f"weights must sum to 1 (a quadrature rule for the probability measure tau_d), "
                             f"got sum {float(w.sum()):.12g}")
        g = f * w.astype(X.dtype, copy=False)  # (n,)
    elif n < 2:
        raise ValueError(f"X must hold n >= 2 points for the U-statistic, got n={n}")
    else:
        g = f
    if method not in (None, "pairs", "harmonics"):
        raise ValueError(f"method must be None, 'pairs' or 'harmonics', got {method!r}")
    if method == "harmonics" and weights is None:
        raise ValueError("method='harmonics' needs quadrature weights (the U-statistic without weights sums "
                         "over pairs)")
    if method == "harmonics" and num_harmonics(d + 1, kmax) > _MAX_COLUMNS:
        raise ValueError(f"method='harmonics' with kmax={kmax} in d={d} evaluates sum_(k <= kmax) N(d, k) = "
                         f"{_format_count(num_harmonics(d + 1, kmax))} harmonics at each point, too many to "
                         "enumerate; use method='pairs'")
    if weights is not None and (method == "harmonics" or method is None and _harmonics_are_cheaper(n, d, kmax)):
        E = _harmonic_sums_of_squares(X, g, kmax, block_size)
        return xp.ldexp(E, 2 * e)
    # The quadrature keeps the diagonal, <x_i, x_i> = 1 exactly. The U-statistic drops it: at t = 0 it
    # adds g_i^2 P_j(0), removed below, which unlike P_j(1) = 1 is no larger than the terms kept.
    E = _zonal_quadratic_forms(X, g, kmax, block_size, diagonal=1 if weights is not None else 0)
    if weights is None:
        at_zero = legendre_all(kmax, d, xp.zeros(1, dtype=X.dtype))[:, 0]  # (kmax + 1,), as the recurrence gave
        E = (E - (f * f).sum() * at_zero) / (n * (n - 1))
    else:  # a quadratic form of the positive semidefinite P_{k,d}(<x_i, x_j>): below 0 only by rounding
        E = xp.maximum(E, 0)
    return xp.ldexp(_times_num_harmonics(E, d), 2 * e)


def _zonal_quadratic_forms(X, g, kmax, block_size=None, diagonal=1):
    """sum_{i,j} g_i g_j P_{k,d}(<x_i, x_j>), k = 0..kmax, for unit rows x_i, with <x_i, x_i> read as ``diagonal``.

    The Gram matrix is formed in blocks of ``block_size`` rows (default about 2^20 / n), and P_{k,d} by the
    recurrence of :func:`legendre_all` on each block: O(n^2 (d + kmax)) work, O(n block_size) memory.
    Returns an array of shape (kmax + 1,) on X's device, in its dtype.
    """
    xp = get_xp(X)
    n, d = X.shape
    if block_size is None:
        block_size = max(1, min(n, 2**20 // max(n, 1)))
    else:
        block_size = check_integer(block_size, "block_size", minimum=1)
    sums = [0.0] * (kmax + 1)
    total_g = g.sum()
    for lo in range(0, n, block_size):
        hi = min(n, lo + block_size)
        G = X[lo:hi] @ X.T  # (B, n)
        xp.clip(G, -1, 1, out=G)
        rows = xp.arange(hi - lo)
        G[rows, rows + lo] = diagonal
        gb = g[lo:hi]  # (B,)
        sums[0] = sums[0] + gb.sum() * total_g
        for j, P in enumerate(_legendre_sequence(G, kmax, d), start=1):  # P = P_{j,d}(G)
            sums[j] = sums[j] + gb @ (P @ g)
    return xp.stack([xp.asarray(v, dtype=X.dtype) for v in sums])  # (kmax + 1,)


def _harmonics_are_cheaper(n, d, kmax):
    """Whether sum_j (sum_i g_i Y_{k,j}(x_i))^2 costs less than the sum over pairs, by the estimated entries
    computed: n (N(d + 1, kmax) + 2 (d - 2) (kmax + 1) (kmax + 2)) for the harmonics of every degree <= kmax
    and their factors' recurrences (:func:`_harmonics_up_to`), against n^2 (3 kmax + d / 4) for the Gram
    matrix and the recurrence of P_{k,d} on it."""
    rows = num_harmonics(d + 1, kmax)  # sum_{k <= kmax} N(d, k)
    if rows > _MAX_COLUMNS:
        return False
    return n * (rows + 2 * (d - 2) * (kmax + 1) * (kmax + 2)) < n * n * (3 * kmax + d / 4)


def _harmonic_sums_of_squares(X, g, kmax, block_size=None):
    """sum_j (sum_i g_i Y_{k,j}(x_i))^2 for k = 0..kmax, Y_{k,j} the basis of :func:`spherical_harmonics`.

    Equal to N(d, k) sum_{i,j} g_i g_j P_{k,d}(<x_i, x_j>) by the addition theorem. The harmonics of every
    degree <= kmax are evaluated together (:func:`_harmonics_up_to`) on blocks of ``block_size`` points
    (default about 2^22 / sum_k N(d, k)): O(n sum_k N(d, k) + n d kmax^2) work, O(block_size sum_k N(d, k))
    memory. Returns an array of shape (kmax + 1,) on X's device, in its dtype.
    """
    xp = get_xp(X)
    n, d = X.shape
    rows = num_harmonics(d + 1, kmax)  # sum_{k <= kmax} N(d, k)
    if block_size is None:
        block_size = max(1, min(n, 2**22 // rows))
    else:
        block_size = check_integer(block_size, "block_size", minimum=1)
    c = xp.zeros(rows, dtype=X.dtype)  # sum_i g_i Y_{k,j}(x_i), degree k in rows N(d + 1, k - 1) .. N(d + 1, k) - 1
    for lo in range(0, n, block_size):
        hi = min(n, lo + block_size)
        Xb = X[lo:hi]
        Yb = _harmonics_up_to(Xb, _radii(Xb, xp) if d > 2 else None, kmax, d)  # (rows, B); d = 2: the circle, no radii
        c += Yb @ g[lo:hi]
    ends = _block_offsets(d + 1, kmax + 1)  # degree k: rows ends[k] .. ends[k + 1] - 1
    return xp.stack([c[ends[k]:ends[k + 1]] @ c[ends[k]:ends[k + 1]] for k in range(kmax + 1)])  # (kmax + 1,)


def _times_num_harmonics(E, d):
    """N(d, k) E_k for k = 0..len(E) - 1, rounded once even where N(d, k) exceeds the dtype of E."""
    xp = get_xp(E)
    Nk = [num_harmonics(d, j) for j in range(E.shape[0])]  # non-decreasing in j
    if Nk[-1] <= float(np.finfo(E.dtype).max):  # a Python int and float compare exactly
        return xp.asarray([float(N) for N in Nk], dtype=E.dtype) * E
    # N(d, k) beyond the dtype (float32: d = 1000 from k = 19; float64: from k = 308), where
    # N(d, k) E_k need not be: the product of the exact integer and E_k, rounded once.
    return xp.asarray([float(N * Fraction(float(v))) for N, v in zip(Nk, to_numpy(E))], dtype=E.dtype)
