"""Speed of shallow.harmonics against the roofline and against scipy, measured side by side in one run.

Prints, with medians over repeats:

1. legendre_all(kmax, d, t): output bytes per second, and the ratio to the bandwidth of a numpy
   copy of an array of the same size (the roofline of a routine that writes its output once);
2. legendre_all against scipy.special.eval_gegenbauer normalised by its value at 1 (the tool a
   user would pick instead), at sizes where scipy's unnormalised polynomials still fit a float64;
3. spherical_harmonics(X, k) for a few (d, k), as time and as output bytes per second.

Run: ``python benchmarks/harmonics.py`` (under a minute; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shallow.harmonics import legendre_all, num_harmonics, spherical_harmonics  # noqa: E402
from shallow.sphere import sample_sphere  # noqa: E402


def median_time(fn, repeats):
    """Median wall time of fn() over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scipy_normalised(kmax, d, t):
    """P_{k,d}(t), k = 0..kmax, from scipy: C_k^lam(t) / C_k^lam(1), lam = (d - 2)/2 (d = 2: T_k)."""
    ks = np.arange(kmax + 1)[:, None]
    if d == 2:
        return special.eval_chebyt(ks, t[None, :])
    lam = 0.5 * (d - 2)
    return special.eval_gegenbauer(ks, lam, t[None, :]) / special.eval_gegenbauer(ks, lam, 1.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    T = 10**5 if args.quick else 5 * 10**5

    print(f"machine: {platform.machine()} {platform.processor() or '?'} | {platform.platform()}")
    print(f"python {platform.python_version()} | numpy {np.__version__} | scipy {scipy.__version__}")
    print(f"medians over {repeats} repeats (after one warm-up)\n")

    print("1. legendre_all(kmax, d, t) against numpy copies of an array of the output's size (roofline):")
    print("   'alloc copy' = P.copy() (allocates, as legendre_all must); 'copyto' = np.copyto into an")
    print("   existing array (pure memory bandwidth, no page faults). ratio = copy time / legendre_all time.")
    print(f"{'kmax':>6} {'d':>5} {'t.size':>9} {'out MB':>8} {'time s':>8} {'GB/s':>6} "
          f"{'alloc copy GB/s':>16} {'ratio':>6} {'copyto GB/s':>12} {'ratio':>6}")
    t = np.linspace(-1, 1, T)
    for kmax, d in [(10, 3), (100, 5), (100, 1000)]:
        P = legendre_all(kmax, d, t)
        dest = np.empty_like(P)
        nbytes = P.nbytes
        t_leg = median_time(lambda: legendre_all(kmax, d, t), repeats)
        t_copy = median_time(lambda P=P: P.copy(), repeats)
        t_copyto = median_time(lambda P=P, dest=dest: np.copyto(dest, P), repeats)
        print(f"{kmax:>6} {d:>5} {T:>9} {nbytes / 1e6:>8.0f} {t_leg:>8.4f} {nbytes / t_leg / 1e9:>6.2f} "
              f"{nbytes / t_copy / 1e9:>16.2f} {t_copy / t_leg:>6.2f} {nbytes / t_copyto / 1e9:>12.2f} "
              f"{t_copyto / t_leg:>6.2f}")
        del P, dest

    print("\n2. legendre_all against scipy.special.eval_gegenbauer(k, lam, t) / eval_gegenbauer(k, lam, 1)")
    print("   (d = 2: eval_chebyt); max |diff| between the two, NaN where scipy overflows")
    print(f"{'kmax':>6} {'d':>5} {'t.size':>9} {'shallow s':>10} {'scipy s':>9} {'speed-up':>9} {'max |diff|':>11}")
    Ts = T // 50
    ts = np.linspace(-1, 1, Ts)
    for kmax, d in [(20, 2), (20, 3), (100, 5), (100, 50), (300, 200), (350, 1000)]:
        ours = legendre_all(kmax, d, ts)
        with np.errstate(all="ignore"):
            ref = scipy_normalised(kmax, d, ts)
        finite = bool(np.isfinite(ref).all())
        diff = float(np.abs(ours - ref).max()) if finite else float("nan")
        t_ours = median_time(lambda: legendre_all(kmax, d, ts), repeats)
        with np.errstate(all="ignore"):
            t_scipy = median_time(lambda: scipy_normalised(kmax, d, ts), 3)
        note = "" if finite else f"  scipy overflows: {int((~np.isfinite(ref)).sum())} NaN/inf of {ref.size}"
        print(f"{kmax:>6} {d:>5} {Ts:>9} {t_ours:>10.4f} {t_scipy:>9.4f} {t_scipy / t_ours:>9.1f} {diff:>11.2e}{note}")

    print("\n3. spherical_harmonics(X, k), X of shape (n, d): time and output bytes per second")
    print(f"{'d':>4} {'k':>4} {'n':>6} {'N(d,k)':>7} {'out MB':>8} {'time s':>9} {'GB/s':>6}")
    n = 200 if args.quick else 1000
    for d, k in [(3, 20), (3, 150), (5, 40), (11, 4), (50, 3)]:
        X = sample_sphere(n, d, rng=0)
        N = num_harmonics(d, k)
        t_sh = median_time(lambda: spherical_harmonics(X, k), max(1, repeats // 2))
        nbytes = 8 * n * N
        print(f"{d:>4} {k:>4} {n:>6} {N:>7} {nbytes / 1e6:>8.1f} {t_sh:>9.4f} {nbytes / t_sh / 1e9:>6.2f}")


if __name__ == "__main__":
    main()
