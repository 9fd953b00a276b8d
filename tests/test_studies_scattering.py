"""The scattering study's quick mode runs, writes its figure and sidecar, and its claims hold.

Tolerances are stated with their reasons; each holds at the study's fixed seed (seed = 0) and, measured
once, at seeds 0-7 of the quick mode (ranges quoted below).
"""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def quick(tmp_path_factory, run_quick):
    """The quick mode's result, computed once for the tests of this module (it takes ~28 s)."""
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    return run_quick("scattering_stability", tmp_path_factory.mktemp("scattering_stability"))[1]


def test_scattering_stability_scattering_is_more_stable_than_pixels(quick):
    # Quick: all 1347 training images, 60 test images upsampled to 32 x 32, J = 3 and 2, shifts 1, 2, 4
    # px, |grad tau|_inf in {0.04, 0.08, 0.16}.
    r = quick
    # Translation: the scattering at J = 3 moves less than the pixels under a 1-pixel shift
    # (measured relative change 0.131 against 0.280; asserted with a margin: below 3/4 of it) ...
    assert r["rel_shift1_scattering"] < 0.75 * r["rel_shift1_pixels"]
    # ... and less than the scattering at J = 2 at every shift: the O(|c| / 2^J) error (measured
    # 0.131, 0.26, 0.48 against 0.184, 0.36, 0.68).
    assert np.all(r["rel_shift_scattering"] < r["rel_shift_scattering_small"])
    # Deformations: the relative change grows linearly with |grad tau|_inf (fitted log-log slope
    # within 0.2 of 1; measured 0.91) and stays below the pixels' at every size (measured half).
    assert abs(r["slope_rel_deform_scattering"] - 1) < 0.2
    assert np.all(r["rel_deform_scattering"] < 0.75 * r["rel_deform_pixels"])
    # Classification: the scattering + ridge classifier keeps its accuracy under a 4-pixel shift
    # (measured 1.0 clean, 0.88 shifted), the pixel one loses it (0.92 -> 0.20). 60 test images:
    # one image is 0.017 of accuracy. Over seeds 0-7: 0.95-1.0 clean and 0.85-0.93 shifted (0.95 and
    # 0.85 were met with no image to spare), pixels 0.17-0.32 shifted: asserted at most 4 errors clean
    # and 12 shifted, still 0.3 above the pixels' bound.
    assert r["accuracy_clean_scattering"] >= 0.93
    assert r["accuracy_shift_scattering"][-1] >= 0.8
    assert r["accuracy_shift_pixels"][-1] <= 0.5
    # Deformations up to |grad tau|_inf = 0.16 leave the scattering classifier's accuracy within
    # 0.05 of its clean accuracy (measured 1.0, 1.0, 0.967 against 1.0; at most 0.033 below over seeds 0-7).
    assert np.all(r["accuracy_deform_scattering"] >= r["accuracy_clean_scattering"] - 0.05)


def test_scattering_stability_random_cnn_is_less_stable_than_trained_relative_to_class_distance(quick):
    # The random CNN (same architecture and initialisation seed, untrained) against the trained one, both of
    # width 8. Ranges "over 12 draws" are those of tools/seedshift.py's offsets 0-11, which move the study's seed
    # and the data split together. At width 4 (the quick mode until session 13) the trained CNN was the less
    # stable one at one draw (deformation ratio 0.72) and level at another (1.02 under a shift).
    r = quick
    # Relative to the between-class distance D_Phi, training makes the CNN more stable: the random CNN's rho is
    # larger under every deformation (measured 3.5 to 3.8 times; at least 1.88 over 12 draws) and under a 1-px
    # shift (measured 0.44 against 0.17, 2.6 times; 1.18 to 3.1 over 12 draws).
    assert r["rho_shift1_random_cnn"] > r["rho_shift1_cnn"]
    assert np.all(r["rho_deform_random_cnn"] > 1.3 * r["rho_deform_cnn"])
    # Relative to its own norm, the random CNN moves less (measured rel 0.049 against 0.139 at 1 px; at most 0.50
    # times it over 12 draws): its features (ReLU, max pooling and global averaging of positive maps) share a large
    # common component, so that the classes are close to each other compared to |Phi(x)| (measured D / mean
    # |Phi(x)| 0.11 against 0.80 for the trained CNN, at most 0.2 of it over 12 draws; asserted below half of
    # it): rel alone flatters it.
    assert r["rel_shift1_random_cnn"] < r["rel_shift1_cnn"]
    assert r["D_random_cnn"] / r["norm_random_cnn"] < 0.5 * r["D_cnn"] / r["norm_cnn"]
    # Its features carry less class information: ridge on them, over the 450 test images, is below the trained
    # CNN's accuracy (measured 0.849 against 0.933; over 12 draws the gap is 0.051 to 0.164, mean 0.10, sd 0.03:
    # asserted above 0.02, the mean less 2.7 sd). The 60 perturbed images alone decide too coarsely (a gap of one
    # image at two of the 12 draws).
    assert r["random_cnn_test_accuracy"] < r["cnn_test_accuracy"] - 0.02


def test_scattering_stability_upsampled_digits_have_a_background_margin():
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    from shallow import cli

    module = cli.load_study("scattering_stability")
    X, _, Xt, _ = module.upsampled_digits(3, 4)
    assert X.shape[1:] == (32, 32, 1) and Xt.shape[1:] == (32, 32, 1)
    # the margin is background (0), the pixel values lie in [0, 1] (digits / 16, bilinear)
    assert np.all(X[:, :4] == 0) and np.all(X[:, :, -4:] == 0)
    assert X.min() >= 0 and X.max() <= 1
