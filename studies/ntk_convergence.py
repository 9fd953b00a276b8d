r"""The empirical NTK at initialisation converges to the analytic NTK at the Monte Carlo rate m^{-1/2}.

Claim (Jacot, Gabriel and Hongler 2018, "Neural tangent kernel", NeurIPS, arXiv:1806.07572,
Theorem 1): for f(x) = m^{-1/2} sum_{j<=m} a_j relu(<w_j, x>) with a_j ~ N(0, 1), w_j ~ N(0, I_d)
i.i.d., the empirical tangent kernel (both layers)

    K_m(x, y) = (1/m) sum_j [relu(<w_j, x>) relu(<w_j, y>) + a_j^2 1{<w_j, x> > 0} 1{<w_j, y> > 0} <x, y>]

is an average of m i.i.d. kernels k_j with mean the analytic NTK
Theta(x, y) = |x||y| (sin t + (pi - t) cos t)/(2 pi) + <x, y> (pi - t)/(2 pi) (t the angle between x
and y; :func:`shallow.kernels.ntk`). Hence, on a fixed set of n points,

    E |K_m - Theta|_F^2 = E |k_1 - Theta|_F^2 / m,

and the relative Frobenius error |K_m - Theta|_F / |Theta|_F falls like C m^{-1/2}, with the constant
C^2 = E|k_1 - Theta|_F^2 / |Theta|_F^2 of a single neuron. The study draws the error (root mean square
over seeds) against m = 2^4 .. 2^14 for d = 3 and d = 10 on n = 100 uniform points of S^{d-1}, fits
the log-log slope (expected -1/2), and draws the predicted line C m^{-1/2} with C estimated
independently from the spread of single-neuron kernels k_j (2000 neurons, not the networks of the grid).

Runtime (one CPU core, loaded 2-core machine): --quick (m up to 2^12, 5 seeds) about 2-4 s; the
defaults (m up to 2^14, 20 seeds) are estimated at 20-30 s single-threaded (one network of width 2^14
took 0.17 s; the cost is linear in m times the number of seeds); the gallery's run took 7.2 s (its
sidecar's wall time, on the 2-core machine). The empirical kernel is computed by
:func:`shallow.lazy.empirical_ntk`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer
from shallow.kernels import ntk
from shallow.lazy import empirical_ntk
from shallow.networks import TwoLayer
from shallow.sphere import sample_sphere


@dataclasses.dataclass(frozen=True)
class Config:
    dims: tuple = (3, 10)
    n: int = 100  # points on the sphere where the kernels are compared
    log2_m_min: int = 4
    log2_m_max: int = 14
    seeds: int = 20  # networks per width (the error is a root mean square over them)
    single_neurons: int = 2000  # for the constant C of the predicted line
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the grid or the fit."""
        study.check_grid(self.dims, "dims", check_dimension)  # the sphere S^{d-1}
        check_integer(self.log2_m_min, "log2_m_min", minimum=0)
        if check_integer(self.log2_m_max, "log2_m_max", minimum=0) <= self.log2_m_min:
            raise ValueError(f"log2_m_max must exceed log2_m_min (the slope is fitted over at least two widths), "
                             f"got {self.log2_m_max} and {self.log2_m_min}")
        for name in ("n", "seeds", "single_neurons"):
            check_integer(getattr(self, name), name, minimum=1)


QUICK = {"log2_m_max": 12, "seeds": 5, "single_neurons": 1000}
HOST_ONLY = "kernels on 100 points, averaged over networks: small host products"


def widths(cfg) -> np.ndarray:
    return 2 ** np.arange(cfg.log2_m_min, cfg.log2_m_max + 1)


def points_on_sphere(n, d, seed):
    return sample_sphere(n, d, rng=np.random.default_rng([seed, d]))  # (n, d)


def error_point(point: dict) -> dict:
    """Relative Frobenius errors |K_m - Theta|_F / |Theta|_F of ``seeds`` networks of width m."""
    d, m = point["d"], point["m"]
    X = points_on_sphere(point["n"], d, point["seed"])
    Theta = ntk(X, None, "relu")  # (n, n), exact (closed form)
    errors = []
    for s in range(point["seeds"]):
        net = TwoLayer.init(m, d, scale="ntk", rng=np.random.default_rng([point["seed"], d, m, s]))
        K = empirical_ntk(net, X)  # (n, n)
        errors.append(np.linalg.norm(K - Theta) / np.linalg.norm(Theta))
    return {"errors": np.array(errors)}


def single_neuron_constant(n, d, seed, neurons) -> float:
    """C = sqrt(E|k_1 - Theta|_F^2) / |Theta|_F from independent single-neuron kernels k_j (width 1)."""
    X = points_on_sphere(n, d, seed)
    Theta = ntk(X, None, "relu")
    rng = np.random.default_rng([seed, d, 10**9])
    total = 0.0
    for _ in range(neurons):
        net = TwoLayer.init(1, d, scale="ntk", rng=rng)  # gamma = 1: k_1 itself
        total += np.sum((empirical_ntk(net, X) - Theta) ** 2)
    return float(np.sqrt(total / neurons) / np.linalg.norm(Theta))


def compute(cfg: Config) -> dict:
    ms = widths(cfg)
    points = [dict(d=int(d), m=int(m), n=cfg.n, seeds=cfg.seeds, seed=cfg.seed) for d in cfg.dims for m in ms]
    runs = study.run_grid(error_point, points, desc="ntk_convergence: widths")
    result = {"m": ms}
    for d in cfg.dims:
        errs = np.array([r["errors"] for p, r in zip(points, runs) if p["d"] == d])  # (widths, seeds)
        rms = np.sqrt(np.mean(errs**2, axis=1))
        result[f"errors_d{d}"] = errs
        result[f"rms_error_d{d}"] = rms
        result[f"slope_d{d}"] = float(np.polyfit(np.log(ms), np.log(rms), 1)[0])
        C = single_neuron_constant(cfg.n, d, cfg.seed, cfg.single_neurons)
        result[f"constant_d{d}"] = C
        # measured over predicted, at each width: 1 up to the Monte Carlo error of both estimates
        result[f"rms_over_predicted_d{d}"] = rms / (C / np.sqrt(ms))
    return result


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 1, size=(5.6, 4.2))
    ax = axes[0, 0]
    ms = result["m"]
    for i, d in enumerate(cfg.dims):
        errs = result[f"errors_d{d}"]
        c = f"C{i}"
        ax.loglog(np.repeat(ms, errs.shape[1]), errs.ravel(), ".", color=c, alpha=0.25, ms=3)
        ax.loglog(ms, result[f"rms_error_d{d}"], "o-", color=c,
                  label=f"d = {d}: RMS over {errs.shape[1]} nets, slope {result[f'slope_d{d}']:.3f}")
        ax.loglog(ms, result[f"constant_d{d}"] / np.sqrt(ms), "--", color=c, lw=1,
                  label=rf"d = {d}: predicted $C/\sqrt{{m}}$, C = {result[f'constant_d{d}']:.2f} (single neurons)")
    ax.set_xlabel("width m")
    ax.set_ylabel(r"$\|K_m - \Theta\|_F / \|\Theta\|_F$")
    ax.set_title(f"Empirical NTK at init vs analytic NTK (relu, n = {cfg.n} points on the sphere)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
