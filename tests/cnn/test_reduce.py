"""The split (chunked) row reductions of shallow.cnn._reduce equal the direct sums.

The chunked route is what a GPU runs; here it is forced on numpy (``split=True``) and compared
with sums computed independently in float64 by numpy's own reductions and products. Sizes are
chosen so that the rows do not divide into the chunks (a remainder is left over) and so that
the split really happens (M >= 2 MIN_CHUNK_ROWS).

Tolerance: 1e-12 relative to the sum of absolute values. The chunked and direct sums add the same
float64 terms in different orders; each differs from the exact sum by at most (M eps) times the
sum of absolute values, and pairwise summation keeps the actual error far below that.
"""

import numpy as np
import pytest

from shallow.cnn import BatchNorm2d, Conv2d, _reduce
from shallow.cnn._reduce import (
    MAX_CHUNKS,
    MIN_CHUNK_ROWS,
    chunks,
    dot_rows,
    gram_rows,
    sum_rows,
)

RTOL = 1e-12


def _assert_sums_close(actual, expected, scale):
    err = np.max(np.abs(np.asarray(actual) - expected) / np.maximum(scale, 1e-300))
    assert err < RTOL, f"relative error {err:.2e}"


@pytest.mark.parametrize("M", [1, 1023, 1024, 2047, 5 * 1024 + 17, 300 * 1024 + 5])
def test_chunks_cover_the_rows_with_fewer_left_over_than_chunks(M):
    S, m = chunks(M)
    assert 1 <= S <= MAX_CHUNKS
    assert S * m <= M < S * (m + 1)
    if M >= MIN_CHUNK_ROWS:
        assert m >= MIN_CHUNK_ROWS


@pytest.mark.parametrize("shape", [(3 * 1024 + 7, 5), (9, 17, 19, 3)])
def test_split_sum_rows_equals_the_direct_column_sum(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    expected = x.reshape(-1, shape[-1]).sum(axis=0)
    _assert_sums_close(sum_rows(x, split=True), expected, np.abs(x).reshape(-1, shape[-1]).sum(axis=0))


def test_split_sum_rows_of_a_strided_view_equals_the_sum_of_its_copy():
    grid = np.random.default_rng(1).standard_normal((12, 30, 30, 4))
    view = grid[:, :28, :27]  # a convolution's output: a window of its padded grid
    expected = np.ascontiguousarray(view).reshape(-1, 4).sum(axis=0)
    _assert_sums_close(sum_rows(view, split=True), expected, np.abs(view).reshape(-1, 4).sum(axis=0))


def test_split_dot_rows_equals_the_sum_of_products():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 4 * 1024 + 3, 6))
    _assert_sums_close(dot_rows(x, y, split=True), (x * y).sum(axis=0), (np.abs(x * y)).sum(axis=0))


@pytest.mark.parametrize("M", [2 * 1024 + 11, 40 * 1024])
def test_split_gram_rows_equals_a_transpose_times_b(M):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((M, 7)), rng.standard_normal((M, 5))
    out = np.full((7, 5), np.nan)  # overwritten, never read
    gram_rows(a, b, out, split=True)
    _assert_sums_close(out, np.einsum("ri,rj->ij", a, b), np.abs(a).T @ np.abs(b))


def test_split_gram_rows_of_column_slices_writes_into_a_column_slice():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3 * 1024 + 1, 6)), rng.standard_normal((3 * 1024 + 1, 8))
    out = np.zeros((3, 8))
    gram_rows(a[:, 3:], b[:, 4:], out[:, 4:], split=True)
    assert np.all(out[:, :4] == 0)
    _assert_sums_close(out[:, 4:], a[:, 3:].T @ b[:, 4:], np.abs(a[:, 3:]).T @ np.abs(b[:, 4:]))


DEVICE_ROUTE_CASES = {
    "plain": dict(kernel_size=3, padding=1),
    "groups": dict(kernel_size=3, padding=1, groups=2),
    "dilated": dict(kernel_size=3, dilation=(2, 1), padding=(2, 1)),
    "same, even kernel": dict(kernel_size=2, padding="same"),
}


@pytest.mark.parametrize("case", list(DEVICE_ROUTE_CASES))
def test_conv_and_batch_norm_on_the_device_route_equal_the_host_route(case, monkeypatch):
    """The layers' device code (im2col columns from one strided copy, split-K weight gradients, the
    input gradient by taps, chunked channel sums), run on numpy by declaring its arrays device
    arrays, against the host code (checked against central differences elsewhere)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 20, 20, 16))  # about 6 * 21 * 21 rows: split into 2 chunks
    results = {}
    for route in ("host", "device"):
        if route == "device":
            monkeypatch.setattr(_reduce, "on_device", lambda a: True)
        conv = Conv2d(16, 8, rng=0, **DEVICE_ROUTE_CASES[case])
        bn = BatchNorm2d(16)
        y = conv.forward(x)
        dy = np.cos(np.arange(y.size)).reshape(y.shape)  # any output gradient
        dx = conv.backward(dy)
        z = bn.forward(x)
        dz = bn.backward(x[..., ::-1] * 2)
        results[route] = (y, dx, conv.grads["W"], conv.grads["b"], z, dz, bn.grads["gamma"], bn.grads["beta"])
    for host, device in zip(results["host"], results["device"], strict=True):
        np.testing.assert_allclose(device, host, rtol=1e-12, atol=1e-12 * np.max(np.abs(host)))


def test_training_steps_on_the_device_route_equal_the_host_route(monkeypatch):
    """Two SGD steps of a batch-normalised VGG through the device code (run on numpy) against the
    host code: the layers' device routes compose into the same training step."""
    from shallow.cnn import SGD, CrossEntropy, build_model
    from shallow.cnn.train import train_step

    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((8, 28, 28, 1)), rng.integers(0, 10, 8)  # R = 8 * 29 * 29: 6 chunks
    params = {}
    for route in ("host", "device"):
        if route == "device":
            monkeypatch.setattr(_reduce, "on_device", lambda a: True)
        model = build_model("vgg", (28, 28, 1), 10, rng=0, width=4)
        opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            train_step(model, CrossEntropy(), opt, x, y)
        params[route] = model.named_parameters()
    for name, host in params["host"].items():
        np.testing.assert_allclose(params["device"][name], host, rtol=1e-10, atol=1e-12, err_msg=name)


def test_host_float32_row_sums_of_a_large_batch_stay_near_float32_rounding():
    # sum_rows and dot_rows over N H W = 2^16 rows of a float32 batch with a nonzero mean (a convolution's
    # output), against float64 sums of the same numbers. Tolerance 4e-7 = 6.7 eps_32: a sum per image,
    # then in float64 across images; one float32 accumulation over all rows gave 4e-6 and 2e-6.
    rng = np.random.default_rng(0)
    x = (2.0 + rng.standard_normal((64, 32, 32, 4))).astype(np.float32)
    y = (1.0 + rng.standard_normal((64, 32, 32, 4))).astype(np.float32)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    for actual, expected in ((sum_rows(x), x64.sum(axis=(0, 1, 2))),
                             (sum_rows(x[:, 1:, :-1]), x64[:, 1:, :-1].sum(axis=(0, 1, 2))),  # a strided view
                             (dot_rows(x, y), np.einsum("abcz,abcz->z", x64, y64))):
        assert actual.dtype == np.float32
        err = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
        assert err < 4e-7, f"relative error {err:.2e}"
