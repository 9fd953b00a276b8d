r"""An invertible network classifies digits nearly as well as a CNN while its deepest features still hold the whole image.

Claim (J.-H. Jacobsen, A. Smeulders and E. Oyallon, "i-RevNet: deep invertible networks", ICLR 2018,
arXiv:1802.07088, Sec. 3-4 and Fig. 4; the seed lecture's "one can easily build invertible CNNs"):
discarding information about the input is not needed to classify well. An i-RevNet
(:func:`shallow.cnn.irevnet_small`: space-to-depth, injective padding, additive-coupling blocks
(x_1, x_2) -> (S x_2, S x_1 + F(x_2)), then batch norm, relu, global average pooling and a linear layer)

* reaches a test accuracy on digits close to that of a standard CNN with about as many parameters
  (:func:`shallow.cnn.vgg_small`);
* and recovers every test image exactly, up to rounding, from its representation after ANY layer k:
  x = Phi_k^{-1}(Phi_k(x)) with the explicit inverse x_2 = S^{-1} y_1, x_1 = S^{-1}(y_2 - F(x_2)),
  relative error ~ 1e-15 in float64;
* whereas a standard CNN's layers lose information: inverting a VGG layer by gradient descent on the
  input (the seed's "reconstruction from a given layer"; A. Mahendran and A. Vedaldi, "Understanding
  deep image representations by inverting them", CVPR 2015, arXiv:1412.0035, without their image
  prior; A. Dosovitskiy and T. Brox, arXiv:1506.02753, learn the inverse instead),
  min_x |phi(x) - phi(x_0)|^2 / |phi(x_0)|^2 from x = 0 (the mean image) with Adam, does not return the
  image once pooling has discarded information, and the relative error |x - x_0| / |x_0| grows with depth.

Protocol: scikit-learn's 8x8 digits (1347 training, 450 test images, standardised); both networks
trained by SGD (momentum 0.9, cosine decay of the step to 0, batch 64) with cross-entropy for the
same number of epochs, evaluated in eval mode (batch-norm running statistics). Reconstructions: the
i-RevNet from every layer on the whole test set; the VGG from its first relu, first pooling, last relu,
second pooling and global average pooling on ``n_show`` test images (``inversion_steps`` Adam steps,
step ``inversion_lr`` decaying to 0 on a cosine schedule).

Measured (the 2-core development machine, float64, seed 0)
----------------------------------------------------------
Defaults (i-RevNet width 16, 2 blocks per stage: 33,354 parameters, representation 2x2x64 = 256
numbers; VGG width 24: 37,282 parameters; 30 epochs each; 8 images inverted by 1000 Adam steps):
22 s (31 s in the gallery rerun of commit 37e81e5, its sidecar's wall time).
Test accuracy 0.967 (i-RevNet) and 0.980 (VGG). i-RevNet reconstruction error, max over the 450 test
images: exactly 0 from the input, the space-to-depth and the padding, then 6.9e-17, 2.0e-16, 4.1e-16,
6.6e-16 after the four coupling blocks (rounding-level values that vary from run to run: the
gallery's sidecar has a largest error over all layers of 6.1e-16). VGG, mean relative error of the
gradient-descent inversion: 3.2e-16 (relu1: 1536 features of 64 pixels, recovered exactly),
0.064 (pool1), 0.43 (relu4), 0.89
(pool2), 1.14 (GAP, 48 numbers for 64 pixels: not injective; the features are matched to 5.5% while
the image is lost). At the pooled layers the feature residual also stays at 0.03 to 0.15: the
inversion problem is non-convex, and a lossy layer leaves gradient descent neither the image nor,
always, a preimage.

--quick (i-RevNet width 8, 1 block per stage, 3,642 parameters; VGG width 8, 4,370 parameters; 8 epochs;
6 images, 200 steps): 6 s compute. Test accuracy 0.947 and 0.956; i-RevNet error at most 2.4e-16;
VGG error 3.2e-3 (relu1), 0.49 (pool1), 1.01, 1.11, 1.20 (GAP).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_nonnegative, check_positive
from shallow.backend import get_xp, to_device, to_numpy
from shallow.cnn import (
    SGD,
    Activation,
    Adam,
    Cosine,
    GlobalAvgPool2d,
    MaxPool2d,
    Model,
    Sequential,
    fit,
    load_digits,
    vgg_small,
)
from shallow.cnn.revnet import InjectivePad, SpaceToDepth, irevnet_small

REQUIRES = ("sklearn",)  # the digits data set: the `data` extra
EXTRA = "data"


@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 16  # i-RevNet: channels of the first stage (4x at the second)
    blocks: int = 2  # i-RevNet: coupling blocks per stage
    vgg_width: int = 24  # about as many parameters as the i-RevNet (37.3k vs 33.4k)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    n_show: int = 8  # test images inverted through the VGG (and shown)
    inversion_steps: int = 1000
    inversion_lr: float = 0.05
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the two networks have trained."""
        # the i-RevNet: at least the 4 channels of its 2x2 space-to-depth, even (its couplings split them in halves)
        if check_integer(self.width, "width", minimum=4) % 2:
            raise ValueError(f"width must be even (and >= 4), got {self.width}")
        for name in ("blocks", "vgg_width", "epochs", "batch_size", "inversion_steps"):
            check_integer(getattr(self, name), name, minimum=1)
        check_integer(self.n_show, "n_show", minimum=1, maximum=450)  # 450: the digits' test split
        check_positive(self.lr, "lr")
        check_positive(self.inversion_lr, "inversion_lr")
        if not check_nonnegative(self.momentum, "momentum") < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")


QUICK = {"width": 8, "blocks": 1, "vgg_width": 8, "epochs": 8, "n_show": 6, "inversion_steps": 200}


def train(net, data, cfg):
    """SGD with momentum and a cosine step on cross-entropy; returns the per-epoch test accuracies."""
    model = Model(net, (8, 8, 1), 10)
    steps = cfg.epochs * -(-data.X_train.shape[0] // cfg.batch_size)
    opt = SGD(model.named_parameters(), lr=Cosine(cfg.lr, steps), momentum=cfg.momentum)
    hist = fit(model, data.X_train, data.y_train, X_test=data.X_test, y_test=data.y_test, optimizer=opt,
               epochs=cfg.epochs, batch_size=cfg.batch_size, rng=cfg.seed, progress=study.show_progress())
    net.eval()
    return np.array(hist.test_accuracy)


def relative_errors(x_rec, x):
    """|x_rec - x| / |x| per image, on the host."""
    xp = get_xp(x)
    num = xp.sqrt(((x_rec - x) ** 2).sum(axis=(1, 2, 3)))
    den = xp.sqrt((x**2).sum(axis=(1, 2, 3)))
    return to_numpy(num / den)


def irevnet_layer_names(net):
    """input, S2D (space-to-depth), pad (injective padding), rev1, rev2, ... ("/2": a stride-2 block)."""
    names, blocks = ["input"], 0
    for layer in net.body.layers:
        if isinstance(layer, SpaceToDepth):
            names.append("S2D")
        elif isinstance(layer, InjectivePad):
            names.append("pad")
        else:
            blocks += 1
            names.append(f"rev{blocks}" + ("/2" if getattr(layer, "stride", 1) == 2 else ""))
    return names


def vgg_taps(net):
    """(name, index) of the VGG layers inverted: first and last relu, each pooling, the GAP."""
    relus = [i for i, layer in enumerate(net.layers) if isinstance(layer, Activation)]
    pools = [i for i, layer in enumerate(net.layers) if isinstance(layer, MaxPool2d)]
    gap = [i for i, layer in enumerate(net.layers) if isinstance(layer, GlobalAvgPool2d)]
    taps = [("relu1", relus[0]), ("pool1", pools[0]), (f"relu{len(relus)}", relus[-1])]
    taps += [(f"pool{j + 1}", p) for j, p in enumerate(pools) if j > 0]
    return sorted(taps + [("gap", gap[0])], key=lambda t: t[1])


def invert_by_gradient_descent(phi, target, x0, steps, lr):
    r"""argmin_x sum_i |phi(x_i) - target_i|^2 / |target_i|^2 by Adam from x0, with phi's backward for the gradient.

    The step decays from ``lr`` to 0 on a cosine schedule over ``steps`` steps.

    Returns (x, relative feature residual per image).
    """
    xp = get_xp(target)
    t2 = (target.reshape(target.shape[0], -1) ** 2).sum(axis=1)  # (N,)
    scale = (2.0 / t2).reshape((-1,) + (1,) * (target.ndim - 1))
    x = x0.copy()
    opt = Adam({"x": x}, lr=Cosine(lr, steps))
    for _ in range(steps):
        r = phi.forward(x) - target
        opt.step({"x": phi.backward(r * scale)})
    r = phi.forward(x) - target
    res = xp.sqrt((r.reshape(r.shape[0], -1) ** 2).sum(axis=1) / t2)
    return x, to_numpy(res)


def compute(cfg: Config) -> dict:
    digits = load_digits()
    dev = cfg.device
    data = dataclasses.replace(digits, X_train=to_device(digits.X_train, dev), y_train=to_device(digits.y_train, dev),
                               X_test=to_device(digits.X_test, dev), y_test=to_device(digits.y_test, dev))
    rev = irevnet_small((8, 8, 1), 10, width=cfg.width, blocks=cfg.blocks, rng=cfg.seed)
    vgg = vgg_small((8, 8, 1), 10, width=cfg.vgg_width, rng=cfg.seed)
    if dev != "cpu":
        rev.to(dev)
        vgg.to(dev)
    acc_rev, acc_vgg = train(rev, data, cfg), train(vgg, data, cfg)

    X = data.X_test
    result = {"test_accuracy_curve_irevnet": acc_rev, "test_accuracy_curve_vgg": acc_vgg,
              "test_accuracy_irevnet": float(acc_rev[-1]), "test_accuracy_vgg": float(acc_vgg[-1]),
              "parameters_irevnet": rev.num_parameters(), "parameters_vgg": vgg.num_parameters()}

    # i-RevNet: exact reconstruction from every layer, on the whole test set
    errors = np.array([relative_errors(rev.reconstruct(rev.features(X, k), k), X) for k in range(rev.depth + 1)])
    result["irevnet_layers"] = np.array(irevnet_layer_names(rev))
    result["irevnet_feature_size"] = np.array([int(np.prod(rev.feature_shape(k))) for k in range(rev.depth + 1)])
    result["irevnet_error_max"] = errors.max(axis=1)
    result["irevnet_error_mean"] = errors.mean(axis=1)
    result["irevnet_error_max_all_layers"] = float(errors.max())
    x_show = X[:cfg.n_show]
    result["images"] = to_numpy(x_show)[..., 0]
    result["irevnet_reconstruction"] = to_numpy(rev.inverse(rev.features(x_show)))[..., 0]

    # VGG: reconstruction by gradient descent on the input, from x = 0 (the mean image)
    taps = vgg_taps(vgg)
    result["vgg_layers"] = np.array([name for name, _ in taps])
    errs, residuals, sizes = [], [], []
    for j, (name, i) in enumerate(taps):
        phi = Sequential(*vgg.layers[:i + 1])
        target = phi.forward(x_show)
        x, res = invert_by_gradient_descent(phi, target, get_xp(x_show).zeros_like(x_show), cfg.inversion_steps,
                                            cfg.inversion_lr)
        err = relative_errors(x, x_show)
        result[f"vgg_reconstruction_{j}"] = to_numpy(x)[..., 0]
        errs.append(err)
        residuals.append(res)
        sizes.append(int(np.prod(target.shape[1:])))
    errs, residuals = np.array(errs), np.array(residuals)  # (taps, n_show)
    result["vgg_feature_size"] = np.array(sizes)
    result["vgg_error_mean"] = errs.mean(axis=1)
    result["vgg_error_min"] = errs.min(axis=1)
    result["vgg_feature_residual_mean"] = residuals.mean(axis=1)
    result["vgg_error_first_layer"] = float(errs[0].mean())
    result["vgg_error_gap"] = float(errs[-1].mean())
    return result


def _mosaic(columns, pad=1):
    """Images (n, 8, 8) per column -> one array with a blank border between tiles."""
    n, h, w = columns[0].shape
    out = np.full((n * (h + pad) - pad, len(columns) * (w + pad) - pad), np.nan)
    for c, imgs in enumerate(columns):
        for r in range(n):
            out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = imgs[r]
    return out


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 3, size=(5.0, 4.4))
    vgg_names = [str(n) for n in result["vgg_layers"]]
    rev_names = [str(n) for n in result["irevnet_layers"]]

    ax = axes[0, 0]
    cols = [result["images"], result["irevnet_reconstruction"]]
    cols += [result[f"vgg_reconstruction_{j}"] for j in range(len(vgg_names))]
    lo, hi = np.percentile(result["images"], [1, 99])
    ax.imshow(_mosaic(cols), cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([4 + 9 * c for c in range(len(cols))])
    ax.set_xticklabels(["input", "i-RevNet\n$\\Phi^{-1}\\Phi(x)$"] + [f"VGG\n{n}" for n in vgg_names], fontsize=7.5)
    ax.set_yticks([])
    ax.set_title("reconstructions: i-RevNet from its deepest layer (exact),\nVGG layers by gradient descent "
                 f"on the input ({cfg.inversion_steps} Adam steps from 0)", fontsize=9)

    ax = axes[0, 1]
    floor = 1e-17
    k = np.arange(len(rev_names))
    ax.semilogy(k / (len(k) - 1), np.maximum(result["irevnet_error_max"], floor), "o-", color="C0",
                label="i-RevNet, exact inverse (max over the test set)")
    t = np.arange(1, len(vgg_names) + 1) / len(vgg_names)
    ax.semilogy(t, result["vgg_error_mean"], "s-", color="C3", label="VGG, gradient descent (mean)")
    ax.semilogy(t, np.maximum(result["vgg_feature_residual_mean"], floor), "^:", color="C3", alpha=0.6,
                label=r"VGG, feature residual $|\phi(x) - \phi(x_0)| / |\phi(x_0)|$")
    for kk, name in zip(k, rev_names):
        ax.annotate(name, (kk / (len(k) - 1), max(result["irevnet_error_max"][kk], floor)), fontsize=6.5,
                    xytext=(0, 5), textcoords="offset points", ha="center", color="C0")
    for tt, name, e in zip(t, vgg_names, result["vgg_error_mean"]):
        ax.annotate(name, (tt, e), fontsize=6.5, xytext=(0, 5), textcoords="offset points", ha="center", color="C3")
    ax.axhline(floor, color="0.7", lw=0.8)
    ax.set_ylim(floor / 3, 10)
    ax.set_xlabel("relative depth of the layer")
    ax.set_ylabel(r"reconstruction error $|x - x_0| / |x_0|$")
    ax.set_title(f"i-RevNet: at most {result['irevnet_error_max_all_layers']:.1e} at every layer "
                 f"(exact zeros drawn at {floor:g})\nVGG: {result['vgg_error_first_layer']:.1e} at relu1 -> "
                 f"{result['vgg_error_gap']:.2f} at GAP", fontsize=9)
    ax.legend(fontsize=7, loc="center left")
    ax.grid(True, which="major", alpha=0.3)

    ax = axes[0, 2]
    for key, label, c in (("irevnet", "i-RevNet", "C0"), ("vgg", "VGG", "C3")):
        curve = result[f"test_accuracy_curve_{key}"]
        ax.plot(np.arange(1, curve.size + 1), curve, "o-", ms=2.5, color=c,  # a marker: one epoch is one point
                label=f"{label} ({result[f'parameters_{key}']} parameters): {result[f'test_accuracy_{key}']:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    # from just below the lowest accuracy (a floor at 0.5 hid the curves of short runs below it)
    ax.set_ylim(max(0.0, min(result["test_accuracy_curve_irevnet"].min(), result["test_accuracy_curve_vgg"].min())
                    - 0.02), 1.0)
    ax.set_title("both classify the digits; only one discards information", fontsize=9)
    ax.legend(fontsize=7.5)
    ax.grid(True, alpha=0.3)
    fig.suptitle(f"Invertible features (Jacobsen, Smeulders & Oyallon 2018) on digits: i-RevNet width {cfg.width}, "
                 f"{cfg.blocks} block(s) per stage, vs VGG width {cfg.vgg_width}; {cfg.epochs} epochs each",
                 fontsize=9.5)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
