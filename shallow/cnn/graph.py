r"""A training step recorded once as a CUDA graph and replayed in one launch.

On a GPU every array operation of a step is a kernel launch that costs the host some microseconds
(the VGG step of ``benchmarks/cnn_step.py`` is about 500 of them, ``benchmarks/device_launches.py``),
so at small batches the host, not the device, sets the pace. CUDA stream capture records the
launches of one step, with their arguments, as a graph that is then replayed by a single launch.
A replay sees exactly what the recording saw, which makes four demands on the step:

* the arrays are those of the recording: the batch is copied into fixed input buffers before each
  replay, and parameters, gradients, optimiser state and batch-norm statistics are updated in
  place (which shallow.cnn does; :class:`CapturedStep` records again if the model's arrays have
  been replaced, by ``model.to`` say);
* numbers that Python passes to the kernels are constants of the graph; those of the update that
  change from step to step (the learning rate of a schedule, Adam's bias corrections) are read
  instead from a small device array written before each replay (``Optimizer._coefficients``);
* nothing may wait for the device: the loss stays on it (``value_and_grad(..., as_array=True)``)
  and the model does not check each batch (the caller checks the data once, as :func:`fit` does);
* random numbers drawn on the host would be replayed unchanged: models with generators (dropout)
  are refused, and so are optimisers that do more than their update formula (a projection);
* CuPy refuses to call cuBLAS while a stream is captured: the matrix products of the runs go
  through a cuBLAS handle of this module's own (:mod:`shallow.cnn._cublas`, bound to the side
  stream), which CUDA records like any other launch.

A graph is recorded per batch shape (the smaller last batch of an epoch has its own), on the
second call with that shape: the first call runs the step as it is, which compiles CuPy's kernels
and fills the caches (convolution plans) that the recording uses. All runs on the side stream
allocate from a memory pool of their own, kept as long as the :class:`CapturedStep`: the first run
leaves in it the blocks that the recording reuses (so capture need not allocate), the addresses in
the graphs stay valid, and no other array is given that memory. Graphs share the pool, which is
safe because they run one after the other and pass nothing to each other through temporaries. A recording that
fails (a CUDA error in capture) is reported by a warning and the step runs without graphs from
then on, with the same numbers.

The numbers are those of :func:`~shallow.cnn.train.train_step`: the same kernels in the same order,
and the per-step coefficients rounded to the parameters' dtype as the floats are. When the loss is
not finite the step leaves parameters, optimiser state and batch-norm running statistics as they
were (the graph begins by copying them aside); the gradients are then those of the failed step.

On the host (numpy arrays) there is nothing to record: every call runs the step function on the
same buffers, so this code path, except the capture itself, is tested without a GPU.

References
----------
NVIDIA, CUDA C++ Programming Guide, "CUDA Graphs" (stream capture); CuPy's ``Stream.begin_capture``.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings

import numpy as np

from ..backend import cuda_runtime, get_xp
from . import _cublas, _reduce
from .layers import _running_buffers, check_layer
from .models import _inputs_checked
from .optim import Optimizer

__all__ = ["CapturedStep", "replay_refusal"]


class _Recording:
    """The fixed buffers of one batch shape, and its graph once recorded."""

    def __init__(self, xp, x, y, dtype, n_coefficients):
        self.x = xp.empty(x.shape, dtype=dtype)
        self.y = xp.empty(y.shape, dtype=y.dtype)
        self.coefficients = xp.empty(n_coefficients, dtype=dtype)
        self.value = self.out = None  # the step's loss (0-d) and outputs, written by every run
        self.warm = False  # the step has run once with these shapes (kernels compiled, plans made)
        self.graph = None


def replay_refusal(model, loss, optimizer):
    """Why a step of ``optimizer`` on ``model`` and ``loss`` cannot be recorded and replayed (a message), or None.

    Dropout's generators and an optimiser's projection draw or act on the host, which a replay would
    repeat unchanged; a recording needs its parameters in one dtype, and a loss that can leave its
    value on the device (``value_and_grad(..., as_array=True)``, as :class:`~shallow.cnn.CrossEntropy`
    and :class:`~shallow.cnn.SquareLoss` do), since a float would wait for the device within the step.
    :func:`~shallow.cnn.train.fit` asks this before capturing its steps by default on a GPU.
    """
    if not _takes_as_array(loss):
        return (f"loss is a {type(loss).__name__}, whose value_and_grad takes no as_array=True (the value as a "
                "device array: a float would wait for the device within a recorded step): use train_step")
    if type(optimizer).step is not Optimizer.step:
        return (f"optimizer is a {type(optimizer).__name__}, whose step does more than the update formula (a "
                "projection, say), which a recorded step cannot replay: use train_step")
    rngs = model.named_rngs()
    if rngs:
        return (f"model draws random numbers on the host ({', '.join(sorted(rngs))}: dropout), which a recorded "
                "step would replay unchanged: use train_step")
    dtypes = {p.dtype for p in optimizer.params.values()}
    if len(dtypes) != 1:
        return f"the parameters must have one dtype, got {sorted(str(d) for d in dtypes)}"
    return None


def _takes_as_array(loss) -> bool:
    """Whether ``loss.value_and_grad`` accepts the keyword as_array."""
    try:
        parameters = inspect.signature(loss.value_and_grad).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return "as_array" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class CapturedStep:
    """``train_step`` for fixed batch shapes, recorded as a CUDA graph on a GPU (module notes).

    Parameters
    ----------
    model : Layer
        Without random generators (no dropout); parameters of one dtype.
    loss : CrossEntropy or SquareLoss
        Or any loss whose ``value_and_grad(out, y, check=..., as_array=True)`` returns its value as
        a 0-d device array.
    optimizer : Optimizer
        SGD or Adam (any Optimizer whose ``step`` is the base class's) on ``model.named_parameters()``,
        with any of their options: the gradient clipping's norm and factor are computed on the device
        within the step, and the per-parameter weight decay is a vector (or mask) built once.

    Attributes
    ----------
    recorded : int
        Graphs recorded so far (0 on the host).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn import SGD, CrossEntropy, build_model
    >>> model = build_model("vgg", (8, 8), 10, width=4, rng=0)
    >>> step = CapturedStep(model, CrossEntropy(), SGD(model.named_parameters(), lr=0.1))
    >>> x, y = np.random.default_rng(0).standard_normal((16, 8, 8, 1)), np.arange(16) % 10
    >>> value, out = step(x, y)
    >>> out.shape
    (16, 10)
    """

    def __init__(self, model, loss, optimizer):
        check_layer(model)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
        optimizer.check_model(model)
        refusal = replay_refusal(model, loss, optimizer)
        if refusal is not None:
            raise ValueError(refusal)
        self.model, self.loss, self.optimizer = model, loss, optimizer
        first = next(iter(optimizer.params.values()))
        self.dtype = first.dtype  # the parameters' one dtype (replay_refusal)
        self.xp = get_xp(first)
        self.on_device = _reduce.on_device(first)  # a CuPy array: record graphs
        self.recorded = 0
        self._recordings = {}
        self._arrays = None  # the arrays the recordings write (their identity is checked every call)
        self._restorable = self._backup = None
        self._failed = False  # a recording failed: run without graphs
        if self.on_device:
            cuda = self._cuda = cuda_runtime()
            if cuda is None:
                raise ValueError("the model's arrays are not numpy arrays, but no CUDA device answers")
            self._stream = cuda.Stream(non_blocking=True)
            self._pool = cuda.MemoryPool()
            self._ready, self._done = cuda.Event(disable_timing=True), cuda.Event(disable_timing=True)
            try:  # CuPy refuses cuBLAS calls in capture: the products go through a handle of ours
                self._blas = _cublas.Handle(self._stream, self.xp)
            except Exception as error:  # noqa: BLE001 - no usable cuBLAS binding: run without graphs
                self._blas = None
                self._give_up(error)

    # ------------------------------------------------------------------ the step
    def _state_arrays(self):
        """Every array a step writes in place: parameters, gradients, buffers, optimiser state."""
        model = self.model
        return (tuple(model.named_parameters().values()) + tuple(model.named_gradients().values())
                + tuple(model.named_buffers().values()) + tuple(self.optimizer._written_arrays()))

    def _run(self, r):
        """The step on the buffers of recording ``r``: what a graph records."""
        for saved, a in zip(self._backup, self._restorable, strict=True):
            saved[...] = a
        model, optimizer = self.model, self.optimizer
        out = model.forward(r.x)
        value, dout = self.loss.value_and_grad(out, r.y, check=False, as_array=True)
        model.backward(dout, need_input_grad=False)
        n = r.coefficients.shape[0]
        coefficients = tuple(r.coefficients[i:i + 1].reshape(()) for i in range(n))
        optimizer._apply(optimizer._ordered(model.named_gradients()), coefficients)
        r.value, r.out = value, out

    def _capture(self, r):
        """Record the step of ``r`` as a graph on the side stream (the caller launches it)."""
        stream = self._stream
        stream.begin_capture()
        try:
            self._run(r)
        except BaseException:
            with contextlib.suppress(Exception):
                stream.end_capture()
            raise
        return stream.end_capture()

    def _give_up(self, error):
        self._failed = True
        warnings.warn(f"recording the training step as a CUDA graph failed ({type(error).__name__}: {error}); "
                      "the steps run without graphs (same numbers, more launches)", RuntimeWarning, stacklevel=4)

    @contextlib.contextmanager
    def _side_stream(self):
        """Within, on a device: the side stream, after the main stream's work (the batch, the last
        reads of the outputs), allocating from the private pool, with the products on the cuBLAS
        handle; the main stream then waits for it. On the host: nothing."""
        if not self.on_device:
            yield
            return
        main, stream = self._cuda.get_current_stream(), self._stream
        stream.wait_event(main.record(self._ready))
        # the first run leaves in the private pool the blocks that the recording then reuses,
        # without allocating in capture
        with stream, self._cuda.using_allocator(self._pool.malloc), _cublas.binding(self._blas):
            yield
        main.wait_event(stream.record(self._done))

    def _launch(self, r):
        """Run the step of ``r``: replay its graph, or record it (on a device), or run it as is."""
        if self.on_device and r.graph is None and r.warm and not self._failed:
            try:
                r.graph = self._capture(r)
                self.recorded += 1
            except Exception as error:  # noqa: BLE001 - any capture failure: run without graphs
                self._give_up(error)
        if r.graph is not None and not self._failed:
            r.graph.launch(self._stream)
        else:
            self._run(r)
            r.warm = True

    def __call__(self, x, y):
        """One step on the batch (x, y): forward, loss, backward, update. Returns (loss value, outputs).

        As :func:`~shallow.cnn.train.train_step`: the loss is a float and the update is skipped
        when it is not finite. The outputs are the recording's buffer, overwritten by the next
        call with the same shapes.
        """
        xp = self.xp
        where = "a CuPy array (the model is on the GPU)" if self.on_device else "a numpy array"
        for name, a in (("x", x), ("y", y)):
            if not hasattr(a, "dtype") or _reduce.on_device(a) != self.on_device:
                raise ValueError(f"{name} must be {where}, got {type(a).__name__}")
        if x.ndim != 4 or y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"x must be a batch of images (N, H, W, C) and y its N labels or targets, got shapes "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        arrays = self._state_arrays()
        replaced = self._arrays is None or len(arrays) != len(self._arrays) or any(
            a is not b for a, b in zip(arrays, self._arrays))
        if replaced:
            self._recordings.clear()  # the model's arrays were replaced (or this is the first call)
            self._restorable = self.optimizer._written_arrays() + _running_buffers(self.model)
            self._backup = [xp.empty_like(a) for a in self._restorable]
        key = (tuple(x.shape), x.dtype.str, tuple(y.shape), y.dtype.str, self.model.training)
        r = self._recordings.get(key)
        if r is None:
            r = self._recordings[key] = _Recording(xp, x, y, self.dtype, len(self.optimizer._coefficients(0)))
        coefficients = np.asarray(self.optimizer._coefficients(self.optimizer.t), dtype=self.dtype)
        with _inputs_checked(self.model), self._side_stream():
            r.x[...] = x
            r.y[...] = y
            r.coefficients[...] = xp.asarray(coefficients)
            self._launch(r)
        if replaced:
            self._arrays = self._state_arrays()  # after the first backward, the gradients exist
        value = float(r.value)
        if math.isfinite(value):
            self.optimizer.t += 1
        else:
            for a, saved in zip(self._restorable, self._backup, strict=True):
                a[...] = saved
        return value, r.out
