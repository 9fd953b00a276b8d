r"""Lipschitz upper bounds of a CNN exceed its empirical local constant; spectral normalisation shrinks both.

Claim (Scaman & Virmaux 2018, arXiv:1805.10965; Combettes & Pesquet 2020, arXiv:1903.01014; Sedghi,
Gupta & Long 2019, arXiv:1805.10408; Madry et al. 2018, arXiv:1706.06083; Miyato et al. 2018,
arXiv:1802.05957; Moosavi-Dezfooli et al. 2017, arXiv:1610.08401), on a small VGG trained on
scikit-learn's 8x8 digits:

* every upper bound of the Lipschitz constant lies above the empirical local constant
  max_x |J_f(x)|_2 over the test images (the bounds are valid), and far above it for a standard
  network: the product of layer norms is loose by one to two orders of magnitude;
* the Combettes-Pesquet bound over relu chains ("averaged") is below the product of the norms
  (Lanczos iteration), itself below the certified product (FFT bound of each convolution);
* training with spectral normalisation (every convolution and linear layer projected to norm <= c
  after each step, by the certified FFT bound) divides the bound by a large factor and leaves a
  smaller gap to the local constant;
* PGD accuracy falls with the radius eps for both (L2 and Linf): a Lipschitz constraint alone,
  without margin training, does not make the network robust; the L2 radius margin / (sqrt(2) L)
  that L certifies is far below the radii at which PGD succeeds (L the averaged bound: a certificate
  up to its Lanczos tolerance, 1e-10 relative; with the certified FFT product the radii shrink in
  the ratio of the two bounds);
* one image-agnostic (universal) perturbation v, built on training images, changes the predicted
  label of a large fraction of the held-out test images (most of them at L2 radius 4, half the
  norm of an image), far more than a random v of the same norm, but fewer than per-image PGD at the
  same radius: a shared v needs more than twice the per-image radius for the same fooling rate.

Protocol
--------
Digits (stratified 25% test split, standardised; the first ``n_train`` training images); h =
:func:`shallow.cnn.vgg_small` without batch norm (two stages of two 3x3 convolutions and relu, 2x2 max
pooling, global average pooling, a linear layer), He initialisation, the same for both; Adam
(lr ``lr``), batch 64, ``epochs`` epochs; the spectrally normalised network is projected after every
step by :class:`shallow.cnn.robustness.SpectralProjection` (per-layer bound ``sn_bound``). Bounds
by :func:`shallow.cnn.robustness.lipschitz_upper_bound` ("product" with Lanczos iteration and with the
FFT bound, "averaged"), local constant by :func:`local_lipschitz` over the test set; PGD
(``pgd_steps`` steps of 2.5 eps / steps, no random start, cross-entropy) on the first ``n_attack``
test images for each eps in the grids. Universal perturbations: for each L2 radius in
``eps_universal``, :func:`shallow.cnn.robustness.universal_perturbation` (Algorithm 1 of
Moosavi-Dezfooli et al. with ``pgd_steps`` PGD steps of ``universal_step`` eps on the batch's
not-yet-fooled images in place of DeepFool, batches of ``universal_batch``, ``universal_epochs``
passes, the best epoch kept) on the first ``n_universal`` training images; its fooling rate, the
fraction of the 450 test images with k(x + v) != k(x) (k: the clean predicted label), against that of
per-image PGD-L2 (``pgd_steps`` steps, cross-entropy against k(x)) on the same images and the mean
over ``n_random`` random v uniform on the sphere of the same radius. Test images have L2 norm about 8
(median 8.0).

Measured (seed 0, the 2-core development machine)
-------------------------------------------------
Defaults (all 1347 training images, width 8, 20 epochs, per-layer bound 3, 200 attacked images, universal
v on 500 training images, 5 epochs): 41 s of compute (58 s in the gallery rerun of commit 37e81e5,
its sidecar's wall time). Test accuracy 0.953 (standard) and 0.929
(spectral). Standard: local constant 15.3 (median over the test set 9.2), averaged bound 349, product
429, certified FFT product 621 (the averaged bound is 23x the local constant). Spectral: local 7.2
(median 3.9), averaged 66, product 72, FFT product 103 (9x the local constant). PGD-L2 accuracy at eps =
0.25, 0.5, 1, 1.5, 2, 3: 0.935, 0.825, 0.565, 0.225, 0.065, 0.0 (standard) against 0.885, 0.81, 0.535,
0.27, 0.09, 0.005 (spectral); PGD-Linf at eps = 0.05, 0.1, 0.2, 0.3, 0.5: 0.915, 0.78, 0.46, 0.12, 0.005
against 0.87, 0.78, 0.44, 0.145, 0.015. Median L2 radius certified by the averaged bound 0.014
(standard) and 0.035 (spectral); by the certified FFT product, 0.0079 and 0.023.
The constraint at bound 3 per layer thus divides the bounds by 5-6 and the local constant by 2 without
making PGD weaker: robustness needs margins as well as a small constant (Tsuzuku et al. 2018). Tighter
per-layer bounds (1 or 2) train badly here: test accuracy 0.12 and 0.43 after 20 epochs with SGD or Adam
(dead relus and tiny logits). Fooling rates on the 450 test images at L2 radius 0.5, 1, 2, 3, 4:
universal v 0.016, 0.071, 0.27, 0.66, 0.87 (standard) and 0.049, 0.12, 0.38, 0.61, 0.80 (spectral);
per-image PGD 0.16, 0.42, 0.92, 1.0, 1.0 and 0.18, 0.45, 0.91, 1.0, 1.0; random v 0.011, 0.019, 0.035,
0.060, 0.095 and 0.014, 0.021, 0.043, 0.073, 0.12. On the 500 training images v was built on: 0.876 and
0.842 at radius 4 (it generalises). Half the test images are fooled at radius 1.16 (standard) or 1.10
(spectral) by PGD and 2.6 or 2.5 by one universal v (linear interpolation in the radius); the spectrally
normalised network is more fooled by small universal v (0.38 against 0.27 at radius 2) and less by large
ones.

--quick (600 training images, 10 epochs, 100 attacked images, eps_l2 in {0.5, 1, 2}, eps_linf in {0.1,
0.3}, universal v on 200 training images, 3 epochs, radii 1, 2, 4): 13 s of compute. Test accuracy 0.913
and 0.880; standard local 8.4, averaged 188, product 234, FFT 350; spectral local 4.3, averaged 48,
product 54, FFT 85; PGD-L2 accuracy 0.77, 0.57, 0.05 against 0.73, 0.53, 0.06; PGD-Linf 0.76, 0.10
against 0.72, 0.17. Fooling rates at L2 radius 1, 2, 4: universal v 0.080, 0.20, 0.76 (standard) and
0.12, 0.29, 0.80 (spectral); per-image PGD 0.51, 0.96, 1.0 and 0.47, 0.92, 1.0; random v 0.026, 0.053,
0.13 and 0.029, 0.060, 0.13. Over seeds 0-7 (11 to 13 s each): test accuracy 0.83-0.91 (standard) and
0.78-0.88 (spectral); universal v at radius 4 0.67-0.80 and 0.62-0.82; per-image PGD over universal v at
radius 2 2.4-4.7 and 2.0-3.1 times; universal fooling on test within 0.12 of that on the 200 training images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_positive
from shallow.backend import to_device, to_numpy
from shallow.cnn import Adam, build_model, evaluate, fit, load_digits, predict
from shallow.cnn.robustness import (
    ProjectedOptimizer,
    SpectralProjection,
    certified_radius,
    lipschitz_upper_bound,
    local_lipschitz,
    pgd,
    universal_perturbation,
)

REQUIRES = ("sklearn",)  # the digits data set: the `data` extra
EXTRA = "data"

MODELS = ("standard", "spectral")


@dataclasses.dataclass(frozen=True)
class Config:
    n_train: int = 0  # first n_train training images (0: all 1347)
    width: int = 8
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.003  # Adam
    sn_bound: float = 3.0  # per-layer operator-norm bound of the spectrally normalised network
    n_attack: int = 200  # test images attacked
    pgd_steps: int = 10
    eps_l2: tuple = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
    eps_linf: tuple = (0.05, 0.1, 0.2, 0.3, 0.5)
    n_universal: int = 500  # first training images the universal perturbation is built on
    eps_universal: tuple = (0.5, 1.0, 2.0, 3.0, 4.0)  # L2 radii of the universal perturbation
    universal_epochs: int = 5
    universal_batch: int = 32
    universal_step: float = 0.05  # inner step size / eps (pgd_steps steps per batch)
    n_random: int = 20  # random directions of the same norm (the baseline)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the two networks have trained."""
        check_integer(self.n_train, "n_train", minimum=0, maximum=1347)  # the digits' training split: 1347 images
        check_integer(self.n_universal, "n_universal", minimum=1, maximum=1347)
        check_integer(self.n_attack, "n_attack", minimum=1, maximum=450)  # the test split: 450 images
        for name in ("width", "epochs", "batch_size", "pgd_steps", "universal_epochs", "universal_batch", "n_random"):
            check_integer(getattr(self, name), name, minimum=1)
        for name in ("lr", "sn_bound", "universal_step"):
            check_positive(getattr(self, name), name)
        for name in ("eps_l2", "eps_linf", "eps_universal"):
            radii = getattr(self, name)
            if not radii:
                raise ValueError(f"{name} must list at least one radius eps > 0, got ()")
            for eps in radii:
                check_positive(eps, name)


QUICK = {"n_train": 600, "epochs": 10, "n_attack": 100, "eps_l2": (0.5, 1.0, 2.0),
         "eps_linf": (0.1, 0.3), "n_universal": 200, "eps_universal": (1.0, 2.0, 4.0), "universal_epochs": 3}


def train(cfg: Config, data, spectral: bool):
    """The trained model (a standard or a spectrally normalised VGG) and its test accuracy."""
    n = cfg.n_train or data.X_train.shape[0]
    X, y = to_device(data.X_train[:n], cfg.device), to_device(data.y_train[:n], cfg.device)
    model = build_model("vgg", data.in_shape, 10, width=cfg.width, batch_norm=False, rng=cfg.seed)
    if cfg.device != "cpu":
        model.to(cfg.device)
    opt = Adam(model.named_parameters(), lr=cfg.lr)
    if spectral:
        projection = SpectralProjection(data.in_shape, cfg.sn_bound)
        projection(model)
        opt = ProjectedOptimizer(opt, model, projection)
    fit(model, X, y, optimizer=opt, epochs=cfg.epochs, batch_size=cfg.batch_size, rng=cfg.seed,
        progress=study.show_progress())
    return model


def compute(cfg: Config) -> dict:
    data = load_digits()
    X_test, y_test = to_device(data.X_test, cfg.device), to_device(data.y_test, cfg.device)
    Xa, ya = X_test[:cfg.n_attack], y_test[:cfg.n_attack]
    result = {"eps_l2": np.array(cfg.eps_l2), "eps_linf": np.array(cfg.eps_linf),
              "eps_universal": np.array(cfg.eps_universal), "n_test": int(X_test.shape[0])}
    for name in MODELS:
        model = train(cfg, data, spectral=name == "spectral")
        result[f"{name}_test_accuracy"] = evaluate(model, X_test, y_test)[1]
        result[f"{name}_attacked_clean_accuracy"] = evaluate(model, Xa, ya)[1]  # eps = 0 of the PGD curves
        product = lipschitz_upper_bound(model, bound="product", method="power")
        averaged = lipschitz_upper_bound(model, bound="averaged", method="power")
        certified = lipschitz_upper_bound(model, bound="product", method="fft")
        local = to_numpy(local_lipschitz(model, X_test, reduce=None))
        result[f"{name}_product"] = product
        result[f"{name}_averaged"] = averaged
        result[f"{name}_product_fft"] = certified
        result[f"{name}_local"] = float(local.max())
        result[f"{name}_local_median"] = float(np.median(local))
        result[f"{name}_gap"] = averaged / float(local.max())
        for norm, grid in (("l2", cfg.eps_l2), ("linf", cfg.eps_linf)):
            acc = []
            for eps in grid:
                adv = pgd(model, Xa, ya, eps, norm="2" if norm == "l2" else "inf", steps=cfg.pgd_steps)
                acc.append(evaluate(model, adv, ya)[1])
            result[f"{name}_pgd_{norm}"] = np.array(acc)
        radius = to_numpy(certified_radius(model, Xa, ya, averaged))
        result[f"{name}_certified_l2_median"] = float(np.median(radius))
        result.update({f"{name}_{key}": value for key, value in universal(cfg, model, data, X_test).items()})
    return result


def universal(cfg: Config, model, data, X_test) -> dict:
    """Fooling rates on the test images of one universal v, of per-image PGD and of random v, per L2 radius.

    The fooling rate of a perturbation is the fraction of images whose predicted label k(x + v) differs
    from the clean prediction k(x). v is built on the first ``n_universal`` training images (Algorithm 1
    of Moosavi-Dezfooli et al. with a PGD inner step, keeping the best epoch on those images); PGD (the
    same steps, cross-entropy against k(x)) attacks each test image on its own; the random v are
    uniform on the sphere of radius eps.
    """
    X_u = to_device(data.X_train[:cfg.n_universal], cfg.device)
    k = predict_labels(model, X_test)
    directions = np.random.default_rng(cfg.seed).standard_normal((cfg.n_random,) + X_test.shape[1:])
    directions /= np.sqrt((directions.reshape(cfg.n_random, -1) ** 2).sum(axis=1)).reshape(-1, 1, 1, 1)
    directions = to_device(directions, cfg.device)
    out = {key: [] for key in ("universal_fooling", "universal_train_fooling", "pgd_fooling", "random_fooling")}
    for eps in cfg.eps_universal:
        v, rates = universal_perturbation(model, X_u, eps, norm="2", delta=0.0, max_epochs=cfg.universal_epochs,
                                          batch_size=cfg.universal_batch, steps=cfg.pgd_steps,
                                          step_size=cfg.universal_step * eps, rng=cfg.seed, keep_best=True)
        out["universal_train_fooling"].append(float(rates.max()))
        out["universal_fooling"].append(fooling_rate(model, X_test + v, k))
        adv = pgd(model, X_test, to_device(k, cfg.device), eps, norm="2", steps=cfg.pgd_steps)
        out["pgd_fooling"].append(fooling_rate(model, adv, k))
        out["random_fooling"].append(float(np.mean([fooling_rate(model, X_test + eps * d, k) for d in directions])))
    return {key: np.array(value) for key, value in out.items()}


def predict_labels(model, X):
    """The predicted labels argmax_j f_j(x) (numpy)."""
    return to_numpy(predict(model, X)).argmax(axis=1)


def fooling_rate(model, X_perturbed, k) -> float:
    """The fraction of the perturbed images whose predicted label differs from the clean one k."""
    return float(np.mean(predict_labels(model, X_perturbed) != k))


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 4, size=(4.4, 3.6))
    ax = axes[0, 0]
    # three short lines each: "(max over test)(Combettes-Pesquet)" ran together on two lines
    labels = ["local\n(max over\ntest)", "averaged\n(Combettes-\nPesquet)", "product\n(power it.)", "product\n(FFT,\ncertified)"]
    keys = ["local", "averaged", "product", "product_fft"]
    x = np.arange(len(keys))
    for i, name in enumerate(MODELS):
        values = [result[f"{name}_{k}"] for k in keys]
        ax.bar(x + (i - 0.5) * 0.38, values, width=0.38, label=f"{name} (test acc. {result[f'{name}_test_accuracy']:.3f})",
               color=f"C{i}")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("Lipschitz constant (L2)")
    ax.set_title("upper bounds vs empirical local constant", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    for j, (norm, title) in enumerate((("l2", "L2"), ("linf", r"L$\infty$"))):
        ax = axes[0, j + 1]
        eps = result[f"eps_{norm}"]
        for i, name in enumerate(MODELS):
            # eps = 0: the clean accuracy of the same n_attack images (it was that of all the test images)
            acc = np.concatenate([[result[f"{name}_attacked_clean_accuracy"]], result[f"{name}_pgd_{norm}"]])
            ax.plot(np.concatenate([[0.0], eps]), acc, "o-", color=f"C{i}", label=name)
        ax.set_xlabel(rf"radius $\epsilon$ ({title})")
        ax.set_ylabel(f"accuracy under PGD ({cfg.pgd_steps} steps)")
        ax.set_title(f"PGD-{title} accuracy on {cfg.n_attack} test images", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    ax = axes[0, 3]
    eps = np.concatenate([[0.0], result["eps_universal"]])
    for i, name in enumerate(MODELS):
        for key, style, label in (("pgd", "s--", "per-image PGD"), ("universal", "o-", "universal v"),
                                  ("random", "^:", "random v")):
            ax.plot(eps, np.concatenate([[0.0], result[f"{name}_{key}_fooling"]]), style, color=f"C{i}",
                    label=f"{name}: {label}", markersize=4)
    ax.set_xlabel(r"L2 radius $\epsilon$ of the perturbation")
    ax.set_ylabel(r"fooling rate: fraction with $k(x + v) \neq k(x)$")
    ax.set_title(f"one universal v (built on {cfg.n_universal} training images)\n"
                 f"vs per-image PGD, on the {result['n_test']} test images", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6)
    ax.grid(True, alpha=0.3)
    n = cfg.n_train or 1347
    fig.suptitle(f"Lipschitz bounds and adversarial accuracy on digits: VGG width {cfg.width}, no batch norm, "
                 f"n = {n}, {cfg.epochs} epochs Adam; spectral: every layer's norm <= {cfg.sn_bound:g}", fontsize=9)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
