"""What every study shares: command-line flags from its Config, cached results, figures with sidecars.

A study is a script in ``studies/`` that states one claim and draws one figure. It defines

* a module docstring: the claim, its reference, the runtime at default and with ``--quick``;
* ``Config``, a frozen dataclass whose defaults reproduce the paper's figure; every Config has the
  fields ``seed`` and ``device`` (``"cpu"`` or ``"gpu"``), none named like the common flags
  (:data:`RESERVED_FIELDS`), and each field with a bool, int, float, str or tuple default is a flag
  (:func:`build_parser`); ``__post_init__`` refuses bad values with a ValueError naming the field,
  and :func:`check_grid` and :func:`check_flow_time` check the usual ones;
* ``QUICK``, a dict of Config overrides for ``--quick`` (well under a minute on a CPU);
* ``compute(cfg) -> dict``: pure; values are numpy arrays, numbers or strings; every random draw
  from ``cfg.seed``; the scalars among them (numbers, bools, strings; keys not starting with ``_``)
  become the sidecar's ``summary``, so return the numbers behind the claim (a fitted slope) as floats;
  the study either computes on ``cfg.device`` or sets ``HOST_ONLY`` (below), never neither (a test
  reads the script for a use of ``.device``);
* ``plot(result, cfg) -> matplotlib.figure.Figure``, drawn on :func:`new_figure` (no pyplot);
* ``main(argv=None)``, usually ``return study.main(__name__, argv)``, and at the end of the script
  ``if __name__ == "__main__": raise SystemExit(main())``, which ``python my_study.py`` runs;
* optionally ``HOST_ONLY``, a string saying why the study computes on the host whatever its
  ``device`` (small problems, where a GPU's kernel launches cost more than the arithmetic): a run
  with ``--device gpu`` then warns that the flag is ignored, and the sidecar names the device
  actually used, ``"cpu"``;
* optionally ``REQUIRES``, a tuple of importable package names the study needs beyond the core
  dependencies, and ``EXTRA``, the ``pyproject.toml`` extra that installs them (default ``"data"``):
  ``shallow run`` names the extra instead of failing on an import, and ``--all`` skips the study.

The study is found by its file name (``studies/NAME.py``; names starting with ``_`` are skipped): no
registration. Its test runs ``quick_config(module)`` through :func:`run` (the ``run_quick`` fixture
of ``tests/conftest.py``) in the ``tests/test_studies_*.py`` file of its topic and checks the claim
against an independent computation; ``tests/test_study_configs.py`` holds bad values its Config
refuses (one at least per study), and ``tests/test_studies.py`` requires its row in the README's
Studies table and its full figure in the Gallery (``figures/NAME.png`` and ``.json``, committed).
README.md's "Adding a study" is the checklist.

A study whose ``compute`` runs a grid of independent points sends it through :func:`run_grid`
(:mod:`shallow.sweep`): the points run in parallel with the run's ``--workers`` / ``--scheduler``,
each cached under ``results/points/NAME/`` as it finishes (keyed by the point, the function, the
package version and the study script's text), so that an interrupted study resumes where it
stopped and an edited one recomputes. These flags choose where the work runs, never what it
computes: they are not Config fields and do not enter the result's hash. (Up to the order of
floating-point sums: workers run BLAS on one thread each, ``--scheduler serial`` on the parent's
threads, which can move the last digits of a result, 2e-16 relative and at most 5e-13 measured in
an ill-conditioned kernel regression; a cached result keeps the digits of the run that made it.)

:func:`run` caches ``compute``'s result under ``results/`` by a hash of the study's name, its
config, the package version and the study script's text (written atomically: a temporary file,
then a rename, so an interrupted run never leaves a half-written result), and writes
``figures/NAME.png`` with a JSON sidecar ``figures/NAME.json`` (config, version, wall time, device,
the result's scalars, the SHA-256 of the study script and of the figure, the git commit that drew it
and the tracked files it had modified, and for a study with grids how many points came from the
cache and their own compute time). A run interrupted in ``compute`` raises :class:`StudyInterrupted`,
which says whether grid points of the study were cached: a study without grids restarts from its
beginning. Quick runs write ``NAME_quick.png`` so that they never overwrite the full figures of
the README gallery.

A study of one's own runs like the gallery's: ``python my_study.py [--quick]``, or with the
``shallow`` command after pointing ``SHALLOW_STUDIES`` at its folder (``SHALLOW_STUDIES=~/studies
shallow run my_study``). The scripts in ``studies/`` are the examples.

matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np

from . import __version__
from ._validation import check_array, check_integer, check_positive
from .backend import available_devices, gpu_unavailable_reason

__all__ = ["run", "StudyInterrupted", "main", "build_parser", "config_from_args", "quick_config", "config_hash",
           "atomic_write", "save_npz_atomic", "load_npz", "new_figure", "run_grid", "Execution", "show_progress",
           "check_grid", "check_flow_time", "compute_note"]

COMMON_FLAGS = ("seed", "device")
#: Names of the flags every study has besides its Config fields: no Config field may take them.
RESERVED_FIELDS = ("quick", "force", "out", "workers", "scheduler", "help", "all")


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where and how a study's grids run: set by :func:`run` while ``compute`` runs.

    Attributes
    ----------
    workers : int or None
        Local worker processes (None: one per CPU).
    scheduler : str or None
        ``"processes"``, ``"serial"``, or a dask scheduler address (see :func:`shallow.sweep.sweep`).
    cache_dir : Path or None
        Where each grid point's result is cached (None: not cached).
    force : bool
        Recompute the points even when cached.
    progress : bool or None
        Progress bars (None: on a terminal only).
    source : str
        The sha256 of the study script's text, part of each point's cache key.
    grids : list or None
        Where :func:`run_grid` tallies each grid it runs: (points, points loaded from the cache,
        seconds the points took to compute, cached ones included), None while the grid runs (its
        finished points are cached); None: not tallied.
    """

    workers: int | None = None
    scheduler: str | None = None
    cache_dir: Path | None = None
    force: bool = False
    progress: bool | None = None
    source: str = ""
    grids: list | None = None


_EXECUTION: contextvars.ContextVar = contextvars.ContextVar("shallow_study_execution", default=Execution())


def show_progress() -> bool:
    """Whether a study's own long loops (a training run, say) show a progress bar: the run's choice
    (:func:`run`'s ``progress``), by default only when standard error is a terminal."""
    progress = _EXECUTION.get().progress
    return sys.stderr.isatty() if progress is None else bool(progress)


# ----------------------------------------------------------------------------- files

#: A temporary file of :func:`atomic_write` untouched for this many seconds is left over by a killed
#: writer (SIGKILL, a power cut): the next write of the same file removes it. A live writer fills its
#: temporary file within seconds, then renames it.
STALE_TMP_SECONDS = 3600.0


def _remove_stale_tmp(path: Path) -> None:
    """Remove the temporary files ``.NAME.HEX.tmp`` of ``path`` that killed writers left behind: only
    those of this very NAME (12 hexadecimal digits between), untouched for :data:`STALE_TMP_SECONDS`."""
    prefix = f".{path.name}."
    try:
        names = [name for name in os.listdir(path.parent) if name.startswith(prefix) and name.endswith(".tmp")]
    except OSError:
        return
    now = time.time()
    for name in names:
        middle = name[len(prefix):-len(".tmp")]
        if len(middle) != 12 or not all(c in "0123456789abcdef" for c in middle):
            continue  # another file's temporary file (NAME.x), or not one of ours
        tmp = path.parent / name
        try:
            if now - tmp.lstat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
        except OSError:  # gone already (another writer removed it), or not ours to remove
            pass


def _stage(path: Path, write) -> Path:
    """A temporary file ``.NAME.HEX.tmp`` beside ``path``, filled by ``write`` and fsynced; removed if
    ``write`` raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(path)
    # created like any file (mode 0o666 less the umask; mkstemp's 0o600 made results and figures private)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:  # on disk before the rename, so a crash never exposes a short file
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path, write) -> Path:
    """Write a file through ``write(tmp_path)`` then rename it to ``path`` (atomic on POSIX).

    An exception (or Ctrl-C) inside ``write`` leaves ``path`` untouched and removes the temporary file.
    A writer killed outright (SIGKILL) cannot remove it: the temporary files of ``path`` untouched
    for an hour (:data:`STALE_TMP_SECONDS`) are removed by the next write of ``path``.

    Parameters
    ----------
    path : str or path-like
        The file to write; missing parent folders are created.
    write : callable
        ``write(tmp)``, tmp a :class:`~pathlib.Path` of an empty file ``.NAME.HEX.tmp`` in path's
        folder, which it fills; its return value is ignored. The file is fsynced, then renamed.

    Returns
    -------
    Path
        ``Path(path)``.

    Raises
    ------
    BaseException
        Whatever ``write`` raises, after the temporary file is removed; OSError when the folder
        cannot be created or written.
    """
    path = Path(path)
    tmp = _stage(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _to_storable(value):
    if isinstance(value, (str, bool, int, float, np.generic)):
        return np.asarray(value)
    arr = np.asarray(value)
    if arr.dtype == object:
        raise TypeError(f"result values must be numbers, strings or numeric arrays, got {type(value).__name__}")
    return arr


def _as_loaded(value):
    """``value`` as :func:`load_npz` gives it back after :func:`save_npz_atomic`: an array, or a Python scalar."""
    arr = _to_storable(value)
    return arr.item() if arr.ndim == 0 else arr


def save_npz_atomic(path, result: dict) -> Path:
    """Save a dict of arrays and scalars to ``path`` (.npz) atomically.

    Parameters
    ----------
    path : str or path-like
        The file written (by :func:`atomic_write`), as named: no ``.npz`` suffix is added.
    result : dict of str -> value
        Values: numbers, strings, bools, or numpy arrays and (rectangular) sequences of them,
        each stored through :func:`numpy.asarray`.

    Returns
    -------
    Path
        ``Path(path)``.

    Raises
    ------
    TypeError
        For a value whose array has dtype object (an arbitrary object, say), naming its type.
    ValueError
        From numpy, for a ragged sequence.
    """
    arrays = {key: _to_storable(value) for key, value in result.items()}

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, write)


def load_npz(path) -> dict:
    """Load a dict saved by :func:`save_npz_atomic`; 0-d arrays come back as Python scalars.

    Parameters
    ----------
    path : str or path-like
        An .npz archive.

    Returns
    -------
    dict of str -> numpy array or scalar
        Host numpy arrays; 0-d entries as Python scalars (``int``, ``float``, ``bool``, ``str``).

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        When the file is not an .npz archive (numpy's own message spoke of pickled data) or holds object
        arrays: :func:`save_npz_atomic` never writes them, and they are not unpickled.
    """
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive written by shallow (not a zip file): another kind of "
                         "file, or a copy cut short")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: _as_loaded(data[key]) for key in data.files}  # each member read once
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is a damaged .npz archive: {err}") from None
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise
        raise ValueError(f"{path} holds object arrays (pickled Python objects), which shallow never writes "
                         "and does not unpickle") from None


# ----------------------------------------------------------------------------- configs

def config_hash(name: str, cfg, source: str = "") -> str:
    """A short stable hash of a study's name, its config, the package version and its source code.

    Parameters
    ----------
    name : str
        The study's name.
    cfg : dataclass instance
        The study's Config; its fields (``dataclasses.asdict``) enter the hash: numpy scalars as
        Python numbers, numeric arrays by their dtype, shape and bytes, other values that JSON
        cannot write as their ``str``, and integral floats as ints (``T=250.0`` and ``T=250`` are
        the same config).
    source : str
        The study script's text, default "". It is part of the key so that editing a study never
        serves a result computed by its previous version.

    Returns
    -------
    str
        The first 16 hexadecimal digits of a SHA-256 digest of the name, the config (keys sorted),
        ``shallow.__version__`` and the SHA-256 digest of the source.

    Raises
    ------
    TypeError
        For a cfg that is not a dataclass instance.
    """
    payload = json.dumps({"study": name, "config": _integral_floats_as_ints(dataclasses.asdict(cfg)),
                          "version": __version__, "source": _source_digest(source)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _integral_floats_as_ints(value):
    # A float field given as --T 250 parses to 250.0, and Config(T=250) holds the int 250: the same config,
    # which must hash to the same key. Integral floats are written as ints, inside lists, tuples and dicts too.
    # numpy scalars are their Python numbers (json wrote np.int64(3) as the string "3"), and a numeric array
    # its dtype, shape and the SHA-256 of its bytes: json's default=str wrote it as numpy prints it, to 8
    # digits and with "..." past 1000 entries, so that two different arrays shared a key and the second
    # config was served the first one's result.
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_, np.void)):
        value = value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        from .sweep import _array_digest  # the form sweep's point keys give an array

        return _array_digest(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_integral_floats_as_ints(entry) for entry in value]
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(entry) for key, entry in value.items()}
    return value


def _source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def quick_config(module: ModuleType, **overrides):
    """The study's Config with its QUICK overrides, then ``overrides``, applied.

    Parameters
    ----------
    module : module
        A study: its ``Config`` (built with its defaults) and optional ``QUICK`` dict are read.
    **overrides
        Config fields set after QUICK's.

    Returns
    -------
    Config instance
        ``dataclasses.replace(module.Config(), **{**QUICK, **overrides})``.

    Raises
    ------
    TypeError
        For a name that is not a Config field.
    ValueError
        Whatever the Config's own checks raise for the values.
    """
    quick = getattr(module, "QUICK", {})
    fields = {f.name for f in dataclasses.fields(module.Config)}
    unknown = sorted(set(quick) - fields)
    if unknown:  # "Config.__init__() got an unexpected keyword argument" did not say where it came from
        raise TypeError(f"study {study_name(module)}'s QUICK sets {', '.join(map(repr, unknown))}, which "
                        f"{'is not a Config field' if len(unknown) == 1 else 'are not Config fields'}")
    return dataclasses.replace(module.Config(), **{**quick, **overrides})


# argparse ``type`` functions: a ValueError or ArgumentTypeError becomes "argument --flag: <message>".

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_bool(text: str) -> bool:
    """true/false, yes/no, on/off or 1/0 (any case); anything else is refused, not read as False."""
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false (or yes/no, on/off, 1/0), got {text!r}")
    return word in _TRUE


def _int_parser(minimum: int, what: str):
    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, an integer >= {minimum}, got {text!r}")
        return value
    return parse_int


parse_seed = _int_parser(0, "a seed")
parse_workers = _int_parser(1, "a number of worker processes")


def _tuple_parser(inner: type):
    # bool("false") is True: the entries of a tuple of bools read the words parse_bool reads
    parse = parse_bool if inner is bool else inner

    def parse_list(text: str) -> tuple:
        try:
            return tuple(parse(v) for v in text.split(",") if v)
        except (ValueError, argparse.ArgumentTypeError):
            example = "true,false" if inner is bool else "1,2,3"
            raise argparse.ArgumentTypeError(f"expected comma-separated {inner.__name__} values such as {example}, "
                                             f"got {text!r}") from None
    return parse_list


def _field_parser(field: dataclasses.Field):
    """An argparse ``type`` for a Config field, from its default value (a float annotation over an int
    default, ``T: float = 250``, parses floats)."""
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if field.name == "seed":
        return {"type": parse_seed, "metavar": "SEED"}
    if field.type in (float, "float") and isinstance(default, int) and not isinstance(default, bool):
        return {"type": float}
    if isinstance(default, bool):
        return {"type": parse_bool, "metavar": "BOOL"}
    if isinstance(default, tuple):
        # entries of the default's type; float when any entry is one (a default (1, 2.5) takes 0.5), or none
        inner = float if not default or any(isinstance(v, float) for v in default) else type(default[0])
        return {"type": _tuple_parser(inner), "metavar": "A,B,..."}
    if isinstance(default, (int, float, str)):
        return {"type": type(default)}
    return None


def build_parser(module: ModuleType, prog: str | None = None) -> argparse.ArgumentParser:
    """Flags for a study: its Config fields (``--field-name``), plus --quick, --force, --out,
    --workers and --scheduler.

    Parameters
    ----------
    module : module
        A study with a dataclass ``Config``; the first line of its docstring is the description.
    prog : str, optional
        The program name in usage lines; by default the study's name (its script's file name).

    Returns
    -------
    argparse.ArgumentParser
        Abbreviations refused. Field flags default to None (unset) and parse by the type of the
        field's default: ``seed`` an integer >= 0, bool true/false (yes/no, on/off, 1/0), tuple
        comma-separated values (of bools read as a bool flag is), int, float or str as such (float
        for an int default annotated ``float``); ``device`` is "cpu" or "gpu". Fields of other types
        (a default None, say) get no flag. A value starting with "-" and a digit is a value
        (``--signs -1,1``, ``--eps -1e-3``), not a flag.

    Raises
    ------
    TypeError
        From :func:`dataclasses.fields`, when ``module.Config`` is not a dataclass; for a field named
        like a common flag (quick, force, out, workers, scheduler, help).
    """
    doc = (module.__doc__ or "").strip()
    # no abbreviated flags: --m would otherwise set a field m_teacher of a study without a field m
    parser = argparse.ArgumentParser(prog=prog or study_name(module),
                                     description=doc.splitlines()[0] if doc else None, allow_abbrev=False)
    # A value starting with "-" and a digit is a value, not a flag: Python < 3.13 took "--teacher-signs -1,1,-1"
    # or "--x -1e-3" for a flag missing its value ("expected one argument"); this is 3.13's rule (no flag of
    # ours looks like a negative number).
    parser._negative_number_matcher = re.compile(r"-\.?\d")
    parser.add_argument("--quick", action="store_true", help="the quick configuration (well under a minute on a CPU)")
    parser.add_argument("--force", action="store_true", help="recompute even if a cached result exists")
    parser.add_argument("--out", default=".", help="folder under which results/ and figures/ are written")
    parser.add_argument("--workers", type=parse_workers, default=None, metavar="N",
                        help="local worker processes for the study's grid (default: one per CPU)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="'processes' (default), 'serial', or a dask.distributed scheduler address such as "
                             "tcp://host:8786 (needs the dask extra)")
    taken = sorted({f.name for f in dataclasses.fields(module.Config)} & set(RESERVED_FIELDS))
    if taken:  # argparse raised its own ArgumentError (a traceback) at every call, --help included
        raise TypeError(f"study {study_name(module)}'s Config has the field(s) {', '.join(taken)}, named like the "
                        f"common flags {', '.join('--' + name for name in RESERVED_FIELDS)}: rename them")
    for field in dataclasses.fields(module.Config):
        spec = _field_parser(field)
        if spec is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        kwargs = dict(spec, dest=field.name, default=None, help=f"default {getattr(module.Config(), field.name)!r}")
        if field.name == "device":
            kwargs["choices"] = ("cpu", "gpu")
        parser.add_argument(flag, **kwargs)
    return parser


def config_from_args(module: ModuleType, args: argparse.Namespace):
    """The Config that the parsed flags describe: defaults, then QUICK if --quick, then the flags.

    Parameters
    ----------
    module : module
        The study whose ``Config`` (and ``QUICK``) are read.
    args : argparse.Namespace
        Usually ``build_parser(module).parse_args(argv)``: attributes named after the Config
        fields, None or absent for a flag not given, and optionally ``quick``.

    Returns
    -------
    Config instance

    Raises
    ------
    ValueError
        Whatever the Config's own checks raise for the values.
    """
    names = [f.name for f in dataclasses.fields(module.Config)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "quick", False):
        return quick_config(module, **given)
    return dataclasses.replace(module.Config(), **given)


# ----------------------------------------------------------------------------- checks that Configs share

def check_grid(values, name: str, check_entry=None, *, increasing: bool = False, at_least: int = 1) -> tuple:
    """A Config's grid (a tuple such as widths or dims): every entry through ``check_entry(value, name)``
    (default: an integer >= 1), at least ``at_least`` entries, all distinct, or strictly increasing with
    ``increasing=True``."""
    values = tuple(values)
    for value in values:
        if check_entry is None:
            check_integer(value, name, minimum=1)
        else:
            check_entry(value, name)
    ordered = all(b > a for a, b in zip(values, values[1:])) if increasing else len(set(values)) == len(values)
    if len(values) < at_least or not ordered:
        kind = "strictly increasing" if increasing else "distinct"
        # a grid long enough but out of order, or with a repeated value, is said to be so (not to be too short)
        problem = (f"at least {at_least} value(s)" if len(values) < at_least
                   else "values in increasing order" if increasing else "no value twice")
        raise ValueError(f"{name} must hold at least {at_least} {kind} value(s) ({problem}), got {values!r}")
    return values


def check_flow_time(T, step_size) -> int:
    """The number of steps round(T / step_size) of a flow run to time T, refused unless >= 1."""
    steps = round(check_positive(T, "T") / check_positive(step_size, "step_size"))
    if steps < 1:
        raise ValueError(f"T / step_size must round to at least one step of the flow, got T={T!r} and "
                         f"step_size={step_size!r}")
    return steps


def check_width_fit(log2_m_min, log2_m_fit, log2_m_max, minimum: int = 0) -> None:
    """Widths m = 2^k, k = log2_m_min..log2_m_max, with exponents fitted over k >= log2_m_fit:
    refused unless minimum <= log2_m_min <= log2_m_fit < log2_m_max (at least two widths in the fit)."""
    lo = check_integer(log2_m_min, "log2_m_min", minimum=minimum)
    fit, top = check_integer(log2_m_fit, "log2_m_fit"), check_integer(log2_m_max, "log2_m_max")
    if not lo <= fit < top:
        raise ValueError("log2_m_min <= log2_m_fit < log2_m_max must hold (the fit needs at least two widths), "
                         f"got {lo}, {fit} and {top}")


def check_teacher_2d(angles, signs) -> None:
    """A teacher on the circle: one nonzero outer weight (``teacher_signs``) per angle (``teacher_angles``)."""
    angles = check_array(angles, "teacher_angles", ndim=1)
    weights = check_array(signs, "teacher_signs", ndim=1)
    if angles.size == 0 or weights.shape != angles.shape or (weights == 0).any():
        raise ValueError(f"teacher_signs must give one nonzero outer weight per entry of teacher_angles, got "
                         f"{signs!r} for {angles.tolist()!r}")


# ----------------------------------------------------------------------------- running

def _check_study(module: ModuleType):
    missing = [name for name in ("Config", "compute", "plot") if not hasattr(module, name)]
    if missing:
        raise TypeError(f"study {module.__name__} lacks {', '.join(missing)} (see shallow.study's docstring)")
    fields = {f.name for f in dataclasses.fields(module.Config)}
    if not set(COMMON_FLAGS) <= fields:
        raise TypeError(f"study {module.__name__}'s Config must have the fields {COMMON_FLAGS}")
    host_only(module)  # a HOST_ONLY that is not a sentence fails here


def _check_out(out) -> Path:
    """The output folder, created if missing; an error naming ``out`` when it cannot hold results/ and figures/."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path, got {type(out).__name__}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out={str(out)!r} cannot be used as the output folder: {err.strerror or err}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"out={str(out)!r} is not writable")
    for sub in ("results", "figures"):  # checked now: writing into them after the compute raised OSError's traceback
        folder = out / sub
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"out={str(out)!r} holds a file {sub}, where results/ and figures/ go: move it away "
                             "or choose another --out")
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise ValueError(f"out={str(out)!r}: its folder {sub}/ is not writable")
    return out


def study_name(module: ModuleType) -> str:
    """The study's name: its script's file name (also when run as ``python studies/NAME.py``)."""
    path = getattr(module, "__file__", None)
    return Path(path).stem if path else module.__name__.rsplit(".", 1)[-1]


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C while a study computed: a KeyboardInterrupt that says what a rerun resumes from.

    Attributes
    ----------
    study : str
        The study's name.
    grid_points_cached : bool
        Whether the study had started a grid (:func:`run_grid`), whose finished points are cached
        and skipped by a rerun; False for a study without grids (or before its first), which restarts
        from its beginning.
    """

    def __init__(self, study: str, grid_points_cached: bool):
        super().__init__(study, grid_points_cached)
        self.study, self.grid_points_cached = study, grid_points_cached


def run(module: ModuleType, cfg, *, quick: bool = False, force: bool = False, out=".",
        figure: bool = True, workers: int | None = None, scheduler: str | None = None,
        progress: bool | None = None) -> dict:
    """Compute (or load from the cache) a study's result and write its figure and sidecar.

    Parameters
    ----------
    module : module
        The study.
    cfg : its Config
    quick : bool
        Only names the figure (``NAME_quick.png``); the quick settings are in ``cfg`` already.
    force : bool
        Recompute even when ``results/NAME-HASH.npz`` exists.
    out : path
        Folder under which ``results/`` and ``figures/`` are written.
    figure : bool
        Draw and save the figure (needs matplotlib).
    workers, scheduler : optional
        Where the study's grids run (:func:`run_grid`); they do not change the result.
    progress : bool or None
        Progress bars of the grids and of the study's own loops (:func:`show_progress`; None: on a
        terminal only).

    Returns
    -------
    dict
        The result, the same whether computed or read from the cache: values as :func:`load_npz`
        gives them (numpy arrays, 0-d values as Python scalars), with ``"_wall_time"`` (seconds of
        compute, or of the cached run) and ``"_cached"`` (whether it came from ``results/`` without
        computing) added, and for a study with grids (:func:`run_grid`) ``"_grid_points"``,
        ``"_grid_points_cached"`` and ``"_grid_compute_time"`` (the points' own compute seconds,
        cached ones included): the sidecar's ``grid_points``, since a run drawn from cached points
        takes little wall time.

    Raises
    ------
    StudyInterrupted
        On Ctrl-C during ``compute`` (a KeyboardInterrupt), saying whether grid points were cached.
    ValueError
        For a cached result that cannot be read (``force=True`` recomputes it), a config the
        study refuses, an unusable ``out``.
    RuntimeError
        For a ``cfg.device`` that is not available here (``"gpu"`` without a usable GPU: the message
        says why, :func:`shallow.backend.gpu_unavailable_reason`), or a dask scheduler address
        without dask.distributed installed.
    """
    _check_study(module)
    if cfg.device not in available_devices():
        reason = gpu_unavailable_reason() if cfg.device == "gpu" else None
        raise RuntimeError(f"device={cfg.device!r} is not available here (available: "
                           f"{', '.join(available_devices())})" + (f": {reason}" if reason else ""))
    if cfg.device != "cpu" and host_only(module):
        warnings.warn(f"{study_name(module)} computes on the host whatever --device ({module.HOST_ONLY}): "
                      f"device={cfg.device!r} is ignored", stacklevel=2)
    if workers is not None:
        workers = check_integer(workers, "workers", minimum=1)
    if scheduler is not None:
        from .sweep import _parse_scheduler

        # an unknown scheduler, or a dask address without dask, fails now, not after the first grid
        if _parse_scheduler(scheduler)[0] == "dask" and importlib.util.find_spec("distributed") is None:
            raise RuntimeError(f"scheduler={scheduler!r} is the address of a dask scheduler, which needs "
                               "dask.distributed: pip install 'shallow[dask]'")
    name = study_name(module)
    out = _check_out(out)
    source = Path(module.__file__).read_text() if getattr(module, "__file__", None) else ""
    cache = out / "results" / f"{name}-{config_hash(name, cfg, source)}.npz"
    if cache.exists() and not force:
        try:
            result = load_npz(cache)
        except ValueError as err:
            raise ValueError(f"{err}. This cached result of {name} cannot be read: --force recomputes it "
                             "(and replaces the file)") from None
        result["_cached"] = True  # not saved: the cache holds what compute returned
    else:
        execution = Execution(workers=workers, scheduler=scheduler, cache_dir=out / "results" / "points" / name,
                              force=force, progress=progress, source=_source_digest(source), grids=[])
        token = _EXECUTION.set(execution)
        start = time.perf_counter()
        try:
            result = dict(module.compute(cfg))
        except KeyboardInterrupt as err:
            if isinstance(err, StudyInterrupted):  # a study run inside another's compute: its own word stands
                raise
            raise StudyInterrupted(name, bool(execution.grids)) from err
        finally:
            _EXECUTION.reset(token)
        result["_wall_time"] = time.perf_counter() - start
        # a run drawn from cached points is quick: say how long the points took (a grid whose sweep raised, and
        # whose study went on, left None)
        finished = [grid for grid in execution.grids if grid is not None]
        if finished:
            points, cached, seconds = (sum(column) for column in zip(*finished, strict=True))
            result.update(_grid_points=points, _grid_points_cached=cached, _grid_compute_time=seconds)
        save_npz_atomic(cache, result)
        # as a rerun reads it back from the cache: a list came back an array, a 0-d array a number (which the
        # sidecar's summary then listed, where the computing run's left it out), a numpy float32 a float
        result = {key: _as_loaded(value) for key, value in result.items()}
        result["_cached"] = False
    if figure:
        fig = module.plot(result, cfg)
        stem = name + ("_quick" if quick else "")
        save_figure(fig, out / "figures" / f"{stem}.png", module, cfg, result)
    return result


def compute_note(result: dict) -> str:
    """How a run got its result, for a line of the CLI: "compute 7.6 s", or "cached (computed in 7.6 s)"."""
    seconds = float(result["_wall_time"])
    return f"cached (computed in {seconds:.1f} s)" if result.get("_cached") else f"compute {seconds:.1f} s"


def host_only(module: ModuleType) -> bool:
    """Whether the study computes on the host whatever its Config's ``device`` (its ``HOST_ONLY``)."""
    reason = getattr(module, "HOST_ONLY", None)
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        raise TypeError(f"{study_name(module)}.HOST_ONLY must be a sentence saying why the study computes on the "
                        f"host, got {reason!r}")
    return reason is not None


def run_grid(fn, points, **options) -> list:
    """Run a study's grid of points through :func:`shallow.sweep.sweep`, as the current run says.

    Inside :func:`run` the points run with its ``--workers`` / ``--scheduler``, are cached under
    ``OUT/results/points/NAME/`` (``--force`` recomputes them; the key holds the study script's text,
    as the result's hash does, so an edited study recomputes them) and show a progress bar; called
    outside a run (a test calling ``compute`` directly) they run on local processes, uncached.

    Parameters
    ----------
    fn : callable
        A module-level function ``fn(point) -> dict`` of the study script.
    points : iterable of dicts
        The grid (:func:`shallow.sweep.grid`); plain dicts travel to any worker.
    **options
        Overrides of :func:`shallow.sweep.sweep`'s arguments (``scheduler="serial"``, ``desc``, ...).

    Returns
    -------
    list of dict
        The points' results, in order.

    Raises
    ------
    shallow.sweep.SweepError
        When some points failed (the others are cached: a rerun computes only those).
    """
    from .sweep import sweep

    execution = _EXECUTION.get()
    kwargs = dict(workers=execution.workers, scheduler=execution.scheduler, cache_dir=execution.cache_dir,
                  force=execution.force, progress=execution.progress)
    kwargs.update(options)
    if kwargs.get("cache_dir") is not None and kwargs.get("key") is None:
        from .sweep import _default_namespace

        # the points of an edited study are not those of its previous version
        kwargs["key"] = f"{_default_namespace(fn)}@{execution.source}"
    if kwargs.get("executor") is not None:
        for name in ("workers", "scheduler"):
            if kwargs.get(name) is None:
                kwargs.pop(name)
    if execution.grids is not None:
        index = len(execution.grids)
        execution.grids.append(None)  # started: if Ctrl-C stops it, its finished points are cached
    done = sweep(fn, points, **kwargs)
    if execution.grids is not None:
        seconds = float(np.nansum(np.asarray(done.wall_times, dtype=float)))
        execution.grids[index] = (len(done.results), int(sum(done.cached)), seconds)
    return done.results


def _scalars(result: dict) -> dict:
    out = {}
    for key, value in result.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, np.generic):
            out[key] = value.item()
    return out


#: Modified tracked files listed in a sidecar at most (then a count of the others).
MAX_MODIFIED_LISTED = 20


def _provenance(module: ModuleType, written=()) -> dict:
    """Which code drew a figure: the SHA-256 of the study script's bytes (``sha256sum studies/NAME.py``)
    and, when the script lies in a git checkout, the commit checked out and the tracked files with
    uncommitted changes, paths relative to the checkout. Changes under the folders in ``written`` (the
    run's own figures/ and results/, which the gallery tracks) are not code and are left out."""
    path = getattr(module, "__file__", None)
    if not path:
        return {}
    path = Path(path)
    out = {"source_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    git = ["git", "-C", str(path.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--show-toplevel", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
        if head.returncode != 0:
            return out
        # tracked files that differ from the commit (staged or not), paths relative to the checkout
        changed = subprocess.run([*git, "diff", "--name-only", "-z", "HEAD"], capture_output=True, text=True,
                                 timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return out
    top, commit = head.stdout.splitlines()[:2]
    out["git_commit"] = commit
    if changed.returncode != 0:
        return out
    skip = [Path(folder).resolve() for folder in written]
    modified = sorted(name for name in changed.stdout.split("\0") if name and not any(
        (Path(top) / name).resolve().is_relative_to(folder) for folder in skip))
    if len(modified) > MAX_MODIFIED_LISTED:
        modified = modified[:MAX_MODIFIED_LISTED] + [f"... and {len(modified) - MAX_MODIFIED_LISTED} more"]
    out["git_modified"] = modified
    return out


def _strict_json(value):
    """``value`` with its non-finite floats written as the strings "nan", "inf" and "-inf": JSON has no such
    numbers (Python's json wrote NaN and Infinity, which strict parsers refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def save_figure(fig, path, module: ModuleType, cfg, result: dict) -> Path:
    """Save ``fig`` to ``path`` (PNG) and a JSON sidecar next to it, both atomically.

    The sidecar is strict JSON: a non-finite number of the config or summary is the string "nan",
    "inf" or "-inf". ``wall_time_s`` is how long the result took to compute, also when this run
    read it from the cache (``result_cached``); ``figure_sha256`` is the SHA-256 of the PNG's bytes,
    so that a figure and a sidecar of different runs are told apart (``sha256sum NAME.png``).

    Both files are complete on disk before either is replaced, and the two renames follow each
    other: an interruption (Ctrl-C, SIGKILL) leaves the previous pair, the new pair, or, between
    the renames, the new sidecar beside the previous figure, whose hash it does not match."""
    import io

    import scipy

    path = Path(path)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120, bbox_inches="tight")
    png = png.getvalue()
    sidecar = {
        "study": study_name(module),
        "claim": (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else "",
        "config": dataclasses.asdict(cfg),
        "shallow_version": __version__,
        "wall_time_s": result.get("_wall_time"),
        "result_cached": bool(result.get("_cached", False)),
        **({"grid_points": {"points": int(result["_grid_points"]), "from_cache": int(result["_grid_points_cached"]),
                            "compute_time_s": float(result["_grid_compute_time"])}}
           if "_grid_points" in result else {}),
        "device": "cpu" if host_only(module) else cfg.device,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        # git runs here, before any file is replaced: a figure renamed first kept another run's sidecar
        # for as long as git took when the run was interrupted meanwhile
        **_provenance(module, written=(path.parent, path.parent.parent / "results")),
        "figure_sha256": hashlib.sha256(png).hexdigest(),
        "summary": {k: v for k, v in _scalars(result).items() if not k.startswith("_")},
    }
    text = json.dumps(_strict_json(sidecar), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"
    # The sidecar is renamed first: interrupted between the renames, the pair is the new sidecar and the
    # previous figure, and the sidecar's figure_sha256 (the new figure's) tells them apart. The other order
    # would leave the new figure beside the previous sidecar, which a version of shallow without
    # figure_sha256 may have written: a mismatch nothing could detect.
    staged = []
    try:
        staged.append((_stage(path.with_suffix(".json"), lambda tmp: tmp.write_text(text)), path.with_suffix(".json")))
        staged.append((_stage(path, lambda tmp: tmp.write_bytes(png)), path))
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)  # after its rename the name is gone: nothing to remove
    return path


def new_figure(nrows: int = 1, ncols: int = 1, size=(5.0, 3.8), **kwargs):
    """A matplotlib Figure and its axes, made without pyplot (no GUI backend, thread-safe).

    Parameters
    ----------
    nrows, ncols : int
        The grid of panels, 1 x 1 by default.
    size : pair of floats
        (width, height) of one panel in inches, default (5.0, 3.8); the figure is
        (width ncols, height nrows).
    **kwargs
        Passed to :meth:`matplotlib.figure.Figure.subplots` (``sharex``, ``sharey``, ...; not
        ``squeeze``, which is False: passing it raises TypeError).

    Returns
    -------
    fig : matplotlib.figure.Figure
        With the "constrained" layout.
    axes : numpy array of Axes, of shape (nrows, ncols)
        Two-dimensional even for one panel.
    """
    if "squeeze" in kwargs:
        raise TypeError("new_figure always returns a 2-D array of axes (squeeze=False): index it as "
                        "axes[0, 0], or use axes.flat, instead of passing squeeze")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def main(module, argv=None) -> int:
    """Entry point of ``python studies/NAME.py``: parse flags, run, print where the figure went.

    Parameters
    ----------
    module : module or str
        The study, or its module name (``__name__``), imported when not already loaded.
    argv : list of str, optional
        The flags (see :func:`build_parser`); by default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0, 2 when a ValueError or RuntimeError (a bad config value, a missing
        device) was printed as ``NAME: error: ...``, 130 after Ctrl-C, 143 after SIGTERM (which stops
        the run as Ctrl-C does; see :func:`shallow.cli.report_errors`).

    Raises
    ------
    SystemExit
        From argparse: ``--help``, an unknown flag or a flag value it refuses.
    """
    if isinstance(module, str):
        module = sys.modules[module] if module in sys.modules else importlib.import_module(module)
    from .cli import report_errors

    args = build_parser(module).parse_args(argv)

    def run_study():
        cfg = config_from_args(module, args)
        result = run(module, cfg, quick=args.quick, force=args.force, out=args.out, workers=args.workers,
                     scheduler=args.scheduler)
        stem = study_name(module) + ("_quick" if args.quick else "")
        print(f"{study_name(module)}: {compute_note(result)} -> {Path(args.out) / 'figures' / stem}.png")
        return 0

    return report_errors(run_study, study_name(module), out=args.out)
