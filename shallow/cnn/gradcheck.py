r"""Checking a layer's derivatives against central differences of its own forward map.

A layer's ``backward`` and ``jvp`` are written by hand; :func:`check_gradients` compares them with
finite differences of ``forward``, as a test of one's own layer (or of a library layer on one's own
input) would. The objective is L(x, theta) = <r, f(x; theta)> with a fixed random r; along random
directions (v_x, v_theta) of the input and of all parameters together,

    dL = <dx, v_x> + sum_p <dtheta_p, v_p>   (backward)   against   (L(+h) - L(-h)) / (2h),

and, when the layer has ``jvp``, <r, J v> (forward mode) against the same difference. The central
difference errs by h^2 |L'''| / 6 plus rounding eps |L| / h: with h = 1e-6 in float64, about 1e-10
of the size of the terms, so a correct layer shows relative errors near 1e-9 and a wrong factor or
index an error of order 1. Relu and max pooling are not differentiable at their kinks: a difference
that steps over one (a batch-norm output, a tie in a pooling window) errs by O(h / distance); a
smaller h, or inputs away from the kinks, tell this apart from a bug.

The layer's random generators (dropout) are replayed at every evaluation, so that each difference
sees the same mask. The parameters are perturbed in place and restored.
"""

from __future__ import annotations

import dataclasses

from .._validation import check_integer, check_positive, check_random_state
from ..backend import get_xp
from .layers import _rng_states, _set_rng_states, check_layer

__all__ = ["GradientCheck", "check_gradients"]


def _vdot(a, b) -> float:
    """<a, b> in float64, as a Python float (a read of the device on a GPU)."""
    xp = get_xp(a)
    return float(xp.vdot(a.astype(xp.float64).ravel(), b.astype(xp.float64).ravel()))


class _Probe:
    """f(x + t v_x; theta + t v_theta) for a layer, with its random generators replayed at every call."""

    def __init__(self, layer, x):
        self.layer, self.x = layer, x
        self.params = layer.named_parameters()
        self.theta0 = {k: p.copy() for k, p in self.params.items()}
        self.states = _rng_states(layer)

    def replay(self):
        _set_rng_states(self.states)

    def value(self, t=0.0, vx=None, vp=None):
        try:
            for k, p in self.params.items():
                p[...] = self.theta0[k] + (t * vp[k] if vp is not None else 0)
            self.replay()
            return self.layer.forward(self.x if vx is None else self.x + t * vx)
        finally:
            for k, p in self.params.items():
                p[...] = self.theta0[k]


@dataclasses.dataclass(frozen=True)
class GradientCheck:
    """What :func:`check_gradients` measured.

    Attributes
    ----------
    backward_errors : tuple of float
        |central difference - backward's directional derivative| / (sum of the sizes of its terms),
        one per direction.
    jvp_errors : tuple of float
        The same for ``jvp`` (empty when the layer has none), relative to the largest entry of the
        difference.
    h : float
        The step of the central differences.
    """

    backward_errors: tuple
    jvp_errors: tuple
    h: float

    @property
    def max_error(self) -> float:
        """The largest relative error, backward and jvp together."""
        return max(self.backward_errors + self.jvp_errors)


def check_gradients(layer, x, *, n_directions=3, h=1e-6, rng=None, input_grad=True) -> GradientCheck:
    """Compare a layer's backward (and jvp) with central differences of its forward map (module notes).

    Parameters
    ----------
    layer : Layer
        In the mode to check (``train()`` checks batch normalisation's batch statistics).
        Its parameters should be float64: in float32 the differences carry eps32 / h.
    x : array
        A batch the layer takes (float64); the parameters' gradients are those of this batch.
    n_directions : int
        Random directions (v_x, v_theta) tried, >= 1.
    h : float
        The step, > 0.
    rng : None, int or Generator
        Draws r and the directions.
    input_grad : bool
        Whether to perturb x too (False for a layer whose input is not differentiated, such as
        integer labels).

    Returns
    -------
    GradientCheck
        Relative errors per direction; a correct layer gives about 1e-9 at h = 1e-6 in float64.

    Raises
    ------
    ValueError
        For a layer that is not a Layer, n_directions or h out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn import Conv2d
    >>> conv = Conv2d(2, 3, 3, padding=1, rng=0)
    >>> result = check_gradients(conv, np.random.default_rng(1).standard_normal((2, 5, 5, 2)), rng=2)
    >>> result.max_error < 1e-7
    True
    """
    check_layer(layer, "layer")
    n_directions = check_integer(n_directions, "n_directions", minimum=1)
    h = check_positive(h, "h")
    rng = check_random_state(rng)
    xp = get_xp(x)
    probe = _Probe(layer, x)
    y = probe.value()
    r = xp.asarray(rng.standard_normal(y.shape).astype(y.dtype))
    dx = layer.backward(r, need_input_grad=input_grad)
    grads = {k: g.copy() for k, g in layer.named_gradients().items()}

    def directions():
        vx = xp.asarray(rng.standard_normal(x.shape).astype(x.dtype)) if input_grad else xp.zeros_like(x)
        vp = {k: xp.asarray(rng.standard_normal(p.shape).astype(p.dtype)) for k, p in probe.params.items()}
        return vx, vp

    backward_errors = []
    for _ in range(n_directions):
        vx, vp = directions()
        terms = ([_vdot(dx, vx)] if input_grad else []) + [_vdot(grads[k], vp[k]) for k in probe.params]
        fd = (_vdot(r, probe.value(h, vx, vp)) - _vdot(r, probe.value(-h, vx, vp))) / (2 * h)
        backward_errors.append(abs(fd - sum(terms)) / (sum(abs(t) for t in terms) + 1e-300))
    jvp_errors = []
    for _ in range(n_directions):
        vx, vp = directions()
        probe.replay()
        try:
            _, ty = layer.jvp(x, vx if input_grad else None, vp)
        except NotImplementedError:  # a layer without forward mode (Layer.jvp's default)
            break
        fd = (probe.value(h, vx, vp) - probe.value(-h, vx, vp)) / (2 * h)
        jvp_errors.append(float(xp.abs(ty - fd).max()) / (float(xp.abs(fd).max()) + 1e-300))
    return GradientCheck(tuple(backward_errors), tuple(jvp_errors), h)

