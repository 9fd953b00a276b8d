"""Data: stratified splits, standardisation, local MNIST-like files, batches, augmentations."""

import gzip

import numpy as np
import pytest

from shallow.cnn import (Augment, Standardizer, affine_warp, batches, load_digits, load_mnist, random_affine,
                         random_shift, stratified_split)


def test_stratified_split_puts_a_quarter_of_every_class_in_the_test_set_deterministically():
    y = np.repeat(np.arange(4), [40, 21, 7, 100])
    train, test = stratified_split(y, test_size=0.25, rng=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(y)
    assert len(test) == 42  # ceil(0.25 * 168)
    for c, n in zip(range(4), [40, 21, 7, 100]):
        assert abs(np.sum(y[test] == c) - 0.25 * n) < 1  # the quota 0.25 n, rounded down or up
    again = stratified_split(y, test_size=0.25, rng=0)
    other = stratified_split(y, test_size=0.25, rng=1)
    np.testing.assert_array_equal(again[1], test)
    assert not np.array_equal(other[1], test)


def test_load_digits_is_a_standardised_stratified_split_of_the_1797_images():
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    data = load_digits()
    assert data.X_train.shape == (1347, 8, 8, 1) and data.X_test.shape == (450, 8, 8, 1)
    assert data.n_classes == 10 and data.in_shape == (8, 8, 1)
    per_class = np.bincount(data.y_train, minlength=10) + np.bincount(data.y_test, minlength=10)
    assert np.all(np.abs(np.bincount(data.y_test, minlength=10) - 0.25 * per_class) < 1)  # stratified
    # standardised with the training set's statistics
    assert abs(data.X_train.mean()) < 1e-12 and data.X_train.std() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_array_equal(load_digits().X_test, data.X_test)
    assert data.background == pytest.approx(data.X_train.min())  # raw 0 is the smallest pixel value
    assert load_digits(dtype=np.float32).X_train.dtype == np.float32


def _write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              "y_train": np.tile(np.arange(10, dtype=np.uint8), 3),
              "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "y_test": np.arange(10, dtype=np.uint8)}
    folder = tmp_path / "mnist"
    folder.mkdir()
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    for key, stem in names.items():
        _write_idx(folder / (stem + ".gz"), arrays[key])
    np.savez(tmp_path / "mnist.npz", **arrays)
    return arrays, folder, tmp_path / "mnist.npz"


def test_load_mnist_reads_idx_directories_and_keras_npz_files_alike(fake_mnist):
    arrays, folder, npz = fake_mnist
    a = load_mnist(folder, standardize=False)
    b = load_mnist(npz, standardize=False)
    np.testing.assert_array_equal(a.X_train[..., 0], arrays["x_train"] / 255.0)
    np.testing.assert_array_equal(a.y_test, arrays["y_test"])
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert a.in_shape == (28, 28, 1) and a.n_classes == 10
    small = load_mnist(npz, limit=20)
    assert small.X_train.shape[0] == 20 and np.bincount(small.y_train).min() == 2


def test_load_mnist_never_downloads_a_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_mnist(tmp_path / "nowhere" / "mnist.npz")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_standardizer_uses_training_statistics_per_channel():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20, 4, 4, 2)) * [1.0, 3.0] + [5.0, -1.0]
    std = Standardizer().fit(X)
    Z = std.transform(X)
    np.testing.assert_allclose(Z.mean(axis=(0, 1, 2)), 0, atol=1e-14)
    np.testing.assert_allclose(Z.std(axis=(0, 1, 2)), 1, rtol=1e-14)
    np.testing.assert_allclose(std.inverse_transform(Z), X, rtol=0, atol=1e-14 * np.abs(X).max())


@pytest.mark.parametrize("value, dtype", [(0.1, np.float32), (0.7, np.float64), (1e4 / 3, np.float32)])
def test_standardizer_maps_a_constant_channel_to_zero(value, dtype):
    # The Attributes' promise: the std of a constant channel is taken as 1, and its mean is its value,
    # so (x - mean) / std = 0 exactly. The computed std was the rounding error of the computed mean
    # (1.5e-8 for 0.1 in float32, 1.1e-16 for 0.7 in float64), and dividing by it gave +-1 everywhere.
    X = np.full((100, 8, 8, 2), value, dtype=dtype)
    X[..., 1] = np.random.default_rng(0).standard_normal((100, 8, 8))  # a varying channel beside it
    Z = Standardizer().fit(X).transform(X)
    np.testing.assert_array_equal(Z[..., 0], 0)


def test_batches_cover_the_set_once_in_a_reproducible_order():
    X = np.arange(10.0)[:, None, None, None] * np.ones((10, 2, 2, 1))
    y = np.arange(10)
    seen = [yb for _, yb in batches(X, y, 4, rng=3)]
    assert [len(b) for b in seen] == [4, 4, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), y)
    again = [yb for _, yb in batches(X, y, 4, rng=3)]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(seen))
    assert [len(b) for _, b in batches(X, y, 4, rng=3, drop_last=True)] == [4, 4]


def test_random_shift_translates_each_image_with_edge_or_constant_fill():
    rng_draws = np.random.default_rng(5).integers(-2, 3, size=(3, 2))
    X = np.random.default_rng(6).standard_normal((3, 6, 5, 2))
    for fill in (None, -7.0):
        out = random_shift(X, 2, np.random.default_rng(5), fill=fill)
        for k, (dy, dx) in enumerate(rng_draws):
            for i in range(6):
                for j in range(5):
                    si, sj = i - dy, j - dx
                    inside = 0 <= si < 6 and 0 <= sj < 5
                    if fill is None:
                        expected = X[k, min(max(si, 0), 5), min(max(sj, 0), 4)]
                    else:
                        expected = X[k, si, sj] if inside else np.full(2, fill)
                    np.testing.assert_array_equal(out[k, i, j], expected)


def test_affine_warp_by_a_quarter_turn_is_rot90_and_by_the_identity_is_exact():
    X = np.random.default_rng(7).standard_normal((2, 7, 7, 3))
    np.testing.assert_array_equal(affine_warp(X, [[0.0, -1.0], [1.0, 0.0]]), np.rot90(X, k=-1, axes=(1, 2)))
    np.testing.assert_array_equal(affine_warp(X, np.eye(2)), X)
    np.testing.assert_array_equal(random_affine(X, 0, max_angle=0.0), X)


def test_affine_warp_interpolates_linear_images_exactly():
    # bilinear interpolation reproduces affine functions of (row, col) away from the border
    i, j = np.meshgrid(np.arange(9.0), np.arange(9.0), indexing="ij")
    X = (2.0 * i - 0.5 * j + 1.0)[None, :, :, None]
    theta = np.deg2rad(7.0)
    A = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    out = affine_warp(X, A)
    c = 4.0
    si = A[0, 0] * (i - c) + A[0, 1] * (j - c) + c
    sj = A[1, 0] * (i - c) + A[1, 1] * (j - c) + c
    inside = (si >= 0) & (si <= 8) & (sj >= 0) & (sj <= 8)
    np.testing.assert_allclose(out[0, :, :, 0][inside], (2.0 * si - 0.5 * sj + 1.0)[inside], rtol=1e-12, atol=1e-12)


def test_augment_is_reproducible_and_keeps_shape_and_dtype():
    X = np.random.default_rng(8).standard_normal((4, 8, 8, 1)).astype(np.float32)
    aug = Augment(shift=1, rotation=10.0, scale=0.1, shear=0.1)
    a, b = aug(X, np.random.default_rng(9)), aug(X, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    assert a.shape == X.shape and a.dtype == np.float32 and not np.array_equal(a, X)


def test_augmentations_reject_nan_images_naming_x():
    X = np.zeros((2, 4, 4, 1))
    X[1, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        random_shift(X, 1, 0)


@pytest.mark.parametrize("name, value", [("max_angle", np.nan), ("max_angle", np.inf), ("max_scale", -0.1),
                                         ("max_shear", np.inf)])
def test_random_affine_rejects_bounds_that_are_not_finite_and_nonnegative(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        random_affine(np.zeros((2, 4, 4, 1)), 0, **{name: value})


@pytest.mark.parametrize("name", ["rotation", "scale", "shear"])
def test_augment_rejects_infinite_bounds_naming_them(name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        Augment(**{name: np.inf})


def _images(n=6):
    return np.random.default_rng(0).standard_normal((n, 5, 5, 1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(y_train=np.array([0, 1, 2])), "y_train has 3 labels but there are 6 samples"),
    (dict(n_classes=0), "n_classes must be an integer >= 1"),
    (dict(n_classes=2), "y_train holds the label 2, out of range for 2 classes"),
    (dict(X_test=np.ones((6, 4, 4, 1))), r"X_test has images of shape \(4, 4, 1\)"),
])
def test_image_data_rejects_inconsistent_sets(kwargs, match):
    from shallow.cnn import ImageData

    X, y = _images(), np.array([0, 1, 2, 0, 1, 2])
    args = dict(X_train=X, y_train=y, X_test=X, y_test=y, n_classes=3) | kwargs
    with pytest.raises(ValueError, match=match):
        ImageData(**args)


def test_stratified_split_rejects_nan_labels():
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite label"):
        stratified_split(np.array([np.nan, 1.0, 0.0, 1.0]), 0.5)


def test_stratified_split_rejects_a_test_size_that_leaves_no_training_sample():
    with pytest.raises(ValueError, match="test_size=0.99 leaves no training sample out of n=6"):
        stratified_split(np.array([0, 1, 2, 0, 1, 2]), 0.99)


def test_stratified_split_rejects_fewer_than_two_labels():
    with pytest.raises(ValueError, match="y must hold at least 2 labels to split"):
        stratified_split(np.zeros(0, dtype=int), 0.5)


def test_standardizer_rejects_an_empty_fit():
    with pytest.raises(ValueError, match="X must hold at least one image to fit"):
        Standardizer().fit(np.zeros((0, 5, 5, 1)))


def test_standardizer_inverse_transform_checks_the_channels():
    std = Standardizer().fit(_images())
    with pytest.raises(ValueError, match="X has 3 channels but the standardizer was fitted on 1"):
        std.inverse_transform(np.ones((2, 5, 5, 3)))
    with pytest.raises(RuntimeError, match="inverse_transform was called before fit"):
        Standardizer().inverse_transform(_images())


def test_batches_rejects_labels_that_are_not_a_vector():
    X, y = _images(), np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"y must be None or an array of shape \(n,\)"):
        list(batches(X, y[:, None], 2))


@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_augmentations_reject_a_fill_that_is_not_finite(fill):
    with pytest.raises(ValueError, match="fill must be None .* or a finite number"):
        random_shift(_images(), 1, fill=fill)


@pytest.mark.parametrize("A, match", [(np.full((2, 2), np.nan), "A contains 4 NaN"),
                                      (np.eye(2) * 1j, "A must be real"),
                                      (np.ones((4, 2, 2)), r"A must have shape \(2, 2\) or \(6, 2, 2\)")])
def test_affine_warp_rejects_a_bad_matrix(A, match):
    with pytest.raises(ValueError, match=match):
        affine_warp(_images(), A)


@pytest.mark.parametrize("si, sj, match", [
    (np.full((5, 5), np.nan), np.ones((5, 5)), "si contains 25 NaN"),
    (np.ones((5, 5)), np.ones((4, 4)), "si and sj must have one shape"),
    (np.ones((4, 5, 5)), np.ones((4, 5, 5)), "si and sj must have one shape"),
])
def test_bilinear_sample_rejects_bad_source_coordinates(si, sj, match):
    from shallow.cnn.data import bilinear_sample

    with pytest.raises(ValueError, match=match):
        bilinear_sample(_images(), si, sj)


@pytest.mark.parametrize("scale", [0, float("nan")])
def test_load_mnist_rejects_a_nonpositive_scale_before_reading(scale, tmp_path):
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        load_mnist(tmp_path / "missing.npz", scale=scale)
