"""A fake device backend: numpy arrays dressed as CuPy ones, to find host calls on device data on a CPU.

Every numerical routine of shallow must run on numpy and on CuPy (:mod:`shallow.backend`). Without a GPU
the CuPy paths never run, and a ``numpy.asarray(x)`` or ``scipy.special.f(x)`` on a device array goes
unnoticed. Here :class:`DeviceArray` wraps a numpy array the way a CuPy array wraps device memory:

* it is not a numpy array: ``numpy.asarray``, ``numpy.array``, numpy functions that cupy lacks, and any
  scipy function called on it raise :class:`DeviceLeak` (a TypeError) naming the call and the line of
  shallow that made it, as CuPy's ``__array__`` raises. A numpy ufunc, or a numpy function that cupy also
  defines, runs (CuPy forwards them through ``__array_ufunc__``/``__array_function__``) and is recorded
  in :data:`leaks` as a style fault; ``SHALLOW_FAKE_DEVICE_STRICT=1`` refuses them too;
* mixing it with a numpy array (``x + host``, ``fake.stack([x, host])``) raises as CuPy does;
* reductions and scalar indexing return 0-d device arrays (CuPy's semantics), ``float``/``int``/``bool``/
  ``.item()``/``.get()``/``.tolist()`` bring values to the host;
* those transfers (each a device-to-host synchronisation on a GPU: the host waits for every kernel queued
  before it) are counted, with the line of shallow that made them, within :func:`count_syncs`: ``float``,
  ``int``, ``bool`` (``if x > 0:``), ``complex``, ``operator.index`` (``range(x)``), ``.item()``,
  ``.tolist()``, ``.get()``, ``cupy.asnumpy``, ``repr``/``str``/``format`` (printing), and the calls whose
  result's shape depends on the data, which CuPy reads first: indexing with a boolean device mask and
  :data:`DATA_SHAPED` (``nonzero``, ``unique``, ...).

:data:`fake` is the stand-in for the ``cupy`` module (its functions return :class:`DeviceArray`), and
:func:`install` patches :mod:`shallow.backend` (``get_xp``, ``is_cupy``, ``_cupy``, ``scipy_for``,
``linalg_errors``, ...) and every binding of those names in the loaded ``shallow`` modules, so that the
library takes its CuPy paths on fake arrays. What only a GPU has (``cupy.cuda``, ``RawKernel``,
``ElementwiseKernel``, cuBLAS handles, CUDA graphs) is absent: ``device_gemm``, ``cuda_runtime`` and
``cublas_library`` answer None, so the library's generic fallbacks run.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import os
import sys
import traceback
import types
import weakref

import numpy as np

__all__ = ["DeviceArray", "DeviceLeak", "count_syncs", "fake", "install", "leaks", "to_fake", "FORWARDED_BY_CUPY"]

#: Where a call on device data was refused or looked suspicious: (kind, call, location) -> count.
leaks: collections.Counter = collections.Counter()

#: numpy functions that real CuPy would run on device data anyway (through ``__array_function__`` or
#: ``__array_ufunc__``): a leak report naming one of these is a style fault (``np.f`` instead of
#: ``xp.f``), not a crash on a GPU. Filled lazily from the fake namespace's coverage of numpy.
FORWARDED_BY_CUPY = "numpy ufuncs, and numpy functions that cupy also defines"

#: Refuse the forwarded calls too (``SHALLOW_FAKE_DEVICE_STRICT=1``): every ``np.f(device)`` raises.
STRICT = os.environ.get("SHALLOW_FAKE_DEVICE_STRICT") == "1"

# numpy names that cupy does not provide: reaching for them through ``xp`` fails on a GPU.
_ABSENT = {
    "errstate", "seterr", "geterr", "seterrcall", "geterrcall", "nditer", "ndenumerate", "ndindex", "ma", "char",
    "rec", "memmap", "emath", "longdouble", "float128", "complex256", "clongdouble", "frompyfunc", "testing",
    "genfromtxt", "ctypeslib", "matrix", "asmatrix", "busday_count", "datetime64", "timedelta64", "object_",
    "str_", "bytes_", "void", "RawKernel", "RawModule", "ElementwiseKernel", "ReductionKernel", "fuse", "cuda",
}
#: cupy functions (and ndarray methods) whose result's shape depends on the values: CuPy reads a count from the
#: device first, a synchronisation like ``float(x)``.
DATA_SHAPED = {"nonzero", "flatnonzero", "argwhere", "unique", "extract", "compress"}
# cupy functions that take host data (lists, numpy arrays) and copy it to the device.
_HOST_INPUT = {"asarray", "array", "asanyarray", "ascontiguousarray", "asfortranarray", "copyto"}

_SHALLOW = os.sep + "shallow" + os.sep
_HERE = os.path.abspath(__file__)


_sync_counters: list = []  # the counters of the count_syncs() blocks now open


@contextlib.contextmanager
def count_syncs():
    """Count the device-to-host synchronisations made within (module notes).

    Yields a :class:`collections.Counter` of (call, file:line (function) of shallow) -> count, filled
    as the block runs; ``sum(counter.values())`` is the number of times a GPU would have made the host
    wait. Blocks may nest: each counts what runs inside it.
    """
    counter = collections.Counter()
    _sync_counters.append(counter)
    try:
        yield counter
    finally:
        _sync_counters.remove(counter)


def _sync(call: str) -> None:
    """A device-to-host transfer: counted by every open :func:`count_syncs`."""
    if _sync_counters:
        where = _where(skip=os.path.join("shallow", "backend.py"))  # the caller of to_numpy, not to_numpy
        for counter in _sync_counters:
            counter[(call, where)] += 1


_owners = weakref.WeakValueDictionary()  # id of a numpy array -> the device array that wraps it


class DeviceLeak(TypeError):
    """Device data reached numpy or scipy (what CuPy refuses, or forwards only for some functions)."""


def _where(skip: str = "") -> str:
    """file:line (function) of the innermost frame of the shallow package on the stack (outside ``skip``, a file)."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if _SHALLOW in frame.filename and os.path.abspath(frame.filename) != _HERE \
                and not (skip and frame.filename.endswith(skip)):
            path = frame.filename[frame.filename.rindex(_SHALLOW) + 1:]
            return f"{path}:{frame.lineno} ({frame.name})"
    return "<outside shallow>"


def _note(kind: str, call: str) -> str:
    where = _where()
    leaks[(kind, call, where)] += 1
    return where


def _refuse(kind: str, call: str):
    where = _note(kind, call)
    raise DeviceLeak(f"{call} on a device array at {where}: {kind}")


class DeviceArray:
    """A numpy array posing as a CuPy array (module notes). ``self._a`` is the numpy array it wraps."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 1000  # as CuPy: numpy defers binary operators to us
    __hash__ = None

    def __init__(self, a):
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        self._a = a
        if _owners.get(id(a)) is None:
            _owners[id(a)] = self

    @property
    def base(self):
        """The device array this one is a view of (the same object every time, as CuPy's), or None."""
        b = self._a.base
        if not isinstance(b, np.ndarray):
            return None
        owner = _owners.get(id(b))
        return owner if owner is not None and owner._a is b else DeviceArray(b)

    @property
    def data(self):
        """CuPy's MemoryPointer, reduced to its ``ptr`` (the address of the first element)."""
        return types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0])

    # what a host library reaches for ---------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        _refuse("implicit device-to-host conversion (cupy's __array__ raises TypeError)", "numpy.asarray/__array__")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        numpy_ufunc = getattr(np, ufunc.__name__, None) is ufunc
        if numpy_ufunc and method == "__call__" and not any(isinstance(x, np.ndarray) for x in inputs):
            # CuPy forwards a numpy ufunc on device data to its own ufunc: it runs on a GPU.
            if not any(isinstance(x, np.generic) for x in inputs):  # (np.float64(2) * x also lands here)
                _forwarded(f"numpy.{ufunc.__name__}")
            return getattr(fake, ufunc.__name__)(*inputs, **kwargs)
        name = (f"numpy.{ufunc.__name__}" if numpy_ufunc
                else f"{ufunc.__name__} (a ufunc of scipy or another host library)")
        _refuse("host ufunc on device data (TypeError on a GPU)", f"{name}.{method}" if method != "__call__" else name)

    def __array_function__(self, func, types_, args, kwargs):
        name = f"{func.__module__}.{func.__name__}"
        target = _in_cupy(func)
        if target is None:
            _refuse("numpy function with no cupy counterpart on device data (TypeError on a GPU)", name)
        _forwarded(name)
        return target(*args, **kwargs)

    # cupy's own -----------------------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        _sync("ndarray.get")
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        self._a[...] = arr

    @property
    def device(self):
        return "fake-gpu"

    # numpy's attributes and methods, on device ---------------------------------------------------
    def __getattr__(self, name):
        if name.startswith("__"):  # __array_interface__, __array_struct__, __dlpack__: what numpy would read
            raise AttributeError(name)
        if name in ("ctypes", "tofile", "setflags", "itemset", "newbyteorder", "dumps", "dump", "tobytes"):
            _refuse("ndarray attribute that cupy lacks", f"ndarray.{name}")
        value = getattr(self._a, name)
        if name in ("item", "tolist"):
            _sync(f"ndarray.{name}")
        if callable(value):
            return _wrap_callable(value, f"ndarray.{name}")
        return _wrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (DeviceArray(np.asarray(v)) for v in self._a)

    def __bool__(self):
        _sync("bool")
        return bool(self._a)

    def __float__(self):
        _sync("float")
        return float(self._a)

    def __int__(self):
        _sync("int")
        return int(self._a)

    def __complex__(self):
        _sync("complex")
        return complex(self._a)

    def __index__(self):
        _sync("operator.index")
        return self._a.__index__()

    def __repr__(self):
        _sync("repr")
        return "fake_device_" + repr(self._a)

    __str__ = __repr__

    def __format__(self, spec):
        _sync("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __getitem__(self, key):
        if any(isinstance(k, DeviceArray) and k.dtype == bool for k in (key if isinstance(key, tuple) else (key,))):
            _sync("ndarray.__getitem__ (boolean mask)")
        return _wrap(self._a[_unwrap(key, "ndarray.__getitem__", host_ok=True)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim:
            _note("numpy array assigned into a device array (an implicit host-to-device copy)", "ndarray.__setitem__")
        self._a[_unwrap(key, "ndarray.__setitem__", host_ok=True)] = _unwrap(value, "ndarray.__setitem__", host_ok=True)

    def __copy__(self):
        return DeviceArray(self._a.copy())

    def __deepcopy__(self, memo):
        return DeviceArray(self._a.copy())

    def __reduce__(self):
        return (DeviceArray, (self._a,))


_INPLACE = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__", "__iand__",
            "__ior__", "__ixor__", "__imatmul__"}


def _binary(name):
    def method(self, *others):
        out = getattr(self._a, name)(*_unwrap(others, f"ndarray.{name}"))
        if out is NotImplemented:
            return out
        if name in _INPLACE:
            return self
        return _wrap(out)

    method.__name__ = name
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__",
              "__rmatmul__", "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__lshift__",
              "__rshift__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__iadd__", "__isub__",
              "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__",
              "__imatmul__", "__neg__", "__pos__", "__abs__", "__invert__", "__divmod__", "__rdivmod__"):
    setattr(DeviceArray, _name, _binary(_name))


def _unwrap(obj, call, host_ok=False):
    """The numpy arrays inside ``obj`` (for a call into numpy); a numpy array there is a mix, refused."""
    if isinstance(obj, DeviceArray):
        return obj._a
    if isinstance(obj, np.ndarray):
        if not host_ok and obj.ndim > 0:
            _refuse("numpy array passed where cupy needs a device array (cupy raises TypeError)", call)
        return obj
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_unwrap(x, call, host_ok) for x in obj)
    if isinstance(obj, list):
        return [_unwrap(x, call, host_ok) for x in obj]
    return obj


def _wrap(obj):
    """Device arrays for the arrays (and numpy scalars: 0-d arrays on cupy) in a result of numpy."""
    if isinstance(obj, np.ndarray):
        return DeviceArray(obj)
    if isinstance(obj, np.generic) and not isinstance(obj, (np.str_, np.bytes_, np.void)):
        return DeviceArray(np.asarray(obj))
    if isinstance(obj, tuple):
        items = [_wrap(x) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [_wrap(x) for x in obj]
    return obj


def _wrap_callable(fn, call, host_input=False):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if call.rpartition(".")[2] in DATA_SHAPED:
            _sync(call)
        out_arg = kwargs.get("out")
        result = fn(*_unwrap(args, call, host_input), **{k: _unwrap(v, call, host_input) for k, v in kwargs.items()})
        if isinstance(out_arg, DeviceArray) and result is out_arg._a:
            return out_arg
        if call in ("ndarray.item", "ndarray.tolist") or call.endswith((".item", ".tolist")):
            return result
        return _wrap(result)

    return run


class _Ufunc:
    """A numpy ufunc on device arrays (``__call__``, ``reduce``, ``accumulate``, ``at``, ``outer``)."""

    def __init__(self, ufunc, call):
        self._u, self._call = ufunc, call
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _wrap_callable(self._u, self._call)(*args, **kwargs)

    def __getattr__(self, name):
        value = getattr(self._u, name)
        return _wrap_callable(value, f"{self._call}.{name}") if callable(value) else value


class _Namespace(types.ModuleType):
    """A fake of ``cupy`` (or of one of its submodules, or of ``cupyx.scipy.<name>``) over a host module."""

    def __init__(self, name, host, absent=frozenset(), present=None):
        super().__init__(name)
        self._host, self._absent, self._present = host, absent, present

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._absent or (self._present is not None and name not in self._present):
            _note(f"{self.__name__} has no attribute {name!r} (AttributeError on a GPU)", f"{self.__name__}.{name}")
            raise AttributeError(f"module {self.__name__!r} (fake) has no attribute {name!r}")
        value = getattr(self._host, name)
        call = f"{self.__name__}.{name}"
        if isinstance(value, np.ufunc):
            value = _Ufunc(value, call)
        elif isinstance(value, types.ModuleType):
            value = _Namespace(call, value)
        elif callable(value) and not isinstance(value, type):
            value = _wrap_callable(value, call, host_input=name in _HOST_INPUT)
        setattr(self, name, value)
        return value


def _asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, DeviceArray):
        _sync("cupy.asnumpy")
        return np.array(a._a, order=order, copy=True)
    return np.asarray(a)


fake = _Namespace("cupy", np, absent=_ABSENT)
fake.ndarray = DeviceArray
fake.asnumpy = _asnumpy
fake.get_array_module = lambda *arrays: fake if any(isinstance(a, DeviceArray) for a in arrays) else np
fake.linalg = _Namespace("cupy.linalg", np.linalg, absent={"LinAlgError", "eig", "eigvals", "multi_dot", "cond"})
fake.random = _Namespace("cupy.random", np.random)
fake.fft = _Namespace("cupy.fft", np.fft)

# The routines of cupyx.scipy.<name> (a subset of scipy's): anything else is absent on a GPU.
_CUPYX = {
    "special": {"erf", "erfc", "erfcx", "erfinv", "erfcinv", "ndtr", "ndtri", "log_ndtr", "gamma", "gammaln",
                "loggamma", "digamma", "polygamma", "beta", "betaln", "i0", "i0e", "i1", "i1e", "k0", "k0e", "k1",
                "k1e", "j0", "j1", "y0", "y1", "yn", "expit", "logit", "log_expit", "xlogy", "xlog1py", "entr",
                "rel_entr", "kl_div", "huber", "pseudo_huber", "zeta", "zetac", "lpmv", "sph_harm", "gammainc",
                "gammaincc", "gammaincinv", "gammainccinv", "hyp2f1", "hyp1f1", "hyp0f1", "exp1", "expi", "expn",
                "poch", "softmax", "log_softmax", "logsumexp", "sinc", "cbrt", "exp2", "exp10", "expm1", "log1p",
                "cosm1", "round", "boxcox", "boxcox1p", "inv_boxcox", "inv_boxcox1p", "ellipk", "ellipkm1", "ellipj",
                "bdtr", "bdtrc", "bdtri", "btdtr", "btdtri", "chdtr", "chdtrc", "chdtri", "fdtr", "fdtrc", "fdtri",
                "gdtr", "gdtrc", "nbdtr", "nbdtrc", "nbdtri", "pdtr", "pdtrc", "pdtri", "stdtr", "binom",
                "spherical_yn", "struve", "modstruve", "sici", "shichi", "dawsn", "wofz", "voigt_profile",
                "gammasgn", "multigammaln", "spence", "eval_legendre", "eval_chebyt", "eval_chebyu",
                "eval_gegenbauer", "eval_jacobi", "eval_laguerre", "eval_hermite", "eval_hermitenorm"},
    "linalg": {"solve_triangular", "lu_factor", "lu_solve", "lu", "cho_factor", "cho_solve", "block_diag", "expm",
               "tri", "tril", "triu", "toeplitz", "circulant", "hankel", "kron", "companion", "hilbert", "dft",
               "fiedler", "leslie", "khatri_rao", "invhilbert", "helmert", "hadamard", "lstsq", "pinv", "inv",
               "solve", "svd", "qr", "eigh", "norm", "det"},
    "ndimage": None, "signal": None, "fft": None, "sparse": None, "stats": None, "interpolate": None,
}


@functools.cache
def _cupyx_scipy(submodule):
    return _Namespace(f"cupyx.scipy.{submodule}", importlib.import_module(f"scipy.{submodule}"),
                      present=_CUPYX.get(submodule, set()))


def _in_cupy(func):
    """The fake cupy function that real CuPy forwards numpy's ``func`` to, or None where cupy has none."""
    parts = [p for p in func.__module__.split(".")[1:] if not p.startswith("_")]
    namespace = fake
    for part in parts:
        if part not in ("linalg", "fft", "random"):
            break
        namespace = getattr(fake, part)
    try:
        return getattr(namespace, func.__name__) if hasattr(np if namespace is fake else namespace._host,
                                                           func.__name__) else None
    except AttributeError:
        return None


def _forwarded(call):
    """A numpy call on device data that CuPy would forward: recorded (style: ``xp.`` was meant), or refused
    with ``SHALLOW_FAKE_DEVICE_STRICT=1``."""
    if STRICT:
        _refuse("numpy function on device data (cupy forwards it: use xp.)", call)
    _note("numpy call on device data that cupy forwards (works on a GPU; xp. was meant)", call)


def to_fake(x):
    """A device array of ``x`` (a copy), as ``cupy.asarray``."""
    return DeviceArray(np.array(x._a if isinstance(x, DeviceArray) else x, copy=True))


def _is_fake(x) -> bool:
    return isinstance(x, DeviceArray)


def _get_xp(original):
    def get_xp(*arrays):
        candidates = [x for x in arrays
                      if x is not None and not isinstance(x, (bool, int, float, complex, list, tuple))]
        if any(isinstance(x, DeviceArray) for x in candidates):
            hosts = sorted({type(x).__module__.split(".")[0] + "." + type(x).__name__
                            for x in candidates if not isinstance(x, DeviceArray)})
            if hosts:  # array_api_compat refuses numpy arrays and numpy scalars beside cupy arrays
                _note("numpy data mixed with device arrays in get_xp (TypeError on a GPU)",
                      "get_xp(" + ", ".join(hosts) + ")")
                raise TypeError("arrays from different libraries cannot be mixed: got cupy.ndarray, "
                                f"{', '.join(hosts)}; move them to one device first with shallow.backend.to_device")
            return fake
        return original(*arrays)

    return get_xp


def install(monkeypatch):
    """Make :mod:`shallow.backend` (and the names imported from it) treat :class:`DeviceArray` as CuPy arrays."""
    import pkgutil

    import shallow
    from shallow import backend

    for info in pkgutil.walk_packages(shallow.__path__, "shallow."):  # bind the patched names everywhere
        if info.name not in ("shallow.cli", "shallow.__main__"):
            importlib.import_module(info.name)
    monkeypatch.setitem(sys.modules, "cupy", fake)  # a test's own ``import cupy``

    def scipy_for(xp, submodule):
        return _cupyx_scipy(submodule) if xp is fake else importlib.import_module(f"scipy.{submodule}")

    def linalg_errors(xp):
        return contextlib.nullcontext()  # the fake's numpy linear algebra raises LinAlgError itself

    replacements = {
        "_cupy": lambda: fake,
        "get_xp": _get_xp(backend.get_xp),
        "is_cupy": _is_fake,
        "scipy_for": scipy_for,
        "linalg_errors": linalg_errors,
        "device_gemm": lambda: None,
        "cuda_runtime": lambda: None,
        "cublas_library": lambda: None,
        "gpu_available": lambda: True,
        "gpu_unavailable_reason": lambda: None,
        "available_devices": lambda: backend.DEVICES,
    }
    originals = {name: getattr(backend, name) for name in replacements}
    for modname, module in list(sys.modules.items()):
        if not (modname == "shallow" or modname.startswith("shallow.")) or module is None:
            continue
        for name, new in replacements.items():
            if getattr(module, name, None) is originals[name]:
                monkeypatch.setattr(module, name, new)
