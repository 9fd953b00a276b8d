r"""Fused elementwise kernels for batch normalisation on a GPU (opt-in).

On a device every array operation is a kernel launch of some microseconds of host time, and a
batch-normalisation layer takes about 27 of them in a training step (forward and backward), most
on vectors of C numbers (``benchmarks/device_launches.py``). Each formula below is one kernel
instead: written once, as text that is both a list of CUDA statements and Python (assignments,
``+ - * /`` and ``sqrt`` only), it becomes a ``cupy.ElementwiseKernel`` on a device and is executed
by Python with numpy elsewhere (:func:`call`), so the tests check the very text that the device
compiles against the unfused layer.

Off by default: set ``SHALLOW_FUSED_KERNELS=1`` to use them on a device. On an H200 (2026-11-29)
they match the unfused layer (the ``cuda`` tests) and the captured VGG step at batch 128 took 3.53 ms
with them against 3.80 ms without (one process each, within the spread between processes), so they
stay opt-in; ``benchmarks/device_check.sh profile`` times the step with them.

Kernels (shapes: C-vectors, or arrays of the layer's shape broadcast against C-vectors):

    bn_stats:       var = s2 / M,  inv_s = 1 / sqrt(var + eps),  a = gamma inv_s,
                    r_mean <- (1 - momentum) r_mean + momentum mu,
                    r_var  <- (1 - momentum) r_var + momentum M / (M - 1) var;
    bn_apply:       y = xc a + beta;
    bn_grad_stats:  dgamma = inv_s sum(dy xc),  dbeta = sum(dy),  a = gamma inv_s,
                    k1 = -a inv_s dgamma / M,  k2 = -a dbeta / M;
    bn_grad_apply:  dx = a dy + k1 xc + k2.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ..backend import get_xp
from . import _reduce

__all__ = ["KERNELS", "call", "enabled"]

#: name -> (input parameters, output parameters, statements), in CuPy's ElementwiseKernel syntax.
#: Outputs are passed in (all of them) and may be read before they are written.
KERNELS = {
    "bn_stats": (
        "T s2, T mu, T gamma, float64 inv_m, float64 eps, float64 momentum, float64 unbias",
        "T inv_s, T a, T r_mean, T r_var",
        ("inv_s = 1 / sqrt(s2 * inv_m + eps); a = gamma * inv_s; "
         "r_mean = r_mean * (1 - momentum) + momentum * mu; "
         "r_var = r_var * (1 - momentum) + momentum * unbias * (s2 * inv_m)"),
    ),
    "bn_apply": ("T xc, T a, T beta", "T y", "y = xc * a + beta"),
    "bn_grad_stats": (
        "T s_dy, T s_dy_xc, T inv_s, T gamma, float64 inv_m",
        "T dgamma, T dbeta, T a, T k1, T k2",
        ("dgamma = s_dy_xc * inv_s; dbeta = s_dy; a = gamma * inv_s; "
         "k1 = -a * inv_s * dgamma * inv_m; k2 = -a * s_dy * inv_m"),
    ),
    "bn_grad_apply": ("T dy, T xc, T a, T k1, T k2", "T dx", "dx = dy * a + xc * k1 + k2"),
}


def enabled(x) -> bool:
    """Whether the fused kernels are to be used for ``x``: a device array and SHALLOW_FUSED_KERNELS=1."""
    return _reduce.on_device(x) and os.environ.get("SHALLOW_FUSED_KERNELS") == "1"


def _names(params):
    return [p.split()[-1] for p in params.split(",")]


@functools.cache
def _device_kernel(name, xp):
    """Kernel ``name`` compiled by ``xp`` (the cupy module of the arrays, from backend.get_xp: only backend.py
    imports cupy)."""
    inputs, outputs, body = KERNELS[name]
    return xp.ElementwiseKernel(inputs, outputs, body + ";", f"shallow_{name}")


def call(name, *args):
    """Run kernel ``name`` on its inputs then its outputs (all given, written in place); returns None.

    CuPy arrays run the compiled kernel; numpy arrays run the same statements in Python.
    """
    inputs, outputs, body = KERNELS[name]
    n_in, n_out = len(_names(inputs)), len(_names(outputs))
    if len(args) != n_in + n_out:
        raise ValueError(f"kernel {name} takes {n_in} inputs and {n_out} outputs, got {len(args)} arrays")
    if not isinstance(args[0], np.ndarray):  # a device array
        _device_kernel(name, get_xp(*args))(*args)
        return
    scope = dict(zip(_names(inputs) + _names(outputs), args, strict=True))
    scope["sqrt"] = np.sqrt
    for statement in body.split(";"):
        target, expression = statement.split("=", 1)
        scope[target.strip()] = eval(expression, {"__builtins__": {}}, scope)  # the module's own text, no builtins
    for out_name, out in zip(_names(outputs), args[n_in:], strict=True):
        out[...] = scope[out_name]
