r"""Kernels of two-layer networks: random features (NNGP), NTK, Mercer eigenvalues, RKHS (F2) norms.

A two-layer network f(x) = m^{-1/2} sum_{j<=m} a_j sigma(<w_j, x>) with i.i.d. weights has, as
m -> infinity, two kernels (inputs x, y in R^d):

* the random-feature kernel (the NNGP kernel of the output layer)

      K_sigma(x, y) = E_w[ sigma(<w, x>) sigma(<w, y>) ];

* the neural tangent kernel of the network with both layers trained, a_j ~ N(0, 1),

      Theta(x, y) = E_w[ sigma(<w, x>) sigma(<w, y>) ] + <x, y> E_w[ sigma'(<w, x>) sigma'(<w, y>) ]
                  = K_sigma(x, y) + <x, y> K_sigma'(x, y)

  (the first term from the gradient in a_j, the second from the gradient in w_j, which is
  a_j sigma'(<w_j, x>) x; E[a_j^2] = 1).

Two laws of the inner weights: ``weights="gaussian"``, w ~ N(0, I_d), and ``weights="sphere"``,
w ~ tau_d, the uniform probability measure on S^{d-1} (the gradient in w is still the Euclidean
one, taken at a point of the sphere). For a positively homogeneous feature f of degree h,
E_{w ~ N(0, I)}[f(<w, x>) f(<w, y>)] = E|w|^{2h} E_{w ~ tau_d}[...] with

    E|w|^{2h} = 2^h Gamma(d/2 + h) / Gamma(d/2)   (= d for relu, h = 1),

since |w| and w/|w| are independent. In the NTK the two terms have their own degrees: h for sigma
and h - 1 for sigma'; for relu with sphere weights, Theta = k_1 / d + <x, y> k_0.

Closed forms for w ~ N(0, I_d), with theta the angle between x and y, computed as
theta = atan2(|x||y| sin theta, <x, y>) from s = sqrt(max(|x|^2 |y|^2 - <x, y>^2, 0)) (never an
arccos of a number just above 1):

* arc-cosine kernels of integer order n (Cho and Saul 2009), sigma = max(0, z)^n:
  E[...] = |x|^n |y|^n J_n(theta) / (2 pi), J_0 = pi - theta, J_1 = sin theta + (pi - theta) cos theta,
  J_n = (-1)^n sin^{2n+1} theta (sin^{-1} theta d/dtheta)^n ((pi - theta)/sin theta), evaluated as
  A_n(cos theta)(pi - theta) + B_n(cos theta) sin theta with polynomials from
  A_{n+1} = (1 - r^2) A_n' + (2n + 1) r A_n, B_{n+1} = (1 - r^2) B_n' + A_n + 2n r B_n, A_0 = 1, B_0 = 0;
* any real order a > -1/2 (a hypergeometric series, from Mehler's expansion of max(0, z)^a in
  Hermite polynomials; rho = cos theta):
  E[...] = |x|^a |y|^a [ 2^a Gamma((a+1)/2)^2 / (4 pi) 2F1(-a/2, -a/2; 1/2; rho^2)
                         + 2^a Gamma(a/2 + 1)^2 / (2 pi) rho 2F1((1-a)/2, (1-a)/2; 3/2; rho^2) ];
* abs: (2 s + (pi - 2 theta) <x, y>) / pi; sign: 1 - 2 theta / pi; quadratic: |x|^2 |y|^2 + 2 <x, y>^2;
* erf (Williams 1997): (2/pi) arcsin(2 <x, y> / sqrt((1 + 2|x|^2)(1 + 2|y|^2))), and for
  erf'(z) = (2/sqrt(pi)) e^{-z^2}: (4/pi) / sqrt((1 + 2|x|^2)(1 + 2|y|^2) - 4 <x, y>^2).

Other activations (sigmoid, tanh, softplus, gelu) have no closed form, but on the unit sphere two
series are exact up to truncation. With ``weights="sphere"``, the Funk-Hecke series
K(x, y) = sum_k mu_k(sigma)^2 N(d, k) P_{k,d}(<x, y>), cut at degree ``kmax`` (its terms decay
geometrically for these analytic activations). With ``weights="gaussian"``, Mehler's series
K(x, y) = sum_k b_k^2 <x, y>^k, b_k = E[sigma(Z) He_k(Z)] / sqrt(k!) for Z ~ N(0, 1), cut where its
terms left fall below 1e-17 K(x, x), which bounds the truncation error (b_k^2 >= 0, |<x, y>| <= 1);
within 1e-14 of a double quadrature. Off the sphere a Monte Carlo average over ``n_features``
weights drawn with ``rng`` is used when (and only when) ``n_features`` is given.

Matrices are built from the Gram matrix <x_i, y_j> and the squared norms only: memory is
O(n n') and no (n, n', d) array is formed; everything runs on numpy or cupy (the input's),
except the hypergeometric function of non-integer arc-cosine orders, evaluated by scipy on the
host (an explicit round trip on a GPU). Accuracy: from a Gram matrix the angle of two nearly
parallel (or antiparallel) vectors is known to about sqrt(eps) only (1e-8 in float64, 3e-4 in
float32), which the step (order 0) and sign kernels, and hence NTKs, would carry; so the nearly
parallel pairs with sin theta < 0.1 have theta recomputed from their unit vectors, 2 asin(|u - v| / 2), to a
few ulps (a matrix product about the data's mean direction where the data cluster about it,
O(d) work per pair otherwise: the relu NTK of 2000 points 30 + N(0, I_500), all pairs nearly
parallel, takes 0.46 s against 0.24 s for centred data). The kernels of order >= 1 do not feel it
(their derivative in theta vanishes at theta = 0); near theta = pi, where they shrink like
(pi - theta)^(2n+1), they come from their integral form and keep their relative accuracy (the closed form
cancelled to eps absolute: negative values for n = 3), with sin theta of the nearly antiparallel pairs to a few
eps relative from the part of y orthogonal to x, O(d) work per pair (the unit vectors' rounding, eps absolute in
pi - theta, left relu^3 7e6 to 1.1e7 eps off at pi - theta = 1e-7). Real orders, and a DotProductKernel given t,
keep the Gram matrix's accuracy. With
Y = None the norms are read off the diagonal of the Gram matrix, so that theta(x, x) = 0 exactly.
Rows far from the unit scale (largest entry beyond 2^{+-25} in float32, 2^{+-249} in float64 at
d = 1000) are first scaled by powers of two, exactly, and the closed forms rescaled after
(2^{h (kx + ky)} for a degree-h homogeneous feature): |x|^2 |y|^2 neither over- nor underflows.

References
----------
1. Y. Cho and L. K. Saul, "Kernel methods for deep learning", NeurIPS 2009, Eq. (6)-(7)
   (arc-cosine kernels; their k_n carries an extra factor 2).
2. C. K. I. Williams, "Computing with infinite networks", NeurIPS 1997, Eq. (11) (erf kernel).
3. A. Jacot, F. Gabriel and C. Hongler, "Neural tangent kernel", NeurIPS 2018, arXiv:1806.07572,
   Theorem 1 (NTK of the infinite-width limit).
4. F. Bach, "Breaking the curse of dimensionality with convex neural networks", JMLR 18 (2017),
   arXiv:1412.8690, Sec. 2.3 and Appendix D (F2 = RKHS, Funk-Hecke coefficients).
5. A. Bietti and J. Mairal, "On the inductive bias of neural tangent kernels", NeurIPS 2019,
   arXiv:1905.12173, Theorem 4 (relu NTK eigenvalues decay like k^{-d} on S^{d-1}).
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from numpy.polynomial import polynomial as npoly
from scipy import special

from ._validation import (check_array, check_dimension, check_integer, check_nonnegative, check_points,
                          check_random_state, check_symmetric)
from .activations import Activation, _positive_part_power, _relu_power_funk_hecke, as_activation
from .backend import get_xp, row_norms, to_numpy
from .harmonics import _check_breakpoints, _slack, legendre_all, num_harmonics, project_zonal
from .sphere import _log_gamma_ratio, log_inner_product_constant

__all__ = [
    "WEIGHTS",
    "KINDS",
    "random_feature_kernel",
    "ntk",
    "DotProductKernel",
    "dot_product_kernel",
    "mercer_eigenvalues",
    "gaussian_norm_moment",
    "rkhs_norm",
    "f2_norm_from_harmonics",
]

WEIGHTS = ("gaussian", "sphere")
"""Laws of the inner weights: w ~ N(0, I_d), or w ~ tau_d uniform on S^{d-1}."""

KINDS = ("nngp", "ntk")
"""Kernels of a two-layer network: random features (NNGP) and neural tangent kernel."""

_DEFAULT_KMAX = 64  # truncation of the Funk-Hecke series (sphere weights, activations without closed form)
_CHUNK = 2048  # Monte Carlo features per block
_KERNEL_BLOCK = 2**18  # entries of the Gram matrix per block of rows of the exact kernels, on the host
_DEVICE_KERNEL_BLOCK = 2**24  # on a device, where each block costs a few hundred kernel launches (1 GB of
# float64 temporaries at most: 2**26 took 3.5 GB, out of reach of a 12 GB card beside a 20000-point NTK)


# --------------------------------------------------------------------------------------------
# Gaussian expectations in closed form, from G = <x, y>, nx2 = |x|^2, ny2 = |y|^2 (broadcast).
# --------------------------------------------------------------------------------------------

def _angle(xp, G, N2, angle=None):
    """s = |x||y| sin theta and theta = atan2(s, <x, y>) in [0, pi], without arccos; or ``angle``, the pair
    (s, theta) already computed more accurately (:func:`_refined_angle`)."""
    if angle is not None:
        return angle
    s = xp.sqrt(xp.maximum(N2 - G * G, 0))
    return s, xp.arctan2(s, G)


#: Pairs whose sin theta falls below this have their angle computed from the unit vectors themselves.
_SMALL_SINE = 0.1
_PAIR_CHUNK = 2**20  # entries of the (pairs, d) differences of _refined_angle per chunk


def _chord_sides(X, Y, same, xp):
    """The rows of X and of Y, each as (rows, U, side, A, |A|^2) for :func:`_refined_angle`, once per kernel.

    rows: those of :func:`_pair_rows`; U = x / |x| (0 for a zero row; the norm scaled, so that rows of 1e200
    neither overflow nor vanish); ``side`` = +-1 turns u to the side of the centre, the mean of the unit rows turned
    to the side of a first one (data about +-c give about c), and A = side u - centre.
    """
    units = []
    for M in (X,) if same else (X, Y):
        norms = row_norms(M)[:, None]
        units.append(xp.where(norms > 0, M / xp.where(norms > 0, norms, 1), 0))
    every = xp.concatenate(units) if len(units) > 1 else units[0]
    centre = xp.zeros(every.shape[1], dtype=every.dtype)
    if every.shape[0]:
        first = every[int(xp.argmax(xp.sum(every * every, axis=1)))]  # a row of unit norm
        centre = xp.where((every @ first)[:, None] >= 0, every, -every).sum(axis=0) / every.shape[0]
    sides = []
    for M, U in zip((X, Y), units):
        side = xp.where(U @ centre >= 0, 1, -1).astype(U.dtype)
        A = side[:, None] * U - centre
        sides.append((_pair_rows(M, xp), U, side, A, xp.sum(A * A, axis=1)))
    return sides[0], sides[-1]


def _exact_product(a, b):
    """(p, e) with p = fl(a b) and p + e = a b exactly (Dekker's two-product, Veltkamp's split, no FMA): for entries
    of a and b far from overflow (below 2^(emax - 28) in float64) and with products above the underflow."""
    factor = 2.0 ** ((np.finfo(a.dtype).nmant + 2) // 2) + 1  # 2^27 + 1 in float64, 2^12 + 1 in float32
    halves = []
    for v in (a, b):
        c = v * factor
        high = c - (c - v)
        halves.append((high, v - high))
    (ah, al), (bh, bl) = halves
    p = a * b
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _pair_rows(M, xp):
    """(M', |m'|^2): the rows of M (n, d) scaled by powers of two, exactly, to a largest entry in [1/2, 1), and their
    squared norms (n,): what :func:`_pair_sine` reads of each row, made once per row rather than once per pair."""
    M = xp.ldexp(M, -xp.frexp(xp.max(xp.abs(M), axis=1))[1][:, None])  # (n, d)
    return M, xp.einsum("nd,nd->n", M, M)


def _pair_sine(x_rows, i, y_rows, j, xp):
    """sin theta of the pairs (x_i, y_j), neither row zero, to a few eps relative at every theta (against mpmath: at
    most 2 eps for d = 2 to 100 and theta or pi - theta from 1e-12 to 2), plus about eps^2 absolute (x and the
    rounding of c x: about eps^2, not 0).

    |y| sin theta is the size of r = y - t x, the part of y orthogonal to x, computed from the stored numbers: with
    t = <x, y> / |x|^2 the products t x_k are exact (:func:`_exact_product`), so that y_k - t x_k is rounded once,
    and r is reorthogonalised once (the rounding of t left a part (t - t*) x along x, of size eps |y|). From unit
    vectors, the chord |u -+ v| kept their rounding, eps absolute: eps / theta relative near theta = 0, and
    eps / (pi - theta) near pi, where the arc-cosine kernel of order n is of size (pi - theta)^(2n+1) (relu^3 was
    up to 1.1e7 eps off at pi - theta = 1e-7, float64). O(d) work per pair.

    Parameters
    ----------
    x_rows, y_rows : tuples (M', |m'|^2) of :func:`_pair_rows`
        The rows of X and of Y, scaled.
    i, j : integer arrays of shape (k,)
        The pairs: row i[p] of X with row j[p] of Y.

    Returns
    -------
    array of shape (k,)
        sin theta, in [0, 1].
    """
    X, xx, Y, yy = x_rows[0][i], x_rows[1][i], y_rows[0][j], y_rows[1][j]  # (k, d), (k,), (k, d), (k,)
    p, e = _exact_product((xp.einsum("kd,kd->k", X, Y) / xx)[:, None], X)  # p + e = t x, (k, d)
    r = (Y - p) - e
    r -= (xp.einsum("kd,kd->k", X, r) / xx)[:, None] * X
    return xp.minimum(xp.sqrt(xp.einsum("kd,kd->k", r, r) / yy), 1)


#: Nearly antiparallel pairs with sin theta below this (from the Gram matrix) have sin theta from :func:`_pair_sine`,
#: a few eps relative; above it, the chord of the unit vectors leaves at most about (2n + 1) eps / 0.01 relative in
#: the arc-cosine kernel of order n (7e2 eps at n = 3), and comes from one matrix product for clustered data.
_ANTIPARALLEL_SINE = 1e-2


def _refined_angle(xp, G, nx2, ny2, sides, rows):
    """(s, theta) of the pairs (x_i, y_j), those nearly parallel or antiparallel recomputed from the chord
    c = |u -+ v| of their unit vectors: theta = 2 asin(c / 2), or pi - 2 asin(c / 2), s = |x||y| c sqrt(1 - c^2/4);
    those with pi - theta below about _ANTIPARALLEL_SINE from the part of y orthogonal to x (:func:`_pair_sine`),
    s = |x||y| sin theta and theta = atan2(s, <x, y>).

    From the Gram matrix, s = sqrt(|x|^2 |y|^2 - <x, y>^2) cancels: theta is known to about
    sqrt(eps) (3e-4 in float32) where it is small, which the step kernel and every NTK carry. For the
    pairs with sin theta < 0.1, the chord is first taken from a matrix product about the centre of
    :func:`_chord_sides` (``sides()``, computed once; ``rows``: those of X in this block),
    |a|^2 + |b|^2 - 2 <a, b> for a = +-u - centre, b = +-v - centre (each row turned to the centre's
    side), and kept where |a|^2 + |b|^2 <= 16 c^2 (then its rounding is a few eps of c^2: data
    clustered about a common direction, or about +-c, where nearly every pair is near); the others are
    computed pair by pair, O(d) each, as the part of |u -+ v|^2 orthogonal to their normalisations'
    rounding, (|u -+ v|^2 - (|u| - |v|)^2) / (|u||v|): x and -3x stay exactly antiparallel, and chords
    below 4 eps count as 0. The chord keeps the unit vectors' rounding, a few eps absolute: enough near
    theta = 0, where the kernels are of order 1, but eps / (pi - theta) relative near pi, where the
    arc-cosine kernels are of size (pi - theta)^(2n+1): relu^3 was 1.1e7 eps off at pi - theta = 1e-7.
    Below _ANTIPARALLEL_SINE, :func:`_pair_sine` (a few eps relative, O(d) work per pair, no matrix
    product: data in two opposite clusters of angular radius 0.05 took 24 times as long with it for
    every pair).
    """
    N2 = nx2 * ny2
    s, theta = _angle(xp, G, N2)
    near = (s * s < (_SMALL_SINE ** 2) * N2) & (N2 > 0)
    if not bool(near.any()):
        return s, theta
    anti = near & (G < 0) & (s * s < (_ANTIPARALLEL_SINE ** 2) * N2)  # sin theta from _pair_sine
    near &= ~anti
    (x_rows, U, su, A, a2), (y_rows, V, sv, B, b2) = sides()
    x_rows, U, su, A, a2 = (x_rows[0][rows], x_rows[1][rows]), U[rows], su[rows], A[rows], a2[rows]
    step = max(1, _PAIR_CHUNK // max(U.shape[1], 1))  # pairs per chunk: (step, d) temporaries of 2^20 entries
    i_anti, j_anti = xp.nonzero(anti)
    for start in range(0, i_anti.shape[0], step):
        i, j = i_anti[start:start + step], j_anti[start:start + step]
        s[i, j] = xp.sqrt(N2[i, j]) * _pair_sine(x_rows, i, y_rows, j, xp)
        theta[i, j] = xp.arctan2(s[i, j], G[i, j])
    eps = float(np.finfo(G.dtype).eps)

    def put(where, chord, sign):
        chord = xp.where(chord <= 4 * eps, 0, chord)
        half = 2 * xp.arcsin(xp.minimum(chord / 2, 1))
        theta[where] = xp.where(sign > 0, half, math.pi - half)
        s[where] = xp.sqrt(N2[where]) * (chord * xp.sqrt(1 - chord * chord / 4))

    # u = su (centre + a), v = sv (centre + b): for sign(<u, v>) = su sv the chord |u - su sv v| is |a - b|
    # (parallel and antiparallel pairs alike, from one product)
    chord2 = a2[:, None] + b2[None, :] - 2 * (A @ B.T)  # (B, n')
    pair = su[:, None] * sv[None, :]  # the sign of <u, v> the product's chord is for
    good = near & (xp.where(G >= 0, 1, -1) == pair) & (a2[:, None] + b2[None, :] <= 16 * chord2)
    if bool(good.any()):
        put(good, xp.sqrt(chord2[good]), pair[good])
    i_near, j_near = xp.nonzero(near & ~good)
    for start in range(0, i_near.shape[0], step):
        i, j = i_near[start:start + step], j_near[start:start + step]
        sign = xp.where(G[i, j] >= 0, 1, -1).astype(G.dtype)
        Ui, Vj = U[i], sign[:, None] * V[j]
        nu, nv = xp.sqrt(xp.sum(Ui * Ui, axis=1)), xp.sqrt(xp.sum(Vj * Vj, axis=1))
        diff2 = xp.sum((Ui - Vj) ** 2, axis=1)  # |u -+ v|^2: its radial part (|u| - |v|)^2 is rounding
        chord = xp.sqrt(xp.maximum(diff2 - (nu - nv) ** 2, 0) / (nu * nv))
        put((i, j), chord, sign)
    return s, theta


@functools.lru_cache(maxsize=None)
def _arccos_polynomials(n):
    """Coefficients (lowest degree first) of A_n, B_n with J_n = A_n(r)(pi - theta) + B_n(r) sin theta."""
    A, B = np.array([1.0]), np.array([0.0])
    one_minus_r2, r = np.array([1.0, 0.0, -1.0]), np.array([0.0, 1.0])
    for m in range(n):
        A, B = (npoly.polyadd(npoly.polymul(one_minus_r2, npoly.polyder(A)), (2 * m + 1) * npoly.polymul(r, A)),
                npoly.polyadd(npoly.polyadd(npoly.polymul(one_minus_r2, npoly.polyder(B)), A),
                              2 * m * npoly.polymul(r, B)))
    return tuple(float(c) for c in A), tuple(float(c) for c in B)


#: Below pi - theta = min(pi/2, _ANTIPARALLEL n) the arc-cosine J_n (n >= 1) comes from its integral form
#: (:func:`_arccos_near_pi`): the closed form keeps an absolute error of eps J_n(0) while J_n(pi - delta) is about
#: 2^n n!^3 delta^(2n+1) / (2n+1)!, up to 1000 eps relative at the switch (relu: 3 pi eps / delta^3, 600 eps at 1/4).
#: Past pi/2 (cos theta >= 0) its terms share their sign; a switch at delta = 1 for every n >= 4 left 1.3e4 eps at
#: n = 8 and 1.8e10 eps at n = 20 (J_n(0) / J_n(pi - 1) grows like 4^n: 5e2 at n = 4, 1e5 at 8, 2e12 at 20).
_ANTIPARALLEL = 0.25


def _antiparallel_switch(n):
    """delta below which J_n(pi - delta) comes from :func:`_arccos_near_pi`: n/4, at most pi/2."""
    return min(0.5 * math.pi, _ANTIPARALLEL * n)


def _arccos_near_pi(n, delta, xp):
    """J_n(pi - delta) = 2^n n! int_0^delta sin^n(u) sin^n(delta - u) du for 0 <= delta <= pi/2, to a few eps relative.

    From E[max(0, <w, x>)^n max(0, <w, y>)^n] in polar coordinates of the plane of unit x, y (the angle phi
    of w's projection, with cos phi > 0 and cos(phi - theta) > 0 on an arc of length pi - theta; its radius
    gives int r^(2n+1) e^(-r^2/2) dr = 2^n n!). The integrand is entire and positive, a trigonometric polynomial
    of degree 2n in u, not a polynomial: Gauss-Legendre with n + 8 nodes is exact to rounding on [0, 1] for
    n <= 4 (the switch of :func:`_antiparallel_switch`), n + 12 nodes on [0, pi/2] for n up to 40 (mpmath: 15 eps
    at most; n + 8 nodes left 1e4 eps at delta = 1.6, n = 6 to 10).
    """
    u, w = np.polynomial.legendre.leggauss(n + (8 if n <= 4 else 12))
    half = 0.5 * delta
    total = xp.zeros_like(delta)
    for ui, wi in zip(u.tolist(), w.tolist()):
        v = half * (1 + ui)
        total += wi * (xp.sin(v) * xp.sin(delta - v)) ** n
    return (2.0 ** n * math.factorial(n)) * half * total


def _homogeneous(coeffs, degree, G, N2):
    """sum_j c_j G^j (N2)^{(degree - j)/2}: the polynomial N^degree p(G / N), N = sqrt(N2), without division."""
    out = 0
    for j, c in enumerate(coeffs):
        if c == 0:
            continue
        if (degree - j) % 2:  # pragma: no cover - parity holds by construction
            raise AssertionError("arc-cosine polynomial of the wrong parity")
        term = c if j == 0 else c * (G if j == 1 else G ** j)
        e = (degree - j) // 2
        if e:
            term = term * (N2 if e == 1 else N2 ** e)
        out = out + term
    return out


def _arccos_gauss(order, G, nx2, ny2, xp, angle=None):
    """E[max(0, u)^a max(0, v)^a] for (u, v) = (<w, x>, <w, y>), w ~ N(0, I): the arc-cosine kernel of order a.

    Zero where x = 0 or y = 0 (max(0, 0)^a := 0 for every a, our convention).
    """
    N2 = nx2 * ny2
    if order == int(order):
        n = int(order)
        s, theta = _angle(xp, G, N2, angle)
        # pi - theta as atan2(s, -<x, y>), to a few eps relative: math.pi - theta kept theta's absolute error
        # (eps pi), eps pi / delta relative at delta = pi - theta (float32, delta = 1e-4: 8.6e3 eps in the step
        # kernel, 2.6e4 eps in the relu kernel ~ delta^3, from inputs known exactly)
        rest = xp.arctan2(s, -G)
        A, B = _arccos_polynomials(n)
        J = _homogeneous(A, n, G, N2) * rest
        if n >= 1:
            J = J + _homogeneous(B, n - 1, G, N2) * s
            # Near theta = pi the two terms cancel to J_n ~ delta^(2n+1), delta = pi - theta: eps / delta^(2n)
            # relative (relu 2e+2 at delta = 1.4e-6, a negative kernel for n = 3); the integral form is positive.
            near = xp.broadcast_to((theta > math.pi - _antiparallel_switch(n)) & (N2 > 0), J.shape)
            if bool(near.any()):
                J = xp.array(xp.broadcast_to(J, near.shape))  # a writable copy
                N = xp.sqrt(xp.broadcast_to(N2, near.shape)[near])
                delta = xp.broadcast_to(rest, near.shape)[near]
                J[near] = N ** n * _arccos_near_pi(n, delta, xp)
        else:
            J = xp.where(N2 > 0, J, 0)
        return J / (2 * math.pi)
    # Real order: hypergeometric form in rho = cos theta, on the host (scipy.special.hyp2f1).
    a = float(order)
    N = xp.sqrt(N2)
    positive = N > 0
    N_safe = xp.where(positive, N, 1)
    rho = to_numpy(xp.clip(G / N_safe, -1, 1)).astype(np.float64)
    r2 = rho * rho
    f = (2.0 ** a / (4 * math.pi) * special.gamma(0.5 * (a + 1)) ** 2 * special.hyp2f1(-0.5 * a, -0.5 * a, 0.5, r2)
         + 2.0 ** a / (2 * math.pi) * special.gamma(0.5 * a + 1) ** 2 * rho
         * special.hyp2f1(0.5 * (1 - a), 0.5 * (1 - a), 1.5, r2))
    f = xp.asarray(np.maximum(f, 0.0), dtype=G.dtype)  # >= 0; cancellation near rho = -1 leaves ~1e-16
    return xp.where(positive, f * N_safe ** a, 0)


def _abs_gauss(G, nx2, ny2, xp, angle=None):
    s, theta = _angle(xp, G, nx2 * ny2, angle)
    return (2 * s + (math.pi - 2 * theta) * G) / math.pi


def _sign_gauss(G, nx2, ny2, xp, angle=None):
    N2 = nx2 * ny2
    _, theta = _angle(xp, G, N2, angle)
    return xp.where(N2 > 0, 1 - (2 / math.pi) * theta, 0)


def _quadratic_gauss(G, nx2, ny2, xp):
    return nx2 * ny2 + 2 * G * G  # Isserlis: E[u^2 v^2] = E[u^2] E[v^2] + 2 E[uv]^2


def _linear2_gauss(G, nx2, ny2, xp):
    return 4 * G  # E[2u 2v] = 4 <x, y>


def _zero_gauss(G, nx2, ny2, xp):
    return xp.zeros_like(G)


def _erf_gauss(G, nx2, ny2, xp):
    # arcsin(r) = atan2(r, (1 - r^2)^{1/2}) with 1 - r^2 = det / ((1 + 2|x|^2)(1 + 2|y|^2)), det as in
    # _erf_prime_gauss: arcsin of a rounded r lost sqrt(eps) near r = +-1 (2e-4 in float32 at |x| = |y| ~ 10^3).
    det = 1 + 2 * (nx2 + ny2) + 4 * xp.maximum(nx2 * ny2 - G * G, 0)
    return (2 / math.pi) * xp.arctan2(2 * G, xp.sqrt(det))


def _erf_gauss_scaled(G, nx2, ny2, kx, ky, xp):
    """The erf kernel of x = 2^kx x', y = 2^ky y' from the Gram matrix and squared norms of x', y'.

    r = 2 <x, y> / ((1 + 2|x|^2)(1 + 2|y|^2))^{1/2} = 2 <x', y'> u_x u_y with
    u_x = 2^kx (1 + 2 |x'|^2 4^kx)^{-1/2}, written (4^{-kx} + 2 |x'|^2)^{-1/2} for kx > 0: no factor
    over- or underflows unless r itself does.
    """
    def u(n2, k):
        one = xp.ones((), dtype=n2.dtype)
        big = 1 / xp.sqrt(xp.ldexp(one, -2 * xp.maximum(k, 0)) + 2 * n2)
        small = xp.ldexp(1 / xp.sqrt(1 + xp.ldexp(2 * n2, 2 * xp.minimum(k, 0))), xp.minimum(k, 0))
        return xp.where(k > 0, big, small)
    r = 2 * G * u(nx2, kx) * u(ny2, ky)
    K = (2 / math.pi) * xp.arcsin(xp.clip(r, -1, 1))
    # Near r = +-1, arcsin of a rounded r loses sqrt(eps): there arcsin(r) = atan2(2 <x', y'>, (det' 4^E)^{1/2}
    # 2^{-kx-ky}) (1 - r^2 = det u_x^2 u_y^2 4^{-kx-ky}, det = det' 4^E as in _erf_det_scaled), of order 1 where
    # |r| > 1/2 (both |x|, |y| > 0.4 there).
    det, E = _erf_det_scaled(G, nx2, ny2, kx, ky, xp)
    with np.errstate(over="ignore", invalid="ignore"):
        near = (2 / math.pi) * xp.arctan2(2 * G, xp.ldexp(xp.sqrt(det), E - kx - ky))
    return xp.where(xp.abs(r) > 0.5, near, K), 0


def _erf_det_scaled(G, nx2, ny2, kx, ky, xp):
    """(det', E) with det' in [1, 16) and det' 4^E = det(I + 2 Sigma) = 1 + 2|x|^2 + 2|y|^2 + 4 (|x|^2 |y|^2 -
    <x,y>^2) for x = 2^kx x', y = 2^ky y' (G, nx2, ny2 those of x', y').

    det is a sum of four terms c 4^e, with e = 0, kx, ky, kx + ky and c from x', y'; dividing by 4^E,
    E set by the largest term, leaves det' in [1, 16).
    """
    delta = xp.maximum(nx2 * ny2 - G * G, 0)
    terms = [(xp.ones_like(G), 0 * (kx + ky)), (2 * nx2, kx), (2 * ny2, ky), (4 * delta, kx + ky)]
    with np.errstate(divide="ignore"):
        # 2 e in G's dtype (exact: |e| < 2^10): float32 + int32 made the (n, n') maximum float64
        top = functools.reduce(xp.maximum, [xp.log2(c) + (2 * e).astype(G.dtype) for c, e in terms])
    E = xp.floor(0.5 * top).astype(kx.dtype)
    return sum(xp.ldexp(c, 2 * (e - E)) for c, e in terms), E


def _erf_prime_gauss_scaled(G, nx2, ny2, kx, ky, xp):
    """The erf' kernel of x = 2^kx x', y = 2^ky y' as (K', E) with K = K' 2^E: K = (4/pi) det'^{-1/2} 2^{-E}
    (:func:`_erf_det_scaled`)."""
    det, E = _erf_det_scaled(G, nx2, ny2, kx, ky, xp)
    return (4 / math.pi) / xp.sqrt(det), -E


def _erf_prime_gauss(G, nx2, ny2, xp):
    # E[exp(-u^2 - v^2)] = det(I + 2 Sigma)^{-1/2} for (u, v) ~ N(0, Sigma), times (2/sqrt(pi))^2;
    # det(I + 2 Sigma) = 1 + 2|x|^2 + 2|y|^2 + 4 (|x|^2 |y|^2 - <x,y>^2), written without cancellation.
    det = 1 + 2 * (nx2 + ny2) + 4 * xp.maximum(nx2 * ny2 - G * G, 0)
    return (4 / math.pi) / xp.sqrt(det)


# --------------------------------------------------------------------------------------------
# Features: sigma or sigma', with what is known about their kernels.
# --------------------------------------------------------------------------------------------

class _Feature:
    """A function f of <w, x> with its Gaussian kernel (closed form or None), degree and mu_k."""

    def __init__(self, label, fn, homogeneity, gauss, fh, breakpoints=(), is_zero=False, scaled=None, mehler=None,
                 angular=False):
        self.label = label
        self.fn = fn  # xp-generic elementwise callable
        self.homogeneity = homogeneity
        self.gauss = gauss  # (G, nx2, ny2, xp) -> E_{w ~ N(0, I)}[f(<w,x>) f(<w,y>)], or None
        # (d, kmax) -> numpy mu_k(f), kept per (d, kmax): a kernel's blocks of rows would each redo its quadrature
        self.fh = functools.lru_cache(maxsize=4)(fh)
        self.breakpoints = breakpoints
        self.is_zero = is_zero
        # (G', nx2', ny2', kx, ky, xp) -> (K', E), K = K' 2^E, for inputs x = 2^kx x', y = 2^ky y' (only
        # for a gauss that is not homogeneous; homogeneous ones rescale by 2^{h (kx + ky)}).
        self.scaled = scaled
        # () -> numpy c_k with E_{w ~ N(0, I)}[f(<w,x>) f(<w,y>)] = sum_k c_k <x, y>^k on the unit sphere
        # (Mehler's series, for the activations without a closed form), or None.
        self.mehler = mehler
        # gauss takes angle=(s, theta), the angles of the pairs computed apart (:func:`_refined_angle`)
        self.angular = angular


def _arccos_feature(label, order, scale):
    """f(z) = scale max(0, z)^order, order > -1 (negative orders serve derivatives), 0 at z <= 0."""
    def fn(z):
        z = check_array(z, "z", finite=False)
        return scale * _positive_part_power(get_xp(z), z, order)
    return _Feature(
        label,
        fn,
        order,
        lambda G, nx2, ny2, xp, angle=None: (scale * scale) * _arccos_gauss(order, G, nx2, ny2, xp, angle),
        lambda d, kmax: scale * _relu_power_funk_hecke(order, d, kmax),
        (0.0,),
        angular=order == int(order),
    )


def _feature(sigma: Activation, derivative: bool = False) -> _Feature:
    """sigma (derivative=False) or sigma' (derivative=True) as a _Feature."""
    name, p = sigma.name, sigma.params
    if name in ("relu", "relu_power", "step"):
        alpha = {"relu": 1.0, "step": 0.0}.get(name, p.get("alpha"))
        if not derivative:
            return _arccos_feature(f"{sigma!r}", alpha, 1.0)
        if alpha == 0:
            return _Feature(f"derivative of {sigma!r}", sigma.derivative, None,
                            _zero_gauss, lambda d, kmax: np.zeros(kmax + 1), is_zero=True)
        if alpha <= 0.5:
            raise ValueError(f"the NTK of relu_power needs alpha = 0 or alpha > 1/2, got alpha={alpha}: "
                             "E[sigma'(u)^2] = alpha^2 E[max(0, u)^(2 alpha - 2)] is infinite for 0 < alpha <= 1/2")
        return _arccos_feature(f"derivative of {sigma!r}", alpha - 1, alpha)
    if name == "abs":
        if not derivative:
            return _Feature(repr(sigma), sigma, 1, _abs_gauss, sigma.funk_hecke, (0.0,), angular=True)
        # sign(t) = step(t) - step(-t): mu_k = (1 - (-1)^k) mu_k(step).
        return _Feature(f"derivative of {sigma!r}", sigma.derivative, 0, _sign_gauss,
                        lambda d, kmax: np.where(np.arange(kmax + 1) % 2 == 1,
                                                 2 * _relu_power_funk_hecke(0.0, d, kmax), 0.0), (0.0,), angular=True)
    if name == "quadratic":
        if not derivative:
            return _Feature(repr(sigma), sigma, 2, _quadratic_gauss, sigma.funk_hecke)

        def fh_linear(d, kmax):  # 2t = 2 P_{1,d}(t), N(d, 1) = d: mu_1 = 2/d
            mu = np.zeros(kmax + 1)
            if kmax >= 1:
                mu[1] = 2.0 / d
            return mu
        return _Feature(f"derivative of {sigma!r}", sigma.derivative, 1, _linear2_gauss, fh_linear)
    fn = sigma.derivative if derivative else sigma
    label = f"derivative of {sigma!r}" if derivative else repr(sigma)
    gauss = scaled = mehler = None
    if name == "erf":
        gauss = _erf_prime_gauss if derivative else _erf_gauss
        scaled = _erf_prime_gauss_scaled if derivative else _erf_gauss_scaled
    else:
        mehler = functools.partial(_mehler_series, sigma, derivative)
    return _Feature(label, fn, None, gauss,
                    lambda d, kmax: project_zonal(fn, d, kmax, breakpoints=sigma.breakpoints), sigma.breakpoints,
                    scaled=scaled, mehler=mehler)


def gaussian_norm_moment(h, d) -> float:
    """E|w|^{2h} for w ~ N(0, I_d): 2^h Gamma(d/2 + h) / Gamma(d/2) (= d for h = 1), for h > -d/2.

    The ratio between the kernels of a degree-h homogeneous feature under Gaussian and uniform
    spherical weights.

    Parameters
    ----------
    h : float
        A real number > -d/2 (not a bool).
    d : int
        Dimension, an integer >= 2.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For d not an integer >= 2, h not a real number > -d/2, or a moment beyond the largest
        float64.

    Examples
    --------
    >>> gaussian_norm_moment(1, 7), gaussian_norm_moment(0, 7)
    (7.0, 1.0)
    """
    d = check_dimension(d)
    if isinstance(h, bool) or not isinstance(h, numbers.Real):
        raise ValueError(f"h must be a real number > -d/2 = {-0.5 * d}, got {h!r}")
    h = float(h)
    if not h > -0.5 * d:
        raise ValueError(f"h must be > -d/2 = {-0.5 * d} for E|w|^(2h) to be finite, got {h}")
    # the exponent that math.exp takes below: gammaln's difference, 2e-9 off at d = 10^7, let h = 44.036376179162836
    # through the test and math.exp raise OverflowError
    log_value = h * math.log(2.0) + _log_gamma_ratio(0.5 * d, h)
    if log_value > math.log(np.finfo(np.float64).max):  # 2.0 ** h raised OverflowError
        raise ValueError(f"E|w|^(2h) = exp({log_value:.6g}) is beyond the largest float64 for h={h} and d={d}: "
                         "h must be smaller")
    if h == int(h):
        value = 2.0 ** h * special.poch(0.5 * d, h)  # poch(a, h) = Gamma(a + h) / Gamma(a): a product, exact for h = 1
    else:
        # scipy's poch lost 3e-12 relative for fractional h at d ~ 100 to 4096 (a difference of log-gammas);
        # _log_gamma_ratio keeps a few eps of log(Gamma(d/2 + h) / Gamma(d/2)), which is of order h log d
        value = math.exp(log_value)
    if not np.isfinite(value) or value == 0:  # pragma: no cover - d or h beyond poch's range
        value = math.exp(log_value)
    return float(value)


# --------------------------------------------------------------------------------------------
# Funk-Hecke series and Monte Carlo.
# --------------------------------------------------------------------------------------------

def _log_num_harmonics(d, k):
    """log N(d, k) for an array of degrees k (float, no overflow), to about k log(k) eps whatever d.

    log N(d, k) = log((2k + d - 2) / k) + log(Gamma(d - 1 + k - 1) / Gamma(d - 1)) - log Gamma(k), the ratio
    by ``shallow.sphere._log_gamma_ratio``: the difference gammaln(k + d - 2) - gammaln(d - 1), two numbers of
    size d log d, lost d log(d) eps (N(d, k) 3e-10 relative off at d = 10^5, 4e-8 at d = 10^7); against
    math.log of the exact integer, 1e-12 relative at worst for k <= 400 and d from 2 to 10^7.
    """
    k = np.asarray(k, dtype=np.float64)
    flat = k.reshape(-1)
    val = np.zeros(flat.shape)  # (K,), 0 for k = 0: N(d, 0) = 1
    for i, kk in enumerate(flat):
        if kk > 0:
            val[i] = (math.log((2 * kk + d - 2) / kk) + _log_gamma_ratio(d - 1, kk - 1)
                      - float(special.gammaln(kk)))
    return val.reshape(k.shape)


def _series_coefficients(mu, d):
    """c_k = mu_k^2 N(d, k), dropping mu_k under the quadrature noise floor (1e-14 max |mu|)."""
    mu = np.asarray(mu, dtype=np.float64)
    floor = 1e-14 * float(np.abs(mu).max(initial=0.0))
    keep = np.abs(mu) > floor
    logc = 2 * np.log(np.where(keep, np.abs(mu), 1.0)) + _log_num_harmonics(d, np.arange(mu.size))
    # exp only where kept: log N(d, k) alone passes 709 (d = 2 10^6, k = 64), and exp of it overflowed with a
    # RuntimeWarning though the entry was then dropped; a kept c_k is at most kappa(1)
    return np.exp(np.where(keep, logc, -np.inf))


#: Entries of t per block of :func:`_zonal_series` on the host (its recurrence's rows stay in cache).
_SERIES_CHUNK = 32768


def _zonal_series(c, d, t):
    """sum_k c_k P_{k,d}(t) by the forward recurrence, in O(t.size) memory (numpy or cupy).

    The recurrence is written in place, on the host over blocks of _SERIES_CHUNK entries (as
    ``harmonics.legendre_all``), on a device over t at once: over a whole 5000 x 5000 t, each degree
    allocated and streamed four full-size temporaries (5 times the time). The operations and their
    order are those of the one-array form, so the values are the same.
    """
    xp = get_xp(t)
    out = xp.full(t.shape, float(c[0]), dtype=t.dtype)
    if len(c) == 1:
        return out
    tf, of = t.reshape(-1), out.reshape(-1)  # of: a view of the new, contiguous out
    chunk = _SERIES_CHUNK if xp is np else max(tf.size, 1)
    for start in range(0, tf.size, chunk):
        tc, oc = tf[start:start + chunk], of[start:start + chunk]
        prev, cur, work = xp.ones_like(tc), tc.copy(), xp.empty_like(tc)
        oc += float(c[1]) * cur
        for k in range(1, len(c) - 1):
            xp.multiply((2 * k + d - 2) / (k + d - 2), tc, out=work)
            work *= cur
            prev *= k / (k + d - 2)
            xp.subtract(work, prev, out=prev)  # P_{k+1}, written over P_{k-1}
            prev, cur = cur, prev
            if c[k + 1]:
                oc += float(c[k + 1]) * cur
    return out


def _monte_carlo(features, X, Y, G, weights, n_features, rng, same=False):
    """(1/F) sum_f f(<w_f, x>) f(<w_f, y>) for each feature, w_f drawn on the host in blocks.

    With ``same`` (Y is X) the features of X serve both sides, and F F^T is one symmetric product (numpy
    recognises a @ a.T): they were computed twice and multiplied as two matrices (2 to 3 times the time)."""
    xp = get_xp(X)
    n, d = X.shape
    out = [xp.zeros((n, Y.shape[0]), dtype=X.dtype) for _ in features]
    done = 0
    while done < n_features:
        b = min(_CHUNK, n_features - done)
        W = rng.standard_normal((b, d))  # (b, d)
        if weights == "sphere":
            W /= np.linalg.norm(W, axis=1, keepdims=True)
        W = xp.asarray(W, dtype=X.dtype)
        ZX = X @ W.T  # (n, b)
        ZY = ZX if same else Y @ W.T  # (n', b)
        for acc, feat in zip(out, features):
            if not feat.is_zero:
                FX = feat.fn(ZX)
                acc += FX @ (FX if same else feat.fn(ZY)).T
        done += b
    return [acc / n_features for acc in out]


# --------------------------------------------------------------------------------------------
# Public kernels on R^d.
# --------------------------------------------------------------------------------------------

def _host_if_sequence(x):
    """Lists and tuples become numpy arrays; arrays (numpy or cupy) pass untouched."""
    return np.asarray(x) if isinstance(x, (list, tuple)) else x


def _required_sigma(sigma, Y, caller):
    """sigma, which defaults to None only so that Y can be left out: a TypeError naming it when missing."""
    if sigma is not None:
        return sigma
    if isinstance(Y, (str, Activation)):
        raise TypeError(f"{caller}() missing the activation sigma; the second positional argument is Y, got "
                        f"{Y!r}: pass {caller}(X, sigma={Y!r}) or {caller}(X, None, {Y!r})")
    raise TypeError(f"{caller}() missing the activation sigma: pass {caller}(X, Y, sigma) or "
                    f"{caller}(X, sigma=...) for Y = X")


def _check_weights(weights):
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    return weights


def _prepare(X, Y):
    """Validated X, Y (Y = X when None), the Gram matrix and squared norms, shaped to broadcast."""
    X = check_points(_host_if_sequence(X), "X")
    same = Y is None
    Y = X if same else check_points(_host_if_sequence(Y), "Y")
    if Y.shape[1] != X.shape[1]:
        raise ValueError(f"Y has d={Y.shape[1]} coordinates but X has d={X.shape[1]}")
    xp = get_xp(X, Y)
    if X.dtype != Y.dtype:
        dtype = xp.result_type(X.dtype, Y.dtype)
        X, Y = X.astype(dtype), Y.astype(dtype)
    with np.errstate(over="ignore", under="ignore"):  # rows far from the unit scale: see _scaled_exact
        G = X @ Y.T  # (n, n')
        nx2 = xp.diagonal(G).copy() if same else xp.sum(X * X, axis=1)
    if same:
        # Norms from the diagonal of G itself: then |x|^2 |x|^2 - <x, x>^2 is exactly 0 and theta(x, x) = 0.
        ny2 = nx2
    else:
        with np.errstate(over="ignore", under="ignore"):
            ny2 = xp.sum(Y * Y, axis=1)
    return X, Y, G, nx2[:, None], ny2[None, :], xp


def _sphere_tolerance(dtype) -> float:
    """How far |x|^2 may be from 1 for x to count as a point of the unit sphere: 2 sqrt(eps)."""
    return 2 * float(np.sqrt(np.finfo(dtype).eps))


def _sphere_deviation(nx2, ny2, xp) -> float:
    """max | |x|^2 - 1 | over the rows of X and Y (0 for no rows)."""
    if not (nx2.size and ny2.size):
        return 0.0
    return max(float(xp.abs(nx2 - 1).max()), float(xp.abs(ny2 - 1).max()))


def _on_sphere(nx2, ny2, xp, dtype):
    return _sphere_deviation(nx2, ny2, xp) <= _sphere_tolerance(dtype)


def _sphere_gap(nx2, ny2, xp, dtype) -> str:
    """Why inputs are off the sphere, for a message: their largest | |x|^2 - 1 | against the tolerance."""
    dev, tol = _sphere_deviation(nx2, ny2, xp), _sphere_tolerance(dtype)
    if dev > 1e-3:
        return ""
    return (f" (| |x|^2 - 1 | reaches {dev:.2g}, beyond the {np.dtype(dtype).name} tolerance {tol:.2g}: rows "
            "normalised in float32 and cast to float64, say; normalise them in the dtype they are computed in)")


def _exact(feature, G, nx2, ny2, xp, weights, d, kmax, on_sphere, angle=None):
    """E_w[f(<w,x>) f(<w,y>)] without sampling, or None when no exact route applies (``on_sphere``: every
    input of the whole problem, not only of these rows, is a unit vector; ``angle``: a callable giving the
    pairs' (s, theta) computed apart, for the features whose closed form is in theta)."""
    if feature.is_zero:
        return xp.zeros_like(G)
    if feature.gauss is not None and (weights == "gaussian" or feature.homogeneity is not None):
        return _gauss_kernel(feature, G, nx2, ny2, xp, weights, d, angle)
    if not on_sphere:
        return None
    if weights == "sphere":
        return _zonal_series(_series_coefficients(feature.fh(d, kmax), d), d, xp.clip(G, -1, 1))
    if feature.mehler is not None:
        return _power_series(feature.mehler(), xp.clip(G, -1, 1))
    return None


def _row_exponents(X, xp):
    """k_i with rows 2^{-k_i} x_i of order 1 where |x_i| is far from 1, and k_i = 0 elsewhere (int32, (n,)).

    Rows whose largest entry lies within 2^{+-L} keep k_i = 0: then |x|^2 |y|^2 and <x, y>^2 stay
    inside the normal range of the dtype (L = min(maxexp, -minexp)//4 - 2 - ceil(log2(d)/2): 24 for float32
    and 248 for float64 at d = 1000), and ordinary inputs are computed as they always were.
    """
    info = np.finfo(X.dtype)
    L = max(min(info.maxexp, -info.minexp) // 4 - 2 - math.ceil(0.5 * math.log2(X.shape[1])), 0)
    if not X.shape[0]:
        return xp.zeros(0, dtype=np.int32)
    _, e = xp.frexp(xp.max(xp.abs(X), axis=1))  # |x_i|_inf = m 2^e, m in [1/2, 1)
    e = e.astype(np.int32)
    return xp.where(xp.abs(e) > L, e, 0).astype(np.int32)


def _rescaled(X, Y, same, xp):
    """(G', nx2', ny2', kx, ky) for x' = 2^{-kx} x, y' = 2^{-ky} y (:func:`_row_exponents`), shaped to
    broadcast, or None when every row is of ordinary size (the plain computation then applies)."""
    kx = _row_exponents(X, xp)
    ky = kx if same else _row_exponents(Y, xp)
    if not (bool((kx != 0).any()) or bool((ky != 0).any())):
        return None
    Xs = xp.ldexp(X, -kx[:, None])
    Ys = Xs if same else xp.ldexp(Y, -ky[:, None])
    G = Xs @ Ys.T  # (n, n'), the Gram matrix of the rescaled inputs
    nx2 = xp.diagonal(G).copy() if same else xp.sum(Xs * Xs, axis=1)
    ny2 = nx2 if same else xp.sum(Ys * Ys, axis=1)
    return G, nx2[:, None], ny2[None, :], kx[:, None], ky[None, :]


def _gauss_kernel(feature, G, nx2, ny2, xp, weights, d, angle):
    """The closed-form kernel of a feature with one (under sphere weights, divided by E|w|^{2h}); ``angle``: a
    callable giving the pairs' (s, theta) computed apart, for the features whose closed form is in theta."""
    K = (feature.gauss(G, nx2, ny2, xp, angle=angle()) if feature.angular and angle is not None
         else feature.gauss(G, nx2, ny2, xp))
    if weights == "sphere" and feature.homogeneity:
        K = K / gaussian_norm_moment(feature.homogeneity, d)
    return K


def _scaled_exact(feature, rescaled, xp, weights, d, times_gram, angle=None):
    """As _exact (times <x, y> if asked) for inputs of any size, from their :func:`_rescaled` form.

    A degree-h homogeneous kernel is K(x', y') 2^{h (kx + ky)}; erf and erf' have their own rescaled
    forms; a feature with neither (sphere series on unit inputs) gives None, as it needs none.
    """
    G, nx2, ny2, kx, ky = rescaled
    if feature.is_zero:
        return xp.zeros_like(G)
    h = feature.homogeneity
    if feature.gauss is not None and h is not None:
        K = _gauss_kernel(feature, G, nx2, ny2, xp, weights, d, angle)
        # 2^{h (kx + ky)} as an integer power of two (exact) times 2^frac.
        power = h * (kx + ky)
        E = xp.floor(power)
        if h != int(h):
            K = K * xp.exp2(power - E).astype(G.dtype)
        E = E.astype(np.int32)
    elif feature.scaled is not None and weights == "gaussian":
        K, E = feature.scaled(G, nx2, ny2, kx, ky, xp)
    else:
        return None
    if times_gram:
        K, E = G * K, E + kx + ky
    return xp.ldexp(K, E)


def _kernels(features, X, Y, weights, n_features, rng, kmax, caller, times_gram=(False,)):
    """The sum over the features of their kernels E_w[f(<w,x>) f(<w,y>)], times <x, y> where times_gram says so.

    The exact kernels are computed over blocks of rows of the Gram matrix (_KERNEL_BLOCK entries each), written
    into the output: the memory is that of the Gram matrix and the output, where the formulas' temporaries over
    the whole matrix took 6 to 7 times the output's size (the relu NTK of 20000 points needed 22 GB).
    """
    weights = _check_weights(weights)
    same = Y is None
    X, Y, G, nx2, ny2, xp = _prepare(X, Y)
    d = X.shape[1]
    if weights == "sphere" and d < 2:
        raise ValueError(f"weights='sphere' needs inputs of d >= 2 coordinates (w uniform on S^(d-1)), but X has "
                         f"d={d}: use weights='gaussian'")
    kmax = _DEFAULT_KMAX if kmax is None else check_integer(kmax, "kmax", minimum=0)
    if n_features is not None:
        n_features = check_integer(n_features, "n_features", minimum=1)
        out = _monte_carlo(features, X, Y, G, weights, n_features, check_random_state(rng), same=same)
        total = None
        for K, tg in zip(out, times_gram):
            K = G * K if tg else K
            total = K if total is None else total + K
        return total
    # Inputs far from the unit scale (|x| beyond 2^{+-25} in float32, 2^{+-249} in float64) are
    # rescaled by powers of two first: |x|^2 |y|^2 would over- or underflow (NaN, 0).
    rescaled = _rescaled(X, Y, same, xp)
    on_sphere = _on_sphere(nx2, ny2, xp, G.dtype)
    sides = functools.lru_cache(maxsize=1)(lambda: _chord_sides(X, Y, same, xp))  # once some pair is near
    out = xp.empty(G.shape, dtype=G.dtype)
    step = max(1, (_KERNEL_BLOCK if xp is np else _DEVICE_KERNEL_BLOCK) // max(G.shape[1], 1))
    for lo in range(0, max(G.shape[0], 1), step):
        rows = slice(lo, lo + step)
        part = None if rescaled is None else (rescaled[0][rows], rescaled[1][rows], rescaled[2],
                                              rescaled[3][rows], rescaled[4])
        total = None
        # the pairs' angles, once a feature asks for them (the same from the rescaled rows)
        angle = functools.lru_cache(maxsize=1)(
            lambda: _refined_angle(xp, G[rows], nx2[rows], ny2, sides, rows))
        scaled_angle = None if rescaled is None else functools.lru_cache(maxsize=1)(
            lambda: _refined_angle(xp, part[0], part[1], part[2], sides, rows))
        for feat, tg in zip(features, times_gram):
            K = None if part is None else _scaled_exact(feat, part, xp, weights, d, tg, scaled_angle)
            if K is None:
                K = _exact(feat, G[rows], nx2[rows], ny2, xp, weights, d, kmax, on_sphere, angle)
                if K is not None and tg:
                    K = G[rows] * K
            if K is None:
                raise ValueError(f"{caller}: the {feat.label} has no closed-form kernel with weights={weights!r} for "
                                 f"inputs off the unit sphere{_sphere_gap(nx2, ny2, xp, G.dtype)}; pass n_features "
                                 "(and rng) for a Monte Carlo estimate")
            K = xp.asarray(K, dtype=G.dtype)
            total = K if total is None else total + K
        out[rows] = total
    return out


def random_feature_kernel(X, Y=None, sigma=None, weights="gaussian", *, n_features=None, rng=None, kmax=None):
    """Random-feature (NNGP) kernel K(x, y) = E_w[sigma(<w, x>) sigma(<w, y>)] of a two-layer network.

    Call as ``random_feature_kernel(X, Y, "relu")`` or, for K(X, X),
    ``random_feature_kernel(X, sigma="relu")`` (Y defaults to None).

    Parameters
    ----------
    X : array of shape (n, d)
        Inputs (numpy or cupy; float32 or float64, kept).
    Y : array of shape (n', d), or None, optional
        Second inputs; None (the default) means Y = X (and then K(x, x) is computed with
        theta = 0 exactly).
    sigma : str or Activation
        The activation (a name from :data:`shallow.activations.ACTIVATIONS`, or an Activation).
        Required: the default None only lets Y be left out, ``random_feature_kernel(X, sigma="relu")``;
        leaving sigma out raises TypeError.
    weights : {"gaussian", "sphere"}
        w ~ N(0, I_d) or w ~ tau_d (uniform on S^{d-1}).
    n_features : int, optional
        When given, return the Monte Carlo estimate (1/F) sum_f sigma(<w_f, x>) sigma(<w_f, y>)
        over F = n_features weights drawn with ``rng`` (on the host, in blocks of 2048), whatever
        sigma. Needed for activations without closed form (sigmoid, tanh, softplus, gelu) on
        inputs off the unit sphere.
    rng : None, int or numpy.random.Generator
        Randomness of the Monte Carlo estimate; unused otherwise.
    kmax : int, optional
        Truncation degree of the Funk-Hecke series (sphere weights, inputs on the sphere,
        activations without closed form); default 64.

    Returns
    -------
    K : array of shape (n, n')
        On the device and in the dtype of X.

    Notes
    -----
    The roles of inputs and weights are symmetric: ``random_feature_kernel(W, V, "relu")`` with
    weight matrices W (m, d) and V (m', d) is E_{x ~ N(0, I_d)}[relu(<w, x>) relu(<v, x>)], the
    matrix of the population risk of relu networks under Gaussian data.

    Closed forms (module docstring): arc-cosine kernels for relu, step and relu_power (integer
    orders as Cho and Saul's J_n, real orders by a hypergeometric series), abs, quadratic, and
    erf (Williams). Under sphere weights a degree-h homogeneous sigma gives the Gaussian kernel
    divided by E|w|^{2h} = 2^h Gamma(d/2 + h)/Gamma(d/2) (by d for relu), for all inputs in R^d.
    Other activations, inputs on S^{d-1}: under sphere weights the series
    sum_{k <= kmax} mu_k(sigma)^2 N(d, k) P_{k,d}(<x, y>), under Gaussian weights Mehler's series
    sum_k b_k^2 <x, y>^k (module docstring), both exact up to truncation.

    References
    ----------
    1. Y. Cho and L. K. Saul, NeurIPS 2009, Eq. (6)-(7).
    2. C. K. I. Williams, NeurIPS 1997, Eq. (11).

    Examples
    --------
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> np.round(random_feature_kernel(X, None, "relu"), 6).tolist()   # |x|^2/2 on the diagonal
    [[0.5, 0.31831], [0.31831, 2.0]]
    >>> np.array_equal(random_feature_kernel(X, sigma="relu"), random_feature_kernel(X, X, "relu"))
    True
    """
    sigma = as_activation(_required_sigma(sigma, Y, "random_feature_kernel"))
    return _kernels([_feature(sigma)], X, Y, weights, n_features, rng, kmax, "random_feature_kernel")


def ntk(X, Y=None, sigma=None, weights="gaussian", *, n_features=None, rng=None, kmax=None):
    """Neural tangent kernel of f(x) = m^{-1/2} sum_j a_j sigma(<w_j, x>), both layers trained.

    Theta(x, y) = E_w[sigma(<w, x>) sigma(<w, y>)] + <x, y> E_w[sigma'(<w, x>) sigma'(<w, y>)],

    with a_j ~ N(0, 1) and w_j ~ N(0, I_d) (``weights="gaussian"``) or tau_d (``"sphere"``).
    Call as ``ntk(X, Y, "relu")`` or, for Theta(X, X), ``ntk(X, sigma="relu")``.

    Parameters
    ----------
    X : array of shape (n, d)
    Y : array of shape (n', d), or None, optional
        None (the default) means Y = X, as in :func:`random_feature_kernel`.
    sigma : str or Activation
        Required: the default None only lets Y be left out, ``ntk(X, sigma="relu")``; leaving
        sigma out raises TypeError.
    weights : {"gaussian", "sphere"}
    n_features, rng, kmax
        As in :func:`random_feature_kernel` (the Monte Carlo estimate uses the same weights for
        both terms).

    Returns
    -------
    Theta : array of shape (n, n')

    Notes
    -----
    The first term is the gradient in the outer weights a_j, the second the gradient in w_j,
    a_j sigma'(<w_j, x>) x (Jacot et al. 2018, Theorem 1, for one hidden layer). For relu,
    Theta = k_1 + <x, y> k_0 with the arc-cosine kernels of orders 1 and 0; with sphere
    weights each term is divided by its own moment E|w|^{2h}: h = 1 for relu, h = 0 for its
    derivative, so Theta = k_1 / d + <x, y> k_0. Conventions for sigma' (module
    :mod:`shallow.activations`): step' = 0, so the NTK of the step is its random-feature kernel;
    relu_power needs alpha = 0 or alpha > 1/2 (else E[sigma'(u)^2] is infinite).

    References
    ----------
    1. A. Jacot, F. Gabriel and C. Hongler, arXiv:1806.07572, Theorem 1.

    Examples
    --------
    >>> x = np.array([[1.0, 0.0]])
    >>> round(float(ntk(x, None, "relu")[0, 0]), 12)     # |x|^2/2 + |x|^2 * 1/2
    1.0
    >>> round(float(ntk(x, sigma="relu")[0, 0]), 12)     # Y left out: Y = X
    1.0
    """
    sigma = as_activation(_required_sigma(sigma, Y, "ntk"))
    features = [_feature(sigma), _feature(sigma, derivative=True)]
    return _kernels(features, X, Y, weights, n_features, rng, kmax, "ntk", times_gram=(False, True))


# --------------------------------------------------------------------------------------------
# Dot-product kernels on the sphere and their Mercer eigenvalues.
# --------------------------------------------------------------------------------------------

_MEHLER_NODES = 400  # Gauss-Hermite nodes for the Hermite coefficients b_k
_MEHLER_DEGREE = 200  # highest degree computed (the series is cut below it)


@functools.lru_cache(maxsize=None)
def _mehler_series(sigma, derivative):
    """Power-series coefficients of kappa_f(t) = E[f(Z1) f(t Z1 + sqrt(1 - t^2) Z2)], f = sigma or sigma'.

    Mehler's formula: with h_k = He_k / sqrt(k!), orthonormal under N(0, 1), and b_k = E[f(Z) h_k(Z)],
    kappa_f(t) = sum_k b_k^2 t^k for t in [-1, 1], and kappa_f(1) = E[f(Z)^2] = sum_k b_k^2 (Parseval).
    The b_k come from a Gauss-Hermite rule with 400 nodes through the recurrence of the Hermite
    functions sqrt(w_i) h_k(z_i), which stay bounded. The activations without a closed form (sigmoid,
    tanh, softplus, gelu and their derivatives) are analytic in a strip, so b_k^2 decays like
    exp(-c sqrt(k)); the series is cut where the computed terms left fall below 1e-17 kappa_f(1),
    and Parseval checks that the degrees up to 200 hold all of E[f(Z)^2] but a rounding error
    (1e-14 of it for tanh, the slowest: a bound on the truncation error for every |t| <= 1, as
    b_k^2 >= 0). The coefficients are computed once per activation.
    """
    fn = sigma.derivative if derivative else sigma
    z, w = special.roots_hermitenorm(_MEHLER_NODES)
    root_w = np.sqrt(w / w.sum())
    f = root_w * np.asarray(fn(z), dtype=np.float64)
    b = np.empty(_MEHLER_DEGREE + 1)
    prev, cur = np.zeros_like(z), root_w
    for k in range(_MEHLER_DEGREE + 1):
        b[k] = f @ cur
        prev, cur = cur, (z * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    c = b * b
    norm2 = float(f @ f)
    if abs(norm2 - c.sum()) > 1e-12 * norm2:
        raise RuntimeError(f"Mehler series of {'the derivative of ' if derivative else ''}{sigma!r} did not "
                           f"converge by degree {_MEHLER_DEGREE}: E[f(Z)^2] = {norm2!r}, sum of b_k^2 = {c.sum()!r}")
    tail = np.cumsum(c[::-1])[::-1]  # tail[k] = sum_{j >= k} c_j
    keep = np.flatnonzero(tail > 1e-17 * norm2)
    return c[: keep[-1] + 1] if keep.size else c[:1]


def _power_series(c, t):
    """sum_k c_k t^k by Horner's rule, in place over blocks of _SERIES_CHUNK entries on the host."""
    xp = get_xp(t)
    out = xp.full(t.shape, float(c[-1]), dtype=t.dtype)
    tf, of = t.reshape(-1), out.reshape(-1)
    chunk = _SERIES_CHUNK if xp is np else max(tf.size, 1)
    for start in range(0, tf.size, chunk):
        tc, oc = tf[start:start + chunk], of[start:start + chunk]
        for ck in c[-2::-1]:
            oc *= tc
            oc += float(ck)
    return out


class DotProductKernel:
    """A two-layer kernel on the unit sphere as a function of t = <x, y>: K(x, y) = kappa(<x, y>).

    Build with :func:`dot_product_kernel`; immutable, hashable, equal by (kind, sigma, weights, d).

    Parameters
    ----------
    kind : {"nngp", "ntk"}
    sigma : str or Activation
        A name without parameters, or an :class:`~shallow.activations.Activation`
        (:func:`~shallow.activations.as_activation`).
    weights : {"gaussian", "sphere"}
        Law of the inner weights, default "gaussian".
    d : int, optional
        Ambient dimension, an integer >= 2; required with ``weights="sphere"``, else kept (it
        does not change kappa).

    Raises
    ------
    ValueError
        For an unknown kind or weights, an unknown activation name, d not an integer >= 2, d
        missing with sphere weights, or ``kind="ntk"`` with an activation whose NTK is infinite
        (relu_power with 0 < alpha <= 1/2).
    TypeError
        For a sigma that is neither a name nor an Activation.

    Attributes
    ----------
    kind : {"nngp", "ntk"}
    sigma : Activation
    weights : {"gaussian", "sphere"}
    d : int or None
        The ambient dimension, required with sphere weights (kappa depends on it there).

    Notes
    -----
    Calling the object evaluates kappa on an array t in [-1, 1] (numpy or cupy, dtype kept):
    the closed forms of :func:`random_feature_kernel` at |x| = |y| = 1; under Gaussian weights
    without closed form, Mehler's series sum_k b_k^2 t^k of
    E[sigma(Z1) sigma(t Z1 + sqrt(1 - t^2) Z2)] (module docstring; within 1e-14 of a double
    quadrature; 41 to 201 multiply-adds per t, the most for tanh); under sphere weights without closed
    form, the Funk-Hecke series truncated at degree 64.
    """

    __slots__ = ("_kind", "_sigma", "_weights", "_d")

    def __init__(self, kind, sigma, weights="gaussian", d=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        sigma = as_activation(sigma)
        weights = _check_weights(weights)
        if d is not None:
            d = check_dimension(d)
        elif weights == "sphere":
            raise ValueError("d is required with weights='sphere': the kernel depends on the dimension "
                             "(E|w|^(2h) = 2^h Gamma(d/2 + h) / Gamma(d/2))")
        if kind == "ntk":
            _feature(sigma, derivative=True)  # raises for relu_power with 0 < alpha <= 1/2 (infinite NTK)
        for key, value in (("_kind", kind), ("_sigma", sigma), ("_weights", weights), ("_d", d)):
            object.__setattr__(self, key, value)

    def __setattr__(self, key, value):
        raise AttributeError(f"DotProductKernel objects are immutable (cannot set {key!r})")

    def __reduce__(self):
        return (DotProductKernel, (self._kind, self._sigma, self._weights, self._d))

    def __repr__(self):
        d = "" if self._d is None else f", d={self._d}"
        return f"DotProductKernel({self._kind!r}, {self._sigma!r}, weights={self._weights!r}{d})"

    def __eq__(self, other):
        if not isinstance(other, DotProductKernel):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(("DotProductKernel", *self._key()))

    def _key(self):
        return (self._kind, self._sigma, self._weights, self._d)

    kind = property(lambda self: self._kind)
    sigma = property(lambda self: self._sigma)
    weights = property(lambda self: self._weights)
    d = property(lambda self: self._d)

    def _features(self):
        out = [_feature(self._sigma)]
        if self._kind == "ntk":
            out.append(_feature(self._sigma, derivative=True))
        return out

    def _feature_kernel(self, feat, t, xp):
        one = xp.ones((), dtype=t.dtype)
        if feat.is_zero:
            return xp.zeros_like(t)
        if feat.gauss is not None and (self._weights == "gaussian" or feat.homogeneity is not None):
            K = feat.gauss(t, one, one, xp)
            if self._weights == "sphere" and feat.homogeneity:
                K = K / gaussian_norm_moment(feat.homogeneity, self._d)
            return K
        if self._weights == "sphere":
            return _zonal_series(_series_coefficients(feat.fh(self._d, _DEFAULT_KMAX), self._d), self._d, t)
        return _power_series(feat.mehler(), t)

    def __call__(self, t):
        """kappa(t) for t in [-1, 1] (any shape; numpy or cupy)."""
        t = check_array(_host_if_sequence(t), "t")
        xp = get_xp(t)
        # a Gram matrix of unit vectors overshoots 1 by some ulps (1.0000002 in float32 at d = 20): harmonics'
        # slack for d = 1024, 128 eps, as kappa does not know d
        slack = _slack(t.dtype, 1024)
        if t.size and float(xp.abs(t).max()) > 1 + slack:
            raise ValueError(f"t must lie in [-1, 1] (within {slack:.2g}, the rounding of a Gram matrix of unit "
                             f"vectors in {t.dtype.name}), got a value of modulus {float(xp.abs(t).max()):.9g}")
        features = self._features()
        # over blocks of entries, as in _kernels: the formulas' temporaries over the whole of t took 6 to 7
        # times its size (the relu NTK), against one block here
        flat = t.reshape(-1)
        out = xp.empty(flat.shape, dtype=t.dtype)
        step = _KERNEL_BLOCK if xp is np else _DEVICE_KERNEL_BLOCK
        for lo in range(0, flat.size, step):
            tc = xp.clip(flat[lo:lo + step], -1, 1)
            K = self._feature_kernel(features[0], tc, xp)
            if self._kind == "ntk":
                K = K + tc * self._feature_kernel(features[1], tc, xp)
            out[lo:lo + step] = K
        return out.reshape(t.shape)

    def _feature_eigenvalues(self, feat, d, kmax):
        """Eigenvalues of the kernel of one feature, exactly (Funk-Hecke twice), or None."""
        if feat.is_zero:
            return np.zeros(kmax + 1)
        if self._weights == "sphere":
            return feat.fh(d, kmax) ** 2
        if feat.homogeneity is not None and feat.gauss is not None:
            return gaussian_norm_moment(feat.homogeneity, d) * feat.fh(d, kmax) ** 2
        return None

    def _exact_eigenvalues(self, d, kmax):
        features = self._features()
        lam = self._feature_eigenvalues(features[0], d, kmax)
        if lam is None or self._kind == "nngp":
            return lam
        nu = self._feature_eigenvalues(features[1], d, kmax + 1)
        return None if nu is None else lam + _times_t(nu, d)[: kmax + 1]


def _times_t(nu, d):
    """Eigenvalues of t kappa(t) from those nu_0..nu_K of kappa(t), degrees 0..K-1.

    With kappa = sum_k nu_k N(d,k) P_{k,d} and t P_k = [(k + d - 2) P_{k+1} + k P_{k-1}] / (2k + d - 2),
    lambda_j N(d,j) = nu_{j-1} N(d,j-1) (j + d - 3)/(2j + d - 4) + nu_{j+1} N(d,j+1) (j + 1)/(2j + d).
    """
    K = len(nu) - 1
    out = np.zeros(K)
    for j in range(K):
        Nj = num_harmonics(d, j)
        val = nu[j + 1] * (num_harmonics(d, j + 1) / Nj) * (j + 1) / (2 * j + d)
        if j >= 1:
            up = 1.0 if j == 1 else (j + d - 3) / (2 * j + d - 4)  # t P_0 = P_1 exactly (also for d = 2)
            val += nu[j - 1] * (num_harmonics(d, j - 1) / Nj) * up
        out[j] = val
    return out


def dot_product_kernel(kind, sigma, weights="gaussian", d=None) -> DotProductKernel:
    """The NNGP or NTK kernel of a two-layer network on the unit sphere, as kappa(<x, y>).

    Parameters
    ----------
    kind : {"nngp", "ntk"}
        ``"nngp"``: the random-feature kernel E_w[sigma(<w,x>) sigma(<w,y>)];
        ``"ntk"``: Theta = nngp + t E_w[sigma'(<w,x>) sigma'(<w,y>)] (see :func:`ntk`).
    sigma : str or Activation
    weights : {"gaussian", "sphere"}
    d : int, optional
        Ambient dimension; required for ``weights="sphere"``.

    Returns
    -------
    DotProductKernel
        A callable kappa(t), with K(x, y) = kappa(<x, y>) for |x| = |y| = 1, that
        :func:`mercer_eigenvalues` diagonalises exactly when it can.

    Examples
    --------
    >>> kappa = dot_product_kernel("nngp", "relu")
    >>> round(float(kappa(np.array(1.0))), 12), round(float(kappa(np.array(0.0))), 12)  # 1/2, 1/(2 pi)
    (0.5, 0.159154943092)
    """
    return DotProductKernel(kind, sigma, weights, d)


def _theta_quadrature(kappa, d, kmax, q, breakpoints):
    """mu_k = int kappa(t) P_{k,d}(t) w_d(t) dt through t = cos theta, Gauss-Legendre in theta.

    w_d(t) dt = c_d sin^{d-2}(theta) d theta on [0, pi]; arc-cosine and smooth kernels are analytic
    in theta, where Gauss-Jacobi rules in t lose their spectral accuracy at the (1 -+ t)^{3/2} ends.
    """
    cuts = sorted(math.acos(float(b)) for b in breakpoints)
    edges = [0.0, *cuts, math.pi]
    u, w = special.roots_legendre(q)
    thetas, weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        half = 0.5 * (hi - lo)
        theta = lo + half * (u + 1)
        thetas.append(theta)
        weights.append(np.log(w * half) + log_inner_product_constant(d) + (d - 2) * np.log(np.sin(theta)))
    theta = np.concatenate(thetas)
    W = np.exp(np.concatenate(weights))
    t = np.cos(theta)
    values = np.asarray(to_numpy(kappa(t)), dtype=np.float64)
    if values.shape != t.shape:
        raise ValueError(f"kernel must map an array of shape {t.shape} to the same shape, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("kernel returned NaN or infinite values on [-1, 1]")
    return legendre_all(kmax, d, t) @ (W * values)


def _parse_kernel_name(name):
    sigma, _, kind = name.rpartition("_")
    if kind not in KINDS or not sigma:
        raise ValueError(f"kernel name must read '<activation>_<kind>' with kind in {KINDS} "
                         f"(e.g. 'relu_nngp', 'relu_ntk'), got {name!r}")
    return DotProductKernel(kind, sigma, "gaussian")


def mercer_eigenvalues(kernel, d, kmax, *, q=None, breakpoints=()):
    """Eigenvalues lambda_k, k = 0..kmax, of a dot-product kernel on S^{d-1} (Funk-Hecke).

    Argument order: the kernel, then the dimension d, then the highest degree kmax, as in N(d, k)
    (DESIGN.md); :func:`shallow.harmonics.legendre` takes the degree first, after P_{k,d}.
    Keyword calls are accepted: ``mercer_eigenvalues("relu_nngp", d=3, kmax=3)``.

    The integral operator (T f)(x) = int kappa(<x, y>) f(y) dtau_d(y) on L2(tau_d) acts on the
    degree-k spherical harmonics (a space of dimension N(d, k)) as multiplication by

        lambda_k = int_{-1}^{1} kappa(t) P_{k,d}(t) w_d(t) dt,

    so that kappa(<x, y>) = sum_k lambda_k N(d, k) P_{k,d}(<x, y>).

    Parameters
    ----------
    kernel : callable, DotProductKernel or str
        kappa as a vectorised callable of t in [-1, 1] (numpy in, numpy out); a
        :class:`DotProductKernel` from :func:`dot_product_kernel`; or a name
        ``"<activation>_<kind>"`` such as ``"relu_nngp"``, ``"relu_ntk"``, ``"erf_ntk"``
        (Gaussian weights).
    d : int
        Ambient dimension, d >= 2.
    kmax : int
        Highest degree, kmax >= 0.
    q : int, optional
        Gauss-Legendre nodes in theta = arccos t per piece, for kernels integrated numerically;
        default 2 (kmax + d) + 128.
    breakpoints : sequence of float in (-1, 1)
        Values of t where kappa is not smooth (the integral is split there); checked, and unused where
        the eigenvalues are exact.

    Returns
    -------
    lambda : numpy array of shape (kmax + 1,)
        By quadrature (a callable kernel, or a kernel without an exact route) the error is absolute,
        a few 1e-15 to 1e-14 of lambda_0 (relu NNGP to kmax = 200: 2e-15 in d = 3, 2e-14 in d = 20):
        eigenvalues below that are rounding, not decay (at d = 20, lambda_200 = 6.4e-35 comes out near
        1e-29). Pass the kernel as a :class:`DotProductKernel` or a name for the exact routes, or
        divide only by the eigenvalues well above that floor.

    Notes
    -----
    Exact routes (Funk-Hecke twice, Reference 1): for a random-feature kernel with sphere weights,
    lambda_k = mu_k(sigma)^2; with Gaussian weights and a degree-h homogeneous sigma,
    lambda_k = E|w|^{2h} mu_k(sigma)^2. For the NTK, the term t kappa'(t) has eigenvalues
    lambda_j = [nu_{j-1} N(d,j-1) (j+d-3)/(2j+d-4) + nu_{j+1} N(d,j+1) (j+1)/(2j+d)] / N(d,j) from
    those nu_k of kappa' (the three-term recurrence of P_{k,d}; at j = 1 in d = 2, where that
    factor reads 0/0, it is 1: t P_{0,2} = P_{1,2}). Otherwise the integral is computed
    by Gauss-Legendre quadrature in theta. For relu, lambda_k ~ k^{-(d+2)} (NNGP) and
    lambda_k ~ k^{-d} (NTK) on the even degrees; the odd degrees k >= 3 vanish.

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Appendix D.
    2. A. Bietti and J. Mairal, arXiv:1905.12173, Theorem 4 (NTK decay).

    Examples
    --------
    >>> lam = mercer_eigenvalues("relu_nngp", 3, 3)      # d * mu_k(relu)^2 in d = 3
    >>> np.round(lam / 3, 12).tolist() == np.round([1/16, 1/36, 1/256, 0], 12).tolist()
    True
    >>> bool(np.array_equal(mercer_eigenvalues("relu_nngp", d=3, kmax=3), lam))   # by keyword
    True
    """
    d = check_dimension(d)
    kmax = check_integer(kmax, "kmax", minimum=0)
    if q is not None:
        q = check_integer(q, "q", minimum=1)
    cuts = _check_breakpoints(breakpoints)  # before the exact routes, which passed wrong ones without a word
    if isinstance(kernel, str):
        kernel = _parse_kernel_name(kernel)
    if isinstance(kernel, DotProductKernel):
        if kernel.d is not None and kernel.d != d:
            raise ValueError(f"kernel was built for d={kernel.d} but d={d} was given")
        lam = kernel._exact_eigenvalues(d, kmax)
        if lam is not None:
            return lam
    elif not callable(kernel):
        raise TypeError(f"kernel must be a callable of t, a DotProductKernel or a name like 'relu_ntk', "
                        f"got {type(kernel).__name__}")
    q = 2 * (kmax + d) + 128 if q is None else q
    return _theta_quadrature(kernel, d, kmax, q, cuts)


# --------------------------------------------------------------------------------------------
# RKHS (F2) norms.
# --------------------------------------------------------------------------------------------

def rkhs_norm(coef, gram) -> float:
    """RKHS norm of f = sum_i c_i K(., x_i): sqrt(c^T K c) with K_ij = K(x_i, x_j).

    Parameters
    ----------
    coef : array of shape (n,)
        The coefficients c_i.
    gram : array of shape (n, n)
        The Gram matrix of the centres x_i (symmetric positive semidefinite).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For mismatched shapes, a gram that is not symmetric, or when c^T K c is negative beyond
        rounding (gram not PSD).

    Notes
    -----
    <K(., x), K(., y)>_H = K(x, y) (the reproducing property) gives |f|_H^2 = sum_ij c_i c_j K(x_i, x_j).

    Examples
    --------
    >>> rkhs_norm(np.array([1.0]), np.array([[4.0]]))     # |K(., x)|_H = sqrt(K(x, x))
    2.0
    """
    c = check_array(_host_if_sequence(coef), "coef", ndim=1)
    K = check_array(_host_if_sequence(gram), "gram", ndim=2)
    get_xp(c, K)  # refuses c and K from two array libraries
    n = c.shape[0]
    if K.shape != (n, n):
        raise ValueError(f"gram must have shape ({n}, {n}) to match coef of length {n}, got {tuple(K.shape)}")
    K_max = check_symmetric(K, "gram", "the Gram matrix K(x_i, x_j) of the centres")
    value = float(c @ (K @ c))
    scale = K_max * float(c @ c)
    tol = 64 * n * float(np.finfo(np.float64 if K.dtype == np.float64 else np.float32).eps) * scale
    if value < -tol:
        raise ValueError(f"c^T gram c = {value:.3g} < 0: gram is not positive semidefinite")
    return math.sqrt(max(value, 0.0))


def f2_norm_from_harmonics(energies, eigenvalues, *, rtol=1e-26) -> float:
    """F2 (RKHS) norm of a function on the sphere from its per-degree energies.

    |f|_H^2 = sum_k |f_k|^2_{L2(tau_d)} / lambda_k,

    with f_k the degree-k harmonic component of f and lambda_k the Mercer eigenvalue of the
    kernel on degree k (:func:`mercer_eigenvalues`). Infinite when some lambda_k = 0 while
    |f_k| > 0; degrees with zero energy contribute 0 whatever lambda_k. Rounding is read as
    such: eigenvalues down to -1e-12 of the largest count as 0 (quadrature leaves -9e-18 where
    an eigenvalue vanishes), and so do energies up to ``rtol`` (default 1e-26) of the total on degrees
    where lambda_k = 0 (the Funk-Hecke coefficients of gelu, sigmoid, tanh, softplus come from
    quadrature: a gelu neuron's odd degrees k >= 3, zero, came out at 1e-29). Energies from a
    quadrature rule (:func:`shallow.harmonics.harmonic_energy` with ``weights``) carry rounding of
    order eps times the total: a few 1e-17 on degree 3 for f = 1/4 + <v, x>/2 on S^2 (total 0.15), which the
    default reads as energy, giving an infinite norm to a function of F2 norm 2; pass ``rtol=1e-12``
    for them. Quadrature noise of the other sign is not recognised: where an eigenvalue vanishes,
    quadrature (a callable kernel in :func:`mercer_eigenvalues`) leaves positive values as well (the
    relu NNGP as a callable in d = 5: a few 1e-18 on degrees 3 and 5, the digits varying with the
    numpy build), which turn an infinite norm into a large finite one (energy 1e-6 on degree 3: about
    5e5, against inf from the exact eigenvalues). Give the exact eigenvalues where they exist, or
    set to 0 yourself those below the quadrature floor of :func:`mercer_eigenvalues`.

    Parameters
    ----------
    energies : array of shape (K,)
        |f_k|^2 = sum_j <f, Y_kj>^2 (>= 0), degrees 0..K-1: exact ones from
        :func:`shallow.measures.harmonic_spectrum` for a network or measure.
    eigenvalues : array of shape (K,)
        lambda_k (>= 0).
    rtol : float, default 1e-26
        In [0, 1). Energies at most rtol times the total energy, on degrees where lambda_k = 0, count as rounding
        (0), not as an infinite norm: keep the default for the exact energies of
        :func:`shallow.measures.harmonic_spectrum`, take about 1e-12 for energies from quadrature.

    Returns
    -------
    float
        The norm over the given degrees (a truncation of the full sum).

    Notes
    -----
    For the random-feature kernel with sphere weights, lambda_k = mu_k(sigma)^2 and this is Bach's
    F2 norm: f = int p(w) sigma(<w, .>) dtau_d(w) has f_k = mu_k p_k, and the smallest
    |p|_{L2(tau_d)} is sqrt(sum_k |f_k|^2 / mu_k^2) (Bach 2017, Sec. 2.3 and Appendix D).

    Examples
    --------
    >>> f2_norm_from_harmonics([1.0, 0.0, 4.0], [1.0, 0.0, 1.0])
    2.23606797749979
    >>> f2_norm_from_harmonics([1.0, 1e-3], [1.0, 0.0])
    inf
    """
    rtol = check_nonnegative(rtol, "rtol")
    if rtol >= 1:  # every energy is at most the total: all of it would be read as rounding
        raise ValueError(f"rtol must be < 1 (a fraction of the total energy read as rounding), got {rtol!r}")
    e = to_numpy(check_array(_host_if_sequence(energies), "energies", ndim=1)).astype(np.float64)
    lam = to_numpy(check_array(_host_if_sequence(eigenvalues), "eigenvalues", ndim=1)).astype(np.float64)
    if e.shape != lam.shape:
        raise ValueError(f"energies has shape {e.shape} but eigenvalues has shape {lam.shape}")
    if (e < 0).any():
        raise ValueError(f"energies must be >= 0, got a minimum of {e.min():.3g} (harmonic_energy's estimates from "
                         "samples can be negative: for a network or measure, shallow.measures.harmonic_spectrum gives "
                         "the energies exactly)")
    top = float(np.abs(lam).max(initial=0.0))
    if (lam < -1e-12 * top).any():
        raise ValueError(f"eigenvalues must be >= 0, got a minimum of {lam.min():.3g}")
    lam = np.maximum(lam, 0.0)
    if ((lam == 0) & (e > rtol * float(e.sum()))).any():
        return math.inf
    e = np.where(lam == 0, 0.0, e)
    ratio = np.divide(e, lam, out=np.zeros_like(e), where=e > 0)
    return math.sqrt(float(ratio.sum()))
