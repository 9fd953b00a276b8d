"""The shared input checks of shallow._validation, seen through the public functions that use them."""

import numpy as np
import pytest

from shallow.cnn import SGD, Adam, Model, fit, load_digits, resnet_small, vgg_small
from shallow.cnn.revnet import bottleneck
from shallow.cnn.robustness import deformation_ratio, pgd
from shallow.depth import linear_pieces, sawtooth
from shallow.lazy import LazyDiagnostics
from shallow.networks import TwoLayer


def _net():
    return TwoLayer.init(4, 3, rng=0)


TAU = 0.1 * np.random.default_rng(0).standard_normal((8, 8, 2))  # a small deformation field

FLAGS = [  # (flag, function, call)
    ("bias", "TwoLayer.init", lambda v: TwoLayer.init(4, 3, rng=0, bias=v)),
    ("ntk", "LazyDiagnostics", lambda v: LazyDiagnostics(_net(), np.ones((2, 3)), ntk=v)),
    ("exact", "linear_pieces", lambda v: linear_pieces(sawtooth(2), exact=v)),
    ("nesterov", "SGD", lambda v: SGD({"w": np.zeros(2)}, 0.1, nesterov=v)),
    ("decoupled", "Adam", lambda v: Adam({"w": np.zeros(2)}, decoupled=v)),
    ("check_inputs", "Model", lambda v: Model(vgg_small((8, 8), 2, width=2), (8, 8), 2, check_inputs=v)),
    ("mode", "Layer.train", lambda v: vgg_small((8, 8), 2, width=2).train(v)),
    ("batch_norm", "vgg_small", lambda v: vgg_small((8, 8), 2, width=2, batch_norm=v)),
    ("batch_norm", "resnet_small", lambda v: resnet_small((8, 8), 2, width=2, batch_norm=v)),
    ("batch_norm", "bottleneck", lambda v: bottleneck(2, 2, batch_norm=v)),
    ("standardize", "load_digits", lambda v: load_digits(standardize=v)),
    ("resume", "fit", lambda v: fit(_cnn(), *_images(), epochs=1, resume=v)),
    ("capture", "fit", lambda v: fit(_cnn(), *_images(), epochs=1, capture=v)),
    ("random_start", "pgd", lambda v: pgd(_cnn(), *_images(), 0.1, random_start=v)),
    ("normalize", "deformation_ratio", lambda v: deformation_ratio(_cnn(), _images()[0], TAU, normalize=v)),
]
IDS = [f"{name}-{function}" for name, function, _ in FLAGS]


def _cnn():
    return Model(vgg_small((8, 8), 2, width=2, rng=0), (8, 8), 2)


def _images():
    return np.zeros((2, 8, 8, 1)), np.array([0, 1])


@pytest.mark.parametrize("value", ["no", "False", 0, None])
@pytest.mark.parametrize("name, function, call", FLAGS, ids=IDS)
def test_boolean_flags_refuse_anything_but_true_or_false(name, function, call, value):
    # bool("no") is True: a flag given as text used to switch the option on.
    with pytest.raises(ValueError, match=f"{name} must be True or False"):
        call(value)


@pytest.mark.parametrize("name, function, call", FLAGS, ids=IDS)
def test_boolean_flags_take_numpy_booleans(name, function, call):
    call(np.bool_(False))


def test_check_random_state_takes_a_list_of_non_negative_int_seeds_as_entropy():
    # [seed, point] seeds one stream per point: numpy's own Generator from the same list is the reference
    from shallow._validation import check_random_state

    assert check_random_state([0, 3]).random() == np.random.default_rng([0, 3]).random()
    assert check_random_state((7,)).random() == np.random.default_rng([7]).random()
    for bad in ([1, -1], [True, 2], [], [1.5]):
        with pytest.raises(TypeError, match="rng must be None, an int seed or a numpy Generator"):
            check_random_state(bad)


def test_check_integer_states_both_bounds_when_it_has_two():
    from shallow._validation import check_integer

    assert check_integer(5, "k", minimum=1, maximum=5) == 5
    with pytest.raises(ValueError, match=r"^k must be an integer >= 1 and <= 5, got 7$"):
        check_integer(7, "k", minimum=1, maximum=5)
    with pytest.raises(ValueError, match=r"^k must be an integer <= 5, got 6$"):
        check_integer(6, "k", minimum=None, maximum=5)
