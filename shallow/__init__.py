"""shallow: the theory of one-hidden-layer neural networks, explored numerically.

A network f(x) = gamma(m) sum_j a_j sigma(<w_j, x>) is seen three ways: as a finite network, as a
signed measure on the sphere, and through its spherical-harmonic (Funk-Hecke) spectrum.

Submodules load on first use (``shallow.harmonics``, ``shallow.kernels``, ...), so that
``import shallow`` stays light and never imports cupy, matplotlib or dask.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "backend", "sphere", "harmonics", "activations", "kernels",
    "networks", "measures", "flows", "lazy", "depth", "barron", "sweep", "cnn", "cli",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'shallow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
