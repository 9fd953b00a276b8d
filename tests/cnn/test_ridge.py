"""The ridge classifier on fixed features: its closed form against least squares, and its invariances."""

import numpy as np
import pytest

from shallow.cnn import RidgeClassifier


def _problem(n, p, K=3, seed=0):
    rng = np.random.default_rng(seed)
    Phi = rng.standard_normal((n, p)) * rng.uniform(0.5, 3, p) + rng.standard_normal(p)
    y = np.arange(n) % K
    return Phi, y


def _augmented_least_squares(Z, Y, lam):
    """argmin (1/n)|Z W - (Y - b)|^2 + lambda |W|^2 by numpy's lstsq on [Z; sqrt(n lambda) I] W = [Y - b; 0]."""
    n, p = Z.shape
    A = np.vstack([Z, np.sqrt(n * lam) * np.eye(p)])
    B = np.vstack([Y - Y.mean(axis=0), np.zeros((p, Y.shape[1]))])
    return np.linalg.lstsq(A, B, rcond=None)[0]


@pytest.mark.parametrize("n, p", [(40, 6), (8, 30)])  # primal (n > p) and dual (n <= p) forms
def test_ridge_classifier_is_the_augmented_least_squares_solution(n, p):
    # argmin (1/n)|Z W - (Y - b)|^2 + lambda |W|^2 is the least-squares solution of
    # [Z; sqrt(n lambda) I] W = [Y - b; 0], solved here by numpy's lstsq (an independent SVD solver).
    Phi, y = _problem(n, p)
    lam = 0.05
    clf = RidgeClassifier(lam).fit(Phi, y)
    Z = (Phi - Phi.mean(axis=0)) / Phi.std(axis=0)
    Y = np.eye(3)[y]
    W = _augmented_least_squares(Z, Y, lam)
    # the normal equations are well conditioned here (lambda > 0): agreement to 1e-10 relative
    assert np.abs(clf.W - W).max() < 1e-10 * np.abs(W).max()
    np.testing.assert_allclose(clf.b, Y.mean(axis=0), rtol=1e-14)


def test_ridge_classifier_predictions_do_not_depend_on_the_scale_or_offset_of_a_feature():
    # standardisation: Phi[:, j] -> s Phi[:, j] + t changes nothing (up to rounding)
    Phi, y = _problem(30, 5)
    scaled = Phi * np.array([1e3, 1e-3, 1, 7, 0.1]) + np.array([5, -2, 0, 1e3, 0])
    a = RidgeClassifier(1e-2).fit(Phi, y).decision_function(Phi)
    b = RidgeClassifier(1e-2).fit(scaled, y).decision_function(scaled)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_ridge_classifier_a_constant_feature_plays_no_part():
    # a column constant on the training set (0.1, whose computed mean is off by 4e-17) maps to 0:
    # the scores of new samples, whatever their value there, are those of the ridge solution on the
    # other columns (lstsq), up to rounding
    Phi, y = _problem(40, 4)
    lam = 1e-3
    clf = RidgeClassifier(lam).fit(np.c_[Phi, np.full(40, 0.1)], y)
    Z = (Phi - Phi.mean(axis=0)) / Phi.std(axis=0)
    Y = np.eye(3)[y]
    W = _augmented_least_squares(Z, Y, lam)
    new, _ = _problem(10, 4, seed=1)
    expected = (new - Phi.mean(axis=0)) / Phi.std(axis=0) @ W + Y.mean(axis=0)
    # well-conditioned normal equations: 1e-10 relative
    np.testing.assert_allclose(clf.decision_function(np.c_[new, np.full(10, 1.1)]), expected, rtol=1e-10,
                               atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e170, 1e300])
def test_ridge_classifier_scores_do_not_depend_on_the_scale_of_a_feature_at_any_scale(scale):
    # standardisation makes the scores invariant under Phi[:, j] -> s Phi[:, j] at every representable
    # scale, also where the squares of the features leave the floats (beyond 1e+-154): the scores are
    # those of the ridge solution (lstsq) on the unscaled standardised features, up to rounding
    Phi, y = _problem(40, 4)
    lam = 1e-3
    scaled = Phi * np.array([scale, 1.0, scale, 1.0])
    Z = (Phi - Phi.mean(axis=0)) / Phi.std(axis=0)
    Y = np.eye(3)[y]
    expected = Z @ _augmented_least_squares(Z, Y, lam) + Y.mean(axis=0)
    got = RidgeClassifier(lam).fit(scaled, y).decision_function(scaled)
    # well-conditioned normal equations: 1e-10 relative
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


def test_ridge_classifier_is_the_ridge_solution_for_a_tiny_ridge_at_n_equal_p():
    # centred columns: Z (n, n) has rank n - 1, so Z^T Z is singular and lambda = 1e-12 alone keeps the
    # n x n system solvable; W = V diag(s / (s^2 + n lambda)) U^T (Y - b) from numpy's SVD of Z, on its
    # n - 1 non-zero singular values (the last one is rounding, below 1e-14 s_max)
    n = 20
    Phi, y = _problem(n, n)
    lam = 1e-12
    Z = (Phi - Phi.mean(axis=0)) / Phi.std(axis=0)
    Y = np.eye(3)[y]
    U, s, Vt = np.linalg.svd(Z)
    assert s[-1] < 1e-14 * s[0] < s[-2]
    U, s, Vt = U[:, :-1], s[:-1], Vt[:-1]
    W = Vt.T @ np.diag(s / (s**2 + n * lam)) @ U.T @ (Y - Y.mean(axis=0))
    # the smallest non-zero s^2 / n is 1.8e-3 here: 1e-10 relative leaves room for its condition number
    np.testing.assert_allclose(RidgeClassifier(lam).fit(Phi, y).W, W, rtol=0, atol=1e-10 * np.abs(W).max())


def test_ridge_classifier_keeps_the_labels_of_the_training_set():
    # labels need not be 0..K-1: predictions come back as the original labels
    Phi, y = _problem(30, 4)
    Phi[:, :3] += 10 * np.eye(3)[y]  # one feature per class (a single ordered feature would mask the middle
    # class: regression on an indicator matrix, Hastie et al. Sec. 4.2)
    labels = np.array([7, -1, 3])[y]
    clf = RidgeClassifier(1e-3).fit(Phi, labels)
    np.testing.assert_array_equal(clf.classes_, [-1, 3, 7])
    assert clf.score(Phi, labels) == 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: RidgeClassifier(0), "ridge"),
    (lambda: RidgeClassifier(-1.0), "ridge"),
    (lambda: RidgeClassifier().fit(np.ones(5), np.arange(5)), "Phi"),
    (lambda: RidgeClassifier().fit(np.full((5, 2), np.nan), np.arange(5)), "Phi contains 10 NaN"),
    (lambda: RidgeClassifier().fit(np.ones((5, 2)), np.arange(4)), "y must hold one label"),
    (lambda: RidgeClassifier().fit(np.ones((5, 2)), np.arange(5)).predict(np.ones((2, 3))), "3 features"),
    (lambda: RidgeClassifier().predict(np.ones((2, 3))), "fit must be called"),
])
def test_ridge_classifier_bad_input_raises(call, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        call()


def test_ridge_classifier_rejects_a_single_class():
    Phi = np.random.default_rng(0).standard_normal((6, 4))
    with pytest.raises(ValueError, match="y must hold at least 2 classes"):
        RidgeClassifier().fit(Phi, np.zeros(6, int))


def test_ridge_classifier_rejects_nan_labels():
    Phi = np.random.default_rng(0).standard_normal((4, 4))
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite label"):
        RidgeClassifier().fit(Phi, np.array([0.0, 1.0, np.nan, 1.0]))


def test_ridge_score_rejects_labels_of_the_wrong_shape():
    rng = np.random.default_rng(0)
    Phi, y = rng.standard_normal((6, 4)), np.array([0, 1, 2, 0, 1, 2])
    clf = RidgeClassifier().fit(Phi, y)
    with pytest.raises(ValueError, match=r"y must hold one label per sample, shape \(6,\)"):
        clf.score(Phi, y[:, None])


def test_ridge_fit_rejects_no_samples_or_no_features_naming_them():
    # no samples failed inside numpy ('cannot reshape array of size 0 into shape (0,newaxis)')
    with pytest.raises(ValueError, match="fit needs at least 2 samples, got n=0"):
        RidgeClassifier().fit(np.ones((0, 5)), np.zeros(0, int))
    with pytest.raises(ValueError, match="Phi must hold at least one feature per sample"):
        RidgeClassifier().fit(np.ones((6, 0)), np.arange(6) % 2)


def test_scores_in_blocks_of_rows_equal_those_of_one_block(monkeypatch):
    # decision_function scores BLOCK_ROWS rows at a time, casting each block to float64 (the whole n x p float64
    # copies took 6x the input's memory); each row's score is its own dot products: the same to rounding
    rng = np.random.default_rng(12)
    Phi = rng.standard_normal((50, 7)).astype(np.float32)
    clf = RidgeClassifier(ridge=1e-2).fit(Phi, rng.integers(0, 3, 50))
    whole = clf.decision_function(Phi)
    monkeypatch.setattr(RidgeClassifier, "BLOCK_ROWS", 8)
    np.testing.assert_allclose(clf.decision_function(Phi), whole, rtol=0, atol=1e-13 * np.abs(whole).max())
    assert whole.dtype == np.float64 and whole.shape == (50, 3)


@pytest.mark.parametrize("n, p, K, seed", [(10, 30, 2, 2), (6, 6, 3, 5), (20, 8, 2, 0)])
def test_ridge_classifier_at_a_vanishing_ridge_is_the_minimum_norm_least_squares_solution(n, p, K, seed):
    # As lambda -> 0, (Z^T Z / n + lambda I)^{-1} Z^T (Y - b) / n -> Z^+ (Y - b), the minimum-norm
    # least-squares solution (numpy's pinv, an independent SVD). At lambda = 1e-17, below the rounding
    # of the Gram matrix, the n x n dual system (Z Z^T, centred, has the null vector 1) and the primal
    # one with a repeated feature (20 x 8) are singular in float64; these seeds made numpy's solve
    # raise "LinAlgError: Singular matrix". Both sides are SVD-accurate: 1e-10 relative.
    rng = np.random.default_rng(seed)
    Phi, y = rng.standard_normal((n, p)), np.arange(n) % K
    if n > p:
        Phi[:, 1] = Phi[:, 0]
    clf = RidgeClassifier(1e-17).fit(Phi, y)
    Z = (Phi - Phi.mean(axis=0)) / Phi.std(axis=0)
    Y = np.eye(K)[y]
    W = np.linalg.pinv(Z) @ (Y - Y.mean(axis=0))
    assert np.abs(clf.W - W).max() < 1e-10 * np.abs(W).max()
