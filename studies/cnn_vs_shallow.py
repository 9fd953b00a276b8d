r"""On digits a small CNN beats shallow learners only with few training images; kernels catch up by n = 800.

Claim tested (the seed lecture's part B against part C): on the same training images, a
convolutional network, whose architecture carries the prior of local, translation-equivariant
features, is more accurate than the shallow learners of :mod:`shallow`, most of all with few
training images; the kernel predictors (the infinite-width NTK, random features) agree with each
other; the mean-field (feature-learning) two-layer network sits between the CNN and the kernels.
Measured (below): the CNN is the most accurate up to n = 400 and its lead is largest at n = 50
(+1.9 points), but from n = 800 on the kernels are level with it or ahead; NTK and random features
agree within 0.3 points from n = 100 on; the mean-field networks are not between: they are below the
kernels at every size but the smallest.

References: J. Bruna and S. Mallat, "Invariant scattering convolution networks", IEEE TPAMI 2013,
arXiv:1203.1513 (the convolutional prior on digits); A. Jacot, F. Gabriel and C. Hongler, "Neural
tangent kernel", NeurIPS 2018, arXiv:1806.07572, Theorem 1 and Sec. 5; A. Rahimi and B. Recht,
"Random features for large-scale kernel machines", NeurIPS 2007 (random features); L. Chizat and
F. Bach, arXiv:1805.09545, Sec. 2 (mean-field particle flow); L. Chizat, E. Oyallon and F. Bach,
arXiv:1812.07956, Sec. 3 (lazy vs feature learning); S. Arora, S. Du, Z. Li, R. Salakhutdinov,
R. Wang and D. Yu, "Harnessing the power of infinitely wide deep nets on small-data tasks", ICLR 2020,
arXiv:1910.01663 (kernel predictors are strong at small n).

Protocol
--------
Data: scikit-learn's 8x8 digits (:func:`shallow.cnn.load_digits`: 1797 images, the stratified 25%
test split of 450 images, standardised with the training set's statistics). For each size n in
``sizes`` a stratified subset of n of the 1347 training images is drawn (:func:`subset`); every
method sees the same subset, and is scored by its accuracy on the same 450 test images. Below the
full set ``n_seeds`` subsets are drawn per size (the subset and all initialisations change with the
subset index); the full set n = 1347 is run once.

The shallow learners see each image flattened, x in R^64, put on the sphere and given a bias
coordinate (the bias trick of Bach 2017, Sec. 2):

    z = (x / |x|, 1) / sqrt(2)  in S^64,  i.e.  z = sphere.lift(x / |x|),

so that every kernel below is a dot-product kernel on S^64. Multi-class: ten outputs f_c, one per
class, fitted by the square loss to the one-hot targets 1{y = c}; the prediction is argmax_c f_c(z).

* ``cnn``: :func:`shallow.cnn.vgg_small` (two stages of two 3x3 convolutions of width w and 2w with
  batch norm and relu, 2x2 max pooling, global average pooling, a linear layer), He initialisation,
  cross-entropy, Adam (lr ``cnn_lr``), batches of ``cnn_batch_size``, ``cnn_steps`` optimiser steps
  whatever n (so ceil(steps / ceil(n / batch)) epochs), no augmentation, no early stopping.
* ``mean_field``: ten two-layer relu networks f_c(z) = (1/m) sum_j a_j relu(<w_j, z>)
  (:class:`shallow.networks.TwoLayer`, mean-field scale gamma = 1/m, a_j ~ N(0, 1), w_j ~ N(0, I_65)),
  each trained on R_c = 1/(2n) sum_i (f_c(z_i) - 1{y_i = c})^2 by the particle gradient flow
  (:func:`shallow.flows.gradient_flow`, forward Euler, step eta on the mean-field time scale: each
  particle moves by eta m grad R_c) up to the flow time t = steps * eta. The library's two-layer
  network has a scalar output, hence one network per class (one-vs-rest), not one network with a
  10-dimensional output layer sharing its hidden units.
* ``ntk``: the infinite-width neural tangent kernel of the relu network, both layers trained
  (:func:`shallow.kernels.ntk`, w ~ N(0, I)),
  Theta(z, z') = (sin theta + (pi - theta) cos theta) / (2 pi) + cos theta (pi - theta) / (2 pi),
  cos theta = <z, z'>, and kernel ridge regression (:func:`shallow.lazy.kernel_regression`):
  f_c = Theta(., Z) (Theta(Z, Z) + n lambda I)^{-1} y_c, with a tiny ridge lambda (``ridge``):
  essentially the interpolant reached by the lazy flow at t -> infinity.
* ``random_features``: the two-layer network at the NTK scale with its first layer frozen at
  initialisation, W ~ N(0, I) of shape (M, 65), M = ``rf_width``, and only a trained, by ridge
  regression: a = argmin 1/(2n) |Phi a - y_c|^2 + (lambda/2) |a|^2 with Phi = M^{-1/2} relu(Z W^T),
  computed in its kernel form with K = Phi Phi^T (:func:`shallow.lazy.empirical_ntk` with
  ``train="outer"``). K tends to the arc-cosine kernel (sin theta + (pi - theta) cos theta)/(2 pi)
  as M -> infinity; M is well above n so that the least-squares problem is far from its
  interpolation threshold (at M = 1000, n = 800 the ridgeless fit drops to 84%: double descent).

Measured (seed 0, the 2-core development machine, shared)
---------------------------------------------------------
Defaults (sizes 50 ... 1347, 3 subsets per size below 1347; CNN width 32, 500 Adam steps; mean-field
m = 200 per class, eta = 4, t = 4000; M = 4000 random features; ridge 1e-6): 213 s with --workers 2
on the shared machine (459 s in a first run under a load average of about 5, and 435 s with 858 s of
compute in the gallery rerun of commit 37e81e5, with the same numbers).
Mean test accuracy over the subsets (450 test images: one image is 0.0022; the spread over subsets
is 0.01-0.02 at n <= 200, 0.004-0.008 above):

    n                      50     100    200    400    800    1347
    CNN                  0.887  0.924  0.958  0.977  0.986  0.987
    mean-field net       0.857  0.904  0.944  0.965  0.978  0.984
    NTK regression       0.867  0.924  0.951  0.971  0.984  0.991
    random features      0.848  0.921  0.950  0.970  0.987  0.991

* The CNN is the most accurate at n = 50 ... 400 and its lead is largest at n = 50: +1.9 points over
  the best shallow learner (the NTK; paired by subset +3.5, +0.3, +2.0), then +0.1, +0.7, +0.6 points
  at n = 100, 200, 400 (within one subset spread). From n = 800 on it is level with the kernels
  (-0.1 point against random features at 800) and at n = 1347 below them: 0.987 (6 errors) against
  0.991 (4 errors), a single run; preliminary runs on the full set with another initialisation and
  600 steps gave 0.996 at width 32 and 0.989 at width 16. Every method fits its training set (train accuracy 1).
* The NTK and random-feature predictors agree within 0.3 points from n = 100 on (and 1.9 points at
  n = 50, where M = 4000 features estimate the arc-cosine kernel with the most relative noise).
* The mean-field networks are the least accurate at every n >= 100 (0.6 to 1.8 points below the
  mean of the two kernels) and between NTK and random features only at n = 50. One possible reason:
  ten independent scalar networks (one-vs-rest) share no features. In preliminary runs at n = 200
  the width mattered little (m = 50, 200, 1000: 0.942, 0.947, 0.956 at t = 4000), eta = 8 did worse
  (0.86), and the sphere/balanced initialisation of the global-convergence study gave 0.915.
* The kernel predictors are strong on these small, smooth images, as Arora et al. (2020) found on
  small data sets: the convolutional prior buys about 2 points at n = 50 and nothing measurable at
  n >= 800 without data augmentation.

--quick (sizes 50 and 300, 2 subsets; the CNN for 150 steps; m = 100, t = 1200; M = 1000): 7.6 s of
compute (8.4 s in all) with 2 workers. Test accuracy at n = 50 / 300: CNN 0.894 / 0.974, mean-field
0.866 / 0.946, NTK 0.874 / 0.973, random features 0.849 / 0.967: the CNN's lead over the best shallow
learner is +2.0 points at n = 50 and +0.1 at n = 300, NTK minus random features 2.6 and 0.7 points.
Over seeds 0..7 (15-21 s of compute each, one worker, on the loaded machine): the CNN's lead is +1.9 to
+4.9 points at n = 50 and -0.3 to +1.0 at n = 300; NTK minus random features 1.8 to 4.0 and 0.3 to 1.9
points; the mean-field nets are 0.9 to 2.8 points below the NTK at n = 300, but at n = 50 anywhere from
1.1 points above it to 1.9 below (above it at seeds 1 and 4).

What the library lacks for this comparison: a two-layer network with a vector output (shared hidden
units, m particles (a_j in R^10, w_j)) and its flow; the mean-field learner is therefore ten
one-vs-rest networks. The kernels fit the ten one-hot columns in one :func:`shallow.lazy.kernel_regression`
(one eigendecomposition of K).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_nonnegative, check_positive
from shallow.backend import get_xp, to_device, to_numpy

REQUIRES = ("sklearn",)  # the digits data set: the `data` extra
EXTRA = "data"

METHODS = ("cnn", "mean_field", "ntk", "random_features")
LABELS = {"cnn": "CNN (VGG, Adam)", "mean_field": "mean-field 2-layer net", "ntk": "NTK kernel regression",
          "random_features": "random features (ridge)"}
#: The Config fields each method's points carry (so that a change of one method's setting
#: recomputes only that method's cached points).
METHOD_FIELDS = {
    "cnn": ("cnn_width", "cnn_steps", "cnn_batch_size", "cnn_lr"),
    "mean_field": ("mf_width", "mf_steps", "mf_step_size"),
    "ntk": ("ridge",),
    "random_features": ("rf_width", "ridge"),
}
N_TRAIN = 1347  # training images of load_digits' default split
N_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Config:
    sizes: tuple = (50, 100, 200, 400, 800, 1347)  # training-set sizes n (1347: all the training images)
    n_seeds: int = 3  # subsets per size below 1347 (the full set is run once)
    cnn_width: int = 32
    cnn_steps: int = 500
    cnn_batch_size: int = 50
    cnn_lr: float = 3e-3
    mf_width: int = 200  # m neurons per class network
    mf_steps: int = 1000
    mf_step_size: float = 4.0  # eta: flow time t = mf_steps * eta
    rf_width: int = 4000  # M random features
    ridge: float = 1e-6  # lambda of the NTK and random-feature ridge regressions
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the first points of the grid."""
        check_config(self)
        for name in ("cnn_width", "cnn_steps", "cnn_batch_size", "mf_width", "mf_steps", "rf_width"):
            check_integer(getattr(self, name), name, minimum=1)
        check_positive(self.cnn_lr, "cnn_lr")
        check_positive(self.mf_step_size, "mf_step_size")
        check_nonnegative(self.ridge, "ridge")  # 0: the minimum-norm interpolant


QUICK = {"sizes": (50, 300), "n_seeds": 2, "cnn_steps": 150, "mf_width": 100, "mf_steps": 300, "rf_width": 1000}


# ----------------------------------------------------------------------------- data

def subset(y, n, index=0, seed=0):
    """Indices of a stratified subset of n of the training labels ``y``, drawn for (seed, index).

    Parameters
    ----------
    y : int array of shape (N,)
        The training labels.
    n : int
        1 <= n <= N; n = N gives every index.
    index : int
        Which subset (0, 1, ...): the draws for different indices are independent.
    seed : int
        The study's seed.

    Returns
    -------
    sorted int array of shape (n,)
    """
    y = np.asarray(y)
    N = y.shape[0]
    n = check_integer(n, "n", minimum=1, maximum=N)
    index = check_integer(index, "index", minimum=0)
    if n == N:
        return np.arange(N)
    from shallow.cnn import stratified_split

    keep, _ = stratified_split(y, test_size=(N - n) / N, rng=_rng(seed, index, 0))
    return keep


def sphere_inputs(X):
    """Images (k, H, W, C) flattened to x and mapped to z = (x/|x|, 1)/sqrt(2) on S^{HWC}: shape (k, HWC + 1)."""
    from shallow.sphere import lift

    xp = get_xp(X)
    flat = X.reshape(X.shape[0], -1)  # (k, 64)
    norms = xp.linalg.norm(flat, axis=1, keepdims=True)
    if bool((norms == 0).any()):
        raise ValueError("an image is constant at the standardised value 0: it has no direction on the sphere")
    return lift(flat / norms)


def _rng(seed, index, stream):
    """A Generator for (study seed, subset index, stream): 0 the subset, 1.. the methods' initialisations."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def _data(point):
    from shallow.cnn import load_digits

    data = load_digits()
    if data.X_train.shape[0] != N_TRAIN:  # pragma: no cover - scikit-learn's digits changed
        raise RuntimeError(f"expected {N_TRAIN} training digits, got {data.X_train.shape[0]}")
    keep = subset(data.y_train, point["n"], point["subset"], point["seed"])
    dev = point["device"]
    return (to_device(data.X_train[keep], dev), data.y_train[keep], to_device(data.X_test, dev), data.y_test)


def _one_hot(y, device):
    return to_device(np.eye(N_CLASSES)[y], device)  # (n, 10)


def _accuracy(F, y):
    return float((np.argmax(to_numpy(F), axis=1) == np.asarray(y)).mean())


# ----------------------------------------------------------------------------- the four learners

def _fit_cnn(point, X, y, X_test, y_test):
    from shallow.cnn import Adam, build_model, evaluate, fit

    dev = point["device"]
    model = build_model("vgg", X.shape[1:], N_CLASSES, rng=_rng(point["seed"], point["subset"], 1),
                        width=point["cnn_width"], batch_norm=True)
    if dev != "cpu":
        model.to(dev)
    n, batch = X.shape[0], point["cnn_batch_size"]
    epochs = math.ceil(point["cnn_steps"] / math.ceil(n / batch))
    opt = Adam(model.named_parameters(), lr=point["cnn_lr"])
    hist = fit(model, X, to_device(y, dev), optimizer=opt, epochs=epochs, batch_size=batch,
               rng=_rng(point["seed"], point["subset"], 2))
    _, train_acc = evaluate(model, X, to_device(y, dev))
    _, test_acc = evaluate(model, X_test, to_device(y_test, dev))
    return {"test_accuracy": float(test_acc), "train_accuracy": float(train_acc),
            "train_loss": float(hist.loss[-1]), "epochs": epochs}


def _fit_mean_field(point, X, y, X_test, y_test):
    from shallow.flows import EmpiricalRisk, gradient_flow
    from shallow.networks import TwoLayer

    Z, Z_test = sphere_inputs(X), sphere_inputs(X_test)  # (n, 65), (450, 65)
    Y = _one_hot(y, point["device"])
    F, F_test, risks = [], [], []
    for c in range(N_CLASSES):
        net = TwoLayer.init(point["mf_width"], Z.shape[1], scale="mean-field",
                            rng=_rng(point["seed"], point["subset"], 3 + c), device=point["device"])
        traj = gradient_flow(net, EmpiricalRisk(Z, Y[:, c]), point["mf_steps"], point["mf_step_size"],
                             record_every=max(1, point["mf_steps"]))
        trained = traj.network(net)
        F.append(trained(Z))
        F_test.append(trained(Z_test))
        risks.append(float(traj.risks[-1]))
    xp = get_xp(Z)
    return {"test_accuracy": _accuracy(xp.stack(F_test, axis=1), y_test),
            "train_accuracy": _accuracy(xp.stack(F, axis=1), y), "train_loss": float(np.mean(risks))}


def _kernel_fit(K, K_test, y, y_test, ridge, device):
    from shallow.lazy import kernel_regression

    Y = _one_hot(y, device)  # (n, 10): the ten classes in one kernel ridge regression
    F, F_test = kernel_regression(K, Y, ridge, K_test=K_test)  # (n, 10), (450, 10)
    return {"test_accuracy": _accuracy(F_test, y_test), "train_accuracy": _accuracy(F, y),
            "train_loss": float(0.5 * to_numpy(((F - Y) ** 2).sum(axis=1)).mean())}


def _fit_ntk(point, X, y, X_test, y_test):
    from shallow.kernels import ntk

    Z, Z_test = sphere_inputs(X), sphere_inputs(X_test)
    return _kernel_fit(ntk(Z, None, "relu"), ntk(Z_test, Z, "relu"), y, y_test, point["ridge"], point["device"])


def _fit_random_features(point, X, y, X_test, y_test):
    from shallow.lazy import empirical_ntk
    from shallow.networks import TwoLayer

    Z, Z_test = sphere_inputs(X), sphere_inputs(X_test)
    net = TwoLayer.init(point["rf_width"], Z.shape[1], scale="ntk", rng=_rng(point["seed"], point["subset"], 13),
                        device=point["device"])
    K = empirical_ntk(net, Z, train="outer")  # (n, n): M^{-1} relu(Z W^T) relu(Z W^T)^T
    K_test = empirical_ntk(net, Z_test, Z, train="outer")  # (450, n)
    return _kernel_fit(K, K_test, y, y_test, point["ridge"], point["device"])


_FITS = {"cnn": _fit_cnn, "mean_field": _fit_mean_field, "ntk": _fit_ntk, "random_features": _fit_random_features}


def train_point(point: dict) -> dict:
    """One method on one training subset: its test and train accuracy (and train loss)."""
    if point["method"] not in _FITS:
        raise ValueError(f"method must be one of {METHODS}, got {point['method']!r}")
    X, y, X_test, y_test = _data(point)
    return _FITS[point["method"]](point, X, y, X_test, y_test)


# ----------------------------------------------------------------------------- the grid

def check_config(cfg: Config) -> Config:
    """Refuse sizes outside 1..1347 or not increasing, and n_seeds < 1."""
    sizes = tuple(cfg.sizes)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= N_TRAIN for n in sizes):
        raise ValueError(f"sizes must be training-set sizes n with 1 <= n <= {N_TRAIN}, got {cfg.sizes!r}")
    if any(b <= a for a, b in itertools.pairwise(sizes)):
        raise ValueError(f"sizes must be strictly increasing, got {cfg.sizes!r}")
    check_integer(cfg.n_seeds, "n_seeds", minimum=1)
    return cfg


def grid_points(cfg: Config) -> list:
    """The grid: one point per (method, size, subset); the largest sizes first (they take longest)."""
    points = []
    for n in sorted(cfg.sizes, reverse=True):
        for s in range(1 if n == N_TRAIN else cfg.n_seeds):
            for method in METHODS:
                fields = {k: getattr(cfg, k) for k in METHOD_FIELDS[method]}
                points.append(dict(fields, method=method, n=int(n), subset=s, seed=cfg.seed, device=cfg.device))
    return points


def compute(cfg: Config) -> dict:
    points = grid_points(cfg)
    runs = study.run_grid(train_point, points, desc="cnn_vs_shallow: (method, n, subset) grid")
    sizes = np.array(cfg.sizes)
    index = {n: i for i, n in enumerate(cfg.sizes)}
    result = {"sizes": sizes}
    for key in ("test_accuracy", "train_accuracy"):
        for method in METHODS:
            result[f"{key}_{method}"] = np.full((sizes.size, cfg.n_seeds), np.nan)
    for p, r in zip(points, runs):
        for key in ("test_accuracy", "train_accuracy"):
            result[f"{key}_{p['method']}"][index[p["n"]], p["subset"]] = r[key]
    mean = {m: np.nanmean(result[f"test_accuracy_{m}"], axis=1) for m in METHODS}
    for m in METHODS:
        result[f"mean_test_accuracy_{m}"] = mean[m]
        result[f"std_test_accuracy_{m}"] = np.nanstd(result[f"test_accuracy_{m}"], axis=1)
    shallow_best = np.max([mean[m] for m in METHODS if m != "cnn"], axis=0)
    # Paired by subset: the CNN's accuracy minus the best shallow method's, each size.
    result["cnn_advantage"] = mean["cnn"] - shallow_best
    result["ntk_minus_random_features"] = mean["ntk"] - mean["random_features"]
    lo = np.minimum(mean["ntk"], mean["random_features"])
    hi = np.maximum(mean["ntk"], mean["random_features"])
    result["mean_field_minus_kernels"] = mean["mean_field"] - 0.5 * (lo + hi)
    result["cnn_best_sizes"] = int(np.sum(result["cnn_advantage"] > 0))
    result["cnn_advantage_smallest_n"] = float(result["cnn_advantage"][0])
    result["cnn_advantage_largest_n"] = float(result["cnn_advantage"][-1])
    result["ntk_rf_max_gap"] = float(np.max(np.abs(result["ntk_minus_random_features"])))
    result["mean_field_between_sizes"] = int(np.sum((mean["mean_field"] >= lo) & (mean["mean_field"] <= hi)))
    for m in METHODS:
        result[f"test_accuracy_{m}_smallest_n"] = float(mean[m][0])
        result[f"test_accuracy_{m}_largest_n"] = float(mean[m][-1])
    return result


# ----------------------------------------------------------------------------- the figure

def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 2, size=(5.2, 4.0))
    sizes = result["sizes"]
    styles = {"cnn": "o-", "mean_field": "s-", "ntk": "^--", "random_features": "v:"}
    ax = axes[0, 0]
    for i, m in enumerate(METHODS):
        err = 1 - result[f"mean_test_accuracy_{m}"]
        ax.errorbar(sizes, err, yerr=result[f"std_test_accuracy_{m}"], fmt=styles[m], color=f"C{i}",
                    capsize=3, label=LABELS[m])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training images n")
    ax.set_ylabel("test error (450 images)")
    ax.set_title("test error against training-set size (bars: std over the subsets)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[0, 1]
    for i, m in enumerate(METHODS[1:], start=1):
        diff = result["test_accuracy_cnn"] - result[f"test_accuracy_{m}"]  # paired by subset
        ax.errorbar(sizes, np.nanmean(diff, axis=1), yerr=np.nanstd(diff, axis=1), fmt=styles[m], color=f"C{i}",
                    capsize=3, label=f"CNN minus {LABELS[m]}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training images n")
    ax.set_ylabel("test accuracy difference")
    ax.set_title("CNN's advantage, paired by training subset (bars: std over the subsets)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Digits: CNN (VGG width {cfg.cnn_width}, {cfg.cnn_steps} Adam steps) vs mean-field net "
                 f"(m = {cfg.mf_width} per class, t = {cfg.mf_steps * cfg.mf_step_size:g}) vs NTK vs random features "
                 f"(M = {cfg.rf_width}); ridge {cfg.ridge:g}; {cfg.n_seeds} subset(s) per n < {N_TRAIN}", fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
