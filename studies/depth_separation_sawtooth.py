"""Telgarsky's sawtooth: a 2k-neuron deep net is exact, shallow nets stay far off until their width nears 2^k.

Claim (Telgarsky 2016, "Benefits of depth in neural networks", COLT, arXiv:1602.04485, Theorem 1.1
and Sec. 3): the tent map composed k times, f_k, has 2^k affine pieces on [0, 1] and is computed
exactly by a relu network with k hidden layers of 2 neurons (:func:`shallow.depth.sawtooth`, 2k
neurons). A one-hidden-layer relu network of width m is affine on at most m + 1 pieces of [0, 1],
and every continuous function g with s pieces has

    int_0^1 |f_k - g| >= max(0, 1/8 - (s + 1) / 2^{k+2})        (:func:`sawtooth_l1_lower_bound`),

so shallow networks stay far from f_k until m is of order 2^k.

Shallow fits. For each width m (2 .. 2^12) the network is g(x) = c + sum_{j<m} a_j relu(x - x_j)
(m hidden neurons, one input, an output bias c; as in the depth-separation papers the output bias
is not counted in the width), with the knots x_0 = 0 < x_1 < ... chosen in advance and the outer
layer (c, a) fitted by least squares in L2(0, 1), exactly: g ranges over the continuous
piecewise-linear functions on the nodes x_0, ..., x_{m-1}, 1, so the fit is the L2 projection onto
the hat functions (a tridiagonal mass matrix; the right-hand sides by Simpson's rule on the common
refinement of the nodes and the sawtooth's breakpoints, exact for products of affine functions).
Two knot placements:

* ``uniform``: x_j = j / m;
* ``teeth`` (the stronger baseline, built knowing f_k): x_j = j / 2^k for j < min(m, 2^k), the
  sawtooth's own breakpoints, so that the fit copies the first teeth exactly and averages the rest;
  neurons beyond 2^k stay idle (outer weight 0). It reaches L1 error about (1 - m/2^k) / 4, twice
  the lower bound's value at small m, and is exact from m = 2^k on.

For widths m < 2^k (up to ``refine_max_width``) the teeth fit is then refined by the mean-field
gradient flow of both layers (:func:`shallow.flows.gradient_flow` on the square loss over a uniform
grid of 16 * 2^k points; the output bias becomes a constant neuron relu(0 x + 1) of a
:class:`~shallow.networks.TwoLayer` with bias, so the refined network has m + 1 neurons; each
neuron is first rescaled to |a_j| = |w_j|, the same function, better conditioned). The flow is
stiff: the features relu(x - x_j) are nearly collinear and the slopes are +-2^k, and Euler diverges
from a step of about 1 / (m 2^k) on (measured), so the step is 0.5 / (m 2^k); 1000 steps lower the
L1 error by 0.0006% to 0.3% (measured, k = 6 .. 8): the least-squares fit on the teeth is close to a
stationary point of the flow, and training gets nowhere near the lower bound either. Errors are exact
L1 distances (:func:`shallow.depth.l1_distance`, checked against an independent exact integration on
the common refinement) and exact L2 distances; the pieces of every fit are counted exactly
(:func:`shallow.depth.count_linear_pieces`) and the lower bound is evaluated at that count.

What is checked: every shallow fit's L1 error is at least the lower bound for its number of pieces;
the best shallow error stays above 0.1 (out of 1/4 for the constant 1/2) for every width
m <= 2^{k-1} and vanishes only from m = 2^k on; the deep network (2k neurons) is exact: zero L1
distance to the closed form 1 - |1 - (2^k x mod 2)|, and a sup error of 0 on a dyadic grid
and on random points (measured: exactly 0 in float64).

Measured with the defaults: the best shallow L1 error at m = 2^{k-1} is 0.133, 0.129, 0.127 for
k = 6, 7, 8 (the lower bound is 0 there), the first exact width is 2^k, and the deep network's
errors are exactly 0.

Runtime: 12 s with the defaults (k = 6, 7, 8; the refinement flows and the exact piece counts at
widths up to 4096), up to 50 s under load (24 s in the gallery rerun of commit 37e81e5), about 2-5 s
with --quick (k = 5, 6), on one core of the 2-core development machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.linalg import solve_banded

from shallow import study
from shallow._validation import check_integer, check_positive
from shallow.backend import to_device, to_numpy
from shallow.depth import (DeepReLU, PiecewiseLinear, count_linear_pieces, l1_distance, max_pieces_two_layer,
                           sawtooth, sawtooth_l1_lower_bound)

PLACEMENTS = ("uniform", "teeth")


def _grid(lo_exp, hi_exp, per_octave):
    """Integer widths 2^{j / per_octave}, deduplicated (the powers of 2 included)."""
    return tuple(sorted({int(round(2 ** (j / per_octave))) for j in range(lo_exp * per_octave,
                                                                           hi_exp * per_octave + 1)}))


@dataclasses.dataclass(frozen=True)
class Config:
    ks: tuple = (6, 7, 8)
    widths: tuple = _grid(1, 12, 4)  # 2 .. 4096
    refine_steps: int = 1000  # gradient-flow steps on the teeth fit, for widths below 2^k (0: none)
    refine_step_size: float = 0.5  # divided by m 2^k: Euler is unstable from about 1 / (m 2^k)
    refine_max_width: int = 64  # refine widths m < min(2^k, refine_max_width + 1)
    grid_per_piece: int = 16  # flow samples per affine piece of f_k
    n_random: int = 100_000  # random points for the deep net's sup error
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of deep inside the fits."""
        if not self.ks:
            raise ValueError("ks must list at least one k (f_k has 2^k affine pieces), got ()")
        for k in self.ks:  # the deep net is checked on 2^(k+4) + 1 dyadic points: k <= 20 keeps that in memory
            check_integer(k, "ks", minimum=1, maximum=20)
        study.check_grid(self.widths, "widths", increasing=True)
        check_integer(self.refine_steps, "refine_steps", minimum=0)
        check_positive(self.refine_step_size, "refine_step_size")
        check_integer(self.refine_max_width, "refine_max_width", minimum=0)
        check_integer(self.grid_per_piece, "grid_per_piece", minimum=1)
        check_integer(self.n_random, "n_random", minimum=1)


QUICK = {"ks": (5, 6), "widths": _grid(1, 9, 3), "refine_steps": 200, "refine_max_width": 32}


# ----------------------------------------------------------------------------- the target, independently

def sawtooth_closed_form(x, k):
    """f_k(x) = 1 - |1 - (2^k x mod 2)|: the triangle wave with 2^k pieces on [0, 1]."""
    return 1.0 - np.abs(1.0 - np.mod(2.0**k * np.asarray(x, dtype=np.float64), 2.0))


def sawtooth_pieces(k):
    """f_k as a :class:`PiecewiseLinear` (breakpoints j / 2^k, slopes +-2^k), from the closed form."""
    i = np.arange(2**k)
    return PiecewiseLinear(np.arange(2**k + 1) / 2.0**k, np.where(i % 2 == 0, 2.0**k, -(2.0**k)),
                           np.where(i % 2 == 0, -i, i + 1.0))


# ----------------------------------------------------------------------------- least squares on fixed knots

def _refinement(nodes, k):
    """Common refinement of the nodes and of f_k's breakpoints, with Simpson points and weights."""
    U = np.unique(np.concatenate([nodes, np.arange(2**k + 1) / 2.0**k]))
    u, v = U[:-1], U[1:]
    P = np.stack([u, (u + v) / 2, v])  # (3, q)
    w = (v - u)[None, :] / 6 * np.array([1.0, 4.0, 1.0])[:, None]  # (3, q) Simpson weights
    cell = np.clip(np.searchsorted(nodes, P[1], side="right") - 1, 0, nodes.size - 2)  # (q,)
    return U, P, w, cell


def project(nodes, k):
    """Nodal values c of the L2(0, 1) projection of f_k onto the continuous PL functions on ``nodes``.

    Returns (c, L2 error, L1 error), both errors exact (computed on the common refinement).
    """
    h = np.diff(nodes)  # (M,)
    M = h.size
    U, P, w, j = _refinement(nodes, k)
    F = sawtooth_closed_form(P, k)  # (3, q)
    right = (P - nodes[j]) / h[j]  # hat function of node j + 1 on cell j
    left = 1.0 - right  # hat function of node j
    b = np.zeros(M + 1)
    np.add.at(b, j, (w * F * left).sum(axis=0))
    np.add.at(b, j + 1, (w * F * right).sum(axis=0))
    bands = np.zeros((3, M + 1))  # the tridiagonal mass matrix int phi_i phi_j
    bands[1, :-1] += h / 3
    bands[1, 1:] += h / 3
    bands[0, 1:] = h / 6
    bands[2, :-1] = h / 6
    c = solve_banded((1, 1), bands, b)
    G = c[j] * left + c[j + 1] * right
    l2 = float(np.sqrt((w * (F - G) ** 2).sum()))
    return c, l2, _exact_l1(F[0] - G[0], F[2] - G[2], U)


def _exact_l1(du, dv, U):
    """int |e| over the cells of U, e affine on each cell with end values du, dv (trapezoid or two triangles)."""
    length = np.diff(U)
    same = du * dv >= 0
    denom = np.where(same, 1.0, np.abs(du) + np.abs(dv))
    return float(np.where(same, 0.5 * (np.abs(du) + np.abs(dv)), 0.5 * (du * du + dv * dv) / denom) @ length)


def shallow_network(nodes, c, m) -> DeepReLU:
    """g(x) = c_0 + sum_j a_j relu(x - x_j), the PL interpolant of (nodes, c), as a width-m one-hidden-layer net.

    Knots x_j = nodes[j] for j < len(nodes) - 1; the remaining neurons are idle (relu(x - 1), weight 0).
    """
    slopes = np.diff(c) / np.diff(nodes)  # (M,)
    a = np.concatenate([slopes[:1], np.diff(slopes)])  # (M,) slope increments at the knots
    M = a.size
    if M > m:
        raise ValueError(f"{M} knots do not fit in width {m}")
    knots = np.concatenate([nodes[:-1], np.ones(m - M)])  # (m,)
    a = np.concatenate([a, np.zeros(m - M)])
    return DeepReLU([np.ones((m, 1)), a[None, :]], [-knots, np.array([c[0]])])


def knot_nodes(placement, m, k):
    """The nodes x_0 = 0 < ... < 1 of a width-m fit (at most m + 1 of them)."""
    if placement == "uniform":
        return np.arange(m + 1) / m
    if placement == "teeth":
        return np.concatenate([np.arange(min(m, 2**k)) / 2.0**k, [1.0]])
    raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")


# ----------------------------------------------------------------------------- gradient-flow refinement

def refine(net: DeepReLU, k, cfg: Config):
    """Refine a one-hidden-layer DeepReLU by the mean-field gradient flow; returns (TwoLayer or None, ok)."""
    from shallow.flows import EmpiricalRisk, FlowDivergenceError, gradient_flow
    from shallow.networks import TwoLayer

    W1, b1 = net.weights[0][:, 0], net.biases[0]
    a, c = net.weights[1][0], float(net.biases[1][0])
    active = a != 0
    W = np.concatenate([np.stack([W1[active], b1[active]], axis=1), [[0.0, 1.0]]])  # (m' + 1, 2): + constant
    a = np.concatenate([a[active], [c]])
    m = a.size
    A = a * m  # gamma = 1/m
    lam = np.where(A != 0, np.sqrt(np.abs(A) / np.linalg.norm(W, axis=1)), 1.0)  # |A_j / lam| = |lam w_j|
    student = TwoLayer(A / lam, W * lam[:, None], gamma=1.0 / m, bias=True)
    n = cfg.grid_per_piece * 2**k
    X = ((np.arange(n) + 0.5) / n)[:, None]  # (n, 1)
    loss = EmpiricalRisk(X, sawtooth_closed_form(X[:, 0], k))
    try:
        traj = gradient_flow(student, loss, cfg.refine_steps, cfg.refine_step_size / (m * 2**k),
                             record_every=max(1, cfg.refine_steps))
    except FlowDivergenceError:
        return None, False
    return traj.network(student), True


# ----------------------------------------------------------------------------- compute

def compute(cfg: Config) -> dict:
    from tqdm.auto import tqdm

    widths = np.asarray(cfg.widths, dtype=np.int64)
    result = {"widths": widths, "ks": np.asarray(cfg.ks)}
    rng = np.random.default_rng(cfg.seed)
    checks = []
    for k in cfg.ks:
        target = sawtooth_pieces(k)
        # The deep network: sawtooth(k), k hidden layers of 2 neurons.
        deep = sawtooth(k, device=cfg.device)
        deep_host = deep.to_device("cpu")
        dyadic = (np.arange(2**(k + 4) + 1) / 2.0 ** (k + 4))[:, None]
        x = rng.random((cfg.n_random, 1))
        result[f"deep_neurons_k{k}"] = deep.n_neurons
        result[f"deep_pieces_k{k}"] = count_linear_pieces(deep_host)
        result[f"deep_l1_k{k}"] = l1_distance(deep_host, target)
        for name, points in (("dyadic", dyadic), ("random", x)):
            values = to_numpy(deep(to_device(points, cfg.device)))
            result[f"deep_sup_{name}_k{k}"] = float(np.abs(values - sawtooth_closed_form(points[:, 0], k)).max())
        result[f"lower_bound_k{k}"] = np.array([sawtooth_l1_lower_bound(k, max_pieces_two_layer(int(m)))
                                                for m in widths])
        for placement in PLACEMENTS:
            l1, l1_check, l2, pieces = [], [], [], []
            for m in tqdm(widths, desc=f"sawtooth k={k}, {placement} knots", unit="width", leave=False,
                          disable=not study.show_progress()):
                nodes = knot_nodes(placement, int(m), k)
                c, err2, err1 = project(nodes, k)
                net = shallow_network(nodes, c, int(m))
                l1.append(l1_distance(net, target))
                l1_check.append(err1)
                l2.append(err2)
                pieces.append(count_linear_pieces(net))
            result[f"l1_{placement}_k{k}"] = np.array(l1)
            result[f"l1_independent_{placement}_k{k}"] = np.array(l1_check)
            result[f"l2_{placement}_k{k}"] = np.array(l2)
            result[f"pieces_{placement}_k{k}"] = np.array(pieces)
            checks.append((k, placement, np.array(l1), np.array(pieces)))
        # Gradient-flow refinement of the teeth fit where it is not exact.
        to_refine = (widths < 2**k) & (widths <= cfg.refine_max_width) & (cfg.refine_steps > 0)
        refine_widths = widths[to_refine]
        refined, refined_pieces, refined_ok = [], [], []
        for m in tqdm(refine_widths, desc=f"sawtooth k={k}, gradient-flow refinement", unit="width", leave=False,
                      disable=not study.show_progress()):
            nodes = knot_nodes("teeth", int(m), k)
            c = project(nodes, k)[0]
            student, ok = refine(shallow_network(nodes, c, int(m)), k, cfg)
            refined_ok.append(ok)
            refined.append(l1_distance(student, target) if ok else np.nan)
            refined_pieces.append(count_linear_pieces(student) if ok else 0)
        result[f"refined_widths_k{k}"] = np.asarray(refine_widths, dtype=np.int64)
        result[f"l1_refined_k{k}"] = np.array(refined, dtype=float)
        result[f"pieces_refined_k{k}"] = np.array(refined_pieces, dtype=np.int64)
        result[f"refined_converged_k{k}"] = np.array(refined_ok, dtype=bool)
        if refine_widths.size:
            checks.append((k, "refined", np.array(refined, dtype=float)[refined_ok],
                           np.array(refined_pieces)[refined_ok]))
        # Summary of the claim for this k.
        best = np.minimum(result[f"l1_uniform_k{k}"], result[f"l1_teeth_k{k}"])
        if refine_widths.size:
            at = np.searchsorted(widths, refine_widths)
            best[at] = np.fmin(best[at], result[f"l1_refined_k{k}"])
        result[f"l1_best_k{k}"] = best
        half = widths <= 2 ** (k - 1)
        result[f"min_best_l1_up_to_half_k{k}"] = float(best[half].min()) if half.any() else float("nan")
        full = widths >= 2**k
        result[f"max_best_l1_from_2k_k{k}"] = float(best[full].max()) if full.any() else float("nan")
        result[f"first_exact_width_k{k}"] = int(widths[np.flatnonzero(best <= 1e-12)[0]]) \
            if (best <= 1e-12).any() else -1
        if refine_widths.size:
            teeth_at = result[f"l1_teeth_k{k}"][np.searchsorted(widths, refine_widths)]
            gain = 1 - result[f"l1_refined_k{k}"] / teeth_at
            result[f"max_refinement_gain_k{k}"] = float(np.nanmax(gain))
            result[f"min_refinement_gain_k{k}"] = float(np.nanmin(gain))  # < 0: the L1 error went up
    # Every fit against the lower bound at its own number of pieces.
    margins = []
    for k, name, l1, pieces in checks:
        bound = np.array([sawtooth_l1_lower_bound(k, max(1, int(s))) for s in pieces])
        margins.append((l1 - bound).min() if l1.size else np.inf)
        result[f"min_margin_over_bound_{name}_k{k}"] = float((l1 - bound).min()) if l1.size else float("nan")
    result["min_margin_over_bound"] = float(min(margins))
    result["max_pieces_over_width_plus_one"] = float(max(
        (result[f"pieces_{p}_k{k}"] / (widths + 1)).max() for k in cfg.ks for p in PLACEMENTS))
    return result


# ----------------------------------------------------------------------------- plot

def plot(result: dict, cfg: Config):
    ks = list(cfg.ks)
    fig, axes = study.new_figure(1, len(ks), size=(4.9, 3.9))
    widths = result["widths"]
    for ax, k in zip(axes[0], ks):
        ax.semilogx(widths, result[f"l1_uniform_k{k}"], "s-", color="C0", ms=3, lw=1.2,
                    label="shallow: uniform knots $j/m$ + least squares")
        ax.semilogx(widths, result[f"l1_teeth_k{k}"], "o-", color="C1", ms=3, lw=1.4,
                    label="shallow: knots on the first teeth + least squares")
        rw = result[f"refined_widths_k{k}"]
        if rw.size:
            ax.semilogx(rw, result[f"l1_refined_k{k}"], "x", color="C3", ms=5, mew=1.2,
                        label=f"shallow: teeth fit refined by gradient flow ({cfg.refine_steps} steps)")
        ax.semilogx(widths, result[f"lower_bound_k{k}"], "k--", lw=1.4,
                    label=r"lower bound for width m ($s = m+1$ pieces): $\max(0, \frac{1}{8} - \frac{m+2}{2^{k+2}})$")
        ax.axvline(2**k, color="0.5", ls=":", lw=1)
        ax.text(2**k * 1.08, 0.27, f"$m = 2^{k}$", fontsize=8, color="0.3")  # below the frame
        ax.axhline(0.25, color="0.6", lw=0.8, ls="-.", label="the constant 1/2 (error 1/4)")
        n_deep = result[f"deep_neurons_k{k}"]
        ax.semilogx([n_deep], [result[f"deep_l1_k{k}"]], "*", color="C2", ms=14, mec="k", zorder=5,
                    label="deep: sawtooth(k), 2 neurons in each of k hidden layers (x = its 2k neurons)")
        ax.set_ylim(-0.01, 0.3)
        ax.set_xlabel("width m of the one-hidden-layer net")
        ax.set_ylabel(r"$\int_0^1 |f_k - g|$ (exact)")
        # the deep net's error in the title: an annotation beside the star crossed the lower bound's curve
        ax.set_title(f"k = {k}: sawtooth with $2^{{{k}}}$ = {2**k} pieces\n"
                     f"deep net (star, {n_deep} neurons): error {result[f'deep_l1_k{k}']:.0g}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=7.5, frameon=False)
    fig.suptitle("Telgarsky (2016): L1 distance of relu nets to the sawtooth $f_k$ on [0, 1]")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
