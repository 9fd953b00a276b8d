r"""Depth separation: functions that deep relu networks express cheaply and shallow ones do not.

Four constructions, each with the target, the input law, and an explicit deeper network:

* Telgarsky (2016): the tent map t(x) = 2 relu(x) - 4 relu(x - 1/2) (= 2x on [0, 1/2],
  2 - 2x on [1/2, 1]) composed k times is the sawtooth with 2^k linear pieces on [0, 1], a relu
  network with k hidden layers of 2 neurons (:func:`sawtooth`). A one-hidden-layer relu network of
  width m is affine on at most m + 1 pieces of a line, hence far from the sawtooth unless
  m >~ 2^{k-1} (:func:`sawtooth_l1_lower_bound`). :func:`count_linear_pieces` counts pieces
  by tracking the breakpoints layer by layer (no sampling; exact with exact=True), against the
  most a network of given widths can have, prod_l (n_l + 1) (:func:`max_pieces`).
* Eldan & Shamir (2016): inputs with density phi^2, phi the Fourier transform of the indicator of
  the ball of unit volume (:func:`eldan_shamir_density`, :func:`sample_eldan_shamir`), and a
  radial target, a sum of +-1 on thin shells (:class:`EldanShamirFunction`), which a 3-layer
  relu network computes (the first hidden layer builds |x|^2 from piecewise-linear squares of the
  coordinates, the second a piecewise-linear function of |x|^2), while 2-layer networks need a
  width exponential in d.
* Safran & Shamir (2017): the indicator of the unit ball, computed by the same kind of 3-layer
  network exactly away from a shell around the sphere (:func:`ball_indicator_network`).
* Daniely (2017): sin(pi d^3 <x, y>) for x, y independent and uniform on S^{d-1}
  (:func:`daniely_function`, :func:`sample_daniely`), a 3-layer network computing <x, y> from
  squares ((x_i + y_i)^2 - (x_i - y_i)^2) / 4 and then the sine (:func:`daniely_network`). The
  lower bound for depth 2 rests on the harmonic spectrum of the target: its Funk-Hecke
  coefficients in closed form (:func:`daniely_funk_hecke`) and its squared L2 norm
  (:func:`daniely_energy`).

Deep networks are :class:`DeepReLU` objects: affine layers with relu between them, evaluable on
numpy and CuPy arrays. A layer may be stored as a rank-one :class:`RankOneWeights` u v^T (the
second layer of the 3-layer constructions: every neuron reads the same sum q_hat), in n_out + n_in
entries. Counting pieces and measuring exact L1 distances run on the host.

References
----------
1. M. Telgarsky, "Benefits of depth in neural networks", COLT 2016, arXiv:1602.04485, Theorem 1.1
   and Sec. 3 (the sawtooth, counting affine pieces).
2. R. Eldan and O. Shamir, "The power of depth for feedforward neural networks", COLT 2016,
   arXiv:1512.03965, Theorem 1 (the density phi^2 and the radial target of its proof).
3. I. Safran and O. Shamir, "Depth-width tradeoffs in approximating natural functions with neural
   networks", ICML 2017, arXiv:1610.09887 (the indicator of the unit ball).
4. A. Daniely, "Depth separation for neural networks", COLT 2017, arXiv:1702.08489 (the function
   sin(pi d^3 <x, y>) on the product of spheres).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np
from scipy import special

from ._validation import (cast_within_range, check_array, check_bool, check_float_dtype, check_integer,
                          check_nonnegative, check_points, check_positive, check_random_state)
from .backend import device_of, get_xp, row_norms, to_device, to_numpy
from .networks import BLOCK_BYTES, TwoLayer

__all__ = [
    "DeepReLU",
    "RankOneWeights",
    "PiecewiseLinear",
    "sawtooth",
    "linear_pieces",
    "count_linear_pieces",
    "l1_distance",
    "max_pieces_two_layer",
    "max_pieces",
    "sawtooth_l1_lower_bound",
    "radial_network",
    "unit_ball_radius",
    "eldan_shamir_phi",
    "eldan_shamir_density",
    "eldan_shamir_radial_density",
    "eldan_shamir_radial_cdf",
    "sample_eldan_shamir",
    "EldanShamirFunction",
    "ball_indicator",
    "ball_indicator_network",
    "daniely_function",
    "sample_daniely",
    "daniely_network",
    "daniely_funk_hecke",
    "daniely_energy",
]


# --------------------------------------------------------------------------------------------
# Deep relu networks.
# --------------------------------------------------------------------------------------------

class RankOneWeights:
    r"""A rank-one weight matrix W = u v^T of shape (n_out, n_in), stored as its two factors.

    A layer of a :class:`DeepReLU` may be given as one: it takes n_out + n_in entries instead of
    n_out n_in, and maps a batch of N inputs in O(N (n_out + n_in)) time instead of O(N n_out n_in).

    Parameters
    ----------
    u : array of shape (n_out,)
    v : array of shape (n_in,)
        On one device (numpy or cupy), finite. The dtype is their common one.

    Attributes
    ----------
    u, v : arrays
        The factors, W[i, j] = u[i] v[j].

    Notes
    -----
    H @ W.T (the layer applied to the rows of H, shape (N, n_in)) is computed as the outer
    product of H v (N,) with u: one dot product per row, then one product per entry. With u = 1
    (all the 3-layer constructions of this module) the entries are the dot products themselves,
    the same numbers as the dense product up to the order of summation. Operators: ``W @ X``
    (X of shape (n_in,) or (n_in, k)) and ``H @ W`` (H of shape (..., n_out)) are computed the same
    way, and ``W.T`` is the rank-one (n_in, n_out) matrix v u^T. :meth:`dense` builds the
    (n_out, n_in) array.

    Examples
    --------
    >>> import numpy as np
    >>> W = RankOneWeights(np.array([1.0, 2.0]), np.array([3.0, 0.0, -1.0]))
    >>> W.shape, W.size
    ((2, 3), 5)
    >>> W.dense()
    array([[ 3.,  0., -1.],
           [ 6.,  0., -2.]])
    >>> (np.array([[1.0, 1.0, 1.0]]) @ W.T).tolist()     # the layer applied to one row
    [[2.0, 4.0]]
    """

    __array_ufunc__ = None  # numpy defers `ndarray @ W` to W.__rmatmul__
    __array_priority__ = 2000  # as does CuPy

    def __init__(self, u, v):
        u = check_array(u, "u", ndim=1)
        v = check_array(v, "v", ndim=1)
        xp = get_xp(u, v)
        dtype = xp.result_type(u.dtype, v.dtype)
        self.u = u.astype(dtype, copy=False)
        self.v = v.astype(dtype, copy=False)

    @property
    def shape(self) -> tuple:
        """(n_out, n_in)."""
        return (int(self.u.shape[0]), int(self.v.shape[0]))

    @property
    def size(self) -> int:
        """The number of stored entries, n_out + n_in (not n_out n_in)."""
        return int(self.u.shape[0] + self.v.shape[0])

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self):
        """The common dtype of u and v."""
        return self.u.dtype

    @property
    def T(self) -> RankOneWeights:
        """W^T = v u^T, of shape (n_in, n_out)."""
        return RankOneWeights(self.v, self.u)

    def dense(self):
        """W as an array of shape (n_out, n_in), on the factors' device: n_out n_in entries."""
        return self.u[:, None] * self.v[None, :]

    def astype(self, dtype, copy=True) -> RankOneWeights:
        """The factors cast to ``dtype``."""
        return RankOneWeights(self.u.astype(dtype, copy=copy), self.v.astype(dtype, copy=copy))

    def __matmul__(self, X):
        """W @ X for X of shape (n_in,) or (n_in, k): u (v . X)."""
        X = get_xp(X, self.v).asarray(X)
        if X.ndim not in (1, 2) or X.shape[0] != self.shape[1]:
            raise ValueError(f"W @ X needs X of shape ({self.shape[1]},) or ({self.shape[1]}, k), got {tuple(X.shape)}")
        s = self.v @ X  # () or (k,)
        return self.u * s if X.ndim == 1 else self.u[:, None] * s[None, :]

    def __rmatmul__(self, H):
        """H @ W for H of shape (..., n_out): (H . u) v^T."""
        H = get_xp(H, self.u).asarray(H)
        if H.ndim < 1 or H.shape[-1] != self.shape[0]:
            raise ValueError(f"H @ W needs H of shape (..., {self.shape[0]}), got {tuple(H.shape)}")
        return (H @ self.u)[..., None] * self.v

    def __repr__(self):
        return f"RankOneWeights(shape={self.shape}, dtype={np.dtype(self.dtype).name})"


def _apply_layer(H, W):
    """H @ W^T, the layer W (an array or a RankOneWeights) applied to the rows of H (N, n_in): (N, n_out)."""
    if isinstance(W, RankOneWeights):
        return (H @ W.v)[:, None] * W.u[None, :]
    return H @ W.T


class _DenseWeights(Sequence):
    """The weights W_l of a DeepReLU as arrays, a RankOneWeights layer materialised each time it is read."""

    def __init__(self, stored):
        self._stored = stored

    def __len__(self):
        return len(self._stored)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        W = self._stored[i]
        return W.dense() if isinstance(W, RankOneWeights) else W

    def __repr__(self):
        return f"<weights of {len(self)} layers, shapes {[tuple(W.shape) for W in self._stored]}>"


class DeepReLU:
    r"""A deep relu network f(x) = W_L relu(... relu(W_1 x + b_1) ...) + b_L.

    Parameters
    ----------
    weights : list of arrays or RankOneWeights
        W_1 of shape (n_1, d), W_2 of shape (n_2, n_1), ..., W_L of shape (n_L, n_{L-1});
        L >= 1 affine layers, relu after each but the last. A layer given as a
        :class:`RankOneWeights` u v^T is stored and applied by its factors.
    biases : list of arrays
        b_l of shape (n_l,), one per layer.
    meta : dict, optional
        Free-form facts about a construction (its parameters, a proven uniform error bound ...).

    Attributes
    ----------
    stored_weights : list of arrays or RankOneWeights
        The W_l as stored, on one device (numpy or cupy) and in one dtype (float32 or float64).
    biases : list of arrays
        On the same device, in the same dtype.

    Notes
    -----
    L - 1 hidden layers: with the conventions of the depth-separation papers a "2-layer network"
    has one hidden layer (L = 2, a :class:`shallow.networks.TwoLayer` with relu and a bias, see
    :meth:`from_two_layer`) and a "3-layer network" two (L = 3). The output has n_L coordinates;
    with n_L = 1 a call returns shape (n,).

    ``weights[l]`` is W_{l+1} as an array: a rank-one layer is materialised when it is read
    (n_l n_{l-1} entries, 2.5 GB for the second layer of ``daniely_network(10)``); read
    ``stored_weights[l]`` for its factors. :attr:`stored_entries` counts what is stored.

    Examples
    --------
    >>> import numpy as np
    >>> net = DeepReLU([np.array([[1.0], [1.0]]), np.array([[2.0, -4.0]])], [np.array([0.0, -0.5]), np.zeros(1)])
    >>> net(np.array([[0.25], [0.5], [0.75]]))       # the tent map
    array([0.5, 1. , 0.5])
    >>> net.widths, net.depth
    ((2,), 2)
    >>> rank_one = DeepReLU([np.array([[1.0], [1.0]]), RankOneWeights(np.ones(1), np.array([2.0, -4.0]))],
    ...                     [np.array([0.0, -0.5]), np.zeros(1)])    # the same W_2, by its factors
    >>> rank_one(np.array([[0.25], [0.5], [0.75]])), rank_one.weights[1]
    (array([0.5, 1. , 0.5]), array([[ 2., -4.]]))
    """

    def __init__(self, weights, biases, meta=None):
        if isinstance(weights, _DenseWeights):  # another network's ``weights``: its layers as stored (factors kept)
            weights = list(weights._stored)
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)) or not weights:
            raise ValueError("weights must be a non-empty list of 2-D arrays W_l of shape (n_l, n_{l-1})")
        if not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
            raise ValueError(f"biases must be a list of {len(weights)} arrays (one per layer), got "
                             f"{len(biases) if isinstance(biases, (list, tuple)) else type(biases).__name__}")
        Ws = [W if isinstance(W, RankOneWeights) else check_array(W, f"weights[{i}]", ndim=2)
              for i, W in enumerate(weights)]
        bs = [check_array(b, f"biases[{i}]", ndim=1) for i, b in enumerate(biases)]
        xp = get_xp(*_stored_arrays(Ws), *bs)
        for i, (W, b) in enumerate(zip(Ws, bs)):
            if b.shape[0] != W.shape[0]:
                raise ValueError(f"biases[{i}] has shape {tuple(b.shape)} but weights[{i}] has shape "
                                 f"{tuple(W.shape)}: one bias per neuron")
            if i and W.shape[1] != Ws[i - 1].shape[0]:
                raise ValueError(f"weights[{i}] has shape {tuple(W.shape)} but layer {i - 1} has "
                                 f"{Ws[i - 1].shape[0]} neurons")
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a dict of facts about the construction, got {type(meta).__name__}")
        dtype = check_float_dtype(xp.result_type(*[W.dtype for W in Ws], *[b.dtype for b in bs]),
                                  "the common dtype of weights and biases")
        self.stored_weights = [W.astype(dtype, copy=False) for W in Ws]
        self.biases = [b.astype(dtype, copy=False) for b in bs]
        self.meta = dict(meta or {})

    @property
    def weights(self) -> Sequence:
        """W_1, ..., W_L as arrays; a rank-one layer is materialised (n_l n_{l-1} entries) each time it is read."""
        return _DenseWeights(self.stored_weights)

    @classmethod
    def from_two_layer(cls, net: TwoLayer) -> DeepReLU:
        """The same function as a relu :class:`TwoLayer` (one hidden layer), as a DeepReLU."""
        if not isinstance(net, TwoLayer):
            raise ValueError(f"net must be a TwoLayer network, got {type(net).__name__}")
        if getattr(net.activation, "name", None) != "relu":
            name = getattr(net.activation, "name", net.activation)
            raise ValueError(f"net must have the relu activation, got {name!r}")
        xp = net.xp
        d = net.d
        W1 = net.W[:, :d]  # (m, d)
        b1 = net.W[:, d] if net.bias else xp.zeros(net.m, dtype=net.dtype)
        W2 = (net.gamma * net.a)[None, :]  # (1, m)
        return cls([W1, W2], [b1, xp.zeros(1, dtype=net.dtype)])

    @property
    def xp(self):
        """The array module of the weights (numpy or cupy)."""
        return get_xp(*_stored_arrays(self.stored_weights))

    @property
    def depth(self) -> int:
        """L, the number of affine layers (hidden layers + 1)."""
        return len(self.stored_weights)

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.stored_weights[0].shape[1])

    @property
    def widths(self) -> tuple:
        """The widths n_1, ..., n_{L-1} of the hidden layers."""
        return tuple(int(W.shape[0]) for W in self.stored_weights[:-1])

    @property
    def n_neurons(self) -> int:
        """The number of hidden neurons, sum of the widths."""
        return int(sum(self.widths))

    @property
    def stored_entries(self) -> int:
        """The number of stored parameters: the entries of the weights as stored (n_l + n_{l-1} for a rank-one
        layer) and of the biases."""
        return int(sum(W.size for W in self.stored_weights) + sum(b.size for b in self.biases))

    @property
    def dtype(self):
        """The common dtype of the weights and biases (that of the first layer's W)."""
        return self.stored_weights[0].dtype

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``: where the weights and biases live (that of the first layer's W)."""
        return device_of(_stored_arrays(self.stored_weights[:1])[0])

    def to_device(self, device: str) -> DeepReLU:
        """The same network with its parameters on ``device`` ("cpu" or "gpu")."""
        move = (lambda W: RankOneWeights(to_device(W.u, device), to_device(W.v, device))
                if isinstance(W, RankOneWeights) else to_device(W, device))
        return DeepReLU([move(W) for W in self.stored_weights], [to_device(b, device) for b in self.biases],
                        self.meta)

    def astype(self, dtype) -> DeepReLU:
        """The same network with its parameters cast to ``dtype`` (float32 or float64), on the same device.

        A parameter beyond float32's range raises ValueError rather than becoming inf (for a rank-one layer,
        an entry of u or v). ``meta`` is copied as it is: a proven ``error_bound`` is about the construction,
        not the rounding.
        """
        dtype = check_float_dtype(dtype)

        def cast(W, i):
            if isinstance(W, RankOneWeights):
                return RankOneWeights(cast_within_range(W.u, dtype, f"weights[{i}].u", "the cast network"),
                                      cast_within_range(W.v, dtype, f"weights[{i}].v", "the cast network"))
            return cast_within_range(W, dtype, f"weights[{i}]", "the cast network")

        return DeepReLU([cast(W, i) for i, W in enumerate(self.stored_weights)],
                        [cast_within_range(b, dtype, f"biases[{i}]", "the cast network")
                         for i, b in enumerate(self.biases)], self.meta)

    def __repr__(self):
        return (f"DeepReLU(d={self.d}, widths={self.widths}, outputs={int(self.stored_weights[-1].shape[0])}, "
                f"dtype={np.dtype(self.dtype).name}, device={self.device!r})")

    def __call__(self, X):
        """f(x) for each row of X (n, d): shape (n,) for one output, (n, n_L) otherwise.

        Samples are processed in chunks so that a (chunk, width) block takes about 16 MiB (``BLOCK_BYTES``).
        A rank-one layer u v^T costs one dot product with v and one product with u per sample.
        """
        X = check_points(X, "X")
        xp = self.xp
        get_xp(X, *_stored_arrays(self.stored_weights[:1]))
        if X.shape[1] != self.d:
            raise ValueError(f"X has shape {tuple(X.shape)} but the network takes d={self.d} coordinates")
        X = cast_within_range(X, self.dtype, "X", "the network")
        n = X.shape[0]
        k = int(self.stored_weights[-1].shape[0])
        width = max(max(self.widths, default=1), k, self.d)
        step = max(1, BLOCK_BYTES // (width * np.dtype(self.dtype).itemsize))
        out = xp.empty((n, k), dtype=self.dtype)  # (n, n_L)
        for start in range(0, n, step):
            H = X[start:start + step]
            for W, b in zip(self.stored_weights[:-1], self.biases[:-1]):
                H = _apply_layer(H, W)
                H += b
                xp.maximum(H, 0, out=H)
            out[start:start + step] = _apply_layer(H, self.stored_weights[-1]) + self.biases[-1]
        return out[:, 0] if k == 1 else out


def _stored_arrays(Ws):
    """The arrays that hold the weights Ws (arrays or RankOneWeights): for get_xp and device_of."""
    out = []
    for W in Ws:
        out.extend((W.u, W.v) if isinstance(W, RankOneWeights) else (W,))
    return out


def sawtooth(k, dtype=np.float64, device="cpu") -> DeepReLU:
    r"""Telgarsky's sawtooth: the tent map composed k times, a relu network with k hidden layers of 2 neurons.

    Parameters
    ----------
    k : int
        Number of compositions, k >= 0 (k = 0 is the identity, an affine network).
    dtype : float32 or float64
    device : {"cpu", "gpu"}

    Returns
    -------
    DeepReLU
        Widths (2,) * k. On [0, 1], f = t o t o ... o t (k times) with the tent map
        t(x) = 2 relu(x) - 4 relu(x - 1/2) = min(2x, 2 - 2x); f has 2^k affine pieces, with
        f(j / 2^k) = j mod 2, slopes +-2^k.

    Notes
    -----
    Hidden layer 1 computes (relu(x), relu(x - 1/2)); hidden layer l + 1 computes
    (relu(y), relu(y - 1/2)) of y = 2 h_1 - 4 h_2 = t(previous input) (t maps [0, 1] onto [0, 1],
    so the relu of y is y); the output is 2 h_1 - 4 h_2. In floating point the values are exact
    for x in [0, 1]: every product and difference is a dyadic number representable in the dtype.

    Exact, and for k beyond the dtype's precision p (53 for float64, 24 for float32) nearly always 0:
    a float x = m / 2^D (m odd) has f_D(x) = 1 and f_k(x) = 0 for every k > D (t halves the
    denominator: 2x and 2 - 2x), and a float in [2^-j, 2^{1-j}) has D <= p + j - 1. So f_k vanishes
    on every float of [2^{p-k}, 1]: on all of [1/2, 1] from k = 54 (float64) or k = 25 (float32),
    and on every draw of numpy's uniform generator (multiples of 2^-53; 2^-24 with dtype float32)
    from the same k. Sampled errors, norms or plots of f_k at such k describe this rounding artefact,
    not the sawtooth: use the closed forms, or :func:`linear_pieces` and :func:`l1_distance` with
    ``exact=True`` (their floating-point mode cannot resolve pieces narrower than the float spacing).

    References
    ----------
    1. M. Telgarsky, arXiv:1602.04485, Sec. 3 and Theorem 1.1.

    Examples
    --------
    >>> import numpy as np
    >>> f = sawtooth(3)
    >>> f.widths, f(np.array([[0.0], [0.125], [0.25], [0.3125]])).tolist()
    ((2, 2, 2), [0.0, 1.0, 0.0, 0.5])
    """
    k = check_integer(k, "k", minimum=0)
    dtype = check_float_dtype(dtype)
    if k == 0:
        Ws, bs = [np.ones((1, 1))], [np.zeros(1)]
    else:
        first = np.array([[1.0], [1.0]])  # (2, 1)
        inner = np.array([[2.0, -4.0], [2.0, -4.0]])  # (2, 2)
        b = np.array([0.0, -0.5])
        Ws = [first] + [inner] * (k - 1) + [np.array([[2.0, -4.0]])]
        bs = [b] * k + [np.zeros(1)]
    return DeepReLU([to_device(W.astype(dtype), device) for W in Ws],
                    [to_device(v.astype(dtype), device) for v in bs],
                    meta={"construction": "sawtooth", "k": k})


# --------------------------------------------------------------------------------------------
# Exact piece counting on a line.
# --------------------------------------------------------------------------------------------

class PiecewiseLinear:
    """A continuous piecewise-affine function of t on [breakpoints[0], breakpoints[-1]].

    Parameters
    ----------
    breakpoints : array_like of shape (p + 1,)
        Finite, non-decreasing, with breakpoints[0] < breakpoints[-1].
    slopes, intercepts : array_like of shape (p,) or (p, k), p >= 1
        Finite, of the same shape. Continuity and maximality are not checked.

    Raises
    ------
    ValueError
        For shapes that do not match, p = 0, a NaN or infinite entry, or breakpoints that
        decrease somewhere or have breakpoints[0] = breakpoints[-1].

    Attributes
    ----------
    breakpoints : numpy array of shape (p + 1,)
        Non-decreasing, as given; piece i is [breakpoints[i], breakpoints[i + 1]].
    slopes, intercepts : numpy arrays of shape (p,) (or (p, k) for k outputs)
        f(t) = slopes[i] t + intercepts[i] on piece i.

    The pieces that :func:`linear_pieces` returns are maximal: their breakpoints increase and
    adjacent pieces have different slopes. A hand-built one may repeat a breakpoint (a piece of
    length 0, never selected by a call) or split a line into two pieces.
    """

    def __init__(self, breakpoints, slopes, intercepts):
        P = to_numpy(check_array(breakpoints, "breakpoints", ndim=1)).astype(np.float64)  # (p + 1,)
        A = to_numpy(check_array(slopes, "slopes", ndim=(1, 2))).astype(np.float64)  # (p,) or (p, k)
        B = to_numpy(check_array(intercepts, "intercepts", ndim=(1, 2))).astype(np.float64)
        if A.shape[0] < 1 or P.shape != (A.shape[0] + 1,) or B.shape != A.shape:
            raise ValueError("breakpoints, slopes and intercepts must have shapes (p + 1,), (p,) or (p, k), and the "
                             f"slopes' shape, with p >= 1 pieces; got {P.shape}, {A.shape} and {B.shape}")
        down = np.flatnonzero(np.diff(P) < 0)
        if down.size or not P[0] < P[-1]:
            where = (f"breakpoints[{down[0]}] = {P[down[0]]:g} > breakpoints[{down[0] + 1}] = {P[down[0] + 1]:g}"
                     if down.size else f"breakpoints[0] = breakpoints[-1] = {P[0]:g}")
            raise ValueError(f"breakpoints must increase from breakpoints[0] to breakpoints[-1], got {where}")
        self.breakpoints = P
        self.slopes = A
        self.intercepts = B

    def __len__(self):
        return int(self.slopes.shape[0])

    def __call__(self, t):
        """f(t) for t of any shape (host numpy); outside the interval the first and last pieces extend affinely."""
        t = to_numpy(check_array(t, "t")).astype(np.float64)
        i = np.clip(np.searchsorted(self.breakpoints, t, side="right") - 1, 0, len(self) - 1)
        if self.slopes.ndim == 1:
            return self.slopes[i] * t + self.intercepts[i]
        return self.slopes[i] * t[..., None] + self.intercepts[i]

    def __repr__(self):
        return f"PiecewiseLinear(pieces={len(self)}, interval=[{self.breakpoints[0]:g}, {self.breakpoints[-1]:g}])"


def _check_interval(interval):
    try:
        lo, hi = interval
    except (TypeError, ValueError):
        raise ValueError(f"interval must be a pair (lo, hi), got {interval!r}") from None
    for name, v in (("interval[0]", lo), ("interval[1]", hi)):
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, Fraction)) or not math.isfinite(float(v)):
            raise ValueError(f"{name} must be a finite real number, got {v!r}")
    if not float(lo) < float(hi):
        raise ValueError(f"interval must have lo < hi, got {interval!r}")
    return lo, hi


def _check_relu_two_layer(f, name):
    """A TwoLayer argument ``name`` must have the relu activation (from_two_layer's message names its own ``net``)."""
    if isinstance(f, TwoLayer) and getattr(f.activation, "name", None) != "relu":
        activation = getattr(f.activation, "name", f.activation)
        raise ValueError(f"{name} must be a relu network: a TwoLayer with the relu activation, got {activation!r}")


def _line_layers(f, origin, direction):
    """Host float64 layers (W, b) of f restricted to the line x(t) = origin + t direction.

    A rank-one layer u v^T comes as the pair (u, v) (see :func:`_times_transpose`); the first layer, restricted
    to the line, is a dense column.
    """
    if isinstance(f, TwoLayer):
        _check_relu_two_layer(f, "f")
        f = DeepReLU.from_two_layer(f)
    if not isinstance(f, DeepReLU):
        raise ValueError(f"f must be a DeepReLU or a relu TwoLayer network, got {type(f).__name__}")
    host = lambda a: to_numpy(a).astype(np.float64)  # noqa: E731
    Ws = [(host(W.u), host(W.v)) if isinstance(W, RankOneWeights) else host(W) for W in f.stored_weights]
    bs = [host(b) for b in f.biases]
    d = f.d
    if direction is None:
        if d != 1:
            raise ValueError(f"f takes d={d} coordinates: give the line's direction (and origin), shape ({d},)")
        direction = np.ones(1)
    direction = to_numpy(check_array(direction, "direction", ndim=1)).astype(np.float64)
    origin = np.zeros(d) if origin is None else to_numpy(check_array(origin, "origin", ndim=1)).astype(np.float64)
    for name, v in (("direction", direction), ("origin", origin)):
        if v.shape[0] != d:
            raise ValueError(f"{name} has shape {v.shape} but f takes d={d} coordinates")
    if not direction.any():
        raise ValueError("direction must be nonzero")
    W1, b1 = Ws[0], bs[0]
    if isinstance(W1, tuple):  # u v^T x(t) = u (v . origin) + t u (v . direction)
        u, v = W1
        Ws[0] = (u * (v @ direction))[:, None]  # (n_1, 1)
        bs[0] = u * (v @ origin) + b1
    else:
        Ws[0] = (W1 @ direction)[:, None]  # (n_1, 1)
        bs[0] = W1 @ origin + b1
    return Ws, bs


def _times_transpose(A, W):
    """A @ W^T for A (p, n_in) and a layer W of :func:`_line_layers`: an array, or (u, v) for u v^T: (p, n_out)."""
    if isinstance(W, tuple):
        u, v = W
        return (A @ v)[:, None] * u[None, :]
    return A @ W.T


def _width(W):
    """n_out of a layer of :func:`_line_layers`."""
    return W[0].shape[0] if isinstance(W, tuple) else W.shape[0]


def _to_fractions(a):
    out = np.empty(a.shape, dtype=object)
    out.flat = [Fraction(float(v)) for v in a.flat]
    return out


def _refine(P, S, C, exact, tol):
    """Split the pieces P (p + 1,) at the zeros of the pre-activations S t + C (p, n).

    Returns (new breakpoints, parent piece of each new piece, activity mask (new p, n)).
    """
    nz = S != 0
    if exact:
        R = np.full(S.shape, P[0], dtype=object)
        R[nz] = -C[nz] / S[nz]
    else:
        R = np.full(S.shape, np.nan)
        np.divide(-C, S, out=R, where=nz)
    inside = nz & (R > P[:-1, None]) & (R < P[1:, None])
    new = R[inside]
    if new.size:
        Q = np.unique(np.concatenate([P, new]))
        if not exact and tol > 0:
            # merge points closer than tol (hi - lo) to the previous one; keep both ends
            keep = np.concatenate([[True], np.diff(Q) > tol * float(P[-1] - P[0])])
            if not keep[-1]:
                keep[-1] = True
                keep[-2] = Q.shape[0] == 2
            Q = Q[keep]
    else:
        Q = P
    mid = (Q[:-1] + Q[1:]) / 2  # (q,)
    # The parent piece holds the new piece: between the last old piece starting at or before its left end
    # and the first ending at or after its right end (the same piece unless tol merged some). The rounded
    # midpoint alone picked the next piece, or one past the last, when the ends are adjacent floats.
    first = np.searchsorted(P, Q[:-1], side="right") - 1  # (q,)
    last = np.searchsorted(P, Q[1:], side="left") - 1  # (q,)
    parent = np.clip(np.searchsorted(P, mid, side="right") - 1, first, last)  # (q,)
    return Q, parent, mid


_PIECES_MAX = 2**22  # most entries (pieces x width) linear_pieces tracks in floats: 0.6 GB at the peak


def _check_pieces(p, n, layer, lo, hi, exact):
    """Refuse to track p pieces through hidden layer ``layer`` (0-based) of width n when p n > _PIECES_MAX.

    The float arrays take about 70 bytes per entry at the peak (sawtooth(21): 2^21 pieces of width 2, 0.35 GB,
    3 s); sawtooth(40) on [0, 1] (2^40 pieces) ran out of memory after minutes. Fractions take about 430 bytes
    per entry (and 100 times the time): 1/8 of the cap with exact=True.
    """
    cap = _PIECES_MAX // 8 if exact else _PIECES_MAX
    if p * n > cap:
        raise ValueError(f"f has at least {p} affine pieces on the interval [{float(lo)!r}, {float(hi)!r}] at hidden "
                         f"layer {layer + 1} (width {n}): tracking them takes {p} x {n} > {cap} entries "
                         f"(about {(430 if exact else 70) * p * n / 2**30:.3g} GB); count on a sub-interval of "
                         f"interval, or use the count's closed form where there is one (sawtooth(k) has 2^k pieces "
                         f"on [0, 1])")


def _pieces_on_line(Ws, bs, lo, hi, exact, tol):
    """Exact affine pieces of a relu network of one input on [lo, hi]: (P, slopes, intercepts)."""
    if exact:
        Ws = [tuple(_to_fractions(a) for a in W) if isinstance(W, tuple) else _to_fractions(W) for W in Ws]
        bs = [_to_fractions(b) for b in bs]
        P = np.array([Fraction(lo), Fraction(hi)], dtype=object)
        A = np.array([[Fraction(1)]], dtype=object)
        B = np.array([[Fraction(0)]], dtype=object)
    else:
        P = np.array([float(lo), float(hi)])
        A, B = np.ones((1, 1)), np.zeros((1, 1))
    L = len(Ws)
    for layer in range(L - 1):
        W, b = Ws[layer], bs[layer]
        _check_pieces(A.shape[0], _width(W), layer, lo, hi, exact)  # S, C and the crossings: (p, n) each
        S = _times_transpose(A, W)  # (p, n) slopes of the pre-activations
        C = _times_transpose(B, W) + b  # (p, n) intercepts
        P_new, parent, mid = _refine(P, S, C, exact, tol)
        u, v = P_new[:-1], P_new[1:]  # (q,) the ends of the new pieces
        last_hidden = layer == L - 2
        q, n = len(mid), _width(W)
        # the arrays kept for the next layer, (q, n), or in floats (q, n_L) once the output layer is folded in: the
        # (rows, n) blocks below stay near BLOCK_BYTES (Fractions take one block of all q rows)
        _check_pieces(q, _width(Ws[layer + 1]) if last_hidden and not exact else n, layer, lo, hi, exact)
        W_next, b_next = Ws[layer + 1], bs[layer + 1]
        # Rows per block, so that the (rows, n) blocks stay near BLOCK_BYTES in float64.
        step = max(1, BLOCK_BYTES // (8 * max(n, 1))) if not exact else q
        outs_A, outs_B = [], []
        for start in range(0, q, step):
            sl = slice(start, min(start + step, q))
            Sp, Cp = S[parent[sl]], C[parent[sl]]  # (rows, n)
            if exact:
                active = (mid[sl, None] * Sp + Cp) > 0
            else:  # twice the value at the midpoint, which rounds to an end (a kink) on a piece one ulp wide
                active = ((u[sl, None] * Sp + Cp) + (v[sl, None] * Sp + Cp)) > 0
            An = np.where(active, Sp, 0)
            Bn = np.where(active, Cp, 0)
            if exact:
                An, Bn = An.astype(object), Bn.astype(object)
            if last_hidden:  # fold the output layer in, block by block
                outs_A.append(_times_transpose(An, W_next))
                outs_B.append(_times_transpose(Bn, W_next) + b_next)
            else:
                outs_A.append(An)
                outs_B.append(Bn)
        A, B = np.concatenate(outs_A, axis=0), np.concatenate(outs_B, axis=0)
        P = P_new
    if L == 1:
        A, B = _times_transpose(A, Ws[0]), _times_transpose(B, Ws[0]) + bs[0]
    return P, A, B  # A, B: (p, n_L) slopes and intercepts of the output


def _merge_equal_slopes(P, A, B, exact, tol):
    """Maximal pieces: drop the breakpoints where no output changes slope."""
    if A.shape[0] <= 1:
        return P, A, B
    diff = A[1:] != A[:-1] if exact else None
    if exact:
        change = np.array([bool(row.any()) for row in diff], dtype=bool)
    else:
        scale = float(np.abs(A).max()) if A.size else 0.0
        change = (np.abs(A[1:] - A[:-1]) > tol * max(scale, 1e-300)).any(axis=1)
    keep_piece = np.concatenate([[True], change])  # first piece of each maximal run
    starts = np.flatnonzero(keep_piece)
    P_out = np.concatenate([P[starts], P[-1:]])
    return P_out, A[starts], B[starts]


def linear_pieces(f, interval=(0.0, 1.0), *, origin=None, direction=None, exact=False, tol=None) -> PiecewiseLinear:
    r"""The maximal affine pieces of a relu network on a segment, computed exactly layer by layer.

    Parameters
    ----------
    f : DeepReLU or TwoLayer
        A relu network (a TwoLayer must have the relu activation; its bias is used).
    interval : pair of floats, default (0, 1)
        [lo, hi], lo < hi: the range of the line parameter t.
    origin, direction : arrays of shape (d,), optional
        The line x(t) = origin + t direction (default origin 0; for d = 1, direction 1).
    exact : bool, default False
        Rational arithmetic (:class:`fractions.Fraction`; every float is a rational number, so
        this is exact for the network as stored). Slower: use it for small networks.
    tol : float, optional
        In floating point (``exact=False``): breakpoints closer than ``tol (hi - lo)`` are merged
        and slopes that differ by at most ``tol`` times the largest |slope| count as equal;
        default 1e-12. Ignored with ``exact=True``. The merging scale is the interval's width:
        on an interval far wider than the gaps between kinks (all the pieces of a network on R
        by way of (-1e12, 1e12)), distinct breakpoints merge (a 50-neuron network can show 6 pieces
        there instead of 51); choose the interval to the scale of the kinks, a smaller tol, or
        ``exact=True``. Floating-point breakpoints are floats: pieces narrower than the spacing of the
        floats near them merge whatever tol (the sawtooth for k >= 54 near t = 1/2, whose pieces of
        width 2^-k lie below the spacing 2^-53 of [1/2, 1)); ``exact=True`` resolves them.

    Returns
    -------
    PiecewiseLinear
        Breakpoints, slopes and intercepts (in t) of the maximal pieces (adjacent slopes differ).

    Notes
    -----
    On each piece of the current partition of [lo, hi] every neuron of the previous layers is
    affine in t, so the pre-activations of the next layer are affine, S t + C: each crosses zero
    at most once, at t = -C / S. Splitting the pieces there and reading each neuron's activity at
    the midpoints of the new pieces gives the affine maps of the next layer. After the output
    layer, adjacent pieces with equal slopes (the function is continuous) are merged. The cost is
    O(p n^2) per layer for p pieces of width n, with (p, n) arrays: p n above 2^22 (2^19 with
    ``exact=True``; under 1 GB) raises a ValueError before the memory runs out. No sampling is
    involved. For the sawtooth, whose breakpoints and slopes are dyadic, floating point is exact as well.

    References
    ----------
    1. M. Telgarsky, arXiv:1602.04485, Sec. 3 (affine pieces of compositions and sums).

    Examples
    --------
    >>> pl = linear_pieces(sawtooth(2))
    >>> pl.breakpoints.tolist(), pl.slopes.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [4.0, -4.0, 4.0, -4.0])
    """
    lo, hi = _check_interval(interval)
    exact = check_bool(exact, "exact")
    tol = 1e-12 if tol is None else check_nonnegative(tol, "tol")
    if tol >= 1:
        raise ValueError(f"tol must lie in [0, 1) (relative to hi - lo and to the largest |slope|), got {tol!r}")
    Ws, bs = _line_layers(f, origin, direction)
    P, A, B = _pieces_on_line(Ws, bs, lo, hi, exact, tol)
    P, A, B = _merge_equal_slopes(P, A, B, exact, 0.0 if exact else tol)
    to_float = (lambda a: np.array([float(v) for v in a.flat]).reshape(a.shape)) if exact else (lambda a: a)
    A, B = to_float(A), to_float(B)
    if A.shape[1] == 1:
        A, B = A[:, 0], B[:, 0]
    return PiecewiseLinear(to_float(P), A, B)


def count_linear_pieces(f, interval=(0.0, 1.0), *, origin=None, direction=None, exact=False, tol=None) -> int:
    """The number of maximal affine pieces of a relu network on a segment (no sampling; in floats see linear_pieces).

    Parameters
    ----------
    f : DeepReLU or TwoLayer
        A relu network (a TwoLayer must have the relu activation; its bias is used).
    interval : pair of floats, default (0, 1)
        [lo, hi], lo < hi: the range of the line parameter t.
    origin, direction : arrays of shape (d,), optional
        The line x(t) = origin + t direction (default origin 0; for d = 1, direction 1).
    exact : bool, default False
        Rational arithmetic (:class:`fractions.Fraction`), exact for the network as stored.
    tol : float in [0, 1), optional
        In floating point: breakpoints closer than ``tol (hi - lo)`` are merged and slopes that
        differ by at most ``tol`` times the largest |slope| count as equal; default 1e-12. Ignored
        with ``exact=True``.

    Returns
    -------
    int
        The number p >= 1 of pieces, ``len(linear_pieces(f, ...))``.

    Raises
    ------
    ValueError
        As :func:`linear_pieces`: f not a DeepReLU or relu TwoLayer, a bad interval, a missing
        direction for d > 1, origin or direction of the wrong shape, a zero direction, tol
        outside [0, 1), or more pieces than can be tracked (below).

    Notes
    -----
    See :func:`linear_pieces` for the algorithm. Exact with ``exact=True``; in floating point the
    count is exact only as far as ``tol`` and the float spacing allow: breakpoints closer than
    ``tol (hi - lo)``, or than the spacing of the floats near them, merge (see ``tol`` in
    :func:`linear_pieces`). Refused (ValueError) when the pieces times the width of a layer exceed
    2^22 (2^19 with ``exact=True``), under 1 GB of arrays: count on a sub-interval, or use a closed form.

    Examples
    --------
    >>> [count_linear_pieces(sawtooth(k)) for k in range(5)]
    [1, 2, 4, 8, 16]
    """
    return len(linear_pieces(f, interval, origin=origin, direction=direction, exact=exact, tol=tol))


def _as_pieces(f, name, interval, exact, origin, direction):
    """``f`` (the argument ``name`` of :func:`l1_distance`) as a PiecewiseLinear of one output."""
    if isinstance(f, PiecewiseLinear):
        pl = f
    elif isinstance(f, (DeepReLU, TwoLayer)):
        try:
            pl = linear_pieces(f, interval, origin=origin, direction=direction, exact=exact)
        except ValueError as e:  # linear_pieces names its argument f: name the caller's
            if name != "f" and str(e).startswith("f "):
                raise ValueError(name + str(e)[1:]) from None
            raise
    else:  # _line_layers would say "f must be ..." for g too
        raise ValueError(f"{name} must be a DeepReLU, a relu TwoLayer network or a PiecewiseLinear, "
                         f"got {type(f).__name__}")
    if pl.slopes.ndim != 1:
        raise ValueError(f"l1_distance compares functions with one output, but {name} has {pl.slopes.shape[1]}")
    return pl


def l1_distance(f, g, interval=(0.0, 1.0), *, origin=None, direction=None, exact=False) -> float:
    r"""int_lo^hi |f(x(t)) - g(x(t))| dt, exactly, for relu networks on a line x(t) = origin + t direction.

    Parameters
    ----------
    f, g : DeepReLU, TwoLayer (relu) or PiecewiseLinear
        Networks of d inputs, or functions of t already restricted to the line.
    interval : pair of floats, default (0, 1)
    origin, direction : arrays of shape (d,), optional
        The line, as in :func:`linear_pieces` (default origin 0; for d = 1, direction 1); unused
        for a PiecewiseLinear.
    exact : bool, default False
        Passed to :func:`linear_pieces`.

    Notes
    -----
    On each piece of the common refinement, f - g = alpha t + beta; its absolute value integrates
    in closed form (a trapezoid, or two triangles when it changes sign at t = -beta / alpha).

    Examples
    --------
    >>> zero = DeepReLU([np.zeros((1, 1))], [np.zeros(1)])
    >>> l1_distance(sawtooth(3), zero)           # the mean of the sawtooth
    0.5
    """
    lo, hi = _check_interval(interval)
    F, G = (_as_pieces(h, name, interval, exact, origin, direction) for h, name in ((f, "f"), (g, "g")))
    slack = 1e-9 * (float(hi) - float(lo))  # the ends up to rounding, at the interval's scale (np.isclose's
    # default absolute and relative slack took [1e6, 1e6 + 1] for [1e6, 1e6 + 10], extending the last piece)
    for name, pl in (("f", F), ("g", G)):
        if not (abs(pl.breakpoints[0] - float(lo)) <= slack and abs(pl.breakpoints[-1] - float(hi)) <= slack):
            raise ValueError(f"{name} is defined on [{pl.breakpoints[0]:g}, {pl.breakpoints[-1]:g}], "
                             f"not on the interval {interval!r}")
    P = np.unique(np.concatenate([F.breakpoints, G.breakpoints, [float(lo), float(hi)]]))
    P = P[(P >= float(lo)) & (P <= float(hi))]
    mid = (P[:-1] + P[1:]) / 2
    i = np.clip(np.searchsorted(F.breakpoints, mid, side="right") - 1, 0, len(F) - 1)
    j = np.clip(np.searchsorted(G.breakpoints, mid, side="right") - 1, 0, len(G) - 1)
    alpha = F.slopes[i] - G.slopes[j]
    beta = F.intercepts[i] - G.intercepts[j]
    u, v = P[:-1], P[1:]
    du, dv = alpha * u + beta, alpha * v + beta
    same = np.sign(du) * np.sign(dv) >= 0  # signs, not du dv, which underflows to -0.0 for tiny gaps
    abs_u, abs_v = np.abs(du), np.abs(dv)
    trapezoid = 0.5 * (abs_u + abs_v) * (v - u)
    # Two triangles meeting at the zero r = u + (v - u) |du| / (|du| + |dv|), of areas
    # |du| (r - u) / 2 and |dv| (v - r) / 2; the fractions in [0, 1] keep du^2 from over- or underflowing.
    total = np.where(same, 1.0, abs_u + abs_v)
    triangles = 0.5 * (abs_u * (abs_u / total) + abs_v * (abs_v / total)) * (v - u)
    return float(np.where(same, trapezoid, triangles).sum())


def max_pieces_two_layer(m) -> int:
    """m + 1: the most affine pieces a one-hidden-layer relu network of width m has on a line.

    Each neuron relu(a t + b) bends at one point t = -b/a at most, so m neurons cut the line into
    at most m + 1 pieces (Telgarsky 2016, Sec. 3).

    Parameters
    ----------
    m : int
        Width, an integer >= 0.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For m not an integer >= 0.

    Examples
    --------
    >>> max_pieces_two_layer(7)
    8
    """
    return check_integer(m, "m", minimum=0) + 1


def max_pieces(widths) -> int:
    """prod_l (n_l + 1): the most affine pieces a relu network of one input with hidden widths n_l has on a line.

    Layer by layer: on each piece of the previous layers every neuron of layer l is affine in t and
    bends at one point at most, so its n_l neurons split the piece into at most n_l + 1
    (Telgarsky 2016, Sec. 3; Montufar et al. 2014 count regions this way, here for one input).

    Parameters
    ----------
    widths : sequence of int
        n_1, ..., n_{L-1} >= 0, the hidden widths (``DeepReLU.widths``); empty for an affine network.

    Returns
    -------
    int
        prod_l (n_l + 1) (a Python integer, exact at any size); for widths [m] * L it is
        (m + 1)^L <= (2 m)^L (m >= 1), and for one hidden layer :func:`max_pieces_two_layer`.

    Raises
    ------
    ValueError
        For widths not a sequence of integers >= 0.

    Notes
    -----
    Only an upper bound: one hidden layer attains it (m distinct kinks), deeper ones need not (a
    chain of width 1 has at most L + 1 pieces, not 2^L). The sawtooth, widths [2] * k, has 2^k of
    the 3^k allowed. With :func:`sawtooth_l1_lower_bound` it bounds the L1 distance from the
    sawtooth of any relu network of given widths (Telgarsky 2016, Theorem 1.1).

    References
    ----------
    1. M. Telgarsky, "Benefits of depth in neural networks", arXiv:1602.04485, Sec. 3 and Theorem 1.1.
    2. G. Montufar, R. Pascanu, K. Cho, Y. Bengio, "On the number of linear regions of deep neural
       networks", NeurIPS 2014, arXiv:1402.1869.

    Examples
    --------
    >>> max_pieces([7]), max_pieces([2, 2, 2]), max_pieces(sawtooth(3).widths), max_pieces([])
    (8, 27, 27, 1)
    """
    if isinstance(widths, (str, bytes)) or np.ndim(widths) != 1:
        raise ValueError(f"widths must be a sequence of hidden widths n_l (integers >= 0), got {widths!r}")
    return math.prod(check_integer(n, f"widths[{i}]", minimum=0) + 1 for i, n in enumerate(widths))


def sawtooth_l1_lower_bound(k, pieces) -> float:
    r"""A lower bound on int_0^1 |f_k - g| for the 2^k-piece sawtooth f_k and any continuous g with s pieces.

    Parameters
    ----------
    k : int
        The sawtooth f_k = t^k (0 <= k <= 1020, so that 2^(k+3) is a float).
    pieces : int
        s >= 1, the number of affine pieces of g on [0, 1] (at most m + 1 for a one-hidden-layer
        relu network of width m, :func:`max_pieces_two_layer`).

    Returns
    -------
    float
        max(0, (2^k - 2 s - 2) / 2^{k+3}) = max(0, 1/8 - (s + 1) / 2^{k+2}).

    Notes
    -----
    This is Telgarsky's counting argument, with its constants worked out here. f_k - 1/2 vanishes
    at the 2^k points (j + 1/2) / 2^k; between consecutive ones lie 2^k - 1 triangles of base 2^{-k},
    height 1/2 and area 2^{-k-2}, on alternate sides of 1/2. g - 1/2 changes sign at most s times
    (once per affine piece), which cuts [0, 1] into at most s + 1 intervals where it has one sign
    (or vanishes); at most s triangles contain a sign change. In an interval holding r whole
    triangles, at least floor(r / 2) >= (r - 1)/2 lie on the other side of 1/2 than g, where
    |f_k - g| >= |f_k - 1/2|. Summing, at least (2^k - 1 - s - (s + 1)) / 2 triangles contribute
    their area each. The L2 error on [0, 1] is at least the L1 error.

    References
    ----------
    1. M. Telgarsky, arXiv:1602.04485, Theorem 1.1 and Sec. 3 (the same argument, with other
       constants).

    Examples
    --------
    >>> sawtooth_l1_lower_bound(10, 1), sawtooth_l1_lower_bound(10, 512)
    (0.12451171875, 0.0)
    """
    k = check_integer(k, "k", minimum=0, maximum=1020)  # 2^(k+3) overflows a float beyond
    s = check_integer(pieces, "pieces", minimum=1)
    return max(0.0, (2**k - 2 * s - 2) / 2 ** (k + 3))  # integers: one rounding (2.0**k - 2 s lost s for k > 53)


# --------------------------------------------------------------------------------------------
# 3-layer networks: univariate squares, then a piecewise-linear profile.
# --------------------------------------------------------------------------------------------

_WEIGHTS_MAX = 10**9  # most stored entries of W_1 and W_2 a 3-layer construction builds (8 GB in float64)


def _check_weights(n1, n2, D, hint):
    """Refuse a 3-layer network whose W_1 (n1, D) and rank-one W_2 (n2, n1), stored as n2 + n1 factors, would
    hold more than _WEIGHTS_MAX entries.

    n1 and n2 may be floats (estimated before rounding up), so that a tiny tolerance gives this error
    rather than an overflow.
    """
    size = n1 * D + n1 + n2
    if not size <= _WEIGHTS_MAX:
        raise ValueError(f"the network would have hidden widths ({n1:.3g}, {n2:.3g}) and {size:.3g} stored weights "
                         f"(> {_WEIGHTS_MAX:.0e}): {hint}")


def _profile_increments(knots, values):
    """relu expansion psi(q) = values[-1] + sum_k beta_k relu(knots[k] - q) of the interpolant,
    constant below knots[0] and above knots[-1]. Returns (knots, beta) without zero increments."""
    slopes = np.diff(values) / np.diff(knots)  # (K - 1,)
    beta = np.diff(np.concatenate([[0.0], slopes, [0.0]]))  # (K,) the slope increments, sum_k beta_k = 0
    # psi = values[0] + sum_k beta_k relu(q - knots[k]), and relu(u) = u + relu(-u) with
    # values[0] + sum_k beta_k (q - knots[k]) = values[-1] (psi beyond knots[-1]) give the expansion above.
    keep = beta != 0
    return knots[keep], beta[keep]


def _squares_then_profile(A, c, B, K, knots, values, dtype, device, meta):
    """The 3-layer relu network x -> psi(sum_p c_p s_p(<a_p, x>)).

    s_p is the piecewise-linear interpolant of t^2 on [-B_p, B_p] at the nodes j B_p / K_p (extended
    linearly), psi the interpolant of (knots, values), constant outside. The second layer holds
    relu(kappa_k - q_hat), anchored at the right end of psi: where q_hat >= knots[-1] (every x with
    a coordinate beyond B_p, however large, when c >= 0) each of them is exactly 0 and the output is
    the bias values[-1], with no rounding; relu(q_hat - kappa_k) summed there terms of size q_hat that
    cancel, and lost all accuracy in float32 from |x| ~ 1e3 on.

    Every second-layer neuron reads the same q_hat: W_2 = 1 (-v)^T is rank one and is stored as its
    factors (:class:`RankOneWeights`), n_2 + n_1 entries rather than n_2 n_1 (2.5 GB for
    ``daniely_network(10)``), and q_hat is computed once per input.
    """
    rows, bias, coef = [], [], []
    for a, cp, Bp, Kp in zip(A, c, B, K):
        h = Bp / Kp
        t = h * np.arange(Kp)  # (K_p,) nodes 0, h, ..., (K_p - 1) h
        w = np.full(Kp, 2 * h)
        w[0] = h  # slopes of the interpolant of t^2 at uniform nodes jump by 2h, starting at h
        for sign in (1.0, -1.0):
            rows.append(sign * np.repeat(a[None, :], Kp, axis=0))
            bias.append(-t)
            coef.append(cp * w)
    W1 = np.concatenate(rows, axis=0)  # (n_1, D)
    b1 = np.concatenate(bias)  # (n_1,)
    v = np.concatenate(coef)  # (n_1,) q_hat = v . h_1
    kn, beta = _profile_increments(np.asarray(knots, float), np.asarray(values, float))
    if kn.size == 0:  # a constant profile: keep one idle neuron so that the network has two hidden layers
        kn, beta = np.zeros(1), np.zeros(1)
    W2 = RankOneWeights(to_device(np.ones(kn.size, dtype=dtype), device),
                        to_device((-v).astype(dtype), device))  # (n_2, n_1) = 1 (-v)^T: relu(kappa_k - q_hat)
    b2 = kn
    W3 = beta[None, :]  # (1, n_2)
    b3 = np.array([float(values[-1])])
    return DeepReLU([to_device(W1.astype(dtype), device), W2, to_device(W3.astype(dtype), device)],
                    [to_device(b.astype(dtype), device) for b in (b1, b2, b3)], meta)


def _check_profile(knots, values):
    knots = to_numpy(check_array(knots, "knots", ndim=1)).astype(np.float64)
    values = to_numpy(check_array(values, "values", ndim=1)).astype(np.float64)
    if knots.shape != values.shape or knots.shape[0] < 2:
        raise ValueError(f"knots and values must have the same shape (K,), K >= 2, got {knots.shape} and "
                         f"{values.shape}")
    if not (np.diff(knots) > 0).all():
        raise ValueError("knots must be strictly increasing")
    return knots, values


def radial_network(knots, values, d, radius_bound, tolerance=1e-2, *, dtype=np.float64, device="cpu") -> DeepReLU:
    r"""A 3-layer relu network computing psi(|x|^2), psi piecewise linear, within ``tolerance``.

    Parameters
    ----------
    knots, values : arrays of shape (K,)
        psi interpolates (knots, values) in the variable s = |x|^2 and is constant outside
        [knots[0], knots[-1]].
    d : int
        Input dimension.
    radius_bound : float
        B: each square x_i^2 is interpolated on [-B, B]; B^2 >= knots[-1] (the largest |x| where
        psi is not constant), so that the error bound below holds on all of R^d (ValueError
        otherwise: a point with x_i beyond B and |x|^2 < knots[-1] got an error of any size).
    tolerance : float, default 0.01
        The uniform error sup_x |net(x) - psi(|x|^2)| to guarantee.
    dtype : numpy dtype, default float64
        float64 or float32: the dtype of the network's parameters.
    device : {"cpu", "gpu"}, default "cpu"
        Where the network's parameters live (numpy or cupy arrays).

    Returns
    -------
    DeepReLU
        Widths (2 K_sq d, K'): K_sq pieces per square and K' <= K kinks of psi; W_2, rank one, is
        stored as a :class:`RankOneWeights`. ``meta`` holds ``"error_bound"`` (<= tolerance) and
        ``"pieces_per_square"``.

    Notes
    -----
    The first hidden layer holds relu(+-x_i - j h), j < K_sq, h = B / K_sq, from which
    s_hat = sum_i ell(x_i) with ell the piecewise-linear interpolant of t^2 at the nodes j h:
    0 <= ell(t) - t^2 <= h^2 / 4 for |t| <= B, so 0 <= s_hat - |x|^2 <= d h^2 / 4 when every
    |x_i| <= B. The second hidden layer holds relu(kappa_k - s_hat) at the kinks kappa_k of psi,
    and the output adds them, weighted by the slope increments of psi, to values[-1]. Hence
    |net(x) - psi(|x|^2)| <= Lip(psi) d h^2 / 4, and h is chosen to make this <= tolerance. If some
    |x_i| > B then s_hat >= ell(B) = B^2 >= knots[-1]: psi(s_hat) = psi(|x|^2) = values[-1] exactly.

    In floating point that last value is exact too: s_hat grows like 2 B |x| (ell continues
    linearly beyond B), every relu(kappa_k - s_hat) is exactly 0 once the rounded s_hat reaches
    knots[-1], and the output is the bias values[-1], however large |x| is. Where s_hat < knots[-1]
    each term beta_k relu(kappa_k - s_hat) is at most |beta_k| kappa_k in size, so the rounding error
    stays a few eps sum_k |beta_k| kappa_k (s_hat >= 0). (Anchoring the terms at the left end instead, as
    relu(s_hat - kappa_k), made them of size s_hat far out, cancelling to eps s_hat Lip(psi): a
    float32 ball network gave 1 instead of 0 at |x| = 1e6.)
    This is the construction behind the 3-layer upper bounds of Eldan & Shamir (2016) and
    Safran & Shamir (2017).

    References
    ----------
    1. R. Eldan and O. Shamir, arXiv:1512.03965 (3-layer approximation of radial functions).
    2. I. Safran and O. Shamir, arXiv:1610.09887.

    Examples
    --------
    >>> import numpy as np
    >>> net = radial_network([1.0, 4.0], [0.0, 3.0], d=2, radius_bound=2.0, tolerance=1e-3)
    >>> x = np.array([[0.5, 0.0], [1.0, 1.0], [3.0, 0.0]])       # psi(s) = clip(s - 1, 0, 3)
    >>> bool(np.allclose(net(x), [0.0, 1.0, 3.0], atol=1e-3))
    True
    """
    knots, values = _check_profile(knots, values)
    d = check_integer(d, "d", minimum=1)
    B = check_positive(radius_bound, "radius_bound")
    tolerance = check_positive(tolerance, "tolerance")
    lip = float(np.abs(np.diff(values) / np.diff(knots)).max())
    if lip > 0 and B * B < knots[-1]:
        raise ValueError(f"radius_bound must be at least sqrt(knots[-1]) = {math.sqrt(knots[-1]):.6g}, the largest |x| "
                         f"where psi is not constant, got {B:g}: the error bound holds on R^d only then")
    if lip == 0:
        K = 1
    else:
        h = math.sqrt(4 * tolerance / (lip * d))
        _check_weights(2 * d * B / h if h > 0 else math.inf, knots.shape[0], d,
                       f"raise tolerance (got {tolerance:g}) or lower radius_bound")
        K = max(1, math.ceil(B / h))
    h = B / K
    bound = lip * d * h * h / 4
    meta = {"construction": "radial", "pieces_per_square": K, "error_bound": bound, "radius_bound": B}
    return _squares_then_profile(np.eye(d), np.ones(d), np.full(d, B), np.full(d, K), knots, values,
                                 check_float_dtype(dtype), device, meta)


# --------------------------------------------------------------------------------------------
# Eldan-Shamir: the input density and the radial target.
# --------------------------------------------------------------------------------------------

def unit_ball_radius(d) -> float:
    """R_d, the radius of the ball of unit volume in R^d: pi^{d/2} R_d^d / Gamma(d/2 + 1) = 1.

    Parameters
    ----------
    d : int
        Dimension, an integer >= 1.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For d not an integer >= 1.

    Examples
    --------
    >>> round(unit_ball_radius(1), 15), round(unit_ball_radius(2), 15) == round(1 / math.sqrt(math.pi), 15)
    (0.5, True)
    """
    d = check_integer(d, "d", minimum=1)
    return float(math.exp((special.gammaln(0.5 * d + 1) - 0.5 * d * math.log(math.pi)) / d))


def _log_bessel_below_order(z, nu):
    """log J_nu(z) for 0 < z < nu - 1 (host float64), where J_nu(z) may lie below the float64 range.

    J_nu(z) = J_mu(z) prod_{mu < n <= nu} r_n with mu = nu - floor(nu - z) in [z, z + 1), where
    J_mu(z) > 0 is of order z^{-1/3} (scipy's jv), and the ratios r_n = J_n / J_{n-1} in (0, 1) come
    from the backward recurrence r_n = z / (2 n - z r_{n+1}) (Miller's algorithm, stable for n > z),
    started 32 orders above nu at r = z / (2 n).
    """
    k = np.floor(nu - z)  # (p,) orders stepped down, >= 1
    n = nu + 32.0
    r = z / (2 * n)
    log_sum = np.zeros_like(z)
    while n > nu:
        n -= 1.0
        r = z / (2 * n - z * r)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # past a point's own mu: masked
        for j in range(int(k.max())):  # r = r_{nu - j}
            log_sum += np.where(j < k, np.log(r), 0.0)
            n = nu - j - 1.0
            r = z / (2 * n - z * r)
    return np.log(special.jv(nu - k, z)) + log_sum


def _normalized_bessel(z, nu):
    """Lambda_nu(z) = Gamma(nu + 1) (2/z)^nu J_nu(z) for z >= 0 (host float64; Lambda_nu(0) = 1).

    Power series where z^2 <= 20 (nu + 1) (at most ~e^{10} of cancellation relative to the largest
    term, which stays below 1e-6 relative error), logarithms of scipy's J_nu beyond.
    """
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    small = z <= math.sqrt(20 * (nu + 1))
    zs = z[small]
    term = np.ones_like(zs)
    total = np.ones_like(zs)
    x = -0.25 * zs * zs
    for j in range(1, 200):
        term = term * x / (j * (nu + j))
        total += term
        if not np.any(np.abs(term) > 1e-17 * np.maximum(np.abs(total), 1e-300)):
            break
    out[small] = total
    zl = z[~small]
    if zl.size:
        J = np.where(np.isinf(zl), 0.0, special.jv(nu, zl))  # J_nu(z) -> 0 as z -> inf (scipy: nan)
        mag = np.abs(J)
        with np.errstate(divide="ignore"):
            log_mag = np.where(mag > 0, np.log(np.where(mag > 0, mag, 1.0)), -np.inf)
        tiny = (mag < 1e-280) & (zl < nu - 1)  # J_nu underflows (or is subnormal) for z << nu, large nu
        if tiny.any():
            log_mag[tiny] = _log_bessel_below_order(zl[tiny], nu)
            J[tiny] = 1.0  # its sign: J_nu(z) > 0 for 0 < z < nu
        out[~small] = np.sign(J) * np.exp(special.gammaln(nu + 1) + nu * (math.log(2.0) - np.log(zl)) + log_mag)
    return out


def _check_radii(r, name="r"):
    r = check_array(r, name)
    xp = get_xp(r)
    if r.size and bool((r < 0).any()):
        raise ValueError(f"{name} must be >= 0 (a radius), got a minimum of {float(r.min()):.6g}")
    return r, xp


def eldan_shamir_phi(X):
    r"""phi(x), the Fourier transform of the indicator of the unit-volume ball: signed, radial, real.

    Parameters
    ----------
    X : array of shape (n, d)
        Points of R^d (numpy or cupy; the Bessel function runs on the host, so cupy data makes an
        explicit round trip for the radii).

    Returns
    -------
    array of shape (n,)
        phi(x) = int_{|y| <= R_d} e^{-2 pi i <x, y>} dy = Lambda_{d/2}(2 pi R_d |x|), with
        Lambda_nu(z) = Gamma(nu + 1) (2/z)^nu J_nu(z) and R_d :func:`unit_ball_radius`; phi(0) = 1.
        It changes sign at the zeros of J_{d/2}: the Fourier-side computations of Eldan and Shamir
        (the transform of g phi is hat g * 1_B) need it signed, where :func:`eldan_shamir_density`
        gives phi^2.

    References
    ----------
    1. R. Eldan and O. Shamir, arXiv:1512.03965, Sec. 4 (phi, and the Fourier transform of g phi).

    Examples
    --------
    >>> import numpy as np
    >>> eldan_shamir_phi(np.array([[0.0], [0.5], [1.5]])).round(12).tolist()   # sin(pi x) / (pi x) in d = 1
    [1.0, 0.636619772368, -0.212206590789]
    """
    X = check_points(X, "X")
    xp = get_xp(X)
    d = X.shape[1]
    # not the plain norm, which squares the coordinates and overflows beyond 1e154
    with np.errstate(over="ignore"):  # |x| or z beyond the float64 range is inf, where Lambda = 0
        r = to_numpy(row_norms(X.astype(xp.float64, copy=False)))
        z = 2 * math.pi * unit_ball_radius(d) * r
    return xp.asarray(_normalized_bessel(z, 0.5 * d), dtype=X.dtype)


def eldan_shamir_density(X):
    r"""The Eldan-Shamir input density phi(x)^2, phi the Fourier transform of the unit-volume ball.

    Parameters
    ----------
    X : array of shape (n, d)
        Points of R^d, numpy or cupy (as :func:`eldan_shamir_phi`).

    Returns
    -------
    array of shape (n,)
        phi(x)^2 with phi(x) = (R_d / |x|)^{d/2} J_{d/2}(2 pi R_d |x|) (:func:`eldan_shamir_phi`,
        whose Returns give it as Lambda_{d/2}; R_d is :func:`unit_ball_radius`). phi(0) = vol(ball) = 1.

    Notes
    -----
    By Plancherel (this transform has 2 pi in the exponent and is unitary), int phi^2 = int 1_B^2 =
    vol(B) = 1: phi^2 is a probability density. It is radial; the radius has the density
    |S^{d-1}| r^{d-1} phi(r e)^2 (:func:`eldan_shamir_radial_density`), a heavy tail of order r^{-2}
    (no mean). For d = 1 it is the squared sinc, sin(pi x)^2 / (pi x)^2; for d = 3,
    (3 (sin a - a cos a) / a^3)^2 with a = 2 pi R_3 |x|.

    References
    ----------
    1. R. Eldan and O. Shamir, arXiv:1512.03965, Theorem 1 and its proof (the density phi^2).

    Examples
    --------
    >>> import numpy as np
    >>> eldan_shamir_density(np.array([[0.0], [0.5], [1.0]])).round(12).tolist()   # sinc^2 in d = 1
    [1.0, 0.405284734569, 0.0]
    """
    X = check_points(X, "X")
    phi = eldan_shamir_phi(X.astype(get_xp(X).float64, copy=False))  # squared in float64, then cast
    return (phi * phi).astype(X.dtype, copy=False)


def eldan_shamir_radial_density(r, d):
    """The density of |x| for x ~ phi^2 in R^d: |S^{d-1}| r^{d-1} Lambda_{d/2}(2 pi R_d r)^2, r >= 0.

    Parameters
    ----------
    r : array_like
        Radii >= 0 (any shape; numpy or cupy, computed on the host).
    d : int

    Returns
    -------
    array of r's shape

    Notes
    -----
    In z = 2 pi R_d r it is q(z) = 2 nu J_nu(z)^2 / z, nu = d/2 (the constants combine to 2 nu), whose
    integral over (0, infinity) is 1 (Weber-Schafheitlin: int J_nu^2 / z = 1 / (2 nu)).
    """
    d = check_integer(d, "d", minimum=1)
    r, xp = _check_radii(r)
    rh = to_numpy(r).astype(np.float64)
    # dz/dr q(z): |S^{d-1}| and r^{d-1} under- and overflow separately for d >~ 300 (their product is nan)
    scale = 2 * math.pi * unit_ball_radius(d)
    return xp.asarray(scale * _es_q(scale * rh, 0.5 * d), dtype=r.dtype)


def eldan_shamir_radial_cdf(r, d):
    r"""P(|x| <= r) for x ~ phi^2 in R^d, from a Bessel series (exact up to rounding).

    Parameters
    ----------
    r : array_like
        Finite radii >= 0, any shape; numpy or cupy (computed on the host in float64).
    d : int
        Dimension, an integer >= 1.

    Returns
    -------
    array of r's shape
        Values in [0, 1], on r's device, in r's floating dtype (float64 for integers).

    Raises
    ------
    ValueError
        For a negative, NaN or infinite radius, or d not an integer >= 1.

    Notes
    -----
    With z = 2 pi R_d r and nu = d/2, the recurrences 2 nu J_nu / z = J_{nu-1} + J_{nu+1} and
    2 J_nu' = J_{nu-1} - J_{nu+1} give d/dz [J_nu^2 + 2 sum_{j >= 1} J_{nu+j}^2] = 2 nu J_nu^2 / z (the
    sum telescopes), so

        F(z) = J_nu(z)^2 + 2 sum_{j >= 1} J_{nu+j}(z)^2,

    a sum of positive terms that is negligible once nu + j exceeds z by a margin: O(z) Bessel
    evaluations, used for z <= 2 nu + 64. Beyond, the whole series has a closed form and O(nu)
    terms remain: for integer nu, Neumann's identity 1 = J_0^2 + 2 sum_{k>=1} J_k^2 gives

        F = 1 - J_0^2 - 2 sum_{0 < k < nu} J_k^2 - J_nu^2,

    and for nu = n + 1/2 the identity sum_{k>=0} J_{k+1/2}(z)^2 = Si(2z) / pi gives

        F = 2 Si(2z) / pi - 2 sum_{k < n} J_{k+1/2}^2 - J_nu^2.

    There F >= 1/2, so the cancellation in these differences costs nothing relative to F; at smaller
    z, where F can be tiny, the positive series keeps its relative accuracy.

    Examples
    --------
    >>> round(float(eldan_shamir_radial_cdf(np.array([1e3]), 2)[0]), 4)      # tail ~ 2 nu / (pi z)
    0.9998
    """
    d = check_integer(d, "d", minimum=1)
    r, xp = _check_radii(r)
    z = 2 * math.pi * unit_ball_radius(d) * to_numpy(r).astype(np.float64).reshape(-1)
    nu = 0.5 * d
    F = special.jv(nu, z) ** 2
    far = z > 2 * nu + 64  # (the median of z is below nu + 1: F > 1/2 there)
    near = np.flatnonzero(~far)
    need = np.ceil(z[near] + 30 + 10 * np.cbrt(z[near]))  # terms J_{nu+j}(z)^2 with j beyond are below 1e-30
    order = near[np.argsort(-need)]  # the points needing the most terms first
    need_sorted = -np.sort(-need)
    for start in range(1, int(need.max(initial=0)) + 1, 256):
        active = order[: int(np.searchsorted(-need_sorted, -start, side="right"))]  # need >= start
        j = np.arange(start, start + 256, dtype=np.float64)  # (256,)
        F[active] += 2 * (special.jv(nu + j[:, None], z[None, active]) ** 2).sum(axis=0)
    zf = z[far]
    if d % 2 == 0:  # Neumann: J_0^2 + 2 sum_{k >= 1} J_k^2 = 1
        k = np.arange(1, d // 2, dtype=np.float64)[:, None]  # (nu - 1, 1)
        F[far] = 1 - special.jv(0, zf) ** 2 - 2 * (special.jv(k, zf) ** 2).sum(axis=0) - F[far]
    else:  # sum_{k >= 0} J_{k+1/2}^2 = Si(2z) / pi
        k = np.arange(d // 2, dtype=np.float64)[:, None] + 0.5  # (n, 1)
        F[far] = 2 * special.sici(2 * zf)[0] / math.pi - 2 * (special.jv(k, zf) ** 2).sum(axis=0) - F[far]
    return xp.asarray(np.minimum(F, 1.0).reshape(r.shape), dtype=r.dtype)


_ES_CELL = 0.02  # width of the z-cells of the sampling table
_ES_GAUSS = np.polynomial.legendre.leggauss(8)


def _es_q(z, nu):
    """q(z) = 2 nu J_nu(z)^2 / z (q(0) = 2/pi for nu = 1/2, 0 beyond)."""
    z = np.asarray(z, dtype=np.float64)
    safe = np.where(z > 0, z, 1.0)
    q = 2 * nu * special.jv(nu, safe) ** 2 / safe
    return np.where(z > 0, q, 2 / math.pi if nu == 0.5 else 0.0)


@functools.lru_cache(maxsize=16)
def _es_table(d):
    """Cumulative table of the law of z = 2 pi R_d |x| on [0, z_max] (Gauss-Legendre per cell)."""
    nu = 0.5 * d
    z_max = 4 * nu + 200.0
    n_cells = int(math.ceil(z_max / _ES_CELL))
    edges = np.linspace(0.0, z_max, n_cells + 1)  # (n_cells + 1,)
    u, w = _ES_GAUSS
    half = 0.5 * (edges[1] - edges[0])
    nodes = (edges[:-1, None] + half * (u[None, :] + 1))  # (n_cells, 8)
    cell_mass = half * (_es_q(nodes, nu) * w).sum(axis=1)  # (n_cells,)
    F = np.concatenate([[0.0], np.cumsum(cell_mass)])  # (n_cells + 1,)
    q = _es_q(edges, nu)
    # Tail z > z_max: density proportional to J_nu^2 / z; (pi z / 2)(J_nu^2 + Y_nu^2) decreases in z
    # for nu >= 1/2 (Watson, Sec. 13.74), so it bounds (pi z / 2) J_nu^2 on the tail.
    M = 0.5 * math.pi * z_max * (special.jv(nu, z_max) ** 2 + special.yv(nu, z_max) ** 2)
    return edges, F, q, z_max, M


def _sample_es_radius(n, d, rng):
    """n draws of z = 2 pi R_d |x|: inverse CDF on the table (cubic Hermite in each cell) and exact
    rejection sampling from a Pareto proposal in the tail."""
    edges, F, q, z_max, M = _es_table(d)
    nu = 0.5 * d
    u = rng.random(n)  # (n,)
    z = np.empty(n)
    body = u < F[-1]
    ub = u[body]
    i = np.clip(np.searchsorted(F, ub, side="right") - 1, 0, len(F) - 2)
    h = edges[1] - edges[0]
    F0, F1, q0, q1 = F[i], F[i + 1], q[i] * h, q[i + 1] * h
    lo, hi = np.zeros_like(ub), np.ones_like(ub)
    for _ in range(50):  # bisection on the cubic Hermite interpolant of F in the cell
        s = 0.5 * (lo + hi)
        s2, s3 = s * s, s * s * s
        H = (2 * s3 - 3 * s2 + 1) * F0 + (s3 - 2 * s2 + s) * q0 + (-2 * s3 + 3 * s2) * F1 + (s3 - s2) * q1
        below = H < ub
        lo = np.where(below, s, lo)
        hi = np.where(below, hi, s)
    z[body] = edges[i] + h * 0.5 * (lo + hi)
    need = int((~body).sum())
    tail = []
    while need > 0:
        m = max(2 * need, 16)
        prop = z_max / (1.0 - rng.random(m))  # Pareto(1) on (z_max, infinity)
        accept = rng.random(m) * M < 0.5 * math.pi * prop * special.jv(nu, prop) ** 2
        got = prop[accept][:need]
        tail.append(got)
        need -= got.size
    if tail:
        z[~body] = np.concatenate(tail)
    return z


def sample_eldan_shamir(n, d, rng=None, dtype=np.float64, device="cpu"):
    r"""n points of R^d drawn from the Eldan-Shamir density phi^2 (:func:`eldan_shamir_density`).

    Parameters
    ----------
    n : int
    d : int
        d >= 1.
    rng : None, int or numpy.random.Generator
        Drawn on the host (the same points on every device).
    dtype, device
        Of the returned array.

    Returns
    -------
    X : array of shape (n, d)

    Notes
    -----
    phi^2 is radial: x = r u with u uniform on the sphere and r = z / (2 pi R_d), z with density
    q(z) = 2 nu J_nu(z)^2 / z (nu = d/2). On [0, z_max] (z_max = 2d + 200) z is drawn by inverting
    its CDF, tabulated by 8-point Gauss-Legendre on cells of width h = 0.02 and interpolated by
    cubic Hermite polynomials with the exact derivative q (CDF error at most h^4 max|q'''| / 384,
    below 3e-10 for d = 1 to 100); beyond z_max, where the density is about 2 nu / (pi z^2), by
    exact rejection from the Pareto proposal z_max / z^2, accepting with probability
    (pi z / 2) J_nu(z)^2 / M, M = (pi z_max / 2) (J_nu^2 + Y_nu^2)(z_max) (a bound since
    z (J_nu^2 + Y_nu^2) decreases for nu >= 1/2).

    References
    ----------
    1. R. Eldan and O. Shamir, arXiv:1512.03965, Theorem 1 and its proof.
    2. G. N. Watson, "A Treatise on the Theory of Bessel Functions", 1944, Sec. 13.74 (monotonicity
       of z (J_nu^2 + Y_nu^2)).

    Examples
    --------
    >>> X = sample_eldan_shamir(1000, 5, rng=0)
    >>> X.shape
    (1000, 5)
    """
    n = check_integer(n, "n", minimum=0)
    d = check_integer(d, "d", minimum=1)
    rng = check_random_state(rng)
    z = _sample_es_radius(n, d, rng)  # (n,)
    r = z / (2 * math.pi * unit_ball_radius(d))
    if d == 1:
        U = rng.choice(np.array([-1.0, 1.0]), size=(n, 1))
    else:
        G = rng.standard_normal((n, d))
        U = G / np.linalg.norm(G, axis=1, keepdims=True)
    return to_device((U * r[:, None]).astype(check_float_dtype(dtype), copy=False), device)


class EldanShamirFunction:
    r"""The radial target of Eldan & Shamir: +-1 on N thin shells.

    Parameters
    ----------
    d : int
        Dimension.
    n_shells : int, optional
        N, default len(signs) when ``signs`` is given, d otherwise (the paper takes N polynomial in d).
    alpha : float, default 1
        The shells cover alpha sqrt(d) <= |x| <= 2 alpha sqrt(d).
    signs : array of shape (N,), optional
        epsilon_i in {-1, +1}; default drawn with ``rng``.
    rng : None, int or numpy.random.Generator
    ramp : float, default 0
        0: the indicator version g(x) = sum_i epsilon_i 1{|x| in Delta_i}. In (0, 1/2]: a continuous
        version, epsilon_i on the middle of shell i and ramps to 0 over a fraction ``ramp`` of the
        shell at each end, linear in s = |x|^2 (so that a 3-layer network computes it).

    Attributes
    ----------
    edges : numpy array of shape (N + 1,)
        Radii a_i = (1 + i/N) alpha sqrt(d); Delta_i = [a_{i-1}, a_i).
    signs : numpy array of shape (N,)

    Notes
    -----
    Eldan & Shamir prove that under x ~ phi^2 (:func:`sample_eldan_shamir`), for suitable N and
    alpha, random signs make g hard for every 2-layer network of width subexponential in d, while a
    3-layer network of width poly(d) approximates the Lipschitz version (:meth:`network`).

    References
    ----------
    1. R. Eldan and O. Shamir, arXiv:1512.03965, Theorem 1 and the construction of its proof.

    Examples
    --------
    >>> import numpy as np
    >>> g = EldanShamirFunction(4, n_shells=2, signs=[1, -1])
    >>> g.edges.tolist(), g(np.array([[2.5, 0, 0, 0], [3.5, 0, 0, 0], [9.0, 0, 0, 0]])).tolist()
    ([2.0, 3.0, 4.0], [1.0, -1.0, 0.0])
    """

    def __init__(self, d, n_shells=None, alpha=1.0, signs=None, rng=None, ramp=0.0):
        self.d = check_integer(d, "d", minimum=1)
        if n_shells is not None:
            N = check_integer(n_shells, "n_shells", minimum=1)
        elif signs is not None:
            N = int(check_array(signs, "signs", ndim=1).shape[0])
            if N < 1:
                raise ValueError("signs must hold at least one sign (one per shell), got an empty array")
        else:
            N = self.d
        self.alpha = check_positive(alpha, "alpha")
        if isinstance(ramp, bool) or not isinstance(ramp, numbers.Real) or not 0 <= ramp <= 0.5:
            raise ValueError(f"ramp must be a number in [0, 1/2], got {ramp!r}")
        self.ramp = float(ramp)
        if signs is None:
            signs = check_random_state(rng).choice(np.array([-1.0, 1.0]), size=N)
        signs = to_numpy(check_array(signs, "signs", ndim=1)).astype(np.float64)
        if signs.shape[0] != N:
            raise ValueError(f"signs has shape {signs.shape} but n_shells={N}")
        if not np.isin(signs, (-1.0, 1.0)).all():
            raise ValueError("signs must be -1 or +1")
        self.signs = signs  # (N,)
        self.edges = (1 + np.arange(N + 1) / N) * self.alpha * math.sqrt(self.d)  # (N + 1,)

    @property
    def n_shells(self) -> int:
        """N, the number of shells (the length of ``signs``)."""
        return int(self.signs.shape[0])

    def __repr__(self):
        return (f"EldanShamirFunction(d={self.d}, n_shells={self.n_shells}, alpha={self.alpha:g}, "
                f"ramp={self.ramp:g})")

    def profile(self):
        """(knots, values) of the continuous version as a function of s = |x|^2 (requires ramp > 0)."""
        if self.ramp == 0:
            raise ValueError("the indicator version (ramp=0) is not continuous: set ramp in (0, 1/2]")
        s = self.edges**2
        knots, values = [s[0]], [0.0]
        for i, eps in enumerate(self.signs):
            lo, hi = s[i], s[i + 1]
            width = hi - lo
            a, b = lo + self.ramp * width, hi - self.ramp * width
            if b > a:
                knots += [a, b, hi]
                values += [eps, eps, 0.0]
            else:
                knots += [a, hi]
                values += [eps, 0.0]
        return np.array(knots), np.array(values)

    def __call__(self, X):
        """g(x) for each row of X (n, d): shape (n,), on X's device and in its dtype."""
        X = check_points(X, "X", d=self.d)
        xp = get_xp(X)
        if self.ramp == 0:
            r = xp.linalg.norm(X, axis=1)
            edges = xp.asarray(self.edges, dtype=X.dtype)
            i = xp.searchsorted(edges, r, side="right") - 1  # shell index
            inside = (i >= 0) & (i < self.n_shells)
            signs = xp.asarray(self.signs, dtype=X.dtype)
            return xp.where(inside, signs[xp.clip(i, 0, self.n_shells - 1)], 0.0).astype(X.dtype)
        knots, values = self.profile()
        return xp.interp((X * X).sum(axis=1), xp.asarray(knots, dtype=X.dtype),
                         xp.asarray(values, dtype=X.dtype)).astype(X.dtype)

    def network(self, tolerance=1e-2, *, dtype=np.float64, device="cpu") -> DeepReLU:
        """A 3-layer relu network within ``tolerance`` of the continuous version (ramp > 0), on all of R^d.

        See :func:`radial_network`; ``meta["error_bound"]`` is the proven uniform error.

        Parameters
        ----------
        tolerance : float
            The uniform error allowed, > 0.
        dtype : float32 or float64
            The dtype of the parameters.
        device : {"cpu", "gpu"}
            Where the parameters live.

        Returns
        -------
        DeepReLU

        Raises
        ------
        ValueError
            For the indicator version (``ramp=0``), which is not continuous, or a tolerance that
            :func:`radial_network` refuses.
        """
        knots, values = self.profile()
        net = radial_network(knots, values, self.d, self.edges[-1], tolerance, dtype=dtype, device=device)
        net.meta["construction"] = "eldan_shamir"
        return net


# --------------------------------------------------------------------------------------------
# Safran-Shamir: the indicator of the unit ball.
# --------------------------------------------------------------------------------------------

def ball_indicator(X, radius=1.0):
    """1{|x| <= radius} for each row of X (n, d): shape (n,), in X's dtype and on its device.

    Parameters
    ----------
    X : array_like of shape (n, d), d >= 1
        Finite points, numpy or cupy (integers are taken as float64).
    radius : float
        A positive finite number, default 1.

    Returns
    -------
    array of shape (n,)
        1.0 inside the closed ball, 0.0 outside, in X's floating dtype.

    Raises
    ------
    ValueError
        For X not a finite 2-D array with d >= 1, or a radius that is not positive and finite.

    Examples
    --------
    >>> ball_indicator(np.array([[0.6, 0.8], [0.6, 0.81]])).tolist()
    [1.0, 0.0]
    """
    X = check_points(X, "X")
    radius = check_positive(radius, "radius")
    xp = get_xp(X)
    # |x|^2 <= r^2 with x and r scaled by the power of 2 of each row's largest entry (exactly), so that
    # neither square overflows nor underflows: the comparison of the plain squares said inf <= inf
    # (inside) for |x| = 1e300, r = 1e200, and 0 <= 0 for |x| = 2e-190, r = 1e-190.
    _, e = xp.frexp(xp.abs(X).max(axis=1))  # (n,) max_j |x_ij| = f 2^e, f in [1/2, 1)
    Y = xp.ldexp(X, -e[:, None])  # (n, d) entries in (-1, 1)
    with np.errstate(over="ignore", under="ignore"):  # r / 2^e and its square: inf or 0 past the range, still right
        rho = xp.ldexp(xp.asarray(radius, dtype=xp.float64), -e)  # (n,)
        return ((Y * Y).sum(axis=1) <= rho * rho).astype(X.dtype)


def ball_indicator_network(d, delta=0.1, radius=1.0, *, dtype=np.float64, device="cpu") -> DeepReLU:
    r"""A 3-layer relu network equal to 1{|x| <= radius} outside the shell (1 - delta) r < |x| < (1 + delta) r.

    "Equal" up to rounding, and only inside: wherever the network's s_hat reaches (1 + delta)^2 r^2
    (every x with |x| >= (1 + delta) r, at any distance, but for a sliver a few ulps wide at that
    sphere) the output is exactly 0; for |x| <= (1 - delta) r it is within
    2 eps (B^2 + r^2) / (B^2 - r^2) of 1, B = (1 + delta) r and eps the dtype's machine epsilon
    (200 eps for delta = 0.01).

    Parameters
    ----------
    d : int
        Dimension.
    delta : float in (0, 1), default 0.1
        Relative half-width of the shell where the network ramps from 1 to 0.
    radius : float, default 1
        r.
    dtype : numpy dtype, default float64
        float64 or float32: the dtype of the network's parameters.
    device : {"cpu", "gpu"}, default "cpu"
        Where the network's parameters live (numpy or cupy arrays).

    Returns
    -------
    DeepReLU
        Widths (2 K d, 2): K pieces per square, the second hidden layer relu(r^2 - s_hat) and
        relu((1 + delta)^2 r^2 - s_hat). ``meta["exact_outside"]`` holds the shell, and
        ``meta["error_bound"]`` = 1 the proven uniform error sup_x |net(x) - 1{|x| <= r}| (see Notes).

    Notes
    -----
    psi(s) = 1 for s <= r^2, 0 for s >= (1 + delta)^2 r^2, linear between; the first layer builds
    s_hat with 0 <= s_hat - |x|^2 <= d h^2 / 4 (see :func:`radial_network`), and h is chosen with
    d h^2 / 4 < r^2 - (1 - delta)^2 r^2, so that psi(s_hat) = 1 exactly when |x| <= (1 - delta) r. When
    |x| >= (1 + delta) r, s_hat >= |x|^2 (or s_hat >= B^2 with B = (1 + delta) r if a coordinate
    leaves [-B, B]) and psi(s_hat) = 0 exactly. The width grows like d^{3/2} / sqrt(delta),
    polynomially: this is the 3-layer side of Safran & Shamir's depth-width comparison for the ball
    indicator (the 2-layer side, the error of trained 2-layer networks against their width, is
    measured by a study, not proven here).

    The output psi(s_hat) lies in [0, 1], so |net(x) - 1{|x| <= r}| <= 1 everywhere (and 0 outside
    the shell): the error bound. No continuous function does better than 1/2 across the jump at
    |x| = r. Just outside the sphere the error tends to psi(s_hat) = 1 - (s_hat - r^2) /
    ((1 + delta)^2 r^2 - r^2), which is 1 where s_hat = |x|^2 = r^2: the bound is attained (as a
    supremum) when the sphere passes through a point whose coordinates are all nodes j h (d = 9,
    delta = 0.5: h = 1/2, x = r e_1), and not otherwise: s_hat - r^2 then has a positive minimum on
    the sphere, and the sup error stays below 1 (0.79 at d = 1, delta = 0.1).

    References
    ----------
    1. I. Safran and O. Shamir, arXiv:1610.09887 (the indicator of the unit ball).

    Examples
    --------
    >>> import numpy as np
    >>> net = ball_indicator_network(3, delta=0.1)
    >>> net(np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 1.2], [0.89, 0.0, 0.0]])).round(12).tolist()
    [1.0, 0.0, 1.0]
    """
    d = check_integer(d, "d", minimum=1)
    delta = check_positive(delta, "delta")
    if delta >= 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    r = check_positive(radius, "radius")
    B = (1 + delta) * r
    h = 0.99 * math.sqrt(4 * r * r * (2 * delta - delta * delta) / d)  # a 1% margin against rounding
    _check_weights(2 * d * B / h if h > 0 else math.inf, 2, d, f"raise delta (got {delta:g})")
    K = max(1, math.ceil(B / h))
    knots = np.array([r * r, B * B])
    values = np.array([1.0, 0.0])
    meta = {"construction": "ball_indicator", "pieces_per_square": K,
            "exact_outside": ((1 - delta) * r, (1 + delta) * r), "error_bound": 1.0}
    return _squares_then_profile(np.eye(d), np.ones(d), np.full(d, B), np.full(d, K), knots, values,
                                 check_float_dtype(dtype), device, meta)


# --------------------------------------------------------------------------------------------
# Daniely: sin(pi d^3 <x, y>) on the product of spheres.
# --------------------------------------------------------------------------------------------

def _split_pairs(Z, name="Z"):
    Z = check_points(Z, name)
    if Z.shape[1] % 2 or Z.shape[1] < 4:
        raise ValueError(f"{name} must have 2d columns (x, y), d >= 2, got shape {tuple(Z.shape)}")
    d = Z.shape[1] // 2
    return Z, d


def daniely_function(Z, frequency=None):
    """sin(omega <x, y>) for each row (x, y) of Z (n, 2d), x and y the two halves; Daniely's omega = pi d^3.

    Parameters
    ----------
    Z : array_like of shape (n, 2d), d >= 2
        Finite rows (x, y), numpy or cupy; they need not lie on the spheres (not checked).
    frequency : float, optional
        omega > 0, default pi d^3 (ref. 1). A lower one (of order d) gives a target that
        2-layer networks of moderate width can fit, to watch the separation appear as omega grows.

    Returns
    -------
    array of shape (n,)
        On Z's device, in Z's floating dtype (float64 for integers).

    Raises
    ------
    ValueError
        For Z not a finite 2-D array with an even number 2d >= 4 of columns, or a frequency that is
        not a positive number.

    References
    ----------
    1. A. Daniely, arXiv:1702.08489 (the function sin(pi d^3 <x, y>) on S^{d-1} x S^{d-1}).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[1.0, 0.0, 1 / 16, 0.0]])          # d = 2, <x, y> = 1/16: sin(pi / 2)
    >>> daniely_function(z).tolist()
    [1.0]
    """
    Z, d = _split_pairs(Z)
    omega = _daniely_frequency(frequency, d)
    xp = get_xp(Z)
    t = (Z[:, :d] * Z[:, d:]).sum(axis=1)
    return xp.sin(omega * t)


def _daniely_frequency(frequency, d):
    return math.pi * d**3 if frequency is None else check_positive(frequency, "frequency")


def daniely_funk_hecke(d, kmax, *, frequency=None):
    r"""Funk-Hecke coefficients of g(t) = sin(omega t) on S^{d-1}, in closed form: mu_k, k = 0, ..., kmax.

    mu_k = int_{-1}^{1} sin(omega t) P_{k,d}(t) w_d(t) dt (the convention of :mod:`shallow.harmonics`),
    so that Daniely's f(x, y) = sin(omega <x, y>) = sum_k mu_k N(d, k) P_{k,d}(<x, y>) and the integral
    operator with kernel f multiplies the degree-k harmonics by mu_k.

    Parameters
    ----------
    d : int
        Ambient dimension, d >= 2.
    kmax : int
        Highest degree, kmax >= 0.
    frequency : float, optional
        omega > 0, default Daniely's pi d^3 (as :func:`daniely_function`).

    Returns
    -------
    mu : numpy array of shape (kmax + 1,)
        Host float64; exactly 0 at even k (g is odd).

    Raises
    ------
    ValueError
        For d or kmax not an integer in range, or a frequency that is not a positive number.

    Notes
    -----
    With nu = d/2 - 1, the Gegenbauer expansion of e^{i omega t} (ref. 2) gives for odd k

        mu_k = (-1)^{(k-1)/2} Gamma(d/2) (2/omega)^nu J_{k+nu}(omega),

    and mu_k = 0 for even k (for d = 2, sin(omega cos theta) = 2 sum_{k odd} (-1)^{(k-1)/2} J_k(omega)
    cos k theta). The energy per degree N(d, k) mu_k^2 sits at k <= omega + O(omega^{1/3}): J_{k+nu}(omega)
    decays faster than exponentially in k beyond omega. The total is (:func:`daniely_energy`)

        sum_k N(d, k) mu_k^2 = E sin^2(omega <x, y>) = (1 - Gamma(d/2) omega^{-nu} J_nu(2 omega)) / 2.

    Computed as sign times exp(log Gamma(d/2) + nu log(2/omega) + log|J_{k+nu}(omega)|) with scipy's
    J; where J_{k+nu}(omega) lies below float64's range (orders far above omega) its logarithm comes
    from the backward recurrence of J_{n+1} / J_n (Miller), so that mu_k stays finite and accurate for
    large d. Measured against mpmath's Bessel function at 30 digits for d in [2, 500], omega in
    [0.1, 10^4], k <= 20000: relative error below 1e-12 where |mu_k| > 1e-300 (the recurrence's
    relative error grows like k eps). Against :func:`shallow.harmonics.project_zonal` (quadrature):
    within 1e-13 absolute at d = 2..10, omega = pi d^3.

    References
    ----------
    1. A. Daniely, arXiv:1702.08489 (the function sin(pi d^3 <x, y>) and its depth-2 lower bound).
    2. DLMF 10.23.E8 (Gegenbauer's generalisation of the Jacobi-Anger expansion) and 18.7.1.

    Examples
    --------
    >>> from scipy.special import jv
    >>> mu = daniely_funk_hecke(2, 3, frequency=1.0)     # d = 2: mu_k = (-1)^((k-1)/2) J_k(omega)
    >>> np.allclose(mu, [0.0, jv(1, 1.0), 0.0, -jv(3, 1.0)], rtol=1e-14, atol=0)
    True
    """
    d = check_integer(d, "d", minimum=2)
    kmax = check_integer(kmax, "kmax", minimum=0)
    omega = _daniely_frequency(frequency, d)
    nu = 0.5 * d - 1.0
    k = np.arange(kmax + 1)  # (kmax + 1,)
    n = k + nu  # Bessel orders
    J = special.jv(n, omega)  # (kmax + 1,)
    mag = np.abs(J)
    with np.errstate(divide="ignore"):
        log_mag = np.log(mag)
    sign = np.sign(J)
    tiny = (mag < 1e-280) & (n > omega + 1)  # J below float64's range: orders far above omega (a tail of k)
    if tiny.any():
        first = int(np.flatnonzero(tiny)[0])
        # the ratios r_m = J_{n_m} / J_{n_{m-1}} for m > first by the backward recurrence r_n = omega / (2n - omega r_{n+1})
        ratios = np.empty(kmax + 1 - first)
        top = n[-1] + 32.0
        r = omega / (2 * top)
        m = top
        while m >= n[-1]:  # down to r = J_{n_kmax} / J_{n_kmax - 1}
            r = omega / (2 * m - omega * r)
            m -= 1.0
        for i in range(kmax, first - 1, -1):  # r = J_{n_i} / J_{n_i - 1}
            ratios[i - first] = r
            r = omega / (2 * (n[i] - 1.0) - omega * r)
        if first == 0:  # even J_nu(omega) below range: its logarithm by the same recurrence (0 < omega < nu - 1)
            anchor = float(_log_bessel_below_order(np.array([omega]), nu)[0])
        else:
            anchor = log_mag[first - 1]
        logs = np.log(ratios)
        if first == 0:
            logs[0] = 0.0
        log_mag[first:] = anchor + np.cumsum(logs)
        sign[first:] = 1.0  # J_n(omega) > 0 for n > omega
    mu = sign * np.exp(special.gammaln(0.5 * d) + nu * (math.log(2.0) - math.log(omega)) + log_mag)
    mu[0::2] = 0.0
    mu[3::4] *= -1.0  # (-1)^{(k-1)/2}: + at k = 1, 5, 9, ..., - at k = 3, 7, 11, ...
    return mu


def daniely_energy(d, *, frequency=None) -> float:
    r"""E sin^2(omega <x, y>) for x, y independent and uniform on S^{d-1}: the squared L2 norm of Daniely's function.

    Parameters
    ----------
    d : int
        Ambient dimension, d >= 2.
    frequency : float, optional
        omega > 0, default Daniely's pi d^3 (as :func:`daniely_function`).

    Returns
    -------
    float
        (1 - Gamma(d/2) omega^{-nu} J_nu(2 omega)) / 2 with nu = d/2 - 1, which is
        sum_k N(d, k) mu_k^2 over the coefficients of :func:`daniely_funk_hecke` (Parseval).

    Notes
    -----
    sin^2 = (1 - cos(2 omega t)) / 2 and E cos(s <x, y>) = Gamma(d/2) (2/s)^nu J_nu(s), the Fourier
    transform of the law w_d of <x, y> (its characteristic function). Relative error below 1e-13
    (measured against mpmath quadrature of sin^2 w_d for d = 2..50 and omega in [0.1, 10^4]).

    Examples
    --------
    >>> round(daniely_energy(3, frequency=np.pi), 15)       # (1 - sin(2 pi) / (2 pi)) / 2
    0.5
    """
    d = check_integer(d, "d", minimum=2)
    omega = _daniely_frequency(frequency, d)
    return float(0.5 * (1.0 - _normalized_bessel(np.array([2.0 * omega]), 0.5 * d - 1.0)[0]))


def sample_daniely(n, d, rng=None, dtype=np.float64, device="cpu"):
    """n pairs (x, y) with x, y independent and uniform on S^{d-1}, as the rows of Z (n, 2d).

    Parameters
    ----------
    n : int
        Number of pairs, n >= 0.
    d : int
        Ambient dimension, d >= 2.
    rng : None, int or numpy.random.Generator
        Source of randomness. The draw happens on the host (x first, then y), so a seed gives the
        same pairs on every device.
    dtype : numpy dtype
        float64 (default) or float32.
    device : {"cpu", "gpu"}
        Where the returned array lives.

    Returns
    -------
    Z : array of shape (n, 2d)
        Z[:, :d] holds x and Z[:, d:] holds y, rows of unit norm. <x, y> then has the density w_d
        of :func:`shallow.sphere.inner_product_density`.

    Raises
    ------
    ValueError
        For n or d not an integer in range, or a dtype other than float32 and float64.
    """
    from .sphere import sample_sphere

    n = check_integer(n, "n", minimum=0)
    d = check_integer(d, "d", minimum=2)
    rng = check_random_state(rng)
    X = sample_sphere(n, d, rng=rng)
    Y = sample_sphere(n, d, rng=rng)
    return to_device(np.concatenate([X, Y], axis=1).astype(check_float_dtype(dtype), copy=False), device)


def daniely_network(d, tolerance=0.05, *, frequency=None, dtype=np.float64, device="cpu") -> DeepReLU:
    r"""A 3-layer relu network within ``tolerance`` of sin(omega <x, y>) uniformly on S^{d-1} x S^{d-1}.

    Parameters
    ----------
    d : int
        d >= 2; the network takes (x, y) in R^{2d}.
    tolerance : float, default 0.05
        The proven uniform error (``meta["error_bound"]``).
    frequency : float, optional
        omega > 0, default Daniely's pi d^3 (as :func:`daniely_function`).
    dtype : numpy dtype, default float64
        float64 or float32: the dtype of the network's parameters.
    device : {"cpu", "gpu"}, default "cpu"
        Where the network's parameters live (numpy or cupy arrays).

    Returns
    -------
    DeepReLU
        First hidden layer: piecewise-linear squares of x_i + y_i and x_i - y_i on [-2, 2];
        second: the kinks of the interpolant of sin(omega q) on [-1, 1], all reading the same q_hat
        (W_2 is a :class:`RankOneWeights`: 0.54 million entries in all at d = 10, where a dense W_2
        alone took 3.2e8).

    Notes
    -----
    q_hat = sum_i (ell(x_i + y_i) - ell(x_i - y_i)) / 4 with ell the interpolant of t^2 at step h
    errs by at most d h^2 / 16 (each ell overestimates by at most h^2/4). psi, the interpolant of
    sin(omega q) at step Delta, errs by at most omega^2 Delta^2 / 8 and is omega-Lipschitz, so the
    total error is at most omega d h^2 / 16 + omega^2 Delta^2 / 8. Each half of ``tolerance`` goes to
    one of the two errors: the widths grow like omega / sqrt(tol) (second layer) and
    d sqrt(omega d / tol) (first layer, 4 d K neurons with K ~ sqrt(omega d / tol)); with Daniely's
    omega = pi d^3, d^3 / sqrt(tol) for both.

    References
    ----------
    1. A. Daniely, arXiv:1702.08489 (the function, and its approximation by depth 3).

    Examples
    --------
    >>> net = daniely_network(2, tolerance=0.1)
    >>> Z = sample_daniely(200, 2, rng=0)
    >>> bool(np.abs(net(Z) - daniely_function(Z)).max() <= net.meta["error_bound"])
    True
    """
    d = check_integer(d, "d", minimum=2)
    tolerance = check_positive(tolerance, "tolerance")
    freq = _daniely_frequency(frequency, d)
    _check_weights(4 * d * 2.0 / math.sqrt(8 * tolerance / (freq * d)), freq / math.sqrt(tolerance), 2 * d,
                   f"raise tolerance (got {tolerance:g})")
    n_int = max(1, math.ceil(2.0 / (2 * math.sqrt(tolerance) / freq)))  # (freq Delta)^2 / 8 <= tol / 2
    knots = np.linspace(-1.0, 1.0, n_int + 1)
    values = np.sin(freq * knots)
    Delta = 2.0 / n_int
    interp_err = freq * freq * Delta * Delta / 8
    h = math.sqrt(8 * tolerance / (freq * d))  # freq d h^2 / 16 <= tol / 2
    K = max(1, math.ceil(2.0 / h))
    h = 2.0 / K
    square_err = freq * d * h * h / 16
    eye = np.eye(d)
    A = np.concatenate([np.concatenate([eye, eye], axis=1), np.concatenate([eye, -eye], axis=1)])  # (2d, 2d)
    c = np.concatenate([np.full(d, 0.25), np.full(d, -0.25)])
    meta = {"construction": "daniely", "frequency": freq, "pieces_per_square": K, "knots": n_int + 1,
            "error_bound": interp_err + square_err}
    return _squares_then_profile(A, c, np.full(2 * d, 2.0), np.full(2 * d, K), knots, values,
                                 check_float_dtype(dtype), device, meta)
