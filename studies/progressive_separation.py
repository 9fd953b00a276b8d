r"""A trained CNN contracts each class and separates the classes progressively with depth.

Claim (the seed lecture's "progressive contraction & separation"; E. Oyallon, "Building a regular
decision boundary with deep networks", CVPR 2017, arXiv:1703.01775, Sec. 4, there on CIFAR with 1-NN
and Gaussian-SVM classifiers per layer; Jacobsen, Smeulders & Oyallon 2018, arXiv:1802.07088, Sec. 4.2,
for i-RevNets): along the layers Phi_1, ..., Phi_J of a trained CNN,

* the within-class spread relative to the total spread, r_j = tr S_W(Phi_j) / tr S_T(Phi_j), decreases
  (contraction of each class), and the Fisher ratio tr S_B / tr S_W increases (separation);
* a linear probe (ridge regression on one-hot targets, trained on the layer's training features)
  classifies the test set better and better;
* a random, untrained network of the same shape does neither: depth alone does not contract the classes.

Measurements
------------
For a layer's features Phi(x) in R^p of the n test images (class c has n_c images, mean mu_c; mu the
overall mean), the scatter traces are

    tr S_T = (1/n) sum_i |Phi(x_i) - mu|^2,    tr S_W = (1/n) sum_i |Phi(x_i) - mu_{y_i}|^2,
    tr S_B = sum_c (n_c / n) |mu_c - mu|^2 = tr S_T - tr S_W,

r = tr S_W / tr S_T in [0, 1] (1: no class structure; 0: each class a point) and the Fisher ratio
tr S_B / tr S_W = 1/r - 1. Both are invariant to a global scaling of the features. Also: the accuracy
of the nearest class mean (the class means of the training features) and of the linear probe
W = (Phi^T Phi + lambda I)^{-1} Phi^T Y on centred training features Phi (n_train, p) and centred
one-hot targets Y, lambda = ``ridge`` * tr(Phi^T Phi) / p (scale-free), predicting argmax of the
scores on the test features.

Protocol: scikit-learn's 8x8 digits (1347 training, 450 test images, standardised);
:func:`shallow.cnn.vgg_small` (two stages of conv3x3-BN-relu, conv3x3-BN-relu, 2x2 max pooling; widths
w, 2w; global average pooling; linear) trained by SGD (momentum 0.9, batch 64) with cross-entropy;
features in eval mode after every relu, every pooling, the global average pooling and the logits, and
the input itself. The random network is the same architecture at its initialisation (same seed), its
batch-norm statistics set from the training images (one pass in train mode with momentum 1), so
that it is as well normalised as the trained one. Numbers are means over ``n_seeds`` seeds.

Measured (the 2-core development machine, float64, seed 0)
----------------------------------------------------------
Layers: input, conv1, conv2, pool1, conv3, conv4, pool2, gap, logits.

Defaults (width 16, 30 epochs, 5 seeds; means over the seeds): 110 s (80 s in the gallery rerun of
commit 37e81e5). Test accuracy 0.981 (0.978 to 0.987).
Within/total variance r of the trained network 0.571, 0.619, 0.597, 0.530, 0.459, 0.344, 0.297, 0.205,
0.154 (Spearman correlation with depth, input to gap: -0.93); the untrained one 0.571, 0.621, 0.652, 0.629,
0.659, 0.691, 0.726, 0.719, 0.720 (+0.95): the first relu layer spreads the classes in both, after it
only the trained network contracts them. Fisher ratio 0.75 -> 3.9 at the GAP (5.5 at the logits),
untrained 0.75 -> 0.39. Few-label probe (10 labels per class, 5 draws) 0.868, 0.904, 0.926, 0.940,
0.957, 0.971, 0.974, 0.978, 0.979: increasing at every layer (Spearman 1.0); untrained 0.868 ... 0.903 at
conv2, then down to 0.692 at the GAP. Nearest class mean 0.884 -> 0.979 (untrained 0.884 -> 0.740).
The probe with all 1347 labels saturates at once: 0.940 on the pixels, 0.987 after the first layer and
0.98 to 0.99 at every later layer, in the untrained network too up to conv4 (0.967; 0.804 at the
GAP): with all labels, the first layer's 1024 random relu features already separate the digits
linearly, which is why the few-label probe is the measure of the claim.

--quick (width 8, 12 epochs, 1 seed, 3 probe draws): 9 s compute. Test accuracy 0.971; r 0.571 -> 0.222
at the GAP (Spearman -0.98), untrained 0.786 (+0.98); Fisher 0.75 -> 3.5; few-label probe 0.867 -> 0.955
(Spearman 0.98), untrained 0.574.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_integer, check_nonnegative, check_positive
from shallow.backend import to_device, to_numpy
from shallow.cnn import (
    SGD,
    Activation,
    BatchNorm2d,
    Cosine,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    fit,
    load_digits,
    vgg_small,
)

REQUIRES = ("sklearn",)  # the digits data set: the `data` extra
EXTRA = "data"


@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 16
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05  # SGD with momentum 0.9, cosine decay to 0
    momentum: float = 0.9
    ridge: float = 0.1  # lambda = ridge * tr(Phi^T Phi) / p
    probe_labels: int = 10  # training labels per class of the few-label probe
    probe_draws: int = 5  # random draws of those labels (accuracies averaged)
    n_seeds: int = 5
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the measurements."""
        for name in ("width", "epochs", "batch_size", "probe_draws", "n_seeds"):
            check_integer(getattr(self, name), name, minimum=1)
        # drawn without replacement from each class of the digits' training split (the smallest has 131 images)
        check_integer(self.probe_labels, "probe_labels", minimum=1, maximum=131)
        check_positive(self.lr, "lr")
        check_positive(self.ridge, "ridge")
        if not check_nonnegative(self.momentum, "momentum") < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")


QUICK = {"width": 8, "epochs": 12, "n_seeds": 1, "probe_draws": 3}


# ----------------------------------------------------------------------------- measurements
def scatter_ratios(Phi, y, n_classes):
    """(r, fisher): tr S_W / tr S_T and tr S_B / tr S_W of features Phi (n, p) with labels y (module notes)."""
    Phi = np.asarray(Phi, dtype=np.float64).reshape(len(y), -1)
    mu = Phi.mean(axis=0)
    means = np.stack([Phi[y == c].mean(axis=0) for c in range(n_classes)])  # (K, p)
    total = float(((Phi - mu) ** 2).sum()) / len(y)
    within = float(((Phi - means[y]) ** 2).sum()) / len(y)
    if total == 0.0:
        return 1.0, 0.0
    r = within / total
    return r, (np.inf if within == 0 else (total - within) / within)


def ncm_accuracy(Phi_train, y_train, Phi_test, y_test, n_classes):
    """Accuracy of the nearest class mean (means of the training features) on the test features."""
    P, Q = Phi_train.reshape(len(y_train), -1), Phi_test.reshape(len(y_test), -1)
    means = np.stack([P[y_train == c].mean(axis=0) for c in range(n_classes)])  # (K, p)
    d2 = (Q**2).sum(1)[:, None] - 2 * Q @ means.T + (means**2).sum(1)[None, :]
    return float((np.argmin(d2, axis=1) == y_test).mean())


def ridge_fit(P, Y, ridge=0.1):
    """(W, lambda): W = argmin |P W - Y|^2 + lambda |W|^2 with lambda = ridge * tr(P^T P) / p.

    Solved in the primal, W = (P^T P + lambda I_p)^{-1} P^T Y, when p <= n, and in the dual,
    W = P^T (P P^T + lambda I_n)^{-1} Y (the same matrix), when p > n.
    """
    import scipy.linalg

    n, p = P.shape
    lam = ridge * float((P * P).sum()) / p
    if p <= n:
        W = scipy.linalg.solve(P.T @ P + lam * np.eye(p), P.T @ Y, assume_a="pos")  # (p, K)
    else:
        W = P.T @ scipy.linalg.solve(P @ P.T + lam * np.eye(n), Y, assume_a="pos")
    return W, lam


def ridge_probe(Phi_train, y_train, Phi_test, y_test, n_classes, ridge=0.1):
    """Test accuracy of ridge regression (:func:`ridge_fit`) on centred features and centred one-hot targets."""
    P, Q = Phi_train.reshape(len(y_train), -1), Phi_test.reshape(len(y_test), -1)
    mean = P.mean(axis=0)
    Y = np.eye(n_classes)[y_train]
    W, _ = ridge_fit(P - mean, Y - Y.mean(axis=0), ridge)
    return float((np.argmax((Q - mean) @ W, axis=1) == y_test).mean())


# ----------------------------------------------------------------------------- the network's layers
def taps(net):
    """(name, index) of the recorded layers of a vgg_small: every relu, pooling, the GAP and the logits."""
    out, conv, pool = [], 0, 0
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Activation):
            conv += 1
            out.append((f"conv{conv}", i))
        elif isinstance(layer, MaxPool2d):
            pool += 1
            out.append((f"pool{pool}", i))
        elif isinstance(layer, GlobalAvgPool2d):
            out.append(("gap", i))
        elif isinstance(layer, Linear):
            out.append(("logits", i))
    return out


def layer_features(net, X, indices, batch_size=512):
    """The flattened outputs of the layers ``indices`` of a Sequential, on the host, in eval mode."""
    mode = net.training
    net.eval()
    feats = {i: [] for i in indices}
    try:
        for k in range(0, X.shape[0], batch_size):
            h = X[k:k + batch_size]
            for i, layer in enumerate(net.layers[:max(indices) + 1]):
                h = layer.forward(h)
                if i in feats:
                    feats[i].append(to_numpy(h).reshape(h.shape[0], -1))
    finally:
        net.train(mode)
    return {i: np.concatenate(v) for i, v in feats.items()}


def calibrate_batch_norm(net, X):
    """Set every batch norm's running statistics to those of X (one train-mode pass, momentum 1)."""
    bns = [layer for _, layer in net.named_layers() if isinstance(layer, BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 1.0
    net.train()
    net.forward(X)
    for bn, m in zip(bns, saved):
        bn.momentum = m
    net.eval()


def label_subsets(y, per_class, draws, rng):
    """``draws`` index sets of ``per_class`` training images of each class, drawn without replacement."""
    rng = np.random.default_rng(rng)
    classes = np.unique(y)
    return [np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes])
            for _ in range(draws)]


def measure(net, data, cfg, subsets):
    """Per tap (input first): r, Fisher ratio, NCM accuracy, probe accuracy (all labels, few labels)."""
    names = taps(net)
    indices = [i for _, i in names]
    tr, te = layer_features(net, data["X_train"], indices), layer_features(net, data["X_test"], indices)
    y_tr, y_te = data["y_train_host"], data["y_test_host"]
    rows = []
    for Phi_tr, Phi_te in [(data["X_train_host"], data["X_test_host"])] + [(tr[i], te[i]) for i in indices]:
        Phi_tr, Phi_te = Phi_tr.reshape(len(y_tr), -1), Phi_te.reshape(len(y_te), -1)
        r, fisher = scatter_ratios(Phi_te, y_te, 10)
        few = np.mean([ridge_probe(Phi_tr[s], y_tr[s], Phi_te, y_te, 10, cfg.ridge) for s in subsets])
        rows.append((r, fisher, ncm_accuracy(Phi_tr, y_tr, Phi_te, y_te, 10),
                     ridge_probe(Phi_tr, y_tr, Phi_te, y_te, 10, cfg.ridge), few))
    return ["input"] + [n for n, _ in names], np.array(rows)  # (L + 1, 5)


def run_seed(cfg: Config, seed: int, data: dict) -> dict:
    net = vgg_small((8, 8, 1), 10, width=cfg.width, rng=seed)
    if cfg.device != "cpu":
        net.to(cfg.device)
    calibrate_batch_norm(net, data["X_train"])
    subsets = label_subsets(data["y_train_host"], cfg.probe_labels, cfg.probe_draws, seed)
    _, random_rows = measure(net, data, cfg, subsets)
    steps = cfg.epochs * -(-data["X_train"].shape[0] // cfg.batch_size)
    opt = SGD(net.named_parameters(), lr=Cosine(cfg.lr, steps), momentum=cfg.momentum)
    hist = fit(net, data["X_train"], data["y_train"], X_test=data["X_test"], y_test=data["y_test"], optimizer=opt,
               epochs=cfg.epochs, batch_size=cfg.batch_size, rng=seed, progress=study.show_progress())
    names, trained_rows = measure(net, data, cfg, subsets)
    return {"names": names, "trained": trained_rows, "random": random_rows,
            "test_accuracy": hist.test_accuracy[-1]}


def compute(cfg: Config) -> dict:
    from scipy.stats import spearmanr

    digits = load_digits()
    data = {"X_train": to_device(digits.X_train, cfg.device), "y_train": to_device(digits.y_train, cfg.device),
            "X_test": to_device(digits.X_test, cfg.device), "y_test": to_device(digits.y_test, cfg.device),
            "X_train_host": digits.X_train, "X_test_host": digits.X_test,
            "y_train_host": digits.y_train, "y_test_host": digits.y_test}
    runs = [run_seed(cfg, cfg.seed + s, data) for s in range(cfg.n_seeds)]
    trained = np.stack([r["trained"] for r in runs])  # (seeds, L + 1, 5): the five measures below
    random = np.stack([r["random"] for r in runs])
    names = runs[0]["names"]
    result = {"layers": np.array(names), "test_accuracy": float(np.mean([r["test_accuracy"] for r in runs])),
              "test_accuracy_per_seed": np.array([r["test_accuracy"] for r in runs])}
    for j, key in enumerate(("within_ratio", "fisher", "ncm_accuracy", "probe_accuracy", "few_label_probe_accuracy")):
        result[f"{key}_trained"] = trained[:, :, j]
        result[f"{key}_random"] = random[:, :, j]
    r_tr, r_rd = trained[:, :, 0].mean(0), random[:, :, 0].mean(0)
    p_tr, p_rd = trained[:, :, 3].mean(0), random[:, :, 3].mean(0)
    f_tr, f_rd = trained[:, :, 4].mean(0), random[:, :, 4].mean(0)
    gap = names.index("gap")
    depth = np.arange(gap + 1)  # input ... gap: the hidden layers (the logits are the trained classifier itself)
    result.update({
        "within_ratio_input": float(r_tr[0]), "within_ratio_gap_trained": float(r_tr[gap]),
        "within_ratio_gap_random": float(r_rd[gap]),
        "probe_accuracy_input": float(p_tr[0]), "probe_accuracy_gap_trained": float(p_tr[gap]),
        "probe_accuracy_gap_random": float(p_rd[gap]),
        "spearman_within_ratio_trained": float(spearmanr(depth, r_tr[:gap + 1])[0]),
        "spearman_within_ratio_random": float(spearmanr(depth, r_rd[:gap + 1])[0]),
        "few_label_probe_input": float(f_tr[0]), "few_label_probe_gap_trained": float(f_tr[gap]),
        "few_label_probe_gap_random": float(f_rd[gap]),
        "spearman_few_label_probe_trained": float(spearmanr(depth, f_tr[:gap + 1])[0]),
        "spearman_few_label_probe_random": float(spearmanr(depth, f_rd[:gap + 1])[0]),
    })
    return result


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, 4, size=(4.2, 3.8))
    names = [str(n) for n in result["layers"]]
    x = np.arange(len(names))

    def band(ax, key, label, color, marker):
        for kind, ls in (("trained", "-"), ("random", "--")):
            v = result[f"{key}_{kind}"]
            c = color if kind == "trained" else "0.55"
            ax.plot(x, v.mean(0), ls, marker=marker, color=c, ms=4, label=f"{label}, {kind}")
            if v.shape[0] > 1:
                ax.fill_between(x, v.min(0), v.max(0), color=c, alpha=0.2)

    ax = axes[0, 0]
    band(ax, "within_ratio", "tr $S_W$ / tr $S_T$", "C0", "o")
    ax.set_ylabel("within-class / total variance (test set)")
    ax.set_title(f"contraction: {result['within_ratio_input']:.2f} (input) -> "
                 f"{result['within_ratio_gap_trained']:.2f} (GAP)\nrandom network: "
                 f"{result['within_ratio_gap_random']:.2f} at GAP", fontsize=9)
    ax = axes[0, 1]
    band(ax, "fisher", "tr $S_B$ / tr $S_W$", "C1", "s")
    ax.set_yscale("log")
    ax.set_ylabel("Fisher ratio (test set)")
    ax.set_title("separation: between- / within-class variance", fontsize=9)
    ax = axes[0, 2]
    band(ax, "few_label_probe_accuracy", f"ridge probe, {cfg.probe_labels} labels/class", "C2", "^")
    band(ax, "ncm_accuracy", "nearest class mean", "C3", "v")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"few-label linear probe: {result['few_label_probe_input']:.3f} (input) -> "
                 f"{result['few_label_probe_gap_trained']:.3f} (GAP)\nrandom network: "
                 f"{result['few_label_probe_gap_random']:.3f} at GAP", fontsize=9)
    ax = axes[0, 3]
    band(ax, "probe_accuracy", "ridge probe, all labels", "C4", "D")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"linear probe, all {1347} labels: {result['probe_accuracy_input']:.3f} (input) -> "
                 f"{result['probe_accuracy_gap_trained']:.3f} (GAP)\nrandom network: "
                 f"{result['probe_accuracy_gap_random']:.3f} at GAP", fontsize=9)
    for ax in axes[0]:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, fontsize=8)
        ax.set_xlabel("layer")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Progressive contraction and separation (Oyallon 2017) in a VGG on digits: width {cfg.width}, "
                 f"{cfg.epochs} epochs, test accuracy {result['test_accuracy']:.3f}; dashed: the same network "
                 f"untrained; {cfg.n_seeds} seed(s), bands min-max", fontsize=9.5)
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
