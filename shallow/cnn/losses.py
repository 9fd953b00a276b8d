r"""Losses of a batch of network outputs, with their gradients: cross-entropy and the square loss.

Both are means over the batch, so that the gradient of a mini-batch estimates that of the risk:

* cross-entropy of logits z (N, K) against labels y in {0, ..., K-1}:
  L = (1/N) sum_n [logsumexp(z_n) - z_{n, y_n}], dL/dz = (softmax(z) - onehot(y)) / N;
  with label smoothing eps (Szegedy et al. 2016, Sec. 7; PyTorch's ``label_smoothing``), against
  the targets q_n = (1 - eps) onehot(y_n) + eps / K:
  L = (1/N) sum_n [logsumexp(z_n) - sum_k q_{n,k} z_{n,k}], dL/dz = (softmax(z) - q) / N;
* square loss of outputs f (N, K) against targets Y (N, K):
  L = (1/(2N)) sum_n |f_n - Y_n|^2, dL/df = (f - Y) / N; integer labels are one-hot encoded.
  PyTorch's ``MSELoss()`` (the mean of the N K squares, no 1/2) is 2/K times this L.

Each loss takes a ``scale`` that multiplies its value and gradient. The lazy-training objective of
Chizat, Oyallon and Bach (2019, Eq. 2), (1/alpha^2) L(alpha f), is the loss with
``scale=1/alpha**2`` applied to a model whose output scale is alpha
(:class:`shallow.cnn.models.Model`).

logsumexp is evaluated as max + log sum exp(z - max): no overflow for logits as large as the
dtype allows.

References
----------
1. L. Chizat, E. Oyallon and F. Bach, "On lazy training in differentiable programming",
   NeurIPS 2019, arXiv:1812.07956, Sec. 2 (the scaled objective).
2. I. Goodfellow, Y. Bengio and A. Courville, "Deep Learning", MIT Press 2016, Sec. 6.2.2.3 and
   4.1 (softmax cross-entropy and its stable evaluation).
3. C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens and Z. Wojna, "Rethinking the Inception
   architecture for computer vision", CVPR 2016, arXiv:1512.00567, Sec. 7 (label smoothing).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validation import check_array, check_integer, check_nonnegative, check_positive
from ..backend import get_xp

__all__ = ["CrossEntropy", "SquareLoss", "log_softmax", "cross_entropy_per_sample", "accuracy", "check_labels"]


def check_labels(y, n_classes: int, name: str = "y", n: int | None = None):
    """``y`` as an integer array of labels in {0, ..., n_classes - 1}, of length n when given.

    Parameters
    ----------
    y : array_like of shape (n,)
        Class labels, numpy or cupy: integers, or floats with integer values.
    n_classes : int
        Number of classes K, K >= 1.
    name : str
        The argument's name in error messages, default "y".
    n : int, optional
        The number of samples y must label; by default any length.

    Returns
    -------
    y : array of shape (n,)
        On y's device; y itself (as an array) for an integer dtype, an int64 copy for floats.

    Raises
    ------
    ValueError
        Naming ``name``, for a non-integer array, an array that is not 1-dimensional, a wrong length
        or a label out of range; and for n_classes not an integer >= 1.
    """
    check_integer(n_classes, "n_classes", minimum=1)
    xp = get_xp(y)
    y = xp.asarray(y)
    _check_label_shape(y, n, name)
    integer = xp.issubdtype(y.dtype, xp.integer)
    if not integer and y.size:
        _check_integer_values(y, name)
    if y.size:
        # the range of the labels as given: a float label inf or 1e30 cast to int64 first became
        # int64's minimum, and the message named a label that was not there
        lo, hi = y.min().item(), y.max().item()
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} holds the label {bad}, out of range for {n_classes} classes "
                             f"(labels must be in 0..{n_classes - 1})")
    return y if integer else y.astype(xp.int64)


def _check_integer_values(y, name: str = "y"):
    """Refuse labels ``y`` of a non-integer dtype unless they are floats with integer values, naming ``name``."""
    xp = get_xp(y)
    if not xp.issubdtype(y.dtype, xp.floating):
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    fractional = y != xp.round(y)
    if bool(xp.any(fractional)):  # floats with integer values are labels: name a value that is not
        raise ValueError(f"{name} must hold integer class labels (floats with integer values are taken), got "
                         f"{y[fractional][0].item()!r}")


def _check_label_shape(y, n: int | None, name: str = "y"):
    """Refuse labels ``y`` (an array) that are not of shape (n,), naming ``name``.

    The shape part of :func:`check_labels` alone, for the losses' unchecked path (``check=False``,
    a training step): labels of shape (1,) or (n, 1) would broadcast against the n rows of the
    outputs into a wrong loss. A shape comparison: no read of the device.
    """
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional array of class labels, got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but there are {n} samples")


def log_softmax(z):
    """log softmax(z) along the last axis, stably: z - max - log1p(sum of exp(z - max) over the others).

    The largest terms are exp(0) = 1 exactly: the others are summed apart and added by log1p. A sum
    within eps of 1 lost them (a confident float32 prediction, margin 20: log softmax of the true class
    0 instead of -5e-8, the loss 63% off).

    A +inf logit makes its row NaN here (inf - inf): taking its limit costs a pass over z that the
    training step would pay on every batch. :func:`shallow.cnn.train.evaluate` takes the limit (a
    class of probability 1), so that it reports the loss (0 or +inf) and the accuracy.

    Parameters
    ----------
    z : array of shape (..., K)

    Returns
    -------
    array of z's shape
    """
    xp = get_xp(z)
    z = xp.asarray(z)
    if z.dtype.kind not in "fiu":
        raise ValueError(f"z must hold real numbers, got dtype {z.dtype}")
    if z.ndim < 1 or z.shape[-1] == 0:  # a max over no classes failed inside numpy
        raise ValueError(f"z must have shape (..., K) with K >= 1 classes on its last axis, got {tuple(z.shape)}")
    if z.dtype.kind != "f":  # integer differences wrapped around (uint8 [1, 3] gave -inf)
        z = z.astype(xp.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    top = shifted == 0  # the maximum and its ties, each exp(0) = 1
    others = xp.where(top, 0, xp.exp(shifted)).sum(axis=-1, keepdims=True)
    ties = (top.sum(axis=-1, keepdims=True) - 1).astype(others.dtype)  # an integer count would promote float32
    return shifted - xp.log1p(others + ties)


def _log_softmax_limit(z):
    """:func:`log_softmax` of real floating logits z (..., K) that may hold +inf, taking its limit.

    A +inf logit is the limit of a large finite one: a class of probability 1 (log softmax 0, -inf at
    the finite logits of its row), and c tied maxima, +inf ones included, share it (-log c each); a
    row of -inf only is uniform, as equal logits are (softmax(z + c) = softmax(z)). A NaN makes its
    row NaN. On finite logits the same numbers as log_softmax, but a pass over z more (a where, and
    a comparison with the row's maxima rather than with 0): 10-15% slower, and the loss and gradient
    of a 1024 x 10 batch 7-9% (float64 and float32, 2-core Xeon). So log_softmax, which the training
    step calls on every batch, keeps its own path (NaN at a +inf logit), and this one serves where a
    loss is read on the host anyway (:func:`shallow.cnn.train.evaluate`).
    """
    xp = get_xp(z)
    m = z.max(axis=-1, keepdims=True)
    top = z == m  # the maximum and its ties, each exp(0) = 1: the +inf logits of a row whose maximum is +inf
    with np.errstate(invalid="ignore"):  # inf - inf at a +inf maximum (-inf - -inf at a -inf one): NaN, set to 0
        shifted = xp.where(top, 0, z - m)
    others = xp.where(top, 0, xp.exp(shifted)).sum(axis=-1, keepdims=True)
    ties = (top.sum(axis=-1, keepdims=True) - 1).astype(others.dtype)
    return shifted - xp.log1p(others + ties)


def accuracy(out, y) -> float:
    """The fraction of rows of ``out`` (N, K) whose argmax is the label ``y`` (N,).

    Parameters
    ----------
    out : array_like of shape (N, K), N, K >= 1
        Real outputs (logits or scores), numpy or cupy; a list is taken. Ties go to the first
        maximum (argmax).
    y : array_like of shape (N,)
        Labels in {0, ..., K - 1}: integers, or floats with integer values; moved to out's device.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        For out not real, with NaN or not of shape (N, K) with N, K >= 1, and for y of another shape,
        not integer-valued or with a label out of range (see :func:`check_labels`).
    """
    xp = get_xp(out)
    out = _check_outputs(out, "out")
    y = xp.asarray(y)
    if y.shape != (out.shape[0],):
        raise ValueError(f"y must hold one label per row of out, shape ({out.shape[0]},), got shape {tuple(y.shape)}")
    nan = int(xp.isnan(out).sum()) if out.dtype.kind == "f" else 0
    if nan:  # argmax picks the first NaN of a row: a diverged network scored as if it predicted
        raise ValueError(f"out contains {nan} NaN value(s): a row with NaN has no argmax")
    y = check_labels(y, out.shape[1], "y")  # out of range, negative or fractional: ValueError (it silently counted 0 right)
    return float((xp.argmax(out, axis=1) == y).mean())


def _total(total, as_array):
    """A 0-d sum as a float, or as a 0-d float64 array on its device (the same number)."""
    return total.astype("float64") if as_array else float(total)


def _check_outputs(out, name="out"):
    """``out`` as an array (a list is taken), refused unless of shape (N, K) with N, K >= 1 and real."""
    out = get_xp(out).asarray(out)
    if out.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {out.dtype}")
    if out.ndim != 2:
        raise ValueError(f"{name} must have shape (N, K), one row of outputs per sample, got {tuple(out.shape)}")
    if 0 in out.shape:  # a mean over no samples, or a softmax over no classes
        raise ValueError(f"{name} must hold at least one row (sample) and one column (output), got shape "
                         f"{tuple(out.shape)}")
    return out


def cross_entropy_per_sample(z, y):
    """The losses l_n = logsumexp(z_n) - z_{n, y_n} (N,) and their gradients dl_n/dz_n = softmax(z_n) - e_{y_n}
    (N, K), for logits z (N, K) and valid labels y (N,) (their values unchecked: callers check once).

    Parameters
    ----------
    z : array of shape (N, K)
        Real logits, numpy or cupy, with N, K >= 1 (other dtypes and shapes are refused).
    y : integer array of shape (N,)
        Labels in {0, ..., K - 1} on z's device. Their shape and integer dtype are checked, not their
        values: validate them with :func:`check_labels` first (a negative label indexes from the end).

    Returns
    -------
    losses : array of shape (N,)
    grad : array of shape (N, K)
        Both on z's device, in z's floating dtype (float64 for integer logits).
    """
    z = _check_outputs(z, "z")
    xp = get_xp(z)
    y = xp.asarray(y)
    _check_label_shape(y, z.shape[0])  # shapes only, no read of the device: the values stay unchecked
    if y.dtype.kind not in "iu":
        raise ValueError(f"y must be an integer array of class labels (see check_labels), got dtype {y.dtype}")
    rows = xp.arange(z.shape[0])
    logp = log_softmax(z)
    losses = -logp[rows, y]
    grad = xp.exp(logp)
    # softmax_y - 1 = -(sum of the other probabilities): for a confident prediction, 1 - p_y cancelled to
    # rounding (77% off at margin 15 in float32) where the sum of the small others does not
    grad[rows, y] = 0
    grad[rows, y] = -grad.sum(axis=1)
    return losses, grad


class CrossEntropy:
    """Softmax cross-entropy, L = (scale / N) sum_n [logsumexp(z_n) - sum_k q_{n,k} z_{n,k}].

    The targets are q_n = onehot(y_n), or (1 - eps) onehot(y_n) + eps / K with label smoothing eps.

    Parameters
    ----------
    scale : float
        Multiplies value and gradient (1 / alpha^2 for the lazy-training objective).
    label_smoothing : float
        eps in [0, 1], default 0 (none): PyTorch's ``CrossEntropyLoss(label_smoothing=eps)``.

    Examples
    --------
    >>> import numpy as np
    >>> value, grad = CrossEntropy().value_and_grad(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(value, 6) == round(float(np.log(4)), 6), grad.shape
    (True, (2, 4))
    >>> _, grad = CrossEntropy(label_smoothing=0.4).value_and_grad(np.zeros((1, 4)), np.array([0]))
    >>> grad.round(12).tolist()    # softmax - q, q = 0.6 onehot + 0.4 / 4
    [[-0.45, 0.15, 0.15, 0.15]]
    """

    def __init__(self, scale=1.0, label_smoothing=0.0):
        self.scale = check_positive(scale, "scale")
        self.label_smoothing = check_nonnegative(label_smoothing, "label_smoothing")
        if self.label_smoothing > 1:
            raise ValueError(f"label_smoothing must be in [0, 1] (the weight of the uniform target), "
                             f"got {label_smoothing!r}")

    def value_and_grad(self, z, y, *, check=True, as_array=False):
        """(L, dL/dz) for logits z of shape (N, K) and labels y of shape (N,).

        L is a float, or with ``as_array=True`` a 0-d float64 array on z's device holding the same
        number (no transfer to the host: what a recorded step needs). ``check=False`` skips the
        labels' range checks (which read the device), not their shape nor their integer dtype (free
        to check): labels given as floats of integer values must be converted by
        :func:`check_labels` first.
        """
        z = _check_outputs(z, "z")
        if check:
            y = check_labels(y, z.shape[1], "y", n=z.shape[0])
        else:
            y = get_xp(z).asarray(y)
            _check_label_shape(y, z.shape[0])
        N = z.shape[0]
        losses, grad = cross_entropy_per_sample(z, y)
        eps = self.label_smoothing
        if eps:
            # l_n = (1 - eps) [lse - z_y] + eps [lse - mean_k z_k] = [lse - z_y] + eps [z_y - mean_k z_k],
            # dl/dz = softmax - onehot + eps (onehot - 1/K)
            xp, K = get_xp(z), z.shape[1]
            zf = z if z.dtype.kind == "f" else z.astype(grad.dtype)
            rows = xp.arange(N)
            losses = losses + eps * (zf[rows, y] - zf.mean(axis=1))
            grad -= eps / K
            grad[rows, y] += eps
        value = _total(losses.sum(), as_array) * self.scale / N
        grad *= self.scale / N
        return value, grad

    def _smoothed(self, logp, y):
        """sum_n of -sum_k q_{n,k} log p_{n,k} from log-probabilities logp (N, K), a 0-d array."""
        xp = get_xp(logp)
        true = logp[xp.arange(logp.shape[0]), y]
        eps = self.label_smoothing
        if not eps:  # not (1 - 0) true + 0 mean: 0 * -inf is NaN where a class has probability 0
            return -true.sum()
        return -((1.0 - eps) * true + eps * logp.mean(axis=1)).sum()

    def _limit_value(self, z, y):
        """L as a float for logits z (N, K) that may hold +inf, by :func:`_log_softmax_limit`: the term of a
        sample is 0 for a lone +inf logit at its label, log c for c tied +inf maxima one of which is the
        label's, +inf for a +inf logit elsewhere (and, with label smoothing, wherever a class has
        probability 0); labels y valid and on z's device (unchecked)."""
        xp = get_xp(z)
        z = z if z.dtype.kind == "f" else z.astype(xp.float64)
        return float(self._smoothed(_log_softmax_limit(z), y)) * self.scale / z.shape[0]

    def __call__(self, z, y):
        """L for logits z of shape (N, K) and labels y of shape (N,)."""
        z = _check_outputs(z, "z")
        y = check_labels(y, z.shape[1], "y", n=z.shape[0])
        return float(self._smoothed(log_softmax(z), y)) * self.scale / z.shape[0]

    def __repr__(self):
        smoothing = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return f"CrossEntropy(scale={self.scale}{smoothing})"


class SquareLoss:
    """Square loss, L = (scale / (2N)) sum_n |f_n - Y_n|^2.

    Parameters
    ----------
    scale : float
        Multiplies value and gradient (1 / alpha^2 for the lazy-training objective).
    target_value : float
        For integer labels y, Y_n = target_value * onehot(y_n) (1 by default).

    Notes
    -----
    Targets may be given as labels (N,) for outputs (N, K) with K >= 2, or as real arrays of the
    outputs' shape. For one output, K = 1, a y of shape (N,) holds real targets, integers included
    (labels of one class would all be 0).
    """

    def __init__(self, scale=1.0, target_value=1.0):
        self.scale = check_positive(scale, "scale")
        if isinstance(target_value, bool) or not isinstance(target_value, numbers.Real) \
                or not math.isfinite(target_value):
            raise ValueError(f"target_value must be a finite number, got {target_value!r}")
        self.target_value = float(target_value)

    def _targets(self, f, y, check):
        xp = get_xp(f)
        y = xp.asarray(y)
        if y.ndim == 1 and f.ndim == 2 and f.shape[1] > 1:
            if check:
                y = check_labels(y, f.shape[1], "y", n=f.shape[0])
            else:
                _check_label_shape(y, f.shape[0])
            Y = xp.zeros(f.shape, dtype=f.dtype)
            Y[xp.arange(f.shape[0]), y] = self.target_value
            return Y
        if y.dtype.kind not in "fiub":  # complex targets lost their imaginary part, strings failed in numpy
            raise ValueError(f"y must hold class labels or real targets, got dtype {y.dtype}")
        if y.ndim == 1 and f.shape == (y.shape[0], 1):
            y = y[:, None]  # real targets of a network with one output
        if y.shape != f.shape:
            raise ValueError(f"y must be labels of shape ({f.shape[0]},) or targets of the outputs' shape "
                             f"{tuple(f.shape)}, got shape {tuple(y.shape)}")
        if check:  # a NaN target gave a NaN loss, an inf one an inf loss (reads the device, as check_labels)
            y = check_array(y, "y")
        return y.astype(f.dtype, copy=False)

    def value_and_grad(self, f, y, *, check=True, as_array=False):
        """(L, dL/df) for outputs f of shape (N, K) and labels (N,) or targets (N, K); L a float,
        or a 0-d float64 array on f's device with ``as_array=True``. ``check=False`` skips the
        labels' dtype and range checks and the finiteness of real targets (all read the device), not
        their shape."""
        f = _check_outputs(f, "f")
        if f.dtype.kind != "f":  # integer outputs (accepted as real numbers): the targets and gradient are real
            f = f.astype(get_xp(f).float64)
        r = f - self._targets(f, y, check)  # (N, K)
        N = f.shape[0]
        xp = get_xp(f)
        # in float64 (an (N, K) copy for float32 outputs): float32 squares overflow from |r| = 1.8e19
        # on, where the value (a float64) is finite, and scale / N rounded to float32 is subnormal
        # below 1.2e-38 (the lazy objective's 1 / alpha^2), where the gradient scale r / N is not
        r64 = r.astype(xp.float64, copy=False)
        value = 0.5 * _total(xp.sum(r64 * r64), as_array) * self.scale / N  # not vdot: cuBLAS, refused in capture
        return value, (r64 * (self.scale / N)).astype(f.dtype, copy=False)

    def __call__(self, f, y):
        """L, a float, for outputs f of shape (N, K) and labels (N,) or targets (N, K)."""
        return self.value_and_grad(f, y)[0]

    def __repr__(self):
        return f"SquareLoss(scale={self.scale}, target_value={self.target_value})"
