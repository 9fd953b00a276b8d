"""The studies invertible_features and progressive_separation: their measurements and their claims.

The measurement helpers are checked against independent computations (Monte Carlo with a closed form,
scipy's least squares, a closed-form preimage); the quick modes run and their claims hold with the
stated tolerances at the studies' fixed seed (seed = 0).
"""

import numpy as np
import pytest
import scipy.linalg

from shallow import cli
from shallow.cnn import Conv2d, Sequential


# --------------------------------------------------------------------------- progressive_separation: measurements
def test_scatter_ratio_of_gaussian_clusters_matches_the_closed_form():
    # K isotropic Gaussian clusters N(m_c, s^2 I_p) with weights pi_c: the within/total variance ratio is
    # p s^2 / (p s^2 + sum_c pi_c |m_c - mbar|^2). Monte Carlo with n = 30000: the sample traces err by
    # about sqrt(2 / (n p)) ~ 0.4% relative, so 2% leaves a 5-sigma margin.
    module = cli.load_study("progressive_separation")
    rng = np.random.default_rng(0)
    p, K, s = 5, 3, 0.7
    m = rng.standard_normal((K, p))
    pi = np.array([0.2, 0.3, 0.5])
    y = rng.choice(K, size=30000, p=pi)
    Phi = m[y] + s * rng.standard_normal((y.size, p))
    mbar = pi @ m
    between = float(pi @ ((m - mbar) ** 2).sum(axis=1))
    r_exact = p * s**2 / (p * s**2 + between)
    r, fisher = module.scatter_ratios(Phi, y, K)
    assert abs(r - r_exact) < 0.02 * r_exact
    assert abs(fisher - between / (p * s**2)) < 0.04 * between / (p * s**2)  # 1/r - 1: twice the relative error


def test_scatter_ratios_satisfy_the_law_of_total_variance():
    # tr S_T = tr S_W + tr S_B with tr S_B = sum_c (n_c / n) |mu_c - mu|^2 computed from the class means:
    # fisher = tr S_B / tr S_W and r = tr S_W / tr S_T, to rounding (1e-12).
    module = cli.load_study("progressive_separation")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    Phi = rng.standard_normal((200, 7)) + y[:, None]
    mu = Phi.mean(axis=0)
    within = sum(((Phi[y == c] - Phi[y == c].mean(axis=0)) ** 2).sum() for c in range(4)) / 200
    between = sum((y == c).mean() * ((Phi[y == c].mean(axis=0) - mu) ** 2).sum() for c in range(4))
    r, fisher = module.scatter_ratios(Phi, y, 4)
    assert abs(r - within / (within + between)) < 1e-12
    assert abs(fisher - between / within) < 1e-12 * fisher


@pytest.mark.parametrize("n, p", [(60, 8), (20, 50)], ids=["primal", "dual"])
def test_ridge_fit_is_the_augmented_least_squares_solution(n, p):
    # argmin |P W - Y|^2 + lam |W|^2 is the least-squares solution of [P; sqrt(lam) I] W = [Y; 0] (scipy lstsq);
    # both are well-conditioned here (lam = 0.1 * mean eigenvalue), so agreement to 1e-9 relative.
    module = cli.load_study("progressive_separation")
    rng = np.random.default_rng(2)
    P, Y = rng.standard_normal((n, p)), rng.standard_normal((n, 3))
    W, lam = module.ridge_fit(P, Y, 0.1)
    assert np.isclose(lam, 0.1 * np.trace(P.T @ P) / p)
    A = np.vstack([P, np.sqrt(lam) * np.eye(p)])
    W_ref = scipy.linalg.lstsq(A, np.vstack([Y, np.zeros((p, 3))]))[0]
    np.testing.assert_allclose(W, W_ref, rtol=0, atol=1e-9 * np.abs(W_ref).max())


def test_probes_classify_well_separated_clusters_perfectly():
    # Clusters 20 standard deviations apart: nearest class mean and the ridge probe make no error.
    module = cli.load_study("progressive_separation")
    rng = np.random.default_rng(3)
    m = 20 * np.eye(4, 6)
    y_tr, y_te = rng.integers(0, 4, 80), rng.integers(0, 4, 40)
    X_tr, X_te = m[y_tr] + rng.standard_normal((80, 6)), m[y_te] + rng.standard_normal((40, 6))
    assert module.ncm_accuracy(X_tr, y_tr, X_te, y_te, 4) == 1.0
    assert module.ridge_probe(X_tr, y_tr, X_te, y_te, 4, 0.1) == 1.0


def test_progressive_separation_label_subsets_are_balanced():
    module = cli.load_study("progressive_separation")
    y = np.repeat(np.arange(10), 30)
    for s in module.label_subsets(y, 10, 3, 0):
        assert np.array_equal(np.bincount(y[s]), np.full(10, 10)) and len(set(s)) == 100


def test_progressive_separation_contracts_and_separates_with_depth(tmp_path, run_quick):
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    # Quick mode: VGG width 8, 12 epochs, one seed (measured values in the comments).
    _, result = run_quick("progressive_separation", tmp_path)
    assert result["test_accuracy"] > 0.9  # measured 0.971
    r = result["within_ratio_trained"].mean(axis=0)
    gap = list(result["layers"]).index("gap")
    # Contraction: the within/total variance ratio falls from the input to the GAP by more than half
    # (measured 0.571 -> 0.222) and decreases with depth (Spearman correlation < -0.8; measured -0.976).
    assert result["within_ratio_gap_trained"] < 0.5 * result["within_ratio_input"]
    assert result["spearman_within_ratio_trained"] < -0.8
    assert r[-1] < r[gap]  # the logits contract further (measured 0.170)
    # The untrained network of the same shape does not contract: its ratio at the GAP is above the input's
    # (measured 0.786 vs 0.571), at least 0.3 above the trained one's.
    assert result["within_ratio_gap_random"] > result["within_ratio_input"]
    # the summaries are read at the GAP layer of the per-layer curves (means over the seeds)
    r_random = result["within_ratio_random"].mean(axis=0)
    assert r_random[gap] > r[0]
    assert result["within_ratio_gap_random"] == r_random[gap] and result["within_ratio_gap_trained"] == r[gap]
    assert result["within_ratio_gap_random"] > result["within_ratio_gap_trained"] + 0.3
    # Separation: the Fisher ratio grows by a factor > 3 from the input to the GAP (measured 0.75 -> 3.5).
    fisher = result["fisher_trained"].mean(axis=0)
    assert fisher[gap] > 3 * fisher[0]
    # Linear separability with few labels (10 per class) improves with depth: Spearman > 0.8 (measured 0.976),
    # +0.05 from input to GAP (measured 0.867 -> 0.955); the random network's falls (measured 0.574 at GAP).
    assert result["spearman_few_label_probe_trained"] > 0.8
    assert result["few_label_probe_gap_trained"] > result["few_label_probe_input"] + 0.05
    assert result["few_label_probe_gap_random"] < result["few_label_probe_gap_trained"] - 0.2


# --------------------------------------------------------------------------- invertible_features
def test_gradient_descent_inversion_recovers_the_preimage_of_an_injective_linear_layer():
    # An overcomplete convolution (1 -> 4 channels, a random 3x3 kernel) is injective: the feature-matching
    # objective has the unique minimiser x_0, so the inversion from 0 recovers it (relative error < 1e-3 after
    # 2000 steps; the residual then measures the conditioning, not the method).
    module = cli.load_study("invertible_features")
    rng = np.random.default_rng(4)
    phi = Sequential(Conv2d(1, 4, 3, padding=1, rng=rng))
    x0 = rng.standard_normal((2, 6, 6, 1))
    x, res = module.invert_by_gradient_descent(phi, phi.forward(x0), np.zeros_like(x0), 2000, 0.05)
    assert np.all(module.relative_errors(x, x0) < 1e-3)
    assert np.all(res < 1e-3)


def test_invertible_features_irevnet_is_exact_and_the_cnn_is_lossy(tmp_path, run_quick):
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    # Quick mode: i-RevNet width 8, one block per stage; VGG width 8; 8 epochs each (measured values in comments).
    _, result = run_quick("invertible_features", tmp_path)
    # The i-RevNet classifies about as well as the VGG (measured 0.947 vs 0.956), above 0.9. Over 12 seeds and
    # data splits (tools/seedshift.py) the VGG led by 0.009 to 0.051, mean 0.028, sd 0.011: the bound is the mean
    # plus 4 sd, 0.075 (the quick networks are small: 8 epochs, 3.6k and 4.4k parameters)
    assert result["test_accuracy_irevnet"] > 0.9
    assert result["test_accuracy_irevnet"] > result["test_accuracy_vgg"] - 0.075
    # Exact reconstruction from every layer, on the whole test set: the 1e-10 in float64
    # (measured 2.4e-16, rounding level).
    assert result["irevnet_error_max_all_layers"] < 1e-10
    np.testing.assert_allclose(result["irevnet_reconstruction"], result["images"], atol=1e-10)
    # The VGG's pooled layers lose the image: gradient descent on the input leaves a relative error above
    # 0.2 after the first pooling and above 0.5 at the GAP (measured 0.49 and 1.20), 1e9 times the i-RevNet's.
    names = list(result["vgg_layers"])
    err = result["vgg_error_mean"]
    assert err[names.index("pool1")] > 0.2
    assert result["vgg_error_gap"] > 0.5
    # the GAP's error is read at the GAP (the last layer inverted), not at the pooling before it
    assert names[-1] == "gap" and result["vgg_error_gap"] == err[names.index("gap")]
    assert result["vgg_error_gap"] > 1e9 * result["irevnet_error_max_all_layers"]
    # ... and the loss grows with depth: the error at the GAP exceeds that at the first relu (measured 3.2e-3:
    # 512 relu features of 64 pixels are injective enough for gradient descent to recover the image).
    assert err[-1] > err[0]
