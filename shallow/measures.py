r"""Signed measures on the sphere, networks as measures, optimal-transport distances, conditional gradient.

A finite signed measure on S^{D-1} is a sum of Diracs mu = sum_j c_j delta_{theta_j} (weights c_j
of any sign, atoms theta_j of unit norm). With a positively homogeneous activation of degree
alpha, sigma(t s) = t^alpha sigma(s) for t > 0, a network is such a measure:

    f(x) = gamma sum_j a_j sigma(<w_j, x>) = sum_j gamma a_j |w_j|^alpha sigma(<w_j/|w_j|, x>)
         = int sigma(<x, theta>) dmu(theta),   mu = sum_j gamma a_j |w_j|^alpha delta_{w_j/|w_j|},

(Bach 2017, Sec. 2). The variation norm (the F1 norm of Bach) of f is the least total variation
|mu|(S^{D-1}) over the measures that represent f; :func:`variation_norm` computes the total
variation of the atomic measure of a finite network after merging atoms at the same direction.

Distances between measures are computed with POT (the Python Optimal Transport library); no OT
solver is written here:

* :func:`wasserstein` -- W_p between nonnegative measures of equal mass (exact, ``ot.emd2``);
* :func:`sliced_wasserstein` -- its sliced version for large clouds (``ot.sliced``);
* :func:`unbalanced_distance` -- signed measures or unequal masses: the debiased unbalanced
  Sinkhorn divergence (``ot.unbalanced``) applied to the nonnegative measures
  mu^+ + nu^- and nu^+ + mu^-.

The particle clouds of a network are given explicitly: ``net.particles()`` (the lifted measure
(1/m) sum_j delta_{(a_j, w_j)} of Chizat & Bach 2018, the object whose W2 gradient flow training
is) or ``net.to_measure()`` (the measure on the sphere above, which depends only on f's
representation, not on how mass is shared between a_j and |w_j|).

Least squares over a ball of the variation norm, min (1/2n) sum_i (f_mu(x_i) - y_i)^2 subject to
|mu|(S^{D-1}) <= R, are solved by conditional gradient (:func:`conditional_gradient`: classic,
fully-corrective and sliding Frank-Wolfe, with the duality gap as a certificate), whose linear step is
the best single neuron (:func:`best_neuron`) (Bach 2017, Sec. 2.5; Reference 6). Both run on the host.

When the inputs are cupy arrays they are passed to POT as cupy arrays (POT picks its cupy backend):
cost matrices, Sinkhorn iterations and projections stay on the device; POT's exact ``emd`` solver
runs on the host (POT copies the cost matrix there and the result back).

References
----------
1. F. Bach, "Breaking the curse of dimensionality with convex neural networks", JMLR 18, 2017,
   arXiv:1412.8690, Sec. 2.2-2.3 (F1 = variation norm, networks as measures).
2. L. Chizat and F. Bach, "On the global convergence of gradient descent for over-parameterized
   models using optimal transport", NeurIPS 2018, arXiv:1805.09545, Sec. 2 (lifted measures).
3. T. Sejourne, J. Feydy, F.-X. Vialard, A. Trouve and G. Peyre, "Sinkhorn divergences for
   unbalanced optimal transport", 2019, arXiv:1910.12958 (the unbalanced Sinkhorn
   divergence with its mass term; its positivity and definiteness).
4. B. Piccoli, F. Rossi and M. Tournus, "A Wasserstein norm for signed measures, with application
   to non-local transport equation with source term", preprint hal-01665244, 2019 (signed
   measures compared through mu^+ + nu^- and nu^+ + mu^-).
5. N. Bonneel, J. Rabin, G. Peyre and H. Pfister, "Sliced and Radon Wasserstein barycenters of
   measures", JMIV 51, 2015 (sliced Wasserstein).
6. Q. Denoyelle, V. Duval, G. Peyre and E. Soubies, "The sliding Frank-Wolfe algorithm and its
   application to super-resolution microscopy", Inverse Problems 36, 2019, arXiv:1811.06416.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from ._validation import (
    check_array,
    check_bool,
    check_integer,
    check_nonnegative,
    check_on_sphere,
    check_points,
    check_samples,
    check_positive,
    check_random_state,
    sphere_tolerance,
)
from .backend import device_of, get_xp, row_norms, to_device, to_numpy
from .harmonics import _zonal_quadratic_forms, num_harmonics
from .networks import TwoLayer, _resolve_activation
from .sphere import sample_sphere

__all__ = [
    "Measure",
    "network_to_measure",
    "measure_to_network",
    "variation_norm",
    "harmonic_spectrum",
    "wasserstein",
    "sliced_wasserstein",
    "unbalanced_distance",
    "best_neuron",
    "conditional_gradient",
]


#: Candidate pairs of :func:`_close_pairs` beyond which a KD-tree finds the close pairs instead.
_MAX_CANDIDATES = 2 * 10**7


def _close_pairs(P, atol: float):
    """The pairs (i, j), i < j, of rows of P (m, D) at Euclidean distance <= atol: shape (pairs, 2).

    Rows this close are as close along any direction, so the candidates are the pairs whose projections
    on one (fixed, pseudo-random) unit vector lie within atol: sorted, each row's candidates follow it.
    Their exact distances decide. A KD-tree (scipy's ``query_pairs``), the former way, took 9.6 s for
    10^4 atoms in D = 500, where this takes 0.1 s; it serves when the projections crowd (more than
    _MAX_CANDIDATES candidates).
    """
    m = P.shape[0]
    v = np.random.default_rng(20261129).standard_normal(P.shape[1])
    along = P @ (v / np.linalg.norm(v))  # (m,)
    order = np.argsort(along, kind="stable")
    proj = along[order]
    ends = np.searchsorted(proj, proj + atol, side="right")  # candidates of sorted row i: i+1 .. ends[i]-1
    counts = ends - np.arange(m) - 1
    total = int(counts.sum())
    if total > _MAX_CANDIDATES:
        from scipy.spatial import cKDTree

        return cKDTree(P).query_pairs(r=atol, output_type="ndarray")
    first = np.repeat(np.arange(m), counts)
    second = first + 1 + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    i, j = order[first], order[second]
    close = np.empty(total, dtype=bool)
    for start in range(0, total, 10**6):  # bounded memory: (10^6, D) differences at a time
        block = slice(start, start + 10**6)
        close[block] = np.linalg.norm(P[i[block]] - P[j[block]], axis=1) <= atol
    return np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[close]


def _merge_labels(points_host, atol: float):
    """Group labels (k,) of the rows of points (host array) within distance atol, transitively closed.

    Returns (labels of shape (m,), first index of each group of shape (groups,)). Groups are the
    connected components of the graph joining atoms at Euclidean distance <= atol
    (:func:`_close_pairs` finds the pairs), numbered by their smallest atom index.
    """
    m = points_host.shape[0]
    if m <= 1:
        return np.zeros(m, dtype=np.intp), np.arange(m)
    if atol == 0:
        _, first, labels = np.unique(points_host, axis=0, return_index=True, return_inverse=True)
        labels = labels.reshape(-1)
    else:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        pairs = _close_pairs(points_host, atol)  # (pairs, 2)
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
        _, labels = connected_components(graph, directed=False)
        _, first = np.unique(labels, return_index=True)
    # renumber groups by their first atom, so that the merged order follows the original order
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels], first[order]


class Measure:
    r"""A finite signed measure mu = sum_j c_j delta_{theta_j} on the sphere S^{D-1}.

    Parameters
    ----------
    weights : array of shape (m,)
        Signed masses c_j.
    points : array of shape (m, D)
        Atoms theta_j, rows of unit norm (within sqrt(eps) of their dtype), D >= 2.
    activation : str or activation object, optional
        The sigma of the network the measure represents (:func:`network_to_measure` sets it): the
        default of :meth:`evaluate`, :func:`measure_to_network` and ``barron.maurey_sample``. None
        (a measure made by hand): those take relu.
    bias : bool, default False
        Whether the measure represents a network with a bias (:func:`network_to_measure` sets it):
        its atoms lie on S^d in R^{d+1}, and f(x) = int sigma(<(x, 1), theta>) dmu(theta) for x in
        R^d. The default of the same three.

    Attributes
    ----------
    weights, points : arrays
        Stored as given (no copy), on one device, in the dtype of ``points``.
    activation : activation object or None
        As given; kept by :meth:`merge`, :meth:`positive`, :meth:`negative`, :meth:`copy`, negation
        and scaling, and by a sum, whose terms must have the same activation (one without counting as
        relu).
    bias : bool
        As given; kept in the same way (the terms of a sum must agree).
    sigma : activation object
        The one :meth:`evaluate` and :func:`measure_to_network` use by default (read-only):
        ``activation``, or relu when it is None.
    device : {"cpu", "gpu"}
        Where the atoms live (read-only; :func:`shallow.backend.device_of` of ``points``).
    dtype : numpy dtype
        The dtype of the weights and atoms (read-only; that of ``points``).

    Notes
    -----
    Atoms may repeat: the measure is the sum, and :meth:`merge` adds the weights of atoms at the
    same point. The total variation |mu|(S^{D-1}) = sum over distinct points of |sum of their
    weights|, and the Jordan decomposition mu = mu^+ - mu^- (:meth:`positive`, :meth:`negative`),
    are computed after merging.

    Examples
    --------
    >>> import numpy as np
    >>> mu = Measure(np.array([2.0, -0.5, 1.0]), np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    >>> len(mu), mu.mass(), mu.total_variation()      # the first two atoms merge into 1.5
    (3, 2.5, 2.5)
    >>> mu.negative().mass()
    0.0
    """

    def __init__(self, weights, points, activation=None, bias=False):
        points = check_on_sphere(points, "points")
        weights = check_array(weights, "weights", ndim=1)
        get_xp(weights, points)
        if weights.shape[0] != points.shape[0]:
            raise ValueError(f"weights has shape {tuple(weights.shape)} but points has shape "
                             f"{tuple(points.shape)}: one weight per atom")
        self.weights = weights.astype(points.dtype, copy=False)  # (m,)
        self.points = points  # (m, D)
        self.activation = None if activation is None else _resolve_activation(activation)
        self.bias = check_bool(bias, "bias")

    def _like(self, weights, points) -> Measure:
        """A measure of the same activation and bias on other atoms."""
        return Measure(weights, points, activation=self.activation, bias=self.bias)

    @property
    def sigma(self):
        """The activation the measure is evaluated with: its own, or relu for a measure without one."""
        return _resolve_activation("relu" if self.activation is None else self.activation)

    @property
    def xp(self):
        """The array module of the weights and atoms (numpy or cupy)."""
        return get_xp(self.weights, self.points)

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``: where the weights and atoms live."""
        return device_of(self.points)

    @property
    def dtype(self):
        """The dtype of the weights and atoms (that of ``points``)."""
        return self.points.dtype

    @property
    def D(self) -> int:
        """Ambient dimension: the atoms lie on S^{D-1} in R^D."""
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    def mass(self) -> float:
        """The signed total mass mu(S^{D-1}) = sum_j c_j."""
        return float(self.weights.sum())

    def merge(self, atol=None) -> Measure:
        """The same measure with the atoms at one point merged (their weights added).

        Parameters
        ----------
        atol : float, optional
            Atoms whose Euclidean distance is <= atol are merged (transitively, as connected
            components); default 16 sqrt(D) eps of the dtype (5.0e-15 in float64, 2.7e-6 in float32
            for D = 2), well above the rounding of w/|w| (w and c w normalised differ by one or two
            eps) and far below the spacing of distinct directions. ``atol=0`` merges only identical
            rows. (The sphere's check tolerance sqrt(eps), 3.5e-4 in float32, chained the directions
            of a wide float32 network on the circle into a few atoms.)

        Returns
        -------
        Measure
            One atom per group, at the group's first atom, in the order of first appearance. Atoms
            whose weights cancel stay, with weight 0 (or a rounding residue).

        Notes
        -----
        The grouping runs on the host (scipy's KD-tree and connected components); for cupy inputs
        the points are copied there and the merged measure moved back.
        """
        if atol is None:
            atol = _direction_tolerance(self.points.dtype, self.D)
        elif isinstance(atol, bool) or not isinstance(atol, numbers.Real) or not np.isfinite(atol) or atol < 0:
            raise ValueError(f"atol must be a non-negative finite distance, got {atol!r}")
        atol = float(atol)
        labels, first = _merge_labels(to_numpy(self.points), atol)
        k = len(first)
        w = np.bincount(labels, weights=to_numpy(self.weights).astype(np.float64), minlength=k)
        device = device_of(self.points)
        weights = to_device(w.astype(self.points.dtype), device)
        points = self.points[to_device(first, device)]
        return self._like(weights, points)

    def total_variation(self, atol=None) -> float:
        """|mu|(S^{D-1}): the sum of |weight| over the distinct atoms (after :meth:`merge` with ``atol``)."""
        return float(self.xp.abs(self.merge(atol).weights).sum())

    def positive(self, atol=None) -> Measure:
        """mu^+ of the Jordan decomposition mu = mu^+ - mu^- (merged atoms with positive weight)."""
        merged = self.merge(atol)
        keep = merged.weights > 0
        return self._like(merged.weights[keep], merged.points[keep])

    def negative(self, atol=None) -> Measure:
        """mu^- of the Jordan decomposition mu = mu^+ - mu^- (a nonnegative measure)."""
        merged = self.merge(atol)
        keep = merged.weights < 0
        return self._like(-merged.weights[keep], merged.points[keep])

    def evaluate(self, X, activation=None, bias=None):
        """f(x) = int sigma(<x, theta>) dmu(theta) at each row of X, an array of shape (n,).

        sigma is ``activation``, by default the measure's own (relu for a measure without one). With
        ``bias`` (by default the measure's own) the rows x of X (n, D - 1) are augmented as (x, 1).
        """
        return measure_to_network(self, activation=activation, gamma=1.0, bias=bias)(X)

    def copy(self) -> Measure:
        """The same measure with copies of its weights and points (same dtype and device)."""
        return self._like(self.weights.copy(), self.points.copy())

    def __neg__(self) -> Measure:
        return self._like(-self.weights, self.points)

    def __add__(self, other) -> Measure:
        """The sum of two measures (the concatenation of their atoms)."""
        if not isinstance(other, Measure):
            return NotImplemented
        if other.D != self.D:
            raise ValueError(f"cannot add measures on S^{self.D - 1} and S^{other.D - 1}")
        # a measure without an activation is evaluated with relu: it adds to relu measures only
        a, b = self.sigma, other.sigma
        if a != b:  # no one sigma to evaluate the sum with
            raise ValueError(f"cannot add measures of networks with different activations, {a!r} and {b!r} (a "
                             "measure without an activation counts as relu)")
        if self.bias != other.bias:  # functions of x in R^D and of x in R^(D-1)
            raise ValueError("cannot add the measure of a network with a bias (inputs (x, 1)) and one without")
        xp = get_xp(self.points, other.points)
        dtype = xp.result_type(self.points.dtype, other.points.dtype)
        return Measure(xp.concatenate([self.weights.astype(dtype), other.weights.astype(dtype)]),
                       xp.concatenate([self.points.astype(dtype), other.points.astype(dtype)]),
                       activation=None if self.activation is None and other.activation is None else a,
                       bias=self.bias)

    def __sub__(self, other) -> Measure:
        if not isinstance(other, Measure):
            return NotImplemented
        return self + (-other)

    def __mul__(self, c) -> Measure:
        if isinstance(c, bool) or not isinstance(c, numbers.Real):
            return NotImplemented
        return self._like(self.weights * c, self.points)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return (f"Measure(atoms={len(self)}, D={self.D}, mass={self.mass():.6g}, "
                f"dtype={np.dtype(self.points.dtype).name}, device={device_of(self.points)!r})")


def _direction_tolerance(dtype, D: int) -> float:
    """Distance below which two atoms are one direction up to rounding: 16 sqrt(D) eps of ``dtype``."""
    return float(16 * math.sqrt(D) * np.finfo(dtype).eps)


def network_to_measure(net: TwoLayer) -> Measure:
    r"""The signed measure on the sphere that represents a network with a homogeneous activation.

    Parameters
    ----------
    net : TwoLayer
        Its activation must be positively homogeneous of some degree alpha >= 0
        (``net.activation.homogeneity`` not None): relu (alpha = 1), relu^alpha, the step (alpha = 0).

    Returns
    -------
    Measure
        Carrying ``net.activation`` and ``net.bias`` (:meth:`Measure.evaluate` uses them).
        mu = sum_j gamma a_j |w_j|^alpha delta_{w_j/|w_j|} on S^{D-1}, one atom per neuron with
        w_j != 0, in the order of the neurons (atoms are not merged; see :meth:`Measure.merge`).

    Notes
    -----
    sigma(<w, x>) = |w|^alpha sigma(<w/|w|, x>) for w != 0, hence
    f(x) = int sigma(<x, theta>) dmu(theta). A neuron with w_j = 0 is dropped: it contributes
    gamma a_j sigma(0), which is 0 for alpha > 0; where it is not 0 (alpha = 0 with sigma(0) != 0
    and a_j != 0) no measure on the sphere represents the constant, and a ValueError is raised.
    With ``net.bias`` the atoms lie on S^d in R^{d+1} and f(x) = int sigma(<(x, 1), theta>) dmu.

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Sec. 2.3, Eq. (2)-(3).

    Examples
    --------
    >>> import numpy as np
    >>> net = TwoLayer(np.array([1.0, -2.0]), np.array([[3.0, 4.0], [0.0, -1.0]]), gamma=1.0)
    >>> mu = network_to_measure(net)
    >>> mu.weights, mu.points            # masses a_j |w_j| at w_j / |w_j|
    (array([ 5., -2.]), array([[ 0.6,  0.8],
           [ 0. , -1. ]]))
    """
    if not isinstance(net, TwoLayer):
        raise ValueError(f"net must be a TwoLayer network, got {type(net).__name__}")
    alpha = getattr(net.activation, "homogeneity", None)
    name = getattr(net.activation, "name", repr(net.activation))
    if alpha is None:
        raise ValueError(f"activation {name!r} is not positively homogeneous: only a network with a "
                         "homogeneous sigma (relu, relu^alpha, step) is a measure on the sphere")
    if net.W.shape[1] < 2:
        raise ValueError(f"W has shape {tuple(net.W.shape)}: atoms need D >= 2 coordinates to lie on "
                         "S^(D-1) (use bias=True for inputs on the line)")
    xp = net.xp
    a, W = net.a, net.W
    # not the plain norm: squared entries underflow below 1e-154 (dropping the neuron as w_j = 0)
    norms = row_norms(W)  # (m,)
    keep = norms > 0
    if not bool(keep.all()):
        sigma0 = float(net.activation(xp.zeros(1, dtype=W.dtype))[0])
        if sigma0 != 0 and bool((a[~keep] != 0).any()):
            raise ValueError(f"W has {int((~keep).sum())} zero row(s) whose neurons add the constant "
                             f"gamma a_j sigma(0) (sigma(0) = {sigma0:g}) that no measure on the sphere "
                             "represents")
    norms = norms[keep]
    # gamma a_j |w_j|^alpha with the powers of 2 of a_j and |w_j| set apart, exactly (for alpha * e an
    # integer), and put back last: the product is computed only where it is representable, not from
    # an |w_j|^alpha or a gamma a_j that over- or underflows on the way.
    f_a, e_a = xp.frexp(a[keep])
    f_w, e_w = xp.frexp(norms)  # |w_j| = f_w 2^e_w, f_w in [1/2, 1)
    shift = alpha * e_w.astype(W.dtype)
    whole = xp.floor(shift)
    with np.errstate(over="ignore"):  # the error below says more than numpy's warning
        weights = xp.ldexp(net.gamma * f_a * f_w ** alpha * xp.exp2(shift - whole),
                           e_a + whole.astype(e_a.dtype))  # (k,)
    if not bool(xp.isfinite(weights).all()):
        log2 = math.log2(abs(net.gamma)) + to_numpy(xp.log2(xp.abs(a[keep])) + alpha * xp.log2(norms)).astype(float)
        # float64 is a remedy only for a float32 network
        remedy = ("rescale its weights" if W.dtype == np.float64
                  else "build the network in float64 (or rescale its weights)")
        raise ValueError(f"the network's masses gamma a_j |w_j|^alpha reach 2^{float(log2.max()):.1f}, beyond the "
                         f"largest {np.dtype(W.dtype).name} ({float(np.finfo(W.dtype).max):.3g}): {remedy}")
    points = W[keep] / norms[:, None]  # (k, D)
    return Measure(weights, points, activation=net.activation, bias=net.bias)


def measure_to_network(mu: Measure, activation=None, gamma=None, bias=None) -> TwoLayer:
    r"""The network f(x) = int sigma(<x, theta>) dmu(theta) with one neuron per atom.

    Parameters
    ----------
    mu : Measure
        With m >= 1 atoms on S^{D-1}.
    activation : str or activation object, optional
        Default ``mu.activation`` (that of the network it came from), or relu for a measure without one.
    gamma : float, optional
        Output scale of the network; default 1/m (mean-field). Then a_j = c_j / gamma and
        w_j = theta_j, so f(x) = gamma sum_j a_j sigma(<theta_j, x>) = sum_j c_j sigma(<theta_j, x>).
    bias : bool, optional
        Read the last coordinate of the atoms as a bias (inputs x in R^{D-1} augmented as (x, 1));
        default ``mu.bias`` (that of the network it came from; False for a measure made by hand).

    Returns
    -------
    TwoLayer

    Notes
    -----
    For a homogeneous sigma, ``network_to_measure(measure_to_network(mu))`` is mu again; the other
    way round gives the same function f, with its bias, with |w_j| = 1 (the parameters are
    normalised) and gamma = 1/m.

    Examples
    --------
    >>> import numpy as np
    >>> mu = Measure(np.array([5.0, -2.0]), np.array([[0.6, 0.8], [0.0, -1.0]]))
    >>> net = measure_to_network(mu)
    >>> net.a, net.gamma
    (array([10., -4.]), 0.5)
    """
    if not isinstance(mu, Measure):
        raise ValueError(f"mu must be a Measure, got {type(mu).__name__}")
    if len(mu) == 0:
        raise ValueError("mu has no atom: a network needs m >= 1 neurons")
    gamma = 1.0 / len(mu) if gamma is None else gamma
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not np.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a positive finite number (the output scale), got {gamma!r}")
    sigma = mu.sigma if activation is None else _resolve_activation(activation)
    bias = mu.bias if bias is None else check_bool(bias, "bias")
    return TwoLayer(mu.weights / gamma, mu.points, activation=sigma, gamma=gamma, bias=bias)


def variation_norm(obj, atol=None) -> float:
    r"""The total variation of the atomic measure of a network (an upper bound on its F1 norm).

    Parameters
    ----------
    obj : TwoLayer or Measure
        A network with a positively homogeneous activation (converted by
        :func:`network_to_measure`), or a measure.
    atol : float, optional
        Atoms within this distance count as the same direction (see :meth:`Measure.merge`).

    Returns
    -------
    float
        |mu|(S^{D-1}) = sum over distinct directions u of |sum_{j: w_j/|w_j| = u} gamma a_j |w_j|^alpha|.
        For relu (alpha = 1) and pairwise distinct directions this is gamma sum_j |a_j| |w_j|.

    Notes
    -----
    What is computed is the total variation of the one atomic measure read off the parameters,
    after merging atoms at the same direction (so that a neuron and its negative cancel, and
    neurons (a, w) and (a', c w), c > 0, count once with weight gamma (a |w| + a' c |w|)).

    The F1 (variation) norm of f is the infimum of |mu| over ALL measures with
    f = int sigma(<., theta>) dmu (Bach 2017, Sec. 2.3). The representation is not unique, so the
    value here is an upper bound: for relu, relu(t) - relu(-t) = t, so the neurons at u and -u with
    masses c and -c represent the linear function c <u, x>, which other measures (any symmetric
    measure with the right first moment) also represent; and for d > 1 the linear functions and
    the other degree-1 harmonics can be traded between directions. Solving the infimum is a convex
    problem that this function does not attempt.

    The bound needs ``atol`` to merge only atoms at one direction, as the default (the rounding of
    w/|w|) does. A larger ``atol`` merges chains of atoms, each within atol of the next, into one
    atom, which represents another function, and the value can fall below the F1 norm: 1000 relu
    atoms of alternating sign 2 pi / 1000 apart on the circle give 0 at ``atol=0.01`` and 1000 at
    the default, while F1 >= sup |f| = 0.0031 (|sigma(<x, theta>)| <= 1 on the sphere).

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Sec. 2.3 (variation norm gamma_1).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    >>> net = TwoLayer(np.array([1.0, -0.5, 1.0]), W, gamma=1.0)
    >>> variation_norm(net)            # the first two neurons cancel: only |1| |(0, 3)| remains
    3.0
    """
    if isinstance(obj, TwoLayer):
        obj = network_to_measure(obj)
    if not isinstance(obj, Measure):
        raise ValueError(f"variation_norm needs a TwoLayer network or a Measure, got {type(obj).__name__}")
    return obj.total_variation(atol)


def harmonic_spectrum(obj, kmax, *, block_size=None) -> np.ndarray:
    r"""The energies E_k = ||proj_k f||^2_{L2(tau_d)}, k = 0..kmax, of a network or measure, in closed form.

    The third view of a network (after its neurons and its measure): how its function on the
    sphere spreads over the degrees of the spherical harmonics.

    Parameters
    ----------
    obj : TwoLayer or Measure
        A network without bias whose activation is positively homogeneous (converted by
        :func:`network_to_measure`), or a measure without bias, f(x) = sum_j c_j sigma(<theta_j, x>)
        with sigma its own activation (relu for one made by hand).
    kmax : int
        Highest degree, kmax >= 0.
    block_size : int, optional
        Rows of the atoms' Gram matrix held at once (default about 2^20 / m).

    Returns
    -------
    E : numpy array of shape (kmax + 1,)
        float64, on the host; >= 0 (an energy that cancels to rounding, below 0, is returned as 0).

    Raises
    ------
    ValueError
        For a network or measure with a bias: f(x) = int sigma(<(x, 1), theta>) dmu(theta) is not
        a sum of zonal functions of x on the sphere (estimate its energies from samples with
        :func:`shallow.harmonics.harmonic_energy`); for a network whose activation is not
        homogeneous (as :func:`network_to_measure`).

    Notes
    -----
    By Funk-Hecke, sigma(<theta, x>) = sum_k mu_k(sigma) N(d, k) P_{k,d}(<theta, x>), and by the
    addition theorem int P_{k,d}(<a, x>) P_{k,d}(<b, x>) dtau_d(x) = P_{k,d}(<a, b>) / N(d, k); so

        E_k = N(d, k) mu_k(sigma)^2 sum_{i,j} c_i c_j P_{k,d}(<theta_i, theta_j>),

    and sum_k E_k = ||f||^2_{L2(tau_d)} (Parseval). For an activation without closed-form mu_k
    (sigmoid, tanh, softplus, gelu) they come from quadrature, whose noise (1e-14 of the largest
    mu_k at d = 3, 1e-17 from d = 10) leaves energies of about 1e-29 where mu_k = 0;
    :func:`shallow.kernels.f2_norm_from_harmonics` reads those as 0. O(m^2 (d + kmax)) work for m atoms, exact up to
    rounding where :func:`shallow.harmonics.harmonic_energy` estimates the same numbers from n
    samples of f with an error of order n^{-1/2}. With the eigenvalues of a kernel these give its
    RKHS norm (:func:`shallow.kernels.f2_norm_from_harmonics`): for relu, mu_k = 0 on the odd
    degrees k >= 3, and so is E_k, exactly.

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Sec. 2.3 and Appendix D (Funk-Hecke, F1 and F2 spectra).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.activations import funk_hecke
    >>> mu = Measure(np.array([1.0]), np.array([[0.0, 0.0, 1.0]]))      # one relu neuron on S^2
    >>> E = harmonic_spectrum(mu, 3)
    >>> bool(np.allclose(E, [(2 * k + 1) * funk_hecke("relu", 3, 3)[k] ** 2 for k in range(4)]))
    True
    """
    from fractions import Fraction

    if isinstance(obj, TwoLayer):
        if obj.bias:
            raise ValueError("obj is a network with a bias: its function of x on the sphere is not a sum of "
                             "zonal functions (use shallow.harmonics.harmonic_energy on samples of it)")
        obj = network_to_measure(obj)
    elif not isinstance(obj, Measure):
        raise ValueError(f"obj must be a TwoLayer network or a Measure, got {type(obj).__name__}")
    elif obj.bias:
        raise ValueError("obj is the measure of a network with a bias: its function of x on the sphere is not a "
                         "sum of zonal functions (use shallow.harmonics.harmonic_energy on samples of it)")
    kmax = check_integer(kmax, "kmax", minimum=0)
    d = obj.D
    mu = obj.sigma.funk_hecke(d, kmax)  # (kmax + 1,)
    if len(obj) == 0:
        return np.zeros(kmax + 1)
    # c = 2^e c', max |c'| in [1/2, 1): the quadratic forms neither overflow nor underflow, E_k = 4^e E'_k
    e = math.frexp(float(obj.xp.abs(obj.weights).max()))[1]
    Q = to_numpy(_zonal_quadratic_forms(obj.points, obj.xp.ldexp(obj.weights, -e), kmax, block_size)).astype(float)
    # N(d, k) mu_k^2 Q_k as exact rationals, rounded once: N(d, k) alone may exceed float64 where E_k does not
    E = [float(num_harmonics(d, k) * Fraction(float(mu[k])) ** 2 * Fraction(float(Q[k]))) for k in range(kmax + 1)]
    # a quadratic form of a positive semidefinite matrix: what rounding leaves below 0 is 0
    return np.maximum(np.ldexp(np.array(E), 2 * e), 0.0)


# --------------------------------------------------------------------------- transport distances

def _cloud(obj, weights, name, signed):
    """(points (k, D), weights (k,)) of a measure given as a Measure or an array of particles."""
    if isinstance(obj, TwoLayer):
        raise ValueError(f"{name} is a TwoLayer network: pass {name}.particles() for its lifted particle "
                         f"measure (1/m) sum_j delta_(a_j, w_j), or {name}.to_measure() for its measure on "
                         "the sphere")
    if isinstance(obj, Measure):
        if weights is not None:
            raise ValueError(f"{name} is a Measure, which carries its weights: {name}_weights must be None")
        X, w = obj.points, obj.weights
    else:
        X = check_array(obj, name, ndim=(1, 2))
        if X.ndim == 1:
            X = X[:, None]
        if weights is None:
            xp = get_xp(X)
            w = xp.full(X.shape[0], 1.0 / max(X.shape[0], 1), dtype=X.dtype)
        else:
            w = check_array(weights, f"{name}_weights", ndim=1)
            if w.shape[0] != X.shape[0]:
                raise ValueError(f"{name}_weights has shape {tuple(w.shape)} but {name} has {X.shape[0]} "
                                 "particles: one weight per particle")
    if X.shape[0] == 0 and not signed:  # a signed measure without atoms is the zero measure, which has a distance
        raise ValueError(f"{name} has no particle")
    if not signed and bool((w < 0).any()):
        raise ValueError(f"{name} has negative weights: W_p compares nonnegative measures of equal mass "
                         "(use unbalanced_distance for signed measures)")
    return X, w


def _pair(mu, nu, mu_weights, nu_weights, signed=False):
    X, a = _cloud(mu, mu_weights, "mu", signed)
    Y, b = _cloud(nu, nu_weights, "nu", signed)
    xp = get_xp(X, Y, a, b)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"mu has particles in R^{X.shape[1]} but nu in R^{Y.shape[1]}")
    dtype = xp.result_type(X.dtype, Y.dtype, a.dtype, b.dtype)
    return xp, X.astype(dtype, copy=False), Y.astype(dtype, copy=False), a.astype(dtype), b.astype(dtype)


def _normalised(a, b, rtol=1e-6):
    """Probability weights a/|a|, b/|b| and the common mass, after checking that the masses agree."""
    ma, mb = float(a.sum()), float(b.sum())
    if ma <= 0 or mb <= 0:
        raise ValueError(f"mu and nu must have positive mass, got {ma:g} and {mb:g}")
    if abs(ma - mb) > rtol * max(ma, mb):
        raise ValueError(f"mu has mass {ma:.9g} but nu has mass {mb:.9g}: W_p needs equal masses "
                         "(normalise them, or use unbalanced_distance)")
    return a / ma, b / mb, 0.5 * (ma + mb)


def _check_p(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not np.isfinite(p) or p < 1:
        raise ValueError(f"p must be a real number >= 1, got {p!r}")
    return float(p)


def _cost(X, Y, p):
    """|x_i - y_j|^p (k, l): scipy's cdist on the host, POT's ot.dist (sqeuclidean for p = 2) on a device.

    cdist sums the squared differences (x_i - y_j)^2; ot.dist expands |x|^2 + |y|^2 - 2 <x, y>, which
    cancels when |x_i - y_j| << |x_i|: a relative error of about eps |x|^2 / |x - y|^2 in the cost.
    """
    import ot

    if get_xp(X, Y) is np:
        from scipy.spatial.distance import cdist

        return cdist(X, Y, metric="sqeuclidean") if p == 2 else cdist(X, Y, metric="euclidean") ** p
    if p == 2:
        return ot.dist(X, Y, metric="sqeuclidean")
    return ot.dist(X, Y, metric="euclidean") ** p


def wasserstein(mu, nu, p=2, mu_weights=None, nu_weights=None, numItermax=10_000_000):
    r"""The Wasserstein distance W_p between two nonnegative measures of equal mass.

    Parameters
    ----------
    mu, nu : Measure, or array of shape (k, D) (or (k,) for points on a line)
        The measures: a :class:`Measure` (nonnegative weights), or particles with the weights
        ``mu_weights`` / ``nu_weights`` (default uniform 1/k: the empirical measure). For a network
        pass ``net.particles()`` or ``net.to_measure()``.
    p : float, default 2
        The order, p >= 1.
    mu_weights, nu_weights : array of shape (k,), optional
    numItermax : int
        Iteration cap of POT's network simplex: a solve that reaches it raises a RuntimeError (the
        plan it leaves is not optimal, nor even a coupling: W_2 = 0.49 was returned for 1.82).

    Returns
    -------
    float
        W_p(mu, nu) = (min over couplings pi of sum_ij pi_ij |x_i - y_j|^p)^(1/p).

    Raises
    ------
    RuntimeError
        When the network simplex stops before optimality (``numItermax`` reached).
    ValueError
        For p < 1, negative weights, a zero mass, or masses that differ by more than a relative 1e-6 (use
        :func:`unbalanced_distance` for those).

    Notes
    -----
    The exact linear program is solved by ``ot.emd2`` on the cost |x_i - y_j|^p (scipy's ``cdist``,
    which sums squared differences, so near points in a cloud far from 0 keep their small costs),
    and the p-th root is taken. Masses must agree to a
    relative 1e-6; measures of mass M are compared as M times probability measures,
    W_p(mu, nu) = M^(1/p) W_p(mu/M, nu/M). The simplex solver runs on the host (device inputs are
    copied there, and the cost is computed there); its time grows like k^3: for large clouds use
    :func:`sliced_wasserstein`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.0, 1.0, 3.0]); y = x + 0.5     # a translation by 0.5
    >>> round(wasserstein(x, y), 12)
    0.5
    """
    import ot

    p = _check_p(p)
    numItermax = check_integer(numItermax, "numItermax", minimum=1)
    xp, X, Y, a, b = _pair(mu, nu, mu_weights, nu_weights)
    a, b, mass = _normalised(a, b)
    # W_p(c mu, c nu) = c W_p(mu, nu): the particles are scaled by a power of 2 (exact) near their largest
    # coordinate, so that |x - y|^p neither underflows nor overflows
    _, e = math.frexp(float(max(xp.abs(X).max(), xp.abs(Y).max())))
    # The simplex runs on the host: the cost is computed there too, from the (k + l) D coordinates
    # rather than copying the k l costs, and by cdist, without the cancellation of a device's GEMM form.
    X, Y, a, b = (to_numpy(v) for v in (xp.ldexp(X, -e), xp.ldexp(Y, -e), a, b))
    M = _cost(X, Y, p)  # (k, l)
    with warnings.catch_warnings():  # POT's own warning is replaced by the error below
        warnings.simplefilter("ignore", UserWarning)
        cost, log = ot.emd2(a, b, M, numItermax=numItermax, log=True)
    if log["result_code"] != 1:  # 1 is OPTIMAL; 3 (the iteration cap) left a plan that is not optimal
        raise RuntimeError(f"POT's network simplex stopped before the optimal coupling ({log['warning']}) with "
                           f"numItermax={numItermax}: its cost is not W_p^p; increase numItermax, or use "
                           "sliced_wasserstein for large clouds")
    cost = float(cost)
    return math.ldexp((mass * max(cost, 0.0)) ** (1.0 / p), e)


#: Projections (atoms times directions) that :func:`sliced_wasserstein` hands to POT at a time.
_SLICED_PROJECTIONS = 2**22


def sliced_wasserstein(mu, nu, p=2, n_projections=200, rng=None, mu_weights=None, nu_weights=None):
    r"""The sliced Wasserstein distance SW_p, a Monte Carlo average over random directions.

    Parameters
    ----------
    mu, nu : Measure, or array of shape (k, D) (or (k,))
        As in :func:`wasserstein`.
    p : float, default 2
    n_projections : int, default 200
        Number L of directions u_l, drawn uniformly on S^{D-1}.
    rng : None, int or numpy.random.Generator
        The directions are drawn on the host with this generator (then moved to the device), so a
        seed gives the same directions, hence the same value, on numpy and cupy.
    mu_weights, nu_weights : array of shape (k,), optional

    Returns
    -------
    float
        SW_p = ((1/L) sum_l W_p^p(P_l # mu, P_l # nu))^(1/p), P_l(x) = <u_l, x>.

    Notes
    -----
    Each projected problem is one-dimensional and solved in O(k log k) by sorting
    (``ot.sliced.sliced_wasserstein_distance`` with the directions passed as ``projections``). Since
    x -> <u, x> is 1-Lipschitz, every projected distance is at most W_p(mu, nu), hence
    SW_p <= W_p for any set of directions. For a translation nu = mu + v, each projected distance
    is |<u_l, v>| and E|<u, v>|^2 = |v|^2 / D, so SW_2^2 estimates |v|^2 / D.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((50, 3))
    >>> sliced_wasserstein(X, X, rng=0)
    0.0
    """
    import ot

    p = _check_p(p)
    L = check_integer(n_projections, "n_projections", minimum=1)
    xp, X, Y, a, b = _pair(mu, nu, mu_weights, nu_weights)
    a, b, mass = _normalised(a, b)
    # POT's quantile functions are cumulative sums of the weights: in float32 they drifted by k eps (a relative
    # error of 5e-4 for 10^5 atoms); in float64 they cost k numbers more
    a, b = a.astype(xp.float64), b.astype(xp.float64)
    D = X.shape[1]
    G = check_random_state(rng).standard_normal((D, L))  # (D, L) on the host
    norms = np.linalg.norm(G, axis=0, keepdims=True)
    G = G / np.where(norms > 0, norms, 1.0)
    P = xp.asarray(G.astype(X.dtype)) if xp is np else to_device(G.astype(X.dtype), device_of(X))
    # As in wasserstein: |<u, x - y>|^p over- or underflows for coordinates far from 1 (SW_2 of points near
    # 1e200 was inf), so the particles are scaled by a power of 2 (exact) there, and the distance back.
    _, e = math.frexp(float(max(xp.abs(X).max(), xp.abs(Y).max())))
    if abs(e) * p > np.finfo(X.dtype).maxexp // 4:  # else |x|^p is well within range: unscaled, as before
        X, Y = xp.ldexp(X, -e), xp.ldexp(Y, -e)
    else:
        e = 0
    # POT works on all (atoms, directions) projections at once, with quantile temporaries of that size (4 GiB
    # for 10^5 atoms against 10^5 at 200 directions): blocks of directions of about 2^22 projections, each
    # block's SW_p^p weighted by its share of the directions
    step = max(1, min(L, _SLICED_PROJECTIONS // (X.shape[0] + Y.shape[0])))
    power = sum(float(ot.sliced.sliced_wasserstein_distance(X, Y, a, b, projections=P[:, i:i + step], p=p)) ** p
                * (min(L, i + step) - i) for i in range(0, L, step))
    value = (power / L) ** (1.0 / p)
    return math.ldexp(float(mass ** (1.0 / p) * value), e)


def _generalised_kl(xp, p, q):
    """KL(p | q) = sum p log(p / q) - p + q for nonnegative arrays (0 log 0 = 0)."""
    positive = p > 0
    # in place, the same operations: two temporaries of p's size (p, q are (k, l) plans), not five
    r = xp.where(positive, p, 1.0)
    r /= xp.where(positive, q, 1.0)  # p / q where p > 0, else 1: log 1 = 0 there
    xp.log(r, out=r)
    r *= p
    r -= p
    r += q
    return float(r.sum())


def _uot(xp, X, a, Y, b, p, reg, reg_m, numItermax, stopThr):
    """OT_eps(alpha, beta): the primal value of entropic unbalanced OT at POT's optimal plan."""
    import ot

    M = _cost(X, Y, p)  # (k, l)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan, log = ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, reg_m, method="sinkhorn", reg_type="kl",
                                                      numItermax=numItermax, stopThr=stopThr, log=True)
    if caught:
        raise RuntimeError(f"POT's unbalanced Sinkhorn failed ({caught[0].message}) with reg={reg:g}, "
                           f"reg_m={reg_m:g}, numItermax={numItermax}: increase reg or numItermax, or "
                           "rescale the particles (the kernel exp(-|x - y|^p / reg) underflows when "
                           "cost/reg exceeds ~700)")
    # POT stops silently at numItermax: its plan is then not the optimum, and the value can be anything (0.84 for
    # 0.38 at reg=0.01, reg_m=1000, numItermax=100); its last relative change says whether stopThr was met
    change = float(log["err"][-1]) if len(log["err"]) else 0.0
    if len(log["err"]) >= numItermax and change > stopThr:
        raise RuntimeError(f"POT's unbalanced Sinkhorn did not converge with reg={reg:g}, reg_m={reg_m:g}: after "
                           f"numItermax={numItermax} iterations its relative change is {change:.3g}, above "
                           f"stopThr={stopThr:g}; increase numItermax (or reg), or decrease reg_m")
    value = float((plan * M).sum())
    value += reg * _generalised_kl(xp, plan, a[:, None] * b[None, :])
    value += reg_m * _generalised_kl(xp, plan.sum(axis=1), a)
    value += reg_m * _generalised_kl(xp, plan.sum(axis=0), b)
    return value


def unbalanced_distance(mu, nu, reg=0.05, reg_m=1.0, p=2, mu_weights=None, nu_weights=None,
                        numItermax=20_000, stopThr=1e-10):
    r"""A transport distance between signed measures, or nonnegative ones of unequal mass.

    Parameters
    ----------
    mu, nu : Measure, or array of shape (k, D) (or (k,))
        Signed measures: a :class:`Measure`, or particles with signed weights ``mu_weights`` /
        ``nu_weights`` (default uniform 1/k). For a network pass ``net.to_measure()`` (its measure
        on the sphere) or ``net.particles()`` (its lifted particles).
    reg : float, default 0.05
        Entropic regularisation eps, in the units of the cost |x - y|^p. eps = 0.05 blurs the
        transport over a length eps^(1/p) (0.22 for p = 2: 13 degrees on the unit sphere, where
        squared chord distances lie in [0, 4]).
    reg_m : float, default 1.0
        Marginal relaxation rho: creating or destroying mass m costs about rho * m, so mass is
        transported only over distances up to about rho^(1/p) (the "reach", 1 = 60 degrees on the
        unit sphere) and created or destroyed beyond. rho -> infinity gives balanced OT.
    p : float, default 2
        The cost |x - y|^p, 1 <= p <= 2 (where the kernel exp(-|x - y|^p / reg) is positive definite, which the
        positivity of S_eps needs; for p > 2, a ValueError).
    mu_weights, nu_weights : array of shape (k,), optional
    numItermax, stopThr
        Passed to POT's unbalanced Sinkhorn; a RuntimeError is raised when it reports numerical
        errors, or when numItermax iterations end with a relative change of the scalings still
        above stopThr (not converged: the value would be that of a plan that is not optimal).

    Returns
    -------
    float
        sqrt(max(S_eps(alpha, beta), 0)) with alpha = mu^+ + nu^- and beta = nu^+ + mu^-, S_eps the
        debiased unbalanced Sinkhorn divergence below: 0 when mu = nu, positive otherwise.

    Notes
    -----
    For nonnegative measures alpha, beta,

        OT_eps(alpha, beta) = min_pi <C, pi> + eps KL(pi | alpha x beta)
                              + rho KL(pi 1 | alpha) + rho KL(pi^T 1 | beta),
        S_eps(alpha, beta) = OT_eps(alpha, beta) - OT_eps(alpha, alpha)/2 - OT_eps(beta, beta)/2
                             + eps (m(alpha) - m(beta))^2 / 2,

        with KL(p | q) = sum p log(p/q) - p + q and C_ij = |x_i - y_j|^p. S_eps is nonnegative
        and vanishes only for alpha = beta (Reference 3 of the module) when exp(-C / eps) is a positive
        universal kernel: the Laplace (p = 1) and Gaussian (p = 2) kernels, and exp(-|x - y|^p / eps) for
        1 < p < 2 (the characteristic function of a symmetric stable law); not for p > 2 (Schoenberg).
        The optimal plan comes from ``ot.unbalanced.sinkhorn_unbalanced`` (generalised Sinkhorn-Knopp,
        in float64); the objective
        is evaluated at it here. POT's log-stabilised variant is not used: on small examples its
        absorption steps oscillate without converging (seen with POT 0.9.7).

    A signed measure mu = mu^+ - mu^- is compared with nu through the nonnegative measures
    mu^+ + nu^- and nu^+ + mu^-, which are equal exactly when mu = nu (Reference 4 of the module).
    Atoms of a signed array are split by the sign of their weight; they need not be merged first.
    A measure without atoms (``mu.negative()`` of a nonnegative mu, say) is the zero measure.

    Examples
    --------
    >>> import numpy as np
    >>> mu = Measure(np.array([1.0, -1.0]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> round(unbalanced_distance(mu, mu), 6)
    0.0
    """
    p = _check_p(p)
    if p > 2:
        raise ValueError(f"p must be in [1, 2] for unbalanced_distance, got {p!r}: the Sinkhorn divergence is "
                         "nonnegative and vanishes only for equal measures when exp(-|x - y|^p / reg) is a positive "
                         "definite kernel, which holds for p <= 2 only (for p = 3 it was negative, and the distance "
                         "0, between different measures)")
    reg, reg_m = check_positive(reg, "reg"), check_positive(reg_m, "reg_m")
    numItermax = check_integer(numItermax, "numItermax", minimum=1)
    stopThr = check_nonnegative(stopThr, "stopThr")
    xp, X, Y, wx, wy = _pair(mu, nu, mu_weights, nu_weights, signed=True)
    # float64 for the Sinkhorn iterations: exp(-C / eps) underflows early in float32
    X, Y, wx, wy = (v.astype(xp.float64, copy=False) for v in (X, Y, wx, wy))
    px, py = wx > 0, wy > 0
    nx_, ny_ = wx < 0, wy < 0
    A = xp.concatenate([X[px], Y[ny_]])  # atoms of alpha = mu^+ + nu^-
    a = xp.concatenate([wx[px], -wy[ny_]])
    B = xp.concatenate([Y[py], X[nx_]])  # atoms of beta = nu^+ + mu^-
    b = xp.concatenate([wy[py], -wx[nx_]])
    ma, mb = float(a.sum()), float(b.sum())
    if A.shape[0] == 0 or B.shape[0] == 0:
        # one side is the zero measure: the only plan is 0, so OT_eps(alpha, 0) = rho m(alpha)
        return float(np.sqrt(max(0.5 * reg * (ma - mb) ** 2 + _zero_side(xp, A, a, B, b, p, reg, reg_m,
                                                                         numItermax, stopThr), 0.0)))
    args = (p, reg, reg_m, numItermax, stopThr)
    S = (_uot(xp, A, a, B, b, *args) - 0.5 * _uot(xp, A, a, A, a, *args) - 0.5 * _uot(xp, B, b, B, b, *args)
         + 0.5 * reg * (ma - mb) ** 2)
    return float(np.sqrt(max(S, 0.0)))


def _zero_side(xp, A, a, B, b, p, reg, reg_m, numItermax, stopThr):
    """OT_eps(alpha, 0) - OT_eps(alpha, alpha)/2 - OT_eps(0, 0)/2 where one measure is zero.

    With beta = 0 the only plan is pi = 0, so OT_eps(alpha, 0) = rho KL(0 | alpha) = rho m(alpha).
    """
    nonzero_X, nonzero_w = (A, a) if A.shape[0] else (B, b)
    if nonzero_X.shape[0] == 0:
        return 0.0
    m = float(nonzero_w.sum())
    return reg_m * m - 0.5 * _uot(xp, nonzero_X, nonzero_w, nonzero_X, nonzero_w, p, reg, reg_m, numItermax, stopThr)


# --------------------------------------------------------------------------- conditional gradient

_VARIANTS = ("fully-corrective", "sliding", "classic")
_STEP_RULES = ("line-search", "2/(t+2)")


def _design(X, bias):
    """The inputs as host float64 rows z_i, (x_i, 1) with a bias: shape (n, D), refused unless D >= 2."""
    Z = to_numpy(X).astype(np.float64, copy=False)
    Z = np.hstack([Z, np.ones((Z.shape[0], 1))]) if bias else Z
    if Z.shape[1] < 2:
        raise ValueError(f"X has shape {tuple(X.shape)}: atoms need D >= 2 coordinates to lie on S^(D-1) "
                         "(use bias=True for inputs on the line)")
    return Z


def _check_candidates(candidates, D):
    """An int number of random directions, or a fixed dictionary (host float64 rows on S^{D-1})."""
    if isinstance(candidates, numbers.Integral) and not isinstance(candidates, bool):
        return check_integer(candidates, "candidates", minimum=1)
    if np.ndim(candidates) == 0:  # a bool or a float, which check_on_sphere would call 'an array'
        raise ValueError(f"candidates must be an int >= 1 (random directions per oracle call) or a dictionary of "
                         f"shape (m, {D}), got {candidates!r} ({type(candidates).__name__})")
    C = check_on_sphere(candidates, "candidates")
    if C.shape[0] == 0 or C.shape[1] != D:
        raise ValueError(f"candidates must be an int (random directions per oracle call) or a dictionary of shape "
                         f"(m, {D}) with m >= 1 atoms on S^{D - 1}, got shape {tuple(C.shape)}")
    return to_numpy(C).astype(np.float64)


def best_neuron(r, X, *, activation="relu", candidates=1000, refine=20, subsample=None, bias=False, rng=None):
    r"""The linear minimisation oracle of conditional gradient: argmax_theta |<r, sigma(<theta, X>)>| on the sphere.

    Parameters
    ----------
    r : array of shape (n,)
        A residual (or any weights on the data points).
    X : array of shape (n, d)
        Inputs (any rows of R^d: they need not lie on the sphere).
    activation : str or activation object, default "relu"
    candidates : int or array of shape (m, D)
        Number of random directions drawn uniformly on S^{D-1} (then refined), or a fixed dictionary of
        atoms, searched exactly (no refinement).
    refine : int, default 20
        Iterations of L-BFGS-B started at the best random direction, on theta -> -<r, sigma(<theta/|theta|,
        x>)>^2; 0 keeps the best candidate. Ignored for a fixed dictionary.
    subsample : int, optional
        Search (candidates and refinement) on this many points drawn without replacement (always drawn when
        given, even if n is smaller: a permutation); default all of them. Ignored for a fixed dictionary
        (searched on all the points).
    bias : bool, default False
        Atoms on S^d in R^{d+1} acting on (x, 1).
    rng : None, int or numpy.random.Generator
        The subsample, then the candidates, are drawn from it, in that order.

    Returns
    -------
    theta : numpy array of shape (D,)
        A unit vector (float64, on the host), D = d (+ 1 with a bias).
    value : float
        (1/n) <r, sigma(<theta, X>)> over all n points, with its sign.

    Notes
    -----
    For the square loss F(mu) = (1/2n) sum_i (f_mu(x_i) - y_i)^2 the first variation of F at mu is
    F'(mu)(theta) = (1/n) sum_i r_i sigma(<theta, x_i>), r = f_mu(X) - y, and the linear minimisation over
    {|nu|_TV <= R} is attained at -R sign(F'(theta*)) delta_{theta*}, theta* maximising |F'|: the best
    single neuron (Bach 2017, Sec. 2.5 and 5). Over a fixed dictionary the search is exact. With random
    candidates it is a heuristic, random directions then a local ascent: on the circle (d = 2) a thousand
    candidates and the refinement find the maximum in practice; for d > 2 nothing guarantees the global
    maximum (for relu the problem is hard in general, Bach 2017, Sec. 5). The refinement follows sigma':
    for the step activation (sigma' = 0 almost everywhere) it never moves, and the answer is the best of
    the random candidates, on the circle too: |F'| is then piecewise constant on arcs between the
    directions orthogonal to the x_i, and 1000 candidates missed the best arc by up to 4% of its value
    (n = 200 Gaussian points, 20 seeds). Give a dictionary there, or more candidates.
    Runs on the host (scipy's L-BFGS-B); device inputs are copied there.

    References
    ----------
    1. F. Bach, arXiv:1412.8690, Sec. 2.5 (conditional gradient) and Sec. 5 (the incremental problem).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.eye(2); r = np.array([1.0, 0.0])
    >>> theta, value = best_neuron(r, X, candidates=np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> theta, value
    (array([1., 0.]), 0.5)
    """
    from scipy.optimize import minimize

    sigma = _resolve_activation(activation)
    Z = _design(check_points(X, "X"), check_bool(bias, "bias"))
    n, D = Z.shape
    r = check_array(r, "r", ndim=1)
    if r.shape[0] != n:
        raise ValueError(f"r has shape {tuple(r.shape)} but X has n={n} rows: one residual per point")
    r = to_numpy(r).astype(np.float64)
    candidates = _check_candidates(candidates, D)
    refine = check_integer(refine, "refine", minimum=0)
    if subsample is not None:
        subsample = check_integer(subsample, "subsample", minimum=1)
    rng = check_random_state(rng)
    if not isinstance(candidates, int):  # the exact search over a dictionary
        return _dictionary_oracle(r, candidates, sigma(Z @ candidates.T))
    Zs, rs = Z, r
    if subsample is not None:
        sub = rng.choice(n, size=min(n, subsample), replace=False)
        Zs, rs = Z[sub], r[sub]
    C = sample_sphere(candidates, D, rng=rng)  # (candidates, D)
    corr0 = rs @ sigma(Zs @ C.T)  # (candidates,)
    theta = C[np.argmax(np.abs(corr0))]
    if refine:
        # the objective divided by its starting value: L-BFGS-B's tolerances (pgtol 1e-5) are absolute, and on
        # -corr^2 itself a residual r of size 1e-3 (or 1e100) stopped the ascent at a different direction
        rs = rs / max(float(np.abs(corr0).max()), np.finfo(float).tiny)

        def objective(w):
            nw = np.linalg.norm(w)
            u = w / nw
            z = Zs @ u
            corr = rs @ sigma(z)
            g_u = (rs * sigma.derivative(z)) @ Zs  # d corr / d u
            g_w = (g_u - (g_u @ u) * u) / nw  # through u = w / |w|
            return -corr * corr, -2 * corr * g_w

        res = minimize(objective, theta, jac=True, method="L-BFGS-B", options={"maxiter": refine})
        theta = res.x / np.linalg.norm(res.x)
    return theta, float(r @ sigma(Z @ theta)) / n


def _dictionary_oracle(r, C, F):
    """:func:`best_neuron` over the dictionary C (m, D) of features F = sigma(Z C^T) (n, m): (theta, value)."""
    corr = r @ F  # (m,)
    j = int(np.argmax(np.abs(corr)))
    return C[j].copy(), float(corr[j]) / F.shape[0]


def _project_l1(v, R):
    """The Euclidean projection of v (k,) on the l1 ball of radius R (Duchi et al. 2008, Fig. 1)."""
    u = np.abs(v)
    if u.sum() <= R:
        return v.copy()
    s = np.sort(u)[::-1]
    cs = np.cumsum(s)
    j = np.arange(1, len(s) + 1)
    rho = np.flatnonzero(s - (cs - R) / j > 0)[-1]
    tau = (cs[rho] - R) / (rho + 1)
    return np.sign(v) * np.maximum(u - tau, 0.0)


def _l1_least_squares(F, y, R, a0, iterations, tol):
    """argmin_{|a|_1 <= R} (1/2n) |F a - y|^2: the least squares solution when it is feasible, else FISTA.

    With G = F^T F / n and b = F^T y / n: first the unconstrained minimiser (Cholesky of G, relative jitter
    1e-12), which is the answer when |a|_1 <= R. Otherwise FISTA with adaptive restart from a0 (projected
    on the ball); every 50 steps its support S and signs s start an active-set search for the exact solution
    of the KKT system G_SS a_S - b_S = -lambda s, <s, a_S> = R, |(G a - b)_j| <= lambda off S, kept when its
    gap is <= tol. Stops when the duality
    gap over these atoms, gap(a) = <G a - b, a> + R max_j |(G a - b)_j|, is <= tol (at least 1e-12, about
    4500 eps, times the size of the gap's terms, L R^2 + R |b|_inf, which bounds its rounding; where the ball
    binds and G is near singular, that size can exceed F itself: the weights are then optimal to 1e-12 of
    it only), or after ``iterations`` steps (then the better of the last iterate and its polish).
    """
    from scipy.linalg import cho_factor, cho_solve

    n, k = F.shape
    G = F.T @ F / n  # (k, k)
    b = F.T @ y / n  # (k,)
    jitter = G.copy()
    jitter[np.diag_indices(k)] += 1e-12 * max(float(np.trace(G)) / k, np.finfo(float).tiny)
    a = cho_solve(cho_factor(jitter), b)
    if float(np.abs(a).sum()) <= R:
        return a

    def gap(a):
        g = G @ a - b
        return float(g @ a) + R * float(np.abs(g).max())

    def polish(a):
        """Active set from the support and signs of a: solve the KKT system on S, drop the atoms whose sign
        flips, add the atom violating |g_j| <= lambda most (with the sign of -g_j), until consistent."""
        S = list(np.flatnonzero(a))
        sign = dict(zip(S, np.sign(a[S])))
        for _ in range(2 * k + 2):
            if not S:
                return None
            sg = np.array([sign[j] for j in S])
            K = np.zeros((len(S) + 1, len(S) + 1))
            K[:-1, :-1] = G[np.ix_(S, S)]
            K[:-1, -1] = K[-1, :-1] = sg
            sol = np.linalg.lstsq(K, np.append(b[S], R), rcond=None)[0]
            flipped = [j for j, x, e in zip(S, sol[:-1], sg) if x * e <= 0]
            if flipped:
                S = [j for j in S if j not in flipped]
                continue
            candidate = np.zeros(k)
            candidate[S] = sol[:-1]
            g = G @ candidate - b
            out = [j for j in range(k) if j not in S]
            if not out or float(np.abs(g[out]).max()) <= sol[-1]:
                return candidate
            j = out[int(np.argmax(np.abs(g[out])))]
            S.append(j)
            sign[j] = -np.sign(g[j])
        return None

    L = max(float(np.linalg.eigvalsh(G)[-1]), np.finfo(float).tiny)  # Lipschitz constant of the gradient
    # The gap is computed to about eps (|<G a, a>| + R |b|_inf) <= eps (L R^2 + R |b|_inf): a smaller tol cannot be
    # met (sliding atoms nearly on top of each other, cond(G) ~ 1e17, ran every solve to its cap: 25-35 s for 30
    # steps where 1.5 s sufficed, the same answer)
    tol = max(tol, 1e-12 * (L * R * R + R * float(np.abs(b).max())))
    a = _project_l1(a0, R)
    p = polish(a)  # a warm start (the previous solve, as sliding's moves make) often has the support already
    if p is not None and gap(p) <= tol:
        return p
    v, s = a.copy(), 1.0
    for i in range(iterations):
        if i % 50 == 49:
            p = polish(a)
            if p is not None and gap(p) <= tol:
                return p
        if i % 10 == 0 and gap(a) <= tol:  # the test costs as much as a step
            return a
        a_next = _project_l1(v - (G @ v - b) / L, R)
        if (v - a_next) @ (a_next - a) > 0:  # momentum points uphill: restart (O'Donoghue & Candes 2015)
            v, s = a.copy(), 1.0
            continue
        s_next = 0.5 * (1 + math.sqrt(1 + 4 * s * s))
        v = a_next + ((s - 1) / s_next) * (a_next - a)
        a, s = a_next, s_next
    p = polish(a)
    return a if p is None or gap(p) > gap(a) else p


def _slide(Theta, a, Z, y, sigma, R, iterations, inner_iterations, tol):
    """Move the atoms Theta (k, D) by L-BFGS on W -> min_{|a|_1 <= R} (1/2n) |sigma(Z U^T) a - y|^2, U = W/|W|
    (variable projection: by Danskin's theorem the gradient is the partial gradient at the optimal a)."""
    from scipy.optimize import minimize

    k, D = Theta.shape
    n = Z.shape[0]
    last = [a]
    scale = [1.0]  # the loss is divided by its starting value: L-BFGS-B's tolerances are then relative

    def objective(w):
        W = w.reshape(k, D)
        nw = np.linalg.norm(W, axis=1, keepdims=True)
        U = W / nw
        S = Z @ U.T  # (n, k)
        F = sigma(S)
        a = last[0] = _l1_least_squares(F, y, R, last[0], inner_iterations, tol)
        res = F @ a - y
        G_u = ((res[:, None] * sigma.derivative(S)) * a).T @ Z / n  # (k, D): d/dU
        G_w = (G_u - np.sum(G_u * U, axis=1, keepdims=True) * U) / nw
        return 0.5 * float(res @ res) / n / scale[0], G_w.ravel() / scale[0]

    scale[0] = max(objective(Theta.ravel())[0], np.finfo(float).tiny)
    res = minimize(objective, Theta.ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": iterations, "ftol": 1e-15, "gtol": 1e-12})
    W = res.x.reshape(k, D)
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def _merge_atoms(Theta, a, Z, sigma, atol):
    """Merge the atoms Theta (k, D) of weights a (k,) that sliding brought together, without changing f on Z.

    1. Atoms within Euclidean distance atol (transitively, :func:`_merge_labels`) become the group's first
       atom with the sum of their weights: f_mu(x) moves by at most sum_j |a_j| Lip(sigma) atol |x| (nothing
       for coincident atoms), and |mu|_TV does not grow (|sum a_j| <= sum |a_j|).
    2. For sigma positively homogeneous of degree 1 (relu, abs): sigma(z) = z sigma(sign z) is linear on each
       half line, so on the cone of the directions with one sign pattern s_i = sign(<z_i, theta>) on the data,
       sigma(Z theta) = diag(sigma(s)) Z theta is linear in theta. Atoms with the same pattern and weights of
       one sign s then merge into v = sum_j |a_j| theta_j: one atom v/|v| (in the same convex cone) of weight
       s |v|, the same f on Z up to rounding, and |v| <= sum_j |a_j|. Degree 0 (step): the columns
       sigma(Z theta) of one pattern are equal, their weights add.

    Returns the merged (Theta, a), in the order of first appearance. On the data the merge changes neither
    F nor (being a rewrite of the same function on Z, feasible) the optimality of the weights.
    """
    labels, first = _merge_labels(Theta, atol)
    a = np.bincount(labels, weights=a, minlength=len(first))
    Theta = Theta[first]
    degree = sigma.homogeneity
    if degree not in (0, 1) or len(a) < 2:
        return Theta, a
    pattern = np.sign(Z @ Theta.T).T  # (k, n)
    key = pattern if degree == 0 else np.hstack([pattern, np.sign(a)[:, None]])
    _, first, labels = np.unique(key, axis=0, return_index=True, return_inverse=True)
    labels = labels.reshape(-1)
    if len(first) == len(a):
        return Theta, a
    order = np.argsort(first, kind="stable")  # groups numbered by their first atom
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    labels, first = rank[labels], first[order]
    if degree == 0:
        return Theta[first], np.bincount(labels, weights=a, minlength=len(first))
    V = np.zeros((len(first), Theta.shape[1]))  # (groups, D)
    np.add.at(V, labels, np.abs(a)[:, None] * Theta)
    nv = np.linalg.norm(V, axis=1)  # > 0: a conic combination of directions of one open cone
    return V / nv[:, None], np.sign(a[first]) * nv


def conditional_gradient(X, y, radius, *, activation="relu", steps=100, variant="fully-corrective",
                         step_rule="line-search", candidates=1000, refine=20, slide_iterations=50,
                         inner_iterations=2000, tol=None, bias=False, rng=None, progress=False):
    r"""Least squares over the variation-norm ball {|mu|_TV <= R} by conditional gradient (Frank-Wolfe).

    Minimises F(mu) = (1/2n) sum_i (f_mu(x_i) - y_i)^2, f_mu(x) = int sigma(<theta, x>) dmu(theta), over
    signed measures mu on the sphere with |mu|(S^{D-1}) <= R (Bach's convex neural network with an F1
    constraint), one neuron added per step.

    Parameters
    ----------
    X : array of shape (n, d)
        Inputs (rows of R^d; they need not lie on the sphere).
    y : array of shape (n,)
        Targets.
    radius : float
        R > 0, the bound on the total variation of mu.
    activation : str or activation object, default "relu"
    steps : int, default 100
        Iterations t = 0, ..., steps - 1 (each adds at most one atom).
    variant : {"fully-corrective", "sliding", "classic"}
        * "classic": mu_{t+1} = (1 - gamma_t) mu_t + gamma_t s_t, s_t = -R sign(F'(theta_t)) delta_{theta_t};
        * "fully-corrective": after adding theta_t, the weights of all atoms are re-solved,
          min over |a|_1 <= R of (1/2n) |sum_j a_j sigma(<theta_j, X>) - y|^2 (the least squares
          solution when it lies in the ball, else FISTA with restarts polished by an active set);
          atoms whose weight is 0 are dropped;
        * "sliding": as "fully-corrective", then all the atoms move jointly (Denoyelle et al. 2019), by
          L-BFGS on their positions with the weights re-solved at each position (variable projection,
          ``slide_iterations``); the step keeps |mu|_TV <= R and never raises F. Then the atoms it brought
          together merge: those within sqrt(eps) of each other, and, for a
          sigma positively homogeneous of degree 1 or 0 (relu, abs, step), those of one sign pattern on the
          data and one weight sign, exactly (the same f on the data, |mu|_TV not larger). Without the merge,
          atoms piled up in one such cone, their Gram matrix near singular, and the weight solves ran long
          where the ball binds: 30 steps on 60 points in d = 2 took 12 s (25 atoms), now 0.6 s (3 atoms).
    step_rule : {"line-search", "2/(t+2)"}
        gamma_t of the classic variant: the exact minimiser over [0, 1] (F is quadratic along the segment),
        or the open-loop 2/(t+2).
    candidates : int or array of shape (m, D), default 1000
        For the oracle (:func:`best_neuron`): random directions per step, or a fixed dictionary (then
        the problem is the l1-constrained least squares over its atoms, and the oracle is exact).
    refine : int, default 20
        L-BFGS-B iterations of the oracle (random candidates only).
    slide_iterations : int, default 50
        L-BFGS iterations of each sliding step.
    inner_iterations : int, default 2000
        Cap on the FISTA iterations of each weight solve.
    tol : float, optional
        Stop when the duality gap falls to tol or below; default None: run all the steps (with a random
        oracle a gap of 0 may be a search that missed).
    bias : bool, default False
        Atoms on S^d in R^{d+1}, f_mu(x) = int sigma(<theta, (x, 1)>) dmu(theta).
    rng : None, int or numpy.random.Generator
        For the oracle's random directions.
    progress : bool, default False
        Show a tqdm bar of the steps.

    Returns
    -------
    mu : Measure
        The last iterate, with ``activation`` and ``bias``; dtype and device of X.
    history : dict of numpy arrays, of length T + 1 (T the steps made)
        ``"objective"``: F(mu_t); ``"gap"``: the Frank-Wolfe duality gap at mu_t, computed at the oracle's
        answer; ``"support"``: the number of atoms of mu_t; t = 0 (mu_0 = 0), ..., T (the returned mu).

    Notes
    -----
    With r = f_mu(X) - y, the first variation is F'(mu)(theta) = (1/n) <r, sigma(<theta, X>)>; the oracle
    returns theta_t maximising |F'(mu_t)| (or the best current atom, if a random search found less) and
    the duality gap is

        g(mu) = int F'(mu) dmu + R max_theta |F'(mu)(theta)| = (1/n) <r, f_mu(X)> + R |F'(mu)(theta_t)|.

    By convexity F(mu) - F* <= g(mu) (Jaggi 2013, Sec. 2): the gap is a certificate of suboptimality of
    the constrained problem (there is no such certificate for the penalised form without a bound on
    |mu*|). It is one only when the oracle is exact: over a fixed dictionary, and, up to the resolution of
    the search, on the circle (d = 2), for an activation with a useful derivative (relu; not the step,
    whose sigma' = 0 almost everywhere leaves the oracle its random candidates and the sliding step its
    atoms unmoved: see :func:`best_neuron`). For d > 2 the oracle is a heuristic (random directions and a
    local ascent) and the reported gap, computed at its answer, is a lower estimate of the true gap.

    With an exact oracle the classic variant (either step rule) satisfies F(mu_t) - F* <= 2 C / (t + 2)
    (Jaggi 2013, Theorem 1), C the curvature constant; F being quadratic, C = sup (1/n) |f_s(X) - f_mu(X)|^2
    over s, mu in the ball, at most 4 R^2 max_theta (1/n) |sigma(<theta, X>)|^2. With exact weight solves the
    fully-corrective iterates are never worse than a classic step from the same mu_t. Every iterate has
    |mu_t|_TV <= R (up to rounding).

    Runs on the host in float64 (scipy's L-BFGS; the weight solves on k x k Gram matrices); device
    inputs are copied there and the measure moved back.

    References
    ----------
    1. F. Bach, "Breaking the curse of dimensionality with convex neural networks", JMLR 18, 2017,
       arXiv:1412.8690, Sec. 2.5 (conditional gradient) and Sec. 5.
    2. M. Jaggi, "Revisiting Frank-Wolfe: projection-free sparse convex optimization", ICML 2013
       (duality gap, Theorem 1 rate, fully-corrective variant).
    3. Q. Denoyelle, V. Duval, G. Peyre and E. Soubies, "The sliding Frank-Wolfe algorithm and its
       application to super-resolution microscopy", Inverse Problems 36, 2019, arXiv:1811.06416.
    4. J. Duchi, S. Shalev-Shwartz, Y. Singer and T. Chandra, "Efficient projections onto the l1-ball for
       learning in high dimensions", ICML 2008 (the projection of the weight solves).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((50, 2))
    >>> y = np.maximum(X @ np.array([0.6, 0.8]), 0)              # one neuron, |mu|_TV = 1
    >>> mu, history = conditional_gradient(X, y, 2.0, steps=10, variant="sliding", rng=0)
    >>> bool(history["objective"][-1] < 1e-8), mu.total_variation() <= 2.0
    (True, True)
    """
    X, y = check_samples(X, y)
    R = check_positive(radius, "radius")
    sigma = _resolve_activation(activation)
    steps = check_integer(steps, "steps", minimum=0)
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    if step_rule not in _STEP_RULES:
        raise ValueError(f"step_rule must be one of {_STEP_RULES}, got {step_rule!r}")
    bias = check_bool(bias, "bias")
    Z = _design(X, bias)  # (n, D)
    n, D = Z.shape
    candidates = _check_candidates(candidates, D)
    if variant == "sliding" and not isinstance(candidates, int):
        raise ValueError("variant='sliding' moves the atoms off a fixed dictionary: give candidates as an int, "
                         "or use variant='fully-corrective'")
    refine = check_integer(refine, "refine", minimum=0)
    slide_iterations = check_integer(slide_iterations, "slide_iterations", minimum=1)
    inner_iterations = check_integer(inner_iterations, "inner_iterations", minimum=1)
    tol = None if tol is None else check_nonnegative(tol, "tol")
    rng = check_random_state(rng)
    yh = to_numpy(y).astype(np.float64)
    # a fixed dictionary's features, for the exact oracle: made once, not at every step
    dictionary = None if isinstance(candidates, int) else sigma(Z @ candidates.T)  # (n, m)

    Theta = np.zeros((0, D))  # (k, D) atoms
    a = np.zeros(0)  # (k,) weights
    f = np.zeros(n)  # f_mu(X)
    inner_tol = 1e-13 * max(0.5 * float(yh @ yh) / n, np.finfo(float).tiny)
    merge_atol = sphere_tolerance(np.float64)  # sliding's collisions: see _merge_atoms
    history = {"objective": [], "gap": [], "support": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"conditional gradient ({variant})", unit="step", leave=False)
    try:
        for t in range(steps + 1):
            r = f - yh
            if dictionary is None:
                theta, value = best_neuron(r, Z, activation=sigma, candidates=candidates, refine=refine, rng=rng)
            else:
                theta, value = _dictionary_oracle(r, candidates, dictionary)
            if len(a):  # a random search may miss what the current atoms reach: then the best of them
                corr = r @ sigma(Z @ Theta.T) / n  # (k,)
                j = int(np.argmax(np.abs(corr)))
                if abs(corr[j]) > abs(value):
                    theta, value = Theta[j].copy(), float(corr[j])
            gap = float(r @ f) / n + R * abs(value)
            history["objective"].append(0.5 * float(r @ r) / n)
            history["gap"].append(gap)
            history["support"].append(len(a))
            if t == steps or (tol is not None and gap <= tol):
                break
            s = -R * math.copysign(1.0, value) * sigma(Z @ theta)  # f of the vertex s_t
            same = np.flatnonzero((Theta == theta).all(axis=1))
            if variant == "classic":
                if step_rule == "2/(t+2)":
                    gamma = 2.0 / (t + 2)
                else:  # argmin over [0, 1] of |r + gamma (s - f)|^2, where <r, f - s> = n gap
                    e = s - f
                    ee = float(e @ e)
                    gamma = 0.0 if ee == 0 else min(max(n * gap / ee, 0.0), 1.0)
                a = (1 - gamma) * a
                if gamma == 0:  # no step (a zero gap): no new atom of weight 0
                    pass
                elif same.size:
                    a[same[0]] -= gamma * R * math.copysign(1.0, value)
                else:
                    Theta = np.vstack([Theta, theta])
                    a = np.append(a, -gamma * R * math.copysign(1.0, value))
                f = (1 - gamma) * f + gamma * s
            else:
                if not same.size:
                    Theta = np.vstack([Theta, theta])
                    a = np.append(a, 0.0)
                F = sigma(Z @ Theta.T)  # (n, k)
                a = _l1_least_squares(F, yh, R, a, inner_iterations, inner_tol)
                if variant == "sliding":
                    keep = a != 0
                    Theta, a = Theta[keep], a[keep]
                    if len(a):
                        Theta = _slide(Theta, a, Z, yh, sigma, R, slide_iterations, inner_iterations, inner_tol)
                        F = sigma(Z @ Theta.T)
                        a = _l1_least_squares(F, yh, R, a, inner_iterations, inner_tol)
                        keep = a != 0
                        Theta, a = _merge_atoms(Theta[keep], a[keep], Z, sigma, merge_atol)
                        F = sigma(Z @ Theta.T)
                    else:
                        F = F[:, :0]
                keep = a != 0
                Theta, a, F = Theta[keep], a[keep], F[:, keep]
                f = F @ a
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    device = device_of(X)
    mu = Measure(to_device(a.astype(X.dtype), device), to_device(Theta.astype(X.dtype), device),
                 activation=sigma, bias=bias)
    return mu, {key: np.array(value) for key, value in history.items()}
