"""The particle-flow studies' quick modes run, write their figures, and their claims hold numerically."""


import numpy as np

from shallow import study


def test_global_convergence_wide_students_reach_zero_excess_risk_where_m5_stalls(tmp_path, run_quick):
    # Chizat & Bach 2018 (arXiv:1805.09545), Thm 3.3 and Fig. 3: from a small spread-out initialisation
    # the wide networks' excess risk goes to 0, while the exactly parametrised width m = 5 may stall.
    module, result = run_quick("global_convergence", tmp_path)
    cfg = study.quick_config(module)
    widest, narrow = max(cfg.widths), cfg.teacher_width
    median_wide = result[f"median_final_relative_risk_m{widest}"]
    # the weak form of the claim that the quick flow (t = 1500) supports: the widest student's median
    # relative risk below 1e-5 (measured ~3e-6)
    assert median_wide < 1e-5
    # every run of width >= 4 x the teacher's reaches the threshold 1e-5 (a stalled run sits >= 1e-3)
    for m in cfg.widths:
        if m >= 4 * narrow:
            assert result[f"converged_fraction_m{m}"] == 1.0, m
    # and at m = 5 some run stalls far above it, 100 times above the widest median at least (measured: 7 of the
    # 8 runs, median 2e-2). Not the median: m = 5 converges in 5 of 20 runs at the defaults, so 4 or more of 8
    # converge with probability 0.11 (binomial), as at one of 8 shifted seeds (tools/seedshift.py: median
    # 2.5e-16); all 8 with probability 1.5e-5
    assert result[f"max_final_relative_risk_m{narrow}"] > max(1e-3, 100 * median_wide)
    # "some run": the summary is the largest final risk over the m = 5 runs, not a typical one
    finals = result[f"final_relative_risk_m{narrow}"]  # (runs,)
    assert result[f"max_final_relative_risk_m{narrow}"] == finals.max()
    assert result[f"median_final_relative_risk_m{widest}"] == np.median(result[f"final_relative_risk_m{widest}"])
    # the excess risk is a decreasing function of the (Euler, eta = 0.5) flow time for the widest runs,
    # up to the float64 rounding of a risk computed as a difference of O(1) terms (1e-13 relative)
    for curve in result[f"relative_risk_m{widest}"]:
        assert np.all(np.diff(curve) <= 1e-13)


def test_particle_paths_2d_particles_concentrate_on_the_teacher_neurons(tmp_path, run_quick):
    # Chizat & Bach 2018, Sec. 4 and Fig. 2: in d = 2 the particles, started near 0, gather on the
    # teacher's directions and the network's measure on the circle converges to the teacher's.
    _, result = run_quick("particle_paths_2d", tmp_path)
    # Tolerances cover the quick flow (m = 50, t = 3000) over seeds 0-3 with margin; the relative risk
    # starts at 1, the captured masses at 0.
    # risk: 8e-8 here, 6e-8 to 1.2e-6 over seeds 0-3
    assert result["final_relative_risk"] < 1e-5
    # each teacher neuron's mass recovered within 10 degrees to 3 % (0.1 % here, at worst 1 % over seeds
    # 0-3), and less than 3 % of the teacher's total variation elsewhere (0.04 % here, at worst 0.6 %)
    assert result["final_captured_mass_error"] < 3e-2
    # "each" teacher neuron: the error is the worst of the three at the last record, not their average
    captured = result["captured_mass"][-1]  # (3,): captured / teacher mass, per teacher neuron
    assert np.all(np.abs(captured - 1) < 3e-2)
    assert result["final_captured_mass_error"] == np.abs(captured - 1).max()
    assert result["final_stray_mass"] < 3e-2
    # W2 (POT, chord metric) between the normalised +/- parts of the student's and the teacher's measures:
    # 0.013 and 3e-4 here, at worst 0.058 over seeds 0-3 (a particle carrying all the mass 6 degrees off
    # its teacher direction gives 0.1)
    assert result["final_w2_positive"] < 0.1
    assert result["final_w2_negative"] < 0.1
    # the paths start near 0: radius |a_j||w_j| = init_scale^2 = 2.5e-3 for every particle
    start = np.linalg.norm(result["paths"][0], axis=1)
    assert np.allclose(start, 0.05**2, rtol=1e-12)


def test_mean_field_limit_risk_and_particles_approach_the_limit_like_m_to_minus_half(tmp_path, run_quick):
    # Mei, Montanari & Nguyen 2018 (arXiv:1804.06561), Thm 3: the width-m flow from i.i.d. particles stays
    # within O(m^{-1/2}) of the mean-field limit over a bounded time interval.
    _, result = run_quick("mean_field_limit", tmp_path)
    # Collapse: the gap max_t |R_m - R_ref| / R_0 shrinks from m = 100 to m = 1000 (expected factor
    # ~3.5 with the nested reference; 2.3 to 9.6 over seeds 0-3) and is below 2 % at m = 1000
    # (0.4 % to 1.2 % over seeds 0-3).
    assert result["deviation"][-1] < result["deviation"][0] / 2
    assert result["deviation"][-1] < 2e-2
    # the gap is the sup over the time interval (Thm 3 bounds sup_{t <= T}), averaged over the runs: from the
    # recorded curves, relative risks R / R_0 on the reference's time grid
    ref = result["relative_risk_reference"]
    sup_gap = [np.abs(result[f"relative_risk_m{m}"] - ref).max(axis=1).mean() for m in result["widths"]]
    np.testing.assert_allclose(result["deviation"], sup_gap, rtol=1e-12)
    assert sup_gap[-1] < sup_gap[0] / 2 and sup_gap[-1] < 2e-2
    # Rates. The quick widths span one decade with 8, 8 and 5 runs, and at m = 100 the regime is not yet
    # asymptotic (the O(1/m) shift, nonlinear amplification on a plateau): over seeds 0-3 the fitted
    # slopes of the risk gap and of its spread over runs ranged from -0.25 to -1.0 (the default's widths
    # 10^2 ... 3 10^4 give -0.55 and -0.58). So only the band [-1.1, -0.2] is checked here: a gap that
    # shrinks like a power of m compatible with m^{-1/2}.
    assert -1.1 < result["slope_deviation"] < -0.2
    assert -1.1 < result["slope_fluctuation"] < -0.2
    # Propagation of chaos: exact W2 (POT) between the width-m particles and the reference's particles
    # with the same initial positions (0 at t = 0); slopes -0.38 to -0.52 over seeds 0-3 (default -0.48).
    assert abs(result["slope_w2_coupled"] + 0.5) < 0.2
    # sliced W2 between the particle measures of width m and of the reference shrinks with m (slopes -0.29
    # to -0.64 over seeds 0-3), and the flow does not amplify the initial sampling distance by more than
    # a factor 3 (1.7 to 1.9 measured)
    assert result["slope_sw2_final"] < -0.2
    assert result["max_sw2_ratio"] < 3
