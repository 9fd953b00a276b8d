r"""Laziness exponent: with gamma(m) = m^-beta the relative weight change falls like m^(beta - 1).

Claim (Chizat, Oyallon and Bach 2019, "On lazy training in differentiable programming", NeurIPS,
arXiv:1812.07956, Sec. 2, the laziness criterion kappa; derived for two-layer networks in the
docstring of :mod:`shallow.lazy`): for f(x) = gamma(m) sum_{j<=m} a_j relu(<w_j, x>) with a centred
initialisation (f = 0 at theta_0) and i.i.d. particles theta_j = (a_j, w_j) of order 1,

    kappa ~ |y*| / (gamma(m) m) = m^(beta - 1)   for gamma(m) = m^-beta,

and the relative weight change after training, |theta_T - theta_0| / |theta_0| ~ 1/(gamma m) ~ kappa,
falls like m^(beta - 1). So training is lazy as m -> infinity for every beta < 1, the NTK scale
beta = 1/2 being the laziest of the usual ones (m^{-1/2}), and only the mean-field end beta = 1
(gamma = 1/m) keeps an O(1) weight change: there the particles really move (feature learning).
The seed lecture's slide ("1-NN Optimization") reads: Phi(x) = gamma(n) sum_{i<=n} alpha_i rho(<x, theta_i>),
"gamma(n) = o(1/sqrt(n)) => laziness". The criterion reads differently: training is lazy when
gamma(m) m -> infinity, i.e. gamma(m) >> 1/m, and not lazy at gamma(m) = 1/m. The slide's condition is
therefore neither sufficient (gamma = 1/m, the mean-field scale, is o(1/sqrt(m)) and is not lazy; nor is
any gamma <= 1/m) nor necessary (gamma = 1/sqrt(m), the NTK scale, is lazy, with kappa ~ m^{-1/2}). What
it gets right is the window the study draws: every gamma = m^-beta with 1/2 < beta < 1 is o(1/sqrt(m))
and lazy, the more so the smaller beta. (Read as "gamma(m) m -> infinity", or "gamma(m) >= 1/sqrt(m) =>
lazy", it would agree with the criterion.)

Why the flow time is scaled: the function moves at rate df/dt = -(s/n) K_0 (f - y), with K_0 ~
gamma^2 m Theta (Theta the infinite-width NTK) and s the time scale of
:func:`shallow.flows.gradient_flow`. Taking s = 1/(gamma^2 m) = m^(2 beta - 1) makes the function-space
flow the same for every m and beta (s = m, the mean-field time scale, at beta = 1; s = 1 at beta = 1/2),
so that all runs go through the same function-space time T and are compared at the same fit.
Each particle then moves by s gamma T O(1) = m^(beta - 1) T O(1), the predicted exponent.

Setup: x uniform on S^{d-1}, d = 5, n = 64 training points, teacher y = relu(<u_1, x>) - relu(<u_2, x>)
(u_k uniform unit vectors); student centred (m/2 neurons drawn with a ~ N(0, 1), w ~ N(0, I_d),
each duplicated with -a), gamma = m^-beta; full-batch Euler gradient descent with step 0.5 and time
scale s = m^(2 beta - 1) up to T = 50 (the risk falls about tenfold); beta in {1/2, 5/8, 3/4, 7/8, 1},
m = 2^4 .. 2^14, 3 seeds. The fitted exponent is the log-log slope of the mean relative weight change over m >= 2^6.

At m = 2^4 and 2^5 and the NTK scale the finite-width kernel is far from its limit: over seeds 0..7
of --quick the final risk is up to 0.48 of the initial one there (m = 16), against at most 0.22 for
m >= 2^6 (0.02-0.12 at m = 2^11, the spread coming from the teacher drawn by the seed).

Runtime (one CPU core, loaded 2-core machine): --quick (m = 2^6 .. 2^11, 3 values of beta, 2 seeds)
about 1-6 s; the defaults are estimated at about 1 minute single-threaded (one seed at m = 2^14 took
1.6 s; the cost is linear in m); the gallery's run took 6.3 s (its sidecar's wall time, on the
2-core machine with 2 workers; 25 s in an earlier run).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer, check_positive
from shallow.flows import EmpiricalRisk, gradient_flow
from shallow.lazy import centered, relative_weight_change
from shallow.networks import TwoLayer
from shallow.sphere import sample_sphere


@dataclasses.dataclass(frozen=True)
class Config:
    betas: tuple = (0.5, 0.625, 0.75, 0.875, 1.0)
    log2_m_min: int = 4
    log2_m_max: int = 14
    log2_m_fit: int = 6  # the exponent is fitted over m >= 2^log2_m_fit
    d: int = 5
    n: int = 64
    T: float = 50.0  # function-space time (see the docstring)
    step_size: float = 0.5
    seeds: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the grid or the fit."""
        study.check_grid(self.betas, "betas", check_positive)  # gamma(m) = m^-beta
        study.check_width_fit(self.log2_m_min, self.log2_m_fit, self.log2_m_max, minimum=1)  # m/2 centred pairs
        check_dimension(self.d, "d")  # the sphere S^{d-1}
        check_integer(self.n, "n", minimum=1)
        check_integer(self.seeds, "seeds", minimum=1)
        study.check_flow_time(self.T, self.step_size)


# --quick starts at the fit's smallest width 2^6: below it, at the NTK scale, a run can end at T = 50
# with the risk only halved (m = 16 at seed 6), and those widths do not enter the exponent.
QUICK = {"betas": (0.5, 0.75, 1.0), "log2_m_min": 6, "log2_m_max": 11, "seeds": 2}
HOST_ONLY = ("n = 64 training points: a flow step is a few small matrix "
             "products, which a GPU runs no faster than its kernel launches")


def widths(cfg) -> np.ndarray:
    return 2 ** np.arange(cfg.log2_m_min, cfg.log2_m_max + 1)


def data(n, d, seed):
    rng = np.random.default_rng([seed, 0])
    X = sample_sphere(n, d, rng=rng)  # (n, d)
    U = sample_sphere(2, d, rng=rng)  # (2, d)
    teacher = TwoLayer(np.array([1.0, -1.0]), U, gamma=1.0)
    return X, teacher(X)


def train_point(point: dict) -> dict:
    """Relative weight change and final risk after the flow to time T, for each seed."""
    beta, m = point["beta"], point["m"]
    X, y = data(point["n"], point["d"], point["seed"])
    loss = EmpiricalRisk(X, y)
    gamma = float(m) ** -beta
    s = float(m) ** (2 * beta - 1)  # = 1 / (gamma^2 m)
    steps = int(round(point["T"] / point["step_size"]))
    changes, risks = [], []
    for k in range(point["seeds"]):
        half = TwoLayer.init(m // 2, point["d"], rng=np.random.default_rng([point["seed"], m, k]))
        net0 = centered(half, gamma=gamma)  # (m,), (m, d); f = 0 at theta_0
        traj = gradient_flow(net0, loss, steps, point["step_size"], time_scale=s, record_every=steps)
        changes.append(relative_weight_change(net0, traj.a, traj.W))
        risks.append(float(traj.risks[-1]))
    return {"weight_change": np.array(changes), "risk": np.array(risks)}


def compute(cfg: Config) -> dict:
    ms = widths(cfg)
    points = [dict(beta=float(b), m=int(m), d=cfg.d, n=cfg.n, T=cfg.T, step_size=cfg.step_size,
                   seeds=cfg.seeds, seed=cfg.seed) for b in cfg.betas for m in ms]
    runs = study.run_grid(train_point, points, desc="laziness_exponent: (beta, m)")
    X, y = data(cfg.n, cfg.d, cfg.seed)
    result = {"m": ms, "betas": np.array(cfg.betas), "initial_risk": 0.5 * float(np.mean(y**2))}
    fit = ms >= 2**cfg.log2_m_fit
    exponents = []
    for i, b in enumerate(cfg.betas):
        mine = [r for p, r in zip(points, runs) if p["beta"] == float(b)]
        wc = np.array([r["weight_change"] for r in mine])  # (widths, seeds)
        result[f"weight_change_{i}"] = wc
        result[f"risk_{i}"] = np.array([r["risk"] for r in mine])
        exponents.append(np.polyfit(np.log(ms[fit]), np.log(wc.mean(axis=1)[fit]), 1)[0])
    result["exponent"] = np.array(exponents)
    result["predicted_exponent"] = np.array(cfg.betas) - 1.0
    result["max_exponent_error"] = float(np.max(np.abs(result["exponent"] - result["predicted_exponent"])))
    result["max_final_risk"] = float(max(result[f"risk_{i}"].max() for i in range(len(cfg.betas))))
    return result


def plot(result: dict, cfg: Config):
    import matplotlib

    fig, axes = study.new_figure(1, 2, size=(5.0, 3.9))
    ms = result["m"]
    colours = [matplotlib.cm.plasma(v) for v in np.linspace(0, 0.85, len(cfg.betas))]
    fit = ms >= 2**cfg.log2_m_fit
    ax = axes[0, 0]
    for i, (b, c) in enumerate(zip(cfg.betas, colours)):
        wc = result[f"weight_change_{i}"]
        ax.loglog(np.repeat(ms, wc.shape[1]), wc.ravel(), ".", color=c, alpha=0.3, ms=3)
        ax.loglog(ms, wc.mean(axis=1), "o-", color=c, ms=4,
                  label=rf"$\beta$ = {b:g}: slope {result['exponent'][i]:.2f} (pred. {b - 1:.2f})")
        ref = wc.mean(axis=1)[-1] * (ms[fit] / ms[-1]) ** (b - 1.0)
        ax.loglog(ms[fit], ref, "k--", lw=0.7)
    ax.set_xlabel("width m")
    ax.set_ylabel(r"$|\theta_T - \theta_0| / |\theta_0|$")
    ax.set_title(r"relative weight change, $\gamma(m) = m^{-\beta}$ (dashed: $m^{\beta - 1}$)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)

    ax = axes[0, 1]
    betas = np.array(cfg.betas)
    bb = np.linspace(0.5, 1.0, 50)
    ax.plot(bb, bb - 1.0, "k--", label=r"$\kappa \sim 1/(\gamma m)$: exponent $\beta - 1$")
    ax.plot(betas, result["exponent"], "o", color="C3", ms=7,
            label=f"fitted over m $\\geq$ {2**cfg.log2_m_fit}")
    ax.axhline(0, color="gray", lw=0.6)
    ax.annotate("mean field (not lazy)", (1.0, 0.0), xytext=(0.72, 0.08), fontsize=8,
                arrowprops=dict(arrowstyle="->", lw=0.7))
    ax.annotate("NTK scale", (0.5, -0.5), xytext=(0.55, -0.55), fontsize=8)
    ax.set_xlabel(r"$\beta$")
    ax.set_ylabel("exponent of m")
    ax.set_ylim(-0.65, 0.2)
    ax.set_title("fitted exponent vs the laziness criterion", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.suptitle(f"Laziness exponent: d = {cfg.d}, n = {cfg.n}, centred init, flow time scale "
                 r"$s = 1/(\gamma^2 m)$, " + f"T = {cfg.T:g}", fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
