"""Shared fixtures: the array backends, the `gpu` marker's skip, and hypothesis's profiles."""

import json
import os

import numpy as np
import pytest
from hypothesis import settings

from shallow import backend

# Property-based tests draw the same examples on every run, as every other test draws from a fixed seed: a
# CI run is red only for a change, never for an unlucky draw. SHALLOW_HYPOTHESIS=explore draws new examples
# on each run, to look for counterexamples.
settings.register_profile("derandomized", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("SHALLOW_HYPOTHESIS", "derandomized"))


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


@pytest.fixture(scope="session")
def run_quick():
    """run_quick(name, out) runs a study's --quick mode under ``out`` and checks its figure and sidecar.

    Returns (module, result). The test then checks the study's claim on ``result``. Session-scoped
    (it holds no state), so that a module-scoped fixture can run a long quick mode once for
    several tests: ``run_quick(name, tmp_path_factory.mktemp(name))``.
    """
    from shallow import cli, study

    def run(name, out):
        module = cli.load_study(name)
        cfg = study.quick_config(module)
        result = study.run(module, cfg, quick=True, out=out)
        sidecar = json.loads((out / "figures" / f"{name}_quick.json").read_text())
        assert (out / "figures" / f"{name}_quick.png").stat().st_size > 10_000
        assert sidecar["study"] == name
        assert sidecar["config"] == json.loads(json.dumps(study.dataclasses.asdict(cfg)))
        return module, result

    return run
