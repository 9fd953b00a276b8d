"""The dtype rule of the CNN layers (module notes of :mod:`shallow.cnn.layers`), one statement per test.

A layer with parameters computes in their dtype: a batch of the other float dtype is cast on entry,
so its output, tangent and parameter gradients are exactly those of the cast batch (the cast comes
first, so exact equality is the oracle), in the parameters' dtype, and the input gradient goes back
in the input's dtype, as the chain rule through the cast gives. Layers without parameters keep the
input's dtype, and an optimiser never changes a parameter's dtype.
"""

import copy

import numpy as np
import pytest

from shallow.cnn import (SGD, Activation, Adam, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d,
                         Linear, MaxPool2d, Residual, Sequential, build_model, linearize)
from shallow.cnn.group import P4Conv2d, P4GroupPool, P4LiftConv2d
from shallow.cnn.layers import _cast, _cast_in

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
PAIRS = [pytest.param(F32, F64, id="float64-batch-float32-layer"), pytest.param(F64, F32, id="float32-batch-float64-layer")]


def _residual(dtype):
    body = Sequential(Conv2d(3, 4, 3, padding=1, bias=False, rng=0, dtype=dtype), BatchNorm2d(4, dtype=dtype))
    return Residual(body, Conv2d(3, 4, 1, rng=1, dtype=dtype))


# every layer with parameters (or, for BatchNorm2d without affine, buffers) of a dtype, and the
# shape of one batch; the convolutions in each formulation, grouped, dilated and strided
LAYERS = {
    "linear": (lambda dt: Linear(6, 4, rng=0, dtype=dt), (5, 6)),
    "conv_taps": (lambda dt: Conv2d(16, 4, 3, padding=1, rng=0, dtype=dt, method="taps"), (2, 5, 5, 16)),
    "conv_flat_im2col": (lambda dt: Conv2d(3, 4, 3, padding=1, rng=0, dtype=dt, method="flat_im2col"), (2, 5, 5, 3)),
    "conv_grouped_dilated_strided": (lambda dt: Conv2d(4, 6, 3, stride=2, dilation=2, padding=2, groups=2, rng=0,
                                                       dtype=dt), (2, 7, 7, 4)),
    "batchnorm": (lambda dt: BatchNorm2d(3, dtype=dt), (2, 4, 4, 3)),
    "batchnorm_no_affine": (lambda dt: BatchNorm2d(3, affine=False, dtype=dt), (2, 4, 4, 3)),
    "p4_lift": (lambda dt: P4LiftConv2d(3, 2, 3, rng=0, dtype=dt), (2, 5, 5, 3)),
    "p4_conv": (lambda dt: P4Conv2d(1, 2, 3, rng=0, dtype=dt), (2, 5, 5, 4)),
    "residual_projection": (_residual, (2, 4, 4, 3)),
    "model_resnet_centred": (lambda dt: build_model("resnet", (6, 6, 1), 3, width=4, rng=0, dtype=dt, alpha=2.0,
                                                    centering="antisymmetric"), (3, 6, 6, 1)),
}


def _layer(name, dtype, training):
    """The layer in ``dtype`` with random parameters and running statistics (the initial gamma = 1,
    beta = 0, mean 0 and variance 1 would hide a term computed in the wrong dtype), in train or eval mode."""
    make, shape = LAYERS[name]
    layer = make(dtype)
    rng = np.random.default_rng(5)
    for _, sub in layer.named_layers():
        for d in (sub.params, sub.buffers):
            for key, a in d.items():
                a[...] = (rng.uniform(0.5, 1.5, a.shape) if "var" in key else rng.standard_normal(a.shape)).astype(dtype)
    return layer.train(training), shape


def _pass(layer, x, dy_dtype=None, cast=None):
    """(y, dx, parameter gradients, ty) of one forward, backward and jvp pass on x, with dy (in
    ``dy_dtype``, default y's) and the tangents (in x's dtype) drawn from a fixed seed, all cast to
    ``cast`` when it is given (the twin pass on the cast batch: the same numbers, cast)."""
    rng = np.random.default_rng(7)
    y = layer.forward(x.astype(cast) if cast else x)
    dy = rng.standard_normal(y.shape).astype(dy_dtype or y.dtype)
    dx = layer.backward(dy.astype(cast) if cast else dy)
    grads = {k: g.copy() for k, g in layer.named_gradients().items()}
    tx = rng.standard_normal(x.shape).astype(x.dtype)
    tparams = {k: rng.standard_normal(p.shape).astype(x.dtype) for k, p in layer.named_parameters().items()}
    if cast:
        x, tx, tparams = x.astype(cast), tx.astype(cast), {k: t.astype(cast) for k, t in tparams.items()}
    _, ty = layer.jvp(x, tx, tparams)
    return y, dx, grads, ty


def _both(name, pdt, xdt, training, dy_dtype=None):
    """The pass on a batch of dtype xdt and on its cast to pdt (dy and the tangents cast alike), by two
    copies of one layer."""
    layer, shape = _layer(name, pdt, training)
    twin = copy.deepcopy(layer)
    x = np.random.default_rng(3).standard_normal(shape).astype(xdt)
    return _pass(layer, x, dy_dtype), _pass(twin, x, dy_dtype, cast=pdt)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("pdt, xdt", PAIRS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_a_batch_of_the_other_dtype_gives_the_output_of_its_cast_in_the_parameters_dtype(name, pdt, xdt, training):
    (y, _, _, _), (y_cast, _, _, _) = _both(name, pdt, xdt, training)
    assert y.dtype == pdt
    np.testing.assert_array_equal(y, y_cast)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("pdt, xdt", PAIRS)
@pytest.mark.parametrize("name", [name for name in LAYERS if name != "residual_projection"])
def test_the_input_gradient_goes_back_in_the_input_dtype_as_through_the_cast(name, pdt, xdt, training):
    # the chain rule through x -> x.astype(pdt): dx = (the cast batch's dx).astype(xdt)
    (_, dx, _, _), (_, dx_cast, _, _) = _both(name, pdt, xdt, training)
    assert dx.dtype == xdt
    np.testing.assert_array_equal(dx, dx_cast.astype(xdt))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("pdt, xdt", PAIRS)
def test_a_residual_block_sums_the_input_gradients_of_its_branches_in_the_input_dtype(pdt, xdt, training):
    # the block itself casts nothing: each branch casts x, so dx = J_body^T dy + J_shortcut^T dy is
    # the sum, in x's dtype, of each branch's gradient through its cast
    block, shape = _layer("residual_projection", pdt, training)
    twin = copy.deepcopy(block)
    x = np.random.default_rng(3).standard_normal(shape).astype(xdt)
    y = block.forward(x)
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(pdt)
    dx = block.backward(dy)
    twin.body.forward(x.astype(pdt))
    twin.shortcut.forward(x.astype(pdt))
    expected = twin.body.backward(dy).astype(xdt) + twin.shortcut.backward(dy).astype(xdt)
    assert dx.dtype == xdt
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("dy_of_the_other_dtype", [False, True], ids=["dy-like-y", "dy-of-the-other-dtype"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("pdt, xdt", PAIRS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_parameter_gradients_have_the_parameters_dtype_and_are_those_of_the_cast_batch(name, pdt, xdt, training,
                                                                                       dy_of_the_other_dtype):
    (_, _, grads, _), (_, _, grads_cast, _) = _both(name, pdt, xdt, training, xdt if dy_of_the_other_dtype else None)
    assert grads.keys() == grads_cast.keys()
    for key, g in grads.items():
        assert g.dtype == pdt, key
        np.testing.assert_array_equal(g, grads_cast[key], err_msg=key)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("pdt, xdt", PAIRS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_the_tangent_of_a_batch_and_tangents_of_the_other_dtype_is_that_of_their_casts(name, pdt, xdt, training):
    (_, _, _, ty), (_, _, _, ty_cast) = _both(name, pdt, xdt, training)
    assert ty.dtype == pdt
    np.testing.assert_array_equal(ty, ty_cast)


@pytest.mark.parametrize("pdt, xdt", PAIRS)
def test_a_linearised_model_takes_a_batch_of_the_other_dtype_as_its_cast(pdt, xdt):
    model, shape = _layer("model_resnet_centred", pdt, True)
    lin = linearize(model)
    for p in lin.params.values():
        p += np.float32(0.01)  # theta != theta_0: the tangent term counts
    twin = copy.deepcopy(lin)
    x = np.random.default_rng(3).standard_normal(shape).astype(xdt)
    y, y_cast = lin.forward(x), twin.forward(x.astype(pdt))
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(pdt)
    dx, dx_cast = lin.backward(dy), twin.backward(dy)
    assert (y.dtype, dx.dtype) == (pdt, xdt)
    np.testing.assert_array_equal(y, y_cast)
    np.testing.assert_array_equal(dx, dx_cast.astype(xdt))
    for key, g in lin.named_gradients().items():
        assert g.dtype == pdt
        np.testing.assert_array_equal(g, twin.named_gradients()[key])


@pytest.mark.parametrize("name", ["linear", "conv_flat_im2col", "batchnorm"])
def test_the_input_gradient_of_integer_images_has_the_parameters_dtype(name):
    # Linear gave back dx in the images' int64: the gradient 0.3 W^T dy was truncated to zeros
    layer, shape = _layer(name, F32, True)
    twin = copy.deepcopy(layer)
    x = np.random.default_rng(3).integers(-3, 4, shape)
    y, dx, grads, _ = _pass(layer, x)
    y_cast, dx_cast, grads_cast, _ = _pass(twin, x.astype(F32), cast=F32)
    assert (y.dtype, dx.dtype) == (F32, F32)
    np.testing.assert_array_equal(y, y_cast)
    np.testing.assert_array_equal(dx, dx_cast)
    for key, g in grads.items():
        np.testing.assert_array_equal(g, grads_cast[key])


PARAMETERLESS = {
    "relu": Activation("relu"),
    "tanh": Activation("tanh"),
    "flatten": Flatten(),
    "dropout": Dropout(0.5, rng=0),
    "max_pool": MaxPool2d(2, padding=1),
    "avg_pool": AvgPool2d(2),
    "global_avg_pool": GlobalAvgPool2d(),
    "p4_group_pool": P4GroupPool(),
}


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", list(PARAMETERLESS))
def test_layers_without_parameters_keep_the_input_dtype(name, dtype):
    layer = PARAMETERLESS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 4)).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(rng.standard_normal(y.shape).astype(dtype))
    _, ty = layer.jvp(x, rng.standard_normal(x.shape).astype(dtype))
    assert (y.dtype, dx.dtype, ty.dtype) == (dtype, dtype, dtype)


OPTIMISERS = {
    "sgd_nesterov_decay": lambda params: SGD(params, 0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    "adam_decay": lambda params: Adam(params, 0.1, weight_decay=0.1),
    "adamw": lambda params: Adam(params, 0.1, weight_decay=0.1, decoupled=True),
}


@pytest.mark.parametrize("flat", [False, True], ids=["separate", "flat"])
@pytest.mark.parametrize("pdt, gdt", PAIRS)
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_an_optimiser_keeps_the_parameters_dtype_and_arrays_with_gradients_of_the_other_dtype(name, pdt, gdt, flat):
    model = build_model("vgg", (6, 6, 1), 3, width=2, rng=0, dtype=pdt)
    if flat:
        model.flatten_parameters()
    before = model.named_parameters()
    opt = OPTIMISERS[name](before)
    rng = np.random.default_rng(0)
    for _ in range(2):
        opt.step({k: rng.standard_normal(p.shape).astype(gdt) for k, p in before.items()})
    after = model.named_parameters()
    assert all(after[k] is p and p.dtype == pdt for k, p in before.items())
    assert all(s.dtype == pdt for slots in opt.state.values() for s in slots.values())


def test_a_batch_of_the_parameters_dtype_is_neither_cast_nor_copied():
    # the float32 fast path: the entry of a layer hands the batch itself on, and Linear keeps it
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(F32)
    assert _cast_in(x, F32) == (x, F32) and _cast_in(x, F32)[0] is x
    assert _cast(x, F32) is x
    layer = Linear(6, 4, rng=0, dtype=F32)
    layer.forward(x)
    assert layer._cache[0] is x
