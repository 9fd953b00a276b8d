"""Radial targets: a 3-layer construction errs far less than the best 2-layer net found at its width, whose error grows with d.

Claims (Eldan & Shamir 2016, "The power of depth for feedforward neural networks", COLT,
arXiv:1512.03965, Theorem 1 and its proof; Safran & Shamir 2017, "Depth-width tradeoffs in
approximating natural functions with neural networks", ICML, arXiv:1610.09887, the indicator of
the unit ball and their experiments with it): radial functions such as the indicator of the unit
ball, or Eldan-Shamir's sum of +-1 on thin shells, are computed to accuracy eps by 3-layer relu
networks (two hidden layers) of width poly(d, 1/eps): the first layer builds |x|^2 from
piecewise-linear squares of the coordinates, the second a piecewise-linear function of it. 2-layer
networks (one hidden layer) need a width exponential in d to approximate the Eldan-Shamir function
to a constant accuracy, and the ball indicator to an accuracy polynomially small in d. The theorems
are asymptotic; this study measures the gap at moderate d in a stated, achievable form.

Targets and input laws:

* ``ball``: 1{|x| <= 1} with x = rho u, u uniform on S^{d-1} and rho uniform on [0, 2] (a simpler
  radial law than Safran-Shamir's, chosen so that half the mass is inside the ball and the
  boundary carries the same radial density in every d). 3-layer: :func:`shallow.depth.ball_indicator_network`
  with shell half-width ``ball_delta``: exact outside (1 - delta) < |x| < 1 + delta.
* ``eldan_shamir``: the continuous version of :class:`shallow.depth.EldanShamirFunction` (``es_shells``
  shells with alternating signs between alpha sqrt(d) and 2 alpha sqrt(d), linear ramps over a
  fraction ``es_ramp`` of each shell in |x|^2), inputs from the Eldan-Shamir density phi^2
  (:func:`shallow.depth.sample_eldan_shamir`) conditioned on |x| <= ``es_cut`` times the outer shell
  radius (its radial tail decays like r^-2 and has no mean: without the cut, a handful of points
  at |x| ~ 10^3 sqrt(d) make the gradient flow diverge; about 10% of the mass is cut, where the target
  is 0). 3-layer: :meth:`EldanShamirFunction.network` with the uniform error bound ``es_tolerance``.

2-layer networks of width m (hidden neurons; the output bias is not counted), two ways, on the
same n training points:

* trained: a mean-field :class:`~shallow.networks.TwoLayer` with bias (gamma = 1/m, Gaussian
  initialisation) by the gradient flow of the empirical square risk
  (:func:`shallow.flows.gradient_flow`, Euler, step ``step_size`` on the mean-field time scale, ``steps``
  steps), on inputs rescaled into the unit ball (the same function class: relu(<w, x/R> + b));
* random features: inner weights w uniform on the sphere and biases uniform in [-1, 1] on the same
  rescaled inputs, outer weights and output bias by least squares (the best outer layer for those
  inner weights).

The 2-layer error reported is the smaller of the two *training* errors (favourable to the 2-layer
side: it is an optimistic estimate of the population error); the 3-layer construction is explicit
(nothing is trained: there is no 3-layer trainer in the library) and its error is measured on the
same points. Errors are relative: ||net - f||_n / ||f||_n (1 = the zero predictor).

What is checked: for every target and d, at the 3-layer construction's width budget (the first
width of the grid with at least as many hidden neurons as the construction has), the best 2-layer
error found is at least 3 times the construction's; and the best 2-layer error grows with d at fixed
width: strictly at the largest width of the grid, and from the smallest to the largest d at every
width (up to 0.02 of training noise).

Measured with the defaults (relative errors):

* ball: the 3-layer construction errs by 0.013-0.045 with 26, 66, 178, 482 neurons in d = 2, 4, 8,
  16; the best 2-layer net at widths 64, 256, 256, 1024 by 0.22, 0.24, 0.32, 0.28: 5.4 to 24 times
  more. At width 1024 the best 2-layer error is 0.09, 0.16, 0.23, 0.28 in d = 2, 4, 8, 16.
* Eldan-Shamir: the construction errs by 0.05-0.07 with 54, 130, 346, 938 neurons; the best 2-layer
  net at widths 64, 256, 1024, 1024 by 0.83, 0.71, 0.77, 0.88: 13 to 16 times more. At width 1024
  the best 2-layer error is 0.13, 0.47, 0.77, 0.88 in d = 2, 4, 8, 16; at widths up to 64 every d
  is near 1 (the zero predictor).
* The gradient flow plateaus early (ball: 0.32-0.39; Eldan-Shamir: 0.86-0.99 at every width by flow
  time 750), so at widths >= 64 the best 2-layer net found is the random-features fit; both are
  upper bounds on the best 2-layer training error, which a longer or better-tuned training could
  lower (the theorems say by little in high d, but nothing here proves it).

Runtime: 1.5 minutes with the defaults on 2 workers (2.7 minutes of CPU in its 32 grid points: the
gradient flows at width 1024 take most of it), up to 10 minutes on the 2-core development machine
under load (3.8 minutes, 7.4 minutes of CPU, in the gallery rerun of commit 37e81e5); 7-10 s with
--quick.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_positive
from shallow.backend import to_device, to_numpy
from shallow.depth import EldanShamirFunction, ball_indicator, ball_indicator_network, sample_eldan_shamir

TARGETS = ("ball", "eldan_shamir")


@dataclasses.dataclass(frozen=True)
class Config:
    targets: tuple = TARGETS
    dims: tuple = (2, 4, 8, 16)
    widths: tuple = (16, 64, 256, 1024)
    n: int = 3000  # training points (the errors are training errors)
    steps: int = 1500
    step_size: float = 0.5  # Euler, mean-field time scale; 1.0 already oscillates on the ball
    ball_rmax: float = 2.0  # |x| uniform on [0, ball_rmax]
    ball_delta: float = 0.01  # shell half-width of the 3-layer ball network
    es_shells: int = 3
    es_alpha: float = 0.4  # shells between alpha sqrt(d) and 2 alpha sqrt(d)
    es_ramp: float = 0.25
    es_cut: float = 2.0  # inputs conditioned on |x| <= es_cut * 2 alpha sqrt(d)
    es_tolerance: float = 0.1  # uniform error bound of the 3-layer Eldan-Shamir network
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the 3-layer constructions or the fits."""
        if not self.targets or not set(self.targets) <= set(TARGETS):
            raise ValueError(f"targets must be some of {TARGETS}, got {self.targets!r}")
        for name in ("dims", "widths"):  # increasing: the budget and the growth with d read them in order
            study.check_grid(getattr(self, name), name, increasing=True)
        for name in ("n", "steps", "es_shells"):
            check_integer(getattr(self, name), name, minimum=1)
        for name in ("step_size", "ball_rmax", "es_alpha", "es_cut", "es_tolerance"):
            check_positive(getattr(self, name), name)
        if not 0 < check_positive(self.ball_delta, "ball_delta") < 1:
            raise ValueError(f"ball_delta must lie in (0, 1) (the shell (1 - delta, 1 + delta)), got {self.ball_delta!r}")
        if not 0 < check_positive(self.es_ramp, "es_ramp") <= 0.5:
            raise ValueError(f"es_ramp must lie in (0, 1/2] (the 3-layer network needs a continuous profile), "
                             f"got {self.es_ramp!r}")


QUICK = {"dims": (2, 4, 8), "widths": (16, 64, 256, 512), "n": 1000, "steps": 400}


# ----------------------------------------------------------------------------- targets and data

def _get(cfg_or_point, key):
    return cfg_or_point[key] if isinstance(cfg_or_point, dict) else getattr(cfg_or_point, key)


def es_function(cfg_or_point, d) -> EldanShamirFunction:
    N = int(_get(cfg_or_point, "es_shells"))
    return EldanShamirFunction(d, n_shells=N, alpha=float(_get(cfg_or_point, "es_alpha")),
                               ramp=float(_get(cfg_or_point, "es_ramp")), signs=np.resize([1.0, -1.0], N))


def data(cfg_or_point, target, d):
    """(X, y, R): n points of the target's input law in R^d, the target's values, and a radius bound R."""
    n, seed = int(_get(cfg_or_point, "n")), int(_get(cfg_or_point, "seed"))
    rng = np.random.default_rng([seed, TARGETS.index(target), d])
    if target == "ball":
        R = float(_get(cfg_or_point, "ball_rmax"))
        G = rng.standard_normal((n, d))
        X = G / np.linalg.norm(G, axis=1, keepdims=True) * (R * rng.random(n))[:, None]  # (n, d)
        return X, ball_indicator(X), R
    if target == "eldan_shamir":
        g = es_function(cfg_or_point, d)
        R = float(_get(cfg_or_point, "es_cut")) * float(g.edges[-1])
        kept = []
        while sum(len(x) for x in kept) < n:  # rejection: phi^2 conditioned on |x| <= R
            Z = sample_eldan_shamir(2 * n, d, rng=rng)
            kept.append(Z[np.linalg.norm(Z, axis=1) <= R])
        X = np.concatenate(kept)[:n]
        return X, g(X), R
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def three_layer(cfg_or_point, target, d):
    """The explicit 3-layer construction for the target in R^d (a :class:`DeepReLU`)."""
    if target == "ball":
        return ball_indicator_network(d, delta=float(_get(cfg_or_point, "ball_delta")))
    return es_function(cfg_or_point, d).network(float(_get(cfg_or_point, "es_tolerance")))


def relative_error(f, y):
    return float(np.linalg.norm(f - y) / np.linalg.norm(y))


# ----------------------------------------------------------------------------- 2-layer fits (one grid point)

def fit_point(point: dict) -> dict:
    """Width-m 2-layer fits of one (target, d): gradient flow and random features; relative training errors."""
    from shallow.flows import EmpiricalRisk, FlowDivergenceError, gradient_flow
    from shallow.networks import TwoLayer

    target, d, m, device = point["target"], int(point["d"]), int(point["m"]), point["device"]
    X, y, R = data(point, target, d)
    Xs = X / R  # (n, d) inside the unit ball
    rng = np.random.default_rng([int(point["seed"]), TARGETS.index(target), d, m])
    out = {}
    # (a) the mean-field gradient flow of both layers
    net = TwoLayer.init(m, d, bias=True, rng=rng, device=device)
    loss = EmpiricalRisk(to_device(Xs, device), to_device(y, device))
    try:
        traj = gradient_flow(net, loss, int(point["steps"]), float(point["step_size"]),
                             record_every=max(1, int(point["steps"]) // 30))
        out["gf_error"] = math.sqrt(2 * traj.risks[-1]) / float(np.linalg.norm(y) / math.sqrt(y.size))
        out["gf_curve"] = np.sqrt(2 * traj.risks) / float(np.linalg.norm(y) / math.sqrt(y.size))
        out["gf_times"] = traj.times
    except FlowDivergenceError:
        out["gf_error"] = float("nan")
    # (b) random features + least squares on the outer layer and output bias
    if m + 1 <= X.shape[0]:
        G = rng.standard_normal((m, d))
        W = G / np.linalg.norm(G, axis=1, keepdims=True)  # (m, d)
        b = rng.uniform(-1.0, 1.0, m)  # (m,)
        F = np.concatenate([np.maximum(Xs @ W.T + b, 0.0), np.ones((X.shape[0], 1))], axis=1)  # (n, m + 1)
        coef = np.linalg.lstsq(F, y, rcond=None)[0]
        out["rf_error"] = relative_error(F @ coef, y)
    else:
        out["rf_error"] = float("nan")
    return out


# ----------------------------------------------------------------------------- compute

def compute(cfg: Config) -> dict:
    from tqdm.auto import tqdm

    dims = np.asarray(cfg.dims, dtype=np.int64)
    widths = np.asarray(cfg.widths, dtype=np.int64)
    result = {"dims": dims, "widths": widths}
    # The 3-layer constructions: explicit, evaluated on the same points.
    for target in tqdm(cfg.targets, desc="depth_separation_radial: 3-layer constructions", unit="target",
                       disable=not study.show_progress()):
        errors, neurons, widths3 = [], [], []
        for d in dims:
            X, y, _ = data(cfg, target, int(d))
            net3 = three_layer(cfg, target, int(d))
            errors.append(relative_error(to_numpy(net3.to_device(cfg.device)(to_device(X, cfg.device))), y))
            neurons.append(net3.n_neurons)
            widths3.append(net3.widths)
        result[f"three_layer_error_{target}"] = np.array(errors)
        result[f"three_layer_neurons_{target}"] = np.array(neurons, dtype=np.int64)
        result[f"three_layer_widths_{target}"] = np.array(widths3, dtype=np.int64)  # (dims, 2)
    # what a 2-layer fit depends on (not the 3-layer constructions' accuracy: their points stay cached)
    base = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("targets", "dims", "widths", "ball_delta", "es_tolerance")}
    points = [dict(base, target=t, d=int(d), m=int(m)) for t in cfg.targets for d in dims for m in widths]
    runs = study.run_grid(fit_point, points, desc="depth_separation_radial: 2-layer fits")
    for target in cfg.targets:
        gf = np.full((dims.size, widths.size), np.nan)
        rf = np.full((dims.size, widths.size), np.nan)
        for p, out in zip(points, runs):
            if p["target"] != target:
                continue
            i, j = int(np.flatnonzero(dims == p["d"])[0]), int(np.flatnonzero(widths == p["m"])[0])
            gf[i, j], rf[i, j] = out["gf_error"], out["rf_error"]
            if "gf_curve" in out:
                result[f"gf_curve_{target}_d{p['d']}_m{p['m']}"] = out["gf_curve"]
                result[f"gf_times_{target}"] = out["gf_times"]
        best = np.fmin(gf, rf)  # (dims, widths)
        result[f"gf_error_{target}"] = gf
        result[f"rf_error_{target}"] = rf
        result[f"best_two_layer_error_{target}"] = best
        # (1) the 3-layer construction against the 2-layer nets at its width budget: the smallest
        # width of the grid with at least as many hidden neurons as the construction has
        ratios, budget = [], []
        for i in range(dims.size):
            allowed = np.flatnonzero(widths >= result[f"three_layer_neurons_{target}"][i])
            j = allowed[0] if allowed.size else -1
            budget.append(widths[j] if allowed.size else -1)
            ratios.append(best[i, j] / result[f"three_layer_error_{target}"][i] if allowed.size else np.nan)
        ratios = np.array(ratios)
        result[f"budget_width_{target}"] = np.array(budget, dtype=np.int64)
        result[f"two_over_three_at_budget_{target}"] = ratios
        result[f"min_two_over_three_at_budget_{target}"] = float(np.nanmin(ratios)) \
            if np.isfinite(ratios).any() else float("nan")
        result[f"budget_comparisons_{target}"] = int(np.isfinite(ratios).sum())
        # (2) growth with d at fixed width
        result[f"growth_first_to_last_d_{target}"] = best[-1] - best[0]  # (widths,)
        result[f"min_growth_first_to_last_d_{target}"] = float(np.min(best[-1] - best[0]))
        result[f"min_increase_with_d_at_largest_width_{target}"] = float(np.min(np.diff(best[:, -1]), initial=np.inf))
    return result


# ----------------------------------------------------------------------------- plot

NAMES = {"ball": r"ball indicator $1\{|x| \leq 1\}$, $|x| \sim U[0, 2]$",
         "eldan_shamir": r"Eldan-Shamir shells, $x \sim \varphi^2$ (cut)"}


def plot(result: dict, cfg: Config):
    from matplotlib import colormaps
    from matplotlib.ticker import NullFormatter

    targets = list(cfg.targets)
    fig, axes = study.new_figure(len(targets), 2, size=(5.6, 4.0))
    dims, widths = result["dims"], result["widths"]
    cmap = colormaps["viridis"]
    colour_d = {int(d): cmap(0.85 * i / max(1, dims.size - 1)) for i, d in enumerate(dims)}
    colour_m = {int(m): colormaps["plasma"](0.8 * j / max(1, widths.size - 1)) for j, m in enumerate(widths)}
    for row, target in enumerate(targets):
        best = result[f"best_two_layer_error_{target}"]
        gf, rf = result[f"gf_error_{target}"], result[f"rf_error_{target}"]
        e3 = result[f"three_layer_error_{target}"]
        n3 = result[f"three_layer_neurons_{target}"]
        ax = axes[row, 0]
        for i, d in enumerate(dims):
            c = colour_d[int(d)]
            ax.loglog(widths, best[i], "o-", color=c, lw=1.6, ms=4, label=f"d = {d}: best 2-layer")
            ax.loglog(widths, gf[i], ":", color=c, lw=0.9)
            ax.loglog(widths, rf[i], "--", color=c, lw=0.7)
            ax.loglog([n3[i]], [e3[i]], "*", color=c, ms=13, mec="k", mew=0.6)
        ax.plot([], [], "k:", lw=0.9, label="2-layer, gradient flow")
        ax.plot([], [], "k--", lw=0.7, label="2-layer, random features + least squares")
        ax.plot([], [], "*", color="0.6", mec="k", ms=11, label="3-layer construction (x = its neurons)")
        ax.axhline(1.0, color="0.5", lw=0.8, ls="-.", label="zero predictor")
        ax.set_xticks(widths, [str(m) for m in widths])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(min(e3.min(), np.nanmin(best)) / 6, 1.6)
        ax.set_xlabel("width: 2-layer hidden neurons; 3-layer: total neurons")
        ax.set_ylabel(r"relative training error $\|net - f\|_n / \|f\|_n$")
        ax.set_title(NAMES[target])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left", ncol=2)
        ax = axes[row, 1]
        for j, m in enumerate(widths):
            ax.semilogy(dims, best[:, j], "o-", color=colour_m[int(m)], lw=1.5, ms=4, label=f"best 2-layer, m = {m}")
        ax.semilogy(dims, e3, "k*-", ms=11, lw=1.2, label="3-layer construction")
        for d, e, n in zip(dims, e3, n3):
            ax.annotate(f"{n}", (d, e), textcoords="offset points", xytext=(4, -10), fontsize=6.5)
        ax.axhline(1.0, color="0.5", lw=0.8, ls="-.")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(min(e3.min(), np.nanmin(best)) / 3, 6.0)  # room for the legend above 1
        ax.set_xlabel("dimension d (numbers: neurons of the 3-layer construction)")
        ax.set_ylabel("relative training error")
        ratio = result[f"min_two_over_three_at_budget_{target}"]
        if np.isfinite(ratio):
            ax.set_title(f"against d: the 3-layer error is {ratio:.1f}x or more below the best 2-layer's\n"
                         "at the first width of the grid >= the 3-layer's neurons", fontsize=10)
        else:  # every width of the grid below the construction's neurons: no comparison at its budget
            ax.set_title("against d: no width of the grid reaches the 3-layer's neurons,\n"
                         "so no comparison at its budget", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper right", ncol=3)
    fig.suptitle(f"Depth separation for radial targets: n = {cfg.n} points, gradient flow {cfg.steps} steps "
                 f"of {cfg.step_size:g} (mean-field scale)")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
