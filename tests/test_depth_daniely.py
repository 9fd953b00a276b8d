"""Daniely's sin(omega <x, y>): its Funk-Hecke coefficients and its energy in closed form (shallow.depth).

In a file of its own (not tests/test_depth.py) so that its imports touch no line of that file's.
"""

import math

import mpmath
import numpy as np
import pytest
from scipy import special

from shallow.depth import daniely_energy, daniely_funk_hecke
from shallow.harmonics import num_harmonics, project_zonal


def _quad_mu(d, omega, k):
    """mu_k = int sin(omega t) P_{k,d}(t) w_d(t) dt by mpmath quadrature over theta (t = cos theta): w_d(t) dt =
    c_d sin^{d-2}(theta) dtheta, P_{k,d} = C_k^{nu} / C_k^{nu}(1) (nu = d/2 - 1 > 0), cos(k theta) for d = 2."""
    nu = mpmath.mpf(d) / 2 - 1
    c = mpmath.gamma(mpmath.mpf(d) / 2) / (mpmath.sqrt(mpmath.pi) * mpmath.gamma(mpmath.mpf(d - 1) / 2))
    if d == 2:
        P = lambda th: mpmath.cos(k * th)  # noqa: E731
    else:
        C1 = mpmath.gegenbauer(k, nu, 1)
        P = lambda th: mpmath.gegenbauer(k, nu, mpmath.cos(th)) / C1  # noqa: E731
    # one subinterval per half period of sin(omega cos theta) or of P_k, whichever is shorter
    pieces = max(4, int(max(omega, k)) + 2)
    return mpmath.quad(lambda th: mpmath.sin(omega * mpmath.cos(th)) * P(th) * c * mpmath.sin(th) ** (d - 2),
                       mpmath.linspace(0, mpmath.pi, pieces + 1))


@pytest.mark.parametrize("d, omega, ks", [(2, 8 * math.pi, (1, 11, 31)), (3, 5.0, (3, 4, 15)),
                                           (4, 12.0, (1, 9, 13)), (7, 2.5, (1, 5, 9))])
def test_daniely_funk_hecke_coefficients_match_quadrature(d, omega, ks):
    # mu_k = (-1)^((k-1)/2) Gamma(d/2) (2/omega)^(d/2-1) J_{k+d/2-1}(omega) for odd k, 0 for even k, against the
    # defining integral by mpmath at 20 digits. Tolerance: 1e-13 relative plus 1e-16 absolute (scipy's J to a
    # few ulps; the absolute part covers the smallest coefficients, down to 1e-12 here).
    mpmath.mp.dps = 20
    mu = daniely_funk_hecke(d, max(ks), frequency=omega)
    for k in ks:
        expected = float(_quad_mu(d, omega, k))
        assert abs(mu[k] - expected) <= 1e-13 * abs(expected) + 1e-16, (d, omega, k, mu[k], expected)
    assert np.all(mu[0::2] == 0.0)  # sin is odd: every even coefficient vanishes exactly


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_daniely_funk_hecke_agrees_with_project_zonal_at_danielys_frequency(d):
    # Daniely's omega = pi d^3 (up to 678 at d = 6): the Gauss-Jacobi quadrature of project_zonal (its own
    # convergence check on) against the closed form, through degree omega + 60, where the energy has
    # decayed. Tolerance 1e-13 absolute: both within a few ulps of |mu_k| <= 1 times the number of nodes'
    # rounding (measured at most 9e-15 for d = 2..10).
    omega = math.pi * d**3
    kmax = int(omega) + 60
    with np.errstate(all="raise"):
        expected = project_zonal(lambda t: np.sin(omega * t), d, kmax)
    np.testing.assert_allclose(daniely_funk_hecke(d, kmax), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("d, omega", [(2, 0.1), (2, 25.0), (3, 84.8), (5, 7.0), (12, 40.0), (50, 3.0)])
def test_daniely_energy_is_the_mean_of_sin_squared_and_the_parseval_sum(d, omega):
    # E sin^2(omega <x, y>) = (1 - Gamma(d/2) omega^{-nu} J_nu(2 omega)) / 2, against mpmath quadrature of
    # sin^2(omega cos theta) c_d sin^{d-2}(theta) (20 digits), and Parseval: sum_k N(d, k) mu_k^2 through a
    # degree where J_{k+nu}(omega)^2 N(d, k) is below 1e-30 (k = omega + 40 omega^(1/3) + 60). Tolerance
    # 1e-12 relative: the closed form subtracts J from 1 (the loss of digits is at most 1 / energy, below
    # 200 here), and the sum has at most a few hundred terms.
    mpmath.mp.dps = 20
    c = mpmath.gamma(mpmath.mpf(d) / 2) / (mpmath.sqrt(mpmath.pi) * mpmath.gamma(mpmath.mpf(d - 1) / 2))
    pieces = max(4, int(omega) + 2)
    expected = float(mpmath.quad(lambda th: mpmath.sin(omega * mpmath.cos(th)) ** 2 * c * mpmath.sin(th) ** (d - 2),
                                 mpmath.linspace(0, mpmath.pi, pieces + 1)))
    energy = daniely_energy(d, frequency=omega)
    assert abs(energy - expected) <= 1e-12 * expected
    kmax = int(omega + 40 * omega ** (1 / 3) + 60)
    mu = daniely_funk_hecke(d, kmax, frequency=omega)
    N = np.array([float(num_harmonics(d, k)) for k in range(kmax + 1)])
    assert abs(float(N @ mu**2) - expected) <= 1e-12 * expected


@pytest.mark.parametrize("d, omega, kmax", [(2, 0.1, 200), (2, 1.0, 150), (500, 1.0, 300), (60, 2.0, 400)])
def test_daniely_funk_hecke_far_above_the_frequency_stays_accurate_where_bessel_underflows(d, omega, kmax):
    # Orders k + nu far above omega, where J_{k+nu}(omega) falls below 1e-280 (and, at d = 500, even
    # J_nu(omega) does): the closed form by mpmath's Bessel function (an independent implementation, at 30
    # digits) against the backward recurrence. Tolerance 1e-12 relative: the recurrence's rounding grows
    # like k eps (measured: at most 6e-14).
    mpmath.mp.dps = 30
    mu = daniely_funk_hecke(d, kmax, frequency=omega)
    nu = mpmath.mpf(d) / 2 - 1
    for k in range(1, kmax + 1, 2):
        expected = ((-1) ** ((k - 1) // 2) * mpmath.gamma(mpmath.mpf(d) / 2) * (2 / mpmath.mpf(omega)) ** nu
                    * mpmath.besselj(k + nu, omega))
        if abs(expected) < mpmath.mpf("1e-300"):  # below float64's normal range: 0 or subnormal is right
            assert abs(mu[k]) < 1e-290
            continue
        assert abs(mu[k] - float(expected)) <= 1e-12 * abs(float(expected)), (k, mu[k], expected)


def test_daniely_funk_hecke_refuses_bad_arguments():
    with pytest.raises(ValueError, match="d must be an integer >= 2"):
        daniely_funk_hecke(1, 5)
    with pytest.raises(ValueError, match="kmax must be an integer >= 0"):
        daniely_funk_hecke(3, -1)
    with pytest.raises(ValueError, match="frequency must be a positive"):
        daniely_funk_hecke(3, 5, frequency=0.0)
    with pytest.raises(ValueError, match="frequency must be a positive"):
        daniely_energy(3, frequency=-1.0)
