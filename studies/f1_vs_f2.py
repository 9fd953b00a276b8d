"""F1 adapts, F2 does not: a trained mean-field network learns a relu neuron in any d; the relu kernel degrades with d.

Claim (Bach 2017, "Breaking the curse of dimensionality with convex neural networks", JMLR 18,
arXiv:1412.8690, Sec. 5 on generalisation, whose Table 2 summarises the bounds of the variation-norm
space F1 and of the RKHS F2 of the same activation for targets with linear structure; section and
table identified from memory): F1 is adaptive to a low-dimensional linear structure of the target (a
single neuron, a function of a projection onto a low-dimensional subspace), F2 is not. We did not have
Bach's text at hand to check the entries of his table: the rates below are derived here, in this
study's setting, not quoted.

Setting. Inputs x uniform on the sphere of radius sqrt(d) in R^d (so that <w, x> = O(1) for a unit
w; everything is positively homogeneous, so this is the problem on S^{d-1} rescaled), noiseless
labels y = f*(x) for two targets with F1 norm independent of d:

* a single neuron f*(x) = relu(<w*, x>), |w*| = 1 (F1 norm 1, infinite F2 norm);
* a function of a 2-D projection, f*(x) = |P x| with P the orthogonal projection on a random plane
  (|P x| = (1/4) int_0^{2 pi} |<x, u(phi)>| dphi over the unit circle u(phi) of the plane, and
  |t| = relu(t) + relu(-t): an F1 function of norm pi whose measure lives on a great circle).

(a) F2: kernel ridge regression with the relu random-feature (NNGP, arc-cosine) kernel
K(x, y) = E_{w ~ N(0, I)}[relu(<w, x>) relu(<w, y>)] (:func:`shallow.kernels.random_feature_kernel`,
:func:`shallow.lazy.kernel_regression`), the ridge chosen on a validation split (the last fifth of
the training points) among the ridges r lambda_max added to the eigenvalues of K, r = 10^-12 ... 1,
lambda_max the largest eigenvalue of the training block, then refitted on all n points.
(b) F1: a mean-field network f(x) = (1/m) sum_j a_j relu(<w_j, x>), m = 100, initialised small and
balanced (w_j uniform on S^{d-1} times 0.1, a_j = +-|w_j|), trained by the particle gradient flow of
the empirical square risk (:func:`shallow.flows.gradient_flow` on :class:`shallow.flows.EmpiricalRisk`,
forward Euler, eta = 0.5 on the mean-field time scale, up to t = 1000).

Error: the test mean squared error on 5000 fresh points divided by the variance of f* (1 = the best
constant), for n = 100 ... 3200 nested training sets, d = 5, 10, 20, 50.

Rates (derived here). F2: the relu kernel has Mercer eigenvalues lambda_k ~ k^{-(d+2)} on degree-k
harmonics, of multiplicity N(d, k) ~ k^{d-2}, and the neuron's energy above degree K is ~ K^{-3}
(studies/harmonic_approximation.py). With n noiseless samples a rotation-invariant kernel method
learns at most the harmonics of degree K with sum_{k<=K} N(d, k) ~ n, i.e. K ~ n^{1/(d-1)}, so its
error is at least ~ n^{-3/(d-1)} (and with label noise, the bias-variance balance
lambda^{3/(d+2)} ~ lambda^{-(d-1)/(d+2)} / n gives n^{-3/(d+2)}): exponents that vanish as d grows. In
high dimension the approach is a staircase: degree 2 needs n ~ N(d, 2) ~ d^2/2 samples, degree 4
n ~ d^4/24, and in between the error sits near the energy above degree 2 (3.3% of the variance of a
neuron as d -> infinity; the figure draws it for each d). F1: the Rademacher complexity of the unit
F1 ball of relu on inputs of norm R is at most 2 R / sqrt(n), independent of d, so the regularised
F1 estimator has excess risk ~ ||f*||_F1 R / sqrt(n) (Bach 2017, Sec. 5), n^{-1/2} whatever d; for a
well-specified noiseless single neuron the trained network does better still: it recovers the
neuron once n is a few times d (d numbers define it) and its error is then set by the flow time, not
by n.

Measured (defaults, seed 0): at n = 3200 the kernel's relative error is 5.8e-4, 8.7e-3, 2.6e-2 and
5.5e-2 for the neuron in d = 5, 10, 20, 50 (5.6e-4, 1.5e-2, 6.2e-2, 0.13 for |P x|), the network's
1.9e-6, 3.0e-6, 3.4e-6, 1.6e-5 (9e-6 to 8e-5 for |P x|): the ratio F2/F1 is 300 in d = 5 and 3e3 to 8e3
beyond (60, then 1.2e3 to 2.1e3 for |P x|). The network's error at a fixed n grows mildly with d (it
needs n of a few times d: at n = 100 in d = 50 it interpolates without generalising), the kernel's by
two orders of magnitude. In d = 20 and 50 the kernel sits near the neuron's energy above degree 2
(2.8% and 3.1% of the variance; learning degree 4 would take n ~ N(d, 4) = 8645 and 291550), and its
steep slope at n ~ 10^3 in d = 50 is the degree-2 step (N(50, 2) = 1274): over this range of n the
fitted slopes show the staircase, not the asymptotic exponent.

Runtime: about 3 minutes of single-core time with the defaults (1.5 minutes on 2 cores, 4 under
load, 3.7 with 6 minutes of CPU in the gallery rerun of commit 37e81e5: the points
run in parallel with --workers; the kernel solves at n = 3200 and the flows at n = 3200 take most
of it), about 20 s with --quick; ``--device gpu`` runs the flows and the kernels with CuPy (not tested on a GPU).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer, check_positive
from shallow.activations import funk_hecke
from shallow.backend import to_device, to_numpy
from shallow.flows import EmpiricalRisk, gradient_flow
from shallow.harmonics import num_harmonics
from shallow.kernels import random_feature_kernel
from shallow.lazy import kernel_regression
from shallow.networks import TwoLayer
from shallow.sphere import sample_sphere

TARGETS = ("neuron", "projection")


@dataclasses.dataclass(frozen=True)
class Config:
    dims: tuple = (5, 10, 20, 50)
    ns: tuple = (100, 200, 400, 800, 1600, 3200)
    targets: tuple = TARGETS
    n_test: int = 5000
    width: int = 100  # m, neurons of the F1 network
    steps: int = 2000  # flow time t = steps * step_size
    step_size: float = 0.5
    init_scale: float = 0.1
    ridges: tuple = tuple(10.0**e for e in range(-12, 1))  # ridge / (largest eigenvalue of the training K)
    validation_fraction: float = 0.2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the grid's kernel solves and flows."""
        study.check_grid(self.dims, "dims", check_dimension)  # the sphere S^{d-1}, and the target's two directions
        # at least one training and one validation point per n, and two n for a rate
        study.check_grid(self.ns, "ns", lambda n, name: check_integer(n, name, minimum=2), at_least=2)
        if not self.targets or not set(self.targets) <= set(TARGETS):
            raise ValueError(f"targets must be some of {TARGETS}, got {self.targets!r}")
        check_integer(self.n_test, "n_test", minimum=2)  # the errors are relative to the test variance
        check_integer(self.width, "width", minimum=1)
        check_integer(self.steps, "steps", minimum=1)
        check_positive(self.step_size, "step_size")
        check_positive(self.init_scale, "init_scale")
        study.check_grid(self.ridges, "ridges", check_positive)
        f = check_positive(self.validation_fraction, "validation_fraction")
        if f >= 1 or min(self.ns) - max(1, round(f * min(self.ns))) < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1) and leave a training point at n = {min(self.ns)}, "
                             f"got {self.validation_fraction!r}")


QUICK = {"dims": (5, 20, 50), "ns": (200, 1000), "steps": 1000, "n_test": 2000}


def make_target(name: str, d: int, seed: int):
    """The target f*(x) on R^d: relu(<w*, x>) or |P x|, from a random orthonormal pair (w*, w2)."""
    rng = np.random.default_rng([seed, d, 7])
    U = np.linalg.qr(rng.standard_normal((d, 2)))[0]  # (d, 2) orthonormal columns
    if name == "neuron":
        return lambda X: np.maximum(X @ U[:, 0], 0.0)
    if name == "projection":
        return lambda X: np.linalg.norm(X @ U, axis=1)
    raise ValueError(f"target must be one of {TARGETS}, got {name!r}")


def sample_inputs(n: int, d: int, rng):
    """n points uniform on the sphere of radius sqrt(d) in R^d (E[x x^T] = I)."""
    return math.sqrt(d) * sample_sphere(n, d, rng=rng)


def kernel_ridge(X, y, Xt, ridges, validation_fraction):
    """Kernel ridge regression with the relu NNGP kernel, the ridge chosen on a validation split.

    Returns (predictions at Xt, chosen relative ridge).
    """
    xp_X = X
    n = X.shape[0]
    n_val = max(1, round(validation_fraction * n))
    tr, va = slice(0, n - n_val), slice(n - n_val, n)
    K = random_feature_kernel(xp_X, None, "relu")  # (n, n)
    K_host = to_numpy(K)
    y_host = to_numpy(y)
    lam, U = np.linalg.eigh(K_host[tr, tr])  # the training part of the split
    coef = U.T @ y_host[tr]
    scale = lam.max()
    best = (math.inf, ridges[0])
    for r in ridges:
        alpha = U @ (coef / (np.maximum(lam, 0) + r * scale))
        err = float(np.mean((K_host[va, tr] @ alpha - y_host[va]) ** 2))
        if err < best[0]:
            best = (err, r)
    r = best[1]
    # kernel_regression's ridge lambda enters as K + n lambda I: lambda = r * lambda_max / n, with
    # lambda_max the largest eigenvalue of the training block (that of K is within a factor n / (n - n_val)).
    pred = kernel_regression(K, y, ridge=r * scale / n, K_test=random_feature_kernel(Xt, X, "relu")).test
    return pred, r


def relative_error(pred, yt, var) -> float:
    e = to_numpy(pred) - to_numpy(yt)
    return float(np.mean(e * e)) / var


def learn(point: dict) -> dict:
    """F1 and F2 test errors for one (target, d, n) (a grid point of :func:`shallow.study.run_grid`)."""
    d, n, device = point["d"], point["n"], point["device"]
    target = make_target(point["target"], d, point["seed"])
    rng_data = np.random.default_rng([point["seed"], d, 1])
    X_all = sample_inputs(max(point["ns"]), d, rng_data)  # nested training sets: the first n points
    Xt = sample_inputs(point["n_test"], d, rng_data)
    X = X_all[:n]
    y, yt = target(X), target(Xt)
    var = float(np.var(yt))
    Xd, yd, Xtd = to_device(X, device), to_device(y, device), to_device(Xt, device)

    start = time.perf_counter()
    pred, ridge = kernel_ridge(Xd, yd, Xtd, point["ridges"], point["validation_fraction"])
    f2 = relative_error(pred, yt, var)
    time_f2 = time.perf_counter() - start

    start = time.perf_counter()
    rng_net = np.random.default_rng([point["seed"], d, n, 2])
    net = TwoLayer.init(point["width"], d, weights="sphere", a_init="balanced", rng=rng_net, device=device)
    net = TwoLayer(point["init_scale"] * net.a, point["init_scale"] * net.W)  # gamma = 1/m
    traj = gradient_flow(net, EmpiricalRisk(Xd, yd), steps=point["steps"], step_size=point["step_size"],
                         record_every=max(1, point["steps"] // 20))
    f1 = relative_error(traj.network(net)(Xtd), yt, var)
    time_f1 = time.perf_counter() - start
    return {"f1": f1, "f2": f2, "ridge": ridge, "f1_train_risk": float(traj.risks[-1]) / var,
            "time_f1": time_f1, "time_f2": time_f2}


def neuron_energy_above(d: int, K: int) -> float:
    """Energy of relu(<w, .>) above degree K over its variance on S^{d-1} (Funk-Hecke: mu_k^2 N(d, k))."""
    mu = funk_hecke("relu", d, K)
    e = mu**2 * np.array([float(num_harmonics(d, k)) for k in range(K + 1)])  # (K + 1,)
    total = math.exp(math.lgamma(d / 2) + math.lgamma(1.5) - math.lgamma(d / 2 + 1)) / (2 * math.sqrt(math.pi))
    return float((total - e.sum()) / (total - e[0]))


def compute(cfg: Config) -> dict:
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("dims", "targets")}
    points = [dict(base, target=t, d=d, n=n) for t in cfg.targets for d in cfg.dims for n in cfg.ns]
    results = study.run_grid(learn, points, desc="F1 vs F2: (target, d, n)")
    out = {}
    ns = np.array(cfg.ns, dtype=float)
    top = np.argsort(ns)[-max(2, len(ns) // 2):]  # slopes over the larger half of the n (at least two)
    for t in cfg.targets:
        for d in cfg.dims:
            rows = [r for p, r in zip(points, results) if p["target"] == t and p["d"] == d]
            key = f"{t}_d{d}"
            for name in ("f1", "f2", "ridge", "f1_train_risk", "time_f1", "time_f2"):
                out[f"{name}_{key}"] = np.array([r[name] for r in rows])
            for name in ("f1", "f2"):
                out[f"slope_{name}_{key}"] = float(np.polyfit(np.log(ns[top]), np.log(out[f"{name}_{key}"][top]), 1)[0])
            out[f"ratio_{key}"] = float(out[f"f2_{key}"][-1] / out[f"f1_{key}"][-1])
            out[f"predicted_slope_f2_noiseless_{key}"] = -3.0 / (d - 1)
    for d in cfg.dims:
        out[f"neuron_energy_above_2_d{d}"] = neuron_energy_above(d, 2)
    return out


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, len(cfg.targets) + 1, size=(5.0, 4.2))
    ns = np.array(cfg.ns)
    titles = {"neuron": r"single neuron $f^*(x) = \mathrm{relu}(\langle w^*, x\rangle)$",
              "projection": r"2-D projection $f^*(x) = |P x|$"}
    from matplotlib.lines import Line2D

    for col, t in enumerate(cfg.targets):
        ax = axes[0, col]
        handles = []
        for i, d in enumerate(cfg.dims):
            key = f"{t}_d{d}"
            ax.loglog(ns, result[f"f2_{key}"], "s--", color=f"C{i}", ms=4)
            ax.loglog(ns, result[f"f1_{key}"], "o-", color=f"C{i}", ms=4)
            handles.append(Line2D([], [], color=f"C{i}", lw=2,
                                  label=f"d = {d} (F2 slope {result[f'slope_f2_{key}']:.2f})"))
            if t == "neuron":
                ax.axhline(result[f"neuron_energy_above_2_d{d}"], color=f"C{i}", lw=0.8, ls=":")
        handles += [Line2D([], [], color="k", ls="--", marker="s", ms=4, label="F2: relu kernel ridge"),
                    Line2D([], [], color="k", ls="-", marker="o", ms=4, label="F1: trained network")]
        if t == "neuron":
            handles.append(Line2D([], [], color="k", ls=":", label="energy above degree 2"))
        ax.set_xlabel("training samples n")
        ax.set_ylabel(r"test error $\|\hat f - f^*\|^2 / \mathrm{Var} f^*$")
        ax.set_title(titles.get(t, t), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.19), ncol=3)
    ax = axes[0, -1]
    for j, t in enumerate(cfg.targets):
        ax.semilogy(cfg.dims, [result[f"ratio_{t}_d{d}"] for d in cfg.dims], "o-", color=f"C{j + 5}",
                    label=f"F2/F1, {t}")
        ax.semilogy(cfg.dims, [result[f"f2_{t}_d{d}"][-1] for d in cfg.dims], "s--", color=f"C{j + 5}", ms=4,
                    label=f"F2 error, {t}")
        ax.semilogy(cfg.dims, [result[f"f1_{t}_d{d}"][-1] for d in cfg.dims], "^:", color=f"C{j + 5}", ms=4,
                    label=f"F1 error, {t}")
    ax.set_xlabel("dimension d")
    ax.set_ylabel(r"test error $\|\hat f - f^*\|^2 / \mathrm{Var} f^*$, or the ratio F2/F1")
    ax.set_title(f"at the largest n = {max(cfg.ns)}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    # below the axes, as in the other panels: in the upper right it covered the F2/F1 curves
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.19), ncol=2)
    fig.suptitle(f"F1 (trained mean-field relu network, m = {cfg.width}) against F2 (relu kernel ridge regression), "
                 "noiseless labels")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
