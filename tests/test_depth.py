"""Depth separation: Telgarsky's sawtooth and exact piece counts, Eldan-Shamir, Safran-Shamir, Daniely."""

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from shallow.backend import to_numpy
from shallow.depth import (DeepReLU, EldanShamirFunction, PiecewiseLinear, RankOneWeights, ball_indicator,
                           ball_indicator_network,
                           count_linear_pieces, daniely_function, daniely_network, eldan_shamir_density,
                           eldan_shamir_phi, eldan_shamir_radial_cdf, eldan_shamir_radial_density, l1_distance,
                           linear_pieces, max_pieces, max_pieces_two_layer, radial_network, sample_daniely,
                           sample_eldan_shamir, sawtooth, sawtooth_l1_lower_bound, unit_ball_radius)
from shallow.networks import TwoLayer

EPS = np.finfo(np.float64).eps


def tent_composition(x, k):
    """The tent map t(x) = 2x (x <= 1/2), 2 - 2x (x > 1/2) applied k times, written directly."""
    y = np.array(x, dtype=np.float64)
    for _ in range(k):
        y = np.where(y <= 0.5, 2 * y, 2 - 2 * y)
    return y


def grid_piece_count(values, x):
    """Affine pieces seen on a grid: 1 + the number of slope changes between consecutive cells."""
    slopes = np.diff(values) / np.diff(x)
    scale = np.abs(slopes).max()
    return 1 + int((np.abs(np.diff(slopes)) > 1e-9 * scale).sum())


def random_deep_net(rng, d=1, widths=(6, 5, 4)):
    sizes = (d, *widths, 1)
    Ws = [rng.standard_normal((sizes[i + 1], sizes[i])) for i in range(len(sizes) - 1)]
    bs = [rng.standard_normal(sizes[i + 1]) for i in range(len(sizes) - 1)]
    return DeepReLU(Ws, bs)


def unit_ball_radius_direct(d):
    """R with pi^{d/2} R^d / Gamma(d/2 + 1) = 1, computed here without the library."""
    return (special.gamma(d / 2 + 1) / np.pi ** (d / 2)) ** (1 / d)


# --------------------------------------------------------------------------- Telgarsky
@pytest.mark.parametrize("exact", [False, True])
def test_sawtooth_has_2_to_the_k_linear_pieces(exact):
    # Telgarsky 2016, Sec. 3: the k-fold tent map has 2^k affine pieces on [0, 1]; counted exactly.
    for k in range(13):
        assert count_linear_pieces(sawtooth(k), (0.0, 1.0), exact=exact) == 2**k


@pytest.mark.parametrize("k", range(9))
def test_sawtooth_piece_count_matches_a_dense_grid(k):
    # Independent count: slopes between the points of a grid 32 times finer than the pieces, from
    # the direct composition of the tent map and from the network (the kinks j / 2^k lie on the grid).
    x = np.arange(2 ** (k + 5) + 1) / 2 ** (k + 5)
    assert grid_piece_count(tent_composition(x, k), x) == 2**k
    assert grid_piece_count(sawtooth(k)(x[:, None]), x) == 2**k
    pl = linear_pieces(sawtooth(k))
    np.testing.assert_array_equal(pl.breakpoints, np.arange(2**k + 1) / 2**k)
    np.testing.assert_array_equal(np.abs(pl.slopes), np.full(2**k, 2.0**k))


def test_sawtooth_is_the_k_fold_composition_of_the_tent_map():
    # Every operation is exact on dyadic numbers in [0, 1], so the network equals the composition
    # bit for bit (tolerance 0), on random points and on a dyadic grid.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(20000), np.arange(2**12 + 1) / 2**12])
    for k in range(13):
        np.testing.assert_array_equal(sawtooth(k)(x[:, None]), tent_composition(x, k))


def test_sawtooth_has_k_hidden_layers_of_two_neurons():
    for k in range(1, 8):
        net = sawtooth(k)
        assert net.widths == (2,) * k and net.depth == k + 1 and net.n_neurons == 2 * k


def test_linear_pieces_are_the_maximal_affine_pieces_of_a_random_network():
    # Each reported piece is affine (the network agrees with slope t + intercept at interior points,
    # up to rounding of the network's sums, 1e-12 relative) and adjacent slopes differ; exact and
    # floating-point counts agree.
    rng = np.random.default_rng(1)
    for trial in range(5):
        net = random_deep_net(rng)
        pl = linear_pieces(net, (-3.0, 3.0))
        assert isinstance(pl, PiecewiseLinear) and len(pl) == count_linear_pieces(net, (-3, 3), exact=True)
        P = pl.breakpoints
        assert P[0] == -3 and P[-1] == 3 and (np.diff(P) > 0).all()
        u = rng.random((len(pl), 4))
        t = P[:-1, None] + u * np.diff(P)[:, None]  # (p, 4) interior points
        values = net(t.reshape(-1, 1)).reshape(t.shape)
        scale = np.abs(values).max() + 1
        np.testing.assert_allclose(values, pl.slopes[:, None] * t + pl.intercepts[:, None], rtol=0,
                                   atol=1e-12 * scale)
        assert (np.abs(np.diff(pl.slopes)) > 1e-9).all()


def test_a_wide_two_layer_net_is_counted_whatever_its_width_times_its_pieces():
    # 4000 kinks inside [0, 1]: 4001 pieces (every neuron bends the sum, a_j != 0), by the closed form m + 1. The
    # (pieces, width) products reach 1.6e7 entries, but the arrays held are (pieces, 1) once the output layer
    # is folded in and (rows, width) blocks: a cap on pieces x width refused it.
    rng = np.random.default_rng(12)
    m = 4000
    t = np.sort(rng.uniform(0.001, 0.999, m))
    net = TwoLayer(rng.choice([-1.0, 1.0], m), np.column_stack([np.ones(m), -t]), gamma=1.0, bias=True)
    assert count_linear_pieces(net) == m + 1


def test_two_layer_relu_net_on_a_line_has_at_most_m_plus_1_pieces():
    # A width-m relu network bends at t_j = -b_j / w_j only: pieces = 1 + #{distinct t_j inside},
    # at most m + 1 (counted here directly from the parameters).
    rng = np.random.default_rng(2)
    for m in (1, 5, 40, 300):
        W = np.column_stack([rng.standard_normal(m), rng.uniform(-1.5, 1.5, m)])  # (m, 2): w_j, b_j
        a = rng.standard_normal(m)
        net = TwoLayer(a, W, activation="relu", gamma=1.0, bias=True)
        kinks = -W[:, 1] / W[:, 0]
        inside = int(((kinks > -1) & (kinks < 1)).sum())
        count = count_linear_pieces(net, (-1.0, 1.0))
        assert count == 1 + inside <= max_pieces_two_layer(m)
    # all kinks inside: exactly m + 1
    m = 50
    t = np.sort(rng.uniform(0.01, 0.99, m))
    net = TwoLayer(rng.choice([-1.0, 1.0], m), np.column_stack([np.ones(m), -t]), gamma=1.0, bias=True)
    assert count_linear_pieces(net) == count_linear_pieces(net, exact=True) == m + 1
    # neurons repeated with a scaled row bend at the same point: one kink each. Scaling by 2 is exact
    # in binary; by 3 the float kinks -3b/(3w) and -b/w may differ by an ulp, which the default
    # tolerance (1e-12 of the interval) merges.
    a = rng.choice([-1.0, 1.0], m)
    W = np.column_stack([np.ones(m), -t])
    for scale, modes in ((2.0, (False, True)), (3.0, (False,))):
        twice = TwoLayer(np.concatenate([a, a]), np.concatenate([W, scale * W]), gamma=1.0, bias=True)
        for exact in modes:
            assert count_linear_pieces(twice, exact=exact) == m + 1


@pytest.mark.parametrize("kink_ulps, end_ulps", [(1, 2), (2, 3)])
def test_a_kink_one_ulp_from_the_end_of_its_piece_splits_it_in_floating_point(kink_ulps, end_ulps):
    # relu(t - c) on [1, 1 + n eps] with c = 1 + j eps: slope 0 on [1, c], slope 1 on [c, 1 + n eps], the
    # closed form. The second piece is one ulp wide, so its midpoint rounds onto one of its ends: onto
    # the right end, one past the last old piece (an IndexError before), or onto the kink (found
    # inactive, one piece). Every number here is a float, so the answer is exact.
    c, hi = 1 + kink_ulps * EPS, 1 + end_ulps * EPS
    net = DeepReLU([np.ones((1, 1)), np.ones((1, 1))], [np.array([-c]), np.zeros(1)])
    pl = linear_pieces(net, (1.0, hi))
    assert pl.breakpoints.tolist() == [1.0, c, hi]
    assert pl.slopes.tolist() == [0.0, 1.0] and pl.intercepts.tolist() == [0.0, -c]


def test_pieces_on_a_line_through_a_network_in_higher_dimension():
    # Along x(t) = x0 + t v the neuron relu(<w, x> + b) bends at t = -(<w, x0> + b) / <w, v>.
    rng = np.random.default_rng(3)
    m, d = 30, 4
    W = rng.standard_normal((m, d + 1))
    net = TwoLayer(rng.standard_normal(m), W, gamma=1.0, bias=True)
    x0, v = rng.standard_normal(d), rng.standard_normal(d)
    kinks = -(W[:, :d] @ x0 + W[:, d]) / (W[:, :d] @ v)
    expected = 1 + int(((kinks > -2) & (kinks < 2)).sum())
    assert count_linear_pieces(net, (-2.0, 2.0), origin=x0, direction=v) == expected
    deep = DeepReLU.from_two_layer(net)
    assert count_linear_pieces(deep, (-2.0, 2.0), origin=x0, direction=v, exact=True) == expected


def test_deep_relu_from_two_layer_is_the_same_function():
    rng = np.random.default_rng(4)
    net = TwoLayer(rng.standard_normal(7), rng.standard_normal((7, 4)), gamma=0.3, bias=True)
    X = rng.standard_normal((20, 3))
    np.testing.assert_allclose(DeepReLU.from_two_layer(net)(X), net(X), rtol=1e-13, atol=1e-14)


def test_l1_distance_matches_quadrature():
    # Exact piecewise integration against scipy's quad split at every kink of both functions and at every
    # zero of their difference (scipy's brentq on each piece where it changes sign): on each part the
    # integrand is linear. Without the zeros, quad missed a crossing by 8e-8 while reporting 5e-13.
    rng = np.random.default_rng(5)
    m = 12
    net = TwoLayer(rng.standard_normal(m), np.column_stack([rng.standard_normal(m), rng.uniform(-1, 1, m)]),
                   gamma=1.0, bias=True)
    f = sawtooth(4)

    def diff(t):
        return f(np.array([[t]]))[0] - net(np.array([[t]]))[0]

    kinks = np.concatenate([[0.0, 1.0], np.arange(17) / 16, linear_pieces(net).breakpoints])
    kinks = np.unique(kinks[(kinks >= 0) & (kinks <= 1)])
    zeros = [optimize.brentq(diff, a, b, xtol=1e-15) for a, b in zip(kinks[:-1], kinks[1:]) if diff(a) * diff(b) < 0]
    points = np.unique(np.concatenate([kinks, zeros]))
    value, err = integrate.quad(lambda t: abs(diff(t)), 0, 1, points=points[1:-1], limit=500, epsabs=1e-13,
                                epsrel=1e-12)
    assert abs(l1_distance(f, net) - value) <= 1e-10 + 10 * err


@pytest.mark.parametrize("lo, hi", [(0.0, 10.0), (1e6, 1e6 + 10), (0.0, 1e-10)])
def test_l1_distance_refuses_a_function_defined_on_a_tenth_of_the_interval_at_any_scale(lo, hi):
    # f is given on [lo, lo + (hi - lo) / 10] only: the distance over [lo, hi] is not defined by f, at
    # any position or width of the interval (np.isclose's absolute 1e-8 and relative 1e-5 slack let
    # the last two through, integrating f's last piece extended over the other nine tenths).
    f = PiecewiseLinear([lo, lo + (hi - lo) / 10], [1.0], [-lo])
    g = PiecewiseLinear([lo, hi], [0.0], [0.0])
    with pytest.raises(ValueError, match="f is defined on"):
        l1_distance(f, g, (lo, hi))


def test_l1_distance_of_networks_of_d_inputs_is_taken_along_the_given_line():
    # two relu networks on R^3 restricted to x(t) = x0 + t v, t in [-1, 2]: quad split at both sets of kinks and
    # at the zeros of the difference (as above); without origin and direction the call names them
    rng = np.random.default_rng(6)
    f, g = (TwoLayer(rng.standard_normal(6), rng.standard_normal((6, 4)), gamma=1.0, bias=True) for _ in range(2))
    x0, v = rng.standard_normal(3), rng.standard_normal(3)

    def diff(t):
        x = (x0 + t * v)[None]
        return f(x)[0] - g(x)[0]

    line = dict(origin=x0, direction=v)
    kinks = np.concatenate([[-1.0, 2.0], *(linear_pieces(h, (-1.0, 2.0), **line).breakpoints for h in (f, g))])
    kinks = np.unique(kinks)
    zeros = [optimize.brentq(diff, a, b, xtol=1e-15) for a, b in zip(kinks[:-1], kinks[1:]) if diff(a) * diff(b) < 0]
    points = np.unique(np.concatenate([kinks, zeros]))
    value, err = integrate.quad(lambda t: abs(diff(t)), -1, 2, points=points[1:-1], limit=500, epsabs=1e-13,
                                epsrel=1e-12)
    assert abs(l1_distance(f, g, (-1.0, 2.0), **line) - value) <= 1e-10 + 10 * err
    with pytest.raises(ValueError, match="f takes d=3 coordinates: give the line's direction"):
        l1_distance(f, g, (-1.0, 2.0))

@pytest.mark.parametrize("c", [1e-300, 1e-200, 1.0, 1e200, 1e300])
def test_l1_distance_of_a_line_crossing_zero_is_exact_at_any_scale(c):
    # int_0^1 |c (t - 1/3)| dt = c ((1/3)^2 + (2/3)^2) / 2 = 5 c / 18: two triangles, whose areas
    # used to be computed from du^2 (overflowing at 1e200, and at 1e-200 the sign test du dv < 0
    # underflowed to -0.0 and took the crossing for a trapezoid).
    f = PiecewiseLinear([0.0, 1.0], [c], [-c / 3])
    zero = PiecewiseLinear([0.0, 1.0], [0.0], [0.0])
    assert l1_distance(f, zero) == pytest.approx(5 * c / 18, rel=1e-14)


@pytest.mark.parametrize("k", [5, 7])
def test_telgarsky_lower_bound_holds_for_shallow_networks(k):
    # int_0^1 |f_k - g| >= (2^k - 2 s - 2) / 2^{k+3} for g with s pieces. Checked for least-squares
    # fits (the best a width-m network with these kinks does, on a fine grid) and random networks,
    # the L1 distance computed exactly.
    rng = np.random.default_rng(6)
    f = sawtooth(k)
    x = (np.arange(4096) + 0.5) / 4096
    y = tent_composition(x, k)
    for m in (1, 3, 8, 2 ** (k - 2), 2 ** (k - 1) - 3):
        knots = np.sort(rng.uniform(0, 1, m))
        features = np.maximum(x[:, None] - knots[None, :], 0)  # (n, m)
        design = np.column_stack([features, np.ones_like(x), x])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        # c + b x + sum_j a_j relu(x - k_j) as a width-(m + 2) relu network (x = relu(x) - relu(-x))
        a = np.concatenate([coef[:m], [coef[m + 1], -coef[m + 1], coef[m]]])
        W = np.concatenate([np.column_stack([np.ones(m), -knots]), [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]])
        g = TwoLayer(a, W, gamma=1.0, bias=True)
        s = count_linear_pieces(g)
        assert s <= m + 1
        assert l1_distance(f, g) >= sawtooth_l1_lower_bound(k, s)
        h = TwoLayer(rng.standard_normal(m), np.column_stack([rng.standard_normal(m), rng.uniform(-1, 1, m)]),
                     gamma=1.0, bias=True)
        assert l1_distance(f, h) >= sawtooth_l1_lower_bound(k, count_linear_pieces(h))


def test_sawtooth_of_a_float_with_denominator_2_to_the_D_is_one_at_k_equal_D_and_zero_beyond():
    # x = m / 2^D (m odd): t halves the denominator, so f_{D-1}(x) = 1/2, f_D(x) = 1, f_k(x) = 0 for k > D
    # (Fraction oracle: tent_fraction below). In floats this is exact (dyadic arithmetic): equality.
    from fractions import Fraction

    def tent_fraction(x, k):
        for _ in range(k):
            x = 2 * x if x <= Fraction(1, 2) else 2 - 2 * x
        return x

    rng = np.random.default_rng(44)
    for dtype in (np.float64, np.float32):
        x = (rng.random(40) * 2.0 ** -rng.integers(0, 12, 40)).astype(dtype)  # scales 2^-11 ... 1
        for v in x:
            D = Fraction(float(v)).denominator.bit_length() - 1
            assert tent_fraction(Fraction(float(v)), D) == 1 and tent_fraction(Fraction(float(v)), D + 1) == 0
            assert sawtooth(D, dtype=dtype)(np.array([[v]], dtype=dtype))[0] == 1.0
            for k in (D + 1, D + 5):
                assert sawtooth(k, dtype=dtype)(np.array([[v]], dtype=dtype))[0] == 0.0


@pytest.mark.parametrize("dtype, p", [(np.float64, 53), (np.float32, 24)])
def test_sawtooth_vanishes_on_every_float_of_2_to_the_p_minus_k_to_one(dtype, p):
    # A float of precision p in [2^-j, 2^(1-j)) is a multiple of 2^-(p + j - 1): f_k = 0 on all floats of
    # [2^(p-k), 1] (the previous statement), so on [1/2, 1] from k = p + 1 (54, 25) and on every draw of
    # numpy's uniform generator (multiples of 2^-53, 2^-24 in float32), while f_k(x) = 2^k x != 0 for x < 2^-k.
    # Float inputs m 2^-(p + j - 1) with random m of p bits, odd m included, cover each binade [2^-j, 2^(1-j)).
    rng = np.random.default_rng(45)
    for k in (p + 1, p + 4):
        m = rng.integers(2 ** (p - 1), 2**p, 2000, dtype=np.int64)
        j = rng.integers(1, k - p + 1, 2000)
        x = np.ldexp(m.astype(np.float64), -(p + j - 1)).astype(dtype)
        assert (x >= 2.0 ** (p - k)).all() and np.array_equal(x.astype(np.float64), np.ldexp(m, -(p + j - 1)))
        np.testing.assert_array_equal(sawtooth(k, dtype=dtype)(x[:, None]), 0.0)
        draws = np.random.default_rng(46).random(2000, dtype=dtype)
        np.testing.assert_array_equal(sawtooth(k, dtype=dtype)(draws[:, None]), 0.0)
        tiny = np.array([[2.0 ** -(k + 3)]], dtype=dtype)
        assert sawtooth(k, dtype=dtype)(tiny)[0] == 2.0**-3


def test_deep_piece_bound_is_the_product_of_widths_plus_one_and_holds_on_random_networks():
    # p <= prod_l (n_l + 1) (each of the n_l kinks of layer l splits a piece once at most), checked with the
    # exact count on random nets of depth 1-4 and widths 1-5 on an interval holding all their kinks.
    rng = np.random.default_rng(47)
    for _ in range(40):
        widths = tuple(int(n) for n in rng.integers(1, 6, rng.integers(1, 5)))
        net = random_deep_net(rng, widths=widths)
        bound = 1
        for n in widths:
            bound *= n + 1
        assert max_pieces(widths) == bound == max_pieces(net.widths)
        assert count_linear_pieces(net, (-1e3, 1e3), exact=True) <= bound


def test_deep_piece_bound_is_attained_by_one_hidden_layer_with_distinct_kinks():
    # m neurons relu(t - c_j) with distinct c_j and output weights of one sign: m + 1 pieces = max_pieces([m]).
    for m in (1, 5, 17):
        c = np.linspace(-1.0, 1.0, m)
        net = DeepReLU([np.ones((m, 1)), np.ones((1, m))], [-c, np.zeros(1)])
        assert count_linear_pieces(net, (-2.0, 2.0), exact=True) == m + 1 == max_pieces([m]) == max_pieces_two_layer(m)


def test_deep_piece_bound_for_equal_widths_is_m_plus_one_to_the_l_below_2m_to_the_l():
    # Closed form for widths [m] * L: (m + 1)^L <= (2 m)^L (m >= 1), as Python integers; the sawtooth's 2^k pieces
    # (widths [2] * k) sit below its 3^k.
    for m in (1, 2, 7, 100):
        for L in (1, 3, 30):
            assert max_pieces([m] * L) == (m + 1) ** L <= (2 * m) ** L
    assert max_pieces([]) == 1
    for k in range(1, 8):
        assert count_linear_pieces(sawtooth(k)) == 2**k <= max_pieces(sawtooth(k).widths) == 3**k


def test_count_linear_pieces_refuses_more_pieces_than_it_can_track_naming_the_remedies(monkeypatch):
    # The (pieces, width) arrays are capped: with the cap lowered to 2^10 entries, sawtooth(9) (2^9 pieces of
    # width 2: 2^10 entries) is still counted, 2^9 (closed form), and sawtooth(40) (2^40 pieces: numpy ran out of
    # memory after 30 s) is refused once 2^10 pieces reach a layer of width 2; exact=True takes 1/8 of the cap.
    import shallow.depth as depth
    monkeypatch.setattr(depth, "_PIECES_MAX", 2**10)
    assert count_linear_pieces(sawtooth(9)) == 2**9
    with pytest.raises(ValueError, match=r"f has at least 1024 affine pieces .* 1024 x 2 > 1024 entries.*"
                                         r"sub-interval of interval.*closed form.*2\^k pieces"):
        count_linear_pieces(sawtooth(40))
    assert count_linear_pieces(sawtooth(6), exact=True) == 2**6
    with pytest.raises(ValueError, match=r"f has at least 128 affine pieces .* > 128 entries"):
        count_linear_pieces(sawtooth(7), exact=True)
    assert count_linear_pieces(sawtooth(40), (0.5, 0.5 + 2.0**-32)) == 2**8  # a sub-interval: 2^40 2^-32 pieces


@pytest.mark.slow
def test_count_linear_pieces_of_sawtooth_40_on_the_unit_interval_is_refused_before_memory_runs_out():
    # 2^40 pieces: refused at 2^21 pieces of width 2 (the default cap 2^22), after 5-10 s and 0.6 GB
    # (it was a MemoryError after 30 s).
    with pytest.raises(ValueError, match="sub-interval of interval"):
        count_linear_pieces(sawtooth(40))


def test_sawtooth_lower_bound_is_its_formula():
    assert sawtooth_l1_lower_bound(10, 1) == (2**10 - 4) / 2**13
    assert sawtooth_l1_lower_bound(4, 7) == 0.0
    assert max_pieces_two_layer(0) == 1


# --------------------------------------------------------------------------- Eldan-Shamir
@pytest.mark.parametrize("d", [1, 2, 3, 6])
def test_eldan_shamir_density_integrates_to_one(d):
    # int phi^2 = int_0^inf |S^{d-1}| r^{d-1} phi(r e_1)^2 dr, by quad on cells of half a period of
    # the Bessel oscillation up to z = 2 pi R r = 2000, plus the tail 2 nu / (pi z) (the average of
    # the asymptotic J^2 ~ (2 / (pi z)) cos^2; the neglected oscillating part is below 2 nu / (pi z^2)).
    R = unit_ball_radius_direct(d)
    area = 2 * np.pi ** (d / 2) / special.gamma(d / 2)
    z_end = 2000.0
    r_end = z_end / (2 * np.pi * R)

    def radial(r):
        return area * r ** (d - 1) * float(eldan_shamir_density(np.array([[r] + [0.0] * (d - 1)]))[0])

    edges = np.linspace(0, r_end, int(z_end / (np.pi / 2)) + 1)
    body = sum(integrate.quad(radial, lo, hi, epsabs=1e-14, epsrel=1e-12)[0] for lo, hi in zip(edges[:-1], edges[1:]))
    tail = 2 * (d / 2) / (np.pi * z_end)
    assert abs(body + tail - 1) <= 2 * (d / 2) / (np.pi * z_end**2) + 1e-9


@pytest.mark.parametrize("d", [1, 3])
def test_eldan_shamir_density_stays_below_its_envelope_where_the_plain_norm_overflows(d):
    # Far out, |J_nu(z)| <= sqrt(2 / (pi z)) (1 + O(1/z)) (DLMF 10.17.3), so
    # phi^2 = Lambda_nu(z)^2 <= Gamma(nu + 1)^2 (2 / z)^(2 nu) 2 / (pi z), nu = d / 2, z = 2 pi R |x|:
    # a number that underflows to 0 or nearly. |x| beyond 1e154 overflows a plain Euclidean norm,
    # and the density was NaN there.
    nu = d / 2
    R = unit_ball_radius_direct(d)
    for r in (1e100, 1e155, 1e200, 1e300):
        for direction in (np.eye(d)[0], np.ones(d) / np.sqrt(d)):
            value = float(eldan_shamir_density((r * direction)[None, :])[0])
            z = 2 * np.pi * R * r
            log_bound = 2 * special.gammaln(nu + 1) + 2 * nu * np.log(2 / z) + np.log(2 / (np.pi * z))
            assert 0 <= value <= 2 * np.exp(log_bound)
    assert eldan_shamir_density(np.full((1, d), 1.7e308))[0] == 0  # |x| itself is beyond float64


def _ball_fourier_transform(X):
    """Closed forms of int_{|y| <= R} e^{-2 pi i <x, y>} dy for the unit-volume ball of R^d, d <= 3: d = 1,
    sin(pi x) / (pi x) (R = 1/2); d = 2, R J_1(2 pi R |x|) / |x| (R = 1/sqrt(pi)); d = 3,
    4 pi R^3 (sin a - a cos a) / a^3, a = 2 pi R |x|, R = (3 / (4 pi))^{1/3}."""
    d = X.shape[1]
    r = np.linalg.norm(X, axis=1)
    R = unit_ball_radius_direct(d)
    if d == 1:
        return np.sinc(r)
    if d == 2:
        return np.where(r > 0, R * special.j1(2 * np.pi * R * r) / np.where(r > 0, r, 1), np.pi * R**2)
    a = 2 * np.pi * R * r
    return np.where(a > 0, 4 * np.pi * R**3 * (np.sin(a) - a * np.cos(a)) / np.where(a > 0, a, 1) ** 3,
                    4 * np.pi * R**3 / 3)


def _points_across_the_sign_changes(d):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, d)) * rng.uniform(0.01, 3, (300, 1))
    X[0] = 0.0
    return X


@pytest.mark.parametrize("d", [1, 2, 3])
def test_eldan_shamir_density_is_the_squared_fourier_transform_of_the_unit_volume_ball(d):
    X = _points_across_the_sign_changes(d)
    # 1e-13 absolute: phi is of order 1 and the closed forms lose a few digits to cancellation near 0.
    np.testing.assert_allclose(eldan_shamir_density(X), _ball_fourier_transform(X) ** 2, rtol=1e-10, atol=1e-13)
    assert abs(unit_ball_radius(d) - unit_ball_radius_direct(d)) <= 4 * EPS


@pytest.mark.parametrize("d", [1, 2, 3])
def test_eldan_shamir_phi_is_the_signed_fourier_transform_of_the_unit_volume_ball(d):
    # the same closed forms, with their signs: radii up to 3 cross the first zeros of J_{d/2}
    X = _points_across_the_sign_changes(d)
    phi = _ball_fourier_transform(X)
    assert (phi < -0.01).sum() > 10  # the points do reach the negative lobes
    np.testing.assert_allclose(eldan_shamir_phi(X), phi, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("d", [1000, 2000])
def test_eldan_shamir_density_is_the_hypergeometric_0f1_in_high_dimension(d):
    # phi^2 = Lambda_nu(z)^2 with Lambda_nu(z) = 0F1(; nu + 1; -z^2 / 4), z = 2 pi R_d |x|, nu = d / 2
    # (mpmath). For sqrt(20 nu) < z < nu, J_nu(z) lies below 1e-308 while Lambda_nu(z) does not. 5e-11:
    # exp of a logarithm of size log Gamma(nu + 1) ~ 4e3 carries its rounding (1e-12 absolute).
    import mpmath

    mpmath.mp.dps = 50
    R = (mpmath.gamma(mpmath.mpf(d) / 2 + 1) / mpmath.pi ** (mpmath.mpf(d) / 2)) ** (mpmath.mpf(1) / d)
    nu = d / 2
    z = np.array([1.001 * math.sqrt(20 * (nu + 1)), nu / 4, nu / 2, nu - 2])
    r = np.array([float(v / (2 * mpmath.pi * R)) for v in z])
    X = np.zeros((len(r), d))
    X[:, 0] = r
    zz = [2 * mpmath.pi * R * mpmath.mpf(v) for v in r]
    expected = [float(mpmath.hyp0f1(mpmath.mpf(nu) + 1, -t * t / 4, maxterms=10**6) ** 2) for t in zz]
    np.testing.assert_allclose(eldan_shamir_density(X), expected, rtol=5e-11)


@pytest.mark.parametrize("d", [300, 1000])
def test_eldan_shamir_radial_density_is_q_of_z_in_high_dimension(d):
    # |S^{d-1}| r^{d-1} phi^2 = 2 pi R_d q(z), q(z) = 2 nu J_nu(z)^2 / z (mpmath's Bessel J), z = 2 pi R_d r:
    # the sphere's area underflows and r^{d-1} overflows separately. 1e-11: a few roundings of scipy's J_nu.
    import mpmath

    mpmath.mp.dps = 50
    R = (mpmath.gamma(mpmath.mpf(d) / 2 + 1) / mpmath.pi ** (mpmath.mpf(d) / 2)) ** (mpmath.mpf(1) / d)
    nu = d / 2
    z = np.array([nu / 2, nu, 2 * nu + 0.3])
    r = np.array([float(v / (2 * mpmath.pi * R)) for v in z])
    expected = [float(2 * mpmath.pi * R * 2 * nu * mpmath.besselj(nu, mpmath.mpf(t)) ** 2 / mpmath.mpf(t))
                for t in [2 * mpmath.pi * R * mpmath.mpf(v) for v in r]]
    np.testing.assert_allclose(eldan_shamir_radial_density(r, d), expected, rtol=1e-11)


@pytest.mark.parametrize("d", [1, 2, 7, 30])
def test_eldan_shamir_radial_tail_is_two_nu_over_pi_z_at_large_radii(d):
    # J_nu(t)^2 = (2 / (pi t)) cos^2(t - nu pi / 2 - pi / 4) + O(t^-2): the tail int_z^inf 2 nu J_nu^2 / t dt
    # is 2 nu / (pi z) (1 + O(1 / z)). At z = 1e9 the series would need 1e9 Bessel terms; the closed forms
    # (Neumann's identity, or Si for half-integer nu) need d / 2. Tolerance: O(1/z) plus the rounding of
    # 1 - F (eps / tail = 2e-7 at z = 1e9).
    nu = d / 2
    z = np.array([1e6, 1e9])
    F = eldan_shamir_radial_cdf(z / (2 * np.pi * unit_ball_radius_direct(d)), d)
    np.testing.assert_allclose(1 - F, 2 * nu / (np.pi * z), rtol=1e-5)


@pytest.mark.parametrize("d", [2, 5, 20])
def test_eldan_shamir_radial_cdf_matches_quadrature(d):
    # The Bessel series against quad of q(z) = 2 nu J_nu(z)^2 / z (written here with scipy's jv),
    # cell by cell in z, at a few radii.
    nu = d / 2
    R = unit_ball_radius_direct(d)
    z_points = np.array([0.5 * nu, nu, nu + 5, 3 * nu + 20, 150.0])
    edges = np.unique(np.concatenate([np.arange(0, 151, 1.0), z_points]))
    cells = [integrate.quad(lambda z: 2 * nu * special.jv(nu, z) ** 2 / z if z > 0 else 0.0, lo, hi,
                            epsabs=1e-15, epsrel=1e-13)[0] for lo, hi in zip(edges[:-1], edges[1:])]
    F = np.concatenate([[0.0], np.cumsum(cells)])
    expected = F[np.searchsorted(edges, z_points)]
    got = eldan_shamir_radial_cdf(z_points / (2 * np.pi * R), d)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11)
    # and the radial density is q in the variable r
    r = z_points / (2 * np.pi * R)
    q = 2 * nu * special.jv(nu, z_points) ** 2 / z_points
    np.testing.assert_allclose(eldan_shamir_radial_density(r, d), q * 2 * np.pi * R, rtol=1e-10)


@pytest.mark.parametrize("d", [2, 5, 20])
def test_eldan_shamir_samples_follow_the_radial_law(d):
    # KS test of |x| against the radial CDF (fixed seed; rejects at p < 1e-3), directions centred
    # (|mean of x/|x|| within 5 / sqrt(n) per coordinate), and the mass beyond the table's z_max
    # (drawn by rejection) within 5 binomial standard deviations.
    n = 3000
    X = sample_eldan_shamir(n, d, rng=8)
    r = np.linalg.norm(X, axis=1)
    assert stats.kstest(r, lambda t: eldan_shamir_radial_cdf(t, d)).pvalue > 1e-3
    assert np.abs((X / r[:, None]).mean(axis=0)).max() < 5 / math.sqrt(n)
    big = sample_eldan_shamir(20000, d, rng=9)
    z_max = 2 * d + 200.0
    r_max = z_max / (2 * np.pi * unit_ball_radius_direct(d))
    p = 1 - float(eldan_shamir_radial_cdf(np.array([r_max]), d)[0])
    count = int((np.linalg.norm(big, axis=1) > r_max).sum())
    assert abs(count - 20000 * p) <= 5 * math.sqrt(20000 * p * (1 - p))


@pytest.mark.parametrize("d", [1, 5, 20])
def test_eldan_shamir_radius_sampler_inverts_the_cdf_inside_the_table_cells(d):
    # The body of the radial law is drawn by inverting its tabulated CDF, cubic Hermite inside each cell: a
    # uniform u must give the z with F(z) = u. A stub generator hands the sampler u = F(z*) for targets z*
    # inside cells (F by scipy's adaptive quadrature of q(z) = 2 nu J_nu(z)^2 / z, an independent computation);
    # the documented CDF error 3e-10 plus the quadrature's 1e-13: |F(z) - u| < 1e-9. (A KS test cannot see
    # errors of this size: 1e-9 in F takes ~1e18 samples.)
    from shallow.depth import _sample_es_radius

    nu = d / 2
    targets = np.array([0.737, 2.531, 4.069, 7.777, 15.013, 33.339, 101.011])  # z*, none on a cell edge

    def F(z):
        return integrate.quad(lambda t: 2 * nu * special.jv(nu, t) ** 2 / t, 0, z, epsabs=1e-15, epsrel=1e-13,
                              limit=500)[0]

    u = np.array([F(z) for z in targets])

    class Uniforms:  # the generator's one call in the body: random(n)
        def random(self, n):
            assert n == u.size
            return u.copy()

    z = _sample_es_radius(u.size, d, Uniforms())
    np.testing.assert_allclose([F(v) for v in z], u, rtol=0, atol=1e-9)


def test_eldan_shamir_sampler_is_reproducible():
    np.testing.assert_array_equal(sample_eldan_shamir(50, 3, rng=1), sample_eldan_shamir(50, 3, rng=1))
    assert sample_eldan_shamir(10, 3, rng=1, dtype=np.float32).dtype == np.float32


def test_eldan_shamir_target_is_plus_minus_one_on_its_shells():
    g = EldanShamirFunction(6, n_shells=5, alpha=1.2, rng=0)
    a = (1 + np.arange(6) / 5) * 1.2 * math.sqrt(6)
    np.testing.assert_allclose(g.edges, a, rtol=1e-15)
    rng = np.random.default_rng(10)
    u = rng.standard_normal((400, 6))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = rng.uniform(0, 3 * math.sqrt(6), 400)
    shell = np.searchsorted(a, r, side="right") - 1
    expected = np.where((shell >= 0) & (shell < 5), g.signs[np.clip(shell, 0, 4)], 0.0)
    np.testing.assert_array_equal(g(u * r[:, None]), expected)


@pytest.mark.parametrize("d, N, ramp", [(3, 3, 0.25), (8, 6, 0.5)])
def test_eldan_shamir_three_layer_network_is_within_its_error_bound(d, N, ramp):
    # sup |net - g_ramp| <= Lip(psi) d h^2 / 4 <= tolerance (radial_network's bound), on points drawn
    # from phi^2 and on points spread over the shells; and g_ramp = g on the flat middle of each shell.
    g = EldanShamirFunction(d, n_shells=N, ramp=ramp, rng=11)
    net = g.network(tolerance=0.02)
    assert net.depth == 3 and net.meta["error_bound"] <= 0.02
    rng = np.random.default_rng(12)
    u = rng.standard_normal((3000, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    X = np.concatenate([u * rng.uniform(0, 1.1 * g.edges[-1], (3000, 1)), sample_eldan_shamir(3000, d, rng=13)])
    assert np.abs(net(X) - g(X)).max() <= net.meta["error_bound"] + 1e-12
    s = (X * X).sum(axis=1)
    sq = g.edges**2
    i = np.clip(np.searchsorted(sq, s, side="right") - 1, 0, N - 1)
    w = sq[i + 1] - sq[i]
    flat = (s >= sq[i] + ramp * w) & (s <= sq[i + 1] - ramp * w) & (s < sq[-1])
    hard = EldanShamirFunction(d, n_shells=N, signs=g.signs)
    np.testing.assert_array_equal(g(X[flat]), hard(X[flat]))


def test_radial_network_overestimates_the_squared_norm_within_d_h2_over_4():
    # psi(s) = s on [0, 9] is read off directly: 0 <= net - |x|^2 <= d h^2 / 4 where |x_i| <= B = 3.
    d = 4
    net = radial_network([0.0, 9.0], [0.0, 9.0], d, 3.0, tolerance=0.05)
    K = net.meta["pieces_per_square"]
    h = 3.0 / K
    X = np.random.default_rng(14).uniform(-1.5, 1.5, (2000, d))
    gap = net(X) - (X * X).sum(axis=1)
    assert gap.min() >= -1e-12 and gap.max() <= d * h * h / 4 + 1e-12 <= 0.05 + 1e-12


# --------------------------------------------------------------------------- Safran-Shamir
@pytest.mark.parametrize("d, delta, radius", [(2, 0.05, 1.0), (5, 0.2, 1.0), (10, 0.1, 2.0)])
def test_safran_shamir_network_is_the_ball_indicator_away_from_the_boundary(d, delta, radius):
    # Exact outside the shell (1 - delta) r < |x| < (1 + delta) r, up to rounding (1e-12), including
    # points far outside whose coordinates leave the range of the squares; in [0, 1] inside the shell.
    net = ball_indicator_network(d, delta, radius)
    assert net.depth == 3
    rng = np.random.default_rng(15)
    u = rng.standard_normal((4000, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = radius * np.concatenate([rng.uniform(0, 1 - delta, 2000), rng.uniform(1 + delta, 4, 2000)])
    X = u * r[:, None]
    np.testing.assert_allclose(net(X), ball_indicator(X, radius), rtol=0, atol=1e-12)
    shell = u * (radius * rng.uniform(1 - delta, 1 + delta, 4000))[:, None]
    values = net(shell)
    assert values.min() >= -1e-12 and values.max() <= 1 + 1e-12


@pytest.mark.parametrize("d, delta, radius", [(1, 0.1, 1.0), (3, 0.1, 1.0), (9, 0.5, 2.0)])
def test_ball_indicator_network_is_within_its_error_bound(d, delta, radius):
    # sup_x |net(x) - 1{|x| <= r}| <= meta["error_bound"] on a fine radial grid (4001 radii in [0, 2r], the
    # shell and the sphere included) along 200 directions; the indicator from numpy's norms; 1e-12 for the
    # rounding of the network's few relu terms
    net = ball_indicator_network(d, delta, radius)
    rng = np.random.default_rng(16)
    u = rng.standard_normal((200, d))
    u = np.concatenate([np.eye(d), u / np.linalg.norm(u, axis=1, keepdims=True)])  # (d + 200, d)
    t = radius * np.linspace(0, 2, 4001)
    X = (t[:, None, None] * u[None]).reshape(-1, d)
    target = (np.linalg.norm(X, axis=1) <= radius).astype(float)
    assert np.abs(net(X) - target).max() <= net.meta["error_bound"] + 1e-12


def test_ball_indicator_network_error_bound_is_attained_when_the_sphere_meets_the_nodes():
    # d = 9, delta = 0.5: h = B / K = 1.5 / 3 = 1/2 and r = 1 = 2 h is a node. At x = (1 + eps) e_1, just
    # outside (indicator 0), s_hat = 1 + 2.5 eps (the chord of t^2 between the nodes 1 and 1.5) and the network
    # is psi(s_hat) = 1 - 2.5 eps / (B^2 - r^2) = 1 - 2 eps: the error tends to the bound 1 (1e-9: rounding)
    net = ball_indicator_network(9, 0.5)
    assert net.meta["pieces_per_square"] == 3 and net.meta["error_bound"] == 1.0
    eps = 1e-6
    x = np.zeros((1, 9))
    x[0, 0] = 1 + eps
    error = abs(float(net(x)[0]) - 0.0)
    assert error == pytest.approx(1 - 2 * eps, abs=1e-9) and error >= net.meta["error_bound"] - 1e-3
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [2, 8])
def test_safran_shamir_network_is_exactly_zero_outside_the_shell_at_any_distance_in_its_dtype(d, dtype):
    # 1{|x| <= 1} = 0 for (1 + delta)(1 + 1e-5) <= |x| <= 4 (1 + delta) and at |x| = 1e3 ... 1e30: the network's
    # s_hat >= B^2 there, its second-layer neurons relu(kappa - s_hat) are exactly 0 and the output is its bias 0:
    # bound 0 ulps, no rounding involved. (Left-anchored terms relu(s_hat - kappa) cancelled: in float32 the
    # output was 1 at |x| = 1e6 and 4.8e24 at 1e30; in float64 1.5e-8 at 1e6.)
    delta = 0.01
    net = ball_indicator_network(d, delta=delta, dtype=dtype)
    rng = np.random.default_rng(40)
    u = rng.standard_normal((20000, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    near = u * (1 + delta) * rng.uniform(1 + 1e-5, 4, (20000, 1))
    np.testing.assert_array_equal(net(near.astype(dtype)), 0.0)
    u = np.concatenate([u[:200], np.eye(d), -np.eye(d)])
    for R in (1e3, 1e6, 1e10, 1e30):
        np.testing.assert_array_equal(net((R * u).astype(dtype)), 0.0, err_msg=f"|x| = {R:g}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_safran_shamir_network_is_one_inside_within_twice_eps_times_the_kink_conditioning(dtype):
    # For s_hat <= r^2 the output is (relu(B^2 - s_hat) - relu(r^2 - s_hat)) / (B^2 - r^2), both terms of
    # size <= B^2 / (B^2 - r^2): each rounding costs eps/2 of them, so |net - 1| <= 2 eps (B^2 + r^2) / (B^2 - r^2)
    # (docstring; measured 0.42 of it), 200 eps for delta = 0.01.
    eps = np.finfo(dtype).eps
    d, delta = 4, 0.01
    net = ball_indicator_network(d, delta=delta, dtype=dtype)
    B2 = (1 + delta) ** 2
    rng = np.random.default_rng(41)
    u = rng.standard_normal((20000, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    inside = u * rng.uniform(0, 1 - delta, (20000, 1))
    assert np.abs(net(inside.astype(dtype)) - 1).max() <= 2 * eps * (B2 + 1) / (B2 - 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eldan_shamir_network_is_within_its_error_bound_on_its_input_law_far_tail_included(dtype):
    # sup |net - g| <= error_bound on R^d (radial_network), checked on 10^5 draws from phi^2 (tail ~ r^-2:
    # radii up to ~1e5) and on their directions pushed to |x| = 1e3 ... 1e30 (where g = 0). Rounding slack:
    # the kinks' terms are <= sum_k |beta_k| kappa_k in size, a few eps of that (1e-4 in float32, d = 8).
    # Before the right-anchored second layer the float32 network erred by 14.5 against the bound 0.093.
    d = 8
    g = EldanShamirFunction(d, n_shells=3, alpha=0.4, rng=0, ramp=0.25)
    net = g.network(0.1, dtype=dtype)
    X = sample_eldan_shamir(10**5, d, rng=42)
    u = X[:1000] / np.linalg.norm(X[:1000], axis=1, keepdims=True)
    X = np.concatenate([X] + [R * u for R in (1e3, 1e6, 1e10, 1e30)])
    knots, values = g.profile()
    beta = np.diff(np.concatenate([[0.0], np.diff(values) / np.diff(knots), [0.0]]))  # slope increments of psi
    slack = 8 * np.finfo(dtype).eps * (np.abs(beta) * knots).sum()
    err = np.abs(net(X.astype(dtype)) - g(X))
    assert err.max() <= net.meta["error_bound"] + slack
    np.testing.assert_array_equal(err[-4000:], 0.0)  # far out: exactly g = 0


def test_radial_network_reads_the_interpolant_of_t_squared_inside_b_and_its_last_value_beyond():
    # psi(s) = s on [0, B^2], d = 1: the network is ell(t) for |t| <= B, ell the interpolant of t^2 at the nodes
    # j h, in closed form (j h)^2 + (2 j + 1) h (|t| - j h) for |t| in [j h, (j + 1) h] (exact fractions here);
    # beyond B, ell(t) >= B^2 and the output is psi's last value B^2 exactly. Tolerance: a sum of 2 K terms of
    # size <= 2 B |t|, 4 K eps B^2.
    from fractions import Fraction
    B = 3.0
    net = radial_network([0.0, B * B], [0.0, B * B], 1, B, tolerance=1e-3)
    K = net.meta["pieces_per_square"]
    h = Fraction(B) / K
    t = np.concatenate([np.arange(-K, K + 1) * (B / K), np.random.default_rng(43).uniform(-B, B, 500)])
    expected = []
    for v in t:
        a = abs(Fraction(float(v)))
        j = min(int(a / h), K - 1)
        expected.append(float((j * h) ** 2 + (2 * j + 1) * h * (a - j * h)))
    np.testing.assert_allclose(net(t[:, None]), expected, rtol=0, atol=4 * K * EPS * B * B)
    far = np.array([B * (1 + 1e-9), 2 * B, 1e3, 1e10, 1e30])
    np.testing.assert_array_equal(net(np.concatenate([far, -far])[:, None]), B * B)


def test_ball_indicator_is_one_inside():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1e-6], [3.0, 4.0]])
    np.testing.assert_array_equal(ball_indicator(X), [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(ball_indicator(X, radius=5.0), [1.0, 1.0, 1.0, 1.0])


def test_ball_indicator_compares_norms_beyond_the_range_of_their_squares():
    # 1{|x| <= r} where |x|^2 and r^2 overflow (|x| = 1e300 > r = 1e200: inf <= inf used to give 1) or
    # underflow (|x| = 2e-190 > r = 1e-190: 0 <= 0 used to give 1); the answers are read off |x| / r.
    big = np.array([[1e300, 0.0], [0.0, 5e199], [-1e200, 0.0]])
    np.testing.assert_array_equal(ball_indicator(big, radius=1e200), [0.0, 1.0, 1.0])
    tiny = np.array([[2e-190, 0.0], [0.0, 5e-191], [0.0, 0.0]])
    np.testing.assert_array_equal(ball_indicator(tiny, radius=1e-190), [0.0, 1.0, 1.0])
    # in the ordinary range nothing changes: a point 1 ulp of |x|^2 outside the unit circle stays outside
    np.testing.assert_array_equal(ball_indicator(np.array([[1.0, 2.0**-26]])), [0.0])


def test_ball_indicator_compares_float32_norms_beyond_the_range_of_their_float32_squares():
    # float32 squares overflow from |x| = 1.8e19 and underflow below 1e-23 (r^2 rounded to float32 as well):
    # |x| = 2e20 > r = 1e20 compared inf <= inf (inside), |x| = 2e-30 > r = 1e-30 compared 0 <= 0 (inside).
    # The answers are read off |x| / r (2, 1/2, 3 sqrt(2) / 10, 0), far from 1: float32 rounding cannot flip them.
    big = np.array([[2e20, 0.0], [0.0, 5e19], [3e19, 3e19]], dtype=np.float32)
    out = ball_indicator(big, radius=1e20)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 1.0, 1.0])
    tiny = np.array([[2e-30, 0.0], [0.0, 5e-31], [3e-31, 3e-31], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(ball_indicator(tiny, radius=1e-30), [0.0, 1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- Daniely
@pytest.mark.parametrize("d", [2, 3])
def test_daniely_network_is_within_its_error_bound(d):
    # sup over S^{d-1} x S^{d-1} of |net - sin(pi d^3 <x, y>)| <= interpolation + squares error.
    net = daniely_network(d, tolerance=0.05)
    assert net.depth == 3 and net.meta["error_bound"] <= 0.05
    Z = sample_daniely(4000, d, rng=16)
    assert np.abs(net(Z) - daniely_function(Z)).max() <= net.meta["error_bound"]


@pytest.mark.parametrize("d, omega", [(3, 6.0), (8, 16.0)])
def test_daniely_network_at_a_lower_frequency_is_within_its_error_bound(d, omega):
    # sup |net - sin(omega <x, y>)| <= omega d h^2 / 16 + omega^2 Delta^2 / 8 (docstring), against sin computed
    # here; the second layer holds one neuron per knot, about omega / sqrt(tol) of them: far fewer than
    # the pi d^3 / sqrt(tol) of Daniely's frequency (measured 28 and 73 against 380 and 7200)
    net = daniely_network(d, tolerance=0.05, frequency=omega)
    assert net.meta["error_bound"] <= 0.05 and net.meta["frequency"] == omega
    Z = sample_daniely(4000, d, rng=16)
    t = np.einsum("ij,ij->i", Z[:, :d], Z[:, d:])
    assert np.abs(net(Z) - np.sin(omega * t)).max() <= net.meta["error_bound"]
    assert net.widths[1] <= 2 * omega / np.sqrt(0.05) + 2
    np.testing.assert_allclose(daniely_function(Z, frequency=omega), np.sin(omega * t), rtol=0, atol=1e-14)


def test_daniely_function_is_sin_of_scaled_inner_product():
    rng = np.random.default_rng(17)
    Z = sample_daniely(100, 3, rng=rng)
    x, y = Z[:, :3], Z[:, 3:]
    np.testing.assert_allclose(daniely_function(Z), np.sin(np.pi * 27 * np.einsum("ij,ij->i", x, y)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [3, 8])
def test_daniely_pairs_are_uniform_on_the_product_of_spheres(d):
    # Unit rows, and <x, y> = 2 B - 1 with B ~ Beta((d-1)/2, (d-1)/2) (KS, p > 1e-3).
    Z = sample_daniely(4000, d, rng=18)
    np.testing.assert_allclose(np.linalg.norm(Z[:, :d], axis=1), 1, rtol=4 * EPS)
    np.testing.assert_allclose(np.linalg.norm(Z[:, d:], axis=1), 1, rtol=4 * EPS)
    t = np.einsum("ij,ij->i", Z[:, :d], Z[:, d:])
    assert stats.kstest((t + 1) / 2, stats.beta((d - 1) / 2, (d - 1) / 2).cdf).pvalue > 1e-3


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_constructions_evaluate_on_each_backend(xp, dtype):
    # Same values on numpy and cupy (1e-12 in float64; float32 within 1e-5 of float64 on the
    # sawtooth at dyadic points, where it is exact, and on the indicator away from its shell).
    device = "cpu" if xp is np else "gpu"
    x = np.arange(257)[:, None] / 256
    saw = sawtooth(8, dtype=dtype, device=device)
    out = saw(xp.asarray(x, dtype=dtype))
    assert isinstance(out, xp.ndarray) and out.dtype == dtype
    np.testing.assert_array_equal(to_numpy(out), tent_composition(x[:, 0], 8))
    rng = np.random.default_rng(19)
    X = rng.standard_normal((300, 3)) * 2
    r = np.linalg.norm(X, axis=1)
    X = X[(r < 0.85) | (r > 1.15)]
    ball = ball_indicator_network(3, 0.1, dtype=dtype, device=device)
    np.testing.assert_allclose(to_numpy(ball(xp.asarray(X, dtype=dtype))), ball_indicator(X), atol=1e-5)
    g = EldanShamirFunction(3, n_shells=3, ramp=0.3, rng=0)
    Xg = xp.asarray(X * 2, dtype=dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(to_numpy(g(Xg)), g(X * 2), atol=tol)
    np.testing.assert_allclose(to_numpy(eldan_shamir_density(Xg)), eldan_shamir_density(X * 2), rtol=tol, atol=tol)
    np.testing.assert_allclose(to_numpy(eldan_shamir_phi(Xg)), eldan_shamir_phi(X * 2), rtol=tol, atol=tol)
    inside = ball_indicator(xp.asarray(X, dtype=dtype))  # the rescaled comparison (frexp, ldexp) on the device
    assert isinstance(inside, xp.ndarray) and inside.dtype == dtype
    np.testing.assert_array_equal(to_numpy(inside), ball_indicator(X))
    Z = sample_daniely(50, 3, rng=1, dtype=dtype, device=device)
    np.testing.assert_allclose(to_numpy(daniely_function(Z)), daniely_function(to_numpy(Z).astype(np.float64)),
                               atol=1e-12 if dtype == np.float64 else 1e-3)


@pytest.mark.gpu
def test_piece_count_of_a_gpu_network_is_computed_on_the_host():
    assert count_linear_pieces(sawtooth(10, device="gpu")) == 2**10


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: sawtooth(-1), "k must be an integer >= 0"),
    (lambda: sawtooth(2.5), "k must be an integer"),
    (lambda: count_linear_pieces(sawtooth(2), (1.0, 0.0)), "interval must have lo < hi"),
    (lambda: count_linear_pieces(sawtooth(2), (0.0, np.nan)), r"interval\[1\] must be a finite"),
    (lambda: count_linear_pieces(np.ones(3)), "f must be a DeepReLU"),
    (lambda: count_linear_pieces(TwoLayer(np.ones(2), np.ones((2, 3)))), "give the line's direction"),
    (lambda: count_linear_pieces(TwoLayer(np.ones(2), np.ones((2, 3))), direction=np.ones(2)),
     "direction has shape"),
    (lambda: count_linear_pieces(sawtooth(2), tol=-1.0), "tol must be"),
    (lambda: DeepReLU([np.ones((2, 1)), np.ones((1, 3))], [np.zeros(2), np.zeros(1)]), r"weights\[1\] has shape"),
    (lambda: DeepReLU([np.ones((2, 1))], [np.zeros(3)]), r"biases\[0\] has shape"),
    (lambda: DeepReLU([np.full((2, 1), np.nan)], [np.zeros(2)]), r"weights\[0\] contains 2 NaN"),
    (lambda: DeepReLU([], []), "weights must be a non-empty list"),
    (lambda: sawtooth(2)(np.ones((3, 2))), "X has shape"),
    (lambda: sawtooth(2)(np.array([[np.nan]])), "X contains 1 NaN"),
    (lambda: DeepReLU.from_two_layer(TwoLayer(np.ones(2), np.ones((2, 2)), activation="tanh")), "relu"),
    (lambda: sawtooth_l1_lower_bound(3, 0), "pieces must be an integer >= 1"),
    (lambda: max_pieces_two_layer(-2), "m must be an integer >= 0"),
    (lambda: max_pieces([3, -1]), r"widths\[1\] must be an integer >= 0"),
    (lambda: max_pieces(3), "widths must be a sequence of hidden widths"),
    # the argument is f (from_two_layer's own message named its argument net)
    (lambda: count_linear_pieces(TwoLayer.init(3, 1, activation="tanh")), "^f must be a relu network.*'tanh'"),
    (lambda: l1_distance(sawtooth(1), TwoLayer.init(3, 1, activation="tanh")), "^g must be a relu network.*'tanh'"),
    (lambda: eldan_shamir_density(np.ones(3)), "X must be a 2-dimensional array"),
    (lambda: eldan_shamir_radial_cdf(np.array([-1.0]), 2), "r must be >= 0"),
    (lambda: eldan_shamir_radial_density(np.array([1.0]), 0), "d must be an integer >= 1"),
    (lambda: sample_eldan_shamir(-1, 2), "n must be an integer >= 0"),
    (lambda: EldanShamirFunction(3, ramp=0.7), "ramp must be a number in"),
    (lambda: EldanShamirFunction(3, n_shells=2, signs=[1.0, 0.5]), "signs must be -1 or"),
    (lambda: EldanShamirFunction(3, n_shells=2, signs=[1.0]), "signs has shape"),
    (lambda: EldanShamirFunction(3, alpha=-1.0), "alpha must be a positive"),
    (lambda: EldanShamirFunction(3).network(), "ramp=0"),
    (lambda: EldanShamirFunction(3)(np.ones((2, 4))), "X has shape"),
    (lambda: ball_indicator_network(3, delta=1.5), "delta must lie in"),
    (lambda: ball_indicator_network(0), "d must be an integer >= 1"),
    (lambda: ball_indicator(np.ones((2, 2)), radius=0.0), "radius must be a positive"),
    (lambda: radial_network([1.0, 0.5], [0.0, 1.0], 2, 1.0), "knots must be strictly increasing"),
    (lambda: radial_network([0.0, 1.0], [0.0], 2, 1.0), "knots and values must have the same shape"),
    (lambda: radial_network([0.0, 1.0], [0.0, 1.0], 2, 1.0, tolerance=np.nan), "tolerance must be"),
    # B = 1 < sqrt(4): at x = (1.9, 0) the network was 0.87 off psi(|x|^2) = 3.61 with error_bound 1e-3
    (lambda: radial_network([0.0, 4.0], [0.0, 4.0], 1, 1.0, tolerance=1e-3),
     r"radius_bound must be at least sqrt\(knots\[-1\]\) = 2, .* got 1"),
    (lambda: daniely_function(np.ones((2, 5))), "Z must have 2d columns"),
    (lambda: daniely_network(1), "d must be an integer >= 2"),
    (lambda: daniely_network(2, frequency=0.0), "frequency must be a positive finite number"),
    (lambda: daniely_function(np.ones((2, 4)), frequency=-1.0), "frequency must be a positive finite number"),
    (lambda: sample_daniely(3, 2, dtype=np.int32), "dtype must be float32 or float64"),
    (lambda: l1_distance(linear_pieces(sawtooth(2)), sawtooth(3), (0.0, 2.0)), "f is defined on"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_deep_relu_refuses_a_meta_that_is_not_a_dict():
    with pytest.raises(TypeError, match="meta must be a dict"):
        DeepReLU([np.ones((1, 1))], [np.zeros(1)], meta=["k", 3])


@pytest.mark.parametrize("breakpoints, slopes, intercepts, match", [
    ([0.0, 0.5, 1.0], [1.0], [0.0], r"shapes \(p \+ 1,\), \(p,\) or \(p, k\)"),   # one slope for two pieces
    ([0.0, 1.0], [1.0], [0.0, 1.0], r"shapes \(p \+ 1,\), \(p,\) or \(p, k\)"),
    ([0.0], [], [], "with p >= 1 pieces"),
    ([0.0, 0.7, 0.3, 1.0], [1.0, 2.0, 1.0], [0.0] * 3, r"breakpoints\[1\] = 0.7 > breakpoints\[2\] = 0.3"),
    ([0.5, 0.5], [1.0], [0.0], r"breakpoints\[0\] = breakpoints\[-1\]"),
    ([0.0, np.nan], [1.0], [0.0], "breakpoints contains 1 NaN"),
    ([0.0, 1.0], [np.inf], [0.0], "slopes contains 1 NaN or infinite"),
    ([0.0, 1.0], ["a"], [0.0], "slopes must hold real numbers"),
])
def test_piecewise_linear_refuses_inconsistent_pieces(breakpoints, slopes, intercepts, match):
    # l1_distance used to integrate such pieces into a number without complaint
    with pytest.raises(ValueError, match=match):
        PiecewiseLinear(breakpoints, slopes, intercepts)


@pytest.mark.parametrize("t, match", [("0.5", "t must be an array of real numbers"), (np.nan, "t contains 1 NaN")])
def test_piecewise_linear_refuses_t_that_is_not_finite_numbers(t, match):
    with pytest.raises(ValueError, match=match):
        linear_pieces(sawtooth(2))(t)


def test_piecewise_linear_extends_its_end_pieces_outside_the_interval():
    # f = |t - 1/2| on [0, 1] as two pieces; at -1 and 3 the end pieces continue: 3/2 and 5/2, as does
    # |t - 1/2| itself (dyadic values: exact)
    f = PiecewiseLinear([0.0, 0.5, 1.0], [-1.0, 1.0], [0.5, -0.5])
    t = np.array([-1.0, 0.0, 0.25, 1.0, 3.0])
    np.testing.assert_array_equal(f(t), np.abs(t - 0.5))


@pytest.mark.parametrize("tol", [1.0, 10.0])
def test_linear_pieces_refuses_tol_of_one_or_more(tol):
    # a relative tolerance >= 1 merged every breakpoint: the 4 pieces of sawtooth(2) counted as 1
    with pytest.raises(ValueError, match=r"tol must lie in \[0, 1\)"):
        count_linear_pieces(sawtooth(2), tol=tol)


def test_sawtooth_l1_lower_bound_refuses_k_whose_power_of_two_overflows():
    assert sawtooth_l1_lower_bound(1020, 1) == 0.125
    with pytest.raises(ValueError, match="k must be an integer >= 0 and <= 1020, got 1021"):
        sawtooth_l1_lower_bound(1021, 1)


@pytest.mark.parametrize("call, match", [
    (lambda: radial_network([0.0, 1.0], [0.0, 1.0], 2, 1.0, tolerance=1e-300), r"raise tolerance \(got 1e-300\)"),
    (lambda: EldanShamirFunction(3, ramp=0.25, rng=0).network(1e-300), r"raise tolerance \(got 1e-300\)"),
    (lambda: ball_indicator_network(3, delta=1e-300), r"raise delta \(got 1e-300\)"),
    (lambda: daniely_network(2, tolerance=1e-300), r"raise tolerance \(got 1e-300\)"),
])
def test_three_layer_constructions_refuse_a_tolerance_too_small_for_memory(call, match):
    # these used to fail inside numpy ("Maximum allowed size exceeded") or run out of memory
    with pytest.raises(ValueError, match=r"the network would have hidden widths .* weights \(> 1e\+09\): " + match):
        call()


def test_sawtooth_l1_lower_bound_is_one_eighth_minus_pieces_over_2_to_the_k_plus_2_for_large_k():
    # (2^k - 2 s - 2) / 2^{k+3} in exact rational arithmetic (fractions), correctly rounded once; here the
    # numerator is 2 while 2^k alone needs 61 bits.
    from fractions import Fraction

    k, s = 60, 2**59 - 2
    assert sawtooth_l1_lower_bound(k, s) == float(Fraction(2**k - 2 * s - 2, 2 ** (k + 3)))
    assert sawtooth_l1_lower_bound(10, 1) == float(Fraction(2**10 - 4, 2**13))


def test_breakpoints_closer_than_tol_times_the_interval_are_merged_in_every_layer():
    # Layer 1: relu(t) and relu(t - 0.1) (a breakpoint at 0.1, then unused); layer 2: relu(t - 0.5) and
    # relu(t - 0.5 - delta), summed: slopes 0, 1, 2 on [0, 1], three pieces exactly (rational arithmetic).
    # With tol = 1e-3 the breakpoints 0.5 and 0.5 + delta (delta = 5e-4 < tol (hi - lo), but more than
    # tol times the first piece's 0.1) are one: two pieces, the second of slope 2.
    delta = 5e-4
    net = DeepReLU([np.array([[1.0], [1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 1.0]])],
                   [np.array([0.0, -0.1]), np.array([-0.5, -0.5 - delta]), np.zeros(1)])
    assert count_linear_pieces(net, exact=True) == 3
    merged = linear_pieces(net, tol=1e-3)
    assert len(merged) == 2 and merged.breakpoints[1] == pytest.approx(0.5, abs=delta)
    assert merged.slopes.tolist() == [0.0, 2.0]


def test_radial_network_of_a_constant_profile_is_that_constant_with_one_idle_second_layer_neuron():
    # psi = 2.5 has no kinks: the network keeps two hidden layers (one idle neuron of weight 0 in the second)
    # and computes 2.5 exactly, even where the squares leave [-B, B].
    net = radial_network([0.0, 1.0], [2.5, 2.5], 3, 1.0)
    assert net.depth == 3 and net.widths[1] == 1
    X = np.random.default_rng(24).uniform(-2.0, 2.0, (50, 3))
    np.testing.assert_array_equal(net(X), np.full(50, 2.5))


def test_radial_network_in_one_dimension_is_psi_of_x_squared_within_its_bound():
    # d = 1: psi(s) = clip(s - 1, 0, 3) of s = x^2, against the closed form, within Lip(psi) h^2 / 4
    # (the stated bound, <= tolerance) on |x| <= B = 2 and beyond.
    net = radial_network([1.0, 4.0], [0.0, 3.0], 1, 2.0, tolerance=1e-3)
    x = np.linspace(-3.0, 3.0, 601)[:, None]
    exact = np.clip(x[:, 0] ** 2 - 1, 0, 3)
    bound = net.meta["error_bound"]
    assert bound <= 1e-3 and np.abs(net(x) - exact).max() <= bound + 1e-12


def test_radial_network_refuses_a_tolerance_whose_node_spacing_underflows_to_zero():
    # h = sqrt(4 tolerance / (Lip d)) = sqrt(4e-300 / 1e30) rounds to 0: too many weights, not a division by 0
    with pytest.raises(ValueError, match=r"the network would have hidden widths \(inf, 2\).*raise tolerance"):
        radial_network([0.0, 1.0], [0.0, 1e30], 1, 1.0, tolerance=1e-300)


def test_eldan_shamir_radial_density_in_one_dimension_is_twice_the_squared_sinc_including_at_zero():
    # d = 1: the unit-volume ball is [-1/2, 1/2], phi(x) = sin(pi x) / (pi x), and |x| has the density
    # 2 sin(pi r)^2 / (pi r)^2, whose value at r = 0 is the limit 2.
    r = np.array([0.0, 1e-3, 0.3, 1.0, 2.5])
    safe = np.where(r > 0, r, 1.0)
    expected = np.where(r > 0, 2 * np.sin(np.pi * safe) ** 2 / (np.pi * safe) ** 2, 2.0)
    np.testing.assert_allclose(eldan_shamir_radial_density(r, 1), expected, rtol=1e-13, atol=1e-16)


def test_eldan_shamir_tail_draws_follow_the_squared_bessel_law_beyond_the_table():
    # Beyond the sampling table (z = pi |x| > z_max = 2 d + 200 in d = 1) the radius is drawn by rejection;
    # there the density is proportional to J_{1/2}(z)^2 / z, i.e. to sin(z)^2 / z^2, so E[cos 2z] = -1/2 (the mean of
    # cos 2z sin^2 z over sin^2 z), where a proposal accepted too often (an envelope below the target)
    # moves it toward 0. Monte Carlo over the ~400 tail draws of 250000, at 4 standard errors.
    X = sample_eldan_shamir(250_000, 1, rng=25)
    z = np.pi * np.abs(X[:, 0])
    c = np.cos(2 * z[z > 202.0])
    assert c.size > 200
    assert abs(c.mean() + 0.5) < 4 * c.std() / math.sqrt(c.size)


def test_eldan_shamir_function_with_one_shell_is_its_sign_on_the_annulus():
    # N = 1: g(x) = epsilon 1{alpha sqrt(d) <= |x| < 2 alpha sqrt(d)}, here on [2, 4) in d = 4.
    g = EldanShamirFunction(4, n_shells=1, signs=[-1.0])
    X = np.array([[1.9, 0, 0, 0], [2.0, 0, 0, 0], [0, 3.9, 0, 0], [4.0, 0, 0, 0]])
    assert g.edges.tolist() == [2.0, 4.0] and g(X).tolist() == [0.0, -1.0, -1.0, 0.0]


def test_eldan_shamir_function_takes_its_number_of_shells_from_the_signs():
    # N = len(signs) when n_shells is not given: two shells [2, 3) and [3, 4) in d = 4 (alpha = 1).
    g = EldanShamirFunction(4, signs=[1.0, -1.0])
    X = np.array([[2.5, 0, 0, 0], [0, 3.5, 0, 0], [4.5, 0, 0, 0]])
    assert g.n_shells == 2 and g.edges.tolist() == [2.0, 3.0, 4.0] and g(X).tolist() == [1.0, -1.0, 0.0]


def test_eldan_shamir_random_signs_are_fair_coins():
    # epsilon_i i.i.d. uniform on {-1, +1}: over 400 shells the number of +1 is Binomial(400, 1/2), within
    # 5 standard deviations (10) of 200, and both signs occur.
    signs = EldanShamirFunction(3, n_shells=400, rng=26).signs
    assert set(signs.tolist()) == {-1.0, 1.0} and abs((signs > 0).sum() - 200) <= 5 * 10


def test_sample_daniely_of_no_pairs_is_an_empty_array_of_2d_columns():
    assert sample_daniely(0, 3, rng=0).shape == (0, 6)


def test_deep_relu_computes_float16_weights_in_float32_and_refuses_inputs_beyond_its_float32_range():
    # float16 weights were kept (the docs promise float32 or float64): now promoted, as every input of the
    # library; a float64 input of 1e39 in a float32 network was cast to inf and gave NaN
    W, b = np.ones((2, 1)), np.zeros(2)
    assert DeepReLU([W.astype(np.float16)], [b.astype(np.float16)]).dtype == np.float32
    if np.dtype(np.longdouble) != np.dtype(np.float64):
        with pytest.raises(ValueError, match="the common dtype of weights and biases must be float32 or float64"):
            DeepReLU([W.astype(np.longdouble)], [b.astype(np.longdouble)])
    net = DeepReLU([W.astype(np.float32)], [b.astype(np.float32)])
    with pytest.raises(ValueError, match="X has values up to 1e\\+39"):
        net(np.array([[1e39]]))


def test_deep_relu_astype_refuses_parameters_beyond_float32_and_copies_meta():
    # astype cast a weight of 1e39 to inf silently; meta is copied, not shared
    net = DeepReLU([np.array([[1e39], [1.0]])], [np.zeros(2)], meta={"k": 1})
    with pytest.raises(ValueError, match=r"weights\[0\] has values up to 1e\+39"):
        net.astype(np.float32)
    small = DeepReLU([np.array([[0.1], [1.0]])], [np.array([0.0, 1e39])], meta={"k": 1})
    with pytest.raises(ValueError, match=r"biases\[0\] has values up to 1e\+39"):
        small.astype(np.float32)
    ok = DeepReLU([np.array([[0.1], [1.0]])], [np.zeros(2)], meta={"k": 1})
    cast = ok.astype(np.float32)
    assert cast.dtype == np.float32 and cast.meta == {"k": 1} and cast.meta is not ok.meta


def test_l1_distance_names_the_argument_that_is_not_a_network():
    # g = None was reported as "f must be a DeepReLU ...": the message named the other argument
    with pytest.raises(ValueError,
                       match=r"^g must be a DeepReLU, a relu TwoLayer network or a PiecewiseLinear, got NoneType"):
        l1_distance(sawtooth(2), None)
    with pytest.raises(ValueError, match=r"^f must be a DeepReLU"):
        l1_distance(np.ones(3), sawtooth(2))


def test_pieces_of_a_network_with_several_outputs_break_where_any_output_bends():
    # f(t) = (relu(t - 1/2), relu(t)) on [0, 1]: the map t -> f(t) in R^2 is affine on [0, 1/2] and on [1/2, 1]
    # only (the first output bends at 1/2, the second never does); maximal pieces merge a breakpoint only where
    # no output changes slope. Closed form: slopes (0, 1) then (1, 1), intercepts (0, 0) then (-1/2, 0).
    net = DeepReLU([np.array([[1.0], [1.0]]), np.eye(2)], [np.array([-0.5, 0.0]), np.zeros(2)])
    for exact in (False, True):
        pl = linear_pieces(net, exact=exact)
        np.testing.assert_array_equal(np.asarray(pl.breakpoints, dtype=float), [0.0, 0.5, 1.0])
        np.testing.assert_array_equal(np.asarray(pl.slopes, dtype=float), [[0.0, 1.0], [1.0, 1.0]])
        np.testing.assert_array_equal(np.asarray(pl.intercepts, dtype=float), [[0.0, 0.0], [-0.5, 0.0]])


def test_an_affine_network_is_one_piece_with_its_bias_as_intercept():
    # L = 1 (no hidden layer): f(x) = <w, x> + b, along x(t) = x0 + t v the single piece t <w, v> + <w, x0> + b.
    # Dyadic numbers throughout: exact in floating point.
    w, b, x0, v = np.array([[2.0, -1.0]]), np.array([3.0]), np.array([0.5, 0.25]), np.array([1.0, 4.0])
    pl = linear_pieces(DeepReLU([w], [b]), (-1.0, 2.0), origin=x0, direction=v)
    np.testing.assert_array_equal(pl.breakpoints, [-1.0, 2.0])
    assert float(pl.slopes[0]) == float(w[0] @ v) and float(pl.intercepts[0]) == float(w[0] @ x0 + b[0])


def test_l1_distance_is_zero_where_the_functions_coincide():
    # |f - g| = 0 on a piece where f = g (du = dv = 0 at both ends): that piece adds 0, not 0 / 0. The distance
    # of a network to itself is 0, and int_0^1 |relu(t - 1/2) - 0| dt = 1/8 exactly (dyadic).
    f = PiecewiseLinear([0.0, 0.5, 1.0], [0.0, 1.0], [0.0, -0.5])
    zero = PiecewiseLinear([0.0, 1.0], [0.0], [0.0])
    assert l1_distance(f, zero) == 0.125
    assert l1_distance(sawtooth(3), sawtooth(3)) == 0.0


# ---------------------------------------------------------------- rank-one second layers
def dense_twin(net):
    """The same network with every rank-one layer u v^T materialised by numpy (np.outer), stored dense."""
    Ws = [np.outer(W.u, W.v) if isinstance(W, RankOneWeights) else W for W in net.stored_weights]
    return DeepReLU(Ws, net.biases, net.meta)


def gamma(n, dtype):
    """gamma_n = n eps / (1 - n eps): a sum of n terms computed in any order errs by at most gamma_{n-1} sum |terms|
    (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.4)."""
    e = n * np.finfo(dtype).eps
    return e / (1 - e)


THREE_LAYER = {
    "daniely": lambda dtype: (daniely_network(3, 0.2, dtype=dtype), sample_daniely(300, 3, rng=5, dtype=dtype)),
    "ball": lambda dtype: (ball_indicator_network(4, delta=0.05, dtype=dtype),
                           np.random.default_rng(6).uniform(-1.5, 1.5, (300, 4)).astype(dtype)),
    "radial": lambda dtype: (radial_network(np.linspace(0.0, 2.0, 9), np.sin(3 * np.linspace(0.0, 2.0, 9)), 3, 1.5,
                                            tolerance=1e-3, dtype=dtype),
                             np.random.default_rng(7).uniform(-2.0, 2.0, (300, 3)).astype(dtype)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(THREE_LAYER))
def test_three_layer_network_with_a_rank_one_second_layer_equals_its_dense_twin_to_rounding(name, dtype):
    # The constructions store W_2 = 1 (-v)^T by its factors; the twin holds np.outer(u, v) dense. Both compute the
    # same first layer h_1 (same code, same W_1) and the same output layer; they differ in the order in which
    # q_hat = sum_j (-v_j) h_1j is summed (a dot product against a matrix product): each errs by at most
    # gamma_{n_1} (sum_j |v_j h_1j|), and adding kappa_k one eps more; the output sum over n_2 terms then by at
    # most gamma_{n_2 + 1} sum_k |beta_k r_k| + |beta| . |delta q|. The bound is the sum of both networks' bounds.
    net, X = THREE_LAYER[name](dtype)
    W2 = net.stored_weights[1]
    assert isinstance(W2, RankOneWeights) and W2.shape == (net.widths[1], net.widths[0])
    twin = dense_twin(net)
    assert twin.stored_weights[1].shape == W2.shape and twin.dtype == net.dtype == dtype
    X64 = X.astype(np.float64)
    W1, b1 = (np.asarray(a, dtype=np.float64) for a in (net.stored_weights[0], net.biases[0]))
    v, kappa = W2.v.astype(np.float64), net.biases[1].astype(np.float64)
    beta = net.stored_weights[2][0].astype(np.float64)
    h1 = np.maximum(X64 @ W1.T + b1, 0)  # (n, n_1)
    q = h1 @ v  # (n,)
    r = np.maximum(q[:, None] + kappa, 0)  # (n, n_2)
    n1, n2 = net.widths
    dq = gamma(n1 + 1, dtype) * (np.abs(h1) @ np.abs(v) + np.abs(kappa).max())  # (n,)
    bound = 2 * (np.abs(beta).sum() * dq + gamma(n2 + 1, dtype) * (np.abs(r) @ np.abs(beta)))
    diff = np.abs(net(X).astype(np.float64) - twin(X).astype(np.float64))
    assert (diff <= bound).all(), (diff.max(), bound.min())
    assert np.abs(net(X)).max() > 0.1  # not a vacuous comparison of zeros


def test_rank_one_weights_act_as_the_outer_product_of_their_factors():
    # W = u v^T against numpy's np.outer: W @ x, W @ X, H @ W, W.T, dense(), and the stored size n_out + n_in.
    rng = np.random.default_rng(8)
    u, v = rng.standard_normal(4), rng.standard_normal(3)
    W, M = RankOneWeights(u, v), np.outer(u, v)
    x, X, H = rng.standard_normal(3), rng.standard_normal((3, 2)), rng.standard_normal((5, 4))
    tol = dict(rtol=8 * EPS, atol=8 * EPS * np.abs(u).max() * np.abs(v).sum() * 4)  # dot products of <= 4 terms
    np.testing.assert_allclose(W @ x, M @ x, **tol)
    np.testing.assert_allclose(W @ X, M @ X, **tol)
    np.testing.assert_allclose(H @ W, H @ M, **tol)
    np.testing.assert_allclose(H[:, :3] @ W.T.T.T, H[:, :3] @ M.T, **tol)
    np.testing.assert_array_equal(W.dense(), M)
    assert W.shape == (4, 3) and W.T.shape == (3, 4) and W.size == 7
    with pytest.raises(ValueError, match=r"W @ X needs X of shape \(3,\) or \(3, k\), got \(4,\)"):
        W @ np.ones(4)


def test_weights_of_a_rank_one_layer_read_as_the_dense_array_and_stored_entries_count_the_factors():
    # net.weights[l] keeps its meaning (W_l as an array): the rank-one layer is materialised when read.
    net = daniely_network(2, 0.2)
    W2 = net.stored_weights[1]
    n1, n2 = net.widths
    np.testing.assert_array_equal(net.weights[1], np.outer(W2.u, W2.v))
    assert net.weights[0] is net.stored_weights[0] and len(net.weights) == 3
    # entries: W_1 (n_1, 2d), b_1, u and v, b_2, W_3 (1, n_2), b_3
    assert net.stored_entries == n1 * 4 + n1 + (n2 + n1) + n2 + n2 + 1


def test_a_network_rebuilt_from_another_networks_weights_keeps_its_rank_one_factors():
    # DeepReLU(net.weights, net.biases) (how a network was copied while weights was a list) builds the same network,
    # with W_2 still stored as u v^T: the same stored entries, and the same numbers on the same inputs (same code).
    net = daniely_network(2, 0.2)
    copy = DeepReLU(net.weights, net.biases, net.meta)
    assert isinstance(copy.stored_weights[1], RankOneWeights) and copy.stored_entries == net.stored_entries
    X = sample_daniely(50, 2, rng=1)
    np.testing.assert_array_equal(copy(X), net(X))


def test_daniely_network_in_d_10_stores_o_of_n1_plus_n2_entries_and_builds_in_well_under_a_second():
    # Its W_2 (14051 x 22440, 2.5 GB in float64 when stored dense, 21 s to build) is rank one. Counted here from the
    # widths: n_1 (2d + 2) + 3 n_2 + 1 entries, 0.54 million (4.3 MB), against n_1 n_2 = 3.2e8 for a dense W_2.
    # Measured 0.03 s on the 2-core development machine: 1 s leaves a 30-fold margin for load.
    import time

    start = time.perf_counter()
    net = daniely_network(10)
    elapsed = time.perf_counter() - start
    n1, n2 = net.widths
    assert net.stored_entries == n1 * (2 * 10 + 2) + 3 * n2 + 1
    assert net.stored_entries <= (2 * 10 + 5) * (n1 + n2) and net.stored_entries < n1 * n2 / 500
    assert n1 > 2e4 and n2 > 1.4e4
    assert elapsed < 1.0


def test_three_layer_memory_cap_counts_stored_entries_not_a_dense_second_layer():
    # daniely_network(13): n_1 n_2 = 49296 x 30868 = 1.5e9 entries would exceed the 1e9 cap (it was refused); the
    # rank-one W_2 stores n_1 + n_2, so the network holds 1.4 million entries and is built.
    net = daniely_network(13)
    n1, n2 = net.widths
    assert n1 * n2 > 1e9 and net.stored_entries < 2e6


@pytest.mark.parametrize("exact", [False, True])
def test_linear_pieces_of_a_rank_one_network_equal_those_of_its_dense_twin(exact):
    # On a line the rank-one layer restricted is still u v^T: the pieces are computed from (A v) u instead of
    # A (u v^T)^T. In rational arithmetic both are the same numbers (identical pieces); in floats they differ in
    # the order of summation only, far below the merging tolerance 1e-12: the same breakpoints to 1e-12 (hi - lo).
    net = radial_network(np.linspace(0.0, 2.0, 5), np.array([0.0, 1.0, -1.0, 0.5, 0.0]), 2, 1.5, tolerance=0.05)
    twin = dense_twin(net)
    line = dict(origin=np.array([-1.6, 0.3]), direction=np.array([1.0, -0.1]))
    got = linear_pieces(net, (0.0, 3.2), exact=exact, **line)
    want = linear_pieces(twin, (0.0, 3.2), exact=exact, **line)
    assert len(got) == len(want) > 10
    assert count_linear_pieces(net, (0.0, 3.2), exact=exact, **line) == len(want)
    if exact:
        np.testing.assert_array_equal(got.breakpoints, want.breakpoints)
        np.testing.assert_array_equal(got.slopes, want.slopes)
        np.testing.assert_array_equal(got.intercepts, want.intercepts)
    else:
        np.testing.assert_allclose(got.breakpoints, want.breakpoints, rtol=0, atol=1e-12 * 3.2)
        scale = np.abs(want.slopes).max()
        np.testing.assert_allclose(got.slopes, want.slopes, rtol=0, atol=1e-12 * scale)


def test_rank_one_network_casts_moves_and_refuses_factors_beyond_float32():
    # astype and to_device keep the factors (no dense W_2 appears); a factor beyond float32 is named.
    net = daniely_network(2, 0.2)
    cast = net.astype(np.float32).to_device("cpu")
    W2 = cast.stored_weights[1]
    assert isinstance(W2, RankOneWeights) and W2.dtype == np.float32 and cast.dtype == np.float32
    np.testing.assert_array_equal(W2.v, net.stored_weights[1].v.astype(np.float32))
    big = DeepReLU([np.ones((2, 1)), RankOneWeights(np.ones(1), np.array([1e39, 1.0]))], [np.zeros(2), np.zeros(1)])
    with pytest.raises(ValueError, match=r"weights\[1\]\.v has values up to 1e\+39"):
        big.astype(np.float32)
