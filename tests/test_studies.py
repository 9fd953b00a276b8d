"""Every study's quick mode runs, writes its figure and sidecar, and its claim holds numerically."""



from shallow import study


def test_funk_hecke_spectra_relu_power_decays_like_k_to_minus_d_half_minus_alpha(tmp_path, run_quick):
    module, result = run_quick("funk_hecke_spectra", tmp_path)
    cfg = study.quick_config(module)
    for d in cfg.dims:
        for alpha in cfg.alphas:
            key = f"d{d}_relu{alpha:g}"
            # Bach 2017, App. D: slope -(d/2 + alpha); the fit over [kmax/2, kmax] is within 0.1.
            assert abs(result[f"slope_{key}"] + d / 2 + alpha) < 0.1, key
            assert result[f"zeros_match_{key}"], key
        for name in cfg.smooth:
            # odd functions up to a constant: every even coefficient k >= 2 vanishes (to quadrature accuracy)
            assert result[f"even_over_odd_d{d}_{name}"] < 1e-12


def test_kernel_spectra_relu_nngp_decays_like_k_to_minus_d_plus_2_and_ntk_like_k_to_minus_d(tmp_path, run_quick):
    module, result = run_quick("kernel_spectra", tmp_path)
    for d in study.quick_config(module).dims:
        assert abs(result[f"slope_nngp_d{d}"] + d + 2) < 0.1
        assert abs(result[f"slope_ntk_d{d}"] + d) < 0.1
        assert result[f"odd_over_even_nngp_d{d}"] == 0 and result[f"odd_over_even_ntk_d{d}"] == 0
    # Independent check: eigenvalues of the Gram matrix K/n of n uniform points on S^2 approach lambda_k
    # at the Monte Carlo rate n^{-1/2}; cluster means (one per degree) are within 2 / sqrt(n)
    # (the constant was below 0.8 over seeds 0-3).
    n = study.quick_config(module).gram_n
    assert result["gram_cluster_relative_error_nngp"] < 2 / n**0.5
    assert result["gram_cluster_relative_error_ntk"] < 2 / n**0.5


def test_kernel_spectra_checks_the_gram_spectrum_on_s2_whatever_the_dims(tmp_path):
    # dims without 3 crashed in plot (KeyError 'lambda_nngp_d3') after caching the result; the Gram matrix of
    # points of S^2 is compared with the d = 3 eigenvalues, computed for it, at the same 2 / sqrt(n)
    import dataclasses

    from shallow import cli

    module = cli.load_study("kernel_spectra")
    cfg = dataclasses.replace(study.quick_config(module), dims=(2,))
    result = study.run(module, cfg, quick=True, out=tmp_path)
    assert (tmp_path / "figures" / "kernel_spectra_quick.png").stat().st_size > 10_000
    assert result["gram_cluster_relative_error_nngp"] < 2 / cfg.gram_n**0.5


def _readme() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_studies_table_and_gallery_show_every_study():
    import re

    from shallow import cli

    names = set(cli.find_studies())
    readme = _readme()
    assert set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.M)) == names  # the studies table
    assert set(re.findall(r"\(figures/(\w+)\.png\)", readme)) == names  # the gallery



def test_readme_lists_every_benchmark():
    # benchmarks/kernel_methods.py was missing from the README's list of benchmark commands
    import re
    from pathlib import Path

    scripts = {path.stem for path in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")}
    assert set(re.findall(r"^python benchmarks/(\w+)\.py", _readme(), flags=re.M)) == scripts

def test_readme_setup_line_installs_the_extras_every_study_needs():
    # `shallow run --all --quick` right after the README's first line skipped the digits studies
    # when that line installed only the test extra
    import re

    from shallow import cli

    setup = next(line for line in _readme().splitlines() if line.startswith("pip install -e"))
    installed = set(re.search(r'"\.\[([\w,]+)\]"', setup).group(1).split(","))
    needed = {getattr(cli.load_study(name), "EXTRA", "data") for name in cli.find_studies()
              if getattr(cli.load_study(name), "REQUIRES", ())}
    assert needed <= installed and "test" in installed


def test_mean_field_limit_shows_its_progress_bar_only_when_the_run_says_so(tmp_path, capfd):
    # its bar of runs printed also when stderr was not a terminal, unlike the other studies'
    import dataclasses

    from shallow import cli

    module = cli.load_study("mean_field_limit")
    cfg = dataclasses.replace(study.quick_config(module), widths=(10, 20), reference_width=40, runs=2, w2_runs=1,
                              steps=2, n=20, n_projections=5)
    study.run(module, cfg, out=tmp_path, figure=False, progress=False)
    assert capfd.readouterr().err == ""
    study.run(module, cfg, out=tmp_path, figure=False, progress=True, force=True)
    assert "mean_field_limit runs" in capfd.readouterr().err


def test_every_studys_own_progress_bar_follows_the_runs_choice():
    # a tqdm bar without disable= printed whatever study.show_progress() said. Read from the syntax
    # tree: every tqdm(...) call of a study script passes disable=.
    import ast

    from shallow import cli

    for name, path in cli.find_studies().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tqdm":
                assert any(k.arg == "disable" for k in node.keywords), (name, node.lineno)
