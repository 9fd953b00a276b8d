r"""Robustness of CNNs: deformations, Lipschitz bounds and adversarial attacks.

The seed lecture's part B asks how much a network's output can move when its input moves: by a
small deformation (the stability of the scattering transform), or by a worst-case perturbation of
given norm (adversarial examples). This module measures both and bounds the second.

Deformations
------------
A displacement field tau: R^2 -> R^2 (in pixels; component 0 along the rows H, component 1 along
the columns W) acts on an image by

    (L_tau x)(u) = x(u - tau(u)),

evaluated by bilinear interpolation (:func:`deform`). Mallat's stability condition (ref. 1, Sec.
2.2) asks |Phi(L_tau x) - Phi(x)| <= C |x| |grad tau|_inf for small fields, with
|grad tau|_inf = sup_u |grad tau(u)| the largest operator norm of the 2x2 Jacobian
(:func:`jacobian_norm`); :func:`deformation_ratio` measures the ratio on data for any Phi,
along smooth random fields (:func:`random_displacement`).

Lipschitz bounds
----------------
All norms are Euclidean (the image as a vector of H W C numbers). A linear layer's Lipschitz
constant is its operator norm |A|, found by Lanczos iteration on A^T A with the layer's own
forward-mode map (A v = ``layer.jvp(x, v)[1]``, which leaves the bias out) and backward map (A^T u)
(:func:`spectral_norm`). For a circular convolution the singular values are known exactly (ref. 2,
Theorem 6): those of the C_in x C_out matrices hat W(omega) of the kernel's 2-D DFT, one per
frequency omega of the grid (:func:`conv_singular_values`). A zero-padded convolution of an
H x W input is a restriction of the circular convolution on any grid of at least
(H + d(KH - 1)) x (W + d(KW - 1)) points (zero-extend the input, crop and subsample the output:
both maps have norm <= 1), so the largest singular value on that grid is a certified upper bound
of its norm (``method="fft"``).

Two upper bounds of the Lipschitz constant of a network (:func:`lipschitz_upper_bound`):

* ``bound="product"``: the product over layers of their Lipschitz constants (1 for relu, tanh and
  max pooling with non-overlapping windows, |A| for an affine layer, max_c |gamma_c| /
  sqrt(v_c + eps) for batch normalisation in eval mode, 1/sqrt(H W) for global average pooling,
  L(body) + L(shortcut) for a residual block, 1 for the isometries of an i-RevNet (space-to-depth,
  injective zero padding), (L(F) + sqrt(L(F)^2 + 4)) / 2 for its coupling block (below), and
  :meth:`~shallow.cnn.scattering.Scattering2D.lipschitz_bound` for a scattering layer (certified:
  Mallat's telescoping over the paths, each node's linear maps bounded exactly on the grid);
* ``bound="averaged"``: the bound of Combettes and Pesquet (ref. 3, Sec. 3) for chains
  A_m R A_{m-1} ... R A_1 of affine maps and componentwise activations whose slopes lie in
  [0, c]. For such an activation and any u, v, R(u) - R(v) = c D (u - v) with D diagonal,
  entries in [0, 1] (the difference quotients): hence
  f(x) - f(y) = c^{m-1} A_m D_{m-1} ... D_1 A_1 (x - y) exactly, and writing D = (I + E)/2 with
  |E| <= 1 and expanding the product,

      Lip(f) <= c^{m-1} 2^{-(m-1)} sum_{S subset of {1..m-1}} prod_{segments of S} |A_n ... A_{k+1}|,

  where the activations in S split the chain into segments whose linear maps are multiplied
  before taking norms. Every term is at most the product of norms, so this bound is never above
  ``"product"``; it is computed by the recursion a_0 = 1,
  a_n = sum_{k<n} a_k 2^{-(n-k-1)-[k>0]} |A_n ... A_{k+1}|. Max pooling, residual blocks and
  activations with negative slopes end a chain (their constants multiply).

An additive coupling (x_1, x_2) -> (S x_2, S x_1 + F(x_2)) (:class:`~shallow.cnn.revnet.RevBlock`,
S a permutation of coordinates) has differences whose norms satisfy |dy_1| = |dx_2| and
|dy_2| <= |dx_1| + L(F) |dx_2|, so |dy| <= |B (|dx_1|, |dx_2|)| with B = [[0, 1], [1, L(F)]]: the
block is (L(F) + sqrt(L(F)^2 + 4)) / 2 -Lipschitz, the largest eigenvalue of the symmetric B, below
1 + L(F) and equal to 1 for F = 0 (then the block is a permutation). The bound is attained when F
is linear and a multiple of S (of the identity at stride 1): F = c S makes the block
[[0, 1], [1, c]] (x) S, of norm (|c| + sqrt(c^2 + 4)) / 2. An i-RevNet
(:class:`~shallow.cnn.revnet.IRevNet`) is its invertible body followed by its head. Its inverse
(y_1, y_2) -> (S^{-1}(y_2 - F(S^{-1} y_1)), S^{-1} y_1) has |dx_1| <= L(F) |dy_1| + |dy_2| and
|dx_2| = |dy_1|: the matrix [[L(F), 1], [1, 0]], B with its two coordinates swapped, hence the
same constant, attained at the same F = c S; with the isometries' inverses (a permutation, the
projection dropping the padded channels), their product bounds Phi^{-1}
(``lipschitz_upper_bound(..., inverse=True)``), which makes Phi bi-Lipschitz:
|x - x'| / L(Phi^{-1}) <= |Phi(x) - Phi(x')| <= L(Phi) |x - x'|.

Both use the layers' eval-mode maps (batch-norm running statistics, no dropout): they bound the
network used at test time. The empirical local constant :func:`local_lipschitz` is
max over data of |J_f(x)|, the largest singular value of the input-output Jacobian (K x H W C),
computed exactly from K backward passes; it is a lower bound of the Lipschitz constant, which the
upper bounds must exceed.

What is certified. With ``method="fft"`` the bounds are upper bounds of the Lipschitz constant (up
to float64 rounding, at the level of 1e-15 relative; a norm from a dense matrix carries an explicit
1e-10 relative margin): ``bound="product"`` (the FFT bounds of convolutions, SVDs of linear layers,
the tabulated constants), ``bound="averaged"`` (each segment's norm from its dense matrix in float64,
or the product of its factors' certified norms when both its input and its output have more than
1024 coordinates, or its matrix more than 2^24 entries), and ``inverse=True``. With the default
``method="power"`` every norm is a Lanczos estimate from below (to ``tol``/2 relative): above the
true constant in practice, not guaranteed.

Attacks
-------
On the per-image loss l(x, y) (cross-entropy, or the margin max_{j != y} f_j(x) - f_y(x)), or on
a targeted loss towards a class t != y (``target=``: -CE(f(x), t), or the margin f_t(x) - f_y(x)),
FGSM (ref. 4) takes one step x + eps sign(grad_x l) (Linf) or x + eps grad/|grad| (L2); PGD
(ref. 5) iterates x_{t+1} = P(x_t + s step(grad_x l(x_t))) with P the projection on the eps-ball
around x (and on a box of valid pixel values when ``clip`` is given). :func:`minimal_perturbation`
bisects on eps, image by image, for the smallest radius at which PGD changes the prediction
(``targets="all"``: the smallest over targeted searches towards every other class, exact up to the
bisection on a linear model, where the untargeted one overshoots);
:func:`certified_radius` is the radius margin / (sqrt(2) L) below which no perturbation can
change it for an L-Lipschitz network (ref. 7). Its default norm is ``"2"``, while the attacks
(:func:`fgsm`, :func:`pgd`, :func:`minimal_perturbation`) default to ``"inf"``: to compare the
certified radius with an attack's, pass the same ``norm`` to both. :func:`universal_perturbation`
is Algorithm 1 of Moosavi-Dezfooli et al. (ref. 6): one perturbation v for all images, grown image
by image (or batch by batch) until a fraction 1 - delta of the predictions change.

Spectral normalisation
----------------------
:class:`SpectralProjection` divides each convolution's and linear layer's weight by
max(1, |A| / bound) (the certified FFT bound for convolutions), so that every layer is
``bound``-Lipschitz; :class:`ProjectedOptimizer` applies it after every optimiser step and can be
handed to :func:`shallow.cnn.fit` (whose callback runs once per epoch only).

References
----------
1. S. Mallat, "Group invariant scattering", Comm. Pure Appl. Math. 65, 2012, arXiv:1101.2286,
   Sec. 2.2 (Lipschitz continuity to the action of diffeomorphisms, |grad tau|_inf), Theorem 2.12
   (the bound for the scattering at scale 2^J, with its translation term 2^{-J} |tau|_inf).
2. H. Sedghi, V. Gupta and P. Long, "The singular values of convolutional layers", ICLR 2019,
   arXiv:1805.10408, Theorem 6 (singular values of a multi-channel circular convolution).
3. P. L. Combettes and J.-C. Pesquet, "Lipschitz certificates for layered network structures
   driven by averaged activation operators", SIAM J. Math. Data Sci. 2, 2020, arXiv:1903.01014,
   Sec. 3 (the bound theta_m for 1/2-averaged activations).
4. I. Goodfellow, J. Shlens and C. Szegedy, "Explaining and harnessing adversarial examples",
   ICLR 2015, arXiv:1412.6572 (FGSM).
5. A. Madry, A. Makelov, L. Schmidt, D. Tsipras and A. Vladu, "Towards deep learning models
   resistant to adversarial attacks", ICLR 2018, arXiv:1706.06083, Sec. 2 (PGD).
6. S.-M. Moosavi-Dezfooli, A. Fawzi, O. Fawzi and P. Frossard, "Universal adversarial
   perturbations", CVPR 2017, arXiv:1610.08401, Algorithm 1.
7. Y. Tsuzuku, I. Sato and M. Sugiyama, "Lipschitz-margin training", NeurIPS 2018,
   arXiv:1802.04034, Proposition 1 (the margin over sqrt(2) L certifies a radius).
8. K. Scaman and A. Virmaux, "Lipschitz regularity of deep neural networks: analysis and
   efficient estimation", NeurIPS 2018, arXiv:1805.10965 (product bound, activation patterns).
9. T. Miyato, T. Kataoka, M. Koyama and Y. Yoshida, "Spectral normalization for generative
   adversarial networks", ICLR 2018, arXiv:1802.05957 (dividing weights by their spectral norm).
"""

from __future__ import annotations

import math
import numbers
import weakref

import numpy as np

from .._validation import (
    check_array,
    check_bool,
    check_integer,
    check_nonnegative,
    check_positive,
    check_random_state,
)
from ..backend import get_xp, row_norms, to_numpy
from .conv import Conv2d
from .data import _bilinear_sample, _check_fill
from .layers import (
    Activation,
    Dropout,
    Flatten,
    Identity,
    Layer,
    Linear,
    Residual,
    Sequential,
    check_layer,
    no_cache,
)
from .losses import check_labels, cross_entropy_per_sample
from .models import Model, check_images
from .norm import BatchNorm2d
from .optim import Optimizer
from .pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .revnet import InjectivePad, InvertibleSequential, IRevNet, RevBlock, SpaceToDepth
from .scattering import ScatteringLayer

__all__ = [
    "LOSSES",
    "NORMS",
    "ProjectedOptimizer",
    "SpectralProjection",
    "certified_radius",
    "conv_norm_bound",
    "conv_singular_values",
    "deform",
    "deformation_ratio",
    "fgsm",
    "input_gradient",
    "input_jacobian",
    "jacobian_norm",
    "lipschitz_upper_bound",
    "local_lipschitz",
    "minimal_perturbation",
    "pgd",
    "random_displacement",
    "spectral_norm",
    "universal_perturbation",
]

#: The perturbation norms of the attacks: "inf" (Linf) and "2" (L2).
NORMS = ("inf", "2")
#: The per-image losses the attacks maximise.
LOSSES = ("ce", "margin")


# ============================================================================= checks

def _check_norm(norm):
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        norm = {2: "2", math.inf: "inf"}.get(norm, norm)
    if norm not in NORMS:
        raise ValueError(f"norm must be 'inf' (Linf ball) or '2' (L2 ball), got {norm!r}")
    return norm


def _check_eps(eps, n, xp, dtype):
    """eps as an array of shape (n,) on the images' device: a number or one radius per image, >= 0."""
    arr = to_numpy(check_array(eps, "eps", finite=False)).astype(np.float64, copy=False)  # real: no text, complex
    if arr.ndim == 0:
        if isinstance(eps, bool):
            raise ValueError(f"eps must be a radius >= 0, got {eps!r}")
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"eps must be a number or an array of shape ({n},) (one radius per image), got shape "
                         f"{arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        bad = arr[~(np.isfinite(arr) & (arr >= 0))][0]
        raise ValueError(f"eps must be a radius >= 0 (the size of the perturbation), got {bad!r}")
    top = float(np.finfo(dtype).max)
    if np.any(arr > top):  # cast to the images' dtype it became inf: fgsm gave inf images, pgd x itself
        raise ValueError(f"eps = {arr.max():g} overflows {np.dtype(dtype).name}, the dtype the attack computes in "
                         f"(the model's; largest {top:.3g})")
    return xp.asarray(arr.astype(dtype))


def _check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return loss


def _check_clip(clip):
    if clip is None:
        return None
    if (not isinstance(clip, (tuple, list)) or len(clip) != 2
            or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in clip) or not clip[0] < clip[1]):
        raise ValueError(f"clip must be None or a pair (lo, hi) of numbers with lo < hi, got {clip!r}")
    return float(clip[0]), float(clip[1])


def _check_in_box(X, clip):
    """Refuse images outside the box ``clip``: clipping would then move x itself, out of its own eps-ball."""
    if clip is None:  # X holds images: _images refused an empty batch
        return
    lo, hi = float(X.min()), float(X.max())
    if lo < clip[0] or hi > clip[1]:
        raise ValueError(f"X has pixel values in [{lo:.6g}, {hi:.6g}], outside clip=({clip[0]:g}, {clip[1]:g}): the box "
                         f"of valid pixel values must contain the clean images (standardised images need the box "
                         f"of their own scale)")


def _check_in_shape(in_shape):
    """One input's shape without the batch axis: a tuple of positive integers."""
    if not isinstance(in_shape, (tuple, list)) or not in_shape:
        raise ValueError(f"in_shape must be the shape of one input, (H, W, C) or (d,), got {in_shape!r}")
    return tuple(check_integer(s, "in_shape", minimum=1) for s in in_shape)


# ============================================================================= deformations

def _check_field(tau, X=None, name="tau"):
    tau = check_array(tau, name)  # real and finite
    if X is not None:
        get_xp(tau, X)  # on the images' device
    if tau.ndim not in (3, 4) or tau.shape[-1] != 2:
        raise ValueError(f"{name} must be a displacement field of shape (H, W, 2) or (N, H, W, 2), got shape "
                         f"{tuple(tau.shape)}")
    if X is not None:
        N, H, W = X.shape[:3]
        if tuple(tau.shape[-3:-1]) != (H, W):
            raise ValueError(f"{name} has shape {tuple(tau.shape)} but the images are {H}x{W}: expected (H, W, 2) = "
                             f"({H}, {W}, 2) or (N, H, W, 2)")
        if tau.ndim == 4 and tau.shape[0] != N:
            raise ValueError(f"{name} has {tau.shape[0]} fields but there are {N} images")
    return tau


def deform(X, tau, *, fill=None):
    r"""The deformed images (L_tau x)(u) = x(u - tau(u)), by bilinear interpolation.

    Parameters
    ----------
    X : array of shape (N, H, W, C)
        Channels-last images (numpy or cupy).
    tau : array of shape (H, W, 2) or (N, H, W, 2)
        The displacement in pixels at every grid point u = (i, j): tau[..., 0] along the rows
        (H), tau[..., 1] along the columns (W). One field for all images, or one per image.
    fill : None or float
        None (the default) clamps the source point u - tau(u) to the image, i.e. repeats the
        border pixels (edge replication, as :func:`shallow.cnn.data.affine_warp`: for digits the
        border is the background); a number is the value of the points whose source falls
        outside [0, H - 1] x [0, W - 1].

    Returns
    -------
    array of X's shape, dtype and device

    Notes
    -----
    With s = u - tau(u), i0 = floor(s_0), j0 = floor(s_1), a = s_0 - i0, b = s_1 - j0,
    (L_tau x)(u) = (1-a)(1-b) x[i0, j0] + (1-a) b x[i0, j0+1] + a (1-b) x[i0+1, j0] + a b x[i0+1, j0+1].
    An integer constant field tau = (p, q) is the translation x(i - p, j - q) (exactly, inside
    the image); tau = 0 is the identity. The map is linear in x.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> tau = np.zeros((4, 4, 2)); tau[..., 1] = 1.0   # shift right by one column
    >>> deform(X, tau)[0, :, :, 0][1].tolist()
    [4.0, 4.0, 5.0, 6.0]
    """
    X = check_images(X, "X")
    tau = _check_field(tau, X)
    fill = _check_fill(fill)
    xp = get_xp(X, tau)
    N, H, W, _ = X.shape
    rows = xp.arange(H, dtype=xp.float64)[:, None]
    cols = xp.arange(W, dtype=xp.float64)[None, :]
    si = rows - tau[..., 0].astype(xp.float64)  # (H, W) or (N, H, W)
    sj = cols - tau[..., 1].astype(xp.float64)
    if si.ndim == 2:
        si, sj = xp.broadcast_to(si, (N, H, W)), xp.broadcast_to(sj, (N, H, W))
    return _bilinear_sample(X, si, sj, fill)


def jacobian_norm(tau):
    r"""|grad tau|_inf = sup_u |grad tau(u)|, the largest operator norm of the 2x2 Jacobian.

    Parameters
    ----------
    tau : array of shape (H, W, 2) or (N, H, W, 2), H, W >= 2
        Displacement fields in pixels (as in :func:`deform`).

    Returns
    -------
    float for one field, array of shape (N,) for N fields (on tau's device)

    Notes
    -----
    The Jacobian J_ab = d tau_a / d u_b is taken by finite differences on the grid
    (``gradient``: central differences inside, one-sided at the border), and the operator norm
    of a 2x2 matrix in closed form: |J|^2 = (|J|_F^2 + sqrt(|J|_F^4 - 4 det(J)^2)) / 2.

    Examples
    --------
    >>> import numpy as np
    >>> i, j = np.meshgrid(np.arange(5.0), np.arange(5.0), indexing="ij")
    >>> round(float(jacobian_norm(np.stack([0.1 * i, -0.2 * j], -1))), 12)   # J = diag(0.1, -0.2)
    0.2
    """
    tau = _check_field(tau)
    xp = get_xp(tau)
    if tau.shape[-3] < 2 or tau.shape[-2] < 2:
        raise ValueError(f"tau must be at least 2x2 to take finite differences, got shape {tuple(tau.shape)}")
    tau = tau.astype(xp.float64)
    J = [[xp.gradient(tau[..., a], axis=axis) for axis in (-2, -1)] for a in (0, 1)]  # J[a][b]: (..., H, W)
    fro2 = J[0][0] ** 2 + J[0][1] ** 2 + J[1][0] ** 2 + J[1][1] ** 2
    det = J[0][0] * J[1][1] - J[0][1] * J[1][0]
    sigma = xp.sqrt(0.5 * (fro2 + xp.sqrt(xp.maximum(fro2 ** 2 - 4 * det ** 2, 0))))
    out = sigma.max(axis=(-2, -1))
    return float(out) if tau.ndim == 3 else out


def random_displacement(shape, *, grad_norm, scale, rng=None):
    r"""A smooth random displacement field whose |grad tau|_inf equals ``grad_norm``.

    Parameters
    ----------
    shape : (H, W) or (N, H, W)
        The grid (and the number of independent fields).
    grad_norm : float >= 0
        The value of :func:`jacobian_norm` of each returned field.
    scale : float > 0
        Correlation length in pixels: white noise smoothed by a Gaussian of standard deviation
        ``scale`` (``scipy.ndimage.gaussian_filter``, reflected at the border).
    rng : None, int or Generator

    Returns
    -------
    numpy array of shape (H, W, 2) or (N, H, W, 2), float64
        Drawn on the host (the same seed gives the same field everywhere); move it to a device
        with :func:`shallow.backend.to_device`.

    Notes
    -----
    Each field is rescaled to |grad tau|_inf = grad_norm exactly (a field is linear in its
    noise, so is its Jacobian). For grad_norm < 1 the map u -> u - tau(u) is invertible
    (a diffeomorphism of the plane) by the contraction principle.

    Examples
    --------
    >>> tau = random_displacement((8, 8), grad_norm=0.3, scale=2.0, rng=0)
    >>> tau.shape, round(jacobian_norm(tau), 12)
    ((8, 8, 2), 0.3)
    """
    from scipy.ndimage import gaussian_filter

    if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3):
        raise ValueError(f"shape must be (H, W) or (N, H, W), got {shape!r}")
    dims = tuple(check_integer(s, "shape", minimum=1) for s in shape)
    if dims[-1] < 2 or dims[-2] < 2:
        raise ValueError(f"shape must have H, W >= 2 (finite differences), got {shape!r}")
    grad_norm = check_nonnegative(grad_norm, "grad_norm")
    scale = check_positive(scale, "scale")
    rng = check_random_state(rng)
    N = 1 if len(dims) == 2 else dims[0]
    H, W = dims[-2:]
    noise = rng.standard_normal((N, H, W, 2))
    tau = np.stack([np.stack([gaussian_filter(noise[n, :, :, a], float(scale), mode="reflect") for a in (0, 1)], -1)
                    for n in range(N)])  # (N, H, W, 2)
    norms = np.atleast_1d(jacobian_norm(tau))
    factor = np.where(norms > 0, grad_norm / np.where(norms > 0, norms, 1.0), 0.0)
    tau = tau * factor[:, None, None, None]
    return tau[0] if len(dims) == 2 else tau


def _as_function(phi):
    """A callable images -> features; a Layer runs in eval mode (its mode restored afterwards)."""
    if isinstance(phi, Layer):
        def run(X):
            mode = phi.training
            phi.eval()
            try:
                return phi.forward(X)
            finally:
                phi.train(mode)
        return run
    if not callable(phi):
        raise TypeError(f"phi must be a callable images -> features or a Layer, got {type(phi).__name__}")
    return phi


def deformation_ratio(phi, X, tau, *, normalize=True, fill=None):
    r"""|Phi(L_tau x) - Phi(x)| / (|Phi(x)| |grad tau|_inf) for every image (or without |Phi(x)|).

    Parameters
    ----------
    phi : callable or Layer
        Maps a batch (N, H, W, C) to features (N, ...) (a scattering transform, a network's
        logits, ...). A Layer is run in eval mode.
    X : array of shape (N, H, W, C)
    tau : array of shape (H, W, 2) or (N, H, W, 2)
        Displacement fields (:func:`random_displacement`), not all zero.
    normalize : bool
        True divides by |Phi(x)| (relative change, comparable across representations of
        different scales; an image with Phi(x) = 0 is refused); False gives
        |Phi(L_tau x) - Phi(x)| / |grad tau|_inf.
    fill : None or float
        Passed to :func:`deform`.

    Returns
    -------
    array of shape (N,) on the images' device

    Notes
    -----
    Norms are Euclidean over all feature coordinates of an image. Mallat's stability of the
    scattering at scale 2^J (ref. 1, Theorem 2.12: for |grad tau|_inf <= 1/2),
    |Phi(L_tau x) - Phi(x)| <= C ||U[P_J] x||_1 (2^{-J} |tau|_inf + |grad tau|_inf
    max(log(Delta tau / |grad tau|_inf), 1) + |H tau|_inf), with ||U[P_J] x||_1 = sum over the
    orders m of the l2 norm ||U[Lambda_J^m] x|| over the paths of order m (assumed finite) and
    Delta tau = sup |tau(u) - tau(v)|; for the paths of order < m (a scattering of finite depth, as
    computed) the same theorem gives C m ||x|| in place of C ||U[P_J] x||_1. This makes the unnormalised
    ratio bounded up to that logarithm for fields whose amplitude |tau|_inf is at most of order
    2^J |grad tau|_inf and whose Hessian |H tau|_inf is at most of order |grad tau|_inf (a correlation
    length of a pixel or more), whereas for a translation-covariant Phi (the identity, a
    linear convolution) it blows up for high-frequency images. The ratio divides by |grad tau|_inf
    only: for a field of large amplitude and small gradient (a long correlation length, close to a
    translation) it measures the translation term 2^{-J} |tau|_inf / |grad tau|_inf as well.
    """
    normalize = check_bool(normalize, "normalize")
    X = check_images(X, "X")
    tau = _check_field(tau, X)
    f = _as_function(phi)
    xp = get_xp(X)
    g = jacobian_norm(tau)
    g = xp.asarray(g) if tau.ndim == 4 else xp.full(X.shape[0], g)
    if bool((g <= 0).any()):
        raise ValueError("tau must be a non-zero deformation: |grad tau|_inf = 0 makes the ratio undefined")
    F0 = f(X)
    F1 = f(deform(X, tau, fill=fill))
    N = X.shape[0]
    diff = xp.sqrt(((F1 - F0).reshape(N, -1).astype(xp.float64) ** 2).sum(axis=1))
    out = diff / g
    if normalize:
        size = xp.sqrt((F0.reshape(N, -1).astype(xp.float64) ** 2).sum(axis=1))
        zero = [int(i) for i in xp.nonzero(size == 0)[0][:5]]
        if zero:
            raise ValueError(f"phi(X) is zero for image(s) {zero} of X: the ratio relative to |phi(x)| is undefined "
                             f"there (normalize=False gives the absolute ratio)")
        out = out / size
    return out


# ============================================================================= spectral norms

def _unit(v, xp):
    """(v / |v|, |v|), |v| in float64 from the squares of v scaled by the power of 2 of its largest modulus
    (exact): representable wherever |v| is."""
    n = float(row_norms(v.astype(xp.float64).reshape(1, -1))[0])
    return v / n if n > 0 else v, n


_KRYLOV = 24  # basis vectors of spectral_norm's Lanczos process
_KEPT = 10  # Ritz vectors kept at each restart


def _lanczos(A, AT, v, n_iter, tol):
    """(sigma, v): the largest singular value of A and a unit top right singular vector, Lanczos on A^T A.

    Thick-restarted Lanczos (Wu and Simon 2000) on B = A^T A / s^2, s = |A v0| (the iterates are of order
    one wherever sigma_max(A) is representable): the basis, of at most _KRYLOV vectors, is
    reorthogonalised in full (twice) and the projection H = Q^T B Q is formed column by column from the
    same inner products; when the basis is full, the _KEPT top Ritz vectors and the last residual
    direction start the next cycle. The top Ritz value theta never exceeds lambda_max(B) and never
    decreases. Stops when the residual |B x - theta x| = beta |S[m-1, top]| falls to tol theta (some
    eigenvalue of B is then within tol theta of theta: sigma within tol/2 of a singular value, the top
    one for a start not orthogonal to it), or after n_iter products with A^T A. Where the top of the
    spectrum is clustered (sigma_2 / sigma_1 = 0.9997 for a random 3x3 kernel) the power method's
    estimate crawls (1e-5 short after 500 steps); this converges in a few hundred products at most.
    """
    xp = get_xp(v)
    shape, dtype = v.shape, v.dtype
    v, _ = _unit(v, xp)
    _, scale = _unit(A(v), xp)
    if scale == 0:  # A v0 = 0 for a random v0: A = 0 (almost surely)
        return 0.0, v
    floor = 10 * float(np.finfo(dtype).eps)
    tol = max(tol, floor)  # the residual cannot fall below the rounding of the products

    def B(x):
        return (AT(A(x.reshape(shape)) / scale) / scale).reshape(-1)

    Q = xp.empty((_KRYLOV + 1, v.size), dtype=dtype)
    H = np.zeros((_KRYLOV, _KRYLOV))
    Q[0] = v.reshape(-1)
    first, used = 0, 0
    while True:
        for j in range(first, _KRYLOV):
            w = B(Q[j])
            used += 1
            h = np.zeros(j + 1)
            for _ in range(2):  # full reorthogonalisation, twice (Kahan: twice is enough)
                c = Q[: j + 1] @ w
                w = w - c @ Q[: j + 1]
                h += to_numpy(c)
            H[: j + 1, j] = h
            _, beta = _unit(w, xp)
            done = beta <= floor * max(1.0, float(np.abs(h).max())) or used >= n_iter
            if beta > 0:
                Q[j + 1] = w / beta
            if done:
                break
        m = j + 1
        upper = np.triu(H[:m, :m])
        theta, S = np.linalg.eigh(upper + np.triu(upper, 1).T)
        residual = beta * np.abs(S[m - 1])  # |B y_i - theta_i y_i| for each Ritz pair
        if done or residual[-1] <= tol * theta[-1]:
            break
        kept = min(_KEPT, m - 1)
        Q[:kept] = xp.asarray(S[:, -kept:].T, dtype=dtype) @ Q[:m]
        Q[kept] = Q[m]
        H[:] = 0.0
        H[:kept, :kept] = np.diag(theta[-kept:])  # the couplings beta S[m-1, i] come with column kept
        first = kept
    x, _ = _unit(xp.asarray(S[:, -1], dtype=dtype) @ Q[:m], xp)
    return scale * math.sqrt(max(float(theta[-1]), 0.0)), x.reshape(shape)


class _LayerOperator:
    """The linear part of an affine layer at a given input shape: A v = jvp(0, v)[1], A^T u = backward(u).

    The layer runs in eval mode (batch norm with its running statistics, no dropout); its mode and
    gradients are restored by :meth:`close`.
    """

    def __init__(self, layer, in_shape, dtype):
        self.layer = layer
        self.x0 = None
        self.in_shape = tuple(in_shape)
        self.dtype = dtype
        self.modes = [(sub, sub.training) for _, sub in layer.named_layers()]
        self.grads = [(sub, {k: g.copy() for k, g in sub.grads.items()}) for _, sub in layer.named_layers()]
        layer.eval()

    def A(self, v):
        if self.x0 is None:
            self.x0 = get_xp(v).zeros_like(v)
        _, tv = self.layer.jvp(self.x0, v)
        return tv

    def AT(self, u):
        return self.layer.backward(u)

    def close(self):
        for sub, mode in self.modes:
            sub.training = mode
        for sub, grads in self.grads:
            sub.grads = grads


def _layer_device(layer):
    for p in list(layer.named_parameters().values()) + list(layer.named_buffers().values()):
        return get_xp(p), p.dtype
    return np, np.dtype(np.float64)


def _check_affine(layer, v, A):
    """Refuse a layer that is not affine at the scale of v: forward(v) - forward(0) must be A v (its jvp at 0).

    A relu network gave 0 (relu'(0) = 0), a tanh one the norm of its Jacobian at 0, max pooling 1: numbers of
    a linearisation at 0, not of the layer. The tolerance sqrt(eps) of the dtype, relative to |forward(v)| +
    |forward(0)|, is far above the rounding of an affine layer's two passes and far below the change of a
    relu or tanh network on a standard normal v.
    """
    xp = get_xp(v)
    with no_cache(layer):
        f1 = layer.forward(v)
        f0 = layer.forward(xp.zeros_like(v))
    Av = A(v)

    def norm(a):
        return float(row_norms(a.astype(xp.float64).reshape(1, -1))[0])

    gap, scale = norm(f1 - f0 - Av), norm(f1) + norm(f0)
    if gap > math.sqrt(float(np.finfo(v.dtype).eps)) * scale:
        names = sorted({type(sub).__name__ for _, sub in layer.named_layers() if not isinstance(sub, _AFFINE + (
            Sequential,))})
        raise ValueError(f"op must be affine in its input, but {type(layer).__name__} is not: f(v) - f(0) differs "
                         f"from its linear part at 0 by {gap / max(scale, 1e-300):.2g} relative"
                         + (f" (non-affine layers: {', '.join(names)})" if names else "")
                         + "; for a network use lipschitz_upper_bound or local_lipschitz")


def spectral_norm(op, in_shape=None, *, adjoint=None, n_iter=500, tol=1e-10, rng=None, return_vector=False):
    r"""The operator norm sigma_max(A) by Lanczos iteration on A^T A (thick restarts).

    Parameters
    ----------
    op : 2-D array, Layer, or callable
        A matrix M (A v = M v); or a layer that is affine in its input (Linear, Conv2d with its
        stride, padding, dilation and groups, BatchNorm2d in eval mode, pooling by averages,
        Flatten, or a Sequential of those), whose linear part A v = ``layer.jvp(0, v)[1]`` and
        adjoint A^T u = ``layer.backward(u)`` are used (the layer runs in eval mode; its mode and
        gradients are restored; a layer with f(v) - f(0) != A v for the random start v, a relu
        or tanh network, max pooling, is refused with a ValueError); or a callable A with
        ``adjoint`` its transpose.
    in_shape : tuple, optional
        The shape of one input without the batch axis: (H, W, C) for a convolution (required),
        (d_in,) for a Linear layer (default), the vector shape for a callable (required).
    adjoint : callable, optional
        A^T, for a callable ``op``.
    n_iter : int
        At most this many products with A^T A (one with A and one with A^T each).
    tol : float
        Stop when the residual |A^T A v - sigma^2 v| of the top Ritz pair falls below
        ``tol`` sigma^2: sigma is then within tol/2 of a singular value, relative (the largest,
        for a random start). A tol below 10 eps of the dtype counts as that.
    rng : None, int or Generator
        The random start (drawn on the host).
    return_vector : bool
        Also return the last iterate v (of shape (1,) + in_shape for a layer), close to the top
        right singular vector.

    Returns
    -------
    float, or (float, array)

    Notes
    -----
    The estimate is the top Ritz value of A^T A on a Krylov space of a random start: it increases
    to sigma_max(A) and never exceeds it (an estimate from below, in every rounding-free step).
    Lanczos converges where the power method crawls, at a clustered top of the spectrum: a random
    3 x 3 convolution has sigma_2 / sigma_1 up to 0.9998, where 500 power steps leave an error
    of 1e-5 and Lanczos reaches 1e-15 in about 150 products. :func:`conv_norm_bound` gives a
    certified upper bound for a convolution.

    References
    ----------
    1. K. Wu and H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
       SIAM J. Matrix Anal. Appl. 22 (2000) (the restarts).

    Examples
    --------
    >>> import numpy as np
    >>> round(spectral_norm(np.diag([3.0, 1.0, 0.5]), rng=0), 8)
    3.0
    """
    n_iter = check_integer(n_iter, "n_iter", minimum=1)
    tol = check_nonnegative(tol, "tol")
    rng = check_random_state(rng)
    if in_shape is not None:
        in_shape = _check_in_shape(in_shape)
    closer = None
    if isinstance(op, Layer):
        xp, dtype = _layer_device(op)
        if in_shape is None:
            if isinstance(op, Linear):
                in_shape = (op.in_features,)
            else:
                raise ValueError(f"in_shape (the shape of one input, e.g. (H, W, C)) is required for "
                                 f"{type(op).__name__}")
        shape = (1,) + tuple(in_shape)
        operator = _LayerOperator(op, in_shape, dtype)
        A, AT, closer = operator.A, operator.AT, operator.close
    elif callable(op):
        if adjoint is None or not callable(adjoint):
            raise ValueError("a callable op needs its transpose as adjoint=")
        if in_shape is None:
            raise ValueError("in_shape (the shape of the vectors op acts on) is required for a callable op")
        xp, dtype, shape = np, np.dtype(np.float64), tuple(in_shape)
        A, AT = op, adjoint
    else:
        if isinstance(op, (str, bytes)) or not hasattr(op, "__len__") and not hasattr(op, "shape"):
            raise ValueError(f"op must be a 2-D array (a matrix), a Layer or a callable, got {type(op).__name__}")
        M = check_array(op, "op")  # finite, real
        xp = get_xp(M)
        if M.ndim != 2:
            raise ValueError(f"op must be a 2-D array (a matrix), a Layer or a callable, got an array of shape "
                             f"{tuple(M.shape)}")
        if 0 in M.shape:  # no top singular vector to return; numpy failed on an empty reduction
            raise ValueError(f"op must have at least one row and one column, got shape {tuple(M.shape)}")
        dtype, shape = (M.dtype if M.dtype.kind == "f" else np.dtype(np.float64)), (M.shape[1],)
        M = M.astype(dtype, copy=False)
        A, AT = (lambda v: M @ v), (lambda u: M.T @ u)
    v = xp.asarray(rng.standard_normal(shape).astype(dtype))
    try:
        if closer is not None:
            _check_affine(op, v, A)
        sigma, v = _lanczos(A, AT, v, n_iter, tol)
    finally:
        if closer is not None:
            closer()
    return (sigma, v) if return_vector else sigma


def _conv_parts(W, groups, dilation):
    if isinstance(W, Conv2d):
        return W.params["W"], W.groups, W.dilation
    W = check_array(W, "W")  # real and finite (NaN stopped the SVD, complex parts were dropped)
    if W.ndim != 4:
        raise ValueError(f"W must be a convolution kernel of shape (KH, KW, C_in / groups, C_out), got shape "
                         f"{tuple(W.shape)}")
    groups = check_integer(groups, "groups", minimum=1)
    if W.shape[3] % groups:
        raise ValueError(f"W has C_out = {W.shape[3]} output channels, not a multiple of groups={groups}")
    if isinstance(dilation, numbers.Integral) and not isinstance(dilation, bool):
        dilation = (int(dilation), int(dilation))
    if not (isinstance(dilation, (tuple, list)) and len(dilation) == 2):
        raise ValueError(f"dilation must be an int >= 1 or a pair of them, got {dilation!r}")
    return W, groups, tuple(check_integer(d, "dilation", minimum=1) for d in dilation)


def conv_singular_values(W, shape, *, groups=1, dilation=1):
    r"""All singular values of the circular convolution by W of H x W images, by FFT.

    Parameters
    ----------
    W : array of shape (KH, KW, C_in / groups, C_out), or a Conv2d
        The kernel (a Conv2d gives its weights, groups and dilation; its padding and stride play
        no part: the operator here is the circular, stride-1 convolution).
    shape : (H, W)
        The periodic grid (the image size).
    groups, dilation : int
        As for :class:`~shallow.cnn.conv.Conv2d`.

    Returns
    -------
    array of shape (H, W, r)
        At frequency (u, v), the singular values of the (C_in / G) x (C_out / G) matrices
        P_g(u, v) = sum_{i, j} W[i, j] exp(-2 pi i (u d i / H + v d j / W)) of the G = ``groups``
        groups (g-th block of output channels), in decreasing order: r = G min(C_in / G, C_out / G),
        the groups' values concatenated and sorted (r = min(C_in, C_out) for G = 1). The
        operator, from R^{H W C_in} to R^{H W C_out}, has exactly these singular values (and
        zeros up to its dimensions). In float64 whatever W's dtype (the kernel is cast before its
        FFT: a bound to certify is computed at the better precision), on W's device.

    Notes
    -----
    The circular cross-correlation y[p] = sum_{i, j} W[i, j]^T x[(p + d (i, j)) mod (H, W)] is
    block-diagonalised by the 2-D DFT (Sedghi, Gupta and Long 2019, Theorem 6): each frequency
    gives one block, the kernel's DFT (or its conjugate: same singular values). Kernel taps
    beyond the grid wrap around (added modulo H and W).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.zeros((3, 3, 1, 1)); W[1, 1] = 2.0    # 2 x identity
    >>> float(conv_singular_values(W, (4, 4)).max())
    2.0
    """
    W, groups, (dh, dw) = _conv_parts(W, groups, dilation)
    xp = get_xp(W)
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(f"shape must be the grid (H, W), got {shape!r}")
    H, Wd = (check_integer(s, "shape", minimum=1) for s in shape)
    KH, KW, cg, Co = W.shape
    og = Co // groups
    P = xp.zeros((H, Wd, cg, Co), dtype=xp.float64)
    for i in range(KH):
        for j in range(KW):
            P[(dh * i) % H, (dw * j) % Wd] += W[i, j].astype(xp.float64)
    F = xp.fft.fft2(P, axes=(0, 1))  # (H, W, cg, Co)
    values = [xp.linalg.svd(F[..., g * og:(g + 1) * og], compute_uv=False) for g in range(groups)]
    s = xp.concatenate(values, axis=-1) if groups > 1 else values[0]
    return -xp.sort(-s, axis=-1)


def conv_norm_bound(layer, in_shape):
    r"""A certified upper bound of the operator norm of a zero-padded Conv2d on (H, W, C) inputs.

    Parameters
    ----------
    layer : Conv2d
    in_shape : (H, W) or (H, W, C)

    Returns
    -------
    float
        max over frequencies of the largest singular value of the circular convolution on the
        padded grid (H + pt + pb) x (W + pl + pr) (:func:`conv_singular_values`).

    Notes
    -----
    The zero-padded convolution is E (zero extension to the padded grid, an isometry), then the
    circular convolution C on that grid (no tap wraps around for the outputs kept), then S
    (keeping the outputs of the stride, a coordinate restriction): A = S C E, so |A| <= |C|.
    """
    if not isinstance(layer, Conv2d):
        raise TypeError(f"layer must be a Conv2d, got {type(layer).__name__}")
    if not isinstance(in_shape, (tuple, list)) or len(in_shape) not in (2, 3):
        raise ValueError(f"in_shape must be (H, W) or (H, W, C), got {in_shape!r}")
    in_shape = _check_in_shape(in_shape)
    if len(in_shape) == 3 and in_shape[2] != layer.in_channels:
        raise ValueError(f"in_shape {in_shape} has C={in_shape[2]} channels but the convolution takes "
                         f"in_channels={layer.in_channels}")
    H, W = in_shape[:2]
    pt, pb, pl, pr = layer.padding
    return float(conv_singular_values(layer, (H + pt + pb, W + pl + pr)).max())


# ============================================================================= Lipschitz bounds

#: Slope ranges [lo, hi] of the activations of :mod:`shallow.activations` that are Lipschitz.
#: gelu(t) = t Phi(t) has gelu'' = phi(t) (2 - t^2): its slopes are extreme at t = +-sqrt(2), where
#: gelu'(sqrt(2)) = Phi(sqrt(2)) + e^{-1} / sqrt(pi) = 1.1289 and gelu'(-sqrt(2)) = 1 - gelu'(sqrt(2)) = -0.1289.
_GELU_MAX_SLOPE = 0.5 * (1.0 + math.erf(1.0)) + math.exp(-1.0) / math.sqrt(math.pi)
_SLOPES = {"relu": (0.0, 1.0), "tanh": (0.0, 1.0), "sigmoid": (0.0, 0.25), "softplus": (0.0, 1.0),
           "erf": (0.0, 2.0 / math.sqrt(math.pi)), "abs": (-1.0, 1.0),
           "gelu": (1.0 - _GELU_MAX_SLOPE, _GELU_MAX_SLOPE)}

_AFFINE = (Conv2d, Linear, BatchNorm2d, AvgPool2d, GlobalAvgPool2d, Flatten, Identity, Dropout, SpaceToDepth,
           InjectivePad)


def _elements(layer, shape):
    """Flatten a network into ("lin", layer, in_shape), ("act", c) and ("opq", layer, in_shape) items.

    Returns (items, out_shape); shapes are those of one input (no batch axis).
    """
    if isinstance(layer, Sequential):
        items = []
        for sub in layer.layers:
            more, shape = _elements(sub, shape)
            items += more
        return items, shape
    if isinstance(layer, IRevNet):  # f = head o body, no scale between them
        body, shape = _elements(layer.body, shape)
        head, shape = _elements(layer.head, shape)
        return body + head, shape
    xp, dtype = _layer_device(layer)
    out_shape = tuple(layer.forward(xp.zeros((1,) + tuple(shape), dtype=dtype)).shape[1:])
    if isinstance(layer, _AFFINE):
        return [("lin", layer, tuple(shape))], out_shape
    if isinstance(layer, Activation):
        name = layer.sigma.name
        if name == "relu_power" and layer.sigma.params.get("alpha") == 1.0:
            name = "relu"
        if name not in _SLOPES:
            raise ValueError(f"the activation {layer.sigma!r} is not globally Lipschitz or its slopes are not "
                             f"tabulated; known: {', '.join(_SLOPES)}")
        lo, hi = _SLOPES[name]
        if lo >= 0:
            return [("act", hi)], out_shape
        return [("opq", layer, tuple(shape))], out_shape
    if isinstance(layer, (MaxPool2d, Residual, Model, RevBlock, ScatteringLayer)):
        return [("opq", layer, tuple(shape))], out_shape
    raise ValueError(f"no Lipschitz bound is known for a layer of type {type(layer).__name__}")


#: The largest number of columns (rows, if fewer) of the dense matrix of a merged product of affine layers that
#: ``bound="averaged", method="fft"`` forms to bound its norm; a larger product is bounded by the product of its
#: factors' certified norms.
_DENSE_MAX = 1024
#: ... and the largest number of its entries (128 MB in float64).
_DENSE_ENTRIES = 2 ** 24
#: The unit inputs (or outputs) per pass that builds that matrix: a pass holds the activations of every layer of the
#: product for this many images, which the bounds above do not limit (a wide layer inside a product of small ends).
_DENSE_BLOCK = 32
#: The relative margin added to a norm computed from a dense matrix in float64: above the rounding of the passes
#: that build the matrix and of its Gram matrix's top eigenvalue, (fan-in + r) eps = 1e-12 at the sizes allowed.
_DENSE_MARGIN = 1e-10


def _float64_copy(layers):
    """A float64 copy of a list of layers (parameters and buffers cast; the originals untouched)."""
    import copy

    net = copy.deepcopy(Sequential(*layers))
    for _, sub in net.named_layers():
        sub.params = {k: v.astype(np.float64) for k, v in sub.params.items()}
        sub.buffers = {k: v.astype(np.float64) for k, v in sub.buffers.items()}
    return net


def _dense_gram_norm(layers, in_shape):
    """sigma_max of the linear part A of a composition of affine layers, from the dense matrix, or None if too large.

    The matrix is built in float64 from d jvp passes at 0 on the unit inputs (A^T from m backward passes on the
    unit outputs when the output is smaller), _DENSE_BLOCK of them per pass, and sigma_max^2 is the top eigenvalue
    of the r x r Gram matrix of its smaller side, r = min(d, m).
    """
    net = _float64_copy(layers)
    net.eval()
    xp, _ = _layer_device(net)
    d = math.prod(in_shape)
    with no_cache(net):
        out_shape = tuple(net.forward(xp.zeros((1,) + tuple(in_shape))).shape[1:])
    m = math.prod(out_shape)
    r = min(d, m)
    if r > _DENSE_MAX or d * m > _DENSE_ENTRIES:
        return None
    E = xp.eye(r)  # (r, r): the unit inputs (d <= m) or outputs
    M = xp.empty((r, d * m // r))  # (r, max(d, m)): rows A e_i (d <= m) or A^T e_j
    for i in range(0, r, _DENSE_BLOCK):
        U = E[i:i + _DENSE_BLOCK]
        if d <= m:
            _, block = net.jvp(xp.zeros((U.shape[0],) + tuple(in_shape)), U.reshape((-1,) + tuple(in_shape)))
        else:
            net.forward(xp.zeros((U.shape[0],) + tuple(in_shape)))
            block = net.backward(U.reshape((-1,) + out_shape))
        M[i:i + U.shape[0]] = block.reshape(U.shape[0], -1)
    lam = float(xp.linalg.eigvalsh(M @ M.T)[-1])
    return math.sqrt(max(lam, 0.0)) * (1.0 + _DENSE_MARGIN)


class _Bounds:
    """Norms of the pieces, with the settings of one call of lipschitz_upper_bound."""

    def __init__(self, method, n_iter, tol, rng):
        self.method, self.n_iter, self.tol, self.rng = method, n_iter, tol, rng

    def affine(self, layer, shape):
        """The operator norm (an estimate or a bound, by ``method``) of one affine layer's linear part."""
        if isinstance(layer, (Flatten, Identity, Dropout, SpaceToDepth, InjectivePad)):
            return 1.0  # isometries (a permutation of coordinates; zero channels appended)
        if isinstance(layer, GlobalAvgPool2d):
            return 1.0 / math.sqrt(shape[0] * shape[1])
        if isinstance(layer, BatchNorm2d):
            xp = get_xp(layer.buffers["running_var"])
            a = 1.0 / xp.sqrt(layer.buffers["running_var"].astype(xp.float64) + layer.eps)
            if "gamma" in layer.params:
                a = a * xp.abs(layer.params["gamma"])
            return float(a.max())
        if isinstance(layer, Linear):
            if self.method == "fft":
                W = layer.params["W"]
                return float(get_xp(W).linalg.svd(W.astype(np.float64), compute_uv=False)[0])
            return spectral_norm(layer, n_iter=self.n_iter, tol=self.tol, rng=self.rng)
        if isinstance(layer, Conv2d) and self.method == "fft":
            return conv_norm_bound(layer, shape)
        if isinstance(layer, AvgPool2d) and self.method == "fft":
            (KH, KW), (sh, sw) = layer.kernel_size, layer.stride
            m = math.ceil(KH / sh) * math.ceil(KW / sw)
            return math.sqrt(m / layer._smallest_divisor(shape))  # KH KW unless ceil_mode windows run past the input
        return spectral_norm(layer, shape, n_iter=self.n_iter, tol=self.tol, rng=self.rng)

    def opaque(self, layer, shape, bound):
        """The Lipschitz constant (bound) of a nonlinear piece that ends chains."""
        if isinstance(layer, MaxPool2d):
            (KH, KW), (sh, sw) = layer.kernel_size, layer.stride
            return math.sqrt(math.ceil(KH / sh) * math.ceil(KW / sw))
        if isinstance(layer, Activation):
            return max(abs(s) for s in _SLOPES[layer.sigma.name])
        if isinstance(layer, Residual):
            return self.network(layer.body, shape, bound) + self.network(layer.shortcut, shape, bound)
        if isinstance(layer, RevBlock):  # module notes: the largest eigenvalue of [[0, 1], [1, L(F)]]
            H, W, C = shape
            L = self.network(layer.F, (H, W, C // 2), bound)
            return (L + math.sqrt(L * L + 4.0)) / 2.0
        if isinstance(layer, ScatteringLayer):  # certified (Scattering2D.lipschitz_bound), whatever the method
            return layer.scattering.lipschitz_bound()
        if isinstance(layer, Model):
            total = self.network(layer.net, shape, bound)
            if layer.other is not None:
                total += self.network(layer.other, shape, bound)
            return layer._u * total
        raise AssertionError(type(layer))  # pragma: no cover

    def merged(self, layers, shapes, norms):
        """|A_n ... A_1| of consecutive affine layers: min(spectral_norm's estimate, product of their norms);
        with method "fft" (one layer or more) min(the dense matrix's norm plus its rounding margin, product of their
        certified norms)."""
        product = float(np.prod(norms)) if norms else 1.0
        if self.method == "fft" and layers:  # a single layer too: its dense norm is below its FFT bound
            dense = _dense_gram_norm(layers, shapes[0])
            return product if dense is None else min(dense, product)
        if len(layers) <= 1:
            return product
        estimate = spectral_norm(Sequential(*layers), shapes[0], n_iter=self.n_iter, tol=self.tol, rng=self.rng)
        return min(estimate, product)

    def inverse(self, layer, shape, bound):
        """A Lipschitz constant of the inverse of an invertible layer (module notes)."""
        if isinstance(layer, IRevNet):
            layer = layer.body
        if isinstance(layer, InvertibleSequential):
            total = 1.0
            for sub in layer.layers:
                total *= self.inverse(sub, shape, bound)
                shape = sub.output_shape(shape)
            return total
        if isinstance(layer, (SpaceToDepth, InjectivePad)):
            return 1.0  # a permutation; the projection P^T dropping the zero channels
        if isinstance(layer, RevBlock):  # [[L, 1], [1, 0]]: the same norm as the block's [[0, 1], [1, L]]
            return self.opaque(layer, shape, bound)
        raise ValueError(f"no Lipschitz bound of the inverse is known for a layer of type {type(layer).__name__}: "
                         f"inverse=True takes an IRevNet, an InvertibleSequential, a RevBlock, SpaceToDepth or "
                         f"InjectivePad")

    def network(self, layer, shape, bound):
        items, _ = _elements(layer, shape)
        if bound == "product":
            total = 1.0
            for item in items:
                if item[0] == "lin":
                    total *= self.affine(item[1], item[2])
                elif item[0] == "act":
                    total *= item[1]
                else:
                    total *= self.opaque(item[1], item[2], bound)
            return total
        total, chunk = 1.0, []
        for item in items + [None]:
            if item is None or item[0] == "opq":
                total *= self.chain(chunk)
                chunk = []
                if item is not None:
                    total *= self.opaque(item[1], item[2], bound)
            else:
                chunk.append(item)
        return total

    def chain(self, items):
        """The Combettes-Pesquet bound of A_m R ... R A_1 (module notes) for one chunk without opaque pieces."""
        if not items:
            return 1.0
        blocks, scale = [[]], 1.0  # blocks[k]: the affine layers (layer, shape) between activations
        for item in items:
            if item[0] == "act":
                scale *= item[1]
                blocks.append([])
            else:
                blocks[-1].append((item[1], item[2]))
        norms = [[self.affine(layer, shape) for layer, shape in block] for block in blocks]
        m = len(blocks)
        cache = {}

        def M(k, n):  # norm of blocks k .. n-1 merged
            if (k, n) not in cache:
                layers = [layer for block in blocks[k:n] for layer, _ in block]
                shapes = [shape for block in blocks[k:n] for _, shape in block]
                cache[(k, n)] = self.merged(layers, shapes, [v for nb in norms[k:n] for v in nb])
            return cache[(k, n)]

        a = [1.0]
        for n in range(1, m + 1):
            a.append(sum(a[k] * 2.0 ** (-(n - k - 1) - (k > 0)) * M(k, n) for k in range(n)))
        return scale * a[m]


def lipschitz_upper_bound(model, in_shape=None, *, bound="product", method="power", n_iter=500, tol=1e-10,
                          rng=0, inverse=False):
    r"""An upper bound of the Euclidean Lipschitz constant of a network in eval mode (or of its inverse).

    The bound is certified with ``method="fft"``, for both bounds: ``"product"`` multiplies certified
    norms of the layers, and ``"averaged"`` takes the norm of each product of consecutive affine layers
    from its dense matrix (formed in float64 when its smaller side has at most 1024 entries, the top
    eigenvalue of its Gram matrix, plus 1e-10 relative for rounding) or else from the product of the
    certified norms of its factors. The default, ``method="power"``, puts estimates from below of the
    layers' norms, and of the merged products (:func:`spectral_norm`, to tol/2 relative), into the same
    formulas: it is above the network's constant in practice (the product of norms is loose), but not
    guaranteed to be.

    Parameters
    ----------
    model : Layer
        A :class:`~shallow.cnn.models.Model`, an :class:`~shallow.cnn.revnet.IRevNet`, or a network
        of Sequential, Conv2d, Linear, BatchNorm2d, pooling, Flatten, Dropout, Residual, RevBlock,
        SpaceToDepth, InjectivePad, ScatteringLayer and Lipschitz activations. A
        :class:`~shallow.cnn.scattering.ScatteringClassifier` is not a layer (and its optional log
        features are 1 / log_eps-Lipschitz at best): bound its ``scattering`` alone.
    in_shape : tuple, optional
        One input's shape, (H, W, C) for images (default, and the only one allowed when the model
        has one: ``model.in_shape``).
    bound : {"product", "averaged"}
        The product of the layers' constants, or the Combettes-Pesquet bound over chains of
        affine maps and activations with slopes in [0, c] (module notes); "averaged" is never
        above "product" (with the same method).
    method : {"power", "fft"}
        Norms of convolutions (and linear and average-pooling layers) by :func:`spectral_norm`
        (Lanczos iteration, named "power" after the power method it replaced; an estimate from
        below, to tol/2 relative: within 1.3e-15 of the SVD for the first convolution of
        ``vgg_small((8, 8, 1), 10, width=4, rng=0)``, whose top two singular values are 3.2e-5
        apart and where 500 power steps stopped 1.7e-5 below), or by certified upper bounds (the FFT bound of
        :func:`conv_norm_bound`, the SVD, sqrt(overlap / window) for average pooling). The
        products of consecutive affine layers of ``"averaged"`` are by :func:`spectral_norm`
        (``"power"``) or from their dense matrices (``"fft"``, Notes), capped by the product of the
        factors' norms.
    n_iter, tol, rng
        Settings of :func:`spectral_norm`.
    inverse : bool
        False (the default): the network x -> f(x). True: its inverse, for an invertible network
        (an :class:`~shallow.cnn.revnet.IRevNet`, whose body Phi is then bounded, its head left
        out; an :class:`~shallow.cnn.revnet.InvertibleSequential` or one of its layers): a Lipschitz
        constant L^- of z -> Phi^{-1}(z), on the whole feature space (the injective padding's inverse
        is the projection dropping its zero channels). It makes Phi bi-Lipschitz:
        |x - x'| / L^- <= |Phi(x) - Phi(x')| (Notes).

    Returns
    -------
    float

    Notes
    -----
    Constants used: relu, tanh, softplus 1, sigmoid 1/4, erf 2/sqrt(pi), abs 1, gelu
    Phi(sqrt(2)) + e^{-1}/sqrt(pi) = 1.1289 (its slope at sqrt(2); gelu and abs end chains of
    ``"averaged"``, their slopes taking negative values); max pooling with
    windows KH x KW and strides (sh, sw): sqrt(ceil(KH/sh) ceil(KW/sw)) (each input lies in at
    most that many windows, and a max is 1-Lipschitz for the largest coordinate change), 1 for
    non-overlapping windows; batch normalisation in eval mode max_c |gamma_c| / sqrt(v_c + eps);
    global average pooling 1/sqrt(H W); a residual block L(body) + L(shortcut); a coupling block
    (L(F) + sqrt(L(F)^2 + 4)) / 2 (module notes); space-to-depth and injective padding 1; a centred
    Model u (L(h) + L(h_0)) with u its output scale; a scattering layer
    :meth:`Scattering2D.lipschitz_bound() <shallow.cnn.scattering.Scattering2D.lipschitz_bound>`
    (about 2^{-J}; twice that with reflect padding), certified with either method.

    ``bound="averaged", method="fft"``: each merged product A = A_n ... A_{k+1} has its dense matrix
    (d_in x d_out) built in float64 from jvp passes at 0 on the unit inputs (backward passes on the
    unit outputs when fewer), and |A| = sqrt(lambda_max(G)) with G its r x r Gram matrix, r =
    min(d_in, d_out) <= 1024 (and at most 2^24 entries): exact in exact arithmetic, computed to a
    relative error of order (fan-in + r) eps_64 <= 1e-12 (Weyl's inequality for the eigenvalue), and
    inflated by 1e-10 relative to cover it. A larger product takes the product of its factors' certified
    norms; if every product does, the bound is that of ``"product"``.

    Inverse (``inverse=True``). The inverse of a coupling block, x_2 = S^{-1} y_1,
    x_1 = S^{-1}(y_2 - F(x_2)), has |dx_2| = |dy_1| and |dx_1| <= L(F) |dy_1| + |dy_2|: the matrix
    [[L(F), 1], [1, 0]] on (|dy_1|, |dy_2|), of the same norm (L(F) + sqrt(L(F)^2 + 4)) / 2 as the
    block's (module notes), attained for F = c S by [[-c, 1], [1, 0]] (x) S^{-1}. Space-to-depth is a
    permutation, the padding's inverse a projection (1-Lipschitz); the bound of Phi^{-1} is the product
    over the layers, with L(F) by ``bound`` and ``method`` (certified with ``method="fft"``).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn import Linear, Sequential, Activation
    >>> net = Sequential(Linear(3, 4, rng=0), Activation("relu"), Linear(4, 2, rng=1))
    >>> lipschitz_upper_bound(net, (3,), bound="averaged") <= lipschitz_upper_bound(net, (3,)) + 1e-9
    True
    >>> from shallow.cnn import irevnet_small
    >>> inet = irevnet_small((4, 4, 1), 3, width=4, blocks=1, rng=0)
    >>> lipschitz_upper_bound(inet, inverse=True, method="fft") >= 1.0   # Phi^{-1}: z -> x
    True
    """
    check_layer(model)
    if bound not in ("product", "averaged"):
        raise ValueError(f"bound must be 'product' or 'averaged', got {bound!r}")
    if method not in ("power", "fft"):
        raise ValueError(f"method must be 'power' (estimates by Lanczos iteration) or 'fft' (certified bounds), "
                         f"got {method!r}")
    model_shape = getattr(model, "in_shape", None)
    if in_shape is None:
        in_shape = model_shape
        if in_shape is None:
            raise ValueError("in_shape (one input's shape, e.g. (H, W, C)) is required for a model without in_shape")
    in_shape = _check_in_shape(in_shape)
    if model_shape is not None and in_shape != tuple(model_shape):
        raise ValueError(f"in_shape {in_shape} is not the model's in_shape {tuple(model_shape)}: the bound (the "
                         "convolutions' norms depend on the image size) is for the inputs the model takes; "
                         "leave in_shape=None")
    n_iter = check_integer(n_iter, "n_iter", minimum=1)
    tol = check_nonnegative(tol, "tol")
    inverse = check_bool(inverse, "inverse")
    if inverse and len(in_shape) != 3:
        raise ValueError(f"inverse=True bounds an invertible network of images: in_shape must be (H, W, C), got "
                         f"{in_shape}")
    bounds = _Bounds(method, n_iter, tol, check_random_state(rng))
    modes = [(sub, sub.training) for _, sub in model.named_layers()]
    grads = [(sub, {k: g.copy() for k, g in sub.grads.items()}) for _, sub in model.named_layers()]
    model.eval()
    try:
        if inverse:
            return bounds.inverse(model, in_shape, bound)
        if isinstance(model, Model):
            return bounds.opaque(model, in_shape, bound)
        return bounds.network(model, in_shape, bound)
    finally:
        for sub, mode in modes:
            sub.training = mode
        for sub, g in grads:
            sub.grads = g


# ============================================================================= input derivatives

class _EvalMode:
    """Run a model in eval mode (restoring its mode and its parameter gradients on exit)."""

    def __init__(self, model):
        self.model = check_layer(model)

    def __enter__(self):
        self.modes = [(sub, sub.training) for _, sub in self.model.named_layers()]
        self.grads = [(sub, {k: g.copy() for k, g in sub.grads.items()}) for _, sub in self.model.named_layers()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for sub, mode in self.modes:
            sub.training = mode
        for sub, g in self.grads:
            sub.grads = g
        return False


def _images(model, X, name="X", empty=False):
    """X checked against the model (finite, its image shape and dtype); no images refused unless ``empty``."""
    check_layer(model)
    X = check_images(X, name, getattr(model, "in_shape", None), dtype=model.dtype)
    if not empty and X.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {tuple(X.shape)}): there is nothing to attack or measure")
    return X


def input_jacobian(model, X, *, batch_size=256):
    r"""The input-output Jacobians J_f(x) = df/dx of a network in eval mode, one per image.

    Parameters
    ----------
    model : Layer
        Maps (N, H, W, C) images to (N, K) outputs, or to outputs of any shape (N, ...) (a
        convolution's feature maps, a scattering layer's (N, h, w, K')), whose K = prod(...)
        coordinates per image are then taken in C order (as ``Flatten`` orders them).
    X : array of shape (N, H, W, C)
    batch_size : int

    Returns
    -------
    array of shape (N, K) + X.shape[1:]
        J[n, k] = d f_k(x_n) / dx_n, from K backward passes of the unit vectors e_k (each of the
        output's shape).
    """
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    X = _images(model, X, empty=True)
    xp = get_xp(X)
    J = None  # (N, K) + X.shape[1:], written in place: no per-batch copies, stack and concatenation
    with _EvalMode(model):
        for s in range(0, X.shape[0], batch_size):
            xb = X[s:s + batch_size]
            z = model.forward(xb)
            B, K = z.shape[0], math.prod(z.shape[1:])
            # a unit vector of the flattened output: e[:, k] = 1 on an output (N, h, w, C) set a whole
            # (w, C) slab and summed its rows (a wrong "Jacobian", 5x the norm for a convolution)
            for k in range(K):
                e = xp.zeros((B, K), dtype=z.dtype)
                e[:, k] = 1
                g = model.backward(e.reshape(z.shape))
                if J is None:
                    J = xp.empty((X.shape[0], K) + tuple(g.shape[1:]), dtype=g.dtype)
                J[s:s + batch_size, k] = g
                del g
        if J is None:  # no images: K from the output of one zero image (eval mode: no state moves)
            K = math.prod(model.forward(xp.zeros((1,) + X.shape[1:], dtype=X.dtype)).shape[1:])
            return xp.zeros((0, K) + X.shape[1:], dtype=X.dtype)
    return J


def local_lipschitz(model, X, *, reduce="max", batch_size=256):
    r"""The empirical local Lipschitz constant: the largest singular value of J_f(x) over the data.

    Parameters
    ----------
    model : Layer
    X : array of shape (N, H, W, C)
    reduce : {"max", None}
        "max" gives max_n |J_f(x_n)|_2 (a float); None the array of the N values.
    batch_size : int

    Returns
    -------
    float or array of shape (N,)

    Notes
    -----
    |J|_2 = sqrt(lambda_max(J J^T)) with J J^T the K x K Gram matrix of the Jacobian's rows
    (:func:`input_jacobian`): exact, not a power iteration. Where f is differentiable, |J_f(x)|
    is the local Lipschitz constant lim_{r -> 0} sup_{|d| <= r} |f(x + d) - f(x)| / |d|, so the
    maximum over data is a lower bound of the global Lipschitz constant.
    """
    if reduce not in ("max", None):
        raise ValueError(f"reduce must be 'max' or None, got {reduce!r}")
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    X = _images(model, X, empty=True)
    xp = get_xp(X)
    N = X.shape[0]
    if N == 0:
        raise ValueError("X holds no images: the local Lipschitz constant of no data is undefined")
    # batch by batch: the Jacobians of one batch at a time, in float64, never the (N, K, H W C) array of all
    values = []
    for s in range(0, N, batch_size):
        J = input_jacobian(model, X[s:s + batch_size], batch_size=batch_size)
        J = J.reshape(J.shape[0], J.shape[1], -1).astype(xp.float64)
        G = J @ J.transpose(0, 2, 1)  # (batch, K, K)
        del J
        values.append(xp.sqrt(xp.maximum(xp.linalg.eigvalsh(G)[:, -1], 0)))
    values = xp.concatenate(values)
    return float(values.max()) if reduce == "max" else values


def _loss_grad_z(z, y, loss, t=None):
    """Per-image loss l_n and dl_n/dz_n for logits z (N, K) and labels y (N,); with targets t (N,), the
    targeted losses -CE(z, t) and z_t - z_y."""
    if loss == "ce":
        if t is None:
            return cross_entropy_per_sample(z, y)
        value, dz = cross_entropy_per_sample(z, t)
        return -value, -dz
    xp = get_xp(z)
    rows = xp.arange(z.shape[0])
    if t is None:
        other = z.copy()
        other[rows, y] = -xp.inf
        j = xp.argmax(other, axis=1)
    else:
        j = t
    value = z[rows, j] - z[rows, y]
    dz = xp.zeros_like(z)
    dz[rows, j] = 1
    dz[rows, y] -= 1
    return value, dz


def _loss_and_input_grad(model, X, y, loss, need_grad=True, t=None):
    z = model.forward(X)
    value, dz = _loss_grad_z(z, y, loss, t)
    if not need_grad:
        return value, None, z
    return value, model.backward(dz), z


def _batched_loss_and_input_grad(model, X, y, loss, batch_size, t=None):
    """(l, g) of :func:`_loss_and_input_grad` on the whole of X, computed batch_size images at a
    time (in eval mode: each image's numbers do not depend on the others in its batch)."""
    xp = get_xp(X)
    N = X.shape[0]
    values, G = [], None
    for s in range(0, N, batch_size):
        value, g, _ = _loss_and_input_grad(model, X[s:s + batch_size], y[s:s + batch_size], loss,
                                           t=None if t is None else t[s:s + batch_size])
        if G is None:
            G = xp.empty((N,) + tuple(g.shape[1:]), dtype=g.dtype)  # (N, H, W, C)
        G[s:s + batch_size] = g
        values.append(value)
        del g
    return xp.concatenate(values), G


def input_gradient(model, X, y, *, loss="ce", batch_size=256):
    r"""The per-image loss l(x_n, y_n) and its input gradient grad_x l, in eval mode.

    Parameters
    ----------
    model : Layer
    X : array of shape (N, H, W, C)
    y : int array of shape (N,)
    loss : {"ce", "margin"}
        Cross-entropy logsumexp(f(x)) - f_y(x), or the margin max_{j != y} f_j(x) - f_y(x)
        (positive exactly when x is misclassified; its gradient is e_j* - e_y through J_f, with
        j* the first maximising class).
    batch_size : int
        Images per forward and backward pass: the memory of the passes is that of batch_size
        images, whatever N. In eval mode each image's loss and gradient are computations on that
        image alone, the same whatever batch_size, up to the rounding of the matrix products: a
        BLAS may choose its kernels (and so its order of summation) by a product's size, which
        grows with the batch (an ulp or two of the outputs).

    Returns
    -------
    (l, g) : arrays of shapes (N,) and X's shape
        Each image's own loss and gradient (not divided by N).
    """
    loss = _check_loss(loss)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    X = _images(model, X)
    with _EvalMode(model):
        y = _labels(model, X, y)
        return _batched_loss_and_input_grad(model, X, y, loss, batch_size)


# ============================================================================= attacks

def _direction(g, norm):
    """The steepest-ascent unit step for the norm: sign(g) (Linf) or g / |g|_2 per image (0 where g = 0)."""
    xp = get_xp(g)
    if norm == "inf":
        return xp.sign(g)
    n = row_norms(g.reshape(g.shape[0], -1))  # scaled by powers of 2: float32 gradients below 1e-19 underflowed
    n = xp.where(n > 0, n, 1).reshape((-1,) + (1,) * (g.ndim - 1))
    return g / n


def _project(X_adv, X0, eps, norm, clip):
    """The projection on {|x - x0| <= eps}, then on the box ``clip`` (which keeps the point in the ball)."""
    xp = get_xp(X_adv)
    e = eps.reshape((-1,) + (1,) * (X0.ndim - 1))
    d = X_adv - X0
    if norm == "inf":
        d = xp.clip(d, -e, e)
    else:
        n = row_norms(d.reshape(d.shape[0], -1)).reshape(e.shape)
        d = d * xp.minimum(1, e / xp.where(n > 0, n, 1))
    out = X0 + d
    if clip is not None:
        out = xp.clip(out, clip[0], clip[1])
    return out


def _n_classes(model, X) -> int:
    """K: the model's ``n_classes``, or the number of its outputs on the first image of X (eval mode)."""
    n_classes = getattr(model, "n_classes", None)
    if n_classes is None:
        with _EvalMode(model), no_cache(model):
            n_classes = model.forward(X[:1]).shape[1]
    return int(n_classes)


def _labels(model, X, y):
    return get_xp(X).asarray(check_labels(y, _n_classes(model, X), "y", n=X.shape[0]))


def _targets(model, X, y, target):
    """The target classes (N,) of a targeted attack, each different from the image's label; None stays None."""
    if target is None:
        return None
    xp = get_xp(X)
    t = xp.asarray(check_labels(target, _n_classes(model, X), "target", n=X.shape[0]))
    same = [int(i) for i in xp.flatnonzero(t == y)[:5]]
    if same:
        raise ValueError(f"target must differ from y (a targeted attack moves x from its class y towards class "
                         f"target), but image(s) {same} have target = y = {int(y[same[0]])}")
    return t


def fgsm(model, X, y, eps, *, norm="inf", loss="ce", clip=None, batch_size=256, target=None):
    r"""The fast gradient (sign) method: x + eps step(grad_x l(x, y)), one step, in eval mode.

    Parameters
    ----------
    model : Layer
    X : array of shape (N, H, W, C)
    y : int array of shape (N,)
    eps : float >= 0 or array of shape (N,)
        The radius of the perturbation.
    norm : {"inf", "2"}
        step = sign(g) (Goodfellow et al. 2015) or g / |g|_2.
    loss : {"ce", "margin"}
    clip : None or (lo, hi)
        Box of valid pixel values, which must contain X (a ValueError otherwise).
    batch_size : int
        Images per forward and backward pass (the memory of the passes is that of batch_size
        images); the result does not depend on it but for the rounding of the matrix products
        (:func:`input_gradient`), which a sign step (Linf) may amplify where a gradient entry is
        within rounding of 0.
    target : None or int array of shape (N,)
        None (the default): the untargeted attack above. Target classes t_n != y_n: the step
        ascends the targeted loss of :func:`pgd` (towards class t).

    Returns
    -------
    array of X's shape

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn import Flatten, Linear, Model, Sequential, predict
    >>> lin = Linear(2, 3, rng=0)
    >>> lin.params["W"][...] = [[0.0, 1.0, 0.0], [0.0, 0.0, 10.0]]; lin.params["b"][...] = [0.0, -1.0, -4.0]
    >>> model = Model(Sequential(Flatten(), lin), (1, 2, 1), 3)
    >>> x = np.zeros((1, 1, 2, 1))    # f = (0, -1, -4): class 0
    >>> fgsm(model, x, [0], 0.5, norm="2", loss="margin").ravel().tolist()   # towards class 1, the runner-up
    [0.5, 0.0]
    >>> X_adv = fgsm(model, x, [0], 0.5, norm="2", loss="margin", target=[2])
    >>> X_adv.ravel().tolist(), predict(model, X_adv).argmax(axis=1).tolist()   # f = (0, -1, 1)
    ([0.0, 0.5], [2])
    """
    norm, loss, clip = _check_norm(norm), _check_loss(loss), _check_clip(clip)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    X = _images(model, X)
    _check_in_box(X, clip)
    xp = get_xp(X)
    eps = _check_eps(eps, X.shape[0], xp, X.dtype)
    y = _labels(model, X, y)
    t = _targets(model, X, y, target)
    with _EvalMode(model):
        _, g = _batched_loss_and_input_grad(model, X, y, loss, batch_size, t)
    out = X + eps.reshape(-1, 1, 1, 1) * _direction(g, norm)
    return out if clip is None else xp.clip(out, clip[0], clip[1])


def _random_start(X, eps, norm, rng):
    """A point uniform in the eps-ball around each image (drawn on the host)."""
    xp = get_xp(X)
    N = X.shape[0]
    d = int(np.prod(X.shape[1:]))
    e = to_numpy(eps).astype(np.float64).reshape((-1,) + (1,) * (X.ndim - 1))
    if norm == "inf":
        delta = rng.uniform(-1.0, 1.0, X.shape) * e
    else:
        g = rng.standard_normal(X.shape)
        g /= np.maximum(np.sqrt((g.reshape(N, -1) ** 2).sum(1)), 1e-300).reshape(e.shape)
        delta = g * e * rng.random(N).reshape(e.shape) ** (1.0 / d)
    return X + xp.asarray(delta.astype(X.dtype))


def pgd(model, X, y, eps, *, norm="inf", steps=10, step_size=None, random_start=False, rng=None, loss="ce",
        clip=None, return_history=False, batch_size=256, target=None):
    r"""Projected gradient ascent of the loss in the eps-ball around each image (Madry et al. 2018).

    Parameters
    ----------
    model : Layer
        Run in eval mode (its mode is restored).
    X : array of shape (N, H, W, C)
    y : int array of shape (N,)
        The labels whose loss is maximised.
    eps : float >= 0 or array of shape (N,)
        Radius of the ball, for all images or one per image.
    norm : {"inf", "2"}
    steps : int >= 0
        T, the number of gradient steps.
    step_size : float > 0, optional
        s; by default 2.5 eps / T for each image (Madry et al.'s rule: the iterates can cross
        the ball in T steps).
    random_start : bool
        Start at a point uniform in the ball (drawn on the host with ``rng``) instead of x.
    rng : None, int or Generator
    loss : {"ce", "margin"}
        The per-image loss l (:func:`input_gradient`).
    clip : None or (lo, hi)
        Box of valid pixel values, which must contain X (a ValueError otherwise), intersected with
        the ball: project on the ball, then clip, which stays in the ball since x is in the box.
    return_history : bool
        Also return a dict with ``"loss"`` (T + 1, N): l(x_t) at every iterate x_0 .. x_T, and
        ``"best_loss"`` (T + 1, N): its running maximum.
    batch_size : int
        Images attacked together: the T steps run on one batch of images, then on the next, so
        that the memory of the passes is that of batch_size images whatever N. The attack of an
        image depends on that image alone (eval mode; the random starts are drawn for all images
        first), so the result does not depend on batch_size but for the rounding of the matrix
        products (:func:`input_gradient`, :func:`fgsm`).
    target : None or int array of shape (N,)
        None (the default): untargeted, the loss of y above. Target classes t_n != y_n (a
        ValueError otherwise): the attack ascends the targeted loss, f_t(x) - f_y(x) for
        ``loss="margin"`` (minus the margin of y over t: positive exactly when t beats y, and
        then x is misclassified) or -CE(f(x), t) = f_t(x) - logsumexp f(x) for ``loss="ce"``
        (the log-probability of t).

    Returns
    -------
    X_adv : array of X's shape
        For each image the iterate with the largest loss among x_0 .. x_T (the first one in case
        of ties). With T = 0 and no random start it is X itself.
    history : dict, only with ``return_history``

    Notes
    -----
    x_0 = x (or the random start), x_{t+1} = P(x_t + s step(grad_x l(x_t, y))), with step =
    sign (Linf) or g / |g|_2 (L2) and P the projection on the ball (then the box). The loss of
    the returned point, max_{t <= T} l(x_t), is non-decreasing in T. For a loss that is linear
    in x each step itself does not decrease it: for L2, P is a projection on a convex set
    containing x_t, so <g, P(x_t + s g) - x_t> >= |P(x_t + s g) - x_t|^2 / s >= 0; for Linf,
    every coordinate moves (if at all) in the direction of sign(g_i).

    With a target t and ``loss="margin"`` on a linear model f(x) = W x + b (rows w_k), the loss
    f_t - f_y = <w_t - w_y, x> + b_t - b_y is linear, its gradient constant: the iterates move along
    u = (w_t - w_y) / |w_t - w_y|_2 (L2) or sign(w_t - w_y) (Linf) and, with the default step, reach the
    maximiser x + eps u of the ball after ceil(T / 2.5) steps (without ``clip``), where the loss is
    f_t(x) - f_y(x) + eps |w_t - w_y|_* (|.|_* the dual norm: |.|_2 for L2, |.|_1 for Linf). The
    untargeted margin instead follows the currently largest wrong class, which need not be the one
    of the nearest boundary.

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn import Flatten, Linear, Model, Sequential, predict
    >>> lin = Linear(2, 3, rng=0)
    >>> lin.params["W"][...] = [[0.0, 1.0, 0.0], [0.0, 0.0, 10.0]]; lin.params["b"][...] = [0.0, -1.0, -4.0]
    >>> model = Model(Sequential(Flatten(), lin), (1, 2, 1), 3)
    >>> x = np.zeros((1, 1, 2, 1))    # f = (0, -1, -4): the boundary of class 2 is nearer (0.4) than class 1's (1)
    >>> for target in (None, [2]):
    ...     X_adv = pgd(model, x, [0], 0.5, norm="2", steps=5, loss="margin", target=target)
    ...     print(X_adv.ravel().tolist(), predict(model, X_adv).argmax(axis=1).tolist())
    [0.5, 0.0] [0]
    [0.0, 0.5] [2]
    """
    norm, loss, clip = _check_norm(norm), _check_loss(loss), _check_clip(clip)
    steps = check_integer(steps, "steps", minimum=0)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    X = _images(model, X)
    _check_in_box(X, clip)
    xp = get_xp(X)
    N = X.shape[0]
    eps = _check_eps(eps, N, xp, X.dtype)
    if step_size is None:
        if float(eps.max()) > float(np.finfo(X.dtype).max) / 2.5:  # the default step would be inf
            raise ValueError(f"eps = {float(eps.max()):g} makes the default step 2.5 eps / steps overflow "
                             f"{X.dtype.name}: pass a finite step_size")
        s = 2.5 * eps / max(steps, 1)
    else:
        s = xp.full(N, check_positive(step_size, "step_size"), dtype=X.dtype)
    s = s.reshape(-1, 1, 1, 1)
    y = _labels(model, X, y)
    t = _targets(model, X, y, target)
    rng = check_random_state(rng)
    random_start = check_bool(random_start, "random_start")
    x = _random_start(X, eps, norm, rng) if random_start else X  # x is never written in place
    if random_start:
        x = _project(x, X, eps, norm, clip)
    best = xp.empty_like(X)
    history = None
    with _EvalMode(model):
        for b in range(0, N, batch_size):
            rows = slice(b, b + batch_size)
            best[rows], losses, bests = _pgd_batch(model, X[rows], x[rows], y[rows], eps[rows], s[rows], steps,
                                                   norm, loss, clip, None if t is None else t[rows])
            if return_history:
                if history is None:
                    history = {key: xp.empty((steps + 1, N), dtype=a.dtype)  # (T + 1, N)
                               for key, a in (("loss", losses), ("best_loss", bests))}
                history["loss"][:, rows] = losses
                history["best_loss"][:, rows] = bests
    if return_history:
        return best, history
    return best


def _pgd_batch(model, X, x, y, eps, s, steps, norm, loss, clip, t=None):
    """The T steps of :func:`pgd` on one batch, from the starts x: (best iterates, losses (T + 1, B),
    running maxima (T + 1, B))."""
    xp = get_xp(X)
    losses, bests = [], []
    best, best_loss = x.copy(), None
    for step in range(steps + 1):
        value, g, _ = _loss_and_input_grad(model, x, y, loss, need_grad=step < steps, t=t)
        if best_loss is None:
            best_loss = value.copy()
        else:
            better = value > best_loss
            best[better] = x[better]
            best_loss = xp.where(better, value, best_loss)
        losses.append(value)
        bests.append(best_loss.copy())
        if step < steps:
            x = _project(x + s * _direction(g, norm), X, eps, norm, clip)
    return best, xp.stack(losses), xp.stack(bests)


def _predict(model, X, batch_size=256):
    """argmax f(x) for each image, in eval mode, batch_size images per pass, keeping no caches."""
    xp = get_xp(X)
    with _EvalMode(model), no_cache(model):
        return xp.concatenate([xp.argmax(model.forward(X[b:b + batch_size]), axis=1)
                               for b in range(0, X.shape[0], batch_size)])


def minimal_perturbation(model, X, y, *, eps_max, norm="inf", n_bisect=10, steps=20, loss="margin", clip=None,
                         batch_size=256, targets=None):
    r"""The smallest radius at which PGD changes each image's prediction, by bisection on eps.

    Parameters
    ----------
    model : Layer
    X : array of shape (N, H, W, C)
    y : int array of shape (N,)
        True labels: an attack succeeds when argmax f(x_adv) != y.
    eps_max : float > 0
        The largest radius tried.
    norm : {"inf", "2"}
    n_bisect : int >= 0
        Bisection steps: the bracket shrinks to eps_max 2^-n_bisect.
    steps : int
        PGD steps at each radius (default step 2.5 eps / steps; no random start, so that the
        search is deterministic).
    loss : {"margin", "ce"}
    clip : None or (lo, hi)
        Box of valid pixel values, which must contain X (a ValueError otherwise).
    batch_size : int
        Images per pass of the attacks and predictions (:func:`pgd`): the memory of the passes
        is that of batch_size images; the result does not depend on it but for rounding
        (:func:`pgd`).
    targets : None or "all"
        None (the default): the untargeted PGD of ``loss``. ``"all"``: for each image one
        bisection with the targeted PGD of :func:`pgd` (``target=t``) for every class t != y, and
        the smallest radius over the targets (the best over targets; K - 1 times the attacks of
        the untargeted search, on K - 1 copies of the images).

    Returns
    -------
    radius : array of shape (N,)
        0 for images misclassified already; inf where PGD fails at eps_max; otherwise a radius at
        which PGD succeeds, within eps_max 2^-n_bisect above one at which it failed (an upper
        bound of the true minimal perturbation, since PGD may miss adversarial points).
    X_adv : array of X's shape
        The successful perturbed images at those radii (X itself where radius is 0 or inf).

    Notes
    -----
    The set where y is predicted is the intersection over t != y of {f_y >= f_t}, so the distance
    from x to its complement is the smallest over t of the distances to {f_t > f_y}. For a linear
    model f(x) = W x + b these are the closed forms (f_y(x) - f_t(x)) / |w_y - w_t|_*, |.|_* the dual
    norm (|.|_2 for L2, |.|_1 for Linf), and the targeted margin PGD of each t succeeds exactly at
    the radii above its own (:func:`pgd`, Notes): ``targets="all"`` with ``loss="margin"`` returns the
    smallest point of the bisection's grid {k eps_max 2^-n_bisect} at or above the exact minimal
    perturbation, and never more than the untargeted search (whose radius is a point of the same grid
    where an adversarial point exists). The untargeted margin follows the currently largest wrong
    class, not the nearest boundary: on random 4-class linear models it overshot the exact distance by
    up to 71% (L2) and 50% (Linf).

    References
    ----------
    1. S.-M. Moosavi-Dezfooli, A. Fawzi and P. Frossard, "DeepFool: a simple and accurate method to
       fool deep neural networks", CVPR 2016, arXiv:1511.04599, Sec. 3 (the minimal perturbation of a
       multi-class affine classifier: the closest of the boundaries {f_t = f_y}, Eq. 7-8).
    2. N. Carlini and D. Wagner, "Towards evaluating the robustness of neural networks", IEEE S&P 2017,
       arXiv:1608.04644, Sec. V (targeted attacks; the best case over all targets).

    Examples
    --------
    >>> import numpy as np
    >>> from shallow.cnn import Flatten, Linear, Model, Sequential
    >>> lin = Linear(2, 3, rng=0)
    >>> lin.params["W"][...] = [[0.0, 1.0, 0.0], [0.0, 0.0, 10.0]]; lin.params["b"][...] = [0.0, -1.0, -4.0]
    >>> model = Model(Sequential(Flatten(), lin), (1, 2, 1), 3)
    >>> x = np.zeros((1, 1, 2, 1))    # f = (0, -1, -4): class 2 is nearer (0.4) than class 1 (1.0)
    >>> r, _ = minimal_perturbation(model, x, [0], eps_max=2.0, norm="2", n_bisect=10, targets="all")
    >>> float(r[0])    # the grid point 205 / 512 above 0.4
    0.400390625
    >>> float(minimal_perturbation(model, x, [0], eps_max=2.0, norm="2", n_bisect=10)[0][0])  # untargeted
    1.001953125
    """
    eps_max = check_positive(eps_max, "eps_max")
    n_bisect = check_integer(n_bisect, "n_bisect", minimum=0)
    steps = check_integer(steps, "steps", minimum=0)  # as pgd: checked here, not only once a sample is right
    norm, loss, clip = _check_norm(norm), _check_loss(loss), _check_clip(clip)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    if targets not in (None, "all"):
        raise ValueError(f"targets must be None (untargeted attacks) or 'all' (the best over every target class "
                         f"t != y), got {targets!r}")
    X = _images(model, X)
    _check_in_box(X, clip)
    xp = get_xp(X)
    N = X.shape[0]
    y = _labels(model, X, y)
    radius = xp.full(N, xp.inf, dtype=xp.float64)
    X_adv = X.copy()
    clean_wrong = _predict(model, X, batch_size) != y
    radius[clean_wrong] = 0
    idx = xp.flatnonzero(~clean_wrong)
    if idx.size == 0:
        return radius, X_adv
    kw = {"norm": norm, "steps": steps, "loss": loss, "clip": clip, "batch_size": batch_size}
    ta = None
    if targets == "all":  # one row per (image, target t != y): K - 1 rows per image
        K = _n_classes(model, X)
        if K < 2:
            raise ValueError("targets='all' needs a model of at least 2 classes")
        t = xp.arange(K - 1)[None, :]  # (1, K - 1): row n of ta is 0, ..., K - 1 without y_n, in one operation
        ta = (t + (t >= y[idx][:, None])).ravel()  # (N' (K - 1),), not a masked copy (a device read) per image
        idx = xp.repeat(idx, K - 1)
    Xa, ya = X[idx], y[idx]
    adv = pgd(model, Xa, ya, eps_max, target=ta, **kw)
    ok = _predict(model, adv, batch_size) != ya
    idx, Xa, ya, adv = idx[ok], Xa[ok], ya[ok], adv[ok]
    ta = None if ta is None else ta[ok]
    lo = xp.zeros(idx.size, dtype=xp.float64)
    hi = xp.full(idx.size, eps_max, dtype=xp.float64)
    for _ in range(n_bisect):
        if idx.size == 0:
            break
        mid = 0.5 * (lo + hi)
        trial = pgd(model, Xa, ya, mid, target=ta, **kw)
        ok = _predict(model, trial, batch_size) != ya
        hi = xp.where(ok, mid, hi)
        lo = xp.where(ok, lo, mid)
        adv[ok] = trial[ok]
    if ta is not None and idx.size:  # the smallest radius over each image's targets (the first on ties)
        # by image, then by radius, then by position (the targets' order): a total order, whatever the stability of
        # the sort (numpy's lexsort is stable, CuPy does not say)
        order = xp.lexsort(xp.stack([xp.arange(idx.size), hi, idx]))
        first = xp.concatenate([xp.ones(1, dtype=bool), idx[order][1:] != idx[order][:-1]])
        keep = order[first]
        idx, hi, adv = idx[keep], hi[keep], adv[keep]
    radius[idx] = hi
    X_adv[idx] = adv
    return radius, X_adv


def certified_radius(model, X, y, lipschitz, *, norm="2"):
    r"""The radius below which no perturbation changes the prediction of an L-Lipschitz network.

    Parameters
    ----------
    model : Layer
    X : array of shape (N, H, W, C)
    y : int array of shape (N,)
    lipschitz : float > 0
        An upper bound L of the L2 Lipschitz constant. For a certified radius take
        ``lipschitz_upper_bound(model, method="fft")``, with ``bound="product"`` or the tighter
        ``bound="averaged"`` (both certified with ``method="fft"``: module notes, What is certified).
        The default ``method="power"`` computes each norm by Lanczos iteration, an estimate from
        below, so that a bound as tight as one layer's norm (or as the averaged bound on a network
        of one or two layers) can fall short of the true constant by the iteration's error.
    norm : {"2", "inf"}
        Default ``"2"``, unlike :func:`fgsm`, :func:`pgd` and :func:`minimal_perturbation`, whose
        default is ``"inf"``: to compare this bound with an attack's radius, pass the same
        ``norm`` to both (e.g. ``norm="inf"`` here too).

    Returns
    -------
    array of shape (N,)
        max(0, m(x)) / (sqrt(2) L) for L2, divided further by sqrt(H W C) for Linf, with
        m(x) = f_y(x) - max_{j != y} f_j(x) the margin.

    Notes
    -----
    f_y - f_j = <e_y - e_j, f>, and |e_y - e_j| = sqrt(2): each margin moves by at most
    sqrt(2) L |d|_2, and |d|_2 <= sqrt(H W C) |d|_inf (Tsuzuku et al. 2018, Prop. 1). The radius is
    a guarantee exactly when L is: with a certified L it is a lower bound of the true minimal
    perturbation, which :func:`minimal_perturbation` bounds from above (``targets="all"``: from above
    within the bisection's step on a linear model); the Linf radius by the sqrt(H W C) conversion is
    loose (no interval or linear-relaxation bound, no randomized smoothing, is implemented).
    """
    norm = _check_norm(norm)
    L = check_positive(lipschitz, "lipschitz")
    X = _images(model, X)
    xp = get_xp(X)
    y = _labels(model, X, y)
    with _EvalMode(model):
        m, _ = _loss_grad_z(model.forward(X), y, "margin")
    r = xp.maximum(-m, 0) / (math.sqrt(2.0) * L)
    if norm == "inf":
        r = r / math.sqrt(int(np.prod(X.shape[1:])))
    return r


def universal_perturbation(model, X, eps, *, norm="inf", delta=0.2, max_epochs=5, batch_size=1, steps=10,
                           step_size=None, rng=None, clip=None, keep_best=False, pass_size=256):
    r"""One perturbation v with |v| <= eps that changes the predictions of most images (Alg. 1 of ref. 6).

    Parameters
    ----------
    model : Layer
    X : array of shape (N, H, W, C)
        The images v is built on.
    eps : float >= 0
        xi, the radius of the ball of v.
    norm : {"inf", "2"}
    delta : float in [0, 1)
        Stop once the fooling rate reaches 1 - delta.
    max_epochs : int
        At most this many passes over X.
    batch_size : int
        1 is Algorithm 1: images are visited one by one. Larger batches update v on the images
        of a batch that it does not fool yet, together (the gradient of the sum of their losses).
    steps : int
        Gradient steps of the inner update (in place of DeepFool): PGD on v from the current v,
        in the eps-ball, on the cross-entropy against the clean predictions, stopped as soon as
        the batch's images are all fooled.
    step_size : float, optional
        Default 2.5 eps / steps.
    rng : None, int or Generator
        The order of the images.
    clip : None or (lo, hi)
        The perturbed images x + v are clipped to this box, which must contain X (a ValueError
        otherwise).
    keep_best : bool
        Return the end-of-epoch v with the highest fooling rate on X (the first one on ties)
        rather than the last: the fooling rate of the iterates is not monotone in the epochs.
    pass_size : int
        Images per forward and backward pass (the ``batch_size`` of :func:`pgd` and the other
        attacks; here ``batch_size`` is the algorithm's): the clean predictions, each epoch's
        fooling rate on all of X and the updates on a batch are computed pass_size images at a
        time, so that the memory of the passes is that of pass_size images whatever N and
        batch_size. The result does not depend on it but for the rounding of the matrix products
        (see :func:`input_gradient`).

    Returns
    -------
    v : array of shape (H, W, C)
        The last iterate (``keep_best=False``) or the best one over the epochs.
    fooling_rate : numpy array
        The fraction of X whose prediction k(x + v) differs from k(x), after each epoch.

    Notes
    -----
    Algorithm 1 of Moosavi-Dezfooli et al.: v = 0; for each x_i with k(x_i + v) = k(x_i), find
    a small d_i with k(x_i + v + d_i) != k(x_i), and set v <- P_{p, xi}(v + d_i); repeat over the
    data until the fooling rate is at least 1 - delta. The labels are the network's own clean
    predictions k(x), as in the paper.
    """
    norm = _check_norm(norm)
    eps = check_nonnegative(eps, "eps")
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1) (the target fooling rate is 1 - delta), got {delta!r}")
    max_epochs = check_integer(max_epochs, "max_epochs", minimum=1)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    pass_size = check_integer(pass_size, "pass_size", minimum=1)
    steps = check_integer(steps, "steps", minimum=1)
    clip = _check_clip(clip)
    s = 2.5 * eps / steps if step_size is None else check_positive(step_size, "step_size")
    X = _images(model, X)
    _check_in_box(X, clip)
    xp = get_xp(X)
    rng = check_random_state(rng)
    N = X.shape[0]
    k = _predict(model, X, pass_size)
    v = xp.zeros((1,) + X.shape[1:], dtype=X.dtype)
    e = xp.full(1, eps, dtype=X.dtype)
    zero = xp.zeros_like(v)

    def perturbed(Xb, w):
        out = Xb + w
        return out if clip is None else xp.clip(out, clip[0], clip[1])

    def kept(Xb, kb, w):
        """k(x + w) == k(x) for each image of Xb, pass_size images per forward pass."""
        return xp.concatenate([xp.argmax(model.forward(perturbed(Xb[b:b + pass_size], w)), axis=1)
                               == kb[b:b + pass_size] for b in range(0, Xb.shape[0], pass_size)])

    rates = []
    best = v
    with _EvalMode(model):
        for _ in range(max_epochs):
            order = rng.permutation(N)
            for start in range(0, N, batch_size):
                idx = xp.asarray(order[start:start + batch_size])
                Xb, kb = X[idx], k[idx]
                live = kept(Xb, kb, v)
                if not bool(live.any()):
                    continue
                Xb, kb = Xb[live], kb[live]
                w = v
                for _ in range(steps):
                    _, g = _batched_loss_and_input_grad(model, perturbed(Xb, w), kb, "ce", pass_size)
                    G = g.sum(axis=0, keepdims=True)
                    w = _project(w + s * _direction(G, norm), zero, e, norm, None)
                    if not bool(kept(Xb, kb, w).any()):
                        break
                v = w
            rates.append(float((~kept(X, k, v)).mean()))  # the fooling rate
            if rates[-1] > max(rates[:-1], default=-1.0):
                best = v
            if rates[-1] >= 1 - delta:
                break
    return (best if keep_best else v)[0], np.array(rates)


# ============================================================================= spectral normalisation

class SpectralProjection:
    r"""Divide every Conv2d and Linear weight by max(1, |A| / bound): each layer becomes ``bound``-Lipschitz.

    Parameters
    ----------
    in_shape : tuple
        The network's input shape (H, W, C): the convolutions' norms depend on their input size.
    bound : float > 0
        The largest operator norm allowed per layer.
    method : {"fft", "power"}
        |A| of a convolution by the certified FFT bound (:func:`conv_norm_bound`; after the
        projection the true norm is at most ``bound``) or by :func:`spectral_norm` (an estimate from
        below). Linear layers use their exact largest singular value.

    Notes
    -----
    W <- W / max(1, sigma(W) / bound) leaves a layer within the bound untouched and scales one
    above it back onto it: the projection of Miyato et al.'s normalisation onto the set
    {sigma <= bound} along the ray of W. Biases, batch-norm and other layers are untouched: use
    networks without batch normalisation (whose eval-mode scaling is not bounded).

    Examples
    --------
    >>> from shallow.cnn import vgg_small
    >>> net = vgg_small((8, 8, 1), 10, width=4, batch_norm=False, rng=0)
    >>> project = SpectralProjection((8, 8, 1), bound=1.0)
    >>> _ = project(net)
    >>> lipschitz_upper_bound(net, (8, 8, 1), method="fft") <= 1.0 + 1e-9
    True
    """

    def __init__(self, in_shape, bound=1.0, *, method="fft"):
        if not isinstance(in_shape, (tuple, list)) or len(in_shape) not in (1, 3):
            raise ValueError(f"in_shape must be (H, W, C) (or (d,) for a network of Linear layers), got {in_shape!r}")
        self.in_shape = _check_in_shape(in_shape)
        self.bound = check_positive(bound, "bound")
        if method not in ("fft", "power"):
            raise ValueError(f"method must be 'fft' or 'power', got {method!r}")
        self.method = method
        self._shapes = None

    def _layer_shapes(self, model):
        shapes = {}
        hooks = []
        for _, layer in model.named_layers():
            if isinstance(layer, (Conv2d, Linear)):
                original = layer.forward

                def forward(x, _layer=layer, _original=original):
                    # a weak reference: it tells a layer whose id is reused, and keeps no model alive
                    shapes[id(_layer)] = (weakref.ref(_layer), tuple(x.shape[1:]))
                    return _original(x)

                layer.forward = forward
                hooks.append(layer)
        xp, dtype = _layer_device(model)
        try:
            with _EvalMode(model):
                model.forward(xp.zeros((1,) + self.in_shape, dtype=dtype))
        finally:
            for layer in hooks:
                del layer.forward
        return shapes

    def __call__(self, model):
        """Project the weights of ``model`` in place; returns the norms before, by layer name."""
        convs = [layer for _, layer in model.named_layers() if isinstance(layer, Conv2d)]
        known = self._shapes  # id -> (weak reference to the layer, its input shape)
        if known is None or not all(id(c) in known and known[id(c)][0]() is c for c in convs):
            self._shapes = self._layer_shapes(model)  # another model, or layers replaced: their input shapes again
        out = {}
        for name, layer in model.named_layers():
            if isinstance(layer, Conv2d):
                shape = self._shapes[id(layer)][1]
                if self.method == "fft":
                    sigma = conv_norm_bound(layer, shape)
                else:
                    sigma = spectral_norm(layer, shape, n_iter=50, tol=1e-6, rng=0)
            elif isinstance(layer, Linear):
                W = layer.params["W"]
                sigma = float(get_xp(W).linalg.svd(W.astype(np.float64), compute_uv=False)[0])
            else:
                continue
            if sigma > self.bound:
                layer.params["W"] *= self.bound / sigma
            out[name] = sigma
        return out


class ProjectedOptimizer(Optimizer):
    """An optimiser followed by a projection of the model after every step (for :func:`shallow.cnn.fit`).

    Parameters
    ----------
    optimizer : Optimizer
        The update (SGD, Adam, ...), on ``model.named_parameters()``.
    model : Layer
    projection : callable model -> anything
        Applied after each step (a :class:`SpectralProjection`).

    Notes
    -----
    Learning rate, step counter and state are those of the wrapped optimiser (checkpoints save
    them). Projected SGD: theta <- P(theta - eta grad).
    """

    def __init__(self, optimizer, model, projection):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
        check_layer(model)
        if not callable(projection):
            raise TypeError(f"projection must be callable, got {type(projection).__name__}")
        self.optimizer, self.model, self.projection = optimizer, model, projection
        self.params, self.schedule, self.state = optimizer.params, optimizer.schedule, optimizer.state

    @property
    def t(self):
        """The step counter of the wrapped optimiser (setting it sets the optimiser's)."""
        return self.optimizer.t

    @t.setter
    def t(self, value):
        self.optimizer.t = value

    @property
    def lr(self) -> float:
        """The learning rate of the wrapped optimiser's next step."""
        return self.optimizer.lr

    def step(self, grads):
        self.optimizer.step(grads)
        self.projection(self.model)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict):
        self.optimizer.load_state_dict(state)
