r"""Scattering moves by O(|c| / 2^J) under translations and half as much as pixels under deformations.

Claim (Mallat 2012, "Group invariant scattering", arXiv:1101.2286, Theorems 2.10 and 2.12; Bruna and
Mallat 2013, arXiv:1203.1513, Sec. II-III): for a deformation L_tau x(u) = x(u - tau(u)),

    |S_J L_tau x - S_J x| <= C |x| (2^{-J} |tau|_inf + |grad tau|_inf + |Hess tau|_inf),

so the scattering representation S_J changes (i) by O(|c| / 2^J) under a translation by c and
(ii) linearly with |grad tau|_inf under a smooth deformation, whereas the pixels only move with
the image: their change reaches O(1) once the displacement reaches the width of the strokes. A
trained CNN learns part of this invariance from data (and its global average pooling gives it
more). Measured on scikit-learn's digits for five representations Phi: the pixels, the scattering
at J = 3 and J = 2 (L = 8, order 2, Kymatio's conventions, :class:`shallow.cnn.scattering.Scattering2D`),
and the penultimate layer (after global average pooling) of a small VGG, trained, and random (the
same network at its initialisation, never trained), which separates what training gives from
what the architecture gives.

Protocol
--------
Digits (stratified 25% test split), pixel values / 16, upsampled 3x by bilinear interpolation
(``scipy.ndimage.zoom``, order 1) and surrounded by a 4-pixel margin of background: 32 x 32 images.
Why: 8 x 8 digits are too small for a scattering with J >= 2 (it would average over the whole
image) and for smooth deformations of a few pixels; the margin keeps the digits away from the
border, so that deformations (background fill 0) do not cut strokes. The CNN:
``vgg_small((32, 32, 1), width)`` (three stages, batch norm, float32), Adam (``lr``), ``epochs``
epochs on the training set. The random CNN: the same ``vgg_small`` with the same seed, hence the
same He initialisation, untrained; in eval mode its batch norms keep their initial statistics
(mean 0, variance 1, scale 1, shift 0): the identity up to 1 / sqrt(1 + eps). On ``n_test`` test
images, each representation's change is measured relative to its norm and relative to the typical
distance between classes,

    rel_Phi = mean_x |Phi(L_tau x) - Phi(x)| / |Phi(x)|,
    rho_Phi = mean_x |Phi(L_tau x) - Phi(x)| / D_Phi,   D_Phi = mean_x |Phi(x) - Phi(x')|,

x' a test image of another class drawn once per x (rho = 1: as far as another digit; the mean norm
mean_x |Phi(x)| is recorded too, and D_Phi / mean |Phi(x)| says how spread the classes are around a
common component). The ratio |Phi(L_tau x) - Phi(x)| / (|Phi(x)| |grad tau|_inf) of the
deformation sweep is rel_Phi / |grad tau|_inf. Perturbations
(:func:`shallow.cnn.robustness.deform`, background fill 0): horizontal translations by c pixels
(a constant field; bilinear for c = 0.5); smooth random fields
(:func:`shallow.cnn.robustness.random_displacement`, one per image, correlation length
``field_scale``) with |grad tau|_inf in ``grad_norms``; and, at |grad tau|_inf = ``scale_grad_norm``,
fields of growing correlation length ``scales``, whose displacements grow with it (mean sup |tau|
recorded). Also the test accuracy of each representation's classifier on the perturbed images
(ridge regression on standardised features for pixels, scattering and the random CNN's
penultimate layer, the rule of :class:`shallow.cnn.scattering.ScatteringClassifier`, fitted on the
clean training images; the trained CNN's own last layer), and the fitted
log-log slope of rel and rho against |grad tau|_inf.

Measured (seed 0, the 2-core development machine)
-------------------------------------------------
The trained CNN's numbers are those of a rerun after the float32 cross-entropy was made accurate (its
training moved by up to 3%).
Defaults (all 1347 training images, 300 test images, VGG width 8, 12 epochs): 63 to 108 s of compute
(108 s in the gallery rerun of commit 37e81e5).
Clean test accuracy (on the 300): pixels + ridge 0.943, CNN 0.983 (0.984 on the whole test set),
random CNN + ridge 0.860 (0.849 on the whole test set), scattering J = 2 0.987, J = 3 0.990.

* Translations by c = 0.5, 1, 2, 4, 8 px, rel: pixels 0.14, 0.28, 0.51, 0.85, 1.18; scattering J = 3
  0.067, 0.131, 0.256, 0.485, 0.824 (proportional to c up to 4 px: the O(|c| / 2^J) error), J = 2
  0.094, 0.185, 0.365, 0.689, 1.07 (1.4 times J = 3: linear in c as the bound says, but not
  the factor 2 per scale that its 2^-J term allows, which is an upper bound); CNN 0.092, 0.133, 0.200, 0.223, 0.319 (global
  pooling: nearly flat beyond 2 px). Accuracy under the shift: scattering J = 3 0.99, 0.99, 0.987,
  0.89, 0.32 (it holds up to 2^{J-1} = 4 px, fails at 2^J); pixels 0.87, 0.77, 0.51, 0.27, 0.11;
  CNN 0.973 ... 0.913. Random CNN: rel 0.051, 0.052, 0.070, 0.107, 0.223 (the smallest of all), but
  rho 0.43, 0.44, 0.58, 0.90, 1.87 (trained CNN 0.11, 0.16, 0.24, 0.26, 0.37) and accuracy 0.84,
  0.75, 0.61, 0.40, 0.24.
* Deformations, |grad tau|_inf = 0.02 ... 0.32 (correlation length 4 px), rel: scattering J = 3
  0.0063 ... 0.084 (slope 0.94), pixels 0.013 ... 0.19 (slope 0.98), CNN 0.014 ... 0.18 (0.93):
  the scattering moves 2.1 to 2.4 times less than the pixels and the CNN. The ratio
  rel / |grad tau|_inf: pixels 0.63 to 0.60, CNN 0.70 to 0.56, scattering J = 3 0.31 to 0.26,
  random CNN 0.38 to 0.18 (rel 0.0076 ... 0.056, slope 0.73: it saturates). Relative to the
  classes the random CNN moves most: rho 0.064 ... 0.47, 2.2 to 3.9 times the trained CNN's
  (0.016 ... 0.21). Accuracy at 0.32: scattering 0.973, CNN 0.96, pixels 0.90, random CNN 0.81
  (0.87 clean).
* Growing displacement at |grad tau|_inf = 0.1 (mean sup |tau| 0.14 to 2.4 px): rel grows 34-fold
  for the scattering, 30-fold for the pixels, 16-fold for the CNN, 9.6-fold for the random CNN:
  Mallat's 2^{-J} |tau|_inf term;
  J = 3 is not yet invariant to translations of a few pixels.
* Relative to the between-class distance (rho) the scattering's advantage over the pixels shrinks
  (1 px shift: 0.31 against 0.39; deformations 0.107 against 0.140 at 0.16): its averaging brings
  the classes closer too. The CNN has the smallest rho under translations (0.157 at 1 px, 0.37 at
  8 px). Yet the scattering's linear classifier is the most robust to deformations.
* The random CNN's small rel is not stability: its features (ReLU, max pooling and global averaging
  of positive maps, with no trained biases) share a large common component, D / mean |Phi(x)| =
  0.12 against 0.85 (trained CNN), 0.71 (pixels), 0.42 (scattering J = 3). Relative to the distance
  between classes it is the least stable representation under deformations and under shifts of
  1 px or less, and 2.8 times less stable than the trained CNN under a 1-px shift: the trained
  CNN's stability relative to the classes is learned, not given by its pooling alone.

--quick (all 1347 training images, 60 test images, VGG width 8, 8 epochs, 3 shifts, 3 |grad tau|, 3
correlation lengths): 28 s of compute. CNN test accuracy 0.933 (0.933 on the 60), ridge on the random CNN
0.849 (0.767 on the 60); 1-px shift rel 0.131 (scattering J = 3), 0.184 (J = 2), 0.280 (pixels), 0.139
(CNN), 0.049 (random CNN), rho 0.17 (CNN) against 0.44 (random CNN); deformation rho of the random CNN
3.5 to 3.8 times the trained CNN's, D / mean |Phi(x)| 0.11 against 0.80; deformation slope 0.91
(scattering), 0.99 (pixels), 0.83 (random CNN); accuracy under a 4-px shift 0.88 (scattering J = 3)
against 0.20 (pixels). Over 12 draws of the seed and the data split: random over trained CNN rho 1.18
to 3.1 under a 1-px shift and at least 1.88 under deformations; the trained CNN's test accuracy above
the random CNN's ridge by 0.05 to 0.16. With width 4 (the quick mode until session 13; 21 s) the
trained CNN was the less stable of the two under deformations at one of these draws (ratio 0.72), and
level with it under a shift at another (1.02).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_positive
from shallow.backend import get_xp, to_device, to_numpy
from shallow.cnn import Adam, Sequential, fit, load_digits, predict, vgg_small
from shallow.cnn.ridge import RidgeClassifier
from shallow.cnn.robustness import deform, random_displacement
from shallow.cnn.scattering import Scattering2D

REQUIRES = ("sklearn",)  # the digits data set: the `data` extra
EXTRA = "data"

REPRESENTATIONS = ("pixels", "cnn", "random_cnn", "scattering_small", "scattering")


@dataclasses.dataclass(frozen=True)
class Config:
    J: int = 3  # the scattering's scale 2^J (and J - 1 for the second scattering curve)
    L: int = 8
    upsample: int = 3  # 8 x 8 digits -> 24 x 24,
    margin: int = 4  # then a border of background on each side: 32 x 32
    n_train: int = 0  # first n_train training images for the CNN and the ridge classifiers (0: all 1347)
    n_test: int = 300  # test images perturbed
    width: int = 8
    epochs: int = 12
    lr: float = 3e-3
    batch_size: int = 64
    ridge: float = 1e-3
    shifts: tuple = (0.5, 1.0, 2.0, 4.0, 8.0)
    grad_norms: tuple = (0.02, 0.04, 0.08, 0.16, 0.32)
    field_scale: float = 4.0
    scales: tuple = (1.0, 2.0, 4.0, 8.0, 16.0)
    scale_grad_norm: float = 0.1
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the CNN has trained."""
        check_integer(self.J, "J", minimum=2)  # the scattering at J against J - 1 (J = 1 drew J itself as "J=0")
        for name in ("L", "upsample", "width", "epochs", "batch_size"):
            check_integer(getattr(self, name), name, minimum=1)
        check_integer(self.margin, "margin", minimum=0)
        side = 8 * self.upsample + 2 * self.margin  # the images' side
        if side % 2**self.J:
            raise ValueError(f"J={self.J} does not suit images of side 8 upsample + 2 margin = {side}: the scattering "
                             f"subsamples by 2^J = {2**self.J}, which must divide it (change J, upsample or margin)")
        check_integer(self.n_train, "n_train", minimum=0, maximum=1347)  # the digits' training split: 1347 images
        check_integer(self.n_test, "n_test", minimum=2, maximum=450)  # the test split: 450 images
        for name in ("lr", "ridge", "field_scale", "scale_grad_norm"):
            check_positive(getattr(self, name), name)
        for name in ("shifts", "scales"):  # drawn on log axes
            study.check_grid(getattr(self, name), name, check_positive)
        study.check_grid(self.grad_norms, "grad_norms", check_positive, at_least=2)  # a slope is fitted over them


# n_train 0 (all 1347): trained on 500 the CNN was too weak at some seeds for the trained/random comparison
QUICK = {"n_train": 0, "n_test": 60, "epochs": 8, "width": 8, "lr": 5e-3, "shifts": (1.0, 2.0, 4.0), "grad_norms": (0.04, 0.08, 0.16),
         "scales": (1.0, 4.0, 16.0)}


def upsampled_digits(factor: int, margin: int):
    """Digits / 16, upsampled ``factor`` times (bilinear), with ``margin`` pixels of background around them.

    Returns (X_train, y_train, X_test, y_test), images of side 8 factor + 2 margin.
    """
    from scipy.ndimage import zoom

    data = load_digits(standardize=False)

    def up(X):
        Z = zoom(X / 16.0, (1, factor, factor, 1), order=1, grid_mode=True, mode="nearest")
        return np.pad(Z, ((0, 0), (margin, margin), (margin, margin), (0, 0)))

    return up(data.X_train), data.y_train, up(data.X_test), data.y_test


def compute(cfg: Config) -> dict:
    dev = cfg.device
    X, y, X_test, y_test = upsampled_digits(cfg.upsample, cfg.margin)
    if cfg.n_train:
        X, y = X[:cfg.n_train], y[:cfg.n_train]
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(X_test.shape[0], size=min(cfg.n_test, X_test.shape[0]), replace=False)
    Xt, yt = X_test[pick], y_test[pick]
    H, W = Xt.shape[1:3]
    X, Xt, X_test = to_device(X, dev), to_device(Xt, dev), to_device(X_test, dev)

    # the trained CNN, and its penultimate layer (after global average pooling) as a representation;
    # the random CNN: the same architecture at the same initialisation (same seed), never trained
    net = vgg_small((H, W, 1), 10, width=cfg.width, rng=cfg.seed, dtype=np.float32)
    random_net = vgg_small((H, W, 1), 10, width=cfg.width, rng=cfg.seed, dtype=np.float32)
    if dev != "cpu":
        net.to(dev)
        random_net.to(dev)
    f32 = lambda A: A.astype(np.float32)
    hist = fit(net, f32(X), to_device(y, dev), X_test=f32(X_test), y_test=to_device(y_test, dev),
               optimizer=Adam(net.named_parameters(), lr=cfg.lr), epochs=cfg.epochs, batch_size=cfg.batch_size,
               rng=cfg.seed, progress=study.show_progress())
    body = Sequential(*net.layers[:-1])
    random_body = Sequential(*random_net.layers[:-1])
    S = Scattering2D(cfg.J, (H, W), cfg.L)
    S_small = Scattering2D(cfg.J - 1, (H, W), cfg.L)
    reps = {
        "pixels": lambda A: A.reshape(A.shape[0], -1),
        "cnn": lambda A: predict(body, f32(A)).astype(np.float64),
        "random_cnn": lambda A: predict(random_body, f32(A)).astype(np.float64),
        "scattering_small": lambda A: S_small.features(A).reshape(A.shape[0], -1),
        "scattering": lambda A: S.features(A).reshape(A.shape[0], -1),
    }
    classify = {name: RidgeClassifier(cfg.ridge).fit(reps[name](X), y) for name in REPRESENTATIONS if name != "cnn"}

    def labels(name, A, F):
        if name == "cnn":
            return to_numpy(predict(net, f32(A)).argmax(axis=1))
        return classify[name].predict(F)

    # clean features, their norms |Phi(x)| and the between-class scale D_Phi
    xp = get_xp(Xt)
    norm = lambda A: to_numpy(xp.sqrt((A**2).sum(axis=1)))
    clean = {name: reps[name](Xt) for name in REPRESENTATIONS}
    size = {name: norm(F) for name, F in clean.items()}
    others = np.array([rng.choice(np.flatnonzero(yt != yt[i])) for i in range(len(yt))])
    D = {name: float(norm(F - F[xp.asarray(others)]).mean()) for name, F in clean.items()}

    def measure(A):
        """(rel, rho, accuracy) of each representation on the perturbed images A."""
        out = {}
        for name in REPRESENTATIONS:
            F = reps[name](A)
            d = norm(F - clean[name])
            out[name] = (float(np.mean(d / size[name])), float(d.mean()) / D[name],
                         float(np.mean(labels(name, A, F) == yt)))
        return out

    result = {"shifts": np.array(cfg.shifts, dtype=float), "grad_norms": np.array(cfg.grad_norms, dtype=float),
              "scales": np.array(cfg.scales, dtype=float), "cnn_test_accuracy": float(hist.test_accuracy[-1])}
    # ridge on the random CNN's features, on the whole test split like the trained CNN's accuracy (the n_test
    # images alone decide too coarsely between the two)
    result["random_cnn_test_accuracy"] = float(np.mean(classify["random_cnn"].predict(reps["random_cnn"](X_test))
                                                       == y_test))
    for name in REPRESENTATIONS:
        result[f"D_{name}"] = D[name]
        result[f"norm_{name}"] = float(size[name].mean())  # mean_x |Phi(x)|: D / norm = how spread the classes are
        result[f"accuracy_clean_{name}"] = float(np.mean(labels(name, Xt, clean[name]) == yt))

    def sweep(kind, fields):
        rows = {name: [] for name in REPRESENTATIONS}
        for tau in fields:
            m = measure(deform(Xt, to_device(tau, dev), fill=0.0))
            for name in REPRESENTATIONS:
                rows[name].append(m[name])
        for name in REPRESENTATIONS:
            rel, rho, acc = np.array(rows[name]).T
            result[f"rel_{kind}_{name}"], result[f"rho_{kind}_{name}"], result[f"accuracy_{kind}_{name}"] = rel, rho, acc

    def shift(c):
        tau = np.zeros((H, W, 2))
        tau[..., 1] = c
        return tau

    sweep("shift", [shift(c) for c in cfg.shifts])
    n = Xt.shape[0]
    sweep("deform", [random_displacement((n, H, W), grad_norm=g, scale=cfg.field_scale, rng=[cfg.seed, 1, i])
                     for i, g in enumerate(cfg.grad_norms)])
    fields = [random_displacement((n, H, W), grad_norm=cfg.scale_grad_norm, scale=s, rng=[cfg.seed, 2, i])
              for i, s in enumerate(cfg.scales)]
    result["tau_sup"] = np.array([float(np.abs(tau).max(axis=(1, 2, 3)).mean()) for tau in fields])
    sweep("scale", fields)

    one = int(np.argmin(np.abs(np.array(cfg.shifts) - 1.0)))
    for name in REPRESENTATIONS:
        for kind in ("rel", "rho"):
            result[f"slope_{kind}_deform_{name}"] = float(
                np.polyfit(np.log(cfg.grad_norms), np.log(result[f"{kind}_deform_{name}"]), 1)[0])
            result[f"growth_{kind}_scale_{name}"] = float(result[f"{kind}_scale_{name}"][-1]
                                                          / result[f"{kind}_scale_{name}"][0])
            result[f"{kind}_shift1_{name}"] = float(result[f"{kind}_shift_{name}"][one])
    return result


LABELS = {"pixels": "pixels", "cnn": "trained CNN (penultimate)", "random_cnn": "random CNN (same init, untrained)",
          "scattering_small": "scattering J={Js}", "scattering": "scattering J={J}"}
STYLES = {"pixels": ("C3", "o-"), "cnn": ("C1", "s-"), "random_cnn": ("C4", "v:"), "scattering_small": ("C2", "^--"),
          "scattering": ("C0", "D-")}


def _label_sweep_values(ax, values):
    """Ticks at the swept values, written out: on these log axes of one decade or less the default
    labels showed a single power of ten."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(values, [f"{v:.2g}" for v in values])


def plot(result: dict, cfg: Config):
    from matplotlib.ticker import NullFormatter

    fig, axes = study.new_figure(2, 4, size=(4.0, 3.4))
    label = {k: v.format(J=cfg.J, Js=cfg.J - 1) for k, v in LABELS.items()}
    x_of = {"shift": ("shifts", "horizontal translation c (pixels)"),
            "deform": ("grad_norms", r"$\|\nabla\tau\|_\infty$ (correlation length " + f"{cfg.field_scale:g} px)"),
            "scale": ("tau_sup", r"mean sup$_u |\tau(u)|$ (px) at $\|\nabla\tau\|_\infty$ = " + f"{cfg.scale_grad_norm:g}")}
    titles = {"shift": f"translations (2^J = {2 ** cfg.J} px)", "deform": "smooth random deformations",
              "scale": "same |grad tau|, growing displacement"}
    ylabels = {"rel": r"$|\Phi(L_\tau x) - \Phi(x)|\, /\, |\Phi(x)|$",
               "rho": r"$|\Phi(L_\tau x) - \Phi(x)|$ / between-class distance"}
    for row, kind in enumerate(("rel", "rho")):
        for col, sweep in enumerate(("shift", "deform", "scale")):
            ax = axes[row, col]
            key, xlabel = x_of[sweep]
            for name in REPRESENTATIONS:
                color, style = STYLES[name]
                extra = f" (slope {result[f'slope_{kind}_deform_{name}']:.2f})" if sweep == "deform" else ""
                ax.loglog(result[key], result[f"{kind}_{sweep}_{name}"], style, color=color, label=label[name] + extra)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabels[kind])
            ax.set_title(titles[sweep], fontsize=9)
            _label_sweep_values(ax, result[key])
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.legend(fontsize=6.5)
            ax.grid(True, which="major", alpha=0.3)
    for row, sweep in enumerate(("deform", "shift")):
        ax = axes[row, 3]
        key, xlabel = x_of[sweep]
        for name in REPRESENTATIONS:
            color, style = STYLES[name]
            ax.semilogx(result[key], result[f"accuracy_{sweep}_{name}"], style, color=color,
                        label=f"{label[name]} (clean {result[f'accuracy_clean_{name}']:.3f})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_title("classifiers: the trained CNN; ridge on the other features", fontsize=9)
        _label_sweep_values(ax, result[key])
        if sweep == "deform":  # accuracies in a narrow band: room below them for the legend, which hid a point
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo - 0.6 * (hi - lo), hi)
            ax.legend(fontsize=6.5, loc="lower left")
        else:
            ax.legend(fontsize=6.5)
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"Stability to translations and deformations (Mallat 2012): digits upsampled to "
                 f"{8 * cfg.upsample}x{8 * cfg.upsample} with a {cfg.margin}-pixel margin, {cfg.n_test} test images; "
                 f"scattering L={cfg.L}, order 2; VGG width {cfg.width}, {cfg.epochs} epochs "
                 f"(test accuracy {result['cnn_test_accuracy']:.3f})", fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
