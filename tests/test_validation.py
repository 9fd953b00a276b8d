"""The shared input checks of shallow._validation, seen through the public functions that use them."""

import numpy as np
import pytest

from shallow.cnn import SGD, Adam, Model, vgg_small
from shallow.depth import linear_pieces, sawtooth
from shallow.lazy import LazyDiagnostics
from shallow.networks import TwoLayer


def _net():
    return TwoLayer.init(4, 3, rng=0)


FLAGS = {
    "bias": lambda v: TwoLayer.init(4, 3, rng=0, bias=v),
    "ntk": lambda v: LazyDiagnostics(_net(), np.ones((2, 3)), ntk=v),
    "exact": lambda v: linear_pieces(sawtooth(2), exact=v),
    "nesterov": lambda v: SGD({"w": np.zeros(2)}, 0.1, nesterov=v),
    "decoupled": lambda v: Adam({"w": np.zeros(2)}, decoupled=v),
    "check_inputs": lambda v: Model(vgg_small((8, 8), 2, width=2), (8, 8), 2, check_inputs=v),
    "mode": lambda v: vgg_small((8, 8), 2, width=2).train(v),
}


@pytest.mark.parametrize("value", ["no", "False", 0, None])
@pytest.mark.parametrize("name", list(FLAGS))
def test_boolean_flags_refuse_anything_but_true_or_false(name, value):
    # bool("no") is True: a flag given as text used to switch the option on.
    with pytest.raises(ValueError, match=f"{name} must be True or False"):
        FLAGS[name](value)


@pytest.mark.parametrize("name", list(FLAGS))
def test_boolean_flags_take_numpy_booleans(name):
    FLAGS[name](np.bool_(False))
