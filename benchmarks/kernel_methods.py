"""Speed and memory of the kernel routines against the formulations a user would write instead, in one run.

Prints, with medians over repeats:

1. DotProductKernel("nngp", "tanh") on 10^4 cosines (Mehler's series) against the double Gauss-Hermite
   rule E[sigma(Z1) sigma(t Z1 + sqrt(1 - t^2) Z2)] with 200 x 200 nodes, and their largest difference;
2. kernel_regression with a ridge (Cholesky factorisations) against the same fit through numpy's
   eigendecomposition, at n = 2000, and their largest difference;
3. spectral_norm of a random 3x3 convolution (Lanczos) against 500 steps of the power method: the time
   and the error of each against the dense SVD;
4. the peak memory of ntk(X, sigma="relu") at n = 3000 (tracemalloc) in units of its output's size.

Run: ``python benchmarks/kernel_methods.py`` (about a minute; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shallow.cnn import Conv2d, spectral_norm  # noqa: E402
from shallow.kernels import dot_product_kernel, ntk  # noqa: E402
from shallow.lazy import kernel_regression  # noqa: E402


def median_time(fn, repeats):
    """(median wall time of fn() over ``repeats`` runs after one warm-up run, the last value)."""
    value = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def gauss_hermite_pair(t, q=200):
    """E[tanh(Z1) tanh(t Z1 + sqrt(1 - t^2) Z2)] by a q x q Gauss-Hermite rule (the former formulation)."""
    z, w = special.roots_hermitenorm(q)
    w = w / w.sum()
    s = np.sqrt(np.maximum(1 - t * t, 0))[..., None]
    out = np.zeros_like(t)
    for zi, wi in zip(z, w):
        out += wi * np.tanh(zi) * (np.tanh(t[..., None] * zi + s * z) @ w)
    return out


def ridge_by_eigh(K, y, ridge):
    lam, U = np.linalg.eigh(K)
    lam = np.maximum(lam, 0)
    return U @ (lam / (lam + len(y) * ridge) * (U.T @ y))


def power_method(conv, shape, steps, rng):
    v = rng.standard_normal((1, *shape))
    sigma = 0.0
    for _ in range(steps):
        v /= np.linalg.norm(v)
        u = conv.forward(v)
        w = conv.backward(u)
        sigma = np.sqrt(np.linalg.norm(w))
        v = w
    return sigma


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    print(f"machine: {platform.machine()} {platform.processor() or '?'} | {platform.platform()}")

    t = np.linspace(-1, 1, 2000 if args.quick else 10_000)
    kappa = dot_product_kernel("nngp", "tanh")
    fast, a = median_time(lambda: kappa(t), repeats)
    slow, b = median_time(lambda: gauss_hermite_pair(t), 1)
    print(f"1. tanh NNGP kernel on {t.size} cosines: Mehler {fast * 1e3:.1f} ms, Gauss-Hermite 200x200 "
          f"{slow * 1e3:.0f} ms: {slow / fast:.0f}x faster, largest difference {np.abs(a - b).max():.1e}")

    n = 800 if args.quick else 2000
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n // 2))
    K, y = A @ A.T / n, rng.standard_normal(n)
    fast, a = median_time(lambda: kernel_regression(K, y, 1e-3).train, repeats)
    slow, b = median_time(lambda: ridge_by_eigh(K, y, 1e-3), repeats)
    print(f"2. kernel ridge regression, n = {n}: Cholesky {fast:.2f} s, eigh {slow:.2f} s: {slow / fast:.1f}x "
          f"faster, largest difference {np.abs(a - b).max():.1e}")

    H, C = (12, 8) if args.quick else (28, 16)
    conv = Conv2d(C, C, 3, padding=1, rng=1, bias=False)
    fast, a = median_time(lambda: spectral_norm(conv, (H, H, C), rng=0), repeats)
    slow, b = median_time(lambda: power_method(conv, (H, H, C), 500, np.random.default_rng(0)), 1)
    exact = spectral_norm(conv, (H, H, C), rng=1, tol=0.0, n_iter=3000)  # the converged Ritz value
    print(f"3. spectral norm of a 3x3 convolution on {H}x{H}x{C}: Lanczos {fast:.2f} s (relative error "
          f"{abs(a - exact) / exact:.1e}), 500 power steps {slow:.2f} s (relative error {abs(b - exact) / exact:.1e})")

    n = 1000 if args.quick else 3000
    X = rng.standard_normal((n, 20))
    tracemalloc.start()
    out = ntk(X, sigma="relu")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"4. relu NTK of {n} points: peak memory {peak / out.nbytes:.1f} times its {out.nbytes / 2**20:.0f} MiB output")


if __name__ == "__main__":
    main()
