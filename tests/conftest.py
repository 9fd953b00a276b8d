"""Shared fixtures: the array backends, the `gpu` marker's skip, and hypothesis's profiles."""

import json
import os
import sys

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


# SHALLOW_FAKE_DEVICE=1 runs the `gpu` tests and the cupy side of the `xp` fixture on the fake device of
# tests/fake_device.py (numpy arrays posing as CuPy ones, refusing host conversion): CuPy paths on a CPU.
FAKE_DEVICE = os.environ.get("SHALLOW_FAKE_DEVICE") == "1"


def pytest_collection_modifyitems(config, items):
    # The fake device first: on a machine with a GPU, its gpu tests run on the fake too (the autouse fixture
    # below installs it whatever the hardware), so the `cuda` ones must be skipped there as well (they failed:
    # `cupy.cuda` and the kernels are absent from the fake)
    if FAKE_DEVICE:  # what needs CUDA itself cannot run on numpy arrays
        skip = pytest.mark.skip(reason="needs CUDA itself, which the fake device does not emulate")
        for item in items:
            if "gpu" in item.keywords and "cuda" in item.keywords:
                item.add_marker(skip)
        return
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
    if FAKE_DEVICE:
        return request.getfixturevalue("_fake_device")
    import cupy
    return cupy


@pytest.fixture(autouse=True)
def _fake_device(request, monkeypatch):
    """Under SHALLOW_FAKE_DEVICE=1, a `gpu` test runs on the fake device (its namespace is the value)."""
    if not (FAKE_DEVICE and "gpu" in request.keywords):
        return None
    import fake_device
    fake_device.install(monkeypatch)
    return fake_device.fake


@pytest.fixture(autouse=True)
def _mpmath_default_precision():
    """A test that sets mpmath.mp.dps (five do, to 40 or 50 digits) leaves mpmath's default, 15 digits, to the
    next: no test's oracle depends on the order the tests run in."""
    yield
    mpmath = sys.modules.get("mpmath")
    if mpmath is not None:
        mpmath.mp.dps = 15


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


def pytest_terminal_summary(terminalreporter):
    """Under SHALLOW_FAKE_DEVICE=1: the host calls on device data that the fake device recorded."""
    if not FAKE_DEVICE or "fake_device" not in __import__("sys").modules:
        return
    from fake_device import leaks
    if leaks:
        terminalreporter.section("fake device: host calls on device data")
        for (kind, call, where), count in sorted(leaks.items(), key=lambda item: item[0][2]):
            terminalreporter.write_line(f"{where}: {call} x{count} -- {kind}")
