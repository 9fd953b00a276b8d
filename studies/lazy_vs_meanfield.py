r"""Lazy training generalises worse: at large initial scale tau the test loss is an order of magnitude worse.

Claim (Chizat, Oyallon and Bach 2019, "On lazy training in differentiable programming", NeurIPS,
arXiv:1812.07956, Fig. 2, following the protocol of the authors' published code): a two-layer relu
student trained by gradient descent from an initialisation of scale tau

* generalises well at small tau (the mean-field / feature-learning regime: the neurons align with
  the teacher's directions), and an order of magnitude worse at large tau (the lazy regime: the
  network follows its linearisation, a kernel method with the random tangent features of 50 neurons);
* moves its weights less and less as tau grows: |theta_T - theta_0| / |theta_0| ~ tau^{-2} = 1/alpha.

Protocol
--------
x uniform on S^{d-1}, d = 100, n = n_test = 1000; teacher y(x) = sum_{k<=3} s_k relu(<u_k, x>) with
u_k uniform unit directions and s_k = +-1; student f(x; theta) = sum_{j<=m} b_j relu(<a_j, x>), m = 50,
theta_0 = tau * theta'_0 with theta'_0 ~ N(0, 1) entrywise, centred: m/2 neurons drawn, each duplicated
with the opposite outer weight (:func:`shallow.lazy.centered`), so f(.; theta_0) = 0; loss
R = 1/(2n) sum_i (f(x_i) - y_i)^2; full-batch gradient descent theta_{k+1} = theta_k - eta grad R(theta_k),
10^4 iterations, eta = min(10, 0.1 / tau^2); tau on a log grid from 1e-2 to 10.

The alpha-scaled form and its step rule
---------------------------------------
relu is 1-homogeneous, so with theta = tau theta' (b = tau b', a_j = tau a'_j)

    f(x; tau theta') = tau^2 sum_j b'_j relu(<a'_j, x>) = alpha h(theta'),   alpha = tau^2,

the model of the paper (Sec. 2) with output scale alpha = tau^2 and an initialisation theta'_0 that does
not depend on tau. In the library's convention gamma = alpha_lib / m (:meth:`TwoLayer.init` with a float
scale) this is gamma = tau^2, i.e. alpha_lib = m tau^2: the factor m is a fixed constant here (m = 50).
Gradient descent is equivariant: grad_{theta'} R(tau theta') = tau grad_theta R(theta), so

    theta'_{k+1} = theta'_k - (eta / tau^2) grad_{theta'} R   <=>   theta_{k+1} = tau theta'_{k+1},

i.e. descent on the alpha-scaled model with step eta' = eta / alpha = eta / tau^2 gives the same
trajectory, theta_k = tau theta'_k for every k, the same functions and the same relative weight change.
With the paper's rule eta = min(10, 0.1/tau^2) the alpha-form step is eta' = min(10/tau^2, 0.1/tau^4):
for tau >= 0.1 the function-space step eta' alpha^2 |Dh|^2 ~ 0.1 |Dh(theta'_0)|^2 is the same for
every tau, so the lazy end is run for the same kernel-flow time. ``compute`` runs both forms for a
few steps at the ends of the grid and reports the largest |theta_k - tau theta'_k| / |theta_k|
(``equivalence_error``, at rounding level).

Why 1/alpha: in the lazy limit the function reaches the same kernel-flow endpoint for every alpha,
which needs alpha Dh(theta'_0) (theta' - theta'_0) ~ f - 0, hence |theta'_T - theta'_0| ~ 1/alpha while
|theta'_0| does not depend on tau.

Runtime (one CPU core, the 2-core development machine under load): --quick (d = 20, n = 200,
1500 iterations, 7 values of tau) about 3-6 s; the defaults (d = 100, n = 1000, 10^4 iterations, 10
values of tau) took 45 s with 2 workers (1.5 minutes of CPU; 2.5 minutes under load; 92 s with 3
minutes of CPU in the gallery rerun of commit 37e81e5): the two ends alone
(--n-tau 2: tau = 0.01 and 10, full size, 10^4 iterations) took 30 s with 2 workers, single-threaded BLAS.
They gave test losses 7.5e-5 (tau = 0.01) and 2.6e-3 (tau = 10), a ratio of 35 (23 for the best along
training), and relative weight changes 3.6 and 1.2e-4. Run BLAS single-threaded (the sweep's workers
are): on the loaded machine multithreaded BLAS was 40x slower.
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
    d: int = 100
    n: int = 1000
    n_test: int = 1000
    m: int = 50  # student neurons in all (m/2 pairs with opposite outer weights)
    teacher_m: int = 3
    iterations: int = 10_000
    tau_min: float = 1e-2
    tau_max: float = 10.0
    n_tau: int = 10
    max_step: float = 10.0  # eta = min(max_step, step_scale / tau^2)
    step_scale: float = 0.1
    record_every: int = 50  # test loss recorded every so many iterations (for the best along training)
    lazy_tau: float = 1.0  # the lazy end used to fit the tau^{-2} slope: tau >= lazy_tau
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the tau grid has run."""
        check_dimension(self.d, "d")  # the sphere S^{d-1}
        for name in ("n", "n_test", "teacher_m", "iterations", "record_every"):
            check_integer(getattr(self, name), name, minimum=1)
        if check_integer(self.m, "m", minimum=2) % 2:
            raise ValueError(f"m must be even (m/2 pairs with opposite outer weights), got {self.m}")
        check_integer(self.n_tau, "n_tau", minimum=2)  # the mean-field end against the lazy end
        for name in ("tau_min", "tau_max", "max_step", "step_scale", "lazy_tau"):
            check_positive(getattr(self, name), name)
        if not self.tau_min < self.tau_max:
            raise ValueError(f"tau_min must be below tau_max, got tau_min={self.tau_min!r} and tau_max={self.tau_max!r}")
        lazy_end = int((taus(self) >= self.lazy_tau * (1 - 1e-12)).sum())
        if lazy_end < 2:  # the slope came out NaN
            raise ValueError(f"n_tau must give at least 2 values of tau >= lazy_tau={self.lazy_tau:g} "
                             f"(the lazy end the weight change's slope is fitted over), got {lazy_end} with "
                             f"n_tau={self.n_tau} from tau_min={self.tau_min:g} to tau_max={self.tau_max:g}")


QUICK = {"d": 20, "n": 200, "n_test": 200, "iterations": 1500, "n_tau": 7, "record_every": 25}
HOST_ONLY = "a network of 50 neurons: steps far too small for a GPU"


def taus(cfg: Config) -> np.ndarray:
    return np.geomspace(cfg.tau_min, cfg.tau_max, cfg.n_tau)


def step_size(tau: float, cfg) -> float:
    """The paper's step rule eta = min(10, 0.1 / tau^2) (for the tau-scaled parameters)."""
    return min(cfg["max_step"] if isinstance(cfg, dict) else cfg.max_step,
               (cfg["step_scale"] if isinstance(cfg, dict) else cfg.step_scale) / tau**2)


def problem(d, n, n_test, teacher_m, m, seed):
    """Data, teacher and the unscaled centred student theta'_0 (a', W'), all from ``seed``."""
    rng = np.random.default_rng(seed)
    X = sample_sphere(n, d, rng=rng)  # (n, d)
    X_test = sample_sphere(n_test, d, rng=rng)  # (n_test, d)
    U = sample_sphere(teacher_m, d, rng=rng)  # (teacher_m, d): unit directions
    s = rng.choice([-1.0, 1.0], size=teacher_m)  # (teacher_m,)
    teacher = TwoLayer(s, U, gamma=1.0)
    half = TwoLayer.init(m // 2, d, rng=rng)  # a ~ N(0, 1), W ~ N(0, I_d)
    student = centered(half, gamma=1.0)  # (m,), (m, d): f = 0 at theta'_0
    return X, teacher(X), X_test, teacher(X_test), student


def primal(student: TwoLayer, tau: float) -> TwoLayer:
    """f(x; tau theta'_0) = sum_j tau b'_j relu(<tau a'_j, x>): the paper's parametrisation (gamma = 1)."""
    return TwoLayer(tau * student.a, tau * student.W, gamma=1.0)


def alpha_form(student: TwoLayer, tau: float) -> TwoLayer:
    """The same function as alpha h(theta'_0), alpha = tau^2: gamma = tau^2 on the unscaled weights."""
    return TwoLayer(student.a.copy(), student.W.copy(), gamma=tau**2)


def train_point(point: dict) -> dict:
    """Gradient descent at one tau: final and best test loss, relative weight change, train loss."""
    X, y, X_test, y_test, student = problem(point["d"], point["n"], point["n_test"], point["teacher_m"],
                                            point["m"], point["seed"])
    tau = point["tau"]
    net0 = primal(student, tau)
    eta = step_size(tau, point)
    tests, steps = [], []

    def record(step, t, risk, a, W):
        f = TwoLayer(a, W, gamma=1.0)(X_test)
        tests.append(0.5 * float(np.mean((f - y_test) ** 2)))
        steps.append(int(step))
        return False

    traj = gradient_flow(net0, EmpiricalRisk(X, y), point["iterations"], eta, time_scale=1.0,
                         record_every=point["record_every"], callback=record, divergence_factor=1e12)
    return {"test_curve": np.array(tests), "test_steps": np.array(steps),
            "test_final": tests[-1], "test_best": min(tests),
            "train_final": float(traj.risks[-1]),
            "weight_change": relative_weight_change(net0, traj.a, traj.W),
            "step_size": eta}


def equivalence_error(cfg: Config, tau: float, steps: int = 20) -> float:
    """max_k |theta_k - tau theta'_k| / |theta_k| between descent on the primal form with step eta and on
    the alpha-scaled form with step eta / tau^2 (the docstring's equivalence)."""
    X, y, _, _, student = problem(cfg.d, cfg.n, cfg.n_test, cfg.teacher_m, cfg.m, cfg.seed)
    eta = step_size(tau, cfg)
    loss = EmpiricalRisk(X, y)
    a = gradient_flow(primal(student, tau), loss, steps, eta, time_scale=1.0, snapshot_particles=-1)
    b = gradient_flow(alpha_form(student, tau), loss, steps, eta / tau**2, time_scale=1.0, snapshot_particles=-1)
    err = 0.0
    for k in range(len(a.times)):
        num = np.sqrt(np.sum((a.snapshots_a[k] - tau * b.snapshots_a[k]) ** 2)
                      + np.sum((a.snapshots_W[k] - tau * b.snapshots_W[k]) ** 2))
        den = np.sqrt(np.sum(a.snapshots_a[k] ** 2) + np.sum(a.snapshots_W[k] ** 2))
        err = max(err, num / den)
    return float(err)


def compute(cfg: Config) -> dict:
    grid = taus(cfg)
    base = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("tau_min", "tau_max", "n_tau", "lazy_tau")}
    points = [dict(base, tau=float(tau)) for tau in grid]
    runs = study.run_grid(train_point, points, desc="lazy_vs_meanfield: tau grid")
    result = {"tau": grid, "alpha": grid**2}
    for key in ("test_final", "test_best", "train_final", "weight_change", "step_size"):
        result[key] = np.array([r[key] for r in runs])
    for i, r in enumerate(runs):
        result[f"test_curve_{i}"] = r["test_curve"]
        result[f"test_steps_{i}"] = r["test_steps"]
    _, _, _, y_test, _ = problem(cfg.d, cfg.n, cfg.n_test, cfg.teacher_m, cfg.m, cfg.seed)
    result["zero_predictor_test_loss"] = 0.5 * float(np.mean(y_test**2))
    lazy = grid >= cfg.lazy_tau * (1 - 1e-12)
    result["weight_change_slope"] = (float(np.polyfit(np.log(grid[lazy]), np.log(result["weight_change"][lazy]), 1)[0])
                                     if lazy.sum() >= 2 else float("nan"))  # a slope needs two lazy points
    result["lazy_over_meanfield_test_final"] = float(result["test_final"][-1] / result["test_final"][0])
    result["lazy_over_meanfield_test_best"] = float(result["test_best"][-1] / result["test_best"][0])
    result["equivalence_error"] = max(equivalence_error(cfg, float(grid[0])), equivalence_error(cfg, float(grid[-1])))
    return result


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 4, size=(4.0, 3.6))
    tau = result["tau"]
    ax = axes[0, 0]
    ax.loglog(tau, result["test_final"], "o-", label="test loss, end of training")
    ax.loglog(tau, result["test_best"], "s--", label="test loss, best along training")
    ax.axhline(result["zero_predictor_test_loss"], color="gray", lw=0.8, ls="-.", label="f = 0 (initial)")
    ax.set_xlabel(r"initial scale $\tau$ ($\alpha = \tau^2$)")
    ax.set_ylabel(r"test loss $\frac{1}{2}$ mean square")
    ratio = result["lazy_over_meanfield_test_final"]
    ax.set_title(f"test loss, $\\tau$ = {tau[-1]:g} over $\\tau$ = {tau[0]:g}: {ratio:.0f}x", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)

    # the train loss (down to 1e-20 at small tau) in a panel of its own: on the test loss's axis it
    # squeezed the test curves, the claim, into the top tenth of the panel
    ax = axes[0, 1]
    ax.loglog(tau, result["train_final"], "^:", color="C2")
    ax.set_xlabel(r"initial scale $\tau$ ($\alpha = \tau^2$)")
    ax.set_ylabel(r"train loss $\frac{1}{2}$ mean square")
    ax.set_title("train loss, end of training", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)

    ax = axes[0, 2]
    ax.loglog(tau, result["weight_change"], "o-", label="measured")
    lazy = tau >= cfg.lazy_tau * (1 - 1e-12)
    ref = result["weight_change"][lazy][-1] * (tau[lazy] / tau[lazy][-1]) ** -2.0
    ax.loglog(tau[lazy], ref, "k--", lw=1, label=r"$\tau^{-2}$")
    ax.set_xlabel(r"initial scale $\tau$")
    ax.set_ylabel(r"$|\theta_T - \theta_0| / |\theta_0|$")
    ax.set_title(f"relative weight change: fitted slope {result['weight_change_slope']:.2f} "
                 f"($\\tau \\geq {cfg.lazy_tau:g}$)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)

    ax = axes[0, 3]
    colours = [__import__("matplotlib").cm.viridis(v) for v in np.linspace(0, 0.9, tau.size)]
    for i, c in enumerate(colours):
        steps = np.maximum(result[f"test_steps_{i}"], 1)
        ax.loglog(steps, result[f"test_curve_{i}"], color=c, lw=1.2, label=rf"$\tau$ = {tau[i]:.2g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("test loss")
    ax.set_title("test loss along training", fontsize=9)
    ax.legend(fontsize=6.5, ncol=2)
    ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"Lazy vs mean-field training (Chizat, Oyallon & Bach 2019, Fig. 2): d = {cfg.d}, n = {cfg.n}, "
                 f"m = {cfg.m}, {cfg.iterations} GD iterations, "
                 f"step min({cfg.max_step:g}, {cfg.step_scale:g}/$\\tau^2$)",
                 fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
