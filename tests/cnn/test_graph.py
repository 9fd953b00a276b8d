"""CapturedStep (a training step recorded as a CUDA graph) on the host: the numbers of train_step,
in-place writes, no reads of device values within the step, refusals. The recording itself needs
a GPU (tests/cnn/test_cnn_gpu.py)."""

import contextlib
import functools
import sys
import types
import warnings

import numpy as np
import pytest

from shallow.cnn import (BIASES_AND_NORMS, SGD, Adam, CapturedStep, Cosine, CrossEntropy, SquareLoss, StepDecay,
                         _reduce, build_model, fit)
from shallow.cnn.models import _inputs_checked
from shallow.cnn.robustness import ProjectedOptimizer
from shallow.cnn.train import train_step


def _data(n=52, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, size, size, 1)).astype(np.float32), rng.integers(0, 10, n)


def _model(flat=True, **kwargs):
    model = build_model("vgg", (8, 8), 10, width=4, rng=3, dtype=np.float32, **kwargs)
    return model.flatten_parameters() if flat else model


OPTIMIZERS = {
    "sgd momentum cosine": lambda p: SGD(p, lr=Cosine(0.05, 12, warmup=2), momentum=0.9, weight_decay=1e-3),
    "sgd nesterov step decay": lambda p: SGD(p, lr=StepDecay(0.1, 3), momentum=0.5, nesterov=True),
    "adam": lambda p: Adam(p, lr=Cosine(1e-2, 12), weight_decay=1e-3),
    "adamw": lambda p: Adam(p, lr=3e-3, weight_decay=1e-2, decoupled=True),
    # the per-entry decay (a vector of lambdas for SGD and Adam, AdamW's mask) and the clipping factor, a
    # device scalar computed within the step: replayed as recorded
    "sgd no_decay clip_norm": lambda p: SGD(p, lr=Cosine(0.05, 12), momentum=0.9, weight_decay=1e-2,
                                            no_decay=BIASES_AND_NORMS, clip_norm=0.5),
    "adam no_decay clip_norm": lambda p: Adam(p, lr=Cosine(1e-2, 12), weight_decay=1e-2, no_decay=BIASES_AND_NORMS,
                                              clip_norm=0.5),
    "adamw no_decay clip_norm": lambda p: Adam(p, lr=Cosine(3e-3, 12), weight_decay=1e-2, decoupled=True,
                                               no_decay=BIASES_AND_NORMS, clip_norm=0.5),
}


@pytest.mark.parametrize("flat", [True, False], ids=["flat parameters", "separate parameters"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_captured_fit_gives_the_numbers_of_train_step(name, flat):
    """Three epochs of 16-image batches and a last batch of 4 (two recordings), with a centred model
    (batch norm, a frozen reference): bitwise the parameters, buffers and history of train_step."""
    X, y = _data()
    runs = {}
    for capture in (False, True):
        model = _model(flat, centering="frozen", alpha=2.0)
        opt = OPTIMIZERS[name](model.named_parameters())
        history = fit(model, X, y, optimizer=opt, epochs=3, batch_size=16, rng=1, capture=capture)
        runs[capture] = (model, opt, history)
    (model, opt, history), (captured, opt_c, history_c) = runs[False], runs[True]
    for kind in ("named_parameters", "named_buffers"):
        for key, value in getattr(model, kind)().items():
            np.testing.assert_array_equal(getattr(captured, kind)()[key], value, err_msg=key)
    assert opt_c.t == opt.t == 12
    assert history_c.loss == history.loss and history_c.accuracy == history.accuracy


def test_captured_step_with_label_smoothing_gives_the_numbers_of_train_step():
    x, y = _data(16)
    runs = []
    for captured in (False, True):
        model = _model()
        opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
        loss = CrossEntropy(label_smoothing=0.1)
        step = CapturedStep(model, loss, opt) if captured else functools.partial(train_step, model, loss, opt)
        runs.append(([step(x, y)[0] for _ in range(3)], model.named_parameters()))
    assert runs[1][0] == runs[0][0]
    for name, p in runs[0][1].items():
        np.testing.assert_array_equal(runs[1][1][name], p, err_msg=name)


def test_captured_step_square_loss_value_equals_train_step():
    x, y = _data(16)
    values = []
    for captured in (False, True):
        model = _model()
        opt = SGD(model.named_parameters(), lr=0.1)
        step = CapturedStep(model, SquareLoss(), opt) if captured else None
        values.append([(step(x, y) if captured else train_step(model, SquareLoss(), opt, x, y))[0]
                       for _ in range(3)])
    assert values[0] == values[1]


@pytest.mark.parametrize("flat", [True, False], ids=["flat parameters", "separate parameters"])
def test_captured_step_writes_every_array_in_place(flat):
    """A graph replays the addresses it recorded: parameters, gradients, buffers and optimiser state
    keep theirs from step to step (and their values change)."""
    x, y = _data(16)
    model = _model(flat)
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    step = CapturedStep(model, CrossEntropy(), opt)
    step(x, y)
    arrays = step._state_arrays()
    addresses = [a.__array_interface__["data"][0] for a in arrays]
    before = [a.copy() for a in arrays]
    step(x, y)
    after = step._state_arrays()
    assert all(a is b for a, b in zip(after, arrays, strict=True))
    assert [a.__array_interface__["data"][0] for a in after] == addresses
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def _raw(value):
    if isinstance(value, (list, tuple)):
        return type(value)(_raw(v) for v in value)
    return value.view(np.ndarray) if isinstance(value, _HostRead) else value


def _wrap(value):
    if isinstance(value, np.generic):  # a reduction's numpy scalar: a 0-d array on a device
        value = np.asarray(value)
    return value.view(_HostRead) if type(value) is np.ndarray else value


class _HostRead(np.ndarray):
    """An array that fails when its value is read on the host while ``armed`` (on a GPU, such a
    read waits for the device, which a recording does not allow). Operations on it, and arrays
    made by :class:`_HostReadNumpy`, are _HostRead arrays again."""

    armed = False

    def _read(self):
        if _HostRead.armed:
            raise AssertionError("a value was read on the host within the step")
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._read())

    def __int__(self):
        return int(self._read())

    def __bool__(self):
        return bool(self._read())

    def __index__(self):
        return self._read().__index__()

    def item(self, *args):
        return self._read().item(*args)

    def tolist(self):
        return self._read().tolist()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = _raw(kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_raw(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_raw(args), **{k: _raw(v) for k, v in kwargs.items()}))


class _HostReadNumpy(types.ModuleType):
    """numpy, with functions that return _HostRead arrays (the array module of the layers)."""

    def __getattr__(self, name):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr
        return lambda *args, **kwargs: _wrap(attr(*_raw(args), **{k: _raw(v) for k, v in kwargs.items()}))


class _FakeCuda:
    """A stand-in for CuPy's CUDA API as CapturedStep uses it, with CuPy's documented signatures
    (``Stream.record(event=None)`` returns the event, ``Event.record`` returns None, ...), that runs
    on numpy: what is called on a capturing stream is recorded instead of run (at the granularity
    of CapturedStep._run, which the test routes here), and a graph's launch runs it."""

    def __init__(self, fail_capture=False):
        self.fail_capture = fail_capture
        self.launches = self.captures = 0
        self.cuda = types.SimpleNamespace(Stream=self._stream, Event=_FakeCuda.Event, MemoryPool=_FakeCuda.MemoryPool,
                                          using_allocator=self._using_allocator,
                                          get_current_stream=lambda device_id=-1: self.null)
        self.null = self._stream()
        self.capturing = None  # the stream being captured
        self.allocator = None

    class Event:
        def __init__(self, block=False, disable_timing=False, interprocess=False):
            self.stream = None

        def record(self, stream=None):
            self.stream = stream

    class MemoryPool:
        def malloc(self, size):
            raise AssertionError("not called on numpy")

    @contextlib.contextmanager
    def _using_allocator(self, allocator=None):
        previous, self.allocator = self.allocator, allocator
        try:
            yield
        finally:
            self.allocator = previous

    def _stream(self, null=False, non_blocking=False, ptds=False, priority=None):
        cuda = self

        class Stream:
            ptr = 0

            def __init__(self):
                self.work, self.waited = [], []

            def record(self, event=None):
                event = event or _FakeCuda.Event()
                event.record(self)
                return event

            def wait_event(self, event):
                assert isinstance(event, _FakeCuda.Event) and event.stream is not None, "waits for an unrecorded event"
                self.waited.append(event.stream)

            def begin_capture(self, mode=None):
                assert non_blocking, "capture on a blocking stream"
                if cuda.fail_capture:
                    raise RuntimeError("capture refused (test)")
                cuda.capturing, self.work = self, []

            def end_capture(self):
                assert cuda.capturing is self
                cuda.capturing = None
                cuda.captures += 1
                work = self.work

                class Graph:
                    def launch(self, stream=None):
                        cuda.launches += 1
                        for run in work:
                            run()
                return Graph()

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Stream()


def _fake_device(monkeypatch, fake):
    """CapturedStep on numpy arrays taking its device route, with ``fake`` as CuPy."""
    from shallow.cnn import graph
    monkeypatch.setattr(_reduce, "on_device", lambda a: True)
    monkeypatch.setattr(graph, "cuda_runtime", lambda: fake.cuda)
    monkeypatch.setattr(graph._cublas, "Handle", lambda stream, xp: None)
    run = graph.CapturedStep._run

    def routed(self, r):
        if fake.capturing is not None:
            fake.capturing.work.append(lambda: run(self, r))
        else:
            run(self, r)
    monkeypatch.setattr(graph.CapturedStep, "_run", routed)


@pytest.mark.parametrize("fail", [False, True], ids=["recorded", "recording fails"])
def test_captured_fit_on_the_device_route_gives_the_numbers_of_train_step(monkeypatch, fail):
    """The device branch (side stream, events, recordings, graph launches; a failed recording
    falls back to running the steps with a warning) on numpy with a stand-in for CuPy: the numbers
    of fit without capture, taken on the same device code path."""
    X, y = _data()
    runs = {}
    for capture in (False, True):
        fake = _FakeCuda(fail_capture=fail)
        with monkeypatch.context() as patch:
            _fake_device(patch, fake)
            model = _model(centering="frozen")
            opt = OPTIMIZERS["adam"](model.named_parameters())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fit(model, X, y, optimizer=opt, epochs=3, batch_size=16, rng=1, capture=capture)
        runs[capture] = (model.named_parameters(), [str(w.message) for w in caught], fake)
    for key, value in runs[False][0].items():
        np.testing.assert_array_equal(runs[True][0][key], value, err_msg=key)
    messages, fake = runs[True][1], runs[True][2]
    if fail:
        assert fake.captures == 0 and any("CUDA graph failed" in m and "capture refused" in m for m in messages)
    else:
        # two batch shapes, each run once, then recorded and replayed: 12 steps, 2 recordings, 10 launches
        assert fake.captures == 2 and fake.launches == 10 and not messages


@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["replayable", "dropout"])
def test_fit_captures_its_steps_by_default_where_a_device_answers_and_the_step_can_be_replayed(monkeypatch, dropout):
    """capture=None: recorded on a device (the stand-in for CuPy) unless the model draws on the host (dropout),
    which then trains launch by launch without a warning; on numpy arrays nothing is recorded."""
    from shallow.cnn import train
    X, y = _data()
    fake = _FakeCuda()
    with monkeypatch.context() as patch:
        _fake_device(patch, fake)
        patch.setattr(train, "cuda_runtime", lambda: fake.cuda)
        model = _model(dropout=dropout)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fit(model, X, y, optimizer=SGD(model.named_parameters(), lr=0.05), epochs=2, batch_size=16, rng=1)
    assert fake.captures == (0 if dropout else 2)
    made = []
    monkeypatch.setattr(train, "CapturedStep", lambda *args: made.append(args) or CapturedStep(*args))
    fit(_model(), X, y, epochs=1, batch_size=16, rng=1)  # numpy arrays, cupy importable or not
    assert not made


class _FloatCrossEntropy:
    """A loss of a user's own, with the documented minimum: value_and_grad(out, y, check=...), a float value."""

    def value_and_grad(self, out, y, *, check=True):
        value, grad = CrossEntropy().value_and_grad(out, y, check=check)
        return float(value), grad


def test_fit_trains_with_a_loss_without_as_array_launch_by_launch_on_a_device(monkeypatch):
    """A float loss value would wait for the device within a recorded step: fit's default then runs the
    steps as they are (the numbers of train_step), and CapturedStep refuses the loss naming as_array."""
    from shallow.cnn import train
    X, y = _data()
    fake = _FakeCuda()
    runs = []
    for capture in (None, False):  # on the device route both, whose reductions differ from the host's
        with monkeypatch.context() as patch:
            _fake_device(patch, fake)
            patch.setattr(train, "cuda_runtime", lambda: fake.cuda)
            model = _model()
            fit(model, X, y, loss=_FloatCrossEntropy(), optimizer=SGD(model.named_parameters(), lr=0.05), epochs=2,
                batch_size=16, rng=1, capture=capture)
            runs.append(model.named_parameters())
    assert fake.captures == 0
    for key, value in runs[1].items():
        np.testing.assert_array_equal(runs[0][key], value, err_msg=key)
    model = _model()
    with pytest.raises(ValueError, match="loss is a _FloatCrossEntropy, whose value_and_grad takes no as_array"):
        CapturedStep(model, _FloatCrossEntropy(), SGD(model.named_parameters(), lr=0.05))


def _armed_step(model, loss, make_optimizer):
    """A CapturedStep of ``model`` (its arrays made _HostRead views, then flattened) with the optimiser
    ``make_optimizer(params)``, whose runs are armed: a host read (or a guarded call) within one fails."""
    for _, layer in model.named_layers():
        for store in (layer.params, layer.buffers, layer._grad_slots):
            for key in store:
                store[key] = store[key].view(_HostRead)
    model.flatten_parameters()
    step = CapturedStep(model, loss, make_optimizer(model.named_parameters()))
    run = step._run

    def armed(r):
        _HostRead.armed = True
        try:
            run(r)
        finally:
            _HostRead.armed = False
    step._run = armed
    return step


@pytest.mark.parametrize("options", [{}, dict(no_decay=BIASES_AND_NORMS, clip_norm=0.5, weight_decay=1e-2)],
                         ids=["sgd", "sgd no_decay clip_norm, label smoothing"])
def test_captured_step_reads_no_value_on_the_host(monkeypatch, options):
    """The step function, on the device code path, never turns an array into a Python number (the clipping's
    norm and factor included); the same check catches train_step's loss (so the test can fail)."""
    xp = _HostReadNumpy("numpy")
    xp.lib, xp.linalg, xp.random = np.lib, np.linalg, np.random
    for name, module in list(sys.modules.items()):
        if name.startswith("shallow") and hasattr(module, "get_xp"):
            monkeypatch.setattr(module, "get_xp", lambda *arrays, **kwargs: xp)
    _fake_device(monkeypatch, _FakeCuda())
    model = _model()
    step = _armed_step(model, CrossEntropy(label_smoothing=0.1 if options else 0.0),
                       lambda params: SGD(params, lr=0.1, momentum=0.9, **options))
    x, y = (a.view(_HostRead) for a in _data(16))
    values = [step(x, y)[0] for _ in range(2)]
    assert values[1] < values[0]
    model.check_inputs = False
    _HostRead.armed = True
    try:
        with pytest.raises(AssertionError, match="read on the host"):
            train_step(model, CrossEntropy(), step.optimizer, x, y)
    finally:
        _HostRead.armed = False


#: The array routines that CuPy computes with cuBLAS (einsum: its contractions of two operands), which it
#: refuses to call while a stream is captured.
_CUBLAS_ROUTINES = frozenset({"matmul", "dot", "vdot", "inner", "tensordot", "einsum", "kron"})


def _refused_in_capture(name, fn):
    def call(*args, **kwargs):
        if _HostRead.armed:
            raise AssertionError(f"{name} was called within the step: CuPy calls cuBLAS for it, which it refuses "
                                 "in a stream capture (use shallow.cnn._gemm)")
        return fn(*args, **kwargs)
    return call


class _NoBlasNumpy(_HostReadNumpy):
    """_HostReadNumpy whose cuBLAS routines fail within the step (``_HostRead.armed``)."""

    def __getattr__(self, name):
        attr = super().__getattr__(name)
        return _refused_in_capture(name, attr) if name in _CUBLAS_ROUTINES else attr


class _NumpyHandle:
    """A stand-in for the cuBLAS handle of shallow.cnn._cublas: ``out <- alpha a @ b + beta out`` on numpy."""

    def __init__(self):
        self.calls = 0

    def matmul(self, a, b, out, alpha=1.0, beta=0.0):
        self.calls += 1
        o = _raw(out)
        product = alpha * np.matmul(_raw(a), _raw(b))
        o[...] = product if beta == 0 else product + beta * o
        return out


@pytest.mark.parametrize("arch, kwargs, loss, options", [
    ("vgg", {}, CrossEntropy, {}), ("resnet", {"blocks": 1}, SquareLoss, {}),
    # the clipping's norm is a sum of squares, not vdot (cuBLAS)
    ("vgg", {}, CrossEntropy, dict(no_decay=BIASES_AND_NORMS, clip_norm=0.5, decoupled=True)),
], ids=["vgg", "resnet", "vgg adamw no_decay clip_norm"])
def test_captured_step_computes_every_matrix_product_on_the_bound_cublas_handle(monkeypatch, arch, kwargs, loss,
                                                                                  options):
    """CuPy refuses to call cuBLAS while a stream is captured (NotImplementedError, and the step runs
    without a graph): on the device code path every product of the step (forward, backward,
    update) goes through the handle that CapturedStep binds, none through the array module."""
    from shallow.cnn import graph
    xp = _NoBlasNumpy("numpy")
    guarded_linalg = {name: _refused_in_capture(f"linalg.{name}", fn) for name, fn in vars(np.linalg).items()
                      if callable(fn) and not isinstance(fn, type) and not name.startswith("_")}
    xp.lib, xp.linalg, xp.random = np.lib, types.SimpleNamespace(**guarded_linalg), np.random
    for name, module in list(sys.modules.items()):
        if name.startswith("shallow") and hasattr(module, "get_xp"):
            monkeypatch.setattr(module, "get_xp", lambda *arrays, **kw: xp)
    ufunc = _HostRead.__array_ufunc__

    def guarded_ufunc(self, uf, method, *inputs, **kw):  # a @ b on arrays
        if uf.__name__ in _CUBLAS_ROUTINES and _HostRead.armed:
            raise AssertionError(f"{uf.__name__} (the @ operator) was called within the step")
        return ufunc(self, uf, method, *inputs, **kw)
    monkeypatch.setattr(_HostRead, "__array_ufunc__", guarded_ufunc)
    monkeypatch.setattr(_HostRead, "dot", _refused_in_capture("ndarray.dot", np.ndarray.dot), raising=False)
    _fake_device(monkeypatch, _FakeCuda())
    handle = _NumpyHandle()
    monkeypatch.setattr(graph._cublas, "Handle", lambda stream, xp: handle)
    model = build_model(arch, (8, 8), 10, width=4, rng=3, dtype=np.float32, **kwargs)
    step = _armed_step(model, loss(), lambda params: Adam(params, lr=1e-3, weight_decay=1e-3, **options))
    x, y = (a.view(_HostRead) for a in _data(16))
    values = [step(x, y)[0] for _ in range(3)]
    assert handle.calls > 0 and np.isfinite(values).all()


@pytest.mark.parametrize("captured", [True, False], ids=["CapturedStep", "train_step"])
def test_a_step_with_a_non_finite_loss_keeps_parameters_state_and_running_statistics(captured):
    # The batch-norm running statistics used to keep the failed batch's (NaN) moments
    x, y = _data(16)
    model = _model()
    assert any("running_mean" in k for k in model.named_buffers())
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)

    def plain(xb, yb):
        with _inputs_checked(model):  # as fit runs it: the model's own check would refuse the NaN
            return train_step(model, CrossEntropy(), opt, xb, yb)

    step = CapturedStep(model, CrossEntropy(), opt) if captured else plain
    step(x, y)
    params = {k: v.copy() for k, v in model.named_parameters().items()}
    buffers = {k: v.copy() for k, v in model.named_buffers().items()}
    momentum = [a.copy() for a in opt._written_arrays()]
    bad = x.copy()
    bad[3, 2, 2, 0] = np.nan
    with np.errstate(invalid="ignore"):
        value, _ = step(bad, y)
    assert np.isnan(value) and opt.t == 1
    for key, p in model.named_parameters().items():
        np.testing.assert_array_equal(p, params[key])
    for key, b in model.named_buffers().items():
        np.testing.assert_array_equal(b, buffers[key], err_msg=key)
    for a, b in zip(opt._written_arrays(), momentum, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(step(x, y)[0]) and opt.t == 2
    assert all(np.isfinite(b).all() for b in model.named_buffers().values())


def test_captured_step_refuses_dropout():
    model = _model(dropout=0.2)
    with pytest.raises(ValueError, match="dropout"):
        CapturedStep(model, CrossEntropy(), SGD(model.named_parameters(), lr=0.1))


def test_captured_step_refuses_an_optimiser_with_a_projection():
    model = _model()
    opt = ProjectedOptimizer(SGD(model.named_parameters(), lr=0.1), model, lambda m: None)
    with pytest.raises(ValueError, match="projection"):
        CapturedStep(model, CrossEntropy(), opt)


def test_captured_step_refuses_a_batch_that_is_not_an_array_of_the_model():
    model = _model()
    step = CapturedStep(model, CrossEntropy(), SGD(model.named_parameters(), lr=0.1))
    x, y = _data(4)
    with pytest.raises(ValueError, match="x must be a numpy array"):
        step(x.tolist(), y)
    with pytest.raises(ValueError, match="shapes"):
        step(x, y[:3])


def test_captured_step_on_device_arrays_without_a_device_is_refused(monkeypatch):
    from shallow.cnn import graph
    monkeypatch.setattr(_reduce, "on_device", lambda a: True)
    monkeypatch.setattr(graph, "cuda_runtime", lambda: None)
    model = _model()
    with pytest.raises(ValueError, match="no CUDA device answers"):
        CapturedStep(model, CrossEntropy(), SGD(model.named_parameters(), lr=0.1))


def test_inputs_checked_turns_off_the_checks_of_models_inside_a_wrapper():
    """A linearised model checks its batch through the Model it wraps: a recorded step must not
    (the check reads the device), and the checks come back afterwards."""
    from shallow.cnn import build_model, linearize
    from shallow.cnn.models import _inputs_checked

    wrapped = linearize(build_model("vgg", (8, 8, 1), 3, width=2, rng=0))
    checking = [layer for _, layer in wrapped.named_layers() if getattr(layer, "check_inputs", False)]
    assert checking  # the wrapped Model checks by default
    with _inputs_checked(wrapped):
        assert not any(getattr(layer, "check_inputs", False) for _, layer in wrapped.named_layers())
    assert all(layer.check_inputs for layer in checking)


@pytest.mark.parametrize("captured", [False, True], ids=["train_step", "CapturedStep"])
def test_training_steps_refuse_labels_that_would_broadcast_against_the_batch(captured):
    # (N, 1) labels passed CapturedStep's length check, and both steps skip the loss's value check:
    # they broadcast against the N rows into a wrong loss and a wrong update. Now refused, before
    # the update.
    model = _model()
    opt = SGD(model.named_parameters(), lr=0.1)
    step = CapturedStep(model, CrossEntropy(), opt) if captured else (
        lambda x, y: train_step(model, CrossEntropy(), opt, x, y))
    x, y = _data(4)
    before = {name: p.copy() for name, p in model.named_parameters().items()}
    with pytest.raises(ValueError, match=r"y must be a 1-dimensional array of class labels, got shape \(4, 1\)"):
        step(x, y[:, None])
    for name, p in model.named_parameters().items():
        np.testing.assert_array_equal(p, before[name])
