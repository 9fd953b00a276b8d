"""Device parity of the public routines: each on small inputs, on numpy and on the device, compared.

The statement checked, one parametrized test per module: a public routine given arrays of the device
backend (CuPy on a GPU, or the fake device of tests/fake_device.py under ``SHALLOW_FAKE_DEVICE=1``)
returns arrays of that backend holding the numbers that its numpy path gives, without a host call on
device data. Without a GPU or the fake device every test here is skipped (the ``xp`` fixture below has
the device parameter only: comparing numpy with itself could not fail).

A parity case is a function ``case(xp)`` that builds small inputs with ``xp.asarray`` (from a fixed
seed, on the host) and calls one public routine on them; :func:`check_parity` runs it once with numpy
and once with the device's ``xp``, and checks that every array of the result is on xp's device and
holds the numpy numbers.

The tolerance: the device may sum in another order (cuBLAS blocking, split reductions, other FFT
plans). In float64 a sum of n terms of size <= s carries a rounding error below n eps s, about 1e-14
for the few hundred terms here; ``RTOL = 1e-10`` of the largest entry of the result leaves a margin
of 1e4 for the condition of the routine (solves, eigenvectors of well-separated eigenvalues). An
entry that cancels to rounding (the gradient of a bias that a normalisation removes, ~1e-17) carries
an absolute error of eps times the size of the operands, not of itself: each array is compared at
``rtol`` times the larger of its own largest entry and 1e-3 of the largest entry of the whole result.
In float32 (eps = 6e-8), ``RTOL32 = 1e-4``.

A routine documented to return host data (a numpy array "on the host": harmonic spectra, piece
counts, predicted labels) is marked with :func:`on_host`: its arrays must then be numpy arrays.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from shallow import barron, depth, flows, harmonics, kernels, lazy, measures, networks, sphere
from shallow.activations import get_activation
from shallow.backend import to_numpy
from shallow.cnn import (conv, data, group, layers, losses, models, norm, optim, pooling, revnet, ridge, robustness,
                         scattering, train, wavelets)
from shallow.cnn.linearize import linearize as cnn_linearize
from shallow.cnn.linearize import tangent_kernel

# as in conftest: SHALLOW_FAKE_DEVICE=1 runs the device side on tests/fake_device.py
FAKE_DEVICE = os.environ.get("SHALLOW_FAKE_DEVICE") == "1"
RTOL = 1e-10
RTOL32 = 1e-4


@pytest.fixture(params=[pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The device backend: cupy where a GPU answers, the fake device under SHALLOW_FAKE_DEVICE=1, else skipped."""
    if FAKE_DEVICE:
        return request.getfixturevalue("_fake_device")
    import cupy
    return cupy


# ------------------------------------------------------------------ the comparison
def on_host(case):
    """Mark a parity case whose routine returns numpy arrays whatever the device of its inputs."""
    case.on_host = True
    return case


def _largest(obj) -> float:
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "fc" and obj.size:
        finite = obj[np.isfinite(obj)]
        return float(np.max(np.abs(finite), initial=0.0))
    if isinstance(obj, (float, np.floating)) and np.isfinite(obj):
        return abs(float(obj))
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return max((_largest(x) for x in obj), default=0.0)
    return 0.0


def _has_float32(obj) -> bool:
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.dtype in (np.float32, np.complex64)
    if isinstance(obj, dict):
        obj = list(obj.values())
    return isinstance(obj, (tuple, list)) and any(_has_float32(x) for x in obj)


def is_fake(xp) -> bool:
    """Whether ``xp`` is the fake device's cupy namespace of tests/fake_device.py."""
    return getattr(xp.ndarray, "__module__", "") == "fake_device"


def _compare(dev, host, xp, rtol, what, floor, where):
    if isinstance(host, np.ndarray) and host.ndim > 0:
        assert isinstance(dev, where.ndarray), \
            f"{what}: a {type(dev).__module__}.{type(dev).__name__} came back, not an array of {where.__name__}"
        dev = to_numpy(dev)
        assert dev.shape == host.shape and dev.dtype == host.dtype, \
            f"{what}: {dev.dtype}{dev.shape} on the device, {host.dtype}{host.shape} on the host"
        if host.dtype.kind in "biu":
            np.testing.assert_array_equal(dev, host, err_msg=what)
        elif host.size:
            finite = np.isfinite(host)
            np.testing.assert_array_equal(np.isfinite(dev), finite, err_msg=what)
            scale = max(float(np.max(np.abs(host[finite]), initial=0.0)), floor, 1e-300)
            np.testing.assert_allclose(np.where(finite, dev, 0), np.where(finite, host, 0), rtol=0,
                                       atol=rtol * scale, err_msg=what)
    elif isinstance(host, (np.ndarray, np.generic, float, int)) and not isinstance(host, bool):
        host_value = float(np.asarray(host))
        dev_value = float(dev) if not hasattr(dev, "shape") else float(to_numpy(dev))
        np.testing.assert_allclose(dev_value, host_value, rtol=rtol, atol=rtol * floor, err_msg=what)
    elif isinstance(host, dict):
        assert set(dev) == set(host), what
        for key in host:
            _compare(dev[key], host[key], xp, rtol, f"{what}[{key!r}]", floor, where)
    elif isinstance(host, (tuple, list)):
        assert len(dev) == len(host), what
        for i, (d, h) in enumerate(zip(dev, host, strict=True)):
            _compare(d, h, xp, rtol, f"{what}[{i}]", floor, where)
    else:
        assert dev == host, f"{what}: {dev!r} on the device, {host!r} on the host"


def check_parity(case, xp, what, rtol=RTOL):
    """Run ``case`` on numpy and on ``xp``; the device result is on xp's device (on the host for a case
    marked :func:`on_host`) and within ``rtol`` of the numpy one (module notes). On the fake device, a
    host call on device data fails the check too."""
    host = case(np)
    if _has_float32(host):
        rtol = max(rtol, RTOL32)
    if is_fake(xp):
        import fake_device

        fake_device.leaks.clear()
        dev = case(xp)
        found = sorted(f"{loc}: {call} ({kind})" for (kind, call, loc) in fake_device.leaks
                       if not loc.startswith("<outside"))
        fake_device.leaks.clear()
        assert not found, f"{what}: host calls on device data:\n" + "\n".join(found)
    else:
        dev = case(xp)
    _compare(dev, host, xp, rtol, what, 1e-3 * _largest(host), np if getattr(case, "on_host", False) else xp)


def parity_params(cases, cuda=()):
    """The names of ``cases``, sorted, for ``pytest.mark.parametrize``; those in ``cuda`` (routines that
    hand device arrays to a library the fake device cannot stand in for, such as POT) marked ``cuda``."""
    return [pytest.param(name, marks=pytest.mark.cuda) if name in cuda else name for name in sorted(cases)]


# ------------------------------------------------------------------ inputs (drawn on the host, then moved)
def device_name(xp) -> str:
    """The ``device=`` argument that puts a routine's output where xp's arrays live."""
    return "cpu" if xp is np else "gpu"


def draw(xp, shape, seed=0, scale=1.0):
    """Standard normal entries (times ``scale``) from ``seed``, drawn on the host, as an array of xp."""
    return xp.asarray(scale * np.random.default_rng(seed).standard_normal(shape))


def draw32(xp, shape, seed=0):
    """:func:`draw` in float32."""
    return draw(xp, shape, seed).astype(np.float32)


def unit_rows(xp, n, d, seed=0):
    """n points of the unit sphere S^{d-1} (normalised Gaussian rows), an (n, d) array of xp."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    return xp.asarray(X / np.linalg.norm(X, axis=1, keepdims=True))


def labels(xp, n=6, k=4, seed=5):
    """n integer labels in range(k), an array of xp."""
    return xp.asarray(np.random.default_rng(seed).integers(0, k, n))


def images(xp, n=6, seed=7):
    """A batch of n 8 x 8 one-channel images, (n, 8, 8, 1)."""
    return draw(xp, (n, 8, 8, 1), seed)


def two_layer(xp, bias=True, activation="relu"):
    """A TwoLayer network of width 7 on R^3 (R^4 with the bias coordinate), gamma = 0.37."""
    return networks.TwoLayer(draw(xp, 7), draw(xp, (7, 4 if bias else 3), 1), activation=activation, gamma=0.37,
                             bias=bias)


def measure(xp, seed=0, activation="relu"):
    """A signed measure of 5 atoms on S^2."""
    return measures.Measure(draw(xp, 5, seed), unit_rows(xp, 5, 3, seed + 1), activation=activation)


def atoms(mu):
    """The weights and points of a measure."""
    return mu.weights, mu.points


def cnn_model(xp, arch="vgg", **kwargs):
    """A small CNN on 8 x 8 x 1 images with 4 classes, built on the host from rng=0, on xp's device."""
    return models.build_model(arch, (8, 8, 1), 4, rng=0, width=4, **kwargs).to(device_name(xp))


def layer_pass(xp, layer, in_shape, n=2, jvp=True, mode="train"):
    """forward, backward (input, parameter gradients, buffers) and jvp of ``layer``, a layer built on the
    host (by the case, afresh on each call), moved to xp's device, on a batch of n inputs of shape
    ``in_shape``."""
    layer.to(device_name(xp))
    layer.train(mode == "train")
    x = draw(xp, (n, *in_shape), 10)
    y = layer.forward(x)
    out = {"y": y, "dx": layer.backward(draw(xp, y.shape, 11))}
    out.update({"grad " + k: v for k, v in layer.named_gradients().items()})
    out.update({"buffer " + k: v for k, v in layer.named_buffers().items()})
    if jvp:
        tparams = {k: draw(xp, v.shape, 13) for k, v in layer.named_parameters().items()}
        out["jvp"] = layer.jvp(x, draw(xp, x.shape, 12), tparams)
    return out


def layer_pass32(xp, layer, in_shape):
    """forward and backward of a float32 layer (as :func:`layer_pass`) on float32 inputs."""
    layer.to(device_name(xp))
    x = draw32(xp, (2, *in_shape), 10)
    y = layer.forward(x)
    return {"y": y, "dx": layer.backward(draw32(xp, y.shape, 11)), **layer.named_gradients()}


def _square(X):
    return X ** 2


def _cube(X):
    return X ** 3


# ------------------------------------------------------------------ shallow.activations
def _line(xp):
    """13 points of [-3, 3], an array of xp."""
    return xp.linspace(-3.0, 3.0, 13)


def _activation_case(name, derivative, **params):
    """sigma (or sigma') of the named activation on _line(xp)."""
    def case(xp):
        sigma = get_activation(name, **params)
        return (sigma.derivative if derivative else sigma)(_line(xp))
    return case


ACTIVATIONS_ON_DEVICE = {
    name + (".derivative" if derivative else ""): _activation_case(name, derivative, **params)
    for name, params in [("abs", {}), ("erf", {}), ("gelu", {}), ("quadratic", {}), ("relu", {}),
                         ("relu_power", {"alpha": 2}), ("sigmoid", {}), ("softplus", {}), ("step", {}), ("tanh", {})]
    for derivative in (False, True)
}


@pytest.mark.parametrize("routine", parity_params(ACTIVATIONS_ON_DEVICE))
def test_activations_routines_on_the_device_match_numpy(xp, routine):
    check_parity(ACTIVATIONS_ON_DEVICE[routine], xp, "shallow.activations." + routine)


# ------------------------------------------------------------------ shallow.barron
def _center(xp):
    return xp.asarray([0.1, 0.2, -0.3])


def _ridge_direction(xp):
    return xp.asarray([1.0, -0.5, 0.2])


def _maurey_sample_relu_representation(xp):
    representation = barron.GaussianTarget(3).representation("relu", radius=2.0)
    return barron.maurey_sample(representation, 8, rng=0, device=device_name(xp), dtype=np.float32).parameters


def _maurey_sample_representation(xp):
    representation = barron.GaussianTarget(3).representation()
    return barron.maurey_sample(representation, 8, rng=0, device=device_name(xp)).parameters


BARRON_ON_DEVICE = {
    "COSINE": lambda xp: barron.COSINE(xp.linspace(-3.0, 3.0, 9)),
    "COSINE.derivative": lambda xp: barron.COSINE.derivative(xp.linspace(-3.0, 3.0, 9)),
    "GaussianTarget": lambda xp: barron.GaussianTarget(3, scale=0.7)(draw(xp, (6, 3))),
    "GaussianTarget.center": lambda xp: barron.GaussianTarget(3, scale=0.7, center=_center(xp))(draw(xp, (6, 3))),
    "GaussianTarget.fourier_transform":
        lambda xp: barron.GaussianTarget(3, scale=0.7).fourier_transform(draw(xp, (6, 3))),
    "GaussianTarget.gradient_at_zero":
        on_host(lambda xp: barron.GaussianTarget(3, scale=0.7, center=_center(xp)).gradient_at_zero()),
    "RidgeTarget": lambda xp: barron.RidgeTarget(_ridge_direction(xp))(draw(xp, (6, 3))),
    "RidgeTarget.cosine": lambda xp: barron.RidgeTarget(_ridge_direction(xp), profile="cos")(draw(xp, (6, 3))),
    "maurey_sample.measure": lambda xp: barron.maurey_sample(measure(xp), 8, rng=0).parameters,
    "maurey_sample.network": lambda xp: barron.maurey_sample(two_layer(xp), 8, rng=0).parameters,
    "maurey_sample.relu_representation": _maurey_sample_relu_representation,
    "maurey_sample.representation": _maurey_sample_representation,
    "sample_ball": lambda xp: barron.sample_ball(6, 3, rng=0, device=device_name(xp)),
    "single_neuron_norms": on_host(lambda xp: barron.single_neuron_norms(0.7, draw(xp, 3, 1), 3)),
}


@pytest.mark.parametrize("routine", parity_params(BARRON_ON_DEVICE))
def test_barron_routines_on_the_device_match_numpy(xp, routine):
    check_parity(BARRON_ON_DEVICE[routine], xp, "shallow.barron." + routine)


# ------------------------------------------------------------------ shallow.depth
def _sawtooth_float32(xp):
    net = depth.sawtooth(4, dtype=np.float32, device=device_name(xp))
    return net(xp.linspace(0.0, 1.0, 17, dtype=np.float32)[:, None])


def _deep_relu_to_device(xp):
    net = depth.DeepReLU.from_two_layer(two_layer(np)).to_device(device_name(xp))
    return net(draw(xp, (6, 3), 2))


def _eldan_shamir_network(xp):
    net = depth.EldanShamirFunction(3, n_shells=2, rng=0, ramp=0.3).network(0.1, device=device_name(xp))
    return net(draw(xp, (6, 3)))


def _piecewise_linear(xp):
    f = depth.PiecewiseLinear(xp.asarray([0.0, 0.5, 1.0]), xp.asarray([1.0, -1.0]), xp.asarray([0.0, 1.0]))
    return f(xp.linspace(0.0, 1.0, 9))


def _count_linear_pieces_direction(xp):
    net = depth.DeepReLU.from_two_layer(two_layer(xp))
    return depth.count_linear_pieces(net, (-2.0, 2.0), origin=xp.asarray([0.1, 0.0, 0.2]),
                                     direction=xp.asarray([1.0, 0.5, -0.2]))


def _daniely_network(xp):
    net = depth.daniely_network(2, 0.2, device=device_name(xp))
    return net(depth.sample_daniely(6, 2, rng=0, device=device_name(xp)))


def _daniely_network_float32_moved(xp):
    # built on the host, then cast and moved: the rank-one W_2 travels as its two factors
    net = depth.daniely_network(2, 0.2).astype(np.float32).to_device(device_name(xp))
    return net(depth.sample_daniely(6, 2, rng=0, dtype=np.float32, device=device_name(xp)))


def _count_linear_pieces_rank_one(xp):
    net = depth.radial_network(xp.asarray([0.0, 0.5, 1.0]), xp.asarray([0.0, 1.0, 0.0]), 2, 1.0, 0.05,
                               device=device_name(xp))
    return depth.count_linear_pieces(net, (0.0, 2.0), origin=xp.asarray([-1.0, 0.1]), direction=xp.asarray([1.0, 0.0]))


def _rank_one_weights(xp):
    W = depth.RankOneWeights(draw(xp, (4,)), draw(xp, (3,), 1))
    return W @ draw(xp, (3, 2), 2), W.T @ draw(xp, (4,), 3), W.dense()


def _l1_distance(xp, **kwargs):
    return depth.l1_distance(depth.sawtooth(2, device=device_name(xp)), depth.sawtooth(3, device=device_name(xp)),
                             **kwargs)


def _l1_distance_exact(xp):
    return _l1_distance(xp, exact=True)


def _linear_pieces(xp):
    pieces = depth.linear_pieces(depth.sawtooth(2, device=device_name(xp)))
    return pieces.breakpoints, pieces.slopes, pieces.intercepts


def _radial_network(xp):
    net = depth.radial_network(xp.asarray([0.0, 0.5, 1.0]), xp.asarray([0.0, 1.0, 0.0]), 3, 2.0,
                               device=device_name(xp))
    return net(draw(xp, (6, 3)))


DEPTH_ON_DEVICE = {
    "DeepReLU.float32": _sawtooth_float32,
    "DeepReLU.from_two_layer": lambda xp: depth.DeepReLU.from_two_layer(two_layer(xp))(draw(xp, (6, 3), 2)),
    "DeepReLU.to_device": _deep_relu_to_device,
    "EldanShamirFunction": lambda xp: depth.EldanShamirFunction(3, n_shells=3, rng=0)(draw(xp, (6, 3))),
    "EldanShamirFunction.network": _eldan_shamir_network,
    "PiecewiseLinear": on_host(_piecewise_linear),
    "RankOneWeights": _rank_one_weights,
    "ball_indicator": lambda xp: depth.ball_indicator(draw(xp, (6, 3))),
    "ball_indicator_network": lambda xp: depth.ball_indicator_network(3, device=device_name(xp))(draw(xp, (6, 3))),
    "count_linear_pieces": lambda xp: depth.count_linear_pieces(depth.sawtooth(3, device=device_name(xp))),
    "count_linear_pieces.direction": _count_linear_pieces_direction,
    "count_linear_pieces.rank_one": _count_linear_pieces_rank_one,
    "daniely_function": lambda xp: depth.daniely_function(draw(xp, (6, 6))),
    "daniely_network": _daniely_network,
    "daniely_network.float32.to_device": _daniely_network_float32_moved,
    "eldan_shamir_density": lambda xp: depth.eldan_shamir_density(draw(xp, (6, 3))),
    "eldan_shamir_phi": lambda xp: depth.eldan_shamir_phi(draw(xp, (6, 3))),
    "eldan_shamir_radial_cdf": lambda xp: depth.eldan_shamir_radial_cdf(xp.linspace(0.1, 3.0, 7), 3),
    "eldan_shamir_radial_density": lambda xp: depth.eldan_shamir_radial_density(xp.linspace(0.1, 3.0, 7), 3),
    "l1_distance": _l1_distance,
    "l1_distance.exact": _l1_distance_exact,
    "linear_pieces": on_host(_linear_pieces),
    "radial_network": _radial_network,
    "sample_daniely": lambda xp: depth.sample_daniely(6, 3, rng=0, device=device_name(xp)),
    "sample_eldan_shamir": lambda xp: depth.sample_eldan_shamir(6, 3, rng=0, device=device_name(xp)),
    "sawtooth": lambda xp: depth.sawtooth(3, device=device_name(xp))(xp.linspace(0.0, 1.0, 17)[:, None]),
}


@pytest.mark.parametrize("routine", parity_params(DEPTH_ON_DEVICE))
def test_depth_routines_on_the_device_match_numpy(xp, routine):
    check_parity(DEPTH_ON_DEVICE[routine], xp, "shallow.depth." + routine)


# ------------------------------------------------------------------ shallow.flows
def _empirical_risk(xp, **kwargs):
    """The empirical risk of 9 Gaussian samples in R^3 and their Gaussian labels."""
    return flows.EmpiricalRisk(draw(xp, (9, 3), 2), draw(xp, 9, 3), **kwargs)


def _student(xp, activation="relu"):
    """A TwoLayer network of width 4 on R^3, gamma = 0.5, to fit a teacher under the population risk."""
    return networks.TwoLayer(draw(xp, 4, 7), draw(xp, (4, 3), 8), activation=activation, gamma=0.5)


def _flow(xp, **kwargs):
    """5 steps of 0.1 of the gradient flow of a TwoLayer network of width 6 on the empirical risk."""
    net = networks.TwoLayer(draw(xp, 6), draw(xp, (6, 3), 1), gamma=0.5)
    return flows.gradient_flow(net, _empirical_risk(xp), 5, 0.1, **kwargs)


def _flow_run(xp, **kwargs):
    traj = _flow(xp, **kwargs)
    return traj.times, traj.risks, traj.snapshots_a, traj.snapshots_W, traj.a, traj.W


def _flow_final_state(xp, **kwargs):
    traj = _flow(xp, **kwargs)
    return traj.a, traj.W


def _population_risk_step(xp):
    risk = flows.PopulationRisk(two_layer(xp, bias=False, activation="step"), "sphere")
    return risk.value_and_grad(_student(xp, activation="step"))


def _population_risk_antiparallel(xp):
    """A student whose particles are nearly antiparallel to the teacher's (pi - th ~ 1e-7: kernels._pair_sine)."""
    teacher = two_layer(xp, bias=False)
    student = networks.TwoLayer(draw(xp, 7, 7), -2 * teacher.W + draw(xp, (7, 3), 8, 1e-7), gamma=0.5)
    return flows.PopulationRisk(teacher).value_and_grad(student)


FLOWS_ON_DEVICE = {
    "EmpiricalRisk.__call__": lambda xp: _empirical_risk(xp)(two_layer(xp, bias=False)),
    "EmpiricalRisk.chunked": lambda xp: _empirical_risk(xp, chunk_bytes=64).value_and_grad(two_layer(xp, bias=True)),
    "EmpiricalRisk.value_and_grad": lambda xp: _empirical_risk(xp).value_and_grad(two_layer(xp, bias=False)),
    "PopulationRisk.gaussian":
        lambda xp: flows.PopulationRisk(two_layer(xp, bias=False)).value_and_grad(_student(xp)),
    "PopulationRisk.step": _population_risk_step,
    "PopulationRisk.antiparallel": _population_risk_antiparallel,
    "PopulationRisk.value_and_grad":
        lambda xp: flows.PopulationRisk(two_layer(xp, bias=False), "sphere").value_and_grad(_student(xp)),
    "gradient_flow.euler": on_host(_flow_run),
    "gradient_flow.final_state": on_host(_flow_final_state),
    "gradient_flow.noise": on_host(lambda xp: _flow_final_state(xp, noise=0.1, rng=0)),
    "gradient_flow.rk4": on_host(lambda xp: _flow_run(xp, method="rk4")),
    "gradient_flow.weight_decay": on_host(lambda xp: _flow_run(xp, weight_decay=0.1)),
}


@pytest.mark.parametrize("routine", parity_params(FLOWS_ON_DEVICE))
def test_flows_routines_on_the_device_match_numpy(xp, routine):
    check_parity(FLOWS_ON_DEVICE[routine], xp, "shallow.flows." + routine)


# ------------------------------------------------------------------ shallow.harmonics
def _harmonic_energy_weights(xp):
    X = unit_rows(xp, 50, 3)
    return harmonics.harmonic_energy(X[:, 0] ** 3, X, 3, weights=xp.full(50, 1 / 50), block_size=7)


def _harmonic_energy_weights_by_pairs(xp):
    X = unit_rows(xp, 50, 4)
    return harmonics.harmonic_energy(X[:, 0] ** 3, X, 3, weights=xp.full(50, 1 / 50), method="pairs")


HARMONICS_ON_DEVICE = {
    "harmonic_energy": lambda xp: harmonics.harmonic_energy(unit_rows(xp, 50, 3)[:, 0] ** 2, unit_rows(xp, 50, 3), 3),
    "harmonic_energy.weights": _harmonic_energy_weights,
    "harmonic_energy.weights.pairs": _harmonic_energy_weights_by_pairs,
    "legendre": lambda xp: harmonics.legendre(3, 4, xp.linspace(-1.0, 1.0, 11)),
    "legendre.float32": lambda xp: harmonics.legendre(4, 3, xp.linspace(-1.0, 1.0, 11, dtype=np.float32)),
    "legendre_all": lambda xp: harmonics.legendre_all(5, 3, xp.linspace(-1.0, 1.0, 11)),
    "spherical_harmonic":
        lambda xp: harmonics.spherical_harmonic(unit_rows(xp, 7, 3), harmonics.harmonic_indices(3, 2)[1]),
    "spherical_harmonics": lambda xp: harmonics.spherical_harmonics(unit_rows(xp, 7, 3), 2),
    "spherical_harmonics.d2": lambda xp: harmonics.spherical_harmonics(unit_rows(xp, 7, 2), 3),
    "spherical_harmonics.d4": lambda xp: harmonics.spherical_harmonics(unit_rows(xp, 7, 4), 3),
    "spherical_harmonics.d8": lambda xp: harmonics.spherical_harmonics(unit_rows(xp, 7, 8), 3),
}


@pytest.mark.parametrize("routine", parity_params(HARMONICS_ON_DEVICE))
def test_harmonics_routines_on_the_device_match_numpy(xp, routine):
    check_parity(HARMONICS_ON_DEVICE[routine], xp, "shallow.harmonics." + routine)


# ------------------------------------------------------------------ shallow.kernels
def _dot_product_kernel(xp, kind, activation, *args, **kwargs):
    """The dot-product kernel of ``kind`` for ``activation`` on 9 points of [-1, 1]."""
    return kernels.dot_product_kernel(kind, get_activation(activation), *args, **kwargs)(xp.linspace(-1.0, 1.0, 9))


def _rf_kernel(xp, activation="relu", Y=True, **kwargs):
    """The random-feature kernel of 6 points of S^2 with 4 others (``Y=True``) or with themselves."""
    X = unit_rows(xp, 6, 3)
    return kernels.random_feature_kernel(X, unit_rows(xp, 4, 3, 1) if Y else None, get_activation(activation),
                                         **kwargs)


def _rf_kernel_float32(xp):
    X, Y = unit_rows(xp, 6, 3).astype(np.float32), unit_rows(xp, 4, 3, 1).astype(np.float32)
    return kernels.random_feature_kernel(X, Y, get_activation("relu"))


def _rf_kernel_antiparallel(xp):
    """relu^3 between 6 points of S^2 and 6 nearly antiparallel to them (pi - theta ~ 1e-6: kernels._pair_sine)."""
    X = unit_rows(xp, 6, 3)
    return kernels.random_feature_kernel(X, -3 * X + draw(xp, (6, 3), 1, 1e-6), get_activation("relu_power", alpha=3))


def _ntk_gelu_sphere(xp):
    return kernels.ntk(unit_rows(xp, 6, 4), unit_rows(xp, 3, 4, 1), get_activation("gelu"), weights="sphere")


def _ntk_monte_carlo(xp):
    return kernels.ntk(unit_rows(xp, 6, 3), unit_rows(xp, 2, 3, 1), get_activation("tanh"), n_features=50, rng=0)


def _rkhs_norm(xp):
    A = draw(xp, (5, 5), 1)
    return kernels.rkhs_norm(draw(xp, 5), A @ A.T + xp.eye(5))


KERNELS_ON_DEVICE = {
    "dot_product_kernel.ntk": lambda xp: _dot_product_kernel(xp, "ntk", "relu", "sphere", d=3),
    "dot_product_kernel.rf": lambda xp: _dot_product_kernel(xp, "nngp", "relu"),
    "dot_product_kernel.softplus": lambda xp: _dot_product_kernel(xp, "ntk", "softplus", "sphere", d=3),
    "f2_norm_from_harmonics":
        lambda xp: kernels.f2_norm_from_harmonics(xp.abs(draw(xp, 4)), xp.asarray([1.0, 0.5, 0.25, 0.125])),
    "ntk": lambda xp: kernels.ntk(unit_rows(xp, 6, 3), unit_rows(xp, 4, 3, 1), get_activation("relu")),
    "ntk.gelu.sphere": _ntk_gelu_sphere,
    "ntk.monte_carlo": _ntk_monte_carlo,
    "ntk.tanh": lambda xp: kernels.ntk(unit_rows(xp, 6, 3), None, get_activation("tanh")),
    "random_feature_kernel": _rf_kernel,
    "random_feature_kernel.antiparallel": _rf_kernel_antiparallel,
    "random_feature_kernel.float32": _rf_kernel_float32,
    "random_feature_kernel.monte_carlo": lambda xp: _rf_kernel(xp, Y=False, n_features=50, rng=0),
    "random_feature_kernel.sphere": lambda xp: _rf_kernel(xp, Y=False, weights="sphere"),
    "random_feature_kernel.tanh": lambda xp: _rf_kernel(xp, "tanh"),
    "rkhs_norm": _rkhs_norm,
}


@pytest.mark.parametrize("routine", parity_params(KERNELS_ON_DEVICE))
def test_kernels_routines_on_the_device_match_numpy(xp, routine):
    check_parity(KERNELS_ON_DEVICE[routine], xp, "shallow.kernels." + routine)


# ------------------------------------------------------------------ shallow.lazy
def _spd(xp, n=6, seed=1):
    A = np.random.default_rng(seed).standard_normal((n, n))  # (n, n)
    return xp.asarray(A @ A.T / n + 0.1 * np.eye(n))  # eigenvalues >= 0.1: solves at condition <= 1e3


def _lazy_diagnostics(xp):
    net = two_layer(xp, bias=False)
    X, y = draw(xp, (9, 3), 2), draw(xp, 9, 3)
    diagnostics = lazy.LazyDiagnostics(net, X, y=y)
    return diagnostics.finish(flows.gradient_flow(net, flows.EmpiricalRisk(X, y), 4, 0.1, callback=None)).result()


def _linearized_risk_moved(xp):
    lin = lazy.linearize(two_layer(xp, bias=False))
    risk = lazy.LinearizedRisk(draw(xp, (9, 3), 2), draw(xp, 9, 3), chunk_bytes=64, cache_bytes=0)
    return risk.value_and_grad(lin, lin.a0 + 0.1, lin.W0 * 1.1)


def _linearized_risk(xp):
    risk = lazy.LinearizedRisk(draw(xp, (9, 3), 2), draw(xp, 9, 3))
    return risk.value_and_grad(lazy.linearize(two_layer(xp, bias=False)))


def _empirical_ntk_outer(xp):
    net = two_layer(xp, bias=False, activation="tanh")
    return lazy.empirical_ntk(net, draw(xp, (9, 3), 2), train="outer", chunk_size=2)


def _empirical_ntk_Y(xp):
    return lazy.empirical_ntk(two_layer(xp, bias=True), draw(xp, (9, 3), 2), draw(xp, (4, 3), 5), train="inner")


def _kernel_flow(xp):
    return tuple(lazy.kernel_flow(_spd(xp), draw(xp, 6, 3), xp.asarray([0.0, 0.5, 2.0]), K_test=draw(xp, (2, 6), 4)))


def _kernel_flow_f0(xp):
    return tuple(lazy.kernel_flow(_spd(xp), draw(xp, (6, 2), 3), 1.5, f0=draw(xp, (6, 2), 4),
                                  K_test=draw(xp, (2, 6), 4), f0_test=draw(xp, (2, 2), 5), time_scale=2.0))


def _kernel_regression(xp):
    return tuple(lazy.kernel_regression(_spd(xp), draw(xp, 6, 3), 0.1, K_test=draw(xp, (2, 6), 4)))


def _kernel_regression_f0(xp):
    return tuple(lazy.kernel_regression(_spd(xp), draw(xp, 6, 3), 0.0, f0=draw(xp, 6, 4), rcond=1e-10))


def _linearize_float32(xp):
    net = networks.TwoLayer(draw32(xp, 7), draw32(xp, (7, 4), 1), gamma=0.37, bias=True)
    return lazy.linearize(net)(draw32(xp, (9, 3), 2), chunk_size=2)


def _relative_weight_change(xp):
    return lazy.relative_weight_change(two_layer(xp, bias=False), draw(xp, 7, 5), draw(xp, (7, 3), 6))


LAZY_ON_DEVICE = {
    "LazyDiagnostics": on_host(_lazy_diagnostics),
    "LinearizedRisk.moved": _linearized_risk_moved,
    "LinearizedRisk.value_and_grad": _linearized_risk,
    "activation_flips":
        lambda xp: lazy.activation_flips(two_layer(xp, bias=False), draw(xp, (7, 3), 6), draw(xp, (9, 3), 2)),
    "centered": lambda xp: lazy.centered(two_layer(xp, bias=False)).parameters,
    "centered_init": lambda xp: lazy.centered_init(4, 3, rng=0, device=device_name(xp)).parameters,
    "empirical_ntk": lambda xp: lazy.empirical_ntk(two_layer(xp, bias=False), draw(xp, (9, 3), 2)),
    "empirical_ntk.Y": _empirical_ntk_Y,
    "empirical_ntk.outer": _empirical_ntk_outer,
    "kernel_flow": _kernel_flow,
    "kernel_flow.f0": _kernel_flow_f0,
    "kernel_regression": _kernel_regression,
    "kernel_regression.f0": _kernel_regression_f0,
    "kernel_regression.ridgeless": lambda xp: tuple(lazy.kernel_regression(_spd(xp), draw(xp, 6, 3))),
    "linearize.__call__": lambda xp: lazy.linearize(two_layer(xp, bias=False))(draw(xp, (9, 3), 2)),
    "linearize.float32": _linearize_float32,
    "relative_kernel_change": lambda xp: lazy.relative_kernel_change(_spd(xp), _spd(xp, seed=2)),
    "relative_weight_change": _relative_weight_change,
    "scaled": lambda xp: lazy.scaled(two_layer(xp, bias=False), 3.0).parameters,
}


@pytest.mark.parametrize("routine", parity_params(LAZY_ON_DEVICE))
def test_lazy_routines_on_the_device_match_numpy(xp, routine):
    check_parity(LAZY_ON_DEVICE[routine], xp, "shallow.lazy." + routine)


# ------------------------------------------------------------------ shallow.measures
def _three_atoms(xp):
    """Weights 1, 2, -1 at the points e_1, e_1, e_2 of S^1 (two atoms at the same point)."""
    return measures.Measure(xp.asarray([1.0, 2.0, -1.0]), xp.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))


def _measure_evaluate_bias(xp):
    mu = measures.Measure(draw(xp, 5), unit_rows(xp, 5, 4, 1), activation="relu", bias=True)
    return mu.evaluate(draw(xp, (6, 3), 9))


def _wasserstein_measures(xp):
    mu = measures.Measure(xp.abs(draw(xp, 5)), unit_rows(xp, 5, 3, 1))
    mass = float(xp.abs(draw(xp, 5)).sum()) / 4
    nu = measures.Measure(xp.abs(draw(xp, 4, 3)) * 0 + 1.0, unit_rows(xp, 4, 3, 2)) * mass
    return measures.wasserstein(mu, nu)


def _wasserstein_weights(xp):
    return measures.wasserstein(unit_rows(xp, 6, 3), unit_rows(xp, 5, 3, 4), p=1, mu_weights=xp.full(6, 1 / 6),
                                nu_weights=xp.asarray([0.1, 0.2, 0.3, 0.2, 0.2]))


MEASURES_ON_DEVICE = {
    "Measure.__add__": lambda xp: atoms(measure(xp) + 2.0 * measure(xp, 3) - measure(xp, 5)),
    "Measure.evaluate": lambda xp: measure(xp).evaluate(draw(xp, (6, 3), 9)),
    "Measure.evaluate.bias": _measure_evaluate_bias,
    "Measure.mass": lambda xp: measure(xp).mass(),
    "Measure.merge": lambda xp: atoms(_three_atoms(xp).merge()),
    "Measure.positive": lambda xp: atoms(measure(xp).positive()),
    "Measure.total_variation": lambda xp: measure(xp).total_variation(),
    "best_neuron":
        on_host(lambda xp: measures.best_neuron(draw(xp, 12, 5), unit_rows(xp, 12, 3), candidates=50, rng=0)),
    "conditional_gradient": lambda xp: atoms(measures.conditional_gradient(unit_rows(xp, 12, 3), draw(xp, 12, 5), 1.0,
                                                                           steps=3, candidates=50, rng=0)[0]),
    "harmonic_spectrum": on_host(lambda xp: measures.harmonic_spectrum(measure(xp), 4)),
    "harmonic_spectrum.tanh": on_host(lambda xp: measures.harmonic_spectrum(measure(xp, activation="tanh"), 3)),
    "measure_to_network": lambda xp: measures.measure_to_network(measure(xp)).parameters,
    "network_to_measure": lambda xp: atoms(measures.network_to_measure(two_layer(xp, bias=False))),
    "sliced_wasserstein":
        lambda xp: measures.sliced_wasserstein(unit_rows(xp, 6, 3), unit_rows(xp, 5, 3, 4), n_projections=20, rng=0),
    "unbalanced_distance": lambda xp: measures.unbalanced_distance(unit_rows(xp, 6, 3), unit_rows(xp, 5, 3, 4)),
    "variation_norm": lambda xp: measures.variation_norm(two_layer(xp, bias=False)),
    "variation_norm.measure": lambda xp: measures.variation_norm(_three_atoms(xp)),
    "wasserstein": lambda xp: measures.wasserstein(unit_rows(xp, 6, 3), unit_rows(xp, 5, 3, 4)),
    "wasserstein.measures": _wasserstein_measures,
    "wasserstein.weights": _wasserstein_weights,
}


# POT (sliced_wasserstein, unbalanced_distance) takes the device arrays itself: no fake device stands in for it
MEASURES_ON_CUDA = ("sliced_wasserstein", "unbalanced_distance")


@pytest.mark.parametrize("routine", parity_params(MEASURES_ON_DEVICE, cuda=MEASURES_ON_CUDA))
def test_measures_routines_on_the_device_match_numpy(xp, routine):
    check_parity(MEASURES_ON_DEVICE[routine], xp, "shallow.measures." + routine)


# ------------------------------------------------------------------ shallow.networks
def _two_layer_chunked_float32(xp):
    net = networks.TwoLayer(draw32(xp, 7), draw32(xp, (7, 4), 1), gamma=0.37, bias=True)
    return net.value_and_gradients(draw32(xp, (11, 3), 2), draw32(xp, 11, 3), chunk_size=3)


def _two_layer_init_sphere_balanced(xp):
    net = networks.TwoLayer.init(6, 3, rng=0, weights="sphere", a_init="balanced", bias=True, dtype=np.float32,
                                 device=device_name(xp))
    return net.parameters


def _fused_pass(xp, activation="relu", **kwargs):
    return networks.fused_pass(draw(xp, (11, 3), 2), draw(xp, 7), draw(xp, (7, 3), 1), 0.3, get_activation(activation),
                               residual=draw(xp, 11, 3), **kwargs)


NETWORKS_ON_DEVICE = {
    "TwoLayer.__call__": lambda xp: two_layer(xp)(draw(xp, (11, 3), 2)),
    "TwoLayer.chunked.float32": _two_layer_chunked_float32,
    "TwoLayer.gelu_gradients":
        lambda xp: two_layer(xp, activation="gelu").gradients(draw(xp, (11, 3), 2), draw(xp, 11, 3)),
    "TwoLayer.gradients": lambda xp: two_layer(xp, activation="tanh").gradients(draw(xp, (11, 3), 2), draw(xp, 11, 3)),
    "TwoLayer.init": lambda xp: networks.TwoLayer.init(5, 3, rng=0, device=device_name(xp)).parameters,
    "TwoLayer.init.sphere_balanced": _two_layer_init_sphere_balanced,
    "TwoLayer.particles": lambda xp: two_layer(xp).particles(),
    "TwoLayer.to_measure": lambda xp: atoms(two_layer(xp).to_measure()),
    "TwoLayer.value_and_gradients":
        lambda xp: two_layer(xp, bias=False).value_and_gradients(draw(xp, (11, 3), 2), draw(xp, 11, 3)),
    "fused_pass": _fused_pass,
    "fused_pass.blocks": lambda xp: _fused_pass(xp, "tanh", chunk_size=2, block_bytes=64),
}


@pytest.mark.parametrize("routine", parity_params(NETWORKS_ON_DEVICE))
def test_networks_routines_on_the_device_match_numpy(xp, routine):
    check_parity(NETWORKS_ON_DEVICE[routine], xp, "shallow.networks." + routine)


def _small_network_pass(xp):
    return networks.TwoLayer(draw(xp, 3), draw(xp, (3, 2), 1))(draw(xp, (4, 2), 2))


def test_default_block_bytes_on_the_device_lies_between_the_host_size_and_the_device_cap(xp):
    # on a device min(GPU_BLOCK_BYTES, free / 4) and at least BLOCK_BYTES, the free memory read through
    # shallow.backend.cuda_runtime (a device without one, as the fake device, keeps BLOCK_BYTES); the host's
    # size (16 MiB) is checked by test_lazy's test_linearized_risk_chunk_bytes_none_takes_the_default_...
    size = networks.default_block_bytes(xp)
    assert networks.BLOCK_BYTES <= size <= max(networks.BLOCK_BYTES, networks.GPU_BLOCK_BYTES)
    check_parity(_small_network_pass, xp, "a network pass at the default block size")


# ------------------------------------------------------------------ shallow.sphere
SPHERE_ON_DEVICE = {
    "inner_product_density": lambda xp: sphere.inner_product_density(xp.linspace(-0.9, 0.9, 7), 4),
    "lift": lambda xp: sphere.lift(draw(xp, (5, 3))),
    "sample_inner_product": lambda xp: sphere.sample_inner_product(6, 4, rng=0, device=device_name(xp)),
    "sample_sphere": lambda xp: sphere.sample_sphere(6, 3, rng=0, device=device_name(xp)),
    "sample_sphere.float32": lambda xp: sphere.sample_sphere(6, 3, rng=0, dtype=np.float32, device=device_name(xp)),
}


@pytest.mark.parametrize("routine", parity_params(SPHERE_ON_DEVICE))
def test_sphere_routines_on_the_device_match_numpy(xp, routine):
    check_parity(SPHERE_ON_DEVICE[routine], xp, "shallow.sphere." + routine)


# ------------------------------------------------------------------ shallow.cnn.conv
def _conv2d(xp, method):
    """conv2d of 2 6 x 6 x 2 images with a 3 x 3 kernel to 4 channels and a bias, padding 1, by ``method``."""
    return conv.conv2d(draw(xp, (2, 6, 6, 2)), draw(xp, (3, 3, 2, 4), 1), draw(xp, 4, 2), padding=1, method=method)


CONV_ON_DEVICE = {
    "Conv2d": lambda xp: layer_pass(xp, conv.Conv2d(2, 3, 3, padding=1, rng=0), (5, 5, 2)),
    "Conv2d.float32":
        lambda xp: layer_pass32(xp, conv.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float32), (5, 5, 2)),
    "Conv2d.groups": lambda xp: layer_pass(xp, conv.Conv2d(4, 4, 3, groups=2, padding=1, rng=0), (5, 5, 4)),
    "Conv2d.stride_dilation":
        lambda xp: layer_pass(xp, conv.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2, rng=0), (7, 7, 2)),
    "conv2d.auto": lambda xp: _conv2d(xp, "auto"),
    "conv2d.flat_im2col": lambda xp: _conv2d(xp, "flat_im2col"),
    "conv2d.im2col": lambda xp: _conv2d(xp, "im2col"),
    "conv2d.taps": lambda xp: _conv2d(xp, "taps"),
}


@pytest.mark.parametrize("routine", parity_params(CONV_ON_DEVICE))
def test_conv_routines_on_the_device_match_numpy(xp, routine):
    check_parity(CONV_ON_DEVICE[routine], xp, "shallow.cnn.conv." + routine)


# ------------------------------------------------------------------ shallow.cnn.data
def _standardizer(xp):
    standardizer = data.Standardizer().fit(images(xp))
    return standardizer.transform(images(xp, 3, 1)), standardizer.inverse_transform(images(xp, 3, 2))


def _bilinear_sample(xp):
    return data.bilinear_sample(images(xp, 2), draw(xp, (2, 8, 8), 3) + 3.5, draw(xp, (2, 8, 8), 4) + 3.5)


DATA_ON_DEVICE = {
    "Augment": lambda xp: data.Augment(shift=1, rotation=10.0, scale=0.1)(images(xp), np.random.default_rng(0)),
    "Standardizer": _standardizer,
    "affine_warp": lambda xp: data.affine_warp(images(xp, 2), xp.asarray([[0.9, 0.1], [-0.1, 1.1]])),
    "batches": lambda xp: list(data.batches(images(xp), labels(xp), 4, rng=0)),
    "bilinear_sample": _bilinear_sample,
    "random_affine":
        lambda xp: data.random_affine(images(xp), rng=0, max_angle=20.0, max_scale=0.1, max_shear=0.1),
    "random_shift": lambda xp: data.random_shift(images(xp), 2, rng=0),
    "random_shift.fill": lambda xp: data.random_shift(images(xp), 2, rng=0, fill=0.5),
    "stratified_split": on_host(lambda xp: data.stratified_split(labels(xp, 12), 0.25, rng=0)),
}


@pytest.mark.parametrize("routine", parity_params(DATA_ON_DEVICE))
def test_data_routines_on_the_device_match_numpy(xp, routine):
    check_parity(DATA_ON_DEVICE[routine], xp, "shallow.cnn.data." + routine)


# ------------------------------------------------------------------ shallow.cnn.group
def _ones_convolution(xp):
    """The circular convolution with the all-ones 6 x 6 one-channel filter of xp."""
    ones = xp.ones((6, 6, 1, 1))

    def convolve(X):
        return group.circular_convolution(X, ones)

    return convolve


def _shift_by_one_two(X):
    return group.translate(X, (1, 2))


GROUP_ON_DEVICE = {
    "P4Conv2d": lambda xp: layer_pass(xp, group.P4Conv2d(2, 2, rng=0), (6, 6, 8)),
    "P4GroupPool": lambda xp: layer_pass(xp, group.P4GroupPool("max"), (6, 6, 8)),
    "P4GroupPool.mean": lambda xp: layer_pass(xp, group.P4GroupPool("mean"), (6, 6, 8)),
    "P4LiftConv2d": lambda xp: layer_pass(xp, group.P4LiftConv2d(1, 2, rng=0), (6, 6, 1)),
    "P4LiftConv2d.float32": lambda xp: layer_pass32(xp, group.P4LiftConv2d(1, 2, rng=0, dtype=np.float32), (6, 6, 1)),
    "circular_convolution": lambda xp: group.circular_convolution(draw(xp, (2, 6, 6, 2)), draw(xp, (6, 6, 2, 3), 1)),
    "commutator_defect": lambda xp: group.commutator_defect(_square, _shift_by_one_two, draw(xp, (2, 6, 6, 2))),
    "commutes_with_translations":
        lambda xp: group.commutes_with_translations(_cube, (6, 6), rng=0, device=device_name(xp)),
    "convolution_defect":
        lambda xp: group.convolution_defect(_ones_convolution(xp), (6, 6), rng=0, device=device_name(xp)),
    "convolution_kernel": lambda xp: group.convolution_kernel(_ones_convolution(xp), (6, 6), device=device_name(xp)),
    "deform_nearest": lambda xp: group.deform_nearest(draw(xp, (2, 6, 6, 2)), draw(xp, (6, 6, 2), 3)),
    "gabor_filter": on_host(
        lambda xp: group.gabor_filter((6, 6), 1.0, xp.asarray([[1.0, 0.0], [0.0, 2.0]]), xp.asarray([0.5, 0.2]))),
    "p4_cnn": lambda xp: layer_pass(xp, group.p4_cnn((8, 8, 1), 4, width=2, rng=0), (8, 8, 1)),
    "rotate_images": lambda xp: group.rotate_images(draw(xp, (2, 6, 6, 2)), 0.4),
    "rotate_p4": lambda xp: group.rotate_p4(draw(xp, (2, 6, 6, 8)), 1),
    "translate": lambda xp: group.translate(draw(xp, (2, 6, 6, 2)), (1, -2)),
}


@pytest.mark.parametrize("routine", parity_params(GROUP_ON_DEVICE))
def test_group_routines_on_the_device_match_numpy(xp, routine):
    check_parity(GROUP_ON_DEVICE[routine], xp, "shallow.cnn.group." + routine)


# ------------------------------------------------------------------ shallow.cnn.layers
def _residual(xp):
    block = layers.Sequential(layers.Linear(4, 4, rng=0), layers.Activation("relu"))
    return layer_pass(xp, layers.Residual(block), (4,))


def _residual_shortcut(xp):
    return layer_pass(xp, layers.Residual(layers.Linear(4, 3, rng=0), layers.Linear(4, 3, rng=1)), (4,))


def _sequential(xp):
    model = layers.Sequential(layers.Flatten(), layers.Linear(8, 3, rng=0), layers.Activation("gelu"))
    return layer_pass(xp, model, (2, 2, 2))


LAYERS_ON_DEVICE = {
    "Activation.relu": lambda xp: layer_pass(xp, layers.Activation("relu"), (5,)),
    "Activation.tanh": lambda xp: layer_pass(xp, layers.Activation("tanh"), (3, 3, 2)),
    "Dropout": lambda xp: layer_pass(xp, layers.Dropout(0.5, rng=0), (4, 4, 2), jvp=False),
    "Dropout.eval": lambda xp: layer_pass(xp, layers.Dropout(0.5, rng=0), (4, 4, 2), mode="eval"),
    "Flatten": lambda xp: layer_pass(xp, layers.Flatten(), (3, 3, 2)),
    "Identity": lambda xp: layer_pass(xp, layers.Identity(), (4,)),
    "Linear": lambda xp: layer_pass(xp, layers.Linear(5, 3, rng=0), (5,)),
    "Linear.float32": lambda xp: layer_pass32(xp, layers.Linear(5, 3, rng=0, dtype=np.float32), (5,)),
    "Residual": _residual,
    "Residual.shortcut": _residual_shortcut,
    "Sequential": _sequential,
}


@pytest.mark.parametrize("routine", parity_params(LAYERS_ON_DEVICE))
def test_layers_routines_on_the_device_match_numpy(xp, routine):
    check_parity(LAYERS_ON_DEVICE[routine], xp, "shallow.cnn.layers." + routine)


# ------------------------------------------------------------------ shallow.cnn.linearize
def _linearized_pass(xp):
    """forward, backward, parameter gradients and jvp of the tangent model of a small CNN."""
    model = cnn_linearize(cnn_model(xp, batch_norm=False))
    x = images(xp)
    tparams = {k: draw(xp, v.shape, 13) for k, v in model.named_parameters().items()}
    return (model.forward(x), model.backward(draw(xp, (6, 4), 11)), model.named_gradients(),
            model.jvp(x, None, tparams))


LINEARIZE_ON_DEVICE = {
    "linearize": _linearized_pass,
    "tangent_kernel": lambda xp: tangent_kernel(cnn_model(xp, batch_norm=False), images(xp, 3), images(xp, 2, 9)),
}


@pytest.mark.parametrize("routine", parity_params(LINEARIZE_ON_DEVICE))
def test_linearize_routines_on_the_device_match_numpy(xp, routine):
    check_parity(LINEARIZE_ON_DEVICE[routine], xp, "shallow.cnn.linearize." + routine)


# ------------------------------------------------------------------ shallow.cnn.losses
LOSSES_ON_DEVICE = {
    "CrossEntropy.as_array":
        lambda xp: losses.CrossEntropy(scale=2.0).value_and_grad(draw(xp, (6, 4)), labels(xp), as_array=True),
    "CrossEntropy.value_and_grad": lambda xp: losses.CrossEntropy().value_and_grad(draw(xp, (6, 4)), labels(xp)),
    "SquareLoss.value_and_grad": lambda xp: losses.SquareLoss().value_and_grad(draw(xp, (6, 4)), labels(xp)),
    "accuracy": lambda xp: losses.accuracy(draw(xp, (6, 4)), labels(xp)),
    "check_labels": lambda xp: losses.check_labels(labels(xp), 4),
    "cross_entropy_per_sample": lambda xp: losses.cross_entropy_per_sample(draw(xp, (6, 4)), labels(xp)),
    "log_softmax": lambda xp: losses.log_softmax(draw(xp, (6, 4), scale=30.0)),
}


@pytest.mark.parametrize("routine", parity_params(LOSSES_ON_DEVICE))
def test_losses_routines_on_the_device_match_numpy(xp, routine):
    check_parity(LOSSES_ON_DEVICE[routine], xp, "shallow.cnn.losses." + routine)


# ------------------------------------------------------------------ shallow.cnn.models
def _relative_change(xp):
    model = cnn_model(xp)
    moved = {k: v * 1.5 for k, v in models.snapshot(model).items()}
    return models.relative_change(model.named_parameters(), moved)


def _build_model(xp, arch, **kwargs):
    """A pass (:func:`layer_pass`) of build_model(arch) on 8 x 8 x 1 images with 4 classes, width 4."""
    return layer_pass(xp, models.build_model(arch, (8, 8, 1), 4, rng=0, width=4, **kwargs), (8, 8, 1))


MODELS_ON_DEVICE = {
    "build_model.centered": lambda xp: _build_model(xp, "vgg", alpha=2.0, centering="antisymmetric"),
    "build_model.resnet": lambda xp: _build_model(xp, "resnet"),
    "build_model.vgg": lambda xp: _build_model(xp, "vgg"),
    "check_images": lambda xp: models.check_images(images(xp), "x", (8, 8, 1)),
    "relative_change": _relative_change,
    "resnet_small": lambda xp: layer_pass(xp, models.resnet_small((8, 8, 1), 4, width=4, rng=0), (8, 8, 1)),
    "snapshot": lambda xp: models.snapshot(cnn_model(xp)),
    "vgg_small.avg_pool":
        lambda xp: layer_pass(xp, models.vgg_small((8, 8, 1), 4, width=4, pool="avg", rng=0), (8, 8, 1)),
}


@pytest.mark.parametrize("routine", parity_params(MODELS_ON_DEVICE))
def test_models_routines_on_the_device_match_numpy(xp, routine):
    check_parity(MODELS_ON_DEVICE[routine], xp, "shallow.cnn.models." + routine)


# ------------------------------------------------------------------ shallow.cnn.norm
NORM_ON_DEVICE = {
    "BatchNorm2d.eval": lambda xp: layer_pass(xp, norm.BatchNorm2d(3), (4, 4, 3), mode="eval"),
    "BatchNorm2d.float32": lambda xp: layer_pass32(xp, norm.BatchNorm2d(3, dtype=np.float32), (4, 4, 3)),
    "BatchNorm2d.train": lambda xp: layer_pass(xp, norm.BatchNorm2d(3), (4, 4, 3)),
}


@pytest.mark.parametrize("routine", parity_params(NORM_ON_DEVICE))
def test_norm_routines_on_the_device_match_numpy(xp, routine):
    check_parity(NORM_ON_DEVICE[routine], xp, "shallow.cnn.norm." + routine)


# ------------------------------------------------------------------ shallow.cnn.optim
def _optimizer_run(xp, optimizer, *args, steps=3, **kwargs):
    """``steps`` steps of ``optimizer(params, *args, **kwargs)`` on two parameters, with drawn gradients."""
    params = {"w": draw(xp, (3, 2)), "b": draw(xp, 2, 1)}
    opt = optimizer(params, *args, **kwargs)
    for s in range(steps):
        opt.step({"w": draw(xp, (3, 2), 20 + s), "b": draw(xp, 2, 30 + s)})
    return params


OPTIM_ON_DEVICE = {
    "Adam": lambda xp: _optimizer_run(xp, optim.Adam, 0.01, weight_decay=0.01),
    "Adam.decoupled":
        lambda xp: _optimizer_run(xp, optim.Adam, optim.Cosine(0.01, 5, warmup=1), weight_decay=0.01, decoupled=True),
    "SGD": lambda xp: _optimizer_run(xp, optim.SGD, 0.1),
    "SGD.momentum": lambda xp: _optimizer_run(xp, optim.SGD, 0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
}


@pytest.mark.parametrize("routine", parity_params(OPTIM_ON_DEVICE))
def test_optim_routines_on_the_device_match_numpy(xp, routine):
    check_parity(OPTIM_ON_DEVICE[routine], xp, "shallow.cnn.optim." + routine)


# ------------------------------------------------------------------ shallow.cnn.pooling
POOLING_ON_DEVICE = {
    "AvgPool2d": lambda xp: layer_pass(xp, pooling.AvgPool2d(2), (6, 6, 2)),
    "AvgPool2d.padding": lambda xp: layer_pass(xp, pooling.AvgPool2d(3, 2, padding=1), (5, 5, 2)),
    "GlobalAvgPool2d": lambda xp: layer_pass(xp, pooling.GlobalAvgPool2d(), (4, 4, 3)),
    "MaxPool2d": lambda xp: layer_pass(xp, pooling.MaxPool2d(2), (6, 6, 2)),
    "MaxPool2d.padding": lambda xp: layer_pass(xp, pooling.MaxPool2d(3, 2, padding=1), (5, 5, 2)),
}


@pytest.mark.parametrize("routine", parity_params(POOLING_ON_DEVICE))
def test_pooling_routines_on_the_device_match_numpy(xp, routine):
    check_parity(POOLING_ON_DEVICE[routine], xp, "shallow.cnn.pooling." + routine)


# ------------------------------------------------------------------ shallow.cnn.revnet
def _irevnet_features_reconstruct(xp):
    model = revnet.irevnet_small((8, 8, 1), 4, width=4, rng=0).to(device_name(xp)).eval()
    z = model.features(images(xp))
    return z, model.reconstruct(z)


def _invertible_sequential_recompute(xp):
    model = revnet.InvertibleSequential(revnet.RevBlock(4, rng=0), revnet.RevBlock(4, rng=1), recompute=True)
    return layer_pass(xp, model, (4, 4, 4))


def _rev_block_inverse(xp):
    block = revnet.RevBlock(4, rng=0).to(device_name(xp)).eval()
    return block.inverse(block.forward(draw(xp, (2, 4, 4, 4))))


REVNET_ON_DEVICE = {
    "IRevNet.features_reconstruct": _irevnet_features_reconstruct,
    "InjectivePad": lambda xp: layer_pass(xp, revnet.InjectivePad(2, 4), (4, 4, 2)),
    "InjectivePad.inverse": lambda xp: revnet.InjectivePad(2, 4).inverse(draw(xp, (2, 4, 4, 4))),
    "InvertibleSequential.recompute": _invertible_sequential_recompute,
    "RevBlock": lambda xp: layer_pass(xp, revnet.RevBlock(4, rng=0), (4, 4, 4)),
    "RevBlock.inverse": _rev_block_inverse,
    "RevBlock.stride": lambda xp: layer_pass(xp, revnet.RevBlock(4, stride=2, rng=0), (4, 4, 4)),
    "SpaceToDepth": lambda xp: layer_pass(xp, revnet.SpaceToDepth(2), (4, 4, 2)),
    "SpaceToDepth.inverse": lambda xp: revnet.SpaceToDepth(2).inverse(draw(xp, (2, 2, 2, 8))),
    "bottleneck": lambda xp: layer_pass(xp, revnet.bottleneck(2, 2, rng=0), (4, 4, 2)),
    "irevnet_small": lambda xp: layer_pass(xp, revnet.irevnet_small((8, 8, 1), 4, width=4, rng=0), (8, 8, 1)),
    "irevnet_small.float32":
        lambda xp: layer_pass32(xp, revnet.irevnet_small((8, 8, 1), 4, width=4, rng=0, dtype=np.float32), (8, 8, 1)),
}


@pytest.mark.parametrize("routine", parity_params(REVNET_ON_DEVICE))
def test_revnet_routines_on_the_device_match_numpy(xp, routine):
    check_parity(REVNET_ON_DEVICE[routine], xp, "shallow.cnn.revnet." + routine)


# ------------------------------------------------------------------ shallow.cnn.ridge
def _ridge_classifier(xp):
    """A RidgeClassifier (lambda = 0.1) fitted to 8 Gaussian points of R^5 with 4 classes."""
    return ridge.RidgeClassifier(0.1).fit(draw(xp, (8, 5)), labels(xp, 8))


RIDGE_ON_DEVICE = {
    "RidgeClassifier.decision_function": lambda xp: _ridge_classifier(xp).decision_function(draw(xp, (3, 5), 2)),
    "RidgeClassifier.predict": on_host(lambda xp: _ridge_classifier(xp).predict(draw(xp, (3, 5), 2))),
    "RidgeClassifier.score": lambda xp: _ridge_classifier(xp).score(draw(xp, (8, 5)), labels(xp, 8)),
}


@pytest.mark.parametrize("routine", parity_params(RIDGE_ON_DEVICE))
def test_ridge_routines_on_the_device_match_numpy(xp, routine):
    check_parity(RIDGE_ON_DEVICE[routine], xp, "shallow.cnn.ridge." + routine)


# ------------------------------------------------------------------ shallow.cnn.robustness
def _projected_step(xp, **kwargs):
    """The parameters of a small CNN after one projected SGD step (its parameters as the gradient)."""
    model = cnn_model(xp)
    projection = robustness.SpectralProjection((8, 8, 1), bound=0.5, **kwargs)
    step = robustness.ProjectedOptimizer(optim.SGD(model.named_parameters(), 0.1), model, projection)
    step.step(model.named_parameters())
    return model.named_parameters()


def _small_conv(xp):
    return conv.Conv2d(2, 3, 3, padding=1, rng=0).to(device_name(xp))


def _deformation_ratio(xp):
    return robustness.deformation_ratio(_square, images(xp), draw(xp, (8, 8, 2), 3, 0.3))


def _fgsm_l2(xp):
    return robustness.fgsm(cnn_model(xp), images(xp), labels(xp), 0.1, norm="2", clip=(-4.0, 4.0))


def _lipschitz_upper_bound_averaged_fft(xp):
    return robustness.lipschitz_upper_bound(cnn_model(xp, batch_norm=False), bound="averaged", method="fft")


def _lipschitz_upper_bound_inverse(xp):
    net = revnet.irevnet_small((8, 8, 1), 4, width=8, blocks=1, rng=0).to(device_name(xp))
    return robustness.lipschitz_upper_bound(net, inverse=True, method="fft")


def _minimal_perturbation(xp, **kwargs):
    return robustness.minimal_perturbation(cnn_model(xp), images(xp, 3), labels(xp, 3), eps_max=1.0, n_bisect=3,
                                           steps=3, **kwargs)


def _pgd_random_start(xp):
    return robustness.pgd(cnn_model(xp), images(xp), labels(xp), 0.1, norm="2", steps=3, random_start=True, rng=0,
                          loss="margin")


def _universal_perturbation(xp):
    return robustness.universal_perturbation(cnn_model(xp), images(xp, 4), 0.2, max_epochs=1, steps=2, rng=0)


ROBUSTNESS_ON_DEVICE = {
    "SpectralProjection": _projected_step,
    "SpectralProjection.power": lambda xp: _projected_step(xp, method="power"),
    "certified_radius": lambda xp: robustness.certified_radius(cnn_model(xp), images(xp), labels(xp), 3.0),
    "conv_norm_bound": lambda xp: robustness.conv_norm_bound(_small_conv(xp), (4, 4, 2)),
    "conv_singular_values": lambda xp: robustness.conv_singular_values(draw(xp, (3, 3, 2, 3)), (4, 4)),
    "deform": lambda xp: robustness.deform(images(xp), draw(xp, (8, 8, 2), 3, 0.3)),
    "deform.fill": lambda xp: robustness.deform(images(xp), draw(xp, (6, 8, 8, 2), 3, 0.8), fill=0.0),
    "deformation_ratio": _deformation_ratio,
    "fgsm": lambda xp: robustness.fgsm(cnn_model(xp), images(xp), labels(xp), 0.1),
    "fgsm.l2": _fgsm_l2,
    "input_gradient": lambda xp: robustness.input_gradient(cnn_model(xp), images(xp), labels(xp)),
    "input_jacobian": lambda xp: robustness.input_jacobian(cnn_model(xp), images(xp, 2)),
    "jacobian_norm": lambda xp: robustness.jacobian_norm(draw(xp, (8, 8, 2), 3, 0.3)),
    "lipschitz_upper_bound": lambda xp: robustness.lipschitz_upper_bound(cnn_model(xp), n_iter=30),
    "lipschitz_upper_bound.averaged_fft": _lipschitz_upper_bound_averaged_fft,
    "lipschitz_upper_bound.inverse": _lipschitz_upper_bound_inverse,
    "local_lipschitz": lambda xp: robustness.local_lipschitz(cnn_model(xp), images(xp, 2)),
    "local_lipschitz.per_sample": lambda xp: robustness.local_lipschitz(cnn_model(xp), images(xp, 2), reduce=None),
    "minimal_perturbation": _minimal_perturbation,
    "minimal_perturbation.l2": lambda xp: _minimal_perturbation(xp, norm="2", loss="ce"),
    "minimal_perturbation.targets": lambda xp: _minimal_perturbation(xp, norm="2", targets="all"),
    "pgd": lambda xp: robustness.pgd(cnn_model(xp), images(xp), labels(xp), 0.1, steps=3),
    "pgd.target": lambda xp: robustness.pgd(cnn_model(xp), images(xp), labels(xp), 0.1, steps=3, loss="margin",
                                            target=(labels(xp) + 1) % 4),
    "pgd.random_start": _pgd_random_start,
    "spectral_norm.matrix": lambda xp: robustness.spectral_norm(draw(xp, (5, 4)), rng=0, return_vector=True),
    "spectral_norm.conv": lambda xp: robustness.spectral_norm(_small_conv(xp), (4, 4, 2), rng=0),
    "universal_perturbation": lambda xp: _universal_perturbation(xp)[0],
    "universal_perturbation.fooling_rate": on_host(lambda xp: _universal_perturbation(xp)[1]),
}


@pytest.mark.parametrize("routine", parity_params(ROBUSTNESS_ON_DEVICE))
def test_robustness_routines_on_the_device_match_numpy(xp, routine):
    check_parity(ROBUSTNESS_ON_DEVICE[routine], xp, "shallow.cnn.robustness." + routine)


# ------------------------------------------------------------------ shallow.cnn.scattering
def _scattering_on(xp, **kwargs):
    return scattering.Scattering2D(2, (8, 8), L=4, **kwargs).to(device_name(xp))


def _scattering_vjp(xp):
    transform = _scattering_on(xp)
    x = draw(xp, (2, 8, 8))
    return transform.vjp(x, draw(xp, transform(x).shape, 2))


def _scattering_classifier(xp, J, **kwargs):
    classifier = scattering.ScatteringClassifier(J, (8, 8), L=4, **kwargs).fit(images(xp, 8), labels(xp, 8))
    return classifier.decision_function(images(xp, 3, 9))


SCATTERING_ON_DEVICE = {
    "Scattering2D": lambda xp: _scattering_on(xp)(draw(xp, (2, 8, 8))),
    "Scattering2D.features": lambda xp: _scattering_on(xp).features(draw(xp, (2, 8, 8, 1))),
    "Scattering2D.jvp": lambda xp: _scattering_on(xp).jvp(draw(xp, (2, 8, 8)), draw(xp, (2, 8, 8), 1)),
    "Scattering2D.periodic": lambda xp: _scattering_on(xp, padding="periodic")(draw(xp, (2, 8, 8))),
    "Scattering2D.vjp": _scattering_vjp,
    "ScatteringClassifier": lambda xp: _scattering_classifier(xp, 2),
    "ScatteringClassifier.log": lambda xp: _scattering_classifier(xp, 1, max_order=1, log_eps=1e-3),
    "ScatteringLayer": lambda xp: layer_pass(xp, scattering.ScatteringLayer(2, (8, 8), L=4), (8, 8, 1)),
}


@pytest.mark.parametrize("routine", parity_params(SCATTERING_ON_DEVICE))
def test_scattering_routines_on_the_device_match_numpy(xp, routine):
    check_parity(SCATTERING_ON_DEVICE[routine], xp, "shallow.cnn.scattering." + routine)


# ------------------------------------------------------------------ shallow.cnn.train
def _fit_run(xp, **kwargs):
    model = cnn_model(xp)
    opt = optim.SGD(model.named_parameters(), 0.05, momentum=0.9)
    hist = train.fit(model, images(xp, 8), labels(xp, 8), X_test=images(xp, 4, 8), y_test=labels(xp, 4),
                     optimizer=opt, epochs=2, batch_size=4, rng=0, **kwargs)
    return {"loss": hist.loss, "test_loss": hist.test_loss, **model.named_parameters()}


def _checkpoint_run(xp):
    # a step, a checkpoint, a fresh model and optimiser restored from it, one more step
    model = cnn_model(xp)
    opt = optim.Adam(model.named_parameters())
    train.train_step(model, losses.CrossEntropy(), opt, images(xp), labels(xp))
    with tempfile.TemporaryDirectory() as tmp:
        path = train.save_checkpoint(Path(tmp) / "c.npz", model, opt, epoch=1)
        twin = cnn_model(xp)
        twin_opt = optim.Adam(twin.named_parameters())
        train.load_checkpoint(path, twin, twin_opt)
    train.train_step(twin, losses.CrossEntropy(), twin_opt, images(xp), labels(xp))
    return twin.named_parameters()


def _train_step(xp):
    model = cnn_model(xp)
    return train.train_step(model, losses.CrossEntropy(), optim.Adam(model.named_parameters()), images(xp), labels(xp))


TRAIN_ON_DEVICE = {
    "evaluate": lambda xp: train.evaluate(cnn_model(xp), images(xp), labels(xp), batch_size=4),
    "fit": _fit_run,
    "fit.augment": lambda xp: _fit_run(xp, augment=data.Augment(shift=1)),
    "predict": lambda xp: train.predict(cnn_model(xp, "resnet"), images(xp), batch_size=4),
    "save_load_checkpoint": _checkpoint_run,
    "train_step": _train_step,
}


@pytest.mark.parametrize("routine", parity_params(TRAIN_ON_DEVICE))
def test_train_routines_on_the_device_match_numpy(xp, routine):
    check_parity(TRAIN_ON_DEVICE[routine], xp, "shallow.cnn.train." + routine)


# ------------------------------------------------------------------ shallow.cnn.wavelets
WAVELETS_ON_DEVICE = {
    "wavelet_transform":
        lambda xp: wavelets.wavelet_transform(draw(xp, (2, 8, 8)), wavelets.filter_bank((8, 8), 2, 4)),
}


@pytest.mark.parametrize("routine", parity_params(WAVELETS_ON_DEVICE))
def test_wavelets_routines_on_the_device_match_numpy(xp, routine):
    check_parity(WAVELETS_ON_DEVICE[routine], xp, "shallow.cnn.wavelets." + routine)
