"""The fused batch-normalisation kernels (shallow.cnn._fused) compute what the unfused layer computes.

On numpy, ``_fused.call`` executes with Python the same statements that a device compiles into
one CuPy ElementwiseKernel each. Here the layer is sent down its device route (arrays declared
device arrays, SHALLOW_FUSED_KERNELS=1) and compared with the host route, which the other tests
check against central differences and hand-computed statistics. The same float64 operations in
another grouping: agreement to 1e-12 relative.
"""

import numpy as np
import pytest

from shallow.cnn import BatchNorm2d, _fused, _reduce


def _run(x, dy, steps=2):
    bn = BatchNorm2d(x.shape[-1], momentum=0.3)
    bn.params["gamma"][...] = np.linspace(0.5, 2.0, x.shape[-1])
    bn.params["beta"][...] = np.linspace(-1.0, 1.0, x.shape[-1])
    out = []
    for _ in range(steps):  # the running statistics move twice
        y = bn.forward(x)
        dx = bn.backward(dy)
    out += [y, dx, bn.grads["gamma"], bn.grads["beta"], bn.buffers["running_mean"], bn.buffers["running_var"]]
    return out


def test_fused_batch_norm_equals_the_unfused_layer(monkeypatch):
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((5, 9, 9, 6)) * 3 + 1
    x = grid[:, :8, :7]  # a strided view, as a convolution's output is
    dy = rng.standard_normal((5, 8, 7, 6))
    host = _run(x, dy)
    used = []
    real_call = _fused.call
    monkeypatch.setattr(_fused, "call", lambda name, *args: (used.append(name), real_call(name, *args))[1])
    monkeypatch.setattr(_reduce, "on_device", lambda a: True)
    monkeypatch.setenv("SHALLOW_FUSED_KERNELS", "1")
    fused = _run(x, dy)
    assert sorted(set(used)) == ["bn_apply", "bn_grad_apply", "bn_grad_stats", "bn_stats"]
    for name, u, v in zip(["y", "dx", "dgamma", "dbeta", "running mean", "running var"], fused, host, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12 * np.max(np.abs(v)), err_msg=name)


def test_fused_kernels_are_off_unless_asked_for(monkeypatch):
    monkeypatch.setattr(_reduce, "on_device", lambda a: True)
    monkeypatch.delenv("SHALLOW_FUSED_KERNELS", raising=False)
    assert not _fused.enabled(np.zeros(3))
    monkeypatch.setenv("SHALLOW_FUSED_KERNELS", "1")
    assert _fused.enabled(np.zeros(3))


def test_fused_call_rejects_a_wrong_number_of_arrays():
    with pytest.raises(ValueError, match="bn_apply takes 3 inputs and 1 outputs, got 3 arrays"):
        _fused.call("bn_apply", np.zeros(2), np.zeros(2), np.zeros(2))
