"""Every study's Config refuses a bad value when it is built, with an error naming the field.

A bad value used to fail deep inside numpy or scipy (often after minutes of computing), or to give a
silently meaningless figure (a negative n_train dropping images, a validation fraction above 1, a
width list read out of order). ``Config.__post_init__`` runs on every ``--field`` flag
(:func:`shallow.study.config_from_args` builds the Config with ``dataclasses.replace``), so the CLI
prints ``shallow run: error: MESSAGE`` before any computation. These tests build Configs only: no compute.
"""

import dataclasses

import numpy as np
import pytest

from shallow import cli, study

NAN = float("nan")

# (study, overrides of the default Config, the start of the expected message: the field named)
BAD = [
    ("barron_maurey", {"d": 0}, "d must be an integer >= 1"),
    ("barron_maurey", {"draws": 0}, "draws must be an integer >= 1"),
    ("barron_maurey", {"step_size": NAN}, "step_size must be a positive finite number"),
    ("barron_maurey", {"maurey_widths": (4, 1, 16)}, "maurey_widths must hold at least 2 strictly increasing"),
    ("barron_maurey", {"trained_widths": (3,)}, r"trained_widths \(3,\) must be some of maurey_widths"),
    ("cnn_lazy_vs_meanfield", {"n_train": -5}, "n_train must be an integer >= 0 and <= 1347"),
    ("cnn_lazy_vs_meanfield", {"n_alpha": 1}, "n_alpha must be an integer >= 2"),
    ("cnn_lazy_vs_meanfield", {"alpha_min": 1e4, "alpha_max": 0.1}, "alpha_min must be below alpha_max"),
    ("cnn_lazy_vs_meanfield", {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ("cnn_vs_shallow", {"cnn_width": 0}, "cnn_width must be an integer >= 1"),
    ("cnn_vs_shallow", {"mf_step_size": NAN}, "mf_step_size must be a positive finite number"),
    ("cnn_vs_shallow", {"ridge": -1.0}, "ridge must be a finite number >= 0"),
    ("cnn_vs_shallow", {"sizes": (100, 50)}, "sizes must be strictly increasing"),
    ("daniely_separation", {"dims": (1, 2)}, "dims must be an integer >= 2"),
    ("daniely_separation", {"network_dims": (3, 2)}, "network_dims must hold at least 1 strictly increasing"),
    ("daniely_separation", {"n": 1}, "n must be an integer >= 2"),
    ("depth_separation_radial", {"dims": (0,)}, "dims must be an integer >= 1"),
    ("depth_separation_radial", {"widths": (64, 16)}, "widths must hold at least 1 strictly increasing"),
    ("depth_separation_radial", {"targets": ("cube",)}, "targets must be some of"),
    ("depth_separation_radial", {"es_ramp": 0.9}, r"es_ramp must lie in \(0, 1/2\]"),
    ("depth_separation_radial", {"ball_delta": 1.0}, r"ball_delta must lie in \(0, 1\)"),
    ("depth_separation_sawtooth", {"ks": (40,)}, "ks must be an integer >= 1 and <= 20"),
    ("depth_separation_sawtooth", {"widths": (0,)}, "widths must be an integer >= 1"),
    ("depth_separation_sawtooth", {"refine_step_size": NAN}, "refine_step_size must be a positive finite number"),
    ("depth_separation_sawtooth", {"grid_per_piece": 0}, "grid_per_piece must be an integer >= 1"),
    ("f1_vs_f2", {"dims": (1,)}, "dims must be"),
    ("f1_vs_f2", {"ns": (200,)}, "ns must hold at least 2 distinct"),
    ("f1_vs_f2", {"validation_fraction": 1.5}, r"validation_fraction must lie in \(0, 1\)"),
    ("f1_vs_f2", {"targets": ("foo",)}, "targets must be some of"),
    ("f1_vs_f2", {"ridges": (-1.0,)}, "ridges must be a positive finite number"),
    ("frank_wolfe_rate", {"steps": 10}, "steps must be an integer >= 20"),
    ("frank_wolfe_rate", {"radius": -1.0}, "radius must be a positive finite number"),
    ("funk_hecke_spectra", {"dims": (1,)}, "dims must be an integer >= 2"),
    ("funk_hecke_spectra", {"alphas": (-1.0,)}, "alphas must be a finite number >= 0"),
    ("funk_hecke_spectra", {"kmax": 2}, "kmax must be an integer >= 5"),
    ("funk_hecke_spectra", {"smooth": ("relu6",)}, "smooth must list activation names, got 'relu6'"),
    ("global_convergence", {"method": "rk5"}, "method must be one of"),
    ("global_convergence", {"runs": (1, 2)}, "runs has 2 entries but widths has 6"),
    ("global_convergence", {"threshold": -1.0}, "threshold must be a positive finite number"),
    ("global_convergence", {"d": 1}, "d must be an integer >= 2"),
    ("group_invariance", {"angle_step": 0.0}, "angle_step must be a positive finite number"),
    ("group_invariance", {"angle_step": 100.0}, "angle_step must divide 90 degrees"),
    ("lazy_paths_2d", {"alpha": 1e20}, r"alpha must lie in \[1, 1e8\]"),
    ("lazy_paths_2d", {"alpha": 0.001}, r"alpha must lie in \[1, 1e8\]"),
    ("mean_field_limit", {"w2_runs": 9, "runs": 8}, "w2_runs must be at most runs=8"),
    ("lazy_vs_meanfield", {"n_tau": 3}, r"n_tau must give at least 2 values of tau >= lazy_tau=1 .*, got 1 with n_tau=3"),
    ("cnn_lazy_vs_meanfield", {"n_alpha": 2, "alpha_max": 1e3}, r"n_alpha must give at least 2 values of alpha >= lazy_alpha=100 .*, got 1 with n_alpha=2"),
    ("global_convergence", {"widths": (4, 4), "runs": (1,)}, r"widths must hold at least 1 distinct value\(s\) "
                                                             r"\(no value twice\)"),
    ("group_invariance", {"J": 4}, "J must be an integer >= 1 and <= 3"),
    ("group_invariance", {"n_train": -100}, "n_train must be an integer >= 0 and <= 1347"),
    ("harmonic_approximation", {"smooth_c": 0.5}, "smooth_c must be > 1"),
    ("harmonic_approximation", {"check_kmax": (16,)}, "check_kmax must give one degree per entry of check_dims"),
    ("harmonic_approximation", {"check_dims": (2, 3)}, "check_dims must be an integer >= 3"),
    ("harmonic_approximation", {"mc_n": 1}, "mc_n must be an integer >= 2"),
    ("invertible_features", {"width": 7}, r"width must be even \(and >= 4\)"),
    ("invertible_features", {"batch_size": 0}, "batch_size must be an integer >= 1"),
    ("invertible_features", {"n_show": 0}, "n_show must be an integer >= 1 and <= 450"),
    ("kernel_spectra", {"dims": (1,)}, "dims must be an integer >= 2"),
    ("kernel_spectra", {"kmax": 1}, "kmax must be an integer >= 4"),
    ("kernel_spectra", {"gram_n": 5}, "gram_n must be an integer >= 18"),
    ("laziness_exponent", {"log2_m_min": 0}, "log2_m_min must be an integer >= 1"),
    ("laziness_exponent", {"log2_m_fit": 20}, "log2_m_min <= log2_m_fit < log2_m_max must hold"),
    ("laziness_exponent", {"T": 0.1}, "T / step_size must round to at least one step"),
    ("laziness_exponent", {"betas": ()}, "betas must hold at least 1 distinct"),
    ("lazy_paths_2d", {"m": 41}, r"m must be even \(m/2 centred pairs\)"),
    ("lazy_paths_2d", {"teacher_signs": (1.0, -1.0)}, "teacher_signs must give one nonzero outer weight"),
    ("lazy_paths_2d", {"teacher_angles": (NAN, 140.0, 260.0)}, "teacher_angles contains 1 NaN"),
    ("lazy_vs_meanfield", {"n_tau": 1}, "n_tau must be an integer >= 2"),
    ("lazy_vs_meanfield", {"tau_min": 10.0, "tau_max": 0.01}, "tau_min must be below tau_max"),
    ("lazy_vs_meanfield", {"m": 51}, "m must be even"),
    ("lipschitz_adversarial", {"n_attack": 0}, "n_attack must be an integer >= 1 and <= 450"),
    ("lipschitz_adversarial", {"eps_l2": (-0.5,)}, "eps_l2 must be a positive finite number"),
    ("lipschitz_adversarial", {"eps_linf": ()}, "eps_linf must list at least one radius"),
    ("lipschitz_adversarial", {"universal_step": NAN}, "universal_step must be a positive finite number"),
    ("mean_field_limit", {"widths": (100, 100)}, "widths must hold at least 1 distinct"),
    ("mean_field_limit", {"reference_width": 100}, "reference_width=100 must be at least twice the largest width"),
    ("mean_field_limit", {"w2_runs": 0}, "w2_runs must be an integer >= 1"),
    ("ntk_convergence", {"dims": (1,)}, "dims must be an integer >= 2"),
    ("ntk_convergence", {"log2_m_min": 5, "log2_m_max": 5}, "log2_m_max must exceed log2_m_min"),
    ("ntk_convergence", {"seeds": 0}, "seeds must be an integer >= 1"),
    ("particle_paths_2d", {"record_every": 0}, "record_every must be an integer >= 1"),
    ("particle_paths_2d", {"teacher_signs": (1.0, 1.0)}, "teacher_signs must give one nonzero outer weight"),
    ("particle_paths_2d", {"cone_angle": -10.0}, "cone_angle must be a positive finite number"),
    ("progressive_separation", {"probe_labels": 500}, "probe_labels must be an integer >= 1 and <= 131"),
    ("progressive_separation", {"n_seeds": 0}, "n_seeds must be an integer >= 1"),
    ("progressive_separation", {"ridge": -1.0}, "ridge must be a positive finite number"),
    ("scattering_stability", {"margin": 3}, "J=3 does not suit images of side 8 upsample"),
    ("scattering_stability", {"J": 1}, "J must be an integer >= 2"),
    ("scattering_stability", {"grad_norms": (0.1,)}, "grad_norms must hold at least 2 distinct"),
    ("scattering_stability", {"n_test": 1}, "n_test must be an integer >= 2 and <= 450"),
    ("scattering_stability", {"scales": (-1.0,)}, "scales must be a positive finite number"),
    ("sparse_approximation_rate", {"dims": (1,)}, "dims must be an integer >= 2"),
    ("sparse_approximation_rate", {"fit_kmin": 256}, "fit_kmin=256 leaves fewer than two recorded k"),
    ("sparse_approximation_rate", {"signs": ()}, "signs must list the nonzero weights"),
    ("sparse_approximation_rate", {"kappa": NAN}, "kappa must be a positive finite number"),
    ("width_scaling", {"log2_m_fit": 20}, "log2_m_min <= log2_m_fit < log2_m_max must hold"),
    ("width_scaling", {"T": 0.1}, "T / step_size must round to at least one step"),
    ("width_scaling", {"seeds": 0}, "seeds must be an integer >= 1"),
]


@pytest.mark.parametrize("name, overrides, message", BAD,
                         ids=[f"{name}-{'-'.join(overrides)}" for name, overrides, _ in BAD])
def test_study_config_refuses_bad_values_naming_the_field(name, overrides, message):
    module = cli.load_study(name)
    with pytest.raises(ValueError, match=f"^{message}"):
        dataclasses.replace(module.Config(), **overrides)


def test_every_study_with_checks_is_covered():
    # One case at least per study: the list above follows the studies folder.
    assert {name for name, _, _ in BAD} == set(cli.find_studies())


@pytest.mark.parametrize("name", sorted(cli.find_studies()))
def test_study_default_and_quick_configs_pass_their_checks(name):
    # The checks accept what each study ships: its defaults (the paper's figure) and its --quick overrides.
    module = cli.load_study(name)
    assert dataclasses.asdict(module.Config())
    assert dataclasses.asdict(study.quick_config(module))


def test_cli_reports_a_bad_field_before_computing(tmp_path, capsys):
    # --ks 40 used to end in a MemoryError traceback (8 TiB for the 2^(k+4) dyadic points).
    code = cli.main(["run", "depth_separation_sawtooth", "--quick", "--ks", "5,40", "--out", str(tmp_path)])
    assert code == 2
    assert "shallow run: error: ks must be an integer >= 1 and <= 20, got 40" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- the shared checks and helpers
def test_check_grid_with_increasing_refuses_a_repeated_value():
    # "strictly increasing": (1, 2, 2) repeats 2, and is refused like (2, 1); (1, 2, 3) passes
    assert study.check_grid((1, 2, 3), "widths", increasing=True) == (1, 2, 3)
    for values in [(1, 2, 2), (2, 1)]:
        with pytest.raises(ValueError, match=r"widths must hold at least 1 strictly increasing value\(s\)"):
            study.check_grid(values, "widths", increasing=True)


def test_check_flow_time_is_the_nearest_number_of_steps_to_time_t():
    # round(T / step_size): 1 / 0.01 = 100 steps; 0.3 / 0.1 = 2.9999999999999996 is 3 steps, not 2
    assert study.check_flow_time(1.0, 0.01) == 100
    assert study.check_flow_time(0.3, 0.1) == 3
    assert study.check_flow_time(2.0, 0.5) == 4


def test_study_name_of_a_module_without_a_file_is_the_last_part_of_its_name():
    import types

    assert study.study_name(types.ModuleType("shallow_studies.width_scaling")) == "width_scaling"
    assert study.study_name(types.ModuleType("toy")) == "toy"


def test_new_figure_gives_each_panel_the_size_asked_for():
    pytest.importorskip("matplotlib")
    fig, axes = study.new_figure(2, 3, size=(4.0, 2.5))
    assert axes.shape == (2, 3)
    assert tuple(fig.get_size_inches()) == (12.0, 5.0)  # 3 columns of 4 inches, 2 rows of 2.5


def test_new_figure_refuses_squeeze_with_a_message_saying_why():
    # squeeze=True used to fail inside matplotlib: "got multiple values for keyword argument 'squeeze'"
    with pytest.raises(TypeError, match=r"2-D array of axes \(squeeze=False\)"):
        study.new_figure(1, 1, squeeze=True)


def test_a_tuple_field_with_a_float_entry_parses_floats():
    # The flag's entries take the default's type: float when any entry of the default is a float, so that a
    # default (1, 2.5) accepts 0.5; an all-int default parses ints and refuses 0.5.
    import types

    @dataclasses.dataclass(frozen=True)
    class Config:
        mixed: tuple = (1, 2.5)
        ints: tuple = (4, 16)
        empty: tuple = ()

    module = types.ModuleType("shallow_studies.mixed")
    module.Config = Config
    parser = study.build_parser(module)
    args = parser.parse_args(["--mixed", "1,0.5", "--ints", "2,8", "--empty", "0.25"])
    assert args.mixed == (1.0, 0.5) and args.ints == (2, 8) and args.empty == (0.25,)
    assert type(args.ints[0]) is int
    with pytest.raises(SystemExit):
        parser.parse_args(["--ints", "0.5"])


def test_config_hash_of_a_float_field_does_not_depend_on_an_int_or_float_spelling():
    # `--T 250` parses to the float 250.0 and Config(T=250) holds the int 250: one config, one cache key.
    # A different value still gets a different key.
    @dataclasses.dataclass(frozen=True)
    class Config:
        T: float = 50.0
        widths: tuple = (1, 2.5)

    key = study.config_hash("demo", Config(T=250, widths=(1, 0.5)), "source")
    assert study.config_hash("demo", Config(T=250.0, widths=(1.0, 0.5)), "source") == key
    assert study.config_hash("demo", Config(T=250.5, widths=(1, 0.5)), "source") != key


def test_config_hash_tells_apart_arrays_that_print_alike():
    # json's default=str wrote an array as numpy prints it (8 digits, "..." past 1000 entries): two configs
    # with different arrays shared a key, and the second was served the first one's cached result
    @dataclasses.dataclass(frozen=True)
    class Config:
        w: np.ndarray = dataclasses.field(default_factory=lambda: np.array([0.1, 0.2]))
        n: int = 3

    assert str(np.array([0.1, 0.2])) == str(np.array([0.1 + 1e-10, 0.2]))  # what the old key saw
    assert study.config_hash("demo", Config()) != study.config_hash("demo", Config(w=np.array([0.1 + 1e-10, 0.2])))
    long, edited = np.arange(2000.0), np.arange(2000.0)
    edited[1000] = -1.0
    assert study.config_hash("demo", Config(w=long)) != study.config_hash("demo", Config(w=edited))
    assert study.config_hash("demo", Config(w=long)) == study.config_hash("demo", Config(w=long.copy()))
    # a numpy integer is the same config as the Python one (it was hashed as the string "3")
    assert study.config_hash("demo", Config(n=np.int64(3))) == study.config_hash("demo", Config())


def test_config_hash_changes_with_the_study_name_the_config_the_version_and_the_source(monkeypatch):
    # results/NAME-HASH.npz: a result is reused only for the same study, config, package version and script
    @dataclasses.dataclass(frozen=True)
    class Config:
        n: int = 10

    key = study.config_hash("demo", Config(), "source")
    assert study.config_hash("other", Config(), "source") != key
    assert study.config_hash("demo", Config(n=11), "source") != key
    assert study.config_hash("demo", Config(), "source edited") != key
    monkeypatch.setattr(study, "__version__", study.__version__ + "+other")
    assert study.config_hash("demo", Config(), "source") != key
