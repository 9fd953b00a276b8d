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


@pytest.mark.parametrize("value", ["no", "False", 0, 1.0])
def test_fit_capture_refuses_anything_but_none_true_or_false(value):
    # None is the default (capture on a GPU where the step can be replayed); a numpy boolean is taken
    with pytest.raises(ValueError, match="capture must be None .*, True or False, got"):
        fit(_cnn(), *_images(), epochs=1, capture=value)
    fit(_cnn(), *_images(), epochs=1, capture=np.bool_(True))


def test_check_random_state_takes_a_list_of_non_negative_int_seeds_as_entropy():
    # [seed, point] seeds one stream per point: numpy's own Generator from the same list is the reference
    from shallow._validation import check_random_state

    assert check_random_state([0, 3]).random() == np.random.default_rng([0, 3]).random()
    assert check_random_state((7,)).random() == np.random.default_rng([7]).random()
    for bad in ([1, -1], [True, 2], [], [1.5]):
        with pytest.raises(TypeError, match="rng must be None, a non-negative int seed, a non-empty list"):
            check_random_state(bad)


def test_check_random_state_error_message_lists_what_it_accepts():
    # the message named None, an int seed and a Generator, while lists, tuples and SeedSequences were taken;
    # each kind it names is accepted and gives numpy's own default_rng stream, the others are refused naming it
    import re

    from shallow._validation import check_random_state

    with pytest.raises(TypeError) as info:
        check_random_state("seed")
    listed = re.fullmatch(r"rng must be (.*), got str", str(info.value)).group(1)
    accepted = {"None": None, "a non-negative int seed": 5, "a non-empty list": [5, 2], "tuple": (5, 2),
                "a numpy SeedSequence": np.random.SeedSequence(5)}
    assert set(re.split(r", | or ", listed)) == {"None", "a non-negative int seed", "a non-empty list",
                                                 "tuple of non-negative int seeds", "a numpy SeedSequence",
                                                 "a numpy Generator"}
    for name, rng in accepted.items():
        if rng is not None:
            assert check_random_state(rng).random() == np.random.default_rng(rng).random(), name
    assert isinstance(check_random_state(None), np.random.Generator)
    generator = np.random.default_rng(5)
    assert check_random_state(generator) is generator
    for bad in (True, 1.5, [], [1, -1], np.arange(2), np.random.PCG64(5), np.random.RandomState(5)):
        with pytest.raises(TypeError, match=f"^rng must be {re.escape(listed)}, got "):
            check_random_state(bad)


def test_check_integer_states_both_bounds_when_it_has_two():
    from shallow._validation import check_integer

    assert check_integer(5, "k", minimum=1, maximum=5) == 5
    with pytest.raises(ValueError, match=r"^k must be an integer >= 1 and <= 5, got 7$"):
        check_integer(7, "k", minimum=1, maximum=5)
    with pytest.raises(ValueError, match=r"^k must be an integer <= 5, got 6$"):
        check_integer(6, "k", minimum=None, maximum=5)


# --------------------------------------------------------------------------- the shared checks, directly
def test_check_integer_refuses_a_value_beyond_either_bound_alone():
    from shallow._validation import check_integer

    with pytest.raises(ValueError, match=r"^k must be an integer >= 0, got -1$"):
        check_integer(-1, "k", minimum=0)
    with pytest.raises(ValueError, match=r"^k must be an integer >= 0 and <= 9, got -1$"):
        check_integer(-1, "k", minimum=0, maximum=9)  # below the minimum, within the maximum
    with pytest.raises(ValueError, match=r"^k must be an integer >= 0 and <= 9, got 10$"):
        check_integer(10, "k", minimum=0, maximum=9)
    assert check_integer(np.int64(0), "k", minimum=0, maximum=9) == 0


def test_check_positive_refuses_zero_and_check_nonnegative_takes_it():
    from shallow._validation import check_nonnegative, check_positive

    with pytest.raises(ValueError, match=r"^eta must be a positive finite number, got 0.0$"):
        check_positive(0.0, "eta")
    assert check_positive(5e-324, "eta") == 5e-324  # the smallest subnormal is positive
    assert check_nonnegative(0.0, "noise") == 0.0


def test_check_finite_labels_refuses_nan_and_infinite_float_labels_only():
    from shallow._validation import check_finite_labels

    with pytest.raises(ValueError, match=r"^y contains 2 NaN or infinite label\(s\)$"):
        check_finite_labels(np.array([0.0, np.nan, 1.0, np.inf]))
    for y in (np.array([0.0, 2.0]), np.array([3, -1]), np.array(["cat", "dog"])):
        assert check_finite_labels(y) is y


def test_cast_within_range_refuses_finite_float64_values_beyond_float32():
    # 1e39 > 3.4e38, the largest float32: the cast would make it inf. An infinity already in x, a cast
    # that widens, and integers are passed through (other checks name non-finite input).
    from shallow._validation import cast_within_range

    with pytest.raises(ValueError, match=r"^X has values up to 1e\+39 in absolute value, beyond the largest float32"):
        cast_within_range(np.array([1.0, -1e39]), np.float32, "X", "the network")
    assert np.isinf(cast_within_range(np.array([np.inf, 1e39]), np.float32, "X", "the network")).all()
    assert cast_within_range(np.array([1e38], np.float32), np.float64, "X", "the network")[0] == np.float32(1e38)
    assert cast_within_range(np.array([3.0e38]), np.float32, "X", "the network")[0] == np.float32(3.0e38)
    assert cast_within_range(np.array([2**40]), np.float32, "X", "the network")[0] == 2.0**40


def test_check_points_checks_the_number_of_coordinates():
    from shallow._validation import check_points

    with pytest.raises(ValueError, match=r"^X has shape \(4, 3\) but d=2 coordinates were expected$"):
        check_points(np.ones((4, 3)), d=2)
    with pytest.raises(ValueError, match=r"^X must have at least one coordinate, got shape \(4, 0\)$"):
        check_points(np.ones((4, 0)))
    assert check_points(np.ones((4, 1)), d=1).shape == (4, 1)


def test_check_integer_refuses_booleans_and_non_integers():
    # True is an Integral in Python, but never a count: refused like 2.0
    from shallow._validation import check_integer

    with pytest.raises(ValueError, match=r"^k must be an integer >= 1, got True \(bool\)$"):
        check_integer(True, "k", minimum=1)
    with pytest.raises(ValueError, match=r"^k must be an integer >= 0, got 2.0 \(float\)$"):
        check_integer(2.0, "k")


def test_rows_normalised_in_float32_and_cast_to_float64_are_refused_with_the_reason():
    from shallow._validation import check_on_sphere

    X = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    check_on_sphere(X)  # in float32, on the sphere
    with pytest.raises(ValueError, match="normalised in float32 and cast to float64, say: normalise them in float64"):
        check_on_sphere(X.astype(np.float64) * (1 + 1e-7))


@pytest.mark.parametrize("check", ["check_positive", "check_nonnegative"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float64("nan"), True, False, "1"])
def test_check_positive_and_check_nonnegative_refuse_non_finite_numbers_booleans_and_strings(check, value):
    # NaN compares False with 0 (NaN < 0 and NaN <= 0 are both False), and True is a numbers.Real equal to 1
    from shallow import _validation

    with pytest.raises(ValueError, match=r"^noise must be a (positive finite number|finite number >= 0), got "):
        getattr(_validation, check)(value, "noise")


def test_check_random_state_refuses_a_boolean_or_negative_seed_naming_rng():
    # True is an Integral equal to 1: taken as a seed it would silently give the stream of seed 1
    from shallow._validation import check_random_state

    with pytest.raises(TypeError, match=r"^rng must be None, a non-negative int seed, .* numpy Generator, got True$"):
        check_random_state(True)
    with pytest.raises(ValueError, match=r"^rng must be a non-negative int seed, got -1$"):
        check_random_state(-1)


def test_check_array_refuses_a_single_nan_or_infinite_entry():
    # a one-entry array (a single point, a scalar target) is checked like any other
    from shallow._validation import check_array

    for value in (np.nan, np.inf):
        with pytest.raises(ValueError, match=r"^y contains 1 NaN or infinite value\(s\)$"):
            check_array(np.array([value]), "y")
        with pytest.raises(ValueError, match=r"^y contains 1 NaN or infinite value\(s\)$"):
            check_array(np.float64(value), "y")


def test_check_array_promotes_float16_to_float32_and_keeps_float32_and_float64():
    # float16 overflows at 65504: a kernel exp(|x|^2) or a square of 300 was inf
    from shallow._validation import check_array

    assert check_array(np.ones(2, dtype=np.float16), "x").dtype == np.float32
    assert check_array(np.ones(2, dtype=np.float32), "x").dtype == np.float32
    assert check_array(np.ones(2), "x").dtype == np.float64
    assert check_array(np.array([300.0], dtype=np.float16), "x")[0] ** 2 == 90000.0


@pytest.mark.parametrize("consumer", ["EmpiricalRisk", "LinearizedRisk", "conditional_gradient"])
def test_regression_data_of_zero_samples_is_refused_by_every_consumer_of_check_samples(consumer):
    # check_samples: n >= 1 (an empty mean is 0/0); the three consumers refuse n = 0 with its message
    from shallow.flows import EmpiricalRisk
    from shallow.lazy import LinearizedRisk
    from shallow.measures import conditional_gradient

    X, y = np.zeros((0, 3)), np.zeros(0)
    call = {"EmpiricalRisk": lambda: EmpiricalRisk(X, y),
            "LinearizedRisk": lambda: LinearizedRisk(X, y),
            "conditional_gradient": lambda: conditional_gradient(X, y, 1.0)}[consumer]
    with pytest.raises(ValueError, match="X must hold at least one sample, got n=0"):
        call()


@pytest.mark.gpu
def test_check_samples_refuses_points_and_targets_on_different_devices(xp):
    # one device: a device X with host targets (or the reverse) is refused at once, as get_xp refuses a mix
    from shallow._validation import check_samples

    if xp is np:
        pytest.skip("needs a device array")
    import sys

    fake = sys.modules.get("fake_device")  # SHALLOW_FAKE_DEVICE=1 notes every mix as a host call on device data
    before = None if fake is None else fake.leaks.copy()
    X = np.random.default_rng(0).standard_normal((5, 2))
    with pytest.raises(TypeError, match="cannot be mixed"):
        check_samples(xp.asarray(X), np.ones(5))
    if fake is not None:  # the mix this test asks for is refused, not a leak to report in the summary
        fake.leaks.clear()
        fake.leaks.update(before)
