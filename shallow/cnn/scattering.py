r"""The 2-D scattering transform of order 0, 1 and 2: wavelets, modulus and averaging, with its derivatives.

With the Morlet filter bank of :mod:`shallow.cnn.wavelets` (J scales, L orientations, low-pass phi_J),
the scattering coefficients of an image x are (Mallat 2012; Bruna and Mallat 2013)

    S_0 x = x * phi_J,
    S_1 x[lambda_1] = |x * psi_{lambda_1}| * phi_J,
    S_2 x[lambda_1, lambda_2] = ||x * psi_{lambda_1}| * psi_{lambda_2}| * phi_J,   j_2 > j_1,

lambda = (j, l), each sampled every 2^J pixels. This is a CNN with fixed filters (the seed
lecture's "scattering as a CNN"): convolutions by wavelets, the modulus as the nonlinearity,
average pooling by phi_J; the coefficients are invariant to translations up to an error of order
|c| / 2^J for a shift by c, and Lipschitz-stable to deformations (Mallat 2012, Theorem 2.12).
There are K = 1 + J L + L^2 J (J - 1) / 2 coefficients per pixel of the output at order 2.

The computation (Kymatio's, Andreux et al. 2020)
------------------------------------------------
All convolutions are products in the Fourier domain and every modulus is taken at the coarsest
resolution its frequencies allow:

* X = DFT(pad(x)) on the (padded) M' x N' grid;
* U_1 = |IDFT(P_{2^{j_1}}(X psi_{lambda_1}))|, the convolution subsampled by 2^{j_1};
* U_2 = |IDFT(P_{2^{j_2 - j_1}}(DFT(U_1) psi_{lambda_2}^{(j_1)}))|, at resolution 2^{-j_2};
* S = unpad(Re IDFT(P_{2^{J - j}}(DFT(U) phi_J^{(j)}))) for U at resolution 2^{-j}.

P_k is subsampling by k written in the Fourier domain, P_k(Y)[a, b] = k^{-2} sum_{p, q < k}
Y[a + p M / k, b + q N / k] (the DFT of y[k u]: exact). A filter used at resolution 2^{-r} is its
full-resolution Fourier transform restricted to the frequencies |k_1| < M' / 2^{r + 1}, |k_2| < N' / 2^{r + 1}
(plus the negative Nyquist frequency): a crop, as in Kymatio, not a periodisation.

The subsampling before a modulus is exact (the modulus is pointwise), but U_1 at resolution
2^{-j_1} has lost the frequencies of |x * psi_{lambda_1}| above its grid's Nyquist frequency, and the
next convolutions see them aliased. So the transform approximates the formulas above: exactly at
order 0 and for J = 1; for J = 2 and 3, against the formulas computed at full resolution on
white-noise images (the most high-frequency energy; ``padding="periodic"``, L = 8, 32x32 and 64x64,
440 draws of 4 images each), within 1% in norm, with coefficients of order 1 within 5% and of
order 2 within 8% of the largest coefficient of their order (the worst measured: 0.7%, 4.4% and 5.8%).
This is Kymatio's trade: every convolution at the coarsest grid, about 4^{j} times fewer operations
at scale j.

Boundaries (``padding``)
------------------------
* ``"reflect"`` (default, Kymatio's): the image is padded by 2^J pixels on each side by mirror
  reflection without repeating the edge (``numpy.pad(mode="reflect")``); the filters live on the
  padded grid (M + 2^{J + 1}) x (N + 2^{J + 1}), and one coarse pixel is cut from each side of the
  output. The coefficients match Kymatio 0.3.0's ``Scattering2D(J, shape, L, frontend="numpy")``
  after the normalisation below. This transform is not non-expansive: the padding copies the pixels
  within 2^J of an edge up to 4 times (at the corners), and the output pixels next to the edges see
  the copies. With the weight 2^J of the coefficients, 2^J ||S x - S y|| reaches 1.14, 1.33 and 1.45
  times ||x - y|| at J = 1, 2, 3 (L = 8, 16 x 16 to 64 x 64; local constants found by power iteration
  on the Jacobian at random images, with x - y concentrated in the corners), against 1.01 with
  ``"periodic"`` (the aliases of phi_J below). A certified constant: :meth:`Scattering2D.lipschitz_bound`.
* ``"periodic"``: no padding; every convolution is circular on the M x N grid. The transform then
  commutes exactly with circular shifts by multiples of 2^J, and the Littlewood-Paley bounds of
  :func:`shallow.cnn.wavelets.littlewood_paley` apply on the grid to the coefficients before their
  subsampling (Mallat's non-expansiveness, ||S x - S y|| <= a^{3/2} ||x - y|| at order 2 with
  a = max(1, max A)). Sampled every 2^J pixels and weighted by 4^J, the coefficients only
  approximate that energy (phi_J aliases on the coarse grid): 4^J ||S x||^2 exceeds a^3 ||x||^2 for
  some images (1.04 ||x||^2 at J = 1, found by gradient ascent, where a^3 = 1.0001).

Image sides must be multiples of 2^J (and at least 2^J): then the output is exactly
(M / 2^J, N / 2^J) in both modes. Non-square images are supported.

Normalisation (the one convention that differs from Kymatio 0.3.0)
-------------------------------------------------------------------
Kymatio normalises its Gaussian envelopes by 2 * 3.1415 * sigma^2 / s instead of 2 pi sigma^2 / s,
so each of its filters is pi / 3.1415 = 1 + 2.95e-5 times ours: its coefficients of order m are
ours times (pi / 3.1415)^{m + 1} (the scattering is positively homogeneous in each filter). Ours
have phi_hat(0) = 1 up to its aliases, (sum_{n in Z} exp(-2 pi^2 n^2 sigma_phi^2))^2 - 1: 1.3e-5 at J = 1
(sigma_phi = 0.8), below 1e-21 from J = 2. S_0 of a constant image is that constant (times 1 + 1.3e-5
at J = 1).

Derivatives
-----------
:meth:`Scattering2D.vjp` and :meth:`Scattering2D.jvp` differentiate S through the modulus,
d|z| = Re(conj(z) dz) / |z|, whose derivative at z = 0 is taken as 0 (a subgradient; S is
Lipschitz, not differentiable there). :class:`ScatteringLayer` wraps the transform as a
parameter-free :class:`~shallow.cnn.layers.Layer` on channels-last batches (forward, backward
and jvp), so that it can feed the layers of :mod:`shallow.cnn`, be trained through by
:func:`~shallow.cnn.train.fit` (a scattering + linear network) and be attacked.

References
----------
1. S. Mallat, "Group invariant scattering", Comm. Pure Appl. Math. 65, 2012, arXiv:1101.2286,
   Sec. 2-3 (definition, non-expansiveness Prop. 2.5, energy conservation Theorem 2.6,
   deformation stability Theorem 2.12).
2. J. Bruna and S. Mallat, "Invariant scattering convolution networks", IEEE PAMI 35, 2013,
   arXiv:1203.1513, Sec. III (the 2-D transform, subsampling by 2^j, orders m <= 2 hold most
   of the energy; a scattering + linear/Gaussian-SVM classifier of digits).
3. M. Andreux et al., "Kymatio: scattering transforms in Python", JMLR 21, 2020, arXiv:1812.11214
   (the reference implementation: filters, Fourier-domain subsampling, padding, output order).
4. E. Oyallon and S. Mallat, "Deep roto-translation scattering for object classification",
   CVPR 2015, arXiv:1412.8659 (scattering as a CNN with fixed filters, then a linear classifier).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_array, check_integer, check_positive
from ..backend import get_xp, to_device
from .layers import Layer, _missing_cache, caching, check_batch
from .models import check_images
from .ridge import RidgeClassifier
from .wavelets import FilterBank, _image_exponents, _reflect, check_grid_shape, filter_bank

__all__ = ["Scattering2D", "ScatteringClassifier", "ScatteringLayer", "check_scattering_shape", "n_coefficients"]

PADDINGS = ("reflect", "periodic")


def n_coefficients(J: int, L: int, max_order: int = 2) -> int:
    """K = 1 + J L (order 1) + L^2 J (J - 1) / 2 (order 2): the scattering coefficients per output pixel.

    Parameters
    ----------
    J : int
        Number of scales, J >= 1.
    L : int
        Number of orientations, L >= 1.
    max_order : int
        Highest order kept, 0, 1 or 2 (default): the sum stops at that order's term.

    Returns
    -------
    int
        K: 1 at order 0, 1 + J L at order 1, 1 + J L + L^2 J (J - 1) / 2 at order 2.

    Raises
    ------
    ValueError
        For J or L not an integer >= 1, or max_order not in {0, 1, 2}.

    Examples
    --------
    >>> n_coefficients(3, 8)
    217
    """
    J = check_integer(J, "J", minimum=1)
    L = check_integer(L, "L", minimum=1)
    max_order = check_integer(max_order, "max_order", minimum=0, maximum=2)
    return 1 + (J * L if max_order >= 1 else 0) + (L * L * J * (J - 1) // 2 if max_order >= 2 else 0)


def check_scattering_shape(shape, J: int) -> tuple[int, int]:
    """``shape`` (M, N) checked for a scattering at scale 2^J: both sides multiples of 2^J, at least 2^J.

    Parameters
    ----------
    shape : tuple or list of two ints
        Image sides M, N (see :func:`~shallow.cnn.wavelets.check_grid_shape`).
    J : int
        Number of scales, an integer >= 1.

    Returns
    -------
    tuple of two Python ints
        (M, N).

    Raises
    ------
    ValueError
        Naming ``shape`` and J, when a side is smaller than 2^J or not a multiple of it; for a
        shape that is not a pair of integers >= 1, or J not an integer >= 1.
    """
    shape = check_grid_shape(shape, "shape")
    J = check_integer(J, "J", minimum=1)
    step = 2**J
    for side in shape:
        if side < step:
            raise ValueError(f"shape {shape} is too small for J={J}: each side must be at least 2^J = {step} "
                             "(the low-pass phi_J averages over 2^J pixels); lower J or upsample the images")
        if side % step:
            raise ValueError(f"shape {shape} does not suit J={J}: each side must be a multiple of 2^J = {step} "
                             "(the output is subsampled by 2^J); crop or pad the images")
    return shape


def _crop(F, r):
    """The Fourier transform F (..., M, N) restricted to the frequencies of the grid subsampled by 2^r."""
    if r == 0:
        return F
    M, N = F.shape[-2:]
    m, n = M >> r, N >> r
    rows = np.concatenate([np.arange(m // 2), np.arange(M - m // 2, M)])
    cols = np.concatenate([np.arange(n // 2), np.arange(N - n // 2, N)])
    return F[..., rows[:, None], cols[None, :]]


def _sub(Y, k):
    """P_k: subsampling by k of IDFT(Y), in the Fourier domain (mean over the k x k aliases)."""
    if k == 1:
        return Y
    M, N = Y.shape[-2:]
    m, n = M // k, N // k
    rows = Y[..., :m, :].copy()  # sums of contiguous blocks: faster than a strided mean
    for p in range(1, k):
        rows += Y[..., p * m:(p + 1) * m, :]
    out = rows[..., :n].copy()
    for q in range(1, k):
        out += rows[..., q * n:(q + 1) * n]
    out /= k * k
    return out


def _fold(F, k):
    """F (L, m, n) -> (m / k, n / k, k^2, L) / k^2: the k x k aliases of each coarse frequency as rows."""
    L, m, n = F.shape
    return F.reshape(L, k, m // k, k, n // k).transpose(2, 4, 1, 3, 0).reshape(m // k, n // k, k * k, L) / (k * k)


def _sub_adjoint(G, k):
    """P_k^T: each frequency spread over its k x k aliases, divided by k^2."""
    if k == 1:
        return G
    reps = (1,) * (G.ndim - 2) + (k, k)
    return get_xp(G).tile(G, reps) / (k * k)


def _alias_gram(F, k, K):
    """sum_l (1 / k^2) h_l h_l^T on each alias class of the subsampling by K, for filters F (n_l, M, N).

    Row p = (p_1, p_2) of the class of the coarse frequency a is the frequency a + (p_1 M, p_2 N) / K; the
    subsampling by k (k divides K) adds the aliases p = q mod K / k together. Returns (M / K, N / K, K^2, K^2):
    the Gram matrix of IDFT(P_k(h_l DFT(.))) (summed over l) restricted to each class (module notes of
    :meth:`Scattering2D.lipschitz_bound`).
    """
    n_l, M, N = F.shape
    m, n = M // K, N // K
    H = F.reshape(n_l, K, m, K, n).transpose(0, 2, 4, 1, 3).reshape(n_l, m, n, K * K)
    q = np.arange(K) % (K // k)
    same = q[:, None] == q[None, :]  # (K, K): rows of one alias class of P_k
    mask = (same[:, None, :, None] & same[None, :, None, :]).reshape(K * K, K * K)
    return np.einsum("lmnp,lmnq->mnpq", H, H) * mask / (k * k)


def _reflect_index(M, p):
    """Source rows of numpy.pad(mode="reflect") by p on both sides of M rows (mirror without the edge)."""
    i = np.arange(-p, M + p)
    if M == 1:
        return np.zeros_like(i)
    period = 2 * (M - 1)
    i = np.mod(i, period)
    return np.where(i >= M, period - i, i)


class Scattering2D:
    r"""The 2-D scattering transform S_J of order <= 2 (Kymatio's conventions; module notes).

    Layout: calling it (and :meth:`jvp`, :meth:`vjp`) takes images of shape (..., H, W) = (..., M, N),
    with no channel axis, and returns coefficients of shape (..., K, H / 2^J, W / 2^J) (Kymatio's
    layout, coefficient axis before the spatial ones). The rest of :mod:`shallow.cnn` uses
    channels-last batches (N, H, W, C): for those use :class:`ScatteringLayer`, the channels-last
    wrapper (N, H, W, C) -> (N, H / 2^J, W / 2^J, C K), or :meth:`features`, its forward pass.

    Parameters
    ----------
    J : int >= 1
        Scale: coefficients average over about 2^J pixels and are sampled every 2^J pixels.
    shape : (M, N)
        Image size; both sides multiples of 2^J (and >= 2^J).
    L : int >= 1
        Orientations on the half circle.
    max_order : {0, 1, 2}
    padding : {"reflect", "periodic"}
        Boundary handling (module notes).

    Attributes
    ----------
    n_coefficients : int
        K = 1 + J L + L^2 J (J - 1) / 2 at order 2.
    output_shape : (M / 2^J, N / 2^J)
    bank : FilterBank
        The filters on the padded grid.
    paths : list of tuples
        (j, l) indices of each coefficient in output order: (), (j1, l1), or (j1, l1, j2, l2).

    Notes
    -----
    The filters are precomputed in float64 on the host; they are moved to the device and dtype of
    the input at its first call (or with :meth:`to`). float32 images give float32 coefficients;
    float16 images are computed in float32 (as numpy's FFTs do), and give float32 coefficients.
    Each image is scattered scaled by a power of 2 (exact), so that S(c x) = c S(x) holds wherever
    c x and c S(x) are floats.

    The coefficients are not weighted by their sampling step: each stands for 2^J x 2^J pixels, so
    ||S x|| is compared with ||x|| (Mallat's non-expansiveness and energy, module notes) as
    2^J ||S x||, i.e. 4^J ||S x||^2 = 4^J sum of the squared coefficients. The same factor 2^J
    multiplies the Lipschitz constant of :class:`ScatteringLayer` (about 2^{-J} in ``"periodic"``).

    Examples
    --------
    >>> S = Scattering2D(2, (16, 16), L=4)
    >>> S.n_coefficients
    25
    >>> S(np.zeros((3, 16, 16))).shape
    (3, 25, 4, 4)
    """

    def __init__(self, J, shape, L=8, max_order=2, *, padding="reflect"):
        self.J = check_integer(J, "J", minimum=1)
        self.shape = check_scattering_shape(shape, self.J)
        self.L = check_integer(L, "L", minimum=1)
        self.max_order = check_integer(max_order, "max_order", minimum=0, maximum=2)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        M, N = self.shape
        self.pad = 2**self.J if padding == "reflect" else 0
        self.padded_shape = (M + 2 * self.pad, N + 2 * self.pad)
        self.output_shape = (M >> self.J, N >> self.J)
        self.n_coefficients = n_coefficients(self.J, self.L, self.max_order)
        self.bank: FilterBank = filter_bank(self.padded_shape, self.J, self.L)
        J_ = self.J
        # phi at resolutions 2^-r, r < J; psi_j at resolutions 2^-r, r <= j (levels r < j serve order 2)
        self._phi = [_crop(self.bank.phi, r) for r in range(J_)]
        self._psi = [[_crop(self.bank.psi[j], r) for r in range(j + 1)] for j in range(J_)]
        self._rows = _reflect_index(M, self.pad)
        self._cols = _reflect_index(N, self.pad)
        self._device_filters = {}
        paths = [()]
        if self.max_order >= 1:
            paths += [(j, l) for j in range(J_) for l in range(self.L)]
        if self.max_order >= 2:
            paths += [(j1, l1, j2, l2) for j1 in range(J_) for l1 in range(self.L)
                      for j2 in range(j1 + 1, J_) for l2 in range(self.L)]
        self.paths = paths

    def __repr__(self):
        return (f"Scattering2D(J={self.J}, shape={self.shape}, L={self.L}, max_order={self.max_order}, "
                f"padding={self.padding!r})")

    # ------------------------------------------------------------------ filters on the device
    def _filters(self, xp, dtype):
        key = (xp.__name__, np.dtype(dtype).str)
        if key not in self._device_filters:
            cast = lambda F: xp.asarray(F.astype(dtype))
            # psi_j^{(r)} as (m', n', k^2, L) / k^2 for the alias-summing products of _band (None at k = 1)
            folded = [[None if r == j else cast(_fold(F, 2 ** (j - r))) for r, F in enumerate(level)]
                      for j, level in enumerate(self._psi)]
            self._device_filters[key] = ([cast(F) for F in self._phi], [[cast(F) for F in level] for level in self._psi],
                                         folded)
        return self._device_filters[key]

    def to(self, device: str):
        """Move the filters (float32 and float64) to ``device`` ("cpu" or "gpu") now; returns self."""
        xp = get_xp(to_device(np.zeros(1), device))
        for dtype in (np.float32, np.float64):
            self._filters(xp, dtype)
        return self

    def lipschitz_bound(self) -> float:
        r"""A certified Lipschitz constant of x -> S x in the Euclidean norms, the coefficients unweighted.

        Returns
        -------
        float
            Lip with ||S x - S y|| <= Lip ||x - y|| for all real images x, y of this shape (the
            norm of all K h w coefficients; of all the channels of :class:`ScatteringLayer`, which
            scatters each channel alone). About 2^{-J}: 1.00 to 1.08 times 2^{-J} with ``"periodic"``,
            2.00 to 2.15 times with ``"reflect"`` (L = 8, J <= 4, sides at least 3 2^J).

        Notes
        -----
        The computation (module notes) is a tree. A node holds a real signal u_p on a grid at
        resolution 2^{-r} (the root: u = pad(x), r = 0); it outputs its coefficients
        S_p = C Re IDFT(P_{2^{J - r}}(DFT(u_p) phi^{(r)})) (C the crop ``unpad``) and feeds its
        children u_{p, lambda} = |B_lambda u_p|, B_lambda u = IDFT(P_{2^{j - r}}(DFT(u) psi_lambda^{(r)})),
        over the paths the code computes (lambda = (j_1, l) at the root, j_2 > j_1 at order 1).

        1. The modulus and Re are 1-Lipschitz pointwise and C has norm 1, so
           ||u_{p, lambda}(x) - u_{p, lambda}(y)|| <= ||B_lambda (u_p(x) - u_p(y))||.
        2. Induction from the leaves: sum_{q in subtree(p)} ||S_q x - S_q y||^2 <= V_p ||d||^2,
           d = u_p(x) - u_p(y), where V_p is the squared norm, on real signals, of the linear map
           d -> (Low_p d, (V_{p, lambda}^{1/2} B_lambda d)_lambda): a leaf's V is ||Low_p||^2, and
           ||Low_p d||^2 + sum_lambda V_{p, lambda} ||B_lambda d||^2 <= V_p ||d||^2.
        3. That norm is exact and cheap: with K = 2^{J - r}, every operator filters and subsamples by
           a divisor k of K, so Low^* Low + sum V B^* B is block diagonal over the alias classes
           {a + (p_1 M_r, p_2 N_r) / K} of the coarse frequencies a (K^2 frequencies each): the block is
           sum (V / k^2) h h^T over the operator's own alias classes (``_alias_gram``). For real d,
           |D[-omega]| = |D[omega]|, so the block of a may be averaged with that of -a (the filters
           reflected, omega -> -omega). V_p is the largest eigenvalue of all these blocks.
        4. Reflect padding copies each pixel c_r c_c times at most (c_r copies of its row, c_c of its
           column, counted from the index map): ||pad(d)|| <= (c_r c_c)^{1/2} ||d||, equality at a most
           copied pixel. c_r c_c = 4 when both sides are at least 3 2^J, more on smaller images (6 for
           16 x 48 at J = 3); 1 with ``"periodic"``.

        So Lip = (c_r c_c V_root)^{1/2}, on the actual (padded, cropped) grids with the actual filters,
        without assuming band-limitation; the paths j_2 <= j_1, not computed, are not counted. This is
        Mallat's telescoping (ref. 1 of the module, Prop. 2.5), each path weighted by the bound of its
        subtree: without subsampling, weights <= 1 and a = max A <= 1 it gives Mallat's 1, and it
        stays valid for a > 1. The subsampling enters through the blocks: the unweighted
        coefficients, sampled every 2^J pixels, carry about 4^{-J} of the energy. The looser
        pointwise bound, max_omega of sum (V / k^2) sum_aliases |h|^2 (Cauchy-Schwarz in each class),
        gave 1.31 to 2.01 times 2^{-J} with ``"periodic"``: the low-pass subsampled by 2^J has
        aliases where the wavelets peak, and only the blocks see that no d fills both. The bound is
        for exact arithmetic with the float64 filters. Cost: the blocks at resolution 2^{-r} hold
        (M'_r N'_r / K^2) K^4 = M'_r N'_r K^2 floats, M' N' 4^J at the root (M' x N' the padded grid), and
        each operator forms such an array (K^2 x K^2 eigenproblems): 1.0e6 floats and 8 s at J = 4,
        9.4e6 and 72 s at J = 5 (32 x 32 images, reflect, L = 8, one shared core).

        Tightness (8 x 8, L = 4; the largest local constant |J_S(x)| found by an ascent): 1.0025 and
        1.002 times it with ``"periodic"`` at J = 1, 2; 1.76 and 2.11 times with ``"reflect"``
        (1.41 at 16 x 16, J = 2). The slack there is the crop C, bounded by 1: it drops the border
        coarse pixels, which hold most of the copies' weight (order 0 alone, linear, has norm 1.13 and
        1.31 times 2^{-J} at J = 1, 2, against the bound's 2.01); composing the padding exactly with the
        root's maps (a dense eigenproblem of size M N) would lower the bound by only 3% to 9%.

        Examples
        --------
        >>> S = Scattering2D(2, (16, 16), L=4, padding="periodic")
        >>> 0.25 <= S.lipschitz_bound() <= 0.27
        True
        """
        J, order = self.J, self.max_order

        def node(r, children):  # V at resolution 2^-r; children: [(j, V_child)]
            K = 2 ** (J - r)
            ops = [(1.0, self._phi[r][None], K)] + [(V, self._psi[j][r], 2 ** (j - r)) for j, V in children]
            blocks = sum(0.5 * w * (_alias_gram(F, k, K) + _alias_gram(_reflect(F), k, K)) for w, F, k in ops)
            return float(np.linalg.eigvalsh(blocks).max())

        V2 = {j: node(j, []) for j in range(J)} if order >= 2 else {}
        V1 = {j1: node(j1, [(j2, V) for j2, V in V2.items() if j2 > j1]) for j1 in range(J)} if order >= 1 else {}
        V0 = node(0, list(V1.items()))
        copies = np.bincount(self._rows).max() * np.bincount(self._cols).max() if self.pad else 1
        return math.sqrt(copies * V0)

    # ------------------------------------------------------------------ input checks
    def _check(self, x, name="x"):
        x = check_array(x, name)
        if x.ndim >= 3 and tuple(x.shape[-3:-1]) == self.shape and tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, a channels-last batch (N, H, W, C) of "
                             f"{self.shape[0]} x {self.shape[1]} images, but Scattering2D takes images of shape "
                             "(..., H, W): for channels-last batches use ScatteringLayer (or Scattering2D.features)")
        if x.ndim < 2 or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"{name} must have shape (..., {self.shape[0]}, {self.shape[1]}) for this scattering "
                             f"(shape={self.shape}), got {tuple(x.shape)}")
        return x

    def _pad_image(self, x):
        if not self.pad:
            return x
        xp = get_xp(x)
        return x[..., xp.asarray(self._rows)[:, None], xp.asarray(self._cols)[None, :]]

    def _pad_adjoint(self, g):
        """pad^T: each padded pixel's value added back onto the pixel it copies."""
        if not self.pad:
            return g
        xp = get_xp(g)
        Pr = np.zeros((self.padded_shape[0], self.shape[0]))
        Pr[np.arange(Pr.shape[0]), self._rows] = 1.0
        Pc = np.zeros((self.padded_shape[1], self.shape[1]))
        Pc[np.arange(Pc.shape[0]), self._cols] = 1.0
        Pr, Pc = xp.asarray(Pr.astype(g.dtype)), xp.asarray(Pc.astype(g.dtype))
        return xp.matmul(xp.matmul(Pr.T, g), Pc)

    def _unpad(self, s):
        return s[..., 1:-1, 1:-1] if self.pad else s

    def _unpad_adjoint(self, g):
        if not self.pad:
            return g
        xp = get_xp(g)
        out = xp.zeros(g.shape[:-2] + (g.shape[-2] + 2, g.shape[-1] + 2), dtype=g.dtype)
        out[..., 1:-1, 1:-1] = g
        return out

    # ------------------------------------------------------------------ the linear steps and their adjoints
    def _low(self, Y, r, F):
        """unpad(Re IDFT(P_{2^{J - r}}(Y phi^{(r)}))) for Y at resolution 2^-r."""
        xp = get_xp(Y)
        return self._unpad(xp.fft.ifft2(_sub(Y * F[0][r], 2 ** (self.J - r))).real)

    def _low_adjoint(self, G, r, F):
        xp = get_xp(G)
        G = self._unpad_adjoint(G)
        k = 2 ** (self.J - r)
        m, n = G.shape[-2] * k, G.shape[-1] * k
        return F[0][r] * _sub_adjoint(xp.fft.fft2(G), k) * (k * k / (m * n))

    def _band(self, Y, j, r, F):
        """IDFT(P_{2^{j - r}}(Y psi_{j, l}^{(r)})) for all l: (..., m, n) -> (..., L, m / 2^{j-r}, n / 2^{j-r}).

        For k = 2^{j - r} > 1 the product and the sum over the k x k aliases are one batched matrix
        product over the output frequencies, (B, k^2) @ (k^2, L) per frequency, which never forms
        the (..., L, m, n) product.
        """
        xp = get_xp(Y)
        psi = F[1][j][r]
        k = 2 ** (j - r)
        if k == 1:
            return xp.fft.ifft2(Y[..., None, :, :] * psi)
        lead, (M, N) = Y.shape[:-2], Y.shape[-2:]
        m, n = M // k, N // k
        Yr = Y.reshape(-1, k, m, k, n).transpose(2, 4, 0, 1, 3).reshape(m, n, -1, k * k)  # (m, n, B, k^2)
        Z = xp.matmul(Yr, F[2][j][r])  # (m, n, B, L)
        return xp.fft.ifft2(Z.transpose(2, 3, 0, 1).reshape(*lead, self.L, m, n))

    def _band_adjoint(self, G, j, r, F):
        """The adjoint of :meth:`_band`: (..., L, m', n') -> (..., m, n), summed over l."""
        xp = get_xp(G)
        k = 2 ** (j - r)
        lead, (m, n) = G.shape[:-3], G.shape[-2:]
        H = xp.fft.fft2(G) * (1.0 / (m * n))  # IDFT^T, (..., L, m', n')
        if k == 1:
            return (F[1][j][r] * H).sum(axis=-3)
        Hr = H.reshape(-1, self.L, m, n).transpose(2, 3, 0, 1)  # (m', n', B, L)
        Yr = xp.matmul(Hr, F[2][j][r].transpose(0, 1, 3, 2))  # (m', n', B, k^2)
        return Yr.reshape(m, n, -1, k, k).transpose(2, 3, 0, 4, 1).reshape(*lead, k * m, k * n)

    @staticmethod
    def _modulus_tangent(Z, U, tZ):
        """d|z| = Re(conj(z / |z|) dz), 0 where z = 0 (z / |z| first: the products z dz overflow)."""
        xp = get_xp(Z)
        safe = xp.where(U > 0, U, 1)
        return xp.where(U > 0, (Z.real / safe) * tZ.real + (Z.imag / safe) * tZ.imag, 0)

    @staticmethod
    def _modulus_adjoint(Z, U, g):
        """g z / |z|, 0 where z = 0."""
        xp = get_xp(Z)
        safe = xp.where(U > 0, U, 1)
        return xp.where(U > 0, g / safe, 0) * Z

    def _centred_dft(self, x):
        """(DFT(pad(x - c)), DFT(pad(x))) for a (B, M, N) batch, c the mean of each image.

        The wavelets have psi_hat(0) = 0 exactly (at every resolution), and the padding maps a constant
        to a constant, so the wavelet paths see x - c as they see x; the FFT's rounding, about eps
        times the norm of its input, is then relative to the image's variation rather than to its
        mean (float32 images of mean 1e4 and standard deviation 1 had their orders 1 and 2 off by 3e-4
        of their largest coefficient; centred, 3e-7). The low-pass gets c back on the zero frequency.
        """
        xp = get_xp(x)
        x = x.astype(np.promote_types(x.dtype, np.float32), copy=False)  # float16: subtract in float32
        c = x.mean(axis=(-2, -1), keepdims=True)  # (B, 1, 1)
        X = xp.fft.fft2(self._pad_image(x - c))
        X_low = X.copy()
        X_low[..., 0, 0] += c[..., 0, 0] * (self.padded_shape[0] * self.padded_shape[1])
        return X, X_low

    # ------------------------------------------------------------------ the transform
    def _run(self, x, tx=None, keep=False):
        """S(x) on a (B, M, N) batch; with tx also the tangent; with keep the cache of :meth:`_vjp_cached`."""
        xp = get_xp(x)
        B = x.shape[0]
        if B == 0:  # no images: no coefficients (the blocks below reshape by B)
            S = xp.zeros((0, self.n_coefficients, *self.output_shape), dtype=np.promote_types(x.dtype, np.float32))
            return S, (None if tx is None else S.copy()), ({"first": [], "second": {}} if keep else None)
        F = self._filters(xp, np.promote_types(x.dtype, np.float32))  # float16 filters lost 3 digits
        # each image (and tangent) scaled by a power of 2 to a largest modulus in [1, 2), and S (and tS)
        # back: exact, since S is 1-homogeneous in x and tS linear in tx and 0-homogeneous in x (the cache
        # keeps the scaled z, of which the vjp uses z / |z| only); the DFT's sums of M' N' pixels
        # overflowed for float32 pixels beyond 1e35 (float64 1e305)
        e = _image_exponents(x)  # (B,)
        x = xp.ldexp(x, -e[:, None, None])
        if tx is not None:
            et = _image_exponents(tx)
            tx = xp.ldexp(tx, -et[:, None, None])
        fft2 = xp.fft.fft2
        X, X_low = self._centred_dft(x)
        out, tout = [self._low(X_low, 0, F)[:, None]], None
        tX = None
        if tx is not None:
            tX, tX_low = self._centred_dft(tx)
            tout = [self._low(tX_low, 0, F)[:, None]]
        order2, torder2 = [], []
        cache = {"first": [], "second": {}} if keep else None
        if self.max_order >= 1:
            for j1 in range(self.J):
                Z1 = self._band(X, j1, 0, F)  # (B, L, m1, n1)
                U1 = xp.abs(Z1)
                U1h = fft2(U1)
                out.append(self._low(U1h, j1, F))
                if tx is not None:
                    tU1 = self._modulus_tangent(Z1, U1, self._band(tX, j1, 0, F))
                    tU1h = fft2(tU1)
                    tout.append(self._low(tU1h, j1, F))
                if keep:
                    cache["first"].append((Z1, U1))
                if self.max_order < 2:
                    continue
                blocks, tblocks = [], []
                for j2 in range(j1 + 1, self.J):
                    Z2 = self._band(U1h, j2, j1, F)  # (B, L1, L2, m2, n2)
                    U2 = xp.abs(Z2)
                    blocks.append(self._low(fft2(U2), j2, F))
                    if tx is not None:
                        tU2 = self._modulus_tangent(Z2, U2, self._band(tU1h, j2, j1, F))
                        tblocks.append(self._low(fft2(tU2), j2, F))
                    if keep:
                        cache["second"][j1, j2] = (Z2, U2)
                if blocks:  # (B, L1, J - 1 - j1, L2, h, w): l1, then j2, then l2
                    order2.append(xp.stack(blocks, axis=2).reshape(B, -1, *self.output_shape))
                    if tx is not None:
                        torder2.append(xp.stack(tblocks, axis=2).reshape(B, -1, *self.output_shape))
        S = xp.ldexp(xp.concatenate(out + order2, axis=1), e[:, None, None, None])
        tS = None if tx is None else xp.ldexp(xp.concatenate(tout + torder2, axis=1), et[:, None, None, None])
        return S, tS, cache

    def _vjp_cached(self, x, cache, G):
        """(dS/dx)^T G for a (B, M, N) batch, with the cache of ``_run(x, keep=True)``; G (B, K, h, w)."""
        xp = get_xp(x)
        B = x.shape[0]
        if B == 0:
            return xp.zeros_like(x)
        F = self._filters(xp, np.promote_types(x.dtype, np.float32))
        L, J = self.L, self.J
        Mp, Np = self.padded_shape
        gX = self._low_adjoint(G[:, 0], 0, F)  # (B, M', N')
        start1 = 1
        start2 = 1 + J * L
        for j1 in range(J if self.max_order >= 1 else 0):
            Z1, U1 = cache["first"][j1]
            gU1h = self._low_adjoint(G[:, start1 + j1 * L: start1 + (j1 + 1) * L], j1, F)  # (B, L, m1, n1)
            n2 = J - 1 - j1
            if self.max_order >= 2 and n2 > 0:
                size = L * n2 * L
                G2 = G[:, start2: start2 + size].reshape(B, L, n2, L, *self.output_shape)
                start2 += size
                for i, j2 in enumerate(range(j1 + 1, J)):
                    Z2, U2 = cache["second"][j1, j2]
                    gU2h = self._low_adjoint(G2[:, :, i], j2, F)  # (B, L1, L2, m2, n2)
                    m2, nn2 = gU2h.shape[-2:]
                    gU2 = (xp.fft.ifft2(gU2h) * (m2 * nn2)).real
                    gU1h = gU1h + self._band_adjoint(self._modulus_adjoint(Z2, U2, gU2), j2, j1, F)
            m1, nn1 = gU1h.shape[-2:]
            gU1 = (xp.fft.ifft2(gU1h) * (m1 * nn1)).real
            gX = gX + self._band_adjoint(self._modulus_adjoint(Z1, U1, gU1), j1, 0, F)
        gxpad = (xp.fft.ifft2(gX) * (Mp * Np)).real
        return self._pad_adjoint(gxpad).astype(x.dtype, copy=False)

    def _chunk(self) -> int:
        """Images per block of :meth:`_run_blocks`: about 2^21 complex numbers per intermediate."""
        Mp, Np = self.padded_shape
        per_image = self.L * max(1, self.L // 4 if self.max_order >= 2 else 1) * Mp * Np
        return max(1, 2**21 // per_image)

    def _run_blocks(self, xb, txb=None, keep=False):
        """(S, tS, caches) of a (B, M, N) batch (and tangents txb), computed in blocks of :meth:`_chunk`
        images; with keep each block's cache (:meth:`_vjp_cached`) comes with its rows. On the whole
        batch at once the intermediates outgrew the memory and the processor's caches (500 images of
        32x32 at J = 2: 2.3x slower than in blocks)."""
        step = self._chunk()
        runs = [(i, self._run(xb[i:i + step], None if txb is None else txb[i:i + step], keep=keep))
                for i in range(0, max(xb.shape[0], 1), step)]
        if len(runs) == 1:
            S, tS, cache = runs[0][1]
        else:
            xp = get_xp(xb)
            S = xp.concatenate([run[0] for _, run in runs], axis=0)
            tS = None if txb is None else xp.concatenate([run[1] for _, run in runs], axis=0)
        return S, tS, ([(slice(i, i + step), run[2]) for i, run in runs] if keep else None)

    def _vjp_blocks(self, xb, caches, G):
        """(dS/dx)^T G with the caches of :meth:`_run_blocks` (``keep=True``), block by block."""
        xp = get_xp(xb)
        return xp.concatenate([self._vjp_cached(xb[rows], cache, G[rows]) for rows, cache in caches], axis=0)

    def __call__(self, x):
        """S_J x for images x of shape (..., M, N): returns (..., K, M / 2^J, N / 2^J), Kymatio's order."""
        x = self._check(x)
        lead = x.shape[:-2]
        S = self._run_blocks(x.reshape(-1, *self.shape))[0]
        return S.reshape(*lead, self.n_coefficients, *self.output_shape)

    scattering = __call__

    def jvp(self, x, tx):
        """(S x, (dS/dx) tx) for x and tx of shape (..., M, N)."""
        x = self._check(x)
        tx = self._check(tx, "tx")
        if tx.shape != x.shape:
            raise ValueError(f"tx must have the shape of x {tuple(x.shape)}, got {tuple(tx.shape)}")
        lead = x.shape[:-2]
        S, tS, _ = self._run_blocks(x.reshape(-1, *self.shape), tx.reshape(-1, *self.shape).astype(x.dtype, copy=False))
        out = (*lead, self.n_coefficients, *self.output_shape)
        return S.reshape(out), tS.reshape(out)

    def vjp(self, x, G):
        """(dS/dx)^T G: the gradient in x of <G, S x>, for x (..., M, N) and G (..., K, h, w)."""
        x = self._check(x)
        lead = x.shape[:-2]
        want = (*lead, self.n_coefficients, *self.output_shape)
        G = check_array(G, "G")
        if tuple(G.shape) != want:
            raise ValueError(f"G must have the shape of S(x), {want}, got {tuple(G.shape)}")
        xb = x.reshape(-1, *self.shape)
        Gb = G.reshape(-1, self.n_coefficients, *self.output_shape).astype(x.dtype)
        # forward and backward block by block, the blocks of _run_blocks: one block's cache alive at a time,
        # not the whole batch's (which grew with the batch: 1.5 GB for 256 images of 64x64 at J = 3)
        step = self._chunk()
        g = [self._vjp_cached(xb[i:i + step], self._run(xb[i:i + step], keep=True)[2], Gb[i:i + step])
             for i in range(0, max(xb.shape[0], 1), step)]
        return (g[0] if len(g) == 1 else get_xp(xb).concatenate(g, axis=0)).reshape(x.shape)

    # ------------------------------------------------------------------ channels-last batches
    def _check_nhwc(self, X, name="X", finite=True):
        """X as a channels-last batch of this scattering's image shape; ``finite=False`` skips the NaN scan."""
        if finite:
            X = check_images(X, name)
        else:
            check_batch(X, name)
        if tuple(X.shape[1:3]) != self.shape:
            raise ValueError(f"{name} has images of shape {tuple(X.shape[1:3])} but the scattering is built for "
                             f"shape={self.shape} (channels-last batches (N, H, W, C))")
        return X

    def _to_nhwc(self, S, N, C):
        h, w = self.output_shape
        return S.reshape(N, C, self.n_coefficients, h, w).transpose(0, 3, 4, 1, 2).reshape(N, h, w, C * self.n_coefficients)

    def _from_nhwc(self, G, N, C):
        h, w = self.output_shape
        return G.reshape(N, h, w, C, self.n_coefficients).transpose(0, 3, 4, 1, 2).reshape(N * C, self.n_coefficients, h, w)

    def features(self, X):
        """Channels-last scattering features: X (N, H, W, C) -> (N, H / 2^J, W / 2^J, C K).

        Channel c K + k of the output is coefficient k (Kymatio's order, :attr:`paths`) of input
        channel c.
        """
        X = self._check_nhwc(X)
        N, _, _, C = X.shape
        S = self._run_blocks(X.transpose(0, 3, 1, 2).reshape(N * C, *self.shape))[0]
        return self._to_nhwc(S, N, C)


class ScatteringLayer(Layer):
    r"""The scattering transform as a parameter-free layer on channels-last batches: (N, H, W, C) -> (N, h, w, C K).

    Parameters
    ----------
    J, shape, L, max_order, padding
        As in :class:`Scattering2D` (``shape`` = (H, W)); or pass ``scattering=`` a built one.
        J and shape are required unless ``scattering`` is given.
    scattering : Scattering2D, optional
        A transform already built (its filters, possibly already moved to a device with
        :meth:`Scattering2D.to`, are shared); when given, J, shape, L, max_order and padding are
        ignored.

    Notes
    -----
    forward is :meth:`Scattering2D.features`; backward the vector-Jacobian product through the
    moduli (module notes); jvp the forward-mode derivative. Fixed filters: no parameters.
    forward and jvp refuse NaN or infinite inputs; :func:`~shallow.cnn.train.fit`, which checks the
    whole data set once, turns that scan off (``check_inputs``) for its steps: on a GPU it would wait
    for the device at every step (and cannot run inside a recorded CUDA graph).

    Examples
    --------
    >>> from shallow.cnn import Flatten, Linear, Sequential
    >>> net = Sequential(ScatteringLayer(1, (8, 8), L=4), Flatten(), Linear(4 * 4 * 5, 10, rng=0))
    >>> net(np.zeros((2, 8, 8, 1))).shape
    (2, 10)
    """

    def __init__(self, J=None, shape=None, L=8, max_order=2, *, padding="reflect", scattering=None):
        super().__init__()
        if scattering is None:
            if J is None or shape is None:
                raise ValueError("ScatteringLayer needs J and shape, or scattering=Scattering2D(...)")
            scattering = Scattering2D(J, shape, L, max_order, padding=padding)
        elif not isinstance(scattering, Scattering2D):
            raise ValueError(f"scattering must be a Scattering2D, got {type(scattering).__name__}")
        self.scattering = scattering
        self.check_inputs = True

    def extra_repr(self):
        return repr(self.scattering)

    def forward(self, x):
        S = self.scattering
        x = S._check_nhwc(x, "x", finite=self.check_inputs)
        N, _, _, C = x.shape
        xb = x.transpose(0, 3, 1, 2).reshape(N * C, *S.shape)
        keep = caching()  # no_cache: not the intermediates of every block
        Sx, _, caches = S._run_blocks(xb, keep=keep)
        self._cache = (xb, caches, N, C) if keep else None
        return S._to_nhwc(Sx, N, C)

    def backward(self, dy, need_input_grad=True):
        if self._cache is None:
            raise _missing_cache(self)
        if not need_input_grad:
            return None
        S = self.scattering
        xb, caches, N, C = self._cache
        g = S._vjp_blocks(xb, caches, S._from_nhwc(dy, N, C).astype(xb.dtype, copy=False))
        return g.reshape(N, C, *S.shape).transpose(0, 2, 3, 1)

    def jvp(self, x, tx=None, tparams=None):
        if tx is None:
            return self.forward(x), None
        S = self.scattering
        x = S._check_nhwc(x, "x", finite=self.check_inputs)
        if tuple(getattr(tx, "shape", ())) != tuple(x.shape):
            raise ValueError(f"tx must have the shape of x, {tuple(x.shape)}, got {tuple(getattr(tx, 'shape', ()))} "
                             f"({type(tx).__name__})")
        N, _, _, C = x.shape
        xb = x.transpose(0, 3, 1, 2).reshape(N * C, *S.shape)
        txb = tx.transpose(0, 3, 1, 2).reshape(N * C, *S.shape).astype(x.dtype, copy=False)
        Sx, tSx, caches = S._run_blocks(xb, txb, keep=True)
        self._cache = (xb, caches, N, C)
        return S._to_nhwc(Sx, N, C), S._to_nhwc(tSx, N, C)


class ScatteringClassifier(RidgeClassifier):
    r"""Scattering features + a ridge-regression linear classifier (one-vs-all, closed form).

    Parameters
    ----------
    J, shape, L, max_order, padding
        The scattering (:class:`Scattering2D`); ``shape`` = (H, W) of the images.
    ridge : float > 0
        lambda in min_W (1/n) ||Phi W - Y||^2 + lambda ||W||^2 on standardised features Phi.
    log_eps : float or None
        Features log(|S| + log_eps) instead of S (None: S itself). The logarithm turns the
        multiplicative variability of the coefficients into additive variability. The modulus
        matters at order 0 only (orders 1 and 2 are >= 0): S_0 = x * phi_J is negative where the
        image is, and log(|S_0| + log_eps) drops its sign (x and -x get the same log features).

    Notes
    -----
    fit: Phi = standardised scattering features (N, h w C K), each column with the training
    set's mean and standard deviation; Y the one-hot targets centred per class; then
    W = (Phi^T Phi / n + lambda I)^{-1} Phi^T Y / n, solved in float64 (in the dual form
    W = Phi^T (Phi Phi^T / n + lambda I)^{-1} Y / n when there are no more images than features), and
    the bias the mean target (:class:`shallow.cnn.ridge.RidgeClassifier` on the scattering
    features: ``predict`` and ``score`` take images). predict: argmax_c (Phi W + b)_c. The scattering is the fixed-filter CNN, the ridge
    regression its trained last layer (Bruna and Mallat 2013 use a Gaussian SVM or a PCA
    classifier; a linear classifier on order-2 coefficients is their "scattering + linear" row).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((20, 8, 8, 1)), np.arange(20) % 2
    >>> ScatteringClassifier(1, (8, 8), L=4).fit(X, y).predict(X).shape
    (20,)
    """

    def __init__(self, J, shape, L=8, max_order=2, *, padding="reflect", ridge=1e-3, log_eps=None):
        super().__init__(ridge)
        self.scattering = Scattering2D(J, shape, L, max_order, padding=padding)
        self.log_eps = None if log_eps is None else check_positive(log_eps, "log_eps")

    def transform(self, X):
        """Flattened (optionally log) scattering features, shape (N, h w C K), before standardisation."""
        xp = get_xp(X)
        Phi = self.scattering.features(X)
        Phi = Phi.reshape(Phi.shape[0], int(np.prod(Phi.shape[1:])))  # (N, h w C K), also for N = 0
        if self.log_eps is not None:
            Phi = xp.log(xp.abs(Phi) + self.log_eps)
        return Phi

    def fit(self, X, y):
        """Fit on images X (N, H, W, C) with integer labels y (N,); returns self."""
        return super().fit(self.transform(X), y)

    def decision_function(self, X):
        """Scores (N, n_classes): Phi W + b."""
        self._check_fitted()  # before the scattering of X
        return super().decision_function(self.transform(X))
