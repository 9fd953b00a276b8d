r"""Barron norms, integral representations by neurons, and Maurey's sampling argument.

Fourier convention (used everywhere in this module): a function on R^d is the superposition

    f(x) = int e^{i <omega, x>} f_hat(omega) d omega,   f_hat(omega) = (2 pi)^{-d} int e^{-i <omega, x>} f(x) dx,

with no 2 pi in the exponent; the (2 pi)^{-d} sits in front of the forward transform. This is the
convention of Barron (1993). The Barron norm of f is

    C_f = int |omega| |f_hat(omega)| d omega,

with the Euclidean norm |omega| (``norm=2``, Barron 1993) or the l1 norm |omega|_1 (``norm=1``, the
seed lecture). For functions whose transform is a measure (ridge functions f(x) = g(<w, x>), whose
transform lives on the line R w) the integral is against that measure; an atom at omega = 0 has
|omega| = 0 and does not count. Since |omega|_2 <= |omega|_1 <= sqrt(d) |omega|_2, the two norms agree
within a factor sqrt(d).

Barron's theorem: for every probability measure on the ball B_r = {|x| <= r} there is a network f_m
with m sigmoidal (or step) neurons and a constant with ||f - f_m||_{L2} <= 2 r C_f / sqrt(m). The
proof is Maurey's sampling argument: write f as an expectation of bounded neurons,

    f(x) = c + M E_{theta ~ P}[ h(theta) phi_theta(x) ],   |h| <= 1,   |phi_theta| <= s on B_r,

and draw theta_1, ..., theta_m i.i.d. from P: then f_m = c + (M/m) sum_j h(theta_j) phi_{theta_j} has
E ||f - f_m||^2 <= M^2 s^2 / m. When |h| = 1 the measure M h dP is a signed measure of total
variation M and P its normalised modulus |mu| / ||mu||, and f_m is the network of the argument in
its textbook form. This module provides three such representations of a function with a
transform in closed form (:class:`GaussianTarget`):

* ``"cosine"``: f(x) = int |f_hat(omega)| cos(<omega, x> + b(omega)) d omega with
  f_hat = |f_hat| e^{i b}; M = ||f_hat||_{L1}, valid on all of R^d (random Fourier features);
* ``"step"``: on B_r, f(x) - f(0) = 2 r C_f E[h 1{<u, x> > t}] (Barron's half-space
  representation, in the proof of Theorem 1 of Reference 1); M = 2 r C_f, the bound of Barron's theorem;
* ``"relu"``: on B_r, f(x) - f(0) - <grad f(0), x> = 2 r C_{f,2} E[h relu(<u, x> - t)] with
  C_{f,2} = int |omega|^2 |f_hat| (Reference 2); M = 2 r C_{f,2} and s = r.

:func:`maurey_sample` draws the network from any of them, from a :class:`shallow.measures.Measure`
(atoms drawn with probability |c_j| / ||mu||), or from a wide network seen as a measure.

References
----------
1. A. R. Barron, "Universal approximation bounds for superpositions of a sigmoidal function",
   IEEE Trans. Inf. Theory 39(3), 1993, Theorem 1 (its proof writes f - f(0) on the ball as an
   average of steps, whence the constant 2 r C_f) and Lemma 1 (Maurey's sampling lemma).
2. J. M. Klusowski and A. R. Barron, "Approximation by combinations of ReLU and squared ReLU ridge
   functions with l1 and l0 controls", IEEE Trans. Inf. Theory 64(12), 2018, arXiv:1607.07819
   (the second moment int |omega|^2 |f_hat| for relu ridge functions).
3. F. Bach, "Breaking the curse of dimensionality with convex neural networks", JMLR 18, 2017,
   arXiv:1412.8690, Sec. 2.3 and Appendix D (F1 vs F2 norms of a single neuron).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._validation import (check_array, check_bool, check_float_dtype, check_integer, check_nonnegative, check_points,
                          check_positive, check_random_state)
from .backend import device_of, get_xp, to_device, to_numpy
from .networks import TwoLayer, _resolve_activation
from .sphere import _log_gamma_ratio

__all__ = [
    "CosineActivation",
    "COSINE",
    "GaussianTarget",
    "RidgeTarget",
    "Representation",
    "barron_norm",
    "maurey_sample",
    "maurey_bound",
    "barron_bound",
    "sample_ball",
    "single_neuron_norms",
]

_NORMS = (1, 2)
_GRID_POINTS_MAX = 10**8  # largest frequency grid barron_norm evaluates (points, not bytes)
_GRID_CHUNK = 2**16  # frequencies per call of f_hat on the grid


# --------------------------------------------------------------------------------------------
# Small validators.
# --------------------------------------------------------------------------------------------

def _finite(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _check_norm(norm):
    if isinstance(norm, bool) or not isinstance(norm, numbers.Real) or norm not in _NORMS:
        raise ValueError(f"norm must be 1 (|omega|_1, the seed's C_f) or 2 (|omega|, Barron 1993), got {norm!r}")
    return int(norm)


def _sqrt_m(m: int) -> float:
    """sqrt(m) for an integer m >= 1 of any size (math.sqrt overflows converting m beyond 1.8e308 to float)."""
    return math.sqrt(m) if m.bit_length() < 1000 else math.exp(0.5 * math.log(m))


def _directions(n, d, rng):
    """n uniform unit vectors of R^d (d = 1: random signs), on the host, shape (n, d)."""
    if d == 1:
        return rng.choice(np.array([-1.0, 1.0]), size=(n, 1))
    G = rng.standard_normal((n, d))  # (n, d)
    norms = np.linalg.norm(G, axis=1, keepdims=True)
    return G / np.where(norms > 0, norms, 1.0)


# --------------------------------------------------------------------------------------------
# The cosine as an activation (for Fourier-feature networks).
# --------------------------------------------------------------------------------------------

class CosineActivation:
    """sigma(z) = cos z, with sigma'(z) = -sin z, for networks of Fourier features.

    Not positively homogeneous (``homogeneity`` is None). A neuron with a bias,
    cos(<omega, x> + b), is one term of the Fourier representation of a real function.

    Examples
    --------
    >>> import numpy as np
    >>> COSINE(np.array([0.0, np.pi])), COSINE.derivative(np.array([0.0]))
    (array([ 1., -1.]), array([-0.]))
    """

    name = "cos"
    homogeneity = None

    def __call__(self, z):
        """sigma(z) = cos z elementwise, an array of z's shape on its device (integers become float64)."""
        z = check_array(z, "z", finite=False)
        return get_xp(z).cos(z)

    def derivative(self, z):
        """sigma'(z) = -sin z elementwise, an array of z's shape on its device (integers become float64)."""
        z = check_array(z, "z", finite=False)
        return -get_xp(z).sin(z)

    def __repr__(self):
        return "CosineActivation()"

    def __eq__(self, other):
        return isinstance(other, CosineActivation)

    def __hash__(self):
        return hash("CosineActivation")


COSINE = CosineActivation()
"""The cosine activation (an instance of :class:`CosineActivation`)."""


# --------------------------------------------------------------------------------------------
# Integral representations and Maurey sampling.
# --------------------------------------------------------------------------------------------

class Representation:
    r"""f(x) = c + <v, x> + M E_{theta ~ P}[ h(theta) sigma(<w_theta, x~>) ] on a domain.

    Parameters
    ----------
    d : int
        Input dimension, d >= 1.
    mass : float
        M > 0: the total variation of the representing measure M h dP is at most M (equal when
        |h| = 1).
    activation : str or activation object
        sigma (a name for :func:`shallow.activations.get_activation`, or an object with
        ``__call__``, ``derivative``, ``name``, ``homogeneity`` such as :data:`COSINE`).
    sampler : callable ``sampler(m, rng) -> (h, W)``
        Draws m i.i.d. parameters from P on the host: h of shape (m,) with |h| <= 1, and W of
        shape (m, D) (D = d + 1 with ``bias``, the last column being the bias).
    constant : float, default 0
        c.
    linear : array of shape (d,), optional
        v (default 0).
    radius : float, optional
        The identity holds for |x| <= radius (None: on all of R^d).
    sup : float, default 1
        s = sup over theta and the domain of |sigma(<w_theta, x~>)|: Maurey's bound is M s / sqrt(m).
    bias : bool, default True
        Inputs are augmented as x~ = (x, 1).
    name : str, optional
        A label (``"cosine"``, ``"step"``, ``"relu"``).

    Notes
    -----
    Maurey's lemma: with theta_j i.i.d. from P, f_m = c + <v, x> + (M/m) sum_j h(theta_j)
    sigma(<w_j, x~>) is unbiased and, for every probability measure on the domain,

        E ||f - f_m||^2_{L2} = (1/m) E_x Var_theta[M h sigma] <= M^2 s^2 / m.

    References
    ----------
    1. A. R. Barron, IEEE Trans. Inf. Theory 39(3), 1993, Lemma 1 and Theorem 1.
    """

    def __init__(self, d, mass, activation, sampler, *, constant=0.0, linear=None, radius=None, sup=1.0,
                 bias=True, name=""):
        self.d = check_integer(d, "d", minimum=1)
        self.mass = check_positive(mass, "mass")
        self.activation = _resolve_activation(activation)
        if not callable(sampler):
            raise ValueError(f"sampler must be a callable sampler(m, rng) -> (h, W), got {type(sampler).__name__}")
        self.sampler = sampler
        self.constant = _finite(constant, "constant")
        if linear is not None:
            linear = to_numpy(check_array(linear, "linear", ndim=1)).astype(np.float64)
            if linear.shape[0] != self.d:
                raise ValueError(f"linear has shape {linear.shape} but d={self.d}")
            if not linear.any():
                linear = None
        self.linear = linear  # (d,) or None
        self.radius = None if radius is None else check_positive(radius, "radius")
        self.sup = check_positive(sup, "sup")
        self.bias = check_bool(bias, "bias")
        self.name = str(name)

    @property
    def D(self) -> int:
        """Columns of W: d + 1 with a bias, d without."""
        return self.d + int(self.bias)

    def sample(self, m, rng=None):
        """Draw m parameters: h of shape (m,) with |h| <= 1 and W of shape (m, D), numpy float64.

        ``rng`` (None, int or numpy.random.Generator) is passed to the sampler as a Generator; the draw
        happens on the host (the same numbers on every device).
        """
        m = check_integer(m, "m", minimum=1)
        rng = check_random_state(rng)
        out = self.sampler(m, rng)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ValueError(f"sampler must return a pair (h, W), got {type(out).__name__}")
        h = to_numpy(check_array(out[0], "the sampler's h")).astype(np.float64).reshape(-1)
        W = to_numpy(check_array(out[1], "the sampler's W")).astype(np.float64)
        if h.shape != (m,) or W.shape != (m, self.D):
            raise ValueError(f"sampler returned h of shape {h.shape} and W of shape {W.shape}; expected "
                             f"({m},) and ({m}, {self.D})")
        if np.abs(h).max() > 1 + 1e-12:
            raise ValueError(f"sampler returned weights with |h| up to {np.abs(h).max():.6g} > 1")
        return h, W

    def bound(self, m) -> float:
        """Maurey's bound M s / sqrt(m) on the expected L2 error of an m-sample network."""
        m = check_integer(m, "m", minimum=1)
        return self.mass * self.sup / _sqrt_m(m)

    def __repr__(self):
        r = "R^d" if self.radius is None else f"|x| <= {self.radius:g}"
        return (f"Representation({self.name!r}, d={self.d}, mass={self.mass:.6g}, "
                f"activation={getattr(self.activation, 'name', self.activation)!r}, on {r})")


def _fixed_neurons(rep: Representation, m: int):
    """Neurons (a, W) adding c + <v, x> to a network of output scale 1/m (empty when c = v = 0)."""
    a, W = [], []
    if rep.constant != 0:
        if not rep.bias:
            raise ValueError("a representation with a constant term needs bias=True (a constant neuron)")
        row = np.zeros(rep.D)
        row[-1] = 1.0
        value = float(to_numpy(rep.activation(np.array([1.0])))[0])
        if value == 0:
            raise ValueError(f"sigma(1) = 0 for {rep.activation!r}: no constant neuron sigma(<0, x> + 1)")
        a.append(rep.constant * m / value)
        W.append(row)
    if rep.linear is not None:
        sigma = rep.activation
        if getattr(sigma, "name", None) != "relu":
            raise ValueError("a linear term <v, x> is written with relu neurons, relu(<v,x>) - relu(-<v,x>); "
                             f"the representation's activation is {getattr(sigma, 'name', sigma)!r}")
        for sign in (1.0, -1.0):
            row = np.zeros(rep.D)
            row[: rep.d] = sign * rep.linear
            a.append(sign * m)
            W.append(row)
    if not a:
        return np.zeros(0), np.zeros((0, rep.D))
    return np.array(a), np.array(W)


def maurey_sample(measure, m, rng=None, *, activation=None, bias=None, dtype=None, device=None):
    r"""An m-neuron network drawn i.i.d. from a representing measure (Maurey's sampling argument).

    Parameters
    ----------
    measure : Representation, Measure or TwoLayer
        * :class:`Representation` f = c + <v, x> + M E_P[h sigma]: draws m parameters from P;
        * :class:`shallow.measures.Measure` mu = sum_j c_j delta_{theta_j}, representing
          f(x) = int sigma(<x~, theta>) dmu(theta): draws m atoms with probabilities |c_j| / ||mu||,
          with ||mu|| = sum_j |c_j|, and gives each the weight ||mu|| sign(c_j);
        * :class:`shallow.networks.TwoLayer` with a homogeneous activation: its measure
          (:meth:`TwoLayer.to_measure`), so that a wide network is compressed to m neurons.
    m : int
        Number of sampled neurons, m >= 1.
    rng : None, int or numpy.random.Generator
        The draw happens on the host, so a seed gives the same network on every device.
    activation : str or activation object, optional
        sigma, for a Measure only (a Representation and a TwoLayer carry theirs): by default the
        measure's own ``activation``, or relu for a measure without one.
    bias : bool, optional
        For a Measure only: read the last coordinate of the atoms as a bias (inputs (x, 1));
        by default the measure's own ``bias`` (False for a measure made by hand).
    dtype : float32 or float64, optional
        Default: the dtype of the Measure or TwoLayer, float64 for a Representation.
    device : {"cpu", "gpu"}, optional
        Default: the device of the Measure or TwoLayer, "cpu" for a Representation.

    Returns
    -------
    TwoLayer
        Output scale gamma = 1/m and outer weights a_j = M h_j, so that
        f_m(x) = (M/m) sum_{j<=m} h_j sigma(<w_j, x~>) (+ c + <v, x>). The m sampled neurons come
        first; a constant term c adds one neuron sigma(<0, x> + 1) and a linear term <v, x> two relu
        neurons relu(<v, x>) - relu(-<v, x>) (so ``net.m`` is m, m + 1, m + 2 or m + 3).

    Notes
    -----
    f_m is an unbiased estimate of f, an average of m i.i.d. bounded terms, hence

        E ||f - f_m||^2_{L2(rho)} = (1/m) int Var_theta[M h(theta) sigma_theta(x)] drho(x) <= M^2 s^2 / m

    for every probability measure rho on the domain of the representation: the error decays like
    1/sqrt(m) whatever the dimension (Reference 1, Lemma 1). For Barron's step representation
    M s = 2 r C_f: Barron's bound 2 r C_f / sqrt(m) (:func:`barron_bound`).

    References
    ----------
    1. A. R. Barron, IEEE Trans. Inf. Theory 39(3), 1993, Lemma 1 (Maurey) and Theorem 1.
    2. F. Bach, arXiv:1412.8690, Sec. 2.3 (F1 functions as expectations of neurons).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.measures import Measure
    >>> mu = Measure(np.array([2.0, -1.0]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> net = maurey_sample(mu, 4, rng=0)
    >>> net.m, net.gamma, sorted(set(np.abs(net.a).tolist()))      # weights ||mu|| sign(c_j) = +-3
    (4, 0.25, [3.0])
    """
    from .measures import Measure

    m = check_integer(m, "m", minimum=1)
    rng = check_random_state(rng)
    if not isinstance(measure, Measure) and (activation is not None or bias is not None):
        # a Representation and a TwoLayer carry their sigma and bias: another one would silently be ignored
        raise ValueError(f"activation and bias are for a Measure only; a {type(measure).__name__} carries its own "
                         f"(got activation={activation!r}, bias={bias!r})")
    if dtype is None:
        dtype = measure.dtype if isinstance(measure, (TwoLayer, Measure)) else np.float64
    dtype = check_float_dtype(dtype)
    if isinstance(measure, TwoLayer):
        activation, bias = measure.activation, measure.bias
        device = measure.device if device is None else device
        measure = measure.to_measure()
    if isinstance(measure, Representation):
        h, W = measure.sample(m, rng)  # (m,), (m, D)
        a = measure.mass * h
        a_fix, W_fix = _fixed_neurons(measure, m)
        a = np.concatenate([a, a_fix])
        W = np.concatenate([W, W_fix], axis=0)
        sigma, bias = measure.activation, measure.bias
        device = "cpu" if device is None else device
    elif isinstance(measure, Measure):
        weights = to_numpy(measure.weights).astype(np.float64)
        points = to_numpy(measure.points).astype(np.float64)
        total = float(np.abs(weights).sum())
        if len(weights) == 0 or total == 0:
            raise ValueError("measure has zero total variation: there is nothing to sample")
        idx = rng.choice(len(weights), size=m, p=np.abs(weights) / total)  # (m,)
        a = total * np.sign(weights[idx])
        W = points[idx]  # (m, D)
        sigma = measure.sigma if activation is None else _resolve_activation(activation)
        bias = measure.bias if bias is None else check_bool(bias, "bias")
        device = device_of(measure.points) if device is None else device
    else:
        raise ValueError("measure must be a Representation, a shallow.measures.Measure or a TwoLayer network, "
                         f"got {type(measure).__name__}")
    a = to_device(a.astype(dtype), device)
    W = to_device(W.astype(dtype), device)
    return TwoLayer(a, W, activation=sigma, gamma=1.0 / m, bias=bias)


def maurey_bound(mass, m, sup=1.0) -> float:
    """Maurey's bound M s / sqrt(m) on the L2 error of an average of m i.i.d. draws.

    Parameters
    ----------
    mass : float
        M, the total variation of the representing measure.
    m : int
        Number of neurons, m >= 1.
    sup : float, default 1
        s, a bound on |sigma_theta(x)| over the parameters and the domain.

    Examples
    --------
    >>> maurey_bound(3.0, 100)
    0.3
    """
    return check_positive(mass, "mass") * check_positive(sup, "sup") / _sqrt_m(check_integer(m, "m", minimum=1))


def barron_bound(C_f, radius, m) -> float:
    """Barron's bound 2 r C_f / sqrt(m) on the L2 error of the best m-neuron network on the ball B_r.

    Parameters
    ----------
    C_f : float
        The Euclidean Barron norm (``norm=2``) of f, finite and >= 0 (0 for a constant f, which
        the bound then approximates exactly).
    radius : float
        r, the radius of the ball B_r = {|x| <= r}, positive and finite.
    m : int
        Number of neurons, m >= 1.

    Returns
    -------
    float
        2 r C_f / sqrt(m).

    Raises
    ------
    ValueError
        For radius not a positive finite number, C_f not a finite number >= 0, or m not an integer >= 1.

    Notes
    -----
    The bound holds for every probability measure on B_r, with f approximated up to the constant
    f(0) (Barron 1993, Theorem 1).

    Examples
    --------
    >>> barron_bound(1.5, 2.0, 36)
    1.0
    """
    return (2 * check_positive(radius, "radius") * check_nonnegative(C_f, "C_f")
            / _sqrt_m(check_integer(m, "m", minimum=1)))


def sample_ball(n, d, radius=1.0, rng=None, dtype=np.float64, device="cpu"):
    """n points uniform in the ball {|x| <= radius} of R^d: x = radius U^{1/d} u, u uniform on the sphere.

    Parameters
    ----------
    n : int
        Number of points, n >= 0.
    d : int
        Dimension, d >= 1 (d = 1: the interval [-radius, radius]).
    radius : float
        Radius of the ball, positive and finite; default 1.
    rng : None, int or numpy.random.Generator
        Source of randomness. The draw happens on the host (same numbers on every device).
    dtype : numpy dtype
        float64 (default) or float32.
    device : {"cpu", "gpu"}
        Where the returned array lives.

    Returns
    -------
    X : array of shape (n, d)
        Rows of Euclidean norm at most ``radius``.

    Raises
    ------
    ValueError
        For n or d not an integer in range, radius not a positive finite number or beyond the
        largest number of ``dtype``, or a dtype other than float32 and float64.

    Examples
    --------
    >>> X = sample_ball(5, 3, radius=2.0, rng=0)
    >>> X.shape, bool((np.linalg.norm(X, axis=1) <= 2).all())
    ((5, 3), True)
    """
    n = check_integer(n, "n", minimum=0)
    d = check_integer(d, "d", minimum=1)
    radius = check_positive(radius, "radius")
    dtype = check_float_dtype(dtype)
    if radius > float(np.finfo(dtype).max):  # the coordinates, up to radius, became inf in the cast
        raise ValueError(f"radius={radius:g} is beyond the largest {dtype.name} ({float(np.finfo(dtype).max):.3g}): "
                         "sample in float64 (or rescale)")
    rng = check_random_state(rng)
    U = _directions(n, d, rng)  # (n, d)
    r = radius * rng.random(n) ** (1.0 / d)  # (n,)
    return to_device((U * r[:, None]).astype(dtype, copy=False), device)


# --------------------------------------------------------------------------------------------
# Targets with a Fourier transform in closed form.
# --------------------------------------------------------------------------------------------

def _gaussian_abs_moment(d, order, norm):
    """E |g|_p^order for g ~ N(0, I_d), order in {0, 1, 2}, p = norm."""
    if order == 0:
        return 1.0
    if norm == 2:
        # |g| ~ chi_d: E|g| = sqrt(2) Gamma((d+1)/2) / Gamma(d/2); E|g|^2 = d. The Gamma ratio not as a
        # difference of log-gammas, which loses d log(d) eps (1e-8 relative at d = 10^8).
        if order == 1:
            return float(math.sqrt(2.0) * math.exp(_log_gamma_ratio(0.5 * d, 0.5)))
        return float(d)
    # |g|_1 = sum_i |g_i|, E|g_i| = sqrt(2/pi), E g_i^2 = 1.
    if order == 1:
        return d * math.sqrt(2.0 / math.pi)
    return d + d * (d - 1) * 2.0 / math.pi


class GaussianTarget:
    r"""The Gaussian f(x) = A exp(-|x - c|^2 / (2 s^2)) on R^d, with its Fourier transform and Barron norms.

    Parameters
    ----------
    d : int
        Dimension, d >= 1.
    scale : float, default 1
        s > 0.
    amplitude : float, default 1
        A (any nonzero real).
    center : array of shape (d,), optional
        c (default 0).

    Notes
    -----
    In the convention f(x) = int e^{i<omega, x>} f_hat(omega) d omega,

        f_hat(omega) = A (s^2 / (2 pi))^{d/2} exp(-s^2 |omega|^2 / 2) e^{-i <omega, c>},

    that is A times the density of N(0, s^{-2} I_d), times a phase. Hence the moments
    int |omega|_p^k |f_hat| = |A| E|g|_p^k / s^k with g ~ N(0, I_d):

    * k = 0: ||f_hat||_{L1} = |A|;
    * k = 1, p = 2 (Barron's C_f): |A| sqrt(2) Gamma((d+1)/2) / (Gamma(d/2) s) (the mean of chi_d),
      about |A| sqrt(d) / s;
    * k = 1, p = 1 (the seed's C_f): |A| d sqrt(2/pi) / s;
    * k = 2, p = 2: |A| d / s^2; k = 2, p = 1: |A| (d + 2 d (d - 1)/pi) / s^2.

    References
    ----------
    1. A. R. Barron, IEEE Trans. Inf. Theory 39(3), 1993 (among his examples of functions with
       finite C_f, the Gaussian, with C_f of order sqrt(d) / s).

    Examples
    --------
    >>> import numpy as np
    >>> f = GaussianTarget(3, scale=2.0)
    >>> float(f(np.zeros((1, 3)))[0]), round(f.barron_norm(norm=2), 12), round(f.barron_norm(norm=1), 12)
    (1.0, 0.797884560803, 1.196826841204)
    """

    def __init__(self, d, scale=1.0, amplitude=1.0, center=None):
        self.d = check_integer(d, "d", minimum=1)
        self.scale = check_positive(scale, "scale")
        self.amplitude = _finite(amplitude, "amplitude")
        if self.amplitude == 0:
            raise ValueError("amplitude must be nonzero (f = 0 has no representing probability measure)")
        if center is None:
            center = np.zeros(self.d)
        center = to_numpy(check_array(center, "center", ndim=1)).astype(np.float64)
        if center.shape[0] != self.d:
            raise ValueError(f"center has shape {center.shape} but d={self.d}")
        self.center = center  # (d,)

    def __repr__(self):
        return (f"GaussianTarget(d={self.d}, scale={self.scale:g}, amplitude={self.amplitude:g}, "
                f"center={'0' if not self.center.any() else self.center.tolist()})")

    def __call__(self, X):
        """f(x) for each row of X (n, d): an array of shape (n,), on X's device and in its dtype."""
        X = check_points(X, "X", d=self.d)
        xp = get_xp(X)
        c = xp.asarray(self.center, dtype=X.dtype)
        r2 = (((X - c) / self.scale) ** 2).sum(axis=1)  # |x - c|^2 / s^2 without s^2 (over- or underflows)
        return self.amplitude * xp.exp(-0.5 * r2)

    def value_at_zero(self) -> float:
        """f(0) = A exp(-|c|^2 / (2 s^2))."""
        z = self.center / self.scale  # (d,) c / s, not |c|^2 / s^2 with s^2 under- or overflowing
        return self.amplitude * math.exp(-0.5 * float(z @ z))

    def gradient_at_zero(self):
        """grad f(0) = f(0) c / s^2, an array of shape (d,)."""
        return self.value_at_zero() * (self.center / self.scale) / self.scale

    def fourier_transform(self, omega):
        """f_hat(omega) at each row of omega (n, d): a complex array of shape (n,).

        f_hat(omega) = A (s^2/(2 pi))^{d/2} exp(-s^2 |omega|^2 / 2) exp(-i <omega, c>).
        """
        omega = check_points(omega, "omega", d=self.d)
        xp = get_xp(omega)
        s = self.scale
        log_c = self.d * (math.log(s) - 0.5 * math.log(2 * math.pi))
        mod = self.amplitude * xp.exp(log_c - 0.5 * ((s * omega) ** 2).sum(axis=1))
        phase = omega @ xp.asarray(self.center, dtype=omega.dtype)
        return mod * xp.exp(-1j * phase)

    def barron_norm(self, norm=2, order=1) -> float:
        """int |omega|_p^order |f_hat(omega)| d omega in closed form (p = ``norm``; order 0, 1 or 2).

        order = 1 is the Barron norm C_f; order = 2 the second moment of relu ridge representations;
        order = 0 the L1 norm of f_hat (= |A|).
        """
        norm = _check_norm(norm)
        order = check_integer(order, "order", minimum=0, maximum=2)
        value = abs(self.amplitude) * _gaussian_abs_moment(self.d, order, norm)
        for _ in range(order):  # one division per power: s^order over- or underflowed (ZeroDivisionError at s = 1e-200)
            value /= self.scale
        return value

    def sample_frequencies(self, n, rng=None, order=0):
        """n frequencies drawn from the density |omega|^order |f_hat(omega)| / int |omega|^order |f_hat|.

        |omega| is the Euclidean norm. The law is isotropic with radius chi_{d + order} / s:
        |omega|^order |f_hat| is proportional to rho^{d - 1 + order} exp(-s^2 rho^2 / 2) in polar
        coordinates. ``order`` is 0, 1 or 2; ``rng`` is None, an int or a numpy.random.Generator, and the
        draw happens on the host (the same numbers on every device). Returns a host array of shape (n, d).
        """
        n = check_integer(n, "n", minimum=0)
        order = check_integer(order, "order", minimum=0, maximum=2)
        rng = check_random_state(rng)
        U = _directions(n, self.d, rng)  # (n, d)
        rho = np.sqrt(rng.chisquare(self.d + order, size=n)) / self.scale  # (n,)
        return U * rho[:, None]

    def representation(self, kind="cosine", radius=None) -> Representation:
        r"""f as an expectation of neurons (for :func:`maurey_sample`).

        Parameters
        ----------
        kind : {"cosine", "step", "relu"}
            ``"cosine"``: f(x) = A E_{omega ~ N(0, I/s^2)}[cos(<omega, x> - <omega, c>)] on R^d
            (mass |A|, sup 1; here f_hat = |f_hat| e^{i b} with b(omega) = -<omega, c>, and A < 0
            flips the sign h). ``"step"``: Barron's half-space representation on the ball B_r,
            mass 2 r C_f, sup 1. ``"relu"``: the relu ridge representation on B_r, mass
            2 r C_{f,2}, sup r, plus the linear term <grad f(0), x>.
        radius : float
            r, required for "step" and "relu": the identity holds for |x| <= r.

        Returns
        -------
        Representation

        Notes
        -----
        With z = <omega, x> = |omega| <u, x>, |z| <= R = r |omega| on B_r, and g(z) = cos(z + b):

            g(z) - g(0) = -int_0^R [ sin(t + b) 1{z > t} + sin(t - b) 1{-z > t} ] dt,
            g(z) - g(0) - g'(0) z = -int_0^R [ cos(t + b) relu(z - t) + cos(t - b) relu(-z - t) ] dt

        (differentiate in z to check). Substituting t = |omega| t' with t' in [0, r],
        1{z > t} = 1{<u, x> > t'} and relu(z - t) = |omega| relu(<u, x> - t'), then integrating
        against |f_hat(omega)| d omega gives, with omega drawn from |omega|^k |f_hat| / C_{f,k}
        (k = 1 for steps, 2 for relu), t' uniform on [0, r] and a sign e = +-1 with probability 1/2:

            f(x) - f(0) = 2 r C_f E[ -sin(|omega| t' + e b) 1{<e u, x> > t'} ],
            f(x) - f(0) - <grad f(0), x> = 2 r C_{f,2} E[ -cos(|omega| t' + e b) relu(<e u, x> - t') ].

        The neurons are 1{<e u, x> - t' > 0} and relu(<e u, x> - t'): W rows (e u, -t').

        References
        ----------
        1. A. R. Barron, IEEE Trans. Inf. Theory 39(3), 1993, proof of Theorem 1 (steps, the
           constant 2 r C_f).
        2. J. M. Klusowski and A. R. Barron, arXiv:1607.07819 (relu ridge functions and C_{f,2}).
        """
        if kind not in ("cosine", "step", "relu"):
            raise ValueError(f"kind must be 'cosine', 'step' or 'relu', got {kind!r}")
        d, A, c = self.d, self.amplitude, self.center
        sign_A = 1.0 if A > 0 else -1.0
        if kind == "cosine":
            if radius is not None:
                check_positive(radius, "radius")

            def sampler(m, rng):
                omega = self.sample_frequencies(m, rng, order=0)  # (m, d)
                b = -(omega @ c)  # (m,)
                return np.full(m, sign_A), np.concatenate([omega, b[:, None]], axis=1)

            return Representation(d, abs(A), COSINE, sampler, radius=radius, sup=1.0, bias=True, name="cosine")
        if radius is None:
            raise ValueError(f"radius is required for kind={kind!r}: the representation holds on the ball "
                             "|x| <= radius")
        r = check_positive(radius, "radius")
        order = 1 if kind == "step" else 2
        mass = 2 * r * self.barron_norm(norm=2, order=order)
        profile = np.sin if kind == "step" else np.cos

        def sampler(m, rng):
            omega = self.sample_frequencies(m, rng, order=order)  # (m, d)
            rho = np.linalg.norm(omega, axis=1)  # (m,)
            u = omega / np.where(rho > 0, rho, 1.0)[:, None]  # (m, d)
            t = r * rng.random(m)  # (m,)
            e = rng.choice(np.array([-1.0, 1.0]), size=m)  # (m,)
            b = -(omega @ c)
            h = -sign_A * profile(rho * t + e * b)
            return h, np.concatenate([e[:, None] * u, -t[:, None]], axis=1)

        if kind == "step":
            return Representation(d, mass, "step", sampler, constant=self.value_at_zero(), radius=r, sup=1.0,
                                  bias=True, name="step")
        return Representation(d, mass, "relu", sampler, constant=self.value_at_zero(),
                              linear=self.gradient_at_zero(), radius=r, sup=r, bias=True, name="relu")


# int |t| |g_hat(t)| dt for the profiles g of RidgeTarget (1-D transform, same convention).
# g' has a nonnegative Fourier transform for the sigmoidal profiles, so the integral is g'(0).
_PROFILES = {
    "gaussian": (lambda xp, z: xp.exp(-0.5 * z * z), math.sqrt(2.0 / math.pi)),
    "cos": (lambda xp, z: xp.cos(z), 1.0),
    "sigmoid": (lambda xp, z: 1.0 / (1.0 + xp.exp(-z)), 0.25),
    "tanh": (lambda xp, z: xp.tanh(z), 1.0),
    "erf": (None, 2.0 / math.sqrt(math.pi)),
}


class RidgeTarget:
    r"""A ridge function f(x) = A g(<w, x>) with a smooth profile g, and its Barron norm.

    Parameters
    ----------
    w : array of shape (d,)
        The direction (and frequency scale) w != 0.
    profile : {"gaussian", "cos", "sigmoid", "tanh", "erf"}
        g(z) = exp(-z^2/2), cos z, 1/(1 + e^{-z}), tanh z or erf z.
    amplitude : float, default 1
        A.

    Notes
    -----
    The transform of f is carried by the line R w: f(x) = int e^{i t <w, x>} A g_hat(t) dt, so
    that C_f = |A| |w|_p kappa_g with kappa_g = int |t| |g_hat(t)| dt = int |FT(g')|:

    * gaussian: g_hat(t) = e^{-t^2/2} / sqrt(2 pi), kappa = E|N(0, 1)| = sqrt(2/pi);
    * cos: g_hat = (delta_1 + delta_{-1}) / 2, kappa = 1;
    * sigmoid, tanh, erf: g' (the logistic density, sech^2, (2/sqrt(pi)) e^{-z^2}) has a nonnegative
      Fourier transform (t / (2 sinh(pi t)) for the logistic density), so
      kappa = int FT(g') = g'(0): 1/4, 1 and 2/sqrt(pi). The atom of g_hat at 0 (g has a nonzero mean
      value at infinity) has |omega| = 0 and does not count.

    Examples
    --------
    >>> import numpy as np
    >>> f = RidgeTarget(np.array([3.0, 4.0]), "sigmoid")
    >>> f.barron_norm(norm=2), f.barron_norm(norm=1)         # |w| / 4 and |w|_1 / 4
    (1.25, 1.75)
    """

    def __init__(self, w, profile="gaussian", amplitude=1.0):
        w = to_numpy(check_array(w, "w", ndim=1)).astype(np.float64)
        if w.shape[0] < 1 or not w.any():
            raise ValueError(f"w must be a nonzero vector, got {w.tolist()}")
        if not isinstance(profile, str) or profile not in _PROFILES:
            raise ValueError(f"profile must be one of {tuple(_PROFILES)}, got {profile!r}")
        self.w = w  # (d,)
        self.d = int(w.shape[0])
        self.profile = profile
        self.amplitude = _finite(amplitude, "amplitude")

    def __repr__(self):
        return f"RidgeTarget(w={self.w.tolist()}, profile={self.profile!r}, amplitude={self.amplitude:g})"

    def __call__(self, X):
        """f(x) = A g(<w, x>) for each row of X (n, d): an array of shape (n,)."""
        X = check_points(X, "X", d=self.d)
        xp = get_xp(X)
        z = X @ xp.asarray(self.w, dtype=X.dtype)
        if self.profile == "erf":
            from .activations import get_activation

            return self.amplitude * get_activation("erf")(z)
        return self.amplitude * _PROFILES[self.profile][0](xp, z)

    def barron_norm(self, norm=2) -> float:
        """C_f = |A| |w|_p kappa_g in closed form (p = ``norm``)."""
        norm = _check_norm(norm)
        top = float(np.abs(self.w).max())  # |w|_p = top |w / top|_p: numpy's |w|_2 squares the entries (inf at 1e200)
        return abs(self.amplitude) * top * float(np.linalg.norm(self.w / top, ord=norm)) * _PROFILES[self.profile][1]


# --------------------------------------------------------------------------------------------
# Barron norm: closed form, quadrature of a transform on a grid, or FFT of samples.
# --------------------------------------------------------------------------------------------

def _cone_reference(g0, tau, d):
    """G(omega) = g0 exp(-|omega|^2 / (2 tau^2)) (a function of |omega|^2) and int |omega| G d omega."""
    exact = g0 * (2 * math.pi * tau * tau) ** (0.5 * d) * tau * _gaussian_abs_moment(d, 1, 2)

    def G(wsq):
        return g0 * np.exp(-0.5 * wsq / (tau * tau))

    return G, exact


def _bernoulli2(theta):
    """B_2(theta) = theta^2 - theta + 1/6: the h^2 term of a lattice sum with offset theta at a kink."""
    return theta * theta - theta + 1.0 / 6.0


def _grid_barron_norm(f_hat, d, norm, extent, num):
    """Midpoint rule for int_{[-L, L]^d} |omega|_p |f_hat(omega)| d omega (host, chunked), kink-corrected."""
    total_points = num**d
    if total_points > _GRID_POINTS_MAX:
        raise ValueError(f"the frequency grid would have num^d = {num}^{d} = {total_points:.3g} points "
                         f"(> {_GRID_POINTS_MAX:.0e}): lower num, or use a closed form")
    h = 2 * extent / num
    axis = -extent + h * (np.arange(num) + 0.5)  # (num,) cell centres

    def evaluate(omega):
        values = np.asarray(to_numpy(f_hat(omega)))
        if values.shape != (omega.shape[0],):
            raise ValueError(f"f_hat must map an array of shape {omega.shape} to shape ({omega.shape[0]},), "
                             f"got {values.shape}")
        if values.dtype.kind not in "biufc":  # check_array refuses complex values, which f_hat may return
            raise ValueError(f"f_hat must return real or complex numbers, got dtype {values.dtype}")
        if not np.isfinite(values).all():
            raise ValueError("f_hat returned NaN or infinite values on the grid")
        return np.abs(values)

    def grid_sum(dims, weight):
        """sum over the num^dims cell centres omega of weight(omega)."""
        total = 0.0
        for start in range(0, num**dims, _GRID_CHUNK):
            flat = np.arange(start, min(start + _GRID_CHUNK, num**dims))
            omega = axis[np.stack(np.unravel_index(flat, (num,) * dims), axis=1)]  # (chunk, dims)
            total += float(weight(omega).sum())
        return total

    if norm == 2:
        G, exact = _cone_reference(float(evaluate(np.zeros((1, d)))[0]), extent / 6, d)
        body = grid_sum(d, lambda w: np.linalg.norm(w, axis=1) * (evaluate(w) - G((w**2).sum(axis=1))))
        return body * h**d + exact
    # |omega|_1 = sum_i |omega_i| kinks on the hyperplanes omega_i = 0, where the lattice sum errs by
    # -B_2(theta) h^2 int_{omega_i = 0} |f_hat| (Euler-Maclaurin); theta = 1/2 (num even) or 0 (odd).
    body = grid_sum(d, lambda w: np.abs(w).sum(axis=1) * evaluate(w)) * h**d
    theta = 0.5 if num % 2 == 0 else 0.0
    for i in range(d):
        if d == 1:
            plane = float(evaluate(np.zeros((1, 1)))[0])
        else:
            plane = grid_sum(d - 1, lambda w, i=i: evaluate(np.insert(w, i, 0.0, axis=1))) * h ** (d - 1)
        body += _bernoulli2(theta) * h * h * plane
    return body


def _fft_barron_norm(values, spacing, norm):
    """Riemann sum of |omega|_p |f_hat| on the FFT frequencies, corrected at the kinks of |omega|_p."""
    xp = get_xp(values)
    shape = values.shape
    d = len(shape)
    spacing = to_numpy(check_array(spacing, "spacing", ndim=(0, 1))).astype(np.float64)
    if spacing.ndim == 0:  # one step h for every axis; a sequence must give one per axis
        spacing = np.repeat(spacing, d)
    if spacing.size != d:
        raise ValueError(f"spacing has {spacing.size} entries but f has {d} axes")
    spacing = [check_positive(float(h), "spacing") for h in spacing]
    steps = [2 * np.pi / (n * h) for n, h in zip(shape, spacing)]  # frequency steps
    cell = float(np.prod(steps))
    scale = float(np.prod([h / (2 * np.pi) for h in spacing]))  # |f_hat(omega_k)| = scale |FFT_k|
    F = xp.abs(xp.fft.fftn(values)) * scale  # (n_1, ..., n_d)
    l1 = xp.zeros(shape, dtype=F.dtype)
    wsq = xp.zeros(shape, dtype=F.dtype)
    for axis, (n, h) in enumerate(zip(shape, spacing)):
        view = [1] * d
        view[axis] = n
        w = xp.asarray(2 * np.pi * np.fft.fftfreq(n, d=h), dtype=F.dtype).reshape(view)  # omega_i
        l1 = l1 + xp.abs(w)
        wsq = wsq + w * w
    if norm == 2:
        G, exact = _cone_reference(float(F.reshape(-1)[0]), min(np.pi / h for h in spacing) / 6, d)
        residual = F - xp.asarray(G(to_numpy(wsq)), dtype=F.dtype)
        return float((xp.sqrt(wsq) * residual).sum()) * cell + exact
    # The FFT lattice passes through 0 (theta = 0, B_2 = 1/6) on each hyperplane omega_i = 0.
    body = float((l1 * F).sum()) * cell
    for i, step in enumerate(steps):
        plane = float(xp.take(F, 0, axis=i).sum()) * cell / step
        body += _bernoulli2(0.0) * step * step * plane
    return body


def barron_norm(f, d=None, *, norm=2, extent=None, num=128, spacing=None) -> float:
    r"""The Barron norm C_f = int |omega|_p |f_hat(omega)| d omega (p = 2 Barron, p = 1 the seed).

    Convention: f(x) = int e^{i <omega, x>} f_hat(omega) d omega (no 2 pi in the exponent).

    Parameters
    ----------
    f : GaussianTarget, RidgeTarget, callable, or array
        * a target with a closed form (:class:`GaussianTarget`, :class:`RidgeTarget`): exact;
        * a callable ``f_hat(omega)``, omega of shape (n, d) -> values of shape (n,) (complex or
          real): the integral by the midpoint rule on ``num``^d cells of the cube [-extent, extent]^d;
        * an array of samples f(x) on a regular grid of shape (n_1, ..., n_d) with step ``spacing``:
          the transform by FFT (numpy or cupy, the array's), the integral as a Riemann sum.
    d : int
        The dimension, for a callable.
    norm : {1, 2}, default 2
        |omega|_1 or the Euclidean |omega|.
    extent : float
        L, for a callable: the half-width of the frequency cube (the transform must be negligible
        outside it).
    num : int, default 128
        Cells per axis, for a callable (num^d evaluations of f_hat).
    spacing : float or sequence of d floats
        The grid step h of the samples, for an array.

    Returns
    -------
    float

    Notes
    -----
    From samples on the grid x = x_0 + h k (0 <= k_i < n_i, N = prod n_i):
    f_hat(omega) ~ (h / 2 pi)^d e^{-i <omega, x_0>} FFT(f)(omega) at the frequencies
    omega_i = 2 pi fftfreq(n_i, h_i), whose cells have volume (2 pi)^d / (N h^d).

    The integrand |omega|_p |f_hat| is not smooth where |omega|_p is not, and a plain lattice sum
    errs there at low order (in d = 1 by the trapezoid error dw^2 |f_hat(0)| / 6, dw the frequency
    step). Both grids correct it. For p = 2 (a cone at omega = 0) they integrate |omega| (|f_hat| - G)
    and add the exact integral of |omega| G, with G(omega) = |f_hat(0)| exp(-|omega|^2 / (2 tau^2))
    (tau a sixth of the largest frequency): |f_hat| is even for a real f, so |f_hat| - G = O(|omega|^2)
    and the cone is gone. For p = 1 (kinks on the hyperplanes omega_i = 0) they add the
    Euler-Maclaurin term B_2(theta) dw^2 int_{omega_i = 0} |f_hat| of each hyperplane, with
    B_2(theta) = theta^2 - theta + 1/6 and theta the offset of the lattice (0 through the origin,
    1/2 for cell centres).

    The FFT needs f negligible at the border of the box (no wrap-around jump) and the step h to
    resolve the frequencies of f; the callable needs f_hat negligible beyond ``extent`` and
    resolved by 2 extent / num. A smooth, decaying f converges fast in both.

    References
    ----------
    1. A. R. Barron, IEEE Trans. Inf. Theory 39(3), 1993, Sec. I (the definition of C_f).

    Examples
    --------
    >>> import numpy as np
    >>> f = GaussianTarget(2, scale=1.0)
    >>> round(barron_norm(f), 10)                        # sqrt(pi / 2)
    1.2533141373
    >>> round(barron_norm(f.fourier_transform, d=2, extent=9.0, num=128), 6)
    1.253314
    >>> x = 0.2 * (np.arange(128) - 64)                  # samples of f(x) = exp(-|x|^2 / 2)
    >>> X1, X2 = np.meshgrid(x, x, indexing="ij")
    >>> round(barron_norm(np.exp(-(X1**2 + X2**2) / 2), spacing=0.2), 6)
    1.253313
    """
    norm = _check_norm(norm)
    if isinstance(f, (GaussianTarget, RidgeTarget)):
        return f.barron_norm(norm=norm)
    if callable(f):
        if d is None:
            raise ValueError("d is required for a callable f_hat (the dimension of omega)")
        d = check_integer(d, "d", minimum=1)
        if extent is None:
            raise ValueError("extent is required for a callable f_hat: the half-width L of the frequency cube")
        extent = check_positive(extent, "extent")
        num = check_integer(num, "num", minimum=1)
        return _resolved(_grid_barron_norm(f, d, norm, extent, num), f"the grid of num={num} cells per axis")
    if f is None or isinstance(f, (str, bytes)):
        raise ValueError(f"f must be a target, a callable f_hat or an array of samples, got {f!r}")
    values = check_array(f, "f", real=False)
    if values.ndim < 1 or values.size == 0:
        raise ValueError(f"f as samples must be a non-empty array on a d-dimensional grid, got shape {values.shape}")
    if spacing is None:
        raise ValueError("spacing is required for samples on a grid (the step h between grid points)")
    if d is not None and check_integer(d, "d", minimum=1) != values.ndim:
        raise ValueError(f"d={d} but f has {values.ndim} axes")
    return _resolved(_fft_barron_norm(values, spacing, norm), f"the samples of shape {tuple(values.shape)}")


def _resolved(value: float, grid: str) -> float:
    """The quadrature's C_f, refused when negative: the kink corrections then outweigh an integral that the
    grid does not resolve (-3.85 for 1.14 on 2 cells per axis)."""
    if value < 0:
        raise ValueError(f"the Barron norm came out negative ({value:.3g}) on {grid}: they do not resolve f_hat; "
                         "take more points (num, or more samples), or a wider extent")
    return value


# --------------------------------------------------------------------------------------------
# F1 and F2 norms of a single neuron (Bach 2017).
# --------------------------------------------------------------------------------------------

def single_neuron_norms(a, w, kmax, activation="relu"):
    r"""F1 norm and truncated F2 norms of f(x) = a sigma(<w, x>) on the sphere S^{d-1}.

    Parameters
    ----------
    a : float
        Outer weight.
    w : array of shape (d,)
        Inner weight, w != 0, d >= 2.
    kmax : int
        Highest degree of the truncations, kmax >= 0.
    activation : str or Activation, default "relu"
        A positively homogeneous sigma of degree alpha (relu, relu_power, step, abs).

    Returns
    -------
    f1 : float
        The total variation |a| |w|^alpha of the one-atom measure a |w|^alpha delta_{w/|w|}
        (:func:`shallow.measures.variation_norm`): Bach's F1 norm of the neuron.
    f2 : numpy array of shape (kmax + 1,)
        f2[K] = || P_{<=K} f ||_{F2}, the RKHS norm of the degree-<=K harmonic truncation of f for
        the random-feature kernel of sigma with sphere weights: f1 times the norms of the unit neuron
        sigma(<w/|w|, .>), so that no scale of a and w representable in f1 over- or underflows them
        (inf only where the truncated norm itself exceeds float64).

    Notes
    -----
    f = a |w|^alpha sigma(<u, .>) with u = w/|w| is zonal; by Funk-Hecke its degree-k component is
    a |w|^alpha mu_k N(d, k) P_{k,d}(<u, .>), of energy |f_k|^2 = a^2 |w|^{2 alpha} mu_k^2 N(d, k)
    (since |P_{k,d}(<u, .>)|^2_{L2(tau_d)} = 1 / N(d, k)). The kernel E_{v ~ tau_d}[sigma(<v, x>)
    sigma(<v, y>)] has eigenvalues lambda_k = mu_k^2, so

        || P_{<=K} f ||_{F2}^2 = sum_{k <= K} |f_k|^2 / lambda_k = a^2 |w|^{2 alpha} sum_{k <= K, mu_k != 0} N(d, k),

    which grows without bound (like K^{d-1}) while the F1 norm stays |a| |w|^alpha: a single neuron
    is in F1 but not in F2 (Bach 2017, Sec. 2.3 and Appendix D).

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Sec. 2.3 (F1 and F2) and Appendix D.2 (mu_k of relu^alpha).

    Examples
    --------
    >>> import numpy as np
    >>> f1, f2 = single_neuron_norms(2.0, np.array([0.0, 0.0, 1.0]), 4)
    >>> f1, np.round(f2**2 / 4).tolist()                # N(3, k) = 2k + 1 over k = 0, 1, 2, 4
    (2.0, [1.0, 4.0, 9.0, 9.0, 18.0])
    """
    from .activations import as_activation, funk_hecke
    from .harmonics import num_harmonics
    from .kernels import dot_product_kernel, f2_norm_from_harmonics, mercer_eigenvalues
    from .measures import variation_norm

    a = _finite(a, "a")
    w = to_numpy(check_array(w, "w", ndim=1)).astype(np.float64)
    d = int(w.shape[0])
    if d < 2:
        raise ValueError(f"w must have d >= 2 coordinates (a neuron on S^(d-1)), got shape {w.shape}")
    if not w.any():
        raise ValueError("w must be nonzero")
    kmax = check_integer(kmax, "kmax", minimum=0)
    sigma = as_activation(activation, "activation")
    alpha = sigma.homogeneity
    if alpha is None:
        raise ValueError(f"activation {sigma.name!r} is not positively homogeneous: the neuron is not one atom "
                         "on the sphere")
    f1 = variation_norm(TwoLayer(np.array([a]), w[None, :], activation=sigma, gamma=1.0))
    mu = funk_hecke(sigma, d, kmax)  # (kmax + 1,)
    lam = mercer_eigenvalues(dot_product_kernel("nngp", sigma, "sphere", d), d, kmax)  # (kmax + 1,)
    try:
        N = np.array([float(num_harmonics(d, k)) for k in range(kmax + 1)])
    except OverflowError:  # the bare "int too large to convert to float"
        raise ValueError(f"kmax={kmax} is too large for d={d}: N(d, k) exceeds float64 (1.8e308) before it, and so "
                         "would the truncated F2 norms; take a smaller kmax") from None
    # The F2 norms scale like the F1 norm |a| |w|^alpha: those of the unit neuron sigma(<u, .>), times f1 (computed
    # from the powers of 2 of a and |w|). The energies (a |w|^alpha)^2 mu_k^2 N(d, k) over- or underflowed: |w| = 1e200
    # gave f2 = inf (and a RuntimeWarning), |w| = 1e-200 gave f2 = 0 below f1 = 1e-200.
    unit = mu**2 * N  # (kmax + 1,) energies of sigma(<u, .>)
    f2 = np.array([f2_norm_from_harmonics(unit[: K + 1], lam[: K + 1]) for K in range(kmax + 1)])
    with np.errstate(over="ignore"):  # a truncated norm beyond float64 is inf, as the untruncated one
        return f1, f1 * f2
