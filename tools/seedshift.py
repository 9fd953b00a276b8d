"""pytest plugin: run the suite with every seed moved, to find tests that pass only at their own seed.

Each integer (or list of integers) given to ``numpy.random.default_rng`` becomes ``[seed, 7919 + k]``
with k = ``$SEED_OFFSET`` (0, the default, changes nothing). shallow draws all its randomness through
``check_random_state``, hence through ``default_rng``: the tests' seeds, their seed loops and the data
splits all move together. A statistical check that fails at some k >= 1 is a lucky test: its threshold
was fitted to its own run, or a precondition of it (no kink crossed, every case drawn) held only there.

    for k in 0 1 2 3 4 5 6 7 8; do
        SEED_OFFSET=$k PYTHONPATH=tools python -m pytest -q -p seedshift tests/test_flows.py
    done

The whole suite: add ``--ignore=tests/test_docstrings.py``, whose examples print the numbers of their own
seeds (doctest compares text). Sessions 12 and 13 ran offsets 1 to 11 over the suite this way.

A development tool, like ``mutants.py``: neither part of the package nor of the suite.
"""

import numbers
import os

import numpy as np

OFFSET = int(os.environ.get("SEED_OFFSET", "0"))
_default_rng = np.random.default_rng


def _moved(seed):
    extra = 7919 + OFFSET
    if OFFSET == 0:
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return [int(seed), extra]
    if isinstance(seed, (list, tuple)) and seed and all(isinstance(s, numbers.Integral) for s in seed):
        return [int(s) for s in seed] + [extra]
    if isinstance(seed, np.random.SeedSequence):
        entropy = seed.entropy
        entropy = list(entropy) if isinstance(entropy, (list, tuple)) else [int(entropy)]
        return np.random.SeedSequence(entropy + [extra], spawn_key=seed.spawn_key)
    return seed  # None, a Generator, a BitGenerator: unchanged


def default_rng(seed=None):
    """numpy's default_rng of the moved seed."""
    return _default_rng(_moved(seed))


np.random.default_rng = default_rng
