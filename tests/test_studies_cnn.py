"""The CNN studies' quick modes run, write their figures and sidecars, and their claims hold.

Tolerances are stated with their reasons; each holds at the studies' fixed seed (seed = 0), and
cnn_vs_shallow's at seeds 0..7 of its quick mode, from whose spread they are set.
"""

import numpy as np
import pytest

from shallow import cli


def test_cnn_lazy_vs_meanfield_lazy_end_generalises_worse_and_weight_change_like_1_over_alpha(tmp_path, run_quick):
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    # Chizat, Oyallon & Bach 2019, Fig. 3 style, small VGG on digits (quick: 300 training images,
    # width 4, 40 epochs, alpha in {0.1, 4.6, 215, 1e4}).
    _, result = run_quick("cnn_lazy_vs_meanfield", tmp_path)
    acc = result["test_accuracy"]
    # The non-lazy end learns (measured 0.844 test accuracy; chance is 0.1).
    assert result["test_accuracy_small_alpha"] > 0.75
    # ... on the test set: the best test accuracy over the alphas <= 1 (the training accuracy would flatter
    # the non-lazy end, which fits its 300 images better than it generalises)
    small = result["alpha"] <= 1.0
    assert result["test_accuracy_small_alpha"] == acc[small].max()
    assert acc[small].max() - acc[-1] > 0.05
    # "Clearly worse" at the lazy end: at least 5 points of test accuracy below the best alpha <= 1
    # (measured gap 0.158: 0.844 vs 0.687), at the end of training and best along training.
    assert result["accuracy_gap"] > 0.05
    assert result["test_accuracy_best"][0] - result["test_accuracy_best"][-1] > 0.05
    # The lazy limit is reached: the two largest alphas give the same test accuracy within 2 points
    # (the same kernel-flow endpoint; measured 0.687 and 0.687).
    assert abs(acc[-1] - acc[-2]) < 0.02
    # The relative weight change falls like 1/alpha at the large-alpha end: fitted slope within 0.15 of -1
    # (measured -1.000), and decreases monotonically along the whole grid.
    assert abs(result["weight_change_slope"] + 1) < 0.15
    assert np.all(np.diff(result["weight_change"]) < 0)
    # Every point trained without diverging and fits the training set far better than chance.
    assert np.all(result["train_accuracy"] > 0.5)


def test_cnn_lazy_vs_meanfield_step_rule():
    # lr0 * min(1, alpha): constant above alpha = 1, proportional to alpha below.
    module = cli.load_study("cnn_lazy_vs_meanfield")
    assert module.step_size(1e4, 0.02) == 0.02 and module.step_size(1.0, 0.02) == 0.02
    assert np.isclose(module.step_size(0.01, 0.02), 2e-4)
    grid = module.alphas(module.Config())
    assert grid[0] == 1e-2 and np.isclose(grid[-1], 1e5) and grid.size == 8


# ----------------------------------------------------------------------------- cnn_vs_shallow

def _closed_form_relu_ntk(A, B):
    """Theta(z, z') = (sin t + (pi - t) cos t) / (2 pi) + cos t (pi - t) / (2 pi), t the angle, for unit rows."""
    c = np.clip(A @ B.T, -1.0, 1.0)
    t = np.arccos(c)
    return (np.sin(t) + (np.pi - t) * c) / (2 * np.pi) + c * (np.pi - t) / (2 * np.pi)


def test_cnn_vs_shallow_ntk_predictor_matches_closed_form_kernel_ridge():
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    # The study's NTK point (library kernel + kernel_regression, one class at a time) against an independent
    # computation: inputs put on S^64 by hand, the arc-cosine closed form of the relu NTK (Jacot et al. 2018;
    # Cho & Saul 2009), and one linear solve for the ten one-hot targets, f = Theta(., Z) (Theta + n lambda I)^-1 Y.
    from shallow.cnn import load_digits

    module = cli.load_study("cnn_vs_shallow")
    cfg = module.Config()
    n = 60
    point = {"method": "ntk", "n": n, "subset": 1, "seed": 0, "device": "cpu", "ridge": cfg.ridge}
    got = module.train_point(point)
    data = load_digits()
    keep = module.subset(data.y_train, n, index=1, seed=0)

    def on_sphere(X):
        x = X.reshape(X.shape[0], -1)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.hstack([x, np.ones((x.shape[0], 1))]) / np.sqrt(2)

    Z, Z_test = on_sphere(data.X_train[keep]), on_sphere(data.X_test)
    Y = np.eye(10)[data.y_train[keep]]
    coef = np.linalg.solve(_closed_form_relu_ntk(Z, Z) + n * cfg.ridge * np.eye(n), Y)
    expected = float((np.argmax(_closed_form_relu_ntk(Z_test, Z) @ coef, axis=1) == data.y_test).mean())
    # Same mathematics in float64 (an eigendecomposition against a solve): the outputs agree to ~1e-9, so the
    # predicted classes agree unless two outputs tie to that level; allow one test image in 450 for such a tie.
    assert abs(got["test_accuracy"] - expected) <= 1 / 450 + 1e-12
    # Near-interpolation (lambda = 1e-6): every training image is classified correctly.
    assert got["train_accuracy"] == 1.0


def test_cnn_vs_shallow_subsets_are_stratified_and_independent():
    # A stratified subset of n = 50 of the 1347 training labels holds 5 images of each of the 10 classes;
    # two subset indices give different subsets; n = N gives every index.
    module = cli.load_study("cnn_vs_shallow")
    y = np.repeat(np.arange(10), 135)[:1347]  # class sizes 135 (nine of them) and 132, like the digits' split
    a, b = module.subset(y, 50, index=0), module.subset(y, 50, index=1)
    assert a.size == 50 and np.array_equal(np.bincount(y[a], minlength=10), np.full(10, 5))
    assert not np.array_equal(a, b)
    assert np.array_equal(module.subset(y, 1347), np.arange(1347))
    with pytest.raises(ValueError, match="n"):
        module.subset(y, 0)
    with pytest.raises(ValueError, match="sizes"):
        module.check_config(module.Config(sizes=(100, 50)))


def test_cnn_vs_shallow_cnn_leads_at_small_n_kernels_agree_mean_field_below_ntk(tmp_path, run_quick):
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    # Quick mode: n in {50, 300}, 2 stratified subsets each, CNN width 32 for 150 Adam steps, ten mean-field
    # nets of m = 100 to t = 1200, NTK and M = 1000 random features with ridge 1e-6, scored on 450 test images.
    # Every check counts images: correct test images summed over the 2 subsets (out of 900; 9 = 1 point), an
    # integer, so that no bound sits on a float that rounds across it (one image computed as 0.00222...35 > 1/450).
    # The bounds come from seeds 0..7 of the quick mode (the numbers quoted are their range, in counts of 900);
    # seed 0's bounds, fitted to it, failed at seeds 1, 2 and 4.
    _, result = run_quick("cnn_vs_shallow", tmp_path)
    n_subsets = 2
    assert result["sizes"].tolist() == [50, 300] and result["test_accuracy_cnn"].shape == (2, n_subsets)
    methods = ("cnn", "mean_field", "ntk", "random_features")
    correct = {}
    for m in methods:
        # the mean over the subsets, each subset's accuracy counted (the best subset would flatter a learner)
        np.testing.assert_allclose(result[f"mean_test_accuracy_{m}"], result[f"test_accuracy_{m}"].mean(axis=1),
                                   rtol=1e-12)
        c = result[f"mean_test_accuracy_{m}"] * 450 * n_subsets  # (2,) at n = 50, 300
        assert np.allclose(c, np.rint(c), rtol=0, atol=1e-6), m
        correct[m] = np.rint(c).astype(int)
    # Every learner learns: above 75% (675) at both sizes, chance being 10% (lowest measured: random features
    # 729-771, mean field 753-794, NTK 764-792, CNN 781-825, all at n = 50).
    # It improves from n = 50 to 300 by more than 3 points (27); measured CNN 47-92, mean field 47-90, NTK 69-102,
    # random features 83-131 (the seed-0 bound of 5 points, 45, was cleared by only 2 to 4 at seeds 3, 4 and 6).
    for m in methods:
        assert np.all(correct[m] > 675), (m, correct[m])
        assert correct[m][1] - correct[m][0] > 27, (m, correct[m])
    # The CNN leads at the smallest size: above the best shallow learner by more than 2 images per subset (4;
    # measured 17-44), and its lead is largest there (lead at 50 minus lead at 300: measured 10-41).
    lead = correct["cnn"] - np.max([correct[m] for m in methods[1:]], axis=0)
    assert np.array_equal(lead, np.rint(result["cnn_advantage"] * 450 * n_subsets).astype(int))
    assert lead[0] > 4, lead
    assert lead[0] > lead[1], lead
    # The two kernel predictors agree within 6 points (54) at n = 50 and within 3 points (27) at n = 300;
    # measured NTK minus random features 16-36 at n = 50 (the NTK ahead at every seed: M = 1000 features of
    # a different kernel, the arc-cosine one, with relative noise ~ M^-1/2) and 3-17 at n = 300. The seed-0
    # bound of 4 points (36) over both sizes was met exactly at seed 2 and failed.
    gap = np.abs(correct["ntk"] - correct["random_features"])
    assert gap[0] < 54 and gap[1] < 27, gap
    # At the larger size the mean-field networks are below the NTK predictor by more than one image per subset
    # (2; measured 8-25). Not at n = 50: there they range from 10 above the NTK (seed 4) to 17 below it, so the
    # seed-0 check "not above the NTK at every size" does not hold in quick mode.
    assert correct["ntk"][1] - correct["mean_field"][1] > 2, (correct["ntk"], correct["mean_field"])
