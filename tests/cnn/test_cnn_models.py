"""Models: centred initialisation, the output scale alpha, the tangent kernel, the linearised model, input checks."""

import numpy as np
import pytest
from gradcheck import Probe, check_central_differences
from scipy import signal

from shallow.cnn import Conv2d, Model, build_model, linearize, resnet_small, vgg_small
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

def test_float32_antisymmetric_model_refuses_an_alpha_whose_alpha_over_sqrt2_is_subnormal():
    # the antisymmetric centring multiplies by u = alpha / sqrt(2): alpha = 1.5e-38 is a normal float32 but
    # u = 1.06e-38 is below the smallest normal float32, 1.18e-38 (np.finfo), so the model is refused; the
    # frozen centring multiplies by alpha itself and takes it
    tiny = float(np.finfo(np.float32).tiny)
    alpha = 1.5e-38
    assert alpha / np.sqrt(2.0) < tiny <= alpha
    with pytest.raises(ValueError, match=r"alpha = .* is outside the normal float32 numbers"):
        build_model("vgg", (8, 8), 3, width=2, rng=0, alpha=alpha, centering="antisymmetric", dtype=np.float32)
    assert build_model("vgg", (8, 8), 3, width=2, rng=0, alpha=alpha, centering="frozen", dtype=np.float32).alpha == alpha


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


def _stage_count_reference(m):
    """The most halvings s of the shorter side m with a map of at least 2x2 left (2^s * 2 <= m), clipped to
    [1, 3], counted by a loop."""
    s = 0
    while 2 ** (s + 2) <= m:
        s += 1
    return min(3, max(1, s))


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (4, 4), (6, 6), (12, 12), (16, 16), (8, 28), (28, 8),
                                   (28, 28), (64, 64)])
def test_default_stages_are_the_most_halvings_that_leave_a_2x2_map_at_most_three(shape):
    # vgg_small's notes: floor(log2(min(H, W) / 2)) clipped to [1, 3] (2 for 8x8, 3 for 28x28); the
    # shorter side decides a rectangular image; 12x12 has 2 (12 -> 6 -> 3), 64x64 is clipped to 3.
    net = vgg_small(shape, 2, width=1, rng=0)
    pools = sum(type(layer).__name__ == "MaxPool2d" for layer in net.layers)
    assert pools == _stage_count_reference(min(shape))


def _shapes_after(net, x, kind):
    """Shapes (H, W, C) of the maps that the layers of type ``kind`` output, in order (eval mode)."""
    shapes = []
    for layer in net.eval().layers:
        x = layer.forward(x)
        if type(layer).__name__ == kind:
            shapes.append(x.shape[1:])
    return shapes


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_vgg_stages_halve_the_map_by_2x2_pooling_and_double_the_width(pool):
    # Simonyan & Zisserman: stage s has 2^s w channels and ends in 2x2 pooling, floor(H / 2): 28 -> 14 -> 7 -> 3
    # with widths 3, 6, 12; the last pooled map averaged to the 12 inputs of the linear layer.
    net = vgg_small((28, 28), 5, width=3, pool=pool, rng=1)
    kind = "MaxPool2d" if pool == "max" else "AvgPool2d"
    x = np.random.default_rng(2).standard_normal((1, 28, 28, 1))
    assert _shapes_after(net, x, kind) == [(14, 14, 3), (7, 7, 6), (3, 3, 12)]
    assert net.layers[-1].params["W"].shape == (12, 5)


def test_vgg_dropout_zeroes_some_pooled_features_and_scales_the_others_by_one_over_one_minus_p():
    # vgg_small(dropout=p) in train mode: the linear layer reads the pooled features z (c = 4 of them here) with
    # each one zeroed or multiplied by 1 / (1 - p). For every image, one of the 2^c masks m must give
    # y = (m z / (1 - p)) W + b (float64 rounding: 1e-12 relative), and over 20 images some mask is not all ones
    # (the chance that p = 0.5 keeps all 4 features of all 20 images is 2^-80). z, W and b are read from the
    # network in eval mode, where dropout is the identity.
    import itertools

    p = 0.5
    net = vgg_small((8, 8), 3, width=2, batch_norm=False, dropout=p, rng=0)
    x = np.random.default_rng(9).standard_normal((20, 8, 8, 1))
    z = x
    for layer in net.eval().layers[:-1]:
        z = layer.forward(z)  # (20, c) pooled features, dropout off
    W, b = net.layers[-1].params["W"], net.layers[-1].params["b"]
    y = net.train().forward(x)  # (20, 3)
    masks = np.array(list(itertools.product([0.0, 1.0], repeat=z.shape[1])))  # (2^c, c)
    candidates = np.einsum("mc,nc,ck->nmk", masks, z / (1 - p), W) + b  # (20, 2^c, 3)
    err = np.abs(candidates - y[:, None, :]).max(axis=2)  # (20, 2^c)
    assert np.all(err.min(axis=1) <= 1e-12 * np.abs(y).max())
    assert not np.all(masks[err.argmin(axis=1)] == 1)


@pytest.mark.parametrize("in_shape, blocks, expected", [
    ((8, 8, 1), 2, [(8, 8, 4)] * 2 + [(4, 4, 8)] * 2),
    ((28, 28, 2), 1, [(28, 28, 4), (14, 14, 8), (7, 7, 16)]),
    ((9, 9, 1), 1, [(9, 9, 4), (5, 5, 8)]),
])
def test_resnet_stages_after_the_first_halve_the_map_and_double_the_width(in_shape, blocks, expected):
    # He et al. 2016, Sec. 3.3: the first stage keeps the stem's resolution and width w; each later one opens
    # with a stride-2 3x3 convolution (padding 1: ceil(H / 2), 9 -> 5) and doubles the width; blocks per stage.
    net = resnet_small(in_shape, 3, width=4, blocks=blocks, rng=3)
    x = np.random.default_rng(4).standard_normal((1,) + in_shape)
    assert _shapes_after(net, x, "Residual") == expected


def _vgg_count(C, w, stages, K, bn):
    """Trained parameters of vgg_small by its definition: two 3x3 convolutions per stage (a bias each without
    batch norm, gamma and beta with it), widths w 2^s, a linear layer with bias."""
    total, c = 0, C
    for s in range(stages):
        ws = w * 2 ** s
        for c_in in (c, ws):
            total += 9 * c_in * ws + (2 * ws if bn else ws)
        c = ws
    return total + c * K + K


def _resnet_count(C, w, stages, blocks, K, bn):
    """Trained parameters of resnet_small: a 3x3 stem; per block two 3x3 convolutions; a 1x1 projection
    shortcut in the first block of every stage after the first (each convolution with its bias or batch norm)."""
    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + (2 * c_out if bn else c_out)
    total, c = conv(3, C, w), w
    for s in range(stages):
        ws = w * 2 ** s
        for b in range(blocks):
            total += conv(3, c, ws) + conv(3, ws, ws) + (conv(1, c, ws) if s > 0 and b == 0 else 0)
            c = ws
    return total + c * K + K


@pytest.mark.parametrize("batch_norm", [True, False])
def test_parameter_counts_follow_the_architectures(batch_norm):
    # Counted from the definitions in the module notes: a convolution followed by batch norm has no bias
    # (the norm's beta replaces it); projection shortcuts only where the shape changes.
    count = lambda net: sum(p.size for p in net.named_parameters().values())
    vgg = vgg_small((8, 8, 2), 7, width=3, batch_norm=batch_norm, rng=0)
    assert count(vgg) == _vgg_count(2, 3, 2, 7, batch_norm)
    for stages, blocks in [(2, 1), (3, 2)]:
        net = resnet_small((16, 16, 3), 5, width=2, stages=stages, blocks=blocks, batch_norm=batch_norm, rng=0)
        assert count(net) == _resnet_count(3, 2, stages, blocks, 5, batch_norm)


def test_model_gradient_at_alpha_two_is_the_derivative_of_f():
    # f = 2 h: backward sends 2 dy to h (a branch skips the product at u = 1). Reference: central
    # differences of f along random directions of x and theta (tanh network, away from theta_0).
    rng = np.random.default_rng(40)
    model = Model(vgg_small((8, 8, 1), 3, width=2, activation="tanh", rng=41), (8, 8, 1), 3, alpha=2.0,
                  centering="frozen")
    for p in model.named_parameters().values():
        p += 0.1 * rng.standard_normal(p.shape)
    check_central_differences(model, rng.standard_normal((3, 8, 8, 1)), rng)


def test_antisymmetric_model_jvp_along_either_copy_is_the_derivative_of_f():
    # f = u (h(theta_1) - h(theta_2)), u = alpha / sqrt(2): the jvp's tangent along theta_1 only, theta_2 only
    # and both is the central difference of f along it, and its value is f (away from theta_0, f != 0).
    rng = np.random.default_rng(42)
    model = Model(resnet_small((8, 8, 1), 3, width=2, activation="tanh", rng=43), (8, 8, 1), 3, alpha=3.0,
                  centering="antisymmetric").eval()
    for p in model.named_parameters().values():
        p += 0.1 * rng.standard_normal(p.shape)
    x = rng.standard_normal((2, 8, 8, 1))
    probe = Probe(model, x, rng)
    params = model.named_parameters()
    for copies in (("plus.",), ("minus.",), ("plus.", "minus.")):
        v = {k: (rng.standard_normal(p.shape) if k.startswith(copies) else np.zeros_like(p)) for k, p in params.items()}
        y, ty = model.jvp(x, None, {k: t for k, t in v.items() if k.startswith(copies)})
        np.testing.assert_allclose(y, probe.value(), rtol=1e-13, atol=1e-13 * np.abs(y).max())
        h = 1e-6
        fd = (probe.value(h, None, v) - probe.value(-h, None, v)) / (2 * h)
        np.testing.assert_allclose(ty, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


def test_relative_change_from_a_zero_reference_is_infinite():
    # |theta - 0| / |0| with theta != 0: the limit +inf, not a division error.
    theta0 = {"a": np.zeros(3), "b": np.zeros((2, 2))}
    theta = {"a": np.array([0.0, 1e-3, 0.0]), "b": np.zeros((2, 2))}
    assert relative_change(theta, theta0) == np.inf


def test_linearized_model_jvp_value_away_from_theta0_is_its_forward_value():
    # jvp returns (f_lin(x; theta), J t): after a step theta - theta_0 = d, its value is f(theta_0) + J d,
    # the forward value, which the linearity of f_lin gives independently: f_lin(theta_0 + d) =
    # f(theta_0) + [f_lin(theta_0 + 2 d) - f(theta_0)] / 2.
    rng = np.random.default_rng(44)
    lin = linearize(build_model("vgg", (8, 8), 3, width=2, rng=45, alpha=2.0)).eval()
    x = rng.standard_normal((3, 8, 8, 1))
    d = {k: 0.1 * rng.standard_normal(p.shape) for k, p in lin.named_parameters().items()}
    f0 = lin.forward(x)
    for k, p in lin.named_parameters().items():
        p += 2 * d[k]
    f2 = lin.forward(x)
    for k, p in lin.named_parameters().items():
        p -= d[k]
    y, _ = lin.jvp(x, None, {k: np.ones_like(p) for k, p in lin.named_parameters().items()})
    np.testing.assert_allclose(y, f0 + (f2 - f0) / 2, rtol=1e-10, atol=1e-12 * np.abs(f2 - f0).max())


def test_the_smallest_architectures_one_output_width_one_one_stage_one_block_are_built():
    # n_classes, width, stages and blocks are integers >= 1: K = 1 (one score, a regression) with one channel
    # and one stage, wrapped in a Model, maps (N, H, W, C) to (N, 1); its parameters counted from the definitions.
    x = np.random.default_rng(46).standard_normal((2, 4, 4, 1))
    vgg = vgg_small((4, 4), 1, width=1, stages=1, rng=0)
    resnet = resnet_small((4, 4), 1, width=1, stages=1, blocks=1, rng=0)
    assert sum(p.size for p in vgg.named_parameters().values()) == _vgg_count(1, 1, 1, 1, True)
    assert sum(p.size for p in resnet.named_parameters().values()) == _resnet_count(1, 1, 1, 1, 1, True)
    for net in (vgg, resnet):
        assert Model(net, (4, 4), 1).forward(x).shape == (2, 1)


def test_check_images_rejects_an_in_shape_that_is_not_h_w_c_naming_it():
    # in_shape (8,) failed in an unpacking ('not enough values to unpack'); (8, 8) is read as C = 1
    with pytest.raises(ValueError, match=r"in_shape must be \(H, W\) or \(H, W, C\)"):
        check_images(np.ones((2, 8, 8, 1)), "X", in_shape=(8,))
    assert check_images(np.ones((2, 8, 8, 1)), "X", in_shape=(8, 8)).shape == (2, 8, 8, 1)


def test_check_images_computes_float16_images_in_float32():
    # as every input of the library (check_array): the image helpers returned float16, whose 3 digits and largest
    # value 65504 the models do not compute in; the values are kept exactly (float16 -> float32 is exact)
    from shallow.cnn import rotate_images, translate

    x = np.random.default_rng(3).standard_normal((2, 4, 4, 1)).astype(np.float16)
    out = check_images(x, "X")
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))
    assert translate(x, (1, 0)).dtype == np.float32 and rotate_images(x, 1).dtype == np.float32
    assert check_images(x, "X", dtype=np.float64).dtype == np.float64


def test_build_model_says_shapes_are_channels_last_for_a_channels_first_in_shape():
    # (1, 8, 8) is (H, W, C) = 1 x 8 images of 8 channels, too small to pool: the message said only that
    with pytest.raises(ValueError, match=r"too small .* channels last here: for 1-channel 8x8 images pass \(8, 8, 1\)"), \
            pytest.warns(UserWarning, match="channels last here"):
        build_model("vgg", (1, 8, 8))
    with pytest.raises(ValueError, match=r"too small for 3 stages of 2x2 pooling$"):  # no hint for (H, W, C)
        vgg_small((4, 4, 1), 2, stages=3)


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_a_channels_first_in_shape_that_builds_is_warned_about(arch):
    # (3, 32, 32), a CIFAR image channels first, built a network for 3 x 32 images of 32 channels without a word
    with pytest.warns(UserWarning, match=r"3x32 images of 32 channels; shapes are channels last here: for 3-channel "
                                         r"32x32 images pass \(32, 32, 3\)"):
        build_model(arch, (3, 32, 32), 10, width=2, rng=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(arch, (32, 32, 3), 10, width=2, rng=0)  # channels last: no warning


def test_snapshot_and_relative_change_reject_what_is_not_a_model_or_parameter_dict():
    # "'int' object has no attribute 'named_parameters'", "'list' object has no attribute 'items'"
    from shallow.cnn import snapshot

    with pytest.raises(TypeError, match="model must be a Layer"):
        snapshot(3)
    with pytest.raises(TypeError, match="params must be a dict of name -> array or a Layer"):
        relative_change([np.ones(3)], {"a": np.ones(3)})


def _tiny_model(rng=0, batch_norm=False):
    from shallow.cnn import build_model

    return build_model("vgg", (4, 4, 1), 3, width=2, stages=1, batch_norm=batch_norm, rng=rng)


def test_tangent_kernel_is_the_gram_matrix_of_central_difference_jacobians():
    # Theta[i, j, k, l] = <d f_k(x_i), d f_l(y_j)> with each parameter's derivative by central differences
    # (step 1e-6 in float64: truncation 1e-12 for this smooth-in-theta relu net away from kinks, rounding 1e-10)
    from shallow.cnn.linearize import tangent_kernel

    model = _tiny_model(batch_norm=True)
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((3, 4, 4, 1)), rng.standard_normal((2, 4, 4, 1))
    model.eval()

    def jac(Z):
        cols = []
        for p in model.named_parameters().values():
            flat = p.reshape(-1)
            for q in range(flat.size):
                old = flat[q]
                flat[q] = old + 1e-6
                up = model.forward(Z)
                flat[q] = old - 1e-6
                down = model.forward(Z)
                flat[q] = old
                cols.append((up - down) / 2e-6)  # (n, K)
        return np.stack(cols, axis=-1)  # (n, K, P)

    JX, JY = jac(X), jac(Y)
    model.train()
    Theta = tangent_kernel(model, X, Y)
    assert Theta.shape == (3, 2, 3, 3) and model.training
    np.testing.assert_allclose(Theta, np.einsum("ikp,jlp->ijkl", JX, JY), rtol=1e-7, atol=1e-8 * np.abs(Theta).max())


def test_gradient_descent_on_the_linearised_model_is_kernel_gradient_descent_with_the_tangent_kernel():
    # f_lin is linear in theta: full-batch steps of SGD (no momentum) on the square loss (1/2n) |F - Y|^2 move the
    # flattened outputs by F <- F - (eta / n) Theta (F - Y) exactly, Theta from tangent_kernel (Jacot et al. 2018)
    from shallow.cnn import SGD, SquareLoss, fit, linearize, predict
    from shallow.cnn.linearize import tangent_kernel

    model = _tiny_model(rng=1)
    lin = linearize(model)
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((5, 4, 4, 1)), rng.standard_normal((5, 3))
    n, K, eta, steps = 5, 3, 0.05, 7
    T = tangent_kernel(lin, X).transpose(0, 2, 1, 3).reshape(n * K, n * K)
    F = predict(lin, X).reshape(-1)
    fit(lin, X, Y, loss=SquareLoss(), optimizer=SGD(lin.named_parameters(), lr=eta, momentum=0.0),
        epochs=steps, batch_size=n, rng=0)
    for _ in range(steps):
        F = F - (eta / n) * T @ (F - Y.reshape(-1))
    np.testing.assert_allclose(predict(lin, X).reshape(-1), F, rtol=0, atol=1e-12 * np.abs(F).max())


def test_tangent_kernel_of_no_images_or_of_no_parameters_is_an_empty_or_zero_kernel():
    # empty X failed in a reshape, a model without parameters in numpy's concatenate
    from shallow.cnn import Flatten, Sequential
    from shallow.cnn.linearize import tangent_kernel

    model = _tiny_model()
    X = np.random.default_rng(7).standard_normal((2, 4, 4, 1))
    assert tangent_kernel(model, X[:0], X).shape == (0, 2, 3, 3)
    assert tangent_kernel(model, X[:0]).shape == (0, 0, 3, 3)
    Theta = tangent_kernel(Sequential(Flatten()), X)  # f(x) = x flattened, nothing trained: J = 0
    assert Theta.shape == (2, 2, 16, 16) and not Theta.any()


def test_a_wrapper_of_a_model_still_refuses_images_of_another_shape_in_fit_and_tangent_kernel():
    # fit and tangent_kernel turn the inner Model's NaN scan off (they scan the data once); the shape check went with
    # it, and a Sequential holding a Model, whose own in_shape is unknown, took 16x16 images for its 8x8 model
    from shallow.cnn import Sequential, fit
    from shallow.cnn.linearize import tangent_kernel

    wrapped = Sequential(build_model("vgg", (8, 8), 3, width=2, rng=0))
    X = np.random.default_rng(8).standard_normal((4, 16, 16, 1))
    with pytest.raises(ValueError, match=r"shape \(16, 16, 1\) but the model expects \(H, W, C\) = \(8, 8, 1\)"):
        tangent_kernel(wrapped, X)
    with pytest.raises(ValueError, match=r"images of shape \(16, 16, 1\) but the model expects"):
        fit(wrapped, X, np.array([0, 1, 2, 0]), epochs=1)


def test_tangent_kernel_leaves_the_gradients_of_the_model_as_they_were():
    # tangent_kernel runs one backward pass per output and image; the Parameters promise the gradients of the last
    # backward pass before it are put back (a training loop between backward and step may compute a kernel)
    from shallow.cnn.linearize import tangent_kernel

    model = _tiny_model(rng=2)
    rng = np.random.default_rng(10)
    X = rng.standard_normal((3, 4, 4, 1))
    model.forward(X)
    model.backward(rng.standard_normal((3, 3)))
    before = {name: g.copy() for name, g in model.named_gradients().items()}
    assert any(g.any() for g in before.values())
    tangent_kernel(model, X[:2])
    for name, g in model.named_gradients().items():
        np.testing.assert_array_equal(g, before[name])
