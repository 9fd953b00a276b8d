"""The backend: numpy always, cupy only where a CUDA device answers, never a silent mix."""

import subprocess
import sys

import numpy as np
import pytest

from shallow import backend


def test_get_xp_numpy_for_numpy_arrays_scalars_and_none():
    assert backend.get_xp(np.ones(2), 3.0, None, np.float32(1)) is np
    assert backend.get_xp() is np


def test_get_xp_refuses_a_mix_of_array_libraries():
    array_api_strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="cannot be mixed"):
        backend.get_xp(np.ones(2), array_api_strict.ones(2))


def test_to_device_rejects_unknown_device():
    with pytest.raises(ValueError, match="device must be one of"):
        backend.to_device(np.ones(2), "tpu")


def test_to_numpy_round_trip_keeps_values_and_dtype(xp):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    device = "gpu" if xp is not np else "cpu"
    y = backend.to_device(x, device)
    assert backend.get_xp(y) is xp
    back = backend.to_numpy(y)
    assert back.dtype == np.float32 and np.array_equal(back, x)


def test_gpu_unavailable_when_disabled_by_environment():
    code = "from shallow import backend; print(backend.gpu_available(), backend.available_devices())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "SHALLOW_DISABLE_CUPY": "1"}).stdout
    assert out.strip() == "False ('cpu',)"


def test_gpu_request_without_gpu_raises_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", lambda: None)
    with pytest.raises(RuntimeError, match="no GPU is usable"):
        backend.to_device(np.ones(2), "gpu")


def test_gpu_available_never_raises():
    # Here cupy may import while every CUDA call fails: the answer must be a bool, not an exception.
    assert backend.gpu_available() in (True, False)


class _FakeCupy:
    """A stand-in for the cupy module: a device that does or does not answer, and arithmetic that does or
    does not work (CuPy can import, and even report a device, while every CUDA call fails)."""

    def __init__(self, available, works):
        self._works = works
        self.cuda = type("cuda", (), {"is_available": staticmethod(lambda: available)})

    def arange(self, n):
        if not self._works:
            raise RuntimeError("cudaErrorInsufficientDriver")
        return np.arange(n)


@pytest.mark.parametrize("available, works, usable", [(True, True, True), (False, True, False),
                                                      (True, False, False), (False, False, False)])
def test_cupy_is_used_only_when_a_device_is_reported_and_answers(monkeypatch, available, works, usable):
    fake = _FakeCupy(available, works)
    monkeypatch.delenv("SHALLOW_DISABLE_CUPY", raising=False)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend._cupy.cache_clear()
    try:
        assert (backend._cupy() is fake) is usable
        assert backend.gpu_available() is usable
    finally:
        backend._cupy.cache_clear()  # the next call looks at the real cupy again


def test_import_shallow_imports_no_optional_dependency():
    code = ("import sys, shallow, shallow.sphere, shallow.harmonics, shallow.backend; "
            "shallow.backend.gpu_available() if False else None; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'matplotlib', 'dask', 'torch')]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lists_are_host_data_for_get_xp_and_validation():
    from shallow._validation import check_points

    assert backend.get_xp([1.0, 2.0], (3.0,)) is np
    X = check_points([[1, 2], [3, 4]], "X")
    assert isinstance(X, np.ndarray) and X.dtype == np.float64


def test_seed_lists_give_reproducible_independent_streams():
    from shallow._validation import check_random_state

    a = check_random_state([3, 1]).standard_normal(4)
    assert np.array_equal(a, check_random_state([3, 1]).standard_normal(4))
    assert not np.array_equal(a, check_random_state([3, 2]).standard_normal(4))
    with pytest.raises(TypeError, match="rng must be"):
        check_random_state([1.5])


def test_array_digest_tells_equal_arrays_from_arrays_differing_in_a_value_dtype_or_shape():
    from shallow.backend import array_digest
    x = np.arange(6.0)
    assert array_digest(x, x[:2]) == array_digest(x.copy(), np.array([0.0, 1.0]))
    spaced = np.zeros(12)
    spaced[::2] = x
    assert array_digest(spaced[::2]) == array_digest(x)  # a strided view of the same values
    changed = x.copy()
    changed[3] += 1e-12
    others = [changed, x.astype(np.float32), x.reshape(2, 3), x[:5]]
    assert len({array_digest(x), *(array_digest(o) for o in others)}) == 1 + len(others)
    assert array_digest(x, x) != array_digest(x)  # the number of arrays counts too


def test_row_norms_neither_overflow_nor_underflow_and_equal_the_plain_norm_elsewhere():
    # reference: math.hypot, which scales internally (exact to an ulp or so)
    import math

    from shallow.backend import row_norms
    rng = np.random.default_rng(4)
    X = rng.standard_normal((5, 3)) * np.array([[1e-200], [1e200], [1.0], [3e-5], [0.0]])
    expected = np.array([math.hypot(*row) for row in X])
    np.testing.assert_allclose(row_norms(X), expected, rtol=4e-16)
    ordinary = rng.standard_normal((4, 6))
    assert np.array_equal(row_norms(ordinary), np.linalg.norm(ordinary, axis=1))  # a power of 2 scales exactly


def test_row_norms_of_rows_mixing_huge_and_tiny_entries():
    # each row is scaled by its LARGEST entry: 1e200 next to 1e-200 (and next to 0) neither overflows
    # nor loses the large entry; reference math.hypot
    import math

    from shallow.backend import row_norms
    X = np.array([[1e200, 1e-200, 3e199], [0.0, 1e-300, -2e-300], [5e-310, 1e300, 0.0]])
    np.testing.assert_allclose(row_norms(X), [math.hypot(*row) for row in X], rtol=4e-16)


def test_sum_of_squares_parts_is_the_exact_sum_of_squares_at_any_scale():
    """S 4^e = sum of the squares of every entry of every array, against exact rational arithmetic
    (fractions), for arrays of scales 2^-600 to 2^600 together, empty and zero arrays among them,
    float32 ones included; with 2^e bounding the largest modulus (2^(e-1) <= max |a| < 2^e)."""
    from fractions import Fraction

    from shallow.backend import sum_of_squares_parts
    rng = np.random.default_rng(5)
    for scales in ([0.0], [-600.0], [600.0], [-600.0, 0.0, 3.0], [500.0, -500.0]):
        arrays = [np.ldexp(rng.standard_normal(7), int(s)) for s in scales]
        arrays += [np.zeros(3), np.empty(0), rng.standard_normal(4).astype(np.float32)]
        S, e = sum_of_squares_parts(arrays)
        exact = sum(Fraction(float(v)) ** 2 for a in arrays for v in a.ravel())
        assert S == pytest.approx(float(exact / Fraction(4) ** e), rel=1e-15), scales
        top = max(float(np.abs(a).max()) for a in arrays if a.size)
        assert 2.0 ** (e - 1) <= top < 2.0 ** e
    assert sum_of_squares_parts([np.array([1.0, -0.5])]) == (1.25 / 4, 1)  # largest modulus exactly 1 = 2^0
    assert sum_of_squares_parts([np.zeros(4), np.empty(0)]) == (0.0, 0)
    assert sum_of_squares_parts([]) == (0.0, 0)


def test_backend_is_the_only_module_that_imports_cupy():
    # STYLE.md: only shallow/backend.py touches cupy; the others get the module from get_xp or a backend accessor.
    # An import statement anywhere, functions included (cnn/_fused.py had `import cupy` in a function)
    import ast
    from pathlib import Path

    root = Path(backend.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                  in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
                names = [str(node.args[0].value)]  # importlib.import_module("cupy"), as backend.py does
            else:
                continue
            if any(name.split(".")[0] in ("cupy", "cupy_backends", "cupyx") for name in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {"backend.py"}  # the scan sees backend.py's own imports


@pytest.mark.parametrize("value, usable", [("", True), ("0", True), ("1", False), ("yes", False)])
def test_shallow_disable_cupy_hides_a_working_cupy_unless_empty_or_0(monkeypatch, value, usable):
    fake = _FakeCupy(True, True)
    monkeypatch.setenv("SHALLOW_DISABLE_CUPY", value)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend._cupy.cache_clear()
    try:
        assert backend.gpu_available() is usable
        assert backend.available_devices() == (("cpu", "gpu") if usable else ("cpu",))
    finally:
        backend._cupy.cache_clear()



@pytest.mark.parametrize("cupy_module, disable, reason", [
    ("working", "1", "SHALLOW_DISABLE_CUPY=1 hides CuPy"),
    (None, "", "CuPy is not installed (pip install -e '.[gpu]')"),
    ("no device", "", "CuPy is installed but no CUDA device answers"),
    ("working", "", None),
])
def test_gpu_unavailable_reason_names_the_cause_of_each_way_to_lose_the_gpu(monkeypatch, cupy_module, disable,
                                                                           reason):
    # `--device gpu` on a machine without one said only "not available here"; the message now names the cause
    import importlib.machinery

    fake = None
    if cupy_module is not None:
        fake = _FakeCupy(available=cupy_module == "working", works=True)
        fake.__spec__ = importlib.machinery.ModuleSpec("cupy", None)  # found by importlib.util.find_spec
    monkeypatch.setenv("SHALLOW_DISABLE_CUPY", disable)
    monkeypatch.setitem(sys.modules, "cupy", fake)  # None: `import cupy` raises ImportError, find_spec finds none
    backend._cupy.cache_clear()
    try:
        got = backend.gpu_unavailable_reason()
        assert got == reason if reason is None else got.startswith(reason), got
        if reason is not None:
            with pytest.raises(RuntimeError, match="no GPU is usable here: " + __import__("re").escape(reason)):
                backend.to_device(np.ones(2), "gpu")
    finally:
        backend._cupy.cache_clear()

def test_a_cupy_that_raises_at_import_leaves_the_cpu(monkeypatch, tmp_path):
    # a broken CUDA install raises at `import cupy` (a RuntimeError, an OSError of a missing library), not an
    # ImportError: gpu_available must still answer False rather than raise
    (tmp_path / "cupy.py").write_text("raise RuntimeError('CUDA driver version is insufficient')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.delenv("SHALLOW_DISABLE_CUPY", raising=False)
    backend._cupy.cache_clear()
    try:
        assert backend.gpu_available() is False and backend.available_devices() == ("cpu",)
    finally:
        backend._cupy.cache_clear()


def test_cublas_library_is_found_by_its_file_name_among_the_memory_maps():
    """The copy of libcublas that CuPy loaded is read from /proc/self/maps by its file name,
    whatever its CUDA major version, and not confused with libcublasLt beside it."""
    maps = [
        "7f0a1000-7f0a2000 r-xp 00000000 08:01 1234  /venv/nvidia/cu13/lib/libcublasLt.so.13",
        "7f0b1000-7f0b2000 r-xp 00000000 08:01 1235  /venv/nvidia/cu13/lib/libcublas.so.13",
        "7f0b2000-7f0b3000 r--p 00010000 08:01 1235  /venv/nvidia/cu13/lib/libcublas.so.13",
        "7f0c1000-7f0c2000 rw-p 00000000 00:00 0",
        "7f0d1000-7f0d2000 r-xp 00000000 08:01 99  /opt/lib/libcublas_extra.so",
    ]
    assert backend._mapped_library("libcublas", maps) == "/venv/nvidia/cu13/lib/libcublas.so.13"
    assert backend._mapped_library("libcublas", maps[:1] + maps[3:]) is None
    assert backend._mapped_library("libcublas", ["1-2 r-xp 0 08:01 7  /usr/lib/libcublas.so"]) == "/usr/lib/libcublas.so"


@pytest.mark.gpu
@pytest.mark.cuda
def test_a_failed_cholesky_on_cupy_raises_within_linalg_errors_and_lazy_gets_none():
    """CuPy's Cholesky of an indefinite matrix returns what potrf left unless cupyx.errstate(linalg="raise")
    is in force: within linalg_errors it raises numpy's LinAlgError, and shallow.lazy's factorisation is None
    (the fake device replaces linalg_errors, so only a GPU runs this branch)."""
    import cupy

    from shallow import lazy
    A = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1: no Cholesky factor
    with pytest.raises(np.linalg.LinAlgError), backend.linalg_errors(cupy):
        cupy.linalg.cholesky(cupy.asarray(A))
    assert lazy._cholesky(cupy, cupy.asarray(A)) is None
    B = A + 2 * np.eye(2)  # eigenvalues 5 and 1
    L = backend.to_numpy(lazy._cholesky(cupy, cupy.asarray(B)))
    np.testing.assert_allclose(L @ L.T, B, rtol=1e-14)  # a 2 x 2 factorisation: a few roundings
