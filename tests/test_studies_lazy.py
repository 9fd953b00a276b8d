"""The lazy-training studies' quick modes run, write their figures and sidecars, and their claims hold.

Tolerances are stated with their reasons; each holds at the studies' fixed seeds (seed = 0).
"""


import numpy as np

from shallow import cli, study


def test_lazy_vs_meanfield_lazy_test_loss_order_of_magnitude_worse_and_weight_change_like_tau_to_minus_2(tmp_path, run_quick):
    # Chizat, Oyallon & Bach 2019, Fig. 2.
    module, result = run_quick("lazy_vs_meanfield", tmp_path)
    # "an order of magnitude": at least 10x, end of training and best along training (measured ~45-48x).
    assert result["lazy_over_meanfield_test_final"] > 10
    assert result["lazy_over_meanfield_test_best"] > 10
    # Both ends fit the training set better than f = 0 does on the test set: the gap is generalisation.
    assert result["train_final"].max() < 0.1 * result["zero_predictor_test_loss"]
    # The losses compared are test losses, on points the descent never saw: at every tau the final test loss
    # is above 10 times the final training loss (measured 31 at the lazy end and at least 59 elsewhere;
    # over seeds 0-3 at least 31). A loss read on the training points would give a ratio 1.
    assert np.all(result["test_final"] > 10 * result["train_final"])
    # The relative weight change falls like 1/alpha = tau^-2 at the lazy end: fitted slope within 0.1.
    assert abs(result["weight_change_slope"] + 2) < 0.1
    # and decreases monotonically along the whole tau grid.
    assert np.all(np.diff(result["weight_change"]) < 0)
    # Primal form with step eta == alpha-scaled form with step eta / tau^2: identical up to rounding
    # (20 steps at both ends of the grid; relative error a few float64 eps, allowed 1e-12).
    assert result["equivalence_error"] < 1e-12


def test_lazy_vs_meanfield_alpha_form_equivalence_independent_gradient_descent():
    # The docstring's equivalence checked against a hand-written gradient descent (not gradient_flow):
    # theta_k from descent on f = sum b relu(<a, x>) at scale tau with step eta equals tau * theta'_k from
    # descent on tau^2 * sum b' relu(<a', x>) with step eta / tau^2.
    module = cli.load_study("lazy_vs_meanfield")
    X, y, _, _, student = module.problem(6, 30, 5, 3, 8, 1)
    tau, eta, steps = 3.0, 0.1 / 9.0, 15

    def descend(b, A, scale, step):
        n = X.shape[0]
        for _ in range(steps):
            Z = X @ A.T  # (n, m)
            r = (scale * np.maximum(Z, 0) @ b - y) / n  # dR/df_i for R = 1/(2n) sum (f - y)^2
            gb = scale * np.maximum(Z, 0).T @ r
            gA = scale * ((Z > 0) * np.outer(r, b)).T @ X
            b, A = b - step * gb, A - step * gA
        return b, A

    b1, A1 = descend(tau * student.a, tau * student.W, 1.0, eta)
    b2, A2 = descend(student.a.copy(), student.W.copy(), tau**2, eta / tau**2)
    assert np.allclose(b1, tau * b2, rtol=1e-12, atol=1e-14)
    assert np.allclose(A1, tau * A2, rtol=1e-12, atol=1e-14)
    # and the study's run uses the same descent: gradient_flow with time_scale 1 on the primal form.
    from shallow.flows import EmpiricalRisk, gradient_flow

    traj = gradient_flow(module.primal(student, tau), EmpiricalRisk(X, y), steps, eta, time_scale=1.0)
    assert np.allclose(traj.a, b1, rtol=1e-10, atol=1e-13) and np.allclose(traj.W, A1, rtol=1e-10, atol=1e-13)


def test_ntk_convergence_empirical_ntk_error_falls_like_m_to_minus_half(tmp_path, run_quick):
    # Jacot, Gabriel & Hongler 2018, Theorem 1, at the Monte Carlo rate.
    module, result = run_quick("ntk_convergence", tmp_path)
    for d in study.quick_config(module).dims:
        # Rates by a fitted log-log slope within 0.1 (measured -0.51 and -0.50).
        assert abs(result[f"slope_d{d}"] + 0.5) < 0.1, d
        # The level matches C m^{-1/2} with C from independent single neurons: the RMS over 5 networks
        # scatters by ~1/sqrt(2 * 5) ~ 30% around it (measured ratios 0.80-1.13); allowed [0.6, 1.5].
        ratio = result[f"rms_over_predicted_d{d}"]
        assert np.all((ratio > 0.6) & (ratio < 1.5)), (d, ratio)


def test_laziness_exponent_weight_change_falls_like_m_to_beta_minus_one(tmp_path, run_quick):
    # Chizat, Oyallon & Bach 2019, Sec. 2: kappa ~ 1/(gamma m) = m^(beta - 1).
    module, result = run_quick("laziness_exponent", tmp_path)
    # Fitted exponents within 0.1 of beta - 1 (measured within 0.02).
    assert np.all(np.abs(result["exponent"] - result["predicted_exponent"]) < 0.1), result["exponent"]
    # Only the mean-field end is not lazy: its weight change stays O(1) (> 0.2 at every width) ...
    betas = list(study.quick_config(module).betas)
    assert result[f"weight_change_{betas.index(1.0)}"].mean(axis=1).min() > 0.2
    # ... while the NTK scale is below 0.05 at the largest width.
    assert result[f"weight_change_{betas.index(0.5)}"].mean(axis=1)[-1] < 0.05
    # Every run actually trained (f = 0 at theta_0, so the initial risk is the target's): the risk fell at
    # least threefold by T = 50. Final / initial risk, worst run over beta, m >= 2^6 and both seeds, at seeds
    # 0..7: 0.086, 0.080, 0.219, 0.061, 0.117, 0.089, 0.074, 0.026; a run that did not train stays near 1.
    # Quick mode starts at m = 2^6: at m = 16 the NTK scale's worst run reached 0.48 (seed 6), and the old
    # bound 0.25 failed at seeds 1, 2 and 6. The spread is the teacher's (0.02-0.12 at m = 2^11 already).
    assert result["max_final_risk"] < result["initial_risk"] / 3


def test_width_scaling_ntk_weights_move_like_m_to_minus_half_kernel_faster_mean_field_order_one(tmp_path, run_quick):
    # Jacot et al. 2018, Theorem 2; Chizat, Oyallon & Bach 2019, Sec. 2.
    module, result = run_quick("width_scaling", tmp_path)
    # NTK scale: relative weight change ~ m^{-1/2}, fitted slope within 0.1 (measured -0.52).
    assert abs(result["slope_weight_change_ntk"] + 0.5) < 0.1
    # The tangent kernel moves faster to rest than the weights: slope below -0.6 (measured -0.88).
    assert result["slope_ntk_change_ntk"] < -0.6
    # Its smooth parts (outer layer, a^2) change like m^{-1} (first-order terms cancel in sign):
    # slopes within 0.15 of -1 (measured -0.98 and -0.99; the a^2 part is noisier at 2 seeds).
    assert abs(result["slope_outer_change_ntk"] + 1) < 0.15
    assert abs(result["slope_a2_change_ntk"] + 1) < 0.15
    # The activation-pattern flips dominate the kernel's change at the largest width (>= 2x each other part).
    pattern = result["pattern_change_ntk"].mean(axis=1)[-1]
    assert pattern > 2 * result["outer_change_ntk"].mean(axis=1)[-1]
    assert pattern > 2 * result["a2_change_ntk"].mean(axis=1)[-1]
    # Mean field (gamma = 1/m, time scale m): weight and kernel changes stay O(1): |slope| < 0.1
    # (measured -0.00 and 0.05) and the weight change above 0.2 at every width.
    assert abs(result["slope_weight_change_meanfield"]) < 0.1
    assert abs(result["slope_ntk_change_meanfield"]) < 0.1
    assert result["weight_change_meanfield"].mean(axis=1).min() > 0.2


def test_lazy_paths_2d_lazy_particles_barely_move_mean_field_particles_travel(tmp_path, run_quick):
    # Chizat, Oyallon & Bach 2019, Sec. 2: particles move by O(1/alpha) in the lazy regime.
    module, result = run_quick("lazy_paths_2d", tmp_path)
    alpha = study.quick_config(module).alpha
    # Weight change ratio lazy / mean field ~ 1/alpha: within a factor 3 (measured 1.5 / alpha).
    assert result["weight_change_ratio"] < 3 / alpha
    # Lazy particles stay within 0.3 of their start (measured 0.17; their radius is ~1), mean-field
    # ones travel more than 1 (measured 2.7).
    assert result["max_particle_displacement_lazy"] < 0.3
    assert result["max_particle_displacement_meanfield"] > 1.0
    # Both runs still fit: relative risk below 1e-2 (lazy, measured 9e-4) and 1e-3 (mean field, 2e-5).
    assert result["final_relative_risk_lazy"] < 1e-2
    assert result["final_relative_risk_meanfield"] < 1e-3
