"""Particle paths in the plane: started near 0, the particles of a wide network move onto the teacher's neurons.

Claim (Chizat & Bach 2018, "On the global convergence of gradient descent for over-parameterized
models using optimal transport", NeurIPS, arXiv:1805.09545, Sec. 4 and Fig. 2; the d = 2 animations
of the paper's web page): for a two-layer relu network in d = 2 trained by the mean-field gradient
flow from a small spread-out initialisation, the particles leave the neighbourhood of 0, split by
the sign of their outer weight, and gather on the directions of the teacher's neurons; the risk goes
to 0 and the network's measure on the circle converges to the teacher's sparse measure.

Setting. Inputs x uniform on the circle S^1 (no bias), exact population square risk
(:class:`shallow.flows.PopulationRisk` with ``input="sphere"``). Teacher: 3 relu neurons
f*(x) = sum_k a*_k relu(<w*_k, x>) with unit w*_k at 20, 140 and 260 degrees and a* = (+1, -1, +1).
Student: m = 100 particles at the mean-field scale gamma = 1/m, w_j i.i.d. uniform on S^1 and
a_j = +-|w_j| (balanced, random signs), all multiplied by 0.05. Forward Euler, time step 1 on the
mean-field time scale (each particle moves by eta * m * its gradient), up to t = 10^4.

What is drawn. Particle j at |a_j| w_j: the direction w_j/|w_j| of its neuron and the radius
|a_j||w_j| = m * (its mass gamma |a_j||w_j| in the measure mu = sum_j gamma a_j |w_j| delta_{w_j/|w_j|}
of :func:`shallow.measures.network_to_measure`); red for a_j > 0, blue for a_j < 0 at t = 0 (the
exact flow never changes the sign of a balanced particle; see below for Euler). The teacher's
neurons are the dotted rays: mu* is supported on them, and a particle path ending on a ray of its
own colour is a particle that found a teacher neuron (the radius it ends at depends on how many
particles share that neuron). The right panels give
the relative risk R(t)/R(0) (R(0) = risk of the zero network), the W2 distance between the
normalised positive parts of mu_t and mu* and between their negative parts (POT, exact, through
:func:`shallow.measures.wasserstein`, chord metric on the circle), the fraction of each teacher
neuron's mass a*_k that the student carries within 10 degrees of w*_k with the same sign, and the
stray mass (the student's total variation outside those cones, over the teacher's).

What we measured (defaults): relative risk 4e-9 at t = 10^4 (8e-8 at t = 3000 with --quick);
each teacher neuron's mass recovered to 2e-5 inside its 10-degree cone; stray mass 2e-8 of the
teacher's total variation; W2 of the positive parts 6e-3 and of the negative parts 2e-4 (the
particles on a teacher ray still spread over a fraction of a degree: their angle converges
polynomially in t, like the risk). The particles first grow along the correlation of the residual
(the red ones towards the mean direction of the two positive neurons) and only then split between
the neurons. Euler conserves the balance a_j^2 - |w_j|^2 only approximately: 4 tiny particles of
the wrong sign overshoot 0 while they shrink (around t = 20, the decaying mode is stiff at eta = 1)
and flip their sign; they end with masses below 1e-5 of the others' (eta = 0.25 has no flips).

Runtime on one CPU core: about 8 s with the defaults (6.2 s in the gallery's run, its sidecar's wall
time; 14 s in an earlier run under load) and 4 s with --quick (m = 50 up to t = 3000),
measured on a 2-core machine shared with other jobs; a third of it is the W2 distances (one small
exact OT problem per record).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_positive
from shallow.backend import to_device
from shallow.flows import PopulationRisk, gradient_flow
from shallow.measures import wasserstein
from shallow.networks import TwoLayer


@dataclasses.dataclass(frozen=True)
class Config:
    teacher_angles: tuple = (20.0, 140.0, 260.0)  # degrees
    teacher_signs: tuple = (1.0, -1.0, 1.0)
    m: int = 100
    init_scale: float = 0.05
    steps: int = 10_000
    step_size: float = 1.0
    record_every: int = 10  # from t = 50 eta on; every step before, every 50 from t = 5000 eta
    cone_angle: float = 10.0  # degrees: student mass within this angle of w*_k counts for neuron k
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the flow or its diagnostics."""
        study.check_teacher_2d(self.teacher_angles, self.teacher_signs)
        check_integer(self.m, "m", minimum=1)
        check_positive(self.init_scale, "init_scale")
        check_integer(self.steps, "steps", minimum=1)
        check_positive(self.step_size, "step_size")
        check_integer(self.record_every, "record_every", minimum=1)
        if not check_positive(self.cone_angle, "cone_angle") <= 180:
            raise ValueError(f"cone_angle must lie in (0, 180] degrees, got {self.cone_angle!r}")


QUICK = {"m": 50, "steps": 3000}


def teacher_network(cfg: Config) -> TwoLayer:
    angles = np.deg2rad(np.asarray(cfg.teacher_angles, dtype=float))
    W = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (3, 2)
    a = np.asarray(cfg.teacher_signs, dtype=float)  # (3,)
    return TwoLayer(to_device(a, cfg.device), to_device(W, cfg.device), gamma=1.0)


def measure_diagnostics(a, W, gamma, a_star, W_star, cone):
    """Cone masses, stray mass and W2 of the +/- parts between a network's measure and the teacher's.

    a (m,), W (m, 2) on the host; a_star (k,), W_star (k, 2) unit rows; cone in radians.
    Returns (captured (k,): student mass of the right sign within the cone of w*_k over a*_k;
    stray: student total variation outside those cones over the teacher's; w2_pos, w2_neg).
    """
    norms = np.linalg.norm(W, axis=1)  # (m,)
    keep = norms > 0
    mass = gamma * a[keep] * norms[keep]  # (m',): signed masses of mu
    U = W[keep] / norms[keep, None]  # (m', 2): atoms of mu
    cos = np.clip(U @ W_star.T, -1, 1)  # (m', k)
    inside = (np.arccos(cos) < cone) & (np.sign(mass)[:, None] == np.sign(a_star)[None, :])
    captured = (mass[:, None] * inside).sum(axis=0) / a_star  # (k,)
    stray = np.abs(mass[~inside.any(axis=1)]).sum() / np.abs(a_star).sum()
    w2 = []
    for sign in (1, -1):
        s_mask, t_mask = sign * mass > 0, sign * a_star > 0
        if not s_mask.any() or not t_mask.any():
            w2.append(np.nan)
            continue
        ws, wt = np.abs(mass[s_mask]), np.abs(a_star[t_mask])
        w2.append(wasserstein(U[s_mask], W_star[t_mask], mu_weights=ws / ws.sum(), nu_weights=wt / wt.sum()))
    return captured, float(stray), w2[0], w2[1]


def compute(cfg: Config) -> dict:
    teacher = teacher_network(cfg)
    loss = PopulationRisk(teacher, input="sphere")
    R0 = loss(TwoLayer(teacher.a[:1] * 0, teacher.W[:1], gamma=1.0))  # risk of the zero network
    init = TwoLayer.init(cfg.m, 2, weights="sphere", a_init="balanced", rng=cfg.seed, device=cfg.device)
    student = TwoLayer(cfg.init_scale * init.a, cfg.init_scale * init.W)  # gamma = 1/m
    # Record densely while the particles move fast (early), sparsely later: the same flow, resumed
    # with a coarser record_every at steps 10 x record_every and 100 x record_every.
    traj, done = None, 0
    for every, until in ((max(1, cfg.record_every // 10), cfg.record_every * 50),
                         (cfg.record_every, cfg.record_every * 500), (cfg.record_every * 5, cfg.steps)):
        until = min(until, cfg.steps)
        if until > done:
            traj = gradient_flow(student, loss, until - done, cfg.step_size, record_every=every,
                                 snapshot_particles=-1, resume=traj)
            done = until
    a_star = np.asarray(cfg.teacher_signs, dtype=float)
    angles = np.deg2rad(np.asarray(cfg.teacher_angles, dtype=float))
    W_star = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    cone = np.deg2rad(cfg.cone_angle)
    records = traj.times.size
    captured = np.zeros((records, a_star.size))
    stray, w2_pos, w2_neg = np.zeros(records), np.zeros(records), np.zeros(records)
    for i in range(records):
        captured[i], stray[i], w2_pos[i], w2_neg[i] = measure_diagnostics(
            traj.snapshots_a[i], traj.snapshots_W[i], student.gamma, a_star, W_star, cone)
    paths = np.abs(traj.snapshots_a)[:, :, None] * traj.snapshots_W  # (records, m, 2): |a_j| w_j
    return {
        "times": traj.times,
        "relative_risk": traj.risks / R0,
        "paths": paths,
        "signs": np.sign(traj.snapshots_a[0]),
        "captured_mass": captured,  # (records, 3)
        "stray_mass": stray,
        "w2_positive": w2_pos,
        "w2_negative": w2_neg,
        "teacher_directions": W_star,
        "final_relative_risk": float(traj.risks[-1] / R0),
        "final_captured_mass_error": float(np.abs(captured[-1] - 1).max()),
        "final_stray_mass": float(stray[-1]),
        "final_w2_positive": float(w2_pos[-1]),
        "final_w2_negative": float(w2_neg[-1]),
        # Euler keeps a_j^2 - |w_j|^2 (= 0 at the start) only approximately; the signs never flip here
        "balance_drift": float(np.abs(traj.a**2 - (traj.W**2).sum(axis=1)).max()),
        "sign_flips": int((np.sign(traj.snapshots_a) != np.sign(traj.snapshots_a[0])).any(axis=0).sum()),
    }


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(2, 3, size=(4.3, 3.6))
    grid = axes[0, 0].get_gridspec()
    for ax in axes[:, :2].ravel():  # the paths take the left 2 x 2 block
        ax.remove()
    ax = fig.add_subplot(grid[:, :2])
    red, blue = "#c0392b", "#2c6fbb"
    paths, signs = result["paths"], result["signs"]
    reach = 1.1 * np.linalg.norm(paths[-1], axis=1).max()
    for u, s in zip(result["teacher_directions"], cfg.teacher_signs):
        ax.plot([0, reach * u[0]], [0, reach * u[1]], ls=(0, (2, 2)), lw=1.6, color=red if s > 0 else blue,
                alpha=0.9, zorder=1)
        ax.plot(reach * u[0], reach * u[1], marker="*", ms=14, color=red if s > 0 else blue, mec="k",
                mew=0.6, zorder=4)
    for j in range(paths.shape[1]):
        c = red if signs[j] > 0 else blue
        ax.plot(paths[:, j, 0], paths[:, j, 1], color=c, lw=0.8, alpha=0.55, zorder=2)
    pos, neg = signs > 0, signs < 0
    for mask, c, name in ((pos, red, "$a_j > 0$"), (neg, blue, "$a_j < 0$")):
        ax.scatter(paths[-1, mask, 0], paths[-1, mask, 1], s=16, color=c, edgecolor="k", linewidth=0.4,
                   zorder=3, label=f"particle with {name} (end of path)")
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=4, color="k", zorder=3, label="start (all near 0)")
    ax.plot([], [], ls=(0, (2, 2)), color="0.3", marker="*", mec="k", label="teacher neuron direction")
    ax.set_aspect("equal")
    ax.set_xlim(-reach * 1.08, reach * 1.08)
    ax.set_ylim(-reach * 1.08, reach * 1.08)
    ax.axhline(0, color="0.85", lw=0.6, zorder=0)
    ax.axvline(0, color="0.85", lw=0.6, zorder=0)
    ax.set_xlabel(r"$|a_j|\, w_{j,1}$")
    ax.set_ylabel(r"$|a_j|\, w_{j,2}$")
    ax.set_title(f"paths of the m = {cfg.m} particles, drawn at $|a_j| w_j$ "
                 f"(radius = m x mass), up to t = {result['times'][-1]:g}")
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)

    t = result["times"]
    live = t > 0
    ax = axes[0, 2]
    ax.loglog(t[live], result["relative_risk"][live], color="k", lw=1.6, label=r"risk $R(t)/R(0)$")
    ax.loglog(t[live], result["w2_positive"][live], color=red, lw=1.2, label=r"$W_2$ of the + parts")
    ax.loglog(t[live], result["w2_negative"][live], color=blue, lw=1.2, label=r"$W_2$ of the $-$ parts")
    ax.set_xlabel("flow time t")
    ax.set_title(r"risk, and $W_2(\mu_t^\pm/|\mu_t^\pm|,\ \mu^{*\pm}/|\mu^{*\pm}|)$")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[1, 2]
    captured = result["captured_mass"]
    for k, (angle, s) in enumerate(zip(cfg.teacher_angles, cfg.teacher_signs)):
        ax.semilogx(t[live], captured[live, k], lw=1.4, color=red if s > 0 else blue,
                    ls=("-", "--", ":")[k % 3], label=f"neuron at {angle:g} deg (a* = {s:+g})")
    ax.semilogx(t[live], result["stray_mass"][live], color="0.4", lw=1.2, label="stray mass (outside cones)")
    ax.axhline(1, color="k", lw=0.6)
    ax.set_ylim(-0.05, 1.15)
    ax.set_xlabel("flow time t")
    ax.set_ylabel("fraction of teacher mass")
    ax.set_title(f"student mass within {cfg.cone_angle:g} deg of each teacher neuron")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="center left")
    fig.suptitle("Mean-field gradient flow in d = 2 (inputs on the circle): the particles find the teacher's neurons")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
