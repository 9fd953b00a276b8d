"""The group-invariance study's quick mode runs, writes its figure and sidecar, and its claims hold.

Tolerances are stated with their reasons; each holds at the study's fixed seed (seed = 0) and, measured
once, at seeds 0-7 of the quick mode (ranges quoted below).
"""

import numpy as np
import pytest

from shallow import cli


def test_group_invariance_p4_cnn_exactly_invariant_to_quarter_turns_others_not_and_gabor_first_layer(tmp_path, run_quick):
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    # Cohen & Welling 2016 on digits (quick: 500 upright training images, w = 8, 12 epochs, angles every 45 degrees;
    # at w = 4 the p4-CNN sometimes failed to leave the plateau of the uniform prediction: 0.28 at seed 6)
    _, r = run_quick("group_invariance", tmp_path)
    theta = r["angle"]
    quarter = np.isin(theta, [90.0, 180.0, 270.0])
    # p4-CNN: outputs unchanged by quarter turns up to float64 rounding (measured 2.7e-16; 1e-12 leaves
    # room for sums of a few thousand terms), so the accuracy is the same to the last test image
    assert r["invariance_error_quarter_turns_p4"] < 1e-12
    np.testing.assert_array_equal(r["accuracy_p4"][quarter], r["accuracy_p4"][0])
    assert r["accuracy_upright_p4"] > 0.75  # it learns (measured 0.876, 0.83-0.94 over seeds 0-7; chance 0.1)
    # CNN and scattering: accurate upright (measured 0.931 and 0.960; the CNN 0.92-0.95 over seeds 0-7), near
    # chance on turned digits (measured 0.22 and 0.24 on average over the quarter turns): a drop of at least 0.4
    # the quarter-turn summaries are over 90, 180 and 270 degrees only, the upright digits (0 degrees) left out:
    # the mean accuracy and the worst invariance error there
    for m in ("cnn", "p4", "scattering"):
        assert r[f"accuracy_quarter_turns_{m}"] == pytest.approx(r[f"accuracy_{m}"][quarter].mean(), rel=1e-12)
        assert r[f"invariance_error_quarter_turns_{m}"] == r[f"invariance_error_{m}"][quarter].max()
    for m in ("cnn", "scattering"):
        assert r[f"accuracy_upright_{m}"] > 0.85
        assert r[f"accuracy_quarter_turns_{m}"] < r[f"accuracy_upright_{m}"] - 0.4
        assert r[f"invariance_error_quarter_turns_{m}"] > 0.3  # measured 1.18 and 1.65
    # between the quarter turns no model is invariant: a 45 degree turn of an 8x8 digit is a large
    # deformation (measured errors about 1 for all three)
    off = np.isclose(np.mod(theta, 90.0), 45.0)
    for m in ("cnn", "p4", "scattering"):
        assert np.all(r[f"invariance_error_{m}"][off] > 0.1)
    # Gabor fits of the first layer (one quick run serves both claims)
    for key in ("cnn_init", "cnn", "cnn_update", "p4"):
        res = r[f"gabor_residual_{key}"]
        assert np.all((res > 0) & (res <= 1))  # a least-squares fit never does worse than g = 0
    # what the seed's model predicts and what we see on 8x8 digits: the learned part W_T - W_0 of the
    # 5x5 first layer is better fitted by Gabor functions than the random initial filters (medians over the
    # 16 filters measured 0.55 against 0.67 in the quick mode, below by 0.05 to 0.20 over seeds 0-7; 0.59
    # against 0.67 at the defaults). With w = 4 the medians of 8 filters crossed at seed 1 (+0.01).
    assert r["gabor_residual_median_cnn_update"] < r["gabor_residual_median_cnn_init"]


def test_group_invariance_angle_grid():
    module = cli.load_study("group_invariance")
    grid = module.angles(module.Config())
    assert grid[0] == 0 and grid[-1] == 345 and grid.size == 24
    assert np.isclose(module.invariance_error(np.ones((3, 2)), np.ones((3, 2))), 0.0)
