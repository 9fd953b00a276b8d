"""Data: stratified splits, standardisation, local MNIST-like files, batches, augmentations."""

import gzip
import struct

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


@pytest.mark.parametrize("dtype, scale", [(np.float64, 1e-200), (np.float64, 1e200), (np.float32, 1e-25),
                                          (np.float32, 1e20)])
def test_standardizer_standardises_at_every_scale_where_the_pixels_are_representable(dtype, scale):
    # (x - mean) / std does not depend on the unit of x: the reference standardises x / scale (O(1) numbers)
    # in float64. The squared deviations of pixels of order 1e-200 or 1e200 (1e-25, 1e20 in float32) leave
    # the floating-point range; std came out 0 (taken as 1) or inf, and every pixel went to ~0.
    X = np.random.default_rng(2).standard_normal((10, 4, 4, 2)) * [1.0, 3.0] + [0.5, -1.0]
    Y = X.astype(dtype).astype(np.float64)
    ref = (Y - Y.mean(axis=(0, 1, 2))) / Y.std(axis=(0, 1, 2))
    Z = Standardizer().fit((scale * Y).astype(dtype)).transform((scale * Y).astype(dtype))
    # float64: rounding of O(1) numbers, 1e-13; float32: 100 ulps of 1 (the scaled pixels are rounded to float32)
    atol = 1e-13 if dtype == np.float64 else 100 * float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(Z, ref, rtol=0, atol=atol)

def test_batches_cover_the_set_once_in_a_reproducible_order():
    X = np.arange(10.0)[:, None, None, None] * np.ones((10, 2, 2, 1))
    y = np.arange(10)
    seen = [yb for _, yb in batches(X, y, 4, rng=3)]
    assert [len(b) for b in seen] == [4, 4, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), y)
    again = [yb for _, yb in batches(X, y, 4, rng=3)]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(seen))
    assert [len(b) for _, b in batches(X, y, 4, rng=3, drop_last=True)] == [4, 4]


@pytest.mark.parametrize("max_shift", [1, 2])
def test_random_shift_translates_each_image_with_edge_or_constant_fill(max_shift):
    # Draws of n images cover all 2 s + 1 shifts on both axes but with probability at most
    # 2 (2 s + 1) (1 - 1 / (2 s + 1))^n (union bound over axis and missed shift): n is the
    # least making that below 1e-9, whatever the seed (n = 56 for s = 1, 104 for s = 2).
    m = 2 * max_shift + 1
    n = int(np.ceil(np.log(1e-9 / (2 * m)) / np.log(1 - 1 / m)))
    assert 2 * m * (1 - 1 / m) ** n < 1e-9
    rng_draws = np.random.default_rng(5).integers(-max_shift, max_shift + 1, size=(n, 2))
    for axis in (0, 1):  # every shift, both signs, along both axes
        assert set(rng_draws[:, axis]) == set(range(-max_shift, max_shift + 1))
    X = np.random.default_rng(6).standard_normal((n, 6, 5, 2))
    for fill in (None, -7.0):
        out = random_shift(X, max_shift, np.random.default_rng(5), fill=fill)
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


def test_batches_cut_targets_by_rows_and_refuse_a_y_without_rows():
    # targets (n, K) travel with their images (a regression loop with train_step); a number has no rows
    X = _images()
    Y = np.arange(12.0).reshape(6, 2)
    for (xb, yb), idx in zip(batches(X, Y, 4, rng=3), np.array_split(np.random.default_rng(3).permutation(6), [4])):
        np.testing.assert_array_equal(xb, X[idx])
        np.testing.assert_array_equal(yb, Y[idx])
    with pytest.raises(ValueError, match=r"y must be None or an array of shape \(n,\) or \(n, ...\)"):
        list(batches(X, np.float64(1.0), 2))
    with pytest.raises(ValueError, match="y has 5 rows but X has 6 images"):
        list(batches(X, Y[:5], 2))


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


# ----------------------------------------------------------------------------- mutation audit

def _idx_bytes(code, fmt, shape, values):
    """An IDX file written from the published format (LeCun's MNIST page): the magic number 0x0000 type ndim,
    then each dimension as a 32-bit big-endian integer, then the values big-endian, row-major."""
    header = struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


@pytest.mark.parametrize("code, fmt", [(0x08, "B"), (0x09, "b"), (0x0B, "h"), (0x0C, "i"), (0x0D, "f"),
                                       (0x0E, "d")])
def test_load_mnist_reads_every_idx_data_type(code, fmt, tmp_path):
    # uint8, int8, int16, int32, float32, float64 (codes 0x08 .. 0x0E), uncompressed and with the ".idx" spelling;
    # the values are small integers, exact in every type (signed types get negative ones)
    signed = fmt != "B"
    rng = np.random.default_rng(code)
    images = {"train": rng.integers(-100 if signed else 0, 101, (4, 3, 5)),
              "t10k": rng.integers(-100 if signed else 0, 101, (2, 3, 5))}
    labels = {"train": [0, 1, 2, 1], "t10k": [2, 0]}
    for split in ("train", "t10k"):
        x = images[split]
        (tmp_path / f"{split}-images.idx3-ubyte").write_bytes(_idx_bytes(code, fmt, x.shape, x.ravel().tolist()))
        (tmp_path / f"{split}-labels.idx1-ubyte").write_bytes(_idx_bytes(0x08, "B", (len(labels[split]),),
                                                                          labels[split]))
    data = load_mnist(tmp_path, standardize=False, scale=1.0)
    np.testing.assert_array_equal(data.X_train[..., 0], images["train"])
    np.testing.assert_array_equal(data.X_test[..., 0], images["t10k"])
    np.testing.assert_array_equal(data.y_train, labels["train"])
    assert data.n_classes == 3


def test_idx_dimensions_are_32_bit_big_endian_integers(tmp_path):
    # an empty array announcing dimensions that use all four bytes of their header fields
    from shallow.cnn.data import _read_idx

    shape = (0, 0x01020304, 0x00050607)
    path = tmp_path / "empty-idx3-ubyte"
    path.write_bytes(_idx_bytes(0x08, "B", shape, []))
    assert _read_idx(path).shape == shape


@pytest.mark.parametrize("train_top, test_top", [(3, 4), (4, 3)])
def test_load_mnist_counts_the_classes_of_both_sets(train_top, test_top, tmp_path):
    # n_classes = 1 + the largest label of the training and test sets together
    x = np.zeros((5, 2, 2), dtype=np.uint8)
    np.savez(tmp_path / "small.npz", x_train=x, y_train=np.arange(5) % (train_top + 1), x_test=x[:2],
             y_test=np.array([0, test_top]))
    assert load_mnist(tmp_path / "small.npz", standardize=False).n_classes == 5


def test_load_mnist_divides_both_sets_by_scale(fake_mnist):
    arrays, _, npz = fake_mnist
    data = load_mnist(npz, standardize=False, scale=4.0)
    np.testing.assert_array_equal(data.X_train[..., 0], arrays["x_train"] / 4.0)
    np.testing.assert_array_equal(data.X_test[..., 0], arrays["x_test"] / 4.0)


def test_load_mnist_refuses_a_limit_below_the_number_of_classes(fake_mnist):
    # a stratified subset keeps at least one image of each of the 10 classes
    _, _, npz = fake_mnist
    with pytest.raises(ValueError, match="limit must be an integer >= 10, got 1"):
        load_mnist(npz, limit=1)


def test_load_mnist_limit_at_or_above_the_training_size_keeps_every_image(fake_mnist):
    arrays, _, npz = fake_mnist
    for limit in (30, 31):
        data = load_mnist(npz, standardize=False, limit=limit)
        np.testing.assert_array_equal(data.X_train[..., 0], arrays["x_train"] / 255.0)


def test_batches_of_one_visit_every_sample_once():
    X = np.arange(5.0)[:, None, None, None] * np.ones((5, 2, 2, 1))
    seen = [yb for _, yb in batches(X, np.arange(5), 1, rng=0)]
    assert all(len(b) == 1 for b in seen)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(5))


def test_batches_drop_last_keeps_every_full_batch():
    # drop_last leaves out only a last, smaller batch: n = 8 in batches of 4 is two full batches, nothing dropped;
    # n = 9 is the same two and one image left out
    for n in (8, 9):
        X, y = np.zeros((n, 2, 2, 1)), np.arange(n)
        seen = [yb for _, yb in batches(X, y, 4, rng=0, drop_last=True)]
        assert [len(b) for b in seen] == [4, 4]
        assert len(np.unique(np.concatenate(seen))) == 8


@pytest.mark.parametrize("kwargs", [{"scale": 0.2}, {"shear": 0.3}])
def test_augment_warps_with_a_scale_or_a_shear_alone(kwargs):
    # Augment(rotation=0) with a scale or a shear still warps: on the coordinate images (row, col) the warp reads
    # back A's columns at the centre c (bilinear interpolation is exact on affine images, as in the test of
    # random_affine's law): a scale alone gives A = I / exp(u), |u| <= 0.2; a shear alone A = [[1, s], [0, 1]],
    # |s| <= 0.3 (atol 1e-12: rounding of O(1) coordinates). The largest of 50 uniform draws exceeds a tenth of the
    # bound but with probability 0.1^50; without the warp every draw is 0.
    n, H, c = 50, 9, 4
    i, j = np.meshgrid(np.arange(H, dtype=float), np.arange(H, dtype=float), indexing="ij")
    X = np.broadcast_to(np.stack([i, j], -1), (n, H, H, 2))
    out = Augment(shift=0, **kwargs)(X, np.random.default_rng(12))
    A = np.stack([out[:, c + 1, c] - c, out[:, c, c + 1] - c], -1)  # (n, 2, 2), A[k, :, b] = column b
    if "scale" in kwargs:
        u = -np.log(A[:, 0, 0])
        np.testing.assert_allclose(A, np.exp(-u)[:, None, None] * np.eye(2), rtol=0, atol=1e-12)
        draws, bound = u, 0.2
    else:
        s = A[:, 0, 1]
        np.testing.assert_allclose(A, np.eye(2) + s[:, None, None] * np.array([[0.0, 1.0], [0.0, 0.0]]), rtol=0,
                                   atol=1e-12)
        draws, bound = s, 0.3
    assert np.abs(draws).max() <= bound * (1 + 1e-12) and np.abs(draws).max() > bound / 10


def test_augment_without_shift_or_warp_is_the_identity():
    X = np.random.default_rng(3).standard_normal((3, 6, 6, 1))
    np.testing.assert_array_equal(Augment(shift=0)(X, np.random.default_rng(0)), X)


def test_random_affine_draws_angles_log_scales_and_shears_uniformly_in_symmetric_ranges():
    # Each image's map A = R(theta) [[1, s], [0, 1]] / exp(u) is read back from the warp of the coordinate
    # images (row, col), which bilinear interpolation reproduces exactly near the centre: A's columns are
    # the sources of c + e_row and c + e_col minus c. Then theta = atan2(A10, A00), exp(-u) = |A[:, 0]|,
    # s = <R(theta) e_0, A[:, 1]> exp(u), and <R(theta) e_1, A[:, 1]> exp(u) = 1 checks the form of A.
    # The recovered draws are compared with uniform laws on [-max, max] by Kolmogorov-Smirnov
    # (n = 400, fixed seed: p-values 0.10, 0.52, 0.53; a one-sided law gives p ~ 1e-100).
    from scipy import stats

    n, H, c = 400, 9, 4
    i, j = np.meshgrid(np.arange(H, dtype=float), np.arange(H, dtype=float), indexing="ij")
    X = np.broadcast_to(np.stack([i, j], -1), (n, H, H, 2))
    out = random_affine(X, 0, max_angle=20.0, max_scale=0.2, max_shear=0.3)
    A = np.stack([out[:, c + 1, c] - c, out[:, c, c + 1] - c], -1)  # (n, 2, 2), A[k, :, b] = column b
    theta = np.arctan2(A[:, 1, 0], A[:, 0, 0])
    u = -np.log(np.hypot(A[:, 0, 0], A[:, 1, 0]))
    cos, sin = np.cos(theta), np.sin(theta)
    s = (cos * A[:, 0, 1] + sin * A[:, 1, 1]) * np.exp(u)
    # the unit diagonal of the shear, to rounding of O(1) numbers
    np.testing.assert_allclose((-sin * A[:, 0, 1] + cos * A[:, 1, 1]) * np.exp(u), 1.0, rtol=0, atol=1e-12)
    for draws, bound in ((np.rad2deg(theta), 20.0), (u, 0.2), (s, 0.3)):
        assert np.abs(draws).max() <= bound * (1 + 1e-12)
        assert stats.kstest(draws, stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_affine_warp_by_a_rotation_matrix_of_cos_and_sin_is_exact_rot90(quarter_turns):
    # cos(pi/2) = 6e-17, not 0, in floating point: the sources lie within 1e-15 of grid points and are snapped
    # onto them (Notes), so the warp is the exact permutation np.rot90 (clockwise on the display)
    theta = quarter_turns * np.pi / 2
    A = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    X = np.random.default_rng(4).standard_normal((2, 7, 7, 1))
    np.testing.assert_array_equal(affine_warp(X, A), np.rot90(X, k=-quarter_turns, axes=(1, 2)))


def test_bilinear_sample_replicates_the_edge_for_sources_outside_the_image():
    # fill=None: a source (si, sj) reads the image at its clamp to [0, H - 1] x [0, W - 1]; on a 3 x 4 image,
    # sources up to 2.5 beyond the border
    from shallow.cnn.data import bilinear_sample

    X = np.random.default_rng(5).standard_normal((1, 3, 4, 1))
    si, sj = np.meshgrid(np.arange(-2.5, 5.0), np.arange(-2.5, 6.0), indexing="ij")
    out = bilinear_sample(X, si[None], sj[None])
    ci, cj = np.clip(si, 0, 2), np.clip(sj, 0, 3)
    # the clamped sources are grid points or midpoints: the reference interpolates by hand
    i0, j0 = np.floor(ci).astype(int), np.floor(cj).astype(int)
    i1, j1 = np.minimum(i0 + 1, 2), np.minimum(j0 + 1, 3)
    a, b = ci - i0, cj - j0
    x = X[0, :, :, 0]
    ref = (1 - a) * (1 - b) * x[i0, j0] + (1 - a) * b * x[i0, j1] + a * (1 - b) * x[i1, j0] + a * b * x[i1, j1]
    np.testing.assert_allclose(out[0, :, :, 0], ref, rtol=0, atol=1e-15)


def test_bilinear_sample_fills_exactly_the_sources_outside_the_closed_image_rectangle():
    # fill=v: the points whose source is outside [0, H - 1] x [0, W - 1] take v; the border rows and columns
    # themselves (si = H - 1, sj = W - 1) are inside and read the image
    from shallow.cnn.data import bilinear_sample

    X = np.random.default_rng(6).standard_normal((1, 3, 4, 1))
    si, sj = np.meshgrid([-0.5, 0.0, 2.0, 2.5, 3.0, 4.5], [-0.5, 0.0, 3.0, 3.5, 4.0, 5.5], indexing="ij")
    out = bilinear_sample(X, si[None], sj[None], fill=-9.0)[0, :, :, 0]
    inside = np.array([False, True, True, False, False, False])
    np.testing.assert_array_equal(out[~inside[:, None] | ~inside[None, :]], -9.0)
    np.testing.assert_array_equal(out[np.ix_(inside, inside)], X[0][np.ix_([0, 2], [0, 3])][..., 0])


def test_standardizer_statistics_of_a_large_float32_set_of_colour_images_are_accurate():
    # mean and std per channel of 4096 float32 images of 16 x 16 x 3 pixels in [3, 4), against numpy's
    # float64 statistics of the same numbers. Tolerance 4e-7 = 6.7 eps_32: accumulated in float64 (mean)
    # and pairwise (std); numpy's float32 sums over the strided pixels of a channel gave 2e-5 and 2e-4.
    X = (3.0 + np.random.default_rng(0).random((4096, 16, 16, 3))).astype(np.float32)
    std = Standardizer().fit(X)
    X64 = X.astype(np.float64)
    assert std.mean.dtype == std.std.dtype == np.float32
    np.testing.assert_allclose(std.mean, X64.mean(axis=(0, 1, 2)), rtol=4e-7)
    np.testing.assert_allclose(std.std, X64.std(axis=(0, 1, 2)), rtol=4e-7)


@pytest.mark.parametrize("fill", [None, 0.5])
def test_one_warp_for_all_images_equals_the_same_warp_given_per_image(fill):
    # a (2, 2) A samples at one (H, W) grid of sources for every image (one gather per corner); an (n, 2, 2) A at a
    # grid per image (take_along_axis): the same matrix both ways gives the same numbers, and each image equals its
    # warp alone
    rng = np.random.default_rng(11)
    X = rng.standard_normal((4, 7, 9, 2))
    A = np.array([[0.8, -0.5], [0.45, 0.9]])
    shared = affine_warp(X, A, fill=fill)
    np.testing.assert_array_equal(shared, affine_warp(X, np.broadcast_to(A, (4, 2, 2)), fill=fill))
    np.testing.assert_array_equal(shared[2], affine_warp(X[2:3], A, fill=fill)[0])


@pytest.mark.parametrize("augment", [lambda X, rng: random_affine(X, rng), lambda X, rng: Augment(1, 10.0)(X, rng)])
def test_random_affine_maps_an_empty_batch_to_an_empty_batch(augment):
    # "cannot reshape array of size 0 into shape (0,newaxis,1)" inside the bilinear sampler
    out = augment(np.zeros((0, 6, 5, 2)), np.random.default_rng(0))
    assert out.shape == (0, 6, 5, 2)


def _save_npz(path, y_train, y_test=None, n_test=3):
    rng = np.random.default_rng(0)
    y_test = np.arange(n_test) % 3 if y_test is None else y_test
    np.savez(path, x_train=rng.integers(0, 256, (len(y_train), 4, 4), dtype=np.uint8), y_train=y_train,
             x_test=rng.integers(0, 256, (len(y_test), 4, 4), dtype=np.uint8), y_test=y_test)
    return path


@pytest.mark.parametrize("y_train, match", [(np.array([0.0, 1.5, 2.0]), "integer class labels.*1.5"),
                                            (np.array([0.0, np.nan, 2.0]), "y_train contains 1 NaN"),
                                            (np.array(["0", "1", "2"]), "integer class labels, got dtype")])
def test_load_mnist_refuses_labels_that_are_not_integers_instead_of_casting_them(y_train, match, tmp_path):
    # the cast to int64 came first: 1.5 became class 1 (ImageData refuses 1.5 itself) and NaN int64's minimum
    with pytest.raises(ValueError, match=match):
        load_mnist(_save_npz(tmp_path / "d.npz", y_train))


def test_load_mnist_names_a_file_that_is_not_an_npz_archive(tmp_path):
    # numpy said "This file contains pickled (object) data" of a text file, and a .npy file raised a TypeError
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="not a .npz archive"):
        load_mnist(tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"single array of shape \(3, 4, 4\)"):
        load_mnist(tmp_path / "one.npy")


@pytest.mark.parametrize("content, suffix, match", [(bytes([0, 0, 8, 1, 0, 0]), "", "announces 1 dimensions"),
                                                    (_idx_bytes(0x08, "B", (3,), [0, 1, 2]), ".gz",
                                                     "not a readable gzip file")])
def test_load_mnist_refuses_a_truncated_idx_header_or_a_plain_file_named_gz(content, suffix, match, tmp_path):
    labels = _idx_bytes(0x08, "B", (3,), [0, 1, 2])
    images = _idx_bytes(0x08, "B", (3, 2, 2), list(range(12)))
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    (tmp_path / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path)


def test_load_mnist_refuses_an_empty_training_set(tmp_path):
    with pytest.raises(ValueError, match="0 training and 3 test images"):
        load_mnist(_save_npz(tmp_path / "d.npz", np.zeros(0, dtype=np.uint8)))


@pytest.mark.parametrize("limit", [3, 10])
def test_load_mnist_limit_keeps_an_image_of_every_class(limit, tmp_path):
    # the docstring's "one image each": classes of 50, 2 and 1 images have proportional shares 9.4, 0.38, 0.19
    # of 10 images, and the split kept 10, 0, 0
    y = np.repeat([0, 1, 2], [50, 2, 1]).astype(np.uint8)
    data = load_mnist(_save_npz(tmp_path / "d.npz", y), limit=limit, standardize=False)
    assert data.X_train.shape[0] == limit
    assert np.bincount(data.y_train, minlength=3).min() >= 1


def test_load_mnist_limit_is_the_stratified_split_when_every_class_has_a_share(fake_mnist):
    arrays, _, npz = fake_mnist
    keep, _ = stratified_split(arrays["y_train"], test_size=1 - 20 / 30, rng=3)
    np.testing.assert_array_equal(load_mnist(npz, limit=20, rng=3, standardize=False).X_train[..., 0],
                                  arrays["x_train"][keep] / 255.0)


def test_augment_with_an_int_seed_is_augment_with_a_generator_of_that_seed():
    # an int restarted the stream in each step: the shift redrew the bits the warp had drawn
    X = np.random.default_rng(1).standard_normal((6, 8, 8, 1))
    augment = Augment(shift=2, rotation=20.0)
    np.testing.assert_array_equal(augment(X, 7), augment(X, np.random.default_rng(7)))


def test_standardizer_inverse_transform_inverts_transform_in_the_dtype_of_x():
    # statistics fitted in float64, applied to float32 images: transform kept float32, its inverse gave float64
    rng = np.random.default_rng(2)
    s = Standardizer().fit(rng.uniform(0, 16, (20, 4, 4, 2)))
    X = rng.uniform(0, 16, (5, 4, 4, 2)).astype(np.float32)
    back = s.inverse_transform(s.transform(X))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, X, rtol=0, atol=16 * 8 * np.finfo(np.float32).eps)  # 16: the range, 8: margin
