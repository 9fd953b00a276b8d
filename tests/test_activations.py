"""Tests for shallow.activations: one test per mathematical statement.

Expected values come from independent computations: the defining formulas typed again with
numpy/scipy, central finite differences, scipy.integrate.quad (QUADPACK with algebraic end-point
weights) for Funk-Hecke integrals, and scipy's Gegenbauer/Chebyshev polynomials.
"""

import math
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from shallow.activations import ACTIVATIONS, Activation, as_activation, funk_hecke, get_activation

# The definitions, typed again (float64, numpy/scipy), as the oracle for values.
REFERENCE = {
    "relu": lambda z: np.maximum(z, 0.0),
    "step": lambda z: np.where(z > 0, 1.0, 0.0),
    "abs": np.abs,
    "quadratic": lambda z: z ** 2,
    "sigmoid": special.expit,
    "tanh": np.tanh,
    "erf": special.erf,
    "softplus": lambda z: np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0),
    "gelu": lambda z: z * special.ndtr(z),
}

HOMOGENEOUS = [("relu", {}, 1), ("step", {}, 0), ("abs", {}, 1), ("quadratic", {}, 2),
               ("relu_power", {"alpha": 0.5}, 0.5), ("relu_power", {"alpha": 2}, 2),
               ("relu_power", {"alpha": 3.5}, 3.5)]

ALL = [(name, {}) for name in ACTIVATIONS if name != "relu_power"] + [
    ("relu_power", {"alpha": a}) for a in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)]


def _reference(name, params):
    if name == "relu_power":
        alpha = params["alpha"]
        return lambda z: np.where(z > 0, np.abs(z) ** alpha, 0.0)
    return REFERENCE[name]


def _legendre_oracle(k, d, t):
    """P_{k,d}(t) with P_{k,d}(1) = 1 from scipy: Chebyshev (d = 2), normalised Gegenbauer (d >= 3)."""
    if d == 2:
        return special.eval_chebyt(k, t)
    lam = 0.5 * (d - 2)
    return special.eval_gegenbauer(k, lam, t) / special.eval_gegenbauer(k, lam, 1.0)


def _c(d):
    return math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d - 1) / 2))


def _quad_funk_hecke(g, k, d):
    """int_{-1}^{1} g(t) P_{k,d}(t) w_d(t) dt by QUADPACK, split at 0 with the (1 -+ t)^a end weights."""
    a = 0.5 * (d - 3)
    with warnings.catch_warnings():
        # QUADPACK reports "roundoff error" when it reaches ~1e-16 and stops short of 1e-15: fine here.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        right = integrate.quad(lambda t: g(t) * _legendre_oracle(k, d, t) * (1 + t) ** a, 0, 1,
                               weight="alg", wvar=(0, a), epsabs=1e-15, epsrel=1e-13, limit=200)[0]
        left = integrate.quad(lambda t: g(t) * _legendre_oracle(k, d, t) * (1 - t) ** a, -1, 0,
                              weight="alg", wvar=(a, 0), epsabs=1e-15, epsrel=1e-13, limit=200)[0]
    return _c(d) * (left + right)


# ---------------------------------------------------------------------------------------------
# Values and derivatives
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", ALL)
def test_activation_values_match_their_definitions(name, params):
    z = np.linspace(-6, 6, 241)
    got = get_activation(name, **params)(z)
    # Identities of the same formulas evaluated differently: a few ulps of float64.
    np.testing.assert_allclose(got, _reference(name, params)(z), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name,params", ALL)
def test_derivative_matches_central_differences(name, params):
    """sigma'(z) = (sigma(z + h) - sigma(z - h)) / 2h + O(h^2), away from the kink at 0."""
    rng = np.random.default_rng(1)
    z = rng.uniform(-4, 4, size=200)
    z = z[np.abs(z) > 0.05]
    sigma = get_activation(name, **params)
    f = _reference(name, params)
    h = 1e-5
    fd = (f(z + h) - f(z - h)) / (2 * h)
    # Truncation h^2 |f'''| / 6 <= 1e-10 * 30 (alpha = 0.5 near |z| = 0.05 is the worst) and
    # rounding eps |f| / h ~ 1e-10 |f|: 1e-7 relative + 1e-8 absolute covers both.
    np.testing.assert_allclose(sigma.derivative(z), fd, rtol=1e-7, atol=1e-8)


def test_derivative_conventions_at_kinks():
    """relu'(0) = 0, step' = 0, abs'(0) = sign(0) = 0, (relu^alpha)'(0) = 0 for every alpha."""
    zero = np.zeros(1)
    assert get_activation("relu").derivative(zero)[0] == 0
    assert get_activation("abs").derivative(zero)[0] == 0
    np.testing.assert_array_equal(get_activation("step").derivative(np.array([-1.0, 0.0, 2.0])), 0.0)
    for alpha in (0.0, 0.5, 1.0, 2.0):
        assert get_activation("relu_power", alpha=alpha).derivative(zero)[0] == 0
    assert get_activation("step")(zero)[0] == 0  # step(0) = 0, also as relu_power with alpha = 0
    assert get_activation("relu_power", alpha=0)(zero)[0] == 0


def test_relu_power_interpolates_step_and_relu():
    """max(0, z)^0 = step(z) (with 0^0 := 0 at z = 0) and max(0, z)^1 = relu(z), as values."""
    z = np.linspace(-3, 3, 61)
    np.testing.assert_array_equal(get_activation("relu_power", alpha=0)(z), get_activation("step")(z))
    np.testing.assert_array_equal(get_activation("relu_power", alpha=1)(z), get_activation("relu")(z))
    assert get_activation("relu_power", alpha=1) != get_activation("relu")  # distinct names


def test_sigmoid_and_softplus_do_not_overflow():
    z = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the right answer
        s = get_activation("sigmoid")(z)
        sp = get_activation("softplus")(z)
        ds = get_activation("sigmoid").derivative(z)
    np.testing.assert_allclose(s, [0, 0, 0.5, 1, 1], atol=1e-300)
    np.testing.assert_allclose(sp, [0, 0, math.log(2), 800, 1e4], rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(ds, [0, 0, 0.25, 0, 0], atol=1e-300)


@pytest.mark.parametrize("dtype, zmax", [(np.float64, 350.0), (np.float32, 43.0)])
def test_tanh_derivative_is_sech_squared_to_a_few_ulps_in_the_tails(dtype, zmax):
    """tanh'(z) = sech^2(z) = 4 e^{-2|z|} / (1 + e^{-2|z|})^2, representable up to |z| ~ 354 (44 in
    float32): 1 - tanh^2 z rounded it to 0 beyond |z| ~ 19 (9 in float32)."""
    mpmath = pytest.importorskip("mpmath")
    z = np.concatenate([np.linspace(-zmax, zmax, 401), [20.0, -30.0, 1e-30]]).astype(dtype)
    got = get_activation("tanh").derivative(z)
    with mpmath.workdps(30):
        ref = np.array([float(mpmath.sech(mpmath.mpf(float(x))) ** 2) for x in z])
    assert got.dtype == dtype
    # cosh (1 ulp), a reciprocal and a square: measured 2 ulps (3.4 in float32); 8 eps allowed.
    np.testing.assert_allclose(got, ref, rtol=8 * np.finfo(dtype).eps, atol=0)
    with np.errstate(over="raise", invalid="raise"):  # cosh overflows to inf beyond |z| ~ 710: 1/inf = 0
        far = get_activation("tanh").derivative(np.array([-1e30, 1e4, np.inf], dtype=dtype))
    np.testing.assert_array_equal(far, 0.0)


def test_gelu_and_its_derivative_keep_their_relative_accuracy_in_the_left_tail():
    """gelu(z) = z Phi(z) and gelu'(z) = Phi(z) + z phi(z), with Phi(z) ~ phi(z) / |z| down to
    gelu(-37) ~ -2e-298: (1 + erf(z / sqrt 2)) / 2 cancelled to 0 from z ~ -8.3 on."""
    mpmath = pytest.importorskip("mpmath")
    z = np.linspace(-37.0, -2.0, 351)
    sigma = get_activation("gelu")
    with mpmath.workdps(30):
        value = np.array([float(x * mpmath.ncdf(x)) for x in z])
        slope = np.array([float(mpmath.ncdf(x) + x * mpmath.npdf(x)) for x in z])
    # erfc(|z| / sqrt 2) and exp(-z^2 / 2) multiply the rounding of z / sqrt 2 and z^2 by ~z^2:
    # 4 eps (1 + z^2), at most 1.2e-12 at z = -37.
    tol = 4 * np.finfo(np.float64).eps * (1 + z * z)
    assert np.all(np.abs(sigma(z) - value) <= tol * np.abs(value))
    assert np.all(np.abs(sigma.derivative(z) - slope) <= tol * np.abs(slope))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gelu_and_its_derivative_take_their_limits_at_infinity(dtype):
    """z Phi(z) -> 0, +inf and Phi(z) + z phi(z) -> 0, 1 as z -> -inf, +inf (every other activation
    gives its limits at +-inf): -inf * Phi(-inf) and +-inf * phi(+-inf) were inf * 0 = NaN."""
    z = np.array([-np.inf, -1e30, 1e30, np.inf], dtype=dtype)
    sigma = get_activation("gelu")
    with np.errstate(over="raise", invalid="raise"):
        value, slope = sigma(z), sigma.derivative(z)
    np.testing.assert_array_equal(value, np.array([0.0, 0.0, 1e30, np.inf], dtype=dtype))
    np.testing.assert_array_equal(slope, [0.0, 0.0, 1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Homogeneity
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params,degree", HOMOGENEOUS)
@settings(deadline=None, max_examples=60)
@given(lam=st.floats(0.01, 100.0),
       z=st.floats(-10.0, 10.0).filter(lambda z: z == 0 or abs(z) > 1e-200))  # lambda z stays a normal float
def test_positive_homogeneity(name, params, degree, lam, z):
    """sigma(lambda z) = lambda^alpha sigma(z) for lambda > 0, alpha = sigma.homogeneity."""
    sigma = get_activation(name, **params)
    assert sigma.homogeneity == degree
    lhs = sigma(np.array([lam * z]))[0]
    rhs = lam ** degree * sigma(np.array([z]))[0]
    # A few roundings in each side: 1e-13 relative (plus a floor at the subnormal scale).
    assert abs(lhs - rhs) <= 1e-13 * abs(rhs) + 1e-300


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "erf", "softplus", "gelu"])
def test_non_homogeneous_activations_have_no_degree(name):
    sigma = get_activation(name)
    assert sigma.homogeneity is None
    # and indeed sigma(2 z) / sigma(z) is not constant in z > 0
    ratio = sigma(np.array([1.0, 2.0, 4.0]) * 2) / sigma(np.array([1.0, 2.0, 4.0]))
    assert np.ptp(ratio) > 1e-3


# ---------------------------------------------------------------------------------------------
# Funk-Hecke coefficients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0, 1, 2, 0.5])
@pytest.mark.parametrize("d", [2, 3, 5, 20])
def test_funk_hecke_relu_power_closed_form_matches_quadrature(alpha, d):
    """Bach (2017) App. D: mu_k(max(0,t)^alpha) = Gamma(a+1)Gamma(d/2)/(2^{a+1}Gamma(1+(a-k)/2)Gamma((a+k+d)/2))."""
    kmax = 8
    mu = get_activation("relu_power", alpha=alpha).funk_hecke(d, kmax)
    ref = np.array([_quad_funk_hecke(lambda t: np.where(t > 0, np.abs(t) ** alpha, 0.0), k, d)
                    for k in range(kmax + 1)])
    # quad reaches ~1e-15 absolute on these smooth pieces; the closed form a few ulps.
    np.testing.assert_allclose(mu, ref, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("alpha", [0, 1, 2, 3])
@pytest.mark.parametrize("d", [2, 3, 5, 20, 1000])
def test_funk_hecke_relu_power_exact_zeros(alpha, d):
    """mu_k(relu^alpha) = 0 exactly when k > alpha and k - alpha is even, and only there."""
    kmax = 300
    mu = get_activation("relu_power", alpha=alpha).funk_hecke(d, kmax)
    k = np.arange(kmax + 1)
    vanishing = (k > alpha) & ((k - alpha) % 2 == 0)
    assert np.all(mu[vanishing] == 0.0)
    assert np.all(mu[~vanishing] != 0.0)
    assert np.isfinite(mu).all()


@pytest.mark.parametrize("alpha", [0, 1, 2, 0.5])
@pytest.mark.parametrize("d", [2, 3, 5, 20])
def test_funk_hecke_relu_power_decay_rate(alpha, d):
    """|mu_k(relu^alpha)| ~ k^{-(d/2 + alpha)} along the non-vanishing k (fitted log-log slope within 0.1)."""
    kmax = 20000
    mu = get_activation("relu_power", alpha=alpha).funk_hecke(d, kmax)
    k = np.arange(kmax + 1)
    sel = (k >= 2000) & (mu != 0)
    slope = np.polyfit(np.log(k[sel]), np.log(np.abs(mu[sel])), 1)[0]
    assert abs(slope + (d / 2 + alpha)) < 0.1


def test_funk_hecke_relu_power_large_degree_and_dimension_stay_finite():
    """Log-gamma evaluation: k = 2000, d = 10^4 neither overflow nor produce NaN."""
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        mu = get_activation("relu_power", alpha=1.5).funk_hecke(10_000, 2000)
    assert np.isfinite(mu).all() and mu[0] > 0


@pytest.mark.parametrize("alpha", [0, 1, 2, 0.5])
@pytest.mark.parametrize("d", [10**4, 10**6, 10**8])
def test_funk_hecke_relu_power_of_huge_dimension_matches_mpmath(alpha, d):
    """Bach (2017) App. D's mu_k, by mpmath's Gamma at 30 digits, for d up to 10^8: a difference of
    log-gammas of size d log d lost d log(d) eps (1e-11 relative at d = 10^4, 1e-7 at d = 10^8)."""
    mpmath = pytest.importorskip("mpmath")
    kmax = 50
    mu = get_activation("relu_power", alpha=alpha).funk_hecke(d, kmax)
    with mpmath.workdps(30):
        a, half_d = mpmath.mpf(alpha), mpmath.mpf(d) / 2
        ref = np.array([float(mpmath.gamma(a + 1) * mpmath.gamma(half_d) * mpmath.rgamma(1 + (a - k) / 2)
                              / (2 ** (a + 1) * mpmath.gamma(half_d + (a + k) / 2))) for k in range(kmax + 1)])
    # mu_0 and mu_1 are exps of logs of size < 20 (a few eps of each), and mu_k a product of at most
    # 25 ratios (2 roundings each): measured 6e-15; 3e-14 allowed.
    np.testing.assert_allclose(mu, ref, rtol=3e-14, atol=0)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "erf", "softplus", "gelu"])
@pytest.mark.parametrize("d", [2, 3, 7])
def test_funk_hecke_smooth_activations_match_quadrature(name, d):
    kmax = 10
    mu = get_activation(name).funk_hecke(d, kmax)
    ref = np.array([_quad_funk_hecke(REFERENCE[name], k, d) for k in range(kmax + 1)])
    np.testing.assert_allclose(mu, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["abs", "quadratic"])
@pytest.mark.parametrize("d", [2, 3, 6])
def test_funk_hecke_abs_and_quadratic_closed_forms_match_quadrature(name, d):
    """abs: (1 + (-1)^k) mu_k(relu); quadratic: mu_0 = 1/d, mu_2 = 2/(d(d+2)), all others 0."""
    kmax = 7
    mu = get_activation(name).funk_hecke(d, kmax)
    ref = np.array([_quad_funk_hecke(REFERENCE[name], k, d) for k in range(kmax + 1)])
    np.testing.assert_allclose(mu, ref, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("name", ["tanh", "erf"])
def test_funk_hecke_odd_activation_has_only_odd_degrees(name):
    """P_{k,d}(-t) = (-1)^k P_{k,d}(t): an odd sigma has mu_k = 0 for every even k."""
    mu = get_activation(name).funk_hecke(4, 20)
    assert np.max(np.abs(mu[0::2])) < 1e-15
    assert np.min(np.abs(mu[1:8:2])) > 1e-6


@pytest.mark.parametrize("d", [2, 3, 5])
def test_funk_hecke_series_reconstructs_tanh(d):
    """sigma(t) = sum_k mu_k N(d, k) P_{k,d}(t) (the Funk-Hecke expansion), here for tanh."""
    kmax = 40  # terms decay like 3.4^{-k}: below 1e-15 well before k = 40
    mu = funk_hecke("tanh", d, kmax)
    t = np.linspace(-1, 1, 17)
    N = [1] + [(2 * k + d - 2) * math.comb(k + d - 3, k - 1) // k for k in range(1, kmax + 1)]
    series = sum(mu[k] * N[k] * _legendre_oracle(k, d, t) for k in range(kmax + 1))
    np.testing.assert_allclose(series, np.tanh(t), atol=1e-13)


def test_funk_hecke_accepts_name_activation_and_callable():
    """The same coefficients from a name, an Activation, and a plain callable (by quadrature)."""
    d, kmax = 5, 12
    by_name = funk_hecke("relu", d, kmax)
    by_object = funk_hecke(get_activation("relu"), d, kmax)
    by_callable = funk_hecke(lambda t: np.maximum(t, 0.0), d, kmax, breakpoints=(0.0,))
    np.testing.assert_array_equal(by_name, by_object)
    np.testing.assert_allclose(by_callable, by_name, atol=1e-15)
    np.testing.assert_allclose(funk_hecke(get_activation("tanh"), 3, 6), funk_hecke(np.tanh, 3, 6), atol=1e-16)
    assert by_name.shape == (kmax + 1,)


# ---------------------------------------------------------------------------------------------
# Objects, backends, errors
# ---------------------------------------------------------------------------------------------

def test_activation_is_an_immutable_value():
    sigma = get_activation("relu_power", alpha=2)
    assert sigma == get_activation("relu_power", alpha=2.0)
    assert sigma != get_activation("relu_power", alpha=3)
    assert hash(sigma) == hash(get_activation("relu_power", alpha=2.0))
    assert len({sigma, get_activation("relu_power", alpha=2.0), get_activation("relu")}) == 2
    with pytest.raises(AttributeError, match="immutable"):
        sigma.name = "tanh"
    sigma.params["alpha"] = 5.0  # a copy: the activation does not change
    assert sigma.params == {"alpha": 2.0}
    assert repr(sigma) == "Activation('relu_power', alpha=2.0)"
    assert eval(repr(sigma), {"Activation": Activation}) == sigma
    assert pickle.loads(pickle.dumps(sigma)) == sigma
    assert as_activation("tanh") == get_activation("tanh") and as_activation(sigma) is sigma


def test_homogeneity_attribute_values():
    expected = {"relu": 1, "step": 0, "abs": 1, "quadratic": 2}
    for name, degree in expected.items():
        assert get_activation(name).homogeneity == degree
    assert get_activation("relu_power", alpha=0.75).homogeneity == 0.75


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,params", ALL)
def test_activation_keeps_dtype_and_backend(xp, dtype, name, params):
    z_host = np.linspace(-3, 3, 13)
    z = xp.asarray(z_host, dtype=dtype)
    sigma = get_activation(name, **params)
    for fn in (sigma, sigma.derivative):
        out = fn(z)
        assert type(out) is type(z) and out.dtype == z.dtype and out.shape == z.shape
    host = np.asarray(sigma(z).get() if hasattr(sigma(z), "get") else sigma(z), dtype=np.float64)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(host, _reference(name, params)(z_host.astype(dtype).astype(np.float64)),
                               rtol=tol, atol=tol)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown activation name 'swish'.*relu.*tanh.*gelu"):
        get_activation("swish")


@pytest.mark.parametrize("params,match", [
    ({"alpha": -0.5}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"alpha": "2"}, "alpha"),
    ({}, "alpha"),
    ({"alpha": 1, "beta": 2}, "alpha"),
])
def test_relu_power_rejects_bad_alpha(params, match):
    with pytest.raises(ValueError, match=match):
        get_activation("relu_power", **params)


def test_parameterless_activation_rejects_parameters():
    with pytest.raises(ValueError, match="takes no parameters"):
        get_activation("relu", alpha=2)


@pytest.mark.parametrize("kmax", [-1, 2.5, "3", True])
def test_funk_hecke_rejects_bad_kmax(kmax):
    with pytest.raises(ValueError, match="kmax"):
        funk_hecke("relu", 3, kmax)
    with pytest.raises(ValueError, match="kmax"):
        funk_hecke(np.tanh, 3, kmax)


def test_funk_hecke_rejects_bad_dimension_and_type():
    with pytest.raises(ValueError, match="d must be"):
        funk_hecke("relu", 1, 3)
    with pytest.raises(TypeError, match="sigma"):
        funk_hecke(3.0, 3, 3)
    with pytest.raises(TypeError, match="sigma"):
        as_activation(None)


@pytest.mark.parametrize("q", [0, -3, 2.5])
def test_funk_hecke_rejects_a_bad_number_of_nodes_even_with_a_closed_form(q):
    with pytest.raises(ValueError, match="q must be an integer >= 1"):
        get_activation("relu").funk_hecke(3, 3, q=q)


@pytest.mark.parametrize("breakpoints", ["a", [[0.1]], 0.5])
def test_funk_hecke_rejects_breakpoints_that_are_not_a_sequence_of_numbers(breakpoints):
    with pytest.raises(ValueError, match="breakpoints must be a sequence of numbers in"):
        funk_hecke(np.tanh, 3, 3, breakpoints=breakpoints)


@pytest.mark.parametrize("sigma", ["relu", "tanh"])
def test_funk_hecke_of_an_activation_rejects_bad_breakpoints_too(sigma):
    # an activation knows its breakpoints and the argument goes unused, but wrong ones passed without a word
    with pytest.raises(ValueError, match="breakpoints must lie in"):
        funk_hecke(sigma, 3, 3, breakpoints=(1.5,))
    with pytest.raises(ValueError, match="breakpoints must be a sequence of numbers in"):
        funk_hecke(get_activation(sigma), 3, 3, breakpoints="a")


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["relu", "step", "abs", "tanh", "sigmoid", "erf"]), d=st.integers(2, 12))
def test_funk_hecke_coefficients_of_the_reflected_activation_carry_the_parity_sign(name, d):
    # P_{k,d}(-t) = (-1)^k P_{k,d}(t) and w_d is even: mu_k(t -> sigma(-t)) = (-1)^k mu_k(sigma).
    sigma = get_activation(name)
    kmax = 12
    mu = funk_hecke(sigma, d, kmax)
    reflected = funk_hecke(lambda t: sigma(-t), d, kmax, breakpoints=tuple(-b for b in sigma.breakpoints))
    sign = (-1.0) ** np.arange(kmax + 1)
    # Two quadratures of the same integrals (one maybe a closed form): 1e-12 of the largest coefficient.
    np.testing.assert_allclose(reflected, sign * mu, rtol=0, atol=1e-12 * np.abs(mu).max())


@pytest.mark.parametrize("name, params", [("relu", {}), ("step", {}), ("relu_power", {"alpha": 2}), ("abs", {}),
                                          ("quadratic", {}), ("tanh", {})])
@pytest.mark.parametrize("kmax", [0, 1, 2])
def test_funk_hecke_of_the_shortest_truncations_matches_quadrature(name, params, kmax):
    """kmax = 0, 1, 2 (no ratio, one, two in the closed forms' recursions) give the first kmax + 1
    coefficients, by QUADPACK as the reference, from a name and from a plain callable alike."""
    d = 3
    g = _reference(name, params)
    ref = np.array([_quad_funk_hecke(g, k, d) for k in range(kmax + 1)])
    np.testing.assert_allclose(get_activation(name, **params).funk_hecke(d, kmax), ref, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(funk_hecke(g, d, kmax, breakpoints=(0.0,)), ref, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("alpha", [0, 1, 2])
def test_funk_hecke_relu_power_exact_zeros_are_positive_zeros(alpha):
    """The vanishing mu_k (k > alpha, k - alpha even) are +0.0, not -0.0: a zero carried along the
    recursion by the negative ratios (alpha - k)/(alpha + k + d) would flip sign every step."""
    mu = get_activation("relu_power", alpha=alpha).funk_hecke(4, 12)
    k = np.arange(13)
    vanishing = (k > alpha) & ((k - alpha) % 2 == 0)
    assert np.all(mu[vanishing] == 0.0)
    assert not np.signbit(mu[vanishing]).any()


def test_unknown_activation_name_names_the_argument():
    # as_activation's callers (funk_hecke, the kernels) said "unknown activation name", not which argument
    with pytest.raises(ValueError, match=r"^sigma must be an activation name, one of relu.*gelu; got 'swish'"):
        funk_hecke("swish", 3, 2)
    with pytest.raises(ValueError, match=r"^activation must be an activation name"):
        as_activation("swish", "activation")


def test_funk_hecke_of_an_activation_without_closed_form_uses_the_q_nodes_asked_for():
    # d = 3, w_3 = 1/2 on [-1, 1] and tanh has no breakpoint: with q = 3 the coefficients are the 3-point
    # Gauss-Legendre sums (1/2) sum_i w_i tanh(t_i) P_k(t_i), written here with scipy (rounding: 1e-15), which are
    # not the integrals (the check against 2 nodes warns that the rule has not converged).
    t, w = special.roots_legendre(3)
    ref = [0.5 * np.sum(w * np.tanh(t) * special.eval_legendre(k, t)) for k in range(3)]
    with pytest.warns(RuntimeWarning, match="not converged"):
        mu = get_activation("tanh").funk_hecke(3, 2, q=3)
    np.testing.assert_allclose(mu, ref, rtol=0, atol=1e-15)
