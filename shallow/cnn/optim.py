r"""Optimisers (SGD with momentum and weight decay, Adam) and learning-rate schedules.

An optimiser holds references to the parameter arrays of a model (``model.named_parameters()``)
and updates them in place with ``step(grads)``, ``grads`` being ``model.named_gradients()`` after a
backward pass. Step t (counted from 0) uses the learning rate eta_t = ``schedule(t)``; a float
learning rate is a constant schedule. Schedules count optimiser steps, not epochs (PyTorch's
``StepLR`` and ``CosineAnnealingLR`` are usually stepped once per epoch): an epoch of
:func:`~shallow.cnn.train.fit` is ceil(n / batch_size) steps, so ``StepDecay(lr, k * steps_per_epoch)``
decays every k epochs; :class:`PerEpoch` does that count: ``PerEpoch(StepDecay(lr, k))`` and
``PerEpoch(Cosine(lr, E))`` are PyTorch's ``StepLR(opt, k)`` and ``CosineAnnealingLR(opt, E)``
stepped once per epoch, :func:`~shallow.cnn.train.fit` filling in the steps per epoch.
:class:`ReduceOnPlateau` is PyTorch's ``ReduceLROnPlateau``: :func:`~shallow.cnn.train.fit` passes
it the monitored loss (or accuracy) after each epoch, and saves its state in the checkpoints.

When the parameters, and then the gradients, tile one flat array each
(:meth:`~shallow.cnn.layers.Layer.flatten_parameters`, done by ``model.to(device)``), a step
updates the flat arrays with the same elementwise formula: the same numbers, in a few operations
instead of a few per parameter (on a GPU, each operation is a kernel launch).

The update rules are those of PyTorch (``torch.optim``), so that runs can be compared step for step:

SGD, momentum mu, weight decay lambda, dampening 0:

    g = grad + lambda theta,   v <- mu v + g  (v_0 = 0),   theta <- theta - eta_t d,

with d = v, or d = g + mu v with ``nesterov=True`` (Sutskever et al. 2013).

Adam (Kingma and Ba 2015, Algorithm 1), t >= 1 the number of the step:

    g = grad + lambda theta   (or, ``decoupled=True`` (AdamW), theta <- theta (1 - eta_t lambda) first),
    m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
    theta <- theta - eta_t (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps).

AMSGrad (Reddi, Kale and Kumar 2018; ``amsgrad=True``, PyTorch's form) keeps the largest second
moment so far, v_max <- max(v_max, v) (v_max_0 = 0), and divides by sqrt(v_max / (1 - beta2^t)) + eps.

Weight decay on some parameters only. The usual practice decays the weights but not the biases
nor the batch-norm scales and shifts: ``no_decay=("b", "gamma", "beta")`` (:data:`BIASES_AND_NORMS`)
gives lambda = 0 to the parameters whose name matches one of the patterns (``fnmatch`` patterns,
matched against the dotted name of ``model.named_parameters()``, ``"net.4.gamma"``, or its last
component, ``"gamma"``). It is PyTorch's two parameter groups,

    torch.optim.SGD([{"params": decayed, "weight_decay": lam}, {"params": others, "weight_decay": 0.0}], ...),

with the same numbers. On flat parameters the step multiplies by a vector of the lambdas (for
AdamW: chooses the factor (1 - eta_t lambda) or 1 by a mask), built once: as many operations as
with one lambda for all.

Gradient clipping by global norm (``clip_norm=c``), as ``torch.nn.utils.clip_grad_norm_(params, c)``
before each step: the gradient of all the parameters together is scaled,

    grad <- grad min(1, c / (|grad|_2 + 1e-6)),

before the weight decay is added (PyTorch's order: the clipping acts on the gradients, the decay
is the optimiser's). The norm and the factor stay on the device (no wait for it); on flat
gradients they are one norm of one array. :func:`clip_grad_norm` does the same in place on a dict
of gradients, for a loop of one's own.

References
----------
1. I. Sutskever, J. Martens, G. Dahl and G. Hinton, "On the importance of initialization and
   momentum in deep learning", ICML 2013 (momentum, Nesterov's variant).
2. D. P. Kingma and J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
   arXiv:1412.6980, Algorithm 1.
3. I. Loshchilov and F. Hutter, "Decoupled weight decay regularization", ICLR 2019,
   arXiv:1711.05101 (AdamW); "SGDR: stochastic gradient descent with warm restarts", ICLR 2017,
   arXiv:1608.03983, Eq. 5 (cosine schedule).
4. S. J. Reddi, S. Kale and S. Kumar, "On the convergence of Adam and beyond", ICLR 2018,
   arXiv:1904.09237, Algorithm 2 (AMSGrad).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping

import numpy as np

from .._validation import check_array, check_bool, check_integer, check_nonnegative, check_positive
from ..backend import get_xp, to_numpy
from .layers import check_layer, replaced

__all__ = ["Optimizer", "SGD", "Adam", "Constant", "StepDecay", "Cosine", "PerEpoch", "ReduceOnPlateau", "as_schedule",
           "clip_grad_norm", "BIASES_AND_NORMS"]

#: The ``no_decay`` patterns of the usual practice: no weight decay on biases (``b``) nor on the
#: scales and shifts of batch normalisation (``gamma``, ``beta``).
BIASES_AND_NORMS = ("b", "gamma", "beta")


# ----------------------------------------------------------------------------- schedules

class Constant:
    """eta_t = lr.

    Parameters
    ----------
    lr : float
        The learning rate, a finite number >= 0 (stored as a float).

    Raises
    ------
    ValueError
        For lr negative, infinite, NaN, a bool or not a real number.
    """

    def __init__(self, lr):
        self.lr = check_nonnegative(lr, "lr")

    def __call__(self, t: int) -> float:
        """eta_t = lr, whatever the step t."""
        return self.lr

    def __repr__(self):
        return f"Constant({self.lr})"


class StepDecay:
    """eta_t = lr * gamma^(floor(t / step_size)): multiplied by gamma every ``step_size`` optimiser steps.

    Parameters
    ----------
    lr : float
        The initial learning rate, a finite number >= 0.
    step_size : int
        Steps between decays, an integer >= 1.
    gamma : float
        The factor of each decay, in [0, 1], default 0.1.

    Raises
    ------
    ValueError
        For a value outside these ranges (or not a number of that kind). Calling the schedule
        raises it too for a step t that is not an integer >= 0.
    """

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = check_nonnegative(lr, "lr")
        self.step_size = check_integer(step_size, "step_size", minimum=1)
        self.gamma = check_nonnegative(gamma, "gamma")
        if self.gamma > 1:  # a growth, whose gamma ** k raised OverflowError after a few thousand steps
            raise ValueError(f"gamma must be in [0, 1] (the factor of each decay), got {gamma!r}")

    def __call__(self, t: int) -> float:
        """eta_t for the step t, an integer >= 0 (ValueError otherwise)."""
        return self.lr * self.gamma ** (check_integer(t, "the step t", minimum=0) // self.step_size)

    def __repr__(self):
        return f"StepDecay({self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class Cosine:
    """Linear warm-up, then cosine annealing from lr to lr_min over ``total_steps`` (Loshchilov-Hutter).

    eta_t = lr (t + 1) / warmup for t < warmup; then, with u = (t - warmup) / (total_steps - warmup)
    clipped to [0, 1], eta_t = lr_min + (lr - lr_min) (1 + cos(pi u)) / 2.

    Parameters
    ----------
    lr : float
        The peak learning rate, a finite number >= 0.
    total_steps : int
        Steps of warm-up and annealing together, an integer >= 1; eta_t = lr_min from then on.
    lr_min : float
        The final learning rate, in [0, lr], default 0.
    warmup : int
        Warm-up steps, an integer in [0, total_steps - 1], default 0 (none).

    Raises
    ------
    ValueError
        For a value outside these ranges (or not a number of that kind). Calling the schedule
        raises it too for a step t that is not an integer >= 0.
    """

    def __init__(self, lr, total_steps, lr_min=0.0, warmup=0):
        self.lr = check_nonnegative(lr, "lr")
        self.total_steps = check_integer(total_steps, "total_steps", minimum=1)
        self.lr_min = check_nonnegative(lr_min, "lr_min")
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min must be <= lr = {self.lr} (the schedule anneals down to it), got {lr_min!r}")
        self.warmup = check_integer(warmup, "warmup", minimum=0, maximum=self.total_steps - 1)

    def __call__(self, t: int) -> float:
        """eta_t for the step t, an integer >= 0 (ValueError otherwise)."""
        if check_integer(t, "the step t", minimum=0) < self.warmup:
            return self.lr * (t + 1) / self.warmup
        u = min(max((t - self.warmup) / (self.total_steps - self.warmup), 0.0), 1.0)
        return self.lr_min + (self.lr - self.lr_min) * 0.5 * (1.0 + math.cos(math.pi * u))

    def __repr__(self):
        return f"Cosine({self.lr}, total_steps={self.total_steps}, lr_min={self.lr_min}, warmup={self.warmup})"


class PerEpoch:
    """An epoch-based schedule: eta_t = schedule(floor(t / steps_per_epoch)), the schedule counting epochs.

    ``PerEpoch(StepDecay(lr, k, gamma))`` decays every k epochs and ``PerEpoch(Cosine(lr, E))``
    anneals over E epochs: PyTorch's ``StepLR(opt, k, gamma)`` and ``CosineAnnealingLR(opt, E)``
    with ``scheduler.step()`` once per epoch (every step of epoch e, from 0, has the rate schedule(e)).

    Parameters
    ----------
    schedule : callable or float
        The schedule of the epoch e, e -> eta (a float is a constant rate).
    steps_per_epoch : int, optional
        Optimiser steps per epoch, an integer >= 1. :func:`~shallow.cnn.train.fit` sets it when it
        is None (default) to its ceil(n / batch_size), and refuses another value; a loop of one's
        own passes it.

    Raises
    ------
    ValueError
        For steps_per_epoch not an integer >= 1, or a schedule that is not callable nor a rate.
        Calling the schedule raises it too for a step t that is not an integer >= 0, and while
        steps_per_epoch is unknown.

    Examples
    --------
    >>> schedule = PerEpoch(StepDecay(1.0, step_size=2, gamma=0.5), steps_per_epoch=3)
    >>> [schedule(t) for t in range(0, 15, 3)]  # the first step of epochs 0, ..., 4
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, schedule, steps_per_epoch=None):
        if isinstance(schedule, (PerEpoch, ReduceOnPlateau)):  # fit steps a plateau schedule only unwrapped
            raise ValueError(f"schedule must count optimiser steps (StepDecay, Cosine, a float, a callable of t), "
                             f"got a {type(schedule).__name__}, which counts epochs already: pass it to the "
                             "optimiser as it is")
        self.schedule = as_schedule(schedule)
        self.steps_per_epoch = (None if steps_per_epoch is None
                                else check_integer(steps_per_epoch, "steps_per_epoch", minimum=1))

    def bind(self, steps_per_epoch) -> None:
        """Set steps_per_epoch when unset (what :func:`~shallow.cnn.train.fit` does); ValueError when it
        is set to another value."""
        steps_per_epoch = check_integer(steps_per_epoch, "steps_per_epoch", minimum=1)
        if self.steps_per_epoch is None:
            self.steps_per_epoch = steps_per_epoch
        elif self.steps_per_epoch != steps_per_epoch:
            raise ValueError(f"the PerEpoch schedule counts epochs of steps_per_epoch={self.steps_per_epoch} steps, "
                             f"but these epochs have {steps_per_epoch} (ceil(n / batch_size)): build the optimizer "
                             "with PerEpoch(schedule) and let fit set it, or pass the matching steps_per_epoch")

    def __call__(self, t: int) -> float:
        """eta_t = schedule(floor(t / steps_per_epoch)) for the step t, an integer >= 0 (ValueError otherwise)."""
        t = check_integer(t, "the step t", minimum=0)
        if self.steps_per_epoch is None:
            raise ValueError("PerEpoch does not know the steps per epoch yet: fit sets it, or pass "
                             "steps_per_epoch=ceil(n / batch_size) for a loop of one's own")
        return self.schedule(t // self.steps_per_epoch)

    def __repr__(self):
        return f"PerEpoch({self.schedule!r}, steps_per_epoch={self.steps_per_epoch})"


#: The quantities of :class:`~shallow.cnn.train.History` that :class:`ReduceOnPlateau` may monitor.
_MONITORS = ("loss", "test_loss", "accuracy", "test_accuracy")


class ReduceOnPlateau:
    """The rate multiplied by ``factor`` when a monitored quantity stops improving (PyTorch's ``ReduceLROnPlateau``).

    A schedule of state rather than of t: eta_t is the current rate, lr until the first reduction.
    :meth:`step` takes the value of the epoch (:func:`~shallow.cnn.train.fit` calls it after each
    epoch with ``history.<monitor>[-1]``), and follows PyTorch's rule, for ``mode="min"``:

        better = value < best (1 - threshold)   (``threshold_mode="rel"``; value < best - threshold for "abs"),
        better: best = value, bad = 0;   else bad += 1;   in a cooldown (c > 0): c -= 1, bad = 0;
        bad > patience: eta <- max(eta factor, min_lr) unless that changes eta by eps or less; c = cooldown, bad = 0,

    with best = +inf at first (for ``mode="max"``: value > best (1 + threshold), or best + threshold,
    and best = -inf). A NaN value is no improvement.

    Parameters
    ----------
    lr : float
        The initial learning rate, a finite number >= 0.
    monitor : {"loss", "test_loss", "accuracy", "test_accuracy"}
        The quantity of the history that :func:`~shallow.cnn.train.fit` passes (default "loss",
        the mean training loss of the epoch; the test quantities need a test set).
    mode : {"min", "max"}, optional
        Whether lower or higher is better; by default "max" for the accuracies, "min" for the losses.
    factor : float
        In [0, 1), default 0.1.
    patience : int
        Epochs without improvement before a reduction, an integer >= 0, default 10.
    threshold : float
        The least improvement that counts, >= 0 (below 1 for "rel"), default 1e-4.
    threshold_mode : {"rel", "abs"}
    cooldown : int
        Epochs after a reduction in which bad epochs are not counted, default 0.
    min_lr : float
        The rate is not reduced below it, default 0.
    eps : float
        A reduction by eps or less is skipped, default 1e-8.

    Raises
    ------
    ValueError
        For a value outside these ranges (naming it).

    Notes
    -----
    Its state (the current rate, the best value, the counts) goes with the optimiser's
    (:meth:`Optimizer.state_dict`), and so into the checkpoints of :func:`~shallow.cnn.train.fit`:
    a resumed run reduces the rate at the same epochs as an uninterrupted one.

    Examples
    --------
    >>> schedule = ReduceOnPlateau(1.0, patience=1, factor=0.5)
    >>> for value in [3.0, 2.0, 2.0, 2.0, 2.0, 1.0]:
    ...     schedule.step(value)
    >>> schedule(0), schedule.best
    (0.5, 1.0)
    """

    def __init__(self, lr, monitor="loss", *, mode=None, factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        self.initial_lr = check_nonnegative(lr, "lr")
        if monitor not in _MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(map(repr, _MONITORS))} (a field of the history), "
                             f"got {monitor!r}")
        self.monitor = monitor
        if mode is None:
            mode = "max" if monitor.endswith("accuracy") else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max' (whether lower or higher {monitor} is better), got {mode!r}")
        self.mode = mode
        self.factor = check_nonnegative(factor, "factor")
        if self.factor >= 1:
            raise ValueError(f"factor must be in [0, 1) (the rate is multiplied by it), got {factor!r}")
        self.patience = check_integer(patience, "patience", minimum=0)
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.threshold_mode = threshold_mode
        self.threshold = check_nonnegative(threshold, "threshold")
        if threshold_mode == "rel" and self.threshold >= 1:
            raise ValueError(f"threshold must be in [0, 1) with threshold_mode='rel' (a fraction of the best value), "
                             f"got {threshold!r}")
        self.cooldown = check_integer(cooldown, "cooldown", minimum=0)
        self.min_lr = check_nonnegative(min_lr, "min_lr")
        self.eps = check_nonnegative(eps, "eps")
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: rate lr, best +-inf, no bad epoch, no cooldown, no epoch seen."""
        self.lr = self.initial_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.bad_epochs = self.cooldown_counter = self.epochs = 0

    def _better(self, value: float) -> bool:
        best, threshold = self.best, self.threshold
        if self.mode == "min":
            return value < (best * (1.0 - threshold) if self.threshold_mode == "rel" else best - threshold)
        return value > (best * (1.0 + threshold) if self.threshold_mode == "rel" else best + threshold)

    def step(self, value) -> None:
        """Take the monitored value of an epoch (a number) and reduce the rate on a plateau (class notes)."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"the monitored {self.monitor} must be a number, got {value!r}") from None
        self.epochs += 1
        if self._better(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - lr > self.eps:
                self.lr = lr
            self.cooldown_counter, self.bad_epochs = self.cooldown, 0

    def __call__(self, t: int) -> float:
        """The current rate, whatever the step t."""
        return self.lr

    def state_dict(self) -> dict:
        """The state that :meth:`step` changes: rate, best value and counts (numbers)."""
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs,
                "cooldown_counter": self.cooldown_counter, "epochs": self.epochs}

    def load_state_dict(self, state) -> None:
        """Restore what :meth:`state_dict` gave (0-d arrays, as a checkpoint gives them, are accepted)."""
        missing = [key for key in ("lr", "best", "bad_epochs", "cooldown_counter", "epochs") if key not in state]
        if missing:
            raise ValueError(f"the ReduceOnPlateau state has no entry {missing[0]!r}")
        item = {key: (value.item() if getattr(value, "ndim", None) == 0 else value) for key, value in state.items()}
        self.lr = check_nonnegative(item["lr"], "the saved lr")
        best = item["best"]
        if not (isinstance(best, (int, float)) and not isinstance(best, bool) and not math.isnan(best)):
            raise ValueError(f"the saved best value must be a number (or an infinity), got {best!r}")
        self.best = float(best)
        self.bad_epochs = check_integer(item["bad_epochs"], "the saved bad_epochs", minimum=0)
        self.cooldown_counter = check_integer(item["cooldown_counter"], "the saved cooldown_counter", minimum=0)
        self.epochs = check_integer(item["epochs"], "the saved epochs", minimum=0)

    def __repr__(self):
        return (f"ReduceOnPlateau({self.initial_lr}, monitor={self.monitor!r}, mode={self.mode!r}, "
                f"factor={self.factor}, patience={self.patience}, threshold={self.threshold}, "
                f"threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown}, min_lr={self.min_lr}, "
                f"eps={self.eps})")


def as_schedule(lr):
    """A float as :class:`Constant`; a schedule (any callable t -> eta_t) passes through.

    Parameters
    ----------
    lr : float or callable
        A learning rate (finite, >= 0), or a schedule, returned as it is (unchecked here:
        :class:`Optimizer` checks each eta_t it draws).

    Returns
    -------
    callable
        t -> eta_t.

    Raises
    ------
    ValueError
        For a non-callable lr that :class:`Constant` refuses.
    """
    if callable(lr):
        return lr
    return Constant(lr)


# ----------------------------------------------------------------------------- optimisers

#: The prefix of a schedule's state in :meth:`Optimizer.state_dict` (no parameter name starts with it).
_SCHEDULE = "@schedule/"


def _address(a) -> int:
    """The address of an array's first element (numpy or CuPy)."""
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.__array_interface__["data"][0]


def _flat_base(arrays):
    """The 1-D array that ``arrays`` tile in order, as consecutive C-contiguous views, or None.

    What :meth:`~shallow.cnn.layers.Layer.flatten_parameters` makes of a model's parameters and
    gradients; any other arrays (separate allocations, a gap, another order) give None.
    """
    base = arrays[0].base
    if getattr(base, "ndim", None) != 1 or not base.flags.c_contiguous:  # also a non-array base
        return None
    address, itemsize = _address(base), base.itemsize
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.dtype != base.dtype or _address(a) != address:
            return None
        address += a.size * itemsize
    return base if address == _address(base) + base.size * itemsize else None


def _check_floating(arrays, name: str, use: str) -> None:
    """Refuse an entry of the dict ``arrays`` (named ``name``) that is not a floating-point array; ``use``
    says what is done to it in place."""
    for key, a in arrays.items():
        if getattr(getattr(a, "dtype", None), "kind", None) != "f":
            what = f"dtype {a.dtype}" if hasattr(a, "dtype") else type(a).__name__
            raise ValueError(f"{name}[{key!r}] must be a floating-point array ({use}), got {what}")


def _clip_factor(g, max_norm):
    """min(1, max_norm / (|g|_2 + 1e-6)) for a 1-D array g, as a 0-d array (a numpy scalar on the host):
    on a device it stays there, so that nothing waits for it. The sum of squares is not ``vdot``
    (cuBLAS, which a recorded step may not call). The squares are summed in float64: in float32 they overflow
    from entries of 1.8e19, and an infinite norm would zero the gradient (the factor cast back to g's dtype)."""
    xp = get_xp(g)
    norm = xp.sqrt(xp.sum(xp.square(g, dtype=xp.float64)))
    return xp.minimum(max_norm / (norm + 1e-6), 1).astype(g.dtype), norm.astype(g.dtype)


def clip_grad_norm(grads, max_norm):
    """Scale the gradients in place so that their global norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: every gradient is multiplied by
    min(1, max_norm / (|g|_2 + 1e-6)), |g|_2 the norm of all the gradients together.

    Parameters
    ----------
    grads : dict of str -> array
        Usually ``model.named_gradients()`` after a backward pass; floating-point arrays, updated in place.
    max_norm : float
        The bound, a finite number > 0.

    Returns
    -------
    norm : 0-d array
        |g|_2 before the scaling, on the gradients' device (reading it on the host waits for the device).

    Raises
    ------
    ValueError
        For max_norm not a finite number > 0, or grads not a non-empty dict of floating-point arrays.

    Notes
    -----
    When the gradients tile one array (flat parameters, :meth:`~shallow.cnn.layers.Layer.to`), the
    norm is that of the array and the scaling one multiplication. An optimiser with ``clip_norm``
    clips within its step, without writing the gradients.

    Examples
    --------
    >>> import numpy as np
    >>> grads = {"a": np.array([3.0]), "b": np.array([4.0])}
    >>> float(clip_grad_norm(grads, 1.0)), round(float(grads["a"][0]), 6), round(float(grads["b"][0]), 6)
    (5.0, 0.6, 0.8)
    """
    max_norm = check_positive(max_norm, "max_norm")
    if not isinstance(grads, Mapping) or not grads:
        raise ValueError("grads must be a non-empty dict of name -> array (model.named_gradients())")
    _check_floating(grads, "grads", "scaled in place")
    arrays = list(grads.values())
    flat = _flat_base(arrays)
    if flat is not None:
        s, norm = _clip_factor(flat, max_norm)
        flat *= s
        return norm
    s, norm = _clip_factor(get_xp(arrays[0]).concatenate([g.ravel() for g in arrays]), max_norm)
    for g in arrays:
        g *= s
    return norm


def _matches(name: str, patterns) -> bool:
    """Whether a dotted parameter name, or its last component, matches one of the fnmatch patterns."""
    last = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(name, q) or fnmatch.fnmatchcase(last, q) for q in patterns)


def _check_patterns(no_decay, names):
    """``no_decay`` as a tuple of patterns (None when empty), each matching one of ``names`` at least (but for
    :data:`BIASES_AND_NORMS`, which may match nothing)."""
    if no_decay is None:
        return None
    patterns = (no_decay,) if isinstance(no_decay, str) else no_decay
    try:
        patterns = tuple(patterns)
    except TypeError:
        raise ValueError(f"no_decay must be a parameter-name pattern or a sequence of them (such as "
                         f"('b', 'gamma', 'beta')), got {type(no_decay).__name__}") from None
    for q in patterns:
        if not isinstance(q, str) or not q:
            raise ValueError(f"no_decay must hold non-empty strings (fnmatch patterns of parameter names), got {q!r}")
    # BIASES_AND_NORMS is a convention, not a list of names: a model without batch norm has no gamma nor beta
    for q in (patterns if patterns != BIASES_AND_NORMS else ()):
        if not any(_matches(name, (q,)) for name in names):
            shown = ", ".join(list(names)[:6]) + (", ..." if len(names) > 6 else "")
            raise ValueError(f"no_decay pattern {q!r} matches no parameter (a typo?): the names are {shown}")
    return patterns or None


class Optimizer:
    """Base class: parameters by name, a schedule, a step counter t and per-parameter state.

    Parameters
    ----------
    params : dict of str -> array
        Usually ``model.named_parameters()``: updated in place.
    lr : float or callable
        Learning rate or schedule t -> eta_t.
    weight_decay : float >= 0
        lambda, used by the subclass's update formula.
    no_decay : str or sequence of str, optional
        Patterns (``fnmatch``) of the parameters that get no weight decay, matched against the
        dotted name or its last component: ``("b", "gamma", "beta")`` (:data:`BIASES_AND_NORMS`)
        leaves out the biases and batch-norm parameters (module notes). Each pattern must match a
        parameter, except those of :data:`BIASES_AND_NORMS` (a model without batch norm has no gamma).
    clip_norm : float, optional
        Clip the gradient to this global norm before each step (module notes); None (default) does not.

    Notes
    -----
    Which parameters decay, and by how much, is settled at construction (on flat parameters, a
    vector of lambdas or a mask, built once): to change ``weight_decay`` or ``no_decay``, build a
    new optimiser (and :meth:`load_state_dict` the old one's state into it).
    """

    _slots: tuple = ()

    def __init__(self, params, lr, *, weight_decay=0.0, no_decay=None, clip_norm=None):
        if not isinstance(params, dict) or not params:
            raise ValueError("params must be a non-empty dict of name -> array (model.named_parameters())")
        _check_floating(params, "params", "updated in place")
        self.params = dict(params)
        self._check_current()
        self.schedule = as_schedule(lr)
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")
        self.no_decay = _check_patterns(no_decay, list(self.params))  # None: every parameter decays
        self.clip_norm = None if clip_norm is None else check_positive(clip_norm, "clip_norm")
        self.t = 0
        arrays = list(self.params.values())
        self._flat = _flat_base(arrays)
        # lambda of each parameter (None: no decay), and the flat form the subclass's formula takes
        decayed = {name: not (self.no_decay and _matches(name, self.no_decay)) for name in self.params}
        self._decays = {name: self.weight_decay if decayed[name] and self.weight_decay else None
                        for name in self.params}
        self._flat_decay = None
        if self._flat is None:
            self.state = {name: {slot: get_xp(p).zeros_like(p) for slot in self._slots}
                          for name, p in self.params.items()}
        else:
            # the state is flat like the parameters (same offsets), with a view per parameter
            self._flat_state = {slot: get_xp(self._flat).zeros_like(self._flat) for slot in self._slots}
            self.state = {name: {} for name in self.params}
            offset, mask = 0, np.empty(self._flat.size, dtype=bool)
            for name, p in self.params.items():
                for slot, flat in self._flat_state.items():
                    self.state[name][slot] = flat[offset:offset + p.size].reshape(p.shape)
                mask[offset:offset + p.size] = decayed[name]
                offset += p.size
            if self.weight_decay and mask.any():
                self._flat_decay = self.weight_decay if mask.all() else self._decay_array(mask)

    def _decay_array(self, mask):
        """The flat form of per-parameter decay for the update formula, from the host mask (flat, bool) of
        the decayed entries: lambda on them and 0 elsewhere, in the parameters' dtype and on their device
        (built once). A subclass whose formula needs the mask itself returns that instead."""
        lam = np.where(mask, self._flat.dtype.type(self.weight_decay), self._flat.dtype.type(0))
        return get_xp(self._flat).asarray(lam)

    def _check_current(self) -> None:
        """Refuse parameters that ``model.to(device)`` or ``model.flatten_parameters()`` replaced by new
        arrays: the model no longer reads them, and the steps left it unchanged with no error."""
        stale = [name for name, p in self.params.items() if replaced(p)]
        if stale:
            raise ValueError(f"the optimizer's parameters {', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''} "
                             "were replaced by model.to(device) or model.flatten_parameters(), which move and repack "
                             "them: its steps would leave the model unchanged. Build the optimizer on "
                             "model.named_parameters() after moving the model")

    def check_model(self, model) -> None:
        """Refuse a model whose parameters are not the arrays this optimiser updates.

        An optimiser built on another model of the same architecture, or on this one before
        :meth:`~shallow.cnn.layers.Layer.to` moved and repacked its parameters, would update arrays
        the model no longer reads: its steps would leave the model unchanged, with no error. An
        optimiser on some of the parameters (the others frozen) is accepted.
        """
        params = check_layer(model, "model").named_parameters()
        foreign = [name for name, p in self.params.items() if params.get(name) is not p]
        if foreign:
            raise ValueError(f"optimizer updates arrays that are not the model's parameters ({', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}): build it on model.named_parameters() of this "
                             "model, after model.to(device), which moves and repacks them")

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self._rate(self.t)

    def _rate(self, t: int) -> float:
        """eta_t from the schedule, refused unless a finite number >= 0 (a schedule of its own giving
        -0.1 or NaN stepped up the gradient, or made every parameter NaN, without a word)."""
        eta = self.schedule(t)
        try:
            eta = float(eta)
        except (TypeError, ValueError):
            raise ValueError(f"the learning rate schedule must return a number, got {eta!r} at step t={t}") from None
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"the learning rate schedule must return a finite number >= 0, got {eta!r} at step t={t}")
        return eta

    def step(self, grads):
        """One update of every parameter from ``grads`` (a dict with the same names); t += 1.

        Raises ValueError when the parameters were replaced since (by ``model.to(device)`` or
        ``model.flatten_parameters()``): the update would not reach the model.
        """
        self._check_current()
        self._apply(self._ordered(grads), self._coefficients(self.t))
        self.t += 1

    def _ordered(self, grads) -> list:
        """The gradients in the order of the parameters, checked against them."""
        if not isinstance(grads, Mapping):
            raise ValueError(f"grads must be a dict of name -> array (model.named_gradients()), got {type(grads).__name__}")
        missing = [name for name in self.params if name not in grads]
        if missing:
            raise ValueError(f"grads has no gradient for the parameters {', '.join(missing[:5])}: "
                             "run backward before step")
        ordered = []
        for name, p in self.params.items():
            g = grads[name]
            kind = getattr(getattr(g, "dtype", None), "kind", None)
            if kind not in ("f", "i", "u"):  # a list had no .shape; a complex one failed in numpy's casting
                what = f"dtype {g.dtype}" if kind else type(g).__name__
                raise ValueError(f"grads[{name!r}] must be a real array, got {what}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] has shape {tuple(g.shape)} but the parameter has {tuple(p.shape)}")
            ordered.append(g)
        return ordered

    def _coefficients(self, t: int) -> tuple:
        """The numbers of the update formula that change from step to step, at step t (floats).

        :class:`~shallow.cnn.graph.CapturedStep` passes them to :meth:`_apply` as 0-d device arrays
        instead, written before each replay of a recorded step; the formula then rounds them to
        the parameters' dtype exactly as it rounds the floats, so both give the same numbers.
        """
        return (self._rate(t),)

    def _apply(self, ordered, coefficients):
        """The update from the ordered gradients and the step's coefficients; t is left alone."""
        flat_grads = None if self._flat is None else _flat_base(ordered)
        if flat_grads is not None and flat_grads.dtype == self._flat.dtype:
            # parameters and gradients each fill one array in the same order: one update of it all
            # (elementwise, so the same numbers as parameter by parameter)
            g = flat_grads
            if self.clip_norm is not None:
                g = g * _clip_factor(g, self.clip_norm)[0]
            self._update(self._flat, g, self._flat_state, coefficients, self._flat_decay)
        else:
            if self.clip_norm is not None:
                # the norm of the concatenation: the sum of squares of the flat path, in its order (the same numbers)
                s = _clip_factor(get_xp(ordered[0]).concatenate([g.ravel() for g in ordered]), self.clip_norm)[0]
                ordered = [g * s for g in ordered]
            for (name, p), g in zip(self.params.items(), ordered, strict=True):
                self._update(p, g, self.state[name], coefficients, self._decays[name])

    def _update(self, p, g, state, coefficients, decay):
        """Update p in place from its gradient g. ``decay`` is None (no weight decay), lambda (a float, the
        same for all of p), or what :meth:`_decay_array` made (flat parameters of several lambdas)."""
        raise NotImplementedError

    def _written_arrays(self) -> list:
        """The arrays a step writes: the parameters and the state (the flat arrays when flat)."""
        if self._flat is not None:
            return [self._flat, *self._flat_state.values()]
        return list(self.params.values()) + [value for slots in self.state.values() for value in slots.values()]

    def state_dict(self) -> dict:
        """The step counter and the state arrays (on the host), by ``"name/slot"``; and the state of
        a schedule that has one (:class:`ReduceOnPlateau`), by ``"@schedule/key"``."""
        out = {"t": self.t}
        for name, slots in self.state.items():
            for slot, value in slots.items():
                out[f"{name}/{slot}"] = to_numpy(value)
        if callable(getattr(self.schedule, "state_dict", None)):
            for key, value in self.schedule.state_dict().items():
                out[f"{_SCHEDULE}{key}"] = value
        return out

    def load_state_dict(self, state: dict):
        """Restore what :meth:`state_dict` gave (in place, on the parameters' device)."""
        if not hasattr(state, "keys") or "t" not in state:
            raise ValueError("state must be a dict from state_dict(), holding the step count 't'")
        t = state["t"]
        if getattr(t, "ndim", None) == 0:  # a 0-d array, as np.load gives it
            t = t.item()
        self.t = check_integer(t, "state['t']", minimum=0)  # int() made 1.5 step 1 and "x" numpy's error
        for name, slots in self.state.items():
            for slot, value in slots.items():
                key = f"{name}/{slot}"
                if key not in state:
                    raise ValueError(f"the optimiser state has no entry {key!r}: was it saved for another model?")
                saved = check_array(state[key], f"state[{key!r}]")  # complex, strings or NaN
                if saved.shape != value.shape:
                    raise ValueError(f"the optimiser state {key!r} has shape {saved.shape}, expected {value.shape}")
                value[...] = get_xp(value).asarray(saved)
        if callable(getattr(self.schedule, "load_state_dict", None)):
            saved = {key[len(_SCHEDULE):]: value for key, value in state.items() if key.startswith(_SCHEDULE)}
            if not saved:
                raise ValueError(f"the optimiser state holds no state of its schedule {type(self.schedule).__name__}: "
                                 "was it saved with another schedule?")
            self.schedule.load_state_dict(saved)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay (module notes).

    Parameters
    ----------
    params : dict of str -> array
    lr : float or schedule
    momentum : float in [0, 1)
    weight_decay : float >= 0
        lambda of the L2 penalty (lambda / 2) |theta|^2 added to the loss.
    nesterov : bool
    no_decay : str or sequence of str, optional
        Names (fnmatch patterns) of the parameters without weight decay (:class:`Optimizer`).
    clip_norm : float, optional
        Clip the gradient to this global norm first (:class:`Optimizer`).

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.array([1.0])
    >>> opt = SGD({"theta": theta}, lr=0.1, momentum=0.9)
    >>> opt.step({"theta": np.array([1.0])}); opt.step({"theta": np.array([1.0])})
    >>> theta  # 1 - 0.1 * 1 - 0.1 * (0.9 + 1)
    array([0.71])
    """

    _slots = ("momentum",)

    def __init__(self, params, lr, *, momentum=0.0, weight_decay=0.0, nesterov=False, no_decay=None,
                 clip_norm=None):
        self.momentum = check_nonnegative(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.nesterov = check_bool(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if self.momentum == 0:
            self._slots = ()
        super().__init__(params, lr, weight_decay=weight_decay, no_decay=no_decay, clip_norm=clip_norm)

    def _update(self, p, g, state, coefficients, decay):
        (lr,) = coefficients
        if decay is not None:
            g = g + decay * p
        if self.momentum:
            v = state["momentum"]
            v *= self.momentum
            v += g
            d = g + self.momentum * v if self.nesterov else v
        else:
            d = g
        p -= lr * d


class Adam(Optimizer):
    """Adam, with L2 weight decay or decoupled weight decay (AdamW) (module notes).

    Parameters
    ----------
    params : dict of str -> array
    lr : float or schedule
    betas : (float, float)
        beta1, beta2 in [0, 1).
    eps : float
    weight_decay : float >= 0
    decoupled : bool
        AdamW: decay theta by eta_t lambda theta directly instead of adding lambda theta to the gradient.
    no_decay : str or sequence of str, optional
        Names (fnmatch patterns) of the parameters without weight decay (:class:`Optimizer`).
    clip_norm : float, optional
        Clip the gradient to this global norm first (:class:`Optimizer`).
    amsgrad : bool
        AMSGrad: divide by the largest second moment so far, max(v_max, v) (module notes), as
        PyTorch's ``amsgrad=True``; one more state array per parameter ("v_max"). Default False.

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.array([0.0])
    >>> opt = Adam({"theta": theta}, lr=0.1, amsgrad=True)
    >>> opt.step({"theta": np.array([1.0])}); opt.step({"theta": np.array([0.0])})
    >>> opt.state["theta"]["v_max"]  # max(0.001, 0.999 * 0.001)
    array([0.001])
    """

    _slots = ("m", "v")

    def __init__(self, params, lr=1e-3, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False,
                 no_decay=None, clip_norm=None, amsgrad=False):
        if not hasattr(betas, "__len__") or len(betas) != 2:  # a single float: len() raised TypeError
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(check_nonnegative(b, "betas") for b in betas)
        if max(self.betas) >= 1:
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        self.eps = check_positive(eps, "eps")  # eps = 0 divides 0 by 0 where a gradient stays 0
        self.decoupled = check_bool(decoupled, "decoupled")
        self.amsgrad = check_bool(amsgrad, "amsgrad")
        if self.amsgrad:
            self._slots = ("m", "v", "v_max")
        super().__init__(params, lr, weight_decay=weight_decay, no_decay=no_decay, clip_norm=clip_norm)

    def _decay_array(self, mask):
        """AdamW multiplies the decayed entries by (1 - eta_t lambda), a coefficient of the step: it needs
        the mask (on the parameters' device); Adam's L2 term takes the vector of lambdas."""
        if self.decoupled:
            return get_xp(self._flat).asarray(mask)
        return super()._decay_array(mask)

    def _coefficients(self, t):
        """(1 - eta_t lambda) for AdamW's decay, eta_t / (1 - beta1^k) and 1 / (1 - beta2^k), k = t + 1."""
        b1, b2 = self.betas
        lr, k = self._rate(t), t + 1
        return 1.0 - lr * self.weight_decay, lr / (1.0 - b1 ** k), 1.0 / (1.0 - b2 ** k)

    def _update(self, p, g, state, coefficients, decay):
        factor, step, correction = coefficients
        b1, b2 = self.betas
        xp = get_xp(p)
        if decay is not None:
            if not self.decoupled:
                g = g + decay * p
            elif isinstance(decay, float):
                p *= factor
            else:  # the mask of the decayed entries: their factor (in p's dtype, as p *= factor rounds it), or 1
                p *= xp.where(decay, factor if hasattr(factor, "dtype") else p.dtype.type(factor), p.dtype.type(1))
        m, v = state["m"], state["v"]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        if self.amsgrad:
            v = xp.maximum(state["v_max"], v, out=state["v_max"])
        denom = xp.sqrt(v * correction)
        denom += self.eps
        p -= step * m / denom
