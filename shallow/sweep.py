r"""Grids of runs on a ``concurrent.futures`` Executor, each point cached on disk by a hash of its config.

A *sweep* evaluates a function ``fn(config) -> dict`` at every point of a grid of configurations:

* on a local process pool by default (``workers`` processes, BLAS limited to ``threads_per_worker``
  threads in each so that they do not oversubscribe the cores), in this process
  (``scheduler="serial"``), on any ``concurrent.futures.Executor`` given as ``executor``, or on a
  ``dask.distributed`` cluster (``scheduler="tcp://host:8786"``, or a ``Client`` as ``executor``;
  the ``dask`` extra, imported only then);
* with each point's result written to ``cache_dir/KEY.npz`` as soon as it arrives, KEY a hash of
  the point's config, of the function's name and source text (or of ``key`` when given) and of the
  package version. The file is
  written to a temporary name in the same folder, flushed to disk, then renamed over KEY.npz
  (atomic on POSIX): an interrupted sweep (Ctrl-C, a killed job, a crash mid-write) leaves complete
  files or none, never a half-written one, and a rerun loads every finished point and computes
  only the others;
* with a tqdm bar of points done (cached points count as done from the start);
* with a failing point reported with its config, its error and the worker's traceback, while
  every other point still runs and is cached (:class:`SweepError` at the end, or
  ``errors="collect"``).

Results are dicts of numbers, strings and numeric arrays (as a study's ``compute`` returns); they
come back the same whether computed or loaded: 0-d values as Python scalars, others as numpy arrays.
Configs are dicts (or dataclasses) of numbers, strings, None, lists, tuples, dicts and numpy arrays;
the hash is that of their canonical JSON (sorted keys, floats by their exact repr), so the same
config always finds its file, whichever process or machine computed it. Results are written by the
process that called :func:`sweep` (the workers only compute), so a dask cluster needs no shared disk.

Examples
--------
>>> from shallow.sweep import grid, sweep
>>> points = grid(n=[1, 2], scale=[0.5, 2.0])
>>> points[1]
{'n': 1, 'scale': 2.0}
>>> out = sweep(_example_point, points, scheduler="serial")
>>> [r["value"] for r in out.results]
[0.5, 2.0, 1.0, 4.0]
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import hashlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import json
import math
import multiprocessing
import numbers
import os
import re
import signal
import sys
import threading
import time
import traceback
import types
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import __version__
from ._validation import check_bool, check_integer

__all__ = [
    "sweep",
    "grid",
    "point_key",
    "SweepResult",
    "PointFailure",
    "SweepError",
    "SCHEDULERS",
    "THREAD_VARIABLES",
]

SCHEDULERS = ("processes", "serial")
"""Schedulers by name: a local process pool (the default) or this process, one point after another.
Any other scheduler is the address of a dask.distributed scheduler (``tcp://host:8786``, ``host:8786``)."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
"""Environment variables that fix the thread count of the BLAS and OpenMP libraries in local workers."""

_RESERVED = ("_config", "_wall_time")  # stored in each cache file beside the result
_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://\S+|[\w.\-]+:\d+)$", re.IGNORECASE)
_ERRORS = ("raise", "collect")


# ----------------------------------------------------------------------------- grids and keys

def grid(base=None, /, **axes) -> list:
    """The Cartesian product of the axes, as a list of configs (the last axis varies fastest).

    Parameters
    ----------
    base : dict or dataclass instance, optional
        Fixed fields of every point; a dataclass gives dataclasses (``dataclasses.replace``), a dict
        or None gives dicts.
    **axes : sequences
        One sequence of values per varying field.

    Returns
    -------
    list
        ``len = prod(len(values))`` points (empty when an axis is empty; one point without axes).

    Examples
    --------
    >>> grid({"d": 3}, m=[10, 100], seed=[0, 1])      # doctest: +NORMALIZE_WHITESPACE
    [{'d': 3, 'm': 10, 'seed': 0}, {'d': 3, 'm': 10, 'seed': 1},
     {'d': 3, 'm': 100, 'seed': 0}, {'d': 3, 'm': 100, 'seed': 1}]
    """
    names, values = [], []
    for name, seq in axes.items():
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
            raise TypeError(f"axis {name!r} must be a sequence of values, got {seq!r}")
        names.append(name)
        values.append(list(seq))
    if base is not None and not (isinstance(base, Mapping) or
                                 (dataclasses.is_dataclass(base) and not isinstance(base, type))):
        raise TypeError(f"base must be a dict or a dataclass instance, got {type(base).__name__}")
    points = []
    for combo in itertools.product(*values):
        fields = dict(zip(names, combo))
        if base is not None and dataclasses.is_dataclass(base):
            points.append(dataclasses.replace(base, **fields))
        else:
            points.append({**(base or {}), **fields})
    return points


def _canonical(obj, where):
    """A JSON-able form of a config value that two equal configs share (and two different ones do not)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _canonical(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} that is not a string: config keys must be strings")
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{where} is an array of Python objects, which has no stable hash")
        return _array_digest(obj)
    raise TypeError(f"{where} is a {type(obj).__name__}, which has no stable hash: configs hold numbers, "
                    "strings, None, lists, tuples, dicts, dataclasses and numpy arrays")


def _array_digest(arr) -> dict:
    """A numeric array's JSON form for a key: its dtype, shape and the SHA-256 of its C-ordered bytes."""
    data = np.ascontiguousarray(arr)
    return {"__ndarray__": data.dtype.str, "shape": list(data.shape),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest()}


def _config_json(config, where="config") -> str:
    return json.dumps(_canonical(config, where), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _key(namespace: str, config_json: str) -> str:
    payload = json.dumps({"namespace": namespace, "config": config_json, "version": __version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def point_key(config, key: str = "") -> str:
    """The cache key of a config: a hash of its canonical JSON, of ``key`` and of the package version.

    Parameters
    ----------
    config : dict or dataclass
    key : str
        The namespace (:func:`sweep` uses the point function's module and name unless told otherwise).

    Returns
    -------
    str
        24 hexadecimal digits; the cache file is ``KEY.npz``.

    Examples
    --------
    >>> point_key({"m": 10, "alpha": 0.5}) == point_key({"alpha": 0.5, "m": 10})    # key order is irrelevant
    True
    >>> point_key({"m": 10}) == point_key({"m": 10.0})                              # but types are not
    False
    >>> point_key({"t": (1, 2)}) == point_key({"t": [1, 2]})                        # tuples hash as lists
    True
    """
    return _key(str(key), _config_json(config))


def _default_namespace(fn) -> str:
    """``MODULE.QUALNAME`` with MODULE the stem of the function's file (the same for a study script run
    as ``__main__`` and loaded by the ``shallow`` command), else the module's name; a
    ``functools.partial`` adds its arguments. Callables whose identity is not their name (lambdas,
    functions defined inside another, which capture values, callable objects) have no default: they
    need an explicit ``key``."""
    if isinstance(fn, functools.partial):
        try:
            bound = _config_json({"args": list(fn.args), "keywords": dict(fn.keywords)}, "fn's bound arguments")
        except TypeError as err:
            raise TypeError(f"{err}; give the sweep a key= naming its cache") from None
        return f"{_default_namespace(fn.func)}{bound}"
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str) or "<lambda>" in qualname or not isinstance(fn, types.FunctionType):
        raise TypeError(f"fn ({fn!r}) is not a named function: give key= to name its cache (the default key is "
                        "the function's module and name)")
    if "<locals>" in qualname:  # a closure: make(2.0) and make(3.0) return functions of one name
        raise TypeError(f"fn ({qualname}) is defined inside another function, so its name does not say what it "
                        "computes (the values it captured are not in the key): give key= to name its cache")
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    file = getattr(module, "__file__", None)
    stem = Path(file).stem if file else (getattr(fn, "__module__", None) or "")
    return f"{stem}.{qualname}"


def _code_text(code) -> str:
    """A code object as text that is the same in every process: its bytecode and names, and its constants,
    nested code objects by this same text (their repr holds a memory address) and frozensets sorted (their
    order follows the string hash, salted per process)."""
    def const(c):
        if isinstance(c, types.CodeType):
            return _code_text(c)
        if isinstance(c, frozenset):
            return repr(sorted(map(repr, c)))
        return repr(c)

    return "|".join([code.co_code.hex(), repr(code.co_names), *map(const, code.co_consts)])


def _under_partials(fn):
    """The function that ``fn`` calls in the end: itself, or the one under its ``functools.partial`` layers."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _source_digest_of(fn) -> str:
    """12 hexadecimal digits of the source text of ``fn`` (of the function under partials), or of its
    code (:func:`_code_text`) where no source file holds it (``python -c``, a notebook)."""
    fn = _under_partials(fn)
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):  # the code, and the defaults that the source text would have shown
        kwdefaults = sorted((fn.__kwdefaults__ or {}).items())
        text = f"{_code_text(fn.__code__)}|{fn.__defaults__!r}|{kwdefaults!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- results

@dataclasses.dataclass
class PointFailure:
    """A point whose function raised (or whose worker died, or whose result could not be stored).

    Attributes
    ----------
    index : int
        Position in the grid.
    config : the point's config
    key : str
        Its cache key.
    error : str
        ``"ExceptionType: message"``.
    traceback : str
        The traceback, as formatted in the worker.
    """

    index: int
    config: object
    key: str
    error: str
    traceback: str

    def __str__(self) -> str:
        return f"point {self.index} {self.config!r}: {self.error}"


@dataclasses.dataclass
class SweepResult:
    """The outcome of a sweep, in the order of the grid.

    Attributes
    ----------
    points : list
        The configs.
    results : list of dict or None
        Each point's result (None where it failed).
    failures : list of PointFailure
    keys : list of str
        Cache keys.
    cached : list of bool
        Whether each result was loaded from the cache rather than computed.
    wall_times : list of float
        Seconds each point took to compute (when it was computed, also for cached points).
    """

    points: list
    results: list
    failures: list
    keys: list
    cached: list
    wall_times: list

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, index):
        return self.results[index]

    @property
    def ok(self) -> bool:
        """True when every point succeeded."""
        return not self.failures

    def raise_for_failures(self) -> SweepResult:
        """Raise :class:`SweepError` if some point failed; else return self."""
        if self.failures:
            raise SweepError(self)
        return self

    def stack(self, name: str) -> np.ndarray:
        """``np.stack`` of one entry of every result: shape (points, *entry_shape)."""
        self.raise_for_failures()
        missing = [i for i, r in enumerate(self.results) if name not in r]
        if missing:
            raise KeyError(f"the results of points {missing[:10]} have no entry {name!r}")
        entries = [np.asarray(r[name]) for r in self.results]
        shapes = sorted({e.shape for e in entries})
        if len(shapes) > 1:
            raise ValueError(f"entry {name!r} has different shapes across the points, {shapes[:5]}: "
                             "np.stack needs one shape")
        return np.stack(entries)


class SweepError(RuntimeError):
    """Some points of a sweep failed; the others finished (and are cached).

    Parameters
    ----------
    result : SweepResult
        A result with at least one failure; the message lists the first 10 failures and the
        traceback of the first.

    Attributes
    ----------
    result : SweepResult
    failures : list of PointFailure
    """

    def __init__(self, result: SweepResult):
        self.result = result
        self.failures = list(result.failures)
        total, bad = len(result.results), len(self.failures)
        lines = [f"{bad} of {total} sweep points failed; the other {total - bad} finished:"]
        lines += [f"  {failure}" for failure in self.failures[:10]]
        if bad > 10:
            lines.append(f"  ... and {bad - 10} more (SweepError.failures lists them all, with tracebacks)")
        lines.append(f"traceback of point {self.failures[0].index}:\n{self.failures[0].traceback.rstrip()}")
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------- the cache

def _storable(name, value):
    arr = np.asarray(value)
    if arr.dtype == object:
        raise TypeError(f"the point function returned {name!r} of type {type(value).__name__}: results hold "
                        "numbers, strings and numeric arrays")
    return arr


def _normalize_result(out) -> dict:
    """The result as load_npz would give it back: 0-d values as Python scalars, others as arrays."""
    if not isinstance(out, Mapping):
        raise TypeError(f"the point function must return a dict of numbers, strings and arrays, "
                        f"got {type(out).__name__}")
    result = {}
    for name, value in out.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"result keys must be non-empty strings, got {name!r}")
        if name in _RESERVED:
            raise ValueError(f"result key {name!r} is reserved by the sweep cache ({', '.join(_RESERVED)})")
        arr = _storable(name, value)
        result[name] = arr.item() if arr.ndim == 0 else arr
    return result


def _save_point(path: Path, result: dict, config_json: str, seconds: float) -> None:
    """Write the result to path atomically: a temporary file in the same folder, fsync, rename."""
    from .study import atomic_write

    arrays = {name: _storable(name, value) for name, value in result.items()}
    arrays["_config"] = np.asarray(config_json)
    arrays["_wall_time"] = np.asarray(float(seconds))

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def _load_point(path: Path, config_json: str):
    """(result, wall time) from a cache file, or None when it holds another config (a hash collision)."""
    from .study import load_npz

    data = load_npz(path)
    if data.pop("_config", None) != config_json:
        return None
    seconds = data.pop("_wall_time", math.nan)
    return data, float(seconds)


# ----------------------------------------------------------------------------- workers

def _run_point(fn, config):
    """Run one point in a worker: (True, result, None, seconds) or (False, error, traceback, seconds)."""
    start = time.perf_counter()
    try:
        result = _normalize_result(fn(config))
    except Exception as err:  # reported with the point's config; KeyboardInterrupt still stops the sweep
        return False, f"{type(err).__name__}: {err}", traceback.format_exc(), time.perf_counter() - start
    return True, result, None, time.perf_counter() - start


_THREAD_LIMITS = []  # threadpoolctl limiters kept alive in a worker


def _init_worker(threads):
    """Process-pool initializer: Ctrl-C left to the parent, an exit with it, BLAS/OpenMP limited to ``threads``.

    The parent owns Ctrl-C: a worker ignores SIGINT (the terminal sends it to the whole process group)
    and is stopped by the parent. The worker was spawned with SIGINT blocked (:func:`_sigint_blocked`),
    so that a Ctrl-C while it started waits, pending; setting SIG_IGN discards it, then it is unblocked.
    A thread watches the parent: a parent killed outright (SIGKILL, out of memory) shuts nothing down,
    and its workers would wait for work forever. It waits on multiprocessing's sentinel of the process
    that created the worker, under every start method (a fork server's worker has the fork server for
    its OS parent, and the fork server outlived a killed parent, so getppid() never changed).

    The environment variables act on libraries loaded afterwards (the usual case: the variables
    were also set when the worker was spawned); for a BLAS loaded already, threadpoolctl is used
    when it is installed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_with_parent, daemon=True, name="shallow-sweep-parent-watch").start()
    if threads is None:
        return
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional
            return
        _THREAD_LIMITS.append(threadpool_limits(limits=threads))


def _exit_with_parent():
    """End this worker at once when the process that created it is gone (its sentinel becomes ready)."""
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - not started by multiprocessing
        return
    wait([parent.sentinel])
    os._exit(1)


@contextlib.contextmanager
def _sigint_blocked():
    """Block SIGINT in this thread meanwhile: processes started meanwhile inherit the mask.

    A signal sent meanwhile stays pending and is delivered at the end (or to another thread), never lost.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)


@contextlib.contextmanager
def _thread_environment(threads):
    """Set the thread variables while worker processes are spawned (they inherit the environment)."""
    if threads is None:
        yield
        return
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    os.environ.update({var: str(threads) for var in THREAD_VARIABLES})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _file_reference(fn):
    """(module, file, qualname) when fn's module cannot be imported by name in a fresh interpreter.

    A study loaded from its file by the ``shallow`` command lives in a module ``shallow_studies.NAME``
    that no import finds: such functions travel to workers as their file and name instead.
    """
    modname = getattr(fn, "__module__", None)
    module = sys.modules.get(modname or "")
    if module is None or modname in ("__main__", "__mp_main__"):
        return None
    file = getattr(module, "__file__", None)
    if not file:
        return None
    top = modname.split(".")[0]
    if top in sys.builtin_module_names:
        return None
    try:
        if importlib.machinery.PathFinder.find_spec(top, sys.path) is not None:
            return None
    except (ImportError, ValueError):  # pragma: no cover - unusual sys.path entries
        pass
    return modname, file, fn.__qualname__


def load_module_from_file(modname, file):
    """Import the file ``file`` as the module ``modname`` (once; cached in sys.modules).

    Missing parents of a dotted name get package stubs whose path is the file's folder, so that
    objects the module defines pickle by reference (``modname.qualname``) into worker processes.
    """
    module = sys.modules.get(modname)
    if module is not None:
        return module
    parts = modname.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            stub = types.ModuleType(parent)
            stub.__path__ = [os.path.dirname(os.path.abspath(file))]
            sys.modules[parent] = stub
    spec = importlib.util.spec_from_file_location(modname, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _load_function(modname, file, qualname):
    """Import a function from its module's file (registering the module, and stubs for its parents)."""
    obj = load_module_from_file(modname, file)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return _PortableFunction(obj)


class _PortableFunction:
    """A point function that pickles by reference, or by its file for modules loaded from a path."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, config):
        return self.fn(config)

    def __reduce__(self):
        ref = _file_reference(self.fn)
        if ref is None:
            return _PortableFunction, (self.fn,)
        return _load_function, ref


def _is_dask(executor) -> bool:
    return type(executor).__module__.split(".")[0] == "distributed"


def _dask_ready(fn):
    """Let cloudpickle send fn's module by value when workers cannot import it by name."""
    ref = _file_reference(fn)
    if ref is not None:
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[ref[0]])


def _dask_client(address):
    try:
        from dask.distributed import Client
    except ImportError as err:
        raise ImportError(f"scheduler={address!r} is the address of a dask scheduler, which needs "
                          "dask.distributed: pip install 'shallow[dask]'") from err
    return Client(address)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _parse_scheduler(scheduler):
    """("processes" | "serial" | "dask", address)."""
    if scheduler is None or scheduler == "processes":
        return "processes", None
    if scheduler == "serial":
        return "serial", None
    if isinstance(scheduler, str) and _ADDRESS.match(scheduler.strip()):
        return "dask", scheduler.strip()
    raise ValueError(f"scheduler must be one of {SCHEDULERS} or the address of a dask scheduler "
                     f"(such as 'tcp://10.0.0.1:8786' or 'localhost:8786'), got {scheduler!r}")


# ----------------------------------------------------------------------------- the sweep

def sweep(fn, points, *, cache_dir=None, key: str | None = None, workers: int | None = None,
          scheduler: str | None = None, executor=None, force: bool = False, progress: bool | None = None,
          desc: str | None = None, errors: str = "raise", threads_per_worker: int | None = 1,
          start_method: str = "spawn") -> SweepResult:
    r"""Evaluate ``fn(config)`` at every point of a grid, in parallel, caching each result on disk.

    Parameters
    ----------
    fn : callable
        ``fn(config) -> dict`` of numbers, strings and numeric arrays. For worker processes it must be
        a module-level function of a file (it is pickled by reference; a script's functions are found
        by their file, so the script must call the sweep under ``if __name__ == "__main__":``, or
        each worker, loading the file, would start the sweep again).
    points : iterable of configs
        Dicts or dataclass instances (:func:`grid` builds products). Duplicates are computed once.
    cache_dir : path, optional
        Folder of the cache files ``KEY.npz``; None caches nothing.
    key : str, optional
        The namespace hashed with each config; default ``MODULE.QUALNAME`` of fn (MODULE its file's
        stem; a ``functools.partial`` adds its bound arguments). Required to cache a lambda, a
        function defined inside another (a closure) or a callable object, whose name does not say
        what it computes.
    workers : int, optional
        Local worker processes (default: the CPUs this process may use). Not with ``executor``;
        unused by the serial and dask schedulers (a dask cluster has its own workers).
    scheduler : str, optional
        ``"processes"`` (default), ``"serial"`` (in this process, one point after another), or a
        dask.distributed scheduler address (``"tcp://host:8786"``; needs the ``dask`` extra).
    executor : concurrent.futures.Executor or dask.distributed.Client, optional
        Run on this executor instead (left open afterwards).
    force : bool
        Recompute every point, overwriting its cache file.
    progress : bool, optional
        A tqdm bar of points done; default: only when stderr is a terminal.
    desc : str, optional
        The bar's label (default: the namespace).
    errors : {"raise", "collect"}
        When points fail: raise :class:`SweepError` once every other point has finished, or return
        them in ``SweepResult.failures``.
    threads_per_worker : int or None
        BLAS/OpenMP threads in each local worker process (None: leave the environment alone).
    start_method : {"spawn", "forkserver", "fork"}
        How local workers start; "spawn" gives each a clean interpreter with the thread limits.

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        For an empty grid, an unknown scheduler, bad workers/errors arguments, or a ``cache_dir``
        that cannot be created, or written when a point is not cached there (before any point runs).
    TypeError
        For a config that has no stable hash, or a function that cannot be sent to worker processes.
    SweepError
        With ``errors="raise"``, after the sweep, when some points failed.

    Notes
    -----
    Resuming: each result is written (atomically) as soon as it arrives, so after an interruption
    the points that had finished load from their files and only the others run. A point that
    raises is not cached: the next run retries it. The key includes the package version, as the
    studies' result cache does: a new version recomputes. Without ``key`` it includes the source
    text of ``fn`` too (of ``fn.func`` for a partial), so that an edited function recomputes; an
    edit of a function that ``fn`` calls does not change it: then pass ``force=True`` or a new
    ``key``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     first = sweep(_example_point, grid(n=[1, 2], scale=[3.0]), cache_dir=folder, scheduler="serial")
    ...     again = sweep(_example_point, grid(n=[1, 2], scale=[3.0]), cache_dir=folder, scheduler="serial")
    >>> again.cached, [r["value"] for r in again]
    ([True, True], [3.0, 6.0])
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (the function of one point), got {type(fn).__name__}")
    if isinstance(points, (str, bytes, Mapping)) or (dataclasses.is_dataclass(points) and not isinstance(points, type)) \
            or not hasattr(points, "__iter__"):
        raise TypeError(f"points must be a list (an iterable) of configs, got {type(points).__name__}; wrap a single "
                        "config in a list")
    points = list(points)
    if not points:
        raise ValueError("the grid is empty: no point to sweep (is one of the axes given to grid() empty?)")
    if errors not in _ERRORS:
        raise ValueError(f"errors must be one of {_ERRORS}, got {errors!r}")
    force = check_bool(force, "force")  # a string such as "no" would be true
    progress = None if progress is None else check_bool(progress, "progress")
    if executor is not None and (scheduler is not None or workers is not None):
        raise ValueError("give either executor, or scheduler and workers, not both")
    mode, address = ("executor", None) if executor is not None else _parse_scheduler(scheduler)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError("executor must be a concurrent.futures.Executor or a dask.distributed.Client (with a submit "
                        f"method), got {type(executor).__name__}")
    if workers is not None:
        workers = check_integer(workers, "workers", minimum=1)
    if threads_per_worker is not None:
        threads_per_worker = check_integer(threads_per_worker, "threads_per_worker", minimum=1)
    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start_method must be one of {multiprocessing.get_all_start_methods()}, got {start_method!r}")
    qualname = getattr(fn, "__qualname__", "")
    if mode == "processes" and ("<locals>" in qualname or "<lambda>" in qualname):
        raise TypeError(f"fn ({qualname}) must be a module-level function to run in worker processes: a lambda "
                        "or a function defined inside another cannot be pickled; use scheduler='serial'")
    if key is not None:
        namespace = str(key)
    elif cache_dir is not None:
        namespace = f"{_default_namespace(fn)}@{_source_digest_of(fn)}"  # an edited fn recomputes
    else:  # nothing is cached: the namespace only labels the progress bar
        try:
            namespace = _default_namespace(fn)
        except TypeError:
            namespace = getattr(fn, "__qualname__", type(fn).__name__)
    configs = [_config_json(p, f"point {i}") for i, p in enumerate(points)]
    keys = [_key(namespace, c) for c in configs]
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path (str or pathlib.Path), got {type(cache_dir).__name__}")
    cache = None if cache_dir is None else Path(cache_dir)
    if cache is not None:  # now, not after every point has been computed and then failed to be written
        if cache.exists() and not cache.is_dir():
            raise ValueError(f"cache_dir {str(cache)!r} is a file, not a folder for the cache files KEY.npz")
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cache_dir {str(cache)!r} cannot be created: {err.strerror or err}") from None
        if not os.access(cache, os.W_OK) and not all((cache / f"{k}.npz").exists() for k in keys):
            raise ValueError(f"cache_dir {str(cache)!r} is not writable, and some points have no cache file there")

    n = len(points)
    results, cached, wall = [None] * n, [False] * n, [math.nan] * n
    failures = []
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    todo = []
    for k, idx in groups.items():
        if cache is not None and not force:
            path = cache / f"{k}.npz"
            loaded = None
            try:
                loaded = _load_point(path, configs[idx[0]])
            except FileNotFoundError:
                pass
            except Exception as err:  # not written by sweep (writes are atomic): recompute and overwrite
                warnings.warn(f"unreadable sweep cache file {path} ({type(err).__name__}: {err}); recomputing it",
                              RuntimeWarning, stacklevel=2)
            if loaded is not None:
                for i in idx:
                    results[i], wall[i], cached[i] = loaded[0], loaded[1], True
                continue
        todo.append(k)

    from tqdm.auto import tqdm

    done = sum(len(groups[k]) for k in groups) - sum(len(groups[k]) for k in todo)
    bar = tqdm(total=n, initial=done, desc=desc or namespace, unit="point", dynamic_ncols=True,
               disable=None if progress is None else not progress)

    def handle(k, outcome):
        ok, value, tb, seconds = outcome
        if ok and cache is not None:
            path = cache / f"{k}.npz"
            try:
                _save_point(path, value, configs[groups[k][0]], seconds)
            except Exception as err:  # disk full, permissions: the point failed, the sweep goes on
                ok, value, tb = False, f"{type(err).__name__}: could not write {path}: {err}", traceback.format_exc()
        for i in groups[k]:
            if ok:
                results[i], wall[i] = value, seconds
            else:
                failures.append(PointFailure(i, points[i], k, value, tb or ""))
        bar.update(len(groups[k]))
        if failures:
            bar.set_postfix(failed=len(failures))

    if todo and mode == "processes" and start_method != "fork":
        _check_importable(fn, qualname)
    try:
        if todo and mode == "serial":
            for k in todo:
                handle(k, _run_point(fn, points[groups[k][0]]))
        elif todo:
            _run_parallel(fn, todo, groups, points, handle, mode, address, executor,
                          workers or _default_workers(), threads_per_worker, start_method)
    finally:
        bar.close()
    failures.sort(key=lambda failure: failure.index)
    result = SweepResult(points, results, failures, keys, cached, wall)
    if failures and errors == "raise":
        raise SweepError(result)
    return result


def _check_importable(fn, qualname):
    """Refuse a function of ``__main__`` without a script file (``python -c``, a notebook, ``python - < file``):
    spawned workers cannot import it, and every point failed with BrokenProcessPool, the cause only on the
    workers' stderr."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if getattr(_under_partials(fn), "__module__", None) == "__main__" and not (main_file and os.path.isfile(main_file)):
        raise TypeError(f"fn ({qualname}) is defined in a session without a script file (python -c, a notebook, "
                        "the interpreter, a piped script): spawned worker processes cannot import it; define it "
                        "in a module or script file, or use scheduler='serial' (or start_method='fork')")


def _run_parallel(fn, todo, groups, points, handle, mode, address, executor, workers, threads, start_method):
    """Submit every point still to do, and handle each outcome as it arrives."""
    owned = client = None
    if mode == "executor":
        if _is_dask(executor):
            _dask_ready(fn)
            if hasattr(executor, "get_executor"):  # a Client
                executor = executor.get_executor(pure=False)
        pool, task = executor, fn
    elif mode == "dask":
        _dask_ready(fn)
        client = _dask_client(address)
        pool, task = client.get_executor(pure=False), fn
    else:
        if start_method == "forkserver":  # started now, not with SIGINT blocked below: it outlives this sweep
            from multiprocessing import forkserver

            forkserver.ensure_running()
        owned = pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                              mp_context=multiprocessing.get_context(start_method),
                                              initializer=_init_worker, initargs=(threads,))
        task = _PortableFunction(fn)
    futures = {}
    try:
        # Workers are spawned during the submissions: they inherit the thread limits and the blocked
        # SIGINT set meanwhile.
        with _thread_environment(threads if owned is not None else None), \
                (_sigint_blocked() if owned is not None else contextlib.nullcontext()):
            for k in todo:
                futures[pool.submit(_run_point, task, points[groups[k][0]])] = k
        for future in cf.as_completed(futures):
            try:
                outcome = future.result()
            except (Exception, cf.CancelledError) as err:  # the worker died, or the task could not be sent
                outcome = (False, f"{type(err).__name__}: {err}",
                           "".join(traceback.format_exception(type(err), err, err.__traceback__)), math.nan)
            handle(futures[future], outcome)
    except BaseException:
        if owned is not None:
            _stop_pool(owned)
            owned = None
        else:
            for future in futures:
                future.cancel()
        raise
    finally:
        if owned is not None:
            owned.shutdown(wait=True)
        if client is not None:
            client.close()


def _stop_pool(pool):
    """Stop a process pool now (Ctrl-C, an error in this process): queued points cancelled, running ones
    terminated, their workers ending without a word (they ignore SIGINT; see :func:`_init_worker`).

    The pool's own thread cancels the queued futures: one cancelled here, still in its table, would
    meet the BrokenProcessPool of the terminated workers (InvalidStateError in that thread). The
    workers are the pool's private table, as ``terminate_workers`` of Python 3.14 reads it.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError):  # ended already, or closed
            process.terminate()


def _example_point(config):
    """The point function of this module's examples: value = n * scale."""
    return {"value": config["n"] * config["scale"]}
