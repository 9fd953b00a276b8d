"""The robustness study's quick mode runs, writes its figure and sidecar, and its claims hold.

Tolerances are stated with their reasons; each holds at the study's fixed seed (seed = 0) and, measured
once, at seeds 0-7 of the quick mode (ranges quoted below).
"""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def quick(tmp_path_factory, run_quick):
    """The quick mode's result, computed once for the tests of this module (it takes ~13 s)."""
    pytest.importorskip("sklearn", reason="the digits data set comes with the `data` extra (scikit-learn)")
    return run_quick("lipschitz_adversarial", tmp_path_factory.mktemp("lipschitz_adversarial"))[1]


def test_lipschitz_adversarial_bounds_above_local_constant_and_spectral_normalisation_shrinks_them(quick):
    # quick: VGG width 8 without batch norm, 600 training images, 10 epochs of Adam; 100 attacked test images
    r = quick
    for name in ("standard", "spectral"):
        # both networks learn (measured 0.913 and 0.880; chance is 0.1). Over seeds 0-7: 0.83-0.91 (standard)
        # and 0.78-0.88 (spectral, 600 images and 10 epochs under the projection): 0.8 held at seed 0 only by
        # luck; 0.7 keeps a margin of 0.08 (38 of the 450 test images) and is far above chance
        assert r[f"{name}_test_accuracy"] > 0.7
        # the bounds are valid: above the empirical local constant (measured 8.4 and 4.3), and ordered
        # averaged <= product (power iteration) <= product (certified FFT): 188 <= 234 <= 350, 48 <= 54 <= 85
        assert r[f"{name}_averaged"] >= r[f"{name}_local"]
        # the local constant is the largest |J_f(x)|_2 over the test images, not a typical one: strictly above
        # the median over the 450 images (measured 8.4 against a median about half of it), and the gap is
        # the averaged bound over it
        assert r[f"{name}_local"] > r[f"{name}_local_median"]
        assert r[f"{name}_gap"] == pytest.approx(r[f"{name}_averaged"] / r[f"{name}_local"], rel=1e-12)
        assert r[f"{name}_averaged"] <= r[f"{name}_product"] * (1 + 1e-12)
        assert r[f"{name}_product"] <= r[f"{name}_product_fft"] * (1 + 1e-9)
        # PGD accuracy falls with the radius: at the largest L2 radius (2.0) below 0.2 (measured 0.05, 0.06);
        # along the grid it never rises by more than 2 images in 100 (PGD is a heuristic)
        acc = r[f"{name}_pgd_l2"]
        assert acc[-1] < 0.2 and np.all(np.diff(acc) <= 0.02)
        assert np.all(np.diff(r[f"{name}_pgd_linf"]) <= 0.02)
        # the certified L2 radius margin / (sqrt(2) L) is far below the radii where PGD succeeds
        # (measured medians 0.014 and 0.022, against PGD succeeding on about half the images at 1.0)
        assert r[f"{name}_certified_l2_median"] < 0.1 * r["eps_l2"][0]
    # spectral normalisation divides the bound by more than 2 (measured 188 / 48 = 3.9) and halves the local
    # constant (8.4 -> 4.3); the bound is tighter relative to the local constant (gap 11 against 22)
    assert r["spectral_averaged"] < r["standard_averaged"] / 2
    assert r["spectral_local"] < r["standard_local"]
    assert r["spectral_gap"] < r["standard_gap"]
    # the product of layer norms is loose by one to two orders of magnitude for the standard network:
    # above 10 times the local constant (measured 27.8; over seeds 0-7 18-28)
    assert r["standard_product"] > 10 * r["standard_local"]
    # the Lipschitz constraint alone does not make the network robust: its PGD accuracy is not above the
    # standard network's by more than 0.2 (20 of the 100 attacked images) at any radius, L2 or Linf
    # (measured differences -0.04 to 0.07; over seeds 0-7 -0.14 to 0.15)
    for norm in ("l2", "linf"):
        assert np.all(r[f"spectral_pgd_{norm}"] <= r[f"standard_pgd_{norm}"] + 0.2)


def test_lipschitz_adversarial_one_universal_perturbation_fools_many_test_images_but_fewer_than_pgd(quick):
    # quick: one v per L2 radius eps in {1, 2, 4} (test images have median norm 8.0), built on 200 training
    # images (3 epochs, batches of 32); fooling rate = fraction of the 450 test images whose predicted label
    # changes, against per-image PGD (10 steps) and random v of the same norm (mean over 20 directions)
    r = quick
    assert list(r["eps_universal"]) == [1.0, 2.0, 4.0]
    for name in ("standard", "spectral"):
        universal, per_image, random = (r[f"{name}_{key}_fooling"] for key in ("universal", "pgd", "random"))
        # at eps = 4 one image-agnostic v changes the label of most held-out images (measured 0.76 and 0.80;
        # over seeds 0-7 0.67-0.80 and 0.62-0.82, so 0.6 was thin): asserted > 0.5, "most", with a margin
        # of at least 50 images at every seed measured
        assert universal[-1] > 0.5
        # the generalisation of v from the 200 training images to the test images: within 0.15 (measured
        # 0.795 -> 0.762 and 0.835 -> 0.802 at eps = 4; the largest gap over the radii 0.03-0.12 over seeds
        # 0-7, 0.118 at seed 4: the rate on 200 images has a binomial sd up to 0.035, and the epoch kept is
        # the best on those images). A v that fitted its 200 images only would miss by far more
        assert np.all(np.abs(universal - r[f"{name}_universal_train_fooling"]) < 0.15)
        # a per-image attack is stronger at every radius: the best x-dependent perturbation fools at least
        # what a shared one does; PGD is a heuristic, so a tolerance of 0.02 (9 images); measured PGD
        # 0.51, 0.96, 1.0 against 0.08, 0.20, 0.76 (standard), 0.47, 0.92, 1.0 against 0.12, 0.29, 0.80
        assert np.all(universal <= per_image + 0.02)
        # and much stronger at the radius where PGD fools most images: at eps = 2 above 1.5 times the
        # universal rate (measured 4.7 and 3.1 times; over seeds 0-7 2.4-4.7 and 2.0-3.1, the spectral
        # network's 1.96 at seed 2 below the former factor 2)
        assert per_image[1] > 1.5 * universal[1]
        # v is not a random direction: above twice the random-direction rate at every radius (measured 3 to
        # 6 times: 0.03, 0.05, 0.13 for random v)
        assert np.all(universal > 2 * random)
