r"""Particle paths in the plane, lazy against mean-field: in the lazy regime the particles barely move.

Claim (Chizat, Oyallon and Bach 2019, "On lazy training in differentiable programming", NeurIPS,
arXiv:1812.07956, Sec. 2 and their two-dimensional illustrations; Chizat and Bach 2018,
arXiv:1805.09545, for the mean-field side): the same particles, trained on the same task through the
same function-space time, travel O(1) distances under the mean-field scale (alpha = 1), but move by
O(1/alpha) under the lazy scale alpha >> 1, where the network fits the target through its tangent
model instead (the risk still falls, with particles frozen).

The mean-field particles need not end on the teacher's neurons, and here about a tenth of their
mass does not (within 10 degrees of a teacher neuron of the same sign: 91%), though the risk falls to
1e-6 of its start: on the circle a bias-free relu network does not see the odd Fourier modes k >= 3
of its measure (relu(cos th) = (cos th + |cos th|)/2 has none), so the teacher's measure is not the
only global minimiser. Started near 0 instead, the flow does find the teacher (``particle_paths_2d``).

Setting. The 2-D task of ``particle_paths_2d``: x uniform on the circle S^1, exact population
square risk (:class:`shallow.flows.PopulationRisk`, ``input="sphere"``), teacher of 3 relu neurons at
20, 140 and 260 degrees with outer weights (+1, -1, +1). Student: m particles, centred (m/2 drawn with
w_j uniform on S^1 and a_j = |w_j| = 1, each duplicated with -a_j: f = 0 at the start), output scale
gamma = alpha/m (:func:`shallow.lazy.scaled` of the mean-field network). Both runs use the time
scale s = m/alpha^2 of :func:`shallow.flows.gradient_flow` (s = m, the mean-field time scale, at
alpha = 1): the tangent kernel is alpha^2 times the mean-field one, so s alpha^2 = m gives the two
runs the same function-space speed at the start (:mod:`shallow.lazy`'s docstring) and Euler steps of
the same size 0.5 for the same number of steps (t = 3000; --quick: t = 1000).

What is drawn. Particle j at |a_j| w_j (red a_j > 0, blue a_j < 0 at t = 0; the centred pairs start
on the same point) for the lazy run (left) and the mean-field run (middle), on the same axes; dotted
rays are the teacher's neurons. Right: relative risk R(t)/R(0) and relative weight change
|theta_t - theta_0| / |theta_0| of both runs. The claim is checked by the ratio of the weight
changes (expected about alpha, here lazy/mean-field < 3/alpha) and the largest particle displacement
of the lazy run (<< 1).

Runtime (one CPU core, loaded 2-core machine): --quick (m = 40, 2000 steps) about 2-4 s; the
defaults (m = 100, 6000 steps) took 4 s in the gallery's run (its sidecar's wall time; the cost grows
like m^2 steps for the exact population risk).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_positive
from shallow.flows import PopulationRisk, gradient_flow
from shallow.lazy import centered, relative_weight_change, scaled
from shallow.networks import TwoLayer


@dataclasses.dataclass(frozen=True)
class Config:
    teacher_angles: tuple = (20.0, 140.0, 260.0)  # degrees
    teacher_signs: tuple = (1.0, -1.0, 1.0)
    m: int = 100  # particles in all (m/2 centred pairs)
    alpha: float = 30.0  # the lazy run's output scale (the mean-field run has alpha = 1)
    steps: int = 6000
    step_size: float = 0.5
    record_every: int = 5
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the flows."""
        study.check_teacher_2d(self.teacher_angles, self.teacher_signs)
        if check_integer(self.m, "m", minimum=2) % 2:
            raise ValueError(f"m must be even (m/2 centred pairs), got {self.m}")
        if not 1 <= check_positive(self.alpha, "alpha") <= 1e8:
            # the lazy scale alpha >= 1 (alpha = 1 is the mean-field run); the particles move by about 1/alpha, which
            # from alpha ~ 1e16 on is below the rounding of a_j ~ 1 (the lazy run stood still, and its weight change
            # 0 passed the check); 1e8 leaves them 8 digits (1e300 overflowed in alpha**2)
            raise ValueError(f"alpha must lie in [1, 1e8] (the lazy run's output scale), got {self.alpha!r}")
        check_integer(self.steps, "steps", minimum=1)
        check_positive(self.step_size, "step_size")
        check_integer(self.record_every, "record_every", minimum=1)


QUICK = {"m": 40, "steps": 2000}
HOST_ONLY = "at most a hundred particles in the plane: steps far too small for a GPU"


def teacher_network(cfg) -> TwoLayer:
    angles = np.deg2rad(np.asarray(cfg.teacher_angles, dtype=float))
    W = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (3, 2)
    return TwoLayer(np.asarray(cfg.teacher_signs, dtype=float), W, gamma=1.0)


def run(cfg, alpha: float, start: TwoLayer, loss):
    net0 = scaled(start, alpha)  # gamma = alpha / m
    s = cfg.m / alpha**2
    traj = gradient_flow(net0, loss, cfg.steps, cfg.step_size, time_scale=s, record_every=cfg.record_every,
                         snapshot_particles=-1)
    changes = np.array([relative_weight_change(net0, traj.snapshots_a[i], traj.snapshots_W[i])
                        for i in range(traj.times.size)])  # (records,)
    paths = np.abs(traj.snapshots_a)[:, :, None] * traj.snapshots_W  # (records, m, 2): |a_j| w_j
    # max_j |theta_j - theta0_j|: the longest distance a particle travelled from its start
    displacement = np.sqrt((traj.a - net0.a) ** 2 + np.sum((traj.W - net0.W) ** 2, axis=1)).max()
    return traj, changes, paths, relative_weight_change(net0, traj.a, traj.W), float(displacement)


def compute(cfg: Config) -> dict:
    teacher = teacher_network(cfg)
    loss = PopulationRisk(teacher, input="sphere")
    R0 = loss(TwoLayer(teacher.a[:1] * 0, teacher.W[:1], gamma=1.0))  # risk of the zero network
    half = TwoLayer.init(cfg.m // 2, 2, weights="sphere", a_init="balanced", rng=cfg.seed)  # |a_j| = |w_j| = 1
    start = centered(half, gamma=1.0 / cfg.m)  # mean-field scale; f = 0
    result = {"teacher_directions": teacher.W, "signs": np.sign(start.a), "R0": float(R0)}
    for tag, alpha in (("lazy", cfg.alpha), ("meanfield", 1.0)):
        traj, changes, paths, final_change, displacement = run(cfg, alpha, start, loss)
        result[f"times_{tag}"] = traj.times
        result[f"relative_risk_{tag}"] = traj.risks / R0
        result[f"weight_change_path_{tag}"] = changes
        result[f"paths_{tag}"] = paths
        result[f"weight_change_{tag}"] = final_change
        result[f"final_relative_risk_{tag}"] = float(traj.risks[-1] / R0)
        result[f"max_particle_displacement_{tag}"] = displacement
    result["weight_change_ratio"] = result["weight_change_lazy"] / result["weight_change_meanfield"]
    return result


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 3, size=(4.2, 4.0))
    lim = 1.15 * max(np.abs(result["paths_lazy"]).max(), np.abs(result["paths_meanfield"]).max())
    signs = result["signs"]
    for ax, tag, title in ((axes[0, 0], "lazy", rf"lazy: $\alpha$ = {cfg.alpha:g}"),
                           (axes[0, 1], "meanfield", r"mean field: $\alpha$ = 1")):
        paths = result[f"paths_{tag}"]
        for u in result["teacher_directions"]:
            ax.plot([0, lim * u[0]], [0, lim * u[1]], "k:", lw=0.8)
        for j in range(paths.shape[1]):
            c = "C3" if signs[j] > 0 else "C0"
            ax.plot(paths[:, j, 0], paths[:, j, 1], "-", color=c, lw=0.7, alpha=0.7)
            ax.plot(paths[0, j, 0], paths[0, j, 1], "o", color=c, ms=2.5, mfc="none", mew=0.6)
            ax.plot(paths[-1, j, 0], paths[-1, j, 1], "o", color=c, ms=2.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel(r"$|a_j| w_j$ (first coordinate)")
        ax.set_title(f"{title}: weight change {result[f'weight_change_{tag}']:.2g}, "
                     f"R/R0 = {result[f'final_relative_risk_{tag}']:.1e}", fontsize=8)
    axes[0, 0].set_ylabel("second coordinate")
    axes[0, 1].text(0.02, 0.02, "open: start, filled: end,\ndotted: teacher neurons",
                    transform=axes[0, 1].transAxes, fontsize=7)
    ax = axes[0, 2]
    for tag, c, lab in (("lazy", "C1", rf"lazy ($\alpha$ = {cfg.alpha:g})"), ("meanfield", "C2", "mean field")):
        t = np.maximum(result[f"times_{tag}"], cfg.step_size)
        ax.loglog(t, result[f"relative_risk_{tag}"], "-", color=c, label=f"{lab}: R(t)/R(0)")
        ax.loglog(t[1:], result[f"weight_change_path_{tag}"][1:], "--", color=c,
                  label=rf"{lab}: $|\theta_t - \theta_0|/|\theta_0|$")
    ax.set_xlabel("flow time t (mean-field units)")
    ax.set_ylabel(r"risk $R(t)/R(0)$ (solid), weight change $|\theta_t - \theta_0|/|\theta_0|$ (dashed)", fontsize=8)
    ax.set_title(f"weight change ratio lazy / mean field = {result['weight_change_ratio']:.3f} "
                 rf"($1/\alpha$ = {1 / cfg.alpha:.3f})", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"Lazy vs mean-field particle paths in d = 2 (m = {cfg.m}, centred, population risk on the circle)",
                 fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
