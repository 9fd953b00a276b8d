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

import numpy as np
from scipy import special

from ._validation import check_array, check_dimension, check_integer, check_points, check_random_state
from .backend import get_xp, to_device

__all__ = [
    "sample_sphere",
    "sphere_area",
    "inner_product_density",
    "log_inner_product_constant",
    "sample_inner_product",
    "gegenbauer_quadrature",
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

    Examples
    --------
    >>> round(sphere_area(3), 12) == round(4 * np.pi, 12)
    True
    """
    d = check_dimension(d)
    return float(2 * np.exp(0.5 * d * np.log(np.pi) - special.gammaln(0.5 * d)))


def log_inner_product_constant(d) -> float:
    """log c_d with c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)), the constant of w_d."""
    d = check_dimension(d)
    return float(special.gammaln(0.5 * d) - 0.5 * np.log(np.pi) - special.gammaln(0.5 * (d - 1)))


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
    one_minus = xp.where(inside, 1 - t * t, 1.0)
    dens = xp.exp(log_inner_product_constant(d) + 0.5 * (d - 3) * xp.log(one_minus))
    edge_value = {2: np.inf, 3: 0.5}.get(d, 0.0)
    return xp.where(inside, dens, xp.where(xp.abs(t) == 1, edge_value, 0.0)).astype(t.dtype, copy=False)


def sample_inner_product(n, d, rng=None, dtype=np.float64, device: str = "cpu"):
    """Draw n samples of t = <x, e>, x ~ tau_d: t = 2 B - 1 with B ~ Beta((d-1)/2, (d-1)/2).

    Returns an array of shape (n,).
    """
    n = check_integer(n, "n", minimum=0)
    d = check_dimension(d)
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
    with np.errstate(all="ignore"):
        if d == 3:
            nodes, weights = special.roots_legendre(q)
        elif d == 2:
            nodes, weights = special.roots_chebyt(q)
        else:
            nodes, weights = special.roots_jacobi(q, a, a)
    nodes, weights = np.asarray(nodes, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if not (np.isfinite(nodes).all() and np.isfinite(weights).all() and weights.sum() > 0):
        # scipy's Newton-refined rule breaks down for large a (d ~ 10^4, q ~ 100): fall back on
        # Golub-Welsch, the eigen-decomposition of the Jacobi matrix of the normalised measure.
        nodes, weights = _golub_welsch_gegenbauer(q, d)
    return nodes, weights / weights.sum()


def _golub_welsch_gegenbauer(q, d):
    """Gauss rule for w_d from the symmetric tridiagonal Jacobi matrix (Golub and Welsch, 1969).

    For the weight (1 - t^2)^{lambda - 1/2}, lambda = (d - 2)/2, the monic orthogonal polynomials
    satisfy p_{k+1} = t p_k - beta_k p_{k-1} with beta_k = k (k + 2 lambda - 1) / (4 (k + lambda)(k + lambda - 1)).
    Nodes are the eigenvalues, weights the squared first components of the unit eigenvectors.
    """
    from scipy.linalg import eigh_tridiagonal

    lam = 0.5 * (d - 2)
    k = np.arange(1, q, dtype=np.float64)
    beta = k * (k + 2 * lam - 1) / (4 * (k + lam) * (k + lam - 1))
    nodes, vectors = eigh_tridiagonal(np.zeros(q), np.sqrt(beta))
    return nodes, vectors[0] ** 2


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
    return Z / xp.linalg.norm(Z, axis=1, keepdims=True)
