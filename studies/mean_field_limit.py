"""Mean-field limit: risk curves of widths 10^2 ... 10^5 collapse onto one curve, with m^(-1/2) fluctuations.

Claim (Mei, Montanari & Nguyen 2018, "A mean field view of the landscape of two-layer neural
networks", PNAS, arXiv:1804.06561, Theorem 3; Chizat & Bach 2018, arXiv:1805.09545, Sec. 2.2;
Sirignano & Spiliopoulos 2020 for the central limit theorem of the fluctuations): with gamma = 1/m
and the step eta * m on each particle, gradient descent from m i.i.d. particles follows, over a
bounded time interval, the Wasserstein gradient flow of the particles' law; the risk R_m(t) and the
empirical measure mu_m(t) of the particles differ from their m -> infinity limits by O(m^{-1/2}).

Setting. Teacher f* with 5 relu neurons in d = 10 (unit directions uniform on S^9, signs +-1,
gamma = 1); empirical square risk R = 1/(2n) sum_i (f(x_i) - f*(x_i))^2 on n = 500 fixed samples
x_i ~ N(0, I_10) (:class:`shallow.flows.EmpiricalRisk`, cost O(n m d) per step: the population risk
costs O(m^2 d), out of reach on a CPU at m = 10^5; with the data fixed, the mean-field limit is the
flow of this empirical risk). Particles (a_j, w_j) i.i.d.: w_j uniform on S^9, a_j = +-|w_j|
(balanced, random signs); the same law for every width. Forward Euler with eta = 0.5 on the
mean-field time scale, 100 steps (t = 50, when the relative risk has dropped to about 1e-2): the
discrete flow is the same for every m, so its own m -> infinity limit is what the widths approach.

The reference is one run at m_ref = 10^5 particles. A width-m run r (m in 10^2 ... 3 10^4) takes the
particles r m ... (r + 1) m - 1 of the reference's initial draw: an i.i.d. sample of the same law,
which also couples each of its particles with one particle of the reference (runs per width:
min(8, m_ref / m)). Measured, against m:

* the risk deviation max_t |R_m(t) - R_ref(t)| / R_0 (R_0 = risk of the zero network), averaged
  over runs. To first order R_m - R_ref is a linear functional of mu_m - mu_ref, and with a width-m
  run being a block of the reference's particles its variance is proportional to 1/m - 1/m_ref: the
  slope is fitted against m_eff = (1/m - 1/m_ref)^{-1} (expected -1/2). Also the spread of R_m(t)
  over the runs (max over t of the standard deviation; disjoint blocks, so fitted against m);
* the distance between the particle measures at t = 50, lifted particles theta_j = (a_j, w_j) in
  R^11: the sliced W2 distance SW2(mu_m(t), mu_ref(t)) (POT, 50 directions, via
  :func:`shallow.measures.sliced_wasserstein`; exact W2 between 10^4 and 10^5 particles is out of
  reach) at t = 50 and at t = 0 (the sampling floor); and the exact W2 (POT's network simplex, via
  :func:`shallow.measures.wasserstein`) between mu_m(t) and the reference's particles with the same
  initial positions, a propagation-of-chaos distance that is 0 at t = 0, for m <= 1000.

What we measured (defaults): the curves collapse (at t = 50 the reference's relative risk is 5.8e-3);
risk-deviation slope -0.55 and spread slope -0.58 (expected -1/2; at m = 100 the O(1/m) mean
shift adds to the O(m^{-1/2}) fluctuation); SW2 slope -0.47 at t = 50 against -0.49 at t = 0, the
flow multiplying the initial sampling distance by at most 1.9; coupled exact W2 slope -0.48. With
--quick (3 widths, reference 5000, t = 30): slopes -0.57, -0.65, -0.60 and -0.43.

Runtime: about 4-5 minutes of one CPU core by the per-step costs (the 10^5-particle reference is
a third of it); measured 640 s of CPU time (34 min wall) on a 2-core machine shared with other
jobs, and 342 s of CPU time (268 s wall with 2 workers) in the gallery rerun of commit 37e81e5.
--quick: about 3 s. The flows are the points of a grid (:func:`shallow.study.run_grid`): they
run on the ``--workers``, and a run stopped by Ctrl-C keeps the flows it finished (the same command
resumes). ``--device gpu`` runs the flows with CuPy (the OT distances run on the host).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer, check_positive
from shallow.backend import to_device, to_numpy
from shallow.flows import EmpiricalRisk, gradient_flow
from shallow.measures import sliced_wasserstein, wasserstein
from shallow.networks import TwoLayer


@dataclasses.dataclass(frozen=True)
class Config:
    d: int = 10
    teacher_width: int = 5
    n: int = 500  # samples of the empirical risk
    widths: tuple = (100, 300, 1000, 3000, 10_000, 30_000)
    reference_width: int = 100_000
    runs: int = 8  # per width, at most reference_width // m (disjoint blocks of the reference's draw)
    steps: int = 100
    step_size: float = 0.5
    init_scale: float = 1.0
    n_projections: int = 50  # directions of the sliced W2
    w2_runs: int = 4  # runs per width whose particle measures are compared (OT is the slow part)
    exact_w2_max: int = 1000  # exact W2 (POT network simplex) for widths up to this
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the reference run."""
        check_dimension(self.d, "d")  # teacher and student directions on S^{d-1}
        for name in ("teacher_width", "n", "runs", "steps", "n_projections", "w2_runs"):
            check_integer(getattr(self, name), name, minimum=1)
        if self.w2_runs > self.runs:  # it was capped at runs without a word
            raise ValueError(f"w2_runs must be at most runs={self.runs} (the runs whose measures are compared), "
                             f"got {self.w2_runs}")
        check_integer(self.exact_w2_max, "exact_w2_max", minimum=0)
        check_positive(self.step_size, "step_size")
        check_positive(self.init_scale, "init_scale")
        study.check_grid(self.widths, "widths")
        if check_integer(self.reference_width, "reference_width", minimum=2) < 2 * max(self.widths):
            raise ValueError(f"reference_width={self.reference_width} must be at least twice the largest width "
                             f"{max(self.widths)}: it holds the runs' disjoint blocks of particles")


QUICK = {"widths": (100, 300, 1000), "reference_width": 5000, "runs": 8, "w2_runs": 2, "steps": 60, "n": 300}


#: The Config fields a flow needs (the others choose which flows to run, or judge them).
RUN_FIELDS = ("d", "teacher_width", "n", "reference_width", "steps", "step_size", "init_scale", "seed", "device")


def _setup(d, teacher_width, n, reference_width, init_scale, seed, device):
    """Teacher, data, loss, and the reference's initial particles (all on ``device``)."""
    rng = np.random.default_rng([seed, 0])
    t = TwoLayer.init(teacher_width, d, weights="sphere", a_init="sign", rng=rng, device=device)
    teacher = TwoLayer(t.a, t.W, gamma=1.0)
    X = to_device(np.random.default_rng([seed, 1]).standard_normal((n, d)), device)  # (n, d)
    y = teacher(X)  # (n,)
    R0 = 0.5 * float((y * y).mean())  # risk of the zero network
    init = TwoLayer.init(reference_width, d, weights="sphere", a_init="balanced",
                         rng=np.random.default_rng([seed, 2]), device=device)
    return EmpiricalRisk(X, y), R0, init_scale * init.a, init_scale * init.W


def _slope(m, values):
    ok = np.isfinite(values) & (values > 0)
    return float(np.polyfit(np.log(m[ok]), np.log(values[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")


def run_point(point: dict) -> dict:
    """One flow (a grid point of :func:`shallow.study.run_grid`): run ``run`` of width m, the particles
    run m ... (run + 1) m - 1 of the reference's initial draw (the reference itself: m = reference_width)."""
    loss, R0, a0, W0 = _setup(**{name: point[name] for name in RUN_FIELDS if name not in ("steps", "step_size")})
    m, r = point["m"], point["run"]
    block = slice(r * m, (r + 1) * m)
    traj = gradient_flow(TwoLayer(a0[block], W0[block]), loss, point["steps"], point["step_size"],
                         record_every=1)  # gamma = 1/m, time scale m
    theta = np.concatenate([traj.a[:, None], traj.W], axis=1)  # (m, 1 + d) at the final time
    return {"times": traj.times, "relative_risk": traj.risks / R0, "theta": theta, "R0": R0}


def compute(cfg: Config) -> dict:
    M = cfg.reference_width
    common = {name: getattr(cfg, name) for name in RUN_FIELDS}
    points = [dict(common, m=M, run=0)]  # the reference first
    points += [dict(common, m=int(m), run=r) for m in cfg.widths for r in range(min(cfg.runs, M // m))]
    done = study.run_grid(run_point, points, desc="mean_field_limit runs")
    ref, R0 = done[0], done[0]["R0"]
    _, _, a0, W0 = _setup(**{name: getattr(cfg, name) for name in RUN_FIELDS if name not in ("steps", "step_size")})
    ref_theta0 = np.concatenate([to_numpy(a0)[:, None], to_numpy(W0)], axis=1)  # (M, 1 + d)
    ref_theta = ref["theta"]
    result = {"widths": np.asarray(cfg.widths), "R0": R0, "times": ref["times"],
              "relative_risk_reference": ref["relative_risk"]}
    risks = {m: [] for m in cfg.widths}
    sw_final = {m: [] for m in cfg.widths}
    sw_start = {m: [] for m in cfg.widths}
    w2_coupled = {m: [] for m in cfg.widths}
    coupling = {m: [] for m in cfg.widths}
    for point, out in zip(points[1:], done[1:]):
        m, r = point["m"], point["run"]
        block = slice(r * m, (r + 1) * m)
        theta = out["theta"]
        risks[m].append(out["relative_risk"])
        coupling[m].append(float(np.sqrt(((theta - ref_theta[block]) ** 2).sum(axis=1).mean())))
        if r < cfg.w2_runs:
            sw_final[m].append(sliced_wasserstein(theta, ref_theta, n_projections=cfg.n_projections,
                                                  rng=cfg.seed))
            sw_start[m].append(sliced_wasserstein(ref_theta0[block], ref_theta0, n_projections=cfg.n_projections,
                                                  rng=cfg.seed))
            if m <= cfg.exact_w2_max:
                w2_coupled[m].append(wasserstein(theta, ref_theta[block]))
    ref_curve = ref["relative_risk"]
    widths = np.asarray(cfg.widths, dtype=float)
    # A width-m run is a block of the reference's particles: to first order R_m - R_ref is a linear
    # functional of mu_m - mu_ref = (1 - m/M)(mu_m - mu_rest), whose variance is (1/m - 1/M) times that
    # of one particle. So the gaps to the reference are fitted against m_eff = (1/m - 1/M)^{-1}; the
    # spread over runs (disjoint, independent blocks) against m itself.
    m_eff = 1.0 / (1.0 / widths - 1.0 / M)
    result["effective_widths"] = m_eff
    keys = ("deviation", "deviation_std", "fluctuation", "sw2_final", "sw2_final_std", "sw2_start",
            "w2_coupled", "coupling")
    stats = {k: [] for k in keys}
    for m in cfg.widths:
        curves = np.asarray(risks[m])  # (runs, records)
        result[f"relative_risk_m{m}"] = curves
        dev = np.abs(curves - ref_curve).max(axis=1)  # (runs,)
        stats["deviation"].append(dev.mean())
        stats["deviation_std"].append(dev.std(ddof=1) if dev.size > 1 else np.nan)
        stats["fluctuation"].append(curves.std(axis=0, ddof=1).max() if curves.shape[0] > 1 else np.nan)
        stats["sw2_final"].append(np.mean(sw_final[m]))
        stats["sw2_final_std"].append(np.std(sw_final[m], ddof=1) if len(sw_final[m]) > 1 else np.nan)
        stats["sw2_start"].append(np.mean(sw_start[m]))
        stats["w2_coupled"].append(np.mean(w2_coupled[m]) if w2_coupled[m] else np.nan)
        stats["coupling"].append(np.mean(coupling[m]))
        result[f"runs_m{m}"] = int(curves.shape[0])
    for k, v in stats.items():
        result[k] = np.asarray(v, dtype=float)
    for k in ("deviation", "sw2_final", "sw2_start", "w2_coupled", "coupling"):
        result[f"slope_{k}"] = _slope(m_eff, result[k])
    result["slope_fluctuation"] = _slope(widths, result["fluctuation"])
    result["max_sw2_ratio"] = float(np.max(result["sw2_final"] / result["sw2_start"]))
    result["final_relative_risk_reference"] = float(ref_curve[-1])
    return result


def plot(result: dict, cfg: Config):
    from matplotlib import colormaps

    fig, axes = study.new_figure(1, 4, size=(4.4, 3.9))
    widths = np.asarray(cfg.widths, dtype=float)
    cmap = colormaps["viridis"]
    colours = {m: cmap(0.9 * i / max(1, len(widths) - 1)) for i, m in enumerate(cfg.widths)}
    t, ref = result["times"], result["relative_risk_reference"]

    ax = axes[0, 0]
    for m in cfg.widths:
        curves = result[f"relative_risk_m{m}"]
        for i, curve in enumerate(curves):
            ax.semilogy(t, curve, color=colours[m], lw=0.8, alpha=0.6, label=f"m = {m:,}" if i == 0 else None)
    ax.semilogy(t, ref, "k--", lw=1.4, label=f"reference m = {cfg.reference_width:,}")
    ax.set_xlabel("flow time t (mean-field scale)")
    ax.set_ylabel(r"relative risk $R_m(t)/R_0$")
    ax.set_title("risk curves (one line per run)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    for m in cfg.widths:
        gap = np.abs(result[f"relative_risk_m{m}"] - ref).mean(axis=0)
        ax.semilogy(t[1:], gap[1:], color=colours[m], lw=1.3, label=f"m = {m:,}")
    ax.set_xlabel("flow time t")
    ax.set_ylabel(r"$|R_m(t) - R_{ref}(t)| / R_0$ (mean over runs)")
    ax.set_title("gap to the reference curve")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)

    M = cfg.reference_width
    predicted = np.sqrt(1.0 / widths - 1.0 / M)  # first-order law of a gap to the nested reference

    def guide(ax, values, shape, text):
        ok = np.isfinite(values) & (values > 0)
        scale = np.exp(np.mean(np.log(values[ok] / shape[ok])))  # least-squares fit of the constant
        ax.loglog(widths, 1.8 * scale * shape, color="0.45", ls=":", lw=1.2, label=text)

    ax = axes[0, 2]
    ax.errorbar(widths, result["deviation"], yerr=result["deviation_std"], fmt="o-", color="C3", capsize=3,
                label=rf"$\max_t |R_m - R_{{ref}}|$: slope {result['slope_deviation']:.2f} against $m_{{eff}}$")
    ax.loglog(widths, result["fluctuation"], "s--", color="C0",
              label=f"spread over runs (max std): slope {result['slope_fluctuation']:.2f}")
    guide(ax, result["deviation"], predicted, r"$\propto (1/m - 1/m_{ref})^{1/2}$ (x 1.8)")
    ax.set_xlabel("width m")
    ax.set_ylabel(r"relative risk gap ($/R_0$)")
    ax.set_title("risk: distance to the large-m limit")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower left")

    ax = axes[0, 3]
    ax.loglog(widths, result["w2_coupled"], "D-", color="C1",
              label=rf"exact $W_2$ to the ref.'s same particles: slope {result['slope_w2_coupled']:.2f}")
    ax.errorbar(widths, result["sw2_final"], yerr=result["sw2_final_std"], fmt="o-", color="C4", capsize=3,
                label=rf"SW$_2(\mu_m, \mu_{{ref}})$ at t = {t[-1]:g}: slope {result['slope_sw2_final']:.2f}")
    ax.loglog(widths, result["sw2_start"], "o--", color="C4", mfc="none", alpha=0.7,
              label=f"SW$_2$ at t = 0 (sampling): slope {result['slope_sw2_start']:.2f}")
    guide(ax, result["sw2_final"], predicted, r"$\propto (1/m - 1/m_{ref})^{1/2}$ (x 1.8)")
    ax.set_xlabel("width m")
    ax.set_ylabel(r"distance between the measures of the $(a_j, w_j)$")
    ax.set_title(f"particles at t = {t[-1]:g} (slopes against $m_{{eff}}$)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower left")
    from matplotlib.ticker import NullFormatter

    for ax in axes[0, 2:]:
        ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"Mean-field limit: teacher with {cfg.teacher_width} relu neurons in d = {cfg.d}, empirical "
                 f"risk on n = {cfg.n} samples, i.i.d. particles, gamma = 1/m, Euler eta = {cfg.step_size:g}")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
