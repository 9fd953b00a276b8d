"""Forward maps against independent references: scipy.signal.correlate, nested loops, closed forms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from shallow.backend import to_numpy
from shallow.cnn import AvgPool2d, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, Sequential, conv2d
from shallow.cnn.conv import conv_output_size
from shallow.cnn.layers import init_weight

METHODS = ["taps", "flat_im2col", "im2col"]


def conv_loops(x, W, b, stride, pads, dilation, groups):
    """The defining sum of a grouped, strided, dilated cross-correlation, by nested loops."""
    N, H, Wd, C = x.shape
    KH, KW, cg, Co = W.shape
    pt, pb, pl, pr = pads
    (sh, sw), (dh, dw) = stride, dilation
    xpad = np.zeros((N, H + pt + pb, Wd + pl + pr, C))
    xpad[:, pt:pt + H, pl:pl + Wd] = x
    Ho = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    Wo = (Wd + pl + pr - dw * (KW - 1) - 1) // sw + 1
    og = Co // groups
    y = np.zeros((N, Ho, Wo, Co))
    for n in range(N):
        for p in range(Ho):
            for q in range(Wo):
                for o in range(Co):
                    g = o // og
                    acc = b[o]
                    for i in range(KH):
                        for j in range(KW):
                            for c in range(cg):
                                acc += W[i, j, c, o] * xpad[n, sh * p + dh * i, sw * q + dw * j, g * cg + c]
                    y[n, p, q, o] = acc
    return y


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_conv2d_forward_matches_scipy_correlate(method, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 7, 3))
    conv = Conv2d(3, 5, 3, padding=padding, rng=rng, method=method)
    conv.params["b"][...] = rng.standard_normal(5)
    W, b = conv.params["W"], conv.params["b"]
    xpad = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    expected = np.stack([np.stack([sum(signal.correlate(xpad[n, :, :, c], W[:, :, c, o], mode="valid")
                                       for c in range(3)) + b[o] for o in range(5)], axis=-1)
                         for n in range(2)])
    # sums of 27 products of O(1) numbers: rounding a few eps
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-12, atol=1e-12)


CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0, 2, 1)),
    dict(kernel_size=3, dilation=(2, 1), padding=2),
    dict(kernel_size=3, padding=1, groups=3),
    dict(kernel_size=2, padding="same", dilation=2),
    dict(kernel_size=1, stride=3),
    dict(kernel_size=3, padding=3),  # padding wider than the kernel: the flat buffer cannot serve
]


@pytest.mark.parametrize("method", ["auto"] + METHODS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv2d_forward_matches_nested_loops(case, method):
    kw = CASES[case]
    if method in ("taps", "flat_im2col") and kw.get("stride", 1) != 1:
        pytest.skip("stride-1 formulation")
    rng = np.random.default_rng(1)
    conv = Conv2d(6, 9, rng=rng, method=method, **kw)
    conv.params["b"][...] = rng.standard_normal(9)
    x = rng.standard_normal((2, 8, 7, 6))
    expected = conv_loops(x, conv.params["W"], conv.params["b"], conv.stride, conv.padding, conv.dilation,
                          conv.groups)
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_conv2d_same_padding_keeps_the_size_and_puts_the_odd_pad_last():
    conv = Conv2d(1, 1, (2, 4), padding="same")
    assert conv.padding == (0, 1, 1, 2)
    assert conv.forward(np.zeros((1, 5, 6, 1))).shape == (1, 5, 6, 1)


def test_conv2d_float32_matches_float64():
    rng = np.random.default_rng(2)
    c64 = Conv2d(16, 8, 3, padding=1, rng=3)
    c32 = Conv2d(16, 8, 3, padding=1, rng=3, dtype=np.float32)
    x = rng.standard_normal((2, 6, 6, 16))
    y32 = c32.forward(x.astype(np.float32))
    assert y32.dtype == np.float32 and c32.params["W"].dtype == np.float32
    # 144 products per output: float32 rounding ~ sqrt(144) * 6e-8 relative to the terms' size
    np.testing.assert_allclose(y32, c64.forward(x), rtol=0, atol=2e-5 * np.abs(c64.forward(x)).max())


def test_conv2d_functional_form_equals_the_layer():
    rng = np.random.default_rng(4)
    x, W, b = rng.standard_normal((2, 6, 6, 4)), rng.standard_normal((3, 3, 2, 4)), rng.standard_normal(4)
    expected = conv_loops(x, W, b, (2, 2), (1, 1, 1, 1), (1, 1), 2)
    np.testing.assert_allclose(conv2d(x, W, b, stride=2, padding=1, groups=2), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("W, b, match", [
    (np.ones((3, 3, 2)), None, (r"W must be a float32 or float64 kernel of shape \(KH, KW, C_in / groups, C_out\), "
                                r"got shape \(3, 3, 2\)")),
    (np.ones((3, 3, 2, 4), dtype=int), None, "W must be a float32 or float64 kernel .* dtype int64"),
    (np.ones((3, 3, 2, 4)), np.ones(1), r"b must have shape \(C_out,\) = \(4,\) .* got shape \(1,\)"),
    (np.ones((3, 3, 2, 4)), np.ones(3), r"b must have shape \(C_out,\) = \(4,\) .* got shape \(3,\)"),
    (np.ones((3, 3, 2, 4)), 1.0, r"b must have shape \(C_out,\) = \(4,\) .* got shape \(\)"),
], ids=["W 3-d", "W int", "b (1,)", "b (3,)", "b scalar"])
def test_conv2d_functional_refuses_a_kernel_or_bias_of_another_shape_naming_it(W, b, match):
    # A 3-D W failed in a tuple unpacking ('not enough values to unpack'), an int W was refused as
    # 'dtype', b of shape (3,) failed inside numpy ('could not broadcast input array from shape (3,)
    # into shape (38,4)'), and b of shape (1,) was added to every output channel without a word.
    with pytest.raises(ValueError, match=match):
        conv2d(np.ones((2, 5, 5, 2)), W, b)

def test_conv2d_rejects_wrong_channels_naming_x():
    conv = Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="x has 1 channels"):
        conv.forward(np.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="x must be a batch of channels-last images"):
        conv.forward(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="too small"):
        conv.forward(np.zeros((1, 2, 2, 3)))


def test_conv2d_rejects_bad_configuration():
    with pytest.raises(ValueError, match="multiples of groups"):
        Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="needs stride 1"):
        Conv2d(3, 4, 3, stride=2, method="taps")
    with pytest.raises(ValueError, match="method must be one of"):
        Conv2d(3, 4, 3, method="fft")


@pytest.mark.parametrize("x, match", [
    ([[[[1.0]]]], "x must be a numpy or cupy array, got list"),
    (np.ones((1, 3, 3, 1), dtype=complex), "x must hold real numbers, got dtype complex128"),
], ids=["list", "complex"])
@pytest.mark.parametrize("layer", [Conv2d(1, 1, 1), MaxPool2d(1), AvgPool2d(1), GlobalAvgPool2d(), BatchNorm2d(1),
                                   Flatten(), Linear(1, 1)], ids=lambda layer: type(layer).__name__)
def test_layers_reject_a_list_or_complex_input_naming_x(layer, x, match):
    # a list failed with "'list' object has no attribute 'ndim'", a complex array with numpy's
    # "Cannot cast ufunc 'add' output from dtype('complex128')" (MaxPool2d returned complex maxima)
    if isinstance(layer, Linear) and not isinstance(x, list):
        x = x.reshape(9, 1)
    with pytest.raises(ValueError, match=match):
        layer.forward(x)


def test_conv2d_functional_rejects_nan_images_weights_and_bias_naming_them():
    # NaN went through to NaN outputs; a complex b lost its imaginary part with a ComplexWarning
    x, W = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        conv2d(np.where(np.arange(32).reshape(x.shape) == 5, np.nan, x), W)
    with pytest.raises(ValueError, match="W contains 72 NaN"):
        conv2d(x, W * np.nan)
    with pytest.raises(ValueError, match="b must be real"):
        conv2d(x, W, np.ones(4, dtype=complex))


def test_conv_output_size_rejects_a_zero_stride_naming_it():
    # ZeroDivisionError before; an int padding failed with "'int' object is not subscriptable"
    with pytest.raises(ValueError, match="stride must be an integer >= 1"):
        conv_output_size(5, 3, 0, (0, 0), 1)
    with pytest.raises(ValueError, match="padding must be a pair"):
        conv_output_size(5, 3, 1, 1, 1)


@pytest.mark.parametrize("size, kernel, dilation, padding, name", [
    (-1, 3, 1, (0, 0), "size must be an integer >= 0"), (5, 0, 1, (0, 0), "kernel must be an integer >= 1"),
    (5, 3, 0, (0, 0), "dilation must be an integer >= 1"), (5, 3, -1, (0, 0), "dilation must be an integer >= 1"),
    (5, 3, 1, (-1, 0), r"padding\[0\] must be an integer >= 0"), (5, 3, 1, (0, 1.5), r"padding\[1\] must be an integer")])
def test_conv_output_size_rejects_sizes_that_count_no_window(size, kernel, dilation, padding, name):
    # dilation 0 or -1 returned a size (6 and 8 for a 3-tap kernel on 5 samples) where no window exists
    with pytest.raises(ValueError, match=name):
        conv_output_size(size, kernel, 1, padding, dilation)


def test_conv_output_size_counts_the_windows_that_fit():
    # Against a direct count: start positions s = 0, stride, 2 stride, ... whose last tap
    # s + dilation (kernel - 1) lies inside the padded input.
    for size in range(0, 9):
        for kernel in range(1, 4):
            for stride in range(1, 4):
                for dilation in range(1, 3):
                    for pad in [(0, 0), (1, 0), (1, 2)]:
                        padded = size + pad[0] + pad[1]
                        count = sum(1 for s in range(0, padded, stride) if s + dilation * (kernel - 1) < padded)
                        assert max(conv_output_size(size, kernel, stride, pad, dilation), 0) == count


@pytest.mark.parametrize("make", [lambda: Conv2d(1, 1, 3, init=np.inf), lambda: Linear(1, 1, init=np.inf)],
                         ids=["Conv2d", "Linear"])
def test_layers_reject_an_infinite_init_std_naming_init(make):
    # init=inf gave infinite weights without a word
    with pytest.raises(ValueError, match="init must be"):
        make()


def test_init_weight_rejects_a_zero_fan_in_naming_it():
    # ZeroDivisionError ('float division by zero') for "he"; -1 gave "math domain error"
    with pytest.raises(ValueError, match="fan_in must be an integer >= 1"):
        init_weight((2, 2), 0, "he", 0, np.float64)


@pytest.mark.parametrize("make, name", [
    (lambda: Conv2d(1, 1, 1, bias="no"), "bias"), (lambda: Linear(1, 1, bias="no"), "bias"),
    (lambda: BatchNorm2d(1, affine="no"), "affine")], ids=["Conv2d", "Linear", "BatchNorm2d"])
def test_layers_reject_a_flag_that_is_not_a_bool_naming_it(make, name):
    # the string "no" was truthy: the layer was built with a bias (affine parameters)
    with pytest.raises(ValueError, match=f"{name} must be True or False"):
        make()


def test_batchnorm_rejects_an_infinite_eps_and_a_bool_momentum():
    # eps = inf made every output beta (0); momentum=True was read as 1
    with pytest.raises(ValueError, match="eps must be a positive finite number"):
        BatchNorm2d(2, eps=np.inf)
    with pytest.raises(ValueError, match="momentum must be in"):
        BatchNorm2d(2, momentum=True)


@pytest.mark.parametrize("pool", [MaxPool2d(2, padding=1), AvgPool2d(2)], ids=["max", "avg"])
def test_pooling_takes_integer_images_as_float64(pool):
    # AvgPool2d failed in numpy's casting ("Cannot cast ufunc 'multiply' output"), MaxPool2d cast its
    # -inf padding to int ("invalid value encountered in cast") and returned int64
    x = np.arange(16).reshape(1, 4, 4, 1)
    y = pool.forward(x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, pool.forward(x.astype(np.float64)))


# --------------------------------------------------------------------------- pooling
def pool_loops(x, k, s, p, op):
    N, H, W, C = x.shape
    fill = -np.inf if op == "max" else 0.0
    xpad = np.full((N, H + 2 * p, W + 2 * p, C), fill)
    xpad[:, p:p + H, p:p + W] = x
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    y = np.zeros((N, Ho, Wo, C))
    for a in range(Ho):
        for b in range(Wo):
            win = xpad[:, a * s:a * s + k, b * s:b * s + k, :]
            y[:, a, b] = win.max(axis=(1, 2)) if op == "max" else win.sum(axis=(1, 2)) / k ** 2
    return y


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
def test_pooling_forward_matches_nested_loops(k, s, p):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 6, 3))
    np.testing.assert_allclose(MaxPool2d(k, s, p).forward(x), pool_loops(x, k, s, p, "max"), rtol=0, atol=0)
    np.testing.assert_allclose(AvgPool2d(k, s, p).forward(x), pool_loops(x, k, s, p, "avg"), rtol=1e-14, atol=1e-15)


def test_global_average_pooling_is_the_spatial_mean():
    x = np.random.default_rng(6).standard_normal((3, 5, 4, 2))
    np.testing.assert_allclose(GlobalAvgPool2d().forward(x), x.reshape(3, 20, 2).sum(axis=1) / 20, rtol=1e-14)


@pytest.mark.parametrize("k, s, size", [(2, 2, 6), (3, 3, 6), (16, 16, 16)])
def test_maxpool_ties_go_to_the_first_maximum_of_each_window(k, s, size):
    # Integer images with many ties. The convention (module notes): the first maximum in row-major
    # order of the window receives the gradient and carries the tangent. Reference: np.argmax on
    # the flattened window, which returns the first occurrence. Independent check: the one-sided
    # difference along a direction that favours that entry among the tied ones. A 16 x 16 window
    # has 256 positions: more than the one-byte tap index of smaller windows holds.
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, size=(2, size, size, 2)).astype(np.float64)
    pool = MaxPool2d(k, s)
    y = pool.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = pool.backward(dy)
    expected = np.zeros_like(x)
    bonus = np.zeros_like(x)
    for n in range(2):
        for a in range(y.shape[1]):
            for b in range(y.shape[2]):
                for c in range(2):
                    win = x[n, a * s:a * s + k, b * s:b * s + k, c]
                    i, j = divmod(int(np.argmax(win)), k)
                    expected[n, a * s + i, b * s + j, c] += dy[n, a, b, c]
                    bonus[n, a * s + i, b * s + j, c] = 1.0
    np.testing.assert_array_equal(dx, expected)
    v = rng.uniform(0, 0.5, size=x.shape) + bonus  # the chosen entry grows fastest
    _, ty = pool.jvp(x, v)
    h = 1e-3
    np.testing.assert_allclose(ty, (pool.forward(x + h * v) - pool.forward(x)) / h, rtol=1e-9, atol=1e-12)
    # backward and jvp are adjoint at ties too
    assert abs(np.vdot(dy, ty) - np.vdot(dx, v)) < 1e-12 * np.abs(dy).sum() * np.abs(v).max()


@pytest.mark.parametrize("k, s, p", [(3, 1, 1), (2, 2, 1), (3, 2, 1), (5, 1, 2), (5, (1, 2), 2), (5, (2, 1), 2)])
def test_maxpool_window_of_minus_infinities_sends_its_gradient_to_its_first_entry_of_x(k, s, p):
    # The padding (-inf) is no entry of x: a window whose entries of x are all -inf ties with it,
    # and the first of those entries (row-major, as PyTorch) is the argmax. The padding came
    # first at the borders, and the gradient of those windows was lost. Reference: nested loops
    # over the entries of x in each window only.
    rng = np.random.default_rng(27)
    x = rng.standard_normal((2, 5, 6, 2))
    x[0] = -np.inf  # every window of image 0 holds only -inf
    x[1, :3, :3, 1] = -np.inf  # a corner of -inf in image 1
    pool = MaxPool2d(k, s, p)
    sh, sw = (s, s) if isinstance(s, int) else s  # strides along rows and columns
    y = pool.forward(x)
    dy = rng.standard_normal(y.shape)
    tx = rng.standard_normal(x.shape)
    expected_dx, expected_ty = np.zeros_like(x), np.zeros_like(y)
    for n, a, b, c in np.ndindex(*y.shape):
        entries = [(i, j) for i in range(a * sh - p, a * sh - p + k) for j in range(b * sw - p, b * sw - p + k)
                   if 0 <= i < x.shape[1] and 0 <= j < x.shape[2]]  # row-major, x's own entries only
        i, j = entries[int(np.argmax([x[n, i, j, c] for i, j in entries]))]  # argmax: the first maximum
        expected_dx[n, i, j, c] += dy[n, a, b, c]
        expected_ty[n, a, b, c] = tx[n, i, j, c]
    # dx sums the dy of up to (k / s)^2 = 25 windows, in another order: 25 eps max|dy|
    np.testing.assert_allclose(pool.backward(dy), expected_dx, rtol=0, atol=25 * 2.0 ** -52 * np.abs(dy).max())
    np.testing.assert_array_equal(pool.jvp(x, tx)[1], expected_ty)


# --------------------------------------------------------------------------- pooling with ceil_mode
def torch_pool_loops(x, k, s, p, op, ceil_mode):
    """PyTorch's CPU pooling kernels written out (aten/src/ATen/native: max_pool2d, avg_pool2d with
    count_include_pad=True), k, s, p pairs (rows, columns): the output size of ``pooling_output_shape``,
    then per window

        hstart = oh sH - padH,  hend = min(hstart + kH, H + padH),  pool_size = (hend - hstart)(wend - wstart),
        hstart, hend = max(hstart, 0), min(hend, H)  (columns alike),

    the average sum(x[hstart:hend, wstart:wend]) / pool_size, the max the first largest entry of x
    in row-major order (``val > maxval``). Also returns the (row, column) of that entry, for the max."""
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    N, H, W, C = x.shape

    def size(n, k, s, p):
        out = (n + 2 * p - (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1
        return out

    Ho, Wo = size(H, kh, sh, ph), size(W, kw, sw, pw)
    y = np.zeros((N, Ho, Wo, C))
    where = np.zeros((N, Ho, Wo, C, 2), dtype=int)
    for n, a, b, c in np.ndindex(N, Ho, Wo, C):
        h0, w0 = a * sh - ph, b * sw - pw
        h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)
        pool_size = (h1 - h0) * (w1 - w0)
        h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
        if op == "avg":
            y[n, a, b, c] = x[n, h0:h1, w0:w1, c].sum() / pool_size
        else:
            best, at = -np.inf, None
            for i in range(h0, h1):
                for j in range(w0, w1):
                    if at is None or x[n, i, j, c] > best:
                        best, at = x[n, i, j, c], (i, j)
            y[n, a, b, c], where[n, a, b, c] = best, at
    return y, where


@pytest.mark.parametrize("H, k, s, p, floor, ceil", [
    (5, 2, 2, 0, 2, 3),  # (5 - 2) / 2 = 1.5: floor 1 + 1, ceil 2 + 1
    (6, 3, 2, 1, 3, 4),  # (6 + 2 - 3) / 2 = 2.5; the 4th window starts at 6 < 6 + 1
    (5, 3, 3, 1, 2, 2),  # (5 + 2 - 3) / 3 = 4/3: ceil 2 + 1 = 3, but window 3 would start at 6 >= 5 + 1: 2
    (6, 2, 4, 1, 2, 2),  # (6 + 2 - 2) / 4 = 1.5: ceil 2 + 1 = 3, but window 3 would start at 8 >= 6 + 1: 2
    (6, 2, 2, 0, 3, 3),  # (6 - 2) / 2 = 2: an integer, the two modes agree
])
def test_ceil_mode_output_size_is_pytorchs_rounded_up_size_with_the_last_window_starting_in_the_input(H, k, s, p, floor,
                                                                                                    ceil):
    # PyTorch's pooling_output_shape: ceil((H + 2p - k) / s) + 1, less one when (out - 1) s >= H + p; counted by hand
    x = np.zeros((1, H, H, 1))
    for pool in (MaxPool2d, AvgPool2d):
        assert pool(k, s, p).forward(x).shape == (1, floor, floor, 1)
        assert pool(k, s, p, ceil_mode=True).forward(x).shape == (1, ceil, ceil, 1)


# on 7 x 8 images, windows past the padded input in all but (2, 3, 1), where the rule "the last window starts
# in the input or its first padding" removes them (8 / 3 rounded up, then one less)
@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 3, 0), (2, 3, 1), ((2, 3), (3, 2), (0, 1))])
def test_ceil_mode_pooling_matches_pytorchs_kernels_written_out(k, s, p):
    # max: the same entry, bitwise; average: the window's entries in the input or its padding divide the
    # sum (fewer than kh kw for the windows past the padding), applied here as a multiplication by the
    # reciprocal: a few ulps
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 7, 8, 3))
    y_max, _ = torch_pool_loops(x, pair(k), pair(s), pair(p), "max", True)
    y_avg, _ = torch_pool_loops(x, pair(k), pair(s), pair(p), "avg", True)
    np.testing.assert_array_equal(MaxPool2d(k, s, p, ceil_mode=True).forward(x), y_max)
    np.testing.assert_allclose(AvgPool2d(k, s, p, ceil_mode=True).forward(x), y_avg, rtol=1e-14, atol=0)


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 3, 1), (2, 3, 0)])
def test_ceil_mode_maxpool_sends_each_windows_gradient_to_its_first_maximum_of_x_even_when_all_are_minus_inf(k, s, p):
    # Ties (module notes): integer images with many ties, and an image of -inf whose every window ties
    # with the padding and with the part of the last windows past it: the first maximum among x's own
    # entries (PyTorch's kernel above) receives dy and carries the tangent.
    rng = np.random.default_rng(32)
    x = rng.integers(0, 2, size=(2, 7, 6, 2)).astype(np.float64)
    x[1, :, :, 1] = -np.inf
    pool = MaxPool2d(k, s, p, ceil_mode=True)
    y = pool.forward(x)
    assert y.shape != MaxPool2d(k, s, p).forward(x).shape  # some windows run past the padded input
    _, where = torch_pool_loops(x, (k, k), (s, s), (p, p), "max", True)
    dy, tx = rng.standard_normal(y.shape), rng.standard_normal(x.shape)
    expected_dx, expected_ty = np.zeros_like(x), np.zeros_like(y)
    for n, a, b, c in np.ndindex(*y.shape):
        i, j = where[n, a, b, c]
        expected_dx[n, i, j, c] += dy[n, a, b, c]
        expected_ty[n, a, b, c] = tx[n, i, j, c]
    # dx sums the dy of up to ceil(k / s)^2 = 4 windows, in another order: 4 eps max|dy|
    np.testing.assert_allclose(pool.backward(dy), expected_dx, rtol=0, atol=4 * 2.0 ** -52 * np.abs(dy).max())
    np.testing.assert_array_equal(pool.jvp(x, tx)[1], expected_ty)


@pytest.mark.parametrize("pool", [MaxPool2d, AvgPool2d])
def test_ceil_mode_equals_floor_mode_when_the_windows_fit_the_padded_input(pool):
    # (H + 2p - k) / s an integer: the same windows, so the same numbers, bitwise, forward and backward
    rng = np.random.default_rng(33)
    x = rng.standard_normal((2, 7, 9, 3))  # (7 + 2 - 3) / 2 = 3, (9 + 2 - 3) / 2 = 4
    floor, ceil = pool(3, 2, 1), pool(3, 2, 1, ceil_mode=True)
    y = floor.forward(x)
    np.testing.assert_array_equal(ceil.forward(x), y)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(ceil.backward(dy), floor.backward(dy))


def test_pooling_refuses_a_ceil_mode_that_is_not_a_bool():
    with pytest.raises(ValueError, match="ceil_mode"):
        MaxPool2d(2, ceil_mode="yes")


def test_maxpool_window_holding_a_nan_passes_no_gradient():
    # A NaN has no order: the window's output is NaN, and none of its entries is its maximum
    x = np.arange(32.0).reshape(1, 4, 4, 2)
    x[0, 1, 0, 1] = np.nan  # in the top-left window of channel 1
    pool = MaxPool2d(2)
    y = pool.forward(x)
    assert np.isnan(y[0, 0, 0, 1]) and np.isfinite(np.delete(y.ravel(), 1)).all()
    dx = pool.backward(np.ones_like(y))
    assert not dx[0, :2, :2, 1].any()
    assert dx[0, 1, 1, 0] == 1 and dx.sum() == y.size - 1  # every other window routes its gradient


def test_flatten_and_linear_map_an_empty_batch_to_an_empty_batch():
    # N = 0 images of shape (2, 2, 3): outputs (0, 3), input gradients (0, 2, 2, 3), and the weight
    # gradients are sums over no samples, 0. Flatten's reshape to (0, -1) was ambiguous and failed
    # in numpy ("cannot reshape array of size 0"), though Linear takes the (0, 12) batch.
    net = Sequential(Flatten(), Linear(12, 3, rng=0))
    y = net.forward(np.zeros((0, 2, 2, 3)))
    assert y.shape == (0, 3)
    assert net.backward(np.zeros((0, 3))).shape == (0, 2, 2, 3)
    assert not net.named_gradients()["1.W"].any() and not net.named_gradients()["1.b"].any()
    assert net.jvp(np.zeros((0, 2, 2, 3)), np.zeros((0, 2, 2, 3)))[1].shape == (0, 3)


# --------------------------------------------------------------------------- batch norm
def test_batchnorm_train_mode_standardises_each_channel_and_updates_running_statistics():
    rng = np.random.default_rng(8)
    x = 3.0 + 2.0 * rng.standard_normal((4, 5, 5, 3))
    bn = BatchNorm2d(3, momentum=0.25)
    y = bn.forward(x)
    flat = x.reshape(-1, 3)
    M = flat.shape[0]
    np.testing.assert_allclose(y.reshape(-1, 3).mean(axis=0), 0, atol=1e-14)
    # biased variance in the normalisation: var(y) = v / (v + eps)
    v = flat.var(axis=0)
    np.testing.assert_allclose(y.reshape(-1, 3).var(axis=0), v / (v + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.25 * flat.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(bn.buffers["running_var"], 0.75 + 0.25 * flat.var(axis=0, ddof=1), rtol=1e-14)
    assert M == 100


def test_batchnorm_eval_mode_uses_running_statistics():
    rng = np.random.default_rng(9)
    bn = BatchNorm2d(2)
    bn.buffers["running_mean"][...] = [1.0, -2.0]
    bn.buffers["running_var"][...] = [4.0, 0.25]
    bn.params["gamma"][...] = [2.0, 3.0]
    bn.params["beta"][...] = [0.5, -0.5]
    x = rng.standard_normal((3, 4, 4, 2))
    expected = (x - np.array([1.0, -2.0])) / np.sqrt(np.array([4.0, 0.25]) + 1e-5) * [2.0, 3.0] + [0.5, -0.5]
    np.testing.assert_allclose(bn.eval().forward(x), expected, rtol=1e-14)


def test_batchnorm_in_eval_mode_refuses_an_empty_batch_naming_x():
    # it failed inside the host passes ("cannot reshape array of size 0 into shape (0,newaxis,2)");
    # train mode already refused it (no batch statistics without values)
    bn = BatchNorm2d(2).eval()
    with pytest.raises(ValueError, match=r"x holds no values \(shape \(0, 3, 3, 2\)\): a batch needs N >= 1"):
        bn.forward(np.zeros((0, 3, 3, 2)))


@pytest.mark.parametrize("layout", ["contiguous", "grid view", "column-strided view", "mixed"])
@pytest.mark.parametrize("block", [None, 50])
def test_batchnorm_forward_and_backward_follow_the_formulas_in_any_memory_layout(layout, block, monkeypatch):
    # The host passes merge the (W, C) axes when they are contiguous and run block by block
    # (norm.BLOCK_ELEMENTS; 50 elements makes many blocks, the last one short). Reference: the
    # train-mode formulas of Ioffe & Szegedy (2015), Alg. 1 and Sec. 3, written with numpy on a
    # contiguous copy in float64.
    from shallow.cnn import norm
    if block is not None:
        monkeypatch.setattr(norm, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(10)
    N, H, W, C = 5, 4, 3, 2
    big = 1.5 + 2.0 * rng.standard_normal((N, H + 1, 2 * W + 1, C))
    grid, strided = big[:, :H, :W], big[:, :H, ::2][:, :, :W]
    x = {"contiguous": np.ascontiguousarray(grid), "grid view": grid, "column-strided view": strided,
         "mixed": grid}[layout]
    dy_big = rng.standard_normal(big.shape)
    dy = dy_big[:, :H, ::2][:, :, :W] if layout == "mixed" else np.ascontiguousarray(dy_big[:, :H, :W])
    bn = BatchNorm2d(C)
    bn.params["gamma"][...] = [0.5, -2.0]
    bn.params["beta"][...] = [1.0, 3.0]
    y = bn.forward(x)
    dx = bn.backward(dy)
    X, D = np.array(x).reshape(-1, C), np.array(dy).reshape(-1, C)
    mu, var = X.mean(axis=0), X.var(axis=0)
    xhat = (X - mu) / np.sqrt(var + 1e-5)
    g = np.array([0.5, -2.0])
    np.testing.assert_allclose(y.reshape(-1, C), g * xhat + [1.0, 3.0], rtol=1e-13, atol=1e-13)
    dxhat = D * g
    expected = (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0)) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(dx.reshape(-1, C), expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(bn.grads["gamma"], (D * xhat).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.grads["beta"], D.sum(axis=0), rtol=1e-12)
    assert y.shape == dx.shape == x.shape


def test_layers_keep_float32(xp):
    from shallow.backend import to_device
    from shallow.cnn import build_model
    device = "gpu" if xp is not np else "cpu"
    model = build_model("resnet", (8, 8, 1), 4, width=4, rng=0, dtype=np.float32).to(device)
    x = to_device(np.random.default_rng(10).standard_normal((3, 8, 8, 1)).astype(np.float32), device)
    y = model.forward(x)
    model.backward(xp.ones_like(y))
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.named_gradients().values())
    ref = build_model("resnet", (8, 8, 1), 4, width=4, rng=0, dtype=np.float64)
    y64 = ref.forward(to_numpy(x).astype(np.float64))
    # float32 rounding (eps32 ~ 1.2e-7) grows with the sums of each layer (<= 9 * 16 terms) and the
    # depth (~10 layers): ~1e-5 of the output's scale bounds it (measured 2.4e-7 at |y| ~ 1.5)
    np.testing.assert_allclose(to_numpy(y), y64, rtol=0, atol=1e-5 * np.abs(y64).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_accumulates_like_matmul_for_every_layout(dtype):
    from shallow.cnn._gemm import gemm
    rng = np.random.default_rng(11)
    A, B = rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for a in (A, np.asfortranarray(A), A.T.copy().T, np.repeat(A, 2, axis=1)[:, ::2]):  # C, F, F, strided
        for b in (B, B.T.copy().T):
            for beta in (0.0, 1.0, 0.5):
                out = rng.standard_normal((7, 3)).astype(dtype)
                expected = A.astype(np.float64) @ B + beta * out
                assert gemm(a, b, out, beta=beta) is out
                np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def test_gemm_of_an_empty_product_scales_out_by_beta():
    # k = 0: a @ b is the (p, q) zero matrix (an empty sum), so out <- beta * out exactly.
    from shallow.cnn._gemm import gemm
    out0 = np.random.default_rng(13).standard_normal((4, 3))
    for beta in (0.0, 1.0, 0.5):
        out = out0.copy()
        assert gemm(np.ones((4, 0)), np.ones((0, 3)), out, beta=beta) is out
        np.testing.assert_array_equal(out, beta * out0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_accumulates_into_out_without_a_temporary_of_its_size(dtype):
    # The point of gemm (its module's docstring): out <- a @ b + out in one BLAS call on the arrays themselves,
    # where numpy's out += a @ b first allocates a @ b, as large as out. tracemalloc sees numpy's allocations:
    # for C- and F-ordered operands the peak stays below 1/8 of out's size (it is a few hundred bytes), while
    # numpy's form, measured the same way, reaches out's size.
    import tracemalloc

    from shallow.cnn._gemm import gemm
    rng = np.random.default_rng(12)
    A, B = rng.standard_normal((256, 32)).astype(dtype), rng.standard_normal((32, 256)).astype(dtype)
    out = np.zeros((256, 256), dtype)

    def peak(update):
        tracemalloc.start()
        try:
            update()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def numpy_update():
        nonlocal out
        out += A @ B

    assert peak(numpy_update) >= out.nbytes
    for a, b in [(A, B), (np.asfortranarray(A), B), (A, np.asfortranarray(B))]:
        assert peak(lambda a=a, b=b: gemm(a, b, out, beta=1.0)) < out.nbytes / 8
    # four accumulations of 32 products of O(1) terms each: 4 * 32 eps * |A|_max |B|_max bounds the rounding
    bound = 4 * 32 * np.finfo(dtype).eps * np.abs(A).max() * np.abs(B).max()
    np.testing.assert_allclose(out, 4 * (A.astype(np.float64) @ B), rtol=0, atol=bound)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift=st.tuples(st.integers(-2, 2), st.integers(-2, 2)),
       dilation=st.sampled_from([1, 2]), method=st.sampled_from(METHODS))
def test_conv2d_commutes_with_translations_of_an_image_on_a_zero_background(seed, shift, dilation, method):
    # Content in the central 4 x 4 of a 16 x 16 zero image: the output's support (2 dilation pixels wider)
    # stays inside the image after a shift of <= 2, so zero padding acts as an infinite zero plane and
    # conv(shifted x) = shifted conv(x), up to the rounding of sums of the same terms.
    rng = np.random.default_rng(seed)
    x = np.zeros((2, 16, 16, 3))
    x[:, 6:10, 6:10] = rng.standard_normal((2, 4, 4, 3))
    conv = Conv2d(3, 4, 3, padding="same", dilation=dilation, bias=False, rng=rng, method=method)
    y = conv.forward(x)
    moved = conv.forward(np.roll(x, shift, axis=(1, 2)))
    np.testing.assert_allclose(moved, np.roll(y, shift, axis=(1, 2)), rtol=0, atol=1e-13 * np.abs(y).max())


@pytest.mark.parametrize("kw, method, expected", [
    ({"in_channels": 16, "kernel_size": 3, "padding": 1}, "auto", "taps"),  # C_in / G = 16
    ({"in_channels": 8, "kernel_size": 3, "padding": 1}, "auto", "flat_im2col"),  # C_in / G < 16
    ({"in_channels": 32, "kernel_size": 3, "padding": 1, "groups": 2}, "auto", "taps"),  # 16 per group
    ({"in_channels": 32, "kernel_size": 3, "padding": 1, "groups": 4}, "auto", "flat_im2col"),  # 8 per group
    ({"in_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1}, "auto", "im2col"),  # stride > 1
    ({"in_channels": 16, "kernel_size": 1}, "auto", "im2col"),  # one tap
    ({"in_channels": 16, "kernel_size": 3, "padding": (3, 3, 1, 1)}, "auto", "im2col"),  # Ho = 12 > H + 3
    ({"in_channels": 16, "kernel_size": 3, "padding": (1, 1, 3, 3)}, "auto", "im2col"),  # Wo = 12 > W + 3
    ({"in_channels": 16, "kernel_size": 3, "padding": (3, 1, 1, 1)}, "auto", "taps"),  # Ho = 10 <= H + max(3, 1)
    ({"in_channels": 16, "kernel_size": 3, "padding": (3, 2, 3, 2)}, "auto", "taps"),  # Ho = Wo = 11 = H + 3
    ({"in_channels": 16, "kernel_size": 3, "padding": (3, 3, 1, 1), "dilation": (2, 1)}, "auto", "taps"),  # Ho = 10
    ({"in_channels": 16, "kernel_size": 3, "padding": (3, 3, 1, 1)}, "taps", "im2col"),  # the buffer cannot hold it
    ({"in_channels": 16, "kernel_size": 3, "padding": 1}, "flat_im2col", "flat_im2col"),
    ({"in_channels": 4, "kernel_size": 3, "padding": 1}, "taps", "taps"),
])
def test_conv2d_computes_by_the_formulation_the_module_notes_choose(kw, method, expected):
    # Module notes: "auto" takes im2col for a stride > 1, a 1 x 1 kernel or a padding the flat
    # buffer cannot hold (the output grid, Ho = H + pt + pb - (KH - 1) rows, taller than the
    # H + max(pt, pb) rows of an image in the buffer; columns alike), flat_im2col below 16 input
    # channels per group, taps from 16 on; an explicit flat method falls back to im2col only where
    # the buffer cannot hold the padding. 8 x 8 inputs; the values are the other tests' concern.
    conv = Conv2d(out_channels=4, method=method, rng=0, **kw)
    x = np.zeros((1, 8, 8, kw["in_channels"]))
    assert conv._plan(x).method == expected


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_default_init_is_he_with_the_fan_in_of_one_groups_window(groups):
    # He et al. (2015), Eq. 10: W ~ N(0, 2 / fan_in), fan_in = KH KW C_in / G inputs per output.
    # 9 * 16 / G * 64 draws: the sample standard deviation has relative error 1 / sqrt(2 n) <= 1.5%,
    # and 6% is 4 of those (a fan_in off by a factor G = 2 moves it by 41%).
    W = Conv2d(16, 64, 3, groups=groups, rng=0).params["W"]
    assert W.shape == (3, 3, 16 // groups, 64)
    assert float(np.sqrt(np.mean(W ** 2))) == pytest.approx(np.sqrt(2 / (9 * 16 / groups)), rel=0.06)


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (3, 2), (2, 2), (5, 1), (4, 3)])
def test_conv2d_same_padding_keeps_the_size_for_odd_and_even_kernels(kernel_size, dilation):
    # padding="same" pads d (K - 1) in total, half on each side and the odd one at the bottom/right
    # (PyTorch's convention): the output has the input's size. Reference: the defining sum by nested
    # loops with the padding the layer reports.
    rng = np.random.default_rng(12)
    conv = Conv2d(2, 3, kernel_size, padding="same", dilation=dilation, rng=rng)
    pt, pb, pl, pr = conv.padding
    total = dilation * (kernel_size - 1)
    assert pt + pb == pl + pr == total and pb - pt == pr - pl == total % 2
    x = rng.standard_normal((1, 9, 10, 2))
    y = conv.forward(x)
    assert y.shape == (1, 9, 10, 3)
    expected = conv_loops(x, conv.params["W"], conv.params["b"], (1, 1), conv.padding, (dilation, dilation), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["auto"] + METHODS)
@pytest.mark.parametrize("pads", [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)])
def test_conv2d_padding_on_one_side_only_matches_nested_loops(pads, method):
    # a 4-tuple of padding pads each side by its own amount, zero on the other three
    rng = np.random.default_rng(13)
    conv = Conv2d(3, 2, 3, padding=pads, rng=rng, method=method)
    conv.params["b"][...] = rng.standard_normal(2)
    x = rng.standard_normal((2, 6, 5, 3))
    expected = conv_loops(x, conv.params["W"], conv.params["b"], (1, 1), pads, (1, 1), 1)
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("init, std", [("he", np.sqrt(2 / 50)), ("lecun", np.sqrt(1 / 50)), ("normal", 1.0),
                                       (0.3, 0.3), ("zeros", 0.0)])
def test_init_weight_draws_the_documented_centred_normal_law(init, std):
    # Module notes: "he" N(0, 2 / fan_in), "lecun" N(0, 1 / fan_in), "normal" N(0, 1), a float s
    # N(0, s^2), "zeros" zeros. Monte Carlo with 4000 draws: the root mean square has relative error
    # 1 / sqrt(2 n) = 1.1%, and 5% is 4.5 of those (a variance off by a factor 2 moves it by 41%); the
    # mean is within 4.5 standard errors std / sqrt(n) of 0.
    from shallow.cnn.layers import init_weight

    W = init_weight((40, 100), 50, init, 0, np.float64)
    assert W.shape == (40, 100) and W.dtype == np.float64
    if std == 0.0:
        assert not W.any()
        return
    assert float(np.sqrt(np.mean(W ** 2))) == pytest.approx(std, rel=0.05)
    assert abs(float(W.mean())) < 4.5 * std / np.sqrt(W.size)


def test_layers_refuse_a_sublayer_that_is_not_a_layer():
    # Sequential's layers and a residual block's body must be Layers; only the shortcut may be None
    # (the identity). Without the check, None or a number failed later inside forward.
    from shallow.cnn import Residual

    body = Linear(2, 2, rng=0)
    for make in (lambda: Sequential(body, None), lambda: Residual(None), lambda: Residual(body, 3)):
        with pytest.raises(TypeError, match="must be a Layer"):
            make()
    assert Residual(body, None).forward(np.ones((1, 2))).shape == (1, 2)  # None: the identity shortcut


def test_sequential_given_a_list_says_to_unpack_it():
    # Sequential([a, b]) (Keras's call) failed with "layers[0] must be a Layer, got list", which does
    # not say that the layers go one by one; the composition itself is unchanged.
    a, b = Linear(2, 3, rng=0), Linear(3, 1, rng=1)
    for wrapped in ([a, b], (a, b)):
        with pytest.raises(TypeError, match=r"one by one, Sequential\(\*layers\)"):
            Sequential(wrapped)
    x = np.ones((4, 2))
    assert np.array_equal(Sequential(a, b).forward(x), b.forward(a.forward(x)))


def test_linear_layer_of_one_output_is_the_affine_map():
    # d_out = 1 (a scalar regression head): y_n = sum_i x_ni W_i0 + b, by a Python sum
    rng = np.random.default_rng(14)
    layer = Linear(3, 1, rng=rng)
    layer.params["b"][...] = 0.5
    x = rng.standard_normal((4, 3))
    expected = [[sum(x[n, i] * layer.params["W"][i, 0] for i in range(3)) + 0.5] for n in range(4)]
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-14, atol=1e-15)


def test_dropout_in_eval_mode_passes_the_tangent_unchanged():
    # eval mode: y = x, so the forward-mode derivative is ty = tx; in train mode without a tangent, ty = None
    from shallow.cnn import Dropout

    rng = np.random.default_rng(15)
    x, tx = rng.standard_normal((2, 3, 3, 2)), rng.standard_normal((2, 3, 3, 2))
    drop = Dropout(0.5, rng=0)
    assert drop.jvp(x, None)[1] is None
    y, ty = drop.eval().jvp(x, tx)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ty, tx)


def test_batchnorm_running_statistics_are_exponential_averages_over_batches():
    # PyTorch's rule r <- (1 - m) r + m stat over two batches, from r_mean = 0 and r_var = 1:
    # r_mean = m (1 - m) mu_1 + m mu_2 and r_var = (1 - m)^2 + m (1 - m) v_1 + m v_2 (unbiased v),
    # with numpy's mean and var(ddof=1) of each batch as the statistics
    rng = np.random.default_rng(16)
    x1, x2 = 1.0 + rng.standard_normal((3, 4, 4, 2)), -2.0 + 3.0 * rng.standard_normal((3, 4, 4, 2))
    m = 0.3
    bn = BatchNorm2d(2, momentum=m)
    bn.forward(x1)
    bn.forward(x2)
    mu1, mu2 = x1.reshape(-1, 2).mean(axis=0), x2.reshape(-1, 2).mean(axis=0)
    v1, v2 = x1.reshape(-1, 2).var(axis=0, ddof=1), x2.reshape(-1, 2).var(axis=0, ddof=1)
    np.testing.assert_allclose(bn.buffers["running_mean"], m * (1 - m) * mu1 + m * mu2, rtol=1e-14)
    np.testing.assert_allclose(bn.buffers["running_var"], (1 - m) ** 2 + m * (1 - m) * v1 + m * v2, rtol=1e-14)


@pytest.mark.parametrize("C", [1, 3])
def test_batchnorm_train_mode_normalises_a_batch_of_one_image(C):
    # N = 1: the statistics run over the H W positions of the one image (M = 20 > 1 values per
    # channel); one channel (C = 1) is a valid layer too. Reference: Ioffe & Szegedy (2015), Alg. 1
    # and Sec. 3, written with numpy on the (M, C) matrix of the entries.
    rng = np.random.default_rng(17)
    x, dy = 2.0 + rng.standard_normal((1, 4, 5, C)), rng.standard_normal((1, 4, 5, C))
    bn = BatchNorm2d(C)
    y = bn.forward(x)
    dx = bn.backward(dy)
    X, D = x.reshape(-1, C), dy.reshape(-1, C)
    s = np.sqrt(X.var(axis=0) + 1e-5)
    xhat = (X - X.mean(axis=0)) / s
    np.testing.assert_allclose(y.reshape(-1, C), xhat, rtol=1e-13, atol=1e-13)
    expected = (D - D.mean(axis=0) - xhat * (D * xhat).mean(axis=0)) / s
    np.testing.assert_allclose(dx.reshape(-1, C), expected, rtol=1e-12, atol=1e-13)


def _window_loops(x, kernel, stride, pads, dy):
    """Max (first maximum of x's own entries, row-major) and average (padded zeros counted) pooling
    and their input gradients for dy, by loops over the windows of a (KH, KW) kernel."""
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, pads
    N, H, W, C = x.shape
    Ho, Wo = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    ymax, yavg = np.zeros((N, Ho, Wo, C)), np.zeros((N, Ho, Wo, C))
    dmax, davg = np.zeros_like(x), np.zeros_like(x)
    for n, a, b, c in np.ndindex(N, Ho, Wo, C):
        entries = [(i, j) for i in range(a * sh - ph, a * sh - ph + KH) for j in range(b * sw - pw, b * sw - pw + KW)
                   if 0 <= i < H and 0 <= j < W]
        values = [x[n, i, j, c] for i, j in entries]
        i, j = entries[int(np.argmax(values))]
        ymax[n, a, b, c] = x[n, i, j, c]
        dmax[n, i, j, c] += dy[n, a, b, c]
        yavg[n, a, b, c] = sum(values) / (KH * KW)
        for i, j in entries:
            davg[n, i, j, c] += dy[n, a, b, c] / (KH * KW)
    return ymax, dmax, yavg, davg


@pytest.mark.parametrize("stride, pads", [((2, 1), (1, 0)), ((1, 2), (0, 1)), ((2, 2), (1, 1))])
def test_pooling_of_rectangular_windows_with_padding_on_one_axis_matches_nested_loops(stride, pads):
    # (KH, KW) = (3, 2) windows, padded on one axis only: max pooling (with a corner of -inf, whose
    # windows tie with the padding and must pick x's first entry) and average pooling (the padded
    # zeros count in the divisor KH KW), forward and backward, against loops over the windows
    rng = np.random.default_rng(18)
    x = rng.standard_normal((2, 7, 6, 2))
    x[0, :3, :3, 0] = -np.inf
    for pool, k in ((MaxPool2d((3, 2), stride, pads), 0), (AvgPool2d((3, 2), stride, pads), 2)):
        y = pool.forward(np.where(np.isinf(x), 0.0, x) if k else x)
        dy = rng.standard_normal(y.shape)
        reference = _window_loops(np.where(np.isinf(x), 0.0, x) if k else x, (3, 2), stride, pads, dy)
        np.testing.assert_allclose(y, reference[k], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(pool.backward(dy), reference[k + 1], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("k, s, p, H, W", [(3, 1, 0, 6, 6), (2, 2, 0, 7, 6), (2, 2, 0, 6, 5), (3, 3, 1, 6, 6),
                                           (5, 5, 1, 7, 7), (2, 2, 0, 6, 6), (4, 4, 1, 4, 4), (4, 4, 1, 6, 6)])
def test_maxpool_backward_matches_nested_loops_when_windows_overlap_tile_or_leave_entries_over(k, s, p, H, W):
    # the input gradient when the windows overlap (each entry may win in several), tile the padded
    # input exactly, or leave rows or columns of x in no window (their gradient is 0)
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, H, W, 2))
    pool = MaxPool2d(k, s, p)
    y = pool.forward(x)
    dy = rng.standard_normal(y.shape)
    _, expected, _, _ = _window_loops(x, (k, k), (s, s), (p, p), dy)
    # a freed block of the padded gradient's size, full of NaN, which the allocator hands out again
    # for the layer's buffer: entries in no window must be written as 0, not left as found
    dirty = np.full((2, H + 2 * p, W + 2 * p, 2), np.nan)
    del dirty
    np.testing.assert_allclose(pool.backward(dy), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("kernel", [(16, 16), (18, 15)])
def test_maxpool_windows_of_256_or_more_positions_keep_the_tap_of_their_maximum(kernel):
    # windows of T >= 256 positions: the first maximum at tap T - 1 (an increasing image) gets the
    # gradient, and a window holding a NaN (no maximum) passes none; a one-byte tap index would wrap
    rng = np.random.default_rng(20)
    KH, KW = kernel
    x = np.stack([np.arange(KH * KW, dtype=float).reshape(KH, KW), rng.standard_normal((KH, KW))])[..., None]
    x[1, 3, 4, 0] = np.nan
    pool = MaxPool2d(kernel)
    y = pool.forward(x)
    assert y[0, 0, 0, 0] == KH * KW - 1 and np.isnan(y[1, 0, 0, 0])
    dx = pool.backward(np.ones_like(y))
    expected = np.zeros_like(x)
    expected[0, -1, -1, 0] = 1.0
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("shape, match", [
    ((2, -1), r"shape\[1\] must be an integer >= 0, got -1"),
    ((2.5, 3), r"shape\[0\] must be an integer >= 0, got 2.5"),
    (None, r"shape must be a tuple of non-negative integers, got None"),
])
def test_init_weight_refuses_a_bad_shape_naming_it(shape, match):
    # numpy's "negative dimensions are not allowed" or "'float' object cannot be interpreted as an integer"
    with pytest.raises(ValueError, match=match):
        init_weight(shape, 3, "he", 0, np.float64)


@pytest.mark.parametrize("x", [None, [[1.0, 2.0]], np.ones((2, 3), dtype=complex)])
def test_activation_and_residual_layers_refuse_a_non_real_input(x):
    # Activation passed a complex array through (relu of a complex array) and failed on None with
    # "'>=' not supported"; Residual failed on a list with "no attribute 'shape'"
    from shallow.cnn import Activation, Residual
    for layer in (Activation("relu"), Activation("tanh"), Residual(Activation("relu"))):
        with pytest.raises(ValueError, match=r"^x must be a numpy or cupy array|^x must hold real numbers"):
            layer.forward(x)


@pytest.mark.parametrize("kernel_size, dilation", [((3, 2), (1, 3)), ((2, 3), (3, 1)), (3, (2, 1))])
def test_conv2d_same_padding_with_other_dilations_along_rows_and_columns_keeps_the_size(kernel_size, dilation):
    # padding="same" pads d_h (KH - 1) rows and d_w (KW - 1) columns in total, each axis with its own
    # dilation, the odd one at the bottom/right. Reference: these pads written out here, and the
    # defining sum by nested loops with them (sums of 12 products: rounding a few eps).
    KH, KW = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    dh, dw = dilation
    th, tw = dh * (KH - 1), dw * (KW - 1)
    pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    rng = np.random.default_rng(14)
    conv = Conv2d(2, 3, kernel_size, padding="same", dilation=dilation, rng=rng)
    conv.params["b"][...] = rng.standard_normal(3)
    assert conv.padding == pads
    x = rng.standard_normal((1, 9, 10, 2))
    y = conv.forward(x)
    assert y.shape == (1, 9, 10, 3)
    expected = conv_loops(x, conv.params["W"], conv.params["b"], (1, 1), pads, (dh, dw), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
