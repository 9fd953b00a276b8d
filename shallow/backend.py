"""Array backends: numpy on the host, CuPy on a CUDA device.

This is the only module of shallow that imports cupy. Every public numerical routine opens
with ``xp = get_xp(*arrays)`` and then writes its mathematics once against ``xp``; the device
is chosen at the edge (a study's ``--device`` flag, a test fixture) with :func:`to_device`.

Dispatch is built on :func:`array_api_compat.array_namespace`, which recognises the array
types (numpy, CuPy, and in principle torch) and refuses a mix; we then hand back the plain
``numpy`` or ``cupy`` module, since the library is written in their common dialect
(``einsum``, ``matmul(out=)``, in-place ufuncs) rather than in the stricter array-API subset.

CuPy may be importable on a machine where no CUDA device answers: there
``cupy.cuda.is_available()`` is False while any array operation raises. :func:`gpu_available`
is False in that case, when cupy is missing, and when ``SHALLOW_DISABLE_CUPY=1``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import os
from types import ModuleType

import numpy as np

__all__ = [
    "get_xp",
    "to_numpy",
    "array_digest",
    "row_norms",
    "to_device",
    "device_gemm",
    "cuda_runtime",
    "cublas_library",
    "scipy_for",
    "linalg_errors",
    "gpu_available",
    "gpu_unavailable_reason",
    "available_devices",
    "device_of",
    "is_cupy",
]

DEVICES = ("cpu", "gpu")


def _disable_flag() -> str | None:
    """The value of ``SHALLOW_DISABLE_CUPY`` where it hides CuPy (set, and not "0"), else None."""
    flag = os.environ.get("SHALLOW_DISABLE_CUPY", "")
    return None if flag in ("", "0") else flag


@functools.lru_cache(maxsize=1)
def _cupy() -> ModuleType | None:
    """The cupy module when a CUDA device answers, else None (cached; never raises)."""
    if _disable_flag() is not None:
        return None
    try:
        cupy = importlib.import_module("cupy")
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None
    try:
        if not cupy.cuda.is_available():
            return None
        # is_available() can be True while the runtime is unusable: try one real operation.
        int(cupy.arange(2).sum())
    except Exception:
        return None
    return cupy


def gpu_available() -> bool:
    """True when CuPy is installed, a CUDA device answers, and ``SHALLOW_DISABLE_CUPY`` is unset."""
    return _cupy() is not None


def gpu_unavailable_reason() -> str | None:
    """Why no GPU is usable here, for an error message; None where :func:`gpu_available` is True.

    Returns
    -------
    str or None
        ``SHALLOW_DISABLE_CUPY`` set, CuPy not installed (with the command that installs it), or CuPy
        installed while no CUDA device answers (or its import fails).

    Examples
    --------
    >>> gpu_unavailable_reason() is None or gpu_unavailable_reason().startswith(("CuPy", "SHALLOW"))
    True
    """
    if _cupy() is not None:
        return None
    flag = _disable_flag()
    if flag is not None:
        return f"SHALLOW_DISABLE_CUPY={flag} hides CuPy"
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install -e '.[gpu]')"
    return "CuPy is installed but no CUDA device answers (or CuPy fails to import)"


@functools.lru_cache(maxsize=1)
def device_gemm():
    """CuPy's cuBLAS GEMM with accumulation, ``gemm(transa, transb, a, b, out=, alpha=, beta=)``, or None.

    ``out <- alpha op(a) op(b) + beta out`` in place: what numpy lacks and :mod:`shallow.cnn`'s
    convolutions need (nine accumulated products per 3x3 layer). None without a usable device.
    """
    cupy = _cupy()
    if cupy is None:
        return None
    try:
        return importlib.import_module("cupy.cublas").gemm
    except Exception:  # a CuPy build without its cuBLAS wrapper: callers fall back to matmul
        return None


def cuda_runtime():
    """CuPy's ``cupy.cuda`` (streams, events, memory pools, graphs) where a CUDA device answers, else None."""
    cupy = _cupy()
    return None if cupy is None else cupy.cuda


def _mapped_library(name: str, maps) -> str | None:
    """The path of the shared library ``name`` (``"libcublas"``) among the lines of a process's
    ``/proc/self/maps``, or None: the file whose name is ``name.so`` or ``name.so.<version>`` (not a
    sibling such as ``libcublasLt.so.13``)."""
    paths = set()
    for line in maps:
        fields = line.split()
        if len(fields) >= 6:
            base = fields[-1].rsplit("/", 1)[-1]
            if base == f"{name}.so" or base.startswith(f"{name}.so."):
                paths.add(fields[-1])
    return sorted(paths)[0] if paths else None


@functools.lru_cache(maxsize=1)
def cublas_library():
    """libcublas as loaded by CuPy, opened with :mod:`ctypes` (for calls CuPy does not make, such as
    cuBLAS within a CUDA stream capture: :mod:`shallow.cnn._cublas`), or None without a device.

    The copy that CuPy loaded, found by its path in this process's memory maps (a soname such as
    ``libcublas.so.12`` could name another copy, of another CUDA major version than CuPy's: CuPy
    14 for CUDA 13 loads ``libcublas.so.13``), else by the soname of CuPy's CUDA major version.
    """
    cupy = _cupy()
    if cupy is None:
        return None
    import ctypes

    with contextlib.suppress(Exception):  # creates CuPy's handle: libcublas is then loaded in any CuPy
        cupy.cuda.device.get_cublas_handle()
    with contextlib.suppress(ImportError):  # loads libcublas into the process (CuPy 13 and 14)
        importlib.import_module("cupy_backends.cuda.libs.cublas")
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        path = _mapped_library("libcublas", maps)
        if path is not None:
            return ctypes.CDLL(path)
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    for soname in (f"libcublas.so.{major}", "libcublas.so"):
        with contextlib.suppress(OSError):
            return ctypes.CDLL(soname)
    return None


def scipy_for(xp, submodule: str) -> ModuleType:
    """``scipy.<submodule>`` for numpy arrays, ``cupyx.scipy.<submodule>`` for cupy ones.

    For the routines both provide on their own device (``special.erf``, ``special.ndtr``,
    ``linalg.solve_triangular``, ...): the caller keeps its arrays where they are.
    """
    return importlib.import_module(f"scipy.{submodule}" if xp is np else f"cupyx.scipy.{submodule}")


def linalg_errors(xp):
    """A context in which xp's linear algebra raises ``numpy.linalg.LinAlgError`` where it fails.

    numpy's does anyway (a null context); cupy's returns what the solver left (a failed Cholesky
    factorisation, say, as finite garbage) unless ``cupyx.errstate(linalg="raise")`` is in force.
    """
    if xp is np:
        return contextlib.nullcontext()
    return importlib.import_module("cupyx").errstate(linalg="raise")


def available_devices() -> tuple[str, ...]:
    """The devices usable here: ``("cpu",)`` or ``("cpu", "gpu")``."""
    return DEVICES if gpu_available() else DEVICES[:1]


def is_cupy(x) -> bool:
    """True when ``x`` is a CuPy array (without importing cupy when it is not).

    Parameters
    ----------
    x : object
        Anything; only the top-level package of its type's module is read.

    Returns
    -------
    bool
        Whether ``type(x)`` comes from the ``cupy`` package.
    """
    return type(x).__module__.split(".")[0] == "cupy"


def get_xp(*arrays) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) of the given arrays.

    Parameters
    ----------
    *arrays : arrays, Python scalars, lists or None
        None, Python scalars and (nested) lists or tuples are ignored: they are host data that
        either module converts. With no array at all the answer is numpy.

    Returns
    -------
    module
        ``numpy`` or ``cupy``.

    Raises
    ------
    TypeError
        When the arrays come from different libraries (say numpy and cupy), naming them.

    Examples
    --------
    >>> import numpy as np
    >>> get_xp(np.ones(3), None, 2.0) is np
    True
    """
    candidates = [x for x in arrays
                  if x is not None and not isinstance(x, (bool, int, float, complex, list, tuple))]
    if not candidates:
        return np
    # Fast path for the common all-numpy case (array_namespace costs a few microseconds).
    if all(isinstance(x, (np.ndarray, np.generic)) for x in candidates):
        return np
    from array_api_compat import array_namespace, is_cupy_namespace, is_numpy_namespace

    try:
        ns = array_namespace(*candidates)
    except TypeError as err:
        kinds = sorted({type(x).__module__.split(".")[0] + "." + type(x).__name__ for x in candidates})
        raise TypeError(f"arrays from different libraries cannot be mixed: got {', '.join(kinds)}; "
                        "move them to one device first with shallow.backend.to_device") from err
    if is_numpy_namespace(ns):
        return np
    if is_cupy_namespace(ns):
        return importlib.import_module("cupy")
    raise TypeError(f"unsupported array library {ns.__name__!r}: shallow runs on numpy and cupy")


def to_numpy(x):
    """A numpy copy (or view) of ``x`` on the host; numpy arrays and scalars pass through.

    Parameters
    ----------
    x : array_like
        A CuPy array (copied to the host with ``x.get()``), or anything :func:`numpy.asarray` takes.

    Returns
    -------
    numpy.ndarray
        Of x's shape and dtype; ``x`` itself for a numpy array, a 0-d array for a scalar.
    """
    if is_cupy(x):
        return x.get()
    return np.asarray(x)


def array_digest(*arrays) -> str:
    """A SHA-256 hex digest of the arrays' dtypes, shapes and values (read on the host), to tell
    whether a saved run used the same data: equal arrays give equal digests on every device."""
    digest = hashlib.sha256()
    for x in arrays:
        host = np.ascontiguousarray(to_numpy(x))
        digest.update(f"{host.dtype.str}{host.shape}".encode())
        digest.update(host.tobytes())
    return digest.hexdigest()


def sum_of_squares_parts(arrays) -> tuple[float, int]:
    """(S, e) with the sum of the squares of all entries of ``arrays`` = S 4^e, for any scale: the
    squares of 2^-e a in float64, 2^e bounding the largest modulus (no overflow; what underflows is
    below 1e-300 of the largest square). A norm is ldexp(sqrt(S), e); a ratio of norms takes the
    difference of the exponents, so that it is a float wherever it is representable."""
    import math

    top = max((float(get_xp(a).abs(a).max()) for a in arrays if a.size), default=0.0)
    if top == 0.0:
        return 0.0, 0
    e = math.frexp(top)[1]
    total = 0.0
    for a in arrays:
        xp = get_xp(a)
        b = xp.ldexp(a.astype(np.float64, copy=False).ravel(), -e)
        total += float(xp.vdot(b, b))
    return total, e


def row_norms(X):
    """The Euclidean norm of each row of a 2-D array (numpy or cupy), in X's dtype, without the
    overflow (beyond 1e154 in float64) or underflow (below 1e-154) of the squared entries: each row
    is scaled by the power of 2 of its largest entry, exactly, and its norm scaled back.

    Parameters
    ----------
    X : array of shape (n, k), k >= 1
        Numpy or cupy; not validated (a row of zeros gives 0; inf or NaN entries give inf or NaN).

    Returns
    -------
    array of shape (n,)
        On X's device, in X's floating dtype (float64 for an integer X).

    Raises
    ------
    ValueError
        From numpy, for k = 0 (a maximum over no entries); an AxisError (a ValueError) for a 1-D X.
    """
    xp = get_xp(X)
    _, e = xp.frexp(xp.abs(X).max(axis=1))  # (n,) max_j |x_ij| = f 2^e, f in [1/2, 1)
    return xp.ldexp(xp.linalg.norm(xp.ldexp(X, -e[:, None]), axis=1), e)


def device_of(x) -> str:
    """``"gpu"`` for a CuPy array, ``"cpu"`` otherwise.

    Parameters
    ----------
    x : object
        An array, or anything else (which is on the host).

    Returns
    -------
    {"cpu", "gpu"}
    """
    return "gpu" if is_cupy(x) else "cpu"


def to_device(x, device: str):
    """Move an array to ``device`` ("cpu" or "gpu"), keeping its dtype.

    Parameters
    ----------
    x : array_like
        Numpy or cupy array, or anything :func:`numpy.asarray` takes.
    device : {"cpu", "gpu"}
        Where the result lives.

    Returns
    -------
    array
        ``to_numpy(x)`` for "cpu" (x itself when already a numpy array); ``cupy.asarray(x)`` for
        "gpu" (x itself when already on the current device). Shape and dtype are x's.

    Raises
    ------
    ValueError
        For an unknown device name.
    RuntimeError
        For ``device="gpu"`` where :func:`gpu_available` is False, saying why it might be.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return to_numpy(x)
    cupy = _cupy()
    if cupy is None:
        raise RuntimeError(f"device='gpu' was asked for but no GPU is usable here: {gpu_unavailable_reason()}")
    return cupy.asarray(x)
