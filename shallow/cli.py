"""The ``shallow`` command: list and run the studies.

    shallow list
    shallow run STUDY --help          (the study's flags: its Config fields, --FIELD VALUE)
    shallow run STUDY [--quick] [--device cpu|gpu] [--seed N] [--force] [--out DIR] [--FIELD VALUE ...]
    shallow run --all [--quick] [--device cpu|gpu] [--seed N] [--force] [--out DIR]
                      [--workers N] [--scheduler ADDRESS]

Studies are the scripts of the ``studies/`` folder (one script, one figure, one claim), found in
``$SHALLOW_STUDIES`` if set, else in ``./studies``, else beside the installed package (a source
checkout). Figures go to ``OUT/figures`` with a JSON sidecar, results to ``OUT/results``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["main", "find_studies", "load_study"]


class StudiesFolderError(FileNotFoundError):
    """No folder of study scripts: ``$SHALLOW_STUDIES`` is not one, or none of the defaults exists."""


def studies_dir() -> Path:
    """The folder holding the study scripts."""
    env = os.environ.get("SHALLOW_STUDIES")
    if env:
        if not Path(env).is_dir():  # a typo, or a script's path, listed no study without a word
            raise StudiesFolderError(f"SHALLOW_STUDIES={env!r} is not a folder: point it at the folder of the "
                                    "study scripts")
        return Path(env)
    for candidate in (Path.cwd() / "studies", Path(__file__).resolve().parents[1] / "studies"):
        if candidate.is_dir():
            return candidate
    raise StudiesFolderError("no studies/ folder found: run from a source checkout of shallow, "
                            "or point SHALLOW_STUDIES at one")


def find_studies(folder: Path | None = None) -> dict[str, Path]:
    """Study name -> script path, for every public script of the studies folder.

    Parameters
    ----------
    folder : path, optional
        The folder to list; by default ``$SHALLOW_STUDIES``, else ``./studies``, else the
        ``studies/`` beside the package. A given folder is not checked: a missing one lists nothing.

    Returns
    -------
    dict of str -> Path
        The ``*.py`` files not starting with ``_``, by stem, in sorted order.

    Raises
    ------
    StudiesFolderError
        A FileNotFoundError, with ``folder=None``, when ``$SHALLOW_STUDIES`` is set but not a
        folder, or none of the default folders exists.
    """
    folder = studies_dir() if folder is None else Path(folder)
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def load_study(name: str, folder: Path | None = None):
    """Import the study script ``name`` as a module (registered as ``shallow_studies.NAME``).

    Parameters
    ----------
    name : str
        A study's name, a key of :func:`find_studies`.
    folder : path, optional
        Where to look, as in :func:`find_studies`.

    Returns
    -------
    module
        The executed script.

    Raises
    ------
    SystemExit
        For an unknown name, with a message listing the known studies.
    FileNotFoundError
        As :func:`find_studies`, with ``folder=None`` and no studies folder.
    """
    studies = find_studies(folder)
    if name not in studies:
        known = ", ".join(studies) or "none"
        raise SystemExit(f"shallow: unknown study {name!r}; known studies: {known}")
    from .sweep import load_module_from_file

    # Registered under a parent package, so that what a study defines pickles into worker processes.
    return load_module_from_file(f"shallow_studies.{name}", studies[name])


def _summary(module) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _cmd_list(args) -> int:
    for name in find_studies():
        print(f"{name:28s} {_summary(load_study(name))}")
    return 0


def missing_requirements(module) -> list[str]:
    """The packages a study lists in ``REQUIRES`` (e.g. ``("sklearn",)``) that are not installed."""
    return [pkg for pkg in getattr(module, "REQUIRES", ()) if importlib.util.find_spec(pkg) is None]


def _run_one(name: str, common: argparse.Namespace, extra: list[str]) -> str | None:
    from . import study

    module = load_study(name)
    missing = missing_requirements(module)
    if missing:
        hint = f"{name} needs {', '.join(missing)}: pip install -e '.[{getattr(module, 'EXTRA', 'data')}]'"
        if not common.all:
            raise SystemExit(f"shallow run: {hint}")
        from tqdm.auto import tqdm

        tqdm.write(f"{name}: skipped ({hint})")
        return None
    parser = study.build_parser(module, prog=f"shallow run {name}")
    argv = list(extra)
    for flag in ("seed", "device"):
        value = getattr(common, flag)
        if value is not None:
            argv += [f"--{flag}", str(value)]
    args = parser.parse_args(argv)
    args.quick, args.force, args.out = common.quick, common.force, common.out
    cfg = study.config_from_args(module, args)
    result = study.run(module, cfg, quick=common.quick, force=common.force, out=common.out,
                       workers=common.workers, scheduler=common.scheduler)
    return study.compute_note(result)


def _cmd_run(args, extra: list[str]) -> int:
    if args.all and args.study:  # a study flag's value read as STUDY: "--all --widths 5,10"
        raise SystemExit(f"shallow run --all: takes no STUDY (got {args.study!r}; a study's own flags need "
                         "that single STUDY, without --all)")
    if not args.all and not args.study:
        raise SystemExit("shallow run: give one STUDY or --all (see `shallow list`)")
    if args.all and extra:
        raise SystemExit(f"shallow run --all: study-specific flags {extra} need a single STUDY")
    names = list(find_studies()) if args.all else [args.study]
    from tqdm.auto import tqdm

    bar = tqdm(names, desc="studies", unit="study", disable=len(names) < 2)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        try:
            note = _run_one(name, args, extra)
        except (ValueError, RuntimeError, FloatingPointError) as err:
            if len(names) < 2:
                raise
            # with --all the line must say which study stopped the run
            raise RuntimeError(f"{name}: {err}") from err
        if note is None:
            continue
        stem = name + ("_quick" if args.quick else "")
        tqdm.write(f"{name}: {note}, total {time.perf_counter() - start:.1f} s "
                   f"-> {Path(args.out) / 'figures' / stem}.png")
    return 0


def _cmd_run_help(run_parser: argparse.ArgumentParser, args) -> int:
    """``shallow run --help``; with a STUDY, that study's flags as well (argparse's own help stopped at
    the common flags: a study's Config fields were only listed by ``python studies/STUDY.py --help``)."""
    if not args.study:
        run_parser.print_help()
        return 0
    from . import study

    module = load_study(args.study)
    study.build_parser(module, prog=f"shallow run {args.study}").print_help()
    return 0


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """Meanwhile, SIGTERM (``kill PID``, ``timeout``, a job scheduler's time limit or preemption) stops this
    process as Ctrl-C does: a KeyboardInterrupt, so that temporary files are removed, worker processes
    stopped and a flow's checkpoint saved. Yields the list of the SIGTERMs received (empty if none).

    Only in the main thread and where SIGTERM has its default action (a handler of the caller's is kept);
    the previous action is restored at the end. Nested, it yields the outer call's list (the handler is
    the outer one's). A process forked meanwhile (a sweep's ``start_method="fork"``) gets SIGTERM's default
    action back as it starts (:func:`_sigterm_default_in_child`): a worker that the parent terminates ends
    at once, even inside a long C call (a BLAS product), where a Python handler would wait for its end.
    """
    current = signal.getsignal(signal.SIGTERM)
    if getattr(current, "_shallow_received", None) is not None:  # nested: the outer call's handler and list
        yield current._shallow_received
        return
    received = []
    if threading.current_thread() is not threading.main_thread() or current is not signal.SIG_DFL:
        yield received
        return
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:  # a child forked without the at-fork hook (os.fork from C): the default action, now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        raise KeyboardInterrupt

    handler._shallow_received = received
    signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sigterm_default_in_child():
    """After a fork: SIGTERM's default action in the child where :func:`_sigterm_as_ctrl_c`'s handler was set.

    A Python handler runs only between bytecodes of the main thread: a forked worker inside a long C call
    kept running after its parent's ``terminate()`` until the call returned (6.7 s for a 7 s call, against
    0 with the default action), and the parent waited for it at exit.
    """
    if getattr(signal.getsignal(signal.SIGTERM), "_shallow_received", None) is not None:
        with contextlib.suppress(ValueError):  # not the main interpreter
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_sigterm_default_in_child)


def report_errors(run, prog: str, out=".") -> int:
    """``run()``, with a ValueError or RuntimeError (bad flags or config values, a missing device) or a
    FloatingPointError (a flow or a training that diverged, as with too large a step) printed as
    ``PROG: error: MESSAGE`` and exit status 2 instead of a traceback, unless ``SHALLOW_TRACEBACK=1``:
    the messages name the argument and what was expected. Ctrl-C prints what the same command
    resumes from (:func:`interrupted_message`, with the run's ``--out`` folder ``out``), and the exit
    status is 130 (128 + SIGINT, the shell's). SIGTERM stops ``run()`` as Ctrl-C does
    (:func:`_sigterm_as_ctrl_c`: temporary files are removed and a flow's checkpoint saved, where a kill
    would lose its progress since the last one), with the same line and exit status 143 (128 + SIGTERM)."""
    with _sigterm_as_ctrl_c() as terminated:
        try:
            return run()
        except (ValueError, RuntimeError, FloatingPointError) as err:
            if os.environ.get("SHALLOW_TRACEBACK"):
                raise
            print(f"{prog}: error: {err}\n(SHALLOW_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:
            if os.environ.get("SHALLOW_TRACEBACK"):
                raise
            print(f"{prog}: {interrupted_message(err, out)}", file=sys.stderr)
            return 143 if terminated else 130


def interrupted_message(err: KeyboardInterrupt, out=".") -> str:
    """What a rerun of an interrupted command keeps: the results of finished studies (``OUT/results/``),
    and the finished points of a grid the interrupted study had started (:func:`shallow.study.run_grid`,
    ``OUT/results/points/STUDY/``); a study interrupted in its compute without such a grid (``err`` a
    :class:`shallow.study.StudyInterrupted` that says so) restarts from its beginning. The folders are
    named as the run wrote them, under its ``--out`` folder ``out``."""
    from .study import StudyInterrupted

    results = Path(out) / "results"
    reuse = "the results of the studies that finished computing"
    if isinstance(err, StudyInterrupted) and err.grid_points_cached:
        reuse += f" and the grid points {err.study} finished (in {results / 'points' / err.study}/)"
    resumes = f"it reuses what is cached under {results}/: {reuse}; --force recomputes them"
    if not isinstance(err, StudyInterrupted):  # not in a study's compute: loading it, drawing its figure
        return f"interrupted. The same command resumes: {resumes}"
    if err.grid_points_cached:
        return f"interrupted in {err.study}. The same command resumes: {resumes}"
    return (f"interrupted in {err.study}, which restarts from its beginning when run again (only the points "
            f"of a grid are cached as they finish, and it had started none). The same command resumes the rest: "
            f"{resumes}")


def main(argv=None) -> int:
    """Entry point of the ``shallow`` console script.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; by default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 (``shallow run --help`` included), 2 when a ValueError or
        RuntimeError of ``run`` (a bad flag value or config, a missing device) was printed as
        ``shallow run: error: ...``, or no folder of studies (:class:`StudiesFolderError`) as
        ``shallow: error: ...``; 130 after Ctrl-C (see :func:`report_errors`), after which the
        ``shallow`` command (``argv`` None) ignores a second Ctrl-C while it exits; 143 after SIGTERM,
        which stops a run as Ctrl-C does.

    Raises
    ------
    SystemExit
        From argparse (``shallow --help``, an unknown command, flag or flag value), and with
        status 2, its message on stderr, for an unknown study, a study missing a package of its
        ``REQUIRES``, and ``run`` without exactly one of STUDY and ``--all``.
    """
    from .study import parse_seed, parse_workers

    parser = argparse.ArgumentParser(prog="shallow", description=__doc__.splitlines()[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the studies with their claims")
    run = sub.add_parser("run", help="run one study, or all of them, and write their figures", allow_abbrev=False,
                         add_help=False)
    run.add_argument("-h", "--help", action="store_true",
                     help="show this help and exit; after a STUDY, that study's flags (its Config fields) too")
    run.add_argument("study", nargs="?", help="the study's name (see `shallow list`)")
    run.add_argument("--all", action="store_true", help="run every study")
    run.add_argument("--quick", action="store_true", help="quick configurations (well under a minute each on a CPU)")
    run.add_argument("--device", choices=("cpu", "gpu"), default=None, help="where arrays live (default: cpu)")
    run.add_argument("--seed", type=parse_seed, default=None, help="random seed, >= 0 (default: each study's own)")
    run.add_argument("--force", action="store_true", help="recompute even if a cached result exists")
    run.add_argument("--out", default=".", help="folder under which figures/ and results/ go (default: .)")
    run.add_argument("--workers", type=parse_workers, default=None, metavar="N",
                     help="worker processes for the studies' grids (default: one per core)")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="'processes' (default), 'serial', or a dask.distributed scheduler address")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "list":
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            return _cmd_list(args)
        if args.help:
            return _cmd_run_help(run, args)
        status = report_errors(lambda: _cmd_run(args, extra), "shallow run", out=args.out)
        if status in (130, 143) and argv is None:
            # the process is the command: a second Ctrl-C (a process group's, after the parent's own) while it
            # prints its line or waits on its workers at exit gave a second traceback; in-process callers keep theirs
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return status
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # ours (an unknown study, ...): a usage error, status 2 as argparse's
            print(exit_.code, file=sys.stderr)
            raise SystemExit(2) from None
        raise
    except StudiesFolderError as err:  # no studies folder, or SHALLOW_STUDIES not one (a study's own: a traceback)
        if os.environ.get("SHALLOW_TRACEBACK"):
            raise
        print(f"shallow: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
