"""How often a training step and a particle flow wait for the device: counted on the fake device.

On a GPU every read of a device value by the host (``float(x)``, ``bool(x)``, ``x.item()``, ``x.get()``,
a boolean mask, ...) makes the host wait until the device has run everything queued before it: the
kernels of the rest of the step cannot be launched meanwhile, and the device then idles while they
are. The statements checked here are the documented numbers of such reads (synchronisations), as
counted by ``fake_device.count_syncs`` (tests/fake_device.py) on the device code path:

* ``train_step(..., check=False)``: 1 a step, the loss that decides the update; ``check=True`` adds
  2, the range of the labels (their min and max);
* ``fit``: 3 before the first step (the data are checked once: a scan of X for NaN and the labels'
  min and max), then 1 a step (its loss, which the divergence guard reads) and 1 at the end of every
  epoch (the count of correct predictions), nothing else, augmentation and dropout included;
* ``gradient_flow`` on an :class:`~shallow.flows.EmpiricalRisk`: 1 per evaluation of the risk (the
  risk, which the flow's divergence guard reads), whatever the number of sample chunks.

The counts are exact (integers, no tolerance). They need the fake device (``SHALLOW_FAKE_DEVICE=1``):
a real GPU has no counter, and there the tests are skipped.
"""

import numpy as np
import pytest

from shallow.backend import to_device, to_numpy
from shallow.cnn import BIASES_AND_NORMS, SGD, Adam, CrossEntropy, build_model
from shallow.cnn.data import Augment
from shallow.cnn.optim import Cosine
from shallow.cnn.train import fit, train_step

pytestmark = pytest.mark.gpu

# fit and its device path against fit on the host, in float64: the device path sums in other orders (split
# reductions), a few hundred ulps of the largest intermediate; a wrong or missing update is off by O(1)
RTOL = 1e-9


@pytest.fixture
def count_syncs(_fake_device):
    """fake_device.count_syncs, with the fake device installed; skipped on a real GPU (no counter there)."""
    if _fake_device is None:
        pytest.skip("the synchronisations are counted by the fake device only (SHALLOW_FAKE_DEVICE=1)")
    import fake_device
    return fake_device.count_syncs


def _data(n=16, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8, 8, 1)).astype(dtype), rng.integers(0, 10, n)


def _total(syncs) -> int:
    return sum(syncs.values())


def _on_device(dtype=np.float64, **kwargs):
    model = build_model("vgg", (8, 8, 1), 10, width=4, rng=0, dtype=dtype, **kwargs).to("gpu")
    model.check_inputs = False  # the data are checked once by the caller, as the benchmark and fit do
    return model


@pytest.mark.parametrize("check, expected", [(False, 1), (True, 3)])
def test_train_step_reads_the_loss_once_and_the_labels_range_when_asked(count_syncs, check, expected):
    # bound 1: the float loss, which decides whether to update; the labels' check adds their min and max
    model = _on_device()
    opt = SGD(model.named_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = (to_device(a, "gpu") for a in _data())
    with count_syncs() as syncs:
        for _ in range(3):
            train_step(model, CrossEntropy(), opt, x, y, check=check)
    assert _total(syncs) == 3 * expected, dict(syncs)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: SGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4, no_decay=BIASES_AND_NORMS, clip_norm=0.1),
    lambda p: Adam(p, lr=1e-3, weight_decay=1e-2, decoupled=True, no_decay=BIASES_AND_NORMS, clip_norm=0.1),
], ids=["sgd", "adamw"])
def test_clipping_weight_decay_on_some_parameters_and_label_smoothing_read_nothing_more(count_syncs, make_optimizer):
    # the clipping factor min(1, c / (|g| + 1e-6)) is a device scalar the update multiplies by, the decay a
    # vector (or mask) built once: still bound 1 a step, the loss. The optimiser's construction reads nothing
    # either (the mask is made on the host, then copied)
    model = _on_device()
    with count_syncs() as syncs:
        opt = make_optimizer(model.named_parameters())
    assert opt._flat is not None and opt.clip_norm == 0.1 and _total(syncs) == 0, dict(syncs)
    x, y = (to_device(a, "gpu") for a in _data())
    with count_syncs() as syncs:
        for _ in range(3):
            train_step(model, CrossEntropy(label_smoothing=0.1), opt, x, y, check=False)
    assert _total(syncs) == 3, dict(syncs)


def _fit(device, epochs, **kwargs):
    model = build_model("vgg", (8, 8, 1), 10, width=4, rng=0, dropout=0.2).to(device)
    opt = SGD(model.named_parameters(), lr=Cosine(0.05, 20), momentum=0.9, weight_decay=1e-4)
    X, y = _data(40, seed=1)
    history = fit(model, to_device(X, device), to_device(y, device), optimizer=opt, epochs=epochs, batch_size=8,
                  rng=2, **kwargs)
    return model, opt, history


def test_fit_reads_the_device_once_a_step_and_once_an_epoch(count_syncs):
    # 40 images in batches of 8: 5 steps an epoch, each reading its loss, and the epoch's count of correct
    # predictions; plus 3 before the first step (X scanned for NaN, the labels' min and max). Augmentation
    # (it does not scan the batches fit has checked) and dropout read nothing
    for epochs in (1, 3):
        with count_syncs() as syncs:
            _fit("gpu", epochs, augment=Augment(shift=1, rotation=5.0))
        assert _total(syncs) == 3 + epochs * (5 + 1), dict(syncs)


def test_fit_on_the_device_matches_fit_on_the_host(count_syncs):
    # the same steps: the labels checked once and the augmented batches not scanned change no number
    runs = {device: _fit(device, 2, augment=Augment(shift=1)) for device in ("cpu", "gpu")}
    (host, opt_h, hist_h), (dev, opt_d, hist_d) = runs["cpu"], runs["gpu"]
    np.testing.assert_allclose(hist_d.loss, hist_h.loss, rtol=RTOL)
    assert hist_d.accuracy == hist_h.accuracy and hist_d.lr == hist_h.lr and opt_d.t == opt_h.t == 10
    for name, p in host.named_parameters().items():
        np.testing.assert_allclose(to_numpy(dev.named_parameters()[name]), p, rtol=0,
                                   atol=RTOL * np.abs(p).max(), err_msg=name)


def test_fit_on_the_device_stops_before_the_diverging_batch_as_on_the_host(count_syncs):
    # lr = 1e30 in float32 (as tests/cnn/test_cnn_train.py): the first step sends the weights to ~1e30 and the
    # second batch's loss is not finite. Its update is skipped on the device as on the host: the model and the
    # step counter are the host's
    results = {}
    for device in ("cpu", "gpu"):
        model = build_model("vgg", (8, 8, 1), 10, width=3, rng=0, dtype=np.float32).to(device)
        opt = SGD(model.named_parameters(), lr=1e30)
        X, y = _data(40, seed=1, dtype=np.float32)
        history = fit(model, to_device(X, device), to_device(y, device), optimizer=opt, epochs=2, batch_size=8,
                      rng=0, on_divergence="stop")
        arrays = {**model.named_parameters(), **model.named_buffers()}
        results[device] = history, opt.t, {name: to_numpy(a) for name, a in arrays.items()}
    (hist_h, t_h, arrays_h), (hist_d, t_d, arrays_d) = results["cpu"], results["gpu"]
    assert hist_h.diverged and hist_d.diverged and "at epoch 1, batch 2 of 5" in hist_h.message
    assert hist_d.message == hist_h.message and t_d == t_h == 1
    for name, a in arrays_h.items():
        assert np.isfinite(arrays_d[name]).all(), name
        # the first step's float32 sums in other orders: 1e-4 of the largest entry (a few thousand terms of eps32)
        np.testing.assert_allclose(arrays_d[name], a, rtol=0, atol=1e-4 * np.abs(a).max(), err_msg=name)


@pytest.mark.parametrize("method, evaluations", [("euler", 1), ("rk4", 4)])
def test_gradient_flow_reads_the_risk_once_per_evaluation(count_syncs, method, evaluations):
    # EmpiricalRisk over 2048 samples in 8 chunks of 256 rows: bound 1 read per evaluation of the risk (the
    # value the flow's divergence guard checks), not one per chunk; the difference of two runs cancels the reads
    # made once (checks of the particles, the records)
    from fake_device import fake

    from shallow.flows import EmpiricalRisk, gradient_flow
    from shallow.networks import TwoLayer

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 5))
    risk = EmpiricalRisk(fake.asarray(X), fake.asarray(np.sin(X[:, 0])), chunk_bytes=8 * 8 * 256)
    host = TwoLayer.init(8, 5, rng=1, activation="relu")
    counts = []
    for steps in (4, 8):
        net = TwoLayer(fake.asarray(host.a), fake.asarray(host.W), gamma=host.gamma, activation="relu")
        with count_syncs() as syncs:
            gradient_flow(net, risk, steps=steps, step_size=0.01, method=method, record_every=1000)
        counts.append(_total(syncs))
    assert counts[1] - counts[0] == 4 * evaluations
