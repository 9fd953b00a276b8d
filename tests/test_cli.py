"""The study runner and the `shallow` command, on a toy study written to a temporary folder."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shallow import cli, study

TOY = '''
"""Toy study: the mean of n standard normals is within 5/sqrt(n) of 0."""
import dataclasses
import numpy as np
from shallow import study

@dataclasses.dataclass(frozen=True)
class Config:
    n: int = 1000
    scales: tuple = (1.0, 2.0)
    centred: bool = False
    d: int = 2
    seed: int = 0
    device: str = "cpu"

QUICK = {"n": 10}
CALLS = []

def compute(cfg):
    if cfg.n < 1:
        raise ValueError(f"n must be an integer >= 1, got {cfg.n}")
    CALLS.append(cfg)
    x = np.random.default_rng(cfg.seed).standard_normal(cfg.n)
    return {"mean": float(x.mean()), "x": x, "label": "toy"}

def plot(result, cfg):
    fig, axes = study.new_figure()
    axes[0, 0].hist(result["x"])
    return fig

def main(argv=None):
    return study.main(__name__, argv)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "toy.py").write_text(textwrap.dedent(TOY))
    (folder / "_helper.py").write_text("")
    monkeypatch.setenv("SHALLOW_STUDIES", str(folder))
    monkeypatch.delitem(__import__("sys").modules, "shallow_studies.toy", raising=False)
    return tmp_path


def test_list_shows_public_studies_with_their_claims(toy, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "Toy study" in out and "_helper" not in out


def test_run_quick_writes_figure_sidecar_and_cache(toy):
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--seed", "3"]) == 0
    assert (out / "figures" / "toy_quick.png").stat().st_size > 0
    sidecar = json.loads((out / "figures" / "toy_quick.json").read_text())
    assert sidecar["config"]["n"] == 10 and sidecar["config"]["seed"] == 3
    assert sidecar["summary"]["label"] == "toy" and sidecar["device"] == "cpu"
    assert len(list((out / "results").glob("toy-*.npz"))) == 1


def test_sidecar_names_the_script_that_drew_the_figure(toy):
    import hashlib

    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out)]) == 0
    sidecar = json.loads((out / "figures" / "toy_quick.json").read_text())
    script = (toy / "studies" / "toy.py").read_bytes()
    assert sidecar["source_sha256"] == hashlib.sha256(script).hexdigest()


def _git(folder, *args):
    command = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=True).stdout.strip()


def test_sidecar_names_the_commit_and_the_modified_code_but_not_the_runs_own_figures(toy):
    try:
        _git(toy, "init", "-q")
        _git(toy, "add", "studies")
        _git(toy, "commit", "-q", "-m", "toy")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    out = toy / "out"

    def run(*flags):
        assert cli.main(["run", "toy", "--quick", "--out", str(out), *flags]) == 0
        sidecar = json.loads((out / "figures" / "toy_quick.json").read_text())
        return sidecar["git_commit"], sidecar["git_modified"]

    assert run() == (_git(toy, "rev-parse", "--short=12", "HEAD"), [])
    _git(toy, "add", "out")  # the gallery's way: figures and results tracked
    _git(toy, "commit", "-q", "-m", "figures")
    # a rerun rewrites the tracked figure and sidecar (another wall time): that is output, not code
    assert run("--force") == (_git(toy, "rev-parse", "--short=12", "HEAD"), [])
    assert _git(toy, "status", "--porcelain", "--untracked-files=no") != ""
    (toy / "studies" / "_helper.py").write_text("# edited\n")
    assert run()[1] == ["studies/_helper.py"]


def test_run_study_help_lists_the_studys_own_flags(toy, capsys):
    # argparse's help of `shallow run` stopped at the common flags: a study's Config fields were missing
    assert cli.main(["run", "toy", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: shallow run toy" in out and "--scales A,B,..." in out and "--n N" in out


def test_cached_result_is_reused_and_force_recomputes(toy):
    out = str(toy / "out")
    module = cli.load_study("toy")
    cli.main(["run", "toy", "--quick", "--out", out])
    cli.main(["run", "toy", "--quick", "--out", out])
    assert len(module.CALLS) == 1
    cli.main(["run", "toy", "--quick", "--out", out, "--force"])
    assert len(module.CALLS) == 2


def test_config_fields_become_flags(toy):
    module = cli.load_study("toy")
    args = study.build_parser(module).parse_args(["--n", "7", "--scales", "0.5,3"])
    cfg = study.config_from_args(module, args)
    assert cfg.n == 7 and cfg.scales == (0.5, 3.0)
    quick = study.config_from_args(module, study.build_parser(module).parse_args(["--quick", "--n", "12"]))
    assert quick.n == 12  # an explicit flag wins over QUICK


def test_a_field_named_like_the_start_of_a_common_flag_is_set_by_its_own_flag(toy):
    # --d is the field d, not an abbreviation of --device
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--d", "5"]) == 0
    assert json.loads((out / "figures" / "toy_quick.json").read_text())["config"]["d"] == 5


def test_unknown_study_is_a_usage_error_naming_the_known_studies(toy, capsys):
    # status 2 as argparse's usage errors (it was 1)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "nope"])
    assert exit_.value.code == 2 and "unknown study 'nope'; known studies: toy" in capsys.readouterr().err


def test_ctrl_c_prints_how_to_resume_and_exits_with_status_130(toy, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.delenv("SHALLOW_TRACEBACK", raising=False)
    monkeypatch.setattr(cli, "_run_one", interrupted)
    assert cli.main(["run", "toy", "--quick", "--out", str(toy / "out")]) == 130
    assert "shallow run: interrupted. The same command resumes" in capsys.readouterr().err
    monkeypatch.setenv("SHALLOW_TRACEBACK", "1")
    with pytest.raises(KeyboardInterrupt):
        cli.main(["run", "toy", "--quick", "--out", str(toy / "out")])


def test_a_host_only_study_warns_that_device_is_ignored_and_its_sidecar_names_the_cpu(toy, monkeypatch):
    monkeypatch.setattr(study, "available_devices", lambda: ("cpu", "gpu"))
    module = cli.load_study("toy")
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--device", "gpu", "--out", str(out)]) == 0  # the study's own device
    assert json.loads((out / "figures" / "toy_quick.json").read_text())["device"] == "gpu"
    monkeypatch.setattr(module, "HOST_ONLY", "ten points", raising=False)
    with pytest.warns(UserWarning, match=r"toy computes on the host whatever --device \(ten points\): "
                                         r"device='gpu' is ignored"):
        assert cli.main(["run", "toy", "--quick", "--device", "gpu", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "figures" / "toy_quick.json").read_text())["device"] == "cpu"
    monkeypatch.setattr(module, "HOST_ONLY", "", raising=False)
    with pytest.raises(TypeError, match="HOST_ONLY must be a sentence"):
        study.run(module, study.quick_config(module), out=out, figure=False)


def test_every_study_either_computes_on_its_device_or_says_why_not():
    # A study whose Config's device reaches no computation must say so (HOST_ONLY), so that a run
    # with --device gpu warns and its sidecar does not claim a GPU. Read from the script's syntax
    # tree: the device is used where the code reads an attribute .device, an item ["device"] or
    # passes device=.
    import ast
    from pathlib import Path

    def reads_device(tree):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "device":
                return True
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "device":
                return True
            if isinstance(node, ast.keyword) and node.arg == "device":
                return True
        return False

    for name, path in cli.find_studies().items():
        module = cli.load_study(name)
        assert reads_device(ast.parse(Path(path).read_text())) != study.host_only(module), name


def test_gpu_device_without_gpu_is_refused(toy, monkeypatch, capsys):
    monkeypatch.setattr(study, "available_devices", lambda: ("cpu",))
    assert cli.main(["run", "toy", "--quick", "--device", "gpu", "--out", str(toy / "out")]) == 2
    assert "shallow run: error: device='gpu' is not available here (available: cpu)" in capsys.readouterr().err



def test_gpu_device_refused_names_why_no_gpu_is_usable(toy, monkeypatch, capsys):
    # "device='gpu' is not available here (available: cpu)" left the user to guess: no CuPy, no device, or
    # SHALLOW_DISABLE_CUPY. With the variable set the GPU is hidden on any machine: the line must say so.
    from shallow import backend

    monkeypatch.setenv("SHALLOW_DISABLE_CUPY", "1")
    backend._cupy.cache_clear()
    try:
        assert cli.main(["run", "toy", "--quick", "--device", "gpu", "--out", str(toy / "out")]) == 2
    finally:
        backend._cupy.cache_clear()
    err = capsys.readouterr().err
    assert "device='gpu' is not available here (available: cpu): SHALLOW_DISABLE_CUPY=1 hides CuPy" in err

@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "argument --seed: expected a seed, an integer >= 0, got '-1'"),
    (["--workers", "0"], "argument --workers: expected a number of worker processes, an integer >= 1"),
    (["--scales", "1,a"], "argument --scales: expected comma-separated float values"),
    (["--centred", "maybe"], "argument --centred: expected true or false"),
])
def test_bad_flag_values_are_usage_errors_naming_the_flag(toy, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "toy", "--quick", "--out", str(toy / "out"), *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("word, value", [("yes", True), ("ON", True), ("1", True), ("false", False), ("No", False),
                                         ("0", False)])
def test_boolean_flags_read_the_usual_words(toy, word, value):
    module = cli.load_study("toy")
    assert study.config_from_args(module, study.build_parser(module).parse_args(["--centred", word])).centred is value


def test_a_bad_config_value_is_an_error_message_not_a_traceback(toy, capsys, monkeypatch):
    argv = ["run", "toy", "--n", "0", "--out", str(toy / "out")]
    assert cli.main(argv) == 2
    assert "shallow run: error: n must be an integer >= 1, got 0" in capsys.readouterr().err
    monkeypatch.setenv("SHALLOW_TRACEBACK", "1")
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        cli.main(argv)


def test_an_output_folder_that_is_a_file_is_refused(toy, capsys):
    (toy / "taken").write_text("")
    assert cli.main(["run", "toy", "--quick", "--out", str(toy / "taken" / "sub")]) == 2
    assert "out=" in capsys.readouterr().err


@pytest.mark.parametrize("sub", ["results", "figures"])
def test_an_output_folder_holding_a_file_named_results_or_figures_is_refused_before_computing(toy, capsys, sub):
    # used to compute, then stop with OSError's traceback (FileExistsError) on writing the result or figure
    (toy / "out").mkdir()
    (toy / "out" / sub).write_text("")
    assert cli.main(["run", "toy", "--quick", "--out", str(toy / "out")]) == 2
    assert f"holds a file {sub}" in capsys.readouterr().err
    assert cli.load_study("toy").CALLS == []  # refused before compute ran


def test_negative_values_of_tuple_and_float_flags_are_values_not_flags(toy):
    # argparse of Python < 3.13 read "-1,2" and "-1e-3" as flags: "argument --scales: expected one argument"
    parser = study.build_parser(cli.load_study("toy"))
    args = parser.parse_args(["--scales", "-1,2.5", "--d", "-3"])
    assert args.scales == (-1.0, 2.5) and args.d == -3
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--scales", "-0.5,-1e-3"]) == 0
    assert json.loads((out / "figures" / "toy_quick.json").read_text())["config"]["scales"] == [-0.5, -0.001]


def test_a_tuple_of_bools_flag_reads_false_as_false():
    # bool("false") is True: each entry read the way a bool flag reads its value
    module = type(sys)("demo")

    @dataclasses.dataclass(frozen=True)
    class Config:
        centred: tuple = (True, False)
        seed: int = 0
        device: str = "cpu"

    module.Config = Config
    parser = study.build_parser(module)
    assert parser.parse_args(["--centred", "false,no,0,true"]).centred == (False, False, False, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--centred", "false,maybe"])


TYPED = TOY.replace('''    return {"mean": float(x.mean()), "x": x, "label": "toy"}''',
                    '''    return {"mean": float(x.mean()), "x": x, "label": "toy", "widths": [1, 2],
            "total": np.asarray(x.sum()), "first": np.float32(x[0])}''')


def test_a_computed_result_is_returned_and_summarised_as_its_cached_copy_is(toy):
    # a list, a 0-d array and a float32 came back from the cache as an array, a float and a float: the
    # computing run's plot saw other types, and its sidecar's summary left the 0-d array out
    (toy / "studies" / "toy.py").write_text(textwrap.dedent(TYPED))
    module = cli.load_study("toy")
    cfg = study.quick_config(module)
    computed = study.run(module, cfg, quick=True, out=toy / "out")
    summary = json.loads((toy / "out" / "figures" / "toy_quick.json").read_text())["summary"]
    cached = study.run(module, cfg, quick=True, out=toy / "out")
    assert computed["_cached"] is False and cached["_cached"] is True
    for key in ("x", "widths", "total", "first", "label"):
        assert type(computed[key]) is type(cached[key]), key
    assert isinstance(computed["widths"], np.ndarray) and type(computed["total"]) is float
    assert json.loads((toy / "out" / "figures" / "toy_quick.json").read_text())["summary"] == summary
    assert summary["total"] == cached["total"]


def test_interrupted_write_leaves_no_result_file(tmp_path):
    target = tmp_path / "r.npz"

    def crash(tmp):
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.atomic_write(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask_like_any_other_file(tmp_path):
    # the temporary file of an atomic write was created by mkstemp with mode 0o600: results and
    # figures were private to their owner whatever the umask
    import os
    old = os.umask(0o022)
    try:
        study.atomic_write(tmp_path / "r.txt", lambda tmp: tmp.write_text("x"))
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "r.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644


def test_study_flags_are_not_abbreviated(toy, capsys):
    # --scal would otherwise set the field scales (and --m a field m_teacher of a study without m)
    with pytest.raises(SystemExit):
        study.build_parser(cli.load_study("toy")).parse_args(["--scal", "0.5,3"])
    assert "unrecognized arguments: --scal" in capsys.readouterr().err


def test_saved_result_round_trips(tmp_path):
    result = {"a": np.arange(3.0), "s": 1.5, "name": "x", "k": 4}
    study.save_npz_atomic(tmp_path / "r.npz", result)
    back = study.load_npz(tmp_path / "r.npz")
    assert back["s"] == 1.5 and back["name"] == "x" and back["k"] == 4
    np.testing.assert_array_equal(back["a"], result["a"])


def test_loading_a_file_that_is_not_a_result_is_a_clear_error(tmp_path):
    # numpy's message for a file that is not a zip archive spoke of pickled data; an object array (which
    # save_npz_atomic never writes) is refused rather than unpickled
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="text.npz is not an .npz archive"):
        study.load_npz(tmp_path / "text.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="objects.npz holds object arrays"):
        study.load_npz(tmp_path / "objects.npz")
    good = tmp_path / "r.npz"
    study.save_npz_atomic(good, {"x": np.arange(100.0)})
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])  # the central directory is lost
    with pytest.raises(ValueError, match="cut.npz is not an .npz archive"):
        study.load_npz(tmp_path / "cut.npz")
    damaged = bytearray(good.read_bytes())
    damaged[400] ^= 0xFF  # inside x's data: the archive's CRC-32 no longer matches
    (tmp_path / "flipped.npz").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="flipped.npz is a damaged .npz archive: Bad CRC-32"):
        study.load_npz(tmp_path / "flipped.npz")
    with pytest.raises(FileNotFoundError):
        study.load_npz(tmp_path / "missing.npz")


def test_study_config_pickles_for_worker_processes(toy):
    import pickle

    module = cli.load_study("toy")
    cfg = module.Config(n=3)
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_workers_and_scheduler_reach_the_study_runner(toy, monkeypatch):
    seen = {}
    real_run = study.run

    def spy(module, cfg, **kwargs):
        seen.update(kwargs)
        return real_run(module, cfg, **kwargs)

    monkeypatch.setattr(study, "run", spy)
    cli.main(["run", "toy", "--quick", "--out", str(toy / "out"), "--workers", "2", "--scheduler", "serial"])
    assert seen["workers"] == 2 and seen["scheduler"] == "serial"


def test_editing_a_study_invalidates_its_cached_result(toy):
    out = str(toy / "out")
    cli.main(["run", "toy", "--quick", "--out", out])
    script = toy / "studies" / "toy.py"
    script.write_text(script.read_text() + "\n# edited\n")
    import sys

    del sys.modules["shallow_studies.toy"]
    module = cli.load_study("toy")
    cli.main(["run", "toy", "--quick", "--out", out])
    assert len(module.CALLS) == 1  # recomputed by the edited module, not served from the cache
    assert len(list((toy / "out" / "results").glob("toy-*.npz"))) == 2


def test_run_all_skips_a_study_whose_requirement_is_missing(toy, capsys):
    script = toy / "studies" / "toy.py"
    script.write_text(script.read_text() + '\nREQUIRES = ("a_package_that_is_not_installed",)\n')
    assert cli.main(["run", "--all", "--quick", "--out", str(toy / "out")]) == 0
    assert "toy: skipped (toy needs a_package_that_is_not_installed" in capsys.readouterr().out
    assert not (toy / "out" / "figures").exists()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "toy", "--quick", "--out", str(toy / "out")])
    assert exit_.value.code == 2 and "toy needs a_package_that_is_not_installed" in capsys.readouterr().err


def test_run_all_names_the_study_whose_error_stopped_it(toy, capsys, monkeypatch):
    # with --all the error line said what went wrong but not in which of the studies
    broken = TOY.replace("CALLS.append(cfg)", 'raise RuntimeError("the flow diverged at step 3")')
    (toy / "studies" / "broken.py").write_text(textwrap.dedent(broken))
    monkeypatch.delitem(sys.modules, "shallow_studies.broken", raising=False)
    assert cli.main(["run", "--all", "--quick", "--out", str(toy / "out")]) == 2
    assert "shallow run: error: broken: the flow diverged at step 3" in capsys.readouterr().err


@pytest.mark.parametrize("progress", [True, False])
def test_show_progress_inside_compute_follows_the_runs_choice(toy, progress):
    # a study's own loops (fit's bar) ask study.show_progress(); run(progress=...) decides it
    module = cli.load_study("toy")
    seen = []
    real = module.compute
    module.compute = lambda cfg: (seen.append(study.show_progress()), real(cfg))[1]
    study.run(module, study.quick_config(module), quick=True, out=toy / "out", figure=False, progress=progress)
    assert seen == [progress]


def test_a_study_script_run_directly_exits_with_status_2_on_a_bad_value(tmp_path):
    script = cli.find_studies()["funk_hecke_spectra"]
    done = subprocess.run([sys.executable, str(script), "--quick", "--kmax", "-5", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "funk_hecke_spectra: error: kmax must be an integer" in done.stderr


def test_a_study_script_run_directly_names_itself_in_usage_and_errors(toy):
    # python studies/NAME.py runs the module as __main__: its usage line and argparse's errors said
    # "__main__" instead of the study's name.
    import types

    module = cli.load_study("toy")
    as_script = types.ModuleType("__main__", module.__doc__)
    as_script.__dict__.update({k: v for k, v in vars(module).items() if k not in ("__name__", "__doc__")})
    assert study.build_parser(as_script).prog == "toy"


def test_run_study_help_states_the_studys_claim(toy, capsys):
    # the description of a study's flags is the first line of its docstring: the claim
    assert cli.main(["run", "toy", "--help"]) == 0
    assert "Toy study: the mean of n standard normals is within 5/sqrt(n) of 0." in capsys.readouterr().out


def test_one_worker_is_a_valid_worker_count(toy):
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--workers", "1"]) == 0
    assert (out / "figures" / "toy_quick.json").exists()


def test_sidecar_is_strict_json_with_non_finite_numbers_as_strings(toy, monkeypatch):
    # Python's json wrote NaN and Infinity, which JSON has not (json.loads with parse_constant refuses them)
    module = cli.load_study("toy")
    compute = module.compute
    monkeypatch.setattr(module, "compute", lambda cfg: {**compute(cfg), "ratio": float("nan"), "top": float("-inf")})
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out)]) == 0

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    sidecar = json.loads((out / "figures" / "toy_quick.json").read_text(), parse_constant=refuse)
    assert sidecar["summary"]["ratio"] == "nan" and sidecar["summary"]["top"] == "-inf"


def test_a_dask_scheduler_without_dask_is_a_one_line_error_before_any_compute(toy, capsys, monkeypatch):
    # it was a traceback ending in ImportError, once the first grid started
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)  # find_spec answers None: not installed
    monkeypatch.delenv("SHALLOW_TRACEBACK", raising=False)
    status = cli.main(["run", "toy", "--quick", "--out", str(toy / "out"), "--scheduler", "tcp://127.0.0.1:1"])
    assert status == 2
    assert "scheduler='tcp://127.0.0.1:1' is the address of a dask scheduler, which needs dask.distributed" in \
        capsys.readouterr().err
    assert not (toy / "out" / "results").exists()


def test_a_diverged_flow_is_a_one_line_error(toy, capsys, monkeypatch):
    # FloatingPointError (FlowDivergenceError, TrainingDivergedError: too large a step) printed a traceback
    from shallow.flows import FlowDivergenceError

    def diverge(cfg):
        raise FlowDivergenceError("gradient flow diverged at step 2")

    monkeypatch.setattr(cli.load_study("toy"), "compute", diverge)
    monkeypatch.delenv("SHALLOW_TRACEBACK", raising=False)
    assert cli.main(["run", "toy", "--quick", "--out", str(toy / "out")]) == 2
    assert "shallow run: error: gradient flow diverged at step 2" in capsys.readouterr().err


def test_a_cached_result_is_said_to_be_cached(toy, capsys):
    # a rerun reads results/ without computing: it printed "compute 7.6 s" (the first run's time) as if it had
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out)]) == 0
    first = json.loads((out / "figures" / "toy_quick.json").read_text())
    assert "toy: compute " in capsys.readouterr().out and first["result_cached"] is False
    assert cli.main(["run", "toy", "--quick", "--out", str(out)]) == 0
    again = json.loads((out / "figures" / "toy_quick.json").read_text())
    assert f"toy: cached (computed in {first['wall_time_s']:.1f} s)" in capsys.readouterr().out
    assert again["result_cached"] is True and again["wall_time_s"] == first["wall_time_s"]


def test_sidecar_wall_time_is_the_time_compute_took(toy, monkeypatch):
    # wall_time_s times the study's compute: at least the 0.05 s it sleeps, at most the whole run around it
    import time

    module = cli.load_study("toy")
    compute = module.compute
    monkeypatch.setattr(module, "compute", lambda cfg: (time.sleep(0.05), compute(cfg))[1])
    out = toy / "out"
    start = time.perf_counter()
    cli.main(["run", "toy", "--quick", "--out", str(out)])
    elapsed = time.perf_counter() - start
    wall = json.loads((out / "figures" / "toy_quick.json").read_text())["wall_time_s"]
    assert 0.05 <= wall <= elapsed


def test_studies_are_found_beside_the_package_from_any_working_folder(tmp_path, monkeypatch):
    # without SHALLOW_STUDIES and without ./studies, a source checkout's studies/ (beside shallow/) is used
    from pathlib import Path

    monkeypatch.delenv("SHALLOW_STUDIES", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.studies_dir() == Path(cli.__file__).resolve().parents[1] / "studies"
    assert "width_scaling" in cli.find_studies()


def test_shallow_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    assert "The shallow command: list and run the studies." in capsys.readouterr().out


def test_a_study_folder_that_does_not_exist_is_named(tmp_path, monkeypatch, capsys):
    # SHALLOW_STUDIES with a typo, or a script's path, listed no study with status 0
    monkeypatch.setenv("SHALLOW_STUDIES", str(tmp_path / "nope"))
    monkeypatch.delenv("SHALLOW_TRACEBACK", raising=False)
    assert cli.main(["list"]) == 2
    assert "shallow: error: SHALLOW_STUDIES='" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"SHALLOW_STUDIES='.*nope' is not a folder"):
        cli.find_studies()


def test_run_all_with_a_stray_value_says_that_all_takes_no_study(toy, capsys):
    # "--all --widths 5,10": 5,10 was read as STUDY, and the message asked for one STUDY or --all
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--all", "--quick", "--widths", "5,10"])
    assert exit_.value.code == 2 and "shallow run --all: takes no STUDY (got '5,10';" in capsys.readouterr().err


@pytest.mark.parametrize("edit, match", [
    ("    force: bool = False\n", r"Config has the field\(s\) force, named like the common flags"),
    ("    all: int = 1\n", r"Config has the field\(s\) all, named like the common flags"),
    ("    T: float = 250\n", None),
])
def test_study_authors_config_fields_are_checked_or_parsed_by_their_annotation(toy, edit, match):
    # a field named force crashed argparse at every call (--help included); T: float = 250 took only ints
    script = toy / "studies" / "toy.py"
    script.write_text(script.read_text().replace("    seed: int = 0\n", edit + "    seed: int = 0\n"))
    out = toy / "out"
    if match:
        with pytest.raises(TypeError, match=match):
            cli.main(["run", "toy", "--quick", "--out", str(out)])
    else:
        assert cli.main(["run", "toy", "--quick", "--out", str(out), "--T", "2.5"]) == 0
        assert json.loads((out / "figures" / "toy_quick.json").read_text())["config"]["T"] == 2.5


def test_a_quick_preset_with_an_unknown_field_is_named(toy):
    script = toy / "studies" / "toy.py"
    script.write_text(script.read_text().replace('QUICK = {"n": 10}', 'QUICK = {"n": 10, "steps": 3}'))
    with pytest.raises(TypeError, match="study toy's QUICK sets 'steps', which is not a Config field"):
        cli.main(["run", "toy", "--quick", "--out", str(toy / "out")])


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sidecar_records_the_sha256_of_its_figure(toy):
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out)]) == 0
    sidecar = json.loads((out / "figures" / "toy_quick.json").read_text())
    assert sidecar["figure_sha256"] == _sha256(out / "figures" / "toy_quick.png")


def test_an_interruption_while_the_sidecar_is_built_keeps_the_previous_figure_and_sidecar(toy, monkeypatch):
    # the PNG was renamed before git ran for the sidecar's provenance: Ctrl-C meanwhile left a seed-1
    # figure beside the seed-0 sidecar
    out, figures = toy / "out", toy / "out" / "figures"
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--seed", "0"]) == 0
    before = {path.name: path.read_bytes() for path in figures.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "_provenance", interrupted)
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--seed", "1"]) == 130
    assert {path.name: path.read_bytes() for path in figures.iterdir()} == before  # no temporary file either


def test_an_interruption_between_the_two_renames_leaves_a_figure_its_sidecar_does_not_match(toy, monkeypatch):
    # the sidecar is renamed first: the previous figure beside the new sidecar, told apart by figure_sha256
    import os

    out, figures = toy / "out", toy / "out" / "figures"
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--seed", "0"]) == 0
    old_png = (figures / "toy_quick.png").read_bytes()
    replace = os.replace

    def interrupted_at_the_png(src, dst):
        if str(dst).endswith(".png"):
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_at_the_png)
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--seed", "1"]) == 130
    sidecar = json.loads((figures / "toy_quick.json").read_text())
    assert sidecar["config"]["seed"] == 1 and (figures / "toy_quick.png").read_bytes() == old_png
    assert sidecar["figure_sha256"] != _sha256(figures / "toy_quick.png")
    assert sorted(path.name for path in figures.iterdir()) == ["toy_quick.json", "toy_quick.png"]


def test_ctrl_c_in_a_study_without_grid_says_that_it_restarts_from_its_beginning(toy, capsys, monkeypatch):
    # "finished studies and grid points are cached" was printed also for studies without a grid
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.delenv("SHALLOW_TRACEBACK", raising=False)
    monkeypatch.setattr(cli.load_study("toy"), "compute", interrupted)
    assert cli.main(["run", "toy", "--quick", "--out", str(toy / "out")]) == 130
    err = capsys.readouterr().err
    assert "shallow run: interrupted in toy, which restarts from its beginning" in err
    assert "grid points toy finished" not in err


@pytest.mark.parametrize("err", [KeyboardInterrupt(), study.StudyInterrupted("grid_toy", True),
                                 study.StudyInterrupted("toy", False)], ids=["outside", "grid", "no_grid"])
def test_interrupted_message_names_the_cache_once_with_every_folder_a_rerun_reuses(err, tmp_path):
    # "(cached under ...)" was spelt out twice in the grid case: once for the points, once for the results
    message = cli.interrupted_message(err, tmp_path / "out")
    results = tmp_path / "out" / "results"
    assert message.count("cached under") == 1 and f"cached under {results}/: " in message
    assert "the results of the studies that finished computing" in message and "--force recomputes them" in message
    grid = getattr(err, "grid_points_cached", False)
    assert (f"the grid points grid_toy finished (in {results / 'points' / 'grid_toy'}/)" in message) == grid
    assert ("restarts from its beginning" in message) == (isinstance(err, study.StudyInterrupted) and not grid)


def _toy_script(doc, n):
    """The head of a toy study script: its docstring, imports and a Config of one integer field n."""
    return f'''"""{doc}"""
import dataclasses
from shallow import study
from shallow.sweep import SweepError

@dataclasses.dataclass(frozen=True)
class Config:
    n: int = {n}
    seed: int = 0
    device: str = "cpu"
'''


GRID_TOY = _toy_script("Grid toy: squares of 0..n-1, one grid point each.", 5) + '''
STOP = []  # set by a test: Ctrl-C after the grid

def square(point):
    return {"y": point["x"] ** 2}

def compute(cfg):
    runs = study.run_grid(square, [{"x": x} for x in range(cfg.n)])
    if STOP:
        raise KeyboardInterrupt
    return {"total": sum(r["y"] for r in runs)}

def plot(result, cfg):
    return study.new_figure()[0]
'''


def test_ctrl_c_in_a_study_with_a_grid_says_that_its_finished_points_are_cached_and_a_rerun_reuses_them(
        toy, capsys, monkeypatch):
    (toy / "studies" / "grid_toy.py").write_text(GRID_TOY)
    monkeypatch.delitem(sys.modules, "shallow_studies.grid_toy", raising=False)
    monkeypatch.delenv("SHALLOW_TRACEBACK", raising=False)
    command = ["run", "grid_toy", "--out", str(toy / "out"), "--scheduler", "serial"]
    cli.load_study("grid_toy").STOP.append(True)
    assert cli.main(command) == 130
    err = capsys.readouterr().err
    assert "shallow run: interrupted in grid_toy. The same command resumes" in err
    # the folders as this run wrote them (its --out), where the points of the grid are found
    points = toy / "out" / "results" / "points" / "grid_toy"
    assert f"the grid points grid_toy finished (in {points}/)" in err
    assert len(list(points.iterdir())) >= 5
    cli.load_study("grid_toy").STOP.clear()
    assert cli.main(command) == 0
    sidecar = json.loads((toy / "out" / "figures" / "grid_toy.json").read_text())
    assert sidecar["grid_points"]["from_cache"] == sidecar["grid_points"]["points"] == 5
    assert sidecar["summary"]["total"] == 0 + 1 + 4 + 9 + 16


TERM_TOY = _toy_script("Term toy: squares of 0..n-1, one grid point each; point 3 receives SIGTERM.", 5) + '''
import os, signal
KILL_AT = [3]  # cleared by a test: no SIGTERM

def square(point):
    if point["x"] in KILL_AT:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # it would end the test process
            raise AssertionError("SIGTERM has its default action during the run")
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from another shell, while point 3 runs
        raise AssertionError("SIGTERM did not stop the point")
    return {"y": point["x"] ** 2}

def compute(cfg):
    runs = study.run_grid(square, [{"x": x} for x in range(cfg.n)])
    return {"total": sum(r["y"] for r in runs)}

def plot(result, cfg):
    return study.new_figure()[0]
'''


def test_sigterm_stops_a_run_as_ctrl_c_does_keeping_the_finished_grid_points_with_status_143(toy, capsys,
                                                                                              monkeypatch):
    # SIGTERM (kill PID, timeout, a job scheduler's time limit) ended the run outright: no line saying what a
    # rerun reuses, temporary files left behind, a flow's progress since its last checkpoint lost
    import signal

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this test process: the run keeps it")
    (toy / "studies" / "term_toy.py").write_text(TERM_TOY)
    monkeypatch.delitem(sys.modules, "shallow_studies.term_toy", raising=False)
    monkeypatch.delenv("SHALLOW_TRACEBACK", raising=False)
    command = ["run", "term_toy", "--out", str(toy / "out"), "--scheduler", "serial"]
    assert cli.main(command) == 143  # 128 + SIGTERM, the shell's
    assert "shallow run: interrupted in term_toy. The same command resumes" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the caller's action is back
    points = toy / "out" / "results" / "points" / "term_toy"
    assert sorted(path.suffix for path in points.iterdir()) == [".npz"] * 3  # points 0-2, no temporary file
    cli.load_study("term_toy").KILL_AT.clear()
    assert cli.main(command) == 0
    sidecar = json.loads((toy / "out" / "figures" / "term_toy.json").read_text())
    assert (sidecar["grid_points"]["from_cache"], sidecar["grid_points"]["points"]) == (3, 5)
    assert sidecar["summary"]["total"] == 0 + 1 + 4 + 9 + 16


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="os.fork: POSIX")
def test_a_process_forked_during_a_run_has_sigterms_default_action():
    # a forked worker (a sweep's start_method="fork") kept the run's Python-level SIGTERM handler, which runs only
    # between bytecodes: inside a long C call (a BLAS product) it outlived its parent's terminate() until the call
    # returned (6.7 s for a 7 s call). The child reports its action through a pipe.
    import os
    import signal

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this test process: the run keeps it")
    read, write = os.pipe()
    with cli._sigterm_as_ctrl_c():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.write(write, b"D" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else b"H")
            finally:
                os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
    assert answer == b"D"


def test_sigterm_in_a_nested_report_errors_gives_status_143():
    # report_errors inside report_errors (study.main called from a run): the inner call, whose SIGTERM list stayed
    # empty since the outer call's handler was in place, caught the KeyboardInterrupt and returned 130
    import os
    import signal

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this test process: the run keeps it")

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    assert cli.report_errors(lambda: cli.report_errors(terminated, "inner"), "outer") == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_corrupt_cached_result_is_an_error_that_says_force_recomputes_it(toy, capsys):
    out = str(toy / "out")
    assert cli.main(["run", "toy", "--quick", "--out", out]) == 0
    (cache,) = (toy / "out" / "results").glob("toy-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])  # cut short
    assert cli.main(["run", "toy", "--quick", "--out", out]) == 2
    assert "cannot be read: --force recomputes it" in capsys.readouterr().err
    assert cli.main(["run", "toy", "--quick", "--out", out, "--force"]) == 0
    assert cli.main(["run", "toy", "--quick", "--out", out]) == 0
    assert "cached" in capsys.readouterr().out


def test_the_temporary_file_of_a_killed_writer_is_removed_by_a_write_of_the_same_file_an_hour_later(tmp_path):
    # SIGKILL leaves .NAME.HEX.tmp behind (no except clause runs); they accumulated in figures/ and results/
    import os
    import signal
    import time

    target = tmp_path / "r.npz"
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; from shallow import study; "
                               f"study.atomic_write({str(target)!r}, lambda tmp: (tmp.write_text('half'), "
                               "print('writing', flush=True), time.sleep(60)))"], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    (killed,) = tmp_path.glob(".r.npz.*.tmp")
    live = tmp_path / ".r.npz.0123456789ab.tmp"  # a concurrent writer's, just created: kept
    other = tmp_path / ".q.npz.0123456789ab.tmp"  # another file's, however old: kept
    live.write_text("")
    other.write_text("")
    hour_ago = time.time() - study.STALE_TMP_SECONDS - 60
    os.utime(other, (hour_ago, hour_ago))
    study.save_npz_atomic(target, {"x": 1.0})
    assert killed.exists()  # killed within the hour: it might be a live writer's still
    os.utime(killed, (hour_ago, hour_ago))
    study.save_npz_atomic(target, {"x": 2.0})
    assert not killed.exists() and live.exists() and other.exists()
    assert study.load_npz(target) == {"x": 2.0}


FALLBACK_TOY = _toy_script("Fallback toy: a grid whose points fail, caught by the study, then one that works.", 3) + '''
def fail(point):
    raise ArithmeticError("no")

def square(point):
    return {"y": point["x"] ** 2}

def compute(cfg):
    try:
        study.run_grid(fail, [{"x": x} for x in range(cfg.n)])
    except SweepError:
        pass
    runs = study.run_grid(square, [{"x": x} for x in range(cfg.n)])
    return {"total": sum(r["y"] for r in runs)}

def plot(result, cfg):
    return study.new_figure()[0]
'''


def test_a_study_that_catches_a_failed_grid_and_goes_on_writes_its_result(toy, monkeypatch):
    # the failed grid left None in the run's list of grids, and summing their points raised TypeError
    (toy / "studies" / "fallback_toy.py").write_text(FALLBACK_TOY)
    monkeypatch.delitem(sys.modules, "shallow_studies.fallback_toy", raising=False)
    assert cli.main(["run", "fallback_toy", "--out", str(toy / "out"), "--scheduler", "serial"]) == 0
    sidecar = json.loads((toy / "out" / "figures" / "fallback_toy.json").read_text())
    assert sidecar["summary"]["total"] == 0 + 1 + 4 and sidecar["grid_points"]["points"] == 3


def test_a_write_keeps_the_old_temporary_files_of_other_files(tmp_path):
    # only .r.npz.HEX.tmp (12 hexadecimal digits) is r.npz's: .r.npz.bak.HEX.tmp is the temporary file of
    # r.npz.bak, and .r.npz.notes.tmp is not one of shallow's, however old
    import os
    import time

    others = [tmp_path / ".r.npz.bak.0123456789ab.tmp", tmp_path / ".r.npz.notes.tmp"]
    hour_ago = time.time() - study.STALE_TMP_SECONDS - 60
    for other in others:
        other.write_text("")
        os.utime(other, (hour_ago, hour_ago))
    study.save_npz_atomic(tmp_path / "r.npz", {"x": 1.0})
    assert all(other.exists() for other in others)


def test_a_float_field_with_an_int_default_takes_floats_under_postponed_annotations(toy):
    # with `from __future__ import annotations` (every study of the gallery) field.type is the string "float"
    script = toy / "studies" / "toy.py"
    text = script.read_text().replace("import dataclasses\n",
                                      "from __future__ import annotations\nimport dataclasses\n", 1)
    script.write_text(text.replace("    seed: int = 0\n", "    T: float = 250\n    seed: int = 0\n"))
    module = cli.load_study("toy")
    assert study.config_from_args(module, study.build_parser(module).parse_args(["--T", "2.5"])).T == 2.5


def test_run_all_refuses_a_study_flag_given_as_one_word(toy, capsys):
    # "--all --n=5": no value to be read as STUDY, and the flag of one study must not reach every study
    module = cli.load_study("toy")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--all", "--quick", "--n=5", "--out", str(toy / "out")])
    assert exit_.value.code == 2 and "study-specific flags ['--n=5'] need a single STUDY" in capsys.readouterr().err
    assert module.CALLS == []


def test_seed_0_on_the_shallow_command_overrides_a_studys_other_default(toy):
    script = toy / "studies" / "toy.py"
    script.write_text(script.read_text().replace("    seed: int = 0\n", "    seed: int = 5\n"))
    out = toy / "out"
    assert cli.main(["run", "toy", "--quick", "--out", str(out), "--seed", "0"]) == 0
    assert json.loads((out / "figures" / "toy_quick.json").read_text())["config"]["seed"] == 0


def test_ctrl_c_in_a_study_run_inside_another_names_the_inner_study(toy, monkeypatch):
    # the inner run's StudyInterrupted says which study stopped and what it cached: the outer run keeps it
    import types

    inner = cli.load_study("toy")

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(inner, "compute", interrupted)
    outer = types.ModuleType("outer")
    outer.Config, outer.plot = inner.Config, inner.plot
    outer.compute = lambda cfg: study.run(inner, cfg, out=toy / "out", figure=False)
    with pytest.raises(study.StudyInterrupted) as err:
        study.run(outer, inner.Config(n=3), out=toy / "out", figure=False)
    assert (err.value.study, err.value.grid_points_cached) == ("toy", False)


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "argument --seed: expected a seed, an integer >= 0, got '-1'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
])
def test_a_study_scripts_seed_and_device_flags_refuse_bad_values_as_usage_errors(toy, capsys, flags, message):
    # the study's own parser (python studies/NAME.py), not only the shallow command's, checks them
    module = cli.load_study("toy")
    with pytest.raises(SystemExit) as exit_:
        study.main(module, flags)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_report_errors_gives_sigterm_its_default_action_back_when_the_run_returns():
    # _sigterm_as_ctrl_c: "the previous action is restored at the end". SIGTERM's default action is set first
    # (and the test process's own action put back after): the tests above skip when a handler is in place,
    # so a handler left behind by one of them would only have made them skip.
    import signal

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert cli.report_errors(lambda: 0, "prog") == 0
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
