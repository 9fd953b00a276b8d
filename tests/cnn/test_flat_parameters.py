"""Flattened parameters (Layer.flatten_parameters): the same values, one array, the same training.

An optimiser over flattened parameters updates one array instead of each parameter. Its updates
are elementwise, so they must give the very same numbers as the parameter-by-parameter updates,
which the optimiser tests check against hand-computed steps: equality here is exact.
"""

import numpy as np
import pytest

from shallow.cnn import BIASES_AND_NORMS, SGD, Adam, CrossEntropy, Linear, Sequential, build_model
from shallow.cnn.optim import _flat_base
from shallow.cnn.train import train_step


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((8, 8, 8, 1)), rng.integers(0, 10, 8)


def _model():
    return build_model("vgg", (8, 8, 1), 10, rng=0, width=4, centering="antisymmetric")


def test_flatten_parameters_keeps_the_values_in_one_array():
    model = _model()
    before = {name: p.copy() for name, p in model.named_parameters().items()}
    model.flatten_parameters()
    after = model.named_parameters()
    assert after.keys() == before.keys()
    for name, p in after.items():
        np.testing.assert_array_equal(p, before[name], err_msg=name)
    base = _flat_base(list(after.values()))
    assert base is not None and base.size == sum(p.size for p in before.values())


def test_to_device_flattens_the_parameters():
    model = _model().to("cpu")
    assert _flat_base(list(model.named_parameters().values())) is not None


@pytest.mark.parametrize("make_optimizer", [
    lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: Adam(p, lr=1e-2, weight_decay=1e-3),
    lambda p: Adam(p, lr=1e-2, weight_decay=1e-3, decoupled=True),
], ids=["sgd", "nesterov", "adam", "adamw"])
def test_training_on_flattened_parameters_equals_training_parameter_by_parameter(make_optimizer):
    x, y = _batch()
    results = []
    for flat in (False, True):
        model = _model()
        if flat:
            model.flatten_parameters()
        opt = make_optimizer(model.named_parameters())
        assert (opt._flat is not None) == flat
        values = [train_step(model, CrossEntropy(), opt, x, y)[0] for _ in range(3)]
        results.append((values, model.named_parameters(), opt.state_dict()))
    (v0, p0, s0), (v1, p1, s1) = results
    assert v1 == v0
    for name in p0:
        np.testing.assert_array_equal(p1[name], p0[name], err_msg=name)
    for key in s0:
        np.testing.assert_array_equal(s1[key], s0[key], err_msg=key)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2, no_decay=BIASES_AND_NORMS, clip_norm=0.5),
    lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2, no_decay=BIASES_AND_NORMS,
                  clip_norm=0.5),
    lambda p: Adam(p, lr=1e-2, weight_decay=1e-2, no_decay=BIASES_AND_NORMS, clip_norm=0.5),
    lambda p: Adam(p, lr=1e-2, weight_decay=1e-2, decoupled=True, no_decay=BIASES_AND_NORMS, clip_norm=0.5),
], ids=["sgd", "nesterov", "adam", "adamw"])
def test_float32_training_with_decay_on_the_weights_only_and_clipping_is_the_same_flat_or_not(make_optimizer):
    # the flat step multiplies by a vector of lambdas (AdamW: picks its factor by a mask), rounded to float32 as
    # the scalar lambda of a parameter is, and the clipping norm sums the same squares in the same order: the
    # numbers of the parameter-by-parameter steps, bitwise
    x, y = _batch()
    results = []
    for flat in (False, True):
        model = build_model("vgg", (8, 8, 1), 10, rng=0, width=4, dtype=np.float32)
        if flat:
            model.flatten_parameters()
        opt = make_optimizer(model.named_parameters())
        assert (opt._flat is not None) == flat
        values = [train_step(model, CrossEntropy(label_smoothing=0.1), opt, x.astype(np.float32), y)[0]
                  for _ in range(3)]
        results.append((values, model.named_parameters()))
    (v0, p0), (v1, p1) = results
    assert v1 == v0
    for name in p0:
        np.testing.assert_array_equal(p1[name], p0[name], err_msg=name)


def test_optimizer_on_flattened_parameters_updates_each_parameter_when_gradients_are_rebound():
    """Gradients replaced by separate arrays (as the attacks' save and restore do) are no longer
    one array: the optimiser then updates parameter by parameter, with the same result."""
    x, y = _batch(1)
    params = []
    for rebind in (False, True):
        model = _model().to("cpu")
        opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
        out = model.forward(x)
        _, dout = CrossEntropy().value_and_grad(out, y)
        model.backward(dout, need_input_grad=False)
        if rebind:
            for _, layer in model.named_layers():
                layer.grads = {k: g.copy() for k, g in layer.grads.items()}
            assert _flat_base(list(model.named_gradients().values())) is None
        opt.step(model.named_gradients())
        params.append(model.named_parameters())
    for name in params[0]:
        np.testing.assert_array_equal(params[1][name], params[0][name], err_msg=name)


def test_tied_parameters_stay_tied():
    shared = Linear(3, 3, rng=0)
    net = Sequential(shared, shared)  # one weight matrix used twice
    net.flatten_parameters()
    assert net.layers[0].params["W"] is net.layers[1].params["W"]


def test_one_array_serving_two_layers_stays_one_array():
    # flatten_parameters does nothing when one array serves two parameters (its docstring): copied
    # into two slots of the flat array, the two would drift apart under training. Here two distinct
    # layers hold the same weight array (tying through one shared layer object would stay tied anyway).
    a, b = Linear(3, 3, rng=0), Linear(3, 3, rng=1)
    b.params["W"] = a.params["W"]
    net = Sequential(a, b)
    net.flatten_parameters()
    assert net.layers[0].params["W"] is net.layers[1].params["W"]


def test_parameters_of_two_dtypes_keep_their_arrays():
    # nothing is done when the parameters differ in dtype (its docstring): one flat array of the first
    # parameter's dtype would round the float64 parameters to float32
    a, b = Linear(3, 2, rng=0, dtype=np.float32), Linear(2, 2, rng=1, dtype=np.float64)
    before = {name: p for name, p in Sequential(a, b).named_parameters().items()}
    net = Sequential(a, b)
    net.flatten_parameters()
    for name, p in net.named_parameters().items():
        assert p is before[name], name


def test_flatten_parameters_of_a_layer_with_one_parameter():
    # a bias-free layer has a single parameter: the flat array is that parameter's values
    layer = Linear(3, 2, bias=False, rng=0)
    W = layer.params["W"].copy()
    layer.flatten_parameters()
    np.testing.assert_array_equal(layer.params["W"], W)
    base = _flat_base([layer.params["W"]])
    assert base is not None and base.size == 6


def _linear_step_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(3, 4, rng=seed), Linear(4, 2, rng=seed + 1)), rng.standard_normal((5, 3))


def _backward(net, x):
    """A backward pass of the sum of the outputs: the gradients of net at x."""
    out = net.forward(x)
    net.backward(np.ones_like(out), need_input_grad=False)


@pytest.mark.parametrize("move", ["flatten_parameters", "to"])
def test_a_step_of_an_optimizer_built_before_the_parameters_were_repacked_raises(move):
    # PyTorch's module.to keeps the parameter objects; here they become views into one new array, and
    # a step on the old arrays left the model unchanged without a word (a manual loop never trained)
    net, x = _linear_step_inputs()
    opt = SGD(net.named_parameters(), lr=0.1)
    net.flatten_parameters() if move == "flatten_parameters" else net.to("cpu")
    before = {name: p.copy() for name, p in net.named_parameters().items()}
    _backward(net, x)
    with pytest.raises(ValueError, match="replaced by model.to"):
        opt.step(net.named_gradients())
    for name, p in net.named_parameters().items():
        np.testing.assert_array_equal(p, before[name], err_msg=name)


def test_an_optimizer_refuses_parameters_replaced_before_it_is_built():
    net, _ = _linear_step_inputs()
    params = net.named_parameters()  # taken before the move
    net.to("cpu")
    with pytest.raises(ValueError, match="replaced by model.to"):
        Adam(params, lr=1e-3)


def test_an_optimizer_built_after_flatten_parameters_steps_the_model_by_minus_lr_times_the_gradient():
    # plain SGD: theta <- theta - eta grad, exactly (one multiplication and one subtraction, rounded
    # the same way in the hand computation)
    net, x = _linear_step_inputs(3)
    net.flatten_parameters()
    opt = SGD(net.named_parameters(), lr=0.1)
    _backward(net, x)
    expected = {name: p - 0.1 * net.named_gradients()[name] for name, p in net.named_parameters().items()}
    opt.step(net.named_gradients())
    for name, p in net.named_parameters().items():
        np.testing.assert_array_equal(p, expected[name], err_msg=name)
