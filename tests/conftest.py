"""Shared fixtures: the array backends, and the `gpu` marker's skip."""

import numpy as np
import pytest

from shallow import backend


def pytest_collection_modifyitems(config, items):
    if backend.gpu_available():
        return
    skip = pytest.mark.skip(reason="no usable CUDA device (cupy missing, no GPU, or SHALLOW_DISABLE_CUPY=1)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: numpy always, cupy where a GPU answers (else skipped)."""
    if request.param == "numpy":
        return np
    import cupy
    return cupy
