"""Barron norms, representations by neurons, Maurey sampling, and F1 vs F2 norms of a single neuron."""

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from shallow.backend import to_numpy
from shallow.barron import (COSINE, GaussianTarget, Representation, RidgeTarget, barron_bound, barron_norm,
                            maurey_bound, maurey_sample, sample_ball, single_neuron_norms)
from shallow.measures import Measure
from shallow.networks import TwoLayer
from shallow.sphere import sample_sphere


def gaussian(X, scale=1.0, amplitude=1.0, center=0.0):
    """A exp(-|x - c|^2 / (2 s^2)), written here independently of the library."""
    return amplitude * np.exp(-((np.asarray(X) - center) ** 2).sum(axis=-1) / (2 * scale**2))


def N_harmonics(d, k):
    """dim of degree-k harmonics on S^{d-1}: C(k+d-1, k) - C(k+d-3, k-2) (homogeneous polynomials)."""
    return special.comb(k + d - 1, k, exact=True) - (special.comb(k + d - 3, k - 2, exact=True) if k >= 2 else 0)


# --------------------------------------------------------------------------- Fourier convention
def test_gaussian_fourier_transform_follows_the_stated_convention():
    # f_hat(omega) = (2 pi)^{-d} int e^{-i <omega, x>} f(x) dx, by quadrature of the test's own
    # Gaussian (d = 1 and d = 2 as a product); and f(x) = int e^{i <omega, x>} f_hat(omega) d omega back.
    s, A, c = 0.7, -1.3, 0.4
    f = GaussianTarget(1, scale=s, amplitude=A, center=[c])
    for w in (0.0, 0.9, 2.5):
        re = integrate.quad(lambda x: np.cos(w * x) * gaussian([x], s, A, c), -30, 30, epsabs=1e-14)[0]
        im = integrate.quad(lambda x: -np.sin(w * x) * gaussian([x], s, A, c), -30, 30, epsabs=1e-14)[0]
        np.testing.assert_allclose(f.fourier_transform(np.array([[w]]))[0], (re + 1j * im) / (2 * np.pi),
                                   rtol=0, atol=1e-12)
    for x in (0.0, 0.3, -1.1):
        re = integrate.quad(lambda w: (np.exp(1j * w * x) * f.fourier_transform(np.array([[w]]))[0]).real,
                            -40, 40, epsabs=1e-14)[0]
        np.testing.assert_allclose(re, gaussian([x], s, A, c), rtol=0, atol=1e-12)
    f2 = GaussianTarget(2, scale=s, center=[c, -0.2])
    w = np.array([[0.5, -1.2]])
    one_d = [GaussianTarget(1, scale=s, center=[ci]).fourier_transform(np.array([[wi]]))[0]
             for ci, wi in zip((c, -0.2), w[0])]
    np.testing.assert_allclose(f2.fourier_transform(w)[0], one_d[0] * one_d[1], rtol=1e-13)


# --------------------------------------------------------------------------- Barron norms
@pytest.mark.parametrize("d", [1, 2, 5, 10])
@pytest.mark.parametrize("scale, amplitude", [(1.0, 1.0), (0.5, -2.0)])
def test_barron_norm_of_a_gaussian_matches_its_closed_form(d, scale, amplitude):
    # f_hat = A times the N(0, I/s^2) density (times a phase): C_f = |A| E|omega|_p. Reference values
    # from scipy.stats: the chi_d mean (p = 2), d times the half-normal mean (p = 1), the chi2_d mean
    # for the second moment; and a radial quadrature of |omega| |f_hat| with the sphere area.
    f = GaussianTarget(d, scale=scale, amplitude=amplitude, center=np.full(d, 0.3))
    A = abs(amplitude)
    np.testing.assert_allclose(barron_norm(f, norm=2), A * stats.chi(d).mean() / scale, rtol=1e-13)
    np.testing.assert_allclose(barron_norm(f, norm=1), A * d * stats.halfnorm.mean() / scale, rtol=1e-13)
    np.testing.assert_allclose(f.barron_norm(norm=2, order=2), A * stats.chi2(d).mean() / scale**2, rtol=1e-13)
    np.testing.assert_allclose(f.barron_norm(order=0), A, rtol=1e-15)
    area = 2 * np.pi ** (d / 2) / special.gamma(d / 2)
    e = np.zeros((1, d))

    def radial(rho):
        e[0, 0] = rho
        return area * rho**d * abs(f.fourier_transform(e)[0])

    value = integrate.quad(radial, 0, 40 / scale, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    np.testing.assert_allclose(barron_norm(f, norm=2), value, rtol=1e-10)


@pytest.mark.parametrize("d, num", [(1, 256), (2, 128), (3, 48)])
@pytest.mark.parametrize("norm", [1, 2])
def test_grid_estimator_of_the_barron_norm_matches_the_closed_form(d, num, norm):
    # Midpoint rule on [-L, L]^d with the kink corrections: O((L/num)^4) here; the stated tolerance
    # 1e-4 (relative) holds with room at these grids (the plain rule errs by about 1e-2).
    f = GaussianTarget(d, scale=0.8, amplitude=1.5, center=np.linspace(-0.5, 0.5, d))
    estimate = barron_norm(f.fourier_transform, d=d, norm=norm, extent=8.0 / 0.8, num=num)
    np.testing.assert_allclose(estimate, f.barron_norm(norm=norm), rtol=1e-4)


@pytest.mark.parametrize("d, n, h", [(1, 512, 0.05), (2, 128, 0.15), (3, 48, 0.4)])
@pytest.mark.parametrize("norm", [1, 2])
def test_fft_estimator_of_the_barron_norm_matches_the_closed_form(d, n, h, norm):
    # Samples on a grid centred away from the origin (the phase must not matter); relative 1e-4.
    s, c = 0.9, 0.3
    axis = c + h * (np.arange(n) - n // 2)
    grids = np.meshgrid(*([axis] * d), indexing="ij")
    X = np.stack(grids, axis=-1)
    values = gaussian(X, s, 2.0, center=np.full(d, c))
    expected = GaussianTarget(d, scale=s, amplitude=2.0).barron_norm(norm=norm)
    np.testing.assert_allclose(barron_norm(values, norm=norm, spacing=h), expected, rtol=1e-4)


def test_fft_estimator_of_the_barron_norm_of_complex_samples_is_the_folded_normal_mean():
    # f(x) = exp(-x^2 / 2) exp(i xi x) has f_hat = the N(xi, 1) density (f_hat(w) = (2 pi)^-1 int f e^{-iwx} dx),
    # so C_f = int |w| f_hat(w) dw = E|Z| for Z ~ N(xi, 1): scipy's folded normal; relative 1e-4.
    xi, h = 1.3, 0.05
    x = np.arange(-20, 20, h)
    values = np.exp(-x * x / 2) * np.exp(1j * xi * x)
    np.testing.assert_allclose(barron_norm(values, norm=2, spacing=h), stats.foldnorm(xi).mean(), rtol=1e-4)


def _abs_fourier_of_derivative_integral(g_prime, z_max):
    """int |FT(g')(t)| dt with FT(g')(t) = (1/pi) int_0^inf cos(t z) g'(z) dz (g' even), by quad."""
    def ft(t):
        return integrate.quad(lambda z: np.cos(t * z) * g_prime(z), 0, z_max, limit=200, epsabs=1e-13)[0] / np.pi
    return 2 * integrate.quad(lambda t: abs(ft(t)), 0, 40, limit=200, epsabs=1e-10)[0]


@pytest.mark.parametrize("profile, g_prime, z_max", [
    ("sigmoid", lambda z: 0.25 / np.cosh(z / 2) ** 2, 80.0),
    ("tanh", lambda z: 1 / np.cosh(z) ** 2, 40.0),
    ("erf", lambda z: 2 / np.sqrt(np.pi) * np.exp(-z * z), 8.0),
])
def test_ridge_barron_norm_matches_quadrature_of_the_profile_transform(profile, g_prime, z_max):
    # C_f = |A| |w|_p int |t| |g_hat(t)| dt = |A| |w|_p int |FT(g')|, the transform by nested quad.
    w = np.array([1.0, -2.0, 0.5])
    f = RidgeTarget(w, profile, amplitude=-1.5)
    kappa = _abs_fourier_of_derivative_integral(g_prime, z_max)
    for p in (1, 2):
        np.testing.assert_allclose(barron_norm(f, norm=p), 1.5 * np.linalg.norm(w, p) * kappa, rtol=1e-6)


def test_ridge_barron_norm_of_gaussian_and_cosine_profiles():
    # gaussian: g_hat = N(0, 1) density, int |t| g_hat = E|N(0,1)| (scipy's half-normal mean);
    # cos: two atoms of mass 1/2 at t = +-1, int |t| dg_hat = 1.
    w = np.array([3.0, 4.0])
    np.testing.assert_allclose(RidgeTarget(w, "gaussian").barron_norm(2), 5 * stats.halfnorm.mean(), rtol=1e-14)
    assert RidgeTarget(w, "cos").barron_norm(1) == 7.0
    X = np.random.default_rng(0).standard_normal((5, 2))
    np.testing.assert_allclose(RidgeTarget(w, "gaussian", 2.0)(X), 2 * np.exp(-(X @ w) ** 2 / 2), rtol=1e-14)
    np.testing.assert_allclose(RidgeTarget(w, "sigmoid")(X), special.expit(X @ w), rtol=1e-14)
    np.testing.assert_allclose(RidgeTarget(w, "erf")(X), special.erf(X @ w), rtol=1e-14)


# --------------------------------------------------------------------------- Maurey sampling
@pytest.mark.parametrize("kind", ["cosine", "step", "relu"])
def test_maurey_error_decays_like_one_over_sqrt_m(kind):
    # Fitted log-log slope of the root-mean-square L2 error (over 8 seeds, on 400 points uniform in
    # the unit ball of R^5) against m = 2^4 .. 2^11: within 0.1 of -1/2.
    f = GaussianTarget(5, scale=1.0, center=np.full(5, 0.1))
    rep = f.representation(kind, radius=1.0)
    X = sample_ball(400, 5, rng=1)
    y = f(X)
    ms = 2 ** np.arange(4, 12)
    rms = [math.sqrt(np.mean([np.mean((maurey_sample(rep, int(m), rng=seed)(X) - y) ** 2) for seed in range(8)]))
           for m in ms]
    slope = np.polyfit(np.log(ms), np.log(rms), 1)[0]
    assert abs(slope + 0.5) <= 0.1


def test_maurey_mean_squared_error_is_the_variance_over_m():
    # Cosine features of the centred Gaussian: Var_omega cos(<omega, x>) = (1 - e^{-|x|^2/s^2})^2 / 2,
    # so E ||f - f_m||^2 = mean_x (1 - e^{-|x|^2/s^2})^2 / (2 m). Monte Carlo over 300 seeds,
    # tolerance 4 standard errors.
    s, m = 1.2, 32
    f = GaussianTarget(4, scale=s)
    rep = f.representation("cosine")
    X = sample_ball(200, 4, radius=2.0, rng=2)
    y = f(X)
    errors = np.array([np.mean((maurey_sample(rep, m, rng=seed)(X) - y) ** 2) for seed in range(300)])
    expected = np.mean((1 - np.exp(-(X * X).sum(axis=1) / s**2)) ** 2) / (2 * m)
    assert abs(errors.mean() - expected) <= 4 * errors.std(ddof=1) / math.sqrt(len(errors))


@pytest.mark.parametrize("kind", ["cosine", "step", "relu"])
def test_representations_are_unbiased(kind):
    # f(x) = c + <v, x> + M E[h sigma_theta(x)] on |x| <= r: with m = 2e5 draws the network is within
    # 5 standard errors (estimated from the same draws) of f at 40 points, for a shifted Gaussian
    # with a negative amplitude (the phase b = -<omega, c> and the sign of A both matter).
    f = GaussianTarget(3, scale=0.8, amplitude=-1.5, center=[0.3, -0.2, 0.1])
    rep = f.representation(kind, radius=1.0)
    X = sample_ball(40, 3, radius=1.0, rng=3)
    m = 200_000
    h, W = rep.sample(m, rng=4)
    terms = rep.mass * h[None, :] * np.asarray(rep.activation(np.hstack([X, np.ones((40, 1))]) @ W.T))
    stderr = terms.std(axis=1) / math.sqrt(m)
    net = maurey_sample(rep, m, rng=4)
    assert np.all(np.abs(net(X) - gaussian(X, 0.8, -1.5, np.array([0.3, -0.2, 0.1]))) <= 5 * stderr)


def test_step_maurey_networks_satisfy_barron_bound():
    # Root mean square (over 10 seeds) of the L2 error on the ball of radius r, under two laws on it,
    # below 2 r C_f / sqrt(m) (Barron 1993, Theorem 1).
    r = 1.5
    f = GaussianTarget(6, scale=1.0, center=np.full(6, 0.2))
    rep = f.representation("step", radius=r)
    C = f.barron_norm(norm=2)
    assert rep.mass == pytest.approx(2 * r * C, rel=1e-15)
    X_uniform = sample_ball(300, 6, radius=r, rng=5)
    X_sphere = r * sample_sphere(300, 6, rng=6)
    for m in (16, 256, 2048):
        for X in (X_uniform, X_sphere):
            mse = np.mean([np.mean((maurey_sample(rep, m, rng=s)(X) - f(X)) ** 2) for s in range(10)])
            assert math.sqrt(mse) <= barron_bound(C, r, m) == pytest.approx(rep.bound(m))


def test_maurey_sample_from_a_measure_draws_atoms_proportionally_to_their_mass():
    # Atoms drawn with probabilities |c_j| / ||mu|| (chi-square test, p > 1e-3), weights ||mu|| sign(c_j),
    # output scale 1/m; the network is within 5 standard errors of int relu(<x, theta>) dmu.
    rng = np.random.default_rng(7)
    c = np.array([3.0, -1.0, 0.5, -2.5])
    mu = Measure(c, sample_sphere(4, 3, rng=8))
    m = 40_000
    net = maurey_sample(mu, m, rng=9)
    assert net.m == m and net.gamma == 1 / m
    np.testing.assert_array_equal(np.abs(net.a), np.full(m, 7.0))
    idx = np.argmax(np.abs(net.W @ mu.points.T - 1) < 1e-12, axis=1)  # which atom each neuron is
    np.testing.assert_array_equal(np.sign(net.a), np.sign(c[idx]))
    counts = np.bincount(idx, minlength=4)
    assert stats.chisquare(counts, m * np.abs(c) / 7.0).pvalue > 1e-3
    X = rng.standard_normal((30, 3))
    terms = 7.0 * np.sign(c[idx])[None, :] * np.maximum(X @ net.W.T, 0)
    stderr = terms.std(axis=1) / math.sqrt(m)
    assert np.all(np.abs(net(X) - mu.evaluate(X)) <= 5 * stderr)


def test_maurey_sample_compresses_a_wide_network():
    # A TwoLayer is sampled from its measure: unbiased, and the error of the m-neuron network
    # decays: the RMS over seeds at m = 1000 is below 2/5 of the RMS at m = 100 (1/sqrt(10) ~ 0.32).
    rng = np.random.default_rng(10)
    wide = TwoLayer(rng.standard_normal(500), rng.standard_normal((500, 4)), bias=True)
    X = rng.standard_normal((100, 3))
    y = wide(X)
    rms = [math.sqrt(np.mean([np.mean((maurey_sample(wide, m, rng=s)(X) - y) ** 2) for s in range(20)]))
           for m in (100, 1000)]
    assert rms[1] < 0.4 * rms[0]
    small = maurey_sample(wide, 8, rng=0)
    assert small.bias and small.m == 8 and small.activation == wide.activation
    # a float32 network gives a float32 one (it came back in float64, twice the memory), the same draw cast
    wide32 = TwoLayer(wide.a.astype(np.float32), wide.W.astype(np.float32), bias=True)
    small32 = maurey_sample(wide32, 8, rng=0)
    assert small32.W.dtype == np.float32 and maurey_sample(wide32.to_measure(), 8, rng=0).W.dtype == np.float32
    np.testing.assert_allclose(small32.W, small.W, rtol=1e-6)


def test_maurey_bounds_are_their_formulas():
    assert maurey_bound(2.0, 16, sup=3.0) == 1.5
    assert barron_bound(2.0, 0.5, 4) == 1.0
    assert barron_bound(0.0, 0.5, 4) == 0.0  # a constant f: its Barron norm is 0, and so is the error


def test_custom_representation_and_cosine_activation():
    # A user-built representation: f(x) = 2 E_{w ~ U{-1, 1}}[cos(w x)] = 2 cos(x); the cosine
    # activation's derivative against a central difference (step 1e-6, tolerance 1e-8).
    rep = Representation(1, 2.0, COSINE, lambda m, rng: (np.ones(m), np.column_stack([rng.choice([-1.0, 1.0], m),
                                                                                       np.zeros(m)])))
    x = np.linspace(-2, 2, 9)[:, None]
    np.testing.assert_allclose(maurey_sample(rep, 7, rng=0)(x), 2 * np.cos(x[:, 0]), rtol=1e-14, atol=1e-14)
    z = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(COSINE.derivative(z), (COSINE(z + 1e-6) - COSINE(z - 1e-6)) / 2e-6, atol=1e-8)


def test_sample_ball_is_uniform_in_the_ball():
    # |x| / r to the power d is uniform on [0, 1] (KS, p > 1e-3), and directions are centred.
    d, r = 4, 2.5
    X = sample_ball(5000, d, radius=r, rng=11)
    norms = np.linalg.norm(X, axis=1)
    assert norms.max() <= r
    assert stats.kstest((norms / r) ** d, "uniform").pvalue > 1e-3
    assert np.abs((X / norms[:, None]).mean(axis=0)).max() < 5 / math.sqrt(5000)
    np.testing.assert_array_equal(sample_ball(10, d, rng=1), sample_ball(10, d, rng=1))


# --------------------------------------------------------------------------- F1 vs F2 (Bach 2017)
@pytest.mark.parametrize("d", [3, 4, 6])
def test_f2_norm_of_a_truncated_neuron_grows_without_bound_while_its_f1_norm_stays(d):
    # For f = a relu(<w, x>) on S^{d-1}: |P_{<=K} f|_{F2}^2 = a^2 |w|^2 sum_{k <= K, mu_k != 0} N(d, k),
    # mu_k(relu) != 0 exactly for k = 0, 1 and even k (Bach 2017, App. D.2), N from the dimension of
    # homogeneous polynomials; the F1 norm is |a| |w| for every K. Tolerance 1e-12 relative (sums of
    # ratios of float coefficients).
    rng = np.random.default_rng(12)
    a, w = -1.7, rng.standard_normal(d)
    K = 24
    f1, f2 = single_neuron_norms(a, w, K)
    np.testing.assert_allclose(f1, abs(a) * np.linalg.norm(w), rtol=1e-14)
    alive = [k for k in range(K + 1) if k <= 1 or k % 2 == 0]
    expected = np.sqrt([a * a * (w @ w) * sum(N_harmonics(d, k) for k in alive if k <= Kc) for Kc in range(K + 1)])
    np.testing.assert_allclose(f2, expected, rtol=1e-12)
    assert np.all(np.diff(f2[::2]) > 0) and f2[-1] > 10 * f1   # F2 ~ K^{(d-1)/2} |a| |w|, F1 = |a| |w|
    # through the library pieces named in Bach's statement, term by term: energy mu_k^2 N(d, k), eigenvalue mu_k^2
    from shallow.activations import funk_hecke
    from shallow.kernels import dot_product_kernel, f2_norm_from_harmonics, mercer_eigenvalues
    mu = funk_hecke("relu", d, K)
    lam = mercer_eigenvalues(dot_product_kernel("nngp", "relu", "sphere", d), d, K)
    energies = mu**2 * np.array([N_harmonics(d, k) for k in range(K + 1)], dtype=float)
    np.testing.assert_allclose(f2_norm_from_harmonics(energies, lam) ** 2, sum(N_harmonics(d, k) for k in alive),
                               rtol=1e-12)


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_targets_and_maurey_networks_on_each_backend(xp, dtype):
    # Same numbers on numpy and cupy: 1e-12 in float64, 1e-5 in float32 (relative to values of order 1).
    device = "cpu" if xp is np else "gpu"
    tol = 1e-12 if dtype == np.float64 else 1e-5
    f = GaussianTarget(3, scale=0.9, center=[0.1, 0.0, -0.2])
    X = sample_ball(64, 3, rng=13)
    Xd = sample_ball(64, 3, rng=13, dtype=dtype, device=device)
    assert isinstance(Xd, xp.ndarray) and Xd.dtype == dtype
    fd = f(Xd)
    assert isinstance(fd, xp.ndarray) and fd.dtype == dtype
    np.testing.assert_allclose(to_numpy(fd), f(X), rtol=tol, atol=tol)
    for kind in ("cosine", "step", "relu"):
        rep = f.representation(kind, radius=1.0)
        host = maurey_sample(rep, 50, rng=14)
        dev = maurey_sample(rep, 50, rng=14, dtype=dtype, device=device)
        np.testing.assert_allclose(to_numpy(dev(Xd)), host(X), rtol=10 * tol, atol=10 * tol)
    omega = xp.asarray(f.sample_frequencies(10, rng=15), dtype=dtype)
    np.testing.assert_allclose(to_numpy(f.fourier_transform(omega)),
                               f.fourier_transform(to_numpy(omega).astype(np.float64)), rtol=tol, atol=tol)
    grid = xp.asarray(gaussian(0.2 * (np.arange(64) - 32)[:, None], 1.0), dtype=dtype)
    np.testing.assert_allclose(barron_norm(grid, spacing=0.2), barron_norm(to_numpy(grid).astype(np.float64),
                                                                          spacing=0.2), rtol=tol)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: barron_norm(GaussianTarget(2), norm=3), "norm must be 1"),
    (lambda: barron_norm(GaussianTarget(2).fourier_transform, extent=3.0), "d is required"),
    (lambda: barron_norm(GaussianTarget(2).fourier_transform, d=2), "extent is required"),
    (lambda: barron_norm(GaussianTarget(2).fourier_transform, d=2, extent=-1.0), "extent must be a positive"),
    (lambda: barron_norm(GaussianTarget(2).fourier_transform, d=2, extent=1.0, num=0), "num must be an integer"),
    (lambda: barron_norm(lambda w: np.ones(3), d=1, extent=1.0, num=4), "f_hat must map"),
    (lambda: barron_norm(lambda w: np.full(w.shape[0], np.nan), d=1, extent=1.0, num=4), "f_hat returned NaN"),
    (lambda: barron_norm(np.ones(8)), "spacing is required"),
    (lambda: barron_norm(np.array([1.0, np.nan]), spacing=0.1), "f contains 1 NaN"),
    (lambda: barron_norm(np.ones((4, 4)), spacing=[0.1, 0.1, 0.1]), "spacing has 3 entries"),
    (lambda: barron_norm(np.ones(4), spacing=-0.1), "spacing must be a positive"),
    (lambda: barron_norm(None), "f must be a target"),
    (lambda: GaussianTarget(0), "d must be an integer >= 1"),
    (lambda: GaussianTarget(2, scale=0.0), "scale must be a positive"),
    (lambda: GaussianTarget(2, amplitude=np.nan), "amplitude must be a finite"),
    (lambda: GaussianTarget(2, amplitude=0.0), "amplitude must be nonzero"),
    (lambda: GaussianTarget(2, center=[1.0, 2.0, 3.0]), "center has shape"),
    (lambda: GaussianTarget(2, center=[1.0, np.nan]), "center contains 1 NaN"),
    (lambda: GaussianTarget(2)(np.ones((3, 3))), "X has shape"),
    (lambda: GaussianTarget(2).barron_norm(order=3), "order must be an integer"),
    (lambda: GaussianTarget(2).representation("sigmoid"), "kind must be"),
    (lambda: GaussianTarget(2).representation("step"), "radius is required"),
    (lambda: GaussianTarget(2).representation("relu", radius=-1.0), "radius must be a positive"),
    (lambda: RidgeTarget(np.zeros(3)), "w must be a nonzero"),
    (lambda: RidgeTarget(np.ones(3), "relu"), "profile must be one of"),
    (lambda: maurey_sample(GaussianTarget(2).representation(), 0), "m must be an integer >= 1"),
    (lambda: maurey_sample(GaussianTarget(2).representation(), -3), "m must be an integer >= 1"),
    (lambda: maurey_sample(GaussianTarget(2), 5), "measure must be a Representation"),
    (lambda: maurey_sample(GaussianTarget(2).representation(), 5, dtype=np.int64), "dtype must be float32"),
    (lambda: maurey_sample(Measure(np.zeros(2), np.eye(2)), 5), "zero total variation"),
    (lambda: maurey_bound(-1.0, 4), "mass must be a positive"),
    (lambda: barron_bound(1.0, 1.0, 0), "m must be an integer >= 1"),
    (lambda: barron_bound(-1.0, 1.0, 4), "C_f must be a finite number >= 0"),
    (lambda: sample_ball(-1, 2), "n must be an integer >= 0"),
    (lambda: sample_ball(3, 2, radius=np.inf), "radius must be a positive"),
    (lambda: single_neuron_norms(1.0, np.ones(3), -1), "kmax must be an integer >= 0"),
    (lambda: single_neuron_norms(1.0, np.ones(1), 3), "w must have d >= 2"),
    (lambda: single_neuron_norms(1.0, np.zeros(3), 3), "w must be nonzero"),
    (lambda: single_neuron_norms(1.0, np.ones(500), 1000), "kmax=1000 is too large for d=500"),  # OverflowError
    (lambda: single_neuron_norms(1.0, np.ones(3), 3, activation="tanh"), "not positively homogeneous"),
    (lambda: Representation(2, 1.0, "relu", lambda m, rng: (np.full(m, 2.0), np.zeros((m, 3)))).sample(3),
     r"\|h\| up to 2"),
    (lambda: Representation(2, 1.0, "relu", lambda m, rng: (np.ones(m), np.zeros((m, 2)))).sample(3),
     "sampler returned h of shape"),
    (lambda: Representation(2, 0.0, "relu", lambda m, rng: None), "mass must be a positive"),
    (lambda: Representation(2, 1.0, "relu", None), "sampler must be a callable"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_barron_norm_refuses_an_f_hat_returning_non_numbers():
    with pytest.raises(ValueError, match="f_hat must return real or complex numbers, got dtype <U1"):
        barron_norm(lambda w: np.array(["x"] * w.shape[0]), d=1, extent=1.0, num=4)


@pytest.mark.parametrize("spacing, match", [
    ("0.1", "spacing must be an array of real numbers, got str"),
    (0.1j, "spacing must be real"),
    ([None], "spacing must hold real numbers"),
    ([[0.1, 0.1]], "spacing must be a 0 or 1-dimensional array"),
    (np.nan, "spacing contains 1 NaN"),
])
def test_barron_norm_refuses_a_spacing_that_is_not_real_step_sizes(spacing, match):
    with pytest.raises(ValueError, match=match):
        barron_norm(np.ones((4, 4)), spacing=spacing)


@pytest.mark.parametrize("spacing", [[0.1], np.array([0.1])])
def test_barron_norm_refuses_a_spacing_sequence_with_one_entry_for_several_axes(spacing):
    # "a float or a sequence of d floats": a one-entry sequence used to be repeated over the d = 2 axes
    with pytest.raises(ValueError, match="spacing has 1 entries but f has 2 axes"):
        barron_norm(np.ones((4, 4)), spacing=spacing)


def test_ridge_target_refuses_a_profile_that_is_not_a_name():
    with pytest.raises(ValueError, match="profile must be one of"):
        RidgeTarget(np.ones(2), ["gaussian"])


def test_representation_refuses_a_non_boolean_bias():
    with pytest.raises(ValueError, match="bias must be True or False, got 'no'"):
        Representation(2, 1.0, "relu", lambda m, rng: None, bias="no")


@pytest.mark.parametrize("output, match", [
    (lambda m: None, r"sampler must return a pair \(h, W\), got NoneType"),
    (lambda m: (np.ones(m),), r"sampler must return a pair \(h, W\), got tuple"),
    (lambda m: (np.full(m, np.nan), np.zeros((m, 3))), "the sampler's h contains 3 NaN"),
    (lambda m: (np.ones(m), np.full((m, 3), np.inf)), "the sampler's W contains 9 NaN or infinite"),
    (lambda m: ("abc", np.zeros((m, 3))), "the sampler's h must be an array of real numbers"),
])
def test_representation_sample_refuses_a_sampler_returning_nan_or_no_pair(output, match):
    rep = Representation(2, 1.0, "relu", lambda m, rng: output(m))
    with pytest.raises(ValueError, match=match):
        rep.sample(3)


def test_gaussian_barron_norm_is_the_mean_of_chi_d_in_any_dimension():
    """C_f of A exp(-|x|^2 / (2 s^2)) is |A| E|g| / s, E|g| = sqrt(2) Gamma((d+1)/2) / Gamma(d/2) (the mean of
    chi_d), to 1e-14 against mpmath up to d = 10^8 (a difference of log-gammas lost 1e-8 there)."""
    import mpmath as mp
    with mp.workdps(50):
        for d in [1, 2, 19, 20, 21, 300, 10**4, 10**6, 10**8]:
            expected = 3 * mp.sqrt(2) * mp.gamma(mp.mpf(d + 1) / 2) / mp.gamma(mp.mpf(d) / 2) / mp.mpf("0.5")
            value = GaussianTarget(d, scale=0.5, amplitude=-3.0).barron_norm()
            assert value == pytest.approx(float(expected), rel=1e-14), d


def test_maurey_bound_of_a_single_draw_is_mass_times_sup():
    # E ||f - f_1||^2 <= M^2 s^2 for one neuron (m = 1, the smallest network): the bound M s / sqrt(1).
    rep = GaussianTarget(3, amplitude=2.5).representation("cosine")
    assert rep.bound(1) == 2.5 and maurey_bound(2.5, 1, sup=3.0) == 7.5


def test_constant_term_is_one_neuron_of_weight_c_m_over_sigma_of_one():
    # f = c + M E[h sigma]: the constant is the neuron sigma(<0, x> + 1) = cos(1) with outer weight
    # c m / cos(1) at output scale 1/m, so a sampler drawing h = 0 leaves exactly f_m = c.
    def sampler(m, rng):
        return np.zeros(m), np.column_stack([rng.standard_normal((m, 2)), np.zeros(m)])

    rep = Representation(2, 1.0, COSINE, sampler, constant=0.7)
    net = maurey_sample(rep, 5, rng=0)
    assert net.m == 6 and net.a[-1] == pytest.approx(0.7 * 5 / math.cos(1.0), rel=1e-15)
    X = np.random.default_rng(1).standard_normal((4, 2))
    np.testing.assert_allclose(net(X), 0.7, rtol=1e-15)


def test_gaussian_frequencies_of_no_points_are_an_empty_d_column_array():
    f = GaussianTarget(3, scale=2.0)
    for order in (0, 1, 2):
        assert f.sample_frequencies(0, rng=0, order=order).shape == (0, 3)


@pytest.mark.parametrize("kind", ["step", "relu"])
def test_half_space_representations_draw_unit_directions_and_offsets_in_zero_r(kind):
    # Barron's neurons 1{<e u, x> > t'} and relu(<e u, x> - t'): W rows (e u, -t') with |u| = 1 and
    # t' uniform on [0, r]. A wide Gaussian (s = 3) puts most frequencies |omega| = chi / s below 1.
    r = 1.5
    _, W = GaussianTarget(2, scale=3.0).representation(kind, radius=r).sample(2000, rng=2)
    np.testing.assert_allclose(np.linalg.norm(W[:, :2], axis=1), 1.0, rtol=1e-15)
    t = -W[:, 2]
    assert t.min() >= 0 and t.max() <= r
    assert stats.kstest(t / r, "uniform").pvalue > 1e-3


def test_cosine_activation_rejects_input_that_is_not_an_array_of_real_numbers():
    # a str failed in the backend with "arrays from different libraries cannot be mixed"
    with pytest.raises(ValueError, match="z must be an array of real numbers"):
        COSINE("a")
    with pytest.raises(ValueError, match="z must be real"):
        COSINE.derivative(np.array([1j]))


def test_sample_ball_rejects_a_radius_beyond_the_dtype():
    # radius 1e300 in float32 gave points with infinite coordinates
    with pytest.raises(ValueError, match="radius=1e\\+300 is beyond the largest float32"):
        sample_ball(3, 2, radius=1e300, rng=0, dtype=np.float32)


def test_barron_norm_rejects_an_array_as_norm():
    # failed with numpy's "truth value of an array with more than one element is ambiguous"
    with pytest.raises(ValueError, match="norm must be 1"):
        GaussianTarget(2).barron_norm(norm=np.array([1, 2]))


@pytest.mark.parametrize("d", [1, 2, 5])
def test_second_l1_moment_of_a_gaussian_is_that_of_a_sum_of_half_normals(d):
    # f_hat = A times the N(0, I/s^2) density: int |omega|_1^2 |f_hat| = |A| E(sum_i |g_i|)^2 / s^2 with
    # g ~ N(0, I_d), the second moment of a sum of d independent half-normals: Var + mean^2 =
    # d Var|g_1| + (d E|g_1|)^2, from scipy.stats. Closed forms on both sides: rtol 1e-13.
    f = GaussianTarget(d, scale=0.5, amplitude=-2.0)
    h = stats.halfnorm
    expected = 2.0 * (d * h.var() + (d * h.mean()) ** 2) / 0.5**2
    np.testing.assert_allclose(f.barron_norm(norm=1, order=2), expected, rtol=1e-13)


@pytest.mark.parametrize("alpha", [0, 2])
def test_f1_and_f2_norms_of_a_single_relu_power_neuron_scale_as_norm_w_to_the_alpha(alpha):
    # f = a |w|^alpha sigma(<u, .>) for sigma = relu^alpha (alpha = 0: the step): F1 norm |a| |w|^alpha, and
    # |P_{<=K} f|_{F2}^2 = a^2 |w|^{2 alpha} sum_{k <= K, mu_k != 0} N(d, k), where mu_k(relu^alpha) = 0 exactly
    # for k > alpha with k - alpha even (Bach 2017, App. D.2): k <= alpha or k - alpha odd survive. |w| != 1 here,
    # so the power alpha of |w| shows (the relu test above has alpha = 1). Tolerance as there (1e-12 relative).
    from shallow.activations import get_activation
    sigma = get_activation("step") if alpha == 0 else get_activation("relu_power", alpha=alpha)
    d, K, a = 3, 12, -1.7
    w = 1.5 * np.random.default_rng(12).standard_normal(d)
    f1, f2 = single_neuron_norms(a, w, K, activation=sigma)
    r = np.linalg.norm(w) ** alpha
    np.testing.assert_allclose(f1, abs(a) * r, rtol=1e-14)
    alive = [k for k in range(K + 1) if k <= alpha or (k - alpha) % 2 == 1]
    expected = np.sqrt([(a * r) ** 2 * sum(N_harmonics(d, k) for k in alive if k <= Kc) for Kc in range(K + 1)])
    np.testing.assert_allclose(f2, expected, rtol=1e-12)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_f1_and_f2_norms_of_a_single_neuron_are_homogeneous_at_any_representable_scale(scale):
    # f = a relu(<w, x>) with |w| = scale on S^2: F1 norm |a| |w| and |P_{<=K} f|_{F2} = |a| |w| sqrt(sum_{k <= K,
    # mu_k != 0} N(3, k)), N(3, k) = 2k + 1, mu_k(relu) != 0 for k = 0, 1 and even k (Bach 2017, App. D.2): both
    # degree-1 homogeneous in |w|, and here representable in float64 although (a |w|)^2 is not. Tolerance 1e-12
    # relative, as in the tests above (sums of ratios of float coefficients).
    a, K = -1.5, 6
    w = scale * np.array([0.0, 0.6, 0.8])  # |w| = scale, its square out of float64's range
    f1, f2 = single_neuron_norms(a, w, K)
    np.testing.assert_allclose(f1, 1.5 * scale, rtol=1e-14)
    alive = [k for k in range(K + 1) if k <= 1 or k % 2 == 0]
    expected = 1.5 * scale * np.sqrt([sum(2 * k + 1 for k in alive if k <= Kc) for Kc in range(K + 1)])
    np.testing.assert_allclose(f2, expected, rtol=1e-12)


def test_truncated_f2_norms_of_a_neuron_beyond_float64_are_infinite_without_a_floating_point_warning():
    # f2 = |a| times the truncated norms of the unit neuron (homogeneity): a = 1e308 on S^2 gives 1e308 at
    # K = 0 (the unit neuron's degree-0 norm is 1 here) and inf from the first K whose unit norm exceeds
    # max / 1e308 = 1.797 (the documented inf), computed silently (a RuntimeWarning is an error here).
    import warnings

    w = np.array([1.0, 0.0, 0.0])
    _, unit = single_neuron_norms(1.0, w, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, f2 = single_neuron_norms(1e308, w, 40)
    with np.errstate(over="ignore"):  # the product rounded in float64: inf where it exceeds the largest float
        expected = 1e308 * unit
    assert np.isinf(expected).any() and np.isfinite(expected[0])  # both sides of the threshold are tested
    np.testing.assert_allclose(f2, expected, rtol=1e-15)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_gaussian_target_keeps_its_closed_forms_at_extreme_scales(scale):
    # f(0) = A, C_f = |A| E chi_3 / s and C_{f,2} = |A| d / s^2 (Barron 1993) whatever s: s^2 under- or overflowed
    # (ZeroDivisionError at s = 1e-200, OverflowError at s = 1e200). C_{f,2} = 3e400 is beyond float64 (inf) at
    # s = 1e-200, and 3e-400 below its least subnormal (0) at s = 1e200.
    f = GaussianTarget(3, scale=scale, amplitude=-2.0)
    assert f.value_at_zero() == -2.0 and f(np.zeros((1, 3)))[0] == -2.0
    assert f.barron_norm() == pytest.approx(2 * stats.chi(3).mean() / scale, rel=1e-14, abs=0)  # a few eps of scipy's
    assert f.barron_norm(order=2) == (math.inf if scale < 1 else 0.0)
    assert f.representation("step", radius=1.0).mass == pytest.approx(2 * f.barron_norm(), rel=1e-15, abs=0)


def test_gaussian_target_off_centre_at_a_huge_scale_has_its_value_and_gradient_at_zero():
    # f(0) = A exp(-|c|^2 / (2 s^2)) = A e^{-1/2} and grad f(0) = f(0) c / s^2 for c = s e_1, s = 1e170 (s^2 overflows)
    s = 1e170
    f = GaussianTarget(2, scale=s, amplitude=3.0, center=np.array([s, 0.0]))
    assert f.value_at_zero() == pytest.approx(3 * math.exp(-0.5), rel=1e-15, abs=0)
    np.testing.assert_allclose(f.gradient_at_zero(), [3 * math.exp(-0.5) / s, 0.0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(f(np.array([[0.0, 0.0], [s, 0.0]])), [3 * math.exp(-0.5), 3.0], rtol=1e-15)


@pytest.mark.parametrize("t", [1e-200, 1e200])
def test_ridge_barron_norm_is_homogeneous_in_w_at_any_representable_scale(t):
    # C_f = |A| |w|_p kappa_g with kappa_tanh = 1: |(3, -4) t|_2 = 5 t and |.|_1 = 7 t. numpy's 2-norm squared the
    # entries: inf (and a RuntimeWarning) at t = 1e200, 0 at t = 1e-200.
    f = RidgeTarget(np.array([3.0, -4.0]) * t, "tanh")
    assert f.barron_norm(norm=2) == pytest.approx(5 * t, rel=4e-16, abs=0)  # 2 roundings
    assert f.barron_norm(norm=1) == pytest.approx(7 * t, rel=4e-16, abs=0)


def test_maurey_and_barron_bounds_for_more_neurons_than_a_float():
    # M s / sqrt(m) and 2 r C_f / sqrt(m) at m = 10^400: 1e-200 (math.sqrt(m) raised OverflowError converting m)
    m = 10**400
    assert maurey_bound(3.0, m) == pytest.approx(3e-200, rel=1e-12, abs=0)  # exp(log(m) / 2): eps * log(m) ~ 2e-13
    assert barron_bound(1.5, 2.0, m) == pytest.approx(6e-200, rel=1e-12, abs=0)
    assert GaussianTarget(2).representation().bound(m) == pytest.approx(1e-200, rel=1e-12, abs=0)


@pytest.mark.parametrize("kwargs", [{"activation": "step"}, {"bias": True}])
def test_maurey_sample_refuses_an_activation_or_bias_it_would_ignore(kwargs):
    # they are for a Measure only: a TwoLayer and a Representation carry their own, and the argument was dropped
    for source in (TwoLayer.init(4, 2, rng=0), GaussianTarget(2).representation()):
        with pytest.raises(ValueError, match="activation and bias are for a Measure only"):
            maurey_sample(source, 3, rng=0, **kwargs)


def test_barron_norm_refuses_a_negative_value_from_a_grid_that_does_not_resolve_f_hat():
    # C_f >= 0 always; on 2 cells per axis the Euler-Maclaurin kink term outweighed the sum: -3.85 for the closed
    # form 1.14 of a Gaussian of scale 0.7 in d = 1 (|omega|_1 norm). 128 cells give the closed form to the
    # midpoint rule's error (1.4e-6 relative measured, 1e-5 allowed).
    f = GaussianTarget(1, scale=0.7)
    with pytest.raises(ValueError, match="came out negative .* num=2 cells per axis"):
        barron_norm(f.fourier_transform, d=1, extent=9 / 0.7, num=2, norm=1)
    assert barron_norm(f.fourier_transform, d=1, extent=9 / 0.7, num=128, norm=1) == pytest.approx(
        f.barron_norm(norm=1), rel=1e-5)
