"""k relu atoms approximate rho * p on S^{d-1} with error ~ k^-(d+2)/(2(d-1)) (Bach 2017), faster than Maurey's k^-1/2.

Claim (Bach 2017, "Breaking the curse of dimensionality with convex neural networks", JMLR 18,
arXiv:1412.8690: the approximation of his function spaces by finitely many units, which rests on the
approximation of zonoids by zonotopes (Bourgain, Lindenstrauss and Milman 1989; Matousek 1996), as the
seed lecture states it; we did not check the section number against Bach's text): for
g(x) = (rho * p)(x) = int relu(<x, theta>) p(theta) dtau(theta) there is a measure mu with at most
C(d) eps^{-2d/(d+3)} atoms such that |g(x) - int relu(<x, theta>) dmu(theta)| <= eps ||p|| for every
x on the sphere. Dimension convention: in this formula d is Bach's, whose sphere is S^d in R^{d+1}
(the seed lifts x in the ball of R^d to (x, t) on S^d, although its slide writes S^{d-1}). In this
project's convention (S^{d-1} in R^d, DESIGN.md) Bach's d is our d - 1, so k atoms reach the error

    eps(k) ~ C(d) k^{-(d+2)/(2(d-1))}:  k^-2 on the circle (d = 2), k^-1.25 (d = 3), k^-1 (d = 4),
                                         k^-0.875 (d = 5), k^-0.8 (d = 6),

always faster than the dimension-free rate k^{-1/2} of Maurey's sampling argument (Barron 1993,
Lemma 1), and tending to it as d grows. (Reading the seed's formula with our d would give the
exponent (d+3)/(2d), e.g. 1.25 on the circle instead of 2: the figure shows both; the data decide.)
Siegel (2023, "Optimal approximation of zonoids and uniform approximation by shallow neural networks",
arXiv:2307.15285) proves this sup-norm rate, n^{-1/2 - 3/(2 d_B)} with d_B = d - 1, for the whole
variation space and shows it optimal. The L2 error is at most the sup error; that the best k-term L2
error of a smooth target has the same exponent is our expectation (relu ridge functions saturate at
that order), not a quoted theorem: the data test it.

What is measured, honestly. The theorem is an existence result for the sup norm with p bounded. We
take a smooth signed density p(theta) = sum_{i<=3} c_i exp(kappa (<theta, v_i> - 1)), c = (1, 1, -1),
kappa = 4, random v_i, whose g is known exactly through Funk-Hecke (g(x) = sum_i c_i sum_k
mu_k(relu) h_k N(d, k) P_{k,d}(<x, v_i>), h_k the coefficients of exp(kappa (t - 1)); checked against a
Monte Carlo integral), and compute k-atom approximations g_k = sum_j a_j relu(<theta_j, .>) by
minimising the squared L2 error on n = 20 k_max (d + 1) uniform training points:

* sliding Frank-Wolfe (Denoyelle, Duval, Peyre and Soubies 2019, arXiv:1811.06416): atoms are
  inserted greedily (the best of 1000 random directions for |<residual, relu(<theta, .>)>|, refined by
  L-BFGS: :func:`shallow.measures.best_neuron`), the weights re-solved by least squares (fully corrective,
  without the variation-norm bound of :func:`shallow.measures.conditional_gradient`), and at each recorded k the
  positions of all atoms are optimised jointly (variable projection: the weights are the least
  squares solution for the positions, the positions move by BFGS); the same local optimisation is also
  started from k well-spread directions (Lloyd's algorithm on the sphere for the density |p|^(2/5), the
  optimal free-knot density on the circle) and the better of the two is kept;
* fully-corrective Frank-Wolfe without sliding (the greedy insertions and least-squares weights
  only) and Maurey's i.i.d. sampling of k atoms from |p| dtau / ||p||_1
  (:func:`shallow.barron.maurey_sample`, 128 draws), as the baselines.

Errors are relative, ||g - g_k|| / ||g||, on 20000 fresh uniform test points: the L2(tau_d) error
(fitted exponents over k >= 8, compared with (d+2)/(2(d-1)) and 1/2), and the largest error on the
test points relative to max |g| (a lower estimate of the sup norm, which the method does not
optimise; its exponent is smaller). A local optimiser gives an upper bound on the best k-term error,
so the fitted L2 exponents are lower estimates of the best rate.

Measured (defaults, seed 0): L2 exponents of sliding Frank-Wolfe 2.00 (d = 2), 1.14 (3), 0.94 (4),
0.86 (5), 0.81 (6) against 2, 1.25, 1, 0.875, 0.8 (the seed's formula read with our d would give 1.25,
1, 0.875, 0.8, 0.75: the circle decides for Bach's convention); fully-corrective Frank-Wolfe 1.44,
1.24, 1.00, 0.91, 0.82 with errors 2.3 - 9.2 times larger at k = 128 (the most on the circle); Maurey
0.49 - 0.51. The largest error on the test points decays with the exponents 1.82, 0.91, 0.81, 0.76,
0.77. (Since best_neuron's refinement ascends the normalised correlation, its greedy atoms are better
found: the fully-corrective exponents were 1.32, 1.19, 0.98, 0.89, 0.80 before, the sliding ones
moved by at most 0.01.) The fitted measures have total variation 1.1 - 1.2 ||p||_{L1(tau)} at k = 128 (the least-squares
weights are not constrained). The Funk-Hecke series of g agrees with a Monte Carlo integral (2e5
atoms, 20 points) within 2.9 standard errors.

Runtime: about 3 minutes on 2 cores with the defaults (about 5 minutes of CPU, most of it in d = 5
and 6; the dimensions run in parallel with --workers; 5 minutes under load; 4.2 minutes with 7
minutes of CPU in the gallery rerun of commit 37e81e5; 6.2 minutes, its sidecar's wall time, at commit
464a8a6 on the machine shared with a test suite), about 10 s with --quick (d = 2, 3, 4 up to
k = 32); the computation runs on the host whatever --device.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize

from shallow import study
from shallow._validation import (
    check_array,
    check_dimension,
    check_integer,
    check_positive,
)
from shallow.activations import funk_hecke
from shallow.barron import maurey_sample
from shallow.harmonics import legendre_all, num_harmonics, project_zonal
from shallow.measures import Measure, best_neuron
from shallow.sphere import sample_sphere


@dataclasses.dataclass(frozen=True)
class Config:
    dims: tuple = (2, 3, 4, 5, 6)
    kmax: int = 128  # atoms; recorded at k = round(2^(j/2)) >= 4
    fit_kmin: int = 8  # exponents fitted over k in [fit_kmin, kmax]
    points_per_parameter: int = 20  # n_train = points_per_parameter * kmax * (d + 1)
    n_test: int = 20_000
    candidates: int = 1000  # random directions tried at each greedy insertion
    iterations: int = 300  # BFGS iterations of each sliding step
    kappa: float = 4.0  # concentration of the bumps of p
    signs: tuple = (1.0, 1.0, -1.0)  # c_i: p = sum_i c_i exp(kappa (<theta, v_i> - 1))
    maurey_draws: int = 128
    maurey_atoms: int = 200_000  # discretisation of p dtau that Maurey's sampling draws from
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the grid or the fits."""
        study.check_grid(self.dims, "dims", check_dimension)  # the sphere S^{d-1}
        check_integer(self.kmax, "kmax", minimum=1)
        check_integer(self.fit_kmin, "fit_kmin", minimum=1)
        if sum(k >= self.fit_kmin for k in recorded_k(self.kmax)) < 2:
            raise ValueError(f"fit_kmin={self.fit_kmin} leaves fewer than two recorded k in [fit_kmin, kmax={self.kmax}] "
                             f"(k = {recorded_k(self.kmax)}): the exponents are fitted over them")
        for name in ("points_per_parameter", "n_test", "candidates", "iterations", "maurey_draws"):
            check_integer(getattr(self, name), name, minimum=1)
        check_integer(self.maurey_atoms, "maurey_atoms", minimum=2)  # a Monte Carlo standard error needs two
        check_positive(self.kappa, "kappa")
        signs = check_array(self.signs, "signs", ndim=1)
        if signs.size == 0 or (signs == 0).any():
            raise ValueError(f"signs must list the nonzero weights c_i of the bumps of p, got {self.signs!r}")


QUICK = {"dims": (2, 3, 4), "kmax": 32, "n_test": 10_000, "iterations": 200, "maurey_atoms": 50_000}
HOST_ONLY = "greedy insertions refined by scipy's L-BFGS and Cholesky least squares"

_SERIES_KMAX = 64
# Second start of each sliding step: Lloyd centres for the density |p|^(2/5). On the circle (angle phi) a
# k-atom relu network is a spline: the atom at theta puts kinks at theta +- pi/2, and g'' + g =
# p(. - pi/2) + p(. + pi/2); the L2-optimal free knots of a degree-1 spline have the density |f''|^(2/5)
# (de Boor, "A practical guide to splines", Ch. XII). In higher d the same exponent is a heuristic.
DENSITY_EXPONENT = 0.4  # truncation of the Funk-Hecke series of g (terms below 1e-16 long before)


def recorded_k(kmax: int) -> list:
    """k = round(2^(j/2)) for 4 <= k <= kmax: a geometric grid, about 2 points per octave."""
    return sorted({round(2 ** (j / 2)) for j in range(4, int(2 * math.log2(kmax)) + 1)} | {kmax})


# ----------------------------------------------------------------------------- the target rho * p

class Target:
    """g = rho * p for p(theta) = sum_i c_i exp(kappa (<theta, v_i> - 1)) on S^{d-1}, rho = relu.

    By Funk-Hecke, int relu(<x, theta>) h(<theta, v>) dtau(theta) = sum_k mu_k(relu) h_k N(d, k) P_{k,d}(<x, v>)
    with h_k the Funk-Hecke coefficients of h(t) = exp(kappa (t - 1)).
    """

    def __init__(self, d, V, c, kappa, kmax=_SERIES_KMAX):
        self.d, self.V, self.c, self.kappa = d, V, np.asarray(c, dtype=np.float64), kappa
        mu = funk_hecke("relu", d, kmax)  # (kmax + 1,)
        h = project_zonal(lambda t: np.exp(kappa * (t - 1)), d, kmax)
        N = np.array([float(num_harmonics(d, k)) for k in range(kmax + 1)])
        self.coef = mu * h * N  # (kmax + 1,): G(s) = sum_k coef_k P_{k,d}(s)
        self.kmax = kmax

    def density(self, theta):
        """p(theta) at the rows of theta (m, d)."""
        return np.exp(self.kappa * (theta @ self.V.T - 1)) @ self.c

    def __call__(self, X):
        S = np.clip(X @ self.V.T, -1.0, 1.0)  # (n, B)
        return np.tensordot(self.coef, legendre_all(self.kmax, self.d, S), axes=1) @ self.c


# ----------------------------------------------------------------------------- k-atom approximations

def _relu_features(X, W):
    return np.maximum(X @ W.T, 0.0)


def least_squares(F, y):
    """argmin_a |F a - y|^2 by the normal equations (Cholesky, relative jitter 1e-12)."""
    G = F.T @ F
    G[np.diag_indices_from(G)] += 1e-12 * max(float(np.trace(G)) / len(G), 1e-300)
    return cho_solve(cho_factor(G), F.T @ y)


def _projected_loss(w, X, y, k, d, scale):
    """min_a |relu(X W^T) a - y|^2 / scale and its gradient in W (variable projection: the gradient
    at the optimal a, by the envelope theorem)."""
    W = w.reshape(k, d)
    Z = X @ W.T  # (n, k)
    F = np.maximum(Z, 0.0)
    a = least_squares(F, y)
    r = F @ a - y
    grad = ((r[:, None] * (Z > 0)) * a[None, :]).T @ X * (2.0 / scale)  # (k, d)
    return float(r @ r) / scale, grad.ravel()


def slide(W, X, y, iterations):
    """Optimise the positions of the atoms W (k, d) jointly; returns (unit W, squared training error)."""
    k, d = W.shape
    scale = _projected_loss(W.ravel(), X, y, k, d, 1.0)[0]  # the loss starts at 1: tolerances are relative
    res = minimize(_projected_loss, W.ravel(), args=(X, y, k, d, scale), jac=True, method="BFGS",
                   options={"maxiter": iterations, "gtol": 1e-12})
    W = res.x.reshape(k, d)
    return W / np.linalg.norm(W, axis=1, keepdims=True), float(res.fun) * scale


def quasi_uniform(k, d, rng, iterations=20, density=None):
    """k well-spread directions on S^{d-1}: Lloyd's algorithm (spherical k-means) on 50 k uniform points,
    their weights ``density(points)`` if given (then the centres follow that density)."""
    P = sample_sphere(50 * k, d, rng=rng)  # (50 k, d)
    w = np.ones(len(P)) if density is None else density(P)  # (50 k,)
    C = P[rng.choice(len(P), k, replace=False, p=w / w.sum())].copy()  # (k, d)
    for _ in range(iterations):
        label = np.argmax(P @ C.T, axis=1)
        sums = np.zeros_like(C)
        np.add.at(sums, label, w[:, None] * P)
        norms = np.linalg.norm(sums, axis=1)
        live = norms > 0
        C[live] = sums[live] / norms[live, None]
    return C


def _greedy_atom(r, X, rng, candidates):
    """The Frank-Wolfe linear step: the direction theta maximising |<r, relu(<theta, .>)>| on 3000 of the
    training points, the best of ``candidates`` random directions refined by 20 L-BFGS-B iterations
    (:func:`shallow.measures.best_neuron`)."""
    return best_neuron(r, X, candidates=candidates, refine=20, subsample=3000, rng=rng)[0]


def approximate_dimension(point: dict) -> dict:
    """All the curves of one dimension (a grid point of :func:`shallow.study.run_grid`)."""
    d, kmax = point["d"], point["kmax"]
    # independent streams, so that changing one method's settings leaves the others' numbers alone
    rng, rng_maurey, rng_fw, rng_slide = (np.random.default_rng([point["seed"], d, i]) for i in range(4))
    target = Target(d, sample_sphere(len(point["signs"]), d, rng=rng), point["signs"], point["kappa"])
    n = point["points_per_parameter"] * kmax * (d + 1)
    X = sample_sphere(n, d, rng=rng)  # (n, d) training points
    y = target(X)
    Xt = sample_sphere(point["n_test"], d, rng=rng)  # (n_test, d) test points
    yt = target(Xt)
    g_l2, g_sup = math.sqrt(float(np.mean(yt**2))), float(np.abs(yt).max())
    ks = recorded_k(kmax)

    def errors(W, a):
        e = _relu_features(Xt, W) @ a - yt
        return math.sqrt(float(np.mean(e**2))) / g_l2, float(np.abs(e).max()) / g_sup

    # Discretised p dtau: Maurey's sampling law, and a Monte Carlo check of the Funk-Hecke series of g.
    theta = sample_sphere(point["maurey_atoms"], d, rng=rng)  # (N, d)
    p = target.density(theta)  # (N,)
    p_l1, p_l2 = float(np.abs(p).mean()), math.sqrt(float(np.mean(p**2)))
    terms = _relu_features(Xt[:20], theta) * p  # (20, N)
    mc = terms.mean(axis=1)
    mc_se = terms.std(axis=1, ddof=1) / math.sqrt(theta.shape[0])
    target_zscore = float(np.max(np.abs(mc - yt[:20]) / mc_se))
    measure = Measure(p / theta.shape[0], theta)
    maurey = []
    for k in ks:
        sq = []
        for _ in range(point["maurey_draws"]):
            net = maurey_sample(measure, k, rng=rng_maurey)
            sq.append(float(np.mean((net(Xt) - yt) ** 2)))
        maurey.append(math.sqrt(float(np.mean(sq))) / g_l2)

    # Fully-corrective Frank-Wolfe (greedy insertions, least-squares weights), and sliding Frank-Wolfe.
    fw, fw_sup, sl, sl_sup, sl_train, tv, from_lloyd = [], [], [], [], [], [], []
    W_fw = np.zeros((0, d))
    W = np.zeros((0, d))
    r_fw, r = y.copy(), y.copy()
    for k in range(1, kmax + 1):
        W_fw = np.vstack([W_fw, _greedy_atom(r_fw, X, rng_fw, point["candidates"])])
        F = _relu_features(X, W_fw)
        a_fw = least_squares(F, y)
        r_fw = y - F @ a_fw
        W = np.vstack([W, _greedy_atom(r, X, rng_slide, point["candidates"])])
        if k in ks:
            e = errors(W_fw, a_fw)
            fw.append(e[0])
            fw_sup.append(e[1])
            W_warm, loss_warm = slide(W, X, y, point["iterations"])
            start = quasi_uniform(k, d, rng_slide, density=lambda P: np.abs(target.density(P)) ** DENSITY_EXPONENT)
            W_lloyd, loss_lloyd = slide(start, X, y, point["iterations"])
            W = W_warm if loss_warm <= loss_lloyd else W_lloyd
            from_lloyd.append(loss_lloyd < loss_warm)
            F = _relu_features(X, W)
            a = least_squares(F, y)
            e = errors(W, a)
            sl.append(e[0])
            sl_sup.append(e[1])
            sl_train.append(math.sqrt(min(loss_warm, loss_lloyd) / n) / g_l2)
            tv.append(float(np.abs(a).sum()) / p_l1)
        F = _relu_features(X, W)
        r = y - F @ least_squares(F, y)

    ks = np.array(ks)
    fit = ks >= point["fit_kmin"]

    def slope(e):
        return float(-np.polyfit(np.log(ks[fit]), np.log(np.asarray(e)[fit]), 1)[0])

    return {
        "k": ks, "n_train": n,
        "sliding": np.array(sl), "sliding_sup": np.array(sl_sup), "sliding_train": np.array(sl_train),
        "fw": np.array(fw), "fw_sup": np.array(fw_sup), "maurey": np.array(maurey),
        "tv_over_p_l1": np.array(tv), "from_lloyd": np.array(from_lloyd, dtype=bool),
        "exponent_sliding": slope(sl), "exponent_sliding_sup": slope(sl_sup), "exponent_fw": slope(fw),
        "exponent_maurey": slope(maurey), "theory": (d + 2) / (2 * (d - 1)), "seed_reading": (d + 3) / (2 * d),
        "target_mc_zscore": target_zscore, "p_l1": p_l1, "p_l2": p_l2, "g_l2": g_l2,
        "series_last_term": float(np.abs(target.coef[-4:]).max() / np.abs(target.coef).max()),
    }


def compute(cfg: Config) -> dict:
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("dims", "device")}
    points = [dict(base, d=d) for d in cfg.dims]
    results = study.run_grid(approximate_dimension, points, desc="sparse approximation: dimensions")
    out = {}
    for d, res in zip(cfg.dims, results):
        for key, value in res.items():
            out[f"{key}_d{d}"] = value
    return out


def plot(result: dict, cfg: Config):
    n = len(cfg.dims)
    ncols = min(3, n + 1) if n + 1 != 4 else 4
    nrows = -(-(n + 1) // ncols)
    fig, axes = study.new_figure(nrows, ncols, size=(4.2, 3.9))
    panels = [axes[i // ncols, i % ncols] for i in range(nrows * ncols)]
    for ax in panels[n + 1:]:
        ax.set_visible(False)
    for i, d in enumerate(cfg.dims):
        ax = panels[i]
        k = result[f"k_d{d}"]
        curves = [("sliding", "o-", "C0", "sliding FW, $L^2$"), ("sliding_sup", "o:", "C0", "sliding FW, max"),
                  ("fw", "s-", "C1", "fully-corr. FW"), ("maurey", "^-", "C2", "Maurey")]
        for name, style, colour, label in curves:
            ax.loglog(k, result[f"{name}_d{d}"], style, color=colour, ms=3.5 if name != "sliding_sup" else 2.5,
                      mfc="none" if name == "sliding_sup" else colour,
                      label=f"{label}: {result[f'exponent_{name}_d{d}']:.2f}")
        fit = k >= cfg.fit_kmin
        kk = k[fit].astype(float)
        anchor = result[f"sliding_d{d}"][fit][0]
        theory, seed_reading = result[f"theory_d{d}"], result[f"seed_reading_d{d}"]
        ax.loglog(kk, 0.7 * anchor * (kk / kk[0]) ** -theory, "k--", lw=1)
        ax.loglog(kk, 0.7 * anchor * (kk / kk[0]) ** -seed_reading, "k:", lw=1)
        ax.loglog(kk, 1.4 * result[f"maurey_d{d}"][fit][0] * (kk / kk[0]) ** -0.5, color="0.6", lw=1)
        ax.set_title(f"d = {d} ($S^{{{d - 1}}}$)")
        ax.set_xlabel("atoms k")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left", title="fitted exponent", title_fontsize=6.5)
    for ax in panels[:n]:
        ax.set_ylabel(r"relative error $\|g - g_k\| / \|g\|$")
    ax = panels[n]
    dims = np.array(cfg.dims, dtype=float)
    dd = np.linspace(dims.min(), dims.max(), 100)
    ax.plot(dd, (dd + 2) / (2 * (dd - 1)), "k--", label="Bach 2017, translated to $S^{d-1}$: (d+2)/(2(d-1))")
    ax.plot(dd, (dd + 3) / (2 * dd), "k:", label="seed's (d+3)/(2d) read with our d")
    ax.axhline(0.5, color="0.6", label="Maurey: 1/2")
    ax.plot(dims, [result[f"exponent_sliding_d{d}"] for d in cfg.dims], "o-", color="C0", label="sliding FW ($L^2$)")
    ax.plot(dims, [result[f"exponent_sliding_sup_d{d}"] for d in cfg.dims], "o:", color="C0", mfc="none",
            label="sliding FW (max on test)")
    ax.plot(dims, [result[f"exponent_fw_d{d}"] for d in cfg.dims], "s-", color="C1", label="fully-corrective FW")
    ax.plot(dims, [result[f"exponent_maurey_d{d}"] for d in cfg.dims], "^-", color="C2", label="Maurey sampling")
    ax.set_xlabel("d (sphere $S^{d-1}$ in $R^d$)")
    ax.set_ylabel(f"fitted exponent over k in [{cfg.fit_kmin}, {cfg.kmax}]")
    ax.set_title("fitted exponents (lines: predictions,\nalso drawn as slopes in the other panels)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6.5)
    fig.suptitle(r"k-atom approximation of "
                 r"$g = \int \mathrm{relu}(\langle x, \theta\rangle)\, p(\theta)\, d\tau(\theta)$ "
                 r"(smooth signed $p$), relative errors on fresh test points")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
