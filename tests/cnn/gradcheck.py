"""Derivative checks for the CNN layers: central differences, Taylor remainders, jvp against differences.

Every check perturbs the input and all parameters together along random directions and compares
the hand-written derivative with finite differences of the layer's own forward map, evaluated in
float64. The objective is L(x, theta) = <r, f(x; theta)> with a fixed random r.
"""

import numpy as np


def _vdot(a, b):
    return float(np.vdot(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


class Probe:
    """f(x + t vx; theta + t vtheta) for a layer, with its random generators replayed at every call."""

    def __init__(self, layer, x, rng):
        self.layer, self.x, self.rng = layer, x, rng
        self.params = layer.named_parameters()
        self.theta0 = {k: p.copy() for k, p in self.params.items()}
        self.rng_states = {k: g.bit_generator.state for k, g in layer.named_rngs().items()}

    def _replay(self):
        for k, g in self.layer.named_rngs().items():
            g.bit_generator.state = self.rng_states[k]

    def value(self, t=0.0, vx=None, vp=None):
        for k, p in self.params.items():
            p[...] = self.theta0[k] + (t * vp[k] if vp is not None else 0.0)
        self._replay()
        x = self.x if vx is None else self.x + t * vx
        y = self.layer.forward(x)
        for k, p in self.params.items():
            p[...] = self.theta0[k]
        return y

    def directions(self, scale=1.0):
        vx = scale * self.rng.standard_normal(self.x.shape)
        vp = {k: scale * self.rng.standard_normal(p.shape) for k, p in self.params.items()}
        return vx, vp

    def gradients(self, r):
        """(dx, dtheta) from backward at (x, theta_0)."""
        self.value()
        dx = self.layer.backward(r)
        grads = {k: np.array(g) for k, g in self.layer.named_gradients().items()}
        return dx, grads


def check_central_differences(layer, x, rng, *, n_directions=3, h=1e-6, rtol=1e-6, input_grad=True):
    """backward vs (L(+h) - L(-h)) / 2h along random directions of (x, theta).

    Tolerance: the central difference errs by h^2 |L'''| / 6 ~ 1e-12 (O(1) third derivatives) plus
    rounding eps |L| / h ~ 1e-10 |L|; rtol 1e-6 of the size of the terms leaves a wide margin
    while any wrong factor or index shows as an O(1) error.
    """
    probe = Probe(layer, x, rng)
    y = probe.value()
    r = rng.standard_normal(y.shape)
    dx, grads = probe.gradients(r)
    assert set(grads) == set(probe.params), "a parameter has no gradient"
    for _ in range(n_directions):
        vx, vp = probe.directions()
        if not input_grad:
            vx = np.zeros_like(vx)
        terms = [_vdot(dx, vx)] if input_grad else []
        terms += [_vdot(grads[k], vp[k]) for k in probe.params]
        analytic = sum(terms)
        fd = (_vdot(r, probe.value(h, vx, vp)) - _vdot(r, probe.value(-h, vx, vp))) / (2 * h)
        scale = sum(abs(t) for t in terms) + 1e-300
        assert abs(fd - analytic) <= rtol * scale, f"finite difference {fd!r} vs backward {analytic!r}"


def taylor_slope(layer, x, rng, *, h0=1e-3, halvings=5):
    """Fitted log-log slope of |L(h) - L(0) - h dL| against h (2 for a correct gradient)."""
    probe = Probe(layer, x, rng)
    y = probe.value()
    r = rng.standard_normal(y.shape)
    dx, grads = probe.gradients(r)
    vx, vp = probe.directions()
    slope = _vdot(dx, vx) + sum(_vdot(grads[k], vp[k]) for k in probe.params)
    L0 = _vdot(r, y)
    hs = h0 / 2.0 ** np.arange(halvings)
    remainders = [abs(_vdot(r, probe.value(h, vx, vp)) - L0 - h * slope) for h in hs]
    return float(np.polyfit(np.log(hs), np.log(remainders), 1)[0]), remainders


def check_jvp(layer, x, rng, *, h=1e-6, rtol=1e-6, input_tangent=True):
    """jvp vs the central difference of f, entrywise, and the adjoint identity <r, J v> = <J^T r, v>."""
    probe = Probe(layer, x, rng)
    vx, vp = probe.directions()
    if not input_tangent:
        vx = np.zeros_like(vx)
    probe._replay()
    y, ty = layer.jvp(x, vx if input_tangent else None, vp)
    np.testing.assert_allclose(y, probe.value(), rtol=1e-14, atol=1e-14)
    fd = (probe.value(h, vx, vp) - probe.value(-h, vx, vp)) / (2 * h)
    scale = np.abs(fd).max() + 1e-300
    np.testing.assert_allclose(ty, fd, rtol=0, atol=rtol * scale)
    # adjoint identity against backward: both hand-written, so an independent cross-check
    r = rng.standard_normal(y.shape)
    dx, grads = probe.gradients(r)
    rhs = (_vdot(dx, vx) if input_tangent else 0.0) + sum(_vdot(grads[k], vp[k]) for k in probe.params)
    lhs = _vdot(r, ty)
    assert abs(lhs - rhs) <= 1e-10 * (abs(lhs) + abs(rhs) + 1e-300)
