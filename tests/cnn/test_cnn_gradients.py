"""Every hand-written backward pass against central differences, a Taylor test, and every jvp against differences.

The layers are checked in float64 in the configurations the issue lists: convolutions with stride,
padding, dilation and groups in each of the three formulations, pooling, batch normalisation in
train and eval mode, dropout with a fixed mask, residual blocks, and the composed models.
"""

import numpy as np
import pytest

from gradcheck import check_central_differences, check_jvp, taylor_slope
from shallow.cnn import (Activation, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, Linear,
                         MaxPool2d, Model, Residual, Sequential, linearize, resnet_small, vgg_small)

CONV_CASES = {
    "plain": dict(kernel_size=3, padding=1),
    "valid": dict(kernel_size=3, padding=0),
    "strided": dict(kernel_size=3, stride=2, padding=1),
    "strided_rect": dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)),
    "padded_asymmetric": dict(kernel_size=3, padding=(2, 0, 1, 1)),
    "dilated": dict(kernel_size=3, dilation=2, padding=2),
    "grouped": dict(kernel_size=3, padding=1, groups=2),
    "pointwise_strided": dict(kernel_size=1, stride=2),
    "same_even": dict(kernel_size=(2, 2), padding="same"),
}
METHODS = ["taps", "flat_im2col", "im2col"]


def conv_cases():
    for name, kw in CONV_CASES.items():
        stride = kw.get("stride", 1)
        for method in METHODS:
            if method != "im2col" and stride != 1:
                continue
            yield pytest.param(kw, method, id=f"{name}-{method}")


def make_conv(kw, method, rng, C=4, Co=6, bias=True):
    conv = Conv2d(C, Co, bias=bias, rng=rng, method=method, **kw)
    if bias:
        conv.params["b"][...] = rng.standard_normal(Co)
    return conv


# --------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("kw, method", list(conv_cases()))
def test_conv2d_backward_matches_central_differences(kw, method):
    rng = np.random.default_rng(0)
    conv = make_conv(kw, method, rng)
    x = rng.standard_normal((2, 7, 6, 4))
    check_central_differences(conv, x, rng)


@pytest.mark.parametrize("kw, method", list(conv_cases()))
def test_conv2d_jvp_matches_central_differences(kw, method):
    rng = np.random.default_rng(1)
    conv = make_conv(kw, method, rng)
    check_jvp(conv, rng.standard_normal((2, 7, 6, 4)), rng)


@pytest.mark.parametrize("method", METHODS)
def test_conv2d_taylor_remainder_is_second_order(method):
    # The convolution is bilinear in (x, W): the remainder is exactly h^2 <r, conv(vx, vW)>.
    rng = np.random.default_rng(2)
    conv = make_conv(dict(kernel_size=3, padding=1, groups=2), method, rng)
    slope, _ = taylor_slope(conv, rng.standard_normal((2, 6, 6, 4)), rng)
    assert abs(slope - 2) < 0.1


def test_conv2d_without_input_gradient_still_gives_weight_gradients():
    rng = np.random.default_rng(3)
    conv = make_conv(CONV_CASES["plain"], "flat_im2col", rng)
    x = rng.standard_normal((2, 5, 5, 4))
    y = conv.forward(x)
    r = rng.standard_normal(y.shape)
    conv.backward(r)
    full = {k: g.copy() for k, g in conv.grads.items()}
    assert conv.backward(r, need_input_grad=False) is None
    for k in full:
        np.testing.assert_array_equal(conv.grads[k], full[k])


# --------------------------------------------------------------------------- other layers
def layer_cases():
    rng = np.random.default_rng(10)
    img = (2, 6, 6, 3)
    yield "linear", Linear(5, 4, rng=rng), (3, 5)
    yield "tanh", Activation("tanh"), img
    yield "relu", Activation("relu"), img
    yield "softplus", Activation("softplus"), img
    yield "maxpool", MaxPool2d(2), img
    yield "maxpool_overlapping_padded", MaxPool2d(3, stride=2, padding=1), img
    yield "avgpool", AvgPool2d(2), img
    yield "avgpool_overlapping_padded", AvgPool2d(3, stride=2, padding=1), img
    # ceil_mode: odd sizes whose last windows run past the input (7 rows in windows of 2; 6 + 2 padded rows in
    # windows of 3 at stride 2: 4 windows, the last one row past the padding)
    yield "maxpool_ceil", MaxPool2d(2, ceil_mode=True), (2, 7, 5, 3)
    yield "maxpool_ceil_overlapping_padded", MaxPool2d(3, stride=2, padding=1, ceil_mode=True), img
    yield "avgpool_ceil", AvgPool2d(2, ceil_mode=True), (2, 7, 5, 3)
    yield "avgpool_ceil_overlapping_padded", AvgPool2d(3, stride=2, padding=1, ceil_mode=True), img
    yield "global_avgpool", GlobalAvgPool2d(), img
    yield "flatten", Flatten(), img
    bn = BatchNorm2d(3)
    bn.params["gamma"][...] = rng.uniform(0.5, 2, 3)
    bn.params["beta"][...] = rng.standard_normal(3)
    yield "batchnorm_train", bn, img
    bn_eval = BatchNorm2d(3)
    bn_eval.buffers["running_mean"][...] = rng.standard_normal(3)
    bn_eval.buffers["running_var"][...] = rng.uniform(0.5, 2, 3)
    yield "batchnorm_eval", bn_eval.eval(), img
    yield "batchnorm_flat_features", BatchNorm2d(5), (7, 5)
    yield "dropout_train", Dropout(0.3, rng=1), img
    body = Sequential(Conv2d(3, 3, 3, padding=1, rng=rng), Activation("tanh"), Conv2d(3, 3, 3, padding=1, rng=rng))
    yield "residual_identity", Residual(body), img
    yield "residual_projection", Residual(Sequential(Conv2d(3, 5, 3, stride=2, padding=1, rng=rng),
                                                     BatchNorm2d(5), Activation("tanh")),
                                          Conv2d(3, 5, 1, stride=2, rng=rng)), img


LAYERS = [name for name, _, _ in layer_cases()]


def make_layer(name):
    """A fresh layer (built with the same seeds every time) and its input shape."""
    return {n: (layer, shape) for n, layer, shape in layer_cases()}[name]


@pytest.mark.parametrize("name", LAYERS)
def test_layer_backward_matches_central_differences(name):
    layer, shape = make_layer(name)
    rng = np.random.default_rng(20)
    # relu and max pooling are piecewise linear: h = 1e-6 against gaps O(1e-2) between
    # pre-activations or window entries of a Gaussian input crosses no kink.
    check_central_differences(layer, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("name", LAYERS + ["conv2d", "sequential"])
def test_every_layer_refuses_an_output_gradient_of_the_wrong_shape(name):
    # One that broadcasts against the output (the first image only) would otherwise give a
    # silently wrong gradient in the pointwise layers; others failed deep inside numpy.
    rng = np.random.default_rng(22)
    if name == "conv2d":
        layer, shape = Conv2d(3, 4, 3, padding=1, rng=rng), (2, 6, 6, 3)
    elif name == "sequential":
        layer, shape = Sequential(Conv2d(3, 4, 3, rng=rng), Activation("relu"), Flatten()), (2, 6, 6, 3)
    else:
        layer, shape = make_layer(name)
    y = layer.forward(rng.standard_normal(shape))
    for wrong in (np.ones((1,) + y.shape[1:]), np.ones(y.shape[:-1] + (y.shape[-1] + 1,)), "dy"):
        with pytest.raises(ValueError, match=rf"dy must have the shape of the layer's output, \({y.shape[0]}, "):
            layer.backward(wrong)
    assert layer.backward(np.ones(y.shape)).shape == shape  # the right shape still passes


@pytest.mark.parametrize("name", LAYERS + ["conv2d"])
def test_every_layer_refuses_tangents_of_the_wrong_shape(name):
    # Tangents that broadcast against x (the first image only, one channel) or a parameter gave
    # a silently wrong ty in the pointwise, pooling, flatten and linear layers.
    rng = np.random.default_rng(23)
    layer, shape = (Conv2d(3, 4, 3, padding=1, rng=rng), (2, 6, 6, 3)) if name == "conv2d" else make_layer(name)
    x = rng.standard_normal(shape)
    for wrong in (np.ones((1,) + shape[1:]), np.ones(shape[:-1] + (1,)), "tx"):
        with pytest.raises(ValueError, match=rf"tx must have the shape of x, \({shape[0]}, "):
            layer.jvp(x, wrong)
    for pname, p in layer.params.items():
        with pytest.raises(ValueError, match=rf"tparams\['{pname}'\] has shape \(1,\) but the parameter"):
            layer.jvp(x, None, {pname: np.ones(1)})
    _, ty = layer.jvp(x, np.ones(shape), {k: np.ones(p.shape) for k, p in layer.params.items()})
    assert ty.shape == layer.forward(x).shape  # the right shapes still pass


def test_a_user_layer_keeps_its_own_signatures_under_the_shape_checks():
    # Layer wraps every subclass's forward, backward and jvp; a layer written with other
    # arguments (an extra keyword, a backward without need_input_grad) must still work.
    class Scale(Layer):
        def forward(self, x, factor=2.0):
            self._cache = factor
            return factor * x

        def backward(self, dy):
            return self._cache * dy

        def jvp(self, x, tx=None, tparams=None, factor=2.0):
            return self.forward(x, factor=factor), (None if tx is None else factor * tx)

    layer, x = Scale(), np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(layer.forward(x, factor=3.0), 3 * x)
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3))), np.full((2, 3), 3.0))
    with pytest.raises(ValueError, match=r"dy must have the shape of the layer's output, \(2, 3\)"):
        layer.backward(np.ones(3))
    np.testing.assert_array_equal(layer.jvp(x, tx=np.ones((2, 3)), factor=5.0)[1], np.full((2, 3), 5.0))
    with pytest.raises(ValueError, match=r"tx must have the shape of x"):
        layer.jvp(x, tx=np.ones(3))


@pytest.mark.parametrize("name", LAYERS)
def test_layer_jvp_matches_central_differences(name):
    layer, shape = make_layer(name)
    rng = np.random.default_rng(21)
    check_jvp(layer, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("name", ["linear", "tanh", "softplus", "batchnorm_train", "batchnorm_eval",
                                  "batchnorm_flat_features", "residual_identity", "residual_projection"])
def test_layer_taylor_remainder_is_second_order(name):
    layer, shape = make_layer(name)
    rng = np.random.default_rng(22)
    slope, _ = taylor_slope(layer, rng.standard_normal(shape), rng)
    assert abs(slope - 2) < 0.1


@pytest.mark.parametrize("name", ["relu", "maxpool", "avgpool", "global_avgpool", "flatten",
                                  "maxpool_ceil_overlapping_padded", "avgpool_ceil_overlapping_padded"])
def test_piecewise_linear_layer_has_no_taylor_remainder(name):
    # relu and max pooling are linear between kinks; average pooling and flattening are linear:
    # the first-order remainder is rounding only (h <= 1e-4 crosses no kink).
    layer, shape = make_layer(name)
    rng = np.random.default_rng(23)
    _, remainders = taylor_slope(layer, rng.standard_normal(shape), rng, h0=1e-4)
    assert max(remainders) < 1e-12


def test_dropout_is_identity_in_eval_mode_and_scales_kept_units_in_train_mode():
    rng = np.random.default_rng(24)
    x = rng.standard_normal((4, 50, 50, 2))
    drop = Dropout(0.25, rng=3)
    y = drop.forward(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-15)
    # fraction of kept units: 20000 Bernoulli(0.75) draws, sigma = 0.003; 5 sigma
    assert abs(kept.mean() - 0.75) < 0.016
    np.testing.assert_array_equal(drop.eval().forward(x), x)


# --------------------------------------------------------------------------- models
MODELS = {
    # small models with smooth activations, so that the Taylor test applies to the whole network
    "vgg": lambda: Model(vgg_small((8, 8, 1), 3, width=2, activation="tanh", rng=0), (8, 8, 1), 3),
    "vgg_avg_dropout": lambda: Model(vgg_small((8, 8, 1), 3, width=2, activation="tanh", pool="avg", dropout=0.2,
                                               rng=1), (8, 8, 1), 3),
    "resnet": lambda: Model(resnet_small((8, 8, 2), 3, width=2, activation="tanh", rng=2), (8, 8, 2), 3),
    "vgg_frozen_alpha": lambda: Model(vgg_small((8, 8, 1), 3, width=2, activation="tanh", rng=3), (8, 8, 1), 3,
                                      alpha=3.0, centering="frozen"),
    "resnet_antisymmetric": lambda: Model(resnet_small((8, 8, 1), 3, width=2, activation="tanh", rng=4),
                                          (8, 8, 1), 3, alpha=0.5, centering="antisymmetric"),
}


def _perturbed(model, rng, scale=0.1):
    """Move the parameters off theta_0, so that centred models are not at their symmetric point."""
    for p in model.named_parameters().values():
        p += scale * rng.standard_normal(p.shape)
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_model_backward_matches_central_differences(name):
    rng = np.random.default_rng(30)
    model = _perturbed(MODELS[name](), rng)
    shape = (4,) + model.in_shape
    check_central_differences(model, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_taylor_remainder_is_second_order(name):
    rng = np.random.default_rng(31)
    model = _perturbed(MODELS[name](), rng)
    # h0 = 1e-6: the max-pool windows switch at some draws for steps of 1e-3 and 1e-5 (slopes 0.95
    # to 3.5 at 1e-3, 2.8 at 1e-5 over 9 seeds), none at 1e-6 (slopes 1.958 to 2.004), and the
    # remainders (1e-14 and up) stay above float64 rounding. A gradient off by 1% gives slope 1.
    slope, _ = taylor_slope(model, rng.standard_normal((4,) + model.in_shape), rng, h0=1e-6)
    assert abs(slope - 2) < 0.1


@pytest.mark.parametrize("name", list(MODELS))
def test_model_jvp_matches_central_differences(name):
    rng = np.random.default_rng(32)
    model = _perturbed(MODELS[name](), rng)
    check_jvp(model, rng.standard_normal((4,) + model.in_shape), rng)


def test_relu_model_backward_matches_central_differences():
    # relu networks: the default models, kink-free at h = 1e-7 for Gaussian inputs
    rng = np.random.default_rng(33)
    model = Model(vgg_small((8, 8, 1), 4, width=3, rng=5), (8, 8, 1), 4)
    check_central_differences(model, rng.standard_normal((3, 8, 8, 1)), rng, h=1e-7)


def test_linearized_model_gradient_matches_central_differences():
    # f_lin is linear in theta: its central difference is exact up to rounding
    rng = np.random.default_rng(34)
    lin = linearize(MODELS["vgg_frozen_alpha"]())
    _perturbed(lin, rng)
    check_central_differences(lin, rng.standard_normal((3, 8, 8, 1)), rng, h=1e-3, input_grad=False)


def _conv_direct(x, W):
    """3x3 'same' cross-correlation as nine tensordots over the zero-padded input (no shifted grid)."""
    N, H, Wd, C = x.shape
    xpad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(np.tensordot(xpad[:, i:i + H, j:j + Wd], W[i, j], axes=(3, 0)) for i in range(3) for j in range(3))


def test_wide_conv2d_in_long_packed_blocks_is_the_convolution_and_its_adjoints():
    # 112 x 96 channels leave the small-matrix path (fewer than 100 rows per block) and 3 x 29 x 29 grid rows
    # make two blocks of 2048: forward against nine tensordots; the bilinear map gives the exact
    # derivatives <dW, V> = <dy, conv(x, V)> and <dx, U> = <dy, conv(U, W)> (float64, rounding only).
    rng = np.random.default_rng(31)
    layer = Conv2d(112, 96, 3, padding=1, bias=False, rng=32, method="taps")
    x, U = rng.standard_normal((2, 3, 28, 28, 112))
    V = rng.standard_normal(layer.params["W"].shape)
    W = layer.params["W"]
    y = layer.forward(x)
    ref = _conv_direct(x, W)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    scale = np.abs(dy).sum() * np.abs(ref).max()
    assert abs(np.vdot(layer.grads["W"], V) - np.vdot(dy, _conv_direct(x, V))) < 1e-12 * scale
    assert abs(np.vdot(dx, U) - np.vdot(dy, _conv_direct(U, W))) < 1e-12 * scale


def test_batchnorm_jvp_of_parameter_tangents_alone_matches_central_differences():
    # ty = tgamma xhat + tbeta when x has no tangent (the first layers of a linearised model see
    # only parameter tangents); reference: central differences of the layer's forward map
    layer, shape = make_layer("batchnorm_train")
    rng = np.random.default_rng(24)
    check_jvp(layer, rng.standard_normal(shape), rng, input_tangent=False)


def test_dropout_backward_before_forward_is_refused_naming_the_layer():
    # it returned dy unmasked: a wrong gradient without a word
    with pytest.raises(RuntimeError, match="Dropout.backward was called before forward"):
        Dropout(0.5, rng=0).backward(np.ones((2, 3)))


def test_batchnorm_float32_on_a_large_batch_matches_float64_to_float32_accuracy():
    # BatchNorm2d in float32 and in float64 on the same float32 batch of N H W = 2^16 values per channel
    # (mean 2, as after a convolution) and the same dy (mean 1). y, dx and the running mean within
    # 1e-6 = 17 eps_32 relative; dgamma = sum dy xhat cancels (sum |dy xhat| / |dgamma| ~ 200), so its
    # error is taken relative to sum |dy xhat|. A single float32 accumulation of the batch mean gave
    # errors of 2e-6 (y), 8e-6 (dx), 4e-6 (running mean) and 1.3e-3 relative in dgamma.
    rng = np.random.default_rng(0)
    x = (2.0 + rng.standard_normal((64, 32, 32, 4))).astype(np.float32)
    dy = (1.0 + rng.standard_normal(x.shape)).astype(np.float32)
    out = {}
    for dtype in (np.float32, np.float64):
        bn = BatchNorm2d(4, dtype=dtype)
        y = bn.forward(x.astype(dtype))
        dx = bn.backward(dy.astype(dtype))
        out[dtype] = (y, dx, bn.buffers["running_mean"], bn.grads["gamma"])
        assert {a.dtype for a in out[dtype]} == {np.dtype(dtype)}
    for a, b in zip(out[np.float32][:3], out[np.float64][:3]):
        assert np.max(np.abs(a - b)) < 1e-6 * np.max(np.abs(b))
    xhat = out[np.float64][0]  # gamma = 1 and beta = 0: y is xhat
    scale = np.einsum("abcz->z", np.abs(dy * xhat))
    assert np.max(np.abs(out[np.float32][3] - out[np.float64][3]) / scale) < 1e-6
