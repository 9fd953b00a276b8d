r"""Lazy training of a CNN generalises worse, and its weights move like 1/alpha.

Claim (Chizat, Oyallon and Bach 2019, "On lazy training in differentiable programming", NeurIPS,
arXiv:1812.07956, Sec. 3 and Fig. 3, there VGG-11 on CIFAR-10; here a small VGG on scikit-learn's
8x8 digits): a centred CNN f(x; theta) = alpha (h(x; theta) - h(x; theta_0)) trained by SGD on the
lazy-training objective (1/alpha^2) L(f), L the square loss against one-hot targets,

* reaches a clearly worse test accuracy at large alpha (the lazy regime: the network follows its
  linearisation, a kernel method with the tangent kernel at theta_0) than at small alpha (the
  non-lazy, feature-learning regime);
* moves its weights less and less: |theta_T - theta_0| / |theta_0| ~ 1/alpha at large alpha (the
  function reaches the same kernel-flow endpoint for every alpha, which needs
  alpha Dh(theta_0) (theta - theta_0) ~ f, so |theta - theta_0| ~ 1/alpha).

Protocol
--------
Digits (1797 images, stratified 25% test split, standardised; the first ``n_train`` training images);
h = :func:`shallow.cnn.vgg_small` (two stages of two 3x3 convolutions + relu, width w and 2w, 2x2 max
pooling, global average pooling, a linear layer; no batch norm, He initialisation, the same theta_0
for every alpha); ``centering="frozen"``; loss SquareLoss(scale=1/alpha^2); SGD with momentum 0.9,
batch 50, for ``epochs`` epochs; step lr = lr0 * min(1, alpha). Why this step: for alpha >= 1 the
function-space step, alpha Dh (lr (1/alpha) Dh^T grad L) = lr K grad L, does not depend on alpha, so the
lazy end runs for the same kernel-flow time at every alpha; below alpha = 1 the parameter gradient
(1/alpha) Dh^T grad L grows and a constant step diverges. It is the rule eta = min(10, 0.1 / tau^2) of
the two-layer study (studies/lazy_vs_meanfield.py) rewritten for this objective: descent on L / alpha^2
with step s is descent on L with step s / alpha^2, and there the alpha-form step is
min(10 / alpha, 0.1 / alpha^2), i.e. s = min(10 alpha, 0.1): proportional to alpha, then constant.
Recorded per alpha: final and best test accuracy, final train accuracy and (unscaled) train loss,
the relative weight change over all trained parameters (:func:`shallow.cnn.relative_change`); the slope
of log weight change against log alpha fitted over alpha >= ``lazy_alpha``.

Measured (seed 0, the 2-core development machine)
-------------------------------------------------
--quick (300 training images, width 4, 40 epochs, lr0 = 0.02, alpha in {0.1, 4.6, 215, 1e4}): 10 s
with one worker. Test accuracy 0.844 at alpha = 0.1 against 0.711, 0.687, 0.687 at the larger alphas
(a gap of 0.158; train accuracy 0.96 against 0.85); weight change 0.86, 6.3e-2, 1.4e-3, 2.9e-5, fitted
slope -1.000 over alpha >= 100. Neither end is fully converged in 40 epochs; the lazy end's test
accuracy is flat from epoch 25 on.

Defaults (all 1347 training images, width 8, 100 epochs, lr0 = 0.01, 8 alphas from 1e-2 to 1e5):
72 s with 2 workers, the default on 2 cores (136 s of compute: about 2.3 minutes on one core;
303 s with 601 s of compute in the gallery rerun of commit 37e81e5 on the loaded machine, with the
same numbers).
Test accuracy 0.987, 0.991, 0.980 for alpha = 0.01, 0.1, 1 against 0.953 ... 0.944 for
alpha = 10 ... 1e5: 0.9% against 5.6% test error, six times more errors at the lazy end (gap 0.047);
the best along training 0.996 against 0.960.
Train accuracy 1.000 against 0.983 (train loss 0.003 against 0.124: the lazy end is close to, not at,
convergence after 100 epochs). Weight change 2.3 at alpha = 0.01 down to 4.4e-6 at 1e5, exactly 1/alpha
from alpha = 10 on: fitted slope -1.000 over alpha >= 100. lr0 = 0.02 diverges at width 8, alpha = 1e5.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_nonnegative, check_positive
from shallow.backend import to_device
from shallow.cnn import (
    SGD,
    SquareLoss,
    build_model,
    fit,
    load_digits,
    relative_change,
    snapshot,
)

REQUIRES = ("sklearn",)  # the digits data set: the `data` extra
EXTRA = "data"


@dataclasses.dataclass(frozen=True)
class Config:
    n_train: int = 0  # first n_train training images (0: all 1347)
    width: int = 8
    epochs: int = 100
    batch_size: int = 50
    lr: float = 0.01  # lr0: step lr0 * min(1, alpha) (0.02 diverges at width 8, alpha = 1e5)
    momentum: float = 0.9
    alpha_min: float = 1e-2
    alpha_max: float = 1e5
    n_alpha: int = 8
    lazy_alpha: float = 100.0  # the slope of the weight change is fitted over alpha >= lazy_alpha
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the first trainings."""
        check_integer(self.n_train, "n_train", minimum=0, maximum=1347)  # 1347: the digits' training split
        for name in ("width", "epochs", "batch_size"):
            check_integer(getattr(self, name), name, minimum=1)
        check_integer(self.n_alpha, "n_alpha", minimum=2)  # the small-alpha end against the lazy end
        for name in ("lr", "alpha_min", "alpha_max", "lazy_alpha"):
            check_positive(getattr(self, name), name)
        if not check_nonnegative(self.momentum, "momentum") < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.alpha_min < self.alpha_max:
            raise ValueError(f"alpha_min must be below alpha_max, got alpha_min={self.alpha_min!r} and "
                             f"alpha_max={self.alpha_max!r}")
        lazy_end = int((alphas(self) >= self.lazy_alpha * (1 - 1e-12)).sum())
        if lazy_end < 2:  # the slope came out NaN
            raise ValueError(f"n_alpha must give at least 2 values of alpha >= lazy_alpha={self.lazy_alpha:g} "
                             f"(the lazy end the weight change's slope is fitted over), got {lazy_end} with "
                             f"n_alpha={self.n_alpha} from alpha_min={self.alpha_min:g} to alpha_max={self.alpha_max:g}")


QUICK = {"n_train": 300, "width": 4, "epochs": 40, "lr": 0.02, "alpha_min": 0.1, "alpha_max": 1e4, "n_alpha": 4}


def alphas(cfg: Config) -> np.ndarray:
    return np.geomspace(cfg.alpha_min, cfg.alpha_max, cfg.n_alpha)


def step_size(alpha: float, lr: float) -> float:
    """lr0 * min(1, alpha): constant function-space step at large alpha, stable at small alpha."""
    return lr * min(1.0, alpha)


def train_point(point: dict) -> dict:
    """SGD on (1/alpha^2) L(alpha (h - h_0)) at one alpha: accuracies, losses, relative weight change."""
    data = load_digits()
    n = point["n_train"] or data.X_train.shape[0]
    dev = point["device"]
    X, y = to_device(data.X_train[:n], dev), to_device(data.y_train[:n], dev)
    X_test, y_test = to_device(data.X_test, dev), to_device(data.y_test, dev)
    alpha = point["alpha"]
    model = build_model("vgg", (8, 8, 1), 10, alpha=alpha, centering="frozen", rng=point["seed"],
                        width=point["width"], batch_norm=False)
    if dev != "cpu":
        model.to(dev)
    theta0 = snapshot(model)
    lr = step_size(alpha, point["lr"])
    opt = SGD(model.named_parameters(), lr=lr, momentum=point["momentum"])
    hist = fit(model, X, y, X_test=X_test, y_test=y_test, loss=SquareLoss(scale=1.0 / alpha**2), optimizer=opt,
               epochs=point["epochs"], batch_size=point["batch_size"], rng=point["seed"], on_divergence="stop")
    if hist.diverged or not hist.loss or not hist.loss[-1] * alpha**2 < 0.5:
        # 0.5 is L(f = 0), the loss at initialisation: worse than that means the steps blew up
        raise FloatingPointError(f"training diverged at alpha = {alpha:g} (lr = {lr:g}): {hist.message or 'loss grew'}")
    return {"test_accuracy_curve": np.array(hist.test_accuracy),
            "test_accuracy": float(hist.test_accuracy[-1]), "test_accuracy_best": float(max(hist.test_accuracy)),
            "train_accuracy": float(hist.accuracy[-1]),
            "train_loss": float(hist.loss[-1]) * alpha**2,  # L(f) itself, not the 1/alpha^2-scaled objective
            "weight_change": float(relative_change(model, theta0)), "step_size": lr}


def compute(cfg: Config) -> dict:
    grid = alphas(cfg)
    base = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("alpha_min", "alpha_max", "n_alpha", "lazy_alpha")}
    points = [dict(base, alpha=float(a)) for a in grid]
    runs = study.run_grid(train_point, points, desc="cnn_lazy_vs_meanfield: alpha grid")
    result = {"alpha": grid}
    for key in ("test_accuracy", "test_accuracy_best", "train_accuracy", "train_loss", "weight_change", "step_size"):
        result[key] = np.array([r[key] for r in runs])
    for i, r in enumerate(runs):
        result[f"test_accuracy_curve_{i}"] = r["test_accuracy_curve"]
    lazy = grid >= cfg.lazy_alpha * (1 - 1e-12)
    result["weight_change_slope"] = (float(np.polyfit(np.log(grid[lazy]), np.log(result["weight_change"][lazy]), 1)[0])
                                     if lazy.sum() >= 2 else float("nan"))
    small = grid < 1.0 + 1e-12
    result["test_accuracy_small_alpha"] = float(result["test_accuracy"][small].max()) if small.any() else float("nan")
    result["test_accuracy_lazy"] = float(result["test_accuracy"][-1])
    result["accuracy_gap"] = result["test_accuracy_small_alpha"] - result["test_accuracy_lazy"]
    return result


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 3, size=(4.4, 3.6))
    alpha = result["alpha"]
    ax = axes[0, 0]
    ax.semilogx(alpha, result["test_accuracy"], "o-", label="test, end of training")
    ax.semilogx(alpha, result["test_accuracy_best"], "s--", label="test, best along training")
    ax.semilogx(alpha, result["train_accuracy"], "^:", color="C2", label="train, last epoch")
    ax.set_xlabel(r"output scale $\alpha$")
    ax.set_ylabel("accuracy")
    ax.set_title(f"test accuracy: best $\\alpha \\leq 1$ {result['test_accuracy_small_alpha']:.3f}, "
                 f"$\\alpha$ = {alpha[-1]:.0e}: {result['test_accuracy_lazy']:.3f}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)

    ax = axes[0, 1]
    ax.loglog(alpha, result["weight_change"], "o-", label="measured")
    lazy = alpha >= cfg.lazy_alpha * (1 - 1e-12)
    if lazy.any():
        ref = result["weight_change"][lazy][-1] * (alpha[lazy] / alpha[lazy][-1]) ** -1.0
        ax.loglog(alpha[lazy], ref, "k--", lw=1, label=r"$\alpha^{-1}$")
    ax.set_xlabel(r"output scale $\alpha$")
    ax.set_ylabel(r"$|\theta_T - \theta_0| / |\theta_0|$")
    ax.set_title(f"relative weight change: fitted slope {result['weight_change_slope']:.2f} "
                 f"($\\alpha \\geq {cfg.lazy_alpha:g}$)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)

    ax = axes[0, 2]
    import matplotlib

    for i, a in enumerate(alpha):
        curve = result[f"test_accuracy_curve_{i}"]
        ax.plot(np.arange(1, curve.size + 1), curve, color=matplotlib.cm.viridis(0.9 * i / max(1, alpha.size - 1)),
                lw=1.2, label=rf"$\alpha$ = {a:.2g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("test accuracy along training")
    ax.legend(fontsize=6.5, ncol=2)
    ax.grid(True, alpha=0.3)
    n = cfg.n_train or 1347
    fig.suptitle(f"Lazy vs non-lazy CNN (Chizat, Oyallon & Bach 2019, Fig. 3 style) on digits: VGG width {cfg.width}, "
                 f"n = {n}, {cfg.epochs} epochs SGD, centred, square loss / $\\alpha^2$, "
                 f"lr {cfg.lr:g} min(1, $\\alpha$)", fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
