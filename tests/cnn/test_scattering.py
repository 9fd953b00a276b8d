"""The 2-D scattering transform: agreement with Kymatio, invariance, energy, derivatives, bad input.

Independent references: Kymatio 0.3.0's Scattering2D (numpy frontend), closed forms (constant
images, Young's inequality for the translation error, the Littlewood-Paley bound, the path count),
exact circular shifts, and central differences for the derivatives.
"""

import itertools

import numpy as np
import pytest
from gradcheck import check_central_differences, check_jvp, taylor_slope

from shallow.cnn import Flatten, Linear, Sequential
from shallow.cnn.robustness import input_jacobian, local_lipschitz
from shallow.cnn.scattering import (
    Scattering2D,
    ScatteringClassifier,
    ScatteringLayer,
    _alias_gram,
    check_scattering_shape,
    n_coefficients,
)
from shallow.cnn.wavelets import _reflect, littlewood_paley

#: Kymatio 0.3.0 normalises its Gaussians by 2 * 3.1415 sigma^2 / s instead of 2 pi sigma^2 / s.
KYMATIO_FACTOR = np.pi / 3.1415


def orders(S):
    return np.array([len(p) // 2 for p in S.paths])


def smooth_images(rng, n, shape):
    """Random images with most energy at low frequencies (a Gaussian blur of white noise, periodic)."""
    x = rng.standard_normal((n, *shape))
    M, N = shape
    w1, w2 = np.meshgrid(2 * np.pi * np.fft.fftfreq(M), 2 * np.pi * np.fft.fftfreq(N), indexing="ij")
    return np.fft.ifft2(np.fft.fft2(x) * np.exp(-2.0 * (w1**2 + w2**2))).real


def kymatio_scattering(J, shape, L, max_order=2):
    kymatio = pytest.importorskip("kymatio", reason="Kymatio is the reference implementation")
    # kymatio 0.3.0: `from kymatio.numpy import Scattering2D` fails with scipy >= 1.17; this works.
    return kymatio.Scattering2D(J, shape, L=L, max_order=max_order, frontend="numpy")


def full_resolution_scattering(x, J, L):
    """The module docstring's formulas with every convolution circular at full resolution, sampled at the end."""
    from shallow.cnn.wavelets import filter_bank

    bank = filter_bank(x.shape[-2:], J, L)
    s = 2**J

    def conv(u, h):
        return np.fft.ifft2(np.fft.fft2(u) * h)

    def low(u):
        return conv(u, bank.phi).real[..., ::s, ::s]

    U1 = {(j, l): np.abs(conv(x, bank.psi[j, l])) for j in range(J) for l in range(L)}
    out = [low(x)] + [low(u) for u in U1.values()]
    for (j1, _), u in U1.items():
        out += [low(np.abs(conv(u, bank.psi[j2, l2]))) for j2 in range(j1 + 1, J) for l2 in range(L)]
    return np.stack(out, -3)


# ----------------------------------------------------------------------------- the formulas

def test_scattering_at_J1_is_the_full_resolution_formula():
    # J = 1: no modulus is taken on a subsampled grid, so Kymatio's computation is the formula itself (rounding:
    # FFTs of 16x16 white noise, 1e-13 of the largest coefficient)
    x = np.random.default_rng(3).standard_normal((3, 16, 16))
    S = Scattering2D(1, (16, 16), L=8, padding="periodic")
    b = full_resolution_scattering(x, 1, 8)
    np.testing.assert_allclose(S(x), b, rtol=0, atol=1e-13 * np.abs(b).max())


@pytest.mark.parametrize("J", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subsampled_scattering_approximates_the_full_resolution_formula(J, seed):
    # the module docstring's statement for white noise, the images with most energy at high frequencies: order 0
    # exact (rounding), the whole transform within 1% in norm, orders 1 and 2 within 5% and 8% of their largest
    # coefficient (measured over 440 draws: at most 0.7%, 4.4% and 5.8%)
    shape = (32, 32)
    x = np.random.default_rng(seed).standard_normal((4, *shape))
    S = Scattering2D(J, shape, L=8, padding="periodic")
    a, b = S(x), full_resolution_scattering(x, J, 8)
    o = orders(S)
    np.testing.assert_allclose(a[:, o == 0], b[:, o == 0], rtol=0, atol=1e-13 * np.abs(b[:, o == 0]).max())
    assert np.linalg.norm(a - b) <= 0.01 * np.linalg.norm(b)
    for k, bound in ((1, 0.05), (2, 0.08)):
        assert np.abs(a - b)[:, o == k].max() <= bound * np.abs(b[:, o == k]).max()


# ----------------------------------------------------------------------------- Kymatio

@pytest.mark.parametrize("J, shape, L", [
    (2, (16, 16), 4), (2, (32, 32), 8), (3, (32, 32), 8), (3, (16, 16), 4),
    (2, (16, 32), 8), (3, (24, 16), 4), (2, (8, 8), 8), (2, (16, 16), 1),
])
def test_scattering_matches_kymatio(J, shape, L):
    # Same J, L, order 2, image size: the same coefficients after Kymatio's normalisation factor
    # (pi / 3.1415)^(m + 1) at order m (module notes), to 1e-5 of each order's largest coefficient
    # (measured 2e-7 to 4e-7: Kymatio's filters are rounded to complex64).
    ref_op = kymatio_scattering(J, shape, L)
    x = np.random.default_rng(J * 100 + L).standard_normal((3, *shape))
    ref = ref_op(x)
    S = Scattering2D(J, shape, L)
    ours = S(x)
    assert ours.shape == ref.shape
    m = orders(S)
    converted = ref / KYMATIO_FACTOR ** (m + 1)[:, None, None]
    for order in range(3):
        block = m == order
        err = np.abs(ours[:, block] - converted[:, block]).max()
        assert err <= 1e-5 * np.abs(converted[:, block]).max(), f"order {order}: error {err:.2e}"


def test_scattering_order_one_matches_kymatio():
    ref_op = kymatio_scattering(2, (16, 16), 6, max_order=1)
    x = np.random.default_rng(3).standard_normal((2, 16, 16))
    S = Scattering2D(2, (16, 16), 6, max_order=1)
    converted = ref_op(x) / KYMATIO_FACTOR ** (orders(S) + 1)[:, None, None]
    assert np.abs(S(x) - converted).max() <= 1e-5 * np.abs(converted).max()


def test_kymatio_normalisation_differs_by_pi_over_3_1415_per_filter():
    # The one convention difference, measured: the ratio of Kymatio's coefficients to ours is
    # (pi / 3.1415)^(m + 1) = 1 + 2.95e-5 (m + 1) for each path of order m, on a positive image
    # where no coefficient is near 0. The bound is float32 rounding: Kymatio's filters are
    # complex64, and a second-order coefficient (down to 0.004 of the largest) carries the
    # rounding of both its filters and of its parent, relative to the larger parent: measured
    # up to 15 eps32 (1.75e-6) of the ratio (magnitude 1) across 9 seeds. 32 eps32 = 3.8e-6 is
    # 8 times below the 2.95e-5 step between orders, so a wrong exponent still fails.
    ref_op = kymatio_scattering(2, (16, 16), 4)
    x = 1.0 + np.random.default_rng(5).random((1, 16, 16))
    S = Scattering2D(2, (16, 16), 4)
    ratio = ref_op(x)[0, :, 1, 1] / S(x)[0, :, 1, 1]
    assert np.abs(ratio - KYMATIO_FACTOR ** (orders(S) + 1)).max() < 32 * np.finfo(np.float32).eps
    assert np.all(ratio > 1 + 2.9e-5)


# ----------------------------------------------------------------------------- structure

@pytest.mark.parametrize("J, L, max_order", [(1, 8, 2), (2, 4, 2), (3, 8, 2), (4, 3, 1), (3, 2, 0), (2, 1, 2)])
def test_number_of_coefficients_counts_the_paths(J, L, max_order):
    # K = 1 + J L + L^2 J (J - 1) / 2: count the paths (j1, l1) and (j1, l1, j2, l2) with j2 > j1.
    count = 1
    if max_order >= 1:
        count += len(list(itertools.product(range(J), range(L))))
    if max_order >= 2:
        count += sum(1 for j1, _, j2, _ in itertools.product(range(J), range(L), range(J), range(L)) if j2 > j1)
    assert n_coefficients(J, L, max_order) == count
    S = Scattering2D(J, (2**J, 2**J * 2), L, max_order)
    assert S.n_coefficients == count == len(S.paths)
    assert S(np.zeros((2, 2**J, 2**J * 2))).shape == (2, count, 1, 2)


def test_constant_image_has_only_the_zeroth_order():
    # phi_hat(0) = 1 (unit-integral low-pass; its aliases are below 1e-11 for J >= 2) and the
    # Morlet wavelets have zero mean: S_0 of the constant c is c, all higher orders 0 (to 1e-12).
    for padding in ("reflect", "periodic"):
        S = Scattering2D(2, (16, 24), 6, padding=padding)
        out = S(np.full((2, 16, 24), 3.5))
        assert np.abs(out[:, 0] - 3.5).max() < 1e-10
        assert np.abs(out[:, 1:]).max() < 1e-12


def test_batch_dimensions_are_kept():
    S = Scattering2D(2, (8, 8), 4)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    out = S(x)
    assert out.shape == (2, 3, 25, 2, 2)
    assert np.abs(out[1, 2] - S(x[1, 2])).max() < 1e-14
    assert S(x[0, 0]).shape == (25, 2, 2)


def test_features_are_channels_last_coefficients_of_each_channel():
    # features(X)[n, i, j, c K + k] = S(X[n, :, :, c])[k, i, j].
    S = Scattering2D(1, (8, 16), 4)
    X = np.random.default_rng(1).standard_normal((3, 8, 16, 2))
    F = S.features(X)
    K = S.n_coefficients
    assert F.shape == (3, 4, 8, 2 * K)
    for c in range(2):
        assert np.abs(F[..., c * K:(c + 1) * K] - S(X[..., c]).transpose(0, 2, 3, 1)).max() < 1e-14


def test_blocks_give_the_same_coefficients_as_one_batch():
    # __call__ splits large batches into blocks (bounded memory); each image is independent.
    S = Scattering2D(2, (8, 8), 8)
    x = np.random.default_rng(2).standard_normal((S._chunk() + 3, 8, 8))
    assert np.abs(S(x) - S._run(x)[0]).max() < 1e-14


def test_derivatives_in_blocks_equal_those_of_one_batch(monkeypatch):
    # jvp, vjp and the layer's forward, backward and jvp run in blocks of _chunk() images too (on the whole batch
    # the intermediates outgrew the processor's caches); each image is independent, so blocks of 2 give the numbers
    # of one block of all 5 images, the reference (to rounding: the same operations on other batch sizes)
    S = Scattering2D(2, (8, 8), 4)
    rng = np.random.default_rng(9)
    x, tx = rng.standard_normal((5, 8, 8)), rng.standard_normal((5, 8, 8))
    G = rng.standard_normal((5, S.n_coefficients, 2, 2))
    X, TX = x[..., None], tx[..., None]
    dy = np.moveaxis(G, 1, -1)
    layer = ScatteringLayer(scattering=S)

    def everything():
        out = layer.forward(X)
        return [*S.jvp(x, tx), S.vjp(x, G), out, layer.backward(dy), *layer.jvp(X, TX)]

    whole = everything()
    monkeypatch.setattr(S, "_chunk", lambda: 2)
    for blocked, one in zip(everything(), whole, strict=True):
        np.testing.assert_allclose(blocked, one, rtol=0, atol=1e-13 * np.abs(one).max())


def test_float32_matches_float64():
    # float32 in, float32 out; the coefficients agree with float64 to 1e-5 of their scale
    # (float32 rounding 6e-8 times a few FFT stages and moduli).
    S = Scattering2D(2, (16, 16), 8)
    x = np.random.default_rng(3).standard_normal((2, 16, 16))
    out32, out64 = S(x.astype(np.float32)), S(x)
    assert out32.dtype == np.float32
    assert np.abs(out32 - out64).max() < 1e-5 * np.abs(out64).max()


def test_float16_images_are_scattered_in_float32():
    # float16 images are computed in float32 (as numpy's FFTs do), not with filters rounded to float16:
    # the coefficients agree with the float64 scattering of the same values to 1e-5 of their scale
    S = Scattering2D(2, (16, 16), 8)
    x = np.random.default_rng(4).standard_normal((2, 16, 16)).astype(np.float16)
    out16, out64 = S(x), S(x.astype(np.float64))
    assert out16.dtype == np.float32
    assert np.abs(out16 - out64).max() < 1e-5 * np.abs(out64).max()


@pytest.mark.parametrize("padding", ["reflect", "periodic"])
def test_wavelet_paths_of_float32_images_keep_their_precision_under_a_large_mean(padding):
    # psi_hat(0) = 0: orders 1 and 2 do not see the mean of an image, so a float32 image of mean 1e4
    # and standard deviation 1 has them as accurate, relative to their scale, as a centred one: within
    # 1e-5 of each order's largest coefficient of the float64 scattering of the same float32 values
    # (float32 rounding 6e-8 times a few FFT stages and moduli; measured 3e-7). Rounded against the
    # mean instead, the FFT's error is eps32 * 1e4 relative: 3.5e-4 was measured.
    S = Scattering2D(3, (32, 32), 8, padding=padding)
    x = (1e4 + np.random.default_rng(6).standard_normal((2, 32, 32))).astype(np.float32)
    out32, out64 = S(x), S(x.astype(np.float64))
    m = orders(S)
    for order in (1, 2):
        err = np.abs(out32[:, m == order] - out64[:, m == order]).max()
        assert err < 1e-5 * np.abs(out64[:, m == order]).max(), f"order {order}: error {err:.2e}"
    assert np.abs(out32[:, 0] - out64[:, 0]).max() < 1e-5 * np.abs(out64[:, 0]).max()


@pytest.mark.parametrize("dtype, c", [(np.float64, 1e-300), (np.float64, 1e306), (np.float32, 1e-37),
                                      (np.float32, 1e37)])
def test_scattering_is_homogeneous_at_the_ends_of_the_float_range(dtype, c):
    # S(c x) = c S(x) for c > 0 (the modulus and the filters are 1-homogeneous) wherever c x and c S(x)
    # are floats, against c times the float64 scattering of x: at c = 1e306 (float32: 1e37) the DFT's
    # sums over the padded grid's 48^2 pixels leave the floats
    S = Scattering2D(2, (16, 16), 4)
    x = np.random.default_rng(5).standard_normal((2, 16, 16))
    out = S((c * x).astype(dtype))
    assert out.dtype == dtype and np.all(np.isfinite(out))
    expected = c * S(x)
    # float64: rounding of a few FFT stages, 1e-12 of the scale; float32: 1e-5 (as float32 against float64)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.abs(out - expected).max() <= tol * np.abs(expected).max()


# ----------------------------------------------------------------------------- invariance and energy

def test_translation_by_multiples_of_2J_shifts_the_coefficients_exactly():
    # With periodic boundaries every step commutes with circular shifts, and subsampling by 2^J
    # turns a shift by 2^J a into a shift of the output by a: S(T_{2^J a} x) = T_a S(x) to rounding.
    J = 2
    S = Scattering2D(J, (16, 24), 4, padding="periodic")
    x = np.random.default_rng(4).standard_normal((2, 16, 24))
    for a in ((1, 0), (0, 2), (3, 5)):
        shifted = np.roll(x, (a[0] * 2**J, a[1] * 2**J), axis=(1, 2))
        assert np.abs(S(shifted) - np.roll(S(x), a, axis=(2, 3))).max() < 1e-12


@pytest.mark.parametrize("J", [1, 2, 3])
def test_translation_error_bound_at_scale_2J(J):
    # Young's inequality: ||S_m T_c x - S_m x|| <= ||T_c phi_J - phi_J||_1 ||U_m x||, and for a shift
    # by c along an axis ||T_c phi - phi||_1 <= |c| ||d phi||_1 = |c| sqrt(2 / pi) / sigma_J,
    # sigma_J = 0.8 2^(J - 1) (a Gaussian's derivative). With the Littlewood-Paley maximum a,
    # ||U_1 x||^2 <= a ||x||^2, ||U_2 x||^2 <= a^2 ||x||^2. So, with the sampling weight 4^J of the
    # 2^J-subsampled coefficients,
    #     4^J ||S T_c x - S x||^2 <= (c sqrt(2 / pi) / sigma_J)^2 (1 + a + a^2) ||x||^2:
    # the translation error is O(|c| / 2^J). Measured at 0.005 to 0.09 of the bound.
    S = Scattering2D(J, (32, 32), 8, padding="periodic")
    a = max(1.0, littlewood_paley(S.bank).max())
    sigma_J = 0.8 * 2 ** (J - 1)
    x = np.concatenate([smooth_images(np.random.default_rng(J), 4, (32, 32)),
                        np.random.default_rng(J).standard_normal((2, 32, 32))])
    Sx = S(x)
    for c in (1, 2, 3):
        lhs = 4**J * ((S(np.roll(x, c, axis=2)) - Sx) ** 2).sum(axis=(1, 2, 3))
        bound = (c * np.sqrt(2 / np.pi) / sigma_J) ** 2 * (1 + a + a**2) * (x**2).sum(axis=(1, 2))
        assert np.all(lhs <= bound)


def test_translation_error_falls_with_J():
    # The relative translation error at a fixed shift (1 pixel) on smooth 64 x 64 images decreases
    # strictly from J = 1 to J = 4, and J = 4 is at least 4 times below J = 2 (|c| / 2^J;
    # measured 0.24 -> 0.04, a factor 6).
    x = smooth_images(np.random.default_rng(7), 4, (64, 64))
    errors = []
    for J in (1, 2, 3, 4):
        S = Scattering2D(J, (64, 64), 8, padding="periodic")
        Sx = S(x)
        errors.append(np.linalg.norm(S(np.roll(x, 1, axis=1)) - Sx) / np.linalg.norm(Sx))
    assert np.all(np.diff(errors) < 0)
    assert errors[3] < errors[1] / 4


@pytest.mark.parametrize("J", [1, 2, 3])
def test_scattering_energy_is_bounded_by_the_image_energy(J):
    # Mallat 2012 (Prop. 2.5, Theorem 2.6): each wavelet-modulus layer satisfies
    # ||U_m x * phi||^2 + ||U_{m+1} x||^2 <= a ||U_m x||^2 (a = max(1, max A), Littlewood-Paley), so
    # the non-subsampled coefficients have sum_{m <= 2} ||S_m x||^2 <= a^3 ||x||^2. The 2^J-subsampled
    # ones, weighted by 4^J, only approximate that energy (a Riemann sum of |x * phi|^2 on the coarse
    # grid, exact up to the aliases of phi_J): a property of these images, not a theorem; the worst
    # image exceeds a^3 (test_subsampled_energy_can_exceed_the_littlewood_paley_bound).
    # On smooth and white-noise images (measured ratios 0.51 to 0.93; a - 1 < 0.02 here).
    S = Scattering2D(J, (32, 32), 8, padding="periodic")
    a = max(1.0, littlewood_paley(S.bank).max())
    rng = np.random.default_rng(10 + J)
    x = np.concatenate([smooth_images(rng, 5, (32, 32)), rng.standard_normal((5, 32, 32))])
    energy = 4**J * (S(x) ** 2).sum(axis=(1, 2, 3))
    assert np.all(energy <= a**3 * (x**2).sum(axis=(1, 2)))
    # and most of a smooth image's energy is kept at orders <= 2 (measured 0.81 to 0.93): > 1/2
    assert np.all(energy[:5] > 0.5 * (x[:5] ** 2).sum(axis=(1, 2)))


def test_scattering_is_non_expansive():
    # ||S x - S y||^2 <= a^3 ||x - y||^2 for the non-subsampled transform (the modulus is non-expansive,
    # | |u| - |v| | <= |u - v|, then the same layer-by-layer bound as above); with the weight 4^J of the
    # subsampled coefficients this holds for these pairs, far apart and close together, but not for every
    # pair (see test_subsampled_energy_can_exceed_the_littlewood_paley_bound, y = 0).
    J = 2
    S = Scattering2D(J, (32, 32), 8, padding="periodic")
    a = max(1.0, littlewood_paley(S.bank).max())
    rng = np.random.default_rng(12)
    x = smooth_images(rng, 6, (32, 32))
    y = np.concatenate([smooth_images(rng, 3, (32, 32)), x[3:] + 0.1 * rng.standard_normal((3, 32, 32))])
    lhs = 4**J * ((S(x) - S(y)) ** 2).sum(axis=(1, 2, 3))
    assert np.all(lhs <= a**3 * ((x - y) ** 2).sum(axis=(1, 2)))


def test_reflect_padding_is_not_non_expansive():
    # Module notes (Boundaries): the mirror padding copies the pixels near the corners up to 4 times, so the
    # default transform expands some differences: 2^J ||S x - S y|| > 1.25 ||x - y|| at J = 2 (measured 1.33),
    # where a^{3/2} = 1 (L = 8, max A = 1). The direction is found by 30 power steps on J^T J (jvp, vjp),
    # but the ratio is measured with S itself on the pair (x, x + h v), h = 1e-3: a finite difference, where
    # the modulus is smooth (no z = 0 on random images), off from the derivative by O(h).
    M, J = 16, 2
    S = Scattering2D(J, (M, M), 8)
    assert max(1.0, littlewood_paley(S.bank).max()) ** 1.5 < 1 + 1e-4
    rng = np.random.default_rng(81)
    x, v = rng.standard_normal((M, M)), rng.standard_normal((M, M))
    for _ in range(30):
        v = v / np.linalg.norm(v)
        v = 4**J * S.vjp(x, S.jvp(x, v)[1])
    v = v / np.linalg.norm(v)
    h = 1e-3
    assert 2**J * np.linalg.norm(S(x + h * v) - S(x)) > 1.25 * h


def _aliased_layer_bound(bank, k):
    """max over coarse frequencies kappa of lambda_max(Phi Phi^T + diag(sum_l |Psi_l|^2)) on the k x k aliases
    kappa + p, and max_kappa sum_p |Phi[kappa + p]|^2: the squared norms of x -> (k sub_k(x * phi), (x * psi_l)_l)
    and of y -> k sub_k(y * phi), from k^2 ||sub_k z||^2 = (1/MN) sum_kappa |sum_p Z[kappa + p]|^2 (Parseval)."""
    M, N = bank.shape
    m, n = M // k, N // k
    P = (bank.psi.reshape(-1, M, N) ** 2).sum(axis=0)
    a_Q = B = 0.0
    for r, c in itertools.product(range(m), range(n)):
        rows, cols = zip(*[(r + p * m, c + q * n) for p in range(k) for q in range(k)])
        phi, psi2 = bank.phi[rows, cols], P[rows, cols]
        a_Q = max(a_Q, np.linalg.eigvalsh(np.outer(phi, phi) + np.diag(psi2))[-1])
        B = max(B, (phi**2).sum())
    return a_Q, B


def test_subsampled_energy_can_exceed_the_littlewood_paley_bound():
    # Mallat 2012 (Prop. 2.5) bounds the energy of the non-subsampled coefficients by a^3 ||x||^2. At J = 1
    # (where S is exactly the full-resolution formula, sampled every 2 pixels) gradient ascent of the weighted
    # energy R(x) = 4 ||S x||^2 / ||x||^2 (S is 1-homogeneous: R is scale-free) from a fixed white-noise start
    # finds an image above a^3 = 1.0001: measured R = 1.039 after 60 steps, asserted > 1.02 (the ascent
    # converges from below, at 1.032 after 20 steps), both evaluated with the independent full-resolution
    # formula. The weight 4^J overcounts the energy of images whose low-pass output peaks on the coarse grid.
    # What holds is the bound with the aliases of phi_1 (_aliased_layer_bound): order 0 and the order-1
    # wavelet layer together by a_Q, the order-1 averaging by max(1, B): R <= a_Q max(1, B) (1.32 here).
    M, J, L = 8, 1, 8
    S = Scattering2D(J, (M, M), L, padding="periodic")
    a = max(1.0, littlewood_paley(S.bank).max())
    z = np.random.default_rng(0).standard_normal((1, M, M))
    for _ in range(60):
        Sz, n2 = S(z), (z**2).sum()
        R = 4**J * (Sz**2).sum() / n2
        g = S.vjp(z, 2 * 4**J * Sz) / n2 - 2 * R * z / n2
        z = z + 0.1 * np.sqrt(n2) * g / np.linalg.norm(g)
    energy = 4**J * (full_resolution_scattering(z[0], J, L) ** 2).sum() / (z**2).sum()
    assert energy > 1.02 * a**3
    a_Q, B = _aliased_layer_bound(S.bank, 2**J)
    assert energy <= a_Q * max(1.0, B)

# ----------------------------------------------------------------------------- the certified Lipschitz bound

_WORST = {}


def worst_local_constant(padding, J, M=8, L=4):
    """(bound, max |J_S(x)|, the image x) for ScatteringLayer(J, (M, M), L): the local constant |J_S(x)|
    (the exact top singular value of the full Jacobian, local_lipschitz) at 3 white-noise images and
    one concentrated in a corner (where reflect padding copies pixels 4 times), then 3 steps
    x <- top right singular vector of J_S(x) from the best (S is 1-homogeneous, J_S(x) x = S x: an
    ascent of |J_S|). Cached: two tests read it."""
    if (padding, J) not in _WORST:
        layer = ScatteringLayer(J, (M, M), L=L, padding=padding)
        rng = np.random.default_rng(30 + J)
        X = rng.standard_normal((4, M, M, 1))
        X[3] = 0
        X[3, : 2**J, : 2**J] = rng.standard_normal((2**J, 2**J, 1))
        values = local_lipschitz(layer, X, reduce=None)
        best, x = float(values.max()), X[[int(np.argmax(values))]]
        for _ in range(3):
            _, s, vt = np.linalg.svd(input_jacobian(layer, x)[0].reshape(-1, x.size), full_matrices=False)
            if s[0] >= best:
                best, top = float(s[0]), x
            x = vt[0].reshape(x.shape)
        _WORST[padding, J] = (layer.scattering.lipschitz_bound(), best, top)
    return _WORST[padding, J]


@pytest.mark.parametrize("padding", ["reflect", "periodic"])
@pytest.mark.parametrize("J", [1, 2])
def test_lipschitz_bound_exceeds_every_local_constant_and_difference_quotient(padding, J):
    # Scattering2D.lipschitz_bound is certified (its Notes): >= |J_S(x)| at every x and >= ||S x - S y|| /
    # ||x - y|| for every pair. Checked at the images of worst_local_constant (adversarial: an ascent of
    # |J_S|), at pairs (x, x + h v) along the worst direction v, and at white-noise pairs. Tolerance 1e-12
    # relative: float64 rounding of both sides (the margin measured is >= 0.2%). Measured bound / max local
    # constant (8 x 8, L = 4): periodic 1.0025 (J = 1), 1.002 (J = 2); reflect 1.76, 2.11 (the crop of the
    # border coarse pixels, which the bound does not use, cuts most of the padding copies' weight).
    bound, worst, x = worst_local_constant(padding, J)
    assert worst <= bound * (1 + 1e-12)
    S = Scattering2D(J, (8, 8), L=4, padding=padding)
    rng = np.random.default_rng(40 + J)
    v = rng.standard_normal((8, 8))
    xs = np.concatenate([x[..., 0], rng.standard_normal((3, 8, 8))])
    ys = np.concatenate([x[..., 0] + 1e-3 * v, rng.standard_normal((3, 8, 8))])
    dS, dx = (S(xs) - S(ys)).reshape(4, -1), (xs - ys).reshape(4, -1)
    quotients = np.linalg.norm(dS, axis=1) / np.linalg.norm(dx, axis=1)
    assert np.all(quotients <= bound * (1 + 1e-12))


@pytest.mark.parametrize("J", [1, 2])
def test_periodic_lipschitz_bound_is_within_one_percent_of_an_attained_local_constant(J):
    # Tightness: with periodic boundaries the bound (8 x 8, L = 4) is 1.0025 (J = 1) and 1.002 (J = 2) times the
    # largest local constant found (worst_local_constant); asserted within 1% (the ascent gains ~1% from white noise).
    bound, worst, _ = worst_local_constant("periodic", J)
    assert bound <= 1.01 * worst


@pytest.mark.parametrize("J, shape", [(1, (8, 8)), (2, (8, 8)), (2, (4, 12)), (3, (16, 48)), (2, (12, 12))])
def test_reflect_padding_norm_is_the_square_root_of_the_largest_copy_count(J, shape):
    # Fact 4 of lipschitz_bound: pad^T pad is diagonal, entry = the number of copies of the pixel, so
    # |pad| = sqrt(c_r c_c), c_r (c_c) the largest number of copies of a row (column). Against the dense
    # matrix of the padding (the code's own _pad_image on the unit images) and numpy's SVD; 1e-12: rounding.
    S = Scattering2D(J, shape, L=2)
    n = shape[0] * shape[1]
    P = S._pad_image(np.eye(n).reshape(n, *shape)).reshape(n, -1)
    copies = np.bincount(S._rows).max() * np.bincount(S._cols).max()
    assert np.linalg.norm(P, 2) == pytest.approx(np.sqrt(copies), rel=1e-12)
    # rows 1..2^J and the 2^J before the last are copied twice, disjoint when a side is >= 3 2^J (+ 1)
    assert (copies == 4) == (min(shape) >= 3 * 2**J)


@pytest.mark.parametrize("J, shape, L, max_order, padding", [
    (3, (8, 24), 3, 2, "periodic"), (3, (8, 24), 2, 1, "reflect"), (1, (6, 10), 7, 2, "periodic"),
    (2, (4, 4), 5, 1, "periodic"),
])
def test_lipschitz_bound_exceeds_difference_quotients_ascended_over_pairs(J, shape, L, max_order, padding):
    # Scattering2D.lipschitz_bound certifies ||S x - S y|| <= Lip ||x - y|| for every pair, also on non-square
    # grids, at J = 3, odd L and max_order = 1 (the tests above: 8 x 8, L = 4, order 2). Here the quotient is
    # ascended over pairs (x, y) jointly (L-BFGS on -||S x - S y||^2 / ||x - y||^2, gradients by the vjp), from
    # a white-noise pair 0.1 apart. Reached (60 iterations at most): 0.991, 0.497, 0.998 and 0.999 of the bound
    # (reflect: the crop's slack); with periodic boundaries at least 0.95 is asserted, so that the ascent is not
    # idle. Tolerance 1e-12 relative: float64 rounding of both sides.
    from scipy.optimize import minimize

    S = Scattering2D(J, shape, L=L, max_order=max_order, padding=padding)
    rng = np.random.default_rng(80 + J)
    x0 = rng.standard_normal(shape)
    n = x0.size

    def negative_quotient(z):
        x, y = z[:n].reshape(shape), z[n:].reshape(shape)
        dS, d = S(x) - S(y), x - y
        a, b = float((dS * dS).sum()), float((d * d).sum())
        gx, gy = S.vjp(x, dS), -S.vjp(y, dS)
        grad = np.concatenate([(2 * gx / b - 2 * a * d / b**2).ravel(), (2 * gy / b + 2 * a * d / b**2).ravel()])
        return -a / b, -grad

    z0 = np.concatenate([x0.ravel(), (x0 + 0.1 * rng.standard_normal(shape)).ravel()])
    result = minimize(negative_quotient, z0, jac=True, method="L-BFGS-B", options={"maxiter": 60})
    quotient, bound = np.sqrt(-result.fun), S.lipschitz_bound()
    assert quotient <= bound * (1 + 1e-12)
    assert padding == "reflect" or quotient >= 0.95 * bound


@pytest.mark.parametrize("J", [1, 2])
def test_order_zero_periodic_bound_is_the_norm_of_the_subsampled_low_pass(J):
    # max_order = 0 with periodic boundaries: S x = sub_{2^J}(x * phi_J) is linear, and the bound (the largest
    # eigenvalue of the rank-1 alias blocks) is its norm, exactly: against the dense matrix of S (its columns the
    # images of the unit images) and numpy's SVD. 1e-12 relative: rounding.
    M = 8
    S = Scattering2D(J, (M, M), L=2, max_order=0, padding="periodic")
    A = S(np.eye(M * M).reshape(-1, M, M)).reshape(M * M, -1)
    assert S.lipschitz_bound() == pytest.approx(np.linalg.norm(A, 2), rel=1e-12)


def test_alias_blocks_give_the_norm_of_filters_subsampled_at_different_rates():
    # Fact 3 of lipschitz_bound: d -> (Low d, w^{1/2} B_j d)_{j < J}, the low-pass subsampled by 2^J and the
    # wavelets of scale j by 2^j (the code's own _low and _band, at the root of a periodic J = 2 transform,
    # weights w_j as the children's bounds would be), has on real images the squared norm lambda_max of the
    # blocks sum (w / k^2) h h^T over the alias classes, averaged with the reflected filters. Against the dense
    # matrix of the map (real and imaginary parts as rows) and numpy's SVD; 1e-10 relative: rounding of the FFTs.
    M, J = 8, 2
    S = Scattering2D(J, (M, M), L=4, padding="periodic")
    F = S._filters(np, np.float64)
    w = [0.3, 0.7]
    X = np.fft.fft2(np.eye(M * M).reshape(-1, M, M))
    outs = [S._low(X, 0, F)] + [np.sqrt(w[j]) * S._band(X, j, 0, F) for j in range(J)]
    A = np.concatenate([np.concatenate([o.real, o.imag], axis=1).reshape(M * M, -1) for o in outs], axis=1)
    K = 2**J
    ops = [(1.0, S._phi[0][None], K)] + [(w[j], S._psi[j][0], 2**j) for j in range(J)]
    blocks = sum(0.5 * c * (_alias_gram(h, k, K) + _alias_gram(_reflect(h), k, K)) for c, h, k in ops)
    assert np.sqrt(np.linalg.eigvalsh(blocks).max()) == pytest.approx(np.linalg.norm(A, 2), rel=1e-10)


# ----------------------------------------------------------------------------- derivatives

@pytest.mark.parametrize("padding", ["reflect", "periodic"])
@pytest.mark.parametrize("J, shape, L, max_order", [(2, (8, 8), 4, 2), (2, (16, 8), 3, 2), (1, (8, 8), 4, 1),
                                                    (3, (16, 16), 2, 2)])
def test_vjp_matches_central_differences(padding, J, shape, L, max_order):
    # <G, S(x + h v)> - <G, S(x - h v)> over 2h against <vjp(x, G), v>, float64, h = 1e-6: central
    # differences err by h^2 |third derivative| ~ 1e-12 plus rounding 1e-16 / h ~ 1e-10; rtol 1e-6.
    rng = np.random.default_rng(J * 7 + L)
    S = Scattering2D(J, shape, L, max_order, padding=padding)
    x = rng.standard_normal((2, *shape))
    G = rng.standard_normal(S(x).shape)
    g = S.vjp(x, G)
    h = 1e-6
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        fd = (np.vdot(G, S(x + h * v)) - np.vdot(G, S(x - h * v))) / (2 * h)
        assert abs(fd - np.vdot(g, v)) <= 1e-6 * (abs(fd) + np.abs(g).sum() * 1e-3)


def test_jvp_matches_central_differences_and_is_adjoint_to_vjp():
    # (dS/dx) v against (S(x + h v) - S(x - h v)) / 2h entrywise (1e-6 of the scale), and
    # <G, J v> = <J^T G, v> to 1e-12 (both hand-written: a cross-check of the two).
    rng = np.random.default_rng(21)
    S = Scattering2D(2, (16, 16), 4)
    x, v = rng.standard_normal((2, 16, 16)), rng.standard_normal((2, 16, 16))
    Sx, tS = S.jvp(x, v)
    assert np.abs(Sx - S(x)).max() == 0
    h = 1e-6
    fd = (S(x + h * v) - S(x - h * v)) / (2 * h)
    assert np.abs(tS - fd).max() <= 1e-6 * np.abs(fd).max()
    G = rng.standard_normal(Sx.shape)
    lhs, rhs = np.vdot(G, tS), np.vdot(S.vjp(x, G), v)
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs))


@pytest.mark.parametrize("dtype, c", [(np.float64, 1e160), (np.float32, 1e20)])
def test_jvp_is_homogeneous_at_scales_where_z_times_dz_overflows(dtype, c):
    # (dS/dx)(c x) (c v) = c (dS/dx)(x) v (S is 1-homogeneous), against c times central differences of
    # S at scale 1 in float64, where the products of the wavelet coefficients z dz (c^2) overflow
    rng = np.random.default_rng(22)
    S = Scattering2D(2, (16, 16), 4)
    x, v = rng.standard_normal((2, 16, 16)), rng.standard_normal((2, 16, 16))
    h = 1e-6
    fd = (S(x + h * v) - S(x - h * v)) / (2 * h)
    _, tS = S.jvp((c * x).astype(dtype), (c * v).astype(dtype))
    assert tS.dtype == dtype
    # central differences: 3e-10 of the scale (O(h^2) and eps / h). float32: the jvp at scale 1 errs by up to
    # 1.4e-6 of the scale (16 seeds; the rounding of x and v, amplified where a modulus is small), 1.2e-6 at 1e20
    tol = 1e-8 if dtype == np.float64 else 1e-5
    assert np.abs(tS.astype(np.float64) / c - fd).max() <= tol * np.abs(fd).max()


def test_scattering_layer_backward_matches_central_differences():
    rng = np.random.default_rng(30)
    layer = ScatteringLayer(2, (8, 8), L=4)
    check_central_differences(layer, rng.standard_normal((2, 8, 8, 2)), rng)


def test_scattering_layer_taylor_remainder_is_second_order():
    # |L(h) - L(0) - h dL| ~ h^2 along a random direction: fitted log-log slope within 0.1 of 2
    # (no modulus argument is near 0 for a random Gaussian image: the map is smooth there).
    # h0 = 1e-4: at 1e-3 the steps are not yet asymptotic at every draw (slopes 1.956 to 2.116
    # over 9 seeds); at 1e-4 they are 1.996 to 2.011. A gradient off by 1% gives slope 1.
    rng = np.random.default_rng(31)
    slope, _ = taylor_slope(ScatteringLayer(2, (8, 8), L=4), rng.standard_normal((2, 8, 8, 1)), rng, h0=1e-4)
    assert abs(slope - 2) < 0.1


def test_scattering_layer_jvp_matches_central_differences():
    rng = np.random.default_rng(32)
    check_jvp(ScatteringLayer(1, (8, 16), L=3, padding="periodic"), rng.standard_normal((2, 8, 16, 2)), rng)


def test_scattering_plus_linear_network_is_trained_by_fit():
    # The scattering as the fixed first layers of a shallow.cnn network: fit trains the linear
    # layer on top and the training loss falls (two separable classes of random images).
    from shallow.cnn import SGD, CrossEntropy, fit

    rng = np.random.default_rng(33)
    y = np.arange(40) % 2
    X = rng.standard_normal((40, 8, 8, 1)) + 1.5 * y[:, None, None, None] * np.cos(np.arange(8))[None, :, None, None]
    scat = ScatteringLayer(1, (8, 8), L=4)
    net = Sequential(scat, Flatten(), Linear(4 * 4 * scat.scattering.n_coefficients, 2, rng=0))
    hist = fit(net, X, y, loss=CrossEntropy(), optimizer=SGD(net.named_parameters(), lr=0.05), epochs=15,
               batch_size=10, rng=0)
    assert hist.loss[-1] < 0.5 * hist.loss[0]


# ----------------------------------------------------------------------------- the classifier

def test_scattering_linear_classifier_on_digits_beats_96_percent():
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    # Scattering (J = 1, L = 8, 8 x 8 digits, reflect padding) + ridge regression: the seed's
    # "scattering as a CNN" with fixed filters and a trained linear last layer. Measured test
    # accuracy 0.982 on the fixed 25% split (0.993 with J = 2); the threshold leaves 2 points.
    from shallow.cnn import load_digits

    data = load_digits(standardize=False)
    clf = ScatteringClassifier(1, (8, 8), L=8, ridge=1e-3).fit(data.X_train, data.y_train)
    assert clf.score(data.X_test, data.y_test) > 0.96


def test_classifier_fits_a_separable_toy_problem():
    rng = np.random.default_rng(40)
    y = np.arange(60) % 3
    X = rng.standard_normal((60, 8, 8, 1)) * 0.3 + y[:, None, None, None]
    clf = ScatteringClassifier(1, (8, 8), L=4).fit(X, y)
    assert clf.score(X, y) == 1.0
    assert set(clf.predict(X)) <= {0, 1, 2}


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("J, shape, match", [
    (3, (4, 16), r"shape \(4, 16\) is too small for J=3"),
    (2, (10, 16), r"shape \(10, 16\) does not suit J=2.*multiple of 2\^J = 4"),
    (2, (16, 18), r"shape \(16, 18\) does not suit J=2"),
    (2, (16,), "shape must be a pair"),
    (0, (16, 16), "J must be an integer >= 1"),
])
def test_bad_shapes_raise_a_value_error_naming_shape_and_J(J, shape, match):
    with pytest.raises(ValueError, match=match):
        Scattering2D(J, shape)
    if J >= 1 and len(shape) == 2:
        with pytest.raises(ValueError, match=match):
            check_scattering_shape(shape, J)


@pytest.mark.parametrize("call, match", [
    (lambda S: S(np.zeros((2, 8, 16))), r"x must have shape \(\.\.\., 16, 16\)"),
    (lambda S: S(np.full((1, 16, 16), np.nan)), "NaN"),
    (lambda S: S(np.zeros((1, 16, 16), dtype=complex)), "real"),
    (lambda S: S.features(np.zeros((2, 16, 16))), r"\(N, H, W, C\)"),
    (lambda S: S.features(np.zeros((2, 8, 8, 1))), "shape=\\(16, 16\\)"),
    (lambda S: S.vjp(np.zeros((1, 16, 16)), np.zeros((1, 3, 4, 4))), "G must have the shape"),
    (lambda S: Scattering2D(2, (16, 16), max_order=3), "max_order"),
    (lambda S: Scattering2D(2, (16, 16), padding="zeros"), "padding"),
    (lambda S: ScatteringClassifier(1, (8, 8), ridge=0), "ridge"),
])
def test_bad_input_raises_a_clear_value_error(call, match):
    S = Scattering2D(2, (16, 16), 4)
    with pytest.raises(ValueError, match=match):
        call(S)


def test_scattering2d_of_a_channels_last_image_data_batch_points_to_scattering_layer():
    """Scattering2D takes images (..., H, W); given an ImageData batch (N, H, W, C) it names ScatteringLayer."""
    from shallow.cnn.data import load_digits

    X = load_digits().X_train[:2]  # (2, 8, 8, 1)
    S = Scattering2D(1, (8, 8), L=4)
    with pytest.raises(ValueError, match=r"images of shape \(\.\.\., H, W\): for channels-last batches use "
                                         r"ScatteringLayer"):
        S(X)
    # what the message points to: the channels-last wrapper gives (N, H / 2, W / 2, C K), K = 1 + J L = 5
    assert ScatteringLayer(scattering=S)(X).shape == (2, 4, 4, 5)


@pytest.mark.parametrize("J", [-1, 0, 1.5, "2"])
def test_check_scattering_shape_refuses_a_J_that_is_not_a_positive_integer(J):
    # J = -1 passed (every side is a multiple of 2^-1 = 0.5) and J = "2" failed inside 2**J.
    with pytest.raises(ValueError, match="J must be an integer >= 1"):
        check_scattering_shape((16, 16), J)


def test_scattering_of_no_images_is_empty():
    # An empty batch used to fail inside a reshape by -1; its coefficients are an empty array of
    # the output shape (K = 25 for J = 2, L = 4), in every entry point.
    S = Scattering2D(2, (16, 16), 4)
    x = np.zeros((0, 16, 16))
    assert S(x).shape == (0, 25, 4, 4) and S(x).dtype == np.float64
    assert S(x.astype(np.float32)).dtype == np.float32
    assert S.features(np.zeros((0, 16, 16, 2))).shape == (0, 4, 4, 50)
    Sx, tS = S.jvp(x, x)
    assert Sx.shape == tS.shape == (0, 25, 4, 4)
    assert S.vjp(x, np.zeros((0, 25, 4, 4))).shape == (0, 16, 16)
    layer = ScatteringLayer(scattering=S)
    y = layer.forward(np.zeros((0, 16, 16, 1)))
    assert y.shape == (0, 4, 4, 25) and layer.backward(y).shape == (0, 16, 16, 1)


def test_scattering_layer_leaves_its_nan_scan_to_fit():
    # The layer refuses NaN inputs, but not inside fit's steps (fit checks the data set once): the
    # scan reads a flag back from the device, a wait at every step on a GPU, refused while a CUDA
    # graph is recorded.
    from shallow.cnn.models import _inputs_checked

    net = Sequential(ScatteringLayer(1, (8, 8), 4), Flatten(), Linear(4 * 4 * 5, 3, rng=0))
    x = np.full((2, 8, 8, 1), np.nan)
    with pytest.raises(ValueError, match="x contains 128 NaN"):
        net.forward(x)
    with _inputs_checked(net):
        assert np.isnan(net.forward(x)).all()
        with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):  # the shape is still checked
            net.forward(np.zeros((2, 8, 8)))
    assert net.layers[0].check_inputs


def test_scattering_layer_refuses_a_tangent_or_gradient_of_the_wrong_shape():
    # Both used to fail inside a reshape (or a text tangent inside .transpose) without naming them.
    layer = ScatteringLayer(2, (16, 16), 4)
    x = np.zeros((2, 16, 16, 1))
    with pytest.raises(ValueError, match=r"tx must have the shape of x, \(2, 16, 16, 1\), got \(2, 16, 16, 2\)"):
        layer.jvp(x, np.zeros((2, 16, 16, 2)))
    with pytest.raises(ValueError, match="tx must have the shape of x"):
        layer.jvp(x, "tangent")
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dy must have the shape of the layer's output, \(2, 4, 4, 25\)"):
        layer.backward(np.zeros((2, 4, 4, 3)))


def test_scattering_on_cupy_matches_numpy(xp):
    # The device path against the host: FFT rounding only (1e-12 of the scale), float64.
    from shallow.backend import to_numpy

    S = Scattering2D(2, (16, 16), 4)
    x = np.random.default_rng(50).standard_normal((3, 16, 16))
    ref = S(x)
    assert np.abs(to_numpy(S(xp.asarray(x))) - ref).max() < 1e-12 * np.abs(ref).max()
    G = np.random.default_rng(51).standard_normal(ref.shape)
    g = S.vjp(x, G)
    assert np.abs(to_numpy(S.vjp(xp.asarray(x), xp.asarray(G))) - g).max() < 1e-12 * np.abs(g).max()


def test_classifier_dual_ridge_equals_the_primal_solution():
    # With fewer images (30) than features (4 x 4 x 9 = 144) the weights come from the n x n dual
    # system; they must equal the primal (Z^T Z / n + lambda I)^{-1} Z^T (Y - b) / n computed here
    # (push-through identity), to 1e-8 relative (condition number of the systems ~1e3 at lambda = 1e-2).
    rng = np.random.default_rng(41)
    X, y = rng.standard_normal((30, 8, 8, 1)), np.arange(30) % 3
    clf = ScatteringClassifier(1, (8, 8), L=8, ridge=1e-2).fit(X, y)
    Phi = clf.scattering.features(X).reshape(30, -1)
    Z = (Phi - Phi.mean(axis=0)) / Phi.std(axis=0)
    Y = (y[:, None] == np.arange(3)).astype(float)
    W = np.linalg.solve(Z.T @ Z / 30 + 1e-2 * np.eye(Z.shape[1]), Z.T @ (Y - Y.mean(axis=0)) / 30)
    assert np.abs(clf.W - W).max() < 1e-8 * np.abs(W).max()


def test_classifier_log_features_are_the_log_of_the_coefficients():
    # transform with log_eps = e gives log(|S| + e) of the plain features, entrywise (to rounding).
    X = np.random.default_rng(42).standard_normal((4, 8, 8, 1))
    plain = ScatteringClassifier(1, (8, 8), L=4).transform(X)
    logged = ScatteringClassifier(1, (8, 8), L=4, log_eps=1e-3).transform(X)
    assert np.abs(logged - np.log(np.abs(plain) + 1e-3)).max() < 1e-12


def test_scattering_vjp_holds_the_cache_of_one_block():
    # forward and backward block by block: the caches of all blocks were kept until the backward pass (the peak grew
    # with the batch: 1.5 GB for 256 images of 64x64 at J = 2); the gradient is that of the whole batch at once
    import tracemalloc

    S = Scattering2D(2, (16, 16))
    x = np.random.default_rng(12).standard_normal((32, 16, 16))
    G = np.random.default_rng(13).standard_normal((32, S.n_coefficients, *S.output_shape))
    whole = S.vjp(x, G)
    S._chunk = lambda: 2  # blocks of 2 images
    peaks = []
    for B in (8, 32):
        tracemalloc.start()
        try:
            g = S.vjp(x[:B], G[:B])
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0]  # 1.07 measured; 4 blocks' caches against 1 before
    np.testing.assert_allclose(g, whole, rtol=1e-12, atol=1e-12 * np.abs(whole).max())


def test_scattering_vjp_in_blocks_of_two_images_of_an_odd_batch_is_that_of_each_image():
    # S^T G is computed image by image (each image's coefficients depend on it alone): in blocks of 2 images,
    # 5 images (the last block holds one) give each image's own vjp. Rounding tolerance 1e-12.
    S = Scattering2D(1, (8, 8), L=4)
    x = np.random.default_rng(14).standard_normal((5, 8, 8))
    G = np.random.default_rng(15).standard_normal((5, S.n_coefficients, *S.output_shape))
    single = np.stack([S.vjp(x[i], G[i]) for i in range(5)])
    S._chunk = lambda: 2  # blocks of 2 images
    np.testing.assert_allclose(S.vjp(x, G), single, rtol=1e-12, atol=1e-12 * np.abs(single).max())


@pytest.mark.parametrize("max_order", [1, 2])
def test_periodic_lipschitz_bound_is_the_telescoped_recursion_of_dense_operator_norms(max_order):
    # Facts 2 and 3 of lipschitz_bound (periodic, so no padding factor): V of a node at resolution 2^-r is the
    # squared norm on real signals of d -> (Low_r d, (V_child^{1/2} B_{j, r} d)_children), children the paths the
    # transform computes (j_1 < J at the root, j_2 > j_1 below j_1), a leaf's V that of Low alone; Lip = V_root^{1/2}.
    # Each norm from the dense matrix of the code's own _low and _band (real and imaginary parts as rows) and
    # numpy's SVD, instead of the alias blocks. 1e-10 relative: rounding of the FFTs.
    M, J = 8, 2
    S = Scattering2D(J, (M, M), L=4, max_order=max_order, padding="periodic")
    F = S._filters(np, np.float64)

    def node(r, children):
        side = M // 2**r
        X = np.fft.fft2(np.eye(side * side).reshape(-1, side, side))
        outs = [S._low(X, r, F)] + [np.sqrt(V) * S._band(X, j, r, F) for j, V in children]
        A = np.concatenate([np.concatenate([o.real, o.imag], axis=1).reshape(side * side, -1) for o in outs], axis=1)
        return np.linalg.norm(A, 2) ** 2

    V2 = {j: node(j, []) for j in range(J)}
    V1 = {j1: node(j1, [(j2, V2[j2]) for j2 in range(j1 + 1, J)] if max_order >= 2 else []) for j1 in range(J)}
    assert S.lipschitz_bound() == pytest.approx(np.sqrt(node(0, [(j1, V1[j1]) for j1 in range(J)])), rel=1e-10)
