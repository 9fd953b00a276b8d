"""S^{d-1}: sampling, area, the law of <x, e>, Gauss quadrature against w_d, and the lift."""

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import factorial2

from shallow import sphere

DIMS = [2, 3, 5, 11, 50]


def even_moment(j, d):
    """E[t^{2j}] for t = <x, e>, x ~ tau_d: (2j - 1)!! / (d (d + 2) ... (d + 2j - 2)) (closed form)."""
    return factorial2(2 * j - 1, exact=True) / np.prod([d + 2 * i for i in range(j)]) if j else 1.0


@pytest.mark.parametrize("d", DIMS)
def test_sample_sphere_rows_have_unit_norm(d):
    X = sphere.sample_sphere(100, d, rng=0)
    assert X.shape == (100, d)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=4 * np.finfo(float).eps)


@pytest.mark.parametrize("d", [2, 3, 7])
def test_sample_sphere_second_moment_is_identity_over_d(d):
    # E[x x^T] = I / d; each entry is a mean of N terms bounded by 1: 5 sigma <= 5 / sqrt(N).
    N = 40_000
    X = sphere.sample_sphere(N, d, rng=1)
    np.testing.assert_allclose(X.T @ X / N, np.eye(d) / d, atol=5 / np.sqrt(N))


def test_sample_sphere_same_seed_same_points_and_dtype():
    a = sphere.sample_sphere(5, 4, rng=3, dtype=np.float32)
    b = sphere.sample_sphere(5, 4, rng=np.random.default_rng(3), dtype=np.float32)
    assert a.dtype == np.float32 and np.array_equal(a, b)


@pytest.mark.parametrize("d, area", [(2, 2 * np.pi), (3, 4 * np.pi), (4, 2 * np.pi**2), (5, 8 * np.pi**2 / 3)])
def test_sphere_area_closed_forms(d, area):
    assert sphere.sphere_area(d) == pytest.approx(area, rel=1e-14)


def test_sphere_area_is_correctly_rounded_in_every_dimension():
    """|S^{d-1}| = 2 pi^{d/2} / Gamma(d/2) (DLMF 5.19.4 for the volume of the ball, times d), by mpmath at 50
    digits, then rounded once: equal to the last bit for d = 2..500, subnormals and underflow to 0 included
    (exp(d/2 log pi - log Gamma(d/2)) was 3e-14 off at d = 100, 2e-13 at d = 400)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(50):
        expected = [float(2 * mpmath.pi ** mpmath.mpf(d / 2) / mpmath.gamma(mpmath.mpf(d) / 2)) for d in range(2, 501)]
    assert [sphere.sphere_area(d) for d in range(2, 501)] == expected


@pytest.mark.parametrize("d", DIMS + [1000])
def test_inner_product_density_integrates_to_one(d):
    value, _ = integrate.quad(lambda t: float(sphere.inner_product_density(np.array(t), d)), -1, 1, limit=200)
    assert value == pytest.approx(1, rel=1e-8)


@pytest.mark.parametrize("d", DIMS)
def test_inner_product_density_second_moment_is_one_over_d(d):
    value, _ = integrate.quad(lambda t: t * t * float(sphere.inner_product_density(np.array(t), d)), -1, 1, limit=200)
    assert value == pytest.approx(1 / d, rel=1e-8)


def test_inner_product_density_is_uniform_for_d3_archimedes():
    t = np.linspace(-0.99, 0.99, 7)
    np.testing.assert_allclose(sphere.inner_product_density(t, 3), 0.5, rtol=1e-14)


def test_inner_product_density_is_arcsine_law_for_circle():
    t = np.linspace(-0.99, 0.99, 7)
    np.testing.assert_allclose(sphere.inner_product_density(t, 2), 1 / (np.pi * np.sqrt(1 - t**2)), rtol=1e-13)


@pytest.mark.parametrize("d", [2, 3, 10])
def test_sample_inner_product_has_the_law_of_a_projected_uniform_point(d):
    # Two-sample Kolmogorov-Smirnov against <x, e_1> of independent uniform points; fixed seeds.
    t = sphere.sample_inner_product(4000, d, rng=5)
    ref = sphere.sample_sphere(4000, d, rng=6)[:, 0]
    assert stats.ks_2samp(t, ref).pvalue > 1e-3


@pytest.mark.parametrize("d", [2, 3, 4, 9, 100])
@pytest.mark.parametrize("q", [1, 3, 8])
def test_gegenbauer_quadrature_exact_up_to_degree_2q_minus_1(d, q):
    t, w = sphere.gegenbauer_quadrature(q, d)
    assert w.sum() == pytest.approx(1, rel=1e-14) and (w > 0).all() and np.all(np.diff(t) > 0)
    for j in range(q):  # even degrees 2j <= 2q - 2; odd moments vanish by symmetry
        assert w @ t ** (2 * j) == pytest.approx(even_moment(j, d), rel=1e-12)
        assert abs(w @ t ** (2 * j + 1)) < 1e-14


@pytest.mark.parametrize("d", [2, 3, 6])
def test_gegenbauer_quadrature_not_exact_at_degree_2q(d):
    # Gauss rules are exact to degree 2q - 1 and no further: the t^{2q} moment must be off.
    q = 3
    t, w = sphere.gegenbauer_quadrature(q, d)
    assert abs(w @ t ** (2 * q) - even_moment(q, d)) > 1e-6


def test_lift_maps_to_upper_hemisphere_of_next_sphere():
    X = np.random.default_rng(0).normal(size=(20, 3)) * 5
    Z = sphere.lift(X)
    assert Z.shape == (20, 4)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, rtol=1e-15, atol=1e-15)
    assert (Z[:, -1] > 0).all()


def test_lift_turns_a_biased_relu_into_a_homogeneous_one():
    # relu(<w, x> + b) = |(x, 1)| relu(<(w, b), lift(x)>) (Bach 2017, Sec. 2).
    rng = np.random.default_rng(1)
    X, w, b = rng.normal(size=(30, 4)), rng.normal(size=4), rng.normal()
    lhs = np.maximum(X @ w + b, 0)
    rhs = np.sqrt(1 + (X**2).sum(1)) * np.maximum(sphere.lift(X) @ np.append(w, b), 0)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("call, match", [
    (lambda: sphere.sample_sphere(3, 1), "d must be an integer >= 2"),
    (lambda: sphere.sample_sphere(-1, 3), "n must be an integer >= 0"),
    (lambda: sphere.sample_sphere(2.5, 3), "n must be an integer"),
    (lambda: sphere.gegenbauer_quadrature(0, 3), "q must be an integer >= 1"),
    (lambda: sphere.inner_product_density(np.array([np.nan]), 3), "t contains NaN"),
    (lambda: sphere.lift(np.ones(3)), "X must be a 2-dimensional array"),
    (lambda: sphere.lift(np.array([[np.nan, 1.0]])), "X contains 1 NaN"),
    (lambda: sphere.sample_sphere(3, 2, rng="seed"), "rng must be None, a non-negative int seed, a non-empty list"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("d", [1000, 10_000])
def test_gegenbauer_quadrature_exact_in_high_dimension(d):
    # scipy's roots_jacobi breaks down at d = 10^4, q = 200: the rule must still integrate moments.
    q = 200
    t, w = sphere.gegenbauer_quadrature(q, d)
    assert np.isfinite(t).all() and np.isfinite(w).all()
    for j in (1, 2, 5):
        assert w @ t ** (2 * j) == pytest.approx(even_moment(j, d), rel=1e-12)


@pytest.mark.parametrize("a, b", [(0.5, 0.0), (-0.5, -0.5), (3.5, 0.0), (0.0, 7.0), (1.5, 1.5)])
def test_golub_welsch_jacobi_rule_matches_scipy(a, b):
    from scipy import special

    q = 20
    t, log_w = sphere._golub_welsch_jacobi(q, a, b)
    t_ref, w_ref = special.roots_jacobi(q, a, b)
    np.testing.assert_allclose(t, t_ref, atol=1e-14)
    np.testing.assert_allclose(np.exp(log_w), w_ref, rtol=1e-11, atol=1e-14 * w_ref.max())


@pytest.mark.parametrize("a", [2498.5, 4998.5])
def test_gauss_jacobi_total_mass_in_high_dimension(a):
    # int (1 - u)^a du = 2^{a+1} / (a + 1): overflows as a number, not as a logarithm.
    _, log_w = sphere.gauss_jacobi(72, a, 0.0)
    log_mass = np.logaddexp.reduce(log_w)
    assert log_mass == pytest.approx((a + 1) * np.log(2) - np.log(a + 1), rel=1e-13)


@pytest.mark.parametrize("sampler", [sphere.sample_sphere, sphere.sample_inner_product])
@pytest.mark.parametrize("dtype", [int, complex, "foo"])
def test_samplers_reject_a_dtype_other_than_float32_or_float64(sampler, dtype):
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        sampler(3, 3, dtype=dtype)


def test_sample_sphere_rejects_a_negative_seed():
    with pytest.raises(ValueError, match="rng must be a non-negative int seed, got -1"):
        sphere.sample_sphere(3, 3, rng=-1)


@pytest.mark.parametrize("q", [0, -1, 2.5])
def test_gauss_jacobi_rejects_a_nonpositive_or_fractional_number_of_nodes(q):
    with pytest.raises(ValueError, match="q must be an integer >= 1"):
        sphere.gauss_jacobi(q, 0.0, 0.0)


@pytest.mark.parametrize("name, a, b", [("a", -1.0, 0.0), ("b", 0.0, -2.0), ("a", float("nan"), 0.0),
                                        ("b", 0.0, float("inf")), ("a", "x", 0.0)])
def test_gauss_jacobi_rejects_exponents_that_are_not_finite_numbers_above_minus_one(name, a, b):
    with pytest.raises(ValueError, match=f"{name} must be a finite number > -1"):
        sphere.gauss_jacobi(3, a, b)


def test_lift_rejects_a_ragged_array():
    with pytest.raises(ValueError, match="X must be a rectangular array of numbers"):
        sphere.lift([[1.0, 2.0], [3.0]])


def test_inner_product_density_rejects_a_string():
    with pytest.raises(ValueError, match="t must be an array of real numbers, got str"):
        sphere.inner_product_density("a", 3)


def test_inner_product_constant_is_the_gamma_ratio_in_any_dimension():
    """c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)) to 1e-14 against mpmath, up to d = 10^8 (two log-gammas
    of size d log d, subtracted, lose d log(d) eps: 4e-9 at d = 10^8)."""
    import mpmath as mp
    with mp.workdps(50):
        for d in [2, 3, 7, 20, 21, 93, 300, 10**4, 19790, 10**6, 10**8 + 1]:
            expected = mp.gamma(mp.mpf(d) / 2) / (mp.sqrt(mp.pi) * mp.gamma(mp.mpf(d - 1) / 2))
            assert np.exp(sphere.log_inner_product_constant(d)) == pytest.approx(float(expected), rel=1e-14), d


@pytest.mark.parametrize("d", [2, 4, 5, 10])
def test_inner_product_density_is_accurate_near_the_poles(d):
    """w_d(t) = c_d (1 - t^2)^{(d-3)/2} to 1e-13 relative against mpmath at t = +-(1 - 10^-j): 1 - t * t
    cancels there (1e-8 relative error at d = 10), (1 - t)(1 + t) does not."""
    import mpmath as mp
    t = np.concatenate([1 - 10.0 ** -np.arange(3, 16), -1 + 10.0 ** -np.arange(3, 16)])  # exact floats near +-1
    values = sphere.inner_product_density(t, d)
    with mp.workdps(50):
        c = mp.gamma(mp.mpf(d) / 2) / (mp.sqrt(mp.pi) * mp.gamma(mp.mpf(d - 1) / 2))
        expected = [float(c * (1 - mp.mpf(float(s)) ** 2) ** (mp.mpf(d - 3) / 2)) for s in t]
    np.testing.assert_allclose(values, expected, rtol=1e-13)


@pytest.mark.parametrize("a, b", [(-0.5, 0.0), (0.0, -0.5)])
def test_gauss_jacobi_with_an_inverse_square_root_weight_keeps_its_digits_at_large_q(a, b):
    # The weights (1 -+ u)^(-1/2) of project_zonal's pieces on the circle (d = 2): scipy's
    # roots_jacobi gave 2.6e-10 relative at q = 2032 (3.5e-9 at 8032) where its other exponents
    # keep about 1e-12. Reference: mpmath's tanh-sinh quadrature, which takes the endpoint singularity.
    import mpmath

    with mpmath.workdps(30):
        ref = float(mpmath.quad(lambda u: mpmath.cos(7 * u + 1) * (1 - u) ** a * (1 + u) ** b, [-1, 1]))
    nodes, log_weights = sphere.gauss_jacobi(2032, a, b)
    assert np.all(np.diff(nodes) > 0)
    assert np.exp(log_weights) @ np.cos(7 * nodes + 1) == pytest.approx(ref, rel=2e-11)


def test_log_gamma_ratio_is_accurate_to_a_few_eps_on_both_sides_of_its_stirling_threshold():
    """log(Gamma(x + t) / Gamma(x)) within 4 eps (relative, or absolute below 1) of mpmath, for x + min(t, 0)
    just below and above 10, where the function switches from log-gammas to Stirling's series, and far above."""
    import mpmath as mp
    eps = np.finfo(float).eps
    with mp.workdps(40):
        for x in [9.5, 10.0, 10.25, 11.0, 12.5, 20.0, 1e3, 1e8]:
            for t in [0.5, -0.5, 1.5, -9.0, 3.0]:
                expected = float(mp.loggamma(mp.mpf(x) + t) - mp.loggamma(mp.mpf(x)))
                assert abs(sphere._log_gamma_ratio(x, t) - expected) <= 4 * eps * max(1.0, abs(expected)), (x, t)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_inner_product_density_is_the_scaled_beta_law_at_and_beyond_the_poles(d):
    """t = 2 B - 1 with B ~ Beta((d-1)/2, (d-1)/2), so w_d(t) = p_B((1 + t)/2) / 2: zero outside [-1, 1], and at
    t = +-1 the limit of c_d (1 - t^2)^{(d-3)/2}: inf for d = 2, 1/2 for d = 3, 0 above (scipy's beta pdf)."""
    t = np.array([-3.0, -1.5, -1.0, -1 + 2.0**-30, 0.3, 1 - 2.0**-30, 1.0, 1.5, 3.0])
    half = 0.5 * (d - 1)
    expected = stats.beta.pdf((1 + t) / 2, half, half) / 2
    np.testing.assert_allclose(sphere.inner_product_density(t, d), expected, rtol=1e-12)


def test_sample_inner_product_of_no_points_is_empty():
    t = sphere.sample_inner_product(0, 4, rng=0)
    assert t.shape == (0,) and t.dtype == np.float64


@pytest.mark.parametrize("dtype, scale", [(np.float64, 1e200), (np.float32, 1e30)])
def test_lift_of_points_whose_squared_norm_overflows_is_their_direction(dtype, scale):
    # |(x, 1)|^2 overflowed and lift returned the zero row, which is not on the sphere
    X = np.array([[3.0, -4.0]]) * scale  # (1, 2)
    Z = sphere.lift(X.astype(dtype))
    # (x, 1) / |(x, 1)| = (x / |x|, 1 / |x|) to within rounding: (0.6, -0.8, 0.2 / scale)
    np.testing.assert_allclose(Z[0, :2], [0.6, -0.8], rtol=4 * np.finfo(dtype).eps)
    assert Z.dtype == dtype and 0 < Z[0, 2] < 1e-20


def test_gauss_jacobi_rejects_exponents_whose_recurrence_overflows():
    # a = 1e300 failed inside numpy with "array must not contain infs or NaNs"
    with pytest.raises(ValueError, match=r"a \+ b must be at most 1e150"):
        sphere.gauss_jacobi(4, 1e300, 0.0)


@pytest.mark.parametrize("d", [2, 3, 4, 5])
@pytest.mark.parametrize("degree", [7, 8])
def test_sphere_quadrature_integrates_every_monomial_of_its_degree_to_the_moment_of_the_sphere(d, degree):
    # E[prod x_i^{2 h_i}] = Gamma(d/2) / Gamma(d/2 + |h|) prod Gamma(h_i + 1/2) / Gamma(1/2) under tau_d, and 0 for a
    # monomial with an odd exponent; every multi-index of total degree <= degree
    import itertools

    from shallow.sphere import sphere_quadrature

    X, w = sphere_quadrature(degree, d)
    assert X.shape == ((degree + 1) * (degree // 2 + 1) ** (d - 2), d) and np.all(w > 0)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=0, atol=4e-16)
    for a in itertools.product(range(degree + 1), repeat=d):
        if sum(a) > degree:
            continue
        if any(x % 2 for x in a):
            ref = 0.0
        else:
            h = [x // 2 for x in a]
            ref = math.gamma(d / 2) / math.gamma(d / 2 + sum(h)) * math.prod(
                math.gamma(x + 0.5) / math.gamma(0.5) for x in h)
        assert abs(w @ np.prod(X ** np.array(a), axis=1) - ref) <= 1e-15


def test_harmonic_energy_with_a_sphere_rule_is_exact_for_a_polynomial():
    # x_1^3 = 3 x_1 / (d + 2) + (x_1^3 - 3 x_1 / (d + 2)), a degree-1 and a degree-3 harmonic: E_1 = 9 / (d (d + 2)^2),
    # E_3 = E[x_1^6] - E_1 = 15 / (d (d + 2)(d + 4)) - E_1, and 0 elsewhere; the rule of degree 3 + kmax makes the
    # quadrature sums of harmonic_energy exact
    from shallow.harmonics import harmonic_energy
    from shallow.sphere import sphere_quadrature

    d, kmax = 4, 5
    X, w = sphere_quadrature(3 + kmax, d)
    E1 = 9 / (d * (d + 2) ** 2)
    ref = [0, E1, 0, 15 / (d * (d + 2) * (d + 4)) - E1, 0, 0]
    np.testing.assert_allclose(harmonic_energy(X[:, 0] ** 3, X, kmax, weights=w), ref, rtol=0, atol=1e-15)


def test_sphere_quadrature_refuses_a_rule_of_too_many_points():
    from shallow.sphere import sphere_quadrature

    with pytest.raises(ValueError, match=r"a rule of degree 40 on S\^9 has .* points, more than max_points=10000000"):
        sphere_quadrature(40, 10)
    with pytest.raises(ValueError, match="degree must be an integer >= 0"):
        sphere_quadrature(-1, 3)


def test_sample_inner_product_returns_the_dtype_asked_for():
    # float32 is the float64 draw of the same seed, rounded once (the draw happens on the host in float64).
    t32 = sphere.sample_inner_product(50, 4, rng=7, dtype=np.float32)
    t64 = sphere.sample_inner_product(50, 4, rng=7)
    assert t32.dtype == np.float32 and t64.dtype == np.float64
    np.testing.assert_array_equal(t32, t64.astype(np.float32))


def test_inner_product_density_keeps_the_dtype_of_t():
    # at the poles and beyond as well as inside: float32 t gives float32 densities, within 4 float32 eps of the
    # float64 values of the closed form (arcsine law at d = 2, 1/2 at d = 3, c_d (1 - t^2)^{(d-3)/2} at d = 5,
    # c_5 = 3/4), the same edge values (inf, 1/2, 0) and 0 outside [-1, 1]
    t = np.array([-1.5, -1.0, -0.5, 0.0, 0.25, 1.0], dtype=np.float32)
    inside = np.abs(t.astype(np.float64)) < 1
    s = np.where(inside, t.astype(np.float64), 0.0)
    for d, dens, edge in [(2, 1 / (np.pi * np.sqrt(1 - s * s)), np.inf), (3, 0.5 + 0 * s, 0.5),
                          (5, 0.75 * (1 - s * s), 0.0)]:
        ref = np.where(inside, dens, np.where(np.abs(t) == 1, edge, 0.0))
        value = sphere.inner_product_density(t, d)
        assert value.dtype == np.float32, d
        np.testing.assert_allclose(value, ref, rtol=4 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("d, q", [(1000, 1000), (10**5, 100)])
def test_gauss_jacobi_rule_of_high_dimension_integrates_the_highest_even_powers(d, q):
    # Where scipy's roots_jacobi gives NaN (a = (d - 3)/2 = 498.5 at q = 1000), the rule is computed from the Jacobi
    # matrix. Its small outer weights came from the eigenvectors to eps of the largest only: the moment of t^1998 was
    # 1e+263 times too large. Expected: E[t^(2j)] = (2j - 1)!! / (d (d + 2) ... (d + 2j - 2)) under w_d, by mpmath
    # (below the floats: compared as logarithms). Tolerance 1e-12 on the logarithm: the nodes' rounding, an ulp,
    # moves t^(2j) by 2j ulps relative (4e-13 at j = 999)
    import mpmath

    a = 0.5 * (d - 3)
    u, log_w = sphere.gauss_jacobi(q, a, a)
    log_mass = np.logaddexp.reduce(log_w)
    for j in (q // 4, q // 2, q - 1):
        with np.errstate(divide="ignore"):
            got = np.logaddexp.reduce(log_w + 2 * j * np.log(np.abs(u))) - log_mass
        with mpmath.workdps(30):
            expected = float(mpmath.fsum(mpmath.log(mpmath.mpf(2 * i + 1) / (d + 2 * i)) for i in range(j)))
        assert got == pytest.approx(expected, rel=0, abs=1e-12)


@pytest.mark.parametrize("q, a, b", [(100, 5e4, 5e4), (100, 5e4, 3e4), (300, 3000.0, 0.0)])
def test_gauss_jacobi_weights_of_high_dimension_sum_to_the_mass_of_the_jacobi_weight(q, a, b):
    # sum_i w_i = int_{-1}^1 (1 - u)^a (1 + u)^b du = 2^{a+b+1} B(a + 1, b + 1) (degree 0, exact for the rule), by
    # mpmath. Where scipy's rule breaks down the mass came from four log-gammas of size a log a: log mu_0 1.3e-10
    # off at a = b = 5e4 (where it is -4.8), 5e-11 at (5e4, 3e4). Tolerance: 16 eps of max(1, |log mu_0|), the
    # rounding of a logarithm of that size and of the sum of the weights (math.fsum of their exponentials)
    import mpmath

    _, log_w = sphere.gauss_jacobi(q, a, b)
    top = log_w.max()
    got = top + math.log(math.fsum(np.exp(log_w - top)))
    with mpmath.workdps(30):
        expected = float((a + b + 1) * mpmath.log(2) + mpmath.log(mpmath.beta(mpmath.mpf(a) + 1, mpmath.mpf(b) + 1)))
    assert got == pytest.approx(expected, rel=0, abs=16 * np.finfo(float).eps * max(1.0, abs(expected)))
