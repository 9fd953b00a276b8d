"""The primitives of a CNN training step, each timed in the ways shallow.cnn can compute it.

For the shapes of the VGG step of ``cnn_step.py`` (28x28 images, width 32, channels doubling
after each pooling) at one batch size, this prints the median time of:

- the weight gradient of one 3x3 tap, A^T B over the R rows of the padded grid (32 x 32 to
  128 x 128 results): one GEMM (``_gemm.gemm``), and split over row chunks
  (``_reduce.gram_rows(split=True)``, which a device ran until one GEMM measured faster there);
- the channel sums and channel dot products of batch normalisation and the bias gradient: one
  einsum, and chunked (``_reduce.sum_rows`` / ``dot_rows`` with ``split=True``);
- one tap of the forward pass, out += A W (a GEMM accumulating in place), against the time
  of reading A and reading and writing ``out`` at the bandwidth of a plain device copy;
- the copy itself, which sets that bandwidth;
- the weight gradient of the 28x28 layer as the device computes it now, (R, 9 C)^T (R, C) from
  the im2col columns: one GEMM, and split with several choices of the chunking constants
  (``_reduce.MAX_CHUNKS``, ``_reduce.MIN_CHUNK_ROWS``).

- on a GPU, some of these products through CuPy's cuBLAS calls and through the cuBLAS handle of
  :mod:`shallow.cnn._cublas`, which a captured step (``CapturedStep``) uses.

It answers, in one run on a lent GPU, which formulation each primitive should use there. On the
CPU (the default) it runs the same code with numpy, as a check that the script works.

    python benchmarks/device_primitives.py --device gpu --batch 1024
    python benchmarks/device_primitives.py --batch 16          # CPU smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def timer(device, repeat):
    """A function timing ``fn()``: median seconds over ``repeat`` calls, synchronised on a GPU."""
    if device == "gpu":
        from cupyx.profiler import benchmark

        def run(fn):
            res = benchmark(fn, (), n_repeat=repeat, n_warmup=2)
            return float(np.median(res.gpu_times))
        return run

    def run(fn):
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    from shallow.backend import get_xp, to_device
    from shallow.cnn._gemm import gemm
    from shallow.cnn._reduce import dot_rows, gram_rows, sum_rows

    rng = np.random.default_rng(0)

    def rand(*shape):
        return to_device(rng.standard_normal(shape).astype(args.dtype), args.device)

    xp = get_xp(rand(1))
    t = timer(args.device, args.repeat)
    itemsize = np.dtype(args.dtype).itemsize
    print(f"device {args.device}, batch {args.batch}, {args.dtype}; median of {args.repeat} calls, milliseconds")

    layers = [(28, 32), (14, 64), (7, 128)]
    for side, C in layers:
        R = args.batch * (side + 1) ** 2  # rows of the padded grid (one shared zero band)
        a, g = rand(R, C), rand(R, C)
        out = xp.empty((C, C), dtype=args.dtype)
        view = rand(args.batch, side + 1, side + 1, C)[:, :side, :side]  # a convolution's output
        flat = rand(args.batch * side * side, C)
        W = rand(C, C)
        copy_src, copy_dst = rand(R, C), xp.empty((R, C), dtype=args.dtype)
        t_copy = t(lambda: xp.copyto(copy_dst, copy_src))
        bandwidth = 2 * R * C * itemsize / t_copy  # bytes read + written per second
        rows = [
            ("dW tap, one GEMM", t(lambda: gemm(a.T, g, out))),
            ("dW tap, split over rows", t(lambda: gram_rows(a, g, out, split=True))),
            ("channel sum (M, C), einsum", t(lambda: sum_rows(flat, split=False))),
            ("channel sum (M, C), split", t(lambda: sum_rows(flat, split=True))),
            ("channel sum of a conv view, einsum", t(lambda: sum_rows(view, split=False))),
            ("channel sum of a conv view, split", t(lambda: sum_rows(view, split=True))),
            ("channel dot (M, C), einsum", t(lambda: dot_rows(flat, flat, split=False))),
            ("channel dot (M, C), split", t(lambda: dot_rows(flat, flat, split=True))),
            ("forward tap, out += A W", t(lambda: gemm(a, W, copy_dst, beta=1.0))),
        ]
        print(f"\n{side}x{side}, {C} channels: R = {R} rows; a copy of (R, C) moves {bandwidth / 1e9:.0f} GB/s")
        for name, seconds in rows:
            print(f"  {name:38s} {1e3 * seconds:9.3f}")
        tap_bound = 3 * R * C * itemsize / bandwidth  # read A, read and write out
        print(f"  {'forward tap at copy bandwidth':38s} {1e3 * tap_bound:9.3f}")

    # the chunking constants of _reduce (at most MAX_CHUNKS chunks of at least MIN_CHUNK_ROWS rows),
    # on the widest product of the step: the im2col weight gradient of the 28x28 layer, (R, 288)^T (R, 32)
    from shallow.cnn import _reduce
    R = args.batch * 29 * 29
    cols, g, out = rand(R, 9 * 32), rand(R, 32), xp.empty((9 * 32, 32), dtype=args.dtype)
    print(f"\nim2col weight gradient (R, 288)^T (R, 32), R = {R}: chunks x rows -> ms")
    print(f"  {'one GEMM':38s} {1e3 * t(lambda: gemm(cols.T, g, out)):9.3f}")
    saved = _reduce.MAX_CHUNKS, _reduce.MIN_CHUNK_ROWS
    for max_chunks, min_rows in ((16, 1024), (64, 1024), (256, 1024), (1024, 256), (4096, 64)):
        _reduce.MAX_CHUNKS, _reduce.MIN_CHUNK_ROWS = max_chunks, min_rows
        S, m = _reduce.chunks(R)
        print(f"  {f'{S} chunks of {m} rows':38s} {1e3 * t(lambda: gram_rows(cols, g, out, split=True)):9.3f}")
    _reduce.MAX_CHUNKS, _reduce.MIN_CHUNK_ROWS = saved

    if args.device == "gpu":
        # a captured step computes its products through a cuBLAS handle of shallow.cnn's own
        from shallow.backend import cuda_runtime
        from shallow.cnn import _cublas
        handle = _cublas.Handle(cuda_runtime().get_current_stream(), xp)
        R = args.batch * 29 * 29
        a, b, W = rand(R, 32), rand(R, 32), rand(32, 32)
        products = [
            ("forward tap, out += A W", lambda: gemm(a, W, b, beta=1.0)),
            ("dW tap, split over rows", lambda: gram_rows(a, b, out[:32], split=True)),
            ("im2col dW, split over rows", lambda: gram_rows(cols, g, out, split=True)),
            ("im2col forward, cols W", lambda: gemm(cols, out, b)),
        ]
        print(f"\nCuPy's cuBLAS calls against shallow.cnn._cublas (a captured step's), 28x28 layer, R = {R}: ms")
        for name, fn in products:
            cupy_time = t(fn)
            with _cublas.binding(handle):
                handle_time = t(fn)
            print(f"  {name:38s} {1e3 * cupy_time:9.3f} {1e3 * handle_time:9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
