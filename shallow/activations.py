r"""Activation functions sigma, their derivatives sigma', and their Funk-Hecke coefficients.

An :class:`Activation` is an immutable, hashable value: ``get_activation("relu_power", alpha=2)``
evaluates sigma and sigma' on numpy or cupy arrays (dtype and device kept), knows whether sigma is
positively homogeneous (its ``homogeneity``), and computes the Funk-Hecke coefficients

    mu_k(sigma) = int_{-1}^{1} sigma(t) P_{k,d}(t) w_d(t) dt,   k = 0, ..., kmax,

so that int sigma(<x, y>) Y_k(y) dtau_d(y) = mu_k Y_k(x) for every degree-k spherical harmonic
Y_k on S^{d-1} (conventions of :mod:`shallow.harmonics`: P_{k,d}(1) = 1, tau_d the uniform
probability measure, w_d the density of <x, e>).

Known activations (``ACTIVATIONS``):

=============  ==========================================  ===========  ========================
name           sigma(z)                                    homogeneity  mu_k
=============  ==========================================  ===========  ========================
relu           max(z, 0)                                   1            closed form (Bach 2017)
relu_power     max(z, 0)^alpha, alpha >= 0 (0**0 := 0)     alpha        closed form (Bach 2017)
step           1{z > 0}                                    0            closed form (alpha = 0)
abs            |z| = relu(z) + relu(-z)                    1            (1 + (-1)^k) mu_k(relu)
quadratic      z^2                                         2            only k = 0, 2
sigmoid        1 / (1 + e^{-z})                            None         quadrature
tanh           tanh z                                      None         quadrature
erf            erf z                                       None         quadrature
softplus       log(1 + e^z)                                None         quadrature
gelu           z Phi(z) = z (1 + erf(z / sqrt 2)) / 2      None         quadrature
=============  ==========================================  ===========  ========================

``relu_power`` with alpha = 1 takes the values of ``relu`` and with alpha = 0 those of ``step``,
but they are distinct objects (equality is by name and parameters).

Conventions at the kinks (sets of measure zero, where no choice changes an integral):
step(0) = 0, relu'(0) = 0, step' = 0 everywhere (its distributional derivative, a Dirac mass, is
not represented), abs'(0) = sign(0) = 0, and (relu^alpha)'(0) = 0 for every alpha, including
0 < alpha < 1 where the one-sided derivative is infinite.

References
----------
1. F. Bach, "Breaking the curse of dimensionality with convex neural networks", JMLR 18 (2017),
   arXiv:1412.8690, Appendix D.2 (Funk-Hecke coefficients of max(0, t)^alpha; Bach's sphere S^d
   lives in R^{d+1}, so his d is our d - 1).
2. K. Atkinson and W. Han, "Spherical Harmonics and Approximations on the Unit Sphere", 2012,
   Theorem 2.22 (Funk-Hecke formula).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import special

from ._validation import check_array, check_dimension, check_integer
from .backend import get_xp, scipy_for, to_numpy
from .harmonics import _check_breakpoints, project_zonal
from .sphere import _log_gamma_ratio

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "get_activation",
    "as_activation",
    "funk_hecke",
]

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# Elementwise functions, written once against xp (numpy or cupy).
# --------------------------------------------------------------------------------------------

def _special(fn, z):
    """A function of scipy.special (``erf``, ``ndtr``) on numpy or cupy arrays.

    numpy has neither: scipy.special serves on the host, cupyx.scipy.special on the device (a CuPy
    without it makes a round trip to the host and back).
    """
    xp = get_xp(z)
    if xp is np:
        return fn(z)
    try:
        device_fn = getattr(scipy_for(xp, "special"), fn.__name__, None)
    except ImportError:  # pragma: no cover - a CuPy without cupyx.scipy.special
        device_fn = None
    if device_fn is not None:
        return xp.asarray(device_fn(z), dtype=z.dtype)
    return xp.asarray(fn(to_numpy(z)), dtype=z.dtype)


def _positive_part_power(xp, z, alpha):
    """max(z, 0)^alpha with the convention 0^alpha = 0 for every alpha >= 0 (so step(0) = 0)."""
    positive = z > 0
    if alpha == 0:
        return positive.astype(z.dtype)
    if alpha == 1:
        return xp.maximum(z, 0)
    if alpha == 2:
        r = xp.maximum(z, 0)
        return r * r
    # Evaluate the power on a safe base: no 0**negative, no NaN from negative**fraction.
    return xp.where(positive, xp.where(positive, z, 1) ** alpha, 0)


def _relu(xp, z, p):
    return xp.maximum(z, 0)


def _relu_prime(xp, z, p):
    return (z > 0).astype(z.dtype)


def _relu_power(xp, z, p):
    return _positive_part_power(xp, z, p["alpha"])


def _relu_power_prime(xp, z, p):
    alpha = p["alpha"]
    if alpha == 0:
        return xp.zeros_like(z)
    # alpha max(z, 0)^(alpha - 1), and 0 at z <= 0 (also for alpha < 1, where it blows up at 0+).
    return alpha * _positive_part_power(xp, z, alpha - 1)


def _step(xp, z, p):
    return (z > 0).astype(z.dtype)


def _zero(xp, z, p):
    return xp.zeros_like(z)


def _abs(xp, z, p):
    return xp.abs(z)


def _sign(xp, z, p):
    return xp.sign(z)


def _quadratic(xp, z, p):
    return z * z


def _quadratic_prime(xp, z, p):
    return 2 * z


def _sigmoid(xp, z, p):
    # 1 / (1 + e^{-z}) = exp(-log(1 + e^{-z})): no overflow for z -> -infinity.
    return xp.exp(-xp.logaddexp(0, -z))


def _sigmoid_prime(xp, z, p):
    # s (1 - s) = exp(-log(1 + e^{-z}) - log(1 + e^{z})), accurate in both tails.
    return xp.exp(-xp.logaddexp(0, -z) - xp.logaddexp(0, z))


def _tanh(xp, z, p):
    return xp.tanh(z)


def _tanh_prime(xp, z, p):
    # sech^2 z = 1 / cosh^2 z: 1 - tanh^2 z rounds to 0 beyond |z| ~ 19 (9 in float32), where
    # sech^2 z ~ 4 e^{-2|z|} is still representable, and loses its relative accuracy well before.
    # cosh overflows to inf (1/inf = 0, the right answer) beyond |z| ~ 710 (89 in float32).
    with np.errstate(over="ignore"):
        s = xp.asarray(xp.cosh(z))
    xp.reciprocal(s, out=s)
    s *= s
    return s


def _erf_fn(xp, z, p):
    return _special(special.erf, z)


def _erf_prime(xp, z, p):
    return _TWO_OVER_SQRT_PI * xp.exp(-z * z)


def _softplus(xp, z, p):
    return xp.logaddexp(0, z)


def _gelu(xp, z, p):
    # Phi = ndtr, accurate in both tails: (1 + erf(z / sqrt 2)) / 2 cancels for z < 0 (0 instead of
    # Phi(-10) = 7.6e-24). Below z = -40, z Phi(z) underflows (Phi(-40) = 4e-350): z is clipped
    # there, the same numbers, so that gelu(-inf) = 0 and not -inf * 0 = NaN.
    z = xp.maximum(z, -40.0)
    return z * _special(special.ndtr, z)


def _gelu_prime(xp, z, p):
    # d/dz [z Phi(z)] = Phi(z) + z phi(z); beyond |z| = 40 Phi(z) is 0 or 1 and z phi(z) underflows:
    # z is clipped there (the same numbers), so that gelu'(+-inf) = 1, 0 and not inf * 0 = NaN.
    z = xp.clip(z, -40.0, 40.0)
    return _special(special.ndtr, z) + z * (_INV_SQRT_2PI * xp.exp(-0.5 * z * z))


# --------------------------------------------------------------------------------------------
# Closed-form Funk-Hecke coefficients.
# --------------------------------------------------------------------------------------------

def _relu_power_funk_hecke(alpha, d, kmax):
    """mu_k of max(0, t)^alpha on S^{d-1}, k = 0..kmax, for real alpha > -1 (Bach 2017, App. D.2).

    mu_k = Gamma(alpha + 1) Gamma(d/2) / (2^{alpha+1} Gamma(1 + (alpha - k)/2) Gamma((alpha + k + d)/2)),

    that is (Legendre's duplication formula for Gamma(alpha + 1))

        mu_0 = Gamma((alpha + 1)/2) Gamma(d/2) / (2 sqrt(pi) Gamma((alpha + d)/2)),
        mu_1 = Gamma(alpha/2 + 1) Gamma(d/2) / (2 sqrt(pi) Gamma((alpha + 1 + d)/2)),
        mu_{k+2} = mu_k (alpha - k) / (alpha + k + d),

    with the ratios of Gamma(d/2) by ``shallow.sphere._log_gamma_ratio`` (a difference of log-gammas lost
    d log(d) eps: 6e-10 relative at d = 10^6) and a product of the ratios along each parity (k eps
    at worst), which gives the exact zeros (k > alpha and k - alpha even) from the one zero ratio.
    Every ratio has |ratio| < 1 (|mu_k| <= mu_0 since sigma >= 0 and |P_{k,d}| <= 1): the products
    only underflow where mu_k does. alpha in (-1, 0) serves the derivative of relu^(alpha+1).
    """
    x = 0.5 * d
    log_2_sqrt_pi = math.log(2.0 * math.sqrt(math.pi))
    mu0 = math.exp(special.gammaln(0.5 * (alpha + 1)) - log_2_sqrt_pi - _log_gamma_ratio(x, 0.5 * alpha))
    mu1 = math.exp(special.gammaln(0.5 * alpha + 1) - log_2_sqrt_pi - _log_gamma_ratio(x, 0.5 * (alpha + 1)))
    k = np.arange(max(kmax - 1, 0), dtype=np.float64)
    ratio = (alpha - k) / (alpha + k + d)  # (kmax - 1,) mu_{k+2} / mu_k
    mu = np.empty(kmax + 1)  # (kmax + 1,)
    mu[0::2] = np.cumprod(np.concatenate([[mu0], ratio[0::2]]))
    mu[1::2] = np.cumprod(np.concatenate([[mu1], ratio[1::2]]))[: (kmax + 1) // 2]
    return mu + 0.0  # -0.0 (a zero times a negative ratio) becomes 0.0


def _fh_relu(p, d, kmax):
    return _relu_power_funk_hecke(1.0, d, kmax)


def _fh_relu_power(p, d, kmax):
    return _relu_power_funk_hecke(p["alpha"], d, kmax)


def _fh_step(p, d, kmax):
    return _relu_power_funk_hecke(0.0, d, kmax)


def _fh_abs(p, d, kmax):
    # |t| = relu(t) + relu(-t), and g(-t) has coefficients (-1)^k mu_k(g) since P_{k,d}(-t) = (-1)^k P_{k,d}(t).
    k = np.arange(kmax + 1)
    return np.where(k % 2 == 0, 2 * _relu_power_funk_hecke(1.0, d, kmax), 0.0)


def _fh_quadratic(p, d, kmax):
    # t^2 = 1/d + (1 - 1/d) P_{2,d}(t), and g = sum_k mu_k N(d, k) P_{k,d} with N(d, 2) = (d + 2)(d - 1)/2:
    # mu_0 = E[t^2] = 1/d, mu_2 = 2 / (d (d + 2)).
    mu = np.zeros(kmax + 1)
    mu[0] = 1.0 / d
    if kmax >= 2:
        mu[2] = 2.0 / (d * (d + 2))
    return mu


def _homog_none(p):
    return None


# name -> (value, derivative, homogeneity(params), breakpoints, closed-form mu_k or None, parameters)
_REGISTRY = {
    "relu": (_relu, _relu_prime, lambda p: 1, (0.0,), _fh_relu, ()),
    "relu_power": (_relu_power, _relu_power_prime, lambda p: p["alpha"], (0.0,), _fh_relu_power, ("alpha",)),
    "step": (_step, _zero, lambda p: 0, (0.0,), _fh_step, ()),
    "abs": (_abs, _sign, lambda p: 1, (0.0,), _fh_abs, ()),
    "quadratic": (_quadratic, _quadratic_prime, lambda p: 2, (), _fh_quadratic, ()),
    "sigmoid": (_sigmoid, _sigmoid_prime, _homog_none, (), None, ()),
    "tanh": (_tanh, _tanh_prime, _homog_none, (), None, ()),
    "erf": (_erf_fn, _erf_prime, _homog_none, (), None, ()),
    "softplus": (_softplus, _sigmoid, _homog_none, (), None, ()),
    "gelu": (_gelu, _gelu_prime, _homog_none, (), None, ()),
}

ACTIVATIONS = tuple(_REGISTRY)
"""The names :func:`get_activation` knows."""


def _check_params(name, params):
    """Validated parameters of activation ``name`` as a sorted tuple of (key, float) pairs."""
    expected = _REGISTRY[name][5]
    unknown = sorted(set(params) - set(expected))
    missing = [key for key in expected if key not in params]
    if unknown or missing:
        takes = f"takes the parameter(s) {', '.join(expected)}" if expected else "takes no parameters"
        raise ValueError(f"activation {name!r} {takes}, got {sorted(params) or 'none'}")
    out = {}
    if name == "relu_power":
        alpha = params["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            raise ValueError(f"alpha must be a real number >= 0, got {alpha!r}")
        alpha = float(alpha)
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite real number >= 0, got {alpha}")
        out["alpha"] = alpha
    return tuple(sorted(out.items()))


def _rebuild(name, params):
    return Activation(name, **dict(params))


class Activation:
    """An activation sigma with its derivative, homogeneity and Funk-Hecke coefficients.

    Immutable and hashable; two activations are equal when their names and parameters are.
    Build one with :func:`get_activation`.

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.
    **params
        ``alpha`` (real, >= 0) for ``"relu_power"``; no parameter for the others.

    Attributes
    ----------
    name : str
    params : dict
        A copy of the parameters (``{"alpha": 2.0}`` or ``{}``).
    homogeneity : int, float or None
        The degree a with sigma(lambda z) = lambda^a sigma(z) for every lambda > 0 and z, when
        sigma is positively homogeneous (relu 1, relu_power alpha, step 0, abs 1, quadratic 2);
        None otherwise.
    breakpoints : tuple of float
        Points where sigma is not smooth (``(0.0,)`` for the relu family, step and abs).
    has_closed_form : bool
        Whether :meth:`funk_hecke` uses a closed form rather than quadrature.

    Examples
    --------
    >>> import numpy as np
    >>> sigma = get_activation("relu_power", alpha=2)
    >>> sigma
    Activation('relu_power', alpha=2.0)
    >>> sigma(np.array([-1.0, 3.0])).tolist(), sigma.derivative(np.array([-1.0, 3.0])).tolist()
    ([0.0, 9.0], [0.0, 6.0])
    >>> sigma.homogeneity, get_activation("tanh").homogeneity
    (2.0, None)
    """

    __slots__ = ("_name", "_params")

    def __init__(self, name, **params):
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, one of {', '.join(ACTIVATIONS)}; got {type(name).__name__}")
        if name not in _REGISTRY:
            raise ValueError(f"unknown activation name {name!r}; known names: {', '.join(ACTIVATIONS)}")
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_params", _check_params(name, params))

    def __setattr__(self, key, value):
        raise AttributeError(f"Activation objects are immutable (cannot set {key!r})")

    def __delattr__(self, key):
        raise AttributeError(f"Activation objects are immutable (cannot delete {key!r})")

    def __reduce__(self):
        return (_rebuild, (self._name, self._params))

    def __repr__(self):
        args = "".join(f", {key}={value!r}" for key, value in self._params)
        return f"Activation({self._name!r}{args})"

    def __eq__(self, other):
        if not isinstance(other, Activation):
            return NotImplemented
        return (self._name, self._params) == (other._name, other._params)

    def __hash__(self):
        return hash(("Activation", self._name, self._params))

    @property
    def name(self) -> str:
        return self._name

    @property
    def params(self) -> dict:
        return dict(self._params)

    @property
    def homogeneity(self):
        return _REGISTRY[self._name][2](dict(self._params))

    @property
    def breakpoints(self) -> tuple:
        return _REGISTRY[self._name][3]

    @property
    def has_closed_form(self) -> bool:
        return _REGISTRY[self._name][4] is not None

    def __call__(self, z):
        """sigma(z), elementwise.

        Parameters
        ----------
        z : array_like of any shape
            numpy or cupy; float32 and float64 are kept, integers become float64.

        Returns
        -------
        array of z's shape, dtype and device
        """
        return self._apply(0, z)

    def derivative(self, z):
        """sigma'(z), elementwise, with the conventions of the module at kinks (0 there).

        Parameters
        ----------
        z : array_like of any shape
            numpy or cupy; float32 and float64 are kept, integers become float64.

        Returns
        -------
        array of z's shape, dtype and device
        """
        return self._apply(1, z)

    def _apply(self, which, z):
        """The registry's function ``which`` (0: sigma, 1: sigma') on z, keeping dtype and device."""
        z = check_array(z, "z", finite=False)
        xp = get_xp(z)
        return xp.asarray(_REGISTRY[self._name][which](xp, z, dict(self._params)), dtype=z.dtype)

    def funk_hecke(self, d, kmax, *, q=None):
        """Funk-Hecke coefficients mu_k(sigma) on S^{d-1}, k = 0, ..., kmax.

        Parameters
        ----------
        d : int
            Ambient dimension, d >= 2.
        kmax : int
            Highest degree, kmax >= 0.
        q : int, optional
            Quadrature nodes per piece for the activations without closed form (see
            :func:`shallow.harmonics.project_zonal`); ignored for closed forms.

        Returns
        -------
        mu : numpy array of shape (kmax + 1,)

        Notes
        -----
        mu_k = int_{-1}^{1} sigma(t) P_{k,d}(t) w_d(t) dt. For sigma = max(0, t)^alpha
        (Reference 1 of the module, in our convention)

            mu_k = Gamma(alpha + 1) Gamma(d/2) / (2^{alpha+1} Gamma(1 + (alpha - k)/2) Gamma((alpha + k + d)/2)),

        exactly 0 when k > alpha and k - alpha is even, and |mu_k| ~ k^{-(d/2 + alpha)} otherwise.
        """
        d = check_dimension(d)
        kmax = check_integer(kmax, "kmax", minimum=0)
        if q is not None:
            q = check_integer(q, "q", minimum=1)
        closed = _REGISTRY[self._name][4]
        if closed is not None:
            return closed(dict(self._params), d, kmax)
        return project_zonal(self, d, kmax, breakpoints=self.breakpoints, q=q)


def get_activation(name, **params) -> Activation:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`), with its parameters.

    Parameters
    ----------
    name : str
        ``"relu"``, ``"relu_power"``, ``"step"``, ``"abs"``, ``"quadratic"``, ``"sigmoid"``,
        ``"tanh"``, ``"erf"``, ``"softplus"`` or ``"gelu"``.
    **params
        ``alpha`` (real, >= 0) for ``"relu_power"``.

    Returns
    -------
    Activation

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones), a missing or unexpected
        parameter, or alpha < 0.
    TypeError
        For a name that is not a string.

    Examples
    --------
    >>> get_activation("relu")
    Activation('relu')
    >>> get_activation("relu_power", alpha=0.5).homogeneity
    0.5
    """
    return Activation(name, **params)


def as_activation(sigma, name: str = "sigma") -> Activation:
    """``sigma`` as an :class:`Activation`: a name (no parameters) or an Activation passes.

    Parameters
    ----------
    sigma : str or Activation
        A name from :data:`ACTIVATIONS` (built as ``Activation(sigma)``, without parameters), or an
        :class:`Activation`, returned as it is.
    name : str
        The argument's name in the TypeError message, default "sigma".

    Returns
    -------
    Activation

    Raises
    ------
    TypeError
        For anything else (a plain callable included), naming the argument ``name``.
    ValueError
        From :class:`Activation`, for an unknown name or one that needs parameters
        (``"relu_power"``: use :func:`get_activation`).
    """
    if isinstance(sigma, Activation):
        return sigma
    if isinstance(sigma, str):
        if sigma not in _REGISTRY:  # Activation's own message names its parameter, "name"
            raise ValueError(f"{name} must be an activation name, one of {', '.join(ACTIVATIONS)}; got {sigma!r}")
        return Activation(sigma)
    raise TypeError(f"{name} must be an activation name ({', '.join(ACTIVATIONS)}) or an Activation "
                    f"from get_activation, got {type(sigma).__name__}")


def funk_hecke(sigma, d, kmax, *, breakpoints=(), q=None):
    """Funk-Hecke coefficients mu_k(sigma), k = 0, ..., kmax, of an activation on S^{d-1}.

    Argument order: sigma, then the dimension d, then the highest degree kmax, as in N(d, k)
    (DESIGN.md); :func:`shallow.harmonics.legendre` takes the degree first, after P_{k,d}.
    Keyword calls are accepted: ``funk_hecke("relu", d=3, kmax=2)``.

    Parameters
    ----------
    sigma : str, Activation or callable
        A name from :data:`ACTIVATIONS` (without parameters; use :func:`get_activation` for
        ``relu_power``), an :class:`Activation`, or any vectorised callable of t in [-1, 1]
        (numpy in, numpy out), which is integrated by quadrature.
    d : int
        Ambient dimension, d >= 2.
    kmax : int
        Highest degree, kmax >= 0.
    breakpoints : sequence of float, optional
        For a callable: the points of (-1, 1) where it is not smooth. Activations know theirs (checked,
        then unused).
    q : int, optional
        Quadrature nodes per piece (see :func:`shallow.harmonics.project_zonal`).

    Returns
    -------
    mu : numpy array of shape (kmax + 1,)

    Raises
    ------
    TypeError
        For a sigma that is neither a name, an Activation nor a callable.
    ValueError
        For an unknown name or one that needs parameters, d or kmax out of range, breakpoints
        outside (-1, 1), and as :func:`shallow.harmonics.project_zonal` for a callable.

    Notes
    -----
    mu_k = int_{-1}^{1} sigma(t) P_{k,d}(t) w_d(t) dt, so that sigma(<x, y>) =
    sum_k mu_k N(d, k) P_{k,d}(<x, y>) in L2(tau_d) and the operator with kernel sigma(<x, y>)
    multiplies degree-k harmonics by mu_k.

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Appendix D.2.

    Examples
    --------
    >>> np.round(funk_hecke("relu", 3, 3), 12).tolist()     # d = 3: 1/4, 1/6, 1/16, 0
    [0.25, 0.166666666667, 0.0625, 0.0]
    >>> np.round(funk_hecke("relu", d=3, kmax=2), 12).tolist()   # by keyword
    [0.25, 0.166666666667, 0.0625]
    """
    cuts = _check_breakpoints(breakpoints)  # also for an activation: wrong ones passed without a word
    if isinstance(sigma, (str, Activation)):
        return as_activation(sigma).funk_hecke(d, kmax, q=q)
    if callable(sigma):
        d = check_dimension(d)
        kmax = check_integer(kmax, "kmax", minimum=0)
        return project_zonal(sigma, d, kmax, breakpoints=cuts, q=q)
    raise TypeError(f"sigma must be an activation name, an Activation or a callable, got {type(sigma).__name__}")
