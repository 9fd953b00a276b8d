"""Memory and time of an i-RevNet training step, with the body's activations stored or recomputed.

``irevnet_small(..., recompute=True)`` keeps no caches between the forward and the backward pass of
the invertible body: backward recovers each layer's input with the inverse (Gomez et al. 2017,
Alg. 1). Printed for a few depths, measured side by side in one run: the peak of the numpy memory
allocated during one forward + backward pass (tracemalloc, on the host) and the median step time,
each with the activations stored and recomputed, and their ratios.

    python benchmarks/revnet_memory.py [--size 28] [--width 16] [--batch 128] [--blocks 1 2 4 8]

Measured on the 2-core development machine (float32, 28x28, width 16, batch 128, one thread,
session 14): the stored step's peak grows from 38 MiB at 1 block per stage to 187 MiB at 8, the
recomputed one's stays at 35 MiB (0.19x at 8 blocks); the recomputed step takes 1.3x to 1.5x the
time (one more evaluation of every F: about a third of a step whose backward costs twice its forward).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import tracemalloc

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS: one core, as in cnn_step.py

import numpy as np  # noqa: E402


def step_peak_and_time(net, x, repeats):
    out = net.forward(x)
    net.backward(np.ones_like(out))  # warm-up: the convolutions plan their shapes once
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    out = net.forward(x)
    net.backward(np.ones_like(out))
    peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = net.forward(x)
        net.backward(np.ones_like(out))
        times.append(time.perf_counter() - t)
    return peak, statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args(argv)
    from shallow.cnn.revnet import irevnet_small

    dtype = np.dtype(args.dtype)
    x = np.random.default_rng(0).standard_normal((args.batch, args.size, args.size, 1)).astype(dtype)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}; "
          f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"i-RevNet {args.size}x{args.size}, width {args.width}, batch {args.batch}, {args.dtype}; "
          f"peak numpy memory of one step (tracemalloc) and median step time over {args.repeats}")
    print(f"{'blocks':>6} {'params':>8} {'stored MiB':>11} {'recomputed MiB':>15} {'memory ratio':>13} "
          f"{'stored ms':>10} {'recomputed ms':>14} {'time ratio':>11}")
    for blocks in args.blocks:
        rows = {}
        for recompute in (False, True):
            net = irevnet_small((args.size, args.size, 1), 10, width=args.width, blocks=blocks, rng=0, dtype=dtype,
                                recompute=recompute)
            rows[recompute] = step_peak_and_time(net, x, args.repeats)
        (m0, t0), (m1, t1) = rows[False], rows[True]
        print(f"{blocks:>6} {net.num_parameters():>8} {m0 / 2**20:>11.1f} {m1 / 2**20:>15.1f} {m1 / m0:>13.2f} "
              f"{t0 * 1e3:>10.0f} {t1 * 1e3:>14.0f} {t1 / t0:>11.2f}")


if __name__ == "__main__":
    main()
