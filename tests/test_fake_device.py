"""The CuPy paths of the library on the fake device of tests/fake_device.py, against the numpy paths.

The statement checked: a routine given device arrays (CuPy; here numpy arrays posing as CuPy ones, which
refuse any implicit conversion to the host) returns device arrays holding the numbers that the numpy
path gives, without handing device data to numpy or scipy. A representative subset (core kernels,
activations, the two-layer network, the CNN's layers and training step); ``SHALLOW_FAKE_DEVICE=1`` runs
every `gpu` test and the cupy side of the `xp` fixture on the fake device instead.
"""

import numpy as np
import pytest
import scipy.special

import fake_device
from fake_device import DeviceArray

from shallow.activations import get_activation
from shallow.backend import to_device, to_numpy

# The device path may sum in another order (split reductions, per-sample float64 sums): float64 rounding
# of sums of a few hundred terms of size ~1, well below 1e-12 of the largest entry.
RTOL = 1e-12

FATAL = ("TypeError on a GPU", "AttributeError on a GPU", "cupy raises TypeError", "cupy's __array__ raises")


@pytest.fixture
def fake(monkeypatch):
    """The fake cupy namespace, installed in shallow.backend; fails the test on a call that a GPU refuses."""
    fake_device.install(monkeypatch)
    fake_device.leaks.clear()
    yield fake_device.fake
    fatal = [f"{where}: {call} ({kind})" for (kind, call, where) in fake_device.leaks if kind.endswith(FATAL)
             and not where.startswith("<outside")]
    assert not fatal, "host calls on device data:\n" + "\n".join(fatal)


def _close(device_value, host_value, what=""):
    assert isinstance(device_value, DeviceArray), \
        f"{what}: a {type(device_value).__name__} came back, not a device array"
    host_value = np.asarray(host_value)
    scale = max(float(np.max(np.abs(host_value))), 1e-300)
    np.testing.assert_allclose(to_numpy(device_value), host_value, rtol=0, atol=RTOL * scale, err_msg=what)


def test_fake_arrays_refuse_implicit_host_conversion(fake):
    x = fake.asarray(np.arange(6.0).reshape(2, 3))
    for call in (lambda: np.asarray(x), lambda: np.array(x), lambda: scipy.special.erf(x),
                 lambda: x + np.ones(3), lambda: np.ones(3) + x):
        with pytest.raises(TypeError):
            call()
    assert type(x.sum()) is DeviceArray and x.sum().shape == ()  # reductions stay on the device, 0-d
    assert float(x.sum()) == 15.0 and type(x.get()) is np.ndarray
    fake_device.leaks.clear()


def test_fake_arrays_count_each_read_by_the_host(fake):
    # every transfer a GPU would wait for: the scalar conversions, .item/.tolist/.get, printing, cupy.asnumpy,
    # and the calls whose result's shape CuPy must read first (a boolean mask, nonzero); arithmetic on the
    # device reads nothing. Counted once each, in nested blocks too
    x = fake.asarray(np.arange(4.0))
    with fake_device.count_syncs() as outer:
        y = (x * 2).sum()
        with fake_device.count_syncs() as inner:
            float(y), bool(y > 0), int(y), y.item(), x.tolist(), x.get(), fake.asnumpy(x), f"{y}"
            x[x > 1], fake.nonzero(x)
    assert sum(inner.values()) == sum(outer.values()) == 10
    with fake_device.count_syncs() as none:
        (x @ x) + fake.exp(x).max()
    assert not none


@pytest.mark.parametrize("name", ["relu", "tanh", "gelu", "softplus"])
def test_activations_on_the_device_match_numpy(fake, name):
    z = np.linspace(-3, 3, 13)
    sigma = get_activation(name)
    for fn in (sigma, sigma.derivative):
        _close(fn(fake.asarray(z)), fn(z), name)


def test_kernels_on_the_device_match_numpy(fake):
    from shallow.kernels import ntk, random_feature_kernel

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    X, Y = X / np.linalg.norm(X, axis=1, keepdims=True), Y / np.linalg.norm(Y, axis=1, keepdims=True)
    for kernel in (random_feature_kernel, ntk):
        _close(kernel(fake.asarray(X), fake.asarray(Y), get_activation("relu")),
               kernel(X, Y, get_activation("relu")), kernel.__name__)


def test_two_layer_network_gradients_on_the_device_match_numpy(fake):
    from shallow.networks import TwoLayer

    rng = np.random.default_rng(1)
    a, W = rng.standard_normal(7), rng.standard_normal((7, 5))  # (m,), (m, d + 1): a bias column
    X, r = rng.standard_normal((23, 4)), rng.standard_normal(23)  # (n, d), (n,)
    host = TwoLayer(a, W, gamma=0.37, bias=True)
    dev = TwoLayer(fake.asarray(a), fake.asarray(W), gamma=0.37, bias=True)
    for d, h, what in zip(dev.value_and_gradients(fake.asarray(X), fake.asarray(r)),
                          host.value_and_gradients(X, r), ("f", "grad a", "grad W"), strict=True):
        _close(d, h, what)


def test_max_pool_backward_on_the_device_matches_numpy(fake):
    # the gradient goes to each window's first maximum, on either device
    from shallow.cnn.pooling import MaxPool2d

    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((2, 6, 6, 3)), rng.standard_normal((2, 3, 3, 3))
    host, dev = MaxPool2d(2), MaxPool2d(2)
    _close(dev.forward(fake.asarray(x)), host.forward(x), "forward")
    _close(dev.backward(fake.asarray(dy)), host.backward(dy), "backward")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cnn_training_steps_on_the_device_match_numpy(fake, optimizer):
    from shallow.cnn import SGD, Adam, CrossEntropy, build_model
    from shallow.cnn.train import train_step

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8, 8, 8, 1)), rng.integers(0, 10, 8)
    runs = {}
    for device in ("cpu", "gpu"):
        model = build_model("vgg", (8, 8, 1), 10, rng=0, width=4).to(device)
        params = model.named_parameters()
        opt = SGD(params, lr=0.05, momentum=0.9) if optimizer == "sgd" else Adam(params, lr=1e-3)
        xd, yd = to_device(x, device), to_device(y, device)
        values = [float(train_step(model, CrossEntropy(), opt, xd, yd)[0]) for _ in range(2)]
        runs[device] = values, model.named_parameters()
    np.testing.assert_allclose(runs["gpu"][0], runs["cpu"][0], rtol=RTOL)
    for name, p in runs["cpu"][1].items():
        _close(runs["gpu"][1][name], p, name)
