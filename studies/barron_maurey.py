"""Maurey sampling: width-m networks drawn from Barron's representation err like 2 r C_f / sqrt(m), slope -1/2.

Claim (Barron 1993, "Universal approximation bounds for superpositions of a sigmoidal function",
IEEE Trans. Inf. Theory 39(3), Theorem 1 and its proof; Maurey's lemma, its Lemma 1): a function
f with finite Barron norm C_f = int |omega| |f_hat(omega)| d omega is, on the ball B_r, the
expectation f(x) = f(0) + 2 r C_f E[h 1{<u, x> > t}] of step neurons with |h| <= 1, so that m i.i.d.
draws of (h, u, t) give a network f_m (m step neurons, plus a constant neuron for f(0)) with

    E ||f - f_m||^2_{L2(mu)} <= (2 r C_f)^2 / m      for every probability measure mu on B_r.

The study draws such networks (:func:`shallow.barron.maurey_sample` on the ``"step"``
representation) for m = 1 .. 2^14 and measures the L2(mu) error, mu uniform on B_r (Monte Carlo
on ``n_test`` points, the same for every network), root-mean-square over ``draws`` draws. The
fixed test set makes the mean squared error exactly proportional to 1/m in expectation (the draws
are unbiased), so the fitted log-log slope is -1/2 up to the scatter of the draws. The bound
2 r C_f / sqrt(m) is drawn with it. For comparison, the same is done with the relu ridge
representation (Klusowski & Barron 2018, arXiv:1607.07819: mass 2 r C_{f,2}, sup r, bound
2 r^2 C_{f,2} / sqrt(m)), and relu networks of the same widths are trained by the mean-field
gradient flow (:func:`shallow.flows.gradient_flow` on an :class:`~shallow.flows.EmpiricalRisk` of
``n_train`` points, gamma = 1/m, bias=True, Gaussian initialisation, Euler with step
``step_size`` on the mean-field time scale) and evaluated on the same test set.

Targets (C_f in closed form, Euclidean norm, Fourier convention f(x) = int e^{i<omega,x>} f_hat):

* ``gaussian``: f(x) = exp(-|x|^2 / (2 s^2)) in R^d, C_f = sqrt(2) Gamma((d+1)/2) / (Gamma(d/2) s);
* ``ridge``: f(x) = exp(-<w, x>^2 / 2), w = |w| e_1, C_f = |w| sqrt(2/pi). Its representation is
  the one-dimensional Gaussian's on |z| <= |w| r, composed with z = <w, x> (neuron rows (e w, -t)).

What is checked: the fitted slope of the Maurey (step) error against m is within 0.1 of -1/2
(measured with the defaults: -0.497 for both targets; with --quick, -0.45 to -0.53 over seeds 0-4);
the error is below the bound 2 r C_f / sqrt(m) at every m (measured with the defaults: at most 0.27 times
the bound for the step neurons, 0.14 times the relu bound for the relu ones);
trained networks have a smaller test error than Maurey networks of the same width. For the
Gaussian, 7 to 10 times smaller (test error 0.12, 0.057, 0.028, 0.019 at m = 4, 16, 64, 256): the
flow optimises where sampling only averages. For the ridge the flow plateaus near 0.035 at every
width by t = 1000 (its neurons align with w slowly; longer runs creep down), so the gap closes as m
grows: 16x smaller at m = 4, 1.5x at m = 256, and the Maurey error passes below it near m = 1000.

Runtime: about 2 minutes with the defaults (the Maurey draws at m up to 16384, about 40 s per
target, and the trained networks, on the study's worker processes), 8-20 s with --quick, on the
2-core development machine under load.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_positive
from shallow.backend import to_device, to_numpy
from shallow.barron import GaussianTarget, Representation, RidgeTarget, barron_bound, maurey_sample, sample_ball

TARGETS = ("gaussian", "ridge")


@dataclasses.dataclass(frozen=True)
class Config:
    d: int = 5
    radius: float = 1.0  # r: the ball B_r carries the input law (uniform) and the representation
    gaussian_scale: float = 0.5  # s of the Gaussian target
    ridge_norm: float = 3.0  # |w| of the ridge target
    maurey_widths: tuple = tuple(2**j for j in range(15))  # 1 .. 16384
    draws: int = 8  # Maurey networks per width
    n_test: int = 4000  # Monte Carlo points for the L2(mu) errors
    trained_widths: tuple = (4, 16, 64, 256)  # must be among maurey_widths
    n_train: int = 2000
    steps: int = 2000
    step_size: float = 0.5  # Euler, mean-field time scale: flow time = steps * step_size
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of deep inside the draws or the flows."""
        check_integer(self.d, "d", minimum=1)
        for name in ("radius", "gaussian_scale", "ridge_norm", "step_size"):
            check_positive(getattr(self, name), name)
        for name in ("draws", "n_test", "n_train", "steps"):
            check_integer(getattr(self, name), name, minimum=1)
        study.check_grid(self.maurey_widths, "maurey_widths", increasing=True, at_least=2)  # a slope
        if not self.trained_widths or not set(self.trained_widths) <= set(self.maurey_widths):
            raise ValueError(f"trained_widths {self.trained_widths!r} must be some of maurey_widths "
                             f"{self.maurey_widths!r} (trained and sampled networks are compared at equal widths)")


QUICK = {"maurey_widths": tuple(2**j for j in range(12)), "draws": 6, "n_test": 2000,
         "trained_widths": (4, 16, 64), "n_train": 1000, "steps": 800}


# ----------------------------------------------------------------------------- targets

def make_target(cfg_or_point, name):
    """(f, C_f, step representation, relu representation) of target ``name`` on B_r."""
    get = (lambda key: cfg_or_point[key]) if isinstance(cfg_or_point, dict) else \
        (lambda key: getattr(cfg_or_point, key))
    d, r = int(get("d")), float(get("radius"))
    if name == "gaussian":
        f = GaussianTarget(d, scale=float(get("gaussian_scale")))
        return f, f.barron_norm(norm=2), f.representation("step", radius=r), f.representation("relu", radius=r)
    if name == "ridge":
        w = np.zeros(d)
        w[0] = float(get("ridge_norm"))
        f = RidgeTarget(w, "gaussian")
        return f, f.barron_norm(norm=2), ridge_representation(w, r, "step"), ridge_representation(w, r, "relu")
    raise ValueError(f"target must be one of {TARGETS}, got {name!r}")


def ridge_representation(w, radius, kind):
    """exp(-<w, x>^2 / 2) on |x| <= radius as an expectation of neurons of <w, x>.

    The one-dimensional Gaussian g(z) = exp(-z^2/2) has, on |z| <= R = |w| radius, the
    representation g(z) = g(0) + M E[h sigma(e z - t)] (:meth:`GaussianTarget.representation`,
    rows (e, -t) of W); with z = <w, x> the rows become (e w, -t), the mass and sup stay.
    """
    w = np.asarray(w, dtype=np.float64)  # (d,)
    one = GaussianTarget(1, scale=1.0).representation(kind, radius=float(np.linalg.norm(w)) * radius)

    def sampler(m, rng):
        h, W1 = one.sample(m, rng)  # (m,), (m, 2)
        return h, np.concatenate([W1[:, :1] * w[None, :], W1[:, 1:]], axis=1)  # (m, d + 1)

    return Representation(w.shape[0], one.mass, one.activation, sampler, constant=one.constant, radius=radius,
                          sup=one.sup, bias=True, name=f"ridge-{kind}")


def _data(cfg_or_point, name, which):
    """(X, y) on the host: the test set (which = "test") or the training set ("train")."""
    get = (lambda key: cfg_or_point[key]) if isinstance(cfg_or_point, dict) else \
        (lambda key: getattr(cfg_or_point, key))
    f = make_target(cfg_or_point, name)[0]
    n = int(get("n_test" if which == "test" else "n_train"))
    rng = np.random.default_rng([int(get("seed")), TARGETS.index(name), 0 if which == "test" else 1])
    X = sample_ball(n, int(get("d")), radius=float(get("radius")), rng=rng)  # (n, d)
    return X, f(X)


# ----------------------------------------------------------------------------- training (one grid point)

def train_point(point: dict) -> dict:
    """Train a width-m relu network (mean field, bias) on target ``point['target']``; test and train errors."""
    from shallow.flows import EmpiricalRisk, gradient_flow
    from shallow.networks import TwoLayer

    name, m, device = point["target"], int(point["m"]), point["device"]
    X, y = _data(point, name, "train")
    Xt, yt = _data(point, name, "test")
    loss = EmpiricalRisk(to_device(X, device), to_device(y, device))
    rng = np.random.default_rng([int(point["seed"]), TARGETS.index(name), m])
    net = TwoLayer.init(m, int(point["d"]), bias=True, rng=rng, device=device)
    traj = gradient_flow(net, loss, int(point["steps"]), float(point["step_size"]),
                         record_every=max(1, int(point["steps"]) // 20))
    trained = traj.network(net)
    test = float(np.sqrt(np.mean((to_numpy(trained(to_device(Xt, device))) - yt) ** 2)))
    return {"test_error": test, "train_error": float(np.sqrt(2 * traj.risks[-1])),
            "times": traj.times, "train_errors": np.sqrt(2 * traj.risks)}


# ----------------------------------------------------------------------------- compute

def maurey_errors(rep, widths, draws, X, y, seed, device):
    """L2 errors on (X, y), shape (draws, len(widths)), of Maurey networks drawn from ``rep``."""
    Xd = to_device(X, device)
    errors = np.empty((draws, len(widths)))
    for j, m in enumerate(widths):
        for i in range(draws):
            net = maurey_sample(rep, int(m), rng=np.random.default_rng([*seed, int(m), i]), device=device)
            errors[i, j] = np.sqrt(np.mean((to_numpy(net(Xd)) - y) ** 2))
    return errors


def fitted_slope(widths, errors):
    """Least-squares slope of log(rms error) against log m (rms over the draws, axis 0)."""
    rms = np.sqrt(np.mean(errors**2, axis=0))
    return float(np.polyfit(np.log(widths), np.log(rms), 1)[0]), rms


def compute(cfg: Config) -> dict:
    from tqdm.auto import tqdm

    widths = np.asarray(cfg.maurey_widths, dtype=np.int64)
    result = {"maurey_widths": widths, "trained_widths": np.asarray(cfg.trained_widths, dtype=np.int64)}
    for name in tqdm(TARGETS, desc="barron_maurey: Maurey draws", unit="target",
                     disable=not study.show_progress()):
        f, C_f, rep_step, rep_relu = make_target(cfg, name)
        # Barron's mass 2 r C_f is the step representation's (a check of the library's constants).
        assert math.isclose(rep_step.mass, 2 * cfg.radius * C_f, rel_tol=1e-12), (rep_step.mass, C_f)
        X, y = _data(cfg, name, "test")
        result[f"C_f_{name}"] = float(C_f)
        result[f"target_rms_{name}"] = float(np.sqrt(np.mean(y**2)))
        result[f"target_std_{name}"] = float(np.std(y))
        for kind, rep in (("step", rep_step), ("relu", rep_relu)):
            errors = maurey_errors(rep, widths, cfg.draws, X, y, [cfg.seed, TARGETS.index(name)], cfg.device)
            slope, rms = fitted_slope(widths, errors)
            bound = np.array([rep.bound(int(m)) for m in widths])  # M s / sqrt(m)
            result[f"maurey_{kind}_errors_{name}"] = errors  # (draws, widths)
            result[f"maurey_{kind}_rms_{name}"] = rms
            result[f"slope_{kind}_{name}"] = slope
            result[f"bound_{kind}_{name}"] = bound
            result[f"max_ratio_to_bound_{kind}_{name}"] = float((rms / bound).max())
        result[f"barron_bound_{name}"] = np.array([barron_bound(C_f, cfg.radius, int(m)) for m in widths])

    base = {"d": cfg.d, "radius": cfg.radius, "gaussian_scale": cfg.gaussian_scale, "ridge_norm": cfg.ridge_norm,
            "n_train": cfg.n_train, "n_test": cfg.n_test, "steps": cfg.steps, "step_size": cfg.step_size,
            "seed": cfg.seed, "device": cfg.device}
    points = [dict(base, target=name, m=int(m)) for name in TARGETS for m in cfg.trained_widths]
    runs = study.run_grid(train_point, points, desc="barron_maurey: training")
    for name in TARGETS:
        mine = [out for p, out in zip(points, runs) if p["target"] == name]
        test = np.array([out["test_error"] for out in mine])
        result[f"trained_test_error_{name}"] = test
        result[f"trained_train_error_{name}"] = np.array([out["train_error"] for out in mine])
        at = np.searchsorted(widths, cfg.trained_widths)
        sampled = result[f"maurey_step_rms_{name}"][at]
        result[f"trained_over_sampled_{name}"] = test / sampled
        result[f"max_trained_over_sampled_{name}"] = float((test / sampled).max())
        result[f"trained_over_sampled_relu_max_{name}"] = float(
            (test / result[f"maurey_relu_rms_{name}"][at]).max())
    return result


# ----------------------------------------------------------------------------- plot

TITLES = {"gaussian": r"Gaussian $e^{-|x|^2/(2s^2)}$", "ridge": r"ridge $e^{-\langle w,x\rangle^2/2}$"}


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, len(TARGETS), size=(5.4, 4.3))
    widths = result["maurey_widths"]
    for ax, name in zip(axes[0], TARGETS):
        C_f = result[f"C_f_{name}"]
        for kind, colour, marker in (("step", "C0", "o"), ("relu", "C2", "s")):
            errors = result[f"maurey_{kind}_errors_{name}"]
            rms = result[f"maurey_{kind}_rms_{name}"]
            ax.fill_between(widths, errors.min(axis=0), errors.max(axis=0), color=colour, alpha=0.15, lw=0)
            ax.loglog(widths, rms, marker + "-", color=colour, ms=3.5, lw=1.3,
                      label=f"Maurey, {kind} neurons: slope {result[f'slope_{kind}_{name}']:.3f}")
        ax.loglog(widths, result[f"barron_bound_{name}"], "k--", lw=1.2,
                  label=rf"Barron's bound $2 r C_f/\sqrt{{m}}$, $C_f$ = {C_f:.3g}")
        ax.loglog(widths, result[f"bound_relu_{name}"], ":", color="C2", lw=1.2,
                  label=r"relu bound $2 r^2 C_{f,2}/\sqrt{m}$")
        ax.loglog(result["trained_widths"], result[f"trained_test_error_{name}"], "D-", color="C3", ms=5, lw=1.5,
                  label="trained relu (gradient flow), test error")
        ax.axhline(result[f"target_std_{name}"], color="0.5", lw=0.8, ls="-.",
                   label=f"std of f under $\\mu$ ({result[f'target_std_{name}']:.3g})")
        ax.set_xlabel("width m (neurons)")
        ax.set_ylabel(r"$\|f - f_m\|_{L^2(\mu)}$, $\mu$ uniform on $B_r$")
        ax.set_title(f"{TITLES[name]}, d = {cfg.d}, r = {cfg.radius:g}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Maurey sampling from Barron's representation: rms over {cfg.draws} draws (band: min-max), "
                 f"against trained networks of the same width")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
