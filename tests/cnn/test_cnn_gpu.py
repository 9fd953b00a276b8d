"""The CNN on CuPy computes what it computes on numpy: the same numbers to float64 round-off.

The numpy path is checked against independent references in the other files (central differences,
nested-loop convolutions, hand-computed optimiser steps); these tests carry those checks over to the
device by comparing one device run with one host run of the same network, data and seed. They run
only where a GPU answers (``gpu`` marker).

Tolerance: 1e-9 relative in float64. Both sides sum the same products in different orders (cuBLAS
against OpenBLAS, and different reduction trees), so they agree to a few hundred ulps of the largest
intermediate, far inside 1e-9; a wrong index or a missing term breaks it by O(1).
"""

import numpy as np
import pytest

from shallow.backend import to_device, to_numpy
from shallow.cnn import SGD, Adam, CrossEntropy, SquareLoss, build_model, linearize
from shallow.cnn.train import train_step

pytestmark = pytest.mark.gpu

RTOL = 1e-9


def _batch(in_shape, n=16, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *in_shape))
    y = rng.integers(0, n_classes, n)
    return x, y


def _assert_close(device_value, host_value, what, rtol=RTOL):
    host_value = np.asarray(host_value, dtype=np.float64)
    scale = max(float(np.max(np.abs(host_value))), 1e-300)
    err = float(np.max(np.abs(to_numpy(device_value).astype(np.float64) - host_value))) / scale
    assert err < rtol, f"{what}: device and host differ by {err:.2e} (relative to the largest entry)"


@pytest.mark.parametrize("arch, kwargs, in_shape", [
    ("vgg", {"width": 4}, (8, 8, 1)),
    ("resnet", {"width": 4, "blocks": 1}, (8, 8, 1)),
    ("vgg", {"width": 8, "batch_norm": False}, (28, 28, 1)),
])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_steps_on_cupy_match_numpy(arch, kwargs, in_shape, optimizer):
    x, y = _batch(in_shape)
    results = {}
    for device in ("cpu", "gpu"):
        model = build_model(arch, in_shape, 10, rng=0, **kwargs).to(device)
        params = model.named_parameters()
        opt = (SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4) if optimizer == "sgd"
               else Adam(params, lr=1e-3))
        loss = CrossEntropy()
        xd, yd = to_device(x, device), to_device(y, device)
        values = [train_step(model, loss, opt, xd, yd)[0] for _ in range(3)]
        model.eval()
        results[device] = (values, {k: to_numpy(v) for k, v in model.named_parameters().items()},
                           to_numpy(model.forward(xd)))
    (v_cpu, p_cpu, out_cpu), (v_gpu, p_gpu, out_gpu) = results["cpu"], results["gpu"]
    np.testing.assert_allclose(v_gpu, v_cpu, rtol=RTOL)
    for name in p_cpu:
        _assert_close(p_gpu[name], p_cpu[name], f"parameter {name} after 3 steps")
    _assert_close(out_gpu, out_cpu, "eval-mode outputs")


def test_tangent_model_on_cupy_matches_numpy():
    # linearize: the forward-mode (jvp) path of every layer, and its backward.
    x, y = _batch((8, 8, 1), n=8)
    outs = {}
    for device in ("cpu", "gpu"):
        model = build_model("vgg", (8, 8, 1), 10, rng=1, width=4, batch_norm=False,
                            centering="frozen", alpha=10.0).to(device)
        lin = linearize(model)
        opt = SGD(lin.named_parameters(), lr=0.01)
        loss = SquareLoss(scale=1e-2)
        xd, yd = to_device(x, device), to_device(y, device)
        for _ in range(2):
            train_step(lin, loss, opt, xd, yd)
        outs[device] = to_numpy(lin.forward(xd))
    _assert_close(outs["gpu"], outs["cpu"], "tangent-model outputs after 2 steps")


@pytest.mark.parametrize("layout", ["C", "F", "transposed", "row-slice"])
def test_device_gemm_accumulates_out_plus_a_times_b(layout):
    import cupy

    from shallow.cnn._gemm import gemm
    rng = np.random.default_rng(3)
    a, b, out = rng.standard_normal((37, 19)), rng.standard_normal((19, 23)), rng.standard_normal((37, 23))
    expected = out + a @ b  # the defining identity, on the host
    if layout == "F":
        ad, bd = cupy.asfortranarray(cupy.asarray(a)), cupy.asfortranarray(cupy.asarray(b))
    elif layout == "transposed":
        ad, bd = cupy.asarray(a.T.copy()).T, cupy.asarray(b.T.copy()).T
    elif layout == "row-slice":
        ad, bd = cupy.asarray(np.vstack([a, a]))[37:], cupy.asarray(b)
    else:
        ad, bd = cupy.asarray(a), cupy.asarray(b)
    outd = cupy.asarray(out)
    result = gemm(ad, bd, outd, beta=1.0)
    assert result is outd
    _assert_close(outd, expected, f"out + a @ b with {layout} operands")


def test_split_row_reductions_on_cupy_match_the_host_sums():
    import cupy

    from shallow.cnn._reduce import dot_rows, gram_rows, sum_rows
    rng = np.random.default_rng(4)
    M = 5 * 1024 + 13  # five chunks and 13 rows left over
    a, b = rng.standard_normal((M, 7)), rng.standard_normal((M, 5))
    grid = rng.standard_normal((9, 30, 30, 4))
    ad, bd, gridd = cupy.asarray(a), cupy.asarray(b), cupy.asarray(grid)
    _assert_close(sum_rows(ad), a.sum(axis=0), "column sums")
    _assert_close(sum_rows(gridd[:, :28, :27]), grid[:, :28, :27].sum(axis=(0, 1, 2)), "sums of a strided view")
    _assert_close(dot_rows(ad[:, :5], bd), (a[:, :5] * b).sum(axis=0), "column dot products")
    outd = cupy.full((7, 5), cupy.nan)
    _assert_close(gram_rows(ad, bd, outd, split=True), a.T @ b, "a^T b split over row chunks")


def _small_vgg(device, batch_norm=False):
    return build_model("vgg", (8, 8, 1), 10, rng=2, width=4, batch_norm=batch_norm).to(device)


def test_robustness_on_cupy_matches_numpy():
    # deformations, exact convolution singular values, Lipschitz bounds, local constants and PGD:
    # the device run against the host run of the same network and data.
    from shallow.cnn import (conv_singular_values, deform, lipschitz_upper_bound, local_lipschitz, pgd,
                             random_displacement)
    x, y = _batch((8, 8, 1), n=6)
    tau = random_displacement((8, 8), grad_norm=0.2, scale=2.0, rng=0)
    W = np.random.default_rng(4).standard_normal((3, 3, 2, 3))
    res = {}
    for device in ("cpu", "gpu"):
        model = _small_vgg(device)
        model.eval()
        xd, yd = to_device(x, device), to_device(y, device)
        res[device] = {
            "deform": to_numpy(deform(xd, to_device(tau, device))),
            "svals": to_numpy(conv_singular_values(to_device(W, device), (8, 8))),
            "bound": float(lipschitz_upper_bound(model, (8, 8, 1), bound="averaged", method="fft")),
            "local": float(local_lipschitz(model, xd)),
            "pgd": to_numpy(pgd(model, xd, yd, 0.1, norm="2", steps=3)),
        }
    for key in res["cpu"]:
        _assert_close(res["gpu"][key], res["cpu"][key], f"robustness: {key}")


def test_group_convolutions_on_cupy_match_numpy():
    # the p4 network's forward and its backward (parameter gradients) on the device and the host
    from shallow.cnn import CrossEntropy, Model, p4_cnn
    x, y = _batch((8, 8, 1), n=4)
    res = {}
    for device in ("cpu", "gpu"):
        model = Model(p4_cnn((8, 8, 1), 10, width=2, rng=0), (8, 8, 1), 10).to(device)
        xd, yd = to_device(x, device), to_device(y, device)
        out = model.forward(xd)
        _, dout = CrossEntropy().value_and_grad(out, yd)
        model.backward(dout)
        res[device] = (to_numpy(out), {k: to_numpy(g) for k, g in model.named_gradients().items()})
    _assert_close(res["gpu"][0], res["cpu"][0], "p4 outputs")
    for name, g in res["cpu"][1].items():
        _assert_close(res["gpu"][1][name], g, f"p4 gradient {name}")


def test_to_gpu_packs_parameters_so_the_optimizer_updates_one_array():
    from shallow.cnn.optim import _flat_base
    model = build_model("vgg", (8, 8, 1), 10, rng=0, width=4).to("gpu")
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    assert opt._flat is not None, "CuPy views did not tile one array: the optimiser updates parameter by parameter"
    x, y = _batch((8, 8, 1))
    train_step(model, CrossEntropy(), opt, to_device(x, "gpu"), to_device(y, "gpu"))
    assert _flat_base(list(model.named_gradients().values())) is not None


@pytest.mark.cuda
@pytest.mark.parametrize("dtype, rtol", [(np.float64, RTOL), (np.float32, 1e-4)])
def test_fused_batch_norm_kernels_on_cupy_match_the_unfused_layer(monkeypatch, dtype, rtol):
    """SHALLOW_FUSED_KERNELS=1 compiles shallow.cnn._fused's formulas into CuPy kernels, in each dtype
    (T = double or float, with float64 scalars). Tolerance in float32: the kernels evaluate their
    mixed float/double expressions in double and round once, the layer rounds every float32
    operation; a few ulps of the largest entry apart (1e-4 is 800 float32 ulps), a wrong term O(1)."""
    from shallow.cnn import BatchNorm2d
    rng = np.random.default_rng(5)
    x = to_device((rng.standard_normal((6, 9, 9, 8)) * 2 + 1).astype(dtype), "gpu")
    dy = to_device(rng.standard_normal((6, 9, 9, 8)).astype(dtype), "gpu")
    results = {}
    for fused in ("0", "1"):
        monkeypatch.setenv("SHALLOW_FUSED_KERNELS", fused)
        bn = BatchNorm2d(8, momentum=0.3, dtype=dtype).to("gpu")
        for _ in range(2):
            y = bn.forward(x)
            dx = bn.backward(dy)
        results[fused] = [to_numpy(v) for v in (y, dx, bn.grads["gamma"], bn.grads["beta"],
                                                 bn.buffers["running_mean"], bn.buffers["running_var"])]
    for name, u, v in zip(["y", "dx", "dgamma", "dbeta", "running mean", "running var"], results["1"], results["0"],
                          strict=True):
        assert u.dtype == dtype, f"fused {name} has dtype {u.dtype}"
        _assert_close(u, v, f"fused {name}", rtol)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_ceil_mode_pooling_and_amsgrad_on_cupy_match_numpy(pool):
    # ceil_mode: windows past the padded input (6 + 2 - 3 = 5 columns at stride 2: 4 windows, the last one column
    # past the padding), whose average divides by a device array of per-window counts; AMSGrad's maximum on
    # the flat parameters of a model moved to the device
    from shallow.cnn import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Sequential
    x, y = _batch((7, 6, 2), n=4, n_classes=3)
    results = {}
    for device in ("cpu", "gpu"):
        layer = (MaxPool2d if pool == "max" else AvgPool2d)(3, stride=2, padding=1, ceil_mode=True)
        model = Sequential(Conv2d(2, 3, 3, padding=1, rng=0), layer, Flatten(), Linear(4 * 4 * 3, 3, rng=1)).to(device)
        opt = Adam(model.named_parameters(), lr=1e-2, amsgrad=True)
        assert device == "cpu" or opt._flat is not None
        xd, yd = to_device(x, device), to_device(y, device)
        grads = [to_device(10.0 ** -k * np.ones(1), device) for k in range(3)]  # shrinking losses: v_max matters
        for scale in grads:
            out = model.forward(xd)
            _, dout = CrossEntropy().value_and_grad(out, yd)
            model.backward(dout * scale)
            opt.step(model.named_gradients())
        results[device] = (to_numpy(model.forward(xd)), {k: to_numpy(v) for k, v in model.named_parameters().items()})
    _assert_close(results["gpu"][0], results["cpu"][0], "outputs after 3 AMSGrad steps")
    for name, value in results["cpu"][1].items():
        _assert_close(results["gpu"][1][name], value, f"parameter {name}")


@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adam amsgrad"])
def test_captured_steps_on_cupy_replay_the_steps_of_train_step(optimizer):
    """CapturedStep records the step as a CUDA graph (no fallback warning) and its replays give the
    numbers of the steps run launch by launch, with a learning rate that changes every step."""
    import warnings

    from shallow.cnn import CapturedStep, Cosine
    x, y = _batch((28, 28, 1), n=32)
    xd, yd = to_device(x, "gpu"), to_device(y, "gpu")
    results = {}
    for captured in (False, True):
        model = build_model("vgg", (28, 28, 1), 10, rng=0, width=8).to("gpu")
        model.check_inputs = False
        params = model.named_parameters()
        opt = (SGD(params, lr=Cosine(0.05, 6), momentum=0.9, weight_decay=1e-4) if optimizer == "sgd"
               else Adam(params, lr=Cosine(1e-3, 6), amsgrad=optimizer == "adam amsgrad"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            step = CapturedStep(model, CrossEntropy(), opt) if captured else None
            values = [(step(xd, yd) if captured else train_step(model, CrossEntropy(), opt, xd, yd))[0]
                      for _ in range(5)]
        if captured:
            assert step.recorded == 1
        results[captured] = (values, {k: to_numpy(v) for k, v in model.named_parameters().items()},
                             {k: to_numpy(v) for k, v in model.named_buffers().items()})
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=RTOL)
    for k in (1, 2):
        for name, value in results[False][k].items():
            _assert_close(results[True][k][name], value, f"captured {name}")


@pytest.mark.cuda
def test_captured_steps_with_fused_batch_norm_kernels_replay_the_steps_of_train_step(monkeypatch):
    """SHALLOW_FUSED_KERNELS=1 within a recorded step: the fused kernels (compiled in the first
    step, their float scalars constants of the graph) give the numbers of train_step with them."""
    import warnings

    from shallow.cnn import CapturedStep
    monkeypatch.setenv("SHALLOW_FUSED_KERNELS", "1")
    x, y = _batch((8, 8, 1), n=16)
    xd, yd = to_device(x, "gpu"), to_device(y, "gpu")
    results = {}
    for captured in (False, True):
        model = build_model("vgg", (8, 8, 1), 10, rng=0, width=4).to("gpu")
        model.check_inputs = False
        opt = SGD(model.named_parameters(), lr=0.05, momentum=0.9)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            step = CapturedStep(model, CrossEntropy(), opt) if captured else None
            values = [(step(xd, yd) if captured else train_step(model, CrossEntropy(), opt, xd, yd))[0]
                      for _ in range(4)]
        if captured:
            assert step.recorded == 1
        results[captured] = (values, {k: to_numpy(v) for k, v in model.named_buffers().items()})
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=RTOL)
    for name, value in results[False][1].items():
        _assert_close(results[True][1][name], value, f"captured fused {name}")


@pytest.mark.cuda
def test_captured_step_on_cupy_keeps_the_parameters_when_the_loss_is_nan():
    from shallow.cnn import CapturedStep
    x, y = _batch((8, 8, 1))
    model = build_model("vgg", (8, 8, 1), 10, rng=0, width=4).to("gpu")
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    step = CapturedStep(model, CrossEntropy(), opt)
    xd, yd = to_device(x, "gpu"), to_device(y, "gpu")
    for _ in range(3):
        step(xd, yd)  # run, record and replay
    before = [to_numpy(a) for a in opt._written_arrays()]
    x[0, 0, 0, 0] = np.nan
    value, _ = step(to_device(x, "gpu"), yd)
    assert np.isnan(value) and opt.t == 3 and step.recorded == 1
    for a, b in zip(opt._written_arrays(), before, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)


@pytest.mark.cuda
def test_captured_fit_on_cupy_matches_fit(monkeypatch):
    """fit(capture=True), and fit's default on a GPU, with a smaller last batch (two recordings, no fallback
    warning) against fit launch by launch on the GPU."""
    import warnings

    from shallow.cnn import CapturedStep, fit, train
    made = []
    monkeypatch.setattr(train, "CapturedStep", lambda *args: made.append(CapturedStep(*args)) or made[-1])
    x, y = _batch((8, 8, 1), n=40)
    params = {}
    for capture in (False, True, None):
        model = build_model("vgg", (8, 8, 1), 10, rng=0, width=4).to("gpu")
        opt = SGD(model.named_parameters(), lr=0.05, momentum=0.9)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fit(model, to_device(x, "gpu"), to_device(y, "gpu"), optimizer=opt, epochs=3, batch_size=16, rng=0,
                capture=capture)
        params[capture] = {k: to_numpy(v) for k, v in model.named_parameters().items()}
    assert [step.recorded for step in made] == [2, 2]
    for capture in (True, None):
        for name, value in params[False].items():
            _assert_close(params[capture][name], value, f"fit(capture={capture}) {name}")


@pytest.mark.cuda
def test_cublas_handle_on_cupy_matches_matmul():
    """shallow.cnn._cublas's ctypes calls (the layouts its host tests check) against numpy's products."""
    import cupy

    from shallow.cnn._cublas import Handle
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = Handle(stream, cupy)
    rng = np.random.default_rng(3)
    # (base of a, view of it, base of b, view of it): the views are taken on each device
    cases = [
        ((6, 9), lambda x: x, (9, 4), lambda x: x),  # C-ordered
        ((9, 6), lambda x: x.T, (4, 9), lambda x: x.T),  # transposed views
        ((40, 20), lambda x: x[:, 3:12], (9, 5), lambda x: x),  # a column slice (a group of channels)
        ((40, 20), lambda x: x[:36].reshape(3, 12, 20)[:, :, 2:8].swapaxes(1, 2), (3, 12, 5), lambda x: x),  # gram_rows
    ]
    for dtype in (np.float64, np.float32):
        for shape_a, view_a, shape_b, view_b in cases:
            base_a, base_b = rng.standard_normal(shape_a).astype(dtype), rng.standard_normal(shape_b).astype(dtype)
            a, b = view_a(base_a), view_b(base_b)
            out = rng.standard_normal((*a.shape[:-1], b.shape[-1])).astype(dtype)
            expected = 0.5 * a.astype(np.float64) @ b + 2.0 * out
            ad, bd, outd = view_a(to_device(base_a, "gpu")), view_b(to_device(base_b, "gpu")), to_device(out, "gpu")
            stream.wait_event(cupy.cuda.get_current_stream().record())  # the copies before the product
            with stream:
                handle.matmul(ad, bd, outd, alpha=0.5, beta=2.0)
            stream.synchronize()
            tol = 1e-12 if dtype == np.float64 else 1e-5
            np.testing.assert_allclose(to_numpy(outd), expected, rtol=tol, atol=tol * np.abs(expected).max())


@pytest.mark.cuda
def test_cublas_handle_products_are_recorded_in_a_cuda_graph():
    """The premise of CapturedStep: a product on our handle is captured (CuPy's own cuBLAS calls
    are refused there) and each replay reads the inputs' current values."""
    import cupy

    from shallow.cnn._cublas import Handle
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = Handle(stream, cupy)
    rng = np.random.default_rng(4)
    a, b = to_device(rng.standard_normal((64, 32)), "gpu"), to_device(rng.standard_normal((32, 16)), "gpu")
    out = cupy.zeros((64, 16))
    stream.wait_event(cupy.cuda.get_current_stream().record())
    with stream:
        handle.matmul(a, b, out)
        stream.begin_capture()
        handle.matmul(a, b, out, beta=1.0)
        graph = stream.end_capture()
        out[...] = 0
        a *= 3
        graph.launch(stream)
        graph.launch(stream)
    stream.synchronize()
    np.testing.assert_allclose(to_numpy(out), 2 * to_numpy(a) @ to_numpy(b), rtol=1e-12)


@pytest.mark.cuda
def test_cublas_handle_empty_sum_scales_the_result_by_beta():
    """a @ b with an inner dimension of 0 is the zero matrix: out <- beta out, without calling cuBLAS."""
    import cupy

    from shallow.cnn._cublas import Handle
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = Handle(stream, cupy)
    out = cupy.ones((3, 4))
    with stream:
        handle.matmul(cupy.zeros((3, 0)), cupy.zeros((0, 4)), out, beta=2.0)
    stream.synchronize()
    np.testing.assert_array_equal(to_numpy(out), np.full((3, 4), 2.0))


@pytest.mark.cuda
def test_cublas_handle_writes_through_an_out_whose_rows_are_not_contiguous():
    """out a transposed view (its rows strided): cuBLAS writes a contiguous temporary, copied back
    into out; and a batch (S, M, N) of column slices, written in place with its leading dimension."""
    import cupy

    from shallow.cnn._cublas import Handle
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = Handle(stream, cupy)
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((3, 7, 5)), rng.standard_normal((3, 5, 4))
    base_t, base_w = rng.standard_normal((4, 7)), rng.standard_normal((3, 7, 9))
    expected_t = 2.0 * a[0] @ b[0] - base_t.T  # out <- 2 a b - out
    expected_w = base_w.copy()
    expected_w[:, :, 3:7] = a @ b
    ad, bd, td, wd = (to_device(v, "gpu") for v in (a, b, base_t, base_w))
    stream.wait_event(cupy.cuda.get_current_stream().record())
    with stream:
        handle.matmul(ad[0], bd[0], td.T, alpha=2.0, beta=-1.0)
        handle.matmul(ad, bd, wd[:, :, 3:7])
    stream.synchronize()
    np.testing.assert_allclose(to_numpy(td).T, expected_t, rtol=1e-12, atol=1e-12 * np.abs(expected_t).max())
    np.testing.assert_allclose(to_numpy(wd), expected_w, rtol=1e-12, atol=1e-12 * np.abs(expected_w).max())
