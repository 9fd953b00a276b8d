r"""The training loop: mini-batch epochs, history, exact checkpoints, divergence guard.

One step on a mini-batch (x_B, y_B) is

    out = model.forward(x_B);  L, dL/dout = loss.value_and_grad(out, y_B);
    model.backward(dL/dout);   optimizer.step(model.named_gradients()),

and an epoch is one pass over a permutation of the training set drawn with the loop's ``rng``
(augmentations draw from the same generator, in the same order). :func:`fit` records per epoch the
mean training loss and accuracy over the epoch's batches (in train mode, on augmented batches),
the test loss and accuracy (in eval mode) when a test set is given, the learning rate and the
wall time.

Checkpoints
-----------
A checkpoint (``.npz``, written atomically: a temporary file, then a rename) holds the parameters,
the buffers (batch-norm running statistics, frozen reference copies), the optimiser state (step
counter and per-parameter slots), the state of the loop's generator and of every layer generator
(dropout), the number of completed epochs and the history. Resuming from it replays the
remaining epochs with the same batches, augmentations and masks: the parameters after
``fit(epochs=E)`` and after ``fit(epochs=k)`` then ``fit(epochs=E, resume=True)`` are bitwise
equal (on the same machine, BLAS library and thread count).

A checkpoint written by :func:`fit` also holds the run's settings: the model's description and
dtype, the optimiser (type, hyper-parameters, schedule, parameters), the loss, the augmentation,
the batch size and a hash of the training data. Resuming refuses (ValueError naming them) a run
whose settings differ, or one asking for fewer epochs than the checkpoint has completed: it would
otherwise continue another run, or return it, silently.

Divergence
----------
A NaN or infinite training loss stops the loop before the update that would use it. With
``on_divergence="raise"`` (default) a :class:`TrainingDivergedError` says where (epoch, batch,
step, learning rate) and what to try; with ``"stop"`` the history is returned with
``diverged=True`` and the same message, for sweeps where divergence is a result. Floating-point
warnings are silenced inside the loop: the guard reports divergence instead.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .._validation import check_array, check_bool, check_integer, check_random_state
from ..backend import array_digest, cuda_runtime, get_xp, to_numpy
from ..study import load_npz, save_npz_atomic
from .data import batches
from . import _reduce
from .graph import CapturedStep, replay_refusal
from .layers import _check_caching, _running_buffers, _shape_of, check_layer, no_cache
from .losses import CrossEntropy, SquareLoss, accuracy, check_labels
from .models import _data_checked, _inputs_checked, _n_outputs, check_images
from .optim import SGD, Optimizer, PerEpoch, ReduceOnPlateau

__all__ = ["History", "TrainingDivergedError", "fit", "evaluate", "predict", "save_checkpoint",
           "load_checkpoint", "train_step"]


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class History:
    """Per-epoch records of a training run (lists of equal length, one entry per epoch).

    Attributes
    ----------
    epoch : list of int
        1, 2, ...: the number of completed epochs.
    loss, accuracy : list of float
        Mean training loss and accuracy over the epoch's batches (train mode).
    test_loss, test_accuracy : list of float
        On the test set in eval mode (NaN when no test set is given).
    lr : list of float
        Learning rate of the epoch's last step.
    time : list of float
        Wall time of the epoch in seconds (not part of the reproducible numbers).
    diverged : bool
        The run stopped on a NaN or infinite loss (``on_divergence="stop"``).
    message : str
        Why it stopped, when it did.
    """

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    time: list = field(default_factory=list)
    diverged: bool = False
    message: str = ""

    def to_json(self) -> str:
        """The fields as one JSON object (a str), which :meth:`from_json` reads back."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "History":
        """The History whose :meth:`to_json` gave ``text``."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"text must hold the JSON object written by History.to_json, got a {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"text holds fields that a History does not have: {', '.join(unknown)}")
        return cls(**data)


# ----------------------------------------------------------------------------- checks

def _check_loss(loss):
    """The loss object (cross-entropy by default): anything with value_and_grad(out, y, check=...)."""
    if loss is None:
        return CrossEntropy()
    if isinstance(loss, type):
        raise TypeError(f"loss must be a loss object, got the class {loss.__name__}: pass {loss.__name__}()")
    if not callable(getattr(loss, "value_and_grad", None)):
        raise TypeError(f"loss must be a loss object with value_and_grad, such as CrossEntropy() or SquareLoss(), "
                        f"got {type(loss).__name__}")
    return loss


def _real_targets(y, loss, n_outputs) -> bool:
    """Whether ``y`` holds real targets rather than class labels: only for a square loss, and unless it is a
    vector for a model of several outputs (labels, integers or floats of integer value, one-hot encoded by
    the loss). For a model of one output a vector holds real targets, as for :class:`SquareLoss`."""
    if not isinstance(loss, SquareLoss):
        return False
    return not (np.ndim(y) == 1 and n_outputs > 1)


def _check_targets(y, loss, n_outputs, name, n):
    """(y checked, real): class labels in range, or real targets of the outputs' shape for a square loss."""
    if not _real_targets(y, loss, n_outputs):
        if getattr(y, "ndim", 1) != 1:
            raise ValueError(f"{name} must be class labels of shape (n,), got shape {tuple(y.shape)} (for real "
                             f"targets of shape (n, K), train with loss=SquareLoss())")
        return check_labels(y, n_outputs, name, n=n), False
    y = check_array(y, name)
    want = (n,) if n_outputs == 1 and y.ndim == 1 else (n, n_outputs)
    if tuple(y.shape) != want:
        what = (f"real targets of shape ({n},) or ({n}, 1) (the model has one output)" if n_outputs == 1 else
                f"class labels of shape ({n},) or real targets of shape ({n}, {n_outputs})")
        raise ValueError(f"{name} must be {what}, got shape {tuple(y.shape)}")
    return y, True


def _check_optional(value, kind, name, what):
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be {what} or None, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------- checkpoints

def _rng_state_json(rng) -> str:
    return json.dumps(rng.bit_generator.state)


def _set_rng_state(rng, text):
    rng.bit_generator.state = json.loads(text)


def save_checkpoint(path, model, optimizer=None, rng=None, epoch=0, history=None, settings=None) -> Path:
    """Write model, optimiser and generator states atomically to ``path`` (.npz).

    Parameters
    ----------
    path : str or Path
    model : Layer
    optimizer : Optimizer, optional
    rng : numpy Generator, optional
        The training loop's generator.
    epoch : int
        Completed epochs.
    history : History, optional
    settings : dict, optional
        JSON-able description of the run (what :func:`fit` compares on resume).

    Returns
    -------
    Path
    """
    check_layer(model)
    _check_optional(optimizer, Optimizer, "optimizer", "an Optimizer")
    _check_optional(rng, np.random.Generator, "rng", "the loop's numpy Generator")
    _check_optional(history, History, "history", "a History")
    out = {"epoch": check_integer(epoch, "epoch", minimum=0)}
    for name, p in model.named_parameters().items():
        out[f"param/{name}"] = to_numpy(p)
    for name, b in model.named_buffers().items():
        out[f"buffer/{name}"] = to_numpy(b)
    for name, g in model.named_rngs().items():
        out[f"rng/layer/{name}"] = _rng_state_json(g)
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            out[f"optim/{key}"] = value
    if rng is not None:
        out["rng/loop"] = _rng_state_json(rng)
    if history is not None:
        out["history"] = history.to_json()
    if settings is not None:
        out["settings"] = json.dumps(settings, sort_keys=True)
    return save_npz_atomic(path, out)


def _copy_into(target: dict, saved: dict, kind: str, path):
    if set(target) != set(saved):
        missing, extra = sorted(set(target) - set(saved)), sorted(set(saved) - set(target))
        raise ValueError(f"checkpoint {str(path)!r} does not match the model: {kind} missing "
                         f"{missing[:5]}, unexpected {extra[:5]}")
    for name, arr in target.items():
        value = check_array(to_numpy(saved[name]), f"checkpoint {str(path)!r}: {kind} {name!r}")  # NaN, complex, text
        if value.shape != arr.shape:
            raise ValueError(f"checkpoint {str(path)!r}: {kind} {name!r} has shape {value.shape}, the model "
                             f"has {tuple(arr.shape)}")
        arr[...] = get_xp(arr).asarray(value.astype(arr.dtype, copy=False))


def load_checkpoint(path, model, optimizer=None, rng=None) -> dict:
    """Restore a checkpoint of :func:`save_checkpoint` in place; return its epoch and history.

    Parameters
    ----------
    path : str or Path
    model : Layer
        Built as the one that was saved (same architecture and names).
    optimizer : Optimizer, optional
    rng : numpy Generator, optional
        Receives the loop generator's state.

    Returns
    -------
    dict with ``epoch`` (int), ``history`` (History or None) and ``settings`` (dict or None)

    Raises
    ------
    ValueError
        When names or shapes differ from the model's, naming them.
    """
    check_layer(model)
    _check_optional(optimizer, Optimizer, "optimizer", "an Optimizer")
    _check_optional(rng, np.random.Generator, "rng", "the loop's numpy Generator")
    data = _read_checkpoint(path)

    def group(prefix):
        n = len(prefix)
        return {key[n:]: value for key, value in data.items() if key.startswith(prefix)}

    _copy_into(model.named_parameters(), group("param/"), "parameter", path)
    _copy_into(model.named_buffers(), group("buffer/"), "buffer", path)
    layer_rngs, saved_rngs = model.named_rngs(), group("rng/layer/")
    if set(layer_rngs) != set(saved_rngs):
        raise ValueError(f"checkpoint {str(path)!r} has generators {sorted(saved_rngs)}, the model {sorted(layer_rngs)}")
    for name, g in layer_rngs.items():
        _set_rng_state(g, saved_rngs[name])
    if optimizer is not None:
        state = group("optim/")
        if not state:
            raise ValueError(f"checkpoint {str(path)!r} holds no optimiser state")
        optimizer.load_state_dict(state)
    if rng is not None:
        if "rng/loop" not in data:
            raise ValueError(f"checkpoint {str(path)!r} holds no generator state for the loop")
        _set_rng_state(rng, data["rng/loop"])
    history = History.from_json(data["history"]) if "history" in data else None
    settings = json.loads(data["settings"]) if "settings" in data else None
    return {"epoch": int(data["epoch"]), "history": history, "settings": settings}


def _describe(obj):
    """A description of a schedule, loss, augmentation or model that is the same in another process."""
    if obj is None:
        return None
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return f"{obj.__module__}.{obj.__qualname__}"
    text = repr(obj)
    if " at 0x" in text:  # a default repr (or one holding one): the type is all that is stable
        return f"{type(obj).__module__}.{type(obj).__qualname__}"
    return text


def _run_settings(model, optimizer, loss, augment, batch_size, X, y) -> dict:
    """What a resumed fit must share with the checkpointed run for the same numbers (JSON-able, flat)."""
    settings = {"model": _describe(model), "dtype": str(np.dtype(model.dtype)),
                "optimizer": type(optimizer).__name__}
    for name, value in vars(optimizer).items():  # momentum, weight_decay, betas, eps, ...
        if not name.startswith("_") and name != "t" and isinstance(value, (bool, int, float, str, tuple)):
            settings[f"optimizer.{name}"] = list(value) if isinstance(value, tuple) else value
    settings.update({"optimizer.schedule": _describe(optimizer.schedule),
                     "optimizer.parameters": sorted(optimizer.params), "loss": _describe(loss),
                     "augment": _describe(augment), "batch_size": batch_size, "data": array_digest(X, y)})
    return settings


def _read_checkpoint(path) -> dict:
    """The entries of the checkpoint at ``path``; ValueError for a file that is not one (cut short, another archive)."""
    data = load_npz(path)  # ValueError for a file that is no .npz archive, or a damaged one
    if "epoch" not in data:
        raise ValueError(f"{str(path)!r} is not a checkpoint of shallow.cnn.train (no 'epoch' entry; it holds "
                         f"{', '.join(sorted(data)[:6]) or 'nothing'}{', ...' if len(data) > 6 else ''})")
    return data


def _check_resume(path, settings: dict, epochs: int) -> None:
    """Refuse to resume from ``path`` a run of other settings, or one past ``epochs``."""
    data = _read_checkpoint(path)  # read before anything is restored into the model
    epoch = int(data["epoch"])
    saved = json.loads(str(data["settings"])) if "settings" in data else None
    if epoch > epochs:
        raise ValueError(f"checkpoint {str(path)!r} has completed {epoch} epochs, more than epochs={epochs}: "
                         "a resumed fit runs up to epochs in all")
    if saved is None:  # written by save_checkpoint without settings: nothing to compare
        return
    # a switch the checkpoint lacks, and off here (an option added since it was written, such as Adam's
    # amsgrad), is no difference
    differ = [name for name in sorted(set(settings) | set(saved))
              if saved.get(name) != settings.get(name) and not (name not in saved and settings.get(name) is False)]
    if differ:
        long = {"data": "data: the training data (X, y) differ", "model": "model: another architecture (its repr differs)"}
        what = [long.get(name) or f"{name}: {settings.get(name)!r} (saved: {saved.get(name)!r})" for name in differ]
        raise ValueError(f"checkpoint {str(path)!r} was written by a run with other settings ({'; '.join(what)}): "
                         "resume with the saved settings, or train afresh with resume=False")


# ----------------------------------------------------------------------------- evaluation

def predict(model, X, *, batch_size=512):
    """Model outputs on X in eval mode, by batches; the model's mode is restored afterwards.

    Parameters
    ----------
    model : Layer
    X : array of shape (n, H, W, C)
    batch_size : int

    Returns
    -------
    array of shape (n, K)

    Notes
    -----
    The passes run within :func:`~shallow.cnn.layers.no_cache`: each layer releases its cache
    when it has run, so the memory beyond X and the outputs is about the activations of two
    consecutive layers for one batch, and no cache is left afterwards (a ``backward`` raises
    until the next forward pass).
    """
    check_layer(model)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    X = check_images(X, "X", getattr(model, "in_shape", None), dtype=model.dtype)
    xp = get_xp(X)
    mode = model.training
    model.eval()
    try:
        with no_cache(model):
            outs = [model.forward(X[k:k + batch_size]) for k in range(0, X.shape[0], batch_size)]
    finally:
        model.train(mode)
    return xp.concatenate(outs) if outs else xp.zeros((0, getattr(model, "n_classes", 0)), dtype=model.dtype)


def evaluate(model, X, y, loss=None, *, batch_size=512):
    """(mean loss, accuracy) of the model on (X, y) in eval mode.

    Parameters
    ----------
    model : Layer
    X : array of shape (n, H, W, C)
    y : int array of shape (n,), or real array of shape (n, K)
        Labels; or, with a :class:`~shallow.cnn.losses.SquareLoss`, real targets of the outputs'
        shape ((n,) for a model of one output).
    loss : CrossEntropy or SquareLoss, optional
        Cross-entropy by default.
    batch_size : int

    Returns
    -------
    (float, float)
        The mean loss and the accuracy (NaN for real targets, and for outputs with a NaN). A +inf
        logit is a class of probability 1, the limit of a large finite logit: the cross-entropy
        is +inf when it is not the label's (0 when it is, log c for c tied +inf logits), and the
        accuracy counts it as the prediction (the first +inf on ties).

    Notes
    -----
    The outputs are those of :func:`predict`, which keeps no caches (a ``backward`` afterwards raises).
    """
    loss = _check_loss(loss)
    out = predict(model, X, batch_size=batch_size)
    if out.shape[0] == 0:
        raise ValueError("X holds no images: the mean loss and the accuracy of no data are undefined")
    y, real = _check_targets(y, loss, out.shape[1], "y", out.shape[0])
    xp = get_xp(out)
    y = xp.asarray(y)
    with np.errstate(over="ignore", invalid="ignore"):
        value = loss.value_and_grad(out, y, check=False)[0]
        if math.isnan(value) and isinstance(loss, CrossEntropy) and not bool(xp.isnan(out).any()):
            # +inf logits, no NaN: the fast log-softmax of the step gives NaN there; their limit instead
            value = loss._limit_value(out, y)
    # outputs with a NaN make a NaN loss (a diverged model): no accuracy, which would refuse them. An infinite
    # loss still has its accuracy: finite outputs far off, or a +inf logit at a class other than the label
    return value, (float("nan") if real or math.isnan(value) else accuracy(out, y))


# ----------------------------------------------------------------------------- the loop

def train_step(model, loss, optimizer, x, y, *, check=True):
    """One step: forward, loss, backward, update. Returns (loss value, outputs).

    Parameters
    ----------
    model : Layer
        The network (a :class:`~shallow.cnn.models.Model`, an IRevNet, ...), in the mode the step
        should run in (``train()`` for training).
    loss : CrossEntropy or SquareLoss
        Any object with ``value_and_grad(out, y, check=...)``.
    optimizer : Optimizer
        Over the model's parameters; ``optimizer.step`` receives ``model.named_gradients()``.
    x : array of shape (N, H, W, C)
        A batch of images (checked by the model's forward when it checks its inputs).
    y : array of shape (N,), or (N, K) targets for the square loss
        The batch's labels.
    check : bool, default True
        The loss checks the labels' dtype and range (labels out of range failed with numpy's
        IndexError), and the square loss that real targets are finite; a loop that has checked all
        its labels once passes False.

    Returns
    -------
    value : float
        The loss on the batch, before the update.
    out : array of shape (N, K)
        The model's outputs on x, before the update.

    Notes
    -----
    Refused (RuntimeError) within :func:`~shallow.cnn.layers.no_cache`, before the forward pass: its
    backward would find no cache. The update is skipped when the loss is not finite (the caller
    decides what to do), and the running statistics of batch normalisation, which the forward pass
    moved in train mode, are put back: the model is as it was before the step (up to the draws of
    its dropout generators).
    """
    _check_caching("train_step")
    running = _running_buffers(model) if model.training else []
    if running:  # one concatenation: one kernel launch on a GPU rather than a copy per buffer
        saved = get_xp(running[0]).concatenate([b.ravel() for b in running])
    out = model.forward(x)
    value, dout = loss.value_and_grad(out, y, check=check)
    if math.isfinite(value):
        model.backward(dout, need_input_grad=False)
        optimizer.step(model.named_gradients())
    elif running:
        offset = 0
        for b in running:
            b[...] = saved[offset:offset + b.size].reshape(b.shape)
            offset += b.size
    return value, out


def fit(model, X, y, *, X_test=None, y_test=None, loss=None, optimizer=None, epochs=10, batch_size=64, rng=None,
        augment=None, checkpoint=None, checkpoint_every=1, resume=False, on_divergence="raise",
        progress=False, callback=None, capture=None) -> History:
    """Train ``model`` on (X, y) by mini-batch steps for ``epochs`` epochs.

    Parameters
    ----------
    model : Layer
        Usually a :class:`~shallow.cnn.models.Model` (or its :func:`~shallow.cnn.linearize`).
    X : array of shape (n, H, W, C)
        Training images (the model's in_shape when it has one), finite.
    y : int array of shape (n,), or real array of shape (n, K)
        Labels in {0, ..., K - 1}; or, with ``loss=SquareLoss()``, real targets of the outputs'
        shape ((n,) for a model of one output), for regression and the lazy-training objective.
        The accuracies of the history are then NaN.
    X_test, y_test : arrays, optional
        Evaluated after every epoch.
    loss : CrossEntropy or SquareLoss, optional
        Cross-entropy by default.
    optimizer : Optimizer, optional
        SGD(lr=0.05, momentum=0.9) on ``model.named_parameters()`` by default. Gradient clipping
        and weight decay on some parameters are options of the optimiser, saved with its settings
        in a checkpoint: ``SGD(model.named_parameters(), lr, momentum=0.9, weight_decay=5e-4,
        no_decay=BIASES_AND_NORMS, clip_norm=1.0)`` is PyTorch's loop with two parameter groups and
        ``clip_grad_norm_(model.parameters(), 1.0)`` before each step (:mod:`~shallow.cnn.optim`).
    epochs : int
        Total number of epochs (a resumed run continues up to it).
    batch_size : int
    rng : None, int or Generator
        Batch order and augmentations. A resumed run sets a Generator passed in (and the
        layers' own, such as dropout's) to the checkpoint's states.
    augment : callable (X, rng) -> X, optional
        Applied to every training batch (:class:`~shallow.cnn.data.Augment`); it must return a
        batch of the shape it is given.
    checkpoint : str or Path, optional
        Saved after every ``checkpoint_every`` epochs and at the end.
    checkpoint_every : int
    resume : bool
        Start from ``checkpoint`` when that file exists (a fresh run when it does not yet); needs ``checkpoint``.
        The run's settings must be the checkpoint's (module notes), and epochs at least its epochs.
    on_divergence : {"raise", "stop"}
    progress : bool
        Show a tqdm bar over the steps.
    callback : callable (history, model) -> bool or None, optional
        Called after every epoch; returning True stops the run there (a convergence test, say
        ``lambda h, m: h.loss[-1] < 1e-3``), with ``history.message`` saying so and a checkpoint
        written.
    capture : bool, optional
        Run the steps as a :class:`~shallow.cnn.graph.CapturedStep`: on a GPU, each step is then
        one replay of a recorded CUDA graph instead of some hundreds of kernel launches, with the
        same numbers (the VGG step of ``benchmarks/cnn_step.py``, batch 128, on an H200: 17.8 ms
        launch by launch, 3.8 ms replayed; PyTorch's 3.9 ms). The default, None, captures on a GPU
        when the step can be replayed: not for models with dropout, optimisers with a projection,
        parameters of mixed dtypes or a loss of your own without ``as_array``
        (:func:`~shallow.cnn.graph.replay_refusal`), nor on the host, where
        there is nothing to record. True asks for it (an error where it cannot be), False never.
        The captured steps keep a memory pool of their own on the device for the run's length.

    Returns
    -------
    History
        The per-epoch records. The model is left in train mode (as a PyTorch loop leaves it):
        :func:`evaluate` and :func:`predict` switch to eval mode and back, but a direct call
        ``model(x)`` uses batch statistics and moves the running ones until ``model.eval()``.

    Raises
    ------
    ValueError
        For images of the wrong shape or channels, NaN images, labels out of range (naming the argument).
    TypeError
        For an optimizer that is not an :class:`~shallow.cnn.optim.Optimizer`, a loss class instead of
        a loss object (``CrossEntropy`` for ``CrossEntropy()``) or an object without ``value_and_grad``,
        an ``augment`` or ``callback`` that is not callable, or a ``checkpoint`` that is not a path.
    TrainingDivergedError
        When the loss becomes NaN or infinite and ``on_divergence="raise"``.
    RuntimeError
        Within :func:`~shallow.cnn.layers.no_cache` (a training step needs caches), before anything moves.

    Notes
    -----
    The optimiser's schedule counts steps, ceil(n / batch_size) per epoch (:mod:`~shallow.cnn.optim`),
    and ``history.lr`` records the rate of each epoch's last step. Two schedules count epochs instead:

    - :class:`~shallow.cnn.optim.PerEpoch` (``PerEpoch(StepDecay(lr, k))``, ``PerEpoch(Cosine(lr, epochs))``),
      whose steps per epoch fit sets: PyTorch's ``scheduler.step()`` once per epoch;
    - :class:`~shallow.cnn.optim.ReduceOnPlateau`, to which fit passes ``history.<monitor>[-1]`` after
      each epoch (after the test set is evaluated, before the callback and the checkpoint): PyTorch's
      ``scheduler.step(val_loss)`` at the end of the epoch. Its state is saved in the checkpoints,
      and a resumed run reduces the rate at the same epochs.

    Examples
    --------
    >>> from shallow.cnn import build_model, load_digits
    >>> data = load_digits()
    >>> model = build_model("vgg", data.in_shape, 10, width=4, rng=0)
    >>> history = fit(model, data.X_train[:128], data.y_train[:128], epochs=1, rng=0)
    >>> len(history.loss)
    1
    """
    check_layer(model)
    _check_caching("fit")
    epochs = check_integer(epochs, "epochs", minimum=0)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    checkpoint_every = check_integer(checkpoint_every, "checkpoint_every", minimum=1)
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
    for name, f in (("augment", augment), ("callback", callback)):
        if f is not None and not callable(f):
            raise TypeError(f"{name} must be callable or None, got {type(f).__name__}")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path (str or pathlib.Path) or None, got {type(checkpoint).__name__}")
    if checkpoint is not None and Path(checkpoint).is_dir():  # IsADirectoryError after the first epoch, else
        raise ValueError(f"checkpoint={str(checkpoint)!r} is a folder: give the path of the checkpoint file "
                         "in it, such as FOLDER/fit.npz")
    loss = _check_loss(loss)
    in_shape = getattr(model, "in_shape", None)
    X = check_images(X, "X", in_shape, dtype=model.dtype)
    if X.shape[0] == 0:
        raise ValueError("X holds no images: there is nothing to train on")
    n_classes = _n_outputs(model, X)
    y, real = _check_targets(y, loss, n_classes, "y", X.shape[0])
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")
    if X_test is not None:
        X_test = check_images(X_test, "X_test", in_shape or tuple(X.shape[1:]), dtype=model.dtype)
        if X_test.shape[0] == 0:
            raise ValueError("X_test holds no images: pass X_test=None and y_test=None for no test set")
        y_test, real_test = _check_targets(y_test, loss, n_classes, "y_test", X_test.shape[0])
        if real_test != real:
            raise ValueError("y and y_test must both be class labels or both real targets")
    xp = get_xp(X)
    y, y_test = xp.asarray(y), (None if y_test is None else xp.asarray(y_test))
    if optimizer is None:
        optimizer = SGD(model.named_parameters(), lr=0.05, momentum=0.9)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
    optimizer.check_model(model)
    resume = check_bool(resume, "resume")
    if capture is None:  # by default on a GPU, where a replayed step is one launch instead of hundreds
        capture = (_reduce.on_device(X) and cuda_runtime() is not None
                   and replay_refusal(model, loss, optimizer) is None)
    elif not isinstance(capture, (bool, np.bool_)):
        raise ValueError(f"capture must be None (the default: on a GPU where the step can be replayed), True or "
                         f"False, got {capture!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from (checkpoint=None)")
    n = X.shape[0]
    steps_per_epoch = n // batch_size + (n % batch_size > 0)
    schedule = optimizer.schedule
    if isinstance(schedule, PerEpoch):
        schedule.bind(steps_per_epoch)
    plateau = schedule if isinstance(schedule, ReduceOnPlateau) else None
    if plateau is not None and plateau.monitor.startswith("test_") and X_test is None:
        raise ValueError(f"the ReduceOnPlateau schedule monitors {plateau.monitor!r}, which needs X_test and y_test")
    if plateau is not None and plateau.monitor.endswith("accuracy") and real:
        raise ValueError(f"the ReduceOnPlateau schedule monitors {plateau.monitor!r}, but real targets have no "
                         "accuracy (NaN): monitor 'loss' or 'test_loss'")
    rng = check_random_state(rng)
    # the labels were checked above, once: a step checks them no more (on a GPU, two waits for the device a step)
    step = (CapturedStep(model, loss, optimizer) if capture
            else functools.partial(train_step, model, loss, optimizer, check=False))

    history, start = History(), 0
    settings = None if checkpoint is None else _run_settings(model, optimizer, loss, augment, batch_size, X, y)
    if resume and checkpoint is not None and Path(checkpoint).exists():
        _check_resume(checkpoint, settings, epochs)
        state = load_checkpoint(checkpoint, model, optimizer, rng)
        start = state["epoch"]
        history = state["history"] or History()

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max(epochs - start, 0) * steps_per_epoch, desc="fit", unit="step", leave=False)
    model.train()
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for epoch in range(start, epochs):
                t0 = time.perf_counter()
                total, correct, seen = 0.0, 0, 0
                for b, (xb, yb) in enumerate(batches(X, y, batch_size, rng=rng)):
                    if augment is not None:
                        with _data_checked():  # X was checked: no scan of each augmented batch for NaN
                            xa = augment(xb, rng)
                        if getattr(xa, "shape", None) != xb.shape:  # the model skips its input checks here
                            raise ValueError(f"augment must return a batch of the shape it is given, {tuple(xb.shape)}, "
                                             f"got {_shape_of(xa)}")
                        xb = xa
                    lr = optimizer.lr
                    with _inputs_checked(model):
                        value, out = step(xb, yb)
                    if not math.isfinite(value):
                        message = (f"the training loss is {value} at epoch {epoch + 1}, batch {b + 1} of "
                                   f"{steps_per_epoch} (optimiser step {optimizer.t}, learning rate {lr:.3g}): "
                                   "the iteration diverged. Lower the learning rate (or the output scale "
                                   "alpha), or check the data; the parameters are those before this batch.")
                        if on_divergence == "raise":
                            raise TrainingDivergedError(message)
                        history.diverged, history.message = True, message
                        return history
                    m = xb.shape[0]
                    total += value * m
                    if not real:
                        correct = correct + (xp.argmax(out, axis=1) == yb).sum()  # on the device: no wait
                    seen += m
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}")
                test_loss = test_acc = float("nan")
                if X_test is not None:
                    test_loss, test_acc = evaluate(model, X_test, y_test, loss)
                history.epoch.append(epoch + 1)
                history.loss.append(total / max(seen, 1))
                history.accuracy.append(float("nan") if real else int(correct) / max(seen, 1))
                history.test_loss.append(test_loss)
                history.test_accuracy.append(test_acc)
                history.lr.append(lr)
                history.time.append(time.perf_counter() - t0)
                if plateau is not None:
                    plateau.step(getattr(history, plateau.monitor)[-1])
                stop = callback is not None and bool(callback(history, model))
                if stop:
                    history.message = f"stopped by the callback after epoch {epoch + 1}"
                if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs or stop):
                    save_checkpoint(checkpoint, model, optimizer, rng, epoch + 1, history, settings)
                if stop:
                    break
    finally:
        if bar is not None:
            bar.close()
    return history
