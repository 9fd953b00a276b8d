"""Group invariance: the translation lemma, exact p4 equivariance, derivatives of the p4 layers, Gabor fits.

Independent computations: circulant operators built as explicit matrices by index loops; circular
convolution by scipy.ndimage; the p4 correlations of Cohen & Welling (2016, Eq. 10 and 11) summed
term by term with the rotation written as a matrix on centred coordinates; Gabor functions written
out with numpy; gradients by central differences (tests/cnn/gradcheck.py).
"""

import numpy as np
import pytest
import scipy.ndimage
from gradcheck import check_central_differences, check_jvp, taylor_slope

from shallow.cnn import SGD, Activation, Model, fit
from shallow.cnn.group import (
    P4Conv2d,
    P4GroupPool,
    P4LiftConv2d,
    circular_convolution,
    commutator_defect,
    commutes_with_translations,
    convolution_defect,
    convolution_kernel,
    deform_nearest,
    fit_gabor,
    gabor_filter,
    p4_cnn,
    rotate_images,
    rotate_p4,
    translate,
)

# Rounding: outputs are sums of at most a few hundred O(1) float64 products taken in another order
# after a rotation; 1e-12 leaves a factor ~50 over eps * terms.
EXACT = 1e-12

# r^{-1} on centred (row, column) coordinates for numpy's rot90(k=1): out[i, j] = in[j, W - 1 - i],
# i.e. (r x)(p, q) = x(q, -p). Checked on a Dirac in test_rot90_convention.
R_INV = np.array([[0, 1], [-1, 0]])


def test_rot90_convention():
    # the matrix R_INV used by the direct formulas below is numpy's rot90 (an independent fact of numpy)
    x = np.zeros((5, 5))
    x[0, 3] = 1.0  # centred (-2, 1)
    y = np.rot90(x, 1)
    (i, j), = np.argwhere(y)
    # y(u) = x(r^{-1} u): the Dirac moves to u with r^{-1} u = (-2, 1)
    np.testing.assert_array_equal(R_INV @ np.array([i - 2, j - 2]), [-2, 1])


# ----------------------------------------------------------------------------- the translation lemma

def _circulant_matrix(k):
    """The matrix of x -> k * x (circular, multi-channel) by explicit index loops: M[(u, o), (v, c)] = k[u - v, c, o]."""
    H, W, C, Co = k.shape
    M = np.zeros((H, W, Co, H, W, C))
    for u1 in range(H):
        for u2 in range(W):
            for v1 in range(H):
                for v2 in range(W):
                    M[u1, u2, :, v1, v2, :] = k[(u1 - v1) % H, (u2 - v2) % W].T
    return M.reshape(H * W * Co, H * W * C)


def _matrix_op(M, shape_out):
    return lambda X: (X.reshape(X.shape[0], -1) @ M.T).reshape((X.shape[0],) + shape_out)


def test_lemma_kernel_of_a_circulant_operator_is_its_dirac_response():
    # Seed lemma: a linear operator commuting with translations is x -> k * x, and k = op(delta)
    rng = np.random.default_rng(0)
    k = rng.standard_normal((5, 4, 2, 3))
    op = _matrix_op(_circulant_matrix(k), (5, 4, 3))
    np.testing.assert_allclose(convolution_kernel(op, (5, 4, 2)), k, rtol=0, atol=EXACT)
    assert convolution_defect(op, (5, 4, 2), rng=1) < EXACT


def test_lemma_circulant_operator_commutes_with_every_translation():
    rng = np.random.default_rng(1)
    op = _matrix_op(_circulant_matrix(rng.standard_normal((4, 4, 2, 2))), (4, 4, 2))
    assert commutes_with_translations(op, (4, 4, 2), rng=2)


def test_translation_tests_read_an_h_w_shape_as_one_channel():
    # (H, W) means C = 1, as every in_shape of the CNN module (it was refused here)
    rng = np.random.default_rng(5)
    k = rng.standard_normal((4, 4, 1, 2))
    op = _matrix_op(_circulant_matrix(k), (4, 4, 2))
    assert commutes_with_translations(op, (4, 4), rng=2)
    np.testing.assert_allclose(convolution_kernel(op, (4, 4)), k, rtol=0, atol=EXACT)
    assert convolution_defect(op, (4, 4), rng=1) < EXACT


def test_lemma_non_circulant_operator_is_no_convolution_and_does_not_commute():
    # a dense Gaussian matrix: the defect is of order 1 (measured 1.18 and 1.37; 0.5 is far from rounding)
    rng = np.random.default_rng(2)
    M = rng.standard_normal((4 * 4 * 2, 4 * 4 * 2))
    op = _matrix_op(M, (4, 4, 2))
    assert convolution_defect(op, (4, 4, 2), rng=3) > 0.5
    assert not commutes_with_translations(op, (4, 4, 2), rng=4)
    assert commutator_defect(op, lambda Z: translate(Z, (1, 0)), rng.standard_normal((2, 4, 4, 2))) > 0.5


def test_lemma_a_single_broken_entry_is_detected():
    # a circulant operator plus a perturbation of one matrix entry by 1e-3: a defect between 1e-6 and 1e-2
    # (measured 3e-5: one entry of a 16 x 16 matrix, relative to |op(x)|)
    rng = np.random.default_rng(3)
    M = _circulant_matrix(rng.standard_normal((4, 4, 1, 1)))
    M[5, 2] += 1e-3
    assert 1e-6 < convolution_defect(_matrix_op(M, (4, 4, 1)), (4, 4, 1), rng=0) < 1e-2


def test_circular_convolution_matches_scipy_ndimage_wrap():
    # scipy.ndimage.convolve(mode="wrap") with the origin of the kernel at index 0: shift by its centre
    rng = np.random.default_rng(4)
    X = rng.standard_normal((2, 6, 5, 1))
    k = rng.standard_normal((6, 5, 1, 1))
    ours = circular_convolution(X, k)[..., 0]
    # ndimage centres a (6, 5) kernel at (3, 2): convolve with k rolled so that k[0, 0] sits there
    kk = np.roll(k[..., 0, 0], (3, 2), axis=(0, 1))
    ref = np.stack([scipy.ndimage.convolve(X[n, ..., 0], kk, mode="wrap") for n in range(2)])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=EXACT)


def test_translate_moves_a_dirac_by_the_shift():
    x = np.zeros((1, 5, 4, 1))
    x[0, 4, 3] = 1.0
    (i, j), = np.argwhere(translate(x, (2, 3))[0, ..., 0])
    assert (i, j) == ((4 + 2) % 5, (3 + 3) % 4)


@pytest.mark.parametrize("sigma", ["relu", "tanh"])
def test_pointwise_nonlinearity_commutes_with_deformations(sigma):
    # rho L_tau = L_tau rho for a pointwise rho (Bruna 2013, Ch. 3): exact, L_tau moves pixels only
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 8, 8, 2))
    tau = 2.5 * rng.standard_normal((8, 8, 2))  # a rough field, not a translation
    rho = Activation(sigma)
    assert commutator_defect(rho, lambda Z: deform_nearest(Z, tau), X) == 0.0
    assert commutes_with_translations(rho, (8, 8, 2), rng=1)


def test_local_max_filter_commutes_with_translations_but_not_with_deformations():
    # a 3x3 max filter is translation covariant but not pointwise: a deformation breaks the commutation
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3, 8, 8, 1))
    tau = 2.5 * rng.standard_normal((8, 8, 2))
    def maxfilter(Z):
        return scipy.ndimage.maximum_filter(Z, size=(1, 3, 3, 1), mode="wrap")
    assert commutes_with_translations(maxfilter, (8, 8, 1), rng=0)
    assert commutator_defect(maxfilter, lambda Z: deform_nearest(Z, tau), X) > 0.1  # measured 0.41


@pytest.mark.parametrize("dtype, k", [(np.float64, -560), (np.float64, 560), (np.float32, -80), (np.float32, 80)])
def test_commutator_defect_is_invariant_under_scaling_by_a_power_of_two(dtype, k):
    # A 1-homogeneous op (a fixed mask) against a translation: the relative commutator of 2^k X is that of
    # X (exact in floating point), also where the squares under- or overflow the dtype: images scaled by
    # 2^80 in float32 (2^560 in float64) gave inf / inf = NaN, by 2^-80 (2^-560) 0 / 0, reported as 0:
    # 'they commute'. Reference: numpy's float64 norms at scale 1, the translation written with np.roll.
    rng = np.random.default_rng(21)
    X = rng.standard_normal((2, 6, 5, 2)).astype(dtype)
    mask = rng.uniform(0.5, 1.5, (6, 5, 1)).astype(dtype)

    def op(Z):
        return Z * mask

    def L(Z):
        return translate(Z, (1, 2))

    X64, m64 = X.astype(np.float64), mask.astype(np.float64)
    LY = np.roll(X64 * m64, (1, 2), axis=(1, 2))
    expected = np.linalg.norm(np.roll(X64, (1, 2), axis=(1, 2)) * m64 - LY) / np.linalg.norm(LY)
    # float64 sums of 120 squares of rounded float32 or float64 products: a few eps of the dtype
    tol = 8 * float(np.finfo(dtype).eps)
    assert commutator_defect(op, L, np.ldexp(X, k)) == pytest.approx(expected, rel=tol)

def test_deform_nearest_with_a_constant_field_is_a_translation():
    X = np.random.default_rng(7).standard_normal((2, 6, 6, 1))
    tau = np.broadcast_to(np.array([1.0, -2.0]), (6, 6, 2))
    np.testing.assert_array_equal(deform_nearest(X, tau), np.roll(X, (1, -2), axis=(1, 2)))


# ----------------------------------------------------------------------------- p4 layers

def _lift_direct(x, psi, b):
    """Cohen & Welling Eq. 10 as a correlation: y(u, o, s) = b_o + sum_{v, c} x(u + v, c) psi(r^{-s} v, c, o), zero padding."""
    N, H, W, _ = x.shape
    K, _, _, Co = psi.shape
    h = (K - 1) // 2
    y = np.zeros((N, H, W, Co, 4))
    for s in range(4):
        Ms = np.linalg.matrix_power(R_INV, s)
        for a in range(-h, h + 1):
            for bb in range(-h, h + 1):
                w1, w2 = Ms @ np.array([a, bb])
                tap = psi[w1 + h, w2 + h]  # (C, Co)
                shifted = np.zeros_like(x)
                src = x[:, max(a, 0):H + min(a, 0), max(bb, 0):W + min(bb, 0)]
                shifted[:, max(-a, 0):H + min(-a, 0), max(-bb, 0):W + min(-bb, 0)] = src  # x(u + v)
                y[..., s] += shifted @ tap
    y += b[:, None]
    return y.reshape(N, H, W, 4 * Co)


def _p4_direct(f, psi, b):
    """Eq. 11: y(u, o, s) = b_o + sum_{v, c, t} f(u + v, c, t) psi(r^{-s} v, c, t - s, o), zero padding."""
    N, H, W, _ = f.shape
    K, _, C, _, Co = psi.shape
    h = (K - 1) // 2
    f5 = f.reshape(N, H, W, C, 4)
    y = np.zeros((N, H, W, Co, 4))
    for s in range(4):
        Ms = np.linalg.matrix_power(R_INV, s)
        for a in range(-h, h + 1):
            for bb in range(-h, h + 1):
                w1, w2 = Ms @ np.array([a, bb])
                shifted = np.zeros_like(f5)
                shifted[:, max(-a, 0):H + min(-a, 0), max(-bb, 0):W + min(-bb, 0)] = \
                    f5[:, max(a, 0):H + min(a, 0), max(bb, 0):W + min(bb, 0)]
                for t in range(4):
                    y[..., s] += shifted[..., t] @ psi[w1 + h, w2 + h, :, (t - s) % 4, :]
    y += b[:, None]
    return y.reshape(N, H, W, 4 * Co)


def test_lifting_layer_is_the_group_correlation_of_cohen_welling():
    rng = np.random.default_rng(10)
    lift = P4LiftConv2d(2, 3, 3, padding=1, rng=rng)
    lift.params["b"][...] = rng.standard_normal(3)
    x = rng.standard_normal((2, 5, 6, 2))
    ref = _lift_direct(x, lift.params["W"], lift.params["b"])
    np.testing.assert_allclose(lift(x), ref, rtol=0, atol=EXACT)


def test_p4_layer_is_the_group_correlation_of_cohen_welling():
    rng = np.random.default_rng(11)
    conv = P4Conv2d(2, 3, 3, padding=1, rng=rng)
    conv.params["b"][...] = rng.standard_normal(3)
    f = rng.standard_normal((2, 5, 6, 8))
    ref = _p4_direct(f, conv.params["W"], conv.params["b"])
    np.testing.assert_allclose(conv(f), ref, rtol=0, atol=EXACT)


@pytest.mark.parametrize("K, padding, size", [(3, 1, 7), (5, 2, 6), (4, 0, 7), (3, 0, 6)])
def test_lifting_layer_is_exactly_equivariant_to_quarter_turns(K, padding, size):
    # lift(r^k x) = r^k lift(x) for odd and even kernels, with symmetric padding, odd and even sizes
    rng = np.random.default_rng(12)
    lift = P4LiftConv2d(2, 3, K, padding=padding, rng=rng)
    lift.params["b"][...] = rng.standard_normal(3)
    x = rng.standard_normal((2, size, size, 2))
    y = lift(x)
    for k in (1, 2, 3):
        np.testing.assert_allclose(lift(np.rot90(x, k, axes=(1, 2))), rotate_p4(y, k), rtol=0, atol=EXACT)


@pytest.mark.parametrize("K, padding, size", [(3, 1, 7), (5, 2, 6), (4, 0, 7), (3, 0, 6)])
def test_p4_layer_is_exactly_equivariant_to_quarter_turns(K, padding, size):
    rng = np.random.default_rng(13)
    conv = P4Conv2d(2, 3, K, padding=padding, rng=rng)
    conv.params["b"][...] = rng.standard_normal(3)
    f = rng.standard_normal((2, size, size, 8))
    y = conv(f)
    for k in (1, 2, 3):
        np.testing.assert_allclose(conv(rotate_p4(f, k)), rotate_p4(y, k), rtol=0, atol=EXACT)


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_group_pooling_turns_p4_rotations_into_image_rotations(mode):
    rng = np.random.default_rng(14)
    f = rng.standard_normal((2, 5, 5, 12))
    pool = P4GroupPool(mode)
    for k in (1, 2, 3):
        # max: a selection, exact; mean: the 4 terms summed in another order, EXACT
        np.testing.assert_allclose(pool(rotate_p4(f, k)), np.rot90(pool(f), k, axes=(1, 2)), rtol=0, atol=EXACT)


def test_rotate_p4_is_an_action_of_z4():
    # r^4 = identity and r^a r^b = r^{a+b}: rotate_p4 is a group action
    f = np.random.default_rng(15).standard_normal((1, 4, 4, 8))
    np.testing.assert_array_equal(rotate_p4(rotate_p4(f, 1), 3), f)
    np.testing.assert_array_equal(rotate_p4(rotate_p4(f, 1), 2), rotate_p4(f, 3))


@pytest.mark.parametrize("H, W", [(4, 4), (3, 5)])
def test_rotate_p4_turns_positions_and_shifts_orientations(H, W):
    # (r f)(u, c, s) = f(r^{-1} u, c, s - 1), with r^{-1} (i, j) = (j, W - 1 - i) for a counterclockwise
    # quarter turn of an H x W grid (a W x H map comes out), written entry by entry (with the action test
    # above, every k)
    C = 2
    f = np.random.default_rng(16).standard_normal((1, H, W, 4 * C))
    expected = np.empty((1, W, H, 4 * C))
    for i in range(W):
        for j in range(H):
            for c in range(C):
                for s in range(4):
                    expected[0, i, j, 4 * c + s] = f[0, j, W - 1 - i, 4 * c + (s - 1) % 4]
    np.testing.assert_array_equal(rotate_p4(f, 1), expected)


def test_p4_cnn_is_exactly_invariant_to_quarter_turns():
    rng = np.random.default_rng(16)
    net = p4_cnn((8, 8, 1), 10, width=2, rng=rng)
    x = rng.standard_normal((4, 8, 8, 1))
    y = net(x)
    for k in (1, 2, 3):
        np.testing.assert_allclose(net(np.rot90(x, k, axes=(1, 2))), y, rtol=0, atol=EXACT)


@pytest.mark.parametrize("size", [1, 5, 7])
def test_p4_cnn_on_odd_images_takes_no_pooling_and_is_exactly_invariant_to_quarter_turns(size):
    # A 2x2 pooling of an odd map drops a row: the default number of stages falls to 0 (the notes:
    # "fewer if a map would be odd"), where it stopped at 1 and refused in_shape (7, 7, 1).
    rng = np.random.default_rng(19)
    net = p4_cnn((size, size, 1), 3, width=2, rng=rng)
    assert not any(type(layer).__name__ == "MaxPool2d" for layer in net.layers)
    x = rng.standard_normal((4, size, size, 1))
    y = net(x)
    for k in (1, 2, 3):
        np.testing.assert_allclose(net(np.rot90(x, k, axes=(1, 2))), y, rtol=0, atol=EXACT)

def test_plain_cnn_is_not_invariant_to_quarter_turns():
    # the control: the same layout with plain convolutions changes its output under a quarter turn
    from shallow.cnn import vgg_small
    rng = np.random.default_rng(17)
    net = vgg_small((8, 8, 1), 10, width=2, batch_norm=False, rng=rng)
    x = rng.standard_normal((4, 8, 8, 1))
    # measured relative change 0.49; 0.05 is far above rounding
    y, yr = net(x), net(np.rot90(x, 1, axes=(1, 2)))
    assert np.linalg.norm(yr - y) / np.linalg.norm(y) > 0.05


def test_p4_cnn_stays_invariant_while_it_trains():
    # the trained parameter is the base filter: every SGD step keeps f(r x) = f(x); and fit lowers the loss
    rng = np.random.default_rng(18)
    X = rng.standard_normal((32, 8, 8, 1))
    y = rng.integers(0, 3, 32)
    model = Model(p4_cnn((8, 8, 1), 3, width=2, rng=0), (8, 8, 1), 3)
    opt = SGD(model.named_parameters(), lr=0.05, momentum=0.9)
    hist = fit(model, X, y, optimizer=opt, epochs=8, batch_size=16, rng=0)
    assert hist.loss[-1] < 0.9 * hist.loss[0]
    model.eval()
    np.testing.assert_allclose(model(np.rot90(X, 1, axes=(1, 2))), model(X), rtol=0, atol=EXACT)


def test_p4_layers_in_float32_match_float64():
    # float32 rounding: relative 1e-5 on sums of ~100 terms of size 1 (eps32 = 1.2e-7, times ~100)
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, 6, 6, 1))
    outs = {}
    for dtype in (np.float32, np.float64):
        net = p4_cnn((6, 6, 1), 4, width=2, stages=1, rng=0, dtype=dtype)
        out = net(x.astype(dtype))
        assert out.dtype == dtype
        outs[dtype] = out
    np.testing.assert_allclose(outs[np.float32], outs[np.float64], rtol=1e-5, atol=1e-5)


def test_p4_parameters_are_the_base_filters():
    lift, conv = P4LiftConv2d(3, 5, 3), P4Conv2d(5, 7, 3)
    assert {k: v.shape for k, v in lift.named_parameters().items()} == {"W": (3, 3, 3, 5), "b": (5,)}
    assert {k: v.shape for k, v in conv.named_parameters().items()} == {"W": (3, 3, 5, 4, 7), "b": (7,)}


def test_smallest_p4_layers_are_the_group_correlation_of_cohen_welling():
    # one channel in and out and a 1x1 filter, the smallest layers: Eq. 10 and 11 still hold (for K = 1
    # the quarter turns leave the filter alone; the p4 layer still shifts its rotation axis)
    rng = np.random.default_rng(26)
    lift, conv = P4LiftConv2d(1, 1, 1, padding=0, rng=rng), P4Conv2d(1, 1, 1, padding=0, rng=rng)
    for layer in (lift, conv):
        layer.params["b"][...] = rng.standard_normal(1)
    x, f = rng.standard_normal((2, 4, 4, 1)), rng.standard_normal((2, 4, 4, 4))
    np.testing.assert_allclose(lift(x), _lift_direct(x, lift.params["W"], lift.params["b"]), rtol=0, atol=EXACT)
    np.testing.assert_allclose(conv(f), _p4_direct(f, conv.params["W"], conv.params["b"]), rtol=0, atol=EXACT)


@pytest.mark.parametrize("layer, fan_in", [(P4LiftConv2d(8, 8, 3, rng=0), 3 * 3 * 8),
                                           (P4Conv2d(8, 8, 3, rng=0), 4 * 3 * 3 * 8)],
                         ids=["lift", "p4"])
def test_p4_base_filters_have_he_variance_over_the_fan_in_of_the_correlation(layer, fan_in):
    # He init of psi: N(0, 2 / fan_in), fan_in = K^2 C_in for the lift and 4 K^2 C_in for a p4 layer (every
    # output sums over 4 K^2 C_in input entries). Sample std of n Gaussians: relative error 1 / sqrt(2 n),
    # 1.5% for the 2304 entries of the p4 filter, 2.9% for the lift's 576; 0.15 is 5 of those and far from
    # the factor 2 of a fan-in off by 4.
    psi = layer.params["W"]
    assert psi.std() == pytest.approx(float(np.sqrt(2.0 / fan_in)), rel=float(5 / np.sqrt(2 * psi.size)))


def _p4_cnn_layout(C, n_classes, width, stages, K, K1):
    """The layers of p4_cnn as its Notes list them, with their parameter counts (4 K^2 w w' + w' per p4
    correlation between w and w' p4 channels, K1^2 C w + w for the lift, c K + K for the linear layer)."""
    layers = [("P4LiftConv2d", K1 * K1 * C * width + width), ("Activation", 0)]
    c = width
    for s in range(max(stages, 1)):
        w = width * 2 ** s
        if s > 0:
            layers += [("P4Conv2d", 4 * K * K * c * w + w), ("Activation", 0)]
        layers += [("P4Conv2d", 4 * K * K * w * w + w), ("Activation", 0)]
        if s < stages:
            layers.append(("MaxPool2d", 0))
        c = w
    return layers + [("P4GroupPool", 0), ("GlobalAvgPool2d", 0), ("Linear", c * n_classes + n_classes)]


@pytest.mark.parametrize("width, stages, K, K1", [(2, 2, 3, 3), (1, 1, 1, 1), (3, 0, 3, 5)])
def test_p4_cnn_layers_and_parameter_counts_follow_its_notes(width, stages, K, K1):
    # lift, then per stage s (w = width 2^s) P4Conv2d(w_{s-1}, w) for s > 0 and P4Conv2d(w, w), each
    # followed by rho, and a 2x2 pooling; group pooling, GAP, linear. Includes the smallest network
    # (width 1, 1x1 filters) and stages = 0 (one stage, no pooling).
    net = p4_cnn((8, 8, 2), 3, width=width, stages=stages, kernel_size=K, first_kernel_size=K1, rng=0)
    got = [(type(layer).__name__, sum(v.size for v in layer.named_parameters().values())) for layer in net.layers]
    assert got == _p4_cnn_layout(2, 3, width, stages, K, K1)


# ----------------------------------------------------------------------------- derivatives

def _layers(rng):
    lift = P4LiftConv2d(2, 3, 3, padding=1, rng=rng)
    lift.params["b"][...] = rng.standard_normal(3)
    conv = P4Conv2d(2, 3, 3, padding=1, rng=rng)
    conv.params["b"][...] = rng.standard_normal(3)
    even = P4Conv2d(2, 2, 2, padding=0, rng=rng, bias=False)
    return {"lift": (lift, (2, 5, 5, 2)), "p4": (conv, (2, 5, 5, 8)), "p4_even_valid": (even, (2, 5, 4, 8)),
            "pool_max": (P4GroupPool("max"), (2, 4, 4, 8)), "pool_mean": (P4GroupPool("mean"), (2, 4, 4, 8))}


LAYERS = ["lift", "p4", "p4_even_valid", "pool_max", "pool_mean"]


@pytest.mark.parametrize("name", LAYERS)
def test_p4_layer_backward_matches_central_differences(name):
    rng = np.random.default_rng(20)
    layer, shape = _layers(rng)[name]
    check_central_differences(layer, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("name", LAYERS)
def test_p4_layer_jvp_matches_central_differences(name):
    rng = np.random.default_rng(21)
    layer, shape = _layers(rng)[name]
    check_jvp(layer, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("name", ["lift", "p4"])
def test_p4_layer_taylor_remainder_is_second_order(name):
    # bilinear in (x, psi): the remainder is h^2 <r, conv(vx, A(vpsi))>, slope 2 within 0.1
    rng = np.random.default_rng(22)
    layer, shape = _layers(rng)[name]
    slope, _ = taylor_slope(layer, rng.standard_normal(shape), rng)
    assert abs(slope - 2) < 0.1


def test_p4_cnn_backward_and_jvp_match_central_differences():
    rng = np.random.default_rng(23)
    net = p4_cnn((4, 4, 1), 3, width=2, stages=1, rng=rng)
    x = rng.standard_normal((2, 4, 4, 1))
    check_central_differences(net, x, rng)
    check_jvp(net, x, rng)


# ----------------------------------------------------------------------------- Gabor model

def _gabor_numpy(K, C, D, xi, u0, phi):
    """C exp(-(u - u0)^T D (u - u0)) cos(xi . (u - u0) + phi) on a centred K x K grid, written out."""
    c = (K - 1) / 2
    g = np.zeros((K, K))
    for i in range(K):
        for j in range(K):
            d = np.array([i - c, j - c]) - u0
            g[i, j] = C * np.exp(-d @ D @ d) * np.cos(xi @ d + phi)
    return g


def test_gabor_filter_is_the_seed_model():
    D, xi = np.array([[0.2, 0.05], [0.05, 0.1]]), np.array([0.9, -0.4])
    ref = _gabor_numpy(5, 1.5, D, xi, np.array([0.5, -0.25]), 0.3)
    np.testing.assert_allclose(gabor_filter((5, 5), 1.5, D, xi, center=(0.5, -0.25), phase=0.3), ref,
                               rtol=0, atol=1e-14)
    # the complex model, with u0 = 0 and phi = 0: psi(u) = C exp(-u^T D u) exp(i u^T xi), whose imaginary
    # part C exp(-u^T D u) sin(u^T xi) is -C exp(-u^T D u) cos(u^T xi + pi / 2)
    psi = _gabor_numpy(5, 1.5, D, xi, np.zeros(2), 0.0) - 1j * _gabor_numpy(5, 1.5, D, xi, np.zeros(2), np.pi / 2)
    np.testing.assert_allclose(gabor_filter((5, 5), 1.5, D, xi, real=False), psi, rtol=0, atol=1e-14)


def test_fit_gabor_recovers_a_gabor_filter():
    # a noiseless Gabor filter: residual at the optimiser's tolerance (1e-8 relative, measured 4e-11) and
    # its parameters back to 1e-6 (up to the symmetry (xi, phi) -> (-xi, -phi) that fit_gabor fixes by xi_1 >= 0)
    D, xi, u0, phi = np.array([[0.15, 0.05], [0.05, 0.3]]), np.array([1.0, -0.6]), np.array([0.3, -0.2]), 0.7
    f = _gabor_numpy(5, 2.0, D, xi, u0, phi)
    fit = fit_gabor(f)
    assert fit.residual < 1e-8
    np.testing.assert_allclose(fit.C, 2.0, atol=1e-6)
    np.testing.assert_allclose(fit.D, D, atol=1e-6)
    np.testing.assert_allclose(fit.center, u0, atol=1e-6)
    np.testing.assert_allclose(fit.xi, xi, atol=1e-6)
    np.testing.assert_allclose(fit.phase, phi, atol=1e-6)
    np.testing.assert_allclose(fit.model, f, atol=1e-8)


@pytest.mark.parametrize("c", [1e-300, 1e-170, 1e160, 1e300])
def test_fit_gabor_of_a_scaled_gabor_filter_is_the_scaled_fit(c):
    # g is linear in C: the fit of c f is (c C, D, xi, u_0, phi). |f| underflowed to 0 for c = 1e-170
    # ('f is zero') and overflowed for c = 1e160 (a NaN residual; the starting point returned, xi = (0.98,
    # -0.59) for (1.0, -0.6)).
    # Tolerances as for c = 1.
    D, xi, u0, phi = np.array([[0.15, 0.05], [0.05, 0.3]]), np.array([1.0, -0.6]), np.array([0.3, -0.2]), 0.7
    f = _gabor_numpy(5, 2.0, D, xi, u0, phi)
    fit = fit_gabor(c * f)
    assert fit.residual < 1e-8
    np.testing.assert_allclose(fit.C / c, 2.0, atol=1e-6)
    np.testing.assert_allclose(fit.D, D, atol=1e-6)
    np.testing.assert_allclose(fit.center, u0, atol=1e-6)
    np.testing.assert_allclose(fit.xi, xi, atol=1e-6)
    np.testing.assert_allclose(fit.phase, phi, atol=1e-6)
    np.testing.assert_allclose(fit.model / c, f, atol=1e-8)

@pytest.mark.parametrize("xi", [(0.8, 0.0), (0.0, 0.8)])
def test_fit_gabor_recovers_an_axis_aligned_gabor_filter(xi):
    # A wide isotropic envelope (D = 0.2 I) and a plane wave along one axis: most of the filter's DFT sits at
    # frequency 0 (sum_u f = 0.84 sum_u |f| here), so the "peak" start was the blob start xi = 0, where with the
    # phases 0 and pi the model is even in xi and the frequency never moved: residual 0.51 and 0.07, xi
    # returned as (0, 0) and (0.02, -0.56). Tolerances as for test_fit_gabor_recovers_a_gabor_filter; the
    # sign of (xi, phi) is fixed by xi_1 >= 0, which at xi_1 = 0 (to rounding) leaves either sign.
    D, xi, phi = 0.2 * np.eye(2), np.array(xi), 0.4
    f = _gabor_numpy(5, 1.0, D, xi, np.zeros(2), phi)
    fit = fit_gabor(f)
    assert fit.residual < 1e-8
    assert fit.xi[0] >= 0.0  # the convention, however small xi_1
    sign = 1.0 if fit.xi @ xi > 0 else -1.0
    np.testing.assert_allclose(fit.xi, sign * xi, atol=1e-6)
    np.testing.assert_allclose(fit.phase, np.mod(sign * phi, 2 * np.pi), atol=1e-6)
    np.testing.assert_allclose(fit.D, D, atol=1e-6)
    np.testing.assert_allclose(fit.center, 0.0, atol=1e-6)
    np.testing.assert_allclose(fit.C, 1.0, atol=1e-6)


@pytest.mark.parametrize("u0", [(-1.8, 1.8), (1.8, -1.8)])
def test_fit_gabor_recovers_a_gabor_filter_centred_near_the_edge(u0):
    # u_0 ranges over the whole grid, [-(K - 1) / 2, (K - 1) / 2]^2 = [-2, 2]^2 for K = 5: a centre 0.2 pixels
    # from two edges is recovered (tolerances as for test_fit_gabor_recovers_a_gabor_filter)
    D, xi, phi = np.array([[0.15, 0.05], [0.05, 0.3]]), np.array([1.0, -0.6]), 0.7
    fit = fit_gabor(_gabor_numpy(5, 2.0, D, xi, np.array(u0), phi))
    assert fit.residual < 1e-6
    np.testing.assert_allclose(fit.center, u0, atol=1e-6)


@pytest.mark.parametrize("u0", [(-3.0, 0.0), (3.0, 0.0), (0.0, -3.0), (0.0, 3.0)])
def test_fit_gabor_keeps_the_centre_inside_the_grid(u0):
    # A Gabor filter centred a pixel beyond one edge of the 5x5 grid: the fitted centre stays in [-2, 2]^2
    # (the bound of the notes), so the fit is not exact (a centre at u0 would be)
    D, xi, phi = np.array([[0.15, 0.05], [0.05, 0.3]]), np.array([1.0, -0.6]), 0.7
    fit = fit_gabor(_gabor_numpy(5, 2.0, D, xi, np.array(u0), phi))
    assert np.all(np.abs(fit.center) <= 2.0)
    assert fit.residual > 1e-3


@pytest.mark.parametrize("D, xi, u0, phi, C", [
    ([[0.48, -0.13], [-0.13, 0.09]], (0.79, 2.88), (-0.26, 0.11), 3.73, 1.77),
    ([[0.29, 0.34], [0.34, 0.93]], (2.6, -2.73), (0.67, -0.24), 2.05, 1.99),
    ([[0.37, -0.14], [-0.14, 0.38]], (2.83, -2.95), (-0.87, -0.94), 4.18, 0.83),
])
def test_fit_gabor_recovers_gabor_filters_of_high_frequency(D, xi, u0, phi, C):
    # Frequencies near Nyquist with narrow or elongated envelopes, drawn at random: the fit with starts in
    # the phase stopped in local minima with residuals 0.66, 0.19 and 0.27. Tolerances as for
    # test_fit_gabor_recovers_a_gabor_filter (measured residuals 3e-16 to 6e-16)
    D, xi, u0 = np.array(D), np.array(xi), np.array(u0)
    fit = fit_gabor(_gabor_numpy(5, C, D, xi, u0, phi))
    assert fit.residual < 1e-8
    np.testing.assert_allclose(fit.xi, xi, atol=1e-6)
    np.testing.assert_allclose(fit.phase, phi, atol=1e-6)
    np.testing.assert_allclose(fit.D, D, atol=1e-6)
    np.testing.assert_allclose(fit.center, u0, atol=1e-6)
    np.testing.assert_allclose(fit.C, C, atol=1e-6)


@pytest.mark.parametrize("K", [4, 5])
def test_fit_gabor_model_is_the_gabor_function_of_the_returned_parameters(K):
    # xi is free during the fit and returned in [-pi, pi]^2 (xi_1 >= 0) with the phase moved to match:
    # on a grid of offsets s + integers (s = 1/2 for an even side) xi + 2 pi e_k is the same model with the
    # phase phi + 2 pi (s_k - u0_k). White noise drives xi anywhere: the returned parameters must give the
    # returned model, evaluated independently (to 1e-14 C: noise is fitted with C up to 2e6 here times a
    # cosine near zero on the grid, where the phase's rounding is multiplied by C; measured below 2e-17 C)
    rng = np.random.default_rng(5)
    for f in rng.standard_normal((4, K, K)):
        fit = fit_gabor(f)
        assert np.all(np.abs(fit.xi) <= np.pi) and fit.xi[0] >= 0.0
        assert 0.0 <= fit.phase < 2 * np.pi
        np.testing.assert_allclose(_gabor_numpy(K, fit.C, fit.D, fit.xi, fit.center, fit.phase), fit.model,
                                   rtol=0, atol=1e-14 * max(1.0, fit.C))
        np.testing.assert_allclose(np.linalg.norm(f - fit.model) / np.linalg.norm(f), fit.residual, rtol=1e-12)


def test_gabor_jacobian_is_the_derivative_of_the_residual_where_it_vanishes():
    # Kaufman's variable-projection Jacobian drops the motion of the projection, a term proportional to the
    # residual: at a Gabor filter's own parameters it is the exact derivative of r(q) = P(q) f - f, checked
    # by central differences of the residual (step 1e-6: error ~1e-11 with entries of order 1)
    from shallow.cnn.group import _gabor_basis, _gabor_jacobian, _grid

    ui, uj = _grid((5, 6))
    q = np.array([0.5, 0.2, 0.4, 1.1, -0.7, 0.3, -0.2])
    basis = _gabor_basis(q, ui, uj)
    fv = basis @ np.array([0.8, -0.3])

    def residual(p):
        B = _gabor_basis(p, ui, uj)
        return B @ np.linalg.lstsq(B, fv, rcond=None)[0] - fv

    h = 1e-6
    numeric = np.stack([(residual(q + h * e) - residual(q - h * e)) / (2 * h) for e in np.eye(7)], axis=1)
    np.testing.assert_allclose(_gabor_jacobian(q, ui, uj, fv), numeric, rtol=0, atol=1e-8)


@pytest.mark.parametrize("K", [4, 5])
def test_canonical_frequency_gives_the_same_model_on_the_grid(K):
    # xi anywhere in [-4 pi, 4 pi]^2 is brought into [-pi, pi]^2 (xi_1 >= 0) with the phase that keeps
    # cos(xi^T (u - u_0) + phi) at every pixel of a K x K grid (offsets 1/2 + integers for K even);
    # evaluated by the written-out model, to rounding of arguments up to 4 pi * 4 (1e-13)
    from shallow.cnn.group import _canonical_frequency

    rng = np.random.default_rng(K)
    D = np.array([[0.15, 0.05], [0.05, 0.3]])
    for _ in range(20):
        xi, u0, phi = rng.uniform(-4 * np.pi, 4 * np.pi, 2), rng.uniform(-1, 1, 2), rng.uniform(-10, 10)
        xi2, phi2 = _canonical_frequency(xi, phi, u0, (K, K))
        assert np.all(np.abs(xi2) <= np.pi) and xi2[0] >= 0 and 0 <= phi2 < 2 * np.pi
        np.testing.assert_allclose(_gabor_numpy(K, 1.0, D, xi2, u0, phi2), _gabor_numpy(K, 1.0, D, xi, u0, phi),
                                   rtol=0, atol=1e-13)


def test_fit_gabor_envelope_stays_within_its_bounds():
    # D = R^T R with |R_ij| <= 4, so trace D = |R|_F^2 <= 48: white noise drove a free R to about 30 (C up
    # to 1e101 |f|, the far tail of a one-pixel envelope). The bound on D does not bound C (a bounded
    # envelope can still be e^-700 at a far pixel): C < 1e20 |f| only says that the 1e101 is gone; moving
    # the seeds (tools/seedshift.py) gave C up to 1.4e9 |f|, above the 1e8 this test asked before
    rng = np.random.default_rng(24)
    for f in rng.standard_normal((6, 5, 5)):
        fit = fit_gabor(f)
        assert np.trace(fit.D) <= 48 + 1e-9 and fit.C < 1e20 * np.abs(f).max()


def test_fit_gabor_leaves_most_of_white_noise_unexplained():
    # 9 parameters cannot fit 25 independent pixels: residuals of white-noise filters stay large
    # (a linear 9-parameter model leaves sqrt(16/25) = 0.8; measured mean 0.69 over 20 draws, min 0.52)
    rng = np.random.default_rng(24)
    res = [fit_gabor(rng.standard_normal((5, 5))).residual for _ in range(6)]
    assert min(res) > 0.4 and np.mean(res) > 0.55


# ----------------------------------------------------------------------------- rotations of images

def test_rotate_images_by_multiples_of_90_is_rot90_and_by_small_angles_is_continuous():
    X = np.random.default_rng(25).standard_normal((2, 8, 8, 1))
    np.testing.assert_array_equal(rotate_images(X, 90), np.rot90(X, 1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_images(X, -180), np.rot90(X, 2, axes=(1, 2)))
    # the warp path agrees with rot90 in the limit (bilinear interpolation; the snap of affine_warp
    # acts within 1e-9 pixels, so 90 - 1e-6 degrees is off by ~1e-7 pixels times the gradient)
    np.testing.assert_allclose(rotate_images(X, 90 - 1e-6), np.rot90(X, 1, axes=(1, 2)), atol=1e-5)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("angle", [1e20, -1e17, 3.6e16 + 45])
def test_rotate_images_by_a_huge_angle_is_the_rotation_by_the_angle_mod_360(angle):
    # The angle as an exact integer mod 360 (Python ints: 1e20 -> 280, -1e17 -> 80, 3.6e16 + 45 -> 44).
    # angle / 90 rounded to an integer float beyond 2^53, and 1e20 degrees were taken as a quarter turn;
    # radians(-angle) had lost all its digits (1e17: 0.71 off on pixels of size 1).
    x = np.random.default_rng(20).standard_normal((2, 6, 6, 1))
    expected = rotate_images(x, float(int(angle) % 360))
    np.testing.assert_allclose(rotate_images(x, angle), expected, rtol=0, atol=EXACT)

def test_bad_inputs_raise_clear_errors():
    lift, conv = P4LiftConv2d(1, 2, 3), P4Conv2d(2, 2, 3)
    with pytest.raises(ValueError, match="expects in_channels = 1"):
        lift(np.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match="4 c \\+ s"):
        conv(np.zeros((1, 5, 5, 2)))
    with pytest.raises(ValueError, match="shape \\(N, H, W, C\\)"):
        conv(np.zeros((5, 5, 8)))
    with pytest.raises(ValueError, match="even kernel_size=4"):
        P4Conv2d(2, 2, 4, padding="same")
    with pytest.raises(ValueError, match="kernel_size must be an integer"):
        P4Conv2d(2, 2, (3, 5))
    with pytest.raises(ValueError, match="padding"):
        P4LiftConv2d(1, 2, 3, padding=-1)
    with pytest.raises(ValueError, match="mode must be one of max, mean"):
        P4GroupPool("min")
    with pytest.raises(ValueError, match="p4 feature map"):
        P4GroupPool()(np.zeros((1, 3, 3, 6)))
    with pytest.raises(ValueError, match="p4 feature map"):
        rotate_p4(np.zeros((1, 3, 3, 6)))
    with pytest.raises(ValueError, match="must be square"):
        p4_cnn((8, 6, 1), 10)
    with pytest.raises(ValueError, match="not divisible by 2\\^stages"):
        p4_cnn((6, 6, 1), 10, stages=2)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        p4_cnn((8, 8, 1), 10, kernel_size=4)
    with pytest.raises(ValueError, match="shift must be a pair"):
        translate(np.zeros((1, 4, 4, 1)), 1)
    with pytest.raises(ValueError, match="tau must be a displacement field of shape"):
        deform_nearest(np.zeros((1, 4, 4, 1)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="k must have shape"):
        circular_convolution(np.zeros((1, 4, 4, 2)), np.zeros((4, 4, 1, 1)))
    with pytest.raises(ValueError, match=r"shape must be \(H, W\) or \(H, W, C\), got \(4,\)"):
        convolution_kernel(lambda X: X, (4,))
    with pytest.raises(ValueError, match="op must map a batch"):
        convolution_kernel(lambda X: X[:, :2], (4, 4, 1))
    with pytest.raises(ValueError, match="f must be a 2-D filter"):
        fit_gabor(np.zeros(5))
    with pytest.raises(ValueError, match="f is zero"):
        fit_gabor(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="angle must be a finite number"):
        rotate_images(np.zeros((1, 4, 4, 1)), float("nan"))


@pytest.mark.parametrize("k, match", [
    (np.full((4, 4, 1, 2), 1j), "k must be real"),  # the imaginary part used to be dropped silently
    (np.full((4, 4, 1, 2), np.nan), "k contains 32 NaN"),
    ("kernel", "k must be an array of real numbers"),
])
def test_circular_convolution_refuses_a_complex_nan_or_text_kernel(k, match):
    with pytest.raises(ValueError, match=match):
        circular_convolution(np.zeros((1, 4, 4, 1)), k)


@pytest.mark.parametrize("tau, match", [
    (np.full((4, 4, 2), 1j), "tau must be real"),  # the imaginary part used to be dropped silently
    ("field", "tau must be an array of real numbers"),
    (np.full((4, 4, 2), np.inf), "tau contains 32 NaN or infinite"),
])
def test_deform_nearest_refuses_a_complex_or_text_field(tau, match):
    with pytest.raises(ValueError, match=match):
        deform_nearest(np.zeros((1, 4, 4, 1)), tau)


def test_deform_nearest_refuses_displacements_beyond_float64_pixel_resolution():
    # tau = 4e30 pixels overflowed the int64 cast: garbage indices with only a RuntimeWarning.
    tau = np.zeros((4, 4, 2))
    tau[..., 0] = 4e30
    with pytest.raises(ValueError, match=r"tau has a displacement of 4e\+30 pixels, beyond 2\^52"):
        deform_nearest(np.zeros((1, 4, 4, 1)), tau)


@pytest.mark.parametrize("call", [
    lambda: convolution_kernel(np.eye(4), (4, 4, 1)),
    lambda: convolution_defect("identity", (4, 4, 1)),
    lambda: commutator_defect(lambda X: X, 3, np.zeros((1, 4, 4, 1))),
    lambda: commutes_with_translations(None, (4, 4, 1)),
])
def test_operator_probes_refuse_an_operator_that_is_not_callable(call):
    with pytest.raises(TypeError, match="(op|L) must be a callable map of image batches"):
        call()


@pytest.mark.parametrize("kwargs, match", [
    ({"shape": 5}, "shape must be a pair"),
    ({"C": float("nan")}, "C must be a finite real number"),
    ({"C": 1j}, "C must be a finite real number"),
    ({"phase": "0"}, "phase must be a finite real number"),
    ({"D": np.eye(2) * 1j}, "D must be real"),
    ({"D": -np.eye(2)}, "D must be positive semi-definite"),
    ({"xi": np.array([np.inf, 0.0])}, "xi contains 1 NaN"),
    ({"center": 1.0}, r"center must be a pair \(rows, columns\)"),
    ({"center": (np.nan, 0.0)}, "center contains 1 NaN"),
])
def test_gabor_filter_refuses_bad_parameters(kwargs, match):
    # NaN amplitudes, phases and centres came back as NaN filters, complex D lost its imaginary part,
    # a negative-definite D gave a growing "envelope", shape=5 failed in a tuple unpacking.
    args = {"shape": (5, 5), "C": 1.0, "D": np.eye(2), "xi": np.zeros(2)}
    args.update(kwargs)
    shape, C, D, xi = args.pop("shape"), args.pop("C"), args.pop("D"), args.pop("xi")
    with pytest.raises(ValueError, match=match):
        gabor_filter(shape, C, D, xi, **args)


@pytest.mark.parametrize("f, match", [
    (np.ones((5, 5)) * (1 + 1j), "f must be real"),  # the imaginary part used to be dropped silently
    ("filter", "f must be an array of real numbers"),
])
def test_fit_gabor_refuses_a_complex_or_text_filter(f, match):
    with pytest.raises(ValueError, match=match):
        fit_gabor(f)


@pytest.mark.parametrize("x, match", [
    (None, r"^x must be a numpy or cupy array, got NoneType"),
    (np.ones((1, 2, 2, 4), dtype=complex), r"^x must hold real numbers"),
])
def test_group_pool_refuses_a_non_real_input(x, match):
    # None failed with "'NoneType' object has no attribute 'ndim'"; a complex map passed through
    with pytest.raises(ValueError, match=match):
        P4GroupPool().forward(x)


def test_deform_nearest_with_a_constant_fractional_field_is_the_translation_by_the_nearest_integers():
    # L_tau x(u) = x(u - tau) with u - tau rounded to the nearest pixel (module notes): tau = (0.3, -1.6)
    # sends each pixel to the source u - (0, -2), the translation by (0, -2) (np.roll), not by the floor
    # (1, -1) nor by the truncation (0, -1) of the displacement
    X = np.random.default_rng(8).standard_normal((2, 6, 7, 1))
    tau = np.broadcast_to(np.array([0.3, -1.6]), (6, 7, 2))
    np.testing.assert_array_equal(deform_nearest(X, tau), np.roll(X, (0, -2), axis=(1, 2)))


def test_group_max_pooling_sends_the_gradient_of_tied_rotations_to_the_first():
    # Notes of P4GroupPool: at a tie the first maximising rotation s takes the gradient (backward) and
    # carries the tangent (jvp), so that the two stay adjoint. Reference: nested loops over (n, u, c)
    # with the first s of the largest value; entries drawn from {0, 1} make ties common.
    rng = np.random.default_rng(16)
    x = rng.integers(0, 2, size=(2, 3, 3, 8)).astype(np.float64)
    pool = P4GroupPool("max")
    y = pool.forward(x)
    dy = rng.standard_normal(y.shape)
    tx = rng.standard_normal(x.shape)
    expected_dx, expected_ty = np.zeros_like(x), np.zeros_like(y)
    for n, i, j, c in np.ndindex(*y.shape):
        values = [x[n, i, j, 4 * c + s] for s in range(4)]
        s = values.index(max(values))  # the first maximum
        expected_dx[n, i, j, 4 * c + s] = dy[n, i, j, c]
        expected_ty[n, i, j, c] = tx[n, i, j, 4 * c + s]
    assert (x.reshape(2, 3, 3, 2, 4).max(axis=4, keepdims=True) == x.reshape(2, 3, 3, 2, 4)).sum() > y.size
    np.testing.assert_array_equal(pool.backward(dy), expected_dx)  # selections: exact
    np.testing.assert_array_equal(pool.jvp(x, tx)[1], expected_ty)


def test_deform_nearest_with_a_constant_half_pixel_field_is_a_translation():
    # a constant field tau is the translation by its rounding (Notes): u - 1/2 rounds upwards to u, so
    # tau = (1/2, -1/2) is the translation by (0, -1). numpy's rint rounds ties to even and sent the
    # rows 0.5, 1.5, 2.5, 3.5 to 0, 2, 2, 4: a map that is no translation, whose commutator with a
    # convolution is of order 1
    X = np.random.default_rng(9).standard_normal((2, 6, 7, 1))
    tau = np.broadcast_to(np.array([0.5, -0.5]), (6, 7, 2))
    np.testing.assert_array_equal(deform_nearest(X, tau), np.roll(X, (0, -1), axis=(1, 2)))


def test_deform_nearest_rounds_just_below_half_a_pixel_down():
    # u - tau = 0.5 - 2^-54 (the double just below 1/2) is nearer to 0 than to 1: the source row 0.
    # floor(s + 1/2) would give 1 (s + 1/2 rounds to 1.0); the field moves row 0 only
    X = np.random.default_rng(10).standard_normal((1, 4, 3, 1))
    tau = np.zeros((4, 3, 2))
    tau[0, :, 0] = -(0.5 - 2.0**-54)
    np.testing.assert_array_equal(deform_nearest(X, tau), X)


def test_lemma_circular_convolution_commutes_with_translations_in_float32():
    # the lemma on float32 probes: a float32 convolution's commutator is float32 rounding (about 1e-7),
    # which the default tolerance of float32 probes (1e-4) counts as zero, while a multiplication by a
    # non-constant mask (commutator of order 1) still fails
    rng = np.random.default_rng(11)
    k = rng.standard_normal((6, 5, 2, 3))
    assert commutes_with_translations(lambda X: circular_convolution(X, k), (6, 5, 2), dtype=np.float32, rng=0)
    mask = np.arange(6.0, dtype=np.float32)[None, :, None, None]
    assert not commutes_with_translations(lambda X: X * mask, (6, 5, 1), dtype=np.float32, rng=0)
