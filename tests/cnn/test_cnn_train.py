"""The training loop: accuracy on digits, exact resume from checkpoints, divergence guard, input checks."""

import functools
import time

import numpy as np
import pytest

from shallow.cnn import (BIASES_AND_NORMS, SGD, Adam, Augment, Cosine, CrossEntropy, Dropout, Flatten, Linear,
                         Sequential, SquareLoss, StepDecay,
                         TrainingDivergedError, build_model, evaluate,
                         fit, linearize, load_checkpoint, load_digits, predict, relative_change, save_checkpoint,
                         snapshot, vgg_small)
from shallow.cnn.optim import PerEpoch, ReduceOnPlateau


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    return load_digits(dtype=np.float32)


def test_small_cnn_reaches_98_percent_test_accuracy_on_digits(digits):
    # The acceptance test: a small VGG (widths 24, 48; batch norm; He initialisation),
    # SGD with momentum and a cosine schedule, shifts of one pixel as augmentation; stratified 25%
    # test split (450 images), fixed seeds. About 7 s on one core. Seeds 0-3 give 98.4-99.6%
    # (seed 0: 98.9%, 5 errors).
    model = build_model("vgg", digits.in_shape, 10, width=24, rng=0, dtype=np.float32)
    epochs, batch = 30, 32
    steps = epochs * -(-len(digits.y_train) // batch)
    opt = SGD(model.named_parameters(), lr=Cosine(0.05, steps), momentum=0.9, weight_decay=1e-3)
    history = fit(model, digits.X_train, digits.y_train, X_test=digits.X_test, y_test=digits.y_test,
                  optimizer=opt, epochs=epochs, batch_size=batch, rng=0,
                  augment=Augment(shift=1, fill=digits.background))
    assert history.test_accuracy[-1] >= 0.98
    assert history.loss[-1] < history.loss[0]
    assert evaluate(model, digits.X_test, digits.y_test)[1] == history.test_accuracy[-1]


def _tiny_run(digits, tmp_path, epochs, resume, checkpoint="ckpt.npz", flat=False, optimizer=SGD, loss=None,
              schedule=None, **options):
    """A small model with everything that carries state: batch norm, dropout, momentum, augmentation.
    ``schedule``: a function returning a fresh schedule (by default a cosine over 20 steps)."""
    model = build_model("vgg", digits.in_shape, 10, width=3, rng=1, dropout=0.2, centering="frozen", alpha=2.0)
    if flat:
        model.flatten_parameters()
    if optimizer is SGD:
        lr = Cosine(0.05, 20) if schedule is None else schedule()
        opt = SGD(model.named_parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, **options)
    else:
        lr = Cosine(0.01, 20) if schedule is None else schedule()
        opt = optimizer(model.named_parameters(), lr=lr, weight_decay=1e-2, **options)
    X, y = digits.X_train[:96].astype(np.float64), digits.y_train[:96]
    history = fit(model, X, y, X_test=digits.X_test[:40].astype(np.float64), y_test=digits.y_test[:40],
                  optimizer=opt, epochs=epochs, batch_size=16, rng=2, augment=Augment(shift=1, rotation=5.0),
                  checkpoint=tmp_path / checkpoint, resume=resume, loss=loss)
    return model, opt, history


_OPTIONS = {
    "sgd": {},
    # weight decay on the weights only, the gradient clipped to a norm it exceeds (so that the clipping acts),
    # label smoothing: no state of their own, the numbers of the same settings
    "sgd no_decay clip_norm label_smoothing": dict(no_decay=BIASES_AND_NORMS, clip_norm=0.5,
                                                   loss=CrossEntropy(label_smoothing=0.1)),
    "adamw no_decay clip_norm": dict(optimizer=functools.partial(Adam, decoupled=True), no_decay=BIASES_AND_NORMS,
                                     clip_norm=0.5),
    # AMSGrad: one more slot (v_max) in the optimiser state
    "adam amsgrad": dict(optimizer=functools.partial(Adam, amsgrad=True)),
    # an epoch-based schedule, whose steps per epoch fit sets in each run: halved every epoch
    "sgd per_epoch": dict(schedule=lambda: PerEpoch(StepDecay(0.05, 1, 0.5))),
    # the plateau state (rate, best test loss, counts) in the checkpoint: patience 0 and a 30% threshold make
    # a reduction at most epochs (test_checkpoint_resume_gives_identical_numbers checks that some happen)
    "sgd reduce_on_plateau": dict(schedule=lambda: ReduceOnPlateau(0.05, "test_loss", patience=0, threshold=0.3,
                                                                   factor=0.5)),
}


@pytest.mark.parametrize("options", _OPTIONS)
@pytest.mark.parametrize("flat", [False, True], ids=["separate parameters", "flattened parameters"])
def test_checkpoint_resume_gives_identical_numbers(digits, tmp_path, flat, options):
    options = _OPTIONS[options]
    straight, opt_s, hist_s = _tiny_run(digits, tmp_path, 3, False, "straight.npz", flat, **options)
    _tiny_run(digits, tmp_path, 2, False, flat=flat, **options)  # interrupted after two epochs ...
    resumed, opt_r, hist_r = _tiny_run(digits, tmp_path, 3, True, flat=flat, **options)  # ... resumed in a new model
    for name, p in straight.named_parameters().items():
        np.testing.assert_array_equal(resumed.named_parameters()[name], p)
    for name, b in straight.named_buffers().items():
        np.testing.assert_array_equal(resumed.named_buffers()[name], b)
    assert opt_r.t == opt_s.t
    for field in ("epoch", "loss", "accuracy", "test_loss", "test_accuracy", "lr"):
        assert getattr(hist_r, field) == getattr(hist_s, field)
    if isinstance(opt_s.schedule, ReduceOnPlateau):
        assert opt_r.schedule.state_dict() == opt_s.schedule.state_dict()
        assert hist_s.lr[2] < hist_s.lr[1], "no reduction after the resumed epoch: the test checks nothing of it"


def test_checkpoint_rejects_another_architecture(digits, tmp_path):
    model = build_model("vgg", (8, 8), 10, width=3, rng=0)
    path = save_checkpoint(tmp_path / "a.npz", model, SGD(model.named_parameters(), lr=0.1), epoch=1)
    other = build_model("vgg", (8, 8), 10, width=4, rng=0)
    with pytest.raises(ValueError, match="has shape"):
        load_checkpoint(path, other)
    assert load_checkpoint(path, model)["epoch"] == 1


def test_nan_loss_stops_training_with_a_clear_message(digits):
    # lr = 1e30 in float32: the first step sends the weights to ~1e30, the next forward pass
    # overflows to inf and the logits to NaN (the stable log-softmax keeps finite logits finite).
    def run(**kwargs):
        model = build_model("vgg", digits.in_shape, 10, width=3, rng=0, batch_norm=False, dtype=np.float32)
        opt = SGD(model.named_parameters(), lr=1e30)
        return model, fit(model, digits.X_train[:64], digits.y_train[:64], optimizer=opt, epochs=2, batch_size=16,
                          rng=0, **kwargs)

    with pytest.raises(TrainingDivergedError, match=r"training loss is (nan|inf) at epoch 1, batch 2 .* diverged"):
        run()
    model, history = run(on_divergence="stop")
    assert history.diverged and "Lower the learning rate" in history.message and history.epoch == []
    assert all(np.isfinite(p).all() for p in model.named_parameters().values())


def test_fit_leaves_the_models_input_checks_on_even_after_divergence(digits):
    """fit checks the data once and spares the model's per-batch check; the model checks again after."""
    model = build_model("vgg", digits.in_shape, 10, width=3, rng=0, batch_norm=False, dtype=np.float32)
    with pytest.raises(TrainingDivergedError):
        fit(model, digits.X_train[:64], digits.y_train[:64], optimizer=SGD(model.named_parameters(), lr=1e30),
            epochs=1, batch_size=16, rng=0)
    bad = digits.X_train[:2].astype(np.float32)
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite"):
        model.forward(bad)


def test_fit_rejects_bad_inputs_naming_the_argument(digits):
    model = build_model("vgg", digits.in_shape, 10, width=2, rng=0)
    X, y = digits.X_train[:8], digits.y_train[:8]
    with pytest.raises(ValueError, match=r"X has images of shape \(28, 28, 1\)"):
        fit(model, np.zeros((8, 28, 28, 1)), y, epochs=1)
    with pytest.raises(ValueError, match="X has 3 channels"):
        fit(model, np.zeros((8, 8, 8, 3)), y, epochs=1)
    bad = X.copy()
    bad[2, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        fit(model, bad, y, epochs=1)
    with pytest.raises(ValueError, match="y holds the label 10, out of range for 10 classes"):
        fit(model, X, np.full(8, 10), epochs=1)
    with pytest.raises(ValueError, match="y has 7 labels but there are 8 samples"):
        fit(model, X, y[:7], epochs=1)
    with pytest.raises(ValueError, match="X_test has 2 channels"):
        fit(model, X, y, X_test=np.zeros((3, 8, 8, 2)), y_test=np.zeros(3, dtype=int), epochs=1)
    with pytest.raises(ValueError, match="y_test holds the label -1"):
        fit(model, X, y, X_test=X, y_test=np.full(8, -1), epochs=1)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint path"):
        fit(model, X, y, epochs=1, resume=True)


def test_fit_with_a_square_loss_trains_real_targets_as_the_loop_of_batches_and_train_steps(digits):
    # real targets (n, K) with loss=SquareLoss(): fit is the loop over batches (one Generator across epochs) of
    # train_step, parameter for parameter; the loss falls below half its start; accuracies are NaN, and evaluate's
    # loss is (1 / 2n) sum |f - Y|^2 typed out with numpy
    from shallow.cnn import batches
    from shallow.cnn.train import train_step

    X = digits.X_train[:32]
    Y = np.random.default_rng(7).standard_normal((32, 3))
    models = [build_model("vgg", digits.in_shape, 3, width=2, rng=0) for _ in range(2)]
    history = fit(models[0], X, Y, loss=SquareLoss(), optimizer=Adam(models[0].named_parameters(), lr=1e-2),
                  epochs=20, batch_size=16, rng=0, X_test=X[:8], y_test=Y[:8])
    loss, opt, rng = SquareLoss(), Adam(models[1].named_parameters(), lr=1e-2), np.random.default_rng(0)
    first = loss(models[1].eval().forward(X), Y)
    models[1].train()
    for _ in range(20):
        for xb, yb in batches(X, Y, 16, rng=rng):
            train_step(models[1], loss, opt, xb, yb)
    for name, p in models[1].named_parameters().items():
        np.testing.assert_array_equal(models[0].named_parameters()[name], p)
    value, acc = evaluate(models[0], X, Y, SquareLoss())
    assert value == pytest.approx(0.5 * np.sum((predict(models[0], X) - Y) ** 2) / 32, rel=1e-6)
    assert value < 0.5 * first and np.isnan(acc)
    assert np.isnan(history.accuracy).all() and np.isnan(history.test_accuracy).all()
    with pytest.raises(ValueError, match=r"y must be class labels of shape \(n,\), got shape \(32, 3\) \(for real "
                                         r"targets of shape \(n, K\), train with loss=SquareLoss\(\)\)"):
        fit(models[0], X, Y, epochs=1)  # the cross-entropy takes labels only
    with pytest.raises(ValueError, match=r"y must be class labels of shape \(32,\) or real targets of shape \(32, 3\)"):
        fit(models[0], X, Y[:, :2], loss=SquareLoss(), epochs=1)


def test_fit_with_a_square_loss_takes_class_labels_as_floats_of_integer_value(digits):
    # a vector for a model of 10 outputs holds labels, as for SquareLoss itself and check_labels; floats of integer
    # value were read as real targets and refused ("integer labels of shape (64,) ... got shape (64,)")
    X, y = digits.X_train[:64], digits.y_train[:64]
    runs = []
    for labels in (y, y.astype(np.float64)):
        model = build_model("vgg", digits.in_shape, 10, width=2, rng=0)
        runs.append((fit(model, X, labels, loss=SquareLoss(), epochs=1, rng=0), model))
    assert runs[0][0].accuracy == runs[1][0].accuracy and 0 <= runs[0][0].accuracy[0] <= 1
    for name, p in runs[0][1].named_parameters().items():
        np.testing.assert_array_equal(runs[1][1].named_parameters()[name], p)

def test_linearized_model_trains_with_the_same_loop(digits):
    # the lazy objective (1/alpha^2) L(alpha f_lin) with the square loss decreases
    model = build_model("vgg", digits.in_shape, 10, width=3, rng=0, centering="frozen", alpha=10.0)
    lin = linearize(model)
    X, y = digits.X_train[:128].astype(np.float64), digits.y_train[:128]
    history = fit(lin, X, y, loss=SquareLoss(scale=1e-2), optimizer=Adam(lin.named_parameters(), lr=1e-3),
                  epochs=3, batch_size=32, rng=0)
    assert history.loss[-1] < history.loss[0]
    theta0 = model.named_parameters()
    for name, p in lin.base.named_parameters().items():  # the reference does not move
        np.testing.assert_array_equal(p, theta0[name])


def test_predict_and_evaluate_leave_the_model_in_its_mode(digits):
    model = build_model("resnet", digits.in_shape, 10, width=2, rng=0)
    out = predict(model, digits.X_test[:10], batch_size=4)
    assert out.shape == (10, 10) and model.training
    loss, acc = evaluate(model.eval(), digits.X_test[:10], digits.y_test[:10])
    assert np.isfinite(loss) and 0 <= acc <= 1 and not model.training


def test_callback_can_stop_training_and_the_progress_bar_runs(digits):
    model = build_model("vgg", digits.in_shape, 10, width=2, rng=0)
    calls = []

    def callback(history, m):
        calls.append(history.epoch[-1])
        return len(history.epoch) == 2

    history = fit(model, digits.X_train[:32], digits.y_train[:32], epochs=5, batch_size=16, rng=0,
                  callback=callback, progress=True)
    assert calls == [1, 2] and history.epoch == [1, 2] and "callback" in history.message


def test_relative_change_is_the_relative_euclidean_distance_to_the_snapshot():
    from shallow.cnn import relative_change, snapshot
    model = build_model("vgg", (8, 8), 3, width=2, rng=0)
    theta0 = snapshot(model)
    assert relative_change(model, theta0) == 0.0
    for p in model.named_parameters().values():
        p *= 1.5  # theta - theta_0 = 0.5 theta_0
    assert relative_change(model, theta0) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("reference", [
    lambda model: {**snapshot(model), "net.1.beta": np.zeros(1)},  # broadcast: a silently wrong number
    lambda model: build_model("vgg", (8, 8), 3, width=3, rng=0),  # another width: failed inside numpy
], ids=["a (1,) beta", "another width"])
def test_relative_change_refuses_parameters_of_other_shapes_than_the_reference(reference):
    model = build_model("vgg", (8, 8), 3, width=2, rng=0)
    with pytest.raises(ValueError, match=r"params\['net\.[01]\.(W|beta)'\] has shape .* but reference\[.*\] has shape .*: "
                                         "theta and theta_0 must be parameters of one architecture"):
        relative_change(model, reference(model))


@pytest.mark.parametrize("augment", [lambda X, rng: X[:, :6, :6], lambda X, rng: X[:1]], ids=["crop", "one image"])
def test_fit_refuses_an_augmentation_that_changes_the_batch_shape(augment):
    # the model skips its input checks within fit (the data set was checked once): 6x6 crops
    # trained an 8x8 model silently (global pooling takes any size); a single image was blamed on y
    model = build_model("vgg", (8, 8), 3, width=2, rng=0)
    X, y = np.random.default_rng(0).standard_normal((8, 8, 8, 1)), np.arange(8) % 3
    with pytest.raises(ValueError, match=r"augment must return a batch of the shape it is given, \(4, 8, 8, 1\), got"):
        fit(model, X, y, epochs=1, batch_size=4, augment=augment)


def test_fit_and_captured_steps_refuse_an_optimizer_of_other_arrays_than_the_model():
    # An optimiser on another model of the same architecture, or on this one before .to() moved
    # and repacked its parameters, updated arrays the model no longer reads: training left the
    # model unchanged, with no error. One on some of the parameters (the rest frozen) is fine.
    from shallow.cnn import CapturedStep, CrossEntropy
    model, X, y = _tiny()
    other = build_model("vgg", (8, 8), 3, width=2, rng=0)
    before_to = SGD(model.named_parameters(), lr=0.1)
    model.to("cpu")
    for optimizer in (SGD(other.named_parameters(), lr=0.1), before_to):
        with pytest.raises(ValueError, match="optimizer updates arrays that are not the model's parameters"):
            fit(model, X, y, epochs=1, batch_size=3, optimizer=optimizer)
        with pytest.raises(ValueError, match="optimizer updates arrays that are not the model's parameters"):
            CapturedStep(model, CrossEntropy(), optimizer)
    last = {k: v for k, v in model.named_parameters().items() if k.startswith("net.") and k.endswith(".b")}
    start = {k: v.copy() for k, v in last.items()}
    fit(model, X, y, epochs=1, batch_size=3, optimizer=SGD(last, lr=0.1))
    assert any(not np.array_equal(last[k], start[k]) for k in last)  # the subset trained


def _tiny():
    """A 3-class VGG on 8x8 images and 6 random images: the checks below run before any training step."""
    rng = np.random.default_rng(0)
    return build_model("vgg", (8, 8), 3, width=2, rng=0), rng.standard_normal((6, 8, 8, 1)), np.arange(6) % 3


@pytest.mark.parametrize("kwargs, error, match", [
    ({"loss": "ce"}, TypeError, "loss must be a loss object with value_and_grad"),
    ({"loss": SquareLoss}, TypeError, r"got the class SquareLoss: pass SquareLoss\(\)"),
    ({"augment": 3}, TypeError, "augment must be callable or None, got int"),
    ({"callback": "stop"}, TypeError, "callback must be callable or None, got str"),
    ({"checkpoint": 3}, TypeError, r"checkpoint must be a path \(str or pathlib.Path\) or None, got int"),
    ({"X_test": np.zeros((0, 8, 8, 1)), "y_test": np.zeros(0, int)}, ValueError, "X_test holds no images"),
])
def test_fit_refuses_bad_arguments_before_the_first_step(kwargs, error, match):
    # Each of these used to fail inside the loop: at the first step (loss, augment), after the first
    # epoch (callback, checkpoint path, an empty test set: a ZeroDivisionError in the loss).
    model, X, y = _tiny()
    with pytest.raises(error, match=match):
        fit(model, X, y, epochs=1, **kwargs)


def test_evaluate_refuses_an_empty_batch_and_predict_a_model_that_is_not_a_layer():
    model, X, y = _tiny()
    with pytest.raises(ValueError, match="X holds no images: the mean loss and the accuracy of no data"):
        evaluate(model, X[:0], y[:0])  # was a ZeroDivisionError inside the cross-entropy
    with pytest.raises(TypeError, match="loss must be a loss object"):
        evaluate(model, X, y, loss="ce")
    with pytest.raises(TypeError, match="model must be a Layer, got int"):
        predict(3, X)  # was an AttributeError on model.dtype


@pytest.mark.parametrize("epoch", [-1, 1.7, "3"])
def test_save_checkpoint_refuses_an_epoch_that_is_not_a_non_negative_integer(epoch, tmp_path):
    # -1 was saved (a resumed fit then ran one epoch more), 1.7 truncated to 1 and "3" parsed to 3.
    model, _, _ = _tiny()
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        save_checkpoint(tmp_path / "c.npz", model, epoch=epoch)


@pytest.mark.parametrize("kwargs, match", [
    ({"model": 3}, "model must be a Layer, got int"),
    ({"optimizer": 3}, "optimizer must be an Optimizer or None, got int"),
    ({"rng": 3}, "rng must be the loop's numpy Generator or None, got int"),
])
def test_checkpoints_refuse_arguments_of_the_wrong_type(kwargs, match, tmp_path):
    # These failed deep in the save or the load with AttributeErrors ('int' has no 'bit_generator', ...).
    model, _, _ = _tiny()
    path = save_checkpoint(tmp_path / "c.npz", model)
    args = {"model": model, **kwargs}
    with pytest.raises(TypeError, match=match):
        save_checkpoint(path, **args)
    with pytest.raises(TypeError, match=match):
        load_checkpoint(path, **args)


def test_save_checkpoint_refuses_a_history_that_is_not_a_history(tmp_path):
    with pytest.raises(TypeError, match="history must be a History or None, got dict"):
        save_checkpoint(tmp_path / "c.npz", _tiny()[0], history={"loss": []})  # was an AttributeError


def test_linearized_jvp_refuses_tangents_of_unknown_names_or_wrong_shapes():
    # A misspelt name was ignored (a zero tangent, returned as None); a wrong shape failed deep in a layer.
    lin = linearize(_tiny()[0])
    X = np.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match=r"tparams has names \['net.0.w'\] that are not parameters"):
        lin.jvp(X, None, {"net.0.w": np.ones((3, 3, 1, 2))})
    with pytest.raises(ValueError, match=r"tparams\['net.0.W'\] has shape \(3,\) but the parameter"):
        lin.jvp(X, None, {"net.0.W": np.ones(3)})


def _resume_run(digits, path, *, epochs=2, width=3, alpha=2.0, lr=Cosine(0.05, 20), momentum=0.9,
                weight_decay=1e-4, batch_size=16, dtype=np.float64, shift=1, n=64, offset=0, optimizer=SGD,
                no_decay=BIASES_AND_NORMS, clip_norm=1.0, loss=None):
    model = build_model("vgg", digits.in_shape, 10, width=width, rng=1, alpha=alpha, dtype=dtype)
    if optimizer is SGD:
        opt = SGD(model.named_parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, no_decay=no_decay,
                  clip_norm=clip_norm)
    else:
        opt = optimizer(model.named_parameters(), lr=0.01)
    X, y = digits.X_train[offset:offset + n], digits.y_train[offset:offset + n]
    fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=batch_size, rng=2, augment=Augment(shift=shift),
        checkpoint=path, resume=True, loss=loss)
    return model


@pytest.mark.parametrize("change, match", [
    (dict(lr=Cosine(0.1, 20)), r"optimizer.schedule: 'Cosine\(0.1, .*\(saved: 'Cosine\(0.05, "),
    (dict(momentum=0.5), r"optimizer.momentum: 0.5 \(saved: 0.9\)"),
    (dict(weight_decay=0.0), r"optimizer.weight_decay: 0.0 \(saved: 0.0001\)"),
    (dict(optimizer=Adam), r"optimizer: 'Adam' \(saved: 'SGD'\)"),
    (dict(batch_size=32), r"batch_size: 32 \(saved: 16\)"),
    (dict(alpha=4.0), r"model: another architecture"),
    (dict(dtype=np.float32), r"dtype: 'float32' \(saved: 'float64'\)"),
    (dict(shift=2), r"augment: 'Augment\(shift=2"),
    (dict(offset=64), r"data: the training data \(X, y\) differ"),
    (dict(epochs=1), r"has completed 2 epochs, more than epochs=1"),
    (dict(no_decay=None), r"optimizer.no_decay: None \(saved: \['b', 'gamma', 'beta'\]\)"),
    (dict(no_decay="b"), r"optimizer.no_decay: \['b'\] \(saved: \['b', 'gamma', 'beta'\]\)"),
    (dict(clip_norm=None), r"optimizer.clip_norm: None \(saved: 1.0\)"),
    (dict(loss=CrossEntropy(label_smoothing=0.1)), r"loss: 'CrossEntropy\(scale=1.0, label_smoothing=0.1\)'"),
    (dict(lr=ReduceOnPlateau(0.05, patience=2)), r"optimizer.schedule: \"ReduceOnPlateau\(0.05, monitor='loss'"),
])
def test_resume_refuses_a_checkpoint_of_a_run_with_other_settings(digits, tmp_path, change, match):
    # fit(resume=True) continues the run the checkpoint saved; it used to go on silently with another
    # learning rate, momentum, optimiser, batch size, model (same parameter names and shapes), dtype,
    # augmentation or data, and to return a model of 2 epochs for epochs=1.
    path = tmp_path / "run.npz"
    _resume_run(digits, path)
    with pytest.raises(ValueError, match=match):
        _resume_run(digits, path, **change)
    same = _resume_run(digits, path, epochs=3)  # the saved settings resume (and the refusal changed nothing)
    assert load_checkpoint(path, same)["epoch"] == 3


@pytest.mark.parametrize("damage, match", [
    (lambda good: good[:5000], "not an .npz archive"),  # a copy cut short
    (lambda good: b"", "not an .npz archive"),
    (lambda good: b"epoch,loss\n1,0.5\n", "not an .npz archive"),
    (lambda good: None, "not a checkpoint of shallow.cnn.train .*no 'epoch' entry"),  # another .npz archive
])
def test_resume_from_a_file_that_is_not_a_checkpoint_is_refused_naming_it(digits, tmp_path, damage, match):
    # these gave zipfile.BadZipFile, EOFError, numpy's message about pickled data, or KeyError: 'epoch'
    path = tmp_path / "run.npz"
    _resume_run(digits, path, epochs=1)
    data = damage(path.read_bytes())
    if data is None:
        np.savez(path, times=np.arange(3.0), risks=np.ones(3))
    else:
        path.write_bytes(data)
    with pytest.raises(ValueError, match=match):
        _resume_run(digits, path, epochs=2)

def test_fit_refuses_a_checkpoint_path_that_is_a_folder_before_training(tmp_path):
    # used to train an epoch, then stop with IsADirectoryError on renaming the checkpoint over the folder
    net = _plain_net()
    before = {name: p.copy() for name, p in net.named_parameters().items()}
    X = np.random.default_rng(0).standard_normal((8, 4, 4, 1))
    with pytest.raises(ValueError, match="checkpoint=.* is a folder"):
        fit(net, X, np.arange(8) % 4, epochs=1, rng=0, checkpoint=tmp_path)
    assert all(np.array_equal(p, before[name]) for name, p in net.named_parameters().items())


def _plain_net(seed=0):
    """A model without batch statistics or dropout, and without in_shape or n_classes attributes:
    conv 3x3 (1 -> 3 channels), relu, global average, linear 3 -> 4."""
    from shallow.cnn import Activation, Conv2d, GlobalAvgPool2d, Linear, Sequential

    return Sequential(Conv2d(1, 3, 3, padding=1, rng=seed), Activation("relu"), GlobalAvgPool2d(),
                      Linear(3, 4, rng=seed + 1))


def _cross_entropy_and_accuracy(out, y):
    """Mean softmax cross-entropy and accuracy from their definitions (scipy's logsumexp)."""
    from scipy.special import logsumexp

    return float(np.mean(logsumexp(out, axis=1) - out[np.arange(len(y)), y])), float(np.mean(out.argmax(1) == y))


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_history_loss_and_accuracy_are_the_epochs_means_over_samples(batch_size):
    # lr = 0 keeps the parameters: every batch's loss is then that of the fixed network, and the epoch's
    # loss and accuracy are the means over the 10 samples (batches of 4, 4 and 2 weigh 4, 4 and 2)
    rng = np.random.default_rng(21)
    X, y = rng.standard_normal((10, 5, 5, 1)), rng.integers(0, 4, 10)
    model = _plain_net()
    expected_loss, expected_acc = _cross_entropy_and_accuracy(model.forward(X), y)
    start = time.perf_counter()
    history = fit(model, X, y, optimizer=SGD(model.named_parameters(), lr=0.0), epochs=2,
                  batch_size=batch_size, rng=0)
    elapsed = time.perf_counter() - start
    assert history.epoch == [1, 2] and history.lr == [0.0, 0.0]
    assert all(0 < t <= elapsed for t in history.time) and sum(history.time) <= elapsed
    assert history.loss == pytest.approx([expected_loss] * 2, rel=1e-12)
    assert history.accuracy == pytest.approx([expected_acc] * 2, abs=1e-15)


def test_fit_of_zero_epochs_trains_nothing():
    rng = np.random.default_rng(22)
    X, y = rng.standard_normal((6, 5, 5, 1)), rng.integers(0, 4, 6)
    model = _plain_net()
    before = {k: v.copy() for k, v in model.named_parameters().items()}
    history = fit(model, X, y, epochs=0, rng=0)
    assert history.epoch == [] and history.loss == []
    for name, value in model.named_parameters().items():
        np.testing.assert_array_equal(value, before[name])


def test_fit_default_optimizer_is_sgd_with_lr_5e_minus_2_and_momentum_0_9():
    # the documented default, against the same run with the optimiser spelt out
    rng = np.random.default_rng(23)
    X, y = rng.standard_normal((8, 5, 5, 1)), rng.integers(0, 4, 8)
    a, b = _plain_net(), _plain_net()
    fit(a, X, y, epochs=2, batch_size=4, rng=1)
    fit(b, X, y, optimizer=SGD(b.named_parameters(), lr=0.05, momentum=0.9), epochs=2, batch_size=4, rng=1)
    for name, value in a.named_parameters().items():
        np.testing.assert_array_equal(value, b.named_parameters()[name])


def test_fit_saves_a_checkpoint_every_checkpoint_every_epochs_at_the_end_and_when_stopped(tmp_path):
    # the callback of epoch e runs before that epoch's checkpoint: it sees the last one saved before
    rng = np.random.default_rng(24)
    X, y = rng.standard_normal((6, 5, 5, 1)), rng.integers(0, 4, 6)
    path = tmp_path / "run.npz"

    def saved_epoch():
        return load_checkpoint(path, _plain_net())["epoch"] if path.exists() else None

    seen = []
    fit(_plain_net(), X, y, epochs=5, batch_size=3, rng=0, checkpoint=path, checkpoint_every=3,
        callback=lambda history, model: seen.append(saved_epoch()))
    assert seen == [None, None, None, 3, 3] and saved_epoch() == 5
    path.unlink()
    fit(_plain_net(), X, y, epochs=5, batch_size=3, rng=0, checkpoint=path, checkpoint_every=4,
        callback=lambda history, model: len(history.epoch) == 2)
    assert saved_epoch() == 2


def test_fit_checks_test_images_against_the_training_images_when_the_model_has_no_input_shape():
    rng = np.random.default_rng(25)
    X, y = rng.standard_normal((6, 5, 5, 1)), rng.integers(0, 4, 6)
    with pytest.raises(ValueError, match=r"X_test has images of shape \(6, 6, 1\) but the model expects"):
        fit(_plain_net(), X, y, X_test=rng.standard_normal((2, 6, 6, 1)), y_test=[0, 1], epochs=1, rng=0)


def test_predict_in_batches_of_one_and_of_no_images():
    # row by row equals all at once (no batch statistics); no images give an empty (0, K) array
    rng = np.random.default_rng(26)
    X = rng.standard_normal((5, 8, 8, 1))
    model = build_model("vgg", (8, 8, 1), 10, width=2, rng=0).eval()
    np.testing.assert_allclose(predict(model, X, batch_size=1), model.forward(X), rtol=1e-13, atol=1e-15)
    empty = predict(model, X[:0])
    assert empty.shape == (0, 10)


def test_load_checkpoint_rejects_nan_parameters_naming_the_checkpoint_and_parameter(tmp_path):
    # a checkpoint of NaN parameters was loaded without a word: every output then NaN
    model = vgg_small((8, 8, 1), 3, width=2, rng=0)
    next(iter(model.named_parameters().values()))[...] = np.nan
    path = save_checkpoint(tmp_path / "nan.npz", model)
    with pytest.raises(ValueError, match=r"parameter '0.W' contains 18 NaN"):
        load_checkpoint(path, vgg_small((8, 8, 1), 3, width=2, rng=0))


def test_history_from_json_refuses_text_that_is_not_a_history():
    # a JSON list failed with Python's "argument after ** must be a mapping", an unknown field with a
    # TypeError from the dataclass; the round trip itself is exact (JSON keeps floats to the last bit)
    from shallow.cnn.train import History

    h = History(epoch=[1, 2], loss=[0.5, 0.1 + 0.2], lr=[1e-3, 3e-310], diverged=True, message="x")
    assert History.from_json(h.to_json()) == h
    with pytest.raises(ValueError, match="text must hold the JSON object written by History.to_json, got a list"):
        History.from_json("[1]")
    with pytest.raises(ValueError, match="fields that a History does not have: learning_rate"):
        History.from_json('{"epoch": [1], "learning_rate": [0.1]}')


def test_train_step_refuses_labels_out_of_range_and_leaves_the_parameters():
    # labels out of range failed with numpy's IndexError inside the loss; now the loss's check names y,
    # before backward and the update
    from shallow.cnn import CrossEntropy
    from shallow.cnn.train import train_step

    model = vgg_small(in_shape=(8, 8, 1), n_classes=3, width=2, rng=0)
    opt = SGD(model.named_parameters(), lr=0.1)
    before = snapshot(model)
    x = np.random.default_rng(1).standard_normal((4, 8, 8, 1))
    with pytest.raises(ValueError, match="y"):
        train_step(model, CrossEntropy(), opt, x, np.array([0, 1, 2, 3]))
    assert relative_change(model, before) == 0.0


def test_evaluate_of_a_model_with_nan_outputs_gives_nan_loss_and_accuracy():
    # accuracy refuses NaN outputs; evaluate (called by fit on the test set after each epoch) reports
    # a diverged model as NaN, as fit's history does, instead of raising from accuracy
    model = build_model("vgg", (8, 8, 1), 3, width=2, rng=0)
    for _, p in model.named_parameters().items():
        p[...] = np.nan
    value, acc = evaluate(model, np.zeros((4, 8, 8, 1)), np.arange(4) % 3)
    assert np.isnan(value) and np.isnan(acc)


def test_evaluate_gives_the_accuracy_of_finite_outputs_whose_loss_overflows():
    # Finite outputs have an argmax, whatever their loss: logits (9.6e307, -9.6e307) on every image (a linear
    # model on images of ones) give the cross-entropy log(1 + e^{-z0 + z1}) = inf for label 1, 0 for label 0, so
    # the mean loss is inf; every argmax is class 0, so labels (1, 0) are half right (counted by hand). Only
    # NaN outputs, whose loss is NaN, have no accuracy (the test above).
    lin = Linear(16, 2, rng=0)
    lin.params["W"][...] = np.array([6e306, -6e306])  # each row of W: (16, 2)
    lin.params["b"][...] = 0.0
    model = Sequential(Flatten(), lin)
    value, acc = evaluate(model, np.ones((2, 4, 4, 1)), np.array([1, 0]))
    assert value == np.inf and acc == 0.5


def test_evaluate_gives_the_accuracy_of_outputs_with_a_plus_inf_logit():
    # Weights (+inf, 0) on images of ones: logits (+inf, 0) on both images. A +inf logit is a class of
    # probability 1: loss 0 for label 0, +inf for label 1 (the limit of large finite logits), mean +inf; the
    # argmax is class 0 on both, so labels (1, 0) are half right, labels (0, 0) all right with loss 0 (by hand).
    # Was NaN for both numbers.
    lin = Linear(16, 2, rng=0)
    lin.params["W"][...] = np.array([np.inf, 0.0])  # each row of W: (16, 2)
    lin.params["b"][...] = 0.0
    model = Sequential(Flatten(), lin)
    value, acc = evaluate(model, np.ones((2, 4, 4, 1)), np.array([1, 0]))
    assert value == np.inf and acc == 0.5
    assert evaluate(model, np.ones((2, 4, 4, 1)), np.array([0, 0])) == (0.0, 1.0)  # the +inf class is the label


def test_predict_computes_in_eval_mode_and_restores_train_mode():
    # A model in train mode with dropout p = 1/2: predict's outputs are those of eval mode, where dropout
    # is the identity, i.e. the affine map x W + b of the flattened images (closed form, rounding only:
    # float64 products of 16 terms, 1e-12 relative); the model is in train mode again afterwards.
    lin = Linear(16, 3, rng=1)
    model = Sequential(Flatten(), Dropout(0.5, rng=0), lin)
    X = np.random.default_rng(2).standard_normal((5, 4, 4, 1))
    expected = X.reshape(5, 16) @ lin.params["W"] + lin.params["b"]
    np.testing.assert_allclose(predict(model, X, batch_size=2), expected, rtol=1e-12, atol=1e-12)
    assert model.training


def test_an_infinite_loss_stops_the_run_at_its_batch_with_the_parameters_before_it():
    # The guard is on a loss that is NaN *or infinite* (module notes). Square-loss targets of 1e300 give residuals
    # of 1e300, whose squares overflow: the loss of the first batch is +inf (not NaN). The run stops there, saying
    # so, with the parameters of the initialisation (train_step skips the update of a non-finite loss).
    rng = np.random.default_rng(26)
    X, Y = rng.standard_normal((6, 5, 5, 1)), np.full((6, 4), 1e300)
    model = _plain_net()
    before = snapshot(model)
    history = fit(model, X, Y, loss=SquareLoss(), optimizer=SGD(model.named_parameters(), lr=0.01), epochs=2,
                  batch_size=3, rng=0, on_divergence="stop")
    assert history.diverged and "training loss is inf at epoch 1, batch 1 of 2" in history.message
    assert history.epoch == [] and relative_change(model, before) == 0.0


def test_train_step_with_a_non_finite_loss_puts_the_running_statistics_back():
    # train_step's Notes: when the loss is not finite the update is skipped and the running statistics of batch
    # normalisation, which the train-mode forward pass moved, are put back: the model is as it was before the step
    # (compared bit for bit with copies taken before). Targets of 1e300 make the square loss +inf.
    from shallow.cnn.train import train_step

    model = build_model("vgg", (8, 8, 1), 3, width=2, rng=0).train()
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    buffers = {name: b.copy() for name, b in model.named_buffers().items() if "running" in name}
    params = snapshot(model)
    assert buffers
    x = np.random.default_rng(3).standard_normal((4, 8, 8, 1))
    with np.errstate(over="ignore"):
        value, _ = train_step(model, SquareLoss(), opt, x, np.full((4, 3), 1e300))
    assert value == np.inf and opt.t == 0
    for name, b in buffers.items():
        np.testing.assert_array_equal(model.named_buffers()[name], b)
    assert relative_change(model, params) == 0.0


def test_history_lr_is_the_rate_of_each_epochs_last_step():
    # History.lr holds "the learning rate of the epoch's last step": 6 images in batches of 2 are steps t = 3e - 3,
    # 3e - 2, 3e - 1 in epoch e, and StepDecay(0.01, 1, 1/2) gives eta_t = 0.01 / 2^t (dyadic factors: exact)
    rng = np.random.default_rng(27)
    X, y = rng.standard_normal((6, 5, 5, 1)), rng.integers(0, 4, 6)
    model = _plain_net()
    opt = SGD(model.named_parameters(), lr=StepDecay(0.01, step_size=1, gamma=0.5))
    history = fit(model, X, y, optimizer=opt, epochs=3, batch_size=2, rng=0)
    assert history.lr == [0.01 / 2 ** (3 * e - 1) for e in (1, 2, 3)]


# ----------------------------------------------------------------------------- inference keeps no caches

def _inference_models():
    """Models whose layers cache in every way: batch norm, pooling, dropout, residual blocks, an i-RevNet
    that recomputes, a scattering layer, p4 convolutions (whose Conv2d is no child), a linearised model (jvp)."""
    from shallow.cnn import ScatteringLayer, irevnet_small, p4_cnn
    base = build_model("vgg", (8, 8, 1), 10, width=3, rng=0, dropout=0.3)
    return {
        "vgg": base,
        "resnet": build_model("resnet", (8, 8, 1), 10, width=4, rng=1, centering="antisymmetric"),
        "irevnet_recompute": irevnet_small((8, 8, 1), 10, width=4, blocks=1, rng=2, recompute=True),
        "scattering": Sequential(ScatteringLayer(1, (8, 8), L=4), Flatten(), Linear(4 * 4 * 5, 10, rng=3)),
        "p4": p4_cnn((8, 8, 1), 10, width=2, rng=4),
        "linearized": linearize(base),
    }


def _all_layers(model):
    """The layers of the tree and the Conv2d that a p4 convolution keeps outside its children."""
    layers = [layer for _, layer in model.named_layers()]
    return layers + [layer.conv for layer in layers if hasattr(layer, "conv")]


@pytest.mark.parametrize("name", ["vgg", "resnet", "irevnet_recompute", "scattering", "p4", "linearized"])
def test_predict_and_evaluate_without_caches_equal_the_cached_eval_forward_bitwise(name):
    # Releasing a layer's cache once it has run changes no operation of the pass: the outputs of predict are
    # the same floats as those of forward in eval mode (which caches), batch by batch, and evaluate's loss and
    # accuracy are those of these outputs. Nothing stays cached afterwards.
    from shallow.cnn import CrossEntropy, accuracy
    model = _inference_models()[name]
    rng = np.random.default_rng(40)
    X, y = rng.standard_normal((7, 8, 8, 1)), rng.integers(0, 10, 7)
    model.eval()
    cached = np.concatenate([model.forward(X[k:k + 3]) for k in range(0, 7, 3)])
    model.train()
    out = predict(model, X, batch_size=3)
    np.testing.assert_array_equal(out, cached)
    assert model.training  # the mode is restored
    assert all(layer._cache is None for layer in _all_layers(model))
    value, acc = evaluate(model, X, y, batch_size=3)
    assert value == CrossEntropy().value_and_grad(cached, y)[0]
    assert acc == accuracy(cached, y)


def test_backward_after_a_pass_without_caches_raises():
    # predict and evaluate keep no caches, so there is nothing to differentiate: backward refuses (a Dropout
    # last, whose cache is None in eval mode anyway, included) until a forward pass outside no_cache
    from shallow.cnn import no_cache
    rng = np.random.default_rng(41)
    X = rng.standard_normal((4, 8, 8, 1))
    for model in (build_model("vgg", (8, 8, 1), 10, width=2, rng=0),
                  Sequential(Flatten(), Linear(64, 10, rng=0), Dropout(0.5, rng=0))):
        model.forward(X)  # a cached pass first: predict releases its caches too
        predict(model, X)
        with pytest.raises(RuntimeError, match="within no_cache"):
            model.backward(np.ones((4, 10)))
        with no_cache(model):
            model.forward(X)
            with pytest.raises(RuntimeError, match="within no_cache"):
                model.backward(np.ones((4, 10)))
        model.forward(X)
        assert model.backward(np.ones((4, 10))).shape == X.shape


def test_training_within_no_cache_is_refused_before_the_running_statistics_move():
    # A training step within no_cache could not run its backward (no cache), and its train-mode forward
    # would already have moved the batch norms' running statistics: fit and train_step refuse on entry, the
    # model bitwise as it was; a backward called by a library routine within the block names the block
    from shallow.cnn import no_cache
    from shallow.cnn.losses import CrossEntropy
    from shallow.cnn.robustness import input_gradient
    from shallow.cnn.train import train_step
    rng = np.random.default_rng(43)
    X, y = rng.standard_normal((8, 8, 8, 1)), rng.integers(0, 10, 8)
    model = build_model("vgg", (8, 8, 1), 10, width=2, rng=0)

    def state():
        return {(name, key): np.array(value) for name, layer in model.named_layers()
                for key, value in {**layer.params, **layer.buffers}.items()}

    before = state()
    with no_cache(model):
        with pytest.raises(RuntimeError, match="fit was called within no_cache"):
            fit(model, X, y, epochs=1, batch_size=4, rng=0)
        with pytest.raises(RuntimeError, match="train_step was called within no_cache"):
            train_step(model, CrossEntropy(), SGD(model.named_parameters(), lr=0.1), X, y)
        with pytest.raises(RuntimeError, match=r"within no_cache\(\.\.\.\), where forward passes keep no cache"):
            input_gradient(model.eval(), X, y)
    after = state()
    assert all(np.array_equal(before[key], after[key]) for key in before)


def test_predict_peak_memory_is_a_few_activations_not_every_layers_cache():
    # A VGG (16 x 16 x 3 images, width 16, float32), one batch of 64: its largest activation is
    # A = 64 * 16 * 16 * 16 * 4 bytes = 1 MiB, at each of its 7 layers of the first stage, and the eval-mode
    # forward that caches holds about 10 A at its peak (every layer's cache: the padded inputs of the
    # convolutions, the centred inputs of the batch norms, the relu masks, ...), measured by tracemalloc,
    # which sees numpy's allocations. Releasing each cache once its layer has run leaves a layer's input,
    # its output and its temporaries, about 3.3 A; the bound 6 A leaves room for another BLAS or numpy.
    # Once predict has returned it holds nothing but its (64, 10) outputs.
    import tracemalloc
    model = build_model("vgg", (16, 16, 3), 10, width=16, rng=0, dtype=np.float32)
    X = np.random.default_rng(42).standard_normal((64, 16, 16, 3)).astype(np.float32)
    predict(model, X, batch_size=64)  # the convolutions' plans, made once per shape
    A = 64 * 16 * 16 * 16 * 4
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        out = predict(model, X, batch_size=64)
        held, peak = (m - start for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert peak < 6 * A
    assert held < out.nbytes + A / 64


def test_no_cache_releases_on_entry_the_caches_of_an_earlier_pass():
    # no_cache: "On entry the caches of model's tree are released": a backward within the block, after a cached
    # forward outside it and no pass inside, has nothing to differentiate and refuses
    from shallow.cnn import no_cache
    X = np.random.default_rng(42).standard_normal((4, 8, 8, 1))
    model = build_model("vgg", (8, 8, 1), 10, width=2, rng=0)
    model.forward(X)
    with no_cache(model), pytest.raises(RuntimeError, match="within no_cache"):
        model.backward(np.ones((4, 10)))


def test_a_schedule_in_fit_counts_optimiser_steps_not_epochs():
    # fit's notes: an epoch is ceil(n / batch_size) steps, and history.lr is the rate of its last step.
    # 10 images in batches of 4: 3 steps per epoch, so epoch e ends at step 3 e - 1, whose StepDecay
    # rate is lr gamma^floor((3 e - 1) / step_size) (counted by hand: 0.5^1, 0.5^2, 0.5^4 for step_size 2)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 2, 2, 1)), rng.integers(0, 3, 10)
    net = Sequential(Flatten(), Linear(4, 3, rng=0))
    opt = SGD(net.named_parameters(), lr=StepDecay(1.0, step_size=2, gamma=0.5))
    history = fit(net, X, y, optimizer=opt, epochs=3, batch_size=4, rng=0)
    assert history.lr == [0.5, 0.25, 0.0625]
    assert opt.t == 9


def test_fit_leaves_the_model_in_train_mode():
    # fit's Returns: as a PyTorch loop, the model stays in train mode after training
    rng = np.random.default_rng(1)
    net = Sequential(Flatten(), Dropout(0.5, rng=0), Linear(4, 3, rng=0)).eval()
    fit(net, rng.standard_normal((6, 2, 2, 1)), rng.integers(0, 3, 6), epochs=1, batch_size=3, rng=0)
    assert all(layer.training for _, layer in net.named_layers())


# ----------------------------------------------------------------------------- epoch-based schedules in fit

def test_fit_sets_the_steps_per_epoch_of_a_per_epoch_schedule():
    # 10 images in batches of 4: 3 steps per epoch, which fit sets; StepLR(step_size=2, gamma=0.5) stepped once per
    # epoch gives the epochs 0, 1, 2, 3 the rates 1, 1, 0.5, 0.5 (counted by hand), every step of the epoch alike
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 2, 2, 1)), rng.integers(0, 3, 10)
    net = Sequential(Flatten(), Linear(4, 3, rng=0))
    opt = SGD(net.named_parameters(), lr=PerEpoch(StepDecay(1.0, step_size=2, gamma=0.5)))
    history = fit(net, X, y, optimizer=opt, epochs=4, batch_size=4, rng=0)
    assert history.lr == [1.0, 1.0, 0.5, 0.5]
    assert opt.schedule.steps_per_epoch == 3 and opt.t == 12
    with pytest.raises(ValueError, match="steps_per_epoch=3 steps, but these epochs have 5"):
        fit(net, X, y, optimizer=opt, epochs=1, batch_size=2, rng=0)


def test_fit_passes_the_monitored_quantity_of_each_epoch_to_reduce_on_plateau():
    # the rate of epoch e + 1 is PyTorch's rule applied to the history's monitored values of epochs 1..e
    # (tests/cnn/test_cnn_losses_optim.py checks the rule against PyTorch's written out); a rate too large for
    # this problem makes the training loss stall, and patience 0 reduces it at once
    from test_cnn_losses_optim import _torch_plateau

    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((12, 2, 2, 1)), rng.integers(0, 3, 12)
    for monitor in ("loss", "test_accuracy"):
        net = Sequential(Flatten(), Linear(4, 3, rng=0))
        schedule = ReduceOnPlateau(2.0, monitor, patience=0, factor=0.5, threshold=0.01)
        opt = SGD(net.named_parameters(), lr=schedule)
        history = fit(net, X, y, X_test=X[:6], y_test=y[:6], optimizer=opt, epochs=6, batch_size=4, rng=0)
        values = getattr(history, monitor)
        expected = [2.0] + _torch_plateau(values[:-1], 2.0, mode=schedule.mode, patience=0, factor=0.5, threshold=0.01)
        assert history.lr == expected
        assert len(set(history.lr)) > 1, monitor  # some reductions happened


def test_fit_refuses_a_plateau_on_a_test_quantity_without_a_test_set_and_on_an_accuracy_of_real_targets():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((6, 2, 2, 1))
    net = Sequential(Flatten(), Linear(4, 3, rng=0))
    opt = SGD(net.named_parameters(), lr=ReduceOnPlateau(0.1, "test_loss"))
    with pytest.raises(ValueError, match="monitors 'test_loss', which needs X_test and y_test"):
        fit(net, X, rng.integers(0, 3, 6), optimizer=opt, epochs=1)
    opt = SGD(net.named_parameters(), lr=ReduceOnPlateau(0.1, "accuracy"))
    with pytest.raises(ValueError, match="real targets have no accuracy"):
        fit(net, X, rng.standard_normal((6, 3)), loss=SquareLoss(), optimizer=opt, epochs=1)


def test_resume_accepts_a_checkpoint_written_before_a_switch_that_is_off_was_added(digits, tmp_path):
    # a checkpoint of Adam written before amsgrad existed has no "optimizer.amsgrad" setting: amsgrad=False
    # is the run it saved, and resumes; amsgrad=True is another run, refused
    import json

    path = tmp_path / "old.npz"
    _resume_run(digits, path, optimizer=Adam)
    data = dict(np.load(path))
    settings = json.loads(str(data["settings"]))
    del settings["optimizer.amsgrad"]
    data["settings"] = json.dumps(settings, sort_keys=True)
    np.savez(path, **data)
    with pytest.raises(ValueError, match=r"optimizer.amsgrad: True \(saved: None\)"):
        _resume_run(digits, path, optimizer=functools.partial(Adam, amsgrad=True), epochs=3)
    assert load_checkpoint(path, _resume_run(digits, path, optimizer=Adam, epochs=3))["epoch"] == 3


def test_epoch_mean_of_batch_gradients_is_the_full_gradient_unless_batch_norm():
    # For a loss that is a mean of per-image losses, equal batches that cover the set once (batches)
    # average to the full-batch gradient exactly (linearity of the gradient): rounding only, 1e-12.
    # With batch norm in train mode each output depends on its batch's statistics, so the average
    # differs from the full gradient by O(1) relative amounts (7% measured on digits; > 1e-3 asked).
    from shallow.cnn import CrossEntropy, batches, build_model

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 8, 8, 1)), rng.integers(0, 10, 64)
    loss = CrossEntropy()

    def grad(model, xb, yb):
        model.backward(loss.value_and_grad(model.forward(xb), yb)[1], need_input_grad=False)
        return np.concatenate([np.ravel(g).copy() for g in model.named_gradients().values()])

    for batch_norm in (False, True):
        model = build_model("vgg", (8, 8, 1), 10, width=4, rng=0, batch_norm=batch_norm)
        full = grad(model, X, y)
        mean = np.mean([grad(model, xb, yb) for xb, yb in batches(X, y, 16, rng=1)], axis=0)
        gap = np.linalg.norm(mean - full) / np.linalg.norm(full)
        assert (gap > 1e-3) if batch_norm else (gap < 1e-12), (batch_norm, gap)
