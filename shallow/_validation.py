"""Input checks shared by every public routine: each error names the argument and what was expected."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .backend import get_xp

__all__ = [
    "check_random_state",
    "check_integer",
    "check_dimension",
    "check_array",
    "check_points",
    "check_on_sphere",
    "sphere_tolerance",
    "check_positive",
    "check_nonnegative",
    "check_float_dtype",
    "check_finite_labels",
    "check_bool",
    "check_symmetric",
    "cast_within_range",
]


_RNG_ACCEPTED = ("None, a non-negative int seed, a non-empty list or tuple of non-negative int seeds, a numpy "
                 "SeedSequence or a numpy Generator")


def check_random_state(rng) -> np.random.Generator:
    """A numpy Generator from ``rng`` (None, a non-negative int seed, a non-empty list or tuple of non-negative int
    seeds, a numpy SeedSequence, or a Generator, returned as it is; numpy's legacy RandomState is refused).

    The same seed gives the same numbers everywhere: samplers draw on the host with this
    generator and move the result to the device afterwards.

    Of what :func:`numpy.random.default_rng` takes, a BitGenerator, an array of seeds and an empty list
    are refused (TypeError naming what is accepted), and a negative int seed (ValueError).
    """
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(rng, bool):
            raise TypeError(f"rng must be {_RNG_ACCEPTED}, got {rng!r}")
        if isinstance(rng, numbers.Integral) and rng < 0:
            raise ValueError(f"rng must be a non-negative int seed, got {rng}")
        return np.random.default_rng(rng)
    if isinstance(rng, (list, tuple)) and rng and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in rng):
        return np.random.default_rng(list(rng))  # entropy from several seeds, e.g. [seed, point]
    if isinstance(rng, np.random.Generator):
        return rng
    got = repr(rng) if isinstance(rng, (list, tuple)) else type(rng).__name__  # a list: which seed is wrong
    raise TypeError(f"rng must be {_RNG_ACCEPTED}, got {got}")


def check_integer(value, name: str, minimum: int | None = 0, maximum: int | None = None) -> int:
    """``value`` as a Python int, checking that it is an integer in [minimum, maximum].

    Examples
    --------
    >>> check_integer(3, "k")
    3
    >>> check_integer(-1, "k")
    Traceback (most recent call last):
    ...
    ValueError: k must be an integer >= 0, got -1
    """
    bounds = ""
    if minimum is not None:
        bounds += f" >= {minimum}"
    if maximum is not None:
        bounds += (" and" if bounds else "") + f" <= {maximum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{bounds}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer{bounds}, got {value}")
    return value


def check_positive(value, name: str) -> float:
    """``value`` as a Python float, checking that it is a positive finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_nonnegative(value, name: str) -> float:
    """``value`` as a Python float, checking that it is a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_bool(value, name: str) -> bool:
    """``value`` as a Python bool, refusing anything but True or False (a string "no" is not False)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_finite_labels(y: np.ndarray, name: str = "y") -> np.ndarray:
    """Host labels ``y`` of any dtype, refused when float labels are NaN or infinite (each NaN would
    make a class of its own in ``np.unique``)."""
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(y)).sum())} NaN or infinite label(s)")
    return y


def check_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """A numpy dtype that must be float32 or float64 (the two the library computes in)."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{name} must be float32 or float64, got {dtype}")
    return dtype


def cast_within_range(x, dtype, name: str, computes: str):
    """``x`` cast to ``dtype``, refusing finite entries beyond its range, which the cast would make
    infinite (a float64 1e39 in a float32 network or model: its outputs and gradients became inf or
    NaN, or the input was said to contain infinities it did not have).

    Only a narrowing cast of floats is checked, O(size) and only when the cast gave a non-finite
    entry; ``computes`` names what computes in ``dtype`` ("the network") for the message.
    """
    dtype = np.dtype(dtype)
    if x.dtype == dtype:  # nothing to cast (astype(copy=False) would return x itself)
        return x
    with np.errstate(over="ignore"):  # numpy's "overflow in cast" warning: the error below says more
        y = x.astype(dtype, copy=False)
    if x.dtype.kind == "f" and y.dtype.itemsize < x.dtype.itemsize and y.size:
        xp = get_xp(y)
        if not bool(xp.isfinite(y).all()) and bool(xp.isfinite(x).all()):
            raise ValueError(f"{name} has values up to {float(xp.abs(x).max()):.3g} in absolute value, beyond the "
                             f"largest {dtype.name} ({float(np.finfo(dtype).max):.3g}), the dtype {computes} computes "
                             "in: build it in float64 (or rescale the data)")
    return y


def check_dimension(d, name: str = "d") -> int:
    """The ambient dimension d >= 2 of the sphere S^{d-1} (d = 2 is the circle)."""
    return check_integer(d, name, minimum=2)


def check_array(x, name: str, *, ndim: int | tuple[int, ...] | None = None, finite: bool = True,
                real: bool = True):
    """``x`` as a floating array of numpy or cupy (kept on its device), with shape and NaN checks.

    Integer and boolean inputs are promoted to float64, float16 to float32 (the library computes in
    float32 or float64: a float16 kernel overflowed at |x| = 300); float32 and float64 are kept, and so
    are complex64 and complex128 with ``real=False``.
    """
    if isinstance(x, (str, bytes, dict, set)):
        raise ValueError(f"{name} must be an array of real numbers, got {type(x).__name__}")
    xp = get_xp(x)
    try:
        x = xp.asarray(x)
    except ValueError as err:  # a ragged nested sequence
        raise ValueError(f"{name} must be a rectangular array of numbers: {err}") from None
    if xp.iscomplexobj(x):
        if real:
            raise ValueError(f"{name} must be real, got dtype {x.dtype}")
    elif not xp.issubdtype(x.dtype, xp.floating):
        if not (xp.issubdtype(x.dtype, xp.integer) or x.dtype == bool):
            raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
        x = x.astype(xp.float64)
    elif x.dtype == xp.float16:
        x = x.astype(xp.float32)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(k) for k in allowed)
            raise ValueError(f"{name} must be a {want}-dimensional array, got shape {tuple(x.shape)}")
    if finite and x.size and not bool(xp.isfinite(x).all()):
        bad = int((~xp.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return x


def check_symmetric(K, name: str, what: str = "a Gram matrix") -> float:
    """Refuse a square array that is not symmetric up to rounding: max |K - K^T| > sqrt(eps) max |K|.

    A kernel's Gram matrix is symmetric; a cross-kernel K(X, Y) or a transposed test block passed in
    its place is not, and symmetrising it would silently give another kernel. Returns max |K| (0 for
    an empty array), which callers may use as the scale of their own tolerances.
    """
    xp = get_xp(K)
    if K.size == 0:
        return 0.0
    asymmetry, scale = float(xp.abs(K - K.T).max()), float(xp.abs(K).max())
    if asymmetry > math.sqrt(float(np.finfo(K.dtype).eps)) * scale:
        raise ValueError(f"{name} must be symmetric ({what}): max |{name} - {name}^T| = {asymmetry:.3g} "
                         f"for max |{name}| = {scale:.3g}")
    return scale


def check_points(X, name: str = "X", d: int | None = None):
    """A finite (n, d) array of points, checking d when given."""
    X = check_array(X, name, ndim=2)
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{name} has shape {tuple(X.shape)} but d={d} coordinates were expected")
    if X.shape[1] < 1:
        raise ValueError(f"{name} must have at least one coordinate, got shape {tuple(X.shape)}")
    return X


def check_samples(X, y):
    """Regression data: X a finite (n, d) array of n >= 1 points, y a finite (n,) array of targets on X's device."""
    X = check_points(X, "X")
    y = check_array(y, "y", ndim=1)
    get_xp(X, y)  # one device: a mix of numpy and cupy is refused there
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} entries but X has n={X.shape[0]} rows: one target per point")
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one sample, got n=0")
    return X, y


def sphere_tolerance(dtype) -> float:
    """Tolerance on | |x| - 1 | for a point on the sphere: sqrt(eps) of its dtype.

    That is 1.5e-8 in float64 and 3.5e-4 in float32: loose enough for points normalised in the
    same precision, tight enough to catch unnormalised data.
    """
    return float(np.sqrt(np.finfo(dtype).eps))


def check_on_sphere(X, name: str = "X", d: int | None = None, atol: float | None = None):
    """A finite (n, d) array whose rows have unit norm within ``atol`` (default: sphere_tolerance)."""
    X = check_points(X, name, d)
    if X.shape[1] < 2:
        raise ValueError(f"{name} must have d >= 2 coordinates to lie on S^(d-1), got shape {tuple(X.shape)}")
    xp = get_xp(X)
    tol = sphere_tolerance(X.dtype) if atol is None else atol
    if X.shape[0]:
        dev = float(xp.abs(xp.linalg.norm(X, axis=1) - 1).max())
        if dev > tol:
            coarse = X.dtype == np.float64 and dev <= sphere_tolerance(np.float32)
            hint = (" (rows normalised in float32 and cast to float64, say: normalise them in float64)" if coarse
                    else " (normalise with X / |X|, or use shallow.sphere.lift for data in R^d)")
            raise ValueError(f"{name} must lie on the unit sphere: a row has | |x| - 1 | = {dev:.3g} > {tol:.3g}"
                             f"{hint}")
    return X
