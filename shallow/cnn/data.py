r"""Image data for the CNN: scikit-learn's digits, local MNIST-like files, splits, batches, augmentation.

Images are channels-last float arrays of shape (n, H, W, C), labels integer arrays of shape (n,).

* :func:`load_digits`: the 1797 8x8 handwritten digits shipped with scikit-learn (the ``data``
  extra; read offline, pixel values 0..16), split and standardised.
* :func:`load_mnist`: 28x28 MNIST-like data from a local copy, given by path (never downloaded):
  a Keras-style ``.npz`` (``x_train, y_train, x_test, y_test``) or a directory of the four IDX
  files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, optionally gzipped); Fashion-MNIST and KMNIST come in the same
  formats.
* :func:`stratified_split`: a deterministic stratified train/test split: a fraction ``test_size``
  of the samples, shared among the classes in proportion to their sizes and drawn with ``rng``,
  goes to the test set.
* :class:`Standardizer`: x <- (x - mean_c) / std_c per channel, with the statistics of the
  training set only.
* :func:`batches`: mini-batches in an order drawn with ``rng``.
* :func:`random_shift`, :func:`random_affine`, :class:`Augment`: random integer translations,
  small rotations, scalings and shears, with edge replication (the border pixel is repeated, which
  for digits is the background) or a constant fill.

Randomness is drawn on the host from numpy Generators and moved to the arrays' device, so the same
seed gives the same batches and augmentations on numpy and CuPy.

References
----------
1. E. Alpaydin and C. Kaynak, "Optical recognition of handwritten digits", UCI Machine Learning
   Repository, 1998 (the 8x8 digits of ``sklearn.datasets.load_digits``).
2. Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based learning applied to document
   recognition", Proc. IEEE 86, 1998 (MNIST, the IDX format; distortions as augmentation).
3. P. Simard, D. Steinkraus and J. Platt, "Best practices for convolutional neural networks
   applied to visual document analysis", ICDAR 2003 (affine and elastic deformations).
"""

from __future__ import annotations

import gzip
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import (
    check_bool,
    check_array,
    check_finite_labels,
    check_integer,
    check_nonnegative,
    check_positive,
    check_random_state,
)
from ..backend import get_xp, row_norms, to_numpy
from .layers import check_dtype
from .losses import _check_integer_values, check_labels
from .models import check_images

__all__ = [
    "ImageData",
    "load_digits",
    "load_mnist",
    "stratified_split",
    "Standardizer",
    "batches",
    "random_shift",
    "random_affine",
    "affine_warp",
    "bilinear_sample",
    "Augment",
]


@dataclass
class ImageData:
    """A train/test pair of image sets.

    Attributes
    ----------
    X_train : array of shape (n_train, H, W, C)
    y_train : int array of shape (n_train,)
    X_test : array of shape (n_test, H, W, C)
    y_test : int array of shape (n_test,)
    n_classes : int
    name : str
    standardizer : Standardizer or None
        The statistics applied to both sets (fitted on the training set), if any.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str = ""
    standardizer: "Standardizer | None" = None

    def __post_init__(self):
        self.n_classes = check_integer(self.n_classes, "n_classes", minimum=1)
        self.X_train = check_images(self.X_train, "X_train")
        self.X_test = check_images(self.X_test, "X_test", in_shape=tuple(self.X_train.shape[1:]))
        self.y_train = check_labels(self.y_train, self.n_classes, "y_train", n=self.X_train.shape[0])
        self.y_test = check_labels(self.y_test, self.n_classes, "y_test", n=self.X_test.shape[0])

    @property
    def in_shape(self) -> tuple:
        """(H, W, C) of the images."""
        return tuple(self.X_train.shape[1:])

    @property
    def background(self) -> float:
        """The value a raw 0 pixel takes after standardisation (first channel): the fill for augmentations."""
        if self.standardizer is None:
            return 0.0
        return float(-self.standardizer.mean[0] / self.standardizer.std[0])


def _check_test_size(test_size):
    if not isinstance(test_size, numbers.Real) or isinstance(test_size, bool) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    return float(test_size)


def stratified_split(y, test_size=0.25, rng=0):
    """Indices of a stratified train/test split, the same for the same ``rng``.

    Parameters
    ----------
    y : int array of shape (n,)
        Class labels, numpy or cupy (read on the host: the split is drawn there, the same for the
        same ``rng`` on every device).
    test_size : float in (0, 1)
        Fraction of the samples in the test set: ceil(test_size n) of them (as scikit-learn),
        shared among the classes in proportion to their sizes (largest remainders first).
    rng : None, int or Generator

    Returns
    -------
    train, test : sorted int numpy arrays
        Disjoint, covering range(n); on the host whatever the device of ``y`` (move them with
        :func:`shallow.backend.to_device` to index device arrays).

    Examples
    --------
    >>> import numpy as np
    >>> train, test = stratified_split(np.repeat([0, 1], 8), test_size=0.25, rng=0)
    >>> len(train), len(test)
    (12, 4)
    """
    y = to_numpy(y)  # a cupy y is copied to the host explicitly (np.asarray would raise on it)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-dimensional array of labels, got shape {y.shape}")
    if y.shape[0] < 2:
        raise ValueError(f"y must hold at least 2 labels to split, got {y.shape[0]}")
    check_finite_labels(y)
    test_size = _check_test_size(test_size)
    rng = check_random_state(rng)
    classes, counts = np.unique(y, return_counts=True)
    n_test = int(math.ceil(test_size * len(y) - 1e-9))
    if n_test == len(y):
        raise ValueError(f"test_size={test_size} leaves no training sample out of n={len(y)}: "
                         f"take test_size <= {(len(y) - 1) / len(y):.3g}")
    quotas = n_test * counts / len(y)
    k = np.floor(quotas).astype(np.int64)
    order = np.argsort(-(quotas - k), kind="stable")
    k[order[:n_test - int(k.sum())]] += 1
    test = [rng.permutation(np.flatnonzero(y == c))[:kc] for c, kc in zip(classes, k)]
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


class Standardizer:
    """Per-channel standardisation x <- (x - mean_c) / std_c, fitted on one set, applied to any.

    Attributes
    ----------
    mean, std : arrays of shape (C,)
        Statistics over (n, H, W) of the fitted set (a constant channel has its value as mean and
        std 1: it maps to 0).
    """

    def __init__(self):
        self.mean = None
        self.std = None

    def fit(self, X):
        """Fit the statistics to images X of shape (n, H, W, C); returns self."""
        X = check_images(X, "X")
        if X.shape[0] == 0:
            raise ValueError(f"X must hold at least one image to fit the statistics, got shape {tuple(X.shape)}")
        xp = get_xp(X)
        C = X.shape[3]
        # accumulated in float64 and each channel's deviations made contiguous (summed pairwise): with
        # C > 1 channels numpy added the n H W float32 pixels one after the other, and the mean and std
        # of 20000 images of 16 x 16 x 3 pixels were off by 1e-2 and 4e-3 (standardised data of mean -0.1)
        mean = X.mean(axis=(0, 1, 2), dtype=xp.float64).astype(X.dtype, copy=False)  # (C,)
        # std = |x - mean| / sqrt(n H W) per channel, the norm with each channel scaled by a power of 2
        # (row_norms): X.std squared the deviations, which left the range for pixels of order 1e-200 or
        # 1e200 (1e-25 or 1e20 in float32), giving std 0 (taken as 1) or inf, and every pixel went to ~0
        D = xp.ascontiguousarray((X - mean).reshape(-1, C).T)  # (C, n H W)
        std = row_norms(D) / math.sqrt(D.shape[1])
        # a constant channel (max = min) gets its value as mean and std 1, so that it maps to 0: its
        # computed std is the mean's rounding error (1.5e-8 for 0.1 in float32), not 0, and dividing
        # by it sent every pixel to +-1
        hi = X.max(axis=(0, 1, 2))
        constant = hi == X.min(axis=(0, 1, 2))
        self.mean = xp.where(constant, hi, mean)
        self.std = xp.where((std > 0) & ~constant, std, xp.ones_like(std))
        return self

    def _check(self, X, method):
        if self.mean is None:
            raise RuntimeError(f"Standardizer.{method} was called before fit")
        X = check_images(X, "X")
        if X.shape[3] != self.mean.shape[0]:
            raise ValueError(f"X has {X.shape[3]} channels but the standardizer was fitted on {self.mean.shape[0]}")
        return X

    def transform(self, X):
        """(X - mean) / std, channel by channel."""
        X = self._check(X, "transform")
        return ((X - self.mean) / self.std).astype(X.dtype, copy=False)

    def inverse_transform(self, X):
        """X * std + mean, in X's dtype (as :meth:`transform`)."""
        X = self._check(X, "inverse_transform")
        return (X * self.std + self.mean).astype(X.dtype, copy=False)


def _finish(X, y, X_test, y_test, n_classes, name, standardize, dtype):
    dtype = check_dtype(dtype)
    X = X.astype(dtype)
    X_test = X_test.astype(dtype)
    std = None
    if check_bool(standardize, "standardize"):
        std = Standardizer().fit(X)
        X, X_test = std.transform(X), std.transform(X_test)
    return ImageData(X, y.astype(np.int64), X_test, y_test.astype(np.int64), n_classes, name, std)


def load_digits(*, test_size=0.25, rng=0, standardize=True, dtype=np.float64) -> ImageData:
    """scikit-learn's 8x8 digits (1797 images, 10 classes), stratified split and standardised.

    Parameters
    ----------
    test_size : float
        Fraction of the images in the test set, stratified by class (25% by default: 450 test images).
    rng : None, int or Generator
        The split's randomness (0 by default: the same split everywhere).
    standardize : bool
        Standardise with the training set's mean and std (else raw pixel values 0..16).
    dtype : float32 or float64

    Returns
    -------
    ImageData with images of shape (8, 8, 1)
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as err:  # pragma: no cover - the `data` extra
        raise ImportError("load_digits needs scikit-learn: pip install 'shallow[data]'") from err
    digits = _sk_load_digits()
    X = digits.images[..., None].astype(np.float64)  # (1797, 8, 8, 1)
    y = digits.target.astype(np.int64)
    train, test = stratified_split(y, test_size, rng)
    return _finish(X[train], y[train], X[test], y[test], 10, "digits", standardize, dtype)


_IDX_NAMES = {
    "X_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}


def _read_idx(path: Path) -> np.ndarray:
    """An array from an IDX file (LeCun's format: magic 0 0 type ndim, big-endian dimensions, data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (gzip.BadGzipFile, EOFError) as err:  # a .gz name on a plain or truncated file
        raise ValueError(f"{path} is not a readable gzip file ({err}): an IDX file named .gz must be gzipped") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in types:
        raise ValueError(f"{path}: unknown IDX data type {raw[2]:#x}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:  # np.frombuffer failed with "offset must be non-negative and no greater than ..."
        raise ValueError(f"{path}: the IDX header announces {ndim} dimensions ({4 + 4 * ndim} bytes) but the file "
                         f"holds {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    data = np.frombuffer(raw, dtype=types[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: the header announces shape {shape} but the file holds {data.size} values")
    return data.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise FileNotFoundError(f"{folder} has no file {stem}[.gz]: an MNIST-like directory holds "
                            f"{', '.join(_IDX_NAMES.values())} (gzipped or not)")


def _labels(y, name):
    """Host labels as int64, refusing NaN, infinite and fractional labels (the cast to int64 floored 0.5 to 0
    and made NaN int64's minimum) and non-numeric ones."""
    y = check_finite_labels(np.asarray(y), name)
    if y.dtype.kind not in "iub":
        _check_integer_values(y, name)
    return y.astype(np.int64)


def _one_per_class(keep, y, rng):
    """``keep`` with an image of every class of y: each class that proportional shares left without one
    (classes of 50, 2 and 1 images kept to 10: 10, 0, 0) takes the place of an image of the class with
    the most kept images, drawn with ``rng``; ``keep`` unchanged when every class has an image."""
    missing = np.setdiff1d(np.unique(y), y[keep])
    if missing.size == 0:
        return keep
    keep = keep.copy()
    for c in missing:
        labels, counts = np.unique(y[keep], return_counts=True)
        largest = np.flatnonzero(y[keep] == labels[np.argmax(counts)])  # >= 2 images: limit >= the classes
        keep[rng.choice(largest)] = rng.choice(np.flatnonzero(y == c))
    return np.sort(keep)


def load_mnist(path, *, standardize=True, dtype=np.float64, scale=255.0, limit=None, rng=0) -> ImageData:
    """MNIST-like 28x28 data from a local copy; nothing is ever downloaded.

    Parameters
    ----------
    path : str or Path
        A ``.npz`` file with ``x_train, y_train, x_test, y_test`` (Keras's ``mnist.npz``), or a
        directory with the four IDX files (module notes).
    standardize : bool
        Standardise with the training set's statistics (after dividing by ``scale``).
    dtype : float32 or float64
    scale : float
        Pixel values are divided by it (255 for 8-bit images).
    limit : int, optional
        Keep a stratified subset of at most ``limit`` training images (drawn with ``rng``), for
        quick runs; the test set is kept whole. At least the number of classes: each class gets at
        least one image (a class whose proportional share rounds to none takes an image's place in
        the largest class).
    rng : None, int or Generator

    Returns
    -------
    ImageData with images of shape (H, W, 1) (or (H, W, C) for colour files)

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist (with a reminder that no download is attempted), or a directory
        lacks one of the four IDX files.
    ValueError
        For a ``.npz`` without the four arrays, a file that is not IDX, images that are not
        (n, H, W) or (n, H, W, C) with one label each, ``scale`` not positive, or ``limit`` below
        the number of classes.
    """
    scale = check_positive(scale, "scale")
    if limit is not None:
        limit = check_integer(limit, "limit", minimum=1)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist: load_mnist reads a local copy only and "
                                "never downloads (give a Keras-style mnist.npz or a directory of IDX files)")
    if path.is_dir():
        arrays = {key: _read_idx(_find_idx(path, stem)) for key, stem in _IDX_NAMES.items()}
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:  # numpy said "This file contains pickled (object) data" of a text file
            raise ValueError(f"path {str(path)!r} is not a .npz archive nor a directory of IDX files ({err})") from err
        if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy file: one array ('ndarray' is no context manager)
            raise ValueError(f"path {str(path)!r} holds a single array of shape {data.shape}, not a .npz archive "
                             "of x_train, y_train, x_test, y_test (nor a directory of IDX files)")
        with data:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data.files]
            if missing:
                raise ValueError(f"path {str(path)!r} lacks the arrays {', '.join(missing)} "
                                 "(expected x_train, y_train, x_test, y_test)")
            arrays = {"X_train": data["x_train"], "y_train": data["y_train"],
                      "X_test": data["x_test"], "y_test": data["y_test"]}
    X, y = np.asarray(arrays["X_train"], dtype=np.float64), _labels(arrays["y_train"], "y_train")
    Xt, yt = np.asarray(arrays["X_test"], dtype=np.float64), _labels(arrays["y_test"], "y_test")
    if X.ndim == 3:
        X, Xt = X[..., None], Xt[..., None]
    if X.ndim != 4 or X.shape[0] != y.shape[0] or Xt.shape[0] != yt.shape[0]:
        raise ValueError(f"path {str(path)!r} holds images of shape {X.shape} with {y.shape[0]} labels: expected "
                         "(n, H, W) or (n, H, W, C) images and n labels")
    if X.shape[0] == 0 or Xt.shape[0] == 0:  # y.max() failed inside numpy ("zero-size array to reduction ...")
        raise ValueError(f"path {str(path)!r} holds {X.shape[0]} training and {Xt.shape[0]} test images: both sets "
                         "need at least one")
    n_classes = int(max(y.max(), yt.max())) + 1
    if limit is not None:
        limit = check_integer(limit, "limit", minimum=n_classes)
        if limit < len(y):
            rng = check_random_state(rng)
            keep, _ = stratified_split(y, test_size=1 - limit / len(y), rng=rng)
            keep = _one_per_class(keep, y, rng)
            X, y = X[keep], y[keep]
    return _finish(X / scale, y, Xt / scale, yt, n_classes, path.stem, standardize, dtype)


def batches(X, y, batch_size, *, rng=None, shuffle=True, drop_last=False):
    """Mini-batches (X[idx], y[idx]) covering the set once, in an order drawn with ``rng``.

    The indices are drawn without replacement (random reshuffling, as PyTorch's ``DataLoader(shuffle=True)``),
    not i.i.d. uniform as in the seed's SGD slide; each batch is still a uniform draw, so its gradient
    is an unbiased estimate of the full gradient when the loss is a mean of per-image losses (not with
    batch norm in train mode, :mod:`~shallow.cnn.norm`), and with equal batches the mean of an
    epoch's batch gradients is the full gradient exactly.

    Parameters
    ----------
    X : array of shape (n, ...)
    y : array of shape (n,) or (n, ...), or None
        Labels, or targets (a row per image).
    batch_size : int
    rng : None, int or Generator
        Used for the permutation when ``shuffle``.
    shuffle : bool
    drop_last : bool
        Leave out the last, smaller batch.

    Yields
    ------
    (xb, yb) : arrays of batch_size rows (yb None when y is None)
    """
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    if getattr(X, "ndim", 0) < 1:
        raise ValueError(f"X must be an array of shape (n, ...), got {type(X).__name__}")
    n = X.shape[0]
    if y is not None and getattr(y, "ndim", 0) < 1:
        raise ValueError(f"y must be None or an array of shape (n,) or (n, ...), got {type(y).__name__} of shape "
                         f"{getattr(y, 'shape', None)}")
    if y is not None and y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} rows but X has {n} images")
    order = check_random_state(rng).permutation(n) if shuffle else np.arange(n)
    xp = get_xp(X)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        if shuffle:
            idx_d = xp.asarray(idx)
            yield X[idx_d], (None if y is None else y[idx_d])
        else:
            yield X[start:start + len(idx)], (None if y is None else y[start:start + len(idx)])


def _check_fill(fill):
    if fill is not None and (not isinstance(fill, numbers.Real) or isinstance(fill, bool) or not math.isfinite(fill)):
        raise ValueError(f"fill must be None (edge replication) or a finite number, got {fill!r}")
    return fill


def random_shift(X, max_shift=1, rng=None, *, fill=None):
    """Translate each image by an integer (dy, dx) drawn uniformly in [-max_shift, max_shift]^2.

    Parameters
    ----------
    X : array of shape (n, H, W, C)
    max_shift : int
    rng : None, int or Generator
    fill : None or float
        None repeats the border pixels (edge mode); a number fills the uncovered band.

    Returns
    -------
    array of X's shape: out[k, i, j] = X[k, i - dy_k, j - dx_k] (or the fill outside the image)
    """
    X = check_images(X, "X")
    max_shift = check_integer(max_shift, "max_shift", minimum=0)
    fill = _check_fill(fill)
    rng = check_random_state(rng)
    n, H, W, C = X.shape
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    if max_shift == 0:
        return X.copy()
    xp = get_xp(X)
    rows = xp.asarray(np.arange(H)[None, :] - shifts[:, :1])  # (n, H)
    cols = xp.asarray(np.arange(W)[None, :] - shifts[:, 1:])  # (n, W)
    k = xp.arange(n)[:, None, None]
    out = X[k, xp.clip(rows, 0, H - 1)[:, :, None], xp.clip(cols, 0, W - 1)[:, None, :]]
    if fill is not None:
        outside = ((rows < 0) | (rows >= H))[:, :, None] | ((cols < 0) | (cols >= W))[:, None, :]
        out[outside] = fill
    return out


def random_affine(X, rng=None, *, max_angle=10.0, max_scale=0.0, max_shear=0.0, fill=None):
    """Warp each image by a small random affine map about its centre, with bilinear interpolation.

    Parameters
    ----------
    X : array of shape (n, H, W, C)
    rng : None, int or Generator
    max_angle : float
        Rotation angles are uniform in [-max_angle, max_angle] degrees.
    max_scale : float
        Scale factors are exp(u), u uniform in [-max_scale, max_scale].
    max_shear : float
        Shear factors are uniform in [-max_shear, max_shear].
    fill : None or float
        None clamps source coordinates to the image (edge replication); a number fills the
        points whose source falls outside.

    Returns
    -------
    array of X's shape

    Notes
    -----
    With c the image centre ((H - 1)/2, (W - 1)/2) and p = (row, col), the output at p is X
    interpolated at A (p - c) + c, with A = R(theta) [[1, s], [0, 1]] / exp(u) and
    R(theta) = [[cos, -sin], [sin, cos]]: an exact grid permutation for theta a multiple of 90
    degrees on a square image (theta = 90 with a unit scale gives ``np.rot90(X, k=-1, axes=(1, 2))``,
    a clockwise quarter turn of the displayed image).
    """
    X = check_images(X, "X")
    max_angle = check_nonnegative(max_angle, "max_angle")
    max_scale = check_nonnegative(max_scale, "max_scale")
    max_shear = check_nonnegative(max_shear, "max_shear")
    fill = _check_fill(fill)
    rng = check_random_state(rng)
    n, H, W, C = X.shape
    theta = np.deg2rad(rng.uniform(-max_angle, max_angle, size=n))
    scale = np.exp(rng.uniform(-max_scale, max_scale, size=n))
    shear = rng.uniform(-max_shear, max_shear, size=n)
    cos, sin = np.cos(theta), np.sin(theta)
    # A = R(theta) @ [[1, shear], [0, 1]] / scale, per image
    A = np.stack([np.stack([cos, cos * shear - sin], -1), np.stack([sin, sin * shear + cos], -1)], -2)
    A /= scale[:, None, None]
    return affine_warp(X, A, fill=fill)


def affine_warp(X, A, *, fill=None):
    """Sample each image k at A_k (p - c) + c by bilinear interpolation (c the image centre).

    Parameters
    ----------
    X : array of shape (n, H, W, C)
    A : array_like of shape (n, 2, 2) or (2, 2)
        Maps output (row, col) offsets from the centre to source offsets (host data).
    fill : None or float
        None clamps source coordinates to the image (edge replication); a number fills the
        points whose source falls outside.

    Returns
    -------
    array of X's shape and dtype

    Notes
    -----
    Source points within 1e-9 of a grid point are snapped to it, so that A = [[0, -1], [1, 0]]
    on a square image is the exact permutation ``np.rot90(X, k=-1, axes=(1, 2))``.
    """
    X = check_images(X, "X")
    xp = get_xp(X)
    A = to_numpy(check_array(A, "A")).astype(np.float64, copy=False)
    if A.shape != (2, 2) and A.shape != (X.shape[0], 2, 2):
        raise ValueError(f"A must have shape (2, 2) or ({X.shape[0]}, 2, 2), got {A.shape}")
    fill = _check_fill(fill)
    H, W = X.shape[1:3]
    ci, cj = (H - 1) / 2.0, (W - 1) / 2.0
    pi, pj = np.meshgrid(np.arange(H) - ci, np.arange(W) - cj, indexing="ij")  # (H, W)
    # (n, H, W) sources for one A per image; one A for all images: (H, W), once
    si = A[..., 0, 0, None, None] * pi + A[..., 0, 1, None, None] * pj + ci
    sj = A[..., 1, 0, None, None] * pi + A[..., 1, 1, None, None] * pj + cj
    # exact grid points stay exact (rot90): round away floating-point dust
    si = np.where(np.abs(si - np.round(si)) < 1e-9, np.round(si), si)
    sj = np.where(np.abs(sj - np.round(sj)) < 1e-9, np.round(sj), sj)
    return _bilinear_sample(X, xp.asarray(si), xp.asarray(sj), fill)


def bilinear_sample(X, si, sj, *, fill=None):
    """Image k of X read at the points (si[k], sj[k]) by bilinear interpolation.

    Parameters
    ----------
    X : array of shape (n, H, W, C)
    si, sj : float arrays of shape (n, H', W'), on X's device
        Source row and column of every output pixel.
    fill : None or float
        None clamps the sources to the image (edge replication); a number fills the points whose
        source falls outside [0, H - 1] x [0, W - 1].

    Returns
    -------
    array of shape (n, H', W', C), X's dtype

    Notes
    -----
    With i0 = floor(si), j0 = floor(sj), a = si - i0, b = sj - j0:
    (1-a)(1-b) X[i0, j0] + (1-a) b X[i0, j0+1] + a (1-b) X[i0+1, j0] + a b X[i0+1, j0+1]. The one
    sampler of :func:`affine_warp` and :func:`shallow.cnn.robustness.deform`.
    """
    X = check_images(X, "X")
    si, sj = check_array(si, "si"), check_array(sj, "sj")
    get_xp(X, si, sj)  # refuses a numpy/cupy mix
    n, H, W, _ = X.shape
    if si.shape != sj.shape or si.ndim not in (2, 3) or (si.ndim == 3 and si.shape[0] != n):
        raise ValueError(f"si and sj must have one shape, (n, H', W') with n={n} or (H', W') for all images, "
                         f"got {tuple(si.shape)} and {tuple(sj.shape)}")
    return _bilinear_sample(X, si, sj, _check_fill(fill))


def _bilinear_sample(X, si, sj, fill):
    """bilinear_sample without the checks (for callers that made them).

    Each corner is one gather of flat pixel indices i W + j from X seen as (n, H W, C): shared sources
    (H', W') index every image at once, per-image ones go through take_along_axis. (Three broadcast
    index arrays per corner took 2 to 4 times as long, and 20 times the output's memory.)"""
    xp = get_xp(X, si, sj)
    n, H, W, C = X.shape
    if n == 0:  # no images: no samples (reshape(0, -1, 1) failed inside numpy)
        return xp.zeros((0, *si.shape[-2:], C), dtype=X.dtype)
    shared = si.ndim == 2
    outside = (si < 0) | (si > H - 1) | (sj < 0) | (sj > W - 1)
    si, sj = xp.clip(si, 0, H - 1), xp.clip(sj, 0, W - 1)
    i0, j0 = xp.floor(si).astype(xp.intp), xp.floor(sj).astype(xp.intp)
    i1, j1 = xp.minimum(i0 + 1, H - 1), xp.minimum(j0 + 1, W - 1)
    a, b = (si - i0)[..., None].astype(X.dtype), (sj - j0)[..., None].astype(X.dtype)
    Xf = X.reshape(n, H * W, C)
    grid = si.shape[-2:]

    def corner(i, j):
        flat = i * W + j
        if shared:
            return Xf[:, flat.reshape(-1)].reshape(n, *grid, C)
        return xp.take_along_axis(Xf, flat.reshape(n, -1, 1), axis=1).reshape(n, *grid, C)

    out = ((1 - a) * ((1 - b) * corner(i0, j0) + b * corner(i0, j1))
           + a * ((1 - b) * corner(i1, j0) + b * corner(i1, j1)))
    if fill is not None:
        if shared:
            out[:, outside] = fill
        else:
            out[outside] = fill
    return out.astype(X.dtype, copy=False)


class Augment:
    """Random augmentation of a batch: a small affine warp, then an integer shift.

    Parameters
    ----------
    shift : int
        Maximal translation in pixels (:func:`random_shift`).
    rotation : float
        Maximal rotation in degrees (:func:`random_affine`; 0 skips the warp when scale and shear are 0).
    scale, shear : float
        Maximal log-scale and shear of the warp.
    fill : None or float
        Edge replication (None) or a constant.

    Examples
    --------
    >>> import numpy as np
    >>> augment = Augment(shift=1)
    >>> augment(np.zeros((2, 8, 8, 1)), np.random.default_rng(0)).shape
    (2, 8, 8, 1)
    """

    def __init__(self, shift=1, rotation=0.0, scale=0.0, shear=0.0, fill=None):
        self.shift = check_integer(shift, "shift", minimum=0)
        self.rotation = check_nonnegative(rotation, "rotation")
        self.scale = check_nonnegative(scale, "scale")
        self.shear = check_nonnegative(shear, "shear")
        self.fill = _check_fill(fill)

    def __call__(self, X, rng):
        """The augmented batch (a new array); ``rng`` is a numpy Generator (advanced), or an int seed or None."""
        rng = check_random_state(rng)  # an int seed restarted the stream in each step: the shift redrew the warp's bits
        if self.rotation or self.scale or self.shear:
            X = random_affine(X, rng, max_angle=self.rotation, max_scale=self.scale, max_shear=self.shear,
                              fill=self.fill)
        if self.shift:
            X = random_shift(X, self.shift, rng, fill=self.fill)
        return X

    def __repr__(self):
        return (f"Augment(shift={self.shift}, rotation={self.rotation}, scale={self.scale}, shear={self.shear}, "
                f"fill={self.fill})")
