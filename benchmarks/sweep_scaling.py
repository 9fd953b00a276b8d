"""Speedup of a sweep on 2 local worker processes over 1, for CPU-bound points.

Each point is a small particle gradient flow (numpy, one BLAS thread per worker: ``sweep`` sets
OPENBLAS/OMP/MKL_NUM_THREADS=1 in its workers). The wall time of the whole sweep is measured end to
end, pool start-up included, as a user sees it; runs with 1 and 2 workers alternate so that a change
in the machine's load hits both alike. Printed: the median wall times, the speedup t(1)/t(2) (ideal
2.0 on 2 free cores; target >= 1.8), the parallel efficiency (sum of the points' compute times over
workers x wall time), the engine's own cost (the same sweep of empty points: pool start-up and
dispatch) with the speedup it leaves on free cores, the cores the points actually got (their CPU
seconds per wall second), and the load average before and after: other jobs on the machine take
cores away and lower the measured speedup.

    python benchmarks/sweep_scaling.py [--points 8] [--repeats 3] [--steps 1500] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from shallow.sweep import grid, sweep


def flow_point(config):
    """A CPU-bound point: a gradient flow of a width-256 relu network on 256 samples in d = 20."""
    from shallow.flows import EmpiricalRisk, gradient_flow
    from shallow.networks import TwoLayer

    cpu = time.process_time()
    rng = np.random.default_rng(config["seed"])
    X = rng.standard_normal((256, 20))
    y = np.maximum(X[:, 0], 0) - X[:, 1]
    net = TwoLayer.init(256, 20, scale="ntk", rng=config["seed"])
    traj = gradient_flow(net, EmpiricalRisk(X, y), steps=config["steps"], step_size=1e-3, time_scale=1.0)
    return {"risk": traj.risks[-1], "cpu": time.process_time() - cpu}


def empty_point(config):
    """No work: a sweep of these measures the engine's own cost (pool start-up, dispatch, results)."""
    return {"seed": config["seed"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500, help="flow steps per point (sets the work per point)")
    parser.add_argument("--workers", type=int, default=2, help="the parallel run's workers")
    args = parser.parse_args(argv)
    points = grid(seed=list(range(args.points)), steps=[args.steps])
    load_before = os.getloadavg()
    times = {1: [], args.workers: []}
    compute = {1: [], args.workers: []}
    cpu = {1: [], args.workers: []}
    results = {}
    for _ in range(args.repeats):
        for k in (1, args.workers):
            start = time.perf_counter()
            out = sweep(flow_point, points, workers=k, progress=False)
            times[k].append(time.perf_counter() - start)
            compute[k].append(sum(out.wall_times))
            cpu[k].append(sum(r["cpu"] for r in out))
            results[k] = [r["risk"] for r in out]
    overhead = {k: statistics.median(_timed(lambda k=k: sweep(empty_point, points, workers=k, progress=False))
                                     for _ in range(args.repeats)) for k in (1, args.workers)}
    load_after = os.getloadavg()
    assert results[1] == results[args.workers], "the same points must give the same numbers"
    t1, tk = statistics.median(times[1]), statistics.median(times[args.workers])
    per_point = statistics.median(compute[1]) / args.points
    k = args.workers
    efficiency = statistics.median(c / (k * t) for c, t in zip(compute[k], times[k]))
    # CPU seconds the points got per wall second: how many cores the sweep actually had.
    cores_1 = statistics.median(c / t for c, t in zip(cpu[1], times[1]))
    cores_k = statistics.median(c / t for c, t in zip(cpu[k], times[k]))
    print(f"machine: {platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"{args.points} points of {per_point:.2f} s each (one thread), medians over {args.repeats} repeats:")
    print(f"  1 worker : {t1:.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[1])})")
    print(f"  {args.workers} workers: {tk:.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[args.workers])})")
    print(f"speedup {args.workers} workers / 1: {t1 / tk:.2f}x (ideal {args.workers:.1f}x; target >= 1.8x on 2 cores); "
          f"parallel efficiency {efficiency:.2f}")
    work = statistics.median(compute[1])
    model = (work + overhead[1]) / (work / k + overhead[k])
    print(f"engine overhead (the same sweep of empty points): {overhead[1]:.2f} s with 1 worker, {overhead[k]:.2f} s "
          f"with {k}: on {k} free cores these points would give (work + overhead) ratio {model:.2f}x")
    print(f"cores obtained (points' CPU seconds per wall second): {cores_1:.2f} with 1 worker, {cores_k:.2f} with "
          f"{k}; with other jobs on the machine, the speedup is bounded by their ratio {cores_k / cores_1:.2f}")


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
