"""Kernel launches of one CNN training step on the device code path, counted without a device.

On a GPU every array operation of CuPy is a kernel launch costing some microseconds of host time,
so a small batch is bound by the number of operations, not by arithmetic. This script runs the
device code path of shallow.cnn (the one taken for CuPy arrays) on numpy arrays of a subclass
that counts operations, and prints their number per training step and where they come from.

What counts as one launch: an elementwise operation or reduction (a numpy ufunc call), a copy into
a slice (``a[...] = b``), a call of a numpy function on the arrays (``ascontiguousarray``,
``matmul``, ``einsum``, ``zeros``: a memset), and an accumulating GEMM (``_gemm.gemm``, one cuBLAS
call). Allocations (``empty``) and views count nothing. The count is approximate: a CuPy routine
may launch more than one kernel (an einsum, a reduction with CUB), and a ufunc on a 0-d scalar
launches none.

    python benchmarks/device_launches.py                 # VGG 28x28, width 32
    python benchmarks/device_launches.py --sites 40      # and the 40 busiest call sites
    SHALLOW_FUSED_KERNELS=1 python benchmarks/device_launches.py   # with the fused batch norm
"""

from __future__ import annotations

import argparse
import collections
import sys
import types

import numpy as np

COUNTS = collections.Counter()
FREE = {"empty", "empty_like", "asarray", "dtype", "result_type", "broadcast_to", "shape", "ndim",
        "may_share_memory", "shares_memory"}


def _site(depth=2):
    """The first caller outside numpy and this script: file:function."""
    frame = sys._getframe(depth)
    while frame and ("numpy" in frame.f_code.co_filename or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}" if frame else "?"


def _raw(a):
    return a.view(np.ndarray) if isinstance(a, Counted) else a


def _counted(a):
    return a.view(Counted) if type(a) is np.ndarray else a


def _raw_all(value):
    if isinstance(value, (list, tuple)):
        return type(value)(_raw(v) for v in value)
    return _raw(value)


class Counted(np.ndarray):
    """A numpy array whose operations are counted as device launches (shallow.cnn is told that
    it is a device array, and takes its device code path)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        COUNTS[_site()] += 1
        if "out" in kwargs:
            kwargs["out"] = tuple(_raw(o) for o in kwargs["out"])
        return _counted(getattr(ufunc, method)(*(_raw(i) for i in inputs), **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ not in FREE:
            COUNTS[_site()] += 1
        return _counted(func(*(_raw_all(a) for a in args), **{k: _raw_all(v) for k, v in kwargs.items()}))

    def __setitem__(self, key, value):
        COUNTS[_site()] += 1
        np.ndarray.__setitem__(_raw(self), key, _raw(value))

    def copy(self, *args, **kwargs):
        COUNTS[_site()] += 1
        return _counted(_raw(self).copy(*args, **kwargs))


class CountingNumpy(types.ModuleType):
    """numpy as the array module of Counted arrays: its functions count and return Counted arrays."""

    def __getattr__(self, name):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def call(*args, **kwargs):
            if name not in FREE:
                COUNTS[_site()] += 1
            return _counted(attr(*(_raw_all(a) for a in args), **{k: _raw_all(v) for k, v in kwargs.items()}))
        return call


def device_gemm(transa, transb, a, b, out, alpha=1.0, beta=0.0):
    """Stands for cuBLAS's accumulating GEMM: one launch."""
    COUNTS[_site()] += 1
    raw = _raw(out)
    raw *= beta
    raw += alpha * (_raw(a) @ _raw(b))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg", choices=("vgg", "resnet"))
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="the count does not depend on it")
    parser.add_argument("--sites", type=int, default=15, help="call sites to list")
    args = parser.parse_args(argv)

    import shallow.cnn
    from shallow.cnn import SGD, CrossEntropy, _fused, _gemm, _reduce, build_model
    from shallow.cnn.train import train_step

    xp = CountingNumpy("numpy")
    xp.lib, xp.linalg, xp.random = np.lib, np.linalg, np.random
    for name, module in list(sys.modules.items()):
        if name.startswith("shallow") and hasattr(module, "get_xp"):
            module.get_xp = lambda *arrays, **kwargs: xp
    _gemm.device_gemm = lambda: device_gemm
    _reduce.on_device = lambda array: True  # the layers' test for "not a numpy array"
    fused_call = _fused.call

    def one_kernel(name, *arrays):  # a fused kernel (SHALLOW_FUSED_KERNELS=1) is one launch
        COUNTS[_site()] += 1
        fused_call(name, *(_raw(a) for a in arrays))
    _fused.call = one_kernel

    model = build_model(args.arch, (args.size, args.size, 1), 10, rng=0, dtype=np.float32, width=args.width)
    model.flatten_parameters()
    for _, layer in model.named_layers():
        for store in (layer.params, layer.buffers, layer._grad_slots):
            for key in store:
                store[key] = store[key].view(Counted)
    model.flatten_parameters()  # again, on the Counted views: one Counted array for all parameters
    model.check_inputs = False  # as fit and benchmarks/cnn_step.py: the batch is checked once
    optimizer = SGD(model.named_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.size, args.size, 1)).astype(np.float32).view(Counted)
    y = rng.integers(0, 10, args.batch).view(Counted)
    loss = CrossEntropy()
    train_step(model, loss, optimizer, x, y, check=False)  # plans and state made
    COUNTS.clear()
    train_step(model, loss, optimizer, x, y, check=False)
    del shallow.cnn

    by_file = collections.Counter()
    for site, n in COUNTS.items():
        by_file[site.split(":")[0]] += n
    print(f"{args.arch} {args.size}x{args.size}, width {args.width}: {sum(COUNTS.values())} array operations "
          f"(about one kernel launch each on CuPy) per training step")
    print("by file: " + ", ".join(f"{name} {n}" for name, n in by_file.most_common()))
    for site, n in COUNTS.most_common(args.sites):
        print(f"  {n:5d}  {site}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
