r"""Width scaling: at the NTK scale the weights move like m^{-1/2}, the NTK faster; at the mean-field scale both O(1).

Claim (Jacot, Gabriel and Hongler 2018, arXiv:1806.07572, Theorem 2; Chizat, Oyallon and Bach 2019,
arXiv:1812.07956, Sec. 2 and the kappa count in :mod:`shallow.lazy`): for
f(x) = m^{-1/2} sum_{j<=m} a_j relu(<w_j, x>) (a_j ~ N(0, 1), w_j ~ N(0, I_d)) trained by gradient
descent for a fixed function-space time,

* the relative weight change |theta_T - theta_0| / |theta_0| falls like m^{-1/2}: each particle moves by
  O(gamma) = O(m^{-1/2}) while |theta_0| ~ sqrt(m (1 + d));
* the relative change of the tangent Gram matrix |K_T - K_0|_F / |K_0|_F falls at least that fast, and for
  relu faster. Split K = K_outer + K_inner into the outer-layer part gamma^2 S S^T (S = relu(X W^T)) and
  the inner-layer part gamma^2 (P diag(a^2) P^T) * (X X^T) (P = 1{X W^T > 0}). The first-order change of
  K_outer is gamma^2 sum_j (S_j dS_j^T + dS_j S_j^T) with dS_j proportional to a_j (dw_j = -s gamma a_j
  sum_i r_i P_ij x_i): a sum of m terms of random signs, of size sqrt(m) gamma^2 m^{-1/2} = m^{-1},
  as is the second-order term gamma^2 sum_j dS_j dS_j^T. In K_inner the smooth part does not move
  (P is piecewise constant) except through a_j^2, whose first-order change 2 a_j da_j again has a
  random sign; what remains are the activation patterns that flip (a fraction ~ m^{-1/2} of the
  (sample, neuron) pairs), entering with random signs: m^{1/2 - 1/4} gamma^2 ~ m^{-3/4} (a heuristic count,
  not a theorem). The study splits the change of K_inner further into its pattern part (flips, with a
  kept at a_0) and its a^2 part, and measures every slope. Measured (--quick, m = 2^6 .. 2^11, 2 seeds):
  weights -0.52, NTK -0.88, K_outer -0.98, K_inner -0.86 (its pattern part -0.84, dominant: about 5x the
  others at m = 2^11; its a^2 part -0.99); one seed at m = 2^14 gives a pattern-part slope of -0.78 between
  2^11 and 2^14, approaching the -3/4 of the count: the flips dominate the kernel's motion. With the
  defaults (m = 2^4 .. 2^14, 3 seeds; the gallery's run): weights -0.54, NTK -0.82, K_outer -1.03,
  K_inner -0.81 (pattern part -0.80, a^2 part -1.06), fraction of flipped patterns -0.56;
* under the mean-field scale gamma = 1/m with the time scale s = m (each particle's field O(1)),
  the weight change and the kernel change stay O(1) as m grows: the particles really move (slopes
  between -0.002 and 0.02 with the defaults; the pattern part alone -0.16).

Both parametrisations run the same function-space time: with s the time scale of
:func:`shallow.flows.gradient_flow`, s = 1/(gamma^2 m) (1 for NTK, m for mean field).

Setup: x uniform on S^{d-1}, d = 5, n = 64 training points (the kernels are compared on them),
teacher y = relu(<u_1, x>) - relu(<u_2, x>); Euler step 0.5 up to T = 50; m = 2^4 .. 2^14, 3 seeds.
Slopes are fitted over m >= 2^6 on the means over seeds.

Runtime (one CPU core, loaded 2-core machine): --quick (m = 2^4 .. 2^11, 2 seeds) about 2-10 s;
the defaults are estimated at 30-60 s single-threaded (one seed at m = 2^14 took 2 s; the cost is
linear in m); the gallery's run took 11 s (its sidecar's wall time, on the 2-core machine
with 2 workers).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer
from shallow.flows import EmpiricalRisk, gradient_flow
from shallow.lazy import activation_flips, empirical_ntk, relative_weight_change
from shallow.networks import TwoLayer
from shallow.sphere import sample_sphere

SCALES = ("ntk", "mean-field")
KEYS = ("weight_change", "ntk_change", "outer_change", "inner_change", "pattern_change", "a2_change", "flips", "risk")


@dataclasses.dataclass(frozen=True)
class Config:
    log2_m_min: int = 4
    log2_m_max: int = 14
    log2_m_fit: int = 6
    d: int = 5
    n: int = 64
    T: float = 50.0
    step_size: float = 0.5
    seeds: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the grid or the fits."""
        study.check_width_fit(self.log2_m_min, self.log2_m_fit, self.log2_m_max)
        check_dimension(self.d, "d")  # the sphere S^{d-1}
        check_integer(self.n, "n", minimum=1)
        check_integer(self.seeds, "seeds", minimum=1)
        study.check_flow_time(self.T, self.step_size)


QUICK = {"log2_m_max": 11, "seeds": 2}
HOST_ONLY = ("n = 64 training points: a flow step is a few small matrix "
             "products, which a GPU runs no faster than its kernel launches")


def widths(cfg) -> np.ndarray:
    return 2 ** np.arange(cfg.log2_m_min, cfg.log2_m_max + 1)


def data(n, d, seed):
    rng = np.random.default_rng([seed, 0])
    X = sample_sphere(n, d, rng=rng)  # (n, d)
    U = sample_sphere(2, d, rng=rng)  # (2, d)
    return X, TwoLayer(np.array([1.0, -1.0]), U, gamma=1.0)(X)


def _norm(K):
    return float(np.linalg.norm(K))


def train_point(point: dict) -> dict:
    """Weight and kernel changes after the flow, for each seed, at one (scale, m)."""
    m, scale = point["m"], point["scale"]
    X, y = data(point["n"], point["d"], point["seed"])
    loss = EmpiricalRisk(X, y)
    s = 1.0 if scale == "ntk" else float(m)  # = 1 / (gamma^2 m)
    steps = int(round(point["T"] / point["step_size"]))
    out = {key: [] for key in KEYS}
    for k in range(point["seeds"]):
        net0 = TwoLayer.init(m, point["d"], scale=scale, rng=np.random.default_rng([point["seed"], m, k]))
        traj = gradient_flow(net0, loss, steps, point["step_size"], time_scale=s, record_every=steps)
        net = TwoLayer(traj.a, traj.W, gamma=net0.gamma)
        K0o, K0i = empirical_ntk(net0, X, train="outer"), empirical_ntk(net0, X, train="inner")
        K1o, K1i = empirical_ntk(net, X, train="outer"), empirical_ntk(net, X, train="inner")
        K0 = _norm(K0o + K0i)
        out["weight_change"].append(relative_weight_change(net0, traj.a, traj.W))
        out["ntk_change"].append(_norm(K1o + K1i - K0o - K0i) / K0)
        out["outer_change"].append(_norm(K1o - K0o) / K0)
        out["inner_change"].append(_norm(K1i - K0i) / K0)
        # K_inner's change = pattern part (flips, a fixed at a0) + a^2 part (patterns fixed at the end):
        # gamma^2 [(P1 A0 P1^T - P0 A0 P0^T) + P1 (A1 - A0) P1^T] * (X X^T), A = diag(a^2)
        P0, P1 = (X @ net0.W.T > 0).astype(float), (X @ net.W.T > 0).astype(float)  # (n, m)
        G = net0.gamma**2 * (X @ X.T)  # (n, n)
        pattern = ((P1 * net0.a**2) @ P1.T - (P0 * net0.a**2) @ P0.T) * G
        a2 = ((P1 * (net.a**2 - net0.a**2)) @ P1.T) * G
        out["pattern_change"].append(_norm(pattern) / K0)
        out["a2_change"].append(_norm(a2) / K0)
        out["flips"].append(activation_flips(net0, traj.W, X))
        out["risk"].append(float(traj.risks[-1]))
    return {key: np.array(v) for key, v in out.items()}


def compute(cfg: Config) -> dict:
    ms = widths(cfg)
    base = dict(d=cfg.d, n=cfg.n, T=cfg.T, step_size=cfg.step_size, seeds=cfg.seeds, seed=cfg.seed)
    points = [dict(base, scale=sc, m=int(m)) for sc in SCALES for m in ms]
    runs = study.run_grid(train_point, points, desc="width_scaling: (scale, m)")
    X, y = data(cfg.n, cfg.d, cfg.seed)
    result = {"m": ms, "initial_risk_teacher": 0.5 * float(np.mean(y**2))}
    fit = ms >= 2**cfg.log2_m_fit
    for sc in SCALES:
        tag = sc.replace("-", "")
        mine = [r for p, r in zip(points, runs) if p["scale"] == sc]
        for key in KEYS:
            arr = np.array([r[key] for r in mine])  # (widths, seeds)
            result[f"{key}_{tag}"] = arr
            if key != "risk":
                result[f"slope_{key}_{tag}"] = float(np.polyfit(np.log(ms[fit]), np.log(arr.mean(axis=1)[fit]), 1)[0])
    return result


LABELS = {"weight_change": r"weights $|\theta_T - \theta_0|/|\theta_0|$",
          "ntk_change": r"NTK $|K_T - K_0|_F/|K_0|_F$",
          "outer_change": r"  outer part $|\Delta K_{outer}|_F/|K_0|_F$",
          "inner_change": r"  inner part $|\Delta K_{inner}|_F/|K_0|_F$",
          "pattern_change": r"    of which flips of $1\{\langle w_j, x\rangle > 0\}$",
          "a2_change": r"    of which $a_j^2$ changes",
          "flips": "activation flips (fraction)"}
STYLE = {"weight_change": ("C0", "o-"), "ntk_change": ("C3", "s-"), "outer_change": ("C1", "v:"),
         "inner_change": ("C2", "^:"), "pattern_change": ("C4", "x-"), "a2_change": ("C5", "+-"),
         "flips": ("C7", "d--")}


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 2, size=(5.2, 4.2), sharey=True)
    ms = result["m"]
    fit = ms >= 2**cfg.log2_m_fit
    for ax, sc in zip(axes[0], SCALES):
        tag = sc.replace("-", "")
        for key, label in LABELS.items():
            c, style = STYLE[key]
            mean = result[f"{key}_{tag}"].mean(axis=1)
            ax.loglog(ms, mean, style, color=c, ms=4, label=f"{label}: slope {result[f'slope_{key}_{tag}']:.2f}")
        if sc == "ntk":
            for key, power, ls, lab in (("weight_change", -0.5, "k--", r"$m^{-1/2}$"),
                                        ("pattern_change", -0.75, "k:", r"$m^{-3/4}$ (flip count)"),
                                        ("outer_change", -1.0, "k-.", r"$m^{-1}$")):
                ref = result[f"{key}_ntk"].mean(axis=1)[-1]  # through the last point
                ax.loglog(ms[fit], ref * (ms[fit] / ms[-1]) ** power, ls, lw=0.8, label=lab)
            ax.set_title(r"NTK scale $\gamma = m^{-1/2}$, time scale 1", fontsize=9)
        else:
            ax.set_title(r"mean-field scale $\gamma = 1/m$, time scale m", fontsize=9)
        ax.set_xlabel("width m")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    axes[0, 0].set_ylabel("relative change after training")
    fig.suptitle(f"Width scaling: d = {cfg.d}, n = {cfg.n}, flow time T = {cfg.T:g} (slopes fitted over "
                 f"m $\\geq$ {2**cfg.log2_m_fit}, mean of {cfg.seeds} seeds)", fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
