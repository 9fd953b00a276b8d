"""Losses against scipy's logsumexp and finite differences; optimiser steps against hand-computed updates."""

import math

import numpy as np
import pytest
from scipy.special import logsumexp

from shallow.cnn import SGD, Adam, Constant, Cosine, CrossEntropy, SquareLoss, StepDecay, log_softmax
from shallow.cnn.optim import BIASES_AND_NORMS, PerEpoch, ReduceOnPlateau, clip_grad_norm


# --------------------------------------------------------------------------- losses
def test_cross_entropy_is_mean_of_logsumexp_minus_true_logit():
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((7, 5)), rng.integers(0, 5, 7)
    expected = np.mean(logsumexp(z, axis=1) - z[np.arange(7), y])
    value, _ = CrossEntropy().value_and_grad(z, y)
    assert value == pytest.approx(expected, rel=1e-14)
    assert CrossEntropy(scale=0.25)(z, y) == pytest.approx(0.25 * expected, rel=1e-14)


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [800.0, 800.0, 0.0]])
    value, grad = CrossEntropy().value_and_grad(z, np.array([1, 0]))
    # row 0: logsumexp = 1e4, loss 1e4; row 1: log 2
    assert value == pytest.approx((1e4 + math.log(2)) / 2, rel=1e-14)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(log_softmax(z), z - logsumexp(z, axis=1, keepdims=True), rtol=1e-15, atol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_gradient_matches_central_differences(smoothing):
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    loss = CrossEntropy(scale=2.0, label_smoothing=smoothing)
    _, grad = loss.value_and_grad(z, y)
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-15)  # softmax - q sums to 0 (q: the smoothed one-hot)
    for _ in range(3):
        v = rng.standard_normal(z.shape)
        h = 1e-6  # truncation h^2 ~ 1e-12, rounding eps / h ~ 1e-10
        fd = (loss(z + h * v, y) - loss(z - h * v, y)) / (2 * h)
        assert fd == pytest.approx(np.vdot(grad, v), rel=1e-7, abs=1e-10)


def test_cross_entropy_taylor_remainder_is_second_order():
    # |L(z + h v) - L(z) - h <grad, v>| = O(h^2): fitted log-log slope 2 within 0.1 over five halvings of h
    rng = np.random.default_rng(3)
    z, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    loss = CrossEntropy(scale=2.0)
    value, grad = loss.value_and_grad(z, y)
    v = rng.standard_normal(z.shape)
    hs = 1e-2 / 2.0 ** np.arange(5)
    remainders = [abs(loss(z + h * v, y) - value - h * np.vdot(grad, v)) for h in hs]
    assert np.polyfit(np.log(hs), np.log(remainders), 1)[0] == pytest.approx(2.0, abs=0.1)


def test_square_loss_is_half_mean_squared_distance_to_one_hot_targets():
    rng = np.random.default_rng(2)
    f, y = rng.standard_normal((5, 3)), np.array([0, 2, 1, 1, 0])
    Y = np.eye(3)[y]
    value, grad = SquareLoss(scale=0.5).value_and_grad(f, y)
    assert value == pytest.approx(0.5 * 0.5 * np.sum((f - Y) ** 2) / 5, rel=1e-14)
    np.testing.assert_allclose(grad, 0.5 * (f - Y) / 5, rtol=1e-15)
    targets = rng.standard_normal((5, 3))
    assert SquareLoss()(f, targets) == pytest.approx(0.5 * np.sum((f - targets) ** 2) / 5, rel=1e-14)


def test_square_loss_is_k_over_2_times_the_mean_of_all_squares_of_pytorchs_mse_loss():
    # the module notes: torch.nn.MSELoss() is the mean of the N K squares (written here in numpy),
    # 2 / K times L; the two sums differ in order only (rounding, a few ulps)
    rng = np.random.default_rng(4)
    f, targets = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    mse = np.mean((f - targets) ** 2)
    assert SquareLoss()(f, targets) == pytest.approx(4 / 2 * mse, rel=1e-14)


def test_losses_reject_labels_out_of_range_naming_y():
    z = np.zeros((3, 4))
    for loss in (CrossEntropy(), SquareLoss()):
        with pytest.raises(ValueError, match="y holds the label 4, out of range for 4 classes"):
            loss.value_and_grad(z, np.array([0, 1, 4]))
        with pytest.raises(ValueError, match="y holds the label -1"):
            loss.value_and_grad(z, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match="y has 2 labels but there are 3 samples"):
        CrossEntropy()(z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"integer class labels \(floats with integer values are taken\), got 0.5"):
        CrossEntropy()(z, np.array([0.5, 1.0, 2.0]))  # the message said "got dtype float64", which is taken


def test_square_loss_of_one_output_takes_integer_targets_as_values():
    # K = 1: y of shape (N,) holds real targets, integers too (they were read as labels of one class, and
    # -1 was refused as out of range); L = (1 / 2N) sum (f_n - y_n)^2 by hand, dL/df = (f - y) / N
    f = np.array([[0.5], [2.0], [-1.0]])
    y = np.array([1, -1, 1])
    value, grad = SquareLoss().value_and_grad(f, y)
    assert value == pytest.approx((0.25 + 9.0 + 4.0) / 6, rel=1e-15)
    np.testing.assert_allclose(grad, (f - y[:, None]) / 3, rtol=1e-15)
    assert SquareLoss()(f, y.astype(float)) == value


@pytest.mark.parametrize("label, shown", [(np.inf, "inf"), (-np.inf, "-inf"), (1e30, r"1e\+30")])
def test_losses_name_a_float_label_out_of_range_as_given(label, shown):
    # inf and 1e30 are whole numbers as floats; cast to int64 before the range check they became
    # int64's minimum, and the message named the label -9223372036854775808
    with pytest.raises(ValueError, match=f"y holds the label {shown}, out of range for 4 classes"):
        CrossEntropy().value_and_grad(np.zeros((2, 4)), np.array([1.0, label]))


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
def test_losses_refuse_outputs_without_a_sample_or_a_class_naming_them(shape):
    # the loss is a mean over the N rows (undefined for N = 0: ZeroDivisionError) of a softmax
    # over the K columns (none for K = 0: "labels must be in 0..-1")
    for loss, name in ((CrossEntropy(), "z"), (SquareLoss(), "f")):
        with pytest.raises(ValueError, match=rf"{name} must hold at least one row \(sample\) and one column"):
            loss.value_and_grad(np.zeros(shape), np.zeros(shape[0], int))


@pytest.mark.parametrize("loss", [CrossEntropy(), SquareLoss()], ids=["cross_entropy", "square"])
@pytest.mark.parametrize("y, match", [
    (np.array([2]), "y has 1 labels but there are 4 samples"),
    (np.array([0, 1, 2]), "y has 3 labels but there are 4 samples"),
    (np.array([[0], [1], [2], [1]]), r"y must be .*got shape \(4, 1\)"),
])
def test_losses_refuse_labels_of_another_shape_when_the_value_check_is_skipped(loss, y, match):
    # check=False (a training step) skips the labels' dtype and range checks, not their shape: a
    # (1,) or (N, 1) array broadcast against the N rows into a wrong loss, a shorter one failed
    # inside numpy's indexing.
    z = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(ValueError, match=match):
        loss.value_and_grad(z, y, check=False)


# --------------------------------------------------------------------------- optimisers
def test_sgd_with_momentum_and_weight_decay_matches_hand_computed_steps():
    theta = np.array([1.0, -2.0])
    opt = SGD({"theta": theta}, lr=0.1, momentum=0.9, weight_decay=0.01)
    grads = [np.array([0.5, 0.25]), np.array([-1.0, 2.0]), np.array([0.0, 1.0])]
    # by hand, coordinate by coordinate: g = grad + wd theta, v = 0.9 v + g, theta -= 0.1 v
    t, v = [1.0, -2.0], [0.0, 0.0]
    for g in grads:
        opt.step({"theta": g})
        for i in range(2):
            gi = g[i] + 0.01 * t[i]
            v[i] = 0.9 * v[i] + gi
            t[i] = t[i] - 0.1 * v[i]
        np.testing.assert_allclose(theta, t, rtol=1e-15)
    assert opt.t == 3


def test_sgd_nesterov_matches_hand_computed_steps():
    theta = np.array([2.0])
    opt = SGD({"theta": theta}, lr=0.5, momentum=0.5, nesterov=True)
    opt.step({"theta": np.array([1.0])})  # v = 1, d = 1 + 0.5 * 1 = 1.5, theta = 2 - 0.75
    opt.step({"theta": np.array([2.0])})  # v = 0.5 + 2 = 2.5, d = 2 + 1.25 = 3.25, theta = 1.25 - 1.625
    assert theta[0] == pytest.approx(1.25 - 1.625, rel=1e-15)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_matches_hand_computed_steps(decoupled):
    theta = np.array([0.5, -1.5])
    lr, (b1, b2), eps, wd = 0.01, (0.8, 0.99), 1e-8, 0.1
    opt = Adam({"theta": theta}, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, decoupled=decoupled)
    grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-3.0, 0.1])]
    steps, _ = _adam_by_hand([0.5, -1.5], grads, lr, b1, b2, eps, wd, decoupled)
    for g, expected in zip(grads, steps, strict=True):
        opt.step({"theta": g})
        np.testing.assert_allclose(theta, expected, rtol=1e-14)


def test_optimizer_state_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    grads = [{"w": rng.standard_normal(4)} for _ in range(6)]
    a, b = np.ones(4), np.ones(4)
    opt_a = Adam({"w": a}, lr=0.1)
    for g in grads:
        opt_a.step(g)
    opt_b = Adam({"w": b}, lr=0.1)
    for g in grads[:3]:
        opt_b.step(g)
    saved, theta = opt_b.state_dict(), b.copy()
    c = theta.copy()
    opt_c = Adam({"w": c}, lr=0.1)
    opt_c.load_state_dict(saved)
    for g in grads[3:]:
        opt_c.step(g)
    np.testing.assert_array_equal(c, a)


def test_schedules_take_their_defining_values():
    assert Constant(0.3)(1000) == 0.3
    step = StepDecay(1.0, step_size=10, gamma=0.5)
    assert [step(t) for t in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cos = Cosine(1.0, total_steps=110, lr_min=0.1, warmup=10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.55) and cos(110) == pytest.approx(0.1)
    theta = np.zeros(1)
    opt = SGD({"theta": theta}, lr=step)
    for _ in range(11):
        opt.step({"theta": np.ones(1)})
    assert theta[0] == pytest.approx(-(10 * 1.0 + 0.5)) and opt.lr == 0.5


def test_optimizers_reject_bad_hyperparameters():
    p = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="momentum must be in"):
        SGD(p, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas must lie in"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="grads has no gradient for the parameters w"):
        SGD(p, lr=0.1).step({})


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0.0])
def test_losses_reject_a_scale_that_is_not_positive_and_finite(scale):
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        CrossEntropy(scale=scale)


@pytest.mark.parametrize("value", [float("nan"), "a"])
def test_square_loss_rejects_a_target_value_that_is_not_a_finite_number(value):
    with pytest.raises(ValueError, match="target_value must be a finite number"):
        SquareLoss(target_value=value)


def test_losses_reject_outputs_that_are_not_real_numbers():
    with pytest.raises(ValueError, match="z must hold real numbers, got dtype <U1"):
        CrossEntropy()(np.array([["a"] * 3] * 2), np.array([0, 1]))


@pytest.mark.parametrize("out, y, match", [
    (np.ones(3), np.zeros(3, int), r"out must have shape \(N, K\)"),
    (np.ones((6, 3)), np.array([0]), r"y must hold one label per row of out, shape \(6,\)"),
    (np.ones((6, 3)), np.zeros((6, 1), int), r"y must hold one label per row of out"),
    (np.ones((0, 3)), np.zeros(0, int), "out must hold at least one row"),
])
def test_accuracy_rejects_mismatched_outputs_and_labels(out, y, match):
    from shallow.cnn import accuracy

    with pytest.raises(ValueError, match=match):
        accuracy(out, y)


@pytest.mark.parametrize("param, got", [(np.ones(3, int), "dtype int64"), (3.0, "float")])
def test_optimizers_reject_parameters_that_are_not_float_arrays(param, got):
    match = r"params\['w'\] must be a floating-point array \(updated in place\), got " + got
    with pytest.raises(ValueError, match=match):
        SGD({"w": param}, 0.1)


@pytest.mark.parametrize("state", [{}, "x"])
def test_load_state_dict_rejects_a_state_without_step_count(state):
    opt = SGD({"w": np.ones(3)}, 0.1)
    with pytest.raises(ValueError, match="state must be a dict from state_dict"):
        opt.load_state_dict(state)


def test_adam_rejects_a_single_beta_naming_betas():
    # a float for the pair failed in len() with "TypeError: object of type 'float' has no len()"
    with pytest.raises(ValueError, match=r"betas must be a pair \(beta1, beta2\), got 0.9"):
        Adam({"w": np.ones(3)}, betas=0.9)


def test_adam_rejects_a_zero_eps():
    with pytest.raises(ValueError, match="eps must be a positive finite number"):
        Adam({"w": np.ones(3)}, eps=0.0)


def test_cosine_rejects_a_final_rate_above_the_initial_one():
    with pytest.raises(ValueError, match="lr_min must be <= lr = 0.1"):
        Cosine(0.1, 10, lr_min=1.0)


@pytest.mark.parametrize("schedule", [Cosine(0.1, 10), StepDecay(0.1, 2)])
@pytest.mark.parametrize("t", [-1, 1.5])
def test_schedules_reject_a_step_that_is_not_a_nonnegative_integer(schedule, t):
    with pytest.raises(ValueError, match="the step t must be an integer >= 0"):
        schedule(t)


def test_square_loss_of_integer_outputs_is_its_closed_form():
    # integer outputs pass the check as real numbers; the one-hot targets were made in their
    # integer dtype (target_value 0.5 truncated to 0) and the in-place scaling of the residuals
    # failed with numpy's UFuncTypeError. By hand, N = 2, Y = 0.5 onehot([0, 1]):
    # L = ((2 - 0.5)^2 + 1^2 + (3 - 0.5)^2) / (2 N) = 9.5 / 4, dL/df = (f - Y) / N (dyadic: exact)
    f = np.array([[2, 0], [1, 3]])
    value, grad = SquareLoss(target_value=0.5).value_and_grad(f, np.array([0, 1]))
    assert value == 9.5 / 4
    np.testing.assert_array_equal(grad, [[0.75, 0.0], [0.5, 1.25]])


@pytest.mark.parametrize("r, scale", [(1e20, 1.0), (1e18, 1e-40)])
def test_square_loss_of_float32_outputs_is_the_float64_value_and_the_rounded_gradient(r, scale):
    # float32 outputs at the residual r: the value (a float64) and the gradient (float32) are
    # those of float64 arithmetic, the gradient rounded once (rel 2^-24). Formerly r^2 = 1e40
    # overflowed float32 (value inf, where (scale / 2N) sum r^2 = 5e39 is finite), and scale / N =
    # 1e-40 / 2 rounded to a float32 subnormal kept 5 digits of the gradient 5e-23 (a normal float32).
    f = np.array([[r, 0.0], [0.0, -r]], dtype=np.float32)
    value, grad = SquareLoss(scale=scale).value_and_grad(f, np.zeros((2, 2), np.float32))
    r64 = f.astype(np.float64)
    assert value == pytest.approx(scale * np.sum(r64 ** 2) / 4, rel=1e-15)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, scale * r64 / 2, rtol=2.0 ** -24)


def test_log_softmax_normalises_along_the_last_axis_of_a_batch_of_any_rank():
    # z of shape (..., K): reference scipy's logsumexp over the last axis of a 3-d array (on a
    # 2-d array the axes -1 and 1 coincide, and an axis counted from the front went unnoticed)
    z = np.random.default_rng(4).standard_normal((2, 3, 4))
    np.testing.assert_allclose(log_softmax(z), z - logsumexp(z, axis=-1, keepdims=True), rtol=1e-14, atol=1e-15)


def test_accuracy_is_the_fraction_of_rows_whose_argmax_is_the_label():
    # reference: the definition, row by row with Python's max over the outputs
    from shallow.cnn import accuracy

    rng = np.random.default_rng(5)
    out, y = rng.standard_normal((12, 4)), rng.integers(0, 4, 12)
    hits = sum(max(range(4), key=lambda k: out[n, k]) == y[n] for n in range(12))
    assert 0 < hits < 12  # both outcomes occur
    assert accuracy(out, y) == hits / 12


def test_square_loss_takes_whole_valued_float_labels_as_labels():
    # labels (N,) for outputs (N, K > 1) may come as floats holding whole numbers: they are the
    # labels 0..K-1, one-hot encoded like integer labels. Reference: (1 / 2N) sum |f_n - e_{y_n}|^2
    # with the identity's rows; K = 2, the smallest number of classes with labels of this shape.
    f = np.random.default_rng(6).standard_normal((4, 2))
    y = np.array([1.0, 0.0, 0.0, 1.0])
    Y = np.eye(2)[y.astype(int)]
    value, grad = SquareLoss().value_and_grad(f, y)
    assert value == pytest.approx(0.5 * np.sum((f - Y) ** 2) / 4, rel=1e-14)
    np.testing.assert_allclose(grad, (f - Y) / 4, rtol=1e-15)


def test_square_loss_of_one_output_takes_real_targets_of_shape_n_or_n_by_1():
    # a network with one output (K = 1) regresses real targets, given as (N,) or (N, 1) (module
    # notes): both are the closed form (1 / 2N) sum (f_n - y_n)^2, gradient (f_n - y_n) / N
    rng = np.random.default_rng(7)
    f, y = rng.standard_normal((5, 1)), rng.standard_normal(5)
    expected = 0.5 * np.sum((f[:, 0] - y) ** 2) / 5
    for targets in (y, y[:, None]):
        value, grad = SquareLoss().value_and_grad(f, targets)
        assert value == pytest.approx(expected, rel=1e-14)
        np.testing.assert_allclose(grad, (f - y[:, None]) / 5, rtol=1e-15)


def test_step_decay_of_step_size_one_decays_at_every_step():
    # eta_t = lr gamma^floor(t / 1) = lr gamma^t (dyadic values: exact)
    step = StepDecay(1.0, step_size=1, gamma=0.5)
    assert [step(t) for t in range(4)] == [1.0, 0.5, 0.25, 0.125]


def test_step_decay_refuses_a_growth_factor():
    # gamma > 1 made gamma ** k raise OverflowError after a few thousand steps (2 ** 1024)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        StepDecay(0.1, step_size=1, gamma=2.0)
    assert StepDecay(0.1, step_size=1, gamma=1.0)(10**6) == 0.1  # gamma = 1: a constant rate


def test_cosine_schedule_of_a_single_step_starts_at_lr_and_ends_at_lr_min():
    # total_steps = 1 (no warm-up): u = t / 1, so eta_0 = lr (cos 0 = 1) and eta_1 = lr_min (cos pi = -1)
    cos = Cosine(1.0, total_steps=1, lr_min=0.25)
    assert [cos(0), cos(1)] == [1.0, 0.25]


def test_cosine_schedule_stays_at_lr_min_after_total_steps():
    # u is clipped to [0, 1]: beyond total_steps the rate stays lr_min (unclipped, cos(pi u) would rise again)
    cos = Cosine(1.0, total_steps=10, lr_min=0.1)
    assert [cos(t) for t in (10, 15, 20, 1000)] == pytest.approx([0.1] * 4, rel=1e-15)


def test_cosine_warmup_may_last_all_steps_but_the_last():
    # warmup <= total_steps - 1: eta_t = lr (t + 1) / warmup for t < warmup, then the cosine from u = 0
    # (eta = lr) to u = 1 (eta = lr_min) over the one remaining step; warmup = total_steps is refused
    cos = Cosine(2.0, total_steps=4, lr_min=0.5, warmup=3)
    assert [cos(t) for t in range(5)] == pytest.approx([2 / 3, 4 / 3, 2.0, 2.0, 0.5], rel=1e-15)
    with pytest.raises(ValueError, match="warmup"):
        Cosine(2.0, total_steps=4, warmup=4)


@pytest.mark.parametrize("schedule", [StepDecay(1.0, step_size=2, gamma=0.5), Cosine(1.0, total_steps=6, warmup=2)])
def test_optimizer_lr_is_the_rate_of_its_next_step(schedule):
    # opt.lr is "the learning rate of the next step": plain SGD with gradient 1 moves theta by exactly eta_t at
    # step t, so the property read before each step must equal the step theta then takes (|theta| < 8: the update
    # and the difference each round by at most half an ulp of 8, 8.9e-16, hence 4e-15)
    theta = np.zeros(1)
    opt = SGD({"theta": theta}, lr=schedule)
    for _ in range(6):
        announced, before = opt.lr, theta[0]
        opt.step({"theta": np.ones(1)})
        assert before - theta[0] == pytest.approx(announced, rel=0, abs=4e-15)


def test_state_of_a_fresh_optimizer_round_trips():
    # a checkpoint taken before the first step (t = 0, zero moments) restores to the same start:
    # the steps that follow equal those of a fresh optimiser, bit for bit
    rng = np.random.default_rng(8)
    grads = [{"w": rng.standard_normal(3)} for _ in range(2)]
    a, b = np.ones(3), np.ones(3)
    opt_a, opt_b = Adam({"w": a}, lr=0.1), Adam({"w": b}, lr=0.1)
    opt_b.load_state_dict(Adam({"w": np.ones(3)}, lr=0.1).state_dict())
    assert opt_b.t == 0
    for g in grads:
        opt_a.step(g)
        opt_b.step(g)
    np.testing.assert_array_equal(b, a)


def test_sgd_without_momentum_keeps_no_state():
    # momentum 0: theta <- theta - lr g needs no velocity, and the state (a checkpoint) is the step count alone
    theta = np.array([1.0, 2.0])
    opt = SGD({"theta": theta}, lr=0.5)
    opt.step({"theta": np.array([1.0, -1.0])})
    np.testing.assert_array_equal(theta, [0.5, 2.5])
    assert opt.state_dict() == {"t": 1}


@pytest.mark.parametrize("y, match", [
    (np.array([0, 1, 7]), "y holds the label 7, out of range for 3 classes"),
    (np.array([0, -1, 2]), "y holds the label -1"),
    (np.array([0, 0.5, 2]), "y must hold integer class labels"),
    (np.array([0, np.nan, 2]), "y must hold integer class labels"),
], ids=["too large", "negative", "fractional", "NaN"])
def test_accuracy_rejects_labels_that_are_not_classes_of_out(y, match):
    # each such label matched no argmax: a fraction came back without a word (0.33 here)
    from shallow.cnn import accuracy

    with pytest.raises(ValueError, match=match):
        accuracy(np.eye(3), y)


@pytest.mark.parametrize("n_classes", [0, 2.5])
def test_check_labels_rejects_a_number_of_classes_that_is_not_a_positive_integer(n_classes):
    # 2.5 classes took labels 0, 1, 2; -1 classes took an empty y
    from shallow.cnn.losses import check_labels

    with pytest.raises(ValueError, match="n_classes must be an integer >= 1"):
        check_labels(np.array([0, 1]), n_classes)


def test_log_softmax_rejects_no_classes_and_complex_logits_naming_z():
    # (2, 0) failed in numpy ('zero-size array to reduction operation maximum'); complex z went through
    with pytest.raises(ValueError, match=r"z must have shape \(..., K\) with K >= 1"):
        log_softmax(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="z must hold real numbers"):
        log_softmax(np.ones((2, 3), dtype=complex))


def test_losses_take_a_list_of_outputs():
    # a list failed with "'list' object has no attribute 'dtype'"
    z = [[1.0, 2.0], [0.5, -1.0]]
    assert CrossEntropy()(z, [0, 1]) == CrossEntropy()(np.array(z), np.array([0, 1]))
    assert SquareLoss()(z, [0, 1]) == SquareLoss()(np.array(z), np.array([0, 1]))


@pytest.mark.parametrize("y, match", [(np.ones((2, 2), dtype=complex), "complex128"), (np.array([["a", "b"]] * 2), "<U1")])
def test_square_loss_rejects_complex_or_string_targets_naming_y(y, match):
    # complex targets lost their imaginary part (ComplexWarning); strings failed inside numpy
    with pytest.raises(ValueError, match=f"y must hold class labels or real targets, got dtype {match}"):
        SquareLoss()(np.ones((2, 2)), y)


@pytest.mark.parametrize("grads, match", [
    ([np.ones(3)], "grads must be a dict"), ({"w": [1.0, 1.0, 1.0]}, r"grads\['w'\] must be a real array, got list"),
    ({"w": np.ones(3, dtype=complex)}, r"grads\['w'\] must be a real array, got dtype complex128"),
], ids=["list of grads", "list grad", "complex grad"])
def test_optimizer_step_rejects_gradients_that_are_not_real_arrays_naming_grads(grads, match):
    # numpy's 'truth value of an array ... is ambiguous', "'list' object has no attribute 'shape'",
    # "Cannot cast ufunc 'subtract' output from dtype('complex128')"
    with pytest.raises(ValueError, match=match):
        SGD({"w": np.ones(3)}, 0.1).step(grads)


@pytest.mark.parametrize("eta", [-0.1, math.nan])
@pytest.mark.parametrize("opt", [SGD, Adam])
def test_optimizers_reject_a_schedule_giving_a_negative_or_nan_rate(opt, eta):
    # a schedule of one's own giving -0.1 stepped up the gradient, NaN made the parameters NaN
    w = np.ones(3)
    with pytest.raises(ValueError, match="the learning rate schedule must return a finite number >= 0"):
        opt({"w": w}, lambda t: eta).step({"w": np.ones(3)})
    np.testing.assert_array_equal(w, 1.0)


@pytest.mark.parametrize("state, match", [
    ({"t": 1.5, "w/momentum": np.zeros(3)}, r"state\['t'\] must be an integer"),
    ({"t": np.array(2), "w/momentum": np.full(3, np.nan)}, r"state\['w/momentum'\] contains 3 NaN"),
    ({"t": 2, "w/momentum": np.ones(3, dtype=complex)}, r"state\['w/momentum'\] must be real"),
], ids=["fractional t", "NaN", "complex"])
def test_load_state_dict_rejects_a_fractional_step_or_non_finite_state(state, match):
    # t = 1.5 was truncated to 1; NaN was loaded; complex lost its imaginary part (ComplexWarning)
    with pytest.raises(ValueError, match=match):
        SGD({"w": np.ones(3)}, 0.1, momentum=0.9).load_state_dict(state)


def test_check_model_rejects_what_is_not_a_layer_naming_model():
    # "'int' object has no attribute 'named_parameters'"
    with pytest.raises(TypeError, match="model must be a Layer"):
        SGD({"w": np.ones(3)}, 0.1).check_model(3)


@pytest.mark.parametrize("margin", [0.0, 10.0, 15.0, 20.0])
def test_cross_entropy_of_confident_float32_predictions_is_accurate_to_float32_rounding(margin):
    # the true class's logit raised by `margin`: loss and gradient against scipy's logsumexp and softmax in float64 on
    # the same float32 logits, the true-class gradient as minus the sum of the other probabilities. The loss was 63%
    # off at margin 20 (log of a sum within eps of 1) and the true-class gradient 77% off at margin 15 (1 - p_y)
    from scipy.special import logsumexp, softmax

    rng = np.random.default_rng(9)
    y = rng.integers(0, 10, 500)
    z = rng.standard_normal((500, 10))
    z[np.arange(500), y] += margin
    z32 = z.astype(np.float32)
    z64 = z32.astype(np.float64)
    value, grad = CrossEntropy().value_and_grad(z32, y)
    assert grad.dtype == np.float32
    assert value == pytest.approx(np.mean(logsumexp(z64, axis=1) - z64[np.arange(500), y]), rel=1e-6)
    P = softmax(z64, axis=1)
    ref = P.copy()
    P[np.arange(500), y] = 0
    ref[np.arange(500), y] = -P.sum(axis=1)
    np.testing.assert_allclose(grad, ref / 500, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int64])
def test_log_softmax_of_integer_logits_is_that_of_their_values(dtype):
    # z - max z computed in the integers wrapped around (uint8 [1, 3]: -inf, -inf); scipy on the float64 values
    z = np.array([[1, 3, 0], [-100, 100, 7]] if dtype != np.uint8 else [[1, 3, 0], [200, 100, 7]], dtype=dtype)
    np.testing.assert_allclose(log_softmax(z), z.astype(np.float64) - logsumexp(z.astype(np.float64), axis=1,
                                                                                 keepdims=True), rtol=1e-15, atol=1e-15)
    value, grad = CrossEntropy().value_and_grad(z, np.array([1, 0]))
    assert np.isfinite(value) and grad.dtype == np.float64


def test_cross_entropy_of_a_plus_inf_logit_is_its_limit_at_large_finite_logits():
    # A +inf logit is the limit L -> inf of a finite logit L: softmax -> the one-hot of that class (c tied +inf
    # logits: 1/c each), so the loss tends to 0 at the label, log 2 for two tied maxima, and to +inf (L - z_y)
    # elsewhere (by hand). The probabilities from scipy's softmax at L = 1e300, where exp(z - L) underflows to
    # exactly 0 (the limit itself); a finite row as scipy's log softmax (1e-15: rounding); no NaN, no warning
    # (RuntimeWarnings are errors here)
    from scipy.special import log_softmax as scipy_log_softmax
    from scipy.special import softmax

    from shallow.cnn.losses import _log_softmax_limit
    z = np.array([[np.inf, 0.0, 2.0], [1.0, np.inf, -3.0], [np.inf, np.inf, 5.0], [-np.inf, np.inf, 0.0],
                  [0.5, -1.0, 2.0]])
    y = np.array([0, 0, 1, 1, 2])
    logp = _log_softmax_limit(z)
    losses = -logp[np.arange(5), y]
    np.testing.assert_array_equal(losses[:4], [0.0, np.inf, math.log(2), 0.0])
    np.testing.assert_allclose(logp[4], scipy_log_softmax(z[4]), rtol=1e-15)
    np.testing.assert_array_equal(np.exp(logp[:4]), softmax(np.where(np.isposinf(z[:4]), 1e300, z[:4]), axis=1))
    assert CrossEntropy(scale=0.5)._limit_value(z, y) == np.inf
    assert CrossEntropy(scale=0.5)._limit_value(z[[0, 2, 3]], y[[0, 2, 3]]) == pytest.approx(0.5 * math.log(2) / 3,
                                                                                           rel=1e-15)


def test_log_softmax_limit_splits_the_probability_between_equal_infinite_logits():
    # equal logits, whatever their common value, share the probability equally (softmax(z + c) = softmax(z));
    # so do +inf ones, and a row of -inf only: log softmax -log c at each of the c maxima, -inf at finite logits
    # beside a +inf one (scipy on equal finite logits for -log c, to rounding)
    from scipy.special import log_softmax as scipy_log_softmax

    from shallow.cnn.losses import _log_softmax_limit
    inf = np.inf
    out = _log_softmax_limit(np.array([[inf, inf, 0.0], [-inf, -inf, -inf], [inf, -1.0, inf]]))
    third, half = scipy_log_softmax(np.zeros(3))[0], scipy_log_softmax(np.zeros(2))[0]
    np.testing.assert_allclose(out, [[half, half, -inf], [third, third, third], [half, -inf, half]], rtol=1e-15)


@pytest.mark.parametrize("z, y, match", [
    (np.zeros(4), np.array([0]), r"^z must have shape \(N, K\)"),
    (np.zeros((0, 4)), np.array([], dtype=int), r"^z must hold at least one row"),
    (np.zeros((3, 4)), np.array([0, 1]), r"^y has 2 labels but there are 3 samples"),
    (np.zeros((3, 4)), np.array([[0, 1, 2]]), r"^y must be a 1-dimensional array"),
    (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), r"^y must be an integer array of class labels"),
])
def test_cross_entropy_per_sample_refuses_shapes_naming_the_argument(z, y, match):
    # these failed inside numpy's indexing (IndexError "shape mismatch", "too many indices", AttributeError)
    from shallow.cnn.losses import cross_entropy_per_sample
    with pytest.raises(ValueError, match=match):
        cross_entropy_per_sample(z, y)


def test_accuracy_refuses_nan_outputs():
    # argmax returns the first NaN of a row: a diverged network scored 1/2 here instead of an error
    from shallow.cnn.losses import accuracy
    out = np.array([[np.nan, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"^out contains 1 NaN"):
        accuracy(out, np.array([0, 0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_square_loss_refuses_non_finite_targets(bad):
    # a NaN target gave a NaN loss (and gradient) without an error, an inf one an inf loss
    Y = np.zeros((2, 3))
    Y[1, 2] = bad
    with pytest.raises(ValueError, match=r"^y contains 1 NaN or infinite"):
        SquareLoss().value_and_grad(np.zeros((2, 3)), Y)
    value, _ = SquareLoss().value_and_grad(np.zeros((2, 3)), Y, check=False)  # the unchecked path is unchanged
    assert not np.isfinite(value)


def test_accuracy_counts_a_tied_row_right_only_when_the_label_is_its_first_maximum():
    # Docstring of accuracy: ties go to the first maximum. Outputs drawn from {0, 1} tie often; reference:
    # the definition row by row, Python's max over the outputs (which returns the first of equal keys)
    from shallow.cnn import accuracy

    rng = np.random.default_rng(6)
    out, y = rng.integers(0, 2, size=(40, 4)).astype(np.float64), rng.integers(0, 4, 40)
    first = [max(range(4), key=lambda k: out[n, k]) for n in range(40)]
    tied_at_label = [n for n in range(40) if out[n, y[n]] == out[n].max() and first[n] != y[n]]
    assert tied_at_label  # rows whose label ties with an earlier maximum: counted wrong
    assert accuracy(out, y) == sum(first[n] == y[n] for n in range(40)) / 40


# --------------------------------------------------------------------------- label smoothing
def test_label_smoothed_cross_entropy_is_the_cross_entropy_against_the_smoothed_targets():
    # PyTorch's CrossEntropyLoss(label_smoothing=eps): targets q = (1 - eps) onehot + eps / K, and
    # L = (1/N) sum_n -sum_k q_nk log softmax(z_n)_k, dL/dz = (softmax(z) - q) / N, written with scipy
    rng = np.random.default_rng(5)
    z, y, eps = rng.standard_normal((7, 5)) * 3, rng.integers(0, 5, 7), 0.1
    q = (1 - eps) * np.eye(5)[y] + eps / 5
    logp = z - logsumexp(z, axis=1, keepdims=True)
    loss = CrossEntropy(scale=0.5, label_smoothing=eps)
    value, grad = loss.value_and_grad(z, y)
    # the plain loss plus eps (z_y - mean z), summed in another order than the hand formula: a few eps64
    assert value == pytest.approx(0.5 * np.mean(-(q * logp).sum(axis=1)), rel=1e-14)
    assert loss(z, y) == pytest.approx(value, rel=1e-14)
    np.testing.assert_allclose(grad, 0.5 * (np.exp(logp) - q) / 7, rtol=1e-13, atol=1e-16)


def test_label_smoothing_zero_gives_the_plain_cross_entropy_bitwise():
    rng = np.random.default_rng(7)
    z, y = rng.standard_normal((9, 3)).astype(np.float32), rng.integers(0, 3, 9)
    plain, smoothed = CrossEntropy().value_and_grad(z, y), CrossEntropy(label_smoothing=0.0).value_and_grad(z, y)
    assert plain[0] == smoothed[0]
    np.testing.assert_array_equal(plain[1], smoothed[1])
    assert repr(CrossEntropy(label_smoothing=0.0)) == "CrossEntropy(scale=1.0)"  # checkpoints of earlier runs resume


def test_label_smoothing_of_one_is_the_cross_entropy_against_the_uniform_distribution():
    # eps = 1: q = 1/K whatever the label: L = mean_n [logsumexp(z_n) - mean_k z_nk], by hand
    z, y = np.array([[0.0, 1.0, 2.0]]), np.array([2])
    expected = math.log(1 + math.e + math.e ** 2) - 1.0
    assert CrossEntropy(label_smoothing=1.0)(z, y) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_cross_entropy_refuses_a_label_smoothing_outside_0_1_naming_it(eps):
    with pytest.raises(ValueError, match="label_smoothing must"):
        CrossEntropy(label_smoothing=eps)


# --------------------------------------------------------------------------- weight decay on some parameters
def _tiled(shapes, values, dtype=np.float64):
    """Arrays of the given shapes and values as consecutive views of one 1-D array (flat parameters)."""
    base = np.concatenate([np.asarray(v, dtype=dtype).ravel() for v in values])
    out, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = base[offset:offset + size].reshape(shape)
        offset += size
    return out


_SHAPES = {"net.0.W": (3, 2), "net.0.b": (2,), "net.1.gamma": (2,), "net.1.beta": (2,), "net.2.W": (2, 2)}


def _params(flat, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in _SHAPES.values()]
    return _tiled(_SHAPES, values) if flat else {n: v.copy() for n, v in zip(_SHAPES, values)}


def _grads(flat, seed):
    return _params(flat, seed)


def _hand_steps(kind, lr, wd, steps, clip=None):
    """Two steps by hand, entry by entry, with lambda = wd on the W's and 0 on b, gamma, beta (the formulas of the
    module notes, and PyTorch's: parameter groups)."""
    theta = {n: v.copy() for n, v in _params(False).items()}
    m = {n: np.zeros(s) for n, s in _SHAPES.items()}
    v = {n: np.zeros(s) for n, s in _SHAPES.items()}
    b1, b2, mu, adam_eps = 0.8, 0.99, 0.9, 1e-8
    for k, seed in enumerate(steps, start=1):
        grads = _grads(False, seed)
        if clip is not None:
            norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
            grads = {n: g * min(1.0, clip / (norm + 1e-6)) for n, g in grads.items()}
        for n in _SHAPES:
            lam = wd if n.endswith(".W") else 0.0
            t, g = theta[n], grads[n]
            if kind in ("sgd", "nesterov"):
                g = g + lam * t
                m[n] = mu * m[n] + g
                theta[n] = t - lr * (g + mu * m[n] if kind == "nesterov" else m[n])
            else:
                if kind == "adamw":
                    t = t * (1 - lr * lam)
                else:
                    g = g + lam * t
                m[n] = b1 * m[n] + (1 - b1) * g
                v[n] = b2 * v[n] + (1 - b2) * g * g
                theta[n] = t - lr * (m[n] / (1 - b1 ** k)) / (np.sqrt(v[n] / (1 - b2 ** k)) + adam_eps)
    return theta


_MAKE = {
    "sgd": lambda p, **kw: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.3, **kw),
    "nesterov": lambda p, **kw: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.3, **kw),
    "adam": lambda p, **kw: Adam(p, lr=0.1, betas=(0.8, 0.99), weight_decay=0.3, **kw),
    "adamw": lambda p, **kw: Adam(p, lr=0.1, betas=(0.8, 0.99), weight_decay=0.3, decoupled=True, **kw),
}


@pytest.mark.parametrize("kind", _MAKE)
def test_no_decay_gives_lambda_zero_to_biases_and_norms_and_lambda_to_the_weights(kind):
    # two steps (the momentum and Adam's moments carry the decay of the first) against the hand computation;
    # flat parameters and gradients (one array each, the fast path) give bitwise the numbers of separate ones
    results = {}
    for flat in (False, True):
        params = _params(flat)
        opt = _MAKE[kind](params, no_decay=BIASES_AND_NORMS)
        assert (opt._flat is not None) == flat
        for seed in (1, 2):
            opt.step(_grads(flat, seed))
        results[flat] = params
    expected = _hand_steps(kind, 0.1, 0.3, (1, 2))
    for name in _SHAPES:
        # the same formula entry by entry, in other groupings of the products: a few eps64
        np.testing.assert_allclose(results[False][name], expected[name], rtol=1e-14, atol=1e-15, err_msg=name)
        np.testing.assert_array_equal(results[True][name], results[False][name], err_msg=name)


def test_no_decay_patterns_match_the_dotted_name_or_its_last_component():
    params = _params(False)
    assert SGD(params, lr=0.1, weight_decay=0.1, no_decay=("b", "net.1.*"))._decays == {
        "net.0.W": 0.1, "net.0.b": None, "net.1.gamma": None, "net.1.beta": None, "net.2.W": 0.1}
    assert SGD(params, lr=0.1, weight_decay=0.1, no_decay="gamma")._decays["net.1.gamma"] is None


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_biases_and_norms_applies_to_a_model_without_batch_norm(kind):
    # BIASES_AND_NORMS is a convention: on a model with no gamma nor beta (vgg_small(batch_norm=False), a stack of
    # Linear layers) it leaves the biases undecayed. One step from a zero gradient, by hand: SGD's L2 term moves W
    # by -eta lambda W, AdamW scales it by (1 - eta lambda), and b stays put (Adam's m = 0 moves nothing), to 1 eps.
    rng = np.random.default_rng(3)
    W, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
    params = {"0.W": W.copy(), "0.b": b.copy()}
    eta, lam = 0.1, 0.5
    if kind == "sgd":
        opt = SGD(params, lr=eta, weight_decay=lam, no_decay=BIASES_AND_NORMS)
    else:
        opt = Adam(params, lr=eta, weight_decay=lam, decoupled=True, no_decay=BIASES_AND_NORMS)
    opt.step({"0.W": np.zeros((3, 2)), "0.b": np.zeros(3)})
    np.testing.assert_allclose(params["0.W"], (1 - eta * lam) * W, rtol=2 * np.finfo(np.float64).eps, atol=0)  # one product and one subtraction
    np.testing.assert_array_equal(params["0.b"], b)


@pytest.mark.parametrize("no_decay, match", [
    (("b", "bias"), "no_decay pattern 'bias' matches no parameter"),
    ([""], "no_decay must hold non-empty strings"),
    (3, "no_decay must be a parameter-name pattern"),
])
def test_optimizers_refuse_no_decay_patterns_that_match_nothing_or_are_not_strings(no_decay, match):
    with pytest.raises(ValueError, match=match):
        Adam(_params(False), weight_decay=0.1, no_decay=no_decay)


# --------------------------------------------------------------------------- gradient clipping
@pytest.mark.parametrize("kind", _MAKE)
def test_clip_norm_scales_the_gradient_by_min_1_c_over_its_global_norm_before_the_step(kind):
    # c = 0.5, below the global norm of the gradients (about 4): the steps of the hand computation with the
    # gradient scaled by c / (|g| + 1e-6), PyTorch's clip_grad_norm_. Flat and separate: the sum of squares in
    # the same order, so bitwise the same numbers
    results = {}
    for flat in (False, True):
        params = _params(flat)
        opt = _MAKE[kind](params, no_decay=BIASES_AND_NORMS, clip_norm=0.5)
        for seed in (1, 2):
            opt.step(_grads(flat, seed))
        results[flat] = params
    expected = _hand_steps(kind, 0.1, 0.3, (1, 2), clip=0.5)
    for name in _SHAPES:
        # the norm summed in another order than the hand's: a few eps64
        np.testing.assert_allclose(results[False][name], expected[name], rtol=1e-13, atol=1e-15, err_msg=name)
        np.testing.assert_array_equal(results[True][name], results[False][name], err_msg=name)


@pytest.mark.parametrize("flat", [False, True])
def test_clip_norm_above_the_gradient_norm_leaves_the_step_unchanged_bitwise(flat):
    # min(1, c / (|g| + 1e-6)) = 1 exactly, and g * 1 = g
    runs = []
    for clip in (None, 100.0):
        params = _params(flat)
        opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1, clip_norm=clip)
        for seed in (1, 2):
            opt.step(_grads(flat, seed))
        runs.append(params)
    for name in _SHAPES:
        np.testing.assert_array_equal(runs[1][name], runs[0][name], err_msg=name)


@pytest.mark.parametrize("flat", [False, True])
def test_clip_grad_norm_scales_the_gradients_in_place_and_returns_their_norm_before(flat):
    grads = _grads(flat, 3)
    before = {n: g.copy() for n, g in grads.items()}
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in before.values()))
    assert float(clip_grad_norm(grads, 0.25)) == pytest.approx(norm, rel=1e-15)
    for name, g in grads.items():  # scaled by 0.25 / (norm + 1e-6), to rounding
        np.testing.assert_allclose(g, before[name] * 0.25 / (norm + 1e-6), rtol=1e-15, err_msg=name)
    assert float(clip_grad_norm(grads, 10.0)) == pytest.approx(0.25, rel=1e-5)  # below: no change
    for name, g in grads.items():
        np.testing.assert_allclose(g, before[name] * 0.25 / (norm + 1e-6), rtol=1e-15, err_msg=name)


@pytest.mark.parametrize("clip", [0.0, -1.0, float("inf"), "1"])
def test_clipping_refuses_a_bound_that_is_not_a_positive_number_naming_it(clip):
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
        SGD(_params(False), lr=0.1, clip_norm=clip)
    with pytest.raises(ValueError, match="max_norm must be a positive finite number"):
        clip_grad_norm(_grads(False, 1), clip)


# --------------------------------------------------------------------------- AMSGrad
def _adam_by_hand(theta0, grads, lr, b1, b2, eps, wd, decoupled, amsgrad=False):
    """PyTorch's torch.optim.adam (_single_tensor_adam), written out entry by entry: the parameters after each
    step, and the last v_max. Adam: denom = sqrt(v / (1 - b2^k)) + eps; AdamW decays theta by (1 - lr wd) first;
    with amsgrad, v_max = max(v_max, v) and denom = sqrt(v_max) / sqrt(1 - b2^k) + eps;
    theta -= (lr / (1 - b1^k)) m / denom."""
    theta, m, v, vmax = list(theta0), [0.0] * len(theta0), [0.0] * len(theta0), [0.0] * len(theta0)
    steps = []
    for k, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            if decoupled:
                theta[i] *= 1 - lr * wd
            else:
                gi += wd * theta[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            if amsgrad:
                vmax[i] = max(vmax[i], v[i])
                denom = math.sqrt(vmax[i]) / math.sqrt(1 - b2 ** k) + eps
            else:
                denom = math.sqrt(v[i] / (1 - b2 ** k)) + eps
            theta[i] -= (lr / (1 - b1 ** k)) * m[i] / denom
        steps.append(list(theta))
    return steps, vmax


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_amsgrad_divides_by_the_largest_second_moment_so_far(decoupled):
    # large gradients, then small ones: v decreases and v_max keeps its peak (and the steps differ from Adam's)
    theta = np.array([0.5, -1.5])
    grads = [np.array([3.0, -2.0]), np.array([0.1, 0.2]), np.array([-0.05, 0.1]), np.array([0.01, -0.3])]
    lr, (b1, b2), eps, wd = 0.01, (0.8, 0.9), 1e-8, 0.1
    opt = Adam({"theta": theta}, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, decoupled=decoupled, amsgrad=True)
    for g in grads:
        opt.step({"theta": g})
    steps, vmax = _adam_by_hand([0.5, -1.5], grads, lr, b1, b2, eps, wd, decoupled, amsgrad=True)
    expected = steps[-1]
    # the same formula in other groupings (sqrt(v_max / c) against sqrt(v_max) / sqrt(c)): a few eps64 per step
    np.testing.assert_allclose(theta, expected, rtol=1e-14)
    np.testing.assert_allclose(opt.state["theta"]["v_max"], vmax, rtol=1e-15)
    plain = np.array([0.5, -1.5])
    adam = Adam({"theta": plain}, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, decoupled=decoupled)
    for g in grads:
        adam.step({"theta": g})
    assert np.abs(plain - theta).max() > 1e-4  # v fell below its peak: AMSGrad took smaller steps


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_amsgrad_on_flat_parameters_gives_the_numbers_of_separate_ones(kind):
    # the flat fast path (one maximum over one array) and the per-parameter one: the same elementwise formula,
    # bitwise; with weight decay on the weights only (a vector of lambdas, or AdamW's mask)
    results = {}
    for flat in (False, True):
        params = _params(flat)
        opt = _MAKE[kind](params, no_decay=BIASES_AND_NORMS, amsgrad=True)
        assert (opt._flat is not None) == flat
        for scale in (1.0, 0.1, 0.01):  # shrinking gradients: v falls below v_max
            grads = _grads(flat, 1)
            for g in grads.values():
                g *= scale  # in place: flat gradients stay one array
            opt.step(grads)
        results[flat] = (params, opt.state)
    for name in _SHAPES:
        np.testing.assert_array_equal(results[True][0][name], results[False][0][name], err_msg=name)
        np.testing.assert_array_equal(results[True][1][name]["v_max"], results[False][1][name]["v_max"], err_msg=name)


def test_adam_amsgrad_state_round_trip_continues_identically():
    # v_max is a slot of the state: saved and restored with m and v
    rng = np.random.default_rng(4)
    grads = [{"w": rng.standard_normal(4) * 10.0 ** -k} for k in range(6)]
    a, b = np.ones(4), np.ones(4)
    opt_a = Adam({"w": a}, lr=0.1, amsgrad=True)
    for g in grads:
        opt_a.step(g)
    opt_b = Adam({"w": b}, lr=0.1, amsgrad=True)
    for g in grads[:3]:
        opt_b.step(g)
    saved = opt_b.state_dict()
    assert "w/v_max" in saved
    c = b.copy()
    opt_c = Adam({"w": c}, lr=0.1, amsgrad=True)
    opt_c.load_state_dict(saved)
    for g in grads[3:]:
        opt_c.step(g)
    np.testing.assert_array_equal(c, a)


# --------------------------------------------------------------------------- epoch-based schedules
def test_per_epoch_step_decay_is_steplr_stepped_once_per_epoch():
    # PyTorch: StepLR(opt, step_size=2, gamma=0.5), scheduler.step() after each epoch of 3 steps: every step of
    # epoch e has the rate 1.0 * 0.5^floor(e / 2), counted by hand
    schedule = PerEpoch(StepDecay(1.0, step_size=2, gamma=0.5), steps_per_epoch=3)
    rates = [schedule(t) for t in range(15)]
    assert rates == [1.0] * 6 + [0.5] * 6 + [0.25] * 3


def test_per_epoch_cosine_is_cosine_annealing_over_epochs():
    # PyTorch: CosineAnnealingLR(opt, T_max=4, eta_min=0.1) stepped once per epoch: epoch e has
    # 0.1 + (1 - 0.1) (1 + cos(pi e / 4)) / 2 (the closed form of the recursion), and eta_min from e = 4 on here
    schedule = PerEpoch(Cosine(1.0, total_steps=4, lr_min=0.1), steps_per_epoch=5)
    for t in range(30):
        e = min(t // 5, 4)
        assert schedule(t) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2, rel=1e-15, abs=1e-16)


def test_per_epoch_refuses_a_step_before_it_knows_the_steps_per_epoch_and_another_count_after():
    schedule = PerEpoch(Cosine(1.0, 4))
    with pytest.raises(ValueError, match="PerEpoch does not know the steps per epoch"):
        schedule(0)
    schedule.bind(3)
    schedule.bind(3)  # the same count again: accepted
    with pytest.raises(ValueError, match="steps_per_epoch=3 steps, but these epochs have 4"):
        schedule.bind(4)
    with pytest.raises(ValueError, match="steps_per_epoch must be"):
        PerEpoch(Cosine(1.0, 4), steps_per_epoch=0)


# --------------------------------------------------------------------------- ReduceOnPlateau
def _torch_plateau(values, lr, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel", cooldown=0,
                   min_lr=0.0, eps=1e-8):
    """torch.optim.lr_scheduler.ReduceLROnPlateau.step(metrics) written out (one parameter group); the rates
    after each step."""
    best = math.inf if mode == "min" else -math.inf
    bad = cooldown_counter = 0
    rates = []
    for current in values:
        if mode == "min" and threshold_mode == "rel":
            better = current < best * (1.0 - threshold)
        elif mode == "min":
            better = current < best - threshold
        elif threshold_mode == "rel":
            better = current > best * (threshold + 1.0)
        else:
            better = current > best + threshold
        if better:
            best, bad = current, 0
        else:
            bad += 1
        if cooldown_counter > 0:
            cooldown_counter -= 1
            bad = 0
        if bad > patience:
            new_lr = max(lr * factor, min_lr)
            if lr - new_lr > eps:
                lr = new_lr
            cooldown_counter, bad = cooldown, 0
        rates.append(lr)
    return rates


_PLATEAU_CASES = {
    "rel patience 1": dict(patience=1, factor=0.5),
    "abs threshold": dict(patience=0, threshold=0.05, threshold_mode="abs", factor=0.5),
    "cooldown 2, min_lr": dict(patience=0, cooldown=2, factor=0.3, min_lr=0.05),
    "max mode": dict(mode="max", patience=1, threshold=0.01, factor=0.5),
    "eps skips small reductions": dict(patience=0, factor=0.9, eps=0.05),
}


@pytest.mark.parametrize("case", _PLATEAU_CASES)
def test_reduce_on_plateau_follows_pytorchs_rule(case):
    # a noisy decreasing sequence with plateaus, a NaN (no improvement) among them
    values = [5.0, 4.0, 4.0, 3.99, 3.9, 3.9, 3.9, 2.0, float("nan"), 2.0, 1.96, 1.95, 1.95, 1.95, 1.0, 1.0]
    kwargs = _PLATEAU_CASES[case]
    schedule = ReduceOnPlateau(1.0, **kwargs)
    rates = []
    for value in values:
        schedule.step(value)
        rates.append(schedule(0))
    assert rates == _torch_plateau(values, 1.0, **kwargs)
    assert len(set(rates)) > 1  # some reductions happened


def test_reduce_on_plateau_of_patience_one_halves_after_two_epochs_without_improvement():
    # counted by hand: best 3, 2; then 2, 2 (two bad epochs > patience 1): 0.5; then 2 (one bad epoch), 1: best
    schedule = ReduceOnPlateau(1.0, patience=1, factor=0.5)
    rates = []
    for value in [3.0, 2.0, 2.0, 2.0, 2.0, 1.0]:
        schedule.step(value)
        rates.append(schedule(123))
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    assert (schedule.best, schedule.bad_epochs, schedule.epochs) == (1.0, 0, 6)


def test_reduce_on_plateau_state_goes_with_the_optimizers_and_continues_identically():
    values = [3.0, 2.0, 2.0, 2.0, 1.9, 1.9, 1.9, 1.0]
    theta = np.ones(2)
    opt = SGD({"w": theta}, lr=ReduceOnPlateau(1.0, patience=1, factor=0.5, cooldown=1))
    for value in values[:4]:
        opt.schedule.step(value)
    saved = opt.state_dict()
    assert saved["@schedule/lr"] == 0.5
    other = SGD({"w": np.ones(2)}, lr=ReduceOnPlateau(1.0, patience=1, factor=0.5, cooldown=1))
    other.load_state_dict({k: np.asarray(v) for k, v in saved.items()})  # 0-d arrays, as a checkpoint gives them
    for value in values[4:]:
        opt.schedule.step(value)
        other.schedule.step(value)
        assert other.lr == opt.lr
    assert other.schedule.state_dict() == opt.schedule.state_dict()
    with pytest.raises(ValueError, match="holds no state of its schedule ReduceOnPlateau"):
        other.load_state_dict({"t": 0})  # SGD without momentum: no slot, only the step count


@pytest.mark.parametrize("kwargs, match", [
    (dict(monitor="val_loss"), "monitor must be one of"),
    (dict(factor=1.0), r"factor must be in \[0, 1\)"),
    (dict(mode="lowest"), "mode must be 'min' or 'max'"),
    (dict(threshold=1.0), r"threshold must be in \[0, 1\) with threshold_mode='rel'"),
    (dict(patience=-1), "patience"),
])
def test_reduce_on_plateau_refuses_settings_outside_their_ranges_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReduceOnPlateau(0.1, **kwargs)


def test_reduce_on_plateau_monitoring_an_accuracy_maximises_it_by_default():
    assert ReduceOnPlateau(0.1, "test_accuracy").mode == "max" and ReduceOnPlateau(0.1, "test_loss").mode == "min"


def test_per_epoch_refuses_a_schedule_that_counts_epochs_already():
    # fit steps a ReduceOnPlateau only when it is the optimiser's schedule itself: wrapped, its rate never dropped
    from shallow.cnn.optim import PerEpoch, ReduceOnPlateau
    for inner in (ReduceOnPlateau(0.1), PerEpoch(0.1)):
        with pytest.raises(ValueError, match="schedule must count optimiser steps"):
            PerEpoch(inner)


def test_clip_grad_norm_of_float32_gradients_beyond_the_square_root_of_the_range():
    # |g| = 5e19 (3e19, 4e19): g * g overflows float32 (3.4e38), an infinite norm made the factor 0 and zeroed the
    # gradient; the norm in float64 scales it to max_norm (hand: 1 / 5e19 times g), to float32 rounding
    from shallow.cnn.optim import clip_grad_norm
    grads = {"a": np.array([3e19], dtype=np.float32), "b": np.array([4e19], dtype=np.float32)}
    norm = clip_grad_norm(grads, 1.0)
    assert grads["a"].dtype == np.float32 and float(norm) == pytest.approx(5e19, rel=1e-6)
    np.testing.assert_allclose([grads["a"][0], grads["b"][0]], [0.6, 0.8], rtol=1e-6)
