"""Global convergence: from m ~ 10-20 neurons on, gradient flow fits a 5-neuron relu teacher exactly.

Claim (Chizat & Bach 2018, "On the global convergence of gradient descent for over-parameterized
models using optimal transport", NeurIPS, arXiv:1805.09545, Theorem 3.3 and Sec. 4, Fig. 2-3): the
particle gradient flow of a wide two-layer relu network, started from a small and spread-out
initialisation, converges to a global minimiser of the risk; with few particles it may stall.

Setting. Teacher f*(x) = sum_{k<=5} a*_k relu(<w*_k, x>) in d = 20, with unit directions w*_k
uniform on S^19 and signs a*_k = +-1 (gamma = 1); a fresh teacher for every run index, shared by
all widths. Exact population square risk R = 1/2 E[(f - f*)^2] for x ~ N(0, I_20) (arc-cosine
kernel closed form, :class:`shallow.flows.PopulationRisk`, no sampling). Students of width m in
{5, 10, 20, 50, 100, 1000} at the mean-field scale gamma = 1/m: w_j uniform on S^19, a_j = +-|w_j|
(the balanced initialisation, which the flow keeps balanced), both multiplied by 0.1 (small
initialisation).
Forward Euler with time step eta = 0.5 on the mean-field time scale (each particle moves by
eta * m * its gradient, so the flow time t = steps * eta is the same for every m), up to t = 3000.
The figure draws the relative excess risk R(t) / R(0), R(0) = R of the zero network = 1/2 E[f*^2],
against t on log-log axes; the final relative risk of every run against m; and the fraction of runs
whose final relative risk is below the threshold 1e-5 against m.

What we measured (defaults, t = 3000): every run with m >= 20 converges (20/20 of m = 20, 20/20
of m = 50, 10/10 of m = 100, 2/2 of m = 1000), and 19/20 runs of m = 10 (one stalls at 2e-2); the
median final relative risk is 2e-9, 1e-8, 4e-8, 5e-7 and 9e-7 for m = 10, 20, 50, 100, 1000, all below 1e-6.
The exactly parametrised width m = 5 converges in 5/20 runs and stalls at 1e-2 to 3e-1 otherwise.
The stalls are essentially sign obstructions: along the flow a balanced particle keeps the sign of
a_j, so a student with fewer positive (negative) particles than the teacher has positive (negative)
neurons cannot fit it; the 4 runs of m = 5 whose signs cover the teacher's all converge, 1 of the
16 others does (the third panel reports these rates). Wider students converge more slowly at late
times (the relative risk decays polynomially in t while the particles that end on no teacher
direction shrink), which is why the convergence threshold is 1e-5 at t = 3000 rather than 1e-6: a
stalled run sits at least 3 orders of magnitude higher. With --quick (t = 1500): 1/8 runs of m = 5
converge (median 2e-2), every run of m = 20 and 100 does (medians 2e-7 and 3e-6).

"m ~ 10-20 suffices" belongs to this initialisation. Drawn as in Chizat and Bach's homogeneous setting,
theta_j = (a_j, w_j) uniform on a sphere of R^21 (``TwoLayer.init(m, 20, a_init="joint", weights="sphere")``
times 0.1, a_j no longer +-|w_j|), the same teacher
and flow stall at about 8e-2 of R(0) in 8 of 8 runs of m = 10 and in the runs of m = 100 up to
t = 6000 (RK4 alike), and converge at m = 1000 (1e-5 at t = 1000; session 17, by hand): the theorem's
condition on the support is asymptotic, and covering S^20 takes many particles.

The adaptive integrator (``--method adaptive``, Bogacki-Shampine 3(2)) reaches the same risks as
Euler but not faster: for m = 100 its step settles near 1 (stability-limited; Euler at eta = 1
already fails to converge), and it costs 3 risk evaluations per step: 8900 evaluations to t = 3000
at tol = 1e-4, against 6000 for Euler at eta = 0.5, for the same relative risk (1.4e-6 vs 1.5e-6).

Runtime: a population-risk step costs O(m^2 d) (12.5 ms at m = 1000, 0.35 ms at m = 100 on an idle
core), so the two m = 1000 runs (2 x 6000 steps) dominate: about 2.5 minutes of one core on an idle
machine; measured 5 min wall with --workers 2 on this 2-core machine (session 3), 6.8 min wall
(13.6 min of CPU) in the gallery rerun of commit 37e81e5 under load. With the former 30 ms steps
(before the kernel was computed in symmetric tiles) a run measured 25 min of CPU time (53 min wall)
on a 2-core machine shared with other jobs.
--quick (widths 5, 20, 100 with 8, 4, 4 runs up to t = 1500): about 10 s (12 s measured under the
same load; 6 s with 2 workers in session 15). Each run is a point of the study's grid: the runs are
spread over ``--workers`` and cached one by one, so an interrupted study resumes from the runs it
finished. ``--device gpu`` runs the flows with CuPy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer, check_positive
from shallow.backend import to_numpy
from shallow.flows import PopulationRisk, gradient_flow
from shallow.networks import TwoLayer

METHODS = ("euler", "rk4", "adaptive")  # those of shallow.flows.gradient_flow
METHOD_NAMES = {"euler": "Euler", "rk4": "RK4", "adaptive": "adaptive Bogacki-Shampine"}


@dataclasses.dataclass(frozen=True)
class Config:
    d: int = 20
    teacher_width: int = 5
    widths: tuple = (5, 10, 20, 50, 100, 1000)
    runs: tuple = (20, 20, 20, 20, 10, 2)  # runs (teacher and student seeds) per width
    steps: int = 6000
    step_size: float = 0.5  # Euler is stable up to ~0.8 here
    init_scale: float = 0.1
    method: str = "euler"
    threshold: float = 1e-5  # relative excess risk below which a run counts as converged
    record_every: int = 10
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the first runs."""
        check_dimension(self.d, "d")  # teacher and student directions on S^{d-1}
        check_integer(self.teacher_width, "teacher_width", minimum=1)
        study.check_grid(self.widths, "widths")
        for r in self.runs:
            check_integer(r, "runs", minimum=1)
        _runs_per_width(self)
        check_integer(self.steps, "steps", minimum=1)
        check_integer(self.record_every, "record_every", minimum=1)
        for name in ("step_size", "init_scale", "threshold"):
            check_positive(getattr(self, name), name)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")


QUICK = {"widths": (5, 20, 100), "runs": (8, 4, 4), "steps": 3000}


def teacher_network(cfg: Config, run: int) -> TwoLayer:
    """The teacher of run ``run``: unit directions on S^{d-1}, signs +-1, gamma = 1."""
    rng = np.random.default_rng([cfg.seed, run])
    net = TwoLayer.init(cfg.teacher_width, cfg.d, weights="sphere", a_init="sign", rng=rng, device=cfg.device)
    return TwoLayer(net.a, net.W, gamma=1.0)


def student_network(cfg: Config, m: int, run: int) -> TwoLayer:
    """The width-m student of run ``run``: balanced, directions uniform, scaled by init_scale."""
    rng = np.random.default_rng([cfg.seed, run, m])
    net = TwoLayer.init(m, cfg.d, weights="sphere", a_init="balanced", rng=rng, device=cfg.device)
    return TwoLayer(cfg.init_scale * net.a, cfg.init_scale * net.W)  # gamma = 1/m


def _runs_per_width(cfg: Config):
    runs = tuple(cfg.runs)
    if len(runs) == 1:
        runs = runs * len(cfg.widths)
    if len(runs) != len(cfg.widths):
        raise ValueError(f"runs has {len(runs)} entries but widths has {len(cfg.widths)}: one count per width "
                         "(or a single count for all)")
    return runs


#: The Config fields a run needs (the others choose which runs to make, or judge them).
RUN_FIELDS = ("d", "teacher_width", "steps", "step_size", "init_scale", "method", "record_every", "seed", "device")


def run_point(point: dict) -> dict:
    """One run (a grid point of :func:`shallow.study.run_grid`): a width-m student against teacher ``run``."""
    cfg = dataclasses.replace(Config(), **{name: point[name] for name in RUN_FIELDS})
    m, r = point["m"], point["run"]
    teacher = teacher_network(cfg, r)
    loss = PopulationRisk(teacher, input="gaussian")
    zero = TwoLayer(teacher.a[:1] * 0, teacher.W[:1], gamma=1.0)
    R0 = loss(zero)  # = 1/2 E[f*(x)^2], the risk of the zero network
    student = student_network(cfg, m, r)
    traj = gradient_flow(student, loss, cfg.steps, cfg.step_size, method=cfg.method, record_every=cfg.record_every)
    if cfg.method == "adaptive":  # adaptive steps: the curve resampled on the Euler record grid
        grid = np.arange(0, cfg.steps + 1, cfg.record_every) * cfg.step_size
        curve = np.interp(grid, traj.times, traj.risks) / R0
    else:
        grid, curve = traj.times, traj.risks / R0
    # can the student's signs cover the teacher's? (a_j keeps its sign along a balanced flow)
    a_s, a_t = to_numpy(student.a), to_numpy(teacher.a)
    cover = bool((a_s > 0).sum() >= (a_t > 0).sum() and (a_s < 0).sum() >= (a_t < 0).sum())
    return {"times": grid, "relative_risk": curve, "final": float(traj.risks[-1] / R0), "signs_cover": float(cover)}


def compute(cfg: Config) -> dict:
    runs = _runs_per_width(cfg)
    result = {"widths": np.asarray(cfg.widths), "runs": np.asarray(runs)}
    common = {name: getattr(cfg, name) for name in RUN_FIELDS}
    points = [dict(common, m=int(m), run=r) for m, n_runs in zip(cfg.widths, runs) for r in range(n_runs)]
    done = study.run_grid(run_point, points, desc="global_convergence runs")
    finals = {m: [] for m in cfg.widths}
    curves = {m: [] for m in cfg.widths}
    signs_cover = {m: [] for m in cfg.widths}
    for point, out in zip(points, done):
        finals[point["m"]].append(out["final"])
        curves[point["m"]].append(out["relative_risk"])
        signs_cover[point["m"]].append(bool(out["signs_cover"]))
    result["times"] = np.asarray(done[-1]["times"])
    fraction, median = [], []
    for m in cfg.widths:
        final = np.asarray(finals[m])
        result[f"relative_risk_m{m}"] = np.asarray(curves[m])  # (runs, records)
        result[f"final_relative_risk_m{m}"] = final
        result[f"signs_cover_m{m}"] = np.asarray(signs_cover[m])
        conv = final < cfg.threshold
        fraction.append(conv.mean())
        median.append(np.median(final))
        result[f"converged_fraction_m{m}"] = float(conv.mean())
        result[f"median_final_relative_risk_m{m}"] = float(np.median(final))
        result[f"mean_final_relative_risk_m{m}"] = float(final.mean())
        result[f"max_final_relative_risk_m{m}"] = float(final.max())
        cover = np.asarray(signs_cover[m])
        result[f"converged_fraction_signs_cover_m{m}"] = float(conv[cover].mean()) if cover.any() else float("nan")
        result[f"converged_fraction_signs_short_m{m}"] = float(conv[~cover].mean()) if (~cover).any() else float("nan")
    result["converged_fraction"] = np.asarray(fraction)
    result["median_final_relative_risk"] = np.asarray(median)
    result["final_time"] = float(result["times"][-1])
    return result


FLOOR = 1e-14  # relative risks below (exact fits, rounding) are drawn at the floor


def plot(result: dict, cfg: Config):
    from matplotlib import colormaps

    fig, axes = study.new_figure(1, 3, size=(4.8, 3.9))
    widths = list(cfg.widths)
    cmap = colormaps["viridis"]
    colours = {m: cmap(0.9 * i / max(1, len(widths) - 1)) for i, m in enumerate(widths)}
    t = result["times"]
    live = t > 0

    ax = axes[0, 0]
    for m in widths:
        curves = np.maximum(result[f"relative_risk_m{m}"], FLOOR)
        for curve in curves:
            ax.loglog(t[live], curve[live], color=colours[m], lw=0.6, alpha=0.3)
        ax.loglog(t[live], np.median(curves, axis=0)[live], color=colours[m], lw=2.0,
                  label=f"m = {m} ({curves.shape[0]} runs)")
    ax.axhline(cfg.threshold, color="k", ls="--", lw=0.8)
    ax.set_ylim(FLOOR / 3, 3)
    ax.set_xlabel("flow time t (mean-field scale)")
    ax.set_ylabel(r"relative excess risk $R(t)/R(0)$")
    ax.set_title("risk along the flow (bold: median over runs)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[0, 1]
    rng = np.random.default_rng(0)
    for m in widths:
        final = np.maximum(result[f"final_relative_risk_m{m}"], FLOOR)
        jitter = np.exp(rng.uniform(-0.12, 0.12, final.size))
        ax.scatter(m * jitter, final, s=14, color=colours[m], alpha=0.8, edgecolor="none")
    ax.loglog(widths, np.maximum(result["median_final_relative_risk"], FLOOR), "k-", lw=1, label="median")
    ax.axhline(cfg.threshold, color="k", ls="--", lw=0.8, label=f"threshold {cfg.threshold:g}")
    ax.axvline(cfg.teacher_width, color="0.6", ls=":", lw=1, label=f"teacher width {cfg.teacher_width}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 3, 3)
    ax.set_xlabel("student width m")
    ax.set_ylabel(f"relative excess risk at t = {result['final_time']:g}")
    ax.set_title(f"final risk of each run (floor {FLOOR:g})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[0, 2]
    frac = result["converged_fraction"]
    ax.semilogx(widths, frac, "o-", color="C3", lw=1.5)
    for m, f, n in zip(widths, frac, result["runs"]):
        ax.annotate(f"{int(round(f * n))}/{n}", (m, f), textcoords="offset points", xytext=(0, -13),
                    ha="center", fontsize=7)
    m0 = widths[0]
    cover = result.get(f"converged_fraction_signs_cover_m{m0}")
    short = result.get(f"converged_fraction_signs_short_m{m0}")
    if cover is not None:
        if np.isfinite(cover) and np.isfinite(short):
            text = (f"m = {m0}: converged {cover:.0%} of the runs with enough\nparticles of each sign, "
                    f"{short:.0%} of the others")
        elif np.isfinite(cover):
            text = f"m = {m0}: every run had enough particles of each sign"
        else:
            text = f"m = {m0}: no run had enough particles of each sign"
        ax.text(0.97, 0.06, text, transform=ax.transAxes, ha="right", fontsize=7)
    ax.axvline(cfg.teacher_width, color="0.6", ls=":", lw=1)
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlabel("student width m")
    ax.set_ylabel(f"fraction of runs with final relative risk < {cfg.threshold:g}")
    ax.set_title("runs that reach the global minimum")
    ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"Global convergence of the mean-field gradient flow: teacher with {cfg.teacher_width} relu "
                 f"neurons in d = {cfg.d}, exact population risk, {METHOD_NAMES[cfg.method]} "
                 f"({'first step' if cfg.method == 'adaptive' else 'step'} eta = {cfg.step_size:g})")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
