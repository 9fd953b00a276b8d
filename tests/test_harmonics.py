"""Spherical harmonics on S^{d-1}: Legendre polynomials P_{k,d}, N(d, k), the real orthonormal basis
Y_{k,kappa}, Funk-Hecke coefficients, and per-degree energies.

Every expected value comes from an independent computation: scipy's (unnormalised) Gegenbauer,
Chebyshev and Legendre polynomials, mpmath at 50 digits, scipy.integrate.quad, binomial counts,
closed forms from the literature (Bach 2017, App. D; sectoral and zonal harmonics), product
quadrature rules on the sphere built here from Gauss rules in hyperspherical angles, finite
differences and Monte Carlo with a stated number of standard deviations.
"""

import itertools
import math
import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from shallow import harmonics
from shallow.backend import to_numpy
from shallow.sphere import gegenbauer_quadrature, sample_sphere

EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------

def scipy_legendre(k, d, t):
    """P_{k,d}(t) from scipy: C_k^{lam}(t) / C_k^{lam}(1), lam = (d - 2)/2; Chebyshev T_k for d = 2."""
    t = np.asarray(t, dtype=np.float64)
    if d == 2:
        return special.eval_chebyt(k, t)
    lam = 0.5 * (d - 2)
    return special.eval_gegenbauer(k, lam, t) / special.eval_gegenbauer(k, lam, 1.0)


def mpmath_legendre(k, d, t):
    """P_{k,d}(t) at 50 digits: mpmath's C_k^{lam}(t) / binomial(k + 2 lam - 1, k)."""
    with mpmath.workdps(50):
        lam = mpmath.mpf(d - 2) / 2
        value = mpmath.gegenbauer(k, lam, mpmath.mpf(t), maxprec=100_000) / mpmath.binomial(k + 2 * lam - 1, k)
        return float(value)


def density_constant(d):
    """c_d = Gamma(d/2) / (sqrt(pi) Gamma((d - 1)/2)), the constant of w_d (REFERENCES.md)."""
    return math.exp(math.lgamma(d / 2) - 0.5 * math.log(math.pi) - math.lgamma((d - 1) / 2))


def quad_against_w(func, d, lo=-1.0, hi=1.0):
    """int_lo^hi func(t) w_d(t) dt by scipy.integrate.quad, with the algebraic endpoint weights of w_d."""
    a = 0.5 * (d - 3)
    c = density_constant(d)
    # quad's weight='alg' integrates (t - lo)^p (hi - t)^q f(t): put (1 + t)^a at -1 and (1 - t)^a at 1.
    p = a if lo == -1.0 else 0.0
    q = a if hi == 1.0 else 0.0

    def smooth(t):
        value = c * func(t)
        if lo != -1.0:
            value *= (1 + t) ** a
        if hi != 1.0:
            value *= (1 - t) ** a
        return value

    value, _ = integrate.quad(smooth, lo, hi, weight="alg", wvar=(p, q), epsabs=1e-14, epsrel=1e-13, limit=200)
    return value


def sphere_product_rule(d, q):
    """A quadrature rule for tau_d on S^{d-1}, exact for polynomials in x of degree <= 2q - 1.

    Hyperspherical angles: x_1 = t_1, x_2 = s_1 t_2, ..., x_{d-1} = s_1 ... s_{d-2} cos(phi),
    x_d = s_1 ... s_{d-2} sin(phi), with s_i = sqrt(1 - t_i^2). Under tau_d the t_i are independent
    with densities w_d, w_{d-1}, ..., w_3 and phi is uniform: q-point Gauss rules for the t_i and
    2q equispaced angles for phi. Odd powers of s_i come with functions odd under the antipodal map
    of the inner sphere, which the symmetric inner rule integrates to zero exactly.
    Returns (X of shape (M, d), weights of shape (M,)).
    """
    rules = [gegenbauer_quadrature(q, D) for D in range(d, 2, -1)]  # t_1 ~ w_d, ..., t_{d-2} ~ w_3
    phi = 2 * np.pi * (np.arange(2 * q) + 0.5) / (2 * q)
    grids = np.meshgrid(*[r[0] for r in rules], phi, indexing="ij")
    wgrids = np.meshgrid(*[r[1] for r in rules], np.full(2 * q, 1 / (2 * q)), indexing="ij")
    T = [g.ravel() for g in grids[:-1]]
    phi = grids[-1].ravel()
    W = np.prod([g.ravel() for g in wgrids], axis=0)
    cols, scale = [], np.ones_like(phi)
    for t in T:
        cols.append(scale * t)
        scale = scale * np.sqrt(1 - t * t)
    cols += [scale * np.cos(phi), scale * np.sin(phi)]
    return np.stack(cols, axis=1), W


def random_rotation(d, rng):
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def gram(X):
    """<x_i, x_j> for unit rows, with the diagonal exactly 1: the harmonics are evaluated at x / |x|,
    and near t = 1 an error of one ulp in <x, x> moves P_{k,d} by P'(1) eps = k (k + d - 2) eps / (d - 1)."""
    G = np.clip(X @ X.T, -1, 1)
    np.fill_diagonal(G, 1.0)
    return G


# ---------------------------------------------------------------------------------------------
# P_{k,d}: the Legendre (normalised Gegenbauer) polynomials
# ---------------------------------------------------------------------------------------------

T_GRID = np.linspace(-1, 1, 41)


@pytest.mark.parametrize("d", [4, 5, 7, 10, 30])
def test_legendre_is_gegenbauer_normalised_at_one(d, xp):
    # P_{k,d} = C_k^{(d-2)/2} / C_k^{(d-2)/2}(1). scipy's values are exact to a few ulps of C_k(1)
    # at these small k, so the normalised ratios agree to 1e-13 (a few hundred eps).
    t = xp.asarray(T_GRID)
    for k in range(13):
        np.testing.assert_allclose(to_numpy(harmonics.legendre(k, d, t)), scipy_legendre(k, d, T_GRID),
                                   rtol=0, atol=1e-13)


def test_legendre_d2_is_chebyshev():
    # P_{k,2}(t) = T_k(t) = cos(k arccos t): the recurrence (2k t P_k - k P_{k-1}) / k is Chebyshev's.
    for k in range(30):
        np.testing.assert_allclose(harmonics.legendre(k, 2, T_GRID), special.eval_chebyt(k, T_GRID),
                                   rtol=0, atol=50 * EPS * (k + 1))


def test_legendre_d3_is_legendre():
    # P_{k,3} is the classical Legendre polynomial (Bonnet's recurrence); error ~ k eps.
    for k in range(30):
        np.testing.assert_allclose(harmonics.legendre(k, 3, T_GRID), special.eval_legendre(k, T_GRID),
                                   rtol=0, atol=50 * EPS * (k + 1))


@pytest.mark.parametrize("d", [2, 3, 6])
def test_legendre_all_rows_are_the_normalised_gegenbauer_polynomials(d, xp):
    # Shape (kmax + 1, *t.shape), and more entries than one host chunk (32768) to cover the blocking.
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, size=(3, 20_000))
    P = to_numpy(harmonics.legendre_all(12, d, xp.asarray(t)))
    assert P.shape == (13, 3, 20_000)
    for k in range(13):
        np.testing.assert_allclose(P[k], scipy_legendre(k, d, t), rtol=0, atol=1e-13)


@pytest.mark.parametrize("k, d, ts", [
    (350, 1000, [0.0, 0.3, -0.71, 0.999, -0.9999]),   # scipy's C_k^{499}(1) ~ 1e330 overflows here
    (10_000, 10_000, [0.999, 0.9999, -0.9995]),       # t where P is not below the float64 range
])
def test_legendre_high_degree_and_dimension_matches_mpmath(k, d, ts):
    # Forward recurrence on normalised values: rounding error grows ~ k eps, so within 1e-12
    # relative (or 1e-14 absolute for values that are themselves ~1e-14 or smaller).
    ours = harmonics.legendre(k, d, np.array(ts))
    ref = np.array([mpmath_legendre(k, d, t) for t in ts])
    assert np.all(np.abs(ours - ref) <= np.maximum(1e-12 * np.abs(ref), 1e-14))


@pytest.mark.parametrize("d", [2, 3, 5, 50, 1000, 10_000])
def test_legendre_at_one_is_one(d):
    # P_{k,d}(1) = 1: the recurrence coefficients sum to one at t = 1; rounding ~ k eps.
    P = harmonics.legendre_all(200, d, np.array([1.0]))[:, 0]
    np.testing.assert_allclose(P, 1.0, rtol=0, atol=200 * EPS * 10)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(0, 60), d=st.integers(2, 200), t=st.floats(-1, 1, allow_nan=False))
def test_legendre_parity(k, d, t):
    # P_k(-t) = (-1)^k P_k(t). Negating t negates every odd step exactly in floating point.
    plus = float(harmonics.legendre(k, d, np.array(t)))
    minus = float(harmonics.legendre(k, d, np.array(-t)))
    assert minus == pytest.approx((-1) ** k * plus, abs=4 * EPS)


@pytest.mark.parametrize("d", [2, 3, 4, 7, 20, 101])
def test_legendre_orthogonality_under_w_d(d):
    # int P_j P_k w_d dt = [j = k] / N(d, k). The 20-point Gauss rule for w_d is exact for degree
    # <= 39 >= j + k, so the Gram matrix of the unit-norm sqrt(N(d, k)) P_k is the identity up to
    # rounding (1e-12: ~20 products of size <= 1 each, with nodes accurate to a few eps).
    kmax = 15
    t, w = gegenbauer_quadrature(20, d)
    P = np.stack([scipy_legendre(k, d, t) for k in range(kmax + 1)]) if d < 50 else None
    ours = harmonics.legendre_all(kmax, d, t)
    if P is not None:  # the quadrature nodes themselves: ours against scipy
        np.testing.assert_allclose(ours, P, rtol=0, atol=1e-13)
    root_N = np.sqrt([float(harmonics.num_harmonics(d, k)) for k in range(kmax + 1)])
    G = (ours * w) @ ours.T * np.outer(root_N, root_N)
    np.testing.assert_allclose(G, np.eye(kmax + 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("j, k", [(3, 3), (4, 4), (2, 4), (3, 5)])
def test_legendre_norm_by_adaptive_quadrature(j, k):
    # One case by scipy.integrate.quad (independent of Gauss rules): d = 5, int P_j P_k w_5 = [j = k] / N(5, k).
    d = 5
    value = quad_against_w(lambda t: harmonics.legendre(j, d, np.array(t)) * harmonics.legendre(k, d, np.array(t)), d)
    expected = 1 / harmonics.num_harmonics(d, k) if j == k else 0.0
    assert value == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# N(d, k)
# ---------------------------------------------------------------------------------------------

def test_num_harmonics_is_dimension_of_homogeneous_polynomials_minus_laplacian_image():
    # H_k = P_k minus |x|^2 P_{k-2}: N(d, k) = C(k + d - 1, d - 1) - C(k + d - 3, d - 1), exact ints.
    for d in range(2, 14):
        for k in range(25):
            expected = math.comb(k + d - 1, d - 1) - (math.comb(k + d - 3, d - 1) if k >= 2 else 0)
            assert harmonics.num_harmonics(d, k) == expected
    for d, k in [(50, 150), (1000, 1000), (10_000, 3)]:
        value = harmonics.num_harmonics(d, k)
        assert isinstance(value, int)
        assert value == math.comb(k + d - 1, d - 1) - math.comb(k + d - 3, d - 1)


def test_num_harmonics_circle_and_sphere():
    # d = 2: cos k theta and sin k theta; d = 3: 2k + 1.
    assert harmonics.num_harmonics(2, 0) == 1 and harmonics.num_harmonics(3, 0) == 1
    for k in range(1, 200):
        assert harmonics.num_harmonics(2, k) == 2
        assert harmonics.num_harmonics(3, k) == 2 * k + 1


# ---------------------------------------------------------------------------------------------
# The real orthonormal basis Y_{k,kappa}
# ---------------------------------------------------------------------------------------------

def brute_force_indices(d, k):
    """All kappa with k = k_1 >= ... >= k_{d-2} >= |k_{d-1}|, sorted by the documented key."""
    if d == 2:
        return [(0,)] if k == 0 else [(k,), (-k,)]
    rows = [(k, *rest) for rest in itertools.product(range(-k, k + 1), repeat=d - 2)
            if all(a >= b for a, b in zip((k, *rest[:-1]), (*rest[:-1], abs(rest[-1]))))]
    # key: (k_2, ..., k_{d-2}, |k_{d-1}|, cosine before sine)
    return sorted(rows, key=lambda r: (*r[1:-1], abs(r[-1]), r[-1] < 0))


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_harmonic_indices_enumerate_the_branching_rule_in_documented_order(d):
    for k in range(6 if d < 6 else 4):
        kappa = harmonics.harmonic_indices(d, k)
        assert kappa.shape == (harmonics.num_harmonics(d, k), d - 1)
        assert [tuple(r) for r in kappa.tolist()] == brute_force_indices(d, k)


@pytest.mark.parametrize("d, degrees", [(2, [0, 1, 5]), (3, list(range(7))), (5, list(range(5))), (11, [0, 1, 2])])
def test_spherical_harmonics_orthonormal_by_product_quadrature(d, degrees, xp):
    # int Y_{k,a} Y_{j,b} dtau_d = [k = j][a = b]: within and across degrees. The product rule is
    # exact for polynomials of degree <= 2 max(k) (q = max(k) + 1), so the Gram matrix is the
    # identity up to rounding in sums of ~1e5 products of size <= N(d, k): 1e-12.
    X, w = sphere_product_rule(d, max(degrees) + 1)
    Y = np.concatenate([to_numpy(harmonics.spherical_harmonics(xp.asarray(X), k)) for k in degrees], axis=1)
    assert Y.shape[1] == sum(harmonics.num_harmonics(d, k) for k in degrees)
    np.testing.assert_allclose(Y.T @ (w[:, None] * Y), np.eye(Y.shape[1]), rtol=0, atol=1e-12)


def test_spherical_harmonics_orthonormal_by_monte_carlo():
    # d = 11, k = 3 (275 functions): the empirical Gram matrix of n iid uniform points is I within
    # 6 standard deviations of each entry, sd estimated from the same products (max over 38k entries).
    d, k, n = 11, 3, 20_000
    X = sample_sphere(n, d, rng=7)
    Y = harmonics.spherical_harmonics(X, k)
    G = Y.T @ Y / n
    sd = np.sqrt(np.maximum((Y**2).T @ (Y**2) / n - G**2, 0) / n)
    assert np.all(np.abs(G - np.eye(Y.shape[1])) <= 6 * sd + 1e-12)


@pytest.mark.parametrize("d", [2, 3, 5, 11])
@pytest.mark.parametrize("k", [0, 1, 2, 4])
def test_addition_theorem(d, k, xp):
    # sum_j Y_kj(x) Y_kj(y) = N(d, k) P_{k,d}(<x, y>) with P_{k,d} from scipy; entries are at most
    # N(d, k) in size, so 1e-13 N(d, k) is ~ a few hundred eps relative.
    X = sample_sphere(30, d, rng=d * 10 + k)
    Y = to_numpy(harmonics.spherical_harmonics(xp.asarray(X), k))
    N = harmonics.num_harmonics(d, k)
    assert Y.shape == (30, N)
    np.testing.assert_allclose(Y @ Y.T, N * scipy_legendre(k, d, gram(X)), rtol=0, atol=1e-13 * N)


@pytest.mark.parametrize("d, k", [(3, 150), (5, 40), (50, 3)])
def test_addition_theorem_at_high_degree_and_dimension(d, k):
    # No NaN or overflow, and the addition theorem on a few points (two near a pole, one at it).
    # Normalised recurrences of length k: about k eps relative error per factor, hence 1e-11 N.
    X = sample_sphere(12, d, rng=3)
    pole = np.zeros(d)
    pole[0] = 1.0
    near = pole.copy()
    near[-1] = 1e-9
    near /= np.linalg.norm(near)
    X = np.vstack([X, pole, near, -near])
    Y = harmonics.spherical_harmonics(X, k)
    N = harmonics.num_harmonics(d, k)
    assert Y.shape == (15, N) and np.isfinite(Y).all()
    np.testing.assert_allclose(Y @ Y.T, N * scipy_legendre(k, d, gram(X)), rtol=0, atol=1e-11 * N)


def mpmath_sphere_harmonic_d3(k, m, x):
    """Y_{k,(k,m)}(x) on S^2, m >= 1, at 40 digits: sqrt(2) cos(m phi) ((2k + 1)(k - m)! / (k + m)!)^{1/2}
    (1 - t^2)^{m/2} P_k^{(m)}(t), t = x_1, phi = atan2(x_3, x_2) (mpmath's Ferrers P_k^m carries (-1)^m)."""
    with mpmath.workdps(40):
        t, phi = mpmath.mpf(float(x[0])), mpmath.atan2(float(x[2]), float(x[1]))
        norm = mpmath.sqrt((2 * k + 1) * mpmath.factorial(k - m) / mpmath.factorial(k + m))
        return float(mpmath.sqrt(2) * mpmath.cos(m * phi) * norm * (-1) ** m * mpmath.legenp(k, m, t))


@pytest.mark.parametrize("dtype, k, cases, rtol", [
    # (m, s): s = |(x_2, x_3)| near the turning point m / k, where Y is of order 1 but s^m is not a
    # normal number (0.44^1100 ~ 1e-392, 0.6^1500 ~ 1e-333; in float32 0.5^150 ~ 7e-46). Recurrences
    # of length k: about k eps relative error, hence 1e-10 (float64) and 2e-4 (float32).
    (np.float64, 2500, [(1100, 0.44), (1500, 0.6), (2000, 0.8)], 1e-10),
    (np.float32, 300, [(150, 0.5), (200, 0.66), (60, 0.2)], 2e-4),
])
def test_spherical_harmonics_keep_their_digits_where_s_to_the_b_underflows(dtype, k, cases, rtol):
    # On S^2, Y_{k,(k,m)} is the normalised associated Legendre function times sqrt(2) cos(m phi)
    # (closed form, evaluated by mpmath); its first factor c_m s^m lies below the normal numbers.
    phi = 0.3
    X = np.array([[np.sqrt(1 - s * s), s * np.cos(phi), s * np.sin(phi)] for _, s in cases], dtype=dtype)
    ref = np.array([mpmath_sphere_harmonic_d3(k, m, x) for (m, _), x in zip(cases, X.astype(np.float64))])
    assert np.all(np.abs(ref) > 0.5)  # values of order 1, not the exponentially small shadow
    columns = [harmonics.harmonic_indices(3, k).tolist().index([k, m]) for m, _ in cases]
    Y = harmonics.spherical_harmonics(X, k)
    assert Y.dtype == dtype
    np.testing.assert_allclose(Y[np.arange(len(cases)), columns], ref, rtol=rtol)
    single = np.array([harmonics.spherical_harmonic(X[i:i + 1], (k, m))[0] for i, (m, _) in enumerate(cases)])
    np.testing.assert_allclose(single, ref, rtol=rtol)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(2, 7), k=st.integers(0, 6))
def test_addition_theorem_is_rotation_invariant(seed, d, k):
    # sum_j Y_kj(Qx) Y_kj(Qy) = sum_j Y_kj(x) Y_kj(y) for orthogonal Q (both equal N P_k(<x, y>)).
    rng = np.random.default_rng(seed)
    X = sample_sphere(6, d, rng=rng)
    Q = random_rotation(d, rng)
    XQ = X @ Q.T
    XQ /= np.linalg.norm(XQ, axis=1, keepdims=True)
    Y, YQ = harmonics.spherical_harmonics(X, k), harmonics.spherical_harmonics(XQ, k)
    N = harmonics.num_harmonics(d, k)
    np.testing.assert_allclose(YQ @ YQ.T, Y @ Y.T, rtol=0, atol=1e-12 * N)


def homogeneous_extension(z, k):
    """H(z) = |z|^k Y_k(z / |z|), all columns, for points z of shape (m, d) off the origin."""
    r = np.linalg.norm(z, axis=1, keepdims=True)
    return r**k * harmonics.spherical_harmonics(z / r, k)


@pytest.mark.parametrize("d, k", [(2, 3), (3, 2), (3, 4), (4, 3), (5, 2), (6, 4)])
def test_spherical_harmonics_are_harmonic(d, k):
    # Laplacian of |x|^k Y(x / |x|) vanishes: fourth-order central differences, h = 1e-3, at points
    # off the sphere. Truncation ~ h^4 |D^6 H| and rounding ~ 64 eps |H| / (12 h^2) ~ 1e-9 |H|;
    # compared with sum_i |d^2 H / dx_i^2|, which is of order k^2 |H|: a relative 1e-6 is loose.
    rng = np.random.default_rng(11)
    x0 = sample_sphere(5, d, rng=rng) * rng.uniform(0.7, 1.3, size=(5, 1))
    h = 1e-3
    lap = np.zeros((5, harmonics.num_harmonics(d, k)))
    scale = np.zeros_like(lap)
    H0 = homogeneous_extension(x0, k)
    for i in range(d):
        e = np.zeros(d)
        e[i] = h
        second = (-homogeneous_extension(x0 + 2 * e, k) + 16 * homogeneous_extension(x0 + e, k) - 30 * H0
                  + 16 * homogeneous_extension(x0 - e, k) - homogeneous_extension(x0 - 2 * e, k)) / (12 * h * h)
        lap += second
        scale += np.abs(second)
    assert np.all(np.abs(lap) <= 1e-6 * (scale + np.abs(H0) + 1))


@pytest.mark.parametrize("d, k", [(2, 5), (3, 3), (5, 4), (11, 2)])
def test_spherical_harmonics_are_restrictions_of_homogeneous_polynomials_of_degree_k(d, k):
    # On a line z(s) = z0 + s v missing the origin, |z|^k Y(z / |z|) is a polynomial of degree k in s:
    # a least-squares fit of degree k at 2k + 6 Chebyshev nodes leaves a residual at rounding level,
    # 1e-10 of the values' scale (a degree k - 1 fit, checked too, does not).
    rng = np.random.default_rng(5)
    z0, v = rng.standard_normal(d), rng.standard_normal(d)
    z0 = 2 * z0 / np.linalg.norm(z0)
    v = v / np.linalg.norm(v)
    s = np.cos(np.pi * (np.arange(2 * k + 6) + 0.5) / (2 * k + 6))  # in (-1, 1): |z| >= 1
    H = homogeneous_extension(z0[None, :] + s[:, None] * v[None, :], k)  # (2k + 6, N)
    V = np.polynomial.chebyshev.chebvander(s, k)
    residual = H - V @ np.linalg.lstsq(V, H, rcond=None)[0]
    assert np.abs(residual).max() <= 1e-10 * np.abs(H).max()
    if k >= 1:
        V1 = np.polynomial.chebyshev.chebvander(s, k - 1)
        assert np.abs(H - V1 @ np.linalg.lstsq(V1, H, rcond=None)[0]).max() > 1e-6 * np.abs(H).max()


def test_spherical_harmonics_low_degree_closed_forms():
    # Degree 0 is the constant 1; degree 1 is sqrt(d) x_i in the order of the multi-indices:
    # for d = 3, (1, 0) -> x_1, (1, 1) -> x_2, (1, -1) -> x_3; for d = 2, sqrt(2) cos, sqrt(2) sin.
    X = sample_sphere(7, 3, rng=2)
    np.testing.assert_allclose(harmonics.spherical_harmonics(X, 0), 1.0, rtol=0, atol=0)
    np.testing.assert_allclose(harmonics.spherical_harmonics(X, 1), np.sqrt(3) * X, rtol=0, atol=4 * EPS)
    theta = np.linspace(0, 2 * np.pi, 9)
    C = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    np.testing.assert_allclose(harmonics.spherical_harmonics(C, 5),
                               np.sqrt(2) * np.stack([np.cos(5 * theta), np.sin(5 * theta)], axis=1),
                               rtol=0, atol=1e-14)


def test_spherical_harmonics_keep_float32():
    # float32 in, float32 out; the addition theorem then holds to ~1e3 float32 eps relative to N.
    X = sample_sphere(20, 5, rng=1, dtype=np.float32)
    Y = harmonics.spherical_harmonics(X, 4)
    assert Y.dtype == np.float32
    N = harmonics.num_harmonics(5, 4)
    np.testing.assert_allclose(Y.astype(np.float64) @ Y.T.astype(np.float64),
                               N * scipy_legendre(4, 5, gram(X.astype(np.float64))), rtol=0, atol=1e-4 * N)


@pytest.mark.parametrize("d, k", [(2, 0), (2, 4), (3, 5), (4, 3), (6, 3)])
def test_spherical_harmonic_matches_the_column_of_spherical_harmonics(d, k, xp):
    # The index-based evaluation (its own recurrences, c_b from ratios of Gamma) agrees with the column of
    # the same multi-index, to rounding: 1e-13 sqrt(N(d, k)) (|Y| <= sqrt(N)).
    X = xp.asarray(sample_sphere(25, d, rng=4))
    Y = to_numpy(harmonics.spherical_harmonics(X, k))
    for j, kappa in enumerate(harmonics.harmonic_indices(d, k).tolist()):
        y = to_numpy(harmonics.spherical_harmonic(X, kappa))
        np.testing.assert_allclose(y, Y[:, j], rtol=0, atol=1e-13 * np.sqrt(Y.shape[1]))


def test_spherical_harmonic_zonal_and_sectoral_closed_forms_d50_k150():
    # d = 50, k = 150 (N ~ 5e46, not enumerable). Zonal: Y_{(k, 0, ..., 0)}(x) = sqrt(N) P_{k,d}(x_1)
    # (|| P_k(<., e>) ||^2 = 1/N), P from mpmath. Sectoral: Y_{(k, ..., k, +-k)} = sqrt(2) rho^k
    # (cos, sin)(k phi) / sqrt(E[rho^{2k}]), rho^2 = x_{d-1}^2 + x_d^2 ~ Beta(1, (d - 2)/2) under tau_d,
    # E[rho^{2k}] = k! Gamma(d/2) / Gamma(d/2 + k). Recurrences of length 150 over 48 levels: 1e-11 relative.
    d, k = 50, 150
    N = harmonics.num_harmonics(d, k)
    rng = np.random.default_rng(8)
    t1 = np.array([0.999, 0.995, 0.99, -0.995, -0.9999])
    rest = rng.standard_normal((t1.size, d - 1))
    rest /= np.linalg.norm(rest, axis=1, keepdims=True)
    X = np.concatenate([t1[:, None], np.sqrt(1 - t1**2)[:, None] * rest], axis=1)
    zonal = harmonics.spherical_harmonic(X, (k,) + (0,) * (d - 2))
    ref = np.sqrt(float(N)) * np.array([mpmath_legendre(k, d, t) for t in t1])
    np.testing.assert_allclose(zonal, ref, rtol=1e-11)

    # Points near the circle of (x_{d-1}, x_d), where the sectoral harmonics are largest.
    phi = rng.uniform(0, 2 * np.pi, size=6)
    rho = np.array([1.0, 0.999, 0.99, 0.98, 0.995, 0.9])
    inner = rng.standard_normal((6, d - 2))
    inner /= np.linalg.norm(inner, axis=1, keepdims=True)
    X = np.concatenate([np.sqrt(1 - rho**2)[:, None] * inner, (rho * np.cos(phi))[:, None],
                        (rho * np.sin(phi))[:, None]], axis=1)
    log_moment = math.lgamma(k + 1) + math.lgamma(d / 2) - math.lgamma(d / 2 + k)
    amplitude = np.sqrt(2) * np.exp(k * np.log(rho) - 0.5 * log_moment)
    cos_el = harmonics.spherical_harmonic(X, (k,) * (d - 1))
    sin_el = harmonics.spherical_harmonic(X, (k,) * (d - 2) + (-k,))
    np.testing.assert_allclose(cos_el, amplitude * np.cos(k * phi), rtol=1e-11, atol=1e-11 * amplitude.max())
    np.testing.assert_allclose(sin_el, amplitude * np.sin(k * phi), rtol=1e-11, atol=1e-11 * amplitude.max())


def test_spherical_harmonic_orthonormal_by_exact_quadrature_d50_k150():
    # Elements (150, b, 0, ..., 0) depend on x only through t_1 = x_1 and t_2 = x_2 / |x_{2:}|, which
    # are independent under tau_50 with densities w_50 and w_49. The tensor Gauss rule with 151
    # nodes each (exact for degree <= 301 >= 2k) on points (t_1, s_1 t_2, s_1 s_2 e), e any unit
    # vector of R^48, integrates their products exactly: the Gram matrix is I up to rounding.
    d, k, q = 50, 150, 151
    t1, w1 = gegenbauer_quadrature(q, d)
    t2, w2 = gegenbauer_quadrature(q, d - 1)
    T1, T2 = (g.ravel() for g in np.meshgrid(t1, t2, indexing="ij"))
    W = np.outer(w1, w2).ravel()
    e = np.random.default_rng(9).standard_normal(d - 2)
    e /= np.linalg.norm(e)
    S1, S2 = np.sqrt(1 - T1**2), np.sqrt(1 - T2**2)
    X = np.concatenate([T1[:, None], (S1 * T2)[:, None], (S1 * S2)[:, None] * e[None, :]], axis=1)
    Y = np.stack([harmonics.spherical_harmonic(X, (k, b) + (0,) * (d - 3)) for b in (0, 1, 2, 75, 149, 150)], axis=1)
    assert np.isfinite(Y).all()
    np.testing.assert_allclose(Y.T @ (W[:, None] * Y), np.eye(Y.shape[1]), rtol=0, atol=1e-10)


def test_spherical_harmonic_at_high_degree_is_bounded_by_the_addition_theorem_d50_k150():
    # Any admissible multi-index at d = 50, k = 150: finite values bounded by sqrt(N(d, k))
    # (addition theorem: Y(x)^2 <= N P_k(1)); the O(n d k) recurrence keeps this a fraction of a second.
    d, k = 50, 150
    X = sample_sphere(200, d, rng=10)
    rng = np.random.default_rng(10)
    bound = math.sqrt(float(harmonics.num_harmonics(d, k)))
    for _ in range(5):
        kappa = [k]
        for _ in range(d - 3):
            kappa.append(int(rng.integers(0, kappa[-1] + 1)))
        kappa.append(int(rng.integers(-kappa[-1], kappa[-1] + 1)))
        y = harmonics.spherical_harmonic(X, kappa)
        assert y.shape == (200,) and np.isfinite(y).all() and np.abs(y).max() <= bound


# ---------------------------------------------------------------------------------------------
# Funk-Hecke coefficients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_project_zonal_smooth_function_matches_quad(d):
    # mu_k = int g P_k w_d for g(t) = exp(t) + cos(3t): Gauss-Jacobi on an analytic g is exact to
    # rounding; quad (with w_d's endpoint weights) to ~1e-13. Compare at 1e-12 absolute.
    g = lambda t: np.exp(t) + np.cos(3 * t)  # noqa: E731
    mu = harmonics.project_zonal(g, d, 8)
    for k in range(9):
        assert mu[k] == pytest.approx(quad_against_w(lambda t: g(t) * scipy_legendre(k, d, t), d), abs=1e-12)


@pytest.mark.parametrize("d", [3, 4, 10])
def test_project_zonal_relu_matches_quad(d):
    # relu is analytic on each side of 0: split at the breakpoint, both by project_zonal and by quad.
    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    mu = harmonics.project_zonal(relu, d, 10, breakpoints=(0.0,))
    for k in range(11):
        ref = quad_against_w(lambda t: t * scipy_legendre(k, d, t), d, 0.0, 1.0)
        assert mu[k] == pytest.approx(ref, abs=1e-12)


def test_project_zonal_warns_where_its_rule_has_not_converged():
    # Its notes: a warning where rules of q and 3q/4 nodes per piece differ by more than 1.5e-8
    # int |g| w_d, as a kink left out of breakpoints or a g too steep for q nodes makes them; and the
    # coefficients are then off by more than that, against closed forms: Bach 2017 App. D for relu
    # (d = 3: mu_k = Gamma(3/2) / (4 Gamma((3 - k)/2) Gamma((4 + k)/2))) and, for g = exp(1000 (t - 1))
    # in d = 3 (w_3 = 1/2), mu_0 = (1 - e^{-2000}) / 2000. With its breakpoint, relu gives no warning.
    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    k = np.arange(11)
    bach = np.exp(special.gammaln(1.5) - np.log(4) - special.gammaln((4 + k) / 2)) * special.rgamma((3 - k) / 2)
    with pytest.warns(RuntimeWarning, match="not converged.*breakpoints"):
        mu = harmonics.project_zonal(relu, 3, 10)
    assert np.abs(mu - bach).max() > 1e-6 * bach[0]
    with pytest.warns(RuntimeWarning, match="not converged"):
        mu = harmonics.project_zonal(lambda t: np.exp(1000 * (t - 1)), 3, 4)
    assert abs(mu[0] * 2000 - 1) > 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mu = harmonics.project_zonal(relu, 3, 10, breakpoints=(0.0,))
    np.testing.assert_allclose(mu, bach, rtol=0, atol=1e-14)


@pytest.mark.parametrize("d", [3, 300])
def test_project_zonal_repeated_breakpoint_is_one_breakpoint(d):
    # A kink listed twice is the same kink: the coefficients are Bach's closed form for relu (App. D,
    # k = 0, 1, 2: Gamma(d/2) / (4 Gamma((3 - k)/2) Gamma((1 + k + d)/2))), with no warning (an empty piece
    # [0, 0] took log(0) for its half-width). Quadrature at rounding: 1e-12 relative.
    k = np.arange(3)
    ref = np.exp(special.gammaln(d / 2) - np.log(4) - special.gammaln((3 - k) / 2) - special.gammaln((1 + k + d) / 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mu = harmonics.project_zonal(lambda t: np.maximum(t, 0.0), d, 2, breakpoints=(0.0, 0.0, -0.0))
    np.testing.assert_allclose(mu, ref, rtol=1e-12)


@pytest.mark.parametrize("cut", [1.0, -1.0])
def test_project_zonal_rejects_a_breakpoint_at_an_end_of_the_interval(cut):
    # breakpoints lie in the open interval (-1, 1): one at +-1 makes an empty piece at a singular end of w_d,
    # whose rule came out NaN (0 * log(0)), without an error
    with pytest.raises(ValueError, match="breakpoints must lie in"):
        harmonics.project_zonal(lambda t: np.maximum(t, 0.0), 3, 2, breakpoints=(0.0, cut))


@pytest.mark.parametrize("d", [5, 8])
def test_project_zonal_with_interior_pieces_carries_the_weight_on_every_piece(d):
    # Breakpoints -0.5 and 0.3 cut [-1, 1] into a left-end, an interior and a right-end piece, and |t + 0.5| is
    # non-zero on all three: each piece's nodes must carry the whole weight (1 - t^2)^((d - 3)/2) (d != 3, so
    # that it is not 1). Against quad on the same three pieces: 1e-12 absolute.
    g = lambda t: np.abs(t + 0.5) * np.exp(t)  # noqa: E731
    mu = harmonics.project_zonal(g, d, 6, breakpoints=(-0.5, 0.3))
    for k in range(7):
        ref = sum(quad_against_w(lambda t: g(t) * scipy_legendre(k, d, t), d, lo, hi)
                  for lo, hi in [(-1.0, -0.5), (-0.5, 0.3), (0.3, 1.0)])
        assert mu[k] == pytest.approx(ref, abs=1e-12), k


@pytest.mark.parametrize("alpha", [0, 1, 2, 3])
@pytest.mark.parametrize("d", [2, 3, 6, 20])
def test_project_zonal_relu_alpha_closed_form_bach2017(alpha, d):
    # Bach 2017 App. D in our d: mu_k = Gamma(alpha + 1) Gamma(d/2) /
    # (2^{alpha+1} Gamma(1 + (alpha - k)/2) Gamma((alpha + k + d)/2)), zero when k > alpha and
    # k - alpha is even (1/Gamma at a pole). Quadrature error at rounding: 1e-13 absolute.
    sigma = (lambda t: (t > 0).astype(float)) if alpha == 0 else (lambda t: np.maximum(t, 0.0) ** alpha)
    kmax = 12
    mu = harmonics.project_zonal(sigma, d, kmax, breakpoints=(0.0,))
    k = np.arange(kmax + 1)
    log_abs = (special.gammaln(alpha + 1) + special.gammaln(d / 2) - (alpha + 1) * np.log(2)
               - special.gammaln((alpha + k + d) / 2))
    closed = np.exp(log_abs) * special.rgamma(1 + (alpha - k) / 2)
    np.testing.assert_allclose(mu, closed, rtol=0, atol=1e-13)


def test_project_zonal_at_degree_2000_matches_the_closed_form_in_memory_linear_in_q():
    # relu in d = 3 up to kmax = 2000 (q = 4032 nodes on each of two pieces): Bach 2017 App. D,
    # mu_k = Gamma(d/2) / (4 Gamma((3 - k)/2) Gamma((1 + k + d)/2)), 0 for odd k >= 3, written here with
    # log-gammas and signs. Quadrature at rounding: 1e-12 absolute (mu_0 = 1/4). Memory: the
    # coefficients need O(q) work arrays; a (kmax + 1, 2q) table of P_k at the nodes would be 129 MB.
    import tracemalloc

    d, kmax = 3, 2000
    tracemalloc.start()
    try:
        mu = harmonics.project_zonal(lambda t: np.maximum(t, 0.0), d, kmax, breakpoints=(0.0,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    k = np.arange(kmax + 1)
    x = (3 - k) / 2
    ref = np.exp(special.gammaln(d / 2) - np.log(4) - special.gammaln(x) - special.gammaln((1 + k + d) / 2))
    ref = np.where((k % 2 == 1) & (k >= 3), 0.0, ref * special.gammasgn(x))
    np.testing.assert_allclose(mu, ref, rtol=0, atol=1e-12)
    assert peak < 20 * 2**20, f"peak traced memory {peak / 2**20:.0f} MB"


@pytest.mark.parametrize("d, k", [(2, 3), (3, 2), (4, 3), (5, 1)])
def test_funk_hecke_theorem_integral_of_zonal_function_against_harmonic_is_mu_k_times_harmonic(d, k):
    # REFERENCES.md (Funk-Hecke): int g(<x, y>) Y_k(y) dtau_d(y) = mu_k Y_k(x), mu_k = int g P_{k,d} w_d,
    # for every element Y_k of degree k of the library's basis, g(t) = exp(2 t). Left side: the product
    # rule on S^{d-1} with q = 12 (exact to degree 23; the Taylor tail of exp(2 <x, y>) beyond degree
    # 23 - k weighs < 2^21 / 21! ~ 4e-14). mu_k: scipy quad against w_d with scipy's P_{k,d}.
    # Rounding in sums of products of size <= e^2 sqrt(N(d, k)): 1e-12 sqrt(N).
    def g(t):
        return np.exp(2 * t)

    Yq_points, w = sphere_product_rule(d, 12)
    Yq = harmonics.spherical_harmonics(Yq_points, k)  # (M, N)
    X = sample_sphere(6, d, rng=20 + d)
    lhs = g(np.clip(X @ Yq_points.T, -1, 1)) @ (w[:, None] * Yq)  # (6, N)
    mu_k = quad_against_w(lambda t: g(t) * scipy_legendre(k, d, t), d)
    N = harmonics.num_harmonics(d, k)
    assert abs(mu_k) > 1e-3  # a degree that the identity does not satisfy trivially
    np.testing.assert_allclose(lhs, mu_k * harmonics.spherical_harmonics(X, k), rtol=0, atol=1e-12 * math.sqrt(N))


# ---------------------------------------------------------------------------------------------
# Per-degree energies
# ---------------------------------------------------------------------------------------------

def test_harmonic_energy_of_zonal_legendre_monte_carlo(xp):
    # f(x) = P_{k,d}(<x, e>) has E_k = 1/N(d, k) and E_j = 0 for j != k. U-statistic sd (Hoeffding):
    # sqrt(4 zeta_1 / n + 2 N(d, j) / n^2), zeta_1 = Var(f proj_j f) = Var(f^2) at j = k (computed by
    # an exact Gauss rule), 0 otherwise; zeta_2 <= N(d, j) ||f||_inf^4 = N(d, j). Within 5 sd.
    d, k, n, kmax = 5, 2, 3000, 5
    X = sample_sphere(n, d, rng=12)
    e = np.zeros(d)
    e[0] = 1.0
    f = scipy_legendre(k, d, X @ e)
    E = to_numpy(harmonics.harmonic_energy(xp.asarray(f), xp.asarray(X), kmax))
    t, w = gegenbauer_quadrature(10, d)
    Pk = scipy_legendre(k, d, t)
    zeta1 = w @ Pk**4 - (w @ Pk**2) ** 2
    for j in range(kmax + 1):
        N = harmonics.num_harmonics(d, j)
        expected = 1 / N if j == k else 0.0
        sd = math.sqrt((4 * zeta1 / n if j == k else 0.0) + 2 * N / n**2)
        assert abs(E[j] - expected) <= 5 * sd


def test_harmonic_energy_is_the_off_diagonal_sum_at_high_degree():
    # The U-statistic N(d, k) / (n (n - 1)) sum_{i != j} f_i f_j P_{k,d}(<x_i, x_j>), summed here over the
    # off-diagonal pairs with scipy's P_{k,d}, at degrees where N(d, k) reaches 1e93 (d = 1000, k <= 56)
    # and P_{k,d}(<x_i, x_j>) ~ N^{-1/2}: equal to rounding, 1e-12 of the sum of the terms' moduli.
    d, n = 1000, 30
    X = sample_sphere(n, d, rng=1)
    f = 1 + X[:, 0] + X[:, 1] ** 2
    E = harmonics.harmonic_energy(f, X, 56)
    G = gram(X)
    off = ~np.eye(n, dtype=bool)
    for k in (0, 2, 7, 14, 21, 35, 56):
        N = float(harmonics.num_harmonics(d, k))
        terms = (np.outer(f, f) * scipy_legendre(k, d, G))[off] * N / (n * (n - 1))
        assert abs(E[k] - terms.sum()) <= 1e-12 * np.abs(terms).sum(), k


@pytest.mark.parametrize("dtype, k, n, rtol", [
    # N(1000, k) passes the largest float32 (3.4e38) from k = 19 and the largest float64 from k = 308.
    # Tolerances, relative to the sum of the terms' moduli: float32 rounds <x_i, x_j> by ~6e-8, and
    # P_k varies on the scale 1 / (k sqrt(d)) there, hence 1e-4; float64, rounding: 1e-12.
    (np.float32, 22, 12, 1e-4),
    (np.float64, 310, 10, 1e-12),
])
def test_harmonic_energy_where_n_d_k_exceeds_the_dtype(dtype, k, n, rtol):
    # E_k = N(d, k) / (n (n - 1)) sum_{i != j} f_i f_j P_{k,d}(<x_i, x_j>) is of order N^{1/2}: representable
    # where N(d, k) is not. Reference: that sum at 40 digits (mpmath's Gegenbauer polynomials, N exact).
    d = 1000
    X = sample_sphere(n, d, rng=1).astype(dtype)
    f = (1 + X[:, 0] + X[:, 1] ** 2).astype(dtype)
    E = harmonics.harmonic_energy(f, X, k)
    assert E.dtype == dtype
    X64, f64 = X.astype(np.float64), f.astype(np.float64)
    G = np.clip(X64 @ X64.T, -1, 1)
    N = harmonics.num_harmonics(d, k)
    with mpmath.workdps(40):
        lam = mpmath.mpf(d - 2) / 2
        scale = N / mpmath.binomial(k + 2 * lam - 1, k) / (n * (n - 1))
        terms = [scale * float(f64[i] * f64[j]) * mpmath.gegenbauer(k, lam, float(G[i, j]))
                 for i in range(n) for j in range(n) if i != j]
        ref, size = float(mpmath.fsum(terms)), float(mpmath.fsum([abs(v) for v in terms]))
    assert abs(float(E[k]) - ref) <= rtol * size


def test_harmonic_energy_u_statistic_is_unbiased():
    # Mean over R = 2000 independent samples of size n = 30 is within 4 standard errors (sample sd
    # over the replications / sqrt(R)) of the true energies; the diagonal (V-statistic) bias
    # N(d, k) E[f^2] / n = 1/30 at k = 2 would exceed that bound.
    d, k, n, R = 5, 2, 30, 2000
    rng = np.random.default_rng(13)
    est = np.empty((R, 4))
    for r in range(R):
        X = sample_sphere(n, d, rng=rng)
        est[r] = harmonics.harmonic_energy(scipy_legendre(k, d, X[:, 0]), X, 3)
    expected = np.array([0.0, 0.0, 1 / harmonics.num_harmonics(d, k), 0.0])
    se = est.std(axis=0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(est.mean(axis=0) - expected) <= 4 * se)
    assert 1 / n > 4 * se[k]  # the test would see the V-statistic's bias


@pytest.mark.parametrize("d", [3, 5])
def test_harmonic_energy_of_known_harmonics_with_exact_quadrature_weights(d):
    # f = Y_{3,a} + 0.5 Y_{1,b} - 2: energies (4, 0.25, 0, 1, 0, ...) exactly, since the product rule
    # (q = 6) is exact for degree <= 11 >= deg f + kmax. Rounding: 1e-12.
    X, w = sphere_product_rule(d, 6)
    f = harmonics.spherical_harmonics(X, 3)[:, 1] + 0.5 * harmonics.spherical_harmonics(X, 1)[:, -1] - 2
    E = harmonics.harmonic_energy(f, X, 6, weights=w)
    np.testing.assert_allclose(E, [4.0, 0.25, 0.0, 1.0, 0.0, 0.0, 0.0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("d, q", [(3, 5), (4, 3), (5, 4)])
def test_harmonic_energy_accepts_a_float32_rule(d, q):
    # A rule exact to degree 2q - 1 >= 5, cast to float32, sums to 1 up to one float32 ulp (here 1 + 1.2e-7,
    # refused at 1e-8): f = Y_{2,a} + 0.5 Y_{1,b} - 2 has energies (4, 0.25, 1) exactly in float64;
    # float32 rounding of X, f and w: 1e-5.
    X, w = sphere_product_rule(d, q)
    X32, w32 = X.astype(np.float32), w.astype(np.float32)
    assert abs(float(w32.sum()) - 1) > 1e-8
    f = harmonics.spherical_harmonics(X32, 2)[:, 1] + 0.5 * harmonics.spherical_harmonics(X32, 1)[:, -1] - 2
    E = harmonics.harmonic_energy(f, X32, 2, weights=w32)
    assert E.dtype == np.float32
    np.testing.assert_allclose(E, [4.0, 0.25, 1.0], rtol=0, atol=1e-5)


def test_harmonic_energy_of_f_at_the_edges_of_float32():
    # E_k is quadratic in f: it is computed wherever it is a float32 normal number, whatever |f|.
    # (1) U-statistic, f ~ 2^57 = 1.4e17 at n = 500: E_k ~ 1e35, while the sums over pairs reach
    # (n f)^2 ~ 1e40 > 3.4e38. Reference: the off-diagonal sum in float64 with scipy's Legendre
    # polynomials, within 1e-5 of the sum of the terms' moduli (float32 rounding of <x_i, x_j> and f).
    d, n, s = 3, 500, 2.0**57
    X = sample_sphere(n, d, rng=15, dtype=np.float32)
    f = (s * (1 + X[:, 0] + X[:, 1] * X[:, 2])).astype(np.float32)
    E = harmonics.harmonic_energy(f, X, 2)
    G = gram(X.astype(np.float64))
    off = ~np.eye(n, dtype=bool)
    for k in range(3):
        terms = (np.outer(f, f).astype(np.float64) * scipy_legendre(k, d, G))[off] * (2 * k + 1) / (n * (n - 1))
        assert abs(float(E[k]) - terms.sum()) <= 1e-5 * np.abs(terms).sum(), k
    # (2) Exact product rule (3456 nodes), f = 2^-62 (Y_{2,a} + 0.5 Y_{1,b} - 2): energies 2^-124 (4, 0.25, 1),
    # ~1e-37, while w_i w_j f_i f_j ~ 1e-44 lies below the normal float32 numbers. Rounding of f, w and X
    # in float32: 2e-6 relative (16 eps).
    X, w = sphere_product_rule(4, 12)
    X32 = X.astype(np.float32)
    Y = harmonics.spherical_harmonics(X, 2)[:, 1] + 0.5 * harmonics.spherical_harmonics(X, 1)[:, -1] - 2
    E = harmonics.harmonic_energy((2.0**-62 * Y).astype(np.float32), X32, 2, weights=w.astype(np.float32))
    np.testing.assert_allclose(E.astype(np.float64), 2.0**-124 * np.array([4.0, 0.25, 1.0]), rtol=2e-6)


def test_harmonic_energy_does_not_depend_on_block_size():
    # Blocks of rows only regroup the same sum: equal to rounding (1e-13 of the total energy).
    X = sample_sphere(101, 4, rng=14)
    f = np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2]
    full = harmonics.harmonic_energy(f, X, 6, block_size=101)
    for block in (1, 7, 50):
        np.testing.assert_allclose(harmonics.harmonic_energy(f, X, 6, block_size=block), full,
                                   rtol=0, atol=1e-13 * np.abs(full).sum())


# ---------------------------------------------------------------------------------------------
# Bad input: ValueError naming the argument
# ---------------------------------------------------------------------------------------------

def test_bad_degree_raises():
    t = np.array([0.1, 0.2])
    X = sample_sphere(3, 3, rng=0)
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="^k must be"):
            harmonics.legendre(bad, 3, t)
        with pytest.raises(ValueError, match="^k must be"):
            harmonics.num_harmonics(3, bad)
        with pytest.raises(ValueError, match="^k must be"):
            harmonics.spherical_harmonics(X, bad)
        with pytest.raises(ValueError, match="^k must be"):
            harmonics.harmonic_indices(3, bad)
        with pytest.raises(ValueError, match="^kmax must be"):
            harmonics.legendre_all(bad, 3, t)
        with pytest.raises(ValueError, match="^kmax must be"):
            harmonics.harmonic_energy(X[:, 0], X, bad)


def test_bad_dimension_raises():
    t = np.array([0.1])
    for bad in (1, 0, 2.0):
        with pytest.raises(ValueError, match="^d must be"):
            harmonics.legendre(2, bad, t)
        with pytest.raises(ValueError, match="^d must be"):
            harmonics.num_harmonics(bad, 2)
        with pytest.raises(ValueError, match="^d must be"):
            harmonics.harmonic_indices(bad, 2)
    with pytest.raises(ValueError, match="^X must have d >= 2"):
        harmonics.spherical_harmonics(np.ones((3, 1)), 1)


def test_bad_points_raise():
    X = sample_sphere(4, 3, rng=0)
    with pytest.raises(ValueError, match="^X must lie on the unit sphere"):
        harmonics.spherical_harmonics(2 * X, 1)
    with pytest.raises(ValueError, match="^X must lie on the unit sphere"):
        harmonics.spherical_harmonic(2 * X, (1, 0))
    with pytest.raises(ValueError, match="^X must be a 2-dimensional"):
        harmonics.spherical_harmonics(X[0], 1)
    nan = X.copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="^X contains 1 NaN"):
        harmonics.spherical_harmonics(nan, 1)
    with pytest.raises(ValueError, match="^X contains 1 NaN"):
        harmonics.harmonic_energy(X[:, 0], nan, 1)
    with pytest.raises(ValueError, match="^t must lie in"):
        harmonics.legendre(2, 3, np.array([1.5]))
    with pytest.raises(ValueError, match="^t contains 1 NaN"):
        harmonics.legendre_all(2, 3, np.array([0.0, np.nan]))


def test_legendre_refusal_says_how_far_t_lies_beyond_one():
    # The error gave the modulus of 1 + 2^-18 in float32 as "1" (:.6g), refusing a value it seemed to allow.
    t = np.array([0.5, 1 + 2.0**-18], dtype=np.float32)
    with pytest.raises(ValueError, match=r"^t must lie in \[-1, 1\], got a value of modulus 1\.0000038146972\d*, "
                                         r"3\.81e-06 beyond 1 \(clip"):
        harmonics.legendre(3, 5, t)


@pytest.mark.parametrize("dtype, d, slack", [(np.float64, 5, 1e-12), (np.float32, 784, 4 * 28 * 2.0**-23)])
def test_legendre_clips_t_within_its_slack_of_plus_minus_one_and_refuses_beyond(dtype, d, slack):
    # max(1e-12, 4 sqrt(d) eps): 1e-12 in float64 at d = 5, 4 * 28 ulps in float32 at d = 784. Within it, t is
    # clipped: P_{k,d}(+-1) = (+-1)^k to the recurrence's rounding (8 eps; unclipped, P_3 moves by P_3'(1) = 3k(k + d
    # - 2)/(d - 1) times the excess: 2e-12 and 2e-5, far above); at 1.2 times it, refused
    t = np.array([1 + 0.5 * slack, -1 - 0.5 * slack], dtype=dtype)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(harmonics.legendre(3, d, t), [1.0, -1.0], rtol=0, atol=8 * eps)
    for beyond in (1 + 1.2 * slack, -1 - 1.2 * slack):
        with pytest.raises(ValueError, match="^t must lie in"):
            harmonics.legendre(3, d, np.array([beyond], dtype=dtype))


@pytest.mark.parametrize("d", [3, 256, 784])
def test_legendre_takes_a_float32_gram_matrix_of_unit_vectors(d):
    # Its diagonal reaches 1 + 1 ulp at d = 3 and 1 + 7 ulps at d = 784 (MNIST's), which the float64 allowance
    # 1e-12 refused; up to 4 sqrt(d) ulps are clipped to 1. Reference: scipy's Gegenbauer polynomial C_3^{(d-2)/2},
    # normalised at 1, in float64 at the clipped t, to float32 rounding (k^2 eps32)
    from scipy.special import eval_gegenbauer

    X = sample_sphere(300, d, rng=0, dtype=np.float32)
    G = X @ X.T
    assert G.max() > 1
    P = harmonics.legendre(3, d, G)
    assert P.dtype == np.float32 and P.max() <= 1
    t = np.clip(G.astype(np.float64), -1, 1)
    ref = eval_gegenbauer(3, (d - 2) / 2, t) / eval_gegenbauer(3, (d - 2) / 2, 1.0)
    np.testing.assert_allclose(P, ref, rtol=0, atol=9 * 1e-6)


def test_bad_index_raises():
    X = sample_sphere(4, 4, rng=0)
    for bad in [(2, 1), (2, 1, 0, 0), (1, 2, 0), (2, 1, 2), (-2, 1, 0), (2, 0.5, 0), 3]:
        with pytest.raises(ValueError, match="^index"):
            harmonics.spherical_harmonic(X, bad)


def test_bad_energy_arguments_raise():
    X = sample_sphere(5, 3, rng=0)
    with pytest.raises(ValueError, match="^f_values has 4 values"):
        harmonics.harmonic_energy(X[:4, 0], X, 2)
    with pytest.raises(ValueError, match="^f_values must be a 1-dimensional"):
        harmonics.harmonic_energy(X, X, 2)
    with pytest.raises(ValueError, match="^weights must sum to 1"):
        harmonics.harmonic_energy(X[:, 0], X, 2, weights=np.ones(5))
    with pytest.raises(ValueError, match="^weights has 4 values"):
        harmonics.harmonic_energy(X[:, 0], X, 2, weights=np.ones(4) / 4)
    with pytest.raises(ValueError, match="^X must hold n >= 2"):
        harmonics.harmonic_energy(X[:1, 0], X[:1], 2)


def test_too_many_harmonics_raise_a_value_error_also_beyond_the_floats():
    # N(1000, 310) = C(1309, 999) - C(1307, 999) has 310 digits, beyond the largest float64: the refusal
    # still says how many (f"{N:.3g}" raised OverflowError: int too large to convert to float).
    N = math.comb(1309, 999) - math.comb(1307, 999)
    digits = str(N)
    shown = rf"{digits[0]}\.{digits[1:3]}e\+{len(digits) - 1}"
    X = sample_sphere(2, 1000, rng=0)
    with pytest.raises(ValueError, match=rf"N\(d, k\) = {shown} harmonics.*spherical_harmonic"):
        harmonics.spherical_harmonics(X, 310)
    with pytest.raises(ValueError, match=r"entries; evaluate chosen elements with spherical_harmonic"):
        harmonics.harmonic_indices(1000, 310)


def test_project_zonal_refuses_a_g_that_does_not_return_real_numbers():
    # A complex g has complex coefficients: casting its values to float64 dropped the imaginary part,
    # so exp(i t) gave the coefficients of cos t with only numpy's ComplexWarning. Strings and the like
    # are refused by name too.
    for g, dtype in ((lambda t: np.exp(1j * t), "complex128"), (lambda t: np.full(t.shape, "a"), "<U1")):
        with pytest.raises(ValueError, match=f"^g must return real numbers, got dtype {dtype}"):
            harmonics.project_zonal(g, 3, 2)


def test_too_many_harmonics_to_enumerate_raise():
    X = sample_sphere(2, 50, rng=0)
    with pytest.raises(ValueError, match="spherical_harmonic"):
        harmonics.spherical_harmonics(X, 150)
    with pytest.raises(ValueError, match="spherical_harmonic"):
        harmonics.harmonic_indices(50, 150)


@pytest.mark.parametrize("d", [1000, 5000, 10_000])
def test_project_zonal_relu_closed_form_in_high_dimension(d):
    # Bach 2017, App. D closed form (written here independently with log-gamma) against quadrature
    # in dimensions where (1 + t)^{(d-3)/2} is astronomically large on [0, 1].
    from scipy.special import gammaln

    kmax = 12
    mu = harmonics.project_zonal(lambda t: np.maximum(t, 0), d, kmax, breakpoints=(0,))
    for k in (0, 1, 2, 4, 10):  # the nonvanishing degrees: k = 0, 1 and even k
        x = 1 + (1 - k) / 2
        log_abs = gammaln(2) + gammaln(d / 2) - 2 * np.log(2) - gammaln(x) - gammaln((1 + k + d) / 2)
        sign = 1.0 if x > 0 or int(np.floor(x)) % 2 == 0 else -1.0
        assert mu[k] == pytest.approx(sign * np.exp(log_abs), rel=1e-10)
    assert np.abs(mu[3::2]).max() < 1e-14 * abs(mu[0])  # odd k >= 3 vanish


@pytest.mark.parametrize("sign", [1, -1])
def test_project_zonal_in_high_dimension_integrates_beyond_a_breakpoint_outside_the_window(sign):
    """g = 1{sign t > 1/2} in d = 1000, zero over the window |t| <= 13 / sqrt(d) = 0.41 where the rule used to stop:
    mu_0 = P(t > 1/2) = I_{3/4}((d - 1)/2, 1/2) / 2 (the regularised incomplete beta function) and
    mu_1 = sign int_{1/2}^1 t w_d(t) dt = sign c_d (3/4)^{(d-1)/2} / (d - 1), both about 1e-64 (they came out 0,
    without a warning). Within 1e-10 relative: 50 times the agreement measured (2e-12); log c_d as a difference of
    log-gammas costs d log(d) eps = 2e-12."""
    d, b = 1000, 0.5
    mu = harmonics.project_zonal(lambda t: (sign * t > b).astype(float), d, 1, breakpoints=[sign * b])
    mu0 = 0.5 * special.betainc(0.5 * (d - 1), 0.5, 1 - b * b)
    log_c = special.gammaln(0.5 * d) - special.gammaln(0.5 * (d - 1)) - 0.5 * math.log(math.pi)
    mu1 = sign * math.exp(log_c + 0.5 * (d - 1) * math.log1p(-b * b) - math.log(d - 1))
    np.testing.assert_allclose(mu, [mu0, mu1], rtol=1e-10, atol=0)


@pytest.mark.parametrize("d, c", [(200, 700), (2000, 300), (2000, 700), (10_000, 700)])
def test_project_zonal_in_high_dimension_follows_the_mass_of_g_w_d(d, c):
    # g(t) = exp(c t) moves the mass of g w_d to t ~ c / d, past 13 / sqrt(d) for c ~ sqrt(d) or more
    # (d = 2000, c = 700: near 0.32, past 0.29). Closed forms (DLMF 10.32.2 and 10.29.1), nu = d/2 - 1:
    # mu_0 = E[e^{ct}] = Gamma(nu + 1) (2/c)^nu I_nu(c), mu_1 = E[t e^{ct}] = Gamma(nu + 1) (2/c)^nu I_{nu+1}(c),
    # by mpmath. Quadrature at rounding: 1e-12 relative.
    mu = harmonics.project_zonal(lambda t: np.exp(c * t), d, 1)
    with mpmath.workdps(30):
        nu = mpmath.mpf(d) / 2 - 1
        front = mpmath.gamma(nu + 1) * (2 / mpmath.mpf(c)) ** nu
        ref = [float(front * mpmath.besseli(nu, c)), float(front * mpmath.besseli(nu + 1, c))]
    np.testing.assert_allclose(mu, ref, rtol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_legendre_recurrence_error_near_the_poles_is_the_documented_one(d):
    # legendre_all's notes: at most about 3e-12 at k = 1000 and 1e-9 at k = 10^4 near t = +-1,
    # 1e-16 at t = 1/2. References: mpmath's Chebyshev (d = 2) and Legendre (d = 3) polynomials.
    mpmath.mp.dps = 40
    reference = {2: mpmath.chebyt, 3: mpmath.legendre}[d]
    for k, near_poles in ((1000, 6e-12), (10_000, 2e-9)):
        for t in (1.0, 1 - 1e-12, 1 - 1e-8, -(1 - 1e-10)):
            error = abs(float(harmonics.legendre(k, d, np.array([t]))[0]) - float(reference(k, mpmath.mpf(t))))
            assert error <= near_poles, (k, t, error)
        assert abs(float(harmonics.legendre(k, d, np.array([0.5]))[0]) - float(reference(k, mpmath.mpf(0.5)))) <= 1e-15


@pytest.mark.parametrize("sign, scale", [(-1.0, 1.0), (1.0, 2.0**-600)])
def test_project_zonal_in_high_dimension_follows_the_mass_of_g_w_d_to_either_end_and_at_any_scale(sign, scale):
    # g(t) = scale exp(sign c t) at d = 2000, c = 700 (the mass of g w_d near sign 0.32, past the window's
    # end 13 / sqrt(d) = 0.29): the window widens toward -1 as toward +1, and whatever the size of g
    # (2^-600 puts g w_d near e^-300 everywhere). Closed forms as above (DLMF 10.32.2 and 10.29.1) with
    # P_{k,d}(-t) = (-1)^k P_{k,d}(t): mu_k = scale sign^k Gamma(nu + 1) (2/c)^nu I_{nu+k}(c), by mpmath.
    d, c = 2000, 700
    mu = harmonics.project_zonal(lambda t: scale * np.exp(sign * c * t), d, 1)
    with mpmath.workdps(30):
        nu = mpmath.mpf(d) / 2 - 1
        front = scale * mpmath.gamma(nu + 1) * (2 / mpmath.mpf(c)) ** nu
        ref = [float(front * mpmath.besseli(nu, c)), float(sign * front * mpmath.besseli(nu + 1, c))]
    np.testing.assert_allclose(mu, ref, rtol=1e-12)


def test_counts_beyond_the_floats_keep_their_leading_digits_where_log10_rounds_down():
    # The refusals write N(d, k) >= 10^300 from the exact integer; math.log10(10**512) is 511.99999999999994,
    # one below the decimal exponent. Reference: the digits of str(N) (values whose 4th digit is 0, where
    # truncating and rounding to three digits agree).
    for N in (10**300, 10**512, 10**1024, 123 * 10**700, 4560 * 10**509):
        digits = str(N)
        assert harmonics._format_count(N) == f"{digits[0]}.{digits[1:3]}e+{len(digits) - 1}", N


def test_bad_index_on_the_two_sphere_raises():
    # d = 3: kappa = (k_1, k_2) needs k_1 >= |k_2| (the chain is (k_1, |k_2|), as for d >= 4).
    X = sample_sphere(4, 3, rng=0)
    for bad in [(1, 2), (1, -2), (0, 1)]:
        with pytest.raises(ValueError, match="^index must satisfy"):
            harmonics.spherical_harmonic(X, bad)


def test_harmonic_energy_of_degree_zero_alone_is_the_squared_mean():
    # kmax = 0: E_0 = (E f)^2. U-statistic: sum_{i != j} f_i f_j / (n (n - 1)) by a nested loop; exact rule
    # (product rule with q = 4, exact to degree 7) for f = 1 + x_1^2 on S^2: E f = 4/3, E_0 = 16/9.
    X = sample_sphere(30, 4, rng=3)
    f = np.cos(2 * X[:, 0]) + X[:, 1]
    n = f.size
    ref = sum(f[i] * f[j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    E = harmonics.harmonic_energy(f, X, 0)
    assert E.shape == (1,)
    assert float(E[0]) == pytest.approx(ref, rel=1e-13)
    Xq, w = sphere_product_rule(3, 4)
    np.testing.assert_allclose(harmonics.harmonic_energy(1 + Xq[:, 0] ** 2, Xq, 0, weights=w), [16 / 9], rtol=1e-13)


def test_spherical_harmonic_in_d4_keeps_its_digits_where_s_to_the_b_underflows():
    # On S^3 at x = (t, 0, s, 0), Y_{k,(k,b,b)}(x) = A^(4)_{k,b}(t, s) A^(3)_{b,b}(0, 1) sqrt(2) with
    # A^(D)_{a,b}(t, s) = c_b^(D) s^b p_{a-b}^(b + (D-2)/2)(t) (Dai & Xu, Sec. 1.5), here by mpmath:
    # (c_b^(D))^2 = 1 / E_{w_D}[(1 - t^2)^b] = Gamma((D-1)/2) Gamma(b + D/2) / (Gamma(D/2) Gamma(b + (D-1)/2)),
    # p_m^(alpha) = C_m^alpha / h^(1/2), h = pi 2^(1-2 alpha) Gamma(m + 2 alpha) Gamma(alpha + 1)
    # / (m! (m + alpha) Gamma(alpha)^2 sqrt(pi) Gamma(alpha + 1/2)) (Szego 4.7.15 over the weight's mass).
    # s^b ~ 1e-392 lies below the normal numbers while Y is of order 1 (s near b / k); recurrences of
    # length k: 1e-10 relative, as on S^2.
    k, b, s = 2500, 1100, 0.44
    t = math.sqrt(1 - s * s)
    x = np.array([[t, 0.0, s, 0.0]])
    with mpmath.workdps(40):
        def c2(D):
            D = mpmath.mpf(D)
            return (mpmath.gamma((D - 1) / 2) * mpmath.gamma(b + D / 2)
                    / (mpmath.gamma(D / 2) * mpmath.gamma(b + (D - 1) / 2)))

        alpha, m = mpmath.mpf(b + 1), k - b
        h = (mpmath.pi * 2 ** (1 - 2 * alpha) * mpmath.gamma(m + 2 * alpha) * mpmath.gamma(alpha + 1)
             / (mpmath.factorial(m) * (m + alpha) * mpmath.gamma(alpha) ** 2 * mpmath.sqrt(mpmath.pi)
                * mpmath.gamma(alpha + mpmath.mpf(1) / 2)))
        p = mpmath.gegenbauer(m, alpha, mpmath.mpf(t)) / mpmath.sqrt(h)
        ref = float(mpmath.sqrt(2 * c2(4) * c2(3)) * mpmath.mpf(s) ** b * p)
    assert abs(ref) > 0.1
    np.testing.assert_allclose(harmonics.spherical_harmonic(x, (k, b, b)), [ref], rtol=1e-10)


def test_harmonic_energy_with_quadrature_weights_is_never_below_zero():
    # a quadratic form of the positive semidefinite matrix P_{k,d}(<x_i, x_j>): -3.5e-20 from rounding was returned,
    # which f2_norm_from_harmonics refuses; here f is a degree-2 polynomial, its energies of degree 1 and >= 3 zero
    from shallow.harmonics import harmonic_energy
    from shallow.sphere import sphere_quadrature

    X, w = sphere_quadrature(8, 3)
    E = harmonic_energy(X[:, 0] * X[:, 1], X, 6, weights=w)
    assert np.all(E >= 0) and E[1] <= 1e-16 and np.all(E[3:] <= 1e-16)
    assert E[2] == pytest.approx(1 / 15, rel=1e-13)  # E[x_1^2 x_2^2] = 1 / (d (d + 2))


def test_spherical_harmonics_called_with_the_degree_first_says_the_order():
    from shallow.harmonics import spherical_harmonics

    X = np.eye(3)
    with pytest.raises(ValueError, match=r"points first and the degree second: spherical_harmonics\(X, k\)"):
        spherical_harmonics(2, X)


@pytest.mark.parametrize("d", [10**4, 2 * 10**5])
def test_spherical_harmonic_of_degree_one_in_huge_dimension_is_sqrt_d_times_a_coordinate(d):
    # Y_{(1, 1, 0, ..., 0)}(x) = c_1 s_1 sqrt(d - 1) t_2 = sqrt(d) x_2, the degree-1 harmonic of unit norm in
    # L2(tau_d) (E[x_2^2] = 1/d). The constant c_1 = (d / (d - 1))^(1/2) came from a sum of four log-gammas of
    # size d log d: 5e-12 off at d = 10^4, 2e-11 at 10^5, 6e-10 at 10^6. Tolerance 1e-13: s_1 and t_2 divide radii
    # that are cumulative sums of d squares, rounded to about sqrt(d) eps (5e-14 at d = 2 10^5)
    X = sample_sphere(3, d, rng=5)
    y = harmonics.spherical_harmonic(X, (1, 1) + (0,) * (d - 3))
    np.testing.assert_allclose(y, math.sqrt(d) * X[:, 1], rtol=1e-13, atol=0)


# ---------------------------------------------------------------------------------------------
# The evaluation plans of spherical_harmonics, and harmonic_energy by projection on the basis
# ---------------------------------------------------------------------------------------------

def points_with_poles(d, n, seed):
    """n uniform points of S^{d-1}, then +-e_1 (every t_i, s_i beyond the first level 0/0) and e_{d-2}
    (the last Gegenbauer level at its pole) and a point 1e-9 from e_1."""
    X = sample_sphere(n, d, rng=seed)
    E = np.eye(d)
    near = E[0] + 1e-9 * E[d - 1]
    return np.vstack([X, E[0], -E[0], E[d - 2], near / np.linalg.norm(near)])


@pytest.mark.parametrize("d, k", [(3, 7), (4, 5), (5, 4), (6, 3), (8, 3)])
def test_every_evaluation_plan_gives_the_basis_of_the_addition_theorem_and_of_spherical_harmonic(d, k, xp,
                                                                                                 monkeypatch):
    # Statement: whatever the number L of top levels run depth first (0: the prefixes level by level),
    # spherical_harmonics is the product basis: (1) sum_j Y_kj(x) Y_kj(y) = N(d, k) P_{k,d}(<x, y>), P from
    # scipy; (2) each column equals spherical_harmonic at its multi-index (one factor at a time, its own
    # recurrences). Entries are at most sqrt(N) in size, products N: rounding 1e-13 N and 1e-13 sqrt(N).
    X = points_with_poles(d, 20, seed=10 * d + k)
    N = harmonics.num_harmonics(d, k)
    ref = np.stack([harmonics.spherical_harmonic(X, kappa) for kappa in harmonics.harmonic_indices(d, k).tolist()],
                   axis=1)  # (n, N)
    for L in range(d - 1):
        monkeypatch.setattr(harmonics, "_fused_levels", lambda *args, L=L: L)
        Y = to_numpy(harmonics.spherical_harmonics(xp.asarray(X), k))
        assert Y.shape == (X.shape[0], N)
        np.testing.assert_allclose(Y @ Y.T, N * scipy_legendre(k, d, gram(X)), rtol=0, atol=1e-13 * N, err_msg=f"L={L}")
        np.testing.assert_allclose(Y, ref, rtol=0, atol=1e-13 * np.sqrt(N), err_msg=f"L={L}")


@pytest.mark.parametrize("d, k", [(5, 4), (6, 4), (8, 3)])
def test_spherical_harmonics_orthonormal_under_a_rule_exact_for_degree_2k(d, k):
    # int Y_{k,a} Y_{k,b} dtau_d = [a = b], the product rule of shallow.sphere (1125 to 28672 points) being exact
    # for degree 2k; at these sizes the default plan runs 2 to 4 levels depth first. Rounding of sums of
    # about 10^4 products of size <= N(d, k): 1e-12.
    from shallow.sphere import sphere_quadrature

    X, w = sphere_quadrature(2 * k, d)
    Y = harmonics.spherical_harmonics(X, k)
    np.testing.assert_allclose(Y.T @ (w[:, None] * Y), np.eye(harmonics.num_harmonics(d, k)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3, 4, 6])
def test_harmonic_energy_by_harmonics_equals_the_sum_over_pairs(d):
    # Statement (addition theorem): N(d, k) sum_{i,j} g_i g_j P_{k,d}(<x_i, x_j>) = sum_j (sum_i g_i Y_kj(x_i))^2
    # for any points and weights (here random, not a quadrature). Both are sums of terms bounded by
    # N(d, k) (sum_i |g_i|)^2: rounding 1e-13 times that.
    rng = np.random.default_rng(d)
    X = sample_sphere(200, d, rng=rng)
    w = rng.uniform(0.5, 1.5, 200)
    w /= w.sum()
    f = rng.standard_normal(200)
    kmax = 5
    pairs = harmonics.harmonic_energy(f, X, kmax, weights=w, method="pairs")
    by_harmonics = harmonics.harmonic_energy(f, X, kmax, weights=w, method="harmonics", block_size=33)
    bound = np.array([harmonics.num_harmonics(d, k) for k in range(kmax + 1)]) * np.abs(w * f).sum() ** 2
    np.testing.assert_allclose(by_harmonics, pairs, rtol=0, atol=1e-13 * bound.max())


@pytest.mark.parametrize("d", [3, 4])
@pytest.mark.parametrize("method", [None, "pairs", "harmonics"])
def test_harmonic_energy_of_products_of_distinct_coordinates_closed_form(d, method):
    # x_1 x_2 ... x_j is a degree-j harmonic with E[x_1^2 ... x_j^2] = 1 / (d (d + 2) ... (d + 2j - 2)), so
    # f = 2 - x_1 + 3 x_1 x_2 + 5 x_1 x_2 x_3 has E = (4, 1/d, 9/(d(d+2)), 25/(d(d+2)(d+4)), 0, 0, 0) on a rule exact
    # for degree deg f + kmax = 9 (shallow.sphere.sphere_quadrature). Rounding: 1e-13.
    from shallow.sphere import sphere_quadrature

    X, w = sphere_quadrature(9, d)
    f = 2 - X[:, 0] + 3 * X[:, 0] * X[:, 1] + 5 * X[:, 0] * X[:, 1] * X[:, 2]
    E = harmonics.harmonic_energy(f, X, 6, weights=w, method=method)
    expected = [4, 1 / d, 9 / (d * (d + 2)), 25 / (d * (d + 2) * (d + 4)), 0, 0, 0]
    np.testing.assert_allclose(E, expected, rtol=0, atol=1e-13)


def test_harmonic_energy_method_is_checked():
    X = sample_sphere(10, 3, rng=0)
    with pytest.raises(ValueError, match="method must be None, 'pairs' or 'harmonics', got 'fast'"):
        harmonics.harmonic_energy(X[:, 0], X, 2, weights=np.full(10, 0.1), method="fast")
    with pytest.raises(ValueError, match="method='harmonics' needs quadrature weights"):
        harmonics.harmonic_energy(X[:, 0], X, 2, method="harmonics")


def test_harmonic_energy_by_harmonics_refuses_a_basis_too_large_to_enumerate():
    # sum_(k <= kmax) N(d, k) = N(d + 1, kmax) harmonics at each point, beyond the cap spherical_harmonics keeps
    # (N(d, k) <= 10^8): N(31, 10) = C(40, 10) + C(39, 9) = 1.06e9 in d = 30 (8.5 GB for a single point, which
    # method='harmonics' went on to allocate). The default (method=None) sums over the pairs there.
    X = sample_sphere(3, 30, rng=0)
    w = np.full(3, 1 / 3)
    assert math.comb(40, 10) + math.comb(39, 9) > 10**8
    with pytest.raises(ValueError, match=r"method='harmonics' with kmax=10 in d=30 evaluates .* too many"):
        harmonics.harmonic_energy(X[:, 0], X, 10, weights=w, method="harmonics")
    E = harmonics.harmonic_energy(X[:, 0], X, 10, weights=w)  # by pairs
    assert E.shape == (11,) and np.all(np.isfinite(E))


@pytest.mark.parametrize("lam", [-0.3, 0.0, 0.5, 1.0, 3.5, 40.0])
def test_gegenbauer_matches_scipy(lam, xp):
    # scipy.special.eval_gegenbauer (its own evaluation) at degrees 0..30 on [-1.2, 1.2] (the polynomial beyond
    # [-1, 1] too): rounding of the recurrence, 1e-12 of the largest value over the grid at each degree. At
    # lambda = 0 the generating function (1 - 2 t r + r^2)^0 = 1 gives C_0 = 1 and C_k = 0 for k >= 1 (DLMF 18.3),
    # the reference there: scipy changed its C_0^0 from 1 (1.17) to 0 (1.18).
    from scipy.special import eval_gegenbauer

    t = np.linspace(-1.2, 1.2, 41)
    for k in range(31):
        expected = eval_gegenbauer(k, lam, t) if lam != 0 else np.full_like(t, float(k == 0))
        got = to_numpy(harmonics.gegenbauer(k, lam, xp.asarray(t)))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * max(np.abs(expected).max(), 1), err_msg=k)


@pytest.mark.parametrize("d", [3, 4, 7])
def test_legendre_is_gegenbauer_normalised_at_one(d):
    # P_{k,d}(t) = C_k^lam(t) / C_k^lam(1), lam = (d - 2) / 2, C_k^lam(1) = (2 lam)_k / k! (scipy's poch): 1e-13
    from scipy.special import poch

    t = np.linspace(-1, 1, 33)
    lam = (d - 2) / 2
    for k in range(12):
        C1 = poch(2 * lam, k) / math.factorial(k)
        np.testing.assert_allclose(harmonics.gegenbauer(k, lam, t) / C1, harmonics.legendre(k, d, t), rtol=0,
                                   atol=1e-13)


def test_gegenbauer_keeps_float32_and_refuses_a_parameter_out_of_range():
    assert harmonics.gegenbauer(5, 1.0, np.float32([0.1, 0.7])).dtype == np.float32
    for k in (0, 1, 3):  # a 0-d array for a scalar t, as legendre
        value = harmonics.gegenbauer(k, 1.0, 0.5)
        assert isinstance(value, np.ndarray) and value.shape == ()
    for lam in (-0.5, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="lam must be a finite number > -1/2"):
            harmonics.gegenbauer(2, lam, np.array([0.1]))
