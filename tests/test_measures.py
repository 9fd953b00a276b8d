"""Measures on the sphere: network <-> measure, variation norm, and the POT-based distances."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from shallow.activations import get_activation
from shallow.backend import to_numpy
from shallow.measures import (Measure, best_neuron, conditional_gradient, measure_to_network, network_to_measure,
                              sliced_wasserstein, unbalanced_distance, variation_norm, wasserstein)
from shallow.networks import TwoLayer
from shallow.sphere import sample_sphere

EPS = np.finfo(np.float64).eps


def integrate_against(mu, X, sigma, bias=False):
    """int sigma(<x, theta>) dmu(theta) = sum_j c_j sigma(<x, theta_j>), by a loop over atoms."""
    Xb = np.hstack([X, np.ones((len(X), 1))]) if bias else X
    return sum(c * sigma(Xb @ theta) for c, theta in zip(mu.weights, mu.points))


# --------------------------------------------------------------------------- network <-> measure
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_measure_device_and_dtype_are_those_of_its_atoms(xp, dtype):
    """Measure.device is "gpu" for cupy atoms, "cpu" for numpy ones; Measure.dtype is the atoms' dtype; read-only."""
    points = xp.asarray([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    mu = Measure(xp.asarray([1.0, -2.0]), points)
    assert mu.device == ("cpu" if xp is np else "gpu")
    assert mu.dtype == np.dtype(dtype) and mu.weights.dtype == np.dtype(dtype)
    with pytest.raises(AttributeError):
        mu.device = "gpu"
    with pytest.raises(AttributeError):
        mu.dtype = np.float16


def test_network_to_measure_puts_mass_gamma_a_norm_w_at_the_direction():
    W = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]])
    mu = network_to_measure(TwoLayer(np.array([1.0, -0.5]), W, gamma=0.1))
    np.testing.assert_allclose(mu.weights, [0.1 * 1.0 * 5.0, 0.1 * -0.5 * 2.0], rtol=1e-15)
    np.testing.assert_allclose(mu.points, [[0.6, 0.8, 0.0], [0.0, 0.0, -1.0]], rtol=1e-15)


@pytest.mark.parametrize("name, params, bias", [
    ("relu", {}, False), ("relu", {}, True), ("relu_power", {"alpha": 2}, False),
    ("relu_power", {"alpha": 0.5}, True), ("step", {}, False), ("abs", {}, False),
])
def test_network_and_its_measure_define_the_same_function(name, params, bias):
    # f(x) = gamma sum_j a_j sigma(<w_j, x>) = int sigma(<x, theta>) dmu(theta) (Bach 2017, Sec. 2),
    # the right side summed atom by atom; both ways back through measure_to_network too.
    rng = np.random.default_rng(0)
    sigma = get_activation(name, **params)
    net = TwoLayer(rng.standard_normal(9), rng.standard_normal((9, 4 + bias)), activation=sigma, bias=bias)
    X = rng.standard_normal((30, 4))
    mu = net.to_measure()
    assert len(mu) == 9 and mu.D == 4 + bias
    np.testing.assert_allclose(mu.points, net.W / np.linalg.norm(net.W, axis=1, keepdims=True), rtol=1e-15)
    # c_j = gamma a_j |w_j|^alpha reassociates products: a few eps relative to the sum of |terms|.
    np.testing.assert_allclose(integrate_against(mu, X, sigma, bias), net(X), rtol=1e-12, atol=1e-13)
    back = measure_to_network(mu, activation=sigma, bias=bias)
    np.testing.assert_allclose(back(X), net(X), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mu.evaluate(X, sigma, bias=bias), net(X), rtol=1e-12, atol=1e-13)


def test_the_measure_of_a_network_with_a_bias_keeps_it_through_conversions_and_sums():
    # measure_to_network(net.to_measure()) came back without the bias (a network of d + 1 inputs), and
    # maurey_sample of the measure too; the references are the network itself and the sum typed out
    from shallow.barron import maurey_sample

    rng = np.random.default_rng(2)
    net = TwoLayer(rng.standard_normal(6), rng.standard_normal((6, 4)), bias=True)
    X = rng.standard_normal((20, 3))
    mu = net.to_measure()
    assert mu.bias and (2 * mu).bias and mu.merge().bias and (mu + mu).bias
    back = measure_to_network(mu)
    assert back.bias and back.d == 3
    np.testing.assert_allclose(back(X), net(X), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mu.evaluate(X), integrate_against(mu, X, get_activation("relu"), bias=True),
                               rtol=1e-12, atol=1e-13)
    assert maurey_sample(mu, 5, rng=0).bias
    hand = Measure(mu.weights, mu.points)  # made by hand: no bias, a function on R^4
    with pytest.raises(ValueError, match="with a bias .* and one without"):
        hand + mu

def test_measure_to_network_to_measure_is_the_identity():
    rng = np.random.default_rng(1)
    mu = Measure(rng.standard_normal(6), sample_sphere(6, 3, rng=2))
    for gamma in (None, 0.3):
        nu = network_to_measure(measure_to_network(mu, gamma=gamma))
        np.testing.assert_allclose(nu.weights, mu.weights, rtol=1e-14)
        np.testing.assert_allclose(nu.points, mu.points, rtol=1e-14, atol=1e-15)


def test_neurons_with_zero_inner_weight_are_dropped():
    net = TwoLayer(np.array([1.0, 5.0, -2.0]), np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    mu = net.to_measure()
    assert len(mu) == 2
    X = np.random.default_rng(0).standard_normal((7, 2))
    np.testing.assert_allclose(integrate_against(mu, X, net.activation), net(X), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_network_to_measure_puts_mass_gamma_a_norm_w_for_tiny_and_huge_w(scale):
    # |w| = 5 scale and w / |w| = (0.6, 0.8) in exact arithmetic; sum of squares under/overflows float64
    W = np.array([[3.0, 4.0], [0.0, -1.0]]) * np.array([[scale], [1.0]])
    mu = network_to_measure(TwoLayer(np.array([1.0, -2.0]), W, gamma=1.0))
    np.testing.assert_allclose(mu.weights, [5.0 * scale, -2.0], rtol=4 * EPS)  # a few roundings
    np.testing.assert_allclose(mu.points, [[0.6, 0.8], [0.0, -1.0]], rtol=4 * EPS)


@pytest.mark.parametrize("activation, alpha", [("quadratic", 2.0), ("relu_power", 1.5), ("relu", 1.0)])
@pytest.mark.parametrize("dtype, tiny, huge", [(np.float64, 1e-307, 1e250), (np.float32, 1e-35, 1e25)])
def test_network_to_measure_mass_is_exact_where_it_is_representable_but_its_factors_are_not(
        activation, alpha, dtype, tiny, huge):
    # gamma a |w|^alpha for (a, |w|) = (tiny, 5 huge) and (1 / tiny, 5 / huge): each mass is a
    # number of the dtype, but |w|^alpha over- or underflows (alpha > 1), and gamma a = 1e-3 tiny is
    # subnormal, which kept a few digits only (relu). Reference: mpmath from the stored numbers.
    import mpmath

    a = np.array([tiny, 1 / tiny], dtype=dtype)
    W = (np.array([[3.0, 4.0], [-4.0, 3.0]]) * np.array([[huge], [1 / huge]])).astype(dtype)
    gamma = 1e-3
    sigma = get_activation(activation, alpha=alpha) if activation == "relu_power" else activation
    mu = network_to_measure(TwoLayer(a, W, activation=sigma, gamma=gamma))
    expected = [float(mpmath.mpf(gamma) * mpmath.mpf(float(a_j)) * mpmath.norm([mpmath.mpf(float(w)) for w in row])
                      ** mpmath.mpf(alpha)) for a_j, row in zip(a, W)]
    assert mu.weights.dtype == dtype
    np.testing.assert_allclose(mu.weights, expected, rtol=8 * np.finfo(dtype).eps)


def test_network_to_measure_refuses_masses_beyond_the_range_of_the_dtype_naming_them():
    # gamma a |w|^2 = 1e40 > 3.4e38 in float32 (2^132.9): it became inf, and Measure's check then spoke of
    # "weights contains 1 NaN or infinite value(s)", an argument the caller never passed
    net = TwoLayer(np.float32([1.0]), np.float32([[1e20, 0.0]]), activation=get_activation("relu_power", alpha=2),
                   gamma=1.0)
    with pytest.raises(ValueError, match=r"masses gamma a_j \|w_j\|\^alpha reach 2\^132.9, beyond the largest float32"):
        network_to_measure(net)
    net64 = TwoLayer(np.float64([1.0]), np.float64([[1e20, 0.0]]), activation=get_activation("relu_power", alpha=2),
                     gamma=1.0)
    assert float(network_to_measure(net64).weights[0]) == pytest.approx(1e40, rel=1e-12)


def test_network_to_measure_beyond_float64_advises_rescaling_not_float64():
    # gamma a |w|^2 = 1e400 > 1.8e308 (2^1328.8) in a float64 network: the message advised "build the network in
    # float64", which it already was
    net = TwoLayer(np.float64([1.0]), np.float64([[1e200, 0.0]]), activation=get_activation("relu_power", alpha=2),
                   gamma=1.0)
    message = r"reach 2\^1328.8, beyond the largest float64 \(1.8e\+308\): rescale its weights$"
    with pytest.raises(ValueError, match=message):
        network_to_measure(net)


def test_step_neuron_with_zero_inner_weight_is_a_constant_that_no_measure_represents():
    # step(<0, x>) = step(0) = 0 here (the convention of activations), so the neuron is dropped;
    # with abs (alpha = 1) too. A constant would need sigma(0) != 0: checked with a stand-in sigma.
    class Shifted:
        name, homogeneity = "shifted", 0

        def __call__(self, z):
            return np.ones_like(z)

        def derivative(self, z):
            return np.zeros_like(z)

    net = TwoLayer(np.array([1.0, 2.0]), np.array([[1.0, 0.0], [0.0, 0.0]]), activation=Shifted())
    with pytest.raises(ValueError, match="zero row"):
        network_to_measure(net)
    assert len(TwoLayer(np.ones(2), np.array([[1.0, 0.0], [0.0, 0.0]]), activation="step").to_measure()) == 1


def test_non_homogeneous_activation_has_no_measure():
    with pytest.raises(ValueError, match="'tanh' is not positively homogeneous"):
        TwoLayer.init(3, 2, activation="tanh", rng=0).to_measure()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), log_c=st.lists(st.floats(-3, 3), min_size=4, max_size=4))
def test_measure_is_invariant_under_homogeneous_rescaling(seed, log_c):
    # (a_j, w_j) -> (a_j / c_j, c_j w_j) is the same relu network, hence the same measure.
    rng = np.random.default_rng(seed)
    c = np.exp(np.array(log_c))
    a, W = rng.standard_normal(4), rng.standard_normal((4, 3))
    mu, nu = TwoLayer(a, W).to_measure(), TwoLayer(a / c, c[:, None] * W).to_measure()
    np.testing.assert_allclose(nu.weights, mu.weights, rtol=1e-13)
    np.testing.assert_allclose(nu.points, mu.points, rtol=1e-13, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lam=st.floats(0.05, 0.95), log_c=st.floats(-2, 2))
def test_splitting_a_neuron_keeps_the_function_and_the_variation_norm(seed, lam, log_c):
    # (a, w) -> (lam a, w) and ((1 - lam) a / c, c w), c > 0: the same relu network and one atom of the
    # same mass at w / |w|, so |mu| = sum_j |a_j| |w_j| is unchanged (directions distinct almost surely).
    rng = np.random.default_rng(seed)
    c = math.exp(log_c)
    a, W = rng.standard_normal(4), rng.standard_normal((4, 3))
    net = TwoLayer(a, W, gamma=1.0)
    split = TwoLayer(np.r_[lam * a[0], (1 - lam) * a[0] / c, a[1:]], np.vstack([W[0], c * W[0], W[1:]]), gamma=1.0)
    X = rng.standard_normal((6, 3))
    scale = np.abs(a) @ np.abs(W @ X.T)  # (6,): the size of the terms summed
    np.testing.assert_allclose(split(X), net(X), rtol=0, atol=1e-13 * scale.max())
    expected = np.sum(np.abs(a) * np.linalg.norm(W, axis=1))
    assert variation_norm(split) == pytest.approx(expected, rel=1e-12)
    assert variation_norm(net) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- variation norm
def test_variation_norm_of_opposite_neurons_at_one_direction_cancels():
    # (1, w) and (-1/2, 2 w) are the same direction with masses +|w| and -|w|: they cancel exactly;
    # (1, w) and (-1, w) (exact copies) likewise. Only the third neuron remains.
    w = np.array([0.3, -1.2, 0.5])
    W = np.array([w, 2 * w, w, w, [0.0, 0.0, 4.0]])
    net = TwoLayer(np.array([1.0, -0.5, 1.0, -1.0, 2.0]), W, gamma=0.25)
    assert variation_norm(net) == pytest.approx(0.25 * 2.0 * 4.0, rel=1e-14)
    # without merging, the naive sum gamma sum |a_j| |w_j| would count them: 4 |w| more.
    naive = 0.25 * np.sum(np.abs(net.a) * np.linalg.norm(W, axis=1))
    assert naive == pytest.approx(variation_norm(net) + 0.25 * 4 * np.linalg.norm(w), rel=1e-14)


def test_variation_norm_of_distinct_directions_is_gamma_sum_abs_a_norm_w():
    rng = np.random.default_rng(3)
    a, W = rng.standard_normal(40), rng.standard_normal((40, 5))
    net = TwoLayer(a, W)
    expected = np.sum(np.abs(a) * np.linalg.norm(W, axis=1)) / 40
    assert variation_norm(net) == pytest.approx(expected, rel=1e-13)


def test_variation_norm_merges_float32_directions_within_sqrt_eps():
    # w and 3 w normalised in float32 agree to a few float32 eps, far below sqrt(eps32) = 3.5e-4.
    w = np.array([0.1, 0.7, -0.2], dtype=np.float32)
    net = TwoLayer(np.array([3.0, -1.0], dtype=np.float32), np.stack([w, 3 * w]), gamma=1.0)
    assert variation_norm(net) < 1e-5 * 3 * np.linalg.norm(w)


def test_total_variation_of_atoms_at_distinct_float32_directions_is_the_sum_of_their_masses():
    # Bach 2017, Sec. 2.3: |mu| = sum_j |c_j| for atoms at pairwise distinct points. 30000 relu neurons of
    # alternating sign at equally spaced directions of the circle (2.1e-4 apart, 1800 float32 eps) are distinct
    # directions: the default merge chained them (sqrt(eps32) = 3.5e-4) into one atom and gave |mu| ~ 0.
    m = 30000
    phi = 2 * np.pi * np.arange(m) / m
    W = np.stack([np.cos(phi), np.sin(phi)], axis=1).astype(np.float32)  # (m, 2)
    a = np.where(np.arange(m) % 2 == 0, 1.0, -1.0).astype(np.float32)
    net = TwoLayer(a, W, gamma=1.0)
    expected = float(np.sum(np.linalg.norm(W.astype(np.float64), axis=1)))  # gamma sum_j |a_j| |w_j|
    # tolerance: the masses are float32, summed in float64 (one float32 eps per mass)
    assert variation_norm(net) == pytest.approx(expected, rel=4 * float(np.finfo(np.float32).eps))
    assert len(net.to_measure().merge()) == m


def test_total_variation_is_the_mass_of_the_jordan_parts():
    # |mu| = mu^+(S) + mu^-(S) and mu = mu^+ - mu^- (as functions: evaluate both ways).
    rng = np.random.default_rng(4)
    P = sample_sphere(5, 3, rng=5)
    mu = Measure(rng.standard_normal(8), P[[0, 1, 2, 3, 4, 0, 1, 2]])
    pos, neg = mu.positive(), mu.negative()
    assert mu.total_variation() == pytest.approx(pos.mass() + neg.mass(), rel=1e-14)
    X = rng.standard_normal((6, 3))
    np.testing.assert_allclose((pos - neg).evaluate(X), mu.evaluate(X), rtol=1e-13, atol=1e-14)
    # mu - mu merges into sums like c1 + c6 - c1 - c6: zero up to a few eps of |mu|.
    assert (mu - mu).total_variation() <= 4 * EPS * np.abs(mu.weights).sum()
    assert len(mu.merge()) == 5 and (2 * mu).mass() == pytest.approx(2 * mu.mass(), rel=1e-15)


# --------------------------------------------------------------------------- Wasserstein
def test_wasserstein_of_a_measure_to_itself_is_zero():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    assert wasserstein(X, X) == pytest.approx(0.0, abs=1e-12)
    mu = Measure(np.abs(rng.standard_normal(10)), sample_sphere(10, 3, rng=1))
    assert wasserstein(mu, mu) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_wasserstein_on_a_line_is_the_sorted_quantile_coupling(p):
    # For uniform clouds of equal size on R, the monotone (sorted) coupling is optimal:
    # W_p^p = mean |x_(i) - y_(i)|^p, computed here with numpy's sort.
    rng = np.random.default_rng(p)
    x, y = rng.standard_normal(80), 2 * rng.standard_normal(80) + 1
    expected = np.mean(np.abs(np.sort(x) - np.sort(y)) ** p) ** (1 / p)
    # POT's simplex is exact; the cost matrix is built in float64: 1e-10 relative.
    assert wasserstein(x, y, p=p) == pytest.approx(expected, rel=1e-10)


def test_weighted_w1_on_a_line_matches_scipy():
    # An independent implementation: scipy.stats.wasserstein_distance (W1 through the CDFs).
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(30), rng.standard_normal(45) + 0.5
    u, v = rng.random(30), rng.random(45)
    expected = stats.wasserstein_distance(x, y, u, v)
    assert wasserstein(x, y, p=1, mu_weights=u / u.sum(), nu_weights=v / v.sum()) == pytest.approx(expected, rel=1e-10)


def test_wasserstein_of_a_translation_is_the_length_of_the_shift():
    # W2(mu, mu + v) = |v|: the shift is a coupling of cost |v|^2, and no coupling does better
    # (Jensen: E|X - Y|^2 >= |E X - E Y|^2 = |v|^2).
    rng = np.random.default_rng(6)
    X, v = rng.standard_normal((40, 3)), np.array([0.3, -0.4, 1.2])
    assert wasserstein(X, X + v) == pytest.approx(np.linalg.norm(v), rel=1e-10)


@pytest.mark.gpu
def test_wasserstein_of_a_device_cloud_far_from_zero_is_the_length_of_the_shift():
    # W2(mu, mu + v) = |v| for a cloud at distance 1e4 from 0 with |v| = 1e-3: a device's GEMM form
    # |x|^2 + |y|^2 - 2 <x, y> of the cost loses eps |x|^2 ~ 2e-8 against |v|^2 = 1e-6; the host's
    # sums of squared differences do not.
    from shallow.backend import to_device

    rng = np.random.default_rng(16)
    X, v = rng.standard_normal((40, 3)) + 1e4, np.array([6e-4, -8e-4, 0.0])
    value = wasserstein(to_device(X, "gpu"), to_device(X + v, "gpu"))
    assert value == pytest.approx(1e-3, rel=1e-7)


@pytest.mark.parametrize("scale, shift", [(1.0, 1e-6), (1e-170, 1e-171), (1e160, 1e159), (1e6, 0.5)])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_wasserstein_on_a_line_is_the_sorted_quantile_coupling_at_extreme_scales(scale, shift, p):
    # On a line the sorted coupling is optimal: W_p^p = mean |y_(i) - x_(i)|^p, here summed in mpmath
    # from the stored floats (tiny shifts, particles far from 0, and |x - y|^p beyond the float range).
    import mpmath

    x = np.array([0.0, 1.0, 3.0, 7.5]) * scale
    y = x + shift
    expected = mpmath.fsum(abs(mpmath.mpf(b) - mpmath.mpf(a)) ** p for a, b in zip(x, y)) / len(x)
    expected = float(expected ** (mpmath.mpf(1) / p))
    assert wasserstein(x, y, p=p) == pytest.approx(expected, rel=1e-12)  # a few roundings of the cost


@pytest.mark.parametrize("seed", range(3))
def test_sliced_wasserstein_is_at_most_wasserstein(seed):
    # Every projection x -> <u, x> is 1-Lipschitz, so each projected W2 <= W2, hence SW2 <= W2
    # for any set of directions; rounding of the two solvers only (1e-12 relative).
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((50, 4)), rng.standard_normal((50, 4)) * 1.5 + 0.3
    assert sliced_wasserstein(X, Y, n_projections=50, rng=seed) <= wasserstein(X, Y) * (1 + 1e-12)


def test_sliced_wasserstein_of_a_translation_estimates_shift_over_sqrt_d():
    # For nu = mu + v each projected W2 is |<u, v>|, so SW2^2 = mean_l <u_l, v>^2, whose expectation
    # over uniform u on S^{d-1} is |v|^2 / d, and whose variance is |v|^4 (3/(d(d+2)) - 1/d^2) / L
    # (E t^4 = 3/(d(d+2)) for t = <u, e>). The test: within 4 standard deviations (fixed seed).
    d, L = 5, 2000
    rng = np.random.default_rng(7)
    X, v = rng.standard_normal((60, d)), np.array([1.0, -2.0, 0.5, 0.0, 1.0])
    sw2 = sliced_wasserstein(X, X + v, n_projections=L, rng=8) ** 2
    v2 = v @ v
    std = v2 * np.sqrt((3 / (d * (d + 2)) - 1 / d**2) / L)
    assert abs(sw2 - v2 / d) < 4 * std
    assert sliced_wasserstein(X, X + v, n_projections=L, rng=8) == sliced_wasserstein(X, X + v, n_projections=L, rng=8)


# --------------------------------------------------------------------------- unbalanced
def test_unbalanced_distance_is_zero_for_identical_signed_measures():
    rng = np.random.default_rng(0)
    mu = Measure(rng.standard_normal(12), sample_sphere(12, 3, rng=1))
    # The debiased divergence cancels exactly in exact arithmetic; what is left is rounding of O(1)
    # costs, ~1e-15, whose square root is ~3e-8.
    assert unbalanced_distance(mu, mu) < 1e-6
    assert unbalanced_distance(mu, mu.merge()) < 1e-6


def test_unbalanced_distance_between_two_diracs_has_a_closed_form():
    # For alpha = delta_x, beta = delta_y (mass 1) the plan is one number s, and
    # OT_eps = min_s s delta^2 + (eps + 2 rho)(s log s - s + 1) = (eps + 2 rho)(1 - exp(-delta^2 / (eps + 2 rho)))
    # while OT_eps(alpha, alpha) = 0 (s = 1): S_eps is that value (independent derivation).
    x, y = np.array([[1.0, 0.0]]), np.array([[np.cos(0.7), np.sin(0.7)]])
    delta2 = float(np.sum((x - y) ** 2))
    for reg, reg_m in [(0.05, 1.0), (0.5, 0.2)]:
        k = reg + 2 * reg_m
        expected = k * (1 - np.exp(-delta2 / k))
        # Sinkhorn stops at 1e-10 relative change: 1e-6 relative on S.
        got = unbalanced_distance(Measure(np.ones(1), x), Measure(np.ones(1), y), reg=reg, reg_m=reg_m) ** 2
        assert got == pytest.approx(expected, rel=1e-6)


def test_unbalanced_distance_is_positive_for_different_measures_and_grows_with_the_change():
    rng = np.random.default_rng(2)
    P = sample_sphere(10, 3, rng=3)
    w = rng.standard_normal(10)
    mu = Measure(w, P)
    moved = []
    noise = rng.standard_normal(P.shape)  # one direction of motion, growing steps along it
    for t in (0.05, 0.2, 0.8):
        Q = P + t * noise
        moved.append(unbalanced_distance(mu, Measure(w, Q / np.linalg.norm(Q, axis=1, keepdims=True))))
    assert 0 < moved[0] < moved[1] < moved[2]
    assert unbalanced_distance(mu, -mu) > 0.1  # a sign flip is far
    assert unbalanced_distance(mu, 1.5 * mu) > 0  # unequal masses
    # nonnegative particle clouds of different sizes (unequal masses by default: 1 each, compared fine)
    assert unbalanced_distance(rng.standard_normal((5, 2)), rng.standard_normal((7, 2))) > 0


# --------------------------------------------------------------------------- backends
@pytest.mark.cuda  # POT takes CuPy arrays, not the fake device's
def test_distances_on_the_backend_match_numpy(xp):
    rng = np.random.default_rng(9)
    X, Y = rng.standard_normal((20, 3)), rng.standard_normal((20, 3)) + 0.5
    mu = Measure(rng.standard_normal(6), sample_sphere(6, 3, rng=1))
    nu = Measure(rng.standard_normal(5), sample_sphere(5, 3, rng=2))
    dmu = Measure(xp.asarray(mu.weights), xp.asarray(mu.points))
    dnu = Measure(xp.asarray(nu.weights), xp.asarray(nu.points))
    dX, dY = xp.asarray(X), xp.asarray(Y)
    assert wasserstein(dX, dY) == pytest.approx(wasserstein(X, Y), rel=1e-10)
    assert sliced_wasserstein(dX, dY, rng=0) == pytest.approx(sliced_wasserstein(X, Y, rng=0), rel=1e-10)
    assert unbalanced_distance(dmu, dnu) == pytest.approx(unbalanced_distance(mu, nu), rel=1e-8)
    assert variation_norm(dmu) == pytest.approx(variation_norm(mu), rel=1e-14)
    merged = dmu.merge()
    assert type(merged.points) is type(dmu.points)
    np.testing.assert_allclose(to_numpy(merged.weights), mu.merge().weights, rtol=1e-15)


# --------------------------------------------------------------------------- bad input
def test_bad_measures_raise_naming_the_argument():
    with pytest.raises(ValueError, match="points must lie on the unit sphere"):
        Measure(np.ones(2), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"weights has shape \(3,\) but points has shape \(2, 2\)"):
        Measure(np.ones(3), np.eye(2))
    with pytest.raises(ValueError, match="weights contains 1 NaN"):
        Measure(np.array([1.0, np.nan]), np.eye(2))
    with pytest.raises(ValueError, match="atol must be"):
        Measure(np.ones(2), np.eye(2)).merge(atol=-1.0)
    with pytest.raises(ValueError, match="mu has no atom"):
        measure_to_network(Measure(np.ones(0), np.ones((0, 2))))
    with pytest.raises(ValueError, match="variation_norm needs"):
        variation_norm(np.ones(3))


def test_bad_distance_arguments_raise_naming_the_argument():
    X = np.random.default_rng(0).standard_normal((4, 2))
    net = TwoLayer.init(4, 2, rng=0)
    with pytest.raises(ValueError, match="p must be a real number >= 1"):
        wasserstein(X, X, p=0.5)
    with pytest.raises(ValueError, match="mu is a TwoLayer network: pass mu.particles()"):
        wasserstein(net, X)
    with pytest.raises(ValueError, match="nu has negative weights"):
        wasserstein(X, X, nu_weights=np.array([0.5, 0.5, 0.5, -0.5]))
    with pytest.raises(ValueError, match="W_p needs equal masses"):
        wasserstein(X, X, nu_weights=np.full(4, 0.5))
    with pytest.raises(ValueError, match=r"mu has particles in R\^2 but nu in R\^3"):
        sliced_wasserstein(X, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"mu_weights has shape \(3,\)"):
        wasserstein(X, X, mu_weights=np.ones(3) / 3)
    with pytest.raises(ValueError, match="n_projections must be an integer >= 1"):
        sliced_wasserstein(X, X, n_projections=0)
    with pytest.raises(ValueError, match="reg must be a positive"):
        unbalanced_distance(X, X, reg=0.0)
    with pytest.raises(ValueError, match="reg_m must be a positive"):
        unbalanced_distance(X, X, reg_m=np.inf)
    with pytest.raises(ValueError, match="nu contains"):
        wasserstein(X, np.full((4, 2), np.nan))


@pytest.mark.parametrize("m1, m2, reg, reg_m", [(1.0, 3.0, 0.05, 1.0), (0.1, 5.0, 1.0, 0.1), (2.0, 2.1, 2.0, 5.0)])
def test_unbalanced_divergence_of_two_masses_at_one_point_matches_scalar_minimisation(m1, m2, reg, reg_m):
    # alpha = m1 delta_x, beta = m2 delta_x: every OT_eps is a minimisation over one number s,
    # OT_eps(m1, m2) = min_s eps KL(s | m1 m2) + rho KL(s | m1) + rho KL(s | m2), done here with
    # scipy's bounded scalar minimiser (an independent solver); this checks the mass term too.
    from scipy.optimize import minimize_scalar

    def kl(p, q):
        return p * np.log(p / q) - p + q

    def ot_eps(a, b):
        objective = lambda s: reg * kl(s, a * b) + reg_m * kl(s, a) + reg_m * kl(s, b)  # noqa: E731
        return minimize_scalar(objective, bounds=(1e-12, 100), method="bounded", options={"xatol": 1e-12}).fun

    expected = ot_eps(m1, m2) - ot_eps(m1, m1) / 2 - ot_eps(m2, m2) / 2 + reg * (m1 - m2) ** 2 / 2
    x = np.array([[0.0, 1.0]])
    got = unbalanced_distance(Measure(np.array([m1]), x), Measure(np.array([m2]), x), reg=reg, reg_m=reg_m) ** 2
    # Both solvers converge to ~1e-10 relative; S is a difference of O(1) terms: 1e-7 relative.
    assert got == pytest.approx(expected, rel=1e-7)


def test_merge_rejects_an_atol_that_is_not_a_number():
    mu = Measure(np.array([1.0, -1.0]), np.eye(2))
    with pytest.raises(ValueError, match="atol must be a non-negative finite distance, got 'a'"):
        mu.merge(atol="a")


@pytest.mark.parametrize("stopThr", [-1.0, float("nan")])
def test_unbalanced_distance_rejects_a_negative_or_nan_stopping_threshold(stopThr):
    from shallow.measures import unbalanced_distance

    A, B = sample_sphere(4, 3, rng=0), sample_sphere(5, 3, rng=1)
    with pytest.raises(ValueError, match="stopThr must be a finite number >= 0"):
        unbalanced_distance(A, B, stopThr=stopThr)


def test_unbalanced_distance_refuses_p_above_2_where_its_kernel_is_not_positive_definite():
    """S_eps >= 0 with equality only for alpha = beta needs exp(-|x - y|^p / eps) positive definite (Sejourne et al.
    2019, Reference 3 of the module), true for p <= 2 and false beyond (Schoenberg): at the five points below the
    Gram matrix for p = 3 has the eigenvalue -0.13 (numpy's eigvalsh, an independent check), and S_eps between
    (0.1, 0.6) at (1.1, -0.3) and (0.1, 0.3, 0.3) at (-1.1, 0.1, 0.2), eps = 1.4, rho = 50, was -0.077: returned as
    the distance 0 between measures whose W_3 is 0.55. p > 2 is refused, naming p."""
    x, y = np.array([1.1, -0.3]), np.array([-1.1, 0.1, 0.2])
    z = np.concatenate([x, y])
    gram = np.exp(-np.abs(z[:, None] - z[None, :]) ** 3 / 1.4)
    assert np.linalg.eigvalsh(gram)[0] < -0.1  # not positive semidefinite: far beyond rounding
    with pytest.raises(ValueError, match=r"p must be in \[1, 2\] for unbalanced_distance, got 3"):
        unbalanced_distance(x, y, p=3, reg=1.4, reg_m=50.0, mu_weights=np.array([0.1, 0.6]),
                            nu_weights=np.array([0.1, 0.3, 0.3]))
    # p = 2: the Gaussian kernel, the same measures are at a positive distance
    assert unbalanced_distance(x, y, p=2, reg=1.4, reg_m=50.0, mu_weights=np.array([0.1, 0.6]),
                               nu_weights=np.array([0.1, 0.3, 0.3])) > 0.1


def test_unbalanced_distance_refuses_a_sinkhorn_stopped_by_its_iteration_cap():
    """POT's Sinkhorn stops silently at numItermax: near balanced OT (reg_m / reg = 1e5) 100 iterations leave a plan
    far from the optimum (the value returned was 0.84 where 4e5 iterations give 0.38), which is refused, naming
    numItermax. A problem that converges (about 1000 iterations at reg_m / reg = 100) gives one value whatever
    the cap beyond that: POT stopped on stopThr both times, at the same iteration."""
    A, B = sample_sphere(40, 3, rng=1), sample_sphere(40, 3, rng=2)
    with pytest.raises(RuntimeError, match="numItermax=100 iterations"):
        unbalanced_distance(A, B, reg=0.01, reg_m=1000.0, numItermax=100)
    assert unbalanced_distance(A, B, reg=0.05, reg_m=5.0, numItermax=10**4) == \
        unbalanced_distance(A, B, reg=0.05, reg_m=5.0, numItermax=10**5)


# --------------------------------------------------------------------------- mutation-audit survivors
def test_two_atoms_at_one_point_merge_into_one():
    """m = 2 atoms at the same direction (the smallest measure with something to merge): one atom of weight
    c_1 + c_2 = 1.5, total variation 1.5 (not |2| + |-0.5|)."""
    u = np.array([[0.6, 0.8], [0.6, 0.8]])
    merged = Measure(np.array([2.0, -0.5]), u).merge()
    assert len(merged) == 1 and float(merged.weights[0]) == 1.5
    np.testing.assert_array_equal(merged.points, u[:1])
    assert Measure(np.array([2.0, -0.5]), u).total_variation() == 1.5


def test_merge_with_atol_one_joins_atoms_within_distance_one():
    """atol = 1: atoms at chord distance 2 sin(15 deg) = 0.52 merge, one at distance sqrt(2) from both stays apart."""
    P = np.array([[1.0, 0.0], [np.cos(np.pi / 6), np.sin(np.pi / 6)], [0.0, -1.0]])
    merged = Measure(np.array([1.0, 2.0, 4.0]), P).merge(atol=1.0)
    np.testing.assert_array_equal(merged.weights, [3.0, 4.0])
    np.testing.assert_array_equal(merged.points, P[[0, 2]])


def test_jordan_parts_carry_no_atom_of_zero_weight():
    """mu = delta_u - delta_u + 2 delta_v - 3 delta_w: the cancelled atom at u is in neither mu^+ = 2 delta_v nor
    mu^- = 3 delta_w (the parts have disjoint supports, and only atoms of nonzero mass)."""
    P = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    mu = Measure(np.array([1.0, -1.0, 2.0, -3.0]), P)
    plus, minus = mu.positive(), mu.negative()
    assert len(plus) == 1 and len(minus) == 1
    np.testing.assert_array_equal(plus.weights, [2.0])
    np.testing.assert_array_equal(minus.weights, [3.0])
    np.testing.assert_array_equal(plus.points, P[[2]])
    np.testing.assert_array_equal(minus.points, P[[3]])


def test_a_measure_times_a_bool_is_refused():
    """Scalars are real numbers, not bools (True * mu would silently be mu): TypeError, as for a string."""
    mu = Measure(np.array([1.0]), np.array([[1.0, 0.0]]))
    for c in (True, "2"):
        with pytest.raises(TypeError):
            mu * c


def test_wasserstein_between_single_particles_is_their_distance():
    """One particle each (default weight 1/1): W_p(delta_x, delta_y) = |x - y| for every p (one coupling)."""
    x, y = np.array([[0.0, 1.0, 2.0]]), np.array([[3.0, 5.0, 2.0]])
    for p in (1, 2, 3):
        assert wasserstein(x, y, p=p) == pytest.approx(5.0, rel=1e-14)


def test_wasserstein_accepts_an_iteration_cap_of_one():
    """numItermax >= 1: one Dirac to one Dirac has a single coupling, found without a pivot: W = |x - y| = 1."""
    assert wasserstein(np.array([0.0]), np.array([1.0]), numItermax=1) == pytest.approx(1.0, rel=1e-14)


def test_wasserstein_between_clouds_at_opposite_extreme_scales():
    """mu = (delta_0 + delta_{3e200})/2 and nu = (delta_{1e-200} + delta_{2e-200})/2 on a line, both orders: the
    sorted coupling gives W_2^2 = ((1e-200)^2 + (3e200 - 2e-200)^2)/2, W_2 = 3e200/sqrt(2) (cost scaled by the
    largest coordinate of both clouds; a zero coordinate or the small cloud must not set the scale)."""
    X, Y = np.array([0.0, 3e200]), np.array([1e-200, 2e-200])
    expected = 3e200 / math.sqrt(2)
    assert wasserstein(X, Y) == pytest.approx(expected, rel=1e-14)
    assert wasserstein(Y, X) == pytest.approx(expected, rel=1e-14)


def test_sliced_wasserstein_on_a_line_is_the_length_of_the_shift():
    """D = 1: every direction is +-1, so each projected distance is |v| and SW_p = W_p = |v| exactly, whatever the
    draws (the directions are normalised, even those of a Gaussian draw of modulus < 1)."""
    X = np.random.default_rng(19).standard_normal(20)
    for p in (1, 2):
        assert sliced_wasserstein(X, X + 0.7, p=p, n_projections=50, rng=3) == pytest.approx(0.7, rel=1e-12)


def test_sliced_wasserstein_of_mass_m_measures_scales_as_m_to_the_one_over_p():
    """Mass M = 4 translated by v on a line: W_2^2 = M |v|^2 (every unit of mass moves |v|), SW_2 = sqrt(M) |v|."""
    X = np.random.default_rng(20).standard_normal(10)
    w = np.full(10, 0.4)
    assert sliced_wasserstein(X, X + 0.5, mu_weights=w, nu_weights=w, rng=4) == pytest.approx(2 * 0.5, rel=1e-12)


def test_unbalanced_distance_to_the_zero_measure_has_a_closed_form():
    """alpha = m delta_x, beta = 0 (nu of zero weight): the only plan to 0 is 0, OT_eps(alpha, 0) = rho m, and
    OT_eps(alpha, alpha) = eps KL(s | m^2) + 2 rho KL(s | m) at its minimiser s = m^{(2 eps + 2 rho)/(eps + 2 rho)}
    (the stationarity eps log(s/m^2) + 2 rho log(s/m) = 0); S = rho m - OT(alpha, alpha)/2 + eps m^2/2. Both
    orders (the zero side alpha or beta). Sinkhorn's 1e-10: 1e-7."""
    reg, rho, m = 0.05, 1.0, 2.0
    s = m ** ((2 * reg + 2 * rho) / (reg + 2 * rho))
    ot_aa = reg * (s * math.log(s / m**2) - s + m**2) + 2 * rho * (s * math.log(s / m) - s + m)
    expected = rho * m - 0.5 * ot_aa + 0.5 * reg * m**2
    mu, zero = Measure(np.array([m]), np.array([[1.0, 0.0]])), Measure(np.array([0.0]), np.array([[0.0, 1.0]]))
    assert unbalanced_distance(mu, zero, reg=reg, reg_m=rho) ** 2 == pytest.approx(expected, rel=1e-7)
    assert unbalanced_distance(zero, mu, reg=reg, reg_m=rho) ** 2 == pytest.approx(expected, rel=1e-7)


def test_unbalanced_distance_takes_a_measure_without_atoms_as_the_zero_measure():
    """The negative part of a nonnegative measure has no atom: it is the zero measure, at the distance of the closed
    form of the test above from m delta_x (it was refused, 'mu has no particle'), and at distance 0 from itself."""
    reg, rho, m = 0.05, 1.0, 2.0
    s = m ** ((2 * reg + 2 * rho) / (reg + 2 * rho))
    ot_aa = reg * (s * math.log(s / m**2) - s + m**2) + 2 * rho * (s * math.log(s / m) - s + m)
    expected = rho * m - 0.5 * ot_aa + 0.5 * reg * m**2
    mu = Measure(np.array([m]), np.array([[1.0, 0.0]]))
    empty = mu.negative()
    assert len(empty) == 0
    # Sinkhorn's stopping threshold 1e-10: 1e-7 on S (as above)
    assert unbalanced_distance(empty, mu, reg=reg, reg_m=rho) ** 2 == pytest.approx(expected, rel=1e-7)
    assert unbalanced_distance(mu, empty, reg=reg, reg_m=rho) ** 2 == pytest.approx(expected, rel=1e-7)
    assert unbalanced_distance(empty, empty) == 0.0


def test_unbalanced_distance_between_far_apart_pairs_is_the_sum_of_their_divergences():
    """delta_0 + delta_10 against delta_0.1 + delta_10.1 (eps = 0.05): the cross costs 100/eps make exp(-C/eps) = 0,
    so the plan has exact zeros (0 log 0 = 0 in KL) and S splits into two Dirac pairs, each
    k (1 - exp(-0.01/k)), k = eps + 2 rho (the two-Dirac closed form). Sinkhorn's 1e-10: 1e-7."""
    reg, rho = 0.05, 1.0
    k = reg + 2 * rho
    ones = np.ones(2)
    got = unbalanced_distance(np.array([0.0, 10.0]), np.array([0.1, 10.1]), reg=reg, reg_m=rho, mu_weights=ones,
                              nu_weights=ones)
    assert got**2 == pytest.approx(2 * k * (1 - math.exp(-0.01 / k)), rel=1e-7)


def test_unbalanced_distance_ignores_atoms_of_zero_weight():
    """mu = delta_x + 0 delta_z, nu = delta_y + 0 delta_z': the zero atoms belong to neither Jordan part, and S is the
    two-Dirac closed form k (1 - exp(-|x - y|^2/k)), k = eps + 2 rho. Sinkhorn's 1e-10: 1e-6."""
    x, y = np.array([1.0, 0.0]), np.array([np.cos(0.7), np.sin(0.7)])
    mu = Measure(np.array([1.0, 0.0]), np.array([x, [0.0, 1.0]]))
    nu = Measure(np.array([0.0, 1.0]), np.array([[0.0, -1.0], y]))
    k = 0.05 + 2 * 1.0
    expected = k * (1 - math.exp(-float(np.sum((x - y) ** 2)) / k))
    assert unbalanced_distance(mu, nu) ** 2 == pytest.approx(expected, rel=1e-6)


def test_unbalanced_distance_between_clusters_of_unequal_sizes_matches_a_direct_minimisation():
    """alpha = delta_0 + delta_0.05 + delta_10, beta = delta_0.1 + delta_10.1 + delta_10.2 (eps = 0.05, rho = 1): the
    cross-cluster kernel exp(-100/eps) is 0, and the clusters differ in size (2 + 1 against 1 + 2), so the plans of
    OT(alpha, beta), OT(alpha, alpha), OT(beta, beta) have 5, 4 and 4 exact zeros: the
    0 log 0 = 0 convention no longer cancels between the three terms. Each OT_eps is minimised here directly over
    the plan's entries (log-parametrised, scipy's L-BFGS-B with the analytic gradient, an independent solver);
    both converge to ~1e-12: 1e-8 relative on S."""
    from scipy.optimize import minimize

    reg, rho = 0.05, 1.0

    def ot_eps(x, y):
        C = (x[:, None] - y[None, :]) ** 2  # (k, l); unit weights, so a x b = 1 and the marginals' targets are 1
        def objective(z):
            P = np.exp(z.reshape(C.shape))
            r, c = P.sum(axis=1), P.sum(axis=0)
            value = ((P * C).sum() + reg * (P * np.log(P) - P + 1).sum()
                     + rho * (r * np.log(r) - r + 1).sum() + rho * (c * np.log(c) - c + 1).sum())
            gradient = P * (C + reg * np.log(P) + rho * np.log(r)[:, None] + rho * np.log(c)[None, :])
            return value, gradient.ravel()
        return minimize(objective, np.zeros(C.size), jac=True, method="L-BFGS-B", bounds=[(-80.0, 10.0)] * C.size,
                        options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 10_000}).fun

    x, y, ones = np.array([0.0, 0.05, 10.0]), np.array([0.1, 10.1, 10.2]), np.ones(3)
    expected = ot_eps(x, y) - ot_eps(x, x) / 2 - ot_eps(y, y) / 2  # equal masses: no mass term
    got = unbalanced_distance(x, y, reg=reg, reg_m=rho, mu_weights=ones, nu_weights=ones) ** 2
    assert got == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_sliced_wasserstein_is_homogeneous_far_from_unit_scale(scale):
    # SW(c mu, c nu) = c SW(mu, nu): at c = 1e200 the projected |<u, x - y>|^2 overflowed and SW was inf
    # (and underflowed to 0 at 1e-200); the scaling by a power of 2 nearest c is exact, so 4 eps covers pow
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 2)), rng.standard_normal((6, 2))
    ref = sliced_wasserstein(X, Y, rng=1)
    assert sliced_wasserstein(X * scale, Y * scale, rng=1) == pytest.approx(ref * scale, rel=4 * np.finfo(float).eps)


@pytest.mark.parametrize("activation", [("relu_power", {"alpha": 2.0}), ("step", {})])
def test_measure_of_a_network_evaluates_with_the_networks_activation(activation):
    # network_to_measure's measure forgot sigma: evaluate, measure_to_network and maurey_sample took relu, and
    # gave another function without a word. The reference: the network itself, f(x) = int sigma(<x, t>) dmu(t)
    from shallow.activations import get_activation
    from shallow.barron import maurey_sample

    sigma = get_activation(activation[0], **activation[1])
    net = TwoLayer.init(6, 3, rng=4, activation=sigma)
    X = np.random.default_rng(5).standard_normal((7, 3))
    mu = net.to_measure()
    assert mu.activation == sigma
    np.testing.assert_allclose(mu.evaluate(X), net(X), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(measure_to_network(mu)(X), net(X), rtol=1e-12, atol=1e-14)
    for kept in (mu.merge(), mu.copy(), -(-mu), 2.0 * mu * 0.5, mu.positive() - mu.negative()):
        np.testing.assert_allclose(kept.evaluate(X), net(X), rtol=1e-12, atol=1e-14)
    assert maurey_sample(mu, 5, rng=0).activation == sigma
    # an explicit activation still wins, and a measure made by hand is evaluated with relu
    by_hand = np.maximum(X @ mu.points.T, 0) @ mu.weights  # sum_j c_j relu(<x, theta_j>)
    np.testing.assert_allclose(mu.evaluate(X, activation="relu"), by_hand, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Measure(mu.weights, mu.points).evaluate(X), by_hand, rtol=1e-12, atol=1e-14)


def test_measures_of_networks_with_different_activations_do_not_add():
    # no one sigma evaluates the sum; a measure without an activation is evaluated with relu, so it adds to relu
    # measures only (it took the other's activation: hand + mu evaluated to another function than their sum)
    relu = TwoLayer.init(3, 2, rng=0).to_measure()
    step = TwoLayer.init(3, 2, rng=1, activation="step").to_measure()
    plain = Measure(step.weights, step.points)
    for a, b in ((relu, step), (plain, step), (step, plain)):
        with pytest.raises(ValueError, match="cannot add measures of networks with different activations"):
            a + b
    X = np.random.default_rng(6).standard_normal((5, 2))
    np.testing.assert_allclose((plain + relu).evaluate(X), plain.evaluate(X) + relu.evaluate(X), rtol=1e-12)
    assert (plain + relu).activation == relu.activation and (plain + plain).activation is None


@pytest.mark.parametrize("D", [3, 200])
def test_close_pairs_are_those_of_a_brute_force_distance_matrix(D):
    # merge's pairs within atol (candidates along one projection, then exact distances) against every pairwise
    # distance (scipy's pdist): clusters of exact duplicates, near-duplicates at atol / 2 and pairs just beyond
    # 2 atol, among scattered atoms
    from scipy.spatial.distance import pdist, squareform

    from shallow.measures import _close_pairs

    rng = np.random.default_rng(13)
    atol = 1e-6
    base = rng.standard_normal((60, D))
    near = base[:20] + 0.5 * atol * rng.standard_normal((20, D)) / np.sqrt(D)
    far = base[20:30] + 2.5 * atol * np.eye(D)[0]
    P = np.concatenate([base, base[:10], near, far])
    got = {tuple(p) for p in _close_pairs(P, atol).tolist()}
    i, j = np.nonzero(np.triu(squareform(pdist(P)) <= atol, k=1))
    assert got == set(zip(i.tolist(), j.tolist())) and len(got) >= 30


def test_sliced_wasserstein_in_blocks_of_directions_is_the_mean_over_all_of_them(monkeypatch):
    # blocks of directions (bounded memory for large measures) against the definition computed here: the p-th root
    # of the mean over the directions of the 1-D W_p^p, each from sorted projections (equal uniform weights);
    # a budget of 240 projections makes blocks of 3, 3 and 1 of the 7 directions for these 80 atoms
    import shallow.measures as measures

    rng = np.random.default_rng(14)
    X, Y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3)) + 0.3
    G = np.random.default_rng(5).standard_normal((3, 7))
    G /= np.linalg.norm(G, axis=0)
    for p in (1.0, 2.0, 3.0):
        w_p = np.mean(np.abs(np.sort(X @ G, axis=0) - np.sort(Y @ G, axis=0)) ** p, axis=0)  # (7,)
        reference = np.mean(w_p) ** (1 / p)
        whole = sliced_wasserstein(X, Y, p=p, n_projections=7, rng=5)
        with monkeypatch.context() as patch:
            patch.setattr(measures, "_SLICED_PROJECTIONS", 240)
            blocked = sliced_wasserstein(X, Y, p=p, n_projections=7, rng=5)
        assert whole == pytest.approx(reference, rel=1e-12) and blocked == pytest.approx(reference, rel=1e-12)


# ----------------------------------------------------------------------------- harmonic spectra

@pytest.mark.parametrize("sigma", ["relu", "abs"])
def test_harmonic_spectrum_on_the_circle_is_the_fourier_energy_of_the_network(sigma):
    # d = 2: the degree-k harmonics are cos k phi and sin k phi, so E_0 = |f^_0|^2 and E_k = |f^_k|^2 + |f^_-k|^2
    # with f^_k = (1/2 pi) int f e^{-ik phi}: numpy's FFT of f on 2^18 points (trapezoid rule; each kink of relu
    # and abs leaves an error of order |jump of f'| h^2 / 12 = 5e-11 in f^_k, so 1e-9 in the energies is loose)
    from shallow.measures import harmonic_spectrum

    rng = np.random.default_rng(3)
    net = TwoLayer(rng.standard_normal(5), rng.standard_normal((5, 2)), activation=sigma, gamma=1.0)
    n = 2**18
    phi = 2 * np.pi * np.arange(n) / n
    F = np.fft.fft(net(np.column_stack([np.cos(phi), np.sin(phi)]))) / n
    ref = [abs(F[0]) ** 2] + [abs(F[k]) ** 2 + abs(F[-k]) ** 2 for k in range(1, 13)]
    np.testing.assert_allclose(harmonic_spectrum(net, 12), ref, rtol=0, atol=1e-9)


def test_harmonic_spectrum_of_a_quadratic_measure_matches_the_moments_of_the_sphere():
    # f(x) = sum_j c_j <theta_j, x>^2 = (sum_j c_j) / d + a degree-2 harmonic: E_0 = (sum c / d)^2, E_2 =
    # sum_{i,j} c_i c_j (E[<a, x>^2 <b, x>^2] - 1/d^2) with E[<a, x>^2 <b, x>^2] = (1 + 2 <a, b>^2) / (d (d + 2))
    # for x uniform on S^{d-1}; every other degree 0 (mu_k(t^2) = 0 for k = 1 and k >= 3)
    from shallow.measures import harmonic_spectrum

    d = 7
    rng = np.random.default_rng(4)
    P = rng.standard_normal((6, d))
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    c = rng.standard_normal(6)
    G = P @ P.T
    E2 = c @ ((1 + 2 * G ** 2) / (d * (d + 2)) - 1 / d ** 2) @ c
    E = harmonic_spectrum(Measure(c, P, activation="quadratic"), 5)
    np.testing.assert_allclose(E, [(c.sum() / d) ** 2, 0, E2, 0, 0, 0], rtol=0, atol=1e-14)


def test_harmonic_spectrum_refuses_a_network_with_a_bias():
    from shallow.measures import harmonic_spectrum

    net = TwoLayer(np.ones(2), np.ones((2, 3)), bias=True)
    with pytest.raises(ValueError, match="network with a bias: its function of x on the sphere is not a sum"):
        harmonic_spectrum(net, 3)
    with pytest.raises(ValueError, match="measure of a network with a bias"):
        harmonic_spectrum(net.to_measure(), 3)


def test_harmonic_spectrum_of_a_measure_of_the_zero_function_is_zero_not_below():
    # sum_i relu(x_i) - relu(-x_i) = sum_i x_i = sqrt(3) <u, x> = sqrt(3) (relu(<u, x>) - relu(-<u, x>)): the measure
    # below is the zero function; its degree-1 energy came out -1.5e-16, which f2_norm_from_harmonics refused
    from shallow.kernels import f2_norm_from_harmonics
    from shallow.measures import harmonic_spectrum

    e, u = np.eye(3), np.ones(3) / np.sqrt(3)
    mu = Measure(np.array([1, 1, 1, -1, -1, -1, -np.sqrt(3), np.sqrt(3)]), np.vstack([e, -e, u, -u]))
    E = harmonic_spectrum(mu, 8)
    assert (E >= 0).all() and E.max() <= 1e-15
    assert f2_norm_from_harmonics(E, np.ones(9)) <= 1e-7


def test_sliced_wasserstein_of_a_large_float32_cloud_and_its_translate_is_the_projected_shift():
    # Y = X + c: on each direction u the 1-D W2 is |<u, c>|, so SW2 = sqrt(mean_u <u, c>^2) over the directions drawn
    # with rng (unit Gaussian columns, as the routine draws them). 10^5 float32 atoms: POT's cumulative sums of float32
    # weights drifted by k eps, 5e-4 relative; X and Y rounded to float32 move each shift by about 1e-7 |x|
    rng = np.random.default_rng(0)
    c = np.full(5, 0.01)
    X = rng.standard_normal((100_000, 5)).astype(np.float32)
    Y = (X + c).astype(np.float32)
    G = np.random.default_rng(1).standard_normal((5, 50))
    G /= np.linalg.norm(G, axis=0, keepdims=True)
    shift = (Y.astype(np.float64) - X.astype(np.float64)) @ G  # (k, 50): each atom's projected shift, as rounded
    ref = np.sqrt(np.mean(np.mean(shift, axis=0) ** 2))  # translations by the mean shift, to 1e-5 of it
    assert sliced_wasserstein(X, Y, n_projections=50, rng=1) == pytest.approx(ref, rel=1e-6)


def test_the_rkhs_norm_of_a_gelu_neuron_for_the_relu_ntk_is_finite():
    # gelu(t) = t/2 + (t/2) erf(t / sqrt 2): its odd part is t/2, of degree 1, so mu_k = 0 for odd k >= 3. Its
    # quadrature coefficients there came out at 1e-15, the energies at 1e-29, and the RKHS norm for the relu NTK
    # (whose odd eigenvalues k >= 3 vanish) infinite; it is finite
    from shallow.kernels import f2_norm_from_harmonics, mercer_eigenvalues
    from shallow.measures import harmonic_spectrum

    E = harmonic_spectrum(Measure(np.array([1.0]), np.array([[0.0, 0.0, 1.0]]), activation="gelu"), 30)
    assert np.all(E[3::2] <= 1e-26 * E.sum()) and np.all(E[:3] > 0)  # zero to the quadrature's rounding
    lam = mercer_eigenvalues("relu_ntk", 3, 30)
    norm = f2_norm_from_harmonics(E, lam)
    even = [k for k in range(31) if k < 2 or k % 2 == 0]
    assert norm == pytest.approx(math.sqrt(sum(E[k] / lam[k] for k in even)), rel=1e-12)


def test_wasserstein_refuses_a_network_simplex_stopped_before_optimality():
    """A network simplex capped before optimality leaves no coupling (here a plan of mass 0.40 whose W_2 was
    0.49 for a true 1.82): the value is refused with an error naming numItermax. With the default cap the
    same clouds give W_2^2 = the optimal assignment cost / k (for k = l points of weight 1/k, an optimal
    coupling is a permutation), from scipy's Hungarian solver to rounding (rtol 1e-12)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((300, 3)), rng.standard_normal((300, 3)) + 1
    with pytest.raises(RuntimeError, match="numItermax=50"):
        wasserstein(X, Y, numItermax=50)
    C = cdist(X, Y, "sqeuclidean")
    rows, cols = linear_sum_assignment(C)
    assert wasserstein(X, Y) == pytest.approx(math.sqrt(C[rows, cols].mean()), rel=1e-12)


def test_generalised_kl_is_the_sum_of_relative_entropies():
    # KL(p | q) = sum p log(p / q) - p + q with 0 log 0 = 0 (the divergence of unbalanced OT), against scipy's
    # rel_entr elementwise; p with zero entries, as a plan has, and in the (k, l) shape of one
    from scipy.special import rel_entr

    from shallow.measures import _generalised_kl

    rng = np.random.default_rng(50)
    p = rng.uniform(0, 1, (40, 30)) * (rng.uniform(size=(40, 30)) > 0.3)
    q = rng.uniform(0.1, 1, (40, 30))
    expected = float((rel_entr(p, q) - p + q).sum())
    assert _generalised_kl(np, p, q) == pytest.approx(expected, rel=1e-13)  # sums of 1200 terms of size ~1
    assert _generalised_kl(np, p.sum(axis=1), q.sum(axis=1)) == pytest.approx(
        float((rel_entr(p.sum(axis=1), q.sum(axis=1)) - p.sum(axis=1) + q.sum(axis=1)).sum()), rel=1e-13)


def l1_ball_least_squares_by_slsqp(A, y, R):
    """min (1/2n) |A a - y|^2 over |a|_1 <= R by scipy's SLSQP on a = z+ - z-, z >= 0, sum z <= R (the oracle)."""
    from scipy.optimize import minimize

    n, m = A.shape

    def objective(z):
        r = A @ (z[:m] - z[m:]) - y
        g = A.T @ r / n
        return 0.5 * float(r @ r) / n, np.concatenate([g, -g])

    return minimize(objective, np.zeros(2 * m), jac=True, method="SLSQP", bounds=[(0, None)] * (2 * m),
                    constraints=[{"type": "ineq", "fun": lambda z: R - z.sum(), "jac": lambda z: -np.ones(2 * m)}],
                    options={"ftol": 1e-16, "maxiter": 1000})


# --------------------------------------------------------------------------- conditional gradient
def _dictionary_problem(R):
    """A least squares problem over a fixed dictionary of 30 relu atoms on S^2, and its l1-constrained
    optimum F* computed independently: SLSQP on the positive and negative parts a = u - v, u, v >= 0,
    sum(u + v) <= R (the l1 ball as linear constraints)."""
    rng = np.random.default_rng(1)
    n, m = 100, 30
    X = sample_sphere(n, 3, rng=rng)  # (n, 3)
    C = sample_sphere(m, 3, rng=rng)  # (m, 3) the dictionary
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2  # not in the span: |a_LS|_1 = 57, so the ball binds for R <= 20
    A = np.maximum(X @ C.T, 0.0)  # (n, m)

    res = l1_ball_least_squares_by_slsqp(A, y, R)
    assert res.success and abs(res.x.sum() - R) < 1e-9  # the constraint is active: the test is not plain least squares
    return X, y, C, A, float(res.fun)


@pytest.mark.parametrize("R", [5.0, 20.0])
def test_fully_corrective_frank_wolfe_on_a_dictionary_reaches_the_l1_constrained_least_squares_optimum(R):
    # Over a finite dictionary fully-corrective FW is exact in finitely many steps; F* from SLSQP (above).
    # Tolerance 1e-12 absolute (F* ~ 0.05 - 0.07): both solvers end at the optimum up to rounding
    # (measured: |difference| <= 1e-16).
    X, y, C, _, fstar = _dictionary_problem(R)
    mu, history = conditional_gradient(X, y, R, candidates=C, variant="fully-corrective", steps=60)
    assert abs(history["objective"][-1] - fstar) <= 1e-12
    r = mu.evaluate(X) - y
    assert abs(0.5 * float(r @ r) / len(y) - history["objective"][-1]) <= 1e-14  # the history is mu's objective


@pytest.mark.parametrize("step_rule", ["2/(t+2)", "line-search"])
def test_classic_frank_wolfe_obeys_jaggi_bound_and_its_gap_certifies_suboptimality(step_rule):
    # Jaggi 2013, Theorem 1: F(mu_t) - F* <= 2 C / (t + 2), with C <= 4 R^2 max_j |A_j|^2 / n for the
    # quadratic F (|f_s - f_mu| <= |s - mu|_TV max_j |A_j|, |s - mu|_TV <= 2R); and by convexity the duality
    # gap g(mu_t) >= F(mu_t) - F* at every t (Jaggi 2013, Sec. 2). Rounding allowance 1e-13 on both
    # (objectives ~0.1 summed over 100 points in float64).
    R = 5.0
    X, y, C, A, fstar = _dictionary_problem(R)
    _, history = conditional_gradient(X, y, R, candidates=C, variant="classic", step_rule=step_rule, steps=200)
    t = np.arange(len(history["objective"]))
    suboptimality = history["objective"] - fstar
    curvature = 4 * R**2 * float((A**2).sum(axis=0).max()) / len(y)
    assert np.all(suboptimality[1:] <= 2 * curvature / (t[1:] + 2) + 1e-13)
    assert np.all(history["gap"] >= suboptimality - 1e-13)
    assert suboptimality[-1] < 0.05 * suboptimality[1]  # and it does converge (measured: ratios 0.005, 0.022)


def test_fully_corrective_gap_certifies_suboptimality_on_a_dictionary():
    # g(mu_t) >= F(mu_t) - F* (convexity; the oracle is exact over the dictionary), F* from SLSQP.
    R = 20.0
    X, y, C, _, fstar = _dictionary_problem(R)
    _, history = conditional_gradient(X, y, R, candidates=C, variant="fully-corrective", steps=40)
    assert np.all(history["gap"] >= history["objective"] - fstar - 1e-13)


def test_sliding_frank_wolfe_recovers_a_sparse_relu_measure():
    # y = f_mu* on 200 points of S^2, mu* = three relu atoms (an orthonormal frame, weights 1, 0.8, -0.6,
    # |mu*|_TV = 2.4 < R = 3): F(mu*) = 0 is the minimum, and mu* is its only 3-atom minimiser (the
    # 3-atom relu functions on 200 generic points are identified by their kinks). Sliding FW reaches it to
    # rounding (measured: F ~ 1e-21 from step 3 on, atoms at angle 0 - 1.5e-8 rad, weights within 1e-8).
    # Tolerances: F <= 1e-14 (10^-12 of F(0) = 0.03); angle 1e-6 rad and weights 1e-6, loose against the
    # measured 1e-8 yet far below what a wrong atom would give (angles between atoms >= pi/2).
    rng = np.random.default_rng(0)
    theta = np.linalg.qr(rng.standard_normal((3, 3)))[0]  # (3, 3) rows: the atoms
    c = np.array([1.0, 0.8, -0.6])
    X = sample_sphere(200, 3, rng=rng)
    y = np.maximum(X @ theta.T, 0.0) @ c
    mu, history = conditional_gradient(X, y, 3.0, variant="sliding", steps=5, rng=0)
    assert history["objective"][-1] <= 1e-14
    angles = np.arccos(np.clip(mu.points @ theta.T, -1.0, 1.0))  # (k, 3)
    for j in range(3):
        near = angles[:, j] < 1e-6
        assert near.any() and abs(mu.weights[near].sum() - c[j]) <= 1e-6
    assert np.abs(mu.weights[~(angles < 1e-6).any(axis=1)]).sum() <= 1e-6  # the other atoms carry no mass


def test_merging_coincident_atoms_leaves_f_unchanged_and_does_not_raise_the_total_variation():
    # Atoms at one point (sliding's collisions) merge into one with the sum of their weights: f_mu is the same
    # function (sum_j a_j sigma(<theta, x>) = (sum_j a_j) sigma(<theta, x>)) and |sum_j a_j| <= sum_j |a_j|.
    # Checked for tanh (the distance merge only) and relu, against f computed atom by atom; tolerance 1e-14
    # (|f| ~ 1, a handful of float64 sums).
    from shallow.measures import _merge_atoms

    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 3))
    Theta = sample_sphere(3, 3, rng=rng)[[0, 1, 0, 2, 1, 0]]  # (6, 3): three points, repeated
    a = np.array([0.5, -0.2, 0.25, 0.3, 0.4, -0.75])
    for name in ["tanh", "relu"]:
        sigma = get_activation(name)
        T2, a2 = _merge_atoms(Theta, a, X, sigma, 1.5e-8)
        assert len(a2) <= 3
        before = sum(a[j] * sigma(X @ Theta[j]) for j in range(6))
        after = sum(a2[j] * sigma(X @ T2[j]) for j in range(len(a2)))
        assert np.abs(after - before).max() <= 1e-14
        assert np.abs(a2).sum() <= np.abs(a).sum() * (1 + 1e-15)


def test_merging_near_atoms_moves_f_by_at_most_their_weight_times_lip_sigma_times_the_distance():
    # Atoms within atol merge at the group's first atom: |f' - f|(x) <= sum_j |a_j| Lip(sigma) |theta_j - theta_1| |x|
    # (Lip(tanh) = 1), on inputs where the distance merge alone acts (tanh is not homogeneous).
    from shallow.measures import _merge_atoms

    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 2))
    theta = np.array([0.6, 0.8])
    phi = np.array([0.0, 1e-9, 2e-9])  # (3,) angles from theta, within atol = 1.5e-8 of each other
    Theta = np.stack([np.cos(phi) * theta + np.sin(phi) * np.array([-0.8, 0.6]) for phi in phi])  # (3, 2)
    a = np.array([0.7, -0.2, 0.4])
    sigma = get_activation("tanh")
    T2, a2 = _merge_atoms(Theta, a, X, sigma, 1.5e-8)
    assert len(a2) == 1 and abs(a2[0] - a.sum()) <= 1e-15
    change = np.abs(a2[0] * np.tanh(X @ T2[0]) - np.tanh(X @ Theta.T) @ a)
    bound = (np.abs(a) * np.linalg.norm(Theta - Theta[0], axis=1)).sum() * np.linalg.norm(X, axis=1)
    assert np.all(change <= bound + 1e-15)  # + rounding of the three-term sum


@pytest.mark.parametrize("s", [1.0, -1.0])
def test_merging_relu_atoms_of_one_activation_pattern_is_exact_on_the_data(s):
    # relu is linear on the cone of directions with one sign pattern of <x_i, theta>: atoms there with weights of
    # one sign s equal the one atom v/|v|, v = sum_j |a_j| theta_j, of weight s |v| <= sum_j |a_j| (strictly,
    # for distinct atoms). Five atoms in one cell (an arc free of the data's hyperplanes) become one; f on the data
    # computed atom by atom is unchanged to 1e-14 (|f| ~ 1).
    from shallow.measures import _merge_atoms

    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 2))
    kinks = np.sort(np.mod(np.arctan2(X[:, 1], X[:, 0])[:, None] + [np.pi / 2, -np.pi / 2], 2 * np.pi).ravel())
    i = int(np.argmax(np.diff(kinks)))  # the widest cell (kinks[i], kinks[i + 1])
    phi = kinks[i] + (kinks[i + 1] - kinks[i]) * np.array([0.1, 0.3, 0.5, 0.7, 0.9])  # (5,)
    Theta = np.stack([np.cos(phi), np.sin(phi)], axis=1)  # (5, 2)
    a = s * np.array([0.2, 0.1, 0.3, 0.05, 0.25])
    T2, a2 = _merge_atoms(Theta, a, X, get_activation("relu"), 1.5e-8)
    assert len(a2) == 1 and 0 < s * a2[0] < np.abs(a).sum()
    before = np.maximum(X @ Theta.T, 0) @ a
    after = a2[0] * np.maximum(X @ T2[0], 0)
    assert np.abs(after - before).max() <= 1e-14


def test_sliding_frank_wolfe_with_the_ball_active_reaches_the_optimum_on_the_circle():
    # The variation-norm ball binds (R = 1 < |mu_target|_TV = 2.2, with noise). On the circle (d = 2) the duality
    # gap g(mu) = <r, f>/n + R max_theta |<r, relu(X theta)>|/n >= F(mu) - F* is computed exactly here, apart from
    # the code: on each arc between consecutive kinks (the data's hyperplanes) <r, relu(X theta)> = <c, theta>
    # is linear, its maximum over the arc at an end or at c/|c|. Sliding (which merges the atoms it brings
    # together) reaches F* to 1e-12 of F(0) (measured: this gap 1e-14, the reported one 6e-17, 30 steps in
    # 0.6 s; without the merge 12 s and gap 5e-11), its objective never rises (allowance 1e-15) and is not above
    # the fully-corrective one's.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    W = np.array([[0.6, 0.8], [-0.8, 0.6], [0.0, -1.0]])
    y = np.maximum(X @ W.T, 0) @ np.array([1.0, -0.5, 0.7]) + 0.05 * rng.standard_normal(60)
    R, n = 1.0, 60
    mu, history = conditional_gradient(X, y, R, steps=30, variant="sliding", rng=0)
    r = np.maximum(X @ mu.points.T, 0) @ mu.weights - y
    F = 0.5 * float(r @ r) / n
    kinks = np.sort(np.mod(np.arctan2(X[:, 1], X[:, 0])[:, None] + [np.pi / 2, -np.pi / 2], 2 * np.pi).ravel())
    best = 0.0
    for lo, hi in zip(kinks, np.append(kinks[1:], kinks[0] + 2 * np.pi)):
        mid = 0.5 * (lo + hi)
        active = X @ np.array([np.cos(mid), np.sin(mid)]) > 0
        c = r[active] @ X[active] / n  # (2,)
        ends = [np.cos(lo) * c[0] + np.sin(lo) * c[1], np.cos(hi) * c[0] + np.sin(hi) * c[1]]
        best = max(best, *np.abs(ends))
        if np.mod(np.arctan2(c[1], c[0]) - lo, 2 * np.pi) <= hi - lo:  # c/|c| (and -c/|c| below) inside the arc
            best = max(best, float(np.linalg.norm(c)))
        if np.mod(np.arctan2(-c[1], -c[0]) - lo, 2 * np.pi) <= hi - lo:
            best = max(best, float(np.linalg.norm(c)))
    gap = float(r @ (r + y)) / n + R * best
    assert abs(F - history["objective"][-1]) <= 1e-15
    assert gap <= 1e-12 * 0.5 * float(y @ y) / n
    assert mu.total_variation() <= R * (1 + 1e-12)
    assert np.all(np.diff(history["objective"]) <= 1e-15)
    _, corrective = conditional_gradient(X, y, R, steps=30, variant="fully-corrective", rng=0)
    assert history["objective"][-1] <= corrective["objective"][-1] + 1e-15


@pytest.mark.parametrize("variant", ["classic", "fully-corrective", "sliding"])
def test_conditional_gradient_iterates_stay_in_the_variation_norm_ball(variant, xp):
    # |mu_t|_TV <= R for every variant, R binding (a target of F1 norm >> R = 0.5); allowance 1e-12 R
    # for the rounding of the weight solves. The measure comes back on the device and dtype of X.
    rng = np.random.default_rng(2)
    X = sample_sphere(80, 3, rng=rng)
    y = np.sin(4 * X[:, 2]) * 3
    R = 0.5
    mu, history = conditional_gradient(xp.asarray(X), xp.asarray(y), R, variant=variant, steps=8, candidates=200,
                                       rng=0)
    assert mu.total_variation() <= R * (1 + 1e-12)
    assert mu.device == ("cpu" if xp is np else "gpu") and mu.dtype == np.float64
    assert np.all(np.diff(history["objective"]) <= 1e-15) or variant == "classic"  # descent, except classic
    assert history["support"][-1] == len(mu)


@pytest.mark.parametrize("kwargs, message", [
    ({"radius": 0.0}, "radius must be a positive finite number"),
    ({"radius": np.inf}, "radius must be a positive finite number"),
    ({"variant": "away"}, "variant must be one of"),
    ({"step_rule": "armijo"}, "step_rule must be one of"),
    ({"steps": -1}, "steps must be an integer >= 0"),
    ({"y": np.zeros(7)}, "y has 7 entries but X has n=10 rows"),
    ({"X": np.zeros((10, 1))}, "atoms need D >= 2"),
    ({"candidates": np.ones((4, 3)) / np.sqrt(3)}, "a dictionary of shape (m, 2)"),
    ({"candidates": np.ones((4, 2))}, "candidates must lie on the unit sphere"),
    ({"candidates": 0}, "candidates must be an integer >= 1"),
    ({"variant": "sliding", "candidates": np.eye(2)}, "moves the atoms off a fixed dictionary"),
    ({"y": np.full(10, np.nan)}, "y contains 10 NaN"),
    ({"tol": -1.0}, "tol must be a finite number >= 0"),
])
def test_conditional_gradient_refuses_bad_input(kwargs, message):
    args = {"X": sample_sphere(10, 2, rng=0), "y": np.ones(10), "radius": 1.0, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        conditional_gradient(args.pop("X"), args.pop("y"), args.pop("radius"), **args)


@pytest.mark.parametrize("kwargs, message", [
    ({"candidates": True}, "candidates must be an int >= 1 (random directions per oracle call) or a dictionary"),
    ({"candidates": 2.5}, "candidates must be an int >= 1 (random directions per oracle call) or a dictionary"),
    ({"subsample": 0}, "subsample must be an integer >= 1, got 0"),
    ({"subsample": -3, "candidates": np.eye(2)}, "subsample must be an integer >= 1, got -3"),
])
def test_best_neuron_refuses_bad_input(kwargs, message):
    # A scalar that is not an int used to be read as a 0-dimensional dictionary ('a 2-dimensional array'), and a
    # subsample beside a dictionary, which ignores it, was not checked at all.
    X = sample_sphere(10, 2, rng=0)
    with pytest.raises(ValueError, match=re.escape(message)):
        best_neuron(np.ones(10), X, rng=0, **kwargs)


def relu_correlation_maximiser_on_the_circle(X, r):
    """argmax |<r, relu(<theta, X>)>| over a grid of 2 10^4 angles of the circle (step 3e-4 rad): the oracle."""
    phi = np.linspace(0, 2 * np.pi, 20_000, endpoint=False)
    grid = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    return grid[np.argmax(np.abs(np.maximum(X @ grid.T, 0.0).T @ r))]


def test_best_neuron_is_the_exact_maximiser_over_a_dictionary_and_refines_on_the_circle():
    # Over a dictionary: argmax_j |<r, sigma(<c_j, X>)>| by brute force. On the circle with r = -y,
    # y = relu(<v, x>): the maximiser of |<y, relu(<theta, X>)>| / |relu(<theta, X>)| would be v; the oracle
    # maximises the unnormalised correlation, whose maximiser on a grid of 2 10^4 angles is the reference
    # (tolerance 1e-3 rad: the grid step is 3e-4, the L-BFGS-B refinement converges to ~1e-6).
    rng = np.random.default_rng(3)
    X = sample_sphere(300, 2, rng=rng)
    r = rng.standard_normal(300)
    C = sample_sphere(40, 2, rng=rng)
    theta, value = best_neuron(r, X, candidates=C)
    corr = np.array([r @ np.maximum(X @ c, 0.0) for c in C])
    j = int(np.argmax(np.abs(corr)))
    np.testing.assert_array_equal(theta, C[j])
    assert value == pytest.approx(corr[j] / 300, rel=1e-14)
    best = relu_correlation_maximiser_on_the_circle(X, r)
    theta, _ = best_neuron(r, X, candidates=100, rng=0)
    assert np.arccos(min(1.0, float(theta @ best))) <= 1e-3


# --------------------------------------------------------------------------- conditional gradient: its parts
def test_best_neuron_value_is_the_first_variation_at_theta_over_all_points_when_it_searches_a_subsample():
    # The value returned is (1/n) <r, sigma(<theta, X>)> over all n points (Returns), whatever subset the search
    # used: brute force at the returned theta. 1e-13 relative: sums of 200 terms of size ~1.
    rng = np.random.default_rng(80)
    X = sample_sphere(200, 3, rng=rng)
    r = rng.standard_normal(200)
    theta, value = best_neuron(r, X, candidates=50, subsample=20, rng=1)
    assert value == pytest.approx(float(r @ np.maximum(X @ theta, 0.0)) / 200, rel=1e-13)


def test_best_neuron_on_a_subsample_of_all_points_is_the_full_search_on_the_circle():
    # subsample = n draws a permutation (without replacement): the search is that on all points, and refined it
    # reaches the maximiser of |<r, relu(<theta, X>)>| on a grid of 2 10^4 angles (tolerance 1e-3 rad: the grid
    # step is 3e-4). Drawn with replacement, repeated points would reweight the objective and move its maximiser.
    rng = np.random.default_rng(81)
    X = sample_sphere(60, 2, rng=rng)
    r = rng.standard_normal(60)
    best = relu_correlation_maximiser_on_the_circle(X, r)
    theta, _ = best_neuron(r, X, candidates=100, refine=50, subsample=60, rng=2)
    assert np.arccos(min(1.0, float(theta @ best))) <= 1e-3


def test_best_neuron_with_a_bias_correlates_r_with_relu_of_x_plus_the_last_coordinate():
    # bias=True: atoms c on S^2 act on (x, 1), sigma(<c[:2], x> + c[2]); over a dictionary the search is exact:
    # brute force, 1e-13 relative (sums of 100 terms).
    rng = np.random.default_rng(82)
    X = rng.standard_normal((100, 2))
    r = rng.standard_normal(100)
    C = sample_sphere(30, 3, rng=rng)
    corr = np.maximum(X @ C[:, :2].T + C[:, 2], 0.0).T @ r / 100  # (30,)
    j = int(np.argmax(np.abs(corr)))
    theta, value = best_neuron(r, X, candidates=C, bias=True)
    np.testing.assert_array_equal(theta, C[j])
    assert value == pytest.approx(corr[j], rel=1e-13)


@pytest.mark.parametrize("scale", [0.5, 1.5, 3.0])
def test_project_l1_is_the_soft_threshold_whose_l1_norm_is_the_radius(scale):
    # Duchi et al. 2008: the projection of v on {|a|_1 <= R} is v itself inside the ball, else
    # sign(v) max(|v| - tau, 0) with tau > 0 the root of sum max(|v| - tau, 0) = R (brentq here, to 1e-15).
    # |v|_1 = scale R: inside (0.5) and outside (1.5, 3). Rounding tolerance 1e-13.
    from scipy.optimize import brentq

    from shallow.measures import _project_l1

    rng = np.random.default_rng(83)
    v = rng.standard_normal(25)
    R = float(np.abs(v).sum()) / scale
    if scale <= 1:
        expected = v
    else:
        tau = brentq(lambda t: np.maximum(np.abs(v) - t, 0).sum() - R, 0.0, np.abs(v).max(), xtol=1e-15)
        expected = np.sign(v) * np.maximum(np.abs(v) - tau, 0)
    np.testing.assert_allclose(_project_l1(v, R), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("fraction", [0.3, 0.8])
@pytest.mark.parametrize("iterations", [1, 60, 2000])
def test_l1_least_squares_reaches_the_constrained_optimum_from_slsqp(fraction, iterations):
    # argmin_{|a|_1 <= R} (1/2n) |F a - y|^2 with R = fraction |a_LS|_1 (the ball binds), against SLSQP on the
    # positive and negative parts (the l1 ball as linear constraints). Objective to 1e-12 absolute (~0.3: both
    # end at the optimum up to rounding) and |a|_1 <= R (1 + 1e-12). With 1 and 60 iterations the active-set
    # polish has to deliver it, from the support and signs of an early FISTA iterate (dropping atoms whose
    # sign flips, adding the most violating ones).
    from shallow.measures import _l1_least_squares

    rng = np.random.default_rng(84)
    n, k = 80, 12
    F = rng.standard_normal((n, k))
    y = F @ rng.standard_normal(k) + 0.5 * rng.standard_normal(n)
    R = fraction * float(np.abs(np.linalg.lstsq(F, y, rcond=None)[0]).sum())

    ref = l1_ball_least_squares_by_slsqp(F, y, R)
    a = _l1_least_squares(F, y, R, np.zeros(k), iterations, 1e-16)
    res = F @ a - y
    assert abs(0.5 * float(res @ res) / n - ref.fun) <= 1e-12 and np.abs(a).sum() <= R * (1 + 1e-12)


def test_classic_frank_wolfe_first_open_loop_steps_are_the_convex_combinations_of_the_best_vertices():
    # gamma_t = 2/(t + 2): mu_1 = s_0 (gamma_0 = 1) and mu_2 = mu_1 / 3 + 2 s_1 / 3, s_t = -R sign(F'(theta_t))
    # delta_{theta_t}, theta_t the dictionary atom maximising |<f_t - y, relu(<theta, X>)>| (brute force).
    # Objectives to 1e-14 absolute (rounding of sums of 100 terms ~0.1).
    R = 5.0
    X, y, C, A, _ = _dictionary_problem(R)
    n = len(y)
    f, expected = np.zeros(n), [0.5 * float(y @ y) / n]
    for t in range(2):
        corr = A.T @ (f - y)
        j = int(np.argmax(np.abs(corr)))
        f = (1 - 2 / (t + 2)) * f + 2 / (t + 2) * (-R * np.sign(corr[j]) * A[:, j])
        expected.append(0.5 * float((f - y) @ (f - y)) / n)
    _, history = conditional_gradient(X, y, R, candidates=C, variant="classic", step_rule="2/(t+2)", steps=2)
    np.testing.assert_allclose(history["objective"], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("step_rule", ["2/(t+2)", "line-search"])
def test_classic_frank_wolfe_returns_the_measure_whose_objective_it_reports(step_rule):
    # Over a dictionary the oracle returns atoms already in mu_t, whose weights then change in place: the
    # returned measure's objective (evaluated by Measure.evaluate) is the history's last, to rounding 1e-14.
    R = 5.0
    X, y, C, _, _ = _dictionary_problem(R)
    mu, history = conditional_gradient(X, y, R, candidates=C, variant="classic", step_rule=step_rule, steps=60)
    r = mu.evaluate(X) - y
    assert abs(0.5 * float(r @ r) / len(y) - history["objective"][-1]) <= 1e-14


def test_duality_gap_is_nonnegative_even_when_a_random_oracle_misses():
    # The gap is computed at the better of the oracle's answer and mu_t's own atoms, so by Hoelder
    # (|<r, f>| / n = |sum_j a_j F'(theta_j)| <= |a|_1 max_j |F'(theta_j)| <= R max_j |F'(theta_j)|) it is >= 0
    # at every step, even with a one-direction oracle that misses. Rounding allowance 1e-15.
    rng = np.random.default_rng(85)
    X = sample_sphere(60, 4, rng=rng)
    y = np.sin(3 * X[:, 0]) + X[:, 1]
    _, history = conditional_gradient(X, y, 0.5, variant="fully-corrective", steps=15, candidates=1, refine=0, rng=3)
    assert np.all(history["gap"] >= -1e-15)


def test_conditional_gradient_stops_at_a_gap_of_zero_for_tol_zero():
    # tol: stop when the gap falls to tol or below. y = 0: mu_0 = 0 is optimal, its gap is exactly 0, so
    # tol=0 stops at t = 0 with the history of mu_0 alone.
    X = sample_sphere(20, 3, rng=86)
    mu, history = conditional_gradient(X, np.zeros(20), 1.0, variant="classic", steps=5, candidates=10, tol=0.0,
                                       rng=0)
    assert len(history["objective"]) == 1 and len(mu) == 0


def test_conditional_gradient_without_tol_makes_every_step_and_reports_each_iterate():
    # steps = T without tol: iterations t = 0, ..., T - 1 all made, a history of T + 1 entries (mu_0 = 0 to
    # mu_T); a classic step from mu_0 adds one atom (gamma_0 = 1 for the open-loop rule)
    X, y, C, _, _ = _dictionary_problem(5.0)
    _, history = conditional_gradient(X, y, 5.0, candidates=C, variant="classic", step_rule="2/(t+2)", steps=3)
    assert len(history["objective"]) == 4 and history["support"][0] == 0 and history["support"][1] == 1


@pytest.mark.parametrize("scale", [1e-3, 1e3, 1e-100, 1e100])
def test_best_neuron_refinement_on_the_circle_is_invariant_to_the_scale_of_r(scale):
    # argmax_theta |<c r, relu(<theta, X>)>| does not depend on c > 0: for r of any size the refined search
    # reaches the maximiser on a grid of 2 10^4 angles (tolerance 1e-3 rad: the grid step is 3e-4), as for
    # r of size 1. L-BFGS-B's absolute pgtol (1e-5) on -corr^2 stopped the ascent at once for c = 1e-3.
    rng = np.random.default_rng(87)
    X = sample_sphere(60, 2, rng=rng)
    r = rng.standard_normal(60)
    best = relu_correlation_maximiser_on_the_circle(X, r)
    theta, value = best_neuron(scale * r, X, candidates=20, refine=50, rng=2)
    assert np.arccos(min(1.0, float(theta @ best))) <= 1e-3
    assert value == pytest.approx(scale * float(r @ np.maximum(X @ theta, 0.0)) / 60, rel=1e-13)
