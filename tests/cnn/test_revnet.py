"""The i-RevNet layers (shallow.cnn.revnet): exact inverses, derivatives against finite differences, training, errors.

Statements checked (Jacobsen, Smeulders & Oyallon 2018, arXiv:1802.07088, Sec. 3.1):

* the space-to-depth map is the index formula (S x)[n, i, j, (p b + q) C + c] = x[n, b i + p, b j + q, c],
  a permutation of the entries;
* the injective padding's inverse is the Moore-Penrose pseudo-inverse of its matrix (numpy's pinv);
* the additive coupling (x_1, x_2) -> (S x_2, S x_1 + F(x_2)) is a bijection with the explicit inverse:
  inverse(forward(x)) = x and forward(inverse(y)) = y, to 1e-10 in float64, for every layer k of the
  network (reconstruct(features(x, k), k) = x), in eval mode and in train mode on the same batch;
* every backward pass matches central differences (and a Taylor remainder of order 2), every jvp matches
  central differences, and the tangent model of :func:`shallow.cnn.linearize` works on an i-RevNet;
* the network trains with :func:`shallow.cnn.fit`; bad inputs raise ValueErrors naming the argument.

Tolerances: identities in float64 at 1e-10 (the issue's acceptance bound; rounding in the subtraction
y_2 - F(x_2) is eps |F| ~ 1e-15 per block for O(1) activations, so this is 1e5 times the rounding
level), in float32 at 1e-4 (eps_32 = 1.2e-7 times O(10) activations times a few blocks, times a
margin of 10); derivative checks use the tolerances of tests/cnn/gradcheck.py (stated there).
"""

import re

import numpy as np
import pytest
from gradcheck import check_central_differences, check_jvp, taylor_slope

from shallow.cnn import Adam, Conv2d, Linear, Model, Sequential, fit, linearize, predict
from shallow.cnn.revnet import (
    InjectivePad,
    InvertibleSequential,
    IRevNet,
    RevBlock,
    SpaceToDepth,
    bottleneck,
    irevnet_small,
)

# float64 inverse tolerance: the acceptance bound (see the module docstring).
INVERSE_ATOL_64 = 1e-10


def small_net(rng=0, dtype=np.float64, **kw):
    """8x8x1 -> 4x4 with 4 channels (no padding), then a stride-2 block: 2x2 with 16 channels."""
    args = {"width": 4, "blocks": 1}
    args.update(kw)
    return irevnet_small((8, 8, 1), 3, rng=rng, dtype=dtype, **args)


def space_to_depth_loops(x, b):
    N, H, W, C = x.shape
    y = np.empty((N, H // b, W // b, b * b * C), dtype=x.dtype)
    for i in range(H // b):
        for j in range(W // b):
            for p in range(b):
                for q in range(b):
                    for c in range(C):
                        y[:, i, j, (p * b + q) * C + c] = x[:, b * i + p, b * j + q, c]
    return y


def randomize_batch_norm(net, rng):
    """Non-trivial gamma, beta and running statistics, so that eval mode is not the identity normalisation."""
    for _, layer in net.named_layers():
        if "running_mean" in layer.buffers:
            C = layer.buffers["running_mean"].size
            layer.buffers["running_mean"][...] = 0.3 * rng.standard_normal(C)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, C)
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, C)
            layer.params["beta"][...] = 0.3 * rng.standard_normal(C)


# --------------------------------------------------------------------------- space-to-depth
@pytest.mark.parametrize("b", [1, 2, 3])
def test_space_to_depth_is_the_index_formula(b):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 6, 3))
    np.testing.assert_array_equal(SpaceToDepth(b)(x), space_to_depth_loops(x, b))


def test_space_to_depth_is_a_permutation_and_its_inverse_is_exact():
    # A permutation of the entries: the same multiset of values, and the inverse undoes it bit for bit.
    x = np.random.default_rng(1).standard_normal((2, 4, 6, 3))
    s = SpaceToDepth(2)
    y = s(x)
    np.testing.assert_array_equal(np.sort(y.ravel()), np.sort(x.ravel()))
    np.testing.assert_array_equal(s.inverse(y), x)
    np.testing.assert_array_equal(s(s.inverse(y)), y)


# --------------------------------------------------------------------------- injective padding
def linear_map_matrix(f, in_shape):
    """The matrix of a linear map on (1,) + in_shape arrays, column by column on the standard basis."""
    n = int(np.prod(in_shape))
    cols = []
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        cols.append(f(e.reshape((1,) + in_shape)).ravel())
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("c_in, c_out", [(4, 10), (2, 4), (2, 2)])
def test_injective_pad_inverse_is_the_moore_penrose_pseudo_inverse(c_in, c_out):
    # also the smallest pads: one channel per half, padded or not
    pad = InjectivePad(c_in, c_out)
    P = linear_map_matrix(pad.forward, (2, 2, c_in))  # (4 c_out, 4 c_in)
    np.testing.assert_allclose(P.T @ P, np.eye(4 * c_in), atol=0)  # isometric embedding
    y = np.random.default_rng(2).standard_normal((1, 2, 2, c_out))  # off the range of P
    np.testing.assert_allclose(pad.inverse(y).ravel(), np.linalg.pinv(P) @ y.ravel(), atol=1e-14)


def test_injective_pad_keeps_each_half_in_its_half():
    # (x_1, x_2) -> (x_1, 0, x_2, 0): the first half of the output channels holds x_1 only.
    x = np.random.default_rng(3).standard_normal((2, 3, 3, 4))
    y = InjectivePad(4, 8)(x)
    np.testing.assert_array_equal(y[..., :2], x[..., :2])
    np.testing.assert_array_equal(y[..., 4:6], x[..., 2:])
    assert not y[..., 2:4].any() and not y[..., 6:].any()


# --------------------------------------------------------------------------- the coupling block
@pytest.mark.parametrize("stride", [1, 2])
def test_revblock_is_the_additive_coupling_formula(stride):
    # y = (S x_2, S x_1 + F(x_2)) with S computed by the loops of the index formula.
    rng = np.random.default_rng(4)
    block = RevBlock(6, stride=stride, rng=rng)
    x = rng.standard_normal((3, 4, 4, 6))
    y = block(x)
    x1, x2 = x[..., :3], x[..., 3:]
    f = block.F.forward(x2)
    S = (lambda a: a) if stride == 1 else (lambda a: space_to_depth_loops(a, 2))
    np.testing.assert_allclose(y, np.concatenate([S(x2), S(x1) + f], axis=-1), rtol=0, atol=1e-14)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("stride", [1, 2])
def test_revblock_inverse_of_forward_is_identity_float64(stride, mode):
    rng = np.random.default_rng(5)
    block = RevBlock(6, stride=stride, rng=rng)
    randomize_batch_norm(block, rng)
    block.train(mode == "train")
    x = rng.standard_normal((4, 4, 6, 6))
    assert np.abs(block.inverse(block(x)) - x).max() < INVERSE_ATOL_64


@pytest.mark.parametrize("stride", [1, 2])
def test_revblock_forward_of_inverse_is_identity_in_eval_mode(stride):
    # Bijectivity: every y (not only outputs of forward) has the preimage inverse(y).
    rng = np.random.default_rng(6)
    block = RevBlock(4, stride=stride, rng=rng)
    randomize_batch_norm(block, rng)
    block.eval()
    y = rng.standard_normal((3,) + block.output_shape((4, 4, 4)))
    assert np.abs(block(block.inverse(y)) - y).max() < INVERSE_ATOL_64


def test_revblock_inverse_leaves_running_statistics_and_caches_untouched():
    # Train mode: inverse recomputes F with batch statistics but restores the running estimates and the
    # caches, so the gradients of a backward pass after it are those of the forward pass, bit for bit.
    rng = np.random.default_rng(7)
    block = RevBlock(4, stride=2, rng=rng)
    x = rng.standard_normal((3, 4, 4, 4))
    r = rng.standard_normal((3, 2, 2, 16))
    y = block.forward(x)
    buffers = {k: v.copy() for k, v in block.named_buffers().items()}
    dx_ref = block.backward(r)
    grads_ref = {k: g.copy() for k, g in block.named_gradients().items()}
    block.forward(x)
    block.inverse(y)
    for k, v in block.named_buffers().items():
        if "running" in k:  # the second forward updated them once more; inverse did not
            assert not np.array_equal(v, buffers[k])
    after_forward = {k: v.copy() for k, v in block.named_buffers().items()}
    block.inverse(y)
    for k, v in block.named_buffers().items():
        np.testing.assert_array_equal(v, after_forward[k])
    np.testing.assert_array_equal(block.backward(r), dx_ref)
    for k, g in block.named_gradients().items():
        np.testing.assert_array_equal(g, grads_ref[k])


def test_train_mode_inverse_needs_the_forward_batch():
    # Documented limitation: in train mode F uses the statistics of its batch, so inverting a sub-batch
    # recomputes F with other statistics and misses x; in eval mode any sub-batch inverts exactly.
    rng = np.random.default_rng(8)
    block = RevBlock(4, rng=rng)
    x = rng.standard_normal((6, 4, 4, 4))
    y = block(x)
    assert np.abs(block.inverse(y[:2]) - x[:2]).max() > 1e-3
    block.eval()
    y = block(x)
    assert np.abs(block.inverse(y[:2]) - x[:2]).max() < INVERSE_ATOL_64


def test_inverse_refuses_an_F_with_dropout_in_train_mode_and_inverts_it_in_eval_mode():
    # new dropout masks gave another F(x_2): x_1 came back wrong by O(1) without a word
    from shallow.cnn import Dropout
    rng = np.random.default_rng(9)
    block = RevBlock(4, F=Sequential(Conv2d(2, 2, 3, padding=1, rng=rng), Dropout(0.5, rng=rng)))
    x = rng.standard_normal((3, 4, 4, 4))
    y = block(x)
    with pytest.raises(ValueError, match="F draws random numbers in train mode .*call eval"):
        block.inverse(y)
    block.eval()
    np.testing.assert_allclose(block.inverse(block(x)), x, rtol=0, atol=INVERSE_ATOL_64)


# --------------------------------------------------------------------------- the network
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_irevnet_reconstructs_the_input_from_every_layer_float64(mode, xp):
    rng = np.random.default_rng(9)
    net = irevnet_small((8, 8, 1), 10, width=8, blocks=2, rng=0)
    randomize_batch_norm(net, rng)
    x = rng.standard_normal((5, 8, 8, 1))
    if xp is not np:
        net.to("gpu")
        x = xp.asarray(x)
    net.train(mode == "train")
    assert net.depth == 2 + 2 * 2  # space-to-depth, padding, two stages of two blocks
    for k in range(net.depth + 1):
        z = net.features(x, k)
        assert tuple(z.shape[1:]) == net.feature_shape(k)
        err = float(xp.abs(net.reconstruct(z, k) - x).max())
        assert err < INVERSE_ATOL_64, f"layer {k}: {err}"
    assert float(xp.abs(net.inverse(net.features(x)) - x).max()) < INVERSE_ATOL_64


def test_irevnet_representation_keeps_at_least_the_input_dimension():
    # Nothing is discarded: the representation has >= H W C entries at every layer.
    net = irevnet_small((8, 8, 1), 10, width=8, blocks=1)
    assert all(np.prod(net.feature_shape(k)) >= 64 for k in range(net.depth + 1))
    assert net.feature_shape() == (2, 2, 32)


def _body_layout(C, width, blocks, stages):
    """The body of irevnet_small as its Notes list it: SpaceToDepth(2), InjectivePad(4 C, width) unless
    width = 4 C, then per stage s ``blocks`` RevBlocks, the first of stage s >= 1 of stride 2 (4x the channels)."""
    layout = [("SpaceToDepth", 2)] + ([("InjectivePad", (4 * C, width))] if width > 4 * C else [])
    c = width
    for s in range(stages):
        for b in range(blocks):
            stride = 2 if s > 0 and b == 0 else 1
            layout.append(("RevBlock", (c, stride)))
            c = 4 * c if stride == 2 else c
    return layout


def _describe(layer):
    if isinstance(layer, SpaceToDepth):
        return ("SpaceToDepth", layer.block)
    if isinstance(layer, InjectivePad):
        return ("InjectivePad", (layer.in_channels, layer.out_channels))
    return (type(layer).__name__, (layer.channels, layer.stride))


@pytest.mark.parametrize("C, width, blocks, stages", [(1, 4, 1, 2), (1, 8, 2, 2), (2, 8, 1, 1), (1, 6, 2, 3),
                                                     (2, 10, 1, 1)])
def test_irevnet_body_is_space_to_depth_pad_and_revblocks_of_its_notes(C, width, blocks, stages):
    # the injective padding only where width > 4 C; a stride-2 block opening every stage after the first
    net = irevnet_small((8, 8, C), 3, width=width, blocks=blocks, stages=stages, rng=0)
    assert [_describe(layer) for layer in net.body.layers] == _body_layout(C, width, blocks, stages)


@pytest.mark.parametrize("in_shape, stages", [((8, 8, 1), 1), ((8, 8, 1), 2), ((8, 8, 1), 3), ((12, 8, 1), 2)])
def test_irevnet_features_have_h_w_over_2_to_the_stages_and_4_to_the_stages_minus_1_width_channels(in_shape,
                                                                                                  stages):
    # Phi(x) of shape (H / 2^S, W / 2^S, 4^(S - 1) width) (irevnet_small's Notes) for every S for which the
    # H / 2 x W / 2 map after the space-to-depth halves evenly S - 1 times: 8x8 up to S = 3 (to 1x1), 12x8 up
    # to S = 2 (6x4 -> 3x2); the reconstruction from it is exact
    H, W, _ = in_shape
    net = irevnet_small(in_shape, 3, width=4, blocks=1, stages=stages, rng=0).eval()
    assert net.feature_shape() == (H // 2 ** stages, W // 2 ** stages, 4 ** (stages - 1) * 4)
    x = np.random.default_rng(27).standard_normal((2,) + in_shape)
    z = net.features(x)
    assert z.shape == (2,) + net.feature_shape()
    assert np.abs(net.inverse(z) - x).max() < INVERSE_ATOL_64


@pytest.mark.parametrize("in_shape, feature_shape", [
    ((8, 8, 1), (2, 2, 16)),  # 4x4 -> 2x2 (2x2 is below 4: no further stage)
    ((28, 28, 1), (7, 7, 16)),  # 14x14 -> 7x7 (odd)
    ((16, 8, 1), (4, 2, 16)),  # 8x4 -> 4x2: the smaller side decides
    ((64, 64, 1), (8, 8, 64)),  # 32x32 -> 16x16 -> 8x8: at most 3 stages
])
def test_irevnet_default_stages_halve_while_both_sides_are_even_and_at_least_4(in_shape, feature_shape):
    # after the first space-to-depth, a stage per halving while both sides are even and the smaller is >= 4,
    # at most 3 stages (irevnet_small's defaults, "8x8: 4x4 then 2x2; 28x28: 14x14 then 7x7"); width 4
    assert irevnet_small(in_shape, 3, width=4, blocks=1, rng=0).feature_shape() == feature_shape


def test_bottleneck_convolutions_have_a_bias_only_without_batch_norm():
    # conv3x3 - BN - sigma - conv3x3 - BN, "batch normalisation after each convolution (then without bias)":
    # a bias before a batch normalisation is cancelled by its centring
    names = {k: v.shape for k, v in bottleneck(2, 3, hidden=5, rng=0).named_parameters().items()}
    assert names == {"0.W": (3, 3, 2, 5), "1.gamma": (5,), "1.beta": (5,), "3.W": (3, 3, 5, 3), "4.gamma": (3,),
                     "4.beta": (3,)}
    names = {k: v.shape for k, v in bottleneck(2, 3, hidden=5, batch_norm=False, rng=0).named_parameters().items()}
    assert names == {"0.W": (3, 3, 2, 5), "0.b": (5,), "2.W": (3, 3, 5, 3), "2.b": (3,)}


@pytest.mark.parametrize("in_shape, stages", [((8, 8, 1), 4), ((12, 8, 1), 3)])
def test_irevnet_refuses_more_stages_than_even_halvings(in_shape, stages):
    # one stage more than above: the 1x1 (8x8) or 3x2 (12x8) map cannot be halved by a stride-2 block
    with pytest.raises(ValueError, match=f"cannot be halved evenly {stages - 1} times"):
        irevnet_small(in_shape, 3, width=4, blocks=1, stages=stages)


def test_smallest_irevnet_inverts_exactly():
    # one output, a hidden width of 1 in every F, a 2x2 image with one stage: the smallest network still
    # reconstructs its input and gives one number per image
    net = irevnet_small((2, 2, 1), 1, width=4, blocks=1, hidden=1, rng=0).eval()
    x = np.random.default_rng(28).standard_normal((3, 2, 2, 1))
    assert net(x).shape == (3, 1)
    assert np.abs(net.inverse(net.features(x)) - x).max() < INVERSE_ATOL_64


def test_irevnet_inverse_float32():
    rng = np.random.default_rng(10)
    net = irevnet_small((8, 8, 1), 10, width=8, blocks=2, rng=0, dtype=np.float32).eval()
    x = rng.standard_normal((4, 8, 8, 1)).astype(np.float32)
    z = net.features(x)
    assert z.dtype == np.float32
    assert np.abs(net.inverse(z) - x).max() < 1e-4


def test_irevnet_is_a_model_with_gap_and_linear_head():
    # f(x) = W^T mean_{H,W} relu(BN(Phi(x))) + b, the head written out in numpy on Phi(x) = features(x)
    net = small_net()
    x = np.random.default_rng(11).standard_normal((2, 8, 8, 1))
    out = net(x)
    assert out.shape == (2, 3)
    assert isinstance(net.head[-1], Linear)
    z = net.features(x)
    bn, linear = net.head[0], net.head[-1]
    mu, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))  # train mode: batch statistics
    h = np.maximum((z - mu) / np.sqrt(var + bn.eps) * bn.params["gamma"] + bn.params["beta"], 0)
    expected = h.mean(axis=(1, 2)) @ linear.params["W"] + linear.params["b"]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)  # float64, a few hundred terms
    model = Model(net, (8, 8, 1), 3)
    np.testing.assert_array_equal(model(x), net(x))


# --------------------------------------------------------------------------- derivatives
@pytest.mark.parametrize("layer", [SpaceToDepth(2), InjectivePad(4, 8)], ids=["space_to_depth", "pad"])
def test_linear_invertible_layers_backward_and_jvp_match_central_differences(layer):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 4, 4, 4))
    check_central_differences(layer, x, rng)
    check_jvp(layer, x, rng)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("stride", [1, 2])
def test_revblock_backward_matches_central_differences(stride, mode):
    rng = np.random.default_rng(13)
    block = RevBlock(4, stride=stride, rng=rng)
    randomize_batch_norm(block, rng)
    block.train(mode == "train")
    check_central_differences(block, rng.standard_normal((3, 4, 4, 4)), rng)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("stride", [1, 2])
def test_revblock_jvp_matches_central_differences(stride, mode):
    rng = np.random.default_rng(14)
    block = RevBlock(4, stride=stride, rng=rng)
    randomize_batch_norm(block, rng)
    block.train(mode == "train")
    x = rng.standard_normal((3, 4, 4, 4))
    check_jvp(block, x, rng)
    check_jvp(block, x, rng, input_tangent=False)


def test_revblock_taylor_remainder_is_second_order():
    # A correct gradient leaves a remainder O(h^2): fitted log-log slope 2 within 0.1.
    rng = np.random.default_rng(15)
    block = RevBlock(4, stride=2, F=bottleneck(2, 8, stride=2, batch_norm=False, activation="tanh", rng=rng))
    slope, _ = taylor_slope(block, rng.standard_normal((2, 4, 4, 4)), rng)
    assert abs(slope - 2) < 0.1


def test_revblock_with_custom_F_backward_matches_central_differences():
    rng = np.random.default_rng(16)
    F = Sequential(Conv2d(3, 3, 3, padding=1, rng=rng))
    block = RevBlock(6, F=F)
    check_central_differences(block, rng.standard_normal((2, 5, 5, 6)), rng)


def test_revblock_without_input_gradient_still_gives_parameter_gradients():
    rng = np.random.default_rng(17)
    block = RevBlock(4, rng=rng)
    x = rng.standard_normal((2, 4, 4, 4))
    r = rng.standard_normal((2, 4, 4, 4))
    block.forward(x)
    block.backward(r)
    full = {k: g.copy() for k, g in block.named_gradients().items()}
    block.forward(x)
    assert block.backward(r, need_input_grad=False) is None
    for k, g in block.named_gradients().items():
        np.testing.assert_array_equal(g, full[k])


def test_irevnet_backward_and_jvp_match_central_differences():
    rng = np.random.default_rng(18)
    net = small_net(rng=1)
    randomize_batch_norm(net, rng)
    x = rng.standard_normal((3, 8, 8, 1))
    check_central_differences(net, x, rng)
    check_jvp(net, x, rng)
    net.eval()
    check_central_differences(net, x, rng)


def test_linearized_irevnet_is_first_order_accurate():
    # f_lin(theta_0 + t v) - f(theta_0 + t v) = O(t^2): the gap drops 4x when t halves (ratio in [3, 5]).
    # t = 1e-5: the relu kinks are crossed at some draws for t = 1e-2 (ratios 2.3 to 4.8 over 9
    # seeds) and 1e-4 (62.8 at one), none at 1e-5 (4.0 at all 9; gaps 4e-10, far above float64
    # rounding). A tangent off by 1% leaves an O(t) gap: ratio 2, which fails.
    rng = np.random.default_rng(19)
    model = Model(small_net(rng=2), (8, 8, 1), 3).eval()
    x = rng.standard_normal((4, 8, 8, 1))
    lin = linearize(model)
    theta0 = {k: p.copy() for k, p in model.named_parameters().items()}
    v = {k: rng.standard_normal(p.shape) for k, p in theta0.items()}
    gaps = []
    for t in (1e-5, 5e-6):
        for k, p in model.named_parameters().items():
            p[...] = theta0[k] + t * v[k]
        for k, p in lin.named_parameters().items():
            p[...] = theta0[k] + t * v[k]
        gaps.append(np.abs(lin(x) - model(x)).max())
    assert 3 < gaps[0] / gaps[1] < 5


# --------------------------------------------------------------------------- backward without caches
def assert_rounding_close(actual, expected, err_msg="", scale=None):
    """Equal to 1e-12 of ``scale`` (default the largest entry of ``expected``): the recovered
    x_1 = S^-1 (y_2 - F(x_2)) carries the rounding of the sum y_2 = S x_1 + F(x_2), about eps |F| per block."""
    scale = np.abs(expected).max() if scale is None else scale
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * scale, err_msg=err_msg)


def _step_state(net, x, dy, xp=np):
    """(dx, gradients, buffers) on the host after one forward and backward pass in train mode (on xp's device)."""
    host = (lambda a: a.copy()) if xp is np else (lambda a: a.get())
    if xp is not np:
        net.to("gpu")
        x, dy = xp.asarray(x), xp.asarray(dy)
    net.forward(x)
    dx = net.backward(dy)
    return host(dx), {k: host(g) for k, g in net.named_gradients().items()}, \
        {k: host(b) for k, b in net.named_buffers().items()}


@pytest.mark.parametrize("blocks, batch_norm", [(1, True), (2, True), (2, False)])
def test_recomputed_backward_gives_the_cached_backwards_gradients(blocks, batch_norm, xp):
    # Gomez et al. 2017, Sec. 3: the activations recovered by the inverse give the same gradients, to
    # rounding (assert_rounding_close); the running statistics are updated by the forward pass only, so
    # on the host they agree exactly.
    rng = np.random.default_rng(30)
    x = rng.standard_normal((5, 8, 8, 1))
    dy = rng.standard_normal((5, 3))
    kw = {"width": 8, "blocks": blocks, "batch_norm": batch_norm}  # without batch norm the head reads Phi(x) as is
    cached = _step_state(small_net(rng=3, **kw), x, dy)  # on the host: the reference on either device
    recomputed = _step_state(small_net(rng=3, recompute=True, **kw), x, dy, xp)
    assert_rounding_close(recomputed[0], cached[0])
    assert set(recomputed[1]) == set(cached[1])
    # a batch norm's beta followed by another batch norm has gradient 0: rounding noise of ~1e-17, which a
    # GPU's other order of summation changes; measured against the largest gradient of all parameters
    scale = max(np.abs(g).max() for g in cached[1].values())
    for k, g in cached[1].items():
        assert_rounding_close(recomputed[1][k], g, err_msg=k, scale=scale)
    for k, b in cached[2].items():  # the same arithmetic on the host; a GPU sums in another order (entries
        # that are 0 but for rounding, like the head's running means of a batch-normalised input, included)
        np.testing.assert_allclose(recomputed[2][k], b, rtol=0, atol=0 if xp is np else 1e-12 * np.abs(b).max(),
                                   err_msg=k)


def test_recomputed_backward_matches_central_differences():
    rng = np.random.default_rng(31)
    net = small_net(rng=4, recompute=True)
    randomize_batch_norm(net, rng)
    check_central_differences(net, rng.standard_normal((3, 8, 8, 1)), rng)


def test_recomputed_backward_without_input_gradient_gives_the_same_parameter_gradients():
    rng = np.random.default_rng(32)
    net = small_net(rng=5, recompute=True)
    x, dy = rng.standard_normal((4, 8, 8, 1)), rng.standard_normal((4, 3))
    _, full, _ = _step_state(net, x, dy)
    net.forward(x)
    assert net.backward(dy, need_input_grad=False) is None
    for k, g in net.named_gradients().items():
        assert_rounding_close(g, full[k], err_msg=k)


def _step_peak_bytes(net, x):
    """Peak of the numpy memory allocated during one forward and backward pass (tracemalloc)."""
    import tracemalloc

    out = net.forward(x)
    net.backward(np.ones_like(out))  # the convolutions plan their shapes once
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        out = net.forward(x)
        net.backward(np.ones_like(out))
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_recomputed_backward_memory_does_not_grow_with_depth():
    # Gomez et al. 2017: with the activations recovered instead of stored, the memory of a training
    # step is independent of depth. Four times the blocks: the cached step's peak more than doubles
    # (it keeps every block's activations: 2.1 -> 5.6 MiB here, 10.3 at 8 blocks), the recomputed one's
    # stays within 10% (one block's caches at a time: 1.6 MiB at 1, 4 and 8 blocks).
    x = np.random.default_rng(33).standard_normal((16, 16, 16, 1))
    peaks = {(blocks, recompute): _step_peak_bytes(irevnet_small((16, 16, 1), 10, width=8, blocks=blocks, rng=0,
                                                                 recompute=recompute), x)
             for blocks in (1, 4) for recompute in (False, True)}
    assert peaks[4, False] > 2 * peaks[1, False]
    assert peaks[4, True] < 1.1 * peaks[1, True]
    assert peaks[4, True] < 0.5 * peaks[4, False]


def test_recomputed_training_follows_the_cached_training():
    # fit through the recomputing body: the same losses, epoch by epoch, to rounding
    rng = np.random.default_rng(34)
    X, y = bars(96, rng)
    histories = []
    for recompute in (False, True):
        model = Model(irevnet_small((8, 8, 1), 2, width=8, blocks=1, rng=0, recompute=recompute), (8, 8, 1), 2)
        histories.append(fit(model, X, y, optimizer=Adam(model.named_parameters(), lr=1e-2), epochs=3,
                             batch_size=32, rng=0).loss)
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-9)


def _dropout_body(recompute):
    """Space-to-depth, then a stride-1 RevBlock whose F ends in dropout (p = 1/2) and a stride-2 one."""
    from shallow.cnn import Dropout

    F = Sequential(Conv2d(2, 2, 3, padding=1, rng=0), Dropout(0.5, rng=1))
    return InvertibleSequential(SpaceToDepth(2), RevBlock(4, F=F), RevBlock(4, stride=2, rng=2), recompute=recompute)


def _gradients(body, dx):
    return [dx] + [g.copy() for g in body.named_gradients().values()]


def test_recomputed_backward_replays_the_dropout_masks_and_leaves_the_generator_as_forward_did():
    # the recomputation draws the forward pass's masks again (the generators' states are replayed), so
    # the gradients are the cached pass's; afterwards the generators continue as after a cached step:
    # the next forward pass draws the same masks in both
    rng = np.random.default_rng(35)
    x, dy = rng.standard_normal((3, 8, 8, 1)), rng.standard_normal((3, 2, 2, 16))
    runs = []
    for recompute in (False, True):
        body = _dropout_body(recompute)
        body.forward(x)
        grads = _gradients(body, body.backward(dy))
        runs.append((grads, body.forward(x)))
    (g0, next0), (g1, next1) = runs
    for a, b in zip(g0, g1):
        assert_rounding_close(b, a)
    np.testing.assert_array_equal(next1, next0)


def test_recomputed_backward_recomputes_in_the_mode_of_the_forward_pass():
    # forward in train mode, then eval(), then backward: the cached pass differentiates what ran (batch
    # statistics); so does the recomputed one, and it leaves the network in eval mode
    rng = np.random.default_rng(36)
    x, dy = rng.standard_normal((4, 8, 8, 1)), rng.standard_normal((4, 2, 2, 16))
    runs = []
    for recompute in (False, True):
        body = small_net(rng=6, recompute=recompute).body
        body.forward(x)
        body.eval()
        runs.append(_gradients(body, body.backward(dy)))
        assert not any(layer.training for _, layer in body.named_layers())
    for a, b in zip(*runs):
        assert_rounding_close(b, a)


def test_recomputed_jvp_keeps_no_caches_and_its_backward_gives_the_cached_gradients():
    # what a linearised model does: jvp at theta_0, then backward
    rng = np.random.default_rng(37)
    x, tx, dy = rng.standard_normal((3, 8, 8, 1)), rng.standard_normal((3, 8, 8, 1)), rng.standard_normal((3, 2, 2, 16))
    runs = []
    for recompute in (False, True):
        body = small_net(rng=7, recompute=recompute).body
        y, ty = body.jvp(x, tx)
        held = sum(layer._cache is not None for _, layer in body.named_layers() if layer is not body)
        runs.append((y, ty, _gradients(body, body.backward(dy)), held))
    (y0, ty0, g0, held0), (y1, ty1, g1, held1) = runs
    assert held0 > 0 and held1 == 0
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(ty1, ty0)
    for a, b in zip(g0, g1):
        assert_rounding_close(b, a)


def test_linearized_recomputing_irevnet_gives_the_cached_gradients():
    rng = np.random.default_rng(38)
    x, dy = rng.standard_normal((4, 8, 8, 1)), rng.standard_normal((4, 3))
    v = None
    runs = []
    for recompute in (False, True):
        lin = linearize(Model(small_net(rng=8, recompute=recompute), (8, 8, 1), 3))
        v = v or {k: 0.01 * rng.standard_normal(p.shape) for k, p in lin.named_parameters().items()}
        for k, p in lin.named_parameters().items():
            p += v[k]
        lin.forward(x)
        lin.backward(dy)
        runs.append({k: g.copy() for k, g in lin.named_gradients().items()})
    for k, g in runs[0].items():
        assert_rounding_close(runs[1][k], g, err_msg=k)


def test_recompute_backward_without_a_new_forward_pass_is_a_clear_error():
    body = InvertibleSequential(SpaceToDepth(2), recompute=True)
    with pytest.raises(RuntimeError, match="needs the output of a forward"):
        body.backward(np.ones((1, 2, 2, 4)))
    body.backward(body.forward(np.ones((1, 4, 4, 1))))
    with pytest.raises(RuntimeError, match="each such pass serves one backward"):
        body.backward(np.ones((1, 2, 2, 4)))


def test_an_inverse_between_forward_and_backward_leaves_the_backward_pass_alone():
    # inverse runs F on another batch (here of another size) under _PreservedState: the caches and the
    # recorded output shape of the forward pass are put back, so backward gives the same gradients
    rng = np.random.default_rng(39)
    x, dy = rng.standard_normal((3, 4, 4, 4)), rng.standard_normal((3, 2, 2, 16))
    runs = []
    for other_inverse in (False, True):
        block = RevBlock(4, stride=2, rng=3)
        block.forward(x)
        if other_inverse:
            block.inverse(rng.standard_normal((8, 2, 2, 16)))
        runs.append(_gradients(block, block.backward(dy)))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(b, a)


# --------------------------------------------------------------------------- training
def bars(n, rng):
    """Class 0: a vertical bar, class 1: a horizontal bar, at a random position, plus noise."""
    X = 0.3 * rng.standard_normal((n, 8, 8, 1))
    y = rng.integers(0, 2, n)
    pos = rng.integers(0, 8, n)
    for i in range(n):
        if y[i]:
            X[i, pos[i], :, 0] += 2.0
        else:
            X[i, :, pos[i], 0] += 2.0
    return X, y


def test_irevnet_trains_with_fit_on_bars():
    # A separable two-class problem: after 8 epochs of Adam the held-out accuracy is above 0.9 (chance 0.5).
    rng = np.random.default_rng(20)
    X, y = bars(240, rng)
    X_test, y_test = bars(100, rng)
    net = irevnet_small((8, 8, 1), 2, width=8, blocks=1, rng=0)
    model = Model(net, (8, 8, 1), 2)
    hist = fit(model, X, y, X_test=X_test, y_test=y_test, optimizer=Adam(model.named_parameters(), lr=1e-2),
               epochs=8, batch_size=32, rng=0)
    assert hist.test_accuracy[-1] > 0.9
    # still exactly invertible after training
    net.eval()
    assert np.abs(net.inverse(net.features(X_test[:8])) - X_test[:8]).max() < INVERSE_ATOL_64
    assert predict(model, X_test).shape == (100, 2)


# --------------------------------------------------------------------------- errors
def test_space_to_depth_rejects_indivisible_images():
    with pytest.raises(ValueError, match="divisible by 2"):
        SpaceToDepth(2)(np.zeros((1, 5, 4, 1)))
    with pytest.raises(ValueError, match="multiple of 4"):
        SpaceToDepth(2).inverse(np.zeros((1, 2, 2, 6)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        SpaceToDepth(2)(np.zeros((4, 4, 1)))


def test_injective_pad_rejects_bad_channels():
    with pytest.raises(ValueError, match="even"):
        InjectivePad(3, 8)
    with pytest.raises(ValueError, match="out_channels must be >= in_channels"):
        InjectivePad(8, 4)
    with pytest.raises(ValueError, match="expects 4"):
        InjectivePad(4, 8)(np.zeros((1, 2, 2, 6)))
    with pytest.raises(ValueError, match="expects 8"):
        InjectivePad(4, 8).inverse(np.zeros((1, 2, 2, 4)))


def test_revblock_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="channels must be even"):
        RevBlock(5)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        RevBlock(4, stride=3)
    with pytest.raises(TypeError, match="F must be a Layer"):
        RevBlock(4, F=lambda x: x)
    with pytest.raises(ValueError, match="expects 4"):
        RevBlock(4)(np.zeros((1, 4, 4, 6)))
    with pytest.raises(ValueError, match="even height and width"):
        RevBlock(4, stride=2)(np.zeros((1, 5, 4, 4)))
    with pytest.raises(ValueError, match="expects 16"):
        RevBlock(4, stride=2).inverse(np.zeros((1, 2, 2, 4)))
    wrong_F = Sequential(Conv2d(2, 3, 3, padding=1))  # F(x_2) has 3 channels, S x_1 has 2
    with pytest.raises(ValueError, match="F maps x_2"):
        RevBlock(4, F=wrong_F)(np.zeros((1, 4, 4, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        RevBlock(4).backward(np.zeros((1, 4, 4, 4)))


def test_irevnet_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="even height and width"):
        irevnet_small((7, 8, 1))
    with pytest.raises(ValueError, match="width must be even and >= 4 C = 12"):
        irevnet_small((8, 8, 3), width=8)
    with pytest.raises(ValueError, match="fewer stages"):
        irevnet_small((8, 8, 1), stages=4)
    with pytest.raises(TypeError, match="InvertibleLayer"):
        InvertibleSequential(SpaceToDepth(2), Linear(3, 3))
    with pytest.raises(TypeError, match="body must be an InvertibleSequential"):
        IRevNet(Sequential(SpaceToDepth(2)), Sequential())
    net = small_net()
    with pytest.raises(ValueError, match=r"k must be an integer >= 0 and <= 3"):
        net.features(np.zeros((1, 8, 8, 1)), 4)
    with pytest.raises(ValueError, match=r"z must have shape \(N,\) \+ \(4, 4, 4\)"):
        net.reconstruct(np.zeros((1, 2, 2, 16)), 1)
    with pytest.raises(ValueError, match="NaN"):
        net.reconstruct(np.full((1, 2, 2, 16), np.nan))
    with pytest.raises(ValueError, match="x has images of shape"):
        net.features(np.zeros((1, 6, 6, 1)))


@pytest.mark.parametrize("layer, x, tx", [
    # SpaceToDepth returned a tangent of another shape; the others failed inside numpy or named a half
    (SpaceToDepth(2), np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 2))),
    (InjectivePad(4, 8), np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 2))),
    (RevBlock(4, rng=0), np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 2))),
])
def test_invertible_layers_refuse_a_tangent_of_another_shape(layer, x, tx):
    with pytest.raises(ValueError, match=re.escape(f"tx must have the shape of x, {x.shape}, got {tx.shape}")):
        layer.jvp(x, tx)


@pytest.mark.parametrize("layer", [SpaceToDepth(2), InjectivePad(4, 8), RevBlock(4, rng=0)])
@pytest.mark.parametrize("shape, match", [
    ((8, 8), r"shape must be the image shape \(H, W, C\)"),
    ((-8, 8, 4), "shape must be an integer >= 1, got -8"),
])
def test_output_shape_refuses_a_shape_that_is_not_h_w_c(layer, shape, match):
    # (8, 8) failed in a tuple unpacking; SpaceToDepth(2).output_shape((-8, 8, 4)) gave (-4, 4, 16).
    with pytest.raises(ValueError, match=match):
        layer.output_shape(shape)


@pytest.mark.parametrize("z, match", [
    (np.zeros((1, 2, 2, 16), dtype=complex), "z must be real"),
    ("features", "z must be an array of real numbers"),
])
def test_reconstruct_refuses_complex_or_text_features(z, match):
    # Complex features failed in a ufunc cast deep in the GEMM of a convolution.
    with pytest.raises(ValueError, match=match):
        small_net().eval().reconstruct(z)


def test_irevnet_without_in_shape_refuses_nan_images_and_features():
    # Without in_shape, features and reconstruct passed NaN through to NaN outputs.
    net = small_net().eval()
    bare = IRevNet(net.body, net.head)
    with pytest.raises(ValueError, match="x contains 64 NaN"):
        bare.features(np.full((1, 8, 8, 1), np.nan))
    with pytest.raises(ValueError, match="z contains 64 NaN"):
        bare.reconstruct(np.full((1, 2, 2, 16), np.nan))


@pytest.mark.parametrize("call", ["forward", "jvp"])
def test_irevnet_forward_and_jvp_refuse_nan_or_misshapen_images_naming_x(call):
    # As a Model's: forward and jvp passed NaN images through to NaN scores, and named a later layer's
    # input for a wrong channel count ('x has 12 channels (shape (1, 4, 4, 12) ...) but
    # InjectivePad(4, 8) expects 4') or size ('a stride-2 RevBlock needs an even height and width').
    net = small_net()
    run = net.forward if call == "forward" else (lambda x: net.jvp(x)[0])
    with pytest.raises(ValueError, match="x contains 64 NaN"):
        run(np.full((1, 8, 8, 1), np.nan))
    with pytest.raises(ValueError, match="x has 3 channels but the model expects C=1"):
        run(np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"x has images of shape \(6, 6, 1\) but the model expects"):
        run(np.zeros((1, 6, 6, 1)))
    assert run(np.zeros((2, 8, 8, 1))).shape == (2, 3)


@pytest.mark.parametrize("name", ["1.F.0.W", "body.1.F.0.w", "head.W"])
def test_irevnet_jvp_refuses_tangents_of_names_that_are_not_its_parameters(name):
    # Read as zero tangents, ty = None without a word: the 'body.' prefix left out, a misspelling, a
    # name that is not there (the head's Linear is 'head.2.W'). Its own names give the central
    # differences of the network along them.
    net = small_net(batch_norm=False)
    x = np.random.default_rng(25).standard_normal((2, 8, 8, 1))
    with pytest.raises(ValueError, match=r"tparams has names \[.*\] that are not parameters of the model"):
        net.jvp(x, None, {name: np.ones((3, 3, 2, 2))})
    check_jvp(net, x, np.random.default_rng(26), input_tangent=False)

@pytest.mark.parametrize("stride", [0, 3, 1.5])
def test_bottleneck_refuses_a_stride_other_than_1_or_2(stride):
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        bottleneck(2, 2, stride=stride)
