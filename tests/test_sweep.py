"""Sweeps: parallel grids with an atomic on-disk cache, resumable, failures isolated, dask optional."""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from shallow import cli, study
from shallow.sweep import SweepError, grid, point_key, sweep


# Point functions are module-level: worker processes import them from this file.

def flow_point(config):
    """A small gradient flow (numpy, deterministic): the kind of point a study sweeps."""
    from shallow.flows import EmpiricalRisk, gradient_flow
    from shallow.networks import TwoLayer

    rng = np.random.default_rng(config["seed"])
    X = rng.standard_normal((64, 5))
    y = np.tanh(X[:, 0])
    net = TwoLayer.init(config["m"], 5, scale=config["alpha"], rng=config["seed"] + 1)
    traj = gradient_flow(net, EmpiricalRisk(X, y), steps=30, step_size=0.05)
    return {"risk": traj.risks[-1], "a": traj.a, "label": f"m={config['m']}"}


def counted_point(config):
    """value = 2 x; leaves a marker file per call in config['calls'], and obeys config['fail']."""
    Path(config["calls"], f"{config['x']}-{uuid.uuid4().hex}").touch()
    if config.get("fail") and config["x"] % 2:
        raise ValueError(f"odd x={config['x']} refused")
    stop = Path(config["calls"]).parent / "stop"
    if stop.exists() and config["x"] == int(stop.read_text()):
        raise KeyboardInterrupt
    return {"value": 2.0 * config["x"], "vector": np.arange(3) * config["x"],
            "threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"), "pid": os.getpid()}


def scaled_point(config, factor):
    return {"value": factor * config["x"]}


def dying_point(config):
    if config["x"] == 1:
        os._exit(3)  # a worker killed mid-point (out of memory, segfault)
    return {"value": config["x"]}


def not_a_dict(config):
    return [1, 2]


def calls(folder):
    return sorted(int(p.name.split("-")[0]) for p in Path(folder).iterdir())


@pytest.fixture
def counted(tmp_path):
    folder = tmp_path / "calls"
    folder.mkdir()

    def make(xs, **axes):
        """The grid of x in xs (and further axes) counting its calls in ``folder``: (points, folder)."""
        return grid({"calls": str(folder)}, x=list(xs), **axes), folder

    return make


def test_parallel_sweep_returns_each_points_result_in_grid_order(counted):
    points, folder = counted([3, 1, 2, 1])  # a duplicate: computed once
    out = sweep(counted_point, points, workers=2)
    assert [r["value"] for r in out] == [6.0, 2.0, 4.0, 2.0]
    np.testing.assert_array_equal(out[0]["vector"], [0, 3, 6])
    assert calls(folder) == [1, 2, 3]
    assert all(r["pid"] != os.getpid() for r in out)  # computed in worker processes
    assert {r["threads"] for r in out} == {"1"}  # BLAS limited to one thread in each worker
    assert out.ok and out.cached == [False] * 4


def test_cache_hit_after_restart_recomputes_nothing(counted, tmp_path):
    points, folder = counted(range(4))
    first = sweep(counted_point, points, cache_dir=tmp_path / "cache", workers=2)
    again = sweep(counted_point, points, cache_dir=tmp_path / "cache", workers=2)  # a new sweep: a restart
    assert calls(folder) == [0, 1, 2, 3]  # no new call
    assert again.cached == [True] * 4 and first.cached == [False] * 4
    for a, b in zip(first, again):  # the same values and types, computed or loaded
        assert a.keys() == b.keys() and a["value"] == b["value"] and type(a["value"]) is type(b["value"])
        np.testing.assert_array_equal(a["vector"], b["vector"])
    sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial", force=True)
    assert calls(folder) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4


def test_interrupted_sweep_resumes_with_nothing_recomputed(counted, tmp_path):
    points, folder = counted(range(5))
    (tmp_path / "stop").write_text("3")  # Ctrl-C while point 3 runs
    with pytest.raises(KeyboardInterrupt):
        sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    (tmp_path / "stop").unlink()
    out = sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial")
    assert calls(folder) == [0, 1, 2, 3, 3, 4]  # 0-2 once; 3 again (it never finished); 4 once
    assert out.cached == [True, True, True, False, False]
    assert [r["value"] for r in out] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_crash_mid_write_leaves_no_corrupt_file(counted, tmp_path, monkeypatch):
    """Ctrl-C inside the third write: two complete files, no third, no temporary file; a rerun completes."""
    points, folder = counted(range(4))
    cache = tmp_path / "cache"
    real_savez, writes = np.savez, []

    def savez(fh, **arrays):
        writes.append(1)
        if len(writes) == 3:
            fh.write(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt
        real_savez(fh, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(KeyboardInterrupt):
        sweep(counted_point, points, cache_dir=cache, workers=2)
    monkeypatch.setattr(np, "savez", real_savez)
    files = sorted(cache.iterdir())
    assert len(files) == 2 and all(f.suffix == ".npz" and not f.name.startswith(".") for f in files)
    for f in files:
        np.load(f)["value"]  # complete and readable
    out = sweep(counted_point, points, cache_dir=cache, scheduler="serial")
    assert sum(out.cached) == 2 and [r["value"] for r in out] == [0.0, 2.0, 4.0, 6.0]


def test_killed_process_mid_write_leaves_only_an_ignored_temporary_file(counted, tmp_path):
    """A hard kill (no cleanup at all) during a write: the final file is never half-written."""
    points, folder = counted(range(3))
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_sweep import counted_point
        from shallow.sweep import sweep
        real, n = np.savez, []
        def savez(fh, **arrays):
            n.append(1)
            if len(n) == 2:
                fh.write(b"PK half"); fh.flush(); os._exit(9)
            real(fh, **arrays)
        np.savez = savez
        sweep(counted_point, {points!r}, cache_dir={str(cache)!r}, scheduler="serial")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    finals = list(cache.glob("*.npz"))
    temps = [p for p in cache.iterdir() if p.name.startswith(".")]
    assert len(finals) == 1 and len(temps) == 1  # the point that finished, and the killed write's temp file
    out = sweep(counted_point, points, cache_dir=cache, scheduler="serial")
    assert out.cached == [True, False, False] and [r["value"] for r in out] == [0.0, 2.0, 4.0]


def test_failed_point_is_reported_with_its_config_and_the_others_are_kept(counted, tmp_path):
    points, folder = counted(range(5), fail=[True])
    cache = tmp_path / "cache"
    with pytest.raises(SweepError) as info:
        sweep(counted_point, points, cache_dir=cache, workers=2)
    message = str(info.value)
    assert "2 of 5 sweep points failed" in message
    assert "'x': 1" in message and "'x': 3" in message and "ValueError: odd x=1 refused" in message
    assert "Traceback" in message and "counted_point" in message  # the worker's traceback
    assert [f.index for f in info.value.failures] == [1, 3]
    assert len(list(cache.glob("*.npz"))) == 3  # the good points are cached
    out = sweep(counted_point, points, cache_dir=cache, scheduler="serial", errors="collect")
    assert out.cached == [True, False, True, False, True]  # only the failed points ran again
    assert out[1] is None and [f.config["x"] for f in out.failures] == [1, 3]
    assert calls(folder) == [0, 1, 1, 2, 3, 3, 4]


def test_a_dying_worker_fails_its_points_without_hanging(tmp_path):
    out = sweep(dying_point, grid(x=[0, 1, 2]), workers=1, errors="collect")
    assert 1 in [f.index for f in out.failures]
    assert all("BrokenProcessPool" in f.error for f in out.failures)


def test_point_keys_are_canonical():
    @dataclasses.dataclass(frozen=True)
    class Point:
        m: int
        alpha: float

    assert point_key({"m": 10, "alpha": 0.5}) == point_key({"alpha": 0.5, "m": 10})
    assert point_key(Point(10, 0.5)) == point_key({"alpha": 0.5, "m": 10})
    assert point_key({"m": np.int64(10), "alpha": np.float64(0.5)}) == point_key({"m": 10, "alpha": 0.5})
    assert point_key({"m": 10}) != point_key({"m": 10.0}) != point_key({"m": True})
    assert point_key({"m": 1}) != point_key({"m": True})  # the chain above compares 10.0 with True, not 10
    assert point_key({"m": 10}, "f") != point_key({"m": 10}, "g")
    assert point_key({"w": np.arange(3.0)}) != point_key({"w": np.arange(3.0) + 1e-15})
    assert point_key({"t": (1, 2)}) == point_key({"t": [1, 2]})


def test_cache_namespace_tells_functions_apart(counted, tmp_path):
    """Two functions, or one partial with different bound arguments, never share cache files."""
    import functools

    points, folder = counted([1])
    cache = tmp_path / "cache"
    a = sweep(functools.partial(scaled_point, factor=2.0), points, cache_dir=cache, scheduler="serial")
    b = sweep(functools.partial(scaled_point, factor=3.0), points, cache_dir=cache, scheduler="serial")
    c = sweep(counted_point, points, cache_dir=cache, scheduler="serial")
    assert (a[0]["value"], b[0]["value"], c[0]["value"]) == (2.0, 3.0, 2.0)
    assert not (a.cached[0] or b.cached[0] or c.cached[0]) and len(list(cache.glob("*.npz"))) == 3
    with pytest.raises(TypeError, match="give key="):
        sweep(lambda config: {"v": 1}, points, cache_dir=cache, scheduler="serial")
    assert sweep(lambda config: {"v": 1}, points, cache_dir=cache, scheduler="serial", key="one")[0] == {"v": 1}


def test_an_edited_point_function_recomputes_and_an_unchanged_one_loads(tmp_path):
    # the default key held the function's module and name only: after an edit of its body a rerun loaded the
    # old results without a word. Its source text is in the key now (an explicit key= keeps its cache)
    from shallow.sweep import load_module_from_file

    script = tmp_path / "mypoints.py"
    cache = tmp_path / "cache"
    points = grid(x=[1, 2])

    def run(body, **kwargs):
        script.write_text(f"def f(config):\n    return {{'value': {body}}}\n")
        module = load_module_from_file(f"mypoints_{uuid.uuid4().hex}", script)
        return sweep(module.f, points, cache_dir=cache, scheduler="serial", **kwargs)

    first = run("config['x']")
    again = run("config['x']")
    edited = run("10 * config['x']")
    assert again.cached == [True, True] and [r["value"] for r in again] == [1, 2]
    assert edited.cached == [False, False] and [r["value"] for r in edited] == [10, 20]
    assert not any(first.cached)
    keyed = run("config['x']", key="mine")
    assert run("-1", key="mine").cached == [True, True] and [r["value"] for r in keyed] == [1, 2]


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="the grid is empty"):
        sweep(counted_point, grid(x=[]))
    with pytest.raises(ValueError, match="the grid is empty"):
        sweep(counted_point, [])
    with pytest.raises(ValueError, match="scheduler must be one of .* or the address of a dask scheduler"):
        sweep(counted_point, grid(x=[1]), scheduler="threads")
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        sweep(counted_point, grid(x=[1]), workers=0)
    with pytest.raises(ValueError, match="errors must be one of"):
        sweep(counted_point, grid(x=[1]), errors="ignore")
    with pytest.raises(TypeError, match="module-level function"):
        sweep(lambda c: {"v": 1}, grid(x=[1]))
    with pytest.raises(TypeError, match=r"point 0\['x'\] is a object, which has no stable hash"):
        sweep(counted_point, [{"x": object()}])
    with pytest.raises(TypeError, match="axis 'x' must be a sequence"):
        grid(x=3)
    with pytest.raises(SweepError, match="must return a dict"):
        sweep(not_a_dict, grid(x=[1]), scheduler="serial")
    with pytest.raises(ValueError, match="not both"):
        sweep(counted_point, grid(x=[1]), executor=object(), workers=2)


def ragged_point(config):
    return {"v": np.ones(config["x"])}


@dataclasses.dataclass(frozen=True)
class OnePoint:
    x: int = 1


@pytest.mark.parametrize("points", [None, 3, "ab", {"x": 1}, OnePoint()])
def test_sweep_refuses_points_that_are_not_a_list_of_configs(points):
    # a string or a single dict used to be swept character by character or key by key
    with pytest.raises(TypeError, match="points must be a list"):
        sweep(counted_point, points, scheduler="serial")


@pytest.mark.parametrize("name, value", [("workers", 2.5), ("workers", True), ("threads_per_worker", 0)])
def test_sweep_refuses_worker_counts_that_are_not_positive_integers(name, value):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        sweep(counted_point, grid(x=[1]), **{name: value})


def test_sweep_refuses_a_cache_dir_that_is_not_a_folder(tmp_path):
    with pytest.raises(TypeError, match="cache_dir must be a path"):
        sweep(counted_point, grid(x=[1]), cache_dir=3, scheduler="serial")
    (tmp_path / "file").write_text("")
    # used to warn once per point and fail every point on writing
    with pytest.raises(ValueError, match="cache_dir .* is a file"):
        sweep(counted_point, grid(x=[1]), cache_dir=tmp_path / "file", scheduler="serial")


def test_sweep_refuses_a_cache_dir_it_cannot_create_before_running_any_point(tmp_path):
    # A cache_dir under a file: every point used to be computed, then fail to be written (its result lost),
    # after one "unreadable sweep cache file" warning per point.
    (tmp_path / "file").write_text("")
    calls = tmp_path / "calls"
    calls.mkdir()
    with pytest.raises(ValueError, match="cache_dir .* cannot be created"):
        sweep(counted_point, grid({"calls": str(calls)}, x=[1, 2]), cache_dir=tmp_path / "file" / "cache",
              scheduler="serial")
    assert list(calls.iterdir()) == []


def test_sweep_reads_a_read_only_cache_dir_holding_every_point_and_refuses_one_missing_a_point(tmp_path, monkeypatch):
    # a shared, read-only cache serves its points; a point it lacks could not be written: refused before running.
    # The folder is made unwritable for sweep's check (os.access), which a chmod is not for root.
    import os

    from shallow import sweep as sweep_module
    calls = tmp_path / "calls"
    calls.mkdir()
    cache = tmp_path / "cache"
    first = sweep(counted_point, grid({"calls": str(calls)}, x=[1, 2]), cache_dir=cache, scheduler="serial")
    ran = len(list(calls.iterdir()))
    real = os.access
    monkeypatch.setattr(sweep_module.os, "access",
                        lambda path, mode: False if Path(path) == cache and mode == os.W_OK else real(path, mode))
    again = sweep(counted_point, grid({"calls": str(calls)}, x=[1, 2]), cache_dir=cache, scheduler="serial")
    assert len(list(calls.iterdir())) == ran and again.cached == [True, True]
    assert [r["value"] for r in again.results] == [r["value"] for r in first.results] == [2.0, 4.0]
    with pytest.raises(ValueError, match="is not writable, and some points have no cache file"):
        sweep(counted_point, grid({"calls": str(calls)}, x=[1, 3]), cache_dir=cache, scheduler="serial")
    assert len(list(calls.iterdir())) == ran


def test_sweep_refuses_an_executor_without_submit():
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        sweep(counted_point, grid(x=[1]), executor="tcp://localhost:8786")


def test_grid_refuses_a_dataclass_type_as_base():
    # the class instead of an instance used to fail inside dataclasses.replace
    with pytest.raises(TypeError, match="base must be a dict or a dataclass instance, got type"):
        grid(OnePoint, x=[1])


def test_sweep_result_stack_refuses_ragged_or_missing_entries():
    out = sweep(ragged_point, grid(x=[1, 2]), scheduler="serial")
    with pytest.raises(ValueError, match=r"entry 'v' has different shapes across the points, \[\(1,\), \(2,\)\]"):
        out.stack("v")
    with pytest.raises(KeyError, match="have no entry 'w'"):
        out.stack("w")

TOY = '''
"""Toy grid study: f(x) = x^2 on a grid, through study.run_grid."""
import dataclasses
import numpy as np
from shallow import study
from shallow.sweep import grid

@dataclasses.dataclass(frozen=True)
class Config:
    xs: tuple = (1.0, 2.0, 3.0)
    seed: int = 0
    device: str = "cpu"

QUICK = {"xs": (1.0, 2.0)}

def square(point):
    return {"y": point["x"] ** 2, "pid": __import__("os").getpid()}

def compute(cfg):
    results = study.run_grid(square, grid(x=list(cfg.xs)))
    return {"y": np.array([r["y"] for r in results]), "pids": np.array([r["pid"] for r in results])}

def plot(result, cfg):
    fig, axes = study.new_figure()
    axes[0, 0].plot(result["y"])
    return fig
'''


@pytest.fixture
def toy_study(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "toygrid.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setenv("SHALLOW_STUDIES", str(folder))
    monkeypatch.delitem(sys.modules, "shallow_studies.toygrid", raising=False)
    return cli.load_study("toygrid")


def test_study_grid_runs_through_sweep_with_workers_and_point_cache(toy_study, tmp_path):
    """--workers/--scheduler reach the grid; points are cached under results/points/NAME; the result
    hash ignores them; a study loaded from its file (module shallow_studies.NAME) works in workers."""
    out = tmp_path / "out"
    assert study.main(toy_study, ["--quick", "--out", str(out), "--workers", "2"]) == 0
    result = study.load_npz(next((out / "results").glob("toygrid-*.npz")))
    np.testing.assert_array_equal(result["y"], [1.0, 4.0])
    assert os.getpid() not in result["pids"]  # computed by worker processes
    assert len(list((out / "results" / "points" / "toygrid").glob("*.npz"))) == 2
    cfg = study.quick_config(toy_study)
    again = study.run(toy_study, cfg, out=out, figure=False, force=True, scheduler="serial")
    np.testing.assert_array_equal(again["y"], [1.0, 4.0])
    assert set(again["pids"]) == {os.getpid()}  # --force recomputed the points, here in this process
    assert len(list((out / "results").glob("toygrid-*.npz"))) == 1  # same result hash whatever the scheduler
    with pytest.raises(ValueError, match="scheduler must be one of"):
        study.run(toy_study, cfg, out=out, figure=False, scheduler="nowhere")
    with pytest.raises(SystemExit):
        study.build_parser(toy_study).parse_args(["--workers", "two"])
    # outside a run, run_grid computes without a cache
    assert [r["y"] for r in study.run_grid(toy_study.square, grid(x=[3.0]), scheduler="serial")] == [9.0]


def test_sidecar_of_a_run_drawn_from_cached_points_says_how_long_the_points_took(toy_study, tmp_path):
    # A figure redrawn from cached grid points has a wall time of a second, whatever the points cost:
    # the sidecar also gives the points, those from the cache and the seconds they took to compute.
    out = tmp_path / "out"
    assert study.main(toy_study, ["--quick", "--out", str(out), "--workers", "1"]) == 0
    first = json.loads((out / "figures" / "toygrid_quick.json").read_text())["grid_points"]
    next((out / "results").glob("toygrid-*.npz")).unlink()  # the result goes, its points stay
    assert study.main(toy_study, ["--quick", "--out", str(out), "--workers", "1"]) == 0
    again = json.loads((out / "figures" / "toygrid_quick.json").read_text())["grid_points"]
    assert (first["points"], first["from_cache"]) == (2, 0) and first["compute_time_s"] > 0
    assert again == {"points": 2, "from_cache": 2, "compute_time_s": first["compute_time_s"]}


def test_editing_a_study_recomputes_its_cached_grid_points(toy_study, tmp_path):
    """The result's hash holds the study's text, and so do its points' keys: an edited point function
    used to miss the result cache but load every point computed by the previous version."""
    out = tmp_path / "out"
    cfg = study.quick_config(toy_study)
    np.testing.assert_array_equal(study.run(toy_study, cfg, out=out, figure=False, scheduler="serial")["y"], [1, 4])
    script = Path(toy_study.__file__)
    script.write_text(script.read_text().replace('point["x"] ** 2', 'point["x"] ** 3'))
    del sys.modules["shallow_studies.toygrid"]
    edited = cli.load_study("toygrid")
    np.testing.assert_array_equal(study.run(edited, cfg, out=out, figure=False, scheduler="serial")["y"], [1, 8])
    assert len(list((out / "results" / "points" / "toygrid").glob("*.npz"))) == 4


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed", reason="dask.distributed (the 'dask' extra) is not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster


def test_dask_local_cluster_gives_the_same_numbers_as_local_processes(dask_cluster, tmp_path):
    from distributed import Client

    points = grid({"alpha": 1.0}, m=[20, 40], seed=[0, 1])
    local = sweep(flow_point, points, workers=2)
    remote = sweep(flow_point, points, scheduler=dask_cluster.scheduler_address, cache_dir=tmp_path / "cache")
    with Client(dask_cluster) as client:
        again = sweep(flow_point, points, executor=client, force=True)
    for a, b, c in zip(local, remote, again):
        assert a["risk"] == b["risk"] == c["risk"] and a["label"] == b["label"]
        np.testing.assert_array_equal(a["a"], b["a"])
        np.testing.assert_array_equal(a["a"], c["a"])
    # the cache written from dask results is the same cache: a local rerun loads it
    assert sweep(flow_point, points, cache_dir=tmp_path / "cache", scheduler="serial").cached == [True] * 4


def test_dask_scheduler_without_dask_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"needs dask.distributed: pip install 'shallow\[dask\]'"):
        sweep(counted_point, grid(x=[1]), scheduler="tcp://127.0.0.1:8786")


def test_sweep_result_helpers(counted):
    points, _ = counted([1, 2])
    out = sweep(counted_point, points, scheduler="serial")
    np.testing.assert_array_equal(out.stack("vector"), [[0, 1, 2], [0, 2, 4]])
    assert len(out) == 2 and out.raise_for_failures() is out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # any concurrent.futures Executor
        assert [r["value"] for r in sweep(counted_point, points, executor=pool)] == [2.0, 4.0]
    assert json.loads(json.dumps(out.wall_times)) == out.wall_times


def test_functions_defined_inside_another_need_a_key_to_be_cached(counted, tmp_path):
    """make(2.0) and make(3.0) return closures of one name: the default key (module and name) would let
    the second sweep load the first one's results (it returned 2.0 for 3.0 x 1.0)."""
    def make(factor):
        def point(config):
            return {"value": factor * config["x"]}
        return point

    points, _ = counted([1])
    cache = tmp_path / "cache"
    with pytest.raises(TypeError, match=r"defined inside another function.*give key="):
        sweep(make(2.0), points, cache_dir=cache, scheduler="serial")
    assert sweep(make(2.0), points, cache_dir=cache, scheduler="serial", key="times 2")[0]["value"] == 2.0
    assert sweep(make(3.0), points, cache_dir=cache, scheduler="serial", key="times 3")[0]["value"] == 3.0
    assert sweep(make(3.0), points, scheduler="serial")[0]["value"] == 3.0  # uncached: no key needed


def sleeping_point(config):
    import time

    time.sleep(config["s"])
    return {"s": config["s"]}


def test_wall_times_are_each_points_run_time_and_cached_points_keep_theirs(tmp_path):
    # a point that sleeps s seconds takes at least s, and no point takes longer than the whole sweep;
    # loaded from the cache, a point reports the time it took when it was computed
    import time

    points = [{"s": 0.02}, {"s": 0.06}]
    start = time.perf_counter()
    first = sweep(sleeping_point, points, cache_dir=tmp_path, scheduler="serial")
    elapsed = time.perf_counter() - start
    assert first.cached == [False, False]
    assert all(p["s"] <= t <= elapsed for p, t in zip(points, first.wall_times))
    again = sweep(sleeping_point, points, cache_dir=tmp_path, scheduler="serial")
    assert again.cached == [True, True] and again.wall_times == first.wall_times


@pytest.mark.parametrize("name", ["force", "progress"])
def test_sweep_rejects_force_or_progress_that_is_not_a_bool(name):
    # force="no" was true: every cached point was recomputed
    with pytest.raises(ValueError, match=f"{name} must be True or False, got 'no'"):
        sweep(flow_point, grid(n=[1]), scheduler="serial", **{name: "no"})


def test_a_function_of_a_session_without_a_script_file_is_refused_for_worker_processes(tmp_path):
    # under python -c (or a notebook) every point failed with BrokenProcessPool, the cause only on the workers'
    # stderr; serially it runs
    # (python - < script.py too, whose __main__.__file__ is "<stdin>"); forked workers inherit it, and a sweep whose
    # points are all cached starts none
    script = textwrap.dedent(f"""
        from shallow.sweep import sweep, grid
        def g(config):
            return {{"v": config["x"]}}
        try:
            sweep(g, grid(x=[1, 2]), workers=2)
        except TypeError as err:
            print("REFUSED:", err)
        cache = {str(tmp_path / "cache")!r}
        print("SERIAL:", [r["v"] for r in sweep(g, grid(x=[1, 2]), scheduler="serial", cache_dir=cache)])
        print("CACHED:", sweep(g, grid(x=[1, 2]), workers=2, cache_dir=cache).cached)
        print("FORK:", [r["v"] for r in sweep(g, grid(x=[3, 4]), workers=2, start_method="fork")])
    """)
    for how in ("-c", "stdin"):
        args, given = ([sys.executable, "-c", script], None) if how == "-c" else ([sys.executable, "-"], script)
        proc = subprocess.run(args, input=given, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert "REFUSED: fn (g) is defined in a session without a script file" in proc.stdout, proc.stderr
        assert "SERIAL: [1, 2]" in proc.stdout and "CACHED: [True, True]" in proc.stdout
        assert "FORK: [3, 4]" in proc.stdout, proc.stderr
        shutil.rmtree(tmp_path / "cache")


def test_the_key_of_a_function_without_source_is_the_same_in_every_process(tmp_path):
    # python -c: no source file, so the key digests the code; a nested code object's repr holds its address and a
    # frozenset's order follows the per-process string hash, so both are written out: two processes agree
    script = textwrap.dedent("""
        from shallow.sweep import _source_digest_of
        def g(config, scale=2, *, shift=0.5):
            inner = [v for v in config.values()]
            return {"v": float(config["x"] in {"a", "b", "c", "d"}), "n": len(inner)}
        def h(config, scale=3, *, shift=0.5):  # g with another default: another key
            inner = [v for v in config.values()]
            return {"v": float(config["x"] in {"a", "b", "c", "d"}), "n": len(inner)}
        print("DIGEST", _source_digest_of(g), _source_digest_of(h) != _source_digest_of(g))
    """)
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
        digests.add(proc.stdout.strip())
    assert len(digests) == 1 and next(iter(digests)).startswith("DIGEST ") and digests.pop().endswith("True")


# A script whose sweep the tests below interrupt or kill. Points x < 2 finish at once; the others leave their
# worker's pid in the folder and sleep for a minute: only a stopped worker ends sooner. With a file "slow-start"
# in the folder, each worker, loading the script (as __mp_main__, before the pool's initializer), leaves its pid
# and sleeps for a minute too: a Ctrl-C then reaches workers still starting, however long the test takes to send
# it (with 2 s, a test process descheduled that long on a loaded machine found the workers started and points
# 0 and 1 cached), and only a stopped worker ends sooner.
SLEEPY_SCRIPT = '''
import os, sys, time
from pathlib import Path
from shallow.sweep import grid, sweep

folder = Path(sys.argv[1])
method = sys.argv[2] if len(sys.argv) > 2 else "spawn"

def sleepy_point(config):
    if config["x"] >= 2:
        (folder / f"running-{os.getpid()}").touch()
        time.sleep(60)
    return {"value": config["x"]}

if __name__ == "__mp_main__" and (folder / "slow-start").exists():
    (folder / f"starting-{os.getpid()}").touch()
    time.sleep(60)

if __name__ == "__main__":
    try:
        sweep(sleepy_point, grid(x=range(6)), cache_dir=folder / "cache", workers=2, key="sleepy", start_method=method)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
'''

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc: Linux")


@pytest.fixture
def sleepy_sweep(tmp_path):
    """Start SLEEPY_SCRIPT's sweep in a new process group (a terminal's Ctrl-C signals the whole group), its
    output in files (left-over workers would hold pipes open); what is left of the group is killed at the end."""
    started = []

    def start(method="spawn"):
        (tmp_path / "sleepy.py").write_text(SLEEPY_SCRIPT)
        with open(tmp_path / "stderr.txt", "w") as err:
            proc = subprocess.Popen([sys.executable, str(tmp_path / "sleepy.py"), str(tmp_path), method], cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def pids_of(folder, stage, count, proc, timeout=60.0):
    """The pids the workers left as ``stage-PID`` files, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while len(files := list(folder.glob(f"{stage}-*"))) < count:
        assert proc.poll() is None and time.monotonic() < deadline, (folder / "stderr.txt").read_text()
        time.sleep(0.05)
    return [int(f.name.split("-")[1]) for f in files]


def alive(pid):
    """Whether the process pid runs (a zombie, ended but not reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(pid):
    """The pids of the processes whose parent is pid."""
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):  # ended meanwhile
            if f"\nPPid:\t{pid}\n" in status.read_text():
                children.append(int(status.parent.name))
    return children


def all_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@linux_only
@pytest.mark.parametrize("stage", ["starting", "running"])
def test_ctrl_c_stops_a_parallel_sweep_with_one_message_and_no_traceback_from_any_process(sleepy_sweep, tmp_path,
                                                                                            stage):
    # the workers printed a KeyboardInterrupt traceback each, and the pool's thread, with workers still starting,
    # InvalidStateError: CANCELLED; the parent owns Ctrl-C now, and stops its workers
    if stage == "starting":
        (tmp_path / "slow-start").touch()
    proc = sleepy_sweep()
    workers = pids_of(tmp_path, stage, 2, proc)
    if stage == "running":
        deadline = time.monotonic() + 60.0  # a broken sweep fails the test instead of hanging it
        while len(list((tmp_path / "cache").glob("*.npz"))) < 2:  # points 0 and 1 written
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130  # well before the points' minute of sleep
    stderr = (tmp_path / "stderr.txt").read_text()
    assert stderr == "interrupted\n", stderr
    assert all_gone(workers, timeout=5.0)
    out = sweep(sleepy_point_serial, grid(x=range(2)), cache_dir=tmp_path / "cache", key="sleepy",
                scheduler="serial")
    assert out.cached == [stage == "running"] * 2  # the points that had finished were kept


def sleepy_point_serial(config):
    """SLEEPY_SCRIPT's points x < 2 (what a resumed sweep would compute for them)."""
    return {"value": config["x"]}


@linux_only
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_exit_soon_after_their_parent_is_killed(sleepy_sweep, tmp_path, method):
    # after a kill -9 of the process running the sweep, its workers and the resource tracker waited for work forever;
    # a fork server's workers (children of the fork server, which outlived the parent) too, until they watched
    # multiprocessing's sentinel of the process that created them instead of getppid()
    proc = sleepy_sweep(method)
    workers = pids_of(tmp_path, "running", 2, proc)
    children = children_of(proc.pid)  # the resource tracker; the workers too, or the fork server
    assert method == "forkserver" or set(workers) < set(children)
    proc.kill()
    proc.wait()
    assert all_gone(set(children) | set(workers), timeout=10.0)


def test_point_keys_tell_arrays_of_equal_bytes_but_another_dtype_or_shape_apart():
    # zeros of int64 and of float64 have the same bytes: only the dtype (and the shape) tell them apart
    assert point_key({"w": np.zeros(3)}) != point_key({"w": np.zeros(3, dtype=np.int64)})
    assert point_key({"w": np.zeros((2, 3))}) != point_key({"w": np.zeros((3, 2))})


def test_a_cache_file_holding_another_config_is_recomputed_not_served(counted, tmp_path):
    # KEY.npz stores its config: a file under another point's name (a copy, a hash collision) is not its result
    points, folder = counted([1, 2])
    cache = tmp_path / "cache"
    first = sweep(counted_point, points, cache_dir=cache, scheduler="serial")
    (cache / f"{first.keys[0]}.npz").replace(cache / f"{first.keys[1]}.npz")
    again = sweep(counted_point, points, cache_dir=cache, scheduler="serial")
    assert [r["value"] for r in again] == [2.0, 4.0] and again.cached == [False, False]
    assert calls(folder) == [1, 1, 2, 2]


def test_an_unreadable_cache_file_is_recomputed_with_a_warning_and_rewritten(counted, tmp_path):
    points, folder = counted([1])
    cache = tmp_path / "cache"
    (key,) = sweep(counted_point, points, cache_dir=cache, scheduler="serial").keys
    (cache / f"{key}.npz").write_bytes(b"not an npz archive")  # written by something else than sweep
    with pytest.warns(RuntimeWarning, match="unreadable sweep cache file"):
        again = sweep(counted_point, points, cache_dir=cache, scheduler="serial")
    assert again[0]["value"] == 2.0 and again.cached == [False]
    assert sweep(counted_point, points, cache_dir=cache, scheduler="serial").cached == [True]
    assert calls(folder) == [1, 1]


def test_a_duplicated_point_loaded_from_the_cache_fills_each_of_its_positions(counted, tmp_path):
    points, folder = counted([1, 2, 1])
    sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial")
    again = sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial")
    assert [r["value"] for r in again] == [2.0, 4.0, 2.0] and again.cached == [True] * 3
    assert again.wall_times[0] == again.wall_times[2] > 0
    assert calls(folder) == [1, 2]


def test_the_progress_bar_counts_cached_points_as_done_from_the_start(counted, tmp_path, capsys):
    points, _ = counted([1, 2])
    sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial")
    capsys.readouterr()
    sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial", progress=True)
    bar = capsys.readouterr().err
    assert "2/2" in bar and "0/2" not in bar


def test_thread_variables_of_the_workers_are_restored_in_the_parent(counted, monkeypatch):
    # set while the workers are spawned (they inherit them), then removed: the parent's own BLAS keeps its threads
    from shallow.sweep import THREAD_VARIABLES

    for var in THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    points, _ = counted([1])
    assert sweep(counted_point, points, workers=1)[0]["threads"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert [var for var in THREAD_VARIABLES if var in os.environ] == ["OMP_NUM_THREADS"]


def test_run_grid_after_a_run_computes_without_a_cache_again(toy_study, tmp_path):
    # the run's cache folder and --force hold only while its compute runs, also after it returned
    out = tmp_path / "out"
    study.run(toy_study, study.quick_config(toy_study), out=out, figure=False, scheduler="serial", force=True)
    points = out / "results" / "points" / "toygrid"
    before = sorted(points.iterdir())
    assert [r["y"] for r in study.run_grid(toy_study.square, grid(x=[5.0]), scheduler="serial")] == [25.0]
    assert sorted(points.iterdir()) == before


def test_a_new_package_version_recomputes_the_cached_points(counted, tmp_path, monkeypatch):
    from shallow import sweep as sweep_module

    points, folder = counted([1])
    assert sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial").cached == [False]
    monkeypatch.setattr(sweep_module, "__version__", sweep_module.__version__ + "+other")
    assert sweep(counted_point, points, cache_dir=tmp_path / "cache", scheduler="serial").cached == [False]
    assert calls(folder) == [1, 1]


def test_a_point_whose_result_cannot_be_written_fails_alone(counted, tmp_path):
    # disk full, or a folder in the way of KEY.npz: that point fails naming the file, the others finish and are cached
    points, folder = counted([1, 2])
    cache = tmp_path / "cache"
    (cache / f"{point_key(points[0], 'demo')}.npz").mkdir(parents=True)
    out = sweep(counted_point, points, cache_dir=cache, key="demo", scheduler="serial", force=True, errors="collect")
    (failure,) = out.failures
    assert failure.index == 0 and "could not write" in failure.error and out[1]["value"] == 4.0
    assert sweep(counted_point, points[1:], cache_dir=cache, key="demo", scheduler="serial").cached == [True]


def reserved_point(config):
    return {"value": 1.0, "_wall_time": 5.0}


def test_a_result_key_reserved_by_the_cache_is_a_failure_of_its_point(tmp_path):
    # a result's own _wall_time (or _config) would be overwritten by the cache's: a computed and a loaded result
    # would differ
    out = sweep(reserved_point, grid(x=[1]), cache_dir=tmp_path / "cache", scheduler="serial", errors="collect")
    (failure,) = out.failures
    assert failure.error == ("ValueError: result key '_wall_time' is reserved by the sweep cache "
                             "(_config, _wall_time)")
    assert list((tmp_path / "cache").glob("*.npz")) == []


def test_point_keys_of_non_finite_floats_are_stable_and_distinct():
    # JSON has no nan or inf: a config holding one (a sentinel, an unbounded range) still has a key
    keys = [point_key({"x": value}) for value in (float("nan"), float("inf"), -float("inf"), 0.0)]
    assert len(set(keys)) == 4 and point_key({"x": float("nan")}) == keys[0]
