"""Models: centred initialisation, the output scale alpha, the tangent kernel, the linearised model, input checks."""

import numpy as np
import pytest
from gradcheck import Probe
from scipy import signal

from shallow.cnn import Conv2d, Model, build_model, linearize, vgg_small
from shallow.cnn.models import check_images, relative_change


@pytest.mark.parametrize("centering", ["frozen", "antisymmetric"])
@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_centred_model_vanishes_at_initialisation(arch, centering):
    # Chizat, Oyallon & Bach 2019, Sec. 2: f(x; theta_0) = 0, in train mode (batch statistics,
    # dropout masks) and in eval mode.
    kwargs = {"dropout": 0.3} if arch == "vgg" else {}
    model = build_model(arch, (8, 8, 1), 10, width=4, rng=0, alpha=100.0, centering=centering, **kwargs)
    x = np.random.default_rng(1).standard_normal((6, 8, 8, 1))
    np.testing.assert_array_equal(model.forward(x), 0.0)
    np.testing.assert_array_equal(model.eval().forward(x), 0.0)


def test_output_scale_alpha_multiplies_the_network():
    net = vgg_small((8, 8), 5, width=3, rng=2)
    x = np.random.default_rng(3).standard_normal((4, 8, 8, 1))
    base = Model(net, (8, 8), 5).eval().forward(x)
    np.testing.assert_allclose(Model(net, (8, 8), 5, alpha=7.5).eval().forward(x), 7.5 * base, rtol=1e-14)



def test_float32_model_refuses_an_alpha_beyond_the_normal_float32_range():
    # alpha multiplies h and the gradients in the network's dtype: in float32, alpha = 1e39 became inf
    # and the centred f(x; theta_0) = alpha (h - h_0) was inf * 0 = NaN where it is 0; alpha = 1e-50
    # became 0, f = 0 and zero gradients without a word. Inside the range f(x; theta_0) = 0 exactly and
    # f = alpha h (alpha = 1e-30: h rounded once more, 4 ulps); a float64 model takes both.
    x = np.random.default_rng(14).standard_normal((3, 8, 8, 1)).astype(np.float32)
    for alpha in (1e-50, 1e-40, 1e39):  # 1e-40 is subnormal in float32: 5 digits
        with pytest.raises(ValueError, match=r"alpha = .* is outside the normal float32 numbers"):
            build_model("vgg", (8, 8), 3, width=2, rng=0, alpha=alpha, centering="frozen", dtype=np.float32)
    model = build_model("vgg", (8, 8), 3, width=2, rng=0, alpha=3e38, centering="antisymmetric", dtype=np.float32)
    np.testing.assert_array_equal(model.forward(x), 0.0)
    h = build_model("vgg", (8, 8), 3, width=2, rng=0, dtype=np.float32).eval().forward(x)
    f = build_model("vgg", (8, 8), 3, width=2, rng=0, alpha=1e-30, dtype=np.float32).eval().forward(x)
    np.testing.assert_allclose(f, 1e-30 * h.astype(np.float64), rtol=4 * np.finfo(np.float32).eps)
    model = build_model("vgg", (8, 8), 3, width=2, rng=0, alpha=1e39, centering="frozen")
    np.testing.assert_array_equal(model.forward(x.astype(np.float64)), 0.0)

def _jacobian_rows(model, x):
    """Gradients of every output f_k(x_n) with respect to all trained parameters, as rows."""
    y = model.forward(x)
    rows = []
    for n in range(y.shape[0]):
        for k in range(y.shape[1]):
            e = np.zeros_like(y)
            e[n, k] = 1.0
            model.forward(x)
            model.backward(e)
            rows.append(np.concatenate([g.ravel() for g in model.named_gradients().values()]))
    return np.array(rows)


def test_antisymmetric_centring_keeps_the_tangent_kernel_of_the_network():
    # f = (h(theta_1) - h(theta_2)) / sqrt(2) at theta_1 = theta_2: J = [J_h, -J_h] / sqrt(2),
    # so J J^T = J_h J_h^T (eval mode: one sample's output depends on that sample only).
    x = np.random.default_rng(4).standard_normal((3, 8, 8, 1))
    plain = build_model("resnet", (8, 8), 3, width=3, rng=5).eval()
    centred = build_model("resnet", (8, 8), 3, width=3, rng=5, centering="antisymmetric").eval()
    Jh, Jf = _jacobian_rows(plain, x), _jacobian_rows(centred, x)
    assert Jf.shape[1] == 2 * Jh.shape[1]
    np.testing.assert_allclose(Jf @ Jf.T, Jh @ Jh.T, rtol=1e-12, atol=1e-12 * np.abs(Jh @ Jh.T).max())


def test_linearized_model_equals_the_model_at_initialisation():
    model = build_model("vgg", (8, 8), 4, width=4, rng=6, centering="frozen", alpha=3.0)
    lin = linearize(model)
    x = np.random.default_rng(7).standard_normal((5, 8, 8, 1))
    np.testing.assert_array_equal(lin.forward(x), model.forward(x))
    assert set(lin.named_parameters()) == set(model.named_parameters())


def test_linearization_error_is_second_order_in_the_parameter_step():
    # f(theta_0 + h v) - f_lin(theta_0 + h v) = (h^2 / 2) v^T f'' v + O(h^3): slope 2 in h
    rng = np.random.default_rng(8)
    model = build_model("resnet", (8, 8), 3, width=3, rng=9, activation="tanh")
    lin = linearize(model)
    x = rng.standard_normal((4, 8, 8, 1))
    v = {k: rng.standard_normal(p.shape) for k, p in model.named_parameters().items()}
    hs = 1e-2 / 2.0 ** np.arange(5)
    errors = []
    for h in hs:
        f = Probe(model, x, rng).value(h, None, v)
        for k, p in lin.named_parameters().items():
            p[...] = model.named_parameters()[k] + h * v[k]
        errors.append(np.abs(f - lin.forward(x)).max())
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(slope - 2) < 0.1


def test_linearized_model_jvp_is_its_parameter_derivative():
    # f_lin is linear in theta: J_lin v = f_lin(theta + v) - f_lin(theta) exactly (up to rounding)
    rng = np.random.default_rng(10)
    lin = linearize(build_model("vgg", (8, 8), 3, width=2, rng=11))
    x = rng.standard_normal((3, 8, 8, 1))
    v = {k: rng.standard_normal(p.shape) for k, p in lin.named_parameters().items()}
    f0, tf = lin.jvp(x, None, v)
    for k, p in lin.named_parameters().items():
        p += v[k]
    np.testing.assert_allclose(lin.forward(x) - f0, tf, rtol=0, atol=1e-12 * np.abs(tf).max())



def test_linearized_model_jvp_with_dropout_is_the_derivative_on_the_masks_of_its_value():
    # f_lin is linear in theta for fixed dropout masks: the jvp's tangent is f_lin(theta + v) - f_lin(theta)
    # on the masks of the value it returns (the generators replayed). Its second pass drew new masks:
    # the tangent was off by up to 23 (its entries up to 7.8).
    rng = np.random.default_rng(15)
    lin = linearize(build_model("vgg", (8, 8), 3, width=2, rng=16, dropout=0.5))
    x = rng.standard_normal((4, 8, 8, 1))
    v = {k: rng.standard_normal(p.shape) for k, p in lin.named_parameters().items()}
    probe = Probe(lin, x, rng)
    f0, tf = lin.jvp(x, None, v)
    np.testing.assert_array_equal(f0, probe.value())
    np.testing.assert_allclose(tf, probe.value(1.0, None, v) - f0, rtol=0, atol=1e-12 * np.abs(tf).max())


def test_linearized_model_jvp_moves_the_running_statistics_once():
    # Train-mode batch norm: r <- (1 - m) r + m stat (m = 0.1, unbiased variance) once per pass over a
    # batch, as forward does; the first layer's statistics are those of the correlation of x with W
    # (scipy). Its second pass applied the update twice: (1 - m)^2 r + (1 - (1 - m)^2) stat.
    rng = np.random.default_rng(17)
    lin = linearize(build_model("vgg", (8, 8), 3, width=2, rng=18))
    x = rng.standard_normal((4, 8, 8, 1))
    conv, norm = lin.base.net.layers[0], lin.base.net.layers[1]
    W = conv.params["W"]                                          # (3, 3, 1, 2)
    xp = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    h = np.stack([[signal.correlate(xp[n], W[:, :, 0, o], mode="valid") for o in range(2)] for n in range(4)])
    h = h.transpose(1, 0, 2, 3).reshape(2, -1)                    # (C, N H W)
    lin.jvp(x, None, {k: rng.standard_normal(p.shape) for k, p in lin.named_parameters().items()})
    np.testing.assert_allclose(norm.buffers["running_mean"], 0.1 * h.mean(axis=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(norm.buffers["running_var"], 0.9 + 0.1 * h.var(axis=1, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("dtype, k", [(np.float64, -560), (np.float64, 560), (np.float32, -80), (np.float32, 80)])
def test_relative_change_is_invariant_under_scaling_by_a_power_of_two(dtype, k):
    # |c theta - c theta_0| / |c theta_0| = |theta - theta_0| / |theta_0| for c = 2^k (exact in floating
    # point), also where the squares under- or overflow the dtype: float32 parameters scaled by 2^80 gave
    # inf / inf = NaN, by 2^-80 a zero |theta_0| and inf. Reference: numpy's norms at c = 1, in float64.
    rng = np.random.default_rng(19)
    theta0 = {k_: p.astype(dtype) for k_, p in build_model("vgg", (8, 8), 3, width=2, rng=0).named_parameters().items()}
    theta = {k_: (p + 0.01 * rng.standard_normal(p.shape)).astype(dtype) for k_, p in theta0.items()}
    flat = lambda d: np.concatenate([np.asarray(d[k_], dtype=np.float64).ravel() for k_ in sorted(d)])
    expected = np.linalg.norm(flat(theta) - flat(theta0)) / np.linalg.norm(flat(theta0))
    scaled = [{k_: np.ldexp(p, k) for k_, p in d.items()} for d in (theta, theta0)]
    # float64 sums of ~3000 squares and one quotient: a few eps64 relative, whatever the dtype
    assert relative_change(*scaled) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("name", ["0.W", "reference.0.W", "net.0.w"])
def test_model_jvp_refuses_tangents_of_names_that_are_not_its_parameters(name):
    # Model.jvp read a tangent under a name that is not a trained parameter (the prefix left out, the
    # frozen reference's weight, a misspelling) as a zero tangent: ty = None without a word. Its own
    # names give ty = u J t: central differences of f along the first convolution's weight.
    model = build_model("vgg", (8, 8), 3, width=2, rng=22, alpha=2.0, centering="frozen")
    x = np.random.default_rng(23).standard_normal((2, 8, 8, 1))
    t = np.ones((3, 3, 1, 2))
    with pytest.raises(ValueError, match=r"tparams has names \[.*\] that are not parameters of the model"):
        model.jvp(x, None, {name: t})
    probe = Probe(model, x, np.random.default_rng(24))
    v = {k: (t if k == "net.0.W" else np.zeros_like(p)) for k, p in model.named_parameters().items()}
    h = 1e-6  # central differences: error h^2 |f'''| / 6 ~ 1e-12 plus rounding eps |f| / h ~ 1e-10
    fd = (probe.value(h, None, v) - probe.value(-h, None, v)) / (2 * h)
    _, ty = model.jvp(x, None, {"net.0.W": t})
    np.testing.assert_allclose(ty, fd, rtol=0, atol=1e-6 * np.abs(fd).max())

def _vgg_reference(model, x):
    """The VGG forward map in eval mode, written from its definition: scipy correlations with zero
    padding 1, batch norm with running statistics, relu, 2x2 max pooling (floor), mean over the map,
    x W + b."""
    for layer in model.layers:
        name = type(layer).__name__
        if name == "Conv2d":
            W = layer.params["W"]                                     # (3, 3, C_in, C_out)
            xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            x = np.stack([[sum(signal.correlate(xp[n, :, :, c], W[:, :, c, o], mode="valid")
                               for c in range(W.shape[2])) for o in range(W.shape[3])]
                          for n in range(x.shape[0])]).transpose(0, 2, 3, 1)
        elif name == "BatchNorm2d":
            mean, var = layer.buffers["running_mean"], layer.buffers["running_var"]
            x = layer.params["gamma"] * (x - mean) / np.sqrt(var + layer.eps) + layer.params["beta"]
        elif name == "Activation":
            x = np.maximum(x, 0.0)
        elif name == "MaxPool2d":
            H, Wd = x.shape[1] // 2, x.shape[2] // 2
            x = x[:, :2 * H, :2 * Wd].reshape(x.shape[0], H, 2, Wd, 2, -1).max(axis=(2, 4))
        elif name == "GlobalAvgPool2d":
            x = x.mean(axis=(1, 2))
        else:
            assert name == "Linear", name
            x = x @ layer.params["W"] + layer.params["b"]
    return x


def test_28x28_vgg_is_three_stages_of_convolutions_and_pooling_down_to_3x3():
    # 28 -> 14 -> 7 -> 3 by floor pooling; the forward map equals its definition written with scipy.
    rng = np.random.default_rng(12)
    model = vgg_small((28, 28), 10, width=2, rng=13)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNorm2d":               # nontrivial running statistics
            layer.buffers["running_mean"][:] = rng.standard_normal(layer.num_features)
            layer.buffers["running_var"][:] = rng.uniform(0.5, 2.0, layer.num_features)
    model.eval()
    x = rng.standard_normal((2, 28, 28, 1))
    assert sum(type(layer).__name__ == "MaxPool2d" for layer in model.layers) == 3
    np.testing.assert_allclose(model.forward(x), _vgg_reference(model, x), rtol=1e-10, atol=1e-12)


def test_28x28_models_map_float32_images_to_float32_class_scores():
    x = np.zeros((2, 28, 28, 1), dtype=np.float32)
    for arch in ("vgg", "resnet"):
        y = build_model(arch, (28, 28, 1), 10, width=4, rng=0, dtype=np.float32).forward(x)
        assert y.shape == (2, 10) and y.dtype == np.float32


def test_model_rejects_wrong_images_naming_x():
    model = build_model("vgg", (8, 8, 1), 10, width=2, rng=0)
    with pytest.raises(ValueError, match=r"x has images of shape \(9, 9, 1\) but the model expects"):
        model.forward(np.zeros((2, 9, 9, 1)))
    with pytest.raises(ValueError, match="x has 3 channels but the model expects C=1"):
        model.forward(np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="NCHW"):
        build_model("vgg", (8, 8, 3), 10, width=2).forward(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"read as N = 8 single-channel images .* needs a batch axis: x\[None\]"):
        model.forward(np.zeros((8, 8, 1)))  # one image without its batch axis
    bad = np.zeros((2, 8, 8, 1))
    bad[0, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite"):
        model.forward(bad)
    with pytest.raises(ValueError, match="centering must be one of"):
        Model(vgg_small((8, 8), 2, width=2), (8, 8), 2, centering="mirror")
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        Model(vgg_small((8, 8), 2, width=2), (8, 8), 2, alpha=0.0)



def test_float32_model_refuses_float64_images_beyond_float32_naming_the_largest():
    # The cast to the model's float32 made 1e39 infinite: numpy warned 'overflow encountered in cast'
    # (an error under the suite's filter) and x was said to contain 'NaN or infinite value(s)'.
    model = build_model("vgg", (8, 8), 3, width=2, rng=0, dtype=np.float32)
    x = np.zeros((2, 8, 8, 1))
    x[0, 1, 1, 0] = -1e39
    with pytest.raises(ValueError, match=r"x has values up to 1e\+39 in absolute value, beyond the largest float32 \(3.4e"):
        model.forward(x)
    x[0, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite value"):
        model.forward(x)
    x[0, 1, 1, 0] = 3e38  # the largest float32 is 3.4e38
    assert check_images(x, "x", (8, 8, 1), dtype=np.float32)[0, 1, 1, 0] == np.float32(3e38)

@pytest.mark.parametrize("x, match", [
    (np.zeros((0, 8, 8, 1)), r"x holds no images \(shape \(0, 8, 8, 1\)\)"),
    ("digits.npz", "x must be an array of images, got str"),
    ([[0.0, 1.0], [2.0]], "x must be a rectangular array of images"),
], ids=["empty", "text", "ragged"])
def test_model_refuses_empty_text_or_ragged_images_naming_x(x, match):
    with pytest.raises(ValueError, match=match):
        build_model("vgg", (8, 8, 1), 10, width=2, rng=0).forward(x)


def test_conv2d_refuses_an_empty_batch_naming_x():
    with pytest.raises(ValueError, match="x holds no images"):
        Conv2d(1, 2, 3, rng=0).forward(np.zeros((0, 5, 5, 1)))
