"""One step of the particle gradient flow against the GEMM roofline and against PyTorch autograd.

A step on the empirical square risk with n samples, m particles in dimension d costs
4 n m d + 4 n m flops (two GEMMs, X W^T and (sigma'(Z) r)^T X, plus two matrix-vector products).
Printed, measured side by side in one run (medians over repeats):

* roofline ratio = (step flops / GEMM flop rate) / step time, the GEMM being X W^T of the same
  size (n x d times d x m) on the same device and dtype: 1.0 means the step runs as fast as its
  flops would at the speed of a plain GEMM;
* PyTorch ratio = time of the same step with torch autograd / time of ours (> 1: we are faster),
  on the same device and dtype; skipped without torch.

    python benchmarks/flow_step.py [--n 4096] [--m 4096] [--d 64] [--dtype float64] [--device cpu]
                                   [--block-mb MiB]
    python benchmarks/flow_step.py --small [--repeats 15]

With ``--small``: the per-step overhead of :func:`shallow.flows.gradient_flow` at small sizes
(m = 1, 10, 100; d = 2, 10; euler, relu, float64 on the host), where the step is mostly Python and numpy
dispatch. It prints, for EmpiricalRisk (n = 50) and PopulationRisk (a teacher of 3 neurons), the time of one
step of a 200-step flow, and the overhead ratio: that time over the time of the same Euler step written
in plain numpy (values and gradients in a few vectorised lines, no checks, no chunks, no records).

Measured: on the 2-core development CPU (n = m = 4096, d = 64) float64 0.71 of the roofline and 2.97x
PyTorch (session 2); in session 14, on the same kind of host, 0.77 with one BLAS thread and 0.50 to 0.53
with two (the GEMMs use both cores, the elementwise passes over the n x m blocks one), 2.3x to 2.5x
PyTorch; on an NVIDIA H200 (n = m = 16384, d = 128, 2026-11-27) float64 0.47 of the roofline and
1.06x PyTorch, float32 0.59 and 0.88x. On the GPU the block size matters: the host's 16 MiB blocks
gave 0.17x PyTorch (launch-bound), hence networks.default_block_bytes (1 GiB on a device; 4 GiB
measured the same).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from shallow.backend import get_xp, to_device
from shallow.flows import EmpiricalRisk, PopulationRisk, gradient_flow
from shallow.networks import TwoLayer


def median_time(fn, repeats, sync=lambda: None):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_step_time(X, y, a, W, gamma, repeats, device):
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if device == "gpu" else "cpu"
    Xt = torch.as_tensor(np.asarray(X.get() if hasattr(X, "get") else X), device=dev)
    yt = torch.as_tensor(np.asarray(y.get() if hasattr(y, "get") else y), device=dev)
    at = torch.as_tensor(np.asarray(a.get() if hasattr(a, "get") else a), device=dev).requires_grad_()
    Wt = torch.as_tensor(np.asarray(W.get() if hasattr(W, "get") else W), device=dev).requires_grad_()

    def step():
        at.grad = None
        Wt.grad = None
        f = gamma * (torch.relu(Xt @ Wt.T) @ at)
        loss = 0.5 * ((f - yt) ** 2).mean()
        loss.backward()

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    return median_time(step, repeats, sync)


def _plain_empirical_step(X, y, a, W, gamma, eta, s):
    """One Euler step of the empirical relu square risk in plain numpy (the reference of ``--small``)."""
    n = X.shape[0]
    Z = X @ W.T  # (n, m)
    S = np.maximum(Z, 0)
    r = gamma * (S @ a) - y  # (n,)
    risk = 0.5 * float(r @ r) / n
    ga = (gamma / n) * (S.T @ r)
    gW = (gamma / n) * a[:, None] * (((Z > 0) * r[:, None]).T @ X)  # (m, d)
    return risk, a - eta * s * ga, W - eta * s * gW


def _plain_population_step(a, W, at, Ws, gamma, eta, s):
    """One Euler step of the population relu square risk in plain numpy: the arc-cosine kernel of order 1,
    K = |w||v| (sin th + (pi - th) cos th) / (2 pi), and grad_w K = ((pi - th) v + |v| sin th w/|w|) / (2 pi)
    (the reference of ``--small``)."""
    def kernel_and_field(U, V, c):
        nu, nv = np.linalg.norm(U, axis=1), np.linalg.norm(V, axis=1)
        cos = np.clip((U @ V.T) / np.outer(nu, nv), -1, 1)  # (m, m')
        th = np.arccos(cos)
        sin, A = np.sin(th), (np.pi - th) / (2 * np.pi)
        K = np.outer(nu, nv) * (sin / (2 * np.pi) + A * cos)
        field = A @ (c[:, None] * V) + ((sin @ (nv * c)) / (2 * np.pi))[:, None] * (U / nu[:, None])
        return K, field

    Kww, Fww = kernel_and_field(W, W, gamma * a)
    Kws, Fws = kernel_and_field(W, Ws, at)
    u = gamma * (Kww @ a) - Kws @ at
    risk = 0.5 * gamma * float(a @ u) - 0.5 * gamma * float(a @ (Kws @ at))
    return risk, a - eta * s * gamma * u, W - eta * s * gamma * a[:, None] * (Fww - Fws)


def small_sizes(repeats):
    """The per-step time of gradient_flow at small sizes, and its ratio to a plain-numpy Euler step."""
    steps, eta = 200, 0.01
    print(f"machine: {platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cores), "
          f"numpy {np.__version__}, host, float64, relu, euler, {steps} steps, medians of {repeats}")
    print("risk        m    d   step (us)   plain numpy (us)   overhead ratio")
    rng = np.random.default_rng(0)
    for m in (1, 10, 100):
        for d in (2, 10):
            net = TwoLayer.init(m, d, rng=1)
            teacher = TwoLayer.init(3, d, rng=2)
            X, y = rng.standard_normal((50, d)), rng.standard_normal(50)
            at = teacher.a * teacher.gamma
            plain = {
                "empirical": lambda: _plain_empirical_step(X, y, net.a, net.W, net.gamma, eta, m),
                "population": lambda: _plain_population_step(net.a, net.W, at, teacher.W, net.gamma, eta, m),
            }
            for name, loss in (("empirical", EmpiricalRisk(X, y)), ("population", PopulationRisk(teacher))):
                t_flow = median_time(lambda: gradient_flow(net, loss, steps, eta), repeats) / steps
                t_plain = median_time(lambda: [plain[name]() for _ in range(steps)], repeats) / steps
                print(f"{name:<10} {m:>4} {d:>4} {t_flow * 1e6:>10.1f} {t_plain * 1e6:>16.1f} "
                      f"{t_flow / t_plain:>17.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--m", type=int, default=4096)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--block-mb", type=float, default=None,
                        help="memory of one pre-activation block in MiB (default: the library's, 16)")
    parser.add_argument("--small", action="store_true",
                        help="the per-step overhead of gradient_flow at small sizes (m = 1, 10, 100) instead")
    args = parser.parse_args(argv)
    if args.small:
        small_sizes(args.repeats)
        return
    n, m, d = args.n, args.m, args.d
    rng = np.random.default_rng(0)
    X = to_device(rng.standard_normal((n, d)).astype(args.dtype), args.device)
    y = to_device(rng.standard_normal(n).astype(args.dtype), args.device)
    net = TwoLayer.init(m, d, rng=1, dtype=args.dtype, device=args.device)
    xp = get_xp(X)
    sync = (lambda: xp.cuda.Device().synchronize()) if args.device == "gpu" else (lambda: None)
    loss = EmpiricalRisk(X, y) if args.block_mb is None else EmpiricalRisk(X, y, chunk_bytes=int(args.block_mb * 2**20))
    Z = xp.empty((n, m), dtype=X.dtype)

    t_gemm = median_time(lambda: xp.matmul(X, net.W.T, out=Z), args.repeats, sync)
    t_step = median_time(lambda: loss.value_and_grad(net), args.repeats, sync)
    flops = 4 * n * m * d + 4 * n * m
    gemm_rate = 2 * n * m * d / t_gemm
    roofline = flops / gemm_rate / t_step
    print(f"machine: {platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cores), "
          f"numpy {np.__version__}, device {args.device}, {args.dtype}")
    print(f"n={n} m={m} d={d}: GEMM X W^T {t_gemm * 1e3:.2f} ms ({gemm_rate / 1e9:.1f} GFLOP/s), "
          f"step {t_step * 1e3:.2f} ms")
    print(f"roofline ratio (step flops at GEMM speed / step time): {roofline:.2f}")
    t_torch = torch_step_time(X, y, net.a, net.W, net.gamma, args.repeats, args.device)
    if t_torch is None:
        print("PyTorch: not installed, comparison skipped")
    else:
        import torch
        print(f"PyTorch {torch.__version__} autograd step {t_torch * 1e3:.2f} ms: "
              f"ours is {t_torch / t_step:.2f}x as fast")


if __name__ == "__main__":
    main()
