r"""Particle gradient flows: training a two-layer network as a flow of its particles (a_j, w_j).

A network f(x) = gamma sum_j a_j sigma(<w_j, x>) with gamma = 1/m is the integral of
phi(theta, x) = a sigma(<w, x>) against the empirical measure of its m particles theta_j = (a_j, w_j).
Gradient descent on the risk R with the step eta * m on each particle,

    theta_j <- theta_j - eta * m * grad_{theta_j} R,

is the forward-Euler discretisation, with time step eta, of the Wasserstein gradient flow of R over
the particles' measure: each particle follows -grad of the first variation of R, an O(1) field. So
flow time t = (number of steps) * eta does not depend on m, and the limit m -> infinity at fixed t is
the mean-field limit (Chizat and Bach 2018, Mei, Montanari and Nguyen 2018). For other scalings
gamma(m) the factor m is kept (``time_scale``), which the lazy-training studies vary.

Risks, for the square loss R(f) = 1/2 E[(f(x) - y)^2]:

* :class:`EmpiricalRisk`: the mean over n samples (x_i, y_i), in sample chunks so that no
  (n, m) array larger than ``chunk_bytes`` is held, and never an (n, m, d) one.
* :class:`PopulationRisk`: the exact expectation over x ~ N(0, I_d) (or x ~ tau_d) against a teacher
  network, for relu and step, through the arc-cosine kernels
  K(w, v) = E_x[sigma(<w, x>) sigma(<v, x>)]: a population flow needs no samples.

References
----------
1. L. Chizat and F. Bach, "On the global convergence of gradient descent for over-parameterized models
   using optimal transport", NeurIPS 2018, arXiv:1805.09545, Sec. 2 and Theorem 3.3.
2. S. Mei, A. Montanari and P.-M. Nguyen, "A mean field view of the landscape of two-layer neural
   networks", PNAS 2018, arXiv:1804.06561.
3. Y. Cho and L. Saul, "Kernel methods for deep learning", NeurIPS 2009 (arc-cosine kernels).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from pathlib import Path

import numpy as np

from ._validation import (
    cast_within_range,
    check_array,
    check_integer,
    check_nonnegative,
    check_samples,
    check_positive,
    check_random_state,
)
from .backend import array_digest, get_xp, is_cupy, to_numpy
from .kernels import _arccos_near_pi, _pair_rows, _pair_sine
from .networks import _block_bytes, _fused_pass, fused_pass

__all__ = [
    "EmpiricalRisk",
    "PopulationRisk",
    "Trajectory",
    "FlowDivergenceError",
    "gradient_flow",
]


class FlowDivergenceError(FloatingPointError):
    """The risk became NaN, infinite, or exploded during a flow (or, for the adaptive method, its step
    size fell below the resolution of t: the field is not finite or not continuous there)."""


_EPS64 = 2.0**-52  # float64 machine epsilon: t is a Python float


def _check_network(net, name="net"):
    """Refuse anything without a network's attributes (a TwoLayer, or a lazy.Linearized)."""
    if not all(hasattr(net, attr) for attr in ("a", "W", "gamma", "activation")):
        raise TypeError(f"{name} must be a TwoLayer network (with a, W, gamma and activation), "
                        f"got {type(net).__name__}")


# ----------------------------------------------------------------------------- empirical risk

class EmpiricalRisk:
    r"""Empirical square risk R = 1/(2n) sum_i (f(x_i) - y_i)^2 of a two-layer network.

    Parameters
    ----------
    X : array of shape (n, d)
        Inputs (numpy or cupy; the network's arrays must live on the same device).
    y : array of shape (n,)
        Targets.
    chunk_bytes : int, optional
        Memory for one block of pre-activations: the peak memory is O((n + m) d + chunk_bytes).
        Default :func:`shallow.networks.default_block_bytes`: 16 MiB on the host, up to 1 GiB on a GPU.

    Notes
    -----
    The value and both gradients come from :func:`shallow.networks.fused_pass` with the residual
    r = f - y computed block by block: one pass over the data per step, two GEMMs per block.
    The gradient in w_j uses sigma' at the samples: for the step activation, sigma' = 0 almost
    everywhere, so the inner weights never move under this risk, whereas the exact
    :class:`PopulationRisk` (an integral, differentiable in w) moves them.
    """

    def __init__(self, X, y, *, chunk_bytes: int | None = None):
        X, y = check_samples(X, y)
        self.X, self.y = X, y
        self.chunk_bytes = _block_bytes(chunk_bytes, get_xp(X), "chunk_bytes")

    @property
    def n(self) -> int:
        """Number of training samples (rows of X)."""
        return self.X.shape[0]

    def fingerprint(self) -> str:
        """What identifies this risk in a saved flow (:func:`gradient_flow` compares it on resume)."""
        return f"EmpiricalRisk {array_digest(self.X, self.y)}"

    def _inputs(self, net):
        """X (with a column of ones for a network with bias) and y, in the network's dtype, cast once and kept:
        float64 data with a float32 network made every block's products float64 (2 to 5 times slower)."""
        bias = bool(getattr(net, "bias", False))
        dtype = net.W.dtype
        key = (np.dtype(dtype).str, bias)
        cache = self.__dict__.setdefault("_cast", {})
        if key not in cache:
            X = cast_within_range(self.X, dtype, "X", "the network")
            if bias:
                xp = get_xp(X)
                X = xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)
            cache[key] = (X, cast_within_range(self.y, dtype, "y", "the network"))
        X, y = cache[key]
        if X.shape[1] != net.W.shape[1]:
            raise ValueError(f"the network has inputs of dimension {net.W.shape[1]} "
                             f"but X has d={self.X.shape[1]} coordinates" + (" (+1 for the bias)" if bias else ""))
        return X, y

    def __call__(self, net) -> float:
        """The risk of ``net``."""
        _check_network(net)
        return self.value_and_grad(net, a=net.a, W=net.W, need_grad=False)[0]

    def value_and_grad(self, net, a=None, W=None, need_grad=True):
        """Risk and its gradients (grad_a of shape (m,), grad_W of shape (m, d)) at (a, W).

        ``a`` and ``W`` default to the network's; the network supplies gamma and sigma. With
        ``need_grad=False`` only the risk is computed, and both gradients are None.
        """
        _check_network(net)
        a = net.a if a is None else a
        W = net.W if W is None else W
        return self._value_and_grad(net, a, W, need_grad, fused_pass)

    def _value_and_grad(self, net, a, W, need_grad=True, engine=_fused_pass):
        """:meth:`value_and_grad` with ``engine`` computing the pass: :func:`shallow.networks.fused_pass`, which
        checks a and W, or by default its unchecked core, for arrays that passed those checks (a flow's own
        particles, which keep the shapes and dtype of the ones checked at its first step)."""
        X, y = self._inputs(net)
        xp = get_xp(X)
        # sum of the chunks' |r|^2, added in float64 in order on the device and read once (on a GPU a read
        # per chunk waited for the device each time): the numbers of a sum of floats on the host
        total = None

        def residual(f_chunk, rows):
            nonlocal total
            r = f_chunk - y[rows]
            square = (r @ r).astype(xp.float64)
            total = square if total is None else total + square
            return r

        if need_grad:
            _, grad_a, grad_W = engine(X, a, W, net.gamma, net.activation, residual, block_bytes=self.chunk_bytes)
        else:
            f = engine(X, a, W, net.gamma, net.activation, block_bytes=self.chunk_bytes)[0]
            residual(f, slice(0, f.shape[0]))
            grad_a = grad_W = None
        return 0.5 * (0.0 if total is None else float(total)) / X.shape[0], grad_a, grad_W


# ----------------------------------------------------------------------------- population risk

#: Bytes of one tile-sized temporary of PopulationRisk on the host (200 x 200 in float64): the
#: temporaries of a tile (allocated once per call, reused from tile to tile) stay in the L2 cache.
#: Measured at m = 1000, d = 20: 12.5 ms a step, against 13.7 ms for 123-row and 15 ms for 256-row
#: tiles, and 26 ms for rows of all m particles with fresh temporaries (the previous scheme).
HOST_TILE_BYTES = 200 * 200 * 8


class _ArccosTile:
    r"""The arc-cosine kernel between the rows of W (m, d) and of V (m', d), and its fields.

    K(w, v) = E_{x ~ N(0, I)}[sigma(<w, x>) sigma(<v, x>)]:

    order 1 (relu): K = |w||v| (sin th + (pi - th) cos th) / (2 pi),
        grad_w K = ((pi - th) v + |v| sin th w/|w|) / (2 pi).
    order 0 (step): K = (pi - th) / (2 pi),
        grad_w K = (v/|v| - cos th w/|w|) / (2 pi |w| sin th)  (zero where sin th = 0).

    A pair with a zero vector counts as th = 0 (cos = sin = 0, as the limit of the formulas along w);
    its kernel is 0 for both orders, since sigma(<0, x>) = 0 (step(0) = 0: not (pi - 0) / (2 pi)).
    The (m, m') elementwise quantities (cos th, sin th, (pi - th) / (2 pi)) are symmetric in the
    pair, so one tile serves both orientations: :meth:`field` gives the field of the rows of W
    against the columns, or with ``transpose=True`` that of the rows of V against W, from the same
    arrays. This is the hot loop of PopulationRisk; its passes are written in place, into the
    arrays of ``work`` when given (:func:`_tile_work`: no allocation per tile).
    """

    def __init__(self, W, V, nw, nv, order, work=None, nonzero=None, inv_v=None, same=False):
        xp = get_xp(W, V)
        self.xp, self.W, self.V, self.order = xp, W, V, order
        self.nw, self.nv = nw, nv
        # 1 / |w| (1 for a zero vector); where every norm is known positive, the same numbers without the where
        self.inv_w = 1 / nw if nonzero else 1 / xp.where(nw > 0, nw, 1)
        if inv_v is None:  # callers with a fixed V (the teacher) pass its inverse norms, computed once
            inv_v = 1 / nv if nonzero else 1 / xp.where(nv > 0, nv, 1)
        self.inv_v = inv_v
        shape = (W.shape[0], V.shape[0])
        # a (m, m') temporary: a view of the named array of ``work``, or a new one ("mask" is boolean)
        # (work holds flat arrays: the first m m' entries, reshaped, are contiguous whatever the tile's shape)
        self._out = ((lambda name: work[name][:shape[0] * shape[1]].reshape(shape)) if work is not None
                     else (lambda name: xp.empty(shape, dtype=bool if name == "mask" else W.dtype)))
        self.G = G = xp.matmul(W, V.T, out=self._out("G"))  # (m, m')
        cos = xp.multiply(G, self.inv_w[:, None], out=self._out("cos"))
        cos *= self.inv_v[None, :]
        if xp is np:  # the same numbers as np.clip, without its Python wrappers (half the time of a small tile's clip)
            np.minimum(np.maximum(cos, -1, out=cos), 1, out=cos)
        else:
            xp.clip(cos, -1, 1, out=cos)
        sin_abs = xp.multiply(cos, cos, out=self._out("sin"))
        xp.subtract(1, sin_abs, out=sin_abs)
        xp.maximum(sin_abs, 0, out=sin_abs)
        xp.sqrt(sin_abs, out=sin_abs)
        if nonzero is None:  # whether no vector is zero (callers that know it spare a device sync)
            nonzero = bool(xp.all(nw > 0)) and bool(xp.all(nv > 0))
        self.nonzero = nonzero
        # The angle through atan2 of |w x v| and <w, v>: accurate at th ~ 0 and th ~ pi alike.
        # From the Gram matrix, sin th = sqrt(1 - cos^2) carries an absolute error of about eps / sin th, a
        # relative one of eps / sin^2 th (the step field's size is 1 / sin th). In float64 the pairs with sin th
        # below _NEAR_SINE (nearly parallel or antiparallel: duplicated or converged particles) are recomputed
        # from the vectors, as below (the step field then carries eps / sin th relative from its matrix products, as a
        # pair-by-pair field would from the unit vectors: measured, 3.8 times slower; so does the relu field, of size
        # (pi - th)^2 near th = pi from two terms of size pi - th), and their relu kernel near th = pi comes from its
        # integral form (kernels._arccos_near_pi). A float32 step tile with a pair below
        # _WIDE_SINE is computed in float64 as a whole (``wide``): pair by pair, the clustered particles of a
        # converging flow made it 10 to 70 times slower (m = 2000, d = 10 to 100, pairs at 0.004 to 0.04 rad). The
        # relu field has no 1 / sin th: a float32 relu tile recomputes its pairs below _WIDE_SINE (sin th to a few
        # eps32), as a float64 tile those below _NEAR_SINE.
        self.same, self.wide = same, None
        if same:  # V is W: a particle with itself, th = 0 exactly, is not recomputed (nor is its field made)
            xp.fill_diagonal(sin_abs, 1)
        single = W.dtype != np.float64
        if single and order == 0 and bool(xp.any(xp.less(sin_abs, _WIDE_SINE, out=self._out("mask")))):
            wide = None if work is None else work.get("float64")
            if work is not None and wide is None:
                wide = work["float64"] = _tile_work(xp, work["G"].shape[0], np.float64, order)
            W64, V64 = W.astype(np.float64), V.astype(np.float64)
            self.wide = _ArccosTile(W64, V64, xp.linalg.norm(W64, axis=1), xp.linalg.norm(V64, axis=1), order, wide,
                                    nonzero, same=same)
            return
        near = xp.nonzero(xp.less(sin_abs, _WIDE_SINE if single else _NEAR_SINE, out=self._out("mask")))
        self.antiparallel = None  # (i, j) of the nearly antiparallel pairs, for kernel()
        if len(near[0]):
            # sin th from the vectors (no row is zero: such pairs, sin th = 1, are never near): of a nearly parallel
            # pair |v/|v| - cos th w/|w||, cos th from the unit vectors, to their rounding, a few eps absolute (where
            # the kernels are of order 1 and the step field carries as much from its matrix products); of a nearly
            # antiparallel pair to a few eps relative (kernels._pair_sine, about twice the work): there the relu
            # kernel is ~ (pi - th)^3, and the unit vectors' rounding left it up to 2e8 eps off at pi - th = 1e-9
            anti = cos[near] < 0
            rows = None
            if bool(xp.any(anti)):  # the rows as _pair_sine reads them
                rows = (_pair_rows(W, xp),) * 2 if same else (_pair_rows(W, xp), _pair_rows(V, xp))
                self.antiparallel = (near[0][anti], near[1][anti])
            step = max(1, _PAIR_CHUNK // max(W.shape[1], 1))  # pairs per chunk: (step, d) temporaries of 2^20 entries
            for start in range(0, near[0].shape[0], step):
                i, j = near[0][start:start + step], near[1][start:start + step]
                if rows is not None:
                    a = anti[start:start + step]
                    sin_abs[i[a], j[a]] = _pair_sine(rows[0], i[a], rows[1], j[a], xp)
                    i, j = i[~a], j[~a]
                Wh, Vh = W[i] * self.inv_w[i][:, None], V[j] * self.inv_v[j][:, None]
                p = Vh - xp.sum(Wh * Vh, axis=1)[:, None] * Wh
                sin_abs[i, j] = xp.sqrt(xp.sum(p * p, axis=1))
        if same:
            xp.fill_diagonal(sin_abs, 0)
            xp.fill_diagonal(cos, 1)  # (a zero vector's pairs are masked below)
        if not nonzero:  # a zero vector has sin th = 1 from its cos = 0 (it is never near): 0 as stated above
            sin_abs *= (nw > 0)[:, None]
            sin_abs *= (nv > 0)[None, :]
        # (pi - theta) / (2 pi) with pi - theta = atan2(sin th, -cos th): as accurate as sin th near th = pi,
        # where 1/2 - theta / (2 pi) kept theta's absolute error (1.7e11 eps32 in the relu kernel at 1e-4 from
        # antiparallel); one arctangent as before and one pass fewer
        A = xp.arctan2(sin_abs, xp.negative(cos, out=self._out("A")), out=self._out("A"))
        A *= 1 / (2 * xp.pi)
        if not nonzero:
            # a zero vector's step neuron 1{<0, x> > 0} = 0 vanishes, and so does relu'(<0, x>) = 0 in the
            # relu field: A = 0 there, not (pi - 0) / (2 pi) (a zero particle stays put, as under EmpiricalRisk)
            A *= (nw > 0)[:, None]
            A *= (nv > 0)[None, :]
        self.cos, self.sin, self.A = cos, sin_abs, A
        self._S = None

    def kernel(self):
        """K (m, m'); its transpose is the kernel of (V, W)."""
        xp = self.xp
        if self.wide is not None:
            return self.wide.kernel().astype(self.W.dtype)
        if self.order == 0:
            return self.A
        K = xp.multiply(self.A, self.G, out=self._out("K"))  # (pi - th) <w, v> / (2 pi) + |w||v| sin th / (2 pi)
        B = xp.multiply(self.sin, (self.nv / (2 * xp.pi))[None, :], out=self._out("B"))
        B *= self.nw[:, None]
        K += B
        if self.antiparallel is not None:
            # near th = pi, K = |w||v| (sin delta - delta cos delta) / (2 pi) ~ delta^3 from two terms of size
            # delta (delta = pi - th): eps / delta^2 relative; the integral form of the kernels module instead, 3
            # times delta's relative error (a few eps: sin th from kernels._pair_sine)
            i, j = self.antiparallel
            J1 = _arccos_near_pi(1, 2 * xp.pi * self.A[i, j], xp)
            K[i, j] = (self.nw[i] * self.nv[j]) * J1 / (2 * xp.pi)
        return K

    def field(self, c, transpose=False):
        """sum_k c_k grad_w K(w_j, v_k) for the rows w_j of W, shape (m, d); with ``transpose``,
        sum_j c_j grad_v K(v_k, w_j) for the rows v_k of V, shape (m', d). Matrix products only."""
        xp = self.xp
        if self.wide is not None:
            return self.wide.field(c.astype(np.float64), transpose).astype(self.W.dtype)
        A, sin = (self.A.T, self.sin.T) if transpose else (self.A, self.sin)
        U, X = (self.V, self.W) if transpose else (self.W, self.V)  # rows, columns
        nx = self.nw if transpose else self.nv
        inv_u, inv_x = (self.inv_v, self.inv_w) if transpose else (self.inv_w, self.inv_v)
        U_hat = U * inv_u[:, None]
        if self.order == 1:
            return A @ (c[:, None] * X) + ((sin @ (nx * c)) / (2 * xp.pi))[:, None] * U_hat
        if self._S is None:
            # 1 / (2 pi sin th), zero for (anti)parallel pairs, and its product with cos th: symmetric
            S = xp.multiply(self.sin, 2 * xp.pi, out=self._out("S"))
            with np.errstate(divide="ignore"):
                xp.reciprocal(S, out=S)
            # (anti)parallel to rounding (a particle with itself, a zero vector, x and 3x): the recomputed sin th is
            # accurate to a few eps64, and a float32 step tile with a pair this close has been promoted to float64
            xp.copyto(S, 0, where=xp.less_equal(self.sin, _PARALLEL_CHORD, out=self._out("mask")))
            self._S = (S, xp.multiply(S, self.cos, out=self._out("Sc")))
        S, Sc = (self._S[0].T, self._S[1].T) if transpose else self._S
        X_hat = X * inv_x[:, None]
        return inv_u[:, None] * (S @ (c[:, None] * X_hat) - (Sc @ c)[:, None] * U_hat)


#: Pairs of a float64 tile of PopulationRisk with sin th below this have sin th recomputed from the vectors:
#: elsewhere sqrt(1 - cos^2) leaves at most eps64 / _NEAR_SINE^2 = 2e-8 relative.
_NEAR_SINE = 1e-4
#: A float32 step tile with a pair of sin th below this is computed in float64 (to 8 eps32 relative, where the step
#: field was 1e2 to 1e5 eps32 off, and 0 below 7.6e-6 rad); elsewhere sqrt(1 - cos^2) and the matrix products leave
#: about 1.3 eps32 / sin^2 th relative in sin th and the step field, at most 6e3 eps32 = 3.5e-4. A cut of 0.1 (1e2
#: eps32 at most) made float32 2.1 to 2.5 times slower where particles cluster at 0.03 rad: float32 is chosen for
#: speed, at the price of up to 3.5e-4 relative in the field of close pairs. In d = 2 and 3 nearly every tile of
#: a few hundred random particles has such a pair: a float32 step risk there costs about a float64 one (2.2x).
_WIDE_SINE = 0.015
_PAIR_CHUNK = 2**20  # entries of the (pairs, d) temporaries of the near pairs per chunk
#: At or below this sin th (recomputed in float64) a pair counts as exactly (anti)parallel, its step field 0: the
#: rounding of sin th is a few eps64 (a particle with itself, x and 3x; about eps64^2 for x and -3x). The same cut
#: serves float32 tiles, whose near pairs are recomputed in float64: a cut of 64 eps32 = 7.6e-6 dropped the field,
#: of size 1 / (2 pi |w|), of pairs at a true angle below it.
_PARALLEL_CHORD = 1e-12


def _tile_work(xp, size, dtype, order):
    """Flat arrays of ``size`` entries for the temporaries of the tiles of :class:`_ArccosTile` (any shape of at
    most ``size`` entries), reused tile after tile."""
    names = ("G", "cos", "sin", "A", "K", "B") + (("S", "Sc") if order == 0 else ())
    work = {name: xp.empty(size, dtype=dtype) for name in names}
    work["mask"] = xp.empty(size, dtype=bool)
    return work


def _tiling(chunk_bytes, W, m, m_other, order):
    """(rows, cols, work): rows of W per tile, columns of the other (teacher's) particles per tile against them,
    and the work arrays, so that the ~10 temporaries of a (rows, rows) or (rows, cols) tile take ~chunk_bytes."""
    tile_bytes = chunk_bytes // 10
    if isinstance(W, np.ndarray):  # on the host
        tile_bytes = min(tile_bytes, HOST_TILE_BYTES)
    size = max(1, tile_bytes // W.dtype.itemsize)
    rows = max(1, min(m, math.isqrt(size)))
    cols = max(1, min(m_other, size // rows))  # >= rows unless m_other < rows: wide tiles when m is small
    return rows, cols, _tile_work(get_xp(W), rows * max(rows, cols), W.dtype, order)


class PopulationRisk:
    r"""Exact population square risk R = 1/2 E_x[(f(x) - f^*(x))^2] against a teacher network.

    Parameters
    ----------
    teacher : TwoLayer
        The target f^*, with the same activation as the students (relu or step) and no bias.
    input : {"gaussian", "sphere"}
        x ~ N(0, I_d), or x ~ tau_d uniform on S^{d-1}.
    chunk_bytes : int, optional
        Memory for the temporaries of one tile of the kernel matrices K(W, W) and K(W, W^*)
        (about 10 arrays of a tile's size; on the host a tile stays within ``HOST_TILE_BYTES``
        whatever this is). Default :func:`shallow.networks.default_block_bytes`: 16 MiB on the
        host, up to 1 GiB on a GPU.

    Notes
    -----
    Expanding the square, with K(w, v) = E_x[sigma(<w, x>) sigma(<v, x>)],

        R = 1/2 [gamma^2 a^T K(W, W) a - 2 gamma gamma^* a^T K(W, W^*) a^* + gamma^{*2} a^{*T} K(W^*, W^*) a^*],

    and K is the arc-cosine kernel of order 1 (relu) or 0 (step) of Cho and Saul (2009). For
    x ~ tau_d, write x = u / |u| with u ~ N(0, I_d) independent of |u|: the relu kernel is 2-homogeneous
    in x and E|u|^2 = d, so it is divided by d; the step kernel is 0-homogeneous and unchanged.
    The cost is O(m (m + m^*) d) time. The symmetric K(W, W) is computed in square tiles (I, J),
    I <= J, each used for the rows of I and of J, so that its elementwise passes (the arctangent
    first) are made about once per pair of particles; memory stays O((m + m^*) d + chunk_bytes)
    and m = 10^6 particles fit (slowly) on a CPU.

    The three terms cancel as the student nears the teacher: R carries an absolute error of a few eps
    times the energies (the teacher's, 1/2 gamma^{*2} a^{*T} K(W^*, W^*) a^*, and the student's). In
    float32 that is up to about 1e-7 of the teacher energy: at an exact optimum (each teacher neuron
    split into copies) up to 3e-9 instead of 0 (2e-8 to 1.4e-7 of energies 1e-3 to 7e-2), 1.3e-8 at a
    true R = 8.7e-10, and 0 (the clip at 0) at R = 8.7e-11, with gradients a few 1e-3 off there. Flows
    meant to reach smaller risks need float64.
    """

    _ORDERS = {"relu": 1, "step": 0}

    def __init__(self, teacher, input: str = "gaussian", *, chunk_bytes: int | None = None):
        _check_network(teacher, "teacher")
        self.chunk_bytes = _block_bytes(chunk_bytes, get_xp(teacher.W), "chunk_bytes")
        if input not in ("gaussian", "sphere"):
            raise ValueError(f"input must be 'gaussian' or 'sphere', got {input!r}")
        name = getattr(teacher.activation, "name", None)
        if name not in self._ORDERS:
            raise ValueError(f"PopulationRisk has closed forms for relu and step teachers, got {name!r}")
        if getattr(teacher, "bias", False):
            raise ValueError("PopulationRisk needs a teacher without bias (use EmpiricalRisk with biases)")
        self.teacher = teacher
        self.input = input
        self.order = self._ORDERS[name]
        self._scale = (1.0 / teacher.W.shape[1]) if (input == "sphere" and self.order == 1) else 1.0
        # a^*T K(W^*, W^*) a^* over tiles of rows of W^*: never the (m^*, m^*) matrix and its temporaries
        Ws, at = teacher.W, teacher.a * teacher.gamma
        xp, ms = get_xp(Ws), Ws.shape[0]
        ns = xp.linalg.norm(Ws, axis=1)
        rows, cols, work = _tiling(self.chunk_bytes, Ws, ms, ms, self.order)
        nonzero = bool(xp.all(ns > 0))
        energy = 0.0
        for i in range(0, ms, rows):
            I = slice(i, min(ms, i + rows))
            for j in range(0, ms, cols):
                J = slice(j, min(ms, j + cols))
                tile = _ArccosTile(Ws[I], Ws[J], ns[I], ns[J], self.order, work, nonzero, same=i == j)
                energy += float(at[I] @ (tile.kernel() @ at[J]))
        self._teacher_energy = 0.5 * self._scale * energy
        # what every call needs of the teacher, computed once as its energy is: a*, |w*|, 1 / |w*|, whether no w* is 0
        self._teacher_terms = (at, ns, 1 / ns if nonzero else 1 / xp.where(ns > 0, ns, 1), nonzero)

    @property
    def teacher_energy(self) -> float:
        """R(0) = 1/2 E_x[f^*(x)^2], the risk of the zero network.

        The scale against which a risk is small (relative risk R / R(0)); the third term of the expansion
        in the Notes."""
        return self._teacher_energy

    @property
    def d(self) -> int:
        """Input dimension of the teacher (columns of its W)."""
        return self.teacher.W.shape[1]

    def fingerprint(self) -> str:
        """What identifies this risk in a saved flow (:func:`gradient_flow` compares it on resume)."""
        t = self.teacher
        return (f"PopulationRisk {self.input} {t.activation.name} gamma={t.gamma!r} "
                f"{array_digest(t.a, t.W)}")

    def _check(self, net, a, W):
        if getattr(net, "bias", False):
            raise ValueError("PopulationRisk needs a student without bias (its last column would be read as "
                             "an input coordinate); use EmpiricalRisk with biases")
        if a.ndim != 1 or W.ndim != 2 or a.shape[0] != W.shape[0]:
            raise ValueError(f"a and W must have shapes (m,) and (m, d), got {tuple(a.shape)} and {tuple(W.shape)}")
        if getattr(net.activation, "name", None) != self.teacher.activation.name:
            raise ValueError(f"student activation {net.activation.name!r} differs from the teacher's "
                             f"{self.teacher.activation.name!r}")
        if W.shape[1] != self.d:
            raise ValueError(f"the network has inputs of dimension {W.shape[1]} but the teacher has d={self.d}")

    def __call__(self, net) -> float:
        """The risk of ``net``."""
        _check_network(net)
        return self.value_and_grad(net, need_grad=False)[0]

    def value_and_grad(self, net, a=None, W=None, need_grad=True):
        """Risk and its gradients with respect to a (m,) and W (m, d), at (a, W).

        ``a`` and ``W`` default to the network's; the network supplies gamma and sigma (the teacher's
        activation). With ``need_grad=False`` only the risk is computed, and both gradients are None.
        """
        _check_network(net)
        a = net.a if a is None else check_array(a, "a", finite=False)
        W = net.W if W is None else check_array(W, "W", finite=False)
        self._check(net, a, W)
        return self._value_and_grad(net, a, W, need_grad)

    def _value_and_grad(self, net, a, W, need_grad=True):
        """:meth:`value_and_grad` without its checks, for arrays that passed them (a flow's own particles, which
        keep the shapes and dtype of the ones checked at its first step)."""
        xp = get_xp(a, W)
        gamma, s = net.gamma, self._scale
        Ws = self.teacher.W
        at, ns, inv_s, nonzero_teacher = self._teacher_terms
        m = W.shape[0]
        nw = xp.linalg.norm(W, axis=1)
        # The student-student kernel is symmetric: square tiles (I, J) with I <= J, each serving
        # the rows of I against J and of J against I; about 10 temporaries of a tile's size live
        # The teacher's particles in blocks of cols: a (rows, m^*) tile and its temporaries would not be bounded
        rows, cols, work = _tiling(self.chunk_bytes, W, m, Ws.shape[0], self.order)  # work: per call, not shared
        blocks = [slice(start, min(m, start + rows)) for start in range(0, m, rows)]
        teacher_blocks = [slice(start, min(Ws.shape[0], start + cols)) for start in range(0, Ws.shape[0], cols)]
        ga = gamma * a
        # (zeros rather than zeros_like, which costs microseconds more at small m)
        student = xp.zeros(a.shape, dtype=a.dtype)  # (m,) sum_k a_k K(w_j, w_k)
        teacher = xp.zeros(a.shape, dtype=a.dtype)  # (m,) sum_l a*_l K(w_j, w*_l)
        field = xp.zeros(W.shape, dtype=W.dtype) if need_grad else None  # (m, d)
        # whether no particle is zero spares the tiles some masking; on a device finding out would wait for it,
        # and the masked formulas give the same numbers
        nonzero_w = not is_cupy(nw) and bool(xp.all(nw > 0))
        nonzero_s = nonzero_w and nonzero_teacher
        for bi, I in enumerate(blocks):
            for L in teacher_blocks:
                tile = _ArccosTile(W[I], Ws[L], nw[I], ns[L], self.order, work, nonzero_s, inv_v=inv_s[L])
                teacher[I] += tile.kernel() @ at[L]
                if need_grad:
                    field[I] -= tile.field(at[L])
            for J in blocks[bi:]:
                tile = _ArccosTile(W[I], W[J], nw[I], nw[J], self.order, work, nonzero_w, same=J is I)
                K = tile.kernel()
                student[I] += K @ a[J]
                if J is not I:
                    student[J] += K.T @ a[I]
                if need_grad:
                    # u_j = E_x[(f - f*)(x) sigma(<w_j, x>)]; the diagonal K(w_j, w_j) depends on w_j
                    # twice, which the symmetric double sum counts: d/dw_j = gamma a_j sum_k C_jk grad_1 K.
                    field[I] += tile.field(ga[J])
                    if J is not I:
                        field[J] += tile.field(ga[I], transpose=True)
        self_term, cross_term = to_numpy(xp.stack([a @ student, a @ teacher])).tolist()  # one read of the device
        grad_a = gamma * s * (gamma * student - teacher) if need_grad else None
        grad_W = (s * gamma) * a[:, None] * field if need_grad else None
        risk = 0.5 * s * gamma**2 * self_term - s * gamma * cross_term + self._teacher_energy
        return max(risk, 0.0), grad_a, grad_W


#: The library's own value_and_grad of each risk class, as defined here (before any user's or mock's replacement).
_OWN_VALUE_AND_GRAD = {EmpiricalRisk: EmpiricalRisk.value_and_grad, PopulationRisk: PopulationRisk.value_and_grad}


def _is_library_risk(loss) -> bool:
    """True for an EmpiricalRisk or PopulationRisk (not a subclass) whose ``value_and_grad`` is still the library's:
    not replaced on the instance (``loss.value_and_grad = wrapper``) nor on the class (``mock.patch.object``). A
    flow may then evaluate its particles unchecked after its first step, and knows that the risk draws no random
    numbers; any other risk is called through its ``value_and_grad`` at every evaluation."""
    own = _OWN_VALUE_AND_GRAD.get(type(loss))
    return own is not None and getattr(loss.value_and_grad, "__func__", None) is own


# ----------------------------------------------------------------------------- trajectories

@dataclasses.dataclass
class Trajectory:
    """What a flow records: times, risks, particle snapshots, and the state to resume from.

    Attributes
    ----------
    times, risks : numpy arrays of shape (records,)
    snapshots_a : numpy array of shape (records, k)
    snapshots_W : numpy array of shape (records, k, d)
        The first k particles (``snapshot_particles``) at each record; empty when not asked for.
    a, W : numpy arrays of shapes (m,) and (m, d)
        The final particles.
    step : int
        Steps taken in all (resumed runs continue the count).
    t : float
        Flow time reached.
    rng_state : dict
        The noise generator's state, so that a resumed noisy flow draws the same numbers.
    meta : dict
        Method, step size, noise, time scale, wall time.
    """

    times: np.ndarray
    risks: np.ndarray
    snapshots_a: np.ndarray
    snapshots_W: np.ndarray
    a: np.ndarray
    W: np.ndarray
    step: int
    t: float
    rng_state: dict
    meta: dict

    def save(self, path) -> Path:
        """Write to ``path`` (.npz) atomically: an interrupted save never leaves a broken file."""
        import json

        from .study import save_npz_atomic

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["rng_state"] = json.dumps(fields["rng_state"])
        fields["meta"] = json.dumps(fields["meta"])
        return save_npz_atomic(path, fields)

    @classmethod
    def load(cls, path) -> "Trajectory":
        """Read a trajectory written by :meth:`save` from ``path`` (.npz).

        ValueError for a file that is not a saved Trajectory: no .npz archive, a damaged one, or
        another archive (a study's result, a CNN checkpoint).
        """
        import json

        from .study import load_npz

        data = load_npz(path)  # ValueError for a file that is no .npz archive, or a damaged one
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"{str(path)!r} is not a saved Trajectory (no {', '.join(missing)}): another .npz "
                             "archive, such as a study's result or a CNN checkpoint")
        try:
            data["rng_state"] = json.loads(data["rng_state"])
            data["meta"] = json.loads(data["meta"])
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{str(path)!r} is not a saved Trajectory: its rng_state or meta entry is not "
                             f"JSON text ({err})") from None
        return cls(**{name: data[name] for name in names})

    def network(self, like):
        """A copy of the network ``like`` carrying this trajectory's final particles, on like's device."""
        _check_network(like, "like")
        xp = get_xp(like.a)
        if tuple(self.a.shape) != tuple(like.a.shape) or tuple(self.W.shape) != tuple(like.W.shape):
            # another width would keep like's gamma = 1/m for the trajectory's m' neurons
            raise ValueError(f"the trajectory holds particles of shapes {tuple(self.a.shape)}, {tuple(self.W.shape)} "
                             f"but like has {tuple(like.a.shape)}, {tuple(like.W.shape)}: like must be the network "
                             "that was trained")
        net = like.copy()
        net.a = xp.asarray(self.a, dtype=like.a.dtype)
        net.W = xp.asarray(self.W, dtype=like.W.dtype)
        return net


# ----------------------------------------------------------------------------- integrators

def _rk4_step(field, a, W, h):
    """One classical Runge-Kutta step of (a, W)' = -field(a, W); returns R(a, W) and the update."""
    r0, ga1, gW1 = field(a, W)
    _, ga2, gW2 = field(a - 0.5 * h * ga1, W - 0.5 * h * gW1)
    _, ga3, gW3 = field(a - 0.5 * h * ga2, W - 0.5 * h * gW2)
    _, ga4, gW4 = field(a - h * ga3, W - h * gW3)
    return (r0, a - h / 6 * (ga1 + 2 * ga2 + 2 * ga3 + ga4),
            W - h / 6 * (gW1 + 2 * gW2 + 2 * gW3 + gW4))


def _bogacki_shampine_step(field, a, W, h, k1):
    """Embedded Runge-Kutta 3(2) step (Bogacki and Shampine, 1989), first-same-as-last.

    ``k1`` = (risk, grad_a, grad_W) at (a, W). Returns the third-order update, the field there
    (the next k1), and the difference with the second-order companion (the error estimate).
    """
    _, ga1, gW1 = k1
    _, ga2, gW2 = field(a - 0.5 * h * ga1, W - 0.5 * h * gW1)
    _, ga3, gW3 = field(a - 0.75 * h * ga2, W - 0.75 * h * gW2)
    a3 = a - h * (2 * ga1 + 3 * ga2 + 4 * ga3) / 9
    W3 = W - h * (2 * gW1 + 3 * gW2 + 4 * gW3) / 9
    k4 = field(a3, W3)
    _, ga4, gW4 = k4
    # third-order weights (2/9, 1/3, 4/9, 0) minus second-order ones (7/24, 1/4, 1/3, 1/8)
    ea = h * (-5 / 72 * ga1 + 1 / 12 * ga2 + 1 / 9 * ga3 - 1 / 8 * ga4)
    eW = h * (-5 / 72 * gW1 + 1 / 12 * gW2 + 1 / 9 * gW3 - 1 / 8 * gW4)
    return a3, W3, k4, ea, eW


# ----------------------------------------------------------------------------- the flow

class _Recorder:
    """Times, risks and snapshots of a flow, plus the divergence guard."""

    def __init__(self, k, step_size, time_scale, divergence_factor, resume=None):
        self.k, self.step_size, self.divergence_factor = k, step_size, divergence_factor
        self.time_scale = time_scale
        if resume is None:
            self.steps, self.times, self.risks, self.snaps_a, self.snaps_W = [], [], [], [], []
            self.initial = None
        else:
            self.steps = list(resume.meta["record_steps"])
            self.times, self.risks = list(resume.times), list(resume.risks)
            self.snaps_a, self.snaps_W = list(resume.snapshots_a), list(resume.snapshots_W)
            self.initial = resume.meta["initial_risk"]

    def check(self, step, t, risk):
        if self.initial is None:
            self.initial = risk
        if not math.isfinite(risk) or risk > self.divergence_factor * max(self.initial, 1e-300):
            raise FlowDivergenceError(
                f"gradient flow diverged at step {step} (t={t:.4g}): risk {risk:.4g} from "
                f"{self.initial:.4g} initially; try a smaller step_size than {self.step_size} (a particle moves by "
                f"step_size * time_scale * its gradient, time_scale = {self.time_scale:.3g})")

    def add(self, step, t, risk, a, W):
        if self.steps and self.steps[-1] == step:
            return
        self.steps.append(step)
        self.times.append(t)
        self.risks.append(risk)
        if self.k:
            # copies, not views of the flow's arrays: a record stays the state at its step, whatever a
            # callback then writes into the arrays it is given (to_numpy copies device arrays already)
            self.snaps_a.append(np.array(to_numpy(a[: self.k]), copy=True))
            self.snaps_W.append(np.array(to_numpy(W[: self.k]), copy=True))

    def drop_unaligned_tail(self, record_every):
        """Forget a final record that an uninterrupted run would not have made."""
        if len(self.steps) > 1 and self.steps[-1] % record_every:
            for seq in (self.steps, self.times, self.risks):
                seq.pop()
            if self.k:
                self.snaps_a.pop()
                self.snaps_W.pop()

    def trajectory(self, a, W, step, t, rng, meta):
        d = W.shape[1]
        return Trajectory(
            times=np.asarray(self.times, dtype=float), risks=np.asarray(self.risks, dtype=float),
            snapshots_a=np.asarray(self.snaps_a) if self.snaps_a else np.zeros((0, self.k)),
            snapshots_W=np.asarray(self.snaps_W) if self.snaps_W else np.zeros((0, self.k, d)),
            a=to_numpy(a), W=to_numpy(W), step=int(step), t=float(t), rng_state=rng.bit_generator.state,
            meta={**meta, "initial_risk": self.initial, "record_steps": [int(s) for s in self.steps]})


def gradient_flow(net, loss, steps, step_size, *, method: str = "euler", noise: float = 0.0,
                  weight_decay: float = 0.0, record_every: int = 1, snapshot_particles: int = 0, time_scale=None,
                  train: str = "both", callback=None, rng=None, resume: Trajectory | None = None,
                  checkpoint=None, checkpoint_every: int = 0, tol: float = 1e-6,
                  divergence_factor: float = 1e8, progress: bool = False) -> Trajectory:
    r"""Run the particle gradient flow of ``loss`` from ``net`` (which is left unchanged).

    Parameters
    ----------
    net : TwoLayer
        The initial network (its gamma and activation stay fixed along the flow).
    loss : EmpiricalRisk or PopulationRisk
        Anything with ``value_and_grad(net, a, W, need_grad=True) -> (risk, grad_a, grad_W)``.
    steps : int
        Number of steps to take (for ``"adaptive"``: the flow runs for a time steps * step_size).
    step_size : float
        eta > 0, the time step of the flow.
    method : {"euler", "rk4", "adaptive"}
        Forward Euler (plain gradient descent), classical Runge-Kutta 4, or the adaptive
        Bogacki-Shampine 3(2) pair with tolerance ``tol`` (step_size is its first step). The
        adaptive pair assumes a smooth field. Under an EmpiricalRisk with relu or step the field
        jumps where some <w_j, x_i> = 0, and a particle held on such a kink (a sliding mode) forces
        steps of order tol instead of tol^(1/3): a 7-neuron relu net on 20 points took 64 steps to
        t = 1 at tol = 1e-4, 6061 at 1e-6, and barely moved at 1e-8. Use "euler" or "rk4" there,
        or a PopulationRisk, whose field is continuous; smooth activations (tanh, softplus) are
        unaffected. Where rejected steps shrink the step below the resolution of t (a field that is
        NaN or infinite near the particles), the run stops with :class:`FlowDivergenceError`
        instead of trying ever smaller steps. RK4 keeps its order h^4 only on a smooth field too:
        under an EmpiricalRisk with relu or step, whose field jumps on the kinks, its global error
        falls like h (fitted slope 0.87 for a 20-neuron relu net on 200 points at t = 2, h = 0.2 to
        0.025; 3.94 with tanh), and so does the drift of what the exact flow conserves (the
        a_j^2 - |w_j|^2 of a relu network).
    noise : float
        Temperature beta^{-1} >= 0 of the Langevin flow d theta = -s grad R dt + sqrt(2 noise) dB
        (s the time scale), by Euler-Maruyama (``method="euler"`` only).
    weight_decay : float
        lambda >= 0: the flow of R + (lambda / (2 m)) sum_j |theta_j|^2 = R + (lambda / 2) int |theta|^2
        d mu_m, the confinement of Mei, Montanari and Nguyen (2018): each trained particle feels the
        extra field -(s / m) lambda theta_j (-lambda theta_j at the mean-field time scale s = m). The
        recorded risks are R alone. With noise > 0 the Langevin flow then has a stationary measure;
        where R exerts no force it is Gaussian, of variance noise m / (s lambda) per coordinate (the
        Euler-Maruyama chain's, noise m / (s lambda (1 - eta s lambda / (2 m)))). Without it the noise
        spreads the particles for ever (E |theta|^2 grows like t).
    record_every : int
        Record time and risk every so many steps, and at the last step.
    snapshot_particles : int
        Keep the first k particles at each record (0: none; -1: all of them).
    time_scale : float, optional
        The factor s multiplying the gradient on a particle; default m (the mean-field time scale).
    train : {"both", "outer", "inner"}
        Which layer moves.
    callback : callable, optional
        ``callback(step, t, risk, a, W)`` at each record, the last one included; returning True stops
        the flow (after the step in progress). ``a`` and ``W`` are the flow's own arrays, to be read:
        what a callback writes into them does not reach the Euler and RK4 flows (their next step is
        already computed) nor the records, but does reach the adaptive flow and the final particles of
        the Trajectory; there is no projection hook.
    rng : None, int or Generator
        Noise source (drawn on the host, moved to the device): m + m D normals per step with
        noise > 0 (those of the layers that move), none without noise. With ``resume``, a
        Generator passed in is set to the saved state, so that the draws continue those of the
        interrupted run.
    resume : Trajectory, optional
        A saved flow to continue for ``steps`` more steps: the same numbers as an uninterrupted run.
        Its method, step_size (except for ``"adaptive"``, which keeps its own step), noise,
        weight_decay (0 for a flow saved before the setting existed), time_scale and train must be the
        ones given, and so must net's gamma, activation, dtype and the
        risk (the data of an EmpiricalRisk, the teacher and input law of a PopulationRisk; a risk
        of another class without a ``fingerprint()`` is compared by its class name): ValueError
        otherwise. record_every may change. The adaptive method runs for a time, not a number of
        steps: a flow saved before its end (Ctrl-C, a checkpoint, a callback's stop) finishes with
        the numbers of the uninterrupted run (its last step to within an ulp of its length) as
        ``gradient_flow(net, loss, 1, saved.meta["t_end"] - saved.t, method="adaptive", resume=saved)``
        (one "step" of the remaining time; trajectories saved before meta held ``t_end``: the t_end
        of the original call; a flow saved at its end has no time left, which step_size refuses:
        test ``saved.t < saved.meta["t_end"]`` first). A flow that reached its end continues as a flow within
        ``tol`` of the longer run, not with its numbers: the shorter run cut its last step at its end.
    checkpoint : path, optional
        Where to save the trajectory every ``checkpoint_every`` steps, at the end, and on Ctrl-C.
    checkpoint_every : int, default 0
        Save to ``checkpoint`` after every so many steps (counted from step 0, resumed runs
        included; for ``"adaptive"``, accepted steps), besides the end and Ctrl-C; 0 (the
        default) saves only at the end and on Ctrl-C. Used only with ``checkpoint``.
    tol : float
        Tolerance of the adaptive method, mixed absolute and relative: a step of the 3(2) pair is
        accepted when the Euclidean norm of its error estimate (the third- minus the second-order
        update, over all of a and W) is at most tol (1 + |theta|), |theta| the Euclidean norm of all
        of a and W before the step. The next step is h * clip(0.9 err^(-1/3), 0.2, 4), err that
        norm over tol (1 + |theta|).
    divergence_factor : float
        Stop with :class:`FlowDivergenceError` once the risk exceeds this times its initial value.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    Trajectory
        Its ``meta["t_end"]`` is the flow time the run was to reach (reached unless it was stopped).

    Notes
    -----
    Each particle moves by -step_size * s * grad_{theta_j} R per step. With gamma = 1/m and s = m the
    field is O(1) per particle and t = steps * step_size is the time of the Wasserstein gradient flow,
    the same for every width m (Chizat and Bach 2018, Sec. 2.2).

    Examples
    --------
    >>> from shallow.networks import TwoLayer
    >>> teacher = TwoLayer.init(3, 5, rng=0)
    >>> student = TwoLayer.init(20, 5, rng=1)
    >>> traj = gradient_flow(student, PopulationRisk(teacher), steps=50, step_size=0.05)
    >>> bool(traj.risks[-1] < traj.risks[0])
    True
    """
    _check_network(net)
    if not callable(getattr(loss, "value_and_grad", None)):
        raise TypeError("loss must have a value_and_grad(net, a, W, need_grad) method (an EmpiricalRisk or "
                        f"PopulationRisk), got {type(loss).__name__}")
    steps = check_integer(steps, "steps", minimum=0)
    step_size = check_positive(step_size, "step_size")
    if method not in ("euler", "rk4", "adaptive"):
        raise ValueError(f"method must be 'euler', 'rk4' or 'adaptive', got {method!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite temperature >= 0, got {noise!r}")
    noise = float(noise)
    weight_decay = check_nonnegative(weight_decay, "weight_decay")
    snapshot_particles = check_integer(snapshot_particles, "snapshot_particles", minimum=-1)
    checkpoint_every = check_integer(checkpoint_every, "checkpoint_every", minimum=0)
    tol = check_positive(tol, "tol")
    if isinstance(divergence_factor, bool) or not isinstance(divergence_factor, numbers.Real) \
            or math.isnan(divergence_factor) or divergence_factor < 1:
        raise ValueError(f"divergence_factor must be a number >= 1 (inf never stops), got {divergence_factor!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if resume is not None and not isinstance(resume, Trajectory):
        raise TypeError(f"resume must be a Trajectory (see Trajectory.load) or None, got {type(resume).__name__}")
    if noise > 0 and method != "euler":
        raise ValueError("noise > 0 (Langevin) is integrated by Euler-Maruyama: use method='euler'")
    if train not in ("both", "outer", "inner"):
        raise ValueError(f"train must be 'both', 'outer' or 'inner', got {train!r}")
    record_every = check_integer(record_every, "record_every", minimum=1)
    xp = get_xp(net.a, net.W)
    m = net.W.shape[0]
    s = float(m) if time_scale is None else check_positive(time_scale, "time_scale")
    rng = check_random_state(rng)
    k = m if snapshot_particles < 0 else min(int(snapshot_particles), m)
    move_a = s if train in ("both", "outer") else 0.0
    move_W = s if train in ("both", "inner") else 0.0
    decay_a, decay_W = move_a * weight_decay / m, move_W * weight_decay / m  # (s / m) lambda, 0 when frozen
    meta = dict(method=method, step_size=step_size, noise=noise, weight_decay=weight_decay, time_scale=s,
                train=train, m=m,
                record_every=record_every, gamma=float(net.gamma), dtype=str(net.W.dtype),
                activation=getattr(net.activation, "name", type(net.activation).__name__),
                loss=loss.fingerprint() if hasattr(loss, "fingerprint") else type(loss).__name__)

    # The first evaluation goes through the risk's value_and_grad, which checks net, a and W; the flow's own
    # particles keep their shapes and dtype, so that the library's risks evaluate them unchecked afterwards.
    checked = False
    library_risk = _is_library_risk(loss)

    def evaluate(a_, W_, need_grad=True):
        nonlocal checked
        if checked:
            return loss._value_and_grad(net, a_, W_, need_grad)
        checked = library_risk  # a subclass, or a value_and_grad replaced by the user, is called at every step
        return loss.value_and_grad(net, a_, W_, need_grad=need_grad)

    def field(a_, W_):
        risk, ga, gW = evaluate(a_, W_)
        if weight_decay:
            return risk, ga * move_a + decay_a * a_, gW * move_W + decay_W * W_
        return risk, ga * move_a, gW * move_W

    if resume is not None:
        _check_resume_settings(resume.meta, meta)
    rec = _Recorder(k, step_size, s, divergence_factor, resume)
    if resume is not None:
        a = xp.asarray(resume.a, dtype=net.a.dtype)
        W = xp.asarray(resume.W, dtype=net.W.dtype)
        if a.shape != net.a.shape or W.shape != net.W.shape:
            raise ValueError(f"resume holds particles of shapes {a.shape}, {W.shape} "
                             f"but net has {tuple(net.a.shape)}, {tuple(net.W.shape)}")
        rng.bit_generator.state = resume.rng_state
        step, t = int(resume.step), float(resume.t)
        h = float(resume.meta.get("h", step_size))
        rec.drop_unaligned_tail(record_every)
    else:
        a, W = net.a.copy(), net.W.copy()
        step, t, h = 0, 0.0, float(step_size)
    last = step + steps
    t_end = t + steps * step_size
    meta["t_end"] = t_end
    # Times as step * step_size whenever the saved time is on that grid (resumed runs included).
    step0, t0 = (0, 0.0) if t == step * step_size else (step, t)
    # the last completed step, for Ctrl-C and checkpoints: step, t, a, W, the generator's state, and the
    # step size to try next (the adaptive method's; step_size for the others)
    # Without noise, callback or a risk of the user's (which may share the generator) nothing draws from rng during
    # the flow: its state (a dict built at each read) is read once
    rng_moves = noise > 0 or callback is not None or not library_risk
    rng_state0 = rng.bit_generator.state

    def rng_state():
        return rng.bit_generator.state if rng_moves else rng_state0

    state = (step, t, a, W, rng_state0, h)

    def save(st):
        rec.trajectory(st[2], st[3], st[0], st[1], _state_rng(st[4]), {**meta, "h": st[5]}).save(checkpoint)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        # the adaptive method counts flow time, the others steps
        total = round(t_end - t, 12) if method == "adaptive" else steps
        bar = tqdm(total=total, desc=f"flow ({method})", unit="t" if method == "adaptive" else "step",
                   leave=False)
    started = time.perf_counter()
    try:
        if method == "adaptive":
            k1 = field(a, W)
            rec.check(step, t, k1[0])
            # the first record and its callback, as the fixed-step methods make them: at step 0, or at a resumed
            # step on the record grid (a resumed step off it is no record of the uninterrupted run)
            stop = False
            if resume is None or step % record_every == 0:
                rec.add(step, t, k1[0], a, W)
                stop = callback is not None and bool(callback(step, t, k1[0], a, W))
            while not stop and t < t_end * (1 - 1e-12):
                h = min(h, t_end - t)
                a_new, W_new, k_new, ea, eW = _bogacki_shampine_step(field, a, W, h, k1)
                squares = xp.stack([(a * a).sum() + (W * W).sum(), (ea * ea).sum() + (eW * eW).sum()])
                squares, errors = to_numpy(squares).tolist()  # one read of the device
                size = 1 + math.sqrt(squares)
                err = math.sqrt(errors) / (tol * size)
                taken = h
                # the next step size, before anything that may stop the run: a flow saved or stopped
                # here resumes with the step the uninterrupted run takes next
                h *= min(4.0, max(0.2, 0.9 * max(err, 1e-12) ** (-1 / 3)))  # a NaN err shrinks h by 5
                if not err <= 1 and h <= 64 * _EPS64 * max(abs(t), abs(t_end)):
                    # rejected steps shrank h below what t can resolve: no step can be accepted any more
                    raise FlowDivergenceError(
                        f"the adaptive step size fell to {h:.3g} at t={t:.6g} (step {step}) with the error "
                        f"estimate still {err:.3g} times tol: the field is not finite or not continuous near the "
                        f"particles; use method='euler' or 'rk4', or a larger tol than {tol:g}")
                if err <= 1:
                    a, W, k1, t, step = a_new, W_new, k_new, t + taken, step + 1
                    rec.check(step, t, k1[0])
                    state = (step, t, a, W, rng_state(), h)
                    if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                        save(state)
                    if bar is not None:
                        bar.update(taken)
                        bar.set_postfix(risk=f"{k1[0]:.3g}")
                    if step % record_every == 0:
                        rec.add(step, t, k1[0], a, W)
                        if callback is not None and callback(step, t, k1[0], a, W):
                            break
            else:  # ran to t_end: the last record, and its callback, unless it was a regular one
                if step % record_every:
                    rec.add(step, t, k1[0], a, W)
                    if callback is not None:
                        callback(step, t, k1[0], a, W)
        else:
            pending = step if (resume is None or step % record_every == 0) else None
            stop = False
            while step < last and not stop:
                if method == "euler":
                    risk, ga, gW = field(a, W)
                    a, W = a - step_size * ga, W - step_size * gW
                    if noise > 0:
                        std = math.sqrt(2 * noise * step_size)
                        if move_a:
                            a = a + std * xp.asarray(rng.standard_normal(a.shape), dtype=a.dtype)
                        if move_W:
                            W = W + std * xp.asarray(rng.standard_normal(W.shape), dtype=W.dtype)
                else:
                    risk, a, W = _rk4_step(field, a, W, step_size)
                # risk is R at the previous step's particles: record it now if that step was due.
                rec.check(step, t, risk)
                if pending is not None:
                    rec.add(step, t, risk, *state[2:4])
                    if callback is not None and callback(step, t, risk, *state[2:4]):
                        stop = True
                step += 1
                t = t0 + (step - step0) * step_size
                state = (step, t, a, W, rng_state(), h)
                pending = step if step % record_every == 0 else None
                if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                    save(state)
                if bar is not None:
                    bar.update(1)
            risk = evaluate(a, W, need_grad=False)[0]
            rec.check(step, t, risk)
            rec.add(step, t, risk, a, W)
            if callback is not None and not stop:
                callback(step, t, risk, a, W)  # the last record too
    except KeyboardInterrupt:
        if checkpoint is not None:
            save(state)
        raise
    finally:
        if bar is not None:
            bar.close()
    meta["wall_time"] = time.perf_counter() - started
    traj = rec.trajectory(a, W, step, t, rng, {**meta, "h": h})
    if checkpoint is not None:
        traj.save(checkpoint)
    return traj


# Settings that define the flow being continued (record_every may change: it only thins the records;
# loss is the risk's fingerprint: its data, or its teacher; dtype, since a float64 flow continued in
# float32 is another flow).
_RESUME_SETTINGS = ("method", "step_size", "noise", "weight_decay", "time_scale", "train", "gamma", "activation",
                    "dtype", "loss")
# what a flow saved before a setting existed ran with
_RESUME_DEFAULTS = {"weight_decay": 0.0}


def _check_resume_settings(saved: dict, meta: dict) -> None:
    """Refuse to continue a saved flow with other settings: the trajectory would mix two flows."""
    names = [n for n in _RESUME_SETTINGS if not (n == "step_size" and meta["method"] == "adaptive")]
    saved = {**_RESUME_DEFAULTS, **saved}
    differ = [("loss: another risk (its data or its teacher differ)" if n == "loss" else
               f"{n}={meta[n]!r} (saved: {saved[n]!r})") for n in names if n in saved and saved[n] != meta[n]]
    if differ:
        raise ValueError(f"resume holds a flow run with other settings: {', '.join(differ)}; resume it with the "
                         "saved ones (a resumed flow gives the numbers of an uninterrupted run), or start a new flow "
                         "from resume.network(net)")


def _state_rng(state):
    """A Generator carrying a saved bit-generator state (for checkpoints taken mid-flow)."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
