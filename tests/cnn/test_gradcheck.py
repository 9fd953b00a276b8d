"""shallow.cnn.check_gradients: small errors for correct derivatives, errors of order 1 for wrong ones.

The oracle of these tests is the construction of the wrong layers: a backward or jvp scaled by 1.5, or a
parameter gradient left out, must show a relative error near its known size (0.5 of the terms it scales),
while the library's layers, whose derivatives tests/cnn/test_cnn_gradients.py checks independently, give
the central difference's own error (about 1e-9 at h = 1e-6 in float64).
"""

import numpy as np
import pytest

from shallow.cnn import BatchNorm2d, Conv2d, Dropout, GradientCheck, Linear, Sequential, check_gradients
from shallow.cnn.layers import Activation


class _ScaledBackward(Linear):
    """A Linear layer whose backward is 1.5 times the true one (dx and the parameter gradients)."""

    def backward(self, dy, need_input_grad=True):
        dx = super().backward(1.5 * dy, need_input_grad)
        return dx


class _ScaledJvp(Linear):
    """A Linear layer whose jvp tangent is 1.5 times the true one."""

    def jvp(self, x, tx=None, tparams=None):
        y, ty = super().jvp(x, tx, tparams)
        return y, 1.5 * ty


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("make, shape", [
    (lambda: Conv2d(2, 3, 3, padding=1, stride=2, rng=0), (2, 5, 5, 2)),
    (lambda: Sequential(Conv2d(2, 4, 3, padding=1, rng=0), BatchNorm2d(4), Activation("tanh")), (3, 4, 4, 2)),
    (lambda: Sequential(Linear(6, 5, rng=0), Dropout(0.5, rng=3), Activation("tanh")), (4, 6)),
], ids=["conv-strided", "conv-bn-train-tanh", "linear-dropout"])
def test_correct_derivatives_give_the_central_differences_own_error(make, shape):
    # a smooth map (tanh; batch norm in train mode; a dropout mask replayed): h^2 |L'''| + eps |L| / h ~ 1e-10
    # relative; 1e-7 leaves a margin of 100
    result = check_gradients(make().train(), _x(shape), rng=2)
    assert isinstance(result, GradientCheck) and len(result.backward_errors) == len(result.jvp_errors) == 3
    assert result.max_error < 1e-7, result


def test_a_backward_of_the_wrong_size_shows_an_error_of_order_one():
    # every term t_i of the directional derivative is 1.5 times the true one: the error is
    # |fd - 1.5 fd| / (1.5 sum |t_i| / 1.5) = (1/3) |sum t_i| / sum |t_i|, 1/3 where the terms share a sign and less
    # where they cancel; the largest over 5 random directions is near 1/3 (measured 0.333), far above the 1e-9 of
    # a correct layer
    result = check_gradients(_ScaledBackward(4, 3, rng=0), _x((5, 4)), rng=2, n_directions=5)
    assert 0.1 < max(result.backward_errors) <= 1 / 3 + 1e-6 and result.max_error > 0.1
    assert max(result.jvp_errors) < 1e-7  # its jvp is right


def test_a_jvp_of_the_wrong_size_shows_a_relative_error_of_one_half():
    # ty = 1.5 J v against J v: |0.5 J v|_max / |J v|_max = 0.5 up to the difference's 1e-9
    result = check_gradients(_ScaledJvp(4, 3, rng=0), _x((5, 4)), rng=2)
    assert max(result.backward_errors) < 1e-7
    np.testing.assert_allclose(result.jvp_errors, 0.5, atol=1e-6)


def test_check_gradients_restores_the_parameters_and_refuses_bad_arguments():
    layer = Linear(3, 2, rng=0)
    before = {k: p.copy() for k, p in layer.named_parameters().items()}
    check_gradients(layer, _x((4, 3)), rng=0)
    for k, p in layer.named_parameters().items():
        np.testing.assert_array_equal(p, before[k])
    with pytest.raises(ValueError, match="n_directions must be an integer >= 1"):
        check_gradients(layer, _x((4, 3)), n_directions=0)
    with pytest.raises(ValueError, match="h must be"):
        check_gradients(layer, _x((4, 3)), h=0.0)
    with pytest.raises(TypeError, match="layer"):
        check_gradients(np.eye(2), _x((4, 3)))
